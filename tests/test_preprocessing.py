from functools import partial

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scdd import preprocessing as pp
from scdd.cellstore import as_lazy


def _stats(adata, min_counts: float = 0) -> pp.MatrixStats:
    return pp.inspect_matrix(as_lazy(adata, chunk_rows=7), min_counts=min_counts)


def test_detects_counts_and_lognorm(counts_adata, lognorm_adata) -> None:
    assert pp.detect_input_kind(_stats(counts_adata), max_log_value=20) == "counts"
    kind = pp.detect_input_kind(_stats(lognorm_adata), max_log_value=20)
    assert kind == "log_normalised"


def test_refuses_normalised_but_not_logged(counts_adata) -> None:
    x = counts_adata.X.toarray()
    counts_adata.X = sparse.csr_matrix(
        x / x.sum(1, keepdims=True) * 1e4 + 0.5 * (x > 0)
    )
    with pytest.raises(ValueError, match="not log1p-normalised"):
        pp.detect_input_kind(_stats(counts_adata), max_log_value=20)


def test_missing_label_lists_columns(counts_adata) -> None:
    with pytest.raises(ValueError, match=r"'celltype'.*\['cell_type', 'batch'\]"):
        pp.check_labels(counts_adata, label_key="celltype")


def test_single_class_refused(counts_adata) -> None:
    with pytest.raises(
        ValueError, match=r"The label column 'batch' has 1 class\(es\) \(b0: 90"
    ):
        pp.check_labels(counts_adata, label_key="batch")


def test_all_nan_labels_refused(counts_adata) -> None:
    counts_adata.obs["cell_type"] = np.nan
    with pytest.raises(
        ValueError,
        match=r"'cell_type' has no labels at all \(all 90 cells are NaN\).*"
        r"data.label_key=COLUMN; columns with values: \['batch'\]",
    ):
        pp.check_labels(counts_adata, label_key="cell_type")


def test_one_class_left_after_dropping_unlabelled(counts_adata) -> None:
    labels = counts_adata.obs["cell_type"].astype(object)
    counts_adata.obs["cell_type"] = labels.where(labels == "type_0")
    with pytest.raises(
        ValueError,
        match=r"After dropping 50 unlabelled cells, label column 'cell_type' has "
        r"1 class\(es\) \(type_0: 40 cells\).*data.label_key=COLUMN",
    ):
        pp.check_labels(counts_adata, label_key="cell_type")


def test_unlabelled_cells_dropped(counts_adata) -> None:
    counts_adata.obs["cell_type"] = counts_adata.obs["cell_type"].astype(object)
    counts_adata.obs.iloc[:3, 0] = np.nan
    out = pp.check_labels(counts_adata, label_key="cell_type")
    assert out.n_obs == counts_adata.n_obs - 3
    assert out.obs["cell_type"].dtype == "category"


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (-1.0, "negative .* whole numbers; counts cannot be negative"),
        (-0.5, "negative .* scaled or batch-corrected"),
        (np.nan, "1 NaN or infinite"),
        (np.inf, "1 NaN or infinite"),
    ],
)
def test_bad_values(counts_adata, value, match) -> None:
    x = counts_adata.X.toarray()
    x[0, 0] = value
    counts_adata.X = sparse.csr_matrix(x)
    with pytest.raises(ValueError, match=match):
        pp.check_values(_stats(counts_adata))


def test_all_zero_matrix_names_the_fix(counts_adata) -> None:
    counts_adata.X = sparse.csr_matrix(counts_adata.shape, dtype=np.float32)
    with pytest.raises(ValueError, match="all zeros; point data.layer"):
        pp.detect_input_kind(_stats(counts_adata), max_log_value=20)


def test_quality_filter_empty_result(counts_adata) -> None:
    with pytest.raises(ValueError, match="left 0 cells"):
        pp.quality_filter(
            counts_adata,
            stats=_stats(counts_adata, 10**9),
            min_counts=10**9,
            min_cells=3,
        )


def test_quality_filter_drops_rare_genes(counts_adata) -> None:
    x = counts_adata.X.toarray()
    x[:, 0] = 0
    x[0, 0] = 5
    counts_adata.X = sparse.csr_matrix(x)
    out = pp.quality_filter(
        counts_adata, stats=_stats(counts_adata, 1), min_counts=1, min_cells=3
    )
    assert "gene_0" not in out.var_names
    assert out.n_vars == counts_adata.n_vars - 1


