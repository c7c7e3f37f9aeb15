"""The development suite run: the pipeline's own stages over the suite's categories and seeds.

Each (settings, seed, category) run gets its own workspace under the cache folder, with the params
of `params.yaml` plus the given overrides, `data.root` pointed at the suite and tracking off, and
runs prepare, train-ae, train-sdn and evaluate exactly as `dvc repro` would. A finished run's
`metrics.json` is reused, so an interrupted suite resumes, and two processes (one per seed) can
share the machine. Workspaces are keyed on the training settings and the category's data (a hash
of its files), so a run that changes only `score` or `evaluate` (e.g. `--set score.distance=ssim`)
re-evaluates the trained networks, and two suites with a category of one name never share one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import yaml

from components.config import ConfigError, Params, deep_merge, load_params, validate_params
from pipelines.context import StageContext
from pipelines.project_paths import ProjectLayout


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`section.key=value` pairs (value in YAML) into a nested dict, as `dvc exp run -S` takes them.

    A malformed pair is a ConfigError, which each entry point reports as a usage error.
    """
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not all(key.split(".")):
            raise ConfigError(f"--set wants section.key=value, got {pair!r}")
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return nested


def suite_params(params_path: Path, root: Path, category: str, seed: int, overrides: dict[str, Any]) -> Params:
    raw = load_params(params_path).model_dump(mode="json")
    raw = deep_merge(raw, overrides)
    raw |= {"seed": seed, "categories": {category: {}}}
    raw["data"] = raw["data"] | {"root": str(root)}
    raw["tracking"] = raw["tracking"] | {"enabled": False}
    return validate_params(raw, origin=f"devsuite run {category} seed {seed}").for_category(category)


TRAINING_SECTIONS = ("seed", "data", "bundled", "loss", "ae", "sdn")
"""What the prepare and training stages read; `score` is read by train-sdn only to rank
`sdn.candidates`, so with candidates listed the score section is part of the training too."""


def _dumped(params: Params) -> dict[str, Any]:
    """The params the keys hash: not the suite's location, and not a setting at the value that was
    its behaviour before it existed (validations 0, a plain AE), so earlier keys hold and their runs
    are reused."""
    dumped = params.model_dump(mode="json")
    dumped["data"].pop("root")
    for section in ("ae", "sdn"):
        if dumped[section]["validations"] == 0:
            del dumped[section]["validations"]
    if dumped["ae"]["denoise_share"] == 0:
        for key in ("denoise_share", "denoise_transforms"):
            del dumped["ae"][key]
    return dumped


def training_key(params: Params) -> str:
    """Identifies the trained networks of a run: two runs with this key share a workspace."""
    dumped = _dumped(params)
    sections = TRAINING_SECTIONS + (("score",) if params.sdn.candidates else ())
    keyed = {k: dumped[k] for k in sections}
    if params.score.tile_size:  # the SDN's targets are the tiled AE's outputs (unset: earlier keys hold)
        keyed["tile_size"] = params.score.tile_size
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]


def run_workspace(cache: Path, params: Params, category: str, fingerprint: str) -> Path:
    """Where a run's networks are trained and evaluated: one folder per training key, data and seed."""
    return cache / f"train-{training_key(params)}" / f"{category}-{fingerprint}" / f"seed{params.seed}"


def defaults_workspace(root: Path, category: str, seed: int, cache: Path) -> Path:
    """The workspace of the defaults' run of a suite category and seed, for scripts that re-read
    trained networks (`benchmarks/rescore_image_score.py`); FileNotFoundError until the bench ran it."""
    params = suite_params(Path("params.yaml"), root, category, seed, {})
    workspace = run_workspace(cache, params, category, data_fingerprint(root / category))
    if not (workspace / "models" / category / "bundle.json").is_file():
        raise FileNotFoundError(f"{workspace}: no evaluated run of the defaults; run `oesdn bench devsuite` on it first")
    return workspace


