"""Data-parallel training with PyTorch's own engine (DDP launched by ``torchrun``).

``torchrun --nproc_per_node=N script.py`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` for every process; :func:`setup_distributed` reads them,
joins the process group (gloo on CPU, NCCL on CUDA) and picks this rank's device. Outside
``torchrun`` everything here is a no-op, so the same code runs single-process.

Faults: the process group is created with a timeout (``train.dist_timeout`` seconds), so a
stopped or hung rank makes every collective of the others fail after that long instead of
PyTorch's default 30 minutes. :func:`unresponsive_error` then finds which ranks stopped
answering (each surviving rank marks itself alive in the rendezvous store and looks for the
others' marks) and returns one error naming them.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
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


def setup_distributed(
    device: str, *, timeout: float | None = None
) -> tuple[DistributedContext, torch.device]:
    """Join the ``torchrun`` process group if there is one; return the context and device.

    Rules: a process group that already exists (initialised by the caller) is used as is;
    otherwise, with ``WORLD_SIZE > 1`` in the environment, one is initialised with backend
    ``"nccl"`` for CUDA devices and ``"gloo"`` otherwise. On CUDA each rank uses
    ``cuda:LOCAL_RANK``.

    Args:
        device: the configured device string (``"cpu"``, ``"cuda"``, ``"cuda:0"``, ...).
        timeout: seconds a collective (and the rendezvous) waits for the other ranks
            (``None``: PyTorch's default of 30 minutes).

    Returns:
        ``(context, device)`` for this process.

    Raises:
        ValueError: malformed torchrun variables, or an explicit ``cuda:K`` that is not this
            rank's ``LOCAL_RANK`` in a multi-process job.
        RankTimeoutError: not every rank joined the process group within ``timeout``.
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
        wait = None if timeout is None else datetime.timedelta(seconds=timeout)
        try:
            dist.init_process_group(backend=backend, timeout=wait)
        except RuntimeError as err:  # DistStoreError/DistNetworkError are RuntimeErrors
            raise RankTimeoutError(
                f"rank {rank}: the process group of {world} ranks did not form within "
                f"{_seconds(timeout)} (train.dist_timeout): a rank did not start or the "
                f"rendezvous at {os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} "
                f"is unreachable ({_first_line(err)})"
            ) from None
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


#: Set once a collective failed: the process group can no longer be destroyed cleanly.
_BROKEN = False


class RankTimeoutError(RuntimeError):
    """A rank stopped responding (stopped, hung or dead); the message names it."""


def _seconds(timeout: float | None) -> str:
    return "the default 1800 s" if timeout is None else f"{timeout:g} s"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


#: Substrings of the errors gloo/NCCL/the store raise when a peer stops answering.
_COMM_MARKERS = (
    "timed out",
    "timeout",
    "connection closed",
    "connection reset",
    "broken pipe",
    "gloo",
    "nccl",
    "socket",
    "peer",
)


def is_comm_failure(err: BaseException) -> bool:
    """Whether ``err`` is a failed collective (a peer timed out, closed or reset the link)."""
    if isinstance(err, RankTimeoutError):
        return False
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(err, dist_error):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(m in text for m in _COMM_MARKERS)


def _store() -> object | None:
    try:
        return dist.distributed_c10d._get_default_store()  # the rendezvous store
    except Exception:  # noqa: BLE001 - no store: the diagnosis falls back to a generic line
        return None


def silent_ranks(ctx: DistributedContext, grace: float) -> list[int] | None:
    """The ranks that do not answer within ``grace`` seconds (``None``: cannot tell).

    Every rank that hit the failure marks itself alive in the rendezvous store, waits
    ``grace`` seconds for the others' marks, and reports the ranks without one: a stopped or
    hung rank cannot write its mark. Returns ``None`` when the store itself does not answer
    (it lives in rank 0's process when not launched by ``torchrun``: then rank 0 is silent).
    The store is asked from a daemon thread, since a store whose host is stopped may never
    answer at all.
    """
    store = _store()
    if store is None:
        return None
    prefix = "flowmatch/alive/{}/{}/".format(
        os.environ.get("TORCHELASTIC_RUN_ID", ""), os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    )
    result: list[list[int]] = []

    def probe() -> None:
        try:
            store.set_timeout(datetime.timedelta(seconds=max(grace, 1.0)))  # type: ignore[attr-defined]
            store.set(f"{prefix}{ctx.rank}", "1")  # type: ignore[attr-defined]
            deadline = time.monotonic() + grace
            others = [r for r in range(ctx.world_size) if r != ctx.rank]
            while True:
                silent = [r for r in others if not store.check([f"{prefix}{r}"])]  # type: ignore[attr-defined]
                if not silent or time.monotonic() >= deadline:
                    result.append(silent)
                    return
                time.sleep(0.1)
        except Exception:  # noqa: BLE001 - the store is gone with its host
            return

    thread = threading.Thread(target=probe, name="flowmatch-alive-probe", daemon=True)
    thread.start()
    thread.join(grace + 2.0)
    return result[0] if result else None


def unresponsive_error(
    ctx: DistributedContext, err: BaseException, *, timeout: float | None, where: str
) -> RankTimeoutError:
    """One error naming the ranks that stopped answering, after a failed collective ``err``.

    Args:
        ctx: this rank's context.
        err: the collective's error.
        timeout: the configured collective timeout (seconds), for the message.
        where: what this rank was doing (e.g. ``"at step 12"``).
    """
    global _BROKEN
    _BROKEN = True  # the group cannot be torn down cleanly any more (cleanup would block)
    grace = min(5.0, max(1.0, (timeout or 10.0) / 2))
    silent = silent_ranks(ctx, grace)
    note = ""
    if silent is None:
        who = "rank 0" if ctx.rank != 0 else "a rank"
        note = "; the rendezvous store does not answer either" if ctx.rank != 0 else ""
    elif not silent:
        who, note = "a rank", "; all answer now: the link between them failed"
    else:
        who = ("rank " if len(silent) == 1 else "ranks ") + ", ".join(map(str, silent))
    return RankTimeoutError(
        f"{who} of {ctx.world_size} did not respond within {_seconds(timeout)} "
        f"(train.dist_timeout): stopped, hung, dead or busy for longer{note}; rank {ctx.rank} "
        f"stops {where} ({_first_line(err)})"
    )


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
    """Destroy the process group if :func:`setup_distributed` created it.

    After a rank stopped responding the group is left as it is: tearing it down would wait
    for that rank; the process is about to exit anyway.
    """
    if ctx.owns_group and dist.is_initialized() and not _BROKEN:
        dist.destroy_process_group()
