#!/usr/bin/env python3
"""Build the embedded text corpus ``data/text`` from the King James Version of the Bible.

Source: the Debian package ``bible-kjv-text`` (public domain text), dumped with::

    apt-get install bible-kjv && bible -f Gen1:1-Rev22:21 </dev/null > kjv.txt
    .venv/bin/python scripts/make_text_corpus.py --kjv kjv.txt

(without ``--kjv`` the script runs the ``bible`` command itself). The dump has one verse per
line, ``<Book><chapter>:<verse> <text>``. Output (deterministic, no randomness):

- ``data/text/kjv/{train,dev,test}/NN-book.txt``: one document per book and split, one
  chapter per line (its verses joined by single spaces; verse numbers removed, text
  otherwise unchanged). Chapters are split by their global index g = 0..1188 in canonical
  order: ``g % 10 == 4`` -> dev, ``g % 10 == 9`` -> test, else train (so every book group
  has dev and test chapters, and no chapter is in two splits).
- ``data/text/books.tsv``: ``file name testament group chapters`` for the 66 books; the
  ``group`` column is the label of the book-group probe.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (abbreviation in the ``bible`` dump, file name, testament, group) in canonical order.
BOOKS: list[tuple[str, str, str, str]] = [
    ("Ge", "genesis", "old", "law"),
    ("Exo", "exodus", "old", "law"),
    ("Lev", "leviticus", "old", "law"),
    ("Num", "numbers", "old", "law"),
    ("Deu", "deuteronomy", "old", "law"),
    ("Josh", "joshua", "old", "history"),
    ("Jdgs", "judges", "old", "history"),
    ("Ruth", "ruth", "old", "history"),
    ("1Sm", "1samuel", "old", "history"),
    ("2Sm", "2samuel", "old", "history"),
    ("1Ki", "1kings", "old", "history"),
    ("2Ki", "2kings", "old", "history"),
    ("1Chr", "1chronicles", "old", "history"),
    ("2Chr", "2chronicles", "old", "history"),
    ("Ezra", "ezra", "old", "history"),
    ("Neh", "nehemiah", "old", "history"),
    ("Est", "esther", "old", "history"),
    ("Job", "job", "old", "wisdom"),
    ("Psa", "psalms", "old", "wisdom"),
    ("Prv", "proverbs", "old", "wisdom"),
    ("Eccl", "ecclesiastes", "old", "wisdom"),
    ("SSol", "songofsolomon", "old", "wisdom"),
    ("Isa", "isaiah", "old", "major_prophets"),
    ("Jer", "jeremiah", "old", "major_prophets"),
    ("Lam", "lamentations", "old", "major_prophets"),
    ("Eze", "ezekiel", "old", "major_prophets"),
    ("Dan", "daniel", "old", "major_prophets"),
    ("Hos", "hosea", "old", "minor_prophets"),
    ("Joel", "joel", "old", "minor_prophets"),
    ("Amos", "amos", "old", "minor_prophets"),
    ("Obad", "obadiah", "old", "minor_prophets"),
    ("Jonah", "jonah", "old", "minor_prophets"),
    ("Mic", "micah", "old", "minor_prophets"),
    ("Nahum", "nahum", "old", "minor_prophets"),
    ("Hab", "habakkuk", "old", "minor_prophets"),
    ("Zep", "zephaniah", "old", "minor_prophets"),
    ("Hag", "haggai", "old", "minor_prophets"),
    ("Zec", "zechariah", "old", "minor_prophets"),
    ("Mal", "malachi", "old", "minor_prophets"),
    ("Mat", "matthew", "new", "gospels_acts"),
    ("Mark", "mark", "new", "gospels_acts"),
    ("Luke", "luke", "new", "gospels_acts"),
    ("John", "john", "new", "gospels_acts"),
    ("Acts", "acts", "new", "gospels_acts"),
    ("Rom", "romans", "new", "pauline"),
    ("1Cor", "1corinthians", "new", "pauline"),
    ("2Cor", "2corinthians", "new", "pauline"),
    ("Gal", "galatians", "new", "pauline"),
    ("Eph", "ephesians", "new", "pauline"),
    ("Phi", "philippians", "new", "pauline"),
    ("Col", "colossians", "new", "pauline"),
    ("1Th", "1thessalonians", "new", "pauline"),
    ("2Th", "2thessalonians", "new", "pauline"),
    ("1Tim", "1timothy", "new", "pauline"),
    ("2Tim", "2timothy", "new", "pauline"),
    ("Titus", "titus", "new", "pauline"),
    ("Phmn", "philemon", "new", "pauline"),
    ("Heb", "hebrews", "new", "general_revelation"),
    ("Jas", "james", "new", "general_revelation"),
    ("1Pet", "1peter", "new", "general_revelation"),
    ("2Pet", "2peter", "new", "general_revelation"),
    ("1Jn", "1john", "new", "general_revelation"),
    ("2Jn", "2john", "new", "general_revelation"),
    ("3Jn", "3john", "new", "general_revelation"),
    ("Jude", "jude", "new", "general_revelation"),
    ("Rev", "revelation", "new", "general_revelation"),
]

_VERSE = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+)\s+(.*)$")
SPLITS = ("train", "dev", "test")


def split_of(global_chapter: int) -> str:
    """Split of the chapter with 0-based canonical index ``global_chapter``."""
    r = global_chapter % 10
    return "dev" if r == 4 else "test" if r == 9 else "train"


def read_dump(text: str) -> dict[str, list[list[str]]]:
    """``bible`` dump -> {abbreviation: [chapter -> [verse texts]]} (checks the order)."""
    books: dict[str, list[list[str]]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _VERSE.match(line)
        if not m:
            raise SystemExit(f"kjv dump line {n}: not '<Book><chapter>:<verse> <text>': {line!r}")
        abbr, chap, verse, body = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        chapters = books.setdefault(abbr, [])
        if chap == len(chapters) + 1:
            chapters.append([])
        if chap != len(chapters) or verse != len(chapters[-1]) + 1:
            raise SystemExit(f"kjv dump line {n}: {abbr}{chap}:{verse} out of order")
        chapters[-1].append(re.sub(r"\s+", " ", body).strip())
    return books


def dump_kjv() -> str:
    """Run ``bible -f Gen1:1-Rev22:21`` (Debian packages bible-kjv + bible-kjv-text)."""
    try:
        res = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"cannot run 'bible' ({e}); apt-get install bible-kjv, or pass --kjv") from None
    return res.stdout


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def build(dump: str, out: Path) -> dict[str, dict[str, int]]:
    """Write the corpus under ``out``; returns per-split counts (files, chapters, verses, bytes)."""
    books = read_dump(dump)
    if list(books) != [b[0] for b in BOOKS]:
        raise SystemExit(f"unexpected books in the dump: {list(books)[:5]}...")
    for split in SPLITS:
        d = out / "kjv" / split
        if d.is_dir():
            for old in d.glob("*.txt"):
                old.unlink()
    stats = {s: {"files": 0, "chapters": 0, "verses": 0, "bytes": 0} for s in SPLITS}
    rows = ["file\tname\ttestament\tgroup\tchapters"]
    g = 0
    for i, (abbr, name, testament, group) in enumerate(BOOKS, 1):
        stem = f"{i:02d}-{name}"
        per_split: dict[str, list[str]] = {s: [] for s in SPLITS}
        for verses in books[abbr]:
            split = split_of(g)
            per_split[split].append(" ".join(verses))
            stats[split]["verses"] += len(verses)
            g += 1
        for split, chapters in per_split.items():
            if not chapters:
                continue
            text = "\n".join(chapters) + "\n"
            write(out / "kjv" / split / f"{stem}.txt", text)
            st = stats[split]
            st["files"] += 1
            st["chapters"] += len(chapters)
            st["bytes"] += len(text.encode("utf-8"))
        rows.append(f"{stem}\t{name}\t{testament}\t{group}\t{len(books[abbr])}")
    write(out / "books.tsv", "\n".join(rows) + "\n")
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kjv", type=Path, help="dump of 'bible -f Gen1:1-Rev22:21' (default: run it)")
    p.add_argument("--out", type=Path, default=ROOT / "data" / "text")
    args = p.parse_args(argv)
    dump = args.kjv.read_text(encoding="utf-8") if args.kjv else dump_kjv()
    stats = build(dump, args.out)
    for split, st in stats.items():
        print(f"{split}: {st['files']} files, {st['chapters']} chapters, {st['verses']} verses, "
              f"{st['bytes'] / 1e6:.2f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
