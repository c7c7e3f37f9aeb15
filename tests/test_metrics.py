"""Tests for components.metrics: hand-computed cases, sklearn agreement, and a slow reference AUPRO."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import f1_score, roc_auc_score, roc_curve

from components.metrics import (
    aupro,
    f1_at_threshold,
    image_auroc,
    pixel_auroc,
    roc_curve_points,
    threshold_from_normal_scores,
)

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def reference_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float) -> float:
    """Slow, obviously-correct AUPRO: sweep every distinct score as a threshold, with plain loops.

    At threshold t a pixel is predicted anomalous iff score >= t. FPR = fraction of normal pixels
    predicted anomalous; PRO = mean over ground-truth regions (8-connected, per image) of the fraction
    of the region predicted anomalous. The curve starts at (0, 0) (threshold above every score).
    """
    regions = []  # (image index, boolean region mask)
    for i in range(masks.shape[0]):
        labeled, n = ndimage.label(masks[i], structure=np.ones((3, 3), dtype=int))
        for k in range(1, n + 1):
            regions.append((i, labeled == k))
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fprs.append(pred[normal].sum() / normal.sum())
        overlaps = [pred[i][region].sum() / region.sum() for i, region in regions]
        pros.append(float(np.mean(overlaps)))
    fprs, pros = np.array(fprs), np.array(pros)

    # Integrate up to fpr_limit, adding the linearly interpolated point at fpr_limit.
    inside = fprs <= fpr_limit
    xs, ys = list(fprs[inside]), list(pros[inside])
    if xs[-1] < fpr_limit:
        j = int(np.argmax(fprs > fpr_limit))  # first point beyond the limit
        x0, x1, y0, y1 = fprs[j - 1], fprs[j], pros[j - 1], pros[j]
        xs.append(fpr_limit)
        ys.append(y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0))
    return float(np.trapezoid(ys, xs)) / fpr_limit


def random_blob_problem(rng: np.random.Generator, n: int = 3, size: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Small masks with a few disc/rectangle regions per image (last image fully normal), noisy maps."""
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n - 1):
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.integers(2, size - 2), rng.integers(2, size - 2), rng.integers(1, 4)
            if rng.random() < 0.5:
                masks[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
            else:
                masks[i, cy - r : cy + r, cx : cx + r + 1] = True
    maps = rng.normal(size=masks.shape) + 1.5 * ndimage.uniform_filter(masks.astype(float), size=(1, 3, 3))
    return masks, maps


# --------------------------------------------------------------------------------------------------
# image-level AUROC
# --------------------------------------------------------------------------------------------------


def test_image_auroc_hand_computed() -> None:
    # Positive pairs: (0.35 vs 0.1) yes, (0.35 vs 0.4) no, (0.8 vs both) yes -> 3 / 4.
    assert image_auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)


def test_image_auroc_matches_sklearn_on_random_data() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=300)
    scores = rng.normal(size=300) + 0.7 * labels
    scores[:50] = np.round(scores[:50], 1)  # some ties
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert image_auroc(labels.astype(bool), scores.astype(np.float32)) == pytest.approx(
        roc_auc_score(labels, scores.astype(np.float32)), abs=1e-12
    )


def test_roc_curve_points_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=100)
    scores = rng.random(100) + 0.3 * labels
    fpr, tpr, thr = roc_curve_points(labels, scores)
    ref = roc_curve(labels, scores, drop_intermediate=True)
    for got, want in zip((fpr, tpr, thr), ref, strict=True):
        np.testing.assert_allclose(got, want)


@pytest.mark.parametrize(("labels", "present"), [([0, 0, 0], "only label 0"), ([1, 1], "only label 1")])
def test_image_auroc_one_class_raises(labels: list[int], present: str) -> None:
    with pytest.raises(ValueError, match=present):
        image_auroc(np.array(labels), np.arange(len(labels), dtype=float))
    with pytest.raises(ValueError, match=present):
        roc_curve_points(np.array(labels), np.arange(len(labels), dtype=float))


