"""Registries: one per concept, mapping a name to a class and that kind's own option record.

Every component a config file can name (a schedule, a coupling, a time sampler, a source, an
objective, a model, a sampler, a time grid, a metric, a data set) is registered under a name
together with a frozen :class:`ComponentConfig` subclass holding its options. The config
schema, the builders, the CLI's ``choices`` and ``--help`` and the docs tables are all
generated from the registries, so a new component is one registration, never an edit of an
``if/elif`` chain::

    @dataclass(frozen=True)
    class JitterConfig(CouplingConfig):
        scale: float = option(0.1, gt=0, doc="std of the jitter added to x0")

    @COUPLINGS.register("jitter", config=JitterConfig)
    class JitterCoupling(Coupling):
        def __init__(self, scale: float = 0.1) -> None: ...

User code joins explicitly: a module that registers components is named in a run's
``plugins = ["mypkg.flows"]`` (recorded in the resolved config, so ``sample``, ``eval`` and
``--resume`` import it again), or is published under the entry-point group
``flowmatch.plugins``. Nothing is ever resolved as "any importable class".
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Generic, TypeVar

from flowmatch.utils.options import OptionError, Options, options_dict

__all__ = [
    "ComponentConfig",
    "Entry",
    "PluginError",
    "Registry",
    "load_plugins",
    "registries",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
X = TypeVar("X")
C = TypeVar("C", bound="ComponentConfig")

ENTRY_POINT_GROUP = "flowmatch.plugins"


class PluginError(ImportError):
    """A plugin module named in a config (or an entry point) could not be imported."""


@dataclass(frozen=True)
class ComponentConfig(Options):
    """Options of one registered component; ``kind`` is its registry name.

    Subclass the concept's base (``CouplingConfig``, ``SamplerConfig``, ...) and add fields
    with :func:`~flowmatch.utils.options.option`. ``kind`` may be left out when exactly one
    registered name uses the class.
    """

    kind: str = ""
    registry: ClassVar[Registry[Any, Any]]

    def __post_init__(self) -> None:
        reg = _registry_of(type(self))
        if self.kind == "":
            owners = [e.name for e in reg.entries() if e.config is type(self)]
            if len(owners) != 1:
                raise OptionError(
                    "kind",
                    f"is required for {type(self).__name__} (registered as {owners or 'nothing'}); "
                    f"choose one of {reg.names()}",
                )
            object.__setattr__(self, "kind", owners[0])
        entry = reg.entry(self.kind)
        if type(self) is not entry.config:
            raise OptionError(
                "kind",
                f"{self.kind!r} takes options {entry.config.__name__}, not {type(self).__name__}",
            )
        super().__post_init__()

    def options(self) -> dict[str, Any]:
        """The options without ``kind`` (the keyword arguments of the default builder)."""
        out = options_dict(self)
        out.pop("kind")
        return out


def _registry_of(cls: type) -> Registry[Any, Any]:
    reg = getattr(cls, "registry", None)
    if not isinstance(reg, Registry):
        raise TypeError(
            f"{cls.__name__} is not attached to a registry: subclass a concept's config base "
            "(e.g. CouplingConfig), not ComponentConfig itself"
        )
    return reg


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component.

    Attributes:
        name: its registry name (the ``kind`` in configs).
        target: the class (or factory) it builds.
        config: its option record class.
        build: ``build(config, **context) -> object``; ``None`` calls
            ``target(**config.options())``.
        help: one line for ``--help`` and the docs (default: the target's docstring summary).
        module: the module that registered it.
    """

    name: str
    target: Callable[..., T]
    config: type[ComponentConfig]
    build: Callable[..., T] | None
    help: str
    module: str


_ALL: dict[str, Registry[Any, Any]] = {}


