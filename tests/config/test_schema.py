import json

import pytest

from flowmatch.config.build import build_model, build_parts, build_sampler, build_step, cond_spec
from flowmatch.config.schema import (
    ConfigError,
    RunConfig,
    apply_overrides,
    from_dict,
    load_toml,
    overrides_dict,
    parse_value,
    to_dict,
)
from flowmatch.data import ArrayDataset
from flowmatch.solvers import Dopri5, Midpoint


def test_round_trip_defaults():
    cfg = RunConfig()
    d = to_dict(cfg)
    assert from_dict(RunConfig, json.loads(json.dumps(d))) == cfg


def test_toml_round_trip(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text('[data]\nname = "moons"\n[train]\nsteps = 7\nlr = 1\n[eval]\nnfe = [1, 2]\n')
    cfg = from_dict(RunConfig, load_toml(p))
    assert cfg.data.name == "moons" and cfg.train.steps == 7
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # int accepted for a float
    assert cfg.eval.nfe == (1, 2)


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['train.lrr'\]"):
        from_dict(RunConfig, {"train": {"lrr": 1e-3}})
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['bogus'\]"):
        from_dict(RunConfig, {"bogus": {}})


def test_type_change_is_an_error():
    with pytest.raises(ConfigError, match="train.steps must be an int, got 'many'"):
        from_dict(RunConfig, {"train": {"steps": "many"}})
    with pytest.raises(ConfigError, match="train.steps must be an int, got 1.5"):
        from_dict(RunConfig, {"train": {"steps": 1.5}})
    with pytest.raises(
        ConfigError, match=r"sample.solver.kind: unknown sampler 'rk45'; choose one of .*'rk4'"
    ):
        from_dict(RunConfig, {"sample": {"solver": "rk45"}})


def test_out_of_range_value_names_the_section():
    with pytest.raises(ConfigError, match="train"):
        from_dict(RunConfig, {"train": {"steps": 0}})


def test_overrides_parse_toml_values():
    d = apply_overrides(
        {},
        [
            "train.lr=3e-4",
            "sample.solver=heun",
            "eval.nfe=[1, 4]",
            "model.kind=unet",
            "model.attention=true",
        ],
    )
    cfg = from_dict(RunConfig, d)
    assert cfg.train.lr == 3e-4 and cfg.sample.solver.kind == "heun"
    assert cfg.eval.nfe == (1, 4) and cfg.model.attention is True
    assert parse_value("midpoint") == "midpoint" and parse_value("2") == 2


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("train.lr", "key=value"),
        ("lr=1", "section.field"),
        ("nope.x=1", "unknown config section 'nope'"),
    ],
)
def test_bad_overrides(item, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides({}, [item])


def test_missing_or_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(bad)


def test_builders():
    import torch

    ds = ArrayDataset(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 2, 1]), 3)
    cfg = from_dict(RunConfig, {"model": {"kind": "unet", "base_channels": 8}})
    cond = cond_spec(cfg.model, ds)
    assert cond.num_classes == 3  # conditional = "auto": labelled data
    model = build_model(cfg.model, ds.sample_shape, cond)
    assert model(torch.zeros(2, 1, 8, 8), torch.rand(2), torch.tensor([0, 3])).shape == (2, 1, 8, 8)
    step = build_step(build_parts(cfg, ds.sample_shape, cond), cfg)
    obj = step.objective
    assert obj.cond_dropout == cfg.objective.cond_dropout and obj.null_label == 3
    assert isinstance(build_sampler("midpoint"), Midpoint)
    assert isinstance(build_sampler("dopri5", atol=1e-3), Dopri5)
    with pytest.raises(ValueError, match="unknown sampler 'rk45'"):
        build_sampler("rk45")
    flat = ArrayDataset(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="needs square images"):
        build_model(from_dict(RunConfig, {"model": {"kind": "unet"}}).model, flat.sample_shape)
    with pytest.raises(ValueError, match="has no labels"):
        cond_spec(from_dict(RunConfig, {"model": {"conditional": "yes"}}).model, flat)
    assert not cond_spec(
        from_dict(RunConfig, {"model": {"conditional": "no"}}).model, ds
    ).conditional


def test_none_unsets_optional_numbers_from_toml_and_set(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text('[train]\ngrad_clip = "none"\nema_decay = "none"\n')
    cfg = from_dict(RunConfig, load_toml(p))
    assert cfg.train.grad_clip is None and cfg.train.ema_decay is None
    cfg = from_dict(RunConfig, apply_overrides({}, ["train.grad_clip=none"]))
    assert cfg.train.grad_clip is None
    # A string option keeps the literal text (a CSV column may be called "none").
    assert from_dict(RunConfig, {"data": {"label_column": "none"}}).data.label_column == "none"


def test_dry_run_rejects_bad_values_before_training(capsys):
    from flowmatch.cli.main import main

    for argv, match in [
        (["--set", "sample.solver.nfe=3"], "sample.solver.nfe must be a multiple of midpoint's 2"),
        (["--set", "train.lr=-1"], "train.lr must be > 0, got -1.0"),
        (["--set", "coupling.reg=0.1"], "coupling.reg=0.1 only applies to the 'sinkhorn'"),
        (["--set", "sample.solver=dopri5", "--set", "sample.grid=shifted"], "sample.grid"),
        (["--set", "eval.solvers=['dopri5']"], "eval.solvers"),
        (["--set", "model.kind=unet"], "needs square images"),
        (["--set", "sample.guidance=2"], "sample.guidance=2.0 needs a conditional model"),
    ]:
        assert main(["train", "--dry-run", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], (argv, err)


@pytest.mark.parametrize("word", ["none", "None", "NULL", " none "])
def test_toml_none_strings_unset_optional_keys(tmp_path, word):
    # TOML has no null: "none" unsets a key that allows it, as --set train.grad_clip=none does.
    p = tmp_path / "c.toml"
    p.write_text(
        f'[train]\ngrad_clip = "{word}"\nema_decay = "{word}"\n[data]\nn_train = "{word}"\n'
    )
    cfg = from_dict(RunConfig, load_toml(p))
    assert cfg.train.grad_clip is None and cfg.train.ema_decay is None and cfg.data.n_train is None
    from_set = from_dict(
        RunConfig, overrides_dict(["train.grad_clip=none", "train.ema_decay=None"])
    )
    assert from_set.train.grad_clip is None and from_set.train.ema_decay is None


def test_none_strings_stay_strings_where_unset_is_not_allowed(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[train]\nsteps = "none"\n')
    with pytest.raises(ConfigError, match=r"train.steps must be an int, got 'none' \(str\)"):
        from_dict(RunConfig, load_toml(p))
    with pytest.raises(ConfigError, match=r"train.steps must be an int, got 'none' \(str\)"):
        from_dict(RunConfig, overrides_dict(["train.steps=none"]))
    # A string option whose own choice is the word "none" keeps it (it is not "unset").
    assert from_dict(RunConfig, overrides_dict(["data.standardize=none"])).data.standardize == (
        "none"
    )
    assert from_dict(RunConfig, overrides_dict(["train.grad_clip=none"])).train.grad_clip is None


def test_non_utf8_toml_names_the_file(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes("[train]\n# caf\xe9\nsteps = 3\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"config file '.*latin1.toml' is not UTF-8 text"):
        load_toml(p)


def test_a_directory_as_config_file_and_an_empty_data_name(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, not a TOML file"):
        load_toml(tmp_path)
    with pytest.raises(ConfigError, match=r"data.name must name a built-in data set or a path"):
        from_dict(RunConfig, {"data": {"name": " "}})
