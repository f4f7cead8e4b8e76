#!/usr/bin/env bash
# recipes/tiny/local/cotrain_report.sh: CPC against the co-training objective
# (loss.kind=cotrain) on the embedded corpus at equal CPU time, one seed each
# (docs/mi_tools.md, "Co-training objective"). Trains both from recipes/tiny/conf/cpc.yaml
# for train.max_cpu_minutes of one thread, extracts c (both) and the codes (cotrain) of the
# train and test splits, probes phones on them (train -> test), and prints the codes' phone
# purity next to k-means units of the same count on each model's c.
#
# Usage: recipes/tiny/local/cotrain_report.sh [EXP_DIR [CPU_MINUTES [K [SEED]]]]
#   SEED (default 0) is train.seed of both runs; give each seed its own EXP_DIR.
# Finished steps are skipped on a rerun (their outputs exist).
set -euo pipefail
cd "$(dirname "$0")/../../.."
exp=${1:-exp/cotrain}
minutes=${2:-5}
codes=${3:-64}
seed=${4:-0}
data=data/tiny
export OMP_NUM_THREADS=1
cpc() { .venv/bin/python -m cpc_seq "$@"; }
common=(train.max_cpu_minutes="$minutes" train.schedule_clock=cpu train.threads=1
        train.progress=false train.seed="$seed")

[ -f "$exp/cpc/last.pt" ] || cpc audio train --config recipes/tiny/conf/cpc.yaml \
  train.out_dir="$exp/cpc" "${common[@]}"
[ -f "$exp/cotrain/last.pt" ] || cpc audio train --config recipes/tiny/conf/cpc.yaml \
  train.out_dir="$exp/cotrain" "${common[@]}" loss.kind=cotrain loss.cotrain_codes="$codes"

for run in cpc cotrain; do
  layers=(c); [ $run = cotrain ] && layers=(c codes)
  for layer in "${layers[@]}"; do
    for split in train test; do
      cpc audio extract --ckpt "$exp/$run/last.pt" --layer "$layer" --skip-existing \
        --no-progress "scp:$data/$split/wav.scp" \
        "ark,scp:$exp/feats/${run}_${layer}_$split.ark,$exp/feats/${run}_${layer}_$split.scp"
    done
    [ -f "$exp/probe/${run}_$layer/result.json" ] || cpc audio probe phone --no-progress \
      --train-feats "scp:$exp/feats/${run}_${layer}_train.scp" \
      --test-feats "scp:$exp/feats/${run}_${layer}_test.scp" \
      --labels "$data/train/phone_frames.txt" --test-labels "$data/test/phone_frames.txt" \
      --phones "$data/phones.txt" --out "$exp/probe/${run}_$layer" --name "$run $layer" \
      > /dev/null
  done
done
cpc table "$exp"/probe/{cpc_c,cotrain_c,cotrain_codes}/result.json

purity() { .venv/bin/python recipes/tiny/local/code_purity.py \
  --labels "$data/test/phone_frames.txt" --phones "$data/phones.txt" "$@"; }
purity --name "cotrain codes (argmax, test)" --per-code \
  "scp:$exp/feats/cotrain_codes_test.scp"
purity --name "cotrain codes (argmax, test), speaker purity" \
  --speakers "$data/test/utt2spk" "scp:$exp/feats/cotrain_codes_test.scp"
used=$(.venv/bin/python -c "import sys, numpy as np, kaldiio
print(len(set(np.concatenate([m.argmax(1) for _, m in kaldiio.load_scp_sequential(sys.argv[1])]).tolist())))" \
  "$exp/feats/cotrain_codes_test.scp")
for k in "$codes" "$used"; do  # as many units as the codes have, and as many as they use
  for run in cpc cotrain; do
    purity --name "$run c, k-means $k (fit on train, test)" --kmeans "$k" \
      --fit "scp:$exp/feats/${run}_c_train.scp" "scp:$exp/feats/${run}_c_test.scp"
  done
done
