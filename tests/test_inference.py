"""`oesdn predict` and `oesdn export`, run as a user runs them: the console script in a tiny project.

One tiny project is trained and evaluated once per module (tracking off, ~30 s) and its bundle is
registered in a SQLite MLflow store in the project, so both a local run dir and a `models:/` URI
are tested against the evaluate stage's own scores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from tests.conftest import PROJECT_ROOT, tiny_params, write_params
from tests.test_cli import OESDN


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OESDN, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env, check=False)


def ok(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = run(*args, cwd=cwd, env=env)
    assert result.returncode == 0, f"oesdn {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inference")
    params = tiny_params(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()))
    params["tracking"]["enabled"] = False
    for section in ("ae", "sdn"):
        params[section]["epochs"] = 1  # scores must match evaluate's, whatever the model's quality
    params["score"]["tile_size"] = 16  # the networks run on tiles of their 16 px training crops
    params["score"]["difference_sigmas"] = [0.0, 2.0]  # the multi-scale map, sharp and blurred, must reach predict and ONNX
    write_params(root / "params.yaml", params)
    ok("--no-progress", "generate", cwd=root)
    for stage in ("prepare", "train-ae", "train-sdn", "evaluate"):
        ok("--no-progress", stage, "--category", "brick", cwd=root)
    return root


@pytest.fixture(scope="module")
def registry_env(project: Path) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    ok("--no-progress", "register", "--category", "brick", cwd=project, env=env)
    return env


def evaluate_scores(project: Path) -> pd.Series:
    scores = pd.read_csv(project / "reports" / "brick" / "scores.csv")
    return scores.set_index("image")["oe_sdn"]


def predictions(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "predictions.csv", keep_default_na=False)


def assert_matches_evaluate(project: Path, table: pd.DataFrame, test_dir: Path) -> None:
    expected = evaluate_scores(project)
    images = [Path(p).relative_to(test_dir).as_posix() for p in table["path"]]
    scored = table["pred_score"].astype(float).to_numpy()
    np.testing.assert_allclose(scored, expected.loc[images].to_numpy(), rtol=0, atol=1e-5)
    threshold = float(table["threshold"].iloc[0])
    assert list(table["pred_label"]) == ["anomalous" if s > threshold else "normal" for s in scored]


def test_predict_from_a_local_run_dir_reproduces_evaluate_scores(project: Path, tmp_path: Path) -> None:
    test_dir = project / "data" / "bundled" / "brick" / "test"
    result = ok("predict", "--model", "models/brick", str(test_dir), "--out", str(tmp_path), "--batch-size", "5", cwd=project)
    table = predictions(tmp_path)
    assert len(table) == len(evaluate_scores(project)) and set(table["status"]) == {"ok"}
    assert_matches_evaluate(project, table, test_dir)
    assert set(table["model_name"]) == {"models/brick"} and table["model_version"].iloc[0].startswith("local-")
    anomalous = int((table["pred_label"] == "anomalous").sum())
    assert f"({len(table) - anomalous} normal, {anomalous} anomalous)" in result.stdout and "images/s" in result.stdout
    assert "predict:" in result.stderr  # the progress bar


def test_predict_from_the_champion_uri_reproduces_evaluate_scores(
    project: Path, registry_env: dict[str, str], tmp_path: Path
) -> None:
    test_dir = project / "data" / "bundled" / "brick" / "test"
    pattern = str(test_dir / "*" / "00[01].png")  # a glob, quoted as a user would
    ok(
        "--no-progress",
        "predict",
        "--model",
        "models:/oesdn-brick@champion",
        pattern,
        "--out",
        str(tmp_path),
        cwd=project,
        env=registry_env,
    )
    table = predictions(tmp_path)
    assert len(table) == len(list(test_dir.glob("*/00[01].png"))) > 0
    assert_matches_evaluate(project, table, test_dir)
    assert set(table["model_name"]) == {"oesdn-brick"} and set(table["model_version"].astype(str)) == {"1"}


def test_bad_files_are_reported_and_never_stop_the_batch(project: Path, tmp_path: Path) -> None:
    folder = tmp_path / "line"
    good = sorted((project / "data" / "bundled" / "brick" / "test" / "good").glob("*.png"))[:4]
    folder.mkdir()
    for path in good:
        shutil.copy(path, folder / path.name)
    (folder / "corrupt.png").write_bytes(good[0].read_bytes()[:200])  # truncated PNG
    (folder / "empty.png").write_bytes(b"")
    Image.open(good[1]).convert("L").save(folder / "gray.png")  # 1 channel for an RGB model
    out = tmp_path / "out"

    result = ok("--no-progress", "predict", "--model", "models/brick", str(folder), "--out", str(out), "--maps", cwd=project)

    table = predictions(out).set_index("path")
    bad = {str(folder / name) for name in ("corrupt.png", "empty.png", "gray.png")}
    assert set(table.index[table["status"] == "error"]) == bad
    assert (table.loc[sorted(bad), "pred_score"] == "").all()
    assert "corrupt" in table.loc[str(folder / "corrupt.png"), "error"]
    assert "0 bytes" in table.loc[str(folder / "empty.png"), "error"]
    assert "wrong channel count" in table.loc[str(folder / "gray.png"), "error"]
    for name in bad:
        assert f"skipped {name}: " in result.stderr
    scored = table[table["status"] == "ok"]
    assert len(scored) == len(good) and scored["pred_score"].astype(float).notna().all()
    assert "3 unreadable" in result.stdout

    for path in good:  # --maps: an overlay and a binary mask per scored image, at its own resolution
        overlay, mask = Image.open(out / "maps" / f"{path.stem}_overlay.png"), Image.open(out / "maps" / f"{path.stem}_mask.png")
        original = Image.open(path)
        assert overlay.mode == "RGB" and overlay.size == original.size == mask.size
        assert mask.mode == "L" and set(np.unique(np.asarray(mask))) <= {0, 255}
    assert not list((out / "maps").glob("corrupt*")) and not list((out / "maps").glob("gray*"))


def test_bad_arguments_exit_2_with_a_clear_message(project: Path, tmp_path: Path) -> None:
    missing = run("--no-progress", "predict", "--model", "models/nope", "data", "--out", str(tmp_path), cwd=project)
    assert missing.returncode == 2 and "models/nope" in missing.stderr and "does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    nothing = run(
        "--no-progress", "predict", "--model", "models/brick", str(tmp_path / "empty"), "--out", str(tmp_path), cwd=project
    )
    assert nothing.returncode == 2 and "no images found" in nothing.stderr
    assert not (tmp_path / "predictions.csv").exists()


def test_onnx_export_matches_torch_within_1e_4(project: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from components.models.oesdn.bundle import BundleModel

    out = tmp_path / "export"
    ok("export", "--model", "models/brick", "--format", "onnx", "--out", str(out), cwd=project)
    meta = json.loads((out / "model.json").read_text())
    model = BundleModel.load(project / "models" / "brick", device="cpu")
    assert meta["image_threshold"] == model.info.image_threshold and meta["pixel_threshold"] == model.info.pixel_threshold
    assert meta["preprocessing"]["image_size"] == model.info.preprocessing.image_size
    assert meta["model"]["name"] == "models/brick" and meta["model"]["version"].startswith("local-")
    assert model.info.scoring.tile_size == 16  # the bundle runs its networks on tiles, as evaluate did
    assert model.info.image_calibration is not None  # the default image score: squared and ssim, standardised
    assert meta["image_calibration"]["distances"] == ["squared", "ssim"] == list(model.info.image_calibration.distances)
    # the check keeps the sharp map here (seeded), so the multi-scale map ships, its scales as constants
    assert model.info.scoring.map_sigmas == (0.0, 2.0) and model.info.map_scales is not None
    assert meta["map_scales"] == list(model.info.map_scales) and meta["scoring"]["map_sigmas"] == [0.0, 2.0]

    session = ort.InferenceSession(str(out / meta["onnx_file"]), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["anomaly_map", "pred_score"]
    files = sorted((project / "data" / "bundled" / "brick" / "test").rglob("*.png"))[:7]
    images = np.stack([model.decode(f) for f in files])
    scores, maps = model.score(images)  # the torch path predict and evaluate use
    for batch in (1, 7):
        for start in range(0, len(images), batch):
            part = slice(start, start + batch)
            onnx_maps, onnx_scores = session.run(None, {"images": images[part].astype(np.float32) / np.float32(255)})
            np.testing.assert_allclose(onnx_maps, maps[part], rtol=0, atol=1e-4)
            np.testing.assert_allclose(onnx_scores, scores[part], rtol=1e-4, atol=1e-4)


def test_bench_predict_prints_torch_and_onnx_throughput(project: Path, tmp_path: Path) -> None:
    result = ok(
        "bench",
        "predict",
        "--model",
        "models/brick",
        "--batch-size",
        "4",
        "--repeats",
        "1",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
        cwd=project,
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| torch", "| onnxruntime"))]
    assert [row.split("|")[1:3] for row in rows] == [
        [" torch ", " 1 "],
        [" onnxruntime ", " 1 "],
        [" torch ", " 4 "],
        [" onnxruntime ", " 4 "],
    ]
    assert all(float(row.split("|")[3]) > 0 for row in rows)
    assert (tmp_path / "predict_speed.md").read_text() in result.stdout


def test_s3_access_denied_and_missing_objects_name_the_object(tmp_path: Path) -> None:
    import boto3
    from botocore.stub import Stubber

    from components.inference.sources import SourceError, _expand_s3

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_client_error("head_object", service_error_code="403", http_status_code=403)
        with pytest.raises(SourceError, match=r"access denied to s3://line/cam1/0001\.png"):
            _expand_s3("s3://line/cam1/0001.png", tmp_path, client)
        stub.add_client_error("head_object", service_error_code="404", http_status_code=404)
        stub.add_response(
            "list_objects_v2", {"KeyCount": 0, "IsTruncated": False}, {"Bucket": "line", "Prefix": "cam1/0002.png/"}
        )
        with pytest.raises(SourceError, match=r"s3://line/cam1/0002\.png not found"):
            _expand_s3("s3://line/cam1/0002.png", tmp_path, client)


def test_a_registry_uri_without_version_or_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    from components.inference.models import ModelSourceError, resolve_model

    with pytest.raises(ModelSourceError, match="names no version"):
        resolve_model("models:/oesdn-brick", tmp_path, tmp_path / "download")
    with pytest.raises(ModelSourceError, match=r"cannot load 'models:/oesdn-nothing@champion' from the registry at sqlite"):
        resolve_model("models:/oesdn-nothing@champion", tmp_path, tmp_path / "download")
    assert not (tmp_path / "download").exists()
