"""Row chunks of a gene matrix held in memory or read lazily from disk.

A matrix here is dense, scipy-sparse, or a dask array of CSR row blocks
(a lazy split's ``X``, :mod:`scdd.cellstore`). These helpers let the metrics
and the evaluation models read either one chunk at a time: memory stays
O(chunk) and a lazy matrix is never computed whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import dask
import dask.array as da
import numpy as np
from scipy import sparse

from scdd.cellstore import blocks

Matrix = np.ndarray | sparse.spmatrix | da.Array


def is_lazy_matrix(x: Any) -> bool:
    """Whether ``x`` is read on demand (a dask array)."""
    return isinstance(x, da.Array)


def row_chunks(x: Matrix, chunk_size: int) -> Iterator[tuple[int, Any]]:
    """``(first_row, rows)`` of ``x``, at most ``chunk_size`` rows each, in order.

    An in-memory ``x`` is sliced; a lazy one is read one row block at a time
    (a block larger than ``chunk_size`` is split, a smaller one is not merged).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if is_lazy_matrix(x):
        for start, block in blocks(x):
            for offset in range(0, block.shape[0], chunk_size):
                yield start + offset, block[offset : offset + chunk_size]
        return
    for start in range(0, x.shape[0], chunk_size):
        yield start, x[start : start + chunk_size]


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, tuple):
        return tuple(_add(u, v) for u, v in zip(a, b, strict=True))
    return a + b


def sum_over_rows(
    x: Matrix,
    per_chunk: Callable[..., Any],
    *row_args: np.ndarray,
    chunk_size: int = 20_000,
) -> Any:
    """``sum(per_chunk(rows, *arg_rows))`` over row chunks of ``x``.

    ``row_args`` are per-row arrays, sliced like the rows. ``per_chunk``
    returns an array, a number or a tuple of them (added element-wise); it
    is called once per chunk, on an empty chunk when ``x`` has no rows.

    In memory, chunks of ``chunk_size`` rows are summed one after the other.
    A lazy ``x`` is read in one dask computation, one task per row block,
    whose results are added pairwise (a tree): only a few partial sums are
    alive at once, whatever the number of blocks.
    """
    if not is_lazy_matrix(x):
        if x.shape[0] == 0:
            return per_chunk(x, *(arg[:0] for arg in row_args))
        total = None
        for start, rows in row_chunks(x, chunk_size):
            stop = start + rows.shape[0]
            part = per_chunk(rows, *(arg[start:stop] for arg in row_args))
            total = part if total is None else _add(total, part)
        return total
    bounds = np.cumsum((0, *x.chunks[0]))
    parts = [
        dask.delayed(per_chunk)(
            block, *(arg[bounds[i] : bounds[i + 1]] for arg in row_args)
        )
        for i, block in enumerate(x.to_delayed().ravel())
    ]
    while len(parts) > 1:
        parts = [
            dask.delayed(_add)(*parts[i : i + 2]) if i + 1 < len(parts) else parts[i]
            for i in range(0, len(parts), 2)
        ]
    (total,) = dask.compute(parts[0])
    return total
