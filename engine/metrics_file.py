"""OUTPUT/metrics.jsonl as a file: opened to append (after a last line cut short), a line written (an error naming
the file), and the lines a run that only writes its summary reads back (its final evaluation, its last train line and
its loaders' counters). What the lines hold is :mod:`engine.metrics`'s.
"""

from __future__ import annotations

import json
import os
from typing import IO, Any, Iterator

from evautil.files import naming_the_file
from evautil.progress import counted

from .run_files import drop_lines_after, standard_json

__all__ = ["open_lines", "write_line", "drop_lines_after_step", "read_lines", "recall_lines", "recalled_counters"]


def read_lines(path: str) -> Iterator[str]:
    """The lines of the metrics.jsonl at ``path`` (without their line end), as every reader of it takes them: a
    byte-order mark at its start skipped (an editor that saved the file wrote one; it made the first line no JSON:
    passed over by the plots, dropped by a resume, without a word), a byte that is no UTF-8 read as U+FFFD (a line
    cut short may end inside a multi-byte character; the file damaged on disk), and cut at line ends only, as a
    file read as text is (:func:`evautil.text.text_lines`' rule)."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            yield line[:-1] if line.endswith("\n") else line


def open_lines(path: str) -> IO[str]:
    """``path`` opened to append lines: after a last line cut short (a full disk, a crash), on a line of their own,
    where the next line was glued to it and both were lost to every reader (an --only_test run's eval line)."""
    with open(path, "ab") as f:
        if f.tell():
            with open(path, "rb") as tail:
                tail.seek(-1, os.SEEK_END)
                if tail.read(1) != b"\n":
                    f.write(b"\n")
    return open(path, "a", encoding="utf-8")


def write_line(jsonl: IO[str], line: dict[str, Any]) -> None:
    """``line`` as one JSON line of ``jsonl`` (standard JSON: :func:`engine.run_files.standard_json`), flushed."""
    with naming_the_file(jsonl.name):  # a full disk's error from write() names no file
        jsonl.write(standard_json(line) + "\n")
        jsonl.flush()


def drop_lines_after_step(jsonl: IO[str], step: int, mid_epoch: bool = False,
                          steps_logged_again: bool = False) -> tuple[IO[str], str | None]:
    """The lines a stopped attempt wrote after its checkpoint at optimizer ``step`` dropped from the file of
    ``jsonl`` (:func:`engine.run_files.drop_lines_after`, ``mid_epoch`` and ``steps_logged_again`` too), and the
    rewritten file opened to append in place of ``jsonl`` (closed; ``jsonl`` itself when nothing was dropped);
    with the log line that says what was dropped, or None when nothing was.

    Raises:
        OSError: the rewrite failed (a full disk: the line says the free space it needs), the file left whole and
            ``jsonl`` still open on it: closed first, it was left closed, and the run's later lines (its end line
            too) failed with "I/O operation on closed file" or were lost.
    """
    path = jsonl.name
    with naming_the_file(path):  # every line so far in the file the rewrite reads
        jsonl.flush()
    cut: list[int] = []
    dropped = drop_lines_after(path, step, mid_epoch, cut, train_line_at_step=steps_logged_again)
    if not dropped:
        return jsonl, None
    jsonl.close()  # open on the file the rewrite replaced
    reopened = open(path, "a", encoding="utf-8")
    return reopened, (f"metrics.jsonl: dropped {counted(dropped, 'line')} written after step {step} by the attempt "
                      "that was stopped (this run writes them again)"
                      + (f"; not JSON (cut short by the stop): {', '.join(f'{path}:{n}' for n in cut[:3])}"
                         + (f" and {len(cut) - 3} more" if len(cut) > 3 else "") if cut else ""))


def recall_lines(path: str, step: int, split: str) -> tuple[dict | None, dict | None, dict[str, dict[str, Any]]]:
    """From the lines of ``path`` up to optimizer ``step``: (the last ``split`` eval line at ``step`` or None, the
    last train line or None, the last line of each loader's counters by prefix: ``train_`` the train ``data`` lines,
    ``val_`` and ``test_`` the eval lines). Lines that are not JSON objects with an integer step are passed over."""
    found = last_train = None
    counted: dict[str, dict[str, Any]] = {}
    for text in read_lines(path):
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if not isinstance(line, dict) or not isinstance(line.get("step"), int) or line["step"] > step:
            continue
        if line.get("kind") == "train":
            last_train = line
        elif line.get("kind") == "data" and line.get("split") == "train":
            counted["train_"] = line
        elif line.get("kind") == "eval" and line.get("split") in ("val", "test"):
            counted[f"{line['split']}_"] = line
            if line.get("split") == split and line["step"] == step:
                found = line
    return found, last_train, counted


def recalled_counters(counts: dict[str, Any], recalled: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``counts`` (``train_*``, ``val_*``, ``test_*`` loader counters) with the values of the lines ``recalled``
    (:func:`recall_lines`' third part) logged. A ``test_*`` counter with no name in ``counts`` takes the names of the
    ``val_*`` ones (the same loader counters)."""
    out = dict(counts)
    for prefix, line in recalled.items():
        names = {k[len(prefix):] for k in counts if k.startswith(prefix)} or \
                {k[len("val_"):] for k in counts if k.startswith("val_")}
        out.update({prefix + name: line[name] for name in sorted(names) if name in line})
    return out
