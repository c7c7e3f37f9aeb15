"""The summary over categories: `reports/summary.json` and `summary.md` (the comparison table, the
operating point in words, links to each category's evaluation page).

Text and numbers only, apart from the figures in `components.reporting`, so the summarize stage and
the console report never load matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from components.io import write_json_atomic, write_text_atomic
from components.reporting import BASELINE_MARGIN, LOWER_IS_BETTER, METHOD_LABELS, METHOD_SHORT_LABELS, METRIC_LABELS, MISSING


def _clean_value(value: Any) -> float | None:
    """None and non-finite numbers become None: strict JSON has no NaN, and both mean 'missing'."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _ordered(keys: set[str], preferred: Sequence[str]) -> list[str]:
    return [k for k in preferred if k in keys] + sorted(keys - set(preferred))


def _methods_and_metrics(
    categories: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> tuple[list[str], list[str]]:
    methods: set[str] = set()
    metrics: set[str] = set()
    for per_method in categories.values():
        methods.update(per_method)
        for values in per_method.values():
            metrics.update(values)
    return _ordered(methods, list(METHOD_LABELS)), _ordered(metrics, list(METRIC_LABELS))


def summarize(
    per_category: Mapping[str, Mapping[str, Mapping[str, float | None]]],
) -> dict[str, Any]:
    """Build the summary.json payload: cleaned per-category values plus per-method means.

    A mean uses only the categories that have a value (e.g. pixel metrics exist only where the
    dataset has masks); it is None if no category has one.
    """
    categories = {
        category: {method: {metric: _clean_value(v) for metric, v in values.items()} for method, values in per_method.items()}
        for category, per_method in per_category.items()
    }
    methods, metrics = _methods_and_metrics(categories)
    mean: dict[str, dict[str, float | None]] = {}
    for method in methods:
        mean[method] = {}
        for metric in metrics:
            values = [
                per_method[method][metric]
                for per_method in categories.values()
                if per_method.get(method, {}).get(metric) is not None
            ]
            mean[method][metric] = float(np.mean(values)) if values else None
    return {"categories": categories, "mean": mean}


def _format_group(values: Sequence[float | None], lower_is_better: bool = False) -> list[str]:
    """3-decimal cells; the best (at display precision) in bold when there is a contest."""
    rounded = [None if v is None else round(v, 3) for v in values]
    present = [v for v in rounded if v is not None]
    best = (min(present) if lower_is_better else max(present)) if len(present) >= 2 else None
    cells = []
    for v in rounded:
        if v is None:
            cells.append(MISSING)
        elif best is not None and v == best:
            cells.append(f"**{v:.3f}**")
        else:
            cells.append(f"{v:.3f}")
    return cells


def format_summary_table(summary: Mapping[str, Any]) -> str:
    """Render a summary (as written to summary.json) as a Markdown table, one row per category.

    Columns are grouped by metric with the methods side by side (OE-SDN first), so each group
    reads as a direct comparison; the best value of each group is bold, missing values show "—",
    and a final "mean" row averages over the categories that have a value. Higher is better for
    every metric. Cells are padded so the table also reads well in a terminal.
    """
    categories: Mapping[str, Mapping[str, Mapping[str, Any]]] = summary["categories"]
    mean = summary.get("mean")
    if mean is None:
        mean = summarize(categories)["mean"]
    methods, metrics = _methods_and_metrics(categories)
    metrics = [metric for metric in metrics if metric in METRIC_LABELS]

    header = ["category"]
    for metric in metrics:
        for position, method in enumerate(methods):
            short = METHOD_SHORT_LABELS.get(method, method)
            metric_label = METRIC_LABELS.get(metric, metric)
            header.append(f"{metric_label} {short}" if position == 0 else short)

    def row_cells(name: str, per_method: Mapping[str, Mapping[str, Any]]) -> list[str]:
        cells = [name]
        for metric in metrics:
            group = [_clean_value(per_method.get(method, {}).get(metric)) for method in methods]
            cells.extend(_format_group(group, metric in LOWER_IS_BETTER))
        return cells

    rows = [row_cells(str(name), per_method) for name, per_method in categories.items()]
    rows.append(row_cells("mean", mean))

    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [cells[0].ljust(widths[0])] + [c.rjust(wd) for c, wd in zip(cells[1:], widths[1:], strict=True)]
        return "| " + " | ".join(padded) + " |"

    separator = "|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (wd + 1) + ":" for wd in widths[1:]]) + "|"
    return "\n".join([line(header), separator, *(line(r) for r in rows)]) + "\n"


def write_summary(
    per_category: Mapping[str, Mapping[str, Mapping[str, float | None]]],
    json_path: Path,
    md_path: Path,
) -> None:
    """Write summary.json (machine-readable, for DVC metrics) and summary.md (for people).

    `per_category` is {category: {method: {metric: value or None}}}; None marks a metric that was
    not computed (e.g. pixel metrics on a dataset without masks).
    """
    summary = summarize(per_category)
    write_json_atomic(json_path, summary)
    write_text_atomic(
        md_path, format_summary_table(summary) + "\n" + operating_point_markdown(per_category) + "\n" + page_links(per_category)
    )


PAGE_NAME = "index.html"
"""Each category's evaluation page, `reports/<category>/index.html` (see components.evaluation_page)."""


def page_links(categories: Iterable[str]) -> str:
    """Markdown links from `reports/summary.md` to each category's evaluation page, relative so they
    work wherever the reports folder is opened (a checkout, a DVC cache restore, an MLflow download)."""
    return "Evaluation pages: " + " · ".join(f"[{c}]({c}/{PAGE_NAME})" for c in categories) + "\n"


def operating_point_markdown(per_category: Mapping[str, Mapping[str, Mapping[str, float | None]]]) -> str:
    """What the shipped threshold does on each category's test set, in words a line engineer reads.

    The threshold is set on validation normals only; these are the test images' outcomes at it.
    """
    lines = ["OE-SDN at the shipped image threshold (set on good validation images only), on the test images:", ""]
    for category, per_method in per_category.items():
        values = per_method.get("oe_sdn", {})
        alarms, recall = _clean_value(values.get("false_alarm_rate")), _clean_value(values.get("recall"))
        by_type = {k.split(".", 1)[1]: _clean_value(v) for k, v in values.items() if k.startswith("recall.")}
        parts = [f"- {category}: flags {_percent(alarms)} of good parts, catches {_percent(recall)} of defective ones"]
        if by_type:
            parts.append(" (" + ", ".join(f"{kind} {_percent(v)}" for kind, v in sorted(by_type.items())) + ")")
        baseline = _clean_value(per_method.get("ae_l2", {}).get("image_auroc"))
        ours = _clean_value(values.get("image_auroc"))
        if baseline is not None and ours is not None and ours < baseline - BASELINE_MARGIN:
            parts.append(f"; warning: image AUROC {ours:.3f} below the AE residual's {baseline:.3f}")
        lines.append("".join(parts))
    return "\n".join(lines) + "\n"


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.0f} %"
