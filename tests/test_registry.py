"""MLflow end to end, through the `oesdn` console script: tracked stages, registry, policy, serving.

One tiny project is trained once per module with tracking on (a SQLite store in the project), then
registered; the policy tests register variants of its bundle with other metrics.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from components.models.oesdn.bundle import BUNDLE_FILE, read_bundle_info
from tests.conftest import PROJECT_ROOT, stop_process_group, tiny_params, write_params
from tests.test_cli import oesdn

MODEL = "oesdn-brick"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tracked")
    params = tiny_params(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()))
    params["tracking"]["enabled"] = True
    params["registry"]["promotion_margin"] = 0.01
    params["ae"].update(epochs=5, validations=2)  # checks from epoch 3 on (validate_from 0.5), 2 apart
    write_params(root / "params.yaml", params)
    oesdn("--no-progress", "generate", cwd=root)
    for stage in ("prepare", "train-ae", "train-sdn", "evaluate"):
        oesdn("--no-progress", stage, "--category", "brick", cwd=root)
    return root


@pytest.fixture
def client(project: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}", registry_uri=f"sqlite:///{project / 'mlflow.db'}")


def stage_runs(client: MlflowClient) -> dict[str, object]:
    experiment = client.get_experiment_by_name("oesdn-brick")
    runs = client.search_runs([experiment.experiment_id], "tags.`oesdn.stage` != 'promotion'")
    return {run.data.tags["oesdn.stage"]: run for run in runs}


def test_each_training_and_evaluation_stage_is_a_tagged_run(project: Path, client: MlflowClient) -> None:
    runs = stage_runs(client)
    assert {"train_ae", "train_sdn", "evaluate"} <= set(runs)
    record = json.loads((project / "data" / "prepared" / "brick" / "dataset.json").read_text())
    for stage in ("train_ae", "train_sdn", "evaluate"):
        tags = runs[stage].data.tags
        assert tags["oesdn.category"] == "brick"
        assert tags["oesdn.data_hash"] == record["data_hash"]
        assert tags["mlflow.source.git.commit"]
        assert tags["dvc.dep.data/prepared/brick"].endswith(".dir")
    assert len({runs[s].data.tags["oesdn.pipeline_run"] for s in ("train_ae", "train_sdn", "evaluate")}) == 1
    assert runs["train_sdn"].data.params["sdn.lambda_oer"] == "0.5"
    train_loss = client.get_metric_history(runs["train_ae"].info.run_id, "train_loss")
    val_loss = client.get_metric_history(runs["train_ae"].info.run_id, "val_loss")
    assert [m.step for m in train_loss] == [1, 2, 3, 4, 5]
    assert [m.step for m in val_loss] == [3, 5]  # the second half only, at most ae.validations checks, the last included
    evaluation = runs["evaluate"].data.metrics
    assert {"oe_sdn.pixel_auroc", "ae_l2.image_auroc", "ae_ssim.aupro"} <= set(evaluation)
    artifacts = {a.path for a in client.list_artifacts(runs["evaluate"].info.run_id, "plots")}
    assert artifacts == {"plots/roc.png", "plots/panel.png", "plots/score_histogram.png"}
    checkpoints = [a.path for a in client.list_artifacts(runs["train_sdn"].info.run_id, "checkpoints")]
    assert checkpoints == ["checkpoints/sdn.pt"]
    for stage, written in (("train_ae", "ae.pt"), ("train_sdn", "sdn.pt")):  # the run spans the training
        info, trained_at = runs[stage].info, (project / "models" / "brick" / written).stat().st_mtime * 1000
        assert info.start_time < trained_at < info.end_time, f"{stage}: the run must open before training, not after"


def variant(project: Path, value: float, nudge: float, manifest: str | None = None) -> None:
    """Rewrite the bundle's record with another OE-SDN primary metric (and so another identity)."""
    path = project / "models" / "brick" / BUNDLE_FILE
    info = read_bundle_info(path.parent)
    metrics = {**info.metrics, "oe_sdn": {**info.metrics["oe_sdn"], info.primary_metric: value}}
    changed = dataclasses.replace(
        info,
        metrics=metrics,
        image_threshold=info.image_threshold + nudge,
        test_manifest_hash=manifest or info.test_manifest_hash,
    )
    path.write_text(json.dumps(changed.to_json()))


def champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(MODEL, "champion").version)


