"""``flowmatch`` command line: train, sample, eval, info (thin over ``flowmatch.api``).

Choices and help text come from the registries (``flowmatch.registry``): a plugin's sampler or
metric shows up here without any edit. Errors exit with status 2 and one line naming the
problem and the argument or config key (``--debug`` shows the traceback); argument errors
too (no usage dump). An unexpected internal error exits with status 1, also in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

EXIT_ERROR = 2
EXIT_INTERNAL = 1


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``flowmatch sample: error: argument --nfe: ...``."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"NFE values must be integers >= 1, got {text!r}")
    return values


def _float_list(text: str) -> list[float]:
    from flowmatch.times.grids import custom_grid

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if len(values) < 2:
        raise argparse.ArgumentTypeError(
            f"a grid needs at least two times (e.g. 0,0.5,1), got {text!r}"
        )
    try:
        custom_grid(values)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).replace("grid ", "the times ", 1)) from None
    return values


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _int_at_least(minimum: int, why: str = "") -> Any:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}{why}, got {v}")
        return v

    return parse


_positive_int = _int_at_least(1)


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def _switch_time(text: str) -> float | str:
    """``--switch``: a finite time or ``auto``."""
    if text == "auto":
        return text
    try:
        return _finite_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a time or 'auto', got {text!r}") from None


def _finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def _registry_help(concept: str) -> str:
    from flowmatch.registry import registries

    return "; ".join(f"{name}: {doc}" for name, doc in registries()[concept].table())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``flowmatch`` command (choices from the registries)."""
    from flowmatch.config import schema  # noqa: F401  (registers the built-in components)
    from flowmatch.solvers.base import SAMPLERS

    p = _Parser(prog="flowmatch", description="Train, sample and evaluate flow-matching models.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads for torch (default: 1, the fastest for the small reference models "
        "and safe on a shared machine; raise it for large images)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (default: 2-D checkerboard)")
    t.add_argument("--config", help="TOML config file")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.lr=3e-4 or --set coupling.kind=exact_ot "
        "(repeatable; 'none' unsets keys that allow it)",
    )
    t.add_argument("--data", help="built-in data set name or path (.npy/.npz/.csv/image folder)")
    t.add_argument("--steps", type=_positive_int, help="total training steps")
    t.add_argument("--out", default=None, help="run directory (default runs/<data>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (its config, metrics, checkpoints, snapshots); "
        "without it an existing run directory is refused",
    )
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    solvers = SAMPLERS.names()
    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run_dir")
    s.add_argument(
        "--num-samples",
        type=_positive_int,
        default=None,
        help="default: the rows of --cond (when it has more than one), else 1000; with "
        "--observe: one per observation (give a multiple of their count)",
    )
    s.add_argument(
        "--solver",
        default=None,
        help=f"default: the run's sample.solver. {_registry_help('sampler')} (and any sampler "
        "the run's plugins register)",
    )
    s.add_argument(
        "--nfe", type=_positive_int, default=None, help="function evaluations per sample"
    )
    s.add_argument(
        "--grid", default=None, help=f"default: the run's sample.grid. {_registry_help('grid')}"
    )
    s.add_argument(
        "--grid-values",
        type=_float_list,
        default=None,
        help="a custom time grid, e.g. 0,0.5,0.8,1 (replaces --grid; --nfe defaults to match)",
    )
    s.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="solver.KEY=V|grid.KEY=V",
        help="an option of the solver or grid, e.g. --opt solver.atol=1e-4 --opt grid.shift=2 "
        "(with --search: search.KEY=V and reward.KEY=V)",
    )
    s.add_argument(
        "--guidance",
        type=_finite_float,
        default=None,
        help="classifier-free guidance scale (default: the run's sample.guidance)",
    )
    s.add_argument("--label", type=int, default=None, help="class of all samples")
    s.add_argument(
        "--cond",
        metavar="FILE.npz",
        default=None,
        help="conditions of the samples: arrays 'labels' (class ids), 'cond' (values, N x C, "
        "in the data's units) and/or 'context' (N x S), N rows or one row for all; needed for "
        "runs conditioned on values or context",
    )
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--no-ema", action="store_true", help="use raw instead of EMA weights")
    s.add_argument(
        "--along",
        default=None,
        help="sample along another path (exact time/scale change), e.g. vp or cosine",
    )
    s.add_argument(
        "--reference",
        metavar="REF_RUN",
        default=None,
        help="RL guidance: sample v_ref + w (v_run - v_ref) with REF_RUN's field (--weight w)",
    )
    s.add_argument("--weight", type=_finite_float, default=None, help="with --reference: w")
    s.add_argument(
        "--early",
        metavar="SMALL_RUN",
        default=None,
        help="two-model sampling: SMALL_RUN's field before --switch T, this run's after",
    )
    s.add_argument(
        "--switch",
        type=_switch_time,
        default=None,
        help="with --early: time T, or 'auto' (the latest time within 5%% of this run's "
        "held-out metric on a validation draw; same solver and NFE as the samples)",
    )
    s.add_argument(
        "--control",
        metavar="REWARD",
        default=None,
        help="test-time control down -REWARD's gradient (FOCUS weighting; options --opt "
        "reward.KEY=V, strength --control-scale)",
    )
    s.add_argument(
        "--control-scale", type=_finite_float, default=None, help="with --control (default 1)"
    )
    s.add_argument(
        "--prune",
        action="store_true",
        help="reject source draws along the run's data-sparse directions (flowmatch prune)",
    )
    s.add_argument(
        "--observe",
        metavar="OBS.npz",
        default=None,
        help="condition on observations: 'values' with 'mask' (inpainting) or 'factor' "
        "(block-average super-resolution), in data space",
    )
    s.add_argument(
        "--observe-method",
        choices=["project", "dps"],
        default="project",
        help="with --observe: projection of the data estimate, or a DPS likelihood gradient",
    )
    s.add_argument(
        "--search",
        default=None,
        help=f"inference-time search at an NFE budget. {_registry_help('search')}",
    )
    s.add_argument(
        "--reward",
        default=None,
        help=f"with --search: the reward ({_registry_help('reward')}); options via "
        "--opt reward.KEY=V",
    )
    s.add_argument(
        "--budget", type=_positive_int, default=None, help="with --search: NFE per sample"
    )
    s.add_argument("--out", required=True, help="output .npz (array 'samples') or .png")

    e = sub.add_parser("eval", help="metrics against held-out data per solver and NFE")
    e.add_argument("run_dir")
    e.add_argument("--nfe", type=_int_list, default=None, help="e.g. 1,2,4,8,16,32")
    e.add_argument(
        "--solver", type=_name_list, default=None, help=f"e.g. euler,midpoint (from {solvers})"
    )
    e.add_argument(
        "--num-samples",
        type=_int_at_least(2, " (a distance between sample sets needs two samples)"),
        default=None,
        help="generated samples per row (at most the held-out size)",
    )
    e.add_argument("--seed", type=_seed, default=0)
    e.add_argument("--metrics", type=_name_list, default=None, help="metric names (default: all)")
    e.add_argument("--no-reference", action="store_true", help="skip the adaptive reference row")
    e.add_argument("--no-ema", action="store_true", help="use raw instead of EMA weights")
    e.add_argument("--out", default=None, help="JSON output (default RUN_DIR/eval.json)")

    from flowmatch.api.distill import FAMILIES

    d = sub.add_parser(
        "distill",
        help="distil a trained run into a few-step student (reflow, flow map, sCM, ...)",
        description="Train a few-step student from TEACHER_RUN; the result is a run directory "
        "that sample/eval/info read like any other. Objectives per method: "
        + "; ".join(f"{m}: {', '.join(k)}" for m, k in FAMILIES.items()),
    )
    d.add_argument("teacher_run", help="a trained run directory (the teacher)")
    d.add_argument("--method", required=True, choices=sorted(FAMILIES), help="what to distil")
    d.add_argument("--out", required=True, help="the student's run directory")
    d.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a student setting, e.g. --set objective.one_step=true or "
        "--set objective.kind=meanflow (repeatable)",
    )
    d.add_argument("--steps", type=_positive_int, help="total training steps")
    d.add_argument("--resume", action="store_true", help="continue the distillation in --out")
    d.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the student run already in --out (teacher pairs/trajectories made with "
        "the same settings are kept); without it an existing run directory is refused",
    )
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    g = sub.add_parser("grid", help="compute a time grid of a trained run and store it (BOSS)")
    g.add_argument("run_dir")
    g.add_argument("--method", default="boss", choices=["boss"], help="grid method")
    g.add_argument("--nfe", type=_int_list, required=True, help="budgets, e.g. 4,8")
    g.add_argument("--solver", default="euler", help="the fixed-step sampler the grid is for")
    g.add_argument("--fine-steps", type=_positive_int, default=100, help="fine reference grid")
    g.add_argument("--num-samples", type=_positive_int, default=256, help="reference samples")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-ema", action="store_true", help="use raw instead of EMA weights")

    r = sub.add_parser("refine", help="train a FlowTurbo velocity refiner on a trained run")
    r.add_argument("run_dir")
    r.add_argument("--steps", type=_positive_int, default=2000)
    r.add_argument("--batch-size", type=_positive_int, default=256)
    r.add_argument("--lr", type=_finite_float, default=1e-3)
    r.add_argument("--hidden", type=_positive_int, default=64, help="refiner width")
    r.add_argument("--depth", type=_positive_int, default=1, help="refiner hidden layers")
    r.add_argument("--max-dt", type=_finite_float, default=0.12, help="largest refinement step")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    pr = sub.add_parser("prune", help="fit the data-sparse source directions of a run (SourceFM)")
    pr.add_argument("run_dir")
    pr.add_argument("--threshold", type=_finite_float, default=0.01, help="axis max-cosine rule")
    pr.add_argument(
        "--tau", type=_finite_float, default=None, help="rejection cosine (2.5/sqrt(D))"
    )

    rc = sub.add_parser("reconstruct", help="invert data and refine its noise with FlowOpt")
    rc.add_argument("run_dir")
    rc.add_argument("--target", required=True, help=".npz with array 'samples' (data space)")
    rc.add_argument("--solver", default="euler")
    rc.add_argument("--nfe", type=_positive_int, default=8)
    rc.add_argument("--iterations", type=int, default=10)
    rc.add_argument("--eta", type=_finite_float, default=None, help="default: half the bound")
    rc.add_argument("--out", required=True, help="output .npz (samples, noise, history)")

    i = sub.add_parser("info", help="summarise a run")
    i.add_argument("run_dir")
    from flowmatch.cli.autoencoder import add_parser as add_autoencoder
    from flowmatch.cli.classify import add_parser as add_classify

    add_autoencoder(sub)
    add_classify(sub, seed=_seed, positive=_int_at_least(1))
    return p


