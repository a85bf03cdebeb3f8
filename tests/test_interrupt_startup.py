"""A Ctrl-C while a worker pool starts a worker: the main process's one line, and nothing from the worker after it.

A terminal's Ctrl-C reaches the whole process group. A worker imports the main script as it starts (seconds), and
only then reads the pool's queues, whose semaphores the main process removes on its way out. A main process
interrupted while its pool was starting a worker, before the pool had recorded it, ended first: the worker failed
on the missing semaphores and printed a FileNotFoundError traceback after the main process's line.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, child_env
from tests.test_interrupt import _AS_FROM_A_TERMINAL, _assert_one_line

# Runs a command that starts a worker pool (argv[2]: "pool", a bare started_pool, or "verify_data" and its arguments)
# and sends a Ctrl-C to its own process group at a chosen moment of the first worker's start (argv[1]): "forking",
# when the fork server has forked the worker but the pool's start of it has not returned, or "started", when that
# start has returned but the pool has not recorded the worker yet. A worker, importing this script as it starts,
# waits until the main process has removed its semaphores (or ended): the seconds a real worker's imports take, made
# certain.
_SCRIPT = """
import os, signal, sys, time
from multiprocessing import forkserver, util
from pathlib import Path

sys.path.insert(0, {root!r})
from evautil import worker_process, workers

REMOVED = Path(__file__).with_suffix(".semaphores-removed")

if __name__ == "__mp_main__" and os.getppid() != int(os.environ["MAIN_PID"]):  # a worker starting (not the server)
    deadline = time.monotonic() + 60
    while (not REMOVED.exists() and worker_process._process_identity(int(os.environ["MAIN_PID"])) is not None
           and time.monotonic() < deadline):
        time.sleep(0.05)

if __name__ == "__main__":
    os.environ["MAIN_PID"] = str(os.getpid())
    # made before the pool's semaphores: at exit, with the same priority, it runs after they are removed
    util.Finalize(None, REMOVED.touch, exitpriority=0)

    def ctrl_c():  # as a terminal sends it: to the whole process group
        os.killpg(0, signal.SIGINT)

    if sys.argv[1] == "forking":
        read_signed, reads = forkserver.read_signed, []

        def read_pid_then_ctrl_c(fd):  # the first read is the new worker's pid: it is forked
            value = read_signed(fd)
            if not reads:
                reads.append(value)
                ctrl_c()
            return value

        forkserver.read_signed = read_pid_then_ctrl_c
    else:
        start = worker_process.ForkServerWorkerProcess.start

        def start_then_ctrl_c(self):
            start(self)
            ctrl_c()

        worker_process.ForkServerWorkerProcess.start = start_then_ctrl_c
    if sys.argv[2] == "pool":
        from evautil.interrupt import on_interrupt

        on_interrupt("starting a pool: nothing was done")
        workers.started_pool(2)
    else:
        from tools import verify_data

        sys.exit(verify_data.main(sys.argv[3:]))
    print("not interrupted", file=sys.stderr)
"""


# The same for a pool of spawned workers, the main process's own children (argv[1]: "importing"): the Ctrl-C comes
# while the pool waits for its first worker, which is importing this script (the pool recorded it as its start
# returned, before the new interpreter ran anything) and goes on until the Ctrl-C was sent (or a minute passed).
_SPAWN_SCRIPT = """
import os, signal, sys, threading, time
from pathlib import Path

sys.path.insert(0, {root!r})
from evautil import workers

IMPORTING = Path(__file__).with_suffix(".worker-importing")
SENT = Path(__file__).with_suffix(".ctrl-c-sent")


def wait_for(path):
    deadline = time.monotonic() + 60
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


if __name__ == "__mp_main__":  # a spawned worker
    IMPORTING.touch()
    wait_for(SENT)

if __name__ == "__main__":
    from multiprocessing import util

    # made before the pool's semaphores: at exit, with the same priority, it runs after they are removed
    util.Finalize(None, Path(__file__).with_suffix(".semaphores-removed").touch, exitpriority=0)

    def ctrl_c():  # as a terminal sends it: to the whole process group
        wait_for(IMPORTING)
        os.killpg(0, signal.SIGINT)
        SENT.touch()

    threading.Thread(target=ctrl_c, daemon=True).start()
    from evautil.interrupt import on_interrupt

    on_interrupt("starting a pool: nothing was done")
    workers.started_pool(2, "spawn")
    print("not interrupted", file=sys.stderr)
