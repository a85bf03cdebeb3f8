"""Lines of text as a person sees them: one rule for every reader whose messages give line numbers."""

from __future__ import annotations

__all__ = ["text_lines", "is_utf8_text"]


def text_lines(text: str) -> list[str]:
    """The lines of ``text`` as a text editor numbers them, and as iterating over a file opened as text (universal
    newlines) gives them: cut at ``\\n``, ``\\r\\n`` and ``\\r`` only. ``str.splitlines`` also cuts at a form feed,
    a vertical tab, ``\\x1c``-``\\x1e``, ``\\x85``, U+2028 and U+2029, which editors show inside a line: the line
    numbers it gave named a later line than the one at fault. A line break at the end makes no empty last line
    (as with ``splitlines``)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def is_utf8_text(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8: a name the file system gave with bytes that are not UTF-8 comes
    as surrogates (Python's "surrogateescape"), which cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
