"""The deployable AE/SDN pair: images in, anomaly maps and image scores out."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from components.models.oesdn.tiling import tiled_forward
from components.runtime import autocast, evaluation_mode, prepare_module, to_device, to_float
from components.scoring import (
    MAP_SCALE_QUANTILE,
    METHODS,
    ImageScoreCalibration,
    ScoringSettings,
    method_maps,
    multiscale_map,
    oe_sdn_map,
    reduce_maps,
    smooth_maps,
)


@dataclass(frozen=True)
class MethodScores:
    maps: np.ndarray
    """float32 (N, H, W) smoothed anomaly maps."""
    scores: np.ndarray
    """float64 (N,) image scores, the reduction of `maps`."""


class OESDNDetector(nn.Module):
    """f_AE and f_OS with the map smoothing, score reduction and image-score calibration they were
    evaluated with."""

    def __init__(
        self,
        ae: nn.Module,
        sdn: nn.Module,
        settings: ScoringSettings,
        calibration: ImageScoreCalibration | None = None,
        map_scales: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        self.ae = ae
        self.sdn = sdn
        self.settings = settings
        self.calibration = calibration
        self.map_scales = map_scales
        """Per `settings.map_sigmas` blur, its map's validation-normal scale (fitted by `calibrate`)."""
        self.topk_count: int | None = None
        """A fixed top-k pixel count (the ONNX export's: the tracer cannot round a traced shape)."""
        self._remembered: dict[bytes, tuple[torch.Tensor, torch.Tensor]] | None = None

    @contextlib.contextmanager
    def remembering_outputs(self) -> Iterator[OESDNDetector]:
        """Within it, a batch seen before is not run through the networks again.

        Evaluate scores the validation normals four times (the blur choice, the calibration, the
        scores, the label-free check's baseline) and their defective copies twice; the networks'
        outputs do not change in between, and ran for 32 of evaluate's 59 s on bundled brick. The
        outputs are kept until the block ends: a few hundred MB for a few hundred 256 px images.
        """
        self._remembered = {}
        try:
            yield self
        finally:
            self._remembered = None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """OE-SDN only: (anomaly maps (N, H, W), image scores (N,)) for images in [0, 1]."""
        sdn_output, ae_output = self.network_outputs(images)
        score_map = self._map(sdn_output, ae_output, self.settings.distance)
        return self.pixel_map(score_map, sdn_output, ae_output), self.image_scores(score_map, sdn_output, ae_output)

    def all_method_maps(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Maps of OE-SDN and both AE baselines from one pass of each network, and OE-SDN's scores."""
        sdn_output, ae_output = self.network_outputs(images)
        maps = method_maps(images, ae_output, sdn_output, self.settings)
        score_map = maps["oe_sdn"]
        maps["oe_sdn"] = self.pixel_map(score_map, sdn_output, ae_output)
        return maps, self.image_scores(score_map, sdn_output, ae_output)

    def pixel_map(self, score_map: torch.Tensor, sdn_output: torch.Tensor, ae_output: torch.Tensor) -> torch.Tensor:
        """The map that shows where: `score_map` (the map at `difference_sigma`), or with
        `settings.map_sigmas` the multi-scale map of those blurs (`multiscale_map`)."""
        if not self.settings.map_sigmas:
            return score_map
        if self.map_scales is None:
            raise RuntimeError("a multi-scale map needs its validation scales: call calibrate() first")
        return multiscale_map(self.sigma_maps(score_map, sdn_output, ae_output), self.map_scales)

    def sigma_maps(self, score_map: torch.Tensor, sdn_output: torch.Tensor, ae_output: torch.Tensor) -> list[torch.Tensor]:
        """The smoothed map at each of `settings.map_sigmas`; the scoring blur's reuses `score_map`."""
        settings = self.settings
        return [
            score_map
            if sigma == settings.difference_sigma
            else smooth_maps(
                oe_sdn_map(sdn_output, ae_output, settings.distance, settings.ssim_window, sigma), settings.smoothing_sigma
            )
            for sigma in settings.map_sigmas
        ]

    def network_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f_OS(x), f_AE(x)), each network run on tiles of `settings.tile_size` (0: whole images)."""
        if self._remembered is None:
            return self._run_networks(images)
        key = _batch_key(images)
        if key not in self._remembered:
            self._remembered[key] = self._run_networks(images)
        return self._remembered[key]

    def _run_networks(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tile = self.settings.tile_size
        return tiled_forward(self.sdn, images, tile), tiled_forward(self.ae, images, tile)

    def image_scores(self, maps: torch.Tensor, sdn_output: torch.Tensor, ae_output: torch.Tensor) -> torch.Tensor:
        """(N,) image scores: the map's reduction, or with a calibration the standardised mean of
        each listed distance's reduction (`ImageScoreCalibration`)."""
        if self.calibration is None:
            return self.reduce(maps)
        return self.calibration.combine(self.distance_scores(maps, sdn_output, ae_output, self.calibration.distances))

    def distance_scores(
        self, maps: torch.Tensor, sdn_output: torch.Tensor, ae_output: torch.Tensor, distances: tuple[str, ...]
    ) -> torch.Tensor:
        """(D, N) raw image scores, one row per distance; the shipped map's row reuses `maps`."""
        rows = [
            maps if distance == self.settings.distance else self._map(sdn_output, ae_output, distance) for distance in distances
        ]
        return torch.stack([self.reduce(row.float()) for row in rows])

    def reduce(self, maps: torch.Tensor) -> torch.Tensor:
        settings = self.settings
        if self.topk_count is not None and settings.reduction == "topk_mean":
            return maps.flatten(start_dim=1).topk(self.topk_count, dim=1).values.mean(dim=1)
        return reduce_maps(maps, settings.reduction, settings.topk_fraction)

    def _map(self, sdn_output: torch.Tensor, ae_output: torch.Tensor, distance: str) -> torch.Tensor:
        settings = self.settings
        raw = oe_sdn_map(sdn_output, ae_output, distance, settings.ssim_window, settings.difference_sigma)
        return smooth_maps(raw, settings.smoothing_sigma)


