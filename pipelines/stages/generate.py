"""Stage `generate`: the bundled default dataset, built offline from scikit-image's texture photos."""

from __future__ import annotations

from components.data.synthetic import SyntheticSpec, generate_dataset
from pipelines.context import StageContext


def run(ctx: StageContext) -> None:
    bundled = ctx.params.bundled
    spec = SyntheticSpec(
        image_size=bundled.image_size,
        train_count=bundled.train_count,
        test_good_count=bundled.test_good_count,
        test_per_defect=bundled.test_per_defect,
        crop_size=bundled.crop_size,
        seed=ctx.params.seed,
    )
    paths = generate_dataset(ctx.layout.bundled_data, bundled.categories, spec, progress=ctx.progress)
    print(f"bundled dataset: {len(paths)} categories under {ctx.layout.bundled_data}")
