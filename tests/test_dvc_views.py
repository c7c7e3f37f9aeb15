"""What DVC's own commands show: `dvc metrics show` fits a 120-column terminal and prints the same
OE-SDN figures as metrics.json, the plots put all methods (or both losses) on one chart, and a
`dvc repro` stages nothing in git."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from configobj import ConfigObj

from components.headline import HEADLINE_NAME, MEAN_HEADLINE_NAME, headline, mean_headline
from tests.conftest import PROJECT_ROOT, tiny_params, write_params

BIN = Path(sys.executable).parent
CATEGORIES = ("brick", "gravel")  # gravel: the longest report path of the bundled categories
TERMINAL = 120


def _metrics(oe_sdn: dict[str, float | None], *baselines: dict[str, float | None]) -> dict[str, dict[str, float | None]]:
    return {"oe_sdn": oe_sdn} | {f"base{i}": values for i, values in enumerate(baselines)}


def test_headline_takes_oe_sdn_figures_and_the_best_baseline_per_figure() -> None:
    ours = {"image_auroc": 0.7, "pixel_auroc": 0.9, "false_alarm_rate": 0.1, "recall": 0.6, "aupro": 0.5}
    metrics = _metrics(ours, {"image_auroc": 0.8, "pixel_auroc": float("nan")}, {"image_auroc": 0.6, "pixel_auroc": 0.85})
    assert headline(metrics) == {
        "false_alarms": 0.1,
        "image_auroc": 0.7,
        "pixel_auroc": 0.9,
        "recall": 0.6,
        "image_base": 0.8,
        "pixel_base": 0.85,
    }


def test_headline_without_masks_and_its_mean_skip_missing_figures() -> None:
    no_masks = headline(_metrics({"image_auroc": 0.5, "pixel_auroc": None}, {"image_auroc": 0.4, "pixel_auroc": None}))
    assert no_masks["pixel_auroc"] is None and no_masks["pixel_base"] is None and no_masks["recall"] is None
    masks = headline(_metrics({"image_auroc": 0.7, "pixel_auroc": 0.9}, {"image_auroc": 0.6, "pixel_auroc": 0.8}))
    mean = mean_headline([no_masks, masks])
    assert mean["image_auroc"] == pytest.approx(0.6) and mean["pixel_auroc"] == 0.9 and mean["recall"] is None


def test_top_level_plots_cover_exactly_the_configured_categories() -> None:
    """DVC cannot loop in the top-level `plots:`, so dvc.yaml repeats the categories there."""
    plots = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["plots"]
    ids = [plot_id for plot in plots for plot_id in plot]
    categories = set(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())["categories"])
    for kind in ("roc", "ae_loss", "sdn_loss"):
        assert {i.split("@")[1] for i in ids if i.startswith(f"{kind}@")} == categories, kind


def test_the_project_does_not_autostage_dvc_lock() -> None:
    """With core.autostage on, every `dvc repro` (and so `oesdn run`) would `git add dvc.lock`."""
    core = ConfigObj(str(PROJECT_ROOT / ".dvc" / "config")).get("core", {})
    assert core.get("autostage", "false") == "false"


def _run(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "COLUMNS": str(TERMINAL),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }
    result = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh git + DVC project with this checkout's code, DVC config and tiny params, reproduced."""
    root = tmp_path_factory.mktemp("views")
    for name in ("components", "pipelines"):
        shutil.copytree(PROJECT_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    write_params(root / "params.yaml", tiny_params(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()), CATEGORIES))
    _run("git", "init", "-q", cwd=root)
    _run("dvc", "init", "-q", cwd=root)
    shutil.copy(PROJECT_ROOT / ".dvc" / "config", root / ".dvc" / "config")
    _run("git", "reset", "-q", cwd=root)  # `dvc init` stages its own files; start from an empty index
    _run("dvc", "repro", cwd=root)
    return root


@pytest.mark.integration
def test_metrics_show_fits_the_terminal_and_shows_the_oe_sdn_figures(project: Path) -> None:
    output = _run("dvc", "metrics", "show", cwd=project)
    assert max(len(line) for line in output.splitlines()) <= TERMINAL, output
    header, *rows = (line.split() for line in output.splitlines() if line.strip())
    table = {row[0]: dict(zip(header[1:], row[1:], strict=True)) for row in rows}
    assert set(table) == {f"reports/{c}/{HEADLINE_NAME}" for c in CATEGORIES} | {f"reports/{MEAN_HEADLINE_NAME}"}
    for category in CATEGORIES:
        metrics = json.loads((project / "reports" / category / "metrics.json").read_text())
        shown = table[f"reports/{category}/{HEADLINE_NAME}"]
        for key, figure in (
            ("image_auroc", "image_auroc"),
            ("pixel_auroc", "pixel_auroc"),
            ("false_alarms", "false_alarm_rate"),
            ("recall", "recall"),
        ):
            assert float(shown[key]) == pytest.approx(metrics["oe_sdn"][figure], abs=5e-6), (category, key)
        best = max(metrics[m]["image_auroc"] for m in ("ae_l2", "ae_ssim"))
        assert float(shown["image_base"]) == pytest.approx(best, abs=5e-6)


@pytest.mark.integration
def test_plots_draw_all_methods_and_both_losses_on_one_chart(project: Path) -> None:
    plots = json.loads(_run("dvc", "plots", "show", "--json", cwd=project))["data"]

    def values(plot_id: str, field: str) -> set[str]:
        return {point[field] for point in plots[plot_id][0]["content"]["data"]["values"]}

    assert values("roc@brick", "filename") == {"oe_sdn.csv", "ae_l2.csv", "ae_ssim.csv"}
    assert values("ae_loss@brick", "field") == values("sdn_loss@gravel", "field") == {"train_loss", "val_loss"}


@pytest.mark.integration
def test_repro_stages_nothing_in_git(project: Path) -> None:
    assert _run("git", "diff", "--cached", "--name-only", cwd=project) == ""
