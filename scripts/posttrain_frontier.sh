#!/usr/bin/env bash
# The post-training frontier (session 28): every allocator chooses k per layer (no pruning)
# under three file budgets (8x: about 4 bits a weight; 16x: under 2), and the point is the shared model with no fine-tuning at all
# (Fisher-weighted k-means and batch-norm re-estimation only), so the reward the search
# maximises is the thing measured. For users who cannot fine-tune; it isolates the allocation
# from the training noise that decides the trained frontiers. ResNet-20 clean baseline.
# About 1.5 hours of both cores; resumable point by point (rerun to continue). Two processes:
#   bash scripts/posttrain_frontier.sh --strategies ddpg --only-seeds 0 1
#   bash scripts/posttrain_frontier.sh --strategies uniform greedy hessian random   (then)
#   bash scripts/posttrain_frontier.sh --strategies ddpg --only-seeds 2
# then rerun with no options: every point is found, and the tables are written.
# coremltools' post-training palettizers join the tables from (about 5 minutes):
#   python benchmarks/peers.py --models resnet20 --bits 2 3 4 --ft-bits --epochs 0 --rlc \
#       --threads 1 --out results/bench/peers_posttrain_resnet20.json
set -euo pipefail
model=${MODEL:-resnet20}
peers=results/bench/peers_posttrain_$model.json
extra=()
[ -f "$peers" ] && extra=(--peers "$peers" --peers-model "$model")
rlcompress frontier --model "$model" --name "$model-posttrain" --out "runs/frontier/$model-posttrain" \
  --ratios 8 12 16 --seeds 3 --random-seeds 1 --episodes 200 --share-epochs 0 \
  --val-images 1000 --allocator-demos hessian,greedy --refine 60 --threads 1 --quiet "${extra[@]}" "$@"
