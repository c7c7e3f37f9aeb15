"""Benchmarks of OE-SDN: the paper's one-class protocol on real data, and speed/memory figures.

Importable and typed, with no CLI code: `pipelines/commands/bench.py` is the thin command on top.
"""