def cmd_train(args: argparse.Namespace) -> int:
    """``flowmatch train``."""
    from flowmatch import api
    from flowmatch.cli.progress import ProgressBar
    from flowmatch.config import to_dict
    from flowmatch.train.distributed import process_rank

    if args.resume:
        given = [f for f, v in (("--config", args.config), ("--set", args.set),
                                ("--data", args.data), ("--out", args.out),
                                ("--overwrite", args.overwrite)) if v]  # fmt: skip
        if given:
            raise ValueError(
                "--resume continues a run with its stored config in its own directory; "
                f"drop {'/'.join(given)}"
            )
        cfg, info = api.resume_config(args.resume, steps=args.steps)
        train_ds, test_ds = api.load_run_data(cfg, info, args.resume)
        out, notes = Path(args.resume), []
    else:
        _check_flag_conflicts(args)
        cfg, train_ds, test_ds = resolved = api.resolve_config(
            config_file=args.config, overrides=args.set, data=args.data, steps=args.steps
        )
        notes = resolved.notes
        for line in resolved.warnings:
            print(f"flowmatch train: note: {line}", file=sys.stderr)
        out = Path(args.out or os.path.join("runs", Path(cfg.data.name).stem or "run"))
    if args.dry_run:
        for note in notes:
            print(f"preset ({train_ds.meta.get('kind')} data): {note}", file=sys.stderr)
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    rank0 = process_rank() == 0  # under torchrun only rank 0 reports
    callbacks = [ProgressBar(cfg.train.steps)] if rank0 and not args.quiet else []
    if rank0:
        print(
            f"training on {train_ds.name} ({len(train_ds)} samples, shape "
            f"{train_ds.sample_shape}) -> {out}"
        )
    result = api.train_run(
        cfg,
        train_ds,
        out_dir=out,
        test_ds=test_ds,
        callbacks=callbacks,
        resume=bool(args.resume),
        overwrite=args.overwrite,
    )
    if result.wall_time == 0.0 and args.resume:
        if rank0:
            print(f"{out} is already at step {result.step} = train.steps: nothing to do")
        return 0
    if rank0:
        written = [out / "config.json", out / "metrics.jsonl", out / "checkpoints"]
        written += [p for p in [out / "samples.png"] if p.exists()]
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _check_flag_conflicts(args: argparse.Namespace) -> None:
    """A flag and a ``--set`` of the same key with different values: say so, don't pick one."""
    from flowmatch.config.schema import overrides_dict

    sets = overrides_dict(args.set)
    pairs = (
        ("--steps", args.steps, "train", "steps"),
        ("--data", args.data, "data", "name"),
    )
    for flag, value, section, key in pairs:
        table = sets.get(section)
        if value is None or not isinstance(table, dict) or key not in table:
            continue
        if table[key] != value:
            raise ValueError(
                f"{flag} {value} conflicts with --set {section}.{key}={table[key]}; give one"
            )


