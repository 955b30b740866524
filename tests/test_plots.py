"""Report figures of :mod:`scdd.plots` on tiny AnnData objects."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from scdd.plots import correlation_figure, hvg_figure, loss_figure, umap_figure
from scdd.report_config import ReportParams
from tests.conftest import make_counts_adata

KEY = "cell_type"
REPORT = ReportParams()


def _lognorm(adata: ad.AnnData) -> ad.AnnData:
    x = adata.X.toarray()
    adata.X = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1) * 1e4)
    return adata


@pytest.fixture
def real() -> ad.AnnData:
    return _lognorm(make_counts_adata(n_per_class=(20, 15, 10), n_genes=40))


@pytest.fixture
def synthetic(real: ad.AnnData) -> ad.AnnData:
    """Two cells per class, genes in reversed order (as F's order may differ)."""
    picks = np.concatenate(
        [np.flatnonzero(real.obs[KEY] == c)[:2] for c in real.obs[KEY].cat.categories]
    )
    syn = real[picks, ::-1].copy()
    syn.obs["scdd_method"] = "scdd"
    return syn


@pytest.fixture
def feature_only(synthetic: ad.AnnData) -> ad.AnnData:
    syn = ad.AnnData(obs=synthetic.obs.copy())
    syn.obs["scdd_method"] = "featdistill"
    return syn


def _embeddings(adata: ad.AnnData, seed: int = 0) -> ad.AnnData:
    """Class-separated 8-d features with the cells' obs."""
    rng = np.random.default_rng(seed)
    codes = adata.obs[KEY].cat.codes.to_numpy()
    x = rng.normal(size=(adata.n_obs, 8)) * 0.1 + np.eye(8)[codes] * 3
    return ad.AnnData(X=x.astype(np.float32), obs=adata.obs.copy())


def _texts(fig: Figure) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_umap_draws_real_dots_and_synthetic_stars(
    real: ad.AnnData, synthetic: ad.AnnData
) -> None:
    fig = umap_figure(
        _embeddings(real),
        _embeddings(synthetic, 1),
        KEY,
        report=ReportParams(umap={"n_neighbors": 5}),
    )
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    sizes = [c.get_offsets().shape[0] for c in ax.collections]
    # 3 real classes, 3 star groups, 1 empty legend handle
    assert sizes == [20, 15, 10, 2, 2, 2, 0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["type_0", "type_1", "type_2", "synthetic"]


def test_umap_draws_a_capped_stratified_sample_of_real_cells(
    real: ad.AnnData, synthetic: ad.AnnData
) -> None:
    fig = umap_figure(
        _embeddings(real),
        _embeddings(synthetic, 1),
        KEY,
        report=ReportParams(umap={"n_neighbors": 5, "max_cells": 9}),
    )
    sizes = [c.get_offsets().shape[0] for c in fig.axes[0].collections]
    assert sizes == [4, 3, 2, 2, 2, 2, 0]  # 20:15:10 of 45 real cells, scaled to 9


def test_umap_rejects_mismatched_widths(real: ad.AnnData) -> None:
    syn = _embeddings(real)[:, :4]
    with pytest.raises(ValueError, match="width"):
        umap_figure(_embeddings(real), syn, KEY, report=REPORT)


def test_correlation_diagonal_dominates(
    real: ad.AnnData, synthetic: ad.AnnData
) -> None:
    fig = correlation_figure(real, synthetic, KEY, report=REPORT)
    heatmap, colorbar = fig.axes
    r = heatmap.images[0].get_array()
    assert r.shape == (6, 3)
    assert (r.argmax(axis=1) == [0, 0, 1, 1, 2, 2]).all()
    assert [t.get_text() for t in heatmap.get_yticklabels()] == [
        "type_0",
        "type_1",
        "type_2",
    ]
    assert colorbar.get_ylabel() == "Pearson r"


def test_hvg_real_and_synthetic_side_by_side(
    real: ad.AnnData, synthetic: ad.AnnData
) -> None:
    fig = hvg_figure(real, synthetic, KEY, report=ReportParams(hvg={"n_genes": 8}))
    assert len(fig.axes) == 3  # real, synthetic, colour bar
    real_ax, syn_ax, _ = fig.axes
    assert real_ax.images[0].get_array().shape == (3, 8)
    assert syn_ax.images[0].get_array().shape == (3, 8)
    genes = [t.get_text() for t in real_ax.get_xticklabels()]
    assert len(set(genes)) == 8
    assert set(genes) <= set(real.var_names)
    assert [t.get_text() for t in syn_ax.get_xticklabels()] == genes
    sampled = hvg_figure(
        real, synthetic, KEY, report=ReportParams(hvg={"n_genes": 8, "max_cells": 12})
    )
    assert sampled.axes[0].images[0].get_array().shape == (3, 8)


@pytest.mark.parametrize("plot", [correlation_figure, hvg_figure])
def test_feature_only_set_gets_a_text_panel(
    plot, real: ad.AnnData, feature_only: ad.AnnData
) -> None:
    fig = plot(real, feature_only, KEY, report=REPORT)
    assert len(fig.axes) == 1
    assert not fig.axes[0].images
    assert (
        "no gene matrix for feature-level method 'featdistill'" in _texts(fig).lower()
    )


def test_loss_curve_skips_zero_terms_and_uses_log_scale() -> None:
    history = pd.DataFrame(
        {
            "step": [0, 10, 20],
            "loss": [2.0, 1.0, 0.5],
            "dm": [2.0, 1.0, 0.5],
            "dc": [0.0, 0.0, 0.0],
            "part": [0.0, 0.0, 0.0],
            "proto": [1.0, 0.8, 0.6],
        }
    )
    fig = loss_figure(history, report=REPORT)
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == ["loss", "dm", "proto"]
    assert ax.get_yscale() == "log"


def test_loss_curve_linear_for_non_positive_values() -> None:
    history = pd.DataFrame({"step": [0, 1], "loss": [1.0, -0.5]})
    assert loss_figure(history, report=REPORT).axes[0].get_yscale() == "linear"


def test_empty_history_gets_a_text_panel() -> None:
    fig = loss_figure(pd.DataFrame(), report=REPORT)
    assert "no optimisation history" in _texts(fig).lower()


def test_missing_label_column_is_explained(
    real: ad.AnnData, synthetic: ad.AnnData
) -> None:
    with pytest.raises(ValueError, match="data.label_key"):
        correlation_figure(real, synthetic, "nope", report=REPORT)
