"""Sample-quality and flow metrics: Wasserstein, MMD / energy, Frechet distance, straightness.

All distances take two sample sets ``(N, *D)`` and ``(M, *D)`` (flattened to ``(N, D)``),
compute in float64 and return a Python float; every random choice comes from an explicit
``torch.Generator`` (a fixed seed when ``None``). See docs/metrics.md.
"""

from flowmatch.metrics.conditional import bin_index, conditional_w2, quantile_edges
from flowmatch.metrics.digits_features import (
    DigitsClassifier,
    digits_classifier_accuracy,
    digits_classifier_path,
    digits_feature_extractor,
    digits_frechet_distance,
    digits_predict,
    load_digits_classifier,
    train_digits_classifier,
)
from flowmatch.metrics.frechet import (
    frechet_distance,
    frechet_distance_from_moments,
    gaussian_moments,
)
from flowmatch.metrics.kernel import ESTIMATORS, energy_distance, median_bandwidth, mmd_rbf
from flowmatch.metrics.straightness import straightness
from flowmatch.metrics.wasserstein import sliced_wasserstein2, wasserstein2

__all__ = [
    "ESTIMATORS",
    "bin_index",
    "conditional_w2",
    "DigitsClassifier",
    "digits_classifier_accuracy",
    "digits_classifier_path",
    "digits_feature_extractor",
    "digits_frechet_distance",
    "digits_predict",
    "energy_distance",
    "frechet_distance",
    "frechet_distance_from_moments",
    "gaussian_moments",
    "load_digits_classifier",
    "median_bandwidth",
    "mmd_rbf",
    "quantile_edges",
    "sliced_wasserstein2",
    "straightness",
    "train_digits_classifier",
    "wasserstein2",
]
