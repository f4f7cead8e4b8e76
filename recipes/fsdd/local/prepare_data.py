"""Prepare Kaldi data dirs for FSDD: DIR/{all,train,test} plus phones.txt and split lists.

Split (the FSDD convention): takes 0-4 of every digit and speaker are test, takes 5-49
train. Every speaker is in both halves, so one CPC model, one phone probe and one
speaker probe share it. wav.scp paths are absolute; the 8 kHz audio is resampled to
16 kHz when read. Recordings without a phone alignment stay in the audio data (CPC
training, speaker probe) and are left out of the phone probe.

Usage: python recipes/fsdd/local/prepare_data.py FSDD_DIR OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from cpc_seq.audio.data.kaldi import (
    load_data_dir,
    phone_table_from_labels,
    read_frame_labels,
    write_data_dir,
    write_phone_table,
)
from cpc_seq.errors import CpcSeqError


def main(src: Path, out: Path) -> None:
    dd = load_data_dir(src)
    if dd.utt2spk is None:
        raise CpcSeqError(f"{src}: utt2spk missing")
    labels_path = src / "phone_frames.txt"
    phones = phone_table_from_labels(labels_path)
    labels = read_frame_labels(labels_path, phones)
    take = {u: int(u.rsplit("-", 1)[1]) for u in dd.utts}
    parts = {
        "all": dd.utts,
        "train": [u for u in dd.utts if take[u] >= 5],
        "test": [u for u in dd.utts if take[u] < 5],
    }
    for name, utts in parts.items():
        d = out / name
        write_data_dir(
            d,
            {u: str(Path(dd.wav[u]).resolve()) for u in utts},
            {u: dd.utt2spk[u] for u in utts},
            text={u: dd.text[u] for u in utts} if dd.text else None,
        )
        with open(d / "phone_frames.txt", "w") as f:
            for u in utts:
                if u in labels:
                    f.write(u + " " + " ".join(str(int(v)) for v in labels[u]) + "\n")
        (out / f"{name}_split.txt").write_text("".join(u + "\n" for u in utts))
    write_phone_table(out / "phones.txt", phones)
    print(f"{out}: {len(parts['train'])} train / {len(parts['test'])} test utterances, "
          f"{len(labels)} with phone labels, {len(phones)} phone classes")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    try:
        main(Path(sys.argv[1]), Path(sys.argv[2]))
    except CpcSeqError as e:
        sys.exit(f"error: {e}")
