"""The Prefect API server `oesdn run` reports to when no PREFECT_API_URL is set: its own child.

Prefect would start a temporary server itself, in `oesdn run`'s process group and with nothing
tying it to `oesdn run`'s life. Then a Ctrl-C reaches that server too, and Prefect spends minutes
retrying to report the interrupted run to it; and a SIGKILLed `oesdn run` leaves it running. This
server runs in its own session (a terminal's Ctrl-C goes to `oesdn run` only, which reports and
stops it) and gets SIGTERM from the kernel when `oesdn run` dies, however it dies.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

STARTUP_TIMEOUT_S = 180.0
"""A first start migrates a fresh database: about 10 s on two idle cores, minutes on a busy CI machine."""
DRAIN_TIMEOUT_S = 10.0
"""How long the last logs and events may take to reach the server before it is stopped."""


class PrefectServerError(RuntimeError):
    """The private Prefect server did not come up."""


@contextlib.contextmanager
def private_server(state_dir: Path, startup_timeout_s: float = STARTUP_TIMEOUT_S) -> Iterator[str]:
    """A Prefect API server on 127.0.0.1 for the block; sets PREFECT_API_URL to it and yields it.

    A PREFECT_API_URL already set (a shared server) is used as it is and nothing is started.
    """
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    from components.processes import with_parent_death

    state_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    prefect = Path(sys.executable).parent / "prefect"
    command = [
        str(prefect),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-services",
        "--no-ui",
        "--analytics-off",
    ]
    log_path = state_dir / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(with_parent_death(command), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_healthy(server, url, startup_timeout_s, log_path)
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        _drain_prefect_workers()  # else Prefect's exit hook retries, without end, to report to a stopped server
        os.environ.pop("PREFECT_API_URL", None)
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _drain_prefect_workers(timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    """Send the logs and events Prefect still holds while the server can take them, as
    `prefect_test_harness` does before it stops its server."""
    if "prefect" not in sys.modules:  # nothing of Prefect ran in this process, nothing to send
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout_s)
    EventsWorker.drain_all(timeout=timeout_s)


def _wait_healthy(server: subprocess.Popen[bytes], url: str, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise PrefectServerError(f"the Prefect server exited with status {server.returncode}; its log:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise PrefectServerError(f"the Prefect server at {url} did not answer within {timeout_s:.0f} s; its log:\n{_tail(log_path)}")


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
