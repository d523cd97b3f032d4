"""Freed tensor memory goes back to the OS on CPU runs (glibc's malloc).

glibc serves allocations below its mmap threshold from the heap and raises that threshold
(up to 32 MiB) each time a mapped block is freed, so after the first step most activation
tensors come from the heap, where freed blocks stay resident. On CPU training that kept the
resident size ~40% above the live bytes (bench/RESULTS.md, "Run planner"): a fixed threshold
maps every tensor of at least 1 MiB on its own and unmaps it when it is freed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 1 << 20


def return_freed_memory_to_os(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes for this process (disabling its dynamic
    raise). Returns False where there is no glibc (other C libraries, other systems)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
