#!/usr/bin/env bash
# The joint ResNet-32 frontier (issue #13): the ResNet-20 frontier's settings on the committed
# ResNet-32 baseline (checkpoints/scratch-resnet32); resumable point by point, rerun to continue.
# Peers: `python benchmarks/peers.py --models resnet32 --ft-models resnet32 --threads 1
# --distill 0.5 --rlc --out results/bench/peers_clean_v2_resnet32.json` first.
# Results: results/frontier/resnet32.*
set -euo pipefail
rlcompress frontier --model resnet32 --prune-rates 0,0.1,0.2,0.3,0.4,0.5,0.6 --prune-epochs 4 \
    --ratios 32 16 40 24 8 --strategies uniform greedy hessian random ddpg --seeds 3 \
    --random-seeds 1 --allocator-demos hessian,greedy --refine 60 --episodes 200 \
    --val-images 1000 --peers results/bench/peers_clean_v2_resnet32.json --peers-model resnet32 \
    --out runs/frontier/resnet32 --quiet "$@"
