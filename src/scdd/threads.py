"""One CPU thread count for torch, numba (scanpy), BLAS and dask, chosen per run.

On a shared machine, more compute threads than free cores makes every
parallel region wait for a thread the scheduler has parked: a 2-core machine
with one other busy process ran torch 8x slower with 2 threads than with 1.
And numba's OpenMP layer (used by ``sc.pp.normalize_total``) silently resets
torch's thread count to the number of cores on its first parallel call unless
numba itself is held to the same count, so setting torch alone is not enough.

A run's count is held by :data:`FOLLOWER`: with ``threads: null`` it is
chosen again before each node and, through :func:`follow_cores`, every
:data:`FOLLOW_INTERVAL_S` seconds inside long loops (training, distillation,
sampling), so a node of half an hour follows the machine too.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask
import numba
import torch
from threadpoolctl import threadpool_limits

logger = logging.getLogger(__name__)

#: Seconds of work between two looks at the free cores inside a node: a
#: 0.1 s sample every 10 s costs ~1 % and still follows a neighbour's minutes.
FOLLOW_INTERVAL_S = 10.0
#: Seconds of ``/proc/stat`` one look samples (before a node or in a loop).
FOLLOW_SAMPLE_S = 0.1


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat``, or None."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [float(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(sample_s: float = 0.3) -> float:
    """Cores kept busy by other processes, sampled over ``sample_s`` seconds.

    This process's own threads are subtracted: right after a node, torch's or
    OpenMP's worker threads may still spin for a while, and counting them as
    someone else's load made the next node run on one thread (SCDG training
    took 50 s instead of 32 s). Returns 0 where ``/proc/stat`` is not
    available.
    """
    first = _cpu_times()
    if first is None:
        return 0.0
    own_start, wall_start = time.process_time(), time.perf_counter()
    time.sleep(sample_s)
    second = _cpu_times()
    own = (time.process_time() - own_start) / (time.perf_counter() - wall_start)
    if second is None or second[1] <= first[1]:
        return 0.0
    share = (second[0] - first[0]) / (second[1] - first[1])
    return max(0.0, share * (os.cpu_count() or 1) - own)


def resolve_threads(threads: int | None, *, sample_s: float = 0.3) -> tuple[int, str]:
    """The thread count for a ``threads`` parameter, and why it was chosen.

    ``None`` takes the available cores that other processes are not keeping
    busy right now (sampled for ``sample_s`` seconds; at least 1); an integer
    is used as it is.
    """
    if threads is not None:
        return int(threads), "pinned by the threads parameter"
    cores = available_cores()
    busy = min(busy_cores(sample_s), cores - 1)
    free = max(1, cores - round(busy))
    return free, f"{cores} core(s) available, {busy:.1f} busy with other work"


def apply_threads(n: int) -> None:
    """Hold torch, numba, the BLAS/OpenMP pools and dask's threaded scheduler
    (the chunked passes over cells) to ``n`` threads."""
    dask.config.set(num_workers=n)
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(n)


class _TransientPool:
    """One thread pool for Dask's threaded scheduler, shared by every block
    open at once (Kedro's ``--async`` saves outputs in parallel), installed
    by the first block to open and shut down by the last to close."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._pool: ThreadPoolExecutor | None = None
        self._config: Any = None

    def __enter__(self) -> None:
        with self._lock:
            if not self._users:
                workers = dask.config.get("num_workers", None) or available_cores()
                self._pool = ThreadPoolExecutor(workers)
                self._config = dask.config.set(pool=self._pool)
            self._users += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users:
                return
            self._config.__exit__(None, None, None)
            pool, self._pool, self._config = self._pool, None, None
        pool.shutdown(wait=True)


_TRANSIENT_POOL = _TransientPool()


def transient_dask_threads() -> _TransientPool:
    """Dask's threaded scheduler, inside the ``with`` block, on threads that
    exit when it (and every other such block open at the time) ends.

    Why: a thread that ran torch keeps its own OpenMP team while it lives, so
    libgomp counts more threads than cores and stops spinning between
    parallel regions. Every later small torch op in the main thread then
    waits on a futex: SCDG trained 1.4x slower after the embeddings were
    computed on Dask's (never-ending) default pool as they were written.
    """
    return _TRANSIENT_POOL


class CoreFollower:
    """The run's CPU thread count, kept to the cores other work leaves free.

    The run hook starts it from the ``threads`` parameter. An automatic count
    (``threads: null``) is sampled again before each node and, through
    :meth:`follow`, every ``interval_s`` seconds inside long loops, so a long
    node neither oversubscribes a machine that got busy nor stays small after
    it got idle; a change is applied and logged once. A pinned count is never
    re-sampled. Not started (the library used without a Kedro run): inert.
    """

    def __init__(self, interval_s: float = FOLLOW_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.automatic = False
        self.count = 0  # 0: not started
        self.checked = 0.0  # time.monotonic() of the last look

    def start(self, threads: int | None) -> str:
        """Choose and apply the count for a run's ``threads``; returns why."""
        self.automatic = threads is None
        self.count, why = resolve_threads(threads)
        self.checked = time.monotonic()
        apply_threads(self.count)
        return why

    def stop(self) -> None:
        """The run is over: inert again (library calls after it change nothing)."""
        self.automatic, self.count = False, 0

    def before_node(self) -> None:
        """Look again now when automatic; re-apply the count either way, since
        numba's OpenMP layer and BLAS may have reset it during the last node."""
        if not self.count:
            return
        if self.automatic:
            self._look()
        apply_threads(self.count)

    def follow(self) -> None:
        """One step of a loop: once ``interval_s`` passed, look again and apply
        a changed count. Costs a clock read otherwise; leaves Dask worker
        tasks alone."""
        if not self.automatic or time.monotonic() - self.checked < self.interval_s:
            return
        from scdd.dask_engine import in_worker_task  # (imports distributed)

        if not in_worker_task() and self._look():
            apply_threads(self.count)

    def _look(self) -> bool:
        """Sample the free cores; True (logged) when the count changed."""
        count, why = resolve_threads(None, sample_s=FOLLOW_SAMPLE_S)
        self.checked = time.monotonic()
        if count == self.count:
            return False
        logger.info("Now %d CPU thread(s) (%s)", count, why)
        self.count = count
        return True


#: The count of the run in this process (started by ``RunSetupHooks``).
FOLLOWER = CoreFollower()


def follow_cores() -> None:
    """Call once per step of a long loop: :meth:`CoreFollower.follow`."""
    FOLLOWER.follow()
