"""Label-free choices per category, with no defect label anywhere.

When `sdn.candidates` lists more than one setting (auxiliary sets, lambda, ...), each candidate SDN
is trained against the same AE and measured on synthetic defects pasted into the validation normals
(`components.data.validation_defects`); the best figure wins. When `score.difference_sigmas` lists
more than one blur of f_OS(x) - f_AE(x), the trained pair is scored with each on the same check.
Test images are never looked at, so neither choice can overfit the test labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from components.category_evaluation import label_free_check
from components.models.oesdn.detector import OESDNDetector, calibrate, score_images
from components.scoring import ScoringSettings

SIGMA_MARGIN = 0.005
"""A blur replaces the first listed `score.difference_sigmas` only if its synthetic pixel AUROC is
higher by more than this: on the suite the check's sign was right wherever the change was larger."""

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


def choose_difference_sigma(
    ae: nn.Module,
    sdn: nn.Module,
    scorings: dict[float, ScoringSettings],
    val_images: np.ndarray,
    seed: int,
    batch_size: int,
    device: torch.device,
) -> tuple[float, dict[str, Any]]:
    """The blur of f_OS(x) - f_AE(x) whose map finds the synthetic defects best, and the record of the choice.

    Why pixel AUROC alone: the blur is a choice about the map. On the development suite the synthetic
    pixel AUROC moved with the real one on 13 of 14 categories (it rises on grainy textures such as
    rock, grass and planks, where the blur averages out grain the AE cannot copy, and falls on thin
    streaks and hairlines, which the blur dilutes); the synthetic image AUROC did not.
    """
    if not scorings:
        raise ValueError("no difference_sigmas to choose from")
    figures = {
        sigma: candidate_figures(ae, sdn, scoring, val_images, seed, batch_size, device) for sigma, scoring in scorings.items()
    }
    first = next(iter(figures))
    best = max(figures, key=lambda sigma: figures[sigma]["synthetic_pixel_auroc"])
    gain = figures[best]["synthetic_pixel_auroc"] - figures[first]["synthetic_pixel_auroc"]
    chosen = best if gain > SIGMA_MARGIN else first
    record = {
        "chosen": chosen,
        "rule": f"highest OE-SDN synthetic pixel AUROC on the validation normals; the first listed unless beaten by over {SIGMA_MARGIN}",
        "candidates": {str(sigma): figures[sigma] for sigma in figures},
    }
    return chosen, record
