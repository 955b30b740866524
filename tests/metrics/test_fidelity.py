"""Fidelity metrics on hand-made inputs with known answers."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

from scdd.evaluation.config import FidelityParams
from scdd.metrics.fidelity import (
    class_moments,
    fidelity_report,
    find_markers,
    latent_mmd,
    marker_overlap,
    mmd_rbf,
    moment_correlations,
    summarise_classes,
    zero_fraction,
)
from scdd.sampling import stratified_rows
from tests.evaluation.lazy_helpers import no_whole_matrix, spied

NAMES = ["a", "b", "c"]


def _cells(seed: int = 0, n_per_class: int = 20, n_genes: int = 30):
    """Log-scale cells; class c over-expresses genes 5c..5c+4 (its markers)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    rate = np.full((3, n_genes), 0.5)
    for c in range(3):
        rate[c, 5 * c : 5 * c + 5] = 6.0
    x = np.log1p(rng.poisson(rate[labels])).astype(np.float32)
    return x, labels


def test_zero_fraction_of_a_known_matrix() -> None:
    x = np.array([[0, 1], [2, 0], [0, 0]], dtype=np.float32)
    assert zero_fraction(x) == pytest.approx(4 / 6)
    stored_zero = sparse.csr_matrix(x)
    stored_zero.data[0] = 0.0  # an explicitly stored zero is still a zero
    assert zero_fraction(stored_zero) == pytest.approx(5 / 6)
    assert zero_fraction(np.zeros((0, 3))) == 0.0


def test_class_moments_match_numpy_dense_and_sparse() -> None:
    x, labels = _cells()
    for matrix, chunk in ((x, 20_000), (sparse.csr_matrix(x), 20_000), (x, 7)):
        means, var, counts = class_moments(
            matrix, labels, num_classes=4, chunk_size=chunk
        )
        np.testing.assert_array_equal(counts, [20, 20, 20, 0])
        for c in range(3):
            np.testing.assert_allclose(means[c], x[labels == c].mean(0), atol=1e-6)
            np.testing.assert_allclose(var[c], x[labels == c].var(0, ddof=1), atol=1e-5)
        assert np.isnan(means[3]).all() and np.isnan(var[3]).all()


def test_identical_sets_have_perfect_fidelity() -> None:
    x, labels = _cells()
    report = fidelity_report(
        sparse.csr_matrix(x),
        labels,
        x.copy(),
        labels.copy(),
        real_z=x,
        syn_z=x.copy(),
        class_names=NAMES,
        params=FidelityParams(top_k=5),
    )
    assert report["mean_correlation"]["mean"] == pytest.approx(1.0)
    assert report["variance_correlation"]["mean"] == pytest.approx(1.0)
    assert all(
        v == pytest.approx(1.0)
        for v in report["mean_correlation"]["per_class"].values()
    )
    assert report["zero_fraction"]["synthetic"] == report["zero_fraction"]["real"]
    assert report["markers"]["overlap"]["mean"] == 1.0
    assert report["markers"]["jaccard"]["mean"] == 1.0
    assert report["mmd"]["mmd"] == pytest.approx(0.0, abs=1e-6)
    assert all(
        v == pytest.approx(0.0, abs=1e-6) for v in report["mmd"]["per_class"].values()
    )


def test_one_cell_per_class_has_no_variance_but_has_markers() -> None:
    x, labels = _cells()
    means, _, _ = class_moments(x, labels, num_classes=3)
    result = moment_correlations(x, labels, means, np.arange(3), class_names=NAMES)
    assert result["variance_correlation"] == {
        "per_class": {"a": None, "b": None, "c": None},
        "mean": None,
    }
    assert result["mean_correlation"]["mean"] == pytest.approx(1.0)
    # t-test needs 2 cells per class: both sides fall back to mean differences
    markers = marker_overlap(
        x, labels, means, np.arange(3), class_names=NAMES, top_k=5, method="t-test"
    )
    assert markers["method"] == "mean_difference"
    assert markers["overlap"]["mean"] == 1.0


def test_markers_are_the_planted_genes() -> None:
    x, labels = _cells()
    for method in ("mean_difference", "t-test"):
        found = find_markers(x, labels, num_classes=3, top_k=5, method=method)
        for c in range(3):
            assert sorted(found[c].tolist()) == list(range(5 * c, 5 * c + 5))


def test_missing_synthetic_class_is_null() -> None:
    x, labels = _cells()
    keep = labels != 2
    result = marker_overlap(
        x, labels, x[keep], labels[keep], class_names=NAMES, top_k=5
    )
    assert result["overlap"]["per_class"]["c"] is None
    assert result["overlap"]["mean"] == 1.0


