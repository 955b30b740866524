"""AnnData checks and transforms that turn a user's ``.h5ad`` into model input.

Functions take ``adata`` first and everything else keyword-only (scverse
style); each returns a new object and leaves its input untouched. They work on
lazy AnnData (``X`` a dask array of CSR row blocks, :mod:`scdd.cellstore`):
subsetting and normalising only extend the dask graph, and the one pass that
reads the matrix, :func:`inspect_matrix`, keeps per-cell and per-gene vectors
only. The splits are then written block by block, so an atlas never sits in
memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scipy import sparse
from sklearn.model_selection import train_test_split

from scdd.cellstore import (
    CHUNK_ROWS,
    is_lazy,
    lazy_matrix,
    map_csr_blocks,
    reduce_blocks,
)
from scdd.sampling import class_index, label_strings

logger = logging.getLogger(__name__)

InputKind = Literal["counts", "log_normalised"]


def _matrix_of(adata: ad.AnnData, layer: str | None) -> tuple[Any, pd.DataFrame]:
    """The expression matrix ``layer`` names and its genes' ``var``."""
    if layer is None and adata.X is None:
        raise ValueError(
            "The file has no expression matrix in X; set data.layer to one of "
            f"the layers {list(adata.layers)} or to 'raw' when .raw is set "
            "(--params data.layer=LAYER)."
        )
    if layer is None:
        return adata.X, adata.var
    if layer == "raw":
        if adata.raw is None:
            raise ValueError(
                "data.layer='raw' was asked for but the file has no .raw; "
                "set data.layer to null (use X) or to one of the layers: "
                f"{list(adata.layers)}."
            )
        return adata.raw.X, adata.raw.var
    if layer in adata.layers:
        return adata.layers[layer], adata.var
    raise ValueError(
        f"data.layer={layer!r} is not in the file; available layers: "
        f"{list(adata.layers)} (or 'raw' when .raw is set, or null for X)."
    )


def _check_shape(*, n_cells: int, n_genes: int, layer: str | None) -> None:
    """Refuse a matrix with no cells or no genes."""
    if n_cells == 0 or n_genes == 0:
        where = "" if layer is None else f" in data.layer={layer!r}"
        raise ValueError(
            f"The input holds {n_cells} cells x {n_genes} genes{where}; scDD needs "
            "at least one cell and one gene. Point --params data.input=PATH at "
            "a file that has them (or data.layer at a filled matrix)."
        )


def _check_gene_names(names: pd.Index) -> None:
    """Refuse genes without a name (empty, NaN or None); names are not invented."""
    text = names.astype(str).str.strip().str.lower()
    nameless = np.flatnonzero(names.isna() | text.isin(["", "nan", "none"]))
    if nameless.size:
        raise ValueError(
            f"{nameless.size} genes have no name (var_names empty or NaN, e.g. at "
            f"positions {nameless[:5].tolist()}); set var_names from a var column "
            "and save the file again, e.g. "
            "adata.var_names = adata.var['gene_symbols']."
        )


