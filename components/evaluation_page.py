"""One category's evaluation as a single self-contained HTML page, for a quality engineer.

It answers first what the line asks ("how many good parts does the shipped threshold reject, how
many defects does it let through?"), then how OE-SDN compares with its baselines, then every test
image with its heat map and what the verdict did. The page needs no network when viewed: the CSS is
inline and every picture is a base64 data URI, so it opens from a DVC checkout, an MLflow artifact
download or an e-mail attachment alike. Every name from the data is escaped.

Pure: `render_page` takes the evaluation results and returns the HTML string; the stage writes it.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from components.assembly import image_threshold_rule
from components.category_evaluation import CategoryEvaluation
from components.config import ScoreConfig
from components.data.prepared import PreparedData
from components.reporting import (
    BASELINE_MARGIN,
    HEATMAP_COLORMAP,
    LOWER_IS_BETTER,
    METHOD_SHORT_LABELS,
    METRIC_LABELS,
    OUTCOME_COLORS,
    PREDICTED_OUTLINE,
    heat_lut,
    heat_rgb,
    outcome,
    region_outline,
    verdict,
)

FIGURES: dict[str, str] = {"Image scores of OE-SDN": "score_histogram.png", "Image-level ROC": "roc.png"}
"""The report PNGs (components.reporting) the page embeds, by title, as files in reports/<category>/."""
THUMBNAIL_PX = 96
"""Thumbnail width: about 100 test images keep the page at a few MB."""
PERCENT_METRICS = frozenset({"false_alarm_rate", "recall"})

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.big{font-size:1.25em} .warn{background:#fff3e0;border-left:4px solid #e65100;padding:.4em .8em;margin:.3em 0}
table{border-collapse:collapse;margin:.5em 0} th,td{padding:.25em .7em;border-bottom:1px solid #e4e4e4;text-align:right}
th:first-child,td:first-child{text-align:left} .best{font-weight:bold}
.figs img{max-width:49%;height:auto;vertical-align:top}
.grid{display:flex;flex-wrap:wrap;gap:8px} .card{margin:0;padding:4px;border:3px solid;border-radius:4px;width:200px;font-size:12px}
.card img{width:96px} .name{word-break:break-all} .mark{font-weight:bold;text-transform:uppercase}
.legend{display:inline-block;width:240px;height:12px;vertical-align:middle;border:1px solid #999}
"""


@dataclass(frozen=True)
class _Card:
    """One test image as the page shows it."""

    index: int
    name: str
    defect_type: str
    score: float
    flagged: bool
    outcome: str


