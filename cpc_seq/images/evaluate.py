"""Linear probes for DIM/AMDIM: frozen features vs raw pixels vs a random-init encoder.

:func:`run_probes` extracts the chosen features of a trained checkpoint and of the same
architecture with random weights, adds raw pixels, trains one linear probe per feature set
(:func:`cpc_seq.probes.linear.train_linear_probe`, standardised inputs, Adam) on the
labelled training split and reports test accuracy in one markdown table.

Feature names: DIM ``y`` (global vector), ``local`` (M average-pooled to ``grid x grid``),
``fc`` (hidden FC layer); AMDIM ``r1`` (1x1 score-space vector), ``h1`` (1x1 trunk
vector), ``local`` (7x7 trunk map average-pooled to ``grid x grid``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from cpc_seq.errors import ConfigError, DataError
from cpc_seq.images.amdim import AMDIMModel
from cpc_seq.images.data import load_dataset, prepare
from cpc_seq.images.dim import DIMModel
from cpc_seq.images.train import load_image_model
from cpc_seq.io.atomic import atomic_write
from cpc_seq.io.tables import markdown_table, pct
from cpc_seq.probes.linear import (
    evaluate_probe,
    result_to_dict,
    save_confusion_csv,
    save_confusion_png,
    train_linear_probe,
)
from cpc_seq.probes.options import ProbeOptions

__all__ = ["FEATURES", "ProbeOptions", "extract_features", "raw_pixels", "run_probes",
           "format_table"]

FEATURES = {"dim": ("y", "local", "fc"), "amdim": ("r1", "h1", "local")}
DEFAULT_FEATURES = {"dim": ("y", "local"), "amdim": ("r1", "local")}
DESCRIPTIONS = {
    ("dim", "y"): "global Y",
    ("dim", "local"): "local M, {g}x{g} avg-pooled",
    ("dim", "fc"): "FC hidden layer",
    ("amdim", "r1"): "global r1 (score space)",
    ("amdim", "h1"): "global h1 (trunk)",
    ("amdim", "local"): "7x7 trunk map, {g}x{g} avg-pooled",
}


@torch.no_grad()
def extract_features(
    model: DIMModel | AMDIMModel, images: Tensor, dataset: str, size: int,
    names: Sequence[str], grid: int = 2, batch_size: int = 500, progress: bool = False,
    desc: str = "features",
) -> dict[str, Tensor]:
    """Features ``{name: (N, D) float32}`` of uint8 ``images (N, C, H, W)``, in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    chunks: dict[str, list[Tensor]] = {n: [] for n in names}
    starts = range(0, len(images), batch_size)
    for i in tqdm(starts, desc=desc, disable=not progress, unit="batch"):
        x = prepare(images[i : i + batch_size].to(device), dataset, size)
        feats = model.features(x, grid=grid)
        for n in names:
            chunks[n].append(feats[n].float().cpu())
    return {n: torch.cat(v) for n, v in chunks.items()}


def raw_pixels(images: Tensor) -> Tensor:
    """uint8 ``(N, C, H, W)`` -> ``(N, C*H*W)`` float pixels in [0, 1]."""
    return images.reshape(len(images), -1).float() / 255.0


def _probe_one(name: str, key: str, xtr: Tensor, ytr: Tensor, xte: Tensor, yte: Tensor,
               classes: list[str], out: Path, opt: ProbeOptions) -> dict[str, Any]:
    n_cls = len(classes)
    probe = train_linear_probe(
        xtr, ytr, num_classes=n_cls, epochs=opt.epochs, lr=opt.lr, batch_size=opt.batch_size,
        weight_decay=opt.weight_decay, seed=opt.seed, progress=opt.progress,
    )
    res = evaluate_probe(probe, xte, yte, n_cls)
    train_acc = evaluate_probe(probe, xtr, ytr, n_cls).accuracy
    d = result_to_dict(res, classes)
    d.update({"name": name, "key": key, "task": "image class", "probe": "linear",
              "train_accuracy": train_acc, "train_items": int(len(ytr)),
              "feature_dim": int(xtr.shape[1])})
    row_dir = out / key
    row_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(row_dir / "result.json", "w") as f:
        json.dump(d, f, indent=1)
    save_confusion_csv(res, row_dir / "confusion.csv", classes)
    save_confusion_png(res, row_dir / "confusion.png", classes, title=f"{name}: "
                       f"{100 * res.accuracy:.2f}%")
    return d


