"""Scale-out over Prefect workers: one category per flow run, each in its own fresh workspace.

A work pool of type `process` hands flow runs of the deployment
`train-category-in-workspace/oesdn-worker` to `prefect worker start --pool oesdn` processes on any
number of machines. Each run clones the project into a new folder (so two runs never share a DVC
workspace, its cache or its lock), pulls what the DVC remote already holds for that category, runs
the ordinary `train_category` flow there, pushes the outputs back to the remote and registers the
pair in the shared MLflow server. `train_all_on_workers` fans the categories out and waits for all.

The DVC remote comes from the project's committed `.dvc/config`; its endpoint and keys come from
the worker's environment only (AWS_*), never from parameters, so they never reach Prefect's API.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from prefect import flow, get_run_logger
from prefect.context import get_run_context
from prefect.states import Failed

from pipelines import dvc_runner
from pipelines.flows import CATEGORY_STAGES, has_generate, train_category

DEPLOYMENT_NAME = "oesdn-worker"
FLOW_NAME = "train-category-in-workspace"
DEFAULT_DEPLOYMENT = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"
ENTRYPOINT = "pipelines/scaleout.py:train_category_in_workspace"
TRANSFER_TIMEOUT_S = 1800.0


class ScaleOutError(RuntimeError):
    """The workspace cannot be set up: bad source, or no DVC remote to share outputs through."""


def workspaces_root() -> Path:
    """Where workspaces live: OESDN_WORKSPACES, else ~/.cache/oesdn/workspaces (local disk, not shared)."""
    return Path(os.environ.get("OESDN_WORKSPACES") or Path.home() / ".cache" / "oesdn" / "workspaces").expanduser()


def _git(*args: str, cwd: Path | None = None, timeout: float = 600) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise ScaleOutError(f"git {' '.join(args)} failed: {(result.stderr or result.stdout).strip()[-500:]}")
    return result.stdout


def clone_workspace(source: str, workspace: Path) -> Path:
    """A fresh `git clone` of the project: its own files, DVC cache and stage lock."""
    if workspace.exists():
        raise ScaleOutError(f"workspace {workspace} already exists; every run needs a fresh one")
    probe = subprocess.run(["git", "ls-remote", "--heads", source], capture_output=True, text=True, timeout=120, check=False)
    if probe.returncode != 0:
        raise ScaleOutError(f"source {source!r} is not a git repository the worker can read: {probe.stderr.strip()[-300:]}")
    workspace.parent.mkdir(parents=True, exist_ok=True)
    _git("clone", "--quiet", source, str(workspace))
    return workspace


def default_remote(workspace: Path) -> str:
    """The DVC remote the project commits in `.dvc/config`; outputs can only be shared through one."""
    found = subprocess.run(
        [dvc_runner.dvc_executable(), "remote", "default", "--project"],
        cwd=workspace,
        capture_output=True,
        text=True,
        env=dvc_runner.dvc_env(),
        timeout=120,
        check=False,
    )
    remote = found.stdout.strip() if found.returncode == 0 else ""
    if not remote:
        raise ScaleOutError(
            "the project configures no default DVC remote, so a worker's outputs could not be shared: run "
            "`dvc remote add -d shared s3://bucket/prefix` and commit .dvc/config (keys stay in the environment)"
        )
    return remote


def category_targets(workspace: Path, category: str) -> list[str]:
    """The stages one category's run depends on and produces: `generate` (if any) and its own chain."""
    return (["generate"] if has_generate(str(workspace)) else []) + [f"{stage}@{category}" for stage in CATEGORY_STAGES]


def _flow_run_id() -> str:
    context = get_run_context()
    return str(context.flow_run.id)  # type: ignore[union-attr]


def _push_lock(workspace: Path, category: str, branch: str) -> str:
    """Commit the workspace's dvc.lock and push it to `branch` of the source, so a checkout can `dvc pull` it."""
    _git("add", "dvc.lock", cwd=workspace)
    identity = [] if _has_identity(workspace) else ["-c", "user.name=oesdn worker", "-c", "user.email=oesdn-worker@localhost"]
    _git(
        *identity,
        "commit",
        "--quiet",
        "--allow-empty",
        "-m",
        f"oesdn: {category} trained by a Prefect worker",
        "--",
        "dvc.lock",
        cwd=workspace,
    )
    _git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=workspace)
    return branch


def _has_identity(workspace: Path) -> bool:
    found = subprocess.run(["git", "config", "user.email"], cwd=workspace, capture_output=True, text=True, check=False)
    return bool(found.stdout.strip()) or bool(os.environ.get("GIT_COMMITTER_EMAIL"))


