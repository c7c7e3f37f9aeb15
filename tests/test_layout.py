"""Dataset layout scanning, validation, manifests and image decoding, on tiny synthetic datasets."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from components.data.images import load_image, load_mask, probe_image
from components.data.layout import (
    MANIFEST_COLUMNS,
    DatasetError,
    build_manifest,
    manifest_hash,
    read_manifest,
    write_manifest,
)
from components.io import sha256_file

CATEGORY = "widget"


def _save(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _rgb(path: Path, value: int = 128, size: tuple[int, int] = (16, 16)) -> Path:
    return _save(path, Image.new("RGB", size, (value, 255 - value, 7)))


def _mask(path: Path, size: tuple[int, int] = (16, 16)) -> Path:
    mask = np.zeros(size[::-1], dtype=np.uint8)
    mask[2:6, 3:9] = 255
    return _save(path, Image.fromarray(mask))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A valid category: 5 train, 2 normal test, 3 anomalous test images in 2 defect types, masks."""
    category = tmp_path / "data" / CATEGORY
    for i in range(5):
        _rgb(category / "train" / "good" / f"{i:03d}.png", value=i)
    for i in range(2):
        _rgb(category / "test" / "good" / f"{i:03d}.png", value=50 + i)
        _rgb(category / "test" / "crack" / f"{i:03d}.png", value=100 + i)
        _mask(category / "ground_truth" / "crack" / f"{i:03d}_mask.png")
    _rgb(category / "test" / "scratch" / "000.JPG", value=200)
    _mask(category / "ground_truth" / "scratch" / "000_mask.png")
    return tmp_path / "data"


def _build(root: Path, **kwargs: object) -> pd.DataFrame:
    settings = {"val_fraction": 0.4, "seed": 0} | kwargs
    return build_manifest(root, CATEGORY, **settings)


def _error(root: Path, **kwargs: object) -> str:
    with pytest.raises(DatasetError) as info:
        _build(root, **kwargs)
    return str(info.value)


# --- happy paths ---------------------------------------------------------------------------------


