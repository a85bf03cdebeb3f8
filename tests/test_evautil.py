"""The shared helpers: atomic writes, worker maps, FLOPs conventions."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from evautil.files import (atomic_write, atomic_write_by_name, atomic_write_text, error_writing,
                           output_path_problem, plain_spelling, write_output_text)
from evautil.flops import peak_flops, train_step_flops
from evautil.progress import ProgressLines, format_bytes, format_rate, with_progress
from evautil.workers import (MAX_OVERDUE_IN_A_ROW, DaemonThreadPool, WorkerCrashError, WorkerTimeoutError,
                             map_with_progress, mp_context)
from tests.crashing_jobs import ANSWERS_WITHIN_S
from tests.sync_order import record_syncs, synced_renames


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    atomic_write_text(str(path), "first\n")
    assert path.read_text() == "first\n"

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(path), broken)
    assert path.read_text() == "first\n"  # the old content survives
    assert os.listdir(path.parent) == ["out.txt"]  # and no temporary file is left behind



class _ArchiveWriter:
    """A writer whose clean-up fails once its data was cut off, as torch.save's zip writer does ("unexpected
    pos ..."): the Ctrl-C that cut it off is then only the context of a RuntimeError."""

    def __init__(self, f) -> None:
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 513664 vs 513552")


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), SystemExit(130)], ids=["ctrl-c", "exit"])
def test_an_interrupt_during_a_write_stays_an_interrupt_when_the_writer_fails_cleaning_up(tmp_path, interrupt):
    path = tmp_path / "ckpt.pth"
    atomic_write_text(str(path), "earlier\n")

    def cut_off(f):
        with _ArchiveWriter(f):
            f.write(b"half an archive")
            raise interrupt

    def cut_off_by_name(name: str) -> None:
        with open(name, "wb") as f:
            cut_off(f)

    for write in (lambda: atomic_write(str(path), cut_off), lambda: atomic_write_by_name(str(path), cut_off_by_name)):
        with pytest.raises(type(interrupt)) as info:
            write()
        assert info.value is interrupt  # the interrupt itself, not the writer's RuntimeError
        assert path.read_text() == "earlier\n" and os.listdir(tmp_path) == ["ckpt.pth"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_the_mode_a_plain_open_would(tmp_path, umask, mode):
    """Not the temporary file's private 0600: an index cache beside a shared dataset must stay readable."""
    old = os.umask(umask)
    try:
        atomic_write_text(str(tmp_path / "index.npz"), "x")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "index.npz").st_mode & 0o777 == mode == os.stat(tmp_path / "plain.txt").st_mode & 0o777


@pytest.mark.parametrize("writer", ["atomic_write", "atomic_write_text", "atomic_write_by_name", "write_output_text"])
@pytest.mark.parametrize("mode", [0o600, 0o640], ids=["0600", "0640"])
def test_an_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path, writer, mode):
    """A chmod 600 on a checkpoint (or 640 for a group) was undone by the next write, which gave the new-file mode."""
    (tmp_path / "store").mkdir()
    plain, real, link = tmp_path / "plain.csv", tmp_path / "store" / "real.pth", tmp_path / "link.pth"
    for path in (plain, real):
        path.write_bytes(b"old")
        os.chmod(path, mode)
    link.symlink_to(real)  # the mode that counts is the linked-to file's, not the link's
    old = os.umask(0o022)
    try:
        for path in (plain, link, tmp_path / "new.csv"):
            WRITERS[writer](str(path))
    finally:
        os.umask(old)
    assert plain.read_bytes() == real.read_bytes() == b"new" and link.is_symlink()
    assert os.stat(plain).st_mode & 0o777 == mode and os.stat(real).st_mode & 0o777 == mode
    assert os.stat(tmp_path / "new.csv").st_mode & 0o777 == 0o666 & ~0o022  # a new file: as a plain open() makes it


def _square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_map_with_progress_returns_results_in_order(workers):
    assert list(map_with_progress(_square, list(range(7)), workers, "squares", progress=False)) == [
        x * x for x in range(7)]
    unordered = list(map_with_progress(_square, list(range(7)), workers, "squares", progress=False, ordered=False))
    assert sorted(unordered) == [x * x for x in range(7)]


