"""Evaluation metrics for anomaly detection: image AUROC, pixel AUROC, AUPRO, thresholded scores.

Conventions used throughout:

* Labels / masks: 0 (or False) = normal, 1 (or True) = anomalous. Higher score = more anomalous.
* Inputs are validated loudly (shape, length, binary labels, finite scores): a silent NaN or a
  255-valued mask would otherwise produce a plausible-looking but wrong number.
* Pixel-level metrics pool every pixel of every image and are computed exactly (no threshold grid)
  from one sort of the scores; they avoid float64 copies of the score maps so ~10M pixels fit easily.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import f1_score, roc_auc_score, roc_curve

__all__ = [
    "aupro",
    "f1_at_threshold",
    "image_auroc",
    "lognormal_tail_threshold",
    "operating_point",
    "pixel_auroc",
    "roc_curve_points",
    "threshold_from_normal_scores",
]

# 8-connectivity inside each image and no connectivity between images of an (N, H, W) stack, so that
# one ndimage.label call labels every image's regions with distinct ids.
_IN_PLANE_8_CONNECTIVITY = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_8_CONNECTIVITY[1] = True


# --------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------


def _check_finite(values: np.ndarray, name: str) -> None:
    """Raise if `values` holds NaN or +-inf: those make rankings (hence AUROC) meaningless."""
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        n_nan = int(np.isnan(values).sum())
        n_inf = int(np.isinf(values).sum())
        raise ValueError(f"{name} must be finite: found {n_nan} NaN and {n_inf} infinite value(s) out of {values.size}")


def _as_scores(scores: np.ndarray, name: str) -> np.ndarray:
    """Return `scores` as a real-valued array (no copy if already numeric) after checking it is finite."""
    arr = np.asarray(scores)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    _check_finite(arr, name)
    return arr


def _as_binary(labels: np.ndarray, name: str) -> np.ndarray:
    """Return `labels` as bool; reject anything other than {0, 1} (e.g. a 0/255 mask) instead of guessing."""
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be bool or 0/1 numeric, got dtype {arr.dtype}")
    is_zero = arr == 0
    if not (is_zero | (arr == 1)).all():
        bad = np.unique(arr[~(is_zero | (arr == 1))])[:5]
        raise ValueError(
            f"{name} must be binary (0 = normal, 1 = anomalous); found other values, e.g. {bad.tolist()}"
            " (binarise masks first, e.g. mask > 0)"
        )
    return ~is_zero


def _labels_and_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a 1-D image-level (labels, scores) pair."""
    y = _as_binary(labels, "labels")
    s = _as_scores(scores, "scores")
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"labels and scores must have the same length, got {y.shape[0]} and {s.shape[0]}")
    return y, s


def _require_both_classes(y: np.ndarray, what: str) -> None:
    """AUROC is undefined with one class; say which one is present instead of returning NaN."""
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0:
        raise ValueError(f"{what} needs both classes, but only label 0 (normal) is present ({y.size} samples)")
    if n_pos == y.size:
        raise ValueError(f"{what} needs both classes, but only label 1 (anomalous) is present ({y.size} samples)")


def _check_threshold(threshold: float) -> float:
    """A NaN threshold would silently predict everything normal."""
    t = float(threshold)
    if np.isnan(t):
        raise ValueError("threshold must not be NaN")
    return t


def _masks_and_maps(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate pixel-level ground truth (N, H, W) against anomaly maps of the same shape."""
    m = np.asarray(masks)
    a = np.asarray(maps)
    if m.shape != a.shape:
        raise ValueError(f"masks and maps must have the same shape, got {m.shape} and {a.shape}")
    if m.ndim != 3:
        raise ValueError(f"masks and maps must be (N, H, W), got shape {m.shape} (use x[None] for one image)")
    return _as_binary(m, "masks"), _as_scores(a, "maps")


# --------------------------------------------------------------------------------------------------
# exact ranking core shared by pixel AUROC and AUPRO
# --------------------------------------------------------------------------------------------------


def _descending_order_and_group_ends(scores_flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort scores descending; return the order and the last sorted index of each run of tied scores.

    Keeping only tie-run ends gives exactly one curve point per distinct threshold, so tied pixels are
    never split by an arbitrary sort order (the result does not depend on argsort's tie-breaking).
    """
    order = np.argsort(scores_flat)[::-1]
    sorted_scores = scores_flat[order]
    ends = np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1])
    del sorted_scores
    return order, np.append(ends, scores_flat.size - 1)


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under a curve with non-decreasing x from x[0] up to x_max (linear interpolation at x_max)."""
    i = int(np.searchsorted(x, x_max, side="right"))  # x[:i] <= x_max
    xs, ys = x[:i], y[:i]
    if xs[-1] < x_max and i < x.size:
        x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)  # x1 > x_max > x0, so no division by zero
        xs, ys = np.append(xs, x_max), np.append(ys, y_at)
    return float(np.trapezoid(ys, xs))


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Image-level AUROC (sklearn), threshold-free: the paper's one-class classification metric."""
    y, s = _labels_and_scores(labels, scores)
    _require_both_classes(y, "image_auroc")
    return float(roc_auc_score(y, s))


