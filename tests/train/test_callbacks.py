"""Callback protocol: no-op defaults, structural check, History records."""

from pathlib import Path

from flowmatch.train import Callback, History, TrainResult


def test_subclass_gets_no_op_defaults_and_is_a_callback():
    class OnlyLog(Callback):
        def __init__(self):
            self.steps = []

        def on_log(self, step, logs):
            self.steps.append(step)

    cb = OnlyLog()
    assert isinstance(cb, Callback)
    assert cb.on_train_start(None) is None
    assert cb.on_eval(1, {}) is None and cb.on_checkpoint(1, Path(".")) is None
    assert cb.on_train_end(None) is None
    cb.on_log(5, {"loss": 1.0})
    assert cb.steps == [5]


def test_objects_missing_hooks_are_not_callbacks():
    class Partial:
        def on_log(self, step, logs):
            pass

    assert not isinstance(Partial(), Callback)


def test_history_records_everything():
    h = History()
    h.on_log(10, {"loss": 2.0, "lr": 0.1})
    h.on_log(20, {"loss": 1.0, "lr": 0.05})
    h.on_eval(20, {"w2": 0.3})
    h.on_checkpoint(20, Path("run/checkpoints/step_0000020"))
    result = TrainResult(step=20, loss=1.0, checkpoint=None, wall_time=1.0, steps_per_sec=20.0)
    h.on_train_end(result)
    assert h.logs == [{"step": 10, "loss": 2.0, "lr": 0.1}, {"step": 20, "loss": 1.0, "lr": 0.05}]
    assert h.losses() == [2.0, 1.0]
    assert h.evals == [{"step": 20, "w2": 0.3}]
    assert h.checkpoints == [(20, Path("run/checkpoints/step_0000020"))]
    assert h.result is result
