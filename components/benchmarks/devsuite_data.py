"""The development suite: categories the bundled dataset does not have, to choose defaults on.

Why: the project is judged on photographs and defects it never sees, so defaults must be chosen on
data other than the bundled brick/grass/gravel, never on test labels. Everything here installs
offline:

* textures cut from other CC0 photos scikit-image ships (tissue stain `ihc`, lunar surface `moon`,
  retinal fundus `retina`) and a procedural woven fabric `weave` (periodic, like a textile);
* objects from Fashion-MNIST (Debian's `dataset-fashion-mnist`): `sneaker` and `bag`, upscaled and
  tinted on a plain background, one aligned object per image as on an inspection line.

Train and test crops of a photo come from disjoint cells of a checkerboard, so test normals are
unseen but drawn from the same material. Defects come from the bundled dataset's painter
(`components.data.synthetic`: scratches, cracks, holes, stains, contamination, colour changes),
which neither the outlier exposure nor the label-free check uses, with pixel-exact masks. The
layout is MVTec AD's, so the suite runs through the pipeline's own stages.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from components.benchmarks.datasets import FASHION_MNIST_FILES, FASHION_MNIST_ROOT, DatasetUnavailableError, read_idx
from components.benchmarks.thin_defects import THIN_DEFECTS, apply_thin_defect
from components.data import synthetic
from components.io import atomic_path

TEXTURES = ("ihc", "moon", "retina", "weave")
OBJECTS = ("sneaker", "bag")
CATEGORIES = TEXTURES + OBJECTS
TEXTURE_DEFECTS = ("scratch", "crack", "hole", "stain", "contamination", "color")
OBJECT_DEFECTS = ("scratch", "hole", "stain", "contamination", "color")
HIRES_TEXTURE_DEFECTS = (*THIN_DEFECTS, "hole", "stain", "contamination")
HIRES_OBJECT_DEFECTS = (*THIN_DEFECTS, "hole", "stain")
_FASHION_LABEL = {"sneaker": 7, "bag": 8}
_OBJECT_TINT = {"sneaker": (0.85, 0.55, 0.35), "bag": (0.45, 0.60, 0.85)}


@dataclass(frozen=True)
class DevSuiteSpec:
    """Sizes as in a small real category: 150 good training images, 30 good and ~48 bad test images."""

    image_size: int = 128
    train_count: int = 150
    test_good_count: int = 30
    test_per_defect: int = 8
    seed: int = 0
    thin_defects: bool = False  # half the defect types 1-2 px wide (`thin_defects`), for the 256 px suite
    defects: tuple[str, ...] = ()
    """The defect types to draw, when given, instead of the suite's for the category: a check set of
    other defects than those the defaults were chosen on."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.defects) - set(synthetic.DEFECT_TYPES) - set(THIN_DEFECTS))
        if unknown:
            known = [*synthetic.DEFECT_TYPES, *THIN_DEFECTS]
            raise ValueError(f"unknown defect types {unknown} in DevSuiteSpec.defects; choose from {known}")


HIRES_SPEC = DevSuiteSpec(image_size=256, thin_defects=True)
"""The 256 px suite (`oesdn bench devsuite --hires`): does a setting serve defects a pixel or two wide?"""


@cache
def _photo(category: str) -> np.ndarray:
    """float RGB [0, 1] photo of a texture category (cropped to the usable area)."""
    import skimage.data

    if category == "ihc":
        image = skimage.data.immunohistochemistry()
    elif category == "moon":
        image = np.repeat(skimage.data.moon()[..., None], 3, axis=-1)
    elif category == "retina":
        image = skimage.data.retina()[380:1030, 380:1030]  # inside the fundus, away from its black rim
    else:
        raise ValueError(f"{category!r} is not a photo category")
    return image[..., :3].astype(np.float64) / 255.0


