"""`oesdn predict --maps` overlays: the report's colour scale, the predicted region outlined, score,
verdict and a colour bar drawn on the image, at the image's own size."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageColor

from components.inference.maps import render
from components.reporting import PREDICTED_OUTLINE, heat_lut, heat_rgb


def _overlay(score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    base = Image.new("RGB", (200, 160), (128, 128, 128))
    anomaly_map = np.full((20, 25), 0.05, dtype=np.float32)
    anomaly_map[12:18, 5:12] = 0.5  # one region above the pixel threshold, below the text band
    overlay, mask = render(base, anomaly_map, score, image_threshold=0.2, pixel_threshold=0.1, lut=heat_lut())
    assert overlay.size == mask.size == base.size and overlay.mode == "RGB"
    return np.asarray(overlay), np.asarray(mask), np.asarray(base)


def test_overlay_uses_the_shared_scale_and_outlines_the_predicted_region() -> None:
    overlay, mask, base = _overlay(0.3)
    calm = (base[100, 20].astype(float) + heat_rgb(np.float32(0.05), 0.1, heat_lut())) / 2  # map at a quarter scale
    assert np.abs(overlay[100, 20] - calm).max() <= 1
    assert set(np.unique(mask)) == {0, 255} and mask[120, 70] == 255 and mask[100, 20] == 0
    cyan = np.all(overlay == ImageColor.getrgb(PREDICTED_OUTLINE), axis=-1)
    assert cyan[mask == 255].any() and not cyan[mask == 0].any(), "the outline runs on the predicted region's edge"


def test_overlay_prints_score_and_verdict_and_draws_a_colour_bar() -> None:
    flagged, passed = _overlay(0.3)[0], _overlay(0.1)[0]
    band = slice(0, 20)
    assert (flagged[band] != passed[band]).any(), "score and verdict text differ between the two"
    assert flagged[band, :, 0].mean() < 128, "the text sits on a dark band"
    bar, lut = flagged[:, 196].astype(int), heat_lut().astype(int)
    assert np.abs(bar[157] - lut[0]).max() <= 3, "the bar starts at 0 at the bottom"
    assert (np.abs(bar[:80] - lut[255]).max(axis=1) <= 3).any(), "and reaches saturation at the top"
