"""Anomaly maps and image scores for OE-SDN and its two baselines, all computed the same way.

Every method's map is smoothed and reduced by the same settings, so the comparison between them is
about the map alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import kornia
import torch

METHODS = ("oe_sdn", "ae_l2", "ae_ssim")
Reduction = Literal["mean", "max", "topk_mean"]
Distance = Literal["squared", "absolute", "ssim", "mse_dssim"]
DISTANCES: tuple[str, ...] = ("squared", "absolute", "ssim", "mse_dssim")


@dataclass(frozen=True)
class ScoringSettings:
    distance: Distance
    """How OE-SDN compares f_OS(x) with f_AE(x) per pixel (see `oe_sdn_map`)."""
    smoothing_sigma: float
    reduction: Reduction
    topk_fraction: float
    ssim_window: int
    image_distances: tuple[str, ...] = ()
    """The OE-SDN distances whose image scores, standardised on the validation normals, make the
    image score (`ImageScoreCalibration`); empty, or `distance` alone, means the map's own reduction."""
    tile_size: int = 0
    """Both networks run on overlapping tiles of this side, the context they were trained on
    (`components/models/oesdn/tiling.py`); 0 runs them on whole images."""
    difference_sigma: float = 0.0
    """Gaussian blur of f_OS(x) - f_AE(x), per channel, before the squared or absolute distance
    (`oe_sdn_map`); 0 = off. The image score always uses this blur's map."""
    map_sigmas: tuple[float, ...] = ()
    """With two or more blurs, OE-SDN's pixel map is the larger, per pixel, of the map at each,
    divided by its `MAP_SCALE_QUANTILE` on the validation normals (`multiscale_map`); empty = the
    map at `difference_sigma` alone."""

    @property
    def calibrated(self) -> bool:
        """Whether the image score combines several distances and so needs an `ImageScoreCalibration`."""
        return bool(self.image_distances) and tuple(self.image_distances) != (self.distance,)


def oe_sdn_map(
    sdn_output: torch.Tensor,
    ae_output: torch.Tensor,
    distance: str = "squared",
    ssim_window: int = 7,
    difference_sigma: float = 0.0,
) -> torch.Tensor:
    """Where the AE changed content, not just style: f_OS(x) vs f_AE(x), averaged over channels.

    The paper writes |f_OS(x) - f_AE(x)|. Per channel, |d| and d^2 rank pixels alike; they differ
    once channels are averaged and maps smoothed. "squared" matches the AE-L2 baseline's form.
    "ssim" (1 - SSIM) and "mse_dssim" (the training distance d = MSE + DSSIM, per pixel) compare
    local structure as well as intensity: a benign global shift in brightness or texture moves
    every pixel of f_OS(x) - f_AE(x) a little, which squared differences add up, while SSIM
    discounts a shared change of local mean and contrast.

    `difference_sigma` blurs the signed difference before it is squared: on a stochastic texture
    the SDN reproduces grain the AE cannot, a zero-mean difference that the blur averages out,
    while a stain, hole or foreign patch the SDN copies shifts the local mean and survives it.
    """
    difference = gaussian_blur(sdn_output.float() - ae_output.float(), difference_sigma)
    if distance == "squared":
        return difference.pow(2).mean(dim=1)
    if distance == "absolute":
        return difference.abs().mean(dim=1)
    if distance == "ssim":
        return ssim_residual_map(sdn_output, ae_output, ssim_window)
    if distance == "mse_dssim":
        return difference.pow(2).mean(dim=1) + ssim_residual_map(sdn_output, ae_output, ssim_window) / 2
    raise ValueError(f"unknown OE-SDN distance {distance!r}; choose from {list(DISTANCES)}")


MAP_SCALE_QUANTILE = 0.99
"""Each blur's map in a multi-scale map is divided by this quantile of its validation-normal pixels."""


def multiscale_map(maps: list[torch.Tensor], scales: tuple[float, ...]) -> torch.Tensor:
    """The larger, per pixel, of (N, H, W) maps each divided by its scale.

    Why: a sharp map keeps hairlines and pinholes, a blurred one keeps faint stains on grain; in
    units of their own spread on good parts, either one's defect stands out in the maximum, and a
    good part stays near 1 in both.
    """
    if len(maps) != len(scales) or not maps:
        raise ValueError(f"a multi-scale map needs one scale per map, got {len(maps)} maps and {len(scales)} scales")
    return torch.stack([m.float() / scale for m, scale in zip(maps, scales, strict=True)]).amax(dim=0)


