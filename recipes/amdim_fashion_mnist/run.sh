#!/usr/bin/env bash
# recipes/amdim_fashion_mnist/run.sh: AMDIM (multiscale NCE between two augmented views:
# 1->5, 1->7, 5->5) on Fashion-MNIST, then linear probes on the frozen features against
# the same encoder with random weights and against raw pixels. Measured: 17.6 min wall with
# --threads 1 on the shared 2-core machine (training stopped by train.max_minutes=15 at
# step 1238 of 1500); the whole recipe stays under ~20 min. When other jobs share the
# cores, --threads 1 is faster than the default 2.
#
# Usage: recipes/amdim_fashion_mnist/run.sh [--stage N] [--stop-stage M] [--exp DIR]
#          [--conf YAML] [--data DIR] [--threads N]
#   stage 0: check the data (--data: the four Fashion-MNIST IDX files, default
#            /usr/share/datasets/fashion-mnist from 'apt-get install dataset-fashion-mnist')
#   stage 1: train AMDIM (conf/amdim.yaml) -> EXP/amdim/last.pt, TensorBoard in EXP/amdim/tb
#   stage 2: linear probes, the table -> EXP/table.md
# Finished stages leave EXP/.done.N and are skipped on a rerun; logs in EXP/log/.
# Extra overrides: TRAIN_OVERRIDES="train.steps=100" PROBE_OPTS="--epochs 5" run.sh
# The stages themselves are in recipes/common/image_recipe.sh.

set -euo pipefail
cd "$(dirname "$0")/../.."   # repository root: paths below are relative to it

stage=0
stop_stage=2
exp=exp/amdim_fashion_mnist
conf=recipes/amdim_fashion_mnist/conf/amdim.yaml
data=/usr/share/datasets/fashion-mnist
threads=2
. recipes/common/parse_options.sh

kind=amdim
features=r1,local
dataset=Fashion-MNIST
stage0_desc="check data"
stage0() {
  python -m cpc_seq.images.data fashion_mnist "$data"
}
. recipes/common/image_recipe.sh