@flow(name=FLOW_NAME, log_prints=True)
def train_category_in_workspace(
    category: str, source: str, params_path: str = "params.yaml", lock_branch_prefix: str | None = None
) -> dict[str, Any]:
    """One category in a fresh clone of `source`: pull, run its stages, push, register.

    `lock_branch_prefix` (e.g. "oesdn-runs") also pushes the workspace's dvc.lock to the source as
    branch `<prefix>/<category>-<flow run id>`; without it the outputs are in the DVC remote and the
    lock stays in the workspace.
    """
    logger = get_run_logger()
    run_id = _flow_run_id()
    workspace = clone_workspace(source, workspaces_root() / f"{category}-{run_id}")
    logger.info("workspace %s (clone of %s)", workspace, source)
    remote = default_remote(workspace)
    targets = category_targets(workspace, category)
    pulled = dvc_runner.run_dvc(workspace, ["pull", "--allow-missing", *targets], "dvc pull", TRANSFER_TIMEOUT_S)
    logger.info("dvc pull from remote %r: %s", remote, (pulled.strip().splitlines() or ["nothing to pull"])[-1])
    result = train_category(category, str(workspace), params_path)
    pushed = dvc_runner.run_dvc(workspace, ["push", *targets], "dvc push", TRANSFER_TIMEOUT_S)
    logger.info("dvc push to remote %r: %s", remote, (pushed.strip().splitlines() or ["nothing to push"])[-1])
    branch = _push_lock(workspace, category, f"{lock_branch_prefix}/{category}-{run_id}") if lock_branch_prefix else None
    return {
        "category": category,
        "workspace": str(workspace),
        "flow_run_id": run_id,
        "remote": remote,
        "stages_ran": [stage["stage"] for stage in result["stages"] if stage["ran"]],
        "registration": result["registration"],
        "lock_branch": branch,
    }


@flow(name="train-all-on-workers", log_prints=True)
def train_all_on_workers(
    categories: list[str] | None = None,
    source: str = ".",
    deployment: str = DEFAULT_DEPLOYMENT,
    params_path: str = "params.yaml",
    lock_branch_prefix: str | None = None,
    timeout_s: float = 6 * 3600,
) -> Any:
    """Start one worker flow run per category at once, wait for all; fail naming every failed category."""
    from prefect.deployments import run_deployment
    from prefect.flow_runs import wait_for_flow_run

    from components.config import load_params

    if categories:
        chosen = list(categories)
    elif (Path(source) / params_path).is_file():
        chosen = list(load_params(Path(source) / params_path).categories)
    else:
        raise ValueError(f"name the categories: {source!r} is not a local folder whose {params_path} lists them")
    logger = get_run_logger()
    started = {}
    for category in chosen:
        parameters = {
            "category": category,
            "source": source,
            "params_path": params_path,
            "lock_branch_prefix": lock_branch_prefix,
        }
        started[category] = run_deployment(deployment, parameters=parameters, timeout=0, tags=["oesdn", f"category:{category}"])
        logger.info("%s: flow run %s queued on %s", category, started[category].id, deployment)
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for category, flow_run in started.items():
        finished = _wait(wait_for_flow_run, flow_run.id, timeout_s)
        state = finished.state
        if state is not None and state.is_completed():
            # The worker's return value stays on its machine (no shared result storage): report where to look.
            results[category] = {"flow_run_id": str(flow_run.id), "state": state.name}
        else:
            failures[category] = f"{state.name if state else 'no state'}: {(state.message or '') if state else ''}".strip(": ")[
                :300
            ]
    if failures:
        return Failed(message="failed categories: " + "; ".join(f"{c} ({why})" for c, why in failures.items()), data=results)
    return results


def _wait(wait_for_flow_run: Any, flow_run_id: Any, timeout_s: float) -> Any:
    """`wait_for_flow_run` is async; a sync flow runs it to completion on Prefect's loop."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    return run_coro_as_sync(wait_for_flow_run(flow_run_id, timeout=int(timeout_s)))


# --- deploying -------------------------------------------------------------------------------------


def is_remote_git(source: str) -> bool:
    """A URL a worker clones (https, ssh, git, scp-like user@host:path) rather than a folder it reads."""
    parsed = urlparse(source)
    return parsed.scheme in {"http", "https", "ssh", "git"} or (
        "@" in source and ":" in source.split("@", 1)[1] and not Path(source).exists()
    )


def ensure_work_pool(pool: str) -> bool:
    """Create the `process` work pool unless it exists; True when created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(
                WorkPoolCreate(name=pool, type="process", base_job_template=ProcessWorker.get_default_base_job_template())
            )
        except ObjectAlreadyExists:
            return False
    return True


def deploy(source: str, pool: str = "oesdn", name: str = DEPLOYMENT_NAME, lock_branch_prefix: str | None = None) -> str:
    """Deploy `train_category_in_workspace` from `source` to `pool`; returns the deployment id.

    The workers load the flow's code from `source` (a git URL they clone, or a folder they can read)
    and each run clones `source` again into its own workspace.
    """
    from prefect.runner.storage import GitRepository

    if is_remote_git(source):
        code: Any = GitRepository(url=source)
    else:
        folder = Path(source).expanduser().resolve()
        if not (folder / ".git").exists():
            raise ScaleOutError(f"source {source!r} is neither a git URL nor a git checkout (no .git in {folder})")
        source, code = str(folder), str(folder)
    ensure_work_pool(pool)
    remote_flow = train_category_in_workspace.from_source(code, entrypoint=ENTRYPOINT)
    deployment_id = remote_flow.deploy(
        name=name,
        work_pool_name=pool,
        parameters={"source": source, "lock_branch_prefix": lock_branch_prefix},
        tags=["oesdn"],
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,
    )
    return str(deployment_id)
