"""Where a list's index files lie: its cache, quarantine file and lock, beside the list or, when the list's folder
is read-only, in a per-user cache folder under a name drawn from the list's real path (:func:`index_paths`).

Every reader and writer of those files (``index.build_index``, ``probed_caches.save_probed_index``, the tools and
benchmarks) asks here, so that they agree on the place. No DALI import here.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

__all__ = ["IndexPaths", "index_paths"]


def _user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "eva_dali_video")


def _dir_writable(directory: str) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


class IndexPaths(NamedTuple):
    """The files of a list's index: the cache (``.index.npz``), the quarantine list, the lock, and where a version
    2 cache (``.index.json``) would be (read once to migrate it, then removed)."""

    cache: str
    quarantine: str
    lock: str
    json_cache: str


def index_paths(list_path: str) -> IndexPaths:
    """The index files of a list: beside it when its directory is writable, else in the per-user cache directory
    under a name derived from the list's real path (the list reached through a symbolic link has the same cache)."""
    list_abs = os.path.abspath(list_path)
    directory = os.path.dirname(list_abs)
    if _dir_writable(directory):
        stem = list_abs
    else:
        cache_dir = _user_cache_dir()
        os.makedirs(cache_dir, exist_ok=True)
        real = os.path.realpath(list_abs)
        stem = _user_cache_stem(cache_dir, real)
        if real != list_abs and not os.path.exists(stem + ".index.npz"):
            # named from the path as given before: a cache made so through a link is still used, not probed again
            given = _user_cache_stem(cache_dir, list_abs)
            if os.path.exists(given + ".index.npz"):
                stem = given
    return IndexPaths(stem + ".index.npz", stem + ".quarantine.txt", stem + ".index.lock", stem + ".index.json")


def _user_cache_stem(cache_dir: str, list_abs: str) -> str:
    digest = hashlib.sha1(list_abs.encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"{digest}.{os.path.basename(list_abs)}")
