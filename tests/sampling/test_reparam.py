"""Sampling along another schedule: the converted oracle field is the other path's oracle."""

import pytest
import torch

from flowmatch.paths import CosineSchedule, LinearSchedule, PolynomialSchedule, VPSchedule
from flowmatch.sampling.reparam import ScheduleTransformedField, match_times
from flowmatch.solvers import Dopri5, solve
from flowmatch.times import make_grid
from oracles import GaussianOracle

MU = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
SCHEDULES = {
    "linear": LinearSchedule(),
    "cosine": CosineSchedule(),
    "poly2": PolynomialSchedule(2.0),
    "vp": VPSchedule(),
}


@pytest.mark.parametrize("trained", ["linear", "cosine"])
@pytest.mark.parametrize("target", ["cosine", "poly2", "vp", "linear"])
def test_converted_field_is_the_target_paths_marginal_velocity(trained, target, gen):
    src = GaussianOracle(MU, 0.7, schedule=SCHEDULES[trained])
    dst = GaussianOracle(MU, 0.7, schedule=SCHEDULES[target])
    field = ScheduleTransformedField(src, SCHEDULES[trained], SCHEDULES[target])
    x = torch.randn(3, 3, generator=gen, dtype=torch.float64)  # B == D
    r = torch.tensor([0.1, 0.5, 0.93], dtype=torch.float64)
    torch.testing.assert_close(field(x, r), dst.velocity(x, r), atol=1e-9, rtol=1e-9)


def test_times_match_the_snr_and_identity_is_exact():
    r = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    t, s, dt = match_times(LinearSchedule(), CosineSchedule(), r)
    c = CosineSchedule()(r)
    torch.testing.assert_close(t, c.alpha / (c.alpha + c.sigma))  # linear: t = snr / (1 + snr)
    t, s, dt = match_times(CosineSchedule(), CosineSchedule(), r)
    torch.testing.assert_close(t, r)
    torch.testing.assert_close(s, torch.ones_like(r))
    torch.testing.assert_close(dt, torch.ones_like(r))


@pytest.mark.parametrize("target", ["cosine", "poly2"])
def test_dopri5_endpoints_are_equal(target, gen):
    # Linear-trained oracle sampled along another exact-endpoint path lands on the same point.
    oracle = GaussianOracle(MU, 0.4)
    field = ScheduleTransformedField(oracle, LinearSchedule(), SCHEDULES[target])
    x0 = oracle.sample_x0(64, gen)
    grid = make_grid("uniform", 1, dtype=torch.float64)
    x1 = solve(field, x0, grid, Dopri5(atol=1e-10, rtol=1e-10)).x
    torch.testing.assert_close(x1, oracle.flow(x0, 1.0), atol=1e-7, rtol=0)


def test_errors():
    with pytest.raises(TypeError, match="field must be callable"):
        ScheduleTransformedField(3, LinearSchedule(), CosineSchedule())
    with pytest.raises(TypeError, match="target must be an AffinePath or a Schedule"):
        ScheduleTransformedField(lambda x, t, c=None: x, LinearSchedule(), "vp")


def test_run_along_keeps_the_samples(tiny_run):
    from flowmatch import api

    vp = api.run_along(tiny_run, "cosine")
    assert isinstance(vp.path.schedule, CosineSchedule)
    tol = {"atol": 1e-7, "rtol": 1e-7}
    ref = api.generate(tiny_run, 64, solver="dopri5", seed=1, solver_options=tol).samples
    got = api.generate(vp, 64, solver="dopri5", seed=1, solver_options=tol).samples
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)  # 1.8e-5 measured
    sde = api.generate(api.run_along(tiny_run, "vp"), 16, solver="euler_maruyama", nfe=8)
    assert torch.isfinite(sde.samples).all()
