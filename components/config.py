"""Typed settings parsed once from `params.yaml`, with range errors that name the offending key.

Every section of `params.yaml` maps to one frozen model below. A category may override any section
under `categories.<name>`; `Params.for_category` merges those overrides onto the globals, so a stage
never has to know where a value came from.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.safe_paths import plain_folder_name

LOCAL_AUX_TRANSFORMS = ("foreign_patch", "noise_patch", "stroke_patch", "shade_patch")
"""The corruptions that change part of an image only (the rest are whole-image transforms)."""
AUX_TRANSFORMS = (
    "rot90",
    "rot180",
    "rot270",
    "hflip",
    "vflip",
    "gaussian_noise",
    "gaussian_blur",
    "invert",
    "channel_shuffle",
    *LOCAL_AUX_TRANSFORMS,
)


def _multiple_of_16(value: int) -> int:
    """Image and crop sides: the networks halve them up to four times."""
    if value % 16:
        raise ValueError(f"must be a multiple of 16 so the networks can down-sample it, got {value}")
    return value


Side = Annotated[int, AfterValidator(_multiple_of_16)]
"""A side in pixels that the networks can down-sample."""


SettingsT = TypeVar("SettingsT", bound=BaseModel)
"""A settings model: Params, or the benchmarks' BenchSettings."""


