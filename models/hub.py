"""``hf://`` checkpoint references, resolved to a local file through ``huggingface_hub``'s cache.

A reference names a file in a Hugging Face Hub model repository, optionally at a revision (branch, tag or commit):

    hf://BAAI/EVA/eva_video_k400.pth
    hf://BAAI/EVA@main/eva_video_k400.pth
    hf://owner/repo/sub/folder/weights.safetensors
    hf://owner/repo@refs%2Fpr%2F3/weights.safetensors     (a revision with '/' is URL-encoded)

Downloads land in huggingface_hub's cache (``HF_HUB_CACHE`` / ``HF_HOME``) and are reused. ``HF_HUB_OFFLINE=1``
is honoured (read at call time, so it may be set after import): only the cache is consulted. A reference that is
neither cached nor downloadable fails with one line naming it; when the Hub cannot be reached at all that comes at
once, without huggingface_hub's retries (a cached file is then used as is).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote

# their home, where engine/ reads them too; still importable from here
from evautil.hub_names import ANY_CASE_PREFIX, HUB_PREFIX, hub_reference, is_hub_reference

from .checkpoint import CheckpointError

__all__ = ["HUB_PREFIX", "HubReference", "HubReferenceError", "is_hub_reference", "hub_reference",
           "parse_hub_reference", "miswritten_hub_reference", "resolve_weights_path", "cached_weights_path"]

_MISWRITTEN_PREFIX = re.compile(r"(?i)hf(?::/*|//+)")  # "hf:/", "hf:" with no slash, "hf:///", "hf//" with no colon
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# A file's web address copied from the Hub's pages: .../owner/name/blob|resolve|tree/<revision>/<path>[?download=true]
_HUB_WEB_ADDRESS = re.compile(r"(?i)^https?://(?:www\.)?(?:huggingface\.co|hf\.co)/(?!datasets/|spaces/)"
                              r"([^/?#]+)/([^/?#]+)(?:/(?:blob|resolve|tree)/([^/?#]+))?(?:/([^?#]*))?")
_TRUE = {"1", "true", "yes", "on"}


class HubReferenceError(CheckpointError):
    """An ``hf://`` reference that is malformed or cannot be resolved; the message names the reference."""


@dataclass(frozen=True)
class HubReference:
    repo_id: str  # "owner/name"
    filename: str  # path inside the repository
    revision: str | None = None  # None: the default branch


def parse_hub_reference(ref: str) -> HubReference:
    """``hf://owner/name[@revision]/path/in/repo`` -> :class:`HubReference`; HubReferenceError when malformed.

    A revision holding ``/`` (``refs/pr/3``) is written URL-encoded, ``@refs%2Fpr%2F3``, and decoded here: the
    first ``/`` after the revision starts the file's path, so ``@refs/pr/3/model.pth`` would read revision
    ``refs`` and file ``pr/3/model.pth``; that form is refused.
    """
    if not is_hub_reference(ref):
        raise HubReferenceError(f"{ref!r} is not an {HUB_PREFIX} reference")
    parts = ref[len(HUB_PREFIX):].split("/")
    if len(parts) < 3 or not all(parts):
        raise HubReferenceError(f"{ref}: expected {HUB_PREFIX}owner/name[@revision]/path/to/file")
    owner, name = parts[0], parts[1]
    revision = None
    if "@" in name:
        name, revision = name.split("@", 1)
    if not (_REPO_PART.match(owner) and _REPO_PART.match(name)):
        raise HubReferenceError(f"{ref}: {owner}/{name} is not a valid repository id "
                                f"(expected {HUB_PREFIX}owner/name[@revision]/path/to/file)")
    if revision == "":  # the repository is fine: the revision after its '@' is missing
        raise HubReferenceError(f"{ref}: no revision after '@'; name a branch, tag or commit "
                                f"({HUB_PREFIX}{owner}/{name}@main/...), or leave out '@' for the default branch")
    if revision == "refs":  # the Hub's refs/pr/N, refs/convert/...: always with '/', so the path took the rest
        encoded = f"{HUB_PREFIX}{owner}/{name}@{'%2F'.join(['refs', *parts[2:4]])}/{'/'.join(parts[4:]) or 'file'}"
        raise HubReferenceError(f"{ref}: a revision with '/' must be written URL-encoded, '/' as %2F (e.g. "
                                f"{encoded}): the first '/' after the revision starts the file's path")
    if revision is not None:
        revision = unquote(revision)
        if not revision or any(not part for part in revision.split("/")):
            raise HubReferenceError(f"{ref}: revision {revision!r} is not a valid branch, tag or commit")
    return HubReference(f"{owner}/{name}", "/".join(parts[2:]), revision)


def _offline() -> str:
    """The variable that puts huggingface_hub offline (its name, for the message), or "" when online."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return name
    return "HF_HUB_OFFLINE" if constants.HF_HUB_OFFLINE else ""  # read at huggingface_hub's import


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _cached_file(ref: HubReference, cache_dir: str | None) -> str | None:
    """The cached file of ``ref``, found without a request, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref.repo_id, ref.filename, cache_dir=cache_dir, revision=ref.revision)
    return found if isinstance(found, str) else None  # not a str: unknown, or the Hub said it does not exist


def cached_weights_path(path: str) -> str | None:
    """The local file an ``hf://`` reference resolves to when it is in the Hub cache, found without a request (e.g.
    the file a load just fetched), else None; any other value is returned unchanged."""
    ref = hub_reference(path)
    if ref is None:
        return path
    return _cached_file(parse_hub_reference(ref), os.environ.get("HF_HUB_CACHE") or None)


