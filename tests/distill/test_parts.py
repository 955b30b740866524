"""Tests for the k-means parts of each class in F-space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scdd.distill.losses import distribution_matching_loss, part_matching_loss
from scdd.distill.parts import class_parts


def _two_blobs_per_class() -> tuple[np.ndarray, np.ndarray]:
    """Class 0 at (+-5, 0), class 1 at (0, +-5): two tight blobs each."""
    rng = np.random.default_rng(0)
    centres = {0: [(5, 0), (-5, 0)], 1: [(0, 5), (0, -5)]}
    points, labels = [], []
    for c, blobs in centres.items():
        for centre in blobs:
            points.append(np.asarray(centre) + 0.1 * rng.normal(size=(30, 2)))
            labels += [c] * 30
    return np.concatenate(points).astype(np.float32), np.asarray(labels)


def test_parts_find_the_blobs_and_seed_from_their_medoids() -> None:
    x, y = _two_blobs_per_class()
    parts = class_parts(x, y, spc=2, num_classes=2, seed=0)
    assert parts.seeds.shape == (4,) and parts.means.shape == (4, 2)
    np.testing.assert_array_equal(y[parts.seeds], [0, 0, 1, 1])
    for c, blobs in ((0, [(5, 0), (-5, 0)]), (1, [(0, 5), (0, -5)])):
        found = parts.means[2 * c : 2 * c + 2]
        for centre in blobs:
            assert np.abs(found - centre).sum(1).min() < 0.2
    # each seed is the real cell nearest its part's centre
    for seed_row, mean in zip(parts.seeds, parts.means, strict=True):
        members = np.flatnonzero(y == y[seed_row])
        nearest = members[np.argmin(((x[members] - mean) ** 2).sum(1))]
        assert seed_row == nearest
    again = class_parts(x, y, spc=2, num_classes=2, seed=0)
    np.testing.assert_array_equal(again.seeds, parts.seeds)


def test_one_part_is_the_class_and_small_classes_repeat() -> None:
    x, y = _two_blobs_per_class()
    one = class_parts(x, y, spc=1, num_classes=2, seed=0)
    np.testing.assert_allclose(
        one.means, [x[y == 0].mean(0), x[y == 1].mean(0)], atol=1e-5
    )
    small_y = np.r_[np.zeros(2, int), np.ones(len(y) - 2, int)]
    parts = class_parts(x, small_y, spc=3, num_classes=2, seed=0)
    assert sorted(set(parts.seeds[:3].tolist())) == [0, 1]  # 2 cells, 3 slots
    with pytest.raises(ValueError, match="Class 2 has no training cells"):
        class_parts(x, y, spc=1, num_classes=3, seed=0)


def test_parts_hold_at_least_min_cells_and_their_slots_start_apart() -> None:
    """Classes of 60 cells at SPC 4 with ``min_cells=30``: two parts (the
    blobs), each the target of two slots seeded by distinct cells."""
    x, y = _two_blobs_per_class()
    parts = class_parts(x, y, spc=4, num_classes=2, seed=0, min_cells=30)
    for c in (0, 1):
        means = parts.means[4 * c : 4 * c + 4]
        np.testing.assert_array_equal(means[:2], means[2:])  # 2 parts, in turn
        assert np.abs(means[0] - means[1]).sum() > 5  # the two blobs
        assert len(set(parts.seeds[4 * c : 4 * c + 4].tolist())) == 4
    # too few cells for even one part of min_cells: the class is one part
    one = class_parts(x, y, spc=4, num_classes=2, seed=0, min_cells=100)
    np.testing.assert_allclose(
        one.means[:4], np.tile(x[y == 0].mean(0), (4, 1)), atol=1e-5
    )
    # min_cells 1 (the default): SPC parts, as before
    plain = class_parts(x, y, spc=4, num_classes=2, seed=0)
    assert len({tuple(m) for m in plain.means[:4].round(4)}) == 4


def test_part_loss_is_the_dm_loss_at_one_cell_per_class() -> None:
    syn = torch.randn(3, 4)
    labels = torch.tensor([0, 1, 2])
    means = torch.randn(3, 4)
    np.testing.assert_allclose(
        part_matching_loss(syn, means, 1).item(),
        distribution_matching_loss(syn, labels, means).item(),
        rtol=1e-6,
    )
    # at SPC 2 a set whose mean is right but whose cells are not scores > 0
    means2 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    swapped = means2.flip(0)
    assert part_matching_loss(swapped, means2, 2).item() == pytest.approx(4.0)
    assert distribution_matching_loss(
        swapped, torch.tensor([0, 0]), means2.mean(0, keepdim=True)
    ).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="row for row"):
        part_matching_loss(syn, means[:2], 1)


def test_parts_are_equal_shares_so_their_centres_average_to_the_class_mean() -> None:
    """A bulk of 90 cells and an outlying group of 10: two parts of 50 cells
    each (plain k-means would give the 10 outliers a cell of their own)."""
    rng = np.random.default_rng(1)
    x = np.concatenate(
        [rng.normal(size=(90, 2)), np.array([20.0, 0.0]) + rng.normal(size=(10, 2))]
    ).astype(np.float32)
    parts = class_parts(x, np.zeros(100, int), spc=2, num_classes=1, seed=0)
    np.testing.assert_allclose(parts.means.mean(0), x.mean(0), atol=1e-4)
    assert np.abs(parts.means[:, 0]).max() < 10  # no part is the outliers alone
