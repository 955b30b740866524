"""Linear probe on genes held in memory or read lazily by row blocks."""

from __future__ import annotations

import numpy as np

from scdd.metrics.probe import linear_probe
from scdd.preprocessing import log_normalise
from tests.conftest import make_counts_adata
from tests.evaluation.lazy_helpers import no_whole_matrix, spied


def test_lazy_splits_probe_like_in_memory_ones(monkeypatch) -> None:
    train = log_normalise(
        make_counts_adata((30, 20, 15), n_genes=40, seed=0),
        target_sum=1e4,
        keep_counts=False,
    )
    test = log_normalise(
        make_counts_adata((30, 20, 15), n_genes=40, seed=1),
        target_sum=1e4,
        keep_counts=False,
    )
    y_train = train.obs["cell_type"].cat.codes.to_numpy()
    y_test = test.obs["cell_type"].cat.codes.to_numpy()
    lazy_train, train_reads = spied(train)
    lazy_test, test_reads = spied(test)
    for cap in (20_000, 30):  # every training cell, then a stratified sample
        expected = linear_probe(
            train.X, y_train, test.X, y_test, max_train_cells=cap, chunk_size=16
        )
        with no_whole_matrix(monkeypatch):
            got = linear_probe(
                lazy_train.X,
                y_train,
                lazy_test.X,
                y_test,
                max_train_cells=cap,
                chunk_size=16,
            )
        assert got == expected and expected["accuracy"] > 0.9
    assert set(test_reads.counts.values()) == {2}  # each test block once a call
    assert np.isin(list(train_reads.counts), np.arange(10)).all()