def _check_reachable(path: str, ref: HubReference) -> None:
    """One HEAD request for ``ref`` without retries; HubReferenceError when the Hub gives no answer at all.

    For a file not in the cache, hf_hub_download retries an unreachable Hub five times with backoff (~23 s of
    "Retrying in Ns" lines) before failing; a cached file needs no check, the download falls back to it at once.
    Only a first download pays for the extra request.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    try:
        get_hf_file_metadata(hf_hub_url(ref.repo_id, ref.filename, revision=ref.revision),
                             timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except (HfHubHTTPError, ValueError):
        pass  # the Hub answered (or the arguments are refused): hf_hub_download reports it as before
    except Exception as error:  # noqa: BLE001 - no answer: refused, DNS, timeout, proxy (the HTTP client's types)
        raise HubReferenceError(f"{path}: not in the local Hugging Face cache and the Hub could not be reached "
                                f"({_first_line(error)}); download it where the Hub can be reached (into the same "
                                "cache), or give a local file") from None


def miswritten_hub_reference(path: str) -> str | None:
    """For ``path`` when it names no local file and reads as a Hub reference miswritten (``hf:/``, ``hf:`` without
    slashes, ``hf//`` without the colon), or written in a form :func:`resolve_weights_path` reads but a caller that
    compares names as written would not (spaces around it, ``HF://``), or a file's web address on the Hub
    (``https://huggingface.co/owner/name/blob/main/file``): the one line saying how a reference is written, with
    this one written so; else None. A local file or folder under such a name is no mistake: it is read as the path
    it is."""
    if (is_hub_reference(path) and path == path.strip()) or os.path.exists(path):
        return None
    written = path.strip()
    shown = path if path == written else repr(path)  # spaces around it, seen
    web = _HUB_WEB_ADDRESS.match(written)
    if web:  # was "checkpoint file not found" of the address, read as a local path
        owner, name, revision, file = web.groups()
        meant = f"{HUB_PREFIX}{owner}/{name}{'@' + revision if revision else ''}/{file or 'path/to/file'}"
        return (f"{shown}: a web address, which is not downloaded; a file on the Hugging Face Hub is given as "
                f"{HUB_PREFIX}owner/name[@revision]/path/to/file (here {meant})")
    prefix = ANY_CASE_PREFIX.match(written) or _MISWRITTEN_PREFIX.match(written)
    if prefix is None:
        return None
    meant = HUB_PREFIX + written[prefix.end():]
    spaces = "" if path == written else ", without spaces around it"
    return (f"{shown}: not a file, nor a Hub reference, which is written in lower case with two slashes{spaces}: "
            f"{HUB_PREFIX}owner/name[@revision]/path/to/file (here {meant})")


def _web_path_hint(ref: HubReference) -> str:
    """For a file path that begins as the Hub's web addresses do (``blob/main/x.pth``), how the reference is written
    (the revision after '@'), else ""."""
    parts = ref.filename.split("/")
    if ref.revision is not None or len(parts) < 3 or parts[0] not in ("blob", "resolve", "tree"):
        return ""
    return (f"; '{parts[0]}/{parts[1]}/' is the web address's revision, which a reference gives after '@': "
            f"{HUB_PREFIX}{ref.repo_id}@{parts[1]}/{'/'.join(parts[2:])}")


def resolve_weights_path(path: str) -> str:
    """A local path for ``path``: an ``hf://`` reference is fetched into (or found in) the Hub cache, as is one
    written with spaces around it or ``HF://`` (:func:`hub_reference`); any other value is returned unchanged, but
    for a miswritten reference (``hf:/``, ``hf:``, ``hf//``) that names no local file
    (:func:`miswritten_hub_reference`).

    Raises:
        HubReferenceError: malformed or miswritten reference; not cached while offline; not cached and the Hub
            unreachable; repository or file not found. The message is one line naming the reference.
    """
    written = hub_reference(path)
    if written is None:
        miswritten = miswritten_hub_reference(path)
        if miswritten:
            raise HubReferenceError(miswritten)
        return path
    path, ref = written, parse_hub_reference(written)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = _offline()
    # HF_HUB_CACHE is read at huggingface_hub's import; passing it explicitly honours a value set later.
    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    try:
        if not offline and _cached_file(ref, cache_dir) is None:
            _check_reachable(path, ref)
        return hf_hub_download(ref.repo_id, ref.filename, revision=ref.revision, cache_dir=cache_dir,
                               local_files_only=bool(offline))
    except LocalEntryNotFoundError as error:
        # what to do: the variable that made it offline is named (TRANSFORMERS_OFFLINE was said as HF_HUB_OFFLINE)
        why = (f"offline mode ({offline}) is on; unset {offline} to download it, or give a local file" if offline
               else f"the Hub could not be reached ({_first_line(error.__cause__ or error)}); download it where the "
               "Hub can be reached (into the same cache), or give a local file")
        raise HubReferenceError(f"{path}: not in the local Hugging Face cache and {why}") from None
    except EntryNotFoundError:
        raise HubReferenceError(f"{path}: no file {ref.filename!r} in {ref.repo_id}"
                                + (f" at revision {ref.revision}" if ref.revision else "")
                                + _web_path_hint(ref)) from None
    except RepositoryNotFoundError:
        raise HubReferenceError(f"{path}: repository {ref.repo_id} not found (or private without a token)") \
            from None
    except (OSError, ValueError) as error:
        raise HubReferenceError(f"{path}: cannot be fetched: {_first_line(error)}") from None
