"""Atomic, self-describing training checkpoints (safetensors tensors + one JSON state file).

Layout of a run directory::

    RUN_DIR/checkpoints/
        step_0001000/
            model.safetensors       model.state_dict()
            ema.safetensors         EMA weights (only when EMA is on)
            optimizer.safetensors   optimiser tensors, keys "state.<param index>.<name>"
            state.json              step, run id, optimiser scalars and param_groups, lr
                                    schedule, RNG states, configs, versions, size + sha256 of
                                    each file, and a checksum of state.json itself
        step_0002000/ ...
        latest                      name of the newest complete checkpoint ("step_0002000")

A checkpoint is first written into a hidden temporary sibling (``.tmp-step_...``), every file
is fsync'ed, and only then is the directory renamed onto its final name with ``os.replace``;
``latest`` is replaced the same way. A crash at any point therefore leaves either the previous
state or the complete new checkpoint, never a half-written directory that resume would load.
Old checkpoints are rotated out the same way in reverse: renamed to a temporary name first,
then deleted, so a crash during the deletion never leaves a half-deleted ``step_*``.
No pickles are written or read.

Identity and integrity: ``state.json`` records the id of the run that wrote it (``run_id``),
its step (which must match the directory name) and a sha256 of its own content; every other
file's size and sha256 are recorded in it. Loading checks all of them, so a checkpoint copied
in from another run, a hand-edited ``step`` or a corrupt file is refused with one line naming
the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from flowmatch.utils.io import (
    TMP_PREFIX,
    atomic_write_text,
    fsync_dir,
    write_bytes_durable,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
_NAME_RE = re.compile(r"^step_(\d{7,})$")
_TMP_PREFIX = TMP_PREFIX


class CheckpointError(ValueError):
    """A checkpoint file exists but is corrupt, inconsistent or of an unknown format."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint (all tensors on CPU).

    Attributes:
        path: the checkpoint directory.
        step: number of optimisation steps completed when it was written.
        modules: ``state_dict`` of every trained module, by name (``"model"`` for one net).
        emas: EMA weights by module name (same keys as ``modules``), or ``None``.
        optimizer: an optimiser ``state_dict`` (``{"state": ..., "param_groups": ...}``).
        state: the parsed ``state.json`` (configs, lr schedule, RNG states, versions, ...).
    """

    path: Path
    step: int
    modules: dict[str, dict[str, Tensor]]
    emas: dict[str, dict[str, Tensor]] | None
    optimizer: dict[str, Any]
    state: dict[str, Any]

    @property
    def run_id(self) -> str | None:
        """The id of the run that wrote this checkpoint (``None`` for older checkpoints)."""
        value = self.state.get("run_id")
        return value if isinstance(value, str) else None

    @property
    def model(self) -> dict[str, Tensor]:
        """The ``state_dict`` of the module named ``"model"`` (or of the only module)."""
        return self.modules[_main_name(self.modules)]

    @property
    def ema(self) -> dict[str, Tensor] | None:
        """The EMA weights of :attr:`model`, or ``None``."""
        return None if self.emas is None else self.emas.get(_main_name(self.modules))


def _main_name(modules: Mapping[str, Any]) -> str:
    return "model" if "model" in modules or len(modules) != 1 else next(iter(modules))


def module_file(name: str, *, ema: bool = False) -> str:
    """File name of a module's weights (``model.safetensors``, ``<name>.ema.safetensors``, ...).

    ``"model"`` keeps the single-module names ``model.safetensors`` / ``ema.safetensors``;
    other modules use ``<name>.safetensors`` / ``<name>.ema.safetensors``.
    """
    if name == "model":
        return EMA_FILE if ema else MODEL_FILE
    return f"{name}.ema.safetensors" if ema else f"{name}.safetensors"


def check_module_name(name: Any) -> str:
    """Module names are identifiers (they become file names).

    Raises:
        ValueError: not a lowercase identifier, or a reserved name.
    """
    if not isinstance(name, str) or not name.isidentifier() or name in ("ema", "optimizer"):
        raise ValueError(
            f"module names must be identifiers other than 'ema'/'optimizer', got {name!r}"
        )
    return name


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint at ``step`` (zero-padded so names sort by step)."""
    return f"step_{step:07d}"