def test_manifest_with_masks(root: Path) -> None:
    manifest = _build(root)
    category = (root / CATEGORY).resolve()
    assert tuple(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["split"].value_counts().to_dict() == {"train": 3, "val": 2, "test": 5}
    test = manifest[manifest["split"] == "test"]
    assert test.groupby("defect_type")["label"].agg(list).to_dict() == {
        "good": [0, 0],
        "crack": [1, 1],
        "scratch": [1],
    }
    assert (manifest.loc[manifest["split"] != "test", "label"] == 0).all()
    anomalous = manifest[manifest["label"] == 1]
    assert list(anomalous["mask_path"]) == [
        (category / "ground_truth" / "crack" / "000_mask.png").as_posix(),
        (category / "ground_truth" / "crack" / "001_mask.png").as_posix(),
        (category / "ground_truth" / "scratch" / "000_mask.png").as_posix(),
    ]
    assert (manifest.loc[manifest["label"] == 0, "mask_path"] == "").all()
    assert all(Path(p).is_absolute() and "\\" not in p for p in manifest["path"])
    assert all(sha256_file(p) == h for p, h in zip(manifest["path"], manifest["sha256"], strict=True))
    assert manifest.attrs["masks_available"] is True


def test_split_is_deterministic_given_seed(root: Path) -> None:
    first, again = _build(root, seed=3), _build(root, seed=3)
    pd.testing.assert_frame_equal(first, again)
    val_sets = {tuple(_build(root, seed=s).query("split == 'val'")["path"]) for s in range(6)}
    assert len(val_sets) > 1, "the seed should choose which images are held out"


@pytest.mark.parametrize(("fraction", "n_val"), [(0.0, 0), (0.01, 1), (0.5, 3), (0.99, 4)])
def test_val_count_rounds_and_keeps_both_splits(root: Path, fraction: float, n_val: int) -> None:
    manifest = _build(root, val_fraction=fraction)
    assert (manifest["split"] == "val").sum() == n_val
    assert (manifest["split"] == "train").sum() == 5 - n_val


def test_single_training_image_leaves_val_empty(root: Path) -> None:
    for path in sorted((root / CATEGORY / "train" / "good").iterdir())[1:]:
        path.unlink()
    assert _build(root, val_fraction=0.5)["split"].value_counts().to_dict() == {"test": 5, "train": 1}


def test_manifest_without_ground_truth(root: Path) -> None:
    shutil.rmtree(root / CATEGORY / "ground_truth")
    manifest = _build(root)
    assert manifest.attrs["masks_available"] is False
    assert (manifest["mask_path"] == "").all()
    assert (manifest["split"] == "test").sum() == 5


def test_hidden_files_are_ignored(root: Path) -> None:
    (root / CATEGORY / "train" / "good" / ".DS_Store").write_bytes(b"junk")
    _rgb(root / CATEGORY / "test" / "crack" / "._000.png")
    assert len(_build(root)) == 10


def test_manifest_hash_ignores_location_but_tracks_content(root: Path, tmp_path: Path) -> None:
    original = manifest_hash(_build(root))
    elsewhere = tmp_path / "copy" / "nested"
    shutil.copytree(root, elsewhere)
    assert manifest_hash(_build(elsewhere)) == original
    val_of = {s: set(_build(root, seed=s).query("split == 'val'")["path"]) for s in range(6)}
    other_seed = next(s for s in val_of if val_of[s] != val_of[0])
    assert manifest_hash(_build(root, seed=other_seed)) != original, "the split is part of the data"
    _rgb(elsewhere / CATEGORY / "test" / "good" / "001.png", value=99)
    assert manifest_hash(_build(elsewhere)) != original


def test_manifest_hash_tracks_mask_content(root: Path) -> None:
    original = manifest_hash(_build(root))
    _save(root / CATEGORY / "ground_truth" / "crack" / "000_mask.png", Image.new("L", (16, 16), 255))
    assert manifest_hash(_build(root)) != original


def test_manifest_round_trips_through_csv(root: Path, tmp_path: Path) -> None:
    manifest = _build(root)
    target = tmp_path / "out" / "manifest.csv"
    write_manifest(manifest, target)
    loaded = read_manifest(target)
    pd.testing.assert_frame_equal(loaded, manifest)
    assert loaded.attrs == manifest.attrs
    assert manifest_hash(loaded) == manifest_hash(manifest)
    assert list(target.parent.iterdir()) == [target]


def test_read_manifest_rejects_foreign_csv(tmp_path: Path) -> None:
    target = tmp_path / "other.csv"
    target.write_text("path,label\na.png,0\n")
    with pytest.raises(DatasetError, match="rebuild it with build_manifest") as info:
        read_manifest(target)
    assert str(target) in str(info.value)


# --- settings errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("category", ["", ".", "..", "a/b", "/abs", "a\\b", "bad name", "../widget"])
def test_category_must_be_plain_name(root: Path, category: str) -> None:
    with pytest.raises(DatasetError) as info:
        build_manifest(root, category, val_fraction=0.1, seed=0)
    assert repr(category) in str(info.value)
    assert "letters, digits" in str(info.value)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan"), "0.1", True, None])
def test_val_fraction_range(root: Path, fraction: object) -> None:
    message = _error(root, val_fraction=fraction)
    assert "data.val_fraction" in message and repr(fraction) in message
    assert "[0, 1)" in message


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None])
def test_seed_must_be_non_negative_int(root: Path, seed: object) -> None:
    assert "seed must be a non-negative integer" in _error(root, seed=seed)


# --- missing folders -----------------------------------------------------------------------------


def test_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    message = _error(missing)
    assert str(missing) in message and "point the dataset root" in message


def test_missing_category_lists_found_ones(root: Path) -> None:
    with pytest.raises(DatasetError) as info:
        build_manifest(root, "gadget", val_fraction=0.1, seed=0)
    message = str(info.value)
    assert str(root.resolve() / "gadget") in message
    assert f"categories found in {root}: {CATEGORY}" in message
    assert "fix the category name" in message


def test_missing_train_good(root: Path) -> None:
    train_good = root.resolve() / CATEGORY / "train" / "good"
    shutil.rmtree(train_good)
    message = _error(root)
    assert f"missing folder {train_good}: create it" in message
    assert "Expected layout" in message


def test_empty_train_good(root: Path) -> None:
    train_good = root.resolve() / CATEGORY / "train" / "good"
    for path in train_good.iterdir():
        path.unlink()
    assert f"no images in {train_good}: add the normal (defect-free) training images" in _error(root)


