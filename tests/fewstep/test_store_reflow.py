"""Teacher samples on disk (ChunkStore) and reflow on exact pairs of the Gaussian oracle."""

import numpy as np
import pytest
import torch

from flowmatch.fewstep.reflow import ReflowStep, make_pairs
from flowmatch.fewstep.store import (
    ChunkStore,
    StoreBatches,
    TeacherBatch,
    WithStep,
    wait_for_store,
)
from flowmatch.solvers import Dopri5
from flowmatch.times import make_grid
from flowmatch.train import TrainConfig, Trainer
from oracles import GaussianOracle

D = torch.float64


def _make(k, start, count):
    x = torch.arange(start, start + count, dtype=D)[:, None].repeat(1, 2)
    return {"x0": x, "x1": 10 * x}


def test_store_is_resumable_bit_identical_and_refuses_other_settings(tmp_path):
    a = ChunkStore(tmp_path / "a", num=10, chunk=4, meta={"m": 1})
    a.write(0, _make(0, 0, 4))  # interrupted after one chunk
    assert not a.complete
    again = ChunkStore(tmp_path / "a", num=10, chunk=4, meta={"m": 1})
    assert again.fill(_make) == 2  # only the two missing chunks
    b = ChunkStore(tmp_path / "b", num=10, chunk=4, meta={"m": 1})
    b.fill(_make)
    for name in ("x0", "x1"):
        for ca, cb in zip(again.arrays(name), b.arrays(name), strict=True):
            assert np.array_equal(ca, cb)
    again.verify()
    with pytest.raises(ValueError, match=r"other settings \(\['meta'\] differ"):
        ChunkStore(tmp_path / "a", num=10, chunk=4, meta={"m": 2})
    with pytest.raises(ValueError, match="chunk 1 array 'x0' must hold 4 items"):
        b.write(1, {"x0": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="NaN/inf"):
        b.write(1, {"x0": torch.full((4, 2), float("nan"))})


def test_store_verify_detects_corruption_and_incomplete_stores(tmp_path):
    s = ChunkStore(tmp_path, num=8, chunk=4, meta={})
    with pytest.raises(ValueError, match="incomplete"):
        s.arrays("x0")
    s.fill(_make)
    f = tmp_path / "x1_00001.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="x1_00001.npy is missing or corrupt"):
        s.verify()
    with pytest.raises(ValueError, match="has no array 'labels'"):
        s.arrays("labels")


def test_other_ranks_wait_for_the_store_rank_0_writes_and_write_nothing(tmp_path):
    import threading

    root = tmp_path / "pairs"
    with pytest.raises(TimeoutError, match="not complete after"):
        wait_for_store(root, num=10, chunk=4, meta={"m": 1}, poll=0.01, timeout=0.05)
    assert not root.exists()  # a waiting rank creates nothing
    old = ChunkStore(root, num=10, chunk=4, meta={"m": 0})  # being replaced by rank 0
    old.fill(_make)

    def rank0():
        import shutil

        shutil.rmtree(root)
        ChunkStore(root, num=10, chunk=4, meta={"m": 1}).fill(_make)

    timer = threading.Timer(0.1, rank0)
    timer.start()
    store = wait_for_store(root, num=10, chunk=4, meta={"m": 1}, poll=0.01, timeout=30)
    timer.join()
    assert store.complete and store.meta == {"m": 1}
    np.testing.assert_array_equal(np.concatenate(store.arrays("x0"))[:, 0], np.arange(10))


def test_store_batches_are_pure_and_keep_pairs_together(tmp_path):
    s = ChunkStore(tmp_path, num=10, chunk=4, meta={})
    s.fill(_make)
    src = StoreBatches(s, 6, fields={"x0": "x0", "x1": "x1"}, seed=3)
    a, b = src.batch_at(5), src.batch_at(5)
    assert torch.equal(a.x0, b.x0) and torch.equal(a.x1, 10 * a.x0)
    assert not torch.equal(src.batch_at(6).x0, a.x0)
    assert (
        isinstance(WithStep(src).batch_at(7), TeacherBatch) and WithStep(src).batch_at(7).step == 7
    )
    with pytest.raises(ValueError, match="'x1'"):
        StoreBatches(s, 2, fields={"x0": "x0"})


def test_one_step_student_on_exact_reflow_pairs_reaches_near_zero_loss(tmp_path):
    # The oracle's ODE maps x0 to mu + s x0 (affine), so a linear one-step student is exact.
    oracle = GaussianOracle(torch.tensor([2.0, -1.0], dtype=D), 0.5)
    store = ChunkStore(tmp_path, num=1000, chunk=300, meta={"teacher": "oracle"})

    def noise(k, count):
        return torch.randn(count, 2, generator=torch.Generator().manual_seed(k), dtype=D)

    make_pairs(store, oracle, Dopri5(atol=1e-9, rtol=1e-9), make_grid("uniform", 1, dtype=D), noise)
    pairs = StoreBatches(store, 128, fields={"x0": "x0", "x1": "x1"})
    b = pairs.batch_at(0)
    torch.testing.assert_close(b.x1, oracle.flow(b.x0, 1.0), atol=1e-7, rtol=0)

    class Affine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2).double()

        def forward(self, x, t, cond=None):
            return self.lin(x)

    cfg = TrainConfig(
        steps=400,
        batch_size=128,
        lr=0.05,
        log_every=50,
        ema_decay=None,
        grad_clip=None,
        lr_schedule="constant",
    )
    student = Affine()
    result = Trainer(student, ReflowStep(one_step=True), pairs, cfg).fit()
    assert result.loss < 1e-6
    with torch.no_grad():  # one Euler step from t = 0 lands on the teacher's sample
        x0 = noise(99, 64)
        x1 = x0 + student(x0, torch.zeros(64, dtype=D))
    torch.testing.assert_close(x1, oracle.flow(x0, 1.0), atol=2e-3, rtol=0)


