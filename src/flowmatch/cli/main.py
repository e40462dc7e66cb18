"""``flowmatch`` command line: train, sample, eval, info (thin over ``flowmatch.api``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from flowmatch.config.build import SOLVER_NAMES

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
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _solver_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    for n in names:
        if n not in SOLVER_NAMES:
            raise argparse.ArgumentTypeError(
                f"unknown solver {n!r}; choose from {list(SOLVER_NAMES)}"
            )
    return names


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``flowmatch`` command."""
    p = argparse.ArgumentParser(
        prog="flowmatch", description="Train, sample and evaluate flow-matching models."
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads for torch (default: torch's choice; 1 is often fastest for small models)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (default: 2-D checkerboard)")
    t.add_argument("--config", help="TOML config file")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.lr=3e-4 (repeatable)",
    )
    t.add_argument("--data", help="built-in data set name or path (.npy/.npz/.csv/image folder)")
    t.add_argument("--steps", type=_positive_int, help="total training steps")
    t.add_argument("--out", default=None, help="run directory (default runs/<data>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint")
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run_dir")
    s.add_argument("--num-samples", type=_positive_int, default=1000)
    s.add_argument(
        "--solver", choices=SOLVER_NAMES, default=None, help="default: the run's sample.solver"
    )
    s.add_argument(
        "--nfe", type=_positive_int, default=None, help="function evaluations per sample"
    )
    s.add_argument("--grid", choices=("uniform", "shifted"), default=None)
    s.add_argument("--shift", type=float, default=None)
    s.add_argument(
        "--grid-values",
        type=_float_list,
        default=None,
        help="a custom time grid, e.g. 0,0.5,0.8,1 (replaces --grid; --nfe defaults to match)",
    )
    s.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
    s.add_argument("--label", type=int, default=None, help="class of all samples")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-ema", action="store_true", help="use raw instead of EMA weights")
    s.add_argument("--out", required=True, help="output .npz (array 'samples') or .png")

    e = sub.add_parser("eval", help="metrics against held-out data per solver and NFE")
    e.add_argument("run_dir")
    e.add_argument("--nfe", type=_int_list, default=None, help="e.g. 1,2,4,8,16,32")
    e.add_argument("--solver", type=_solver_list, default=None, help="e.g. euler,midpoint")
    e.add_argument("--num-samples", type=_positive_int, default=None)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--no-dopri5", action="store_true", help="skip the adaptive reference row")
    e.add_argument("--out", default=None, help="JSON output (default RUN_DIR/eval.json)")

    i = sub.add_parser("info", help="summarise a run")
    i.add_argument("run_dir")
    return p


def cmd_train(args: argparse.Namespace) -> int:
    """``flowmatch train``."""
    from flowmatch import api
    from flowmatch.cli.progress import ProgressBar
    from flowmatch.config import to_dict

    if args.resume:
        if args.config or args.set or args.data:
            raise ValueError(
                "--resume continues a run with its stored config; drop --config/--set/--data"
            )
        cfg, _ = api.resume_config(args.resume, steps=args.steps)
        train_ds, test_ds = api.load_data(cfg.data)
        out = Path(args.resume)
    else:
        cfg, train_ds, test_ds = api.resolve_config(
            config_file=args.config, overrides=args.set, data=args.data, steps=args.steps
        )
        out = Path(args.out or os.path.join("runs", Path(cfg.data.name).stem or "run"))
    if args.dry_run:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    callbacks = [ProgressBar(cfg.train.steps)] if rank0 and not args.quiet else []
    if rank0:
        print(
            f"training on {train_ds.name} ({len(train_ds)} samples, shape {train_ds.sample_shape}) -> {out}"
        )
    api.train_run(
        cfg, train_ds, out_dir=out, test_ds=test_ds, callbacks=callbacks, resume=bool(args.resume)
    )
    if rank0:
        written = [out / "config.json", out / "metrics.jsonl", out / "checkpoints"]
        written += [p for p in [out / "samples.png"] if p.exists()]
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """``flowmatch sample``."""
    import numpy as np

    from flowmatch import api

    run = api.load_run(args.run_dir, use_ema=not args.no_ema)
    sc = run.config.sample
    out = Path(args.out)
    if out.suffix not in (".npz", ".png"):
        raise ValueError(f"--out must end in .npz or .png, got {str(out)!r}")
    res = api.generate(
        run,
        args.num_samples,
        solver=args.solver or sc.solver,
        nfe=args.nfe or _default_nfe(args, sc),
        grid=args.grid or sc.grid,
        shift=args.shift if args.shift is not None else sc.shift,
        guidance=args.guidance,
        label=args.label,
        seed=args.seed,
        atol=sc.atol,
        rtol=sc.rtol,
        grid_values=args.grid_values,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        from flowmatch.viz import save_samples_png

        save_samples_png(res.samples, out, labels=res.labels, title=f"NFE {res.nfe}")
        np.savez(out.with_suffix(".npz"), **_arrays(res))
        print(
            f"wrote {out} and {out.with_suffix('.npz')} ({args.num_samples} samples, NFE {res.nfe})"
        )
    else:
        np.savez(out, **_arrays(res))
        print(f"wrote {out}: samples {tuple(res.samples.shape)}, NFE {res.nfe}, {res.seconds:.2f}s")
    return 0


def _default_nfe(args: argparse.Namespace, sc) -> int:  # noqa: ANN001
    """The run's sample.nfe, or the NFE that matches a custom grid."""
    if args.grid_values is None:
        return sc.nfe
    from flowmatch.config.build import build_solver
    from flowmatch.solvers.base import ODESolver

    slv = build_solver(args.solver or sc.solver)
    stages = slv.stages if isinstance(slv, ODESolver) else 1
    return max(1, (len(args.grid_values) - 1) * stages)


def _arrays(res) -> dict:  # noqa: ANN001
    arrays = {"samples": res.samples.numpy()}
    if res.labels is not None:
        arrays["labels"] = res.labels.numpy()
    return arrays


def cmd_eval(args: argparse.Namespace) -> int:
    """``flowmatch eval``."""
    from flowmatch import api
    from flowmatch.viz import save_quality_plot

    run = api.load_run(args.run_dir)
    ec = run.config.eval
    train_ds, test_ds = api.load_data(run.config.data)
    report = api.evaluate(
        run,
        test_ds,
        nfe=args.nfe or list(ec.nfe),
        solvers=args.solver or list(ec.solvers),
        num_samples=args.num_samples or ec.num_samples,
        seed=args.seed,
        dopri5=ec.dopri5 and not args.no_dopri5,
        train_ds=train_ds,
    )
    metrics = (
        [k for k in report["rows"][0] if k not in ("solver", "nfe", "seconds")]
        if report["rows"]
        else []
    )
    print(
        f"{run.info['data']['name']} @ step {run.step}, {report['num_samples']} samples vs held-out"
    )
    header = ["solver", "nfe", *metrics, "seconds"]
    print("  ".join(f"{h:>10}" for h in header))
    for r in report["rows"]:
        print("  ".join(f"{_fmt(r[h]):>10}" for h in header))
    if report["floor"]:
        print(
            "  ".join(
                [
                    f"{'train/test':>10}",
                    f"{'-':>10}",
                    *(f"{_fmt(report['floor'].get(m, '-')):>10}" for m in metrics),
                    f"{'-':>10}",
                ]
            )
        )
    if "nll" in report:
        print(
            f"held-out NLL {report['nll']:.4f} nats/sample (dopri5, exact divergence); "
            f"straightness {report['straightness']:.4g}"
        )
    out = Path(args.out) if args.out else Path(args.run_dir) / "eval.json"
    out.write_text(json.dumps(report, indent=2))
    written = [str(out)]
    if metrics:
        try:
            png = save_quality_plot(
                report["rows"],
                out.with_suffix(".png"),
                metric=metrics[0],
                title=f"{run.info['data']['name']}: {metrics[0]} vs NFE",
                floor=report["floor"].get(metrics[0]),
            )
            written.append(str(png))
        except ImportError:
            pass
    print("wrote " + ", ".join(written))
    return 0


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def cmd_info(args: argparse.Namespace) -> int:
    """``flowmatch info``."""
    from flowmatch import api

    info = api.read_run_info(args.run_dir)
    cfg, data = info["config"], info["data"]
    print(f"run:        {args.run_dir}")
    print(
        f"data:       {data['name']} ({data['kind']}), {data['num_train']} train samples of shape {tuple(data['sample_shape'])}"
        + (f", {data['num_classes']} classes" if data["labelled"] else "")
    )
    print(
        f"model:      {cfg['model']['kind']}, path {cfg['path']['schedule']} ({cfg['path']['prediction']}-prediction), "
        f"coupling {cfg['coupling']['kind']}, time {cfg['time']['sampler']}"
    )
    from flowmatch.train.checkpoint import list_checkpoints

    ckpts = [p.name for p in list_checkpoints(args.run_dir)]
    print(f"checkpoints: {', '.join(ckpts) if ckpts else 'none'}")
    mfile = Path(args.run_dir) / "metrics.jsonl"
    if mfile.is_file():
        lines = [json.loads(x) for x in mfile.read_text().splitlines() if x.strip()]
        logs = [x for x in lines if "loss" in x]
        if logs:
            last = logs[-1]
            print(
                f"trained:    step {last['step']}/{cfg['train']['steps']}, loss {last['loss']:.4f}, "
                f"{last.get('steps_per_sec', float('nan')):.1f} steps/s"
            )
    try:
        run = api.load_run(args.run_dir)
        params = sum(p.numel() for p in run.model.parameters())
        print(f"parameters: {params:,} (loaded {run.checkpoint.name}, step {run.step})")
    except FileNotFoundError as e:
        print(f"weights:    {e}")
    ev = Path(args.run_dir) / "eval.json"
    if ev.is_file():
        print(f"eval:       {ev}")
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "info": cmd_info}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, and turn errors into a one-line message with exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
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
