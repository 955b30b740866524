"""The passes over cells on a ``distributed`` cluster: same results as in
process, worker deaths retried or explained, one client per run."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import dask
import numpy as np
import pytest
import torch
from distributed import Client, get_task_stream
from distributed.comm.core import CommClosedError
from pydantic import ValidationError

from scdd.cellstore import blocks, lazy_matrix, read_lazy, reduce_blocks
from scdd.dask_engine import (
    DaskParams,
    dask_client,
    distributed_client,
    pin_task_thread,
    worker_failures_explained,
)
from scdd.datasets import H5ADDataset
from scdd.distill.real_cells import summarise_real_cells
from scdd.models.foundation import (
    FoundationArchitectureParams,
    align_genes,
    build_autoencoder,
    embed_cells,
)
from scdd.params import GROUPS, check_run_params
from scdd.pipelines.preprocess.nodes import preprocess_adata, split_adata
from scdd.preprocessing_config import DataParams, PreprocessParams
from tests.conftest import make_counts_adata

CHUNK_ROWS = 32


# Tests without a cluster come first: the module's client, once started, is
# Dask's default until the module ends.


def test_a_lost_scheduler_says_how_to_resume() -> None:
    with (
        pytest.raises(
            RuntimeError,
            match=r"(?s)^Writing train.h5ad failed: .*CommClosedError.*"
            r"connection to its scheduler was lost.*"
            r"--only-missing-outputs",
        ),
        worker_failures_explained("Writing train.h5ad"),
    ):
        raise CommClosedError("in <TCP (closed)>: Stream is closed")


def test_other_errors_pass_unchanged() -> None:
    with pytest.raises(KeyError), worker_failures_explained("x"):
        raise KeyError("gene")


def test_an_address_and_a_cluster_are_refused() -> None:
    assert GROUPS["dask"] is DaskParams
    with pytest.raises(
        ValidationError,
        match=r"dask.address='tcp://host:8786' and dask.cluster='local' are both "
        r"set.*leave the other null",
    ):
        DaskParams(address="tcp://host:8786", cluster="local")
    with pytest.raises(ValueError, match="parameter 'dask'.* both set"):
        check_run_params({"dask": {"address": "tcp://host:8786", "cluster": "local"}})
    with pytest.raises(ValueError, match="both set"):
        with dask_client(DaskParams(address="tcp://host:8786", cluster="local")):
            pass


def test_an_unreachable_address_is_named() -> None:
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "0.5s"}),
        pytest.raises(RuntimeError, match=r"dask.address='tcp://127.0.0.1:9'"),
        dask_client(DaskParams(address="tcp://127.0.0.1:9")),
    ):
        pass


def test_nothing_set_starts_nothing() -> None:
    with dask_client() as client:
        assert client is None and distributed_client() is None


@contextlib.contextmanager
def _local_cluster(n_workers: int, **config: object) -> Iterator[Client]:
    """A cluster of ``n_workers`` one-thread processes (~4 s to start, ~2 s to
    close) with ``config`` set while it starts (the scheduler reads it then)."""
    with (
        dask.config.set(config),
        dask_client(
            DaskParams(cluster="local", n_workers=n_workers, threads_per_worker=1),
            dashboard_address=":0",  # a free port: two clusters may run at once
            silence_logs=logging.CRITICAL,  # the worker deaths below are meant
        ) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """Two workers for the module's tests that kill none."""
    with _local_cluster(2) as client:
        yield client


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Raw counts on disk: 150 cells, 3 classes, 60 genes."""
    path = tmp_path_factory.mktemp("cells") / "counts.h5ad"
    make_counts_adata((60, 50, 40), n_genes=60, seed=1).write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    encoder, _ = build_autoencoder(
        60, FoundationArchitectureParams(latent_dim=8, hidden_dim=[32])
    )
    return encoder.eval().requires_grad_(False)


def _cell_passes(store: Path, encoder, out: Path) -> dict:
    """The pipeline's passes over the cells, as its nodes make them:
    preprocess and split, the training split written and read back lazily,
    embedded with F, summarised for distillation."""
    data = DataParams(input=str(store), label_key="cell_type")
    params = PreprocessParams(min_cells=3)
    adata, summary = preprocess_adata(
        read_lazy(store, chunk_rows=CHUNK_ROWS), data, params
    )
    train, _, _, report = split_adata(adata, summary, data, params)  # seed 0
    written = H5ADDataset(
        filepath=str(out / "train.h5ad"), lazy=True, chunk_rows=CHUNK_ROWS
    )
    written.save(train)
    train = written.load()
    aligned = align_genes(
        train, gene_order=[f"gene_{j}" for j in range(60)], min_overlap=10
    )
    classes = train.obs["cell_type"].cat
    return {
        "report": report,
        "cells": list(train.obs_names),
        "x": H5ADDataset(filepath=str(out / "train.h5ad")).load().X.toarray(),
        "z": embed_cells(encoder, aligned.X, chunk_size=20, progress=False),
        "stats": summarise_real_cells(
            train.X,
            classes.codes.to_numpy(),
            list(classes.categories),
            list(train.var_names),
        ),
    }


def test_cluster_run_matches_the_in_process_run(
    client, store, encoder, tmp_path
) -> None:
    with dask.config.set(scheduler="synchronous"):
        assert distributed_client() is None
        here = _cell_passes(store, encoder, tmp_path / "here")
    assert distributed_client() is client
    with get_task_stream(client) as tasks:
        there = _cell_passes(store, encoder, tmp_path / "there")
    ran = {t["key"].split("-")[0] for t in tasks.data if isinstance(t["key"], str)}
    assert "embed" in ran  # one task per row block, on the workers

    assert there["report"] == here["report"]
    assert there["cells"] == here["cells"]
    np.testing.assert_array_equal(there["x"], here["x"])
    # the same blocks, merged in the same order: equal up to float64 rounding
    ours, theirs = there["stats"], here["stats"]
    np.testing.assert_allclose(ours.classes.means, theirs.classes.means, rtol=1e-12)
    np.testing.assert_allclose(
        ours.classes.variances, theirs.classes.variances, rtol=1e-12
    )
    np.testing.assert_allclose(ours.zero_fractions, theirs.zero_fractions, rtol=1e-12)
    assert ours.target_sum == pytest.approx(theirs.target_sum, rel=1e-12)
    # torch on a worker may take another thread count: float32 rounding
    assert there["z"].dtype == np.float32 and there["z"].shape == (
        len(here["cells"]),
        8,
    )
    np.testing.assert_allclose(there["z"], here["z"], atol=1e-5)


def _task_threads(torch_threads_before: int | None = None) -> tuple[int, int]:
    import numba

    if torch_threads_before:  # a thread that used torch before the plugin
        torch.set_num_threads(torch_threads_before)
        pin_task_thread()
    return torch.get_num_threads(), numba.get_num_threads()


def test_workers_compute_on_one_thread_per_task(client) -> None:
    assert client.submit(_task_threads, pure=False).result() == (1, 1)
    assert client.submit(_task_threads, 2, pure=False).result() == (1, 1)
    here = torch.get_num_threads()
    pin_task_thread()  # not in a worker task: nothing changes
    assert torch.get_num_threads() == here


def _die_once(marker: str) -> None:
    """Kill this (worker) process the first time any task calls it."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(1)


