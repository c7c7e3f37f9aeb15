"""Run single DVC stages from an orchestrator: DVC judges staleness, this module judges failures.

A failure is classified so the orchestrator can retry only what a retry can fix:
- exit status 2 from `oesdn` means bad data or settings (`BadInputError`): never retried;
- output naming a network fault (MLflow or S3 unreachable) is `TransientStageError`: retried;
- anything else is `StageFailed`, and a stage past its time limit is `StageTimeout`.
One workspace has one orchestrator at a time (`workspace_lock`, held by a flow for its whole run).
Under it, stages of different categories may run at once, as DVC allows: it releases its repository
lock while a stage's command runs (`--wait-for-lock` waits for it otherwise) and read/write-locks
each stage's own paths, which no two categories share.

Whether a stage ran is read from DVC's state, never from its log text: the stage's `dvc.lock` entry
before and after says whether its outputs changed, and a new run-cache entry with this stage's
command and outputs says the command ran (a restore from the run cache adds none). Every dvc process
started here is stopped with the caller: `terminate_running` for an orderly exit, the parent-death
signal of its stage commands otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from filelock import FileLock

from components.processes import with_parent_death

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


RAN, RESTORED, UP_TO_DATE = "ran", "restored from the run cache", "up to date"
_running: set[subprocess.Popen[str]] = set()
_running_lock = threading.Lock()
_closed = threading.Event()
"""Set by `terminate_running`: no dvc starts after it, from any thread."""


class RunStopped(StageFailed):
    """The run is shutting down: a stage that was waiting for its turn never starts."""


@dataclass(frozen=True)
class StageResult:
    stage: str
    outcome: str
    """RAN (its command ran), RESTORED (DVC checked out a cached run) or UP_TO_DATE (nothing changed)."""
    seconds: float

    @property
    def changed(self) -> bool:
        """Its outputs changed (it ran or was restored): every stage downstream must be re-judged."""
        return self.outcome != UP_TO_DATE


def dvc_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This interpreter's bin folder first, so `dvc` finds the same `oesdn` the caller imports.

    `extra`: variables for this one command only (its CPU threads, say), never set process-wide,
    where stages running at once from other threads would see them.
    """
    bin_dir = str(Path(sys.executable).parent)
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    # Stage commands print a line per epoch instead of redrawing progress bars into a pipe.
    return {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", "OESDN_NO_PROGRESS": "1", **(extra or {})}


def dvc_executable() -> str:
    candidate = Path(sys.executable).parent / "dvc"
    return str(candidate) if candidate.exists() else "dvc"


def workspace_lock(root: Path) -> FileLock:
    """One orchestrator per workspace: a second `oesdn run` in the same checkout waits for the first."""
    (root / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    return FileLock(str(root / ".dvc" / "tmp" / "oesdn-orchestrator.lock"))


def stale_stages(root: Path, timeout_s: float = 600) -> set[str]:
    """Stages whose own dependencies, params or outputs differ from `dvc.lock` right now."""
    output = run_dvc(root, ["status", "--json"], "dvc status", timeout_s)
    # the JSON is one line; DVC may print warnings beside it (a lock left by a killed dvc, say)
    documents = [line for line in output.splitlines() if line.startswith("{")]
    return set(json.loads(documents[-1])) if documents else set()


def repro_stage(
    root: Path, stage: str, timeout_s: float, echo: Callable[[str], None] | None = None, env: Mapping[str, str] | None = None
) -> StageResult:
    """`dvc repro --single-item <stage>`: runs it if DVC finds it stale, else returns quickly.

    The caller holds `workspace_lock`; other stages may run beside this one (see the module's doc).
    """
    started = time.monotonic()
    lock_before, runs_before = lock_entry(root, stage), run_cache_entries(root)
    run_dvc(root, ["repro", "--single-item", stage], stage, timeout_s, echo, env)
    lock_after = lock_entry(root, stage)
    if lock_after == lock_before:
        outcome = UP_TO_DATE
    else:
        ran = _is_run_of(root, run_cache_entries(root) - runs_before, lock_after)
        outcome = RAN if ran else RESTORED
    return StageResult(stage, outcome, seconds=time.monotonic() - started)


def lock_entry(root: Path, stage: str) -> dict[str, object] | None:
    """The stage's record in `dvc.lock` (hashes of its deps, params and outs); None before its first run."""
    lock_file = root / "dvc.lock"
    if not lock_file.is_file():
        return None
    entry = (yaml.safe_load(lock_file.read_text()) or {}).get("stages", {}).get(stage)
    return entry if isinstance(entry, dict) else None


def run_cache_entries(root: Path) -> set[str]:
    """Files of DVC's run cache: running a stage adds one, restoring a cached run adds none.

    Not the hidden `.<random>.tmp` files a dvc beside this one writes and renames into an entry.
    """
    runs = _cache_dir(root) / "runs"
    if not runs.is_dir():
        return set()
    return {str(path.relative_to(runs)) for path in runs.rglob("*") if path.is_file() and not path.name.startswith(".")}


def _is_run_of(root: Path, new_entries: set[str], entry: dict[str, object] | None) -> bool:
    """Whether one of the new run-cache entries records this stage's command and outputs.

    A stage of another category running beside this one adds its own entries meanwhile.
    """
    if entry is None:
        return False
    runs = _cache_dir(root) / "runs"
    for name in new_entries:
        try:
            record = yaml.safe_load((runs / name).read_text()) or {}
        except FileNotFoundError:  # another category's dvc replaced it meanwhile: not this stage's run
            continue
        if record.get("cmd") == entry.get("cmd") and record.get("outs") == entry.get("outs"):
            return True
    return False


def _cache_dir(root: Path) -> Path:
    """The project's DVC cache folder (`dvc config cache.dir` may move it out of `.dvc/cache`)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return Path(repo.cache.legacy.path)


def terminate_running(grace_s: float = 10) -> None:
    """Stop every dvc process started here, and the stage commands under it (SIGTERM, then SIGKILL).

    `oesdn run` calls this on its way out, so an interrupted or killed run leaves no trainer behind.
    From then on this process starts no dvc: a category side by side with the stopped one, waiting
    for a free slot, would otherwise start its next stage while the run exits.
    """
    with _running_lock:
        _closed.set()
        processes = list(_running)
    for process in processes:
        _stop_group(process, grace_s)


def run_dvc(
    root: Path,
    args: list[str],
    stage: str,
    timeout_s: float,
    echo: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run dvc, streaming its lines to `echo`; it waits for DVC's repository lock rather than failing.

    `env`: variables added for this command and the stage command it starts (see `dvc_env`).
    """
    lines: list[str] = []
    with _running_lock:  # one lock with `terminate_running`: a dvc is either stopped by it or never started
        if _closed.is_set():
            raise RunStopped(stage, "not started: the run is stopping")
        process = subprocess.Popen(
            # a SIGKILLed oesdn takes dvc (then its stage) with it
            with_parent_death([dvc_executable(), "--wait-for-lock", *args]),
            cwd=root,
            env=dvc_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # so a timeout or an interrupt stops dvc and the stage command it started
        )
        _running.add(process)
    reader = threading.Thread(target=_collect, args=(process, lines, echo), daemon=True)
    reader.start()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _stop_group(process, grace_s=0)
        raise StageTimeout(stage, f"stopped after {timeout_s:.0f} s (orchestration.stage_timeout_minutes)") from None
    except BaseException:  # interrupted (Ctrl-C, SIGTERM as SystemExit): never leave dvc running alone
        _stop_group(process, grace_s=10)
        raise
    finally:
        with _running_lock:
            _running.discard(process)
        reader.join(timeout=10)
    output = "".join(lines)
    if process.returncode != 0 and _closed.is_set():
        raise RunStopped(stage, "stopped with the run")
    if process.returncode != 0:
        raise classify_failure(stage, output)
    return output


def _stop_group(process: subprocess.Popen[str], grace_s: float) -> None:
    """SIGTERM to the process group (dvc and its stage command), SIGKILL after `grace_s` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL) if grace_s > 0 else (signal.SIGKILL,):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace_s or None)
            return
        except subprocess.TimeoutExpired:
            continue


DVC_NOISE = (
    "Updating lock file",
    "To track the changes with git, run:",
    "git add dvc.lock",
    "To enable auto staging, run:",
    "dvc config core.autostage true",
    "Use `dvc push` to send your updates to remote storage.",
)
"""DVC's per-stage advice lines: said once per stage they drown the run's own output (the lock is
the flow's business, and `oesdn run` pushes nothing). They stay in the captured output for errors."""


def is_noise(line: str) -> bool:
    return line.strip().startswith(DVC_NOISE)


def _collect(process: subprocess.Popen[str], lines: list[str], echo: Callable[[str], None] | None) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if echo is not None and line.strip() and not is_noise(line):
            echo(line.rstrip())


def classify_failure(stage: str, output: str) -> StageFailed:
    tail = "\n".join(output.strip().splitlines()[-15:])
    if any(marker in output for marker in TRANSIENT_MARKERS):
        return TransientStageError(stage, f"network fault, may succeed on retry:\n{tail}")
    if f"exited with {BAD_INPUT_STATUS}" in output or ("oesdn " in output and ": error:" in output):
        return BadInputError(stage, f"bad input, fix it and run again:\n{tail}")
    return StageFailed(stage, f"failed:\n{tail}")
