"""Tags that tie a run to what made it: category, stage, git commit, data and DVC dependency hashes."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from components.models.oesdn.bundle import BundleInfo

PAIR_TAG = "oesdn.pair_id"
"""The AE/SDN pair (weights, preprocessing, scoring, threshold): on the evaluate run that measured it
and on the model version that ships it, which links the two."""
PIPELINE_RUN_ENV = "OESDN_PIPELINE_RUN"
"""Set by an orchestrator (the Prefect flow) so every stage run of one execution shares a tag."""


def dvc_md5(path: Path) -> str:
    """The md5 `dvc.lock` records for a file or a directory (`<hash>.dir`), computed by DVC's own
    `dvc-data` library, so the tag stays equal to the lock entry whatever DVC's hash format does."""
    import tempfile

    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    if not path.exists():
        raise FileNotFoundError(f"dependency {path} does not exist")
    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as scratch:  # a dry run stores nothing; build still wants a database
        _, _, obj = build(HashFileDB(fs, scratch), str(path), fs, "md5", dry_run=True)
    return str(obj.hash_info.value)


def dependency_tags(root: Path, dependencies: Iterable[str]) -> dict[str, str]:
    """`dvc.dep.<path>` -> md5, comparable with the stage's entry in `dvc.lock`."""
    return {f"dvc.dep.{dep}": dvc_md5(root / dep) for dep in dependencies}


def run_tags(category: str, stage: str, provenance: Mapping[str, Any], dependencies: Mapping[str, str]) -> dict[str, str]:
    """Every tag a stage run carries; the pipeline-run tag groups one execution's runs in the UI."""
    from components.runtime import cpu_capability

    code = provenance["code_version"]
    tags = {
        "oesdn.category": category,
        "oesdn.stage": stage,
        "oesdn.data_hash": provenance["data_hash"],
        "oesdn.source_sha256": code["source_sha256"],
        "mlflow.source.git.commit": code["git_commit"],
        "oesdn.git_dirty": str(code["git_dirty"]),
        "oesdn.pipeline_run": os.environ.get(PIPELINE_RUN_ENV) or f"data-{provenance['data_hash'][:12]}",
        # CPU results differ in their last bits with the thread count and with the vector
        # instructions torch's kernels use (AVX2, AVX512): rerunning one bit for bit needs both
        "oesdn.cpu_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "oesdn.cpu_capability": cpu_capability(),
        **dependencies,
    }
    return tags


def version_lineage_tags(model_run_id: str, info: BundleInfo) -> dict[str, str]:
    """The lineage a model version carries: the run holding its model, its data and its code."""
    code = info.provenance.get("code_version", {})
    return {
        "oesdn.model_run": model_run_id,
        "oesdn.data_hash": info.data_hash,
        "mlflow.source.git.commit": str(code.get("git_commit", "unknown")),
        "oesdn.source_sha256": str(code.get("source_sha256", "")),
    }
