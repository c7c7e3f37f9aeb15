"""Read `.pt` files without running code from them, and say clearly when oesdn did not write one.

Every `torch.load` in the project goes through `read_torch_file`: with `weights_only=True` torch
refuses a file holding arbitrary Python objects, but its message advises retrying with
`weights_only=False`, which would run whatever code the file carries. Here such a file, a damaged
one and a foreign one all fail with one error that names the file and how to get a good one.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from components.data.errors import DatasetError


class TorchFileError(DatasetError):
    """A `.pt` file oesdn did not write, or a damaged one; the message names it and the fix.

    A DatasetError, so `oesdn` reports it as one line like any other input it cannot use.
    """


def read_torch_file(path: Path, what: str, fix: str) -> dict[str, Any]:
    """The dict stored in `path` by `torch.save`, read on the CPU without running code from the file.

    `what` names the expected content ("an oesdn ae network file"), `fix` how to get a good one.
    """
    import torch

    try:
        with warnings.catch_warnings():  # its note on a foreign pickle's protocol would precede our error
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            record = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise TorchFileError(f"cannot open {path} ({error.strerror or error}); {fix}") from error
    except Exception as error:  # noqa: BLE001 - torch raises UnpicklingError, KeyError, EOFError, RuntimeError...
        raise TorchFileError(f"{path} is not {what}: {_unreadable_reason(error)}; {fix}") from None
    if not isinstance(record, dict):
        raise TorchFileError(f"{path} is not {what}: it holds a {type(record).__name__}, not an oesdn record; {fix}")
    return record


def _unreadable_reason(error: Exception) -> str:
    """Why torch refused the file, without its advice to load it unsafely."""
    if "weights_only" in str(error):
        return "it holds Python objects, not only tensors, so another tool wrote it (it is not loaded, as that could run code)"
    return f"it is damaged or another tool wrote it ({type(error).__name__})"
