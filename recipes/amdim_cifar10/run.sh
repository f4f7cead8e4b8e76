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

img() { python -m cpc_seq.images.cli "$@"; }
t0=$(date +%s)

stage0() {
  python -m cpc_seq.images.data cifar10 "$data" --download
}

stage1() {
  # shellcheck disable=SC2086
  img image-train --config "$conf" data.root="$data" train.out_dir="$exp/amdim" \
    train.threads="$threads" train.device="$device" ${TRAIN_OVERRIDES:-}
}

stage2() {
  local dev="$device"
  [ "$dev" = auto ] && dev=$(python -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
  # shellcheck disable=SC2086
  img image-probe --ckpt "$exp/amdim/last.pt" --out "$exp/probe" --data-root "$data" \
    --features r1,local --device "$dev" --threads "$threads" --no-progress ${PROBE_OPTS:-} \
    > "$exp/table.md.tmp"
  mv "$exp/table.md.tmp" "$exp/table.md"
}

mkdir -p "$exp"
run_stage 0 "get and check CIFAR-10" stage0
run_stage 1 "train AMDIM ($conf)" stage1
run_stage 2 "linear probes" stage2
if [ "$stop_stage" -ge 2 ] && [ -f "$exp/table.md" ]; then
  log "CIFAR-10 test accuracy, linear probe on frozen features ($exp/probe/table.md):"
  cat "$exp/table.md"
fi
log "done in $(( $(date +%s) - t0 )) s"
