"""Evaluation references and floors are seeded random subsets: right for files sorted by class."""

import statistics

import numpy as np
import pytest
import torch

from flowmatch import api
from flowmatch.metrics import wasserstein2


@pytest.fixture(scope="module")
def sorted_table(tmp_path_factory):
    # 3 well-separated classes, written class by class (the layout that broke the old floor).
    rng = np.random.default_rng(0)
    centers = np.array([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]])
    rows = np.concatenate([c + rng.normal(size=(200, 2)) for c in centers])
    path = tmp_path_factory.mktemp("sorted") / "sorted.csv"
    path.write_text("a,b\n" + "\n".join(f"{a:.5f},{b:.5f}" for a, b in rows) + "\n")
    return path


def test_floor_matches_two_random_halves_on_a_class_sorted_file(sorted_table, tmp_path):
    cfg, train_ds, test_ds = api.resolve_config(
        data=str(sorted_table),
        steps=2,
        overrides=["model.hidden=8", "model.depth=1", "train.batch_size=32", "data.n_test=120"],
    )
    api.train_run(cfg, train_ds, out_dir=tmp_path / "run")
    run = api.load_run(tmp_path / "run")
    n = 100
    scorer = api.Scorer(run, test_ds, n, metrics=["w2"])
    floor = scorer.floor(train_ds)["w2"]
    # The true floor: W2 between random subsets of size n of the same (standardised) data.
    pool = torch.cat([train_ds.x, test_ds.x])
    draws = []
    for seed in range(20):
        perm = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
        draws.append(wasserstein2(pool[perm[:n]], pool[perm[n : 2 * n]]))
    mean, std = statistics.mean(draws), statistics.stdev(draws)
    assert abs(floor - mean) < 3 * std, (floor, mean, std)
    # The reference is a mix of the classes, not the first rows of one class.
    ref = scorer.reference
    assert (ref[:, 0] < -0.5).any() and (ref[:, 0] > 0.5).any()


def test_matched_floor_rows_have_the_generated_class_counts():
    from flowmatch.api.evaluate import _matched_index

    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2]).repeat(5)
    want = torch.arange(9) % 3  # what sample_labels gives a 3-class run for 9 samples
    idx = _matched_index(labels, want, 7)
    assert torch.equal(torch.bincount(labels[idx], minlength=3), torch.tensor([3, 3, 3]))
    assert len(set(idx.tolist())) == 9  # distinct rows
    # Seeded: the same call gives the same rows; another stream other rows.
    assert torch.equal(idx, _matched_index(labels, want, 7))
    assert not torch.equal(idx, _matched_index(labels, want, 8))
    # A class with too few rows gives all it has.
    short = _matched_index(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), 7)
    assert sorted(torch.tensor([0, 0, 1])[short].tolist()) == [0, 1]
