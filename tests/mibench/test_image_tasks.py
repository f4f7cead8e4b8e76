"""Image tasks with known MI: the latents' MI, injective drawings, and ``mi bench --suite
images``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.special import ndtri

from cpc_seq.cli import main
from cpc_seq.mibench.baselines import cca_mi
from cpc_seq.mibench.image_tasks import (
    bump_images,
    image_tasks,
    latent_pairs,
    rectangle_images,
)


@pytest.mark.parametrize("d,mi", [(2, 0.0), (2, 3.0), (4, 8.0)])
def test_latents_have_the_stated_mi(d: int, mi: float) -> None:
    u, v = latent_pairs(20000, d, mi, np.random.default_rng(0))
    assert u.min() > 0 and u.max() < 1
    # back to Gaussians: the closed form through canonical correlations
    assert cca_mi(ndtri(u), ndtri(v)) == pytest.approx(mi, abs=0.05 + 0.01 * mi)


def test_images_are_injective_in_the_latent() -> None:
    rng = np.random.default_rng(0)
    u = rng.uniform(size=(200, 2))
    b = bump_images(u)
    assert b.shape == (200, 16, 16)
    # the bump's centre of mass moves with the latent, one to one
    grid = np.arange(16) + 0.5
    cx = (b.sum(1) * grid).sum(1) / b.sum((1, 2))
    assert np.corrcoef(cx, u[:, 0])[0, 1] > 0.99
    w = rng.uniform(size=(200, 4))
    r = rectangle_images(w)
    assert r.shape == (200, 32, 32) and r.max() <= 1.0
    # covered area = product of the sides, so sub-pixel sides stay visible
    s = 12.0
    area = (4 + s * w[:, 2]) * (4 + s * w[:, 3])
    assert np.allclose(r.sum((1, 2)), area)


def test_tasks_return_compressed_pairs() -> None:
    tasks = image_tasks(mis=(0.0, 5.0))
    assert [t.dim_x for t in tasks] == [2, 2, 4, 4]
    x, y = tasks[1].sample(500, seed=0)
    assert x.shape == (500, 2) and y.shape == (500, 2)
    assert tasks[1].mi == 5.0 and "bumps" in tasks[1].name


def test_mi_bench_images_suite(tmp_path: Path) -> None:
    out = tmp_path / "mb"
    rc = main(["mi", "bench", "--suite", "images", "--estimators", "cca,ksg", "--ns", "300",
               "--tasks", "I=4", "--out", str(out), "--no-progress"])
    assert rc == 0
    rows = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"Gaussian bumps 16x16 [pca] I=4",
                                         "Rectangles 32x32 [pca] I=4"}
    assert all(math.isfinite(r["estimate"]) for r in rows)
    assert (out / "heatmap.png").is_file()
