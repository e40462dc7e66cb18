"""What the CLI prints and plots about runs: the eval table and plot, ``flowmatch info``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_FIXED_COLUMNS = ("solver", "nfe", "seconds")


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def metric_names(report: dict[str, Any]) -> list[str]:
    """The metric columns of an eval report, in row order."""
    rows = report["rows"]
    return [k for k in rows[0] if k not in _FIXED_COLUMNS] if rows else []


def print_eval(run: Any, report: dict[str, Any]) -> None:
    """The eval table: one row per (solver, NFE), the data floor, and the flow metrics."""
    metrics = metric_names(report)
    space = "standardised (model) space" if report.get("space") == "model" else "data space"
    print(
        f"{run.info['data']['name']} @ step {run.step}: {report['num_samples']} samples vs a "
        f"random held-out subset, metrics in {space}"
    )
    header = ["solver", "nfe", *metrics, "seconds"]
    print("  ".join(f"{h:>10}" for h in header))
    for r in report["rows"]:
        print("  ".join(f"{_fmt(r.get(h, '-')):>10}" for h in header))
    if report["floor"]:
        cells = [f"{'train/test':>10}", f"{'-':>10}"]
        cells += [f"{_fmt(report['floor'].get(m, '-')):>10}" for m in metrics]
        print("  ".join([*cells, f"{'-':>10}"]))
        print("(train/test: the same metrics between real training and held-out data: the floor)")
    if "latent_floor" in report:
        cells = [f"{'decoded':>10}", f"{'-':>10}"]
        cells += [f"{_fmt(report['latent_floor'].get(m, '-')):>10}" for m in metrics]
        print("  ".join([*cells, f"{'-':>10}"]))
        print(
            "(decoded: the train/test floor through decode(encode(.)): what the latent space allows)"
        )
    if "nll" in report:
        print(
            f"held-out NLL {report['nll']:.4f} nats/sample (dopri5, exact divergence); "
            f"straightness {report['straightness']:.4g}"
        )
    if "conditional" in report:
        print_conditional(report["conditional"])


def print_conditional(section: dict[str, Any]) -> None:
    """The conditional W2 per condition bin: one row per bin, one column per eval row."""
    # One column per solver: its largest budget (the full table is in the JSON report).
    best: dict[str, dict[str, Any]] = {}
    for r in section["rows"]:
        if r["solver"] not in best or r["nfe"] > best[r["solver"]]["nfe"]:
            best[r["solver"]] = r
    rows = list(best.values())
    edges = section["edges"]
    print(
        f"conditional W2 per bin of {section['condition']} ({section['bins']} quantile bins of "
        "the held-out conditions; samples generated with those conditions; cond_w2 = mean)"
    )
    cols = [f"{r['solver']}/{r['nfe']}" for r in rows]
    floor = section.get("floor")
    header = ["bin", "n", *cols, *(["train/test"] if floor is not None else [])]
    print("  ".join(f"{h:>14}" for h in header))
    for k in range(section["bins"]):
        lo, hi = edges[k], edges[k + 1]
        span = f"[{'-inf' if lo is None else f'{lo:.3g}'},{'inf' if hi is None else f'{hi:.3g}'})"
        cells = [span, section["counts"][k], *(r["per_bin"][k] for r in rows)]
        if floor is not None:
            cells.append(floor[k])
        print("  ".join(f"{_fmt('-' if c is None else c):>14}" for c in cells))


def save_eval_plot(run: Any, report: dict[str, Any], path: Path) -> list[str]:
    """One panel per metric against NFE; returns the written path (none without matplotlib)."""
    metrics = metric_names(report)
    if not metrics:
        return []
    try:
        from flowmatch.viz import save_quality_plot
    except ImportError:  # pragma: no cover - matplotlib is an optional extra
        return []
    try:
        png = save_quality_plot(
            report["rows"],
            path,
            metrics=metrics,
            title=f"{run.info['data']['name']} @ step {run.step}",
            floor=report["floor"],
        )
    except ImportError:  # pragma: no cover
        return []
    return [str(png)]


def print_info(run_dir: Path) -> None:
    """``flowmatch info``: data, the network built, path, coupling, checkpoints, progress."""
    from flowmatch import api
    from flowmatch.train.checkpoint import list_checkpoints

    info = api.read_run_info(run_dir)
    cfg, data = api.stored_config(info), info["data"]
    print(f"run:        {run_dir}")
    print(
        f"data:       {data['name']} ({data['kind']}), {data['num_train']} train samples of "
        f"shape {tuple(data['sample_shape'])}"
        + (f", {data['num_classes']} classes" if data["labelled"] else "")
        + _conditions(data)
        + (
            f", context of shape {tuple(data['context_shape'])}"
            if data.get("context_shape")
            else ""
        )
    )
    print(
        f"model:      {cfg.model.kind} ({_options(cfg.model)}), path {cfg.path.kind} "
        f"({cfg.path.prediction}-prediction), coupling {cfg.coupling.kind}, time {cfg.time.kind}, "
        f"source {cfg.source.kind}, objective {cfg.objective.kind}"
    )
    ckpts = [p.name for p in list_checkpoints(run_dir)]
    print(f"checkpoints: {', '.join(ckpts) if ckpts else 'none yet'}")
    mfile = run_dir / "metrics.jsonl"
    if mfile.is_file():
        lines = [json.loads(x) for x in mfile.read_text().splitlines() if x.strip()]
        logs = [x for x in lines if "loss" in x]
        if logs:
            last = logs[-1]
            print(
                f"trained:    step {last['step']}/{cfg.train.steps}, loss {last['loss']:.4f}, "
                f"{last.get('steps_per_sec', float('nan')):.1f} steps/s"
            )
    if ckpts:
        run = api.load_run(run_dir)
        params = sum(p.numel() for m in run.modules.values() for p in m.parameters())
        print(f"parameters: {params:,} (loaded {run.checkpoint.name}, step {run.step})")  # type: ignore[union-attr]
    ev = run_dir / "eval.json"
    if ev.is_file():
        print(f"eval:       {ev}")


def _conditions(data: dict[str, Any]) -> str:
    """``", condition values: 1 (angle)"`` for a run on values (empty otherwise)."""
    if not data.get("values_dim"):
        return ""
    names = data.get("cond_names")
    return f", condition values: {data['values_dim']}" + (f" ({', '.join(names)})" if names else "")


def _options(cfg: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.options().items())
