"""Metrics of one scoring method on one test set, with its threshold taken from normal images only."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.data.images import load_mask, probe_image
from components.metrics import (
    MIN_TAIL_FIT_SCORES,
    aupro,
    f1_at_threshold,
    image_auroc,
    lognormal_tail_threshold,
    lognormal_tolerance_threshold,
    operating_point,
    pixel_auroc,
    roc_curve_points,
    threshold_from_normal_scores,
)
from components.models.oesdn.bundle import BundleModel

THRESHOLD_RULES = ("empirical", "lognormal", "tolerance")
LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodEvaluation:
    metrics: dict[str, float | None]
    """image_auroc, pixel_auroc, aupro, f1, false_alarm_rate, recall, recall.<defect type>; a figure
    the test set cannot give (no masks, no defective images) is None."""
    image_threshold: float
    pixel_threshold: float
    roc: tuple[np.ndarray, np.ndarray]
    """Image-level (fpr, tpr); empty when the test set lacks a class."""


def upsample_maps(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """float32 (N, h, w) maps bilinearly resized to (N, *shape), as MVTec AD's protocol compares them."""
    import torch
    from torch.nn import functional as F

    if maps.shape[1:] == tuple(shape):
        return maps
    resized = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(maps))[:, None].float(), size=shape, mode="bilinear", align_corners=False
    )
    return resized[:, 0].numpy()


@dataclass(frozen=True)
class ImageThresholdRule:
    """How the image threshold is set from held-out normal scores (`score.threshold_rule`).

    `empirical`: their `quantile`; `lognormal`: that quantile of a log-normal fitted to them;
    `tolerance`: a bound that, with probability `confidence`, at least `quantile` of normal images
    fall below. The fits never go below the largest validation score, and with fewer than three
    scores (a smoke-sized split) the empirical rule is used and a warning says so.
    """

    name: str = "empirical"
    quantile: float = 0.99
    confidence: float = 0.99

    def __post_init__(self) -> None:
        if self.name not in THRESHOLD_RULES:
            raise ValueError(f"unknown threshold rule {self.name!r}; choose from {list(THRESHOLD_RULES)}")

    def applied(self, n_scores: int) -> str:
        """The rule that `threshold` applies to `n_scores` scores, after the small-split fallback."""
        if self.quantile >= 1.0:
            return "max"
        return self.name if self.name == "empirical" or n_scores >= MIN_TAIL_FIT_SCORES else "empirical"

    def threshold(self, val_scores: np.ndarray) -> float:
        n = np.asarray(val_scores).size
        rule = self.applied(n)
        if rule == "empirical" and self.name != "empirical" and self.quantile < 1.0:
            LOGGER.warning(
                "score.threshold_rule %s needs %d validation scores, got %d: using the empirical rule",
                self.name,
                MIN_TAIL_FIT_SCORES,
                n,
            )
        if rule == "lognormal":
            return lognormal_tail_threshold(val_scores, self.quantile)
        if rule == "tolerance":
            return lognormal_tolerance_threshold(val_scores, self.quantile, self.confidence)
        return threshold_from_normal_scores(val_scores, self.quantile)

    def describe(self, n_scores: int) -> str:
        """The rule in words, as `threshold` applied it to `n_scores` good validation images."""
        images = f"{n_scores} good validation images"
        rule = self.applied(n_scores)
        if rule == "max":
            return f"the largest score of {images}"
        if rule == "lognormal":
            return f"lognormal tail fit at the {self.quantile:g} quantile of {images} (never below their largest score)"
        if rule == "tolerance":
            return (
                f"lognormal tolerance bound from {images}: with {self.confidence:.0%} confidence, at least "
                f"{self.quantile:.0%} of good parts score below it (never below their largest score)"
            )
        fallback = f" (too few for the {self.name} fit)" if self.name != "empirical" else ""
        return f"empirical {self.quantile:g} quantile of {images}{fallback}"


