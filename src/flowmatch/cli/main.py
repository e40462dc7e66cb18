"""``flowmatch`` command line: train, sample, eval, info (thin over ``flowmatch.api``).

Choices and help text come from the registries (``flowmatch.registry``): a plugin's sampler or
metric shows up here without any edit. Errors exit with status 2 and one line naming the
problem (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_ERROR = 2


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
    return values


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


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

    p = argparse.ArgumentParser(
        prog="flowmatch", description="Train, sample and evaluate flow-matching models."
    )
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
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    solvers = SAMPLERS.names()
    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run_dir")
    s.add_argument(
        "--num-samples",
        type=_positive_int,
        default=None,
        help="default: the rows of --cond (when it has more than one), else 1000",
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
        help="an option of the solver or grid, e.g. --opt solver.atol=1e-4 --opt grid.shift=2",
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
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-ema", action="store_true", help="use raw instead of EMA weights")
    s.add_argument("--out", required=True, help="output .npz (array 'samples') or .png")

    e = sub.add_parser("eval", help="metrics against held-out data per solver and NFE")
    e.add_argument("run_dir")
    e.add_argument("--nfe", type=_int_list, default=None, help="e.g. 1,2,4,8,16,32")
    e.add_argument(
        "--solver", type=_name_list, default=None, help=f"e.g. euler,midpoint (from {solvers})"
    )
    e.add_argument("--num-samples", type=_positive_int, default=None)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--metrics", type=_name_list, default=None, help="metric names (default: all)")
    e.add_argument("--no-reference", action="store_true", help="skip the adaptive reference row")
    e.add_argument("--no-ema", action="store_true", help="use raw instead of EMA weights")
    e.add_argument("--out", default=None, help="JSON output (default RUN_DIR/eval.json)")

    i = sub.add_parser("info", help="summarise a run")
    i.add_argument("run_dir")
    from flowmatch.cli.autoencoder import add_parser as add_autoencoder

    add_autoencoder(sub)
    return p


def cmd_train(args: argparse.Namespace) -> int:
    """``flowmatch train``."""
    from flowmatch import api
    from flowmatch.cli.progress import ProgressBar
    from flowmatch.config import to_dict
    from flowmatch.train.distributed import process_rank

    if args.resume:
        if args.config or args.set or args.data or args.out:
            raise ValueError(
                "--resume continues a run with its stored config in its own directory; "
                "drop --config/--set/--data/--out"
            )
        cfg, _ = api.resume_config(args.resume, steps=args.steps)
        train_ds, test_ds = api.load_data(cfg.data)
        out, notes = Path(args.resume), []
    else:
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
    api.train_run(
        cfg, train_ds, out_dir=out, test_ds=test_ds, callbacks=callbacks, resume=bool(args.resume)
    )
    if rank0:
        written = [out / "config.json", out / "metrics.jsonl", out / "checkpoints"]
        written += [p for p in [out / "samples.png"] if p.exists()]
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _sampling_request(args: argparse.Namespace) -> dict[str, Any]:
    """``api.generate`` keywords from ``sample`` arguments (``--opt`` is checked by registry)."""
    from flowmatch.config.schema import ConfigError, overrides_dict

    opts = overrides_dict([f"sample.{o}" for o in args.opt]).get("sample", {})
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

    out = Path(args.out)
    if out.suffix not in (".npz", ".png"):
        raise ValueError(f"--out must end in .npz or .png, got {str(out)!r}")
    run = api.load_run(args.run_dir, use_ema=False if args.no_ema else None)
    cond, num_samples = _condition_request(args)
    res = api.generate(
        run,
        num_samples,
        guidance=args.guidance,
        label=args.label,
        cond=cond,
        seed=args.seed,
        **_sampling_request(args),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    npz = out.with_suffix(".npz")
    np.savez(npz, **_sample_arrays(res))  # type: ignore[arg-type]
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
        save_samples_png(res.samples, out, labels=res.labels, title=title, values=values)
        print(f"wrote {out} and {npz} ({num_samples} samples, NFE {res.nfe})")
    else:
        print(f"wrote {out}: samples {tuple(res.samples.shape)}, NFE {res.nfe}, {res.seconds:.2f}s")
    return 0


def _sample_arrays(res: Any) -> dict[str, Any]:
    """What ``sample`` saves: the samples and, per sample, its labels and conditions."""
    arrays: dict[str, Any] = {"samples": res.samples.numpy()}
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


def cmd_eval(args: argparse.Namespace) -> int:
    """``flowmatch eval``."""
    from flowmatch import api
    from flowmatch.cli.report import print_eval, save_eval_plot

    run = api.load_run(args.run_dir, use_ema=False if args.no_ema else None)
    train_ds, test_ds = api.load_data(run.config.data)
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
    print_eval(run, report)
    out = Path(args.out) if args.out else Path(args.run_dir) / "eval.json"
    out.write_text(json.dumps(report, indent=2))
    written = [str(out), *save_eval_plot(run, report, out.with_suffix(".png"))]
    print("wrote " + ", ".join(written))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``flowmatch info``."""
    from flowmatch.cli.report import print_info

    print_info(Path(args.run_dir))
    return 0


def cmd_autoencoder(args: argparse.Namespace) -> int:
    """``flowmatch autoencoder train`` (see :mod:`flowmatch.cli.autoencoder`)."""
    from flowmatch.cli.autoencoder import cmd_autoencoder as run

    return run(args)


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "eval": cmd_eval,
    "info": cmd_info,
    "autoencoder": cmd_autoencoder,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, and turn errors into a one-line message with exit code 2."""
    if hasattr(signal, "SIGPIPE"):  # `flowmatch ... | head` ends quietly, as Unix tools do
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = build_parser()
    args = parser.parse_args(argv)
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
        print(f"flowmatch {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
