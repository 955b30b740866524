"""Keep freed memory in the process while a model trains, so a step does not
fault it in again.

A CPU training step of torch allocates and frees tensors of 1-30 MB (the
transformer's tokens for 256 cells of 12k genes are 19 MB each). glibc's
malloc hands memory back to the kernel once more than twice the largest
recently freed chunk lies free at the top of the heap, and the next step
touches it again page by page: on 12.5k genes the transformer's reference
spent a third of its time in the kernel (docs/scale.md).
:func:`freed_memory_kept` fixes glibc's thresholds for the length of a
training loop so that up to :data:`KEPT_BYTES` stay in the heap, then hands
the memory back. Without glibc's ``mallopt`` (macOS, musl) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Iterator
from functools import cache

#: mallopt parameters (glibc ``malloc.h``).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
#: Bytes: allocations below this come from the heap, larger ones from their
#: own mapping (glibc's largest allowed value on 64-bit; where its dynamic
#: threshold ends up after the first large free).
MMAP_THRESHOLD = 32 * 2**20
#: Bytes of free memory the heap keeps at its top inside the block: several
#: steps' tensors (128 MB left a third of the kernel time, 512 MB none).
KEPT_BYTES = 512 * 2**20
#: Bytes the heap grows by beyond a request inside the block, so growth is rare.
KEPT_TOP_PAD = 64 * 2**20
#: Outside the block: glibc's own steady state (twice the mmap threshold, no
#: extra growth).
TRIM_AFTER, TOP_PAD_AFTER = 2 * MMAP_THRESHOLD, 128 * 2**10


@cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None where ``mallopt`` and ``malloc_trim`` are missing."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    ok = libc is not None and all(hasattr(libc, f) for f in ("mallopt", "malloc_trim"))
    return libc if ok else None


def _set(trim: int, top_pad: int) -> bool:
    libc = _libc()
    if libc is None:
        return False
    settings = (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, trim),
        (M_TOP_PAD, top_pad),
    )
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


@contextlib.contextmanager
def freed_memory_kept() -> Iterator[bool]:
    """Inside: freed memory up to :data:`KEPT_BYTES` stays in the heap for
    the next step. After: the heap returns what it holds beyond glibc's
    usual margin. Yields whether the setting took (False without glibc)."""
    took = _set(KEPT_BYTES, KEPT_TOP_PAD)
    try:
        yield took
    finally:
        if took:
            _set(TRIM_AFTER, TOP_PAD_AFTER)
            _libc().malloc_trim(0)
