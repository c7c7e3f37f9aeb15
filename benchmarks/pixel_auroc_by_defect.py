"""Pixel AUROC per defect type, from the defaults' trained development-suite runs.

Why: pooled pixel AUROC weighs each defect type by its area, so one large type the maps cannot see
(a warp's whole disc of displaced texture) can sink a category whose other defects light up. This
reads the bench's workspaces, scores each run's test images once more, and prints, per category and
method, the AUROC of each type's pixels against the good parts' pixels, and of all pixels with and
without one type left out.

    oesdn --no-progress bench devsuite --root data/devsuite_tiled3 --categories soil patina --seeds 0 1 2 --threads 1
    python benchmarks/pixel_auroc_by_defect.py --root data/devsuite_tiled3 --categories soil patina --without warp
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from components.data.prepared import load_prepared
from components.models.oesdn.bundle import BundleModel
from components.models.oesdn.detector import score_images
from pipelines.devsuite import defaults_workspace, trained_runs_parser

METHODS = ("oe_sdn", "ae_l2")


def run_figures(workspace: Path, category: str, without: str | None) -> dict[tuple[str, str], float]:
    """{(method, defect type or 'all' or 'all but <without>'): pixel AUROC} of one run."""
    model = BundleModel.load(workspace / "models" / category, device="cpu")
    data = load_prepared(workspace / "data" / "prepared" / category)
    scored = score_images(model.detector, data.test, 32, torch.device("cpu"), progress=False, methods=METHODS)
    types = np.array([str(t) for t in data.test_defect_types])
    masks = data.test_masks_native if data.test_masks_native is not None else data.test_masks
    if masks is None or scored["oe_sdn"].maps.shape[1:] != masks.shape[1:]:
        raise SystemExit(f"{workspace}: needs masks at the maps' side (the suites' categories have them)")
    selections = {defect: (types == "good") | (types == defect) for defect in sorted(set(types) - {"good"})}
    selections["all"] = np.ones(len(types), dtype=bool)
    if without:
        selections[f"all but {without}"] = types != without
    figures = {}
    for method in METHODS:
        maps = scored[method].maps
        for name, chosen in selections.items():
            figures[(method, name)] = float(roc_auc_score(masks[chosen].ravel(), maps[chosen].ravel()))
    return figures


def main() -> None:
    parser = trained_runs_parser(__doc__.splitlines()[0])
    parser.add_argument("--without", help="also the pooled figure with this defect type left out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    means: dict[tuple[str, str], list[float]] = defaultdict(list)
    for category in args.categories:
        per_seed: dict[tuple[str, str], list[float]] = defaultdict(list)
        for seed in args.seeds:
            workspace = defaults_workspace(args.root, category, seed, args.cache)
            for figure, value in run_figures(workspace, category, args.without).items():
                per_seed[figure].append(value)
        for (method, name), values in sorted(per_seed.items()):
            means[(method, name)].append(float(np.mean(values)))
            print(f"{category} {method} {name}: {np.mean(values):.3f}")
    print(f"\nmeans over {len(args.categories)} categories x {len(args.seeds)} seeds")
    for (method, name), values in sorted(means.items()):
        print(f"{method} {name}: {np.mean(values):.3f}")


if __name__ == "__main__":
    try:
        main()
    except FileNotFoundError as error:  # a run the bench has not made: say which, no traceback
        raise SystemExit(str(error)) from None
