"""The handful of figures `dvc metrics show` prints: OE-SDN at its shipped threshold against the best baseline.

`metrics.json` holds every method's ~17 figures; DVC flattens all of them into one table some
thousands of characters wide. The headline keeps a few short flat keys instead, so the table fits a
120-column terminal, and the summary's mean row uses the same keys so its columns line up under the
categories' rows. DVC sorts the columns by key, hence names that sort into a readable order:
false_alarms, image_auroc, image_base, pixel_auroc, pixel_base, recall.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

HEADLINE_NAME = "headline.json"
"""Each category's headline, `reports/<category>/headline.json`, written by evaluate."""
MEAN_HEADLINE_NAME = "headline_mean.json"
"""The mean over categories of their headlines, `reports/headline_mean.json`, written by summarize."""

SHIPPED_METHOD = "oe_sdn"

SHIPPED_FIGURES: dict[str, str] = {
    "false_alarms": "false_alarm_rate",
    "image_auroc": "image_auroc",
    "pixel_auroc": "pixel_auroc",
    "recall": "recall",
}
"""Headline key -> metrics.json figure of the shipped method: what the threshold it ships does, and
how well it ranks images and pixels."""
BASELINE_FIGURES: dict[str, str] = {"image_base": "image_auroc", "pixel_base": "pixel_auroc"}
"""Headline key -> the figure taken as the best over the baselines, so a baseline beating the
shipped model shows in the same table."""


def _finite(value: float | None) -> float | None:
    """None and NaN both mean 'not measured' (e.g. pixel figures without masks); strict JSON has no NaN."""
    return None if value is None or not math.isfinite(value) else float(value)


def headline(metrics: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | None]:
    """The headline of one category from its metrics.json payload ({method: {figure: value}})."""
    shipped = metrics[SHIPPED_METHOD]
    result = {key: _finite(shipped.get(figure)) for key, figure in SHIPPED_FIGURES.items()}
    for key, figure in BASELINE_FIGURES.items():
        values = [
            value
            for method, figures in metrics.items()
            if method != SHIPPED_METHOD and (value := _finite(figures.get(figure))) is not None
        ]
        result[key] = max(values) if values else None
    return result


def mean_headline(headlines: Iterable[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Per key, the mean over the categories that have a value; None where none has one."""
    rows = list(headlines)
    result: dict[str, float | None] = {}
    for key in (*SHIPPED_FIGURES, *BASELINE_FIGURES):
        values = [value for row in rows if (value := row.get(key)) is not None]
        result[key] = sum(values) / len(values) if values else None
    return result
