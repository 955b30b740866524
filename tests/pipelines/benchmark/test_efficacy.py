"""Does the method still work? scdd against random real cells on real data.

Runs ``distill``, ``evaluate`` and ``benchmark`` on pbmc_10x (4,271 cells,
8 types; skipped when ../shared/data is absent) with the default method
settings and smaller training budgets, and scores on the validation split.
It fails when scdd stops beating random real cells at one cell per class, or
when more synthetic cells per class make the gene-level model worse.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import shared_dataset
from tests.kedro_helpers import run_session

#: Percentage points of accuracy that count as noise between two SPCs.
NOISE = 2.0


@pytest.mark.shared_data
def test_scdd_beats_random_cells_and_gains_from_more_cells(project_copy: Path) -> None:
    params = {
        "data": {
            "input": str(shared_dataset("pbmc_10x.h5ad")),
            "label_key": "cell_type",
        },
        "progress": False,
        "foundation": {"train": {"epochs": 15}},
        "generator": {"train": {"steps": 400}},
        "evaluate": {
            "split": "validation",
            "models": ["f_head", "gene_mlp"],
            "f_head": {"n_inits": 3},
        },
    }
    run_session(project_copy, "distill", params)
    run_session(project_copy, "evaluate", params)
    bench = {"methods": ["random_real", "scdd"], "spcs": [1, 10], "draws": 2}
    run_session(
        project_copy,
        "benchmark",
        {**params, "benchmark": {**bench, "models": ["f_head", "gene_mlp"]}},
    )
    table = pd.read_csv(project_copy / "data/08_reporting/benchmark.csv")
    acc = table.set_index(["model", "method", "spc"])["accuracy_mean"] * 100
    for model in ("f_head", "gene_mlp"):
        assert acc[model, "scdd", 1] > acc[model, "random_real", 1] + 5, model
    assert acc["gene_mlp", "scdd", 10] >= acc["gene_mlp", "scdd", 1] - NOISE
    assert acc["f_head", "scdd", 10] >= acc["f_head", "random_real", 10] - NOISE
