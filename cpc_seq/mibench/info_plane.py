"""Information-plane analysis by lossy compression (Butakov et al., ICLR 2024, arXiv
2305.08013).

A layer ``L`` of a network is made stochastic by additive Gaussian noise on its output
(``L + sigma * eps``, kept at inference, after Goldfeld et al. 2019), so that ``I(X; L)``
is finite. The input ``X`` and every layer's output are compressed to a few dimensions
(PCA, or a small autoencoder), and the mutual informations are estimated from k-NN
entropies of the compressed samples:

- ``I(X; L) = H(X~) + H(L~) - H(X~, L~)`` (or the KSG estimator on ``(X~, L~)``),
- ``I(L; Y) = H(L~) - sum_y p(y) H(L~ | Y = y)`` for discrete labels ``Y``,

with ``H`` the weighted Kozachenko-Leonenko estimator (:func:`kl_entropy`, Berrett,
Samworth and Yuan 2019): a weighted sum of the ``j``-th-neighbour estimators
``d <log rho_j> + log V_d + log(N - 1) - psi(j)`` whose weights cancel the leading bias
terms (``sum_j w_j Gamma(j + 2l/d) / Gamma(j) = 0`` for ``l = 1 .. floor(d/4)``,
``sum_j w_j = 1``; the minimum-norm solution on ``j in {floor(ik/d)}``).

Two networks:

- :func:`convnet_info_plane`: a small MNIST-style convnet with noisy layers trained on
  Fashion-MNIST; a point per layer per evaluation (a few per epoch).
- :func:`cpc_info_plane`: a CPC audio model's layers (``conv1..convL``, ``c``) against
  frame phone labels; ``X`` is the waveform window that the frame reads; one point per
  layer per checkpoint (the architecture at random initialisation first with
  ``with_init``); noise is added to the layer outputs after the fact.

:func:`synthetic_check` runs the estimators on samples whose entropy / MI is known in
closed form first. :func:`plot_info_plane` draws the planes (PNG).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln
from torch import nn

from cpc_seq.errors import ConfigError, DataError
from cpc_seq.mibench.baselines import ksg_mi

if TYPE_CHECKING:
    from cpc_seq.audio.data.kaldi import DataDir
    from cpc_seq.audio.extract import EncoderReach
    from cpc_seq.audio.model.cpc import CPCModel

__all__ = [
    "COMPRESSORS",
    "MI_ESTIMATORS",
    "InfoPlaneConfig",
    "kl_weights",
    "kl_entropy",
    "mi_xl",
    "mi_ly",
    "compress",
    "layer_point",
    "synthetic_check",
    "NoisyConvNet",
    "convnet_info_plane",
    "cpc_info_plane",
    "smooth_curves",
    "plot_info_plane",
]

COMPRESSORS = ("pca", "ae")
MI_ESTIMATORS = ("wkl", "ksg")


# --------------------------------------------------------------------------- estimators


def kl_weights(k: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """``(js, w)``: the neighbour orders and weights of the weighted Kozachenko-Leonenko
    estimator in ``d`` dimensions with ``k`` neighbours at most (minimum-norm weights with
    ``sum w = 1`` and ``sum_j w_j Gamma(j + 2l/d)/Gamma(j) = 0``, ``l = 1..floor(d/4)``;
    ``d <= 3``: the plain ``k``-th-neighbour estimator)."""
    if k < 1 or d < 1:
        raise ConfigError(f"weighted KL: need k >= 1 and d >= 1, got k={k}, d={d}")
    n_con = d // 4
    if n_con == 0:
        return np.array([k]), np.array([1.0])
    js = np.unique(np.maximum(1, (np.arange(1, d + 1) * k) // d))
    if len(js) <= n_con:
        raise ConfigError(f"weighted KL: k={k} is too small for d={d} (need more than "
                          f"{n_con} distinct neighbour orders); raise k")
    rows = [np.ones(len(js))]
    for order in range(1, n_con + 1):
        rows.append(np.exp(gammaln(js + 2.0 * order / d) - gammaln(js)))
    a = np.stack(rows)
    b = np.zeros(len(rows))
    b[0] = 1.0
    w = np.linalg.lstsq(a, b, rcond=None)[0]
    return js, w


def _as_2d(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 2:
        raise DataError(f"{what}: need an (N, d) array with N >= 2, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"{what}: holds NaN or infinite values")
    return x


def kl_entropy(x: np.ndarray, k: int = 5, weighted: bool = True) -> float:
    """Differential entropy in nats of the sample ``x (N, d)``: the weighted
    Kozachenko-Leonenko estimator (``weighted=False``: the plain ``k``-th neighbour one).
    Euclidean distances; neighbour search by :class:`scipy.spatial.cKDTree`."""
    x = _as_2d(x, "kl_entropy")
    n, d = x.shape
    js, w = kl_weights(k, d) if weighted else (np.array([k]), np.array([1.0]))
    kmax = int(js.max())
    if kmax >= n:
        raise DataError(f"kl_entropy: need more than {kmax} samples, got {n}")
    dist = cKDTree(x).query(x, k=kmax + 1)[0][:, 1:]  # (N, kmax), self excluded
    if (dist[:, js - 1] <= 0).any():
        raise DataError("kl_entropy: repeated samples (zero neighbour distance); add noise "
                        "to the layer (noise_sigma > 0)")
    log_vd = 0.5 * d * math.log(math.pi) - gammaln(1 + 0.5 * d)
    h_j = d * np.log(dist[:, js - 1]).mean(0) + log_vd + math.log(n - 1) - digamma(js)
    return float(np.dot(w, h_j))


def mi_xl(x: np.ndarray, lay: np.ndarray, k: int = 5, estimator: str = "wkl") -> float:
    """``I(X; L)`` in nats of paired samples: ``H(X) + H(L) - H(X, L)`` with
    :func:`kl_entropy` (``wkl``), or the KSG estimator (``ksg``)."""
    x, lay = _as_2d(x, "I(X;L) x"), _as_2d(lay, "I(X;L) l")
    if x.shape[0] != lay.shape[0]:
        raise DataError(f"I(X;L): {x.shape[0]} x rows but {lay.shape[0]} l rows")
    if estimator == "ksg":
        return ksg_mi(x, lay, k=k)
    if estimator != "wkl":
        raise ConfigError(f"estimator {estimator!r}: one of {', '.join(MI_ESTIMATORS)}")
    return (kl_entropy(x, k) + kl_entropy(lay, k)
            - kl_entropy(np.concatenate([x, lay], 1), k))


def mi_ly(lay: np.ndarray, y: np.ndarray, k: int = 5, min_count: int = 0
          ) -> tuple[float, int]:
    """``I(L; Y) = H(L) - sum_y p(y) H(L | Y = y)`` in nats for discrete labels ``y (N,)``.
    Classes with fewer than ``min_count`` samples (default ``4 k``) are pooled into one
    class (a coarser ``Y``, so the estimate can only lose information). Returns the
    estimate and the number of classes used."""
    lay = _as_2d(lay, "I(L;Y) l")
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != lay.shape[0]:
        raise DataError(f"I(L;Y): {lay.shape[0]} rows but {y.shape[0]} labels")
    min_count = min_count or 4 * k
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    rare = counts < min_count
    if rare.any():
        inv = np.where(rare[inv], -1, inv)
        if (inv == -1).sum() < min_count:  # too few pooled samples: leave them out
            keep = inv != -1
            lay, inv = lay[keep], inv[keep]
    groups = np.unique(inv)
    if len(groups) < 2:
        return 0.0, int(len(groups))
    h_cond = 0.0
    for g in groups:
        mask = inv == g
        h_cond += mask.mean() * kl_entropy(lay[mask], k)
    return kl_entropy(lay, k) - h_cond, int(len(groups))


# --------------------------------------------------------------------------- compression


def _autoencode(x: np.ndarray, dim: int, seed: int, steps: int = 400,
                hidden: int = 64) -> np.ndarray:
    """Codes ``(N, dim)`` of a small MLP autoencoder trained on standardised ``x``."""
    xs = (x - x.mean(0)) / (x.std(0) + 1e-8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        d = xs.shape[1]
        enc = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, dim))
        dec = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, d))
        opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=3e-3)
        t = torch.as_tensor(xs, dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randint(0, t.shape[0], (min(256, t.shape[0]),), generator=gen)
            loss = (dec(enc(t[idx])) - t[idx]).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return enc(t).double().numpy()


def compress(x: np.ndarray, dim: int = 4, method: str = "pca", seed: int = 0) -> np.ndarray:
    """``x (N, D)`` compressed to ``(N, min(dim, D))``: whitened PCA (scikit-learn) or the
    code of a small autoencoder (``ae``). ``D <= dim`` is returned as is."""
    x = _as_2d(np.asarray(x).reshape(len(x), -1), "compress")
    if x.shape[1] <= dim:
        return x
    if method == "pca":
        from sklearn.decomposition import PCA

        solver = "randomized" if min(x.shape) > 10 * dim else "full"
        return PCA(n_components=dim, whiten=True, svd_solver=solver,
                   random_state=seed).fit_transform(x)
    if method == "ae":
        return _autoencode(x, dim, seed)
    raise ConfigError(f"compression {method!r}: one of {', '.join(COMPRESSORS)}")


@dataclass
class InfoPlaneConfig:
    """Settings of the analysis: ``dim`` compressed dimensions per variable, ``k``
    neighbours, ``compression`` (``pca``/``ae``), ``estimator`` for ``I(X; L)``
    (``wkl``/``ksg``), ``noise_sigma`` of the noisy layers, ``smooth`` (Gaussian
    smoothing width of the curves, in points), ``seed``."""

    dim: int = 4
    k: int = 5
    compression: str = "pca"
    estimator: str = "wkl"
    noise_sigma: float = 1e-3
    smooth: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        if self.dim < 1 or self.k < 1:
            raise ConfigError(f"--dim and --k must be >= 1, got {self.dim}, {self.k}")
        if self.compression not in COMPRESSORS:
            raise ConfigError(f"--compression {self.compression!r}: one of "
                              f"{', '.join(COMPRESSORS)}")
        if self.estimator not in MI_ESTIMATORS:
            raise ConfigError(f"--estimator {self.estimator!r}: one of "
                              f"{', '.join(MI_ESTIMATORS)}")
        if not self.noise_sigma > 0:
            raise ConfigError(f"--noise-sigma must be > 0 (it keeps I(X;L) finite), got "
                              f"{self.noise_sigma}")
        if self.smooth < 0:
            raise ConfigError(f"--smooth must be >= 0, got {self.smooth}")


def layer_point(x_c: np.ndarray, layer: np.ndarray, y: np.ndarray, cfg: InfoPlaneConfig
                ) -> tuple[float, float]:
    """``(I(X; L), I(L; Y))`` of one layer's outputs ``(N, ...)`` given the compressed
    input ``x_c (N, dim)`` and labels ``y (N,)``."""
    l_c = compress(layer.reshape(len(layer), -1), cfg.dim, cfg.compression, cfg.seed)
    return (mi_xl(x_c, l_c, cfg.k, cfg.estimator), mi_ly(l_c, y, cfg.k)[0])


# --------------------------------------------------------------------------- known answers


def synthetic_check(n: int = 2000, dim: int = 4, k: int = 5, seed: int = 0
                    ) -> list[dict[str, Any]]:
    """The estimators on samples with closed-form answers, one row each:
    the entropy of a ``dim``-D Gaussian with a random covariance; ``I(X; L)`` of
    ``dim + dim`` Gaussian pairs with correlation 0.8 per pair (weighted KL and KSG);
    ``I(L; Y)`` of ``L | Y = y`` uniform on disjoint unit cubes, ``Y`` uniform on 4
    classes (``log 4``)."""
    rng = np.random.default_rng(seed)
    rows = []
    a = rng.normal(size=(dim, dim))
    cov = a @ a.T + 0.5 * np.eye(dim)
    g = rng.multivariate_normal(np.zeros(dim), cov, size=n)
    true_h = 0.5 * np.linalg.slogdet(2 * math.pi * math.e * cov)[1]
    rows.append({"check": f"H(Gaussian, d={dim})", "true": true_h,
                 "estimate": kl_entropy(g, k)})
    rho = 0.8
    x = rng.normal(size=(n, dim))
    lay = rho * x + math.sqrt(1 - rho * rho) * rng.normal(size=(n, dim))
    true_mi = -0.5 * dim * math.log(1 - rho * rho)
    for est in MI_ESTIMATORS:
        rows.append({"check": f"I(X;L) Gaussian {dim}+{dim}, rho={rho} [{est}]",
                     "true": true_mi, "estimate": mi_xl(x, lay, k, est)})
    classes = 4
    y = rng.integers(0, classes, size=n)
    u = rng.uniform(size=(n, dim))
    u[:, 0] += 2.0 * y  # disjoint supports: L determines Y
    rows.append({"check": f"I(L;Y) disjoint uniform cubes, {classes} classes",
                 "true": math.log(classes), "estimate": mi_ly(u, y, k)[0]})
    for r in rows:
        r["error"] = r["estimate"] - r["true"]
    return rows


# --------------------------------------------------------------------------- the convnet


class Noise(nn.Module):
    """Additive Gaussian noise ``x + sigma * eps``, in training and at inference."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sigma * torch.randn_like(x)


