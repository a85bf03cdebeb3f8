"""A process of a run of two (gloo) that waits alone at the rendezvous, as when rank 0 never came up (its port in
use, a wrong MASTER_ADDR, a crash at its start): it waited in torch's store for the process group's timeout (30
minutes), deaf to SIGTERM and Ctrl-C, so a scheduler's cancel ended it only by SIGKILL. Now it ends after
EVA_RENDEZVOUS_TIMEOUT_S with one line naming where it waited, and at once on a stop signal or a Ctrl-C, with the
usual line.

The process is train.py started as a scheduler starts rank 1 (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the
environment), with a MASTER_PORT that nothing listens on; the deadlines below are hang checks, not timings.
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

from evautil.interrupt import STOPPED_EXIT_STATUS
from tests.conftest import ROOT, child_env
from tests.test_rank_failure import _free_port, _opts
from tests.video_fixtures import synthetic_dataset

pytestmark = pytest.mark.slow

# train.main, touching JOIN_MARK when the rendezvous begins (torch's env:// rendezvous is called), so that a
# signal is sent while the process waits there, not while it imports torch.
WRAPPER = r'''
import os, signal, sys
sys.path.insert(0, os.environ["REPO"])
if __name__ == "__main__":  # a shell that runs the tests in the background starts its children with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
import train
if __name__ == "__main__":
    import torch.distributed as dist
    meeting = dist.rendezvous
    def rendezvous(*args, **kwargs):
        open(os.environ["JOIN_MARK"], "w").close()
        return meeting(*args, **kwargs)
    dist.rendezvous = rendezvous
    if os.environ.get("FINALIZING_MARK"):  # the interpreter's finalization lasts 5 s, marked: a peer ends then
        class Finalizing:
            def __del__(self, mark=os.environ["FINALIZING_MARK"], touch=os.open, flags=os.O_CREAT | os.O_WRONLY,
                        sleep=__import__("time").sleep):
                touch(mark, flags)
                sleep(5)
        finalizing = Finalizing()  # cleared with __main__'s names, once the interpreter is finalizing
    sys.exit(train.main(sys.argv[1:]))
'''


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synthetic_dataset(tmp_path_factory, "synth_rendezvous", 4, 2, num_frames=8, size=(32, 24))


def _lone_rank(tmp_path: Path, data: Path, rank: int, **env: str) -> tuple[subprocess.Popen, int]:
    """Rank ``rank`` of a run of two, started without the other, in a process group of its own; and its
    MASTER_PORT."""
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    port = _free_port()
    env = child_env(REPO=str(ROOT), OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                    WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), JOIN_MARK=str(tmp_path / "joining"), **env)
    cmd = [sys.executable, str(script), "--cfg", str(ROOT / "configs" / "demo.yaml"),
           "--opts", *_opts(data, tmp_path / "out")]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            process_group=0), port


def _waiting(tmp_path: Path, data: Path, rank: int, port: int, world_size: int) -> subprocess.Popen:
    """Rank ``rank`` of a run of ``world_size`` at MASTER_PORT ``port``, once it waits at the rendezvous."""
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    mark = tmp_path / f"joining{rank}"
    env = child_env(REPO=str(ROOT), OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                    WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank), JOIN_MARK=str(mark),
                    FINALIZING_MARK=str(tmp_path / f"finalizing{rank}"), EVA_HEARTBEAT_TIMEOUT_S="0")
    cmd = [sys.executable, str(script), "--cfg", str(ROOT / "configs" / "demo.yaml"),
           "--opts", *_opts(data, tmp_path / f"out{rank}")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            process_group=0)
    _wait_for_file(mark, proc)
    return proc


def _wait_for_file(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120  # the start takes seconds on 2 cores
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.exists(), f"{path.name} was not reached: {proc.poll()}"


def _ended(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    """The process's end; one still waiting after a minute is killed and fails the test (without the bound it
    waited 30 minutes)."""
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the lone rank was still waiting at the rendezvous a minute later")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("rank, prefix, causes", [
    (1, "[rank 1] ", "rank 0, which listens there, has not started or failed at its start (its own line says why), "
                     "MASTER_ADDR is not rank 0's host, or a firewall blocks MASTER_PORT; or another rank is missing"),
    (0, "", "another rank has not started or failed at its start (its own line says why), or cannot reach that "
            "address (its MASTER_ADDR names another host, or a firewall blocks MASTER_PORT)"),
], ids=["rank1", "rank0"])
def test_a_lone_rank_ends_after_the_rendezvous_timeout_with_one_line(tmp_path, dataset, rank, prefix, causes):
    """Rank 1 alone finds no store; rank 0 alone serves it, but no other rank comes."""
    proc, port = _lone_rank(tmp_path, dataset, rank, EVA_RENDEZVOUS_TIMEOUT_S="1")
    done = _ended(proc)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.splitlines() == [
        f"{prefix}error: rank {rank} of WORLD_SIZE=2 waited 1 s at the rendezvous, MASTER_ADDR:MASTER_PORT "
        f"127.0.0.1:{port} (loopback: reachable from this node only), without meeting the other processes: {causes}; "
        "EVA_RENDEZVOUS_TIMEOUT_S sets how long to wait (seconds, 300 by default)"]
    assert done.stdout == "" and not (tmp_path / "out").exists()  # refused before the run opened OUTPUT


@pytest.mark.parametrize("sig, line, code", [
    (signal.SIGTERM, "[rank 1] stopped: SIGTERM received outside the training steps", STOPPED_EXIT_STATUS),
    (signal.SIGINT, "interrupted: the run stopped where it was, without a checkpoint", -signal.SIGINT),
], ids=["SIGTERM", "SIGINT"])
def test_a_lone_rank_ends_at_once_on_a_stop_signal_or_ctrl_c_at_the_rendezvous(tmp_path, dataset, sig, line, code):
    proc, _ = _lone_rank(tmp_path, dataset, 1)  # the default wait, 300 s: the signal must end it
    mark = tmp_path / "joining"
    deadline = time.monotonic() + 120  # the start takes seconds on 2 cores
    while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mark.exists(), f"the rank did not reach the rendezvous: {proc.poll()}"
    time.sleep(1)  # inside torch's store, retrying its connection to rank 0
    proc.send_signal(sig)
    done = _ended(proc)
    assert done.returncode == code, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), done.stderr[-3000:]


# A process of a run that only joins (engine.distributed.init_from_env) and sums a tensor over the group, with
# torch's own process-group timeout (30 minutes on gloo) cut to TORCH_TIMEOUT_S seconds, so that a wait past it
# takes seconds, not half an hour. Prints the sum and the store's timeout once joined; a refusal's line on stderr.
JOINER = r'''
import datetime, json, os, sys
import torch
import torch.distributed as dist
from torch.distributed import constants, distributed_c10d
short = datetime.timedelta(seconds=float(os.environ["TORCH_TIMEOUT_S"]))
constants.default_pg_timeout = distributed_c10d.default_pg_timeout = short
from engine import distributed
try:
    distributed.init_from_env("cpu")
except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
total = torch.ones(1)
dist.all_reduce(total)
store = distributed_c10d._get_default_store()
print(json.dumps({"sum": total.item(), "store_timeout_s": store.timeout.total_seconds()}))
distributed.shutdown()
'''


def _joiners(tmp_path: Path, ranks: tuple[int, ...], world_size: int, torch_s: float, rendezvous_s: int
             ) -> tuple[list[subprocess.CompletedProcess], int]:
    """Ranks ``ranks`` of a run of ``world_size`` (the others never start), each to its end; and the port."""
    script = tmp_path / "joiner.py"
    script.write_text(JOINER)
    port = _free_port()
    procs = []
    for rank in ranks:
        env = child_env(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                        RANK=str(rank), LOCAL_RANK=str(rank), TORCH_TIMEOUT_S=str(torch_s),
                        EVA_RENDEZVOUS_TIMEOUT_S=str(rendezvous_s), EVA_HEARTBEAT_TIMEOUT_S="0")
        procs.append(subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, process_group=0))
    return [_ended(proc) for proc in procs], port


@pytest.mark.parametrize("ranks, world_size", [((1,), 2), ((0,), 2), ((0, 1), 3)],
                         ids=["rank1-alone", "rank0-alone", "rank2-missing"])
def test_a_rendezvous_timeout_past_torchs_own_is_waited_in_full(tmp_path, ranks, world_size):
    """EVA_RENDEZVOUS_TIMEOUT_S above the process group's timeout: torch's store (a rank 1 without rank 0, a rank 0
    without the others) or gloo's setup (rank 1 with rank 0, without rank 2) cut the wait at torch's timeout with
    its traceback. Now each rank waits the setting and ends with its one line."""
    done, port = _joiners(tmp_path, ranks, world_size, torch_s=1, rendezvous_s=5)
    for rank, end in zip(ranks, done):
        assert end.returncode == 2 and "Traceback" not in end.stderr, end.stderr[-3000:]
        assert end.stderr.startswith(f"error: rank {rank} of WORLD_SIZE={world_size} waited 5 s at the rendezvous, "
                                     f"MASTER_ADDR:MASTER_PORT 127.0.0.1:{port} (loopback"), end.stderr[-3000:]
        assert end.stderr.count("\n") == 1 and end.stdout == ""


def test_ranks_that_meet_keep_torchs_timeout_for_what_follows_the_join(tmp_path):
    """The rendezvous's own wait does not outlive it: once joined, the store has the process group's timeout, as
    torch's env:// rendezvous leaves it, and the group sums over both ranks."""
    done, _ = _joiners(tmp_path, (0, 1), 2, torch_s=7, rendezvous_s=60)
    for end in done:
        assert end.returncode == 0, end.stderr[-3000:]
        assert json.loads(end.stdout) == {"sum": 2.0, "store_timeout_s": 7.0}


