"""Error types shared by packages that must not import each other."""

from __future__ import annotations

__all__ = ["CheckpointError"]


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be used; the message names the file and why."""
