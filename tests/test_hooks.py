"""Run-level guarantees of the hooks, on the bundled default (preprocess is ~1 s)."""

import json
import logging
import os
import stat
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset

from scdd.hooks import RunContextHooks
from scdd.run_context import RunParams, current_run
from tests.conftest import make_counts_adata
from tests.kedro_helpers import data_files, run_session

TRAIN = Path("data/05_model_input/train.h5ad")
REPORT = Path("data/08_reporting/preprocess_report.json")


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


def test_artefacts_of_another_input_name_the_params_that_read_them(
    project_copy, tmp_path
) -> None:
    other = tmp_path / "other.h5ad"
    make_counts_adata().write_h5ad(other)
    params = {"data": {"input": str(other), "label_key": "cell_type"}}
    run_session(project_copy, "preprocess", params)
    with pytest.raises(
        ValueError,
        match=rf"(?s)To use them as they are.*`--params data.input={other},"
        r"data.label_key=cell_type`",
    ):
        run_session(project_copy, "foundation")


def test_nodes_read_the_run_group_set_from_the_parameters() -> None:
    params = {"seed": 7, "device": "cpu", "progress": False, "threads": 1}
    catalog = DataCatalog({"parameters": MemoryDataset(params)})
    hooks = RunContextHooks()
    hooks.before_pipeline_run(catalog)
    assert current_run() == RunParams(**params)
    hooks.after_pipeline_run()
    assert current_run() == RunParams()


def test_a_seed_passed_on_the_command_line_reaches_the_nodes(project_copy) -> None:
    run_session(project_copy, "preprocess", {"seed": 3, "threads": 1})
    report = json.loads((project_copy / REPORT).read_text())
    assert report["seed"] == 3
    assert current_run() == RunParams()  # reset when the run ended


@pytest.mark.slow
def test_spawned_node_processes_read_the_runs_seed(project_copy, monkeypatch) -> None:
    """A ``ParallelRunner`` worker started by spawn (the default start method
    on macOS) imports everything afresh: the hook hands it the run group."""
    import multiprocessing

    from kedro.runner import ParallelRunner

    monkeypatch.setenv("KEDRO_MP_CONTEXT", "spawn")
    previous = multiprocessing.get_start_method()
    multiprocessing.set_start_method("spawn", force=True)  # as on macOS
    try:
        runner = ParallelRunner(max_workers=2)
        params = {"seed": 3, "threads": 1}
        run_session(project_copy, "preprocess", params, runner=runner)
    finally:
        multiprocessing.set_start_method(previous, force=True)
    assert json.loads((project_copy / REPORT).read_text())["seed"] == 3


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


def test_dask_settings_are_read_by_no_node() -> None:
    """The lineage hashes the parameters each node reads: with no node reading
    ``params:dask``, where the passes ran never makes an artefact stale."""
    from scdd.hooks import STAGES, _stage_pipelines

    pipelines = _stage_pipelines()
    read = set().union(*(pipelines[s].inputs() for s in STAGES))
    assert "params:dask" not in read and "parameters" not in read
    run_group = {"params:seed", "params:device", "params:progress", "params:threads"}
    assert not read & run_group  # nodes read them from the run context


def test_dask_hook_starts_and_closes_a_local_cluster() -> None:
    import psutil
    from kedro.io import DataCatalog, MemoryDataset

    from scdd.dask_engine import distributed_client
    from scdd.hooks import DaskHooks

    hooks = DaskHooks()
    params = {"dask": {"cluster": "local", "n_workers": 1}}
    hooks.before_pipeline_run(
        catalog=DataCatalog({"parameters": MemoryDataset(params)})
    )
    client = distributed_client()
    assert client is not None
    workers = client.run(os.getpid)
    assert len(workers) == 1
    hooks.on_pipeline_error()  # a failed run closes it too
    assert distributed_client() is None and client.status == "closed"
    assert not any(psutil.pid_exists(pid) for pid in workers.values())
    hooks.before_pipeline_run(catalog=DataCatalog({"parameters": MemoryDataset({})}))
    assert distributed_client() is None  # nothing set: nothing started


def _models(project: Path) -> dict[str, int]:
    return {k: v for k, v in data_files(project).items() if "06_models" in k}


def test_kedro_run_on_a_local_cluster_embeds_as_in_process(
    project_copy, monkeypatch
) -> None:
    """`kedro run --params dask.cluster=local`: the embedding of a model built
    in process, on 2 worker processes, with the model not stale."""
    import scdd.hooks

    # what the hook logs (caplog misses INFO lines while a LocalCluster runs:
    # it quietens every stream handler of the `distributed` logger, pytest's
    # included)
    clusters, describe = [], scdd.hooks.describe_client
    monkeypatch.setattr(
        scdd.hooks,
        "describe_client",
        lambda client: clusters.append(describe(client)) or clusters[-1],
    )
    tiny = {"foundation": {"train": {"epochs": 1}}}
    run_session(project_copy, "preprocess")
    run_session(project_copy, "foundation", tiny)
    embeddings = project_copy / "data/04_feature"
    here = {p.name: ad.read_h5ad(p) for p in sorted(embeddings.glob("*.h5ad"))}
    model = _models(project_copy)
    for path in embeddings.glob("*.h5ad"):
        path.unlink()
    run_session(
        project_copy,
        "foundation",
        {**tiny, "dask": {"cluster": "local", "n_workers": 2}},
        only_missing_outputs=True,
    )
    assert len(clusters) == 1 and "with 2 worker(s)" in clusters[0]
    assert model and _models(project_copy) == model  # not stale: not rebuilt
    for name, before in here.items():
        after = ad.read_h5ad(embeddings / name)
        assert list(after.obs_names) == list(before.obs_names)
        np.testing.assert_allclose(after.X, before.X, atol=1e-5)


def test_threads_null_is_sampled_per_node_and_released_after_the_run(
    monkeypatch,
) -> None:
    from kedro.pipeline import node

    from scdd import threads
    from scdd.hooks import RunSetupHooks

    follower, applied = threads.CoreFollower(), []
    monkeypatch.setattr("scdd.hooks.FOLLOWER", follower)
    monkeypatch.setattr(threads, "apply_threads", applied.append)
    monkeypatch.setattr(threads, "available_cores", lambda: 3)
    busy = iter([0.0, 1.0])
    monkeypatch.setattr(threads, "busy_cores", lambda sample_s: next(busy))
    catalog = DataCatalog({"parameters": MemoryDataset({"threads": None})})
    hooks = RunSetupHooks()
    hooks.before_pipeline_run({}, catalog)
    hooks.before_node_run(node(abs, "a", "b", name="n"))
    assert (follower.automatic, applied) == (True, [3, 2])
    hooks.after_pipeline_run()
    assert follower.count == 0  # library calls after the run change nothing


def test_a_stale_artefact_is_found_where_its_dataset_writes(tmp_path) -> None:
    # A run with --only-missing-outputs wraps stale artefacts; the run summary
    # reads the synthetic set's path through the wrapper (it used to read the
    # wrapper's repr as a file name and fail after a successful run).
    from scdd.datasets import H5ADDataset  # noqa: PLC0415
    from scdd.hooks import _Stale, _where  # noqa: PLC0415

    path = tmp_path / "synthetic.h5ad"
    dataset = H5ADDataset(filepath=str(path))
    assert _where(_Stale(dataset)) == _where(dataset) == str(path)
