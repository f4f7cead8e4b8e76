"""CPC for text: token-level and sentence-level models, tokenisers, corpora, training,
feature extraction and sentence-embedding probes.

>>> from cpc_seq.text import load_text
>>> m = load_text("exp/text/sent/last.pt")                    # doctest: +SKIP
>>> out = m.extract_features(["In the beginning.", "Amen."])   # doctest: +SKIP
>>> out["hidden_states"], out["lengths"]                      # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any


def load_text(ckpt: Any, random_init: bool = False, device: str = "cpu") -> Any:
    """Load a text CPC checkpoint; see :func:`cpc_seq.text.extract.load_text`."""
    from cpc_seq.text.extract import load_text as _load_text

    return _load_text(ckpt, random_init=random_init, device=device)


__all__ = ["load_text"]
