#!/usr/bin/env bash
# One row of the training-options comparison on FSDD: train CPC single-threaded with
# the given overrides, time it (user+sys CPU seconds from /usr/bin/time -v), extract c
# for every utterance and run the phone and speaker probes on c (as run.sh stages 2-4).
# Needs the data dirs of run.sh stage 0 in DATA.
#
# Usage: recipes/fsdd/local/quality_row.sh DATA OUT NAME [key=value ...]
#   prints: NAME | CPU s | steps | phone % | speaker %   (and writes OUT/NAME/row.txt)
set -euo pipefail
data=$1 out=$2 name=$3; shift 3
dir=$out/$name
mkdir -p "$dir"
export OMP_NUM_THREADS=1
/usr/bin/time -v -o "$dir/time.txt" python -m cpc_seq audio train --config recipes/fsdd/conf/cpc.yaml \
  data.train="$data/train" train.out_dir="$dir/cpc" train.threads=1 train.progress=false \
  train.max_minutes=0 train.overwrite=true "$@" 2> "$dir/train.log"
cpu=$(awk -F: '/User time|System time/ {s += $2} END {printf "%.0f", s}' "$dir/time.txt")
steps=$(tail -1 "$dir/cpc/log.jsonl" | python -c 'import json,sys; print(json.load(sys.stdin)["step"])')
python -m cpc_seq audio extract --ckpt "$dir/cpc/last.pt" --layer c --threads 1 \
  "scp:$data/all/wav.scp" "ark,scp:$dir/c.ark,$dir/c.scp" 2> "$dir/extract.log"
python -m cpc_seq audio probe phone --no-progress --feats "scp:$dir/c.scp" \
  --train-split "$data/train_split.txt" --test-split "$data/test_split.txt" \
  --labels "$data/all/phone_frames.txt" --phones "$data/phones.txt" \
  --out "$dir/phone" --name "$name" > "$dir/phone.log" 2>&1
python -m cpc_seq audio probe speaker --no-progress --feats "scp:$dir/c.scp" \
  --train-split "$data/train_split.txt" --test-split "$data/test_split.txt" \
  --utt2spk "$data/all/utt2spk" --out "$dir/speaker" --name "$name" > "$dir/speaker.log" 2>&1
acc() { python -c "import json,sys; print(format(100 * json.load(open(sys.argv[1]))['accuracy'], '.1f'))" "$1"; }
echo "$name | $cpu | $steps | $(acc "$dir/phone/result.json") | $(acc "$dir/speaker/result.json")" | tee "$dir/row.txt"