def test_log_normalise_keeps_counts_only_when_asked(counts_adata) -> None:
    out = pp.log_normalise(counts_adata, target_sum=1e4, keep_counts=False)
    assert "counts" not in out.layers
    out = pp.log_normalise(counts_adata, target_sum=1e4, keep_counts=True)
    np.testing.assert_array_equal(
        out.layers["counts"].toarray(), counts_adata.X.toarray()
    )
    totals = np.expm1(out.X.toarray()).sum(1)
    np.testing.assert_allclose(totals, 1e4, rtol=1e-4)
    assert sparse.isspmatrix_csr(out.X) and out.X.dtype == np.float32


def test_small_classes_drop_or_fail(counts_adata) -> None:
    out, dropped = pp.filter_small_classes(
        counts_adata, label_key="cell_type", min_cells=25, on_small="drop"
    )
    assert dropped == ["type_2"]
    assert set(out.obs["cell_type"].cat.categories) == {"type_0", "type_1"}
    with pytest.raises(ValueError, match=r"type_2 \(20\)"):
        pp.filter_small_classes(
            counts_adata, label_key="cell_type", min_cells=25, on_small="error"
        )
    with pytest.raises(
        ValueError,
        match=r"fewer than 35 cells, label column 'cell_type' has 1 class\(es\) "
        r"\(type_0: 40 cells\).*preprocess.min_cells_per_class=N",
    ):
        pp.filter_small_classes(
            counts_adata, label_key="cell_type", min_cells=35, on_small="drop"
        )


@pytest.mark.parametrize("kind", ["counts", "log_normalised"])
def test_duplicate_genes_merge(counts_adata, kind) -> None:
    names = list(counts_adata.var_names)
    names[1] = names[0]
    counts_adata.var_names = names
    x = counts_adata.X.toarray()
    if kind == "log_normalised":
        counts_adata.X = sparse.csr_matrix(np.log1p(x))
    out = pp.dedupe_genes(counts_adata, strategy="merge", kind=kind)
    assert out.n_vars == counts_adata.n_vars - 1 and out.var_names.is_unique
    merged = out[:, "gene_0"].X.toarray().ravel()
    expected = x[:, 0] + x[:, 1]
    if kind == "log_normalised":
        expected = np.log1p(expected)
    np.testing.assert_allclose(merged, expected, rtol=1e-5)


def test_duplicate_genes_make_unique(counts_adata, caplog) -> None:
    counts_adata.var_names = ["g"] * counts_adata.n_vars
    out = pp.dedupe_genes(counts_adata, strategy="make_unique")
    assert out.var_names.is_unique and out.n_vars == counts_adata.n_vars
    assert "Made 59 duplicate gene names unique" in caplog.text


@pytest.mark.parametrize("name", ["", " ", np.nan, None, "nan", "NaN"])
def test_nameless_genes_refused(counts_adata, name) -> None:
    names = pd.Index([*counts_adata.var_names[:2], name, *counts_adata.var_names[3:]])
    adata = ad.AnnData(
        counts_adata.X, obs=counts_adata.obs, var=pd.DataFrame(index=names)
    )
    with pytest.raises(
        ValueError,
        match=r"1 genes have no name \(var_names empty or NaN, e.g. at positions "
        r"\[2\]\); set var_names from a var column",
    ):
        pp.select_matrix(adata, layer=None)


def test_duplicate_cell_names_made_unique_once(counts_adata, caplog) -> None:
    counts_adata.obs_names = ["c"] * 3 + list(counts_adata.obs_names[3:])
    out = pp.select_matrix(counts_adata, layer=None)
    assert out.obs_names.is_unique
    assert list(out.obs_names[:4]) == ["c", "c-1", "c-2", "cell_3"]
    assert "Made 2 duplicate cell names (obs_names) unique" in caplog.text
    assert not counts_adata.obs_names.is_unique  # input untouched


