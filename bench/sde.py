"""SDE sampling: marginal error order on the Gaussian oracle, SDE vs ODE quality at NFE 100 on
trained runs, and the per-NFE overhead of Euler-Maruyama through ``solve`` vs a bare loop.

    .venv/bin/python bench/sde.py --json bench/results/sde.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import add_common_args, fmt, machine_info, mean_std, setup, table, write_json  # noqa: E402
from flowmatch import api  # noqa: E402
from flowmatch.paths import AffinePath, CosineSchedule, LinearSchedule  # noqa: E402
from flowmatch.solvers import EulerMaruyama, solve  # noqa: E402
from flowmatch.times import make_grid  # noqa: E402
from oracles import GaussianOracle  # noqa: E402
from suite_common import SEEDS, score, test_data, trained_run  # noqa: E402

STEPS = [10, 20, 40, 80, 160, 320]
ARMS = [("flow_grpo", 0.7), ("memoryless", 1.0), ("constant", 0.5)]


def exact_moments(oracle, em, n):
    """Mean/variance of the EM chain on the oracle, propagated exactly (affine steps)."""
    grid = make_grid("uniform", n, dtype=torch.float64).tolist()
    m = torch.zeros(1, oracle.dim, dtype=torch.float64)
    var = torch.ones_like(m)
    for t, tn in zip(grid[:-1], grid[1:], strict=True):
        b, std = em.transition(m * 0, oracle(m * 0, m.new_full((1,), t)), t, tn)
        one = torch.ones_like(m)
        a = em.transition(one, oracle(one, m.new_full((1,), t)), t, tn)[0] - b
        m, var = a * m + b, a * a * var + std**2
    return m, var


def slope(errors):
    h = torch.tensor([1.0 / n for n in STEPS], dtype=torch.float64)
    e = torch.tensor(errors, dtype=torch.float64)
    x = torch.stack([h.log(), torch.ones_like(h)], 1)
    return torch.linalg.lstsq(x, e.log()[:, None]).solution[0].item()


def oracle_table() -> tuple[str, list]:
    mu, s = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5
    rows, raw = [], []
    for sched_name, sched in (("linear", LinearSchedule()), ("cosine", CosineSchedule())):
        oracle = GaussianOracle(mu, s, schedule=sched)
        for diff, a in (("constant", 0.8), ("memoryless", 1.0), ("flow_grpo", 0.7)):
            em = EulerMaruyama(diff, a, path=AffinePath(sched))
            var_err, mean_err = [], []
            for n in STEPS:
                m, var = exact_moments(oracle, em, n)
                var_err.append((var - s * s).abs().max().item())
                mean_err.append((m - mu).abs().max().item())
            sm = f"{slope(mean_err):.2f}" if max(mean_err) > 1e-12 else "exact"
            rows.append(
                [
                    sched_name,
                    f"{diff} a={a}",
                    *(f"{e:.1e}" for e in var_err),
                    f"{slope(var_err):.2f}",
                    sm,
                ]
            )
            raw.append(
                {
                    "schedule": sched_name,
                    "diffusion": diff,
                    "scale": a,
                    "var_err": var_err,
                    "mean_err": mean_err,
                }
            )
    head = ["path", "diffusion", *(f"var err {n}" for n in STEPS), "slope var", "slope mean"]
    return table(head, rows), raw


def quality_table(names, n_samples, nfe) -> tuple[str, list]:
    rows, raw = [], []
    for name in names:
        run, _ = trained_run(name)
        ref = test_data(run)[:n_samples]  # digits: all 297 test images
        n = n_samples
        ode = [
            score(run, api.generate(run, n, solver="euler", nfe=nfe, seed=s).samples, ref)
            for s in SEEDS
        ]
        rows.append([name, f"ODE Euler NFE {nfe}", fmt(ode, 3), "1.000"])
        raw.append({"run": name, "arm": "ode", "scores": ode})
        for diff, a in ARMS:
            opts = {"diffusion": diff, "scale": a}
            sde = [
                score(
                    run,
                    api.generate(
                        run, n, solver="euler_maruyama", nfe=nfe, seed=s, solver_options=opts
                    ).samples,
                    ref,
                )
                for s in SEEDS
            ]
            rows.append(
                [
                    name,
                    f"EM {diff} a={a} NFE {nfe}",
                    fmt(sde, 3),
                    f"{mean_std(sde)[0] / mean_std(ode)[0]:.3f}",
                ]
            )
            raw.append({"run": name, "arm": f"{diff}/{a}", "scores": sde})
    head = ["run", "sampler", "W2 (2-D) or FD (digits)", "SDE / ODE"]
    return table(head, rows), raw


def bare_em(model, x, nfe, noise):
    """Hand-written Euler-Maruyama, memoryless linear path: drift 2v - x/t (g^2 = 2(1-t)/t)."""
    h = 1.0 / nfe
    for k in range(nfe):
        t = k * h
        tg = h if k == 0 else t
        v = model(x, x.new_full((x.shape[0],), t))
        g2 = 2 * (1 - tg) / tg
        x0 = x - t * v
        x = x + h * (v - 0.5 * g2 / (1 - t) * x0) + (g2 * h) ** 0.5 * noise[k]
    return x


def overhead_table(repeats, nfe) -> tuple[str, list]:
    run, _ = trained_run("checkerboard")
    model = run.model
    em = EulerMaruyama("memoryless", 1.0, path=run.path)
    grid = make_grid("uniform", nfe)
    rows, raw = [], []
    for batch, calls in ((16, 20), (10_000, 2)):
        x = torch.randn(batch, 2, generator=torch.Generator().manual_seed(0))
        noise = torch.randn(nfe, batch, 2, generator=torch.Generator().manual_seed(1))
        per = {"bare": [], "flowmatch": []}
        with torch.no_grad():
            torch.testing.assert_close(
                bare_em(model, x, nfe, noise),
                solve(model, x, grid, em, noise=noise).x,
                atol=1e-4,
                rtol=1e-4,
            )
            for _ in range(repeats):
                for arm in ("bare", "flowmatch"):
                    start = time.process_time()
                    for _ in range(calls):
                        if arm == "bare":
                            bare_em(model, x, nfe, noise)
                        else:
                            solve(model, x, grid, em, noise=noise)
                    per[arm].append((time.process_time() - start) / calls / nfe * 1e6)
        ratio = [f / b for f, b in zip(per["flowmatch"], per["bare"], strict=True)]
        rows.append([batch, fmt(per["bare"], 1), fmt(per["flowmatch"], 1), fmt(ratio, 3)])
        raw.append({"batch": batch, **per, "ratio": ratio})
    return table(["batch", "bare us/NFE", "solve(EulerMaruyama) us/NFE", "ratio"], rows), raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_args(parser)
    args = parser.parse_args()
    setup()
    print(f"Machine: {machine_info()}\n")
    t0 = time.perf_counter()
    text, oracle_raw = oracle_table()
    print("### Oracle: exact marginal-variance error of Euler-Maruyama vs steps\n\n" + text + "\n")
    names = ["checkerboard"] if args.quick else ["checkerboard", "digits"]
    text, q_raw = quality_table(names, 200 if args.quick else 2000, 100)
    print(
        f"### SDE vs ODE at NFE 100 (seeds {SEEDS}; 2000 samples vs 2000 held-out points; "
        "digits: vs the 297 test images)\n\n" + text + "\n"
    )
    text, o_raw = overhead_table(2 if args.quick else 5, 100)
    print("### Per-NFE cost, NFE 100, CPU time (process_time), 1 thread\n\n" + text + "\n")
    print(f"total wall {time.perf_counter() - t0:.0f} s")
    write_json(args.json, {"oracle": oracle_raw, "quality": q_raw, "overhead": o_raw})


if __name__ == "__main__":
    main()
