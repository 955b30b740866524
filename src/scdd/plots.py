"""Report figures: real vs synthetic cells (paper Figs 5-7) and the loss curve.

Plain matplotlib/scanpy functions that return a :class:`~matplotlib.figure.Figure`
and never save or show it, so the ``report`` pipeline writes them through the
catalog and a notebook displays them inline. A feature-only synthetic set
(``n_vars == 0``, e.g. FeatDistill) has no genes: the gene-level figures then
show a text panel naming the method instead of failing.

The real cells may be a lazy split (``X`` read from disk by row blocks,
:mod:`scdd.cellstore`): the gene-level figures read only a capped, seeded,
stratified sample of its cells (one read, only the genes they draw).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anndata as ad
import matplotlib as mpl
import numpy as np
import pandas as pd
import scanpy as sc
from matplotlib.figure import Figure
from scipy import sparse

from scdd.cellstore import is_lazy, take_matrix_rows
from scdd.distill.names import LOSS_TERMS
from scdd.provenance import recorded_params
from scdd.report_config import ReportParams
from scdd.sampling import label_strings, stratified_rows

logger = logging.getLogger(__name__)

__all__ = ["correlation_figure", "hvg_figure", "loss_figure", "umap_figure"]

_LOSS_TERMS = ("loss", *LOSS_TERMS)


def _categories(adata: ad.AnnData, label_key: str) -> list[str]:
    """Class names of ``obs[label_key]`` (category order, else sorted)."""
    if label_key not in adata.obs.columns:
        raise ValueError(
            f"Label column '{label_key}' is not in obs (columns: "
            f"{list(adata.obs.columns)}); set data.label_key to one of them."
        )
    labels = adata.obs[label_key]
    if isinstance(labels.dtype, pd.CategoricalDtype):
        return [str(c) for c in labels.cat.categories if (labels == c).any()]
    return sorted(map(str, labels.unique()))


def _palette(categories: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """One colour per class: tab10 up to 10 classes, tab20 up to 20, else turbo."""
    n = len(categories)
    if n <= 10:
        colours = mpl.colormaps["tab10"].colors[:n]
    elif n <= 20:
        colours = mpl.colormaps["tab20"].colors[:n]
    else:
        colours = mpl.colormaps["turbo"](np.linspace(0, 1, n))
    return {c: tuple(colour) for c, colour in zip(categories, colours, strict=True)}


def _figsize(report: ReportParams, name: str) -> tuple[float, float]:
    """``report.figsize.<name>``: ``(width, height)`` in inches."""
    width, height = getattr(report.figsize, name)
    return float(width), float(height)


def _dense(x: np.ndarray | sparse.spmatrix) -> np.ndarray:
    return np.asarray(x.toarray() if sparse.issparse(x) else x, dtype=np.float64)


def _method(synthetic: ad.AnnData) -> str:
    """Distillation method that made ``synthetic`` (``obs`` or provenance)."""
    if "scdd_method" in synthetic.obs.columns and synthetic.n_obs:
        return str(synthetic.obs["scdd_method"].iloc[0])
    return str(recorded_params(synthetic, "distill").get("method", "unknown"))


def _text_figure(message: str, *, title: str, figsize: Sequence[float]) -> Figure:
    """A single empty panel carrying ``message``: the figure when there is no data."""
    fig = Figure(figsize=tuple(figsize), layout="constrained")
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=12)
    ax.set_axis_off()
    ax.set_title(title)
    return fig


def _shared_genes(real: ad.AnnData, synthetic: ad.AnnData) -> pd.Index:
    """Genes in both sets, in the real data's order (synthetic is in F's order)."""
    return real.var_names[real.var_names.isin(synthetic.var_names)]


def _shared_positions(real: ad.AnnData, synthetic: ad.AnnData) -> np.ndarray:
    """Positions of :func:`_shared_genes` in ``real``."""
    return np.flatnonzero(real.var_names.isin(synthetic.var_names))


def _class_means(
    adata: ad.AnnData, genes: pd.Index, label_key: str, categories: Sequence[str]
) -> np.ndarray:
    """Mean expression ``[n_classes, n_genes]``; NaN rows for absent classes."""
    x = adata[:, genes].X
    labels = label_strings(adata.obs[label_key])
    means = np.full((len(categories), len(genes)), np.nan)
    for i, c in enumerate(categories):
        mask = labels == c
        if mask.any():
            means[i] = _dense(x[mask].mean(axis=0)).ravel()
    return means


def _real_sample(
    real: ad.AnnData,
    label_key: str,
    cols: np.ndarray,
    *,
    max_cells: int | None,
    seed: int,
) -> ad.AnnData:
    """At most about ``max_cells`` real cells (seeded, stratified) and only
    the genes at positions ``cols``, in memory; a lazy ``real`` is read once,
    only the row blocks that hold the sample."""
    rows = stratified_rows(label_strings(real.obs[label_key]), max_cells, seed)
    if not is_lazy(real):
        return (real if len(rows) == real.n_obs else real[rows])[:, cols]
    return ad.AnnData(
        X=take_matrix_rows(real.X[:, cols], rows),
        obs=real.obs.iloc[rows].copy(),
        var=pd.DataFrame(index=real.var_names[cols]),
    )


def _no_genes(
    real: ad.AnnData, synthetic: ad.AnnData, *, title: str, figsize: Sequence[float]
) -> Figure | None:
    """The text figure when there is no gene matrix to compare, else None."""
    if synthetic.n_vars == 0:
        return _text_figure(
            f"No gene matrix for feature-level method '{_method(synthetic)}':\n"
            "its synthetic cells exist only in F-space (see the UMAP).",
            title=title,
            figsize=figsize,
        )
    if len(_shared_genes(real, synthetic)) == 0:
        return _text_figure(
            "The real and synthetic cells share no gene names.",
            title=title,
            figsize=figsize,
        )
    return None


def umap_figure(
    real: ad.AnnData,
    synthetic: ad.AnnData,
    label_key: str,
    *,
    report: ReportParams,
    seed: int = 0,
) -> Figure:
    """UMAP of synthetic cells (stars) over the real cells, coloured by class.

    The embedding is computed on F-space features, so gene-level and
    feature-only synthetic sets are drawn the same way: pass the cached
    ``train_embeddings`` and ``synthetic_embeddings`` (F applied to the
    synthetic genes, or their stored features). Both share one UMAP fit, so
    a star that lands inside its class's cloud is a plausible cell of it.

    Args:
        real: real cells, ``X`` = features ``[n_real, d]``, labels in obs.
        synthetic: synthetic cells, ``X`` = features ``[n_syn, d]``.
        label_key: obs column holding the class.
        report: ``params:report``: ``umap.n_neighbors``, the neighbourhood
            size of the kNN graph (capped at n - 1); ``umap.min_dist``;
            ``umap.max_cells``, the real cells drawn at most (a seeded,
            stratified sample; ``None``: all): UMAP's cost grows with the
            cells, a plot's legibility does not; ``figsize.umap`` in inches.
        seed: random state of UMAP and of the sample.

    Returns:
        A figure with one axes: real cells as small dots, synthetic cells as
        large stars with black edges, both in the class colour.

    Raises:
        ValueError: missing label column or feature widths that differ.
    """
    if real.n_vars != synthetic.n_vars:
        raise ValueError(
            f"Real features have width {real.n_vars} but synthetic ones "
            f"{synthetic.n_vars}; embed both with the same foundation model."
        )
    umap = report.umap
    categories = _categories(real, label_key)
    _categories(synthetic, label_key)
    labels = label_strings(real.obs[label_key])
    rows = stratified_rows(labels, umap.max_cells, seed)
    real_x = take_matrix_rows(real.X, rows)  # lazy: only these rows read
    x = np.vstack([_dense(real_x), _dense(synthetic.X)]).astype(np.float32)
    joint = ad.AnnData(X=x)
    n = joint.n_obs
    sc.pp.neighbors(
        joint,
        n_neighbors=max(2, min(umap.n_neighbors, n - 1)),
        use_rep="X",
        random_state=seed,
    )
    sc.tl.umap(joint, min_dist=umap.min_dist, random_state=seed)
    xy = joint.obsm["X_umap"]
    real_xy, syn_xy = xy[: len(rows)], xy[len(rows) :]

    colours = _palette(categories)
    real_labels = labels[rows]
    syn_labels = synthetic.obs[label_key].astype(str).to_numpy()
    fig = Figure(figsize=_figsize(report, "umap"), layout="constrained")
    ax = fig.add_subplot()
    for c in categories:
        mask = real_labels == c
        ax.scatter(
            *real_xy[mask].T, s=6, color=colours[c], alpha=0.5, linewidths=0, label=c
        )
    for c in categories:
        mask = syn_labels == c
        if mask.any():
            ax.scatter(
                *syn_xy[mask].T,
                s=260,
                marker="*",
                color=colours[c],
                edgecolors="black",
                linewidths=1.0,
                zorder=3,
            )
    ax.scatter(
        [], [], s=60, marker="*", color="white", edgecolors="black", label="synthetic"
    )
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(
        f"{synthetic.n_obs} synthetic cells (stars) over {real.n_obs} real cells"
    )
    ax.legend(
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        frameon=False,
        markerscale=2,
        fontsize="small",
        title=label_key,
    )
    return fig


def correlation_figure(
    real: ad.AnnData,
    synthetic: ad.AnnData,
    label_key: str,
    *,
    report: ReportParams,
    seed: int = 0,
) -> Figure:
    """Pearson correlation of each synthetic cell with each real class mean.

    Rows are synthetic cells grouped by class, columns the real classes'
    mean log-expression profiles over the shared genes. A good synthetic set
    has a dominant block diagonal: each cell looks most like its own class.

    Args:
        real: real log-normalised cells (genes in ``X``, in memory or lazy),
            labels in obs.
        synthetic: synthetic cells (genes in ``X``, any gene order) or a
            feature-only set (``n_vars == 0``).
        label_key: obs column holding the class.
        report: ``params:report``: ``correlation.max_cells``, the real cells
            the class means are taken over (a seeded, stratified sample;
            ``None``: all); ``figsize.correlation`` in inches.
        seed: seed of that sample.

    Returns:
        A heatmap and its colour bar (two axes), or a one-panel text figure
        when there is no gene matrix to compare.
    """
    title = "Synthetic cells vs real class means (Pearson r)"
    figsize = _figsize(report, "correlation")
    fallback = _no_genes(real, synthetic, title=title, figsize=figsize)
    if fallback is not None:
        return fallback
    categories = _categories(real, label_key)
    genes = _shared_genes(real, synthetic)
    sample = _real_sample(
        real,
        label_key,
        _shared_positions(real, synthetic),
        max_cells=report.correlation.max_cells,
        seed=seed,
    )
    real_means = _class_means(sample, genes, label_key, categories)
    syn_labels = synthetic.obs[label_key].astype(str).to_numpy()
    order = np.argsort(
        pd.Index(categories).get_indexer(syn_labels), kind="stable"
    )  # unknown classes (-1) first, then class order
    syn_x = _dense(synthetic[:, genes].X)[order]
    syn_labels = syn_labels[order]

    r = np.corrcoef(np.vstack([syn_x, real_means]))[: len(syn_x), len(syn_x) :]
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(
        r, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest"
    )
    fig.colorbar(image, ax=ax, label="Pearson r", shrink=0.8)
    ax.set_xticks(range(len(categories)), categories, rotation=90)
    ax.set_xlabel(f"real class mean ({len(genes)} genes)")
    # One y tick per class block, so large sets stay readable.
    blocks = pd.Series(np.arange(len(syn_labels))).groupby(syn_labels, sort=False)
    centres = [(g.iloc[0] + g.iloc[-1]) / 2 for _, g in blocks]
    ax.set_yticks(centres, [name for name, _ in blocks])
    for _, g in list(blocks)[1:]:
        ax.axhline(g.iloc[0] - 0.5, color="black", linewidth=0.5)
    ax.set_ylabel(f"synthetic cells ({_method(synthetic)})")
    ax.set_title(title)
    return fig


def hvg_figure(
    real: ad.AnnData,
    synthetic: ad.AnnData,
    label_key: str,
    *,
    report: ReportParams,
    seed: int = 0,
) -> Figure:
    """Mean expression of the real data's top HVGs per class, real vs synthetic.

    The genes are the ``report.hvg.n_genes`` most highly variable genes of the real
    cells (scanpy ``highly_variable_genes``, flavor ``seurat``, on the log
    data) that the synthetic set also has. Both heatmaps share one colour
    scale, so a synthetic class that reproduces its marker genes shows the
    same pattern as the real one.

    Args:
        real: real log-normalised cells (genes in ``X``, in memory or lazy),
            labels in obs.
        synthetic: synthetic cells (genes in ``X``) or a feature-only set.
        label_key: obs column holding the class.
        report: ``params:report``: ``hvg.n_genes``, the number of highly
            variable genes shown; ``hvg.max_cells``, the real cells the genes
            are ranked on and the real class means taken over (a seeded,
            stratified sample, read once; ``None``: all); ``figsize.hvg`` in
            inches.
        seed: seed of that sample.

    Returns:
        Two heatmaps (real, synthetic) and a colour bar (three axes), or a
        one-panel text figure when there is no gene matrix to compare.
    """
    n_genes = report.hvg.n_genes
    figsize = _figsize(report, "hvg")
    title = f"Top {n_genes} highly variable genes: mean expression per class"
    fallback = _no_genes(real, synthetic, title=title, figsize=figsize)
    if fallback is not None:
        return fallback
    categories = _categories(real, label_key)
    shared = _real_sample(
        real,
        label_key,
        _shared_positions(real, synthetic),
        max_cells=report.hvg.max_cells,
        seed=seed,
    )
    hvg = ad.AnnData(X=shared.X.copy(), var=pd.DataFrame(index=shared.var_names))
    sc.pp.highly_variable_genes(
        hvg, flavor="seurat", n_top_genes=min(n_genes, hvg.n_vars)
    )
    dispersion = hvg.var["dispersions_norm"].where(hvg.var["highly_variable"])
    genes = pd.Index(dispersion.dropna().sort_values(ascending=False).index)
    genes = genes[:n_genes]
    real_means = _class_means(shared, genes, label_key, categories)
    syn_means = _class_means(synthetic, genes, label_key, categories)
    vmax = float(np.nanmax(np.concatenate([real_means.ravel(), syn_means.ravel()])))
    real_cells = (
        f"{real.n_obs} cells"
        if shared.n_obs == real.n_obs
        else f"{shared.n_obs} of {real.n_obs} cells"
    )

    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, means, name in (
        (axes[0], real_means, f"real ({real_cells})"),
        (
            axes[1],
            syn_means,
            f"synthetic ({synthetic.n_obs} cells, {_method(synthetic)})",
        ),
    ):
        image = ax.imshow(
            np.ma.masked_invalid(means),
            aspect="auto",
            cmap="viridis",
            vmin=0,
            vmax=max(vmax, 1e-6),
            interpolation="nearest",
        )
        ax.set_xticks(range(len(genes)), genes, rotation=90, fontsize="small")
        ax.set_title(name)
    axes[0].set_yticks(range(len(categories)), categories)
    axes[0].set_ylabel(label_key)
    fig.colorbar(image, ax=list(axes), label="mean log expression", shrink=0.8)
    fig.suptitle(title)
    return fig


def loss_figure(history: pd.DataFrame, *, report: ReportParams) -> Figure:
    """Distillation loss (total, DM, DC) against the optimisation step.

    Args:
        history: ``distill_history``: a ``step`` column and any of ``loss``,
            ``dm``, ``dc``. Terms that are zero throughout (e.g. DC when
            ``lambda_dc`` is 0) are left out. The y axis is logarithmic when
            every plotted value is positive.
        report: ``params:report``: ``figsize.loss`` in inches.

    Returns:
        A one-axes line plot, or a text figure when the method has no
        optimisation history (e.g. ``random_real``).
    """
    title = "Distillation loss"
    figsize = _figsize(report, "loss")
    terms = [
        t
        for t in _LOSS_TERMS
        if t in history.columns
        and history[t].notna().any()
        and (history[t].fillna(0) != 0).any()
    ]
    if history.empty or not terms:
        return _text_figure(
            "No optimisation history: this method does not optimise a loss.",
            title=title,
            figsize=figsize,
        )
    step = history["step"] if "step" in history.columns else history.index
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    for t in terms:
        ax.plot(step, history[t], label=t, marker="." if len(history) < 30 else None)
    if all((history[t].dropna() > 0).all() for t in terms):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(frameon=False)
    return fig
