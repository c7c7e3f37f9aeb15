"""Process hygiene for unattended runs: die with the parent, share the CPUs, one writer per output.

Stage commands are started by `dvc repro`, itself often started by `oesdn run`. Killing either
must not leave a trainer behind writing files the next run reads, and a second trainer must never
write the same checkpoint beside the first. On a machine shared with another job, OpenMP threads
that spin while they wait for each other stall every step; passive waiting keeps the slowdown to
the run's share of the CPUs (benchmarks/contention.py measures it).

Nothing here imports torch: `share_cpus` must run before torch loads.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

PR_SET_PDEATHSIG = 1
"""From <linux/prctl.h>: the signal the kernel sends this process when its parent exits."""


class OutputLockedError(RuntimeError):
    """Another live process holds the lock on the files this one would write."""


SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "mksh", "fish"})
"""Shells DVC may run a stage's `cmd` with (`$SHELL -c cmd`, else `/bin/sh -c cmd`)."""


_LAUNCHER = (
    "import ctypes, os, sys\n"
    f"ctypes.CDLL(None).prctl({PR_SET_PDEATHSIG}, int(sys.argv[1]), 0, 0, 0)  # execve keeps it\n"
    "if os.getppid() != int(sys.argv[2]):\n"
    "    sys.exit(128 + int(sys.argv[1]))  # the parent died before the prctl\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


def with_parent_death(command: list[str], sig: signal.Signals = signal.SIGTERM) -> list[str]:
    """`command`, started so that Linux sends it `sig` when the process starting it exits.

    For children whose code is not ours (dvc, Prefect's server). A `preexec_fn` would do the same
    without the extra exec, but is unsafe in a process with threads, as `oesdn run` is. Elsewhere
    than Linux the command is returned as it is.
    """
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-c", _LAUNCHER, str(int(sig)), str(os.getpid()), *command]


def _parent_death_signal(sig: signal.Signals) -> bool:
    try:
        return int(ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> bool:
    """Have `sig` sent to this process when whoever started it exits; False where unsupported.

    A parent killed by SIGKILL cannot stop its children itself; the kernel can. If the parent is
    already gone by the time this runs (a race at start-up), the signal is sent at once. DVC runs
    a stage as `$SHELL -c cmd`, and some shells (Debian's dash) do not exec the command but wait
    for it: the parent is then the shell, which outlives a killed `dvc`. So the owner is the first
    ancestor that is not such a wrapper, and a thread waits on it when it is not the parent.
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    if not _parent_death_signal(sig):
        return False
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)
        return True
    owner = _owner_beyond_shells(parent)
    if owner != parent:
        _signal_when_gone(owner, sig)
    return True


def _owner_beyond_shells(pid: int) -> int:
    """`pid`, or for a `shell -c cmd` wrapper the first ancestor above the wrappers."""
    import psutil  # installed with dvc and prefect

    try:
        process = psutil.Process(pid)
        while process.ppid() > 1 and _is_shell_wrapper(process.cmdline()):
            process = psutil.Process(process.ppid())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return pid
    return process.pid


def _is_shell_wrapper(argv: list[str]) -> bool:
    return bool(argv) and Path(argv[0]).name.lstrip("-") in SHELLS and "-c" in argv[1:]


def _signal_when_gone(pid: int, sig: signal.Signals) -> None:
    """A daemon thread that sends `sig` to this process when `pid` exits (a pidfd: no polling, no PID reuse)."""
    import select
    import threading

    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        os.kill(os.getpid(), sig)
        return
    except (OSError, AttributeError):  # a kernel before 5.3
        return

    def _wait() -> None:
        select.select([descriptor], [], [])
        os.kill(os.getpid(), sig)

    threading.Thread(target=_wait, name=f"die-with-{pid}", daemon=True).start()


def cpu_threads(requested: int = 0) -> int:
    """`requested` threads, or for 0 one per CPU this process may run on (its affinity, not the host's)."""
    if requested > 0:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def share_cpus(threads: int = 0) -> None:
    """OpenMP threads that sleep while waiting, `cpu_threads(threads)` of them, unless the user set them.

    Must run before torch is imported: OpenMP reads these variables once, when it loads.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OMP_NUM_THREADS", str(cpu_threads(threads)))


def exit_on_signals() -> None:
    """First SIGTERM or SIGINT: SystemExit or KeyboardInterrupt in the main thread, so `finally`
    blocks and atexit handlers stop child processes (dvc, the Prefect server `oesdn run` started).
    A second: stop every descendant and exit at once, for a clean-up that itself hangs.

    Python's default for SIGTERM ends the process without any clean-up.
    """
    received: list[int] = []

    def _handle(signum: int, _frame: FrameType | None) -> None:
        if received:
            stop_descendants()
            os._exit(128 + signum)
        received.append(signum)
        print(f"oesdn: stopping after signal {signum}; send it again to exit at once", file=sys.stderr)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _handle)


def stop_descendants(grace_s: float = 5) -> None:
    """SIGTERM to every process below this one, SIGKILL to those still alive after `grace_s`."""
    import psutil  # installed with dvc and prefect

    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


@contextlib.contextmanager
def waiting_for_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `lock_path` (created if missing) for the block, waiting for it.

    For work that a second process should wait for, not refuse: it then finds the first one's
    outputs. Like `single_writer`'s, the lock dies with its holder.
    """
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def single_writer(lock_path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (created if missing) for the block, or fail at once.

    The kernel releases a `flock` when its holder exits, however it exits, so a killed writer never
    leaves a stale lock. The file keeps the holder's PID for the message a second writer gets.
    """
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            raise OutputLockedError(
                f"{what} is being written by another process (PID {holder}), which holds the lock {lock_path}; "
                f"wait for it to finish or stop it (kill {holder}), then run again"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(descriptor)
