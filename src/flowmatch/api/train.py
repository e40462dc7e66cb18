"""Train a configured run: build its modules and step, run the trainer, write a snapshot."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from flowmatch.api.evaluate import Scorer
from flowmatch.api.latent import fit_latent
from flowmatch.api.run import Run, assemble_run, data_info
from flowmatch.api.sample import generate
from flowmatch.api.teachers import frozen_modules
from flowmatch.config.build import build_modules, build_parts, build_step, cond_spec, fit_source
from flowmatch.config.schema import RunConfig, to_dict
from flowmatch.data.batch import ArrayDataset
from flowmatch.latent.space import encode_dataset
from flowmatch.train.distributed import process_rank
from flowmatch.utils.io import atomic_write_text
from flowmatch.utils.options import OptionError

logger = logging.getLogger(__name__)


def prepare_dataset(cfg: RunConfig, train_ds: ArrayDataset) -> ArrayDataset:
    """The training set as the model sees it: conditions dropped for an unconditional run."""
    if cond_spec(cfg.model, train_ds).conditional or not train_ds.cond_kinds:
        return train_ds
    return ArrayDataset(train_ds.x, None, None, train_ds.standardizer, train_ds.name, train_ds.meta)


def train_run(
    cfg: RunConfig,
    train_ds: ArrayDataset,
    *,
    out_dir: str | Path,
    test_ds: ArrayDataset | None = None,
    callbacks: Sequence[Any] = (),
    resume: bool = False,
) -> Any:
    """Train a model as configured, writing ``config.json``, checkpoints and ``metrics.jsonl``.

    After training, writes ``samples.png`` (a snapshot with the sample defaults) when
    matplotlib is installed.

    Args:
        cfg: the resolved run configuration.
        train_ds: training data (model space).
        out_dir: the run directory.
        test_ds: held-out data: drawn behind 2-D snapshots and scored by periodic evaluation.
        callbacks: trainer callbacks (e.g. the CLI's progress bar).
        resume: continue from the last checkpoint in ``out_dir``.

    Returns:
        The trainer's ``TrainResult``.
    """
    from flowmatch.train import Trainer

    out = Path(out_dir)
    train_ds = prepare_dataset(cfg, train_ds)
    run_config: dict[str, Any] = {"config": to_dict(cfg), "data": data_info(train_ds)}
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
        run_config["latent"] = space.to_dict()
        run_config["data"]["model_shape"] = list(space.latent_shape)
    train_ds = encode_dataset(space, train_ds)
    cond = cond_spec(cfg.model, train_ds)
    modules = build_modules(cfg, train_ds.sample_shape, cond)
    parts = build_parts(cfg, train_ds.sample_shape, cond)
    source_state = fit_source(parts.source, train_ds)  # e.g. the norm-aligned scale
    step = build_step(parts, cfg)
    frozen = frozen_modules(cfg, train_ds.sample_shape)  # e.g. a representation teacher
    if source_state:
        run_config["source_state"] = source_state
    if process_rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(run_config, indent=2))
    eval_fn = None
    if cfg.train.eval_every > 0 and test_ds is not None:
        eval_fn = periodic_eval(cfg, run_config, test_ds, out)
    if resume:
        trainer = Trainer.resume(
            out,
            modules,
            step,
            train_ds,
            cfg.train,
            frozen=frozen,
            run_config=run_config,
            callbacks=callbacks,
            eval_fn=eval_fn,
        )
    else:
        trainer = Trainer(
            modules,
            step,
            train_ds,
            cfg.train,
            frozen=frozen,
            out_dir=out,
            run_config=run_config,
            callbacks=callbacks,
            eval_fn=eval_fn,
        )
    with trainer:
        result = trainer.fit()
    if process_rank() == 0:
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
    try:
        values = None if res.cond is None or res.cond.values is None else res.cond.values[:, 0]
        save_samples_png(
            res.samples, path, reference=ref, labels=res.labels, title=title, values=values
        )
    except ImportError:
        logger.info("matplotlib not installed: skipping %s", path)


__all__ = ["periodic_eval", "prepare_dataset", "train_run", "write_snapshot"]
