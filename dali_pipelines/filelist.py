"""Parsing of the original video list format: one ``<relative path> <integer label>`` per line.

The original (mmaction2-derived) loader splits each line on whitespace, joins every token but the last back with
single spaces to form the file name (Kinetics class folders contain spaces, e.g. ``k400/train/arm wrestling/x.mp4``)
and parses the last token as the label. Here the file name is the line up to the whitespace before the label,
taken as written: the same name for the usual single spaces, and the right one for names with runs of spaces or
tabs, which the original's re-joining changed into names that do not exist; a leading ``~`` is the home folder, as
in a shell (:func:`~dali_pipelines.list_lines.listed_path`). Blank lines are skipped. Unlike the
original, every malformed line is reported with the list file and its 1-based line number instead of surfacing
later as a decode failure. Lines end at ``\\n``, ``\\r\\n`` or ``\\r`` (:func:`evautil.text.text_lines`), so that
the numbers are those an editor shows.

A Kinetics-size list has hundreds of thousands of lines, read by every rank of a run: :func:`read_video_list`
keeps it as a few arrays (:class:`VideoList`: the paths in one UTF-8 buffer, labels and line numbers as numpy
columns) instead of one Python object per line; :class:`ListEntry` objects are built on demand, one row at a
time (:func:`read_file_list` builds them all, for short lists and callers that want a plain list).

The parts are modules of their own, whose names stay importable from here: the errors (``data_errors``), the text
and its lines (``list_lines``), the read list (``video_list``, its paths ``path_table``) and where the paths lead
(``list_roots``).
"""

from __future__ import annotations

import os
from array import array

import numpy as np

from evautil.files import not_a_file

# re-exported: callers import every name of the list reader from here
from .data_errors import DataError, DataListError, EmptyListError, LabelRangeError
from .list_lines import _decode_text, _label, _lines, list_label, listed_path, split_list_line
from .list_roots import check_list_root, list_root
from .path_table import PathTable
from .video_list import ListEntry, VideoList

__all__ = ["ListEntry", "DataError", "DataListError", "EmptyListError", "LabelRangeError", "PathTable", "VideoList",
           "read_video_list", "read_file_list", "split_list_line", "listed_path", "list_label", "list_root",
           "check_list_root"]


def read_video_list(list_path: str, root: str, num_classes: int | None = None, *,
                    classes_name: str = "num_classes") -> VideoList:
    """Read a ``<relative path, may contain spaces> <integer label>`` list into columns.

    Args:
        list_path: the list file.
        root: directory the relative paths are joined to (a path's leading ``~`` is the home folder instead:
            :func:`listed_path`).
        num_classes: when given, every label must lie in ``[0, num_classes)``.
        classes_name: what set ``num_classes`` (e.g. ``DATA.NUM_CLASSES``, ``--num-classes``), named with a label
            outside it.

    Raises:
        DataListError: missing or unreadable list, no entries, a line that is not UTF-8, a line without a label, a
            non-integer label or a label out of range (LabelRangeError). The message names the list file and the
            line.
    """
    if not os.path.isfile(list_path):
        # (a folder, the data folder given for its list, is not a missing file: said so, with what is wanted)
        fix = ": name the list file, one '<path> <label>' line per video" if os.path.isdir(list_path) else ""
        raise DataListError(f"video list {list_path!r} {not_a_file(list_path)}{fix}")
    try:
        with open(list_path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataListError(f"cannot read video list {list_path!r}: {e}") from e
    text = _decode_text(data, list_path)
    del data

    blob, offsets, labels, line_nos = bytearray(), array("q", [0]), array("q"), array("i")
    for line_no, line in enumerate(_lines(text), start=1):
        # lists joined with cat each bring their BOM: it opened the next line's file name, unseen in any message
        line = line[1:] if line.startswith("\ufeff") else line
        tokens = line.split()
        if not tokens:
            continue
        labels.append(_label(tokens, line, f"{list_path}:{line_no}", num_classes, classes_name, first=not labels))
        blob += os.fsencode(listed_path(split_list_line(line)[0], root))
        offsets.append(len(blob))
        line_nos.append(line_no)
    if not labels:
        raise EmptyListError(list_path)
    paths = PathTable(np.frombuffer(blob, np.uint8), np.frombuffer(offsets, np.int64))  # no copies
    return VideoList(list_path=list_path, root=root, rel_paths=paths, labels=np.frombuffer(labels, np.int64),
                     line_nos=np.frombuffer(line_nos, np.int32))


def read_file_list(list_path: str, root: str, num_classes: int | None = None, *,
                   classes_name: str = "num_classes") -> list[ListEntry]:
    """Every entry of a list as a :class:`ListEntry`, in file order (``entries[i].row == i``); see
    :func:`read_video_list` for the format, ``classes_name`` and the errors. One object per line: for a long list,
    keep the :class:`VideoList` instead."""
    videos = read_video_list(list_path, root, num_classes, classes_name=classes_name)
    return [videos.entry(r) for r in range(len(videos))]
