"""S3 storage: settings from the environment, the verified incremental sync, clear errors without secrets.

Unit tests use moto (in process, or its threaded server for the `oesdn prepare` subprocess). The
integration test goes through the real local stack (`scripts/stack.sh start`, SeaweedFS + MLflow +
Prefect): pipeline on S3 data with the DVC remote and MLflow artifacts in S3, `dvc pull` restoring
byte-identical outputs, the registered pyfunc loaded through the server, and bad credentials and an
unreachable endpoint failing clearly with nothing registered. `.ci/run` starts the stack and sets
OESDN_TEST_STACK_ENV to its client environment file.
"""

from __future__ import annotations

import hashlib
import math
import os
import shlex
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

from components.storage import S3Settings, StorageError, parse_s3_uri, resolve_data_root, sync_prefix
from components.storage.sync import etag_matches
from tests.conftest import PROJECT_ROOT, missing_env, needs, tiny_params, write_params

SECRET = "s3cr3t-value-that-must-never-be-printed"
BIN = Path(sys.executable).parent


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "OESDN_S3_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def s3(aws_env: None) -> Iterator[Any]:
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="data")
        yield client


def put_tree(client: Any, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    for relative, body in files.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{relative}", Body=body)


FILES = {"train/good/000.png": b"a" * 100, "train/good/001.png": b"b" * 200, "test/crack/000.png": b"c" * 50}


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


class CountingClient:
    """A real client that counts get_object calls and can fake one error or a wrong ETag."""

    def __init__(self, client: Any, fail: dict[str, str] | None = None, etag: str | None = None) -> None:
        self.client, self.gets, self.fail, self.etag = client, 0, fail or {}, etag

    def get_paginator(self, name: str) -> Any:
        paginator = self.client.get_paginator(name)
        etag = self.etag

        class Wrapped:
            def paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
                for page in paginator.paginate(**kwargs):
                    if etag:
                        page = {**page, "Contents": [{**o, "ETag": etag} for o in page.get("Contents", [])]}
                    yield page

        return Wrapped()

    def get_object(self, **kwargs: Any) -> Any:
        self.gets += 1
        code = self.fail.get(kwargs["Key"])
        if code:
            raise ClientError({"Error": {"Code": code, "Message": f"denied, secret {SECRET}"}}, "GetObject")
        return self.client.get_object(**kwargs)


# --- settings --------------------------------------------------------------------------------------


def test_settings_come_from_the_environment_and_hide_the_secret() -> None:
    env = {
        "AWS_ENDPOINT_URL": "http://a:1",
        "OESDN_S3_ENDPOINT_URL": "http://b:2",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": SECRET,
    }
    settings = S3Settings.from_env(env)
    assert settings.endpoint_url == "http://b:2"  # the project's own variable wins
    assert settings.region == "us-east-1" and settings.secrets() == (SECRET,)
    assert SECRET not in repr(settings) and "k" != settings.where
    with pytest.raises(StorageError, match="AWS_SECRET_ACCESS_KEY is not set"):
        S3Settings.from_env({"AWS_ACCESS_KEY_ID": "k"})
    assert parse_s3_uri("s3://bucket/a/b/") == ("bucket", "a/b")
    with pytest.raises(StorageError, match="names no bucket"):
        parse_s3_uri("s3:///x")


# --- sync ------------------------------------------------------------------------------------------


def test_sync_downloads_only_changed_objects_and_mirrors_deletions(s3: Any, tmp_path: Path) -> None:
    put_tree(s3, "data", "mvtec/brick", FILES)
    target = tmp_path / "brick"
    counting = CountingClient(s3)
    report = sync_prefix("s3://data/mvtec/brick", target, client=counting, progress=False)
    assert tree(target) == FILES and counting.gets == 3 and report.unchanged == 0
    assert not list(tmp_path.glob("**/*.tmp"))

    again = sync_prefix("s3://data/mvtec/brick", target, client=counting, progress=False)
    assert counting.gets == 3 and again.unchanged == 3 and not again.downloaded

    s3.put_object(Bucket="data", Key="mvtec/brick/train/good/001.png", Body=b"B" * 200)  # same size, new content
    s3.delete_object(Bucket="data", Key="mvtec/brick/test/crack/000.png")
    (target / "stray.txt").write_text("not in the bucket")
    third = sync_prefix("s3://data/mvtec/brick", target, client=counting, progress=False)
    assert third.downloaded == ["train/good/001.png"] and counting.gets == 4
    assert sorted(third.removed) == ["stray.txt", "test/crack/000.png"]
    assert tree(target) == {"train/good/000.png": b"a" * 100, "train/good/001.png": b"B" * 200}


def test_a_local_file_edited_behind_the_sync_is_fetched_again(s3: Any, tmp_path: Path) -> None:
    put_tree(s3, "data", "p", FILES)
    target = tmp_path / "c"
    sync_prefix("s3://data/p", target, client=s3, progress=False)
    (target / "train/good/000.png").write_bytes(b"z" * 100)  # same size, other bytes, new mtime
    report = sync_prefix("s3://data/p", target, client=s3, progress=False)
    assert report.downloaded == ["train/good/000.png"] and tree(target) == FILES


def test_a_download_that_does_not_match_its_etag_is_rejected_and_not_kept(s3: Any, tmp_path: Path) -> None:
    put_tree(s3, "data", "p", {"a.png": b"abc"})
    wrong = CountingClient(s3, etag='"' + "0" * 32 + '"')
    with pytest.raises(StorageError, match=r"s3://data/p/a.png: the downloaded bytes do not match"):
        sync_prefix("s3://data/p", tmp_path / "t", client=wrong, progress=False)
    assert not (tmp_path / "t" / "a.png").exists() and not list(tmp_path.rglob("*.tmp"))


def test_multipart_etags_are_verified(s3: Any, tmp_path: Path) -> None:
    from boto3.s3.transfer import TransferConfig

    body = os.urandom(11 * 1024 * 1024)
    source = tmp_path / "big.bin"
    source.write_bytes(body)
    s3.upload_file(
        str(source), "data", "big/x/big.bin", Config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    )
    etag = s3.head_object(Bucket="data", Key="big/x/big.bin")["ETag"].strip('"')
    assert etag.endswith("-3")
    assert etag_matches(source, etag) is True
    assert etag_matches(source, etag.replace(etag[0], "f" if etag[0] != "f" else "e", 1)) is None  # unverifiable, not "equal"
    report = sync_prefix("s3://data/big/x", tmp_path / "copy", client=s3, progress=False)
    assert report.downloaded == ["big.bin"] and not report.size_only
    assert (tmp_path / "copy" / "big.bin").read_bytes() == body


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("AccessDenied", r"access denied to s3://data/p/train/good/001.png"),
        ("NoSuchKey", r"object s3://data/p/train/good/001.png is missing"),
        ("SignatureDoesNotMatch", r"rejected the credentials: AWS_SECRET_ACCESS_KEY does not match"),
        ("InvalidAccessKeyId", r"does not know the access key in AWS_ACCESS_KEY_ID"),
    ],
)
def test_object_errors_name_the_object_and_never_the_secret(s3: Any, tmp_path: Path, code: str, expected: str) -> None:
    put_tree(s3, "data", "p", FILES)
    failing = CountingClient(s3, fail={"p/train/good/001.png": code})
    with pytest.raises(StorageError, match=expected) as caught:
        sync_prefix("s3://data/p", tmp_path / "t", client=failing, progress=False)
    assert SECRET not in str(caught.value)


