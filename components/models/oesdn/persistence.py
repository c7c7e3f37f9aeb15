"""Network files: weights plus the architecture to rebuild them and the provenance that made them.

Everything stored is a tensor, number, string, list or dict, so `torch.load(weights_only=True)`
reads it back (through `components.torch_files`) without unpickling arbitrary objects.

The same network and record always give the same bytes: DVC hashes and the registry's pair id
follow the file, so a retrain that reproduces the weights must not look like a new model.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from components.io import write_bytes_atomic
from components.models.oesdn.networks import ConvAutoencoder, StyleDistillationNet
from components.torch_files import TorchFileError, read_torch_file

NetworkKind = Literal["ae", "sdn"]
NETWORK_KEYS = ("kind", "arch", "state_dict")
_BUILDERS: dict[str, type[nn.Module]] = {"ae": ConvAutoencoder, "sdn": StyleDistillationNet}


def build_network(kind: NetworkKind, arch: dict[str, int]) -> nn.Module:
    if kind not in _BUILDERS:
        raise ValueError(f"unknown network kind {kind!r}; expected one of {sorted(_BUILDERS)}")
    return _BUILDERS[kind](**arch)


def save_network(path: Path, network: nn.Module, kind: NetworkKind, arch: dict[str, int], extra: dict[str, Any]) -> None:
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    write_bytes_atomic(path, network_bytes({"kind": kind, "arch": arch, "state_dict": state, **extra}))


def network_bytes(record: dict[str, Any]) -> bytes:
    """`record` as `torch.save` writes it, independent of the file it will land in.

    Saved to a path, torch names the zip archive's root folder after the file, here the random
    temporary name `atomic_path` picks, so identical weights gave different bytes. Saved to a
    buffer, the folder is always `archive`; the rest of the archive depends only on `record`.
    """
    buffer = io.BytesIO()
    torch.save(record, buffer)
    return buffer.getvalue()


def load_network(path: Path, expected_kind: NetworkKind) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved network in eval mode; the record holds everything else that was saved."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"network file {path} not found; train it first (`oesdn train-{expected_kind}`)")
    fix = f"re-create it with `oesdn train-{expected_kind}` (or `dvc repro`)"
    record = read_torch_file(path, f"an oesdn {expected_kind} network file", fix)
    missing = [key for key in NETWORK_KEYS if key not in record]
    if missing:
        raise TorchFileError(f"{path} is not an oesdn network file: it lacks {missing}, so another tool wrote it; {fix}")
    if record["kind"] != expected_kind:
        raise TorchFileError(f"{path} holds a {record['kind']!r} network, expected {expected_kind!r}; {fix}")
    try:
        network = build_network(expected_kind, record["arch"])
        network.load_state_dict(record["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TorchFileError(f"{path} holds no network oesdn can rebuild ({first_line}); {fix}") from None
    return network.eval(), record
