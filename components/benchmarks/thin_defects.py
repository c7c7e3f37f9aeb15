"""Thin defects for the 256 px development suite: hairlines, pinholes and fibres of a pixel or two.

Why: a line's 256 px photographs may carry defects one or two pixels wide, which a 2x downscale
halves in contrast. The bundled painter (`components.data.synthetic`) scales every defect with the
image, so at 256 px its scratches are 4-8 px wide and cannot tell whether a setting serves thin
ones. These are drawn in absolute pixels instead, by a generator unlike the painter, the outlier
exposure and the label-free check. Masks are pixel-exact, as the painter's: a pixel is defective
where the defect moved some channel by more than `synthetic.MASK_TOLERANCE` grey levels.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from components.data import synthetic

THIN_DEFECTS = ("hairline", "pinholes", "fiber")
MIN_PIXELS = 24  # redraw a defect that changed fewer pixels than this
MAX_ATTEMPTS = 32


def _curve(rng: np.random.Generator, size: int, length: float, wiggle: float) -> NDArray[np.float64]:
    """(N, 2) points of a smooth random walk of about `length` px, 2 px per step, inside the image."""
    steps = max(2, round(length / 2.0))
    start = rng.uniform(0.1, 0.9, 2) * size
    headings = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0.0, wiggle, steps))
    moves = 2.0 * np.stack([np.sin(headings), np.cos(headings)], axis=-1)
    return np.clip(np.vstack([start, start + np.cumsum(moves, axis=0)]), 0, size - 1)


def _hairline(img: NDArray[np.float64], rng: np.random.Generator) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """A long, nearly straight line 0.8-1.6 px wide, darker or lighter than what it crosses."""
    size = img.shape[0]
    width = rng.uniform(0.8, 1.6)
    distance = synthetic._segment_distance(_curve(rng, size, rng.uniform(0.25, 0.6) * size, 0.05), size)
    alpha = synthetic._line_alpha(distance, width) * rng.uniform(0.35, 0.7)
    target = np.zeros_like(img) if rng.random() < 0.5 else np.ones_like(img)
    return synthetic._lerp(img, target, alpha), distance < width / 2 + 1


def _pinholes(img: NDArray[np.float64], rng: np.random.Generator) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """A cluster of 3-8 dark dots of 1-2.5 px radius."""
    size = img.shape[0]
    y, x = synthetic._grid(size)
    centre = rng.uniform(0.15, 0.85, 2) * size
    alpha = np.zeros((size, size))
    for _ in range(int(rng.integers(3, 9))):
        cy, cx = centre + rng.normal(0.0, 0.04 * size, 2)
        radius = rng.uniform(1.0, 2.5)
        alpha = np.maximum(alpha, np.clip(radius + 0.5 - np.hypot(y - cy, x - cx), 0.0, 1.0))
    darkened = img * rng.uniform(0.15, 0.45)
    return synthetic._lerp(img, darkened, alpha), alpha > 0


def _fiber(img: NDArray[np.float64], rng: np.random.Generator) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """A curly foreign fibre 1-2 px wide in a colour of its own."""
    size = img.shape[0]
    width = rng.uniform(1.0, 2.0)
    distance = synthetic._segment_distance(_curve(rng, size, rng.uniform(0.15, 0.35) * size, 0.35), size)
    alpha = synthetic._line_alpha(distance, width) * rng.uniform(0.6, 0.9)
    colour = np.broadcast_to(rng.uniform(0.0, 1.0, 3), img.shape)
    return synthetic._lerp(img, colour, alpha), distance < width / 2 + 1


_DRAW = {"hairline": _hairline, "pinholes": _pinholes, "fiber": _fiber}


def apply_thin_defect(
    clean: NDArray[np.float64], kind: str, rng: np.random.Generator
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """(defective uint8 RGB, uint8 mask 0/255) of one thin defect on a float RGB [0, 1] image."""
    if kind not in _DRAW:
        raise ValueError(f"unknown thin defect {kind!r}; choose from {list(THIN_DEFECTS)}")
    clean_u8 = synthetic._to_uint8(clean)
    for _ in range(MAX_ATTEMPTS):
        defective, support = _DRAW[kind](clean, rng)
        defective_u8 = synthetic._to_uint8(defective)
        changed = synthetic._changed_pixels(clean_u8, defective_u8) & support  # no closing: a line stays its own width
        if changed.sum() >= MIN_PIXELS:
            return np.where(changed[..., None], defective_u8, clean_u8), changed.astype(np.uint8) * 255
    raise RuntimeError(f"could not draw a visible {kind!r} defect in {MAX_ATTEMPTS} attempts")
