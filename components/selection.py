"""Label-free choice among candidate SDN settings, per category, with no defect label anywhere.

When `sdn.candidates` lists more than one setting (auxiliary sets, lambda, ...), each candidate SDN
is trained against the same AE and measured on synthetic defects pasted into the validation normals
(`components.data.validation_defects`); the best figure wins. Test images are never looked at, so
the choice cannot overfit the test labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from components.category_evaluation import label_free_check
from components.models.oesdn.detector import OESDNDetector, calibrate, score_images
from components.scoring import ScoringSettings

FIGURES = ("synthetic_pixel_auroc", "synthetic_image_auroc")


def candidate_figures(
    ae: nn.Module,
    sdn: nn.Module,
    scoring: ScoringSettings,
    val_images: np.ndarray,
    seed: int,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """OE-SDN's label-free figures for one candidate, and `selection_score`, their mean."""
    detector = calibrate(OESDNDetector(ae, sdn, scoring), val_images, batch_size, device)
    val = score_images(detector, val_images, batch_size, device, progress=False)
    figures = label_free_check(detector, val_images, val, seed, batch_size, device, progress=False)["oe_sdn"]
    return {**figures, "selection_score": float(np.mean([figures[name] for name in FIGURES]))}


def choose_candidate(figures: dict[str, dict[str, float]]) -> str:
    """The candidate with the highest `selection_score`; on a tie the one listed first."""
    if not figures:
        raise ValueError("no candidates to choose from")
    best = max(figures.values(), key=lambda f: f["selection_score"])["selection_score"]
    return next(name for name, f in figures.items() if f["selection_score"] == best)


def selection_record(figures: dict[str, dict[str, float]], chosen: str, overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the SDN file and the tracking run keep of a choice: every candidate's figures and the winner."""
    return {
        "chosen": chosen,
        "rule": "highest mean of OE-SDN synthetic pixel and image AUROC on the validation normals",
        "candidates": {name: {"overrides": overrides[name], **figures[name]} for name in figures},
    }
