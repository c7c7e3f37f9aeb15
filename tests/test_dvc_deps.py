"""`dvc.yaml` must list, for every stage, all project code the stage's command imports.

Otherwise DVC's "up to date" cannot be trusted: an edit to an undeclared module re-runs nothing.
The check imports each stage module in a fresh interpreter and compares the project modules it
loaded with the stage's declared code dependencies.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGE_MODULES = {
    "generate": "pipelines.stages.generate",
    "prepare": "pipelines.stages.prepare",
    "train_ae": "pipelines.stages.train",
    "train_sdn": "pipelines.stages.train_sdn",
    "evaluate": "pipelines.stages.evaluate",
    "summarize": "pipelines.stages.summarize",
}
# Shared plumbing every stage imports: the CLI, context and tracking glue, not what a stage computes.
PLUMBING = (
    "pipelines/cli.py",
    "pipelines/context.py",
    "pipelines/project_paths.py",
    "pipelines/stage_logging.py",
    "pipelines/commands",
    "pipelines/__init__.py",
    "pipelines/stages/__init__.py",
    "components/__init__.py",
    "components/provenance.py",
    "components/tracking",
)


def _loaded_files(module: str) -> set[str]:
    code = (
        "import importlib, json, sys; importlib.import_module(sys.argv[1]);"
        "print(json.dumps([getattr(m, '__file__', None) for m in list(sys.modules.values())]))"
    )
    out = subprocess.run([sys.executable, "-c", code, module], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = {Path(f).resolve() for f in json.loads(out) if f}
    project = (ROOT / "components", ROOT / "pipelines")
    return {str(f.relative_to(ROOT)) for f in files if any(top in f.parents for top in project)}


def _declared(stage: str) -> list[str]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    return [dep for dep in spec.get("do", spec)["deps"] if "$" not in dep]


@pytest.mark.parametrize("stage", sorted(STAGE_MODULES))
def test_every_imported_project_module_is_a_declared_dependency(stage: str) -> None:
    declared = _declared(stage)
    missing = sorted(
        path
        for path in _loaded_files(STAGE_MODULES[stage])
        if not any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in (*declared, *PLUMBING))
    )
    assert not missing, f"dvc.yaml stage {stage!r} imports but does not depend on: {missing}"
