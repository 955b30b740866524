import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from scipy import sparse

from scdd.cellstore import as_lazy, take_rows
from scdd.datasets import H5ADDataset
from scdd.lineage import source_fingerprint
from scdd.pipelines.preprocess import create_pipeline
from scdd.pipelines.preprocess.nodes import preprocess_adata, split_adata
from scdd.preprocessing_config import DataParams, PreprocessParams
from scdd.provenance import plain
from scdd.run_context import using_run
from tests.conftest import CPU_RUN, make_counts_adata, shared_dataset
from tests.kedro_helpers import run_session

PARAMS = PreprocessParams(
    **{
        "min_counts": 10,
        "min_cells": 3,
        "target_sum": 10000,
        "max_log_value": 20,
        "duplicate_genes": "make_unique",
        "min_cells_per_class": 5,
        "small_classes": "drop",
        "test_size": 0.3,
        "validation_size": 0.15,
    }
)
DATA = DataParams(input="scanpy://pbmc68k_reduced", label_key="cell_type")

# split_adata reads the run's seed from the run context
pytestmark = pytest.mark.usefixtures("cpu_run")


def test_preprocess_node_counts(counts_adata) -> None:
    out, summary = preprocess_adata(counts_adata, DATA, PARAMS)
    assert summary["input_kind"] == "counts"
    assert "counts" not in out.layers  # preprocess.keep_counts is off
    np.testing.assert_allclose(
        np.expm1(out.X.compute().toarray()).sum(1), 1e4, rtol=1e-4
    )
    record = out.uns["scdd"]["preprocess"]
    assert record["params"]["label_key"] == "cell_type"
    assert record["params"]["layer"] is None and record["input_uns_source"] is None
    assert out.uns["log1p"] == {"base": None}


def test_preprocess_node_lognorm_is_not_normalised_twice(lognorm_adata) -> None:
    out, summary = preprocess_adata(lognorm_adata, DATA, PARAMS)
    assert summary["input_kind"] == "log_normalised"
    assert "counts" not in out.layers
    np.testing.assert_allclose(out.X.compute().toarray(), lognorm_adata.X.toarray())


def test_duplicate_cell_names_warn_once(counts_adata, caplog) -> None:
    """Made unique at the start with our one warning; anndata's own
    "Observation names are not unique" never shows in the node or the split."""
    counts_adata.obs_names = ["c"] * 4 + list(counts_adata.obs_names[4:])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with caplog.at_level(logging.WARNING):
            out, summary = preprocess_adata(counts_adata, DATA, PARAMS)
            splits = split_adata(out, summary, DATA, PARAMS)[:3]
    assert not [w for w in caught if "not unique" in str(w.message)]
    ours = [r for r in caplog.records if "duplicate cell names" in r.getMessage()]
    assert [r.getMessage() for r in ours] == [
        "Made 3 duplicate cell names (obs_names) unique (suffix -1, -2 ...)"
    ]
    names = [n for split in splits for n in split.obs_names]
    assert len(set(names)) == len(names) == counts_adata.n_obs


def test_one_class_left_after_quality_filter(counts_adata) -> None:
    x = counts_adata.X.toarray()
    x[40:] = np.minimum(x[40:], 0.0)
    x[40:, 0] = 1.0  # types 1 and 2: one count per cell, under min_counts=10
    counts_adata.X = sparse.csr_matrix(x)
    with pytest.raises(
        ValueError,
        match=r"After quality filtering \(min_counts=10\), label column "
        r"'cell_type' has 1 class\(es\) \(type_0: 40 cells\).*"
        r"--params preprocess.min_counts=N",
    ):
        preprocess_adata(counts_adata, DATA, PARAMS)


def test_split_node_report(counts_adata) -> None:
    adata, summary = preprocess_adata(counts_adata, DATA, PARAMS)
    train, validation, test, report = split_adata(adata, summary, DATA, PARAMS)
    assert report["train_cells"] == train.n_obs and report["test_cells"] == test.n_obs
    assert report["validation_cells"] == validation.n_obs > 0
    assert report["cells_in"] == counts_adata.n_obs
    names = [*train.obs_names, *validation.obs_names, *test.obs_names]
    assert len(set(names)) == len(names) == adata.n_obs  # disjoint, complete
    json.dumps(report)
    # seeded by the run's seed, which the report records
    assert report["seed"] == 0
    with using_run(CPU_RUN.model_copy(update={"seed": 1})):
        *_, other, again = split_adata(adata, summary, DATA, PARAMS)
    assert again["seed"] == 1
    assert list(other.obs_names) != list(test.obs_names)


