"""`oesdn bench oneclass|speed`: the paper's one-class benchmark on real data, and speed/memory figures.

The work lives in components/benchmarks; this module only parses arguments and writes the results.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DATASETS = ("fashion_mnist", "mnist_subset")


def add_parser(commands: Any) -> None:
    bench = commands.add_parser("bench", help="benchmarks: one-class AUROC on real data, speed and memory", description=__doc__)
    modes = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")

    def common(sub: argparse.ArgumentParser, default_threads: int) -> None:
        sub.add_argument("--settings", type=Path, default=Path("benchmarks/bench.yaml"), help="benchmark settings YAML")
        sub.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for the CSV/JSON and markdown results")
        sub.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda[:N]")
        sub.add_argument("--threads", type=int, default=default_threads, help=f"CPU threads for torch (default {default_threads})")
        sub.add_argument("--smoke", action="store_true", help="CI-sized run: one class and seed, a few hundred images, one epoch")
        sub.set_defaults(handler=run)

    oneclass = modes.add_parser("oneclass", help="the paper's Table 1 protocol: each class in turn is normal")
    common(oneclass, default_threads=1)
    oneclass.add_argument("--dataset", choices=DATASETS, required=True)
    oneclass.add_argument("--classes", type=int, nargs="+", help="normal classes to run (default: all ten)")
    oneclass.add_argument("--seeds", type=int, nargs="+", help="seeds (default: oneclass.seeds of the settings)")
    oneclass.add_argument("--ablation", action="store_true", help="also train the auxiliary-transform variants (ablation.seeds only)")
    oneclass.add_argument("--cache", type=Path, default=Path("benchmarks/results/runs"), help="per-run results; finished runs are reused")
    oneclass.add_argument("--no-cache", action="store_true", help="re-run every class and seed")

    speed = modes.add_parser("speed", help="training/inference throughput, latency, FLOP/s vs matmul peak, peak RSS")
    common(speed, default_threads=2)
    speed.add_argument("--params", type=Path, help="project params file (default: speed.params of the settings)")


def run(args: argparse.Namespace) -> int:
    import torch

    from components.benchmarks.settings import load_bench_settings, smoke_settings
    from components.runtime import select_device

    if args.threads < 1:
        raise SystemExit(f"oesdn bench: --threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    settings = load_bench_settings(args.settings)
    if args.smoke:
        settings = smoke_settings(settings)
    device = select_device(args.device)
    if args.bench_command == "oneclass":
        return _oneclass(args, settings, device)
    return _speed(args, settings, device)


def _oneclass(args: argparse.Namespace, settings: Any, device: Any) -> int:
    from components.benchmarks.datasets import load_fashion_mnist, load_mnist_subset
    from components.benchmarks.oneclass import run_benchmark
    from components.benchmarks.report import write_reports

    config = settings.oneclass
    if args.dataset == "fashion_mnist":
        fm = config.fashion_mnist
        data = load_fashion_mnist(fm.root, config.image_size, fm.train_per_class, config.split_seed, fm.test_per_class)
    else:
        data = load_mnist_subset(config.image_size, config.mnist_subset.train_per_class, config.split_seed)
    if args.smoke:
        data = data.subsample(train_per_class=40, test_per_class=20, seed=config.split_seed)
    classes = args.classes if args.classes is not None else ([0] if args.smoke else None)
    cache = None if args.no_cache or args.smoke else args.cache
    records = run_benchmark(
        data, config, device, classes=classes, seeds=args.seeds, ablation=args.ablation, cache_dir=cache, progress=not args.no_progress
    )
    csv_path, md_path = write_reports(records, data.description, args.out)
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {csv_path} and {md_path}")
    return 0


def _speed(args: argparse.Namespace, settings: Any, device: Any) -> int:
    from components.benchmarks.speed import measure_speed, speed_markdown
    from components.config import load_params
    from components.io import write_json_atomic, write_text_atomic

    params = load_params(args.params or Path(settings.speed.params))
    report = measure_speed(params, settings.speed, device, progress=not args.no_progress)
    json_path, md_path = args.out / "speed.json", args.out / "speed.md"
    write_json_atomic(json_path, report)
    write_text_atomic(md_path, speed_markdown(report))
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {json_path} and {md_path}")
    return 0
