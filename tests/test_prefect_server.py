"""`oesdn serve` against a real `prefect server` on 127.0.0.1 (started by .ci/run): cron deployment,
a triggered run that completes, and everything stopped by PID."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT, stop_process_group, tiny_params, write_params
from tests.test_flows import git_dvc_project

SERVER = os.environ.get("OESDN_TEST_PREFECT_API_URL")
pytestmark = pytest.mark.integration


def test_ci_starts_the_prefect_server() -> None:
    if os.environ.get("CI"):
        assert SERVER, ".ci/run must start a Prefect server and export OESDN_TEST_PREFECT_API_URL"


@pytest.mark.skipif(not SERVER, reason="needs a real `prefect server` (.ci/run starts one; see scripts/prefect-server.sh)")
def test_served_cron_deployment_runs_to_completion(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    for name in ("components", "pipelines"):
        shutil.copytree(PROJECT_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    params = tiny_params(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()))
    params["orchestration"]["schedule"] = {"cron": "17 3 * * 1", "timezone": "Europe/Berlin"}
    write_params(tmp_path / "params.yaml", params)
    git_dvc_project(tmp_path)

    serve = subprocess.Popen(
        [str(Path(sys.executable).parent / "oesdn"), "serve"],
        cwd=tmp_path,
        env={**os.environ, "PREFECT_API_URL": SERVER},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        with temporary_settings({PREFECT_API_URL: SERVER}), get_client(sync_client=True) as client:
            deployment = None
            last_error: Exception | None = None
            deadline = time.monotonic() + 180
            while deployment is None and time.monotonic() < deadline:
                assert serve.poll() is None, serve.stderr.read().decode() if serve.stderr else "oesdn serve exited"
                try:
                    found = client.read_deployment_by_name("train-all/oesdn-scheduled")
                    deployment = found if found.parameters.get("project_dir") == str(tmp_path) else None
                except Exception as error:  # noqa: BLE001 - not registered yet: keep polling, report the last error
                    last_error = error
                time.sleep(0 if deployment else 1)
            assert deployment is not None, f"the deployment never appeared (last error: {last_error!r})"
            (schedule,) = deployment.schedules
            assert schedule.schedule.cron == "17 3 * * 1" and schedule.schedule.timezone == "Europe/Berlin"

        with temporary_settings({PREFECT_API_URL: SERVER}):
            flow_run = run_deployment("train-all/oesdn-scheduled", timeout=900, poll_interval=2)
        assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
    finally:
        stop_process_group(serve)
    stderr = serve.stderr.read().decode() if serve.stderr else ""
    assert "the nightly schedule is PAUSED" in stderr, f"stopping serve must say the schedule paused:\n{stderr[-2000:]}"
    assert (tmp_path / "evaluations" / "brick.json").is_file()
    assert (tmp_path / "reports" / "summary.md").is_file()
