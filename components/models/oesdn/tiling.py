"""Run an image-to-image network on overlapping tiles of the training crop's size.

Both networks learn on random `crop_size` crops, so every pixel they see in training lies within
half a crop of a zero-padded border. A whole 256 px image puts most pixels far from any border: a
context the networks never saw. Tiling at inference gives them the context they were trained in.
Tiles overlap by half and are blended with a triangular window, which sums to one across
overlaps, so the seams carry no weight of their own.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


def tile_starts(length: int, tile: int) -> list[int]:
    """Offsets of tiles of side `tile` at a stride of half a tile, the last flush with the end."""
    stride = max(1, tile // 2)
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def blend_window(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(height, width) triangular weights, highest at the centre, positive to the edge."""

    def line(length: int) -> torch.Tensor:
        ramp = torch.arange(length, device=device, dtype=torch.float32) + 0.5
        return torch.minimum(ramp, length - ramp) / (length / 2)

    return line(height)[:, None] * line(width)[None, :]


def tiled_forward(network: nn.Module, images: torch.Tensor, tile: int) -> torch.Tensor:
    """`network(images)` computed on `tile`-sided tiles and blended back; the whole image when
    `tile` is 0 or not smaller than both sides.

    Tiles go through the network in groups of at most the image's own pixel count per image, so
    tiling costs time (about 3x at 256 px with 64 px tiles) but not peak memory. Nothing depends on
    the batch size, so the ONNX export keeps a dynamic batch axis.
    """
    height, width = images.shape[-2:]
    if tile <= 0 or (tile >= height and tile >= width):
        return network(images)
    tile_h, tile_w = min(tile, height), min(tile, width)
    offsets = [(top, left) for top in tile_starts(height, tile_h) for left in tile_starts(width, tile_w)]
    tiles = torch.stack([images[:, :, top : top + tile_h, left : left + tile_w] for top, left in offsets], dim=1)
    group = max(1, (height * width) // (tile_h * tile_w))
    outputs = torch.cat(
        [network(part.flatten(0, 1)).unflatten(0, (-1, part.shape[1])) for part in tiles.split(group, dim=1)],
        dim=1,
    )
    weight = blend_window(tile_h, tile_w, images.device)
    paddings = [(left, width - left - tile_w, top, height - top - tile_h) for top, left in offsets]
    total = sum(functional.pad(outputs[:, index].float() * weight, padding) for index, padding in enumerate(paddings))
    weights = sum(functional.pad(weight, padding) for padding in paddings)
    return (total / weights).to(outputs.dtype)


class Tiled(nn.Module):
    """`network` run by `tiled_forward`: the AE as the SDN's teacher sees it at inference."""

    def __init__(self, network: nn.Module, tile: int) -> None:
        super().__init__()
        self.network = network
        self.tile = tile

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return tiled_forward(self.network, images, self.tile)
