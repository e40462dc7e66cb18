"""The trainer around a pluggable step: two trained modules, a frozen teacher, a batch source.

A student regresses a frozen teacher's one-step (Euler, one interval) output from the noise:
the kind of step distillation methods are made of. Everything the trainer guarantees for flow
matching must hold for it: EMA of every trained module, bit-exact resume, NaN detection naming
the step and the quantity, the step's logs in metrics.jsonl.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from flowmatch.data import Batch
from flowmatch.models import MLP
from flowmatch.objectives import LossOutput, TrainingStep
from flowmatch.train import NonFiniteError, TrainConfig, Trainer


def _net(seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP(2, hidden=16, depth=2, time_dim=8)


class OneStepDistillation(TrainingStep):
    """``student(x0, 0) + head(x0) ~= x0 + teacher(x0, 0)``: two trained modules, one frozen."""

    trains = ("student", "head")
    uses = ("teacher",)

    def __init__(self, nan_at_call: int | None = None) -> None:
        self.calls, self.nan_at_call = 0, nan_at_call

    def __call__(self, modules: Mapping[str, nn.Module], batch: Batch, generator) -> LossOutput:
        self.calls += 1
        x0 = torch.randn(batch.x1.shape, generator=generator)
        t0 = torch.zeros(x0.shape[0])
        with torch.no_grad():
            target = x0 + modules["teacher"](x0, t0)  # one Euler step of the teacher, t: 0 -> 1
        pred = x0 + modules["student"](x0, t0) + modules["head"](x0)
        loss = (pred - target).square().mean(1)
        if self.calls == self.nan_at_call:
            loss = loss * float("nan")
        return LossOutput(loss, logs={"target_norm": target.norm(dim=1).mean()})


@dataclass
class NoiseBatches:
    """A batch source that is not a dataset: ``batch_at(k)`` generated from k (pure)."""

    batch_size: int = 32

    def batch_at(self, step: int) -> Batch:
        g = torch.Generator().manual_seed(1000 + step)
        return Batch(x1=torch.randn(self.batch_size, 2, generator=g))


def _trainer(out, steps: int, *, step: TrainingStep | None = None, **cfg) -> Trainer:
    config = TrainConfig(steps=steps, batch_size=32, log_every=5, checkpoint_every=10, **cfg)
    return Trainer(
        {"student": _net(1), "head": nn.Linear(2, 2)},
        step or OneStepDistillation(),
        NoiseBatches(),
        config,
        frozen={"teacher": _net(2)},
        out_dir=out,
    )


def _state(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {}
    for name, module in trainer.modules.items():
        out.update({f"{name}.{k}": v.clone() for k, v in module.state_dict().items()})
    for name, ema in (trainer.emas or {}).items():
        out.update({f"ema.{name}.{k}": v.clone() for k, v in ema.state_dict().items()})
    return out


def test_two_module_step_learns_with_ema_and_logs(tmp_path):
    trainer = _trainer(tmp_path / "a", 200, lr=3e-3)
    first = trainer.fit(until_step=5).loss
    result = trainer.fit()
    assert result.loss < 0.5 * first  # the student learns the teacher's map
    assert set(trainer.emas) == {"student", "head"}  # one EMA per trained module
    teacher = trainer.frozen["teacher"]
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    records = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert all("target_norm" in r for r in records if "loss" in r)  # the step's logs
    files = sorted(p.name for p in (tmp_path / "a" / "checkpoints" / "step_0000200").iterdir())
    assert files == [
        "head.ema.safetensors",
        "head.safetensors",
        "optimizer.safetensors",
        "state.json",
        "student.ema.safetensors",
        "student.safetensors",
    ]


def test_two_module_step_resumes_bit_exactly(tmp_path):
    straight = _trainer(tmp_path / "straight", 30)
    straight.fit()
    interrupted = _trainer(tmp_path / "resumed", 30)
    interrupted.fit(until_step=10)
    resumed = Trainer.resume(
        tmp_path / "resumed",
        {"student": _net(7), "head": nn.Linear(2, 2)},  # fresh weights: all come from disk
        OneStepDistillation(),
        NoiseBatches(),
        frozen={"teacher": _net(2)},
    )
    assert resumed.step == 10
    resumed.fit()
    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_teacher(tmp_path):
    _trainer(tmp_path, 10).fit()
    with pytest.raises(ValueError, match="trained with other frozen modules"):
        Trainer.resume(
            tmp_path,
            {"student": _net(1), "head": nn.Linear(2, 2)},
            OneStepDistillation(),
            NoiseBatches(),
            frozen={"teacher": _net(3)},
        )


def test_nan_in_a_custom_step_names_the_step(tmp_path):
    trainer = _trainer(tmp_path, 30, step=OneStepDistillation(nan_at_call=13))
    with pytest.raises(NonFiniteError, match="loss became non-finite .* at step 13") as err:
        trainer.fit()
    assert err.value.step == 13 and err.value.quantity == "loss"
    assert trainer.last_checkpoint is not None and trainer.last_checkpoint.name == "step_0000010"


def test_step_module_names_are_checked():
    step = OneStepDistillation()
    with pytest.raises(ValueError, match=r"trains modules \['student', 'head'\]"):
        Trainer({"student": _net(1)}, step, NoiseBatches(), TrainConfig(steps=2))
    with pytest.raises(ValueError, match=r"reads frozen modules \['teacher'\]"):
        Trainer(
            {"student": _net(1), "head": nn.Linear(2, 2)},
            step,
            NoiseBatches(),
            TrainConfig(steps=2),
        )
    with pytest.raises(TypeError, match="must return a LossOutput"):

        class Bad(OneStepDistillation):
            def __call__(self, modules, batch, generator):  # noqa: ANN001, ANN204
                return torch.zeros(2)

        Trainer(
            {"student": _net(1), "head": nn.Linear(2, 2)},
            Bad(),
            NoiseBatches(),
            TrainConfig(steps=2, log_every=1),
            frozen={"teacher": _net(2)},
        ).fit()


class ReadsTheEMA(OneStepDistillation):
    """Records the EMA module it is given (a self-teacher reads the live average)."""

    reads_ema = ("student",)

    def __call__(self, modules, batch, generator):
        self.seen = modules["student.ema"]
        return super().__call__(modules, batch, generator)


def test_a_step_that_reads_the_ema_gets_the_live_average_and_needs_one(tmp_path):
    step = ReadsTheEMA()
    trainer = _trainer(tmp_path / "a", 10, step=step, lr=3e-3)
    trainer.fit()
    teacher = trainer.emas["student_teacher"]  # kept for the self-teacher, apart from "student"
    assert step.seen is teacher.module and teacher.num_updates == 10  # updated in place
    assert teacher.current_decay == 0.999 and not teacher.warmup  # slow from step 0
    assert trainer.emas["student"].warmup  # the sampling EMA keeps its warm-up
    assert not any(p.requires_grad for p in step.seen.parameters())
    with pytest.raises(ValueError, match=r"reads averaged weights of 'student'.*ema_decay is None"):
        _trainer(tmp_path / "b", 10, step=ReadsTheEMA(), ema_decay=None)


def test_ema_warmup_false_averages_with_the_capped_decay_from_step_0(tmp_path):
    trainer = _trainer(tmp_path / "a", 3, lr=3e-3, ema_decay=0.9, ema_warmup=False)
    assert all(e.current_decay == 0.9 for e in trainer.emas.values())
    assert _trainer(tmp_path / "b", 3).emas["student"].current_decay == 0.1  # warm-up: 1/10
