import subprocess
import sys

import pytest

from scdd.allocator import _libc, freed_memory_kept

#: In a fresh interpreter: RSS (MB) kept after 20 tensors of 10 MB were
#: freed, and RSS left after the block, relative to before the tensors.
PROBE = """
import contextlib, os, sys, torch
from scdd.allocator import freed_memory_kept
page = os.sysconf("SC_PAGE_SIZE") / 2**20
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
block = freed_memory_kept() if sys.argv[1] == "kept" else contextlib.nullcontext()
with block:
    before = rss()
    chunks = [torch.ones(2_500_000) for _ in range(20)]
    del chunks
    kept = rss() - before
print(round(kept), round(rss() - before))
"""


def _probe(mode: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kept, after = map(int, out.split())
    return kept, after


@pytest.mark.skipif(_libc() is None, reason="no glibc mallopt here")
def test_freed_tensors_stay_in_the_heap_inside_the_block_only() -> None:
    kept, after = _probe("kept")
    assert kept > 150  # most of the 200 MB freed stays for the next step
    assert after < 50  # and goes back to the kernel after the block
    default_kept, _ = _probe("default")
    assert default_kept < 100  # glibc alone hands it back at once


def test_the_block_is_harmless_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("scdd.allocator._libc", lambda: None)
    with freed_memory_kept() as took:
        assert took is False
