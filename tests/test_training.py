from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from components.models.oesdn.losses import ReconstructionLoss
from components.models.oesdn.networks import ConvAutoencoder
from components.models.oesdn.objectives import AutoencoderObjective
from components.runtime import seed_everything
from components.training import FitSettings, TrainingDivergedError, fit, random_crops

CPU = torch.device("cpu")


def _settings(tmp_path: Path, **changes: object) -> FitSettings:
    base = FitSettings(
        epochs=3,
        batch_size=4,
        learning_rate=1e-3,
        weight_decay=0.0,
        patience=0,
        seed=0,
        checkpoint_path=tmp_path / "ckpt.pt",
        fingerprint="f1",
        param_prefix="ae",
        progress=False,
    )
    return replace(base, **changes)


def _data() -> tuple[tuple[torch.Tensor], tuple[torch.Tensor]]:
    images = torch.rand(12, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    return (images[:9],), (images[9:],)


def _model() -> nn.Module:
    seed_everything(0)
    return ConvAutoencoder(channels=1, base_channels=4, latent_channels=2, depth=2)


OBJECTIVE = AutoencoderObjective(ReconstructionLoss(1.0, 1.0, 3))


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


def test_training_is_deterministic_and_reduces_loss(tmp_path: Path) -> None:
    train, val = _data()
    runs = []
    for name in ("a", "b"):
        model = _model()
        result = fit(model, OBJECTIVE, train, val, _settings(tmp_path / name), CPU)
        runs.append((_weights(model), result))
    (w1, r1), (w2, r2) = runs
    assert all(torch.equal(a, b) for a, b in zip(w1, w2, strict=True))
    assert [h["val_loss"] for h in r1.history] == [h["val_loss"] for h in r2.history]
    assert r1.history[-1]["train_loss"] < r1.history[0]["train_loss"]
    assert r1.best_val_loss == min(h["val_loss"] for h in r1.history)


class _Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    train, val = _data()
    reference = _model()
    fit(reference, OBJECTIVE, train, val, _settings(tmp_path / "ref"), CPU)

    calls = {"n": 0}

    def crashing(model: nn.Module, batch, generator):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 7:  # 2 train + 1 validation call per epoch: dies in epoch 3
            raise _Interrupt
        return OBJECTIVE(model, batch, generator)

    settings = _settings(tmp_path / "run")
    with pytest.raises(_Interrupt):
        fit(_model(), crashing, train, val, settings, CPU)
    assert settings.checkpoint_path.is_file()

    resumed = _model()
    result = fit(resumed, OBJECTIVE, train, val, settings, CPU)
    assert result.resumed_from_epoch == 2
    assert len(result.history) == 3
    assert all(torch.equal(a, b) for a, b in zip(_weights(reference), _weights(resumed), strict=True))


def test_a_checkpoint_from_other_settings_is_not_resumed(tmp_path: Path) -> None:
    train, val = _data()
    fit(_model(), OBJECTIVE, train, val, _settings(tmp_path, epochs=1), CPU)
    result = fit(_model(), OBJECTIVE, train, val, _settings(tmp_path, epochs=2, fingerprint="other"), CPU)
    assert result.resumed_from_epoch is None and len(result.history) == 2


def test_nan_loss_stops_training_with_a_clear_error(tmp_path: Path) -> None:
    train, val = _data()
    poisoned = (train[0].clone(),)
    poisoned[0][0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match=r"ae\.learning_rate"):
        fit(_model(), OBJECTIVE, poisoned, val, _settings(tmp_path), CPU)


def test_early_stopping_keeps_the_best_epoch(tmp_path: Path) -> None:
    train, val = _data()
    model = _model()
    result = fit(model, OBJECTIVE, train, val, _settings(tmp_path, epochs=40, patience=1, learning_rate=0.5), CPU)
    assert len(result.history) < 40
    assert result.best_val_loss == min(h["val_loss"] for h in result.history)


def test_validating_from_half_way_trains_the_same_steps_and_keeps_the_best_checked_epoch(tmp_path: Path) -> None:
    train, val = _data()
    every = fit(_model(), OBJECTIVE, train, val, _settings(tmp_path / "every", epochs=4), CPU)
    late = fit(_model(), OBJECTIVE, train, val, _settings(tmp_path / "late", epochs=4, validate_from=0.5), CPU)
    # validation draws from its own generator, so skipping it leaves every training step as it was
    assert [h["train_loss"] for h in late.history] == [h["train_loss"] for h in every.history]
    assert [h.get("val_loss") for h in late.history] == [None, None] + [h["val_loss"] for h in every.history[2:]]
    assert late.best_val_loss == min(h["val_loss"] for h in every.history[2:])
    assert late.best_epoch in (3, 4)


def test_the_last_epoch_is_always_validated(tmp_path: Path) -> None:
    train, val = _data()
    result = fit(_model(), OBJECTIVE, train, val, _settings(tmp_path, epochs=3, validate_from=0.99), CPU)
    assert ["val_loss" in h for h in result.history] == [False, False, True]
    assert result.best_epoch == 3


@pytest.mark.parametrize(
    ("epochs", "validate_from", "validations", "expected"),
    [
        (65, 0.5, 8, range(34, 65, 5)),  # 33 epochs from 32 on: 7 checks, 5 apart, the last included
        (65, 0.5, 0, range(32, 65)),  # 0 = every epoch from validate_from on
        (15, 0.5, 8, range(7, 15)),  # fewer epochs than checks: every one, as before
        (10, 0.0, 1, range(9, 10)),  # one check: the last epoch
    ],
)
def test_checks_are_spread_back_from_the_last_epoch(epochs: int, validate_from: float, validations: int, expected: range) -> None:
    settings = replace(_settings(Path("unused")), validate_from=validate_from, validations=validations)
    checked = settings.validated_epochs(epochs)
    assert list(checked) == list(expected)
    assert len(checked) <= (validations or epochs) and checked[-1] == epochs - 1


def test_spaced_checks_train_the_same_steps_and_keep_the_best_checked_epoch(tmp_path: Path) -> None:
    train, val = _data()
    every = fit(_model(), OBJECTIVE, train, val, _settings(tmp_path / "every", epochs=6), CPU)
    spaced = fit(_model(), OBJECTIVE, train, val, _settings(tmp_path / "spaced", epochs=6, validations=2), CPU)
    assert [h["train_loss"] for h in spaced.history] == [h["train_loss"] for h in every.history]
    checked = [every.history[2]["val_loss"], every.history[5]["val_loss"]]
    assert [h.get("val_loss") for h in spaced.history] == [None, None, checked[0], None, None, checked[1]]
    assert spaced.best_val_loss == min(checked)
    assert spaced.best_epoch == (3 if checked[0] < checked[1] else 6)


def test_patience_counts_epochs_between_spaced_checks(tmp_path: Path) -> None:
    train, val = _data()
    # a learning rate this high makes the validation loss worse after the first check; with checks 3 epochs
    # apart, a patience of 3 epochs stops at the first check that is not the best
    settings = _settings(tmp_path, epochs=30, validations=10, patience=3, learning_rate=0.5)
    result = fit(_model(), OBJECTIVE, train, val, settings, CPU)
    checks = [h for h in result.history if "val_loss" in h]
    assert len(result.history) < 30
    assert checks[-1] is result.history[-1] and checks[-1]["val_loss"] > result.best_val_loss
    assert result.history[-1]["epoch"] - result.best_epoch == 3  # counting checks instead would run 9 epochs on


def test_seeding_asks_torch_for_deterministic_kernels_warning_where_none_exist() -> None:
    import torch

    from components.runtime import seed_everything

    before = torch.get_deterministic_debug_mode()
    try:
        seed_everything(0)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.set_deterministic_debug_mode(before)


def test_random_crops_cut_the_same_window_from_aligned_tensors() -> None:
    images = torch.rand(5, 3, 32, 24, generator=torch.Generator().manual_seed(1))
    crops, doubled = random_crops((images, images * 2), 16, torch.Generator().manual_seed(7))
    assert crops.shape == (5, 3, 16, 16) and torch.equal(doubled, crops * 2)
    # In the layout the networks run in (prepare_module): an NCHW crop cost every convolution a conversion.
    assert crops.is_contiguous(memory_format=torch.channels_last)
    draws = torch.Generator().manual_seed(7)
    tops, lefts = torch.randint(0, 17, (5,), generator=draws), torch.randint(0, 9, (5,), generator=draws)
    for image, crop, top, left in zip(images, crops, tops, lefts, strict=True):
        assert torch.equal(crop, image[:, top : top + 16, left : left + 16])
    again, _ = random_crops((images, images), 16, torch.Generator().manual_seed(7))
    assert torch.equal(again, crops)
    assert random_crops((images,), 0, torch.Generator())[0] is images


def test_training_on_crops_is_deterministic_and_validates_on_whole_images(tmp_path: Path) -> None:
    train, val = _data()
    runs = []
    for name in ("a", "b"):
        model = _model()
        result = fit(model, OBJECTIVE, train, val, _settings(tmp_path / name, crop_size=8), CPU)
        runs.append((_weights(model), result))
    (w1, r1), (w2, r2) = runs
    assert all(torch.equal(a, b) for a, b in zip(w1, w2, strict=True))
    whole = _model()
    fit(whole, OBJECTIVE, train, val, _settings(tmp_path / "whole"), CPU)
    assert not all(torch.equal(a, b) for a, b in zip(w1, _weights(whole), strict=True))
    assert r1.history == r2.history
    model = _model()
    model.load_state_dict(dict(zip(model.state_dict(), w1, strict=True)))
    model.eval()
    with torch.no_grad():
        whole_val_loss = OBJECTIVE(model, val, torch.Generator())[0].item()
    assert whole_val_loss == pytest.approx(r1.best_val_loss, rel=1e-5)