def _sum_or_die(block, marker: str) -> float:
    _die_once(marker)
    return float(block.sum())


class _DyingEncoder(torch.nn.Module):
    """A linear encoder whose first forward pass kills its worker."""

    latent_dim = 4

    def __init__(self, n_genes: int, marker: str) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(n_genes, self.latent_dim)
        self.marker = marker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _die_once(self.marker)
        return self.linear(x)


def _sums(x, marker: Path) -> np.ndarray:
    return np.asarray(reduce_blocks(x, partial(_sum_or_die, marker=str(marker))))


def _embeddings(x, marker: Path) -> np.ndarray:
    encoder = _DyingEncoder(x.shape[1], str(marker)).eval()
    torch.nn.init.normal_(encoder.linear.weight)
    return embed_cells(encoder, x, chunk_size=20, sparse_input=False, progress=False)


def test_a_forked_child_computes_in_itself(client) -> None:
    """Kedro's ParallelRunner forks node processes: they must not wait on the
    parent's client, whose connection thread they lack."""
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        ok = False
        try:
            ok = distributed_client() is None and reduce_blocks(
                lazy_matrix(np.eye(4, dtype=np.float32), chunk_rows=2),
                lambda b: b.sum(),
            ) == [2.0, 2.0]
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on the inherited client")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(done[1]) == 0


def test_an_existing_cluster_is_used_and_left_running(client, store) -> None:
    """``dask.address``: a client of its own, closed after; the cluster stays."""
    x = read_lazy(store, chunk_rows=CHUNK_ROWS).X
    with dask_client(DaskParams(address=client.scheduler.address)) as other:
        assert other is not client and distributed_client() is other
        sums = reduce_blocks(x, lambda block: float(block.sum()))
    assert other.status == "closed"
    assert client.run(lambda: 1)  # the workers are still up
    assert sums == [float(b.sum()) for _, b in blocks(x)]


# The tests that kill workers start clusters of their own: a nanny may take
# over a minute to restart a worker on a busy machine, and no other test
# should wait on it.


def test_a_worker_death_is_retried(store, tmp_path) -> None:
    x = read_lazy(store, chunk_rows=CHUNK_ROWS).X
    with _local_cluster(3):  # one death per pass, a worker alive for each retry
        sums = _sums(x, tmp_path / "sums_died")
        torch.manual_seed(0)
        z = _embeddings(x, tmp_path / "embed_died")
    # a worker died in each pass; its tasks (and F, when it held it) were
    # computed again on a worker alive
    assert (tmp_path / "sums_died").exists() and (tmp_path / "embed_died").exists()
    parts = [b.toarray() for _, b in blocks(x)]
    np.testing.assert_allclose(sums, [p.sum() for p in parts], rtol=1e-6)
    dense = np.vstack(parts)
    torch.manual_seed(0)
    expected = _DyingEncoder(x.shape[1], "").eval()
    torch.nn.init.normal_(expected.linear.weight)
    with torch.no_grad():
        want = expected.linear(torch.from_numpy(dense)).numpy()
    np.testing.assert_allclose(z, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("run", "what"),
    [(_sums, "A pass over the cells"), (_embeddings, "Embedding 150 cells")],
)
def test_a_worker_death_dask_gives_up_on_says_how_to_resume(
    store, tmp_path, run, what
) -> None:
    x = read_lazy(store, chunk_rows=1000).X  # one block: one death
    with (
        _local_cluster(1, **{"distributed.scheduler.allowed-failures": 0}),
        pytest.raises(RuntimeError) as raised,
    ):
        run(x, tmp_path / "died")
    message = str(raised.value)
    assert message.startswith(f"{what}")
    assert "failed: Dask gave up on task" in message
    assert "tcp://" in message  # the worker
    assert "allowed-failures" in message and "memory" in message
    assert "rerun the same command with --only-missing-outputs" in message