#: API option keys -> the ``sample``/``eval`` arguments that set them (for messages).
_SAMPLE_FLAGS = {
    "nfe": "--nfe",
    "solver": "--solver",
    "guidance": "--guidance",
    "label": "--label",
    "num_samples": "--num-samples",
}
_EVAL_FLAGS = {
    "nfe": "--nfe",
    "solvers": "--solver",
    "num_samples": "--num-samples",
    "metrics": "--metrics",
    "reference": "eval.reference",
}


def _as_cli_error(err: Exception, flags: dict[str, str], prefixes: dict[str, str]) -> Exception:
    """An API ``OptionError`` re-worded with the CLI argument that set the key."""
    from flowmatch.utils.options import OptionError

    if not isinstance(err, OptionError) or not err.key:
        return err
    key = err.key.removeprefix("sample.")
    head, _, rest = key.partition(".")
    if key in flags:
        flag = flags[key]
    elif rest and head in prefixes:
        flag = f"{prefixes[head]} {head}.{rest}"
    elif head in prefixes and not rest:
        flag = prefixes[head]
    else:
        return err
    reason = err.reason
    if flag == "--grid-values":
        reason = reason.removeprefix("values ")
    text = f"{flag} {reason[1:].lstrip()}" if reason.startswith("=") else f"{flag} {reason}"
    # The API's own spelling of the budget, in the arguments' spelling.
    return ValueError(re.sub(r"\bnfe=(\d+)", r"--nfe \1", text))