def test_select_matrix_layers(counts_adata) -> None:
    counts_adata.layers["counts"] = counts_adata.X.copy()
    counts_adata.X = sparse.csr_matrix(-np.ones(counts_adata.shape, dtype=np.float32))
    out = pp.select_matrix(counts_adata, layer="counts")
    assert out.X.compute().min() >= 0 and not out.layers
    with pytest.raises(ValueError, match=r"available layers: \['counts'\]"):
        pp.select_matrix(counts_adata, layer="spliced")
    with pytest.raises(ValueError, match="no .raw"):
        pp.select_matrix(counts_adata, layer="raw")


def test_stratified_split_is_seeded_and_covers_classes(counts_adata) -> None:
    split = partial(pp.stratified_split, label_key="cell_type", test_size=0.3, seed=1)
    train, test = split(counts_adata)
    again, _ = split(counts_adata)
    assert list(train.obs_names) == list(again.obs_names)
    assert train.n_obs + test.n_obs == counts_adata.n_obs
    assert not set(train.obs_names) & set(test.obs_names)
    assert set(test.obs["cell_type"]) == set(counts_adata.obs["cell_type"])
    assert abs(test.n_obs / counts_adata.n_obs - 0.3) < 0.02


def test_functions_do_not_mutate_input(counts_adata) -> None:
    before = counts_adata.X.toarray().copy()
    pp.log_normalise(counts_adata, target_sum=1e4, keep_counts=False)
    pp.quality_filter(
        counts_adata, stats=_stats(counts_adata, 1), min_counts=1, min_cells=3
    )
    np.testing.assert_array_equal(counts_adata.X.toarray(), before)
    assert not counts_adata.layers


def test_public_functions_follow_scverse_signature() -> None:
    """adata first, at most one other positional parameter (scanpy convention)."""
    import inspect

    for name in [
        "select_matrix",
        "inspect_matrix",
        "check_labels",
        "require_classes",
        "dedupe_genes",
        "quality_filter",
        "log_normalise",
        "filter_small_classes",
        "stratified_split",
    ]:
        params = list(inspect.signature(getattr(pp, name)).parameters.values())
        assert params[0].name == "adata", name
        positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert len(positional) == 1, name


def test_log_normalised_input_is_rescaled_to_the_target_total(lognorm_adata) -> None:
    x = lognorm_adata.X.toarray()
    other = lognorm_adata.copy()
    other.X = sparse.csr_matrix(np.log1p(np.expm1(x) * 0.2).astype(np.float32))
    totals = _stats(other).cell_expm1_sums
    out, median = pp.rescale_log_normalised(other, totals=totals, target_sum=1e4)
    assert median == pytest.approx(2000, rel=1e-3)
    totals = np.expm1(out.X.toarray().astype(np.float64)).sum(1)
    np.testing.assert_allclose(totals, 1e4, rtol=1e-4)
    np.testing.assert_allclose(out.X.toarray(), x, atol=1e-4)  # ratios kept


def test_input_already_on_target_is_left_alone(lognorm_adata) -> None:
    totals = _stats(lognorm_adata).cell_expm1_sums
    out, median = pp.rescale_log_normalised(
        lognorm_adata, totals=totals, target_sum=1e4
    )
    assert out is lognorm_adata
    assert median == pytest.approx(1e4, rel=1e-3)


@pytest.mark.parametrize(
    ("rows", "cols", "match"),
    [(0, 60, "0 cells x 60 genes"), (90, 0, "90 cells x 0 genes")],
)
def test_empty_input_is_named(counts_adata, rows, cols, match) -> None:
    with pytest.raises(ValueError, match=f"{match}; scDD needs at least one cell"):
        pp.select_matrix(counts_adata[:rows, :cols].copy(), layer=None)


def test_missing_x_is_named(counts_adata) -> None:
    adata = ad.AnnData(obs=counts_adata.obs, var=counts_adata.var)
    with pytest.raises(ValueError, match="no expression matrix in X; set data.layer"):
        pp.select_matrix(adata, layer=None)


def test_integer_labels_are_named_in_the_log(counts_adata, caplog) -> None:
    counts_adata.obs["cluster"] = np.arange(counts_adata.n_obs) % 3
    out = pp.check_labels(counts_adata, label_key="cluster")
    assert list(out.obs["cluster"].cat.categories) == ["0", "1", "2"]
    assert "holds numbers" in caplog.text
