"""The ``report`` pipeline on tiny in-memory data, PNGs written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.matplotlib import MatplotlibDataset
from pydantic import ValidationError

from scdd.cellstore import as_lazy
from scdd.pipelines.report import create_pipeline
from scdd.plots import correlation_figure, hvg_figure
from scdd.preprocessing_config import DataParams
from scdd.report_config import ReportParams
from scdd.sampling import stratified_rows
from tests.conftest import make_counts_adata
from tests.evaluation.lazy_helpers import no_whole_matrix, spied

KEY = "cell_type"
PLOTS = ("umap_plot", "correlation_plot", "hvg_plot", "loss_plot")
SETTINGS = {
    "umap": {"n_neighbors": 5, "min_dist": 0.5},
    "hvg": {"n_genes": 6},
    "figsize": {"umap": [4, 3], "correlation": [4, 3], "hvg": [6, 3], "loss": [4, 3]},
}
REPORT = ReportParams.model_validate(SETTINGS)

# plot_umap reads the run's seed from the run context
pytestmark = pytest.mark.usefixtures("cpu_run")


def _inputs() -> dict[str, object]:
    train = make_counts_adata(n_per_class=(20, 15, 10), n_genes=30)
    train.X = np.log1p(train.X.toarray()).astype(np.float32)
    picks = [0, 20, 35]
    synthetic = train[picks].copy()
    synthetic.obs["scdd_method"] = "scdd"
    codes = train.obs[KEY].cat.codes.to_numpy()
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(train.n_obs, 8)) * 0.1 + np.eye(8)[codes]).astype(np.float32)
    return {
        "train_adata": train,
        "synthetic_adata": synthetic,
        "train_embeddings": ad.AnnData(X=z, obs=train.obs.copy()),
        "synthetic_embeddings": ad.AnnData(X=z[picks], obs=synthetic.obs.copy()),
        "distill_history": pd.DataFrame(
            {"step": [0, 10], "loss": [2.0, 1.0], "dm": [2.0, 1.0], "dc": [0.0, 0.0]}
        ),
        "params:data": DataParams(input="scanpy://pbmc68k_reduced", label_key=KEY),
        "params:report": REPORT,
    }


def _catalog(tmp_path: Path, inputs: dict[str, object]) -> DataCatalog:
    catalog = DataCatalog(
        {
            name: MatplotlibDataset(
                filepath=str(tmp_path / f"{name}.png"),
                save_args={"dpi": 60, "bbox_inches": "tight"},
            )
            for name in PLOTS
        }
    )
    for name, value in inputs.items():
        catalog[name] = MemoryDataset(value)
    return catalog


def test_report_pipeline_writes_pngs(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path, _inputs())
    SequentialRunner().run(create_pipeline(), catalog)
    for name in PLOTS:
        png = tmp_path / f"{name}.png"
        assert png.is_file(), name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 1000, name


def test_sliced_run_handles_feature_only_set(tmp_path: Path) -> None:
    inputs = _inputs()
    inputs["synthetic_adata"] = ad.AnnData(obs=inputs["synthetic_adata"].obs.copy())
    catalog = _catalog(tmp_path, inputs)
    pipe = create_pipeline().only_nodes("report.plot_correlation", "report.plot_hvg")
    SequentialRunner().run(pipe, catalog)
    assert (tmp_path / "correlation_plot.png").stat().st_size > 0
    assert (tmp_path / "hvg_plot.png").stat().st_size > 0
    assert not (tmp_path / "umap_plot.png").exists()


def test_figure_sizes_are_two_positive_numbers() -> None:
    figsize = {**SETTINGS["figsize"], "loss": [4]}
    with pytest.raises(ValidationError, match="figsize.loss"):
        ReportParams.model_validate({**SETTINGS, "figsize": figsize})
    figsize = {**SETTINGS["figsize"], "hvg": [0, 3]}
    with pytest.raises(ValidationError, match="figsize.hvg.0"):
        ReportParams.model_validate({**SETTINGS, "figsize": figsize})


def _images(fig) -> list[np.ndarray]:
    return [np.ma.filled(im.get_array(), np.nan) for ax in fig.axes for im in ax.images]


def _ticks(fig) -> list[list[str]]:
    return [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes]


def test_lazy_training_split_draws_the_same_figures(monkeypatch) -> None:
    """A training split read by row blocks of 7 cells: the same heatmaps, only
    the capped stratified sample read, never the whole matrix."""
    inputs = _inputs()
    train, synthetic = inputs["train_adata"], inputs["synthetic_adata"]
    lazy, reads = spied(train)
    n_blocks = len(lazy.X.chunks[0])
    for plot, group in ((correlation_figure, "correlation"), (hvg_figure, "hvg")):
        for max_cells in (None, 12):
            report = ReportParams.model_validate(
                {**SETTINGS, group: {**SETTINGS.get(group, {}), "max_cells": max_cells}}
            )
            reads.clear()
            with no_whole_matrix(monkeypatch):
                got = plot(lazy, synthetic, KEY, report=report)
            expected = plot(train, synthetic, KEY, report=report)
            assert _ticks(got) == _ticks(expected)
            for a, b in zip(_images(got), _images(expected), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
            assert set(reads.counts.values()) == {1}  # one read of the sample
            if max_cells is None:
                assert len(reads.counts) == n_blocks
            else:  # 12 cells of 45: some blocks are not read at all
                rows = stratified_rows(train.obs[KEY].to_numpy(), max_cells, 0)
                assert set(reads.counts) == set(np.unique(rows // 7))
                assert len(reads.counts) < n_blocks


def test_report_pipeline_with_a_lazy_split(tmp_path: Path) -> None:
    inputs = _inputs()
    inputs["train_adata"] = as_lazy(inputs["train_adata"], chunk_rows=7)
    report = REPORT.model_copy(
        update={
            "correlation": REPORT.correlation.model_copy(update={"max_cells": 20}),
            "hvg": REPORT.hvg.model_copy(update={"max_cells": 20}),
        }
    )
    inputs["params:report"] = report
    SequentialRunner().run(create_pipeline(), _catalog(tmp_path, inputs))
    for name in PLOTS:
        assert (tmp_path / f"{name}.png").stat().st_size > 1000, name
