#!/usr/bin/env bash
# The post-training frontier with final re-scoring (scripts/posttrain_final_rescore.sh), DDPG
# searching again with self-imitation (--ddpg-imitate 10, session 30: the actor is also pulled
# to the best episode so far). Its rivals (greedy, random search, greedy+walk) are the -fr
# frontier's points, copied whole; only DDPG's 3 seeds x 3 budgets run (about 9 CPU-minutes
# each; resumable). Two processes, e.g.:
#   bash scripts/posttrain_sil.sh --only-seeds 0 ; bash scripts/posttrain_sil.sh --only-seeds 2 --ratios 8
#   bash scripts/posttrain_sil.sh --only-seeds 1 ; bash scripts/posttrain_sil.sh --only-seeds 2 --ratios 12 16
# then rerun with no options to write the tables.
set -euo pipefail
model=${MODEL:-resnet20}
src=runs/frontier/$model-posttrain-fr
dst=runs/frontier/$model-posttrain-sil
source "$(dirname "$0")/seed_runs.sh"
seed_folder "$src" "$dst" scripts/posttrain_final_rescore.sh
for point in "$src"/*x/greedy-s0 "$src"/*x/random-s0 "$src"/*x/greedy+walk-s*; do
  copy_point "$src" "$dst" "${point#"$src"/}"
done
for point in "$src"/*x/ddpg-s*; do  # the allocators' demonstrations, computed once
  copy_search "$src" "$dst" "${point#"$src"/}" allocation-greedy.json allocation-hessian.json
done
default_ratios "$@"
rlcompress frontier --model "$model" --name "$model-posttrain-sil" --out "$dst" \
  "${ratios[@]}" --strategies greedy random ddpg greedy+walk \
  --seeds 3 --random-seeds 1 --episodes 200 --share-epochs 0 \
  --val-images 1000 --allocator-demos hessian,greedy --refine 60 --final-rescore \
  --ddpg-imitate 10 --threads 1 --quiet "$@"
