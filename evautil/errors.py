"""Error types, and the words of errors, shared by packages that must not import each other."""

from __future__ import annotations

import re
from typing import Iterable

from .text import text_lines

__all__ = ["CheckpointError", "OutputFolderError", "weights_misfit", "model_object_refusal", "some_names",
           "first_line_not_utf8", "not_utf8_line"]


_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what "surrogateescape" decodes a byte that is not UTF-8 to


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be used; the message names the file and why."""


class OutputFolderError(ValueError):
    """An output folder that cannot be made; the message names the flag or config key that gave it, the folder and
    why. A ``ValueError``, so that the commands report it as bad input (one line, exit code 2)."""


def some_names(names: list[str], shown: int = 6) -> str:
    """The first ``shown`` of ``names`` for a message, and how many more there are."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def weights_misfit(arch: str, num_classes: int, missing: list[str], lacked: list[str]) -> str:
    """Why weights do not fit a model, for a CheckpointError after the file's name: the parameters they leave
    unset (``missing``), or the layers of theirs the model does not have (``lacked``)."""
    what = f"missing {some_names(missing)}" if missing else f"the model has no {some_names(lacked)}"
    # The final norm alone: the weights of a model pooled the other way, whose norm has the other name
    if set(missing) == {"fc_norm.weight", "fc_norm.bias"}:
        what += " (a model's without mean pooling, whose final norm is norm.*? set MODEL.USE_MEAN_POOLING False)"
    elif set(missing) == {"norm.weight", "norm.bias"}:
        what += " (a model's with mean pooling, whose final norm is fc_norm.*? set MODEL.USE_MEAN_POOLING True)"
    return f"does not fit MODEL.ARCH {arch} with {num_classes} classes: {what}"


def first_line_not_utf8(path: str) -> int:
    """1-based number of the first line of ``path`` that is not UTF-8, for the message of a UnicodeDecodeError met
    reading it as text: the decoder reads the file in chunks, so its error knows the position within one chunk only
    (a byte offset a person cannot find either way). Lines are numbered as the readers and an editor number them
    (:func:`evautil.text.text_lines`)."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "surrogateescape")  # each byte that is not UTF-8: one lone surrogate
    for number, line in enumerate(text_lines(text), 1):
        if _NOT_UTF8.search(line):
            return number
    return 1


def not_utf8_line(path: str, error: UnicodeDecodeError) -> str:
    """The words for ``error``, met reading ``path`` as text, after the name of the file: "line N: not UTF-8 text
    (<reason>, byte 0xNN)", the line found again in the file (:func:`first_line_not_utf8`)."""
    return (f"line {first_line_not_utf8(path)}: not UTF-8 text ({error.reason}, "
            f"byte 0x{error.object[error.start]:02x})")


def model_object_refusal(path: str, names: Iterable[str]) -> str:
    """The line for a file that holds a pickled ``nn.Module`` (``torch.save(model)``), among whose refused globals
    ``names`` are the model's classes: its weights are re-saved from the model's ``state_dict()``, not from a key of
    it (what ``models.safe_load`` advises for other refused globals). "" for other files. The wording of every
    reader that refuses such a file (MODEL.PRETRAINED in ``models.safe_load``, ``--resume`` in
    ``engine.checkpoint_io``)."""
    module = next((name for name in sorted(names) if name.startswith("torch.nn.")), None)
    if module is None:
        return ""
    return (
        f"{path}: a pickled model object (torch.save(model): it holds {module}), not a state dict; it was not "
        f"unpickled, which would run code from the file. If you trust the file, save the model's weights alone, "
        f"torch.save(torch.load(file, weights_only=False).state_dict(), 'weights.pth') (for a model kept under a "
        f"key, e.g. ['model'], call state_dict() on that entry), and give that file")
