"""Stage `train_ae`, and the fit-and-save steps both training stages share (see `train_sdn`)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import nn

from components import assembly
from components.config import OptimConfig
from components.data.prepared import PreparedData, load_prepared, read_dataset_record
from components.io import atomic_path
from components.models.oesdn.persistence import NetworkKind, build_network, save_network
from components.provenance import fingerprint
from components.runtime import seed_everything, select_device, to_float
from components.training import Batch, FitResult, Objective, fit
from pipelines.context import StageContext
from pipelines.stage_logging import track_stage


def seeded_inputs(ctx: StageContext) -> tuple[str, PreparedData]:
    """Seed every RNG, then load the category's data hash and prepared arrays."""
    assert ctx.category is not None
    seed_everything(ctx.params.seed)
    prepared_dir = ctx.layout.prepared(ctx.category)
    return read_dataset_record(prepared_dir, ctx.category)["data_hash"], load_prepared(prepared_dir)


def fit_network(
    ctx: StageContext,
    kind: NetworkKind,
    arch: dict[str, Any],
    objective: Objective,
    train: Batch,
    val: Batch,
    optim: OptimConfig,
    provenance: dict[str, Any],
    data_hash: str,
    tag: str,
) -> tuple[nn.Module, FitResult]:
    """Fit a fresh network, resuming an interrupted run from its checkpoint (`tag` names it)."""
    assert ctx.category is not None
    seed_everything(ctx.params.seed)
    settings = assembly.fit_settings(
        optim,
        ctx.params.seed,
        ctx.layout.checkpoint(ctx.category, tag),
        fingerprint(tag, arch, provenance["params"], data_hash, provenance["code_version"]["source_sha256"]),
        kind,
        ctx.progress,
    )
    network = build_network(kind, arch)
    device = select_device(ctx.device)
    threads = torch.get_num_threads()
    where = f"cpu, {threads} CPU thread{'s' if threads > 1 else ''}" if device.type == "cpu" else device.type
    print(f"{ctx.category}: training the {kind} on {where}")
    result = fit(network, objective, train, val, settings, device)
    settings.checkpoint_path.unlink(missing_ok=True)
    return network, result


def save_trained(
    ctx: StageContext,
    kind: NetworkKind,
    network: nn.Module,
    arch: dict[str, Any],
    result: FitResult,
    provenance: dict[str, Any],
    extra: dict[str, Any],
) -> None:
    """Write the network with its history and provenance, then log the stage."""
    assert ctx.category is not None
    layout = ctx.layout
    record = {"provenance": provenance, "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss, **extra}
    network_file, history_file = layout.network(ctx.category, kind), layout.history(ctx.category, kind)
    save_network(network_file, network, kind, arch, record)
    with atomic_path(history_file) as tmp:
        pd.DataFrame(result.history).to_csv(tmp, index=False)
    upstream = [layout.prepared(ctx.category)] + ([layout.network(ctx.category, "ae")] if kind == "sdn" else [])
    track_stage(
        ctx,
        f"train_{kind}",
        provenance,
        [layout.relative(path) for path in upstream],
        {network_file: "checkpoints", history_file: "history"},
        history=result.history,
    )
    print(f"{ctx.category}: {kind} best validation loss {result.best_val_loss:.5f} at epoch {result.best_epoch}")


def run_ae(ctx: StageContext) -> None:
    data_hash, data = seeded_inputs(ctx)
    ae = ctx.params.ae
    arch = assembly.ae_arch(ctx.params.data.channels, ae)
    objective = assembly.ae_objective(ctx.params.loss, ae)
    provenance = ctx.provenance(("data", "loss", "ae"), data_hash)
    network, result = fit_network(
        ctx, "ae", arch, objective, (to_float(data.train),), (to_float(data.val),), ae, provenance, data_hash, "ae"
    )
    save_trained(ctx, "ae", network, arch, result, provenance, {})
