"""The install is reproducible: exact torch-family pins that agree with constraints.txt,
and the environment check catches a venv that drifted from them."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAMILY = ("torch", "torchaudio", "torchvision")


def _pyproject_pins() -> dict[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
    assert deps, "pyproject.toml has no dependencies list"
    pins = {}
    for spec in re.findall(r'"([^"]+)"', deps.group(1)):
        name = re.split(r"[<>=!~ \[]", spec, maxsplit=1)[0].lower()
        pins[name] = spec[len(name):].strip()
    return pins


def _check_env():
    spec = importlib.util.spec_from_file_location("check_env", ROOT / "scripts" / "check_env.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_torch_family_pinned_exactly_and_matching_constraints() -> None:
    pins = _pyproject_pins()
    locked = _check_env().read_pins(ROOT / "constraints.txt")
    for name in FAMILY:
        assert re.fullmatch(r"==\d+\.\d+\.\d+", pins.get(name, "")), \
            f"pyproject.toml: {name} must be pinned as =={'{X.Y.Z}'}, got {pins.get(name)!r}"
        assert locked.get(name) == pins[name][2:], \
            f"constraints.txt pins {name}=={locked.get(name)}, pyproject.toml {pins[name]}"


def test_constraints_pin_every_line_exactly() -> None:
    for n, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[^\s=<>]+", line), f"constraints.txt:{n}: {line}"


def test_this_environment_passes_the_check() -> None:
    assert _check_env().check(ROOT / "constraints.txt") is None


def test_stale_torchaudio_is_one_line_naming_the_pair(tmp_path: Path, monkeypatch) -> None:
    mod = _check_env()
    real = mod.installed
    monkeypatch.setattr(mod, "installed",
                        lambda name: "2.11.1" if name == "torchaudio" else real(name))
    pins = tmp_path / "c.txt"
    pins.write_text((ROOT / "constraints.txt").read_text())
    msg = mod.check(pins)
    assert msg is not None and "\n" not in msg
    assert "torchaudio 2.11.1" in msg and "torch " in msg and "make reinstall" in msg


def test_failing_import_is_reported_with_the_fix(tmp_path: Path, monkeypatch) -> None:
    mod = _check_env()
    monkeypatch.setattr(mod, "IMPORTS", ("torch", "no_such_module_for_cpc_seq"))
    msg = mod.check(ROOT / "constraints.txt")
    assert msg is not None and "no_such_module_for_cpc_seq" in msg and "make reinstall" in msg


def test_main_exit_status(tmp_path: Path) -> None:
    mod = _check_env()
    bad = tmp_path / "c.txt"
    bad.write_text("torch==0.0.1\ntorchaudio==0.0.1\ntorchvision==0.0.1\n")
    assert mod.main([str(bad)]) == 1
    assert mod.main([str(ROOT / "constraints.txt")]) == 0


@pytest.mark.skipif(sys.platform != "linux", reason="Makefile targets are for Linux")
def test_makefile_installs_through_constraints() -> None:
    mk = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in mk and "check_env.py" in mk
    assert re.search(r"^test: check-env", mk, re.M) and re.search(r"^demo: check-env", mk, re.M)
