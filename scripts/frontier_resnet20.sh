#!/usr/bin/env bash
# The joint ResNet-20 frontier (issue #13): resumable point by point; rerun to continue.
# ~9 hours of both cores on the 2-core CPU machine (--threads 1 beside another job). Starts from the committed baseline (checkpoints/scratch-resnet20). Results: results/frontier/resnet20.*. The tight budgets come first: they decide the targets.
set -euo pipefail
rlcompress frontier --model resnet20 --prune-rates 0,0.1,0.2,0.3,0.4,0.5,0.6 --prune-epochs 4 \
    --ratios 32 16 40 24 8 --strategies uniform greedy hessian random ddpg --seeds 3 \
    --random-seeds 1 --allocator-demos hessian,greedy --refine 60 --episodes 200 \
    --val-images 1000 --peers results/bench/peers_clean_v2.json --peers-model resnet20 \
    --out runs/frontier/resnet20 --quiet "$@"
