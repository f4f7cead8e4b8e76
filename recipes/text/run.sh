#!/usr/bin/env bash
# recipes/text/run.sh: text CPC on the embedded King James Bible corpus (data/text), and a
# second task built from the Debian package `fortunes`.
# Trains a sentence-level CPC model (the CPC paper's NLP model) and a token-level (byte)
# CPC model, then probes sentence embeddings for the book group a sentence comes from
# (8 classes: law, history, wisdom, major/minor prophets, gospels+acts, pauline, general
# epistles+revelation). Every feature row uses the same probe: a logistic regression
# whose C is chosen on a dev split of the probe's training items (scikit-learn); the
# baselines are the same encoders with random weights, a TF-IDF word 1+2-gram bag of
# words with the same tuned logistic regression, and the majority class.
# Stages 5-7: which of 16 fortune collections (/usr/share/games/fortunes; install with
# `apt-get install -y fortunes`) a fortune comes from, with the same rows; a sentence-level
# model is trained on the training fortunes, one document per collection.
#
# Usage: recipes/text/run.sh [--stage N] [--stop-stage M] [--exp DIR] [--threads N]
#          [--fortunes DIR] [--fortune-collections a,b,...]
#   stage 0: labelled probe sets (8000 train-split sentences, all test-split sentences)
#   stage 1: train sentence-level CPC (conf/sentence.yaml)
#   stage 2: train token-level CPC (conf/token.yaml)
#   stage 3: extract one vector per probe sentence (CPC and random-init)
#   stage 4: probes and the table (exp/text/table.md)
#   stage 5: fortunes: corpus and probe sets (local/make_fortunes.py)
#   stage 6: fortunes: train sentence-level CPC (conf/fortunes.yaml)
#   stage 7: fortunes: extract, probes and the table (exp/text/fortunes/table.md)
# Finished stages leave $exp/.done.N and are skipped on a rerun; logs in $exp/log/.
# Extra training overrides: SENT_OVERRIDES="train.steps=100" TOKEN_OVERRIDES="..."
# FORTUNE_OVERRIDES="..."

set -euo pipefail
cd "$(dirname "$0")/../.."   # repository root: paths below are relative to it

stage=0
stop_stage=7
exp=exp/text
corpus=data/text/kjv
books=data/text/books.tsv
probe_train=8000
fortunes=/usr/share/games/fortunes
# the 16 collections of the Debian package `fortunes` with at least 300 fortunes (other
# fortune packages add files to the same folder; they are not part of this task)
fortune_collections=computers,cookie,definitions,fortunes,knghtbrd,linux,men-women,miscellaneous,people,platitudes,politics,science,songs-poems,wisdom,work,zippy
threads=0
. recipes/common/parse_options.sh

txt() { python -m cpc_seq "$@"; }
data=$exp/data
feats=$exp/feats

stage0() {
  python recipes/text/local/make_probe_sets.py --corpus "$corpus" --books "$books" \
    --label group --train-sentences "$probe_train" --out "$data"
}

stage1() {
  # shellcheck disable=SC2086
  txt text train --config recipes/text/conf/sentence.yaml train.out_dir="$exp/sentence" \
    train.threads="$threads" ${SENT_OVERRIDES:-}
}

stage2() {
  # shellcheck disable=SC2086
  txt text train --config recipes/text/conf/token.yaml train.out_dir="$exp/token" \
    train.threads="$threads" ${TOKEN_OVERRIDES:-}
}

extract() {  # extract DATA FEATS NAME CKPT LAYER [extra options]
  local data=$1 feats=$2 name=$3 ckpt=$4 layer=$5; shift 5
  for set in probe_train probe_test; do
    txt text extract --ckpt "$ckpt" --layer "$layer" --pool mean --threads "$threads" \
      --skip-existing --no-progress "$@" \
      "text:$data/$set/text" "ark,scp:$feats/${name}_$set.ark,$feats/${name}_$set.scp"
  done
}

stage3() {
  # Sentence model: one sentence per item (no splitting), z = its embedding, c = the GRU
  # state after that one sentence. Token model: frames of the sentence, mean-pooled.
  extract "$data" "$feats" sent_z "$exp/sentence/last.pt" z --no-split
  extract "$data" "$feats" sent_c "$exp/sentence/last.pt" c --no-split
  extract "$data" "$feats" rand_sent_z "$exp/sentence/last.pt" z --no-split --random-init
  extract "$data" "$feats" rand_sent_c "$exp/sentence/last.pt" c --no-split --random-init
  extract "$data" "$feats" tok_c "$exp/token/last.pt" c
  extract "$data" "$feats" rand_tok_c "$exp/token/last.pt" c --random-init
}

