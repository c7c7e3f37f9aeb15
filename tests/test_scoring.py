from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from components.models.oesdn.detector import OESDNDetector, calibrate, score_images
from components.scoring import (
    MAP_SCALE_QUANTILE,
    ImageScoreCalibration,
    ScoringSettings,
    l2_residual_map,
    method_maps,
    multiscale_map,
    oe_sdn_map,
    reduce_maps,
    smooth_maps,
    ssim_residual_map,
)


def test_oe_sdn_map_is_channel_mean_absolute_difference() -> None:
    sdn = torch.zeros(1, 3, 2, 2)
    ae = torch.zeros(1, 3, 2, 2)
    sdn[0, :, 0, 0] = torch.tensor([0.3, -0.3, 0.0])
    expected = torch.zeros(1, 2, 2)
    expected[0, 0, 0] = 0.2
    assert torch.allclose(oe_sdn_map(sdn, ae, "absolute"), expected)
    squared = torch.zeros(1, 2, 2)
    squared[0, 0, 0] = 0.06
    assert torch.allclose(oe_sdn_map(sdn, ae, "squared"), squared)
    with pytest.raises(ValueError, match="unknown OE-SDN distance"):
        oe_sdn_map(sdn, ae, "cosine")


def test_difference_blur_averages_out_grain_but_keeps_a_patch() -> None:
    """`difference_sigma`: a zero-mean checkerboard (texture grain the AE cannot copy) fades under
    the blur, a 12 px patch of the same amplitude (a stain the SDN copies) keeps its energy."""
    ae = torch.zeros(1, 3, 32, 32)
    grain = torch.full_like(ae, 0.2)
    grain[..., ::2, ::2] = -0.2
    grain[..., 1::2, 1::2] = -0.2
    patch = torch.zeros_like(ae)
    patch[..., 10:22, 10:22] = 0.2
    for distance in ("squared", "absolute"):
        sharp_grain, sharp_patch = oe_sdn_map(grain, ae, distance), oe_sdn_map(patch, ae, distance)
        assert sharp_grain.max() == pytest.approx(sharp_patch.max())
        blurred_grain = oe_sdn_map(grain, ae, distance, difference_sigma=2.0)
        blurred_patch = oe_sdn_map(patch, ae, distance, difference_sigma=2.0)
        assert blurred_grain.max() < 0.05 * sharp_grain.max()
        assert blurred_patch[0, 16, 16] > 0.9 * sharp_patch[0, 16, 16]
    assert torch.equal(oe_sdn_map(patch, ae, "ssim", difference_sigma=2.0), oe_sdn_map(patch, ae, "ssim"))


def test_l2_residual_is_channel_mean_squared_error() -> None:
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0, 1, 1] = 0.5
    assert torch.allclose(l2_residual_map(x, torch.zeros_like(x))[0], torch.tensor([[0.0, 0.0], [0.0, 0.125]]))


def test_ssim_residual_is_zero_for_perfect_reconstruction_and_positive_otherwise() -> None:
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert ssim_residual_map(x, x, 7).abs().max() < 1e-5
    assert ssim_residual_map(x, x.flip(-1), 7).mean() > 0.1


@pytest.mark.parametrize(
    ("reduction", "expected"),
    [("mean", [1.0, 0.25]), ("max", [1.0, 1.0]), ("topk_mean", [1.0, 0.5])],
)
def test_reductions(reduction: str, expected: list[float]) -> None:
    maps = torch.zeros(2, 2, 2)
    maps[0] = 1.0
    maps[1, 0, 0] = 1.0  # one hot pixel of four
    scores = reduce_maps(maps, reduction, topk_fraction=0.5)  # type: ignore[arg-type]
    assert scores.tolist() == pytest.approx(expected)


def test_topk_keeps_at_least_one_pixel() -> None:
    maps = torch.arange(16.0).reshape(1, 4, 4)
    assert reduce_maps(maps, "topk_mean", topk_fraction=1e-6).item() == 15.0


