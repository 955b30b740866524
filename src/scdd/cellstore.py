"""Cells on disk, read in row chunks: lazy AnnData whose ``X`` is a dask array.

Every gene matrix the pipelines pass around is an :class:`~anndata.AnnData`
with ``obs``/``var``/``uns`` in memory and ``X`` a dask array of CSR row
blocks read from the ``.h5ad`` file on demand (anndata's lazy reader reopens
the file per block, so the graph also runs on a distributed cluster). Only
what is small lives in memory: one block at a time, samples of rows, and
per-cell or per-gene vectors. Stage code uses the helpers here rather than
``adata.X`` directly, so a million-cell split costs memory O(block).

The passes (:func:`reduce_blocks`, :func:`tree_reduce`, :func:`sum_over_rows`)
are one Dask computation each, run by whichever scheduler is current: Dask's
local one in this process, or a ``distributed`` cluster's workers when the
run opened a client (:mod:`scdd.dask_engine`). :func:`blocks` and
:func:`take_matrix_rows` read on this process, a block at a time.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anndata as ad
import dask
import dask.array as da
import dask.threaded
import fsspec
import h5py
import numpy as np
import pandas as pd
import zarr
from anndata.io import sparse_dataset, write_elem
from scipy import sparse

from scdd.dask_engine import compute

#: Rows per block when a matrix is read lazily: ~5k cells x 2k nonzeros is
#: ~80 MB of CSR per block in flight.
CHUNK_ROWS = 5000

_CSR_META = sparse.csr_matrix((0, 0), dtype=np.float32)

#: A gene matrix in memory (dense or sparse) or lazy (dask CSR row blocks).
Matrix = np.ndarray | sparse.spmatrix | da.Array


def _forget_dask_thread_pools() -> None:
    """A forked child (Kedro's ParallelRunner workers) inherits dask's thread
    pools without their threads, and its first computation would wait forever
    on them: start with no pools, as a fresh process does."""
    dask.threaded.default_pool = None
    dask.threaded.pools.clear()
    dask.threaded.pools_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_dask_thread_pools)


def _as_csr(block: Any) -> sparse.csr_matrix:
    """A block as float32 CSR (dense, COO, CSC or CSR in)."""
    return sparse.csr_matrix(block, dtype=np.float32)


def lazy_matrix(x: Any, *, chunk_rows: int = CHUNK_ROWS) -> da.Array:
    """``x`` (in-memory dense/sparse, or dask) as a dask array of float32 CSR
    row blocks of ``chunk_rows`` rows; in-memory input is wrapped, not copied."""
    if isinstance(x, da.Array):
        if x.chunks[1] != (x.shape[1],):
            x = x.rechunk({1: -1})
        if isinstance(x._meta, sparse.csr_matrix) and x.dtype == np.float32:
            return x
        return x.map_blocks(_as_csr, dtype=np.float32, meta=_CSR_META)
    if not sparse.issparse(x):
        x = np.asarray(x)
    wrapped = da.from_array(x, chunks=(chunk_rows, -1), asarray=False)
    return wrapped.map_blocks(_as_csr, dtype=np.float32, meta=_CSR_META)


def is_lazy(adata: ad.AnnData) -> bool:
    """Whether ``adata.X`` is read on demand (a dask array)."""
    return isinstance(adata.X, da.Array)


def as_lazy(adata: ad.AnnData, *, chunk_rows: int = CHUNK_ROWS) -> ad.AnnData:
    """``adata`` with a lazy CSR ``X`` (its obs/var/uns shared, not copied)."""
    if is_lazy(adata) and isinstance(adata.X._meta, sparse.csr_matrix):
        return adata
    out = ad.AnnData(
        X=lazy_matrix(adata.X, chunk_rows=chunk_rows),
        obs=adata.obs,
        var=adata.var,
        uns=adata.uns,
        obsm=dict(adata.obsm),
    )
    return out


def is_zarr(path: Path | str) -> bool:
    """Whether ``path`` names a zarr AnnData store (``*.zarr``), else ``.h5ad``."""
    return str(path).rstrip("/").endswith(".zarr")


def zarr_store(path: Path | str) -> Any:
    """What zarr opens for ``path``: an absolute local path, or an fsspec
    mapper for a URL (``s3://``, ``gs://``, ``memory://``...)."""
    if fsspec.utils.get_protocol(str(path)) == "file":
        return str(Path(str(path).removeprefix("file://")).resolve())
    return fsspec.get_mapper(str(path))


def store_exists(url: Path | str) -> bool:
    """Whether a zarr store is at ``url`` (a directory or an fsspec URL); an
    fsspec protocol whose package is missing is named."""
    try:
        fs, path = fsspec.core.url_to_fs(str(url))
    except ImportError as err:
        raise ValueError(f"cannot open {str(url)!r}: {err}") from err
    return fs.isdir(path)


def store_fingerprint(url: Path | str) -> dict[str, Any]:
    """What identifies a zarr store's content without reading it: its URL and
    the size and latest modification of its files (``X`` included)."""
    fs, path = fsspec.core.url_to_fs(str(url))
    files = fs.find(path, detail=True)
    stamps = [
        str(info.get("mtime") or info.get("LastModified") or info.get("ETag") or "")
        for info in files.values()
    ]
    return {
        "url": fs.unstrip_protocol(path),
        "files": len(files),
        "bytes": sum(int(info.get("size") or 0) for info in files.values()),
        "latest": max(stamps, default=""),
    }


def _open_store(path: Path | str) -> Any:
    """The root group of an ``.h5ad`` file or a zarr store, read-only."""
    if is_zarr(path):
        return contextlib.nullcontext(zarr.open_group(zarr_store(path), mode="r"))
    return h5py.File(Path(path).resolve(), "r")


def read_lazy(path: Path | str, *, chunk_rows: int = CHUNK_ROWS) -> ad.AnnData:
    """Open an ``.h5ad`` file or a zarr store (``*.zarr``, a local path or any
    fsspec URL) with ``obs``, ``var``, ``uns`` and ``obsm`` in memory and
    ``X``, ``layers`` and ``raw.X`` as lazy row-block arrays: float32 CSR
    blocks of a sparse matrix, dense float32 blocks of a dense one (the
    cached embeddings).

    The blocks reopen the file by its absolute path (or the store by its
    URL), so a worker of a ``distributed`` cluster (whatever its working
    directory) reads them."""
    with _open_store(path) as f:

        def lazy(name: str) -> da.Array:
            elem = f[name]
            n_cols = elem.attrs["shape"][1] if "shape" in elem.attrs else elem.shape[1]
            x = ad.experimental.read_elem_lazy(elem, chunks=(chunk_rows, int(n_cols)))
            if isinstance(elem, h5py.Dataset | zarr.Array):  # dense: embeddings
                return x.astype(np.float32, copy=False)
            return lazy_matrix(x, chunk_rows=chunk_rows)

        def read(name: str, default: Any) -> Any:
            return ad.io.read_elem(f[name]) if name in f else default

        obs = read("obs", None)
        var = read("var", None)
        x = lazy("X") if "X" in f else None
        adata = ad.AnnData(
            X=x,
            obs=obs,
            var=var,
            uns=read("uns", {}),
            obsm=read("obsm", {}),
            layers={k: lazy(f"layers/{k}") for k in f.get("layers", {})},
        )
        if "raw/X" in f:  # (zarr stores an absent raw as an empty array)
            adata.raw = ad.AnnData(X=lazy("raw/X"), var=ad.io.read_elem(f["raw/var"]))
    return adata


def free_memory_bytes() -> int:
    """Memory available to new allocations (``MemAvailable``; physical pages
    where ``/proc/meminfo`` is missing)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_dense_fits(
    n_cells: int, n_genes: int, *, what: str, parameter: str, copies: int = 2
) -> None:
    """Refuse, before anything is read, to hold ``n_cells x n_genes`` dense
    float32 (``copies`` of it) when that exceeds the free memory, naming the
    ``parameter`` that caps ``n_cells``."""
    need = n_cells * n_genes * 4 * copies
    free = free_memory_bytes()
    if need > free:
        fits = max(1, free // (n_genes * 4 * copies))
        raise MemoryError(
            f"{what} would hold {n_cells:,} cells x {n_genes:,} genes dense "
            f"({need / 1e9:.1f} GB with working copies) but {free / 1e9:.1f} GB "
            f"are free; set {parameter} to at most {fits:,} "
            f"(e.g. --params {parameter}={min(fits, 50_000)})."
        )


def blocks(x: da.Array) -> Iterator[tuple[int, sparse.csr_matrix]]:
    """``(first_row, block)`` for each row block of ``x``, computed one at a time."""
    start = 0
    for i, n in enumerate(x.chunks[0]):
        yield start, x.blocks[i].compute(scheduler="synchronous")
        start += n


def take_rows(adata: ad.AnnData, rows: np.ndarray | None = None) -> ad.AnnData:
    """Rows ``rows`` (positions, any order; all when ``None``) of ``adata`` in
    memory, ``X`` as float32 CSR. Reads only the blocks that hold them."""
    rows = np.arange(adata.n_obs) if rows is None else np.asarray(rows, dtype=np.int64)
    return ad.AnnData(
        X=take_matrix_rows(adata.X, rows),
        obs=adata.obs.iloc[rows].copy(),
        var=adata.var.copy(),
        uns=dict(adata.uns),
        obsm={k: np.asarray(v)[rows] for k, v in adata.obsm.items()},
    )


def take_matrix_rows(x: Any, rows: np.ndarray, *, dense: bool = False) -> Any:
    """Row positions ``rows`` (any order, repeats allowed) of ``x`` (lazy or
    in memory) as float32 CSR (``dense``: a float32 array, each block's rows
    densified as read, so dense data never sits in memory as CSR); a lazy
    ``x`` is read only in the blocks that hold them, one block at a time."""
    rows = np.asarray(rows, dtype=np.int64)
    if not isinstance(x, da.Array):
        picked = x[rows]
        if dense:
            picked = picked.toarray() if sparse.issparse(picked) else picked
            return np.asarray(picked, dtype=np.float32)
        return _as_csr(picked)
    order = np.argsort(rows, kind="stable")
    wanted = rows[order]
    bounds = np.cumsum((0, *x.chunks[0]))
    empty = np.zeros((0, x.shape[1]), dtype=np.float32)
    parts = [empty if dense else _as_csr(empty)]
    for i in np.unique(np.searchsorted(bounds, wanted, side="right") - 1):
        inside = wanted[(wanted >= bounds[i]) & (wanted < bounds[i + 1])] - bounds[i]
        block = x.blocks[int(i)].compute(scheduler="synchronous")
        parts.append(_block_rows(block, inside, dense=dense))
    back = np.argsort(order, kind="stable")
    if dense:
        return np.concatenate(parts)[back]
    return sparse.vstack(parts, format="csr", dtype=np.float32)[back]


def _block_rows(block: Any, inside: np.ndarray, *, dense: bool) -> Any:
    """Rows ``inside`` of one block, float32: dense or CSR as asked (a dense
    block is never turned into CSR only to be densified again)."""
    if isinstance(block, np.ndarray):
        part = block[inside].astype(np.float32, copy=False)
        return part if dense else _as_csr(part)
    part = _as_csr(block)[inside]
    return part.toarray() if dense else part


def reduce_blocks(
    x: da.Array,
    per_block: Callable[..., Any],
    *block_args: np.ndarray,
) -> list[Any]:
    """``per_block(block, *arg_slices)`` for every row block, in row order.

    ``block_args`` are per-row arrays, sliced to each block's rows. One dask
    computation: every block is read once, whatever ``per_block`` returns.
    """
    return list(compute(*_block_tasks(x, per_block, block_args)))


def _block_tasks(
    x: da.Array, per_block: Callable[..., Any], row_args: tuple[np.ndarray, ...]
) -> list[Any]:
    """One delayed ``per_block(block, *arg_slices)`` per row block of ``x``."""
    bounds = np.cumsum((0, *x.chunks[0]))
    return [
        dask.delayed(per_block)(
            block, *(arg[bounds[i] : bounds[i + 1]] for arg in row_args)
        )
        for i, block in enumerate(x.to_delayed().ravel())
    ]


def map_csr_blocks(
    x: Any, fn: Callable[[sparse.csr_matrix], sparse.csr_matrix], *, n_cols: int
) -> Any:
    """``fn`` on each CSR row block of a lazy ``x`` (lazily: nothing is read), or
    on the whole of an in-memory ``x``; ``fn`` maps rows to ``n_cols`` columns."""
    if not isinstance(x, da.Array):
        return fn(_as_csr(x))
    x = lazy_matrix(x)
    return x.map_blocks(
        fn, dtype=np.float32, chunks=(x.chunks[0], (n_cols,)), meta=_CSR_META
    )


def obs_subset(adata: ad.AnnData, rows: np.ndarray, cols: np.ndarray | None = None):
    """Lazy AnnData of ``rows`` (sorted positions) and ``cols`` (bool mask or
    positions; all genes when ``None``); nothing is read."""
    x = adata.X[rows]
    var = adata.var
    if cols is not None:
        x = x[:, cols]
        var = var.iloc[np.flatnonzero(cols) if cols.dtype == bool else cols]
    return ad.AnnData(
        X=x,
        obs=adata.obs.iloc[rows].copy(),
        var=pd.DataFrame(var).copy(),
        uns=dict(adata.uns),
    )


#: Row blocks of a lazy matrix computed together when it is written: enough
#: to keep every thread busy and spread each computation's fixed cost.
WRITE_WINDOW = 8


def write_lazy(adata: ad.AnnData, target: Any, *, zarr_format: bool, **kwargs) -> None:
    """Write ``adata`` (``target``: an ``.h5ad`` path or a zarr store) with
    its lazy CSR matrices (``X``, layers) computed ``WRITE_WINDOW`` row
    blocks at a time and appended in order.

    The blocks are computed on Dask's threaded scheduler in this process,
    as anndata computes dense arrays, even when a ``distributed`` client is
    current: this process writes every block anyway, and each computation
    on a cluster hands it the whole graph (0.4 s a block at 10M cells, an
    hour for a 6M-cell split when anndata computes one block at a time; 17
    minutes eight at a time). ``kwargs`` go to ``write_h5ad``/``write_zarr``;
    an ``.h5ad`` file's compression to the blocks as well.
    """
    matrices = [("X", adata.X), *((f"layers/{k}", v) for k, v in adata.layers.items())]
    lazy = {
        name: m
        for name, m in matrices
        if is_lazy_matrix(m) and isinstance(m._meta, sparse.csr_matrix)
    }
    shell = ad.AnnData(
        X=None if "X" in lazy else adata.X,
        obs=adata.obs,
        var=adata.var,
        uns=adata.uns,
        obsm=dict(adata.obsm),
        layers={k: v for k, v in adata.layers.items() if f"layers/{k}" not in lazy},
    )
    if adata.raw is not None:
        shell.raw = adata.raw.to_adata()
    if zarr_format:
        shell.write_zarr(target, **kwargs)
        root, options = zarr.open_group(target, mode="a"), {}
    else:
        shell.write_h5ad(target, **kwargs)
        root = h5py.File(target, "a")
        options = {k: v for k, v in kwargs.items() if k.startswith("compression")}
    try:
        for name, x in lazy.items():
            _append_blocks(root, name, x, options)
    finally:
        if not zarr_format:
            root.close()


def _append_blocks(root: Any, name: str, x: da.Array, options: dict) -> None:
    """``x``'s row blocks, ``WRITE_WINDOW`` per computation, as CSR element
    ``name`` of ``root`` (int64 indices, so the file may exceed 2^31 values)."""
    n_blocks, on_disk = len(x.chunks[0]), None
    for first in range(0, n_blocks, WRITE_WINDOW):
        window = range(first, min(first + WRITE_WINDOW, n_blocks))
        blocks = (x.blocks[i] for i in window)
        parts = compute(*blocks, what=f"Writing {name}", scheduler="threads")
        for part in parts:
            csr = _as_csr(part)
            csr.indptr = csr.indptr.astype(np.int64, copy=False)
            csr.indices = csr.indices.astype(np.int64, copy=False)
            if on_disk is None:
                write_elem(root, name, csr, dataset_kwargs=options)
                on_disk = sparse_dataset(root[name])
            else:
                on_disk.append(csr)


def is_lazy_matrix(x: Any) -> bool:
    """Whether ``x`` is read on demand (a dask array)."""
    return isinstance(x, da.Array)


def row_chunks(x: Matrix, chunk_size: int) -> Iterator[tuple[int, Any]]:
    """``(first_row, rows)`` of ``x``, at most ``chunk_size`` rows each, in order.

    An in-memory ``x`` is sliced; a lazy one is read one row block at a time
    (a block larger than ``chunk_size`` is split, a smaller one is not merged).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if is_lazy_matrix(x):
        for start, block in blocks(x):
            for offset in range(0, block.shape[0], chunk_size):
                yield start + offset, block[offset : offset + chunk_size]
        return
    for start in range(0, x.shape[0], chunk_size):
        yield start, x[start : start + chunk_size]


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, tuple):
        return tuple(_add(u, v) for u, v in zip(a, b, strict=True))
    return a + b


def sum_over_rows(
    x: Matrix,
    per_chunk: Callable[..., Any],
    *row_args: np.ndarray,
    chunk_size: int = 20_000,
) -> Any:
    """``sum(per_chunk(rows, *arg_rows))`` over row chunks of ``x``.

    ``row_args`` are per-row arrays, sliced like the rows. ``per_chunk``
    returns an array, a number or a tuple of them (added element-wise); it
    is called once per chunk, on an empty chunk when ``x`` has no rows.

    In memory, chunks of ``chunk_size`` rows are summed one after the other.
    A lazy ``x`` is read in one dask computation, one task per row block,
    whose results are added pairwise (a tree): only a few partial sums are
    alive at once, whatever the number of blocks.
    """
    if not is_lazy_matrix(x):
        if x.shape[0] == 0:
            return per_chunk(x, *(arg[:0] for arg in row_args))
        total = None
        for start, rows in row_chunks(x, chunk_size):
            stop = start + rows.shape[0]
            part = per_chunk(rows, *(arg[start:stop] for arg in row_args))
            total = part if total is None else _add(total, part)
        return total
    return tree_reduce(x, per_chunk, _add, *row_args)


def tree_reduce(
    x: da.Array,
    per_block: Callable[..., Any],
    combine: Callable[[Any, Any], Any],
    *block_args: np.ndarray,
) -> Any:
    """``per_block(block, *arg_slices)`` for every row block of a lazy ``x``,
    merged pairwise by ``combine(earlier, later)`` in one dask computation:
    only a few partial results are alive at once, whatever the number of
    blocks."""
    parts = _block_tasks(lazy_matrix(x), per_block, block_args)
    while len(parts) > 1:
        parts = [
            dask.delayed(combine)(*parts[i : i + 2]) if i + 1 < len(parts) else parts[i]
            for i in range(0, len(parts), 2)
        ]
    (total,) = compute(parts[0])
    return total
