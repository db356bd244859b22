#!/usr/bin/env bash
# Save what a training run needs to resume exactly elsewhere (state.pt holds weights and
# optimizer; best.* the selected epoch so far; metrics.csv and config.json the history).
# Usage: scripts/snapshot_training.sh RUN_DIR DEST_DIR
set -euo pipefail
run=$1; dest=$2
mkdir -p "$dest"
for f in config.json metrics.csv state.pt best.safetensors best.json summary.json; do
  [ -f "$run/$f" ] && cp "$run/$f" "$dest/$f.tmp" && mv "$dest/$f.tmp" "$dest/$f"
done
echo "saved $(ls "$dest" | tr '\n' ' ')-> $dest"
