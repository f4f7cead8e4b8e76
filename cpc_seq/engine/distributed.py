"""Multi-process training on PyTorch's own engine (torchrun + DistributedDataParallel).

``torchrun --nproc-per-node N -m cpc_seq audio train --config c.yaml`` sets RANK, WORLD_SIZE,
LOCAL_RANK and MASTER_ADDR/PORT; :func:`init_from_env` starts the process group with
gloo on CPU and NCCL on GPU. Multi-node: run the same command on every node with
``--nnodes M --node-rank R --rdzv-backend c10d --rdzv-endpoint HOST:PORT`` (or
``--master-addr/--master-port``); nothing else changes.

``data.batch_size`` is the global batch: every rank builds the same global plan from
the seed and takes its contiguous share, so N processes see exactly the windows one
process would. Only rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass
class DistInfo:
    """``rank``/``world`` of this process; ``world == 1`` means not distributed."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device_kind: str) -> DistInfo:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world=world, local_rank=local_rank)


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (B, ...) from every rank along dim 0; gradients flow back to the
    rank that owns each slice (summed over the ranks that used it)."""
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank (for agreeing to skip a step)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