def _sampling_request(args: argparse.Namespace) -> dict[str, Any]:
    """``api.generate`` keywords from ``sample`` arguments (``--opt`` is checked by registry)."""
    from flowmatch.config.schema import ConfigError, overrides_dict

    for item in args.opt:
        if "=" not in item:
            raise ConfigError("--opt", f"expects solver.KEY=VALUE or grid.KEY=VALUE, got {item!r}")
    opts = overrides_dict([f"sample.{o}" for o in args.opt]).get("sample", {})
    opts = {k: v for k, v in opts.items() if k not in ("search", "reward")}
    unknown = sorted(set(opts) - {"solver", "grid"})
    if unknown:
        raise ConfigError("--opt", f"takes solver.KEY=VALUE or grid.KEY=VALUE, got {unknown[0]!r}")
    if args.grid_values is not None and args.grid is not None:
        raise ConfigError("--grid-values", "replaces --grid; give one of them")
    return {
        "solver": args.solver,
        "nfe": args.nfe,
        "grid": args.grid_values if args.grid_values is not None else args.grid,
        "solver_options": opts.get("solver"),
        "grid_options": opts.get("grid"),
    }


def cmd_sample(args: argparse.Namespace) -> int:
    """``flowmatch sample``."""
    import numpy as np

    from flowmatch import api
    from flowmatch.solvers.base import SAMPLERS

    out = Path(args.out)
    if out.suffix not in (".npz", ".png"):
        raise ValueError(f"--out must end in .npz or .png, got {str(out)!r}")
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a directory; give a .npz or .png file name")
    _refuse_run_files(out, args.run_dir)
    _refuse_run_files(out.with_suffix(".npz"), args.run_dir)
    run = api.load_run(args.run_dir, use_ema=False if args.no_ema else None)
    kind = args.solver or run.sample.solver.kind
    if args.nfe is not None and kind in SAMPLERS.names() and SAMPLERS[kind].adaptive:
        raise ValueError(
            f"--nfe {args.nfe} does not apply to {kind}, which is adaptive and chooses its own "
            "steps (the NFE it spent is reported); drop --nfe, or set its tolerance with "
            "--opt solver.atol=... --opt solver.rtol=..."
        )
    if args.along is not None:
        run = api.run_along(run, args.along)
    if args.prune:
        run = api.pruned_run(run)
    run = _composite(run, args)
    if args.cond is not None and (args.search is not None or args.observe is not None):
        raise ValueError(
            f"--cond does not apply with {'--search' if args.search else '--observe'} "
            "(these take --label for label-conditional runs)"
        )
    if args.search is not None:
        res = _search(run, args)
    elif args.reward is not None or args.budget is not None:
        raise ValueError("--reward and --budget need --search")
    elif args.observe is not None:
        res = _observe(run, args)
    else:
        if args.observe_method != "project":
            raise ValueError("--observe-method needs --observe")
        cond, num_samples = _condition_request(args)
        request = _sampling_request(args)
        flags = {**_SAMPLE_FLAGS, "grid": "--grid-values" if args.grid_values else "--grid"}
        for part in ("solver", "grid"):  # an option given as --opt grid.shift=2 is named so
            flags.update({k: f"--opt {part}.{k}" for k in request[f"{part}_options"] or {}})
        try:
            res = api.generate(
                run,
                num_samples,
                guidance=args.guidance,
                label=args.label,
                cond=cond,
                seed=args.seed,
                **request,
            )
        except ValueError as err:
            raise _as_cli_error(err, flags, {"solver": "--opt", "grid": "--opt"}) from None
    num_samples = args.num_samples = len(res.samples)
    out.parent.mkdir(parents=True, exist_ok=True)
    npz = out.with_suffix(".npz")
    with _atomic_output(npz) as tmp, open(tmp, "wb") as f:
        np.savez(f, **_sample_arrays(res))  # type: ignore[arg-type]
    if out.suffix == ".png":
        from flowmatch.viz import save_samples_png

        what = f"label {args.label}" if args.label is not None else ""
        title = ", ".join(
            x
            for x in (
                f"{Path(args.run_dir).name} @ step {run.step}",
                f"{res.solver} NFE {res.nfe}",
                f"guidance {res.guidance:g}" if res.guidance != 1.0 else "",
                what,
                "raw weights" if args.no_ema else "",
            )
            if x
        )
        values = None if res.cond is None or res.cond.values is None else res.cond.values[:, 0]
        with _atomic_output(out) as tmp:
            save_samples_png(res.samples, tmp, labels=res.labels, title=title, values=values)
        print(f"wrote {out} and {npz} ({num_samples} samples, NFE {res.nfe})")
    else:
        print(f"wrote {out}: samples {tuple(res.samples.shape)}, NFE {res.nfe}, {res.seconds:.2f}s")
    return 0