_ONE_CORE = """
import os
import sys

import evautil.workers as w


def pid(_):
    return os.getpid()


if __name__ == "__main__":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    pids = set(w.map_with_progress(pid, range(4), 0, "pids", progress=False))
    print(w.usable_cpus(), os.cpu_count(), pids == {os.getpid()})
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2,
                    reason="needs CPU affinity and 2 cores")
def test_workers_zero_means_the_cores_this_process_may_use_not_the_machines(tmp_path):
    """A batch job given 1 core of a large node started one probe process per core of the node (os.cpu_count):
    0 workers now means the cores of the process's affinity mask (here 1: the items run in the process itself)."""
    script = tmp_path / "one_core.py"
    script.write_text(_ONE_CORE)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": root}).stdout.split()
    assert out == ["1", str(os.cpu_count()), "True"]


def test_map_with_progress_logs_plain_lines_without_a_bar():
    """Without a bar, ``log`` gets a line per ``log_every_s`` (every item here) and one with the total time; with a
    bar (a terminal), only the last; nothing when no ``log`` is given."""
    lines: list[str] = []
    assert list(map_with_progress(_square, [1, 2, 3, 4], 1, "squares", progress=False, unit="square",
                                  log=lines.append, log_every_s=0.0)) == [1, 4, 9, 16]
    assert [line.split(" (")[0] for line in lines[:3]] == [f"squares: {k} of 4 squares done" for k in (1, 2, 3)]
    # (no rate, nor time left from one, in the first half second)
    assert "(25.0%), - squares/s, eta -" in lines[0] and len(lines) == 4
    assert re.fullmatch(r"squares: 4 squares done in 0:00:0\d \((-|[0-9.,]+) squares/s\)", lines[-1]), lines[-1]
    lines.clear()
    list(map_with_progress(_square, [1, 2, 3], 1, "squares", progress=True, log=lines.append, log_every_s=0.0))
    assert len(lines) == 1 and lines[0].startswith("squares: 3 items done in ")


def test_progress_lines_say_one_item_in_the_singular():
    lines: list[str] = []
    progress = ProgressLines("predict", 1, "batch", lines.append, every_s=None)
    assert progress.line().startswith("predict: 0 of 1 batch done (0.0%), ")
    progress.update()
    progress.finish()
    assert lines[0].startswith("predict: 1 batch done in 0:00:0") and lines[0].endswith(" (- batches/s)")
    lines.clear()
    progress = ProgressLines("check", 2, "video", lines.append, every_s=None)
    progress.update()
    assert progress.line().startswith("check: 1 of 2 videos done (50.0%), ")


def test_progress_rates_wait_for_a_figure_that_means_something(monkeypatch):
    """3 videos in 40 µs were "72,632 videos/s" (and a time left from that); a rate of one was "1 batches/s"."""
    clock = [100.0]
    monkeypatch.setattr("evautil.progress.time.monotonic", lambda: clock[0])
    lines: list[str] = []
    progress = ProgressLines("check", 10, "video", lines.append, every_s=0.0)
    clock[0] += 40e-6
    progress.update(3)
    assert lines == ["check: 3 of 10 videos done (30.0%), - videos/s, eta -"]
    clock[0] += 0.5  # half a second: a figure, 3 significant ones
    progress.update(3)
    assert lines[-1] == "check: 6 of 10 videos done (60.0%), 12 videos/s, eta 0:00:00"
    clock[0] += 3.5
    progress.update(2)
    assert lines[-1] == "check: 8 of 10 videos done (80.0%), 2 videos/s, eta 0:00:01"
    clock[0] += 4.0
    progress.update(2)
    progress.finish()
    assert lines[-1] == "check: 10 videos done in 0:00:08 (1.25 videos/s)"
    assert [format_rate(n, s, "batch") for n, s in ((2, 2.0), (72632, 1.0), (1, 10.0), (999.7, 1.0), (5, 3.0))] == [
        "1 batch/s", "72,600 batches/s", "- batches/s", "1,000 batches/s", "1.67 batches/s"]


