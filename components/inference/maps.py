"""Heat-map overlays and binary masks, at the original image's resolution, for people on the line.

Colours use one fixed scale for every image (the bundle's pixel threshold sits at mid-scale, twice
it saturates), so a calm image looks calm: per-image min-max scaling would paint the strongest
texture of a normal image as red as a real defect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from components.inference.sources import Source
from components.io import atomic_path

OVERLAY_ALPHA = 0.5
COLORMAP = "inferno"


@dataclass
class MapWriter:
    """Writes `<out>/<name>_overlay.png` and `<out>/<name>_mask.png` for each scored image."""

    out_dir: Path
    pixel_threshold: float

    def __post_init__(self) -> None:
        from matplotlib import colormaps

        # A 256-entry RGB lookup table: colouring is one vectorised indexing operation.
        self._lut = (colormaps[COLORMAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)

    def paths(self, source: Source) -> tuple[Path, Path]:
        stem = PurePosixPath(source.name).with_suffix("")
        return self.out_dir / f"{stem}_overlay.png", self.out_dir / f"{stem}_mask.png"

    def __call__(self, source: Source, anomaly_map: np.ndarray) -> None:
        with Image.open(source.path) as original:
            base = original.convert("RGB")
        overlay, mask = render(base, anomaly_map, self.pixel_threshold, self._lut)
        overlay_path, mask_path = self.paths(source)
        for image, target in ((overlay, overlay_path), (mask, mask_path)):
            with atomic_path(target) as tmp:
                image.save(tmp, format="PNG")


def render(base: Image.Image, anomaly_map: np.ndarray, pixel_threshold: float, lut: np.ndarray) -> tuple[Image.Image, Image.Image]:
    """(overlay RGB, mask L with 0/255) at `base`'s size; the map is resized bilinearly first."""
    resized = np.asarray(Image.fromarray(np.asarray(anomaly_map, dtype=np.float32)).resize(base.size, Image.Resampling.BILINEAR))
    scale = 2.0 * pixel_threshold if pixel_threshold > 0 else float(resized.max() or 1.0)
    index = np.clip(resized / scale * 255.0, 0, 255).astype(np.uint8)
    blended = (1.0 - OVERLAY_ALPHA) * np.asarray(base, dtype=np.float32) + OVERLAY_ALPHA * lut[index].astype(np.float32)
    overlay = Image.fromarray(blended.round().astype(np.uint8))
    mask = Image.fromarray(((resized > pixel_threshold) * 255).astype(np.uint8))
    return overlay, mask
