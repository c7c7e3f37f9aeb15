"""The paper's one-class protocol (its Table 1): each class in turn is normal, the others anomalies.

Per (class, seed): one AE is trained on the class's training images; every SDN variant is then
trained against that same frozen AE, and all methods score the same test set, so the comparison
between AE residual, SDN (lambda = 0) and OE-SDN is within one run, not across runs.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from components import assembly
from components.benchmarks.datasets import OneClassData
from components.benchmarks.settings import OneClassConfig
from components.io import write_json_atomic
from components.metrics import image_auroc
from components.models.oesdn.persistence import build_network
from components.runtime import batched_inference, seed_everything, to_float
from components.scoring import l2_residual_map, oe_sdn_map, reduce_maps, smooth_maps, ssim_residual_map
from components.training import FitSettings, Objective, fit

HEADLINE_METHODS = ("ae_l2", "ae_ssim", "sdn", "oe_sdn")
"""AE residual (L2), AE SSIM residual, SDN with lambda = 0, OE-SDN: the columns of the headline table."""
ABLATION_PREFIX = "aux_"


@dataclass(frozen=True)
class Variant:
    """One SDN trained against the run's AE: its OER weight and auxiliary transforms."""

    lambda_oer: float
    transforms: tuple[str, ...]


def run_variants(config: OneClassConfig, seed: int, ablation: bool) -> tuple[dict[str, Variant], dict[str, str]]:
    """SDN variants to train for one seed, and ablation names that alias an already-trained variant.

    The ablation's "rotation" is OE-SDN itself and its "none" is the plain SDN, so those are not
    trained twice: they are reported from the same networks.
    """
    variants = {"sdn": Variant(0.0, ()), "oe_sdn": Variant(config.sdn.lambda_oer, tuple(config.sdn.aux_transforms))}
    aliases: dict[str, str] = {}
    if ablation and seed in config.ablation.seeds:
        for name, transforms in config.ablation.variants.items():
            wanted = Variant(config.sdn.lambda_oer, tuple(transforms)) if transforms else Variant(0.0, ())
            same = [key for key, value in variants.items() if value == wanted]
            if same:
                aliases[ABLATION_PREFIX + name] = same[0]
            else:
                variants[ABLATION_PREFIX + name] = wanted
    return variants, aliases


def seed_run(seed: int) -> None:
    """Seed every RNG with deterministic kernels, but without NaN-filling every new tensor.

    Deterministic mode also turns on `fill_uninitialized_memory`, a debugging aid that fills every
    `torch.empty` with NaN; profiling showed it at about a fifth of the CPU time of an SDN step.
    Results do not depend on it: no kernel here reads memory it did not write.
    """
    seed_everything(seed)
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]


def _fit_settings(config: OneClassConfig, section: str, seed: int, workdir: Path, tag: str) -> FitSettings:
    optim = config.ae if section == "ae" else config.sdn
    return assembly.fit_settings(optim, seed, workdir / f"{tag}.ckpt", tag, f"oneclass.{section}", progress=False)