def test_unknown_reduction() -> None:
    with pytest.raises(ValueError, match="unknown score reduction"):
        reduce_maps(torch.zeros(1, 2, 2), "median", 0.1)  # type: ignore[arg-type]


def test_smoothing_spreads_a_spike_but_keeps_constants() -> None:
    spike = torch.zeros(1, 15, 15)
    spike[0, 7, 7] = 1.0
    assert torch.equal(smooth_maps(spike, 0.0), spike)
    smoothed = smooth_maps(spike, 1.5)
    assert smoothed[0, 7, 7] < 1.0 and smoothed[0, 7, 8] > 0.0
    assert smoothed.sum().item() == pytest.approx(1.0, rel=1e-4)
    constant = torch.full((1, 9, 9), 0.3)
    assert torch.allclose(smooth_maps(constant, 2.0), constant)


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def test_detector_and_batched_scoring_agree_with_the_map_functions() -> None:
    settings = ScoringSettings(distance="absolute", smoothing_sigma=1.0, reduction="topk_mean", topk_fraction=0.1, ssim_window=7)
    detector = OESDNDetector(_Scale(0.5), _Scale(0.9), settings)
    images = np.random.default_rng(0).integers(0, 256, size=(5, 3, 16, 16), dtype=np.uint8)
    x = torch.from_numpy(images).float() / 255

    maps, scores = detector(x)
    expected = smooth_maps(oe_sdn_map(x * 0.9, x * 0.5, "absolute"), 1.0)
    assert torch.allclose(maps, expected, atol=1e-6)
    assert torch.allclose(scores, reduce_maps(expected, "topk_mean", 0.1), atol=1e-6)

    scored = score_images(detector, images, batch_size=2, device=torch.device("cpu"), progress=False)
    reference = method_maps(x, x * 0.5, x * 0.9, settings)
    for name, result in scored.items():
        assert result.maps.shape == (5, 16, 16)
        np.testing.assert_allclose(result.maps, reference[name].numpy(), atol=1e-6)
        np.testing.assert_allclose(result.scores, reduce_maps(reference[name], "topk_mean", 0.1).numpy(), atol=1e-6)


def test_calibration_standardises_each_distance_on_the_validation_normals() -> None:
    # Two distances over three normals: log scores (0, 1, 2) and (-2, -2, 4), centres 1 and 0.
    raw = torch.tensor([[1.0, np.e, np.e**2], [np.exp(-2), np.exp(-2), np.exp(4)]], dtype=torch.float64)
    calibration = ImageScoreCalibration.fit(("squared", "ssim"), raw)
    assert calibration.log_means == pytest.approx((1.0, 0.0))
    assert calibration.log_stds == pytest.approx((np.sqrt(2 / 3), np.sqrt(8)))
    z_first = (np.array([0.0, 1.0, 2.0]) - 1.0) / np.sqrt(2 / 3)
    z_second = np.array([-2.0, -2.0, 4.0]) / np.sqrt(8)
    np.testing.assert_allclose(calibration.combine(raw).numpy(), np.exp((z_first + z_second) / 2))
    # equal validation scores divide by the floor, not by zero
    flat = ImageScoreCalibration.fit(("squared",), torch.ones(1, 4))
    assert flat.log_stds == (0.01,)
    huge = flat.combine(torch.tensor([[2.0, 1e30]]))  # z of 69 and 6908: exp() stays inside float32
    assert torch.isfinite(huge).all() and huge[0] < huge[1]
    with pytest.raises(ValueError, match="validation scores"):
        ImageScoreCalibration.fit(("squared", "ssim"), torch.ones(1, 3))


