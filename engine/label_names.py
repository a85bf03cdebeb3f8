"""Class names from a label list (DATA.LABEL_LIST, an ``id,name`` CSV) for the prediction and per-class files, and
the warning when the list gives one name to several classes."""

from __future__ import annotations

import csv
import os
import re

from configs import ConfigError
from evautil.errors import not_utf8_line, some_names
from evautil.files import not_a_file

__all__ = ["read_label_names", "names_given_twice"]


# What the id column of a header row is called (a word holding one of these, and no digit): any other first row
# whose id is not a number is a record with a mistyped id ("O" for "0"), refused with its line rather than skipped.
_HEADER_ID = re.compile(r"id|idx|index|class|cls|label|category|key|number|#", re.IGNORECASE)


def _is_header(cell: str) -> bool:
    return not any(c.isdigit() for c in cell) and _HEADER_ID.search(cell) is not None


def names_given_twice(path: str, names: dict[int, str], embedded: bool = False) -> str:
    """The warning that the label list ``path`` gives one name to several of the classes ``names``
    (:func:`read_label_names`), naming each such name with its ids; "" when every name is one class's. Not an error:
    the original reads the names only to tokenise them. The plots tell such classes apart by id, but the predictions
    and per-class tables name them alike. ``embedded``: ``path`` is an exported weights file whose settings hold the
    names, which a DATA.LABEL_LIST replaces."""
    ids_of: dict[str, list[int]] = {}
    for cls in sorted(names):
        ids_of.setdefault(names[cls], []).append(cls)
    twice = [f"{name!r} (ids {', '.join(map(str, ids))})" for name, ids in ids_of.items() if len(ids) > 1]
    if not twice:
        return ""
    if embedded:
        where, fix = (f"the class names in {path} give", "give a DATA.LABEL_LIST whose names tell them apart (it "
                      "replaces the file's names)")
    else:
        where, fix = f"label list DATA.LABEL_LIST = {path} gives", "rename them in the list to tell them apart by name"
    return (f"{where} one name to several classes: {some_names(twice)}; the predictions and per-class tables name "
            f"them alike (their ids tell them apart): {fix}")


def read_label_names(path: str, num_classes: int | None = None) -> dict[int, str]:
    """Class names from an ``id,name`` CSV whose first row may be a header (its id column named with a word such as
    ``id``, ``class`` or ``label``); with ``num_classes``, one name for each class 0..num_classes-1. Lines are
    numbered as an editor numbers them (:func:`evautil.text.text_lines`), whatever the rows before hold.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: a row that is not ``id,name`` (a first row too, unless it is a header), a quote left open, an
            id given twice, or (with ``num_classes``) ids that are not the classes: the message names the file and
            the line. A skipped row would leave a class unnamed in every prediction file, and a labels file of
            another dataset would name the wrong classes.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label list DATA.LABEL_LIST = {path} {not_a_file(path)}")
    where = f"label list DATA.LABEL_LIST = {path}"
    names: dict[int, str] = {}
    first = True  # the first row that is not blank: a header, or a record
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            start = 1  # the line the row being read begins on (csv's line_num is the line it ends on)
            for row in reader:
                line, start = start, reader.line_num + 1
                if not any(cell.strip() for cell in row):
                    continue
                if reader.line_num > line:  # no class name holds a line break: a quote left open took the lines
                    raise ConfigError(f"{where}, line {line}: a quote opened on this line is closed only on line "
                                      f"{reader.line_num}, or never")
                was_first, first = first, False
                try:
                    cls = int(row[0])
                except ValueError:
                    if was_first and _is_header(row[0]):
                        continue
                    cls = -1
                if cls < 0 or len(row) < 2:
                    raise ConfigError(f"{where}, line {line}: expected 'id,name' with an id >= 0, got "
                                      f"{','.join(row)!r}" + (" (nor is it a header, whose first column is a word "
                                                              "such as 'id')" if was_first else ""))
                if any(cell.strip() for cell in row[2:]):
                    # csv cuts an unquoted name at its comma: "3,tying bow tie, knot" named class 3 "tying bow tie"
                    raise ConfigError(f"{where}, line {line}: expected 'id,name', got {len(row)} fields "
                                      f"{','.join(row)!r}: quote a name that holds a comma")
                if not row[1].strip():  # every prediction file would leave the class's name blank
                    raise ConfigError(f"{where}, line {line}: class {cls} has no name ({','.join(row)!r})")
                if cls in names:
                    raise ConfigError(f"{where}, line {line}: class {cls} is named twice")
                names[cls] = row[1].strip()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}, {not_utf8_line(path, e)}") from None
    if num_classes is not None:
        extra = sorted(c for c in names if c >= num_classes)
        missing = [c for c in range(num_classes) if c not in names]
        if extra or missing:
            def ids(found: list[int]) -> str:
                return f"{found[:5]}" + (" ..." if len(found) > 5 else "")

            problems = ([f"ids {ids(extra)} are too large"] if extra else []) + (
                [f"no name for ids {ids(missing)}"] if missing else [])
            raise ConfigError(f"{where} names {len(names)} classes, but DATA.NUM_CLASSES {num_classes} means ids 0 to "
                              f"{num_classes - 1}: {'; '.join(problems)}")
    return names