class ConfigError(ValueError):
    """Raised for a params file that cannot be used; the message names each bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    root: str = Field(min_length=1, description="MVTec-AD-layout folder with one sub-folder per category")
    image_size: Side = Field(
        ge=16,
        le=1024,
        description="images are resized to this side at most; smaller ones keep their own (a multiple of 16): a resize up adds no detail",
    )
    channels: Literal[1, 3]
    val_fraction: float = Field(gt=0.0, lt=1.0)


class BundledConfig(_Section):
    categories: tuple[str, ...] = Field(min_length=1)
    image_size: int = Field(ge=32, le=512)
    crop_size: int = Field(ge=16, le=179, description="side of the square cut from the 512 px photo")
    train_count: int = Field(ge=4)
    test_good_count: int = Field(ge=1)
    test_per_defect: int = Field(ge=1)


class LossConfig(_Section):
    mse_weight: float = Field(ge=0.0)
    dssim_weight: float = Field(ge=0.0)
    ssim_window: int = Field(ge=3, le=31)

    @model_validator(mode="after")
    def _usable(self) -> LossConfig:
        if self.mse_weight == 0 and self.dssim_weight == 0:
            raise ValueError("mse_weight and dssim_weight are both 0: the loss would be constant")
        if self.ssim_window % 2 == 0:
            raise ValueError(f"ssim_window must be odd, got {self.ssim_window}")
        return self


class OptimConfig(_Section):
    epochs: int = Field(ge=1, le=10_000)
    batch_size: int = Field(ge=1, le=4096)
    learning_rate: float = Field(gt=0.0, lt=1.0)
    weight_decay: float = Field(ge=0.0, lt=1.0)
    patience: int = Field(ge=0, description="early-stopping patience in epochs; 0 disables it")
    min_steps: int = Field(
        default=0, ge=0, le=1_000_000, description="train at least this many optimiser steps, adding epochs on small data"
    )
    crop_size: Side = Field(
        default=0,
        ge=0,
        le=1024,
        description="train on random square crops of this side (a multiple of 16, at most data.image_size); 0 = whole images",
    )
    validate_from: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="share of the epochs trained before the first validation (the best weights come later); 0 = every epoch",
    )
    validations: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="validate at most this many epochs after validate_from, evenly spaced back from the last; 0 = every one",
    )


class AEConfig(OptimConfig):
    base_channels: int = Field(ge=4, le=512)
    latent_channels: int = Field(ge=1, le=1024)
    depth: int = Field(ge=1, le=6)
    denoise_share: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="share of training images given a local corruption whose target is the clean image; 0 = a plain AE",
    )
    denoise_transforms: tuple[str, ...] = Field(
        default=("shade_patch",), description="the local corruptions the AE learns to remove (drawn one per image)"
    )

    @field_validator("denoise_transforms")
    @classmethod
    def _local_transforms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(LOCAL_AUX_TRANSFORMS))
        if unknown or not value:
            raise ValueError(f"choose one or more local corruptions from {list(LOCAL_AUX_TRANSFORMS)}, got {list(value)}")
        return value


class SDNConfig(OptimConfig):
    base_channels: int = Field(ge=4, le=512)
    depth: int = Field(ge=1, le=6)
    residual: bool
    lambda_oer: float = Field(ge=0.0, le=1.0)
    aux_transforms: tuple[str, ...]
    aux_noise_std: float = Field(gt=0.0, le=1.0)
    aux_blur_sigma: float = Field(gt=0.0, le=10.0)
    aux_local_max_area: float = Field(
        default=0.08, gt=0.004, le=0.5, description="largest image share a foreign_patch / noise_patch corruption covers"
    )

    @field_validator("aux_transforms")
    @classmethod
    def _known_transforms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(AUX_TRANSFORMS))
        if unknown:
            raise ValueError(f"unknown transform(s) {unknown}; choose from {list(AUX_TRANSFORMS)}")
        return value

    candidates: tuple[dict[str, Any], ...] = Field(
        default=(),
        description="alternative sdn settings (overrides of this section); each is trained and the best on the label-free check kept",
    )

    @field_validator("candidates")
    @classmethod
    def _candidates_are_overrides(cls, value: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        allowed = set(cls.model_fields) - {"candidates"}
        for index, override in enumerate(value):
            unknown = sorted(set(override) - allowed)
            if unknown:
                raise ValueError(f"candidate {index}: unknown sdn key(s) {unknown}")
        return value

    def candidate_settings(self) -> dict[str, SDNConfig]:
        """Each candidate's full settings by a readable name; just this section when none are listed."""
        if not self.candidates:
            return {"default": self}
        named: dict[str, SDNConfig] = {}
        for index, override in enumerate(self.candidates):
            name = ",".join(f"{k}={_short(v)}" for k, v in sorted(override.items())) or "default"
            try:
                named[name] = SDNConfig.model_validate(self.model_dump() | dict(override) | {"candidates": ()})
            except ValidationError as error:
                raise ConfigError(f"sdn.candidates[{index}]: {error.errors()[0]['msg']}") from None
        return named

    @model_validator(mode="after")
    def _aux_when_needed(self) -> SDNConfig:
        if self.lambda_oer > 0 and not self.aux_transforms:
            raise ValueError("lambda_oer > 0 needs at least one aux_transforms entry (or set lambda_oer: 0)")
        return self


def _short(value: Any) -> str:
    return "+".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


