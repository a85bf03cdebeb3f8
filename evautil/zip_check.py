"""Checking a ``torch.save`` file against the CRC-32 of every record its zip archive holds.

``torch.save`` writes a zip archive with a CRC-32 per record (tensor storages, the pickle), but ``torch.load``
does not check them: a file whose bytes changed on disk after it was written (a bad sector, a storage or network
file-system fault, a partial overwrite) loads without complaint and hands back wrong weights or optimizer moments.
Reading the records once more costs about half of what ``torch.load`` takes for the same file (from the page
cache; the file is read anyway). A file ``torch.load`` cannot read is told apart here too: what it is instead
(:func:`unreadable_reason`), or a safetensors file (:func:`is_safetensors`), which holds weights of another format.
"""

from __future__ import annotations

import re
import zipfile

from .files import file_head, file_version

__all__ = ["damaged_zip_record", "is_safetensors", "safetensors_cut_short", "safetensors_unreadable",
           "unreadable_reason", "lfs_pointer"]

_CHUNK = 16 << 20
# Files found intact by a check with ``remember``, by (device, inode, size, mtime): a run checks the checkpoint it
# resumes or evaluates before it writes anything, and its load later need not read the whole file again. Good for
# the one check that follows (and, when that one remembers too, for the next: the checks of one start), not for
# every later check: bytes changed in place within one mtime tick would pass them all.
_INTACT: set[tuple[int, int, int, int]] = set()


def damaged_zip_record(path: str, remember: bool = False) -> str | None:
    """Why ``path``'s zip archive cannot be trusted, or None when every record matches its CRC-32.

    A file that is not a zip archive at all (torch's legacy format, a safetensors file) is not checked: None.
    Records whose stored CRC is 0 are skipped: a writer that did not compute CRCs stores 0 (torch can be told not
    to); a real CRC-32 is 0 for one record in 2**32, which then goes unchecked. ``remember``: a file found intact
    (or taken as intact from the memo) is not read again by the next check in this process if its inode, size and
    modification time are the same.
    """
    version = file_version(path)
    if version in _INTACT:
        if not remember:
            _INTACT.discard(version)
        return None
    if not zipfile.is_zipfile(path):
        return _cut_short(path)
    where = ""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.CRC == 0 or info.is_dir():
                    continue
                where = f"record {info.filename}"
                with archive.open(info) as record:  # raises BadZipFile at its end when the CRC-32 differs
                    while record.read(_CHUNK):
                        pass
    except zipfile.BadZipFile as error:
        if "CRC" in str(error):
            return f"{where} does not match the CRC-32 written with it: its bytes changed after it was written"
        return f"{where}: {error}" if where else str(error)
    except (OSError, EOFError, ValueError) as error:  # cut short inside a record, an unreadable sector
        return f"{where or 'the archive'} cannot be read: {type(error).__name__}: {error}"
    if remember and version is not None:
        _INTACT.add(version)
    return None


def _cut_short(path: str) -> str | None:
    """Why a file that begins as a zip archive but has no end record (its central directory) is not one: it was cut
    short. None for a file that does not begin as a zip archive (torch's legacy format, a safetensors file)."""
    try:
        head, size = file_head(path, 4)
    except OSError:
        return None
    if not head or not b"PK\x03\x04".startswith(head):  # (a file cut within these 4 bytes is one too)
        return None
    # A zip reader looks for the end record in the last 64 KiB: more bytes appended after a whole archive hide it
    # as well as a cut does.
    return (f"cut short: {size} bytes of a zip archive (torch's format) without its end record (an interrupted "
            "save, copy or download?), or with more than 64 KiB appended after it")


def unreadable_reason(path: str, error: BaseException) -> str:
    """What is wrong with a file ``torch.load`` failed on, for a person: what the file begins with when it is
    neither a zip archive nor a pickle (the unpickler's own complaint about such bytes, e.g. ``KeyError: 174812789``
    from an opcode that happened to read as a memo index, says nothing of the file), else that its pickle is
    damaged or cut short."""
    try:
        head, _ = file_head(path, 64)
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    if head.startswith(b"PK"):  # most likely not torch's (a damaged one of torch's is found before): torch's reason
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return "a zip archive torch does not read as a checkpoint" + (f": {lines[0]}" if lines else "")
    if head[:1] == b"\x80" and head[1:2] and 2 <= head[1] <= 5:  # a pickle's PROTO opcode (protocols 2-5)
        if isinstance(error, EOFError):
            return "damaged: it ends inside its pickle (cut short?)"
        return "damaged: its pickle cannot be read (cut short, or its bytes changed?)"
    return lfs_pointer(path) or f"neither a zip archive nor a pickle: {_begins_with(head)}"


