import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from kedro.io import DatasetError, Version

from scdd.datasets import H5ADDataset


def test_round_trip(tmp_path: Path, counts_adata: ad.AnnData) -> None:
    ds = H5ADDataset(filepath=str(tmp_path / "a.h5ad"))
    assert not ds.exists()
    ds.save(counts_adata)
    assert ds.exists()
    back = ds.load()
    assert back.shape == counts_adata.shape
    np.testing.assert_array_equal(back.X.toarray(), counts_adata.X.toarray())
    assert list(back.obs["cell_type"]) == list(counts_adata.obs["cell_type"])


def test_versioned_saves_keep_both(tmp_path: Path, counts_adata: ad.AnnData) -> None:
    path = tmp_path / "v.h5ad"
    H5ADDataset(
        filepath=str(path), version=Version(None, "2026-01-01T00.00.00.000Z")
    ).save(counts_adata)
    H5ADDataset(
        filepath=str(path), version=Version(None, "2026-01-02T00.00.00.000Z")
    ).save(counts_adata[:10].copy())
    latest = H5ADDataset(filepath=str(path), version=Version(None, None)).load()
    assert latest.n_obs == 10
    first = H5ADDataset(
        filepath=str(path), version=Version("2026-01-01T00.00.00.000Z", None)
    ).load()
    assert first.n_obs == counts_adata.n_obs


def test_lazy_load_reads_blocks_on_demand(
    tmp_path: Path, counts_adata: ad.AnnData
) -> None:
    path = tmp_path / "b.h5ad"
    H5ADDataset(filepath=str(path)).save(counts_adata)
    back = H5ADDataset(filepath=str(path), lazy=True, chunk_rows=32).load()
    assert back.X.chunks[0] == (32, 32, 26)
    assert list(back.obs["cell_type"]) == list(counts_adata.obs["cell_type"])
    np.testing.assert_array_equal(back.X.compute().toarray(), counts_adata.X.toarray())
    with pytest.raises(DatasetError, match="chunk_rows"):
        H5ADDataset(filepath=str(path), lazy=True, chunk_rows=0)


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_lazy_matrix_is_written_with_the_configured_compression(
    tmp_path: Path, counts_adata: ad.AnnData, compression: str
) -> None:
    import h5py

    source = tmp_path / "source.h5ad"
    H5ADDataset(filepath=str(source)).save(counts_adata)
    lazy = H5ADDataset(filepath=str(source), lazy=True, chunk_rows=32).load()
    path = tmp_path / f"{compression}.h5ad"
    H5ADDataset(filepath=str(path), save_args={"compression": compression}).save(lazy)
    with h5py.File(path) as f:
        assert f["X/data"].compression == compression
    np.testing.assert_array_equal(
        ad.read_h5ad(path).X.toarray(), counts_adata.X.toarray()
    )


@pytest.mark.parametrize("dense", [True, False])
def test_lazy_blocks_are_computed_on_threads_that_exit_with_the_save(
    tmp_path: Path, dense: bool
) -> None:
    """A thread that ran torch and stays alive slows every later torch op of
    the process (see ``scdd.threads.transient_dask_threads``)."""
    import threading

    import dask.array as da
    from scipy import sparse

    ran_on: set[threading.Thread] = set()

    def block(b: np.ndarray) -> np.ndarray:
        ran_on.add(threading.current_thread())
        return b if dense else sparse.csr_matrix(b)

    x = da.ones((64, 4), chunks=(16, 4), dtype=np.float32).map_blocks(block)
    H5ADDataset(filepath=str(tmp_path / "x.h5ad")).save(ad.AnnData(X=x))
    pool = ran_on - {threading.main_thread()}
    assert pool and not any(t.is_alive() for t in pool)


