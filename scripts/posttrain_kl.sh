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
[ -d "$src" ] || { echo "$src: run scripts/posttrain_final_rescore.sh first" >&2; exit 1; }
mkdir -p "$dst"
cp -n "$src/model.json" "$dst/"
for point in "$src"/*x/*; do
  tag=${point#"$src"/}
  [ -e "$dst/$tag" ] && continue
  case "$(basename "$point")" in
    ddpg-*|random-*|greedy+walk-*)
      mkdir -p "$dst/$tag/search"
      for f in agent.pt agent.json episodes.csv allocation.json allocation-greedy.json allocation-hessian.json; do
        [ -f "$point/search/$f" ] && cp "$point/search/$f" "$dst/$tag/search/"
      done ;;
    greedy-s0) mkdir -p "$dst/$(dirname "$tag")" && cp -r "$point" "$dst/$tag" ;;
  esac
done
ratios=(--ratios 8 12 16)
for a in "$@"; do [ "$a" = --ratios ] && ratios=(); done
rlcompress frontier --model "$model" --name "$model-posttrain-kl" --out "$dst" \
  "${ratios[@]}" --strategies greedy random ddpg greedy+walk \
  --seeds 3 --random-seeds 1 --episodes 200 --share-epochs 0 \
  --val-images 1000 --allocator-demos hessian,greedy --refine 60 --final-rescore \
  --choose-by kl --threads 1 --quiet "$@"
