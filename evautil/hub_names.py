"""How an ``hf://`` weights reference is written, and the forms read as one: the one rule for the tools and for
train.py's checks before a run (``engine`` may not import ``models``, which resolves a reference)."""

from __future__ import annotations

import os
import re

__all__ = ["HUB_PREFIX", "ANY_CASE_PREFIX", "is_hub_reference", "hub_reference"]

HUB_PREFIX = "hf://"
ANY_CASE_PREFIX = re.compile(r"(?i)hf://")  # "HF://", "Hf://": the scheme's case is no mistake worth refusing


def is_hub_reference(path: object) -> bool:
    """Whether ``path`` is an ``hf://`` reference as written (:func:`hub_reference` reads a few more forms)."""
    return isinstance(path, str) and path.startswith(HUB_PREFIX)


def hub_reference(path: object) -> str | None:
    """The ``hf://`` reference ``path`` stands for: itself, or one written with spaces around it or the scheme in
    upper case (``" HF://owner/name/file"``) spelled as a reference is, when no local file or folder has that name
    (one that does is read as the path it is); None for any other value."""
    if not isinstance(path, str):
        return None
    if is_hub_reference(path) and path == path.strip():
        return path
    written = path.strip()
    if not ANY_CASE_PREFIX.match(written) or os.path.exists(path):
        return None
    return HUB_PREFIX + written[len(HUB_PREFIX):]
