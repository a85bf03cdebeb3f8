"""The synthetic motion dataset of the demo, tests and benchmarks, written to disk: the clips of
:mod:`tools.synthetic_render` (classes that differ only in motion) encoded with PyAV into one folder a class, their
lists, labels and ``dataset.json``; the memory one clip needs, and how many are written at once.

No DALI import here.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import multiprocessing as mp
import os
import re
import time
from collections.abc import Callable

import numpy as np

from dali_pipelines.pyav_encode import CODECS, missing_encoder, write_video
from evautil.files import atomic_write_text
from evautil.progress import counted, format_bytes, stderr_is_terminal, stderr_line
from evautil.workers import map_with_progress, usable_cpus
from tools.synthetic_render import CLASSES, motion_clip

__all__ = ["CLASSES", "CODECS", "write_video", "motion_clip", "make_synthetic_dataset", "MissingEncoderError",
           "NotEnoughMemoryError", "OtherDataError", "clip_memory", "frames_that_fit", "available_memory"]


def _clip_seed(seed: int, label: int, i: int) -> list[int]:
    return [int(seed), int(label), int(i)]


def _write_job(job: tuple) -> tuple[str, tuple[int, str]]:
    """Worker: render and encode one clip (all randomness from (seed, label, i), so order does not matter); returns
    its path and :func:`_clip_record`."""
    path, cls_name, label, i, seed, size, codec, fps, gop, num_frames = job
    rng = np.random.default_rng(_clip_seed(seed, label, i))
    frames = motion_clip(cls_name, num_frames, size, rng)
    tmp = path + ".part" + CODECS[codec][1]  # keep the extension: the muxer is chosen from it
    write_video(tmp, frames, codec=codec, fps=fps, gop=gop)
    record = _clip_record(tmp)
    os.replace(tmp, path)  # a crash never leaves a half-written clip under the final name
    return path, record


class OtherDataError(FileExistsError):
    """The output folder holds lists that no ``dataset.json`` marks as a synthetic dataset's (someone's data)."""


class MissingEncoderError(RuntimeError):
    """The FFmpeg inside PyAV cannot encode the dataset's codec (found before anything is written)."""


# What rendering and encoding one clip holds at its peak: per pixel of the clip, its uint8 frames (3 bytes); per pixel
# of one frame, the larger of one frame's float intermediates (about 50 bytes) and the encoder's pictures (peak RSS
# less the clip, measured for 2 to 64 frames: libvpx-vp9 106 bytes at 1024x1024, 91 at 2048x2048; libx264 74 and 63).
# An encoding process also holds its interpreter, numpy and PyAV (about 51 MiB).
CLIP_BYTES_PER_PIXEL = 4
FRAME_BYTES_PER_PIXEL = 112
WORKER_BYTES = 64 << 20


class NotEnoughMemoryError(RuntimeError):
    """One clip of the dataset needs more memory than this machine has available (found before anything is
    written): ``need`` and ``available`` in bytes."""

    def __init__(self, need: int, available: int, num_frames: int, size: tuple[int, int]):
        self.need, self.available = need, available
        super().__init__(f"one clip of {num_frames} frames of {size[0]}x{size[1]} needs about {format_bytes(need)} "
                         f"to render and encode, and {format_bytes(available)} of memory is available")


def clip_memory(num_frames: int, size: tuple[int, int]) -> int:
    """Bytes that rendering and encoding one clip of ``num_frames`` frames of ``size`` holds at its peak."""
    return (CLIP_BYTES_PER_PIXEL * int(num_frames) + FRAME_BYTES_PER_PIXEL) * int(size[0]) * int(size[1])


