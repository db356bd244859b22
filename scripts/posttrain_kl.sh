#!/usr/bin/env bash
# The post-training frontier with final re-scoring (scripts/posttrain_final_rescore.sh), the
# searches and greedy's walk ranking, walking and choosing by the KL divergence from the float
# model on the validation split instead of its top-1 (--choose-by kl, session 30). DDPG's and
# random search's 200 episodes are the -fr frontier's (each run folder is seeded with its agent
# and episode log), so only the re-scoring, the walk and the sharing run again; greedy is
# copied whole. About 7 CPU-minutes per searched or walked point; resumable. Two processes:
#   bash scripts/posttrain_kl.sh --only-seeds 0 --ratios 16 12 ; bash scripts/posttrain_kl.sh --only-seeds 2 --ratios 16
#   bash scripts/posttrain_kl.sh --only-seeds 1 --ratios 16 12 ; bash scripts/posttrain_kl.sh --only-seeds 2 --ratios 12
# (8x likewise), then rerun with no options to write the tables.
set -euo pipefail
model=${MODEL:-resnet20}
src=runs/frontier/$model-posttrain-fr
dst=runs/frontier/$model-posttrain-kl
source "$(dirname "$0")/seed_runs.sh"
seed_folder "$src" "$dst" scripts/posttrain_final_rescore.sh
for point in "$src"/*x/*; do
  tag=${point#"$src"/}
  case "$(basename "$point")" in
    ddpg-*|random-*|greedy+walk-*)
      copy_search "$src" "$dst" "$tag" agent.pt agent.json episodes.csv allocation.json \
        allocation-greedy.json allocation-hessian.json ;;
    greedy-s0) copy_point "$src" "$dst" "$tag" ;;
  esac
done
default_ratios "$@"
rlcompress frontier --model "$model" --name "$model-posttrain-kl" --out "$dst" \
  "${ratios[@]}" --strategies greedy random ddpg greedy+walk \
  --seeds 3 --random-seeds 1 --episodes 200 --share-epochs 0 \
  --val-images 1000 --allocator-demos hessian,greedy --refine 60 --final-rescore \
  --choose-by kl --threads 1 --quiet "$@"
