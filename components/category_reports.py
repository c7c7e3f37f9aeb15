"""Everything the evaluate stage writes for one category, from its `CategoryEvaluation`.

Kept out of the stage so the stage only composes (read, evaluate, write, log) and so the files a
category's evaluation leaves behind are defined in one place: `metrics.json`, the ROC tables and
plot, `scores.csv`, the score histogram, the anomaly panel and the evaluation page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.category_evaluation import CategoryEvaluation
from components.config import ScoreConfig
from components.data.layout import manifest_hash, read_manifest
from components.data.prepared import PreparedData
from components.evaluation import MethodEvaluation
from components.evaluation_page import FIGURES, render_page
from components.io import atomic_path, sha256_file, write_json_atomic, write_text_atomic
from components.models.oesdn.bundle import BundleInfo, Preprocessing
from components.models.oesdn.detector import MethodScores
from components.reporting import (
    outcome,
    save_anomaly_panel,
    save_roc_csv,
    save_roc_plot,
    save_score_histogram,
    select_panel_indices,
    verdict,
)
from components.scoring import METHODS, ScoringSettings
from components.summary_report import PAGE_NAME

NETWORKS = ("ae", "sdn")


def write_category_reports(
    category: str,
    evaluation: CategoryEvaluation,
    data: PreparedData,
    score: ScoreConfig,
    panel_rows: int,
    reports_dir: Path,
    stamp: dict[str, str],
) -> dict[Path, str]:
    """Write the category's reports; returns each file with the MLflow artifact folder it goes to."""
    results, test = evaluation.results, evaluation.test
    write_json_atomic(reports_dir / "metrics.json", evaluation.metrics)
    for name, result in results.items():
        save_roc_csv(*result.roc, reports_dir / "roc" / f"{name}.csv")
    save_roc_plot(
        {name: r.roc for name, r in results.items()},
        {name: r.metrics["image_auroc"] for name, r in results.items()},
        reports_dir / "roc.png",
        f"{category}: image-level ROC",
        metadata=stamp,
    )
    _write_scores_table(data, test, reports_dir / "scores.csv")
    _write_pictures(category, data, test["oe_sdn"], results["oe_sdn"], panel_rows, reports_dir, stamp)
    figures = {title: (reports_dir / name).read_bytes() for title, name in FIGURES.items()}
    write_text_atomic(reports_dir / PAGE_NAME, render_page(category, evaluation, data, score, figures))
    return {
        reports_dir / "metrics.json": "",
        reports_dir / "roc.png": "plots",
        reports_dir / "panel.png": "plots",
        reports_dir / "score_histogram.png": "plots",
        reports_dir / PAGE_NAME: "",
        reports_dir / "scores.csv": "",
        **{reports_dir / "roc" / f"{name}.csv": "roc" for name in METHODS},
    }


def evaluation_record(
    category: str,
    evaluation: CategoryEvaluation,
    data: PreparedData,
    dataset: dict[str, Any],
    models_dir: Path,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """`evaluations/<category>.json`: what summarize and registration read about this evaluation."""
    return {
        "category": category,
        "metrics": evaluation.metrics,
        "thresholds": {name: {"image": r.image_threshold, "pixel": r.pixel_threshold} for name, r in evaluation.results.items()},
        "masks_available": data.masks_available,
        "warnings": evaluation.warnings,
        "counts": dataset["counts"],
        "models": network_hashes(models_dir),
        "provenance": provenance,
    }


def category_bundle_info(
    category: str,
    evaluation: CategoryEvaluation,
    data: PreparedData,
    preprocessing: Preprocessing,
    scoring: ScoringSettings,
    prepared_dir: Path,
    models_dir: Path,
    data_hash: str,
    provenance: dict[str, Any],
) -> BundleInfo:
    """The bundle's description: OE-SDN's thresholds and settings, tied to the test set and networks."""
    shipped = evaluation.results["oe_sdn"]
    manifest = read_manifest(prepared_dir / "manifest.csv")
    return BundleInfo(
        category=category,
        preprocessing=preprocessing,
        scoring=scoring,
        image_threshold=shipped.image_threshold,
        pixel_threshold=shipped.pixel_threshold,
        metrics=evaluation.metrics,
        masks_available=data.masks_available,
        test_manifest_hash=manifest_hash(manifest[manifest["split"] == "test"]),
        data_hash=data_hash,
        network_sha256=network_hashes(models_dir),
        provenance=provenance,
        image_calibration=evaluation.calibration,
        map_scales=evaluation.map_scales,
    )


def network_hashes(models_dir: Path) -> dict[str, str]:
    return {name: sha256_file(models_dir / f"{name}.pt") for name in NETWORKS}


def metrics_lines(category: str, metrics: dict[str, dict[str, float | None]], masks_available: bool) -> list[str]:
    """The console lines of an evaluation: every figure of every method."""

    def fmt(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    lines = [f"{category} {name:8s} " + "  ".join(f"{k}={fmt(v)}" for k, v in values.items()) for name, values in metrics.items()]
    if not masks_available:
        lines.append(f"{category}: pixel AUROC and AUPRO skipped (the dataset has no ground-truth masks)")
    return lines


def _write_scores_table(data: PreparedData, test: dict[str, MethodScores], path: Path) -> None:
    table = pd.DataFrame(
        {"image": data.test_names, "label": data.test_labels, "defect_type": data.test_defect_types}
        | {name: test[name].scores for name in METHODS}
    )
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.8g")


def _write_pictures(
    category: str,
    data: PreparedData,
    oe_sdn: MethodScores,
    result: MethodEvaluation,
    panel_rows: int,
    reports_dir: Path,
    stamp: dict[str, str],
) -> None:
    labels = data.test_labels
    save_score_histogram(
        oe_sdn.scores[labels == 0],
        oe_sdn.scores[labels == 1],
        result.image_threshold,
        reports_dir / "score_histogram.png",
        f"{category}: OE-SDN image scores",
        metadata=stamp,
    )
    rows = select_panel_indices(labels, oe_sdn.scores, list(data.test_defect_types), panel_rows)
    flagged = oe_sdn.scores[rows] > result.image_threshold
    captions = [
        f"{data.test_names[i]}  score {oe_sdn.scores[i]:.4f}  pred: {verdict(f)}" for i, f in zip(rows, flagged, strict=True)
    ]
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
