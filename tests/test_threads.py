import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from scdd import dask_engine, threads
from scdd.threads import (
    FOLLOW_INTERVAL_S,
    CoreFollower,
    available_cores,
    busy_cores,
    follow_cores,
    resolve_threads,
)


def test_a_pinned_count_is_used_as_given() -> None:
    assert resolve_threads(3) == (3, "pinned by the threads parameter")


def test_automatic_count_is_between_one_and_the_available_cores() -> None:
    n, why = resolve_threads(None)
    assert 1 <= n <= available_cores()
    assert "core(s) available" in why
    assert 0.0 <= busy_cores(0.05) <= (os.cpu_count() or 1) + 0.5


_SCRIPT = """
import scanpy as sc, torch
from scdd.threads import apply_threads
apply_threads(1)
adata = sc.datasets.pbmc68k_reduced().raw.to_adata()
sc.pp.normalize_total(adata, target_sum=1e4)
print(torch.get_num_threads())
"""


@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores to see a reset")
def test_scanpy_does_not_reset_the_torch_thread_count() -> None:
    """numba's OpenMP layer set torch to all cores on its first parallel call
    (700 x 765 is enough to trigger it); a fresh process sees it first."""
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[-1] == "1"


def test_dask_passes_use_the_chosen_count() -> None:
    import dask

    from scdd.threads import apply_threads

    before = dask.config.get("num_workers", None)
    try:
        apply_threads(1)
        assert dask.config.get("num_workers") == 1
    finally:
        dask.config.set(num_workers=before)


def test_own_spinning_threads_are_not_counted_as_busy() -> None:
    """A thread of this process spinning while the cores are sampled (as
    OpenMP workers do after a parallel region) is not someone else's load."""
    import threading
    import time

    others = busy_cores(0.3)  # other processes' load, measured alike
    stop = time.perf_counter() + 0.6

    def spin() -> None:
        while time.perf_counter() < stop:
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        busy = busy_cores(0.3)
    finally:
        spinner.join()
    assert busy - others < 0.6


class _Machine:
    """4 cores of which ``busy`` are used by other work, a clock, and the
    counts applied (nothing is applied to this process)."""

    def __init__(self) -> None:
        self.busy, self.now, self.samples = 0.0, 100.0, 0
        self.applied: list[int] = []

    def busy_cores(self, sample_s: float) -> float:
        self.samples += 1
        return self.busy


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> _Machine:
    fake = _Machine()
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.setattr(threads, "busy_cores", fake.busy_cores)
    monkeypatch.setattr(threads, "apply_threads", fake.applied.append)
    monkeypatch.setattr(threads, "time", SimpleNamespace(monotonic=lambda: fake.now))
    return fake


@pytest.fixture
def follower(monkeypatch: pytest.MonkeyPatch) -> CoreFollower:
    """A fresh follower as the module's (what ``follow_cores`` drives)."""
    fresh = CoreFollower()
    monkeypatch.setattr(threads, "FOLLOWER", fresh)
    return fresh


def _later(machine: _Machine, seconds: float = FOLLOW_INTERVAL_S) -> None:
    machine.now += seconds
    follow_cores()


def test_an_automatic_count_follows_a_neighbour_inside_a_node(
    machine: _Machine, follower: CoreFollower, caplog: pytest.LogCaptureFixture
) -> None:
    follower.start(None)
    machine.busy = 1.0
    with caplog.at_level(logging.INFO, logger="scdd.threads"):
        _later(machine)
        _later(machine)  # still busy: no change, nothing applied or logged
        machine.busy = 0.0
        _later(machine)
    assert machine.applied == [4, 3, 4]
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "Now 3 CPU thread(s)",
        "Now 4 CPU thread(s)",
    ]
    assert "1.0 busy with other work" in caplog.records[0].getMessage()


def test_the_cores_are_sampled_at_most_once_per_interval(
    machine: _Machine, follower: CoreFollower
) -> None:
    follower.start(None)
    started = machine.now
    for step in range(100):  # every step of a loop, for one interval
        machine.now = started + step * FOLLOW_INTERVAL_S / 100
        follow_cores()
    assert machine.samples == 1  # the start
    machine.now = started + FOLLOW_INTERVAL_S
    follow_cores()
    follow_cores()
    assert machine.samples == 2
    assert machine.applied == [4]  # unchanged count: not applied again


def test_before_a_node_the_count_is_sampled_and_applied_again(
    machine: _Machine, follower: CoreFollower
) -> None:
    follower.start(None)
    follower.before_node()
    assert (machine.samples, machine.applied) == (2, [4, 4])


def test_a_pinned_count_is_never_sampled(
    machine: _Machine, follower: CoreFollower
) -> None:
    assert follower.start(2) == "pinned by the threads parameter"
    machine.busy = 3.0
    for _ in range(3):
        _later(machine)
    assert machine.applied == [2]
    follower.before_node()  # re-applied before a node, still not sampled
    assert (machine.samples, machine.applied) == (0, [2, 2])


def test_without_a_run_nothing_is_sampled_or_applied(
    machine: _Machine, follower: CoreFollower
) -> None:
    _later(machine)
    follower.before_node()
    follower.start(None)
    follower.stop()  # the run ended
    machine.busy = 2.0
    _later(machine)
    follower.before_node()
    assert (machine.samples, machine.applied) == (1, [4])


def test_dask_worker_tasks_are_left_alone(
    machine: _Machine, follower: CoreFollower, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not dask_engine.in_worker_task()
    follower.start(None)
    monkeypatch.setattr(dask_engine, "in_worker_task", lambda: True)
    machine.busy = 2.0
    _later(machine)
    assert (follower.count, machine.applied) == (4, [4])


def _until(
    follower: CoreFollower, done: Callable[[int], bool], seconds: float = 5.0
) -> bool:
    """Look again (0.1 s each) until ``done(count)``, for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        follower.follow()
        if done(follower.count):
            return True
    return False


@pytest.mark.skipif(available_cores() < 2, reason="needs a core for the neighbour")
def test_a_real_neighbour_lowers_the_count_until_it_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(threads, "apply_threads", lambda n: None)
    follower = CoreFollower(interval_s=0.0)
    follower.start(None)
    if not _until(follower, lambda n: n >= 2, seconds=2.0):  # idle enough
        pytest.skip("the machine is too busy to tell a neighbour apart")
    before = follower.count
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert _until(follower, lambda n: n < before)
        lowest = follower.count
    finally:
        neighbour.kill()
        neighbour.wait()
    assert _until(follower, lambda n: n > lowest)
