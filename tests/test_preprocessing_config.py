"""The ``data`` and ``preprocess`` groups: the input must exist, the split
must be possible."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from scdd.datasets.h5ad_dataset import BUNDLED, SCANPY_PREFIX
from scdd.preprocessing_config import DataParams, PreprocessParams


def test_a_bundled_dataset_or_an_existing_file_is_accepted(tmp_path: Path) -> None:
    bundled = f"{SCANPY_PREFIX}{BUNDLED[0]}"
    assert DataParams(input=bundled, label_key="cell_type").layer is None
    path = tmp_path / "cells.h5ad"
    path.touch()
    assert DataParams(input=str(path), label_key="cell_type").input == str(path)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("scanpy://pbmc3k", r"is not a bundled dataset; use one of \['scanpy://"),
        ("/no/such.zarr", r"no zarr store there"),
        ("/no/such.h5ad", r"no such file .*existing \.h5ad file"),
    ],
)
def test_a_missing_input_is_refused_naming_the_fix(value: str, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        DataParams(input=value, label_key="cell_type")


def test_the_label_key_is_required() -> None:
    bundled = f"{SCANPY_PREFIX}{BUNDLED[0]}"
    with pytest.raises(ValidationError, match="label_key"):
        DataParams(input=bundled)
    with pytest.raises(ValidationError, match="label_key"):
        DataParams(input=bundled, label_key="")


def test_a_split_needs_two_cells_per_class_and_a_fraction() -> None:
    with pytest.raises(ValidationError, match="min_cells_per_class"):
        PreprocessParams(min_cells_per_class=1)
    for name in ("test_size", "validation_size"):
        for value in (0, 1):
            with pytest.raises(ValidationError, match=name):
                PreprocessParams(**{name: value})
    with pytest.raises(ValidationError, match="'drop' or 'error'"):
        PreprocessParams(small_classes="keep")
