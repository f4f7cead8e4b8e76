#!/usr/bin/env bash
# recipes/amdim_cifar10/run.sh: AMDIM (multiscale NCE between two augmented views:
# 1->5, 1->7, 5->5) on CIFAR-10, then linear probes on the frozen features against the
# same encoder with random weights and against raw pixels. Needs internet once (stage 0
# downloads CIFAR-10 with torchvision) and, for the full config, a GPU: about 40k steps of
# batch 256 (~200 epochs). On a CPU, try TRAIN_OVERRIDES="train.steps=2000 amdim.ndf=32".
#
# Usage: recipes/amdim_cifar10/run.sh [--stage N] [--stop-stage M] [--exp DIR]
#          [--conf YAML] [--data DIR] [--threads N] [--device auto|cpu|cuda]
#   stage 0: download (if missing) and check CIFAR-10 in --data
#            (DIR/cifar-10-batches-py/, the python version of the data set)
#   stage 1: train AMDIM (conf/amdim.yaml) -> EXP/amdim/last.pt, TensorBoard in EXP/amdim/tb
#   stage 2: linear probes, the table -> EXP/table.md
# Finished stages leave EXP/.done.N and are skipped on a rerun; logs in EXP/log/.
# Extra overrides: TRAIN_OVERRIDES="train.steps=100" PROBE_OPTS="--epochs 5" run.sh
# The stages themselves are in recipes/common/image_recipe.sh.

set -euo pipefail
cd "$(dirname "$0")/../.."   # repository root: paths below are relative to it

stage=0
stop_stage=2
exp=exp/amdim_cifar10
conf=recipes/amdim_cifar10/conf/amdim.yaml
data=recipes/amdim_cifar10/data
threads=0
device=auto
. recipes/common/parse_options.sh

kind=amdim
features=r1,local
dataset=CIFAR-10
stage0_desc="get and check CIFAR-10"
stage0() {
  python -m cpc_seq.images.data cifar10 "$data" --download
}
. recipes/common/image_recipe.sh
