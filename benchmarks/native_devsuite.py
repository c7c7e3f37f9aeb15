"""A one-off check set: the 256 px suite's photo categories cut at the photos' own resolution.

`oesdn bench devsuite --hires` upsamples its photo crops from the 128 px suite's cells, so their
texture is smooth at the pixel level. This script writes ihc, moon and retina as 256 px crops taken
straight from the photos (no resampling), with the same thin and painted defects, to
`data/devsuite256n`. The photos are too small for disjoint train and test regions at this size, so
train and test crops may overlap: compare methods on it, do not read its false alarms as a promise.

    .venv/bin/python benchmarks/native_devsuite.py
    oesdn --no-progress bench devsuite --root data/devsuite256n --categories ihc moon retina --name devsuite256n
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.benchmarks import devsuite_data


def native_crop(category: str, split: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A `size` px crop anywhere in the photo, mirrored half the time; `split` is ignored (see above)."""
    photo = devsuite_data._photo(category)
    top = int(rng.integers(0, photo.shape[0] - size + 1))
    left = int(rng.integers(0, photo.shape[1] - size + 1))
    patch = photo[top : top + size, left : left + size]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return np.asarray(patch, dtype=np.float64)


if __name__ == "__main__":
    devsuite_data.generate_devsuite(
        Path("data/devsuite256n"), ("ihc", "moon", "retina"), devsuite_data.HIRES_SPEC, normal=native_crop
    )
