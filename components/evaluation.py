"""Metrics of one scoring method on one test set, with its threshold taken from normal images only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.data.images import load_mask

from components.models.oesdn.bundle import BundleModel
from components.metrics import aupro, f1_at_threshold, image_auroc, pixel_auroc, roc_curve_points, threshold_from_normal_scores


@dataclass(frozen=True)
class MethodEvaluation:
    metrics: dict[str, float | None]
    """image_auroc, pixel_auroc, aupro, f1; pixel metrics are None when there are no masks."""
    image_threshold: float
    pixel_threshold: float
    roc: tuple[np.ndarray, np.ndarray]
    """Image-level (fpr, tpr)."""


def evaluate_method(
    val_scores: np.ndarray,
    val_maps: np.ndarray,
    test_labels: np.ndarray,
    test_scores: np.ndarray,
    test_maps: np.ndarray,
    test_masks: np.ndarray | None,
    image_quantile: float,
    pixel_quantile: float,
    aupro_fpr_limit: float,
) -> MethodEvaluation:
    """Thresholds come from held-out normal images, so no anomaly is needed before deployment."""
    image_threshold = threshold_from_normal_scores(val_scores, image_quantile)
    pixel_threshold = threshold_from_normal_scores(val_maps.ravel(), pixel_quantile)
    metrics: dict[str, float | None] = {
        "image_auroc": image_auroc(test_labels, test_scores),
        "pixel_auroc": None,
        "aupro": None,
        "f1": f1_at_threshold(test_labels, test_scores, image_threshold),
    }
    if test_masks is not None:
        metrics["pixel_auroc"] = pixel_auroc(test_masks, test_maps)
        metrics["aupro"] = aupro(test_masks, test_maps, fpr_limit=aupro_fpr_limit)
    fpr, tpr, _ = roc_curve_points(test_labels, test_scores)
    return MethodEvaluation(metrics, image_threshold, pixel_threshold, (fpr, tpr))


def primary_metric_on_manifest(model: BundleModel, manifest: pd.DataFrame, metric: str, batch_size: int = 32) -> float:
    """Score a bundle on a manifest's test images, decoded with the bundle's own preprocessing.

    Lets the registry compare a champion and a challenger on the same test set even when the
    champion was evaluated on an older one or at another image size.
    """
    test = manifest[manifest["split"] == "test"]
    if test.empty:
        raise ValueError("the manifest has no test images")
    images = np.stack([model.decode(path) for path in test["path"]])
    scores, maps = model.score(images, batch_size)
    if metric == "image_auroc":
        return image_auroc(test["label"].to_numpy(), scores)
    if metric != "pixel_auroc":
        raise ValueError(f"unknown primary metric {metric!r}")
    size = model.info.preprocessing.image_size
    masks = np.stack(
        [load_mask(path, size) if path else np.zeros((size, size), dtype=bool) for path in test["mask_path"]]
    )
    return pixel_auroc(masks, maps)