def evaluate_method(
    val_scores: np.ndarray,
    val_maps: np.ndarray,
    test_labels: np.ndarray,
    test_scores: np.ndarray,
    test_maps: np.ndarray,
    test_masks: np.ndarray | None,
    image_rule: ImageThresholdRule,
    pixel_quantile: float,
    aupro_fpr_limit: float,
    defect_types: np.ndarray | None = None,
) -> MethodEvaluation:
    """Thresholds come from held-out normal images, so no anomaly is needed before deployment.

    `test_masks` may be larger than the maps (native resolution): the maps are upsampled to them.
    """
    threshold = image_rule.threshold(val_scores)
    pixel_threshold = threshold_from_normal_scores(val_maps.ravel(), pixel_quantile)
    both_classes = len(np.unique(test_labels)) == 2
    metrics: dict[str, float | None] = {
        "image_auroc": image_auroc(test_labels, test_scores) if both_classes else None,
        "pixel_auroc": None,
        "aupro": None,
        "f1": f1_at_threshold(test_labels, test_scores, threshold) if both_classes else None,
    }
    metrics |= operating_point(test_labels, test_scores, threshold, defect_types)
    if test_masks is not None and test_masks.any():
        maps = upsample_maps(test_maps, test_masks.shape[1:])
        metrics["pixel_auroc"] = pixel_auroc(test_masks, maps)
        metrics["aupro"] = aupro(test_masks, maps, fpr_limit=aupro_fpr_limit)
    roc = roc_curve_points(test_labels, test_scores)[:2] if both_classes else (np.zeros(0), np.zeros(0))
    return MethodEvaluation(metrics, threshold, pixel_threshold, roc)


def synthetic_check(
    val_scores: np.ndarray, val_maps: np.ndarray, defect_scores: np.ndarray, defect_maps: np.ndarray, defect_masks: np.ndarray
) -> dict[str, float]:
    """Label-free figures: validation normals against defective copies of themselves.

    `synthetic_image_auroc` ranks the copies above the normals; `synthetic_pixel_auroc` finds the
    pasted pixels in the copies and the normals together.
    """
    labels = np.concatenate([np.zeros(len(val_scores)), np.ones(len(defect_scores))]).astype(np.int64)
    return {
        "synthetic_image_auroc": image_auroc(labels, np.concatenate([val_scores, defect_scores])),
        "synthetic_pixel_auroc": synthetic_pixel_auroc(val_maps, defect_maps, defect_masks),
    }


def synthetic_pixel_auroc(val_maps: np.ndarray, defect_maps: np.ndarray, defect_masks: np.ndarray) -> float:
    """Pixel AUROC of the pasted pixels among the validation normals' maps and their copies' maps."""
    masks = np.concatenate([np.zeros((len(val_maps), *defect_masks.shape[1:]), dtype=bool), defect_masks])
    return pixel_auroc(masks, np.concatenate([val_maps, defect_maps]))


def primary_metric_on_manifest(model: BundleModel, manifest: pd.DataFrame, metric: str, batch_size: int = 32) -> float:
    """Score a bundle on a manifest's test images, decoded with the bundle's own preprocessing.

    Lets the registry compare a champion and a challenger on the same test set even when the
    champion was evaluated on an older one or at another image size. Pixel AUROC is taken at the
    images' own resolution, as the evaluate stage takes it.
    """
    test = manifest[manifest["split"] == "test"]
    if test.empty:
        raise ValueError("the manifest has no test images")
    images = np.stack([model.decode(path) for path in test["path"]])
    scores, maps = model.score(images, batch_size)
    if metric == "image_auroc":
        return image_auroc(test["label"].to_numpy(), scores)
    if metric != "pixel_auroc":
        raise ValueError(f"{metric!r} cannot be re-measured on a test manifest")
    first = probe_image(test["path"].iloc[0])
    shape = (first.height, first.width)
    masks = np.stack([load_mask(path, shape) if path else np.zeros(shape, dtype=bool) for path in test["mask_path"]])
    return pixel_auroc(masks, upsample_maps(maps, shape))
