"""One MLflow run per stage execution: params, per-epoch losses, metrics and artifacts."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

_MAX_PARAM_LENGTH = 6000


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as dotted keys (`sdn.lambda_oer`), the way the MLflow UI compares them."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = str(value)[:_MAX_PARAM_LENGTH]
    return flat


def experiment_name(prefix: str, category: str) -> str:
    return f"{prefix}{category}"


@contextlib.contextmanager
def stage_run(experiment: str, run_name: str, tags: Mapping[str, str], started_ms: int | None = None) -> Iterator[str]:
    """Start a run in the category's experiment; yields its id.

    A stage logs once its outputs are written (a tracking fault never loses work), so the run is
    created with the stage's own start time: its duration in the UI is the stage's, training included.
    """
    import mlflow

    experiment_id = mlflow.set_experiment(experiment).experiment_id
    run = mlflow.MlflowClient().create_run(
        experiment_id, start_time=started_ms, tags={**tags, "mlflow.runName": run_name}, run_name=run_name
    )
    with mlflow.start_run(run_id=run.info.run_id) as active:
        yield active.info.run_id


def find_stage_run(experiment: str, stage: str, tag: str, value: str) -> str | None:
    """The newest `stage` run of `experiment` tagged `tag` = `value`, or None."""
    import mlflow

    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        f"tags.`oesdn.stage` = '{stage}' and tags.`{tag}` = '{value}'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].info.run_id if runs else None


@contextlib.contextmanager
def reopened_run(run_id: str) -> Iterator[str]:
    """Log more into a finished run, then give it back its status and end time, so its duration in
    the UI stays the stage's own."""
    import mlflow

    client = mlflow.MlflowClient()
    info = client.get_run(run_id).info
    # start_run refuses a run outside the active experiment, which an earlier category's stage
    # set in this process (`oesdn run` registers every category in one process).
    mlflow.set_experiment(experiment_id=info.experiment_id)
    try:
        with mlflow.start_run(run_id=run_id):
            yield run_id
    finally:
        client.set_terminated(run_id, status=info.status, end_time=info.end_time)


def log_params(params: Mapping[str, Any]) -> None:
    import mlflow

    mlflow.log_params(flatten(params))


def log_history(history: list[dict[str, float]]) -> None:
    """Per-epoch losses, with the epoch as the step, so the UI draws training curves."""
    import mlflow

    for record in history:
        step = int(record["epoch"])
        mlflow.log_metrics({k: float(v) for k, v in record.items() if k != "epoch"}, step=step)


def log_method_metrics(metrics: Mapping[str, Mapping[str, float | None]]) -> None:
    """`<method>.<metric>` for OE-SDN and both baselines; metrics a dataset lacks are left out."""
    import mlflow

    mlflow.log_metrics(
        {
            f"{method}.{name}": float(value)
            for method, values in metrics.items()
            for name, value in values.items()
            if value is not None and math.isfinite(value)
        }
    )


def log_artifacts(files: Mapping[Path, str]) -> None:
    """Each existing file under its artifact folder; a missing file is an error, never a silent gap."""
    import mlflow

    for path, folder in files.items():
        if not path.is_file():
            raise FileNotFoundError(f"artifact {path} was not written")
        mlflow.log_artifact(str(path), artifact_path=folder or None)