def test_image_level_input_validation() -> None:
    with pytest.raises(ValueError, match="2 NaN"):
        image_auroc(np.array([0, 1, 0, 1]), np.array([0.1, np.nan, np.nan, 0.3]))
    with pytest.raises(ValueError, match="same length"):
        image_auroc(np.array([0, 1, 0]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="binary"):
        image_auroc(np.array([0, 2, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="1-D"):
        image_auroc(np.array([[0, 1]]), np.array([[0.1, 0.2]]))


# --------------------------------------------------------------------------------------------------
# pixel AUROC
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pixel_auroc_matches_sklearn_on_flattened_arrays(dtype: type) -> None:
    rng = np.random.default_rng(2)
    masks, maps = random_blob_problem(rng, n=4, size=24)
    maps = maps.astype(dtype)
    maps[0] = np.round(maps[0], 1)  # ties, including ties across classes
    want = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(want, abs=1e-10)
    assert pixel_auroc(masks.astype(np.uint8), maps) == pytest.approx(want, abs=1e-10)


def test_pixel_auroc_input_validation() -> None:
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 1, 1] = True
    maps = np.zeros((2, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="same shape"):
        pixel_auroc(masks, maps[:, :3])
    with pytest.raises(ValueError, match="only label 0"):
        pixel_auroc(np.zeros_like(masks), maps)
    with pytest.raises(ValueError, match="binary"):
        pixel_auroc(masks.astype(np.uint8) * 255, maps)
    bad = maps.copy()
    bad[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="1 NaN"):
        pixel_auroc(masks, bad)


# --------------------------------------------------------------------------------------------------
# AUPRO
# --------------------------------------------------------------------------------------------------


def test_aupro_perfect_separation_is_one() -> None:
    rng = np.random.default_rng(3)
    masks, _ = random_blob_problem(rng)
    maps = np.where(masks, 2.0 + rng.random(masks.shape), rng.random(masks.shape))
    assert aupro(masks, maps) == pytest.approx(1.0)
    assert aupro(masks, maps, fpr_limit=0.01) == pytest.approx(1.0)


def test_aupro_one_region_found_early_other_after_limit_is_half() -> None:
    # Region A (1 px) scores above every normal pixel; region B (2 px, different size) below all of them.
    # PRO is 0.5 from FPR 0 until FPR reaches 1, so the normalised area up to 0.3 is exactly 0.5.
    masks = np.zeros((1, 3, 8), dtype=bool)
    masks[0, 0, 0] = True
    masks[0, 2, 6:8] = True
    rng = np.random.default_rng(4)
    maps = 0.2 + 0.7 * rng.random(masks.shape)
    maps[0, 0, 0] = 1.0
    maps[0, 2, 6:8] = [0.0, 0.1]
    assert aupro(masks, maps, fpr_limit=0.3) == pytest.approx(0.5)


def test_aupro_uses_8_connectivity() -> None:
    # (0,0)-(1,1) touch diagonally -> one 2-px region A; (3,3) is region B. B and half of A beat every
    # normal pixel, so PRO = (1 + 0.5) / 2 = 0.75 (4-connectivity would give 3 regions -> 2/3).
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 3, 3] = True
    maps = np.full(masks.shape, 0.5)
    maps[0, 3, 3], maps[0, 0, 0], maps[0, 1, 1] = 1.0, 0.9, 0.0
    assert aupro(masks, maps) == pytest.approx(0.75)


def test_aupro_regions_do_not_connect_across_images() -> None:
    # Image 0 has a 2-px region, image 1 a 1-px region at the same place; only image 1's is detected
    # early -> PRO = (0 + 1) / 2 = 0.5 (one merged 3-px region would give 1/3).
    masks = np.zeros((2, 3, 3), dtype=bool)
    masks[0, 0, 0:2] = True
    masks[1, 0, 0] = True
    maps = np.full(masks.shape, 0.5)
    maps[1, 0, 0] = 1.0
    maps[0, 0, 0:2] = 0.0
    assert aupro(masks, maps) == pytest.approx(0.5)


@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_aupro_constant_map_is_diagonal(fpr_limit: float) -> None:
    # All scores tied: the only curve points are (0,0) and (1,1); area up to L is L^2/2 -> L/2 normalised.
    masks = np.zeros((2, 5, 5), dtype=bool)
    masks[0, 1:3, 1:3] = True
    masks[1, 4, 4] = True
    assert aupro(masks, np.ones(masks.shape, dtype=np.float32), fpr_limit) == pytest.approx(fpr_limit / 2)


@pytest.mark.parametrize("seed", [10, 11, 12])
@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("ties", [False, True])
def test_aupro_matches_slow_reference(seed: int, fpr_limit: float, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    masks, maps = random_blob_problem(rng)
    if ties:
        maps = np.round(maps, 1)
    assert aupro(masks, maps, fpr_limit) == pytest.approx(reference_aupro(masks, maps, fpr_limit), abs=1e-9)


def test_aupro_invariant_to_monotone_transform() -> None:
    rng = np.random.default_rng(5)
    masks, maps = random_blob_problem(rng, n=4, size=32)
    base = aupro(masks, maps)
    assert 0.0 < base < 1.0
    assert aupro(masks, np.exp(2.0 * maps)) == pytest.approx(base, abs=1e-12)
    assert aupro(masks, 1000.0 * maps - 7.0) == pytest.approx(base, abs=1e-12)
    assert aupro(masks, maps.astype(np.float32)) == pytest.approx(base, abs=1e-6)


def test_aupro_input_validation() -> None:
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 1, 1] = True
    maps = np.random.default_rng(6).random(masks.shape)
    with pytest.raises(ValueError, match="needs anomalous pixels"):
        aupro(np.zeros_like(masks), maps)
    with pytest.raises(ValueError, match="needs normal pixels"):
        aupro(np.ones_like(masks), maps)
    with pytest.raises(ValueError, match="same shape"):
        aupro(masks, maps[:1])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        aupro(masks[0], maps[0])
    with pytest.raises(ValueError, match="binary"):
        aupro(masks.astype(np.uint8) * 255, maps)
    for bad_limit in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=str(bad_limit)):
            aupro(masks, maps, fpr_limit=bad_limit)
    bad = maps.copy()
    bad[0, 0, :3] = np.nan
    with pytest.raises(ValueError, match="3 NaN"):
        aupro(masks, bad)


# --------------------------------------------------------------------------------------------------
# thresholds and F1
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quantile", [0.5, 0.9, 0.95, 0.99, 1.0])
@pytest.mark.parametrize("n", [7, 100, 1001])
def test_threshold_flags_at_most_one_minus_quantile_of_normals(quantile: float, n: int) -> None:
    normal = np.random.default_rng(n).normal(size=n)
    threshold = threshold_from_normal_scores(normal, quantile)
    assert threshold in normal  # an observed score (method="higher")
    assert np.mean(normal > threshold) <= 1.0 - quantile + 1e-12


def test_threshold_quantile_one_is_max_and_errors() -> None:
    normal = np.array([0.3, 0.1, 0.7, 0.2])
    assert threshold_from_normal_scores(normal, 1.0) == 0.7
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=str(bad)):
            threshold_from_normal_scores(normal, bad)
    with pytest.raises(ValueError, match="empty"):
        threshold_from_normal_scores(np.array([]), 0.9)
    with pytest.raises(ValueError, match="1 NaN"):
        threshold_from_normal_scores(np.array([0.1, np.nan]), 0.9)


def test_f1_at_threshold_hand_computed() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.6, 0.5, 0.7, 0.9])
    # Strict ">": 0.5 is NOT flagged -> predictions [0, 1, 0, 1, 1]: TP 2, FP 1, FN 1 -> F1 = 2/3.
    assert f1_at_threshold(labels, scores, 0.5) == pytest.approx(2 / 3)
    assert f1_at_threshold(labels, scores, 0.5) == pytest.approx(f1_score(labels, scores > 0.5))
    assert f1_at_threshold(labels, scores, 0.45) == pytest.approx(6 / 7)  # TP 3, FP 1 -> P 3/4, R 1
    assert f1_at_threshold(labels, scores, 1.0) == 0.0  # nothing flagged: zero_division=0
    with pytest.raises(ValueError, match="NaN"):
        f1_at_threshold(labels, scores, float("nan"))