class NoisyConvNet(nn.Module):
    """A small MNIST-style convnet, every layer's output made noisy: three 3x3 conv
    blocks (8, 16, 32 channels; LeakyReLU, 2x2 max-pool), a 32-unit dense layer and the
    10 logits. ``forward_layers(x)`` returns the five noisy layer outputs."""

    names = ("conv1", "conv2", "conv3", "dense", "logits")

    def __init__(self, sigma: float = 1e-3, channels: tuple[int, int, int] = (8, 16, 32),
                 hidden: int = 32, classes: int = 10) -> None:
        super().__init__()
        c1, c2, c3 = channels
        act = nn.LeakyReLU(0.1)
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), act, nn.MaxPool2d(2), Noise(sigma)),
            nn.Sequential(nn.Conv2d(c1, c2, 3, padding=1), act, nn.MaxPool2d(2), Noise(sigma)),
            nn.Sequential(nn.Conv2d(c2, c3, 3, padding=1), act, nn.MaxPool2d(2), Noise(sigma)),
            nn.Sequential(nn.Flatten(), nn.Linear(c3 * 3 * 3, hidden), act, Noise(sigma)),
            nn.Sequential(nn.Linear(hidden, classes), Noise(sigma)),
        ])

    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_layers(x)[-1]


@dataclass
class ConvnetRun:
    """Settings of :func:`convnet_info_plane`."""

    data_root: str = "/usr/share/datasets/fashion-mnist"
    train_size: int = 10000
    eval_size: int = 2000
    epochs: int = 8
    evals_per_epoch: int = 2
    batch_size: int = 100
    lr: float = 1e-3

    def validate(self) -> None:
        for key in ("train_size", "eval_size", "epochs", "evals_per_epoch", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')} must be >= 1")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")


def _subset(n_total: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=min(n, n_total), replace=False))


