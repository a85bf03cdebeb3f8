"""Video file names in a dataset tree: which names are videos, a Kinetics name's YouTube id, whether a name survives
a list line, and how to print one in a message.

Kinetics file names are ``<11-character YouTube id>_<start>_<end>.<ext>``; the YouTube id (the first 11
characters) is the de-duplication key of the lists and of the Kinetics-722 merge.
"""

from __future__ import annotations

import os
import re
import unicodedata

from evautil.text import is_utf8_text, text_lines

__all__ = ["VIDEO_EXTENSIONS", "YOUTUBE_ID_LEN", "youtube_id", "is_video_file", "unfinished_download",
           "unlistable_reason", "is_listable", "list_name", "printable_path", "unicode_form"]

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")

# What downloaders (youtube-dl, yt-dlp) add to a video's name until it is downloaded whole (x.mp4.part, x.mp4.ytdl)
# and the streams they leave when merging them was stopped or failed: one per format (x.f137.mp4, x.f140.m4a) and the
# merge's own output (x.temp.mp4). A YouTube id holds no dot and a time range is _<start>_<end>, so no video's stem
# ends in .f<digits> or .temp.
_DOWNLOADING = (".part", ".ytdl")
_UNMERGED_STREAM = re.compile(r"\.(?:f\d+(?:-\w+)?|temp)$", re.IGNORECASE)

YOUTUBE_ID_LEN = 11


def youtube_id(file_name: str) -> str:
    """YouTube id of a Kinetics file name: its first 11 characters (``<id>_<start>_<end>.mp4``).

    A stem shorter than 11 characters is returned whole, so such files still de-duplicate against themselves.
    """
    stem = os.path.splitext(os.path.basename(file_name))[0]
    return stem[:YOUTUBE_ID_LEN]


def is_video_file(name: str) -> bool:
    """True for a non-hidden file name with one of :data:`VIDEO_EXTENSIONS` (case-insensitive), unless it is what
    a download not finished left (:func:`unfinished_download`)."""
    return (not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS
            and unfinished_download(name) is None)


def unfinished_download(name: str) -> str | None:
    """The stem of the video whose download the file ``name`` is what is left of (``x`` for ``x.mp4.part``,
    ``x.f137.mp4``, ``x.f140.m4a``, ``x.temp.mp4``, ``x.mp4.ytdl``), or None for any other name."""
    if name.startswith("."):
        return None
    base = name
    for suffix in _DOWNLOADING:
        if base.lower().endswith(suffix):
            base = base[:-len(suffix)]
            break
    stem, ext = os.path.splitext(base)
    stream = _UNMERGED_STREAM.search(stem) if ext else None
    if stream is not None:
        return stem[:stream.start()] or None
    if base != name and ext.lower() in VIDEO_EXTENSIONS:
        return stem
    return None


def unlistable_reason(rel_path: str) -> str | None:
    """None when the list line ``<rel_path> <label>`` reads back as ``rel_path``, else why it would not.

    The rule is the list reader's (``dali_pipelines.filelist.read_video_list``): the list is UTF-8 text (a BOM at
    the start of any line dropped), cut into lines at ``\\n``, ``\\r\\n`` and ``\\r``
    (``evautil.text.text_lines``), and a line's file name is the line, stripped, up to the whitespace before its
    last word (the label). So runs of spaces, tabs and other whitespace inside a name come back as written (a form
    feed or U+2028 too, which an editor shows inside the line), and so does a name ending in `` <digits>``; what
    cannot come back is checked here. A leading ``~`` (the home folder, to the reader) is no reason: such a name is
    written as ``./~...`` (:func:`list_name`).
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


def list_name(rel_path: str) -> str:
    """How a list line names the video at ``rel_path`` under the root: as is, but ``./`` before a leading ``~``,
    which the list reader takes for the home folder (``dali_pipelines.list_lines.listed_path``): a dataset folder
    named ``~`` had its videos read from the home folder wherever a file of that name was there."""
    return "./" + rel_path if rel_path.startswith("~") else rel_path


def is_listable(rel_path: str) -> bool:
    """True when ``rel_path`` survives a list line unchanged (:func:`unlistable_reason` is None)."""
    return unlistable_reason(rel_path) is None


def printable_path(path: str) -> str:
    """``path`` as one line of UTF-8 text, for messages and reports that name a skipped file: bytes that are not
    UTF-8 shown as ``\\xNN``, line breaks and other control characters escaped (``\\n``)."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def unicode_form(name: str) -> str:
    """The Unicode normalization form ``name`` is written in: ``NFC`` (composed: ``è`` one code point, as most
    systems write names), ``NFD`` (decomposed: ``e`` and a combining accent, as macOS wrote names it unpacked), or
    ``mixed``. A name the two forms write alike is ``NFC``."""
    for form in ("NFC", "NFD"):
        if unicodedata.is_normalized(form, name):
            return form
    return "mixed"
