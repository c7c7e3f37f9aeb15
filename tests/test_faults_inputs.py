"""Hostile and broken input, through the command a user runs: clear errors, nothing written outside.

Issue 14, findings 1, 5 (masks) and 7: S3 keys that climb out of `oesdn predict --out`, maps of
`x.png`/`x.PNG`/`x.jpg` overwriting each other, a symbolic link pulling a file from outside the
dataset, a category named `-rf`, torch's advice to load a foreign `.pt` unsafely, and masks that are
not binary or mark nothing on a defect image. Each test checks the exit status, the message and
what is on disk afterwards.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from components.config import ConfigError, load_params
from components.safe_paths import UnsafePathError, plain_folder_name, safe_relative_path
from tests.conftest import PROJECT_ROOT, tiny_params, write_params
from tests.test_cli import OESDN

CATEGORY = "brick"


def oesdn(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OESDN, "--no-progress", *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env, check=False
    )


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained and evaluated project (models/brick is a bundle); quality is irrelevant here."""
    root = tmp_path_factory.mktemp("faults")
    params = tiny_params(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()))
    for section in ("ae", "sdn"):
        params[section]["epochs"] = 1
    write_params(root / "params.yaml", params)
    for stage in ("generate", *(f"{s} --category {CATEGORY}" for s in ("prepare", "train-ae", "train-sdn", "evaluate"))):
        result = oesdn(*stage.split(), cwd=root)
        assert result.returncode == 0, f"oesdn {stage} failed:\n{result.stdout}\n{result.stderr}"
    return root


def bundled_images(project: Path, count: int) -> list[Path]:
    return sorted((project / "data" / "bundled" / CATEGORY / "test" / "good").glob("*.png"))[:count]


# --- 1. one safe-path rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("a/../../b.png", "'..' segment"),
        ("./a.png", "'.' or '..'"),
        ("a//b.png", "empty segment"),
        ("a/", "empty segment"),
        ("a\\..\\b.png", "backslash"),
        ("a\x00.png", "control character"),
        ("a\n.png", "control character"),
    ],
)
def test_the_rule_rejects_names_that_could_leave_their_folder(name: str, reason: str) -> None:
    with pytest.raises(UnsafePathError, match=reason) as info:
        safe_relative_path(name, what="S3 object s3://b/k: name")
    assert str(info.value).startswith(f"S3 object s3://b/k: name {name!r} ")
    assert str(safe_relative_path("cam1/x..y/0001.png", what="file name")) == "cam1/x..y/0001.png"


@pytest.fixture
def moto_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "OESDN_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_predict_reports_hostile_s3_keys_as_errors_and_writes_nothing_outside_out(
    project: Path, moto_endpoint: str, tmp_path: Path
) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="line")
    good = bundled_images(project, 2)
    escape = tmp_path / "escape"
    climbing = "cam1/" + "../" * (len(tmp_path.parts) + 4) + f"{escape.relative_to('/').as_posix()}/evil.png"
    hostile = [climbing, "cam1/../sneaky.png", "cam1//double.png", "cam1/back\\slash.png"]
    for key in hostile:
        client.put_object(Bucket="line", Key=key, Body=good[0].read_bytes())
    for index, path in enumerate(good):
        client.upload_file(str(path), "line", f"cam1/ok/{index}.png")
    out = tmp_path / "out"
    before = files_under(tmp_path)
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_endpoint}

    result = oesdn("predict", "--model", "models/brick", "s3://line/cam1/", "--out", str(out), "--maps", cwd=project, env=env)

    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False).set_index("path")
    errors = table[table["status"] == "error"]
    assert set(errors.index) == {f"s3://line/{key}" for key in hostile}
    assert errors["error"].str.startswith("unsafe name: S3 object s3://line/").all()
    assert "'..' segment" in errors.loc[f"s3://line/{climbing}", "error"]
    assert "absolute path" in errors.loc["s3://line/cam1//double.png", "error"]  # its name under cam1/ is /double.png
    assert (table.loc[[f"s3://line/cam1/ok/{i}.png" for i in range(len(good))], "status"] == "ok").all()
    for key in hostile:
        assert f"skipped s3://line/{key}: unsafe name" in result.stderr
    assert not escape.exists()
    assert {p for p in files_under(tmp_path) - before if not p.is_relative_to(out)} == set()
    assert {p.relative_to(out).as_posix() for p in files_under(out)} == {
        "predictions.csv",
        *(f"maps/ok/{i}_{kind}.png" for i in range(len(good)) for kind in ("overlay", "mask")),
    }


