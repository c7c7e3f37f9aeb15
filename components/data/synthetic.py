"""Bundled default dataset: MVTec-AD-layout texture categories with synthetic, pixel-exact defects.

Why: the project must train, test and demo offline with no download. scikit-image ships real CC0
texture photos (brick, grass, gravel); we tint them, cut normal crops from one region of each photo
and test crops from a disjoint region, and paint realistic defects whose masks are derived from the
actual pixel change, so ground truth is exact. Everything is seeded per image, so the same arguments
always give byte-identical files.

Normal crops use horizontal flips only: 90/180-degree rotations are OE-SDN's auxiliary outliers, so
they must not be part of the normal class.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import skimage.data
from numpy.typing import NDArray
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

FloatImage = NDArray[np.float64]
BoolMap = NDArray[np.bool_]

BUNDLED_CATEGORIES: tuple[str, ...] = ("brick", "grass", "gravel")
SPLITS: tuple[str, ...] = ("train", "test")

PHOTO_SIZE = 512
TRAIN_REGION_FRACTION = 0.65  # train crops come from the top rows, test crops from the rest
TRAIN_REGION_ROWS = round(PHOTO_SIZE * TRAIN_REGION_FRACTION)
MAX_CROP_SIZE = PHOTO_SIZE - TRAIN_REGION_ROWS
MIN_IMAGE_SIZE = 16

MASK_TOLERANCE = 8  # uint8 levels: a pixel counts as changed when some channel moves by more
MIN_DEFECT_FRACTION = 0.004  # redraw defects smaller than this share of the image
MAX_DEFECT_ATTEMPTS = 64

# Two-point colour ramps (dark, light) that turn the grayscale photo into a plausible material.
_PALETTES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "brick": ((0.28, 0.09, 0.05), (0.93, 0.62, 0.47)),
    "grass": ((0.05, 0.13, 0.03), (0.70, 0.86, 0.40)),
    "gravel": ((0.16, 0.14, 0.12), (0.93, 0.89, 0.80)),
}
_STAIN_COLOURS = np.array(
    [
        (0.26, 0.17, 0.08),  # mud / coffee
        (0.06, 0.06, 0.07),  # oil
        (0.90, 0.88, 0.80),  # lime / paint deposit
        (0.58, 0.27, 0.08),  # rust
    ]
)
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


@dataclass(frozen=True)
class SyntheticSpec:
    """How much to generate and at which resolution; frozen so it can key caches and configs."""

    image_size: int = 128
    train_count: int = 240
    test_good_count: int = 40
    test_per_defect: int = 8
    seed: int = 0
    crop_size: int = 128  # side of the square cut from the 512 px photo before resizing

    def __post_init__(self) -> None:
        for name in ("image_size", "train_count", "test_good_count", "test_per_defect", "crop_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"SyntheticSpec.{name} must be a positive integer, got {value!r}")
        if self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"SyntheticSpec.image_size must be >= {MIN_IMAGE_SIZE}, got {self.image_size}")
        if self.crop_size > MAX_CROP_SIZE:
            raise ValueError(
                f"SyntheticSpec.crop_size must be <= {MAX_CROP_SIZE} so test crops fit in the "
                f"held-out region, got {self.crop_size}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SyntheticSpec.seed must be a non-negative integer, got {self.seed!r}")


class CropBox(NamedTuple):
    """Where a normal image was cut from its photo (photo pixels)."""

    top: int
    left: int
    size: int


@dataclass(frozen=True)
class Sample:
    """One rendered image; `clean` is the same crop before the defect, kept so tests can audit masks."""

    image: NDArray[np.uint8]
    clean: NDArray[np.uint8]
    mask: NDArray[np.uint8] | None
    box: CropBox


class _Context(NamedTuple):
    category: str
    crop_size: int


DefectFn = Callable[[FloatImage, np.random.Generator, _Context], tuple[FloatImage, BoolMap]]


# --------------------------------------------------------------------------- photos and crops


@cache
def _photo(category: str) -> FloatImage:
    """The category's photo, contrast-stretched to [0, 1]; cached and read-only."""
    raw = getattr(skimage.data, category)().astype(np.float64)
    if raw.shape != (PHOTO_SIZE, PHOTO_SIZE):
        raise RuntimeError(f"skimage.data.{category}() has shape {raw.shape}, expected {(PHOTO_SIZE,) * 2}")
    lo, hi = np.percentile(raw, [0.5, 99.5])
    photo = np.clip((raw - lo) / (hi - lo), 0.0, 1.0)
    photo.setflags(write=False)
    return photo


