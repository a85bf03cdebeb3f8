"""The file lock that guards a list's index files (its cache and quarantine file, ``index_files.index_paths``).

Every process that builds, reads or records into a list's index takes it: the process that probes (and one that
records a quarantine) holds it alone, the ranks that read a finished index share it. No DALI import here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
from typing import Iterator

__all__ = ["locked"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def locked(lock_path: str, shared: bool = False) -> Iterator[None]:
    """Inter-process lock (``flock`` on ``lock_path``): exclusive for writers, ``shared`` for readers, so that the
    ranks of a run read a finished index at the same time; released when the block exits or the process dies."""
    try:
        f = open(lock_path, "a+")
    except PermissionError:  # another user's lock beside a shared dataset: a local flock needs no write access
        f = open(lock_path)
    with f:
        held = _flock(f, shared)
        try:
            yield
        finally:
            if held:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _flock(f, shared: bool) -> bool:
    """Take the lock on open file ``f``; False (with a warning) where a read-only file cannot be locked."""
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        return True
    except OSError as e:
        # NFS emulates flock with fcntl locks, and an exclusive one needs the file open for writing.
        if e.errno != errno.EBADF or f.mode != "r":
            raise
        logger.warning("cannot lock %s (another user's file, on a file system that locks only files open for "
                       "writing): going on without the lock; builds that run at once may probe the same videos",
                       f.name)
        return False
