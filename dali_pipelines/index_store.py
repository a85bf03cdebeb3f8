"""The dataset index's cache file (schema version 8): the table of probed facts (:mod:`.video_table`) of one list,
saved and read again.

The cache file, ``<list>.index.npz``, is a NumPy ``.npz`` archive (never pickled) holding:

- ``header``: UTF-8 JSON: ``version`` (:data:`INDEX_SCHEMA_VERSION`), ``list``, ``root``, ``rows``, the string
  tables ``texts`` (``{"codec": [...], ...}``) and ``reasons``;
- ``paths`` and ``path_offsets``: the relative paths (:class:`filelist.PathTable`), the key of each row;
- one array per column of :data:`.video_table.COLUMNS`, in the same row order.

A file of another version, or whose arrays do not have exactly these names, types and lengths is ignored (every video
is probed again), never read with the wrong meaning. A file for another root (the same folder reached through a
symbolic link is the same root: :func:`same_root`) is read with that root (``IndexCache.other_root``): a dataset
moved or mounted elsewhere keeps its files' sizes and mtimes, and a build reuses a record only for a file that has
them, as under any root. Version 8 adds the ``rotation`` column (the display turn, which ``predict`` notes) to
version 7's arrays. Version 7 has version 6's arrays; what changed is what a good AVI row means: an AVI cut short is
no longer taken for a shorter good video (:data:`_AVI_CHECKED_SINCE`). Version 6 adds the ``nvdec_numbering`` column
to version 5's arrays. Version 5 has version 4's arrays; what changed is what a bad row means: a verdict of this
code's checks. A version 7, 6, 5 or 4 cache, a version 3 one (version 4 less the ``colorspace`` column) and a version
2 one (``.index.json``, version 3's fields as JSON records) are migrated: their good records are read into the table
(the columns added since, not recorded: '', a rotation -1), the bad verdicts of those before version 5 dropped
(:data:`_CHECKS_SINCE`: their videos are probed again), so are their good AVI rows before version 7
(:data:`_AVI_CHECKED_SINCE`: only those videos are probed again), and saved as version 8. A build probes their
untagged quick probes' videos again (:meth:`VideoTable.counted_before_edit_lists`: those frame counts may include
frames that never decode), tags and all; the fully decoded ones' DALI-decoded frames stay in DALI's BT.601 colours
until the cache is deleted or a video changes (the log says so).

No DALI import here.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from evautil.files import atomic_write
from evautil.progress import counted

from .filelist import PathTable
from .index_lock import locked  # noqa: F401 (importable here, its home before index_lock.py)
from .video_table import BAD, COLUMNS, GOOD, ROTATION_NOT_RECORDED, TEXTS, VideoInfo, VideoTable

__all__ = ["INDEX_SCHEMA_VERSION", "IndexCache", "load_cache", "load_cache_and_root", "same_root", "save_cache",
           "stat_key"]

logger = logging.getLogger(__name__)

# The meaning of the cache file; bump it whenever a column is added, removed or changes meaning.
INDEX_SCHEMA_VERSION = 8
# The versions read and migrated; a column added since a file's version is read as all '' (code 0: not recorded), a
# number column as its value of _NOT_RECORDED.
_MIGRATED_VERSIONS = (3, 4, 5, 6, 7)
# Version 4 added the colour matrix tag, version 5 changed no array (see _CHECKS_SINCE), version 6 added NVDEC's
# numbering verdict, version 7 changed no array (see _AVI_CHECKED_SINCE), version 8 added the display turn.
_ADDED_IN = {"colorspace": 4, "nvdec_numbering": 6, "rotation": 8}
_NOT_RECORDED = {"rotation": ROTATION_NOT_RECORDED}
# The first version whose bad verdicts are those of this code's checks. A cache of an older version may hold
# verdicts they no longer give (an MP4 edit list's hidden frames taken for a truncation, a WebM whose audio outlasts
# its video, a run-time failure of a frame count that took in such frames), which left a video out until the cache
# was deleted: its bad rows are dropped when it is read, and their videos probed again (only those, not a whole
# Kinetics-size list). Raise it with INDEX_SCHEMA_VERSION when a check changes.
_CHECKS_SINCE = 5
# The first version whose good AVI rows passed the header's chunk count: an older probe took the duration FFmpeg
# estimates from a cut file's size, so an MJPEG or MPEG-4 AVI cut short was recorded as a good video with fewer
# frames (a full decode too: it decodes the frames left). No column says what container a row is, so the good rows
# whose path ends in '.avi' (any case) are dropped when the file is read and only their videos probed again. Bad
# rows stay (the check only refuses more: _CHECKS_SINCE stays). Other full decodes' good rows are kept although a
# full decode now also refuses a picture size that changes within the stream: no record tells such a video apart,
# probing them all again would be a full decode of a Kinetics-size list, and the decode routes quarantine such a
# video at its first sample anyway.
_AVI_CHECKED_SINCE = 7
# The last version written as JSON records, which load_cache migrates.
_JSON_SCHEMA_VERSION = 2

@dataclass
class IndexCache:
    """The cache of one list: ``rel_paths[i]`` is the video of ``table`` row ``i``. ``migrated`` when it was read
    from a version 2, 3, 4, 5, 6 or 7 file (then it is saved as version 8); ``other_root`` when it was written for
    another root than the one it was read for (then it is saved for that one)."""

    rel_paths: PathTable
    table: VideoTable
    migrated: bool = False
    other_root: str | None = None  # the root the file was written for, when it is not the one asked for

    @classmethod
    def empty(cls) -> "IndexCache":
        return cls(PathTable.from_paths([]), VideoTable.empty(0))


# A damaged byte in a zip entry's header reads as an unsupported compression method or flag (NotImplementedError),
# which stopped the build with a traceback that named no file.
_ARCHIVE_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, NotImplementedError,
                   zipfile.BadZipFile)


def same_root(recorded: object, root: str) -> bool:
    """Whether a cache written for the video root ``recorded`` is one for ``root``: the same folder, also when either
    is reached through a symbolic link (``--root`` a link to the dataset). A cache of another root is read all the
    same (``IndexCache.other_root``): each video's record is reused only while its file keeps the recorded size and
    mtime, whatever the root."""
    return isinstance(recorded, str) and (recorded == root or os.path.realpath(recorded) == os.path.realpath(root))


def load_cache(cache_path: str, root: str, json_path: str = "", warn: bool = True) -> IndexCache | None:
    """The cache of a list: the version 8 (or 7, 6, 5, 4 or 3, migrated) file ``cache_path``, else (when given) a
    version 2 ``json_path`` migrated; None when neither is there, readable and of a version read here (a file written
    for another root is read with that root: ``IndexCache.other_root``). Not ``warn``: an unreadable file is not logged
    (a read that is followed by another of the same file that is)."""
    try:
        with np.load(cache_path, allow_pickle=False) as archive:
            return _read_archive(archive, cache_path, root)
    except FileNotFoundError:
        return _migrate_json(json_path, root, warn) if json_path else None
    except _ARCHIVE_ERRORS as e:
        if warn:
            logger.warning("ignoring unreadable index cache %s (%s); re-probing", cache_path, e)
        return None


def load_cache_and_root(cache_path: str) -> tuple[str, IndexCache] | None:
    """A version 8 (or 7, 6, 5, 4 or 3, migrated) cache whatever root it was written for, with that root; None when it
    is not there or not readable as either (an unreadable one is logged)."""
    try:
        with np.load(cache_path, allow_pickle=False) as archive:
            root = json.loads(archive["header"].tobytes().decode("utf-8")).get("root")
            cache = _read_archive(archive, cache_path, root) if isinstance(root, str) else None
    except FileNotFoundError:
        return None
    except _ARCHIVE_ERRORS + (json.JSONDecodeError, UnicodeDecodeError) as e:
        logger.warning("ignoring unreadable index cache %s (%s)", cache_path, e)
        return None
    return (root, cache) if cache is not None else None


def _read_archive(archive, cache_path: str, root: str) -> IndexCache | None:
    header = json.loads(archive["header"].tobytes().decode("utf-8"))
    if not isinstance(header, dict):
        return None
    # A dataset moved or mounted elsewhere (DATA.ROOT changed) had every relative row probed again, hours for a
    # Kinetics-size list: its records are read, and reused where the file under this root has the same size and mtime.
    recorded_root = header.get("root")
    other_root = None if same_root(recorded_root, root) else str(recorded_root)
    version = header.get("version")
    if version != INDEX_SCHEMA_VERSION and version not in _MIGRATED_VERSIONS:
        logger.info("index cache %s has schema version %r, this code reads %d: probing again", cache_path,
                    version, INDEX_SCHEMA_VERSION)
        return None
    later = [name for name, since in _ADDED_IN.items() if version < since]  # not in a file of this version
    columns = [name for name in COLUMNS if name not in later]
    expected = {"header", "paths", "path_offsets", *columns}
    if set(archive.files) != expected:
        raise ValueError(f"arrays {sorted(set(archive.files) ^ expected)} differ from schema version {version}'s")
    arrays = {name: archive[name] for name in columns}
    texts = header["texts"]
    if not isinstance(texts, dict):
        raise ValueError("string tables that are no mapping")
    if set(later) & set(texts):
        raise ValueError(f"a version {version} cache with string tables {sorted(set(later) & set(texts))}")
    for name in later:  # not recorded: '' (code 0) on every row, or the number that says so
        arrays[name] = np.full(len(arrays["status"]), _NOT_RECORDED.get(name, 0), COLUMNS[name])
        if name in TEXTS:
            texts = {**texts, name: [""]}
    table = VideoTable(arrays, texts, header["reasons"])
    if set(table.texts) != set(TEXTS):
        raise ValueError(f"string tables {sorted(table.texts)}, expected {sorted(TEXTS)}")
    table.check()
    paths = PathTable(archive["paths"], archive["path_offsets"])
    offsets = paths.offsets
    if (len(paths) != len(table) or offsets[0] != 0 or offsets[-1] != len(paths.blob)
            or (np.diff(offsets) < 0).any()):
        raise ValueError(f"{len(paths)} paths with inconsistent offsets for {len(table)} rows")
    migrated = version != INDEX_SCHEMA_VERSION
    if migrated:
        logger.info("migrating index cache %s (schema version %d) to version %d", cache_path, version,
                    INDEX_SCHEMA_VERSION)
        _drop_older_verdicts(table, paths, version, cache_path)
    # Rows of an older cache (a --check passes them on too): a build probes its quick probes again
    # (counted_before_edit_lists), so only its full decodes stay untagged. Said at every load.
    untagged = (table.columns["colorspace"] == 0) & (table.status == GOOD)  # code 0: ''
    kept = int(np.count_nonzero(untagged & table.columns["full_decode"]))
    if kept:
        logger.warning("index cache %s: %d of its videos (fully decoded by an index older than schema version 4) "
                       "have no colour matrix tag recorded, so the frames DALI decodes of the tagged ones (BT.709: "
                       "most HD video) keep DALI's BT.601 colours; delete it to probe every video again and record "
                       "them", cache_path, kept)
    return IndexCache(paths, table, migrated=migrated, other_root=other_root)


def _migrate_json(json_path: str, root: str, warn: bool = True) -> IndexCache | None:
    """A version 2 cache (JSON: ``{"version", "root", "videos": {rel: record}}``) as a table, also one written for
    another root (``IndexCache.other_root``); a record that does not read as version 2 is left out (its video is
    probed again)."""
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        if warn:
            logger.warning("ignoring unreadable index cache %s (%s); re-probing", json_path, e)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
        return None
    # Read for another root too, as a version 7 file is: every version 2 record carries the size and mtime of its
    # file (one without them is left out below), so only the files under this root that keep them reuse it.
    recorded_root = data.get("root")
    other_root = None if same_root(recorded_root, root) else str(recorded_root)
    if data.get("version") != _JSON_SCHEMA_VERSION:
        logger.info("index cache %s has schema version %r, this code reads %d (and migrates %d): probing again",
                    json_path, data.get("version"), INDEX_SCHEMA_VERSION, _JSON_SCHEMA_VERSION)
        return None
    videos = data["videos"]
    table = VideoTable.empty(len(videos))
    for row, rec in enumerate(videos.values()):
        try:
            size, mtime, full = int(rec["size"]), int(rec["mtime_ns"]), bool(rec.get("full_decode"))
            if "bad" in rec:
                table.set_bad(row, str(rec["bad"]), size, mtime, full)
            else:
                info = VideoInfo.from_record(rec["info"])
                if (info.size, info.mtime_ns) == (size, mtime):
                    table.set_good(row, info, full)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            table.clear(np.asarray([row]))
    logger.info("migrating index cache %s (schema version %d) to version %d", json_path, _JSON_SCHEMA_VERSION,
                INDEX_SCHEMA_VERSION)
    paths = PathTable.from_paths(videos)
    _drop_older_verdicts(table, paths, _JSON_SCHEMA_VERSION, json_path)
    return IndexCache(paths, table, migrated=True, other_root=other_root)


def _drop_older_verdicts(table: VideoTable, paths: PathTable, version: int, cache_path: str) -> None:
    """Make the rows of a cache of schema ``version`` UNKNOWN whose verdict a check changed since gives otherwise:
    its bad rows (:data:`_CHECKS_SINCE`) and its good AVI rows (:data:`_AVI_CHECKED_SINCE`); a build probes their
    videos again. Dropped here, as the file is read, so that nothing saves them again under this version (a run-time
    quarantine recorded into a cache no build has migrated yet)."""
    if version < _CHECKS_SINCE:
        rows = np.flatnonzero(table.status == BAD)
        if rows.size:
            table.clear(rows)
            logger.info("index cache %s: probing %s again that schema version %d recorded as bad: the checks "
                        "have changed since (an MP4 edit list's hidden frames were taken for a truncation)", cache_path,
                        counted(int(rows.size), "video"), version)
    if version < _AVI_CHECKED_SINCE:
        rows = np.flatnonzero((table.status == GOOD) & _ends_in_avi(paths))
        if rows.size:
            table.clear(rows)
            logger.info("index cache %s: probing %s again that schema version %d recorded as good: an AVI cut short "
                        "was taken for a shorter good video", cache_path, counted(rows.size, "AVI video"), version)


def _ends_in_avi(paths: PathTable) -> np.ndarray:
    """A mask of the paths whose name ends in '.avi', in any case (without a Python string per path: a cache may hold
    a Kinetics-size list)."""
    starts, ends = paths.offsets[:-1], paths.offsets[1:]
    long_enough = ends - starts >= 4
    tails = np.zeros((len(paths), 4), np.uint8)
    tails[long_enough] = paths.blob[ends[long_enough, None] - 4 + np.arange(4)]
    # ASCII letters differ from their capitals by bit 0x20 alone; the dot is compared as it is
    return long_enough & (tails[:, 0] == ord(".")) & ((tails[:, 1:] | 0x20) == np.frombuffer(b"avi", np.uint8)).all(1)


def save_cache(cache_path: str, list_path: str, root: str, rel_paths: PathTable, table: VideoTable) -> None:
    """Write the cache atomically (a reader never sees half a file); the string tables lose unused entries."""
    table = _without_unused_strings(table)
    header = {"version": INDEX_SCHEMA_VERSION, "list": list_path, "root": root, "rows": len(table),
              "texts": table.texts, "reasons": table.reasons}
    arrays = {"header": np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8),
              "paths": rel_paths.blob, "path_offsets": rel_paths.offsets, **table.columns}
    atomic_write(cache_path, lambda f: np.savez(f, **arrays))


def _without_unused_strings(table: VideoTable) -> VideoTable:
    """The table with each string table cut to the strings its rows use (runtime quarantines and dropped rows
    leave reasons behind)."""
    columns, coded = dict(table.columns), {**table.texts, "reason": table.reasons}
    out: dict[str, list[str]] = {}
    for name, strings in coded.items():
        counts = np.bincount(columns[name], minlength=len(strings))  # (not np.unique: a build saves every minute)
        counts[0] = 1  # code 0 ('') stays first
        used = np.flatnonzero(counts)
        remap = np.zeros(len(strings), columns[name].dtype)
        remap[used] = np.arange(len(used))
        columns[name] = remap[columns[name]]
        out[name] = [strings[i] for i in used.tolist()]
    reasons = out.pop("reason")
    return VideoTable(columns, out, reasons)


def stat_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
