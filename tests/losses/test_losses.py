"""Loss core: k-step InfoNCE (all negative modes) and the MI estimators."""

from __future__ import annotations

import math

import pytest
import torch

from cpc_seq.losses import (
    donsker_varadhan,
    estimate,
    infonce,
    jsd,
    kstep_infonce,
    sample_negatives,
)
from cpc_seq.losses.negatives import positive_index

MODES = ["all", "other_sequences", "same_sequence", "cross_batch", "mixed"]


def _orthogonal_frames(b: int, t: int, scale: float = 30.0) -> torch.Tensor:
    """(B, T, D=B*T) one-hot frames: every frame is its own direction."""
    d = b * t
    return (torch.eye(d) * scale).reshape(b, t, d)


def _perfect_pred(z: torch.Tensor, k_steps: int) -> torch.Tensor:
    """pred[:, t, k-1] = z[:, t+k] (zero where t+k is out of range)."""
    b, t, d = z.shape
    pred = torch.zeros(b, t, k_steps, d)
    for k in range(1, k_steps + 1):
        pred[:, : t - k, k - 1] = z[:, k:]
    return pred


@pytest.mark.parametrize("mode", MODES)
def test_perfect_scores_give_zero_loss_and_full_accuracy(mode: str) -> None:
    z = _orthogonal_frames(3, 10)
    out = kstep_infonce(_perfect_pred(z, 4), z, negatives=mode, n_negatives=6,
                        generator=torch.Generator().manual_seed(0))
    assert out.loss.item() < 1e-6
    assert torch.all(out.step_acc == 1.0)
    assert torch.allclose(out.step_mi, torch.full((4,), math.log(out.num_candidates)), atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_equal_scores_give_log_n_plus_one(mode: str) -> None:
    b, t, k, d = 2, 12, 3, 5
    pred = torch.zeros(b, t, k, d)
    z = torch.randn(b, t, d)
    out = kstep_infonce(pred, z, negatives=mode, n_negatives=7)
    n_plus_1 = {"all": b * t, "other_sequences": (b - 1) * t + 1}.get(mode, 8)
    assert out.num_candidates == n_plus_1
    assert torch.allclose(out.step_loss, torch.full((k,), math.log(n_plus_1)), atol=1e-5)
    assert torch.allclose(out.step_mi, torch.zeros(k), atol=1e-5)


def test_other_sequences_leaves_out_the_own_sequence_but_the_positive() -> None:
    """Brute force: each query's softmax runs over its positive and every valid frame of
    the other sequences (padding excluded), nothing of its own sequence besides."""
    torch.manual_seed(3)
    b, t, k, d = 3, 7, 2, 4
    pred, z = torch.randn(b, t, k, d), torch.randn(b, t, d)
    lengths = torch.tensor([7, 5, 6])
    out = kstep_infonce(pred, z, lengths=lengths, negatives="other_sequences")
    for step in range(1, k + 1):
        losses, hits = [], []
        for bi in range(b):
            others = torch.cat([z[j, : lengths[j]] for j in range(b) if j != bi])
            for ti in range(int(lengths[bi]) - step):
                p = pred[bi, ti, step - 1]
                cands = torch.cat([z[bi, ti + step].unsqueeze(0), others])
                logits = cands @ p
                losses.append(torch.logsumexp(logits, 0) - logits[0])
                hits.append(bool(logits.argmax() == 0))
        assert out.step_loss[step - 1].item() == pytest.approx(torch.stack(losses).mean().item(),
                                                               abs=1e-5)
        assert out.step_acc[step - 1].item() == pytest.approx(sum(hits) / len(hits), abs=1e-6)
    assert out.num_candidates == 18 - 7 + 1  # the longest own sequence gives the fewest


def test_scores_stay_float32_under_bf16_autocast() -> None:
    """bf16 scores (8-bit mantissa) kept the tiny audio recipe at chance for two of three
    seeds; under autocast the loss must equal the float32 loss."""
    torch.manual_seed(4)
    pred, z = torch.randn(2, 16, 3, 64) * 3, torch.randn(2, 16, 64) * 3
    ref = kstep_infonce(pred, z, negatives="all")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = kstep_infonce(pred, z, negatives="all")
    assert torch.allclose(out.step_loss, ref.step_loss, atol=1e-4)


@pytest.mark.parametrize("negatives", ["all", "cross_batch"])
def test_acpc_scores_stay_float32_under_bf16_autocast(negatives: str) -> None:
    from cpc_seq.losses.acpc import acpc_loss

    torch.manual_seed(5)
    pred, z = torch.randn(2, 20, 3, 64) * 3, torch.randn(2, 20, 64) * 3
    ref = acpc_loss(pred, z, horizon=5, negatives=negatives, n_negatives=9,
                    generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = acpc_loss(pred, z, horizon=5, negatives=negatives, n_negatives=9,
                        generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out.step_loss, ref.step_loss, atol=1e-4)


def test_positive_index_for_every_k() -> None:
    b, t = 3, 9
    for k in range(1, 5):
        idx = positive_index(b, t, k).view(b, t - k)
        for bi in range(b):
            for ti in range(t - k):
                assert idx[bi, ti] == bi * t + ti + k


def test_positive_is_right_frame_for_every_k() -> None:
    """Predicting z[t+k'] for a wrong k' gives chance accuracy; the right k gives 1."""
    z = _orthogonal_frames(2, 16)
    pred = _perfect_pred(z, 3)
    shifted = torch.roll(pred, shifts=1, dims=2)  # head k now predicts z[t+k-1]
    out = kstep_infonce(shifted, z, negatives="all")
    assert torch.all(out.step_acc[1:] == 0.0)
    assert kstep_infonce(pred, z, negatives="all").step_acc.min() == 1.0


def test_same_sequence_negatives_stay_in_sequence() -> None:
    b, t, k, n = 4, 20, 3, 32
    lengths = torch.tensor([20, 15, 20, 9])
    g = torch.Generator().manual_seed(1)
    idx = sample_negatives("same_sequence", n, b, t, k, lengths, True, g)
    seq_of_query = torch.arange(b).repeat_interleave(t - k)
    assert torch.all(idx // t == seq_of_query.unsqueeze(1))
    assert torch.all(idx % t < lengths[seq_of_query].unsqueeze(1))  # never padding


def test_cross_batch_negatives_come_from_other_sequences() -> None:
    b, t, k, n = 4, 20, 2, 64
    lengths = torch.tensor([20, 20, 12, 20])
    idx = sample_negatives("cross_batch", n, b, t, k, lengths, True,
                           torch.Generator().manual_seed(2))
    seq_of_query = torch.arange(b).repeat_interleave(t - k).unsqueeze(1)
    other = (idx // t) != seq_of_query
    assert other.float().mean() > 0.5  # 3/4 of the frames belong to other sequences
    assert torch.all(idx % t < lengths[idx // t])  # padding never drawn


def test_mixed_negatives_split() -> None:
    b, t, k, n = 3, 16, 1, 10
    lengths = torch.full((b,), t)
    idx = sample_negatives("mixed", n, b, t, k, lengths, True, torch.Generator().manual_seed(3))
    seq_of_query = torch.arange(b).repeat_interleave(t - k).unsqueeze(1)
    assert torch.all(idx[:, :5] // t == seq_of_query)


@pytest.mark.parametrize("mode", ["same_sequence", "cross_batch", "mixed"])
def test_exclude_positive(mode: str) -> None:
    b, t, k, n = 2, 6, 1, 200
    lengths = torch.full((b,), t)
    pos = positive_index(b, t, k).unsqueeze(1)
    idx = sample_negatives(mode, n, b, t, k, lengths, True, torch.Generator().manual_seed(4))
    assert not torch.any(idx == pos)
    idx2 = sample_negatives(mode, n, b, t, k, lengths, False, torch.Generator().manual_seed(4))
    assert torch.any(idx2 == pos)  # with replacement from the full pool it does happen


def test_lengths_mask_padded_queries_and_candidates() -> None:
    z = _orthogonal_frames(2, 10)
    pred = _perfect_pred(z, 2)
    z_pad = z.clone()
    z_pad[1, 6:] = 1e3  # garbage after the length would dominate if not masked
    out = kstep_infonce(pred, z_pad, lengths=torch.tensor([10, 6]), negatives="all")
    assert out.step_acc.min() == 1.0
    assert out.num_candidates == 16


@pytest.mark.parametrize("mode", MODES)
def test_gradients_match_finite_differences(mode: str) -> None:
    torch.manual_seed(0)
    pred = torch.randn(2, 6, 2, 3, dtype=torch.float64, requires_grad=True)
    z = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)

    def f(p: torch.Tensor, zz: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(5)
        return kstep_infonce(p, zz, negatives=mode, n_negatives=4, generator=g).loss.double()

    # the loss casts scores to float32; compare with a tolerance that allows for it
    assert torch.autograd.gradcheck(f, (pred, z), eps=1e-3, atol=2e-3, rtol=2e-2)


@pytest.mark.parametrize("mode", MODES)
def test_mi_bound_never_exceeds_log_n(mode: str) -> None:
    torch.manual_seed(1)
    for _ in range(5):
        pred = torch.randn(3, 14, 4, 8) * 5
        z = torch.randn(3, 14, 8)
        out = kstep_infonce(pred, z, negatives=mode, n_negatives=9)
        assert torch.all(out.step_mi <= math.log(out.num_candidates) + 1e-6)


def test_no_batch_loop_shapes_large_k() -> None:
    pred = torch.randn(2, 30, 12, 4)
    z = torch.randn(2, 30, 4)
    out = kstep_infonce(pred, z, negatives="cross_batch", n_negatives=16)
    assert out.step_loss.shape == (12,)
    with pytest.raises(ValueError, match="prediction steps"):
        kstep_infonce(torch.randn(1, 5, 5, 4), torch.randn(1, 5, 4))
    with pytest.raises(ValueError, match="negatives mode"):
        kstep_infonce(pred, z, negatives="bogus")


# ----------------------------------------------------------------- estimators


def _diag_case(n: int, sep: float) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.full((n, n), -sep)
    scores.fill_diagonal_(sep)
    return scores, torch.eye(n, dtype=torch.bool)


def test_infonce_perfect_and_equal() -> None:
    s, m = _diag_case(6, 50.0)
    out = infonce(s, m)
    assert out.loss.item() < 1e-6
    assert abs(out.mi.item() - math.log(6)) < 1e-5
    out = infonce(torch.zeros(6, 6), m)
    assert abs(out.loss.item() - math.log(6)) < 1e-6


def test_infonce_matches_cross_entropy_with_one_positive() -> None:
    torch.manual_seed(0)
    s = torch.randn(5, 7)
    target = torch.tensor([0, 3, 6, 2, 1])
    m = torch.nn.functional.one_hot(target, 7).bool()
    ref = torch.nn.functional.cross_entropy(s, target)
    assert torch.allclose(infonce(s, m).loss, ref, atol=1e-6)


def test_jsd_signs_and_values() -> None:
    s, m = _diag_case(4, 0.0)
    out = jsd(s, m)
    assert abs(out.loss.item() - 2 * math.log(2)) < 1e-6  # sp(0) + sp(0)
    s, m = _diag_case(4, 30.0)
    assert jsd(s, m).loss.item() < 1e-6
    assert jsd(s, m).mi.item() > -1e-6


def test_dv_value_and_no_overflow() -> None:
    s, m = _diag_case(4, 3.0)
    # E_pos = 3, log E_neg[e^s] = -3
    assert abs(donsker_varadhan(s, m).mi.item() - 6.0) < 1e-5
    s, m = _diag_case(4, 1e4)  # would overflow exp() without log-sum-exp
    for name in ("infonce", "jsd", "dv"):
        out = estimate(name, s, m)
        assert torch.isfinite(out.loss)


def test_estimators_respect_valid_mask() -> None:
    s, m = _diag_case(3, 5.0)
    s2 = s.clone()
    s2[:, 2] = 1e3
    valid = torch.ones(3, 3, dtype=torch.bool)
    valid[:, 2] = False
    m2 = m.clone()
    m2[2, 2] = False
    m2[2, 0] = True
    a = infonce(s2, m2, valid)
    assert torch.isfinite(a.loss) and a.loss.item() < 100
    with pytest.raises(ValueError, match="unknown estimator"):
        estimate("mine", s, m)


def test_multiple_positives_per_row() -> None:
    """DIM local: one row (global vector), positives are all of its image's locations."""
    s = torch.tensor([[5.0, 5.0, -5.0, -5.0], [-5.0, -5.0, 5.0, 5.0]])
    m = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    out = infonce(s, m)
    expected = torch.nn.functional.softplus(torch.logsumexp(torch.tensor([-5.0, -5.0]), 0) - 5.0)
    assert torch.allclose(out.loss, expected)