def test_a_process_whose_rendezvous_wait_ended_lets_the_stores_call_end_before_it_exits(tmp_path):
    """After the wait's line, the store's call still runs in its thread for up to the margin; a peer that ends then
    closes the connection and wakes it while the interpreter finalizes, whose C++ exception aborted the process
    (exit -6 after its clean line). The exit now waits for that call: here a call that ends 3 s after the wait."""
    marker = tmp_path / "call-ended"
    script = tmp_path / "waits.py"
    script.write_text(
        "import sys, time\n"
        "from engine import rendezvous\n"
        "def join():\n"
        "    time.sleep(3)\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "print(rendezvous.joined_within(join, 0.1))\n")
    end = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=child_env(),
                         capture_output=True, text=True, timeout=120)
    assert end.returncode == 0 and end.stdout == "False\n", end.stderr[-3000:]
    assert marker.exists()


@pytest.mark.parametrize("sig, line, code", [
    (signal.SIGTERM, "[rank 1] stopped: SIGTERM received outside the training steps", STOPPED_EXIT_STATUS),
    (signal.SIGINT, "interrupted: the run stopped where it was, without a checkpoint", -signal.SIGINT),
], ids=["SIGTERM", "SIGINT"])
def test_a_rank_stopped_at_the_rendezvous_ends_cleanly_when_a_peer_ends_as_it_exits(tmp_path, dataset, sig, line,
                                                                                    code):
    """Rank 1 waits in rank 0's store (rank 2 never comes) and is stopped; rank 0 ends while rank 1's interpreter
    finalizes, as when a Ctrl-C or a scheduler's cancel reaches every process at once. The store's call, left
    running in its thread, woke then with a lost connection, whose C++ exception aborted the process after its
    line (exit -6). Now the call ends before the exit, and rank 1 ends with its line and its signal's exit code."""
    port = _free_port()
    rank0 = _waiting(tmp_path, dataset, 0, port, 3)
    rank1 = _waiting(tmp_path, dataset, 1, port, 3)
    try:
        time.sleep(1)  # inside rank 0's store, waiting for rank 0's word that all have come
        rank1.send_signal(sig)
        _wait_for_file(tmp_path / "finalizing1", rank1)
    finally:
        os.killpg(rank0.pid, signal.SIGKILL)  # its store's connections close
        rank0.communicate()
    done = _ended(rank1)
    assert done.returncode == code, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), done.stderr[-3000:]
