"""Tags that tie a run to what made it: category, stage, git commit, data and DVC dependency hashes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PIPELINE_RUN_ENV = "OESDN_PIPELINE_RUN"
"""Set by an orchestrator (the Prefect flow) so every stage run of one execution shares a tag."""


def dvc_md5(path: Path) -> str:
    """The md5 `dvc.lock` records for a file, or for a directory (`<md5 of its listing>.dir`)."""
    if path.is_file():
        return _file_md5(path)
    if not path.is_dir():
        raise FileNotFoundError(f"dependency {path} does not exist")
    listing = sorted(
        ({"md5": _file_md5(file), "relpath": file.relative_to(path).as_posix()} for file in path.rglob("*") if file.is_file()),
        key=lambda entry: entry["relpath"],
    )
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dependency_tags(root: Path, dependencies: Iterable[str]) -> dict[str, str]:
    """`dvc.dep.<path>` -> md5, comparable with the stage's entry in `dvc.lock`."""
    return {f"dvc.dep.{dep}": dvc_md5(root / dep) for dep in dependencies}


def run_tags(
    category: str, stage: str, provenance: Mapping[str, Any], dependencies: Mapping[str, str]
) -> dict[str, str]:
    """Every tag a stage run carries; the pipeline-run tag groups one execution's runs in the UI."""
    code = provenance["code_version"]
    tags = {
        "oesdn.category": category,
        "oesdn.stage": stage,
        "oesdn.data_hash": provenance["data_hash"],
        "oesdn.source_sha256": code["source_sha256"],
        "mlflow.source.git.commit": code["git_commit"],
        "oesdn.git_dirty": str(code["git_dirty"]),
        "oesdn.pipeline_run": os.environ.get(PIPELINE_RUN_ENV) or f"data-{provenance['data_hash'][:12]}",
        **dependencies,
    }
    return tags
