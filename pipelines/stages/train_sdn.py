"""Stage `train_sdn`: the style distillation network, trained against the frozen AE.

With `sdn.candidates`, every candidate is trained and the best on the label-free check is kept.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from components import assembly
from components.models.oesdn.persistence import load_network
from components.models.oesdn.tiling import Tiled
from components.runtime import batched_inference, select_device, to_float
from components.training import FitResult
from pipelines.context import StageContext
from pipelines.stages.train import fit_network, save_trained, seeded_inputs


def run(ctx: StageContext) -> None:
    """Train the SDN; with `sdn.candidates`, train each and keep the best on the label-free check."""
    data_hash, data = seeded_inputs(ctx)
    params = ctx.params
    device = select_device(ctx.device)
    autoencoder, _ = load_network(ctx.layout.network(ctx.category, "ae"), "ae")
    train, val = to_float(data.train), to_float(data.val)
    teacher = Tiled(autoencoder, params.score.tile_size)  # f_AE(x) as the detector computes it
    with torch.no_grad():
        train_targets = batched_inference(teacher, train, params.sdn.batch_size, device)
        val_targets = batched_inference(teacher, val, params.sdn.batch_size, device)
    provenance = ctx.provenance(("data", "loss", "ae", "sdn", "score"), data_hash)
    candidates = params.sdn.candidate_settings()
    trained: dict[str, tuple[nn.Module, FitResult, dict[str, Any]]] = {}
    for index, (name, sdn) in enumerate(candidates.items()):
        arch = assembly.sdn_arch(params.data.channels, sdn)
        tag = "sdn" if len(candidates) == 1 else f"sdn-candidate{index}"
        network, result = fit_network(
            ctx,
            "sdn",
            arch,
            assembly.sdn_objective(params.loss, sdn),
            (train, train_targets),
            (val, val_targets),
            sdn,
            provenance,
            data_hash,
            tag,
        )
        trained[name] = (network, result, arch)
    extra: dict[str, Any] = {}
    chosen = next(iter(trained))
    if len(trained) > 1:
        # Imported here: the label-free check pulls in scikit-learn (about 1.3 s), which a stage
        # training one candidate never needs.
        from components.selection import candidate_figures, choose_candidate, selection_record

        scoring = assembly.scoring_settings(params.score, params.loss.ssim_window)
        figures = {
            name: candidate_figures(autoencoder, network, scoring, data.val, params.seed, params.evaluate.batch_size, device)
            for name, (network, _, _) in trained.items()
        }
        chosen = choose_candidate(figures)
        overrides = {name: dict(override) for name, override in zip(candidates, params.sdn.candidates, strict=True)}
        extra["selection"] = selection_record(figures, chosen, overrides)
        for name, values in figures.items():
            mark = "  <- chosen" if name == chosen else ""
            print(f"{ctx.category}: sdn candidate {name}: label-free score {values['selection_score']:.4f}{mark}")
    network, result, arch = trained[chosen]
    save_trained(ctx, "sdn", network, arch, result, provenance, extra)
