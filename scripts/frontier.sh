#!/usr/bin/env bash
# The joint frontier of issue #13 on a committed clean baseline (checkpoints/scratch-MODEL):
# five budgets, tight ones first (they decide the targets), every allocator, DDPG over 3 seeds,
# coremltools' points from the peers benchmark. Resumable point by point: rerun to continue;
# add --collect-only to write the finished points as results/frontier/MODEL.partial.*.
# Fine-tuning: DKM-style soft assignment (the default), with batch norm re-estimated for the
# hard weights after each epoch where that validates better (share-dkm0.04-bn/). The ResNet-20
# frontier was trained before that existed (share-dkm0.04/, --no-share-dkm-bn): ResNet-20's
# trained statistics were as good, ResNet-32 at one bit validated at 10% with them. The first
# six ResNet-20 points were trained with hard straight-through QAT (share/, --share-dkm-tau 0):
# results/frontier/resnet20-hardqat.partial.* and files/resnet20-hardqat/ keep them.
# ~9 hours of both cores for ResNet-20 on the 2-core CPU machine, ~25 thread-hours for ResNet-32
# (--threads 1 beside another job; --only-seeds splits the searched seeds between processes).
# Peers first: python benchmarks/peers.py --models MODEL --ft-models MODEL --threads 1
#   --distill 0.5 --rlc --out results/bench/peers_clean_v2[_MODEL].json (no suffix: resnet20)
# Usage: bash scripts/frontier.sh MODEL [more `rlcompress frontier` options]
set -euo pipefail
model=${1:?MODEL (resnet20 or resnet32)}; shift
peers=results/bench/peers_clean_v2.json
[ "$model" = resnet20 ] || peers=results/bench/peers_clean_v2_$model.json
# the points do not depend on the peers: a frontier may start before its peers benchmark ends
# (rerun with --collect-only once it has, to add them to the tables)
extra_args=() start=$model
# its committed points (see above), built on the ResNet-20 baseline before session 22's
if [ "$model" = resnet20 ]; then
  extra_args=(--no-share-dkm-bn --name resnet20)
  start=checkpoints/scratch-106ep-resnet20/best.safetensors
fi
if [ -f "$peers" ]; then extra_args+=(--peers "$peers" --peers-model "$model")
else echo "frontier.sh: no $peers yet; the tables will lack coremltools' points" >&2; fi
# both frontiers were searched before session 25's budget credited pruned channels' floats,
# and trained before session 27 let the pruned model before its fine-tune compete
extra_args+=(--no-pruned-float-credit --prune-select best)
rlcompress frontier --model "$start" --prune-rates 0,0.1,0.2,0.3,0.4,0.5,0.6 --prune-epochs 4 \
    --ratios 32 16 40 24 8 --strategies uniform greedy hessian random ddpg --seeds 3 \
    --random-seeds 1 --allocator-demos hessian,greedy --refine 60 --episodes 200 \
    --val-images 1000 "${extra_args[@]}" --out "runs/frontier/$model" --quiet "$@"
