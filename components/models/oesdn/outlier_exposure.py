"""Auxiliary outliers for the OER term: transformed training images the SDN must copy unchanged.

Rotation by k*90 degrees is the paper's best choice; flips, noise and blur are its ablations.
Inversion and channel shuffling are photometric outliers: rotation leaves a texture's colours and
intensities in-distribution, so only these teach the SDN to copy abnormal colours instead of
normalising them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import kornia
import torch


@dataclass(frozen=True)
class AuxSettings:
    transforms: tuple[str, ...]
    noise_std: float
    blur_sigma: float


def _gaussian_noise(images: torch.Tensor, generator: torch.Generator, settings: AuxSettings) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=generator, device=generator.device)
    return (images + settings.noise_std * noise.to(images.device, images.dtype)).clamp(0.0, 1.0)


def _gaussian_blur(images: torch.Tensor, generator: torch.Generator, settings: AuxSettings) -> torch.Tensor:
    sigma = settings.blur_sigma
    kernel = 2 * max(1, round(3 * sigma)) + 1
    return kornia.filters.gaussian_blur2d(images, (kernel, kernel), (sigma, sigma), border_type="reflect")


def _channel_shuffle(images: torch.Tensor, generator: torch.Generator, settings: AuxSettings) -> torch.Tensor:
    if images.shape[1] < 2:
        raise ValueError("channel_shuffle needs colour images; drop it from sdn.aux_transforms for grayscale data")
    return torch.roll(images, shifts=1, dims=1)


_Transform = Callable[[torch.Tensor, torch.Generator, AuxSettings], torch.Tensor]

TRANSFORMS: dict[str, _Transform] = {
    "rot90": lambda x, g, s: torch.rot90(x, 1, dims=(-2, -1)),
    "rot180": lambda x, g, s: torch.rot90(x, 2, dims=(-2, -1)),
    "rot270": lambda x, g, s: torch.rot90(x, 3, dims=(-2, -1)),
    "hflip": lambda x, g, s: torch.flip(x, dims=(-1,)),
    "vflip": lambda x, g, s: torch.flip(x, dims=(-2,)),
    "gaussian_noise": _gaussian_noise,
    "gaussian_blur": _gaussian_blur,
    "invert": lambda x, g, s: 1.0 - x,
    "channel_shuffle": _channel_shuffle,
}


def make_aux_batch(images: torch.Tensor, generator: torch.Generator, settings: AuxSettings) -> torch.Tensor:
    """One auxiliary view per image, each with a transform drawn at random from `settings.transforms`.

    Loops over transform kinds (a handful), never over images or pixels.
    """
    if not settings.transforms:
        raise ValueError("no auxiliary transforms configured (sdn.aux_transforms is empty)")
    unknown = [name for name in settings.transforms if name not in TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown auxiliary transform(s) {unknown}; choose from {sorted(TRANSFORMS)}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"auxiliary transforms need square images, got {tuple(images.shape[-2:])}")
    choice = torch.randint(len(settings.transforms), (images.shape[0],), generator=generator)
    choice = choice.to(images.device)
    aux = torch.empty_like(images)
    for index, name in enumerate(settings.transforms):
        selected = choice == index
        if selected.any():
            aux[selected] = TRANSFORMS[name](images[selected], generator, settings)
    return aux


def oer_pair(images: torch.Tensor, generator: torch.Generator, settings: AuxSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """The OER (input, target) pair: the SDN sees an outlier and must return that same outlier."""
    aux = make_aux_batch(images, generator, settings)
    return aux, aux

