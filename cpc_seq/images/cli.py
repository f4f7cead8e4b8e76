"""``image-train`` and ``image-probe``: the DIM/AMDIM commands.

Examples::

    cpc-seq image train --config recipes/dim_fashion_mnist/conf/dim.yaml train.steps=200
    cpc-seq image train --config conf/amdim.yaml --resume
    cpc-seq image probe --ckpt exp/dim/last.pt --out exp/dim/probe

The ``cpc-seq`` front end (:mod:`cpc_seq.cli`) registers them with
:func:`add_image_commands`. Bad input prints ``error: <what and where>`` and exits with
status 2.
"""

from __future__ import annotations

import argparse
import sys

import torch

from cpc_seq.cliutil import add_train_command, print_metrics, train_overrides

__all__ = ["add_image_commands", "cmd_image_train", "cmd_image_probe"]


def cmd_image_train(args: argparse.Namespace) -> int:
    """Train DIM or AMDIM (``kind`` in the config)."""
    from cpc_seq.images.train import load_config, train

    cfg = load_config(args.config, train_overrides(args))
    print_metrics(train(cfg, resume=args.resume))
    return 0


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def cmd_image_probe(args: argparse.Namespace) -> int:
    """Linear probes: checkpoint features vs random init vs raw pixels, one table."""
    from cpc_seq.images.evaluate import format_table, run_probes
    from cpc_seq.probes.options import ProbeOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    opt = ProbeOptions(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                       weight_decay=args.weight_decay, seed=args.seed,
                       train_subset=args.probe_train, progress=not args.no_progress)
    baselines = [] if args.baselines == "none" else _csv(args.baselines)
    results = run_probes(
        args.ckpt, args.out, features=_csv(args.features) if args.features else None,
        baselines=baselines, grid=args.grid, data_root=args.data_root,
        download=args.download, options=opt, device=args.device,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    print(format_table(results), end="")
    return 0


def add_image_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``image-train`` and ``image-probe`` on a ``add_subparsers()`` object.

    Each parser gets ``func`` (its command function) as a default, so a caller can run
    ``args.func(args)``.
    """
    add_train_command(
        subparsers, "image-train", help="train DIM or AMDIM on images",
        description="Train DIM or AMDIM (kind: dim | amdim in the config). Overrides are "
        "key=value with dotted keys, e.g. train.steps=100 data.train_subset=5000.",
        config_help="YAML config (kind, data, dim, amdim, optim, train)", func=cmd_image_train,
    )

    q = subparsers.add_parser(
        "image-probe", help="linear probes on frozen DIM/AMDIM features vs baselines",
        description="Train a linear probe on frozen features of a DIM/AMDIM checkpoint, of "
        "the same encoder with random weights and of raw pixels; print one table.",
    )
    q.add_argument("--ckpt", required=True, help="image checkpoint (kind dim or amdim)")
    q.add_argument("--out", required=True, help="output dir (table.md, <row>/result.json)")
    q.add_argument("--features", default=None,
                   help="comma list: DIM y,local,fc; AMDIM r1,h1,local "
                   "(default: DIM y,local; AMDIM r1,local)")
    q.add_argument("--baselines", default="random,raw",
                   help="comma list of random,raw, or none (default random,raw)")
    q.add_argument("--grid", type=int, default=3,
                   help="local features are average-pooled to GRID x GRID (default 3)")
    q.add_argument("--data-root", default=None, help="data set dir (default: the checkpoint's)")
    q.add_argument("--download", action="store_true", help="fetch CIFAR-10/STL-10 if missing")
    q.add_argument("--probe-train", type=int, default=0,
                   help="train the probes on a random subset of this many images (0 = all)")
    q.add_argument("--epochs", type=int, default=20)
    q.add_argument("--lr", type=float, default=1e-3)
    q.add_argument("--batch-size", type=int, default=256)
    q.add_argument("--weight-decay", type=float, default=0.0)
    q.add_argument("--seed", type=int, default=0, help="probe seed and random-init seed")
    q.add_argument("--device", default="cpu")
    q.add_argument("--threads", type=int, default=0)
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=cmd_image_probe)
