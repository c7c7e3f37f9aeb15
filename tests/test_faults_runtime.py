"""Faults at run time, through the commands a user runs: killed runs, a second trainer, an MLflow or S3
server that is down or hangs, and a configuration DVC restores from its run cache.

Each test asserts the exit status, the message and the state after (processes, lock files,
`dvc.lock`, registry versions, the summary). Hang bounds are printed, not asserted beyond 120 s.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.conftest import PROJECT_ROOT, stop_process_group, tiny_params, write_params
from tests.test_pipeline import run

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
OESDN, DVC = str(BIN / "oesdn"), str(BIN / "dvc")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_"))}
    return {
        **env,
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "OESDN_NO_PROGRESS": "1",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def _new_project(root: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """This checkout's pipeline with tiny params for `brick`, as a fresh git + DVC project."""
    for name in ("components", "pipelines"):
        shutil.copytree(PROJECT_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    params = tiny_params(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()))
    if edit is not None:
        edit(params)
    write_params(root / "params.yaml", params)
    run("git", "init", "-q", cwd=root)
    run("dvc", "init", "-q", cwd=root)
    run("dvc", "config", "core.analytics", "false", cwd=root)
    return root


def _wait_for(condition: Callable[[], Any], timeout_s: float, what: str | Callable[[], str]) -> Any:
    """`condition()` once truthy; `what` may be a callable, so a log tail is read at the time-out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what() if callable(what) else what}")


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for a PID 1 that may never reap it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline_has(process: psutil.Process, marker: str) -> bool:
    try:
        return marker in " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- A: a killed run leaves nothing behind; one writer per checkpoint --------------------------------


def _long_training(params: dict[str, Any]) -> None:
    params["ae"]["epochs"] = 5000  # far longer than any test waits: it must be stopped, never finish


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose data is prepared and whose AE training would run for a long time."""
    root = _new_project(tmp_path_factory.mktemp("faults_runtime"), _long_training)
    run("dvc", "repro", "prepare@brick", cwd=root)
    return root


