"""Digits classifier: deterministic training, atomic cache, accuracy, FD ordering, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import flowmatch.metrics.digits_features as dfeat
from flowmatch.data.digits import load_digits
from flowmatch.metrics import (
    DigitsClassifier,
    digits_classifier_accuracy,
    digits_classifier_path,
    digits_feature_extractor,
    digits_frechet_distance,
    digits_predict,
    load_digits_classifier,
)


@pytest.fixture(scope="module")
def cache_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private cache directory holding one freshly trained classifier."""
    path = tmp_path_factory.mktemp("digits_cache_a")
    load_digits_classifier(cache_dir=path)
    return path


@pytest.fixture(scope="module")
def test_split() -> tuple[torch.Tensor, torch.Tensor]:
    return load_digits("test")


def state(model: DigitsClassifier) -> dict[str, torch.Tensor]:
    return model.state_dict()


def test_two_fresh_trainings_are_bit_identical(cache_a: Path, tmp_path: Path) -> None:
    # Initialisation and batch order come from seeded generators: same machine, same weights.
    fresh = load_digits_classifier(cache_dir=tmp_path)  # empty dir: trains again
    cached = load_digits_classifier(cache_dir=cache_a)
    assert state(fresh).keys() == state(cached).keys()
    for key, value in state(fresh).items():
        assert torch.equal(value, state(cached)[key]), key
    x, _ = load_digits("test")
    assert torch.equal(fresh.features(x), cached.features(x))


