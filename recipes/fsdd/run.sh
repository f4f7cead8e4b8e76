#!/usr/bin/env bash
# recipes/fsdd/run.sh: CPC on the Free Spoken Digit Dataset (real speech, 6 speakers),
# then phone and speaker linear probes on CPC c and z against MFCC+d+dd and the same
# architecture with random weights. About 10 minutes on 2 idle CPU cores.
#
# Usage: recipes/fsdd/run.sh [--fsdd DIR] [--exp DIR] [--stage N] [--stop-stage M]
#   --fsdd DIR   a copy of FSDD as a Kaldi data dir with phone_frames.txt
#                (default ../shared/data/fsdd)
#   stage 0: prepare data dirs (local/prepare_data.py): takes 0-4 test, 5-49 train
#   stage 1: train CPC on the train utterances (conf/cpc.yaml)
#   stage 2: extract CPC c, z, random-init c, z and MFCC (with and without CMVN)
#   stage 3: phone probes (frame level)
#   stage 4: speaker probes (utterance level, mean-pooled) and the table
# Finished stages leave EXP/.done.N and are skipped on a rerun; logs in EXP/log/.

set -euo pipefail
cd "$(dirname "$0")/../.."

stage=0
stop_stage=4
fsdd=../shared/data/fsdd
exp=exp/fsdd
conf=recipes/fsdd/conf/cpc.yaml
. recipes/common/parse_options.sh

cpc() { python -m cpc_seq "$@"; }
data=$exp/data
feats=$exp/feats
ckpt=$exp/cpc/last.pt

stage0() {
  [ -d "$fsdd" ] || { echo "error: FSDD not found at $fsdd (use --fsdd DIR)" >&2; exit 2; }
  python recipes/fsdd/local/prepare_data.py "$fsdd" "$data"
  cpc validate-data "$data/all" --labels "$data/all/phone_frames.txt" --phones "$data/phones.txt"
}

stage1() {
  # shellcheck disable=SC2086
  cpc train --config "$conf" data.train="$data/train" train.out_dir="$exp/cpc" ${TRAIN_OVERRIDES:-}
}

stage2() {
  local src="scp:$data/all/wav.scp"
  for layer in c z; do
    cpc extract --ckpt "$ckpt" --layer $layer --skip-existing \
      --write-num-frames "ark,t:$feats/$layer.utt2num_frames" "$src" "ark,scp:$feats/$layer.ark,$feats/$layer.scp"
    cpc extract --ckpt "$ckpt" --random-init --layer $layer --skip-existing \
      "$src" "ark,scp:$feats/rand_$layer.ark,$feats/rand_$layer.scp"
  done
  cpc extract --mfcc --skip-existing "$src" "ark,scp:$feats/mfcc.ark,$feats/mfcc.scp"
  # per-utterance CMVN removes the utterance mean: the speaker probe also gets raw MFCC
  cpc extract --mfcc --no-cmvn --skip-existing "$src" "ark,scp:$feats/mfcc_raw.ark,$feats/mfcc_raw.scp"
}

names=("c:CPC c (context)" "z:CPC z (encoder)" "mfcc:MFCC+d+dd (CMVN)" "rand_c:random-init c" "rand_z:random-init z")

stage3() {
  for entry in "${names[@]}"; do
    cpc probe phone --no-progress --feats "scp:$feats/${entry%%:*}.scp" \
      --train-split "$data/train_split.txt" --test-split "$data/test_split.txt" \
      --labels "$data/all/phone_frames.txt" --phones "$data/phones.txt" \
      --out "$exp/probe/phone_${entry%%:*}" --name "${entry#*:}"
  done
}

stage4() {
  for entry in "${names[@]}" "mfcc_raw:MFCC+d+dd (no CMVN)"; do
    cpc probe speaker --no-progress --feats "scp:$feats/${entry%%:*}.scp" \
      --train-split "$data/train_split.txt" --test-split "$data/test_split.txt" \
      --utt2spk "$data/all/utt2spk" --out "$exp/probe/speaker_${entry%%:*}" --name "${entry#*:}"
  done
  cpc table "$exp"/probe/phone_{c,z,mfcc,rand_c,rand_z}/result.json \
    "$exp"/probe/speaker_{c,z,mfcc,mfcc_raw,rand_c,rand_z}/result.json > "$exp/table.md.tmp"
  mv "$exp/table.md.tmp" "$exp/table.md"
}

mkdir -p "$exp"
run_stage 0 "prepare data from $fsdd" stage0
run_stage 1 "train CPC ($conf)" stage1
run_stage 2 "extract features" stage2
run_stage 3 "phone probes" stage3
run_stage 4 "speaker probes" stage4
if [ "$stop_stage" -ge 4 ] && [ -f "$exp/table.md" ]; then
  log "FSDD test set (takes 0-4), linear probes:"
  cat "$exp/table.md"
fi