def _batch_key(images: torch.Tensor) -> bytes:
    """A digest of a batch's shape and values: equal batches, equal keys."""
    digest = hashlib.blake2b(str(tuple(images.shape)).encode(), digest_size=20)
    digest.update(images.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.digest()


def device_batches(
    detector: OESDNDetector, images: np.ndarray, batch_size: int, device: torch.device, progress: bool = False
) -> Iterator[torch.Tensor]:
    """uint8 (N, C, H, W) images as float batches on `device`, with the detector in eval mode and
    autocast on while the caller works on each batch."""
    prepare_module(detector, device)
    starts = range(0, len(images), batch_size)
    with evaluation_mode(detector), autocast(device):
        for start in tqdm(starts, desc="score", unit="batch", disable=not progress):
            yield to_device(to_float(images[start : start + batch_size]), device)


def calibrate(detector: OESDNDetector, val_images: np.ndarray, batch_size: int, device: torch.device) -> OESDNDetector:
    """Fit, in place, on uint8 validation normals: the image-score calibration when the settings
    combine several distances, and the multi-scale map's scales when they list `map_sigmas`
    (each cleared otherwise); returns `detector` for chaining."""
    settings = detector.settings
    detector.calibration, detector.map_scales = None, None
    if not settings.calibrated and not settings.map_sigmas:
        return detector
    if len(val_images) == 0:
        raise ValueError("calibrating the image score or the multi-scale map needs at least one validation image")
    distances = tuple(settings.image_distances)
    rows: list[torch.Tensor] = []
    sigma_chunks: list[list[np.ndarray]] = [[] for _ in settings.map_sigmas]
    for batch in device_batches(detector, val_images, batch_size, device):
        sdn_output, ae_output = detector.network_outputs(batch)
        score_map = detector._map(sdn_output, ae_output, settings.distance)
        if settings.calibrated:
            rows.append(detector.distance_scores(score_map, sdn_output, ae_output, distances).float().cpu())
        for chunks, sigma_map in zip(sigma_chunks, detector.sigma_maps(score_map, sdn_output, ae_output), strict=True):
            chunks.append(sigma_map.float().cpu().numpy())
    if rows:
        detector.calibration = ImageScoreCalibration.fit(distances, torch.cat(rows, dim=1))
    if sigma_chunks:
        quantiles = (float(np.quantile(np.concatenate(chunks), MAP_SCALE_QUANTILE)) for chunks in sigma_chunks)
        detector.map_scales = tuple(max(q, 1e-12) for q in quantiles)
    return detector


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
    maps: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    oe_scores: list[np.ndarray] = []
    for batch in device_batches(detector, images, batch_size, device, progress):
        if methods == ("oe_sdn",):
            oe_maps, scores = detector(batch)
            batch_maps = {"oe_sdn": oe_maps}
        else:
            all_maps, scores = detector.all_method_maps(batch)
            batch_maps = {name: value for name, value in all_maps.items() if name in methods}
        oe_scores.append(scores.double().cpu().numpy())
        for name, value in batch_maps.items():
            maps[name].append(value.float().cpu().numpy())
    settings = detector.settings
    result = {}
    for name, chunks in maps.items():
        stacked = np.concatenate(chunks) if chunks else np.zeros((0, *images.shape[2:]), dtype=np.float32)
        if name == "oe_sdn":  # the detector's own image score, calibrated or not
            scores = np.concatenate(oe_scores) if oe_scores else np.zeros(0)
        else:
            scores = reduce_maps(torch.from_numpy(stacked), settings.reduction, settings.topk_fraction).double().numpy()
        result[name] = MethodScores(maps=stacked, scores=scores)
    return result
