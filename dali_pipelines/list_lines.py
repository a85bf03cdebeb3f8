"""The text of a video list and its lines: the file decoded (UTF-8, a BOM skipped, a bad byte or a NUL named by
line and column), cut into lines as an editor numbers them, and a line's file name and label.

A line is ``<path> <integer label>``: the file name is the line up to the whitespace before its last word, taken as
written (:func:`split_list_line`), a leading ``~`` the home folder (:func:`listed_path`), and the label that word
read as ``int`` reads it, but never with an ``_`` (:func:`list_label`)."""

from __future__ import annotations

import codecs
import os
from typing import Iterator

from evautil.text import text_lines

from .data_errors import DataListError, LabelRangeError

__all__ = ["split_list_line", "listed_path", "list_label"]

# Lines are split in pieces of about this many characters, so that a long list never exists as one Python string
# per line all at once.
_CHUNK_CHARS = 1 << 20


def _decode_text(data: bytes, list_path: str) -> str:
    """The list's text, decoded as UTF-8 (a BOM written by some editors is skipped; one opening a later line is
    dropped as the list's lines are read). A line that is not UTF-8, or
    that holds a NUL character (which no file name can; a UTF-16 list without a BOM reads so), is a malformed line
    like any other: DataListError naming the file, the line and the column."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_no, column = _position(data[:e.start].decode("utf-8"))
        utf16 = e.start == 0 and data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        raise DataListError(
            f"{list_path}:{line_no}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {column}"
            + ("; the file starts with a UTF-16 byte-order mark" if utf16 else "") + "); a list is UTF-8 "
            "text: re-encode it, or rename that video and fix its line") from None
    nul = text.find("\x00")
    if nul >= 0:  # else the file's lookup failed on it (ValueError) with a traceback, once every line had parsed
        line_no, column = _position(text[:nul])
        raise DataListError(
            f"{list_path}:{line_no}: a NUL character at column {column}, which no file name can hold; a list is "
            "UTF-8 text (UTF-16 has a NUL in every other byte of an ASCII name): re-encode it, or fix that line")
    return text


def _position(before: str) -> tuple[int, int]:
    """The 1-based line and column of the character that follows ``before``, lines numbered as an editor numbers
    them (``text_lines``), as the list's lines are."""
    lines = text_lines(before + "?")  # "?": the character that follows
    return len(lines), len(lines[-1])


def _lines(text: str) -> Iterator[str]:
    """``text_lines(text)``, one piece at a time: each piece ends just after a ``\\n``, so no line (and no
    ``\\r\\n`` pair) is cut and the lines are exactly those of one ``text_lines`` over the whole text."""
    start = 0
    while start < len(text):
        end = text.find("\n", min(start + _CHUNK_CHARS, len(text)) - 1)
        end = len(text) if end < 0 else end + 1
        yield from text_lines(text[start:end])
        start = end


def split_list_line(line: str) -> tuple[str, str] | None:
    """A list line's file name and its last word (the label, in a training list), or None for a blank line. The
    name is the line up to the whitespace before that word, as written: inner runs of spaces and tabs are kept (the
    original re-joined the words with single spaces)."""
    tokens = line.split()
    if not tokens:
        return None
    return line.strip()[:-len(tokens[-1])].rstrip(), tokens[-1]


def listed_path(name: str, root: str) -> str:
    """What a line's file name ``name`` stands for, to be joined to ``root`` (``os.path.join``): the name as
    written, but with a leading ``~`` or ``~user`` as that home folder, as a shell reads it and as the commands read
    the paths they are given (``~/kinetics/a.mp4`` was read as a folder named ``~`` in the root). A file the root
    holds under the name as written, where the home has none, stays that file (``./~/a.mp4`` always names it)."""
    if not name.startswith("~"):
        return name
    home = os.path.expanduser(name)
    if home != name and not os.path.exists(home) and os.path.exists(os.path.join(root, name)):
        return name
    return home


_LABEL_LIMIT = 2**63


def list_label(word: str) -> int | None:
    """The label a list line's last word gives (``int``'s reading, as the original's: ``7``, ``+7``, ``-1``), or None
    where it is no integer. Every reader of labelled lines takes its labels so. An ``_`` makes no label: ``int``
    reads ``1_0`` as Python source, 10, a class the line never wrote."""
    if "_" in word:
        return None
    try:
        return int(word)
    except ValueError:
        return None


def _label(tokens: list[str], line: str, where: str, num_classes: int | None, classes_name: str,
           first: bool = False) -> int:
    """The label of a list line split into ``tokens`` (DataListError naming ``where`` when it is not one);
    ``first``: the list's first line that is not blank, which may be a header."""
    if len(tokens) < 2:
        raise DataListError(f"{where}: expected '<relative path> <integer label>', got {line.strip()!r} (no label)")
    label = list_label(tokens[-1])
    if label is None:
        raise DataListError(f"{where}: label {tokens[-1]!r} is not an integer (line {line.strip()!r}): "
                            + _label_fix(tokens[-1], first))
    if num_classes is not None and not 0 <= label < num_classes:
        raise LabelRangeError(where, label, num_classes, line.strip(), classes_name)
    if label < 0:  # said in words: "outside [0, 2**63)" told a user with no class count nothing to act on
        raise DataListError(f"{where}: label {label} is negative (line {line.strip()!r}): a label is a class "
                            "number, counted from 0: fix the label")
    if label >= _LABEL_LIMIT:  # labels are kept as int64
        raise DataListError(f"{where}: label {label} is too large (line {line.strip()!r}): a label is a class "
                            f"number, counted from 0, at most {_LABEL_LIMIT - 1:,}: fix the label")
    return label


def _label_fix(word: str, first: bool) -> str:
    """What to do with a label ``word`` that is not an integer: a whole number written as a float (a table
    library's float column, as "3.0"), a header or comment line, which a list has not, or a label to fix."""
    try:
        number = None if "_" in word else float(word)  # (float reads "1_0" as 10.0 too)
    except ValueError:
        number = None
    if number is not None and number.is_integer():
        return f"write it as {int(number)}"
    if first:
        return "a list has no header or comment lines: remove it, if it is one; else fix the label"
    return "fix the label"
