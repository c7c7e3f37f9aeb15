"""The floors of docs/architecture.md, checked on the source: what each folder may import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT


def _imported_roots(path: Path) -> set[str]:
    """Top-level package of every import in `path`, wherever it sits (lazy imports included)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def _modules(folder: str) -> list[Path]:
    return sorted((PROJECT_ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("components"), ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_components_know_nothing_of_the_pipeline_dvc_or_prefect(path: Path) -> None:
    assert not _imported_roots(path) & {"pipelines", "dvc", "prefect"}


def test_mlflow_is_imported_only_in_components_tracking() -> None:
    tracking = PROJECT_ROOT / "components" / "tracking"
    importers = [p for p in _modules("components") + _modules("pipelines") if "mlflow" in _imported_roots(p)]
    outside = [str(p.relative_to(PROJECT_ROOT)) for p in importers if tracking not in p.parents]
    assert importers and not outside, f"MLflow code outside components/tracking/: {outside}"


def test_the_check_sees_lazy_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from mlflow import MlflowClient\n    import prefect.flows\n")
    assert _imported_roots(module) == {"mlflow", "prefect"}
