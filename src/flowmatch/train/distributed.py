"""Data-parallel training with PyTorch's own engine (DDP launched by ``torchrun``).

``torchrun --nproc_per_node=N script.py`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` for every process; :func:`setup_distributed` reads them,
joins the process group (gloo on CPU, NCCL on CUDA) and picks this rank's device. Outside
``torchrun`` everything here is a no-op, so the same code runs single-process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a data-parallel job.

    Attributes:
        rank: global rank in ``[0, world_size)``.
        world_size: number of processes (1: not distributed).
        local_rank: rank on this machine (selects the GPU).
        owns_group: whether :func:`setup_distributed` created the process group (and so
            :func:`cleanup` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files and logs."""
        return self.rank == 0


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def setup_distributed(device: str) -> tuple[DistributedContext, torch.device]:
    """Join the ``torchrun`` process group if there is one; return the context and device.

    Rules: a process group that already exists (initialised by the caller) is used as is;
    otherwise, with ``WORLD_SIZE > 1`` in the environment, one is initialised with backend
    ``"nccl"`` for CUDA devices and ``"gloo"`` otherwise. On CUDA each rank uses
    ``cuda:LOCAL_RANK``.

    Args:
        device: the configured device string (``"cpu"``, ``"cuda"``, ``"cuda:0"``, ...).

    Returns:
        ``(context, device)`` for this process.

    Raises:
        ValueError: malformed torchrun variables, or an explicit ``cuda:K`` that is not this
            rank's ``LOCAL_RANK`` in a multi-process job.
    """
    dev = torch.device(device)
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        local = _env_int("LOCAL_RANK") or 0
        ctx = DistributedContext(rank, world, local, owns_group=False)
    else:
        world = _env_int("WORLD_SIZE") or 1
        if world <= 1:
            return DistributedContext(), dev
        env_rank, env_local = _env_int("RANK"), _env_int("LOCAL_RANK")
        if env_rank is None or env_local is None:
            raise ValueError(
                f"WORLD_SIZE={world} is set but RANK/LOCAL_RANK are not; launch with torchrun"
            )
        rank, local = env_rank, env_local
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        ctx = DistributedContext(rank, world, local, owns_group=True)
        logger.info("joined process group: rank %d/%d, backend %s", rank, world, backend)
    if dev.type == "cuda" and ctx.enabled:
        if dev.index is not None and dev.index != ctx.local_rank:
            raise ValueError(
                f"device {device!r} conflicts with LOCAL_RANK={ctx.local_rank}: under torchrun "
                f"use device='cuda' so each rank takes its own GPU"
            )
        dev = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(dev)
    return ctx, dev


def process_rank() -> int:
    """The global rank of this process under ``torchrun`` (``RANK``), 0 when not distributed.

    The one place the application layer reads the rank before a process group exists (only
    rank 0 writes files and reports progress).
    """
    value = _env_int("RANK")
    return 0 if value is None else value


def wrap_model(model: nn.Module, ctx: DistributedContext, device: torch.device) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` when distributed; otherwise return it.

    DDP averages gradients over ranks during ``backward`` (Li et al. 2020, "PyTorch
    Distributed"), so every rank applies the same update and parameters stay identical.
    """
    if not ctx.enabled:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def barrier(ctx: DistributedContext) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if ctx.enabled:
        dist.barrier()


def all_reduce_(tensor: Tensor, ctx: DistributedContext, op: str = "sum") -> Tensor:
    """In-place all-reduce with ``op`` in ``{"sum", "min"}`` (no-op when not distributed).

    Raises:
        ValueError: unknown ``op``.
    """
    if op not in ("sum", "min"):
        raise ValueError(f"unknown all-reduce op {op!r}; choose one of ['min', 'sum']")
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MIN)
    return tensor


def cleanup(ctx: DistributedContext) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()
