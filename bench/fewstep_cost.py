"""Training cost per step of the few-step objectives vs plain flow matching (same net, batch).

One process, one torch thread, ``MLP(2, 256, 4)`` (``time_scale=1``; two-time nets for the
two-time objectives), batch 256 of checkerboard data, AdamW. Each objective runs ``--steps``
full optimisation steps (loss, backward, clip, AdamW) after a warm-up; the objectives are
interleaved and the whole round repeated ``--repeats`` times, so load changes on the shared
machine hit every objective alike. Reported: ms per step (mean +- std over repeats) and the
ratio to flow matching measured in the same round. Teacher-based objectives (``scm``,
``freeflow``, distillation with a teacher) read a frozen copy of the net as the teacher; LSD's
self-teacher reads a frozen copy as its EMA weights (the EMA update itself, one fused lerp, is
not timed); ``scm + LADD`` also trains its discriminator.

    .venv/bin/python bench/fewstep_cost.py --json bench/results/fewstep_cost.json
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from common import add_common_args, checkerboard, fmt, machine_info, setup, table, write_json
from flowmatch.data import Batch
from flowmatch.fewstep import MeanFlowStep, ProgressiveStep, SplitMeanFlowStep
from flowmatch.fewstep.flowmap import EulerianStep, LagrangianStep
from flowmatch.fewstep.freeflow import FreeFlowStep
from flowmatch.fewstep.reflow import ReflowStep
from flowmatch.fewstep.scm import SCMConfig, SCMStep
from flowmatch.models import MLP
from flowmatch.objectives import FlowMatchingObjective, ObjectiveStep

ARMS = {
    "flow_matching": (lambda: ObjectiveStep(FlowMatchingObjective()), 1, False),
    "reflow (paired FM)": (lambda: ReflowStep(), 1, False),
    "meanflow (JVP)": (lambda: MeanFlowStep(), 2, False),
    "splitmeanflow (no JVP)": (lambda: SplitMeanFlowStep(), 2, False),
    "flowmap_lsd": (lambda: LagrangianStep(), 2, False),
    "flowmap_esd": (lambda: EulerianStep(), 2, False),
    "flowmap_psd": (lambda: ProgressiveStep(), 2, False),
    "flowmap_lsd + teacher": (lambda: LagrangianStep(), 2, True),
    "scm (JVP)": (lambda: SCMStep(), 1, True),
    "scm + LADD (adversarial 0.5)": (lambda: SCMStep(adversarial=0.5), 1, True),
    "freeflow": (lambda: FreeFlowStep(), 2, True),
}


def _setup(name: str, data: torch.Tensor):  # type: ignore[no-untyped-def]
    make, inputs, needs_teacher = ARMS[name]
    torch.manual_seed(0)
    teacher = MLP(2, hidden=256, depth=4, time_scale=1.0)
    net = MLP(2, hidden=256, depth=4, time_scale=1.0, time_inputs=inputs)
    modules: dict = {"model": net}
    if needs_teacher:
        modules["teacher"] = teacher.requires_grad_(False).eval()
    if name == "freeflow":
        modules["fake"] = copy.deepcopy(teacher).requires_grad_(True)
    if name.startswith("scm + LADD"):
        modules.update(SCMConfig(adversarial=0.5).extra_modules(net, (2,), None))
    frozen = {"teacher", "model.ema"}
    if name.startswith("flowmap_lsd"):  # the self-teacher reads the EMA weights
        modules["model.ema"] = copy.deepcopy(net).requires_grad_(False)
    params = [p for k, m in modules.items() if k not in frozen for p in m.parameters()]
    return make(), modules, torch.optim.AdamW(params, lr=1e-4), params


def _time(name: str, data: torch.Tensor, steps: int) -> float:
    step, modules, opt, params = _setup(name, data)
    g = torch.Generator().manual_seed(0)
    n = 256

    def one(k: int) -> None:
        idx = torch.randint(len(data), (n,), generator=g)
        x1 = data[idx]
        batch = Batch(x1=x1, x0=torch.randn(n, 2, generator=g))
        out = step(modules, batch, g)
        out.loss.mean().backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for k in range(5):
        one(k)
    t0 = time.perf_counter()
    for k in range(steps):
        one(k)
    return (time.perf_counter() - t0) / steps * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    add_common_args(p)
    args = p.parse_args()
    setup()
    if args.quick:
        args.steps, args.repeats = 5, 1
    data, _ = checkerboard(20_000, 100)
    print(machine_info())
    ms: dict[str, list[float]] = {k: [] for k in ARMS}
    ratio: dict[str, list[float]] = {k: [] for k in ARMS}
    for _ in range(args.repeats):
        base = None
        for name in ARMS:
            v = _time(name, data, args.steps)
            ms[name].append(v)
            base = v if name == "flow_matching" else base
            ratio[name].append(v / base)  # type: ignore[operator]
    rows = [[k, fmt(ms[k], 1), fmt(ratio[k], 2)] for k in ARMS]
    print(table(["objective", "ms / step", "x flow matching"], rows))
    write_json(args.json, {"ms_per_step": ms, "ratio": ratio, "steps": args.steps})


if __name__ == "__main__":
    main()