def test_sizes_are_given_in_the_largest_unit_they_hold_one_of():
    assert [format_bytes(n) for n in (0, 1023, 1024, 158581, (1 << 20) - 1, 3 << 30, 5 << 40, 5 << 50)] == [
        "0 B", "1023 B", "1.00 KiB", "154.86 KiB", "1.00 MiB", "3.00 GiB", "5.00 TiB", "5.00 PiB"]
    # a petabyte store read "5120.00 TiB"; past the last unit the figure grows
    assert [format_bytes(n) for n in ((1 << 50) - 1, 7 << 60, 2 << 70, 3 << 80, 2048 << 80)] == [
        "1.00 PiB", "7.00 EiB", "2.00 ZiB", "3.00 YiB", "2048.00 YiB"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_with_progress_draws_a_bar_only_on_a_terminal(monkeypatch, capsys):
    """A log file gets plain lines (here only the one with the total time: the work takes less than 30 s), never a
    bar's carriage-return redraws; a terminal gets the bar."""
    assert list(with_progress(iter([1, 2, 3]), 3, "predict", "batch")) == [1, 2, 3]
    err = capsys.readouterr().err
    assert re.fullmatch(r"predict: 3 batches done in 0:00:0\d \((-|[0-9.,]+) batches/s\)\n", err), err
    assert "\r" not in err and len(err.splitlines()) == 1
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert list(with_progress(iter([1, 2, 3]), 3, "predict", "batch")) == [1, 2, 3]
    assert "\r" in terminal.getvalue() and "3/3" in terminal.getvalue()


def _dies_on_3_and_5(x: int) -> int:
    if x == 3:
        os._exit(7)  # as a native crash or the OOM killer would: no exception, the process is gone
    if x == 5:
        os.kill(os.getpid(), signal.SIGSEGV)
    return x * x


@pytest.mark.timeout(120)  # the old pool hung here: fail fast, not at the suite's limit
@pytest.mark.parametrize("ordered", [True, False])
def test_a_worker_that_dies_costs_only_its_item(ordered):
    """multiprocessing.Pool waited forever for the result a dead worker took with it (an index build hung on one
    file that crashed FFmpeg). Now the others all finish, and only the items that kill a worker when run alone
    get ``on_crash``'s result, with how the worker ended."""
    crashed = []
    # 64 items on 2 workers go 4 to a task: the crash takes down a task with innocent items in it
    out = list(map_with_progress(_dies_on_3_and_5, list(range(64)), 2, "x", progress=False, ordered=ordered,
                                 on_crash=lambda item, how: crashed.append((item, how)) or -item))
    want = [-x if x in (3, 5) else x * x for x in range(64)]
    assert (out if ordered else sorted(out)) == (want if ordered else sorted(want))
    assert sorted(item for item, _ in crashed) == [3, 5]
    how = dict(crashed)
    assert "signal SIGSEGV" in how[5] and "the second time alone" in how[3]


@pytest.mark.timeout(120)  # the old pool hung here: fail fast, not at the suite's limit
def test_a_crashing_item_without_on_crash_is_an_error_naming_it():
    with pytest.raises(WorkerCrashError, match=r"^3: the worker process running it died"):
        list(map_with_progress(_dies_on_3_and_5, [0, 1, 2, 3, 4], 2, "x", progress=False))


def _hangs_on_marked(x: int) -> int:
    if x < 0:  # as a read from a file system that stopped answering: no error, no end
        time.sleep(3600)
    return x * x


@pytest.mark.timeout(120)  # the old map waited for ever here
@pytest.mark.parametrize("ordered", [True, False])
def test_an_item_without_an_answer_costs_only_its_item(ordered):
    """An item that never finishes (a hung file) gets ``on_timeout``'s result once it has had the pool to itself
    for ``timeout`` seconds; the items that shared its task, and every other, get their own results."""
    items = [-3 if x == 3 else x for x in range(64)]  # 64 items on 2 workers go 4 to a task
    overdue, limit = [], ANSWERS_WITHIN_S  # the other items answer within it on a loaded machine too
    t0 = time.monotonic()
    out = list(map_with_progress(_hangs_on_marked, items, 2, "x", progress=False, ordered=ordered, timeout=limit,
                                 on_timeout=lambda item, how: overdue.append((item, how)) or "late"))
    want = ["late" if x == -3 else x * x for x in items]
    assert (out if ordered else sorted(map(str, out))) == (want if ordered else sorted(map(str, want)))
    assert [item for item, _ in overdue] == [-3]
    assert overdue[0][1] == f"no result within {limit:g} s, the only item in flight"
    assert time.monotonic() - t0 < 6 * limit  # its task stalls, then it alone: not a wait for ever


@pytest.mark.timeout(120)
def test_an_item_without_an_answer_and_without_on_timeout_is_an_error_naming_it():
    with pytest.raises(WorkerTimeoutError, match=rf"^-2: no result within {ANSWERS_WITHIN_S:g} s"):
        list(map_with_progress(_hangs_on_marked, [0, 1, -2, 3], 2, "x", progress=False, timeout=ANSWERS_WITHIN_S))


@pytest.mark.timeout(120)
def test_items_without_an_answer_in_a_row_stop_the_map():
    """Every item hanging is the storage, not the items: after MAX_OVERDUE_IN_A_ROW verdicts in a row (items
    stalled together run again, then alone), the map stops with one error instead of waiting item after item."""
    overdue = []
    items = [-2, -3, -4, -5, -6, 7]  # no item before the hanging ones has to answer within the short limit
    with pytest.raises(WorkerTimeoutError, match=rf"^{MAX_OVERDUE_IN_A_ROW} items in a row gave no result within "
                                                 r"0.5 s each \(the last: -\d\)"):
        for _ in map_with_progress(_hangs_on_marked, items, 2, "x", progress=False, ordered=False, timeout=0.5,
                                   on_timeout=lambda item, how: overdue.append((item, how))):
            pass
    assert len(overdue) == MAX_OVERDUE_IN_A_ROW  # each had its verdict; the last one's is not yielded
    assert all(item < 0 and how == "no result within 0.5 s, twice, the second time alone" for item, how in overdue)


def _hangs_on_marked_job(job: tuple[int, str, bool]) -> int:
    return _hangs_on_marked(job[0])


@pytest.mark.timeout(120)
def test_items_without_an_answer_are_named_as_the_caller_describes_them():
    """The errors named an item as Python writes it: a job tuple of the index, a name that is not UTF-8 escaped
    (``(3, '/data/caf\\udce9/x.webm', False)``). With ``describe``, they name it in the caller's words: the path."""
    jobs = [(-x, f"/data/caf\udce9/{x}.webm", False) for x in range(2, 7)]
    with pytest.raises(WorkerTimeoutError, match=rf"^{MAX_OVERDUE_IN_A_ROW} items in a row gave no result within "
                                                 "0.5 s each \\(the last: /data/caf\udce9/\\d.webm\\): what"):
        list(map_with_progress(_hangs_on_marked_job, jobs, 2, "x", progress=False, ordered=False, timeout=0.5,
                               on_timeout=lambda job, how: None, describe=lambda job: job[1]))
    with pytest.raises(WorkerTimeoutError, match="^/data/caf\udce9/2.webm: no result within 0.5 s"):
        list(map_with_progress(_hangs_on_marked_job, jobs[:1], 2, "x", progress=False, timeout=0.5,
                               one_worker_pool=True, describe=lambda job: job[1]))


@pytest.mark.timeout(120)  # the old pool hung here: fail fast, not at the suite's limit
def test_workers_that_cannot_start_are_an_error_not_a_hang(tmp_path):
    """A script read from standard input cannot start workers (they re-import the main module): multiprocessing.Pool
    restarted them forever; now the map stops with WorkerStartError at once."""
    from tests.conftest import child_env  # here, not at the top: workers import this module, and it imports torch

    script = ("from evautil.workers import map_with_progress\n"
              "print(list(map_with_progress(abs, [-1, -2, -3], 2, 'x')))\n")
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=child_env())
    assert done.returncode == 1 and "WorkerStartError: worker processes die as they start" in done.stderr
    assert done.stderr.count("Traceback") <= 6  # two pools of two workers, then ours


