"""Real cells for the evaluation: samples read into memory, splits aligned lazily.

The real splits reach the evaluation as lazy AnnData (``X`` a dask array of
CSR row blocks read from the ``.h5ad`` on demand, :mod:`scdd.cellstore`) or,
in tests and notebooks, in memory. Models train on a bounded sample of cells
(:func:`sample_cells`: one read); predictions and metrics read the rest one
row block at a time, in the training set's gene order
(:func:`aligned_cells`: nothing is read until a block is).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from scdd.cellstore import is_lazy, lazy_matrix, take_rows
from scdd.models.foundation import align_genes

_CSR_META = sparse.csr_matrix((0, 0), dtype=np.float32)


def sample_cells(adata: ad.AnnData, rows: np.ndarray) -> ad.AnnData:
    """The cells at sorted positions ``rows``, in memory.

    A lazy split is read once, only the row blocks that hold them
    (:func:`scdd.cellstore.take_rows`; ``X`` float32 CSR); an in-memory one
    is returned as is (every row) or as a view of the rows.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if is_lazy(adata):
        return take_rows(adata, rows)
    return adata if len(rows) == adata.n_obs else adata[rows]


def _reorder_columns(
    block: sparse.spmatrix | np.ndarray,
    *,
    keep: np.ndarray,
    target: np.ndarray,
    width: int,
) -> sparse.csr_matrix:
    """Columns ``keep`` of ``block`` moved to ``target``; the rest zero (CSR)."""
    x = sparse.csr_matrix(block, dtype=np.float32)[:, keep].tocoo()
    return sparse.csr_matrix(
        (x.data, (x.row, target[x.col])), shape=(x.shape[0], width), dtype=np.float32
    )


def aligned_cells(
    adata: ad.AnnData, *, gene_order: Sequence[str], min_overlap: int
) -> ad.AnnData:
    """``adata`` in ``gene_order``; absent genes are zeros.

    In memory: :func:`scdd.models.foundation.align_genes`. Lazy: a lazy
    AnnData whose row blocks are reordered as they are read (the same
    overlap check and error as ``align_genes``); nothing is read here.
    """
    if not is_lazy(adata):
        return align_genes(adata, gene_order=list(gene_order), min_overlap=min_overlap)
    gene_order = list(gene_order)
    x = lazy_matrix(adata.X)
    if list(adata.var_names) == gene_order:
        return ad.AnnData(X=x, obs=adata.obs, var=adata.var)
    # align_genes on no cells: its overlap check, error message and log line
    align_genes(
        ad.AnnData(
            X=sparse.csr_matrix((0, adata.n_vars), dtype=np.float32),
            var=pd.DataFrame(index=adata.var_names),
        ),
        gene_order=gene_order,
        min_overlap=min_overlap,
    )
    position = pd.Index(gene_order).get_indexer(adata.var_names)
    keep = np.flatnonzero(position >= 0)
    reorder = partial(
        _reorder_columns, keep=keep, target=position[keep], width=len(gene_order)
    )
    aligned = x.map_blocks(
        reorder,
        dtype=np.float32,
        chunks=(x.chunks[0], (len(gene_order),)),
        meta=_CSR_META,
    )
    return ad.AnnData(X=aligned, obs=adata.obs, var=pd.DataFrame(index=gene_order))
