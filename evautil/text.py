"""Lines of text as a person sees them: one rule for every reader whose messages give line numbers."""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["text_lines", "is_utf8_text", "json_text"]

_SURROGATE = re.compile("[\ud800-\udfff]")  # a file name's byte that is not UTF-8, as the file system hands it over


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


def json_text(value: Any, **kwargs: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, **kwargs)``, non-ASCII text kept as it is, but with a file name's
    bytes that are not UTF-8 (surrogates) escaped (``\\udce9``): left raw they cannot be written as UTF-8 (the
    write raised), and written as bytes they would make the file no JSON; escaped, ``json.loads`` gives the name
    back as Python's ``os`` functions take it (``os.fsencode``: the file's own bytes)."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False, **kwargs))
