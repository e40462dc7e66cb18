"""Resolve a run's configuration and load its data."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flowmatch.config.build import cond_spec
from flowmatch.config.presets import preset_for
from flowmatch.config.schema import (
    ConfigError,
    DataConfig,
    RunConfig,
    from_dict,
    load_toml,
    merge,
    overrides_dict,
)
from flowmatch.data.batch import ArrayDataset
from flowmatch.registry import load_plugins
from flowmatch.solvers.base import SAMPLERS

logger = logging.getLogger(__name__)

#: Data sets are generated/split with this fixed seed so held-out sets match across runs.
DATA_SEED = 0


@dataclass(frozen=True)
class Resolved:
    """A resolved configuration with its data (the result of :func:`resolve_config`).

    Unpacks as ``cfg, train_set, test_set``.

    Attributes:
        config: the validated run configuration.
        train: the training split (model space).
        test: the held-out split (model space).
        notes: what the data kind's preset set (for ``--dry-run``).
        warnings: changes made to fit the data (e.g. a batch larger than the data), one line
            each; the CLI always prints them.
    """

    config: RunConfig
    train: ArrayDataset
    test: ArrayDataset
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.config, self.train, self.test))


def resolve_config(
    *,
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    data: str | None = None,
    steps: int | None = None,
) -> Resolved:
    """Resolve a run's configuration and load its data.

    Precedence (lowest first): defaults, the preset of the data kind, ``config_file``,
    ``overrides`` (``"section.key=value"``), then the explicit ``data``/``steps`` arguments.
    Plugins named in ``plugins`` are imported first, so their components can be named.

    Returns:
        A :class:`Resolved` (unpacks as ``(config, train_set, test_set)``); the sets are in
        model space (standardised).

    Raises:
        ConfigError: a bad key or value, or a combination the data does not allow.
        PluginError: a plugin cannot be imported.
    """
    raw = load_toml(config_file) if config_file is not None else {}
    raw = merge(raw, overrides_dict(list(overrides)))
    if data is not None:
        raw.setdefault("data", {})["name"] = data
    if steps is not None:
        raw.setdefault("train", {})["steps"] = steps
    load_plugins(list(raw.get("plugins", [])))
    data_cfg = from_dict(DataConfig, raw.get("data", {}), "data.")
    train_ds, test_ds = load_data(data_cfg)
    kind = "latent" if data_cfg.latent is not None else train_ds.meta.get("kind", "")
    preset, notes = preset_for(kind, raw, cond_kinds=train_ds.cond_kinds)
    cfg = from_dict(RunConfig, merge(preset, raw))
    cfg, warnings = fit_to_data(cfg, len(train_ds))
    check_with_data(cfg, train_ds)
    return Resolved(cfg, train_ds, test_ds, notes, warnings)


def fit_to_data(cfg: RunConfig, num_train: int) -> tuple[RunConfig, list[str]]:
    """Shrink the batch to the data when the training set is smaller than one global batch.

    Returns the (possibly changed) config and one line per change, which the CLI prints.
    """
    world = max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    if num_train >= cfg.train.batch_size * world:
        return cfg, []
    batch = num_train // world
    if batch < 1:
        raise ConfigError(
            "data", f"has {num_train} training samples, fewer than the {world} data-parallel ranks"
        )
    note = (
        f"train.batch_size = {batch}: the training set has only {num_train} samples, fewer "
        f"than one batch of {cfg.train.batch_size}"
        + (f" on each of {world} ranks" if world > 1 else "")
    )
    logger.info(note)
    return replace(cfg, train=replace(cfg.train, batch_size=batch)), [note]


def check_with_data(cfg: RunConfig, train_ds: ArrayDataset) -> None:
    """Checks that need the data: conditioning, guidance, the model's fit to the samples.

    Raises:
        ConfigError: naming the key.
    """
    from flowmatch.config.build import build_model

    cond = cond_spec(cfg.model, train_ds)
    if cfg.sample.guidance != 1.0 and not cond.conditional:
        raise ConfigError(
            "sample.guidance",
            f"={cfg.sample.guidance} needs a conditional model (data with labels or "
            "conditions); use 1.0",
        )
    from flowmatch.api.latent import latent_shape

    shape = latent_shape(cfg.data.latent, train_ds.sample_shape)  # the codes of a latent run
    try:  # shape and conditioning checks of the model builder, on the meta device (no memory)
        import torch

        with torch.device("meta"):
            build_model(cfg.model, shape, cond)
    except ValueError as err:
        raise ConfigError("model", str(err)) from None


def load_data(cfg: DataConfig) -> tuple[ArrayDataset, ArrayDataset]:
    """Load ``(train, test)`` for a data config (fixed data seed, see ``DATA_SEED``)."""
    from flowmatch.data.registry import load_dataset

    return load_dataset(
        cfg.name,
        seed=DATA_SEED,
        n_train=cfg.n_train,
        n_test=cfg.n_test,
        standardize=cfg.standardize,
        label_column=cfg.label_column,
        cond_columns=cfg.cond_columns,
    )


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """Read ``RUN_DIR/config.json`` (errors name the file).

    Raises:
        FileNotFoundError: no ``config.json``.
        ValueError: it is not JSON or lacks the ``config``/``data`` entries.
    """
    p = Path(run_dir) / "config.json"
    if not p.is_file():
        raise FileNotFoundError(
            f"{str(p)!r} not found: is {str(run_dir)!r} a flowmatch run directory?"
        )
    try:
        info = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(p)!r} is corrupt (not JSON): {e}") from None
    if not isinstance(info, dict) or not {"config", "data"} <= set(info):
        raise ValueError(f"{str(p)!r} is not a flowmatch run description (needs config and data)")
    return info


def stored_config(info: dict[str, Any]) -> RunConfig:
    """The :class:`RunConfig` of a run's ``config.json`` content (its plugins imported first)."""
    raw = info["config"]
    load_plugins(list(raw.get("plugins", [])) if isinstance(raw, dict) else [])
    return from_dict(RunConfig, raw)


def resume_config(run_dir: str | Path, *, steps: int | None = None) -> tuple[RunConfig, dict]:
    """The stored configuration of a run, optionally with a new total number of steps."""
    info = read_run_info(run_dir)
    cfg = stored_config(info)
    if steps is not None:
        cfg = replace(cfg, train=replace(cfg.train, steps=steps))
    return cfg, info


def default_nfe(solver: str, num_steps: int) -> int:
    """The NFE of ``num_steps`` steps of the fixed-step ``solver``."""
    return num_steps * SAMPLERS[solver].stages
