"""The `oesdn` console script, run as a user runs it: a subprocess in a project folder."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.conftest import write_params

OESDN = shutil.which("oesdn", path=str(Path(sys.executable).parent)) or "oesdn"


def oesdn(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([OESDN, *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"oesdn {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def test_help_lists_every_stage_without_importing_heavy_libraries() -> None:
    result = subprocess.run([OESDN, "--help"], capture_output=True, text=True, check=True)
    for command in ("generate", "prepare", "train-ae", "train-sdn", "evaluate", "summarize"):
        assert command in result.stdout
    probe = "import sys, pipelines.cli as c; c.build_parser(); print(sorted(m for m in ('torch','pandas','mlflow','prefect','matplotlib') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_bad_params_exit_2_and_name_the_key(tmp_path: Path, tiny) -> None:
    tiny["ae"]["epochs"] = -3
    write_params(tmp_path / "params.yaml", tiny)
    result = oesdn("generate", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "ae.epochs" in result.stderr


def test_prepare_reports_a_broken_dataset_by_file(tmp_path: Path, tiny) -> None:
    write_params(tmp_path / "params.yaml", tiny)
    oesdn("--no-progress", "generate", cwd=tmp_path)
    broken = tmp_path / "data" / "bundled" / "brick" / "train" / "good" / "000.png"
    broken.write_bytes(b"not a png")
    result = oesdn("--no-progress", "prepare", "--category", "brick", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "000.png" in result.stderr


def test_prepare_before_generate_says_what_to_run(tmp_path: Path, tiny) -> None:
    write_params(tmp_path / "params.yaml", tiny)
    result = oesdn("prepare", "--category", "brick", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "oesdn generate" in result.stderr


def test_unknown_category_is_a_clear_error(tmp_path: Path, tiny) -> None:
    write_params(tmp_path / "params.yaml", tiny)
    result = oesdn("prepare", "--category", "tile", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "unknown category 'tile'" in result.stderr


def test_train_ae_resumes_after_being_killed(tmp_path: Path, tiny) -> None:
    tiny["ae"]["epochs"] = 150  # long enough that it is still running when killed
    write_params(tmp_path / "params.yaml", tiny)
    oesdn("--no-progress", "generate", cwd=tmp_path)
    oesdn("--no-progress", "prepare", "--category", "brick", cwd=tmp_path)
    checkpoint = tmp_path / ".checkpoints" / "brick" / "ae.pt"
    process = subprocess.Popen([OESDN, "--no-progress", "train-ae", "--category", "brick"], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not checkpoint.is_file():
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert checkpoint.is_file(), "no checkpoint was written"
    done = torch.load(checkpoint, weights_only=True)["epoch"] + 1

    result = oesdn("--no-progress", "train-ae", "--category", "brick", cwd=tmp_path)
    assert f"resuming ae training from epoch {done + 1}" in result.stdout + result.stderr
    model = torch.load(tmp_path / "models" / "brick" / "ae.pt", weights_only=True)
    assert model["kind"] == "ae" and not checkpoint.exists()
    assert model["provenance"]["data_hash"] and model["provenance"]["params"]["ae"]["epochs"] == 150


def test_another_mvtec_folder_without_masks_runs_with_no_code_change(tmp_path: Path, tiny) -> None:
    """A user's own folder and category names; no ground_truth, so pixel metrics are skipped."""
    write_params(tmp_path / "params.yaml", tiny)
    oesdn("--no-progress", "generate", cwd=tmp_path)
    own = tmp_path / "factory" / "widget"
    shutil.copytree(tmp_path / "data" / "bundled" / "brick", own)
    shutil.rmtree(own / "ground_truth")
    tiny["data"]["root"] = str(tmp_path / "factory")
    tiny["categories"] = {"widget": {}}
    write_params(tmp_path / "params.yaml", tiny)

    prepared = oesdn("--no-progress", "prepare", "--category", "widget", cwd=tmp_path)
    assert "pixel AUROC and AUPRO will be skipped" in prepared.stdout
    oesdn("--no-progress", "train-ae", "--category", "widget", cwd=tmp_path)
    oesdn("--no-progress", "train-sdn", "--category", "widget", cwd=tmp_path)
    evaluated = oesdn("--no-progress", "evaluate", "--category", "widget", cwd=tmp_path)
    assert "skipped" in evaluated.stdout
    metrics = json.loads((tmp_path / "reports" / "widget" / "metrics.json").read_text())
    assert metrics["oe_sdn"]["pixel_auroc"] is None and metrics["oe_sdn"]["aupro"] is None
    assert 0.0 <= metrics["oe_sdn"]["image_auroc"] <= 1.0
    summary = oesdn("summarize", cwd=tmp_path).stdout
    assert "| widget" in summary and "—" in summary
