"""Bundled synthetic dataset: layout, determinism, exact masks, disjoint splits, atomic writes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.data import synthetic
from components.data.synthetic import (
    BUNDLED_CATEGORIES,
    CATEGORY_DEFECTS,
    DEFECT_TYPES,
    MASK_TOLERANCE,
    MIN_DEFECT_FRACTION,
    PHOTO_SIZE,
    SyntheticSpec,
    crop_box,
    generate_category,
    generate_dataset,
    render_sample,
    split_rows,
)

SMALL = SyntheticSpec(image_size=64, train_count=3, test_good_count=2, test_per_defect=1, seed=7)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_category_has_several_known_defects_and_all_types_are_used() -> None:
    assert set(CATEGORY_DEFECTS) == set(BUNDLED_CATEGORIES)
    for defects in CATEGORY_DEFECTS.values():
        assert len(defects) >= 4
        assert set(defects) <= set(DEFECT_TYPES)
    assert set().union(*CATEGORY_DEFECTS.values()) == set(DEFECT_TYPES)


def test_layout_and_file_formats(tmp_path: Path) -> None:
    root = generate_category("grass", tmp_path, SMALL)
    assert root == tmp_path / "grass"
    files = set(_tree(root))
    expected = {f"train/good/{i:03d}.png" for i in range(3)} | {f"test/good/{i:03d}.png" for i in range(2)}
    for defect in CATEGORY_DEFECTS["grass"]:
        expected |= {f"test/{defect}/000.png", f"ground_truth/{defect}/000_mask.png"}
    assert files == expected
    for name in files:
        with Image.open(root / name) as img:
            assert img.size == (64, 64)
            assert img.mode == ("L" if name.startswith("ground_truth") else "RGB")
            if img.mode == "L":
                values = np.unique(np.asarray(img))
                assert set(values.tolist()) <= {0, 255} and 255 in values
    assert [p.name for p in tmp_path.iterdir()] == ["grass"]  # no staging leftovers


def test_generation_is_byte_identical_and_seed_dependent(tmp_path: Path) -> None:
    spec = SyntheticSpec(image_size=32, train_count=2, test_good_count=1, test_per_defect=1, seed=3)
    first = _tree(generate_category("brick", tmp_path / "a", spec))
    second = _tree(generate_category("brick", tmp_path / "b", spec))
    assert first == second
    other = _tree(generate_category("brick", tmp_path / "c", replace(spec, seed=4)))
    assert other.keys() == first.keys() and other != first


@pytest.mark.parametrize("category", BUNDLED_CATEGORIES)
def test_masks_are_exact(category: str) -> None:
    spec = SyntheticSpec(image_size=64, seed=1)
    for defect in CATEGORY_DEFECTS[category]:
        for index in range(2):
            sample = render_sample(category, "test", index, spec, defect)
            assert sample.mask is not None and sample.mask.shape == sample.image.shape[:2]
            mask = sample.mask > 0
            assert set(np.unique(sample.mask).tolist()) <= {0, 255}
            assert MIN_DEFECT_FRACTION <= mask.mean() <= 0.2, (defect, mask.mean())
            change = np.abs(sample.image.astype(int) - sample.clean).max(axis=-1)
            assert change[~mask].max(initial=0) <= MASK_TOLERANCE, defect
            assert (change[mask] > MASK_TOLERANCE).mean() > 0.5, defect  # the mask is mostly real change


def test_train_and_test_crops_come_from_disjoint_regions() -> None:
    train_start, train_stop = split_rows("train")
    test_start, test_stop = split_rows("test")
    assert train_start == 0 and train_stop == test_start and test_stop == PHOTO_SIZE
    for seed in range(200):
        for split, (start, stop) in (("train", (train_start, train_stop)), ("test", (test_start, test_stop))):
            box = crop_box(split, 128, np.random.default_rng(seed))
            assert start <= box.top and box.top + box.size <= stop
            assert 0 <= box.left and box.left + box.size <= PHOTO_SIZE
    assert render_sample("gravel", "test", 0, SMALL, "stain").box.top >= test_start


def test_regeneration_replaces_old_version(tmp_path: Path) -> None:
    generate_category("gravel", tmp_path, SMALL)
    stale = tmp_path / "gravel" / "stale.txt"
    stale.write_text("old")
    smaller = SyntheticSpec(image_size=32, train_count=1, test_good_count=1, test_per_defect=1)
    generate_category("gravel", tmp_path, smaller)
    assert not stale.exists()
    assert len(list((tmp_path / "gravel" / "train" / "good").iterdir())) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["gravel"]


def test_failed_run_keeps_old_version_and_leaves_no_partial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generate_category("brick", tmp_path, SMALL)
    before = _tree(tmp_path / "brick")
    calls = 0
    real_write = synthetic._write_sample

    def failing_write(*args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError("disk full")
        real_write(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(synthetic, "_write_sample", failing_write)
    with pytest.raises(OSError, match="disk full"):
        generate_dataset(tmp_path, ["grass", "brick"], SMALL, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["brick"]
    assert _tree(tmp_path / "brick") == before


def test_generate_dataset_returns_category_roots(tmp_path: Path) -> None:
    spec = SyntheticSpec(image_size=16, train_count=1, test_good_count=1, test_per_defect=1)
    roots = generate_dataset(tmp_path, ["gravel", "grass", "gravel"], spec, progress=False)
    assert roots == [tmp_path / "gravel", tmp_path / "grass"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 0},
        {"image_size": 8},
        {"train_count": 0},
        {"test_good_count": -1},
        {"test_per_defect": 0},
        {"crop_size": 0},
        {"crop_size": PHOTO_SIZE},
        {"seed": -1},
        {"train_count": 2.5},
    ],
)
def test_bad_spec_raises(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SyntheticSpec(**kwargs)  # type: ignore[arg-type]


def test_bad_names_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="brick, grass, gravel"):
        generate_category("carpet", tmp_path, SMALL)
    with pytest.raises(ValueError, match="carpet"):
        generate_dataset(tmp_path, ["grass", "carpet"], SMALL, progress=False)
    assert not any(tmp_path.iterdir())  # names are checked before anything is written
    with pytest.raises(ValueError, match="allowed"):
        render_sample("grass", "test", 0, SMALL, "crack")
    with pytest.raises(ValueError, match="test"):
        render_sample("grass", "train", 0, SMALL, "stain")
    with pytest.raises(ValueError, match="train, test"):
        render_sample("grass", "val", 0, SMALL)
