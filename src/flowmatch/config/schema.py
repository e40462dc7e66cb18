"""Run configuration: nested, validated option records read from TOML and ``--set key=value``.

Only the application layer (CLI, ``flowmatch.api``) reads configs; library objects take typed
arguments. A section that is a *component* (``model``, ``path``, ``coupling``, ``time``,
``source``, ``objective``, ``sample.solver``, ``sample.grid``, ``eval.reference``) has a
``kind`` naming a registered component and that kind's own options, validated by the kind's
own record (see :mod:`flowmatch.registry`). A component may also be given by its name alone
(``solver = "dopri5"``). Unknown keys, wrong types and out-of-range values are errors naming
the key, raised while parsing, i.e. before any training.

Unset: TOML has no null, so the strings ``"none"`` and ``"null"`` (any case) mean "unset"
(``None``) for every non-string key that allows it (``grad_clip = "none"``, ``ema_decay = "none"``),
exactly as ``--set train.grad_clip=none`` does; for a key that does not allow it they stay
strings and are refused as such.
"""

from __future__ import annotations

import tomllib
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from flowmatch.couplings.base import COUPLINGS, CouplingConfig
from flowmatch.metrics.registry import METRICS
from flowmatch.models.base import MODELS, ModelConfig
from flowmatch.objectives.base import OBJECTIVES, ObjectiveConfig
from flowmatch.paths.schedules import PATHS, PathConfig
from flowmatch.registry import ComponentConfig, Registry
from flowmatch.solvers.base import SAMPLERS, SamplerConfig
from flowmatch.sources import SOURCES, SourceConfig
from flowmatch.times.grids import GRIDS, GridConfig
from flowmatch.times.samplers import TIME_SAMPLERS, TimeConfig
from flowmatch.train.config import TrainConfig
from flowmatch.utils.options import OptionError, Options, option

# Importing the modules that register the built-in components (their decorators run on import).
import flowmatch.couplings.ot  # noqa: E402, F401  isort: skip
import flowmatch.fewstep.boss  # noqa: E402, F401  isort: skip
import flowmatch.fewstep.flowmap  # noqa: E402, F401  isort: skip
import flowmatch.fewstep.freeflow  # noqa: E402, F401  isort: skip
import flowmatch.fewstep.meanflow  # noqa: E402, F401  isort: skip
import flowmatch.fewstep.reflow  # noqa: E402, F401  isort: skip
import flowmatch.fewstep.scm  # noqa: E402, F401  isort: skip
import flowmatch.fewstep.splitting  # noqa: E402, F401  isort: skip
import flowmatch.models.blockwise  # noqa: E402, F401  isort: skip
import flowmatch.models.dtm  # noqa: E402, F401  isort: skip
import flowmatch.models.mlp  # noqa: E402, F401  isort: skip
import flowmatch.models.unet  # noqa: E402, F401  isort: skip
import flowmatch.objectives.dtm  # noqa: E402, F401  isort: skip
import flowmatch.objectives.flow_matching  # noqa: E402, F401  isort: skip
import flowmatch.objectives.learned_source  # noqa: E402, F401  isort: skip
import flowmatch.objectives.pafm  # noqa: E402, F401  isort: skip
import flowmatch.objectives.repa  # noqa: E402, F401  isort: skip
import flowmatch.objectives.symmetric  # noqa: E402, F401  isort: skip
import flowmatch.objectives.vecor  # noqa: E402, F401  isort: skip
import flowmatch.objectives.wcfm  # noqa: E402, F401  isort: skip
import flowmatch.sources_extra  # noqa: E402, F401  isort: skip
import flowmatch.sources_learned  # noqa: E402, F401  isort: skip
import flowmatch.solvers.adaptive  # noqa: E402, F401  isort: skip
import flowmatch.solvers.flow_map  # noqa: E402, F401  isort: skip
import flowmatch.solvers.ode  # noqa: E402, F401  isort: skip
import flowmatch.solvers.sde  # noqa: E402, F401  isort: skip
import flowmatch.sampling.flowturbo  # noqa: E402, F401  isort: skip
import flowmatch.sampling.reflective  # noqa: E402, F401  isort: skip
import flowmatch.sampling.rewards  # noqa: E402, F401  isort: skip
import flowmatch.sampling.search  # noqa: E402, F401  isort: skip
import flowmatch.solvers.transition  # noqa: E402, F401  isort: skip


