"""What every stage needs: its category's settings, the project layout, the device, the code version."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.config import Params, load_params
from components.provenance import code_version, provenance_record
from pipelines.project_paths import ProjectLayout

CODE_ROOT = Path(__file__).resolve().parents[1]
"""The checkout holding `components/` and `pipelines/`: the code whose version artifacts record."""


@dataclass(frozen=True)
class StageContext:
    params: Params
    """Settings with this category's overrides merged in (the globals for project-wide stages)."""
    layout: ProjectLayout
    category: str | None
    progress: bool
    device: str
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    """When the stage began: its MLflow run, logged at the end, spans the whole stage from here."""

    def code(self) -> dict[str, Any]:
        return code_version(CODE_ROOT, [CODE_ROOT / "components", CODE_ROOT / "pipelines"])

    def provenance(self, sections: tuple[str, ...], data_hash: str) -> dict[str, Any]:
        """Params of the sections a stage reads, the data hash and code version, for its artifacts."""
        dumped = self.params.model_dump(mode="json")
        chosen = {"seed": dumped["seed"], "category": self.category, **{name: dumped[name] for name in sections}}
        return provenance_record(chosen, data_hash, self.code())


def make_context(
    params_path: Path, category: str | None, progress: bool = True, device: str = "auto", root: Path | None = None
) -> StageContext:
    """The context of a command run in the project folder `root` (default: the working folder)."""
    params = load_params(params_path)
    if category is not None:
        params = params.for_category(category)
    layout = ProjectLayout(Path.cwd() if root is None else root)
    return StageContext(params=params, layout=layout, category=category, progress=progress, device=device)