@pytest.mark.parametrize(("key", "reason"), [("brick/train//000.png", "empty segment"), ("brick/../escape.png", "'..' segment")])
def test_the_s3_sync_of_prepare_refuses_the_same_names(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, reason: str
) -> None:
    import boto3

    from components.storage import StorageError, sync_prefix

    monkeypatch.setenv("OESDN_S3_ENDPOINT_URL", moto_endpoint)
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="data")
    client.put_object(Bucket="data", Key="brick/train/good/000.png", Body=b"fine")
    client.put_object(Bucket="data", Key=key, Body=b"hostile")

    with pytest.raises(StorageError, match=reason) as info:
        sync_prefix("s3://data/brick", tmp_path / "cache" / "brick", progress=False)

    assert f"S3 object s3://data/{key}: name" in str(info.value)
    assert files_under(tmp_path) == set(), "nothing is downloaded before every name is checked"


# --- 7. names that differ only in case or extension ----------------------------------------------------


def test_predict_maps_of_x_png_x_PNG_and_x_jpg_do_not_overwrite_each_other(project: Path, tmp_path: Path) -> None:
    folder = tmp_path / "line"
    folder.mkdir()
    images = bundled_images(project, 3)
    shutil.copy(images[0], folder / "x.png")
    shutil.copy(images[1], folder / "x.PNG")
    Image.open(images[2]).save(folder / "x.jpg", quality=95)
    out = tmp_path / "out"

    result = oesdn("predict", "--model", "models/brick", str(folder), "--out", str(out), "--maps", cwd=project)

    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert list(table["path"]) == [str(folder / name) for name in ("x.PNG", "x.jpg", "x.png")]  # sorted: the map order
    assert (table["status"] == "ok").all()
    overlays = sorted(p.name for p in (out / "maps").glob("*_overlay.png"))
    assert overlays == ["x-1_overlay.png", "x-2_overlay.png", "x_overlay.png"]
    digests = {(out / "maps" / name).read_bytes() for name in overlays}
    assert len(digests) == 3, "three images, three different overlays"


# --- 7. symbolic links out of the dataset -------------------------------------------------------------


def _rgb(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (value, 255 - value, 7)).save(path)
    return path


def _mask(path: Path, values: np.ndarray | None = None, fmt: str = "PNG") -> Path:
    if values is None:
        values = np.zeros((32, 32), dtype=np.uint8)
        values[4:12, 6:18] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values).save(path, format=fmt)
    return path


@pytest.fixture
def dataset_project(tmp_path: Path) -> Path:
    """A project folder whose params point at a small valid MVTec-layout dataset in `data/mine`."""
    category = tmp_path / "data" / "mine" / CATEGORY
    for i in range(5):
        _rgb(category / "train" / "good" / f"{i:03d}.png", 10 * i)
    for i in range(2):
        _rgb(category / "test" / "good" / f"{i:03d}.png", 100 + i)
        _rgb(category / "test" / "crack" / f"{i:03d}.png", 150 + i)
        _mask(category / "ground_truth" / "crack" / f"{i:03d}_mask.png")
    params = tiny_params(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()))
    params["data"]["root"] = str(tmp_path / "data" / "mine")
    write_params(tmp_path / "params.yaml", params)
    return tmp_path


