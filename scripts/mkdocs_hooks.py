"""mkdocs hook: the README is the site's home page.

The README links the pages as ``docs/<page>.md``; on the site they sit beside the home
page, so those links lose their ``docs/`` prefix. Nothing else is changed.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files


def on_files(files: Files, config) -> Files:
    readme = Path(config.config_file_path).parent / "README.md"
    text = re.sub(r"\]\(docs/", "](", readme.read_text(encoding="utf-8"))
    files.append(File.generated(config, "index.md", content=text))
    return files
