"""Images decoded once, resized and stacked into uint8 arrays that training and evaluation share.

Decoding hundreds of PNGs per epoch would dominate a CPU run; one `arrays.npz` per category is read
in a fraction of a second and is small enough to keep as a DVC output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from components.data.images import load_image, load_mask, stored_size
from components.io import atomic_path

ARRAYS_FILE = "arrays.npz"
DATASET_RECORD = "dataset.json"


def read_dataset_record(prepared_dir: Path, category: str) -> dict[str, Any]:
    """The prepare stage's record (data hash, counts); later stages need it before anything else."""
    path = prepared_dir / DATASET_RECORD
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `oesdn prepare --category {category}` first")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class PreparedData:
    train: np.ndarray
    """uint8 (N, C, H, W) normal training images."""
    val: np.ndarray
    """uint8 (N, C, H, W) held-out normal images, for early stopping and thresholds."""
    test: np.ndarray
    """uint8 (N, C, H, W) test images, normal and anomalous."""
    test_labels: np.ndarray
    """int64 (N,) 0 normal, 1 anomalous."""
    test_masks: np.ndarray | None
    """bool (N, H, W) ground truth, or None when the dataset has no masks."""
    test_defect_types: np.ndarray
    test_names: np.ndarray
    """`<defect_type>/<file name>` per test image, for captions and score tables."""
    test_masks_native: np.ndarray | None = None
    """bool (N, H0, W0) ground truth at the images' own resolution, where pixel metrics are taken
    (the MVTec AD protocol: maps are upsampled to the mask, never masks shrunk to the map)."""

    @property
    def masks_available(self) -> bool:
        return self.test_masks is not None


def _stack(paths: list[str], image_size: int, channels: int, desc: str, progress: bool) -> np.ndarray:
    images = [load_image(Path(p), image_size, channels) for p in tqdm(paths, desc=desc, unit="img", disable=not progress)]
    if not images:
        return np.zeros((0, channels, image_size, image_size), dtype=np.uint8)
    return np.stack(images)


SIDE_MULTIPLE = 16
"""Working sides are multiples of this, so every stride-2 stage of the networks halves evenly."""


def working_image_size(manifest: pd.DataFrame, image_size: int) -> int:
    """The side a category's images are resized to: `image_size`, or less where its good images are smaller.

    Why: resizing up adds no detail, only cost (4x the pixels for 2x the side). So `data.image_size`
    is a ceiling: a category of 128 px images works at 128 px whatever the ceiling, one of 256 px
    photographs at min(256, ceiling). The side is that of the smallest good training or validation
    image (its shorter edge), rounded down to a multiple of 16, and never below 16.
    """
    good = manifest[manifest["split"].isin(("train", "val"))]["path"]
    smallest = min(min(stored_size(path)) for path in good)
    return max(SIDE_MULTIPLE, min(image_size, smallest // SIDE_MULTIPLE * SIDE_MULTIPLE))


def prepare_arrays(manifest: pd.DataFrame, image_size: int, channels: int, progress: bool = True) -> PreparedData:
    """Decode and resize every image (and mask) of a validated manifest to `image_size` square."""
    by_split = {split: manifest[manifest["split"] == split] for split in ("train", "val", "test")}
    test = by_split["test"]
    masks_available = bool(manifest.attrs.get("masks_available", False))
    masks = None
    if masks_available:
        masks = np.stack(
            [
                load_mask(Path(path), image_size) if path else np.zeros((image_size, image_size), dtype=bool)
                for path in test["mask_path"]
            ]
        )
    native = _native_masks(test) if masks_available else None
    names = [f"{defect}/{Path(path).name}" for defect, path in zip(test["defect_type"], test["path"], strict=True)]
    return PreparedData(
        train=_stack(list(by_split["train"]["path"]), image_size, channels, "decode train", progress),
        val=_stack(list(by_split["val"]["path"]), image_size, channels, "decode val", progress),
        test=_stack(list(test["path"]), image_size, channels, "decode test", progress),
        test_labels=test["label"].to_numpy(dtype=np.int64),
        test_masks=masks,
        test_defect_types=test["defect_type"].to_numpy(dtype=str),
        test_names=np.asarray(names, dtype=str),
        test_masks_native=native,
    )


def _native_masks(test: pd.DataFrame) -> np.ndarray:
    """Masks at the test images' own size; a category of mixed sizes uses its most common one."""
    from collections import Counter

    (width, height), _ = Counter(stored_size(path) for path in test["path"]).most_common(1)[0]
    return np.stack(
        [load_mask(Path(path), (height, width)) if path else np.zeros((height, width), dtype=bool) for path in test["mask_path"]]
    )


def save_prepared(data: PreparedData, directory: Path) -> Path:
    """Write the arrays uncompressed (fast to load; PNG sources already hold the compressed copy)."""
    arrays = {
        "train": data.train,
        "val": data.val,
        "test": data.test,
        "test_labels": data.test_labels,
        "test_defect_types": data.test_defect_types,
        "test_names": data.test_names,
    }
    if data.test_masks is not None:
        arrays["test_masks"] = data.test_masks
    if data.test_masks_native is not None:
        arrays["test_masks_native"] = data.test_masks_native
    target = directory / ARRAYS_FILE
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return target


def load_prepared(directory: Path) -> PreparedData:
    path = directory / ARRAYS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `oesdn prepare --category <name>` (or `dvc repro`) first")
    with np.load(path, allow_pickle=False) as arrays:
        return PreparedData(
            train=arrays["train"],
            val=arrays["val"],
            test=arrays["test"],
            test_labels=arrays["test_labels"],
            test_masks=arrays["test_masks"] if "test_masks" in arrays.files else None,
            test_defect_types=arrays["test_defect_types"],
            test_names=arrays["test_names"],
            test_masks_native=arrays["test_masks_native"] if "test_masks_native" in arrays.files else None,
        )
