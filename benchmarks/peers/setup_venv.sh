#!/usr/bin/env bash
# Make benchmarks/peers/.venv: a separate Python 3.11 venv for the anomalib peer benchmark
# (run_peers.py). It is kept out of the project's own .venv, requirements.lock and CI.
# Idempotent: a second run with nothing changed checks the stamp and exits in about a second.
#
#   bash benchmarks/peers/setup_venv.sh
#
# torch/torchvision are the default (CUDA 13) builds, ~5.5 GB; the benchmark itself runs on CPU.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.peers-requirements"

TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
# anomalib 2.7.0 is what pip resolves for anomalib==2.7.*; the rest are the versions it resolved
# with (2.7.0's own requirements are open ranges), pinned so that reruns measure the same code.
PEER_PINS=(
  anomalib==2.7.0
  lightning==2.6.6
  pytorch-lightning==2.6.6
  lightning-utilities==0.15.3
  torchmetrics==1.9.0
  timm==1.0.31
  FrEIA==0.2
  kornia==0.9.0
  einops==0.8.2
  numpy==2.4.6
  scipy==1.17.1
  scikit-learn==1.9.1
  scikit-image==0.26.0
  pillow==13.0.0
  opencv-python-headless==5.0.0.93
  jsonargparse==4.46.0
  omegaconf==2.4.0
  huggingface_hub==2.4.0
)
WANT="$(printf '%s\n' "${TORCH_PINS[@]}" "${PEER_PINS[@]}")"

healthy() {
  [ -x "$PY" ] && "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null
}

if healthy && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] \
   && OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES= "$PY" -c 'import anomalib, lightning, torch, torchvision
print("benchmarks/peers/.venv is up to date: anomalib", anomalib.__version__)' 2>/dev/null; then
  exit 0
fi

if ! healthy; then
  rm -rf "$VENV"
  python3.11 -m venv "$VENV"
fi
rm -f "$STAMP"
"$PY" -m pip install --disable-pip-version-check "${TORCH_PINS[@]}"
"$PY" -m pip install --disable-pip-version-check "${TORCH_PINS[@]}" "${PEER_PINS[@]}"
OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES= "$PY" -c '
import anomalib, lightning, timm, torch, torchvision
print("benchmarks/peers/.venv ready: anomalib", anomalib.__version__, "| lightning", lightning.__version__,
      "| torch", torch.__version__, "| torchvision", torchvision.__version__, "| timm", timm.__version__)'
printf '%s\n' "$WANT" > "$STAMP"