def _unique_cell_names(obs: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``obs`` with duplicate cell names suffixed ``-1``, ``-2`` ...
    (anndata's ``obs_names_make_unique``), and one warning saying how many."""
    out = obs.copy()
    n_dup = int(out.index.duplicated().sum())
    if n_dup:
        out.index = ad.utils.make_index_unique(out.index.astype(str))
        logger.warning(
            "Made %d duplicate cell names (obs_names) unique (suffix -1, -2 ...)",
            n_dup,
        )
    return out


def select_matrix(
    adata: ad.AnnData, *, layer: str | None, chunk_rows: int = CHUNK_ROWS
) -> ad.AnnData:
    """Return a lazy AnnData whose ``X`` is the expression matrix named by ``layer``.

    ``layer`` is ``None`` (use ``X``), ``"raw"`` (use ``adata.raw.X`` and its
    genes) or the name of an entry in ``adata.layers``. Nothing is read: ``X``
    comes back as float32 CSR row blocks, in-memory input wrapped in blocks of
    ``chunk_rows`` cells. Refuses an empty matrix and nameless genes; makes
    duplicate cell names unique.
    """
    x, var = _matrix_of(adata, layer)
    _check_shape(n_cells=adata.n_obs, n_genes=len(var), layer=layer)
    _check_gene_names(var.index)
    var = var.copy()
    var.index = var.index.astype(str)
    return ad.AnnData(
        X=lazy_matrix(x, chunk_rows=chunk_rows),
        obs=_unique_cell_names(adata.obs),
        var=var,
    )


@dataclass(frozen=True)
class MatrixStats:
    """What one pass over an expression matrix says.

    Attributes:
        n_nonfinite: NaN/inf entries.
        min_value, max_value: smallest and largest finite entries.
        n_non_integer: finite entries that are not whole numbers (1e-4).
        cell_sums: per-cell sum of the values ``[N]`` (total counts for counts).
        cell_expm1_sums: per-cell ``sum(expm1(x))`` ``[N]`` (the library size of
            log-normalised cells).
        gene_cells: per-gene number of cells expressing it ``[G]``, counted over
            the cells whose ``cell_sums`` reach ``min_counts``.
    """

    n_nonfinite: int
    min_value: float
    max_value: float
    n_non_integer: int
    cell_sums: np.ndarray
    cell_expm1_sums: np.ndarray
    gene_cells: np.ndarray


def _block_stats(block: sparse.csr_matrix, *, min_counts: float) -> dict[str, Any]:
    """:class:`MatrixStats` parts of one row block."""
    block = sparse.csr_matrix(block)
    finite = np.isfinite(block.data)
    good = block.data[finite]
    clean = block.astype(np.float64)
    clean.data = np.nan_to_num(clean.data, nan=0.0, posinf=0.0, neginf=0.0)
    cell_sums = np.asarray(clean.sum(1)).ravel()
    expm1 = clean.copy()
    expm1.data = np.expm1(np.minimum(expm1.data, 50.0))
    passing = sparse.diags((cell_sums >= min_counts).astype(np.float64)) @ clean
    return {
        "n_nonfinite": int((~finite).sum()),
        "min_value": float(good.min()) if good.size else 0.0,
        "max_value": float(good.max()) if good.size else 0.0,
        "n_non_integer": int(np.count_nonzero(np.abs(good - np.round(good)) > 1e-4)),
        "cell_sums": cell_sums,
        "cell_expm1_sums": np.asarray(expm1.sum(1)).ravel(),
        "gene_cells": np.asarray((passing != 0).sum(0)).ravel(),
    }


def inspect_matrix(adata: ad.AnnData, *, min_counts: float) -> MatrixStats:
    """One chunked pass over ``adata.X`` (lazy or in memory): value checks,
    per-cell totals and per-gene cell counts; only those vectors are kept."""
    parts = reduce_blocks(
        lazy_matrix(adata.X), partial(_block_stats, min_counts=min_counts)
    )
    return MatrixStats(
        n_nonfinite=sum(p["n_nonfinite"] for p in parts),
        min_value=min(p["min_value"] for p in parts),
        max_value=max(p["max_value"] for p in parts),
        n_non_integer=sum(p["n_non_integer"] for p in parts),
        cell_sums=np.concatenate([p["cell_sums"] for p in parts]),
        cell_expm1_sums=np.concatenate([p["cell_expm1_sums"] for p in parts]),
        gene_cells=np.sum([p["gene_cells"] for p in parts], axis=0),
    )


def check_values(stats: MatrixStats) -> None:
    """Fail on non-finite or negative expression values, naming the fix."""
    if stats.n_nonfinite:
        raise ValueError(
            f"The expression matrix holds {stats.n_nonfinite} NaN or infinite "
            "values; clean them (e.g. replace with 0) before running scDD."
        )
    if stats.min_value < 0 and stats.n_non_integer == 0:
        raise ValueError(
            f"The expression matrix holds negative values (min {stats.min_value:.3g}) "
            "although all are whole numbers; counts cannot be negative, so these "
            "are not raw counts. Point data.layer at the raw counts "
            "(--params data.layer=LAYER, e.g. counts or raw)."
        )
    if stats.min_value < 0:
        raise ValueError(
            f"The expression matrix holds negative values (min {stats.min_value:.3g}); "
            "it looks scaled or batch-corrected. Point data.layer at raw counts "
            "or log-normalised values (--params data.layer=LAYER, e.g. counts or raw)."
        )


def detect_input_kind(stats: MatrixStats, *, max_log_value: float) -> InputKind:
    """Tell raw counts (all whole numbers) from log-normalised values, over
    every entry. Non-integer values above ``max_log_value`` are neither, and
    are refused: normalising them again would distort the data."""
    if stats.max_value == 0:
        raise ValueError(
            "The expression matrix is all zeros; point data.layer at the matrix "
            "that holds the expression values (--params data.layer=LAYER: null "
            "for X, raw, or a layer name) or check data.input."
        )
    if stats.n_non_integer == 0:
        return "counts"
    if stats.max_value <= max_log_value:
        return "log_normalised"
    raise ValueError(
        f"The values are not integers (not raw counts) and reach "
        f"{stats.max_value:.3g}, above preprocess.max_log_value={max_log_value} "
        "(not log1p-normalised). Provide raw counts, or log1p(normalize_total) "
        "values."
    )


def require_classes(
    adata: ad.AnnData, *, label_key: str, after: str, fix: str, min_classes: int = 2
) -> None:
    """Raise, naming the step (``after``) and the ``fix``, when the cells left
    hold fewer than ``min_classes`` classes of ``obs[label_key]``."""
    counts = adata.obs[label_key].value_counts()
    counts = counts[counts > 0]
    if len(counts) < min_classes:
        listing = ", ".join(f"{name}: {n} cells" for name, n in counts.items())
        raise ValueError(
            f"{after} label column '{label_key}' has {len(counts)} class(es) "
            f"({listing or 'none'}); distillation needs at least {min_classes}. "
            f"{fix}"
        )


#: Where a user picks the label column, named in check_labels' messages.
LABEL_SETTING = "--params data.label_key=COLUMN"


def _no_labels_message(adata: ad.AnnData, label_key: str, setting: str) -> str:
    """Why an all-NaN label column is refused, listing the columns with values."""
    filled = [c for c in adata.obs.columns if adata.obs[c].notna().any()]
    return (
        f"Label column '{label_key}' has no labels at all (all {adata.n_obs} "
        f"cells are NaN). Pick another column with {setting}; "
        f"columns with values: {filled}."
    )


def check_labels(
    adata: ad.AnnData,
    *,
    label_key: str,
    min_classes: int = 2,
    setting: str = LABEL_SETTING,
) -> ad.AnnData:
    """Make ``obs[label_key]`` a string categorical; drop unlabelled cells.

    Raises if the column is missing (listing the columns there are), holds no
    label at all, or names fewer than ``min_classes`` classes; the messages
    name ``setting``, where the user picks the column.
    """
    if label_key not in adata.obs.columns:
        raise ValueError(
            f"Label column '{label_key}' is not in obs. Available columns: "
            f"{list(adata.obs.columns)}. Set it with {setting}."
        )
    labels = adata.obs[label_key]
    missing = labels.isna().to_numpy()
    if missing.all():
        raise ValueError(_no_labels_message(adata, label_key, setting))
    if missing.any():
        logger.warning(
            "Dropping %d cells with no '%s' label", int(missing.sum()), label_key
        )
        adata = adata[~missing].copy()
    else:
        adata = adata.copy()
    if pd.api.types.is_numeric_dtype(adata.obs[label_key].dtype) or (
        isinstance(adata.obs[label_key].dtype, pd.CategoricalDtype)
        and pd.api.types.is_numeric_dtype(adata.obs[label_key].cat.categories.dtype)
    ):
        logger.warning(
            "Label column '%s' holds numbers; they are used as class names "
            "(e.g. %s -> '%s'), as scanpy does for cluster ids",
            label_key,
            adata.obs[label_key].iloc[0],
            adata.obs[label_key].astype(str).iloc[0],
        )
    adata.obs[label_key] = pd.Categorical(label_strings(adata.obs[label_key]))
    dropped = int(missing.sum())
    require_classes(
        adata,
        label_key=label_key,
        after=f"After dropping {dropped} unlabelled cells," if dropped else "The",
        fix=f"Pick another column with {setting}.",
        min_classes=min_classes,
    )
    return adata


def _merge_columns(
    block: sparse.csr_matrix, *, indicator: sparse.csr_matrix, kind: InputKind
) -> sparse.csr_matrix:
    """Sum the columns ``indicator`` maps together (in linear space for
    log-normalised values)."""
    block = sparse.csr_matrix(block, dtype=np.float32, copy=True)
    if kind == "log_normalised":
        block.data = np.expm1(block.data)
    merged = sparse.csr_matrix(block @ indicator, dtype=np.float32)
    if kind == "log_normalised":
        merged.data = np.log1p(merged.data)
    return merged


def _rescale_rows(block: sparse.csr_matrix, *, target_sum: float) -> sparse.csr_matrix:
    """Each row's ``expm1`` profile scaled to ``target_sum``, back in log1p."""
    block = sparse.csr_matrix(block, dtype=np.float32, copy=True)
    linear = np.expm1(block.data.astype(np.float64))
    per_row = np.diff(block.indptr)
    totals = np.bincount(
        np.repeat(np.arange(block.shape[0]), per_row),
        weights=linear,
        minlength=block.shape[0],
    )
    block.data = np.log1p(linear * np.repeat(target_sum / totals, per_row)).astype(
        np.float32
    )
    return block


def dedupe_genes(
    adata: ad.AnnData,
    *,
    strategy: Literal["make_unique", "merge"],
    kind: InputKind = "counts",
) -> ad.AnnData:
    """Resolve duplicate gene names by suffixing (``make_unique``) or summing.

    ``merge`` sums duplicate columns block by block; for log-normalised input
    the sum is taken in linear space (``log1p(sum(expm1(x)))``) so values stay
    log-normalised.
    """
    names = adata.var_names
    n_dup = int(names.duplicated().sum())
    if n_dup == 0:
        return adata
    if strategy == "make_unique":
        out = adata.copy()
        out.var_names_make_unique()
        logger.warning("Made %d duplicate gene names unique (suffix -1, -2 ...)", n_dup)
        return out
    if strategy != "merge":
        raise ValueError(
            f"preprocess.duplicate_genes={strategy!r}; use 'make_unique' or 'merge'."
        )
    codes, uniques = pd.factorize(names)
    indicator = sparse.csr_matrix(
        (np.ones(len(codes), dtype=np.float32), (np.arange(len(codes)), codes)),
        shape=(len(codes), len(uniques)),
    )

    merge = partial(_merge_columns, indicator=indicator, kind=kind)
    merged = map_csr_blocks(adata.X, merge, n_cols=len(uniques))
    first = ~names.duplicated()
    var = adata.var.loc[first].copy()
    var.index = pd.Index(uniques, dtype=str)
    logger.warning("Merged %d duplicate gene columns by summing", n_dup)
    return ad.AnnData(X=merged, obs=adata.obs.copy(), var=var)


def quality_filter(
    adata: ad.AnnData, *, stats: MatrixStats, min_counts: int, min_cells: int
) -> ad.AnnData:
    """Drop cells with fewer than ``min_counts`` counts, then genes expressed in
    fewer than ``min_cells`` of the kept cells (scanpy's ``filter_cells`` then
    ``filter_genes``), from ``stats`` of :func:`inspect_matrix` run with the
    same ``min_counts``; nothing is read."""
    cells = stats.cell_sums >= min_counts
    genes = stats.gene_cells >= min_cells
    if not cells.any() or not genes.any():
        raise ValueError(
            f"Quality filtering left {int(cells.sum())} cells x {int(genes.sum())} "
            f"genes (min_counts={min_counts}, min_cells={min_cells}); lower "
            "preprocess.min_counts / preprocess.min_cells or check the input."
        )
    return adata[cells, genes].copy()


def log_normalise(
    adata: ad.AnnData, *, target_sum: float, keep_counts: bool
) -> ad.AnnData:
    """``normalize_total`` + ``log1p`` (scanpy's; lazily on a lazy ``X``); raw
    counts kept in ``layers["counts"]`` only when ``keep_counts`` (they double
    every later read of the split and no stage of scDD reads them)."""
    out = adata.copy()
    if keep_counts:
        out.layers["counts"] = out.X if is_lazy(out) else out.X.copy()
    sc.pp.normalize_total(out, target_sum=target_sum)
    sc.pp.log1p(out)
    out.uns.pop("log1p", None)
    if not is_lazy(out):
        out.X = sparse.csr_matrix(out.X, dtype=np.float32)
    return out


def rescale_log_normalised(
    adata: ad.AnnData,
    *,
    totals: np.ndarray,
    target_sum: float,
    tolerance: float = 1e-3,
) -> tuple[ad.AnnData, float]:
    """Put log-normalised cells on ``target_sum`` total counts, as CellTypist and
    SCimilarity expect, without normalising twice.

    Each cell's ``expm1`` profile is scaled to ``target_sum`` (its expression
    ratios stay as they are); ``totals`` are the cells' ``sum(expm1(x))``
    (:attr:`MatrixStats.cell_expm1_sums`). Input already within ``tolerance``
    (relative) of the target is returned unchanged.

    Returns:
        The cells and the median per-cell total the input had.
    """
    median = float(np.median(totals))
    if np.all(np.abs(totals - target_sum) <= tolerance * target_sum):
        return adata, median
    if np.any(totals <= 0):
        raise ValueError(
            f"{int(np.sum(totals <= 0))} cells have no expression at all; "
            "remove them before running scDD."
        )

    out = ad.AnnData(
        X=map_csr_blocks(
            adata.X, partial(_rescale_rows, target_sum=target_sum), n_cols=adata.n_vars
        ),
        obs=adata.obs.copy(),
        var=adata.var.copy(),
    )
    out.uns.update(adata.uns)
    return out, median


def filter_small_classes(
    adata: ad.AnnData,
    *,
    label_key: str,
    min_cells: int,
    on_small: Literal["drop", "error"],
) -> tuple[ad.AnnData, list[str]]:
    """Drop (with a warning) or refuse classes with fewer than ``min_cells`` cells.

    Returns the kept cells and the names of the dropped classes.
    """
    counts = adata.obs[label_key].value_counts()
    small = counts[counts < min_cells]
    if small.empty:
        return adata, []
    listing = ", ".join(f"{name} ({n})" for name, n in small.items())
    if on_small == "error":
        raise ValueError(
            f"Classes with fewer than {min_cells} cells cannot be split: {listing}. "
            "Set preprocess.small_classes=drop to drop them, or lower "
            "preprocess.min_cells_per_class."
        )
    if on_small != "drop":
        raise ValueError(
            f"preprocess.small_classes={on_small!r}; use 'drop' or 'error'."
        )
    logger.warning("Dropping classes with fewer than %d cells: %s", min_cells, listing)
    keep = ~adata.obs[label_key].isin(small.index).to_numpy()
    out = adata[keep].copy()
    out.obs[label_key] = out.obs[label_key].cat.remove_unused_categories()
    require_classes(
        out,
        label_key=label_key,
        after=f"After dropping classes with fewer than {min_cells} cells,",
        fix="Lower preprocess.min_cells_per_class "
        "(--params preprocess.min_cells_per_class=N).",
    )
    return out, list(map(str, small.index))


def stratified_split(
    adata: ad.AnnData, *, label_key: str, test_size: float, seed: int = 0
) -> tuple[ad.AnnData, ad.AnnData]:
    """Seeded train/test split with every class in both parts."""
    if not 0 < test_size < 1:
        raise ValueError(f"preprocess.test_size must be in (0, 1), got {test_size}.")
    train_idx, test_idx = train_test_split(
        np.arange(adata.n_obs),
        test_size=test_size,
        stratify=class_index(label_strings(adata.obs[label_key]))[1],
        random_state=seed,
    )
    return adata[np.sort(train_idx)].copy(), adata[np.sort(test_idx)].copy()


def carve_validation(
    train: ad.AnnData, *, label_key: str, fraction: float, seed: int = 0
) -> tuple[ad.AnnData, ad.AnnData]:
    """Seeded, stratified validation cells taken from the training split.

    ``fraction`` is of the training cells. A class with fewer than 3
    training cells stays whole in training (it has none to spare); the others
    keep at least 2 training cells.
    """
    _, inverse, counts = class_index(label_strings(train.obs[label_key]))
    rng = np.random.default_rng(seed)
    held = []
    for c in range(len(counts)):
        rows = np.flatnonzero(inverse == c)
        n_val = min(int(round(fraction * len(rows))), len(rows) - 2)
        if n_val > 0:
            held.append(rng.choice(rows, size=n_val, replace=False))
    val = np.zeros(train.n_obs, dtype=bool)
    if held:
        val[np.concatenate(held)] = True
    return train[~val].copy(), train[val].copy()