def test_register_is_idempotent_and_the_first_version_becomes_champion(project: Path, client: MlflowClient) -> None:
    registered = oesdn("register", "--category", "brick", cwd=project)
    first = registered.stdout
    assert "registered version 1" in first and "first_champion" in first
    console = registered.stdout + registered.stderr
    for noise in ("Registered model", "Created version", "Downloading artifacts", "INFO mlflow"):
        assert noise not in console, f"MLflow's own console line {noise!r} is filtered"
    again = oesdn("register", "--category", "brick", cwd=project).stdout
    assert "already version 1" in again
    assert [str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")] == ["1"]
    version = client.get_model_version(MODEL, "1")
    assert set(version.aliases) == {"champion", "challenger"}
    assert version.tags["oesdn.metric"] == "pixel_auroc"
    assert json.loads(version.tags["oesdn.metrics"])["ae_l2"]["image_auroc"] > 0
    assert len(version.tags) <= 13, sorted(version.tags)  # a few tags; every metric is on the run
    run = client.get_run(version.run_id)  # the UI's "Source run"
    assert run.data.tags["oesdn.stage"] == "evaluate" and run.data.tags["oesdn.pair_id"] == version.tags["oesdn.pair_id"]
    assert "oe_sdn.image_auroc" in run.data.metrics and run.info.status == "FINISHED"
    assert run.info.end_time - run.info.start_time < 120_000, "logging the model later leaves the run's duration alone"


def test_pyfunc_scores_equal_the_evaluate_stage(project: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/1")
    scores = pd.read_csv(project / "reports" / "brick" / "scores.csv")
    paths = [str(project / "data" / "bundled" / "brick" / "test" / name) for name in scores["image"]]
    by_path = model.predict(pd.DataFrame({"path": paths}))
    by_bytes = model.predict(pd.DataFrame({"image": [base64.b64encode(Path(p).read_bytes()).decode() for p in paths]}))
    np.testing.assert_allclose(by_path["pred_score"], scores["oe_sdn"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(by_bytes["pred_score"], scores["oe_sdn"], rtol=0, atol=1e-5)
    threshold = read_bundle_info(project / "models" / "brick").image_threshold
    assert (by_path["pred_label"] == (by_path["pred_score"] > threshold)).all()
    with_maps = model.predict(pd.DataFrame({"path": paths[:2]}), params={"anomaly_map": True})
    assert np.asarray(with_maps["anomaly_map"][0]).shape == (32, 32)


def test_pyfunc_rejects_bad_input_by_row(project: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/1").unwrap_python_model()
    with pytest.raises(Exception, match="exactly one of the columns"):
        model.predict(None, pd.DataFrame({"picture": ["x"]}))
    with pytest.raises(Exception, match="row 0: column 'image' is not valid base64"):
        model.predict(None, pd.DataFrame({"image": ["%%%"]}))
    with pytest.raises(Exception, match="cannot read image"):
        model.predict(None, pd.DataFrame({"image": [base64.b64encode(b"not an image").decode()]}))


def test_promotion_policy_through_the_cli(project: Path, client: MlflowClient) -> None:
    actual = read_bundle_info(project / "models" / "brick")
    base = actual.primary_value
    original = (project / "models" / "brick" / BUNDLE_FILE).read_text()
    try:
        variant(project, base - 0.05, 1e-6)  # v2: worse
        out = oesdn("register", "--category", "brick", cwd=project).stdout
        assert "champion kept" in out and champion(client) == "1"
        assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == "2"

        variant(project, base + 0.004, 2e-6)  # v3: better, but by less than the 0.01 margin
        assert "champion kept" in oesdn("register", "--category", "brick", cwd=project).stdout
        assert champion(client) == "1"

        variant(project, base + 0.05, 3e-6)  # v4: better by more than the margin
        out = oesdn("register", "--category", "brick", cwd=project).stdout
        assert "promoted (champion v1 -> v4)" in out and champion(client) == "4"

        client.set_registered_model_alias(MODEL, "champion", "2")  # a person in the UI
        variant(project, base + 0.01, 4e-6)  # v5: beats v2 (base - 0.05) by far, but not v4
        out = oesdn("register", "--category", "brick", cwd=project).stdout
        assert "moved_in_ui (champion v4 -> v2)" in out
        assert "promoted (champion v2 -> v5)" in out and champion(client) == "5"

        client.set_registered_model_alias(MODEL, "champion", "4")  # a person prefers v4 again
        variant(project, base - 0.1, 5e-6)  # v6: worse than v4: the hand-set champion stays
        out = oesdn("register", "--category", "brick", cwd=project).stdout
        assert "moved_in_ui (champion v5 -> v4)" in out and champion(client) == "4"

        rolled = oesdn("rollback", "--category", "brick", "--reason", "v4 misses scratches", cwd=project).stdout
        assert "rollback (champion v4 -> v5)" in rolled and champion(client) == "5"
        promoted = oesdn("promote", "--category", "brick", "--version", "3", cwd=project).stdout
        assert "manual_promote (champion v5 -> v3)" in promoted and champion(client) == "3"
        missing = oesdn("promote", "--category", "brick", "--version", "99", cwd=project, check=False)
        assert missing.returncode == 2 and "no version '99'" in missing.stderr

        variant(project, base + 0.5, 6e-6, manifest="another test set")  # v7: champion is re-scored
        out = oesdn("register", "--category", "brick", cwd=project).stdout
        assert f"{base:.4f}" in out  # v3's re-scored metric is the real one, not its recorded value
    finally:
        (project / "models" / "brick" / BUNDLE_FILE).write_text(original)

    experiment = client.get_experiment_by_name("oesdn-brick")
    last = client.search_runs(
        [experiment.experiment_id], "tags.`oesdn.stage` = 'promotion'", order_by=["attributes.start_time DESC"]
    )[0]
    log_path = client.download_artifacts(last.info.run_id, "promotion_log.jsonl", str(project))
    actions = [json.loads(line)["action"] for line in Path(log_path).read_text().splitlines()]
    assert actions == [
        "first_champion",
        "kept",
        "kept",
        "promoted",
        "moved_in_ui",
        "promoted",
        "moved_in_ui",
        "kept",
        "rollback",
        "manual_promote",
        "promoted",
    ]
    record = json.loads(Path(log_path).read_text().splitlines()[-3])
    assert record["actor"].endswith("via oesdn rollback") and record["reason"] == "v4 misses scratches"
    assert set(record["metrics"]) == {"4", "5"}
    assert "promoted" in client.get_registered_model(MODEL).tags["oesdn.last_decision"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_served_model_answers_http(project: Path) -> None:
    port = free_port()
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    command = [
        mlflow_cli,
        "models",
        "serve",
        "-m",
        f"models:/{MODEL}/1",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    server = subprocess.Popen(
        command, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else "server exited"
                time.sleep(0.5)
        image = project / "data" / "bundled" / "brick" / "test" / "good" / "000.png"
        payload = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(image.read_bytes()).decode()]]}}
        request = urllib.request.Request(f"{url}/invocations", json.dumps(payload).encode(), {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
    finally:
        stop_process_group(server)
    scores = pd.read_csv(project / "reports" / "brick" / "scores.csv").set_index("image")
    prediction = answer["predictions"][0]
    assert abs(prediction["pred_score"] - scores.loc["good/000.png", "oe_sdn"]) < 1e-5
    assert isinstance(prediction["pred_label"], bool)


@pytest.mark.skipif(not os.environ.get("OESDN_TEST_MLFLOW_SERVER"), reason="needs a real `mlflow server` (.ci/run starts one)")
def test_against_a_real_tracking_server(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = os.environ["OESDN_TEST_MLFLOW_SERVER"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    for stage in ("evaluate",):
        oesdn("--no-progress", stage, "--category", "brick", cwd=project)
    out = oesdn("register", "--category", "brick", cwd=project).stdout
    assert "oesdn-brick" in out
    probe = (
        "import mlflow, pandas as pd, sys; "
        f"m = mlflow.pyfunc.load_model('models:/{MODEL}@champion'); "
        "print(float(m.predict(pd.DataFrame({'path': [sys.argv[1]]}))['pred_score'][0]))"
    )
    image = project / "data" / "bundled" / "brick" / "test" / "good" / "000.png"
    env = {**os.environ, "MLFLOW_TRACKING_URI": server}
    score = subprocess.run(
        [sys.executable, "-c", probe, str(image)], env=env, capture_output=True, text=True, check=True, cwd=project
    )
    assert float(score.stdout.strip().splitlines()[-1]) >= 0.0


def test_ci_starts_the_tracking_server() -> None:
    """In CI the server test above must run, never be skipped."""
    if os.environ.get("CI"):
        assert os.environ.get("OESDN_TEST_MLFLOW_SERVER"), ".ci/run must export OESDN_TEST_MLFLOW_SERVER"