def test_a_daemon_thread_pool_delivers_results_and_errors_and_cancels_what_waits_behind_a_stuck_job():
    import threading

    started, release = threading.Event(), threading.Event()
    pool = DaemonThreadPool(1, "t")
    stuck = pool.submit(lambda: started.set() or release.wait())
    assert started.wait(timeout=10)
    queued = [pool.submit(_square, x) for x in range(3)]
    pool.shutdown(wait=False, cancel_futures=True)  # as the feeder gives up a pool whose read does not end
    assert all(f.cancelled() for f in queued) and not stuck.done()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(_square, 2)
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("t_"))
    release.set()
    assert stuck.result(timeout=10) is True
    again = DaemonThreadPool(2, "u")
    assert [f.result(timeout=10) for f in [again.submit(_square, x) for x in range(5)]] == [0, 1, 4, 9, 16]
    with pytest.raises(ZeroDivisionError):
        again.submit(divmod, 1, 0).result(timeout=10)
    again.shutdown(wait=True)
    assert not [t for t in threading.enumerate() if t.name.startswith("u_")]  # joined


def test_workers_are_never_forked():
    assert mp_context().get_start_method() in ("forkserver", "spawn")
    with pytest.raises(ValueError, match="never 'fork'"):
        mp_context("fork")


