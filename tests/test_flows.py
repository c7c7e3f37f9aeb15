"""The Prefect flows over real DVC projects, with Prefect's test harness as the server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from tests.conftest import PROJECT_ROOT, tiny_params, write_params
from tests.test_cli import oesdn
from tests.test_pipeline import run

pytestmark = pytest.mark.integration
STAGES = ["generate", "prepare@brick", "train_ae@brick", "train_sdn@brick", "evaluate@brick"]


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Any:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


def git_dvc_project(root: Path) -> Path:
    run("git", "init", "-q", cwd=root)
    run("dvc", "init", "-q", cwd=root)
    run("dvc", "config", "core.analytics", "false", cwd=root)
    return root


def pipeline_copy(root: Path, **orchestration: Any) -> dict[str, Any]:
    """This checkout's pipeline in `root` with tiny params for `brick` and `grass`, MLflow on; returns the params."""
    for name in ("components", "pipelines"):
        shutil.copytree(PROJECT_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    params = tiny_params(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()), ("brick", "grass"))
    params["tracking"]["enabled"] = True
    params["orchestration"].update(orchestration)
    write_params(root / "params.yaml", params)
    return params


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's pipeline on a user's own folder holding a good `brick` and a broken `grass`."""
    root = tmp_path_factory.mktemp("flows")
    params = pipeline_copy(root, retries=2, retry_delay_seconds=0.1)
    oesdn("--no-progress", "generate", cwd=root)
    shutil.copytree(root / "data" / "bundled", root / "factory")
    shutil.rmtree(root / "data")
    Image.new("RGB", (8, 8)).save(root / "factory" / "grass" / "train" / "good" / "000.png")
    (root / "factory" / "grass" / "train" / "good" / "001.png").write_bytes(b"\x89PNG truncated")
    params["data"]["root"] = "factory"
    write_params(root / "params.yaml", params)
    return git_dvc_project(root)


def task_names(flow_run_id: Any) -> list[str]:
    """Task runs of a flow run (its subflows included), in the order they started."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
    )

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )
        ids = [flow_run_id, *(child.id for child in children)]
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    return [r.name for r in sorted(runs, key=lambda r: r.start_time or r.expected_start_time)]


def test_train_category_runs_stages_in_order_then_registers(project: Path) -> None:
    from pipelines.flows import train_category

    state = train_category("brick", str(project), return_state=True)
    result = state.result()
    assert [s["stage"] for s in result["stages"]] == STAGES
    assert all(s["ran"] for s in result["stages"][1:])
    assert result["registration"]["created"] and result["registration"]["version"] == "1"
    assert "first_champion" in result["registration"]["decisions"][0]
    names = task_names(state.state_details.flow_run_id)
    assert names[0].startswith("dvc-status")
    assert names[1:] == STAGES + ["register-brick"]
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # the Prefect UI lists the run by its category
        assert client.read_flow_run(state.state_details.flow_run_id).name == "train-brick"


def test_a_second_run_skips_every_cached_stage_and_registers_nothing(project: Path) -> None:
    from pipelines.flows import train_category

    result = train_category("brick", str(project))
    assert not any(s["ran"] for s in result["stages"])
    assert not result["registration"]["created"] and result["registration"]["version"] == "1"


def test_one_broken_category_fails_alone_and_bad_data_is_not_retried(project: Path) -> None:
    from prefect.client.orchestration import get_client

    from pipelines.flows import train_all

    state = train_all(["grass", "brick"], str(project), return_state=True)
    assert state.is_failed()
    assert "grass" in state.message and "BadInputError" in state.message and "brick" not in state.message.split(":")[0]
    assert (project / "evaluations" / "brick.json").is_file()  # brick still finished
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

        (prepare,) = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=["prepare@grass"])))
    assert prepare.state.is_failed() and prepare.run_count == 1  # retries are set to 2, yet none was made


FLAKY = textwrap.dedent(
    """
    import pathlib, sys
    marker = pathlib.Path("attempts.txt")
    attempts = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(attempts))
    if attempts == 1:
        sys.exit("requests.exceptions.ConnectionError: Connection refused (tracking server at 127.0.0.1:9)")
    pathlib.Path("out.txt").write_text("done")
    """
)


def test_a_transient_fault_is_retried(tmp_path: Path) -> None:
    from prefect import flow

    from pipelines.flows import run_stage

    (tmp_path / "flaky.py").write_text(FLAKY)
    stage = {"cmd": f"{sys.executable} flaky.py", "deps": ["flaky.py"], "outs": ["out.txt"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"flaky": stage}}))
    git_dvc_project(tmp_path)

    @flow
    def one_stage() -> dict[str, Any]:
        return run_stage.with_options(retries=2, retry_delay_seconds=0)(str(tmp_path), "flaky", True, 120.0)

    assert one_stage()["ran"]
    assert (tmp_path / "attempts.txt").read_text() == "2"
    assert (tmp_path / "out.txt").read_text() == "done"


