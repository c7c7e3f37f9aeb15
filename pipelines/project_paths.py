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

    def network(self, category: str, kind: str) -> Path:
        """A trained network file, `kind` "ae" or "sdn"."""
        return self.models(category) / f"{kind}.pt"

    def history(self, category: str, kind: str) -> Path:
        return self.models(category) / f"{kind}_history.csv"

    def relative(self, path: Path) -> str:
        """`path` as DVC and lineage tags name it: relative to the project root, with `/`."""
        return path.relative_to(self.root).as_posix()

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
        """Kept apart from summary.json, which holds only numbers."""
        return self.root / "reports" / "summary_provenance.json"

    @property
    def summary_md(self) -> Path:
        return self.root / "reports" / "summary.md"
