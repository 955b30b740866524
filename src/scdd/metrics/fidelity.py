"""Fidelity of a synthetic set to the real cells it summarises.

Every function compares synthetic cells with real training cells *in the same
gene order* (align with ``scdd.models.foundation.align_genes`` first) and
takes integer class labels in ``[0, num_classes)``:

- per-class Pearson correlation of gene means and of gene variances,
- fraction of zero entries (sparsity),
- marker-gene overlap: top-k marker genes per class found on the real cells
  and on the synthetic cells by the *same* rule, compared as overlap fraction
  and Jaccard index,
- MMD between the two sets in foundation-model space (RBF kernel, median
  heuristic bandwidth).

Expression matrices may be dense, scipy-sparse, or lazy (a dask array of CSR
row blocks, a split read from disk: :mod:`scdd.cellstore`). The real cells'
class moments, zero count and mean-difference markers come from one chunked
pass over them (:func:`summarise_classes`), in float64 one chunk at a time:
100k+ real cells are never densified, copied or read whole.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from scdd.cellstore import Matrix, is_lazy_matrix, sum_over_rows, take_matrix_rows
from scdd.evaluation.config import FidelityParams
from scdd.sampling import stratified_rows

logger = logging.getLogger(__name__)

#: Marker rule that works for any number of synthetic cells per class.
MEAN_DIFFERENCE = "mean_difference"
#: ``sc.tl.rank_genes_groups`` methods that need >= 2 cells in every group.
_NEEDS_TWO_CELLS = ("t-test", "t-test_overestim_var", "wilcoxon")

__all__ = [
    "MEAN_DIFFERENCE",
    "ClassSummary",
    "chunk_class_sums",
    "class_moments",
    "fidelity_report",
    "find_markers",
    "latent_mmd",
    "marker_overlap",
    "mmd_rbf",
    "moment_correlations",
    "summarise_classes",
    "summary_from_sums",
    "zero_fraction",
]


def _nonzeros(block: Matrix) -> int:
    if sparse.issparse(block):
        return int(np.count_nonzero(sparse.csr_matrix(block).data))
    return int(np.count_nonzero(np.asarray(block)))


def zero_fraction(x: Matrix, *, chunk_size: int = 20_000) -> float:
    """Fraction of exactly-zero entries of ``x`` ``[n, G]`` (0.0 for an empty x);
    a lazy ``x`` is counted block by block."""
    size = x.shape[0] * x.shape[1]
    if size == 0:
        return 0.0
    if not is_lazy_matrix(x):
        return float(1.0 - _nonzeros(x) / size)
    return float(1.0 - sum_over_rows(x, _nonzeros, chunk_size=chunk_size) / size)


@dataclass(frozen=True)
class ClassSummary:
    """What the gene-level fidelity metrics need of one set of cells.

    Attributes:
        means: per-class gene means ``[C, G]`` (NaN for empty classes).
        variances: per-class unbiased gene variances ``[C, G]`` (NaN below
            2 cells).
        counts: cells per class ``[C]``.
        zero_fraction: fraction of exactly-zero entries of the matrix.
    """

    means: np.ndarray
    variances: np.ndarray
    counts: np.ndarray
    zero_fraction: float


def chunk_class_sums(
    block: Matrix, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-class sums and sums of squares (float64), counts and nonzero
    entries of one row chunk (add them up over chunks, then
    :func:`summary_from_sums`)."""
    labels = np.asarray(labels, dtype=np.int64)
    onehot = sparse.csr_matrix(
        (np.ones(len(labels)), (labels, np.arange(len(labels)))),
        shape=(num_classes, len(labels)),
    )
    if sparse.issparse(block):
        block = sparse.csr_matrix(block, dtype=np.float64)
        squares = block.multiply(block)
    else:
        block = np.asarray(block, dtype=np.float64)
        squares = np.square(block)
    return (
        _dense(onehot @ block),
        _dense(onehot @ squares),
        np.bincount(labels, minlength=num_classes).astype(np.float64),
        _nonzeros(block),
    )


