"""Cross-architecture evaluation models: gene MLP, CellTypist, retention."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scdd.cellstore import as_lazy
from scdd.evaluation.celltypist_eval import evaluate_celltypist
from scdd.evaluation.config import (
    CelltypistParams,
    DeepInsightCNNParams,
    GeneMLPParams,
    GeneTransformerParams,
)
from scdd.evaluation.gene_mlp import evaluate_gene_mlp
from scdd.evaluation.suite import check_models, compact, with_retention
from tests.conftest import make_log_splits

KEY = "cell_type"
CATEGORIES = ["type_0", "type_1", "type_2"]


@pytest.fixture(scope="module")
def splits():
    train, test = make_log_splits(40)
    return train, test


def _codes(adata) -> np.ndarray:
    return adata.obs[KEY].cat.codes.to_numpy().astype(np.int64)


def test_gene_mlp_learns_marker_genes(splits) -> None:
    train, test = splits
    args = (train.X, _codes(train), test.X, _codes(test))
    result = evaluate_gene_mlp(
        *args,
        num_classes=3,
        params=GeneMLPParams(hidden=16, n_inits=2, steps=90, batch_size=16),
    )
    assert result["accuracy_mean"] > 0.9 and result["n_train"] == 45
    assert len(result["per_init"]) == 2
    # full batch on dense input, same seed: reproducible
    dense = (train.X.toarray(), _codes(train), test.X.toarray(), _codes(test))
    params = GeneMLPParams(hidden=16, n_inits=1, steps=30)
    first = evaluate_gene_mlp(*dense, num_classes=3, params=params)
    again = evaluate_gene_mlp(*dense, num_classes=3, params=params)
    assert first["per_init"] == again["per_init"]


def test_gene_mlp_refuses_mismatched_genes(splits) -> None:
    train, test = splits
    params = GeneMLPParams()
    with pytest.raises(ValueError, match="align_genes"):
        evaluate_gene_mlp(
            train.X,
            _codes(train),
            test.X[:, :10],
            _codes(test),
            num_classes=3,
            params=params,
        )
    with pytest.raises(ValueError, match="ints in"):
        evaluate_gene_mlp(
            train.X,
            _codes(train) + 5,
            test.X,
            _codes(test),
            num_classes=3,
            params=params,
        )


def test_celltypist_on_a_tiny_synthetic_set(splits) -> None:
    train, test = splits
    # 2 cells per class, labels as strings in another category order
    synthetic = train[[0, 1, 20, 21, 35, 36]].copy()
    synthetic.obs[KEY] = pd.Categorical(
        synthetic.obs[KEY].astype(str), categories=CATEGORIES[::-1]
    )
    result = evaluate_celltypist(
        synthetic,
        test,
        label_key=KEY,
        categories=CATEGORIES,
        params=CelltypistParams(n_inits=2),
        seed=0,
    )
    assert result["n_train"] == 6 and result["n_test"] == 45
    assert result["accuracy_mean"] > 0.8
    assert [row["seed"] for row in result["per_init"]] == [0, 1]


def test_celltypist_large_sets_train_by_mini_batches(splits, monkeypatch) -> None:
    import celltypist

    train, test = splits
    seen, real_train = [], celltypist.train

    def spy(*args, **kwargs):
        seen.append(kwargs["mini_batch"])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(celltypist, "train", spy)
    kwargs = {"label_key": KEY, "categories": CATEGORIES, "seed": 0}
    for above in (None, 45):
        params = CelltypistParams(n_inits=1, mini_batch_above=above)
        evaluate_celltypist(train, test, params=params, **kwargs)
    batched = evaluate_celltypist(
        train,
        test,
        params=CelltypistParams(
            n_inits=1,
            mini_batch_above=44,
            train_kwargs={"batch_size": 16, "batch_number": 3, "epochs": 5},
        ),
        **kwargs,
    )
    assert seen == [False, False, True]  # 45 training cells
    assert batched["accuracy_mean"] > 0.8


def test_celltypist_predictions_in_chunks_match_whole(splits) -> None:
    import celltypist

    from scdd.evaluation.celltypist_eval import _annotate

    train, test = splits
    model = celltypist.train(train, labels=KEY, use_SGD=True, check_expression=False)
    (whole,) = _annotate(celltypist, test, [model])
    (chunked,) = _annotate(celltypist, test, [model], chunk_size=7)
    np.testing.assert_array_equal(chunked, whole)
    # a lazy test split (blocks of 5 rows): the same labels, one pass for
    # several models
    lazy = as_lazy(test, chunk_rows=5)
    for labels in _annotate(celltypist, lazy, [model, model], chunk_size=7):
        np.testing.assert_array_equal(labels, whole)


def test_celltypist_needs_the_same_gene_order(splits) -> None:
    train, test = splits
    with pytest.raises(ValueError, match="align_genes"):
        evaluate_celltypist(
            train,
            test[:, ::-1].copy(),
            label_key=KEY,
            categories=CATEGORIES,
            params=CelltypistParams(),
        )


def test_retention_divides_by_the_full_split() -> None:
    result = {
        "accuracy_mean": 0.4,
        "accuracy_std": 0.1,
        "balanced_accuracy_mean": 0.3,
        "balanced_accuracy_std": 0.0,
        "macro_f1_mean": 0.2,
        "macro_f1_std": 0.0,
        "per_init": [
            {
                "accuracy": 0.4,
                "balanced_accuracy": 0.3,
                "macro_f1": 0.2,
                "train_accuracy": 1.0,
            }
        ],
    }
    reference = {**result, "accuracy_mean": 0.8, "macro_f1_mean": 0.0}
    out = with_retention(result, reference)
    assert out["retention"] == pytest.approx(0.5)
    assert out["retention_balanced_accuracy"] == pytest.approx(1.0)
    assert out["retention_macro_f1"] is None  # reference scored 0
    assert out["full"]["accuracy_mean"] == 0.8
    assert with_retention(result, None)["retention"] is None
    assert with_retention(None, reference) is None
    small = compact(out)
    assert "per_init" not in small and small["accuracy_per_init"] == [0.4]
    with pytest.raises(ValueError, match="evaluate.models may list"):
        check_models(["f_head", "tosica"])


def test_sparse_and_dense_mlp_inputs_agree(splits) -> None:
    train, test = splits
    y, y_test = _codes(train), _codes(test)
    kwargs = {
        "num_classes": 3,
        "params": GeneMLPParams(hidden=8, n_inits=1, steps=5),
    }
    a = evaluate_gene_mlp(train.X, y, test.X, y_test, **kwargs)
    b = evaluate_gene_mlp(
        train.X.toarray(), y, sparse.csc_matrix(test.X), y_test, **kwargs
    )
    assert a["per_init"] == b["per_init"]


def test_lazy_test_cells_score_like_in_memory_ones(splits, monkeypatch) -> None:
    """Test cells read by row blocks of 7: the scores of in-memory test cells,
    every block read once for all runs, never the whole matrix."""
    from scdd.evaluation.deepinsight_cnn import evaluate_deepinsight_cnn
    from scdd.evaluation.gene_transformer import evaluate_gene_transformer
    from tests.evaluation.lazy_helpers import no_whole_matrix, spied

    train, test = splits
    lazy, reads = spied(test)
    n_blocks = len(lazy.X.chunks[0])
    common = {"n_inits": 2, "steps": 20, "batch_size": 16}
    runs = (
        (evaluate_gene_mlp, GeneMLPParams(hidden=16, **common)),
        (
            evaluate_gene_transformer,
            GeneTransformerParams(genes_per_token=8, d_model=8, heads=2, **common),
        ),
        (
            evaluate_deepinsight_cnn,
            DeepInsightCNNParams(pixels=8, layout="pca", width=2, **common),
        ),
    )
    for evaluate, params in runs:
        reads.clear()
        with no_whole_matrix(monkeypatch):
            got = evaluate(
                train.X,
                _codes(train),
                lazy.X,
                _codes(test),
                num_classes=3,
                params=params,
            )
        assert sorted(reads.counts.values()) == [1] * n_blocks
        expected = evaluate(
            train.X, _codes(train), test.X, _codes(test), num_classes=3, params=params
        )
        assert got == expected
    reads.clear()
    kwargs = {
        "label_key": KEY,
        "categories": CATEGORIES,
        "params": CelltypistParams(n_inits=2),
        "seed": 0,
    }
    with no_whole_matrix(monkeypatch):
        got = evaluate_celltypist(train, lazy, **kwargs)
    assert sorted(reads.counts.values()) == [1] * n_blocks
    assert got == evaluate_celltypist(train, test, **kwargs)


def test_training_cells_must_be_in_memory(splits) -> None:
    from tests.evaluation.lazy_helpers import spied

    train, test = splits
    lazy, reads = spied(train)
    with pytest.raises(TypeError, match="take_rows"):
        evaluate_gene_mlp(
            lazy.X,
            _codes(train),
            test.X,
            _codes(test),
            num_classes=3,
            params=GeneMLPParams(),
        )
    with pytest.raises(TypeError, match="take_rows"):
        evaluate_celltypist(
            lazy,
            test,
            label_key=KEY,
            categories=CATEGORIES,
            params=CelltypistParams(),
        )
    assert not reads.counts


def test_nan_in_lazy_test_cells_is_refused(splits) -> None:
    from tests.evaluation.lazy_helpers import spied

    train, test = splits
    bad = test.copy()
    bad.X = bad.X.toarray()
    bad.X[40, 3] = np.nan
    lazy, _ = spied(bad)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_gene_mlp(
            train.X,
            _codes(train),
            lazy.X,
            _codes(test),
            num_classes=3,
            params=GeneMLPParams(steps=2),
        )