def _composite(run: Any, args: argparse.Namespace) -> Any:
    """``--reference/--weight``, ``--early/--switch`` and ``--control``: wrap the run's field."""
    from dataclasses import replace

    from flowmatch import api
    from flowmatch.config.schema import overrides_dict
    from flowmatch.guidance import CostGradientField, SwitchedField, WeightedFields
    from flowmatch.sampling.rewards import REWARDS

    if (args.reference is None) != (args.weight is None):
        raise ValueError("--reference and --weight go together")
    if (args.early is None) != (args.switch is None):
        raise ValueError("--early and --switch go together")
    field = run.field
    if args.reference is not None:
        field = WeightedFields(api.load_run(args.reference).field, field, args.weight)
    if args.early is not None:
        early = api.load_run(args.early)
        switch = args.switch
        if switch == "auto":
            choice = api.choose_switch_time(run, early, solver=args.solver, nfe=args.nfe)
            switch = choice.switch
            score = choice.scores.get(switch, choice.reference)
            print(
                f"note: --switch auto chose t = {switch:.2f} ({choice.early_steps} steps on "
                f"{args.early}; validation score {score:.4g} vs {choice.reference:.4g} for "
                "this run alone)",
                file=sys.stderr,
            )
        field = SwitchedField(early.field, field, switch)
    if args.control_scale is not None and args.control is None:
        raise ValueError("--control-scale needs --control REWARD")
    if args.control is not None and args.search is not None:
        raise ValueError("--control does not apply with --search (the search steers by --reward)")
    if args.control is not None:
        opts = overrides_dict([f"sample.{o}" for o in args.opt]).get("sample", {})
        reward = REWARDS.build(REWARDS.config(args.control, **opts.pop("reward", {})))
        args.opt = [o for o in args.opt if not o.startswith("reward.")]

        def cost(x1: Any, t: Any) -> Any:
            return -reward(run.to_data_space(x1))

        scale = 1.0 if args.control_scale is None else args.control_scale
        field = CostGradientField(field, run.path, cost, scale=scale)
    return replace(run, field=field) if field is not run.field else run