class ScoreConfig(_Section):
    distance: Literal["squared", "absolute", "ssim", "mse_dssim"]
    smoothing_sigma: float = Field(ge=0.0, le=32.0, description="Gaussian smoothing of maps; 0 disables it")
    difference_sigmas: list[Annotated[float, Field(ge=0.0, le=32.0)]] = Field(
        default=[0.0],
        min_length=1,
        description="Gaussian blur of f_OS(x) - f_AE(x) before a squared or absolute distance (0 = off); "
        "with several, evaluate keeps per category the one best on the label-free check",
    )
    multiscale_map: bool = Field(
        default=True,
        description="where the sharpest listed difference_sigma is chosen, OE-SDN's pixel map is the larger of every "
        "listed blur's map, each over its validation 99th percentile (the image score keeps the chosen blur's map)",
    )
    reduction: Literal["mean", "max", "topk_mean"]
    topk_fraction: float = Field(gt=0.0, le=1.0)
    image_distances: list[Literal["squared", "absolute", "ssim", "mse_dssim"]] = Field(
        default=["squared", "ssim"],
        min_length=1,
        description="OE-SDN image score: these distances' scores, standardised on the validation normals, averaged",
    )

    image_threshold_quantile: float = Field(gt=0.0, le=1.0)
    threshold_rule: Literal["empirical", "lognormal", "tolerance"] = Field(
        default="tolerance",
        description="image threshold: empirical quantile, log-normal tail fit, or log-normal tolerance bound (fits never below the max)",
    )
    threshold_confidence: float = Field(default=0.99, gt=0.0, lt=1.0, description="the tolerance bound's confidence")
    pixel_threshold_quantile: float = Field(gt=0.0, le=1.0)
    tile_size: Side = Field(
        default=0,
        ge=0,
        le=1024,
        description="run both networks on overlapping tiles of this side (a multiple of 16), the crops they learned on; 0 = whole images",
    )

    @field_validator("image_distances")
    @classmethod
    def _distinct_distances(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"each distance at most once, got {value}")
        return value

    @field_validator("difference_sigmas", mode="before")
    @classmethod
    def _sigma_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | float) else value

    @field_validator("difference_sigmas")
    @classmethod
    def _distinct_sigmas(cls, value: list[float]) -> list[float]:
        if len(set(value)) != len(value):
            raise ValueError(f"each sigma at most once, got {value}")
        return value


class EvaluateConfig(_Section):
    aupro_fpr_limit: float = Field(gt=0.0, le=1.0)
    panel_rows: int = Field(ge=1, le=64)
    batch_size: int = Field(ge=1, le=4096)


class StorageConfig(_Section):
    """Bounds on S3 calls (`data.root: s3://...`); the endpoint and keys come from the environment."""

    connect_timeout_seconds: float = Field(default=5.0, gt=0.0, le=300.0, description="timeout to open a connection to S3")
    read_timeout_seconds: float = Field(
        default=20.0, gt=0.0, le=3600.0, description="timeout of one socket read, not of a transfer"
    )
    max_attempts: int = Field(default=3, ge=1, le=20, description="attempts in all per call (botocore's standard retry mode)")


class TrackingConfig(_Section):
    enabled: bool = Field(default=True, description="log training and evaluation stages to MLflow")
    experiment_prefix: str = Field(default="oesdn-", pattern=r"^[A-Za-z0-9_.\-/ ]*$")
    http_timeout_seconds: int = Field(
        default=20,
        ge=1,
        le=600,
        description="timeout of one HTTP request to an MLflow server (whole seconds, as MLflow reads it)",
    )
    http_max_retries: int = Field(default=2, ge=0, le=10, description="retries of a failed HTTP request to an MLflow server")
    http_backoff_factor: int = Field(
        default=1, ge=0, le=60, description="seconds before the first retry, doubled for each further one"
    )


class RegistryConfig(_Section):
    model_prefix: str = Field(default="oesdn-", min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    promotion_margin: float = Field(
        default=0.005, ge=0.0, le=1.0, description="how much the challenger's primary metric must beat the champion's"
    )
    gate_min_primary_metric: float = Field(
        default=0.7, ge=0.0, le=1.0, description="a version whose OE-SDN primary metric is below this never becomes champion"
    )
    gate_max_baseline_shortfall: float = Field(
        default=0.02, ge=0.0, le=1.0, description="... nor one trailing the AE-L2 baseline's primary metric by more than this"
    )
    gate_label_free: bool = Field(
        default=True, description="... nor one trailing AE-L2 by more than that on the label-free synthetic-defect check"
    )


class ScheduleConfig(_Section):
    cron: str = Field(default="0 2 * * *", min_length=9, description="five-field cron expression")
    timezone: str = Field(default="UTC", min_length=1)

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"must have five fields (minute hour day month weekday), got {value!r}")
        return value