def prepare(project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """`oesdn prepare` in process (the CLI's main function): exit status and stderr."""
    from pipelines.cli import main

    monkeypatch.chdir(project)
    capsys.readouterr()
    status = main(["--no-progress", "prepare", "--category", CATEGORY])
    return status, capsys.readouterr().err


def test_prepare_rejects_a_symlink_to_a_file_outside_the_dataset(
    dataset_project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = _rgb(dataset_project / "elsewhere" / "secret.png", 42)
    link = dataset_project / "data" / "mine" / CATEGORY / "train" / "good" / "005.png"
    link.symlink_to(outside)

    status, err = prepare(dataset_project, capsys, monkeypatch)

    assert status == 2
    assert f"{link} is a symbolic link to {outside}, outside the dataset root" in err
    assert "Traceback" not in err
    assert not (dataset_project / "data" / "prepared" / CATEGORY / "manifest.csv").exists()


def test_prepare_accepts_a_symlink_that_stays_inside_the_dataset(
    dataset_project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    category = dataset_project / "data" / "mine" / CATEGORY
    (category / "test" / "good" / "002.png").symlink_to(category / "train" / "good" / "000.png")

    status, err = prepare(dataset_project, capsys, monkeypatch)

    assert status == 0, err
    manifest = pd.read_csv(dataset_project / "data" / "prepared" / CATEGORY / "manifest.csv")
    assert manifest["path"].str.endswith("test/good/002.png").sum() == 1


def test_prepare_rejects_a_dataset_file_name_with_a_backslash(
    dataset_project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    odd = _rgb(dataset_project / "data" / "mine" / CATEGORY / "train" / "good" / "cam\\005.png", 60)

    status, err = prepare(dataset_project, capsys, monkeypatch)

    assert status == 2
    assert f"dataset file {'train/good/' + odd.name!r} cannot be used as a local path: it holds a backslash" in err


# --- 5. masks: binary, and marking something on a defect image -----------------------------------------


def _gradient() -> np.ndarray:
    return np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))


def _jpeg_bytes_mask(path: Path) -> Path:
    """A binary-looking mask saved as JPEG (named .png, as export tools do): ringing adds values."""
    values = np.zeros((32, 32), dtype=np.uint8)
    values[8:20, 8:20] = 255
    return _mask(path, values, fmt="JPEG")


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (lambda p: _mask(p, _gradient()), "is not binary: besides 0 it holds 31 values (e.g. 8, 16, 24, 32, 40)"),
        (_jpeg_bytes_mask, "is not binary: besides 0 it holds"),
        (lambda p: _mask(p, np.zeros((32, 32), dtype=np.uint8)), "is all black (no anomalous pixel), but"),
    ],
    ids=["gradient", "jpeg", "all-black"],
)
def test_prepare_rejects_masks_that_would_corrupt_pixel_metrics(
    dataset_project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, write: Any, expected: str
) -> None:
    mask = write(dataset_project / "data" / "mine" / CATEGORY / "ground_truth" / "crack" / "001_mask.png")

    status, err = prepare(dataset_project, capsys, monkeypatch)

    assert status == 2
    assert f"mask {mask} {expected}" in err
    assert "(1 problems)" in err, "only the bad mask is reported"
    assert not (dataset_project / "data" / "prepared" / CATEGORY / "manifest.csv").exists()


