#!/usr/bin/env bash
# Save the finished rows and searches of a reproduction run (summaries, .rlc files, search
# records: a few hundred KB) into checkpoints/, so an interrupted reproduction can continue on
# a fresh checkout without redoing them.
# Usage: bash scripts/snapshot_rows.sh resnet32 [RUN_DIR [DEST]]
set -euo pipefail
model=${1:?model name}
run=${2:-runs/reproduce-$model}
dst=${3:-checkpoints/reproduce-$model-rows}
rm -rf "$dst"
for d in "$run"/*/; do
  name=$(basename "$d")
  [ "$name" = prune ] && continue
  [ -f "$d/summary.json" ] || continue
  mkdir -p "$dst/$name"
  if [[ $name == search-* ]]; then
    cp "$d"/{summary.json,config.json,episodes.csv,best_policy.json} "$dst/$name"/
  else
    cp "$d"/{summary.json,model.rlc} "$dst/$name"/
  fi
done
ls "$dst"
