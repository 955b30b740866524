"""The ``benchmark`` pipeline on tiny in-memory data (2 methods × 1 SPC)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import CSVDataset
from kedro_datasets.text import TextDataset

from scdd.pipelines.benchmark import create_pipeline
from scdd.pipelines.benchmark.nodes import (
    BENCHMARK_METHODS,
    BENCHMARK_SPCS,
    check_benchmark_params,
)
from scdd.pipelines.evaluate.nodes import evaluate_full_reference
from tests.pipelines.evaluate.test_pipeline import (  # noqa: F401  (fixture)
    DATA,
    FOUNDATION,
    Tiny,
    tiny,
)
from tests.pipelines.evaluate.test_pipeline import PARAMS as EVALUATE
from tests.pipelines.latent_distillation.test_pipeline import PARAMS as DISTILL

BENCHMARK = {
    "methods": ["random_real", "dm"],
    "spcs": [2],
    "draws": 2,
    "models": ["f_head"],
    "steps": 3,
}


def test_one_node_per_method_and_spc() -> None:
    nodes = {n.name: n for n in create_pipeline().nodes}
    assert len(nodes) == len(BENCHMARK_METHODS) * len(BENCHMARK_SPCS) + 1
    assert "full" not in BENCHMARK_METHODS
    cell = nodes["benchmark_featdistill_plus_dcdm_spc5_node"]
    assert cell.outputs == ["benchmark_row_featdistill_plus_dcdm_spc5"]
    assert "full_reference_metrics" in cell.inputs
    pickle.dumps(cell.func)  # ParallelRunner ships nodes to workers


def test_unknown_method_or_spc_is_refused() -> None:
    with pytest.raises(ValueError, match="benchmark.methods lists \\['full'\\]"):
        check_benchmark_params({**BENCHMARK, "methods": ["full"]})
    with pytest.raises(ValueError, match="benchmark.spcs lists \\[3\\]"):
        check_benchmark_params({**BENCHMARK, "spcs": [3]})


def test_pipeline_writes_a_row_per_method(tiny: Tiny, tmp_path: Path) -> None:  # noqa: F811
    reference = evaluate_full_reference(
        tiny.train,
        tiny.test,
        tiny.train_embeddings,
        tiny.test_embeddings,
        {**EVALUATE, "models": ["f_head"]},
        DATA,
        FOUNDATION,
        0,
        "cpu",
        False,
    )
    catalog = DataCatalog(
        {
            "train_adata": MemoryDataset(tiny.train),
            "test_adata": MemoryDataset(tiny.test),
            "train_embeddings": MemoryDataset(tiny.train_embeddings),
            "test_embeddings": MemoryDataset(tiny.test_embeddings),
            "foundation_model": MemoryDataset(tiny.foundation, copy_mode="assign"),
            # read only by scdd / generator_only, which are not selected
            "generator_checkpoint": MemoryDataset({}, copy_mode="assign"),
            "full_reference_metrics": MemoryDataset(reference),
            "benchmark_table": CSVDataset(
                filepath=str(tmp_path / "benchmark.csv"), save_args={"index": False}
            ),
            "benchmark_markdown": TextDataset(filepath=str(tmp_path / "benchmark.md")),
        }
    )
    for key, value in {
        "benchmark": BENCHMARK,
        "distill": DISTILL,
        "evaluate": EVALUATE,
        "data": DATA,
        "foundation": FOUNDATION,
        "seed": 0,
        "device": "cpu",
        "progress": False,
    }.items():
        catalog[f"params:{key}"] = value
    # Sliced to what the table needs (every cell feeds the table; unselected
    # cells return a skipped marker at once).
    sliced = create_pipeline().to_outputs("benchmark_table")
    SequentialRunner().run(sliced, catalog)

    table = pd.read_csv(tmp_path / "benchmark.csv")
    assert table.method.tolist() == ["full", "random_real", "dm"]
    assert table.spc.fillna(-1).tolist() == [-1, 2, 2]
    assert (table.n_draws.tolist()) == [1, 2, 2]
    assert (table.model == "f_head").all()
    assert table.accuracy_mean.between(0, 1).all()
    full = reference["models"]["f_head"]["accuracy_mean"]
    assert table.retention_mean.tolist() == pytest.approx(
        (table.accuracy_mean / full).tolist()
    )
    md = (tmp_path / "benchmark.md").read_text()
    assert "| Method | SPC 2 |" in md
    for method in ("full", "random_real", "dm"):
        assert md.count(f"| {method} |") == 2
