"""The promotion policy on its own: first version, better, worse, equal-to-margin, mismatched test sets."""

from __future__ import annotations

import pytest

from components.tracking.promotion import Candidate, Decision, decide


def candidate(version: str, value: float, manifest: str = "m1", metric: str = "pixel_auroc") -> Candidate:
    return Candidate(version, metric, value, manifest)


def test_first_version_becomes_champion() -> None:
    promote, reason = decide(candidate("1", 0.5), None, margin=0.01)
    assert promote and "first" in reason


def test_better_by_at_least_the_margin_is_promoted() -> None:
    assert decide(candidate("2", 0.92), candidate("1", 0.90), margin=0.02)[0]
    assert decide(candidate("2", 0.95), candidate("1", 0.90), margin=0.02)[0]


def test_better_by_less_than_the_margin_or_worse_is_kept() -> None:
    promote, reason = decide(candidate("2", 0.905), candidate("1", 0.90), margin=0.01)
    assert not promote and "kept" in reason
    assert not decide(candidate("2", 0.80), candidate("1", 0.90), margin=0.0)[0]


def test_metrics_from_different_test_sets_are_never_compared() -> None:
    with pytest.raises(ValueError, match="different test manifests"):
        decide(candidate("2", 0.99, "new"), candidate("1", 0.5, "old"), margin=0.0)
    with pytest.raises(ValueError, match="cannot compare"):
        decide(candidate("2", 0.99, metric="image_auroc"), candidate("1", 0.5), margin=0.0)


def test_decision_round_trips_through_json() -> None:
    decision = Decision(
        "brick", "oesdn-brick", "promoted", "policy", "1", "2", "better", {"2": {"metric": "pixel_auroc", "value": 0.9}}
    )
    again = Decision.from_json(decision.to_json())
    assert again == decision and again.moved
    assert "v1 -> v2" in again.summary()