def test_mmd_grows_with_distance() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(100, 4))
    near = mmd_rbf(a, rng.normal(size=(100, 4)))["mmd2"]
    far = mmd_rbf(a, rng.normal(size=(100, 4)) + 3.0)["mmd2"]
    assert 0.0 <= near < far
    assert mmd_rbf(a, a)["mmd2"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="widths differ"):
        mmd_rbf(a, a[:, :2])


def test_latent_mmd_caps_real_cells() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(500, 8))
    labels = rng.integers(0, 3, 500)
    result = latent_mmd(
        real, labels, real[:3], np.arange(3), class_names=NAMES, max_cells=50
    )
    assert result["n_real"] == 50
    assert set(result["per_class"]) == set(NAMES)


def test_feature_only_set_gets_mmd_only() -> None:
    x, labels = _cells()
    report = fidelity_report(
        x,
        labels,
        None,
        labels,
        real_z=x,
        syn_z=x,
        class_names=NAMES,
        params=FidelityParams(),
    )
    assert report["mean_correlation"] is None and report["markers"] is None
    assert report["zero_fraction"]["synthetic"] is None
    assert report["mmd"]["mmd"] == pytest.approx(0.0, abs=1e-6)


def test_gene_orders_must_match() -> None:
    x, labels = _cells()
    with pytest.raises(ValueError, match="align_genes"):
        fidelity_report(
            x,
            labels,
            x[:, :10],
            labels,
            real_z=x,
            syn_z=x,
            class_names=NAMES,
            params=FidelityParams(),
        )


def _lazy(x: np.ndarray, chunk_rows: int = 7):
    """``x`` as a lazy matrix of tiny CSR row blocks, with a record of reads."""
    adata, reads = spied(ad.AnnData(X=sparse.csr_matrix(x)), chunk_rows)
    return adata.X, reads


def test_lazy_class_moments_match_in_memory_in_one_pass(monkeypatch) -> None:
    x, labels = _cells()  # 60 cells: 9 blocks of <= 7 rows
    lazy, reads = _lazy(x)
    with no_whole_matrix(monkeypatch):
        summary = summarise_classes(lazy, labels, num_classes=4)
        means, var, counts = class_moments(lazy, labels, num_classes=4)
    assert reads.max_rows == 7
    assert sorted(reads.counts.values()) == [2] * 9  # each block once per call
    expected = class_moments(x, labels, num_classes=4)
    for got, want in zip((means, var, counts), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(summary.means, expected[0], equal_nan=True)
    assert summary.zero_fraction == pytest.approx(zero_fraction(x))
    with no_whole_matrix(monkeypatch):
        assert zero_fraction(lazy) == pytest.approx(zero_fraction(x))


@pytest.mark.parametrize("method", ["mean_difference", "t-test", "wilcoxon"])
def test_lazy_real_cells_give_the_same_report(monkeypatch, method: str) -> None:
    x, labels = _cells()
    syn, syn_labels = _cells(seed=1, n_per_class=3)
    lazy, reads = _lazy(x)
    kwargs = {
        "real_z": x,
        "syn_z": syn,
        "class_names": NAMES,
        "params": FidelityParams(top_k=5, marker_method=method),
    }
    with no_whole_matrix(monkeypatch):
        report = fidelity_report(lazy, labels, syn, syn_labels, **kwargs)
    assert report == fidelity_report(x, labels, syn, syn_labels, **kwargs)
    # one pass for moments, zeros and mean-difference markers; a scanpy rule
    # reads its (here: whole) sample once more
    passes = 1 if method == "mean_difference" else 2
    assert sorted(reads.counts.values()) == [passes] * 9
    # a feature-only set reads the real cells once, for their zero fraction
    reads.clear()
    with no_whole_matrix(monkeypatch):
        report = fidelity_report(lazy, labels, None, syn_labels, **kwargs)
    assert report["zero_fraction"]["real"] == pytest.approx(zero_fraction(x))
    assert sorted(reads.counts.values()) == [1] * 9


def test_scanpy_markers_read_a_capped_stratified_sample() -> None:
    x, labels = _cells()
    lazy, reads = _lazy(x)
    found = find_markers(
        lazy, labels, num_classes=3, top_k=5, method="t-test", max_cells=30
    )
    for c in range(3):  # 10 cells per class still find the planted genes
        assert sorted(found[c].tolist()) == list(range(5 * c, 5 * c + 5))
    rows = stratified_rows(labels, 30, 0)
    assert len(rows) == 30
    assert set(reads.counts) == set(np.unique(rows // 7))
