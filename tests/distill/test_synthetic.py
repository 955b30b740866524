"""Synthetic samples -> valid, real-looking AnnData."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning

from scdd.distill.methods import MethodOutput
from scdd.distill.real_cells import summarise_real_cells
from scdd.distill.synthetic import finalise_genes, input_var, synthetic_adata
from scdd.preprocessing import log_normalise
from tests.conftest import make_counts_adata
from tests.distill.test_methods import LABEL_KEY, Tiny, make_inputs, make_tiny, run

CATEGORIES = ["type_0", "type_1", "type_2"]


@pytest.fixture(scope="module")
def tiny() -> Tiny:
    return make_tiny()


def _raw_genes(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Decoder-like output of any sign ``[60, 200]`` for 3 classes of 20."""
    rng = np.random.default_rng(seed)
    genes = rng.normal(0.5, 1.0, size=(60, 200))
    return genes, np.repeat([0, 1, 2], 20)


def _row_totals(x: sparse.csr_matrix) -> np.ndarray:
    return np.expm1(x.toarray().astype(np.float64)).sum(1)


def test_finalise_genes_is_valid_log_normalised_expression() -> None:
    genes, labels = _raw_genes()
    genes[0, 3] = np.nan
    wanted = np.array([0.5, 0.7, 0.9])
    x = finalise_genes(genes, labels, zero_fractions=wanted, target_sum=1e4)
    assert sparse.isspmatrix_csr(x) and x.dtype == np.float32
    assert x.shape == genes.shape
    dense = x.toarray()
    assert np.isfinite(dense).all() and dense.min() >= 0
    np.testing.assert_allclose(_row_totals(x), 1e4, rtol=1e-4)
    zeros = [(dense[labels == c] == 0).mean() for c in range(3)]
    np.testing.assert_allclose(zeros, wanted, atol=0.03)


def test_finalise_genes_fixed_threshold_and_other_total() -> None:
    genes, labels = _raw_genes(1)
    x = finalise_genes(
        genes,
        labels,
        zero_fractions=np.zeros(3),
        target_sum=2000.0,
        zero_threshold=1.0,
    )
    np.testing.assert_array_equal(x.toarray() > 0, genes > 1.0)
    np.testing.assert_allclose(_row_totals(x), 2000.0, rtol=1e-4)


def test_a_row_thresholded_to_zero_keeps_its_top_gene() -> None:
    genes, labels = _raw_genes(2)
    genes[5] = -np.linspace(1.0, 2.0, genes.shape[1])  # all negative, top: gene 0
    genes[5, 17] = -0.1  # now the top gene is 17
    genes[25] = np.linspace(0.0, 0.5, genes.shape[1])  # under the fixed cut-off
    x = finalise_genes(
        genes,
        labels,
        zero_fractions=np.zeros(3),
        target_sum=1e4,
        zero_threshold=0.9,
    )
    for row, top in ((5, 17), (25, genes.shape[1] - 1)):
        assert x[row].indices.tolist() == [top]
        np.testing.assert_allclose(x[row].data, np.log1p(1e4), rtol=1e-6)
    np.testing.assert_allclose(_row_totals(x), 1e4, rtol=1e-4)


