#!/usr/bin/env bash
# Copy the small artifacts of a reproduction's searches (summary, best policy, episodes, plots)
# from its run directory into results/paper_tables/searches/, so the tables' searched rows can
# be inspected without the run directory. Usage: bash scripts/collect_searches.sh resnet20
set -euo pipefail
model=${1:?model name, e.g. resnet20}
run=${2:-runs/reproduce-$model}
for d in "$run"/search-*; do
  [ -f "$d/summary.json" ] || continue
  out="results/paper_tables/searches/$model-$(basename "$d" | sed 's/^search-//')"
  mkdir -p "$out"
  cp "$d"/{summary.json,best_policy.json,episodes.csv,config.json} "$out"/
  cp "$d"/*.png "$out"/ 2>/dev/null || true
done
