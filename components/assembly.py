"""The one place where typed settings become working objects.

Stages, benchmarks and the speed check all build their losses, networks, outlier exposure, fit
settings and scoring settings here, so a benchmark runs the pipeline's own code on other data and a
new setting is wired once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from torch import nn

    from components.config import AEConfig, LossConfig, OptimConfig, ScoreConfig, SDNConfig, StorageConfig
    from components.evaluation import ImageThresholdRule
    from components.models.oesdn.losses import ReconstructionLoss
    from components.models.oesdn.objectives import AutoencoderObjective, StyleDistillationObjective
    from components.models.oesdn.outlier_exposure import AuxSettings
    from components.scoring import ScoringSettings
    from components.storage.settings import S3Settings
    from components.training import FitSettings


class _ScoreSection(Protocol):
    distance: Any
    smoothing_sigma: float
    reduction: Any
    topk_fraction: float
    image_distances: Any
    tile_size: int
    difference_sigmas: Any


def reconstruction_loss(loss: LossConfig) -> ReconstructionLoss:
    from components.models.oesdn.losses import ReconstructionLoss

    return ReconstructionLoss(loss.mse_weight, loss.dssim_weight, loss.ssim_window)


def aux_settings(sdn: SDNConfig) -> AuxSettings:
    from components.models.oesdn.outlier_exposure import AuxSettings

    return AuxSettings(
        tuple(sdn.aux_transforms),
        sdn.aux_noise_std,
        sdn.aux_blur_sigma,
        local_max_area=sdn.aux_local_max_area,
    )


def ae_objective(loss: LossConfig, ae: AEConfig) -> AutoencoderObjective:
    from components.models.oesdn.objectives import AutoencoderObjective
    from components.models.oesdn.outlier_exposure import AuxSettings

    # Only local corruptions are allowed here (config checks), so the whole-image noise and blur
    # strengths are never read: any valid value will do.
    denoise = AuxSettings(tuple(ae.denoise_transforms), noise_std=0.1, blur_sigma=1.5)
    return AutoencoderObjective(reconstruction_loss(loss), denoise, ae.denoise_share)


def sdn_objective(loss: LossConfig, sdn: SDNConfig) -> StyleDistillationObjective:
    from components.models.oesdn.objectives import StyleDistillationObjective

    return StyleDistillationObjective(reconstruction_loss(loss), sdn.lambda_oer, aux_settings(sdn))


def ae_arch(channels: int, ae: AEConfig) -> dict[str, int]:
    return {"channels": channels, "base_channels": ae.base_channels, "latent_channels": ae.latent_channels, "depth": ae.depth}


def sdn_arch(channels: int, sdn: SDNConfig) -> dict[str, Any]:
    return {"channels": channels, "base_channels": sdn.base_channels, "depth": sdn.depth, "residual": sdn.residual}


def build_networks(channels: int, ae: AEConfig, sdn: SDNConfig) -> tuple[nn.Module, nn.Module]:
    """A fresh (AE, SDN) pair as the settings describe them."""
    from components.models.oesdn.persistence import build_network

    return build_network("ae", ae_arch(channels, ae)), build_network("sdn", sdn_arch(channels, sdn))


def fit_settings(
    optim: OptimConfig,
    seed: int,
    checkpoint_path: Path,
    fingerprint: str,
    param_prefix: str,
    progress: bool,
) -> FitSettings:
    from components.training import FitSettings

    return FitSettings(
        epochs=optim.epochs,
        batch_size=optim.batch_size,
        learning_rate=optim.learning_rate,
        weight_decay=optim.weight_decay,
        patience=optim.patience,
        seed=seed,
        checkpoint_path=checkpoint_path,
        fingerprint=fingerprint,
        param_prefix=param_prefix,
        progress=progress,
        min_steps=optim.min_steps,
        crop_size=optim.crop_size,
        validate_from=optim.validate_from,
        validations=optim.validations,
    )


def s3_settings(storage: StorageConfig) -> S3Settings:
    """The environment's S3 endpoint and keys, with the `storage` section's time bounds."""
    import dataclasses

    from components.storage.settings import S3Settings

    return dataclasses.replace(
        S3Settings.from_env(),
        connect_timeout=storage.connect_timeout_seconds,
        read_timeout=storage.read_timeout_seconds,
        max_attempts=storage.max_attempts,
    )


def image_threshold_rule(score: ScoreConfig) -> ImageThresholdRule:
    from components.evaluation import ImageThresholdRule

    return ImageThresholdRule(score.threshold_rule, score.image_threshold_quantile, score.threshold_confidence)


def scoring_settings(score: _ScoreSection, ssim_window: int, difference_sigma: float | None = None) -> ScoringSettings:
    """The detector's scoring; `difference_sigma` picks one of `score.difference_sigmas` (default: the first)."""
    from components.scoring import ScoringSettings

    return ScoringSettings(
        score.distance,
        score.smoothing_sigma,
        score.reduction,
        score.topk_fraction,
        ssim_window,
        tuple(score.image_distances),
        score.tile_size,
        float(score.difference_sigmas[0] if difference_sigma is None else difference_sigma),
    )
