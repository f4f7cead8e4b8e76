"""CPU seconds per training step of the option rows, side by side on one random batch
(32 x 0.3 s, the FSDD recipe's model, 1 thread): the ratios that set the step counts of
the equal-CPU comparison, each row relative to the recipe's earlier configuration
(``EARLIER``: InfoNCE with K=8 in fp32; the rows' overrides go on top). Rows ending in
``+bf16`` run under bf16 autocast (what ``train.precision: auto`` picks on a CPU with
avx512_bf16/amx_bf16). The rows are timed
in turn, ``--rounds`` times over, and each row's median is printed.

Usage: OMP_NUM_THREADS=1 python recipes/fsdd/local/step_cost.py [--rounds 3]
"""

from __future__ import annotations

import time

import torch

from cpc_seq.audio.model.augment import Augmenter
from cpc_seq.audio.model.cpc import build_model
from cpc_seq.audio.train import _TrainStep, load_config
from cpc_seq.losses import kstep_infonce
from cpc_seq.losses.acpc import acpc_loss

#: The recipe's configuration before ACPC and bf16 became its defaults (InfoNCE, K=8,
#: fp32): every row starts from it, so the ratios stay those of the README's table.
EARLIER = ["loss.kind=infonce", "model.n_steps=8"]

ROWS = {
    "base": [],
    "transformer_shared": ["model.predictor=transformer_shared", "model.predictor_ff=512"],
    "cpc2": ["model.context=lstm", "model.context_layers=2", "model.predictor=transformer",
             "model.transformer_heads=8", "model.predictor_ff=2048",
             "model.predictor_dropout=0.5"],
    "acpc": ["loss.kind=acpc", "model.n_steps=4", "loss.acpc_horizon=8"],
    "augment": ["augment.noise_prob=0.3", "augment.speed_prob=0.3", "augment.reverb_prob=0.3",
                "augment.bandreject_prob=0.3"],
    "base+bf16": [],
    "acpc+bf16": ["loss.kind=acpc", "model.n_steps=4", "loss.acpc_horizon=8"],
}


def step_cost(overrides: list[str], bf16: bool = False, reps: int = 8) -> float:
    cfg = load_config("recipes/fsdd/conf/cpc.yaml", EARLIER + overrides)
    model = build_model(cfg.model)
    step = _TrainStep(model)
    opt = torch.optim.Adam(model.parameters())
    aug = Augmenter(cfg.augment, 16000, torch.Generator().manual_seed(0)) \
        if cfg.augment.enabled else None

    def one() -> None:
        x, lengths = torch.randn(32, 4800), torch.full((32,), 4800)
        if aug is not None:
            x, lengths = aug(x, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            z, fl, p = step(x, lengths if bool((lengths < 4800).any()) else None)
            if cfg.loss.kind == "acpc":
                out = acpc_loss(p, z, fl, horizon=cfg.loss.acpc_horizon)
            else:
                out = kstep_infonce(p, z, fl)
        opt.zero_grad()
        out.loss.backward()
        opt.step()

    one()
    t = time.process_time()
    for _ in range(reps):
        one()
    return (time.process_time() - t) / reps


if __name__ == "__main__":
    import argparse
    import statistics

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    costs: dict[str, list[float]] = {name: [] for name in ROWS}
    for _ in range(args.rounds):
        for name, ov in ROWS.items():
            costs[name].append(step_cost(ov, bf16=name.endswith("+bf16")))
    base = statistics.median(costs["base"])
    for name in ROWS:
        cost = statistics.median(costs[name])
        print(f"{name}: {cost:.3f} CPU s/step ({cost / base:.2f}x)", flush=True)
