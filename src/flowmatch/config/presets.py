"""Defaults that depend on the kind of data (applied below the user's file and overrides)."""

from __future__ import annotations

from typing import Any

#: Overrides per data kind ("2d", "tabular", "image"); chosen so the built-in data sets train
#: to a useful model on 2 CPU cores within minutes (see docs/benchmarks.md).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Built-in 2-D sets label each point with its mixture component; that is not a class a
    # user asked for, so 2-D models are unconditional unless model.conditional = "yes".
    "2d": {"model": {"conditional": "no"}},
    "tabular": {"train": {"steps": 5000}},
    "image": {
        "model": {"kind": "unet"},
        "train": {
            "steps": 4000,
            "batch_size": 128,
            "lr": 1e-3,
            "warmup_steps": 200,
            "ema_decay": 0.999,
            "log_every": 100,
            "checkpoint_every": 1000,
        },
        "sample": {"num_samples": 100, "nfe": 16},
        "eval": {"nfe": [2, 4, 8, 16], "num_samples": 1000},
    },
}


def preset_for(kind: str) -> dict[str, dict[str, Any]]:
    """The preset dict for a data kind (empty for unknown kinds)."""
    return PRESETS.get(kind, {})
