"""`oesdn deploy`: the work pool and the per-category deployment that `prefect worker start` runs."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(commands: Any) -> None:
    deploy = commands.add_parser(
        "deploy",
        help="create the Prefect work pool and deploy the per-category workspace flow to it",
        description="Create a `process` work pool (unless it exists) and deploy "
        "'train-category-in-workspace/oesdn-worker' from SOURCE. Then run `prefect worker start --pool POOL` "
        "on each machine, and trigger every category with `python -c 'from pipelines.scaleout import "
        "train_all_on_workers; train_all_on_workers(source=SOURCE)'` or one with `prefect deployment run`.",
    )
    deploy.add_argument("--pool", default="oesdn", help="work pool name (default: oesdn)")
    deploy.add_argument("--source", required=True, help="the project's git URL, or a git checkout every worker can read")
    deploy.add_argument("--name", default="oesdn-worker", help="deployment name (default: oesdn-worker)")
    deploy.add_argument(
        "--lock-branch-prefix",
        help="also push each run's dvc.lock to SOURCE as branch PREFIX/<category>-<run id> (needs write access)",
    )
    deploy.set_defaults(handler=_deploy)


def _deploy(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL

    from pipelines.scaleout import ScaleOutError, deploy

    if not PREFECT_API_URL.value():
        print("oesdn deploy: error: workers need a Prefect server; export PREFECT_API_URL=http://HOST:4200/api", file=sys.stderr)
        return 2
    try:
        deployment_id = deploy(args.source, pool=args.pool, name=args.name, lock_branch_prefix=args.lock_branch_prefix)
    except ScaleOutError as error:
        print(f"oesdn deploy: error: {error}", file=sys.stderr)
        return 2
    print(f"deployed train-category-in-workspace/{args.name} ({deployment_id}) to work pool {args.pool!r}")
    print(
        f"next: `prefect worker start --pool {args.pool}` on each machine (with the S3 keys and MLFLOW_TRACKING_URI in its environment)"
    )
    return 0