class OrchestrationConfig(_Section):
    stage_timeout_minutes: float = Field(default=120.0, gt=0.0, le=7 * 24 * 60)
    retries: int = Field(default=2, ge=0, le=10, description="retries of a stage after a transient fault")
    retry_delay_seconds: float = Field(default=10.0, ge=0.0, le=3600.0, description="first retry delay; doubles each time")
    parallel_stages: int = Field(
        default=0, ge=0, le=64, description="stage commands `oesdn run` runs at once, across categories; 0 = one per CPU"
    )
    schedule: ScheduleConfig = ScheduleConfig()


class Params(_Section):
    seed: int = Field(ge=0)
    categories: dict[str, dict[str, Any]] = Field(min_length=1)
    data: DataConfig
    bundled: BundledConfig
    loss: LossConfig
    ae: AEConfig
    sdn: SDNConfig
    score: ScoreConfig
    evaluate: EvaluateConfig
    storage: StorageConfig = StorageConfig()
    tracking: TrackingConfig = TrackingConfig()
    registry: RegistryConfig = RegistryConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()

    @field_validator("categories", mode="before")
    @classmethod
    def _names_and_overrides(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("must be a mapping of category name to overrides, e.g. {brick: {}}")  # noqa: TRY004 - pydantic reports only ValueError
        overridable = set(_OVERRIDABLE)
        for name, overrides in value.items():
            plain_folder_name(name, what="category")  # folder names and `--category NAME` in dvc.yaml
            if overrides is None:
                value[name] = {}
            elif not isinstance(overrides, dict) or not set(overrides) <= overridable:
                raise ValueError(f"overrides of {name!r} must be a mapping whose keys are among {sorted(overridable)}")
        return value

    @model_validator(mode="after")
    def _crops_fit_images(self) -> Params:
        for section, crop in (("ae", self.ae.crop_size), ("sdn", self.sdn.crop_size)):
            if crop > self.data.image_size:
                raise ValueError(f"{section}.crop_size {crop} is larger than data.image_size {self.data.image_size}")
        return self

    @model_validator(mode="after")
    def _aux_fits_channels(self) -> Params:
        if self.data.channels == 1 and "channel_shuffle" in self.sdn.aux_transforms:
            raise ValueError("sdn.aux_transforms: channel_shuffle needs data.channels: 3 (the images are grayscale)")
        return self

    def for_category(self, category: str) -> Params:
        """The settings one category runs with: the global sections with its overrides merged in."""
        if category not in self.categories:
            raise ConfigError(f"unknown category {category!r}; params.yaml `categories` lists {sorted(self.categories)}")
        merged = self.model_dump(mode="python")
        for section, overrides in self.categories[category].items():
            merged[section] = deep_merge(merged[section], overrides)
        return validate_params(merged, origin=f"categories.{category}")


_OVERRIDABLE = ("data", "loss", "ae", "sdn", "score", "evaluate")


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, nested sections key by key; `base` is left untouched.

    One rule for every layer of overrides: a category's section in params.yaml and the bench's `--set`.
    """
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def validate_params(raw: dict[str, Any], origin: str) -> Params:
    """Settings from a plain dict, or a ConfigError naming each bad key and `origin` (a file, a category, a run)."""
    return validated(Params, raw, f"invalid settings in {origin}")


def validated(model: type[SettingsT], raw: dict[str, Any], heading: str) -> SettingsT:
    """`raw` parsed into `model`, or one ConfigError under `heading` that lists every bad key and its value."""
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
            given = f" (got {problem['input']!r})" if problem["type"] != "missing" else ""
            lines.append(f"  {key}: {problem['msg']}{given}")
        raise ConfigError(f"{heading}:\n" + "\n".join(lines)) from None


def read_yaml_mapping(path: Path, what: str, option: str) -> dict[str, Any]:
    """The mapping a YAML settings file holds, or a ConfigError that names the file and says how to fix it.

    `what` names the file for a person ("params file"), `option` is the command-line flag that points elsewhere.
    """
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found; run from the project root or pass {option}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    return raw


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; every error names the key to fix."""
    path = Path(path)
    return validate_params(read_yaml_mapping(path, "params file", "--params"), origin=str(path))
