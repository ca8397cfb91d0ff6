"""Keep freed memory inside the process, so that a step of MD does not pay the kernel to map its tensors again.

glibc's malloc serves every block above its mmap threshold (128 KiB to 32 MiB) with a fresh ``mmap`` and gives it
back with ``munmap`` when torch frees it. One force call on a 1000-atom slab allocates and frees hundreds of MB of
edge features, so every call faulted all of those pages in again: measured on a 2-core VM, more system time than
model time (SchNet, 1002 atoms: 2.5 s per call, 1.4 s of it in the kernel). With mmap off and a trim threshold of
2 GiB the freed blocks stay in the heap and the next call reuses them (1.4 s per call, 0.2 s in the kernel); the
price is that the process keeps its peak memory, as the CUDA caching allocator, jemalloc and tcmalloc do.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1

_kept = False


def keep_freed_memory() -> bool:
    """Switch glibc's malloc to keep freed blocks for reuse, once per process; False where libc is not glibc."""
    global _kept
    if _kept:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS, Windows): keep the platform's allocator
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _kept = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _kept