def test_an_fp32_run_is_measured_against_plain_fp32_unless_torch_uses_tf32(monkeypatch):
    """torch's default runs fp32 matmuls in plain fp32: dividing by the TF32 (or bf16) peak read an fp32 run's MFU
    7x (15x) too low."""
    import torch

    from engine.telemetry import device_peak_flops, matmul_precision

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    gpu = torch.device("cuda", 0)
    torch_default = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert matmul_precision("fp32") == "fp32" and matmul_precision("bf16") == "bf16"
        assert device_peak_flops(gpu, "fp32") == 67e12 and device_peak_flops(gpu, "bf16") == 989.4e12
        torch.set_float32_matmul_precision("high")  # TF32 for fp32 matmuls
        assert matmul_precision("fp32") == "tf32" and device_peak_flops(gpu, "fp32") == 494.7e12
    finally:
        torch.set_float32_matmul_precision(torch_default)
    assert device_peak_flops(torch.device("cpu"), "bf16") is None


def test_flops_conventions():
    assert train_step_flops(2.0) == 6.0 and train_step_flops(2.0, recompute=True) == 8.0
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989.4e12  # the SXM part does not say 'SXM'
    assert peak_flops("NVIDIA H200", "tf32") == 494.7e12 and peak_flops("NVIDIA H200", "fp32") == 67e12
    assert peak_flops("NVIDIA H200 NVL", "bf16") == 835.5e12  # not the SXM part's figure
    assert peak_flops("NVIDIA GH200 480GB", "bf16") == 989.4e12
    assert peak_flops("NVIDIA L4", "tf32") is None and peak_flops("Some CPU", "bf16") is None
    assert peak_flops(None) is None
    with pytest.raises(ValueError, match="precision"):
        peak_flops("NVIDIA H200", "int8")


def test_atomic_write_by_name_writes_through_a_link_and_keeps_it(tmp_path):
    """A rename over the link replaced it with a regular file (export --out naming a link)."""
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"new")

    atomic_write_by_name(str(link), write)
    assert link.is_symlink() and real.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.bin", "store"]  # no temporary file left
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.bin"]

    def fail(tmp):
        raise OSError(28, "No space left on device", tmp)

    with pytest.raises(OSError) as caught:  # the temporary file beside the target is a write of the link's path
        atomic_write_by_name(str(link), fail)
    assert os.path.dirname(caught.value.filename) == str(real.parent) and error_writing(caught.value, str(link))
    assert real.read_bytes() == b"new" and sorted(p.name for p in real.parent.iterdir()) == ["real.bin"]


def _write_bytes_by_name(tmp: str, data: bytes) -> None:
    with open(tmp, "wb") as f:
        f.write(data)


