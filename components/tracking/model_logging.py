"""Log an AE/SDN bundle as an MLflow pyfunc model, into the run that measured the pair.

The version's "Source run" in the MLflow UI is then the evaluate run with the pair's metrics,
plots and evaluation page; only when tracking was off at evaluate time does the model get a
`register` run of its own.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pandas as pd

from components.tracking import pyfunc
from components.tracking.lineage import PAIR_TAG
from components.tracking.registry import model_metadata, stage_bundle
from components.tracking.runs import find_stage_run, reopened_run, stage_run

if TYPE_CHECKING:
    from components.models.oesdn.bundle import BundleModel

COMPONENTS_ROOT = Path(__file__).resolve().parents[1]
"""The package the logged model carries as code, so it loads without this checkout installed."""


def log_pair_model(
    experiment: str,
    model: BundleModel,
    bundle_dir: Path,
    example_image: Path,
    fallback_run_name: str,
    fallback_tags: Callable[[], dict[str, str]],
) -> tuple[str, str]:
    """Log `model` (whose files are in `bundle_dir`) as a pyfunc; returns (run id, model URI).

    `example_image` becomes the model's input example; `fallback_run_name` and `fallback_tags()`
    name the `register` run used when no evaluate run of this pair is found (the tags hash the
    bundle's files, so they are computed only then).
    """
    info = model.info
    example = pd.DataFrame({"image": [pyfunc.encode_array(model.decode(example_image))]})
    evaluate_run = find_stage_run(experiment, "evaluate", PAIR_TAG, info.pair_id)
    if evaluate_run is not None:
        run = reopened_run(evaluate_run)
    else:
        run = stage_run(experiment, fallback_run_name, fallback_tags())
    with run as run_id, tempfile.TemporaryDirectory() as tmp:
        bundle = stage_bundle(bundle_dir, Path(tmp) / pyfunc.BUNDLE_ARTIFACT)
        logged = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(COMPONENTS_ROOT / "tracking" / "pyfunc_entry.py"),
            artifacts={pyfunc.BUNDLE_ARTIFACT: str(bundle)},
            code_paths=[str(COMPONENTS_ROOT)],
            signature=pyfunc.signature(),
            input_example=example,
            pip_requirements=pyfunc.pip_requirements(),
            metadata=model_metadata(info),
        )
        mlflow.log_dict(info.to_json(), "bundle.json")
    return run_id, logged.model_uri
