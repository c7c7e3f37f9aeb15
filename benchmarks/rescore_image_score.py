"""Re-score trained development-suite runs with other OE-SDN image scores, without retraining.

Why: an image-score candidate (another top-k share, several shares at once, the AE residual's own
score joined to OE-SDN's) changes only evaluate, and the defaults' trained networks of every suite
and seed already sit in the bench's workspaces. This reads them, takes each map's top-k log scores
on the validation normals, the test images and the label-free check's defective copies of the
validation normals, and prints per candidate the image AUROC and, at the shipped rule's threshold
(`score.threshold_rule` of params.yaml, on the validation normals), false alarms and
recall; then what a per-category label-free choice between OE-SDN's score and OE-SDN's plus the AE
residual's would do. Choose on the development suites only, never on the bundled test labels.

    oesdn --no-progress bench devsuite --root data/devsuite_tiled --categories rock planks --seeds 0 1 2 --threads 1
    python benchmarks/rescore_image_score.py --root data/devsuite_tiled --categories rock planks --seeds 0 1 2

The raw scores are kept under --scores (one JSON per run), so a second call only re-tabulates.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from components.assembly import image_threshold_rule
from components.config import load_params
from components.data.prepared import load_prepared
from components.data.validation_defects import defective_copies
from components.evaluation import ImageThresholdRule
from components.models.oesdn.bundle import BundleModel
from components.runtime import to_float
from components.scoring import ImageScoreCalibration, l2_residual_map, oe_sdn_map, smooth_maps
from pipelines.devsuite import data_fingerprint, defaults_workspace, trained_runs_parser

FRACTIONS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05)
SHIPPED = ("squared@0.02", "ssim@0.02")
CANDIDATES: dict[str, tuple[str, ...]] = {
    "shipped: squared + ssim, top 2 %": SHIPPED,
    "top 1 %": ("squared@0.01", "ssim@0.01"),
    "top 0.5 %": ("squared@0.005", "ssim@0.005"),
    "top 5 %": ("squared@0.05", "ssim@0.05"),
    "top 0.25 % and 2 %": ("squared@0.0025", "ssim@0.0025", *SHIPPED),
    "top 0.1 % and 2 %": ("squared@0.001", "ssim@0.001", *SHIPPED),
    "top 0.5 % and 5 %": ("squared@0.005", "ssim@0.005", "squared@0.05", "ssim@0.05"),
    "squared alone": ("squared@0.02",),
    "+ the AE residual (AE-L2)": (*SHIPPED, "l2@0.02"),
    "AE-L2 alone (the baseline)": ("l2@0.02",),
}
WITH_RESIDUAL = CANDIDATES["+ the AE residual (AE-L2)"]


def _maps(model: BundleModel, images: np.ndarray) -> dict[str, torch.Tensor]:
    """(N, H*W) smoothed maps: OE-SDN's squared and SSIM distance at the chosen blur, and AE-L2."""
    detector, settings = model.detector, model.detector.settings
    parts: dict[str, list[torch.Tensor]] = {"squared": [], "ssim": [], "l2": []}
    with torch.no_grad():
        for start in range(0, len(images), 32):
            batch = to_float(images[start : start + 32])
            sdn_output, ae_output = detector.network_outputs(batch)
            for distance in ("squared", "ssim"):
                raw = oe_sdn_map(sdn_output, ae_output, distance, settings.ssim_window, settings.difference_sigma)
                parts[distance].append(smooth_maps(raw, settings.smoothing_sigma))
            parts["l2"].append(smooth_maps(l2_residual_map(batch, ae_output), settings.smoothing_sigma))
    return {name: torch.cat(chunks).flatten(1) for name, chunks in parts.items()}


