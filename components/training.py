"""A small, deterministic training loop with per-epoch checkpoints that a re-run resumes from.

Shuffling draws from a generator seeded by (seed, epoch), so an epoch replays identically whether
the run went straight through or was interrupted and resumed from its last checkpoint.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from components.io import atomic_path
from components.processes import single_writer
from components.runtime import autocast, evaluation_mode, prepare_module, to_device
from components.torch_files import TorchFileError, read_torch_file

Batch = tuple[torch.Tensor, ...]
Objective = Callable[[nn.Module, Batch, torch.Generator], tuple[torch.Tensor, dict[str, torch.Tensor]]]
"""Maps (model, batch, generator) to (total loss, named loss terms for logging)."""


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; training cannot continue meaningfully."""


@dataclass(frozen=True)
class FitSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    patience: int
    seed: int
    checkpoint_path: Path
    fingerprint: str
    """Identifies params, data and code; a checkpoint with another fingerprint is not resumed."""
    param_prefix: str
    """The params.yaml section these settings came from, named in error messages."""
    progress: bool = True
    min_steps: int = 0
    """Train at least this many optimiser steps: on a small category, epochs alone give too few."""
    crop_size: int = 0
    """Train on a random crop of this side from each image (0 = whole images); validation sees
    whole images. The networks are fully convolutional, so crops keep a step's cost at that of a
    small image while the model sees the detail of the full resolution."""

    validate_from: float = 0.0
    """Validate only from this share of the epochs on (0 = every epoch). Validation on whole
    images costs a fifth of a training epoch, and in every run measured (166 histories, suite and
    bundled data, 3 seeds) the best epoch lay in the last fifth of training: the early checks only
    ever found weights that were not kept. Training itself is unchanged: validation draws from its
    own generator."""

    validations: int = 0
    """Validate at most this many epochs of those from `validate_from` on, evenly spaced back from the
    last (0 = every one). A 150-image category at 256 px trains 40-70 short epochs, and a check on its
    whole validation images cost more than the epoch itself: at 450 AE steps a third of the AE's
    training time went to checks of epochs whose loss was still falling. Training itself is unchanged."""

    def validated_epochs(self, epochs: int) -> range:
        """The 0-based epochs validated: from `validate_from` on, every `step`-th counting back from
        the last, so that the last epoch always is and at most `validations` are."""
        first = math.floor(self.validate_from * epochs)  # at most epochs - 1: validate_from < 1
        span = epochs - first
        step = math.ceil(span / self.validations) if self.validations else 1
        return range(epochs - 1 - (span - 1) // step * step, epochs, step)

    def epochs_for(self, train_count: int) -> int:
        """`epochs`, raised so that the run takes at least `min_steps` steps of full batches."""
        steps_per_epoch = max(1, train_count // self.batch_size)
        return max(self.epochs, math.ceil(self.min_steps / steps_per_epoch))


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = math.inf
    resumed_from_epoch: int | None = None


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _batches(data: Batch, batch_size: int, order: torch.Tensor, device: torch.device) -> list[Batch]:
    """Full batches in `order` (a trailing remnant is dropped so batch norm never sees one image)."""
    count = max(1, len(order) // batch_size)
    return [tuple(to_device(t[order[i * batch_size : (i + 1) * batch_size]], device) for t in data) for i in range(count)]


def random_crops(batch: Batch, size: int, generator: torch.Generator) -> Batch:
    """The same random `size` x `size` window from every tensor of `batch`, a window per image.

    The tensors are image-shaped (N, C, H, W) and aligned (e.g. images and their AE outputs), so
    one window per image applies to all of them. Offsets come from `generator`: an epoch replays.
    """
    count, _, height, width = batch[0].shape
    if size <= 0 or (size >= height and size >= width):
        return batch
    if size > height or size > width:
        raise ValueError(f"crop_size {size} is larger than the {height}x{width} images")
    top = torch.randint(0, height - size + 1, (count,), generator=generator)
    left = torch.randint(0, width - size + 1, (count,), generator=generator)
    offsets = torch.arange(size)
    rows = (top[:, None] + offsets).to(batch[0].device)[:, :, None]
    cols = (left[:, None] + offsets).to(batch[0].device)[:, None, :]
    index = torch.arange(count, device=batch[0].device)[:, None, None]
    # Advanced indexing on (N, H, W) with C sliced puts C last: (N, size, size, C), which permuted is
    # (N, C, size, size) in the channels-last layout the networks run in. Made NCHW-contiguous
    # instead, the crops cost a layout conversion in every convolution: a training step 20 % slower.
    return tuple(t[index, :, rows, cols].permute(0, 3, 1, 2) for t in batch)


def _check_finite(loss: torch.Tensor, where: str, settings: FitSettings) -> None:
    if not torch.isfinite(loss):
        raise TrainingDivergedError(
            f"loss became {loss.item()} at {where}; lower {settings.param_prefix}.learning_rate "
            f"(now {settings.learning_rate}) or check the input images for constant or corrupt data"
        )


def _validation_loss(model: nn.Module, objective: Objective, data: Batch, settings: FitSettings, device: torch.device) -> float:
    generator = _epoch_generator(settings.seed, -1)
    total, count = 0.0, 0
    with evaluation_mode(model), autocast(device):
        for start in range(0, len(data[0]), settings.batch_size):
            batch = tuple(to_device(t[start : start + settings.batch_size], device) for t in data)
            loss, _ = objective(model, batch, generator)
            total += loss.item() * len(batch[0])
            count += len(batch[0])
    return total / count


def _load_checkpoint(settings: FitSettings) -> dict[str, Any] | None:
    path = settings.checkpoint_path
    if not path.is_file():
        return None
    try:
        state = read_torch_file(path, "a training checkpoint of oesdn", "training starts afresh")
    except TorchFileError as error:  # a checkpoint only saves time: never let a bad one stop training
        tqdm.write(f"ignoring checkpoint: {error}")
        return None
    if state.get("fingerprint") != settings.fingerprint:
        tqdm.write(f"ignoring checkpoint {path}: it was made with other params, data or code")
        return None
    return state


def fit(
    model: nn.Module,
    objective: Objective,
    train_data: Batch,
    val_data: Batch,
    settings: FitSettings,
    device: torch.device,
) -> FitResult:
    """Train `model` in place with Adam; keep the weights of the best validation epoch.

    The checkpoint has one writer: a second trainer on the same checkpoint (a `dvc repro` started
    beside a running one) fails at once instead of resuming from, and overwriting, a live file.
    """
    if len(train_data[0]) == 0 or len(val_data[0]) == 0:
        raise ValueError("training and validation sets must each hold at least one image")
    lock = settings.checkpoint_path.with_name(settings.checkpoint_path.name + ".lock")
    with single_writer(lock, f"the {settings.param_prefix} training checkpoint {settings.checkpoint_path}"):
        return _fit(model, objective, train_data, val_data, settings, device)


def _fit(
    model: nn.Module,
    objective: Objective,
    train_data: Batch,
    val_data: Batch,
    settings: FitSettings,
    device: torch.device,
) -> FitResult:
    prepare_module(model, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    start_epoch, bad_epochs = 0, 0

    checkpoint = _load_checkpoint(settings)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        best_state = checkpoint["best_model"]
        start_epoch, bad_epochs = checkpoint["epoch"] + 1, checkpoint["bad_epochs"]
        result.history = list(checkpoint["history"])
        result.best_epoch, result.best_val_loss = checkpoint["best_epoch"], checkpoint["best_val_loss"]
        result.resumed_from_epoch = start_epoch
        tqdm.write(f"resuming {settings.param_prefix} training from epoch {start_epoch + 1} ({settings.checkpoint_path})")

    epochs = settings.epochs_for(len(train_data[0]))
    validated = settings.validated_epochs(epochs)
    bar = tqdm(
        range(start_epoch, epochs),
        desc=f"train {settings.param_prefix}",
        initial=start_epoch,
        total=epochs,
        unit="epoch",
        disable=not settings.progress,
    )
    for epoch in bar:
        if settings.patience and bad_epochs >= settings.patience:
            break
        generator = _epoch_generator(settings.seed, epoch)
        order = torch.randperm(len(train_data[0]), generator=generator)
        model.train()
        terms_sum: dict[str, float] = {}
        batches = _batches(train_data, settings.batch_size, order, device)
        for step, batch in enumerate(batches):
            batch = random_crops(batch, settings.crop_size, generator)
            with autocast(device):
                loss, terms = objective(model, batch, generator)
            _check_finite(loss, f"epoch {epoch + 1}, batch {step + 1}", settings)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for name, value in {"loss": loss, **terms}.items():
                terms_sum[name] = terms_sum.get(name, 0.0) + value.item()
        record: dict[str, float] = {"epoch": epoch + 1, **{f"train_{k}": v / len(batches) for k, v in terms_sum.items()}}
        shown = f"loss {record['train_loss']:.4f}"
        if epoch in validated:
            val_loss = _validation_loss(model, objective, val_data, settings, device)
            _check_finite(torch.tensor(val_loss), f"epoch {epoch + 1} (validation)", settings)
            record["val_loss"] = val_loss
            shown += f", val {val_loss:.4f}"
            if val_loss < result.best_val_loss:
                result.best_val_loss, result.best_epoch = val_loss, epoch + 1
                best_state = copy.deepcopy(model.state_dict())
            bad_epochs = epoch + 1 - result.best_epoch  # epochs since the best, however far apart the checks
        result.history.append(record)
        bar.set_postfix_str(shown)
        if not settings.progress:  # without a bar, one line per epoch still shows the run is alive
            print(f"{settings.param_prefix} epoch {epoch + 1}/{epochs}: {shown}")
        _save_checkpoint(settings, model, optimizer, best_state, epoch, bad_epochs, result)

    model.load_state_dict(best_state)
    return result


def _save_checkpoint(
    settings: FitSettings,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    best_state: dict[str, torch.Tensor],
    epoch: int,
    bad_epochs: int,
    result: FitResult,
) -> None:
    state = {
        "fingerprint": settings.fingerprint,
        "epoch": epoch,
        "bad_epochs": bad_epochs,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "best_model": best_state,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "history": result.history,
    }
    with atomic_path(settings.checkpoint_path) as tmp:
        torch.save(state, tmp)
