"""The development suite's table: mean and spread over seeds, per category and scoring method."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from components.reporting import BASELINE_MARGIN

FIGURES = ("pixel_auroc", "image_auroc", "false_alarm_rate", "recall", "synthetic_pixel_auroc")


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (category, seed, method) with every figure the metrics hold."""
    rows = []
    for record in records:
        for method, values in record["metrics"].items():
            flat = {k: v for k, v in values.items() if not isinstance(v, dict)}
            rows.append({"category": record["category"], "seed": record["seed"], "method": method, **flat})
    return pd.DataFrame(rows)


def summary_markdown(records: list[dict[str, Any]], title: str) -> str:
    """Per category and method: mean ± std over seeds of each figure, then the mean over categories."""
    frame = records_frame(records)
    figures = [f for f in FIGURES if f in frame.columns]
    lines = [f"## {title}", "", f"{frame['seed'].nunique()} seed(s): {sorted(frame['seed'].unique().tolist())}", ""]
    lines.append("| category | method | " + " | ".join(figures) + " |")
    lines.append("|---|---|" + "---|" * len(figures))
    for (category, method), group in frame.groupby(["category", "method"], sort=True):
        cells = []
        for figure in figures:
            values = group[figure].dropna().to_numpy(dtype=float)
            cells.append("—" if not len(values) else f"{values.mean():.3f} ± {values.std():.3f}")
        lines.append(f"| {category} | {method} | " + " | ".join(cells) + " |")
    means = frame.groupby(["method", "seed"])[figures].mean().groupby("method")
    for method, group in means:
        cells = [f"{group[f].mean():.3f} ± {group[f].std(ddof=0):.3f}" if group[f].notna().any() else "—" for f in figures]
        lines.append(f"| **mean** | {method} | " + " | ".join(cells) + " |")
    wins = _wins(frame)
    if wins:
        lines += ["", wins]
    return "\n".join(lines) + "\n"


def _wins(frame: pd.DataFrame) -> str:
    """How many categories OE-SDN's seed-mean pixel/image AUROC is within 0.005 of the best baseline."""
    if "oe_sdn" not in set(frame["method"]):
        return ""
    means = frame.groupby(["category", "method"])[["pixel_auroc", "image_auroc"]].mean()
    parts = []
    for figure in ("pixel_auroc", "image_auroc"):
        table = means[figure].unstack("method")
        baselines = table.drop(columns=["oe_sdn"]).max(axis=1)
        held = int(np.sum(table["oe_sdn"] >= baselines - BASELINE_MARGIN))
        parts.append(
            f"{figure}: OE-SDN at least the best baseline (within {BASELINE_MARGIN}) on {held} of {len(table)} categories"
        )
    return "; ".join(parts)
