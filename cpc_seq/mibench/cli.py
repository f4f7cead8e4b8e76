"""``cpc-seq mi bench``: MI estimators against known MI; a table, CSV/JSON and a PNG.
``cpc-seq mi estimate``: every estimator on a given sample of pairs.

Examples::

    cpc-seq mi bench --out exp/mi_bench                  # quick grid, a few CPU-minutes
    cpc-seq mi bench --out exp/mi_bench_full --full      # every transform x dim x MI
    cpc-seq mi bench --estimators infonce,nwj --steps 200 --out /tmp/mb
    cpc-seq mi estimate npy:x.npy npy:y.npy              # one line per estimator
    cpc-seq mi estimate --estimator mienf --estimator ksg --shift 2 \
        scp:exp/c/feats.scp scp:exp/z/feats.scp          # I(c_t; z_{t+2})
    cpc-seq mi info-plane --out exp/ip_fmnist            # noisy convnet, Fashion-MNIST
    cpc-seq mi info-plane --model exp/run/last.pt --data data/tiny/dev --out exp/ip_cpc

``cpc_seq.cli`` registers the commands with :func:`register`.
"""

from __future__ import annotations

import argparse
import sys

import torch

from cpc_seq.errors import ConfigError

__all__ = ["register", "cmd_mi_bench", "cmd_mi_estimate", "register_mi_estimate",
           "cmd_info_plane", "register_info_plane"]

DEFAULT_STEPS, FULL_STEPS = 800, 3000


