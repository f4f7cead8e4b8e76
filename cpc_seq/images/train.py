"""DIM and AMDIM as tasks of the training engine: ``cpc-seq image train --config conf.yaml``.

A shuffled pass over the training images per epoch -> augmentation (DIM: optional flips;
AMDIM: two torchvision-augmented views) -> model loss through the loss core. DIM adds the
prior discriminator's step with its own optimiser after each encoder step (the
adversarial game). An optional online linear probe learns to classify the *detached*
features of each batch (it never changes the encoder) and logs its running accuracy.
Everything else (optimiser, schedule, precision, DDP, logging, checkpoints, resume) is
the engine's (:mod:`cpc_seq.engine.trainer`). Checkpoints carry ``kind: "dim"`` or
``"amdim"`` and the input geometry.

Config sections: ``kind``, ``data`` (:class:`ImageDataConfig`), ``dim``
(:class:`~cpc_seq.images.dim.DIMConfig`), ``amdim``
(:class:`~cpc_seq.images.amdim.AMDIMConfig`), ``optim`` (:class:`ImageOptimConfig`),
``train`` (:class:`ImageRunConfig`).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from cpc_seq.config import check, check_literals, from_dict, to_dict
from cpc_seq.config import load_config as load_config_as
from cpc_seq.engine.config import OptimConfig, Precision, RunConfig
from cpc_seq.engine.trainer import Context, Engine, StepOutput, Task
from cpc_seq.engine.windows import ShuffledBatches
from cpc_seq.errors import CheckpointError, ConfigError
from cpc_seq.images.amdim import (
    SUPPORTED_SIZES,
    AMDIMConfig,
    AMDIMModel,
    build_amdim,
    make_view_transform,
    two_views,
)
from cpc_seq.images.data import DatasetName, ImageArrays, load_dataset, prepare
from cpc_seq.images.dim import DIMConfig, DIMModel, build_dim
from cpc_seq.io.checkpoint import load_checkpoint

ImageKind = Literal["dim", "amdim"]
KINDS = typing.get_args(ImageKind)


@dataclass
class ImageDataConfig:
    """Training images.

    ``root``: data set directory ("" = the default of :data:`cpc_seq.images.data.DEFAULT_ROOTS`);
    ``train_split``: ``train`` (STL-10 also ``unlabeled``, ``train+unlabeled``);
    ``train_subset``: use a random subset of this many training images (0 = all);
    ``image_size``: model input side (0 = native; STL-10 defaults to 64);
    ``augment``: ``auto`` (DIM: ``flip``, AMDIM: ``amdim``), ``none``, ``flip``, ``amdim``.
    """

    dataset: DatasetName = "fashion_mnist"
    root: str = ""
    download: bool = False
    train_split: str = "train"
    train_subset: int = 0
    image_size: int = 0
    augment: Literal["auto", "none", "flip", "amdim"] = "auto"
    batch_size: int = 128

    def validate(self) -> None:
        check_literals(self, "data.")
        check(self.train_subset >= 0, "data.train_subset", "must be >= 0 (0 = all)")
        check(self.image_size >= 0, "data.image_size", "must be >= 0 (0 = native)")
        check(self.batch_size >= 2, "data.batch_size", "must be >= 2 (negatives come from the batch)")


@dataclass
class ImageOptimConfig(OptimConfig):
    """The engine's :class:`~cpc_seq.engine.config.OptimConfig` (Adam, warm-up, constant or
    cosine, gradient-norm clipping) with image defaults, plus ``prior_lr`` for DIM's prior
    discriminator (0 = ``lr``)."""

    warmup_steps: int = 0
    grad_clip: float = 10.0
    prior_lr: float = 0.0

    def validate(self) -> None:
        super().validate()
        check(self.prior_lr >= 0, "optim.prior_lr", "must be >= 0 (0 = lr)")


@dataclass
class ImageRunConfig(RunConfig):
    """:class:`cpc_seq.engine.config.RunConfig` with image defaults, plus ``online_probe``
    (a linear probe on the detached features of each batch, logged as it learns)."""

    out_dir: str = "exp/images"
    log_every: int = 20
    save_every: int = 500
    eval_every: int = 500
    precision: Precision = "fp32"
    online_probe: bool = True


@dataclass
class ImageExperimentConfig:
    """Everything an image run needs, as plain data; stored in every checkpoint."""

    kind: ImageKind = "dim"
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    dim: DIMConfig = field(default_factory=DIMConfig)
    amdim: AMDIMConfig = field(default_factory=AMDIMConfig)
    optim: ImageOptimConfig = field(default_factory=ImageOptimConfig)
    train: ImageRunConfig = field(default_factory=ImageRunConfig)

    def validate(self) -> None:
        check_literals(self)
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
    """YAML file (optional) + ``key=value`` overrides -> validated :class:`ImageExperimentConfig`."""
    return load_config_as(ImageExperimentConfig, path, overrides)


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


def image_model_from_state(state: dict[str, Any], path: str | Path, random_init: bool = False,
                           seed: int = 0
                           ) -> tuple[DIMModel | AMDIMModel, ImageExperimentConfig, dict[str, Any]]:
    """(model in eval mode, config, input record) of a loaded DIM/AMDIM checkpoint.

    With ``random_init`` the same architecture is built with weights drawn from ``seed``
    (the random-encoder baseline; the caller's global RNG is left as it was). The input
    record has ``channels``, ``image_size`` and ``dataset``.
    """
    try:
        cfg = from_dict(ImageExperimentConfig, state["config"])
        geo = state["input"]
        channels, size = int(geo["channels"]), int(geo["image_size"])
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad image checkpoint config ({e})") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg, channels, size)
    if not random_init:
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not fit the config ({e})") from None
    return model.eval(), cfg, dict(geo)


def load_image_model(path: str | Path, random_init: bool = False, seed: int = 0,
                     device: str | torch.device = "cpu"
                     ) -> tuple[DIMModel | AMDIMModel, ImageExperimentConfig, dict[str, Any]]:
    """:func:`image_model_from_state` of the checkpoint at ``path`` (kind dim or amdim),
    on ``device``."""
    state = load_checkpoint(path, map_location=device, kinds=KINDS, purpose="an image probe")
    model, cfg, geo = image_model_from_state(state, path, random_init=random_init, seed=seed)
    return model.to(device), cfg, geo


def random_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    """Flip each image of ``(B, C, H, W)`` left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    out = images.clone()
    out[flip] = images[flip].flip(-1)
    return out


class _ImageStep(nn.Module):
    """Forward used for training (what DDP wraps): DIM ``encoder_loss(x)``, AMDIM
    ``loss(x1, x2, generator)``."""

    def __init__(self, model: DIMModel | AMDIMModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any) -> Any:
        if isinstance(self.model, AMDIMModel):
            return self.model.loss(*args)
        return self.model.encoder_loss(*args)


class ImageTask(Task):
    """DIM or AMDIM for the engine (``cfg.kind``)."""

    unit = "images"
    ddp_find_unused = True  # DIM's prior discriminator takes no part when gamma = 0

    def __init__(self, cfg: ImageExperimentConfig, train_data: ImageArrays | None = None
                 ) -> None:
        self.cfg = cfg
        self.kind = cfg.kind
        self._train_data = train_data

    def setup(self, ctx: Context, resume_state: dict[str, Any] | None) -> None:
        cfg, run, d = self.cfg, self.cfg.train, self.cfg.data
        self.ctx = ctx
        if ctx.dist.enabled and d.batch_size % ctx.dist.world:
            raise ConfigError(f"data.batch_size={d.batch_size} (the global batch) must "
                              f"divide by the {ctx.dist.world} processes")
        data = self._train_data
        if data is None:
            data = load_dataset(d.dataset, d.root or None, d.train_split, d.download)
        self.data = data.subset(d.train_subset, seed=run.seed)
        self.size = image_size_for(d, self.data.size)
        self.channels = self.data.channels
        self.model = build_model(cfg, self.channels, self.size).to(ctx.device)
        self.prior_opt: torch.optim.Optimizer | None = None
        if isinstance(self.model, DIMModel):
            self.prior_opt = torch.optim.Adam(
                self.model.prior_parameters(), lr=cfg.optim.prior_lr or cfg.optim.lr,
                betas=(0.5, 0.999))
        n_classes = len(self.data.classes) or int(self.data.labels.max()) + 1
        feat_dim = cfg.dim.y_dim if cfg.kind == "dim" else cfg.amdim.n_rkhs
        self.probe = nn.Linear(feat_dim, max(n_classes, 1)).to(ctx.device)
        self.probe_opt = torch.optim.Adam(self.probe.parameters(), lr=1e-3)
        # Same stream on every rank: each rank augments the whole global batch the same way,
        # then encodes its share (so N processes see exactly the 1-process views).
        self.gen = torch.Generator().manual_seed(run.seed + 17)
        self.transform = None
        if cfg.augment() == "amdim":
            self.transform = make_view_transform(self.channels, self.size, cfg.amdim.crop_scale)
        if d.batch_size > len(self.data):
            raise ConfigError(f"data.batch_size={d.batch_size} is larger than the "
                              f"{len(self.data)} training images")
        self.batches = ShuffledBatches(len(self.data), d.batch_size, run.seed)
        self.probe_hits = self.probe_seen = 0.0
        self._gather = False
        if ctx.dist.enabled:
            self.model.encoder.register_forward_hook(self._gather_hook)

    def parameters(self) -> list[nn.Parameter]:
        if isinstance(self.model, DIMModel):
            return self.model.encoder_parameters()
        return list(self.model.parameters())

    def train_module(self) -> nn.Module:
        return _ImageStep(self.model)

    def check_resume(self, state: dict[str, Any], path: Path) -> None:
        super().check_resume(state, path)
        if state["config"].get(self.cfg.kind) != to_dict(self.cfg)[self.cfg.kind]:
            raise ConfigError(f"--resume: model config differs from the one in {path}")

    # -- one step ---------------------------------------------------------------------
    def next_batch(self) -> tuple[Tensor, Tensor]:
        """The global batch's images (uint8 ``(B, C, H, W)``) and labels ``(B,)``; each
        rank augments all of it and encodes its share (:meth:`loss`)."""
        idx = self.batches.next()
        return self.data.images[idx], self.data.labels[idx]

    def _share(self, x: Tensor) -> Tensor:
        """This rank's contiguous share of a global-batch tensor."""
        n = x.shape[0] // self.ctx.dist.world
        return x[self.ctx.dist.rank * n : (self.ctx.dist.rank + 1) * n]

    def _gather_hook(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        """Under DDP, replace the encoder's output on this rank's share by the output for
        the whole global batch (all-gather with gradients), so the loss, its negatives
        and the gradients are the 1-process ones."""
        if not self._gather:
            return output
        from cpc_seq.engine.distributed import gather_with_grad

        if isinstance(output, tuple):  # DIM: (M, Y)
            return tuple(gather_with_grad(t) for t in output)
        # AMDIM: both views' features in one batch [view 1; view 2]: gather each view
        fields = {}
        for name, t in vars(output).items():
            v1, v2 = t.chunk(2)
            fields[name] = torch.cat([gather_with_grad(v1), gather_with_grad(v2)])
        return type(output)(**fields)

    def loss(self, module: nn.Module, batch: tuple[Tensor, Tensor], training: bool = True
             ) -> StepOutput:
        images, labels = batch
        ds, dev = self.cfg.data.dataset, self.ctx.device
        if isinstance(self.model, AMDIMModel):
            assert self.transform is not None, "AMDIM needs data.augment=amdim"
            v1, v2 = two_views(images, self.transform)
            self._gather = training and self.ctx.dist.enabled
            try:
                loss, metrics, feats = module(prepare(self._share(v1).to(dev), ds, self.size),
                                              prepare(self._share(v2).to(dev), ds, self.size),
                                              self.gen)
            finally:
                self._gather = False
            return StepOutput(loss, units=float(len(images)) / self.ctx.dist.world,
                              extra=(metrics, feats.detach(), None, labels))
        aug = self.cfg.augment()
        if aug == "flip":
            images = random_flip(images, self.gen)
        elif aug == "amdim":
            assert self.transform is not None
            images = torch.stack([self.transform(img) for img in images])
        self._gather = training and self.ctx.dist.enabled
        try:
            out = module(prepare(self._share(images).to(dev), ds, self.size))
        finally:
            self._gather = False
        metrics = {
            "mi/global": float(out.global_.mi), "mi/local": float(out.local.mi),
            "loss/global": float(out.global_.loss.detach()),
            "loss/local": float(out.local.loss.detach()), "loss/generator": float(out.gen.detach()),
        }
        return StepOutput(out.loss, units=float(len(images)) / self.ctx.dist.world,
                          extra=(metrics, out.y.detach(), out.y, labels))

    def after_step(self, out: StepOutput) -> dict[str, float]:
        metrics, feats, y, labels = out.extra
        extra: dict[str, float] = {}
        if self.prior_opt is not None and y is not None and self.cfg.dim.gamma > 0:
            assert isinstance(self.model, DIMModel)
            d_loss = self.model.prior_loss(y.detach().float(), self.gen)
            self.prior_opt.zero_grad(set_to_none=True)  # also drops the generator's grads
            d_loss.backward()
            self.prior_opt.step()
            extra["loss/prior_disc"] = float(d_loss.detach())
        if self.cfg.train.online_probe:
            self._online_probe(feats, labels)
        return extra

    def _online_probe(self, feats: Tensor, labels: Tensor) -> None:
        keep = labels >= 0
        if not bool(keep.any()):
            return
        x, y = feats[keep.to(feats.device)].float(), labels[keep].to(self.ctx.device)
        logits = self.probe(x)
        self.probe_hits += float((logits.argmax(1) == y).sum())
        self.probe_seen += float(len(y))
        loss = nn.functional.cross_entropy(logits, y)
        self.probe_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.probe_opt.step()

    def metrics(self, out: StepOutput) -> dict[str, float]:
        metrics = {**out.extra[0], "train/loss": float(out.loss.detach()),
                   "epoch": self.batches.epoch_fraction}
        if self.cfg.train.online_probe and self.probe_seen:
            metrics["online_probe/acc"] = self.probe_hits / self.probe_seen
        self.probe_hits = self.probe_seen = 0.0
        return metrics

    def postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        post = {"loss": f"{metrics['train/loss']:.3f}"}
        if "online_probe/acc" in metrics:
            post["probe"] = f"{metrics['online_probe/acc']:.3f}"
        return post

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches.state_dict(),
            "rng_gen": self.gen.get_state(),
            "prior_optimizer": self.prior_opt.state_dict() if self.prior_opt else None,
            "probe": self.probe.state_dict(),
            "probe_optimizer": self.probe_opt.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state["batches"])
        self.gen.set_state(state["rng_gen"].cpu())
        if self.prior_opt is not None and state.get("prior_optimizer"):
            self.prior_opt.load_state_dict(state["prior_optimizer"])
        self.probe.load_state_dict(state["probe"])
        self.probe_opt.load_state_dict(state["probe_optimizer"])

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"input": {"channels": self.channels, "image_size": self.size,
                          "dataset": self.cfg.data.dataset, "classes": list(self.data.classes)}}


def make_image_engine(cfg: ImageExperimentConfig, resume: bool = False,
                      train_data: ImageArrays | None = None) -> Engine:
    """The engine running DIM or AMDIM as ``cfg`` says (``train_data``: images already
    loaded, e.g. in tests)."""
    return Engine(ImageTask(cfg, train_data), cfg, cfg.optim, cfg.train, resume=resume)


def train(cfg: ImageExperimentConfig, resume: bool = False) -> dict[str, float]:
    """Train DIM or AMDIM as configured; returns the last logged metrics."""
    return make_image_engine(cfg, resume=resume).run()
