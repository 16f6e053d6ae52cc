"""Freed memory kept in the process's heap, so that training steps stop page-faulting (glibc).

RecBole's embedding layers give a dense gradient of the whole table at every step, and the
optimizer frees it again (``zero_grad`` sets gradients to None). By default glibc serves such a
block with a fresh mapping, or returns the top of its heap to the system, once the block exceeds
thresholds it adapts as the program runs; the next step then page-faults the block back in and
the kernel zeroes it. With a 25k x 200 item table that is ~5,000 faults per gradient, several
per step. Fixing both thresholds (``mallopt``) keeps freed blocks in the heap for reuse, so the faults
stop (measured effect: docs/performance.md).

The setting is process-wide and the heap no longer shrinks after a peak. It applies where the C
library is glibc; elsewhere (macOS, Windows, musl) nothing changes.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt() parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to glibc's largest allowed mmap threshold (32 MiB on 64-bit) come from the heap.
_MMAP_THRESHOLD = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)
# The heap's free top is returned to the system only beyond 1 GiB.
_TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Sets glibc's mmap and trim thresholds once and for all; True when glibc accepted both."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library this process already uses
    except OSError:
        return None
    # Only glibc defines gnu_get_libc_version; other C libraries' mallopt differ or are absent.
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc
