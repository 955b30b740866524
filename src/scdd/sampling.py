"""Seeded, stratified row samples: bounded work on atlases, every class kept."""

from __future__ import annotations

import numpy as np
import pandas as pd


def class_index(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(labels, return_inverse=True, return_counts=True)``, by
    hashing rather than sorting every label: seconds, not minutes, for
    millions of string labels."""
    codes, classes = pd.factorize(np.asarray(labels), sort=True)
    return np.asarray(classes), codes, np.bincount(codes, minlength=len(classes))


def label_strings(column: pd.Series) -> np.ndarray:
    """An obs column as an array of ``str``; a categorical column shares one
    string per class (8 bytes a cell, not a new string per cell)."""
    if not isinstance(column.dtype, pd.CategoricalDtype):
        return column.astype(str).to_numpy()
    names = np.append(column.cat.categories.astype(str).to_numpy(object), "nan")
    return names[column.cat.codes.to_numpy()]  # code -1 (missing) -> "nan"


def stratified_rows(
    labels: np.ndarray, max_cells: int | None, seed: int = 0
) -> np.ndarray:
    """Sorted row indices of at most about ``max_cells`` cells, per class in
    proportion to its size (at least one cell of every class).

    All rows come back when there are no more than ``max_cells`` (or it is
    ``None``). The proportional quotas are rounded, and every class keeps at
    least one cell, so the sample may exceed ``max_cells`` by at most the
    number of classes.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if max_cells is None or n <= max_cells:
        return np.arange(n)
    if max_cells < 1:
        raise ValueError(f"max_cells must be >= 1 or None, got {max_cells}")
    rng = np.random.default_rng(seed)
    classes, inverse, counts = class_index(labels)
    quotas = np.minimum(counts, np.maximum(1, np.round(counts * max_cells / n)))
    keep = [
        rng.choice(np.flatnonzero(inverse == c), int(quotas[c]), replace=False)
        for c in range(len(classes))
    ]
    return np.sort(np.concatenate(keep))


def class_members(
    labels: np.ndarray, c: int, max_cells: int, rng: np.random.Generator
) -> np.ndarray:
    """Sorted rows of class ``c``: all, or a seeded sample of ``max_cells``.

    Raises:
        ValueError: the class has no cells.
    """
    members = np.flatnonzero(labels == c)
    if len(members) == 0:
        raise ValueError(f"Class {c} has no training cells to select from.")
    if len(members) > max_cells:
        members = np.sort(rng.choice(members, max_cells, replace=False))
    return members


def capped_class_rows(
    labels: np.ndarray, max_per_class: int, seed: int = 0
) -> np.ndarray | None:
    """Sorted rows keeping every class of at most ``max_per_class`` cells
    whole and a seeded sample of that many of each larger class; ``None``
    (all rows) when no class is larger."""
    _, inverse, counts = class_index(labels)
    if counts.max(initial=0) <= max_per_class:
        return None
    rng = np.random.default_rng(seed)
    keep = [class_members(inverse, c, max_per_class, rng) for c in range(len(counts))]
    return np.sort(np.concatenate(keep))
