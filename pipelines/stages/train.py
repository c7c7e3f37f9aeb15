"""Stages `train_ae` and `train_sdn`: the two training phases of OE-SDN for one category."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import nn

from components import assembly
from components.config import OptimConfig
from components.data.prepared import PreparedData, load_prepared
from components.io import atomic_path
from components.models.oesdn.objectives import AutoencoderObjective
from components.models.oesdn.persistence import NetworkKind, build_network, load_network, save_network
from components.provenance import fingerprint
from components.runtime import batched_inference, seed_everything, select_device, to_float
from components.training import Batch, Objective, fit
from pipelines.context import StageContext
from pipelines.stages.prepare import read_dataset_record
from pipelines.tracking import track_stage


def _seeded_inputs(ctx: StageContext) -> tuple[str, PreparedData]:
    """Seed every RNG, then load the category's data hash and prepared arrays."""
    assert ctx.category is not None
    seed_everything(ctx.params.seed)
    prepared_dir = ctx.layout.prepared(ctx.category)
    return read_dataset_record(prepared_dir, ctx.category)["data_hash"], load_prepared(prepared_dir)


def _train_and_save(
    ctx: StageContext,
    kind: NetworkKind,
    arch: dict[str, int],
    objective: Objective,
    train: Batch,
    val: Batch,
    optim: OptimConfig,
    sections: tuple[str, ...],
    data_hash: str,
) -> nn.Module:
    """Fit a fresh network (resuming an interrupted run) and write it with its history and provenance."""
    assert ctx.category is not None
    device = select_device(ctx.device)
    provenance = ctx.provenance(sections, data_hash)
    settings = assembly.fit_settings(
        optim,
        ctx.params.seed,
        ctx.layout.checkpoint(ctx.category, kind),
        fingerprint(kind, arch, provenance["params"], data_hash, provenance["code_version"]["source_sha256"]),
        kind,
        ctx.progress,
    )
    network = build_network(kind, arch)
    result = fit(network, objective, train, val, settings, device)
    out_dir = ctx.layout.models(ctx.category)
    extra: dict[str, Any] = {"provenance": provenance, "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss}
    save_network(out_dir / f"{kind}.pt", network, kind, arch, extra)
    with atomic_path(out_dir / f"{kind}_history.csv") as tmp:
        pd.DataFrame(result.history).to_csv(tmp, index=False)
    settings.checkpoint_path.unlink(missing_ok=True)
    upstream = [f"data/prepared/{ctx.category}"] + ([f"models/{ctx.category}/ae.pt"] if kind == "sdn" else [])
    track_stage(
        ctx,
        f"train_{kind}",
        provenance,
        upstream,
        {out_dir / f"{kind}.pt": "checkpoints", out_dir / f"{kind}_history.csv": "history"},
        history=result.history,
    )
    print(f"{ctx.category}: {kind} best validation loss {result.best_val_loss:.5f} at epoch {result.best_epoch} on {device}")
    return network


def run_ae(ctx: StageContext) -> None:
    data_hash, data = _seeded_inputs(ctx)
    ae = ctx.params.ae
    arch = assembly.ae_arch(ctx.params.data.channels, ae)
    objective = AutoencoderObjective(assembly.reconstruction_loss(ctx.params.loss))
    _train_and_save(ctx, "ae", arch, objective, (to_float(data.train),), (to_float(data.val),), ae, ("data", "loss", "ae"), data_hash)


def run_sdn(ctx: StageContext) -> None:
    data_hash, data = _seeded_inputs(ctx)
    sdn = ctx.params.sdn
    device = select_device(ctx.device)
    autoencoder, _ = load_network(ctx.layout.models(ctx.category) / "ae.pt", "ae")
    train, val = to_float(data.train), to_float(data.val)
    with torch.no_grad():
        train_targets = batched_inference(autoencoder, train, sdn.batch_size, device)
        val_targets = batched_inference(autoencoder, val, sdn.batch_size, device)
    arch = assembly.sdn_arch(ctx.params.data.channels, sdn)
    objective = assembly.sdn_objective(ctx.params.loss, sdn)
    _train_and_save(
        ctx, "sdn", arch, objective, (train, train_targets), (val, val_targets), sdn, ("data", "loss", "ae", "sdn"), data_hash
    )
