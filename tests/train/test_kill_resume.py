"""kill -9 during checkpoint writes, rotation, metrics appends and at random: resume always
finishes the run with every checkpoint verified and the weights of an unbroken run.

Each attempt is a new process (~5 s on 2 shared cores, most of it importing torch), so the
default run does 2 kills and the slow one (``pytest -m slow``) 20, at every injection point.
"""

import pytest

from faults import POINTS, kill_resume, reference_run, verify


def _check(facts, checks, kills):
    assert facts["kills"] == kills and facts["resumes"] == kills
    assert checks["identical_weights"] and checks["identical_ema"], checks
    assert checks["identical_losses"], checks
    assert checks["checkpoints_verified"] == 2  # keep_checkpoints


def test_two_kills_during_rotation_and_a_metrics_append(tmp_path):
    reference_run(tmp_path / "reference", 120)
    run = tmp_path / "run"
    facts = kill_resume(run, 2, steps=120, seed=1, points=("rotation", "metrics"))
    _check(facts, verify(run, tmp_path / "reference", 120), 2)
    # Each kill left its mark (a half-deleted checkpoint under a temporary name, a torn
    # metrics line, the lock of a dead process), which the next resume cleaned up.
    assert {"tmp_old", "torn_metrics", "stale_lock"} <= set(facts["left_behind_by_kills"])


@pytest.mark.slow
def test_twenty_kills_in_a_row(tmp_path):
    reference_run(tmp_path / "reference", 300)
    run = tmp_path / "run"
    facts = kill_resume(run, 20, steps=300, seed=0)
    checks = verify(run, tmp_path / "reference", 300)
    print(facts, checks)
    _check(facts, checks, 20)
    assert set(facts["kills_by_point"]) == set(POINTS)  # every injection point, and random