def run_probes(
    ckpt: str | Path, out: str | Path, *, features: Sequence[str] | None = None,
    baselines: Sequence[str] = ("random", "raw"), grid: int = 3, data_root: str | None = None,
    download: bool = False, options: ProbeOptions | None = None, device: str = "cpu",
    log: Any = print,
) -> list[dict[str, Any]]:
    """Probe a DIM/AMDIM checkpoint against baselines; writes ``out/<row>/result.json``,
    confusion CSV/PNG per row and ``out/table.md``; returns the result dicts in table order.

    ``baselines``: any of ``random`` (same architecture, random weights, same feature names)
    and ``raw`` (pixels in [0, 1]).
    """
    opt = options or ProbeOptions()
    out = Path(out)
    model, cfg, geo = load_image_model(ckpt, device=device)
    kind, dataset, size = cfg.kind, str(geo["dataset"]), int(geo["image_size"])
    names = tuple(features) if features else DEFAULT_FEATURES[kind]
    bad = [n for n in names if n not in FEATURES[kind]]
    if bad:
        raise ConfigError(f"unknown {kind} feature {bad[0]!r}; choose from {FEATURES[kind]}")
    bad = [b for b in baselines if b not in ("random", "raw")]
    if bad:
        raise ConfigError(f"unknown baseline {bad[0]!r}; choose from random, raw")
    if grid < 1:
        raise ConfigError(f"grid must be >= 1, got {grid}")
    root = data_root or cfg.data.root or None
    train = load_dataset(dataset, root, "train", download)  # the labelled training split
    train = train.subset(opt.train_subset, seed=opt.seed)
    test = load_dataset(dataset, root, "test", download)
    for split, d in (("train", train), ("test", test)):
        if bool((d.labels < 0).any()):
            raise DataError(f"{d.source}: the {split} split has unlabelled images; probes need labels")
    classes = train.classes or [str(i) for i in range(int(train.labels.max()) + 1)]
    log(f"probe: {kind} checkpoint {ckpt}; {len(train)} training / {len(test)} test images "
        f"of {dataset}; features {', '.join(names)}")

    sets: list[tuple[str, str, Tensor, Tensor]] = []
    label = kind.upper()
    encoders: list[tuple[str, str, DIMModel | AMDIMModel]] = [("trained", "", model)]
    if "random" in baselines:
        rnd, _, _ = load_image_model(ckpt, random_init=True, seed=opt.seed, device=device)
        encoders.append(("random init", "rand_", rnd))
    for tag, prefix, enc in encoders:
        ftr = extract_features(enc, train.images, dataset, size, names, grid,
                               progress=opt.progress, desc=f"{tag} train features")
        fte = extract_features(enc, test.images, dataset, size, names, grid,
                               progress=opt.progress, desc=f"{tag} test features")
        for n in names:
            desc = DESCRIPTIONS[(kind, n)].format(g=grid)
            sets.append((f"{label} {desc} ({tag})", prefix + n, ftr[n], fte[n]))
    if "raw" in baselines:
        sets.append(("raw pixels", "raw", raw_pixels(train.images), raw_pixels(test.images)))
    results = []
    for name, key, xtr, xte in sets:
        r = _probe_one(name, key, xtr, train.labels, xte, test.labels, classes, out, opt)
        log(f"{name}: test accuracy {100 * r['accuracy']:.2f}% (train "
            f"{100 * r['train_accuracy']:.2f}%, {r['feature_dim']}-dim)")
        results.append(r)
    table = format_table(results, title=f"{dataset} test accuracy, linear probe trained on "
                         f"{len(train)} images, {kind.upper()} checkpoint {ckpt}")
    with atomic_write(out / "table.md", "w") as f:
        f.write(table)
    return results


def format_table(results: Sequence[dict[str, Any]], title: str = "") -> str:
    """Markdown table: features | dim | test accuracy | train accuracy."""
    columns = (("features", lambda r: str(r["name"])), ("dim", lambda r: str(r["feature_dim"])),
               ("test accuracy", pct("accuracy", 2)), ("train accuracy", pct("train_accuracy", 2)))
    return markdown_table(results, columns, title=title)
