"""A model bundle: one folder with everything needed to score new images the way evaluate did.

`ae.pt` and `sdn.pt` (the weights), and `bundle.json`: preprocessing, smoothing and reduction, the
image and pixel thresholds, the evaluation metrics and the lineage. The evaluate stage writes it
beside the networks, so `models/<category>/` is a bundle; the MLflow pyfunc, `oesdn predict` and the
ONNX export all read this one format, so they cannot drift apart.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from components.data.images import load_image
from components.io import sha256_file, write_json_atomic
from components.models.oesdn.detector import OESDNDetector, score_images
from components.models.oesdn.persistence import load_network
from components.runtime import prepare_module, select_device
from components.scoring import ImageScoreCalibration, ScoringSettings

BUNDLE_FILE = "bundle.json"
NETWORK_FILES = ("ae.pt", "sdn.pt")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Preprocessing:
    """How a file becomes network input: decode, convert, resize (bicubic), then divide by 255."""

    image_size: int
    channels: int
    resample: str = "bicubic"
    scale: str = "uint8 / 255 -> [0, 1]"


@dataclass(frozen=True)
class BundleInfo:
    category: str
    preprocessing: Preprocessing
    scoring: ScoringSettings
    image_threshold: float
    """An image scoring above this is anomalous (a quantile of held-out normal scores)."""
    pixel_threshold: float
    """A map pixel above this is marked anomalous in predicted masks."""
    metrics: dict[str, dict[str, float | None]]
    """Per scoring method, as in `reports/<category>/metrics.json`."""
    masks_available: bool
    test_manifest_hash: str
    """Which test images the metrics come from: promotion compares metrics only on equal hashes."""
    data_hash: str
    network_sha256: dict[str, str]
    provenance: dict[str, Any] = field(default_factory=dict)
    image_calibration: ImageScoreCalibration | None = None
    """How OE-SDN's image score standardises its distances (fitted on the validation normals);
    None when the image score is the map's own reduction."""
    map_scales: tuple[float, ...] | None = None
    """Per `scoring.map_sigmas` blur, its map's validation-normal scale; None for a single blur's map."""

    def __post_init__(self) -> None:
        blurs, scales = self.scoring.map_sigmas, self.map_scales
        if (len(scales) if scales is not None else 0) != len(blurs):
            raise ValueError(
                f"bundle of {self.category!r}: scoring.map_sigmas {list(blurs)} needs one map_scales entry per blur, "
                f"got {None if scales is None else list(scales)} (re-run `oesdn evaluate --category {self.category}`)"
            )

    @property
    def primary_metric(self) -> str:
        """Pixel AUROC where masks exist (it judges WHERE), else image AUROC; with no defective
        test image at all, the label-free synthetic-defect pixel AUROC on the validation normals."""
        if self.metrics["oe_sdn"].get("image_auroc") is None and self.metrics["oe_sdn"].get("synthetic_pixel_auroc") is not None:
            return "synthetic_pixel_auroc"
        return "pixel_auroc" if self.masks_available else "image_auroc"

    @property
    def primary_value(self) -> float:
        value = self.metrics["oe_sdn"][self.primary_metric]
        if value is None:
            raise ValueError(f"bundle of {self.category!r} has no OE-SDN {self.primary_metric}")
        return float(value)

    @property
    def pair_id(self) -> str:
        """Identifies the AE/SDN pair and how it scores: equal ids mean an identical model."""
        from components.provenance import fingerprint

        # left out while unset, so older bundles' ids hold
        later_fields = ("image_distances", "tile_size", "difference_sigma", "map_sigmas")
        scoring = {k: v for k, v in asdict(self.scoring).items() if k not in later_fields or v}
        parts = [self.network_sha256, asdict(self.preprocessing), scoring, self.image_threshold]
        if self.image_calibration is not None:
            parts.append(asdict(self.image_calibration))
        if self.map_scales is not None:
            parts.append(list(self.map_scales))
        return fingerprint(*parts)[:16]

    def to_json(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> BundleInfo:
        if payload.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported bundle format {payload.get('format_version')!r}; expected {FORMAT_VERSION}")
        fields = {k: v for k, v in payload.items() if k != "format_version"}
        scoring = fields["scoring"] | {
            "image_distances": tuple(fields["scoring"].get("image_distances", ())),
            "map_sigmas": tuple(fields["scoring"].get("map_sigmas", ())),
        }
        calibration = fields.get("image_calibration")
        return cls(
            **fields
            | {
                "preprocessing": Preprocessing(**fields["preprocessing"]),
                "scoring": ScoringSettings(**scoring),
                "image_calibration": ImageScoreCalibration(**{k: tuple(v) for k, v in calibration.items()})
                if calibration
                else None,
                "map_scales": tuple(fields["map_scales"]) if fields.get("map_scales") else None,
            }
        )


def write_bundle_info(directory: Path, info: BundleInfo) -> None:
    """Write `bundle.json` into a folder that already holds the two networks it describes."""
    for name in NETWORK_FILES:
        actual = sha256_file(directory / name)
        if actual != info.network_sha256[name.removesuffix(".pt")]:
            raise ValueError(f"{directory / name} does not match the bundle's recorded hash")
    write_json_atomic(directory / BUNDLE_FILE, info.to_json())


def read_bundle_info(directory: Path) -> BundleInfo:
    import json

    path = Path(directory) / BUNDLE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: a model folder needs bundle.json, ae.pt and sdn.pt "
            "(the evaluate stage writes it; run `oesdn evaluate --category C` or `dvc repro`)"
        )
    return BundleInfo.from_json(json.loads(path.read_text()))


ImageSource = str | os.PathLike[str] | bytes


@dataclass
class BundleModel:
    """A loaded bundle: decode images like prepare did, then score them like evaluate did."""

    info: BundleInfo
    detector: OESDNDetector
    device: torch.device

    @classmethod
    def load(cls, directory: str | os.PathLike[str], device: str = "auto") -> BundleModel:
        directory = Path(directory)
        info = read_bundle_info(directory)
        for name in NETWORK_FILES:
            if sha256_file(directory / name) != info.network_sha256[name.removesuffix(".pt")]:
                raise ValueError(f"{directory / name} differs from the network recorded in {directory / BUNDLE_FILE}")
        ae, _ = load_network(directory / "ae.pt", "ae")
        sdn, _ = load_network(directory / "sdn.pt", "sdn")
        torch_device = select_device(device)
        detector = prepare_module(
            OESDNDetector(ae, sdn, info.scoring, info.image_calibration, info.map_scales), torch_device
        ).eval()
        return cls(info, detector, torch_device)

    def decode(self, source: ImageSource) -> np.ndarray:
        """uint8 (C, H, W) from a path or encoded bytes; raises DatasetError naming a bad image."""
        pre = self.info.preprocessing
        handle: str | os.PathLike[str] | BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else source
        return load_image(handle, pre.image_size, pre.channels)

    def score(self, images: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(scores float64 (N,), maps float32 (N, H, W)) for uint8 (N, C, H, W) images."""
        size = self.info.preprocessing.image_size
        if len(images) == 0:
            return np.zeros(0), np.zeros((0, size, size), dtype=np.float32)
        scored = score_images(self.detector, images, batch_size, self.device, progress=False, methods=("oe_sdn",))["oe_sdn"]
        return scored.scores, scored.maps
