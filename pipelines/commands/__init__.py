"""Subcommands beyond the DVC stages, one module each.

Each module defines `add_parser(commands)`, which adds its subparser(s) and sets `handler` to a
function `(args) -> int` (the exit status). Modules import heavy libraries inside the handler only,
so `oesdn --help` stays instant.
"""

COMMAND_MODULES: tuple[str, ...] = ("orchestration", "registry", "inference", "bench", "scaleout")
"""Modules under `pipelines.commands` whose subcommands `oesdn` offers, in help order."""
