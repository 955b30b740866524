from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from kedro.io import DatasetError
from scipy import sparse

from scdd import cellstore as cs
from scdd.datasets import H5ADDataset


def _written(tmp_path: Path, adata: ad.AnnData) -> Path:
    adata.layers["counts"] = adata.X.copy()
    adata.raw = adata[:, :10].copy()
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    return path


def test_read_lazy_reads_nothing_until_asked(tmp_path: Path, counts_adata) -> None:
    path = _written(tmp_path, counts_adata)
    lazy = cs.read_lazy(path, chunk_rows=7)
    assert cs.is_lazy(lazy) and lazy.X.chunks[0][:2] == (7, 7)
    assert list(lazy.obs_names) == list(counts_adata.obs_names)
    for x, ref in (
        (lazy.X, counts_adata.X),
        (lazy.layers["counts"], counts_adata.layers["counts"]),
        (lazy.raw.X, counts_adata.raw.X),
    ):
        np.testing.assert_array_equal(x.compute().toarray(), ref.toarray())


def test_take_rows_in_the_order_given(counts_adata) -> None:
    lazy = cs.as_lazy(counts_adata, chunk_rows=7)
    rows = np.array([50, 3, 89, 0])
    got = cs.take_rows(lazy, rows)
    assert not cs.is_lazy(got) and sparse.isspmatrix_csr(got.X)
    np.testing.assert_array_equal(got.X.toarray(), counts_adata.X[rows].toarray())
    assert list(got.obs_names) == list(counts_adata.obs_names[rows])


def test_blocks_cover_every_row_once(counts_adata) -> None:
    x = cs.lazy_matrix(counts_adata.X, chunk_rows=13)
    starts, parts = zip(*cs.blocks(x), strict=True)
    assert starts == tuple(range(0, 90, 13))
    np.testing.assert_array_equal(
        sparse.vstack(parts).toarray(), counts_adata.X.toarray()
    )


def test_reduce_blocks_slices_per_row_arrays(counts_adata) -> None:
    x = cs.lazy_matrix(counts_adata.X, chunk_rows=20)
    labels = np.arange(90)
    parts = cs.reduce_blocks(x, lambda block, rows: (block.shape[0], rows[0]), labels)
    assert parts == [(20, 0), (20, 20), (20, 40), (20, 60), (10, 80)]


def test_lazy_save_is_written_block_by_block(tmp_path: Path, counts_adata) -> None:
    lazy = cs.as_lazy(counts_adata, chunk_rows=7)
    ds = H5ADDataset(filepath=str(tmp_path / "out.h5ad"), lazy=True, chunk_rows=11)
    ds.save(lazy)
    back = ds.load()
    assert cs.is_lazy(back) and back.X.chunks[0][0] == 11
    np.testing.assert_array_equal(back.X.compute().toarray(), counts_adata.X.toarray())


def test_killed_write_leaves_no_half_written_store(
    tmp_path: Path, counts_adata
) -> None:
    """A failure after some blocks were written (disk full, a killed worker)
    leaves neither the target nor a temporary file behind."""
    lazy = cs.as_lazy(counts_adata, chunk_rows=7)
    calls = []

    def fail_on_third(block):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("No space left on device")
        return block

    lazy.X = lazy.X.map_blocks(fail_on_third, dtype=np.float32, meta=lazy.X._meta)
    with pytest.raises(DatasetError, match="No space left"):
        H5ADDataset(filepath=str(tmp_path / "split.h5ad")).save(lazy)
    assert len(calls) >= 3  # a window's blocks may run side by side
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", ["h5ad", "zarr"])
def test_lazy_matrices_are_written_a_window_of_blocks_at_a_time(
    tmp_path: Path, counts_adata, monkeypatch, suffix: str
) -> None:
    """X and lazy layers: one Dask computation per WRITE_WINDOW blocks (not
    one per block), appended in row order; raw and obs as anndata writes them."""
    monkeypatch.setattr(cs, "WRITE_WINDOW", 4)
    computations = []
    real = cs.compute
    monkeypatch.setattr(
        cs, "compute", lambda *c, **k: computations.append(len(c)) or real(*c, **k)
    )
    lazy = cs.as_lazy(counts_adata, chunk_rows=7)  # 13 blocks
    counts = counts_adata.X * 2
    lazy.layers["counts"] = cs.lazy_matrix(counts, chunk_rows=7)
    lazy.raw = counts_adata[:, :10].copy()
    path = tmp_path / f"out.{suffix}"
    H5ADDataset(filepath=str(path)).save(lazy)
    assert computations == [4, 4, 4, 1] * 2
    back = ad.read_zarr(path) if suffix == "zarr" else ad.read_h5ad(path)
    np.testing.assert_array_equal(back.X.toarray(), counts_adata.X.toarray())
    np.testing.assert_array_equal(back.layers["counts"].toarray(), counts.toarray())
    np.testing.assert_array_equal(
        back.raw.X.toarray(), counts_adata.X[:, :10].toarray()
    )
    assert list(back.obs_names) == list(counts_adata.obs_names)


