"""Export a bundle as one ONNX graph: AE -> SDN -> difference -> smoothing -> reduction, all inside.

A consumer feeds float32 (N, C, H, W) images in [0, 1] and reads `anomaly_map` (N, H, W) and
`pred_score` (N,); the JSON beside the graph says how to get from a file to that input and where
the threshold is, so no Python from this project is needed at the line.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from components.inference.models import ResolvedModel
from components.io import atomic_path, sha256_file, write_json_atomic
from components.models.oesdn.bundle import BundleModel
from components.models.oesdn.detector import OESDNDetector

OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAMES = ("anomaly_map", "pred_score")
PARITY_TOLERANCE = 1e-4


class ExportableDetector(nn.Module):
    """`OESDNDetector.forward` with the top-k count fixed from the known image size.

    `reduce_maps` computes k with Python's round() on the map's shape, which the ONNX tracer sees as
    a tensor; the input size is fixed by the bundle's preprocessing, so k is a constant here. The
    image-score calibration and the multi-scale map's scales, if any, are traced as constants.
    """

    def __init__(self, detector: OESDNDetector, image_size: int) -> None:
        super().__init__()
        self.detector = detector
        self.detector.topk_count = max(1, round(detector.settings.topk_fraction * image_size * image_size))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.detector(images)


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    json_path: Path
    max_difference: dict[str, float]
    """onnxruntime vs torch on a check batch, per output: absolute, relative above 1 (`parity`)."""


def export_onnx(model: BundleModel, resolved: ResolvedModel, out_dir: Path, opset: int = OPSET) -> ExportResult:
    """Write `<out_dir>/model.onnx` and `model.json`, then check onnxruntime against torch."""
    import onnx

    pre = model.info.preprocessing
    module = ExportableDetector(
        copy.deepcopy(model.detector).to("cpu", memory_format=torch.contiguous_format), pre.image_size
    ).eval()
    example = torch.rand(2, pre.channels, pre.image_size, pre.image_size, generator=torch.Generator().manual_seed(0))
    onnx_path, json_path = out_dir / "model.onnx", out_dir / "model.json"
    with atomic_path(onnx_path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes that are constant by design
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAMES[0]: {0: "N"}, OUTPUT_NAMES[1]: {0: "N"}},
        )
        onnx.checker.check_model(str(tmp), full_check=True)
    differences = parity(module, onnx_path, example)
    worst = max(differences.values())
    if not worst <= PARITY_TOLERANCE:
        onnx_path.unlink(missing_ok=True)
        raise RuntimeError(f"onnxruntime differs from torch by {worst:.3g} (> {PARITY_TOLERANCE}); export discarded")
    write_json_atomic(json_path, export_metadata(model, resolved, onnx_path, opset))
    return ExportResult(onnx_path, json_path, differences)


def onnx_session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity(module: nn.Module, onnx_path: Path, images: torch.Tensor) -> dict[str, float]:
    """Largest difference per output between onnxruntime and `module` on `images`: absolute, and
    relative where torch's value exceeds 1 (a calibrated image score is exp of a standardised log,
    so float32 rounding grows with it)."""
    with torch.inference_mode():
        expected = [t.numpy() for t in module(images)]
    actual = onnx_session(onnx_path).run(list(OUTPUT_NAMES), {INPUT_NAME: images.numpy()})
    return {
        name: float((np.abs(a - e) / np.maximum(np.abs(e), 1.0)).max())
        for name, a, e in zip(OUTPUT_NAMES, actual, expected, strict=True)
    }


def export_metadata(model: BundleModel, resolved: ResolvedModel, onnx_path: Path, opset: int) -> dict[str, Any]:
    info = model.info
    pre = info.preprocessing
    return {
        "format": "onnx",
        "opset": opset,
        "onnx_file": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "model": {"name": resolved.name, "version": resolved.version, "source": resolved.uri, "pair_id": info.pair_id},
        "category": info.category,
        "input": {
            "name": INPUT_NAME,
            "shape": ["N", pre.channels, pre.image_size, pre.image_size],
            "dtype": "float32",
            "range": [0.0, 1.0],
        },
        "outputs": {
            OUTPUT_NAMES[0]: {"shape": ["N", pre.image_size, pre.image_size], "dtype": "float32"},
            OUTPUT_NAMES[1]: {"shape": ["N"], "dtype": "float32"},
        },
        "preprocessing": {
            **asdict(pre),
            "steps": [
                "decode the file without applying EXIF orientation",
                "convert to RGB" if pre.channels == 3 else "convert to 8-bit grayscale (L); 16-bit is rescaled to 8-bit",
                f"resize to {pre.image_size}x{pre.image_size} with bicubic resampling (Pillow BICUBIC)",
                "channels first (C, H, W), float32, divide by 255",
            ],
        },
        "scoring": asdict(info.scoring),
        "image_calibration": asdict(info.image_calibration) if info.image_calibration else None,
        "map_scales": list(info.map_scales) if info.map_scales else None,
        "image_threshold": info.image_threshold,
        "pixel_threshold": info.pixel_threshold,
        "decision": "pred_score > image_threshold means anomalous (pred_score already includes image_calibration); anomaly_map > pixel_threshold marks anomalous pixels",
    }
