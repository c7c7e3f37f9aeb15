"""Thin defects of the 256 px development suite: pixel-exact masks, a pixel or two wide, deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from components.benchmarks.devsuite_data import DevSuiteSpec, defect_types, generate_category, generate_devsuite
from components.benchmarks.thin_defects import MIN_PIXELS, THIN_DEFECTS, apply_thin_defect
from components.data.layout import build_manifest
from components.data.synthetic import MASK_TOLERANCE


def _clean(size: int = 128) -> np.ndarray:
    """A mid-grey textured image: room to darken and to lighten."""
    rng = np.random.default_rng(0)
    return np.clip(0.5 + 0.1 * ndimage.gaussian_filter(rng.standard_normal((size, size, 3)), (2, 2, 0)), 0, 1)


@pytest.mark.parametrize("kind", THIN_DEFECTS)
def test_the_mask_marks_exactly_the_pixels_the_defect_moved(kind: str) -> None:
    clean = _clean()
    clean_u8 = np.round(clean * 255).astype(np.uint8)
    image, mask = apply_thin_defect(clean, kind, np.random.default_rng(3))
    marked = mask > 0
    assert set(np.unique(mask)) == {0, 255}
    moved = np.abs(image.astype(np.int16) - clean_u8).max(axis=-1)
    assert (moved[~marked] == 0).all(), "outside the mask the image is the clean one, byte for byte"
    assert (moved[marked] > MASK_TOLERANCE).all(), "every marked pixel moved by more than the tolerance"
    assert marked.sum() >= MIN_PIXELS


@pytest.mark.parametrize("kind", ["hairline", "fiber"])
def test_lines_are_a_pixel_or_two_wide(kind: str) -> None:
    """Anti-aliasing may touch a third pixel across, but no 4 x 4 block fits inside a line."""
    for seed in range(10):
        _, mask = apply_thin_defect(_clean(), kind, np.random.default_rng(seed))
        assert not ndimage.binary_opening(mask > 0, np.ones((4, 4), dtype=bool)).any(), f"{kind} seed {seed}"


@pytest.mark.parametrize("kind", THIN_DEFECTS)
def test_the_same_generator_state_draws_the_same_defect(kind: str) -> None:
    first = apply_thin_defect(_clean(), kind, np.random.default_rng(11))
    again = apply_thin_defect(_clean(), kind, np.random.default_rng(11))
    other = apply_thin_defect(_clean(), kind, np.random.default_rng(12))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[1], other[1])


def test_an_unknown_kind_is_named() -> None:
    with pytest.raises(ValueError, match="unknown thin defect 'crease'; choose from"):
        apply_thin_defect(_clean(), "crease", np.random.default_rng(0))


def test_the_thin_suite_writes_valid_categories_byte_for_byte_again(tmp_path: Path) -> None:
    spec = DevSuiteSpec(image_size=64, train_count=3, test_good_count=2, test_per_defect=1, thin_defects=True)
    folder = generate_category(tmp_path / "a", "weave", spec, progress=False)
    again = generate_category(tmp_path / "b", "weave", spec, progress=False)
    assert set(THIN_DEFECTS) <= {p.name for p in (folder / "test").iterdir()} == {"good", *defect_types("weave", thin=True)}
    files = sorted(p.relative_to(folder) for p in folder.rglob("*.png"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.png"))
    assert all((folder / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert build_manifest(folder.parent, "weave", val_fraction=0.34, seed=0).attrs["masks_available"]
    assert Image.open(folder / "test" / "hairline" / "000.png").size == (64, 64)


def test_a_given_source_of_good_parts_replaces_the_suites_and_keeps_its_defects(tmp_path: Path) -> None:
    """The one-off check sets under `benchmarks/` bring their own good parts, under their own names."""
    spec = DevSuiteSpec(image_size=32, train_count=2, test_good_count=1, test_per_defect=1, thin_defects=True)
    seen: list[tuple[str, str]] = []

    def flat_grey(category: str, split: str, size: int, rng: np.random.Generator) -> np.ndarray:
        seen.append((category, split))
        return np.full((size, size, 3), 0.5)

    folder = generate_category(tmp_path, "slate", spec, progress=False, normal=flat_grey)
    assert set(seen) == {("slate", "train"), ("slate", "test")}
    good = np.asarray(Image.open(folder / "train" / "good" / "001.png"))
    assert (good == 128).all()
    hairline = np.asarray(Image.open(folder / "test" / "hairline" / "000.png")).astype(int)
    mask = np.asarray(Image.open(folder / "ground_truth" / "hairline" / "000_mask.png")) > 0
    assert mask.any() and (hairline[~mask] == 128).all(), "the defect is the suite's, inside its mask only"
    with pytest.raises(ValueError, match="unknown development-suite category 'slate'"):
        generate_category(tmp_path / "b", "slate", spec, progress=False)


def test_an_interrupted_category_is_rebuilt_not_taken_for_finished(tmp_path: Path) -> None:
    """A run stopped half-way (Ctrl-C, a killed job) must not leave a folder the next run skips."""
    spec = DevSuiteSpec(image_size=32, train_count=4, test_good_count=1, test_per_defect=1, thin_defects=True)
    calls = 0

    def dies_on_the_third(category: str, split: str, size: int, rng: np.random.Generator) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return np.full((size, size, 3), 0.5)

    with pytest.raises(KeyboardInterrupt):
        generate_devsuite(tmp_path, ("slate",), spec, progress=False, normal=dies_on_the_third)
    assert not (tmp_path / "slate").exists()
    (folder,) = generate_devsuite(tmp_path, ("slate",), spec, progress=False, normal=dies_on_the_third)
    assert len(list((folder / "train" / "good").glob("*.png"))) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["slate"]  # no partial folder left behind


def test_a_spec_with_its_own_defects_draws_those_and_names_an_unknown_one(tmp_path: Path) -> None:
    """The third tileable check set draws other defects than the ones the defaults were chosen on."""
    spec = DevSuiteSpec(image_size=32, train_count=1, test_good_count=1, test_per_defect=1, defects=("warp", "intensity"))
    folder = generate_category(tmp_path, "weave", spec, progress=False)
    assert {p.name for p in (folder / "test").iterdir()} == {"good", "warp", "intensity"}
    assert {p.name for p in (folder / "ground_truth").iterdir()} == {"warp", "intensity"}
    with pytest.raises(ValueError, match=r"unknown defect types \['dent'\] in DevSuiteSpec.defects"):
        DevSuiteSpec(defects=("warp", "dent"))
