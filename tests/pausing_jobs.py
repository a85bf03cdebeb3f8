"""A re-encode job that stops at a chosen point of its encode until the test lets it go on, in a worker that does
not notice its main process's end (as a worker does not for up to ``evautil.worker_process.WATCH_INTERVAL_S``, or longer
while its encode keeps the interpreter busy): what a re-encode killed outright leaves running while the same
command starts again. It is pickled by name into the worker processes, which import this module.

The environment (which the workers inherit) says where it stops:

* ``EVA_TEST_PAUSE_AT``: ``renaming`` (the output written whole and verified, not yet renamed into place) or
  ``writing`` (once the output's first bytes are on disk);
* ``EVA_TEST_PAUSE_DIR``: the folder where the job writes ``paused`` (its process id) when it stops, and where it
  waits for a file ``go``.
"""

from __future__ import annotations

import os
import time

PAUSE_AT, PAUSE_DIR = "EVA_TEST_PAUSE_AT", "EVA_TEST_PAUSE_DIR"


def _pause() -> None:
    folder = os.environ[PAUSE_DIR]
    paused = os.path.join(folder, "paused")
    with open(paused + ".tmp", "w", encoding="ascii") as f:
        f.write(str(os.getpid()))
    os.replace(paused + ".tmp", paused)  # whole when it appears
    while not os.path.exists(os.path.join(folder, "go")):
        time.sleep(0.05)


def _never_see_the_main_process_end() -> None:
    """The worker's watch of its main process sees it as it is now (alive) from here on."""
    import multiprocessing

    from evautil import worker_process

    real = worker_process._process_identity
    main_pid = multiprocessing.parent_process().pid  # the process that started this worker: its pool's
    alive = real(main_pid)

    def identity(pid: int) -> str | None:
        return alive if pid == main_pid else real(pid)

    worker_process._process_identity = identity


class _PausingOutput:
    """The encode's output container, stopping once the first of its bytes have reached the file."""

    def __init__(self, out, path: str):
        self._out, self._path, self._paused = out, path, False

    def mux(self, packet) -> None:
        self._out.mux(packet)
        if not self._paused and os.path.getsize(self._path) > 0:
            self._paused = True
            _pause()

    def __getattr__(self, name: str):
        return getattr(self._out, name)


def pausing_reencode_job(args: tuple):
    """``tools.kinetics.reencode._reencode_job``, stopping where ``EVA_TEST_PAUSE_AT`` says."""
    from tools.kinetics import encode
    from tools.kinetics.reencode import _reencode_job

    _never_see_the_main_process_end()
    if os.environ[PAUSE_AT] == "renaming":
        count_frames = encode.count_frames

        def verified_then_paused(path: str) -> int:
            n = count_frames(path)
            _pause()
            return n

        encode.count_frames = verified_then_paused
    else:
        open_output = encode._open_h264_output

        def pausing_output(tmp: str, *rest):
            out, stream = open_output(tmp, *rest)
            return _PausingOutput(out, tmp), stream

        encode._open_h264_output = pausing_output
    return _reencode_job(args)
