"""The errors of data that cannot be used as configured, and of a video list that is missing, empty or malformed:
``ValueError`` subclasses, so that command-line tools report them as input errors (one line, exit code 2). Their
wording lives here; the code that finds the problem gives the facts, a caller that knows which setting gave them
re-names the error (``named``)."""

from __future__ import annotations

__all__ = ["DataError", "DataListError", "EmptyListError", "LabelRangeError"]


class DataError(ValueError):
    """The data cannot be used as configured: a list whose videos are all unreadable, fewer usable videos than one
    global batch, bad videos under ``DATA.STRICT``, a decode device that is not available, ... The message names
    the list or file and the config key to change. A ``ValueError`` so that command-line tools can report it as an
    input error (one line, exit code 2) rather than a crash."""


class DataListError(DataError):
    """A video list is missing, empty or malformed; the message names the list file and the 1-based line."""


class EmptyListError(DataListError):
    """A video list without an entry. ``setting``: the config key or flag that gave the list, named when a caller
    that knows it re-names the error with :meth:`named` (the index code is given only the path)."""

    def __init__(self, list_path: str, setting: str = ""):
        super().__init__(list_path, setting)  # both: the error pickles (other ranks)
        self.list_path, self.setting = list_path, setting

    def named(self, setting: str) -> "EmptyListError":
        """The same error, naming ``setting`` as what gave the list."""
        return EmptyListError(self.list_path, setting)

    def __str__(self) -> str:
        if not self.setting:
            return f"video list {self.list_path!r} has no entries (empty or only blank lines)"
        return (f"video list {self.list_path!r} ({self.setting}) has no entries (empty or only blank lines): add "
                f"'<relative path> <label>' lines to it, or set {self.setting} to a list that has them")


class LabelRangeError(DataListError):
    """A list line whose label is outside ``[0, num_classes)``. ``setting`` is what gave ``num_classes`` (a config
    key such as DATA.NUM_CLASSES, or a tool's flag): the message names it with its value, so that a user knows which
    of the two to fix. The index code is given only the number; a caller that knows where it came from re-names the
    error with :meth:`named` (the wording stays here)."""

    def __init__(self, where: str, label: int, num_classes: int, line: str, setting: str = "num_classes"):
        super().__init__(where, label, num_classes, line, setting)  # all of them: the error pickles (other ranks)
        self.where, self.label, self.num_classes, self.line, self.setting = where, label, num_classes, line, setting

    # What names a trained model's class count: its head fixes it, so no setting can be changed to fit the label.
    MODEL_HEAD = "the model's head"

    def named(self, setting: str) -> "LabelRangeError":
        """The same error, naming ``setting`` as what set the number of classes."""
        return LabelRangeError(self.where, self.label, self.num_classes, self.line, setting)

    def __str__(self) -> str:
        if self.setting == self.MODEL_HEAD:
            return (f"{self.where}: label {self.label} is outside [0, {self.num_classes}) as {self.setting} has "
                    f"{self.num_classes} classes (line {self.line!r}): fix the label, or use a model of its classes")
        fix = ("labels start at 0: fix the label" if self.label < 0 else
               f"fix the label, or set {self.setting} to the number of classes (at least {self.label + 1})")
        return (f"{self.where}: label {self.label} is outside [0, {self.num_classes}) as {self.setting} is "
                f"{self.num_classes} (line {self.line!r}): {fix}")
