"""Synthetic defects pasted into held-out normal images: a label-free check of a trained model.

Why: a category may have no defective test images, and defaults must never be chosen on test
labels. Pasting defects into the validation normals (which no network trained on) gives a labelled
check from good parts only. The generator is deliberately unlike the outlier exposure's
(`foreign_patch`, `noise_patch`: blobs of recoloured image or smooth noise): straight-segment
lines, hard-edged ellipses of flat colour, local blur and local tone changes, so a model is not
rewarded for recognising its own training outliers. The optional `stroke_patch` outliers (thin curved
strokes, not a default) come close to the lines: with them, read the check's figure as optimistic.

Masks are pixel-exact: a pixel is anomalous when the defect moved some channel by more than
`MASK_TOLERANCE` grey levels.
"""

from __future__ import annotations

import itertools
import zlib

import numpy as np
from scipy import ndimage

KINDS = ("line", "spot", "smear", "tone")
MASK_TOLERANCE = 8
MIN_FRACTION = 0.002
MAX_ATTEMPTS = 32


def _ellipse(size: int, rng: np.random.Generator, radius: tuple[float, float]) -> np.ndarray:
    """float (size, size) in [0, 1]: 1 inside a randomly placed and rotated ellipse, soft 1 px edge."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = rng.uniform(0.15, 0.85, 2) * size
    ry, rx = rng.uniform(*radius, 2) * size
    angle = rng.uniform(0, np.pi)
    dy, dx = y - cy, x - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
    v = (dy * np.cos(angle) - dx * np.sin(angle)) / ry
    distance = (np.hypot(u, v) - 1.0) * min(rx, ry)
    return np.clip(0.5 - distance, 0.0, 1.0)


def _line(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A polyline of 1-3 straight segments, 1-2.5 px wide, in a random flat colour."""
    size = img.shape[-1]
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    points = [rng.uniform(0.1, 0.9, 2) * size]
    for _ in range(int(rng.integers(1, 4))):
        step = rng.normal(0, 0.25 * size, 2)
        points.append(np.clip(points[-1] + step, 0, size - 1))
    distance = np.full((size, size), np.inf)
    for (ay, ax), (by, bx) in itertools.pairwise(points):
        vy, vx = by - ay, bx - ax
        t = np.clip(((y - ay) * vy + (x - ax) * vx) / max(vy * vy + vx * vx, 1e-9), 0, 1)
        distance = np.minimum(distance, np.hypot(y - ay - t * vy, x - ax - t * vx))
    alpha = np.clip(rng.uniform(0.5, 1.25) + 0.5 - distance, 0.0, 1.0)
    colour = rng.uniform(0, 1, (img.shape[0], 1, 1))
    return img * (1 - alpha) + colour * alpha


def _spot(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    alpha = _ellipse(img.shape[-1], rng, (0.03, 0.09))
    colour = rng.uniform(0, 1, (img.shape[0], 1, 1))
    return img * (1 - alpha) + colour * alpha


def _smear(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    alpha = _ellipse(img.shape[-1], rng, (0.06, 0.16))
    sigma = rng.uniform(1.5, 3.0)
    blurred = np.stack([ndimage.gaussian_filter(channel, sigma, mode="reflect") for channel in img])
    return img * (1 - alpha) + blurred * alpha


def _tone(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    alpha = ndimage.gaussian_filter(_ellipse(img.shape[-1], rng, (0.05, 0.14)), 1.5)
    gain = rng.uniform(0.45, 0.7) if rng.random() < 0.5 else rng.uniform(1.4, 1.9)
    return np.clip(img * (1 + (gain - 1) * alpha), 0.0, 1.0)


_PAINTERS = {"line": _line, "spot": _spot, "smear": _smear, "tone": _tone}


def paste_defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (C, H, W) image -> (defective uint8 image, bool (H, W) pixel-exact mask)."""
    if kind not in _PAINTERS:
        raise ValueError(f"unknown validation defect {kind!r}; choose from {list(KINDS)}")
    if image.ndim != 3 or image.dtype != np.uint8 or image.shape[1] != image.shape[2]:
        raise ValueError(f"expected a square uint8 (C, H, W) image, got {image.dtype} {image.shape}")
    clean = image.astype(np.float64) / 255.0
    minimum = max(1, round(MIN_FRACTION * image.shape[1] * image.shape[2]))
    for _ in range(MAX_ATTEMPTS):
        painted = np.round(np.clip(_PAINTERS[kind](clean, rng), 0, 1) * 255).astype(np.uint8)
        mask = np.abs(painted.astype(np.int16) - image).max(axis=0) > MASK_TOLERANCE
        if mask.sum() >= minimum:
            return np.where(mask[None], painted, image), mask
    raise RuntimeError(f"could not paint a visible {kind!r} defect in {MAX_ATTEMPTS} attempts (is the image constant?)")


def defective_copies(images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One defective copy of each uint8 (N, C, H, W) image, kinds in turn.

    Returns (images, bool (N, H, W) masks, kinds (N,)). Each image has its own random stream from
    (seed, index), so the copies do not depend on batch order.
    """
    out = np.empty_like(images)
    masks = np.zeros((len(images), *images.shape[2:]), dtype=bool)
    kinds = np.array([KINDS[i % len(KINDS)] for i in range(len(images))])
    for index, image in enumerate(images):
        rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(b"validation-defects"), index]))
        # A blur is invisible on a flat surface: fall back to the next kind rather than fail.
        start = index % len(KINDS)
        for offset in range(len(KINDS)):
            kind = KINDS[(start + offset) % len(KINDS)]
            try:
                out[index], masks[index] = paste_defect(image, kind, rng)
            except RuntimeError:
                continue
            kinds[index] = kind
            break
        else:
            raise RuntimeError(f"no validation defect is visible on validation image {index} (is it constant?)")
    return out, masks, kinds
