"""Real cells for the evaluation: samples, lazy alignment and row chunks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from scdd.cellstore import is_lazy, take_rows
from scdd.evaluation.cells import aligned_cells, sample_cells
from scdd.metrics.chunks import row_chunks, sum_over_rows
from scdd.models.foundation import align_genes
from scdd.preprocessing import log_normalise
from tests.conftest import make_counts_adata
from tests.evaluation.lazy_helpers import no_whole_matrix, spied


@pytest.fixture
def cells():
    return log_normalise(make_counts_adata((20, 15, 10), n_genes=30, seed=0))


def test_the_guard_refuses_a_whole_lazy_matrix(cells, monkeypatch) -> None:
    lazy, _ = spied(cells)
    with no_whole_matrix(monkeypatch), pytest.raises(AssertionError, match="block"):
        np.asarray(lazy.X)
    with no_whole_matrix(monkeypatch), pytest.raises(AssertionError, match="block"):
        lazy.X[:10].compute()  # two blocks at once: refused too
    with no_whole_matrix(monkeypatch):
        lazy.X.blocks[1].compute()  # one block at a time is fine


def test_lazy_alignment_matches_align_genes(cells, monkeypatch) -> None:
    # F's gene order: a shuffled subset of the data's genes plus unknown ones
    rng = np.random.default_rng(0)
    order = [*rng.permutation(cells.var_names)[:25], "absent_1", "absent_2"]
    lazy, reads = spied(cells)
    with no_whole_matrix(monkeypatch):
        aligned = aligned_cells(lazy, gene_order=order, min_overlap=20)
        assert is_lazy(aligned) and not reads.counts  # nothing read yet
        got = take_rows(aligned).X.toarray()
    expected = align_genes(cells, gene_order=order, min_overlap=20)
    assert list(aligned.var_names) == order
    np.testing.assert_array_equal(got, expected.X.toarray())
    assert aligned.obs.equals(cells.obs)
    # the same order: the same (lazy) matrix; too few shared genes: align_genes'
    # error
    same = aligned_cells(lazy, gene_order=list(cells.var_names), min_overlap=20)
    assert same.X is lazy.X
    with pytest.raises(ValueError, match="min_gene_overlap"):
        aligned_cells(lazy, gene_order=order, min_overlap=26)
    # in memory: align_genes itself
    assert aligned_cells(cells, gene_order=list(cells.var_names), min_overlap=1) is (
        cells
    )


def test_sample_cells_reads_only_the_sample(cells) -> None:
    lazy, reads = spied(cells)
    rows = np.array([1, 2, 30, 44])
    sample = sample_cells(lazy, rows)
    assert not is_lazy(sample) and sorted(reads.counts) == [0, 4, 6]
    np.testing.assert_array_equal(sample.X.toarray(), cells.X[rows].toarray())
    assert list(sample.obs_names) == list(cells.obs_names[rows])
    assert sample_cells(cells, np.arange(cells.n_obs)) is cells
    np.testing.assert_array_equal(
        sample_cells(cells, rows).X.toarray(), cells.X[rows].toarray()
    )


def test_row_chunks_and_sums_agree_in_memory_and_lazy(cells, monkeypatch) -> None:
    lazy, reads = spied(cells)
    x = cells.X
    for chunk_size in (3, 5, 100):
        with no_whole_matrix(monkeypatch):
            parts = list(row_chunks(lazy.X, chunk_size))
        assert max(p.shape[0] for _, p in parts) <= min(chunk_size, 7)
        assert [start for start, _ in parts] == sorted(start for start, _ in parts)
        got = sparse.vstack([p for _, p in parts]).toarray()
        np.testing.assert_array_equal(got, x.toarray())
        in_memory = [p.shape[0] for _, p in row_chunks(x, chunk_size)]
        assert sum(in_memory) == x.shape[0] and max(in_memory) <= chunk_size

    def per_chunk(block, weights):
        return (np.asarray(block.sum(0)).ravel(), float(weights.sum()))

    weights = np.arange(x.shape[0], dtype=float)
    reads.clear()
    with no_whole_matrix(monkeypatch):
        lazy_sum = sum_over_rows(lazy.X, per_chunk, weights)
    assert sorted(reads.counts.values()) == [1] * 7  # one read per block
    for total in (lazy_sum, sum_over_rows(x, per_chunk, weights, chunk_size=4)):
        np.testing.assert_allclose(total[0], np.asarray(x.sum(0)).ravel(), rtol=1e-6)
        assert total[1] == weights.sum()
