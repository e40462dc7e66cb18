"""Observation-conditioned sampling: 50 % masked digits and 4x-downsampled series.

Error on the hidden part (mean squared error per hidden value, data space) of flowmatch's
projection and DPS samplers against a nearest-neighbour and a linear-interpolation baseline;
the observed part must be reproduced to 1e-5.

    .venv/bin/python bench/observe.py --json bench/results/observe.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, fmt, machine_info, setup, table, write_json  # noqa: E402
from flowmatch import api  # noqa: E402
from flowmatch.sampling.observe import AvgPool  # noqa: E402
from suite_common import SEEDS, trained_run  # noqa: E402

K = 8  # samples per observation for the posterior-mean rows


def _digits_baselines(train, test, mask):
    """1-NN on the observed pixels and linear interpolation over the pixel grid."""
    from scipy.interpolate import griddata

    tr, te, m = (
        train.reshape(len(train), -1),
        test.reshape(len(test), -1),
        mask.reshape(len(test), -1),
    )
    nn_out, lin_out = te.clone(), te.clone()
    yy, xx = np.mgrid[0:8, 0:8]
    coords = np.stack([yy.ravel(), xx.ravel()], 1)
    for i in range(len(te)):
        obs = m[i]
        d = ((tr[:, obs] - te[i, obs]) ** 2).sum(1)
        nn_out[i, ~obs] = tr[d.argmin(), ~obs]
        vals = te[i, obs].numpy()
        lin = griddata(coords[obs.numpy()], vals, coords[~obs.numpy()], method="linear")
        near = griddata(coords[obs.numpy()], vals, coords[~obs.numpy()], method="nearest")
        lin_out[i, ~obs] = torch.as_tensor(np.where(np.isnan(lin), near, lin), dtype=te.dtype)
    return nn_out.reshape(test.shape), lin_out.reshape(test.shape)


def _hidden_mse(x, truth, hidden):
    return float(((x - truth)[hidden]).square().mean())


def digits_rows(nfe, quick):
    run, _ = trained_run("digits")
    train, _ = api.load_data(run.config.data)
    x_train = run.to_data_space(train.x)
    _, test = api.load_data(run.config.data)
    truth = run.to_data_space(test.x)[: 60 if quick else None]
    rows, raw = {}, []
    for seed in SEEDS:
        g = torch.Generator().manual_seed(100 + seed)
        mask = torch.rand(truth.shape, generator=g) < 0.5
        hidden = ~mask
        nn_out, lin_out = _digits_baselines(x_train, truth, mask)
        out = {
            "1-NN (train set, observed pixels)": _hidden_mse(nn_out, truth, hidden),
            "linear interpolation (pixel grid)": _hidden_mse(lin_out, truth, hidden),
        }
        for method in ("project", "dps"):
            res = api.observe(
                run,
                truth,
                mask=mask,
                nfe=nfe,
                method=method,
                seed=seed,
                solver="midpoint",
                noise_std=1.0,
            )
            obs_err = float((res.samples - truth)[mask].abs().max())
            out[f"flowmatch {method}, 1 sample, midpoint NFE {nfe}"] = _hidden_mse(
                res.samples, truth, hidden
            )
            many = api.observe(
                run,
                truth,
                mask=mask,
                nfe=nfe,
                method=method,
                seed=seed,
                solver="midpoint",
                samples_per_observation=K,
                noise_std=1.0,
            )
            mean = many.samples.reshape(len(truth), K, *truth.shape[1:]).mean(1)
            out[f"flowmatch {method}, mean of {K}, midpoint NFE {nfe}"] = _hidden_mse(
                mean, truth, hidden
            )
            raw.append(
                {"data": "digits", "seed": seed, "method": method, "observed_max_err": obs_err}
            )
        for k, v in out.items():
            rows.setdefault(k, []).append(v)
        raw.append({"data": "digits", "seed": seed, "mse": out})
    return rows, raw


def series_rows(nfe, quick):
    run, _ = trained_run("series")
    _, test = api.load_data(run.config.data)
    truth = run.to_data_space(test.x)[: 100 if quick else 500]
    pool = AvgPool(4)
    y = pool.forward(truth)
    length = truth.shape[1]
    centres = np.arange(length // 4) * 4 + 1.5
    lin = torch.as_tensor(
        np.stack([np.interp(np.arange(length), centres, row) for row in y.numpy()]),
        dtype=truth.dtype,
    )
    rows = {
        "nearest (repeat each block mean)": [_hidden_mse(pool.lift(y), truth, slice(None))] * 3,
        "linear interpolation (block centres)": [_hidden_mse(lin, truth, slice(None))] * 3,
    }
    raw = []
    for seed in SEEDS:
        for method in ("project", "dps"):
            res = api.observe(
                run,
                y,
                factor=4,
                nfe=nfe,
                method=method,
                seed=seed,
                solver="midpoint",
                noise_std=1.0,
            )
            err = float((pool.forward(res.samples) - y).abs().max())
            rows.setdefault(f"flowmatch {method}, 1 sample, midpoint NFE {nfe}", []).append(
                _hidden_mse(res.samples, truth, slice(None))
            )
            many = api.observe(
                run,
                y,
                factor=4,
                nfe=nfe,
                method=method,
                seed=seed,
                solver="midpoint",
                samples_per_observation=K,
                noise_std=1.0,
            )
            mean = many.samples.reshape(len(y), K, length).mean(1)
            rows.setdefault(f"flowmatch {method}, mean of {K}, midpoint NFE {nfe}", []).append(
                _hidden_mse(mean, truth, slice(None))
            )
            raw.append({"data": "series", "seed": seed, "method": method, "observed_max_err": err})
    return rows, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_args(parser)
    args = parser.parse_args()
    setup()
    print(f"Machine: {machine_info()}\n")
    t0 = time.perf_counter()
    nfe = 20 if args.quick else 50
    d_rows, d_raw = digits_rows(nfe, args.quick)
    print(
        f"### Digits, 50 % of pixels masked (seeded per seed {SEEDS}): MSE on hidden pixels "
        "(data scale [-1, 1])\n\n"
        + table(["method", "hidden MSE"], [[k, fmt(v, 4)] for k, v in d_rows.items()])
        + "\n"
    )
    s_rows, s_raw = series_rows(nfe, args.quick)
    print(
        "### Sums of sinusoids (length 64), 4x block-average downsampling: MSE on the series\n\n"
        + table(["method", "MSE"], [[k, fmt(v, 4)] for k, v in s_rows.items()])
        + "\n"
    )
    errs = [r["observed_max_err"] for r in d_raw + s_raw if "observed_max_err" in r]
    print(f"largest error on the observed part (mask values / block means): {max(errs):.2e}")
    print(f"total wall {time.perf_counter() - t0:.0f} s")
    write_json(args.json, {"digits": d_rows, "series": s_rows, "raw": d_raw + s_raw})


if __name__ == "__main__":
    main()
