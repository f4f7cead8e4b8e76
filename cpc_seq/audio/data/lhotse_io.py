"""lhotse manifests as data directories: wherever a Kaldi data dir is accepted
(``cpc-seq audio extract``, ``validate-data``, ``data.train`` of ``cpc-seq audio train``), a lhotse
manifest works too, through :func:`cpc_seq.audio.data.kaldi.load_data_dir`.

Accepted paths:

* a CutSet file (``*.jsonl``, ``*.jsonl.gz``, ``*.json``; e.g. ``cuts_train.jsonl.gz``):
  one utterance per cut, cut from its recording at ``[cut.start, cut.end)``; speaker
  and text from the cut's supervisions;
* a RecordingSet file alone: one utterance per recording (no speakers);
* a directory without ``wav.scp`` that holds one ``*recordings*.jsonl[.gz]`` and one
  ``*supervisions*.jsonl[.gz]`` (as lhotse's recipes write them), or one
  ``*cuts*.jsonl[.gz]``: with recordings and supervisions, one utterance per
  supervision, cut from its recording at ``[start, start + duration)``.

The result is the same :class:`~cpc_seq.audio.data.kaldi.DataDir` a Kaldi directory gives:
``wav`` = recording id -> audio path, ``segments`` = utterance -> (recording, start,
end), ``utt2spk``/``text`` from the supervisions (``utt2spk`` is ``None`` unless every
utterance has a speaker).  Audio sources of type ``file`` are read as usual (relative
paths are resolved against the current directory, as lhotse does); ``command``
sources are pipes (refused unless ``allow_pipes``); other source types (``url``,
``memory``, ``shar``), recordings with several sources or with transforms (speed
perturbation, ...), and mixed or padded cuts are refused with a
:class:`~cpc_seq.errors.DataError`.  Multichannel audio is downmixed by the mean of its
channels, as for Kaldi data dirs.

Hostile or broken content is refused with a ``DataError`` naming the manifest: an item
that does not parse (named by its position), an id used twice, one recording id with two
different sources, ids with whitespace or control characters, and cut or supervision
times that are not finite numbers, start before 0 or last no time.

lhotse is the optional ``formats`` extra (``pip install 'cpc_seq[formats]'``); it is
imported only when a manifest is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cpc_seq.errors import ConfigError, DataError

__all__ = ["MANIFEST_SUFFIXES", "is_lhotse_manifest", "load_lhotse"]

#: File name endings taken as lhotse manifests.
MANIFEST_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")


def _is_manifest_file(p: Path) -> bool:
    return p.is_file() and p.name.endswith(MANIFEST_SUFFIXES)


def _find(d: Path, word: str) -> list[Path]:
    return sorted(p for p in d.iterdir() if word in p.name and _is_manifest_file(p))


def is_lhotse_manifest(path: str | Path) -> bool:
    """True for a manifest file, or a directory without ``wav.scp`` that holds lhotse
    manifests (cheap: looks at names only, does not import lhotse)."""
    p = Path(path)
    if _is_manifest_file(p):
        return True
    if p.is_dir() and not (p / "wav.scp").exists():
        return bool(_find(p, "cuts") or (_find(p, "recordings") and _find(p, "supervisions")))
    return False


def _lhotse() -> Any:
    try:
        import lhotse
    except ImportError:  # pragma: no cover - lhotse is part of the formats extra
        raise ConfigError("reading lhotse manifests needs lhotse: pip install 'cpc_seq[formats]'"
                          ) from None
    return lhotse


def _load(path: Path) -> Any:
    lhotse = _lhotse()
    try:
        if path.name.endswith((".jsonl", ".jsonl.gz")):
            # lhotse's lazy reader: items are parsed while iterated, never all held
            lazy = lhotse.load_manifest_lazy(path)
            if lazy is None:
                raise DataError(f"{path}: empty lhotse manifest")
            return lazy
        return lhotse.load_manifest(path)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - lhotse raises many types for bad files
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: cannot read lhotse manifest ({first})") from None


def _audio_path(rec: Any, where: str) -> str:
    if getattr(rec, "transforms", None):
        raise DataError(f"{where}: recording {rec.id!r} has transforms (e.g. speed "
                        "perturbation); not supported, use the original recording")
    if len(rec.sources) != 1:
        raise DataError(f"{where}: recording {rec.id!r} has {len(rec.sources)} audio sources "
                        "(one per channel?); only single-source recordings are supported")
    src = rec.sources[0]
    if src.type == "file":
        return str(Path(src.source).expanduser().resolve())
    if src.type == "command":
        return f"{src.source} |"
    raise DataError(f"{where}: recording {rec.id!r}: audio source of type {src.type!r} is not "
                    "supported (only 'file' and 'command')")


def _token(value: str, what: str, where: str) -> str:
    if not isinstance(value, str) or not value or any(
            c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise DataError(f"{where}: {what} {value!r} is empty or contains whitespace or "
                        "control characters")
    return value


def _items(manifest: Any, source: str) -> Iterator[Any]:
    """The items of ``manifest``; one that cannot be parsed (lhotse's lazy reader parses
    each line as it is reached) is a DataError naming ``source`` and its position."""
    it = iter(manifest)
    n = 0
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - JSON and lhotse raise many types
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"{source}: item {n + 1}: cannot read lhotse item ({first})"
                            ) from None
        n += 1
        yield item


def _span(start: Any, duration: Any, what: str, where: str) -> tuple[float, float]:
    """``(start, end)`` of an item, checked: finite numbers, start >= 0, duration > 0."""
    for name, v in (("start", start), ("duration", duration)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise DataError(f"{where}: {what}: {name} {v!r} is not a finite number")
    if start < 0 or duration <= 0:
        raise DataError(f"{where}: {what}: start {start:g} s and duration {duration:g} s "
                        "(expected start >= 0 and duration > 0)")
    return float(start), float(start) + float(duration)


def _add_recording(wav: dict[str, str], rec: Any, where: str) -> None:
    """``wav[rec.id] = its audio``; the same id with another source is an error."""
    rid = _token(rec.id, "recording id", where)
    path = _audio_path(rec, where)
    if wav.setdefault(rid, path) != path:
        raise DataError(f"{where}: recording {rid!r} appears with two different sources "
                        f"({wav[rid]} and {path})")


def _speakers(sups: list[Any]) -> list[str]:
    return sorted({s.speaker for s in sups if s.speaker})


def _from_recordings_supervisions(recs: Any, sups: Any, where: str, rec_file: str = "",
                                  sup_file: str = "") -> dict[str, Any]:
    wav: dict[str, str] = {}
    for r in _items(recs, rec_file or where):
        _add_recording(wav, r, where)
    segments, utt2spk, text = {}, {}, {}
    for s in _items(sups, sup_file or where):
        utt = _token(s.id, "supervision id", where)
        if utt in segments:
            raise DataError(f"{where}: supervision id {utt!r} appears twice")
        if s.recording_id not in wav:
            raise DataError(f"{where}: supervision {utt!r}: recording {s.recording_id!r} "
                            "is not in the recordings")
        start, end = _span(s.start, s.duration, f"supervision {utt!r}", where)
        segments[utt] = (s.recording_id, start, end)
        if s.speaker:
            utt2spk[utt] = _token(s.speaker, f"speaker of {utt!r}", where)
        text[utt] = (s.text or "").replace("\n", " ")
    if not segments:
        raise DataError(f"{where}: no supervisions")
    return {"wav": wav, "segments": segments, "utt2spk": utt2spk, "text": text}


def _from_cuts(cuts: Any, where: str) -> dict[str, Any]:
    wav: dict[str, str] = {}
    segments, utt2spk, text = {}, {}, {}
    for cut in _items(cuts, where):
        utt = _token(cut.id, "cut id", where)
        if utt in segments:
            raise DataError(f"{where}: cut id {utt!r} appears twice")
        rec = getattr(cut, "recording", None)
        if rec is None or not hasattr(cut, "channel"):
            raise DataError(f"{where}: cut {utt!r} is a {type(cut).__name__} without a single "
                            "recording (mixed/padded cuts are not supported)")
        _add_recording(wav, rec, where)
        start, end = _span(cut.start, cut.duration, f"cut {utt!r}", where)
        segments[utt] = (rec.id, start, end)
        spk = _speakers(cut.supervisions)
        if len(spk) > 1:
            raise DataError(f"{where}: cut {utt!r} has supervisions of {len(spk)} speakers "
                            f"({', '.join(spk)}); cut it per supervision first "
                            "(CutSet.trim_to_supervisions)")
        if spk:
            utt2spk[utt] = _token(spk[0], f"speaker of {utt!r}", where)
        text[utt] = " ".join((s.text or "").replace("\n", " ")
                             for s in sorted(cut.supervisions, key=lambda s: s.start)).strip()
    if not segments:
        raise DataError(f"{where}: no cuts")
    return {"wav": wav, "segments": segments, "utt2spk": utt2spk, "text": text}


def load_lhotse(path: str | Path, *, allow_pipes: bool = False) -> dict[str, Any]:
    """Load lhotse manifests (see the module doc) as the fields of a
    :class:`~cpc_seq.audio.data.kaldi.DataDir` (``DataDir(**fields)``).

    Raises:
        DataError: unreadable manifests, unsupported audio sources or cuts, supervisions
            of unknown recordings, ids with whitespace, refused pipes -- naming the path.
    """
    p = Path(path)
    lhotse = _lhotse()
    where = str(p)
    if p.is_dir():
        cuts = _find(p, "cuts")
        recs, sups = _find(p, "recordings"), _find(p, "supervisions")
        if recs and sups:
            if len(recs) > 1 or len(sups) > 1:
                raise DataError(f"{p}: several recordings/supervisions manifests "
                                f"({', '.join(f.name for f in recs + sups)}); pass one "
                                "CutSet file or a directory with one of each")
            parts = _from_recordings_supervisions(_load(recs[0]), _load(sups[0]), where,
                                                  str(recs[0]), str(sups[0]))
        elif len(cuts) == 1:
            parts = _from_cuts(_load(cuts[0]), str(cuts[0]))
        else:
            raise DataError(f"{p}: expected one *recordings* and one *supervisions* manifest, "
                            "or one *cuts* manifest")
    else:
        manifest = _load(p)
        if isinstance(manifest, lhotse.CutSet):
            parts = _from_cuts(manifest, where)
        elif isinstance(manifest, lhotse.RecordingSet):
            wav = {}
            for r in _items(manifest, where):
                if r.id in wav:
                    raise DataError(f"{where}: recording id {r.id!r} appears twice")
                _add_recording(wav, r, where)
            if not wav:
                raise DataError(f"{where}: no recordings")
            parts = {"wav": wav, "segments": None, "utt2spk": {}, "text": {}}
        else:
            raise DataError(f"{where}: a {type(manifest).__name__}; expected a CutSet or "
                            "RecordingSet file, or a directory with recordings and "
                            "supervisions manifests")
    wav = parts["wav"]
    if not allow_pipes:
        for rec, value in wav.items():
            if value.endswith("|"):
                raise DataError(f"{where}: recording {rec!r}: command audio source refused "
                                "(runs a shell); pass --allow-pipes to allow")
    segments = parts["segments"]
    utts = sorted(segments if segments is not None else wav)
    u2s = parts["utt2spk"]
    utt2spk = u2s if u2s and len(u2s) == len(utts) else None
    spk2utt = None
    if utt2spk is not None:
        spk2utt = {}
        for utt in utts:
            spk2utt.setdefault(utt2spk[utt], []).append(utt)
        spk2utt = dict(sorted(spk2utt.items()))
    text = parts["text"] if any(parts["text"].values()) else None
    return {"path": p, "wav": wav, "segments": segments, "utt2spk": utt2spk,
            "spk2utt": spk2utt, "text": text, "utts": utts, "allow_pipes": allow_pipes}
