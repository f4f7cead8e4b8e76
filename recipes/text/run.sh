#!/usr/bin/env bash
# recipes/text/run.sh: text CPC on the embedded King James Bible corpus (data/text).
# Trains a sentence-level CPC model (the CPC paper's NLP model) and a token-level (byte)
# CPC model, then a linear probe on sentence embeddings for the book group a sentence
# comes from (8 classes: law, history, wisdom, major/minor prophets, gospels+acts,
# pauline, general epistles+revelation), against a hashed unigram+bigram TF-IDF
# bag-of-words and the same encoders with random weights. About 6 minutes on 2 idle CPU cores
# (train.max_minutes: 4 + 3 minutes cap the trainings on slower machines).
#
# Usage: recipes/text/run.sh [--stage N] [--stop-stage M] [--exp DIR] [--threads N]
#   stage 0: labelled probe sets (8000 train-split sentences, all test-split sentences)
#   stage 1: train sentence-level CPC (conf/sentence.yaml)
#   stage 2: train token-level CPC (conf/token.yaml)
#   stage 3: extract one vector per probe sentence (CPC and random-init)
#   stage 4: probes and the table (exp/text/table.md)
# Finished stages leave $exp/.done.N and are skipped on a rerun; logs in $exp/log/.
# Extra training overrides: SENT_OVERRIDES="train.steps=100" TOKEN_OVERRIDES="..."

set -euo pipefail
cd "$(dirname "$0")/../.."   # repository root: paths below are relative to it

stage=0
stop_stage=4
exp=exp/text
corpus=data/text/kjv
books=data/text/books.tsv
probe_train=8000
threads=0
. recipes/common/parse_options.sh

txt() { python -m cpc_seq.text.cli "$@"; }
data=$exp/data
feats=$exp/feats

stage0() {
  python recipes/text/local/make_probe_sets.py --corpus "$corpus" --books "$books" \
    --label group --train-sentences "$probe_train" --out "$data"
}

stage1() {
  # shellcheck disable=SC2086
  txt text-train --config recipes/text/conf/sentence.yaml train.out_dir="$exp/sentence" \
    train.threads="$threads" ${SENT_OVERRIDES:-}
}

stage2() {
  # shellcheck disable=SC2086
  txt text-train --config recipes/text/conf/token.yaml train.out_dir="$exp/token" \
    train.threads="$threads" ${TOKEN_OVERRIDES:-}
}

extract() {  # extract NAME CKPT LAYER [extra options]
  local name=$1 ckpt=$2 layer=$3; shift 3
  for set in probe_train probe_test; do
    txt text-extract --ckpt "$ckpt" --layer "$layer" --pool mean --threads "$threads" \
      --skip-existing --no-progress "$@" \
      "text:$data/$set/text" "ark,scp:$feats/${name}_$set.ark,$feats/${name}_$set.scp"
  done
}

stage3() {
  # Sentence model: one sentence per item (no splitting), z = its embedding, c = the GRU
  # state after that one sentence. Token model: frames of the sentence, mean-pooled.
  extract sent_z "$exp/sentence/last.pt" z --no-split
  extract sent_c "$exp/sentence/last.pt" c --no-split
  extract rand_sent_z "$exp/sentence/last.pt" z --no-split --random-init
  extract tok_c "$exp/token/last.pt" c
  extract rand_tok_c "$exp/token/last.pt" c --random-init
}

probe() {  # probe NAME FEATS_PREFIX
  txt text-probe --task "book group" --threads "$threads" \
    --train-feats "scp:$feats/$2_probe_train.scp" --test-feats "scp:$feats/$2_probe_test.scp" \
    --train-labels "$data/probe_train/utt2label" --test-labels "$data/probe_test/utt2label" \
    --out "$exp/probe/$2" --name "$1"
}

stage4() {
  probe "CPC sentence-level z (spm 4000, conv, mean)" sent_z
  probe "CPC sentence-level c (GRU, 1 sentence)" sent_c
  probe "CPC token-level c (bytes, mean over frames)" tok_c
  probe "random-init sentence encoder z" rand_sent_z
  probe "random-init token-level c" rand_tok_c
  txt text-probe --task "book group" --threads "$threads" --bow \
    --train-text "$data/probe_train/text" --test-text "$data/probe_test/text" \
    --train-labels "$data/probe_train/utt2label" --test-labels "$data/probe_test/utt2label" \
    --out "$exp/probe/bow" --name "bag of words (hashed 1+2-gram TF-IDF)"
  txt text-table --out "$exp/table.md" "$exp"/probe/{sent_z,sent_c,tok_c,rand_sent_z,rand_tok_c,bow}/result.json > /dev/null
}

mkdir -p "$exp"
SECONDS=0
run_stage 0 "probe sets ($corpus, labels: $books group)" stage0
run_stage 1 "train sentence-level CPC" stage1
run_stage 2 "train token-level CPC" stage2
run_stage 3 "extract sentence embeddings" stage3
run_stage 4 "book-group probes" stage4
log "done in $((SECONDS / 60)) min $((SECONDS % 60)) s"
if [ "$stop_stage" -ge 4 ] && [ -f "$exp/table.md" ]; then
  log "test-set book-group accuracy of a linear probe on sentence embeddings ($corpus):"
  cat "$exp/table.md"
fi
