"""Tiny trained runs shared by the sampling-suite tests (trained once per test session)."""

import pytest

from tiny_runs import train_tiny


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """An unconditional 2-D checkerboard run (40 steps)."""
    return train_tiny(tmp_path_factory.mktemp("runs") / "cb", "checkerboard")


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory):
    """A label-conditional digits run with a small MLP (40 steps)."""
    return train_tiny(
        tmp_path_factory.mktemp("runs") / "digits",
        "digits",
        extra=["model.kind=mlp", "data.n_train=512", "data.n_test=128"],
    )
