"""Tiled inference (`score.tile_size`): the networks see only tiles, and the blend loses nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from components.config import ConfigError, load_params
from components.models.oesdn.detector import OESDNDetector
from components.models.oesdn.tiling import tile_starts, tiled_forward
from components.scoring import ScoringSettings
from tests.conftest import write_params


class _Recorder(nn.Module):
    """A 1x1 convolution (each output pixel depends on its own input pixel only) that records the
    sides it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.sides: set[tuple[int, int]] = set()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.sides.add(tuple(images.shape[-2:]))
        return self.conv(images)


def test_tiles_cover_every_side_at_half_a_tile_with_the_last_flush() -> None:
    assert tile_starts(256, 64) == [0, 32, 64, 96, 128, 160, 192]
    assert tile_starts(80, 64) == [0, 16]
    assert tile_starts(64, 64) == [0]


@pytest.mark.parametrize("shape", [(2, 3, 256, 256), (1, 3, 80, 112), (3, 3, 48, 112)])
def test_a_pixelwise_network_gives_the_same_output_tiled_as_whole(shape: tuple[int, ...]) -> None:
    network = _Recorder()
    images = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tiled = tiled_forward(network, images, 64)
        assert network.sides == {(min(64, shape[2]), min(64, shape[3]))}  # never the whole image
        torch.testing.assert_close(tiled, network.conv(images), rtol=0, atol=1e-6)


def test_a_tile_as_large_as_the_image_or_zero_runs_the_whole_image() -> None:
    network = _Recorder()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        tiled_forward(network, images, 64)
        tiled_forward(network, images, 0)
    assert network.sides == {(64, 64)}


def test_the_detector_runs_both_networks_on_tiles_of_its_settings() -> None:
    ae, sdn = _Recorder(), _Recorder()
    settings = ScoringSettings("squared", 1.0, "topk_mean", 0.02, 7, ("squared", "ssim"), tile_size=32)
    detector = OESDNDetector(ae, sdn, settings).eval()
    with torch.no_grad():
        maps, scores = detector(torch.rand(2, 3, 96, 96))
    assert maps.shape == (2, 96, 96) and scores.shape == (2,)
    assert ae.sides == sdn.sides == {(32, 32)}


def test_a_tile_size_the_networks_cannot_halve_names_its_key(project_params: dict[str, Any], tmp_path: Path) -> None:
    project_params["score"]["tile_size"] = 40
    with pytest.raises(ConfigError, match="score.tile_size"):
        load_params(write_params(tmp_path / "params.yaml", project_params))
