"""The writing of ``tools.predict``'s records: the table, JSON, JSON Lines and CSV formats, and ``--out``."""

from __future__ import annotations

import csv
import io
import os
import sys
from typing import Any, Sequence

from evautil.text import json_text

__all__ = ["FORMATS", "format_table", "format_json", "format_jsonl", "format_csv", "format_for", "write_out",
           "write_stdout"]

FORMATS = ("table", "json", "jsonl", "csv")
_FORMAT_OF_EXTENSION = {".json": "json", ".jsonl": "jsonl", ".csv": "csv"}  # any other: the table


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table: one line per (video, rank), unreadable videos with their reason; when a video has a
    label, a ``label`` column after the video (on its first line, blank for videos without one). The ``name``
    column is always there, blank for classes without a name."""
    labelled = any("label" in r for r in records)
    rows = [("video",) + (("label",) if labelled else ()) + ("rank", "class", "name", "probability")]
    for r in records:
        head = (r["path"],) + ((str(r.get("label", "")),) if labelled else ())
        if r["status"] == "ok":
            rows += [(head if k == 0 else ("",) * len(head)) + (str(k + 1), str(t["class"]), t.get("name", ""),
                                                                 f"{t['prob']:.4f}") for k, t in enumerate(r["top_k"])]
        else:
            rows.append(head + ("-", "-", "unreadable", r["error"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]  # the last column is not padded
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in rows) + "\n"


def format_json(records: Sequence[dict[str, Any]]) -> str:
    """One JSON array of the records (``json.load`` reads it back; a name's bytes that are not UTF-8 escaped:
    :func:`evautil.text.json_text`)."""
    return json_text(list(records), indent=1) + "\n"


def format_jsonl(records: Sequence[dict[str, Any]]) -> str:
    """JSON Lines: one record per line."""
    return "".join(json_text(r) + "\n" for r in records)


def format_csv(records: Sequence[dict[str, Any]]) -> str:
    """A row per video: ``path``, ``status``, ``error``, the top-k's class, name (blank for a class without one: the
    columns are the same with or without names) and probability and, when a video has a label, ``label`` and
    ``label_name`` last (blank for videos without them), after the top-k columns, which keep their places."""
    k = max((len(r["top_k"]) for r in records if r["status"] == "ok"), default=0)
    labelled = any("label" in r for r in records)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["path", "status", "error"] + [f"top{i}_{f}" for i in range(1, k + 1) for f in ("class", "name", "prob")]
               + (["label", "label_name"] if labelled else []))
    for r in records:
        row = [r["path"], r["status"], r.get("error", "")]
        for t in r.get("top_k", []):
            row += [t["class"], t.get("name", ""), f"{t['prob']:.6f}"]
        if labelled:  # an unreadable video's or a shorter top-k's missing columns first: the labels stay in theirs
            row += [""] * (3 + 3 * k - len(row)) + [r.get("label", ""), r.get("label_name", "")]
        w.writerow(row)
    return out.getvalue()


def format_for(out: str, fmt: str | None) -> str:
    """The format of ``out``: ``fmt`` when given, else its extension's (.json, .jsonl, .csv), else the table."""
    return fmt or _FORMAT_OF_EXTENSION.get(os.path.splitext(out)[1].lower(), "table")


def write_out(out: str, text: str, quiet: bool) -> bool:
    """Write ``text`` to ``out``; on failure one error line, and with ``quiet`` (no table printed) the text on
    stdout instead, so that the predictions are not lost."""
    from evautil.files import write_output_text

    try:  # atomically: a write cut short (a full disk) leaves neither half a file nor an earlier one emptied
        write_output_text(out, text)
        return True
    except OSError as e:
        print(f"error: cannot write --out {out}: {e.strerror or e}" + ("; the predictions follow on stdout" if quiet
                                                                        else ""), file=sys.stderr)
        if quiet:
            write_stdout(text)
        return False


def write_stdout(text: str) -> None:
    """``text`` on stdout; a file name in it whose bytes are not UTF-8 is written as those bytes where stdout's
    encoding refuses it (a UTF-8 terminal's: the table raised after all the work, and nothing was written)."""
    try:
        sys.stdout.write(text)
    except UnicodeEncodeError:  # raised before any of text was written
        sys.stdout.flush()
        sys.stdout.buffer.write(text.encode(sys.stdout.encoding or "utf-8", "surrogateescape"))
        sys.stdout.buffer.flush()
