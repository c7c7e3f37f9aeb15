"""The two networks of OE-SDN.

`ConvAutoencoder` squeezes the image through a narrow convolutional bottleneck, so it cannot copy
anomalies: it rebuilds normal content, but blurred. `StyleDistillationNet` is a U-Net with skip
connections and no narrow bottleneck, so it has the capacity to copy fine detail; trained to imitate
the AE on normal images (and to stay an identity on outliers), it learns the AE's blur but not its
content translation.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, batch norm, leaky ReLU: the unit both networks are built from."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2, inplace=True),
    )


def up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Nearest up-sampling then a convolution: deterministic on every device, no checkerboard."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv_block(in_channels, out_channels))


def level_width(base_channels: int, level: int) -> int:
    """Channels double per down-sampling level, capped at 8x so deep nets stay small."""
    return base_channels * 2 ** min(level, 3)


class ConvAutoencoder(nn.Module):
    """Bottleneck conv AE: `depth` stride-2 stages, then a 1x1 squeeze to `latent_channels`."""

    def __init__(self, channels: int, base_channels: int, latent_channels: int, depth: int) -> None:
        super().__init__()
        widths = [level_width(base_channels, level) for level in range(depth)]
        encoder: list[nn.Module] = []
        previous = channels
        for width in widths:
            encoder += [conv_block(previous, width, stride=2), conv_block(width, width)]
            previous = width
        encoder.append(nn.Conv2d(previous, latent_channels, 1))
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = [conv_block(latent_channels, previous)]
        for width in reversed(widths):
            decoder += [up_block(previous, width), conv_block(width, width)]
            previous = width
        decoder += [nn.Conv2d(previous, channels, 3, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*decoder)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


class StyleDistillationNet(nn.Module):
    """U-Net whose skip connections let it reproduce any input, which the AE cannot.

    With `residual`, it predicts a correction added to its input, starting as the identity: the
    AE's style (local blur) is then a small learned correction, while changing content, which
    the paper wants it NOT to learn, would take a large one.
    """

    def __init__(self, channels: int, base_channels: int, depth: int, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        widths = [level_width(base_channels, level) for level in range(depth + 1)]
        self.stem = nn.Sequential(conv_block(channels, widths[0]), conv_block(widths[0], widths[0]))
        self.down = nn.ModuleList(
            nn.Sequential(conv_block(widths[i], widths[i + 1], stride=2), conv_block(widths[i + 1], widths[i + 1]))
            for i in range(depth)
        )
        self.up = nn.ModuleList(up_block(widths[i + 1], widths[i]) for i in reversed(range(depth)))
        self.merge = nn.ModuleList(conv_block(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], channels, 3, padding=1)
        if residual:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.stem(images)
        skips = []
        for down in self.down:
            skips.append(features)
            features = down(features)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            features = merge(torch.cat([up(features), skip], dim=1))
        if self.residual:
            return (images + self.head(features)).clamp(0.0, 1.0)
        return torch.sigmoid(self.head(features))