def split_rows(split: str) -> tuple[int, int]:
    """Photo rows [start, stop) that crops of `split` must lie in; train and test never overlap."""
    _check_choice("split", split, SPLITS)
    return (0, TRAIN_REGION_ROWS) if split == "train" else (TRAIN_REGION_ROWS, PHOTO_SIZE)


def crop_box(split: str, crop_size: int, rng: np.random.Generator) -> CropBox:
    """A random square lying fully inside the split's region of the photo."""
    start, stop = split_rows(split)
    top = int(rng.integers(start, stop - crop_size + 1))
    left = int(rng.integers(0, PHOTO_SIZE - crop_size + 1))
    return CropBox(top, left, crop_size)


def _resized_crop(photo: FloatImage, box: CropBox, size: int) -> FloatImage:
    patch = photo[box.top : box.top + box.size, box.left : box.left + box.size]
    if box.size == size:
        return patch.copy()
    resized = Image.fromarray(patch.astype(np.float32)).resize((size, size), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)


def _colourise(gray: FloatImage, category: str) -> FloatImage:
    dark, light = (np.asarray(c) for c in _PALETTES[category])
    return dark + gray[..., None] * (light - dark)


def _normal_image(category: str, box: CropBox, size: int, rng: np.random.Generator) -> FloatImage:
    """A tinted crop with mild brightness/contrast jitter and a random horizontal flip."""
    gray = _resized_crop(_photo(category), box, size)
    mean = gray.mean()
    gray = np.clip((gray - mean) * rng.uniform(0.9, 1.1) + mean + rng.uniform(-0.04, 0.04), 0.0, 1.0)
    if rng.random() < 0.5:
        gray = gray[:, ::-1]
    return _colourise(gray, category)


# --------------------------------------------------------------------------- shape helpers


def _grid(size: int) -> tuple[FloatImage, FloatImage]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    return y, x


def _smoothstep(x: FloatImage) -> FloatImage:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _lerp(img: FloatImage, target: FloatImage, alpha: FloatImage) -> FloatImage:
    return img + alpha[..., None] * (target - img)


def _blob(rng: np.random.Generator, size: int, radius: tuple[float, float], edge: tuple[float, float]) -> FloatImage:
    """Soft irregular ellipse (alpha in [0, 1]); radius is a fraction of the image, edge of the radius."""
    y, x = _grid(size)
    cy, cx = rng.uniform(0.15, 0.85, 2) * size
    r = rng.uniform(*radius) * size
    aspect, angle = rng.uniform(0.6, 1.0), rng.uniform(0.0, np.pi)
    u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    v = (-(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)) / aspect
    theta = np.arctan2(v, u)
    harmonics = np.arange(2, 5)[:, None, None]
    wobble = rng.uniform(0.0, 0.12, (3, 1, 1)) * np.cos(harmonics * theta + rng.uniform(0, 2 * np.pi, (3, 1, 1)))
    boundary = r * (1.0 + wobble.sum(axis=0))
    softness = max(1.0, rng.uniform(*edge) * r)
    return _smoothstep((boundary - np.hypot(u, v)) / softness + 0.5)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> FloatImage:
    """Low-frequency noise in [0, 1], for mottled stains."""
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma)
    return (noise - noise.min()) / max(np.ptp(noise), 1e-12)