# every atomic writer, writing b"new" (checkpoints, index caches and npy shards go through atomic_write; reports,
# lists and run files through atomic_write_text; safetensors through atomic_write_by_name; --out files through
# write_output_text)
WRITERS = {
    "atomic_write": lambda path: atomic_write(path, lambda f: f.write(b"new")),
    "atomic_write_text": lambda path: atomic_write_text(path, "new"),
    "atomic_write_by_name": lambda path: atomic_write_by_name(path, lambda tmp: _write_bytes_by_name(tmp, b"new")),
    "write_output_text": lambda path: write_output_text(path, "new"),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_atomic_writer_writes_through_a_link_and_keeps_it(tmp_path, writer):
    """atomic_write and atomic_write_text renamed over the link, putting a regular file in its place: a checkpoint
    or an index cache linked from another store was cut off from it (atomic_write_by_name wrote through)."""
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(os.path.join("store", "real.bin"))
    WRITERS[writer](str(link))
    assert link.is_symlink() and os.readlink(link) == os.path.join("store", "real.bin")
    assert real.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.bin", "store"]  # no temporary file left
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.bin"]
    dangling = tmp_path / "dangling.bin"  # a link to a file not made yet: made there, as open() would
    dangling.symlink_to(tmp_path / "store" / "later.bin")
    WRITERS[writer](str(dangling))
    assert dangling.is_symlink() and (tmp_path / "store" / "later.bin").read_bytes() == b"new"


@pytest.mark.parametrize("writer", ["atomic_write", "atomic_write_text", "atomic_write_by_name"])
def test_an_atomic_write_never_renames_over_what_is_not_a_regular_file(tmp_path, writer):
    # a link to a named pipe: writing through would rename a file into the pipe's place (a device's alike)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    link = tmp_path / "link.bin"
    link.symlink_to(pipe)
    WRITERS[writer](str(link))
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)  # the pipe is still a pipe
    assert not link.is_symlink() and link.read_bytes() == b"new"  # the link's own name replaced, as before


# prints a line on stdout, then writes its --out (argv[1]) as a tool does at its end
_PRINT_THEN_WRITE_OUT = "import sys; from evautil.files import write_output_text; print('table'); " \
                        "write_output_text(sys.argv[1], 'preds\\n')"


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="needs /dev/fd")
def test_an_out_naming_stdout_or_an_open_file_goes_on_after_what_was_printed(tmp_path):
    """--out /dev/stdout was opened to be replaced: stdout sent to a file with >> lost the file's earlier lines, and
    with > the table printed before; a pipe got the predictions before the table, still buffered."""
    from tests.conftest import child_env

    def run(out: str, **streams) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _PRINT_THEN_WRITE_OUT, out], env=child_env(), timeout=60,
                              **streams)

    log = tmp_path / "log.txt"
    log.write_text("earlier\n")
    with open(log, "ab") as appended:  # a shell's >> log
        assert run("/dev/stdout", stdout=appended).returncode == 0
    assert log.read_text() == "earlier\ntable\npreds\n"
    with open(log, "wb") as replaced:  # a shell's > log
        assert run("/dev/stdout", stdout=replaced).returncode == 0
    assert log.read_text() == "table\npreds\n"
    piped = run("/dev/stdout", stdout=subprocess.PIPE)
    assert piped.returncode == 0 and piped.stdout == b"table\npreds\n"
    other = tmp_path / "other.txt"  # a descriptor of its own (a shell's 3>> other.txt), through /proc too
    other.write_text("earlier\n")
    for alias in ("/dev/fd/{}", "/proc/self/fd/{}"):
        fd = os.open(other, os.O_WRONLY | os.O_APPEND)
        try:
            done = subprocess.run([sys.executable, "-c", _PRINT_THEN_WRITE_OUT, alias.format(fd)], env=child_env(),
                                  pass_fds=(fd,), stdout=subprocess.PIPE, timeout=60)
        finally:
            os.close(fd)
        assert done.returncode == 0 and done.stdout == b"table\n"
    assert other.read_text() == "earlier\npreds\npreds\n"


