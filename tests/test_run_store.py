"""The keys of the run's store (engine/liveness.py's counters, engine/rendezvous.py's count of arrivals), in a store
that outlives one start of the run's processes or is another run's.

torchrun hosts the store in its own process, which outlives a restart of the processes (``--max-restarts``) and an
elastic change of its nodes: a restarted rank read the counters of the previous start, so a rank that had ended on a
failure was taken for failed again at once, and one that had left was never watched; the keys were of
TORCHELASTIC_RESTART_COUNT, which an elastic change keeps, and now of an id rank 0 makes at each start. Launched
without torchrun, a rank whose MASTER_PORT another run's rank 0 held joined that run's store, where every process had
arrived already, and waited there for the rendezvous's timeout with a line blaming this run's rank 0; or, where that
run's ranks had not all arrived, took the place of one of them.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import torch.distributed as dist

from engine import liveness, rendezvous
from engine.liveness import counter_key
from tests.test_liveness import _wait_for
from tests.test_rank_failure import _free_port


@pytest.fixture
def ended(monkeypatch):
    """torchrun's environment at its first start; the lines the check would end the process with."""
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    liveness.set_start(None)  # no start agreed at a rendezvous: the keys are of the restart count
    lines: list[str] = []
    yield lines
    liveness.stop()
    liveness.set_start(None)


def _ended_while_rank1_is_back(store: dist.Store, ended: list[str]) -> list[str]:
    """The lines rank 0's check ended with (``ended``) while watching, for 1.5 s, a rank 1 that is back a little after
    rank 0 and beats: none is right."""
    beating = threading.Event()

    def rank1() -> None:
        time.sleep(0.5)
        while not beating.is_set():
            store.add(counter_key(1), 1)
            time.sleep(0.05)

    threading.Thread(target=rank1, daemon=True).start()
    try:
        liveness.start(store, 0, 2, 2.0, end=ended.append)  # beats and judges every 0.2 s
        _wait_for(ended, 1.5)
    finally:
        beating.set()
    return ended


def test_a_rank_that_failed_before_a_restart_is_not_taken_for_failed_after_it(ended, monkeypatch):
    store = dist.HashStore()  # torchrun's store, shared by both starts
    liveness.start(store, 1, 2, 2.0, end=ended.append)
    liveness.stop(failed=True)  # start 0: rank 1 ends on a failure, its counter says so
    assert store.get(counter_key(1)) == b"-2"

    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert _ended_while_rank1_is_back(store, ended) == []  # start 1's rank 1


def test_a_rank_that_left_before_a_restart_is_watched_after_it(ended, monkeypatch):
    store = dist.HashStore()
    liveness.start(store, 1, 2, 2.0, end=ended.append)
    liveness.stop()  # start 0: rank 1 leaves, its counter says it is not to be watched
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    liveness.start(store, 0, 2, 0.5, end=ended.append)  # start 1: rank 1 never beats
    _wait_for(ended, 5)
    assert ended and ended[0].startswith("error: rank 1 has not answered for"), ended


def _meets(rank: int, world_size: int, seconds: float) -> bool:
    """Whether ``rank`` gets through ``rendezvous.meeting_store`` within ``seconds`` (a rank still waiting is left
    to its daemon thread)."""
    return rendezvous.joined_within(lambda: rendezvous.meeting_store(rank, world_size, 30, rendezvous.group_timeout(
        "gloo")), seconds)


def _torchruns_store(monkeypatch) -> dist.TCPStore:
    """The store torchrun hosts for the run, at MASTER_ADDR:MASTER_PORT, outliving every start of its processes."""
    port = _free_port()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    return dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)


def _all_meet(world_size: int) -> str:
    """Ranks 0 to ``world_size - 1`` meet, each in a thread (as processes would); the id of their start."""
    waiting = [threading.Thread(target=_meets, args=(rank, world_size, 20), daemon=True) for rank in range(world_size)]
    for thread in waiting:
        thread.start()
    for thread in waiting:
        thread.join(20)
    return liveness.this_start("")


@pytest.mark.parametrize("restart_count", ["1", "0"], ids=["restart", "elastic-change"])
def test_a_new_start_waits_at_the_rendezvous_for_the_others_of_its_own_start(ended, monkeypatch, restart_count):
    """A restart (--max-restarts) counts up TORCHELASTIC_RESTART_COUNT; an elastic change of the nodes starts the
    processes anew with the same count, and the new rank 1 found the previous start met and went on alone."""
    launcher = _torchruns_store(monkeypatch)  # held: it outlives both starts
    first = _all_meet(2)  # start 0: both ranks meet

    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", restart_count)
    assert not _meets(1, 2, 1.0)  # the next start: rank 1 alone waits for rank 0
    assert _meets(0, 2, 20)  # and meets it when it comes
    assert liveness.this_start("") != first  # its keys are its own
    assert launcher.check([f"eva_rendezvous/{liveness.this_start('')}go"])