def test_reflow_needs_paired_batches():
    from flowmatch.data import Batch
    from flowmatch.models import MLP

    with pytest.raises(ValueError, match="teacher pairs"):
        ReflowStep()(
            {"model": MLP(2, hidden=8, depth=1)}, Batch(torch.randn(4, 2)), torch.Generator()
        )


@pytest.mark.parametrize("prediction", ["x0", "x1", "velocity"])
def test_rectified_diffusion_on_any_affine_path_has_an_exact_zero_loss_predictor(prediction):
    # On exact teacher pairs (x1 = mu + s x0) every point of a VP/cosine path determines its
    # pair, so the ideal predictor of any parameterisation has zero loss (Rectified Diffusion's
    # point: the pairing matters, not the path); on independent pairs it cannot.
    from flowmatch.data import Batch
    from flowmatch.paths import AffinePath, CosineSchedule

    mu, s = torch.tensor([2.0, -1.0], dtype=D), 0.5
    path = AffinePath(CosineSchedule())

    class Ideal(torch.nn.Module):
        def forward(self, x, t, cond=None):
            c = path.schedule(t[:, None])
            x0 = (x - c.alpha * mu) / (c.alpha * s + c.sigma)
            x1 = mu + s * x0
            return {"x0": x0, "x1": x1, "velocity": c.d_alpha * x1 + c.d_sigma * x0}[prediction]

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(256, 2, generator=g, dtype=D)
    step = ReflowStep(path, prediction=prediction, loss="pseudo_huber", huber_c=1e-3)
    paired = step({"model": Ideal()}, Batch(mu + s * x0, x0=x0), g)
    assert float(paired.loss.max()) < 1e-12
    shuffled = step({"model": Ideal()}, Batch(mu + s * x0, x0=x0.roll(1, 0)), g)
    assert float(shuffled.loss.mean()) > 1e-2
