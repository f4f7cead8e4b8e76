"""Kaldi data dirs for LibriSpeech train-clean-100 with the CPC paper's phone labels.

Usage: python recipes/librispeech/local/prepare_data.py LIBRI_DIR ALIGN_DIR OUT

LIBRI_DIR holds the corpus in its own layout (``LibriSpeech/train-clean-100/<spk>/
<chapter>/<utt>.flac``, or ``train-clean-100/...`` directly, or the speaker folders);
ALIGN_DIR holds ``converted_aligned_phones.txt`` (``utt l1 l2 ...``, 41 classes, one
label per 10 ms), ``train_split.txt`` and ``test_split.txt``.

Writes OUT/all (every utterance with audio), OUT/train (all audio except the test
split: what CPC trains on), OUT/labels.txt (labels of utterances that have audio),
OUT/phones.txt (ids 0-40; the published files carry no symbols, so they are named
``p00``..``p40``), OUT/{train,test}_split.txt (split ids that have audio). Labels
without audio and audio without labels are counted and reported, not errors.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cpc_seq.audio.data.kaldi import (
    read_frame_labels,
    read_split,
    write_data_dir,
    write_phone_table,
)
from cpc_seq.errors import CpcSeqError, DataError

NUM_PHONES = 41


def find_flacs(root: Path) -> dict[str, Path]:
    flacs = {p.stem: p.resolve() for p in sorted(root.rglob("*.flac"))}
    if not flacs:
        raise DataError(f"{root}: no .flac files (expected LibriSpeech/train-clean-100/<spk>/"
                        "<chapter>/<utt>.flac)")
    return flacs


def read_transcripts(root: Path) -> dict[str, str]:
    text = {}
    for p in sorted(root.rglob("*.trans.txt")):
        for line in p.read_text().splitlines():
            if line.strip():
                utt, _, words = line.partition(" ")
                text[utt] = words.strip()
    return text


def main(libri: Path, align: Path, out: Path) -> None:
    flacs = find_flacs(libri)
    utt2spk = {u: u.split("-")[0] for u in flacs}
    text = read_transcripts(libri)
    labels = read_frame_labels(align / "converted_aligned_phones.txt")
    for utt, lab in labels.items():
        if lab.size and (lab.min() < 0 or lab.max() >= NUM_PHONES):
            raise DataError(f"{align / 'converted_aligned_phones.txt'}: utterance {utt}: label "
                            f"outside 0..{NUM_PHONES - 1}")
    train_split = read_split(align / "train_split.txt")
    test_split = read_split(align / "test_split.txt")
    test_set = set(test_split)
    sets = {"all": sorted(flacs), "train": sorted(u for u in flacs if u not in test_set)}
    for name, utts in sets.items():
        write_data_dir(out / name, {u: str(flacs[u]) for u in utts}, {u: utt2spk[u] for u in utts},
                       text={u: text.get(u, "") for u in utts} if text else None)
    with open(out / "labels.txt", "w") as f:
        for u in sorted(labels):
            if u in flacs:
                f.write(u + " " + " ".join(str(int(v)) for v in labels[u]) + "\n")
    for name, ids in (("train", train_split), ("test", test_split)):
        (out / f"{name}_split.txt").write_text("".join(u + "\n" for u in ids if u in flacs))
    write_phone_table(out / "phones.txt", {f"p{i:02d}": i for i in range(NUM_PHONES)})
    no_audio = sum(1 for u in labels if u not in flacs)
    no_label = sum(1 for u in flacs if u not in labels)
    print(f"{out}: {len(flacs)} utterances with audio ({len(set(utt2spk.values()))} speakers); "
          f"{len(labels) - no_audio} labelled; {no_audio} label lines without audio and "
          f"{no_label} utterances without labels left out of the phone probe; split: "
          f"{sum(u in flacs for u in train_split)} train / {sum(u in flacs for u in test_split)} "
          "test with audio")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    try:
        main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
    except CpcSeqError as e:
        sys.exit(f"error: {e}")
