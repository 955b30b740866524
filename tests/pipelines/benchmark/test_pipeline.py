"""The ``benchmark`` pipeline on tiny in-memory data (2 methods × 1 SPC)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from kedro_datasets.pandas import CSVDataset
from kedro_datasets.text import TextDataset

from scdd import generation
from scdd.benchmark.config import BENCHMARK_METHODS, BENCHMARK_SPCS
from scdd.benchmark.runs import label_references, label_view
from scdd.cellstore import as_lazy, is_lazy, take_rows
from scdd.datasets import TorchCheckpointDataset
from scdd.models.generator_config import GeneratorTrainParams
from scdd.params import BenchmarkParams, GeneratorParams, PreprocessParams
from scdd.pipelines.benchmark import create_pipeline
from scdd.pipelines.evaluate.nodes import evaluate_full_reference
from scdd.pipelines.latent_distillation.nodes import summarise_training_cells
from tests.conftest import TINY_SCDG_MODEL
from tests.evaluation.lazy_helpers import no_whole_matrix, spied
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
GENERATOR = {
    "model": TINY_SCDG_MODEL,
    "train": GeneratorTrainParams(
        steps=5, batch_size=32, lr=1e-3, weight_decay=0.0, ema_decay=0.9
    ),
}
PREPROCESS = PreprocessParams(min_cells_per_class=3)

# the nodes read seed, device and progress from the run context
pytestmark = pytest.mark.usefixtures("cpu_run")


def test_one_node_per_method_and_spc() -> None:
    nodes = {n.name: n for n in create_pipeline().nodes}
    # + label generators, label references, the table and the scored split
    assert len(nodes) == len(BENCHMARK_METHODS) * len(BENCHMARK_SPCS) + 4
    assert "evaluate.select_heldout_split" in nodes
    assert "full" not in BENCHMARK_METHODS
    cell = nodes["benchmark.distil_and_score_featdistill_plus_dcdm_spc5"]
    assert cell.namespace == "benchmark"
    assert cell.outputs == ["benchmark_row_featdistill_plus_dcdm_spc5"]
    assert {"benchmark_references", "benchmark_label_generators"} <= set(cell.inputs)
    pickle.dumps(cell.func)  # ParallelRunner ships nodes to workers


def _with_coarse_label(tiny: Tiny) -> list:  # noqa: F811
    """The four splits with a second label column ``coarse``: a / b, the
    first cell unlabelled and the last in a class ``rare`` (both left out);
    every cell has the same name."""
    views = []
    for adata in (tiny.train, tiny.test, tiny.train_embeddings, tiny.test_embeddings):
        out = adata.copy()
        coarse = np.where(out.obs["cell_type"] == "type_0", "a", "b").astype(object)
        coarse[0], coarse[-1] = None, "rare"
        out.obs["coarse"] = coarse
        out.obs_names = ["cell"] * out.n_obs  # merged datasets repeat names
        views.append(out)
    return views


def test_label_view_cleans_another_label_column(tiny: Tiny) -> None:  # noqa: F811
    splits = _with_coarse_label(tiny)
    same = label_view(*splits, key="cell_type", primary="cell_type", min_cells=3)
    assert all(a is b for a, b in zip(same, splits, strict=True))
    train, test, train_z, test_z = label_view(
        *splits, key="coarse", primary="cell_type", min_cells=3
    )
    assert list(train.obs["coarse"].cat.categories) == ["a", "b"]
    assert train.n_obs == tiny.train.n_obs - 2  # unlabelled + rare
    assert test.n_obs == tiny.test.n_obs - 2  # unlabelled + rare
    assert train_z.n_obs == train.n_obs
    assert (train_z.obs["coarse"].to_numpy() == train.obs["coarse"].to_numpy()).all()
    assert list(test.obs["coarse"].cat.categories) == ["a", "b"]
    with pytest.raises(ValueError, match="column 'tissue' is not in the training"):
        label_view(*splits, key="tissue", primary="cell_type", min_cells=3)
    with pytest.raises(ValueError, match="'batch'.*1 class") as refused:
        label_view(*splits, key="batch", primary="cell_type", min_cells=3)
    # the fix names the benchmark's setting, not data.label_key
    assert "another entry of benchmark.label_keys" in str(refused.value)
    assert "data.label_key" not in str(refused.value)


def _run_benchmark(
    tiny: Tiny,  # noqa: F811
    splits: list,
    tmp_path: Path,
) -> tuple[DataCatalog, dict]:
    """The benchmark (random_real and scdd at SPC 2, labels cell_type and
    coarse, one draw) on ``splits``; its catalog and the cell_type reference."""
    train, test, train_z, test_z = splits
    reference = evaluate_full_reference(
        train,
        test,
        train_z,
        test_z,
        EVALUATE.model_copy(update={"models": ["f_head"]}),
        DATA,
    )
    main_generator, _ = generation.train_generator(
        train_z, ["cell_type"], **GENERATOR, seed=0, progress=False
    )
    catalog = DataCatalog(
        {
            "train_adata": MemoryDataset(train, copy_mode="assign"),
            "test_adata": MemoryDataset(test, copy_mode="assign"),
            "train_embeddings": MemoryDataset(train_z),
            "test_embeddings": MemoryDataset(test_z),
            "validation_adata": MemoryDataset(None),
            "validation_embeddings": MemoryDataset(None),
            "foundation_model": MemoryDataset(tiny.foundation, copy_mode="assign"),
            "generator_checkpoint": MemoryDataset(main_generator, copy_mode="assign"),
            "full_reference_metrics": MemoryDataset(reference),
            "real_cell_stats": MemoryDataset(
                summarise_training_cells(train, tiny.foundation, DATA)
            ),
            # as in conf/base/catalog.yml
            "benchmark_label_generators": TorchCheckpointDataset(
                filepath=str(tmp_path / "generators.pt")
            ),
            "benchmark_references": JSONDataset(filepath=str(tmp_path / "refs.json")),
            "benchmark_table": CSVDataset(
                filepath=str(tmp_path / "benchmark.csv"), save_args={"index": False}
            ),
            "benchmark_markdown": TextDataset(filepath=str(tmp_path / "benchmark.md")),
        }
    )
    bench = BenchmarkParams(
        **{
            **BENCHMARK,
            "methods": ["random_real", "scdd"],
            "label_keys": ["cell_type", "coarse"],
            "draws": 1,
        }
    )
    for key, value in {
        "benchmark": bench,
        "distill": DISTILL,
        "evaluate": EVALUATE,
        "generator": GeneratorParams(
            **GENERATOR, report={"t_values": [10], "sample_steps": [1]}
        ),
        "data": DATA,
        "foundation": FOUNDATION,
        "preprocess": PREPROCESS,
    }.items():
        catalog[f"params:{key}"] = value
    # Sliced to what the table needs (every cell feeds the table; unselected
    # cells return a skipped marker at once).
    sliced = create_pipeline().to_outputs("benchmark_table")
    SequentialRunner().run(sliced, catalog)
    return catalog, reference


def test_pipeline_writes_a_row_per_label_and_method(
    tiny: Tiny,  # noqa: F811
    tmp_path: Path,
) -> None:
    catalog, reference = _run_benchmark(tiny, _with_coarse_label(tiny), tmp_path)

    # only the label the main generator lacks gets its own SCDG
    generators = catalog.load("benchmark_label_generators")
    assert list(generators) == ["coarse"]
    assert generators["coarse"]["condition_categories"]["coarse"] == ["a", "b"]
    references = catalog.load("benchmark_references")
    assert references["cell_type"] == reference  # reused, not retrained
    assert references["coarse"]["categories"] == ["a", "b"]

    table = pd.read_csv(tmp_path / "benchmark.csv")
    assert table.label_key.tolist() == ["cell_type"] * 3 + ["coarse"] * 3
    assert table.method.tolist() == ["full", "random_real", "scdd"] * 2
    assert table.spc.fillna(-1).tolist() == [-1, 2, 2] * 2
    assert (table.model == "f_head").all()
    assert table.accuracy_mean.between(0, 1).all()
    # scdd's sets record how close they got in F-space; no method here draws
    # counts (SPC 2), and neither the full row nor random cells optimise
    optimised = table.method == "scdd"
    assert (table.distill_loss_mean[optimised] > 0).all()
    assert table.distill_loss_mean[~optimised].isna().all()
    assert table.count_depth_mean.isna().all()
    # every set was scored for privacy; random cells are copies by definition
    assert table.ratio_f_mean[table.method != "full"].notna().all()
    real = table.method == "random_real"
    assert (table.copies_mean[real] > 0).all()
    assert (table.passes_guard_mean[real] == 0).all()
    for key in ("cell_type", "coarse"):
        rows = table[table.label_key == key]
        full = references[key]["models"]["f_head"]["accuracy_mean"]
        assert rows.retention_mean.tolist() == pytest.approx(
            (rows.accuracy_mean / full).tolist()
        )
    md = (tmp_path / "benchmark.md").read_text()
    assert "## Label `coarse`" in md and "| Method | SPC 2 |" in md
    # 2 labels x (accuracy, retention), and the privacy table but for full
    for method, rows in (("full", 4), ("random_real", 6), ("scdd", 6)):
        assert md.count(f"| {method} |") == rows


def test_lazy_label_views_stay_lazy(tiny: Tiny, monkeypatch) -> None:  # noqa: F811
    splits = _with_coarse_label(tiny)
    train, train_reads = spied(splits[0])
    test, test_reads = spied(splits[1])
    lazy = [train, test, *splits[2:]]
    with no_whole_matrix(monkeypatch):
        views = label_view(*lazy, key="coarse", primary="cell_type", min_cells=3)
    assert is_lazy(views[0]) and is_lazy(views[1])
    assert not train_reads.counts and not test_reads.counts  # nothing read
    expected = label_view(*splits, key="coarse", primary="cell_type", min_cells=3)
    for got, want in zip(views, expected, strict=True):
        assert got.obs.equals(want.obs) and got.var_names.equals(want.var_names)
    for got, want in zip(views[:2], expected[:2], strict=True):
        np.testing.assert_array_equal(
            take_rows(got).X.toarray(), np.asarray(want.X.todense())
        )


def test_lazy_label_references_match_in_memory(
    tiny: Tiny,  # noqa: F811
    monkeypatch,
) -> None:
    splits = _with_coarse_label(tiny)
    lazy = [spied(splits[0])[0], spied(splits[1])[0], *splits[2:]]
    settings = EVALUATE.model_copy(update={"reference_max_cells": 40})
    kwargs = {
        "benchmark": BenchmarkParams(
            models=["f_head", "gene_mlp"], label_keys=["cell_type", "coarse"]
        ),
        "primary": "cell_type",
        "min_cells": 3,
        "evaluate": settings,
    }
    with no_whole_matrix(monkeypatch):
        got = label_references({}, lazy, **kwargs)
    assert got == label_references({}, splits, **kwargs)
    assert got["coarse"]["categories"] == ["a", "b"]


def test_benchmark_on_lazy_splits_matches_in_memory(
    tiny: Tiny,  # noqa: F811
    tmp_path: Path,
) -> None:
    splits = _with_coarse_label(tiny)
    _run_benchmark(tiny, splits, tmp_path / "memory")
    lazy = [as_lazy(splits[0], chunk_rows=7), as_lazy(splits[1], chunk_rows=7)]
    _run_benchmark(tiny, [*lazy, *splits[2:]], tmp_path / "lazy")
    expected = pd.read_csv(tmp_path / "memory" / "benchmark.csv")
    got = pd.read_csv(tmp_path / "lazy" / "benchmark.csv")
    timing = [c for c in got.columns if "seconds" in c]
    pd.testing.assert_frame_equal(
        got.drop(columns=timing), expected.drop(columns=timing)
    )