def _rows_in_blocks(x) -> int:
    return sum(cs.reduce_blocks(x, lambda block: block.shape[0]))


def test_forked_workers_can_read_blocks(counts_adata) -> None:
    """Kedro's ParallelRunner forks after the parent used dask's thread pool;
    the inherited pool has no threads, and the child waited forever on it."""
    import multiprocessing

    x = cs.lazy_matrix(counts_adata.X, chunk_rows=7)
    assert _rows_in_blocks(x) == 90  # the parent's pool exists now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_rows_in_blocks, (x,)).get(timeout=30) == 90


def test_sum_over_rows_same_lazy_or_in_memory(counts_adata) -> None:
    labels = counts_adata.obs["cell_type"].cat.codes.to_numpy()

    def per_class(rows, lab):
        return np.bincount(lab, weights=np.asarray(rows.sum(1)).ravel(), minlength=3)

    whole = cs.sum_over_rows(counts_adata.X, per_class, labels, chunk_size=11)
    lazy = cs.sum_over_rows(
        cs.lazy_matrix(counts_adata.X, chunk_rows=7), per_class, labels
    )
    np.testing.assert_allclose(lazy, whole)
    np.testing.assert_allclose(whole.sum(), counts_adata.X.sum())


def test_row_chunks_split_large_blocks(counts_adata) -> None:
    x = cs.lazy_matrix(counts_adata.X, chunk_rows=40)
    starts = [start for start, _ in cs.row_chunks(x, 25)]
    assert starts == [0, 25, 40, 65, 80]
    assert [s for s, _ in cs.row_chunks(counts_adata.X, 25)] == [0, 25, 50, 75]


def test_obs_subset_reads_nothing(counts_adata) -> None:
    lazy = cs.as_lazy(counts_adata, chunk_rows=7)
    sub = cs.obs_subset(lazy, np.array([1, 5, 80]), np.arange(60) < 10)
    assert cs.is_lazy(sub) and sub.shape == (3, 10)
    np.testing.assert_array_equal(
        sub.X.compute().toarray(), counts_adata.X[[1, 5, 80]][:, :10].toarray()
    )


def test_too_large_for_memory_names_the_parameter(monkeypatch) -> None:
    assert 0 < cs.free_memory_bytes()
    monkeypatch.setattr(cs, "free_memory_bytes", lambda: 8 * 10**9)
    cs.check_dense_fits(50_000, 12_500, what="x", parameter="p")  # 5 GB: fits
    with pytest.raises(MemoryError, match=r"700,000 cells.*set p to at most 80,000"):
        cs.check_dense_fits(700_000, 12_500, what="The references", parameter="p")


@pytest.mark.parametrize("lazy", [False, True])
def test_dense_rows_are_the_csr_rows_densified(lazy: bool) -> None:
    x = np.random.default_rng(0).normal(size=(23, 4)).astype(np.float32)
    source = cs.lazy_matrix(x, chunk_rows=5) if lazy else x
    rows = np.array([22, 0, 7, 7, 13])
    got = cs.take_matrix_rows(source, rows, dense=True)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_array_equal(got, x[rows])
    np.testing.assert_array_equal(got, cs.take_matrix_rows(source, rows).toarray())


def test_a_dense_matrix_reads_as_dense_blocks(tmp_path: Path) -> None:
    """Cached embeddings (dense on disk) stay dense: no CSR of every value."""
    z = np.random.default_rng(0).normal(size=(23, 4)).astype(np.float32)
    path = tmp_path / "z.h5ad"
    ad.AnnData(z).write_h5ad(path)
    lazy = cs.read_lazy(path, chunk_rows=5)
    assert isinstance(lazy.X._meta, np.ndarray) and lazy.X.dtype == np.float32
    assert lazy.X.chunks[0][:2] == (5, 5)
    rows = np.array([22, 0, 7])
    np.testing.assert_array_equal(
        cs.take_matrix_rows(lazy.X, rows, dense=True), z[rows]
    )
    np.testing.assert_array_equal(cs.take_matrix_rows(lazy.X, rows).toarray(), z[rows])
