"""The shared trainer of the torch gene models (:mod:`scdd.evaluation.gene_classifier`),
driven with a tiny network so each run takes milliseconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse
from torch import nn

from scdd.evaluation.config import GeneModelParams
from scdd.evaluation.gene_classifier import (
    check_gene_split,
    dense_rows,
    evaluate_gene_classifier,
    require_in_memory,
)
from tests.conftest import make_log_splits

KEY = "cell_type"
N_GENES = 30


@pytest.fixture(scope="module")
def splits():
    """45 training and 45 test cells, 3 classes with marker genes (separable)."""
    train, test = make_log_splits(N_GENES)
    return (
        train.X,
        train.obs[KEY].cat.codes.to_numpy().astype(np.int64),
        test.X,
        test.obs[KEY].cat.codes.to_numpy().astype(np.int64),
    )


class Recorder(nn.Module):
    """A linear classifier that records the rows of every training forward."""

    def __init__(self, seen: list[int]) -> None:
        super().__init__()
        self.linear = nn.Linear(N_GENES, 3)
        self.seen = seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append(x.shape[0])
        return self.linear(x)


def _linear() -> nn.Module:
    return nn.Linear(N_GENES, 3)


def _run(splits, params: GeneModelParams, *, make_model=_linear, seed: int = 0):
    return evaluate_gene_classifier(
        make_model, *splits, num_classes=3, params=params, seed=seed
    )


def test_one_row_per_init_seeded_from_the_base_seed(splits) -> None:
    result = _run(splits, GeneModelParams(n_inits=3, steps=5, lr=1e-2), seed=7)
    rows = result["per_init"]
    assert [(r["init"], r["seed"]) for r in rows] == [(0, 7), (1, 8), (2, 9)]
    for row in rows:
        assert set(row) == {
            "init",
            "seed",
            "accuracy",
            "balanced_accuracy",
            "macro_f1",
            "train_accuracy",
        }
    accuracies = np.array([r["accuracy"] for r in rows])
    assert result["accuracy_mean"] == pytest.approx(accuracies.mean())
    assert result["accuracy_std"] == pytest.approx(accuracies.std())  # ddof=0
    assert (result["n_train"], result["n_test"]) == (45, 45)


def test_separable_classes_are_learned_well_above_chance(splits) -> None:
    result = _run(splits, GeneModelParams(n_inits=2, steps=60, lr=5e-2))
    assert result["accuracy_mean"] > 0.9  # chance: 20/45 for the largest class
    assert result["balanced_accuracy_mean"] > 0.9
    assert all(row["train_accuracy"] > 0.9 for row in result["per_init"])


def test_same_seed_same_result_other_seed_other_network(splits) -> None:
    params = GeneModelParams(n_inits=2, steps=3, lr=1e-3, batch_size=16)
    first = _run(splits, params, seed=3)
    assert _run(splits, params, seed=3) == first
    # the inits differ from each other, and from a run with another seed
    nets: list[nn.Module] = []

    def keep() -> nn.Module:
        nets.append(_linear())
        return nets[-1]

    _run(splits, params, make_model=keep, seed=3)
    _run(splits, params, make_model=keep, seed=4)
    weights = [net.weight.detach().clone() for net in nets]
    assert not torch.equal(weights[0], weights[1])  # seeds 3 and 4 of run 1
    assert torch.equal(weights[1], weights[2])  # seed 4: init 1 of 3, init 0 of 4
    assert not torch.equal(weights[0], weights[3])


def test_global_rng_is_restored(splits) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _run(splits, GeneModelParams(n_inits=2, steps=3, batch_size=16))
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())


def test_small_sets_train_full_batch_large_ones_on_mini_batches(splits) -> None:
    seen: list[int] = []
    _run(
        splits,
        GeneModelParams(n_inits=1, steps=4, batch_size=45),
        make_model=lambda: Recorder(seen),
    )
    assert seen == [45] * 4  # 45 cells <= batch_size: the whole set each step
    seen.clear()
    _run(
        splits,
        GeneModelParams(n_inits=1, steps=7, batch_size=16),
        make_model=lambda: Recorder(seen),
    )
    # ceil(45 / 16) = 3 batches an epoch (15 rows each), epochs repeat
    assert seen == [15] * 7


def test_training_takes_the_run_thread_count_and_follows_it(
    splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reference on thousands of cells is 1.5-1.9x faster on 2 threads than
    on 1 (docs/scale.md): the runs train on the run's count, and look at the
    free cores again at every step."""
    counts: list[int] = []
    monkeypatch.setattr(
        "scdd.evaluation.gene_classifier.follow_cores",
        lambda: counts.append(torch.get_num_threads()),
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _run(splits, GeneModelParams(n_inits=2, steps=3, batch_size=16))
    finally:
        torch.set_num_threads(previous)
    assert counts == [2] * 6


def test_prediction_chunks_do_not_change_the_scores(splits) -> None:
    base = {"n_inits": 2, "steps": 10, "lr": 1e-2}
    whole = _run(splits, GeneModelParams(**base, chunk_size=4096))
    chunked = _run(splits, GeneModelParams(**base, chunk_size=7))
    assert chunked == whole


def test_sparse_and_dense_inputs_agree(splits) -> None:
    params = GeneModelParams(n_inits=1, steps=5, batch_size=16)
    sparse_run = _run(splits, params)
    x, y, x_test, y_test = splits
    dense_run = _run((x.toarray(), y, sparse.csc_matrix(x_test), y_test), params)
    assert dense_run == sparse_run


def test_bad_inputs_are_refused(splits) -> None:
    x, y, x_test, y_test = splits
    params = GeneModelParams(n_inits=1, steps=1)

    def run(*args):
        return evaluate_gene_classifier(_linear, *args, num_classes=3, params=params)

    with pytest.raises(ValueError, match="gene counts differ: 30 vs 10"):
        run(x, y, x_test[:, :10], y_test)
    with pytest.raises(ValueError, match=r"ints in \[0, 3\)"):
        run(x, y, x_test, y_test + 1)
    with pytest.raises(ValueError, match="ints in"):
        run(x, y.astype(np.float64), x_test, y_test)
    with pytest.raises(ValueError, match=r"\[n\] labels"):
        run(x, y[:-1], x_test, y_test)
    bad = x.toarray()
    bad[3, 4] = np.inf
    with pytest.raises(ValueError, match="train_x contains NaN or inf"):
        run(bad, y, x_test, y_test)


def test_check_gene_split_and_dense_rows() -> None:
    x = sparse.csr_matrix(np.arange(12, dtype=np.float64).reshape(4, 3))
    labels = check_gene_split(x, np.array([0, 1, 1, 0], dtype=np.int32), 2, "x")
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 1, 0]
    with pytest.raises(ValueError, match="non-empty"):
        check_gene_split(x[:0], np.array([], dtype=np.int64), 2, "x")
    block = dense_rows(x, np.array([3, 1]))
    assert block.dtype == np.float32 and block.flags.c_contiguous
    np.testing.assert_array_equal(block, [[9, 10, 11], [3, 4, 5]])


def test_lazy_training_cells_are_refused() -> None:
    from scdd.cellstore import lazy_matrix

    lazy = lazy_matrix(sparse.csr_matrix(np.ones((10, 3), dtype=np.float32)))
    with pytest.raises(TypeError, match="my model: train_x must be in memory"):
        require_in_memory(lazy, "my model")
    require_in_memory(np.ones((2, 2)), "my model")  # in memory: accepted
