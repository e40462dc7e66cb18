"""Shared helpers of the benchmark scripts: setup, statistics, tables, anchors, training cache.

Every script in bench/ runs on ONE torch thread (``setup()``), reports mean +- std over at least
three repeats or seeds, and prints markdown tables (``table``). Trained models are cached as
``bench/results/*.pt`` (git-ignored) and reused when their settings match.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

#: Seed of the checkerboard data (train and test split) used by every training benchmark.
DATA_SEED = 0
#: The one network every benchmark uses: 4 hidden layers of 256 units, SiLU.
MLP_HIDDEN, MLP_DEPTH = 256, 4


# ------------------------------------------------------------------ setup and environment


def setup(threads: int = 1) -> None:
    """One torch thread (the issue's setting; also keeps runs on a shared machine comparable)."""
    torch.set_num_threads(threads)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--quick`` (short smoke mode) and ``--json`` (also write the raw numbers)."""
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 1 min)")
    parser.add_argument("--json", default="", help="also write the raw numbers to this file")


def machine_info() -> str:
    """One line: CPU model, cores, Python and torch versions, threads, current load average."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), "
        f"load avg {load:.2f}"
    )


def optional_import(name: str) -> tuple[ModuleType | None, str]:
    """Import an anchor library lazily: ``(module, version)`` or ``(None, reason)``."""
    try:
        module = importlib.import_module(name)
    except Exception as err:  # an anchor that fails to import is skipped, with the reason
        return None, f"{type(err).__name__}: {err}"
    return module, str(getattr(module, "__version__", "?"))


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus the machine line) as indented JSON if ``path`` is non-empty."""
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"machine": machine_info(), "argv": sys.argv, **payload}, f, indent=2)


# ------------------------------------------------------------------ statistics and tables


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    xs = list(xs)
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(xs: Sequence[float], digits: int = 2) -> str:
    """``"mean ± std"`` with ``digits`` decimals."""
    m, s = mean_std(xs)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def fmt_sig(xs: Sequence[float], sig: int = 2) -> str:
    """``"mean ± std"`` in scientific notation (for errors spanning decades)."""
    m, s = mean_std(xs)
    return f"{m:.{sig}e} ± {s:.{sig - 1}e}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def clock(kind: str) -> Callable[[], float]:
    """``time.perf_counter`` (``"wall"``) or ``time.process_time`` (``"cpu"``)."""
    return time.perf_counter if kind == "wall" else time.process_time


# ------------------------------------------------------------------ models and data


def make_mlp(seed: int, time_scale: float | None = None) -> nn.Module:
    """``flowmatch.models.MLP(dim=2, hidden=256, depth=4)`` initialised from ``seed``.

    ``nn.Linear`` draws its initial weights from torch's global generator, so the seed is
    set here (benchmark scripts only; the library never touches the global RNG).
    ``time_scale`` replaces the time embedding by ``SinusoidalTimeEmbedding(64, scale=...)``
    (the MLP's own uses ``scale=1000``: frequencies up to 1000 rad per unit of t).
    """
    from flowmatch.models import MLP, SinusoidalTimeEmbedding

    torch.manual_seed(seed)
    model = MLP(dim=2, hidden=MLP_HIDDEN, depth=MLP_DEPTH)
    if time_scale is not None:
        model.time_embed = SinusoidalTimeEmbedding(model.time_embed.dim, scale=time_scale)
    return model


def checkerboard(n_train: int = 100_000, n_test: int = 10_000) -> tuple[Tensor, Tensor]:
    """Train and test points of ``load_dataset("checkerboard", seed=DATA_SEED)`` (no scaling)."""
    from flowmatch.data import load_dataset

    train, test = load_dataset("checkerboard", seed=DATA_SEED, n_train=n_train, n_test=n_test)
    return train.x, test.x


class CountingField(nn.Module):
    """Wraps a ``(x, t (B,))`` model and counts its calls (NFE)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.nfe = 0

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        self.nfe += 1
        return self.model(x, t)


# ------------------------------------------------------------------ training (cached)


def _cache_path(tag: str, seed: int, steps: int) -> Path:
    return RESULTS_DIR / f"checkerboard_{tag}_mlp{MLP_DEPTH}x{MLP_HIDDEN}_s{steps}_seed{seed}.pt"


def train_bare(x_train: Tensor, *, seed: int, steps: int, batch_size: int = 256) -> nn.Module:
    """The reference: a hand-written conditional flow-matching loop (Lipman et al. 2023, Alg. 1).

    Independent coupling, linear path ``x_t = t x1 + (1 - t) x0``, target ``x1 - x0``,
    ``t ~ U[0, 1]``, batches drawn with replacement, AdamW (lr 1e-3 constant, no weight
    decay), no clipping, no EMA.
    """
    model = make_mlp(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    n = x_train.shape[0]
    for _ in range(steps):
        x1 = x_train[torch.randint(0, n, (batch_size,), generator=gen)]
        x0 = torch.randn(x1.shape, generator=gen)
        t = torch.rand(batch_size, generator=gen)
        xt = t[:, None] * x1 + (1 - t[:, None]) * x0
        loss = (model(xt, t) - (x1 - x0)).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model.eval()


def train_flowmatch(
    x_train: Tensor,
    *,
    seed: int,
    steps: int,
    coupling: str = "independent",
    defaults: bool = False,
    batch_size: int = 256,
    time_scale: float | None = None,
) -> nn.Module:
    """The same run through ``flowmatch.train.Trainer`` and ``FlowMatchingObjective``.

    ``defaults=False`` matches ``train_bare``: constant lr 1e-3, no clipping, no EMA, no weight
    decay. ``defaults=True`` keeps TrainConfig's defaults (cosine decay, grad_clip 1.0, EMA
    0.999) and returns the EMA weights. ``coupling="exact_ot"`` pairs each batch by exact
    minibatch OT (``flowmatch.couplings.ExactOTCoupling``, Tong et al. 2024).
    """
    from flowmatch.data import ArrayDataset
    from flowmatch.objectives import FlowMatchingObjective
    from flowmatch.train import TrainConfig, Trainer

    if coupling == "independent":
        objective = FlowMatchingObjective()
    elif coupling == "exact_ot":
        from flowmatch.couplings import ExactOTCoupling

        objective = FlowMatchingObjective(coupling=ExactOTCoupling())
    else:
        raise ValueError(f"coupling must be 'independent' or 'exact_ot', got {coupling!r}")
    extra: dict[str, Any] = {}
    if not defaults:
        extra = {"lr_schedule": "constant", "grad_clip": None, "ema_decay": None}
    cfg = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=1e-3,
        seed=seed,
        checkpoint_every=0,
        log_every=min(100, steps),
        **extra,
    )
    model = make_mlp(seed, time_scale)
    trainer = Trainer(model, objective, ArrayDataset(x_train), cfg)
    trainer.fit()
    trained = trainer.ema.module_synced() if trainer.ema is not None else trainer.model
    return trained.eval()


def trained_model(
    kind: str,
    x_train: Tensor,
    *,
    seed: int,
    steps: int,
    cache: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[nn.Module, float]:
    """A trained model of ``kind`` and its training wall time (``nan`` when loaded from cache).

    ``kind`` is one of ``"bare"``, ``"flowmatch"`` (matched to bare), ``"flowmatch-defaults"``,
    ``"flowmatch-ot"`` or ``"flowmatch-tscale1"`` (as ``"flowmatch"`` with the time embedding
    at ``scale=1``, smooth in t). With ``cache`` the weights are stored under ``bench/results``
    (git-ignored ``*.pt``) keyed by kind, seed and steps, and loaded on the next run.
    """
    path = _cache_path(kind, seed, steps)
    time_scale = 1.0 if kind == "flowmatch-tscale1" else None
    if cache and path.is_file():
        model = make_mlp(seed, time_scale)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        log(f"loaded {path.relative_to(BENCH_DIR.parent)}")
        return model.eval(), math.nan
    t0 = time.perf_counter()
    if kind == "bare":
        model = train_bare(x_train, seed=seed, steps=steps)
    elif kind == "flowmatch":
        model = train_flowmatch(x_train, seed=seed, steps=steps)
    elif kind == "flowmatch-defaults":
        model = train_flowmatch(x_train, seed=seed, steps=steps, defaults=True)
    elif kind == "flowmatch-ot":
        model = train_flowmatch(x_train, seed=seed, steps=steps, coupling="exact_ot")
    elif kind == "flowmatch-tscale1":
        model = train_flowmatch(x_train, seed=seed, steps=steps, time_scale=time_scale)
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    wall = time.perf_counter() - t0
    log(f"trained {kind} seed={seed} steps={steps} in {wall:.1f} s")
    if cache:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".pt.tmp")
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
        tmp.replace(path)
    return model.eval(), wall
