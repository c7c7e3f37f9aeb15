"""Peer benchmark: anomalib's FastFlow and PaDiM, randomly initialised, on an MVTec-AD-layout folder.

Runs in its own venv (benchmarks/peers/setup_venv.sh), never in the project's env or CI:

    benchmarks/peers/.venv/bin/python benchmarks/peers/run_peers.py --root data/bundled --out results.json

For every category x seed x model it trains the model on ``train/good`` (CPU, one thread,
``pre_trained=False``: no weights are downloaded, and any network connection aborts the run), then
scores ``test/`` and computes, with sklearn's ``roc_auc_score``:

* ``image_auroc``: over the test images, from anomalib's own image score (``pred_score``, the max of
  the raw anomaly map);
* ``pixel_auroc``: over all test pixels pooled, the raw anomaly map upsampled bilinearly to each
  mask's native resolution (masks binarised at > 0; good images get an all-zero mask);
* ``pixel_auroc_at_image_size``: the same with masks resized (NEAREST) to image_size, the
  project's own protocol, for a like-for-like comparison;
* ``train_cpu_s`` (``time.process_time`` around training) and ``train_wall_s``.
"""

from __future__ import annotations

import os

# Before torch is imported: one thread everywhere, no GPU, every hub offline.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import argparse
import json
import logging
import platform
import socket
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
DEFAULT_FASTFLOW_EPOCHS = 14  # measured: 34.7 CPU s on 150 train images at 64 px, 1 thread (see README)
MODELS = ("fastflow", "padim")


# --------------------------------------------------------------------------------------------------
# no downloads
# --------------------------------------------------------------------------------------------------


class DownloadAttempted(RuntimeError):
    """Something tried to reach the network (pretrained weights, a hub, telemetry)."""


NETWORK_ATTEMPTS: list[str] = []


def _refuse(what: str):
    NETWORK_ATTEMPTS.append(what)
    raise DownloadAttempted(
        f"run_peers: blocked a network access ({what}). Nothing may be downloaded in this benchmark: "
        "models must be built with pre_trained=False."
    )


def block_network() -> None:
    """Make every TCP/UDP connection and every torch.hub download raise DownloadAttempted."""
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _refuse(f"socket connect to {address!r}")
        return original_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _refuse(f"socket connect to {address!r}")
        return original_connect_ex(self, address)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.create_connection = lambda address, *a, **k: _refuse(f"create_connection to {address!r}")

    import torch.hub

    torch.hub.download_url_to_file = lambda url, *a, **k: _refuse(f"torch.hub download of {url}")
    torch.hub.load_state_dict_from_url = lambda url, *a, **k: _refuse(f"torch.hub download of {url}")


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------