def summary_from_sums(
    sums: np.ndarray, sq_sums: np.ndarray, counts: np.ndarray, nonzeros: int
) -> ClassSummary:
    """The :class:`ClassSummary` of summed :func:`chunk_class_sums`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        means = sums / counts[:, None]
        var = (sq_sums - counts[:, None] * means**2) / (counts[:, None] - 1)
    means[counts == 0] = np.nan
    var[counts < 2] = np.nan
    size = counts.sum() * sums.shape[1]
    return ClassSummary(
        means=means,
        variances=np.clip(var, 0.0, None),
        counts=counts,
        zero_fraction=float(1.0 - nonzeros / size) if size else 0.0,
    )


def summarise_classes(
    x: Matrix, labels: np.ndarray, *, num_classes: int, chunk_size: int = 20_000
) -> ClassSummary:
    """Class means, variances, counts and the zero fraction of ``x`` in one pass.

    Sums are taken ``chunk_size`` rows at a time (a lazy ``x``: one row block
    at a time, in one dask computation), in float64 per chunk: no float64
    copy of the whole matrix, no densified matrix.

    Args:
        x: expression ``[n, G]``: dense, sparse or lazy.
        labels: int classes ``[n]`` in ``[0, num_classes)``.
        num_classes: ``C``.
        chunk_size: rows per chunk of an in-memory ``x``.
    """
    labels = np.asarray(labels)
    if labels.shape != (x.shape[0],):
        raise ValueError(
            f"labels must have one entry per cell: {labels.shape} for "
            f"{x.shape[0]} cells"
        )
    return summary_from_sums(
        *sum_over_rows(
            x,
            lambda block, rows: chunk_class_sums(block, rows, num_classes),
            labels,
            chunk_size=chunk_size,
        )
    )


def class_moments(
    x: Matrix, labels: np.ndarray, *, num_classes: int, chunk_size: int = 20_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class gene means, unbiased variances and cell counts, summed over
    ``chunk_size`` rows at a time (no float64 copy of the whole matrix; a lazy
    ``x`` is read block by block: :func:`summarise_classes`).

    Args:
        x: expression ``[n, G]``, dense, sparse or lazy.
        labels: int classes ``[n]`` in ``[0, num_classes)``.
        num_classes: ``C``.

    Returns:
        Means ``[C, G]``, variances ``[C, G]`` (``ddof=1``; NaN for classes
        with fewer than 2 cells) and counts ``[C]``. Means of empty classes
        are NaN.
    """
    summary = summarise_classes(
        x, labels, num_classes=num_classes, chunk_size=chunk_size
    )
    return summary.means, summary.variances, summary.counts


