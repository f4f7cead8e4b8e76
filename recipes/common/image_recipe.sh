# Shared by the image recipes (recipes/{dim,amdim}_*/run.sh), sourced after
# parse_options.sh. The calling run.sh sets exp, conf, data, threads, kind (dim | amdim),
# features (image-probe --features), dataset (a name for the log) and defines stage0
# (get and check the data, described by $stage0_desc); optionally device (auto | cpu |
# cuda, default auto). Stages: 0 data, 1 train (EXP/KIND/last.pt, TensorBoard in
# EXP/KIND/tb), 2 linear probes -> EXP/table.md.
# Extra overrides: TRAIN_OVERRIDES="train.steps=100" PROBE_OPTS="--epochs 5" run.sh

img() { python -m cpc_seq "$@"; }
device=${device:-auto}
t0=$(date +%s)

image_train() {
  # shellcheck disable=SC2086
  img image train --config "$conf" data.root="$data" train.out_dir="$exp/$kind" \
    train.threads="$threads" train.device="$device" ${TRAIN_OVERRIDES:-}
}

image_probe() {
  local dev="$device"
  if [ "$dev" = auto ]; then
    dev=$(python -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
  fi
  # shellcheck disable=SC2086
  img image probe --ckpt "$exp/$kind/last.pt" --out "$exp/probe" --data-root "$data" \
    --features "$features" --device "$dev" --threads "$threads" --no-progress \
    ${PROBE_OPTS:-} > "$exp/table.md.tmp"
  mv "$exp/table.md.tmp" "$exp/table.md"
}

mkdir -p "$exp"
run_stage 0 "$stage0_desc" stage0
run_stage 1 "train ${kind^^} ($conf)" image_train
run_stage 2 "linear probes" image_probe
if [ "$stop_stage" -ge 2 ] && [ -f "$exp/table.md" ]; then
  log "$dataset test accuracy, linear probe on frozen features ($exp/probe/table.md):"
  cat "$exp/table.md"
fi
log "done in $(( $(date +%s) - t0 )) s"