def _segment_distance(points: FloatImage, size: int) -> FloatImage:
    """Distance of every pixel to the polyline through `points` ((N, 2) as (y, x))."""
    y, x = _grid(size)
    pixels = np.stack([y, x], axis=-1)[:, :, None, :]
    starts, deltas = points[:-1], np.diff(points, axis=0)
    lengths2 = np.maximum((deltas**2).sum(axis=-1), 1e-12)
    t = np.clip(((pixels - starts) * deltas).sum(axis=-1) / lengths2, 0.0, 1.0)
    nearest = starts + t[..., None] * deltas
    return np.sqrt(((pixels - nearest) ** 2).sum(axis=-1)).min(axis=-1)


def _line_alpha(distance: FloatImage, width: float) -> FloatImage:
    """Anti-aliased coverage of a line of `width` px given each pixel's distance to its centre."""
    return np.clip(width / 2.0 + 0.5 - distance, 0.0, 1.0)


def _random_walk(rng: np.random.Generator, start: FloatImage, heading: float, steps: int, step: float) -> FloatImage:
    headings = heading + np.cumsum(rng.normal(0.0, 0.3, steps))
    moves = step * np.stack([np.sin(headings), np.cos(headings)], axis=-1)
    return np.vstack([start, start + np.cumsum(moves, axis=0)])


# --------------------------------------------------------------------------- defects
# Each returns (defective image, support); support bounds where the mask may be.


def _scratch(img: FloatImage, rng: np.random.Generator, ctx: _Context) -> tuple[FloatImage, BoolMap]:
    """Thin bright or dark curved line (quadratic Bezier), anti-aliased."""
    size = img.shape[0]
    start = rng.uniform(0.1, 0.9, 2) * size
    heading, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.7) * size
    end = start + length * np.array([np.sin(heading), np.cos(heading)])
    normal = np.array([-np.cos(heading), np.sin(heading)])
    control = (start + end) / 2 + rng.uniform(-0.3, 0.3) * length * normal
    t = np.linspace(0.0, 1.0, 24)[:, None]
    path = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
    width = max(1.0, rng.uniform(0.014, 0.03) * size)
    distance = _segment_distance(path, size)
    alpha = _line_alpha(distance, width) * rng.uniform(0.35, 0.8)
    target = np.full(3, 0.95 if rng.random() < 0.5 else 0.05)
    return _lerp(img, target, alpha), distance < width / 2 + 1


def _crack(img: FloatImage, rng: np.random.Generator, ctx: _Context) -> tuple[FloatImage, BoolMap]:
    """Dark branching random-walk polyline."""
    size = img.shape[0]
    step, width = 0.03 * size, max(1.0, rng.uniform(0.01, 0.02) * size)
    start, heading = rng.uniform(0.2, 0.8, 2) * size, rng.uniform(0, 2 * np.pi)
    trunk = _random_walk(rng, start, heading, int(rng.integers(10, 20)), step)
    distance = _segment_distance(trunk, size)
    alpha = _line_alpha(distance, width)
    support = distance < width / 2 + 1
    for _ in range(int(rng.integers(1, 4))):
        at = int(rng.integers(1, len(trunk) - 1))
        local = np.arctan2(*(trunk[at + 1] - trunk[at]))
        heading = local + rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.1)
        branch = _random_walk(rng, trunk[at], heading, int(rng.integers(3, 8)), step)
        distance = _segment_distance(branch, size)
        alpha = np.maximum(alpha, _line_alpha(distance, 0.7 * width))
        support |= distance < 0.35 * width + 1
    return img * (1.0 - rng.uniform(0.5, 0.85) * alpha[..., None]), support


