"""Video file names in a dataset tree: which names are videos, a Kinetics name's YouTube id, whether a name survives
a list line, and how to print one in a message.

Kinetics file names are ``<11-character YouTube id>_<start>_<end>.<ext>``; the YouTube id (the first 11
characters) is the de-duplication key of the lists and of the Kinetics-722 merge.
"""

from __future__ import annotations

import os

from evautil.text import is_utf8_text, text_lines

__all__ = ["VIDEO_EXTENSIONS", "YOUTUBE_ID_LEN", "youtube_id", "is_video_file", "unlistable_reason", "is_listable",
           "printable_path"]

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")

YOUTUBE_ID_LEN = 11


def youtube_id(file_name: str) -> str:
    """YouTube id of a Kinetics file name: its first 11 characters (``<id>_<start>_<end>.mp4``).

    A stem shorter than 11 characters is returned whole, so such files still de-duplicate against themselves.
    """
    stem = os.path.splitext(os.path.basename(file_name))[0]
    return stem[:YOUTUBE_ID_LEN]


def is_video_file(name: str) -> bool:
    """True for a non-hidden file name with one of :data:`VIDEO_EXTENSIONS` (case-insensitive)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def unlistable_reason(rel_path: str) -> str | None:
    """None when the list line ``<rel_path> <label>`` reads back as ``rel_path``, else why it would not.

    The rule is the list reader's (``dali_pipelines.filelist.read_video_list``): the list is UTF-8 text (a BOM at
    the start of any line dropped), cut into lines at ``\\n``, ``\\r\\n`` and ``\\r``
    (``evautil.text.text_lines``), and a line's file name is the line, stripped, up to the whitespace before its
    last word (the label). So runs of spaces, tabs and other whitespace inside a name come back as written (a form
    feed or U+2028 too, which an editor shows inside the line), and so does a name ending in `` <digits>``; what
    cannot come back is checked here.
    tests/test_prepare_kinetics.py checks this function against the reader itself.
    """
    if not rel_path:
        return "empty path"
    if not is_utf8_text(rel_path):  # os.scandir gives undecodable bytes as surrogates; lists are UTF-8 text
        return "name is not valid UTF-8, and a video list is UTF-8 text"
    if text_lines(rel_path) != [rel_path]:  # the reader would cut it into two lines
        breaks = sorted({c for c in rel_path if c in "\r\n"})
        return f"name holds a line break ({', '.join(repr(c) for c in breaks)}), which would split its list line"
    if rel_path.strip() != rel_path:
        return "path starts or ends with whitespace, which the list reader strips"
    if rel_path.startswith("\ufeff"):  # dropped by the reader as a byte-order mark at the start of any line
        return "path starts with U+FEFF, which the list reader drops as a byte-order mark"
    return None


def is_listable(rel_path: str) -> bool:
    """True when ``rel_path`` survives a list line unchanged (:func:`unlistable_reason` is None)."""
    return unlistable_reason(rel_path) is None


def printable_path(path: str) -> str:
    """``path`` as one line of UTF-8 text, for messages and reports that name a skipped file: bytes that are not
    UTF-8 shown as ``\\xNN``, line breaks and other control characters escaped (``\\n``)."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
