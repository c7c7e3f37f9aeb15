"""Faults around the registry (issue 14): a degenerate model promoted, network files that change
bytes with identical weights, and duplicate versions from concurrent `oesdn register` calls.

One tiny project is trained once for the module; each test registers into its own SQLite store
(`MLFLOW_TRACKING_URI`), and gate tests rewrite the bundle's metrics as `tests/test_registry.py` does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.io import sha256_file
from components.models.oesdn.bundle import BUNDLE_FILE, read_bundle_info
from components.models.oesdn.persistence import build_network, load_network, save_network
from components.tracking.promotion import GateVerdict, QualityGates, check_gates
from components.tracking.registry import CategoryRegistry, RegistryError, registration_lock
from tests.conftest import PROJECT_ROOT, tiny_params, write_params
from tests.test_cli import OESDN

MODEL = "oesdn-brick"
GATES = QualityGates(min_primary_metric=0.7, max_baseline_shortfall=0.02, label_free=True)


# --- the gate decision alone ---------------------------------------------------------------------
def metrics(oe: float, ae: float, oe_synthetic: float = 0.9, ae_synthetic: float = 0.9) -> dict[str, dict[str, float | None]]:
    return {
        "oe_sdn": {"pixel_auroc": oe, "synthetic_pixel_auroc": oe_synthetic},
        "ae_l2": {"pixel_auroc": ae, "synthetic_pixel_auroc": ae_synthetic},
        "ae_ssim": {"pixel_auroc": 0.999},
    }


def test_gates_pass_a_model_above_the_floor_and_near_its_baseline() -> None:
    assert check_gates(metrics(0.90, 0.91), "pixel_auroc", GATES).passed
    assert check_gates(metrics(0.90, 0.99), "pixel_auroc", dataclasses.replace(GATES, max_baseline_shortfall=0.1)).passed


def test_gates_name_each_failure_and_its_params_key() -> None:
    verdict = check_gates(metrics(0.604, 0.999), "pixel_auroc", GATES)  # the learning_rate 0.999 model
    assert not verdict.passed and len(verdict.failures) == 2
    assert "0.6040 is below the floor 0.7000 (registry.gate_min_primary_metric)" in verdict.failures[0]
    assert "trails the AE-L2 baseline's 0.9990 by 0.3950" in verdict.failures[1]
    assert "registry.gate_max_baseline_shortfall" in verdict.summary()


def test_label_free_gate_is_checked_unless_switched_off() -> None:
    failing = metrics(0.95, 0.94, oe_synthetic=0.5, ae_synthetic=0.9)
    expected = (
        "OE-SDN synthetic_pixel_auroc 0.5000 trails the AE-L2 baseline's 0.9000 by 0.4000, more than 0.0200 "
        "(registry.gate_max_baseline_shortfall)"
    )
    assert check_gates(failing, "pixel_auroc", GATES).failures == (expected,)
    assert check_gates(failing, "pixel_auroc", dataclasses.replace(GATES, label_free=False)).passed


def test_label_free_primary_metric_is_judged_once_and_a_missing_one_fails() -> None:
    verdict = check_gates(metrics(0.95, 0.94, oe_synthetic=0.5, ae_synthetic=0.9), "synthetic_pixel_auroc", GATES)
    assert len(verdict.failures) == 2  # the floor and the baseline, not the same shortfall twice
    assert "has no image_auroc" in check_gates(metrics(0.9, 0.9), "image_auroc", GATES).summary()


# --- through `oesdn register` and `oesdn promote` ------------------------------------------------
@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults-registry")
    params = tiny_params(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()))
    params["registry"].update(gate_min_primary_metric=0.7, gate_max_baseline_shortfall=0.02, gate_label_free=True)
    write_params(root / "params.yaml", params)
    subprocess.run([OESDN, "--no-progress", "generate"], cwd=root, check=True, capture_output=True)
    for stage in ("prepare", "train-ae", "train-sdn", "evaluate"):
        subprocess.run([OESDN, "--no-progress", stage, "--category", "brick"], cwd=root, check=True, capture_output=True)
    return root


@pytest.fixture
def bundle(project: Path) -> Iterator[Path]:
    """The project's bundle record, restored after a test rewrote it."""
    path = project / "models" / "brick" / BUNDLE_FILE
    original = path.read_text()
    yield path
    path.write_text(original)


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture
def client(store: str) -> MlflowClient:
    return MlflowClient(tracking_uri=store, registry_uri=store)