def test_saves_in_parallel_share_the_transient_threads(tmp_path: Path) -> None:
    """Kedro's --async saves a node's outputs at once: a short save that
    ends while a long one still computes leaves it its threads, and every
    thread exits after the last save."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import dask.array as da
    from scipy import sparse

    ran_on: set[threading.Thread] = set()
    short_started = threading.Event()

    def block(b: np.ndarray) -> sparse.csr_matrix:
        ran_on.add(threading.current_thread())
        short_started.set()
        time.sleep(0.02)
        return sparse.csr_matrix(b)

    def save(name: str, rows: int) -> None:
        x = da.ones((rows, 4), chunks=(8, 4), dtype=np.float32).map_blocks(block)
        H5ADDataset(filepath=str(tmp_path / name)).save(ad.AnnData(X=x))

    with ThreadPoolExecutor(2) as savers:
        short = savers.submit(save, "short.h5ad", 16)
        short_started.wait()
        long = savers.submit(save, "long.h5ad", 160)  # 20 blocks: 3 windows
        short.result(), long.result()
    assert ad.read_h5ad(tmp_path / "long.h5ad").X.sum() == 160 * 4
    workers = ran_on - {threading.main_thread()}
    assert not any(t.is_alive() for t in workers)


def test_failed_save_leaves_old_file_and_no_temp(
    tmp_path: Path, counts_adata: ad.AnnData, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.h5ad"
    ds = H5ADDataset(filepath=str(path))
    ds.save(counts_adata)
    before = path.read_bytes()

    def crash(self, filename, **kwargs):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", crash)
    with pytest.raises(DatasetError, match="disk full"):
        ds.save(counts_adata)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.h5ad"]


def test_corrupt_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.h5ad"
    path.write_text("not an hdf5 file")
    with pytest.raises(DatasetError, match="broken.h5ad"):
        H5ADDataset(filepath=str(path)).load()


def test_var_label_names_the_columns_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    embeddings = ad.AnnData(np.zeros((417, 128), dtype=np.float32))
    ds = H5ADDataset(filepath=str(tmp_path / "z.h5ad"), var_label="latent dimensions")
    with caplog.at_level(logging.INFO, logger="scdd.datasets.h5ad_dataset"):
        ds.save(embeddings)
        ds.load()
    wrote, read = (r.getMessage().split(": ")[-1] for r in caplog.records)
    assert wrote.startswith("417 cells x 128 latent dimensions in ")
    assert wrote.endswith(" cells/s)")
    assert read == "417 cells x 128 latent dimensions"


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nope.h5ad"):
        H5ADDataset(filepath=str(tmp_path / "nope.h5ad")).load()


def test_bundled_default_is_offline_and_log_normalised() -> None:
    ds = H5ADDataset(filepath="scanpy://pbmc68k_reduced")
    assert ds.exists()
    adata = ds.load()
    assert adata.shape == (700, 765)
    assert adata.obs["bulk_labels"].nunique() == 10
    assert adata.X.min() >= 0
    assert adata.var["highly_variable"].sum() == 309  # the genes' annotations
    with pytest.raises(DatasetError, match="read-only"):
        ds.save(adata)


def test_unknown_bundled_dataset() -> None:
    with pytest.raises(DatasetError, match="pbmc68k_reduced"):
        H5ADDataset(filepath="scanpy://pbmc3k").load()


@pytest.mark.parametrize("where", ["local", "url"])
def test_zarr_store_round_trip_lazy_and_in_memory(
    tmp_path: Path, counts_adata: ad.AnnData, where: str
) -> None:
    """A .zarr filepath: a local directory or any fsspec URL (memory:// here)."""
    source = tmp_path / "source.h5ad"
    H5ADDataset(filepath=str(source)).save(counts_adata)
    lazy = H5ADDataset(filepath=str(source), lazy=True, chunk_rows=32).load()
    target = str(tmp_path / "a.zarr") if where == "local" else "memory:///run/a.zarr"
    ds = H5ADDataset(filepath=target, lazy=True, chunk_rows=32)
    assert not ds.exists()
    ds.save(lazy)  # written block by block from the lazy h5ad
    assert ds.exists()
    back = ds.load()
    assert back.X.chunks[0] == (32, 32, 26)
    np.testing.assert_array_equal(back.X.compute().toarray(), counts_adata.X.toarray())
    assert list(back.obs["cell_type"]) == list(counts_adata.obs["cell_type"])
    whole = H5ADDataset(filepath=target).load()
    np.testing.assert_array_equal(whole.X.toarray(), counts_adata.X.toarray())
    ds.save(counts_adata[:10].copy())  # replaced whole, no temporary left
    assert H5ADDataset(filepath=target).load().n_obs == 10
    if where == "url":
        import fsspec

        fs = fsspec.filesystem("memory")
        assert fs.ls("/run", detail=False) == ["/run/a.zarr"]
        fs.rm("/run", recursive=True)


def test_failed_zarr_save_to_a_url_leaves_nothing(
    counts_adata: ad.AnnData, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fsspec

    def crash(self, store, **kwargs):
        store["X/.zattrs"] = b"{}"  # half a store, beside the target
        raise OSError("bucket full")

    monkeypatch.setattr(ad.AnnData, "write_zarr", crash)
    with pytest.raises(DatasetError, match="bucket full"):
        H5ADDataset(filepath="memory:///crash/a.zarr").save(counts_adata)
    assert fsspec.filesystem("memory").find("/crash") == []


def test_h5ad_at_a_url_is_refused_with_the_fix() -> None:
    with pytest.raises(DatasetError, match=r"on local disk.*zarr store"):
        H5ADDataset(filepath="s3://bucket/train.h5ad")
