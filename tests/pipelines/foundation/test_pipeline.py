import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from pydantic import ValidationError

from scdd.datasets import FoundationModelDataset, H5ADDataset
from scdd.models.foundation import save_model_dir
from scdd.models.foundation_training import FoundationParams
from scdd.pipelines.foundation import create_pipeline
from scdd.pipelines.foundation.nodes import (
    build_foundation_model,
    report_foundation,
    sample_probe_cells,
)
from scdd.preprocessing import log_normalise, stratified_split
from scdd.preprocessing_config import DataParams
from tests.conftest import make_counts_adata, shared_dataset
from tests.evaluation.lazy_helpers import no_whole_matrix, spied
from tests.kedro_helpers import run_session

DATA = DataParams(input="scanpy://pbmc68k_reduced", label_key="cell_type")
SETTINGS = {
    "source": "local",
    "pretrained_path": None,
    "min_gene_overlap": 10,
    "model": {
        "latent_dim": 16,
        "hidden_dim": [64],
        "dropout": 0.1,
        "input_dropout": 0.1,
    },
    "train": {"epochs": 15, "batch_size": 32, "lr": 0.003},
    "embed": {"chunk_size": 16},
}
PARAMS = FoundationParams.model_validate(SETTINGS)

# the nodes read seed, device and progress from the run context
pytestmark = pytest.mark.usefixtures("cpu_run")


def _pretrained(path: Path) -> FoundationParams:
    return FoundationParams.model_validate(
        {**SETTINGS, "source": "pretrained", "pretrained_path": str(path)}
    )


@pytest.fixture(scope="module")
def splits():
    adata = log_normalise(
        make_counts_adata((60, 50, 40)), target_sum=1e4, keep_counts=False
    )
    return stratified_split(adata, label_key="cell_type", test_size=0.3, seed=0)


def _catalog(train, test, tmp_path: Path, params=PARAMS) -> DataCatalog:
    catalog = DataCatalog(
        {
            "train_adata": MemoryDataset(train, copy_mode="assign"),
            "test_adata": MemoryDataset(test, copy_mode="assign"),
            # the validation split is embedded the same way; the test cells do
            "validation_adata": MemoryDataset(test, copy_mode="assign"),
            "foundation_model": FoundationModelDataset(path=str(tmp_path / "fm")),
            "train_embeddings": H5ADDataset(filepath=str(tmp_path / "train_z.h5ad")),
            "validation_embeddings": H5ADDataset(filepath=str(tmp_path / "val_z.h5ad")),
            "test_embeddings": H5ADDataset(filepath=str(tmp_path / "test_z.h5ad")),
            "foundation_report": JSONDataset(filepath=str(tmp_path / "report.json")),
        }
    )
    catalog["params:data"] = DATA
    catalog["params:foundation"] = params
    return catalog


def test_pipeline_trains_embeds_and_reports(splits, tmp_path: Path) -> None:
    train, test = splits
    catalog = _catalog(train, test, tmp_path)
    SequentialRunner().run(create_pipeline(), catalog)
    emb = catalog.load("train_embeddings")
    assert emb.shape == (train.n_obs, 16)
    assert list(emb.obs["cell_type"]) == list(train.obs["cell_type"])
    np.testing.assert_array_equal(
        catalog.load("validation_embeddings").X, catalog.load("test_embeddings").X
    )
    np.testing.assert_allclose(np.linalg.norm(emb.X, axis=1), 1, atol=1e-5)
    report = catalog.load("foundation_report")
    json.dumps(report)
    # marker genes make the toy classes separable: the latent must keep that
    assert report["linear_probe_latent"]["accuracy"] > 0.9
    assert (tmp_path / "fm" / "gene_order.tsv").is_file()
    # the model carries foundation.min_gene_overlap, stored with it
    assert catalog.load("foundation_model").min_gene_overlap == 10
    assert report["probe_max_cells"] == 20_000
    assert report["probe_train_cells"] == train.n_obs
    assert report["probe_test_cells"] == test.n_obs
    # 15 passes (or fewer, early stopped) over the cells not held out
    n_fit = train.n_obs - round(0.1 * train.n_obs)
    assert report["cells_seen"] == report["epochs"] * n_fit
    assert report["rounds"] == report["epochs"] <= 15