def _hole(img: FloatImage, rng: np.random.Generator, ctx: _Context) -> tuple[FloatImage, BoolMap]:
    """Dark elliptical pit: shadowed inner wall on the lit side, highlighted/shadowed rim."""
    size = img.shape[0]
    y, x = _grid(size)
    cy, cx = rng.uniform(0.15, 0.85, 2) * size
    a = rng.uniform(0.035, 0.085) * size
    b = a * rng.uniform(0.6, 1.0)
    angle, light = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    dy, dx = y - cy, x - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    rho = np.hypot(u / a, v / b)
    edge_px = (rho - 1.0) * np.sqrt(a * b)  # approximate signed distance to the hole's edge
    facing = (dx * np.cos(light) + dy * np.sin(light)) / np.maximum(np.hypot(dx, dy), 1e-9)
    inside = np.clip(0.5 - edge_px, 0.0, 1.0)
    depth = rng.uniform(0.12, 0.35) * (1.0 - 0.5 * facing * np.minimum(rho, 1.0))
    rim_width = max(1.5, 0.3 * np.sqrt(a * b))
    rim = np.clip(1.0 - edge_px / rim_width, 0.0, 1.0) * (1.0 - inside)
    gain = inside * depth + (1.0 - inside) * (1.0 + 0.35 * rim * facing)
    return np.clip(img * gain[..., None], 0.0, 1.0), edge_px < rim_width + 1


def _stain(img: FloatImage, rng: np.random.Generator, ctx: _Context) -> tuple[FloatImage, BoolMap]:
    """Soft mottled blob tinted towards mud, oil, lime or rust, keeping the texture's shading."""
    size = img.shape[0]
    alpha = _blob(rng, size, (0.05, 0.14), (0.15, 0.4))
    alpha *= 0.75 + 0.25 * _smooth_noise(rng, size, 0.04 * size)
    colour = _STAIN_COLOURS[rng.integers(len(_STAIN_COLOURS))]
    target = np.clip(colour * (0.6 + 0.8 * img.mean(axis=-1, keepdims=True)), 0.0, 1.0)
    return _lerp(img, target, alpha * rng.uniform(0.6, 0.9)), alpha > 0


def _contamination(img: FloatImage, rng: np.random.Generator, ctx: _Context) -> tuple[FloatImage, BoolMap]:
    """Foreign material: a patch of another category's texture, at a random scale."""
    size = img.shape[0]
    others = [c for c in BUNDLED_CATEGORIES if c != ctx.category]
    source = others[int(rng.integers(len(others)))]
    crop = min(PHOTO_SIZE, round(ctx.crop_size * rng.uniform(0.6, 1.6)))
    box = CropBox(int(rng.integers(0, PHOTO_SIZE - crop + 1)), int(rng.integers(0, PHOTO_SIZE - crop + 1)), crop)
    foreign = _colourise(_resized_crop(_photo(source), box, size), source)
    alpha = _blob(rng, size, (0.05, 0.11), (0.02, 0.1))
    return _lerp(img, foreign, alpha), alpha > 0


def _color(img: FloatImage, rng: np.random.Generator, ctx: _Context) -> tuple[FloatImage, BoolMap]:
    """Local hue rotation and saturation boost at constant luminance (YIQ), e.g. discolouration."""
    size = img.shape[0]
    yiq = img @ _RGB_TO_YIQ.T
    turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 2.2)
    rotation = rng.uniform(0.8, 1.6) * np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    hue = rng.uniform(0, 2 * np.pi)
    yiq[..., 1:] = yiq[..., 1:] @ rotation.T + rng.uniform(0.02, 0.07) * np.array([np.cos(hue), np.sin(hue)])
    shifted = np.clip(yiq @ _YIQ_TO_RGB.T, 0.0, 1.0)
    alpha = _blob(rng, size, (0.06, 0.14), (0.2, 0.5))
    return _lerp(img, shifted, alpha * rng.uniform(0.75, 1.0)), alpha > 0


def _intensity(img: FloatImage, rng: np.random.Generator, ctx: _Context) -> tuple[FloatImage, BoolMap]:
    """Local darkening or brightening with a soft edge (shadow, bleaching, wet patch)."""
    size = img.shape[0]
    gain = rng.uniform(0.4, 0.65) if rng.random() < 0.5 else rng.uniform(1.4, 1.9)
    alpha = _blob(rng, size, (0.06, 0.14), (0.2, 0.5))
    return np.clip(img * (1.0 + (gain - 1.0) * alpha[..., None]), 0.0, 1.0), alpha > 0


