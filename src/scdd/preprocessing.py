"""AnnData checks and transforms that turn a user's ``.h5ad`` into model input.

Functions take ``adata`` first and everything else keyword-only (scverse
style); each returns a new object and leaves its input untouched.
"""

from __future__ import annotations

import logging
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scipy import sparse
from sklearn.model_selection import train_test_split

logger = logging.getLogger(__name__)

InputKind = Literal["counts", "log_normalised"]


def select_matrix(adata: ad.AnnData, *, layer: str | None = None) -> ad.AnnData:
    """Return a copy whose ``X`` is the expression matrix named by ``layer``.

    ``layer`` is ``None`` (use ``X``), ``"raw"`` (use ``adata.raw.X`` and its
    genes) or the name of an entry in ``adata.layers``. Backed files are read
    into memory here.
    """
    if adata.isbacked:
        adata = adata.to_memory()
    if layer is None:
        out = adata.copy()
    elif layer == "raw":
        if adata.raw is None:
            raise ValueError(
                "data.layer='raw' was asked for but the file has no .raw; "
                "set data.layer to null (use X) or to one of the layers: "
                f"{list(adata.layers)}."
            )
        out = adata.raw.to_adata()
        out.obs = adata.obs.copy()
    elif layer in adata.layers:
        out = ad.AnnData(
            X=adata.layers[layer].copy(), obs=adata.obs.copy(), var=adata.var.copy()
        )
    else:
        raise ValueError(
            f"data.layer={layer!r} is not in the file; available layers: "
            f"{list(adata.layers)} (or 'raw' when .raw is set, or null for X)."
        )
    out.X = sparse.csr_matrix(out.X, dtype=np.float32)
    out.raw = None
    out.layers.clear()
    if out.n_obs == 0 or out.n_vars == 0:
        raise ValueError(
            f"The input holds {out.n_obs} cells x {out.n_vars} genes; scDD needs a "
            "labelled cells x genes matrix. Check data.input (and data.layer)."
        )
    return out


def check_values(adata: ad.AnnData) -> None:
    """Fail on non-finite or negative expression values, naming the fix."""
    values = adata.X.data if sparse.issparse(adata.X) else np.asarray(adata.X)
    n_bad = int(np.count_nonzero(~np.isfinite(values)))
    if n_bad:
        raise ValueError(
            f"The expression matrix holds {n_bad} NaN or infinite values; "
            "clean them (e.g. replace with 0) before running scDD."
        )
    if values.size and values.min() < 0:
        raise ValueError(
            f"The expression matrix holds negative values (min {values.min():.3g}); "
            "it looks scaled or batch-corrected. Point data.layer at raw counts "
            "or log-normalised values (e.g. data.layer=counts or data.layer=raw)."
        )


def check_labels(
    adata: ad.AnnData, *, label_key: str, min_classes: int = 2
) -> ad.AnnData:
    """Make ``obs[label_key]`` a string categorical; drop unlabelled cells.

    Raises if the column is missing (listing the columns there are) or names
    fewer than ``min_classes`` classes.
    """
    if label_key not in adata.obs.columns:
        raise ValueError(
            f"Label column '{label_key}' is not in obs. Available columns: "
            f"{list(adata.obs.columns)}. Set it with "
            "--params data.label_key=COLUMN."
        )
    labels = adata.obs[label_key]
    missing = labels.isna().to_numpy()
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
    adata.obs[label_key] = pd.Categorical(adata.obs[label_key].astype(str))
    n_classes = adata.obs[label_key].nunique()
    if n_classes < min_classes:
        raise ValueError(
            f"Label column '{label_key}' has {n_classes} class(es); distillation "
            f"needs at least {min_classes}. Pick another column with data.label_key."
        )
    return adata


