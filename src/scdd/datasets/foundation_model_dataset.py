"""Kedro dataset for a foundation model directory in SCimilarity's format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from scdd.atomic import atomic_path
from scdd.models.foundation import FoundationModel, load_model_dir, save_model_dir


class FoundationModelDataset(AbstractDataset[FoundationModel, FoundationModel]):
    """A :class:`FoundationModel` stored as a SCimilarity model directory.

    The directory (``encoder.ckpt``, ``decoder.ckpt``, ``layer_sizes.json``,
    ``gene_order.tsv``, ``label_ints.csv``, ``hyperparameters.json``) loads in
    ``scimilarity.CellEmbedding(path)`` unchanged. Checkpoints are read with
    ``weights_only=True``; the directory is written beside the target and
    swapped in whole, so a failed save leaves the previous model intact.
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> FoundationModel:
        if not self._path.is_dir():
            raise DatasetError(f"No foundation model directory at '{self._path}'.")
        try:
            return load_model_dir(self._path)
        except ValueError as exc:
            raise DatasetError(str(exc)) from exc

    def save(self, data: FoundationModel) -> None:
        with atomic_path(self._path, directory=True) as tmp:
            save_model_dir(data, tmp)

    def _exists(self) -> bool:
        return (self._path / "encoder.ckpt").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
