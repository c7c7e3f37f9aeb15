"""`oesdn register`, `oesdn promote` and `oesdn rollback`: the MLflow model registry per category."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(commands: Any) -> None:
    register = commands.add_parser(
        "register",
        help="register a category's current AE/SDN pair in MLflow and apply the promotion policy",
        description="Register models/<category>/ as a new version of <prefix><category> (unless identical to "
        "an existing one). If it passes the quality gates (registry.gate_* in params.yaml), alias it 'challenger' "
        "and move 'champion' if the promotion policy says so; if not, tag it with the reasons and move no alias.",
    )
    register.add_argument("--category", required=True, action="append", help="category (repeat for several)")
    register.set_defaults(handler=_register)

    promote = commands.add_parser("promote", help="make a version the champion, by hand")
    promote.add_argument("--category", required=True)
    promote.add_argument("--version", required=True, help="registered model version number")
    promote.add_argument("--reason", default="promoted by hand", help="why, recorded in the promotion log")
    promote.add_argument(
        "--override-gates",
        action="store_true",
        help="promote a version that failed the quality gates; who, when and why are tagged on the version",
    )
    promote.set_defaults(handler=_promote)

    rollback = commands.add_parser("rollback", help="give the champion alias back to the previous champion")
    rollback.add_argument("--category", required=True)
    rollback.add_argument("--reason", default="rolled back by hand", help="why, recorded in the promotion log")
    rollback.set_defaults(handler=_rollback)


def _context(args: argparse.Namespace, category: str):
    from pipelines.context import make_context

    return make_context(args.params, category, progress=not args.no_progress, device="cpu")


def _register(args: argparse.Namespace) -> int:
    from pipelines.registration import register_category

    for category in args.category:
        for line in register_category(_context(args, category)).lines():
            print(line)
    return 0


def _promote(args: argparse.Namespace) -> int:
    return _by_hand(args, lambda registry: registry.promote(args.version, args.reason, args.override_gates))


def _rollback(args: argparse.Namespace) -> int:
    return _by_hand(args, lambda registry: registry.rollback(args.reason))


def _by_hand(args: argparse.Namespace, action: Any) -> int:
    from components.tracking.registry import RegistryError
    from pipelines.registration import category_registry

    try:
        decision = action(category_registry(_context(args, args.category)))
    except RegistryError as error:
        print(f"oesdn {args.command}: error: {error}", file=sys.stderr)
        return 2
    print(decision.summary())
    return 0