class ConfigError(OptionError):
    """A configuration key, value or file is invalid (the message names the key)."""


@dataclass(frozen=True)
class DataConfig(Options):
    """Which data to train on (the ``[data]`` section)."""

    name: str = option(
        "checkerboard",
        doc="built-in data set or a path to a .npy/.npz/.csv file or an image folder",
    )
    n_train: int | None = option(None, ge=1, doc="training samples (none: the data's default)")
    n_test: int | None = option(None, ge=1, doc="held-out samples (none: the data's default)")
    standardize: Literal["auto", "none", "per_feature", "global"] = option(
        "auto", doc="'auto': none for built-ins, per-feature for tables, global for images"
    )
    label_column: str | None = option(None, doc="CSV only: the column holding class labels")
    cond_columns: tuple[str, ...] = option(
        (), doc="CSV only: continuous condition columns (standardised unless standardize='none')"
    )
    latent: str | None = option(
        None,
        doc="flow in a latent space: 'pca:K' (exact PCA, K components) or an autoencoder run "
        "directory (flowmatch autoencoder train); samples and metrics are decoded",
    )

    def validate(self) -> None:
        """A data set has a name (an empty path would mean the working directory)."""
        if not self.name.strip():
            raise OptionError("name", "must name a built-in data set or a path, got ''")


def _default_sampler() -> SamplerConfig:
    return SAMPLERS.config("midpoint", nfe=16)  # type: ignore[return-value]


def _default_reference() -> SamplerConfig:
    return SAMPLERS.config("dopri5", atol=1e-5, rtol=1e-5)  # type: ignore[return-value]


@dataclass(frozen=True)
class SampleConfig(Options):
    """Defaults of ``flowmatch sample``, of snapshots and of the eval grid (``[sample]``)."""

    solver: SamplerConfig = option(
        default_factory=_default_sampler, doc="sampler and its budget, e.g. {kind, nfe}"
    )
    grid: GridConfig = option(
        default_factory=lambda: GRIDS.config("uniform"), doc="time grid (also used by eval)"
    )
    guidance: float = option(1.0, doc="classifier-free guidance scale (1 = none)")
    num_samples: int = option(2000, ge=1, doc="samples of the end-of-training snapshot")
    use_ema: bool = option(True, doc="use the EMA weights (sample, eval, snapshots)")

    def validate(self) -> None:
        """An adaptive solver chooses its own steps: only the uniform grid applies."""
        if SAMPLERS[self.solver.kind].adaptive and self.grid.kind != "uniform":
            raise OptionError(
                "grid",
                f"{self.grid.kind!r} does not apply to the adaptive solver "
                f"{self.solver.kind!r} (it chooses its own steps); use grid = 'uniform'",
            )


def _fixed_velocity_sampler(name: str) -> bool:
    """A fixed-step sampler (of velocity fields or of flow maps; stochastic ones are seeded)."""
    return not SAMPLERS[name].adaptive