def test_extra_train_folder(root: Path) -> None:
    extra = root.resolve() / CATEGORY / "train" / "bad"
    _rgb(extra / "000.png")
    message = _error(root)
    assert f"unexpected folder {extra}" in message and "move anomalous images to test/" in message


def test_missing_test_folder(root: Path) -> None:
    test_dir = root.resolve() / CATEGORY / "test"
    shutil.rmtree(test_dir)
    shutil.rmtree(root / CATEGORY / "ground_truth")
    message = _error(root)
    assert f"missing folder {test_dir}: create test/good" in message


def test_missing_test_good(root: Path) -> None:
    test_good = root.resolve() / CATEGORY / "test" / "good"
    shutil.rmtree(test_good)
    message = _error(root)
    assert f"missing folder {test_good}: create it and put the normal test images" in message


def test_no_defect_folders(root: Path) -> None:
    for name in ("crack", "scratch"):
        shutil.rmtree(root / CATEGORY / "test" / name)
    shutil.rmtree(root / CATEGORY / "ground_truth")
    test_dir = root.resolve() / CATEGORY / "test"
    assert f"no defect folders in {test_dir}: add test/<defect_type>/ folders" in _error(root)


def test_empty_defect_folder(root: Path) -> None:
    empty = root.resolve() / CATEGORY / "test" / "dent"
    empty.mkdir()
    assert f"no images in {empty}: add the anomalous test images of defect type 'dent'" in _error(root)


# --- files ---------------------------------------------------------------------------------------


def test_unsupported_files_are_reported(root: Path) -> None:
    note = root.resolve() / CATEGORY / "test" / "good" / "notes.txt"
    note.write_text("hi")
    stray = root.resolve() / CATEGORY / "test" / "readme.md"
    stray.write_text("hi")
    message = _error(root)
    assert f"unexpected file {note}: only images (.bmp .jpeg .jpg .png .tif .tiff)" in message
    assert f"unexpected file {stray}: " in message and "may only contain folders" in message


def test_corrupt_images_are_all_reported_at_once(root: Path) -> None:
    category = root.resolve() / CATEGORY
    good = category / "train" / "good" / "000.png"
    truncated = category / "train" / "good" / "001.png"
    truncated.write_bytes(good.read_bytes()[:60])
    empty = category / "test" / "good" / "000.png"
    empty.write_bytes(b"")
    garbage = category / "test" / "crack" / "000.png"
    garbage.write_bytes(b"not an image at all" * 10)
    message = _error(root)
    assert "(3 problems)" in message
    for path in (truncated, empty, garbage):
        assert f"cannot read image {path} (" in message
    assert "replace it with an intact copy" in message


def test_image_without_mask(root: Path) -> None:
    category = root.resolve() / CATEGORY
    (category / "ground_truth" / "crack" / "001_mask.png").unlink()
    message = _error(root)
    image, expected = category / "test" / "crack" / "001.png", category / "ground_truth" / "crack" / "001_mask.png"
    assert f"image {image} has no mask, expected {expected}; add the mask" in message


def test_mask_without_image(root: Path) -> None:
    category = root.resolve() / CATEGORY
    orphan = _mask(category / "ground_truth" / "crack" / "007_mask.bmp")
    message = _error(root)
    assert f"mask {orphan} has no image, expected {category / 'test' / 'crack' / '007'}.<ext>" in message
    assert "add the image or delete the mask" in message


def test_mask_with_wrong_name(root: Path) -> None:
    wrong = _mask(root.resolve() / CATEGORY / "ground_truth" / "crack" / "002.png")
    assert f"mask {wrong} is not named <image_stem>_mask<ext>; rename it" in _error(root)


def test_ambiguous_stems(root: Path) -> None:
    crack = root.resolve() / CATEGORY / "test" / "crack"
    _rgb(crack / "000.bmp")
    message = _error(root)
    assert f"{crack / '000.bmp'} and {crack / '000.png'} share the name stem '000'" in message
    assert "pairing is ambiguous; rename or delete one" in message


def test_mask_size_mismatch(root: Path) -> None:
    category = root.resolve() / CATEGORY
    mask = _mask(category / "ground_truth" / "crack" / "000_mask.png", size=(8, 12))
    image = category / "test" / "crack" / "000.png"
    message = _error(root)
    assert f"mask {mask} is 8x12 but image {image} is 16x16; re-export the mask" in message


