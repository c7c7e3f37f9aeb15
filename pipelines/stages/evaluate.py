"""Stage `evaluate`: score the test set with OE-SDN and both AE baselines; write metrics and pictures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from components import assembly
from components.category_evaluation import evaluate_category
from components.data.layout import manifest_hash, read_manifest
from components.data.prepared import PreparedData, load_prepared, read_dataset_record
from components.evaluation import MethodEvaluation
from components.evaluation_page import FIGURES, render_page
from components.io import atomic_path, sha256_file, write_json_atomic, write_text_atomic
from components.models.oesdn.bundle import BundleInfo, Preprocessing, write_bundle_info
from components.models.oesdn.detector import MethodScores, OESDNDetector
from components.models.oesdn.persistence import load_network
from components.reporting import (
    PAGE_NAME,
    outcome,
    save_anomaly_panel,
    save_roc_csv,
    save_roc_plot,
    save_score_histogram,
    select_panel_indices,
    verdict,
)
from components.runtime import seed_everything, select_device
from components.scoring import METHODS
from pipelines.context import StageContext
from pipelines.stage_logging import track_stage


def run(ctx: StageContext) -> None:
    assert ctx.category is not None
    category, params = ctx.category, ctx.params
    seed_everything(params.seed)
    prepared_dir, models_dir, reports_dir = (
        ctx.layout.prepared(category),
        ctx.layout.models(category),
        ctx.layout.reports(category),
    )
    dataset = read_dataset_record(prepared_dir, category)
    data = load_prepared(prepared_dir)
    ae, _ = load_network(models_dir / "ae.pt", "ae")
    sdn, _ = load_network(models_dir / "sdn.pt", "sdn")
    detector = OESDNDetector(ae, sdn, assembly.scoring_settings(params.score, params.loss.ssim_window))
    device = select_device(ctx.device)
    evaluation = evaluate_category(
        category,
        detector,
        data,
        params.score.image_threshold_quantile,
        params.score.pixel_threshold_quantile,
        params.score.threshold_rule,
        params.evaluate.aupro_fpr_limit,
        params.seed,
        params.evaluate.batch_size,
        device,
        ctx.progress,
    )
    results, test = evaluation.results, evaluation.test
    metrics = {name: result.metrics for name, result in results.items()}
    write_json_atomic(reports_dir / "metrics.json", metrics)
    provenance = ctx.provenance(("data", "loss", "ae", "sdn", "score", "evaluate"), dataset["data_hash"])
    stamp = {"Software": "oesdn", "oesdn-provenance": json.dumps(provenance, sort_keys=True)}

    for name, result in results.items():
        save_roc_csv(*result.roc, reports_dir / "roc" / f"{name}.csv")
    for warning in evaluation.warnings:
        print(f"warning: {warning}")
    save_roc_plot(
        {name: r.roc for name, r in results.items()},
        {name: r.metrics["image_auroc"] for name, r in results.items()},
        reports_dir / "roc.png",
        f"{category}: image-level ROC",
        metadata=stamp,
    )
    _write_scores_table(data, test, reports_dir / "scores.csv")
    _write_pictures(ctx, data, test["oe_sdn"], results["oe_sdn"], reports_dir, stamp)
    figures = {title: (reports_dir / name).read_bytes() for title, name in FIGURES.items()}
    write_text_atomic(reports_dir / PAGE_NAME, render_page(category, evaluation, data, params.score, figures))

    write_json_atomic(
        ctx.layout.evaluation(category),
        {
            "category": category,
            "metrics": metrics,
            "thresholds": {
                name: {"image": r.image_threshold, "pixel": r.pixel_threshold} for name, r in results.items()
            },
            "masks_available": data.masks_available,
            "warnings": evaluation.warnings,
            "counts": dataset["counts"],
            "models": {name: sha256_file(models_dir / f"{name}.pt") for name in ("ae", "sdn")},
            "provenance": provenance,
        },
    )
    write_bundle_info(
        models_dir,
        BundleInfo(
            category=category,
            preprocessing=Preprocessing(params.data.image_size, params.data.channels),
            scoring=detector.settings,
            image_threshold=results["oe_sdn"].image_threshold,
            pixel_threshold=results["oe_sdn"].pixel_threshold,
            metrics=metrics,
            masks_available=data.masks_available,
            test_manifest_hash=_test_manifest_hash(prepared_dir),
            data_hash=dataset["data_hash"],
            network_sha256={name: sha256_file(models_dir / f"{name}.pt") for name in ("ae", "sdn")},
            provenance=provenance,
        ),
    )
    _print_metrics(category, metrics, data.masks_available)
    track_stage(
        ctx,
        "evaluate",
        provenance,
        [f"data/prepared/{category}", f"models/{category}/ae.pt", f"models/{category}/sdn.pt"],
        {
            reports_dir / "metrics.json": "",
            ctx.layout.evaluation(category): "",
            models_dir / "bundle.json": "",
            reports_dir / "roc.png": "plots",
            reports_dir / "panel.png": "plots",
            reports_dir / "score_histogram.png": "plots",
            reports_dir / PAGE_NAME: "",
            reports_dir / "scores.csv": "",
            **{reports_dir / "roc" / f"{name}.csv": "roc" for name in METHODS},
        },
        metrics=metrics,
    )


def _test_manifest_hash(prepared_dir: Path) -> str:
    manifest = read_manifest(prepared_dir / "manifest.csv")
    return manifest_hash(manifest[manifest["split"] == "test"])


def _write_scores_table(data: PreparedData, test: dict[str, MethodScores], path: Path) -> None:
    table = pd.DataFrame(
        {"image": data.test_names, "label": data.test_labels, "defect_type": data.test_defect_types}
        | {name: test[name].scores for name in METHODS}
    )
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.8g")


def _write_pictures(
    ctx: StageContext,
    data: PreparedData,
    oe_sdn: MethodScores,
    result: MethodEvaluation,
    reports_dir: Path,
    stamp: dict[str, str],
) -> None:
    labels = data.test_labels
    save_score_histogram(
        oe_sdn.scores[labels == 0],
        oe_sdn.scores[labels == 1],
        result.image_threshold,
        reports_dir / "score_histogram.png",
        f"{ctx.category}: OE-SDN image scores",
        metadata=stamp,
    )
    rows = select_panel_indices(labels, oe_sdn.scores, list(data.test_defect_types), ctx.params.evaluate.panel_rows)
    flagged = oe_sdn.scores[rows] > result.image_threshold
    captions = [f"{data.test_names[i]}  score {oe_sdn.scores[i]:.4f}  pred: {verdict(f)}" for i, f in zip(rows, flagged, strict=True)]
    save_anomaly_panel(
        data.test[rows].astype(np.float32) / 255.0,
        None if data.test_masks is None else data.test_masks[rows],
        oe_sdn.maps[rows],
        oe_sdn.maps[rows] > result.pixel_threshold,
        captions,
        reports_dir / "panel.png",
        result.pixel_threshold,
        [outcome(int(labels[i]), bool(f)) for i, f in zip(rows, flagged, strict=True)],
        metadata=stamp,
    )


def _print_metrics(category: str, metrics: dict[str, dict[str, float | None]], masks_available: bool) -> None:
    def fmt(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    for name, values in metrics.items():
        print(f"{category} {name:8s} " + "  ".join(f"{k}={fmt(v)}" for k, v in values.items()))
    if not masks_available:
        print(f"{category}: pixel AUROC and AUPRO skipped (the dataset has no ground-truth masks)")
