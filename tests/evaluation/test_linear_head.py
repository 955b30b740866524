"""Tests for the frozen-F + linear-head evaluation protocol."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch

from scdd.evaluation.config import FHeadParams
from scdd.evaluation.linear_head import evaluate_linear_head
from tests.evaluation.lazy_helpers import spied

DIM = 16


def _head(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    seed: int = 0,
    **settings,
) -> dict:
    """The linear head with ``evaluate.f_head`` = ``settings`` (defaults else)."""
    return evaluate_linear_head(
        train_features,
        train_labels,
        test_features,
        test_labels,
        num_classes=num_classes,
        params=FHeadParams(**settings),
        seed=seed,
    )


def _clusters(
    n_per_class: int, classes: list[int], seed: int, noise: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm points around one axis per class (linearly separable)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.asarray(classes), n_per_class)
    x = np.eye(DIM, dtype=np.float32)[labels] + noise * rng.normal(
        size=(len(labels), DIM)
    ).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def test_separable_data_is_learned() -> None:
    x_train, y_train = _clusters(10, [0, 1, 2], seed=0)
    x_test, y_test = _clusters(50, [0, 1, 2], seed=1)
    result = _head(
        x_train, y_train, x_test, y_test, num_classes=3, n_inits=3, epochs=300
    )
    assert result["accuracy_mean"] > 0.98
    assert result["balanced_accuracy_mean"] > 0.98
    assert result["macro_f1_mean"] > 0.98
    assert all(row["train_accuracy"] == 1.0 for row in result["per_init"])


def test_mini_batches_learn_separable_data() -> None:
    x_train, y_train = _clusters(40, [0, 1, 2, 3], seed=2)
    x_test, y_test = _clusters(20, [0, 1, 2, 3], seed=3)
    result = _head(
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=4,
        n_inits=2,
        epochs=50,
        batch_size=16,
    )
    assert result["accuracy_mean"] > 0.98


def test_a_step_cap_bounds_the_epochs() -> None:
    """The full-split reference stops at a step budget, so its cost stops
    growing with the cells; below the cap it is the epoch schedule."""
    x_train, y_train = _clusters(40, [0, 1, 2, 3], seed=2)
    x_test, y_test = _clusters(20, [0, 1, 2, 3], seed=3)
    common = {"num_classes": 4, "n_inits": 1, "batch_size": 16}
    by_epochs = _head(x_train, y_train, x_test, y_test, epochs=5, **common)
    capped = _head(x_train, y_train, x_test, y_test, epochs=5, max_steps=50, **common)
    assert capped["per_init"] == by_epochs["per_init"]  # 5 x 10 batches = 50
    assert (by_epochs["steps"], capped["steps"]) == (50, 50)
    short = _head(x_train, y_train, x_test, y_test, epochs=5, max_steps=3, **common)
    assert short["steps"] == 3 and short["per_init"] != by_epochs["per_init"]


def test_random_labels_give_chance_accuracy() -> None:
    rng = np.random.default_rng(0)
    x_train = rng.normal(size=(200, DIM)).astype(np.float32)
    x_test = rng.normal(size=(2000, DIM)).astype(np.float32)
    y_train, y_test = rng.integers(0, 4, 200), rng.integers(0, 4, 2000)
    result = _head(
        x_train, y_train, x_test, y_test, num_classes=4, n_inits=3, epochs=200
    )
    assert 0.15 < result["accuracy_mean"] < 0.35
    assert 0.15 < result["balanced_accuracy_mean"] < 0.35


def test_same_seed_same_result_and_seeds_differ_per_init() -> None:
    rng = np.random.default_rng(1)
    x_train = rng.normal(size=(30, DIM)).astype(np.float32)
    x_test = rng.normal(size=(300, DIM)).astype(np.float32)
    y_train, y_test = rng.integers(0, 3, 30), rng.integers(0, 3, 300)

    def run(seed: int) -> dict:
        return _head(
            x_train,
            y_train,
            x_test,
            y_test,
            num_classes=3,
            n_inits=4,
            epochs=20,
            seed=seed,
        )

    first = run(7)
    assert first == run(7)
    assert [row["seed"] for row in first["per_init"]] == [7, 8, 9, 10]
    # Few epochs on random labels: the init still shows in the predictions.
    assert first["accuracy_std"] > 0


@pytest.mark.parametrize("batch_size", [None, 8])
def test_heads_trained_side_by_side_are_the_heads_trained_alone(batch_size) -> None:
    """Init ``i`` of a run is the single-init run seeded ``seed + i``: its own
    start and its own batches, whatever the heads beside it."""
    rng = np.random.default_rng(4)
    x_train = rng.normal(size=(30, DIM)).astype(np.float32)
    x_test = rng.normal(size=(300, DIM)).astype(np.float32)
    y_train, y_test = rng.integers(0, 3, 30), rng.integers(0, 3, 300)
    common = {"num_classes": 3, "epochs": 15, "batch_size": batch_size}
    together = _head(x_train, y_train, x_test, y_test, n_inits=3, seed=5, **common)
    for row in together["per_init"]:
        (alone,) = _head(
            x_train, y_train, x_test, y_test, n_inits=1, seed=row["seed"], **common
        )["per_init"]
        assert {k: v for k, v in row.items() if k != "init"} == {
            k: v for k, v in alone.items() if k != "init"
        }


def test_keys_and_shapes() -> None:
    x_train, y_train = _clusters(3, [0, 1], seed=0)
    x_test, y_test = _clusters(5, [0, 1], seed=1)
    result = _head(x_train, y_train, x_test, y_test, num_classes=2, n_inits=2, epochs=5)
    assert set(result) == {
        "accuracy_mean",
        "accuracy_std",
        "balanced_accuracy_mean",
        "balanced_accuracy_std",
        "macro_f1_mean",
        "macro_f1_std",
        "per_init",
        "n_train",
        "n_test",
        "steps",
    }
    assert (result["n_train"], result["n_test"], result["steps"]) == (6, 10, 5)
    assert len(result["per_init"]) == 2
    assert set(result["per_init"][0]) == {
        "init",
        "seed",
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "train_accuracy",
    }
    for key, value in result.items():
        if key.endswith(("_mean", "_std")):
            assert isinstance(value, float)
            assert 0.0 <= value <= 1.0


def test_class_absent_from_train_set() -> None:
    x_train, y_train = _clusters(5, [0, 1, 2], seed=0)
    x_test, y_test = _clusters(20, [0, 1, 2, 3], seed=1)
    result = _head(
        x_train, y_train, x_test, y_test, num_classes=4, n_inits=2, epochs=300
    )
    # Class 3 is never learnt, so at most 3 of 4 test classes are right.
    assert 0.7 < result["accuracy_mean"] <= 0.75
    assert result["macro_f1_mean"] <= 0.75 + 1e-9


@pytest.mark.parametrize(
    ("labels", "num_classes", "message"),
    [
        (np.array([0, 1, 5]), 3, "must lie in"),
        (np.array([0, 1]), 3, "must have shape"),
        (np.array([0.0, 1.0, 2.0]), 3, "must be integers"),
    ],
)
def test_bad_labels_raise(labels: np.ndarray, num_classes: int, message: str) -> None:
    x = np.ones((3, DIM), dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        _head(x, labels, x, np.array([0, 1, 2]), num_classes=num_classes, epochs=1)


def test_feature_width_mismatch_raises() -> None:
    y = np.array([0, 1])
    with pytest.raises(ValueError, match="widths differ"):
        _head(np.ones((2, 4)), y, np.ones((2, 5)), y, num_classes=2, epochs=1)


def test_torch_thread_count_is_restored() -> None:
    before = torch.get_num_threads()
    x_train, y_train = _clusters(3, [0, 1], seed=0)
    _head(x_train, y_train, x_train, y_train, num_classes=2, epochs=2)
    assert torch.get_num_threads() == before


def test_standardising_fits_small_scale_features() -> None:
    """The reference's standardisation: classes that differ by 0.02 along a
    unit-norm latent's axis stay out of reach of a weight-decayed head on raw
    features and are learned on standardised ones (the test features get the
    training mean and scale)."""
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 2, n)
        x = np.zeros((n, DIM), dtype=np.float32)
        x[:, 0] = 1.0
        x[:, 1] = 0.01 * (2 * labels - 1) + 0.002 * rng.normal(size=n)
        return x, labels

    (x_train, y_train), (x_test, y_test) = split(200), split(200)
    common = {"num_classes": 2, "n_inits": 2, "epochs": 20, "batch_size": 32}
    plain = _head(x_train, y_train, x_test, y_test, **common)
    scaled = _head(x_train, y_train, x_test, y_test, standardise=True, **common)
    assert scaled["accuracy_mean"] > 0.98
    assert plain["accuracy_mean"] < 0.8


def test_lazy_test_features_score_like_in_memory_ones(monkeypatch) -> None:
    """Test features on disk are read a block at a time, once for all heads."""
    from scdd.evaluation import linear_head

    monkeypatch.setattr(linear_head, "PREDICT_ROWS", 7)
    x_train, y_train = _clusters(10, [0, 1, 2], seed=0, noise=0.5)
    x_test, y_test = _clusters(30, [0, 1, 2], seed=1, noise=0.5)
    settings = {"n_inits": 3, "epochs": 50, "standardise": True}
    lazy, reads = spied(ad.AnnData(x_test), chunk_rows=20)
    expected = _head(x_train, y_train, x_test, y_test, num_classes=3, **settings)
    got = _head(x_train, y_train, lazy.X, y_test, num_classes=3, **settings)
    assert got == expected
    assert set(reads.counts.values()) == {1}
