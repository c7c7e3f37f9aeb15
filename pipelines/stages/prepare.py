"""Stage `prepare`: validate a category's folder, split off validation images, decode to arrays."""

from __future__ import annotations

import numpy as np

from components import assembly
from components.data.layout import build_manifest, manifest_hash, write_manifest
from components.data.prepared import DATASET_RECORD, prepare_arrays, save_prepared, working_image_size
from components.io import write_json_atomic
from components.storage import resolve_data_root
from pipelines.context import StageContext


def run(ctx: StageContext) -> None:
    assert ctx.category is not None
    data = ctx.params.data
    out_dir = ctx.layout.prepared(ctx.category)
    s3 = assembly.s3_settings(ctx.params.storage) if data.root.startswith("s3://") else None
    root = resolve_data_root(data.root, ctx.category, progress=ctx.progress, settings=s3)  # s3://... -> a verified local copy
    if not root.exists() and root.resolve() == ctx.layout.bundled_data.resolve():
        raise FileNotFoundError(f"the bundled dataset {root} is not built yet; run `oesdn generate` (or `dvc repro`)")
    manifest = build_manifest(root, ctx.category, val_fraction=data.val_fraction, seed=ctx.params.seed)
    image_size = working_image_size(manifest, data.image_size)
    if image_size < data.image_size:
        print(
            f"{ctx.category}: working at {image_size} px, the size of its smallest good image (data.image_size {data.image_size} is a ceiling)"
        )
    prepared = prepare_arrays(manifest, image_size, data.channels, progress=ctx.progress)
    data_hash = manifest_hash(manifest)
    write_manifest(manifest, out_dir / "manifest.csv")
    save_prepared(prepared, out_dir)
    counts = {
        "train": len(prepared.train),
        "val": len(prepared.val),
        "test_normal": int(np.sum(prepared.test_labels == 0)),
        "test_anomalous": int(np.sum(prepared.test_labels == 1)),
    }
    write_json_atomic(
        out_dir / DATASET_RECORD,
        {
            "category": ctx.category,
            "data_hash": data_hash,
            "masks_available": prepared.masks_available,
            "image_size": image_size,
            "counts": counts,
            "defect_types": sorted(set(prepared.test_defect_types) - {"good"}),
            "provenance": ctx.provenance(("data",), data_hash),
        },
    )
    print(f"{ctx.category}: {counts} from {root / ctx.category}")
    if not prepared.masks_available:
        print(f"{ctx.category}: no ground_truth folder, so pixel AUROC and AUPRO will be skipped")
