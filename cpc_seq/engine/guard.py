"""Skip steps whose loss or gradient is NaN/Inf; stop after too many in a row."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm import tqdm

from cpc_seq.errors import CpcSeqError


class NonFiniteGuard:
    """Counts non-finite steps in a row; ``bad(...)`` says whether to skip this step."""

    def __init__(self, max_bad: int, checkpoint: Path) -> None:
        self.max_bad, self.checkpoint, self.in_row = max_bad, checkpoint, 0

    def bad(self, step: int, *values: torch.Tensor, any_rank: bool | None = None) -> bool:
        """True (after warning) when any of ``values`` is NaN/Inf; raise after too many.

        ``any_rank``: the verdict already agreed across processes, if distributed.
        """
        is_bad = any_rank if any_rank is not None else not all(
            bool(torch.isfinite(v).all()) for v in values)
        if not is_bad:
            self.in_row = 0
            return False
        self.in_row += 1
        tqdm.write(f"warning: step {step}: non-finite loss or gradient; step skipped "
                   f"({self.in_row} in a row)", file=sys.stderr)
        if self.in_row >= self.max_bad:
            last = (f"the last good checkpoint is {self.checkpoint}" if self.checkpoint.is_file()
                    else "no checkpoint was written")
            raise CpcSeqError(f"{self.in_row} non-finite steps in a row at step {step}; "
                              f"stopping ({last}). Lower optim.lr or check the data")
        return True
