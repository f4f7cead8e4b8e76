#!/usr/bin/env python3
"""Labelled sentence sets for the book-group probe of recipes/text.

Reads the corpus splits (``CORPUS/{train,test}``, running text, one document per book)
and ``books.tsv`` (``file name testament group chapters``), splits the text into
sentences (cpc_seq.text.data.split_sentences) and writes, for ``probe_train`` (a random
sample of ``--train-sentences`` sentences of the train split, seeded) and ``probe_test``
(every sentence of the test split):

    OUT/<set>/text       <id> <sentence>      (id = <book file>-<nnnnn>)
    OUT/<set>/utt2label  <id> <label>         (label = the book's --label column)
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from cpc_seq.io.atomic import atomic_write
from cpc_seq.text.data import read_corpus, sentence_items


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", default="data/text/kjv")
    p.add_argument("--books", default="data/text/books.tsv")
    p.add_argument("--label", default="group", help="books.tsv column: group or testament")
    p.add_argument("--train-sentences", type=int, default=8000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rows = [line.split("\t") for line in Path(args.books).read_text().splitlines()]
    col = rows[0].index(args.label)
    label_of = {r[0]: r[col] for r in rows[1:]}
    for name, split, n in (("probe_train", "train", args.train_sentences),
                           ("probe_test", "test", 0)):
        items = sentence_items(read_corpus(f"{args.corpus}/{split}"))
        if n and n < len(items):
            items = sorted(random.Random(args.seed).sample(items, n))
        out = Path(args.out) / name
        with atomic_write(out / "text", "w") as f:
            f.writelines(f"{k} {s}\n" for k, s in items)
        with atomic_write(out / "utt2label", "w") as f:
            f.writelines(f"{k} {label_of[k.rsplit('-', 1)[0]]}\n" for k, _ in items)
        counts: dict[str, int] = {}
        for k, _ in items:
            lab = label_of[k.rsplit("-", 1)[0]]
            counts[lab] = counts.get(lab, 0) + 1
        print(f"{name}: {len(items)} sentences; " + ", ".join(
            f"{lab} {c}" for lab, c in sorted(counts.items())), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
