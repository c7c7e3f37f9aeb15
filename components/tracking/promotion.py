"""The promotion policy and its decision records, free of MLflow so they can be tested alone."""

from __future__ import annotations

import getpass
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal

Action = Literal["first_champion", "promoted", "kept", "gated", "manual_promote", "rollback", "moved_in_ui", "already_registered"]
BASELINE = "ae_l2"
"""The method a model must not fall behind: the plain AE residual OE-SDN is meant to improve on."""
LABEL_FREE_METRIC = "synthetic_pixel_auroc"


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


@dataclass(frozen=True)
class QualityGates:
    """What a version must reach before the policy may make it champion (`registry.gate_*` params)."""

    min_primary_metric: float
    max_baseline_shortfall: float
    label_free: bool


@dataclass(frozen=True)
class GateVerdict:
    failures: tuple[str, ...] = ()
    """One sentence per failed gate, naming the figures and the params key; empty when all passed."""

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        return "passed" if self.passed else "; ".join(self.failures)


def check_gates(metrics: Mapping[str, Mapping[str, float | None]], primary_metric: str, gates: QualityGates) -> GateVerdict:
    """Why a version with these per-method metrics must not become champion (no reasons: it may).

    The champion comparison alone cannot catch a degenerate model: with no champion yet, the first
    version wins whatever it scores. The floor catches a model that learnt nothing, the baseline
    gate one that is worse than the AE residual it is built on (both on the primary metric), and the
    label-free gate one that loses to the residual on synthetic defects in the validation normals.
    A figure the evaluation did not produce is not judged.
    """
    ours, baseline = metrics.get("oe_sdn", {}), metrics.get(BASELINE, {})
    failures = []
    value = ours.get(primary_metric)
    if value is None:
        failures.append(f"OE-SDN has no {primary_metric}, so its quality is unknown")
    elif value < gates.min_primary_metric:
        failures.append(
            f"OE-SDN {primary_metric} {value:.4f} is below the floor {gates.min_primary_metric:.4f} (registry.gate_min_primary_metric)"
        )
    figures = [primary_metric] + ([LABEL_FREE_METRIC] if gates.label_free and primary_metric != LABEL_FREE_METRIC else [])
    for figure in figures:
        shortfall = _shortfall(ours.get(figure), baseline.get(figure), gates.max_baseline_shortfall)
        if shortfall:
            failures.append(f"OE-SDN {figure} {shortfall} (registry.gate_max_baseline_shortfall)")
    return GateVerdict(tuple(failures))


def _shortfall(ours: float | None, baseline: float | None, allowed: float) -> str:
    """'' unless OE-SDN trails the AE residual by more than `allowed`; else how far, in words."""
    if ours is None or baseline is None or baseline - ours <= allowed:
        return ""
    return f"{ours:.4f} trails the AE-L2 baseline's {baseline:.4f} by {baseline - ours:.4f}, more than {allowed:.4f}"
