"""Typed settings of the benchmarks, parsed from one YAML file (benchmarks/bench.yaml).

The network and loss sections reuse the project's own pydantic models (components/config.py), so
a benchmark network is configured exactly as a pipeline network is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from components.config import AUX_TRANSFORMS, AEConfig, LossConfig, SDNConfig, read_yaml_mapping, validated


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FashionMNISTConfig(_Section):
    root: str = Field(min_length=1, description="folder holding the four Fashion-MNIST idx files")
    train_per_class: int | None = Field(ge=2, le=6000, description="training images of the normal class; null = all 6,000")
    test_per_class: int | None = Field(ge=1, le=1000, description="test images per class; null = the whole test set")


class MNISTSubsetConfig(_Section):
    train_per_class: int = Field(ge=2, le=499, description="of the 500 digits per class; the rest are test images")


class BenchScoreConfig(_Section):
    distance: Literal["squared", "absolute"]
    smoothing_sigma: float = Field(ge=0.0, le=32.0)
    reduction: Literal["mean", "max", "topk_mean"]
    topk_fraction: float = Field(gt=0.0, le=1.0)


class AblationConfig(_Section):
    seeds: tuple[int, ...] = Field(min_length=1)
    variants: dict[str, tuple[str, ...]] = Field(
        min_length=1, description="name -> auxiliary transforms (empty = none, lambda 0)"
    )

    @field_validator("variants")
    @classmethod
    def _known(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for name, transforms in value.items():
            unknown = sorted(set(transforms) - set(AUX_TRANSFORMS))
            if unknown:
                raise ValueError(f"variant {name!r}: unknown transform(s) {unknown}; choose from {list(AUX_TRANSFORMS)}")
        return value


class OneClassConfig(_Section):
    image_size: int = Field(ge=28, le=256)
    seeds: tuple[int, ...] = Field(min_length=1)
    split_seed: int = Field(ge=0, description="fixes the per-class subsample/split; the same for every seed")
    val_fraction: float = Field(gt=0.0, lt=0.5, description="of the class's training images, held out for best-epoch choice")
    inference_batch_size: int = Field(ge=1, le=8192)
    fashion_mnist: FashionMNISTConfig
    mnist_subset: MNISTSubsetConfig
    loss: LossConfig
    ae: AEConfig
    sdn: SDNConfig
    """lambda_oer and aux_transforms are OE-SDN's; the plain SDN row uses the same net with lambda 0."""
    score: BenchScoreConfig
    ablation: AblationConfig

    @model_validator(mode="after")
    def _sizes(self) -> OneClassConfig:
        for section, depth in (("ae", self.ae.depth), ("sdn", self.sdn.depth)):
            if self.image_size % 2**depth:
                raise ValueError(f"image_size {self.image_size} must be a multiple of 2**{section}.depth = {2**depth}")
        if self.sdn.lambda_oer == 0:
            raise ValueError("sdn.lambda_oer is OE-SDN's weight and must be > 0 (the SDN row already uses 0)")
        return self


class SpeedConfig(_Section):
    params: str = Field(min_length=1, description="the project params file whose data/ae/sdn/score sections are benchmarked")
    batch_size: int = Field(ge=2, le=4096, description="N of the batch-N inference figure")
    source_size: int = Field(ge=16, le=4096, description="side of the PNG files decoded, before resizing to data.image_size")
    warmup: int = Field(ge=0, le=100)
    repeats: int = Field(ge=1, le=10_000)
    train_steps: int = Field(ge=1, le=10_000)
    matmul_size: int = Field(ge=64, le=16384)
    compile: Literal["auto", "on", "off"] = Field(description="torch.compile: auto = try on CUDA and keep it where it helps")
    fold_batchnorm: bool = Field(description="fold eval-mode batch norm into the preceding convolution for inference")


class BenchSettings(_Section):
    oneclass: OneClassConfig
    speed: SpeedConfig


def load_bench_settings(path: str | Path) -> BenchSettings:
    """Read and validate the benchmark YAML; every error names the file and the key."""
    path = Path(path)
    raw = read_yaml_mapping(path, "benchmark settings", "--settings")
    return validated(BenchSettings, raw, f"invalid benchmark settings in {path}")


def smoke_settings(settings: BenchSettings) -> BenchSettings:
    """CI-sized settings: one seed, a few hundred images, one epoch; the code path of the real run."""
    one = settings.oneclass
    small_optim = {"epochs": 1, "batch_size": 16}
    oneclass = one.model_copy(
        update={
            "seeds": one.seeds[:1],
            "fashion_mnist": one.fashion_mnist.model_copy(update={"train_per_class": 40, "test_per_class": 20}),
            "mnist_subset": one.mnist_subset.model_copy(update={"train_per_class": 40}),
            "ae": one.ae.model_copy(update=small_optim),
            "sdn": one.sdn.model_copy(update=small_optim),
            "ablation": one.ablation.model_copy(update={"seeds": one.seeds[:1]}),
        }
    )
    speed = settings.speed.model_copy(
        update={"batch_size": 4, "warmup": 0, "repeats": 1, "train_steps": 1, "matmul_size": 256, "compile": "off"}
    )
    return BenchSettings(
        oneclass=OneClassConfig.model_validate(oneclass.model_dump()), speed=SpeedConfig.model_validate(speed.model_dump())
    )