def _search(run: Any, args: argparse.Namespace) -> Any:
    """``sample --search NAME --reward NAME --budget NFE``."""
    from flowmatch import api
    from flowmatch.config.schema import overrides_dict

    if args.observe is not None or args.solver is not None or args.nfe is not None:
        raise ValueError(
            "--search chooses its own sampler and steps; drop --observe/--solver/--nfe"
        )
    if args.budget is None:
        raise ValueError("--search needs --budget NFE (evaluations per sample)")
    opts = overrides_dict([f"sample.{o}" for o in args.opt]).get("sample", {})
    extra = sorted(set(opts) - {"search", "reward"})
    if extra:
        raise ValueError(
            f"--opt {extra[0]}.* does not apply with --search (use search.* or reward.*)"
        )
    res = api.search(
        run,
        args.num_samples or 1000,
        search=args.search,
        reward=args.reward or "distance",
        budget=args.budget,
        search_options=opts.get("search"),
        reward_options=opts.get("reward"),
        guidance=args.guidance,
        label=args.label,
        seed=args.seed,
    )
    print(f"{args.search}: mean reward {float(res.rewards.mean()):.4f} at <= {res.nfe} NFE/sample")
    return SimpleNamespace(
        samples=res.samples,
        labels=res.labels,
        rewards=res.rewards,
        nfe=res.nfe,
        seconds=res.seconds,
        solver=args.search,
        guidance=args.guidance or 1.0,
        cond=None,
    )


def _observe(run: Any, args: argparse.Namespace) -> Any:
    """``sample --observe``: one or more samples per observation row."""
    from flowmatch import api

    obs = api.load_observation(args.observe)
    rows = len(obs["values"])
    n = args.num_samples or rows
    if n % rows:
        raise ValueError(f"--num-samples {n} must be a multiple of the {rows} observations")
    if args.guidance is not None and args.guidance != 1.0:
        raise ValueError("--guidance does not apply with --observe (samples use one condition)")
    req = _sampling_request(args)
    if req["grid_options"]:
        raise ValueError("--opt grid.* does not apply with --observe; pass --grid-values")
    values = obs.pop("values")
    return api.observe(
        run,
        values,
        samples_per_observation=n // rows,
        solver=req["solver"],
        nfe=req["nfe"],
        grid=req["grid"],
        method=args.observe_method,
        label=args.label,
        seed=args.seed,
        solver_options=req["solver_options"],
        **obs,
    )


def _sample_arrays(res: Any) -> dict[str, Any]:
    """What ``sample`` saves: the samples and, per sample, its labels and conditions."""
    arrays: dict[str, Any] = {"samples": res.samples.numpy()}
    if getattr(res, "rewards", None) is not None:  # inference-time search
        arrays["rewards"] = res.rewards.numpy()
    if res.labels is not None:
        arrays["labels"] = res.labels.numpy()
    if res.cond is not None:  # each sample with its condition, in the file's units
        for key, part in (("cond", res.cond.values), ("context", res.cond.context)):
            if part is not None:
                arrays[key] = part.numpy()
    return arrays


def _condition_request(args: argparse.Namespace) -> tuple[Any, int]:
    """The ``--cond`` file as a ``Condition`` (or ``None``) and the number of samples."""
    if args.cond is None:
        return None, args.num_samples or 1000
    from flowmatch.data.files import read_condition_file

    cond = read_condition_file(args.cond)
    rows = cond.batch_size or 0
    return cond, args.num_samples or (rows if rows > 1 else 1000)


@contextlib.contextmanager
def _atomic_output(path: Path) -> Iterator[Path]:
    """A temporary sibling to write ``path`` into, renamed onto it when the block succeeds."""
    from flowmatch.utils.io import TMP_PREFIX, write_error

    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise write_error(path, err) from None
    finally:
        tmp.unlink(missing_ok=True)


def _refuse_run_files(out: Path, run_dir: str) -> None:
    """An output must not replace what the run is made of (config, metrics, checkpoints)."""
    run = Path(run_dir).resolve()
    target = out.resolve()
    protected = [run / "config.json", run / "metrics.jsonl", run / ".lock"]
    if target in protected or run / "checkpoints" in target.parents:
        raise ValueError(f"--out {str(out)!r} would overwrite a file of run {run_dir!r}")


