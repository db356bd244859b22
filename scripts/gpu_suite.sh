#!/usr/bin/env bash
# The test suite on the `device` machine, where CUDA is available: every test that leaves the
# device on "auto" (training, evaluation, the loaders) then runs on the GPU. CI never has a GPU,
# so this is how the CUDA paths get checked. Writes OUTDIR/suite.log and OUTDIR/junit.xml.
# Usage: bash scripts/gpu_suite.sh OUTDIR [pytest options, e.g. -k frontier]
# Needs the packages the device image lacks as wheels in .whl/ (carry ".whl"), downloaded here:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_34_x86_64 \
#     -d .whl gymnasium==1.4.0 farama-notifications kmeans1d==0.5.0 ckwrap==1.2.3 \
#     constriction==0.5.0 torch-pruning==1.6.1
# Env: SUITE_SECONDS (420): stop the suite after this long (what ran is in the log).
set -uo pipefail
out=${1:?OUTDIR}; shift
mkdir -p "$out"
source scripts/device_env.sh
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
timeout --signal=INT "${SUITE_SECONDS:-420}" python3 -m pytest -p no:cacheprovider -q \
  -o addopts="" -rfE --junitxml="$out/junit.xml" "$@" 2>&1 | tee "$out/suite.log" | tail -n 40
