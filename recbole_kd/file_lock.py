"""An exclusive lock on a file's name, held across processes: two runs that would write the same
file take turns, the second waiting until the first is done.

It uses ``fcntl.flock`` on ``<path>.lock``, which the operating system releases when the process
ends, however it ends. Where ``fcntl`` is missing (Windows) the block runs unlocked. The lock
file stays in place: removing it would let a third process lock a new file while a second still
waits on the old one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from logging import getLogger

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


@contextmanager
def locked(path: str, waiting_message: str) -> Iterator[None]:
    """Hold the lock of ``path`` for the block; log ``waiting_message`` if another process holds
    it and this one has to wait."""
    if fcntl is None:
        yield
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            getLogger().info(waiting_message)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
