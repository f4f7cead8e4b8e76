#!/usr/bin/env bash
# recipes/tiny/run.sh: the demo. CPC on the embedded espeak-ng corpus (data/tiny),
# then a frame-level linear phone probe on CPC c and z against MFCC+d+dd and the
# same architecture with random weights. About 8 minutes on 2 idle CPU cores.
#
# Usage: recipes/tiny/run.sh [--stage N] [--stop-stage M] [--exp DIR] [--conf YAML]
#   stage 0: check the data dirs and labels
#   stage 1: train CPC (conf/cpc.yaml)
#   stage 2: extract features (CPC c, z; random-init c, z; MFCC) for train and test
#   stage 3: phone probes and the table (exp/table.md)
#   stage 4: ABX within/across speakers on the test split (item file from the frame
#            labels, cpc-seq audio make-item; seconds) and exp/abx.md
# Finished stages leave exp/.done.N and are skipped on a rerun; logs in exp/log/.
# Extra training overrides: TRAIN_OVERRIDES="train.steps=100" recipes/tiny/run.sh

set -euo pipefail
cd "$(dirname "$0")/../.."   # repository root: paths below are relative to it

stage=0
stop_stage=4
exp=exp/tiny
conf=recipes/tiny/conf/cpc.yaml
data=data/tiny
. recipes/common/parse_options.sh

cpc() { python -m cpc_seq "$@"; }
ckpt=$exp/cpc/last.pt
feats=$exp/feats

stage0() {
  for split in train dev test; do
    cpc audio validate "$data/$split" --labels "$data/$split/phone_frames.txt" --phones "$data/phones.txt"
  done
}

stage1() {
  # shellcheck disable=SC2086
  cpc audio train --config "$conf" train.out_dir="$exp/cpc" ${TRAIN_OVERRIDES:-}
}

stage2() {
  for split in train test; do
    for layer in c z; do
      cpc audio extract --ckpt "$ckpt" --layer $layer --skip-existing \
        --write-num-frames "ark,t:$feats/${layer}_$split.utt2num_frames" \
        "scp:$data/$split/wav.scp" "ark,scp:$feats/${layer}_$split.ark,$feats/${layer}_$split.scp"
      cpc audio extract --ckpt "$ckpt" --random-init --layer $layer --skip-existing \
        "scp:$data/$split/wav.scp" "ark,scp:$feats/rand_${layer}_$split.ark,$feats/rand_${layer}_$split.scp"
    done
    cpc audio extract --mfcc --skip-existing \
      "scp:$data/$split/wav.scp" "ark,scp:$feats/mfcc_$split.ark,$feats/mfcc_$split.scp"
  done
}

probe() {  # probe NAME FEATS_PREFIX
  cpc audio probe phone --no-progress \
    --train-feats "scp:$feats/$2_train.scp" --test-feats "scp:$feats/$2_test.scp" \
    --labels "$data/train/phone_frames.txt" --test-labels "$data/test/phone_frames.txt" \
    --phones "$data/phones.txt" --out "$exp/probe/$2" --name "$1"
}

stage3() {
  probe "CPC c (context)" c
  probe "CPC z (encoder)" z
  probe "MFCC+d+dd (CMVN)" mfcc
  probe "random-init c" rand_c
  probe "random-init z" rand_z
  cpc table "$exp"/probe/{c,z,mfcc,rand_c,rand_z}/result.json > "$exp/table.md.tmp"
  mv "$exp/table.md.tmp" "$exp/table.md"
}

abx_value() {  # abx_value within|across OUTPUT: the percentage printed by cpc-seq audio abx
  echo "$2" | sed -n "s/^ABX $1-speaker error ([a-z]*): \([0-9.]*\)%.*/\1/p"
}

stage4() {
  local item=$exp/abx/test.item
  cpc audio make-item "$data/test/phone_frames.txt" "$data/test/utt2spk" "$item" --phones "$data/phones.txt"
  {
    echo "| features | ABX within (%) | ABX across (%) |"
    echo "|---|---|---|"
    for entry in "c:CPC c (context)" "z:CPC z (encoder)" "mfcc:MFCC+d+dd (CMVN)" "rand_c:random-init c"; do
      local out
      out=$(cpc audio abx --feats "scp:$feats/${entry%%:*}_test.scp" --item "$item" \
        --out "$exp/abx/${entry%%:*}.json")
      echo "| ${entry#*:} | $(abx_value within "$out") | $(abx_value across "$out") |"
    done
  } > "$exp/abx.md.tmp"
  mv "$exp/abx.md.tmp" "$exp/abx.md"
}

mkdir -p "$exp"
run_stage 0 "check data" stage0
run_stage 1 "train CPC ($conf)" stage1
run_stage 2 "extract features" stage2
run_stage 3 "phone probes" stage3
run_stage 4 "ABX" stage4
if [ "$stop_stage" -ge 3 ] && [ -f "$exp/table.md" ]; then
  log "test-set frame-level phone accuracy (linear probe, $data):"
  cat "$exp/table.md"
fi
if [ "$stop_stage" -ge 4 ] && [ -f "$exp/abx.md" ]; then
  log "ABX error on the test split (angular distance, Libri-light averaging):"
  cat "$exp/abx.md"
fi