def test_validation_is_stratified_and_spares_small_classes() -> None:
    """15% of each class's training cells, seeded; a class with fewer than 3
    training cells gives none, the others keep at least 2."""
    import anndata as ad

    from scdd.preprocessing import carve_validation

    labels = ["a"] * 100 + ["b"] * 20 + ["c"] * 2 + ["d"] * 3
    adata = ad.AnnData(
        np.zeros((len(labels), 2), dtype=np.float32),
        obs=pd.DataFrame(
            {"cell_type": labels}, index=[f"c{i}" for i in range(len(labels))]
        ),
    )
    train, val = carve_validation(adata, label_key="cell_type", fraction=0.15, seed=3)
    counts = val.obs["cell_type"].value_counts()
    assert counts["a"] == 15 and counts["b"] == 3 and counts.get("c", 0) == 0
    assert counts.get("d", 0) == 0  # round(0.45)
    assert train.obs["cell_type"].value_counts().min() >= 2
    again = carve_validation(adata, label_key="cell_type", fraction=0.15, seed=3)[1]
    assert list(again.obs_names) == list(val.obs_names)
    other = carve_validation(adata, label_key="cell_type", fraction=0.15, seed=4)[1]
    assert list(other.obs_names) != list(val.obs_names)


def _catalog(tmp_path: Path, raw) -> DataCatalog:
    catalog = DataCatalog(
        {
            "raw_adata": MemoryDataset(raw),
            "train_adata": H5ADDataset(filepath=str(tmp_path / "train.h5ad")),
            "validation_adata": H5ADDataset(filepath=str(tmp_path / "validation.h5ad")),
            "test_adata": H5ADDataset(filepath=str(tmp_path / "test.h5ad")),
        }
    )
    catalog["params:data"] = DATA
    catalog["params:preprocess"] = PARAMS
    return catalog


def test_pipeline_runs_over_catalog(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path, make_counts_adata())
    SequentialRunner().run(create_pipeline(), catalog)
    train = H5ADDataset(filepath=str(tmp_path / "train.h5ad")).load()
    test = H5ADDataset(filepath=str(tmp_path / "test.h5ad")).load()
    val = H5ADDataset(filepath=str(tmp_path / "validation.h5ad")).load()
    assert train.n_obs + val.n_obs + test.n_obs == 90 and val.n_obs > 0
    assert set(train.obs["cell_type"]) == set(test.obs["cell_type"])


def test_written_splits_follow_scverse_conventions(tmp_path: Path) -> None:
    """scanpy's log1p marker, the input's var columns, provenance as plain
    values (json-able once read back)."""
    raw = make_counts_adata()
    raw.var["gene_ids"] = [f"ENSG{i:05d}" for i in range(raw.n_vars)]
    raw.var["highly_variable"] = np.arange(raw.n_vars) < 10
    raw.uns["source"] = {"url": "https://example.org/cells.h5ad", "version": 2}
    SequentialRunner().run(create_pipeline(), _catalog(tmp_path, raw))
    train = H5ADDataset(filepath=str(tmp_path / "train.h5ad")).load()
    assert train.uns["log1p"] == {"base": None}
    kept = raw.var.loc[train.var_names]
    pd.testing.assert_frame_equal(train.var[["gene_ids", "highly_variable"]], kept)
    record = plain(train.uns["scdd"]["preprocess"])
    assert record["params"]["label_key"] == "cell_type"
    assert record["input_uns_source"] == raw.uns["source"]
    assert record["input_digest"] == source_fingerprint(DATA.input)
    assert json.loads(json.dumps(record)) == record


def _rename_label(raw):
    raw.obs = raw.obs.rename(columns={"cell_type": "celltype"})


def _nan_labels(raw):
    raw.obs["cell_type"] = np.nan


def _nameless_gene(raw):
    raw.var_names = ["", *raw.var_names[1:]]


def _negative_counts(raw):
    raw.X = raw.X.multiply(-1).tocsr()


def _all_zero(raw):
    raw.X = sparse.csr_matrix(raw.shape, dtype=np.float32)


@pytest.mark.parametrize(
    ("spoil", "match"),
    [
        (_rename_label, "Available columns"),
        (_nan_labels, "no labels at all"),
        (_nameless_gene, "1 genes have no name"),
        (_negative_counts, "counts cannot be negative"),
        (_all_zero, "all zeros"),
    ],
)
def test_bad_input_writes_nothing(tmp_path: Path, spoil, match) -> None:
    raw = make_counts_adata()
    spoil(raw)
    with pytest.raises(ValueError, match=match):
        SequentialRunner().run(create_pipeline(), _catalog(tmp_path, raw))
    assert list(tmp_path.iterdir()) == []


