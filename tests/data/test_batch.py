"""Batch schedule (determinism, epochs, sharding), Standardizer and ArrayDataset contracts."""

from __future__ import annotations

import json

import pytest
import torch

from flowmatch.data import ArrayDataset, Batch, BatchSchedule, Standardizer

N = 40


def _dataset(n: int = N, labelled: bool = True) -> ArrayDataset:
    # Row i holds the value i, so a batch's rows identify the samples it took.
    x = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3)
    labels = torch.arange(n) % 4 if labelled else None
    return ArrayDataset(x, labels, num_classes=4 if labelled else None, name="ids")


def _ids(batch: Batch) -> list[int]:
    return batch.x1[:, 0].long().tolist()


# --------------------------------------------------------------------------- BatchSchedule
def test_batch_shapes_and_labels_follow_rows():
    b = BatchSchedule(_dataset(), 8, seed=0).batch_at(3)
    assert b.x1.shape == (8, 3) and b.labels is not None and b.labels.shape == (8,)
    assert b.x0 is None
    assert b.labels.tolist() == [i % 4 for i in _ids(b)]
    assert BatchSchedule(_dataset(labelled=False), 8).batch_at(0).labels is None


def test_batch_at_is_deterministic_across_instances_and_call_order():
    a, b = BatchSchedule(_dataset(), 8, seed=7), BatchSchedule(_dataset(), 8, seed=7)
    forward = [_ids(a.batch_at(k)) for k in range(12)]
    backward = [_ids(b.batch_at(k)) for k in reversed(range(12))][::-1]
    assert forward == backward  # a pure function of (seed, step): resumable anywhere
    other = BatchSchedule(_dataset(), 8, seed=8)
    assert [_ids(other.batch_at(k)) for k in range(12)] != forward


def test_each_epoch_is_a_permutation_and_epochs_differ():
    sched = BatchSchedule(_dataset(), 8, seed=1)
    assert sched.batches_per_epoch == 5
    epochs = [sum((_ids(sched.batch_at(e * 5 + k)) for k in range(5)), []) for e in range(3)]
    for ids in epochs:
        assert sorted(ids) == list(range(N))  # every sample exactly once
    assert epochs[0] != epochs[1] != epochs[2]


def test_incomplete_last_batch_is_dropped():
    sched = BatchSchedule(_dataset(43), 8, seed=2)
    assert sched.batches_per_epoch == 5
    ids = sum((_ids(sched.batch_at(k)) for k in range(5)), [])
    assert len(set(ids)) == 40 and set(ids) <= set(range(43))


@pytest.mark.parametrize("world_size", [2, 4])
def test_rank_shards_are_disjoint_and_tile_the_global_batch(world_size):
    # Ranks of a data-parallel run see disjoint shards whose union is exactly the batch a
    # single rank with batch world_size * B would see at the same step.
    b = 5
    ranks = [
        BatchSchedule(_dataset(), b, seed=3, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    single = BatchSchedule(_dataset(), world_size * b, seed=3)
    assert ranks[0].batches_per_epoch == single.batches_per_epoch
    for step in range(2 * single.batches_per_epoch + 1):
        shards = [_ids(s.batch_at(step)) for s in ranks]
        flat = sum(shards, [])
        assert len(flat) == len(set(flat)) == world_size * b
        assert flat == _ids(single.batch_at(step))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
        ({"batch_size": 4.0}, TypeError, r"batch_size must be an int, got 4\.0"),
        (
            {"batch_size": 41},
            ValueError,
            r"dataset 'ids' has 40 samples, fewer than one global batch of batch_size\*world_size = 41",
        ),
        (
            {"batch_size": 12, "world_size": 4},
            ValueError,
            "fewer than one global batch of batch_size\\*world_size = 48",
        ),
        ({"batch_size": 4, "world_size": 0}, ValueError, "world_size must be >= 1, got 0"),
        (
            {"batch_size": 4, "rank": 2, "world_size": 2},
            ValueError,
            r"rank must be in \[0, 2\), got 2",
        ),
        ({"batch_size": 4, "rank": -1, "world_size": 2}, ValueError, "rank must be >= 0, got -1"),
        ({"batch_size": 4, "rank": 0.0}, TypeError, r"rank must be an int, got 0\.0"),
        ({"batch_size": 4, "seed": 1.5}, TypeError, r"seed must be an int, got 1\.5 \(float\)"),
    ],
)
def test_batch_schedule_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        BatchSchedule(_dataset(), **kwargs)


