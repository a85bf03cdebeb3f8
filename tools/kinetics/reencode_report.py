"""A re-encode's report: ``reencode_report.json`` and ``.md`` in --report-dir (by default --dst), and the line that
says what a run did (``reencode.py`` runs and fills it)."""

from __future__ import annotations

import json
import os
from typing import Callable

from evautil.files import atomic_write_text
from evautil.progress import counted, stderr_line

from .video_names import printable_path

__all__ = ["REPORT_JSON", "REPORT_MD", "REPORT_FILES", "VANISHED", "changed_text", "write_report"]

# The report's files, in --report-dir, by default --dst: the split folder when one split is re-encoded, where the
# lists of the tree find them (and leave them out of the entries they count as stray).
REPORT_JSON, REPORT_MD = "reencode_report.json", "reencode_report.md"
REPORT_FILES = (REPORT_JSON, REPORT_MD)
# What a failure whose source was deleted or moved during the run says, and the report's line that counts them: a
# source gone was "not a readable video (No such file or directory)", as a damaged file or a failing disk is.
VANISHED = "vanished since listed"


def changed_text(report: dict) -> str:
    n = report["source_changed"]
    return f"; {n} encoded again as their source changed since their output was written" if n else ""


def _without_name(error: str, src: str) -> str:
    """``error`` without the ``<src>: `` it begins with, for a line that names ``src`` already."""
    return error[len(src) + 2:] if error.startswith(src + ": ") else error


def write_report(report: dict, rdir: str, log: Callable[[str], None]) -> None:
    """``reencode_report.json`` and ``.md`` in ``rdir``, and one line saying what was done (``log``); when videos
    were re-encoded with a warning, one more on stderr with their count and the report that names them."""
    dst_root = report["dst_root"]
    os.makedirs(rdir, exist_ok=True)
    atomic_write_text(os.path.join(rdir, REPORT_JSON), json.dumps(report, indent=2) + "\n")
    md = [f"# Re-encode {report['src_root']} -> {dst_root}", "",
          f"- settings: {report['settings']}", f"- videos: {report['total']}, already done (skipped): "
          f"{report['skipped_existing']}, encoded now: {report['done']}, failed: {len(report['failed'])}",
          f"- outputs whose source changed since (another size or mtime), encoded again: "
          f"{report['source_changed']}",
          *([f"- {VANISHED} (deleted or moved during the run; among the failed): {report['vanished']}"]
            if report.get("vanished") else []),
          f"- frames encoded: {report['frames']} in {report['seconds']} s"
          + (" (interrupted: the same command goes on with the rest)" if report["interrupted"] else ""), ""]
    # Names as one line of UTF-8 text: a file name that is not UTF-8 made the report a traceback.
    if report["failed"]:
        md += ["## Failures (originals untouched, no output written)", ""]
        md += [f"- `{printable_path(x['src'])}`: {printable_path(_without_name(x['error'], x['src']))}"
               for x in report["failed"]] + [""]
    if report["warnings"]:
        md += ["## Warnings", ""] + [f"- `{printable_path(x['src'])}`: {printable_path(x['warning'])}"
                                     for x in report["warnings"]] + [""]
    atomic_write_text(os.path.join(rdir, REPORT_MD), "\n".join(md))
    stopped = "; interrupted: the same command goes on with the rest" if report["interrupted"] else ""
    log(f"re-encoded {counted(report['done'], 'video')} ({report['frames']} frames) in {report['seconds']} s; "
        f"skipped {report['skipped_existing']} already done{changed_text(report)}; {len(report['failed'])} "
        f"failed" + (f" ({report['vanished']} {VANISHED})" if report.get("vanished") else "") + stopped
        + (f" (see {os.path.join(rdir, REPORT_MD)})" if report["failed"] else ""))
    warned = {x["src"] for x in report["warnings"]}
    if warned:  # a source cut short gives a whole output as short, which no later check of the tree can tell
        first = report["warnings"][0]
        stderr_line(f"warning: reencode: {counted(len(warned), 'video')} re-encoded with a warning, e.g. "
                    f"{printable_path(first['src'])}: {printable_path(first['warning'])} (a source cut short is "
                    f"encoded into an output as short, whole to the lists' --check); each is named in "
                    f"{os.path.join(rdir, REPORT_MD)}")
