"""Tables of the one-class benchmark: a long CSV of every run, and markdown with the paper's numbers beside ours."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.benchmarks.oneclass import ABLATION_PREFIX, HEADLINE_METHODS
from components.io import atomic_path, write_text_atomic

METHOD_LABELS = {"ae_l2": "AE residual (L2)", "ae_ssim": "AE residual (SSIM)", "sdn": "SDN (λ=0)", "oe_sdn": "OE-SDN"}

PAPER_MNIST_PER_CLASS = {
    "ae_l2": (0.991, 0.998, 0.965, 0.950, 0.923, 0.958, 0.992, 0.946, 0.912, 0.970),
    "oe_sdn": (0.984, 0.998, 0.983, 0.974, 0.977, 0.973, 0.995, 0.971, 0.921, 0.972),
}
"""Chung et al. 2020, Table 1, MNIST per class (full MNIST)."""
PAPER_MNIST_MEAN = {"ae_l2": 0.961, "sdn": 0.958, "oe_sdn": 0.975}
PAPER_MNIST_ABLATION = {
    "rotation": 0.975,
    "vflip": 0.968,
    "hflip": 0.968,
    "gaussian_noise": 0.956,
    "gaussian_blur": 0.954,
    "none": 0.958,
}
"""Chung et al. 2020, Table 3, MNIST mean AUROC per auxiliary transform."""
FASHION_REFERENCES = {"GEOM": 0.935, "ARNet": 0.939}
"""Published Fashion-MNIST one-class mean AUROC of two other methods (the paper has no Fashion-MNIST table)."""


def records_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per (dataset, class, seed, method): the long format of the CSV."""
    rows = [
        {
            "dataset": r["dataset"],
            "normal_class": r["normal_class"],
            "class_name": r["class_name"],
            "seed": r["seed"],
            "method": method,
            "auroc": auroc,
            "train_images": r["train_images"],
            "test_images": r["test_images"],
            "run_seconds": r["seconds"]["total"],
        }
        for r in records
        for method, auroc in r["auroc"].items()
    ]
    if not rows:
        raise ValueError("no benchmark runs to report")
    return pd.DataFrame(rows).sort_values(["dataset", "method", "seed", "normal_class"], ignore_index=True)


def _fmt(mean: float, spread: float | None) -> str:
    return f"{mean:.3f}" if spread is None or np.isnan(spread) else f"{mean:.3f} ± {spread:.3f}"


def summary_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per class: mean and std over seeds; mean row: mean over classes, std over seeds of the per-seed class means."""
    headline = frame[frame["method"].isin(HEADLINE_METHODS)]
    per_class = headline.groupby(["normal_class", "class_name", "method"])["auroc"].agg(["mean", "std", "count"]).reset_index()
    per_seed_mean = headline.groupby(["seed", "method"])["auroc"].agg(["mean", "count"]).reset_index()
    ablation = frame[frame["method"].str.startswith(ABLATION_PREFIX)]
    ablation_mean = ablation.groupby("method")["auroc"].agg(["mean", "std", "count"]).reset_index()
    return {"per_class": per_class, "per_seed_mean": per_seed_mean, "ablation": ablation_mean}


def markdown_report(frame: pd.DataFrame, description: str) -> str:
    """The headline table (classes x methods, paper columns where it has numbers) and the ablation table."""
    dataset = str(frame["dataset"].iloc[0])
    tables = summary_tables(frame)
    per_class, per_seed = tables["per_class"], tables["per_seed_mean"]
    methods = [m for m in HEADLINE_METHODS if m in set(per_class["method"])]
    seeds = sorted(frame["seed"].unique())
    is_mnist = dataset.startswith("mnist")
    header = ["class", *(METHOD_LABELS[m] for m in methods)]
    if is_mnist:
        header += ["paper AE", "paper OE-SDN"]
    lines = [
        f"### One-class image AUROC: {dataset}",
        "",
        description + ".",
        "",
        (
            f"Seeds {', '.join(str(s) for s in seeds)}: each cell is the mean ± standard deviation over seeds; "
            "the mean row's spread is the standard deviation over seeds of the 10-class mean. "
            "All methods of a row come from the same runs (one AE per class and seed)."
        ),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for normal in sorted(per_class["normal_class"].unique()):
        rows = per_class[per_class["normal_class"] == normal].set_index("method")
        cells = [f"{normal} {rows['class_name'].iloc[0]}"]
        cells += [_fmt(rows.loc[m, "mean"], rows.loc[m, "std"]) if m in rows.index else "—" for m in methods]
        if is_mnist:
            cells += [f"{PAPER_MNIST_PER_CLASS[m][normal]:.3f}" for m in ("ae_l2", "oe_sdn")]
        lines.append("| " + " | ".join(cells) + " |")
    mean_cells = ["**mean**"]
    for method in methods:
        values = per_seed[per_seed["method"] == method]
        complete = values[values["count"] == values["count"].max()]
        spread = float(complete["mean"].std()) if len(complete) > 1 else None
        mean_cells.append("**" + _fmt(float(complete["mean"].mean()), spread) + "**")
    if is_mnist:
        mean_cells += [f"{PAPER_MNIST_MEAN['ae_l2']:.3f}", f"{PAPER_MNIST_MEAN['oe_sdn']:.3f}"]
    lines.append("| " + " | ".join(mean_cells) + " |")
    if is_mnist:
        lines += ["", f"Paper (full MNIST) mean SDN (λ=0): {PAPER_MNIST_MEAN['sdn']:.3f}."]
    else:
        refs = ", ".join(f"{name} {value:.3f}" for name, value in FASHION_REFERENCES.items())
        lines += ["", f"Published Fashion-MNIST means for reference: {refs} (the OE-SDN paper has no Fashion-MNIST table)."]

    ablation = tables["ablation"]
    if len(ablation):
        ablation_seeds = sorted(frame[frame["method"].str.startswith(ABLATION_PREFIX)]["seed"].unique())
        lines += [
            "",
            f"#### Auxiliary transform ablation (the paper's Table 3), mean AUROC over classes, seed(s) {', '.join(map(str, ablation_seeds))}",
            "",
            "| auxiliary transform | mean AUROC | classes × seeds |" + (" paper (MNIST) |" if is_mnist else ""),
            "|---|---|---|" + ("---|" if is_mnist else ""),
        ]
        for _, row in ablation.sort_values("mean", ascending=False).iterrows():
            name = str(row["method"])[len(ABLATION_PREFIX) :]
            paper = PAPER_MNIST_ABLATION.get(name)
            cells = [name, f"{row['mean']:.3f}", str(int(row["count"]))]
            if is_mnist:
                cells.append("—" if paper is None else f"{paper:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "`rotation` is OE-SDN and `none` is SDN (λ=0) of the same runs, not retrained."]
    return "\n".join(lines) + "\n"


def write_reports(records: Sequence[dict[str, Any]], description: str, out_dir: Path) -> tuple[Path, Path]:
    """Write `oneclass_<dataset>.csv` and `.md` atomically; returns their paths."""
    frame = records_frame(records)
    dataset = str(frame["dataset"].iloc[0])
    csv_path, md_path = out_dir / f"oneclass_{dataset}.csv", out_dir / f"oneclass_{dataset}.md"
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")
    write_text_atomic(md_path, markdown_report(frame, description))
    return csv_path, md_path
