"""Prefect flows: bring each category's DVC stages up to date, register the pair, decide promotion.

`train_category` runs one category's stages as tasks, in order; `train_all` runs every category and
survives one category's failure. Its categories run side by side, each in its own subflow, with at
most `orchestration.parallel_stages` stage commands at once, sharing the CPU threads equally: small
networks use two threads at about 1.3 times one thread's speed, so two one-thread stages get more
done. Tasks pass only stage names, paths and small dicts. DVC decides what is stale (a cached stage
is skipped in about a second); Prefect decides what to retry.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.states import Cancelled, Failed
from prefect.tasks import exponential_backoff

from components.config import Params, load_params
from components.processes import cpu_threads
from components.tracking.lineage import PIPELINE_RUN_ENV
from pipelines import dvc_runner
from pipelines.dvc_runner import StageResult, TransientStageError

CATEGORY_STAGES = ("prepare", "train_ae", "train_sdn", "evaluate")
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (TransientStageError, ConnectionError, TimeoutError)


def is_transient(error: BaseException) -> bool:
    """Network faults to MLflow or S3 are worth a retry; bad data and bugs are not."""
    if isinstance(error, TRANSIENT_ERRORS):
        return True
    text = str(error)
    return any(marker in text for marker in dvc_runner.TRANSIENT_MARKERS)


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except Exception as error:  # noqa: BLE001 - the state's own exception, judged below
        return is_transient(error)
    return False


class StageSlots:
    """At most `lanes` stage commands at once in this process, each with `threads` CPU threads (0: as set)."""

    def __init__(self, lanes: int = 0, threads: int = 0) -> None:
        self.threads = threads
        self._slots = threading.BoundedSemaphore(lanes) if lanes > 0 else None

    @contextlib.contextmanager
    def slot(self) -> Iterator[int]:
        """Wait for a free slot; yields the threads its stage command may use."""
        with self._slots if self._slots is not None else contextlib.nullcontext():
            yield self.threads


_registration_lock = threading.Lock()
_stage_slots = StageSlots()
"""Unbounded outside `train_all`: a lone `train_category` runs one stage at a time anyway."""


def parallel_lanes(parallel_stages: int, categories: int) -> tuple[int, int]:
    """(stage commands at once, threads for each) from `orchestration.parallel_stages`.

    The run's thread budget is `OMP_NUM_THREADS` (the `oesdn` command sets it to one per CPU unless
    the user did), split equally; 0 lanes means one per CPU, never more than there are categories.
    """
    setting = os.environ.get("OMP_NUM_THREADS", "")
    budget = int(setting) if setting.isdigit() and int(setting) > 0 else cpu_threads()  # "4,2" (nested) counts as unset
    lanes = max(1, min(parallel_stages or budget, categories))
    return lanes, max(1, budget // lanes)


@contextlib.contextmanager
def _sharing_cpus(lanes: int, threads: int) -> Iterator[None]:
    """Stage commands inside take one of `lanes` slots and run with `threads` each."""
    global _stage_slots
    previous, _stage_slots = _stage_slots, StageSlots(lanes, threads)
    try:
        yield
    finally:
        _stage_slots = previous


@task(name="dvc-stage", cache_policy=NO_CACHE, retry_condition_fn=_retry_transient, task_run_name="{stage}")
def run_stage(project_dir: str, stage: str, must_check: bool, timeout_s: float, pipeline_run: str = "") -> dict[str, Any]:
    """Run one DVC stage unless the flow's `dvc status` showed it, and everything upstream, unchanged.

    `ran` is True when the stage's outputs changed, whether its command ran or DVC restored them
    from its run cache: either way every stage downstream must be brought up to date.
    `pipeline_run` becomes the MLflow tag `oesdn.pipeline_run` of the runs the stage logs.
    """
    if not must_check:
        return {"stage": stage, "ran": False, "outcome": dvc_runner.UP_TO_DATE, "seconds": 0.0}
    logger = get_run_logger()
    with _stage_slots.slot() as threads:
        env = {PIPELINE_RUN_ENV: pipeline_run} if pipeline_run else {}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        result: StageResult = dvc_runner.repro_stage(Path(project_dir), stage, timeout_s, logger.info, env)
    logger.info("%s: %s in %.1f s", stage, result.outcome, result.seconds)
    return {"stage": result.stage, "ran": result.changed, "outcome": result.outcome, "seconds": round(result.seconds, 2)}


@task(name="dvc-status", cache_policy=NO_CACHE, retry_condition_fn=_retry_transient)
def find_stale_stages(project_dir: str) -> list[str]:
    return sorted(dvc_runner.stale_stages(Path(project_dir)))


@task(
    name="register-and-promote", cache_policy=NO_CACHE, retry_condition_fn=_retry_transient, task_run_name="register-{category}"
)
def register_and_promote(project_dir: str, params_path: str, category: str) -> dict[str, Any]:
    """Register the category's bundle (a no-op for a known pair) and apply the promotion policy."""
    from pipelines.context import make_context
    from pipelines.registration import register_category

    root = Path(project_dir).resolve()
    ctx = make_context(root / params_path, category, progress=False, device="cpu", root=root)
    with _registration_lock:  # categories side by side register one at a time: a SQLite store takes one writer
        registration = register_category(ctx)
    for line in registration.lines():
        get_run_logger().info(line)
    return {
        "model_name": registration.model_name,
        "version": registration.version,
        "created": registration.created,
        "decisions": [decision.summary() for decision in registration.decisions],
        "model_run_id": registration.model_run_id,
    }


