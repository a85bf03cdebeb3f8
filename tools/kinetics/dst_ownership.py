"""Which re-encode owns a --dst, and what stopped ones left there: the run lock that names the run writing into the
tree, the lock every encode holds while it runs, the wait for the encodes of a run stopped before this one, and the
removal of the partial outputs (``.part``) they left (``reencode.py`` plans, encodes and reports)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from dataclasses import dataclass
from typing import IO, Iterator

from evautil.files import hold_lock, lock_is_free
from evautil.progress import counted, stderr_line

from .common import KineticsError, walk_progress

__all__ = ["LOCK_FILE", "ENCODES_LOCK_FILE", "STOPPED_ENCODES_WAIT_S", "name_this_run", "encoding_for",
           "wait_for_stopped_encodes", "DstWalk", "walk_dst", "remove_stale_parts",
           "refuse_runs_above_or_below"]

# Held by the run that writes into --dst (hidden: neither a re-encode nor the lists take it for a video or a class);
# it names that run (:func:`name_this_run`).
LOCK_FILE = ".reencode.lock"
# Held (shared) by every encode while it runs, so that a run can wait for the encodes of one stopped before it.
ENCODES_LOCK_FILE = ".reencode.encodes.lock"
# How long a run waits for them: a worker ends within evautil.workers.WATCH_INTERVAL_S (0.5 s) of its main process,
# a little later while its encode keeps the interpreter busy; one that takes a minute is stuck.
STOPPED_ENCODES_WAIT_S = 60.0


def name_this_run(lock: IO[str]) -> str:
    """Write a name for this run into its :data:`LOCK_FILE` (``lock``, held) and return it: its encodes check that
    the tree is still theirs (:func:`encoding_for`)."""
    name = f"{os.getpid()} {uuid.uuid4().hex}"
    lock.seek(0)
    lock.truncate(0)
    lock.write(name + "\n")
    lock.flush()
    return name


def wait_for_stopped_encodes(dst_root: str) -> None:
    """Wait until no encode of a run stopped before this one runs in ``dst_root`` (each holds
    :data:`ENCODES_LOCK_FILE`); KineticsError after :data:`STOPPED_ENCODES_WAIT_S`. A worker ends only once it sees
    its main process gone: the same command started again at once, after a run killed outright, began the video a
    dying worker was finishing, into the same ``.part`` file, and that worker then renamed the half-written file
    into place, where every resume skipped it as done."""
    path = os.path.join(dst_root, ENCODES_LOCK_FILE)
    deadline = None
    while True:
        free = hold_lock(path)  # taken (or a file system without locks): no stopped encode is left to wait for
        if free is not None:
            free.close()
            return
        if deadline is None:
            stderr_line(f"reencode: waiting for the workers of the re-encode into {dst_root} that was stopped "
                        f"before this one to end (they may still be writing there)")
            deadline = time.monotonic() + STOPPED_ENCODES_WAIT_S
        elif time.monotonic() > deadline:
            raise KineticsError(f"the workers of a re-encode into {dst_root} that was stopped still hold {path} "
                                f"after {STOPPED_ENCODES_WAIT_S:g} s: end them (`fuser {path}` names them), "
                                f"then run the same command again")
        time.sleep(0.1)


@dataclass(frozen=True)
class DstWalk:
    """What one walk through a --dst found (:func:`walk_dst`): the folders under it holding a :data:`LOCK_FILE`
    (hidden ones too) and the partial outputs (``<name>.mp4.part``, regular files outside hidden folders)."""

    lock_folders: tuple[str, ...]
    parts: tuple[str, ...]


def walk_dst(dst_root: str, progress_lines: bool = True) -> DstWalk:
    """One walk through ``dst_root`` (links to folders not followed) for both :func:`refuse_runs_above_or_below`
    and :func:`remove_stale_parts`: a run walked a 650,000-video tree once for each."""
    lock_folders, parts = [], []
    walk = walk_progress(f"reencode: looking for partial outputs and re-encodes running into folders of {dst_root}",
                         "folder", lines=progress_lines)
    hidden_below: set[str] = set()  # folders inside a hidden one: no encode writes there
    for dirpath, dirnames, filenames in os.walk(dst_root):
        if dirpath != dst_root and LOCK_FILE in filenames:
            lock_folders.append(dirpath)
        hidden = dirpath in hidden_below
        hidden_below.update(os.path.join(dirpath, d) for d in dirnames if hidden or d.startswith("."))
        for f in filenames if not hidden else ():
            path = os.path.join(dirpath, f)
            # an encode writes a regular file: a link of that name is not one's (nor is what it points to)
            if f.endswith(".mp4.part") and not f.startswith(".") and not os.path.islink(path):
                parts.append(path)
        walk.update()
    walk.finish()
    return DstWalk(tuple(lock_folders), tuple(parts))


def remove_stale_parts(dst_root: str, progress_lines: bool = True, walked: DstWalk | None = None) -> int:
    """Remove every encode's partial output (``<name>.mp4.part``) under ``dst_root`` and say how many on stderr;
    called once no encode but this run's can write there (:func:`wait_for_stopped_encodes`), before this run's
    first: each is stale. A run killed outright (SIGKILL, the machine going down) leaves the one of each video it
    was encoding, which a later run overwrites only if it encodes that video again: one re-encoded beside its
    finished output (a newer source) and then no longer planned, or no longer newer than that output (a source
    removed, restored with its old time, a narrower --src), stayed for good, counted by the lists among the entries
    they ignore. Hidden folders (no encode writes there) and links are left alone, links to folders not followed.
    ``walked``: the tree's :func:`walk_dst` made after that wait (None: walked here)."""
    removed = 0
    for path in (walked or walk_dst(dst_root, progress_lines)).parts:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
            removed += 1
    if removed:
        stderr_line(f"reencode: removed {counted(removed, 'partial output')} (.mp4.part) of encodes stopped before "
                    f"this run in {dst_root}")
    return removed


