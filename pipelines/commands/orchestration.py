"""`oesdn run` (the main job: the Prefect flow once, no server needed) and `oesdn serve` (on a schedule)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any


def add_parser(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="train, evaluate, register and promote every category (or the given ones), once",
        description="Run the train-all Prefect flow once: DVC brings each category's stages up to date, then its "
        "AE/SDN pair is registered in MLflow and the promotion policy decides. No Prefect server is needed.",
    )
    run.add_argument("--category", action="append", help="only this category (repeat for several)")
    run.set_defaults(handler=_run)

    serve = commands.add_parser(
        "serve",
        help="serve the flows as Prefect deployments: train-all on the cron schedule in params.yaml",
        description="Register deployments with the Prefect server at PREFECT_API_URL and run them when scheduled "
        "or triggered, until stopped: 'train-all/oesdn-scheduled' (cron from orchestration.schedule) and "
        "'train-category/oesdn-on-demand'.",
    )
    serve.set_defaults(handler=_serve)


def _local_prefect_state(project: Path) -> None:
    """The Prefect server `oesdn run` starts keeps its database in the project, never phoning home."""
    os.environ.setdefault("PREFECT_HOME", str(project / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _run(args: argparse.Namespace) -> int:
    from components.config import load_params
    from components.processes import exit_on_signals
    from components.tracking.store import TrackingUnreachableError, check_reachable

    project = Path.cwd()
    try:  # before the Prefect server starts: an MLflow server that is down ends the run in seconds
        check_reachable(project, load_params(args.params).tracking)
    except TrackingUnreachableError as error:
        print(f"oesdn run: error: {error}", file=sys.stderr)
        return 1
    _local_prefect_state(project)
    exit_on_signals()  # `kill` and Ctrl-C run the clean-up below: dvc, its trainer and the Prefect server stop
    from pipelines import dvc_runner
    from pipelines.prefect_server import PrefectServerError, private_server

    try:
        with private_server(Path(os.environ["PREFECT_HOME"])):
            from pipelines.flows import train_all  # Prefect reads PREFECT_API_URL when it loads

            try:
                state = train_all(args.category, str(project), str(args.params), return_state=True)
            finally:
                dvc_runner.terminate_running()  # an interrupted run leaves no dvc or trainer behind
            return _report(project, state, args.params)  # while the server still takes what it logs
    except PrefectServerError as error:
        print(f"oesdn run: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: everything above is stopped; a traceback would only hide that
        print("oesdn run: interrupted; dvc, its stage and the Prefect server are stopped", file=sys.stderr)
        return 128 + signal.SIGINT


def _report(project: Path, state: Any, params_path: Path) -> int:
    """Print the summary and each category's promotion decision; 1 when any category failed."""
    from components.config import load_params
    from pipelines.run_report import ending_lines

    results = state.result(raise_on_failure=False)
    results = results if isinstance(results, dict) else {}
    print()
    print("\n".join(ending_lines(project, results, load_params(params_path).score.image_threshold_quantile)))
    if not state.is_completed():
        print(f"oesdn run: {state.message}", file=sys.stderr)
        return 1
    return 0


def _serve(args: argparse.Namespace) -> int:
    _local_prefect_state(Path.cwd())
    from prefect import serve
    from prefect.schedules import Cron
    from prefect.settings import PREFECT_API_URL

    from components.config import load_params
    from pipelines.flows import train_all, train_category

    if not PREFECT_API_URL.value():
        print(
            "oesdn serve: error: schedules need a Prefect server; start one with scripts/prefect-server.sh, then "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api",
            file=sys.stderr,
        )
        return 2
    schedule = load_params(args.params).orchestration.schedule
    common = {"project_dir": str(Path.cwd()), "params_path": str(args.params)}
    scheduled = train_all.to_deployment(
        "oesdn-scheduled", schedules=[Cron(schedule.cron, timezone=schedule.timezone)], parameters=common, tags=["oesdn"]
    )
    on_demand = train_category.to_deployment("oesdn-on-demand", parameters=common, tags=["oesdn"])
    from components.processes import exit_on_signals

    exit_on_signals()  # `kill` ends serve through the `finally` below, which says the schedule paused
    print(f"oesdn serve: train-all/oesdn-scheduled runs on cron {schedule.cron!r} ({schedule.timezone}) while this process runs")
    try:
        serve(scheduled, on_demand)
    finally:  # Prefect pauses a served deployment's schedule when its process stops: say so plainly
        print(
            "oesdn serve: stopped; the nightly schedule is PAUSED and no run will start until "
            "`oesdn serve` runs again (or resume it in the Prefect UI with a worker serving it)",
            file=sys.stderr,
        )
    return 0
