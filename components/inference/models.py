"""Resolve `--model`: a local bundle folder (e.g. `models/brick`) or a registry URI (`models:/...`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BUNDLE_FILE = "bundle.json"
"""As `components.models.oesdn.bundle.BUNDLE_FILE`, repeated so a bad `--model` fails before torch loads."""


class ModelSourceError(ValueError):
    """`--model` names nothing usable; the message says what was looked for and what to do."""


@dataclass(frozen=True)
class ResolvedModel:
    bundle_dir: Path
    name: str
    """Registered model name, or the local folder's path."""
    version: str
    """Registered version number, or `local-<pair id>` (a fingerprint of the weights and scoring)."""
    uri: str
    """What the user passed, for the export's JSON and error messages."""


def resolve_model(spec: str, project_root: Path, download_to: Path) -> ResolvedModel:
    """A local folder is used in place; a `models:/name@alias` or `models:/name/N` URI is downloaded."""
    if spec.startswith("models:/"):
        return _from_registry(spec, project_root, download_to)
    folder = Path(spec)
    if not (folder / BUNDLE_FILE).is_file():
        what = "does not exist" if not folder.exists() else f"has no {BUNDLE_FILE}"
        raise ModelSourceError(
            f"model {spec!r} {what}: pass a bundle folder written by the evaluate stage (e.g. models/brick) "
            "or a registry URI such as models:/oesdn-brick@champion"
        )
    from components.models.oesdn.bundle import read_bundle_info

    return ResolvedModel(folder, str(folder), f"local-{read_bundle_info(folder).pair_id}", spec)


def _from_registry(uri: str, project_root: Path, download_to: Path) -> ResolvedModel:
    from components.tracking.registry import RegistryError, fetch_registered_bundle
    from components.tracking.store import configure, redact

    reference = uri.removeprefix("models:/")
    if "@" not in reference and "/" not in reference:
        raise ModelSourceError(f"model URI {uri!r} names no version: use models:/<name>@<alias> or models:/<name>/<version>")
    store = redact(configure(project_root))
    try:
        bundle, name, version = fetch_registered_bundle(uri, download_to)
    except RegistryError as error:
        hint = "" if os.environ.get("MLFLOW_TRACKING_URI") else " (set MLFLOW_TRACKING_URI to use another store)"
        raise ModelSourceError(f"cannot load {uri!r} from the registry at {store}{hint}: {error}") from error
    return ResolvedModel(bundle, name, version, uri)
