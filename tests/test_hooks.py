"""Run-level guarantees of the hooks, on the bundled default (preprocess is ~1 s)."""

import logging
import os
import stat
from pathlib import Path

import anndata as ad
import pytest

from tests.conftest import make_counts_adata
from tests.kedro_helpers import data_files, run_session

TRAIN = Path("data/05_model_input/train.h5ad")


def test_a_stage_without_its_upstream_names_the_pipeline_to_run(project_copy) -> None:
    with pytest.raises(
        ValueError,
        match=r"(?s)do not exist yet.*train_adata.*"
        r"`kedro run --pipelines preprocess` first",
    ):
        run_session(project_copy, "foundation")
    assert data_files(project_copy) == {}


def test_stale_artefacts_stop_the_run_and_name_the_refresh(project_copy) -> None:
    run_session(project_copy, "preprocess")
    before = data_files(project_copy)
    with pytest.raises(
        ValueError,
        match=r"(?s)train_adata .*params:preprocess changed.*"
        r"kedro run --pipelines preprocess --only-missing-outputs",
    ):
        run_session(project_copy, "foundation", {"preprocess": {"test_size": 0.4}})
    assert data_files(project_copy) == before


def test_only_missing_outputs_rebuilds_what_another_input_made(
    project_copy, tmp_path
) -> None:
    run_session(project_copy, "preprocess")
    default_cells = ad.read_h5ad(project_copy / TRAIN).n_obs
    other = tmp_path / "other.h5ad"
    make_counts_adata().write_h5ad(other)
    params = {"data": {"input": str(other), "label_key": "cell_type"}}
    run_session(project_copy, "preprocess", params, only_missing_outputs=True)
    train = ad.read_h5ad(project_copy / TRAIN)
    assert train.n_obs != default_cells
    assert set(train.obs["cell_type"].cat.categories) == {"type_0", "type_1", "type_2"}
    before = data_files(project_copy)
    run_session(project_copy, "preprocess", params, only_missing_outputs=True)
    assert data_files(project_copy) == before  # up to date: nothing rerun


def test_outputs_follow_the_umask_and_threads_are_logged(project_copy, caplog) -> None:
    previous = os.umask(0o022)
    try:
        with caplog.at_level(logging.INFO):
            run_session(project_copy, "preprocess", {"threads": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((project_copy / TRAIN).stat().st_mode) == 0o644
    assert "Using 1 CPU thread(s) (pinned by the threads parameter" in caplog.text
    assert "Loading data from params:" not in caplog.text


def test_parallel_runs_record_lineage_too(project_copy) -> None:
    from kedro.runner import ParallelRunner

    run_session(project_copy, "preprocess", runner=ParallelRunner(max_workers=2))
    records = sorted(p.name for p in (project_copy / "data/.lineage").iterdir())
    assert records == [
        "preprocess_report.json",
        "test_adata.json",
        "train_adata.json",
        "validation_adata.json",
    ]
    run_session(project_copy, "foundation", {"foundation": {"train": {"epochs": 1}}})