probe() {  # probe DATA FEATS OUT TASK NAME FEATS_PREFIX [FEATS_PREFIX ...] (concatenated)
  local data=$1 feats=$2 out=$3 task=$4 name=$5; shift 5
  local args=() tag
  tag=$(IFS=+; echo "$*")
  for f in "$@"; do
    args+=(--train-feats "scp:$feats/${f}_probe_train.scp" --test-feats "scp:$feats/${f}_probe_test.scp")
  done
  txt text probe --task "$task" --threads "$threads" "${args[@]}" \
    --train-labels "$data/probe_train/utt2label" --test-labels "$data/probe_test/utt2label" \
    --out "$out/$tag" --name "$name"
}

baselines() {  # baselines DATA OUT TASK: tuned bag of words and the majority class
  local data=$1 out=$2 task=$3
  txt text probe --task "$task" --threads "$threads" --bow \
    --train-text "$data/probe_train/text" --test-text "$data/probe_test/text" \
    --train-labels "$data/probe_train/utt2label" --test-labels "$data/probe_test/utt2label" \
    --out "$out/bow" --name "bag of words (TF-IDF 1+2-grams, tuned logistic regression)"
  txt text probe --task "$task" --majority \
    --train-labels "$data/probe_train/utt2label" --test-labels "$data/probe_test/utt2label" \
    --out "$out/majority" --name "majority class"
}

stage4() {
  local t="book group" p=$exp/probe
  probe "$data" "$feats" "$p" "$t" "CPC sentence-level z" sent_z
  probe "$data" "$feats" "$p" "$t" "CPC sentence-level c (GRU, 1 sentence)" sent_c
  probe "$data" "$feats" "$p" "$t" "CPC sentence-level z and c concatenated" sent_z sent_c
  probe "$data" "$feats" "$p" "$t" "CPC token-level c (bytes, mean over frames)" tok_c
  probe "$data" "$feats" "$p" "$t" "random-init sentence encoder z" rand_sent_z
  probe "$data" "$feats" "$p" "$t" "random-init sentence z and c" rand_sent_z rand_sent_c
  probe "$data" "$feats" "$p" "$t" "random-init token-level c" rand_tok_c
  baselines "$data" "$p" "$t"
  txt table --out "$exp/table.md" "$p"/{sent_z,sent_c,sent_z+sent_c,tok_c,rand_sent_z,rand_sent_z+rand_sent_c,rand_tok_c,bow,majority}/result.json > /dev/null
}

fdata=$exp/fortunes/data
ffeats=$exp/fortunes/feats

stage5() {
  python recipes/text/local/make_fortunes.py --src "$fortunes" \
    --collections "$fortune_collections" --out "$fdata"
}

stage6() {
  # shellcheck disable=SC2086
  txt text train --config recipes/text/conf/fortunes.yaml data.train="$fdata/corpus/train" \
    data.dev="$fdata/corpus/dev" train.out_dir="$exp/fortunes/sentence" \
    train.threads="$threads" ${FORTUNE_OVERRIDES:-}
}

stage7() {
  local t="fortune file" p=$exp/fortunes/probe m=$exp/fortunes/sentence/last.pt
  extract "$fdata" "$ffeats" sent_z "$m" z --no-split
  extract "$fdata" "$ffeats" sent_c "$m" c --no-split
  extract "$fdata" "$ffeats" rand_sent_z "$m" z --no-split --random-init
  extract "$fdata" "$ffeats" rand_sent_c "$m" c --no-split --random-init
  probe "$fdata" "$ffeats" "$p" "$t" "CPC sentence-level z" sent_z
  probe "$fdata" "$ffeats" "$p" "$t" "CPC sentence-level z and c concatenated" sent_z sent_c
  probe "$fdata" "$ffeats" "$p" "$t" "random-init sentence encoder z" rand_sent_z
  probe "$fdata" "$ffeats" "$p" "$t" "random-init sentence z and c" rand_sent_z rand_sent_c
  baselines "$fdata" "$p" "$t"
  txt table --out "$exp/fortunes/table.md" "$p"/{sent_z,sent_z+sent_c,rand_sent_z,rand_sent_z+rand_sent_c,bow,majority}/result.json > /dev/null
}

mkdir -p "$exp"
SECONDS=0
run_stage 0 "probe sets ($corpus, labels: $books group)" stage0
run_stage 1 "train sentence-level CPC" stage1
run_stage 2 "train token-level CPC" stage2
run_stage 3 "extract sentence embeddings" stage3
run_stage 4 "book-group probes" stage4
run_stage 5 "fortunes: corpus and probe sets ($fortunes)" stage5
run_stage 6 "fortunes: train sentence-level CPC" stage6
run_stage 7 "fortunes: extraction and probes" stage7
log "done in $((SECONDS / 60)) min $((SECONDS % 60)) s"
if [ "$stop_stage" -ge 4 ] && [ -f "$exp/table.md" ]; then
  log "test-set book-group accuracy of a linear probe on sentence embeddings ($corpus):"
  cat "$exp/table.md"
fi
if [ "$stop_stage" -ge 7 ] && [ -f "$exp/fortunes/table.md" ]; then
  log "test-set accuracy of the fortune-collection probe:"
  cat "$exp/fortunes/table.md"
fi
