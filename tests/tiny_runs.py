"""Tiny trained runs for tests (a few dozen steps of small MLPs; seconds on one core)."""

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