def _is_torch_file(head: bytes) -> bool:
    """Whether ``head`` begins as torch.save's files do: a zip archive, or a pickle (the legacy format)."""
    return head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] != b"" and 2 <= head[1] <= 5)


def _begins_with(head: bytes) -> str:
    """"it begins with the text '...'" (its first line, when printable), else "... the bytes ..." (the first 8)."""
    text = head.split(b"\n", 1)[0]
    try:
        line = text.decode("utf-8").strip()
    except UnicodeDecodeError:
        line = ""
    if line.isprintable() and line:
        return f"it begins with the text {line[:40]!r}"
    return f"it begins with the bytes {head[:8].hex(' ')}"


def lfs_pointer(path: str) -> str | None:
    """What a Git LFS pointer file (the short text a clone without git-lfs leaves in place of a large file) stands
    for and how to get the file itself; None for any other file."""
    try:
        head, size = file_head(path, 1024)
    except OSError:
        return None
    if size > 1024 or not head.startswith(b"version https://git-lfs.github.com/spec/"):
        return None
    match = re.search(rb"^size (\d+)\s*$", head, re.MULTILINE)
    of = f" of a {int(match.group(1))}-byte file" if match else ""
    return (f"a Git LFS pointer{of}, not the file itself (a clone or copy made without git-lfs?): fetch it with "
            "'git lfs pull', or download the file")


def is_safetensors(path: str) -> bool:
    """Whether ``path`` is a safetensors file: by its name, else by its first bytes (the header's length, 8 bytes
    little-endian, then the JSON header's ``{``; torch's files begin with ``PK`` or a pickle's ``\\x80``), so that
    one saved or renamed under another name is read as what it is, not refused as a damaged pickle."""
    if path.endswith(".safetensors"):
        return True
    try:
        head, size = file_head(path, 9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8


def safetensors_cut_short(path: str) -> str | None:
    """Why a safetensors file is shorter than its header says, in words (safetensors' own: "incomplete metadata,
    file not fully covered"); None when it is not (or its header cannot be read: the reader's error says why)."""
    import json

    try:
        head, size = file_head(path, 9)
        length = int.from_bytes(head[:8], "little") if len(head) == 9 and head[8:] == b"{" else 0
        if length < 2 or length > 100_000_000:  # no header length before a JSON header: left to the reader
            return None
        if 8 + length > size:
            return f"cut short: {size} bytes, inside its {8 + length}-byte header (an interrupted save, copy or " \
                   "download?)"
        with open(path, "rb") as f:
            f.seek(8)
            header = json.loads(f.read(length))
        end = max((int(entry["data_offsets"][1]) for name, entry in header.items() if name != "__metadata__"),
                  default=0)
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    need = 8 + length + end
    if size >= need:
        return None
    return f"cut short: {size} bytes of a safetensors file whose header describes {need} (an interrupted save, " \
           "copy or download?)"


def safetensors_unreadable(path: str) -> str | None:
    """Why a file read as safetensors cannot be, in words: empty, a Git LFS pointer, something else than a
    safetensors header, or cut short (safetensors says only "header too small" or "header too large"); None when
    none of these (the reader's own error then says why)."""
    try:
        head, size = file_head(path, 64)
    except OSError:
        return None
    if size == 0:
        return "an empty file (0 bytes)"
    pointer = lfs_pointer(path)
    if pointer:
        return pointer
    if _is_torch_file(head):  # torch.load reads a name ending in .safetensors as safetensors: renamed, it reads it
        return "a torch.save file, not safetensors: give it a name ending in .pth"
    if len(head) < 9 or head[8:9] != b"{":
        return f"no safetensors header: {_begins_with(head)}"
    return safetensors_cut_short(path)
