"""Tests of cpc_seq.probes.abx against cases worked out by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from cpc_seq.errors import ConfigError, DataError
from cpc_seq.probes.abx import (
    ItemRow,
    abx_error,
    abx_from_npy_dir,
    dtw_batch,
    dtw_distance,
    dtw_distance_batch,
    frame_distance,
    frame_range,
    item_frames,
    read_item_file,
)

HEADER = "#file onset offset #phone prev-phone next-phone speaker\n"


def make_case(tokens):
    """tokens: list of (speaker, phone, context, frames) -> (features, items).

    Each token gets its own file whose frames span [0, len/100) s at 100 frames/s.
    """
    features, items = {}, []
    for k, (spk, phone, ctx, frames) in enumerate(tokens):
        arr = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1)
        name = f"f{k}"
        features[name] = torch.from_numpy(arr)
        items.append(ItemRow(name, 0.0, len(frames) / 100, phone, ctx[0], ctx[1], spk))
    return features, items


def run(tokens, mode="within", **kw):
    features, items = make_case(tokens)
    kw.setdefault("distance", "euclidean")
    kw.setdefault("max_items_per_context", None)
    kw.setdefault("max_x_speakers", None)
    return abx_error(features, items, mode=mode, **kw)


C = ("x", "y")


# ----------------------------------------------------------------- distances


def test_cosine_and_angular_properties():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [0.0, 5.0]], dtype=torch.float64)
    cos = frame_distance(a, b, "cosine")
    ang = frame_distance(a, b, "angular")
    assert cos.shape == (3, 3) and ang.shape == (3, 3)
    # same direction, opposite, orthogonal
    assert cos[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert cos[0, 1] == pytest.approx(2.0)
    assert cos[0, 2] == pytest.approx(1.0)
    assert ang[0, 0] == pytest.approx(0.0, abs=1e-7)
    assert ang[0, 1] == pytest.approx(1.0)
    assert ang[0, 2] == pytest.approx(0.5)
    # 45 degrees
    assert ang[2, 0] == pytest.approx(0.25)
    assert cos[2, 0] == pytest.approx(1 - math.sqrt(0.5))
    # scale invariance, symmetry, ranges
    assert torch.allclose(frame_distance(5 * a, 0.1 * b, "cosine"), cos)
    assert torch.allclose(frame_distance(b, a, "angular"), ang.T)
    assert (cos >= 0).all() and (cos <= 2).all() and (ang >= 0).all() and (ang <= 1).all()
    # self-distance is zero on the diagonal
    diag = torch.diagonal(frame_distance(a, a, "angular"))
    assert torch.allclose(diag, torch.zeros(3, dtype=torch.float64), atol=1e-6)


def test_euclidean_and_batched_distance():
    a = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 0.0], [6.0, 8.0], [3.0, 0.0]])
    d = frame_distance(a, b, "euclidean")
    assert torch.allclose(d, torch.tensor([[0.0, 10.0, 3.0], [5.0, 5.0, 4.0]]))
    batched = frame_distance(a.expand(2, 2, 2), b.expand(2, 3, 2), "cosine")
    assert batched.shape == (2, 2, 3)
    assert torch.allclose(batched[1], frame_distance(a, b, "cosine"))
    with pytest.raises(ConfigError, match="unknown frame distance"):
        frame_distance(a, b, "manhattan")
    with pytest.raises(ValueError):
        frame_distance(a, torch.zeros(3, 5))


# ------------------------------------------------------------------------ DTW


def test_dtw_hand_computed():
    # acc: [[1, 4], [3, 2], [7, 4]]; best path (0,0)->(1,1)->(2,1): cost 1+1+2 = 4, 3 cells.
    cost = torch.tensor([[1.0, 3.0], [2.0, 1.0], [4.0, 2.0]])
    total, length = dtw_batch(cost[None])
    assert total.item() == pytest.approx(4.0)
    assert length.item() == 3
    assert dtw_distance(cost) == pytest.approx(4 / 3)
    # 1 x N: the only path visits every cell.
    assert dtw_distance([[1.0, 2.0, 6.0]]) == pytest.approx(3.0)
    assert dtw_distance([[5.0]]) == pytest.approx(5.0)


def test_dtw_tie_prefers_diagonal():
    # diag path (0,0)->(1,1) costs 2 in 2 cells; (0,0)->(0,1)->(1,1) also costs 2 in 3 cells.
    # The diagonal wins the tie (Libri-light convention): 2 / 2 = 1.
    cost = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    total, length = dtw_batch(cost[None])
    assert total.item() == 2.0 and length.item() == 2
    assert dtw_distance(cost) == 1.0


def _reference_dtw(c: np.ndarray) -> float:
    """Plain double loop plus backtracking, as in the Libri-light Cython code."""
    n, m = c.shape
    acc = np.zeros((n, m))
    acc[0, 0] = c[0, 0]
    for i in range(1, n):
        acc[i, 0] = acc[i - 1, 0] + c[i, 0]
    for j in range(1, m):
        acc[0, j] = acc[0, j - 1] + c[0, j]
    for i in range(1, n):
        for j in range(1, m):
            acc[i, j] = c[i, j] + min(acc[i - 1, j], acc[i - 1, j - 1], acc[i, j - 1])
    i, j, length = n - 1, m - 1, 1
    while i > 0 and j > 0:
        up, left, diag = acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1]
        if diag <= left and diag <= up:
            i, j = i - 1, j - 1
        elif left <= up:
            j -= 1
        else:
            i -= 1
        length += 1
    length += i + j
    return acc[-1, -1] / length


def test_dtw_matches_reference_and_padding_is_ignored():
    rng = np.random.default_rng(0)
    costs, la, lb = [], [], []
    padded = torch.full((12, 7, 9), 123.0, dtype=torch.float64)
    for k in range(12):
        n, m = rng.integers(1, 8), rng.integers(1, 10)
        # integers in {0, 1, 2} make ties frequent
        c = rng.integers(0, 3, size=(n, m)).astype(np.float64)
        costs.append(c)
        la.append(n)
        lb.append(m)
        padded[k, :n, :m] = torch.from_numpy(c)
        assert dtw_distance(c) == pytest.approx(_reference_dtw(c))
    got = dtw_distance_batch(padded, la, lb)
    want = [_reference_dtw(c) for c in costs]
    assert got.tolist() == pytest.approx(want)


# -------------------------------------------------------------------- items


def test_read_item_file(tmp_path):
    path = tmp_path / "a.item"
    path.write_text(HEADER + "utt1 0.10 0.25 ah b k spk1\n\nutt2 1 1.5 k ah SIL spk2\n")
    rows = read_item_file(path)
    assert len(rows) == 2
    r = rows[0]
    assert (r.file, r.onset, r.offset, r.phone, r.prev_phone, r.next_phone, r.speaker) == (
        "utt1", 0.10, 0.25, "ah", "b", "k", "spk1")
    assert r.context == ("b", "k")
    assert rows[1].line == 4 and rows[1].source == str(path)


@pytest.mark.parametrize(
    "bad, pattern",
    [
        ("utt1 0.1 0.2 ah b k\n", "expected 7 fields"),
        ("utt1 zero 0.2 ah b k s\n", "must be numbers"),
        ("utt1 0.3 0.2 ah b k s\n", "onset < offset"),
        ("utt1 0.1 nan ah b k s\n", "finite"),
        ("#another header\n", "unexpected '#'"),
    ],
)
def test_read_item_file_malformed_line_names_file_and_line(tmp_path, bad, pattern):
    path = tmp_path / "bad.item"
    path.write_text(HEADER + "utt1 0.1 0.2 ah b k s\n" + bad)
    with pytest.raises(DataError, match=pattern) as info:
        read_item_file(path)
    assert f"{path}:3" in str(info.value)


def test_read_item_file_missing_or_empty(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_item_file(tmp_path / "nope.item")
    (tmp_path / "empty.item").write_text(HEADER)
    with pytest.raises(DataError, match="no items"):
        read_item_file(tmp_path / "empty.item")


# ------------------------------------------------------------------ slicing


def test_frame_range():
    # centres at 0.005, 0.015, ...: [0.02, 0.05) holds the centres of frames 2, 3, 4
    assert frame_range(0.02, 0.05, 100) == (2, 5)
    # a centre on the onset is in, a centre on the offset is out
    assert frame_range(0.025, 0.045, 100) == (2, 4)
    assert frame_range(0.105, 0.115, 100) == (10, 11)
    # frame centre offset 0: frame k at k / 100
    assert frame_range(0.02, 0.05, 100, frame_offset=0.0) == (2, 5)
    # other rates, clipping, empty
    assert frame_range(0.0, 1.0, 1000, frame_rate=50) == (0, 50)
    assert frame_range(0.9, 2.0, 95) == (90, 95)
    assert frame_range(0.016, 0.024, 100) == (2, 2)
    assert frame_range(5.0, 6.0, 100) == (100, 100)


def test_item_frames_and_missing_file():
    feats = {"u": torch.arange(20.0).reshape(10, 2)}
    items = [ItemRow("u", 0.02, 0.05, "a", "x", "y", "s"),
             ItemRow("u", 0.5, 0.6, "a", "x", "y", "s")]
    out = item_frames(feats, items)
    assert out[0].tolist() == [[4.0, 5.0], [6.0, 7.0], [8.0, 9.0]]
    assert out[1].shape == (0, 2)
    bad = [ItemRow("v", 0.0, 0.1, "a", "x", "y", "s", source="t.item", line=7)]
    with pytest.raises(DataError, match=r"t\.item:7: no features for file 'v'"):
        item_frames(feats, bad)


# ---------------------------------------------------------------------- ABX


def test_separated_phones_give_zero_error():
    tokens = [
        ("s1", "a", C, [[0.0]]), ("s1", "a", C, [[0.1]]),
        ("s1", "b", C, [[1.0]]), ("s1", "b", C, [[1.1]]),
    ]
    res = run(tokens)
    assert res["error"] == 0.0
    # (a, b): 2 ordered (A, X) pairs x 2 B; same for (b, a)
    assert res["n_triplets"] == 8
    assert res["n_phone_pairs"] == 2
    assert res["by_phone_pair"] == {"a": {"b": 0.0}, "b": {"a": 0.0}}


def test_multi_frame_tokens_use_dtw():
    # 'a' = rising, 'b' = falling ramps of different lengths: DTW aligns the ramps.
    tokens = [
        ("s1", "a", C, [[0.0], [0.5], [1.0]]), ("s1", "a", C, [[0.0], [0.3], [0.6], [1.0]]),
        ("s1", "b", C, [[1.0], [0.0]]), ("s1", "b", C, [[1.0], [0.6], [0.2]]),
    ]
    assert run(tokens)["error"] == 0.0
    # with swapped labels for one of the 'b' tokens the (a, b) task fails for it
    assert run(tokens[:3] + [("s1", "a", C, [[1.0], [0.6], [0.2]])])["error"] > 0.0


def test_swapped_speaker_within_and_across():
    # s1, s2: a ~ 0, b ~ 1; s3 has them swapped.
    def spk(name, swapped):
        lo, hi = ([1.0], [1.1]) if swapped else ([0.0], [0.1])
        blo, bhi = ([0.0], [0.1]) if swapped else ([1.0], [1.1])
        return [(name, "a", C, [lo]), (name, "a", C, [hi]),
                (name, "b", C, [blo]), (name, "b", C, [bhi])]

    tokens = spk("s1", False) + spk("s2", False) + spk("s3", True)
    # Within a speaker the swap does not matter.
    assert run(tokens, "within")["error"] == 0.0
    # Across: cell (s, x) has error 1 iff exactly one of s, x is s3.
    # s1: mean(x=s2: 0, x=s3: 1) = 0.5; s2: 0.5; s3: mean(1, 1) = 1  ->  2/3 per pair.
    res = run(tokens, "across")
    assert res["error"] == pytest.approx(2 / 3)
    assert res["by_phone_pair"]["a"]["b"] == pytest.approx(2 / 3)
    assert res["by_phone_pair"]["b"]["a"] == pytest.approx(2 / 3)
    # 3 speakers x 2 X speakers x 2 pairs x (2 A x 2 B x 2 X)
    assert res["n_triplets"] == 3 * 2 * 2 * 8


def test_ties_score_one_half():
    tokens = [("s1", p, C, [[0.0]]) for p in "aabb"]
    res = run(tokens)
    assert res["error"] == 0.5
    assert res["n_triplets"] == 8
    # a = {0, 2}, b = {4}: (A=0, X=2): d(A,X) = 2 = d(B,X) -> 0.5; (A=2, X=0): 2 < 4 -> 0.
    res = run([("s1", "a", C, [[0.0]]), ("s1", "a", C, [[2.0]]), ("s1", "b", C, [[4.0]])])
    assert res["error"] == 0.25
    assert res["n_triplets"] == 2


def test_contexts_are_averaged_not_pooled():
    c1, c2 = ("x", "y"), ("y", "x")
    tokens = [
        # c1: a = {0, .1, .2}, b = {1}: 3 x 2 x 1 = 6 triplets, all correct.
        ("s1", "a", c1, [[0.0]]), ("s1", "a", c1, [[0.1]]), ("s1", "a", c1, [[0.2]]),
        ("s1", "b", c1, [[1.0]]),
        # c2: a = {0, 1}, b = {0.6}: both triplets wrong (d(A,X) = 1 > 0.4 and > 0.6).
        ("s1", "a", c2, [[0.0]]), ("s1", "a", c2, [[1.0]]), ("s1", "b", c2, [[0.6]]),
    ]
    res = run(tokens)
    assert res["n_triplets"] == 8
    assert res["n_cells"] == 2
    # mean over contexts (0 + 1) / 2, not pooled 2 / 8
    assert res["error"] == pytest.approx(0.5)


def test_speakers_then_phone_pairs_are_averaged():
    tokens = [
        # s1: (a, b) error 0 ; (b, a) error 0
        ("s1", "a", C, [[0.0]]), ("s1", "a", C, [[0.1]]),
        ("s1", "b", C, [[1.0]]), ("s1", "b", C, [[1.1]]),
        # s2: only (a, b) possible (one b), error 1: a = {0, 1}, b = {0.6}
        ("s2", "a", C, [[0.0]]), ("s2", "a", C, [[1.0]]), ("s2", "b", C, [[0.6]]),
    ]
    res = run(tokens)
    # (a, b): mean over speakers (0 + 1) / 2 = 0.5 ; (b, a): 0 (s1 only) -> overall 0.25
    assert res["by_phone_pair"] == {"a": {"b": 0.5}, "b": {"a": 0.0}}
    assert res["error"] == pytest.approx(0.25)


def _count_case():
    tokens = [
        ("s1", "a", C, [[0.0]]), ("s1", "a", C, [[0.1]]), ("s1", "b", C, [[1.0]]),
        ("s2", "a", C, [[0.2]]), ("s2", "b", C, [[0.9]]), ("s2", "b", C, [[1.2]]),
        # another context: cannot form triplets with the tokens above
        ("s1", "a", ("q", "r"), [[0.0]]), ("s2", "b", ("q", "r"), [[1.0]]),
        ("s1", "b", ("q", "r"), [[1.0]]),
    ]
    return tokens


def _brute_force_triplets(tokens, mode):
    out = []
    for (ia, ta), (ib, tb), (ix, tx) in itertools.product(enumerate(tokens), repeat=3):
        if not (ta[2] == tb[2] == tx[2] and ta[1] == tx[1] != tb[1]):
            continue
        if mode == "within" and ta[0] == tb[0] == tx[0] and ia != ix:
            out.append((ia, ib, ix))
        if mode == "across" and ta[0] == tb[0] != tx[0]:
            out.append((ia, ib, ix))
    return out


def test_within_and_across_triplet_counts():
    tokens = _count_case()
    # within: s1 (a, b): 2 A x 1 other X x 1 B = 2; s1 (b, a): one b, none;
    #         s2 (a, b): none; s2 (b, a): 2 x 1 x 1 = 2; context (q, r): no phone twice.
    res = run(tokens, "within")
    assert res["n_triplets"] == 4 == len(_brute_force_triplets(tokens, "within"))
    # across: AB=s1, X=s2: (a, b) 2 A x 1 B x 1 X = 2, (b, a) 1 x 2 x 2 = 4;
    #         AB=s2, X=s1: (a, b) 1 x 2 x 2 = 4, (b, a) 2 x 1 x 1 = 2;
    #         context (q, r): AB=s1 (a, b) needs an 'a' from s2: none; (b, a): X=s2 'b': 1.
    res = run(tokens, "across")
    assert res["n_triplets"] == 2 + 4 + 4 + 2 + 1 == len(_brute_force_triplets(tokens, "across"))
    # capping each (context, speaker, phone) group at one token
    res = run(tokens, "across", max_items_per_context=1)
    assert res["n_triplets"] == 5
    with pytest.raises(DataError, match="no triplets"):
        run(tokens, "within", max_items_per_context=1)


def test_max_x_speakers_caps_x_speakers():
    tokens = []
    for s in ("s1", "s2", "s3", "s4"):
        tokens += [(s, "a", C, [[0.0]]), (s, "b", C, [[1.0]])]
    # each (s, a): 3 X speakers x 1 A x 1 B x 1 X; 4 speakers, 2 phone pairs
    assert run(tokens, "across")["n_triplets"] == 4 * 2 * 3
    assert run(tokens, "across", max_x_speakers=2)["n_triplets"] == 4 * 2 * 2


def _hierarchical_mean(cells, mode, average):
    """cells: (context, s, x, a, b) -> triplet scores; the documented averaging order."""
    def mean_by(groups, key):
        out = {}
        for k, v in groups.items():
            out.setdefault(key(k), []).append(v)
        return {k: float(np.mean(v)) for k, v in out.items()}

    cell = {k: float(np.mean(v)) for k, v in cells.items()}
    if mode == "within" or average == "librilight":
        # (context, x) together per (s, a, b), then speakers s, then pairs (x = s within)
        by_s = {}
        for (_c, s, _x, a, b), v in cell.items():
            by_s.setdefault((s, a, b), []).append(v)
        by_pair = mean_by({k: float(np.mean(v)) for k, v in by_s.items()},
                          lambda k: (k[1], k[2]))
    else:
        by_sx = mean_by(cell, lambda k: (k[1], k[2], k[3], k[4]))  # contexts
        by_pair = mean_by(by_sx, lambda k: (k[2], k[3]))  # all speaker pairs
    return float(np.mean(list(by_pair.values())))


def test_abx_matches_brute_force_on_random_data():
    rng = np.random.default_rng(3)
    tokens = []
    for _ in range(40):
        spk = f"s{rng.integers(3)}"
        phone = "abc"[rng.integers(3)]
        ctx = [("x", "y"), ("y", "z")][rng.integers(2)]
        tokens.append((spk, phone, ctx, rng.normal(size=(rng.integers(1, 6), 3)).tolist()))
    features, items = make_case(tokens)
    segs = [torch.as_tensor(np.asarray(t[3])) for t in tokens]

    def d(i, j):
        return dtw_distance(frame_distance(segs[i], segs[j], "angular"))

    for mode in ("within", "across"):
        trip = _brute_force_triplets(tokens, mode)
        cells = {}
        for ia, ib, ix in trip:
            score = 1.0 if d(ia, ix) > d(ib, ix) else 0.5 if d(ia, ix) == d(ib, ix) else 0.0
            s, x = tokens[ia][0], tokens[ix][0]
            key = (tokens[ia][2], s, x, tokens[ia][1], tokens[ib][1])
            cells.setdefault(key, []).append(score)
        got = {}
        for average in ("librilight", "zerospeech2017"):
            want = _hierarchical_mean(cells, mode, average)
            res = abx_error(features, items, mode=mode, distance="angular", average=average,
                            max_items_per_context=None, max_x_speakers=None)
            assert res["n_triplets"] == len(trip)
            assert res["error"] == pytest.approx(want)
            got[average] = res["error"]
        # this design is unbalanced: the across orders must differ, the within ones not
        same = got["librilight"] == pytest.approx(got["zerospeech2017"])
        assert same == (mode == "within")


def _orders_case():
    """Across task, one phone pair (a, b): A/B speaker s1 in contexts c1, c2 with X
    speakers s3 (c1, c2) and s4 (c2 only); A/B speaker s2 in c3 with X speaker s3.
    Every cell has one triplet, A = 0, B = 1 (euclidean), so the cell error is 1 iff
    X > 0.5.  No speaker but s1/s2 has a 'b', and s1, s2 share no context, so the
    (b, a) task has no triplet."""
    c1, c2, c3 = ("p", "q"), ("q", "p"), ("r", "r")
    tokens = []
    for spk, ctx in (("s1", c1), ("s1", c2), ("s2", c3)):
        tokens += [(spk, "a", ctx, [[0.0]]), (spk, "b", ctx, [[1.0]])]
    tokens += [
        ("s3", "a", c1, [[0.9]]),  # cell (c1, s1, x=s3): error 1
        ("s3", "a", c2, [[0.1]]),  # cell (c2, s1, x=s3): error 0
        ("s4", "a", c2, [[0.8]]),  # cell (c2, s1, x=s4): error 1
        ("s3", "a", c3, [[0.2]]),  # cell (c3, s2, x=s3): error 0
    ]
    return tokens


def test_across_averaging_orders_by_hand():
    tokens = _orders_case()
    # Libri-light: s1 = mean over its (c, x) cells (1 + 0 + 1) / 3; s2 = 0; pair = 1/3.
    res = run(tokens, "across")
    assert res["average"] == "librilight"
    assert res["n_triplets"] == 4 and res["n_cells"] == 4 and res["n_phone_pairs"] == 1
    assert res["error"] == pytest.approx(1 / 3)
    assert res["by_phone_pair"] == {"a": {"b": pytest.approx(1 / 3)}}
    # ZeroSpeech 2017: speaker pairs (s1, s3) = (1 + 0) / 2, (s1, s4) = 1, (s2, s3) = 0;
    # mean over the three pairs = 0.5.
    res = run(tokens, "across", average="zerospeech2017")
    assert res["average"] == "zerospeech2017"
    assert res["error"] == pytest.approx(0.5)
    # (The order this module used before, context then X speaker then A/B speaker,
    # gives ((0.5 + 1) / 2 + 0) / 2 = 0.375: neither.)
    assert res["error"] != pytest.approx(0.375)


def test_averaging_orders_agree_within_and_on_balanced_designs():
    # within: both orders are context -> speaker -> phone pair
    tokens = [
        ("s1", "a", C, [[0.0]]), ("s1", "a", C, [[0.1]]),
        ("s1", "b", C, [[1.0]]), ("s1", "b", C, [[1.1]]),
        ("s2", "a", C, [[0.0]]), ("s2", "a", C, [[1.0]]), ("s2", "b", C, [[0.6]]),
    ]
    ll = run(tokens, "within")
    zs = run(tokens, "within", average="zerospeech2017")
    assert ll["error"] == zs["error"] == pytest.approx(0.25)
    # across with every (s, x) pair in one context: the orders agree (2/3 by hand, see
    # test_swapped_speaker_within_and_across)
    def spk(name, swapped):
        lo, hi = ([1.0], [1.1]) if swapped else ([0.0], [0.1])
        blo, bhi = ([0.0], [0.1]) if swapped else ([1.0], [1.1])
        return [(name, "a", C, [lo]), (name, "a", C, [hi]),
                (name, "b", C, [blo]), (name, "b", C, [bhi])]

    tokens = spk("s1", False) + spk("s2", False) + spk("s3", True)
    for average in ("librilight", "zerospeech2017"):
        assert run(tokens, "across", average=average)["error"] == pytest.approx(2 / 3)


def test_token_edges_on_frame_centres():
    # 100 frames/s, frame k centred at 0.01 k + 0.005: an onset on a centre takes that
    # frame, an offset on a centre does not.
    feats = {"u": torch.arange(10.0).reshape(10, 1)}
    rows = [
        ItemRow("u", 0.025, 0.045, "a", "x", "y", "s"),  # centres of frames 2 and 4
        ItemRow("u", 0.025, 0.035, "a", "x", "y", "s"),  # centres of frames 2 and 3
        ItemRow("u", 0.02, 0.04, "a", "x", "y", "s"),    # frame boundaries: frames 2, 3
        ItemRow("u", 0.0251, 0.0449, "a", "x", "y", "s"),  # just inside both centres
    ]
    out = [seg[:, 0].tolist() for seg in item_frames(feats, rows)]
    assert out[0] == [2.0, 3.0]
    assert out[1] == [2.0]
    assert out[2] == [2.0, 3.0]
    # onset just after centre 2 drops it; offset just before centre 4 keeps frame 3 only
    assert out[3] == [3.0]
    # frame_offset=0: frame k centred at 0.01 k; [0.02, 0.04] takes frames 2 and 3
    assert item_frames(feats, [rows[2]], frame_offset=0.0)[0][:, 0].tolist() == [2.0, 3.0]


def test_subsampling_is_deterministic():
    rng = np.random.default_rng(1)
    tokens = [(f"s{k % 3}", "ab"[k % 2], C, rng.normal(size=(3, 4)).tolist()) for k in range(60)]
    features, items = make_case(tokens)
    r1 = abx_error(features, items, mode="across", max_items_per_context=3, max_x_speakers=1)
    r2 = abx_error(features, items, mode="across", max_items_per_context=3, max_x_speakers=1)
    assert r1 == r2
    assert r1["n_triplets"] == 3 * 2 * 27  # 3 speakers x 2 pairs x 1 X speaker x 3 x 3 x 3


def test_item_slicing_inside_long_file_and_empty_items():
    # One file, 100 frames/s: token frames picked by onset/offset.
    feats = {"u": torch.tensor([[0.0], [0.0], [0.1], [1.0], [1.1], [5.0]], dtype=torch.float64)}
    items = [
        ItemRow("u", 0.00, 0.01, "a", "x", "y", "s"),  # frame 0
        ItemRow("u", 0.01, 0.03, "a", "x", "y", "s"),  # frames 1, 2
        ItemRow("u", 0.03, 0.05, "b", "x", "y", "s"),  # frames 3, 4
        ItemRow("u", 0.061, 0.069, "b", "x", "y", "s"),  # no frame centre inside: skipped
    ]
    res = abx_error(feats, items, distance="euclidean")
    assert res["n_items"] == 3 and res["n_items_empty"] == 1
    assert res["n_triplets"] == 2 and res["error"] == 0.0


def test_abx_errors():
    features, items = make_case([("s1", "a", C, [[0.0]]), ("s1", "b", C, [[1.0]])])
    with pytest.raises(DataError, match="no triplets"):
        abx_error(features, items)
    with pytest.raises(DataError, match="no triplets"):
        abx_error(features, items, mode="across")
    with pytest.raises(ConfigError, match="mode"):
        abx_error(features, items, mode="both")
    with pytest.raises(ConfigError, match="distance"):
        abx_error(features, items, distance="l1")
    with pytest.raises(ConfigError, match="average"):
        abx_error(features, items, average="zerospeech2015")
    with pytest.raises(ConfigError, match="max_items_per_context"):
        abx_error(features, items, max_items_per_context=0)
    with pytest.raises(DataError, match="must be \\(T, D\\)"):
        abx_error({"f0": torch.zeros(3), "f1": torch.zeros(3)}, items)
    with pytest.raises(DataError, match="dimension"):
        abx_error({"f0": torch.zeros(3, 2), "f1": torch.zeros(3, 4)}, items)


def test_abx_from_npy_dir(tmp_path):
    rng = np.random.default_rng(2)
    lines = [HEADER]
    feat_dir = tmp_path / "feats"
    feat_dir.mkdir()
    for u in range(6):
        np.save(feat_dir / f"utt{u}.npy", rng.normal(size=(50, 4)).astype(np.float32))
        for k in range(4):
            phone = "ab"[(u + k) % 2]
            lines.append(f"utt{u} {k * 0.1:.2f} {k * 0.1 + 0.07:.2f} {phone} x y spk{u % 2}\n")
    item_path = tmp_path / "test.item"
    item_path.write_text("".join(lines))
    res = abx_from_npy_dir(feat_dir, item_path, mode="across", max_items_per_context=None)
    feats = {f"utt{u}": np.load(feat_dir / f"utt{u}.npy") for u in range(6)}
    want = abx_error(feats, read_item_file(item_path), mode="across", max_items_per_context=None)
    assert res == want
    assert 0.0 <= res["error"] <= 1.0 and res["n_triplets"] > 0

    (feat_dir / "utt3.npy").unlink()
    with pytest.raises(DataError, match=rf"{item_path}:\d+: feature file .*utt3\.npy not found"):
        abx_from_npy_dir(feat_dir, item_path)
    np.save(feat_dir / "utt3.npy", np.zeros((2, 3, 4)))
    with pytest.raises(DataError, match="must be \\(T, D\\)"):
        abx_from_npy_dir(feat_dir, item_path)