def test_a_calibrated_detector_ships_the_standardised_mean_of_squared_and_ssim_scores() -> None:
    settings = ScoringSettings("squared", 1.0, "topk_mean", 0.1, 7, ("squared", "ssim"))
    ae, sdn = _Scale(0.5), _Scale(0.9)
    rng = np.random.default_rng(0)
    val = rng.integers(0, 256, size=(6, 3, 16, 16), dtype=np.uint8)
    test = rng.integers(0, 256, size=(5, 3, 16, 16), dtype=np.uint8)
    detector = calibrate(OESDNDetector(ae, sdn, settings), val, batch_size=4, device=torch.device("cpu"))
    assert detector.calibration is not None and detector.calibration.distances == ("squared", "ssim")

    def raw_scores(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images).float() / 255
        return torch.stack(
            [reduce_maps(smooth_maps(oe_sdn_map(x * 0.9, x * 0.5, d, 7), 1.0), "topk_mean", 0.1) for d in ("squared", "ssim")]
        )

    val_raw = raw_scores(val).double()
    expected_means = val_raw.log().mean(dim=1).tolist()
    assert detector.calibration.log_means == pytest.approx(expected_means, rel=1e-5)
    scored = score_images(detector, test, batch_size=2, device=torch.device("cpu"), progress=False)
    np.testing.assert_allclose(
        scored["oe_sdn"].scores, detector.calibration.combine(raw_scores(test).double()).numpy(), rtol=1e-4
    )
    # the map that localises stays the squared one, and the baselines keep their own reductions
    x = torch.from_numpy(test).float() / 255
    np.testing.assert_allclose(
        scored["oe_sdn"].maps, smooth_maps(oe_sdn_map(x * 0.9, x * 0.5, "squared"), 1.0).numpy(), atol=1e-6
    )
    np.testing.assert_allclose(
        scored["ae_l2"].scores, reduce_maps(torch.from_numpy(scored["ae_l2"].maps), "topk_mean", 0.1).numpy()
    )
    only = score_images(detector, test, batch_size=5, device=torch.device("cpu"), progress=False, methods=("oe_sdn",))
    np.testing.assert_allclose(only["oe_sdn"].scores, scored["oe_sdn"].scores, rtol=1e-6)
    # validation normals score around 1: the mean of their standardised logs is 0
    val_scored = score_images(detector, val, batch_size=6, device=torch.device("cpu"), progress=False, methods=("oe_sdn",))
    assert np.log(val_scored["oe_sdn"].scores).mean() == pytest.approx(0.0, abs=1e-5)


def test_a_multiscale_detector_maps_the_larger_standardised_blur_and_scores_the_chosen_one() -> None:
    """`map_sigmas`: the pixel map is the larger of the sharp and the blurred map, each over its 99th
    percentile on the validation normals; the image score stays the chosen (sharp) blur's."""
    from dataclasses import replace

    cpu = torch.device("cpu")
    settings = ScoringSettings("squared", 1.0, "topk_mean", 0.1, 7, ("squared", "ssim"), map_sigmas=(0.0, 2.0))
    rng = np.random.default_rng(3)
    val = rng.integers(0, 256, size=(6, 3, 16, 16), dtype=np.uint8)
    test = rng.integers(0, 256, size=(5, 3, 16, 16), dtype=np.uint8)
    multi = calibrate(OESDNDetector(_Scale(0.5), _Scale(0.9), settings), val, 4, cpu)
    single = calibrate(OESDNDetector(_Scale(0.5), _Scale(0.9), replace(settings, map_sigmas=())), val, 4, cpu)
    assert single.map_scales is None

    def sigma_map(images: np.ndarray, sigma: float) -> torch.Tensor:
        x = torch.from_numpy(images).float() / 255
        return smooth_maps(oe_sdn_map(x * 0.9, x * 0.5, "squared", 7, sigma), 1.0)

    scales = tuple(float(np.quantile(sigma_map(val, s).numpy(), MAP_SCALE_QUANTILE)) for s in (0.0, 2.0))
    assert multi.map_scales == pytest.approx(scales, rel=1e-5)
    scored = score_images(multi, test, 2, cpu, progress=False)["oe_sdn"]
    expected = torch.maximum(sigma_map(test, 0.0) / scales[0], sigma_map(test, 2.0) / scales[1])
    np.testing.assert_allclose(scored.maps, expected.numpy(), rtol=1e-4)
    np.testing.assert_allclose(scored.scores, score_images(single, test, 2, cpu, progress=False)["oe_sdn"].scores, rtol=1e-6)
    maps, scores = multi(torch.from_numpy(test).float() / 255)  # what predict and the ONNX export trace
    np.testing.assert_allclose(maps.numpy(), scored.maps, rtol=1e-5)
    np.testing.assert_allclose(scores.double().numpy(), scored.scores, rtol=1e-5)
    # validation normals sit at about 1 in both maps, so about 1 % of their pixels exceed 1 in each
    val_maps = score_images(multi, val, 6, cpu, progress=False, methods=("oe_sdn",))["oe_sdn"].maps
    assert 0.01 <= (val_maps > 1).mean() <= 0.02
    with pytest.raises(RuntimeError, match="calibrate"):
        OESDNDetector(_Scale(0.5), _Scale(0.9), settings)(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="one scale per map"):
        multiscale_map([torch.ones(1, 4, 4)], (1.0, 2.0))