@pytest.fixture
def started(prepared: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; whatever is left of them (and their groups) is stopped afterwards."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        stop_process_group(process, timeout=10)


def _start(started: list[subprocess.Popen[str]], args: list[str], cwd: Path) -> subprocess.Popen[str]:
    """Start `args` in its own session, its output going to `<cwd>/<name>.log` for failure messages."""
    with (cwd / f"{Path(args[0]).name}-{args[1]}.log").open("w") as log:
        process = subprocess.Popen(
            args, cwd=cwd, env=_env(), stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
    started.append(process)
    return process


def _log_tail(project: Path) -> str:
    return "\n".join(f"--- {log.name}:\n{log.read_text()[-3000:]}" for log in sorted(project.glob("*.log")))


def _lock_file(project: Path) -> Path:
    return project / ".checkpoints" / "brick" / "ae.pt.lock"


def _training(project: Path, parent: int) -> psutil.Process:
    """The `oesdn train-ae` under `parent` that holds the checkpoint lock (it is in its fit).

    Found by the PID in the lock: DVC may run it under a `sh -c` that also names `train-ae`.
    """

    def trainer() -> psutil.Process | None:
        lock = _lock_file(project)
        holder = lock.read_text().strip() if lock.is_file() else ""
        try:
            children = psutil.Process(parent).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        return next((child for child in children if str(child.pid) == holder and _cmdline_has(child, "train-ae")), None)

    return _wait_for(trainer, 420, lambda: f"a trainer under {parent} to hold the checkpoint lock\n{_log_tail(project)}")


def test_killing_dvc_repro_stops_its_trainer(prepared: Path, started: list[subprocess.Popen[str]]) -> None:
    dvc = _start(started, [DVC, "repro", "train_ae@brick"], prepared)
    trainer = _training(prepared, dvc.pid)
    os.kill(dvc.pid, signal.SIGKILL)  # nothing in dvc gets to clean up: the kernel must stop the trainer
    dvc.wait()
    killed = time.monotonic()
    _wait_for(lambda: not _alive(trainer.pid), 15, f"the orphaned trainer {trainer.pid} to exit")
    _wait_for(lambda: _lock_is_free(_lock_file(prepared)), 15, "the kernel to release the dead trainer's checkpoint lock")
    print(f"trainer gone and its lock free {time.monotonic() - killed:.1f} s after dvc was killed")


def test_a_stage_under_a_waiting_shell_dies_with_the_shells_parent(tmp_path: Path, started: list[subprocess.Popen[str]]) -> None:
    """DVC runs `$SHELL -c cmd`; a shell that waits for `cmd` instead of exec-ing it (dash, or any
    shell given a compound command) outlives a killed `dvc`, so the kernel's parent-death signal
    alone would leave the stage command running."""
    ready = tmp_path / "ready"
    stage = f"from components.processes import die_with_parent; import pathlib, time; die_with_parent(); pathlib.Path({str(ready)!r}).write_text('up'); time.sleep(120)"
    shell_cmd = f"{shlex.quote(sys.executable)} -c {shlex.quote(stage)}; true"  # `; true`: no shell can exec it
    launcher = f"import subprocess, time; subprocess.Popen(['/bin/sh', '-c', {shell_cmd!r}]); time.sleep(120)"
    owner = subprocess.Popen([sys.executable, "-c", launcher], cwd=PROJECT_ROOT, start_new_session=True, text=True)
    started.append(owner)
    _wait_for(ready.is_file, 60, "the stage command to start")
    (shell,) = psutil.Process(owner.pid).children()
    (command,) = shell.children()
    assert _cmdline_has(shell, "/bin/sh -c") and command.ppid() == shell.pid
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    killed = time.monotonic()
    _wait_for(lambda: not _alive(command.pid) and not _alive(shell.pid), 15, "the stage command and its shell to exit")
    print(f"stage command under a waiting shell gone {time.monotonic() - killed:.1f} s after its owner was killed")


def _lock_is_free(path: Path) -> bool:
    from components.processes import OutputLockedError, single_writer

    try:
        with single_writer(path, "the checkpoint"):
            return True
    except OutputLockedError:
        return False


def test_a_second_trainer_on_the_same_checkpoint_fails_at_once(prepared: Path, started: list[subprocess.Popen[str]]) -> None:
    first = _start(started, [OESDN, "train-ae", "--category", "brick"], prepared)
    _wait_for(
        lambda: _lock_file(prepared).is_file() and _lock_file(prepared).read_text().strip() == str(first.pid),
        120,
        "the first trainer's lock",
    )
    second = subprocess.run(
        [OESDN, "train-ae", "--category", "brick"],
        cwd=prepared,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert second.returncode == 2, second.stderr
    assert f"PID {first.pid}" in second.stderr and str(_lock_file(prepared)) in second.stderr, second.stderr
    assert "oesdn train-ae: error: the ae training checkpoint" in second.stderr and "Traceback" not in second.stderr
    assert first.poll() is None and _lock_file(prepared).read_text().strip() == str(first.pid)  # the first one is untouched


def _kill_pid(process: subprocess.Popen[str]) -> None:
    os.kill(process.pid, signal.SIGTERM)  # what `kill PID`, systemd or a CI timeout sends


def _ctrl_c(process: subprocess.Popen[str]) -> None:
    """What a terminal sends: SIGINT to the whole foreground group, once."""
    os.killpg(process.pid, signal.SIGINT)


def _kill_9(process: subprocess.Popen[str]) -> None:
    os.kill(process.pid, signal.SIGKILL)  # nothing in `oesdn run` gets to clean up: the kernel must


@pytest.mark.parametrize("stop", [_kill_pid, _ctrl_c, _kill_9], ids=["sigterm", "ctrl-c", "sigkill"])
def test_stopping_oesdn_run_stops_its_prefect_server_dvc_and_trainer(
    prepared: Path, started: list[subprocess.Popen[str]], stop: Callable[[subprocess.Popen[str]], None]
) -> None:
    oesdn_run = _start(started, [OESDN, "run"], prepared)
    trainer = _training(prepared, oesdn_run.pid)
    family = [p for p in psutil.Process(oesdn_run.pid).children(recursive=True) if _alive(p.pid)]
    assert any(_cmdline_has(p, "prefect server start") for p in family), "the Prefect server runs under `oesdn run`"
    assert any(_cmdline_has(p, "dvc") for p in family) and trainer in family
    stopped = time.monotonic()
    stop(oesdn_run)
    oesdn_run.wait(timeout=60)  # one Ctrl-C is enough: Prefect reports the interrupted run to a live server
    exited = time.monotonic() - stopped
    _wait_for(lambda: not any(_alive(p.pid) for p in family), 15, f"{[p.pid for p in family if _alive(p.pid)]} to exit")
    print(
        f"{stop.__name__}: `oesdn run` exited after {exited:.1f} s, its {len(family)} processes gone after {time.monotonic() - stopped:.1f} s"
    )
    assert oesdn_run.returncode != 0
    if stop is not _kill_9:
        assert "send it again to exit at once" in _log_tail(prepared) and "Traceback" not in _log_tail(prepared)


def _side_by_side_long_training(params: dict[str, Any]) -> None:
    _long_training(params)
    params["categories"] = {name: {} for name in ("brick", "grass", "gravel")}
    params["bundled"]["categories"] = ["brick", "grass", "gravel"]
    params["orchestration"]["parallel_stages"] = 2


def test_ctrl_c_stops_categories_side_by_side_and_starts_no_waiting_stage(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    """Three categories on two slots: Ctrl-C while two AEs train stops both, and the third category,
    waiting for a slot, never starts its stage; nothing of the run is left once it exits."""
    project = _new_project(tmp_path, _side_by_side_long_training)
    oesdn_run = _start(started, [OESDN, "run"], project)

    def two_trainers() -> list[psutil.Process] | None:
        try:
            family = psutil.Process(oesdn_run.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        trainers = [p for p in family if _cmdline_has(p, "oesdn train-ae") and not _cmdline_has(p, "sh -c")]
        return trainers if len(trainers) == 2 else None

    trainers = _wait_for(two_trainers, 420, lambda: f"two trainers side by side\n{_log_tail(project)}")
    stopped = time.monotonic()
    _ctrl_c(oesdn_run)
    oesdn_run.wait(timeout=60)
    print(f"`oesdn run` with two stages running exited {time.monotonic() - stopped:.1f} s after one Ctrl-C")
    assert oesdn_run.returncode != 0
    assert not any(_alive(t.pid) for t in trainers)
    time.sleep(5)  # a stage started by a category that was waiting would show up by now
    left = [p for p in psutil.process_iter() if _cmdline_has(p, "oesdn ") and _cwd(p) == project]
    assert not left, [p.cmdline() for p in left]
    assert "send it again to exit at once" in _log_tail(project) and "Traceback" not in _log_tail(project)


def _cwd(process: psutil.Process) -> Path | None:
    try:
        return Path(process.cwd())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


# --- B: an MLflow or S3 server that is down or hangs is a bounded, clear failure ---------------------


@pytest.fixture
def plain_folder(tmp_path: Path, project_params: dict[str, Any]) -> Path:
    """A folder holding only tiny params: the run must stop before it needs anything else."""
    write_params(tmp_path / "params.yaml", tiny_params(project_params))
    return tmp_path


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts connections and never answers: a hung server, the worst case for timeouts."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def _timed_oesdn(args: list[str], cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run([OESDN, *args], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=300, check=False)
    return result, time.monotonic() - started


def test_oesdn_run_with_mlflow_down_fails_fast_naming_the_uri_and_the_params(plain_folder: Path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    result, seconds = _timed_oesdn(["run"], plain_folder, MLFLOW_TRACKING_URI=uri)
    print(f"oesdn run, MLflow down (connection refused), default params: failed after {seconds:.1f} s")
    assert result.returncode == 1
    assert (
        f"the MLflow tracking server {uri} is unreachable" in result.stderr and "tracking.http_timeout_seconds" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not (plain_folder / ".prefect").exists() and not (plain_folder / "mlflow.db").exists()  # nothing was started
    assert seconds < 120


def test_oesdn_run_with_mlflow_hung_waits_only_as_long_as_the_params_allow(plain_folder: Path, silent_server: str) -> None:
    params = yaml.safe_load((plain_folder / "params.yaml").read_text())
    params["tracking"].update(http_timeout_seconds=2, http_max_retries=1, http_backoff_factor=1)
    write_params(plain_folder / "params.yaml", params)
    result, seconds = _timed_oesdn(["run"], plain_folder, MLFLOW_TRACKING_URI=silent_server)
    print(f"oesdn run, MLflow hung, timeout 2 s x 2 attempts + 1 s backoff: failed after {seconds:.1f} s")
    assert result.returncode == 1 and f"{silent_server} is unreachable" in result.stderr and "2 attempts" in result.stderr
    assert 5 <= seconds < 120


def test_mlflow_client_calls_are_bounded_by_the_params(
    silent_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from components.config import TrackingConfig
    from components.tracking.store import configure

    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(name, raising=False)  # configure sets them; monkeypatch restores them afterwards
    monkeypatch.setenv("MLFLOW_TRACKING_URI", silent_server)
    configure(tmp_path, TrackingConfig(http_timeout_seconds=2, http_max_retries=1, http_backoff_factor=1))
    started = time.monotonic()
    with pytest.raises(Exception, match="(?i)timed? ?out|max retries"):
        MlflowClient().search_experiments()
    seconds = time.monotonic() - started
    print(f"one MLflow client call against a hung server, timeout 2 s, 1 retry: {seconds:.1f} s")
    assert seconds < 120


def _prepare_from_s3(
    folder: Path, endpoint: str, storage: dict[str, float] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """`oesdn prepare` with `data.root` on S3 at `endpoint` (and `storage` bounds, if given), timed."""
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["data"]["root"] = "s3://factory/images"
    if storage is not None:
        params["storage"] = storage
    write_params(folder / "params.yaml", params)
    credentials = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_EC2_METADATA_DISABLED": "true"}
    return _timed_oesdn(["prepare", "--category", "brick"], folder, OESDN_S3_ENDPOINT_URL=endpoint, **credentials)


def test_prepare_with_s3_down_fails_naming_the_endpoint(plain_folder: Path) -> None:
    endpoint = f"http://127.0.0.1:{_free_port()}"
    result, seconds = _prepare_from_s3(plain_folder, endpoint)
    print(f"oesdn prepare, S3 down (connection refused), default S3 settings: failed after {seconds:.1f} s")
    assert result.returncode == 2 and endpoint in result.stderr and "test-secret" not in result.stderr + result.stdout
    assert not (plain_folder / "data").exists()
    assert seconds < 120


def test_prepare_with_s3_hung_fails_within_the_storage_bounds_in_params(plain_folder: Path) -> None:
    """An endpoint that accepts connections and never answers: `storage.*` in params.yaml bounds the wait."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # the kernel completes the handshakes; nobody ever reads or answers
        endpoint = f"http://127.0.0.1:{hung.getsockname()[1]}"
        bounds = {"connect_timeout_seconds": 1, "read_timeout_seconds": 1, "max_attempts": 2}
        result, seconds = _prepare_from_s3(plain_folder, endpoint, bounds)
    print(f"oesdn prepare, S3 hung, storage: 1 s read timeout x 2 attempts: failed after {seconds:.1f} s")
    assert result.returncode == 2 and endpoint in result.stderr and "test-secret" not in result.stderr + result.stdout
    assert seconds < 30, "the default bounds (20 s x 3 attempts) would take about a minute"


# --- C: stage outcomes come from DVC's state: a run-cache restore still evaluates and registers -----


@pytest.fixture
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


def _set_sdn_epochs(project: Path, epochs: int) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["sdn"]["epochs"] = epochs
    write_params(project / "params.yaml", params)


def test_switching_back_to_a_cached_configuration_restores_evaluates_and_registers(
    tmp_path: Path, prefect_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.dvc_runner import RESTORED, stale_stages
    from pipelines.flows import train_all

    monkeypatch.setenv("OESDN_NO_PROGRESS", "1")
    project = _new_project(tmp_path)
    first_run, seconds = _timed_oesdn(["run"], project)  # the user's entry point, with its own Prefect server
    print(f"oesdn run on a tiny project: {seconds:.0f} s")
    assert first_run.returncode == 0, first_run.stdout[-3000:] + first_run.stderr[-3000:]
    ending = first_run.stdout.splitlines()
    assert any(line.startswith("brick: v1 first_champion |") and "false alarms" in line and "recall" in line for line in ending)
    assert ending[-1].startswith("look at: reports/<category>/index.html")
    assert any(
        re.fullmatch(r"difference blur chosen on the label-free check: brick σ (2|0 \(map: σ 0 \+ 2\))", line) for line in ending
    )
    port = re.search(r"PREFECT_API_URL=http://127\.0\.0\.1:(\d+)/api", (project / ".prefect" / "server.log").read_text())
    assert port, "oesdn run's own Prefect server logs where it listens"
    server = f"prefect server start --host 127.0.0.1 --port {port.group(1)} "
    assert not [p for p in psutil.process_iter() if _cmdline_has(p, server)]  # and it is gone
    summary, evaluation = ((project / name).read_text() for name in ("reports/summary.json", "evaluations/brick.json"))
    _set_sdn_epochs(project, 3)
    changed = train_all(["brick"], str(project))
    assert changed["brick"]["registration"]["version"] == "2"
    _set_sdn_epochs(project, 2)  # back to the first configuration: DVC has every output of it in its run cache

    state = train_all(["brick"], str(project), return_state=True)

    assert state.is_completed(), state.message
    stages = {s["stage"]: s for s in state.result()["brick"]["stages"]}
    assert stages["train_sdn@brick"]["outcome"] == RESTORED and stages["train_sdn@brick"]["ran"]
    assert stages["evaluate@brick"]["ran"], "evaluate is brought up to date after a restore upstream"
    registration = state.result()["brick"]["registration"]
    assert registration["version"] == "1" and not registration["created"]
    assert (project / "reports" / "summary.json").read_text() == summary  # the summary is the first configuration's again
    assert (project / "evaluations" / "brick.json").read_text() == evaluation
    assert not stale_stages(project)  # dvc.lock describes the workspace: nothing is left to do
