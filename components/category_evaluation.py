"""One category's evaluation: every method scored on the test set, its operating point, and the
label-free synthetic-defect check on the validation normals.

The evaluate stage only reads inputs, calls `evaluate_category` and writes what it returns; the
development suite and the label-free candidate choice use the same function.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from components.data.prepared import PreparedData
from components.data.validation_defects import defective_copies
from components.evaluation import ImageThresholdRule, MethodEvaluation, evaluate_method, synthetic_check
from components.models.oesdn.detector import MethodScores, OESDNDetector, calibrate, score_images
from components.reporting import BASELINE_MARGIN
from components.scoring import METHODS, ImageScoreCalibration


@dataclass(frozen=True)
class CategoryEvaluation:
    results: dict[str, MethodEvaluation]
    test: dict[str, MethodScores]
    warnings: list[str] = field(default_factory=list)
    calibration: ImageScoreCalibration | None = None
    """OE-SDN's image-score calibration, fitted on the validation normals (None: the map's reduction)."""
    map_scales: tuple[float, ...] | None = None
    """The multi-scale map's scales, fitted on the validation normals (None: a single blur's map)."""

    @property
    def metrics(self) -> dict[str, dict[str, float | None]]:
        return {name: result.metrics for name, result in self.results.items()}


def label_free_check(
    detector: OESDNDetector,
    val_images: np.ndarray,
    val: dict[str, MethodScores],
    seed: int,
    batch_size: int,
    device: torch.device,
    progress: bool,
) -> dict[str, dict[str, float]]:
    """Per method, the synthetic-defect figures on defective copies of the validation normals."""
    defective, masks, _ = defective_copies(val_images, seed)
    scored = score_images(detector, defective, batch_size, device, progress)
    return {
        name: synthetic_check(val[name].scores, val[name].maps, scored[name].scores, scored[name].maps, masks) for name in METHODS
    }


def check_warnings(category: str, metrics: dict[str, dict[str, float | None]]) -> list[str]:
    """Warn when OE-SDN is worse than the AE residual on the label-free check of this category."""
    warnings = []
    for figure in ("synthetic_pixel_auroc", "synthetic_image_auroc"):
        ours, theirs = metrics["oe_sdn"].get(figure), metrics["ae_l2"].get(figure)
        if ours is not None and theirs is not None and ours < theirs - BASELINE_MARGIN:
            warnings.append(
                f"{category}: OE-SDN {figure} {ours:.3f} is below the AE residual's {theirs:.3f} "
                "on synthetic defects in the validation normals"
            )
    return warnings


def evaluate_category(
    category: str,
    detector: OESDNDetector,
    data: PreparedData,
    image_rule: ImageThresholdRule,
    pixel_quantile: float,
    aupro_fpr_limit: float,
    seed: int,
    batch_size: int,
    device: torch.device,
    progress: bool = True,
) -> CategoryEvaluation:
    """Score validation and test images with every method and measure them (see module docstring).

    First fits OE-SDN's image-score calibration on the validation normals (`calibrate`), so the
    threshold, the test figures and the bundle all see the score that ships.
    """
    calibrate(detector, data.val, batch_size, device)
    val = score_images(detector, data.val, batch_size, device, progress)
    test = score_images(detector, data.test, batch_size, device, progress)
    masks = data.test_masks_native if data.test_masks_native is not None else data.test_masks
    check = label_free_check(detector, data.val, val, seed, batch_size, device, progress)
    results = {}
    for name in METHODS:
        result = evaluate_method(
            val[name].scores,
            val[name].maps,
            data.test_labels,
            test[name].scores,
            test[name].maps,
            masks,
            image_rule,
            pixel_quantile,
            aupro_fpr_limit,
            data.test_defect_types,
        )
        result.metrics.update(check[name])
        results[name] = result
    evaluation = CategoryEvaluation(results, test, calibration=detector.calibration, map_scales=detector.map_scales)
    evaluation.warnings.extend(check_warnings(category, evaluation.metrics))
    return evaluation
