"""Run configuration: nested frozen dataclasses read from TOML and ``--set key=value``.

Only the application layer (CLI, ``flowmatch.api``) reads configs; library objects take typed
arguments. Unknown keys and type changes are errors; every run writes its resolved config.
"""

from __future__ import annotations

import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from flowmatch.train.config import TrainConfig


class ConfigError(ValueError):
    """A configuration key, value or file is invalid (the message names the key)."""


@dataclass(frozen=True)
class DataCfg:
    """Which data to train on."""

    # Built-in name (checkerboard, 8gaussians, moons, circles, spirals, digits) or a path to
    # a .npy/.npz/.csv file or an image folder.
    name: str = "checkerboard"
    # Sizes of generated toy sets (None: the dataset's default).
    n_train: int | None = None
    n_test: int | None = None
    # "auto": none for built-ins, per-feature for tables, global for images.
    standardize: Literal["auto", "none", "per_feature", "global"] = "auto"
    # For CSV files: the column holding class labels (None: unlabelled).
    label_column: str | None = None


@dataclass(frozen=True)
class ModelCfg:
    """The velocity network."""

    # "auto" picks an MLP for vectors and a UNet for images.
    kind: Literal["auto", "mlp", "unet"] = "auto"
    # Train with class labels (enables guidance) when the data has them: "auto" = yes if labelled.
    conditional: Literal["auto", "yes", "no"] = "auto"
    # MLP: width, number of hidden layers, size of the time embedding.
    hidden: int = 256
    depth: int = 4
    time_dim: int = 64
    # UNet: channels of the first level and the multipliers of each resolution level.
    base_channels: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention: bool = False
    dropout: float = 0.0


@dataclass(frozen=True)
class PathCfg:
    """The probability path and what the network predicts."""

    schedule: Literal["linear", "cosine", "polynomial", "vp"] = "linear"
    exponent: float = 2.0  # polynomial schedule only (>= 1)
    beta_min: float = 0.1  # vp schedule only
    beta_max: float = 20.0  # vp schedule only
    prediction: Literal["velocity", "x1", "x0"] = "velocity"


@dataclass(frozen=True)
class CouplingCfg:
    """How source and data samples are paired in a batch."""

    kind: Literal["independent", "exact_ot", "class_ot", "sinkhorn"] = "independent"
    reg: float = 0.05  # sinkhorn only: entropic regularisation, relative to the mean cost
    # Exact assignment solver: "auction" (compiled, fastest) or "scipy" (the reference).
    solver: Literal["auction", "scipy"] = "auction"


@dataclass(frozen=True)
class TimeCfg:
    """Distribution of training times."""

    sampler: Literal["uniform", "logit_normal"] = "uniform"
    mean: float = 0.0  # logit_normal: location of logit(t) (t = 1 is data)
    std: float = 1.0  # logit_normal: scale of logit(t)


@dataclass(frozen=True)
class ObjectiveCfg:
    """Loss options."""

    weighting: Literal["none", "cosmap"] = "none"
    # Probability of dropping the label during training (classifier-free guidance).
    cond_dropout: float = 0.1


@dataclass(frozen=True)
class SampleCfg:
    """Defaults for sampling and snapshots."""

    solver: Literal["euler", "midpoint", "heun", "rk4", "dopri5"] = "midpoint"
    nfe: int = 16
    grid: Literal["uniform", "shifted"] = "uniform"
    shift: float = 3.0
    guidance: float = 1.0
    atol: float = 1e-5  # dopri5 only
    rtol: float = 1e-5  # dopri5 only
    num_samples: int = 2000  # for the end-of-training snapshot
    use_ema: bool = True


@dataclass(frozen=True)
class EvalCfg:
    """Defaults for ``flowmatch eval``."""

    nfe: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    solvers: tuple[str, ...] = ("euler", "midpoint")
    num_samples: int = 2000
    dopri5: bool = True


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, resolved and written to ``config.json``."""

    data: DataCfg = field(default_factory=DataCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    path: PathCfg = field(default_factory=PathCfg)
    coupling: CouplingCfg = field(default_factory=CouplingCfg)
    time: TimeCfg = field(default_factory=TimeCfg)
    objective: ObjectiveCfg = field(default_factory=ObjectiveCfg)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleCfg = field(default_factory=SampleCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)


# ----------------------------------------------------------------------------------------------
# dict <-> dataclass with strict keys and types


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Return (ok, coerced value) for ``value`` against annotation ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return True, value
    if origin is Literal:
        return value in get_args(tp), value
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False, value
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            items = [_type_ok(v, args[0]) for v in value]
        elif len(args) == len(value):
            items = [_type_ok(v, a) for v, a in zip(value, args, strict=True)]
        else:
            return False, value
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    raise TypeError(f"unsupported config annotation {tp!r}")


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if tp is type(None):
        return "none (omit the key)"
    if origin is tuple:
        return "a list"
    return getattr(tp, "__name__", str(tp))


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys and wrong types raise."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {[prefix + k for k in unknown]}; valid keys in "
            f"{prefix.rstrip('.') or 'the top level'}: {sorted(known)}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints[name]
        if is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, prefix + name + ".")  # type: ignore[arg-type]
            continue
        ok, coerced = _type_ok(value, tp)
        if not ok:
            raise ConfigError(f"{prefix}{name} must be {_describe(tp)}, got {value!r}")
        kwargs[name] = coerced
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {e}") from e


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (JSON/TOML friendly: tuples become lists)."""

    def conv(v: Any) -> Any:
        if is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, tuple | list):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def parse_value(text: str) -> Any:
    """Parse the value of ``--set key=value`` as TOML.

    ``3``, ``1e-3``, ``true``, ``[1, 2]`` and ``"a"`` parse as TOML; bare words that are not
    TOML (``midpoint``) are taken as strings.
    """
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(base: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to a nested dict (validated later by ``from_dict``)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"--set key must look like section.field (e.g. train.lr), got {key!r}"
            )
        section, name = parts
        if section not in {f.name for f in fields(RunConfig)}:
            raise ConfigError(
                f"unknown config section {section!r} in --set {item!r}; "
                f"choose one of {[f.name for f in fields(RunConfig)]}"
            )
        table = out.setdefault(section, {})
        table[name] = parse_value(text.strip())
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a dict (errors name the file)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {e}") from e


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Two-level merge of config dicts; ``top`` wins."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out
