"""Kedro dataset for AnnData ``.h5ad`` files, plus scanpy's bundled datasets."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import anndata as ad
import fsspec
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)

from scdd.atomic import atomic_path
from scdd.cellstore import (
    CHUNK_ROWS,
    as_lazy,
    is_zarr,
    read_lazy,
    write_lazy,
    zarr_store,
)
from scdd.dask_engine import worker_failures_explained
from scdd.threads import transient_dask_threads

logger = logging.getLogger(__name__)

#: Prefix of a ``filepath`` naming a dataset shipped inside the scanpy package.
SCANPY_PREFIX = "scanpy://"
#: The datasets :func:`load_bundled` reads (``scanpy://<name>``).
BUNDLED = ("pbmc68k_reduced",)


def load_bundled(name: str) -> ad.AnnData:
    """Read a dataset that ships inside the installed scanpy package (offline).

    ``pbmc68k_reduced`` comes back as its log-normalised ``.raw`` matrix (765
    genes) with the cell and gene annotations (``highly_variable``...),
    because its ``X`` is scaled (negative) and unusable as expression.
    """
    import scanpy as sc

    if name not in BUNDLED:
        raise DatasetError(
            f"Unknown bundled dataset '{SCANPY_PREFIX}{name}'; "
            f"available: {', '.join(SCANPY_PREFIX + b for b in BUNDLED)}."
        )
    adata = sc.datasets.pbmc68k_reduced()
    out = adata.raw.to_adata()
    out.obs = adata.obs.copy()
    out.var = adata.var.copy()  # the same genes as .raw
    out.uns = {}
    return out


class H5ADDataset(AbstractVersionedDataset[ad.AnnData, ad.AnnData]):
    """Load and save :class:`~anndata.AnnData` as an ``.h5ad`` file on local
    disk, or as a zarr store (``filepath`` ending in ``.zarr``: a local
    directory or any fsspec URL, e.g. ``s3://bucket/project/train.zarr``,
    which the workers of a Dask cluster read without a shared filesystem).

    Saving writes a temporary file (or store) beside the target and renames
    it, so an interrupted save never leaves a truncated file; on an object
    store, where nothing renames, the temporary store is moved into place once
    complete and removed on failure. An AnnData whose ``X`` is a dask array is
    written block by block, never whole in memory (a worker death Dask gives
    up on fails the save with a message that says how to resume:
    :func:`scdd.dask_engine.worker_failures_explained`).
    ``lazy=True`` loads ``obs``/``var``/``uns`` into memory and leaves ``X``
    (and ``layers``, ``raw.X``) on disk as dask arrays of ``chunk_rows``-row
    CSR blocks (:func:`scdd.cellstore.read_lazy`): how the pipelines read gene
    matrices of any size. A ``filepath`` of ``scanpy://pbmc68k_reduced`` reads
    scanpy's bundled PBMC dataset (load only). ``save_args`` go to
    ``write_h5ad`` (default ``compression: gzip``) or ``write_zarr``.
    ``var_label`` names the columns in the log lines (``genes``; ``latent
    dimensions`` for embeddings).

    Example catalog entry::

        preprocessed_train:
          type: scdd.datasets.H5ADDataset
          filepath: data/05_model_input/train.h5ad
          lazy: true
    """

    def __init__(
        self,
        *,
        filepath: str,
        lazy: bool = False,
        chunk_rows: int = CHUNK_ROWS,
        save_args: dict[str, Any] | None = None,
        var_label: str = "genes",
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._bundled = (
            filepath[len(SCANPY_PREFIX) :]
            if filepath.startswith(SCANPY_PREFIX)
            else None
        )
        self._raw_filepath = filepath
        self._zarr = is_zarr(filepath)
        protocol, path = get_protocol_and_path(
            "bundled.h5ad" if self._bundled else filepath, version
        )
        if protocol != "file" and not self._zarr:
            raise DatasetError(
                f"An .h5ad file must be on local disk, got '{filepath}'; copy it "
                "to local disk, or keep the data as a zarr store (a filepath "
                "ending in .zarr may be any fsspec URL)."
            )
        if chunk_rows < 1:
            raise DatasetError(f"chunk_rows must be >= 1, got {chunk_rows}.")
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol)
        self._lazy = lazy
        self._chunk_rows = chunk_rows
        self._var_label = var_label
        default_args = {} if self._zarr else {"compression": "gzip"}
        self._save_args = {**default_args, **(save_args or {})}
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.isdir if self._zarr else self._fs.isfile,
            glob_function=self._fs.glob,
        )

    def _url(self, path: PurePosixPath) -> str:
        """A local path, or the URL (protocol included) fsspec and zarr open."""
        path = get_filepath_str(path, self._protocol)
        return path if self._protocol == "file" else f"{self._protocol}://{path}"

    def load(self) -> ad.AnnData:
        if self._bundled is not None:
            adata = load_bundled(self._bundled)
            return as_lazy(adata, chunk_rows=self._chunk_rows) if self._lazy else adata
        url = self._url(self._get_load_path())
        if not self._fs.exists(url):
            raise DatasetError(
                f"No such file: '{url}'. Check the path (data.input) and that "
                "it is relative to the project root or absolute."
            )
        try:
            if self._lazy:
                adata = read_lazy(url, chunk_rows=self._chunk_rows)
            elif self._zarr:
                adata = ad.read_zarr(zarr_store(url))
            else:
                adata = ad.read_h5ad(url)
        except Exception as exc:  # h5py/zarr/anndata raise many kinds
            kind = (
                "a zarr AnnData store" if self._zarr else "an .h5ad (AnnData HDF5) file"
            )
            raise DatasetError(
                f"Cannot read '{url}' as {kind}: {exc}. Convert the data with "
                "anndata (e.g. `adata.write_h5ad(...)` or `adata.write_zarr(...)`)."
            ) from exc
        logger.info("Read %s: %d cells x %d %s", url, *adata.shape, self._var_label)
        return adata

    def save(self, data: ad.AnnData) -> None:
        if self._bundled is not None:
            raise DatasetError(f"'{self._raw_filepath}' is read-only.")
        if not isinstance(data, ad.AnnData):
            raise DatasetError(
                f"H5ADDataset saves AnnData objects, got {type(data).__name__}."
            )
        url = self._url(self._get_save_path())
        start = time.perf_counter()
        # a lazy X is computed block by block as it is written, on threads of
        # this process that exit with the write
        with transient_dask_threads(), worker_failures_explained(f"Writing {url}"):
            if self._protocol != "file":
                self._save_remote(data, url)
            else:
                with atomic_path(Path(url), directory=self._zarr) as tmp:
                    write_lazy(data, tmp, zarr_format=self._zarr, **self._save_args)
        seconds = time.perf_counter() - start
        logger.info(
            "Wrote %s: %d cells x %d %s in %.1f s (%.0f cells/s)",
            url,
            *data.shape,
            self._var_label,
            seconds,
            data.n_obs / max(seconds, 1e-9),
        )

    def _save_remote(self, data: ad.AnnData, url: str) -> None:
        """A zarr store at a URL: written beside the target, moved into place
        once complete, removed if the write fails."""
        tmp = f"{url.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            write_lazy(data, zarr_store(tmp), zarr_format=True, **self._save_args)
            if self._fs.exists(url):
                self._fs.rm(url, recursive=True)
            self._fs.mv(tmp, url, recursive=True)
        except BaseException:
            if self._fs.exists(tmp):
                self._fs.rm(tmp, recursive=True)
            raise

    def _exists(self) -> bool:
        if self._bundled is not None:
            return True
        try:
            path = self._get_load_path()
        except DatasetError:
            return False
        return self._exists_function(self._url(path))

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._raw_filepath,
            "lazy": self._lazy,
            "chunk_rows": self._chunk_rows,
            "version": self._version,
        }
