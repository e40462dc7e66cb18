"""Tiny trained runs shared by the sampling-suite tests (trained once per test session)."""

import pytest

from flowmatch import api

TINY = [
    "model.hidden=32",
    "model.depth=2",
    "data.n_train=1024",
    "data.n_test=256",
    "train.batch_size=64",
    "train.log_every=20",
    "train.checkpoint_every=40",
    "sample.num_samples=64",
]


def train_tiny(out, data, steps=40, extra=()):
    """Train a tiny run of ``data`` into ``out`` and load it."""
    cfg, train_ds, test_ds = api.resolve_config(overrides=[*TINY, *extra], data=data, steps=steps)
    api.train_run(cfg, train_ds, out_dir=out, test_ds=None)
    return api.load_run(out)


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
