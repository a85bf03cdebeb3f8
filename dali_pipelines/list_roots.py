"""Where a list's paths lead: the folder a tool joins them to (:func:`list_root`), and the refusal of a list none
of whose files exists there (:func:`check_list_root`), said with the likely cause (a wrong root, a frame-count
column, Windows separators, a list linked from another folder)."""

from __future__ import annotations

import os

import numpy as np

from .data_errors import DataListError
from .list_lines import split_list_line
from .video_list import VideoList

__all__ = ["list_root", "check_list_root"]


def list_root(list_path: str, root: str = "") -> str:
    """The folder a list's relative paths are joined to where a tool reads a list on its own (``predict``,
    ``verify_data``, the benchmarks' ``--list``): ``root`` when given, else the list's own folder (absolute). A
    training run's lists are joined to DATA.ROOT instead."""
    return root or os.path.dirname(os.path.abspath(list_path))


def check_list_root(videos: VideoList, root_name: str, present: np.ndarray | None = None,
                    default: str = "") -> None:
    """Refuse a list every video of which would be missing, which indexing finds only after looking for each one
    (and would mark in a quarantine file): its root (named ``root_name``, e.g. ``DATA.ROOT``) is not a folder while
    its first path is relative to it, or none of its files exists where its paths lead (relative to another folder
    than the root, or, with an empty root, than the working folder). ``present``: ``VideoList.stat_keys``'s third
    column; without it the files are looked up only when the first one is missing (one stat for a good list).
    ``default``: what the root is when ``root_name`` was not set (e.g. "the list's own folder"), named instead of
    ``root_name = root``, which would claim a setting the user did not make.

    Raises:
        DataListError: naming the root, the list and its first path.
    """
    if not len(videos) or (os.path.exists(videos.path(0)) if present is None else present.any()):
        return
    first, root, listed = videos.rel_path(0), videos.root, f"the {len(videos)} videos listed in {videos.list_path}"
    named = f"{default} {root} (no {root_name} given)" if default else f"{root_name} = {root}"
    if root and not os.path.isabs(root):  # taken from where the command runs, which a job script may not expect
        named += f" (from the working folder {os.getcwd()})"
    if root and not os.path.isdir(root) and not os.path.isabs(first):
        raise DataListError(f"{named} is not an existing folder, and the paths of {videos.list_path} are relative "
                            f"to it (first: {first!r}): set {root_name} to the folder they are relative to")
    if present is None and videos.stat_keys()[2].any():  # its first file missing: are the others?
        return
    name, last = split_list_line(first) or ("", "")
    if last.isdigit() and os.path.exists(os.path.join(root, name)):  # not the root: a column too many
        raise DataListError(
            f"none of {listed} exists: the first path, {first!r}, is the file {name!r} and a number (a frame count "
            "column, as in mmaction2's lists?); a list line is '<path> <label>': remove that column")
    if "\\" in first and os.path.exists(os.path.join(root, first.replace("\\", "/"))):  # not the root either
        raise DataListError(f"none of {listed} exists: its paths use '\\' between folders, as on Windows (first: "
                            f"{first!r}): write them with '/'")
    fix = f"(first: {first!r}): set {root_name} to the folder its paths are relative to"
    real_list = os.path.realpath(videos.list_path)
    if (os.path.islink(videos.list_path) and not os.path.isabs(first)
            and os.path.exists(os.path.join(os.path.dirname(real_list), first))):
        # a list linked into another folder (lists/ beside the code): its paths are the target's folder's
        fix = (f"(first: {first!r}); {videos.list_path} is a symbolic link to {real_list}, whose folder holds "
               f"that file: set {root_name} to {os.path.dirname(real_list)}")
    if os.path.isabs(first):
        raise DataListError(f"none of {listed} exists (first: {first!r}; its paths are absolute)")
    if root:
        raise DataListError(f"{named} holds none of {listed}, whose paths are relative to it {fix}")
    raise DataListError(f"{root_name} is empty, and none of {listed} exists from the working folder {os.getcwd()} "
                        f"{fix}")
