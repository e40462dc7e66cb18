"""TrainConfig: every field validated with a message naming it; dict round-trip."""

import pytest

from flowmatch.train import TrainConfig


def test_defaults_match_the_design():
    cfg = TrainConfig()
    assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.betas) == (5000, 256, 1e-3, (0.9, 0.999))
    assert (cfg.lr_schedule, cfg.grad_clip, cfg.ema_decay, cfg.precision) == (
        "constant",
        None,
        0.999,
        "fp32",
    )
    assert (cfg.warmup_steps, cfg.min_lr_ratio) == (0, 0.0)
    assert (cfg.log_every, cfg.eval_every, cfg.checkpoint_every, cfg.keep_checkpoints) == (
        100,
        0,
        1000,
        2,
    )
    assert cfg.device == "cpu" and cfg.compile is False and cfg.seed == 0


def test_dict_round_trip_and_normalisation():
    # TOML gives ints for floats and lists for pairs; the config stores canonical types.
    cfg = TrainConfig(lr=1, betas=[0.5, 0.9], grad_clip=2, ema_decay=None, steps=10)
    assert isinstance(cfg.lr, float) and cfg.betas == (0.5, 0.9)
    assert isinstance(cfg.grad_clip, float)
    d = cfg.to_dict()
    assert d["betas"] == [0.5, 0.9]
    assert TrainConfig.from_dict(d) == cfg


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown TrainConfig key\(s\) \['lr_decay'\]"):
        TrainConfig.from_dict({"lr_decay": 0.1})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps must be >= 1, got 0"),
        ({"batch_size": -4}, "batch_size must be >= 1, got -4"),
        ({"lr": 0.0}, "lr must be > 0, got 0.0"),
        ({"lr": float("nan")}, "lr must be finite"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ({"betas": (0.9,)}, r"betas must be a pair \(beta1, beta2\)"),
        ({"betas": (0.9, 1.0)}, r"betas must lie in \[0, 1\)"),
        ({"warmup_steps": -1}, "warmup_steps must be >= 0"),
        ({"steps": 10, "warmup_steps": 11}, "warmup_steps must be <= steps = 10, got 11"),
        ({"lr_schedule": "linear"}, r"unknown lr_schedule 'linear'; choose one of \['constant'"),
        ({"min_lr_ratio": 1.5}, r"min_lr_ratio must be in \[0, 1\], got 1.5"),
        ({"grad_clip": 0.0}, "grad_clip must be > 0 .or None to disable clipping., got 0.0"),
        ({"ema_decay": 1.0}, r"ema_decay must be in \(0, 1\) .or None to disable EMA., got 1.0"),
        ({"precision": "fp16"}, r"unknown precision 'fp16'; choose one of \['bf16', 'fp32'\]"),
        ({"seed": -1}, "seed must be >= 0, got -1"),
        ({"log_every": 0}, "log_every must be >= 1, got 0"),
        ({"eval_every": -1}, "eval_every must be >= 0, got -1"),
        ({"checkpoint_every": -5}, "checkpoint_every must be >= 0, got -5"),
        ({"keep_checkpoints": 0}, "keep_checkpoints must be >= 1, got 0"),
        ({"device": "gpu0"}, "device 'gpu0' is not a valid torch device string"),
    ],
)
def test_out_of_range_values_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 1.5}, r"steps must be an int, got 1.5 \(float\)"),
        ({"batch_size": True}, "batch_size must be an int, got True"),
        ({"lr": "1e-3"}, "lr must be a number, got '1e-3'"),
        ({"betas": (0.9, "x")}, r"betas\[1\] must be a number"),
        ({"compile": "yes"}, "compile must be a bool, got 'yes'"),
        ({"device": 0}, "device must be a str"),
    ],
)
def test_wrong_types_raise_type_error(kwargs, match):
    with pytest.raises(TypeError, match=match):
        TrainConfig(**kwargs)


def test_frozen():
    cfg = TrainConfig()
    with pytest.raises(AttributeError):
        cfg.lr = 1.0  # type: ignore[misc]
