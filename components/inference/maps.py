"""Heat-map overlays and binary masks, at the original image's resolution, for people on the line.

An overlay is read without the report next to it, so it carries what a person needs: the image score
and the model's verdict ("pred: defective"), the predicted region outlined, and a colour bar. Colours
are those of the panel and the evaluation page (`components.reporting`: one colour map, the pixel
threshold at mid-scale on every image), so a calm image looks calm everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from components.inference.sources import Source
from components.io import atomic_path
from components.models.oesdn.bundle import BundleInfo
from components.reporting import PREDICTED_OUTLINE, heat_lut, heat_rgb, region_outline, verdict
from components.safe_paths import safe_relative_path

OVERLAY_ALPHA = 0.5
BAND_ALPHA = 0.6
"""Opacity of the dark band behind the overlay's text: readable on any image, which stays visible."""


@dataclass
class MapWriter:
    """Writes `<out>/<name>_overlay.png` and `<out>/<name>_mask.png` for each scored image.

    `<name>` is the source's name without its extension; `sources` made names unique regardless of
    case and extension (`x.png`, `x.PNG`, `x.jpg` -> `x`, `x-1`, `x-2`, in predictions.csv order).
    """

    out_dir: Path
    info: BundleInfo

    def __post_init__(self) -> None:
        self._lut = heat_lut()

    def paths(self, source: Source) -> tuple[Path, Path]:
        stem = safe_relative_path(source.name, what="map name").with_suffix("")  # checked again where it is written
        return self.out_dir / f"{stem}_overlay.png", self.out_dir / f"{stem}_mask.png"

    def __call__(self, source: Source, anomaly_map: np.ndarray) -> None:
        with Image.open(source.path) as original:
            base = original.convert("RGB")
        score = image_score(anomaly_map, self.info)
        overlay, mask = render(base, anomaly_map, score, self.info.image_threshold, self.info.pixel_threshold, self._lut)
        overlay_path, mask_path = self.paths(source)
        for image, target in ((overlay, overlay_path), (mask, mask_path)):
            with atomic_path(target) as tmp:
                image.save(tmp, format="PNG")


def image_score(anomaly_map: np.ndarray, info: BundleInfo) -> float:
    """The image score of one map, reduced exactly as the model reduces it (the sink gets maps only)."""
    import torch

    from components.scoring import reduce_maps

    flat = torch.from_numpy(np.ascontiguousarray(anomaly_map, dtype=np.float32))[None]
    return float(reduce_maps(flat, info.scoring.reduction, info.scoring.topk_fraction)[0])


def render(
    base: Image.Image, anomaly_map: np.ndarray, score: float, image_threshold: float, pixel_threshold: float, lut: np.ndarray
) -> tuple[Image.Image, Image.Image]:
    """(overlay RGB, mask L with 0/255) at `base`'s size; the map is resized bilinearly first."""
    resized = np.asarray(Image.fromarray(np.asarray(anomaly_map, dtype=np.float32)).resize(base.size, Image.Resampling.BILINEAR))
    predicted = resized > pixel_threshold
    blended = (1.0 - OVERLAY_ALPHA) * np.asarray(base, dtype=np.float32) + OVERLAY_ALPHA * heat_rgb(resized, pixel_threshold, lut)
    overlay = Image.fromarray(blended.round().astype(np.uint8))
    _draw_outline(overlay, predicted)
    _annotate(overlay, score, image_threshold, lut)
    mask = Image.fromarray((predicted * 255).astype(np.uint8))
    return overlay, mask


def _draw_outline(overlay: Image.Image, predicted: np.ndarray) -> None:
    """The predicted region's outline in the report's outline colour, thicker on large images."""
    edge = Image.fromarray((region_outline(predicted) * 255).astype(np.uint8))
    width = 1 + 2 * (min(overlay.size) // 300)
    if width > 1:
        edge = edge.filter(ImageFilter.MaxFilter(width))
    overlay.paste(PREDICTED_OUTLINE, mask=edge)


def _annotate(overlay: Image.Image, score: float, image_threshold: float, lut: np.ndarray) -> None:
    """Score and verdict in a band at the top; a colour bar (0 to twice the pixel threshold) at the right."""
    w, h = overlay.size
    font = ImageFont.load_default(size=max(8, min(w, h) // 14))
    flagged = score > image_threshold
    lines = (f"score {score:.4g}", f"pred: {verdict(flagged)}", f"(threshold {image_threshold:.4g})")
    draw = ImageDraw.Draw(overlay, "RGBA")
    line_h = font.getbbox("Ag")[3] + 2
    band_h = min(h, 3 * line_h + 4)
    draw.rectangle((0, 0, w, band_h), fill=(0, 0, 0, round(255 * BAND_ALPHA)))
    for row, text in enumerate(lines):
        color = "#ff8a80" if flagged and row == 1 else "white"
        draw.text((3, 2 + row * line_h), text, fill=color, font=font)
    bar_w = max(3, w // 24)
    top, bottom = band_h + 2, h - 2
    if bottom - top < 8:
        return
    # Top of the bar is saturation (twice the pixel threshold), the middle tick is the pixel threshold.
    colours = lut[np.linspace(255, 0, bottom - top).round().astype(np.uint8)]
    strip = Image.fromarray(np.repeat(colours[:, None, :], bar_w, axis=1))
    overlay.paste(strip, (w - bar_w - 2, top))
    middle = (top + bottom) // 2
    draw.line((w - 2 * bar_w - 2, middle, w - 3, middle), fill="white", width=max(1, h // 200))
