"""Reporting writes valid artifacts, rejects malformed input clearly, and summarises correctly."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components import reporting, summary_report
from components.reporting import (
    histogram_bins,
    save_anomaly_panel,
    save_roc_csv,
    save_roc_plot,
    save_score_histogram,
    select_panel_indices,
)
from components.summary_report import format_summary_table, write_summary


def _png_size(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # decodes fully: catches truncated files
        return image.size


def _no_temp_files(directory: Path) -> bool:
    return not any(p.name.endswith(".tmp") for p in directory.iterdir())


def _panel_inputs(n: int, channels: int = 3, h: int = 16, w: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, channels, h, w))
    masks = np.zeros((n, h, w), dtype=bool)
    masks[:, 4:8, 4:8] = True
    maps = rng.random((n, h, w))
    pred = maps > 0.7
    captions = [f"crack/{i:03d}  score {maps[i].max():.2f}  pred: defective" for i in range(n)]
    return images, masks, maps, pred, captions


# --------------------------------------------------------------------------------- ROC


def test_roc_plot_writes_png(tmp_path: Path) -> None:
    fpr = np.array([0.0, 0.1, 0.5, 1.0])
    tpr = np.array([0.0, 0.6, 0.9, 1.0])
    curves = {"oe_sdn": (fpr, tpr), "ae_l2": (fpr, tpr**2), "custom": (fpr, fpr)}
    out = tmp_path / "plots" / "roc.png"  # parent created on demand
    save_roc_plot(curves, {"oe_sdn": 0.9, "ae_l2": 0.7}, out, "toy ROC")
    width, height = _png_size(out)
    assert 0.7 < width / height < 1.4  # roughly square
    assert _no_temp_files(out.parent)


def test_roc_plot_rejects_mismatched_curve(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="oe_sdn"):
        save_roc_plot({"oe_sdn": (np.zeros(3), np.zeros(4))}, {}, tmp_path / "r.png", "t")


def test_roc_csv_columns_and_values(tmp_path: Path) -> None:
    fpr = np.array([0.0, 0.25, 1.0])
    tpr = np.array([0.0, 1 / 3, 1.0])
    out = tmp_path / "roc.csv"
    save_roc_csv(fpr, tpr, out)
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["fpr", "tpr"]
    assert [float(r["fpr"]) for r in rows] == fpr.tolist()
    assert [float(r["tpr"]) for r in rows] == tpr.tolist()  # exact round trip
    with pytest.raises(ValueError, match="differ in length"):
        save_roc_csv(fpr, tpr[:2], tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


# --------------------------------------------------------------------------- histogram


def test_histogram_writes_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    out = tmp_path / "hist.png"
    save_score_histogram(rng.normal(0.3, 0.05, 50), rng.normal(0.6, 0.1, 30), 0.45, out, "scores")
    width, height = _png_size(out)
    assert width > height  # landscape


def test_scores_spanning_decades_get_geometric_bins_and_a_log_axis(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    normal, anomalous = np.exp(rng.normal(0.0, 0.5, 40)), np.exp(rng.normal(5.0, 2.0, 60))  # about 1 against thousands
    edges, log_axis = histogram_bins(np.concatenate([normal, anomalous]))
    ratios = edges[1:] / edges[:-1]
    assert log_axis and np.allclose(ratios, ratios[0]) and edges[0] <= normal.min() and edges[-1] >= anomalous.max()
    assert np.histogram(normal, edges)[0].astype(bool).sum() >= 5  # good parts spread over several bars, not one
    edges, log_axis = histogram_bins(np.array([0.3, 0.5, 0.9]))  # a narrow span, or any score <= 0: linear
    assert not log_axis and np.allclose(np.diff(edges), np.diff(edges)[0])
    assert not histogram_bins(np.array([-1.0, 500.0]))[1]
    save_score_histogram(normal, anomalous, 12.0, tmp_path / "hist.png", "calibrated scores")
    _png_size(tmp_path / "hist.png")


@pytest.mark.parametrize(
    "normal, anomalous",
    [
        (np.array([0.1, 0.2, 0.3]), np.array([])),  # normal-only evaluation
        (np.array([0.5, 0.5, 0.5]), np.array([0.5])),  # all scores identical
        (np.array([0.1, np.nan, 0.3]), np.array([np.inf, 0.9])),  # diverged model
        (np.array([]), np.array([])),  # nothing at all
    ],
)
def test_histogram_edge_cases(tmp_path: Path, normal: np.ndarray, anomalous: np.ndarray) -> None:
    out = tmp_path / "hist.png"
    save_score_histogram(normal, anomalous, 0.25, out, "edge case")
    _png_size(out)


# ------------------------------------------------------------------------------- panel


def test_panel_writes_png_and_grows_with_rows(tmp_path: Path) -> None:
    small, large = tmp_path / "p2.png", tmp_path / "p5.png"
    save_anomaly_panel(*_panel_inputs(2), small, 0.7)
    save_anomaly_panel(*_panel_inputs(5), large, 0.7, ["hit", "miss", "false alarm", "correct pass", "hit"])
    w2, h2 = _png_size(small)
    w5, h5 = _png_size(large)
    assert w2 == w5  # columns fixed
    assert h5 > 2 * h2  # one row per image
    assert w2 > h2  # 4 columns, 2 rows: wider than tall
    assert _no_temp_files(tmp_path)


def test_panel_grayscale_without_ground_truth(tmp_path: Path) -> None:
    images, _, maps, pred, captions = _panel_inputs(2, channels=1, h=12, w=20)
    pred[0] = False  # nothing predicted
    pred[1] = True  # everything predicted
    out = tmp_path / "panel.png"
    save_anomaly_panel(images, None, maps, pred, captions, out, 0.25)
    width, height = _png_size(out)
    assert width > height


@pytest.mark.parametrize(
    "field, bad, message",
    [
        ("images", np.zeros((2, 2, 16, 16)), r"\(N, C, H, W\) with C = 1 or 3"),
        ("images", np.zeros((2, 16, 16)), r"\(N, C, H, W\)"),
        ("masks", np.zeros((2, 8, 8), dtype=bool), r"masks must have shape \(N, H, W\) = \(2, 16, 16\)"),
        ("maps", np.zeros((3, 16, 16)), r"maps must have shape"),
        ("pred_masks", np.zeros((2, 16, 15), dtype=bool), r"pred_masks must have shape"),
        ("captions", ["only one"], r"one caption per image: 2 images but 1 captions"),
        ("pixel_threshold", float("nan"), r"the pixel threshold must be finite"),
        ("outcomes", ["hit", "unsure"], r"one outcome per image out of"),
    ],
)
def test_panel_rejects_bad_input(tmp_path: Path, field: str, bad, message: str) -> None:
    images, masks, maps, pred, captions = _panel_inputs(2)
    kwargs = {
        "images": images,
        "masks": masks,
        "maps": maps,
        "pred_masks": pred,
        "captions": captions,
        "path": tmp_path / "p.png",
        "pixel_threshold": 0.7,
    }
    kwargs[field] = bad
    with pytest.raises(ValueError, match=message):
        save_anomaly_panel(**kwargs)
    assert not (tmp_path / "p.png").exists()


# ---------------------------------------------------------------------- panel selection


def test_select_panel_indices_covers_types_and_is_deterministic() -> None:
    defect_types = ["good"] * 5 + ["crack"] * 3 + ["hole"] * 4 + ["cut"]
    labels = np.array([t != "good" for t in defect_types], dtype=int)
    scores = np.array(
        [
            0.1,
            0.9,
            0.3,
            0.9,
            0.2,  # normals: 0.9 tie at 1 and 3 -> lowest index 1
            0.5,
            0.7,
            0.6,  # crack: median 0.6 -> index 7
            0.4,
            0.8,
            0.2,
            0.6,  # hole: sorted 0.2,0.4,0.6,0.8 -> lower median 0.4 -> 8
            0.3,
        ]
    )  # cut -> 12
    chosen = select_panel_indices(labels, scores, defect_types)
    assert chosen.tolist() == [1, 7, 12, 8]  # normal first, then types sorted: crack, cut, hole
    assert {defect_types[i] for i in chosen} == {"good", "crack", "hole", "cut"}
    assert chosen.dtype.kind == "i"
    shuffled_again = select_panel_indices(labels.copy(), scores.copy(), list(defect_types))
    assert np.array_equal(chosen, shuffled_again)


def test_select_panel_indices_caps_and_edge_cases() -> None:
    defect_types = ["good"] + [f"type_{k}" for k in range(9)]
    labels = np.array([0] + [1] * 9)
    scores = np.linspace(0, 1, 10)
    chosen = select_panel_indices(labels, scores, defect_types, max_rows=4)
    assert chosen.tolist() == [0, 1, 2, 3]
    # no anomalies: just the highest-scoring normal; NaN counts as lowest
    only_normal = select_panel_indices(np.zeros(3), np.array([np.nan, 0.2, 0.1]), ["good"] * 3)
    assert only_normal.tolist() == [1]
    assert select_panel_indices(np.zeros(0), np.zeros(0), []).tolist() == []
    with pytest.raises(ValueError, match="equally long"):
        select_panel_indices(np.zeros(3), np.zeros(3), ["good"] * 2)
    with pytest.raises(ValueError, match="max_rows"):
        select_panel_indices(np.zeros(1), np.zeros(1), ["good"], max_rows=0)


# ----------------------------------------------------------------------------- summary

PER_CATEGORY = {
    "carpet": {
        "oe_sdn": {"image_auroc": 0.9, "pixel_auroc": 0.96, "aupro": 0.8, "f1": 0.7},
        "ae_l2": {"image_auroc": 0.8, "pixel_auroc": 0.90, "aupro": 0.7, "f1": 0.75},
        "ae_ssim": {"image_auroc": 0.7, "pixel_auroc": 0.92, "aupro": 0.6, "f1": 0.6},
    },
    "digit_3": {  # no masks: pixel metrics skipped
        "oe_sdn": {"image_auroc": 0.7, "pixel_auroc": None, "aupro": None, "f1": 0.5},
        "ae_l2": {"image_auroc": 0.6, "pixel_auroc": None, "aupro": None, "f1": 0.55},
        "ae_ssim": {"image_auroc": 0.75, "pixel_auroc": None, "aupro": None, "f1": float("nan")},
    },
}


def test_summary_json_means_skip_none(tmp_path: Path) -> None:
    json_path, md_path = tmp_path / "summary.json", tmp_path / "summary.md"
    write_summary(PER_CATEGORY, json_path, md_path)
    summary = json.loads(json_path.read_text())  # strict JSON: NaN was turned into null
    assert set(summary) == {"categories", "mean"}
    assert summary["categories"]["digit_3"]["oe_sdn"]["pixel_auroc"] is None
    assert summary["categories"]["digit_3"]["ae_ssim"]["f1"] is None
    mean = summary["mean"]
    assert math.isclose(mean["oe_sdn"]["image_auroc"], 0.8)
    assert math.isclose(mean["oe_sdn"]["pixel_auroc"], 0.96)  # only carpet has a value
    assert math.isclose(mean["ae_ssim"]["f1"], 0.6)  # NaN skipped like None
    assert "NaN" not in json_path.read_text()
    assert md_path.read_text().startswith(format_summary_table(summary))


def test_summary_states_the_operating_point_per_category_and_warns_below_the_baseline(tmp_path: Path) -> None:
    per_category = {
        "brick": {
            "oe_sdn": {"image_auroc": 0.7, "false_alarm_rate": 0.05, "recall": 0.75, "recall.hole": 1.0, "recall.stain": 0.5},
            "ae_l2": {"image_auroc": 0.9, "false_alarm_rate": 0.0, "recall": 0.5},
        }
    }
    write_summary(per_category, tmp_path / "s.json", tmp_path / "s.md")
    text = (tmp_path / "s.md").read_text()
    assert "brick: flags 5 % of good parts, catches 75 % of defective ones (hole 100 %, stain 50 %)" in text
    assert "warning: image AUROC 0.700 below the AE residual's 0.900" in text
    table = text.split("\n\n")[0]
    assert "false alarms" in table and "**0.000**" in table, "fewer false alarms is the better cell"


def test_summary_links_each_category_page_relatively(tmp_path: Path) -> None:
    write_summary(PER_CATEGORY, tmp_path / "s.json", tmp_path / "s.md")
    text = (tmp_path / "s.md").read_text()
    assert "[carpet](carpet/index.html)" in text and "[digit_3](digit_3/index.html)" in text


def test_heat_maps_share_one_scale_with_the_pixel_threshold_at_mid_scale() -> None:
    lut = reporting.heat_lut()
    colours = reporting.heat_rgb(np.array([0.0, 0.1, 0.2, 5.0, np.nan]), 0.1, lut)
    assert colours[0].tolist() == colours[4].tolist() == lut[0].tolist()  # NaN draws as 0
    assert colours[1].tolist() == lut[127].tolist() and colours[2].tolist() == colours[3].tolist() == lut[255].tolist()


def test_region_outline_and_outcome_marks() -> None:
    mask = np.zeros((5, 5), dtype=bool)
    mask[1:4, 1:4] = True
    outline = reporting.region_outline(mask)
    assert outline.sum() == 8 and not outline[2, 2]
    marks = [reporting.outcome(label, flagged) for label, flagged in ((1, True), (1, False), (0, True), (0, False))]
    assert marks == ["hit", "miss", "false alarm", "correct pass"]
    assert list(reporting.OUTCOME_COLORS)[:2] == ["miss", "false alarm"], "errors first"


def test_summary_mean_is_none_when_no_category_has_a_value() -> None:
    summary = summary_report.summarize({"a": {"oe_sdn": {"aupro": None}}, "b": {"oe_sdn": {"aupro": None}}})
    assert summary["mean"] == {"oe_sdn": {"aupro": None}}


def test_markdown_table_rows_bold_and_missing() -> None:
    table = format_summary_table(summary_report.summarize(PER_CATEGORY))
    lines = table.strip().splitlines()
    assert len(lines) == 2 + len(PER_CATEGORY) + 1  # header, separator, categories, mean
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:4] == ["category", "image AUROC OE-SDN", "AE-L2", "AE-SSIM"]
    assert len(header) == 1 + 4 * 3
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert list(rows) == ["carpet", "digit_3", "mean"]
    # image AUROC group, then pixel AUROC, AUPRO, F1
    assert rows["carpet"][:3] == ["**0.900**", "0.800", "0.700"]
    assert rows["carpet"][3:6] == ["**0.960**", "0.900", "0.920"]
    assert rows["digit_3"][:3] == ["0.700", "0.600", "**0.750**"]
    assert rows["digit_3"][3:9] == ["—"] * 6
    assert rows["digit_3"][9:] == ["0.500", "**0.550**", "—"]
    assert rows["mean"][:3] == ["**0.800**", "0.700", "0.725"]
    assert rows["mean"][3:6] == ["**0.960**", "0.900", "0.920"]
    assert rows["mean"][9:] == ["0.600", "**0.650**", "0.600"]


def test_markdown_ties_are_all_bold_and_a_lone_value_is_not() -> None:
    summary = summary_report.summarize(
        {
            "x": {"oe_sdn": {"f1": 0.5001}, "ae_l2": {"f1": 0.5004}, "ae_ssim": {"f1": 0.1}},
            "y": {"oe_sdn": {"f1": 0.3}, "ae_l2": {"f1": None}, "ae_ssim": {"f1": None}},
        }
    )
    lines = format_summary_table(summary).splitlines()
    x_cells = [c.strip() for c in lines[2].strip("|").split("|")]
    y_cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert x_cells[1:] == ["**0.500**", "**0.500**", "0.100"]  # equal at display precision
    assert y_cells[1:] == ["0.300", "—", "—"]  # nothing to compare against


def test_import_does_not_load_matplotlib() -> None:
    """The CLI imports this module; importing matplotlib eagerly would slow every command."""
    import subprocess
    import sys

    code = "import sys, components.reporting; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=True
    )
    assert result.stdout.strip() == "False"


def test_the_end_of_oesdn_run_states_the_operating_point_and_warns(tmp_path: Path) -> None:
    from pipelines.run_report import ending_lines

    metrics = {
        "oe_sdn": {"pixel_auroc": 0.979, "image_auroc": 0.782, "false_alarm_rate": 0.44, "recall": 0.79},
        "ae_l2": {"pixel_auroc": 0.976, "image_auroc": 0.743, "false_alarm_rate": 0.2, "recall": 0.5},
        "ae_ssim": {"pixel_auroc": 0.976, "image_auroc": 0.888, "false_alarm_rate": 0.0, "recall": 0.6},
    }
    (tmp_path / "evaluations").mkdir()
    choice = {"chosen": 2.0, "candidates": {"0.0": {"synthetic_pixel_auroc": 0.65}, "2.0": {"synthetic_pixel_auroc": 0.74}}}
    (tmp_path / "evaluations" / "brick.json").write_text(json.dumps({"metrics": metrics, "difference_sigma_choice": choice}))
    sharp = {**choice, "chosen": 0.0, "pixel_map_sigmas": [0.0, 2.0]}  # the sharp map won: the multi-scale map ships
    (tmp_path / "evaluations" / "grass.json").write_text(json.dumps({"metrics": metrics, "difference_sigma_choice": sharp}))
    registration = {
        "model_name": "oesdn-brick",
        "version": "3",
        "decisions": ["oesdn-brick: first_champion (champion none -> v3) by oesdn promotion policy: no champion yet"],
    }
    lines = ending_lines(tmp_path, {"brick": {"registration": registration}, "grass": {"registration": registration}}, 0.99)
    assert lines[0] == (
        "brick: v3 first_champion | pixel 0.979 (AE-L2 0.976) | image 0.782 (AE-SSIM 0.888) | false alarms 44 % | recall 79 %"
    )
    assert lines[2] == "difference blur chosen on the label-free check: brick σ 2, grass σ 0 (map: σ 0 + 2)"
    assert "warning: brick: AE-SSIM beats the shipped OE-SDN on image AUROC" in lines
    assert "warning: brick: the threshold flags 44 % of good test parts, aiming at 1 %" in lines
    assert (
        lines[-1] == "look at: reports/<category>/index.html (one page per category), reports/summary.md"
        and max(map(len, lines)) <= 120
    )
