"""`scripts/audit.py`, CI's dependency audit, against stand-ins for pip-audit's three outcomes.

Offline, pip-audit skips every package ("not found on PyPI") yet prints "No known vulnerabilities
found"; the script must say it could not run instead, and fail only where AUDIT_STRICT=1 asks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import PROJECT_ROOT

SKIPPED = {"name": "aiobotocore", "skip_reason": "Dependency not found on PyPI and could not be audited: aiobotocore (3.10.0)"}


def fake_pip_audit(tmp_path: Path, stdout: str, stderr: str = "", code: int = 0) -> Path:
    script = tmp_path / "pip-audit"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stdout.write({stdout!r})\nsys.stderr.write({stderr!r})\nsys.exit({code})\n"
    )
    script.chmod(0o755)
    return script


def audit(pip_audit: Path | None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("PIP_AUDIT", "AUDIT_STRICT")}
    environment.update(env, PATH="/usr/bin:/bin", **({"PIP_AUDIT": str(pip_audit)} if pip_audit else {}))
    command = [sys.executable, str(PROJECT_ROOT / "scripts" / "audit.py")]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120, check=False)


def report(*dependencies: dict[str, Any]) -> str:
    return json.dumps({"dependencies": list(dependencies), "fixes": []})


def test_an_unreachable_vulnerability_service_is_reported_as_not_run(tmp_path: Path) -> None:
    fake = fake_pip_audit(tmp_path, report(SKIPPED, {**SKIPPED, "name": "torch"}), "No known vulnerabilities found\n")
    result = audit(fake)
    assert result.returncode == 0
    assert result.stdout.startswith("dependency audit could not run: the vulnerability service answered for none of the 2")
    assert "No known vulnerabilities" not in result.stdout + result.stderr
    assert audit(fake, AUDIT_STRICT="1").returncode == 1


def test_a_crashed_or_missing_pip_audit_is_reported_as_not_run(tmp_path: Path) -> None:
    error = "Traceback (most recent call last):\nrequests.exceptions.ConnectionError: Failed to resolve 'api.osv.dev'\n"
    crashed = audit(fake_pip_audit(tmp_path, "", error, code=1))
    assert crashed.returncode == 0
    assert "could not run: pip-audit failed (exit 1): requests.exceptions.ConnectionError: Failed to resolve" in crashed.stdout
    missing = audit(None, AUDIT_STRICT="1")
    assert missing.returncode == 1 and "could not run: pip-audit is not installed" in missing.stdout


def test_vulnerabilities_fail_and_partly_audited_locks_say_what_was_not_audited(tmp_path: Path) -> None:
    clean = {"name": "pyyaml", "version": "6.0.3", "vulns": []}
    vulnerable = {"name": "jinja2", "version": "3.1.0", "vulns": [{"id": "GHSA-xxxx", "fix_versions": ["3.1.6"]}]}
    found = audit(fake_pip_audit(tmp_path, report(clean, vulnerable, SKIPPED), code=1))
    assert found.returncode == 1
    assert "jinja2 3.1.0: GHSA-xxxx (fixed in 3.1.6)" in found.stdout and "not audited: aiobotocore" in found.stdout
    passed = audit(fake_pip_audit(tmp_path, report(clean, SKIPPED)))
    assert passed.returncode == 0
    assert "1 of 2 locked packages audited, none with a known vulnerability; not audited: aiobotocore" in passed.stdout
