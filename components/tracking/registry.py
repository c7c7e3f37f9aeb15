"""One registered model per category: versions are bundles, `champion`/`challenger` are aliases.

Every decision, automatic or by hand, is written where the MLflow UI shows it: tags on the model and
its versions, and a `promotion` run per decision whose `promotion_log.jsonl` artifact holds the
category's whole history.

`challenger` is the newest version that passed the quality gates; a version that failed them is
registered with the reasons (tag `oesdn.quality_gate`) but gets no alias, so nothing serving or
shadowing an alias picks it up. Only `oesdn promote --override-gates` makes it champion, recorded.

One AE/SDN pair is one version, even under concurrent `oesdn register` calls: a lock beside a
SQLite store serialises them, and on any store the version holding a pair id is the lowest one, so
a call that finds a lower twin after creating its version deletes its own (a compare-and-set).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from components.models.oesdn.bundle import BUNDLE_FILE, NETWORK_FILES, BundleInfo
from components.tracking.lineage import PAIR_TAG
from components.tracking.promotion import Candidate, Decision, GateVerdict, current_user, decide
from components.tracking.runs import stage_run

CHAMPION, CHALLENGER = "champion", "challenger"
POLICY_CHAMPION_TAG = "oesdn.champion_set_by_oesdn"
"""The version oesdn last made champion; a different @champion means a person moved it."""
DECISION_TAG = "oesdn.decision"
GATE_TAG = "oesdn.quality_gate"
"""'passed' or 'failed: <reasons>'; versions registered before the gates existed have none."""
GATE_OVERRIDE_TAG = "oesdn.quality_gate_override"
LOG_ARTIFACT = "promotion_log.jsonl"
TAG_LIMIT = 5000
"""MLflow's longest tag value."""
METRICS_TAG = "oesdn.metrics"
"""One compact tag with the headline figures per method; every metric is on the evaluate run."""
HEADLINE_METRICS = ("image_auroc", "pixel_auroc", "false_alarm_rate", "recall")
LOCK_WAIT_S = 300.0
"""How long `oesdn register` waits for a concurrent registration of the same model to finish."""


class RegistryError(RuntimeError):
    """A registry operation that cannot be carried out; the message says what to do instead."""


Rescorer = Callable[[ModelVersion], float]
"""Scores a version's model on the current test manifest with the challenger's primary metric."""


