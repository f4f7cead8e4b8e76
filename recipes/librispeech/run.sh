#!/usr/bin/env bash
# recipes/librispeech/run.sh: the CPC paper's experiment on LibriSpeech train-clean-100:
# train the paper preset, extract c, then a 41-class frame-level phone probe and a
# 251-speaker probe with the paper's split files, against MFCC and random init.
#
# Expected (CPC paper, linear probes on c): phone 64.6 % (MFCC 39.7, random init 27.6,
# supervised 74.6); speaker 97.4 % (MFCC 17.6). Training the paper config takes GPU-days.
# Presets (--preset) and the published phone probe on c each is expected to reach:
#   paper  conf/cpc.yaml   CPC paper (van den Oord et al. 2018): 512-ch encoder, GRU,
#                          linear heads, mixed-speaker negatives: 64.6 %
#   cpc2   conf/cpc2.yaml  modified CPC / CPC2 (Riviere et al. 2020) with the ZeroSpeech
#                          2021 CPC-small settings: channel-norm encoder, 2-layer LSTM,
#                          Transformer predictor, dropout, same-speaker batches: 67.5 %
#          (ACPC, Chorowski et al. 2021, aligned predictions: 68.6 %; TRAIN_OVERRIDES=
#          "loss.kind=acpc model.n_steps=5 loss.acpc_horizon=12" on either preset)
#
# Usage: recipes/librispeech/run.sh [--db DIR] [--align DIR] [--exp DIR] [--preset P] [--stage N] [--stop-stage M]
#   --preset P   paper (default: conf/cpc.yaml) or cpc2 (conf/cpc2.yaml); --conf YAML for another
#   --db DIR     where LibriSpeech is / goes (default downloads/librispeech); a local
#                copy in the corpus layout works too (the tests use ../shared/data/librispeech-sample)
#   --align DIR  converted_aligned_phones.txt, train_split.txt, test_split.txt
#                (default DB/alignments)
#   stage 0: download train-clean-100 (openslr.org/12) and the alignments (local/download.sh)
#   stage 1: prepare Kaldi data dirs and labels (local/prepare_data.py)
#   stage 2: train CPC (conf/cpc.yaml; TRAIN_OVERRIDES="key=value ..." to change it)
#   stage 3: extract CPC c, random-init c, MFCC (+ no-CMVN MFCC for speakers)
#   stage 4: phone probe (41 classes, paper's split files)
#   stage 5: speaker probe (utterance and window level) and the table
#   stage 6: CTC phone recogniser (BiLSTM, SUPERB PR style) on frozen c, MFCC and
#            random-init c; phone error rate on the test split (CTC_OPTS="--epochs 5"
#            to change it). SUPERB PR for reference (its own protocol: lexicon phones,
#            dev/test-clean): modified CPC 42.54 PER, FBANK 82.01. Here the targets are
#            the published alignments with runs merged and p00 (silence) dropped.
# Finished stages leave EXP/.done.N and are skipped on a rerun; logs in EXP/log/.

set -euo pipefail
cd "$(dirname "$0")/../.."

stage=0
stop_stage=6
db=downloads/librispeech
align=
exp=exp/librispeech
conf=
preset=paper
. recipes/common/parse_options.sh
case "$preset" in
  paper) conf=${conf:-recipes/librispeech/conf/cpc.yaml}; expect="64.6" ;;
  cpc2) conf=${conf:-recipes/librispeech/conf/cpc2.yaml}; expect="67.5" ;;
  *) echo "$0: --preset $preset: one of paper, cpc2" >&2; exit 2 ;;
esac
align=${align:-$db/alignments}

cpc() { python -m cpc_seq "$@"; }
data=$exp/data
feats=$exp/feats
ckpt=$exp/cpc/last.pt

