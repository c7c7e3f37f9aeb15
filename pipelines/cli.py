"""`oesdn`: one console script for people and for `dvc.yaml`, a subcommand per stage.

Heavy libraries (torch, pandas, matplotlib) load inside the subcommands, so `oesdn --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.commands import COMMAND_MODULES

# subcommand -> (module under pipelines.stages, function, needs --category, help)
_STAGES: dict[str, tuple[str, str, bool, str]] = {
    "generate": ("generate", "run", False, "build the bundled default dataset (offline, deterministic)"),
    "prepare": ("prepare", "run", True, "validate a category's MVTec-layout folder and decode it to arrays"),
    "train-ae": ("train", "run_ae", True, "train the bottleneck autoencoder on normal images"),
    "train-sdn": ("train_sdn", "run", True, "train the style distillation network (with outlier exposure)"),
    "evaluate": ("evaluate", "run", True, "score OE-SDN and the AE baselines; write metrics and plots"),
    "summarize": ("summarize", "run", False, "write reports/summary.{json,md} over all categories"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oesdn",
        description="OE-SDN anomaly detection: data prep, training, evaluation (the DVC stages).",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="settings file (default: params.yaml)")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        default=bool(os.environ.get("OESDN_NO_PROGRESS")),
        help="hide progress bars, print a line per epoch instead (also: OESDN_NO_PROGRESS=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, _, per_category, help_text) in _STAGES.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if per_category:
            sub.add_argument("--category", required=True, help="category name, a key of `categories` in params")
            sub.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda[:N]")
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"pipelines.commands.{module_name}").add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from components.config import ConfigError
    from components.data.errors import DatasetError
    from components.processes import OutputLockedError, share_cpus

    share_cpus()  # before any subcommand loads torch: OpenMP reads its settings once
    try:
        if args.command not in _STAGES:
            return int(args.handler(args))
        return _run_stage(args)
    except (ConfigError, DatasetError, FileNotFoundError, OutputLockedError) as error:
        print(f"oesdn {args.command}: error: {error}", file=sys.stderr)
        return 2


def _run_stage(args: argparse.Namespace) -> int:
    from components.processes import die_with_parent
    from pipelines.context import make_context

    die_with_parent()  # a killed `dvc repro` takes its stage command with it

    module_name, function_name, _, _ = _STAGES[args.command]
    ctx = make_context(
        args.params,
        getattr(args, "category", None),
        progress=not args.no_progress,
        device=getattr(args, "device", "auto"),
    )
    stage = importlib.import_module(f"pipelines.stages.{module_name}")
    getattr(stage, function_name)(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
