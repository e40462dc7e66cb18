"""Teacher samples on disk: fixed-size chunks of named arrays, written atomically and resumable.

Reflow pairs ``(x0, x1)``, BOSS trajectory nodes and other teacher outputs can be larger than
memory and expensive to make. A :class:`ChunkStore` is a directory holding ``manifest.json``
and one ``.npy`` file per array and chunk; chunk ``k`` holds items ``[k C, (k + 1) C)`` and
depends only on ``k`` (the generator of item ``i`` is derived from ``(seed, i // C)``), so an
interrupted generation continues where it stopped and gives the same bits. Each chunk file is
written to a temporary name and renamed, and its size and sha256 are recorded in the manifest.
:class:`StoreBatches` reads random rows through memory maps: only the rows of a batch are read.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowmatch.data.batch import Batch
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.io import atomic_write_bytes, atomic_write_text
from flowmatch.utils.tensor import mix_seed

MANIFEST = "manifest.json"
_FORMAT = "flowmatch-chunks-1"


@dataclass(frozen=True)
class TeacherBatch(Batch):
    """A batch with extra named tensors and the index of its optimisation step.

    Attributes:
        extra: arrays beyond ``Batch``'s fields (e.g. BOSS's segment times), each ``(B, ...)``.
        step: the 0-based optimisation step the batch belongs to (``None``: unknown), for
            objectives with a warm-up in training steps (sCM's tangent warm-up).
    """

    extra: Mapping[str, Tensor] = field(default_factory=dict)
    step: int | None = None


class WithStep:
    """A ``BatchSource`` that tags each batch of ``source`` with its step (a :class:`TeacherBatch`)."""

    def __init__(self, source: Any) -> None:
        if not callable(getattr(source, "batch_at", None)):
            raise TypeError(f"source must have batch_at(step), got {type(source).__name__}")
        self.source = source

    def batch_at(self, step: int) -> TeacherBatch:
        """``source.batch_at(step)`` with ``step`` recorded."""
        b = self.source.batch_at(step)
        extra = b.extra if isinstance(b, TeacherBatch) else {}
        return TeacherBatch(b.x1, b.labels, b.x0, b.values, b.context, extra=extra, step=step)


def _chunk_file(name: str, k: int) -> str:
    return f"{name}_{k:05d}.npy"


class ChunkStore:
    """A directory of ``num`` items in chunks of ``chunk``, each item a set of named arrays.

    Args:
        root: the directory (created).
        num: number of items.
        chunk: items per chunk.
        meta: what the items are (teacher, sampler, seed, ...): JSON-serialisable. Reopening a
            store with other ``num``/``chunk``/``meta`` is an error, so a resumed generation
            never mixes items of two settings.

    Raises:
        ValueError: the directory holds a store with other settings, or a corrupt manifest.
    """

    def __init__(self, root: str | Path, *, num: int, chunk: int, meta: Mapping[str, Any]) -> None:
        self.root = Path(root)
        self.num = check_positive_int(num, "num")
        self.chunk = check_positive_int(chunk, "chunk")
        self.meta = json.loads(json.dumps(dict(meta)))  # normalised (tuples -> lists)
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / MANIFEST
        if path.is_file():
            try:
                manifest = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is corrupt (not JSON): {err}") from None
            want = {"num": self.num, "chunk": self.chunk, "meta": self.meta}
            have = {k: manifest.get(k) for k in want}
            if have != want:
                diff = sorted(k for k in want if have[k] != want[k])
                raise ValueError(
                    f"{self.root} holds a store made with other settings ({diff} differ: "
                    f"stored {[have[k] for k in diff]}, asked {[want[k] for k in diff]}); "
                    "use another directory or delete it"
                )
            self.manifest = manifest
        else:
            self.manifest = {
                "format": _FORMAT,
                "num": self.num,
                "chunk": self.chunk,
                "meta": self.meta,
                "chunks": {},
            }
            self._save_manifest()

    @property
    def num_chunks(self) -> int:
        """Number of chunks ``ceil(num / chunk)``."""
        return math.ceil(self.num / self.chunk)

    def chunk_range(self, k: int) -> tuple[int, int]:
        """``(start, count)`` of chunk ``k``."""
        start = k * self.chunk
        return start, min(self.chunk, self.num - start)

    def _save_manifest(self) -> None:
        atomic_write_text(self.root / MANIFEST, json.dumps(self.manifest, indent=1))

    def is_done(self, k: int) -> bool:
        """Whether chunk ``k`` is recorded and its files exist with the recorded sizes."""
        record = self.manifest["chunks"].get(str(k))
        if record is None:
            return False
        for name, rec in record.items():
            f = self.root / _chunk_file(name, k)
            if not f.is_file() or f.stat().st_size != rec["bytes"]:
                return False
        return True

    @property
    def complete(self) -> bool:
        """Whether every chunk is written."""
        return all(self.is_done(k) for k in range(self.num_chunks))

    def write(self, k: int, arrays: Mapping[str, Tensor]) -> None:
        """Write chunk ``k`` (each array ``(count, ...)``) atomically and record it.

        Raises:
            ValueError: an array does not hold the chunk's ``count`` items, or is not finite.
        """
        _, count = self.chunk_range(k)
        record = {}
        for name, value in arrays.items():
            arr = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
            if arr.shape[:1] != (count,):
                raise ValueError(
                    f"chunk {k} array {name!r} must hold {count} items, got shape {arr.shape}"
                )
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise ValueError(f"chunk {k} array {name!r} has NaN/inf (check the teacher)")
            buf = io.BytesIO()
            np.save(buf, arr, allow_pickle=False)
            data = buf.getvalue()
            atomic_write_bytes(self.root / _chunk_file(name, k), data)
            record[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        self.manifest["chunks"][str(k)] = record
        self._save_manifest()

    def fill(
        self,
        make: Callable[[int, int, int], Mapping[str, Tensor]],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Make every missing chunk with ``make(k, start, count)``; returns how many were made."""
        made = 0
        for k in range(self.num_chunks):
            if self.is_done(k):
                continue
            start, count = self.chunk_range(k)
            self.write(k, make(k, start, count))
            made += 1
            if progress is not None:
                progress(k + 1, self.num_chunks)
        return made

    def verify(self) -> None:
        """Check every chunk file against its recorded sha256.

        Raises:
            ValueError: a chunk is missing or corrupt (the message names the file).
        """
        for k in range(self.num_chunks):
            record = self.manifest["chunks"].get(str(k))
            if record is None:
                raise ValueError(f"{self.root}: chunk {k} of {self.num_chunks} is not written yet")
            for name, rec in record.items():
                f = self.root / _chunk_file(name, k)
                data = f.read_bytes() if f.is_file() else b""
                if hashlib.sha256(data).hexdigest() != rec["sha256"]:
                    raise ValueError(f"{f} is missing or corrupt (sha256 differs from manifest)")

    def arrays(self, name: str) -> list[np.ndarray]:
        """The chunks of array ``name`` as read-only memory maps (nothing is loaded).

        Raises:
            ValueError: the store is incomplete or has no array ``name``.
        """
        if not self.complete:
            raise ValueError(f"{self.root} is incomplete: generate the remaining chunks first")
        names = set(self.manifest["chunks"]["0"])
        if name not in names:
            raise ValueError(f"{self.root} has no array {name!r}; it holds {sorted(names)}")
        return [
            np.load(self.root / _chunk_file(name, k), mmap_mode="r", allow_pickle=False)
            for k in range(self.num_chunks)
        ]


def wait_for_store(
    root: str | Path,
    *,
    num: int,
    chunk: int,
    meta: Mapping[str, Any],
    poll: float = 1.0,
    timeout: float | None = None,
    log: Callable[[str], None] | None = None,
    log_every: float = 60.0,
) -> ChunkStore:
    """The store at ``root`` once another process has written all of it (it writes nothing).

    Data-parallel distillation makes its teacher samples on rank 0 before the process group
    exists; the other ranks wait here until the manifest at ``root`` records every chunk with
    these settings (a manifest of other settings is waited out: rank 0 may be replacing it).
    Under ``torchrun`` a rank 0 that fails stops every worker, so the default waits without
    a time limit.

    Args:
        root: the store's directory.
        num: number of items the finished store must have (as :class:`ChunkStore`).
        chunk: its items per chunk.
        meta: its settings (teacher, sampler, ...).
        poll: seconds between checks.
        timeout: seconds to wait at most (``None``: no limit).
        log: where a waiting message goes.
        log_every: seconds between waiting messages.

    Raises:
        TimeoutError: the store is not complete after ``timeout`` seconds.
    """
    import time

    path = Path(root) / MANIFEST
    start = last = time.monotonic()
    while True:
        if path.is_file():
            try:
                store = ChunkStore(root, num=num, chunk=chunk, meta=meta)
            except ValueError:  # other settings (being replaced) or a manifest mid-write
                store = None
            if store is not None and store.complete:
                return store
        now = time.monotonic()
        if timeout is not None and now - start > timeout:
            raise TimeoutError(
                f"{root} was not complete after {timeout:g} s (the rank that writes it failed?)"
            )
        if log is not None and now - last >= log_every:
            log(f"waiting for rank 0 to finish the teacher samples in {root}")
            last = now
        time.sleep(poll)


class StoreBatches:
    """A ``BatchSource`` of random rows of a :class:`ChunkStore` (read through memory maps).

    ``batch_at(k)`` draws ``batch_size`` item indices uniformly (with replacement) from a
    generator seeded by ``(seed, rank, k)``, so it is a pure function of the step.

    Args:
        store: a complete store.
        batch_size: items per batch.
        fields: ``{batch field: array name}``, e.g. ``{"x0": "x0", "x1": "x1"}``; the batch
            field ``x1`` is required; ``x0`` and ``labels`` are optional; any other name goes
            into ``TeacherBatch.extra``.
        seed: base seed; rank: data-parallel rank.
        device: where batches go.
    """

    def __init__(
        self,
        store: ChunkStore,
        batch_size: int,
        *,
        fields: Mapping[str, str],
        seed: int = 0,
        rank: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if "x1" not in fields:
            raise ValueError(
                f"fields must map the batch field 'x1' to an array, got {dict(fields)}"
            )
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.fields = dict(fields)
        self.maps = {f: store.arrays(a) for f, a in self.fields.items()}
        self.num, self.chunk = store.num, store.chunk
        self.seed, self.rank, self.device = seed, rank, torch.device(device)

    def rows(self, name: str, idx: Tensor) -> Tensor:
        """Rows ``idx`` of batch field ``name`` as a tensor (only those rows are read)."""
        chunks = self.maps[name]
        k, off = idx // self.chunk, idx % self.chunk
        order = torch.argsort(k, stable=True)
        parts: list[np.ndarray] = []
        for c in torch.unique(k).tolist():
            sel = off[order][k[order] == c].numpy()
            parts.append(np.asarray(chunks[c][sel]))
        out = torch.from_numpy(np.concatenate(parts))
        return out[torch.argsort(order)]  # back to the drawn order

    def batch_at(self, step: int) -> TeacherBatch:
        """The batch of step ``step``: rows drawn with replacement, seeded by the step."""
        check_positive_int(step, "step", minimum=0)
        g = torch.Generator().manual_seed(mix_seed(self.seed, 0x5702E, self.rank, step))
        idx = torch.randint(self.num, (self.batch_size,), generator=g)
        values = {f: self.rows(f, idx).to(self.device) for f in self.fields}
        labels = values.pop("labels", None)
        if labels is not None:
            labels = labels.long()
        x1, x0 = values.pop("x1"), values.pop("x0", None)
        return TeacherBatch(x1=x1, x0=x0, labels=labels, extra=values, step=step)
