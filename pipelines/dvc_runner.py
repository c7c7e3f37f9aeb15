"""Run single DVC stages from an orchestrator: DVC judges staleness, this module judges failures.

A failure is classified so the orchestrator can retry only what a retry can fix:
- exit status 2 from `oesdn` means bad data or settings (`BadInputError`): never retried;
- output naming a network fault (MLflow or S3 unreachable) is `TransientStageError`: retried;
- anything else is `StageFailed`, and a stage past its time limit is `StageTimeout`.
One workspace never runs two `dvc repro` at once: every call holds the workspace's file lock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

TRANSIENT_MARKERS = (
    "Connection refused",
    "ConnectionError",
    "ConnectTimeout",
    "EndpointConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "ReadTimeout",
    "503 Service Unavailable",
    "502 Bad Gateway",
    "504 Gateway Timeout",
)
BAD_INPUT_STATUS = 2
"""`oesdn` exits 2 for a dataset, params or missing-file error: retrying cannot help."""


class StageFailed(RuntimeError):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage


class BadInputError(StageFailed):
    """The data or the settings are wrong; fix them, then run again."""


class TransientStageError(StageFailed):
    """A network fault (tracking server or object store); a retry may succeed."""


class StageTimeout(StageFailed):
    """The stage ran past `orchestration.stage_timeout_minutes` and was stopped."""


@dataclass(frozen=True)
class StageResult:
    stage: str
    ran: bool
    """False when DVC found the stage up to date and skipped it."""
    seconds: float


def _env() -> dict[str, str]:
    """This interpreter's bin folder first, so `dvc` finds the same `oesdn` the caller imports."""
    bin_dir = str(Path(sys.executable).parent)
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    # Stage commands print a line per epoch instead of redrawing progress bars into a pipe.
    return {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", "OESDN_NO_PROGRESS": "1"}


def _dvc() -> str:
    candidate = Path(sys.executable).parent / "dvc"
    return str(candidate) if candidate.exists() else "dvc"


def workspace_lock(root: Path) -> FileLock:
    (root / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    return FileLock(str(root / ".dvc" / "tmp" / "oesdn-orchestrator.lock"))


def stale_stages(root: Path, timeout_s: float = 600) -> set[str]:
    """Stages whose own dependencies, params or outputs differ from `dvc.lock` right now."""
    output = _run_dvc(root, ["status", "--json"], "dvc status", timeout_s)
    return set(json.loads(output or "{}"))


def repro_stage(root: Path, stage: str, timeout_s: float, echo: Callable[[str], None] | None = None) -> StageResult:
    """`dvc repro --single-item <stage>`: runs it if DVC finds it stale, else returns quickly."""
    started = time.monotonic()
    output = _run_dvc(root, ["repro", "--single-item", stage], stage, timeout_s, echo)
    return StageResult(stage, ran=f"Running stage '{stage}'" in output, seconds=time.monotonic() - started)


def _run_dvc(root: Path, args: list[str], stage: str, timeout_s: float, echo: Callable[[str], None] | None = None) -> str:
    """Run dvc under the workspace lock, streaming its lines to `echo`; returns the whole output."""
    lines: list[str] = []
    with workspace_lock(root):
        process = subprocess.Popen(
            [_dvc(), *args],
            cwd=root,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # so a timeout stops dvc and the stage command it started
        )
        reader = threading.Thread(target=_collect, args=(process, lines, echo), daemon=True)
        reader.start()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise StageTimeout(stage, f"stopped after {timeout_s:.0f} s (orchestration.stage_timeout_minutes)") from None
        finally:
            reader.join(timeout=10)
    output = "".join(lines)
    if process.returncode != 0:
        raise classify_failure(stage, output)
    return output


def _collect(process: subprocess.Popen[str], lines: list[str], echo: Callable[[str], None] | None) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if echo is not None and line.strip():
            echo(line.rstrip())


def classify_failure(stage: str, output: str) -> StageFailed:
    tail = "\n".join(output.strip().splitlines()[-15:])
    if any(marker in output for marker in TRANSIENT_MARKERS):
        return TransientStageError(stage, f"network fault, may succeed on retry:\n{tail}")
    if f"exited with {BAD_INPUT_STATUS}" in output or ("oesdn " in output and ": error:" in output):
        return BadInputError(stage, f"bad input, fix it and run again:\n{tail}")
    return StageFailed(stage, f"failed:\n{tail}")
