"""Provenance records: plain values that h5ad stores and json reads back."""

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from scdd.preprocessing_config import DataParams
from scdd.provenance import plain, record_provenance, recorded_params, storable


def test_storable_values_round_trip_through_h5ad(tmp_path: Path) -> None:
    value = {
        "none": None,
        "flag": True,
        "numbers": [1, 2.5],
        "names": ["a", "b"],
        "empty": [],
        "nested": {"depth": np.int64(3), "path": Path("/data/in.h5ad")},
        "mixed": [1, None, {"k": "v"}],
    }
    stored = storable(value)
    assert stored["nested"] == {"depth": 3, "path": "/data/in.h5ad"}
    assert stored["mixed"] == {"0": 1, "1": None, "2": {"k": "v"}}
    adata = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    adata.uns["record"] = stored
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = plain(ad.read_h5ad(tmp_path / "a.h5ad").uns["record"])
    assert back == {**stored, "numbers": [1.0, 2.5]}
    assert json.loads(json.dumps(back)) == back


@pytest.mark.parametrize("log1p", [False, True])
def test_record_provenance(log1p: bool) -> None:
    adata = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    data = DataParams(input="scanpy://pbmc68k_reduced", label_key="cell_type")
    record_provenance(
        adata, stage="preprocess", params=data, source=data.input, log1p=log1p, k=1
    )
    record = adata.uns["scdd"]["preprocess"]
    assert record["params"] == data.model_dump(mode="json")
    assert recorded_params(adata, "preprocess") == record["params"]
    assert record["k"] == 1 and record["source"] == data.input
    assert len(record["input_digest"]) == 16
    assert {"scdd", "anndata", "scanpy", "torch", "numpy"} <= set(record["versions"])
    assert adata.uns.get("log1p") == ({"base": None} if log1p else None)
    assert recorded_params(adata, "distill") == {}