def oesdn(project: Path, store: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    return subprocess.run([OESDN, *args], cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False)


def ok(project: Path, store: str, *args: str) -> str:
    result = oesdn(project, store, *args)
    assert result.returncode == 0, f"oesdn {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def with_metrics(path: Path, nudge: float, oe: float, ae: float, oe_synthetic: float = 0.9, ae_synthetic: float = 0.9) -> None:
    """Rewrite the bundle's record with these pixel and label-free AUROCs (and, by `nudge`, another pair id)."""
    info = read_bundle_info(path.parent)
    chosen = metrics(oe, ae, oe_synthetic, ae_synthetic)
    rewritten = {method: {**values, **chosen.get(method, {})} for method, values in info.metrics.items()}
    changed = dataclasses.replace(info, metrics=rewritten, masks_available=True, image_threshold=info.image_threshold + nudge)
    path.write_text(json.dumps(changed.to_json()))


def aliases(client: MlflowClient) -> dict[str, str]:
    """Where `champion` and `challenger` point (version searches leave aliases out)."""
    found = {}
    for alias in ("champion", "challenger"):
        try:
            found[alias] = str(client.get_model_version_by_alias(MODEL, alias).version)
        except MlflowException:
            continue
    return found


def test_a_degenerate_first_model_is_registered_with_the_reason_but_never_champion(
    project: Path, bundle: Path, store: str, client: MlflowClient
) -> None:
    with_metrics(bundle, 1e-6, oe=0.604, ae=0.999)
    out = ok(project, store, "register", "--category", "brick")
    assert "registered version 1" in out and "gated (champion none -> none)" in out
    assert "below the floor 0.7000" in out and "--version 1 --override-gates" in out
    assert aliases(client) == {}  # neither champion nor challenger
    gate = client.get_model_version(MODEL, "1").tags["oesdn.quality_gate"]
    assert gate.startswith("failed: ") and "registry.gate_max_baseline_shortfall" in gate

    with_metrics(bundle, 2e-6, oe=0.95, ae=0.94)  # a sound model: the first one to be champion
    out = ok(project, store, "register", "--category", "brick")
    assert "first_champion" in out and "moved_in_ui" not in out
    assert aliases(client) == {"champion": "2", "challenger": "2"}
    assert client.get_model_version(MODEL, "2").tags["oesdn.quality_gate"] == "passed"


def test_a_gated_model_beating_the_champion_stays_off_it_until_overridden_by_hand(
    project: Path, bundle: Path, store: str, client: MlflowClient
) -> None:
    with_metrics(bundle, 3e-6, oe=0.90, ae=0.89)
    ok(project, store, "register", "--category", "brick")
    with_metrics(bundle, 4e-6, oe=0.99, ae=0.89, oe_synthetic=0.5, ae_synthetic=0.9)  # fails the label-free check
    out = ok(project, store, "register", "--category", "brick")
    assert "gated (champion v1 -> v1)" in out and "synthetic_pixel_auroc 0.5000" in out
    assert aliases(client) == {"champion": "1", "challenger": "1"}

    refused = oesdn(project, store, "promote", "--category", "brick", "--version", "2")
    assert refused.returncode == 2 and "failed the quality gates" in refused.stderr and "--override-gates" in refused.stderr
    assert aliases(client)["champion"] == "1"

    why = "synthetic defects unlike this line's; checked by hand"
    out = ok(project, store, "promote", "--category", "brick", "--version", "2", "--override-gates", "--reason", why)
    assert "manual_promote (champion v1 -> v2)" in out and "overrides the failed quality gates" in out
    assert aliases(client)["champion"] == "2"
    override = client.get_model_version(MODEL, "2").tags["oesdn.quality_gate_override"]
    assert "via oesdn promote at 20" in override and override.endswith(why)


def test_saving_one_network_twice_gives_identical_bytes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    arch = {"channels": 1, "base_channels": 4, "latent_channels": 8, "depth": 2}
    network = build_network("ae", arch)
    extra = {"provenance": {"params": {"b": 1, "a": 2}}, "best_epoch": 1}
    save_network(tmp_path / "ae.pt", network, "ae", arch, extra)
    save_network(tmp_path / "copy" / "other-name.pt", network, "ae", arch, extra)
    assert (tmp_path / "ae.pt").read_bytes() == (tmp_path / "copy" / "other-name.pt").read_bytes()
    reloaded, record = load_network(tmp_path / "copy" / "other-name.pt", "ae")
    assert record["best_epoch"] == 1 and all(
        torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), network.state_dict().values(), strict=True)
    )