def test_kedro_run_default(project_copy: Path) -> None:
    """`kedro run --pipeline preprocess` on the embedded default dataset."""
    run_session(project_copy, "preprocess")
    report = json.loads(
        (project_copy / "data/08_reporting/preprocess_report.json").read_text()
    )
    assert report["input_kind"] == "log_normalised"
    cells = ("train_cells", "validation_cells", "test_cells")
    assert sum(report[k] for k in cells) == 700
    assert (project_copy / "data/05_model_input/train.h5ad").is_file()


@pytest.mark.shared_data
def test_kedro_run_shared_counts(project_copy: Path) -> None:
    path = shared_dataset("paul15.h5ad")
    run_session(
        project_copy,
        "preprocess",
        {"data": {"input": str(path), "label_key": "cell_type"}},
    )
    report = json.loads(
        (project_copy / "data/08_reporting/preprocess_report.json").read_text()
    )
    assert report["input_kind"] == "counts"
    assert report["input"] == str(path)
    train = H5ADDataset(
        filepath=str(project_copy / "data/05_model_input/train.h5ad")
    ).load()
    assert "counts" not in train.layers
    assert train.obs["cell_type"].nunique() == 19


def test_bundled_default_passes_celltypists_own_check() -> None:
    """pbmc68k_reduced's cells sum to ~2000, not 1e4: CellTypist refused them
    (and the synthetic cells normalised like them) until they were rescaled."""
    import celltypist

    from scdd.datasets.h5ad_dataset import load_bundled

    adata, summary = preprocess_adata(
        load_bundled("pbmc68k_reduced"),
        DataParams(input="scanpy://pbmc68k_reduced", label_key="bulk_labels"),
        PARAMS,
    )
    assert summary["input_kind"] == "log_normalised"
    sample = take_rows(adata, np.arange(200))
    totals = np.expm1(sample.X.toarray().astype(np.float64)).sum(1)
    np.testing.assert_allclose(totals, 1e4, rtol=1e-4)
    model = celltypist.train(  # check_expression=True by default
        sample, labels="bulk_labels", max_iter=2, use_SGD=True
    )
    assert len(model.cell_types) >= 2


def _awkward_counts():
    """Counts with what preprocessing must handle: unlabelled cells, a cell
    under min_counts, a rare gene, duplicate gene names, a too-small class."""
    raw = make_counts_adata((40, 30, 20, 3), seed=3)
    raw.obs["cell_type"] = raw.obs["cell_type"].astype(object)
    raw.obs.iloc[[5, 61], 0] = None
    x = raw.X.toarray()
    x[7] = 0
    x[7, 0] = 2
    x[:, 10] = 0
    x[0, 10] = 1
    raw.X = sparse.csr_matrix(x)
    names = list(raw.var_names)
    names[21] = names[20]
    raw.var_names = names
    return raw


@pytest.mark.parametrize("duplicates", ["merge", "make_unique"])
def test_streamed_preprocessing_equals_scanpy_in_memory(duplicates) -> None:
    """Blocks of 7 cells through the two passes give the cells, genes, split
    and values scanpy gives on the whole matrix in memory (float32, 1e-6)."""
    import anndata as ad
    import scanpy as sc

    raw = _awkward_counts()
    params = PARAMS.model_copy(update={"duplicate_genes": duplicates})
    out, summary = preprocess_adata(as_lazy(raw, chunk_rows=7), DATA, params)
    train, validation, test, report = split_adata(out, summary, DATA, params)
    assert train.X.chunks[0][0] <= 7  # still lazy, in blocks

    ref = raw[raw.obs["cell_type"].notna()].copy()
    if duplicates == "merge":
        codes, uniques = pd.factorize(ref.var_names)
        merged = np.zeros((ref.n_obs, len(uniques)), dtype=np.float32)
        np.add.at(merged.T, codes, ref.X.toarray().T)
        ref = ad.AnnData(merged, obs=ref.obs, var=pd.DataFrame(index=uniques))
    else:
        ref.var_names_make_unique()
    sc.pp.filter_cells(ref, min_counts=10)
    sc.pp.filter_genes(ref, min_cells=3)
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    ref = ref[ref.obs["cell_type"] != "type_3"]
    assert report["dropped_classes"] == ["type_3"]
    assert report["cells_unlabelled"] == 2 and report["cells_removed_by_qc"] == 1
    assert "gene_10" not in train.var_names
    for split in (train, validation, test):
        np.testing.assert_allclose(
            split.X.compute().toarray(),
            ref[split.obs_names, split.var_names].X.toarray(),
            atol=1e-6,
        )
    names = [*train.obs_names, *validation.obs_names, *test.obs_names]
    assert sorted(names) == sorted(ref.obs_names)
    whole, summary = preprocess_adata(as_lazy(raw, chunk_rows=200), DATA, params)
    again = split_adata(whole, summary, DATA, params)[0]
    assert list(again.obs_names) == list(train.obs_names)  # split ignores blocks
