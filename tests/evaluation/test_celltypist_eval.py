"""CellTypist as an evaluation model (:mod:`scdd.evaluation.celltypist_eval`):
the arguments each training run gets, per-run results, and the label
categories scored."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from scdd.evaluation.celltypist_eval import evaluate_celltypist
from scdd.evaluation.config import CelltypistParams
from tests.conftest import make_log_splits

KEY = "cell_type"
CATEGORIES = ["type_0", "type_1", "type_2"]


@pytest.fixture(scope="module")
def splits():
    """45 training and 45 test cells in 3 separable classes, 30 genes."""
    train, test = make_log_splits(30)
    return train, test


@pytest.fixture
def train_calls(monkeypatch):
    """The keyword arguments of every ``celltypist.train`` call (still run)."""
    import celltypist

    calls: list[dict] = []
    real_train = celltypist.train

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(celltypist, "train", spy)
    return calls


def _evaluate(train, test, params: CelltypistParams, seed: int = 0, **kwargs):
    return evaluate_celltypist(
        train,
        test,
        label_key=KEY,
        categories=kwargs.pop("categories", CATEGORIES),
        params=params,
        seed=seed,
    )


def test_one_training_run_per_init_seeded_from_the_base_seed(
    splits, train_calls
) -> None:
    train, test = splits
    result = _evaluate(train, test, CelltypistParams(n_inits=3), seed=5)
    assert [c["random_state"] for c in train_calls] == [5, 6, 7]
    rows = result["per_init"]
    assert [(r["init"], r["seed"]) for r in rows] == [(0, 5), (1, 6), (2, 7)]
    for row in rows:
        assert 0.9 < row["train_accuracy"] <= 1.0
        assert 0.0 <= row["macro_f1"] <= 1.0
    for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
        values = np.array([r[metric] for r in rows])
        assert result[f"{metric}_mean"] == pytest.approx(values.mean())
        assert result[f"{metric}_std"] == pytest.approx(values.std())
    assert result["accuracy_mean"] > 0.8  # separable marker genes
    assert (result["n_train"], result["n_test"]) == (45, 45)


def test_training_arguments_and_the_mini_batch_threshold(splits, train_calls) -> None:
    """SGD without the expression check; mini-batches only strictly above
    ``mini_batch_above`` cells (45 here); ``train_kwargs`` win."""
    train, test = splits
    small = {"batch_size": 16, "batch_number": 3, "epochs": 2}  # mini-batch size
    for above in (None, 45, 44):
        params = CelltypistParams(n_inits=1, mini_batch_above=above, train_kwargs=small)
        _evaluate(train, test, params)
    assert [c["mini_batch"] for c in train_calls] == [False, False, True]
    for call in train_calls:
        assert call["use_SGD"] is True and call["check_expression"] is False
        assert call["n_jobs"] == torch.get_num_threads()
    train_calls.clear()
    _evaluate(
        train,
        test,
        CelltypistParams(
            n_inits=1,
            mini_batch_above=None,
            train_kwargs={**small, "mini_batch": True, "alpha": 0.01},
        ),
    )
    (call,) = train_calls
    assert (call["mini_batch"], call["alpha"], call["epochs"]) == (True, 0.01, 2)


def test_same_seed_same_scores(splits) -> None:
    train, test = splits
    params = CelltypistParams(n_inits=2)
    assert _evaluate(train, test, params, seed=1) == _evaluate(
        train, test, params, seed=1
    )


def test_every_category_is_scored_even_when_training_lacks_one(splits) -> None:
    """A synthetic set without ``type_2`` still scores the 3 categories: the
    missing class counts as F1 = 0 in the macro-F1 and its cells as misses."""
    train, test = splits
    two = train[(train.obs[KEY] != "type_2").to_numpy()].copy()
    result = _evaluate(two, test, CelltypistParams(n_inits=1))
    (row,) = result["per_init"]
    assert row["accuracy"] <= 35 / 45  # the 10 type_2 test cells are missed
    assert row["balanced_accuracy"] <= 2 / 3 + 1e-9
    assert row["macro_f1"] <= 2 / 3 + 1e-9
    assert row["accuracy"] > 0.6  # the other two classes are still learned
    assert result["n_train"] == 35


def test_categories_order_is_the_callers_not_the_obs_order(splits) -> None:
    """Labels stored in another category order (with an unused category) give
    the scores of the same labels in ``categories`` order."""
    train, test = splits
    shuffled = train.copy()
    shuffled.obs[KEY] = pd.Categorical(
        shuffled.obs[KEY].astype(str),
        categories=["unused", "type_2", "type_0", "type_1"],
    )
    params = CelltypistParams(n_inits=1)
    assert _evaluate(shuffled, test, params) == _evaluate(train, test, params)


def _odd_test(test):
    """``test`` with its first label outside the categories."""
    odd = test.copy()
    odd.obs[KEY] = odd.obs[KEY].astype(str)
    odd.obs.iloc[0, odd.obs.columns.get_loc(KEY)] = "type_9"
    return odd


def test_labels_outside_the_categories_are_refused(splits, train_calls) -> None:
    train, test = splits
    with pytest.raises(ValueError, match=r"test labels .*type_9.* are not among"):
        _evaluate(train, _odd_test(test), CelltypistParams(n_inits=1))
    with pytest.raises(ValueError, match=r"training labels .*type_2"):
        _evaluate(train, test, CelltypistParams(n_inits=1), categories=CATEGORIES[:2])
    assert not train_calls  # refused before any training


def test_unknown_labels_are_named_plainly(splits) -> None:
    train, test = splits
    with pytest.raises(ValueError, match=r"test labels \['type_9'\] are not among"):
        _evaluate(train, _odd_test(test), CelltypistParams(n_inits=1))


def test_celltypist_logger_level_is_restored(splits) -> None:
    train, test = splits
    chatty = logging.getLogger("celltypist")
    previous = chatty.level
    chatty.setLevel(logging.DEBUG)
    try:
        _evaluate(train, test, CelltypistParams(n_inits=1))
        assert chatty.level == logging.DEBUG
    finally:
        chatty.setLevel(previous)
