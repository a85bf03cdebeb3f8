"""Worker jobs that die on chosen files as a crash in FFmpeg would (SIGSEGV, no exception), never finish one, or
raise an exception that cannot be rebuilt from its pickle, wrapped around the real jobs. They are pickled by name
into worker processes, which import this module: it imports nothing heavy."""

from __future__ import annotations

import os
import signal
import time

# Files whose name contains this are crashed on.
CRASH_MARK = "crashes"
# Files whose name contains this are re-encoded forever (a long video still encoding when the run is stopped).
STALL_MARK = "stalls"
# Files whose name contains this fail with an exception that the main process cannot unpickle (DamagedStream).
UNPICKLABLE_MARK = "unpicklable"
# A time limit that every job which does answer meets, also on a loaded machine, while a stalled one never answers.
# A fresh worker's first answer (its imports) took 2 s with a load of 10 on 2 cores; 0.5 s failed at a load of 5.
ANSWERS_WITHIN_S = 5.0


class DamagedStream(ValueError):
    """An error as a library may define one: its constructor wants other arguments than it keeps (``args`` holds
    the message only), so unpickling it, which calls ``DamagedStream(message)``, fails with a TypeError."""

    def __init__(self, path: str, why: str):
        super().__init__(f"{path}: {why}")


def _crash_on_marked(path: str) -> None:
    if CRASH_MARK in os.path.basename(path):
        os.kill(os.getpid(), signal.SIGSEGV)
    if UNPICKLABLE_MARK in os.path.basename(path):
        raise DamagedStream(path, "the stream is damaged")


def probe_job(job: tuple):
    """``dali_pipelines.index._probe_job`` (the original: the worker's module is not patched)."""
    from dali_pipelines.index import _probe_job

    _crash_on_marked(job[1])
    return _probe_job(job)


def stalling_probe_job(job: tuple):
    """``probe_job``, except that a file marked :data:`STALL_MARK` is never answered for (a read from a network
    file system that stopped answering)."""
    if STALL_MARK in os.path.basename(job[1]):
        while True:
            time.sleep(1.0)
    return probe_job(job)


def decode_indexed_frames(path: str, *args):
    """``pyav_io.decode_indexed_frames`` (the original: the worker's module is not patched); a file marked
    :data:`STALL_MARK` is never answered for (a decoder that does not end)."""
    from dali_pipelines.pyav_io import decode_indexed_frames

    while STALL_MARK in os.path.basename(path):
        time.sleep(1.0)
    _crash_on_marked(path)
    return decode_indexed_frames(path, *args)


def reencode_job(args: tuple):
    from tools.kinetics.reencode import _reencode_job

    _crash_on_marked(args[0])
    return _reencode_job(args)


def stalling_reencode_job(args: tuple):
    """``reencode_job``, except that a file marked :data:`STALL_MARK` writes its partial output and never ends."""
    from tools.kinetics.reencode import _reencode_job

    src, dst = args[0], args[1]
    if STALL_MARK in os.path.basename(src):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst + ".part", "wb") as f:
            f.write(b"the first frames of an encode")
        while True:
            time.sleep(1.0)
    return _reencode_job(args)
