"""MIENF, KSG and CCA against known MI, and ``cpc-seq mi estimate``."""

from __future__ import annotations

import math
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from cpc_seq.cli import main
from cpc_seq.mibench.baselines import (
    canonical_correlations,
    canonical_variates,
    cca_mi,
    gaussian_mi_from_cov,
    ksg_mi,
    rho_mi,
)
from cpc_seq.mibench.estimate import ESTIMATORS, CriticConfig, estimate_mi
from cpc_seq.mibench.mienf import MienfConfig, MienfModel, build_flow, mienf_mi

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread




def _pairs(n: int, rho: float, d: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, rho * x + math.sqrt(1 - rho * rho) * rng.standard_normal((n, d))


def test_closed_forms() -> None:
    assert rho_mi(0.75) == pytest.approx(0.4133, abs=1e-4)
    assert rho_mi([0.75, 0.75]) == pytest.approx(2 * 0.41334, abs=1e-4)
    for d, mi in ((2, 0.294), (3, 0.413), (5, 0.593), (25, 1.292), (50, 1.624)):
        cov = np.full((2 * d, 2 * d), 0.5) + 0.5 * np.eye(2 * d)
        assert gaussian_mi_from_cov(cov, d) == pytest.approx(mi, abs=1e-3)
    with pytest.raises(ValueError, match="dim_x"):
        gaussian_mi_from_cov(np.eye(3), 3)


def test_canonical_variates_whiten_and_align() -> None:
    rng = np.random.default_rng(1)
    x, y = _pairs(3000, 0.6, d=3)
    x = x @ rng.standard_normal((3, 3))  # mixing does not change the canonical correlations
    a, b, rho = canonical_variates(x, y)
    cov = np.cov(np.concatenate([a, b], 1).T, bias=True)
    assert np.allclose(cov[:3, :3], np.eye(3), atol=1e-3)
    assert np.allclose(cov[3:, 3:], np.eye(3), atol=1e-3)
    assert np.allclose(cov[:3, 3:], np.diag(rho), atol=1e-3)
    assert np.allclose(rho, 0.6, atol=0.05)
    assert canonical_correlations(x, y) == pytest.approx(rho)


def test_cca_and_ksg_near_truth() -> None:
    x, y = _pairs(2000, 0.75)
    assert cca_mi(x, y) == pytest.approx(0.4133, abs=0.03)
    assert ksg_mi(x, y) == pytest.approx(0.4133, abs=0.05)
    xi, yi = _pairs(2000, 0.0, seed=3)
    assert abs(ksg_mi(xi, yi)) < 0.03
    # KSG sees a non-linear dependence that CCA misses: y = x^2 + noise
    z = xi[:, :1] ** 2 + 0.1 * yi[:, :1]
    assert ksg_mi(xi, z) > 1.0 > 0.1 > cca_mi(xi, z)


def test_flows_start_as_identity() -> None:
    for flow in ("nsf", "maf", "realnvp"):
        for d in (1, 3):
            f = build_flow(d, MienfConfig(flow=flow))
            x = torch.randn(50, d) * 2
            z, ladj = f.transform().call_and_ladj(x)
            assert torch.allclose(z, x, atol=1e-5) and ladj.abs().max() < 1e-5


def test_tridiag_base_is_the_gaussian_with_matched_correlations() -> None:
    m = MienfModel(2, 3, MienfConfig(form="tridiag"))
    m.init_base(torch.tensor([0.75, 0.3]))
    assert m.estimate(torch.zeros(4, 2), torch.zeros(4, 3)) == pytest.approx(
        rho_mi([0.75, 0.3]), abs=1e-5)
    cov = torch.eye(5, dtype=torch.float64)
    cov[0, 2] = cov[2, 0] = 0.75
    cov[1, 3] = cov[3, 1] = 0.3
    z = torch.randn(7, 5)
    ref = torch.distributions.MultivariateNormal(torch.zeros(5), cov.float()).log_prob(z)
    assert torch.allclose(m.base_log_prob(z[:, :2], z[:, 2:]), ref, atol=1e-4)
    full = MienfModel(2, 3, MienfConfig(form="full"))
    full.init_base(torch.tensor([0.75, 0.3]))
    assert torch.allclose(full.base_log_prob(z[:, :2], z[:, 2:]), ref, atol=1e-4)


@pytest.mark.parametrize("form", ["full", "tridiag"])
def test_mienf_tracks_a_transformed_gaussian(form: str) -> None:
    x, y = _pairs(1000, 0.75)
    xc, yc = np.sign(x) * np.abs(x) ** 1.5, np.sign(y) * np.abs(y) ** 1.5  # half-cube
    v = mienf_mi(xc, yc, MienfConfig(form=form, steps=300, eval_every=50))
    assert v == pytest.approx(0.4133, abs=0.06)


def test_every_estimator_runs_by_name() -> None:
    x, y = _pairs(256, 0.75)
    fast = dict(mienf=MienfConfig(steps=20), critic=CriticConfig(steps=20, batch_size=64))
    for name in ESTIMATORS:
        v = estimate_mi(name, x, y, **fast)  # type: ignore[arg-type]
        assert math.isfinite(v), name
    with pytest.raises(ValueError, match="unknown estimator"):
        estimate_mi("nope", x, y)


def test_cli_mi_estimate_npy(tmp_path: Path, capsys) -> None:
    x, y = _pairs(500, 0.75)
    np.save(tmp_path / "x.npy", x[:, 0])  # (N,) reads as (N, 1)
    np.save(tmp_path / "y.npy", y)
    rc = main(["mi", "estimate", "--estimator", "cca", "--estimator", "ksg",
               f"npy:{tmp_path / 'x.npy'}", f"npy:{tmp_path / 'y.npy'}"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["cca", "ksg"]
    assert all(ln.endswith(" nats") for ln in lines)
    assert float(lines[0].split()[1]) == pytest.approx(0.4133, abs=0.06)


def test_cli_mi_estimate_bad_input_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.npy").write_text("not an array")
    np.save(tmp_path / "y.npy", np.zeros((20, 2)))
    np.save(tmp_path / "short.npy", np.zeros((19, 2)))
    for xs, ys, msg in (("bad.npy", "y.npy", "bad.npy: cannot read"),
                        ("y.npy", "short.npy", "short.npy: 19 rows")):
        rc = main(["mi", "estimate", "--estimator", "cca", f"npy:{tmp_path / xs}",
                   f"npy:{tmp_path / ys}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and msg in err[0], err


def test_cli_mi_estimate_scp_with_shift(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    z = {f"spk-u{i}": rng.standard_normal((200, 2)).astype(np.float32) for i in range(3)}
    # c_t carries z_{t+2} plus noise: the shift-2 pairs are dependent, shift 0 is not
    c = {u: np.concatenate([v[2:] + 0.5 * rng.standard_normal((198, 2)), np.zeros((2, 2))])
         .astype(np.float32) for u, v in z.items()}
    for name, feats in (("z", z), ("c", c)):
        with kaldiio.WriteHelper(f"ark,scp:{tmp_path / name}.ark,{tmp_path / name}.scp") as w:
            for u in sorted(feats):
                w(u, feats[u])
    args = ["mi-estimate", "--estimator", "cca", f"scp:{tmp_path / 'c.scp'}",
            f"scp:{tmp_path / 'z.scp'}"]
    assert main(args + ["--shift", "2"]) == 0
    shifted = float(capsys.readouterr().out.split()[1])
    assert main(args) == 0
    plain = float(capsys.readouterr().out.split()[1])
    assert shifted == pytest.approx(2 * 0.5 * math.log(1 + 1 / 0.25), abs=0.25)
    assert plain < 0.1
