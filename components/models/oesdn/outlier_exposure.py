"""Auxiliary outliers for the OER term: images the SDN must copy where they are not normal.

Two families:

* Whole-image transforms (rotation by k*90 degrees, the paper's best choice; flips, noise and blur,
  its ablations; inversion and channel shuffling). The whole image is the outlier, so the target
  is the transformed image itself. They work where orientation or colour defines the class (digits,
  garments) but not on isotropic or periodic textures, where a rotated texture is still normal.
* Local corruptions (`foreign_patch`, `noise_patch`, `stroke_patch`, `shade_patch`): an irregular
  blob, or a thin curved stroke, of foreign content (or the image's own, darkened or lightened)
  pasted into a normal image. Inside it the target is the
  corrupted image (copy what is not normal); outside it, the AE's output for the clean image
  (imitate the AE's style where the image is normal). So the two terms of the objective never
  disagree about a pixel, and the SDN learns that content unlike the category is to be copied,
  whatever the category is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import kornia
import torch
from torch.nn import functional as F

MIN_LOCAL_AREA = 0.004
"""Smallest share of the image a local corruption covers."""
STROKE_WIDTH = (0.5, 1.5)
"""Half-width range of a `stroke_patch` stroke, in pixels of the training crop: 1-3 px wide."""
STROKE_POINTS = 4
"""Curve points sampled per pixel of the crop side: dense enough that the stroke has no gaps."""


@dataclass(frozen=True)
class AuxSettings:
    transforms: tuple[str, ...]
    noise_std: float
    blur_sigma: float
    local_max_area: float = 0.08
    """Largest share of the image a local corruption covers (drawn uniformly from 0.4 % up to it)."""


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    value = torch.rand(shape, generator=generator, device=generator.device)
    return (low + (high - low) * value).to(like.device, like.dtype)


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


def blob_masks(count: int, size: int, max_area: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """bool (count, size, size) irregular blobs, one per image, each covering 0.4 %..max_area of it.

    A coarse random field, upsampled (smooth), weighted by a Gaussian bump at a random centre and
    thresholded at the per-image quantile that gives the drawn area: one connected-looking blob
    with a ragged outline, anywhere in the image, at any scale.
    """
    coarse = max(2, size // 8)
    field = torch.rand((count, 1, coarse, coarse), generator=generator, device=generator.device)
    field = F.interpolate(field.to(device), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    centre = torch.rand((count, 2), generator=generator, device=generator.device).to(device) * size
    spread = (0.08 + 0.2 * torch.rand((count, 1, 1), generator=generator, device=generator.device).to(device)) * size
    axis = torch.arange(size, device=device, dtype=field.dtype)
    distance2 = (axis[None, :, None] - centre[:, 0, None, None]) ** 2 + (axis[None, None, :] - centre[:, 1, None, None]) ** 2
    weighted = field * torch.exp(-distance2 / (2 * spread**2))
    area = MIN_LOCAL_AREA + (max(max_area, MIN_LOCAL_AREA) - MIN_LOCAL_AREA) * torch.rand(
        count, generator=generator, device=generator.device
    ).to(device)
    flat = weighted.flatten(1)
    keep = (area * flat.shape[1]).round().clamp(min=1).long()
    ranked = flat.sort(dim=1, descending=True).values
    cutoff = ranked.gather(1, (keep - 1)[:, None])
    return (flat >= cutoff).view(count, size, size)


def stroke_masks(count: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """bool (count, size, size) thin curved strokes, one per image: a scratch, a crack, a fibre.

    A quadratic Bezier curve from a random start through a random control point to a random end
    (its length up to the crop's diagonal), 1-3 px wide: the pixels within the drawn half-width of
    the curve. Blobs teach the SDN to copy broad foreign content; a defect a pixel or two wide is
    another shape, which a blob never shows it.
    """
    points = torch.rand((count, 3, 2), generator=generator, device=generator.device).to(device) * (size - 1)
    half_width = STROKE_WIDTH[0] + (STROKE_WIDTH[1] - STROKE_WIDTH[0]) * torch.rand(
        count, generator=generator, device=generator.device
    ).to(device)
    t = torch.linspace(0.0, 1.0, STROKE_POINTS * size, device=device)[None, :, None]
    start, control, end = points[:, 0:1], points[:, 1:2], points[:, 2:3]
    curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end  # (count, M, 2) as (row, col)
    axis = torch.arange(size, device=device, dtype=curve.dtype)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).view(1, size * size, 2)
    nearest = torch.cdist(grid.expand(count, -1, -1), curve).amin(dim=2)  # (count, size*size)
    return (nearest <= half_width[:, None]).view(count, size, size)


def _foreign_content(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Another image of the batch, turned by 90-270 degrees and recoloured: foreign for any category."""
    turns = int(torch.randint(1, 4, (1,), generator=generator, device=generator.device))
    source = torch.rot90(torch.roll(images, shifts=1, dims=0), turns, dims=(-2, -1))
    count, channels = images.shape[:2]
    gain = _uniform((count, channels, 1, 1), 0.4, 1.6, generator, images)
    offset = _uniform((count, channels, 1, 1), -0.35, 0.35, generator, images)
    return (source * gain + offset).clamp(0.0, 1.0)


def _noise_content(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Smooth coloured noise at a random scale, from single-pixel grain to broad blotches."""
    count, channels, size = images.shape[0], images.shape[1], images.shape[-1]
    coarse = int(torch.randint(2, max(3, size // 2), (1,), generator=generator, device=generator.device))
    noise = torch.rand((count, channels, coarse, coarse), generator=generator, device=generator.device)
    return F.interpolate(noise.to(images.device, images.dtype), size=images.shape[-2:], mode="bilinear", align_corners=False)


def _shaded_content(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The image itself, darkened (x 0.2-0.7) or lightened towards white: a hole, a burn or a
    bleached spot whose texture and colour stay within the category's own range, the kind of
    defect a bottleneck AE reproduces because it can code a local mean tone."""
    count = images.shape[0]
    gain = _uniform((count, 1, 1, 1), 0.2, 0.7, generator, images)
    darken = _uniform((count, 1, 1, 1), 0.0, 1.0, generator, images) < 0.5
    return torch.where(darken, images * gain, 1.0 - (1.0 - images) * gain)


_Masks = Callable[[int, int, AuxSettings, torch.Generator, torch.device], torch.Tensor]
_Content = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _blobs(count: int, size: int, settings: AuxSettings, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return blob_masks(count, size, settings.local_max_area, generator, device)


def _strokes(count: int, size: int, settings: AuxSettings, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return stroke_masks(count, size, generator, device)


_LOCAL_KINDS: dict[str, tuple[_Masks, _Content]] = {
    "foreign_patch": (_blobs, _foreign_content),
    "noise_patch": (_blobs, _noise_content),
    "stroke_patch": (_strokes, _foreign_content),
    "shade_patch": (_blobs, _shaded_content),
}
"""Each local corruption: the shape of its mask and what fills it."""
LOCAL_TRANSFORMS = tuple(_LOCAL_KINDS)


def local_corruption(
    images: torch.Tensor, kind: str, generator: torch.Generator, settings: AuxSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """(corrupted images, bool (N, H, W) mask of the pixels that were corrupted)."""
    count, size = images.shape[0], images.shape[-1]
    shape, fill = _LOCAL_KINDS[kind]
    masks = shape(count, size, settings, generator, images.device)
    content = fill(images, generator)
    opacity = _uniform((count, 1, 1, 1), 0.6, 1.0, generator, images)
    weight = masks[:, None].to(images.dtype) * opacity
    return images * (1 - weight) + content * weight, masks


def make_aux_batch(images: torch.Tensor, generator: torch.Generator, settings: AuxSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """One auxiliary view per image with a transform drawn at random from `settings.transforms`.

    Returns (aux images, bool (N, H, W) outlier masks): all True for whole-image transforms, the
    corrupted blob for local ones. Loops over transform kinds (a handful), never over images.
    """
    if not settings.transforms:
        raise ValueError("no auxiliary transforms configured (sdn.aux_transforms is empty)")
    known = set(TRANSFORMS) | set(LOCAL_TRANSFORMS)
    unknown = [name for name in settings.transforms if name not in known]
    if unknown:
        raise ValueError(f"unknown auxiliary transform(s) {unknown}; choose from {sorted(known)}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"auxiliary transforms need square images, got {tuple(images.shape[-2:])}")
    choice = torch.randint(len(settings.transforms), (images.shape[0],), generator=generator)
    choice = choice.to(images.device)
    aux = torch.empty_like(images)
    masks = torch.ones((images.shape[0], *images.shape[-2:]), dtype=torch.bool, device=images.device)
    for index, name in enumerate(settings.transforms):
        selected = choice == index
        if not selected.any():
            continue
        if name in LOCAL_TRANSFORMS:
            aux[selected], masks[selected] = local_corruption(images[selected], name, generator, settings)
        else:
            aux[selected] = TRANSFORMS[name](images[selected], generator, settings)
    return aux, masks


def oer_pair(
    images: torch.Tensor, ae_outputs: torch.Tensor, generator: torch.Generator, settings: AuxSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """The OER (input, target) pair: copy the outlier where it is one, imitate the AE elsewhere."""
    aux, masks = make_aux_batch(images, generator, settings)
    return aux, torch.where(masks[:, None], aux, ae_outputs.to(aux.dtype))