def _dense(x: Matrix) -> np.ndarray:
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation, or ``None`` when undefined (NaN or constant input)."""
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / denom) if denom > 0 else None


def _mean_or_none(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _correlations(
    real: ClassSummary, syn: ClassSummary, class_names: list[str]
) -> dict:
    out = {}
    for key, a, b in (
        ("mean_correlation", real.means, syn.means),
        ("variance_correlation", real.variances, syn.variances),
    ):
        per_class = {name: _pearson(a[c], b[c]) for c, name in enumerate(class_names)}
        out[key] = {"per_class": per_class, "mean": _mean_or_none(per_class.values())}
    return out


def moment_correlations(
    real_x: Matrix,
    real_labels: np.ndarray,
    syn_x: Matrix,
    syn_labels: np.ndarray,
    *,
    class_names: list[str],
) -> dict:
    """Per-class Pearson correlation (over genes) of gene means and variances.

    A class's variance correlation needs >= 2 synthetic (and real) cells of
    that class; with fewer it is ``None``. Classes missing from the synthetic
    set are ``None`` too. ``mean_*`` average the defined per-class values.

    Returns:
        ``{"mean_correlation": {"per_class", "mean"}, "variance_correlation":
        {"per_class", "mean"}}`` with per-class dicts keyed by class name.
    """
    num_classes = len(class_names)
    return _correlations(
        summarise_classes(real_x, real_labels, num_classes=num_classes),
        summarise_classes(syn_x, syn_labels, num_classes=num_classes),
        class_names,
    )


def _markers_from_means(
    means: np.ndarray, counts: np.ndarray, *, top_k: int
) -> list[np.ndarray | None]:
    """Top-k genes per class by ``mean_c - mean over the other classes' means``.

    The other classes are averaged unweighted (a mean of class means), so the
    rule does not depend on class sizes: a balanced synthetic set and an
    imbalanced real split are ranked alike. On log1p data this is the
    log-fold-change that ``rank_genes_groups`` reports. Classes without cells,
    or without another class present, get ``None``.
    """
    present = counts > 0
    markers: list[np.ndarray | None] = []
    for c in range(len(counts)):
        others = present.copy()
        others[c] = False
        if not present[c] or not others.any():
            markers.append(None)
            continue
        score = means[c] - means[others].mean(0)
        markers.append(np.argsort(-score, kind="stable")[:top_k])
    return markers


def _scanpy_markers(
    x: Matrix, labels: np.ndarray, *, num_classes: int, top_k: int, method: str
) -> list[np.ndarray | None]:
    """Top-k genes per class from ``sc.tl.rank_genes_groups`` (one vs rest);
    ``x`` in memory."""
    import anndata as ad
    import pandas as pd
    import scanpy as sc

    n_genes = x.shape[1]
    present = np.unique(labels)
    adata = ad.AnnData(
        X=sparse.csr_matrix(x, dtype=np.float32),
        obs=pd.DataFrame(
            {"group": pd.Categorical(np.asarray(labels).astype(str))},
            index=[str(i) for i in range(x.shape[0])],
        ),
        var=pd.DataFrame(index=[str(g) for g in range(n_genes)]),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(
            adata, "group", method=method, n_genes=min(top_k, n_genes), use_raw=False
        )
    names = adata.uns["rank_genes_groups"]["names"]
    markers: list[np.ndarray | None] = [None] * num_classes
    for c in present:
        markers[int(c)] = np.asarray(names[str(c)]).astype(int)
    return markers


def find_markers(
    x: Matrix,
    labels: np.ndarray,
    *,
    num_classes: int,
    top_k: int,
    method: str = MEAN_DIFFERENCE,
    max_cells: int | None = None,
    seed: int = 0,
    summary: ClassSummary | None = None,
) -> list[np.ndarray | None]:
    """Indices of the top-``top_k`` marker genes of each class (``None``: none).

    Args:
        x: log-normalised expression ``[n, G]`` (dense, sparse or lazy).
        labels: int classes ``[n]``.
        num_classes: ``C``.
        top_k: markers per class.
        method: ``"mean_difference"`` (class means of every cell, one chunked
            pass; see :func:`_markers_from_means`) or a
            ``sc.tl.rank_genes_groups`` method (``"t-test"``, ``"wilcoxon"``,
            ``"logreg"``, ...), which reads its cells into memory:
        max_cells: ... at most about this many (a seeded, stratified sample
            of the rows; ``None``: all).
        seed: seed of that sample.
        summary: ``x``'s :func:`summarise_classes`, when already computed.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if method == MEAN_DIFFERENCE:
        if summary is None:
            summary = summarise_classes(x, labels, num_classes=num_classes)
        return _markers_from_means(summary.means, summary.counts, top_k=top_k)
    labels = np.asarray(labels)
    rows = stratified_rows(labels, max_cells, seed)
    if is_lazy_matrix(x) or len(rows) < len(labels):
        x, labels = take_matrix_rows(x, rows), labels[rows]
    return _scanpy_markers(
        x, labels, num_classes=num_classes, top_k=top_k, method=method
    )