def trained_runs_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of the scripts that read the bench's trained runs: which suite, categories, seeds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--root", type=Path, required=True, help="the suite's MVTec-layout folder")
    parser.add_argument("--categories", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cache", type=Path, default=Path("benchmarks/results/devsuite_runs"), help="the bench's --cache")
    return parser


def run_key(params: Params) -> str:
    """Identifies a run's result: the training settings plus `score` and `evaluate` (not the suite's
    location, not tracking or orchestration, not the code).

    The code version is recorded in each result instead; a result made by other code is reused
    with a note saying so (`--no-cache` re-runs everything).
    """
    dumped = _dumped(params)
    sections = TRAINING_SECTIONS + ("score", "evaluate")
    return hashlib.sha256(json.dumps({k: dumped[k] for k in sections}, sort_keys=True).encode()).hexdigest()[:12]


def data_fingerprint(folder: Path) -> str:
    """A hash of every file's path and bytes under a category's folder (a few hundred images: well
    under a second). Two suites may hold categories of one name (the 128 px and the 256 px suite's
    `ihc`); keyed on settings alone, their runs would share workspaces and results."""
    from components.io import sha256_file

    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()[:12]


def _source_hash() -> str:
    from components.provenance import code_version
    from pipelines.context import CODE_ROOT

    return code_version(CODE_ROOT, [CODE_ROOT / "components", CODE_ROOT / "pipelines"])["source_sha256"]


def run_category(params: Params, category: str, workdir: Path, device: str, progress: bool) -> dict[str, Any]:
    """prepare -> train-ae -> train-sdn -> evaluate in `workdir`; the metrics record and timings.

    When `workdir` already holds this category's networks trained with the same training key,
    only evaluate runs, and the record keeps the training's CPU seconds. Two suite processes that
    need the same workspace (e.g. two `--set score...` screens) take turns: evaluate writes
    `metrics.json` there and the record reads it back, so side by side they would swap results.
    """
    from components.processes import waiting_for_lock

    with waiting_for_lock(workdir / f".{category}.lock"):
        return _run_category(params, category, workdir, device, progress)


def _run_category(params: Params, category: str, workdir: Path, device: str, progress: bool) -> dict[str, Any]:
    from components.io import write_json_atomic
    from pipelines.stages import evaluate, prepare, train, train_sdn

    ctx = StageContext(params=params, layout=ProjectLayout(workdir), category=category, progress=progress, device=device)
    trained = ctx.layout.models(category) / "devsuite_training.json"
    key = training_key(params)
    previous = json.loads(trained.read_text()) if trained.is_file() else {}
    steps = (("prepare", prepare.run), ("train_ae", train.run_ae), ("train_sdn", train_sdn.run))
    seconds: dict[str, float] = dict(previous.get("cpu_seconds", {})) if previous.get("training_key") == key else {}
    for name, stage in steps if not seconds else ():
        tick = time.process_time()
        stage(ctx)
        seconds[name] = time.process_time() - tick
    write_json_atomic(trained, {"training_key": key, "cpu_seconds": seconds})
    tick = time.process_time()
    evaluate.run(ctx)
    seconds["evaluate"] = time.process_time() - tick
    metrics = json.loads((ctx.layout.reports(category) / "metrics.json").read_text())
    return {"category": category, "seed": params.seed, "metrics": metrics, "cpu_seconds": seconds}


def run_suite(
    params_path: Path,
    root: Path,
    categories: list[str],
    seeds: list[int],
    overrides: dict[str, Any],
    cache: Path,
    device: str,
    progress: bool,
    use_cache: bool = True,
) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    from components.io import write_json_atomic
    from components.runtime import cpu_capability

    records = []
    fingerprints: dict[str, str] = {}
    source = _source_hash()
    jobs = [(seed, category) for seed in seeds for category in categories]
    for seed, category in tqdm(jobs, desc="devsuite", unit="run", disable=not progress):
        params = suite_params(params_path, root, category, seed, overrides)
        if category not in fingerprints:  # once per category, not per seed
            fingerprints[category] = data_fingerprint(root / category)
        key, data = run_key(params), fingerprints[category]
        done = cache / key / f"{category}-{data}_seed{seed}.json"
        if use_cache and done.is_file():
            record = json.loads(done.read_text())
            if record.get("source_sha256") != source:
                tqdm.write(f"{category} seed {seed}: reusing the result of other code ({done}); --no-cache re-runs it")
            records.append(record)
            continue
        record = run_category(params, category, run_workspace(cache, params, category, data), device, progress=False)
        record |= {"settings_key": key, "source_sha256": source, "overrides": overrides, "cpu_capability": cpu_capability()}
        write_json_atomic(done, record)
        tqdm.write(_one_line(record))
        records.append(record)
    return records


def _one_line(record: dict[str, Any]) -> str:
    m = record["metrics"]
    parts = [
        f"{name} px {m[name]['pixel_auroc']:.3f} img {m[name]['image_auroc']:.3f}"
        + (f" far {m[name]['false_alarm_rate']:.2f}" if "false_alarm_rate" in m[name] else "")
        for name in m
    ]
    return (
        f"{record['category']} seed {record['seed']}: "
        + " | ".join(parts)
        + f" [{sum(record['cpu_seconds'].values()):.0f} cpu s]"
    )
