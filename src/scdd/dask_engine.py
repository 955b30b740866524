"""Where the passes over real cells run: in this process or on a Dask cluster.

Every pass over the cell store (:mod:`scdd.cellstore`: preprocessing, the
embedding with F, the real-cell statistics) is one Dask computation over the
store's row blocks, and any Dask scheduler runs it (``params:dask``):

* nothing set (the default): Dask's local scheduler, in this process;
  nothing is started.
* ``dask.address``: the workers of an existing ``distributed`` cluster.
* ``dask.cluster: local``: a ``distributed.LocalCluster`` of ``n_workers``
  processes started for the run and closed after it.

The results do not depend on the scheduler: blocks are the same and
per-block results are merged in the same (row) order, so the split and the
preprocessed cells are identical, statistics agree to float64 rounding
(rtol 1e-12) and embeddings to float32 rounding (atol 1e-5 on unit-norm
latents; torch may use another thread count on a worker).

:func:`dask_client` opens the client (and closes it and its cluster after);
:class:`PinWorkerThreads` gives every worker task one torch/numba/BLAS thread
(the parallelism is Dask's, across blocks); :func:`compute` runs a graph and
turns a worker death Dask gave up on, or a lost scheduler, into an error that
says what happened and how to resume.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any, Literal

import dask
import dask.base
import distributed
import distributed.client
from distributed import Client, KilledWorker, LocalCluster, WorkerPlugin
from distributed.client import FutureCancelledError
from distributed.comm.core import CommClosedError
from pydantic import model_validator

from scdd.param_group import ParamGroup, PositiveInt

#: What ends every message about a failed pass: artefacts are written to a
#: temporary file and renamed when complete, so nothing half-written is kept.
RESUME_HINT = (
    "Nothing half-written was kept (artefacts are renamed into place only when "
    "complete): rerun the same command with --only-missing-outputs to resume "
    "from the artefacts already written."
)


def distributed_client() -> Client | None:
    """The ``distributed`` client ``dask.compute`` would run on now, or ``None``
    when graphs run on a local scheduler in this process.

    Follows Dask's own choice (:func:`dask.base.get_scheduler`), so a
    ``dask.config.set(scheduler="synchronous")`` around the call wins over a
    default client, as it does for ``dask.compute``.
    """
    scheduler = dask.base.get_scheduler()
    client = getattr(scheduler, "__self__", None)
    return client if isinstance(client, Client) else None


def _forget_inherited_client() -> None:
    """A forked child (Kedro's ParallelRunner workers) inherits the parent's
    client but not the thread that runs its connection: a computation on it
    would wait forever. Drop it, so the child's passes run in the child."""
    clients = getattr(distributed.client, "_global_clients", None)
    if clients is not None:
        clients.clear()
    current = getattr(distributed.client, "_current_client", None)
    if current is not None:
        current.set(None)
    if dask.config.get("scheduler", None) in ("dask.distributed", "distributed"):
        dask.config.set(scheduler=None)


os.register_at_fork(after_in_child=_forget_inherited_client)


def _killed_message(what: str, err: KilledWorker) -> str:
    allowed = getattr(err, "allowed_failures", "?")
    return (
        f"{what} failed: Dask gave up on task {getattr(err, 'task', '?')!r}: "
        f"{str(err).rstrip('.')}. A worker process usually dies when it runs "
        "out of memory (give each worker more: fewer threads per worker, "
        "--params dask.threads_per_worker=1, fewer workers per machine, or "
        "smaller blocks, chunk_rows in conf/base/globals.yml) or when a native "
        "library crashes; the worker's log says which. Dask runs a task again "
        "on another worker up to `distributed.scheduler.allowed-failures` "
        f"times (read when the scheduler starts; now {allowed}). {RESUME_HINT}"
    )


def _lost_message(what: str, err: BaseException) -> str:
    return (
        f"{what} failed: the Dask cluster dropped the computation "
        f"({type(err).__name__}: {str(err).rstrip('.')}), most often because "
        "the connection to its scheduler was lost. Check that the scheduler "
        "(and the network to it) is up, or run without dask.address / "
        f"dask.cluster to compute in this process. {RESUME_HINT}"
    )


@contextlib.contextmanager
def worker_failures_explained(what: str) -> Iterator[None]:
    """Re-raise a worker death Dask gave up on (``KilledWorker``) or a lost
    scheduler connection inside the block as a :class:`RuntimeError` that
    names ``what`` failed, the worker error, the likely fix and how to
    resume; other errors pass unchanged."""
    try:
        yield
    except KilledWorker as err:
        raise RuntimeError(_killed_message(what, err)) from err
    except (CommClosedError, FutureCancelledError) as err:
        raise RuntimeError(_lost_message(what, err)) from err


def compute(*collections: Any, what: str = "A pass over the cells", **kwargs: Any):
    """``dask.compute(*collections, **kwargs)`` on the current scheduler,
    worker deaths explained (:func:`worker_failures_explained`)."""
    with worker_failures_explained(what):
        return dask.compute(*collections, **kwargs)


class PinWorkerThreads(WorkerPlugin):
    """Give every task on a worker one torch, numba and BLAS thread.

    A worker already runs ``threads_per_worker`` tasks at once; letting each
    also start a core's worth of torch or BLAS threads oversubscribes the
    machine (see :mod:`scdd.threads`). Runs in each worker process when it
    joins (and in those already up when registered). torch's and numba's
    counts are per thread once used: task threads a worker ran before this
    keep theirs until a task calls :func:`pin_task_thread`.
    """

    idempotent = True
    name = "scdd-pin-worker-threads"

    def setup(self, worker: Any) -> None:
        # numba's thread count is per thread, defaulting to NUMBA_NUM_THREADS
        # read at its import: set that first so the worker's task threads get
        # one as well (numba.set_num_threads below covers this thread only).
        if "numba" not in sys.modules:
            os.environ["NUMBA_NUM_THREADS"] = "1"
        from scdd.threads import apply_threads

        apply_threads(1)


def in_worker_task() -> bool:
    """Whether this thread runs a task on a ``distributed`` worker."""
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


def pin_task_thread() -> None:
    """In a task on a ``distributed`` worker, hold this thread's torch and
    numba threads to one; elsewhere do nothing.

    Both counts are per thread once a thread has used them, so
    :class:`PinWorkerThreads` reaches only the task threads a worker starts
    after it; a torch-heavy task calls this first (it costs microseconds).
    """
    if not in_worker_task():
        return
    import numba
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    if numba.get_num_threads() != 1:
        numba.set_num_threads(1)


class DaskParams(ParamGroup):
    """``params:dask``: which Dask scheduler runs the passes over real cells
    (:mod:`scdd.dask_engine`). Read by the run hook, not by nodes, so it
    never makes an artefact stale."""

    #: Address of an existing ``distributed`` scheduler (``tcp://host:8786``).
    address: str | None = None
    #: ``local``: start a ``distributed.LocalCluster`` for the run.
    cluster: Literal["local"] | None = None
    #: Worker processes of ``cluster: local``.
    n_workers: PositiveInt = 2
    #: Threads (tasks at once) per worker of ``cluster: local``.
    threads_per_worker: PositiveInt = 1

    @model_validator(mode="after")
    def _one_scheduler(self) -> DaskParams:
        # refuse both an existing cluster's address and a cluster to start
        if self.address and self.cluster:
            raise ValueError(
                f"dask.address={self.address!r} and dask.cluster={self.cluster!r} "
                "are both set: give dask.address to run on an existing cluster, "
                "or dask.cluster: local to start one for the run, and leave the "
                "other null"
            )
        return self


@contextlib.contextmanager
def _distributed_logs_at(level: int) -> Iterator[None]:
    """Hold ``distributed``'s loggers to ``level`` here and in the worker
    processes started meanwhile.

    A ``LocalCluster`` logs every worker's start, connection and shutdown at
    INFO, dozens of lines per run. Its ``silence_logs`` quietens only the
    console handler ``distributed`` adds when nothing configured logging
    before it; under Kedro (logging configured, in the driver and in each
    spawned worker) the records reach the root handlers instead.
    """
    logger = logging.getLogger("distributed")
    previous = logger.level
    logger.setLevel(level)
    # read by dask in each worker before distributed configures its loggers
    spawned = "distributed.nanny.pre-spawn-environ.DASK_LOGGING__DISTRIBUTED"
    try:
        with dask.config.set({spawned: logging.getLevelName(level).lower()}):
            yield
    finally:
        logger.setLevel(previous)


@contextlib.contextmanager
def dask_client(
    settings: DaskParams | None = None, **cluster_kwargs: Any
) -> Iterator[Client | None]:
    """A ``distributed`` client for the block, made the default scheduler.

    ``settings`` (``params:dask``; default: nothing set): ``address``:
    connect to that cluster's scheduler. ``cluster="local"``: start a
    :class:`~distributed.LocalCluster` of ``n_workers`` processes with
    ``threads_per_worker`` threads each (``cluster_kwargs`` go to it).
    Neither: yield ``None`` and start nothing (Dask's local scheduler runs
    the passes). On exit, even on error, the client and any cluster started
    here are closed; a cluster given by ``address`` is left running. Every
    worker gets :class:`PinWorkerThreads`.
    """
    settings = settings or DaskParams()
    address, cluster = settings.address, settings.cluster
    if not address and cluster is None:
        yield None
        return
    with contextlib.ExitStack() as stack:
        if cluster == "local":
            silence = cluster_kwargs.setdefault("silence_logs", logging.WARNING)
            stack.enter_context(_distributed_logs_at(silence))
            local = stack.enter_context(
                LocalCluster(
                    n_workers=settings.n_workers,
                    threads_per_worker=settings.threads_per_worker,
                    processes=True,
                    **cluster_kwargs,
                )
            )
            client = stack.enter_context(Client(local))
        else:
            try:
                client = stack.enter_context(Client(address))
            except OSError as err:  # refused, unknown host, timed out
                raise RuntimeError(
                    f"Cannot reach the Dask scheduler at dask.address={address!r}"
                    f" ({err}). Start it (`dask scheduler`, then `dask worker "
                    "ADDRESS` where the data are), fix the address, or leave "
                    "dask.address null to compute in this process."
                ) from err
        client.register_plugin(PinWorkerThreads())
        yield client


def describe_client(client: Client) -> str:
    """Where ``client`` computes: scheduler, workers, threads, dashboard."""
    info = client.scheduler_info()
    workers = info.get("workers", {})
    threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
    if "dashboard" in info.get("services", {}):
        where = f"dashboard {client.dashboard_link}"
    else:
        where = "no dashboard"
    return (
        f"Dask scheduler {client.scheduler.address} with {len(workers)} "
        f"worker(s), {threads} thread(s); {where}"
    )
