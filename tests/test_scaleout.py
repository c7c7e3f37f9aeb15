"""Scale-out on one machine: two `prefect worker start` processes on a `process` work pool train two
categories at the same time, each in its own fresh clone, against the real local stack (S3 DVC
remote, shared MLflow, Prefect server). `.ci/run` starts the stack and sets OESDN_TEST_STACK_ENV and
OESDN_TEST_PREFECT_API_URL; without them this test skips (and fails in CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing_env, needs, stop_process_group, tiny_params
from tests.test_storage import BIN, STACK_MISSING, new_project, sh, stack_env

pytestmark = pytest.mark.integration
CATEGORIES = ("brick", "grass")


PREFECT_MISSING = missing_env(
    "OESDN_TEST_PREFECT_API_URL", "start the stack (scripts/stack.sh start) and point it at its Prefect API"
)


def prefect_api() -> str:
    """Reached without a Prefect API only under CI (see `needs`), where that is a failure."""
    if PREFECT_MISSING:
        pytest.fail(f"CI must run the scale-out test: {PREFECT_MISSING}")
    return os.environ["OESDN_TEST_PREFECT_API_URL"]


@contextmanager
def worker(name: str, pool: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`prefect worker start` in its own process group, stopped by its PID however the test ends."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--limit", "1", "--name", name, "--type", "process"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop_process_group(process, timeout=20)


def wait_for_workers(client: Any, pool: str, names: set[str], processes: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for process, log in zip(processes, logs):
            assert process.poll() is None, f"a worker exited:\n{log.read_text()[-3000:]}"
        if names <= {w.name for w in client.read_workers_for_work_pool(pool)}:
            return
        time.sleep(1)
    raise AssertionError(f"workers {sorted(names)} never polled pool {pool!r}")


def run_on_workers(deployment: str, source: Path) -> tuple[float, dict[str, Any]]:
    from pipelines.scaleout import train_all_on_workers

    started = time.monotonic()
    state = train_all_on_workers(
        list(CATEGORIES), str(source), deployment, lock_branch_prefix="oesdn-runs", timeout_s=600, return_state=True
    )
    seconds = time.monotonic() - started
    assert state.is_completed(), state.message
    return seconds, state.result()


@needs(STACK_MISSING or PREFECT_MISSING)
def test_two_workers_train_two_categories_concurrently_in_separate_workspaces(
    tmp_path: Path, project_params: dict[str, Any]
) -> None:
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    stack, api = stack_env(), prefect_api()
    run_id = uuid.uuid4().hex[:8]
    pool, name, prefix = f"oesdn-test-{run_id}", f"oesdn-worker-{run_id}", f"oesdn-scale-{run_id}-"
    workspaces = tmp_path / "workspaces"
    env = {
        **os.environ,
        **stack,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "OESDN_WORKSPACES": str(workspaces),
        "OESDN_DATA_CACHE": str(tmp_path / "cache"),
    }

    # The project in git, with the stack's S3 bucket as its committed DVC remote; MLflow only for registration.
    params = tiny_params(project_params, CATEGORIES)
    params["bundled"].update(train_count=16, test_good_count=4, test_per_defect=1)
    for section in ("ae", "sdn"):
        params[section]["epochs"] = 1
    params["registry"]["model_prefix"] = prefix
    source = new_project(tmp_path / "source", params, env, f"{stack['OESDN_DVC_REMOTE']}/{run_id}")
    sh("git", "add", ".", cwd=source, env=env)
    sh("git", "commit", "-q", "-m", "project", cwd=source, env=env)

    deployed = sh(BIN / "oesdn", "deploy", "--pool", pool, "--source", source, "--name", name, cwd=source, env=env)
    assert f"work pool {pool!r}" in deployed.stdout
    deployment = f"train-category-in-workspace/{name}"

    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    with (
        temporary_settings({PREFECT_API_URL: api}),
        get_client(sync_client=True) as client,
        worker("w1", pool, env, logs[0]) as first,
        worker("w2", pool, env, logs[1]) as second,
    ):
        wait_for_workers(client, pool, {"w1", "w2"}, [first, second], logs)
        concurrent_s, results = run_on_workers(deployment, source)
        runs = {c: client.read_flow_run(uuid.UUID(results[c]["flow_run_id"])) for c in CATEGORIES}

        worker_logs = [log.read_text() for log in logs]
        if os.environ.get("OESDN_SCALEOUT_COMPARE"):  # the timing comparison doubles the test's time: opt-in
            stop_process_group(second, timeout=20)  # the same two runs, one after the other: one worker with one slot
            sequential_s, _ = run_on_workers(deployment, source)
            print(f"\nscale-out wall time: 2 workers concurrently {concurrent_s:.1f} s; one after the other {sequential_s:.1f} s")

    # Both ran at once, each picked up by a different worker process, each in its own fresh workspace.
    brick, grass = runs["brick"], runs["grass"]
    assert all(r.start_time and r.end_time for r in (brick, grass))
    assert brick.start_time < grass.end_time and grass.start_time < brick.end_time, "the two runs did not overlap"
    ran_by = [
        [r.name for r in (brick, grass) if f"Flow run '{r.name}' submitted to infrastructure" in text] for text in worker_logs
    ]
    assert sorted(ran_by) == sorted([[brick.name], [grass.name]]), f"each worker should have run one category: {ran_by}"
    spaces = {c: workspaces / f"{c}-{runs[c].id}" for c in CATEGORIES}
    assert spaces["brick"] != spaces["grass"]
    for category, space in spaces.items():
        assert (space / ".git").is_dir() and (space / "evaluations" / f"{category}.json").is_file()
        other = next(c for c in CATEGORIES if c != category)
        assert not (space / "evaluations" / f"{other}.json").exists()  # nothing of the other category's run

    # Outputs were pushed: a third clone with each run's dvc.lock (pushed as a branch) pulls them back.
    third = tmp_path / "third"
    sh("git", "clone", "-q", source, third, cwd=tmp_path, env=env)
    for category in CATEGORIES:
        sh("git", "fetch", "-q", "origin", f"oesdn-runs/{category}-{runs[category].id}", cwd=third, env=env)
        sh("git", "checkout", "FETCH_HEAD", "--", "dvc.lock", cwd=third, env=env)
        sh("dvc", "pull", f"evaluate@{category}", cwd=third, env=env)
        restored = json.loads((third / "evaluations" / f"{category}.json").read_text())
        assert restored == json.loads((spaces[category] / "evaluations" / f"{category}.json").read_text())

    # Both pairs are registered in the stack's shared MLflow.
    mlflow = MlflowClient(tracking_uri=stack["MLFLOW_TRACKING_URI"], registry_uri=stack["MLFLOW_TRACKING_URI"])
    for category in CATEGORIES:
        assert mlflow.search_model_versions(f"name = '{prefix}{category}'"), f"{prefix}{category} not registered"


# --- clear errors, no stack needed ----------------------------------------------------------------


def test_a_source_that_is_not_git_and_a_project_without_a_dvc_remote_fail_clearly(tmp_path: Path) -> None:
    from pipelines.scaleout import ScaleOutError, clone_workspace, default_remote, deploy, is_remote_git

    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(ScaleOutError, match="is not a git repository the worker can read"):
        clone_workspace(str(plain), tmp_path / "ws-a")
    with pytest.raises(ScaleOutError, match="neither a git URL nor a git checkout"):
        deploy(str(plain))
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x.invalid",
    }
    repo = tmp_path / "repo"
    repo.mkdir()
    sh("git", "init", "-q", cwd=repo, env=env)
    sh(BIN / "dvc", "init", "-q", cwd=repo, env=env)
    sh("git", "commit", "-q", "-m", "dvc", cwd=repo, env=env)
    workspace = clone_workspace(str(repo), tmp_path / "ws-b")
    with pytest.raises(ScaleOutError, match="configures no default DVC remote"):
        default_remote(workspace)
    with pytest.raises(ScaleOutError, match="already exists"):
        clone_workspace(str(repo), workspace)
    assert is_remote_git("https://git.example.com/team/oesdn.git") and is_remote_git("git@host:team/oesdn.git")
    assert not is_remote_git(str(repo))