def test_one_image_distance_equal_to_the_map_needs_no_calibration() -> None:
    settings = ScoringSettings("squared", 1.0, "topk_mean", 0.1, 7, ("squared",))
    images = np.random.default_rng(1).integers(0, 256, size=(4, 3, 16, 16), dtype=np.uint8)
    detector = calibrate(OESDNDetector(_Scale(0.5), _Scale(0.9), settings), images, 4, torch.device("cpu"))
    assert detector.calibration is None and not settings.calibrated
    scored = score_images(detector, images, 4, torch.device("cpu"), progress=False)["oe_sdn"]
    np.testing.assert_allclose(scored.scores, reduce_maps(torch.from_numpy(scored.maps), "topk_mean", 0.1).numpy())


def test_a_bundle_written_before_the_calibration_loads_unchanged_with_its_old_pair_id() -> None:
    from dataclasses import asdict

    from components.models.oesdn.bundle import BundleInfo, Preprocessing
    from components.provenance import fingerprint

    old_scoring = {
        "distance": "squared",
        "smoothing_sigma": 2.0,
        "reduction": "topk_mean",
        "topk_fraction": 0.01,
        "ssim_window": 7,
    }
    payload = {
        "format_version": 1,
        "category": "brick",
        "preprocessing": asdict(Preprocessing(128, 3)),
        "scoring": old_scoring,
        "image_threshold": 0.5,
        "pixel_threshold": 0.1,
        "metrics": {"oe_sdn": {"pixel_auroc": 0.9}},
        "masks_available": True,
        "test_manifest_hash": "t",
        "data_hash": "d",
        "network_sha256": {"ae": "a", "sdn": "s"},
        "provenance": {},
    }
    info = BundleInfo.from_json(payload)
    assert info.image_calibration is None and not info.scoring.calibrated
    assert info.pair_id == fingerprint({"ae": "a", "sdn": "s"}, payload["preprocessing"], old_scoring, 0.5)[:16]
    calibrated = BundleInfo.from_json(
        payload
        | {
            "scoring": old_scoring | {"image_distances": ["squared", "ssim"]},
            "image_calibration": {"distances": ["squared", "ssim"], "log_means": [0.0, 1.0], "log_stds": [1.0, 2.0]},
        }
    )
    assert calibrated.image_calibration == ImageScoreCalibration(("squared", "ssim"), (0.0, 1.0), (1.0, 2.0))
    assert BundleInfo.from_json(calibrated.to_json()) == calibrated and calibrated.pair_id != info.pair_id
    multiscale = BundleInfo.from_json(payload | {"scoring": old_scoring | {"map_sigmas": [0.0, 2.0]}, "map_scales": [0.5, 0.1]})
    assert multiscale.map_scales == (0.5, 0.1) and BundleInfo.from_json(multiscale.to_json()) == multiscale
    assert multiscale.pair_id != info.pair_id
    # a hand-edited bundle whose map blurs lost their scales is refused on load, naming both keys
    with pytest.raises(ValueError, match=r"map_sigmas \[0.0, 2.0\] needs one map_scales entry per blur, got None"):
        BundleInfo.from_json(payload | {"scoring": old_scoring | {"map_sigmas": [0.0, 2.0]}})
