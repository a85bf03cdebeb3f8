"""Parsing of the original video list format: one ``<relative path> <integer label>`` per line.

The original (mmaction2-derived) loader splits each line on whitespace, joins every token but the last back with
single spaces to form the file name (Kinetics class folders contain spaces, e.g. ``k400/train/arm wrestling/x.mp4``)
and parses the last token as the label. Blank lines are skipped. Unlike the original, every malformed line is
reported with the list file and its 1-based line number instead of surfacing later as a decode failure.
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass

__all__ = ["ListEntry", "DataError", "DataListError", "read_file_list"]


@dataclass(frozen=True)
class ListEntry:
    """One video of a list.

    Attributes:
        row: 0-based position among the list's entries (blank lines not counted); the ``index`` the loader yields.
        rel_path: the file name as written in the list (relative to ``root``).
        path: ``os.path.join(root, rel_path)``.
        label: integer class label.
        line_no: 1-based line number in the list file (for error messages).
    """

    row: int
    rel_path: str
    path: str
    label: int
    line_no: int


class DataError(ValueError):
    """The data cannot be used as configured: a list whose videos are all unreadable, fewer usable videos than one
    global batch, bad videos under ``DATA.STRICT``, a decode device that is not available, ... The message names
    the list or file and the config key to change. A ``ValueError`` so that command-line tools can report it as an
    input error (one line, exit code 2) rather than a crash."""


class DataListError(DataError):
    """A video list is missing, empty or malformed; the message names the list file and the 1-based line."""


def _decode_lines(data: bytes, list_path: str) -> list[str]:
    """The list's lines, decoded as UTF-8 (a BOM written by some editors is skipped). A line that is not UTF-8 is
    a malformed line like any other: DataListError naming the file, the line and the column."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        before = data[:e.start].decode("utf-8").splitlines(keepends=True)
        line_no, column = len(before) or 1, (len(before[-1]) if before else 0) + 1
        if before and before[-1].splitlines()[0] != before[-1]:  # the bad byte opens a new line
            line_no, column = len(before) + 1, 1
        raise DataListError(
            f"{list_path}:{line_no}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {column}); a list is UTF-8 "
            "text: re-encode it, or rename that video and fix its line") from None


def read_file_list(list_path: str, root: str, num_classes: int | None = None) -> list[ListEntry]:
    """Read a ``<relative path, may contain spaces> <integer label>`` list.

    Args:
        list_path: the list file.
        root: directory the relative paths are joined to.
        num_classes: when given, every label must lie in ``[0, num_classes)``.

    Returns:
        The entries in file order; ``entries[i].row == i``.

    Raises:
        DataListError: missing or unreadable list, no entries, a line that is not UTF-8, a line without a label, a
            non-integer label or a label out of range. The message names the list file and the line.
    """
    if not os.path.isfile(list_path):
        raise DataListError(f"video list {list_path!r} does not exist (or is not a file)")
    try:
        with open(list_path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataListError(f"cannot read video list {list_path!r}: {e}") from e
    lines = _decode_lines(data, list_path)

    entries: list[ListEntry] = []
    for line_no, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{list_path}:{line_no}"
        if len(tokens) < 2:
            raise DataListError(
                f"{where}: expected '<relative path> <integer label>', got {line.strip()!r} (no label)")
        try:
            label = int(tokens[-1])
        except ValueError:
            raise DataListError(
                f"{where}: label {tokens[-1]!r} is not an integer (line {line.strip()!r})") from None
        if label < 0 or (num_classes is not None and label >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
            raise DataListError(f"{where}: label {label} is outside {bound} (line {line.strip()!r})")
        rel_path = " ".join(tokens[:-1])
        entries.append(ListEntry(row=len(entries), rel_path=rel_path, path=os.path.join(root, rel_path),
                                 label=label, line_no=line_no))
    if not entries:
        raise DataListError(f"video list {list_path!r} has no entries (empty or only blank lines)")
    return entries