def test_missing_bucket_empty_prefix_and_unreachable_endpoint(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StorageError, match="bucket of s3://nope/x/ does not exist"):
        sync_prefix("s3://nope/x", tmp_path / "a", client=s3, progress=False)
    with pytest.raises(StorageError, match=r"no objects under s3://data/empty/"):
        sync_prefix("s3://data/empty", tmp_path / "b", client=s3, progress=False)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = S3Settings(
        endpoint_url=f"http://127.0.0.1:{port}", access_key_id="k", secret_access_key=SECRET, connect_timeout=1, max_attempts=1
    )
    with pytest.raises(StorageError, match=rf"cannot reach the S3 endpoint http://127.0.0.1:{port} for s3://data/p/") as caught:
        sync_prefix("s3://data/p", tmp_path / "c", settings=settings, progress=False)
    assert SECRET not in str(caught.value)


def test_resolve_data_root_keeps_local_paths_and_syncs_s3_roots(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_data_root("data/bundled", "brick") == Path("data/bundled")
    put_tree(s3, "data", "sets/mvtec/brick", FILES)
    monkeypatch.setenv("OESDN_DATA_CACHE", str(tmp_path / "cache"))
    root = resolve_data_root("s3://data/sets/mvtec/", "brick", progress=False)
    assert root == tmp_path / "cache" / "data" / "sets/mvtec" and tree(root / "brick") == FILES


# --- the prepare stage on an S3 root (moto's server, since `oesdn` runs in a subprocess) -------------


@pytest.fixture
def moto_server(aws_env: None) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_oesdn_prepare_reads_an_s3_root_and_reports_denied_access_clearly(
    moto_server: str, tmp_path: Path, project_params: dict[str, Any]
) -> None:
    from tests.test_cli import oesdn

    params = tiny_params(project_params)
    write_params(tmp_path / "params.yaml", params)
    oesdn("--no-progress", "generate", cwd=tmp_path)
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    client.create_bucket(Bucket="datasets")
    local = tmp_path / "data" / "bundled"
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.upload_file(str(path), "datasets", f"mvtec/{path.relative_to(local).as_posix()}")
    params["data"]["root"] = "s3://datasets/mvtec"
    write_params(tmp_path / "params.yaml", params)
    env = {**os.environ, "OESDN_S3_ENDPOINT_URL": moto_server, "OESDN_DATA_CACHE": str(tmp_path / "cache")}
    first = subprocess.run(
        [BIN / "oesdn", "--no-progress", "prepare", "--category", "brick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    assert "s3://datasets/mvtec/brick:" in first.stdout and " 0 unchanged" in first.stdout
    second = subprocess.run(
        [BIN / "oesdn", "--no-progress", "prepare", "--category", "brick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "0 downloaded" in second.stdout, second.stdout
    assert (tmp_path / "data" / "prepared" / "brick" / "manifest.csv").is_file()
    params["data"]["root"] = "s3://missing-bucket/mvtec"
    write_params(tmp_path / "params.yaml", params)
    missing = subprocess.run(
        [BIN / "oesdn", "--no-progress", "prepare", "--category", "brick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert missing.returncode == 2 and "bucket of s3://missing-bucket/mvtec/brick/ does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr and SECRET not in missing.stdout + missing.stderr


# --- integration: the real local stack -------------------------------------------------------------


STACK_MISSING = missing_env("OESDN_TEST_STACK_ENV", "start the stack (scripts/stack.sh start) and point it at its stack.env")


def stack_env() -> dict[str, str]:
    """The client environment `scripts/stack.sh start` wrote; reached without one only under CI (see
    `needs`), where that is a failure."""
    if STACK_MISSING:
        pytest.fail(f"CI must run the stack integration tests: {STACK_MISSING}")
    path = os.environ["OESDN_TEST_STACK_ENV"]
    env = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0] if value else ""
    return env


def sha256_tree(root: Path, parts: tuple[str, ...]) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for part in parts
        for p in sorted((root / part).rglob("*"))
        if p.is_file()
    }


def sh(
    *args: str | Path, cwd: Path, env: dict[str, str], check: bool = True, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def new_project(root: Path, params: dict[str, Any], env: dict[str, str], remote: str | None) -> Path:
    for name in ("components", "pipelines"):
        shutil.copytree(PROJECT_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    write_params(root / "params.yaml", params)
    sh("git", "init", "-q", cwd=root, env=env)
    sh("dvc", "init", "-q", cwd=root, env=env)
    sh("dvc", "config", "core.analytics", "false", cwd=root, env=env)
    if remote:
        sh("dvc", "remote", "add", "-d", "stack", remote, cwd=root, env=env)
    return root


OUTPUTS = ("data/prepared", "models", "reports", "evaluations")


@pytest.mark.integration
@needs(STACK_MISSING)
def test_pipeline_on_the_real_stack_round_trips_through_s3(tmp_path: Path, project_params: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    stack = stack_env()
    run_id = uuid.uuid4().hex[:8]
    base = {
        **os.environ,
        **stack,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "OESDN_DATA_CACHE": str(tmp_path / "cache"),
    }
    # Clients of the MLflow server hold no S3 settings at all: artifacts go through the server.
    mlflow_only = {k: v for k, v in base.items() if not k.startswith(("AWS_", "OESDN_S3_", "MLFLOW_S3_"))}
    s3 = S3Settings.from_env(stack).client()
    data_root = f"{stack['OESDN_DATA_BUCKET']}/{run_id}"
    prefix = f"oesdn-{run_id}-"

    # The dataset lives in S3: generate the bundled one locally and upload it.
    params = tiny_params(project_params)
    params["tracking"]["enabled"] = True
    params["registry"]["model_prefix"] = prefix
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    write_params(scratch / "params.yaml", params)
    sh(BIN / "oesdn", "--no-progress", "generate", cwd=scratch, env=base)
    bucket, key_prefix = parse_s3_uri(data_root)
    local = scratch / "data" / "bundled"
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"{key_prefix}/{path.relative_to(local).as_posix()}")

    # 2. the pipeline for one category, data.root on S3, DVC remote and MLflow artifacts on S3.
    params["data"]["root"] = data_root
    project = new_project(tmp_path / "project", params, base, f"{stack['OESDN_DVC_REMOTE']}/{run_id}")
    repro = sh("dvc", "repro", cwd=project, env=base)
    assert f"{data_root}/brick:" in repro.stdout
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["prepare@brick"]
    assert any(dep["path"] == f"{data_root}/brick" for dep in lock["deps"])  # S3 data is a tracked DVC dependency
    sh("dvc", "push", cwd=project, env=base)
    registered = sh(BIN / "oesdn", "register", "--category", "brick", cwd=project, env=mlflow_only)
    assert "registered version 1" in registered.stdout
    before = sha256_tree(project, OUTPUTS)
    assert len(before) > 10

    # 3-4. delete the DVC cache and the outputs; `dvc pull` restores them byte for byte.
    shutil.rmtree(project / ".dvc" / "cache")
    for part in (*OUTPUTS, "data/bundled"):
        shutil.rmtree(project / part, ignore_errors=True)
    sh("dvc", "pull", cwd=project, env=base)
    assert sha256_tree(project, OUTPUTS) == before
    assert "up to date" in sh("dvc", "status", cwd=project, env=base).stdout

    # 5. the registered pyfunc, loaded through the server with its artifacts fetched from S3.
    client = MlflowClient(tracking_uri=stack["MLFLOW_TRACKING_URI"], registry_uri=stack["MLFLOW_TRACKING_URI"])
    version = client.get_model_version(f"{prefix}brick", "1")
    run_artifacts = client.get_run(version.run_id).info.artifact_uri
    assert run_artifacts.startswith("mlflow-artifacts:")  # proxied: the server, not the client, talks to S3
    stored = s3.list_objects_v2(Bucket="oesdn-mlflow", Prefix="artifacts/").get("KeyCount", 0)
    assert stored > 0
    image = next((tmp_path / "cache").rglob("test/*/*.png"))  # an image of the synced S3 dataset
    probe = (
        "import sys, mlflow, pandas as pd;"
        f"m = mlflow.pyfunc.load_model('models:/{prefix}brick/1');"
        f"out = m.predict(pd.DataFrame({{'path': [{str(image)!r}]}}));"
        "print('SCORE', float(out['pred_score'][0]))"
    )
    loaded = sh(sys.executable, "-c", probe, cwd=tmp_path, env=mlflow_only)
    score = float(loaded.stdout.split("SCORE")[-1])
    assert not math.isnan(score)  # a number, not NaN

    # Bad credentials, then an unreachable endpoint: a clear error, no traceback, nothing registered.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    secret = stack["AWS_SECRET_ACCESS_KEY"]
    cases = {
        "badcreds": ({"AWS_SECRET_ACCESS_KEY": "wrong-" + secret[::-1]}, "rejected the credentials"),
        "unreachable": (
            {"OESDN_S3_ENDPOINT_URL": f"http://127.0.0.1:{closed}", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed}"},
            "cannot reach the S3 endpoint",
        ),
    }
    for name, (override, expected) in cases.items():
        bad_params = {**params, "registry": {**params["registry"], "model_prefix": f"{prefix}{name}-"}}
        bad = new_project(tmp_path / name, bad_params, base, None)
        env = {**base, **override, "OESDN_DATA_CACHE": str(tmp_path / f"cache-{name}")}
        failed = sh(BIN / "oesdn", "--no-progress", "prepare", "--category", "brick", cwd=bad, env=env, check=False)
        output = failed.stdout + failed.stderr
        assert failed.returncode == 2 and expected in output and f"{data_root}/brick" in output, output
        assert "Traceback" not in output and secret not in output and override.get("AWS_SECRET_ACCESS_KEY", secret) not in output
        repro_failed = sh("dvc", "repro", cwd=bad, env=env, check=False, timeout=300)
        assert repro_failed.returncode != 0 and secret not in repro_failed.stdout + repro_failed.stderr
        sh(BIN / "oesdn", "register", "--category", "brick", cwd=bad, env={**mlflow_only}, check=False)
        assert not client.search_registered_models(f"name LIKE '{prefix}{name}-%'")
