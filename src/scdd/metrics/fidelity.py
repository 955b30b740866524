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

Expression matrices may be dense or scipy-sparse: class moments are computed
with sparse products, so 100k+ real cells never get densified.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy import sparse

logger = logging.getLogger(__name__)

#: Marker rule that works for any number of synthetic cells per class.
MEAN_DIFFERENCE = "mean_difference"
#: ``sc.tl.rank_genes_groups`` methods that need >= 2 cells in every group.
_NEEDS_TWO_CELLS = ("t-test", "t-test_overestim_var", "wilcoxon")

Matrix = np.ndarray | sparse.spmatrix


def zero_fraction(x: Matrix) -> float:
    """Fraction of exactly-zero entries of ``x`` ``[n, G]`` (0.0 for an empty x)."""
    size = x.shape[0] * x.shape[1]
    if size == 0:
        return 0.0
    if sparse.issparse(x):
        x = sparse.csr_matrix(x)
        return float(1.0 - np.count_nonzero(x.data) / size)
    return float(1.0 - np.count_nonzero(np.asarray(x)) / size)


def class_moments(
    x: Matrix, labels: np.ndarray, *, num_classes: int, chunk_size: int = 20_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class gene means, unbiased variances and cell counts, summed over
    ``chunk_size`` rows at a time (no float64 copy of the whole matrix).

    Args:
        x: expression ``[n, G]``, dense or sparse.
        labels: int classes ``[n]`` in ``[0, num_classes)``.
        num_classes: ``C``.

    Returns:
        Means ``[C, G]``, variances ``[C, G]`` (``ddof=1``; NaN for classes
        with fewer than 2 cells) and counts ``[C]``. Means of empty classes
        are NaN.
    """
    labels = np.asarray(labels)
    onehot = sparse.csr_matrix(
        (np.ones(len(labels)), (labels, np.arange(len(labels)))),
        shape=(num_classes, len(labels)),
    )
    counts = np.asarray(onehot.sum(1)).ravel()
    sums = np.zeros((num_classes, x.shape[1]))
    sq_sums = np.zeros_like(sums)
    for start in range(0, x.shape[0], chunk_size):  # float64 one chunk at a time
        rows = slice(start, start + chunk_size)
        block = x[rows]
        if sparse.issparse(block):
            block = sparse.csr_matrix(block, dtype=np.float64)
            squares = block.multiply(block)
        else:
            block = np.asarray(block, dtype=np.float64)
            squares = np.square(block)
        sums += _dense(onehot[:, rows] @ block)
        sq_sums += _dense(onehot[:, rows] @ squares)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = sums / counts[:, None]
        var = (sq_sums - counts[:, None] * means**2) / (counts[:, None] - 1)
    means[counts == 0] = np.nan
    var[counts < 2] = np.nan
    return means, np.clip(var, 0.0, None), counts


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
    real_mean, real_var, _ = class_moments(real_x, real_labels, num_classes=num_classes)
    syn_mean, syn_var, _ = class_moments(syn_x, syn_labels, num_classes=num_classes)
    out = {}
    for key, real, syn in (
        ("mean_correlation", real_mean, syn_mean),
        ("variance_correlation", real_var, syn_var),
    ):
        per_class = {
            name: _pearson(real[c], syn[c]) for c, name in enumerate(class_names)
        }
        out[key] = {"per_class": per_class, "mean": _mean_or_none(per_class.values())}
    return out


def _mean_difference_markers(
    x: Matrix, labels: np.ndarray, *, num_classes: int, top_k: int
) -> list[np.ndarray | None]:
    """Top-k genes per class by ``mean_c - mean over the other classes' means``.

    The other classes are averaged unweighted (a mean of class means), so the
    rule does not depend on class sizes: a balanced synthetic set and an
    imbalanced real split are ranked alike. On log1p data this is the
    log-fold-change that ``rank_genes_groups`` reports. Classes without cells,
    or without another class present, get ``None``.
    """
    means, _, counts = class_moments(x, labels, num_classes=num_classes)
    present = counts > 0
    markers: list[np.ndarray | None] = []
    for c in range(num_classes):
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
    """Top-k genes per class from ``sc.tl.rank_genes_groups`` (one vs rest)."""
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
) -> list[np.ndarray | None]:
    """Indices of the top-``top_k`` marker genes of each class (``None``: none).

    Args:
        x: log-normalised expression ``[n, G]``.
        labels: int classes ``[n]``.
        num_classes: ``C``.
        top_k: markers per class.
        method: ``"mean_difference"`` (see :func:`_mean_difference_markers`)
            or a ``sc.tl.rank_genes_groups`` method (``"t-test"``,
            ``"wilcoxon"``, ``"logreg"``, ...).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if method == MEAN_DIFFERENCE:
        return _mean_difference_markers(x, labels, num_classes=num_classes, top_k=top_k)
    return _scanpy_markers(
        x, labels, num_classes=num_classes, top_k=top_k, method=method
    )


def marker_overlap(
    real_x: Matrix,
    real_labels: np.ndarray,
    syn_x: Matrix,
    syn_labels: np.ndarray,
    *,
    class_names: list[str],
    top_k: int = 50,
    method: str = MEAN_DIFFERENCE,
) -> dict:
    """Overlap of per-class top-k marker genes, real vs synthetic.

    Markers are found by the same rule on both sets. The t-test and Wilcoxon
    rules need >= 2 cells in every synthetic class; when a class has fewer,
    *both* sides fall back to ``"mean_difference"`` (logged, and recorded in
    ``method``), so the two marker lists stay comparable. ``"mean_difference"``
    is the default because it is defined for any SPC, which keeps the metric
    comparable across SPC 1, 2, 5, 10.

    Returns:
        ``{"method", "top_k", "overlap": {"per_class", "mean"}, "jaccard":
        {"per_class", "mean"}}``; overlap is ``|A & B| / top_k``; classes
        absent from either set are ``None``.
    """
    num_classes = len(class_names)
    top_k = min(int(top_k), real_x.shape[1])
    counts = np.bincount(np.asarray(syn_labels), minlength=num_classes)
    used = method
    if method in _NEEDS_TWO_CELLS and (counts[counts > 0] < 2).any():
        used = MEAN_DIFFERENCE
        logger.info(
            "Marker genes: %s needs >= 2 synthetic cells per class; using %s on "
            "both real and synthetic cells",
            method,
            MEAN_DIFFERENCE,
        )
    real = find_markers(
        real_x, real_labels, num_classes=num_classes, top_k=top_k, method=used
    )
    syn = find_markers(
        syn_x, syn_labels, num_classes=num_classes, top_k=top_k, method=used
    )
    overlap, jaccard = {}, {}
    for c, name in enumerate(class_names):
        if real[c] is None or syn[c] is None:
            overlap[name] = jaccard[name] = None
            continue
        a, b = set(real[c].tolist()), set(syn[c].tolist())
        overlap[name] = len(a & b) / top_k
        jaccard[name] = len(a & b) / len(a | b)
    return {
        "method": used,
        "top_k": top_k,
        "overlap": {"per_class": overlap, "mean": _mean_or_none(overlap.values())},
        "jaccard": {"per_class": jaccard, "mean": _mean_or_none(jaccard.values())},
    }


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.clip(d, 0.0, None)


def median_bandwidth(points: np.ndarray) -> float:
    """Median pairwise Euclidean distance of ``points`` (0 pairs excluded).

    Falls back to 1.0 when all points coincide.
    """
    d2 = _squared_distances(points, points)[np.triu_indices(len(points), k=1)]
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
        return float(np.exp(-_squared_distances(x, y) / (2.0 * sigma**2)).mean())

    mmd2 = max(kernel_mean(a, a) + kernel_mean(b, b) - 2.0 * kernel_mean(a, b), 0.0)
    return {"mmd2": mmd2, "mmd": float(np.sqrt(mmd2)), "bandwidth": float(sigma)}


def latent_mmd(
    real_z: np.ndarray,
    real_labels: np.ndarray,
    syn_z: np.ndarray,
    syn_labels: np.ndarray,
    *,
    class_names: list[str],
    max_cells: int | None = 2000,
    seed: int = 0,
) -> dict:
    """MMD between F(synthetic) and F(real), overall and per class.

    At most ``max_cells`` real cells (a seeded sample; per class for the
    per-class values) enter each kernel matrix, which bounds memory at
    ``max_cells^2`` floats. One bandwidth (median heuristic on the pooled
    overall sample) is used for every value, so per-class MMDs are comparable.

    Returns:
        ``{"mmd2", "mmd", "bandwidth", "n_real", "per_class": {name: mmd}}``.
    """
    real_z = np.asarray(real_z, dtype=np.float64)
    syn_z = np.asarray(syn_z, dtype=np.float64)
    real_labels, syn_labels = np.asarray(real_labels), np.asarray(syn_labels)
    rng = np.random.default_rng(seed)

    def sample(rows: np.ndarray) -> np.ndarray:
        if max_cells is not None and len(rows) > max_cells:
            rows = np.sort(rng.choice(rows, max_cells, replace=False))
        return rows

    rows = sample(np.arange(len(real_z)))
    overall = mmd_rbf(syn_z, real_z[rows])
    per_class = {}
    for c, name in enumerate(class_names):
        syn_c, real_c = syn_z[syn_labels == c], np.flatnonzero(real_labels == c)
        if len(syn_c) == 0 or len(real_c) == 0:
            per_class[name] = None
            continue
        per_class[name] = mmd_rbf(
            syn_c, real_z[sample(real_c)], bandwidth=overall["bandwidth"]
        )["mmd"]
    return {**overall, "n_real": int(len(rows)), "per_class": per_class}


def fidelity_report(
    real_x: Matrix,
    real_labels: np.ndarray,
    syn_x: Matrix | None,
    syn_labels: np.ndarray,
    *,
    real_z: np.ndarray,
    syn_z: np.ndarray,
    class_names: list[str],
    top_k: int = 50,
    marker_method: str = MEAN_DIFFERENCE,
    mmd_max_cells: int | None = 2000,
    seed: int = 0,
) -> dict:
    """All fidelity metrics of one synthetic set.

    Args:
        real_x: real training cells ``[n, G]`` (log-normalised).
        real_labels: their int classes ``[n]``.
        syn_x: synthetic cells ``[m, G]`` in the same gene order, or ``None``
            for a feature-only set (gene-level metrics are then ``None``).
        syn_labels: synthetic int classes ``[m]``.
        real_z: F(real training cells) ``[n, d]``.
        syn_z: F(synthetic cells) or the synthetic features ``[m, d]``.
        class_names: class names, index = int label.
        top_k: marker genes per class.
        marker_method: see :func:`marker_overlap`.
        mmd_max_cells: real-cell cap of the MMD kernel matrices.
        seed: seed of the MMD subsample.

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
            zero_fraction={"synthetic": None, "real": zero_fraction(real_x)},
            markers=None,
        )
    else:
        if syn_x.shape[1] != real_x.shape[1]:
            raise ValueError(
                f"synthetic ({syn_x.shape[1]}) and real ({real_x.shape[1]}) cells "
                "must be in the same gene order; align them with align_genes first"
            )
        report.update(
            moment_correlations(
                real_x, real_labels, syn_x, syn_labels, class_names=class_names
            )
        )
        report["zero_fraction"] = {
            "synthetic": zero_fraction(syn_x),
            "real": zero_fraction(real_x),
        }
        report["markers"] = marker_overlap(
            real_x,
            real_labels,
            syn_x,
            syn_labels,
            class_names=class_names,
            top_k=top_k,
            method=marker_method,
        )
    report["mmd"] = latent_mmd(
        real_z,
        real_labels,
        syn_z,
        syn_labels,
        class_names=class_names,
        max_cells=mmd_max_cells,
        seed=seed,
    )
    return report
