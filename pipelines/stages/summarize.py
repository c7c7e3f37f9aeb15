"""Stage `summarize`: one table over all categories, OE-SDN and its baselines side by side."""

from __future__ import annotations

import json

from components.reporting import format_summary_table, summarize, write_summary
from pipelines.context import StageContext


def run(ctx: StageContext) -> None:
    per_category = {}
    for category in ctx.params.categories:
        path = ctx.layout.evaluation(category)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; evaluate category {category!r} first (`dvc repro`)")
        per_category[category] = json.loads(path.read_text())["metrics"]
    write_summary(per_category, ctx.layout.summary_json, ctx.layout.summary_md)
    print(format_summary_table(summarize(per_category)))