@dataclass(frozen=True)
class EvalConfig(Options):
    """Defaults of ``flowmatch eval`` (``[eval]``)."""

    nfe: tuple[int, ...] = option((1, 2, 4, 8, 16, 32), ge=1, doc="evaluation budgets")
    solvers: tuple[str, ...] = option(
        ("euler", "midpoint"), doc="fixed-step samplers to compare (flow_map for flow-map runs)"
    )
    num_samples: int = option(2000, ge=2, doc="generated samples per row (and reference size)")
    reference: SamplerConfig = option(
        default_factory=_default_reference, doc="the adaptive reference row"
    )
    with_reference: bool = option(True, doc="add the reference row")
    metrics: tuple[str, ...] = option((), doc="metric names; empty: all that apply to the data")
    cond_bins: int = option(
        8, ge=1, doc="quantile bins of the condition value for the conditional W2 (value runs)"
    )

    def validate(self) -> None:
        """Registered fixed-step solvers, registered metrics, at least one usable row."""
        fixed = [n for n in SAMPLERS.names() if _fixed_velocity_sampler(n)]
        for name in self.solvers:
            if name not in fixed:
                raise OptionError(
                    "solvers", f"unknown fixed-step sampler {name!r}; choose from {fixed}"
                )
        for name in self.metrics:
            if name not in METRICS:
                raise OptionError(
                    "metrics", f"unknown metric {name!r}; choose from {METRICS.names()}"
                )
        usable = [(s, k) for s in self.solvers for k in self.nfe if k % SAMPLERS[s].stages == 0]
        if not usable and not self.with_reference:
            raise OptionError(
                "nfe",
                f"{list(self.nfe)} fits none of the solvers {list(self.solvers)} (an NFE must be a "
                "multiple of a solver's evaluations per step) and the reference row is off",
            )


@dataclass(frozen=True)
class RunConfig(Options):
    """Everything a run needs, resolved and written to ``config.json``."""

    plugins: tuple[str, ...] = option(
        (), doc="modules that register components (imported before parsing)"
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=lambda: MODELS.config())
    path: PathConfig = field(default_factory=lambda: PATHS.config())
    coupling: CouplingConfig = field(default_factory=lambda: COUPLINGS.config())
    time: TimeConfig = field(default_factory=lambda: TIME_SAMPLERS.config())
    source: SourceConfig = field(default_factory=lambda: SOURCES.config())
    objective: ObjectiveConfig = field(default_factory=lambda: OBJECTIVES.config())
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


#: The sections of a run config (tables of the TOML file).
SECTIONS: tuple[str, ...] = tuple(f.name for f in fields(RunConfig) if f.name != "plugins")


# ----------------------------------------------------------------------------------------------
# dict -> records with strict keys


def _is_component(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, ComponentConfig)


def _is_record(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Options)


