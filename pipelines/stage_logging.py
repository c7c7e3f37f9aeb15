"""What the training and evaluation stages log to MLflow, and under which tags.

A stage first writes its DVC outputs, then logs them, so a tracking fault never loses work: rerun
the stage (or `dvc repro`) once the tracking server is back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.context import StageContext


def track_stage(
    ctx: StageContext,
    stage: str,
    provenance: dict[str, Any],
    dependencies: list[str],
    artifacts: dict[Path, str],
    history: list[dict[str, float]] | None = None,
    metrics: dict[str, dict[str, float | None]] | None = None,
    extra_tags: dict[str, str] | None = None,
) -> str | None:
    """Log one stage execution as a run in the category's experiment; returns its run id."""
    if not ctx.params.tracking.enabled:
        return None
    assert ctx.category is not None
    from components.tracking import runs
    from components.tracking.lineage import dependency_tags, run_tags
    from components.tracking.store import configure

    configure(ctx.layout.root, ctx.params.tracking)
    tags = run_tags(ctx.category, stage, provenance, dependency_tags(ctx.layout.root, dependencies)) | (extra_tags or {})
    experiment = runs.experiment_name(ctx.params.tracking.experiment_prefix, ctx.category)
    with runs.stage_run(experiment, f"{ctx.category}/{stage}", tags, ctx.started_ms) as run_id:
        runs.log_params(provenance["params"])
        if history:
            runs.log_history(history)
        if metrics:
            runs.log_method_metrics(metrics)
        runs.log_artifacts(artifacts)
    return run_id