def test_an_elastic_change_does_not_read_the_previous_starts_marks(ended, monkeypatch):
    """Rank 1 ended on a failure; the nodes change and torchrun starts the processes anew, with the same
    TORCHELASTIC_RESTART_COUNT: the new rank 0 read the old rank 1's mark and ended at once, blaming it."""
    launcher = _torchruns_store(monkeypatch)
    _all_meet(2)
    liveness.start(launcher, 1, 2, 2.0, end=ended.append)
    liveness.stop(failed=True)  # the first start's rank 1 ends on a failure, its counter says so
    assert launcher.get(counter_key(1)) == b"-2"

    _all_meet(2)  # the second start, same restart count
    assert _ended_while_rank1_is_back(launcher, ended) == []  # the second start's rank 1


def _another_run(monkeypatch, **env: str) -> tuple[dist.TCPStore, threading.Thread]:
    """Another run's rank 0 at MASTER_PORT, started with ``env``, waiting there for its rank 1 (not arrived)."""
    for var in ("TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT"):  # launched without torchrun
        monkeypatch.delenv(var, raising=False)
    other = _torchruns_store(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def rank0() -> None:  # a connection of its own, as a process has; it waits 5 s for its rank 1
        try:
            rendezvous._meet(dist.TCPStore("127.0.0.1", other.port, is_master=False), 0, 2, timedelta(seconds=5))
        except dist.DistStoreError:
            pass

    waiting = threading.Thread(target=rank0, daemon=True)
    waiting.start()
    other.wait(["eva_rendezvous/leader"], timedelta(seconds=20))
    return other, waiting


@pytest.mark.parametrize("theirs, ours, launch", [
    ({"SLURM_JOB_ID": "7"}, {"SLURM_JOB_ID": "8", "WORLD_SIZE": "2"}, "WORLD_SIZE=2 SLURM_JOB_ID=7"),
    ({}, {"WORLD_SIZE": "4"}, "WORLD_SIZE=2"),
], ids=["another-job", "another-world-size"])
def test_a_rank_that_reaches_a_store_whose_run_has_not_met_ends_without_joining_it(monkeypatch, theirs, ours,
                                                                                   launch):
    """Another run (its rank 1 not arrived yet) holds the port: this run's rank 1 took the place of that run's rank 1,
    whose arrival then failed. Where the launches differ (srun's job, the number of processes) it ends at once."""
    other, _ = _another_run(monkeypatch, **theirs)
    for name, value in ours.items():
        monkeypatch.setenv(name, value)
    world_size = int(ours["WORLD_SIZE"])
    with pytest.raises(ValueError) as raised:
        _meets(1, world_size, 20)
    port = other.port
    assert str(raised.value) == (
        f"rank 1 of {rendezvous._launch(world_size)} reached the store at MASTER_ADDR:MASTER_PORT 127.0.0.1:{port} "
        f"of another run, whose rank 0 was started with {launch}: set MASTER_PORT to a free port, the same for every "
        "process of this run, or end that run")
    start = other.get("eva_rendezvous/leader").decode().split()[0]
    assert not other.check([f"eva_rendezvous/{start}/count"])  # the other run's place is still free


def test_a_rank_that_reaches_another_runs_store_ends_at_once_naming_the_port(monkeypatch):
    other, rank0 = _another_run(monkeypatch)
    rendezvous._meet(other, 1, 2, timedelta(seconds=20))  # its rank 1 comes: that run met
    rank0.join(20)

    with pytest.raises(ValueError) as raised:  # this run's rank 1, whose rank 0 was refused the port
        _meets(1, 2, 20)
    assert str(raised.value) == (
        f"rank 1 of WORLD_SIZE=2 is process 3 to reach the store at MASTER_ADDR:MASTER_PORT 127.0.0.1:{other.port}: "
        "another run's rank 0 (still running, or stuck at its end) listens there (set MASTER_PORT to a free port, the "
        "same for every process, or end that run), or more processes than WORLD_SIZE were started for this run (give "
        "each its own RANK, from 0 to 1)")
