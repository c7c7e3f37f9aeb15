"""The deployable AE/SDN pair: images in, anomaly maps and image scores out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from components.runtime import autocast, evaluation_mode, prepare_module, to_device, to_float
from components.scoring import METHODS, ScoringSettings, method_maps, oe_sdn_map, reduce_maps, smooth_maps


@dataclass(frozen=True)
class MethodScores:
    maps: np.ndarray
    """float32 (N, H, W) smoothed anomaly maps."""
    scores: np.ndarray
    """float64 (N,) image scores, the reduction of `maps`."""


class OESDNDetector(nn.Module):
    """f_AE and f_OS with the map smoothing and score reduction they were evaluated with."""

    def __init__(self, ae: nn.Module, sdn: nn.Module, settings: ScoringSettings) -> None:
        super().__init__()
        self.ae = ae
        self.sdn = sdn
        self.settings = settings

    def anomaly_maps(self, images: torch.Tensor) -> torch.Tensor:
        """OE-SDN's smoothed (N, H, W) maps for images in [0, 1]; the ONNX export wraps this too."""
        raw = oe_sdn_map(self.sdn(images), self.ae(images), self.settings.distance, self.settings.ssim_window)
        return smooth_maps(raw, self.settings.smoothing_sigma)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """OE-SDN only: (anomaly maps (N, H, W), image scores (N,)) for images in [0, 1]."""
        maps = self.anomaly_maps(images)
        return maps, reduce_maps(maps, self.settings.reduction, self.settings.topk_fraction)

    def all_method_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Maps of OE-SDN and both AE baselines from one pass of each network."""
        return method_maps(images, self.ae(images), self.sdn(images), self.settings)


def score_images(
    detector: OESDNDetector,
    images: np.ndarray,
    batch_size: int,
    device: torch.device,
    progress: bool = True,
    methods: tuple[str, ...] = METHODS,
) -> dict[str, MethodScores]:
    """Score uint8 (N, C, H, W) images with `methods` (OE-SDN and both baselines), batch by batch.

    The one scoring loop of the project: evaluate, the label-free check, the bundle behind
    `oesdn predict` and the MLflow pyfunc all call it.
    """
    prepare_module(detector, device)
    maps: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    starts = range(0, len(images), batch_size)
    with evaluation_mode(detector), autocast(device):
        for start in tqdm(starts, desc="score", unit="batch", disable=not progress):
            batch = to_device(to_float(images[start : start + batch_size]), device)
            if methods == ("oe_sdn",):
                batch_maps = {"oe_sdn": detector(batch)[0]}
            else:
                batch_maps = {name: value for name, value in detector.all_method_maps(batch).items() if name in methods}
            for name, value in batch_maps.items():
                maps[name].append(value.float().cpu().numpy())
    settings = detector.settings
    result = {}
    for name, chunks in maps.items():
        stacked = np.concatenate(chunks) if chunks else np.zeros((0, *images.shape[2:]), dtype=np.float32)
        scores = reduce_maps(torch.from_numpy(stacked), settings.reduction, settings.topk_fraction)
        result[name] = MethodScores(maps=stacked, scores=scores.double().numpy())
    return result
