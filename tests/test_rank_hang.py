"""Two CPU processes (gloo) of train.py where one process stops answering in the middle of an epoch (SIGSTOP):
the other ends within seconds, naming it (engine/liveness.py), instead of waiting for the collective's timeout
(30 minutes on gloo). A rank that is only slow (longer than the liveness timeout) does not end the run.

The processes are started as a scheduler starts them (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment), each
in a process group of its own, so that the stopped one and its decode workers are killed afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.liveness import BEATS_PER_TIMEOUT, UNANSWERED_EXIT_CODE
from tests.conftest import ROOT, child_env
from tests.test_rank_failure import _free_port, _opts
from tests.video_fixtures import synthetic_dataset

pytestmark = pytest.mark.slow

TIMEOUT_S = 6
# The stopped rank's last beat (or the store's last answer) can come up to one beat interval before it writes its
# mark, and the other rank counts from that beat: it may end that much sooner than TIMEOUT_S after the mark.
EARLIEST_END_S = TIMEOUT_S - TIMEOUT_S / BEATS_PER_TIMEOUT - 0.05
# train.main, with rank HANG_RANK at its HANG_AT-th training batch of the first epoch writing the time to HANG_MARK
# and then stopping itself (HANG_KIND "stop": SIGSTOP, as a debugger or a frozen node would) or sleeping HANG_KIND
# seconds in its main thread (a rank that is slow but alive, as rank 0 writing a large checkpoint).
WRAPPER = r'''
import os, signal, sys, time
sys.path.insert(0, os.environ["REPO"])
import train
if __name__ == "__main__":  # the decode workers import this module: they must not train
    from dali_pipelines import loader as ld
    orig_iter = ld.VideoLoader.__iter__
    hang_rank, hang_at = int(os.environ["HANG_RANK"]), int(os.environ["HANG_AT"])
    def iterate(self):
        for n, batch in enumerate(orig_iter(self), 1):
            if self.training and n == hang_at and self.epoch == 0 and int(os.environ["RANK"]) == hang_rank:
                with open(os.environ["HANG_MARK"], "w") as f:
                    f.write(str(time.time()))
                if os.environ["HANG_KIND"] == "stop":
                    os.kill(os.getpid(), signal.SIGSTOP)
                else:
                    time.sleep(float(os.environ["HANG_KIND"]))
            yield batch
    ld.VideoLoader.__iter__ = iterate
    sys.exit(train.main(sys.argv[1:]))
'''


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synthetic_dataset(tmp_path_factory, "synth_hang", 4, 2, num_frames=8, size=(32, 24))


def _start(tmp_path: Path, data: Path, hang_rank: int, kind: str) -> tuple[Path, list[subprocess.Popen]]:
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    out = tmp_path / "out"
    env = child_env(REPO=str(ROOT), HANG_RANK=str(hang_rank), HANG_AT="2", HANG_KIND=kind,
                    HANG_MARK=str(tmp_path / "hang_mark"), EVA_HEARTBEAT_TIMEOUT_S=str(TIMEOUT_S),
                    OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2")
    cmd = [sys.executable, str(script), "--cfg", str(ROOT / "configs" / "demo.yaml"), "--opts", *_opts(data, out)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, process_group=0)
             for r in (0, 1)]
    return out, procs


def _end_all(procs: list[subprocess.Popen]) -> None:
    """Kill what is left (a stopped process takes SIGKILL), with its decode workers (its process group)."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait(timeout=30)


def _survivor_ends(tmp_path: Path, data: Path, hang_rank: int) -> tuple[Path, subprocess.CompletedProcess, float]:
    """The other rank's end, and how long after the stopped rank stopped it came."""
    out, procs = _start(tmp_path, data, hang_rank, "stop")
    survivor, stopped = procs[1 - hang_rank], procs[hang_rank]
    try:
        # generous deadline: the start of two processes takes ~10 s on 2 cores; the collective's timeout is 30 min
        stdout, stderr = survivor.communicate(timeout=120)
        ended = time.time()
        assert stopped.poll() is None, "the stopped rank was expected to be still there, stopped"
    finally:
        _end_all(procs)
    mark = tmp_path / "hang_mark"
    assert mark.is_file(), stderr[-3000:]
    return out, subprocess.CompletedProcess(survivor.args, survivor.returncode, stdout, stderr), \
        ended - float(mark.read_text())


def test_a_stopped_rank_is_named_and_the_other_ends_within_seconds(tmp_path, dataset):
    out, r0, waited = _survivor_ends(tmp_path, dataset, hang_rank=1)
    print(f"rank 0 ended {waited:.1f} s after rank 1 stopped (timeout {TIMEOUT_S} s)")
    assert r0.returncode == UNANSWERED_EXIT_CODE, (r0.stdout + r0.stderr)[-3000:]
    assert EARLIEST_END_S <= waited < TIMEOUT_S + 20
    line = "error: rank 1 has not answered for"
    assert line in r0.stdout, (r0.stdout + r0.stderr)[-3000:]  # rank 0's console line, without a rank prefix
    assert line in (out / "log_rank0.txt").read_text()
    status = json.loads((out / "exit_status.json").read_text())  # was: none written (os._exit)
    assert status == {"exit_code": 5, "meaning": "another process of the run stopped answering or ended early"}


def test_a_stopped_store_host_is_named_by_the_other_rank(tmp_path, dataset):
    # rank 0 hosts the TCPStore: stopped, it answers no store call of the other rank, which must not block it
    out, r1, waited = _survivor_ends(tmp_path, dataset, hang_rank=0)
    print(f"rank 1 ended {waited:.1f} s after rank 0 stopped (timeout {TIMEOUT_S} s)")
    assert r1.returncode == UNANSWERED_EXIT_CODE, r1.stderr[-3000:]
    assert EARLIEST_END_S <= waited < TIMEOUT_S + 20
    line = "error: rank 0 (the host of the run's store) has not answered for"
    assert f"[rank 1] {line}" in r1.stderr, r1.stderr[-3000:]
    assert line in (out / "log_rank1.txt").read_text()


def test_a_rank_slower_than_the_timeout_but_alive_does_not_end_the_run(tmp_path, dataset):
    # rank 0 (the store's host) sleeps in its main thread for longer than the timeout while rank 1 waits for it
    out, procs = _start(tmp_path, dataset, 0, str(TIMEOUT_S * 1.5))
    try:
        ends = [p.communicate(timeout=180) for p in procs]
    finally:
        _end_all(procs)
    assert (tmp_path / "hang_mark").is_file()
    for p, (stdout, stderr) in zip(procs, ends):
        assert p.returncode == 0, (stdout + stderr)[-3000:]
        assert "has not answered" not in stdout + stderr
    assert "has not answered" not in (out / "log_rank0.txt").read_text() + (out / "log_rank1.txt").read_text()