def frames_that_fit(memory: int, size: tuple[int, int]) -> int:
    """The most frames of ``size`` a clip may have for :func:`clip_memory` to fit in ``memory`` bytes (0: none)."""
    pixels = int(size[0]) * int(size[1])
    return max(0, (memory - FRAME_BYTES_PER_PIXEL * pixels) // (CLIP_BYTES_PER_PIXEL * pixels))


def available_memory() -> int | None:
    """Bytes of memory this machine can give without swapping (MemAvailable: free plus reclaimable cache), or its
    free pages where /proc/meminfo is not; None when neither is known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _workers_that_fit(params: dict, workers: int, clips: int) -> int:
    """``workers`` (0: one per usable core), fewer when that many clips rendered at once would not fit in the memory
    available (one line on stderr says so); NotEnoughMemoryError when not even one fits. Every process held the
    whole clip and its float intermediates: 4096x4096 and 32 frames, one per core, exhausted the memory."""
    processes = min(workers if workers > 0 else usable_cpus(), clips)
    available = available_memory()
    if available is None or processes < 1:
        return workers
    clip = clip_memory(params["num_frames"], params["size"])
    if clip > available:  # one clip rendered in this process, which holds its interpreter already
        raise NotEnoughMemoryError(clip, available, params["num_frames"], tuple(params["size"]))
    fit = max(1, available // (clip + WORKER_BYTES)) if processes > 1 else 1
    if fit >= processes:
        return workers
    stderr_line(f"synthetic clips: {fit} written at once, not {processes}: each needs about "
                f"{format_bytes(clip + WORKER_BYTES)} ({params['num_frames']} frames of {params['size'][0]}x"
                f"{params['size'][1]}) and {format_bytes(available)} of memory is available")
    return fit


def make_synthetic_dataset(out_dir: str, codec: str = "vp9", train_per_class: int = 64, val_per_class: int = 24,
                           num_frames: int = 32, size: tuple[int, int] = (128, 96), fps: float = 25,
                           gop: int | None = None, seed: int = 0, workers: int = 0, progress: bool = True,
                           force: bool = False, on_stage: Callable[[str], None] | None = None) -> dict:
    """Write a motion-only synthetic dataset in the original list format.

    Layout: ``out_dir/videos/<class>/<class>_<i><ext>`` (train clips are ``i < train_per_class``, val clips follow),
    ``out_dir/train.txt`` and ``out_dir/val.txt`` (``<path relative to out_dir> <label>``, label = position of the
    class in sorted order), ``out_dir/labels.csv`` (``id,name``) and ``out_dir/dataset.json`` (the parameters, and
    each clip's size and BLAKE2b hash, written last). Clips are rendered and encoded in ``workers`` processes (0 = all
    cores). The result is a deterministic function of the parameters, to the byte (two generations run at once on a
    2-core machine: 0 of 1120 clips differ; before ``write_video`` turned off x264's lookahead thread and macroblock
    tree, 411 did).

    When ``dataset.json`` has the same parameters (unless ``force``), a clip on disk is kept when its size and hash
    are the ones recorded (a clip a stopped run finished but did not record: when the index's quick probe finds its
    frame count, codec and size), and the lists when they hold what this run would write; the other clips are
    written again (one line on stderr counts those that were on disk but damaged), and the lists. Nothing is
    written when all match and the dataset was complete (an unwritable folder is fine then). A stop (Ctrl-C, a stop
    signal, a failed write) kills the workers, removes the clips half-written and records the finished ones.
    ``on_stage`` (when given) hears ``"checking"`` when the check of a dataset that ``dataset.json`` says is complete
    begins, and ``"writing"`` before anything is written or removed (until then a stop leaves the folder as it was).

    Raises:
        MissingEncoderError: ``codec`` cannot be encoded here and clips would have to be written.
        NotEnoughMemoryError: one clip would not fit in the memory available and clips would have to be written
            (when several would not, fewer are written at once).
        OtherDataError: ``out_dir`` holds lists that no ``dataset.json`` marks as ours (unless ``force``); a
            FileExistsError.

    Returns:
        Summary dict: paths (``out_dir``, ``train_list``, ``val_list``, ``labels_csv``), ``classes``,
        ``num_train``, ``num_val``, the parameters, ``skipped`` (True when reused), ``rewritten`` (damaged clips
        written again), ``kept`` (clips on disk that were reused) and ``seconds``.
    """
    params = _dataset_params(codec, train_per_class, val_per_class, num_frames, size, fps, gop, seed)
    out_dir = os.path.abspath(out_dir)
    meta_path = os.path.join(out_dir, "dataset.json")
    train_list, val_list = os.path.join(out_dir, "train.txt"), os.path.join(out_dir, "val.txt")
    labels_csv = os.path.join(out_dir, "labels.csv")
    rel, jobs = _clip_jobs(out_dir, params)
    lists = {path: "".join(f"{p} {label}\n" for p, label in rel[split])
             for split, path in (("train", train_list), ("val", val_list))}
    lists[labels_csv] = "id,name\n" + "".join(f"{i},{name}\n" for i, name in enumerate(CLASSES))

    summary = {"out_dir": out_dir, "train_list": train_list, "val_list": val_list, "labels_csv": labels_csv,
               "classes": list(CLASSES), "num_train": len(rel["train"]), "num_val": len(rel["val"]), **params}
    t0 = time.perf_counter()
    stored = None if force else _stored_meta(meta_path)
    records: dict[str, tuple[int, str]] = {}
    damaged: list[str] = []
    stage = on_stage or (lambda name: None)
    if stored is not None and _params_of(stored) == params:
        if stored.get("complete") is True:
            stage("checking")
        records, todo, damaged = _check_clips(out_dir, jobs, stored, params)
        if not todo and stored.get("complete") is True and all(_holds(p, text) for p, text in lists.items()):
            if records != _records_of(stored):  # clips checked by a probe: recorded, for a quicker check next time
                with contextlib.suppress(OSError):  # a dataset in a folder this process cannot write is still used
                    _write_meta(meta_path, params, True, records)
            return {**summary, "skipped": True, "rewritten": 0, "kept": len(records),
                    "seconds": time.perf_counter() - t0}
        if damaged:
            stderr_line(f"synthetic dataset in {out_dir}: {counted(len(damaged), 'clip')} on disk not as written "
                        f"(damaged or changed since, e.g. {damaged[0]}): writing them again")
        _check_encoder(params["codec"])
        workers = _workers_that_fit(params, workers, len(todo))
        stage("writing")
        os.makedirs(out_dir, exist_ok=True)
        _remove_clips(out_dir)  # of the clips a stopped run was writing
    else:
        todo = jobs
        _check_encoder(params["codec"])
        workers = _workers_that_fit(params, workers, len(todo))
        stage("writing")
        _clear_for_new_dataset(out_dir, meta_path, tuple(lists), force, params)
        os.makedirs(out_dir, exist_ok=True)
    kept = len(records)  # clips of an earlier run, as written
    # marks the folder as this dataset's from the start, so that a run stopped halfway is taken up again, not refused
    _write_meta(meta_path, params, False, records)
    _write_clips(out_dir, meta_path, params, todo, records, workers, progress)
    for path, text in lists.items():
        atomic_write_text(path, text)
    _write_meta(meta_path, params, True, {r: records[r] for r in (os.path.relpath(j[0], out_dir) for j in jobs)})
    return {**summary, "skipped": False, "rewritten": len(damaged), "kept": kept, "seconds": time.perf_counter() - t0}


def _dataset_params(codec: str, train_per_class: int, val_per_class: int, num_frames: int, size: tuple[int, int],
                    fps: float, gop: int | None, seed: int) -> dict:
    """The parameters ``dataset.json`` records (the clips are a function of them), once checked."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {sorted(CODECS)}")
    if train_per_class < 0 or val_per_class < 0 or train_per_class + val_per_class == 0:
        raise ValueError(f"need clips: train_per_class={train_per_class}, val_per_class={val_per_class}")
    return {"version": 1, "codec": codec, "train_per_class": int(train_per_class),
            "val_per_class": int(val_per_class), "num_frames": int(num_frames), "size": [int(size[0]), int(size[1])],
            "fps": float(fps), "gop": gop, "seed": int(seed), "classes": list(CLASSES)}