def cmd_eval(args: argparse.Namespace) -> int:
    """``flowmatch eval``."""
    from flowmatch import api
    from flowmatch.cli.report import print_eval, save_eval_plot
    from flowmatch.utils.io import atomic_write_text

    out = Path(args.out) if args.out else Path(args.run_dir) / "eval.json"
    if out.suffix != ".json":
        raise ValueError(
            f"--out must end in .json (the plot is written beside it as .png), got {str(out)!r}"
        )
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a directory; give a .json file name")
    _refuse_run_files(out, args.run_dir)
    run = api.load_run(args.run_dir, use_ema=False if args.no_ema else None)
    _check_metric_names(args.metrics)
    train_ds, test_ds = api.load_run_data(run.config, run.info, args.run_dir)
    try:
        report = api.evaluate(
            run,
            test_ds,
            nfe=args.nfe,
            solvers=args.solver,
            num_samples=args.num_samples,
            seed=args.seed,
            reference=None if args.no_reference else "default",
            train_ds=train_ds,
            metrics=args.metrics,
        )
    except ValueError as err:
        raise _as_cli_error(err, _EVAL_FLAGS, {}) from None
    ec = run.config.eval
    _eval_notes(
        ec.nfe if args.nfe is None else args.nfe,
        ec.solvers if args.solver is None else args.solver,
        "--num-samples" if args.num_samples is not None else "eval.num_samples",
        ec.num_samples if args.num_samples is None else args.num_samples,
        len(test_ds),
    )
    print_eval(run, report)
    if out.parent != Path(""):
        out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=2))
    written = [str(out), *save_eval_plot(run, report, out.with_suffix(".png"))]
    print("wrote " + ", ".join(written))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    """``flowmatch distill``."""
    from flowmatch.api.distill import distill
    from flowmatch.cli.progress import ProgressBar
    from flowmatch.train.distributed import process_rank

    if args.resume:
        given = [f for f, v in (("--set", args.set), ("--overwrite", args.overwrite)) if v]
        if given:
            raise ValueError(
                "--resume continues a distillation with its stored config in --out; "
                f"drop {'/'.join(given)}"
            )
    rank0 = process_rank() == 0
    steps = args.steps
    if steps is None and not args.resume:
        from flowmatch.api.distill import load_teacher, student_config

        steps = student_config(load_teacher(args.teacher_run).run.config, args.method, args.set)
        steps = steps.train.steps
    callbacks = [ProgressBar(steps)] if rank0 and not args.quiet and steps else []
    if rank0:
        print(f"distilling {args.teacher_run} ({args.method}) -> {args.out}")
    result = distill(
        args.teacher_run,
        args.method,
        args.out,
        overrides=args.set,
        steps=args.steps,
        callbacks=callbacks,
        resume=args.resume,
        overwrite=args.overwrite,
        log=print if rank0 else (lambda _msg: None),
    )
    if result.wall_time == 0.0 and args.resume:
        return 0  # already at train.steps (distill said so)
    if rank0:
        print(f"wrote {args.out} (config.json records the teacher; sample/eval it like any run)")
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    """``flowmatch grid``: compute and store a run's BOSS grids."""
    from flowmatch import api

    run = api.load_run(args.run_dir, use_ema=False if args.no_ema else None)
    grids = api.compute_grids(
        run,
        nfe=args.nfe,
        solver=args.solver,
        method=args.method,
        fine_steps=args.fine_steps,
        num_samples=args.num_samples,
        seed=args.seed,
    )
    for nfe, values in grids.items():
        print(f"{args.method} {args.solver} NFE {nfe}: " + ", ".join(f"{v:.3f}" for v in values))
    print(f"wrote {Path(args.run_dir) / 'grids.json'}; sample with --grid {args.method}")
    return 0


