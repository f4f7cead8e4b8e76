"""Training loop for DIM and AMDIM: ``cpc-seq image-train --config conf.yaml [key=value ...]``.

One readable loop: a shuffled pass over the training images per epoch -> augmentation
(DIM: optional flips; AMDIM: two torchvision-augmented views) -> model loss through the
loss core -> Adam. DIM adds the prior discriminator's step with its own optimiser after
each encoder step (the adversarial game). An optional online linear probe learns to
classify the *detached* features of each batch (it never changes the encoder) and logs
its running accuracy, a cheap signal that the features are improving.

TensorBoard gets every scalar (``tb/``), ``log.jsonl`` one JSON line per logged step, a
tqdm bar the main ones. Checkpoints (``last.pt``) are written atomically and carry the
whole config as plain data with ``kind: "dim"`` or ``"amdim"``, the input geometry, the
optimisers and the RNG states, so ``--resume`` continues exactly.

Config sections: ``kind``, ``data`` (:class:`ImageDataConfig`), ``dim``
(:class:`~cpc_seq.images.dim.DIMConfig`), ``amdim``
(:class:`~cpc_seq.images.amdim.AMDIMConfig`), ``optim`` (:class:`ImageOptimConfig`),
``train`` (:class:`ImageRunConfig`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from tqdm import tqdm

from cpc_seq.audio.train import OptimConfig, lr_at, resolve_device
from cpc_seq.config import apply_overrides, check, from_dict, load_yaml, to_dict
from cpc_seq.engine.util import NonFiniteGuard, ScalarLog, clip_grad_norm, set_lr
from cpc_seq.errors import CheckpointError, ConfigError, CpcSeqError
from cpc_seq.images.amdim import (
    SUPPORTED_SIZES,
    AMDIMConfig,
    AMDIMModel,
    build_amdim,
    make_view_transform,
    two_views,
)
from cpc_seq.images.data import DATASETS, ImageArrays, load_dataset, prepare
from cpc_seq.images.dim import DIMConfig, DIMModel, build_dim
from cpc_seq.io.checkpoint import atomic_write, load_checkpoint, save_checkpoint

KINDS = ("dim", "amdim")


@dataclass
class ImageDataConfig:
    """Training images.

    ``root``: data set directory ("" = the default of :data:`cpc_seq.images.data.DEFAULT_ROOTS`);
    ``train_split``: ``train`` (STL-10 also ``unlabeled``, ``train+unlabeled``);
    ``train_subset``: use a random subset of this many training images (0 = all);
    ``image_size``: model input side (0 = native; STL-10 defaults to 64);
    ``augment``: ``auto`` (DIM: ``flip``, AMDIM: ``amdim``), ``none``, ``flip``, ``amdim``.
    """

    dataset: str = "fashion_mnist"
    root: str = ""
    download: bool = False
    train_split: str = "train"
    train_subset: int = 0
    image_size: int = 0
    augment: str = "auto"
    batch_size: int = 128

    def validate(self) -> None:
        check(self.dataset in DATASETS, "data.dataset", f"one of {DATASETS}")
        check(self.train_subset >= 0, "data.train_subset", "must be >= 0 (0 = all)")
        check(self.image_size >= 0, "data.image_size", "must be >= 0 (0 = native)")
        check(self.augment in ("auto", "none", "flip", "amdim"), "data.augment",
              "auto, none, flip or amdim")
        check(self.batch_size >= 2, "data.batch_size", "must be >= 2 (negatives come from the batch)")


@dataclass
class ImageOptimConfig(OptimConfig):
    """The audio trainer's :class:`~cpc_seq.audio.train.OptimConfig` (Adam, warm-up, constant or
    cosine, gradient-norm clipping) with image defaults, plus ``prior_lr`` for DIM's prior
    discriminator (0 = ``lr``)."""

    warmup_steps: int = 0
    grad_clip: float = 10.0
    prior_lr: float = 0.0

    def validate(self) -> None:
        super().validate()
        check(self.prior_lr >= 0, "optim.prior_lr", "must be >= 0 (0 = lr)")


@dataclass
class ImageRunConfig:
    """Length of the run, outputs, device and bookkeeping."""

    out_dir: str = "exp/images"
    steps: int = 1000
    seed: int = 0
    log_every: int = 20
    save_every: int = 500
    max_minutes: float = 0.0
    threads: int = 0
    device: str = "auto"
    online_probe: bool = True
    max_bad_steps: int = 10
    progress: bool = True

    def validate(self) -> None:
        check(self.steps > 0, "train.steps", "must be positive")
        check(self.log_every > 0, "train.log_every", "must be positive")
        check(self.save_every > 0, "train.save_every", "must be positive")
        check(self.max_minutes >= 0, "train.max_minutes", "must be >= 0 (0 = no limit)")
        check(self.threads >= 0, "train.threads", "must be >= 0 (0 = torch default)")
        check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
              "train.device", "auto, cpu, cuda or cuda:N")
        check(self.max_bad_steps > 0, "train.max_bad_steps", "must be positive")


@dataclass
class ImageExperimentConfig:
    """Everything an image run needs, as plain data; stored in every checkpoint."""

    kind: str = "dim"
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    dim: DIMConfig = field(default_factory=DIMConfig)
    amdim: AMDIMConfig = field(default_factory=AMDIMConfig)
    optim: ImageOptimConfig = field(default_factory=ImageOptimConfig)
    train: ImageRunConfig = field(default_factory=ImageRunConfig)

    def validate(self) -> None:
        check(self.kind in KINDS, "kind", f"one of {KINDS}")
        if self.kind == "amdim" and self.data.image_size:
            check(self.data.image_size in SUPPORTED_SIZES, "data.image_size",
                  f"AMDIM supports {SUPPORTED_SIZES}")
        if self.kind == "dim" and self.data.image_size:
            check(self.data.image_size % 4 == 0, "data.image_size", "must be a multiple of 4")

    def augment(self) -> str:
        """``data.augment`` with ``auto`` resolved."""
        if self.data.augment != "auto":
            return self.data.augment
        return "amdim" if self.kind == "amdim" else "flip"


def load_config(path: str | Path | None, overrides: list[str] | None = None
                ) -> ImageExperimentConfig:
    """YAML file (optional) + ``key=value`` overrides -> validated config."""
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return from_dict(ImageExperimentConfig, data)


def image_size_for(cfg: ImageDataConfig, native: int) -> int:
    """Model input side: ``data.image_size`` or the native size (STL-10's 96 -> 64)."""
    if cfg.image_size:
        return cfg.image_size
    return 64 if native == 96 else native


def build_model(cfg: ImageExperimentConfig, channels: int, size: int) -> DIMModel | AMDIMModel:
    """The model of ``cfg.kind`` for ``channels`` x ``size`` x ``size`` inputs."""
    if cfg.kind == "dim":
        return build_dim(cfg.dim, channels, size)
    return build_amdim(cfg.amdim, channels, size)


def _load(path: str | Path, device: str | torch.device) -> dict[str, Any]:
    """:func:`load_checkpoint`, with any other failure of a corrupt file (e.g. a
    ``struct.error`` from a truncated pickle) turned into a :class:`CheckpointError`."""
    try:
        return load_checkpoint(path, map_location=device)
    except CpcSeqError:
        raise
    except Exception as e:  # corrupt files fail in many ways inside torch.load
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") \
            from None


def load_image_model(path: str | Path, random_init: bool = False, seed: int = 0,
                     device: str | torch.device = "cpu"
                     ) -> tuple[DIMModel | AMDIMModel, ImageExperimentConfig, dict[str, Any]]:
    """Rebuild a DIM/AMDIM model from a checkpoint (in eval mode).

    With ``random_init`` the same architecture is built with seed ``seed`` and the
    checkpoint's weights are not loaded (the random-encoder baseline). Returns the model,
    its config and the checkpoint's ``input`` record (``channels``, ``image_size``,
    ``dataset``).
    """
    st = _load(path, device)
    if st.get("kind") not in KINDS:
        raise CheckpointError(
            f"{path}: a {st.get('kind')!r} checkpoint, not an image model (dim or amdim)"
        )
    try:
        cfg = from_dict(ImageExperimentConfig, st["config"])
        geo = st["input"]
        channels, size = int(geo["channels"]), int(geo["image_size"])
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad image checkpoint config ({e})") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg, channels, size)
    if not random_init:
        try:
            model.load_state_dict(st["model"])
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not fit the config ({e})") from None
    return model.to(device).eval(), cfg, dict(geo)


def random_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    """Flip each image of ``(B, C, H, W)`` left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    out = images.clone()
    out[flip] = images[flip].flip(-1)
    return out


class ImageTrainer:
    """Owns model, optimisers, data and loop state; ``run()`` trains to ``train.steps``."""

    def __init__(self, cfg: ImageExperimentConfig, resume: bool = False,
                 train_data: ImageArrays | None = None) -> None:
        self.cfg = cfg
        run = cfg.train
        if run.threads:
            torch.set_num_threads(run.threads)
        self.device = resolve_device(run.device)
        self.out = Path(run.out_dir)
        d = cfg.data
        if train_data is None:
            train_data = load_dataset(d.dataset, d.root or None, d.train_split, d.download)
        self.data = train_data.subset(d.train_subset, seed=run.seed)
        self.size = image_size_for(d, self.data.size)
        self.channels = self.data.channels
        torch.manual_seed(run.seed)
        self.model = build_model(cfg, self.channels, self.size).to(self.device)
        if isinstance(self.model, DIMModel):
            enc_params = self.model.encoder_parameters()
            self.prior_opt: torch.optim.Optimizer | None = torch.optim.Adam(
                self.model.prior_parameters(), lr=cfg.optim.prior_lr or cfg.optim.lr,
                betas=(0.5, 0.999),
            )
        else:
            enc_params = list(self.model.parameters())
            self.prior_opt = None
        self.params = enc_params
        self.opt = torch.optim.Adam(enc_params, lr=cfg.optim.lr,
                                    weight_decay=cfg.optim.weight_decay)
        n_classes = len(self.data.classes) or int(self.data.labels.max()) + 1
        feat_dim = cfg.dim.y_dim if cfg.kind == "dim" else cfg.amdim.n_rkhs
        self.probe = nn.Linear(feat_dim, max(n_classes, 1)).to(self.device)
        self.probe_opt = torch.optim.Adam(self.probe.parameters(), lr=1e-3)
        self.gen = torch.Generator().manual_seed(run.seed + 17)
        self.transform = None
        if cfg.augment() == "amdim":
            self.transform = make_view_transform(self.channels, self.size, cfg.amdim.crop_scale)
        self.step = 0
        self.epoch = 0
        self.pos = 0
        self._order_cache: tuple[int, Tensor] | None = None
        self.guard = NonFiniteGuard(run.max_bad_steps, self.out / "last.pt")
        self.probe_hits = 0.0
        self.probe_seen = 0.0
        if resume:
            self._resume()

    # -- checkpoints -------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "kind": self.cfg.kind,
            "config": to_dict(self.cfg),
            "input": {"channels": self.channels, "image_size": self.size,
                      "dataset": self.cfg.data.dataset, "classes": list(self.data.classes)},
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "prior_optimizer": self.prior_opt.state_dict() if self.prior_opt else None,
            "probe": self.probe.state_dict(),
            "probe_optimizer": self.probe_opt.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "pos": self.pos,
            "rng_cpu": torch.get_rng_state(),
            "rng_gen": self.gen.get_state(),
            "rng_cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
        }

    def _resume(self) -> None:
        path = self.out / "last.pt"
        if not path.exists():
            raise CpcSeqError(f"--resume: no checkpoint {path} to resume from")
        st = _load(path, self.device)
        mine = to_dict(self.cfg)
        if st.get("kind") != self.cfg.kind or st["config"].get(self.cfg.kind) != mine[self.cfg.kind]:
            raise ConfigError(f"--resume: model config differs from the one in {path}")
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        if self.prior_opt is not None and st.get("prior_optimizer"):
            self.prior_opt.load_state_dict(st["prior_optimizer"])
        self.probe.load_state_dict(st["probe"])
        self.probe_opt.load_state_dict(st["probe_optimizer"])
        self.step, self.epoch, self.pos = int(st["step"]), int(st["epoch"]), int(st["pos"])
        torch.set_rng_state(st["rng_cpu"].cpu())
        self.gen.set_state(st["rng_gen"].cpu())
        if st.get("rng_cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(st["rng_cuda"].cpu())
        tqdm.write(f"resumed from {path} at step {self.step}")

    def save(self, name: str) -> None:
        save_checkpoint(self.state(), self.out / name)

    # -- data --------------------------------------------------------------------------
    def _order(self, epoch: int) -> Tensor:
        """The shuffled image order of ``epoch`` (a function of the seed and the epoch)."""
        if self._order_cache is None or self._order_cache[0] != epoch:
            g = torch.Generator().manual_seed(self.cfg.train.seed * 1000 + epoch)
            self._order_cache = (epoch, torch.randperm(len(self.data), generator=g))
        return self._order_cache[1]

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """The next ``batch_size`` images (uint8 ``(B, C, H, W)``) and labels ``(B,)``;
        the last incomplete batch of an epoch is dropped."""
        bs = self.cfg.data.batch_size
        if self.pos + bs > len(self.data):
            self.epoch += 1
            self.pos = 0
        if bs > len(self.data):
            raise ConfigError(f"data.batch_size={bs} is larger than the {len(self.data)} "
                              "training images")
        idx = self._order(self.epoch)[self.pos : self.pos + bs]
        self.pos += bs
        return self.data.images[idx], self.data.labels[idx]

    # -- one step ----------------------------------------------------------------------
    def _forward(self, images: Tensor) -> tuple[Tensor, dict[str, float], Tensor, Tensor | None]:
        """Loss, metrics, detached probe features and (DIM) the Y to feed ``D``."""
        ds, dev = self.cfg.data.dataset, self.device
        if isinstance(self.model, AMDIMModel):
            assert self.transform is not None, "AMDIM needs data.augment=amdim"
            v1, v2 = two_views(images, self.transform)
            x1 = prepare(v1.to(dev), ds, self.size)
            x2 = prepare(v2.to(dev), ds, self.size)
            loss, metrics, feats = self.model.loss(x1, x2, self.gen)
            return loss, metrics, feats, None
        aug = self.cfg.augment()
        if aug == "flip":
            images = random_flip(images, self.gen)
        elif aug == "amdim":
            assert self.transform is not None
            images = torch.stack([self.transform(img) for img in images])
        out = self.model.encoder_loss(prepare(images.to(dev), ds, self.size))
        metrics = {
            "mi/global": float(out.global_.mi), "mi/local": float(out.local.mi),
            "loss/global": float(out.global_.loss.detach()),
            "loss/local": float(out.local.loss.detach()), "loss/generator": float(out.gen.detach()),
        }
        return out.loss, metrics, out.y.detach(), out.y

    def _online_probe(self, feats: Tensor, labels: Tensor) -> None:
        keep = labels >= 0
        if not bool(keep.any()):
            return
        x, y = feats[keep.to(feats.device)], labels[keep].to(self.device)
        logits = self.probe(x)
        self.probe_hits += float((logits.argmax(1) == y).sum())
        self.probe_seen += float(len(y))
        loss = nn.functional.cross_entropy(logits, y)
        self.probe_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.probe_opt.step()

    def train_step(self) -> dict[str, float] | None:
        """One optimisation step; returns metrics, or ``None`` when the step was skipped
        because of a non-finite loss or gradient."""
        cfg = self.cfg
        images, labels = self.next_batch()
        lr = lr_at(self.step, cfg.optim, cfg.train.steps)
        set_lr(self.opt, lr)
        loss, metrics, feats, y = self._forward(images)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = clip_grad_norm(self.params, cfg.optim.grad_clip)
        if self.guard.bad(self.step, loss, gnorm):
            self.opt.zero_grad(set_to_none=True)
            return None
        self.opt.step()
        if self.prior_opt is not None and y is not None and cfg.dim.gamma > 0:
            assert isinstance(self.model, DIMModel)
            d_loss = self.model.prior_loss(y.detach(), self.gen)
            self.prior_opt.zero_grad(set_to_none=True)  # also drops the generator's grads
            d_loss.backward()
            self.prior_opt.step()
            metrics["loss/prior_disc"] = float(d_loss.detach())
        if cfg.train.online_probe:
            self._online_probe(feats, labels)
        metrics["loss/total"] = float(loss.detach())
        metrics["lr"] = lr
        return metrics

    def run(self) -> dict[str, float]:
        """Train until ``train.steps`` (or ``train.max_minutes``); returns the last metrics."""
        cfg, run = self.cfg, self.cfg.train
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.out / "config.yaml", "w") as f:
            yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
        log = ScalarLog(self.out, purge_step=self.step)
        self.model.train()
        t_start = t_window = time.perf_counter()
        images_window = 0
        metrics: dict[str, float] = {}
        bar = tqdm(total=run.steps, initial=self.step, disable=not run.progress,
                   desc=f"train {cfg.kind}", unit="step", dynamic_ncols=True)
        try:
            while self.step < run.steps:
                step_metrics = self.train_step()
                if step_metrics is None:  # non-finite: skipped (NonFiniteGuard warned)
                    continue
                self.step += 1
                images_window += cfg.data.batch_size
                bar.update(1)
                if self.step % run.log_every == 0 or self.step == run.steps:
                    now = time.perf_counter()
                    metrics = dict(step_metrics)
                    metrics["speed/images_per_sec"] = images_window / max(now - t_window, 1e-9)
                    metrics["epoch"] = self.epoch + self.pos / len(self.data)
                    if run.online_probe and self.probe_seen:
                        metrics["online_probe/acc"] = self.probe_hits / self.probe_seen
                    t_window, images_window = now, 0
                    self.probe_hits = self.probe_seen = 0.0
                    log.add(self.step, metrics)
                    post = {"loss": f"{metrics['loss/total']:.3f}"}
                    if "online_probe/acc" in metrics:
                        post["probe"] = f"{metrics['online_probe/acc']:.3f}"
                    post["img/s"] = f"{metrics['speed/images_per_sec']:.0f}"
                    bar.set_postfix(post)
                if self.step % run.save_every == 0 or self.step == run.steps:
                    self.save("last.pt")
                if run.max_minutes and (time.perf_counter() - t_start) > 60 * run.max_minutes:
                    tqdm.write(f"train.max_minutes={run.max_minutes} reached at step {self.step}")
                    self.save("last.pt")
                    break
        finally:
            bar.close()
            log.close()
        return metrics


def train(cfg: ImageExperimentConfig, resume: bool = False) -> dict[str, float]:
    """Build an :class:`ImageTrainer` and run it."""
    return ImageTrainer(cfg, resume=resume).run()
