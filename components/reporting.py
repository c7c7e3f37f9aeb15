"""Figures and tables that turn evaluation results into something a person can check at a glance.

Every artifact is written atomically (via `components.io`) so a crashed run never leaves a
half-written PNG or CSV for DVC to cache. Matplotlib is imported lazily inside the functions and
used through `matplotlib.figure.Figure` (Agg canvas, no pyplot), so importing this module is cheap,
it never touches global plotting state, and no figure outlives the call that drew it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.io import atomic_path, write_text_atomic

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

METHOD_LABELS: dict[str, str] = {
    "oe_sdn": "OE-SDN",
    "ae_l2": "AE residual (L2)",
    "ae_ssim": "AE SSIM residual",
}
"""Long method names, for figure legends."""

METHOD_SHORT_LABELS: dict[str, str] = {"oe_sdn": "OE-SDN", "ae_l2": "AE-L2", "ae_ssim": "AE-SSIM"}
"""Short method names, for table headers where width matters."""

METRIC_LABELS: dict[str, str] = {
    "image_auroc": "image AUROC",
    "pixel_auroc": "pixel AUROC",
    "aupro": "AUPRO",
    "f1": "F1",
    "false_alarm_rate": "false alarms",
    "recall": "recall",
}
"""The summary table's column groups, in display order (metrics.json holds more)."""
LOWER_IS_BETTER = frozenset({"false_alarm_rate"})
BASELINE_MARGIN = 0.005
"""OE-SDN counts as behind a baseline only when the baseline's figure is higher by more than this
(issue 12's "at least the AE residuals', within 0.005"): every warning, page and table uses it."""

# One fixed colour per method so the same method looks the same in every figure of a report.
_METHOD_COLORS: dict[str, str] = {"oe_sdn": "#d62728", "ae_l2": "#1f77b4", "ae_ssim": "#2ca02c"}
_FALLBACK_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")

_DPI = 120
MISSING = "—"
"""How every report shows a figure that is absent (no masks, no defective test images)."""

HEATMAP_COLORMAP = "inferno"
"""The one colour map of every heat map: the panel, the evaluation page and `oesdn predict --maps`."""
HEATMAP_SATURATION = 2.0
"""Every heat map shows map / pixel threshold clipped to [0, 2]: the threshold sits at mid-scale on
every image, so a calm image looks calm (per-image min-max scaling would paint the strongest texture
of a normal image as bright as a real defect)."""
PREDICTED_OUTLINE = "#00e5ff"
"""Outline of the predicted region (pixels above the pixel threshold): cyan stands out on inferno."""

OUTCOME_COLORS: dict[str, str] = {"miss": "#c62828", "false alarm": "#e65100", "hit": "#2e7d32", "correct pass": "#546e7a"}
"""What the verdict did for an image with a known label, errors first; one colour each, in every report."""


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


def _new_figure(width_in: float, height_in: float) -> Figure:
    """A pyplot-free figure on the Agg canvas: no global registry, nothing to leak or close."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Figure, path: Path, metadata: Mapping[str, str] | None = None) -> None:
    """Write the figure as PNG atomically (the temp file has no .png suffix, so say the format).

    `metadata` lands in PNG text chunks, so a picture carries the provenance of what it shows.
    """
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=_DPI, facecolor="white", metadata=dict(metadata or {}))
    finally:
        fig.clear()


def _method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _method_color(method: str, position: int) -> str:
    return _METHOD_COLORS.get(method, _FALLBACK_COLORS[position % len(_FALLBACK_COLORS)])


def _as_1d_float(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def verdict(flagged: bool) -> str:
    """The model's call, in a quality engineer's words; callers prefix it with "pred" so it never reads as truth."""
    return "defective" if flagged else "good"


def outcome(label: int, flagged: bool) -> str:
    """hit / miss / false alarm / correct pass: the verdict set against the image's true label."""
    if label:
        return "hit" if flagged else "miss"
    return "false alarm" if flagged else "correct pass"


def heat_scale(pixel_threshold: float) -> float:
    """The map value at which every heat map saturates (see HEATMAP_SATURATION); 1 for a degenerate
    zero threshold (every validation map zero), so such a bundle still draws instead of failing."""
    if not math.isfinite(pixel_threshold):
        raise ValueError(f"the pixel threshold must be finite, got {pixel_threshold!r}")
    return HEATMAP_SATURATION * pixel_threshold if pixel_threshold > 0 else 1.0