def from_dict(cls: type, data: Any, prefix: str = "", default: Any = None) -> Any:
    """Build record ``cls`` from a nested dict; unknown keys and bad values raise.

    Args:
        cls: an :class:`~flowmatch.utils.options.Options` class (e.g. ``RunConfig``).
        data: the nested dict (a component may also be given as its name, a string).
        prefix: the dotted key of ``data`` (for messages), e.g. ``"sample."``.
        default: for components, the default record whose kind (and options) apply when
            ``data`` gives no ``kind``.

    Raises:
        ConfigError: the message names the key, the value and what was expected.
    """
    if _is_component(cls):
        return _component(cls, data, prefix, default)
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(where, f"must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            "",
            f"unknown config key(s) {[prefix + k for k in unknown]}; valid keys in "
            f"{prefix.rstrip('.') or 'the top level'}: {sorted(known)}",
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints[name]
        if _is_record(tp):
            kwargs[name] = from_dict(tp, value, f"{prefix}{name}.", _field_default(known[name]))
        else:
            kwargs[name] = _unset(value, tp)
    try:
        return cls(**kwargs)
    except OptionError as err:
        raise ConfigError(*_split(err.prefixed(prefix))) from None


#: Strings that mean "unset" for optional keys (TOML has no null).
NONE_WORDS = frozenset({"none", "null"})


def _unset(value: Any, tp: Any) -> Any:
    """``None`` for a ``"none"``/``"null"`` string given to an optional key, else ``value``.

    Optional *string* keys keep the text (a CSV column may be called "none").
    """
    if isinstance(value, str) and value.strip().lower() in NONE_WORDS:
        args = typing.get_args(tp)
        if type(None) in args and str not in args:
            return None
    return value


def _split(err: OptionError) -> tuple[str, str]:
    return err.key, err.reason


def _field_default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def _component(base: type, data: Any, prefix: str, default: Any) -> ComponentConfig:
    """Parse a component table (or a bare name) against its registry."""
    key = prefix.rstrip(".")
    if isinstance(data, str):
        data = {"kind": data}
    if not isinstance(data, dict):
        raise ConfigError(key, f"must be a {base.__name__} name or table, got {data!r}")
    registry: Registry[Any, Any] = base.registry  # type: ignore[attr-defined]
    kind = data.get("kind")
    options = dict(data)
    if kind is None:
        if not isinstance(default, ComponentConfig):
            kind = registry.default
        else:
            kind = default.kind
            options = {**default.options(), **data}
        if kind is None:
            raise ConfigError(f"{key}.kind", f"is required; choose one of {registry.names()}")
    options.pop("kind", None)
    try:
        entry = registry.entry(kind)
        unknown = sorted(set(options) - registry.option_names(kind))
        if unknown:
            raise registry.unknown_option(kind, unknown[0], options[unknown[0]])
        if not issubclass(entry.config, base):
            raise OptionError("kind", f"{kind!r} is not a {base.__name__}")
        hints = typing.get_type_hints(entry.config)
        options = {k: _unset(v, hints.get(k)) for k, v in options.items()}
        return entry.config(kind=kind, **options)
    except OptionError as err:
        raise ConfigError(*_split(err.prefixed(prefix))) from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (JSON/TOML friendly: tuples become lists; components keep ``kind``)."""
    return cfg.to_dict()


def parse_value(text: str) -> Any:
    """Parse the value of ``--set key=value`` as TOML.

    ``3``, ``1e-3``, ``true``, ``[1, 2]`` and ``"a"`` parse as TOML; bare words that are not
    TOML (``midpoint``, ``none``) are taken as strings. The schema then reads ``none`` and
    ``null`` as "unset" (``None``) for non-string keys that allow it, e.g.
    ``train.grad_clip=none``, as it does for TOML files; a string key keeps the word
    (``data.standardize=none`` is that option's own choice "none").
    """
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def overrides_dict(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["a.b=1", "a.c.d=x"]`` -> ``{"a": {"b": 1, "c": {"d": "x"}}}`` (validated later).

    Raises:
        ConfigError: a malformed item or an unknown section.
    """
    out: dict[str, Any] = {}
    top = {f.name for f in fields(RunConfig)}
    for item in overrides:
        if "=" not in item:
            raise ConfigError("--set", f"expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts) or (len(parts) == 1 and parts[0] not in set(top) - set(SECTIONS)):
            raise ConfigError(
                "--set", f"key must look like section.field (e.g. train.lr), got {key!r}"
            )
        if parts[0] not in top:
            raise ConfigError(
                "",
                f"unknown config section {parts[0]!r} in --set {item!r}; choose one of "
                f"{sorted(top)}",
            )
        table = out
        for part in parts[:-1]:
            child = table.get(part)
            if isinstance(child, str):  # a component given by name, now with options
                child = {"kind": child}
            table[part] = child = child if isinstance(child, dict) else {}
            table = child
        table[parts[-1]] = parse_value(text.strip())
    return out


def apply_overrides(base: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``base`` with ``--set`` overrides merged on top (see :func:`merge`)."""
    return merge(base, overrides_dict(overrides))


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of config dicts; ``top`` wins.

    A component table whose ``kind`` changes is replaced, not merged: options of the old kind
    do not leak into the new one (``model.kind = "mlp"`` over a UNet preset drops its UNet
    options). A bare name counts as ``{"kind": name}``.
    """
    out = dict(base)
    for k, v in top.items():
        old = out.get(k)
        if isinstance(v, str) and isinstance(old, dict):
            v = {"kind": v}
        if isinstance(old, str) and isinstance(v, dict):
            old = {"kind": old}
        if isinstance(v, dict) and isinstance(old, dict):
            same = "kind" not in v or "kind" not in old or v["kind"] == old["kind"]
            out[k] = merge(old, v) if same else dict(v)
        else:
            out[k] = v
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a dict (errors name the file).

    Raises:
        ConfigError: the file is missing, not UTF-8 or not valid TOML.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError("", f"config file {str(p)!r} is a directory, not a TOML file")
    if not p.is_file():
        raise ConfigError("", f"config file {str(p)!r} does not exist")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError("", f"config file {str(p)!r} is not UTF-8 text: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"config file {str(p)!r} is not valid TOML: {e}") from None
