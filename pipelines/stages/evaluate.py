"""Stage `evaluate`: score the test set with OE-SDN and both AE baselines; write metrics and pictures."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from components import assembly
from components.category_evaluation import evaluate_category
from components.category_reports import category_bundle_info, evaluation_record, metrics_lines, write_category_reports
from components.data.prepared import load_prepared, read_dataset_record
from components.headline import HEADLINE_NAME, headline
from components.io import write_json_atomic
from components.models.oesdn.bundle import Preprocessing, write_bundle_info
from components.models.oesdn.detector import OESDNDetector
from components.models.oesdn.persistence import load_network
from components.runtime import seed_everything, select_device
from components.selection import choose_difference_sigma, pixel_map_sigmas
from components.tracking.lineage import PAIR_TAG
from pipelines.context import StageContext
from pipelines.stage_logging import track_stage

if TYPE_CHECKING:
    import numpy as np
    import torch


def run(ctx: StageContext) -> None:
    assert ctx.category is not None
    category, params, layout = ctx.category, ctx.params, ctx.layout
    seed_everything(params.seed)
    prepared_dir, models_dir, reports_dir = layout.prepared(category), layout.models(category), layout.reports(category)
    dataset, data = read_dataset_record(prepared_dir, category), load_prepared(prepared_dir)
    ae, _ = load_network(layout.network(category, "ae"), "ae")
    sdn, _ = load_network(layout.network(category, "sdn"), "sdn")
    score, device = params.score, select_device(ctx.device)
    detector = OESDNDetector(ae, sdn, assembly.scoring_settings(score, params.loss.ssim_window))
    with detector.remembering_outputs():  # the validation normals and their defective copies go through once
        sigma, sigma_choice = chosen_difference_sigma(ctx, detector, data.val, device)
        map_sigmas = pixel_map_sigmas(sigma, [float(s) for s in score.difference_sigmas], score.multiscale_map)
        detector.settings = dataclasses.replace(detector.settings, difference_sigma=sigma, map_sigmas=map_sigmas)
        if map_sigmas:
            blurs = " and ".join(f"σ {s:g}" for s in map_sigmas)
            print(f"{category}: pixel map: the larger of the {blurs} maps, each over its validation 99th percentile")
        evaluation = evaluate_category(
            category,
            detector,
            data,
            assembly.image_threshold_rule(score),
            score.pixel_threshold_quantile,
            params.evaluate.aupro_fpr_limit,
            params.seed,
            params.evaluate.batch_size,
            device,
            ctx.progress,
        )
    provenance = ctx.provenance(("data", "loss", "ae", "sdn", "score", "evaluate"), dataset["data_hash"])
    stamp = {"Software": "oesdn", "oesdn-provenance": json.dumps(provenance, sort_keys=True)}
    for warning in evaluation.warnings:
        print(f"warning: {warning}")
    artifacts = write_category_reports(category, evaluation, data, score, params.evaluate.panel_rows, reports_dir, stamp)
    write_json_atomic(reports_dir / HEADLINE_NAME, headline(evaluation.metrics))  # what `dvc metrics show` prints
    record = evaluation_record(category, evaluation, data, dataset, models_dir, provenance)
    if sigma_choice is not None:
        record["difference_sigma_choice"] = {**sigma_choice, "pixel_map_sigmas": list(map_sigmas)}
    write_json_atomic(layout.evaluation(category), record)
    preprocessing = Preprocessing(int(data.test.shape[-1]), params.data.channels)  # the working side prepare chose
    info = category_bundle_info(
        category, evaluation, data, preprocessing, detector.settings, prepared_dir, models_dir, dataset["data_hash"], provenance
    )
    write_bundle_info(models_dir, info)
    print("\n".join(metrics_lines(category, evaluation.metrics, data.masks_available)))
    upstream = [layout.prepared(category), layout.network(category, "ae"), layout.network(category, "sdn")]
    outputs = {**artifacts, layout.evaluation(category): "", models_dir / "bundle.json": ""}
    deps = [layout.relative(p) for p in upstream]
    tags = {
        PAIR_TAG: info.pair_id,
        "oesdn.difference_sigma": str(sigma),
        "oesdn.pixel_map_sigmas": "+".join(f"{s:g}" for s in map_sigmas),
    }
    track_stage(ctx, "evaluate", provenance, deps, outputs, metrics=evaluation.metrics, extra_tags=tags)


def chosen_difference_sigma(
    ctx: StageContext, detector: OESDNDetector, val_images: np.ndarray, device: torch.device
) -> tuple[float, dict[str, Any] | None]:
    """The `score.difference_sigmas` entry this category scores with, and the record of the choice
    (None when only one is listed: nothing was chosen)."""
    params = ctx.params
    sigmas = [float(sigma) for sigma in params.score.difference_sigmas]
    if len(sigmas) == 1:
        return sigmas[0], None
    sigma, record = choose_difference_sigma(detector, sigmas, val_images, params.seed, params.evaluate.batch_size, device)
    for name, figures in record["candidates"].items():
        mark = "  <- chosen" if float(name) == sigma else ""
        print(f"{ctx.category}: difference_sigma {name}: synthetic pixel AUROC {figures['synthetic_pixel_auroc']:.4f}{mark}")
    return sigma, record