def heat_lut() -> np.ndarray:
    """uint8 (256, 3) RGB lookup table of HEATMAP_COLORMAP: colouring a map is one indexing operation."""
    from matplotlib import colormaps

    return (colormaps[HEATMAP_COLORMAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def heat_rgb(anomaly_map: np.ndarray, pixel_threshold: float, lut: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) colours of a map on the shared scale (NaN counts as 0)."""
    fraction = np.nan_to_num(np.asarray(anomaly_map, dtype=np.float64), nan=0.0) / heat_scale(pixel_threshold)
    return lut[np.clip(fraction * 255.0, 0, 255).astype(np.uint8)]


def region_outline(mask: np.ndarray) -> np.ndarray:
    """bool (H, W): the pixels of `mask` that touch a pixel outside it (4-neighbourhood), its outline."""
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1, mode="edge")
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


# --------------------------------------------------------------------------------------------
# ROC
# --------------------------------------------------------------------------------------------


def save_roc_plot(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    aurocs: Mapping[str, float],
    path: Path,
    title: str,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Overlay the ROC curves of all methods so OE-SDN and its baselines compare in one picture.

    `curves` maps a method key (e.g. "oe_sdn") to (fpr, tpr); `aurocs` gives the legend numbers
    (a method missing from `aurocs` is drawn without one). A dashed diagonal marks chance level.
    """
    fig = _new_figure(5.6, 5.2)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.55", linewidth=1.0, label="chance (0.500)")
    for position, (method, (fpr, tpr)) in enumerate(curves.items()):
        fpr_arr = _as_1d_float(fpr, f"fpr of {method!r}")
        tpr_arr = _as_1d_float(tpr, f"tpr of {method!r}")
        if fpr_arr.shape != tpr_arr.shape:
            raise ValueError(f"fpr and tpr of {method!r} differ in length: {fpr_arr.shape} vs {tpr_arr.shape}")
        label = _method_label(method)
        auroc = aurocs.get(method)
        if auroc is not None and math.isfinite(float(auroc)):
            label = f"{label} (AUROC {float(auroc):.3f})"
        ax.plot(
            fpr_arr,
            tpr_arr,
            color=_method_color(method, position),
            linewidth=2.2 if method == "oe_sdn" else 1.6,
            zorder=3 if method == "oe_sdn" else 2,
            label=label,
        )
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.grid(True, color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.set_xlabel("false positive rate", fontsize=11)
    ax.set_ylabel("true positive rate", fontsize=11)
    ax.set_title(title, fontsize=12)
    ax.tick_params(labelsize=9)
    ax.legend(loc="lower right", fontsize=9, frameon=True, framealpha=0.95)
    fig.tight_layout()
    _save_png(fig, path, metadata)


def save_roc_csv(fpr: np.ndarray, tpr: np.ndarray, path: Path) -> None:
    """Write one ROC curve as a two-column CSV (fpr,tpr) that `dvc plots` can draw and diff."""
    fpr_arr = _as_1d_float(fpr, "fpr")
    tpr_arr = _as_1d_float(tpr, "tpr")
    if fpr_arr.shape != tpr_arr.shape:
        raise ValueError(f"fpr and tpr differ in length: {fpr_arr.shape} vs {tpr_arr.shape}")
    buffer = StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["fpr", "tpr"])
    # repr() of a Python float is the shortest exact round-trip form.
    writer.writerows((repr(float(f)), repr(float(t))) for f, t in zip(fpr_arr, tpr_arr, strict=True))
    write_text_atomic(path, buffer.getvalue())


# --------------------------------------------------------------------------------------------
# score histogram
# --------------------------------------------------------------------------------------------


LOG_AXIS_SPAN = 100.0
"""Positive scores whose largest is this many times their smallest get a log axis: OE-SDN's
calibrated image score is exp() of a standardised log, so good parts sit near 1 and gross defects in
the thousands, and on a linear axis every good part falls into the first bar."""


def histogram_bins(values: np.ndarray, max_bins: int = 60, min_bins: int = 20) -> tuple[np.ndarray, bool]:
    """Bin edges common to both classes, so bar heights compare directly, and whether the axis is
    logarithmic (positive scores spanning more than `LOG_AXIS_SPAN`; the bins are then geometric)."""
    if values.size == 0:
        return np.linspace(0.0, 1.0, min_bins + 1), False
    low, high = float(values.min()), float(values.max())
    if low > 0 and high / low > LOG_AXIS_SPAN:
        edges = 10.0 ** _shared_bin_edges(np.log10(values), max_bins, min_bins)
        edges[0], edges[-1] = low, high  # exactly: 10 ** log10(x) may miss x by a rounding step
        return edges, True
    return _shared_bin_edges(values, max_bins, min_bins), False


def _shared_bin_edges(values: np.ndarray, max_bins: int, min_bins: int) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:  # all scores identical: give the single bar some width
        pad = 0.5 if low == 0 else abs(low) * 0.05
        low, high = low - pad, high + pad
    auto = len(np.histogram_bin_edges(values, bins="auto")) - 1 if values.size > 1 else min_bins
    n_bins = int(np.clip(auto, min_bins, max_bins))
    return np.linspace(low, high, n_bins + 1)


def save_score_histogram(
    normal_scores: np.ndarray,
    anomalous_scores: np.ndarray,
    threshold: float,
    path: Path,
    title: str,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Show how well image scores separate normal from anomalous images, and where the cut lies.

    Works with no anomalous images (a normal-only evaluation). Non-finite scores are left out and
    counted in the title, so a diverged model is visible instead of crashing the report.
    """
    from matplotlib.colors import to_rgb
    from matplotlib.ticker import MaxNLocator

    normal = _as_1d_float(normal_scores, "normal_scores")
    anomalous = _as_1d_float(anomalous_scores, "anomalous_scores")
    dropped = int((~np.isfinite(normal)).sum() + (~np.isfinite(anomalous)).sum())
    normal = normal[np.isfinite(normal)]
    anomalous = anomalous[np.isfinite(anomalous)]
    edges, log_axis = histogram_bins(np.concatenate([normal, anomalous]))

    fig = _new_figure(6.6, 4.2)
    ax = fig.add_subplot()
    for scores, name, color in ((normal, "normal", "#1f77b4"), (anomalous, "anomalous", "#d62728")):
        if scores.size == 0:
            continue
        ax.hist(
            scores,
            bins=edges,
            histtype="stepfilled",
            facecolor=(*to_rgb(color), 0.35),
            edgecolor=color,
            linewidth=1.4,
            label=f"{name} (n={scores.size})",
        )
    if math.isfinite(float(threshold)):
        ax.axvline(float(threshold), color="black", linestyle="--", linewidth=1.4, label=f"threshold = {float(threshold):.4g}")
    if normal.size == 0 and anomalous.size == 0:
        ax.text(0.5, 0.5, "no finite scores", transform=ax.transAxes, ha="center", va="center", fontsize=12, color="0.4")
    full_title = title if dropped == 0 else f"{title}\n({dropped} non-finite scores left out)"
    ax.set_title(full_title, fontsize=12)
    if log_axis:
        ax.set_xscale("log")
    ax.set_xlabel("image anomaly score" + (" (log scale)" if log_axis else ""), fontsize=11)
    ax.set_ylabel("number of images", fontsize=11)
    ax.tick_params(labelsize=9)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of images are whole numbers
    ax.grid(True, axis="y", color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=9, frameon=True, framealpha=0.95)
    fig.tight_layout()
    _save_png(fig, path, metadata)


# --------------------------------------------------------------------------------------------
# qualitative panel
# --------------------------------------------------------------------------------------------


def _validate_panel_inputs(
    images: np.ndarray,
    masks: np.ndarray | None,
    maps: np.ndarray,
    pred_masks: np.ndarray,
    captions: Sequence[str],
    outcomes: Sequence[str] | None,
) -> None:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, C, H, W) with C = 1 or 3, got {images.shape}")
    n, _, h, w = images.shape
    if n == 0:
        raise ValueError("images is empty: nothing to draw in the panel")
    expected = (n, h, w)
    named = [("maps", maps), ("pred_masks", pred_masks)]
    if masks is not None:
        named.insert(0, ("masks", masks))
    for name, array in named:
        if array.shape != expected:
            raise ValueError(f"{name} must have shape (N, H, W) = {expected} to match images {images.shape}, got {array.shape}")
    if len(captions) != n:
        raise ValueError(f"need one caption per image: {n} images but {len(captions)} captions")
    if outcomes is not None and (len(outcomes) != n or not set(outcomes) <= set(OUTCOME_COLORS)):
        raise ValueError(f"need one outcome per image out of {list(OUTCOME_COLORS)}, got {list(outcomes)}")


def _to_display(image_chw: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(C,H,W) in [0,1] -> something imshow draws faithfully: HxW with a grey colormap, or HxWx3."""
    image = np.clip(image_chw, 0.0, 1.0)
    if image.shape[0] == 1:
        return image[0], "gray"
    return np.transpose(image, (1, 2, 0)), None


def _show_image(ax: Axes, image_chw: np.ndarray) -> None:
    pixels, cmap = _to_display(image_chw)
    ax.imshow(pixels, cmap=cmap, vmin=0.0, vmax=1.0)


def _outline(ax: Axes, mask: np.ndarray, color: str) -> None:
    """Translucent fill plus contour: small regions stay visible, big ones don't hide the image."""
    if not mask.any():
        return
    overlay = np.zeros((*mask.shape, 4))
    overlay[mask] = (*_hex_to_rgb(color), 0.30)
    ax.imshow(overlay)
    if not mask.all():  # contour of a constant field has no level and warns
        ax.contour(mask.astype(np.float64), levels=[0.5], colors=[color], linewidths=1.3)


def _hex_to_rgb(color: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(color)


def _clean_axes(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("0.75")


PANEL_NOTE = (
    "pred: the model's verdict (image score above the image threshold). Outlines: pixels above the pixel threshold,\n"
    "a separate cut, so a passed image may still show small outlines. Marks set the verdict against the true label."
)


def save_anomaly_panel(
    images: np.ndarray,
    masks: np.ndarray | None,
    maps: np.ndarray,
    pred_masks: np.ndarray,
    captions: Sequence[str],
    path: Path,
    pixel_threshold: float,
    outcomes: Sequence[str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Draw image | ground truth | heat map | predicted region, one row per image, for eyeballing.

    images: float (N, C, H, W) in [0, 1], C = 1 or 3. masks: bool (N, H, W), or None when the
    dataset has no pixel labels (a "no ground truth" placeholder is drawn). maps: float (N, H, W)
    anomaly maps, drawn on the shared scale of every heat map (`heat_scale(pixel_threshold)`) with
    one colour bar. pred_masks: bool (N, H, W), the thresholded maps. outcomes: per row one of
    OUTCOME_COLORS (hit, miss, ...), printed in its colour after the caption.
    """
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    images = np.asarray(images, dtype=np.float64)
    maps = np.asarray(maps, dtype=np.float64)
    pred_masks = np.asarray(pred_masks).astype(bool)
    masks = None if masks is None else np.asarray(masks).astype(bool)
    _validate_panel_inputs(images, masks, maps, pred_masks, captions, outcomes)
    n, _, h, w = images.shape
    norm = Normalize(vmin=0.0, vmax=heat_scale(pixel_threshold))
    cmap = colormaps[HEATMAP_COLORMAP]

    # Manual layout in inches: exact, predictable geometry, and the figure grows with the rows.
    cell_w = 2.1
    cell_h = cell_w * h / w
    left, right_margin, col_gap = 0.15, 1.25, 0.12
    top, caption_h, row_gap, bottom = 0.42, 0.30, 0.10, 0.55
    n_cols = 4
    fig_w = left + n_cols * cell_w + (n_cols - 1) * col_gap + right_margin
    fig_h = top + n * (caption_h + cell_h) + (n - 1) * row_gap + bottom
    fig = _new_figure(fig_w, fig_h)

    def axes_at(row: int, col: int) -> Axes:
        x0 = left + col * (cell_w + col_gap)
        y_top = top + row * (caption_h + cell_h + row_gap) + caption_h
        y0 = fig_h - y_top - cell_h
        return fig.add_axes((x0 / fig_w, y0 / fig_h, cell_w / fig_w, cell_h / fig_h))

    headers = ("image", "ground truth", "anomaly map", "pixels > pixel threshold")
    for col, header in enumerate(headers):
        x_center = left + col * (cell_w + col_gap) + cell_w / 2
        fig.text(x_center / fig_w, 1 - 0.22 / fig_h, header, ha="center", va="center", fontsize=11, fontweight="bold")

    for row in range(n):
        ax_img, ax_gt, ax_map, ax_pred = (axes_at(row, col) for col in range(n_cols))
        caption_y = fig_h - (top + row * (caption_h + cell_h + row_gap) + caption_h * 0.45)
        fig.text(left / fig_w, caption_y / fig_h, str(captions[row]), ha="left", va="center", fontsize=10, family="monospace")
        if outcomes is not None:
            mark_x = left + n_cols * cell_w + (n_cols - 1) * col_gap
            fig.text(
                mark_x / fig_w,
                caption_y / fig_h,
                outcomes[row].upper(),
                ha="right",
                va="center",
                fontsize=10,
                fontweight="bold",
                color=OUTCOME_COLORS[outcomes[row]],
            )

        _show_image(ax_img, images[row])

        if masks is None:
            ax_gt.set_facecolor("0.93")
            ax_gt.set_xlim(0, 1)
            ax_gt.set_ylim(0, 1)
            ax_gt.text(
                0.5, 0.5, "no ground\ntruth", ha="center", va="center", fontsize=10, color="0.45", transform=ax_gt.transAxes
            )
        else:
            ax_gt.imshow(masks[row], cmap="gray", vmin=0, vmax=1, interpolation="nearest")

        _show_image(ax_map, images[row])
        ax_map.imshow(np.nan_to_num(maps[row], nan=0.0), cmap=cmap, norm=norm, alpha=0.5)

        _show_image(ax_pred, images[row])
        _outline(ax_pred, pred_masks[row], PREDICTED_OUTLINE)

        for ax in (ax_img, ax_gt, ax_map, ax_pred):
            _clean_axes(ax)
    fig.text(left / fig_w, 0.30 / fig_h, PANEL_NOTE, ha="left", va="center", fontsize=8, color="0.3")
    cbar_x = left + n_cols * cell_w + (n_cols - 1) * col_gap + 0.12
    cbar_h = min(fig_h - top - bottom - caption_h, 4.0)
    cbar_y = fig_h - top - caption_h - cbar_h
    _panel_colorbar(fig, fig.add_axes((cbar_x / fig_w, cbar_y / fig_h, 0.14 / fig_w, cbar_h / fig_h)), norm, pixel_threshold)
    _save_png(fig, path, metadata)


def _panel_colorbar(fig: Figure, cax: Axes, norm: Normalize, pixel_threshold: float) -> None:
    """One colour bar for the whole heat-map column (the scale is shared, so one is enough)."""
    from matplotlib.cm import ScalarMappable

    colorbar = fig.colorbar(ScalarMappable(norm=norm, cmap=HEATMAP_COLORMAP), cax=cax)
    colorbar.set_ticks([0.0, pixel_threshold, heat_scale(pixel_threshold)])
    colorbar.set_ticklabels(["0", f"pixel\nthreshold\n{pixel_threshold:.3g}", f"{heat_scale(pixel_threshold):.3g}"])
    colorbar.set_label("anomaly map value", fontsize=9)
    colorbar.ax.tick_params(labelsize=7)


def select_panel_indices(
    labels: np.ndarray,
    scores: np.ndarray,
    defect_types: Sequence[str],
    max_rows: int = 8,
) -> np.ndarray:
    """Pick a small, representative, reproducible set of test images for the qualitative panel.

    The highest-scoring normal image comes first (the likeliest false positive), then the
    median-scoring image of every defect type among the anomalous images (typical, not
    cherry-picked), types in sorted order. At most `max_rows` indices are returned; if there are
    more types than rows, the types last in sorted order are dropped. Ties are broken by index;
    non-finite scores count as lowest.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    labels_arr = np.asarray(labels)
    scores_arr = _as_1d_float(scores, "scores")
    n = len(scores_arr)
    if labels_arr.ndim != 1 or len(labels_arr) != n or len(defect_types) != n:
        raise ValueError(
            "labels, scores and defect_types must be 1-D and equally long, got "
            f"{labels_arr.shape}, {scores_arr.shape}, {len(defect_types)}"
        )
    ranked = np.where(np.isfinite(scores_arr), scores_arr, -np.inf)
    anomalous = labels_arr.astype(bool)
    types = np.asarray([str(t) for t in defect_types], dtype=object)

    chosen: list[int] = []
    normal_idx = np.flatnonzero(~anomalous)
    if normal_idx.size:
        # stable sort => among equal top scores, the lowest index wins
        order = normal_idx[np.argsort(-ranked[normal_idx], kind="stable")]
        chosen.append(int(order[0]))
    for defect in sorted(set(types[anomalous])):
        members = np.flatnonzero(anomalous & (types == defect))
        order = members[np.argsort(ranked[members], kind="stable")]
        chosen.append(int(order[(len(order) - 1) // 2]))  # lower median
    return np.asarray(chosen[:max_rows], dtype=np.int64)
