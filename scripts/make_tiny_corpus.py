#!/usr/bin/env python3
"""Regenerate the embedded tiny speech corpus under ``data/tiny`` with espeak-ng.

The corpus is ~14 minutes of synthetic English speech (King James Bible sentences read
by seven espeak-ng voice variants) with frame-level phone labels taken from espeak-ng's
own phoneme events. It is small enough to commit and to train a toy CPC model on a CPU.

Usage::

    # regenerate audio + Kaldi data dirs from the committed sentence list
    .venv/bin/python scripts/make_tiny_corpus.py

    # rebuild the sentence list from a plain-text KJV dump first
    # (apt-get install bible-kjv; bible -f Gen1:1-Rev22:21 </dev/null > kjv.txt)
    .venv/bin/python scripts/make_tiny_corpus.py --from-kjv kjv.txt

Everything is deterministic for a given ``--seed`` and espeak-ng / libsoxr / libsndfile
version. All outputs are written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import sys
import tempfile
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cpc_seq.tools.espeak import espeak_version, synthesize  # noqa: E402

TARGET_SR = 16000
HOP = 160  # samples per label frame (10 ms at 16 kHz)
SIL = "SIL"
SPLITS = ("train", "dev", "test")
# fractions of the sentence list per split (in file order)
SPLIT_FRACTIONS = {"train": 0.75, "dev": 0.10, "test": 0.15}
# share of the test sentences read by the voice that is never seen in train/dev
UNSEEN_TEST_SHARE = 1 / 3
MIN_WORDS, MAX_WORDS = 6, 20
MAX_EDGE_SIL = 0.2  # at most this much leading/trailing silence, seconds
PAD_RANGE = (0.05, 0.15)  # leading/trailing silence actually used, seconds (uniform)
PEAK_DBFS_RANGE = (-12.0, -8.0)  # per-utterance peak level (gain variation), dBFS
RATE_JITTER = 8  # +- words per minute around the speaker's rate

SENTENCES_HEADER = (
    "# Source: King James Version of the Bible (1611), text from the Debian package "
    "bible-kjv-text; public domain. Verses split into sentences/clauses of "
    f"{MIN_WORDS}-{MAX_WORDS} words, verse numbers removed, LORD/GOD -> Lord/God. "
    "Made by scripts/make_tiny_corpus.py --from-kjv."
)


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an espeak-ng voice (+variant) at a fixed speaking rate."""

    spk: str
    voice: str
    rate_wpm: int
    pitch: int | None
    seen: bool  # False: appears only in the test set


SPEAKERS: tuple[Speaker, ...] = (
    Speaker("usm0", "en-us", 165, None, True),
    Speaker("usf3", "en-us+f3", 175, None, True),
    Speaker("gbm3", "en+m3", 155, None, True),
    Speaker("usm7", "en-us+m7", 185, None, True),
    Speaker("gbf2", "en+f2", 160, None, True),
    Speaker("usf4", "en-us+f4", 170, None, True),
    Speaker("rpm1", "en-gb-x-rp+m1", 180, None, False),
)


# ----------------------------------------------------------------------------- I/O helpers


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would have given (mkstemp uses 0o600)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_flac(path: Path, samples: np.ndarray, sr: int) -> None:
    """Write 16-bit FLAC atomically."""
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="FLAC", subtype="PCM_16", compression_level=1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def kaldi_table(rows: Iterable[tuple[str, str]]) -> str:
    """``key value`` lines sorted in C byte order, keys unique, with trailing newline."""
    rows = sorted(rows, key=lambda r: r[0].encode())
    keys = [k for k, _ in rows]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate keys")
    return "".join(f"{k} {v}\n" for k, v in rows)


# ------------------------------------------------------------------------ sentence list

_REF = re.compile(r"^\s*(?:[1-3]?[A-Za-z]+)\d+:\d+\s+(.*)$")
_ALLOWED = re.compile(r"^[A-Za-z][A-Za-z ,;:.?!'-]*[.?!]$")