def test_cache_hit_loads_identical_weights_without_training(
    cache_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = dfeat.train_digits_classifier()
    path = digits_classifier_path(cache_a)
    mtime = path.stat().st_mtime_ns

    def no_training() -> DigitsClassifier:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(dfeat, "train_digits_classifier", no_training)
    loaded = load_digits_classifier(cache_dir=cache_a)
    for key, value in state(reference).items():
        assert torch.equal(value, state(loaded)[key]), key
    assert loaded.test_accuracy == reference.test_accuracy
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert path.stat().st_mtime_ns == mtime  # read, not rewritten
    # The atomic write leaves exactly the final file behind (no temporary files).
    assert sorted(p.name for p in cache_a.iterdir()) == [path.name]


def test_cache_location_and_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLOWMATCH_CACHE", str(tmp_path / "env"))
    path = digits_classifier_path()
    assert path.parent == tmp_path / "env"
    assert path.name == f"digits_classifier-{dfeat._SETTINGS.key()}.safetensors"
    monkeypatch.delenv("FLOWMATCH_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert digits_classifier_path().parent == tmp_path / ".cache" / "flowmatch"
    assert digits_classifier_path(tmp_path / "x").parent == tmp_path / "x"
    # A change of any training setting changes the key (no stale weights).
    changed = dfeat._Settings(epochs=dfeat._SETTINGS.epochs + 1)
    assert changed.key() != dfeat._SETTINGS.key()


def test_split_matches_the_data_module() -> None:
    # The classifier must be trained on exactly the library's training split, so that FD and
    # accuracy on the test split measure held-out data.
    x_train, y_train, x_test, y_test = dfeat._load_split(dfeat._SETTINGS)
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        x_ref, y_ref = load_digits(split)
        assert torch.equal(x, x_ref.reshape(-1, 64).double())  # k/8 - 1 is exact in float32
        assert torch.equal(y, y_ref)


def test_test_accuracy_threshold(
    cache_a: Path, test_split: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = test_split
    acc = digits_classifier_accuracy(x, y, cache_dir=cache_a)
    assert acc >= 0.95  # measured 0.9865 (293 / 297)
    assert acc == load_digits_classifier(cache_dir=cache_a).test_accuracy


def test_feature_and_label_shapes(cache_a: Path) -> None:
    x, _ = load_digits("test")
    x = x[:64]  # N == F == 64
    extract = digits_feature_extractor(cache_dir=cache_a)
    feats = extract(x)
    assert feats.shape == (64, 64) and feats.dtype == torch.float64
    assert torch.equal(extract(x.reshape(64, 64)), feats)  # both input layouts
    labels = digits_predict(x, cache_dir=cache_a)
    assert labels.shape == (64,) and labels.dtype == torch.int64
    # Input gradients flow through the frozen network (usable as a differentiable reward).
    xg = x.double().requires_grad_(True)
    extract(xg).sum().backward()
    assert xg.grad is not None and xg.grad.shape == xg.shape


def test_frechet_distance_orders_real_corrupted_and_noise(
    cache_a: Path, test_split: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x_test, _ = test_split
    x_train, _ = load_digits("train")
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(x_test.shape, generator=g) * 2 - 1
    fd_real = digits_frechet_distance(x_train[:297], x_test, cache_dir=cache_a)
    fd_noise = digits_frechet_distance(x_test, noise, cache_dir=cache_a)
    # Two real samples differ only by sampling error (measured 6.2 vs 887 for noise).
    assert 0 < fd_real < 0.05 * fd_noise
    # More corruption, larger distance.
    fds = [
        digits_frechet_distance(
            x_test, x_test + sigma * torch.randn(x_test.shape, generator=g), cache_dir=cache_a
        )
        for sigma in (0.1, 0.4, 1.0)
    ]
    assert fds == sorted(fds) and fds[0] > 0


def test_digits_errors(cache_a: Path, tmp_path: Path) -> None:
    x, y = load_digits("test")
    with pytest.raises(
        ValueError, match=r"x must have shape \(N, 1, 8, 8\) or \(N, 64\), got \(297, 8, 8\)"
    ):
        digits_frechet_distance(x.reshape(-1, 8, 8), x, cache_dir=cache_a)
    with pytest.raises(TypeError, match="y must be a floating-point tensor"):
        digits_frechet_distance(x, (x > 0).long(), cache_dir=cache_a)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        digits_predict(x.numpy(), cache_dir=cache_a)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) = \(297,\)"):
        digits_classifier_accuracy(x, y[:10], cache_dir=cache_a)
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        digits_classifier_accuracy(x, y.float(), cache_dir=cache_a)
    with pytest.raises(ValueError, match=r"labels must lie in 0..9, got values in \[0, 10\]"):
        digits_classifier_accuracy(x, y.clamp(max=8) + 2 * (y == 9), cache_dir=cache_a)
    path = digits_classifier_path(tmp_path)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(RuntimeError, match="is unreadable .*delete it to retrain"):
        load_digits_classifier(cache_dir=tmp_path)


def _template_noise(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian noise plus the mean image of the intended class: what an EMA that still holds
    most of its random initialisation sampled (issue: FD ~40, plain accuracy 0.84-0.93)."""
    x, y = load_digits("train")
    x = x.reshape(-1, 64).double()
    means = torch.stack([x[y == c].mean(0) for c in range(10)])
    labels = torch.arange(n) % 10
    g = torch.Generator().manual_seed(seed)
    return means[labels] + torch.randn(n, 64, generator=g, dtype=torch.float64), labels


def test_class_acc_is_low_on_noise_and_high_on_digits(cache_a: Path) -> None:
    ref, _ = load_digits("test")
    x_train, y_train = load_digits("train")
    noisy, labels = _template_noise(1000, seed=0)
    # The plain accuracy reads the template in the noise: that is why eval gates it.
    assert digits_classifier_accuracy(noisy, labels, cache_dir=cache_a) > 0.5
    gated = digits_classifier_accuracy(noisy, labels, reference=ref, cache_dir=cache_a)
    assert gated < 0.25  # measured 0.13
    pure = torch.randn(1000, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert digits_classifier_accuracy(pure, labels, reference=ref, cache_dir=cache_a) < 0.02
    real = digits_classifier_accuracy(x_train, y_train, reference=ref, cache_dir=cache_a)
    assert real > 0.85  # measured 0.92 on the first 1000 training digits


def test_class_acc_manifold_arguments_are_checked(cache_a: Path) -> None:
    x, y = load_digits("test")
    with pytest.raises(ValueError, match=r"k must be an int >= 1, got 0"):
        digits_classifier_accuracy(x, y, reference=x, k=0, cache_dir=cache_a)
    with pytest.raises(ValueError, match=r"reference must hold more than k = 3 digits, got 3"):
        digits_classifier_accuracy(x, y, reference=x[:3], cache_dir=cache_a)


def test_class_acc_is_only_reported_next_to_fd() -> None:
    from flowmatch.metrics.registry import metrics_for

    with pytest.raises(ValueError, match=r"'class_acc' is reported only next to 'fd_digits'"):
        metrics_for("image", (1, 8, 8), ("class_acc",), labelled=True)
    assert set(metrics_for("image", (1, 8, 8), ("fd_digits", "class_acc"), labelled=True)) == {
        "fd_digits",
        "class_acc",
    }
