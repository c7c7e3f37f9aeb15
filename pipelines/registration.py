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

from pipelines.context import StageContext

if TYPE_CHECKING:  # torch and mlflow load only when a command needs them
    from components.models.oesdn.bundle import BundleInfo, BundleModel
    from components.tracking.promotion import GateVerdict
    from components.tracking.registry import CategoryRegistry


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


def category_registry(ctx: StageContext) -> CategoryRegistry:
    from components.tracking.registry import CategoryRegistry
    from components.tracking.runs import experiment_name
    from components.tracking.store import configure

    assert ctx.category is not None
    configure(ctx.layout.root, ctx.params.tracking)
    return CategoryRegistry.connect(
        ctx.category,
        f"{ctx.params.registry.model_prefix}{ctx.category}",
        experiment_name(ctx.params.tracking.experiment_prefix, ctx.category),
    )


def register_category(ctx: StageContext) -> Registration:
    from components.models.oesdn.bundle import BundleModel
    from components.tracking.lineage import version_lineage_tags

    assert ctx.category is not None
    registry = category_registry(ctx)
    bundle_dir = ctx.layout.models(ctx.category)
    model = BundleModel.load(bundle_dir, device="cpu")  # checks the networks against bundle.json
    info = model.info
    with registry.registration_lock():
        existing = registry.version_with_pair(info.pair_id)
        if existing is not None:
            return Registration(registry.model_name, str(existing.version), created=False)
        run_id, model_uri = _log_model(ctx, registry.experiment, model)
        version, created = registry.register(model_uri, info, version_lineage_tags(run_id, info), quality_gate(ctx, info))
        if not created:  # a concurrent registration on a remote server won the compare-and-set
            registry.mark_duplicate_run(run_id, version)
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


def _log_model(ctx: StageContext, experiment: str, model: BundleModel) -> tuple[str, str]:
    """Log the bundle as a pyfunc (see `components.tracking.model_logging`); returns (run id, model URI)."""
    from components.data.layout import read_manifest
    from components.tracking.lineage import dependency_tags, run_tags
    from components.tracking.model_logging import log_pair_model

    assert ctx.category is not None
    manifest = read_manifest(ctx.layout.prepared(ctx.category) / "manifest.csv")
    example = manifest.loc[manifest["split"] == "test", "path"].iloc[0]
    category = ctx.category
    deps = [f"models/{category}/{name}" for name in ("ae.pt", "sdn.pt", "bundle.json")]

    def register_run_tags() -> dict[str, str]:
        return run_tags(category, "register", model.info.provenance, dependency_tags(ctx.layout.root, deps))

    bundle_dir = ctx.layout.models(category)
    return log_pair_model(experiment, model, bundle_dir, Path(example), f"{category}/register", register_run_tags)


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
