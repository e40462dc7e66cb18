"""Defaults that depend on the kind of data (applied below the user's file and overrides).

A preset never overrides what the user set, and the parts that depend on the run's length
scale with it: a preset's warm-up is at most a tenth of the run, so a 20-step smoke run of
the image preset is accepted. ``--dry-run`` prints which preset was applied and what it
changed.
"""

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
        "sample": {"num_samples": 100, "solver": {"kind": "midpoint", "nfe": 16}},
        "eval": {"nfe": [2, 4, 8, 16], "num_samples": 1000},
    },
}
# A latent run (data.latent) flows in vectors of codes: the MLP, the image budget otherwise.
PRESETS["latent"] = {**PRESETS["image"], "model": {"kind": "mlp"}}

#: A preset's warm-up is at most this fraction of the run's steps.
WARMUP_FRACTION = 0.1


def preset_for(
    kind: str, user: dict[str, Any] | None = None, *, cond_kinds: tuple[str, ...] = ()
) -> tuple[dict[str, Any], list[str]]:
    """The preset of a data kind, scaled to the user's run, and notes saying what it sets.

    The 2-D preset's ``model.conditional = "no"`` is about the component labels of the
    built-in toys; data carrying continuous values or context (e.g. ``8gaussians_angle``)
    carries them to be conditioned on, so there that key is left out.

    Args:
        kind: the data kind (``"2d"``, ``"tabular"``, ``"image"``, or ``"latent"`` for runs on
            the codes of a latent space; others have no preset).
        user: the user's raw config (file and overrides), which the preset yields to.
        cond_kinds: the conditioning kinds the data carries (``ArrayDataset.cond_kinds``).

    Returns:
        ``(preset, notes)``: the preset dict (to merge *below* ``user``) and one note per key
        it sets that the user did not.
    """
    user = user or {}
    preset = {section: dict(values) for section, values in PRESETS.get(kind, {}).items()}
    if {"values", "context"} & set(cond_kinds) and "model" in preset:
        preset["model"].pop("conditional", None)
    train = preset.get("train", {})
    steps = (user.get("train") or {}).get("steps", train.get("steps"))
    if "warmup_steps" in train and isinstance(steps, int):
        train["warmup_steps"] = min(train["warmup_steps"], int(WARMUP_FRACTION * steps))
    notes = []
    for section, values in preset.items():
        mine = user.get(section)
        for key, value in values.items():
            if not (isinstance(mine, dict) and key in mine):
                notes.append(f"{section}.{key} = {value!r}")
    return preset, notes
