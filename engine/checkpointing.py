"""A run's checkpoints in OUTPUT: saved under their step's name, rotated, and found for a resume with fallback
past damaged files (which the writer moves to ``<name>.damaged``). Writing and reading one file, and checking
what it holds, is :mod:`engine.checkpoint_io`'s.

Files in the output directory: ``ckpt_epoch_{e}.pth`` (end of epoch e, counted from 1 as in every line the run
prints and writes; the dict inside keeps the 0-based ``epoch`` index, like the original's), ``ckpt_step_{s}.pth``
(after optimizer step s, mid-epoch) and ``best.pth`` (model weights of the best evaluation, kept apart from the
rotation).
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any, Callable, NamedTuple

import torch

from evautil.errors import CheckpointError
from evautil.files import atomic_temp_files, atomic_temp_glob, file_version, output_path_problem
from evautil.text import is_utf8_text
from evautil.zip_check import damaged_zip_record

from .checkpoint_io import DamagedCheckpoint, load_checkpoint, offer_parsed, save_atomic
from .metrics import epoch_number
from .run_files import EARLIER_RUNS_DIR, killed_writes

__all__ = ["CheckpointError", "Checkpointer", "check_output_dir", "checkpoint_files", "starts_fresh"]

_NAME_RE = re.compile(r"^ckpt_(epoch|step)_(\d+)\.pth$")


def check_output_dir(path: str) -> None:
    """Raise CheckpointError when ``path`` (OUTPUT) cannot become a writable directory: it, or a folder above it,
    is a file, or the nearest existing one cannot be written (a file made there on trial fails), or it is
    empty."""
    if not path:  # abspath("") is the working folder: the run's lock went there, then its first write failed
        raise CheckpointError("OUTPUT is empty: name the folder the run writes to (--output DIR, or OUTPUT in the "
                              "config; the default is output)")
    probe = os.path.abspath(path)
    if not is_utf8_text(probe):
        # a name in bytes that are no UTF-8 (a folder named on a Latin-1 system): torch takes a file's name as
        # UTF-8 and reads none of the checkpoints written there; the run trained, then could not resume
        shown = os.fsencode(probe).decode("utf-8", "backslashreplace")
        raise CheckpointError(f"OUTPUT = {shown}: its path holds bytes that are no UTF-8, and torch cannot read "
                              "checkpoints back from there; give a folder whose path is UTF-8 (or rename it)")
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        where = "it" if probe == os.path.abspath(path) else probe
        raise CheckpointError(f"OUTPUT = {path} cannot be a directory: {where} is an existing file")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "it" if probe == os.path.abspath(path) else f"{probe}, where it would be made,"
        raise CheckpointError(f"OUTPUT = {path} cannot be written: {where} is on a read-only file system or not "
                              "writable by this user")
    problem = output_path_problem(path, "OUTPUT =", folder=True)  # what access() cannot tell: /proc as root
    if problem:
        raise CheckpointError(problem)


def checkpoint_files(output_dir: str) -> list[str]:
    """The rotating checkpoints (``ckpt_epoch_*.pth``, ``ckpt_step_*.pth``) in ``output_dir``, unordered."""
    return [p for p in glob.glob(os.path.join(glob.escape(output_dir), "ckpt_*.pth"))
            if _NAME_RE.match(os.path.basename(p))]


def starts_fresh(output_dir: str, resume: str, auto_resume: bool) -> bool:
    """Whether a training run starts from step 0: no ``--resume`` file, and no checkpoint in ``output_dir`` to
    resume from automatically (:meth:`Checkpointer.find_latest` refuses to start over when every one is damaged)."""
    return not resume and not (auto_resume and checkpoint_files(output_dir))


class _Order(NamedTuple):
    """What a listing keeps of a checkpoint's parse: ``key`` (global step, 1 for an epoch-end file; a damaged
    file's from its name), whether the file ``readable``, the ``origin`` its TrainState records (the file an
    attempt started from: :meth:`Checkpointer.continuation_of`), None when none, and ``best``: the
    ``{"top1", "epoch", "global_step"}`` a best.pth records (:meth:`Checkpointer.best_after`), None when it lacks
    them. ``epoch``: the 0-based index of the epoch a readable file ends or stops in, None for a damaged one."""

    key: tuple[int, int]
    readable: bool
    origin: dict | None
    best: dict | None = None
    epoch: int | None = None


def _best_record(state: dict) -> dict | None:
    """What :meth:`Checkpointer.best_after` tells of a best.pth, as plain numbers (a tensor would keep the mapped
    file open); None when the file does not hold them."""
    try:
        return {"top1": float(state["top1"]), "epoch": int(state["epoch"]), "global_step": int(state["global_step"])}
    except (KeyError, TypeError, ValueError, RuntimeError):
        return None


def _epoch_index(state: dict) -> int | None:
    try:
        return int(state["epoch"])
    except (KeyError, TypeError, ValueError, RuntimeError):
        return None


def _place_damaged_epoch_end(path: str, order: _Order, found: list) -> _Order:
    """``order`` of a listed file, a damaged ``ckpt_epoch_{e}.pth`` placed right after the readable checkpoints of
    epochs 1 to e (0-based indices below e), which it follows: its name tells no step, and ranked last, a damaged
    newest checkpoint was passed over without a word (the run went back to an older one, losing the steps between,
    and the file was neither named nor set aside). ``found``: the folder's (path, order, state) as parsed."""
    named = _NAME_RE.match(os.path.basename(path))
    if order.readable or named is None or named.group(1) != "epoch":
        return order
    number = int(named.group(2))
    before = [o.key[0] for _, o, _ in found if o.readable and o.epoch is not None and o.epoch < number]
    # (step, 2): above an epoch-end file saved at the same step, below any step after it
    return order._replace(key=(max(before), 2)) if before else order