def test_oesdn_serve_without_a_server_says_how_to_start_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    shutil.copy(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    result = subprocess.run(  # noqa: PLW1510 - the exit status is the assertion
        [str(Path(sys.executable).parent / "oesdn"), "serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "PREFECT_API_URL" in result.stderr and "prefect-server.sh" in result.stderr


def test_dvc_advice_lines_are_kept_out_of_the_run_log() -> None:
    from pipelines.dvc_runner import is_noise

    output = """Running stage 'train_ae@brick':
> oesdn train-ae --category brick
brick: ae best validation loss 0.16191 at epoch 12
Updating lock file 'dvc.lock'

To track the changes with git, run:

	git add dvc.lock

To enable auto staging, run:

	dvc config core.autostage true
Use `dvc push` to send your updates to remote storage.
ERROR: failed to reproduce 'train_ae@brick'"""
    kept = [line for line in output.splitlines() if line.strip() and not is_noise(line)]
    assert kept == [
        "Running stage 'train_ae@brick':",
        "> oesdn train-ae --category brick",
        "brick: ae best validation loss 0.16191 at epoch 12",
        "ERROR: failed to reproduce 'train_ae@brick'",
    ]


@pytest.mark.parametrize(
    ("parallel_stages", "budget", "categories", "expected"),
    [
        (0, "2", 3, (2, 1)),
        (1, "2", 3, (1, 2)),
        (0, "16", 3, (3, 5)),
        (0, "2", 1, (1, 2)),
        (4, "2", 2, (2, 1)),
        (0, "1", 3, (1, 1)),
    ],
)
def test_parallel_lanes_split_the_thread_budget(
    parallel_stages: int, budget: str, categories: int, expected: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from components.processes import cpu_threads
    from pipelines.flows import parallel_lanes

    monkeypatch.setenv("OMP_NUM_THREADS", budget)
    assert parallel_lanes(parallel_stages, categories) == expected
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # nested OpenMP levels: the CPUs are the budget
    assert parallel_lanes(1, categories) == (1, cpu_threads())


def test_categories_run_side_by_side_each_stage_on_its_share_of_the_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two categories on a two-thread budget: their stages overlap in time, each stage command runs
    on one thread, both register into one new SQLite store, and each keeps its own pipeline-run tag.
    Nothing changes the process's working folder, which every thread shares: the project is named."""
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    from components.runtime import cpu_capability
    from pipelines.flows import train_all

    pipeline_copy(tmp_path, parallel_stages=0)  # one stage per thread of the budget below
    git_dvc_project(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")

    def no_chdir(path: object) -> None:
        raise AssertionError(f"the flow changed the process's working folder to {path}")

    monkeypatch.setattr(os, "chdir", no_chdir)
    state = train_all(None, str(tmp_path), return_state=True)

    assert state.is_completed(), state.message
    results = state.result()
    assert [s["stage"] for s in results["grass"]["stages"]] == [
        f"{name}@grass" for name in ("prepare", "train_ae", "train_sdn", "evaluate")
    ]
    assert all(s["outcome"] == "ran" for c in ("brick", "grass") for s in results[c]["stages"])
    assert {results[c]["registration"]["version"] for c in ("brick", "grass")} == {"1"}
    names = [f"{stage}@{c}" for stage in ("prepare", "train_ae", "train_sdn", "evaluate") for c in ("brick", "grass")]
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=names)))
    spans = {c: [(r.start_time, r.end_time) for r in runs if r.name.endswith(f"@{c}")] for c in ("brick", "grass")}
    overlapping = [(b, g) for b in spans["brick"] for g in spans["grass"] if b[0] < g[1] and g[0] < b[1]]
    assert overlapping, "no stage of one category ran while a stage of the other did"

    mlflow_client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    stages = ("train_ae", "train_sdn", "evaluate")
    tags = {
        (run.data.tags["oesdn.category"], run.data.tags["oesdn.stage"]): run.data.tags
        for experiment in mlflow_client.search_experiments()
        for run in mlflow_client.search_runs([experiment.experiment_id])
        if run.data.tags.get("oesdn.stage") in stages
    }
    assert {tags[key]["oesdn.cpu_threads"] for key in tags if key[1] in ("train_ae", "train_sdn")} == {"1"}
    assert {tags[key]["oesdn.cpu_capability"] for key in tags} == {cpu_capability()}  # e.g. AVX2, AVX512
    for category in ("brick", "grass"):  # one pipeline-run tag per category's flow run, never the other's
        assert len({tags[(category, stage)]["oesdn.pipeline_run"] for stage in stages}) == 1
    assert tags[("brick", "evaluate")]["oesdn.pipeline_run"] != tags[("grass", "evaluate")]["oesdn.pipeline_run"]
