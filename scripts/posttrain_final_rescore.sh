#!/usr/bin/env bash
# The post-training frontier (scripts/posttrain_frontier.sh) with the searched strategies'
# re-scoring and refinement walk under the finished point's own batch-norm re-estimation
# (--final-rescore, session 29), so that DDPG's and random search's choices are not overrated
# by the reward's 512-image batch-norm noise. The searches' 200 episodes are the committed
# frontier's: each searched run folder is seeded with its agent and episode log (not its
# re-scoring, walk or summary), so only the re-scoring, walk and sharing run again; the
# one-shot allocators (unchanged by the option) are copied whole. greedy+walk is greedy's
# allocation (copied) followed by the same walk: what DDPG gains beyond the walk. About 9
# CPU-minutes per searched or walked point; resumable. Two processes:
#   bash scripts/posttrain_final_rescore.sh --only-seeds 0 1
#   bash scripts/posttrain_final_rescore.sh --only-seeds 2   (then)
#   bash scripts/posttrain_final_rescore.sh --strategies greedy+walk --only-seeds 0 1
#   bash scripts/posttrain_final_rescore.sh --strategies greedy+walk --only-seeds 2
# then rerun with no options to write the tables.
set -euo pipefail
model=${MODEL:-resnet20}
src=runs/frontier/$model-posttrain
dst=runs/frontier/$model-posttrain-fr
source "$(dirname "$0")/seed_runs.sh"
seed_folder "$src" "$dst" scripts/posttrain_frontier.sh
for point in "$src"/*x/*; do
  tag=${point#"$src"/}
  case "$(basename "$point")" in
    ddpg-*|random-*)
      copy_search "$src" "$dst" "$tag" agent.pt agent.json episodes.csv config.json \
        allocation-greedy.json allocation-hessian.json ;;
    *) copy_point "$src" "$dst" "$tag" ;;
  esac
done
for point in "$src"/*x/greedy-s0; do
  for seed in 0 1 2; do  # greedy does not depend on the seed; the walk does
    walked=$dst/$(basename "$(dirname "$point")")/greedy+walk-s$seed/search
    [ -e "$walked" ] && continue
    mkdir -p "$walked" && cp "$point/search/allocation.json" "$walked/"
  done
done
peers=results/bench/peers_posttrain_$model.json
extra=()
[ -f "$peers" ] && extra=(--peers "$peers" --peers-model "$model")
rlcompress frontier --model "$model" --name "$model-posttrain-fr" --out "$dst" \
  --ratios 8 12 16 --strategies uniform greedy hessian random ddpg greedy+walk \
  --seeds 3 --random-seeds 1 --episodes 200 --share-epochs 0 \
  --val-images 1000 --allocator-demos hessian,greedy --refine 60 --final-rescore \
  --threads 1 --quiet "${extra[@]}" "$@"
