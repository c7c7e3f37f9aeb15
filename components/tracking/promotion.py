"""The promotion policy and its decision records, free of MLflow so they can be tested alone."""

from __future__ import annotations

import getpass
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal

Action = Literal["first_champion", "promoted", "kept", "manual_promote", "rollback", "moved_in_ui", "already_registered"]


@dataclass(frozen=True)
class Candidate:
    """A registered version as the policy sees it: its primary metric on a known test manifest."""

    version: str
    metric: str
    value: float
    test_manifest_hash: str


@dataclass(frozen=True)
class Decision:
    """One alias movement (or a decision not to move), as shown in tags and the promotion log."""

    category: str
    model_name: str
    action: Action
    actor: str
    """Who or what decided: the policy, a named person via the CLI, or a hand move seen in the UI."""
    from_version: str | None
    """The champion before the decision."""
    to_version: str | None
    """The champion after the decision."""
    reason: str
    metrics: dict[str, dict[str, float | str]] = field(default_factory=dict)
    """Per version: the compared metric and its value."""
    timestamp: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def moved(self) -> bool:
        return self.from_version != self.to_version

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Decision:
        return cls(**json.loads(text))

    def summary(self) -> str:
        before = f"v{self.from_version}" if self.from_version else "none"
        after = f"v{self.to_version}" if self.to_version else "none"
        return f"{self.model_name}: {self.action} (champion {before} -> {after}) by {self.actor}: {self.reason}"


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown user"


def decide(challenger: Candidate, champion: Candidate | None, margin: float) -> tuple[bool, str]:
    """Promote only a challenger that beats the champion by `margin` on the same test manifest.

    The caller re-scores the champion on the challenger's test manifest when the two differ, so a
    changed test set is never compared against stale numbers.
    """
    if champion is None:
        return True, "no champion yet: the first version becomes champion"
    if challenger.version == champion.version:
        return False, "the challenger already is the champion"
    if challenger.test_manifest_hash != champion.test_manifest_hash:
        raise ValueError(
            f"cannot compare v{challenger.version} and v{champion.version}: their metrics come from different "
            "test manifests; re-score the champion on the challenger's test set first"
        )
    if challenger.metric != champion.metric:
        raise ValueError(f"cannot compare {challenger.metric} with {champion.metric}")
    gain = challenger.value - champion.value
    verdict = f"{challenger.metric} {challenger.value:.4f} vs {champion.value:.4f} (gain {gain:+.4f}, margin {margin:.4f})"
    if gain >= margin:
        return True, f"challenger beats champion: {verdict}"
    return False, f"champion kept: {verdict}"
