"""A one-off check set: tileable game textures, repeated and cropped at 256 px, never used to choose.

Why: a line's material is often a repeating pattern (a weave, a tread plate, a pressed or printed
surface), and the judged photographs may be of that kind. Every default was chosen on the
development suite; this set asks whether they carry over to real, tileable photo textures the suite
has never held. Its good parts are 256 px windows at random offsets of a texture tiled edge to edge,
with a +/- 3 % exposure change per image; the defects are the 256 px suite's (thin hairlines,
pinholes and fibres, painted holes, stains and contamination).

The textures come from Debian's `openarena-081-textures` (GPL-2+, read from its pk3 archive at run
time, never copied into this repository):

    apt-get install openarena-081-textures
    .venv/bin/python benchmarks/tiled_devsuite.py
    oesdn --no-progress bench devsuite --root data/devsuite_tiled --categories rock fabric planks rivets concrete --name tiled

`--second` builds a second such set from five other textures of the same archive (wood, sand,
marble, brushed pewter, mossy stone) under data/devsuite_tiled2: a fresh held-out check for defaults
that the first set has by now helped choose.

`--third` builds a third set under data/devsuite_tiled3 from five more textures (lichen-covered
rust, soil, a steel tread plate, dirty flagstones, a brown patina) with *other defects*: the bundled
generator's scratches, cracks, discolouration, darkened or bleached patches and warps, none of which
the tileable sets or the 256 px suite hold. The pipeline will be judged on defects from a generator it
has never seen; this set asks what the defaults, chosen on the first two, do on that.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import zipfile
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from components.benchmarks import devsuite_data

ARCHIVE = Path("/usr/share/games/openarena/baseoa/pak4-textures.pk3")
TEXTURES = {  # category: (member of the archive, side of one repeat in px)
    "rock": ("textures/cosmo_block/rock01.jpg", 192),
    "fabric": ("textures/evil8_floor/e8cretefloor01b.jpg", 160),
    "planks": ("textures/base_support/surface2.jpg", 224),
    "rivets": ("textures/acc_dm3/rivets.jpg", 128),
    "concrete": ("textures/base_floor/concrete.jpg", 192),
    # the second set (--second)
    "wood": ("textures/acc_dm5/wood01.jpg", 224),
    "sand": ("textures/acc_dm5/sand.jpg", 192),
    "marble": ("textures/proto2/marble02.jpg", 224),
    "pewter": ("textures/base_trim/dirty_pewter_big.jpg", 192),
    "moss": ("textures/acc_dm5/wall_dirty.jpg", 192),
    # the third set (--third)
    "lichen": ("textures/acc_dm5/rust.jpg", 192),
    "soil": ("textures/base_floor/dirt.jpg", 192),
    "treadplate": ("textures/base_floor/diamond2c.jpg", 256),
    "flagstone": ("textures/acc_dm5/stntiles_dirty.jpg", 256),
    "patina": ("textures/base_wall/rusted.jpg", 192),
}
FIRST_SET = ("rock", "fabric", "planks", "rivets", "concrete")
SECOND_SET = ("wood", "sand", "marble", "pewter", "moss")
THIRD_SET = ("lichen", "soil", "treadplate", "flagstone", "patina")
THIRD_SET_DEFECTS = ("scratch", "crack", "color", "intensity", "warp")


@cache
def _tile(category: str) -> np.ndarray:
    """One repeat of the category's texture, float RGB [0, 1]."""
    if not ARCHIVE.is_file():
        raise SystemExit(f"{ARCHIVE} not found: apt-get install openarena-081-textures")
    member, side = TEXTURES[category]
    with zipfile.ZipFile(ARCHIVE) as archive:
        image = Image.open(io.BytesIO(archive.read(member))).convert("RGB")
    return np.asarray(image.resize((side, side), Image.Resampling.LANCZOS), dtype=np.float64) / 255.0


def tiled_window(category: str, split: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A `size` px window at a random offset of the repeated texture; `split` is ignored (it repeats)."""
    tile = _tile(category)
    side = tile.shape[0]
    reps = size // side + 2
    canvas = np.tile(tile, (reps, reps, 1))
    top, left = (int(v) for v in rng.integers(0, side, 2))
    window = canvas[top : top + size, left : left + size]
    return np.clip(window * rng.uniform(0.97, 1.03), 0.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--second", action="store_true", help="build the second set under data/devsuite_tiled2")
    which.add_argument("--third", action="store_true", help="build the third set, with other defects, under data/devsuite_tiled3")
    args = parser.parse_args()
    spec = devsuite_data.HIRES_SPEC
    if args.third:
        root, categories = Path("data/devsuite_tiled3"), THIRD_SET
        spec = dataclasses.replace(spec, defects=THIRD_SET_DEFECTS)
    elif args.second:
        root, categories = Path("data/devsuite_tiled2"), SECOND_SET
    else:
        root, categories = Path("data/devsuite_tiled"), FIRST_SET
    devsuite_data.generate_devsuite(root, categories, spec, normal=tiled_window)


if __name__ == "__main__":
    main()
