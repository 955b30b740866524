import os
import subprocess
import sys

import pytest

from scdd.threads import available_cores, busy_cores, resolve_threads


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