@contextlib.contextmanager
def encoding_for(run: tuple[str, str]) -> Iterator[bool]:
    """Whether an encode of ``run`` (``(dst_root, name)``: :func:`name_this_run`) may write into the tree: its
    :data:`LOCK_FILE` still names the run (checked for each video: a worker of a stopped run may take one more from
    its queue). :data:`ENCODES_LOCK_FILE` is held until the encode has ended, its output renamed or removed, so that
    a run taking the tree over waits for it (:func:`wait_for_stopped_encodes`)."""
    dst_root, name = run
    with open(os.path.join(dst_root, ENCODES_LOCK_FILE), "a", encoding="utf-8") as encodes:
        with contextlib.suppress(OSError):  # a file system without locks: unguarded, as hold_lock
            fcntl.flock(encodes, fcntl.LOCK_SH)
        try:
            with open(os.path.join(dst_root, LOCK_FILE), encoding="utf-8") as f:
                owner = f.read().strip()
        except FileNotFoundError:
            owner = None
        yield owner == name


def refuse_runs_above_or_below(dst_root: str, pairs: list[tuple[str, str]], progress_lines: bool = True,
                               walked: DstWalk | None = None) -> None:
    """Raise KineticsError when a re-encode runs into a folder that holds ``dst_root`` or into any folder under it
    (its :data:`LOCK_FILE` held there): a split re-encoded into the split's folder of a tree being re-encoded, or a
    trial run into some other folder of it, shared the tree, and the outer run removed the inner one's partial
    outputs as stale, failing the videos being encoded. Under ``dst_root``: every folder of the tree (links to
    folders not followed, as :func:`remove_stale_parts` does: ``walked``, its :func:`walk_dst`, None: walked here),
    and the output folders of ``pairs``, a link's too."""
    above = os.path.dirname(dst_root)
    while True:
        if not lock_is_free(os.path.join(above, LOCK_FILE)):
            _refuse_other_run(above, f"a folder that holds {dst_root}")
        if os.path.dirname(above) == above:
            break
        above = os.path.dirname(above)
    below = set()
    for _, d in pairs:
        folder = os.path.dirname(d)
        while folder != dst_root and folder not in below and folder.startswith(dst_root + os.sep):
            below.add(folder)
            folder = os.path.dirname(folder)
    below.update((walked or walk_dst(dst_root, progress_lines)).lock_folders)
    for folder in sorted(below):
        if not lock_is_free(os.path.join(folder, LOCK_FILE)):
            _refuse_other_run(folder, f"a folder of {dst_root}")


def _refuse_other_run(folder: str, where: str) -> None:
    raise KineticsError(f"another re-encode is running into {folder} (it holds {LOCK_FILE} there), {where}: two at "
                        f"once would write the same files, each removing the other's partial outputs; wait for it to "
                        f"end (the same command then goes on with what is left), or give a --dst apart from it")
