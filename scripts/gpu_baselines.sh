#!/usr/bin/env bash
# Train the two clean baselines from scratch on one GPU (the `device` machine), both at once,
# without a test pass (the device's copy of the data keeps few test images: measure the result
# here with `python scripts/scratch_baseline.py RUN_DIR`),
# each within a wall-clock budget (the run fixes its epochs after the second one, see
# TrainConfig.time_budget). Run directories are snapshotted to OUTDIR as they go, so a call cut
# short still brings back the last epochs (resume them anywhere with `rlcompress train ... --resume`).
# Usage: bash scripts/gpu_baselines.sh OUTDIR BUDGET_SECONDS [extra `rlcompress train` options]
# Env: DEVICE (cuda), SOURCE (dataset; default: the shared CIFAR-10 export), MODELS,
#   CALL_SECONDS: stop the trainings after this many seconds (a budget longer than one call:
#     the snapshots keep the last finished epoch),
#   RESUME: a folder with the scratch-<model>.tar.gz snapshots of an earlier call to continue
#     (carry it to the device machine in an ignored folder; same BUDGET_SECONDS and options),
#   EPOCHS: the most epochs (300), COMPILE: torch.compile mode (reduce-overhead: CUDA graphs,
#     since these small networks are bound by kernel launches on a GPU; empty: eager). A compiled
#     run that fails after its first step resumes eagerly in the time left.
# Preparing a device call (the repository travels, ../shared does not, and the whole tree must
# stay under 64 MiB, which the .tar.gz overruns beside the committed files):
#   printf '/.whl/\n/.devdata/\n' >> .git/info/exclude
#   python scripts/devdata.py --check   # every training image, 10 test images per class, .tar.xz
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl gymnasium==1.4.0 farama-notifications
# then run with carry [".devdata", ".whl"] and SOURCE=$PWD/.devdata/cifar10-jpeg.tar.xz.
# The tracked files alone are ~58 MB (session 22), so the tree overran 64 MiB with the data:
#   rm -rf results/bench/*_files results/paper_tables   # before the call (no training reads them)
#   git checkout -- results/bench results/paper_tables   # right after it
# A call brings back at most 8 files from $OUT (none more than two folders down): each model
# here leaves two (its log and its snapshot), so at most four recipes per call, and nothing
# else written there (session 22 lost a finished ResNet-32 snapshot as the ninth file).
# Several recipes at once (compared on validation), e.g. ResNet-20 distilled from the ResNet-32
# baseline: for v in "kd5 --teacher resnet32 --distill 0.5" "c8 --cutout 8"; do set -- $v;
#   n=$1; shift; MODELS=resnet20 bash scripts/gpu_baselines.sh $OUT/$n 380 "$@" & done; wait
set -uo pipefail
out=${1:?OUTDIR}; budget=${2:?BUDGET_SECONDS}; shift 2
mkdir -p "$out"
source scripts/device_env.sh
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
runs=$(mktemp -d)
src=()
[ -n "${SOURCE:-}" ] && src=(--source "$SOURCE")
start=$(date +%s)
deadline=$((start + ${CALL_SECONDS:-0}))
limited() {  # run "$@" under what is left of CALL_SECONDS (if set)
  if [ "${CALL_SECONDS:-0}" = 0 ]; then "$@"; else
    timeout --signal=TERM "$(time_left)" "$@"; fi
}
compile=()
[ -n "${COMPILE-reduce-overhead}" ] && compile=(--compile --compile-mode "${COMPILE-reduce-overhead}")
train_one() {
  local m=$1 resume=()
  if [ -n "${RESUME:-}" ] && [ -f "$RESUME/scratch-$m.tar.gz" ]; then
    tar -C "$runs" -xzf "$RESUME/scratch-$m.tar.gz" && resume=(--resume)
  fi
  local args=(--model "$m" --out "$runs/scratch-$m" --epochs "${EPOCHS:-300}"
    --lr 0.2 --batch-size 256 --schedule cosine --warmup 0.02 --weight-decay 5e-4 --cutout 16
    --device "${DEVICE:-cuda}" --threads 2 --quiet --no-test --time-budget "$budget"
    --data-dir "$runs/data-$m" "${src[@]}")
  limited python3 -m rlcompress train "${args[@]}" "${resume[@]}" "${compile[@]}" \
    "${extra[@]}" >> "$out/$m.log" 2>&1
  local rc=$?
  if [ $rc != 0 ] && [ $rc != 124 ] && [ ${#compile[@]} != 0 ] \
      && [ ! -f "$runs/scratch-$m/summary.json" ]; then
    echo "compiled training failed (exit $rc): resuming eagerly" >> "$out/$m.log"
    limited python3 -m rlcompress train "${args[@]}" --resume --no-compile "${extra[@]}" \
      >> "$out/$m.log" 2>&1
  fi
}
extra=("$@")
for m in ${MODELS:-resnet20 resnet32}; do
  train_one "$m" &
done
snapshot() {
  for d in "$runs"/scratch-*; do
    [ -d "$d" ] || continue
    n=$(basename "$d")
    tar -C "$runs" -czf "$out/$n.tar.gz.tmp" --exclude='*.tmp' "$n" 2>/dev/null \
      && mv "$out/$n.tar.gz.tmp" "$out/$n.tar.gz"
  done
}
i=0
while [ -n "$(jobs -rp)" ]; do sleep 5; i=$((i + 1)); [ $((i % 6)) = 0 ] && snapshot; done
wait
snapshot
tail -n 3 "$out"/*.log
for d in "$runs"/scratch-*; do echo "$d"; tail -n 4 "$d/metrics.csv"; done
for d in "$runs"/scratch-*; do [ -f "$d/summary.json" ] && cat "$d/summary.json"; done