def _warp(img: FloatImage, rng: np.random.Generator, ctx: _Context) -> tuple[FloatImage, BoolMap]:
    """Smooth local swirl plus pinch/bulge: the texture is displaced, not recoloured."""
    size = img.shape[0]
    y, x = _grid(size)
    cy, cx = rng.uniform(0.2, 0.8, 2) * size
    radius = rng.uniform(0.1, 0.17) * size
    dy, dx = y - cy, x - cx
    falloff = np.clip(1.0 - np.hypot(dy, dx) / radius, 0.0, 1.0) ** 2
    twist = rng.choice([-1.0, 1.0]) * rng.uniform(2.0, 4.5) * falloff
    scale = 1.0 + rng.uniform(-0.5, 0.5) * falloff
    src_y = cy + scale * (dy * np.cos(twist) + dx * np.sin(twist))
    src_x = cx + scale * (dx * np.cos(twist) - dy * np.sin(twist))
    channels = [ndimage.map_coordinates(img[..., c], [src_y, src_x], order=1, mode="reflect") for c in range(3)]
    return np.stack(channels, axis=-1), falloff > 0


_DEFECTS: dict[str, DefectFn] = {
    "scratch": _scratch,
    "crack": _crack,
    "hole": _hole,
    "stain": _stain,
    "contamination": _contamination,
    "color": _color,
    "intensity": _intensity,
    "warp": _warp,
}
DEFECT_TYPES: tuple[str, ...] = tuple(_DEFECTS)
CATEGORY_DEFECTS: dict[str, tuple[str, ...]] = {
    "brick": DEFECT_TYPES,
    # Dark pits, shading changes and warps vanish among grass's own shadows and random blades:
    # nobody inspects grass for them, so grass gets the defects a person would notice.
    "grass": ("scratch", "stain", "contamination", "color"),
    # A warp of loose stones just looks like other stones; it stays a brick defect.
    "gravel": ("scratch", "hole", "stain", "contamination", "color", "intensity"),
}


# --------------------------------------------------------------------------- samples


def _to_uint8(img: FloatImage) -> NDArray[np.uint8]:
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def _changed_pixels(clean: NDArray[np.uint8], defective: NDArray[np.uint8]) -> BoolMap:
    """Pixels where some channel moved by more than `MASK_TOLERANCE` grey levels."""
    return np.abs(defective.astype(np.int16) - clean).max(axis=-1) > MASK_TOLERANCE


def _defect_mask(clean: NDArray[np.uint8], defective: NDArray[np.uint8], support: BoolMap) -> BoolMap:
    """Pixels that changed by more than the tolerance, closed and hole-filled, kept inside the support."""
    changed = _changed_pixels(clean, defective) & support
    closed = ndimage.binary_closing(changed, structure=np.ones((3, 3), dtype=bool))
    return (ndimage.binary_fill_holes(closed) | changed) & support