def test_batch_at_errors():
    sched = BatchSchedule(_dataset(), 8)
    with pytest.raises(ValueError, match="step must be >= 0, got -1"):
        sched.batch_at(-1)
    with pytest.raises(TypeError, match=r"step must be an int, got 1\.0"):
        sched.batch_at(1.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Standardizer
def _standardizer() -> Standardizer:
    return Standardizer(
        torch.tensor([[1.0, -2.0], [0.5, 3.0]]), torch.tensor([[2.0, 0.5], [1.0, 4.0]])
    )


def test_standardizer_round_trip_and_moments():
    st = _standardizer()
    x = torch.randn(6, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = st.transform(x)
    assert z.shape == x.shape and z.dtype == torch.float64  # follows the data's dtype
    torch.testing.assert_close(st.inverse(z), x, rtol=1e-6, atol=1e-6)
    # Data with exactly the standardizer's mean/std maps to mean 0 / scale 1.
    torch.testing.assert_close(st.transform(st.mean[None]), torch.zeros(1, 2, 2))
    torch.testing.assert_close(st.transform((st.mean + st.std)[None]), torch.ones(1, 2, 2))


def test_standardizer_log_abs_det_is_jacobian():
    # log |det d inverse / dz| for the elementwise affine map is sum log std.
    st = _standardizer()
    jac = torch.autograd.functional.jacobian(
        lambda z: st.inverse(z[None])[0].flatten(), torch.zeros(2, 2)
    )
    det = torch.linalg.det(jac.reshape(4, 4)).abs().log().item()
    assert st.log_abs_det() == pytest.approx(det, rel=1e-6)


def test_standardizer_dict_round_trip_through_json():
    st = _standardizer()
    back = Standardizer.from_dict(json.loads(json.dumps(st.to_dict())))
    assert torch.equal(back.mean, st.mean) and torch.equal(back.std, st.std)
    assert back.mean.dtype == torch.float32


def test_standardizer_identity():
    st = Standardizer.identity((3,))
    x = torch.randn(2, 3)
    assert torch.equal(st.transform(x), x) and st.log_abs_det() == 0.0


@pytest.mark.parametrize(
    ("mean", "std", "exc", "match"),
    [
        (
            torch.zeros(2),
            torch.tensor([1.0, 0.0]),
            ValueError,
            "Standardizer std must be finite and > 0 .*got min 0.0",
        ),
        (torch.zeros(2), torch.tensor([1.0, -1.0]), ValueError, "std must be finite and > 0"),
        (
            torch.zeros(2),
            torch.tensor([1.0, float("inf")]),
            ValueError,
            "std must be finite and > 0",
        ),
        (
            torch.tensor([0.0, float("nan")]),
            torch.ones(2),
            ValueError,
            "Standardizer mean must be finite",
        ),
        (
            torch.zeros(2),
            torch.ones(3),
            ValueError,
            r"mean and std must have the same shape, got \(2,\) and \(3,\)",
        ),
        ([0.0, 0.0], torch.ones(2), TypeError, "Standardizer mean must be a floating tensor"),
        (
            torch.zeros(2),
            torch.ones(2, dtype=torch.long),
            TypeError,
            "Standardizer std must be a floating tensor",
        ),
    ],
)
def test_standardizer_errors(mean, std, exc, match):
    with pytest.raises(exc, match=match):
        Standardizer(mean, std)


def test_standardizer_from_dict_errors():
    good = _standardizer().to_dict()
    with pytest.raises(
        ValueError, match=r"must have keys \['mean', 'shape', 'std'\], got \['mean', 'shape'\]"
    ):
        Standardizer.from_dict({k: v for k, v in good.items() if k != "std"})
    with pytest.raises(ValueError, match=r"got \['extra', 'mean', 'shape', 'std'\]"):
        Standardizer.from_dict({**good, "extra": 1})
    with pytest.raises(ValueError, match=r"shape \[2, 2\] needs 4 values, got 3 means and 4 stds"):
        Standardizer.from_dict({**good, "mean": [0.0, 0.0, 0.0]})
    with pytest.raises(ValueError, match="must have keys .* got list"):
        Standardizer.from_dict([])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- ArrayDataset
def test_array_dataset_infers_classes_and_moves():
    ds = ArrayDataset(torch.zeros(5, 2, 2), torch.tensor([0, 2, 1, 2, 0]))
    assert ds.num_classes == 3 and len(ds) == 5 and ds.sample_shape == (2, 2)
    moved = ds.to("cpu")
    assert torch.equal(moved.x, ds.x) and moved.num_classes == 3


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (
            {"x": torch.zeros(5)},
            ValueError,
            r"dataset x must be a float tensor of shape \(N, \*D\), got torch.Size\(\[5\]\)",
        ),
        (
            {"x": torch.zeros(5, 2, dtype=torch.long)},
            ValueError,
            "dataset x must be a float tensor",
        ),
        (
            {"x": torch.tensor([[0.0], [float("nan")]])},
            FloatingPointError,
            "dataset 'array' has 1 non-finite value",
        ),
        (
            {"x": torch.zeros(3, 2), "labels": torch.zeros(2, dtype=torch.long)},
            ValueError,
            r"labels must have shape \(N,\) = \(3,\), got \(2,\)",
        ),
        (
            {"x": torch.zeros(2, 2), "labels": torch.tensor([0, 5]), "num_classes": 3},
            ValueError,
            r"labels must lie in \[0, 3\), got values in \[0, 5\]",
        ),
        (
            {"x": torch.zeros(2, 2), "labels": torch.tensor([-1, 1])},
            ValueError,
            r"labels must lie in \[0, 2\), got values in \[-1, 1\]",
        ),
        (
            {"x": torch.zeros(2, 2), "labels": torch.tensor([0, 1]), "meta": {"class_names": [7]}},
            ValueError,
            r"meta\['class_names'\] must name the 2 classes, got 1 names",
        ),
    ],
)
def test_array_dataset_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ArrayDataset(**kwargs)
