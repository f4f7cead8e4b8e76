#!/usr/bin/env bash
# One row of the training-options comparison on the embedded corpus (data/tiny): train
# CPC single-threaded with recipes/tiny/conf/cpc.yaml and the given overrides, time it
# (user+sys CPU seconds from /usr/bin/time -v), extract c for the train and test splits
# and run the phone probe on c (as run.sh stages 1-3).
#
# Usage: recipes/tiny/local/quality_row.sh OUT NAME [key=value ...]
#   e.g. recipes/tiny/local/quality_row.sh exp/tiny_rows acpc train.schedule_clock=cpu \
#          train.max_cpu_minutes=4 train.steps=100000 loss.kind=acpc model.n_steps=6
#   prints: NAME | CPU s | steps | phone %   (and writes OUT/NAME/row.txt)
set -euo pipefail
out=$1 name=$2; shift 2
data=data/tiny dir=$out/$name
mkdir -p "$dir"
export OMP_NUM_THREADS=1
/usr/bin/time -v -o "$dir/time.txt" python -m cpc_seq audio train --config recipes/tiny/conf/cpc.yaml \
  train.out_dir="$dir/cpc" train.threads=1 train.progress=false train.max_minutes=0 \
  train.overwrite=true "$@" 2> "$dir/train.log"
cpu=$(awk -F: '/User time|System time/ {s += $2} END {printf "%.0f", s}' "$dir/time.txt")
steps=$(tail -1 "$dir/cpc/log.jsonl" | python -c 'import json,sys; print(json.load(sys.stdin)["step"])')
for split in train test; do
  python -m cpc_seq audio extract --ckpt "$dir/cpc/last.pt" --layer c --threads 1 \
    "scp:$data/$split/wav.scp" "ark,scp:$dir/c_$split.ark,$dir/c_$split.scp" 2>> "$dir/extract.log"
done
python -m cpc_seq audio probe phone --no-progress \
  --train-feats "scp:$dir/c_train.scp" --test-feats "scp:$dir/c_test.scp" \
  --labels "$data/train/phone_frames.txt" --test-labels "$data/test/phone_frames.txt" \
  --phones "$data/phones.txt" --out "$dir/phone" --name "$name" > "$dir/phone.log" 2>&1
acc=$(python -c "import json,sys; print(format(100 * json.load(open(sys.argv[1]))['accuracy'], '.1f'))" "$dir/phone/result.json")
echo "$name | $cpu | $steps | $acc" | tee "$dir/row.txt"
