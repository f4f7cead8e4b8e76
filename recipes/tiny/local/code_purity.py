#!/usr/bin/env python
"""Phone purity of discrete frame codes: for each code, the share of its frames that
carry its most frequent phone, weighted by the code's frame count
(``sum_k max_p n(k, p) / N``); 1.0 when every code is one phone.

Codes are the argmax of features ``FEATS`` (``scp:F.scp`` | ``npy:DIR``; for example the
co-training ``codes`` layer, (T, K) probabilities), or with ``--kmeans K --fit FEATS2``
the nearest of K k-means centroids fitted on ``FEATS2`` (for example CPC c of the train
split: the same K units from a model with no codes). Prints one line:

    NAME: purity P over N frames, U of K codes used (majority-label baseline B)

With ``--speakers utt2spk`` the label of every frame is its speaker instead (speaker
purity; the baseline is then the largest speaker's share).

Usage: code_purity.py --labels phone_frames.txt --phones phones.txt [--name NAME]
       [--kmeans K --fit scp:train.scp [--seed S]] [--speakers utt2spk] [--per-code]
       FEATS

``--per-code`` adds a line per used code: its share of the frames and its three most
frequent labels with their shares.
"""

from __future__ import annotations

import argparse

import numpy as np

from cpc_seq.audio.data.kaldi import read_frame_labels, read_phone_table
from cpc_seq.io.features import read_features


def purity(codes: np.ndarray, phones: np.ndarray) -> tuple[float, int]:
    """``codes (N,)``, ``phones (N,)`` ints -> (weighted purity, codes used)."""
    table: dict[int, dict[int, int]] = {}
    for k, p in zip(codes.tolist(), phones.tolist()):
        row = table.setdefault(k, {})
        row[p] = row.get(p, 0) + 1
    return sum(max(r.values()) for r in table.values()) / len(codes), len(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("feats")
    ap.add_argument("--labels", required=True)
    ap.add_argument("--phones", required=True)
    ap.add_argument("--name", default=None)
    ap.add_argument("--kmeans", type=int, default=0)
    ap.add_argument("--fit", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speakers", default=None)
    ap.add_argument("--per-code", action="store_true")
    args = ap.parse_args()
    labels = read_frame_labels(args.labels, read_phone_table(args.phones))
    feats = {u: f.numpy() for u, f in read_features(args.feats).items()}
    utts = sorted(u for u in feats if u in labels)
    if not utts:
        raise SystemExit("error: no utterance has both features and labels")
    x = np.concatenate([feats[u][: len(labels[u])] for u in utts])
    y = np.concatenate([labels[u][: len(feats[u])] for u in utts])
    if args.speakers:
        spk = dict(line.split()[:2] for line in open(args.speakers) if line.strip())
        ids = {s: i for i, s in enumerate(sorted(set(spk.values())))}
        y = np.concatenate([np.full(min(len(labels[u]), len(feats[u])), ids[spk[u]])
                            for u in utts])
    if args.kmeans:
        from sklearn.cluster import MiniBatchKMeans

        if args.fit is None:
            raise SystemExit("error: --kmeans needs --fit FEATS (the features to fit on)")
        fit = np.concatenate([f.numpy() for f in read_features(args.fit).values()])
        km = MiniBatchKMeans(args.kmeans, random_state=args.seed, n_init=3,
                             batch_size=4096).fit(fit)
        codes, k = km.predict(x), args.kmeans
    else:
        codes, k = x.argmax(1), x.shape[1]
    p, used = purity(codes, y)
    base = np.bincount(y).max() / len(y)
    print(f"{args.name or args.feats}: purity {p:.4f} over {len(y)} frames, {used} of {k} "
          f"codes used (majority-label baseline {base:.4f})")
    if args.per_code:
        names = {i: s for s, i in read_phone_table(args.phones).items()}
        if args.speakers:
            names = {i: s for i, s in enumerate(sorted(set(spk.values())))}
        for code in np.argsort(-np.bincount(codes, minlength=k)):
            sel = y[codes == code]
            if not len(sel):
                break
            top = np.argsort(-np.bincount(sel))[:3]
            shares = ", ".join(f"{names.get(int(t), t)} {np.mean(sel == t):.2f}" for t in top)
            print(f"  code {code}: {len(sel) / len(y):.3f} of the frames; {shares}")


if __name__ == "__main__":
    main()