@dataclass
class CategoryRegistry:
    client: MlflowClient
    category: str
    model_name: str
    experiment: str

    @classmethod
    def connect(cls, category: str, model_name: str, experiment: str) -> CategoryRegistry:
        """The registry at the tracking location `store.configure` set."""
        return cls(MlflowClient(), category, model_name, experiment)

    def registration_lock(self) -> contextlib.AbstractContextManager[None]:
        """`registration_lock` on this model in the current registry."""
        import mlflow

        return registration_lock(mlflow.get_registry_uri(), self.model_name)

    def mark_duplicate_run(self, run_id: str, version: ModelVersion) -> None:
        """Tag a run whose model lost the compare-and-set to `version`, which holds the same pair."""
        self.client.set_tag(run_id, "oesdn.duplicate_of", f"{self.model_name} v{version.version}")

    # --- reading ---------------------------------------------------------------------------
    def version_by_alias(self, alias: str) -> ModelVersion | None:
        try:
            return self.client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException:
            return None

    def version_with_pair(self, pair_id: str) -> ModelVersion | None:
        if not self._model_exists():
            return None
        found = self.client.search_model_versions(f"name='{self.model_name}' and tag.`{PAIR_TAG}`='{pair_id}'")
        return min(found, key=lambda v: int(v.version)) if found else None

    def gate_failures(self, version: ModelVersion) -> str:
        """'' for a version that passed the quality gates (or predates them), else why it failed."""
        recorded = version.tags.get(GATE_TAG, "passed")
        return "" if recorded == "passed" else recorded.removeprefix("failed: ")

    def candidate(self, version: ModelVersion) -> Candidate:
        tags = version.tags
        try:
            return Candidate(
                str(version.version), tags["oesdn.metric"], float(tags["oesdn.metric_value"]), tags["oesdn.test_manifest_hash"]
            )
        except KeyError as missing:
            raise RegistryError(
                f"{self.model_name} v{version.version} lacks tag {missing}; was it registered by oesdn?"
            ) from None

    def decisions(self) -> list[Decision]:
        """Every recorded decision for this category, oldest first."""
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return []
        runs = self.client.search_runs(
            [experiment.experiment_id], "tags.`oesdn.stage` = 'promotion'", order_by=["attributes.start_time ASC"]
        )
        return [Decision.from_json(run.data.tags[DECISION_TAG]) for run in runs if DECISION_TAG in run.data.tags]

    # --- writing ---------------------------------------------------------------------------
    def register(self, model_uri: str, info: BundleInfo, lineage: dict[str, str], gate: GateVerdict) -> tuple[ModelVersion, bool]:
        """The version holding the bundle logged at `model_uri`, and whether this call created it.

        The new version carries its metrics, lineage and quality-gate verdict from the start, so a
        concurrent call's pair search sees it; if that search then finds a lower version with the
        same pair, this call lost the race and deletes its own (see the module docstring).
        """
        import mlflow

        self._ensure_model()
        tags = {
            PAIR_TAG: info.pair_id,
            "oesdn.category": self.category,
            "oesdn.metric": info.primary_metric,
            "oesdn.metric_value": f"{info.primary_value:.6f}",
            "oesdn.test_manifest_hash": info.test_manifest_hash,
            "oesdn.image_threshold": f"{info.image_threshold:.8g}",
            METRICS_TAG: compact_metrics(info.metrics),
            GATE_TAG: "passed" if gate.passed else f"failed: {gate.summary()}"[:TAG_LIMIT],
            **lineage,
        }
        with contextlib.redirect_stderr(io.StringIO()):  # "Registered model ... already exists", "Created version ..."
            version = mlflow.register_model(model_uri, self.model_name, tags=tags)
        first = self.version_with_pair(info.pair_id)
        if first is not None and str(first.version) != str(version.version):
            self.client.delete_model_version(self.model_name, str(version.version))
            return first, False
        if gate.passed:
            self.client.set_registered_model_alias(self.model_name, CHALLENGER, str(version.version))
        return self.client.get_model_version(self.model_name, str(version.version)), True

    def apply_policy(self, challenger: ModelVersion, margin: float, rescore: Rescorer) -> list[Decision]:
        """Compare the challenger with whatever @champion is now (hand moves included), then record."""
        decisions = self._notice_hand_move()
        champion = self.version_by_alias(CHAMPION)
        ours = self.candidate(challenger)
        failures = self.gate_failures(challenger)
        if failures:
            decisions.append(self._apply(self._gated(challenger, champion, ours, failures)))
            return decisions
        theirs = None if champion is None else self._comparable(champion, ours, rescore)
        promote, reason = decide(ours, theirs, margin)
        action = "first_champion" if champion is None else ("promoted" if promote else "kept")
        before = None if champion is None else str(champion.version)
        decision = Decision(
            self.category,
            self.model_name,
            action,
            "oesdn promotion policy",
            before,
            str(challenger.version) if promote else before,
            reason,
            _metrics(ours, theirs),
        )
        decisions.append(self._apply(decision))
        return decisions

    def promote(self, version: str, reason: str, override_gates: bool = False) -> Decision:
        """Make `version` champion by hand; one that failed the quality gates needs `override_gates`."""
        target = self._version(version)
        champion = self.version_by_alias(CHAMPION)
        if champion is not None and str(champion.version) == str(target.version):
            raise RegistryError(f"{self.model_name} v{version} already is the champion")
        failures = self.gate_failures(target)
        if failures and not override_gates:
            raise RegistryError(
                f"{self.model_name} v{version} failed the quality gates ({failures}); "
                "add --override-gates to make it champion anyway (the override is recorded)"
            )
        compared = [self.candidate(target)] + ([] if champion is None else [self.candidate(champion)])
        decision = Decision(
            self.category,
            self.model_name,
            "manual_promote",
            f"{current_user()} via oesdn promote",
            None if champion is None else str(champion.version),
            str(target.version),
            f"{reason}; overrides the failed quality gates: {failures}" if failures else reason,
            _metrics(*compared),
        )
        if failures:
            override = f"{decision.actor} at {decision.timestamp}: {reason}"
            self.client.set_model_version_tag(self.model_name, str(target.version), GATE_OVERRIDE_TAG, override[:TAG_LIMIT])
        return self._apply(decision)

    def rollback(self, reason: str) -> Decision:
        """Give @champion back to the version it had before its latest move."""
        champion = self.version_by_alias(CHAMPION)
        if champion is None:
            raise RegistryError(f"{self.model_name} has no champion to roll back")
        history = [d for d in self.decisions() if d.moved and d.to_version == str(champion.version) and d.from_version]
        if not history:
            raise RegistryError(
                f"no earlier champion is recorded for {self.model_name} v{champion.version}; "
                "use `oesdn promote --version N` to choose one"
            )
        previous = self._version(history[-1].from_version or "")
        decision = Decision(
            self.category,
            self.model_name,
            "rollback",
            f"{current_user()} via oesdn rollback",
            str(champion.version),
            str(previous.version),
            reason,
            _metrics(self.candidate(previous), self.candidate(champion)),
        )
        return self._apply(decision)

    # --- internals -------------------------------------------------------------------------
    def _model_exists(self) -> bool:
        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            return False
        return True

    def _ensure_model(self) -> None:
        """Create the registered model unless it exists; a concurrent call creating it too is fine."""
        if self._model_exists():
            return
        try:
            self.client.create_registered_model(
                self.model_name,
                tags={"oesdn.category": self.category},
                description=f"OE-SDN AE/SDN pair for {self.category!r}; aliases: champion (serving), "
                "challenger (newest version that passed the quality gates)",
            )
        except MlflowException:
            if not self._model_exists():
                raise

    def _gated(self, challenger: ModelVersion, champion: ModelVersion | None, ours: Candidate, failures: str) -> Decision:
        """The policy's record that a version failing the quality gates stays off @champion."""
        current = None if champion is None else str(champion.version)
        return Decision(
            self.category,
            self.model_name,
            "gated",
            "oesdn quality gates",
            current,
            current,
            f"v{challenger.version} failed the quality gates, so it is not made champion: {failures}. "
            f"To serve it anyway: oesdn promote --category {self.category} --version {challenger.version} --override-gates",
            _metrics(ours),
        )

    def _version(self, version: str) -> ModelVersion:
        try:
            return self.client.get_model_version(self.model_name, str(version))
        except MlflowException:
            raise RegistryError(f"{self.model_name} has no version {version!r}") from None

    def _notice_hand_move(self) -> list[Decision]:
        """Record (never revert) a champion someone set in the UI since oesdn last set it."""
        champion = self.version_by_alias(CHAMPION)
        tags = self.client.get_registered_model(self.model_name).tags
        last_set = tags.get(POLICY_CHAMPION_TAG)
        now = None if champion is None else str(champion.version)
        if last_set is None or last_set == (now or ""):  # '' records "no champion", e.g. after a gated first version
            return []
        decision = Decision(
            self.category,
            self.model_name,
            "moved_in_ui",
            "a person, outside oesdn (e.g. the MLflow UI)",
            last_set or None,
            now,
            "champion alias found moved by hand; respected as the champion to beat",
        )
        return [self._apply(decision)]

    def _comparable(self, champion: ModelVersion, challenger: Candidate, rescore: Rescorer) -> Candidate:
        """The champion's metric on the challenger's test manifest (re-scored if it differs)."""
        recorded = self.candidate(champion)
        if recorded.test_manifest_hash == challenger.test_manifest_hash and recorded.metric == challenger.metric:
            return recorded
        return Candidate(str(champion.version), challenger.metric, rescore(champion), challenger.test_manifest_hash)

    def _apply(self, decision: Decision) -> Decision:
        """Move the alias if the decision says so, then record it: tags and a promotion run."""
        if decision.moved and decision.action != "moved_in_ui":
            if decision.to_version is None:
                self.client.delete_registered_model_alias(self.model_name, CHAMPION)
            else:
                self.client.set_registered_model_alias(self.model_name, CHAMPION, decision.to_version)
        self.client.set_registered_model_tag(self.model_name, POLICY_CHAMPION_TAG, decision.to_version or "")
        self.client.set_registered_model_tag(self.model_name, "oesdn.last_decision", decision.summary()[:5000])
        for version in {decision.from_version, decision.to_version} - {None}:
            self.client.set_model_version_tag(self.model_name, str(version), "oesdn.last_decision", decision.summary()[:5000])
        self._log_decision_run(decision)
        return decision

    def _log_decision_run(self, decision: Decision) -> None:
        import mlflow

        history = [*self.decisions(), decision]
        tags = {
            "oesdn.category": self.category,
            "oesdn.stage": "promotion",
            "oesdn.action": decision.action,
            "oesdn.actor": decision.actor,
            "oesdn.from_version": decision.from_version or "",
            "oesdn.to_version": decision.to_version or "",
            DECISION_TAG: decision.to_json(),
        }
        name = f"promotion {decision.action}: v{decision.from_version or '-'} -> v{decision.to_version or '-'}"
        with stage_run(self.experiment, name, tags), tempfile.TemporaryDirectory() as tmp:
            for version, values in decision.metrics.items():
                mlflow.log_metric(f"v{version}.{values['metric']}", float(values["value"]))
            log = Path(tmp) / LOG_ARTIFACT
            log.write_text("".join(d.to_json() + "\n" for d in history))
            mlflow.log_artifact(str(log))


