"""The whole DVC pipeline on tiny settings, in a temporary copy of the project: `dvc repro` as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import PROJECT_ROOT, tiny_params, write_params

BIN = Path(sys.executable).parent
METHODS = {"oe_sdn", "ae_l2", "ae_ssim"}
METRICS = {"image_auroc", "pixel_auroc", "aupro", "f1", "false_alarm_rate", "recall"}
LABEL_FREE = {"synthetic_image_auroc", "synthetic_pixel_auroc"}

pytestmark = pytest.mark.integration


def run(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }
    result = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh git + DVC project holding this checkout's code and tiny params, already reproduced."""
    root = tmp_path_factory.mktemp("project")
    for name in ("components", "pipelines"):
        shutil.copytree(PROJECT_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(PROJECT_ROOT / ".gitignore", root / ".gitignore")
    import yaml

    base = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params = tiny_params(base, ("brick", "grass"))
    params["tracking"]["enabled"] = True  # every training and evaluation stage logs to mlflow.db
    write_params(root / "params.yaml", params)
    run("git", "init", "-q", cwd=root)
    run("dvc", "init", "-q", cwd=root)
    run("dvc", "config", "core.analytics", "false", cwd=root)
    run("dvc", "repro", cwd=root)
    run("git", "add", "-A", cwd=root)
    run("git", "commit", "-qm", "baseline", cwd=root)
    return root


def test_repro_writes_metrics_reports_and_summary(project: Path) -> None:
    for category in ("brick", "grass"):
        reports = project / "reports" / category
        metrics = json.loads((reports / "metrics.json").read_text())
        assert set(metrics) == METHODS
        for values in metrics.values():
            per_type = {key for key in values if key.startswith("recall.")}
            assert set(values) - per_type == METRICS | LABEL_FREE
            assert per_type, "recall per defect type is reported"
            assert all(0.0 <= v <= 1.0 for v in values.values())
        for name in ("roc.png", "panel.png", "score_histogram.png", "roc/oe_sdn.csv", "scores.csv"):
            assert (reports / name).stat().st_size > 0, name
        evaluation = json.loads((project / "evaluations" / f"{category}.json").read_text())
        assert evaluation["provenance"]["data_hash"] and evaluation["provenance"]["code_version"]["source_sha256"]
        with Image.open(reports / "panel.png") as panel:
            stamp = json.loads(panel.text["oesdn-provenance"])
        assert stamp == evaluation["provenance"]
    lineage = json.loads((project / "reports" / "summary_provenance.json").read_text())
    assert set(lineage["categories"]) == {"brick", "grass"}
    summary = json.loads((project / "reports" / "summary.json").read_text())
    assert set(summary["categories"]) == {"brick", "grass"}
    table = (project / "reports" / "summary.md").read_text()
    assert "| brick" in table and "| grass" in table and "| mean" in table


def test_stage_runs_carry_the_dependency_hashes_in_dvc_lock(project: Path) -> None:
    import yaml
    from mlflow import MlflowClient

    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    store = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    experiment = client.get_experiment_by_name("oesdn-grass")
    for stage in ("train_ae", "train_sdn", "evaluate"):
        run = client.search_runs(
            [experiment.experiment_id], f"tags.`oesdn.stage` = '{stage}'", order_by=["attributes.start_time DESC"]
        )[0]
        dep_tags = {k.removeprefix("dvc.dep."): v for k, v in run.data.tags.items() if k.startswith("dvc.dep.")}
        locked = {dep["path"]: dep["md5"] for dep in lock[f"{stage}@grass"]["deps"]}
        assert dep_tags and all(locked[path] == md5 for path, md5 in dep_tags.items()), stage


def test_generated_outputs_are_dvc_outputs_not_git_files(project: Path) -> None:
    tracked = run("git", "ls-files", cwd=project).split()
    assert not [path for path in tracked if path.startswith(("data/", "models/", "reports/", "evaluations/"))]
    assert "dvc.lock" in tracked


def test_repro_with_nothing_changed_runs_nothing(project: Path) -> None:
    output = run("dvc", "repro", cwd=project)
    assert "Running stage" not in output
    assert "up to date" in output


def test_metrics_and_plots_commands(project: Path) -> None:
    shown = json.loads(run("dvc", "metrics", "show", "--json", cwd=project))
    files = next(iter(shown.values()))["data"]
    assert "reports/brick/headline.json" in files and "reports/headline_mean.json" in files
    run("dvc", "plots", "show", "-o", "plots_html", cwd=project)
    assert (project / "plots_html" / "index.html").stat().st_size > 0


def test_a_category_override_reruns_only_that_category(project: Path) -> None:
    params_path = project / "params.yaml"
    original = params_path.read_text()
    import yaml

    params = yaml.safe_load(original)
    params["categories"]["grass"] = {"sdn": {"epochs": 1}}
    write_params(params_path, params)
    try:
        status = json.loads(run("dvc", "status", "--json", cwd=project))
        changed = {stage for stage in status if "@" in stage}
        assert changed and all(stage.endswith("@grass") for stage in changed), changed
        output = run("dvc", "repro", cwd=project)
        assert "Running stage 'train_sdn@grass'" in output
        assert "Running stage 'train_sdn@brick'" not in output and "Running stage 'train_ae@brick'" not in output
        diff = json.loads(run("dvc", "metrics", "diff", "--json", cwd=project))
        assert "reports/grass/headline.json" in diff and "reports/brick/headline.json" not in diff
    finally:
        params_path.write_text(original)
        run("dvc", "repro", cwd=project)  # back to the baseline, from the run cache


def test_dvc_exp_run_with_a_set_param(project: Path) -> None:
    output = run("dvc", "exp", "run", "-S", "sdn.lambda_oer=0", "-n", "plain-sdn", cwd=project)
    assert "Running stage 'train_sdn@brick'" in output
    assert "Running stage 'train_ae@brick'" not in output  # the AE does not read sdn params
    shown = run("dvc", "exp", "show", "--md", cwd=project)
    assert "plain-sdn" in shown
