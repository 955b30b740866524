"""Kedro dataset for AnnData ``.h5ad`` files, plus scanpy's bundled datasets."""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path, PurePosixPath
from typing import Any

import anndata as ad
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_protocol_and_path,
)

from scdd.atomic import atomic_path
from scdd.cellstore import CHUNK_ROWS, as_lazy, read_lazy
from scdd.dask_engine import worker_failures_explained

logger = logging.getLogger(__name__)

#: Prefix of a ``filepath`` naming a dataset shipped inside the scanpy package.
SCANPY_PREFIX = "scanpy://"
_BUNDLED = ("pbmc68k_reduced",)


def load_bundled(name: str) -> ad.AnnData:
    """Read a dataset that ships inside the installed scanpy package (offline).

    ``pbmc68k_reduced`` comes back as its log-normalised ``.raw`` matrix (765
    genes) with the cell annotations, because its ``X`` is scaled (negative)
    and unusable as expression.
    """
    import scanpy as sc

    if name not in _BUNDLED:
        raise DatasetError(
            f"Unknown bundled dataset '{SCANPY_PREFIX}{name}'; "
            f"available: {', '.join(SCANPY_PREFIX + b for b in _BUNDLED)}."
        )
    adata = sc.datasets.pbmc68k_reduced()
    out = adata.raw.to_adata()
    out.obs = adata.obs.copy()
    out.uns = {}
    return out


class H5ADDataset(AbstractVersionedDataset[ad.AnnData, ad.AnnData]):
    """Load and save :class:`~anndata.AnnData` as ``.h5ad`` on local disk.

    Saving writes a temporary file beside the target and renames it, so an
    interrupted save never leaves a truncated file; an AnnData whose ``X`` is a
    dask array is written block by block, never whole in memory (a worker
    death Dask gives up on fails the save with a message that says how to
    resume: :func:`scdd.dask_engine.worker_failures_explained`).
    ``lazy=True`` loads ``obs``/``var``/``uns`` into memory and leaves ``X``
    (and ``layers``, ``raw.X``) on disk as dask arrays of ``chunk_rows``-row
    CSR blocks (:func:`scdd.cellstore.read_lazy`): how the pipelines read gene
    matrices of any size. A ``filepath`` of ``scanpy://pbmc68k_reduced`` reads
    scanpy's bundled PBMC dataset (load only).

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
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._bundled = (
            filepath[len(SCANPY_PREFIX) :]
            if filepath.startswith(SCANPY_PREFIX)
            else None
        )
        self._raw_filepath = filepath
        protocol, path = get_protocol_and_path(
            "bundled.h5ad" if self._bundled else filepath, version
        )
        if protocol != "file":
            raise DatasetError(
                f"H5ADDataset reads local files only, got '{filepath}'; copy the "
                "file to local disk first."
            )
        if chunk_rows < 1:
            raise DatasetError(f"chunk_rows must be >= 1, got {chunk_rows}.")
        self._lazy = lazy
        self._chunk_rows = chunk_rows
        self._save_args = {"compression": "gzip", **(save_args or {})}
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=os.path.isfile,
            glob_function=glob.glob,
        )

    def load(self) -> ad.AnnData:
        if self._bundled is not None:
            adata = load_bundled(self._bundled)
            return as_lazy(adata, chunk_rows=self._chunk_rows) if self._lazy else adata
        path = Path(self._get_load_path())
        if not path.is_file():
            raise DatasetError(
                f"No such file: '{path}'. Check the path (data.input) and that "
                "it is relative to the project root or absolute."
            )
        try:
            adata = (
                read_lazy(path, chunk_rows=self._chunk_rows)
                if self._lazy
                else ad.read_h5ad(path)
            )
        except Exception as exc:  # h5py/anndata raise many kinds
            raise DatasetError(
                f"Cannot read '{path}' as an .h5ad (AnnData HDF5) file: {exc}. "
                "Convert the data with anndata (e.g. `adata.write_h5ad(...)`)."
            ) from exc
        logger.info("Read %s: %d cells x %d genes", path, *adata.shape)
        return adata

    def save(self, data: ad.AnnData) -> None:
        if self._bundled is not None:
            raise DatasetError(f"'{self._raw_filepath}' is read-only.")
        if not isinstance(data, ad.AnnData):
            raise DatasetError(
                f"H5ADDataset saves AnnData objects, got {type(data).__name__}."
            )
        path = Path(self._get_save_path())
        # a lazy X is computed block by block as it is written, on the current
        # Dask scheduler (a cluster's workers, when the run opened a client)
        with atomic_path(path) as tmp, worker_failures_explained(f"Writing {path}"):
            data.write_h5ad(tmp, **self._save_args)
        logger.info("Wrote %s: %d cells x %d genes", path, *data.shape)

    def _exists(self) -> bool:
        if self._bundled is not None:
            return True
        try:
            path = self._get_load_path()
        except DatasetError:
            return False
        return Path(path).is_file()

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._raw_filepath,
            "lazy": self._lazy,
            "chunk_rows": self._chunk_rows,
            "version": self._version,
        }