def _params(project_dir: str, params_path: str) -> Params:
    """The run's settings, once the tracking server they lead to has answered.

    An unreachable server at the start is no transient fault: failing here, outside any task,
    stops the run within the `tracking.http_*` bounds instead of once per stage and retry.
    """
    from components.tracking.store import check_reachable

    params = load_params(Path(project_dir) / params_path)
    check_reachable(Path(project_dir), params.tracking)
    return params


def _with_policy(task_fn: Any, params: Params) -> Any:
    """Retries and backoff from params.yaml; the retry condition still excludes bad input."""
    settings = params.orchestration
    delays = (
        exponential_backoff(backoff_factor=max(settings.retry_delay_seconds, 0.001))(settings.retries) if settings.retries else 0
    )
    return task_fn.with_options(retries=settings.retries, retry_delay_seconds=delays)


def _pipeline_run_tag() -> str:
    """Stage runs of one flow run share the MLflow tag `oesdn.pipeline_run` = the flow run id."""
    context = get_run_context()
    return f"prefect-{context.flow_run.id}"  # type: ignore[union-attr]


def _stale(project_dir: str, params: Params) -> list[str]:
    return find_stale_stages.with_options(retries=params.orchestration.retries)(project_dir)


def _bring_up_to_date(
    project_dir: str, params: Params, stages: list[str], stale_stages: list[str] | None = None, pipeline_run: str = ""
) -> list[dict[str, Any]]:
    """Run `stages` in order; once one has run, DVC re-judges everything downstream of it.

    `stale_stages`: what `dvc status` found, if the caller asked it already; else asked here.
    """
    stale = set(_stale(project_dir, params) if stale_stages is None else stale_stages)
    timeout_s = params.orchestration.stage_timeout_minutes * 60
    stage_task = _with_policy(run_stage, params)
    results, upstream_ran = [], False
    for stage in stages:
        result = stage_task(project_dir, stage, upstream_ran or stage in stale, timeout_s, pipeline_run)
        upstream_ran = upstream_ran or result["ran"]
        results.append(result)
    return results


@flow(name="train-category", log_prints=True, flow_run_name="train-{category}")
def train_category(
    category: str, project_dir: str = ".", params_path: str = "params.yaml", stale_stages: list[str] | None = None
) -> Any:
    """One category: DVC stages in order, then register and decide promotion.

    `stale_stages` is given by `train_all` only: it holds the workspace, has brought `generate` up
    to date and asked `dvc status` once for every category, before any of them started.
    """
    params = _params(project_dir, params_path)
    if category not in params.categories:
        raise ValueError(f"unknown category {category!r}; params.yaml `categories` has {sorted(params.categories)}")
    pipeline_run = _pipeline_run_tag()
    stages = [f"{name}@{category}" for name in CATEGORY_STAGES]
    try:
        if stale_stages is None:
            global_stages = ["generate"] if has_generate(project_dir) else []
            with dvc_runner.workspace_lock(Path(project_dir)):
                results = _bring_up_to_date(project_dir, params, global_stages + stages, pipeline_run=pipeline_run)
        else:
            results = _bring_up_to_date(project_dir, params, stages, stale_stages, pipeline_run)
    except dvc_runner.RunStopped as stopped:  # the user stopped the run: no failure to explain
        return Cancelled(message=str(stopped))
    registration = _with_policy(register_and_promote, params)(project_dir, params_path, category)
    result = {"category": category, "stages": results, "registration": registration}
    _publish_category(project_dir, category, result)
    return result


