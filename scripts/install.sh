#!/usr/bin/env bash
# Install rlcompress and its test tools without ever letting pip pick a CUDA build of torch.
# torch is installed first, on its own: an existing torch is kept; otherwise a local CPU wheel
# (found through pip's configured find-links, as on the project machines) is used; otherwise
# PyTorch's CPU index. Once torch is present, the lower bound in pyproject.toml pulls nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  wheels=$(mktemp -d)
  if "$PY" -m pip download -q --no-deps --no-index torch==2.13.0 -d "$wheels" 2>/dev/null; then
    "$PY" -m pip install -q "$wheels"/torch-*.whl
  else
    "$PY" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
  rm -rf "$wheels"
fi
"$PY" -m pip install -q -e ".[dev,bench,peers,onnx,coreml]"
"$PY" -c "import torch, rlcompress; print('rlcompress ready; torch', torch.__version__)"