# Checkpointer._orders of each folder (by real path).
_ORDERS: dict[str, dict[str, tuple[tuple[int, int, int, int], _Order]]] = {}


class Checkpointer:
    """Saves, rotates and finds checkpoints in ``output_dir``.

    Only rank 0 writes (``writer=True``); every rank can find and load. ``keep_last`` rotating checkpoints are
    kept (ordered by optimizer step); ``best.pth`` is never rotated away.
    """

    def __init__(self, output_dir: str, keep_last: int = 2, writer: bool = True,
                 warn: Callable[[str], None] | None = None) -> None:
        self.output_dir = output_dir
        self.keep_last = max(1, keep_last)
        self.writer = writer
        self.warn = warn or (lambda msg: None)
        self.last_saved: str | None = None
        self.damaged: set[str] = set()  # real paths find_latest skipped as unusable: never counted as kept
        # Each listed file's order as parsed, by path, with the (device, inode, size, mtime) it had: a listing (the
        # rotation after every save, find_latest, continuation_of) parses only files new or changed since (a parse
        # costs per tensor: thousands for EVA-g). The order and the origin only, never the state: a mapped state
        # would keep a file rotated away on the disk. Shared by the Checkpointers of one folder: a start finds the
        # checkpoint to go on from, sets aside what came after it and rotates, each with its own. best.pth's step
        # and score are kept here too (best_step, then best_after), and not forgotten by a listing.
        self._orders = _ORDERS.setdefault(os.path.realpath(output_dir), {})
        self.best_path = os.path.join(output_dir, "best.pth")
        self._had_output = os.path.isdir(output_dir)  # a folder that disappears later is said at the next save

    def path_for(self, epoch: int, global_step: int, epoch_complete: bool) -> str:
        """The file of a checkpoint whose dict holds the 0-based ``epoch`` index (named by the epoch's number)."""
        name = f"ckpt_epoch_{epoch_number(epoch)}.pth" if epoch_complete else f"ckpt_step_{global_step}.pth"
        return os.path.join(self.output_dir, name)

    def save(self, state: dict) -> str:
        """Write ``state`` (must hold REQUIRED_KEYS) under its epoch/step name, then rotate. Returns the path."""
        path = self.path_for(state["epoch"], state["global_step"], state["epoch_complete"])
        if self.writer:
            self._write(state, path)
            self._rotate()
        self.last_saved = path
        return path

    def save_best(self, state: dict) -> str:
        path = self.best_path
        if self.writer:
            self._write(state, path)
        return path

    def _write(self, state: dict, path: str) -> None:
        """The writing rank's save of ``state`` to ``path``, after the leftovers of killed writes are removed."""
        self._say_if_output_vanished(path)
        self._remove_killed_writes()
        save_atomic(state, path, earlier=bool(checkpoint_files(self.output_dir)))  # its failure says if they're kept
        self._had_output = True

    def _say_if_output_vanished(self, path: str) -> None:
        """Warn when OUTPUT is gone (deleted, or purged from a scratch file system) as a save comes: the write makes
        it again and the run goes on saving, but the files written before went with it unsaid."""
        if self._had_output and not os.path.isdir(self.output_dir):
            self.warn(f"OUTPUT = {self.output_dir} is gone (deleted, or purged from its file system) since this run "
                      f"began: made it again to save {os.path.basename(path)}; its earlier files (checkpoints, "
                      "metrics.jsonl, log_rank*.txt, config.yaml) are lost and this run's record there is incomplete")

    def candidates(self) -> list[str]:
        """Rotating checkpoints in the directory, newest (highest optimizer step, epoch end first) first."""
        return [path for path, _, _ in self._ordered()]

    def _ordered(self) -> list[tuple[str, _Order, Any]]:
        """:meth:`candidates`, each with its :class:`_Order` and the file as read (memory-mapped) for it; None when
        unreadable or its order was known (not parsed again)."""
        found = [(path, *self._parse_order(path)) for path in self._listed()]
        found = [(path, _place_damaged_epoch_end(path, order, found), state) for path, order, state in found]
        return sorted(found, key=lambda f: (f[1].key, f[0]), reverse=True)

    def _listed(self) -> list[str]:
        """:func:`checkpoint_files`; the orders known of files no longer there are forgotten."""
        paths = checkpoint_files(self.output_dir)
        listed = set(paths)
        for gone in [p for p in self._orders if p not in listed and p != self.best_path]:
            del self._orders[gone]
        return paths

    def newer_than(self, path: str) -> list[str]:
        """The rotating checkpoints in the directory that rank above ``path`` (a later step), newest first."""
        same = os.path.realpath(path)
        found = self._ordered()
        key = next((o.key for p, o, _ in found if os.path.realpath(p) == same), None) or self._order_key(path)
        return [p for p, o, _ in found if o.key > key and os.path.realpath(p) != same]

    def continuation_of(self, named: str) -> str | None:
        """The newest loadable checkpoint here when the attempt that wrote it started from ``named`` (or continued
        one that did): the same command, naming ``named`` with ``--resume``, was stopped and now runs again.
        None when the newest loadable checkpoint belongs to another run. ``named`` may be gone (rotated away).
        The file a run then goes on from (the one returned, else ``named``), as read here, is offered to its check
        (:func:`load_resumable`, memory-mapped), which takes it instead of parsing the file again."""
        found = self._ordered()  # each file parsed once, for its order and its origin
        # read only when there is something to compare it with: a first start reads ``named`` once, for the resume;
        # one of this folder's checkpoints is not parsed again
        named_order, named_state = self._parse_order(named) if found and os.path.isfile(named) else (None, None)
        step = named_order.key[0] if named_order is not None and named_order.readable else None
        same = os.path.realpath(named)
        pick = None
        for path, order, _ in found:
            if not order.readable:  # damaged: find_latest skips it too
                continue
            origin = order.origin
            started_there = bool(origin) and origin.get("path") == same and (
                step is None or origin.get("step") == step)
            # remember: the run checks and loads it next, without reading it whole again
            damage = damaged_zip_record(path, remember=True) if started_there else None
            if damage:  # changed on disk: an earlier checkpoint of the same attempt may continue ``named`` too
                self.warn(f"checkpoint {path} is damaged: {damage}; trying the previous one")
                continue
            pick = path if started_there else None
            break
        # the file the run goes on from, as read here, for its check (load_resumable)
        chosen = os.path.realpath(pick) if pick is not None else same
        offer_parsed(chosen, next((s for p, _, s in found if os.path.realpath(p) == chosen), None)
               if pick is not None or named_state is None else named_state)
        return pick

    @staticmethod
    def step_of(path: str) -> int | None:
        """The optimizer step a checkpoint (or best.pth) was saved at, read memory-mapped; None when unreadable."""
        try:
            return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
        except Exception:  # noqa: BLE001 - damaged or foreign: no step to compare
            return None

    def best_after(self, step: int) -> dict[str, Any] | None:
        """``{"top1", "epoch", "global_step"}`` of this directory's best.pth when it was saved after optimizer
        ``step``; None when it was not, or is missing or unreadable (foreign). Parsed as :meth:`best_step`."""
        best = self._best_order()
        found = best.best if best is not None else None
        return found if found is not None and found["global_step"] > step else None

    def best_step(self) -> int | None:
        """The optimizer step this directory's best.pth was saved at; None when it is missing or unreadable. Read
        memory-mapped, once while the file is unchanged: the order cache of the folder keeps what :meth:`best_after`
        needs too, so a start that sets aside a later best.pth and then resumes parses it once (thousands of
        tensors for EVA-g)."""
        best = self._best_order()
        return best.key[0] if best is not None else None

    def _best_order(self) -> _Order | None:
        if not os.path.isfile(self.best_path):  # moved aside, or none yet: nothing to parse
            return None
        order, _ = self._parse_order(self.best_path)  # the mapped state is dropped here
        return order if order.readable else None

    def _order_key(self, path: str) -> tuple[int, int]:
        """(global step, 1 for an epoch-end file) read lazily: mmap'ed load touches no tensor data."""
        return self._parse_order(path)[0].key

    def _parse_order(self, path: str) -> tuple[_Order, Any]:
        """The file's :class:`_Order` and the file as read for it (memory-mapped): None when it could not be read,
        or when its order is known from an earlier parse (by a Checkpointer of this folder) and the file is
        unchanged."""
        version = file_version(path)
        known = self._orders.get(path)
        if known is not None and known[0] == version:
            return known[1], None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            key, readable = (int(state["global_step"]), int(bool(state.get("epoch_complete")))), True
        except Exception:
            # Damaged: rank it by its name so it is still tried (and reported) in a sensible place.
            state, readable = None, False
            named = _NAME_RE.match(os.path.basename(path))
            if named is None:  # not a rotating checkpoint's name (e.g. an explicit --resume file)
                key = (-1, 0)
            else:
                kind, num = named.groups()
                key = (int(num), 0) if kind == "step" else (-1, 0)
        train_state = state.get("train_state") if readable else None
        origin = train_state.get("origin") if isinstance(train_state, dict) else None
        order = _Order(key, readable, dict(origin) if isinstance(origin, dict) else None,  # plain data, no tensor
                       _best_record(state) if readable else None, _epoch_index(state) if readable else None)
        if version is not None:
            self._orders[path] = (version, order)
        return order, state

    def _remove_killed_writes(self) -> None:
        """Remove the temporary files of writes that died (a kill mid-save: up to a whole checkpoint's size); only
        this writer creates them. Done before each write, not after: on a disk that a killed write left too full
        for the next checkpoint, every resumed attempt failed its first save and never got to the clean-up. One
        written through a link (a checkpoint name linked to another store) left its own beside the file the link
        names, in that file's folder. Those of a write still going on stay (:func:`engine.run_files.killed_writes`):
        a store that links of several runs' OUTPUT name, or a folder shared across hosts, holds other writers' too,
        and a save here deleted their checkpoint mid-write."""
        folder = glob.escape(self.output_dir)
        stale = [p for name in ("ckpt_*.pth", "best.pth")
                 for p in glob.glob(os.path.join(folder, atomic_temp_glob(name)))]
        links = [p for p in checkpoint_files(self.output_dir) + [self.best_path]
                 if os.path.islink(p)]
        for path in killed_writes(stale + [p for link in links for p in atomic_temp_files(link)]):
            try:
                os.remove(path)
            except OSError:
                pass

    def _rotate(self) -> None:
        # Only checkpoints that can be resumed from count as kept: a damaged one (say, beyond the step this attempt
        # fell back to) would otherwise take a place and have the last good one deleted. Damaged files are left
        # for their owner to look at; find_latest skips them.
        found = [(self._parse_order(path)[0], path) for path in self._listed()]
        usable = [path for order, path in sorted(found, key=lambda f: (f[0].key, f[0].readable, f[1]), reverse=True)
                  if order.readable and os.path.realpath(path) not in self.damaged]
        for old in usable[self.keep_last:]:
            try:
                os.remove(old)
            except OSError:
                pass

    def find_latest(self, mmap: bool = False) -> tuple[str, dict] | None:
        """The newest checkpoint that loads and holds every required key, or None when there are none at all.

        A file that cannot be used is reported through ``warn`` by name and the next older one is tried. A writer
        that resumes an older one moves each damaged file it passed (cut short, changed on disk) to
        ``<name>.damaged`` and says so once: left in place, it was named again at every later resume. A file that
        reads but is no training checkpoint stays where it is. If files exist but none is usable, CheckpointError
        is raised and nothing moves: a run must never silently start over. ``mmap``: check without reading the
        tensors into memory (see ``load_checkpoint``).
        """
        candidates = self._ordered()
        errors, passed = [], []
        for path, _, parsed in candidates:
            try:  # memory-mapped, the parse that ordered it serves (a parse costs per tensor: thousands for EVA-g)
                found = path, load_checkpoint(path, mmap=mmap, parsed=parsed if mmap else None)
            except CheckpointError as e:
                errors.append(str(e))
                if not os.path.lexists(path):  # gone since the listing: rank 0 set it aside, or rotated it away
                    continue
                if self.writer and isinstance(e, DamagedCheckpoint):
                    passed.append((path, e))  # moved aside below once an older one is found to resume
                else:
                    self._keep_damaged(path, f"{e}; trying the previous checkpoint")
                continue
            for damaged, error in passed:
                self._set_damaged_aside(damaged, error, found[0])
            return found
        for damaged, error in passed:
            self._keep_damaged(damaged, f"{error}; trying the previous checkpoint")
        if candidates:  # what to do too: with KEEP_LAST 1 a damaged newest one is all there is
            aside = os.path.join(self.output_dir, EARLIER_RUNS_DIR)
            raise CheckpointError(
                f"no usable checkpoint in {self.output_dir}: {'; '.join(errors)}; put back an intact copy, or name "
                "the checkpoint to use with --resume (a training run starts over from step 0 with --opts "
                f"TRAIN.AUTO_RESUME False, which moves these files into {aside})")
        return None

    def _keep_damaged(self, path: str, line: str) -> None:
        self.damaged.add(os.path.realpath(path))
        self.warn(line)

    def _set_damaged_aside(self, path: str, error: CheckpointError, resumed: str) -> None:
        """Move damaged checkpoint ``path``, passed over for ``resumed``, to a ``.damaged`` name (never over an
        earlier one), which no listing of checkpoints takes; a move that fails leaves it there, said as before."""
        dest, n = f"{path}.damaged", 1
        while os.path.lexists(dest):
            n += 1
            dest = f"{path}.damaged.{n}"
        try:
            os.rename(path, dest)
        except OSError as e:
            self._keep_damaged(path, f"{error}; resuming from the previous checkpoint {resumed} (moving the damaged "
                                     f"file to {dest} failed: {e.strerror})")
            return
        self.warn(f"{error}; resuming from the previous checkpoint {resumed}, and moved the damaged file to {dest} "
                  "so that later resumes do not name it again (look at it, or delete it)")
