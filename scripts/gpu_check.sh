#!/usr/bin/env bash
# The `gpu` tests on a GPU machine, which may have torch and transformers but neither Ray nor vLLM
# nor registry access:
#   scripts/gpu_check.sh [WHEEL_DIR]
# WHEEL_DIR (optional): wheels to install offline first (pip --no-index --find-links), e.g. the
# small pure-Python ones this repository needs beside torch/transformers (pydantic, pyyaml,
# open_clip_torch, timm, ...). A test whose module is missing skips and says which; nothing here
# downloads. The summary goes to stdout and, when $OUT is set, to $OUT/gpu_check.txt.
set -u
cd "$(dirname "$0")/.."
WHEELS="${1:-}"
PY="${PYTHON:-python}"
log() { echo "[gpu_check] $*"; }

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  log "no CUDA GPU visible to torch: the gpu tests would all skip; nothing to run"
  exit 0
fi
"$PY" -c "import torch; print('[gpu_check] torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())"

if [ -n "$WHEELS" ]; then
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    log "installing the wheels in $WHEELS (offline)"
    "$PY" -m pip install --no-index --find-links "$WHEELS" "$WHEELS"/*.whl \
      || log "some wheels did not install: the tests that need them skip"
  else
    log "$WHEELS has no wheels"
  fi
fi

for m in pytest pydantic yaml transformers open_clip timm pyarrow ray deepspeed faiss vllm; do
  if "$PY" -c "import $m" 2>/dev/null; then log "have $m"; else log "missing $m (its tests skip)"; fi
done
if ! "$PY" -c "import pytest, pydantic, yaml" 2>/dev/null; then
  log "pytest, pydantic and pyyaml are needed to run any test: give their wheels as WHEEL_DIR"
  exit 2
fi

out="${OUT:-}"
report=$(mktemp)
PYTHONPATH=. "$PY" -m pytest -m gpu tests/unit/gpu tests/unit/models/test_clip_device.py \
  -p no:cacheprovider -o addopts="" -rA --strict-markers -q 2>&1 | tee "$report"
rc=${PIPESTATUS[0]}
if [ -n "$out" ]; then mkdir -p "$out" && cp "$report" "$out/gpu_check.txt"; fi
log "pytest exit status $rc"
exit "$rc"
