"""Registries: every registered name round-trips config -> object -> resolved config."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from flowmatch.api.config import fill_missing, objective_run_defaults
from flowmatch.config import RunConfig, from_dict, to_dict
from flowmatch.config.build import build_modules, build_parts, build_step
from flowmatch.interfaces import CondSpec
from flowmatch.registry import ComponentConfig, Registry, registries
from flowmatch.utils.options import OptionError, option

# The sections whose kinds a run config names directly, and a context that builds every kind.
SECTIONS = {
    "path": "path",
    "coupling": "coupling",
    "time": "time sampler",
    "source": "source",
    "objective": "objective",
    "model": "model",
}


def _all(concept: str) -> list[str]:
    return registries()[concept].names()


# Kinds that only build together with another section's kind (a learned source and the
# objectives that train it), and the conditioning they need.
COMPANIONS = {
    "learned_gaussian": {"objective": {"kind": "csfm"}},
    "csfm": {"source": {"kind": "learned_gaussian"}},
    "crossflow": {"source": {"kind": "learned_gaussian"}, "model": {"conditional": "yes"}},
    "dtm": {"model": {"kind": "dtm"}},
    "symmetric": {"source": {"kind": "symmetric_labels"}, "model": {"conditional": "yes"}},
    "symmetric_labels": {"objective": {"kind": "symmetric"}, "model": {"conditional": "yes"}},
}


def test_every_concept_has_a_registry():
    names = set(registries())
    assert {"path", "coupling", "time sampler", "source", "objective", "model", "sampler"} <= names
    assert {"grid", "metric"} <= names


@pytest.mark.parametrize(
    ("section", "name"),
    [(s, n) for s, concept in SECTIONS.items() for n in _all(concept)],
)
def test_section_kinds_round_trip(section, name):
    # config -> object -> resolved config (JSON) -> config: equal, and the object builds.
    shape = (1, 8, 8) if name == "unet" else (2,)
    labelled = name in ("class_ot", "crossflow", "symmetric", "symmetric_labels")
    cond = CondSpec(num_classes=3) if labelled else CondSpec()
    extra = {"model": {"conditional": "yes"}} if name == "class_ot" else {}
    raw = {section: {"kind": name}, **extra, **COMPANIONS.get(name, {})}
    # What resolve_config adds: an objective's needs of the run (a two-time model, ...).
    raw = fill_missing(raw, objective_run_defaults(raw))
    cfg = from_dict(RunConfig, raw)
    assert getattr(cfg, section).kind == name
    again = from_dict(RunConfig, json.loads(json.dumps(to_dict(cfg))))
    assert again == cfg
    modules = build_modules(cfg, shape, cond)
    step = build_step(build_parts(cfg, shape, cond), cfg)
    assert step.field(modules) is not None


@pytest.mark.parametrize("name", _all("sampler"))
def test_sampler_kinds_round_trip(name):
    cfg = from_dict(RunConfig, {"sample": {"solver": name}})
    assert cfg.sample.solver.kind == name
    assert from_dict(RunConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg
    from flowmatch.config.build import build_sampler

    assert build_sampler(cfg.sample.solver).name == name


@pytest.mark.parametrize("name", _all("grid"))
def test_grid_kinds_round_trip(name):
    from flowmatch.times import make_grid

    grid = {"kind": name, "values": [0, 0.2, 0.5, 0.7, 1]} if name == "values" else name
    cfg = from_dict(RunConfig, {"sample": {"grid": grid}})
    assert from_dict(RunConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg
    from flowmatch.times import GRIDS

    if getattr(GRIDS[name], "stored_in_run", False):  # BOSS: made from a run (test_boss_api.py)
        return
    grid = make_grid(cfg.sample.grid, 4)
    assert grid.shape == (5,) and grid[0] == 0 and grid[-1] == 1


@pytest.mark.parametrize("name", _all("metric"))
def test_metric_kinds_are_configurable(name):
    cfg = from_dict(RunConfig, {"eval": {"metrics": [name]}})
    assert cfg.eval.metrics == (name,)


@pytest.mark.parametrize(("section", "concept"), list(SECTIONS.items()))
def test_unknown_kind_lists_the_registered_ones(section, concept):
    names = _all(concept)
    with pytest.raises(ValueError, match=rf"{section}.kind: unknown {concept} 'nope'") as err:
        from_dict(RunConfig, {section: {"kind": "nope"}})
    assert str(names) in str(err.value)


def test_option_of_another_kind_names_its_owner():
    with pytest.raises(ValueError, match=r"coupling.reg=0.1 only applies to the 'sinkhorn'"):
        from_dict(RunConfig, {"coupling": {"kind": "exact_ot", "reg": 0.1}})


def test_kind_change_replaces_the_table_when_merging():
    from flowmatch.config import merge

    base = {"model": {"kind": "unet", "base_channels": 8}}
    assert merge(base, {"model": {"kind": "mlp"}}) == {"model": {"kind": "mlp"}}
    assert merge(base, {"model": {"dropout": 0.1}})["model"] == {
        "kind": "unet",
        "base_channels": 8,
        "dropout": 0.1,
    }
    assert merge({"sample": {"solver": "dopri5"}}, {"sample": {"solver": {"atol": 1e-3}}}) == {
        "sample": {"solver": {"kind": "dopri5", "atol": 1e-3}}
    }


def test_registry_contract_errors():
    @dataclass(frozen=True)
    class ThingConfig(ComponentConfig):
        pass

    @dataclass(frozen=True)
    class BigConfig(ThingConfig):
        size: int = option(1, ge=1)

    things = Registry("test thing", ThingConfig)
    try:
        things.add("small", lambda: "s")
        things.add("big", lambda size=1: f"b{size}", config=BigConfig)
        assert things.build(things.config("big", size=3)) == "b3"
        assert things["small"]() == "s" and "big" in things and len(things) == 2
        with pytest.raises(ValueError, match="'small' is already registered"):
            things.add("small", lambda: "x")
        with pytest.raises(ValueError, match="letters, digits and '_'"):
            things.add("bad name", lambda: "x")
        with pytest.raises(TypeError, match="must subclass ThingConfig"):
            things.add("other", lambda: "x", config=RunConfig)  # type: ignore[arg-type]
        with pytest.raises(OptionError, match=r"size must be >= 1, got 0"):
            things.config("big", size=0)
        with pytest.raises(
            OptionError, match=r"unknown test thing 'huge'; choose one of \['big', 'small'\]"
        ):
            things.config("huge")
        with pytest.raises(
            OptionError, match=r"size=3 only applies to the 'big' test thing, not 'small'"
        ):
            things.config("small", size=3)
        assert ThingConfig().kind == "small"  # the one name registered with ThingConfig
        things.add("tiny", lambda: "t")
        with pytest.raises(
            OptionError, match=r"kind is required for ThingConfig .*\['small', 'tiny'\]"
        ):
            ThingConfig()
    finally:
        from flowmatch import registry as reg_mod

        reg_mod._ALL.pop("test thing", None)


def test_plugin_import_error_names_the_module():
    from flowmatch.registry import PluginError, load_plugins

    with pytest.raises(
        PluginError, match="plugin 'no_such_flowmatch_plugin' could not be imported"
    ):
        load_plugins(["no_such_flowmatch_plugin"])


def test_built_model_is_seeded_by_train_seed():
    a = build_modules(from_dict(RunConfig, {"train": {"seed": 3}}), (2,), CondSpec())["model"]
    b = build_modules(from_dict(RunConfig, {"train": {"seed": 3}}), (2,), CondSpec())["model"]
    c = build_modules(from_dict(RunConfig, {"train": {"seed": 4}}), (2,), CondSpec())["model"]
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    state = torch.get_rng_state()
    build_modules(RunConfig(), (2,), CondSpec())
    assert torch.equal(state, torch.get_rng_state())  # building leaves the global RNG alone
