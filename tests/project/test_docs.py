"""The documentation: the site builds with ``mkdocs build --strict``, every relative link
in README.md and docs/*.md points at a file that exists, every page is in the nav, and
the README stays a front page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README_MAX_LINES = 260

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)", re.M)
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _links(text: str) -> list[str]:
    """Link targets of a markdown text, outside code blocks and code spans."""
    text = _FENCE.sub("", text)
    text = "\n".join(line for line in text.split("\n") if not line.startswith("    "))
    text = _CODE_SPAN.sub("", text)
    return _LINK.findall(text) + _REF_DEF.findall(text)


def _nav_files(nav: list) -> list[str]:
    out: list[str] = []
    for entry in nav:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            out.extend(_nav_files(value) if isinstance(value, list) else [value])
    return out


def _mkdocs_config() -> dict:
    # mkdocs.yml may hold python tags (none today); a plain load is enough for the nav
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


def test_link_extraction_skips_code() -> None:
    text = "see [a](a.md) and `[b](b.md)`\n```\n[c](c.md)\n```\n    [d](d.md)\n[e]: e.md\n"
    assert _links(text) == ["a.md", "e.md"]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    missing = []
    for target in _links(page.read_text(encoding="utf-8")):
        if _EXTERNAL.match(target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)}: links to missing files: {missing}"


def test_every_docs_page_is_in_the_nav() -> None:
    nav = set(_nav_files(_mkdocs_config()["nav"]))
    pages = {p.name for p in DOCS.glob("*.md")}
    assert "index.md" in nav  # README.md, made the home page by scripts/mkdocs_hooks.py
    assert not (pages - nav), f"add these pages to the nav in mkdocs.yml: {sorted(pages - nav)}"
    assert not (nav - pages - {"index.md"}), f"nav names missing pages: {sorted(nav - pages)}"


def test_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail into "
        "a docs/ page and link it")


def test_no_issue_numbers_or_commit_hashes() -> None:
    bad = re.compile(r"(?i)\bissues? #?\d+\b|(?<![\w&/])#\d{1,5}\b|\bcommit [0-9a-f]{7,40}\b"
                     r"|--vs [0-9a-f]{7,40}\b")
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in _pages()
             for m in bad.finditer(p.read_text(encoding="utf-8"))]
    assert not found, f"the docs speak of the code as it is, not of its history: {found}"


def test_site_builds_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "Contrastive Predictive Coding" in home  # the README is the home page
    assert 'href="recipes/' in home  # its docs/ links point at the pages
    for name in _nav_files(_mkdocs_config()["nav"]):
        built = site / ("index.html" if name == "index.md" else f"{name[:-3]}/index.html")
        assert built.is_file(), f"{name} was not built"