def test_synthetic_adata_layout(tmp_path: Path) -> None:
    real = log_normalise(
        make_counts_adata((10, 10, 10), n_genes=20), target_sum=1e4, keep_counts=False
    )
    real_labels = real.obs[LABEL_KEY].cat.codes.to_numpy()
    genes, _ = _raw_genes()
    labels = np.array([0, 0, 2, 2])  # class 1 has no synthetic cell
    out = MethodOutput(
        labels=labels,
        genes=genes[:4, :20],
        codes=np.ones((4, 8)),
        features=np.ones((4, 5)),
    )
    syn = synthetic_adata(
        out,
        label_key=LABEL_KEY,
        categories=CATEGORIES,
        var_names=list(real.var_names),
        stats=summarise_real_cells(
            real.X, real_labels, CATEGORIES, gene_names=list(real.var_names)
        ),
        method="scdd",
    )
    assert isinstance(syn.obs[LABEL_KEY].dtype, pd.CategoricalDtype)
    assert list(syn.obs[LABEL_KEY].cat.categories) == CATEGORIES
    assert list(syn.obs[LABEL_KEY]) == ["type_0", "type_0", "type_2", "type_2"]
    assert list(syn.var_names) == list(real.var_names)
    assert syn.obs_names.is_unique
    assert syn.obsm["X_optimised_codes"].shape == (4, 8)
    assert syn.obsm["X_optimised_codes"].dtype == np.float32
    assert syn.obsm["X_foundation"].shape == (4, 5)
    np.testing.assert_allclose(_row_totals(syn.X), 1e4, rtol=1e-4)
    syn.write_h5ad(tmp_path / "syn.h5ad")
    back = ad.read_h5ad(tmp_path / "syn.h5ad")
    assert list(back.obs[LABEL_KEY].cat.categories) == CATEGORIES

    features_only = synthetic_adata(
        MethodOutput(labels=labels, features=np.ones((4, 5))),
        label_key=LABEL_KEY,
        categories=CATEGORIES,
        var_names=list(real.var_names),
        method="featdistill",
    )
    assert features_only.n_vars == 0 and features_only.n_obs == 4
    assert "X_optimised_codes" not in features_only.obsm
    assert features_only.obsm["X_foundation"].shape == (4, 5)

    seeds = np.array([0, 1, 25, 26])
    kept = synthetic_adata(
        MethodOutput(labels=real_labels[seeds], genes=real.X[seeds], real_cells=True),
        label_key=LABEL_KEY,
        categories=CATEGORIES,
        var_names=list(real.var_names),
        method="herding",
    )
    np.testing.assert_array_equal(kept.X.toarray(), real.X[seeds].toarray())
    assert kept.obs["scdd_real_cell"].all() and not syn.obs["scdd_real_cell"].any()


def _scdd_synthetic(tiny: Tiny, **kwargs) -> ad.AnnData:
    inputs = make_inputs(tiny)
    out = run("scdd", inputs, spc=3)
    return synthetic_adata(
        out,
        label_key=LABEL_KEY,
        categories=list(tiny.train.obs[LABEL_KEY].cat.categories),
        var_names=tiny.foundation.gene_order,
        stats=summarise_real_cells(
            kwargs.get("real", tiny.train).X,
            inputs.labels,
            list(tiny.train.obs[LABEL_KEY].cat.categories),
            gene_names=tiny.foundation.gene_order,
        ),
        method="scdd",
    )


def test_scdd_synthetic_set_passes_celltypist_checks(tiny: Tiny) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        celltypist = pytest.importorskip("celltypist")
    syn = _scdd_synthetic(tiny)
    assert syn.n_obs == 9 and syn.X.min() >= 0
    # use_SGD: celltypist 1.7.1's default logistic regression passes
    # multi_class="ovr", which scikit-learn >= 1.8 no longer accepts (TypeError
    # after the input checks); the SGD classifier path still works.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = celltypist.train(
            syn, labels=LABEL_KEY, check_expression=True, max_iter=5, use_SGD=True
        )
    assert sorted(model.cell_types) == CATEGORIES
    # genes zero in every synthetic cell are dropped by CellTypist
    expressed = np.asarray(syn.X.sum(0)).ravel() > 0
    assert list(model.features) == list(syn.var_names[expressed])

    # Real data normalised to another total (e.g. pbmc68k_reduced's .raw, whose
    # cells sum to ~2000 over its 765 genes) gives a synthetic set CellTypist's
    # check refuses: the synthetic total follows the real one.
    other = tiny.train.copy()
    other.X = sparse.csr_matrix(np.log1p(np.expm1(other.X.toarray()) * 0.2))
    refused = _scdd_synthetic(tiny, real=other)
    np.testing.assert_allclose(_row_totals(refused.X), 2000.0, rtol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(ValueError, match="10000 counts per cell"):
            celltypist.train(
                refused,
                labels=LABEL_KEY,
                check_expression=True,
                max_iter=5,
                use_SGD=True,
            )


def test_input_var_carries_the_input_columns_for_the_genes_written() -> None:
    var = pd.DataFrame(
        {"gene_ids": ["E1", "E2"], "highly_variable": [True, False]},
        index=["g1", "g2"],
    )
    out = input_var(var, pd.Index(["g2", "g3", "g1"]))
    assert list(out.index) == ["g2", "g3", "g1"]
    assert out["gene_ids"].tolist()[::2] == ["E2", "E1"]
    assert pd.isna(out.loc["g3", "gene_ids"])  # a gene the input lacks
    assert out["highly_variable"].dtype == bool
    assert out["highly_variable"].tolist() == [False, False, True]
