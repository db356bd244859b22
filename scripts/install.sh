#!/usr/bin/env bash
# Install rlcompress and its test tools without ever letting pip pick a CUDA build of torch.
# torch is installed first, on its own: an existing torch is kept; otherwise a local CPU wheel
# (pip's find-links, as on the project machines) is preferred, then PyTorch's CPU index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index torch==2.13.0 2>/dev/null \
    || "$PY" -m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    || "$PY" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
# torch is already satisfied here, so its lower bound in pyproject.toml pulls nothing more.
"$PY" -m pip install -q -e ".[dev]"
"$PY" -c "import torch, rlcompress; print('rlcompress ready; torch', torch.__version__)"
