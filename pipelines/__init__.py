"""Thin entry points that compose `components/`: the DVC stage commands and the `oesdn` CLI."""
