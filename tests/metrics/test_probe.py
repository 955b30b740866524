"""Linear probe on genes held in memory or read lazily by row blocks."""

from __future__ import annotations

from unittest.mock import patch

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from scdd.metrics import latent
from scdd.metrics.latent import fit_latent_classifier
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


def test_the_classifier_scales_as_standard_scaler_and_only_overwrites_if_told() -> None:
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 3.0, size=(3000, 50)).astype(np.float32)
    x[:, 7] = 4.0  # a constant column keeps scale 1, as in StandardScaler
    y = rng.integers(0, 3, len(x))
    reference = StandardScaler().fit(x)
    kept = x.copy()
    with patch.object(latent, "_SCALER_CHUNK_VALUES", 50 * 128):  # 24 chunks
        scaler = fit_latent_classifier(x, y)[0]
    assert np.allclose(scaler.mean_, reference.mean_)
    assert np.allclose(scaler.scale_, reference.scale_)
    assert np.array_equal(x, kept)
    fit_latent_classifier(x, y, overwrite=True)
    assert np.allclose(x, reference.transform(kept), atol=1e-5)


def test_the_probe_predicts_as_the_scikit_learn_pipeline_and_keeps_its_input() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 60)
    x = rng.normal(size=(180, 30)).astype(np.float32) + y[:, None] * 0.3
    kept = x.copy()
    test, y_test = x[::2] + 0.1, y[::2]
    got = linear_probe(x, y, test, y_test, max_train_cells=10_000)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    predicted = pipe.fit(x, y).predict(test)
    assert got["accuracy"] == np.mean(predicted == y_test)
    assert np.array_equal(x, kept)  # standardised a copy, not the caller's cells
