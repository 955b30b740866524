import numpy as np
import pytest

from scdd.metrics import class_consistency, fit_latent_classifier, frechet_distance


def test_frechet_identical_sets_is_zero() -> None:
    x = np.random.default_rng(0).normal(size=(300, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_frechet_shifted_gaussians_is_squared_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 4))
    shift = np.array([1.0, -2.0, 0.0, 0.5])
    b = rng.normal(size=(20000, 4)) + shift
    assert frechet_distance(a, b) == pytest.approx(shift @ shift, abs=0.05)


def test_frechet_fewer_points_than_dimensions_is_finite() -> None:
    rng = np.random.default_rng(0)
    d = frechet_distance(rng.normal(size=(10, 64)), rng.normal(size=(12, 64)))
    assert np.isfinite(d) and d > 0


def test_frechet_rejects_mismatched_widths() -> None:
    with pytest.raises(ValueError, match="same width"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


def _separable(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 16) * 5
    x = np.vstack([c + rng.normal(scale=0.1, size=(30, 16)) for c in centres])
    return x, np.repeat(["a", "b", "c"], 30)


def test_consistency_on_separable_data_is_one() -> None:
    x, y = _separable()
    clf = fit_latent_classifier(x, y, seed=0)
    x_new, y_new = _separable(seed=1)
    out = class_consistency(clf, x_new, y_new)
    assert out == {"accuracy": 1.0, "per_class": {"a": 1.0, "b": 1.0, "c": 1.0}}


def test_consistency_per_class_counts_wrong_labels() -> None:
    x, y = _separable()
    clf = fit_latent_classifier(x, y, seed=0)
    swapped = np.where(y == "a", "b", y)  # "a" cells claimed to be "b"
    out = class_consistency(clf, x, swapped)
    assert out["per_class"]["b"] == pytest.approx(0.5)
    assert out["per_class"]["c"] == 1.0
    assert out["accuracy"] == pytest.approx(2 / 3)


def test_classifier_needs_two_classes() -> None:
    with pytest.raises(ValueError, match="2 classes"):
        fit_latent_classifier(np.zeros((4, 2)), np.array(["a"] * 4))