def _train_val_split(count: int, val_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed (train, val) split of one class's training images, the same for every seed."""
    order = np.random.default_rng(split_seed).permutation(count)
    n_val = max(1, round(val_fraction * count))
    if count - n_val < 2:
        raise ValueError(f"a class needs at least {n_val + 2} training images for a {val_fraction} validation split, got {count}")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _image_scores(maps: torch.Tensor, config: OneClassConfig) -> np.ndarray:
    score = config.score
    return reduce_maps(smooth_maps(maps, score.smoothing_sigma), score.reduction, score.topk_fraction).double().numpy()


def run_one_class(
    data: OneClassData,
    normal: int,
    seed: int,
    config: OneClassConfig,
    device: torch.device,
    ablation: bool = False,
    log: Callable[[str], None] = tqdm.write,
) -> dict[str, Any]:
    """Train the AE and every SDN variant for one normal class and seed; AUROC of each method."""
    started = time.perf_counter()
    images = data.class_train(normal)
    if len(images) == 0:
        raise ValueError(f"{data.name}: no training images of class {normal}")
    train_idx, val_idx = _train_val_split(len(images), config.val_fraction, config.split_seed)
    train, val = to_float(images[train_idx]), to_float(images[val_idx])
    test = to_float(data.test_images)
    labels = data.test_targets(normal)
    channels = data.train_images.shape[1]
    batch = config.inference_batch_size
    seconds: dict[str, float] = {}

    with tempfile.TemporaryDirectory(prefix="oesdn-bench-") as tmp:
        workdir = Path(tmp)
        seed_run(seed)
        ae = build_network("ae", assembly.ae_arch(channels, config.ae))
        tick = time.perf_counter()
        ae_objective = assembly.ae_objective(config.loss, config.ae)
        fit(ae, ae_objective, (train,), (val,), _fit_settings(config, "ae", seed, workdir, "ae"), device)
        seconds["train_ae"] = time.perf_counter() - tick
        with torch.no_grad():
            ae_train = batched_inference(ae, train, batch, device)
            ae_val = batched_inference(ae, val, batch, device)
            ae_test = batched_inference(ae, test, batch, device)

        scores = {
            "ae_l2": _image_scores(l2_residual_map(test, ae_test), config),
            "ae_ssim": _image_scores(ssim_residual_map(test, ae_test, config.loss.ssim_window), config),
        }
        variants, aliases = run_variants(config, seed, ablation)
        for name, variant in variants.items():
            seed_run(seed)
            sdn = build_network("sdn", assembly.sdn_arch(channels, config.sdn))
            variant_sdn = config.sdn.model_copy(update={"lambda_oer": variant.lambda_oer, "aux_transforms": variant.transforms})
            objective: Objective = assembly.sdn_objective(config.loss, variant_sdn)
            tick = time.perf_counter()
            fit(sdn, objective, (train, ae_train), (val, ae_val), _fit_settings(config, "sdn", seed, workdir, name), device)
            seconds[f"train_{name}"] = time.perf_counter() - tick
            with torch.no_grad():
                sdn_test = batched_inference(sdn, test, batch, device)
            scores[name] = _image_scores(oe_sdn_map(sdn_test, ae_test, config.score.distance), config)
        for alias, target in aliases.items():
            scores[alias] = scores[target]

    aurocs = {name: image_auroc(labels, value) for name, value in scores.items()}
    seconds["total"] = time.perf_counter() - started
    log(
        f"{data.name} class {normal} ({data.class_names[normal]}) seed {seed}: "
        + ", ".join(f"{name} {value:.4f}" for name, value in aurocs.items())
        + f" [{seconds['total']:.0f} s]"
    )
    return {
        "dataset": data.name,
        "normal_class": normal,
        "class_name": data.class_names[normal],
        "seed": seed,
        "train_images": len(train_idx),
        "val_images": len(val_idx),
        "test_images": len(labels),
        "auroc": aurocs,
        "seconds": seconds,
    }


def run_key(data: OneClassData, normal: int, seed: int, config: OneClassConfig, ablation: bool) -> str:
    """Identifies a run's inputs (settings, split, variants), so a cached result is reused only for the same run."""
    variants, aliases = run_variants(config, seed, ablation)
    payload = {
        "config": config.model_dump(mode="json", exclude={"seeds"}),
        "data": data.description,
        "normal": normal,
        "seed": seed,
        "variants": sorted([*variants, *aliases]),
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def run_benchmark(
    data: OneClassData,
    config: OneClassConfig,
    device: torch.device,
    classes: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    ablation: bool = False,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Every (class, seed) run; finished runs are cached in `cache_dir`, so an interrupted benchmark resumes."""
    classes = list(range(len(data.class_names))) if classes is None else list(classes)
    seeds = list(config.seeds) if seeds is None else list(seeds)
    bad = [c for c in classes if not 0 <= c < len(data.class_names)]
    if bad:
        raise ValueError(f"{data.name} has classes 0..{len(data.class_names) - 1}, not {bad}")
    jobs = [(normal, seed) for seed in seeds for normal in classes]
    records = []
    for normal, seed in tqdm(jobs, desc=f"oneclass {data.name}", unit="run", disable=not progress):
        cached = None
        if cache_dir is not None:
            cached = cache_dir / data.name / f"class{normal}_seed{seed}_{run_key(data, normal, seed, config, ablation)}.json"
            if cached.is_file():
                records.append(json.loads(cached.read_text()))
                continue
        record = run_one_class(data, normal, seed, config, device, ablation)
        if cached is not None:
            write_json_atomic(cached, record)
        records.append(record)
    return records