stage0() {
  if [ -f "$align/converted_aligned_phones.txt" ] && find "$db" -name "*.flac" -print -quit | grep -q .; then
    log "found audio under $db and alignments in $align; nothing to download"
  else
    bash recipes/librispeech/local/download.sh "$db"
  fi
}
stage1() {
  python recipes/librispeech/local/prepare_data.py "$db" "$align" "$data"
  cpc audio validate "$data/all" --labels "$data/labels.txt" --phones "$data/phones.txt"
}
stage2() {
  # shellcheck disable=SC2086
  cpc audio train --config "$conf" data.train="$data/train" train.out_dir="$exp/cpc" ${TRAIN_OVERRIDES:-}
}
stage3() {
  local src="scp:$data/all/wav.scp"
  cpc audio extract --ckpt "$ckpt" --layer c --skip-existing \
    --write-num-frames "ark,t:$feats/c.utt2num_frames" "$src" "ark,scp:$feats/c.ark,$feats/c.scp"
  cpc audio extract --ckpt "$ckpt" --layer c --random-init --skip-existing "$src" "ark,scp:$feats/rand_c.ark,$feats/rand_c.scp"
  cpc audio extract --mfcc --skip-existing "$src" "ark,scp:$feats/mfcc.ark,$feats/mfcc.scp"
  cpc audio extract --mfcc --no-cmvn --skip-existing "$src" "ark,scp:$feats/mfcc_raw.ark,$feats/mfcc_raw.scp"
}
split_args=(--train-split "$data/train_split.txt" --test-split "$data/test_split.txt")
stage4() {
  for entry in "c:CPC c" "mfcc:MFCC+d+dd (CMVN)" "rand_c:random-init c"; do
    cpc audio probe phone --no-progress --feats "scp:$feats/${entry%%:*}.scp" "${split_args[@]}" \
      --labels "$data/labels.txt" --phones "$data/phones.txt" \
      --out "$exp/probe/phone_${entry%%:*}" --name "${entry#*:}"
  done
}
stage5() {
  for level in utterance window; do
    for entry in "c:CPC c" "mfcc_raw:MFCC+d+dd (no CMVN)" "rand_c:random-init c"; do
      cpc audio probe speaker --no-progress --level $level --feats "scp:$feats/${entry%%:*}.scp" \
        "${split_args[@]}" --utt2spk "$data/all/utt2spk" \
        --out "$exp/probe/speaker_${level}_${entry%%:*}" --name "${entry#*:}"
    done
  done
  cpc table "$exp"/probe/phone_*/result.json "$exp"/probe/speaker_*/result.json > "$exp/table.md.tmp"
  mv "$exp/table.md.tmp" "$exp/table.md"
}
stage6() {
  for entry in "c:CPC c" "mfcc:MFCC+d+dd (CMVN)" "rand_c:random-init c"; do
    # a result from an interrupted run is kept: delete it to retrain
    [ -f "$exp/ctc/${entry%%:*}/result.json" ] && continue
    # shellcheck disable=SC2086
    cpc audio ctc-probe --no-progress --feats "scp:$feats/${entry%%:*}.scp" "${split_args[@]}" \
      --labels "$data/labels.txt" --phones "$data/phones.txt" --ignore p00 \
      --out "$exp/ctc/${entry%%:*}" --name "${entry#*:}" ${CTC_OPTS:-}
  done
  cpc table "$exp"/ctc/{c,mfcc,rand_c}/result.json > "$exp/ctc.md.tmp"
  mv "$exp/ctc.md.tmp" "$exp/ctc.md"
}

mkdir -p "$exp"
run_stage 0 "download" stage0
run_stage 1 "prepare data" stage1
run_stage 2 "train CPC ($conf)" stage2
run_stage 3 "extract features" stage3
run_stage 4 "phone probe" stage4
run_stage 5 "speaker probe" stage5
run_stage 6 "CTC phone recogniser" stage6
if [ "$stop_stage" -ge 5 ] && [ -f "$exp/table.md" ]; then
  log "results (published, preset $preset: phone $expect / MFCC 39.7 / random 27.6; speaker 97.4 / MFCC 17.6):"
  cat "$exp/table.md"
fi
if [ "$stop_stage" -ge 6 ] && [ -f "$exp/ctc.md" ]; then
  log "CTC phone recogniser, phone error rate (SUPERB PR: modified CPC 42.54, FBANK 82.01):"
  cat "$exp/ctc.md"
fi