@contextlib.contextmanager
def registration_lock(registry_uri: str, model_name: str, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Serialise registrations of one model in a local SQLite store: a `flock` on a file beside it.

    The pair search and the version creation are two calls, so two concurrent `oesdn register`
    runs could both find no version and both create one; under the lock the second finds the
    first's. The kernel frees the lock when its holder dies. Other stores (an HTTP server) cannot
    be locked from here: `CategoryRegistry.register`'s compare-and-set covers them.
    """
    if not registry_uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_path = Path(f"{registry_uri.removeprefix('sqlite:///')}.{model_name}.register.lock")
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RegistryError(
                        f"another `oesdn register` of {model_name} has held {lock_path} for over {wait_s:.0f} s; "
                        "wait for it to finish (or stop it), then run again"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(descriptor)


def _metrics(*candidates: Candidate | None) -> dict[str, dict[str, float | str]]:
    return {c.version: {"metric": c.metric, "value": c.value} for c in candidates if c is not None}


def compact_metrics(metrics: dict[str, dict[str, float | None]]) -> str:
    """`{"oe_sdn": {"image_auroc": 0.801, ...}, ...}` with the headline figures, four decimals."""
    return json.dumps(
        {
            method: {k: round(v, 4) for k in HEADLINE_METRICS if (v := values.get(k)) is not None}
            for method, values in metrics.items()
        },
        separators=(",", ":"),
    )


def stage_bundle(source: Path, target: Path) -> Path:
    """Copy exactly the bundle's files (not histories or checkpoints) into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for name in (BUNDLE_FILE, *NETWORK_FILES):
        shutil.copy2(source / name, target / name)
    return target


def fetch_registered_bundle(uri: str, destination: Path) -> tuple[Path, str, str]:
    """Download the bundle `models:/<name>@<alias>` or `models:/<name>/<N>` names: (folder, name, version).

    The exact version found is downloaded, so the name and version returned describe the weights.
    Any registry failure is a RegistryError.
    """
    reference = uri.removeprefix("models:/")
    client = MlflowClient()
    try:
        if "@" in reference:
            name, alias = reference.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = reference.rsplit("/", 1)
            version = client.get_model_version(name, number)
        bundle = download_bundle(f"models:/{version.name}/{version.version}", destination)
    except MlflowException as error:
        raise RegistryError(str(error)) from error
    return bundle, version.name, str(version.version)


def download_bundle(model_uri: str, destination: Path | None = None) -> Path:
    """Fetch a registered model's bundle folder (e.g. `models:/oesdn-brick@champion`) locally."""
    import mlflow

    from components.tracking.pyfunc import BUNDLE_ARTIFACT

    root = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(destination) if destination else None))
    bundle = root / "artifacts" / BUNDLE_ARTIFACT
    if not (bundle / BUNDLE_FILE).is_file():
        raise RegistryError(f"{model_uri} holds no oesdn bundle (looked for artifacts/{BUNDLE_ARTIFACT}/{BUNDLE_FILE})")
    return bundle


def model_metadata(info: BundleInfo) -> dict[str, Any]:
    return {"category": info.category, "pair_id": info.pair_id, "image_threshold": info.image_threshold}
