"""Turn raw synthetic samples into a valid, real-looking ``.h5ad``.

Decoded genes are non-negative after clipping, then sparsified (values at or
below a cut-off become 0; or, with no cut-off, as sparse as the real cells of
the same class) and log-normalised to the real data's per-cell total, so
CellTypist, scanpy and SCimilarity read them as they read real data. The total
is the real cells' own (1e4 after our normalisation), not a fixed 1e4: an input
normalised otherwise (the bundled PBMC data: ~2000 over 765 genes) gets
synthetic cells on its own scale, which is the scale F was trained on.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from scdd.distill.methods import MethodOutput
from scdd.distill.real_cells import RealCellStats


def finalise_genes(
    genes: np.ndarray,
    labels: np.ndarray,
    *,
    zero_fractions: np.ndarray,
    target_sum: float,
    zero_threshold: float | None = None,
) -> sparse.csr_matrix:
    """Clip, sparsify and log-normalise raw synthetic expression ``[n, G]``.

    Args:
        genes: decoded (log-scale) values, any sign.
        labels: class of each row ``[n]``.
        zero_fractions: real zero fraction per class (used when
            ``zero_threshold`` is ``None``).
        target_sum: per-cell total of ``expm1`` values after normalisation.
        zero_threshold: a fixed cut-off instead of the per-class quantile.

    Returns:
        float32 CSR, non-negative, finite, each row log1p-normalised to
        ``target_sum``.
    """
    x = np.clip(np.nan_to_num(np.asarray(genes, dtype=np.float64)), 0.0, None)
    for c in np.unique(labels):
        rows = labels == c
        cut = (
            zero_threshold
            if zero_threshold is not None
            else np.quantile(x[rows], zero_fractions[c])
        )
        block = x[rows]
        block[block <= cut] = 0.0
        x[rows] = block
    linear = np.expm1(x)
    totals = linear.sum(1, keepdims=True)
    empty = totals[:, 0] == 0
    if empty.any():  # a row thresholded away entirely keeps its largest gene
        top = np.argmax(np.asarray(genes)[empty], axis=1)
        linear[np.flatnonzero(empty), top] = 1.0
        totals = linear.sum(1, keepdims=True)
    return sparse.csr_matrix(np.log1p(linear / totals * target_sum).astype(np.float32))


def input_var(var: pd.DataFrame, genes: pd.Index) -> pd.DataFrame:
    """The input's ``var`` columns (``gene_ids``, ``highly_variable``...) for
    ``genes``; a gene the input lacks gets NaN, or False in a boolean column."""
    out = var.reindex(genes)
    flags = var.select_dtypes(bool).columns
    out[flags] = var[flags].reindex(genes, fill_value=False)
    return out


def synthetic_adata(
    output: MethodOutput,
    *,
    label_key: str,
    categories: list[str],
    var_names: list[str],
    stats: RealCellStats | None = None,
    zero_threshold: float | None = None,
    method: str,
) -> AnnData:
    """AnnData of a synthetic set: genes in ``X`` (empty for features-only),
    labels in ``obs[label_key]``, the variables the method optimised in
    ``obsm["X_optimised_codes"]`` (latent codes, features or gene values) and
    F-space features of feature-level methods in ``obsm["X_foundation"]``.

    ``stats`` of the training cells (same gene order) give the sparsity and
    normalisation to match; rows that are real cells (``output.real_cells``:
    ``random_real``, the coresets, ``full``) are kept as they are and marked
    in ``obs["scdd_real_cell"]`` (``full``'s lazy matrix stays lazy, to be
    written block by block).
    """
    n = len(output.labels)
    obs = pd.DataFrame(
        {
            label_key: pd.Categorical.from_codes(output.labels, categories=categories),
            "scdd_method": method,
            "scdd_real_cell": output.real_cells,
        },
        index=[f"syn_{method}_{i}" for i in range(n)],
    )
    if output.genes is None:
        x = sparse.csr_matrix((n, 0), dtype=np.float32)
        var = pd.DataFrame(index=pd.Index([], dtype=str))
    else:
        var = pd.DataFrame(index=list(var_names))
        if output.real_cells:
            x = output.genes
            if not isinstance(x, da.Array):
                x = sparse.csr_matrix(x, dtype=np.float32)
        else:
            x = finalise_genes(
                output.genes,
                output.labels,
                zero_fractions=stats.zero_fractions,
                target_sum=stats.target_sum,
                zero_threshold=zero_threshold,
            )
    adata = AnnData(X=x, obs=obs, var=var)
    if output.codes is not None:
        adata.obsm["X_optimised_codes"] = np.asarray(output.codes, dtype=np.float32)
    if output.features is not None:
        adata.obsm["X_foundation"] = np.asarray(output.features, dtype=np.float32)
    return adata
