"""Coreset controls: herding, k-center, k-means medoids, geosketch, random."""

from __future__ import annotations

import numpy as np
import pytest

from scdd.distill.coresets import CORESETS, select_coreset


def _clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes; class 0 has three well-separated clumps of unequal size."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    sizes = [60, 30, 10]
    clumps = [
        c + rng.normal(0, 0.3, size=(n, 2)) for c, n in zip(centres, sizes, strict=True)
    ]
    other = rng.normal(50, 1.0, size=(40, 2))
    points = np.vstack([*clumps, other])
    labels = np.repeat([0, 1], [100, 40])
    return points, labels


@pytest.mark.parametrize("name", list(CORESETS))
def test_each_coreset_picks_distinct_cells_of_each_class_and_is_seeded(name) -> None:
    points, labels = _clusters()
    rows = select_coreset(name, points, labels, spc=3, num_classes=2, seed=4)
    assert rows.shape == (6,)
    np.testing.assert_array_equal(labels[rows], [0, 0, 0, 1, 1, 1])
    assert len(set(rows[:3])) == 3 and len(set(rows[3:])) == 3
    again = select_coreset(name, points, labels, spc=3, num_classes=2, seed=4)
    np.testing.assert_array_equal(rows, again)


@pytest.mark.parametrize("name", ["kcenter", "geosketch"])
def test_covering_coresets_reach_every_clump(name) -> None:
    """Three picks of class 0 land in its three clumps, the small one too
    (k-means medoids do not: their parts are of equal size, by design)."""
    points, labels = _clusters()
    rows = select_coreset(name, points, labels, spc=3, num_classes=2, seed=0)[:3]
    clump = np.digitize(rows, [60, 90])
    assert sorted(clump) == [0, 1, 2]


def test_herding_tracks_the_class_mean() -> None:
    """Herding's running mean is closer to the class mean than random picks'."""
    points, labels = _clusters()
    mean = points[labels == 0].mean(0)
    gap = lambda rows: np.linalg.norm(points[rows].mean(0) - mean)  # noqa: E731
    herded = select_coreset("herding", points, labels, spc=4, num_classes=2, seed=0)
    randoms = [
        gap(select_coreset("random", points, labels, spc=4, num_classes=2, seed=s)[:4])
        for s in range(20)
    ]
    assert gap(herded[:4]) < np.median(randoms)
    # one herded cell is the one nearest the class mean
    first = select_coreset("herding", points, labels, spc=1, num_classes=2, seed=0)[0]
    assert first == np.linalg.norm(points[:100] - mean, axis=1).argmin()


def test_a_small_class_repeats_its_cells_and_bad_input_is_refused() -> None:
    points, labels = _clusters()
    labels = labels.copy()
    labels[:98] = 2  # class 0 keeps two cells
    rows = select_coreset("herding", points, labels, spc=3, num_classes=3, seed=0)
    assert sorted(set(rows[:3])) == [98, 99]
    with pytest.raises(ValueError, match="Unknown coreset"):
        select_coreset("best", points, labels, spc=1, num_classes=3, seed=0)
    with pytest.raises(ValueError, match="Class 3 has no training cells"):
        select_coreset("kcenter", points, labels, spc=1, num_classes=4, seed=0)


def test_large_classes_are_selected_from_a_bounded_sample() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(3000, 4))
    labels = np.zeros(3000, dtype=np.int64)
    rows = select_coreset(
        "kcenter", points, labels, spc=5, num_classes=1, seed=0, max_cells=500
    )
    assert len(set(rows)) == 5 and rows.max() < 3000
