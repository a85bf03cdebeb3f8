"""One checkpoint file: written atomically, read back safely, and checked to be a training checkpoint of this
model.

A checkpoint is a ``torch.save``'d dict of tensors and plain Python values only (the config is a YAML string,
RNG states are tensors and lists), so it loads with ``torch.load(weights_only=True)``: no pickled code runs.
It is written to a temporary file in the same directory, flushed and fsync'ed, then renamed over the final name
(``os.replace`` is atomic), so a crash mid-write never leaves a half-written file under a checkpoint name; a full
disk is said in words, with the free space. A file that does not read back as written is a
:class:`DamagedCheckpoint`, which the run's :class:`engine.checkpointing.Checkpointer` passes over for an older one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import shutil
import zipfile
from typing import Any

import torch

from evautil.errors import CheckpointError, model_object_refusal
from evautil.files import atomic_write, file_version
from evautil.zip_check import damaged_zip_record, is_safetensors, unreadable_reason

__all__ = ["CheckpointError", "DamagedCheckpoint", "REQUIRED_KEYS", "save_atomic", "load_checkpoint",
           "load_resumable", "offer_parsed", "model_mismatch", "check_same_model"]

# Keys every resumable checkpoint holds; a file without them is treated as damaged.
REQUIRED_KEYS = ("model", "optimizer", "scheduler", "epoch", "global_step", "epoch_complete")
# torch names the first global it refused as "GLOBAL module.name"; its message also carries terminal colour codes.
_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
# How a run goes on after a failed save: OUTPUT's last checkpoint is where the same command resumes; with none there,
# it starts again as the failed run did.
_RESUME = ("run the same command (with TRAIN.AUTO_RESUME True, the default, it resumes from OUTPUT's last "
           "checkpoint; with another OUTPUT, give that checkpoint to --resume)")
_RESTART = "run the same command (it starts again where this run started: no checkpoint of it was kept)"


class DamagedCheckpoint(CheckpointError):
    """A file under a checkpoint's name whose bytes do not read back as written (cut short, changed on disk, not a
    torch archive at all): what :meth:`Checkpointer.find_latest` sets aside once it resumes an older one."""


class _NotATrainingCheckpoint(CheckpointError):
    """A dict of weights that reads (or a safetensors file) but holds no training state: of the files ``--resume``
    refuses, the only ones for which ``--pretrained`` is the right advice (not random bytes, a damaged file)."""


class _OtherCodesCheckpoint(_NotATrainingCheckpoint):
    """A training checkpoint of other code: its weights beside pickled plain data that this project's checkpoints
    never hold (the original's yacs config and numpy ``max_accuracy``), which the weights reader takes as data."""


class _PickledModel(_NotATrainingCheckpoint):
    """A pickled model object (``torch.save(model)``): refused unread, but its weights, re-saved as its
    ``state_dict()``, are a weights-only file."""


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


def save_atomic(obj: dict, path: str, earlier: bool = False) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then atomically rename it to ``path``.
    ``earlier``: the run has earlier checkpoints to resume from (its failure line says they are intact, and how the
    same command resumes the last; without, that a rerun starts again).

    Raises:
        CheckpointError: the disk (or quota) filled up, the file outgrew the largest one this process may write,
            or the folder cannot be written (read-only, permissions); the message names ``path`` (not the
            temporary file) and what to do. The temporary file is removed and any earlier file under ``path`` is
            untouched.
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
        failed = _os_error_behind(e)
        kept, rerun = ("; earlier checkpoints are intact", _RESUME) if earlier else ("", _RESTART)
        if failed is not None and failed.errno in _DISK_FULL:
            raise CheckpointError(_disk_full_message(path, written[0], kept, rerun)) from None
        if failed is not None and failed.errno == errno.EFBIG:
            # Python ignores SIGXFSZ, so a file size limit (ulimit -f, or FAT's 4 GB) is this error, not a kill
            raise CheckpointError(f"checkpoint {path} could not be written: the file reached {_gb(written[0])}, "
                                  "the largest this process may write (the shell's file size limit, ulimit -f, or "
                                  f"the file system's largest file){kept}. Lift the limit (or point OUTPUT "
                                  f"elsewhere) and {rerun}") from None
        if failed is not None and failed.errno in _NOT_WRITABLE:
            folder = os.path.dirname(os.path.realpath(path))
            raise CheckpointError(f"cannot write checkpoint {path}: {folder} refuses it ({failed.strerror}){kept}. "
                                  f"Make that folder writable (or point OUTPUT elsewhere) and {rerun}") from None
        raise


def _os_error_behind(error: BaseException | None) -> OSError | None:
    """``error`` or the first error it was raised from that is an OSError with an errno (torch.save wraps the
    OSError of the file write in a RuntimeError of its zip writer)."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno:
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def _disk_full_message(path: str, written: int, kept: str, rerun: str) -> str:
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    return (f"no space left on the device writing checkpoint {path}: {_gb(free)} free there, the write had reached "
            f"{_gb(written)} when it failed{kept}. Free space there (or point OUTPUT elsewhere) and {rerun}")


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"  # "0.00 GB" said nothing about small files


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
        raise DamagedCheckpoint(f"checkpoint {path} is damaged: {damage}")
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
        model = model_object_refusal(path, code)
        if model:  # torch.save(model): its weights can be re-saved, and the line says how
            raise _PickledModel(model) from None
        if code:
            raise CheckpointError(f"checkpoint {path} was refused: it holds pickled Python objects "
                                  f"({code[0]}) besides tensors and plain values, and loading them could "
                                  "run code from the file") from None
        reason = unreadable_reason(path, e)  # what the file is, not the unpickler's KeyError or IndexError
        raise DamagedCheckpoint(f"checkpoint {path} is not a readable torch checkpoint: {reason}") from None
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


def _shape_text(value: Any) -> str:
    return "x".join(map(str, getattr(value, "shape", ()))) or "a scalar"


# The checkpoint Checkpointer.continuation_of settled on, as it read it (memory-mapped), by real path with its
# version then: the check of the file the run resumes (load_resumable, mmap) takes it instead of a second parse (one
# costs per tensor: thousands for EVA-1B). One, taken once: any later offer or take lets it go, so no mapped file
# is held for the run (a file rotated away would stay on the disk), and a file changed since is parsed anew.
_OFFERED: dict[str, tuple[tuple[int, int, int, int], Any]] = {}


def offer_parsed(path: str, state: Any) -> None:
    """Hand the next :func:`load_resumable` of ``path`` its ``state`` as already read (memory-mapped); any earlier
    offer is let go."""
    _OFFERED.clear()
    version = file_version(path)
    if state is not None and version is not None:
        _OFFERED[os.path.realpath(path)] = (version, state)


def drop_offered() -> None:
    """Let go of an offer no load took (a start that failed between them): its memory-mapped file is not held."""
    _OFFERED.clear()


def _take_offered(path: str) -> Any:
    """The state offered for ``path`` when its file is unchanged since, else None; the offer is let go either way."""
    offered = _OFFERED.pop(os.path.realpath(path), None)
    _OFFERED.clear()
    return offered[1] if offered is not None and offered[0] == file_version(path) else None
