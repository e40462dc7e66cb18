"""Resolve a run's configuration and load its data."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

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
from flowmatch.data.batch import ArrayDataset, Standardizer
from flowmatch.registry import load_plugins
from flowmatch.solvers.base import SAMPLERS
from flowmatch.utils.options import OptionError

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
    given = data_cfg.name
    absolute = absolute_data_path(given)
    if absolute != given:  # a relative path: stored absolute, so eval/--resume work anywhere
        raw["data"] = {**raw.get("data", {}), "name": absolute}
        data_cfg = replace(data_cfg, name=absolute)
    train_ds, test_ds = load_data(data_cfg)
    for ds in (train_ds, test_ds):
        ds.meta["given"] = given
    kind = "latent" if data_cfg.latent is not None else train_ds.meta.get("kind", "")
    preset, notes = preset_for(kind, raw, cond_kinds=train_ds.cond_kinds)
    needs = objective_run_defaults(raw)
    if needs:
        notes = [*notes, f"objective {_objective_kind(raw)!r} sets {needs} unless given"]
    cfg = from_dict(RunConfig, fill_missing(merge(preset, raw), needs))
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


def absolute_data_path(name: str) -> str:
    """``name`` itself for a built-in data set or an absolute path, else its absolute path.

    (A built-in name wins over a file of the same name, as in ``load_dataset``.)
    """
    from flowmatch.data.registry import BUILTIN_DATASETS

    if name in BUILTIN_DATASETS or os.path.isabs(name) or not os.path.exists(name):
        return name
    return os.path.abspath(name)


def _objective_kind(raw: dict[str, Any]) -> str | None:
    obj = raw.get("objective")
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict) and isinstance(obj.get("kind"), str):
        return obj["kind"]
    return None


def objective_run_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """What the run's objective needs of the rest of the run (``run_defaults`` of its config).

    E.g. a flow-map objective (MeanFlow) needs a two-time model and samples with the
    ``flow_map`` sampler; these apply unless the config sets them (so an explicit choice wins).
    """
    from flowmatch.objectives.base import OBJECTIVES

    kind = _objective_kind(raw)
    if kind is None or kind not in OBJECTIVES:
        return {}
    defaults = getattr(OBJECTIVES.entry(kind).config, "run_defaults", {})
    return json.loads(json.dumps(dict(defaults)))  # a deep copy (the ClassVar stays intact)


def fill_missing(config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the keys of ``defaults`` it does not set (recursively); ``config`` wins.

    A component given by name (``solver = "euler"``) counts as set.
    """
    out = dict(config)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = fill_missing(out[key], value)
    return out


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
    """Read and check ``RUN_DIR/config.json`` (every error is one line naming the file).

    Raises:
        FileNotFoundError: no ``config.json``.
        ValueError: it is not JSON, or its ``run_id``/``config``/``data`` entries are missing
            or malformed (the message names the entry).
    """
    p = Path(run_dir) / "config.json"
    if p.is_dir():
        raise ValueError(f"{str(p)!r} is a directory, not a flowmatch run description")
    if not p.is_file():
        raise FileNotFoundError(
            f"{str(p)!r} not found: is {str(run_dir)!r} a flowmatch run directory?"
        )
    try:
        info = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(p)!r} is corrupt (not JSON): {e}") from None
    if not isinstance(info, dict) or not {"config", "data"} <= set(info):
        got = sorted(info) if isinstance(info, dict) else type(info).__name__
        raise ValueError(
            f"{str(p)!r} is not a flowmatch run description (needs 'config' and 'data', got {got})"
        )
    _check_info(info, str(p))
    return info