@dataclass
class Curves:
    """The points of an analysis: ``times`` (epochs or checkpoint steps), per layer the
    raw ``I(X; L)`` and ``I(L; Y)`` series, and extra facts for the JSON."""

    kind: str
    time_label: str
    times: list[float] = field(default_factory=list)
    layers: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, layer: str, ixl: float, ily: float) -> None:
        d = self.layers.setdefault(layer, {"I_XL": [], "I_LY": []})
        d["I_XL"].append(float(ixl))
        d["I_LY"].append(float(ily))


def convnet_info_plane(run: ConvnetRun, cfg: InfoPlaneConfig,
                       progress: Callable[[str], None] | None = None) -> Curves:
    """Train :class:`NoisyConvNet` on a Fashion-MNIST subset and estimate every layer's
    ``I(X; L)``, ``I(L; Y)`` on held-out test images before training and
    ``evals_per_epoch`` times per epoch."""
    from cpc_seq.images.data import load_fashion_mnist, normalize

    run.validate()
    cfg.validate()
    train = load_fashion_mnist(run.data_root, "train")
    test = load_fashion_mnist(run.data_root, "test")
    tr = torch.as_tensor(_subset(len(train), run.train_size, cfg.seed))
    ev = torch.as_tensor(_subset(len(test), run.eval_size, cfg.seed + 1))
    x_tr = normalize(train.images[tr], "fashion_mnist")
    y_tr = train.labels[tr]
    x_ev = normalize(test.images[ev], "fashion_mnist")
    y_ev = test.labels[ev].numpy()
    if len(x_ev) <= 4 * cfg.k * 2:
        raise ConfigError(f"--eval-size {len(x_ev)} is too small for k={cfg.k}")
    torch.manual_seed(cfg.seed)
    net = NoisyConvNet(cfg.noise_sigma)
    opt = torch.optim.Adam(net.parameters(), lr=run.lr)
    x_c = compress(x_ev.reshape(len(x_ev), -1).numpy()
                   + cfg.noise_sigma * np.random.default_rng(cfg.seed).normal(
                       size=(len(x_ev), x_ev[0].numel())),
                   cfg.dim, cfg.compression, cfg.seed)
    curves = Curves(kind="fashion_mnist_convnet", time_label="epoch",
                    extra={"train_size": len(tr), "eval_size": len(ev), "accuracy": []})

    def evaluate(epoch: float) -> None:
        with torch.no_grad():
            outs = [o.numpy() for o in net.forward_layers(x_ev)]
        acc = float((outs[-1].argmax(1) == y_ev).mean())
        curves.times.append(epoch)
        curves.extra["accuracy"].append(acc)
        for name, out in zip(net.names, outs):
            ixl, ily = layer_point(x_c, out, y_ev, cfg)
            curves.add(name, ixl, ily)
        if progress:
            pts = " ".join(f"{n}=({curves.layers[n]['I_XL'][-1]:.2f},"
                           f"{curves.layers[n]['I_LY'][-1]:.2f})" for n in net.names)
            progress(f"epoch {epoch:.2f} acc {acc:.3f} {pts}")

    evaluate(0.0)
    n = len(x_tr)
    per_epoch = math.ceil(n / run.batch_size)
    marks = {round(per_epoch * (i + 1) / run.evals_per_epoch) for i in
             range(run.evals_per_epoch)}
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(run.epochs):
        order = torch.randperm(n, generator=gen)
        net.train()
        for b in range(per_epoch):
            idx = order[b * run.batch_size:(b + 1) * run.batch_size]
            loss = nn.functional.cross_entropy(net(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if b + 1 in marks:
                net.eval()
                evaluate(epoch + (b + 1) / per_epoch)
                net.train()
    return curves


# --------------------------------------------------------------------------- CPC layers


def _frame_windows(wave: np.ndarray, n_frames: int, hop: int, left: int, right: int
                   ) -> np.ndarray:
    """``(n_frames, left + hop + right)``: the samples that frame ``j`` reads,
    ``[hop j - left, hop (j + 1) + right)``, zero outside the wave."""
    padded = np.concatenate([np.zeros(left, np.float32), wave.astype(np.float32),
                             np.zeros(right + hop, np.float32)])
    width = left + hop + right
    idx = np.arange(n_frames)[:, None] * hop + np.arange(width)[None, :]
    return padded[idx]


def cpc_info_plane(checkpoints: Sequence[str | Path], data_dir: str | Path,
                   cfg: InfoPlaneConfig, labels: str | Path | None = None,
                   phones: str | Path | None = None, n_frames: int = 4000,
                   layers: Sequence[str] | None = None, with_init: bool = True,
                   progress: Callable[[str], None] | None = None) -> Curves:
    """A point per layer per checkpoint for a CPC audio model: ``X`` = the waveform
    window each 10 ms frame reads (as the model takes it), ``L`` = the frame's output of
    each layer plus ``sigma`` noise, ``Y`` = the frame's phone label (``phone_frames.txt``
    of ``data_dir`` unless ``labels``; symbols mapped by ``phones``, default the data
    dir's or its parent's ``phones.txt``). ``n_frames`` random frames of the data dir;
    conv layers at a finer rate are read at the frame's centre. ``with_init``: the first
    checkpoint's architecture with random weights comes first (step 0)."""
    from cpc_seq.audio.extract import encoder_reach, run_layers

    cfg.validate()
    if not checkpoints:
        raise ConfigError("info-plane: give at least one --model checkpoint")
    if n_frames < 8 * cfg.k:
        raise ConfigError(f"--frames {n_frames}: too few for k={cfg.k}")
    data_dir = Path(data_dir)
    dd, utts, frame_labels = _labelled_utterances(data_dir, labels, phones)
    models = _cpc_models(checkpoints, with_init, cfg.seed)
    first = models[0][2]
    names = _layer_names(first, layers)
    sr = first.sample_rate
    waves = [torch.as_tensor(dd.load_audio(u, sr)) for u in utts]
    hop = int(first.downsample_rate)
    reach = encoder_reach(first)

    rng = np.random.default_rng(cfg.seed)
    pick, counts, y = _pick_frames(utts, waves, frame_labels, hop, n_frames, cfg.k, data_dir,
                                   rng)
    x = _input_windows(first, waves, pick, counts, hop, reach)
    x = x + cfg.noise_sigma * rng.normal(size=x.shape)
    x_c = compress(x, cfg.dim, cfg.compression, cfg.seed)
    curves = Curves(kind="cpc_audio", time_label="step",
                    extra={"data": str(data_dir), "frames": len(pick),
                           "window_samples": int(x.shape[1]), "checkpoints":
                           [m[1] for m in models], "phone_classes": int(len(np.unique(y)))})
    for step, path, model in models:
        feats = run_layers(model, waves, names)
        for name in names:
            out = _frame_outputs(feats, name, pick, hop, reach)
            out = out + cfg.noise_sigma * rng.normal(size=out.shape)
            ixl, ily = layer_point(x_c, out, y, cfg)
            curves.add(name, ixl, ily)
        curves.times.append(step)
        if progress:
            pts = " ".join(f"{n}=({curves.layers[n]['I_XL'][-1]:.2f},"
                           f"{curves.layers[n]['I_LY'][-1]:.2f})" for n in names)
            progress(f"step {step:g} ({path}) {pts}")
    return curves


def _labelled_utterances(data_dir: Path, labels: str | Path | None, phones: str | Path | None
                         ) -> tuple[DataDir, list[str], dict[str, np.ndarray]]:
    """The data dir, its utterances that have frame labels (in its order) and the labels
    (``labels``, default its ``phone_frames.txt``; symbols mapped by ``phones``, default
    the data dir's or its parent's ``phones.txt``, else the labels' own symbols)."""
    from cpc_seq.audio.data.kaldi import (
        load_data_dir,
        phone_table_from_labels,
        read_frame_labels,
        read_phone_table,
    )

    dd = load_data_dir(data_dir)
    label_path = Path(labels) if labels else data_dir / "phone_frames.txt"
    if not label_path.is_file():
        raise DataError(f"{label_path}: no frame labels (one line 'utt l1 l2 ...' per "
                        "utterance, 10 ms frames); pass --labels")
    table_path = Path(phones) if phones else next(
        (p for p in (data_dir / "phones.txt", data_dir.parent / "phones.txt") if p.is_file()),
        None)
    table = (read_phone_table(table_path) if table_path is not None
             else phone_table_from_labels(label_path))
    frame_labels = read_frame_labels(label_path, table)
    utts = [u for u in dd.utts if u in frame_labels]
    if not utts:
        raise DataError(f"{label_path}: labels for none of the utterances of {data_dir}")
    return dd, utts, frame_labels


def _cpc_models(checkpoints: Sequence[str | Path], with_init: bool, seed: int
                ) -> list[tuple[float, str, CPCModel]]:
    """``(step, name, model)`` per checkpoint, after the first one's architecture with
    random weights drawn from ``seed`` (step 0, ``init``) when ``with_init``."""
    from cpc_seq.audio.model.load import KINDS, audio_model_from_state
    from cpc_seq.io.checkpoint import load_checkpoint

    states = []
    for path in checkpoints:
        st = load_checkpoint(path, kinds=KINDS, purpose="info-plane analyses audio CPC models")
        states.append((str(path), st))
    models = []
    if with_init:
        models.append((0.0, "init", audio_model_from_state(states[0][1], states[0][0],
                                                           random_init=True, seed=seed)))
    for path, st in states:
        models.append((float(st.get("step", len(models))), path,
                       audio_model_from_state(st, path)))
    return models


def _layer_names(model: CPCModel, layers: Sequence[str] | None) -> list[str]:
    """``layers`` (default: every layer of ``model`` but ``z``), each checked to be one."""
    names = list(layers) if layers else [n for n in model.layer_names if n != "z"]
    bad = [n for n in names if n not in model.layer_names]
    if bad:
        raise ConfigError(f"--layers {bad[0]!r}: one of {', '.join(model.layer_names)}")
    return names


def _pick_frames(utts: list[str], waves: list[torch.Tensor],
                 frame_labels: dict[str, np.ndarray], hop: int, n_frames: int, k: int,
                 data_dir: Path, rng: np.random.Generator
                 ) -> tuple[np.ndarray, list[int], np.ndarray]:
    """``n_frames`` labelled (utterance, frame) pairs at random from ``rng``, in order
    (``pick``, (n, 2)), every utterance's frame count (``counts``) and the picked frames'
    labels (``y``)."""
    from cpc_seq.audio.data.kaldi import fit_labels

    counts = [min(len(w) // hop, len(frame_labels[u])) for u, w in zip(utts, waves)]
    pairs = np.array([(i, j) for i, c in enumerate(counts) for j in range(c)])
    if len(pairs) < 8 * k:
        raise DataError(f"{data_dir}: only {len(pairs)} labelled frames")
    pick = pairs[np.sort(rng.choice(len(pairs), min(n_frames, len(pairs)), replace=False))]
    y = np.array([fit_labels(frame_labels[utts[i]], counts[i])[j] for i, j in pick])
    return pick, counts, y


def _input_windows(model: CPCModel, waves: list[torch.Tensor], pick: np.ndarray,
                   counts: list[int], hop: int, reach: EncoderReach) -> np.ndarray:
    """``X``: the samples each picked frame reads (:func:`_frame_windows`), as ``model``
    takes them, one row per frame in ``pick``'s order."""
    from cpc_seq.audio.extract import model_input

    xw = []
    for i in np.unique(pick[:, 0]):
        js = pick[pick[:, 0] == i, 1]
        wave = model_input(model, waves[i]).numpy()
        xw.append(_frame_windows(wave, counts[i], hop, reach.left, reach.right)[js])
    return np.concatenate(xw)


def _frame_outputs(feats: list[dict[str, torch.Tensor]], name: str, pick: np.ndarray, hop: int,
                   reach: EncoderReach) -> np.ndarray:
    """Layer ``name``'s output at each picked frame, in ``pick``'s order; a conv layer at a
    finer rate is read at the frame's centre."""
    rows = []
    for i in np.unique(pick[:, 0]):
        js = pick[pick[:, 0] == i, 1]
        f = feats[i][name].numpy()
        if name.startswith("conv"):
            stride = reach.strides[int(name[4:]) - 1]
            js = np.minimum((js * hop + hop // 2) // stride, len(f) - 1)
        rows.append(f[js])
    return np.concatenate(rows)


# --------------------------------------------------------------------------- curves, plots


def smooth_curves(curves: Curves, sigma: float) -> dict[str, dict[str, list[float]]]:
    """Every series smoothed by a Gaussian of width ``sigma`` points (edges: nearest);
    ``sigma = 0`` or a single point leaves it as is."""
    out = {}
    for name, d in curves.layers.items():
        out[name] = {}
        for key, vals in d.items():
            v = np.asarray(vals, dtype=np.float64)
            if sigma > 0 and len(v) > 1:
                v = gaussian_filter1d(v, sigma, mode="nearest")
            out[name][key] = [float(t) for t in v]
    return out


def curves_json(curves: Curves, cfg: InfoPlaneConfig, check: list[dict[str, Any]]
                ) -> dict[str, Any]:
    """The JSON document of a run: settings, the synthetic check, raw and smoothed
    curves."""
    return {"kind": curves.kind, "config": asdict(cfg), "synthetic_check": check,
            "time_label": curves.time_label, "times": curves.times,
            "raw": curves.layers, "smoothed": smooth_curves(curves, cfg.smooth),
            **curves.extra}


def plot_info_plane(curves: Curves, cfg: InfoPlaneConfig, path: str | Path,
                    title: str = "") -> None:
    """Write a PNG: the information plane (smoothed ``I(X; L)`` vs ``I(L; Y)`` per layer,
    points coloured by time, raw points faint) and both quantities against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    smooth = smooth_curves(curves, cfg.smooth)
    times = np.asarray(curves.times, dtype=np.float64)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    cmap = plt.get_cmap("viridis")
    colors = plt.get_cmap("tab10")
    norm = matplotlib.colors.Normalize(vmin=times.min(), vmax=max(times.max(), times.min() + 1))
    for i, (name, d) in enumerate(smooth.items()):
        raw = curves.layers[name]
        axes[0].plot(d["I_XL"], d["I_LY"], "-", color=colors(i % 10), lw=1.5, label=name)
        axes[0].scatter(raw["I_XL"], raw["I_LY"], c=times, cmap=cmap, norm=norm, s=10,
                        alpha=0.35)
        sc = axes[0].scatter(d["I_XL"], d["I_LY"], c=times, cmap=cmap, norm=norm, s=22,
                             edgecolors=colors(i % 10), linewidths=0.6)
        axes[1].plot(times, d["I_XL"], color=colors(i % 10), label=name)
        axes[1].plot(times, raw["I_XL"], ".", color=colors(i % 10), alpha=0.35)
        axes[2].plot(times, d["I_LY"], color=colors(i % 10), label=name)
        axes[2].plot(times, raw["I_LY"], ".", color=colors(i % 10), alpha=0.35)
    fig.colorbar(sc, ax=axes[0], label=curves.time_label)
    axes[0].set_xlabel("I(X; L) [nats]")
    axes[0].set_ylabel("I(L; Y) [nats]")
    axes[0].set_title("information plane")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel(curves.time_label)
    axes[1].set_ylabel("I(X; L) [nats]")
    axes[2].set_xlabel(curves.time_label)
    axes[2].set_ylabel("I(L; Y) [nats]")
    for ax in axes[1:]:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].grid(alpha=0.3)
    sub = (f"{cfg.compression.upper()} to {cfg.dim} dims, {cfg.estimator} k={cfg.k}, "
           f"noise sigma={cfg.noise_sigma:g}, smoothing {cfg.smooth:g}")
    fig.suptitle(f"{title} ({sub})" if title else sub, fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