def _marker_method(method: str, syn_labels: np.ndarray, num_classes: int) -> str:
    """``method``, or mean_difference when it needs 2 cells a synthetic class lacks."""
    counts = np.bincount(np.asarray(syn_labels), minlength=num_classes)
    if method in _NEEDS_TWO_CELLS and (counts[counts > 0] < 2).any():
        logger.info(
            "Marker genes: %s needs >= 2 synthetic cells per class; using %s on "
            "both real and synthetic cells",
            method,
            MEAN_DIFFERENCE,
        )
        return MEAN_DIFFERENCE
    return method


def _overlap(
    real: list[np.ndarray | None],
    syn: list[np.ndarray | None],
    *,
    class_names: list[str],
    top_k: int,
    method: str,
) -> dict:
    overlap, jaccard = {}, {}
    for c, name in enumerate(class_names):
        if real[c] is None or syn[c] is None:
            overlap[name] = jaccard[name] = None
            continue
        a, b = set(real[c].tolist()), set(syn[c].tolist())
        overlap[name] = len(a & b) / top_k
        jaccard[name] = len(a & b) / len(a | b)
    return {
        "method": method,
        "top_k": top_k,
        "overlap": {"per_class": overlap, "mean": _mean_or_none(overlap.values())},
        "jaccard": {"per_class": jaccard, "mean": _mean_or_none(jaccard.values())},
    }