def _check_encoder(codec: str) -> None:
    """MissingEncoderError when this PyAV cannot encode ``codec``: before anything is written (each encoding process
    raised it, a traceback, after the folder and dataset.json were made), and only when clips are to be written (a
    dataset written elsewhere is reused on a machine that only decodes its codec)."""
    missing = missing_encoder(codec)
    if missing:
        raise MissingEncoderError(missing)


def _clip_jobs(out_dir: str, params: dict) -> tuple[dict[str, list[tuple[str, int]]], list[tuple]]:
    """``{split: [(path relative to out_dir, label)]}`` of the lists, and the :func:`_write_job` of every clip."""
    ext = CODECS[params["codec"]][1]
    size = tuple(params["size"])
    rel: dict[str, list[tuple[str, int]]] = {"train": [], "val": []}
    jobs = []
    for label, cls_name in enumerate(CLASSES):
        for i in range(params["train_per_class"] + params["val_per_class"]):
            rel_path = os.path.join("videos", cls_name, f"{cls_name}_{i}{ext}")
            rel["train" if i < params["train_per_class"] else "val"].append((rel_path, label))
            jobs.append((os.path.join(out_dir, rel_path), cls_name, label, i, params["seed"], size, params["codec"],
                         params["fps"], params["gop"], params["num_frames"]))
    return rel, jobs


