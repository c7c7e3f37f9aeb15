"""Where MLflow lives: `MLFLOW_TRACKING_URI` when set, else a SQLite file in the project.

The SQLite default needs no server; a team points `MLFLOW_TRACKING_URI` at a shared server instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT_DATABASE = "mlflow.db"
_USERINFO = re.compile(r"(?<=://)[^/@]+@")


def tracking_uri(project_root: Path) -> str:
    """The URI every run, model and alias of this project goes to."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(project_root / DEFAULT_DATABASE).resolve()}"


def redact(uri: str) -> str:
    """A URI safe to print: credentials embedded as user:password@ are masked."""
    return _USERINFO.sub("***@", uri)


def configure(project_root: Path) -> str:
    """Point the mlflow client at this project's store; returns the URI it uses."""
    import mlflow

    uri = tracking_uri(project_root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri
