"""Nodes of the ``report`` pipeline: thin wrappers over :mod:`scdd.plots`.

Each node returns a matplotlib Figure; the catalog's ``MatplotlibDataset``
writes it as a PNG at a stable path under ``data/08_reporting`` (and
closes it).
The gene-level figures read a capped stratified sample of the (lazy)
training split: ``report.correlation.max_cells``, ``report.hvg.max_cells``.
"""

from __future__ import annotations

import logging

import anndata as ad
import pandas as pd
from matplotlib.figure import Figure

from scdd.plots import correlation_figure, hvg_figure, loss_figure, umap_figure
from scdd.preprocessing_config import DataParams
from scdd.report_config import ReportParams
from scdd.run_context import current_run

logger = logging.getLogger(__name__)


def plot_umap(
    train_embeddings: ad.AnnData,
    synthetic_embeddings: ad.AnnData,
    data: DataParams,
    report: ReportParams,
) -> Figure:
    """UMAP of F(synthetic) (stars) over F(train), coloured by class (the
    run's ``seed`` is UMAP's random state).

    Args:
        train_embeddings: cached F(train), ``X`` = latents.
        synthetic_embeddings: F(synthetic) from the evaluate pipeline (or the
            stored features of a feature-only set).
        data: ``params:data`` (``label_key``).
        report: ``params:report`` (``umap``, ``figsize``).

    Returns:
        The UMAP figure.
    """
    logger.info(
        "UMAP of %d synthetic over %d real cells",
        synthetic_embeddings.n_obs,
        train_embeddings.n_obs,
    )
    return umap_figure(
        train_embeddings,
        synthetic_embeddings,
        data.label_key,
        report=report,
        seed=current_run().seed,
    )


def plot_correlation(
    train: ad.AnnData,
    synthetic: ad.AnnData,
    data: DataParams,
    report: ReportParams,
) -> Figure:
    """Correlation matrix of synthetic cells vs real class-mean profiles.

    Args:
        train: log-normalised training cells (lazy or in memory; a sample of
            at most ``report.correlation.max_cells`` is read).
        synthetic: the synthetic set (a text panel if it has no genes).
        data: ``params:data`` (``label_key``).
        report: ``params:report`` (``correlation.max_cells``, ``figsize``).

    Returns:
        The correlation heatmap.
    """
    return correlation_figure(train, synthetic, data.label_key, report=report)


def plot_hvg(
    train: ad.AnnData,
    synthetic: ad.AnnData,
    data: DataParams,
    report: ReportParams,
) -> Figure:
    """Per-class mean expression of the top real HVGs, real vs synthetic.

    Args:
        train: log-normalised training cells (lazy or in memory; a sample of
            at most ``report.hvg.max_cells`` is read).
        synthetic: the synthetic set (a text panel if it has no genes).
        data: ``params:data`` (``label_key``).
        report: ``params:report`` (``hvg.n_genes``, ``hvg.max_cells``,
            ``figsize``).

    Returns:
        The side-by-side heatmaps.
    """
    return hvg_figure(train, synthetic, data.label_key, report=report)


def plot_loss(history: pd.DataFrame, report: ReportParams) -> Figure:
    """Distillation loss curve from ``distill_history``.

    Args:
        history: steps and loss terms logged by the latent-code optimiser.
        report: ``params:report`` (``figsize``).

    Returns:
        The loss figure (a text panel for methods without optimisation).
    """
    return loss_figure(history, report=report)
