"""Where each stage reads and writes, relative to the project root. `dvc.yaml` names the same paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectLayout:
    root: Path

    @property
    def bundled_data(self) -> Path:
        return self.root / "data" / "bundled"

    def prepared(self, category: str) -> Path:
        return self.root / "data" / "prepared" / category

    def models(self, category: str) -> Path:
        return self.root / "models" / category

    def reports(self, category: str) -> Path:
        return self.root / "reports" / category

    @property
    def evaluations(self) -> Path:
        return self.root / "evaluations"

    def evaluation(self, category: str) -> Path:
        return self.evaluations / f"{category}.json"

    def checkpoint(self, category: str, network: str) -> Path:
        """Resume points live outside DVC outputs, which DVC deletes before a stage runs."""
        return self.root / ".checkpoints" / category / f"{network}.pt"

    @property
    def summary_json(self) -> Path:
        return self.root / "reports" / "summary.json"

    @property
    def summary_provenance(self) -> Path:
        """Kept apart from summary.json, which `dvc metrics` reads as numbers."""
        return self.root / "reports" / "summary_provenance.json"

    @property
    def summary_md(self) -> Path:
        return self.root / "reports" / "summary.md"
