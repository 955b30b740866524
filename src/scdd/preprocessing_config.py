"""The ``data`` and ``preprocess`` parameter groups: the input, its label
column and how :mod:`scdd.preprocessing` turns it into the splits.

The ``preprocess`` pipeline's nodes take these groups and hand single fields
to the scverse-style functions of :mod:`scdd.preprocessing`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from scdd.cellstore import is_zarr, store_exists
from scdd.datasets.h5ad_dataset import BUNDLED, SCANPY_PREFIX
from scdd.param_group import NonNegativeInt, ParamGroup, PositiveFloat

__all__ = ["DataParams", "PreprocessParams"]


class DataParams(ParamGroup):
    """``params:data``: the input and its label column (every pipeline)."""

    #: ``scanpy://<name>`` for a bundled dataset, an ``.h5ad`` file (relative
    #: to the working directory: the project root in a kedro run) or a zarr
    #: store (``*.zarr``: a directory or an fsspec URL).
    input: str
    #: ``obs`` column with the cell-type labels.
    label_key: str = Field(min_length=1)
    #: Matrix holding expression: ``None`` (X), ``"raw"`` or a layer name.
    layer: str | None = None

    @field_validator("input")
    @classmethod
    def _input_exists(cls, value: str) -> str:
        if value.startswith(SCANPY_PREFIX):
            name = value[len(SCANPY_PREFIX) :]
            if name not in BUNDLED:
                raise ValueError(
                    f"data.input={value!r} is not a bundled dataset; use one of "
                    f"{[SCANPY_PREFIX + b for b in BUNDLED]} or the path of an "
                    ".h5ad file"
                )
            return value
        if is_zarr(value):
            if not store_exists(value):
                raise ValueError(
                    f"data.input={value!r}: no zarr store there. Give an AnnData "
                    "zarr store (adata.write_zarr) as a local directory or an "
                    "fsspec URL (s3://, gs://, ... with its fsspec package "
                    "installed), or an .h5ad file"
                )
            return value
        if not Path(value).is_file():
            raise ValueError(
                f"data.input={value!r}: no such file ({Path(value).resolve()}; a "
                "relative path is read from the working directory, the project "
                "root in a kedro run). Give the path of an existing .h5ad file, "
                "e.g. kedro run --params data.input=path/to/cells.h5ad, or "
                f"{SCANPY_PREFIX}{BUNDLED[0]}"
            )
        return value


class PreprocessParams(ParamGroup):
    """``params:preprocess``: quality filter, normalisation, the split."""

    min_counts: NonNegativeInt = 10
    min_cells: NonNegativeInt = 3
    target_sum: PositiveFloat = 10_000
    #: Keep raw counts in ``layers["counts"]`` of the splits (no stage reads them).
    keep_counts: bool = False
    max_log_value: PositiveFloat = 20
    duplicate_genes: Literal["make_unique", "merge"] = "make_unique"
    #: A stratified split needs at least 2 cells per class.
    min_cells_per_class: int = Field(default=5, ge=2)
    small_classes: Literal["drop", "error"] = "drop"
    test_size: float = Field(default=0.3, gt=0, lt=1)
    #: Fraction of the training cells held out as the validation split.
    validation_size: float = Field(default=0.15, gt=0, lt=1)
