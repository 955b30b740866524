"""The ``report`` group: UMAP settings and figure sizes within range."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from scdd.report_config import FigsizeParams, ReportParams, UmapParams


def test_umap_settings_umap_accepts() -> None:
    with pytest.raises(ValidationError, match="n_neighbors"):
        UmapParams(n_neighbors=1)
    with pytest.raises(ValidationError, match="min_dist"):
        UmapParams(min_dist=1.5)
    assert UmapParams(max_cells=None).max_cells is None


def test_a_figure_size_is_two_positive_numbers() -> None:
    assert FigsizeParams(loss=[4, 3]).loss == (4, 3)
    with pytest.raises(ValidationError, match="loss"):
        FigsizeParams(loss=[4])
    with pytest.raises(ValidationError, match=r"hvg\.0"):
        FigsizeParams(hvg=[0, 3])


def test_a_misspelt_key_is_named() -> None:
    with pytest.raises(ValidationError, match=r"\['umpa'\] \(did you mean 'umap'\?\)"):
        ReportParams.model_validate({"umpa": {}})
