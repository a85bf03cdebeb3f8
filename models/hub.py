"""``hf://`` checkpoint references, resolved to a local file through ``huggingface_hub``'s cache.

A reference names a file in a Hugging Face Hub model repository, optionally at a revision (branch, tag or commit):

    hf://BAAI/EVA/eva_video_k400.pth
    hf://BAAI/EVA@main/eva_video_k400.pth
    hf://owner/repo/sub/folder/weights.safetensors

Downloads land in huggingface_hub's cache (``HF_HUB_CACHE`` / ``HF_HOME``) and are reused. ``HF_HUB_OFFLINE=1``
is honoured (read at call time, so it may be set after import): only the cache is consulted. A reference that is
neither cached nor downloadable fails with one line naming it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .checkpoint import CheckpointError

__all__ = ["HUB_PREFIX", "HubReference", "HubReferenceError", "is_hub_reference", "parse_hub_reference",
           "resolve_weights_path"]

HUB_PREFIX = "hf://"
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TRUE = {"1", "true", "yes", "on"}


class HubReferenceError(CheckpointError):
    """An ``hf://`` reference that is malformed or cannot be resolved; the message names the reference."""


@dataclass(frozen=True)
class HubReference:
    repo_id: str  # "owner/name"
    filename: str  # path inside the repository
    revision: str | None = None  # None: the default branch


def is_hub_reference(path: object) -> bool:
    return isinstance(path, str) and path.startswith(HUB_PREFIX)


def parse_hub_reference(ref: str) -> HubReference:
    """``hf://owner/name[@revision]/path/in/repo`` -> :class:`HubReference`; HubReferenceError when malformed."""
    if not is_hub_reference(ref):
        raise HubReferenceError(f"{ref!r} is not an {HUB_PREFIX} reference")
    parts = ref[len(HUB_PREFIX):].split("/")
    if len(parts) < 3 or not all(parts):
        raise HubReferenceError(f"{ref}: expected {HUB_PREFIX}owner/name[@revision]/path/to/file")
    owner, name = parts[0], parts[1]
    revision = None
    if "@" in name:
        name, revision = name.split("@", 1)
    if not (_REPO_PART.match(owner) and _REPO_PART.match(name)) or revision == "":
        raise HubReferenceError(f"{ref}: {owner}/{name} is not a valid repository id "
                                f"(expected {HUB_PREFIX}owner/name[@revision]/path/to/file)")
    return HubReference(f"{owner}/{name}", "/".join(parts[2:]), revision)


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def resolve_weights_path(path: str) -> str:
    """A local path for ``path``: an ``hf://`` reference is fetched into (or found in) the Hub cache; any other
    value is returned unchanged.

    Raises:
        HubReferenceError: malformed reference; not cached while offline; not cached and the Hub unreachable;
            repository or file not found. The message is one line naming the reference.
    """
    if not is_hub_reference(path):
        return path
    ref = parse_hub_reference(path)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = _offline()
    # HF_HUB_CACHE is read at huggingface_hub's import; passing it explicitly honours a value set later.
    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    try:
        return hf_hub_download(ref.repo_id, ref.filename, revision=ref.revision, cache_dir=cache_dir,
                               local_files_only=offline)
    except LocalEntryNotFoundError as error:
        why = ("offline mode (HF_HUB_OFFLINE) is on" if offline
               else f"the Hub could not be reached ({_first_line(error.__cause__ or error)})")
        raise HubReferenceError(f"{path}: not in the local Hugging Face cache and {why}") from None
    except EntryNotFoundError:
        raise HubReferenceError(f"{path}: no file {ref.filename!r} in {ref.repo_id}"
                                + (f" at revision {ref.revision}" if ref.revision else "")) from None
    except RepositoryNotFoundError:
        raise HubReferenceError(f"{path}: repository {ref.repo_id} not found (or private without a token)") \
            from None
    except (OSError, ValueError) as error:
        raise HubReferenceError(f"{path}: cannot be fetched: {_first_line(error)}") from None