def marker_overlap(  # noqa: PLR0913
    real_x: Matrix,
    real_labels: np.ndarray,
    syn_x: Matrix,
    syn_labels: np.ndarray,
    *,
    class_names: list[str],
    top_k: int,
    method: str = MEAN_DIFFERENCE,
    max_cells: int | None = None,
    seed: int = 0,
    real_summary: ClassSummary | None = None,
    syn_summary: ClassSummary | None = None,
) -> dict:
    """Overlap of per-class top-k marker genes, real vs synthetic.

    Markers are found by the same rule on both sets. The t-test and Wilcoxon
    rules need >= 2 cells in every synthetic class; when a class has fewer,
    *both* sides fall back to ``"mean_difference"`` (logged, and recorded in
    ``method``), so the two marker lists stay comparable. ``"mean_difference"``
    is the default because it is defined for any SPC, which keeps the metric
    comparable across SPC 1, 2, 5, 10. A scanpy rule reads at most about
    ``max_cells`` real cells (stratified, ``seed``; see :func:`find_markers`).
    ``real_summary`` / ``syn_summary``: the sets' :func:`summarise_classes`,
    when already computed.

    Returns:
        ``{"method", "top_k", "overlap": {"per_class", "mean"}, "jaccard":
        {"per_class", "mean"}}``; overlap is ``|A & B| / top_k``; classes
        absent from either set are ``None``.
    """
    num_classes = len(class_names)
    top_k = min(int(top_k), real_x.shape[1])
    used = _marker_method(method, syn_labels, num_classes)
    real = find_markers(
        real_x,
        real_labels,
        num_classes=num_classes,
        top_k=top_k,
        method=used,
        max_cells=max_cells,
        seed=seed,
        summary=real_summary,
    )
    syn = find_markers(
        syn_x,
        syn_labels,
        num_classes=num_classes,
        top_k=top_k,
        method=used,
        summary=syn_summary,
    )
    return _overlap(real, syn, class_names=class_names, top_k=top_k, method=used)


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` squared Euclidean distances (clipped at 0)."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.clip(d, 0.0, None)


def median_bandwidth(points: np.ndarray) -> float:
    """Median pairwise Euclidean distance of ``points`` (0 pairs excluded).

    Falls back to 1.0 when all points coincide.
    """
    d2 = squared_distances(points, points)[np.triu_indices(len(points), k=1)]
    d2 = d2[d2 > 0]
    return float(np.sqrt(np.median(d2))) if d2.size else 1.0


def mmd_rbf(a: np.ndarray, b: np.ndarray, *, bandwidth: float | None = None) -> dict:
    """Maximum mean discrepancy of two point sets with an RBF kernel.

    ``k(x, y) = exp(-||x - y||^2 / (2 sigma^2))``, sigma = the median pairwise
    distance of the pooled points unless given. The biased (V-statistic)
    estimate of MMD^2 is used: it is >= 0, defined for a single synthetic
    cell per class, and exactly 0 for identical sets.

    Args:
        a: points ``[n, d]``.
        b: points ``[m, d]``.
        bandwidth: kernel width sigma; ``None`` for the median heuristic.

    Returns:
        ``{"mmd2", "mmd", "bandwidth"}`` (``mmd = sqrt(mmd2)``).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or len(a) == 0 or len(b) == 0:
        raise ValueError(
            f"mmd_rbf needs two non-empty [n, d] arrays, got {a.shape}, {b.shape}"
        )
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"widths differ: {a.shape[1]} vs {b.shape[1]}")
    sigma = median_bandwidth(np.vstack([a, b])) if bandwidth is None else bandwidth
    if not sigma > 0:
        raise ValueError(f"bandwidth must be > 0, got {sigma}")

    def kernel_mean(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.exp(-squared_distances(x, y) / (2.0 * sigma**2)).mean())

    mmd2 = max(kernel_mean(a, a) + kernel_mean(b, b) - 2.0 * kernel_mean(a, b), 0.0)
    return {"mmd2": mmd2, "mmd": float(np.sqrt(mmd2)), "bandwidth": float(sigma)}


def latent_mmd(
    real_z: np.ndarray,
    real_labels: np.ndarray,
    syn_z: np.ndarray,
    syn_labels: np.ndarray,
    *,
    class_names: list[str],
    max_cells: int | None,
    seed: int = 0,
) -> dict:
    """MMD between F(synthetic) and F(real), overall and per class.

    At most ``max_cells`` real cells (a seeded sample; per class for the
    per-class values) enter each kernel matrix, which bounds memory at
    ``max_cells^2`` floats; a lazy ``real_z`` is read only in those rows.
    One bandwidth (median heuristic on the pooled overall sample) is used for
    every value, so per-class MMDs are comparable.

    Returns:
        ``{"mmd2", "mmd", "bandwidth", "n_real", "per_class": {name: mmd}}``.
    """
    syn_z = np.asarray(syn_z, dtype=np.float64)
    real_labels, syn_labels = np.asarray(real_labels), np.asarray(syn_labels)
    rng = np.random.default_rng(seed)

    def sample(rows: np.ndarray) -> np.ndarray:
        if max_cells is not None and len(rows) > max_cells:
            rows = np.sort(rng.choice(rows, max_cells, replace=False))
        return rows

    rows = sample(np.arange(len(real_labels)))
    judged = [
        c
        for c in range(len(class_names))
        if (syn_labels == c).any() and (real_labels == c).any()
    ]
    class_rows = {c: sample(np.flatnonzero(real_labels == c)) for c in judged}
    # the sampled rows only, read once (a lazy real_z: one pass over its blocks)
    wanted = np.unique(np.concatenate([rows, *class_rows.values()]))
    real = take_matrix_rows(real_z, wanted, dense=True).astype(np.float64)

    def real_rows(r: np.ndarray) -> np.ndarray:
        return real[np.searchsorted(wanted, r)]

    overall = mmd_rbf(syn_z, real_rows(rows))
    per_class = {}
    for c, name in enumerate(class_names):
        if c not in class_rows:
            per_class[name] = None
            continue
        per_class[name] = mmd_rbf(
            syn_z[syn_labels == c],
            real_rows(class_rows[c]),
            bandwidth=overall["bandwidth"],
        )["mmd"]
    return {**overall, "n_real": int(len(rows)), "per_class": per_class}


def fidelity_report(  # noqa: PLR0913
    real_x: Matrix,
    real_labels: np.ndarray,
    syn_x: Matrix | None,
    syn_labels: np.ndarray,
    *,
    real_z: np.ndarray,
    syn_z: np.ndarray,
    class_names: list[str],
    params: FidelityParams,
    seed: int = 0,
    chunk_size: int = 20_000,
    real_summary: ClassSummary | None = None,
) -> dict:
    """All fidelity metrics of one synthetic set.

    The real cells are read once, chunk by chunk (a lazy ``real_x`` block by
    block): class means and variances, the zero fraction and the
    mean-difference markers all come from that pass. A scanpy marker method
    reads a stratified sample of at most about ``params.marker_max_cells`` of
    them.

    Args:
        real_x: real training cells ``[n, G]`` (log-normalised; dense, sparse
            or lazy).
        real_labels: their int classes ``[n]``.
        syn_x: synthetic cells ``[m, G]`` in the same gene order, or ``None``
            for a feature-only set (gene-level metrics are then ``None``).
        syn_labels: synthetic int classes ``[m]``.
        real_z: F(real training cells) ``[n, d]`` (lazy: only sampled rows read).
        syn_z: F(synthetic cells) or the synthetic features ``[m, d]``.
        class_names: class names, index = int label.
        params: ``evaluate.fidelity``: ``top_k`` marker genes per class found
            by ``marker_method`` (see :func:`marker_overlap`), which reads at
            most ``marker_max_cells`` real cells when it is scanpy's
            (``None``: all); ``mmd_max_cells``, the real-cell cap of the MMD
            kernel matrices.
        seed: seed of the MMD subsample and of the marker sample.
        chunk_size: rows per chunk of an in-memory ``real_x``.
        real_summary: the real cells' :func:`summarise_classes` when cached
            (``real_cell_stats``): the pass over ``real_x`` is skipped.

    Returns:
        ``{"mean_correlation", "variance_correlation", "zero_fraction":
        {"synthetic", "real"}, "markers", "mmd"}``.
    """
    if real_x.shape[0] != len(real_labels) or len(syn_z) != len(syn_labels):
        raise ValueError("labels must have one entry per cell")
    report: dict = {}
    if syn_x is None:
        report.update(
            mean_correlation=None,
            variance_correlation=None,
            zero_fraction={
                "synthetic": None,
                "real": zero_fraction(real_x, chunk_size=chunk_size)
                if real_summary is None
                else real_summary.zero_fraction,
            },
            markers=None,
        )
    else:
        if syn_x.shape[1] != real_x.shape[1]:
            raise ValueError(
                f"synthetic ({syn_x.shape[1]}) and real ({real_x.shape[1]}) cells "
                "must be in the same gene order; align them with align_genes first"
            )
        num_classes = len(class_names)
        real = real_summary or summarise_classes(
            real_x, real_labels, num_classes=num_classes, chunk_size=chunk_size
        )
        syn = summarise_classes(syn_x, syn_labels, num_classes=num_classes)
        report.update(_correlations(real, syn, class_names))
        report["zero_fraction"] = {
            "synthetic": syn.zero_fraction,
            "real": real.zero_fraction,
        }
        report["markers"] = marker_overlap(
            real_x,
            real_labels,
            syn_x,
            syn_labels,
            class_names=class_names,
            top_k=params.top_k,
            method=params.marker_method,
            max_cells=params.marker_max_cells,
            seed=seed,
            real_summary=real,
            syn_summary=syn,
        )
    report["mmd"] = latent_mmd(
        real_z,
        real_labels,
        syn_z,
        syn_labels,
        class_names=class_names,
        max_cells=params.mmd_max_cells,
        seed=seed,
    )
    return report
