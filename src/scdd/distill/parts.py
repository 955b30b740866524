"""Class parts in F-space: one synthetic cell per part of its class.

Distribution matching pins only the mean of each class's synthetic set, so at
SPC > 1 single cells may sit anywhere as long as their average is right. Here
each class's real embeddings are split into SPC parts of equal size
(k-means, then a size-constrained assignment); synthetic cell ``j`` of a class
starts from the real cell nearest part ``j``'s centre (its medoid) and is
matched to that centre as well as the set to the class mean. Each cell is then
a good example of a region of its class, and together they cover the class.

Equal sizes matter: a model trained on the synthetic set weighs its cells
equally, so each should stand for the same share of the class (plain k-means
gives small outlying parts the weight of the bulk; on paul15 at SPC 10 that
cost the F-head 6 points), and the part centres then average to the class
mean, so the two losses agree. At SPC 1 the one part is the whole class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans

from scdd.metrics.fidelity import squared_distances
from scdd.sampling import class_members


def _equal_size_centres(
    points: np.ndarray, centres: np.ndarray, rounds: int = 10
) -> np.ndarray:
    """Centres of ``k`` parts of (near) equal size, refined from ``centres``.

    Each round assigns points greedily, nearest (point, centre) pairs first,
    to centres with room left (sizes ``n // k`` or one more), then moves each
    centre to its part's mean.
    """
    n, k = len(points), len(centres)
    capacity = np.full(k, n // k)
    capacity[: n % k] += 1
    for _ in range(rounds):
        order = np.argsort(squared_distances(points, centres), axis=None)
        part = np.full(n, -1)
        room = capacity.copy()
        left = n
        for row, centre in zip(*np.divmod(order, k), strict=True):
            if part[row] < 0 and room[centre] > 0:
                part[row] = centre
                room[centre] -= 1
                left -= 1
                if not left:
                    break
        moved = np.stack([points[part == j].mean(axis=0) for j in range(k)])
        if np.allclose(moved, centres):
            break
        centres = moved
    return centres


@dataclass(frozen=True)
class ClassParts:
    """SPC parts per class, in the class-major order of the synthetic cells.

    Attributes:
        seeds: row of the real cell nearest each part's centre ``[C * spc]``.
        means: centre of each part in F-space ``[C * spc, D]``.
    """

    seeds: np.ndarray
    means: np.ndarray


def class_parts(  # noqa: PLR0913
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    spc: int,
    num_classes: int,
    seed: int,
    min_cells: int = 1,
    max_cells: int = 5_000,
) -> ClassParts:
    """k-means of each class's embeddings into ``spc`` parts, with medoids.

    A class is clustered on a seeded sample of at most ``max_cells`` of its
    cells (the cost stays bounded on atlases). Each part holds at least
    ``min_cells`` cells where the class has them: a class of fewer than
    ``spc * min_cells`` cells has fewer parts, taken in turn to fill its
    ``spc`` slots (a part's ``r``-th slot is seeded by its ``r``-th nearest
    cell, in turn over the part's size, so the slots start apart).

    Raises:
        ValueError: a class without cells.
    """
    rng = np.random.default_rng(seed)
    seeds, means = [], []
    for c in range(num_classes):
        members = class_members(labels, c, max_cells, rng)
        points = np.asarray(embeddings[members], dtype=np.float64)
        k = max(1, min(spc, len(members) // min_cells))
        if k == 1:
            centres = points.mean(axis=0, keepdims=True)
        else:
            centres = (
                KMeans(n_clusters=k, n_init=3, random_state=seed).fit(points)
            ).cluster_centers_
            centres = _equal_size_centres(points, centres)
        nearest = np.argsort(squared_distances(points, centres), axis=0)
        part, rank = np.arange(spc) % k, np.arange(spc) // k % (len(members) // k)
        seeds.append(members[nearest[rank, part]])
        means.append(centres[part])
    return ClassParts(
        seeds=np.concatenate(seeds),
        means=np.concatenate(means).astype(np.float32),
    )