def render_page(
    category: str, evaluation: CategoryEvaluation, data: PreparedData, score: ScoreConfig, figures: Mapping[str, bytes]
) -> str:
    """The whole page; `figures` maps a title to PNG bytes (see FIGURES)."""
    result = evaluation.results["oe_sdn"]
    cards = _cards(data, evaluation.test["oe_sdn"].scores, result.image_threshold)
    good, defective = int((data.test_labels == 0).sum()), int((data.test_labels == 1).sum())
    body = [
        f"<h1>OE-SDN evaluation: {_e(category)}</h1>",
        f"<p>{good + defective} test images ({good} good, {defective} defective), {len(data.val)} good validation images.</p>",
        _operating_point(evaluation, data, score, cards),
        _comparison(evaluation.metrics),
        "<h2>Scores and ROC</h2><div class=figs>"
        + "".join(f'<img src="{_data_uri(png)}" alt="{_e(title)}" title="{_e(title)}">' for title, png in figures.items())
        + "</div>",
        _gallery(data, evaluation, cards),
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>OE-SDN evaluation: {_e(category)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _figure(key: str, text: str) -> str:
    """A displayed figure, tagged with its metrics.json key so a reader (or a test) can find it."""
    return f'<span data-figure="{_e(key)}">{_e(text)}</span>'


def _cards(data: PreparedData, scores: np.ndarray, threshold: float) -> list[_Card]:
    """Every test image, misses and false alarms first (then hits, then correct passes), highest score first."""
    order = list(OUTCOME_COLORS)
    cards = [
        _Card(
            i,
            str(data.test_names[i]),
            str(data.test_defect_types[i]),
            float(scores[i]),
            bool(scores[i] > threshold),
            outcome(int(data.test_labels[i]), bool(scores[i] > threshold)),
        )
        for i in range(len(scores))
    ]
    return sorted(cards, key=lambda card: (order.index(card.outcome), -card.score))


def _operating_point(evaluation: CategoryEvaluation, data: PreparedData, score: ScoreConfig, cards: Sequence[_Card]) -> str:
    result = evaluation.results["oe_sdn"]
    metrics = result.metrics
    good = [c for c in cards if c.outcome in ("false alarm", "correct pass")]
    bad = [c for c in cards if c.outcome in ("hit", "miss")]
    promised = 1.0 - score.image_threshold_quantile
    alarms = _figure("oe_sdn.false_alarm_rate", percent(metrics["false_alarm_rate"]))
    recall = _figure("oe_sdn.recall", percent(metrics["recall"]))
    rule = _e(image_threshold_rule(score).describe(len(data.val)))
    counts = (
        f"<p class=big>False alarms on good parts: <b>{alarms}</b> ({sum(c.flagged for c in good)} of {len(good)} good images flagged)"
        f"<br>Defects caught (recall): <b>{recall}</b> ({sum(c.flagged for c in bad)} of {len(bad)} defective images flagged)</p>"
    )
    thresholds = (
        f"<p>Image threshold {_figure('oe_sdn.image_threshold', f'{result.image_threshold:.4g}')}: {rule}; "
        f"it aims at about {percent(promised)} false alarms on good parts.<br>Pixel threshold {result.pixel_threshold:.4g} "
        f"({score.pixel_threshold_quantile:g} quantile of the validation map pixels) outlines predicted regions; "
        "it is a separate cut, so a passed image can still show a small outline.</p>"
    )
    warnings = "".join(f"<p class=warn>{_e(text)}</p>" for text in _warnings(evaluation, promised))
    return (
        "<h2>Operating point: the shipped threshold on the test images</h2>"
        + counts
        + _recall_table(metrics, bad)
        + thresholds
        + warnings
    )


def _recall_table(metrics: Mapping[str, float | None], bad: Sequence[_Card]) -> str:
    rows = []
    for key in sorted(k for k in metrics if k.startswith("recall.")):
        kind = key.split(".", 1)[1]
        members = [c for c in bad if c.defect_type == kind]
        rows.append(
            f"<tr><td>{_e(kind)}</td><td>{len(members)}</td><td>{sum(c.flagged for c in members)}</td>"
            f"<td>{_figure(f'oe_sdn.{key}', percent(metrics[key]))}</td></tr>"
        )
    if not rows:
        return ""
    return "<table><tr><th>defect type</th><th>images</th><th>caught</th><th>recall</th></tr>" + "".join(rows) + "</table>"


def _warnings(evaluation: CategoryEvaluation, promised: float) -> list[str]:
    """The evaluation's own warnings, plus a baseline that beats OE-SDN and false alarms above the aim."""
    metrics = evaluation.metrics
    ours = metrics["oe_sdn"].get("image_auroc")
    warnings = list(evaluation.warnings)
    for name, values in metrics.items():
        theirs = values.get("image_auroc")
        if name != "oe_sdn" and ours is not None and theirs is not None and theirs > ours + BASELINE_MARGIN:
            warnings.append(
                f"{METHOD_SHORT_LABELS.get(name, name)} beats the shipped OE-SDN on image AUROC: {theirs:.3f} vs {ours:.3f}"
            )
    alarms = metrics["oe_sdn"].get("false_alarm_rate")
    if alarms is not None and alarms > promised:
        warnings.append(
            f"False alarms on the good test images ({percent(alarms)}) exceed the {percent(promised)} the threshold aims at"
        )
    return warnings


def _comparison(metrics: Mapping[str, Mapping[str, float | None]]) -> str:
    header = "".join(f"<th>{_e(label)}</th>" for label in METRIC_LABELS.values())
    rows = []
    for method, values in metrics.items():
        cells = "".join(_metric_cell(method, key, values.get(key), metrics) for key in METRIC_LABELS)
        rows.append(f"<tr><td>{_e(METHOD_SHORT_LABELS.get(method, method))}</td>{cells}</tr>")
    return "<h2>OE-SDN against its baselines</h2><table><tr><th>method</th>" + header + "</tr>" + "".join(rows) + "</table>"


def _metric_cell(method: str, key: str, value: float | None, metrics: Mapping[str, Mapping[str, float | None]]) -> str:
    """One table cell; the best value of the column (at display precision) in bold."""
    shown = percent(value) if key in PERCENT_METRICS else number(value)
    present = [v for v in (m.get(key) for m in metrics.values()) if v is not None]
    best = (min(present) if key in LOWER_IS_BETTER else max(present)) if len(present) >= 2 else None
    is_best = value is not None and best is not None and round(value, 3) == round(best, 3)
    return f"<td{' class=best' if is_best else ''}>{_figure(f'{method}.{key}', shown)}</td>"


def _gallery(data: PreparedData, evaluation: CategoryEvaluation, cards: Sequence[_Card]) -> str:
    result, maps = evaluation.results["oe_sdn"], evaluation.test["oe_sdn"].maps
    lut = heat_lut()
    gradient = ",".join(f"rgb({r},{g},{b})" for r, g, b in lut[::32].tolist() + [lut[-1].tolist()])
    legend = (
        f"<p>Each image with its OE-SDN anomaly map ({HEATMAP_COLORMAP}: 0 <span class=legend "
        f'style="background:linear-gradient(to right,{gradient})"></span> twice the pixel threshold, '
        f"the pixel threshold at mid-scale) and the predicted region outlined in "
        f'<span style="color:{PREDICTED_OUTLINE};background:#333;padding:0 .3em">cyan</span>. '
        "Misses and false alarms first.</p>"
    )
    items = [_card_html(card, data.test[card.index], maps[card.index], result.pixel_threshold, lut) for card in cards]
    return "<h2>Every test image</h2>" + legend + "<div class=grid id=images>" + "".join(items) + "</div>"


def _card_html(card: _Card, image: np.ndarray, anomaly_map: np.ndarray, pixel_threshold: float, lut: np.ndarray) -> str:
    color = OUTCOME_COLORS[card.outcome]
    truth = "good" if card.outcome in ("false alarm", "correct pass") else f"defective ({card.defect_type})"
    return (
        f'<figure class=card data-outcome="{_e(card.outcome)}" style="border-color:{color}">'
        f'<img src="{_data_uri(_image_png(image))}" alt="{_e(card.name)}">'
        f'<img src="{_data_uri(_map_png(anomaly_map, pixel_threshold, lut))}" alt="anomaly map of {_e(card.name)}">'
        f'<figcaption><span class=mark style="color:{color}">{_e(card.outcome)}</span><br>'
        f"<span class=name>{_e(card.name)}</span><br>score {card.score:.4g}<br>"
        f"predicted: {verdict(card.flagged)}<br>truth: {_e(truth)}</figcaption></figure>"
    )


def _image_png(image_chw: np.ndarray) -> bytes:
    """uint8 (C, H, W) as a THUMBNAIL_PX-wide PNG."""
    pixels = image_chw[0] if image_chw.shape[0] == 1 else np.transpose(image_chw, (1, 2, 0))
    return _png(np.ascontiguousarray(pixels))


def _map_png(anomaly_map: np.ndarray, pixel_threshold: float, lut: np.ndarray) -> bytes:
    """The map on the shared heat scale with the predicted region outlined, as a THUMBNAIL_PX-wide PNG."""
    colours = heat_rgb(anomaly_map, pixel_threshold, lut)
    from PIL import ImageColor

    colours[region_outline(anomaly_map > pixel_threshold)] = ImageColor.getrgb(PREDICTED_OUTLINE)[:3]
    return _png(colours)


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    picture = Image.fromarray(pixels)
    height = max(1, round(picture.height * THUMBNAIL_PX / picture.width))
    resample = Image.Resampling.NEAREST if picture.width < THUMBNAIL_PX else Image.Resampling.LANCZOS
    buffer = io.BytesIO()
    picture.resize((THUMBNAIL_PX, height), resample).save(
        buffer, format="PNG", compress_level=6
    )  # optimize=True took 5 s a category
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
