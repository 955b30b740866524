"""Coresets: the best *selection* of real cells, the control a distilled set
must beat.

Each selector picks ``k`` rows of one class's F-space embeddings; the
registry :data:`CORESETS` maps a method name to it and :func:`select_coreset`
applies it class by class. A class is selected from a seeded sample of at most
``max_cells`` of its cells, so the cost stays bounded on atlases (herding and
k-center cost ``O(k x cells)``). A class with fewer cells than ``spc`` gives
each of its cells in turn, repeated to fill its slots.

=================  =========================================================
``random``         ``k`` random cells (the ``random_real`` row)
``herding``        greedy herding of the class mean (Welling 2009): each pick
                   brings the running mean of the picks closest to it
``kcenter``        greedy k-center: start at the cell nearest the class mean,
                   then add the cell farthest from every pick so far
``kmeans_medoid``  the cells nearest the centres of ``k`` equal-size k-means
                   parts (:mod:`scdd.distill.parts`; scdd's own seeds)
``geosketch``      geometric sketching (Hie et al. 2019, ``geosketch.gs``):
                   cells spread evenly over the space the class covers
=================  =========================================================
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from scdd.distill.parts import class_parts
from scdd.metrics.fidelity import squared_distances
from scdd.sampling import class_members

#: ``(points [n, d], k, rng) -> k row positions``, ``k <= n``.
Selector = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _random(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(len(points), k, replace=False)


def _herding(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    mean = points.mean(axis=0)
    total = np.zeros_like(mean)
    free = np.ones(len(points), dtype=bool)
    picks = []
    for t in range(1, k + 1):
        gap = np.square(mean - (total + points) / t).sum(axis=1)
        gap[~free] = np.inf
        pick = int(gap.argmin())
        picks.append(pick)
        free[pick] = False
        total += points[pick]
    return np.asarray(picks)


def _kcenter(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    first = int(squared_distances(points, points.mean(axis=0, keepdims=True)).argmin())
    picks = [first]
    nearest = squared_distances(points, points[[first]])[:, 0]
    for _ in range(k - 1):
        pick = int(nearest.argmax())
        picks.append(pick)
        nearest = np.minimum(nearest, squared_distances(points, points[[pick]])[:, 0])
    return np.asarray(picks)


def _geosketch(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    from geosketch import gs

    if k == len(points):
        return np.arange(k)
    picks = np.unique(gs(points, k, replace=False, seed=int(rng.integers(2**31))))
    if len(picks) < k:  # geosketch may return fewer distinct cells than asked
        rest = np.setdiff1d(np.arange(len(points)), picks)
        picks = np.concatenate([picks, rng.choice(rest, k - len(picks), replace=False)])
    return picks[:k]


#: Coreset method name -> per-class selector (``kmeans_medoid`` is
#: :func:`scdd.distill.parts.class_parts`' seeds, so the parts scdd matches
#: and its seeds agree).
CORESETS: dict[str, Selector | None] = {
    "random": _random,
    "herding": _herding,
    "kcenter": _kcenter,
    "kmeans_medoid": None,
    "geosketch": _geosketch,
}


def select_coreset(
    name: str,
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    spc: int,
    num_classes: int,
    seed: int,
    max_cells: int = 5_000,
) -> np.ndarray:
    """Rows of ``spc`` real cells per class chosen by coreset ``name``.

    Args:
        name: a key of :data:`CORESETS`.
        embeddings: F(training cells) ``[N, D]``.
        labels: class index per cell ``[N]``.
        spc: cells per class.
        num_classes: ``C``.
        seed: seeds the class samples and the selectors.
        max_cells: a larger class is selected from a seeded sample of this size.

    Returns:
        ``[C * spc]`` row positions, class-major.

    Raises:
        ValueError: an unknown ``name`` or a class without cells.
    """
    if name not in CORESETS:
        raise ValueError(f"Unknown coreset {name!r}; choose one of {list(CORESETS)}.")
    selector = CORESETS[name]
    if selector is None:
        return class_parts(
            embeddings,
            labels,
            spc=spc,
            num_classes=num_classes,
            seed=seed,
            max_cells=max_cells,
        ).seeds
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(num_classes):
        members = class_members(labels, c, max_cells, rng)
        k = min(spc, len(members))
        points = np.asarray(embeddings[members], dtype=np.float64)
        picks.append(np.resize(members[selector(points, k, rng)], spc))
    return np.concatenate(picks)