def l2_residual_map(images: torch.Tensor, ae_output: torch.Tensor) -> torch.Tensor:
    """(x - f_AE(x))^2 averaged over channels: the plain AE baseline."""
    return (images.float() - ae_output.float()).pow(2).mean(dim=1)


def ssim_residual_map(images: torch.Tensor, ae_output: torch.Tensor, window: int) -> torch.Tensor:
    """1 - SSIM(x, f_AE(x)) per pixel, averaged over channels: the AE-SSIM baseline."""
    ssim = kornia.metrics.ssim(images.float(), ae_output.float(), window_size=window, max_val=1.0)
    return 1.0 - ssim.mean(dim=1)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (N, C, H, W) images, each channel alone, reflecting at the border; sigma 0
    returns them unchanged."""
    if sigma <= 0:
        return images
    kernel = 2 * max(1, round(3 * sigma)) + 1
    return kornia.filters.gaussian_blur2d(images, (kernel, kernel), (sigma, sigma), border_type="reflect")


def smooth_maps(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of (N, H, W) maps; sigma 0 returns them unchanged."""
    return gaussian_blur(maps[:, None], sigma)[:, 0]


def reduce_maps(maps: torch.Tensor, reduction: Reduction, topk_fraction: float) -> torch.Tensor:
    """Image scores (N,) from maps (N, H, W): mean, max, or mean of the top `topk_fraction` pixels."""
    flat = maps.flatten(start_dim=1)
    if reduction == "mean":
        return flat.mean(dim=1)
    if reduction == "max":
        return flat.amax(dim=1)
    if reduction == "topk_mean":
        k = max(1, round(topk_fraction * flat.shape[1]))
        return flat.topk(k, dim=1).values.mean(dim=1)
    raise ValueError(f"unknown score reduction {reduction!r}; choose mean, max or topk_mean")


def method_maps(
    images: torch.Tensor, ae_output: torch.Tensor, sdn_output: torch.Tensor, settings: ScoringSettings
) -> dict[str, torch.Tensor]:
    """Smoothed (N, H, W) maps of every method in `METHODS` for one batch."""
    raw = {
        "oe_sdn": oe_sdn_map(sdn_output, ae_output, settings.distance, settings.ssim_window, settings.difference_sigma),
        "ae_l2": l2_residual_map(images, ae_output),
        "ae_ssim": ssim_residual_map(images, ae_output, settings.ssim_window),
    }
    return {name: smooth_maps(value, settings.smoothing_sigma) for name, value in raw.items()}


LOG_SPREAD_FLOOR = 0.01
"""Smallest spread of log scores a calibration divides by: equal validation scores stay finite."""
Z_LIMIT = 80.0
"""Largest |mean z| before exp(): exp(80) still fits float32, so a gross defect scores finite."""


@dataclass(frozen=True)
class ImageScoreCalibration:
    """Centre and spread of each distance's log image score on the validation normals.

    Why: the squared difference of f_OS(x) and f_AE(x) sees a changed intensity, 1 - SSIM a changed
    local structure (a hairline on a high-contrast texture, a flat object surface). Their scores
    live on different scales, so each is standardised on good parts before they are averaged. The
    image score is exp(mean z): positive, 1 for a typical good part, log-normal like its parts, so
    the threshold rule applies to it unchanged.
    """

    distances: tuple[str, ...]
    log_means: tuple[float, ...]
    log_stds: tuple[float, ...]

    @classmethod
    def fit(cls, distances: tuple[str, ...], scores: torch.Tensor) -> ImageScoreCalibration:
        """From (D, N) image scores of N validation normals, one row per distance."""
        if scores.ndim != 2 or scores.shape[0] != len(distances) or scores.shape[1] == 0:
            raise ValueError(f"calibration needs ({len(distances)}, N >= 1) validation scores, got {tuple(scores.shape)}")
        logs = scores.double().clamp_min(1e-12).log()
        spreads = logs.std(dim=1, unbiased=False).clamp_min(LOG_SPREAD_FLOOR)
        return cls(tuple(distances), tuple(logs.mean(dim=1).tolist()), tuple(spreads.tolist()))

    def combine(self, scores: torch.Tensor) -> torch.Tensor:
        """(N,) image scores from (D, N) raw scores in `distances` order."""
        means = torch.tensor(self.log_means, dtype=scores.dtype, device=scores.device)[:, None]
        stds = torch.tensor(self.log_stds, dtype=scores.dtype, device=scores.device)[:, None]
        return ((scores.clamp_min(1e-12).log() - means) / stds).mean(dim=0).clamp(-Z_LIMIT, Z_LIMIT).exp()