def roc_curve_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of the image-level ROC, for plotting; collinear points dropped."""
    y, s = _labels_and_scores(labels, scores)
    _require_both_classes(y, "roc_curve_points")
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=True)
    return fpr, tpr, thresholds


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """Pixel-level AUROC over all pixels of all images pooled (the paper's MVTec AD segmentation metric).

    Computed exactly from one descending sort (equal to sklearn's roc_auc_score on the flattened
    arrays) but without sklearn's float64 copies, so it runs in a fraction of the memory for ~10M pixels.
    """
    m, a = _masks_and_maps(masks, maps)
    y = m.ravel()
    _require_both_classes(y, "pixel_auroc")
    order, ends = _descending_order_and_group_ends(a.ravel())
    y_sorted = y[order]
    del order
    tp = np.cumsum(y_sorted, dtype=np.int64)[ends]
    del y_sorted
    fp = ends + 1 - tp
    del ends
    n_pos, n_neg = int(tp[-1]), int(fp[-1])
    tpr = np.concatenate(([0.0], tp / n_pos))
    fpr = np.concatenate(([0.0], fp / n_neg))
    return float(np.trapezoid(tpr, fpr))


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Normalised area under the per-region-overlap (PRO) curve up to FPR = fpr_limit, in [0, 1].

    PRO averages the detected fraction over ground-truth regions (8-connected components of each
    image's mask), so a small defect counts as much as a large one, unlike pixel AUROC. Exact and
    threshold-free, following the MVTec AD evaluation code: sorting pixels by descending score, each
    normal pixel adds 1/num_normal to FPR and each pixel of region k adds 1/(num_regions * size_k) to
    PRO; one point per distinct score, (0, 0) prepended, trapezoid rule up to fpr_limit with linear
    interpolation there, divided by fpr_limit.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}")
    m, a = _masks_and_maps(masks, maps)
    region_ids, num_regions = ndimage.label(m, structure=_IN_PLANE_8_CONNECTIVITY)
    region_ids = region_ids.ravel()
    region_sizes = np.bincount(region_ids, minlength=num_regions + 1)
    num_normal = int(region_sizes[0])
    if num_regions == 0:
        raise ValueError("aupro needs anomalous pixels, but every mask is empty (all pixels normal)")
    if num_normal == 0:
        raise ValueError("aupro needs normal pixels, but every pixel of every mask is anomalous")

    order, ends = _descending_order_and_group_ends(a.ravel())
    sorted_ids = region_ids[order]
    del order, region_ids
    fpr = np.cumsum(sorted_ids == 0, dtype=np.int64)[ends] / num_normal

    # Only the curve up to the first point past fpr_limit matters: accumulate PRO over that prefix only.
    n_points = min(int(np.searchsorted(fpr, fpr_limit, side="right")) + 1, ends.size)
    prefix = int(ends[n_points - 1]) + 1
    weight = 1.0 / np.maximum(region_sizes, 1)
    weight[0] = 0.0
    pro = np.cumsum(weight[sorted_ids[:prefix]])[ends[:n_points]] / num_regions

    fpr = np.concatenate(([0.0], fpr[:n_points]))
    pro = np.concatenate(([0.0], np.minimum(pro, 1.0)))
    return _area_up_to(fpr, pro, fpr_limit) / fpr_limit


def threshold_from_normal_scores(normal_scores: np.ndarray, quantile: float) -> float:
    """Decision threshold from held-out NORMAL scores only (anomalies are unavailable when deploying).

    Returns np.quantile(normal_scores, quantile, method="higher"): an observed score, chosen so that
    with the `score > threshold` rule of f1_at_threshold at most a (1 - quantile) fraction of these
    normal scores is flagged; quantile = 1 gives the maximum normal score (no normal sample flagged).
    """
    q = float(quantile)
    if not 0.0 < q <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
    s = _as_scores(normal_scores, "normal_scores")
    return float(np.quantile(s.ravel(), q, method="higher"))


MIN_TAIL_FIT_SCORES = 3
"""A mean and a sample spread need two scores; a third keeps one from being a coin flip."""


def lognormal_tail_threshold(normal_scores: np.ndarray, quantile: float) -> float:
    """The `quantile` of a log-normal fitted to held-out NORMAL scores, never below their maximum.

    Why: with the few dozen validation normals a small category has, the empirical 0.99 quantile is
    just the largest of them, and an unseen normal exceeds the largest of n exchangeable samples with
    probability 1 / (n + 1) (4 % for n = 24), not 1 %. Anomaly scores of normal images are positive
    and right-skewed; a log-normal tail extrapolates past the sample. Taking the maximum of the fit
    and the sample keeps the rule at least as strict as the empirical one.
    """
    from scipy.stats import norm

    q = float(quantile)
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1) for a tail fit, got {quantile!r}")
    s = _as_scores(normal_scores, "normal_scores").ravel()
    if s.size < MIN_TAIL_FIT_SCORES:
        raise ValueError(f"a tail fit needs at least {MIN_TAIL_FIT_SCORES} normal scores, got {s.size}")
    logs = np.log(np.maximum(s, np.finfo(np.float64).tiny))
    fitted = float(np.exp(logs.mean() + norm.ppf(q) * logs.std(ddof=1)))
    return max(fitted, float(s.max()))


def lognormal_tolerance_threshold(normal_scores: np.ndarray, quantile: float, confidence: float) -> float:
    """A one-sided tolerance bound on log-normal NORMAL scores: with probability `confidence`, at
    least a `quantile` share of normal images score below it. Never below their maximum.

    Why: the plain tail fit plugs in the sample's mean and spread as if they were known; from a few
    dozen validation normals they are not, and a wide spread (a varied texture) is then often
    underestimated, so unseen normals cross the line far more often than promised. The bound
    widens the fit by the uncertainty of its own estimates (the non-central t factor, as in
    ISO 16269-6), and tends to the plain fit as the split grows.
    """
    from scipy.stats import nct, norm

    q, c = float(quantile), float(confidence)
    if not 0.0 < q < 1.0 or not 0.0 < c < 1.0:
        raise ValueError(f"quantile and confidence must be in (0, 1), got {quantile!r} and {confidence!r}")
    s = _as_scores(normal_scores, "normal_scores").ravel()
    if s.size < MIN_TAIL_FIT_SCORES:
        raise ValueError(f"a tail fit needs at least {MIN_TAIL_FIT_SCORES} normal scores, got {s.size}")
    logs = np.log(np.maximum(s, np.finfo(np.float64).tiny))
    n = s.size
    k = float(nct.ppf(c, n - 1, norm.ppf(q) * np.sqrt(n)) / np.sqrt(n))
    return max(float(np.exp(logs.mean() + k * logs.std(ddof=1))), float(s.max()))


def operating_point(
    labels: np.ndarray, scores: np.ndarray, threshold: float, defect_types: np.ndarray | None = None
) -> dict[str, float | None]:
    """What a line sees at `threshold` (flagged = score > threshold).

    `false_alarm_rate`: share of normal images flagged; `recall`: share of anomalous images flagged;
    with `defect_types`, `recall.<type>` per defect type. A figure whose class is absent is None.
    """
    y, s = _labels_and_scores(labels, scores)
    flagged = s > _check_threshold(threshold)
    normal, anomalous = ~y.astype(bool), y.astype(bool)
    result: dict[str, float | None] = {
        "false_alarm_rate": float(flagged[normal].mean()) if normal.any() else None,
        "recall": float(flagged[anomalous].mean()) if anomalous.any() else None,
    }
    if defect_types is not None:
        types = np.asarray(defect_types).astype(str)
        if types.shape != y.shape:
            raise ValueError(f"defect_types has shape {types.shape}, labels {y.shape}")
        for kind in sorted(set(types[anomalous])):
            result[f"recall.{kind}"] = float(flagged[anomalous & (types == kind)].mean())
    return result


def f1_at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """F1 of the anomalous class when predicting anomalous iff score > threshold (strict).

    Strict `>` pairs with threshold_from_normal_scores, whose threshold is itself an observed normal
    score that should stay classified normal. F1 is 0 when nothing is predicted anomalous.
    """
    y, s = _labels_and_scores(labels, scores)
    return float(f1_score(y, s > _check_threshold(threshold), zero_division=0))