def _photo_crop(category: str, split: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A crop from a checkerboard cell of the photo: even cells train, odd cells test."""
    photo = _photo(category)
    crop = photo.shape[0] // 4
    cell = photo.shape[0] // 3
    cells = [(r, c) for r in range(3) for c in range(3) if (r + c) % 2 == (0 if split == "train" else 1)]
    r, c = cells[int(rng.integers(len(cells)))]
    top = min(photo.shape[0] - crop, r * cell + int(rng.integers(0, max(1, cell - crop + 1))))
    left = min(photo.shape[1] - crop, c * cell + int(rng.integers(0, max(1, cell - crop + 1))))
    patch = photo[top : top + crop, left : left + crop]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    resized = Image.fromarray(np.round(patch * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.float64) / 255.0


def _weave(split: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Plain-weave fabric: over/under threads with a cosine profile, fibre noise, slight skew."""
    period = size / 12.0
    angle = np.deg2rad(rng.uniform(-3.0, 3.0))
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    u = (x * np.cos(angle) + y * np.sin(angle)) / period + rng.uniform(0, 1)
    v = (y * np.cos(angle) - x * np.sin(angle)) / period + rng.uniform(0, 1)
    warp_on_top = (np.floor(u) + np.floor(v)) % 2 == 0
    warp = np.cos(np.pi * (u % 1 - 0.5)) ** 0.6
    weft = np.cos(np.pi * (v % 1 - 0.5)) ** 0.6
    relief = np.where(warp_on_top, 0.55 + 0.45 * warp, 0.55 + 0.45 * weft)
    fibres = rng.normal(0.0, 0.04, (size, size))
    shade = np.clip(relief + fibres, 0.0, 1.0)[..., None]
    dark, light = np.array([0.10, 0.16, 0.32]), np.array([0.45, 0.58, 0.80])
    return np.clip(dark + (light - dark) * shade, 0.0, 1.0)


@cache
def _fashion_items(label: int) -> np.ndarray:
    root = Path(FASHION_MNIST_ROOT)
    if not (root / FASHION_MNIST_FILES["train_images"]).is_file():
        raise DatasetUnavailableError(f"Fashion-MNIST not found under {root}; apt-get install dataset-fashion-mnist")
    images = read_idx(root / FASHION_MNIST_FILES["train_images"])
    labels = read_idx(root / FASHION_MNIST_FILES["train_labels"])
    return images[labels == label]


def _object(category: str, split: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A Fashion-MNIST item (train items from the first half of the class, test from the second)."""
    items = _fashion_items(_FASHION_LABEL[category])
    half = len(items) // 2
    index = int(rng.integers(half)) + (0 if split == "train" else half)
    item = Image.fromarray(items[index]).resize((size, size), Image.Resampling.BICUBIC)
    alpha = np.asarray(item, dtype=np.float64)[..., None] / 255.0
    background = 0.82 + rng.normal(0.0, 0.01, (size, size, 1))
    tint = np.array(_OBJECT_TINT[category])
    return np.clip(background * (1 - alpha) + tint * (0.35 + 0.65 * alpha) * alpha, 0.0, 1.0)


NormalSource = Callable[[str, str, int, np.random.Generator], np.ndarray]
"""(category, split, size, rng) -> float RGB [0, 1] (size, size, 3) good part; `normal_image` is the suite's."""


def normal_image(category: str, split: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """float RGB [0, 1] (size, size, 3) good part of a category."""
    if category == "weave":
        return _weave(split, size, rng)
    if category in OBJECTS:
        return _object(category, split, size, rng)
    return _photo_crop(category, split, size, rng)


def defect_types(category: str, thin: bool = False) -> tuple[str, ...]:
    if thin:
        return HIRES_OBJECT_DEFECTS if category in OBJECTS else HIRES_TEXTURE_DEFECTS
    return OBJECT_DEFECTS if category in OBJECTS else TEXTURE_DEFECTS


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def generate_category(
    root: Path, category: str, spec: DevSuiteSpec, progress: bool = True, normal: NormalSource | None = None
) -> Path:
    """Write one category in MVTec AD layout under `root/category`; byte-identical for a spec.

    `normal` replaces the suite's good parts (the one-off check sets under `benchmarks/` use it);
    the defects, their masks and the random streams stay the suite's. The images are written to a
    hidden `.<category>.partial` folder renamed into place when complete, so an interrupted run
    never leaves a half-written category that a later run would take for a finished one.
    """
    if normal is None and category not in CATEGORIES:
        raise ValueError(f"unknown development-suite category {category!r}; choose from {list(CATEGORIES)}")
    target = Path(root) / category
    folder = Path(root) / f".{category}.partial"
    shutil.rmtree(folder, ignore_errors=True)
    jobs: list[tuple[str, str | None, int]] = [("train", None, i) for i in range(spec.train_count)]
    jobs += [("test", None, i) for i in range(spec.test_good_count)]
    defects = spec.defects or defect_types(category, spec.thin_defects)
    jobs += [("test", d, i) for d in defects for i in range(spec.test_per_defect)]
    context = synthetic._Context(category, spec.image_size)
    for split, defect, index in tqdm(jobs, desc=f"devsuite {category}", unit="img", disable=not progress):
        rng = synthetic._sample_rng(spec.seed, category, split, defect, index)  # one stream per image, as the bundled set
        clean = (normal or normal_image)(category, split, spec.image_size, rng)
        name = f"{index:03d}.png"
        if defect is None:
            _save(synthetic._to_uint8(clean), folder / split / "good" / name)
            continue
        if defect in THIN_DEFECTS:
            image, mask = apply_thin_defect(clean, defect, rng)
        else:
            image, mask = synthetic._apply_defect(clean, defect, rng, context)
        _save(image, folder / "test" / defect / name)
        _save(mask, folder / "ground_truth" / defect / f"{index:03d}_mask.png")
    shutil.rmtree(target, ignore_errors=True)
    folder.rename(target)
    return target


def generate_devsuite(
    root: Path,
    categories: tuple[str, ...] = CATEGORIES,
    spec: DevSuiteSpec | None = None,
    progress: bool = True,
    normal: NormalSource | None = None,
) -> list[Path]:
    """Write every requested category (skipping one whose folder already exists: only a complete
    category gets one, see `generate_category`)."""
    spec = spec or DevSuiteSpec()
    written = []
    for category in categories:
        if (Path(root) / category).is_dir():
            written.append(Path(root) / category)
            continue
        written.append(generate_category(root, category, spec, progress, normal))
    return written