def _clear_for_new_dataset(out_dir: str, meta_path: str, lists: tuple[str, ...], force: bool,
                           params: dict) -> None:
    """Make ``out_dir`` ready for a dataset written from scratch: the clips of one with other parameters
    (``dataset.json`` marks it as ours; one line on stderr names what changed) are removed, and a ``dataset.json``
    or ``lists`` that do not mark or make a synthetic dataset are refused (OtherDataError, unless ``force``)."""
    stored = _stored_meta(meta_path)
    ours = stored is not None and all(key in stored for key in ("version", "codec", "classes", "seed"))
    if os.path.lexists(meta_path) and not ours and not force:
        # Another tool's dataset.json (a common name) was deleted, and its folder's videos/ with it.
        raise OtherDataError(errno.EEXIST, f"{out_dir} holds a dataset.json that is not a synthetic dataset's, so "
                             "the folder is someone else's data: give a new or empty folder (--force overwrites "
                             "it)", out_dir)
    if os.path.lexists(meta_path):
        if ours and not force:  # the old dataset goes: said, not done without a word
            changed = [f"{key} {stored.get(key)} -> {value}" for key, value in params.items()
                       if stored.get(key) != value]
            stderr_line(f"synthetic dataset in {out_dir}: replacing the one written there with other parameters "
                        f"({', '.join(changed)})")
        os.unlink(meta_path)
        _remove_clips(out_dir, parts_only=False)  # its clips only: other files under videos/ are not ours to remove
    elif not force:
        # Lists no dataset.json marks as ours are someone's data: they were overwritten without a word.
        theirs = [os.path.basename(p) for p in lists if os.path.exists(p)]
        if theirs:
            raise OtherDataError(errno.EEXIST, f"{out_dir} holds {', '.join(theirs)} but no dataset.json, so they "
                                 "are not a synthetic dataset's: give a new or empty folder (--force overwrites "
                                 "them)", out_dir)


