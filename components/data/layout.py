"""Scan one category of an MVTec-AD-layout dataset into a validated manifest.

Layout (the field's de-facto standard):
    <root>/<category>/train/good/*            normal training images
    <root>/<category>/test/good/*             normal test images
    <root>/<category>/test/<defect_type>/*    anomalous test images
    <root>/<category>/ground_truth/<defect_type>/<image_stem>_mask.*   optional masks

Every problem is collected and reported in one DatasetError, so a dataset is fixed in one pass
rather than one error per run.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TypeVar

import numpy as np
import pandas as pd

from components.data.errors import DatasetError
from components.data.images import IMAGE_EXTENSIONS, ImageInfo, MaskInfo, probe_image, probe_mask
from components.io import atomic_path, sha256_bytes, sha256_file
from components.safe_paths import UnsafePathError, is_inside, plain_folder_name, safe_relative_path

__all__ = [
    "MANIFEST_COLUMNS",
    "DatasetError",
    "build_manifest",
    "manifest_hash",
    "read_manifest",
    "write_manifest",
]

MANIFEST_COLUMNS = ("path", "split", "label", "defect_type", "mask_path", "sha256")
GOOD = "good"
MASK_SUFFIX = "_mask"
MAX_LISTED_PROBLEMS = 20

_LOG = logging.getLogger(__name__)
_Info = TypeVar("_Info", ImageInfo, MaskInfo)
_EXTENSIONS = " ".join(sorted(IMAGE_EXTENSIONS))
# Pillow releases the GIL while decoding, so threads overlap the full decode of every file.
_PROBE_WORKERS = min(8, os.cpu_count() or 1)
_EXPECTED_LAYOUT = f"""Expected layout (MVTec AD):
  <root>/<category>/train/good/<name>                         normal training images
  <root>/<category>/test/good/<name>                          normal test images
  <root>/<category>/test/<defect_type>/<name>                 anomalous test images (1+ folders)
  <root>/<category>/ground_truth/<defect_type>/<stem>_mask.*  optional masks, one per anomalous image
