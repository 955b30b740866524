"""Lazy splits for tests: tiny row blocks whose reads are recorded, and a guard
that fails any computation of more than one row block of a gene matrix."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import anndata as ad
import dask.array as da
import numpy as np
import pytest
from scipy import sparse

from scdd.cellstore import lazy_matrix

CHUNK_ROWS = 7
_META = sparse.csr_matrix((0, 0), dtype=np.float32)


class BlockReads:
    """Row blocks read from a spied lazy matrix: ``counts[i]`` reads of block i."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.max_rows = 0
        self._lock = threading.Lock()

    def record(self, block: sparse.csr_matrix, block_info=None) -> sparse.csr_matrix:
        if block_info is not None and block_info.get(0) is not None:
            with self._lock:
                self.counts[block_info[0]["chunk-location"][0]] += 1
                self.max_rows = max(self.max_rows, block.shape[0])
        return block

    def clear(self) -> None:
        self.counts.clear()
        self.max_rows = 0


def spied(
    adata: ad.AnnData, chunk_rows: int = CHUNK_ROWS
) -> tuple[ad.AnnData, BlockReads]:
    """``adata`` with a lazy X of ``chunk_rows``-row CSR blocks and a record of
    the blocks read (obs/var/uns shared)."""
    reads = BlockReads()
    x = lazy_matrix(adata.X, chunk_rows=chunk_rows).map_blocks(
        reads.record, dtype=np.float32, meta=_META
    )
    lazy = ad.AnnData(X=x, obs=adata.obs, var=adata.var, uns=adata.uns)
    return lazy, reads


@contextmanager
def no_whole_matrix(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail when a dask array spanning more than one row block is computed
    (``.compute()``, ``np.asarray``, ``.persist()``): code may read one block
    at a time, or one block per task in a single graph, never a whole matrix."""

    def refuse(name):
        original = getattr(da.Array, name)

        def guarded(self, *args, **kwargs):
            if self.ndim == 2 and len(self.chunks[0]) > 1:
                raise AssertionError(
                    f"{name} of a lazy {self.shape} matrix of "
                    f"{len(self.chunks[0])} row blocks: read it block by block"
                )
            return original(self, *args, **kwargs)

        monkeypatch.setattr(da.Array, name, guarded)

    for name in ("compute", "__array__", "persist"):
        refuse(name)
    yield