def test_a_regular_file_under_dev_is_replaced_whole_like_any_other(tmp_path):
    """Every path under /dev was written in place: a file in /dev/shm (a memory file system) was emptied and then
    written, not replaced whole; its other names (hard links) saw the half-written file."""
    if not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        pytest.skip("needs a writable /dev/shm")
    folder = tempfile.mkdtemp(dir="/dev/shm")
    try:
        out, other_name = os.path.join(folder, "preds.jsonl"), os.path.join(folder, "hard_link.jsonl")
        with open(out, "w") as f:
            f.write("earlier\n")
        os.link(out, other_name)
        write_output_text(out, "preds\n")
        with open(out) as f, open(other_name) as g:
            assert (f.read(), g.read()) == ("preds\n", "earlier\n")  # a new file renamed into place
        assert sorted(os.listdir(folder)) == ["hard_link.jsonl", "preds.jsonl"]
    finally:
        shutil.rmtree(folder)


def test_a_tools_out_file_is_synced_before_its_rename_and_the_folder_after(tmp_path, monkeypatch):
    """A tool's --out file (predictions, a benchmark's results) was renamed into place unsynced: a power loss right
    after the command could leave it empty or cut under its name."""
    events = record_syncs(monkeypatch)
    out = tmp_path / "preds.jsonl"
    write_output_text(str(out), "preds\n")
    assert synced_renames(events, str(tmp_path)) == [("preds.jsonl", 6)] and len(events) == 3, events


def test_error_writing_knows_a_write_of_the_path_from_a_read_of_another_file(tmp_path):
    out = tmp_path / "m[1].safetensors"  # glob characters in the name are the name's own

    def err(name):
        return OSError(28, "No space left on device", str(name))

    def fail(tmp):
        raise err(tmp)

    assert error_writing(err(out), str(out))
    with pytest.raises(OSError) as caught:  # the temporary name the atomic writes really use
        atomic_write_by_name(str(out), fail)
    assert error_writing(caught.value, str(out)) and caught.value.filename != str(out)
    assert not error_writing(err(tmp_path / "config.yaml"), str(out))
    assert not error_writing(err(tmp_path / ".m1.safetensors.abc.tmp"), str(out))
    assert not error_writing(err(tmp_path / "other" / ".m[1].safetensors.abc.tmp"), str(out))
    assert not error_writing(OSError(5, "Input/output error"), str(out))  # names no file


def test_naming_the_written_file_names_the_file_asked_for_not_its_temporary_file(tmp_path):
    """A write of a plot failing on its temporary file (or on the file a link names) named that hidden file; an
    error from reading another file keeps its name, and without ``written`` only an unnamed error is named."""
    from evautil.files import naming_the_file

    out = str(tmp_path / "plot.png")
    real = tmp_path / "store" / "real.png"
    real.parent.mkdir()
    link = tmp_path / "link.png"
    link.symlink_to(real)

    def raised(name, error, written=True):
        with pytest.raises(OSError) as caught, naming_the_file(name, written=written):
            raise error
        return caught.value.filename

    assert raised(out, OSError(28, "No space left on device", str(tmp_path / ".plot.png.k2j1.tmp"))) == out
    assert raised(out, OSError(28, "No space left on device")) == out
    assert raised(str(link), OSError(28, "No space left on device", str(real))) == str(link)
    assert raised(out, OSError(13, "Permission denied", str(tmp_path / "metrics.jsonl"))) == str(
        tmp_path / "metrics.jsonl")
    temp = str(tmp_path / ".plot.png.k2j1.tmp")
    assert raised(out, OSError(28, "No space left on device", temp), written=False) == temp


def test_an_output_on_a_read_only_file_system_is_called_that_not_a_missing_permission(tmp_path, monkeypatch):
    """access() refuses a write there as it refuses one without permission: the message sent users to chmod."""
    mounted = tmp_path / "mounted"
    (mounted / "sub").mkdir(parents=True)
    (mounted / "old.json").write_text("{}")
    real_statvfs, real_access = os.statvfs, os.access

    class ReadOnly:
        def __init__(self, result):
            self.result = result

        def __getattr__(self, name):
            return getattr(self.result, name)

        @property
        def f_flag(self):
            return self.result.f_flag | os.ST_RDONLY

    def statvfs(path):
        inside = os.path.realpath(path).startswith(str(mounted))
        return ReadOnly(real_statvfs(path)) if inside else real_statvfs(path)

    monkeypatch.setattr(os, "statvfs", statvfs)
    # what access(W_OK) answers there (EROFS)
    monkeypatch.setattr(os, "access", lambda p, mode, **k: not str(p).startswith(str(mounted)) and real_access(p, mode))
    assert output_path_problem(str(mounted / "new" / "out.json"), "--out", folder=False) == \
        f"--out {mounted / 'new' / 'out.json'}: {mounted} is on a read-only file system"
    assert output_path_problem(str(mounted / "old.json"), "--out", folder=False) == \
        f"--out {mounted / 'old.json'}: {mounted / 'old.json'} is on a read-only file system"
    assert output_path_problem(str(mounted / "sub"), "--report-dir", folder=True) == \
        f"--report-dir {mounted / 'sub'}: {mounted / 'sub'} is on a read-only file system"
    assert output_path_problem(str(tmp_path / "out.json"), "--out", folder=False) == ""  # a writable one beside


