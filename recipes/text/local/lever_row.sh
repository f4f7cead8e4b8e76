#!/usr/bin/env bash
# One row of the sentence-CPC levers table (README "Text"): train $CONF (default
# conf/sentence.yaml; the table's rows: CONF=recipes/text/conf/sentence_conv.yaml) with
# the given overrides single-threaded (CPU seconds from /usr/bin/time), extract the
# mean-pooled z of the probe sentences and run the tuned logistic-regression probe on it.
# Needs the probe sets of recipes/text/run.sh stage 0 in DATA.
#
# Usage: recipes/text/local/lever_row.sh DATA OUT NAME [key=value ...]
#   e.g. recipes/text/local/lever_row.sh exp/text/data exp/levers bag3000 \
#          model.sentence_encoder=bag model.embed_dim=2400 train.steps=3000
#   prints: NAME | training CPU s | steps | probe z %   (and writes OUT/NAME/row.txt)
#   Environment: CKPT=best probes best.pt (lowest dev loss) instead of last.pt;
#   RANDOM_INIT=1 probes the same architecture with random weights (drawn with seed
#   RANDOM_SEED, default 0; give the folder of a trained run's cpc/ and time.txt);
#   TASK names the probe task in its result (default "book group"); LAYER=c or zc
#   probes c (the GRU state after the one sentence) or z and c concatenated instead of
#   z. The training command's last metrics line is kept in OUT/NAME/final.json
#   (seed_table.py reads it).
set -euo pipefail
data=$1 out=$2 name=$3; shift 3
dir=$out/$name
mkdir -p "$dir/feats"
export OMP_NUM_THREADS=1
if [ ! -f "$dir/cpc/last.pt" ]; then
  /usr/bin/time -v -o "$dir/time.txt" python -m cpc_seq text train \
    --config "${CONF:-recipes/text/conf/sentence.yaml}" train.out_dir="$dir/cpc" train.threads=1 \
    train.progress=false train.max_minutes=0 "$@" > "$dir/final.json" 2> "$dir/train.log"
fi
extra=()
[ -n "${RANDOM_INIT:-}" ] && extra=(--random-init --seed "${RANDOM_SEED:-0}")
probe=${LAYER:-z}                      # z, c, or zc (z and c concatenated)
feats=()
for layer in z c; do
  [[ $probe == *$layer* ]] || continue
  for set in probe_train probe_test; do
    [ -f "$dir/feats/${layer}_$set.scp" ] || python -m cpc_seq text extract \
      --ckpt "$dir/cpc/${CKPT:-last}.pt" --layer $layer --pool mean --threads 1 \
      --no-split --no-progress "${extra[@]}" "text:$data/$set/text" \
      "ark,scp:$dir/feats/${layer}_$set.ark,$dir/feats/${layer}_$set.scp" 2>> "$dir/extract.log"
  done
  feats+=(--train-feats "scp:$dir/feats/${layer}_probe_train.scp"
          --test-feats "scp:$dir/feats/${layer}_probe_test.scp")
done
python -m cpc_seq text probe --task "${TASK:-book group}" --threads 1 \
  --train-labels "$data/probe_train/utt2label" --test-labels "$data/probe_test/utt2label" \
  "${feats[@]}" --out "$dir/probe_$probe" --name "$name $probe" > "$dir/probe_$probe.log" 2>&1
cpu=$(awk -F: '/User time|System time/ {s += $2} END {printf "%.0f", s}' "$dir/time.txt")
steps=$(tail -1 "$dir/cpc/log.jsonl" | python -c 'import json,sys; print(json.load(sys.stdin)["step"])')
acc=$(python -c "import json,sys; print(format(100 * json.load(open(sys.argv[1]))['accuracy'], '.1f'))" "$dir/probe_$probe/result.json")
echo "$name | $cpu | $steps | $acc" | tee "$dir/row.txt"
