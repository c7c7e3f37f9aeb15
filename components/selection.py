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
from components.data.validation_defects import defective_copies
from components.evaluation import synthetic_pixel_auroc
from components.models.oesdn.detector import OESDNDetector, calibrate, device_batches, score_images
from components.scoring import ScoringSettings, oe_sdn_map, smooth_maps

SIGMA_MARGIN = 0.02
"""A blur replaces the first listed `score.difference_sigmas` only if its synthetic pixel AUROC is
higher by more than this. On the development suite (three seeds of the 256 px suite, the tileable
textures and the bundled data; seed 0 of the 128 px suite), where the blur raised the check by over
0.02 (rock, grass, gravel, planks; rivets on two seeds) the real maps gained or held; its gains of
0.008-0.013 (fabric, ihc) came with real losses, the largest 0.06 image AUROC on 128 px ihc."""

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
    detector: OESDNDetector,
    sigmas: list[float],
    val_images: np.ndarray,
    seed: int,
    batch_size: int,
    device: torch.device,
) -> tuple[float, dict[str, Any]]:
    """The blur of f_OS(x) - f_AE(x) whose map finds the synthetic defects best, and the record of the choice.

    Each candidate's synthetic pixel AUROC is the label-free check's (`synthetic_check`: the pasted
    pixels among the validation normals and their defective copies), from one pass of the networks
    shared by every candidate. Why pixel AUROC alone: the blur is a choice about the map. On the
    development suite the synthetic pixel AUROC moved with the real one: it rises on grainy textures
    (rock, grass, gravel, planks), where the blur averages out grain the AE cannot copy, and falls
    on thin streaks and hairlines, which the blur dilutes; the synthetic image AUROC did not follow.
    """
    if not sigmas:
        raise ValueError("no difference_sigmas to choose from")
    defective, masks, _ = defective_copies(val_images, seed)
    settings = detector.settings
    maps: dict[float, list[np.ndarray]] = {sigma: [] for sigma in sigmas}
    # the normals and their copies in separate batches, as scoring takes them: a detector that
    # remembers its outputs (`OESDNDetector.remembering_outputs`) runs the networks on each once
    batches = (batch for images in (val_images, defective) for batch in device_batches(detector, images, batch_size, device))
    for batch in batches:
        sdn_output, ae_output = detector.network_outputs(batch)
        for sigma, chunks in maps.items():
            raw = oe_sdn_map(sdn_output, ae_output, settings.distance, settings.ssim_window, sigma)
            chunks.append(smooth_maps(raw, settings.smoothing_sigma).float().cpu().numpy())
    split = len(val_images)
    figures = {}
    for sigma, chunks in maps.items():
        stacked = np.concatenate(chunks)
        figures[sigma] = synthetic_pixel_auroc(stacked[:split], stacked[split:], masks)
    first = sigmas[0]
    best = max(figures, key=figures.__getitem__)
    chosen = best if figures[best] - figures[first] > SIGMA_MARGIN else first
    record = {
        "chosen": chosen,
        "rule": f"highest OE-SDN synthetic pixel AUROC on the validation normals; the first listed unless beaten by over {SIGMA_MARGIN}",
        "candidates": {str(sigma): {"synthetic_pixel_auroc": figure} for sigma, figure in figures.items()},
    }
    return chosen, record


def pixel_map_sigmas(chosen: float, sigmas: list[float], multiscale: bool) -> tuple[float, ...]:
    """The blurs whose maps join OE-SDN's multi-scale pixel map (`ScoringSettings.map_sigmas`):
    every listed one where the sharpest was chosen, none otherwise.

    Why only then: where a blur won the check, the sharp map's grain is what it escaped, and the
    maximum would bring it back (rock, seed 0: pixel AUROC 0.931 blurred, 0.904 multi-scale). Where
    the sharp map won, the multi-scale map was within 0.003 of it on every development category and
    up to 0.015 above it (ihc), because a faint blurred stain joins the sharp hairlines.
    """
    if not multiscale or len(sigmas) < 2 or chosen != min(sigmas):
        return ()
    return tuple(sorted(sigmas))