def cmd_beyond_normal(args: argparse.Namespace) -> int:
    """``--suite beyond-normal``: score every estimator, print the table."""
    from cpc_seq.mibench.beyond_normal import beyond_normal_tasks
    from cpc_seq.mibench.bn_run import format_bn_table, run_beyond_normal, summarise
    from cpc_seq.mibench.estimate import ESTIMATORS, CriticConfig
    from cpc_seq.mibench.mienf import MienfConfig

    names = [v.strip() for v in args.estimators.split(",") if v.strip()] or list(ESTIMATORS)
    bad = [n for n in names if n not in ESTIMATORS]
    if bad:
        raise ConfigError(f"estimators: choose from {', '.join(ESTIMATORS)} (got {bad[0]})")
    try:
        ns = [int(v) for v in args.ns.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--ns: a comma list of sample sizes, got {args.ns!r}") from None
    if not ns or min(ns) < 20 or args.seeds < 1 or args.mienf_steps < 1:
        raise ConfigError("--ns: sizes >= 20; --seeds and --mienf-steps: >= 1")
    if args.suite == "images":
        from cpc_seq.mibench.image_tasks import image_tasks

        tasks = image_tasks(compression=args.image_compression)
    else:
        tasks = beyond_normal_tasks()
    if args.tasks:
        wanted = [w.strip().lower() for w in args.tasks.split(",") if w.strip()]
        tasks = [t for t in tasks if any(w in t.name.lower() for w in wanted)]
        if not tasks:
            raise ConfigError(f"--tasks {args.tasks!r} matches no task")
    if args.max_tasks:
        tasks = tasks[: args.max_tasks]
    rows = run_beyond_normal(
        tasks, names, ns, args.seeds, args.out,
        mienf=MienfConfig(steps=args.mienf_steps),
        critic=CriticConfig(steps=args.steps or 1000, batch_size=args.batch_size, lr=args.lr,
                            hidden=args.hidden, embed=args.embed, smile_tau=args.smile_tau,
                            mine_rate=args.mine_rate),
        progress=not args.no_progress)
    print(format_bn_table(summarise(rows)), end="")
    print(f"wrote {args.out}/table.md, results.csv, rows.jsonl, heatmap.png", file=sys.stderr)
    return 0


def cmd_mi_bench(args: argparse.Namespace) -> int:
    """Run the benchmark and print the markdown table."""
    from cpc_seq.mibench.run import (
        BENCH_ESTIMATORS,
        BenchConfig,
        default_tasks,
        full_tasks,
        run_bench,
    )

    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.suite in ("beyond-normal", "images"):
        return cmd_beyond_normal(args)
    if not args.estimators:
        args.estimators = ",".join(BENCH_ESTIMATORS)
    steps = args.steps or (FULL_STEPS if args.full else DEFAULT_STEPS)
    names = [v.strip() for v in args.estimators.split(",") if v.strip()]
    cfg = BenchConfig(estimators=names, batch_size=args.batch_size, steps=steps,
                      eval_batches=args.eval_batches, lr=args.lr, critic=args.critic,
                      hidden=args.hidden, embed=args.embed, smile_tau=args.smile_tau,
                      mine_rate=args.mine_rate, seed=args.seed)
    cfg.validate()
    tasks = full_tasks() if args.full else default_tasks()
    if args.max_tasks:
        tasks = tasks[: args.max_tasks]
    rows = run_bench(tasks, cfg, args.out, progress=not args.no_progress)
    from cpc_seq.mibench.run import format_table

    print(format_table(rows, cfg), end="")
    print(f"wrote {args.out}/table.md, results.csv, results.json, mi_bench.png", file=sys.stderr)
    return 0


def cmd_mi_estimate(args: argparse.Namespace) -> int:
    """Print ``<estimator> <estimate> nats`` for each requested estimator."""
    import numpy as np

    from cpc_seq.mibench.estimate import ESTIMATORS, CriticConfig, timed_estimate
    from cpc_seq.mibench.inputs import load_pair
    from cpc_seq.mibench.mienf import MienfConfig

    names = args.estimator or list(ESTIMATORS)
    bad = [n for n in names if n not in ESTIMATORS]
    if bad:
        raise ConfigError(f"--estimator {bad[0]}: choose from {', '.join(ESTIMATORS)}")
    for key in ("max_pairs", "steps", "critic_steps", "ksg_k"):
        if getattr(args, key) < 0 or (key != "max_pairs" and getattr(args, key) == 0):
            raise ConfigError(f"--{key.replace('_', '-')} must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y = load_pair(args.x, args.y, shift=args.shift)
    if args.max_pairs and x.shape[0] > args.max_pairs:
        keep = np.sort(np.random.default_rng(args.seed).choice(x.shape[0], args.max_pairs,
                                                               replace=False))
        x, y = x[keep], y[keep]
    print(f"{x.shape[0]} pairs, d_x = {x.shape[1]}, d_y = {y.shape[1]}", file=sys.stderr)
    mcfg = MienfConfig(flow=args.flow, steps=args.steps)
    ccfg = CriticConfig(steps=args.critic_steps)
    for name in names:
        value, cpu = timed_estimate(name, x, y, seed=args.seed, mienf=mcfg, critic=ccfg,
                                    ksg_k=args.ksg_k)
        print(f"{name} {value:.3f} nats", flush=True)
        print(f"  ({name}: {cpu:.1f} CPU-s)", file=sys.stderr)
    return 0


def register_mi_estimate(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mi-estimate`` (``func`` = :func:`cmd_mi_estimate`)."""
    from cpc_seq.mibench.estimate import ESTIMATORS
    from cpc_seq.mibench.mienf import FLOWS

    p = subparsers.add_parser(
        "mi-estimate", help="estimate I(X; Y) of paired samples with every MI estimator",
        description="Estimate the mutual information of paired samples X, Y (nats), one "
        "line per estimator: normalizing-flow MIENF (full and tridiagonal Gaussian base), "
        "KSG k-NN, CCA (Gaussian closed form) and the critic bounds InfoNCE, DV, NWJ, MINE, "
        "SMILE, JSD. X and Y: npy:FILE.npy holding an (N, d) array, or per-utterance "
        "features (scp:FEATS.scp or npy:DIR), frame t of X paired with frame t + shift of Y.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("x", help="npy:FILE.npy, npy:DIR or scp:FEATS.scp")
    p.add_argument("y", help="same kind as X, rows/frames paired with X")
    p.add_argument("--estimator", action="append", choices=ESTIMATORS, metavar="NAME",
                   help=f"estimator to run (repeat for several; default all: "
                   f"{', '.join(ESTIMATORS)})")
    p.add_argument("--shift", type=int, default=0,
                   help="pair frame t of X with frame t + shift of Y (features only)")
    p.add_argument("--max-pairs", type=int, default=20000,
                   help="estimate on a random subset of this many pairs (0 = all)")
    p.add_argument("--flow", choices=FLOWS, default="nsf", help="MIENF's zuko flow")
    p.add_argument("--steps", type=int, default=1500, help="MIENF training steps (at most)")
    p.add_argument("--critic-steps", type=int, default=1000,
                   help="training steps of the critic bounds")
    p.add_argument("--ksg-k", type=int, default=5, help="KSG neighbours")
    p.add_argument("--seed", type=int, default=0, help="seed of subsets and training")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    p.set_defaults(func=cmd_mi_estimate)
    return p


def cmd_info_plane(args: argparse.Namespace) -> int:
    """Synthetic check, then the information plane of the convnet or of CPC checkpoints;
    writes ``info_plane.json`` and ``info_plane.png`` under ``--out``."""
    import json
    from pathlib import Path

    from cpc_seq.io.atomic import atomic_write
    from cpc_seq.mibench.info_plane import (
        ConvnetRun,
        InfoPlaneConfig,
        convnet_info_plane,
        cpc_info_plane,
        curves_json,
        plot_info_plane,
        synthetic_check,
    )

    cfg = InfoPlaneConfig(dim=args.dim, k=args.k, compression=args.compression,
                          estimator=args.estimator, noise_sigma=args.noise_sigma,
                          smooth=args.smooth, seed=args.seed)
    cfg.validate()
    if args.threads < 0 or args.check_size < 8 * args.k:
        raise ConfigError(f"--threads must be >= 0 and --check-size >= {8 * args.k}")
    if args.threads:
        torch.set_num_threads(args.threads)
    check = synthetic_check(n=args.check_size, dim=cfg.dim, k=cfg.k, seed=cfg.seed)
    print(f"synthetic check (N = {args.check_size}): true vs estimate, nats")
    for r in check:
        print(f"  {r['check']}: {r['true']:.3f} vs {r['estimate']:.3f}")

    def say(line: str) -> None:
        print(line, flush=True)

    if args.model:
        curves = cpc_info_plane(args.model, args.data, cfg, labels=args.labels,
                                phones=args.phones, n_frames=args.frames,
                                layers=[v for v in args.layers.split(",") if v] or None,
                                with_init=not args.no_init, progress=say)
        title = f"CPC layers vs phone labels, {curves.extra['frames']} frames of {args.data}"
    else:
        run = ConvnetRun(data_root=args.data_root, train_size=args.train_size,
                         eval_size=args.eval_size, epochs=args.epochs,
                         evals_per_epoch=args.evals_per_epoch, batch_size=args.batch_size,
                         lr=args.lr)
        curves = convnet_info_plane(run, cfg, progress=say)
        title = (f"noisy convnet on Fashion-MNIST ({run.train_size} train, "
                 f"{run.eval_size} test images)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "info_plane.json", "w") as f:
        json.dump(curves_json(curves, cfg, check), f, indent=1)
    plot_info_plane(curves, cfg, out / "info_plane.png", title=title)
    print(f"wrote {out}/info_plane.json, info_plane.png", file=sys.stderr)
    return 0


def register_info_plane(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``info-plane`` (``func`` = :func:`cmd_info_plane`)."""
    from cpc_seq.mibench.info_plane import COMPRESSORS, MI_ESTIMATORS

    p = subparsers.add_parser(
        "info-plane", help="information-plane analysis of a network's layers by lossy "
        "compression",
        description="Information-plane analysis by lossy compression (Butakov et al. "
        "2024): noisy layer outputs, input and layers compressed to a few dimensions, "
        "I(X; L) and I(L; Y) per layer from weighted Kozachenko-Leonenko (or KSG) k-NN "
        "entropies, smoothed curves. Runs a check on Gaussians / uniforms with known "
        "entropy and MI first. Without --model: a small noisy convnet trained on "
        "Fashion-MNIST, a point per layer a few times per epoch. With --model: a CPC audio "
        "model's layers (conv1..convL, c) against frame phone labels, a point per layer "
        "per checkpoint. Writes info_plane.json and info_plane.png under --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="exp/info_plane", help="output directory")
    p.add_argument("--model", action="append", metavar="CKPT",
                   help="audio CPC checkpoint (repeat for a trajectory, in order); "
                   "without it the Fashion-MNIST convnet is analysed")
    p.add_argument("--dim", type=int, default=4, help="dimensions of each compressed variable")
    p.add_argument("--k", type=int, default=5, help="neighbours of the k-NN estimators")
    p.add_argument("--compression", choices=COMPRESSORS, default="pca",
                   help="pca (whitened, scikit-learn) or ae (small MLP autoencoder)")
    p.add_argument("--estimator", choices=MI_ESTIMATORS, default="wkl",
                   help="I(X; L) from weighted Kozachenko-Leonenko entropies or KSG")
    p.add_argument("--noise-sigma", type=float, default=1e-3,
                   help="std of the additive Gaussian noise on layer outputs (and input)")
    p.add_argument("--smooth", type=float, default=1.0,
                   help="Gaussian smoothing width of the curves, in points (0 = none)")
    p.add_argument("--check-size", type=int, default=2000,
                   help="samples of the synthetic check at known entropy / MI")
    p.add_argument("--seed", type=int, default=0, help="seed of subsets, noise and training")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    g = p.add_argument_group("convnet on Fashion-MNIST (without --model)")
    g.add_argument("--data-root", default="/usr/share/datasets/fashion-mnist",
                   help="Fashion-MNIST IDX files")
    g.add_argument("--train-size", type=int, default=10000, help="training images")
    g.add_argument("--eval-size", type=int, default=2000,
                   help="test images the MI is estimated on")
    g.add_argument("--epochs", type=int, default=8, help="training epochs")
    g.add_argument("--evals-per-epoch", type=int, default=2, help="points per epoch")
    g.add_argument("--batch-size", type=int, default=100, help="training batch size")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    g = p.add_argument_group("CPC audio model (with --model)")
    g.add_argument("--data", default="data/tiny/dev", help="Kaldi data dir")
    g.add_argument("--labels", help="frame labels (default DATA/phone_frames.txt)")
    g.add_argument("--phones", help="phone table (default DATA/phones.txt or its parent's)")
    g.add_argument("--frames", type=int, default=4000, help="random frames analysed")
    g.add_argument("--layers", default="",
                   help="comma list of layers (default every conv layer and c)")
    g.add_argument("--no-init", action="store_true",
                   help="leave out the randomly initialised model at step 0")
    p.set_defaults(func=cmd_info_plane)
    return p


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mi-bench``, ``mi-estimate`` and ``info-plane`` to an ``add_subparsers()`` object; returns the
    ``mi-bench`` parser (``func`` = :func:`cmd_mi_bench`)."""
    from cpc_seq.mibench.critics import CRITICS
    from cpc_seq.mibench.run import BENCH_ESTIMATORS

    register_mi_estimate(subparsers)
    register_info_plane(subparsers)
    p = subparsers.add_parser(
        "mi-bench", help="check the MI estimators against tasks with known MI",
        description="Train one small critic per estimator x task (correlated Gaussians "
        "and MI-preserving transforms of them, MI known in closed form), estimate the MI "
        "and write table.md, results.csv, results.json and mi_bench.png (estimate vs truth "
        "with the InfoNCE log N ceiling).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="exp/mi_bench", help="output directory")
    p.add_argument("--suite", choices=("gaussian", "beyond-normal", "images"),
                   default="gaussian",
                   help="gaussian: fresh-batch critics on correlated Gaussians and their "
                   "transforms; beyond-normal: the 40 tasks of Czyz et al. 2023, every "
                   "estimator on fixed samples of N pairs (table.md, heatmap.png); images: "
                   "Gaussian bumps 16x16 (2-D latent) and rectangles 32x32 (4-D latent) at "
                   "MI 1..10 nats, compressed to the latent dimension first, scored the same "
                   "way")
    p.add_argument("--image-compression", choices=("pca", "ae"), default="pca",
                   help="images: compress each image to its latent dimension by whitened "
                   "PCA or a small autoencoder")
    p.add_argument("--full", action="store_true",
                   help="full grid: 4 transforms x dim {2, 5} x MI {0..10 step 2}")
    p.add_argument("--estimators", default="",
                   help=f"comma list of estimators (default: {','.join(BENCH_ESTIMATORS)}; "
                   "with --suite beyond-normal every estimator of mi-estimate)")
    p.add_argument("--steps", type=int, default=0,
                   help=f"critic training steps (0 = {DEFAULT_STEPS}, {FULL_STEPS} with --full, "
                   "1000 with --suite beyond-normal)")
    p.add_argument("--ns", default="1000,5000,10000",
                   help="beyond-normal, images: comma list of sample sizes N")
    p.add_argument("--seeds", type=int, default=1, help="beyond-normal: samples per task and N")
    p.add_argument("--tasks", default="",
                   help="beyond-normal: comma list of substrings; run the tasks whose name "
                   "contains one (case-insensitive)")
    p.add_argument("--mienf-steps", type=int, default=1500,
                   help="beyond-normal: MIENF training steps (at most; early stopping)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="pairs per batch N (InfoNCE is capped at log N)")
    p.add_argument("--eval-batches", type=int, default=20,
                   help="fresh batches the estimate is averaged over")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--critic", choices=CRITICS, default="separable", help="critic type")
    p.add_argument("--hidden", type=int, default=64, help="critic MLP width")
    p.add_argument("--embed", type=int, default=32, help="separable critic embedding size")
    p.add_argument("--smile-tau", type=float, default=5.0, help="SMILE clip tau")
    p.add_argument("--mine-rate", type=float, default=0.01,
                   help="weight of a new batch in MINE's moving average")
    p.add_argument("--max-tasks", type=int, default=0,
                   help="run only the first N tasks of the grid (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="seed of critics and samples")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_mi_bench)
    return p