def _write_clips(out_dir: str, meta_path: str, params: dict, jobs: list[tuple], records: dict, workers: int,
                 progress: bool) -> None:
    """Render and encode the clips of ``jobs`` into their class folders, in ``workers`` processes, adding their
    :func:`_clip_record` to ``records``. Whatever stops it (Ctrl-C, a stop signal, a failed write) ends the workers
    it started, removes the clips half-written and records the finished ones in ``dataset.json`` (still marked
    incomplete), then goes on."""
    for cls_name in CLASSES:
        os.makedirs(os.path.join(out_dir, "videos", cls_name), exist_ok=True)
    children = set(mp.active_children())
    try:
        # A bar only on a terminal; in a log file, plain lines (every 30 s, and the total time) instead of its redraws.
        for path, record in map_with_progress(_write_job, jobs, workers, "synthetic clips", unit="clip",
                                              progress=progress and stderr_is_terminal(), ordered=False,
                                              log=stderr_line if progress else None):
            records[os.path.relpath(path, out_dir)] = record
    except BaseException:
        # The pool may not be ended yet (the traceback keeps its generator), and a worker still running could
        # write a .part file after the removal below: its workers are killed (they ignore SIGTERM) and waited for.
        deadline = time.monotonic() + 10.0
        for worker in set(mp.active_children()) - children:
            worker.kill()
            worker.join(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(OSError):  # the error being raised says more than one of these
            _remove_clips(out_dir)
            _write_meta(meta_path, params, False, records)
        raise


def _clip_record(path: str) -> tuple[int, str]:
    """The size and BLAKE2b hash of the file ``path``: what ``dataset.json`` records of each clip."""
    digest, size = hashlib.blake2b(digest_size=16), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _check_clips(out_dir: str, jobs: list[tuple], stored: dict, params: dict) -> tuple[dict, list[tuple], list[str]]:
    """The clips of ``jobs`` on disk that are as written: ``(their records, the jobs of the others, the paths
    relative to out_dir of those on disk but not as written)``. A recorded clip must have its recorded size (a stat)
    and hash (one read of its bytes: no decode); one a stopped run finished but could not record, or one of a
    dataset.json written before clips were recorded, must pass the index's quick probe with the parameters'
    frame count, codec and size."""
    from dali_pipelines.index import probe_video
    from dali_pipelines.pyav_open import BadVideoError

    recorded = _records_of(stored)
    expected = (params["num_frames"], params["codec"], *params["size"])
    records, todo, damaged = {}, [], []
    for job in jobs:
        rel_path = os.path.relpath(job[0], out_dir)
        if not os.path.lexists(job[0]):
            todo.append(job)  # not written yet (a stopped run), or removed
            continue
        try:
            if rel_path in recorded:  # the stat first: most damage changes the size, and then nothing is read
                same = os.stat(job[0]).st_size == recorded[rel_path][0] and _clip_record(job[0]) == recorded[rel_path]
            else:
                info = probe_video(job[0])
                same = (info.num_frames, info.codec, info.width, info.height) == expected
            if same:
                records[rel_path] = recorded.get(rel_path) or _clip_record(job[0])
                continue
        except (OSError, BadVideoError):  # unreadable (EIO, a folder), or not a video
            pass
        todo.append(job)
        damaged.append(rel_path)
    return records, todo, damaged


def _holds(path: str, text: str) -> bool:
    """Whether the file ``path`` holds exactly ``text`` (a list is a few KB: read and compared on every reuse)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read() == text
    except (OSError, ValueError):
        return False


def _stored_meta(meta_path: str) -> dict | None:
    """What ``dataset.json`` holds; None when it cannot be read or is not an object."""
    try:
        with open(meta_path, encoding="utf-8") as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def _params_of(stored: dict) -> dict:
    """The parameters a ``dataset.json`` records, without its ``complete`` mark and its clips' records."""
    return {k: v for k, v in stored.items() if k not in ("complete", "clip_bytes", "clip_blake2b")}


def _records_of(stored: dict) -> dict[str, tuple[int, str]]:
    """``{clip path relative to out_dir: (size, hash)}`` as a ``dataset.json`` records them (well-formed ones)."""
    sizes, hashes = stored.get("clip_bytes"), stored.get("clip_blake2b")
    if not isinstance(sizes, dict) or not isinstance(hashes, dict):
        return {}
    return {p: (n, hashes[p]) for p, n in sizes.items()
            if isinstance(n, int) and isinstance(hashes.get(p), str)}


def _write_meta(meta_path: str, params: dict, complete: bool, records: dict[str, tuple[int, str]]) -> None:
    """``dataset.json``: the parameters, whether the dataset is complete, and each clip's size and hash (one line a
    clip and key: two objects rather than one of pairs, which JSON's indentation spreads over four lines)."""
    meta = {**params, "complete": complete, "clip_bytes": {p: r[0] for p, r in records.items()},
            "clip_blake2b": {p: r[1] for p, r in records.items()}}
    atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n")


def _remove_clips(out_dir: str, parts_only: bool = True) -> None:
    """The ``.part`` files of clips a stopped run was writing (:func:`_write_job`), or with ``parts_only`` False
    every clip of the class folders (of any codec), then the folders left empty. Other files are left where they
    are: ``videos/`` was removed whole, with whatever else had been put in it."""
    extensions = "|".join(sorted({re.escape(codec[1]) for codec in CODECS.values()}))
    for cls_name in CLASSES:
        folder = os.path.join(out_dir, "videos", cls_name)
        if not os.path.isdir(folder):
            continue
        clip = re.compile(rf"{re.escape(cls_name)}_\d+(\.part)?({extensions})")
        for name in os.listdir(folder):
            if (".part" in name) if parts_only else clip.fullmatch(name):
                os.unlink(os.path.join(folder, name))
        if not parts_only:
            with contextlib.suppress(OSError):  # not empty: it holds someone's files
                os.rmdir(folder)
    if not parts_only:
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(out_dir, "videos"))