class Registry(Mapping[str, Any], Generic[T, C]):
    """Name -> (class, option record) for one concept.

    A registry is a read-only mapping from name to the registered class (``SAMPLERS["rk4"]``
    is ``RK4``); :meth:`entry` gives the full record, :meth:`build` an object from a config.

    Args:
        concept: what is registered, singular (``"coupling"``); used in messages.
        base: the concept's :class:`ComponentConfig` subclass; entries registered without a
            ``config`` use it (they take no options beyond the base's).
        default: the name used when a config leaves ``kind`` out.
        context: keyword arguments every builder of this concept receives (e.g. a model
            builder gets ``sample_shape``).
        build: the concept's default builder ``build(entry, config, **context)`` for entries
            registered without their own; ``None``: ``entry.target(**config.options())``.

    Raises:
        ValueError: a registry of that concept already exists.
    """

    def __init__(
        self,
        concept: str,
        base: type[C],
        *,
        default: str | None = None,
        context: Sequence[str] = (),
        build: Callable[..., T] | None = None,
    ) -> None:
        if concept in _ALL:
            raise ValueError(f"a registry for {concept!r} already exists")
        self.concept = concept
        self.base = base
        self.default = default
        self.context = tuple(context)
        self.default_build = build
        self._entries: dict[str, Entry[T]] = {}
        base.registry = self
        _ALL[concept] = self

    def __repr__(self) -> str:
        return f"Registry({self.concept!r}, {list(self._entries)})"

    # ------------------------------------------------------------------ registration
    def register(
        self,
        name: str,
        *,
        config: type[ComponentConfig] | None = None,
        build: Callable[..., T] | None = None,
        help: str | None = None,
    ) -> Callable[[X], X]:
        """Decorator registering a class (or factory function) under ``name``.

        Args:
            name: the registry name: lowercase letters, digits and ``_``.
            config: the option record (a subclass of this registry's base); default the base.
            build: ``build(config, **context) -> object`` when the class is not simply
                ``target(**options)``.
            help: one line of help (default: the first line of the target's docstring).

        Raises:
            ValueError: a bad or already registered name.
            TypeError: ``config`` is not a subclass of the base.
        """

        def decorate(target: X) -> X:
            self.add(name, target, config=config, build=build, help=help)  # type: ignore[arg-type]
            return target

        return decorate

    def add(
        self,
        name: str,
        target: Callable[..., T],
        *,
        config: type[ComponentConfig] | None = None,
        build: Callable[..., T] | None = None,
        help: str | None = None,
    ) -> Entry[T]:
        """Register ``target`` under ``name`` (the non-decorator form of :meth:`register`)."""
        if not isinstance(name, str) or not name or not all(c.isalnum() or c == "_" for c in name):
            raise ValueError(
                f"{self.concept} name must be a non-empty string of letters, digits and '_', "
                f"got {name!r}"
            )
        if name in self._entries:
            raise ValueError(
                f"{self.concept} {name!r} is already registered (by {self._entries[name].module})"
            )
        cfg = self.base if config is None else config
        if not (isinstance(cfg, type) and issubclass(cfg, self.base)):
            raise TypeError(
                f"config of {self.concept} {name!r} must subclass {self.base.__name__}, got {cfg!r}"
            )
        if build is None and self.default_build is None and self.context:
            raise TypeError(
                f"{self.concept} {name!r} needs a build(config, *, {', '.join(self.context)}) "
                "function: this concept's builders receive that context"
            )
        doc = help if help is not None else (inspect.getdoc(target) or "").split("\n")[0]
        module = getattr(target, "__module__", "?")
        if isinstance(target, type):
            own = target.__dict__.get("name")
            if own is not None and own != name:
                raise ValueError(
                    f"{target.__name__}.name is {own!r} but it is registered as {name!r}"
                )
            if own is None:
                target.name = name  # type: ignore[attr-defined]  # the one place a name is set
        entry: Entry[T] = Entry(name, target, cfg, build, doc, module)
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests that register temporary components)."""
        self._entries.pop(name, None)

    # ------------------------------------------------------------------ lookup
    def _load(self) -> None:
        _load_entry_points()

    def entries(self) -> list[Entry[T]]:
        """All entries in registration order."""
        self._load()
        return list(self._entries.values())

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __getitem__(self, name: str) -> Any:
        self._load()
        if name not in self._entries:
            raise KeyError(
                f"{name!r} is not a registered {self.concept}; choose one of {self.names()}"
            )
        return self._entries[name].target

    def entry(self, name: str) -> Entry[T]:
        """The entry of ``name``.

        Raises:
            OptionError: unknown name (the message lists the registered ones).
        """
        self._load()
        if name not in self._entries:
            raise OptionError(
                "kind",
                f"unknown {self.concept} {name!r}; choose one of {self.names()} "
                "(plugins can register more: docs/extending.md)",
            )
        return self._entries[name]

    def config(self, name: str | None = None, **options: Any) -> C:
        """The option record of ``name`` (default: the registry's default) with ``options``.

        Raises:
            OptionError: unknown name, option or bad value.
        """
        kind = self.default if name is None else name
        if kind is None:
            raise OptionError("kind", f"is required; choose a {self.concept} from {self.names()}")
        entry = self.entry(kind)
        unknown = sorted(set(options) - self.option_names(kind))
        if unknown:
            raise self.unknown_option(kind, unknown[0], options[unknown[0]])
        return entry.config(kind=kind, **options)  # type: ignore[return-value]

    def option_names(self, name: str) -> set[str]:
        """The option names of ``name`` (without ``kind``)."""
        return {f.name for f in fields(self.entry(name).config) if f.init} - {"kind"}

    def unknown_option(self, kind: str, option: str, value: Any) -> OptionError:
        """The error for an option that ``kind`` does not have (names the kinds that do)."""
        owners = [n for n in self.names() if option in self.option_names(n)]
        if owners:
            which = ", ".join(repr(n) for n in owners)
            return OptionError(
                option, f"={value!r} only applies to the {which} {self.concept}, not {kind!r}"
            )
        known = sorted(self.option_names(kind))
        return OptionError(
            option, f"is not an option of {self.concept} {kind!r}; its options: {known or 'none'}"
        )

    def build(self, config: C, **context: Any) -> T:
        """Build the component described by ``config``.

        Args:
            config: an option record of this registry.
            **context: this concept's context (see ``context``), passed to custom builders.

        Raises:
            TypeError: ``config`` belongs to another concept, or the context is incomplete.
        """
        if not isinstance(config, self.base):
            raise TypeError(
                f"expected a {self.base.__name__} for a {self.concept}, got {type(config).__name__}"
            )
        missing = [k for k in self.context if k not in context]
        if missing:
            raise TypeError(f"building a {self.concept} needs {missing}")
        entry = self.entry(config.kind)
        ctx = {k: context[k] for k in self.context}
        if entry.build is not None:
            return entry.build(config, **ctx)
        if self.default_build is not None:
            return self.default_build(entry, config, **ctx)
        return entry.target(**config.options())

    def table(self) -> list[tuple[str, str]]:
        """``(name, help)`` rows for documentation."""
        return [(e.name, e.help) for e in sorted(self.entries(), key=lambda e: e.name)]


def registries() -> dict[str, Registry[Any, Any]]:
    """Every registry by concept name (after importing flowmatch's built-in components)."""
    _load_entry_points()
    return dict(_ALL)


_ENTRY_POINTS_LOADED = False


def _load_entry_points() -> None:
    """Import the modules published under the ``flowmatch.plugins`` entry-point group, once."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
        except Exception as err:
            raise PluginError(
                f"flowmatch plugin entry point {ep.name!r} ({ep.value}) failed to load: {err}"
            ) from err
        if callable(loaded) and not inspect.ismodule(loaded):
            loaded()
        logger.info("loaded flowmatch plugin %s (%s)", ep.name, ep.value)


def load_plugins(modules: Sequence[str]) -> None:
    """Import plugin modules (each registers its components when imported).

    Args:
        modules: importable module names, e.g. ``["mypkg.flows"]``.

    Raises:
        PluginError: a module cannot be imported (the message names it and the cause).
    """
    for name in modules:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin names must be module names (strings), got {name!r}")
        try:
            importlib.import_module(name)
        except Exception as err:
            raise PluginError(
                f"plugin {name!r} could not be imported: {type(err).__name__}: {err} "
                "(is it installed or on PYTHONPATH?)"
            ) from err
