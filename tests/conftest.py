"""Shared fixtures: the project's own params file, and tiny settings that run in seconds."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.processes import cpu_threads, share_cpus

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _share_cpus_between_workers() -> None:
    """Under pytest-xdist (`-n 2` in pyproject.toml), each worker's torch, and every `oesdn` or `dvc`
    process it starts, gets its share of the CPUs: two workers with two threads each on two cores run
    torch 10-20x slower than with one each. Runs on import, before any test module loads torch."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        share_cpus(max(1, cpu_threads() // workers))


_share_cpus_between_workers()


@pytest.fixture
def project_params() -> dict[str, Any]:
    return yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())


def tiny_params(base: dict[str, Any], categories: tuple[str, ...] = ("brick",)) -> dict[str, Any]:
    """The project's params shrunk to a few images and epochs: the pipeline's shape, not its quality."""
    params = copy.deepcopy(base)
    params["categories"] = {name: {} for name in categories}
    params["bundled"].update(categories=list(categories), image_size=64, train_count=24, test_good_count=6, test_per_defect=2)
    params["data"]["image_size"] = 32
    for section in ("ae", "sdn"):
        params[section].update(epochs=2, batch_size=8, base_channels=8, min_steps=0, crop_size=16)
    params["tracking"] = {**params.get("tracking", {}), "enabled": False}  # tests that need MLflow turn it on
    # two epochs learn little, so quality gates are off (tests of the gates turn them on)
    params["registry"] = {
        **params.get("registry", {}),
        "gate_min_primary_metric": 0.0,
        "gate_max_baseline_shortfall": 1.0,
        "gate_label_free": False,
    }
    return params


MLFLOW_LOCATION_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
"""`mlflow.set_tracking_uri`/`set_registry_uri` also export these, so subprocesses started later in
the same pytest process would inherit a previous test's store unless they are cleared."""


@pytest.fixture(scope="module", autouse=True)
def _isolated_mlflow_per_module() -> Iterator[None]:
    """Module-scoped project fixtures start from no MLflow location (set up before function fixtures):
    neither the variables nor the in-process URIs an earlier module's `store.configure` set."""
    _forget_mlflow_locations()
    yield
    _forget_mlflow_locations()


def _forget_mlflow_locations() -> None:
    if "mlflow" in sys.modules:  # else nothing in this process has set a location yet
        mlflow = sys.modules["mlflow"]
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    for name in MLFLOW_LOCATION_VARIABLES:  # after: set_registry_uri(None) leaves its variable set
        os.environ.pop(name, None)


@pytest.fixture(autouse=True)
def _isolated_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never write to a tracking server a developer's shell points at, nor to a previous test's."""
    for name in MLFLOW_LOCATION_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def needs(missing: str | None) -> pytest.MarkDecorator:
    """Skip a test whose service or dataset is absent (`missing` says which and how to get it),
    except under CI, where the test runs and fails on the absence instead of hiding it."""
    return pytest.mark.skipif(bool(missing) and not os.environ.get("CI"), reason=missing or "")


def missing_env(variable: str, how: str) -> str | None:
    return None if os.environ.get(variable) else f"{variable} is not set: {how}"


@pytest.fixture
def tiny(project_params: dict[str, Any]) -> dict[str, Any]:
    return tiny_params(project_params)


def write_params(path: Path, params: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def stop_process_group(process: subprocess.Popen[Any], timeout: float = 30) -> None:
    """Stop a server or worker started with `start_new_session=True`, children included:
    SIGTERM to its process group, SIGKILL if it has not exited after `timeout` seconds."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