def dedupe_genes(
    adata: ad.AnnData,
    *,
    strategy: Literal["make_unique", "merge"] = "make_unique",
    kind: InputKind = "counts",
) -> ad.AnnData:
    """Resolve duplicate gene names by suffixing (``make_unique``) or summing.

    ``merge`` sums duplicate columns; for log-normalised input the sum is
    taken in linear space (``log1p(sum(expm1(x)))``) so values stay
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
    x = sparse.csr_matrix(adata.X)
    if kind == "log_normalised":
        x = x.copy()
        x.data = np.expm1(x.data)
    merged = sparse.csr_matrix(x @ indicator)
    if kind == "log_normalised":
        merged.data = np.log1p(merged.data)
    first = ~names.duplicated()
    out = ad.AnnData(X=merged, obs=adata.obs.copy(), var=adata.var.loc[first].copy())
    out.var_names = pd.Index(uniques, dtype=str)
    logger.warning("Merged %d duplicate gene columns by summing", n_dup)
    return out


def detect_input_kind(adata: ad.AnnData, *, max_log_value: float = 20.0) -> InputKind:
    """Tell raw counts (all integers) from log-normalised values.

    Looks at up to 100k non-zero entries. Non-integer values above
    ``max_log_value`` are neither, and are refused: normalising them again
    would distort the data.
    """
    values = adata.X.data if sparse.issparse(adata.X) else np.asarray(adata.X).ravel()
    values = values[values != 0]
    if values.size > 100_000:
        values = np.random.default_rng(0).choice(values, 100_000, replace=False)
    if values.size == 0:
        raise ValueError("The expression matrix is all zeros.")
    if np.allclose(values, np.round(values), atol=1e-4):
        return "counts"
    if values.max() <= max_log_value:
        return "log_normalised"
    raise ValueError(
        f"The values are not integers (not raw counts) and reach {values.max():.3g}, "
        f"above preprocess.max_log_value={max_log_value} (not log1p-normalised). "
        "Provide raw counts, or log1p(normalize_total) values."
    )


def quality_filter(
    adata: ad.AnnData, *, min_counts: int = 10, min_cells: int = 3
) -> ad.AnnData:
    """Drop cells with fewer than ``min_counts`` counts, then rare genes."""
    out = adata.copy()
    sc.pp.filter_cells(out, min_counts=min_counts)
    sc.pp.filter_genes(out, min_cells=min_cells)
    out.obs = out.obs.drop(columns=["n_counts"], errors="ignore")
    out.var = out.var.drop(columns=["n_cells"], errors="ignore")
    if out.n_obs == 0 or out.n_vars == 0:
        raise ValueError(
            f"Quality filtering left {out.n_obs} cells x {out.n_vars} genes "
            f"(min_counts={min_counts}, min_cells={min_cells}); lower "
            "preprocess.min_counts / preprocess.min_cells or check the input."
        )
    return out


def log_normalise(
    adata: ad.AnnData, *, target_sum: float = 1e4, keep_counts: bool = False
) -> ad.AnnData:
    """``normalize_total`` + ``log1p``; raw counts kept in ``layers["counts"]``
    only when ``keep_counts`` (they double every later read of the split and
    no stage of scDD reads them)."""
    out = adata.copy()
    if keep_counts:
        out.layers["counts"] = out.X.copy()
    sc.pp.normalize_total(out, target_sum=target_sum)
    sc.pp.log1p(out)
    out.uns.pop("log1p", None)
    out.X = sparse.csr_matrix(out.X, dtype=np.float32)
    return out


def cell_totals(
    x: np.ndarray | sparse.spmatrix, *, chunk_size: int = 50_000
) -> np.ndarray:
    """Per-cell ``sum(expm1(x))`` of log-normalised cells ``[n]`` (float64),
    read ``chunk_size`` rows at a time: no copy of the whole matrix."""
    totals = []
    for start in range(0, x.shape[0], chunk_size):
        block = sparse.csr_matrix(x[start : start + chunk_size], dtype=np.float64)
        totals.append(np.asarray(block.expm1().sum(1)).ravel())
    return np.concatenate(totals) if totals else np.zeros(0)


def rescale_log_normalised(
    adata: ad.AnnData, *, target_sum: float = 1e4, tolerance: float = 1e-3
) -> tuple[ad.AnnData, float]:
    """Put log-normalised cells on ``target_sum`` total counts, as CellTypist and
    SCimilarity expect, without normalising twice.

    Each cell's ``expm1`` profile is scaled to ``target_sum`` (its expression
    ratios stay as they are). Input already within ``tolerance`` (relative)
    of the target is returned unchanged.

    Returns:
        The cells and the median per-cell total the input had.
    """
    totals = cell_totals(adata.X)
    median = float(np.median(totals))
    if np.all(np.abs(totals - target_sum) <= tolerance * target_sum):
        return adata, median
    if np.any(totals <= 0):
        raise ValueError(
            f"{int(np.sum(totals <= 0))} cells have no expression at all; "
            "remove them before running scDD."
        )
    x = sparse.csr_matrix(adata.X, dtype=np.float32, copy=True)
    scale = np.repeat(target_sum / totals, np.diff(x.indptr))
    x.data = np.log1p(np.expm1(x.data.astype(np.float64)) * scale).astype(np.float32)
    out = ad.AnnData(X=x, obs=adata.obs.copy(), var=adata.var.copy())
    out.uns.update(adata.uns)
    return out, median


def filter_small_classes(
    adata: ad.AnnData,
    *,
    label_key: str,
    min_cells: int,
    on_small: Literal["drop", "error"] = "drop",
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
    n_classes = out.obs[label_key].nunique()
    if n_classes < 2:
        raise ValueError(
            f"After dropping small classes {n_classes} class(es) remain; at least 2 "
            "are needed. Lower preprocess.min_cells_per_class."
        )
    return out, list(map(str, small.index))


def stratified_split(
    adata: ad.AnnData, *, label_key: str, test_size: float = 0.3, seed: int = 0
) -> tuple[ad.AnnData, ad.AnnData]:
    """Seeded train/test split with every class in both parts."""
    if not 0 < test_size < 1:
        raise ValueError(f"preprocess.test_size must be in (0, 1), got {test_size}.")
    train_idx, test_idx = train_test_split(
        np.arange(adata.n_obs),
        test_size=test_size,
        stratify=adata.obs[label_key].to_numpy(),
        random_state=seed,
    )
    return adata[np.sort(train_idx)].copy(), adata[np.sort(test_idx)].copy()