def _log_topk(maps: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    scores = {}
    for name, flat in maps.items():
        for fraction in FRACTIONS:
            k = max(1, round(flat.shape[1] * fraction))
            scores[f"{name}@{fraction}"] = flat.topk(k, dim=1).values.mean(dim=1).double().clamp_min(1e-12).log().tolist()
    return scores


def raw_scores(root: Path, category: str, seed: int, cache: Path, scores_dir: Path) -> dict:
    """One run's top-k log scores, computed once from its bench workspace and kept as JSON."""
    path = scores_dir / f"{category}-{data_fingerprint(root / category)}_seed{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    workspace = defaults_workspace(root, category, seed, cache)
    model = BundleModel.load(workspace / "models" / category, device="cpu")
    data = load_prepared(workspace / "data" / "prepared" / category)
    defective, _, _ = defective_copies(data.val, seed)
    record = {
        "labels": data.test_labels.tolist(),
        "val": _log_topk(_maps(model, data.val)),
        "test": _log_topk(_maps(model, data.test)),
        "synthetic": {name: values for name, values in _log_topk(_maps(model, defective)).items() if name.endswith("@0.02")},
    }
    scores_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return record


def operating_point(record: dict, names: tuple[str, ...], rule: ImageThresholdRule) -> tuple[float, float, float, float]:
    """(test image AUROC, false alarms, recall, synthetic image AUROC) of the image score that combines
    `names` as the detector does (`ImageScoreCalibration` on the validation normals), thresholded by
    `rule`; the synthetic figure only for scores of the shipped top-k share (nan otherwise: not kept)."""
    splits = ("val", "test", "synthetic") if all(name in record["synthetic"] for name in names) else ("val", "test")
    raw = {split: torch.tensor([record[split][name] for name in names], dtype=torch.float64).exp() for split in splits}
    calibration = ImageScoreCalibration.fit(names, raw["val"])
    scores = {split: calibration.combine(values).numpy() for split, values in raw.items()}
    labels = np.asarray(record["labels"])
    flagged = scores["test"] > rule.threshold(scores["val"])
    synthetic_auroc = float("nan")
    if "synthetic" in scores:
        val, synthetic = scores["val"], scores["synthetic"]
        synthetic_auroc = float(roc_auc_score(np.r_[np.zeros(len(val)), np.ones(len(synthetic))], np.r_[val, synthetic]))
    return (
        float(roc_auc_score(labels, scores["test"])),
        float(flagged[labels == 0].mean()),
        float(flagged[labels == 1].mean()),
        synthetic_auroc,
    )


def main() -> None:
    parser = trained_runs_parser(__doc__.splitlines()[0])
    parser.add_argument("--scores", type=Path, default=Path("benchmarks/results/devsuite_runs/rescore"))
    parser.add_argument(
        "--margin", type=float, default=0.01, help="label-free choice: the AE residual joins if its check is this much better"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    rule = image_threshold_rule(load_params(Path("params.yaml")).score)
    results: dict[str, list[tuple[float, ...]]] = {name: [] for name in [*CANDIDATES, "label-free choice"]}
    for category in args.categories:
        per_category: dict[str, list[tuple[float, ...]]] = {name: [] for name in results}
        for seed in args.seeds:
            record = raw_scores(args.root, category, seed, args.cache, args.scores)
            points = {name: operating_point(record, names, rule) for name, names in CANDIDATES.items()}
            joins = points["+ the AE residual (AE-L2)"][3] > points["shipped: squared + ssim, top 2 %"][3] + args.margin
            points["label-free choice"] = points["+ the AE residual (AE-L2)" if joins else "shipped: squared + ssim, top 2 %"]
            for name, point in points.items():
                per_category[name].append(point)
        for name, points_of_seeds in per_category.items():
            results[name].append(tuple(np.mean(points_of_seeds, axis=0)))
        shipped, chosen = (np.mean(per_category[n], axis=0) for n in ("shipped: squared + ssim, top 2 %", "label-free choice"))
        print(f"{category}: shipped image AUROC {shipped[0]:.3f}, label-free choice {chosen[0]:.3f}")
    print(f"\nmeans over {len(args.categories)} categories x {len(args.seeds)} seeds")
    print("| image score | image AUROC | false alarms | recall | synthetic image AUROC | worst category vs shipped |")
    print("|---|---|---|---|---|---|")
    shipped_rows = results["shipped: squared + ssim, top 2 %"]
    for name, rows in results.items():
        auroc, false_alarms, recall, synthetic = np.mean(rows, axis=0)
        worst = min((row[0] - base[0], category) for row, base, category in zip(rows, shipped_rows, args.categories, strict=True))
        print(
            f"| {name} | {auroc:.3f} | {100 * false_alarms:.1f} % | {100 * recall:.0f} % | {synthetic:.3f} | {worst[0]:+.3f} ({worst[1]}) |"
        )


if __name__ == "__main__":
    try:
        main()
    except FileNotFoundError as error:  # a run the bench has not made: say which, no traceback
        raise SystemExit(str(error)) from None