def _apply_defect(
    clean: FloatImage, defect: str, rng: np.random.Generator, ctx: _Context
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Draw the defect until it is large enough; pixels outside the mask are restored exactly."""
    clean_u8 = _to_uint8(clean)
    min_pixels = MIN_DEFECT_FRACTION * clean_u8.shape[0] * clean_u8.shape[1]
    for _ in range(MAX_DEFECT_ATTEMPTS):
        defective, support = _DEFECTS[defect](clean, rng, ctx)
        defective_u8 = _to_uint8(defective)
        mask = _defect_mask(clean_u8, defective_u8, support)
        if mask.sum() >= min_pixels:
            return np.where(mask[..., None], defective_u8, clean_u8), mask.astype(np.uint8) * 255
    raise RuntimeError(f"could not draw a visible {defect!r} defect in {MAX_DEFECT_ATTEMPTS} attempts")


def _sample_rng(seed: int, category: str, split: str, defect: str | None, index: int) -> np.random.Generator:
    """Independent stream per image, so any image can be regenerated alone and order never matters."""
    names = (category, split, defect or "good")
    key = [seed, *(zlib.crc32(name.encode()) for name in names), index]
    return np.random.default_rng(np.random.SeedSequence(key))


def render_sample(category: str, split: str, index: int, spec: SyntheticSpec, defect: str | None = None) -> Sample:
    """Render one image (and its mask when `defect` is given) exactly as the generator writes it."""
    _check_choice("category", category, BUNDLED_CATEGORIES)
    _check_choice("split", split, SPLITS)
    if defect is not None:
        _check_choice(f"defect for {category!r}", defect, CATEGORY_DEFECTS[category])
        if split != "test":
            raise ValueError("defects exist only in the 'test' split")
    rng = _sample_rng(spec.seed, category, split, defect, index)
    box = crop_box(split, spec.crop_size, rng)
    clean = _normal_image(category, box, spec.image_size, rng)
    clean_u8 = _to_uint8(clean)
    if defect is None:
        return Sample(clean_u8, clean_u8, None, box)
    image, mask = _apply_defect(clean, defect, rng, _Context(category, spec.crop_size))
    return Sample(image, clean_u8, mask, box)


# --------------------------------------------------------------------------- writing


class _Job(NamedTuple):
    split: str
    defect: str | None
    index: int
    stem: str


def _jobs(category: str, spec: SyntheticSpec) -> list[_Job]:
    groups: list[tuple[str, str | None, int]] = [
        ("train", None, spec.train_count),
        ("test", None, spec.test_good_count),
    ]
    groups += [("test", defect, spec.test_per_defect) for defect in CATEGORY_DEFECTS[category]]
    jobs = []
    for split, defect, count in groups:
        width = max(3, len(str(count - 1)))
        jobs += [_Job(split, defect, i, f"{i:0{width}d}") for i in range(count)]
    return jobs


def _save_png(array: NDArray[np.uint8], path: Path) -> None:
    """PNG without timestamps or text chunks, so identical arrays give identical bytes.

    compress_level=1 is both faster and (for these noisy textures) smaller than the default 6.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _write_sample(root: Path, category: str, job: _Job, spec: SyntheticSpec) -> None:
    sample = render_sample(category, job.split, job.index, spec, job.defect)
    folder = job.defect or "good"
    _save_png(sample.image, root / job.split / folder / f"{job.stem}.png")
    if sample.mask is not None:
        _save_png(sample.mask, root / "ground_truth" / folder / f"{job.stem}_mask.png")


def _replace_dir(source: Path, target: Path) -> None:
    """Swap `source` in for `target`: the old version is moved aside before it is deleted."""
    if target.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, aside)
        os.replace(source, target)
        shutil.rmtree(aside)
    else:
        os.replace(source, target)


def generate_category(category: str, out_root: Path, spec: SyntheticSpec = SyntheticSpec(), progress: bool = False) -> Path:
    """Write one category under `out_root/category` atomically: it appears complete or not at all."""
    _check_choice("category", category, BUNDLED_CATEGORIES)
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{category}.", suffix=".tmp", dir=out_root))
    try:
        staging.chmod(0o755)
        for job in tqdm(_jobs(category, spec), desc=category, unit="img", disable=not progress):
            _write_sample(staging, category, job, spec)
        _replace_dir(staging, out_root / category)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_root / category


def generate_dataset(
    out_root: Path,
    categories: Sequence[str] = BUNDLED_CATEGORIES,
    spec: SyntheticSpec = SyntheticSpec(),
    progress: bool = True,
) -> list[Path]:
    """Write several categories; all names are checked before anything is written."""
    if isinstance(categories, str):
        raise ValueError("categories must be a sequence of category names, not a single string")  # noqa: TRY004 - public API raises ValueError
    unique = list(dict.fromkeys(categories))
    for category in unique:
        _check_choice("category", category, BUNDLED_CATEGORIES)
    return [generate_category(category, out_root, spec, progress) for category in unique]


def _check_choice(what: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
