"""Train a configured run: build its modules and step, run the trainer, write a snapshot."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from flowmatch.api.config import check_same_data, read_run_info
from flowmatch.api.evaluate import Scorer
from flowmatch.api.latent import fit_latent
from flowmatch.api.run import Run, assemble_run, data_info
from flowmatch.api.sample import generate
from flowmatch.api.teachers import frozen_modules
from flowmatch.config.build import build_modules, build_parts, build_step, cond_spec, fit_source
from flowmatch.config.schema import RunConfig, to_dict
from flowmatch.data.batch import ArrayDataset
from flowmatch.latent.space import encode_dataset
from flowmatch.train.checkpoint import discard_dir
from flowmatch.train.distributed import process_rank
from flowmatch.train.lock import RunLock, check_unlocked
from flowmatch.utils.io import TMP_PREFIX, atomic_write_text, write_error
from flowmatch.utils.options import OptionError

logger = logging.getLogger(__name__)


def prepare_dataset(cfg: RunConfig, train_ds: ArrayDataset) -> ArrayDataset:
    """The training set as the model sees it: conditions dropped for an unconditional run."""
    if cond_spec(cfg.model, train_ds).conditional or not train_ds.cond_kinds:
        return train_ds
    return ArrayDataset(train_ds.x, None, None, train_ds.standardizer, train_ds.name, train_ds.meta)


#: What a run directory holds that ``overwrite=True`` replaces (other files are left alone).
RUN_FILES: tuple[str, ...] = (
    "config.json",
    "metrics.jsonl",
    "checkpoints",
    "snapshots",
    "samples.png",
    "eval.json",
    "eval.png",
)
#: Entries that make a directory a run directory (training into it needs resume/overwrite).
_RUN_MARKERS = ("config.json", "metrics.jsonl", "checkpoints")


def existing_run(out: Path) -> list[str]:
    """The run files ``out`` already holds (empty for a new or empty directory).

    Raises:
        ValueError: ``out`` exists but is not a directory.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"run directory {str(out)!r} exists and is not a directory")
    return [name for name in _RUN_MARKERS if (out / name).exists()]


def refuse_existing_run(out: Path, *, resume_flag: str | None = None) -> None:
    """Refuse to train a new run into ``out`` when it already holds one.

    Args:
        out: the run directory.
        resume_flag: how the command line continues a run (default ``--resume OUT``).

    Raises:
        ValueError: ``out`` holds a run (the message says how to resume or replace it).
    """
    found = existing_run(out)
    if found:
        flag = resume_flag if resume_flag is not None else f"--resume {out}"
        raise ValueError(
            f"{str(out)!r} already holds a run ({', '.join(found)}): continue it with "
            f"{flag} (resume=True), replace it with --overwrite (overwrite=True), or "
            "choose another --out"
        )


