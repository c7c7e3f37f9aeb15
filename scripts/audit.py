"""CI's dependency audit: `pip check`, then pip-audit on requirements.lock, believed only where it audited.

pip-audit prints "No known vulnerabilities found" even when its vulnerability service answered for
no package at all (each one skipped as "not found on PyPI"), and crashes with a traceback when the
service's host does not resolve. This script reads pip-audit's JSON instead and says which it was:

- vulnerabilities found, or `pip check` finds broken requirements: exit 1, naming them;
- the audit could not run (pip-audit missing, crashed, or no package audited): one line
  "dependency audit could not run: <reason>", exit 0, or 1 with AUDIT_STRICT=1;
- otherwise how many locked packages were audited, and which could not be.

pip-audit is not pinned in requirements.lock: the offline package index CI installs from lacks
it. Set PIP_AUDIT to its executable, or put it on PATH, where the service is reachable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
AUDIT_TIMEOUT_S = 900
"""The whole pip-audit run; each request to the service is bounded by `--timeout` as well."""


class CouldNotRun(Exception):
    """The audit produced no verdict; the message says why."""


def main() -> int:
    broken = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False)
    if broken.returncode != 0:
        print(f"dependency audit: broken requirements (pip check):\n{broken.stdout}{broken.stderr}", end="")
        return 1
    try:
        report = run_pip_audit(find_pip_audit())
        return verdict(report)
    except CouldNotRun as reason:
        print(f"dependency audit could not run: {reason}")
        return 1 if os.environ.get("AUDIT_STRICT") == "1" else 0


def find_pip_audit() -> str:
    found = os.environ.get("PIP_AUDIT") or shutil.which(
        "pip-audit", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if not found:
        raise CouldNotRun("pip-audit is not installed (the offline package index lacks it); set PIP_AUDIT or put it on PATH")
    return found


def run_pip_audit(executable: str) -> dict[str, Any]:
    """pip-audit's JSON report on the lock file; pip-audit exits 1 when it finds vulnerabilities."""
    command = [
        executable,
        "-r",
        str(LOCK),
        "--no-deps",
        "--disable-pip",
        "--progress-spinner",
        "off",
        "--timeout",
        "15",
        "-f",
        "json",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=AUDIT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise CouldNotRun(f"pip-audit did not finish within {AUDIT_TIMEOUT_S} s") from None
    except OSError as error:
        raise CouldNotRun(f"cannot start {executable} ({error.strerror or error})") from None
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CouldNotRun(f"pip-audit failed (exit {done.returncode}): {last[:500]}") from None


def verdict(report: dict[str, Any]) -> int:
    dependencies = report.get("dependencies", [])
    skipped = [d for d in dependencies if "skip_reason" in d]
    audited = [d for d in dependencies if "skip_reason" not in d]
    if not audited:
        example = f" (e.g. {skipped[0]['skip_reason']})" if skipped else ""
        raise CouldNotRun(f"the vulnerability service answered for none of the {len(dependencies)} locked packages{example}")
    vulnerable = [d for d in audited if d.get("vulns")]
    for dependency in vulnerable:
        ids = ", ".join(
            f"{v['id']} (fixed in {', '.join(v.get('fix_versions') or ['no release yet'])})" for v in dependency["vulns"]
        )
        print(f"dependency audit: {dependency['name']} {dependency['version']}: {ids}")
    not_audited = f"; not audited: {', '.join(sorted(d['name'] for d in skipped))}" if skipped else ""
    if vulnerable:
        print(f"dependency audit: {len(vulnerable)} of {len(audited)} audited packages have known vulnerabilities{not_audited}")
        return 1
    print(
        f"dependency audit: {len(audited)} of {len(dependencies)} locked packages audited, none with a known vulnerability{not_audited}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