def test_a_forced_retrain_gives_identical_files_and_registers_nothing_new(
    project: Path, bundle: Path, store: str, client: MlflowClient
) -> None:
    ok(project, store, "register", "--category", "brick")
    models = project / "models" / "brick"
    before = {name: sha256_file(models / name) for name in ("ae.pt", "sdn.pt")}
    for stage in ("train-ae", "train-sdn"):
        ok(project, store, "--no-progress", stage, "--category", "brick")
    assert {name: sha256_file(models / name) for name in before} == before
    assert "this AE/SDN pair is already version 1; nothing registered" in ok(project, store, "register", "--category", "brick")
    assert [str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")] == ["1"]


def test_concurrent_registrations_of_one_pair_create_one_version(
    project: Path, bundle: Path, store: str, client: MlflowClient
) -> None:
    with_metrics(bundle, 5e-6, oe=0.95, ae=0.94)
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    command = [OESDN, "register", "--category", "brick"]
    running = [
        subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=600) for process in running]
    assert [process.returncode for process in running] == [0, 0], outputs
    stdout = "".join(out for out, _ in outputs)
    assert stdout.count("registered version 1") == 1 and stdout.count("already version 1") == 1
    assert stdout.count("first_champion") == 1
    assert [str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")] == ["1"]
    assert aliases(client) == {"champion": "1", "challenger": "1"}


def test_a_registration_that_lost_the_race_deletes_its_own_version(
    project: Path, bundle: Path, store: str, client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the lock (a remote server), two calls may both find no version; the later one backs out."""
    ok(project, store, "register", "--category", "brick")
    first = client.get_model_version(MODEL, "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    registry = CategoryRegistry(client, "brick", MODEL, "oesdn-brick")
    kept, created = registry.register(first.source, read_bundle_info(bundle.parent), {}, GateVerdict())
    assert (str(kept.version), created) == ("1", False)
    assert [str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")] == ["1"]
    with pytest.raises(MlflowException):
        client.get_model_version(MODEL, "2")


def test_a_held_registration_lock_makes_the_next_caller_wait_then_fail_clearly(store: str) -> None:
    held = pytest.raises(RegistryError, match="another `oesdn register` of oesdn-brick")
    with registration_lock(store, MODEL), held, registration_lock(store, MODEL, wait_s=0.3):
        pass


def test_a_finished_run_of_one_category_reopens_after_another_categorys_stage(tmp_path: Path) -> None:
    """`oesdn run` registers every category in one process: logging the model into brick's evaluate
    run after grass's stage set grass's experiment active must work, and leave the run as it was."""
    import mlflow

    from components.tracking.runs import reopened_run, stage_run
    from tests.conftest import _forget_mlflow_locations

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with stage_run("oesdn-brick", "evaluate", {"oesdn.stage": "evaluate"}) as brick_run:
            pass
        with stage_run("oesdn-grass", "evaluate", {"oesdn.stage": "evaluate"}):
            pass
        before = mlflow.MlflowClient().get_run(brick_run).info
        with reopened_run(brick_run):
            mlflow.set_tag("oesdn.registered", "yes")
        after = mlflow.MlflowClient().get_run(brick_run)
        assert after.data.tags["oesdn.registered"] == "yes"
        assert (after.info.status, after.info.end_time) == (before.status, before.end_time)
    finally:
        _forget_mlflow_locations()
