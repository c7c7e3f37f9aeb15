"""Where MLflow lives: `MLFLOW_TRACKING_URI` when set, else a SQLite file in the project.

The SQLite default needs no server; a team points `MLFLOW_TRACKING_URI` at a shared server instead.
Every HTTP call to a server is bounded by the `tracking.http_*` params: MLflow's own defaults (a
120 s timeout, 7 retries with a doubling backoff) let one unreachable server hold a run for minutes
per call, and `oesdn run` for over a quarter of an hour. `check_reachable` fails a run before it
starts instead.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from components.config import TrackingConfig

DEFAULT_DATABASE = "mlflow.db"
_USERINFO = re.compile(r"(?<=://)[^/@]+@")
HTTP_BOUNDS_KEYS = "tracking.http_timeout_seconds, tracking.http_max_retries and tracking.http_backoff_factor"


class TrackingUnreachableError(RuntimeError):
    """The MLflow tracking server did not answer within the bounds set in params."""


def tracking_uri(project_root: Path) -> str:
    """The URI every run, model and alias of this project goes to."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(project_root / DEFAULT_DATABASE).resolve()}"


def redact(uri: str) -> str:
    """A URI safe to print: credentials embedded as user:password@ are masked."""
    return _USERINFO.sub("***@", uri)


def bound_http_calls(tracking: TrackingConfig | None = None) -> None:
    """Set MLflow's HTTP timeout and retry variables (read at each request) from `tracking`.

    Without settings, the params defaults apply unless the variables are already set, so a caller
    that passes the project's params is never overridden by one that does not.
    """
    values = tracking or TrackingConfig()
    bounds = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": values.http_timeout_seconds,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": values.http_max_retries,
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": values.http_backoff_factor,
    }
    for name, value in bounds.items():
        if tracking is not None or name not in os.environ:
            os.environ[name] = str(value)


def quiet_console() -> None:
    """MLflow's INFO lines and artifact progress bars off the console; its warnings and errors stay.

    A pipeline log should hold the stages' own lines; "Validating input example", database set-up
    and one bar per artifact download drown them. The user can set the variables to bring them back.
    """
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    level = os.environ.get("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(level)


def configure(project_root: Path, tracking: TrackingConfig | None = None) -> str:
    """Point the mlflow client at this project's store, with bounded HTTP calls; returns the URI it uses."""
    import mlflow

    bound_http_calls(tracking)
    quiet_console()
    uri = tracking_uri(project_root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def check_reachable(project_root: Path, tracking: TrackingConfig) -> None:
    """Fail fast, naming the URI and the params keys, when an HTTP tracking server does not answer.

    Any HTTP answer counts as reachable (an auth proxy may answer 401); a local SQLite store needs
    no check. Attempts and waits follow the same params as the MLflow client's own calls.
    """
    uri = tracking_uri(project_root)
    if not uri.startswith(("http://", "https://")):
        return
    started, reason = time.monotonic(), ""
    for attempt in range(tracking.http_max_retries + 1):
        if attempt:
            time.sleep(tracking.http_backoff_factor * 2 ** (attempt - 1))
        reason = _probe(uri, tracking.http_timeout_seconds)
        if not reason:
            return
    raise TrackingUnreachableError(
        f"the MLflow tracking server {redact(uri)} is unreachable ({reason}; {tracking.http_max_retries + 1} attempts "
        f"in {time.monotonic() - started:.1f} s). Start it, or point MLFLOW_TRACKING_URI at a running server (unset it "
        f"to use the project's {DEFAULT_DATABASE}); the wait is bounded by {HTTP_BOUNDS_KEYS} in params.yaml"
    )


def _probe(uri: str, timeout_s: float) -> str:
    """'' when the server answers over HTTP at all, else why not."""
    try:
        # credentials stay out of the probe: any HTTP answer, 401 included, shows the server is up
        with urllib.request.urlopen(f"{_USERINFO.sub('', uri).rstrip('/')}/health", timeout=timeout_s):
            return ""
    except urllib.error.HTTPError:
        return ""
    except (urllib.error.URLError, OSError) as error:
        return str(getattr(error, "reason", error))


def create_store(project_root: Path) -> None:
    """Create a new SQLite store's tables now, in this one process.

    Two stage processes opening a new `mlflow.db` at the same moment both try to create its tables,
    and one fails. A server store needs nothing: the server made its tables when it started.
    """
    uri = tracking_uri(project_root)
    if not uri.startswith("sqlite:"):
        return
    quiet_console()
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
