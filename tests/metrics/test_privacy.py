"""Memorisation: nearest-train vs nearest-test distances of synthetic cells."""

from __future__ import annotations

import numpy as np
import pytest

from scdd.metrics.privacy import memorisation_report, nearest_cosine_distance


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cloud(n: int, seed: int, dim: int = 6) -> np.ndarray:
    """Unit-norm points from one distribution (low dimension: dense neighbours)."""
    return _unit(np.random.default_rng(seed).normal(size=(n, dim)) + 2.0)


def test_chunked_search_matches_brute_force() -> None:
    queries, reference = _cloud(37, 0), _cloud(101, 1)
    dist, index = nearest_cosine_distance(queries, reference, chunk_size=7)
    sim = queries @ reference.T
    np.testing.assert_array_equal(index, sim.argmax(1))
    np.testing.assert_allclose(dist, 1.0 - sim.max(1), atol=1e-6)


def test_copies_of_training_cells_are_flagged() -> None:
    train, test = _cloud(300, 0), _cloud(300, 1)
    report = memorisation_report(train[:20], train, test, threshold=0.5)
    assert report["median_ratio"] == pytest.approx(0.0, abs=1e-3)
    assert report["copy_fraction"] == 1.0
    assert report["frac_closer_to_train"] == 1.0
    assert report["memorised"] is True


def test_held_out_cells_are_not_memorised() -> None:
    train, test, fresh = _cloud(400, 0), _cloud(400, 1), _cloud(200, 2)
    report = memorisation_report(fresh, train, test, threshold=0.5, chunk_size=64)
    assert 0.8 < report["median_ratio"] < 1.25
    assert report["memorised"] is False
    assert report["copy_fraction"] == 0.0
    assert report["expected_frac_closer_to_train"] == 0.5
    assert abs(report["frac_closer_to_train"] - 0.5) < 0.15


def test_bad_inputs_are_refused() -> None:
    train = _cloud(10, 0)
    with pytest.raises(ValueError, match="widths differ"):
        nearest_cosine_distance(train, train[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        nearest_cosine_distance(np.full((2, 6), np.nan), train)
    with pytest.raises(ValueError, match="threshold"):
        memorisation_report(train, train, train, threshold=0)