def _check_info(info: dict[str, Any], where: str) -> None:
    """The entries of ``config.json`` that loading a run reads, checked once."""

    def bad(key: str, rule: str, value: Any) -> ValueError:
        return ValueError(f"{where!r}: {key} must be {rule}, got {value!r:.80}")

    run_id = info.get("run_id")
    if run_id is not None and (not isinstance(run_id, str) or not run_id):
        raise bad("run_id", "a non-empty string", run_id)
    if not isinstance(info["config"], dict):
        raise bad("config", "a table of config sections", info["config"])
    data = info["data"]
    if not isinstance(data, dict):
        raise bad("data", "a table describing the training data", data)
    need = {"name", "sample_shape", "labelled", "num_classes", "standardizer"}
    missing = sorted(need - set(data))
    if missing:
        raise ValueError(f"{where!r}: data lacks {missing} (needs {sorted(need)})")

    def is_shape(v: Any) -> bool:
        return (
            isinstance(v, list)
            and bool(v)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in v)
        )

    shape = data["sample_shape"]
    if not is_shape(shape):
        raise bad("data.sample_shape", "a non-empty list of positive ints", shape)
    if "model_shape" in data and not is_shape(data["model_shape"]):  # a latent run's codes
        raise bad("data.model_shape", "a non-empty list of positive ints", data["model_shape"])
    if not isinstance(data["labelled"], bool):
        raise bad("data.labelled", "true or false", data["labelled"])
    k = data["num_classes"]
    if data["labelled"] and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise bad("data.num_classes", "an int >= 1 for labelled data", k)
    try:
        std = Standardizer.from_dict(data["standardizer"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{where!r}: data.standardizer is malformed: {err}") from None
    if tuple(std.mean.shape) != tuple(shape):
        raise bad("data.standardizer.shape", f"the sample shape {shape}", list(std.mean.shape))


def stored_config(info: dict[str, Any], *, where: str = "config.json") -> RunConfig:
    """The :class:`RunConfig` of a run's ``config.json`` content (its plugins imported first).

    Raises:
        ConfigError: a key or value of the stored config is invalid (the message names
            ``where`` and the key).
    """
    raw = info["config"]
    try:
        load_plugins(list(raw.get("plugins", [])) if isinstance(raw, dict) else [])
        return from_dict(RunConfig, raw)
    except ConfigError as err:
        raise ConfigError("", f"{where}: {err}") from None


def resume_config(run_dir: str | Path, *, steps: int | None = None) -> tuple[RunConfig, dict]:
    """The stored configuration of a run, optionally with a new total number of steps.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_run_info`.
        ConfigError: the stored config is invalid, or ``steps`` is out of range.
    """
    info = read_run_info(run_dir)
    cfg = stored_config(info, where=str(Path(run_dir) / "config.json"))
    if steps is not None:
        try:
            cfg = replace(cfg, train=replace(cfg.train, steps=steps))
        except OptionError as err:
            raise ConfigError(*_split(err.prefixed("train."))) from None
    return cfg, info


def _split(err: OptionError) -> tuple[str, str]:
    return err.key, err.reason


def data_fingerprint(ds: ArrayDataset) -> dict[str, Any]:
    """What identifies a training set: shape, dtype, sha256 of its bytes, labels, standardiser.

    The data bytes are the model-space tensor (so a changed standardisation shows too).
    Stored in ``config.json``; checked on resume and eval, so a changed data file is refused
    instead of silently mixed with the old run's checkpoints and standardiser.
    """
    x = ds.x.detach().to("cpu").contiguous()
    labels = None
    if ds.labels is not None:
        labels = _sha256(ds.labels.detach().to("cpu", torch.int64).contiguous())
    std = ds.standardizer or Standardizer.identity(ds.sample_shape)
    std_text = json.dumps(std.to_dict(), sort_keys=True)
    return {
        "shape": list(x.shape),
        "dtype": str(x.dtype).removeprefix("torch."),
        "sha256": _sha256(x),
        "labels_sha256": labels,
        "standardizer_sha256": hashlib.sha256(std_text.encode()).hexdigest(),
    }


def _sha256(t: torch.Tensor) -> str:
    h = hashlib.sha256()
    if t.numel():
        h.update(t.view(torch.uint8).numpy().data)
    return h.hexdigest()


def check_same_data(info: dict[str, Any], train_ds: ArrayDataset, run_dir: str | Path) -> None:
    """Refuse data that differ from what the run was trained on (its stored fingerprint).

    Raises:
        ValueError: one line naming the run, the data and what changed.
    """
    stored = info["data"].get("fingerprint")
    if not isinstance(stored, dict):
        logger.info("run %s stores no data fingerprint (older flowmatch): not checked", run_dir)
        return
    now = data_fingerprint(train_ds)
    changed = [k for k in ("shape", "dtype", "sha256", "labels_sha256") if stored.get(k) != now[k]]
    if stored.get("standardizer_sha256") != now["standardizer_sha256"]:
        changed.append("standardiser")
    if changed:
        what = ", ".join("contents" if c == "sha256" else c.replace("_sha256", "") for c in changed)
        name = info["data"].get("name", "?")
        raise ValueError(
            f"the training data of run {str(run_dir)!r} ({name}) changed since it was trained "
            f"({what} differ): its checkpoints and stored standardiser belong to the old data; "
            "restore that data, or train a new run on the new data"
        )


def load_run_data(
    cfg: RunConfig, info: dict[str, Any], run_dir: str | Path
) -> tuple[ArrayDataset, ArrayDataset]:
    """``(train, test)`` of a stored run, checked against the run's data fingerprint.

    Raises:
        ValueError: the data can no longer be found, or changed since the run was trained.
    """
    from flowmatch.data.registry import BUILTIN_DATASETS

    name = cfg.data.name
    if name not in BUILTIN_DATASETS and not os.path.exists(name):
        given = info["data"].get("given", name)
        if os.path.isabs(name):
            raise ValueError(
                f"the data of run {str(run_dir)!r}, {name} (given as {given!r}), no longer "
                "exists; restore it there to resume or evaluate the run"
            )
        raise ValueError(
            f"run {str(run_dir)!r} was trained on the relative data path {name!r} (an older "
            f"flowmatch), which does not exist from {os.getcwd()!r}: run from the directory "
            "it was trained in"
        )
    train_ds, test_ds = load_data(cfg.data)
    if "given" in info["data"]:  # kept in config.json when a resume rewrites it
        for ds in (train_ds, test_ds):
            ds.meta["given"] = info["data"]["given"]
    from flowmatch.api.train import prepare_dataset

    check_same_data(info, prepare_dataset(cfg, train_ds), run_dir)
    return train_ds, test_ds


def default_nfe(solver: str, num_steps: int) -> int:
    """The NFE of ``num_steps`` steps of the fixed-step ``solver``."""
    return num_steps * SAMPLERS[solver].stages
