"""The AE's best validation loss after its training budget, for several learning rates (a screen).

Trains only the AE (no SDN, no evaluation) on a prepared category, with `params.yaml`'s settings and
each learning rate in turn, and prints the validation losses it checked. It answers "is the AE still
limited by its step size?" in two minutes a rate, where the bench needs five per category. A lower
loss is not a better detector (docs/model-quality.md, "a 4x learning rate"): confirm with
`oesdn bench devsuite --set ae.learning_rate=...`. Kept out of CI.

    python benchmarks/ae_learning_rate.py \\
        benchmarks/results/devsuite_runs/train-<key>/planks-<key>/seed0/data/prepared/planks 0.001 0.002 0.004
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path, help="a prepared category folder (arrays.npz, dataset.json)")
    parser.add_argument("rates", type=float, nargs="+", help="AE learning rates to train with")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda[:N]")
    args = parser.parse_args()

    import torch

    from components import assembly
    from components.config import ConfigError, Params, load_params, validate_params
    from components.data.prepared import load_prepared
    from components.models.oesdn.persistence import build_network
    from components.runtime import seed_everything, select_device, to_float
    from components.training import fit

    def with_rate(params: Params, rate: float) -> Params:
        """`params` with the AE's learning rate replaced, validated as params.yaml is (the key named)."""
        raw = params.model_dump(mode="json")
        raw["ae"]["learning_rate"] = rate
        return validate_params(raw, origin=f"{args.params} with ae.learning_rate {rate:g}")

    torch.set_num_threads(args.threads)
    try:
        params = load_params(args.params)
        runs = [with_rate(params, rate) for rate in args.rates]
        data = load_prepared(args.prepared)
        device = select_device(args.device)
    except (ConfigError, FileNotFoundError, RuntimeError) as error:
        parser.error(str(error))
    objective = assembly.ae_objective(params.loss, params.ae)
    with tempfile.TemporaryDirectory() as scratch:
        for rate, run in zip(args.rates, runs, strict=True):
            ae = run.ae
            seed_everything(params.seed)
            settings = assembly.fit_settings(ae, params.seed, Path(scratch) / f"ae_{rate}.pt", f"lr {rate}", "ae", False)
            network = build_network("ae", assembly.ae_arch(params.data.channels, ae))
            started = time.process_time()
            with contextlib.redirect_stdout(io.StringIO()):  # the per-epoch lines
                result = fit(network, objective, (to_float(data.train),), (to_float(data.val),), settings, device)
            checked = [f"{h['val_loss']:.4f}" for h in result.history if "val_loss" in h]
            print(
                f"learning rate {rate:g}: best validation loss {result.best_val_loss:.4f} at epoch {result.best_epoch} "
                f"of {len(result.history)}; checks {' '.join(checked)}; {time.process_time() - started:.0f} CPU s"
            )


if __name__ == "__main__":
    main()
