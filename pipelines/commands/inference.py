"""`oesdn predict` and `oesdn export`: score new images with a model, or export it to ONNX."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

_MODEL_HELP = "a bundle folder written by evaluate (e.g. models/brick) or a registry URI (models:/oesdn-brick@champion)"


def add_parser(commands: Any) -> None:
    predict = commands.add_parser(
        "predict",
        help="score images with a model: predictions.csv, optional heat maps and masks",
        description="Score images (files, folders, globs, s3:// objects or prefixes) with a model bundle. Writes "
        "OUT/predictions.csv (one row per file). Unreadable files are listed with their reason and never stop "
        "the batch. Exit 0 when every readable image was scored, 1 when no image could be read, 2 on bad arguments.",
    )
    predict.add_argument("--model", required=True, help=_MODEL_HELP)
    predict.add_argument(
        "sources", nargs="+", metavar="IMAGES", help="image file, folder, glob (quote it) or s3://bucket/key-or-prefix"
    )
    predict.add_argument("--out", required=True, type=Path, help="output folder")
    predict.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    predict.add_argument(
        "--maps",
        action="store_true",
        help="also write OUT/maps/<name>_overlay.png and _mask.png per image (<name> without its extension; names "
        "that differ only in case or extension get -1, -2... in predictions.csv order)",
    )
    predict.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda[:N]")
    predict.set_defaults(handler=_predict)

    export = commands.add_parser(
        "export",
        help="export a model as one ONNX graph (maps and scores inside) plus a JSON of its settings",
        description="Write OUT/model.onnx (input images (N, C, H, W) float in [0, 1]; outputs anomaly_map and "
        "pred_score) and OUT/model.json (preprocessing, thresholds, model name and version).",
    )
    export.add_argument("--model", required=True, help=_MODEL_HELP)
    export.add_argument("--format", choices=["onnx"], default="onnx", help="export format (default: onnx)")
    export.add_argument("--out", type=Path, default=None, help="output folder (default: exports/<category>)")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    export.set_defaults(handler=_export)


def _fail(command: str, message: object) -> int:
    print(f"oesdn {command}: error: {message}", file=sys.stderr)
    return 2


def _load(
    args: argparse.Namespace, workdir: Path, device: str, sources: list[str] | None = None
):  # -> (ResolvedModel, BundleModel, [Source])
    """Resolve the model, then expand the sources (S3 downloads), then load: cheap checks fail first."""
    from components.inference.models import resolve_model
    from components.inference.sources import expand_sources

    if args.no_progress:  # MLflow's own download bar, for registry URIs
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    resolved = resolve_model(args.model, Path.cwd(), workdir / "model")
    found = expand_sources(sources, workdir / "downloads") if sources else []
    from components.models.oesdn.bundle import BundleModel  # torch loads only once model and images are known

    return resolved, BundleModel.load(resolved.bundle_dir, device=device), found


def _predict(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        return _fail("predict", f"--batch-size must be at least 1, got {args.batch_size}")
    from components.inference.models import ModelSourceError
    from components.inference.sources import SourceError

    with tempfile.TemporaryDirectory(prefix="oesdn-predict-") as scratch:
        workdir = Path(scratch)
        try:
            resolved, model, sources = _load(args, workdir, args.device, args.sources)
        except (ModelSourceError, SourceError, ValueError, RuntimeError) as error:
            return _fail("predict", error)
        from components.inference.predict import predict, write_predictions

        sink = None
        if args.maps:
            from components.inference.maps import MapWriter

            sink = MapWriter(args.out / "maps", model.info)
        predictions, summary = predict(model, sources, args.batch_size, progress=not args.no_progress, map_sink=sink)
        csv_path = args.out / "predictions.csv"
        write_predictions(csv_path, predictions, model.info.image_threshold, resolved.name, resolved.version)
    for bad in (p for p in predictions if not p.ok):
        print(f"oesdn predict: skipped {bad.source.location}: {bad.error}", file=sys.stderr)
    print(
        f"{resolved.name} (version {resolved.version}): {summary.scored} scored ({summary.normal} normal, {summary.anomalous} anomalous), "
        f"{summary.unreadable} unreadable; {summary.images_per_second:.1f} images/s "
        f"(batch {args.batch_size}, {model.device.type}); wrote {csv_path}"
    )
    return 0 if summary.scored else 1


def _export(args: argparse.Namespace) -> int:
    from components.inference.models import ModelSourceError

    with tempfile.TemporaryDirectory(prefix="oesdn-export-") as scratch:
        try:
            resolved, model, _ = _load(args, Path(scratch), "cpu")
        except (ModelSourceError, ValueError, RuntimeError) as error:
            return _fail("export", error)
        from components.inference.onnx_export import export_onnx

        out = args.out or Path("exports") / model.info.category
        result = export_onnx(model, resolved, out, args.opset)
    worst = ", ".join(f"{name} {value:.2g}" for name, value in result.max_difference.items())
    print(
        f"{resolved.name} (version {resolved.version}): wrote {result.onnx_path} and {result.json_path} (onnxruntime vs torch, largest difference, relative above 1: {worst})"
    )
    return 0