"""


def _interrupted_while_a_worker_starts(tmp_path, when: str, *command: str,
                                       script_text: str = _SCRIPT) -> tuple[int, str]:
    script = tmp_path / "starting.py"
    script.write_text(script_text.format(root=str(ROOT)))
    # stderr is read to its end: also what a worker still holding it prints after the main process has ended
    done = subprocess.run([*_AS_FROM_A_TERMINAL, sys.executable, str(script), when, *command], cwd=tmp_path,
                          env=child_env(), start_new_session=True, capture_output=True, text=True, timeout=180)
    assert (tmp_path / "starting.semaphores-removed").is_file(), done.stderr  # the main process went that far
    return done.returncode, done.stderr


@pytest.mark.parametrize("when", ["forking", "started"])
def test_a_ctrl_c_while_a_pool_starts_a_worker_is_the_one_line(tmp_path, when):
    status, err = _interrupted_while_a_worker_starts(tmp_path, when, "pool")
    _assert_one_line(status, err, "starting a pool: nothing was done")
    assert err.splitlines() == ["interrupted: starting a pool: nothing was done"], err


def test_a_ctrl_c_while_a_spawn_pool_starts_a_worker_is_the_one_line(tmp_path):
    """A spawned worker is no child of the fork server, whose signal mask the others inherit: it got the Ctrl-C in
    its import of the main script and printed a KeyboardInterrupt traceback after the main process's line."""
    status, err = _interrupted_while_a_worker_starts(tmp_path, "importing", script_text=_SPAWN_SCRIPT)
    assert (tmp_path / "starting.worker-importing").is_file(), err  # the Ctrl-C came while it was importing
    _assert_one_line(status, err, "starting a pool: nothing was done")
    assert err.splitlines() == ["interrupted: starting a pool: nothing was done"], err


def test_a_ctrl_c_while_the_index_build_starts_its_probe_workers_is_the_one_line(tmp_path):
    """verify_data's probe pool (the index build's, as in train.py's start): the same one line."""
    (tmp_path / "v").mkdir()
    for i in range(4):
        (tmp_path / "v" / f"{i}.mp4").write_bytes(b"not a video")
    (tmp_path / "list.txt").write_text("".join(f"v/{i}.mp4 0\n" for i in range(4)))
    status, err = _interrupted_while_a_worker_starts(tmp_path, "forking", "verify_data", str(tmp_path / "list.txt"),
                                                     "--workers", "2")
    last = _assert_one_line(status, err, "verifying the lists: the videos probed so far are saved")
    assert err.rstrip("\n").endswith(last), err  # nothing after it


def test_a_worker_start_that_fails_is_reported_unless_the_main_process_ended(monkeypatch):
    """Only the failures that the main process's end can cause, and only when it ended, go unsaid."""
    from evautil import worker_process

    reported = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, error, tb: reported.append(kind))
    monkeypatch.setattr(worker_process, "_EXCEPTHOOK_BEFORE_SETUP", None)
    monkeypatch.setattr(worker_process, "MAIN_END_WAIT_S", 0.0)
    alive = worker_process._process_identity(os.getpid())
    for identity in (alive, "a process that ended"):  # the second: this id is another process's now
        reported.clear()
        worker_process._worker_starting(os.getpid(), identity)
        for kind in (FileNotFoundError, EOFError, ImportError):
            sys.excepthook(kind, kind("x"), None)
        expected = [FileNotFoundError, EOFError, ImportError] if identity == alive else [ImportError]
        assert reported == expected, identity
        sys.excepthook = worker_process._EXCEPTHOOK_BEFORE_SETUP


def test_a_set_up_worker_reports_its_failures_as_before():
    from evautil.workers import abandon_pool, started_pool, submit_to_pool

    pool = started_pool(1)
    try:
        assert submit_to_pool(pool, eval, "__import__('sys').excepthook is __import__('sys').__excepthook__").result()
    finally:
        abandon_pool(pool)
