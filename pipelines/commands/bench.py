"""`oesdn bench oneclass|devsuite|speed|predict|contention`: the paper's one-class benchmark, the development suite,
training speed/memory, and `oesdn predict` throughput (torch vs onnxruntime).

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
        sub.add_argument(
            "--out", type=Path, default=Path("benchmarks/results"), help="folder for the CSV/JSON and markdown results"
        )
        sub.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda[:N]")
        sub.add_argument(
            "--threads", type=int, default=default_threads, help=f"CPU threads for torch (default {default_threads})"
        )
        sub.add_argument("--smoke", action="store_true", help="CI-sized run: one class and seed, a few hundred images, one epoch")
        sub.set_defaults(handler=run)

    oneclass = modes.add_parser("oneclass", help="the paper's Table 1 protocol: each class in turn is normal")
    common(oneclass, default_threads=1)
    oneclass.add_argument("--dataset", choices=DATASETS, required=True)
    oneclass.add_argument("--classes", type=int, nargs="+", help="normal classes to run (default: all ten)")
    oneclass.add_argument("--seeds", type=int, nargs="+", help="seeds (default: oneclass.seeds of the settings)")
    oneclass.add_argument(
        "--ablation", action="store_true", help="also train the auxiliary-transform variants (ablation.seeds only)"
    )
    oneclass.add_argument(
        "--cache", type=Path, default=Path("benchmarks/results/runs"), help="per-run results; finished runs are reused"
    )
    oneclass.add_argument("--no-cache", action="store_true", help="re-run every class and seed")

    suite = modes.add_parser("devsuite", help="the development suite: the pipeline's own stages on unseen categories, over seeds")
    common(suite, default_threads=1)
    suite.add_argument(
        "--root",
        type=Path,
        default=None,
        help="MVTec-layout folders: the suite's are built if missing; others (e.g. data/bundled) must exist"
        " (default: data/devsuite, with --hires data/devsuite256)",
    )
    suite.add_argument("--categories", nargs="+", help="suite categories (default: all)")
    suite.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    suite.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="params override, e.g. sdn.lambda_oer=0 (repeatable)",
    )
    suite.add_argument(
        "--cache",
        type=Path,
        default=Path("benchmarks/results/devsuite_runs"),
        help="per-run workspaces and results; finished runs are reused",
    )
    suite.add_argument("--no-cache", action="store_true", help="re-run every category and seed")
    suite.add_argument("--name", help="name of the result files under --out (default: devsuite, with --hires devsuite256)")
    suite.add_argument(
        "--hires",
        action="store_true",
        help="build the suite's categories at 256 px with thin defects (1-2 px hairlines, pinholes, fibres);"
        " it chooses what serves 256 px photographs",
    )

    speed = modes.add_parser("speed", help="training/inference throughput, latency, FLOP/s vs matmul peak, peak RSS")
    common(speed, default_threads=2)
    speed.add_argument("--params", type=Path, help="project params file (default: speed.params of the settings)")

    contention = modes.add_parser(
        "contention", help="SDN step time alone and beside busy processes, per thread count and OpenMP wait policy"
    )
    common(contention, default_threads=1)
    contention.add_argument("--steps", type=int, default=8, help="timed steps per configuration (default 8)")
    contention.add_argument("--busy", type=int, help="competing busy processes (default: one per CPU)")

    predict = modes.add_parser("predict", help="`oesdn predict` throughput: torch vs onnxruntime, batch 1 vs batch N")
    common(predict, default_threads=2)
    predict.add_argument("--model", default="models/brick", help="bundle folder or models:/ URI (default: models/brick)")
    predict.add_argument("--images", type=Path, help="image folder (default: data/bundled/<category>/test)")
    predict.add_argument("--batch-size", type=int, default=32, help="N of the batch-N rows (default: 32)")
    predict.add_argument("--repeats", type=int, default=3, help="passes per row; the median is reported")


def run(args: argparse.Namespace) -> int:
    import torch

    from components.benchmarks.settings import load_bench_settings, smoke_settings
    from components.runtime import select_device

    if args.threads < 1:
        raise SystemExit(f"oesdn bench: --threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.bench_command == "predict":
        return _predict(args)
    if args.bench_command == "contention":
        return _contention(args)
    device = select_device(args.device)
    if args.bench_command == "devsuite":
        return _devsuite(args, device)
    settings = load_bench_settings(args.settings)  # only the one-class and speed benchmarks read it
    if args.smoke:
        settings = smoke_settings(settings)
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
        data,
        config,
        device,
        classes=classes,
        seeds=args.seeds,
        ablation=args.ablation,
        cache_dir=cache,
        progress=not args.no_progress,
    )
    csv_path, md_path = write_reports(records, data.description, args.out)
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {csv_path} and {md_path}")
    return 0


def _devsuite(args: argparse.Namespace, device: Any) -> int:
    from components.benchmarks.devsuite_data import CATEGORIES, HIRES_SPEC, DevSuiteSpec, generate_devsuite
    from components.benchmarks.devsuite_report import records_frame, summary_markdown
    from components.io import atomic_path, write_text_atomic
    from pipelines.devsuite import parse_overrides, run_suite

    overrides = parse_overrides(args.overrides)  # a malformed --set stops before the suite is built
    root = args.root or Path("data/devsuite256" if args.hires else "data/devsuite")
    name = args.name or ("devsuite256" if args.hires else "devsuite")
    categories = args.categories or list(CATEGORIES)
    missing = sorted(c for c in set(categories) - set(CATEGORIES) if not (root / c).is_dir())
    if missing:
        raise SystemExit(
            f"oesdn bench devsuite: no folder for categories {missing} under {root}; "
            f"the suite builds {list(CATEGORIES)}, any other category must already be there (e.g. --root data/bundled)"
        )
    spec = HIRES_SPEC if args.hires else DevSuiteSpec()
    generate_devsuite(root, tuple(c for c in categories if c in CATEGORIES), spec, progress=not args.no_progress)
    records = run_suite(
        args.params,
        root,
        categories,
        args.seeds,
        overrides,
        args.cache,
        str(device),
        not args.no_progress,
        use_cache=not args.no_cache,
    )
    kind = " (256 px, thin defects)" if args.hires else ""
    title = f"Development suite{kind}, {len(categories)} categories" + (f", overrides {args.overrides}" if args.overrides else "")
    markdown = summary_markdown(records, title)
    csv_path, md_path = args.out / f"{name}.csv", args.out / f"{name}.md"
    with atomic_path(csv_path) as tmp:
        records_frame(records).to_csv(tmp, index=False, float_format="%.5g")
    write_text_atomic(md_path, markdown)
    print(markdown)
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


def _predict(args: argparse.Namespace) -> int:
    from components.benchmarks.predict_speed import measure_predict_speed
    from components.io import write_text_atomic

    if args.batch_size < 1 or args.repeats < 1:
        raise SystemExit(f"oesdn bench predict: --batch-size and --repeats must be >= 1, got {args.batch_size}, {args.repeats}")
    markdown = measure_predict_speed(args.model, args.images, args.batch_size, args.repeats, Path.cwd())
    out = args.out / "predict_speed.md"
    write_text_atomic(out, markdown)
    print(markdown)
    print(f"wrote {out}")
    return 0


def _contention(args: argparse.Namespace) -> int:
    import os

    from components.benchmarks.contention import measure_contention
    from components.io import write_text_atomic

    busy = args.busy if args.busy is not None else len(os.sched_getaffinity(0))
    if args.steps < 1 or busy < 0:
        raise SystemExit(f"oesdn bench contention: --steps must be >= 1 and --busy >= 0, got {args.steps}, {busy}")
    table = measure_contention(args.steps, busy)
    out = args.out / "contention.md"
    write_text_atomic(out, table)
    print(table)
    print(f"wrote {out}")
    return 0