Image extensions: {_EXTENSIONS} (any case); names starting with '.' are ignored."""


def build_manifest(root: str | os.PathLike[str], category: str, *, val_fraction: float, seed: int) -> pd.DataFrame:
    """Validate one category fully (every file decoded) and list it, one row per image.

    Columns are MANIFEST_COLUMNS; `attrs["masks_available"]` says whether pixel metrics are possible.
    """
    _check_settings(category, val_fraction, seed)
    category_dir = _category_dir(Path(root), category)
    problems: list[str] = []
    train = _train_images(category_dir / "train", problems)
    tests = _test_images(category_dir / "test", problems)
    ground_truth = category_dir / "ground_truth"
    masks = _match_masks(ground_truth, tests, problems) if ground_truth.is_dir() else {}
    images = train + [path for paths in tests.values() for path in paths]
    _check_names_and_links(category_dir, images + list(masks.values()), problems)
    infos = _probe_all(images, problems, probe_image)
    mask_infos = _probe_all(list(masks.values()), problems, probe_mask)
    _check_mask_sizes(masks, infos, mask_infos, problems)
    _check_defects_marked(masks, set(tests.get(GOOD, [])), mask_infos, problems)
    _check_channels(category_dir, images, infos, problems)
    if problems:
        raise DatasetError(_report(category_dir, problems))
    rows = _train_rows(train, val_fraction, seed) + _test_rows(tests, masks)
    return _with_attrs(pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).astype({"label": "int64"}))


def manifest_hash(manifest: pd.DataFrame) -> str:
    """The data hash recorded with every artifact: same content and splits, same hash, wherever the
    dataset lives. Mask files are hashed here by content, since pixel metrics depend on them."""
    records = sorted(
        (
            _category_relative(row.path),
            row.split,
            int(row.label),
            row.defect_type,
            row.sha256,
            *_mask_identity(row.mask_path),
        )
        for row in manifest.itertuples(index=False)
    )
    return sha256_bytes(json.dumps(records, separators=(",", ":")).encode("utf-8"))


def write_manifest(manifest: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write the manifest as CSV, atomically so a crash never leaves a half-written manifest."""
    with atomic_path(path) as tmp:
        manifest.loc[:, list(MANIFEST_COLUMNS)].to_csv(tmp, index=False, lineterminator="\n")


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a manifest written by write_manifest, with the same dtypes and attrs as built."""
    dtypes = {column: str for column in MANIFEST_COLUMNS} | {"label": "int64"}
    frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False)
    if tuple(frame.columns) != MANIFEST_COLUMNS:
        raise DatasetError(
            f"manifest {path} has columns {list(frame.columns)}, expected {list(MANIFEST_COLUMNS)}; "
            "rebuild it with build_manifest"
        )
    return _with_attrs(frame)


def _check_settings(category: str, val_fraction: float, seed: int) -> None:
    """Reject bad settings before touching the disk: they are config mistakes, not dataset ones."""
    problems = []
    try:
        plain_folder_name(category, what="category")
    except UnsafePathError as error:
        problems.append(str(error))
    if not _is_real(val_fraction) or not 0 <= val_fraction < 1:
        problems.append(
            f"data.val_fraction must be a number in [0, 1), got {val_fraction!r}; "
            "e.g. 0.1 holds out 10% of train/good for validation, 0 holds out none"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        problems.append(f"seed must be a non-negative integer, got {seed!r}")
    if problems:
        raise DatasetError("invalid dataset settings:\n" + "\n".join(f"  - {p}" for p in problems))


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _category_dir(root: Path, category: str) -> Path:
    """Absolute category folder; without root and category nothing else can be checked, so raise now."""
    root = root.expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"dataset root {root} is not an existing folder; point the dataset root at the folder "
            f"that contains <category>/train/good\n{_EXPECTED_LAYOUT}"
        )
    category_dir = root.resolve() / category
    if not category_dir.is_dir():
        found = ", ".join(p.name for p in _visible(root) if (p / "train").is_dir()) or "none"
        raise DatasetError(
            f"category folder {category_dir} does not exist (categories found in {root}: {found}); "
            f"fix the category name or the dataset root\n{_EXPECTED_LAYOUT}"
        )
    return category_dir


def _visible(folder: Path) -> list[Path]:
    """Entries of `folder` in a locale-independent order, hidden files (.DS_Store, ._x) skipped."""
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def _subfolders(parent: Path, problems: list[str]) -> dict[str, Path]:
    """Folders inside `parent` by name; stray files there are reported, not silently ignored."""
    if not parent.is_dir():
        return {}
    folders = {}
    for entry in _visible(parent):
        if entry.is_dir():
            folders[entry.name] = entry
        else:
            problems.append(f"unexpected file {entry}: {parent} may only contain folders; move or delete it")
    return folders


def _image_files(folder: Path, problems: list[str]) -> list[Path]:
    """Image files inside `folder`; anything else there is reported, as it may be a misplaced image."""
    files = []
    for entry in _visible(folder):
        if entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(entry)
        else:
            kind = "folder" if entry.is_dir() else "file"
            problems.append(
                f"unexpected {kind} {entry}: only images ({_EXTENSIONS}) belong in {folder}; convert it to PNG or move it out"
            )
    return files


def _required_images(folder: Path, purpose: str, problems: list[str]) -> list[Path]:
    if not folder.is_dir():
        problems.append(f"missing folder {folder}: create it and put the {purpose} there")
        return []
    files = _image_files(folder, problems)
    if not files:
        problems.append(f"no images in {folder}: add the {purpose} there ({_EXTENSIONS})")
    return files


def _train_images(train_dir: Path, problems: list[str]) -> list[Path]:
    for name, folder in _subfolders(train_dir, problems).items():
        if name != GOOD:
            problems.append(
                f"unexpected folder {folder}: training images must be normal and live in "
                f"{train_dir / GOOD}; move anomalous images to test/<defect_type>/ or delete the folder"
            )
    return _required_images(train_dir / GOOD, "normal (defect-free) training images", problems)


def _test_images(test_dir: Path, problems: list[str]) -> dict[str, list[Path]]:
    """Test images by folder name, 'good' first. Both classes are required: image AUROC needs them."""
    if not test_dir.is_dir():
        problems.append(
            f"missing folder {test_dir}: create test/good with normal test images and "
            "test/<defect_type>/ folders with anomalous ones"
        )
        return {}
    folders = _subfolders(test_dir, problems)
    normal = _required_images(test_dir / GOOD, "normal test images (image AUROC needs them)", problems)
    tests = {GOOD: normal}
    defects = {name: folder for name, folder in folders.items() if name != GOOD}
    if not defects:
        problems.append(
            f"no defect folders in {test_dir}: add test/<defect_type>/ folders with anomalous "
            "images (image AUROC needs normal and anomalous test images)"
        )
    for name, folder in defects.items():
        purpose = f"anomalous test images of defect type {name!r}"
        tests[name] = _required_images(folder, purpose, problems)
    return tests


def _match_masks(ground_truth: Path, tests: dict[str, list[Path]], problems: list[str]) -> dict[Path, Path]:
    """Pair test images with masks: every anomalous image needs one, every mask needs its image.

    Masks for test/good images are optional (a missing one means all-normal).
    """
    folders = _subfolders(ground_truth, problems)
    masks = {name: _masks_by_stem(folder, problems) for name, folder in folders.items()}
    matched = {}
    for defect, images in tests.items():
        available = masks.get(defect, {})
        for stem, image in _unique_by(images, lambda p: p.stem, problems).items():
            mask = available.pop(stem, None)
            if mask is not None:
                matched[image] = mask
            elif defect != GOOD:
                expected = ground_truth / defect / f"{stem}{MASK_SUFFIX}.png"
                problems.append(
                    f"image {image} has no mask, expected {expected}; add the mask, "
                    f"or delete {ground_truth} if this dataset has no masks"
                )
    test_dir = ground_truth.parent / "test"
    for defect, leftovers in masks.items():
        for stem, mask in leftovers.items():
            problems.append(
                f"mask {mask} has no image, expected {test_dir / defect / stem}.<ext>; add the image or delete the mask"
            )
    return matched


def _masks_by_stem(folder: Path, problems: list[str]) -> dict[str, Path]:
    """Masks keyed by the stem of the image they belong to (`<stem>_mask.<ext>`)."""
    named = []
    for mask in _image_files(folder, problems):
        if mask.stem.endswith(MASK_SUFFIX):
            named.append(mask)
        else:
            problems.append(f"mask {mask} is not named <image_stem>{MASK_SUFFIX}<ext>; rename it after its test image")
    return _unique_by(named, lambda p: p.stem[: -len(MASK_SUFFIX)], problems)


def _unique_by(files: list[Path], key: Callable[[Path], str], problems: list[str]) -> dict[str, Path]:
    """Index by `key`; two files with one key (e.g. 000.png and 000.jpg) make pairing ambiguous."""
    found: dict[str, Path] = {}
    for path in files:
        first = found.setdefault(key(path), path)
        if first != path:
            problems.append(
                f"{first} and {path} share the name stem {key(path)!r}, so image-mask pairing is ambiguous; rename or delete one"
            )
    return found


def _check_names_and_links(category_dir: Path, files: list[Path], problems: list[str]) -> None:
    """Every name must be a safe path, and every file, links followed, must lie in the dataset.

    A symbolic link to a file elsewhere would silently pull it into training and into the data hash
    (which hashes content, not location); links that stay inside the dataset root, or inside a
    category folder that is itself a link, are fine.
    """
    roots = (category_dir.parent, category_dir.resolve())  # the parent is the resolved dataset root
    for path in files:
        try:
            safe_relative_path(path.relative_to(category_dir).as_posix(), what="dataset file")
        except UnsafePathError as error:
            problems.append(str(error))
            continue
        if not is_inside(path, roots):
            problems.append(
                f"{path} is a symbolic link to {path.resolve()}, outside the dataset root {roots[0]}; "
                "copy the file into the dataset or link to a file inside it"
            )


def _probe_all(paths: list[Path], problems: list[str], probe: Callable[[Path], _Info]) -> dict[Path, _Info]:
    """Fully decode every file; unreadable ones become problems instead of stopping the scan."""

    def probe_or_error(path: Path) -> _Info | DatasetError:
        try:
            return probe(path)
        except DatasetError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=_PROBE_WORKERS) as pool:
        results = list(pool.map(probe_or_error, paths))
    infos = {}
    for path, result in zip(paths, results, strict=True):
        if isinstance(result, DatasetError):
            problems.append(str(result))
        else:
            infos[path] = result
    return infos


def _check_mask_sizes(
    masks: dict[Path, Path], infos: dict[Path, ImageInfo], mask_infos: dict[Path, MaskInfo], problems: list[str]
) -> None:
    for image, mask in masks.items():
        if image in infos and mask in mask_infos and _size(infos[image]) != _size(mask_infos[mask]):
            problems.append(
                f"mask {mask} is {_size(mask_infos[mask])} but image {image} is {_size(infos[image])}; "
                "re-export the mask at its image's size"
            )


def _check_defects_marked(
    masks: dict[Path, Path], normal: set[Path], mask_infos: dict[Path, MaskInfo], problems: list[str]
) -> None:
    """An all-black mask on a defect image would count every one of its pixels as normal."""
    for image, mask in masks.items():
        if image not in normal and mask in mask_infos and mask_infos[mask].anomalous_pixels == 0:
            problems.append(
                f"mask {mask} is all black (no anomalous pixel), but {image} is a defect image; "
                "mark the defect in the mask, or move the image to test/good if it has none"
            )


def _size(info: ImageInfo | MaskInfo) -> str:
    return f"{info.width}x{info.height}"


def _check_channels(category_dir: Path, images: list[Path], infos: dict[Path, ImageInfo], problems: list[str]) -> None:
    """One channel count per category: the networks' input width is fixed by the data."""
    by_channels: dict[int, list[Path]] = {}
    for path in images:
        if path in infos:
            by_channels.setdefault(infos[path].channels, []).append(path)
    if len(by_channels) > 1:
        counts = "; ".join(
            f"{channels}-channel: {len(paths)} files (e.g. {paths[0]})" for channels, paths in sorted(by_channels.items())
        )
        problems.append(
            f"mixed channel counts in {category_dir}: {counts}; convert every image to one mode "
            "(all RGB or all grayscale L), e.g. Image.open(f).convert('RGB').save(f)"
        )


