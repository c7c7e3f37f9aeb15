"""Register a category's current pipeline outputs as a model version, then apply the promotion policy.

Idempotent: the same AE/SDN pair (same weights, preprocessing, scoring and threshold) is never
registered twice, so re-running after a cached `dvc repro` changes nothing, and neither does a
second `oesdn register` started at the same time (see `components.tracking.registry`).

Before the policy compares a new version with the champion, the quality gates in `registry.gate_*`
judge it alone: a version failing them is registered with the reasons but never made champion.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.context import CODE_ROOT, StageContext

if TYPE_CHECKING:  # torch and mlflow load only when a command needs them
    from components.models.oesdn.bundle import BundleInfo
    from components.tracking.promotion import GateVerdict


@dataclass
class Registration:
    model_name: str
    version: str
    created: bool
    decisions: list = field(default_factory=list)
    model_run_id: str | None = None

    def lines(self) -> list[str]:
        head = (
            f"{self.model_name}: registered version {self.version}"
            if self.created
            else (f"{self.model_name}: this AE/SDN pair is already version {self.version}; nothing registered")
        )
        return [head, *(decision.summary() for decision in self.decisions)]


def category_registry(ctx: StageContext):  # -> CategoryRegistry (mlflow imported lazily)
    from mlflow import MlflowClient

    from components.tracking.registry import CategoryRegistry
    from components.tracking.runs import experiment_name
    from components.tracking.store import configure

    assert ctx.category is not None
    configure(ctx.layout.root, ctx.params.tracking)
    return CategoryRegistry(
        MlflowClient(),
        ctx.category,
        f"{ctx.params.registry.model_prefix}{ctx.category}",
        experiment_name(ctx.params.tracking.experiment_prefix, ctx.category),
    )


def register_category(ctx: StageContext) -> Registration:
    import mlflow

    from components.models.oesdn.bundle import BundleModel
    from components.tracking.registry import registration_lock

    assert ctx.category is not None
    registry = category_registry(ctx)
    bundle_dir = ctx.layout.models(ctx.category)
    model = BundleModel.load(bundle_dir, device="cpu")  # checks the networks against bundle.json
    info = model.info
    with registration_lock(mlflow.get_registry_uri(), registry.model_name):
        existing = registry.version_with_pair(info.pair_id)
        if existing is not None:
            return Registration(registry.model_name, str(existing.version), created=False)
        run_id, model_uri = _log_model(ctx, registry.experiment, model)
        lineage = {"oesdn.model_run": run_id, "oesdn.data_hash": info.data_hash, **_code_tags(info.provenance)}
        version, created = registry.register(model_uri, info, lineage, quality_gate(ctx, info))
        if not created:  # a concurrent registration on a remote server won the compare-and-set
            registry.client.set_tag(run_id, "oesdn.duplicate_of", f"{registry.model_name} v{version.version}")
            return Registration(registry.model_name, str(version.version), False, model_run_id=run_id)
        margin = ctx.params.registry.promotion_margin
        decisions = registry.apply_policy(version, margin, _rescorer(ctx, registry.model_name, info.primary_metric))
    return Registration(registry.model_name, str(version.version), True, decisions, run_id)


def quality_gate(ctx: StageContext, info: BundleInfo) -> GateVerdict:
    """The `registry.gate_*` params applied to the bundle's own metrics (no champion involved)."""
    from components.tracking.promotion import QualityGates, check_gates

    settings = ctx.params.registry
    gates = QualityGates(settings.gate_min_primary_metric, settings.gate_max_baseline_shortfall, settings.gate_label_free)
    return check_gates(info.metrics, info.primary_metric, gates)


def _code_tags(provenance: dict) -> dict[str, str]:
    code = provenance.get("code_version", {})
    return {
        "mlflow.source.git.commit": str(code.get("git_commit", "unknown")),
        "oesdn.source_sha256": str(code.get("source_sha256", "")),
    }


def _log_model(ctx: StageContext, experiment: str, model) -> tuple[str, str]:
    """Log the bundle as a pyfunc; returns (run id, model URI).

    Into the evaluate run that measured this AE/SDN pair when there is one, so the version's
    "Source run" in the MLflow UI is the run with its metrics, plots and evaluation page; else
    (tracking was off when evaluate ran) into a new `register` run.
    """
    import mlflow
    import pandas as pd

    from components.data.layout import read_manifest
    from components.tracking import pyfunc
    from components.tracking.lineage import PAIR_TAG, dependency_tags, run_tags
    from components.tracking.registry import model_metadata, stage_bundle
    from components.tracking.runs import find_stage_run, reopened_run, stage_run

    assert ctx.category is not None
    info = model.info
    manifest = read_manifest(ctx.layout.prepared(ctx.category) / "manifest.csv")
    example_path = manifest.loc[manifest["split"] == "test", "path"].iloc[0]
    example = pd.DataFrame({"image": [pyfunc.encode_array(model.decode(example_path))]})
    evaluate_run = find_stage_run(experiment, "evaluate", PAIR_TAG, info.pair_id)
    if evaluate_run is not None:
        run = reopened_run(evaluate_run)
    else:
        deps = [f"models/{ctx.category}/{name}" for name in ("ae.pt", "sdn.pt", "bundle.json")]
        run = stage_run(
            experiment,
            f"{ctx.category}/register",
            run_tags(ctx.category, "register", info.provenance, dependency_tags(ctx.layout.root, deps)),
        )
    with run as run_id, tempfile.TemporaryDirectory() as tmp:
        bundle = stage_bundle(ctx.layout.models(ctx.category), Path(tmp) / pyfunc.BUNDLE_ARTIFACT)
        logged = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(CODE_ROOT / "components" / "tracking" / "pyfunc_entry.py"),
            artifacts={pyfunc.BUNDLE_ARTIFACT: str(bundle)},
            code_paths=[str(CODE_ROOT / "components")],
            signature=pyfunc.signature(),
            input_example=example,
            pip_requirements=pyfunc.pip_requirements(),
            metadata=model_metadata(info),
        )
        mlflow.log_dict(info.to_json(), "bundle.json")
    return run_id, logged.model_uri


def _rescorer(ctx: StageContext, model_name: str, metric: str):
    """Re-scores an older version on this category's current test manifest (when they differ)."""

    def rescore(version) -> float:
        from components.data.layout import read_manifest
        from components.evaluation import primary_metric_on_manifest
        from components.models.oesdn.bundle import BundleModel
        from components.tracking.registry import download_bundle

        assert ctx.category is not None
        with tempfile.TemporaryDirectory() as tmp:
            model = BundleModel.load(download_bundle(f"models:/{model_name}/{version.version}", Path(tmp)))
            manifest = read_manifest(ctx.layout.prepared(ctx.category) / "manifest.csv")
            return primary_metric_on_manifest(model, manifest, metric, ctx.params.evaluate.batch_size)

    return rescore