def clear_run(out: Path) -> None:
    """Remove the files of the run in ``out`` (directories are renamed away, then deleted)."""
    for name in RUN_FILES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            discard_dir(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    logger.info("--overwrite: removed the previous run's files from %s", out)


def remove_stale_temporaries(out: Path) -> None:
    """Temporaries of atomic writes a crash left in the run directory (under its lock)."""
    for folder in (out, out / "snapshots"):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if not path.name.startswith(TMP_PREFIX):
                continue
            logger.info("removing %s, left by an interrupted write", path)
            if path.is_dir() and not path.is_symlink():  # e.g. an interrupted --overwrite
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def check_config_run_id(info: dict[str, Any], out: Path) -> None:
    """A ``config.json`` without a run id (an older flowmatch) must not front newer checkpoints."""
    if info.get("run_id") is not None:
        return
    from flowmatch.train.checkpoint import STATE_FILE, CheckpointError, latest_checkpoint

    latest = latest_checkpoint(out)
    if latest is None:
        return
    try:
        theirs = json.loads((latest / STATE_FILE).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return  # reported by the checkpoint's own checks
    if theirs is not None:
        raise CheckpointError(
            f"{out / 'config.json'} has no run id but checkpoint {latest} belongs to run "
            f"{theirs}: the config was replaced (flowmatch writes the id into both)"
        )


def train_run(
    cfg: RunConfig,
    train_ds: ArrayDataset,
    *,
    out_dir: str | Path,
    test_ds: ArrayDataset | None = None,
    callbacks: Sequence[Any] = (),
    resume: bool = False,
    overwrite: bool = False,
) -> Any:
    """Train a model as configured, writing ``config.json``, checkpoints and ``metrics.jsonl``.

    After training, writes ``samples.png`` (a snapshot with the sample defaults) when
    matplotlib is installed.

    Everything that can be refused is checked before anything is written: the run directory
    (another writer's lock; an existing run without ``resume``/``overwrite``), and on resume
    the stored run (its ``config.json``, the checkpoint's identity, integrity and fit, the
    metrics file, and the data's fingerprint). A refused call leaves the directory unchanged.
    Only rank 0 of a data-parallel job checks, locks and writes the directory.

    Args:
        cfg: the resolved run configuration.
        train_ds: training data (model space).
        out_dir: the run directory.
        test_ds: held-out data: drawn behind 2-D snapshots and scored by periodic evaluation.
        callbacks: trainer callbacks (e.g. the CLI's progress bar).
        resume: continue from the last checkpoint in ``out_dir`` (a run stopped before its
            first checkpoint restarts from step 0); a run already at ``cfg.train.steps`` is
            left as it is (nothing to do; only a missing ``samples.png`` is written).
        overwrite: replace the run already in ``out_dir`` (its files, see :data:`RUN_FILES`).

    Returns:
        The trainer's ``TrainResult`` (``wall_time == 0`` when a resumed run had nothing to do).

    Raises:
        ValueError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite`` is given,
            both are given, or (on resume) the data changed since the run was trained.
        RunLockedError: another process is writing ``out_dir`` (the message names it).
        CheckpointError, MetricsError: on resume, a corrupt, edited or foreign checkpoint or
            a malformed metrics file.
    """
    from flowmatch.train import Trainer, TrainResult

    if resume and overwrite:
        raise ValueError(
            "resume=True continues the run in out_dir and overwrite=True replaces it: pass one"
        )
    out = Path(out_dir)
    rank0 = process_rank() == 0
    if rank0:
        if out.exists() and not out.is_dir():
            raise ValueError(f"run directory {str(out)!r} exists and is not a directory")
        check_unlocked(out)
    train_ds = prepare_dataset(cfg, train_ds)
    given_ds = train_ds  # what the fingerprint is of (before any latent encoding)
    data = data_info(train_ds)
    extra: dict[str, Any] = {}  # what the run stores beside its config and data
    # Latent flow matching: the flow trains on the codes (data.latent); samples are decoded.
    space = fit_latent(cfg.data.latent, train_ds)
    own = cfg.objective.state_space(train_ds.sample_shape, cond_spec(cfg.model, train_ds))
    if own is not None:
        if space is not None:
            raise OptionError(
                "data.latent", f"cannot be combined with objective {cfg.objective.kind!r}"
            )
        space = own
    if space is not None:
        extra["latent"] = space.to_dict()
        data["model_shape"] = list(space.latent_shape)
    train_ds = encode_dataset(space, train_ds)
    cond = cond_spec(cfg.model, train_ds)
    modules = build_modules(cfg, train_ds.sample_shape, cond)
    parts = build_parts(cfg, train_ds.sample_shape, cond)
    source_state = fit_source(parts.source, train_ds)  # e.g. the norm-aligned scale
    if source_state:
        extra["source_state"] = source_state
    step = build_step(parts, cfg)
    frozen = frozen_modules(cfg, train_ds.sample_shape)  # e.g. a representation teacher
    eval_fn = None
    if cfg.train.eval_every > 0 and test_ds is not None:
        eval_fn = periodic_eval(cfg, {"data": data, **extra}, test_ds, out)
    if resume:
        info = read_run_info(out)
        check_config_run_id(info, out)
        check_same_data(info, given_ds, out)
        if "given" in info["data"]:  # the data path as first typed survives the rewrite
            data.setdefault("given", info["data"]["given"])
        trainer = Trainer.resume(
            out,
            modules,
            step,
            train_ds,
            cfg.train,
            frozen=frozen,
            callbacks=callbacks,
            eval_fn=eval_fn,
            run_id=info.get("run_id"),
            restart_if_empty=True,
        )
    else:
        if rank0 and not overwrite:
            refuse_existing_run(out)
        trainer = Trainer(
            modules,
            step,
            train_ds,
            cfg.train,
            frozen=frozen,
            out_dir=out,
            callbacks=callbacks,
            eval_fn=eval_fn,
        )
    run_config = {"run_id": trainer.run_id, "config": to_dict(cfg), "data": data, **extra}
    trainer.run_config = run_config
    if resume and trainer.step >= cfg.train.steps:
        logger.info(
            "run %s is already at step %d = train.steps: nothing to do (pass more steps to "
            "train longer)",
            out,
            trainer.step,
        )
        trainer.close()
        if rank0 and not (out / "samples.png").exists():  # stopped before the snapshot
            with RunLock(out):
                write_snapshot(out, cfg, test_ds)
        return TrainResult(trainer.step, math.nan, trainer.last_checkpoint, 0.0, 0.0)
    with RunLock(out, enabled=rank0):
        if rank0:
            remove_stale_temporaries(out)
            if overwrite:
                clear_run(out)
            elif not resume:
                refuse_existing_run(out)  # again, under the lock: another run may have started
            atomic_write_text(out / "config.json", json.dumps(run_config, indent=2))
        with trainer:
            result = trainer.fit()
        if rank0:
            write_snapshot(out, cfg, test_ds)
    return result


def periodic_eval(
    cfg: RunConfig, run_config: dict[str, Any], test_ds: ArrayDataset, out: Path
) -> Any:
    """An ``eval_fn`` for the trainer: sample, score against held-out data, save a snapshot.

    Uses the run's ``[sample]`` defaults and ``min(sample.num_samples, 1000, len(test))``
    samples; snapshots go to ``out/snapshots/step_XXXXXXX.png`` (when matplotlib is present).
    """
    n = min(cfg.sample.num_samples, 1000, len(test_ds))
    scorer: Scorer | None = None

    def eval_fn(modules: nn.Module | dict[str, nn.Module], step: int) -> dict[str, float]:
        nonlocal scorer
        live = modules if isinstance(modules, dict) else {"model": modules}
        run = assemble_run(cfg, run_config, live, step=step)
        scorer = scorer or Scorer(run, test_ds, n)
        scorer.run = run
        res = generate(run, n, seed=0, cond=scorer.cond)
        _save_png(res, out / "snapshots" / f"step_{step:07d}.png", run, reference=scorer)
        scores = scorer(res.samples, labels=res.labels, cond=res.cond)
        scores.pop("cond_w2_bins", None)  # the log keeps scalars (the mean is cond_w2)
        return scores

    return eval_fn


def write_snapshot(out: Path, cfg: RunConfig, test_ds: ArrayDataset | None) -> None:
    """``out/samples.png``: samples of the trained run with its ``[sample]`` defaults."""
    from flowmatch.api.run import load_run

    run = load_run(out)
    scorer = Scorer(run, test_ds, min(len(test_ds), cfg.sample.num_samples)) if test_ds else None
    cond = None if scorer is None else scorer.cond
    if cond is None and any(k != "labels" for k in run.cond.kinds):
        logger.info("no held-out conditions to sample %s with: skipping samples.png", run.cond)
        return
    num = cfg.sample.num_samples if cond is None else cond.batch_size
    res = generate(run, num or 1, seed=0, cond=cond)
    _save_png(res, out / "samples.png", run, reference=scorer)


def _save_png(res: Any, path: Path, run: Run, *, reference: Scorer | None) -> None:
    try:
        from flowmatch.viz import save_samples_png
    except ImportError:  # pragma: no cover - matplotlib is an optional extra
        logger.info("matplotlib not installed: skipping %s", path)
        return
    ref = None
    if reference is not None and res.samples.ndim == 2:
        ref = reference.reference
        if reference.space == "model":
            ref = run.to_data_space(ref)
    title = f"{run.info['data']['name']} @ step {run.step}: {res.solver}, NFE {res.nfe}" + (
        f", guidance {res.guidance:g}" if res.guidance != 1.0 else ""
    )
    # Written beside and renamed into place: a crash never leaves a truncated PNG.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        values = None if res.cond is None or res.cond.values is None else res.cond.values[:, 0]
        save_samples_png(
            res.samples, tmp, reference=ref, labels=res.labels, title=title, values=values
        )
        os.replace(tmp, path)
    except ImportError:
        logger.info("matplotlib not installed: skipping %s", path)
    except OSError as err:
        raise write_error(path, err) from None
    finally:
        tmp.unlink(missing_ok=True)


__all__ = [
    "RUN_FILES",
    "check_config_run_id",
    "clear_run",
    "existing_run",
    "periodic_eval",
    "prepare_dataset",
    "refuse_existing_run",
    "remove_stale_temporaries",
    "train_run",
    "write_snapshot",
]