def cmd_refine(args: argparse.Namespace) -> int:
    """``flowmatch refine``: train a FlowTurbo refiner into RUN/refiner."""
    from flowmatch import api
    from flowmatch.cli.progress import ProgressBar

    out = api.refine(
        args.run_dir,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        hidden=args.hidden,
        depth=args.depth,
        max_dt=args.max_dt,
        seed=args.seed,
        callbacks=[] if args.quiet else [ProgressBar(args.steps)],
    )
    print(f"wrote {out}; sample with --solver flowturbo")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """``flowmatch prune``: store the run's data-sparse axes in RUN/pruning.json."""
    from flowmatch import api

    run = api.load_run(args.run_dir)
    info = api.fit_pruning(run, threshold=args.threshold, tau=args.tau)
    print(
        f"{len(info['axes'])} of {info['num_candidates']} PCA axes are data-sparse "
        f"(threshold {args.threshold}); tau {info['tau']:.4f}; sample with --prune"
    )
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    """``flowmatch reconstruct``: naive inversion, then FlowOpt iterations."""
    import numpy as np
    import torch

    from flowmatch import api

    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must end in .npz, got {str(out)!r}")
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a directory; give a .npz file name")
    _refuse_run_files(out, args.run_dir)
    run = api.load_run(args.run_dir)
    with np.load(args.target) as data:
        if "samples" not in data.files:
            raise ValueError(f"{args.target!r} must hold an array 'samples', got {data.files}")
        targets = torch.as_tensor(data["samples"], dtype=torch.float32)
    res = api.reconstruct(
        run, targets, solver=args.solver, nfe=args.nfe, iterations=args.iterations, eta=args.eta
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_output(out) as tmp, open(tmp, "wb") as f:
        np.savez(
            f, samples=res.samples.numpy(), noise=res.noise.numpy(), history=np.array(res.history)
        )
    print(
        f"reconstruction error {res.history[0]:.4g} (naive inversion) -> {res.history[-1]:.4g} "
        f"after {args.iterations} FlowOpt steps (eta {res.eta:.3g}, {res.nfe} NFE); wrote {args.out}"
    )
    return 0


def _check_metric_names(names: Sequence[str] | None) -> None:
    from flowmatch.metrics.registry import METRICS

    for name in names or ():
        if name not in METRICS.names():
            raise ValueError(f"--metrics: unknown metric {name!r}; choose from {METRICS.names()}")


def _eval_notes(
    nfe: Sequence[int], solvers: Sequence[str], source: str, n: int, held_out: int
) -> None:
    """One stderr line per eval request that is honoured differently from how it reads."""
    from flowmatch.solvers.base import SAMPLERS

    for name in solvers:
        if name not in SAMPLERS.names():
            continue  # refused with the valid names by evaluate()
        stages = SAMPLERS[name].stages
        skipped = [k for k in nfe if k % stages]
        if skipped and len(skipped) < len(nfe):
            print(
                f"note: {name} skips --nfe {','.join(map(str, skipped))} (not a multiple of its "
                f"{stages} evaluations per step)",
                file=sys.stderr,
            )
    if n > held_out:
        print(
            f"note: {source} {n} is more than the {held_out} held-out samples; using {held_out}",
            file=sys.stderr,
        )


def cmd_info(args: argparse.Namespace) -> int:
    """``flowmatch info``."""
    from flowmatch.cli.report import print_info

    print_info(Path(args.run_dir))
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    """``flowmatch classify`` (see :mod:`flowmatch.cli.classify`)."""
    from flowmatch.cli.classify import cmd_classify as run

    return run(args)


def cmd_autoencoder(args: argparse.Namespace) -> int:
    """``flowmatch autoencoder train`` (see :mod:`flowmatch.cli.autoencoder`)."""
    from flowmatch.cli.autoencoder import cmd_autoencoder as run

    return run(args)


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "eval": cmd_eval,
    "distill": cmd_distill,
    "grid": cmd_grid,
    "refine": cmd_refine,
    "prune": cmd_prune,
    "reconstruct": cmd_reconstruct,
    "info": cmd_info,
    "autoencoder": cmd_autoencoder,
    "classify": cmd_classify,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, and turn errors into a one-line message with exit code 2."""
    if hasattr(signal, "SIGPIPE"):  # `flowmatch ... | head` ends quietly, as Unix tools do
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argument errors (one line, see _Parser) and --help
        return exit_.code if isinstance(exit_.code, int) else EXIT_ERROR
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads or 1)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (
        ValueError,
        TypeError,
        FileNotFoundError,
        FloatingPointError,
        ImportError,
        RuntimeError,
        OSError,
    ) as e:
        if args.debug:
            raise
        print(f"flowmatch {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - a bug: still one line, the traceback on --debug
        if args.debug:
            raise
        print(
            f"flowmatch {args.command}: internal error: {type(e).__name__}: {_one_line(e)} "
            "(rerun with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _one_line(err: BaseException) -> str:
    """The error's message on one line (library messages are one line; PyTorch's may not be)."""
    text = " ".join(part.strip() for part in str(err).splitlines() if part.strip())
    return text or type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
