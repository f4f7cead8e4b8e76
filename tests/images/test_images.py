"""DIM / AMDIM: loss-core use, AMDIM NCE, shapes, stability, data readers, training, CLI."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.fashion import fake_fashion_mnist, write_idx

import cpc_seq.images.dim as dim_mod
from cpc_seq.cli import main as image_main
from cpc_seq.errors import ConfigError, CpcSeqError, DataError
from cpc_seq.images import data as data_mod
from cpc_seq.images.amdim import AMDIMConfig, build_amdim, make_view_transform, two_views
from cpc_seq.images.data import (
    check_arrays,
    load_cifar10,
    load_dataset,
    load_fashion_mnist,
    load_stl10,
    read_idx,
)
from cpc_seq.images.dim import DIMConfig, build_dim, global_scores, local_scores
from cpc_seq.images.train import load_config, load_image_model, make_image_engine
from cpc_seq.io.checkpoint import load_checkpoint
from cpc_seq.losses.amdim_nce import amdim_nce, amdim_scores, tanh_clip
from cpc_seq.losses.estimators import jsd
from cpc_seq.losses.select import estimate

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread

ROOT = Path(__file__).resolve().parents[2]

TINY_DIM = DIMConfig(ndf=4, local_channels=8, hidden=16, y_dim=8, mi_dim=8, global_hidden=8,
                     disc_hidden=8)
TINY_AMDIM = AMDIMConfig(ndf=4, n_rkhs=16)




# ------------------------------------------------------------- DIM via the loss core


@pytest.mark.parametrize("g_est,l_est", [("jsd", "jsd"), ("dv", "infonce"), ("infonce", "dv")])
def test_dim_terms_go_through_loss_core(monkeypatch, g_est: str, l_est: str) -> None:
    calls: list[tuple[str, tuple[int, ...], int]] = []

    def spy(name, scores, pos_mask, valid_mask=None):
        calls.append((name, tuple(scores.shape), int(pos_mask.sum())))
        return estimate(name, scores, pos_mask, valid_mask)

    monkeypatch.setattr(dim_mod, "estimate", spy)
    torch.manual_seed(0)
    cfg = DIMConfig(**{**TINY_DIM.__dict__, "global_estimator": g_est, "local_estimator": l_est})
    model = build_dim(cfg, 1, 28)
    x = torch.randn(6, 1, 28, 28)
    out = model.encoder_loss(x)
    # global: (B, B) with the diagonal positive; local: (B, B*49), 49 positives per row
    assert calls == [(g_est, (6, 6), 6), (l_est, (6, 6 * 49), 6 * 49)]
    m, y = out.m, out.y
    g_ref = estimate(g_est, *global_scores(model.global_disc, m, y))
    l_ref = estimate(l_est, *local_scores(model.local_embed, m, y))
    d_y = model.prior_disc(y)
    gen_ref = F.softplus(-d_y).mean()  # non-saturating generator loss
    want = cfg.alpha * g_ref.loss + cfg.beta * l_ref.loss + cfg.gamma * gen_ref
    assert torch.allclose(out.loss, want, atol=1e-5)
    assert out.m.shape == (6, 8, 7, 7) and out.y.shape == (6, 8)
    assert bool(((out.y > 0) & (out.y < 1)).all())  # sigmoid output for the uniform prior


def test_dim_prior_is_an_adversarial_game(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(dim_mod, "jsd", lambda s, p, v=None: seen.append(s.shape) or jsd(s, p, v))
    torch.manual_seed(0)
    model = build_dim(TINY_DIM, 1, 28)
    enc, disc = model.encoder_parameters(), model.prior_parameters()
    assert not {id(p) for p in enc} & {id(p) for p in disc}
    assert len(enc) + len(disc) == len(list(model.parameters()))
    y = torch.rand(5, 8)
    d_loss = model.prior_loss(y, torch.Generator().manual_seed(0))
    assert seen == [torch.Size([1, 10])]  # 5 prior samples + 5 encoded, one JSD row
    g = torch.Generator().manual_seed(0)
    z = torch.rand(5, 8, generator=g)
    want = F.softplus(-model.prior_disc(z)).mean() + F.softplus(model.prior_disc(y)).mean()
    assert torch.allclose(d_loss, want, atol=1e-6)
    # the generator term reaches the encoder; the discriminator loss does not
    cfg = DIMConfig(**{**TINY_DIM.__dict__, "alpha": 0.0, "beta": 1e-9, "gamma": 1.0})
    model = build_dim(cfg, 1, 28)
    out = model.encoder_loss(torch.randn(4, 1, 28, 28))
    out.loss.backward()
    assert model.encoder.fc[-1].weight.grad.abs().sum() > 0
    model.zero_grad()
    model.prior_loss(out.y.detach()).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.encoder.parameters())


def test_dim_gaussian_prior_and_map_sizes() -> None:
    cfg = DIMConfig(**{**TINY_DIM.__dict__, "prior": "gaussian"})
    assert cfg.activation() == "none"
    model = build_dim(cfg, 3, 32)
    m, y = model(torch.randn(3, 3, 32, 32))
    assert m.shape == (3, 8, 8, 8) and y.shape == (3, 8)
    feats = model.features(torch.randn(3, 3, 32, 32), grid=2)
    assert feats["local"].shape == (3, 32) and feats["fc"].shape == (3, 16)
    with pytest.raises(ConfigError, match="multiple of 4"):
        build_dim(TINY_DIM, 1, 30)
    with pytest.raises(ConfigError, match="dim.local_estimator"):
        load_config(None, ["dim.local_estimator=mine"])


# -------------------------------------------------------------------- AMDIM NCE


def straightforward_amdim_nce(src: torch.Tensor, trg: torch.Tensor, penalty: float,
                              clip: float) -> torch.Tensor:
    """One softmax per (source, positive location): the positive against every location
    of every other image, built explicitly (O(B^2 L^2) memory)."""
    if src.dim() == 2:
        src = src[:, None]
    b, s_per, d = src.shape
    n_loc = trg.shape[1]
    raw = torch.einsum("isd,jld->isjl", src, trg) / math.sqrt(d)  # (B, S, B, L)
    reg = penalty * (raw**2).mean()
    s = clip * torch.tanh(raw / clip) if clip > 0 else raw
    losses = []
    for i in range(b):
        negs = torch.cat([s[i, :, j] for j in range(b) if j != i], dim=1)  # (S, (B-1) L)
        for k in range(s_per):
            for loc in range(n_loc):
                logits = torch.cat([s[i, k, i, loc].view(1), negs[k]])
                losses.append(-F.log_softmax(logits, dim=0)[0])
    return torch.stack(losses).mean() + reg


@pytest.mark.parametrize("src_shape", [(5, 12), (5, 3, 12)])
@pytest.mark.parametrize("penalty,clip", [(4e-2, 10.0), (0.0, 0.0), (0.1, 2.0)])
def test_amdim_shared_negative_nce_matches_straightforward(src_shape, penalty, clip) -> None:
    g = torch.Generator().manual_seed(1)
    src = (3 * torch.randn(*src_shape, generator=g)).double().requires_grad_()
    trg = (3 * torch.randn(5, 4, 12, generator=g)).double().requires_grad_()
    out = amdim_nce(src, trg, penalty=penalty, clip=clip)
    ref = straightforward_amdim_nce(src.float(), trg.float(), penalty, clip)
    assert torch.allclose(out.loss, ref, atol=1e-5), (float(out.loss), float(ref))
    ga = torch.autograd.grad(out.loss, (src, trg))
    gb = torch.autograd.grad(straightforward_amdim_nce(src, trg, penalty, clip), (src, trg))
    for a, b in zip(ga, gb):
        assert torch.allclose(a.double(), b, atol=1e-5)


def test_amdim_penalty_and_clip() -> None:
    g = torch.Generator().manual_seed(0)
    src, trg = torch.randn(4, 8, generator=g), torch.randn(4, 9, 8, generator=g)
    raw = amdim_scores(src, trg.reshape(-1, 8))
    assert torch.allclose(raw, src @ trg.reshape(-1, 8).T / math.sqrt(8))
    out = amdim_nce(src, trg, penalty=4e-2, clip=10.0)
    assert torch.allclose(out.penalty, 4e-2 * raw.pow(2).mean())
    assert torch.allclose(out.loss, out.nce + out.penalty)
    assert torch.allclose(amdim_nce(src, trg, penalty=0.0).penalty, torch.tensor(0.0))
    # clip: bounded, ~identity for small scores, identity when disabled
    s = torch.linspace(-1000, 1000, 101)
    assert bool((tanh_clip(s, 10.0).abs() < 10.0 + 1e-4).all())
    assert torch.allclose(tanh_clip(torch.tensor([0.01]), 10.0), torch.tensor([0.01]), atol=1e-6)
    assert torch.equal(tanh_clip(s, 0.0), s)
    # huge scores: the clipped NCE stays finite and its gradient vanishes instead of exploding
    big_src = (1e4 * src).requires_grad_()
    clipped = amdim_nce(big_src, trg, penalty=0.0, clip=10.0)
    clipped.loss.backward()
    assert torch.isfinite(clipped.loss) and clipped.loss <= math.log(4 * 9) + 20.0
    assert torch.isfinite(big_src.grad).all() and big_src.grad.abs().max() < 1e-2
    # the penalty pulls scores towards 0: a gradient step on it shrinks mean(s^2)
    s2 = src.clone().requires_grad_()
    amdim_nce(s2, trg, penalty=1.0, clip=10.0).penalty.backward()
    before = amdim_scores(src, trg.reshape(-1, 8)).pow(2).mean()
    after = amdim_scores(src - 0.1 * s2.grad, trg.reshape(-1, 8)).pow(2).mean()
    assert after < before


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 3)])
def test_amdim_feature_map_shapes(size: int, channels: int) -> None:
    torch.manual_seed(0)
    model = build_amdim(TINY_AMDIM, channels, size)
    out = model(torch.randn(2, channels, size, size))
    assert out.r1.shape == (2, 16)
    assert out.r5.shape == (2, 16, 5, 5)
    assert out.r7.shape == (2, 16, 7, 7)
    assert out.h7.shape == (2, 16, 7, 7) and out.h1.shape == (2, 16)
    feats = model.features(torch.randn(2, channels, size, size), grid=2)
    assert feats["local"].shape == (2, 64) and feats["r1"].shape == (2, 16)


def test_amdim_rejects_unsupported_size_and_bad_config() -> None:
    with pytest.raises(ConfigError, match="image size 48"):
        build_amdim(TINY_AMDIM, 3, 48)
    with pytest.raises(ConfigError, match="amdim.clip"):
        load_config(None, ["kind=amdim", "amdim.clip=-1"])


def test_amdim_loss_terms_and_views() -> None:
    torch.manual_seed(0)
    model = build_amdim(TINY_AMDIM, 1, 28)
    x1, x2 = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    loss, metrics, feats = model.loss(x1, x2, torch.Generator().manual_seed(0))
    assert {"nce/1t5", "nce/1t7", "nce/5t5", "penalty"} <= set(metrics)
    assert feats.shape == (4, 16) and not feats.requires_grad
    assert torch.isfinite(loss)
    # chance level: the NCE of each pair is about log(number of candidates)
    assert abs(metrics["nce/1t5"] - math.log(3 * 25 + 1)) < 1.0
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    v1, v2 = two_views(images, make_view_transform(1, 28))
    assert v1.shape == v2.shape == (3, 1, 28, 28) and v1.dtype == torch.uint8
    assert not torch.equal(v1, v2)
    rgb = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8)
    w1, _ = two_views(rgb, make_view_transform(3, 64))
    assert w1.shape == (2, 3, 64, 64)


# ------------------------------------------------------------------- stability


@pytest.mark.parametrize("est", ["jsd", "dv", "infonce"])
def test_dim_no_nan_over_hundreds_of_steps(est: str) -> None:
    torch.manual_seed(0)
    cfg = DIMConfig(**{**TINY_DIM.__dict__, "global_estimator": est, "local_estimator": est,
                       "alpha": 1.0, "gamma": 1.0})
    model = build_dim(cfg, 1, 12)
    opt = torch.optim.Adam(model.encoder_parameters(), lr=3e-3)
    opt_d = torch.optim.Adam(model.prior_parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        x = torch.randn(8, 1, 12, 12, generator=g)
        out = model.encoder_loss(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        d_loss = model.prior_loss(out.y.detach(), g)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        assert torch.isfinite(out.loss) and torch.isfinite(d_loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_amdim_no_nan_over_hundreds_of_steps() -> None:
    torch.manual_seed(0)
    model = build_amdim(AMDIMConfig(ndf=4, n_rkhs=8), 1, 28)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        x = torch.randn(4, 1, 28, 28, generator=g)
        loss, _, _ = model.loss(x, x + 0.1 * torch.randn(x.shape, generator=g), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------------- data


def test_read_idx_roundtrip_and_errors(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)
    ints = np.array([[1, -2], [3, 400000]], dtype=np.int32)
    write_idx(tmp_path / "b", ints, gz=False)
    assert np.array_equal(read_idx(tmp_path / "b"), ints)
    (tmp_path / "bad").write_bytes(b"\x08\x03\x00\x01")
    with pytest.raises(DataError, match=r"bad.*not an IDX file"):
        read_idx(tmp_path / "bad")
    raw = (tmp_path / "b").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-3])
    with pytest.raises(DataError, match="declares shape"):
        read_idx(tmp_path / "short")
    (tmp_path / "notgz.gz").write_bytes(b"plain")
    with pytest.raises(DataError, match="notgz.gz: cannot read"):
        read_idx(tmp_path / "notgz.gz")


def test_fashion_mnist_reader(tmp_path: Path) -> None:
    root = fake_fashion_mnist(tmp_path / "fm", n_train=20, n_test=10)
    tr = load_fashion_mnist(root, "train")
    te = load_dataset("fashion_mnist", str(root), "test")
    assert tr.images.shape == (20, 1, 28, 28) and tr.images.dtype == torch.uint8
    assert tr.labels.tolist() == [i % 10 for i in range(20)] and len(te) == 10
    assert tr.classes[9] == "Ankle boot"
    with pytest.raises(DataError, match=r"nowhere.*does not exist.*t10k-images-idx3-ubyte"):
        load_fashion_mnist(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.*is empty.*dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "empty")
    os.remove(root / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]"):
        load_fashion_mnist(root, "test")
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros(9, np.uint8))
    with pytest.raises(DataError, match="10 images .* but 9 labels"):
        load_fashion_mnist(root, "test")
    write_idx(root / "t10k-images-idx3-ubyte.gz", np.zeros((9, 784), np.uint8))
    with pytest.raises(DataError, match=r"images have shape \(9, 784\)"):
        load_fashion_mnist(root, "test")


def test_check_arrays_rejects_bad_shapes_and_dtypes() -> None:
    x, y = check_arrays(np.zeros((4, 5, 5), np.uint8), [0, 1, 2, 3], "mem")
    assert x.shape == (4, 1, 5, 5) and y.dtype == torch.int64
    with pytest.raises(DataError, match=r"mem: images have dtype float32.*uint8 \(N, C, H, W\)"):
        check_arrays(np.zeros((4, 1, 5, 5), np.float32), [0] * 4, "mem")
    with pytest.raises(DataError, match=r"shape \(4, 2, 5, 5\)"):
        check_arrays(np.zeros((4, 2, 5, 5), np.uint8), [0] * 4, "mem")
    with pytest.raises(DataError, match=r"shape \(4, 3, 5, 6\)"):
        check_arrays(np.zeros((4, 3, 5, 6), np.uint8), [0] * 4, "mem")
    with pytest.raises(DataError, match=r"labels have shape \(3,\) but there are 4 images"):
        check_arrays(np.zeros((4, 3, 5, 5), np.uint8), [0] * 3, "mem")
    with pytest.raises(DataError, match="labels span"):
        check_arrays(np.zeros((2, 3, 5, 5), np.uint8), [0, 10], "mem", num_classes=10)
    with pytest.raises(DataError, match="labels have dtype float64"):
        check_arrays(np.zeros((2, 3, 5, 5), np.uint8), [0.5, 1.0], "mem")


def _cifar_batch(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072)).astype(np.uint8), [int(v) for v in rng.integers(0, 10, n)]


def fake_cifar(root: Path, n: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data, labels = _cifar_batch(n, i)
        batches[name] = (data, labels)
        with open(base / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"x"}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": data_mod.CIFAR10_CLASSES}, f)
    return batches


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar10_reader_on_small_local_files(tmp_path: Path, monkeypatch) -> None:
    batches = fake_cifar(tmp_path / "c10")
    tr = load_cifar10(tmp_path / "c10", "train")
    te = load_cifar10(tmp_path / "c10", "test")
    assert tr.images.shape == (20, 3, 32, 32) and te.images.shape == (4, 3, 32, 32)
    data, labels = batches["data_batch_2"]
    # row layout: 1024 red, 1024 green, 1024 blue values, each 32x32 row-major
    assert np.array_equal(tr.images[4:8].numpy(), data.reshape(4, 3, 32, 32))
    assert tr.labels[4:8].tolist() == labels and tr.classes[0] == "airplane"
    # a tampered batch that would run code is refused
    with open(tmp_path / "c10" / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": _Evil(), "labels": [0]}, f)
    with pytest.raises(DataError, match=r"test_batch: not a CIFAR-10 python batch.*refused"):
        load_cifar10(tmp_path / "c10", "test")
    with open(tmp_path / "c10" / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(DataError, match=r"'data' has shape \(2, 100\)"):
        load_cifar10(tmp_path / "c10", "test")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "notes.txt").write_text("not cifar")
    with pytest.raises(DataError, match=r"missing .*data_batch_1.*download=true"):
        load_cifar10(tmp_path / "elsewhere", "train")
    # download=True goes through torchvision's downloader (faked here: no network)
    calls = []

    def fake_download(name, root, **kw):
        calls.append((name, kw))
        fake_cifar(root)

    monkeypatch.setattr(data_mod, "_torchvision_download", fake_download)
    got = load_cifar10(tmp_path / "fresh", "train", download=True)
    assert calls == [("cifar10", {"train": True})] and len(got) == 20


def test_torchvision_downloader_is_called_with_download(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets as tvd

    seen = {}

    class FakeCIFAR:
        def __init__(self, root, download=False, **kw):
            seen.update(root=root, download=download, **kw)
            fake_cifar(Path(root))

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR)
    load_cifar10(tmp_path / "dl", "test", download=True)
    assert seen == {"root": str(tmp_path / "dl"), "download": True, "train": False}


def test_stl10_reader_on_small_local_files(tmp_path: Path) -> None:
    base = tmp_path / "stl" / "stl10_binary"
    base.mkdir(parents=True)
    img = np.random.default_rng(0).integers(0, 256, (3, 3, 96, 96)).astype(np.uint8)
    # on disk each plane is column-major
    base.joinpath("train_X.bin").write_bytes(img.transpose(0, 1, 3, 2).tobytes())
    base.joinpath("train_y.bin").write_bytes(bytes([1, 5, 10]))
    base.joinpath("unlabeled_X.bin").write_bytes(img[:2].transpose(0, 1, 3, 2).tobytes())
    tr = load_stl10(tmp_path / "stl", "train")
    assert np.array_equal(tr.images.numpy(), img) and tr.labels.tolist() == [0, 4, 9]
    both = load_stl10(tmp_path / "stl", "train+unlabeled")
    assert len(both) == 5 and both.labels.tolist()[-2:] == [-1, -1]
    base.joinpath("test_X.bin").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match="not a whole number of 3x96x96"):
        load_stl10(tmp_path / "stl", "test")


# ----------------------------------------------------------- training and the CLI


def _tiny_overrides(tmp_path: Path, kind: str, root: Path) -> list[str]:
    common = [f"kind={kind}", "data.dataset=fashion_mnist", f"data.root={root}",
              "data.batch_size=8", "train.steps=4", "train.log_every=2", "train.save_every=2",
              "train.progress=false", "train.threads=1", f"train.out_dir={tmp_path / kind}"]
    if kind == "dim":
        return common + [f"dim.{k}={v}" for k, v in TINY_DIM.__dict__.items()
                         if isinstance(v, int) and not isinstance(v, bool)]
    return common + ["amdim.ndf=4", "amdim.n_rkhs=8"]


def test_dim_training_checkpoint_and_exact_resume(tmp_path: Path) -> None:
    root = fake_fashion_mnist(tmp_path / "fm")
    full = make_image_engine(load_config(None, _tiny_overrides(tmp_path / "a", "dim", root)
                                    + ["train.steps=6"]))
    metrics = full.run()
    assert {"mi/global", "mi/local", "loss/prior_disc", "online_probe/acc"} <= set(metrics)
    st = load_checkpoint(tmp_path / "a" / "dim" / "last.pt")
    assert st["kind"] == "dim" and st["step"] == 6
    assert st["config"]["dim"]["ndf"] == 4 and st["input"]["image_size"] == 28
    assert json.loads((tmp_path / "a" / "dim" / "log.jsonl").read_text().splitlines()[0])["step"] == 2
    part = make_image_engine(load_config(None, _tiny_overrides(tmp_path / "b", "dim", root)
                                    + ["train.steps=3"]))
    part.run()
    resumed = make_image_engine(load_config(None, _tiny_overrides(tmp_path / "b", "dim", root)
                                       + ["train.steps=6"]), resume=True)
    assert resumed.step == 3
    resumed.run()
    for (name, p1), p2 in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(p1.float(), p2.float(), atol=1e-6), name
    model, cfg, geo = load_image_model(tmp_path / "a" / "dim" / "last.pt")
    assert cfg.kind == "dim" and geo["channels"] == 1 and not model.training


def test_cli_train_and_probe_table(tmp_path: Path, capsys) -> None:
    root = fake_fashion_mnist(tmp_path / "fm")
    assert image_main(["image", "train", *_tiny_overrides(tmp_path, "amdim", root)]) == 0
    ckpt = tmp_path / "amdim" / "last.pt"
    assert load_checkpoint(ckpt)["kind"] == "amdim"
    capsys.readouterr()
    rc = image_main(["image", "probe", "--ckpt", str(ckpt), "--out", str(tmp_path / "probe"),
                     "--epochs", "2", "--no-progress", "--threads", "1"])
    assert rc == 0
    table = capsys.readouterr().out
    for row in ("AMDIM global r1 (score space) (trained)", "(random init)", "raw pixels"):
        assert row in table
    res = json.loads((tmp_path / "probe" / "raw" / "result.json").read_text())
    assert res["feature_dim"] == 784 and res["n"] == 32
    assert (tmp_path / "probe" / "rand_local" / "confusion.png").is_file()
    assert (tmp_path / "probe" / "table.md").read_text().count("\n| ") == 6  # header + 5 rows


def test_amdim_trains_on_small_local_cifar_files(tmp_path: Path) -> None:
    fake_cifar(tmp_path / "c10", n=4)
    cfg = load_config(None, ["kind=amdim", "data.dataset=cifar10", f"data.root={tmp_path / 'c10'}",
                             "data.batch_size=6", "train.steps=2", "train.progress=false",
                             "amdim.ndf=4", "amdim.n_rkhs=8", f"train.out_dir={tmp_path / 'o'}"])
    trainer = make_image_engine(cfg)
    assert len(trainer.task.data) == 20 and trainer.task.size == 32 and trainer.task.channels == 3
    metrics = trainer.run()
    assert metrics["acc/1t5"] >= 0 and load_checkpoint(tmp_path / "o" / "last.pt")["step"] == 2


def test_cli_user_errors_exit_2(tmp_path: Path, capsys) -> None:
    rc = image_main(["image", "train", "kind=dim", f"data.root={tmp_path / 'missing'}",
                     f"train.out_dir={tmp_path / 'o'}", "train.progress=false"])
    err = capsys.readouterr().err
    assert rc == 2 and "missing: data set directory does not exist" in err
    assert "train-images-idx3-ubyte" in err
    assert image_main(["image", "train", "kind=vae"]) == 2
    assert "kind: 'vae' is not one of 'dim', 'amdim'" in capsys.readouterr().err
    (tmp_path / "x.pt").write_bytes(b"junk")
    assert image_main(["image", "probe", "--ckpt", str(tmp_path / "x.pt"), "--out",
                       str(tmp_path / "p")]) == 2
    assert "not a cpc_seq checkpoint (a text file" in capsys.readouterr().err
    assert issubclass(DataError, CpcSeqError)


def test_add_image_commands_registers_subcommands() -> None:
    import argparse

    from cpc_seq.images.cli import add_image_commands, cmd_image_probe, cmd_image_train

    parser = argparse.ArgumentParser()
    add_image_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["image-probe", "--ckpt", "a.pt", "--out", "o"])
    assert args.func is cmd_image_probe
    args = parser.parse_args(["image-train", "--config", "c.yaml", "train.steps=3"])
    assert args.overrides == ["train.steps=3"] and args.func is cmd_image_train


# -------------------------------------------------------------------- recipes


def test_recipe_configs_load() -> None:
    for conf in sorted(ROOT.glob("recipes/*dim*/conf/*.yaml")):
        cfg = load_config(conf)
        assert cfg.kind in ("dim", "amdim"), conf


def test_dim_recipe_smoke(tmp_path: Path) -> None:
    root = fake_fashion_mnist(tmp_path / "fm")
    tiny = ["data.batch_size=8", "train.steps=3", "train.progress=false"]
    tiny += [f"dim.{k}={v}" for k, v in TINY_DIM.__dict__.items()
             if isinstance(v, int) and not isinstance(v, bool)]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "TRAIN_OVERRIDES": " ".join(tiny), "PROBE_OPTS": "--epochs 1"}
    run = subprocess.run(
        ["bash", str(ROOT / "recipes/dim_fashion_mnist/run.sh"), "--exp", str(tmp_path / "exp"),
         "--data", str(root), "--threads", "1"], env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "raw pixels" in run.stdout and "DIM global Y (trained)" in run.stdout
    assert (tmp_path / "exp" / ".done.2").is_file()
    helped = subprocess.run(["bash", str(ROOT / "recipes/amdim_cifar10/run.sh"), "--help"],
                            capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0 and "stage" in helped.stdout
