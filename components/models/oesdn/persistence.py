"""Network files: weights plus the architecture to rebuild them and the provenance that made them.

Everything stored is a tensor, number, string, list or dict, so `torch.load(weights_only=True)`
reads it back without unpickling arbitrary objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from components.io import atomic_path
from components.models.oesdn.networks import ConvAutoencoder, StyleDistillationNet

NetworkKind = Literal["ae", "sdn"]
_BUILDERS: dict[str, type[nn.Module]] = {"ae": ConvAutoencoder, "sdn": StyleDistillationNet}


def build_network(kind: NetworkKind, arch: dict[str, int]) -> nn.Module:
    if kind not in _BUILDERS:
        raise ValueError(f"unknown network kind {kind!r}; expected one of {sorted(_BUILDERS)}")
    return _BUILDERS[kind](**arch)


def save_network(
    path: Path, network: nn.Module, kind: NetworkKind, arch: dict[str, int], extra: dict[str, Any]
) -> None:
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"kind": kind, "arch": arch, "state_dict": state, **extra}, tmp)


def load_network(path: Path, expected_kind: NetworkKind) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved network in eval mode; the record holds everything else that was saved."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"network file {path} not found; train it first (`oesdn train-{expected_kind}`)")
    record = torch.load(path, map_location="cpu", weights_only=True)
    if record.get("kind") != expected_kind:
        raise ValueError(f"{path} holds a {record.get('kind')!r} network, expected {expected_kind!r}")
    network = build_network(expected_kind, record["arch"])
    network.load_state_dict(record["state_dict"])
    return network.eval(), record