def _report(category_dir: Path, problems: list[str]) -> str:
    listed = [f"  - {problem}" for problem in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        listed.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more")
    header = f"dataset category {category_dir} is not usable ({len(problems)} problems); fix them all and rerun:"
    return "\n".join([header, *listed, _EXPECTED_LAYOUT])


def _val_count(n_train: int, val_fraction: float) -> int:
    """Nearest integer to val_fraction * n_train, but at least 1 and leaving at least 1 for training."""
    if val_fraction == 0:
        return 0
    if n_train < 2:
        _LOG.warning("only %d training image(s): the validation split is empty", n_train)
        return 0
    return min(n_train - 1, max(1, math.floor(val_fraction * n_train + 0.5)))


def _train_rows(train: list[Path], val_fraction: float, seed: int) -> list[dict[str, object]]:
    n_val = _val_count(len(train), val_fraction)
    val = set(np.random.default_rng(seed).permutation(len(train))[:n_val].tolist())
    return [_row(path, "val" if i in val else "train", GOOD, None) for i, path in enumerate(train)]


def _test_rows(tests: dict[str, list[Path]], masks: dict[Path, Path]) -> list[dict[str, object]]:
    return [_row(path, "test", defect, masks.get(path)) for defect, paths in tests.items() for path in paths]


def _row(path: Path, split: str, defect_type: str, mask: Path | None) -> dict[str, object]:
    return {
        "path": path.as_posix(),
        "split": split,
        "label": int(defect_type != GOOD),
        "defect_type": defect_type,
        "mask_path": "" if mask is None else mask.as_posix(),
        "sha256": sha256_file(path),
    }


def _with_attrs(frame: pd.DataFrame) -> pd.DataFrame:
    """Derive attrs from the rows, so a built and a re-read manifest agree."""
    frame.attrs["masks_available"] = bool(((frame["label"] == 1) & (frame["mask_path"] != "")).any())
    return frame


def _category_relative(path: str) -> str:
    """`train/good/x.png`: every manifest path is <category>/<folder>/<class>/<file>, so the last
    three parts identify a file independently of where the dataset lives."""
    return "/".join(PurePosixPath(path).parts[-3:])


def _mask_identity(mask_path: str) -> tuple[str, str]:
    return ("", "") if not mask_path else (_category_relative(mask_path), sha256_file(mask_path))
