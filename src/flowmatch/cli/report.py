"""What the CLI prints and plots about runs: the eval table and plot, ``flowmatch info``."""

from __future__ import annotations

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
    for note in report.get("notes", []):
        print(f"note: {note}")
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
    """``flowmatch info``: data, the network built, path, coupling, checkpoints, progress.

    Everything is read and checked before anything is printed: a malformed ``config.json``,
    a checkpoint that does not verify (a missing ``state.json``, a directory where a weights
    file should be, a foreign or edited checkpoint) or a malformed ``metrics.jsonl`` raise
    one error. A torn last metrics line (what a crash leaves) is reported, not an error.
    """
    from flowmatch import api
    from flowmatch.train.checkpoint import (
        CheckpointError,
        latest_checkpoint,
        list_checkpoints,
        load_checkpoint,
    )
    from flowmatch.train.records import read_metrics

    info = api.read_run_info(run_dir)
    cfg, data = api.stored_config(info, where=str(run_dir / "config.json")), info["data"]
    paths = list_checkpoints(run_dir)
    latest = latest_checkpoint(run_dir)
    for path in list(paths):  # every checkpoint verifies (sizes, sha256, step, run id)
        try:
            load_checkpoint(path, run_id=info.get("run_id"))
        except (FileNotFoundError, CheckpointError) as err:
            if not path.exists():
                paths.remove(path)  # rotated out by a run training right now: not an error
                continue
            if latest is None or path == latest or not isinstance(err, FileNotFoundError):
                raise
            # Older flowmatch versions deleted old checkpoints in place: a kill left them half.
            raise FileNotFoundError(
                f"{err}; {path.name} is older than the latest checkpoint {latest.name}: if an "
                "interrupted clean-up of an older flowmatch left it half-deleted, delete it"
            ) from None
    log = read_metrics(run_dir / "metrics.jsonl")
    run = api.load_run(run_dir) if paths else None
    context = data.get("context_shape")
    lines = [
        f"run:        {run_dir}" + (f" (id {info['run_id']})" if info.get("run_id") else ""),
        f"data:       {data['name']} ({data.get('kind', '')}), {data.get('num_train', '?')} "
        f"train samples of shape {tuple(data['sample_shape'])}"
        + (f", {data['num_classes']} classes" if data["labelled"] else "")
        + _conditions(data)
        + (f", context of shape {tuple(context)}" if context else ""),
        f"model:      {cfg.model.kind} ({_options(cfg.model)}), path {cfg.path.kind} "
        f"({cfg.path.prediction}-prediction), coupling {cfg.coupling.kind}, time {cfg.time.kind}, "
        f"source {cfg.source.kind}, objective {cfg.objective.kind}",
    ]
    teacher = info.get("teacher")
    if teacher:
        lines.append(
            f"teacher:    {teacher['run']} ({teacher['checkpoint']}, {teacher['weights']} "
            f"weights, sha256 {teacher['sha256'][:16]}...)"
        )
    lines.append(f"checkpoints: {', '.join(p.name for p in paths) if paths else 'none yet'}")
    logs = [x for x in log.records if "loss" in x]
    if logs:
        last = logs[-1]
        loss, speed = last.get("loss"), last.get("steps_per_sec")
        lines.append(
            f"trained:    step {last['step']}/{cfg.train.steps}, loss {_num(loss, '.4f')}, "
            f"{_num(speed, '.1f')} steps/s"
        )
    if log.torn is not None:
        lines.append(
            "metrics:    the last line of metrics.jsonl is incomplete (an interrupted run); "
            "--resume drops it"
        )
    if run is not None:
        params = sum(p.numel() for m in run.modules.values() for p in m.parameters())
        lines.append(f"parameters: {params:,} (loaded {run.checkpoint.name}, step {run.step})")  # type: ignore[union-attr]
    ev = run_dir / "eval.json"
    if ev.is_file():
        lines.append(f"eval:       {ev}")
    print("\n".join(lines))


def _num(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else str(value)


def _conditions(data: dict[str, Any]) -> str:
    """``", condition values: 1 (angle)"`` for a run on values (empty otherwise)."""
    if not data.get("values_dim"):
        return ""
    names = data.get("cond_names")
    return f", condition values: {data['values_dim']}" + (f" ({', '.join(names)})" if names else "")


def _options(cfg: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.options().items())