@flow(name="train-all", log_prints=True)
def train_all(categories: list[str] | None = None, project_dir: str = ".", params_path: str = "params.yaml") -> Any:
    """Every category (or the given ones); one category's failure never stops the others."""
    params = _params(project_dir, params_path)
    chosen = list(categories or params.categories)
    unknown = sorted(set(chosen) - set(params.categories))
    if unknown:
        raise ValueError(f"unknown categories {unknown}; params.yaml `categories` has {sorted(params.categories)}")
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    with dvc_runner.workspace_lock(Path(project_dir)):
        if has_generate(project_dir):  # every category reads its output: before any of them starts
            _bring_up_to_date(project_dir, params, ["generate"])
        stale = _stale(project_dir, params)
        for category, state in _run_categories(chosen, project_dir, params_path, params, stale).items():
            if state.is_completed():
                results[category] = state.result()
            else:
                failures[category] = _failure_reason(state)
        if results and not failures:
            _summarize(project_dir, params)
    _publish_overview(project_dir, results, failures)
    if failures:
        return Failed(message="failed categories: " + "; ".join(f"{c}: {why}" for c, why in failures.items()), data=results)
    return results


@task(name="category", cache_policy=NO_CACHE, task_run_name="{category}")
def _category_beside_others(category: str, project_dir: str, params_path: str, stale_stages: list[str]) -> Any:
    """The subflow's result; a failed or stopped subflow's state becomes this task's, reported once, by its flow."""
    state = train_category(category, project_dir, params_path, stale_stages, return_state=True)
    return state.result() if state.is_completed() else state


def _run_categories(
    chosen: list[str], project_dir: str, params_path: str, params: Params, stale_stages: list[str]
) -> dict[str, Any]:
    """Each category's final state: one after another, or side by side when the CPUs allow."""
    lanes, threads = parallel_lanes(params.orchestration.parallel_stages, len(chosen))
    if lanes == 1:
        return {c: train_category(c, project_dir, params_path, stale_stages, return_state=True) for c in chosen}
    get_run_logger().info(
        "categories side by side: %d stage commands at once, %d CPU thread%s each", lanes, threads, "" if threads == 1 else "s"
    )
    if params.tracking.enabled:
        from components.tracking.store import create_store

        create_store(Path(project_dir))  # a new SQLite store's tables, before two stages race to create them
    with _sharing_cpus(lanes, threads):
        futures = {c: _category_beside_others.submit(c, project_dir, params_path, stale_stages) for c in chosen}
        try:
            for future in futures.values():
                future.wait()
        except BaseException:  # Ctrl-C, SIGTERM: stop the stages now, or the task runner waits for them to end
            dvc_runner.terminate_running()
            raise
    return {c: future.state for c, future in futures.items()}


def _summarize(project_dir: str, params: Params) -> None:
    """The cross-category summary; it needs every category evaluated, so a gap is a warning only."""
    try:
        _bring_up_to_date(project_dir, params, ["summarize"])
    except dvc_runner.BadInputError as error:
        get_run_logger().warning("summary not updated: %s", str(error).splitlines()[-2:])


def _failure_reason(state: Any) -> str:
    try:
        state.result()
    except Exception as error:  # noqa: BLE001 - reported, not handled
        return f"{type(error).__name__}: {error}".splitlines()[0][:300]
    return state.message or state.name


def has_generate(project_dir: str) -> bool:
    import yaml

    stages = yaml.safe_load((Path(project_dir) / "dvc.yaml").read_text()).get("stages", {})
    return "generate" in stages


def _publish_category(project_dir: str, category: str, result: dict[str, Any]) -> None:
    from pipelines.run_report import category_markdown, evaluation_page_link

    create_markdown_artifact(
        category_markdown(Path(project_dir), category, result) + "\n\n" + evaluation_page_link(Path(project_dir), category),
        key=f"oesdn-{category.lower().replace('_', '-')}",
        description=f"OE-SDN {category}: metrics, baselines and the promotion decision",
    )


def _publish_overview(project_dir: str, results: dict[str, dict[str, Any]], failures: dict[str, str]) -> None:
    from pipelines.run_report import overview_markdown

    create_markdown_artifact(
        overview_markdown(Path(project_dir), results, failures), key="oesdn-train-all", description="OE-SDN run: every category"
    )
