"""Markdown that a flow run publishes and `oesdn run` prints: metrics, baselines, promotion, links."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.reporting import BASELINE_MARGIN
from pipelines.project_paths import ProjectLayout

_METRICS = ("pixel_auroc", "image_auroc", "aupro", "false_alarm_rate", "recall")
_METHOD_NAMES = {"oe_sdn": "OE-SDN", "ae_l2": "AE-L2", "ae_ssim": "AE-SSIM"}


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def metrics_table(project: Path, category: str) -> str:
    path = ProjectLayout(project).evaluation(category)
    if not path.is_file():
        return f"_no evaluation found at {path}_"
    metrics = json.loads(path.read_text())["metrics"]
    rows = ["| method | " + " | ".join(_METRICS) + " |", "|---|" + "---:|" * len(_METRICS)]
    for method, name in _METHOD_NAMES.items():
        rows.append(f"| {name} | " + " | ".join(_fmt(metrics[method].get(m)) for m in _METRICS) + " |")
    return "\n".join(rows)


def mlflow_links(project: Path, model_name: str, model_run_id: str | None) -> list[str]:
    """Where to look in MLflow: a clickable run link against a server, a run id for a local store."""
    from components.tracking.store import redact, tracking_uri

    uri = tracking_uri(project)
    model = f"models:/{model_name}@champion"
    if not model_run_id:
        return [f"registry: `{model}` in {redact(uri)}"]
    if uri.startswith("http"):
        return [f"[run with the model]({redact(uri).rstrip('/')}/#/runs/{model_run_id})", f"registry: `{model}`"]
    return [f"run with the model `{model_run_id}` in {redact(uri)}", f"registry: `{model}`"]


def category_markdown(project: Path, category: str, result: dict[str, Any]) -> str:
    stages = result["stages"]
    ran = [s["stage"] for s in stages if s["ran"]]
    registration = result["registration"]
    decisions = registration["decisions"] or [
        f"{registration['model_name']} v{registration['version']} already registered; no decision needed"
    ]
    lines = [
        f"# {category}",
        "",
        f"Stages run: {', '.join(ran) if ran else 'none (all up to date in DVC)'}",
        "",
        metrics_table(project, category),
        "",
        "## Promotion",
        *(f"- {d}" for d in decisions),
        "",
        "## MLflow",
        *(f"- {link}" for link in mlflow_links(project, registration["model_name"], registration.get("model_run_id"))),
    ]
    return "\n".join(lines)


def overview_markdown(project: Path, results: dict[str, dict[str, Any]], failures: dict[str, str]) -> str:
    lines = ["# OE-SDN training run", ""]
    for category, result in results.items():
        lines += [category_markdown(project, category, result).replace("# ", "## ", 1), ""]
    if failures:
        lines += ["## Failed categories", *(f"- **{c}**: {why}" for c, why in failures.items())]
    return "\n".join(lines)


def evaluation_page_link(project: Path, category: str) -> str:
    """Where the category's evaluation page lies: a file link and the path to open (a browser viewing the
    Prefect UI over http may refuse to follow a file:// link, so the path is printed too)."""
    from components.summary_report import PAGE_NAME

    page = (ProjectLayout(project).reports(category) / PAGE_NAME).resolve()
    if not page.is_file():
        return f"_no evaluation page at {page}_"
    return f"Evaluation page: [{category}/{PAGE_NAME}]({page.as_uri()}) (`{page}`)"


def ending_lines(project: Path, results: dict[str, dict[str, Any]], image_quantile: float) -> list[str]:
    """The last lines of `oesdn run`: per category, what ships and what it does at its threshold.

    One line each: the registered version of `<prefix><category>` and the promotion decision, OE-SDN's pixel and image
    AUROC beside the best baseline's, false alarms on good test parts and recall, and the page to
    open; a line with the difference blur each category chose, where it chose one; then a warning
    line where a baseline beats the shipped model or the false alarms exceed what the threshold aims
    at (1 - `score.image_threshold_quantile`).
    """
    lines, warnings, blurs = [], [], []
    layout = ProjectLayout(project)
    for category, result in results.items():
        registration = result["registration"]
        decision = (registration["decisions"] or ["already registered, champion unchanged"])[0]
        decision = decision.split(" by ", 1)[0].split(" (", 1)[0].removeprefix(f"{registration['model_name']}: ")
        if not layout.evaluation(category).is_file():
            lines.append(
                f"{category}: {registration['model_name']} v{registration['version']} {decision} (no evaluation record found)"
            )
            continue
        record = json.loads(layout.evaluation(category).read_text())
        metrics, ours = record["metrics"], record["metrics"]["oe_sdn"]
        if "difference_sigma_choice" in record:
            choice = record["difference_sigma_choice"]
            joined = choice.get("pixel_map_sigmas") or []
            blurs.append(
                f"{category} σ {choice['chosen']:g}" + (f" (map: σ {' + '.join(f'{s:g}' for s in joined)})" if joined else "")
            )
        figures = []
        for key, label in (("pixel_auroc", "pixel"), ("image_auroc", "image")):
            best = max(
                (m for m in ("ae_l2", "ae_ssim") if metrics[m].get(key) is not None), key=lambda m: metrics[m][key], default=None
            )
            if ours.get(key) is None or best is None:
                figures.append(f"{label} —")
                continue
            figures.append(f"{label} {ours[key]:.3f} ({_METHOD_NAMES[best]} {metrics[best][key]:.3f})")
            if ours[key] < metrics[best][key] - BASELINE_MARGIN:
                warnings.append(f"warning: {category}: {_METHOD_NAMES[best]} beats the shipped OE-SDN on {label} AUROC")
        alarms, recall = ours.get("false_alarm_rate"), ours.get("recall")
        figures.append(f"false alarms {_percent(alarms)} | recall {_percent(recall)}")
        if alarms is not None and alarms > 1 - image_quantile + 0.04:
            warnings.append(
                f"warning: {category}: the threshold flags {_percent(alarms)} of good test parts, aiming at {_percent(1 - image_quantile)}"
            )
        lines.append(f"{category}: v{registration['version']} {decision} | " + " | ".join(figures))
    if blurs:
        lines.append("difference blur chosen on the label-free check: " + ", ".join(blurs))
    pages = layout.relative(layout.reports("<category>") / "index.html")
    return [*lines, *warnings, f"look at: {pages} (one page per category), {layout.relative(layout.summary_md)}"]


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"
