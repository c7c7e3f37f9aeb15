#!/usr/bin/env bash
# Create .venv with the locked dependencies and the project installed (editable). Idempotent.
# Needs Python 3.11 and pip's access to PyPI; torch resolves to the CPU build pinned in the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.lock
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
# DVC needs a git repository; a source archive (no .git) becomes one here.
[ -d .git ] || git init --quiet
echo "environment ready: . .venv/bin/activate"
