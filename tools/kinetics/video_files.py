"""A split folder's video files: the refusal of a split folder that is not there, which of its entries are videos,
why one cannot go into a list, and the ``Video`` record that both layouts give (class folders: ``scan.py``; the flat
folders of the official downloads: ``annotations.py``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .common import KineticsError
from .reencode_report import REPORT_FILES
from .video_names import is_video_file, printable_path, unlistable_reason, youtube_id

__all__ = ["SKIP_MISSING", "SKIP_EMPTY", "SKIP_UNREADABLE", "SKIP_UNLISTABLE", "SKIP_UNANNOTATED", "SKIP_UNDECODABLE",
           "SKIP_OTHER_SPLIT", "SKIP_KINDS", "Video", "own_file", "video_entries", "video_skip", "refuse_missing_split",
           "broken_link", "in_other_case"]

# Why a video file found in a split is left out of the lists (the per-split counts of DatasetScan.skipped_counts);
# each skipped file's own reason, in DatasetScan.skipped, says more. In the annotated layout "missing" also counts
# the CSV rows without a video file, "not in annotations" the video files no CSV row names, and "listed in the
# other split" the rows of a video both CSVs list whose file lies in the other split's folder (listed there only).
SKIP_MISSING, SKIP_EMPTY, SKIP_UNREADABLE, SKIP_UNLISTABLE, SKIP_UNANNOTATED, SKIP_UNDECODABLE = (
    "missing", "empty", "unreadable", "name not listable", "not in annotations", "undecodable (--check)")
SKIP_OTHER_SPLIT = "listed in the other split"
SKIP_KINDS = (SKIP_MISSING, SKIP_OTHER_SPLIT, SKIP_EMPTY, SKIP_UNREADABLE, SKIP_UNLISTABLE, SKIP_UNANNOTATED,
              SKIP_UNDECODABLE)


@dataclass(frozen=True)
class Video:
    """One video file of a dataset split.

    Attributes:
        dataset: dataset name given on the command line (e.g. ``k400``).
        split: ``train`` or ``val`` (the role, whatever the folder is called; in the annotated layout the split
            of the CSV that lists the video).
        class_name: class name (the folder name or the annotation's label, possibly with underscores turned into
            spaces).
        path: absolute path (``os.path.abspath``, symlinks kept so paths stay under the data root).
    """

    dataset: str
    split: str
    class_name: str
    path: str

    @property
    def file_name(self) -> str:
        return os.path.basename(self.path)

    @property
    def youtube_id(self) -> str:
        return youtube_id(self.file_name)


def own_file(name: str) -> bool:
    """Whether ``name`` is a file this tool writes into a video tree: a re-encode's report, by default in its --dst
    (the split folder when one split is re-encoded), is no stray entry of the tree."""
    return name in REPORT_FILES


def video_entries(folder: str, ignored: list[str]) -> list[os.DirEntry]:
    """The video files of ``folder`` (dangling symlinks with a video name included), sorted by name; its other
    entries, but hidden ones and the tool's own files (:func:`_own_file`), go to ``ignored``."""
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    videos = []
    for f in entries:
        # A video's name whose symlink target is gone (a moved or half-synced download) is a missing video,
        # not a non-video entry.
        dangling = is_video_file(f.name) and f.is_symlink() and not os.path.exists(f.path)
        if dangling or (is_video_file(f.name) and f.is_file()):
            videos.append(f)
        elif not f.name.startswith(".") and not own_file(f.name):
            ignored.append(f.path)
    return videos


def video_skip(f: os.DirEntry, rel_path: str) -> tuple[str, str] | None:
    """``(reason, kind)`` when the video entry ``f`` (from :func:`video_entries`), listed as ``rel_path``, cannot
    go into a list; None when it can."""
    if f.is_symlink() and not os.path.exists(f.path):
        return f"missing: dangling symlink (to {os.readlink(f.path)!r})", SKIP_MISSING
    if f.stat().st_size == 0:
        return "empty file (0 bytes)", SKIP_EMPTY
    if not os.access(f.path, os.R_OK):
        return "not readable (permission denied)", SKIP_UNREADABLE
    why = unlistable_reason(rel_path)
    if why is not None:
        return f"cannot be written to a video list: {why}", SKIP_UNLISTABLE
    return None


def broken_link(path: str, kind: str) -> str | None:
    """Why ``path``, a symbolic link that is not a ``kind`` ("folder" or "file"), is not one: it names the link's
    target ("does not exist" sent the user looking for a path that is there, as a link). None when ``path`` is not a
    link. Every "does not exist" of an input says it alike."""
    if not os.path.islink(path):
        return None
    gone = (f"is not a {kind}" if os.path.exists(path)
            else "does not exist (or is a link loop): mount or fix its target")
    return f"is a symbolic link to {printable_path(os.readlink(path))!r}, which {gone}"


def refuse_missing_split(name: str, split_root: str, expected: str, split: str | None = None) -> None:
    """Raise KineticsError unless the split folder ``split_root`` of dataset ``name`` is a folder; ``expected``
    (what the folder should hold, and how to name another) ends the message. Both layouts say it alike. A folder
    beside it of the same name in another case (``Val`` for ``val``) is named, with the flag of ``split`` (train or
    val) that reads it."""
    if os.path.isdir(split_root):
        return
    link = broken_link(split_root, "folder")
    if link:
        raise KineticsError(f"dataset {name}: split folder {printable_path(split_root)!r} {link} ({expected})")
    other = in_other_case(split_root, "folder")
    if other is not None and split is not None:
        raise KineticsError(f"dataset {name}: split folder {split_root!r} does not exist, but {other!r} does, its name "
                            f"in another case: pass --{split}-dir {os.path.basename(other)}")
    raise KineticsError(f"dataset {name}: split folder {split_root!r} does not exist ({expected})")


def in_other_case(path: str, kind: str) -> str | None:
    """The path of a ``kind`` ("folder" or "file") beside ``path`` whose name is its name in another case (``Val``
    for ``val``, ``Train.csv`` for ``train.csv``), or None: on a file system that tells cases apart, "does not exist"
    left the user to spot the capital letter."""
    parent, name = os.path.split(path)
    try:
        with os.scandir(parent or ".") as it:
            same = sorted(e.name for e in it if e.name.casefold() == name.casefold()
                          and (e.is_dir() if kind == "folder" else e.is_file()))
    except OSError:  # no parent folder to look in: the plain message says enough
        return None
    return os.path.join(parent, same[0]) if same else None