def test_a_binary_mask_with_any_single_value_and_a_black_mask_on_a_good_image_pass(
    dataset_project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    category = dataset_project / "data" / "mine" / CATEGORY
    ones = np.zeros((32, 32), dtype=np.uint8)
    ones[1:3, 1:3] = 1  # 0/1 masks are common
    _mask(category / "ground_truth" / "crack" / "000_mask.png", ones)
    _mask(category / "ground_truth" / "good" / "000_mask.png", np.zeros((32, 32), dtype=np.uint8))

    status, err = prepare(dataset_project, capsys, monkeypatch)

    assert status == 0, err


def test_the_bundled_and_devsuite_generators_write_valid_masks(project: Path, tmp_path: Path) -> None:
    from components.benchmarks.devsuite_data import DevSuiteSpec, generate_category
    from components.data.layout import build_manifest

    bundled = build_manifest(project / "data" / "bundled", CATEGORY, val_fraction=0.1, seed=0)  # prepare ran on it too
    assert bundled.attrs["masks_available"]
    spec = DevSuiteSpec(image_size=64, train_count=4, test_good_count=2, test_per_defect=2)
    folder = generate_category(tmp_path, "weave", spec, progress=False)
    devsuite = build_manifest(folder.parent, folder.name, val_fraction=0.25, seed=0)
    assert devsuite.attrs["masks_available"]


# --- 7. a category named like an option ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["-rf", "--help", "brick\n", 123])
def test_params_reject_a_category_that_is_not_a_plain_folder_name(
    project_params: dict[str, Any], tmp_path: Path, name: object
) -> None:
    project_params["categories"] = {name: {}}
    path = write_params(tmp_path / "params.yaml", project_params)

    with pytest.raises(ConfigError) as info:
        load_params(path)

    message = str(info.value)
    assert f"categories: Value error, category {name!r} is not a plain folder name" in message
    with pytest.raises(UnsafePathError, match="not starting with '-'"):
        plain_folder_name(name, what="category")


# --- 7. a .pt file another tool wrote -------------------------------------------------------------------


class Foreign:
    """Any class: a pickle of it is what torch's safe loader refuses."""


def _foreign_pickle(path: Path) -> None:
    import torch

    torch.save({"kind": "ae", "payload": Foreign()}, path)


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (_foreign_pickle, "it holds Python objects, not only tensors, so another tool wrote it"),
        (lambda p: p.write_bytes(pickle.dumps({"kind": "ae"}, protocol=4)), "it holds Python objects"),
        (lambda p: p.write_bytes(b"not a torch file"), "it "),  # torch's reason varies with the bytes
        (lambda p: p.write_bytes(b""), "it is damaged or another tool wrote it (EOFError)"),
    ],
    ids=["foreign-class", "plain-pickle", "garbage", "empty"],
)
def test_evaluate_names_a_foreign_network_file_without_torch_advice(
    project: Path, tmp_path: Path, write: Any, reason: str
) -> None:
    copy = tmp_path / "project"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("mlruns", "reports", "evaluations"))
    network = copy / "models" / CATEGORY / "ae.pt"
    write(network)

    result = oesdn("evaluate", "--category", CATEGORY, cwd=copy)

    assert result.returncode == 2
    assert f"oesdn evaluate: error: {network} is not an oesdn ae network file: {reason}" in result.stderr
    assert "re-create it with `oesdn train-ae`" in result.stderr
    assert "weights_only" not in result.stderr and "Traceback" not in result.stderr
    assert not (copy / "reports" / CATEGORY).exists()


def test_a_torch_file_without_oesdn_keys_is_named(tmp_path: Path) -> None:
    import torch

    from components.models.oesdn.persistence import load_network
    from components.torch_files import TorchFileError

    path = tmp_path / "sdn.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(TorchFileError, match=r"sdn\.pt is not an oesdn network file: it lacks \['kind', 'arch', 'state_dict'\]"):
        load_network(path, "sdn")


def test_a_damaged_training_checkpoint_is_ignored_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from components.training import FitSettings, _load_checkpoint

    checkpoint = tmp_path / "ae.pt"
    checkpoint.write_bytes(b"half a checkpoint")
    settings = FitSettings(
        epochs=1,
        batch_size=1,
        learning_rate=1e-3,
        weight_decay=0.0,
        patience=0,
        seed=0,
        checkpoint_path=checkpoint,
        fingerprint="f",
        param_prefix="ae",
        progress=False,
    )

    assert _load_checkpoint(settings) is None  # a checkpoint only saves time: training starts afresh

    out = capsys.readouterr()
    assert f"ignoring checkpoint: {checkpoint} is not a training checkpoint of oesdn" in out.out + out.err
    assert "training starts afresh" in out.out + out.err and "weights_only" not in out.out + out.err
