#!/usr/bin/env bash
# Regenerates every parity fixture under tests/fixtures/parity/ (or $1): pinned sources, one thread, offline, fixed seeds.
# Needs git and Debian's python3-torch 1.13.1 (+ python3-numpy python3-regex python3-filelock python3-packaging
# python3-yaml python3-tqdm python3-requests python3-importlib-metadata python3-pil); PYTHON overrides the interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PARITY_CACHE="${PARITY_CACHE:-$ROOT/.cache/parity}"
SITE="$("$ROOT/tools/parity/setup_deps.sh" | tail -n 1)"
OUT="${1:-$ROOT/tests/fixtures/parity}"
export PYTHONPATH="$SITE" PYTHONHASHSEED=0 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
  HF_HOME="$PARITY_CACHE/hf-home" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
  DIFFUSERS_VERBOSITY=error TRANSFORMERS_VERBOSITY=error PYTHONDONTWRITEBYTECODE=1
exec "${PYTHON:-/usr/bin/python3}" -W ignore "$ROOT/tools/parity/generate.py" --out "$OUT"
