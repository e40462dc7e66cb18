"""The 2-D projection used by sample plots of vectors with more than two features."""

import numpy as np

from flowmatch.viz import _projection


def test_projection_is_pca_of_standardised_features():
    # Two correlated unit-scale features and one independent feature in units of 1000: a PCA
    # in raw units is just that column (the wine table's proline did exactly this); after
    # standardising, the correlated pair makes the first component.
    rng = np.random.default_rng(0)
    z = rng.standard_normal(2000)
    data = np.stack(
        [z + 0.1 * rng.standard_normal(2000), z + 0.1 * rng.standard_normal(2000),
         1000.0 * rng.standard_normal(2000)], axis=1,
    )  # fmt: skip
    mean, comps, axes = _projection(data)
    plane = (data - mean) @ comps
    first = np.abs(np.corrcoef(plane[:, 0], data[:, 0])[0, 1])
    assert first > 0.95 and np.abs(np.corrcoef(plane[:, 0], data[:, 2])[0, 1]) < 0.1
    assert axes[0].startswith("PC 1 (6") and "standardised" in axes[0]  # ~2/3 of the variance
    # Two features or fewer are drawn as they are.
    assert np.array_equal(_projection(data[:, :2])[1], np.eye(2))