def test_mixed_channel_counts(root: Path) -> None:
    gray = _save(root.resolve() / CATEGORY / "train" / "good" / "003.png", Image.new("L", (16, 16), 9))
    message = _error(root)
    assert f"1-channel: 1 files (e.g. {gray})" in message and "3-channel: 9 files" in message
    assert "convert every image to one mode" in message


def test_problem_list_is_capped(root: Path) -> None:
    crack = root / CATEGORY / "test" / "crack"
    for i in range(30):
        _rgb(crack / f"{100 + i}.png")
    message = _error(root)
    assert "(30 problems)" in message and "... and 10 more" in message
    assert message.count("has no mask, expected") == 20


# --- image decoding ------------------------------------------------------------------------------


def test_load_image_shapes_and_channels(tmp_path: Path) -> None:
    rgb = _rgb(tmp_path / "rgb.png", value=200, size=(40, 24))
    array = load_image(rgb, 8, 3)
    assert array.dtype == np.uint8 and array.shape == (3, 8, 8) and array.flags.c_contiguous
    assert tuple(array[:, 4, 4]) == (200, 55, 7)
    gray = load_image(rgb, 8, 1)
    assert gray.shape == (1, 8, 8) and gray.dtype == np.uint8
    as_rgb = load_image(_save(tmp_path / "l.png", Image.new("L", (5, 5), 77)), 6, 3)
    assert as_rgb.shape == (3, 6, 6) and (as_rgb == 77).all()


def test_load_image_antialiases_when_downsampling(tmp_path: Path) -> None:
    stripes = np.zeros((64, 64), dtype=np.uint8)
    stripes[:, ::2] = 255
    array = load_image(_save(tmp_path / "stripes.png", Image.fromarray(stripes)), 8, 1)
    assert np.abs(array.astype(int) - 128).max() <= 8, "fine stripes should average, not alias"


def test_load_image_rescales_16_bit(tmp_path: Path) -> None:
    wide = np.full((4, 4), 65535, dtype=np.uint16)
    wide[0, 0] = 257 * 10
    path = _save(tmp_path / "wide.png", Image.fromarray(wide))
    assert probe_image(path).channels == 1
    array = load_image(path, 4, 1)
    assert array[0, 1, 1] == 255 and array[0, 0, 0] == 10


def test_load_image_rejects_bad_arguments_and_files(tmp_path: Path) -> None:
    path = _rgb(tmp_path / "x.png")
    with pytest.raises(ValueError, match="channels must be 1"):
        load_image(path, 8, 4)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        load_image(path, 0, 3)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    with pytest.raises(DatasetError, match="cannot read image .*broken.png"):
        load_image(broken, 8, 3)


def test_load_mask_any_nonzero_and_nearest(tmp_path: Path) -> None:
    raw = np.zeros((4, 4, 3), dtype=np.uint8)
    raw[0, 0] = (1, 0, 0)  # dark red: zero after an RGB->L conversion, still anomalous
    raw[3, 3] = (0, 0, 200)
    mask = load_mask(_save(tmp_path / "m.png", Image.fromarray(raw)), 8)
    assert mask.dtype == np.bool_ and mask.shape == (8, 8)
    assert mask[:2, :2].all() and mask[6:, 6:].all() and mask.sum() == 8


def test_load_mask_palette_uses_colours_not_indices(tmp_path: Path) -> None:
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # index 0 is white, index 1 black
    palette.putpixel((0, 0), 1)
    mask = load_mask(_save(tmp_path / "p.png", palette), 4)
    assert not mask[0, 0] and mask.sum() == 15


@pytest.mark.parametrize(
    ("mode", "channels"),
    [("1", 1), ("L", 1), ("LA", 1), ("I;16", 1), ("RGB", 3), ("RGBA", 3)],
)
def test_probe_image(tmp_path: Path, mode: str, channels: int) -> None:
    assert probe_image(_save(tmp_path / "x.png", Image.new(mode, (4, 4)))).channels == channels


def test_palette_channel_count_depends_on_colours(tmp_path: Path) -> None:
    gray = Image.new("P", (4, 4), 1)
    gray.putpalette([0, 0, 0, 90, 90, 90] + [255, 0, 0] * 254)  # red entry unused
    assert probe_image(_save(tmp_path / "gray.png", gray)).channels == 1
    gray.putpixel((0, 0), 2)
    assert probe_image(_save(tmp_path / "colour.png", gray)).channels == 3
