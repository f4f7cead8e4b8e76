#!/usr/bin/env python3
"""A second labelled text task: which Debian ``fortunes`` file a fortune comes from.

Reads the fortune collections of the Debian package ``fortunes`` (``apt-get install -y
fortunes``; plain files under ``/usr/share/games/fortunes``, fortunes separated by lines
holding a single ``%``), keeps the files with at least ``--min-fortunes`` fortunes
(``art`` and ``ascii-art`` are drawings and always left out; a collection is a plain
file: the ``.dat`` indexes, the ``.u8`` links and ``*-pre`` files are not, and a
``.fortunes`` suffix, as the Spanish package names its files, is not part of the
collection's name; ``--collections a,b,...`` keeps only those, so the task does not
change when another fortune package adds files to the folder), keeps at most
``--max-fortunes`` of each file (its first ones, so one large file does not make the
task "is it from that file"; 0 = all), and writes:

    OUT/corpus/{train,dev,test}/<file>.txt   one fortune per line (``layout: lines``):
                                             one document per collection, fortunes in
                                             the file's order (the CPC training text)
    OUT/probe_{train,test}/text              <id> <fortune>   (id = <file>-<nnnnn>)
    OUT/probe_{train,test}/utt2label         <id> <file>

Each fortune is made one line: backspace overstriking (``X^HX``, ``_^HX``) is removed and
runs of whitespace become single spaces. Fortunes that occur (after that) in more than
one file, or twice in one file, are dropped, so no text has two labels. Split by the
fortune's 0-based index i in its file: ``i % 10 == 4`` -> dev, ``i % 10 == 9`` -> test,
else train; probe_train is every train fortune, probe_test every test fortune.
Deterministic: no randomness.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

from cpc_seq.errors import DataError
from cpc_seq.io.checkpoint import atomic_write

SOURCE = "/usr/share/games/fortunes"
DRAWINGS = ("art", "ascii-art")
_OVERSTRIKE = re.compile(r".\x08")


def read_fortunes(path: Path) -> list[str]:
    """The fortunes of one collection file, each as one whitespace-normalised line."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    text = _OVERSTRIKE.sub("", text).replace("\x08", "")
    out, cur = [], []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.strip() == "%":
            out.append(" ".join(" ".join(cur).split()))
            cur = []
        else:
            cur.append(line)
    out.append(" ".join(" ".join(cur).split()))
    return [f for f in out if f]


def is_collection(path: Path) -> bool:
    """Whether a file of a fortunes directory is a collection (not an index, link, drawing)."""
    name = path.name
    if not path.is_file() or path.is_symlink() or name in DRAWINGS:
        return False
    return name.endswith(".fortunes") or ("." not in name and not name.endswith("-pre"))


def collection_name(path: Path) -> str:
    """The collection's name: the file name without a ``.fortunes`` suffix."""
    return path.name.removesuffix(".fortunes")


def split_of(i: int) -> str:
    """Split of the i-th (0-based) fortune of a file."""
    return "dev" if i % 10 == 4 else "test" if i % 10 == 9 else "train"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--src", default=SOURCE, help="directory of the fortune files")
    p.add_argument("--min-fortunes", type=int, default=300,
                   help="keep collections with at least this many fortunes")
    p.add_argument("--max-fortunes", type=int, default=0,
                   help="keep at most this many fortunes of a collection, its first ones "
                   "(0 = all)")
    p.add_argument("--collections", default="",
                   help="comma-separated collection names to keep (default: every one)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    src = Path(args.src)
    if not src.is_dir():
        raise SystemExit(f"error: {src}: no fortune collections; install them with "
                         "'apt-get install -y fortunes' (or give --src)")
    files = {collection_name(f): f for f in sorted(src.iterdir()) if is_collection(f)}
    wanted = [c for c in args.collections.split(",") if c]
    missing = [c for c in wanted if c not in files]
    if missing:
        raise SystemExit(f"error: {src}: no collection {', '.join(missing)} "
                         "(--collections)")
    if wanted:
        files = {c: files[c] for c in sorted(wanted)}
    coll = {name: read_fortunes(f) for name, f in files.items()}
    coll = {k: v[:args.max_fortunes] if args.max_fortunes > 0 else v
            for k, v in coll.items() if len(v) >= args.min_fortunes}
    if len(coll) < 2:
        raise SystemExit(f"error: {src}: fewer than 2 collections with at least "
                         f"{args.min_fortunes} fortunes")
    seen = Counter(f for v in coll.values() for f in v)
    out = Path(args.out)
    sets: dict[str, list[tuple[str, str, str]]] = {"train": [], "dev": [], "test": []}
    dropped = 0
    for name, fortunes in coll.items():
        docs: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
        for i, f in enumerate(fortunes):
            if seen[f] > 1:
                dropped += 1
                continue
            docs[split_of(i)].append(f)
            sets[split_of(i)].append((f"{name}-{i:05d}", f, name))
        for split, lines in docs.items():
            if not lines:
                raise DataError(f"{src / name}: no {split} fortunes")
            with atomic_write(out / "corpus" / split / f"{name}.txt", "w") as fh:
                fh.writelines(f"{x}\n" for x in lines)
    for split in ("train", "test"):
        items = sorted(sets[split])
        d = out / f"probe_{split}"
        with atomic_write(d / "text", "w") as fh:
            fh.writelines(f"{k} {t}\n" for k, t, _ in items)
        with atomic_write(d / "utt2label", "w") as fh:
            fh.writelines(f"{k} {lab}\n" for k, _, lab in items)
    counts = {s: Counter(lab for _, _, lab in v) for s, v in sets.items()}
    print(f"{len(coll)} collections, {sum(len(v) for v in sets.values())} fortunes "
          f"(train {len(sets['train'])}, dev {len(sets['dev'])}, test {len(sets['test'])}; "
          f"{dropped} duplicates dropped): " + ", ".join(
              f"{k} {counts['train'][k] + counts['dev'][k] + counts['test'][k]}"
              for k in sorted(coll)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DataError as e:  # bad input: one line, no traceback
        sys.exit(f"error: {e}")
