"""Check a virtual environment before it is used: pinned versions, then imports.

``python scripts/check_env.py [constraints.txt]`` exits 0 when the torch family installed
here matches the exact pins in the constraints file and torch, torchaudio (with
``torchaudio.compliance.kaldi``), torchvision, soundfile, kaldiio and sentencepiece
import; otherwise it prints one line naming the package pair and the fix, and exits 1.
It uses only the standard library until the imports, so it also runs in a broken venv.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import sys
from pathlib import Path

FAMILY = ("torch", "torchaudio", "torchvision")
IMPORTS = ("torch", "torchaudio", "torchaudio.compliance.kaldi", "torchvision", "soundfile",
           "kaldiio", "sentencepiece")
FIX = "run `make reinstall` (or delete the venv and run `make test` again)"


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a constraints file -> {lower-case name: version}."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def installed(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def check(constraints: Path) -> str | None:
    """None when the environment is usable, else the one-line reason and fix."""
    pins = read_pins(constraints)
    for name in FAMILY:
        want, have = pins.get(name), installed(name)
        if want is None:
            return f"{constraints}: no exact pin for {name}"
        if have is None:
            return f"{name} is not installed (pinned {name}=={want}); {FIX}"
        if have.split("+")[0] != want.split("+")[0]:
            others = ", ".join(f"{n} {installed(n)}" for n in FAMILY if n != name)
            return (f"{name} {have} is installed beside {others}, but the pins say "
                    f"{name}=={want}: a stale environment; {FIX}")
    for mod in IMPORTS:
        try:
            importlib.import_module(mod)
        except Exception as e:  # an ABI mismatch shows as OSError/ImportError/RuntimeError
            top = mod.split(".")[0]
            pair = f"{top} {installed(top)} with torch {installed('torch')}"
            msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            return f"import {mod} failed ({pair}): {msg}; {FIX}"
    return None


def main(argv: list[str]) -> int:
    constraints = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "constraints.txt"
    problem = check(constraints)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
