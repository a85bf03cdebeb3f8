"""Error types shared by packages that must not import each other."""

from __future__ import annotations

__all__ = ["CheckpointError", "weights_misfit", "some_names"]


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be used; the message names the file and why."""


def some_names(names: list[str], shown: int = 6) -> str:
    """The first ``shown`` of ``names`` for a message, and how many more there are."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def weights_misfit(arch: str, num_classes: int, missing: list[str], lacked: list[str]) -> str:
    """Why weights do not fit a model, for a CheckpointError after the file's name: the parameters they leave
    unset (``missing``), or the layers of theirs the model does not have (``lacked``)."""
    what = f"missing {some_names(missing)}" if missing else f"the model has no {some_names(lacked)}"
    return f"does not fit MODEL.ARCH {arch} with {num_classes} classes: {what}"