@dataclass
class CategoryData:
    train: np.ndarray  # uint8 N x 3 x S x S
    test: np.ndarray  # uint8 M x 3 x S x S
    labels: np.ndarray  # int M (1 = defective)
    masks: list[np.ndarray]  # M bool arrays at native resolution
    masks_small: np.ndarray  # bool M x S x S (NEAREST)
    defect_types: list[str]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _load_rgb(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode once, resize to size x size with BICUBIC (as the project does), CHW uint8."""
    with Image.open(path) as image:
        native = image.size  # (w, h)
        rgb = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy(), native


def _load_mask(path: Path) -> np.ndarray:
    with Image.open(path) as mask:
        return np.asarray(mask.convert("L")) > 0


def load_category(root: Path, category: str, size: int) -> CategoryData:
    base = root / category
    train_paths = _images(base / "train" / "good")
    if not train_paths:
        raise SystemExit(f"run_peers: no training images in {base / 'train' / 'good'}")
    train = np.stack([_load_rgb(p, size)[0] for p in train_paths])

    test, labels, masks, small, defects = [], [], [], [], []
    for defect_dir in sorted(d for d in (base / "test").iterdir() if d.is_dir()):
        defect = defect_dir.name
        for path in _images(defect_dir):
            pixels, (w, h) = _load_rgb(path, size)
            if defect == "good":
                mask = np.zeros((h, w), dtype=bool)
            else:
                mask_path = base / "ground_truth" / defect / f"{path.stem}_mask.png"
                if not mask_path.exists():
                    raise SystemExit(f"run_peers: missing mask {mask_path}")
                mask = _load_mask(mask_path)
            test.append(pixels)
            labels.append(0 if defect == "good" else 1)
            masks.append(mask)
            small.append(np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST)))
            defects.append(defect)
    labels_arr = np.asarray(labels, dtype=np.int64)
    if labels_arr.min() == labels_arr.max():
        raise SystemExit(f"run_peers: {base / 'test'} needs both good and defective images")
    return CategoryData(train, np.stack(test), labels_arr, masks, np.stack(small), defects)


# --------------------------------------------------------------------------------------------------
# models, training, scoring
# --------------------------------------------------------------------------------------------------


def build_model(name: str, size: int):
    from anomalib.models import Fastflow, Padim

    cls = {"fastflow": Fastflow, "padim": Padim}[name]
    return cls(
        backbone="resnet18",
        pre_trained=False,
        pre_processor=cls.configure_pre_processor(image_size=(size, size)),
        post_processor=False,  # raw maps and scores: normalisation/clamping could create ties
        evaluator=False,
        visualizer=False,
    )


def _loader(images: np.ndarray, batch_size: int, shuffle: bool, seed: int):
    import torch
    from anomalib.data import ImageBatch

    tensor = torch.from_numpy(images)

    def collate(indices):
        return ImageBatch(image=tensor[torch.as_tensor(indices)].float().div_(255.0))

    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        range(len(images)),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate,
        num_workers=0,
        generator=generator,
    )


def train(model, name: str, data: CategoryData, args, seed: int) -> dict:
    import lightning
    from lightning.pytorch.callbacks import Callback

    class CpuBudget(Callback):
        def __init__(self, limit: float | None):
            self.limit, self.start, self.hit = limit, 0.0, False

        def on_train_start(self, trainer, pl_module):
            self.start = time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if self.limit is not None and time.process_time() - self.start >= self.limit:
                trainer.should_stop, self.hit = True, True

    budget = CpuBudget(args.max_train_seconds)
    trainer_args = dict(model.trainer_arguments)  # as anomalib's Engine merges them
    trainer_args.pop("val_check_interval", None)
    if name == "fastflow":
        trainer_args["max_epochs"] = args.fastflow_epochs
    trainer_args.update(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[budget],
    )
    loader = _loader(data.train, args.batch_size, shuffle=True, seed=seed)
    with tempfile.TemporaryDirectory(prefix="run_peers_") as tmp:
        trainer = lightning.Trainer(default_root_dir=tmp, **trainer_args)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        trainer.fit(model, train_dataloaders=loader)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "train_cpu_s": cpu,
        "train_wall_s": wall,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "stopped_by_cap": budget.hit,
    }


def score(model, data: CategoryData, batch_size: int) -> dict:
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score

    model.eval()
    transform = model.pre_processor.transform
    scores, maps = [], []
    wall0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(data.test), batch_size):
            x = torch.from_numpy(data.test[start : start + batch_size]).float().div_(255.0)
            out = model.model(transform(x))
            scores.append(out.pred_score.reshape(-1).float())
            maps.append(out.anomaly_map.reshape(len(x), *out.anomaly_map.shape[-2:]).float())
    infer_wall = time.perf_counter() - wall0
    image_scores = torch.cat(scores).numpy()
    small_maps = torch.cat(maps)

    total = sum(m.size for m in data.masks)
    pixel_scores = np.empty(total, dtype=np.float32)
    pixel_labels = np.empty(total, dtype=bool)
    offset = 0
    for amap, mask in zip(small_maps, data.masks, strict=True):
        up = F.interpolate(amap[None, None], size=mask.shape, mode="bilinear", align_corners=False)[0, 0]
        pixel_scores[offset : offset + mask.size] = up.numpy().ravel()
        pixel_labels[offset : offset + mask.size] = mask.ravel()
        offset += mask.size
    return {
        "image_auroc": float(roc_auc_score(data.labels, image_scores)),
        "pixel_auroc": float(roc_auc_score(pixel_labels, pixel_scores)),
        "pixel_auroc_at_image_size": float(roc_auc_score(data.masks_small.ravel(), small_maps.numpy().ravel())),
        "infer_wall_s": infer_wall,
    }


# --------------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------------

METRICS = ("image_auroc", "pixel_auroc", "pixel_auroc_at_image_size", "train_cpu_s", "train_wall_s")


def aggregate(runs: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["category"], run["model"]), []).append(run)
    out = []
    for (category, model), items in groups.items():
        row = {"category": category, "model": model, "n_seeds": len(items), "seeds": [r["seed"] for r in items]}
        for metric in METRICS:
            values = [r[metric] for r in items]
            row[f"{metric}_mean"] = statistics.fmean(values)
            row[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else None  # sample std
        out.append(row)
    return out


def table(rows: list[dict]) -> str:
    def cell(row, metric, digits=3):
        std = row[f"{metric}_std"]
        mean = f"{row[f'{metric}_mean']:.{digits}f}"
        return mean if std is None else f"{mean} ± {std:.{digits}f}"

    header = ["category", "model", "seeds", "image AUROC", "pixel AUROC", "pixel AUROC @size", "train CPU s", "train wall s"]
    lines = [
        [
            r["category"],
            r["model"],
            str(r["n_seeds"]),
            cell(r, "image_auroc"),
            cell(r, "pixel_auroc"),
            cell(r, "pixel_auroc_at_image_size"),
            cell(r, "train_cpu_s", 1),
            cell(r, "train_wall_s", 1),
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, lines)])


def versions() -> dict:
    import anomalib
    import lightning
    import sklearn
    import timm
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "anomalib": anomalib.__version__,
        "lightning": lightning.__version__,
        "timm": timm.__version__,
        "sklearn": sklearn.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
    }


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="MVTec-AD-layout folder")
    parser.add_argument("--categories", nargs="+", help="default: every sub-folder of --root with train/good")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--fastflow-epochs", type=int, default=DEFAULT_FASTFLOW_EPOCHS)
    parser.add_argument("--batch-size", type=int, default=32, help="train and test batch size (anomalib's default)")
    parser.add_argument(
        "--max-train-seconds",
        type=float,
        default=None,
        help="cap on training CPU seconds per run (stops after the batch that crosses it)",
    )
    parser.add_argument("--out", type=Path, default=Path("results.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    block_network()

    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    import lightning
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    # Lightning's chatter (no logger, no val loop, few workers, frozen backbone in eval mode) is expected here.
    for category in (UserWarning, PossibleUserWarning, DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "anomalib"):
        logging.getLogger(name).setLevel(logging.ERROR)

    root = args.root
    if not root.is_dir():
        raise SystemExit(f"run_peers: --root {root} is not a folder")
    categories = args.categories or sorted(d.name for d in root.iterdir() if (d / "train" / "good").is_dir())
    if not categories:
        raise SystemExit(f"run_peers: no category folders with train/good under {root}")

    meta = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "categories": categories,
        "versions": versions(),
        "notes": "pre_trained=False (random resnet18 backbones); AUROCs via sklearn roc_auc_score; "
        "pixel_auroc at each mask's native resolution (bilinear upsampling); std = sample std over seeds",
    }
    runs: list[dict] = []
    total = len(categories) * len(args.seeds) * len(args.models)
    done = 0

    def write():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "runs": runs, "aggregates": aggregate(runs)}, indent=2) + "\n")

    print(
        f"run_peers: {len(categories)} categories x {len(args.seeds)} seeds x {len(args.models)} models = {total} runs"
        f" at {args.image_size} px, 1 thread",
        flush=True,
    )
    for category in categories:
        data = load_category(root, category, args.image_size)
        print(
            f"  {category}: {len(data.train)} train, {int((data.labels == 0).sum())} good + "
            f"{int(data.labels.sum())} defective test images",
            flush=True,
        )
        for seed in args.seeds:
            for name in args.models:
                lightning.seed_everything(seed, workers=True, verbose=False)
                model = build_model(name, args.image_size)
                record = {
                    "category": category,
                    "seed": seed,
                    "model": name,
                    "image_size": args.image_size,
                    "n_train": len(data.train),
                    "n_test": len(data.test),
                    "fastflow_epochs": args.fastflow_epochs if name == "fastflow" else None,
                }
                record.update(train(model, name, data, args, seed))
                record.update(score(model, data, args.batch_size))
                runs.append(record)
                done += 1
                print(
                    f"[{done:>3}/{total}] {category:<16} seed={seed} {name:<8} image_auroc={record['image_auroc']:.3f} "
                    f"pixel_auroc={record['pixel_auroc']:.3f} train_cpu={record['train_cpu_s']:.1f}s "
                    f"wall={record['train_wall_s']:.1f}s epochs={record['epochs']}"
                    f"{' (capped)' if record['stopped_by_cap'] else ''}",
                    flush=True,
                )
                write()
    if NETWORK_ATTEMPTS:
        raise SystemExit(f"run_peers: {len(NETWORK_ATTEMPTS)} network access(es) were blocked: {NETWORK_ATTEMPTS}")
    write()
    print()
    print(table(aggregate(runs)))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
