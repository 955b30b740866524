"""Kedro dataset for torch checkpoints that load with ``weights_only=True``."""

from __future__ import annotations

import glob
import logging
import os
import pickle
import re
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_protocol_and_path,
)

from scdd.atomic import atomic_path

logger = logging.getLogger(__name__)

#: Exact types kept as they are; subclasses such as ``numpy.float64`` are not safe.
_PLAIN = (bool, int, float, str, type(None))


class TorchCheckpointDataset(AbstractVersionedDataset[dict, dict]):
    """Load and save a checkpoint dict with :func:`torch.save` on local disk.

    Only tensors, numbers, strings, ``None``, lists, tuples and dicts are
    accepted, so every checkpoint reloads with ``torch.load(weights_only=True)``
    and no pickled code ever runs on load; architectures are rebuilt from a
    config stored in the dict. A file holding other pickled objects is refused.
    Saving writes a temporary file beside the target and renames it.

    Example catalog entry::

        generator_checkpoint:
          type: scdd.datasets.TorchCheckpointDataset
          filepath: data/06_models/generator.pt
          versioned: true
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath, version)
        if protocol != "file":
            raise DatasetError(
                f"TorchCheckpointDataset reads local files only, got '{filepath}'; "
                "copy the file to local disk first."
            )
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=os.path.isfile,
            glob_function=glob.glob,
        )

    def load(self) -> dict[str, Any]:
        path = Path(self._get_load_path())
        if not path.is_file():
            raise DatasetError(f"No such checkpoint file: '{path}'.")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
            raise DatasetError(
                f"'{path}' is not a safe checkpoint: it holds pickled objects "
                f"({found.group(1) if found else 'not tensors or plain types'}) "
                "that torch.load(weights_only=True) refuses to run. Use only "
                "checkpoints saved as dicts of tensors, numbers, strings, lists "
                "and dicts."
            ) from exc
        except Exception as exc:  # zip/IO errors come in many kinds
            raise DatasetError(
                f"Cannot read '{path}' as a torch checkpoint: {exc}."
            ) from exc
        if not isinstance(data, dict):
            raise DatasetError(
                f"'{path}' holds a {type(data).__name__}, not a checkpoint dict."
            )
        logger.info("Read checkpoint %s (%d keys)", path, len(data))
        return data

    def save(self, data: dict[str, Any]) -> None:
        if not isinstance(data, dict):
            raise DatasetError(
                f"TorchCheckpointDataset saves dicts, got {type(data).__name__}."
            )
        _check_safe(data, "checkpoint")
        path = Path(self._get_save_path())
        with atomic_path(path) as tmp:
            torch.save(data, tmp)
        logger.info("Wrote checkpoint %s (%.1f MB)", path, path.stat().st_size / 2**20)

    def _exists(self) -> bool:
        try:
            path = self._get_load_path()
        except DatasetError:
            return False
        return Path(path).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "version": self._version}


def _check_safe(value: Any, where: str) -> None:
    """Raise ``DatasetError`` unless ``value`` reloads with ``weights_only=True``.

    Checked before writing so an unloadable file is never produced.
    """
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN:
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_safe(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise DatasetError(
                    f"{where} has a key of type {type(key).__name__}; use str keys."
                )
            _check_safe(item, f"{where}[{key!r}]")
        return
    raise DatasetError(
        f"{where} is a {type(value).__name__}; a checkpoint may hold only tensors, "
        "numbers, strings, None, lists and dicts (convert arrays with "
        "torch.as_tensor and numpy scalars with .item())."
    )
