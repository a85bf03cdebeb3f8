"""The order of the fsync and rename calls a write makes, recorded by monkeypatching ``os``: what a power loss
could lose is a file renamed into place before it was synced, or a rename its folder was not synced after."""

from __future__ import annotations

import os
import stat


def record_syncs(monkeypatch) -> list[tuple]:
    """From now on, record each ``os.fsync`` as ("fsync", file name, its size) or ("fsync folder", folder path),
    and each ``os.replace`` as ("replace", source name, target name), in the returned list, in call order."""
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        is_folder = stat.S_ISDIR(os.fstat(fd).st_mode)
        events.append(("fsync folder", name) if is_folder else ("fsync", os.path.basename(name), os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", os.path.basename(src), os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def synced_renames(events: list[tuple], folder: str) -> list[tuple[str, int]]:
    """(name, size) of each file of ``events`` (:func:`record_syncs`) written durably into ``folder``: a temporary
    file beside it synced whole, at once renamed over the name, and at once the folder synced."""
    found = []
    for before, event, after in zip(events, events[1:], events[2:]):
        if event[0] == "replace" and before[:2] == ("fsync", event[1]) and after == ("fsync folder", folder):
            temp, name = event[1], event[2]
            if temp.startswith(f".{name}.") and temp.endswith(".tmp"):
                found.append((name, before[2]))
    return found
