from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from components.models.oesdn.losses import ReconstructionLoss
from components.models.oesdn.objectives import AutoencoderObjective, StyleDistillationObjective
from components.models.oesdn.outlier_exposure import TRANSFORMS, AuxSettings, make_aux_batch, oer_pair

ROTATIONS = AuxSettings(("rot90", "rot180", "rot270"), noise_std=0.1, blur_sigma=1.0)


def _images(n: int = 6, channels: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(0))


def test_loss_is_zero_for_identical_images() -> None:
    x = _images()
    assert ReconstructionLoss(1.0, 1.0, 7)(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_loss_terms_and_weights() -> None:
    a, b = _images(), _images().flip(0)
    mse_only = ReconstructionLoss(1.0, 0.0, 7)(a, b)
    assert mse_only.item() == pytest.approx(F.mse_loss(a, b).item(), rel=1e-6)
    dssim_only = ReconstructionLoss(0.0, 1.0, 7)(a, b)
    assert 0.0 < dssim_only.item() <= 1.0
    combined = ReconstructionLoss(2.0, 3.0, 7)(a, b)
    assert combined.item() == pytest.approx(2 * mse_only.item() + 3 * dssim_only.item(), rel=1e-5)


def test_dssim_of_a_constant_shift_matches_hand_computation() -> None:
    # Constant images a and a + d: variances are 0, so SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1).
    a = torch.full((1, 1, 16, 16), 0.4, dtype=torch.float64)  # fp64: variances cancel exactly
    b = a + 0.2
    c1 = 0.01**2
    ssim = (2 * 0.4 * 0.6 + c1) / (0.4**2 + 0.6**2 + c1)
    loss = ReconstructionLoss(0.0, 1.0, 7)(a, b)
    assert loss.item() == pytest.approx((1 - ssim) / 2, rel=1e-4)


def test_rotation_transforms_are_exact_rotations() -> None:
    x = _images()
    g = torch.Generator()
    for k, name in enumerate(("rot90", "rot180", "rot270"), start=1):
        assert torch.equal(TRANSFORMS[name](x, g, ROTATIONS), torch.rot90(x, k, dims=(-2, -1)))
    assert torch.equal(TRANSFORMS["hflip"](x, g, ROTATIONS), x.flip(-1))
    assert torch.equal(TRANSFORMS["vflip"](x, g, ROTATIONS), x.flip(-2))


def test_aux_batch_gives_each_image_one_allowed_transform() -> None:
    x = _images(n=32)
    aux, masks = make_aux_batch(x, torch.Generator().manual_seed(1), ROTATIONS)
    assert masks.all(), "a rotated image is an outlier everywhere"
    candidates = torch.stack([torch.rot90(x, k, dims=(-2, -1)) for k in (1, 2, 3)])  # (3, N, C, H, W)
    matches = (candidates == aux[None]).flatten(2).all(dim=2)  # (3, N)
    assert matches.any(dim=0).all()
    assert matches.any(dim=1).all(), "32 draws should use every rotation"
    again, _ = make_aux_batch(x, torch.Generator().manual_seed(1), ROTATIONS)
    assert torch.equal(aux, again)


def test_noise_and_blur_stay_in_range_and_change_the_image() -> None:
    x = _images()
    for name in ("gaussian_noise", "gaussian_blur"):
        out, _ = make_aux_batch(x, torch.Generator().manual_seed(0), AuxSettings((name,), 0.1, 1.0))
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
        assert not torch.allclose(out, x)


def test_oer_target_is_the_auxiliary_input_itself() -> None:
    x = _images()
    inputs, targets = oer_pair(x, x * 0.5, torch.Generator().manual_seed(2), ROTATIONS)
    assert torch.equal(inputs, targets)
    assert not torch.equal(inputs, x)


def test_aux_errors() -> None:
    with pytest.raises(ValueError, match="unknown auxiliary transform"):
        make_aux_batch(_images(), torch.Generator(), AuxSettings(("rot45",), 0.1, 1.0))
    with pytest.raises(ValueError, match="no auxiliary transforms"):
        make_aux_batch(_images(), torch.Generator(), AuxSettings((), 0.1, 1.0))


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_sdn_objective_weights_kd_and_oer() -> None:
    distance = ReconstructionLoss(1.0, 0.0, 7)
    x = _images()
    ae_out = x * 0.5
    identity = _Identity()
    kd = F.mse_loss(x, ae_out).item()

    plain = StyleDistillationObjective(distance, 0.0, ROTATIONS)
    total, terms = plain(identity, (x, ae_out), torch.Generator().manual_seed(0))
    assert set(terms) == {"kd"} and total.item() == pytest.approx(kd)

    # An identity network copies outliers perfectly, so the OER term vanishes and only KD remains.
    oe = StyleDistillationObjective(distance, 0.25, ROTATIONS)
    total, terms = oe(identity, (x, ae_out), torch.Generator().manual_seed(0))
    assert terms["oer"].item() == pytest.approx(0.0, abs=1e-7)
    assert total.item() == pytest.approx(0.75 * kd, rel=1e-6)


def test_sdn_objective_oer_penalises_a_network_that_does_not_copy_outliers() -> None:
    distance = ReconstructionLoss(1.0, 0.0, 7)
    x = _images()
    mean_image = nn.Module()
    mean_image.forward = lambda inp: torch.full_like(inp, 0.5)  # type: ignore[method-assign]
    total, terms = StyleDistillationObjective(distance, 1.0, ROTATIONS)(mean_image, (x, x), torch.Generator().manual_seed(0))
    assert terms["oer"].item() == pytest.approx(F.mse_loss(x, torch.full_like(x, 0.5)).item(), rel=1e-5)
    assert total.item() == pytest.approx(terms["oer"].item())


def test_sdn_objective_normalises_normal_and_outlier_images_as_at_test_time() -> None:
    """Batch norm must see normal and auxiliary images in one batch, as its running statistics do.

    With momentum 1 the running statistics are those of the last batch seen in training. If the
    objective normalised the normal images alone in training (a separate forward pass), the
    network would give them a different output in eval mode than it was trained to give.
    """
    from components.models.oesdn.networks import StyleDistillationNet

    torch.manual_seed(0)
    sdn = StyleDistillationNet(1, 4, 2, residual=False)
    for module in sdn.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0
    x = _images(8, channels=1)
    seen: list[torch.Tensor] = []
    sdn.register_forward_hook(lambda module, inputs, output: seen.append(output.detach()))
    sdn.train()
    StyleDistillationObjective(ReconstructionLoss(1.0, 0.0, 7), 0.5, ROTATIONS)(sdn, (x, x), torch.Generator().manual_seed(0))
    trained_output = seen[0][: len(x)]  # the normal images come first in the objective's batch
    sdn.eval()
    with torch.no_grad():
        # Only the unbiased (running) vs biased (batch) variance differs: about 1e-3 here, 0.08 with two passes.
        assert (sdn(x) - trained_output).abs().max().item() < 5e-3


def test_ae_objective_reconstructs_its_input() -> None:
    x = _images()
    total, terms = AutoencoderObjective(ReconstructionLoss(1.0, 0.0, 7))(_Identity(), (x,), torch.Generator())
    assert total.item() == 0.0 and terms == {}


class _Recorder(nn.Module):
    """Returns a fixed image and remembers what it was given."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen = images
        return torch.full_like(images, 0.5)


def test_denoising_ae_objective_corrupts_a_share_of_inputs_but_targets_the_clean_images() -> None:
    x = _images()
    settings = AuxSettings(("foreign_patch", "noise_patch"), 0.1, 1.5)
    distance = ReconstructionLoss(1.0, 0.0, 7)
    plain_loss, _ = AutoencoderObjective(distance)(_Recorder(), (x,), torch.Generator())

    recorder = _Recorder()
    loss, _ = AutoencoderObjective(distance, settings, denoise_share=1.0)(recorder, (x,), torch.Generator().manual_seed(0))
    changed = (recorder.seen != x).flatten(1).any(1)
    assert changed.all()  # every image entered corrupted ...
    assert torch.equal(loss, plain_loss)  # ... and the loss was still taken against the clean images

    AutoencoderObjective(distance, settings, denoise_share=0.5)(recorder, (x,), torch.Generator().manual_seed(1))
    assert 0 < (recorder.seen != x).flatten(1).any(1).sum() < len(x)

    AutoencoderObjective(distance, settings, denoise_share=0.0)(recorder, (x,), torch.Generator().manual_seed(0))
    assert torch.equal(recorder.seen, x)


def test_photometric_outliers() -> None:
    x = _images()
    g = torch.Generator()
    assert torch.allclose(TRANSFORMS["invert"](x, g, ROTATIONS), 1.0 - x)
    assert torch.equal(TRANSFORMS["channel_shuffle"](x, g, ROTATIONS), x[:, [2, 0, 1]])
    with pytest.raises(ValueError, match="channel_shuffle needs colour images"):
        TRANSFORMS["channel_shuffle"](_images(channels=1), g, ROTATIONS)