def _normalise(text: str) -> str:
    text = re.sub(r"\bLORD\b", "Lord", text)
    text = re.sub(r"\bGOD\b", "God", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text


def _candidates(verse: str, starts_sentence: bool) -> list[str]:
    """Sentences of a verse, or its clauses when a sentence is too long.

    ``starts_sentence`` is False when the previous verse did not end a sentence; the
    verse's first fragment is then a continuation and is skipped.
    """
    out = []
    for i, sent in enumerate(re.split(r"(?<=[.?!])\s+", verse)):
        sent = sent.strip()
        if not sent or (i == 0 and not starts_sentence):
            continue
        if len(sent.split()) <= MAX_WORDS:
            out.append(sent)
            continue
        for clause in re.split(r"(?<=[;:])\s+", sent):
            clause = clause.strip().rstrip(";:,").strip()
            if not clause:
                continue
            if clause[-1] not in ".?!":
                clause += "."
            out.append(clause[0].upper() + clause[1:])
    return out


def sentences_from_kjv(path: Path, num: int, seed: int) -> list[str]:
    """Pick ``num`` distinct short sentences from a ``Ref text`` per-line KJV dump."""
    cands: list[str] = []
    seen: set[str] = set()
    starts_sentence = True
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _REF.match(line)
            if not m:
                continue
            verse = _normalise(re.sub(r"[()]", "", m.group(1)))
            first = starts_sentence
            starts_sentence = verse.endswith((".", "?", "!"))
            for s in _candidates(verse, first):
                s = _normalise(s)
                n = len(s.split())
                if not (MIN_WORDS <= n <= MAX_WORDS) or not _ALLOWED.match(s):
                    continue
                if s.endswith(",") or re.search(r"[A-Z]{2,}", s):
                    continue
                key = re.sub(r"[^a-z ]", "", s.lower())
                if key in seen:
                    continue
                seen.add(key)
                cands.append(s)
    if len(cands) < num:
        raise SystemExit(f"only {len(cands)} candidate sentences in {path}, need {num}")
    rng = random.Random(seed)
    return rng.sample(cands, num)


def read_sentences(path: Path) -> list[str]:
    """Sentences from ``sentences.txt`` (``#`` lines are comments)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    sents = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    if len({s.lower() for s in sents}) != len(sents):
        raise SystemExit(f"{path}: duplicate sentences")
    return sents


# --------------------------------------------------------------------------- labelling


def normalise_phone(symbol: str) -> str:
    """Map an espeak phoneme mnemonic to a label class.

    Pauses (empty, or starting with ``_``) become ``SIL``; the stress marks ``'`` (primary)
    and ``,`` (secondary) are dropped, so ``'aI``, ``,aI`` and ``aI`` are one class.
    """
    if not symbol or symbol.startswith("_"):
        return SIL
    sym = symbol.replace("'", "").replace(",", "")
    return sym or SIL


def frame_labels(
    num_samples: int, events: Sequence[tuple[float, str]], speech_end: float
) -> list[str]:
    """One label per 10 ms frame of a ``num_samples``-long 16 kHz signal.

    Frame ``t`` covers samples ``[160 t, 160 (t + 1))``; its label is the phone active at
    the frame centre ``(160 t + 80) / 16000`` s: the last event starting at or before it.
    Before the first event and from ``speech_end`` on, the label is ``SIL``.
    ``events`` are ``(start_seconds, label)`` in the final signal's time base, sorted.
    """
    starts = [t for t, _ in events]
    out = []
    for t in range(num_samples // HOP):
        x = (HOP * t + HOP // 2) / TARGET_SR
        i = bisect_right(starts, x) - 1
        out.append(SIL if i < 0 or x >= speech_end else events[i][1])
    return out


def edge_silence(wav: np.ndarray, sr: int, thresh: float = 1e-3) -> tuple[int, int]:
    """First and one-past-last sample index whose magnitude exceeds ``thresh``."""
    idx = np.flatnonzero(np.abs(wav) > thresh)
    if idx.size == 0:
        return 0, len(wav)
    return int(idx[0]), int(idx[-1]) + 1


@dataclass
class Utterance:
    utt: str
    spk: str
    split: str
    text: str
    labels: list[str]
    num_samples: int


def make_utterance(
    utt: str, spk: Speaker, split: str, text: str, rng: random.Random, audio_dir: Path
) -> Utterance:
    """Synthesise, resample, trim/pad, apply gain, write FLAC, and label one utterance."""
    rate = spk.rate_wpm + rng.randint(-RATE_JITTER, RATE_JITTER)
    seed = rng.randrange(2**31)
    wav, sr, events = synthesize(text, spk.voice, rate, spk.pitch, seed=seed)
    if not events:
        raise RuntimeError(f"{utt}: espeak-ng returned no phoneme events for {text!r}")
    dur = len(wav) / sr
    # keep events in emission order but make start times non-decreasing
    ev: list[tuple[float, str]] = []
    last = 0.0
    for t, sym in events:
        last = max(last, min(t, dur))
        ev.append((last, normalise_phone(sym)))

    y = soxr.resample(wav.astype(np.float64), sr, TARGET_SR, quality="HQ")
    # trim to speech +- MAX_EDGE_SIL, then pad to a random short silence on both ends
    first, end = edge_silence(y, TARGET_SR)
    lead_keep = min(first, int(MAX_EDGE_SIL * TARGET_SR))
    tail_keep = min(len(y) - end, int(MAX_EDGE_SIL * TARGET_SR))
    y = y[first - lead_keep : end + tail_keep]
    cut = (first - lead_keep) / TARGET_SR
    lead = max(0, int(rng.uniform(*PAD_RANGE) * TARGET_SR) - lead_keep)
    tail = max(0, int(rng.uniform(*PAD_RANGE) * TARGET_SR) - tail_keep)
    y = np.concatenate([np.zeros(lead), y, np.zeros(tail)])
    shift = lead / TARGET_SR - cut
    ev = [(t + shift, sym) for t, sym in ev]
    speech_end = dur + shift

    # peak-normalise to a random level: a little gain variation, and quieter audio
    # compresses better (about 1.04 MB of FLAC per minute at -10 dBFS)
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > 0:
        y = y * (10 ** (rng.uniform(*PEAK_DBFS_RANGE) / 20) / peak)

    atomic_write_flac(audio_dir / f"{utt}.flac", y.astype(np.float32), TARGET_SR)
    labels = frame_labels(len(y), ev, speech_end)
    return Utterance(utt, spk.spk, split, text, labels, len(y))


# ---------------------------------------------------------------------------- planning


def plan(sentences: Sequence[str], seed: int) -> list[tuple[str, Speaker, str, str]]:
    """Assign each sentence to a split and a speaker: ``(utt, speaker, split, text)``.

    Sentences are split in file order (train, then dev, then test) so the splits never
    share a sentence. Within a split, speakers take turns in a seeded random order; in
    test, the unseen speaker reads ``UNSEEN_TEST_SHARE`` of the sentences.
    """
    rng = random.Random(seed)
    n = len(sentences)
    n_train = round(n * SPLIT_FRACTIONS["train"])
    n_dev = round(n * SPLIT_FRACTIONS["dev"])
    chunks = {
        "train": sentences[:n_train],
        "dev": sentences[n_train : n_train + n_dev],
        "test": sentences[n_train + n_dev :],
    }
    seen = [s for s in SPEAKERS if s.seen]
    unseen = [s for s in SPEAKERS if not s.seen]
    counters = {s.spk: 0 for s in SPEAKERS}
    out = []
    for split in SPLITS:
        sents = chunks[split]
        if split == "test" and unseen:
            k = round(len(sents) * UNSEEN_TEST_SHARE)
            speakers = [unseen[i % len(unseen)] for i in range(k)]
            speakers += [seen[i % len(seen)] for i in range(len(sents) - k)]
        else:
            speakers = [seen[i % len(seen)] for i in range(len(sents))]
        rng.shuffle(speakers)
        for text, spk in zip(sents, speakers):
            counters[spk.spk] += 1
            out.append((f"{spk.spk}-{counters[spk.spk]:04d}", spk, split, text))
    return out


# ------------------------------------------------------------------------------ output


def write_data_dir(d: Path, utts: Sequence[Utterance]) -> None:
    """Kaldi-style data dir with wav.scp (relative paths), utt2spk, spk2utt, text, labels."""
    atomic_write_text(d / "wav.scp", kaldi_table((u.utt, f"../audio/{u.utt}.flac") for u in utts))
    atomic_write_text(d / "utt2spk", kaldi_table((u.utt, u.spk) for u in utts))
    spk2utt: dict[str, list[str]] = {}
    for u in sorted(utts, key=lambda u: u.utt.encode()):
        spk2utt.setdefault(u.spk, []).append(u.utt)
    atomic_write_text(d / "spk2utt", kaldi_table((s, " ".join(v)) for s, v in spk2utt.items()))
    atomic_write_text(d / "text", kaldi_table((u.utt, u.text) for u in utts))
    atomic_write_text(
        d / "phone_frames.txt", kaldi_table((u.utt, " ".join(u.labels)) for u in utts)
    )


def phone_table(utts: Sequence[Utterance]) -> list[str]:
    """``SIL`` first (id 0), then every other label seen, in C byte order."""
    phones = {lab for u in utts for lab in u.labels} - {SIL}
    return [SIL, *sorted(phones, key=str.encode)]


def readme(utts: Sequence[Utterance], phones: Sequence[str], seed: int, num_sentences: int) -> str:
    """The corpus README, with the statistics of this build."""
    rows = []
    for split in SPLITS:
        us = [u for u in utts if u.split == split]
        mins = sum(u.num_samples for u in us) / TARGET_SR / 60
        spks = sorted({u.spk for u in us})
        rows.append(f"| {split} | {len(us)} | {mins:.2f} | {' '.join(spks)} |")
    total = sum(u.num_samples for u in utts) / TARGET_SR / 60
    voices = "\n".join(
        f"| {s.spk} | `{s.voice}` | {s.rate_wpm} ± {RATE_JITTER} | "
        f"{'train, dev, test' if s.seen else 'test only'} |"
        for s in SPEAKERS
    )
    counts: dict[str, int] = {}
    for u in utts:
        for lab in u.labels:
            counts[lab] = counts.get(lab, 0) + 1
    nframes = sum(counts.values())
    sil_pct = 100 * counts.get(SIL, 0) / max(1, nframes)
    in_train = {lab for u in utts if u.split == "train" for lab in u.labels}
    not_in_train = [p for p in phones if p not in in_train]
    missing = (
        "Every class occurs in train."
        if not not_in_train
        else "Classes that occur in dev/test but not in train (rare allophones): "
        + ", ".join(f"`{p}` ({counts[p]} frames)" for p in not_in_train)
        + "."
    )
    rare = ", ".join(f"`{p}`" for p in phones if counts[p] < 50)
    return f"""# data/tiny: a tiny synthetic speech corpus with frame-level phone labels

About {total:.0f} minutes of English speech synthesised with
[espeak-ng](https://github.com/espeak-ng/espeak-ng) (the `espeakng-loader` wheel), read by
{len(SPEAKERS)} espeak-ng voice variants, with one phone label per 10 ms frame taken from
espeak-ng's own phoneme events. It is the default corpus for the examples and tests: small
enough to commit, and enough to train a toy CPC model and run a linear phone probe on a CPU.
Synthetic speech is far easier than real speech; numbers on it are smoke tests, not results.

## How it was made

    .venv/bin/python scripts/make_tiny_corpus.py            # seed {seed}

reads `sentences.txt` and rewrites everything else here, deterministically for a given
espeak-ng / libsoxr / libsndfile version (built with espeak-ng {espeak_version()},
soxr {soxr.__version__}, libsndfile {sf.__libsndfile_version__}). `sentences.txt` itself ({num_sentences} sentences) was
made with

    apt-get install bible-kjv && bible -f Gen1:1-Rev22:21 </dev/null > kjv.txt
    .venv/bin/python scripts/make_tiny_corpus.py --from-kjv kjv.txt

Per utterance: espeak-ng at 22,050 Hz (rate = speaker rate ± up to {RATE_JITTER} wpm), resampled
to 16 kHz with soxr (HQ), leading/trailing silence trimmed to at most {MAX_EDGE_SIL} s and then
padded to {PAD_RANGE[0]}–{PAD_RANGE[1]} s of digital silence, peak-normalised to a random
level of {PEAK_DBFS_RANGE[0]:g} to {PEAK_DBFS_RANGE[1]:g} dBFS, saved as 16-bit mono FLAC (compression
level 8). The FLAC costs about 1 MB per minute, so the corpus is kept to about 14 minutes to
stay under 15 MB in the repository.

## Text: source and licence

Sentences from the King James Version of the Bible (1611), via the Debian package
`bible-kjv-text`. The KJV text is in the public domain (outside the UK, where Crown
patent rules apply to printing). Verses were split into sentences (or `;`/`:` clauses when
a sentence is too long), kept if {MIN_WORDS}–{MAX_WORDS} words, de-duplicated; verse numbers
removed and `LORD`/`GOD` written `Lord`/`God`. Each sentence is read once, by one voice;
train, dev and test share no sentence.

## Speakers (espeak-ng voices)

| speaker | voice | rate (wpm) | splits |
|---|---|---|---|
{voices}

`rpm1` appears only in test (an unseen speaker for speaker-generalisation checks).

## Splits

| split | utterances | minutes | speakers |
|---|---|---|---|
{chr(10).join(rows)}

## Layout

- `audio/<utt>.flac`: 16 kHz, 16-bit mono. Utterance ids are `<speaker>-<nnnn>`.
- `{{train,dev,test}}/`: Kaldi data dirs (`LC_ALL=C` sorted, unique keys): `wav.scp`
  (`utt path`, path relative to the data dir, e.g. `../audio/usf3-0001.flac`), `utt2spk`,
  `spk2utt`, `text`, and `phone_frames.txt` (`utt l1 l2 ...`, one phone symbol per frame).
- `phones.txt`: `symbol id`, id 0 = `SIL`, then the other symbols in C byte order
  ({len(phones)} classes in all).
- `sentences.txt`: the sentence list the corpus is built from.

## Frame labels

An utterance of N samples has exactly `N // 160` label frames. Frame t covers samples
`[160 t, 160 (t + 1))` and is labelled with the phone active at its centre,
`(160 t + 80) / 16000` s: the last espeak-ng phoneme event starting at or before that time.
Before the first event and after the end of espeak-ng's output the label is `SIL`.

Symbols are espeak-ng phoneme mnemonics (see espeak-ng's `docs/phonemes.md`) with two
changes: every pause phoneme (`_`, `_:`, `_!`, ..., anything starting with `_`) is `SIL`,
and the stress marks `'` (primary) and `,` (secondary) are dropped (`'aI`, `,aI`, `aI` → `aI`).
Other marks are kept: `#` and digits are distinct allophones (`t#`, `I2`, `@2`), `:` marks
long vowels, `;` is espeak-ng's short linking glide between vowels (`k r i: ; eI t`,
"created"). Without the stress merge espeak-ng's output here has about 110 distinct symbols.
{sil_pct:.1f} % of frames are `SIL`. Classes with fewer than 50 frames in all: {rare or "none"}.
{missing}
Event times come from espeak-ng at 1 ms resolution, so boundaries are exact for the
synthesiser up to a frame, but espeak-ng's phoneme events mark the phoneme's start in its
own segmentation, which is not always where a phonetician would put the boundary.
"""


# -------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "data" / "tiny", help="output directory")
    ap.add_argument("--seed", type=int, default=20240601, help="random seed")
    ap.add_argument(
        "--from-kjv",
        type=Path,
        metavar="PATH",
        help="rebuild sentences.txt from a KJV dump with one 'Ref text' verse per line",
    )
    ap.add_argument(
        "--num-sentences", type=int, default=210, help="sentences to pick with --from-kjv"
    )
    args = ap.parse_args(argv)

    out: Path = args.out
    sent_path = out / "sentences.txt"
    if args.from_kjv is not None:
        sents = sentences_from_kjv(args.from_kjv, args.num_sentences, args.seed)
        atomic_write_text(sent_path, SENTENCES_HEADER + "\n" + "".join(s + "\n" for s in sents))
        print(f"wrote {len(sents)} sentences to {sent_path}")
    if not sent_path.exists():
        raise SystemExit(f"{sent_path} not found; build it with --from-kjv PATH")
    sentences = read_sentences(sent_path)

    audio_dir = out / "audio"
    rng = random.Random(args.seed)
    utts: list[Utterance] = []
    for utt, spk, split, text in tqdm(plan(sentences, args.seed), desc="synthesising", unit="utt"):
        utts.append(make_utterance(utt, spk, split, text, rng, audio_dir))

    # drop audio from earlier builds that is no longer referenced
    keep = {f"{u.utt}.flac" for u in utts}
    for p in audio_dir.glob("*.flac"):
        if p.name not in keep:
            p.unlink()

    for split in SPLITS:
        write_data_dir(out / split, [u for u in utts if u.split == split])
    phones = phone_table(utts)
    atomic_write_text(out / "phones.txt", "".join(f"{p} {i}\n" for i, p in enumerate(phones)))
    atomic_write_text(out / "README.md", readme(utts, phones, args.seed, len(sentences)))

    for split in SPLITS:
        us = [u for u in utts if u.split == split]
        mins = sum(u.num_samples for u in us) / TARGET_SR / 60
        print(f"{split}: {len(us)} utterances, {mins:.2f} min")
    print(f"{len(phones)} phone classes; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
