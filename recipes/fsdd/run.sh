#!/usr/bin/env bash
# recipes/fsdd/run.sh: CPC on the Free Spoken Digit Dataset (real speech, 6 speakers),
# then phone and speaker linear probes on CPC c and z against MFCC+d+dd and the same
# architecture with random weights, ABX phone discriminability, and a CTC phone
# recogniser. About 10 minutes on 2 idle CPU cores up to stage 4; stage 6 adds a few more.
#
# Usage: recipes/fsdd/run.sh [--fsdd DIR] [--exp DIR] [--stage N] [--stop-stage M]
#   --fsdd DIR   a copy of FSDD as a Kaldi data dir with phone_frames.txt
#                (default ../shared/data/fsdd)
#   stage 0: prepare data dirs (local/prepare_data.py): takes 0-4 test, 5-49 train
#   stage 1: train CPC on the train utterances (conf/cpc.yaml)
#   stage 2: extract CPC c, z, random-init c, z and MFCC (with and without CMVN)
#   stage 3: phone probes (frame level)
#   stage 4: speaker probes (utterance level, mean-pooled) and the table
#   stage 5: ABX within/across speakers on the test takes (item file from the frame
#            labels, cpc-seq audio make-item; seconds)
#   stage 6: CTC phone recogniser (BiLSTM, SUPERB PR style) on frozen c, MFCC and
#            random-init c: phone error rate (CTC_OPTS="--epochs 5" to change it)
# Finished stages leave EXP/.done.N and are skipped on a rerun; logs in EXP/log/.

set -euo pipefail
cd "$(dirname "$0")/../.."

stage=0
stop_stage=6
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
  cpc audio validate "$data/all" --labels "$data/all/phone_frames.txt" --phones "$data/phones.txt"
}

stage1() {
  # shellcheck disable=SC2086
  cpc audio train --config "$conf" data.train="$data/train" train.out_dir="$exp/cpc" ${TRAIN_OVERRIDES:-}
}

stage2() {
  local src="scp:$data/all/wav.scp"
  for layer in c z; do
    cpc audio extract --ckpt "$ckpt" --layer $layer --skip-existing \
      --write-num-frames "ark,t:$feats/$layer.utt2num_frames" "$src" "ark,scp:$feats/$layer.ark,$feats/$layer.scp"
    cpc audio extract --ckpt "$ckpt" --random-init --layer $layer --skip-existing \
      "$src" "ark,scp:$feats/rand_$layer.ark,$feats/rand_$layer.scp"
  done
  cpc audio extract --mfcc --skip-existing "$src" "ark,scp:$feats/mfcc.ark,$feats/mfcc.scp"
  # per-utterance CMVN removes the utterance mean: the speaker probe also gets raw MFCC
  cpc audio extract --mfcc --no-cmvn --skip-existing "$src" "ark,scp:$feats/mfcc_raw.ark,$feats/mfcc_raw.scp"
}

names=("c:CPC c (context)" "z:CPC z (encoder)" "mfcc:MFCC+d+dd (CMVN)" "rand_c:random-init c" "rand_z:random-init z")

stage3() {
  for entry in "${names[@]}"; do
    cpc audio probe phone --no-progress --feats "scp:$feats/${entry%%:*}.scp" \
      --train-split "$data/train_split.txt" --test-split "$data/test_split.txt" \
      --labels "$data/all/phone_frames.txt" --phones "$data/phones.txt" \
      --out "$exp/probe/phone_${entry%%:*}" --name "${entry#*:}"
  done
}

stage4() {
  for entry in "${names[@]}" "mfcc_raw:MFCC+d+dd (no CMVN)"; do
    cpc audio probe speaker --no-progress --feats "scp:$feats/${entry%%:*}.scp" \
      --train-split "$data/train_split.txt" --test-split "$data/test_split.txt" \
      --utt2spk "$data/all/utt2spk" --out "$exp/probe/speaker_${entry%%:*}" --name "${entry#*:}"
  done
  cpc table "$exp"/probe/phone_{c,z,mfcc,rand_c,rand_z}/result.json \
    "$exp"/probe/speaker_{c,z,mfcc,mfcc_raw,rand_c,rand_z}/result.json > "$exp/table.md.tmp"
  mv "$exp/table.md.tmp" "$exp/table.md"
}

stage5() {
  local item=$exp/abx/test.item
  cpc audio make-item "$data/all/phone_frames.txt" "$data/all/utt2spk" "$item" --phones "$data/phones.txt" \
    --split "$data/test_split.txt"
  {
    echo "| features | ABX within (%) | ABX across (%) |"
    echo "|---|---|---|"
    for entry in "c:CPC c (context)" "z:CPC z (encoder)" "mfcc:MFCC+d+dd (CMVN)" "rand_c:random-init c"; do
      local out
      out=$(cpc audio abx --feats "scp:$feats/${entry%%:*}.scp" --item "$item" \
        --out "$exp/abx/${entry%%:*}.json")
      echo "| ${entry#*:} | $(abx_value within "$out") | $(abx_value across "$out") |"
    done
  } > "$exp/abx.md.tmp"
  mv "$exp/abx.md.tmp" "$exp/abx.md"
}

abx_value() {  # abx_value within|across OUTPUT: the percentage printed by cpc-seq audio abx
  echo "$2" | sed -n "s/^ABX $1-speaker error ([a-z]*): \([0-9.]*\)%.*/\1/p"
}

stage6() {
  for entry in "c:CPC c (context)" "mfcc:MFCC+d+dd (CMVN)" "rand_c:random-init c"; do
    # a result from an interrupted run is kept: delete it to retrain
    [ -f "$exp/ctc/${entry%%:*}/result.json" ] && continue
    # shellcheck disable=SC2086
    cpc audio ctc-probe --no-progress --feats "scp:$feats/${entry%%:*}.scp" \
      --train-split "$data/train_split.txt" --test-split "$data/test_split.txt" \
      --labels "$data/all/phone_frames.txt" --phones "$data/phones.txt" --ignore SIL \
      --out "$exp/ctc/${entry%%:*}" --name "${entry#*:}" ${CTC_OPTS:-}
  done
  cpc table "$exp"/ctc/{c,mfcc,rand_c}/result.json > "$exp/ctc.md.tmp"
  mv "$exp/ctc.md.tmp" "$exp/ctc.md"
}

mkdir -p "$exp"
run_stage 0 "prepare data from $fsdd" stage0
run_stage 1 "train CPC ($conf)" stage1
run_stage 2 "extract features" stage2
run_stage 3 "phone probes" stage3
run_stage 4 "speaker probes" stage4
run_stage 5 "ABX" stage5
run_stage 6 "CTC phone recogniser" stage6
if [ "$stop_stage" -ge 4 ] && [ -f "$exp/table.md" ]; then
  log "FSDD test set (takes 0-4), linear probes:"
  cat "$exp/table.md"
fi
if [ "$stop_stage" -ge 5 ] && [ -f "$exp/abx.md" ]; then
  log "ABX error on the test takes (angular distance, Libri-light averaging):"
  cat "$exp/abx.md"
fi
if [ "$stop_stage" -ge 6 ] && [ -f "$exp/ctc.md" ]; then
  log "CTC phone recogniser, phone error rate on the test takes (SIL left out):"
  cat "$exp/ctc.md"
fi