def test_a_file_output_ending_with_a_slash_is_refused_for_every_tool(tmp_path):
    """"--json results/" (a folder not made yet) was written as a file named "results" by the benchmarks; only
    predict and export_safetensors refused it, each with a check of its own."""
    new = str(tmp_path / "results") + "/"
    assert output_path_problem(new, "--json", folder=False, example="results.json") == (
        f"--json {new} names a folder (it ends with /); give a file name, e.g. {tmp_path / 'results' / 'results.json'}")
    assert output_path_problem(new, "--plot", folder=False) == \
        f"--plot {new} names a folder (it ends with /); give a file name"
    assert output_path_problem(new, "--out", folder=True) == ""  # a folder output: the "/" is right there
    assert output_path_problem(str(tmp_path / "results.json"), "--json", folder=False) == ""


def test_an_empty_output_path_is_refused_as_empty(tmp_path):
    """An empty path was checked as the current folder: predict --work-dir "" then said "--work-dir : cannot create
    the folder (No such file or directory)", extract_features --out "" "cannot write in --out : ...", and
    export_safetensors --out "" that it "is a folder"."""
    assert output_path_problem("", "--work-dir", folder=True) == "--work-dir is empty; give a folder"
    assert output_path_problem("", "--out", folder=False, example="model.safetensors") == \
        "--out is empty; give a file name, e.g. model.safetensors"
    assert output_path_problem("", "--plot", folder=False) == "--plot is empty; give a file name"


def test_plain_spelling_drops_only_what_cannot_change_the_file(tmp_path):
    """'.' and empty parts go, and 'x/..' where x is a real folder; a '..' after a symbolic link (the parent of its
    target), after a missing name or a file (which fails to open), and a trailing '/' (a folder asked for) stay."""
    (tmp_path / "x").mkdir()
    (tmp_path / "f.mp4").write_bytes(b"")
    os.symlink(tmp_path / "x", tmp_path / "link")
    root = str(tmp_path)
    assert [plain_spelling(p, root) for p in ("v/./a.mp4", "v//a.mp4", "./a.mp4", "x/../v/a.mp4", "x/./../a.mp4")] \
        == ["v/a.mp4", "v/a.mp4", "a.mp4", "v/a.mp4", "a.mp4"]
    assert [plain_spelling(p, root) for p in ("link/../a.mp4", "gone/../a.mp4", "f.mp4/../a.mp4", "../a.mp4")] \
        == ["link/../a.mp4", "gone/../a.mp4", "f.mp4/../a.mp4", "../a.mp4"]
    assert [plain_spelling(p, root) for p in ("a.mp4/", "a.mp4/.", "v/a.mp4")] == ["a.mp4/", "a.mp4/", "v/a.mp4"]
    assert plain_spelling(f"{root}//x/../v/./a.mp4") == f"{root}/v/a.mp4"  # absolute: no folder needed


def test_json_text_escapes_only_the_bytes_of_a_name_that_are_not_utf8():
    import json

    from evautil.text import json_text

    raw = b"/videos/caf\xe9 \xc3\xa9t\xc3\xa9 \xf0\x9f\x8e\xa5.webm"  # one Latin-1 byte, then UTF-8 text
    text = json_text({"path": os.fsdecode(raw)})
    assert text == '{"path": "/videos/caf\\udce9 été 🎥.webm"}'
    assert os.fsencode(json.loads(text.encode("utf-8"))["path"]) == raw
