"""
Giving back to the system the memory that large transient work freed.

Python frees the objects of a scan of 50,000 files, a comparison or a batch
of agent statuses as soon as they are dropped, but the C allocator keeps
the pages: glibc's malloc holds freed memory in its arenas (one per thread
that allocated, and the work runs in a pool of threads), so the process
stays as big as its busiest moment.  C{malloc_trim(0)} returns every whole
free page of every arena to the system.  It exists only in glibc (Linux):
elsewhere L{releaseFreeMemory} does nothing.
"""

from __future__ import annotations

import ctypes
import platform
import sys
import threading
from typing import Callable

__all__ = ["releaseFreeMemory"]


def _findTrim() -> Callable[[int], int] | None:
    """glibc's C{malloc_trim}, or L{None} where there is none."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_trim = _findTrim()
_lock = threading.Lock()


def releaseFreeMemory() -> bool:
    """
    Return the C allocator's free pages to the system (blocking: up to
    tens of milliseconds with hundreds of MB freed in scattered pieces;
    call it from a thread); whether this platform can.  Concurrent calls do not wait: one trim is enough.
    """
    if _trim is None:
        return False
    if _lock.acquire(blocking=False):
        try:
            _trim(0)
        finally:
            _lock.release()
    return True