def test_pipeline_streams_lazy_splits(splits, tmp_path: Path, monkeypatch) -> None:
    """Lazy splits of 7-row blocks: trained, embedded and probed block by block;
    the gene probe reads a capped stratified sample of the cells."""
    train, test = splits
    (lazy_train, train_reads), (lazy_test, test_reads) = spied(train), spied(test)
    params = FoundationParams.model_validate({**SETTINGS, "probe_max_cells": 30})
    catalog = _catalog(lazy_train, lazy_test, tmp_path, params)
    with no_whole_matrix(monkeypatch):
        SequentialRunner().run(create_pipeline(), catalog)
    assert train_reads.max_rows == test_reads.max_rows == 7
    report = catalog.load("foundation_report")
    assert report["probe_max_cells"] == 30
    assert 30 <= report["probe_train_cells"] <= 33  # >= 1 cell of each class
    assert 30 <= report["probe_test_cells"] <= 33
    assert report["linear_probe_latent"]["accuracy"] > 0.9
    emb = catalog.load("train_embeddings")
    assert emb.shape == (train.n_obs, 16)
    np.testing.assert_allclose(np.linalg.norm(emb.X, axis=1), 1, atol=1e-5)


def test_pretrained_source_loads_directory(splits, tmp_path: Path) -> None:
    train, _ = splits
    local, _ = build_foundation_model(train, DATA, PARAMS)
    assert local.min_gene_overlap == 10  # foundation.min_gene_overlap
    local.min_gene_overlap = 3
    save_model_dir(local, tmp_path)
    lazy, reads = spied(train)
    model, history = build_foundation_model(lazy, DATA, _pretrained(tmp_path))
    assert model.gene_order == list(train.var_names) and history.empty
    assert model.min_gene_overlap == 10  # the parameter, not the stored floor
    assert list(history.columns) == ["round", "cells_seen", "train_loss", "val_loss"]
    assert not reads.counts  # the gene check reads names only


def test_pretrained_with_other_genes_fails_before_writing(
    splits, tmp_path: Path
) -> None:
    train, test = splits
    local, _ = build_foundation_model(train, DATA, PARAMS)
    local.gene_order = [f"ENSG{i:011d}" for i in range(len(local.gene_order))]
    (tmp_path / "pretrained").mkdir()
    save_model_dir(local, tmp_path / "pretrained")
    catalog = _catalog(train, test, tmp_path, _pretrained(tmp_path / "pretrained"))
    with pytest.raises(ValueError, match="Only 0 of the data's 60 genes"):
        SequentialRunner().run(create_pipeline(), catalog)
    assert not (tmp_path / "fm").exists()


def test_unknown_source_or_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="'local' or 'pretrained'"):
        FoundationParams.model_validate({**SETTINGS, "source": "hub"})
    with pytest.raises(ValidationError, match="not a directory"):
        _pretrained(tmp_path / "absent")
    with pytest.raises(ValidationError, match=r"missing \['encoder.ckpt'"):
        _pretrained(tmp_path)


@pytest.mark.shared_data
def test_foundation_carries_the_biology_on_human_kidney(project_copy: Path) -> None:
    """A linear probe on F keeps >= 85% of the accuracy it has on the genes."""
    path = shared_dataset("human_kidney.h5ad")
    params = {
        "data": {"input": str(path), "label_key": "cell_type"},
        "progress": False,
        "foundation": {"train": {"epochs": 8}},
    }
    run_session(project_copy, "preprocess", params)
    run_session(project_copy, "foundation", params)
    report = json.loads(
        (project_copy / "data/08_reporting/foundation_report.json").read_text()
    )
    assert report["epochs"] == 8
    assert report["latent_to_gene_ratio"] >= 0.85, report


def test_report_refuses_embeddings_of_other_cells(splits, tmp_path: Path) -> None:
    """The report reads the sampled rows of the embeddings: they must be the
    sampled cells (the probes' sample comes from the splits, node before)."""
    train, test = splits
    catalog = _catalog(train, test, tmp_path)
    SequentialRunner().run(create_pipeline(), catalog)
    cells = sample_probe_cells(train, test, DATA, PARAMS)
    assert cells.train_cells == train.n_obs and cells.train.n_obs == train.n_obs
    reversed_cells = catalog.load("train_embeddings")[::-1].copy()
    with pytest.raises(ValueError, match="train_embeddings do not match"):
        report_foundation(
            reversed_cells,
            catalog.load("test_embeddings"),
            cells,
            pd.DataFrame({"cells_seen": [1], "val_loss": [1.0]}),
            DATA,
            PARAMS,
        )
