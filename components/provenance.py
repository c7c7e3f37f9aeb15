"""What made an artifact: its params, the data hash and the code version, recorded beside it."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        completed = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip()


def source_hash(source_dirs: Iterable[Path]) -> str:
    """sha256 over every .py file's relative path and bytes: identifies code even outside git."""
    digest = hashlib.sha256()
    for directory in source_dirs:
        for path in sorted(Path(directory).rglob("*.py")):
            digest.update(path.relative_to(directory.parent).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def code_version(project_root: Path, source_dirs: Iterable[Path]) -> dict[str, Any]:
    """The git commit (and whether the code differs from it) plus a hash of the source itself."""
    source_dirs = list(source_dirs)
    commit = _git(["rev-parse", "HEAD"], project_root)
    status = _git(["status", "--porcelain", "--", *map(str, source_dirs)], project_root)
    return {
        "git_commit": commit or "unknown",
        "git_dirty": bool(status) if status is not None else None,
        "source_sha256": source_hash(source_dirs),
    }


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-serialisable parts, e.g. (params, data hash, code version)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def provenance_record(params: Mapping[str, Any], data_hash: str, code: Mapping[str, Any]) -> dict[str, Any]:
    return {"params": dict(params), "data_hash": data_hash, "code_version": dict(code)}