def _file_record(data: bytes) -> dict[str, Any]:
    """Size and sha256 of a file's bytes, as recorded in ``state.json`` and checked on load."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _state_checksum(state: Mapping[str, Any]) -> str:
    """sha256 of ``state.json``'s content without its ``checksum`` entry (canonical JSON)."""
    body = {k: v for k, v in state.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _cpu_tensors(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    # safetensors refuses tensors that share storage (tied weights) or are non-contiguous.
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, value in state.items():
        t = value.detach().to("cpu").contiguous()
        if t.untyped_storage().data_ptr() in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def _split_optimizer(state: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors of an optimiser state as ``state.<i>.<name>``; everything else as JSON."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, per_param in state["state"].items():
        for name, value in per_param.items():
            key = f"{int(index)}.{name}"
            if isinstance(value, Tensor):
                tensors[f"state.{key}"] = value
            else:
                scalars[key] = value
    return _cpu_tensors(tensors), {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_split_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    optimizer: Mapping[str, Any],
    model: Mapping[str, Tensor] | None = None,
    ema: Mapping[str, Tensor] | None = None,
    modules: Mapping[str, Mapping[str, Tensor]] | None = None,
    emas: Mapping[str, Mapping[str, Tensor]] | None = None,
    extra: Mapping[str, Any] | None = None,
    keep: int | None = None,
    run_id: str | None = None,
) -> Path:
    """Write ``RUN_DIR/checkpoints/step_XXXXXXX`` atomically and point ``latest`` at it.

    Args:
        run_dir: the run directory (``checkpoints/`` is created inside it).
        step: number of completed optimisation steps, ``>= 0``.
        optimizer: optimiser ``state_dict``.
        model: model ``state_dict`` (shorthand for ``modules={"model": model}``).
        ema: EMA ``state_dict`` of ``model`` or ``None``.
        modules: ``state_dict`` of every trained module by name.
        emas: EMA ``state_dict`` by name (every module's, plus any other average the trainer
            keeps, e.g. a self-teacher's) or ``None``.
        extra: JSON-serialisable entries added to ``state.json`` (configs, RNG, schedule).
        keep: keep only the ``keep`` most recent checkpoints (``None``: keep all).
        run_id: the id of the run writing it (recorded; :func:`load_checkpoint` can check it).

    Returns:
        The final checkpoint directory.

    Raises:
        ValueError: ``step < 0``, ``keep < 1``, both or neither of ``model``/``modules``,
            EMA names that miss a module name, or ``extra`` not JSON-serialisable.
    """
    if (model is None) == (modules is None):
        raise ValueError("pass exactly one of model= (one module) or modules= (by name)")
    if model is not None:
        modules = {"model": model}
        emas = None if ema is None else {"model": ema}
    assert modules is not None
    for module_name in modules:
        check_module_name(module_name)
    if emas is not None and not set(modules) <= set(emas):
        raise ValueError(f"EMA names {sorted(emas)} miss module names {sorted(modules)}")
    for ema_name in emas or {}:
        check_module_name(ema_name)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be >= 1 (or None), got {keep}")
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    name = checkpoint_name(step)
    final = root / name
    tmp = root / f"{_TMP_PREFIX}{name}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        opt_tensors, opt_meta = _split_optimizer(optimizer)
        blobs = {OPTIMIZER_FILE: st_save(opt_tensors)}
        for module_name, sd in modules.items():
            blobs[module_file(module_name)] = st_save(_cpu_tensors(sd))
        for ema_name, sd in (emas or {}).items():  # one per module, plus self-teacher averages
            blobs[module_file(ema_name, ema=True)] = st_save(_cpu_tensors(sd))
        files = {}
        for fname, blob in blobs.items():
            write_bytes_durable(tmp / fname, blob, name=final / fname)
            files[fname] = _file_record(blob)
        state = {
            "format_version": FORMAT_VERSION,
            "step": step,
            "run_id": run_id,
            "modules": list(modules),
            "has_ema": emas is not None,
            "emas": None if emas is None else list(emas),
            "files": files,
            "optimizer": opt_meta,
            **dict(extra or {}),
        }
        try:
            state["checksum"] = _state_checksum(state)
            text = json.dumps(state, indent=2, allow_nan=True)
        except TypeError as err:
            raise ValueError(f"checkpoint extra state is not JSON-serialisable: {err}") from None
        write_bytes_durable(tmp / STATE_FILE, text.encode(), name=final / STATE_FILE)
        fsync_dir(tmp)
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(root)
    atomic_write_text(root / LATEST, name + "\n")
    if keep is not None:
        for old in list_checkpoints(run_dir)[:-keep]:
            if old != final:
                discard_dir(old)
    return final


def discard_dir(path: Path) -> None:
    """Delete a directory safely: rename it to a hidden temporary name, then delete that.

    A crash during the deletion leaves a ``.tmp-old-...`` directory (never listed, removed by
    the next save), not a half-deleted directory under its real name.
    """
    trash = path.with_name(f"{_TMP_PREFIX}old-{path.name}-{uuid.uuid4().hex}")
    os.replace(path, trash)
    fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def _replace_dir(src: Path, dst: Path) -> None:
    # os.replace cannot overwrite a non-empty directory: move an existing one aside first
    # (only happens when a step is re-saved, e.g. after resuming from an older checkpoint).
    if dst.exists():
        trash = dst.with_name(f"{_TMP_PREFIX}old-{dst.name}-{uuid.uuid4().hex}")
        os.replace(dst, trash)
        os.replace(src, dst)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(src, dst)


def _remove_stale_temporaries(root: Path) -> None:
    # Leftovers of an interrupted save; never loaded, safe to delete.
    for child in root.iterdir():
        if child.name.startswith(_TMP_PREFIX):
            logger.info("removing incomplete checkpoint %s", child)
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def _checkpoint_root(run_dir: str | Path) -> Path:
    root = Path(run_dir) / CHECKPOINT_DIR
    if root.exists() and not root.is_dir():
        raise CheckpointError(f"{root} is not a directory: it should hold the run's checkpoints")
    return root


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first (temporaries are skipped).

    Raises:
        CheckpointError: ``RUN_DIR/checkpoints`` exists but is not a directory.
    """
    root = _checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME_RE.match(p.name))]
    return [p for _, p in sorted(found) if p.is_dir()]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint named by ``RUN_DIR/checkpoints/latest``, or ``None`` if there is none.

    When ``latest`` is absent (a crash between the directory rename and the ``latest``
    update) the newest ``step_*`` directory is returned: such a directory only ever appears
    complete, through an atomic rename.

    Raises:
        CheckpointError: ``latest`` names a checkpoint directory that does not exist, or is
            not a file; ``checkpoints`` is not a directory.
    """
    root = _checkpoint_root(run_dir)
    pointer = root / LATEST
    if pointer.exists() and not pointer.is_file():
        raise CheckpointError(f"{pointer} is not a file: it should name the latest checkpoint")
    if pointer.is_file():
        name = pointer.read_text().strip()
        path = root / name
        if not _NAME_RE.match(name) or not path.is_dir():
            raise CheckpointError(
                f"{pointer} names checkpoint {name!r}, which does not exist under {root}"
            )
        return path
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from either itself or a run directory (then its latest one).

    Raises:
        FileNotFoundError: ``path`` does not exist, or is a run directory with no checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path {path} does not exist")
    if (path / STATE_FILE).exists() or not (path / CHECKPOINT_DIR).is_dir():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(f"run directory {path} has no checkpoint under {CHECKPOINT_DIR}/")
    return latest


def _read_verified(path: Path, files: Mapping[str, Any]) -> bytes:
    """The bytes of ``path``, checked against the record ``files[path.name]`` of ``state.json``."""
    _check_is_file(path)
    record = files.get(path.name)
    if not isinstance(record, Mapping):
        raise CheckpointError(
            f"checkpoint file {path.parent / STATE_FILE} records no size/sha256 for {path.name}"
        )
    data = path.read_bytes()
    if _file_record(data) != {"bytes": record.get("bytes"), "sha256": record.get("sha256")}:
        raise CheckpointError(
            f"checkpoint file {path} is corrupt: {len(data)} bytes / sha256 differ from the "
            f"{record.get('bytes')} bytes recorded in {STATE_FILE}"
        )
    return data


def _check_is_file(path: Path) -> None:
    if path.is_dir():
        raise CheckpointError(f"checkpoint file {path} is a directory, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} is missing")


def _load_tensors(path: Path, files: Mapping[str, Any]) -> dict[str, Tensor]:
    data = _read_verified(path, files)
    try:
        return st_load(data)
    except Exception as err:  # safetensors raises its own error types for bad headers
        raise CheckpointError(
            f"checkpoint file {path} is not a valid safetensors file: {err}"
        ) from None


def load_checkpoint(path: str | Path, *, run_id: str | None = None) -> Checkpoint:
    """Load a checkpoint directory (or the latest checkpoint of a run directory) onto CPU.

    Every file is checked against the size and sha256 recorded in ``state.json``;
    ``state.json`` against its own checksum; its ``step`` against the directory name
    (``step_0000020`` holds step 20); and, when ``run_id`` is given, the run that wrote it.

    Args:
        path: a ``step_XXXXXXX`` directory or a run directory.
        run_id: the id of the run the checkpoint must belong to (``None``: not checked).

    Returns:
        The :class:`Checkpoint`.

    Raises:
        FileNotFoundError: the directory or one of its files is missing (the message names it).
        CheckpointError: a file is corrupt, truncated, edited or of an unknown format, a
            directory stands where a file should be, the step does not match the directory
            name, or the checkpoint belongs to another run (the message names the file).

    Example:
        >>> ckpt = load_checkpoint("runs/toy")  # doctest: +SKIP
        >>> model.load_state_dict(ckpt.ema or ckpt.model)  # doctest: +SKIP
    """
    path = resolve_checkpoint(path)
    state_path = path / STATE_FILE
    _check_is_file(state_path)
    corrupt = (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError)
    try:
        state = json.loads(state_path.read_text())
        version = state["format_version"]
    except corrupt as err:
        raise CheckpointError(f"checkpoint file {state_path} is corrupt: {err!r}") from None
    # The version is checked before the other fields: another format may lay them out anew.
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {state_path} has format_version {version!r}; this flowmatch reads "
            f"version {FORMAT_VERSION}"
        )
    checksum = state.get("checksum")
    if checksum is not None and checksum != _state_checksum(state):
        raise CheckpointError(
            f"checkpoint file {state_path} was modified after it was written (its checksum "
            "does not match its content); restore the original or resume from another checkpoint"
        )
    try:
        step, files, opt_meta = state["step"], dict(state["files"]), state["optimizer"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
    except corrupt as err:
        raise CheckpointError(f"checkpoint file {state_path} is corrupt: {err!r}") from None
    found_id = state.get("run_id")
    if run_id is not None and found_id != run_id:
        whose = f"run {found_id}" if found_id else "no run id (an older flowmatch, or elsewhere)"
        raise CheckpointError(
            f"checkpoint {path} belongs to {whose}, not to run {run_id} of this run directory: "
            "it was copied from another run; remove it (or train that run instead)"
        )
    named = _NAME_RE.match(path.name)
    if named and int(named.group(1)) != step:
        raise CheckpointError(
            f"checkpoint file {state_path} says step {step} but its directory is {path.name} "
            f"(step {int(named.group(1))}): it was edited or renamed"
        )
    names = state.get("modules", ["model"])
    if not isinstance(names, list) or not names:
        raise CheckpointError(f"checkpoint file {state_path} lists no modules: {names!r}")
    for name in names:
        try:
            check_module_name(name)
        except ValueError as err:
            raise CheckpointError(f"checkpoint file {state_path}: {err}") from None
    modules = {n: _load_tensors(path / module_file(n), files) for n in names}
    emas = None
    if state.get("has_ema"):
        ema_names = state.get("emas") or names  # older checkpoints: one EMA per module
        if not isinstance(ema_names, list):
            raise CheckpointError(f"checkpoint file {state_path}: 'emas' must be a list")
        for name in ema_names:
            try:
                check_module_name(name)
            except ValueError as err:
                raise CheckpointError(f"checkpoint file {state_path}: {err}") from None
        emas = {n: _load_tensors(path / module_file(n, ema=True), files) for n in ema_names}
    optimizer = _join_optimizer(_load_tensors(path / OPTIMIZER_FILE, files), opt_meta)
    return Checkpoint(
        path=path, step=step, modules=modules, emas=emas, optimizer=optimizer, state=state
    )


def rng_state() -> dict[str, Any]:
    """Global torch RNG states as JSON lists (CPU, and every CUDA device once initialised).

    The trainer draws nothing from global RNGs; these are saved so that user code that does
    (e.g. ``nn.Dropout``) also resumes exactly.
    """
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return {"torch": torch.get_rng_state().tolist(), "cuda": cuda}


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
