"""Where a list's index files lie: its cache, quarantine file and lock, beside the list or, when the list's folder
is read-only, in a per-user cache folder under a name drawn from the list's real path (:func:`index_paths`).

Every reader and writer of those files (``index.build_index``, ``probed_caches.save_probed_index``, the tools and
benchmarks) asks here, so that they agree on the place. No DALI import here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from typing import NamedTuple

from evautil.files import atomic_write

from .index_lock import locked

__all__ = ["IndexPaths", "index_paths"]

logger = logging.getLogger("dali_pipelines.index")  # the index's logger: its users set handlers and levels there


def _user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "eva_dali_video")


def _dir_writable(directory: str) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


class IndexPaths(NamedTuple):
    """The files of a list's index: the cache (``.index.npz``), the quarantine list, the lock, where a version
    2 cache (``.index.json``) would be (read once to migrate it, then removed), and ``beside``: the cache beside
    the list (its real file, or the path given) that a cache kept elsewhere started from and learns from while it
    is newer ('' for a cache beside the list's real file, or when there is none)."""

    cache: str
    quarantine: str
    lock: str
    json_cache: str
    beside: str = ""


def index_paths(list_path: str) -> IndexPaths:
    """The index files of a list: beside it when its directory is writable, else in the per-user cache directory
    under a name derived from the list's real path (the list reached through a symbolic link has the same cache).
    A cache not beside the list's real file starts as a copy of the one there, if any (:func:`_seed_cache`), and
    names it (``beside``) for a build to reuse the records it gains later."""
    list_abs = os.path.abspath(list_path)
    directory = os.path.dirname(list_abs)
    real = os.path.realpath(list_abs)
    if _dir_writable(directory):
        stem = list_abs
    else:
        cache_dir = _user_cache_dir()
        os.makedirs(cache_dir, exist_ok=True)
        stem = _user_cache_stem(cache_dir, real)
        if real != list_abs and not os.path.exists(stem + ".index.npz"):
            # named from the path as given before: a cache made so through a link is still used, not probed again
            given = _user_cache_stem(cache_dir, list_abs)
            if os.path.exists(given + ".index.npz"):
                stem = given
    beside = ""
    if stem != real:
        cache = stem + ".index.npz"
        beside = next((path for path in (list_abs + ".index.npz", real + ".index.npz")
                       if path != cache and os.path.isfile(path)), "")
        if beside:
            _seed_cache(beside, cache, stem + ".index.lock")
    return IndexPaths(stem + ".index.npz", stem + ".quarantine.txt", stem + ".index.lock", stem + ".index.json",
                      beside)


def _user_cache_stem(cache_dir: str, list_abs: str) -> str:
    digest = hashlib.sha1(os.fsencode(list_abs)).hexdigest()[:16]  # a UTF-8 path: the name it always had
    return os.path.join(cache_dir, f"{digest}.{os.path.basename(list_abs)}")


def _seed_cache(source: str, cache: str, lock: str) -> None:
    """Copy ``source``, the cache where the list lies, to ``cache`` when that does not exist yet.
    A shared dataset's lists are often indexed where they lie (``prepare_kinetics.py lists --check``, or a first
    build while the folder was writable) and then made read-only to the other users, or reached through a link in a
    user's own folder: their first builds probed every video again. Each record is still reused only while its file
    keeps the recorded size and mtime, under the cache's root, as for any cache; a copy that fails leaves the build
    to probe. Records it gains later are reused by the build (``cache_match.reuse_newer``)."""
    if os.path.exists(cache):
        return
    try:
        with locked(lock):  # the ranks of a node start at once: one copies, the others find it
            if not os.path.exists(cache):
                with open(source, "rb") as src:
                    atomic_write(cache, lambda f: shutil.copyfileobj(src, f))
    except OSError as e:  # an unreadable file beside the list, a full disk: nothing is lost but the reuse
        logger.warning("could not copy the index cache %s to %s (%s): probing its videos", source, cache, e)
