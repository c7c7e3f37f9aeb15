"""Stage `summarize`: one table over all categories, OE-SDN and its baselines side by side, and the
mean headline `dvc metrics show` prints under the categories' headlines (same keys, so the columns line up)."""

from __future__ import annotations

import json

from components.headline import MEAN_HEADLINE_NAME, headline, mean_headline
from components.io import write_json_atomic
from components.summary_report import format_summary_table, operating_point_markdown, summarize, write_summary
from pipelines.context import StageContext


def run(ctx: StageContext) -> None:
    records = {}
    for category in ctx.params.categories:
        path = ctx.layout.evaluation(category)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; evaluate category {category!r} first (`dvc repro`)")
        records[category] = json.loads(path.read_text())
    per_category = {category: record["metrics"] for category, record in records.items()}
    write_summary(per_category, ctx.layout.summary_json, ctx.layout.summary_md)
    mean = mean_headline(headline(metrics) for metrics in per_category.values())
    write_json_atomic(ctx.layout.summary_json.with_name(MEAN_HEADLINE_NAME), mean)
    write_json_atomic(
        ctx.layout.summary_provenance,
        {
            "code_version": ctx.code(),
            "categories": {c: {"data_hash": r["provenance"]["data_hash"], "models": r["models"]} for c, r in records.items()},
        },
    )
    print(format_summary_table(summarize(per_category)))
    print(operating_point_markdown(per_category))
