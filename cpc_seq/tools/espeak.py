"""A small ctypes wrapper around espeak-ng, as shipped by the ``espeakng-loader`` wheel.

Only what the corpus builder needs: synthesise one utterance with a given voice and
speaking rate, and return the waveform together with the phoneme events that espeak-ng
reports while synthesising (phoneme mnemonic and start time).

espeak-ng keeps global state and is not thread safe; this module initialises it once per
process and serialises calls with a lock. Output is reproducible for the same sequence of
calls in a fresh process: the random noise of breathy variants is re-seeded on every call,
but the waveform generator's phase carries over from one call to the next, so the same
call can come out a few samples longer or shorter after a different predecessor.

Example::

    >>> from cpc_seq.tools.espeak import synthesize
    >>> wav, sr, phones = synthesize("Let there be light.", "en-us+f3", 170)
    >>> sr
    22050
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np

from cpc_seq.errors import DataError

__all__ = ["SAMPLE_RATE", "espeak_version", "list_voice_variants", "synthesize"]

#: espeak-ng's native output rate.
SAMPLE_RATE = 22050

# espeak_AUDIO_OUTPUT
_AUDIO_OUTPUT_SYNCHRONOUS = 2
# espeak_Initialize options
_INITIALIZE_PHONEME_EVENTS = 0x0001
# espeak_EVENT_TYPE
_EVENT_LIST_TERMINATED = 0
_EVENT_END = 5
_EVENT_MSG_TERMINATED = 6
_EVENT_PHONEME = 7
# espeak_PARAMETER
_PARAM_RATE = 1
_PARAM_PITCH = 3
# espeak_POSITION_TYPE
_POS_CHARACTER = 1
# espeak_Synth flags
_CHARS_UTF8 = 1
# espeak_ERROR
_EE_OK = 0


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    ]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` from ``speak_lib.h``."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class _Engine:
    """The loaded library, plus per-call buffers filled by the synth callback."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:
            raise DataError(
                "espeak-ng is not available: install the 'espeakng-loader' package "
                "(pip install 'cpc_seq[corpus]')"
            ) from exc
        pkg_dir = Path(espeakng_loader.__file__).resolve().parent
        lib_path = pkg_dir / "libespeak-ng.so.1"
        if not lib_path.exists():
            lib_path = Path(espeakng_loader.get_library_path())
        data_dir = pkg_dir / "espeak-ng-data"
        if not data_dir.is_dir():
            raise DataError(f"espeak-ng data directory not found: {data_dir}")
        try:
            lib = ctypes.CDLL(str(lib_path))
        except OSError as exc:
            raise DataError(f"cannot load the espeak-ng library {lib_path}: {exc}") from exc

        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_GetParameter.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.espeak_GetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p
        # variants with breathiness (f2, f3, ...) draw noise from rand(), seeded from the
        # clock at start-up: re-seed before every utterance to make output reproducible
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.argtypes = [ctypes.c_long]
            self._set_seed.restype = None

        sr = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(pkg_dir).encode(), _INITIALIZE_PHONEME_EVENTS
        )
        if sr <= 0:
            raise DataError(f"espeak_Initialize failed (returned {sr}) with data in {pkg_dir}")
        self.lib = lib
        self.sample_rate = sr
        self.data_dir = data_dir
        self.lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        # keep a reference: ctypes does not, and a collected callback crashes the process
        self._callback = _SynthCallback(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav: ctypes._Pointer, numsamples: int, events: ctypes._Pointer) -> int:
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        i = 0
        while events and events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                self._events.append((ev.audio_position, ev.id.string.decode("utf-8", "replace")))
            i += 1
        return 0  # 0 = continue synthesis

    def synthesize(
        self, text: str, voice: str, rate_wpm: int, pitch: int | None, seed: int
    ) -> tuple[np.ndarray, int, list[tuple[float, str]]]:
        _, plus, variant = voice.partition("+")
        if plus and not (self.data_dir / "voices" / "!v" / variant).is_file():
            # espeak-ng silently ignores an unknown variant; refuse it instead
            raise DataError(f"espeak-ng has no voice variant {variant!r} (in {voice!r})")
        with self.lock:
            lib = self.lib
            if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise DataError(f"espeak-ng has no voice {voice!r}")
            lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
            if pitch is None:
                pitch = lib.espeak_GetParameter(_PARAM_PITCH, 0)  # 0 = the default value
            lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            if self._set_seed is not None:
                self._set_seed(int(seed))
            self._chunks, self._events = [], []
            data = text.encode("utf-8") + b"\0"
            buf = ctypes.create_string_buffer(data, len(data))
            err = lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != _EE_OK:
                raise DataError(f"espeak_Synth failed with code {err} for text {text!r}")
            lib.espeak_Synchronize()
            chunks, events = self._chunks, self._events
            self._chunks, self._events = [], []
        if chunks:
            pcm = np.concatenate(chunks)
        else:
            pcm = np.zeros(0, dtype=np.int16)
        wav = (pcm.astype(np.float32) / 32768.0).astype(np.float32)
        phones = [(ms / 1000.0, sym) for ms, sym in events]
        return wav, self.sample_rate, phones


_ENGINE: _Engine | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Engine()
        return _ENGINE


def synthesize(
    text: str, voice: str, rate_wpm: int, pitch: int | None = None, seed: int = 0
) -> tuple[np.ndarray, int, list[tuple[float, str]]]:
    """Synthesise ``text`` with espeak-ng.

    Args:
        text: UTF-8 text to speak (plain text, no SSML).
        voice: an espeak-ng voice name, optionally with a variant, e.g. ``"en-us+f3"``.
        rate_wpm: speaking rate in words per minute (espeak-ng accepts about 80–450).
        pitch: base pitch 0–100 (50 is normal); ``None`` keeps the voice's default.
        seed: seed for espeak-ng's random noise (breathy variants such as ``f2``/``f3``
            use it), set before every call, so equal arguments give equal samples.

    Returns:
        ``(samples, sample_rate, phonemes)``: float32 mono samples in [-1, 1), the sample
        rate (22050), and ``(start_seconds, symbol)`` for every phoneme event, in the
        order espeak-ng emitted them. Symbols are espeak's phoneme mnemonics (``"h"``,
        ``"@"``, ``"aI"``, ...); pauses come out as ``"_"``, ``"_:"``, ``"_!"`` etc.

    Raises:
        DataError: the library cannot be loaded, the voice does not exist, or synthesis
            fails.
    """
    return _engine().synthesize(text, voice, rate_wpm, pitch, seed)


def list_voice_variants() -> list[str]:
    """Names of the voice variants shipped with the library (``f3``, ``m7``, ...)."""
    variants = _engine().data_dir / "voices" / "!v"
    return sorted(p.name for p in variants.iterdir() if p.is_file())


def espeak_version() -> str:
    """The espeak-ng library version, e.g. ``"1.52.0"`` (it decides the exact output)."""
    info = _engine().lib.espeak_Info(None)
    return info.decode() if info else "unknown"
