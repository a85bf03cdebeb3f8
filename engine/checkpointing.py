"""Atomic checkpoints of the full training state, rotation, and resume with fallback past damaged files
(which the writer moves to ``<name>.damaged``).

A checkpoint is a ``torch.save``'d dict of tensors and plain Python values only (the config is a YAML string,
RNG states are tensors and lists), so it loads with ``torch.load(weights_only=True)``: no pickled code runs.
It is written to a temporary file in the same directory, flushed and fsync'ed, then renamed over the final name
(``os.replace`` is atomic), so a crash mid-write never leaves a half-written file under a checkpoint name.

Files in the output directory: ``ckpt_epoch_{e}.pth`` (end of epoch e, counted from 1 as in every line the run
prints and writes; the dict inside keeps the 0-based ``epoch`` index, like the original's), ``ckpt_step_{s}.pth``
(after optimizer step s, mid-epoch) and ``best.pth`` (model weights of the best evaluation, kept apart from the
rotation).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import pickle
import random
import re
import shutil
import zipfile
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from evautil.errors import CheckpointError
from evautil.progress import counted
from evautil.files import atomic_temp_files, atomic_temp_glob, atomic_write, file_version, output_path_problem
from evautil.zip_check import damaged_zip_record, is_safetensors, unreadable_reason

from .metrics import epoch_number

__all__ = ["CheckpointError", "save_atomic", "load_checkpoint", "Checkpointer", "capture_rng", "restore_rng",
           "REQUIRED_KEYS", "model_mismatch", "check_same_model", "check_output_dir", "restore_training_objects",
           "checkpoint_files", "starts_fresh", "load_resumable"]

# Keys every resumable checkpoint holds; a file without them is treated as damaged.
REQUIRED_KEYS = ("model", "optimizer", "scheduler", "epoch", "global_step", "epoch_complete")
_NAME_RE = re.compile(r"^ckpt_(epoch|step)_(\d+)\.pth$")
# torch names the first global it refused as "GLOBAL module.name"; its message also carries terminal colour codes.
_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class _DamagedCheckpoint(CheckpointError):
    """A file under a checkpoint's name whose bytes do not read back as written (cut short, changed on disk, not a
    torch archive at all): what :meth:`Checkpointer.find_latest` sets aside once it resumes an older one."""


class _NotATrainingCheckpoint(CheckpointError):
    """A dict of weights that reads (or a safetensors file) but holds no training state: of the files ``--resume``
    refuses, the only ones for which ``--pretrained`` is the right advice (not random bytes, a damaged file)."""


class _OtherCodesCheckpoint(_NotATrainingCheckpoint):
    """A training checkpoint of other code: its weights beside pickled plain data that this project's checkpoints
    never hold (the original's yacs config and numpy ``max_accuracy``), which the weights reader takes as data."""


# Globals of plain data that the weights reader (models/checkpoint.py) rebuilds without running their code.
_PLAIN_DATA_GLOBALS = re.compile(
    r"^(yacs\.config\.CfgNode|numpy\.(_?core\.multiarray\.scalar|dtype|dtypes\.\w+DType))$")


def _refused_globals(path: str, first: str) -> list[str]:
    """Every global weights_only loading refuses in ``path`` (a zip archive lists them), else the ``first`` one
    its error named."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or [first]
    except Exception:  # torch's legacy format names one global per failure
        return [first]


def save_atomic(obj: dict, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then atomically rename it to ``path``.

    Raises:
        CheckpointError: the disk (or quota) filled up; the message names the path and the free space. The
            temporary file is removed and any earlier file under ``path`` is untouched.
    """
    written = [0]

    def write(f) -> None:
        try:
            torch.save(obj, f)
        finally:
            with contextlib.suppress(OSError, ValueError):
                written[0] = f.tell()

    try:
        atomic_write(path, write)
    except BaseException as e:
        if _is_disk_full(e):
            raise CheckpointError(_disk_full_message(path, written[0])) from None
        raise


def _is_disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` or an error it was raised from is ENOSPC / EDQUOT (torch.save wraps the OSError of the
    file write in a RuntimeError of its zip writer)."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno in _DISK_FULL:
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def _disk_full_message(path: str, written: int) -> str:
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    return (f"no space left on the device writing checkpoint {path}: {_gb(free)} free there, the write had reached "
            f"{_gb(written)} when it failed; earlier checkpoints are intact. Free space (or point OUTPUT elsewhere) "
            "and resume")


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"  # "0.00 GB" said nothing about small files


def check_output_dir(path: str) -> None:
    """Raise CheckpointError when ``path`` (OUTPUT) cannot become a writable directory: it, or a folder above it,
    is a file, or the nearest existing one cannot be written (a file made there on trial fails), or it is
    empty."""
    if not path:  # abspath("") is the working folder: the run's lock went there, then its first write failed
        raise CheckpointError("OUTPUT is empty: name the folder the run writes to (--output DIR, or OUTPUT in the "
                              "config; the default is output)")
    probe = os.path.abspath(path)
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


def load_checkpoint(path: str, required: tuple[str, ...] = REQUIRED_KEYS, map_location: Any = "cpu",
                    mmap: bool = False, parsed: Any = None) -> dict:
    """Load one of our checkpoints (weights_only) and check that it holds ``required`` keys. ``mmap``: a check
    before the run writes anything: the tensors stay on disk (memory-mapped), and the file, found intact, is not
    read again for its CRC-32 when it is loaded. ``parsed``: the file as already read memory-mapped (for its
    order, :meth:`Checkpointer.find_latest`), taken once it passes the CRC-32 check instead of parsing it again.

    Raises:
        CheckpointError: the file is missing, truncated, changed on disk after it was written (a record fails its
            CRC-32), not a checkpoint, or lacks required keys.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if is_safetensors(path):  # torch.load would call it neither a zip archive nor a pickle
        raise _NotATrainingCheckpoint(f"checkpoint {path} is a safetensors file: weights only, no training state")
    damage = damaged_zip_record(path, remember=mmap)  # torch.load would hand back the changed bytes as weights
    if damage:
        raise _DamagedCheckpoint(f"checkpoint {path} is damaged: {damage}")
    try:
        # (torch memory-maps zip archives only; anything else is read whole, to name what it is)
        state = parsed if parsed is not None else torch.load(path, map_location=map_location, weights_only=True,
                                                             mmap=mmap and zipfile.is_zipfile(path))
    except Exception as e:  # truncated zip, bad pickle, disallowed globals: all mean "unusable"
        refused = _GLOBAL_RE.search(str(e)) if isinstance(e, pickle.UnpicklingError) else None
        names = _refused_globals(path, refused.group(1)) if refused else []
        code = [g for g in names if not _PLAIN_DATA_GLOBALS.match(g)]
        if names and not code:
            raise _OtherCodesCheckpoint(f"checkpoint {path} is another code's training checkpoint (it holds "
                                        f"pickled {', '.join(sorted(set(names)))}, as the original EVA code's do), "
                                        "not one of this project's runs") from None
        if code:
            raise CheckpointError(f"checkpoint {path} was refused: it holds pickled Python objects "
                                  f"({code[0]}) besides tensors and plain values, and loading them could "
                                  "run code from the file") from None
        reason = unreadable_reason(path, e)  # what the file is, not the unpickler's KeyError or IndexError
        raise _DamagedCheckpoint(f"checkpoint {path} is not a readable torch checkpoint: {reason}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
    missing = [k for k in required if k not in state]
    if missing:
        raise _NotATrainingCheckpoint(f"checkpoint {path} lacks {', '.join(missing)} (not a resumable training "
                                      "checkpoint)")
    return state


def load_resumable(path: str, mmap: bool = False) -> dict:
    """:func:`load_checkpoint` of a ``--resume`` file, whose error also says what ``--resume`` takes when the file
    holds weights without a training state (a missing, damaged or unreadable file gets no advice to use it as
    weights: its error says what is wrong with it). ``mmap``: takes the state :meth:`Checkpointer.continuation_of`
    read of the same file, unchanged since, instead of parsing it again."""
    offered = _take_offered(path)  # let go by any load: the whole one reads the tensors anyway
    try:
        return load_checkpoint(path, mmap=mmap, parsed=offered if mmap else None)  # CheckpointError names the file
    except _OtherCodesCheckpoint as e:
        raise CheckpointError(f"{e}; --resume continues this project's training runs only: --pretrained starts "
                              "from its weights (its optimizer state is not carried over), --only_test --resume "
                              "evaluates it") from e
    except _NotATrainingCheckpoint as e:
        raise CheckpointError(f"{e}; --resume continues a training run from one of its checkpoints: "
                              "use --pretrained for weights-only (e.g. released) files") from e


def model_mismatch(expected: dict, saved: dict, limit: int = 4) -> str:
    """"" when ``saved`` (a checkpoint's model state) has exactly the keys and shapes of ``expected``; otherwise
    a short description of the first differences (e.g. "head.weight is 5x128 there, 4x128 here")."""
    parts = [f"{k} is {_shape_text(saved[k])} there, {_shape_text(v)} here" for k, v in expected.items()
             if k in saved and getattr(saved[k], "shape", None) != getattr(v, "shape", None)]
    missing = [k for k in expected if k not in saved]
    extra = [k for k in saved if k not in expected]
    if missing:
        parts.append(f"{len(missing)} weights missing there ({', '.join(missing[:limit])})")
    if extra:
        parts.append(f"{len(extra)} weights this model lacks ({', '.join(extra[:limit])})")
    return "; ".join(parts[:limit + 2])


def check_same_model(model: torch.nn.Module, ckpt: dict, path: str) -> None:
    """Raise CheckpointError, naming the differing shapes, when training checkpoint ``ckpt`` (at ``path``) holds
    another model than ``model`` (which may be on the meta device: names and shapes are compared)."""
    mismatch = model_mismatch(model.state_dict(), ckpt["model"])
    if mismatch:
        raise CheckpointError(f"checkpoint {path} was saved from a different model than this run's ({mismatch}); "
                              "point OUTPUT (or --resume) elsewhere or move the file away")


def restore_training_objects(ckpt: dict, path: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             scheduler: Any, keep_new_hyperparameters: bool = False,
                             keep_new_schedule: bool = False) -> None:
    """Load the model, optimizer and LR schedule of a training checkpoint.

    The optimizer's moments always come from the checkpoint; its hyperparameters (LR, weight decay, betas) and the
    schedule too, unless ``keep_new_hyperparameters`` (a changed config accepted on purpose) keeps this run's.
    ``keep_new_schedule`` keeps this run's schedule only: it counts optimizer steps, and the saved one counted
    another number of steps per epoch (another world size, batch size or list length).

    Raises:
        CheckpointError: the checkpoint holds another model (named with the differing shapes) or an optimizer
            state of other parameter groups.
    """
    check_same_model(model, ckpt, path)
    model.load_state_dict(ckpt["model"])
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except ValueError as e:  # another number or size of parameter groups (e.g. layer decay switched)
        raise CheckpointError(f"checkpoint {path}: its optimizer state does not fit this run's ({e})") from None
    if keep_new_hyperparameters:
        for group, new in zip(optimizer.param_groups, fresh):
            group.update(new)
    _keep_this_runs_implementation(optimizer, fresh)
    if not (keep_new_hyperparameters or keep_new_schedule):
        scheduler.load_state_dict(ckpt["scheduler"])


# Optimizer group keys that choose how the update is computed (kernels), not what it computes.
_IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")


def _keep_this_runs_implementation(optimizer: torch.optim.Optimizer, fresh: list[dict]) -> None:
    """Give the optimizer back this run's kernels after ``load_state_dict``, which takes the saved groups' flags: a
    checkpoint written on the CPU (unfused) would otherwise resume unfused on a GPU, and one written fused on a GPU
    would ask for the fused kernel on the CPU. A fused or capturable update keeps its step counts as float32 on the
    parameters' device (torch's own rule on loading), the others leave them where they are."""
    for group, new in zip(optimizer.param_groups, fresh):
        for key in _IMPLEMENTATION_KEYS:
            if key in new:
                group[key] = new[key]
        on_device = group.get("fused") or group.get("capturable")
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if torch.is_tensor(step) and on_device:
                optimizer.state[p]["step"] = step.to(device=p.device, dtype=torch.float32)


def _shape_text(value: Any) -> str:
    return "x".join(map(str, getattr(value, "shape", ()))) or "a scalar"


def capture_rng() -> dict:
    """This process's python / numpy / torch (CPU and CUDA) RNG states as weights_only-loadable values."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> str:
    """Inverse of :func:`capture_rng`. Returns "" when every state was restored, else what was not and why: the
    CUDA states are per visible GPU, so a process that sees another number of GPUs than the one that saved them
    (another CUDA_VISIBLE_DEVICES, a CPU) cannot take them, and its GPU random draws do not continue exactly."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    saved = len(state["cuda"]) if "cuda" in state else 0
    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if saved and saved == seen:
        torch.cuda.set_rng_state_all(state["cuda"])
    elif saved != seen:
        return (f"the CUDA random states were saved by a process that saw {counted(saved, 'GPU')} and this one "
                f"sees {counted(seen, 'GPU')}: they are not restored, so random draws on the GPU (drop path) do "
                "not continue exactly")
    return ""


def checkpoint_files(output_dir: str) -> list[str]:
    """The rotating checkpoints (``ckpt_epoch_*.pth``, ``ckpt_step_*.pth``) in ``output_dir``, unordered."""
    return [p for p in glob.glob(os.path.join(glob.escape(output_dir), "ckpt_*.pth"))
            if _NAME_RE.match(os.path.basename(p))]


def starts_fresh(output_dir: str, resume: str, auto_resume: bool) -> bool:
    """Whether a training run starts from step 0: no ``--resume`` file, and no checkpoint in ``output_dir`` to
    resume from automatically (:meth:`Checkpointer.find_latest` refuses to start over when every one is damaged)."""
    return not resume and not (auto_resume and checkpoint_files(output_dir))


# The checkpoint Checkpointer.continuation_of settled on, as it read it (memory-mapped), by real path with its
# version then: the check of the file the run resumes (load_resumable, mmap) takes it instead of a second parse (one
# costs per tensor: thousands for EVA-1B). One, taken once: any later offer or take lets it go, so no mapped file
# is held for the run (a file rotated away would stay on the disk), and a file changed since is parsed anew.
_OFFERED: dict[str, tuple[tuple[int, int, int, int], Any]] = {}


def _offer(path: str, state: Any) -> None:
    _OFFERED.clear()
    version = file_version(path)
    if state is not None and version is not None:
        _OFFERED[os.path.realpath(path)] = (version, state)


def _take_offered(path: str) -> Any:
    """The state offered for ``path`` when its file is unchanged since, else None; the offer is let go either way."""
    offered = _OFFERED.pop(os.path.realpath(path), None)
    _OFFERED.clear()
    return offered[1] if offered is not None and offered[0] == file_version(path) else None


class _Order(NamedTuple):
    """What a listing keeps of a checkpoint's parse: ``key`` (global step, 1 for an epoch-end file; a damaged
    file's from its name), whether the file ``readable``, the ``origin`` its TrainState records (the file an
    attempt started from: :meth:`Checkpointer.continuation_of`), None when none, and ``best``: the
    ``{"top1", "epoch", "global_step"}`` a best.pth records (:meth:`Checkpointer.best_after`), None when it lacks
    them."""

    key: tuple[int, int]
    readable: bool
    origin: dict | None
    best: dict | None = None


def _best_record(state: dict) -> dict | None:
    """What :meth:`Checkpointer.best_after` tells of a best.pth, as plain numbers (a tensor would keep the mapped
    file open); None when the file does not hold them."""
    try:
        return {"top1": float(state["top1"]), "epoch": int(state["epoch"]), "global_step": int(state["global_step"])}
    except (KeyError, TypeError, ValueError, RuntimeError):
        return None


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

    def path_for(self, epoch: int, global_step: int, epoch_complete: bool) -> str:
        """The file of a checkpoint whose dict holds the 0-based ``epoch`` index (named by the epoch's number)."""
        name = f"ckpt_epoch_{epoch_number(epoch)}.pth" if epoch_complete else f"ckpt_step_{global_step}.pth"
        return os.path.join(self.output_dir, name)

    def save(self, state: dict) -> str:
        """Write ``state`` (must hold REQUIRED_KEYS) under its epoch/step name, then rotate. Returns the path."""
        path = self.path_for(state["epoch"], state["global_step"], state["epoch_complete"])
        if self.writer:
            save_atomic(state, path)
            self._rotate()
        self.last_saved = path
        return path

    def save_best(self, state: dict) -> str:
        path = self.best_path
        if self.writer:
            save_atomic(state, path)
        return path

    def candidates(self) -> list[str]:
        """Rotating checkpoints in the directory, newest (highest optimizer step, epoch end first) first."""
        return [path for path, _, _ in self._ordered()]

    def _ordered(self) -> list[tuple[str, _Order, Any]]:
        """:meth:`candidates`, each with its :class:`_Order` and the file as read (memory-mapped) for it; None when
        unreadable or its order was known (not parsed again)."""
        found = [(path, *self._parse_order(path)) for path in self._listed()]
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
        key = self._order_key(path)
        same = os.path.realpath(path)
        return [p for p in self.candidates() if self._order_key(p) > key and os.path.realpath(p) != same]

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
        _offer(chosen, next((s for p, _, s in found if os.path.realpath(p) == chosen), None)
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
                       _best_record(state) if readable else None)
        if version is not None:
            self._orders[path] = (version, order)
        return order, state

    def _rotate(self) -> None:
        # Temporary files of writes that died (a kill mid-save: up to a whole checkpoint's size); only this writer
        # creates them. One written through a link (a checkpoint name linked to another store) left its own beside
        # the file the link names, in that file's folder.
        folder = glob.escape(self.output_dir)
        stale = [p for name in ("ckpt_*.pth", "best.pth")
                 for p in glob.glob(os.path.join(folder, atomic_temp_glob(name)))]
        links = [p for p in checkpoint_files(self.output_dir) + [self.best_path]
                 if os.path.islink(p)]
        for path in stale + [p for link in links for p in atomic_temp_files(link)]:
            try:
                os.remove(path)
            except OSError:
                pass
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
                if self.writer and isinstance(e, _DamagedCheckpoint):
                    passed.append((path, e))  # moved aside below once an older one is found to resume
                else:
                    self._keep_damaged(path, f"{e}; trying the previous checkpoint")
                continue
            for damaged, error in passed:
                self._set_damaged_aside(damaged, error, found[0])
            return found
        for damaged, error in passed:
            self._keep_damaged(damaged, f"{error}; trying the previous checkpoint")
        if candidates:
            raise CheckpointError("no usable checkpoint in " + self.output_dir + ": " + "; ".join(errors))
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
