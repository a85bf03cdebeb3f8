"""The keys of the run's store (engine/liveness.py's counters, engine/rendezvous.py's count of arrivals), in a store
that outlives one start of the run's processes or is another run's.

torchrun hosts the store in its own process, which outlives a restart of the processes (``--max-restarts``), and
tells each start its number in TORCHELASTIC_RESTART_COUNT: a restarted rank read the counters of the previous start,
so a rank that had ended on a failure was taken for failed again at once, and one that had left was never watched.
Launched
without torchrun, a rank whose MASTER_PORT another run's rank 0 held joined that run's store, where every process had
arrived already, and waited there for the rendezvous's timeout with a line blaming this run's rank 0.
"""

from __future__ import annotations

import threading
import time

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
    lines: list[str] = []
    yield lines
    liveness.stop()


def test_a_rank_that_failed_before_a_restart_is_not_taken_for_failed_after_it(ended, monkeypatch):
    store = dist.HashStore()  # torchrun's store, shared by both starts
    liveness.start(store, 1, 2, 2.0, end=ended.append)
    liveness.stop(failed=True)  # start 0: rank 1 ends on a failure, its counter says so
    assert store.get(counter_key(1)) == b"-2"

    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    beating = threading.Event()

    def rank1() -> None:  # start 1: rank 1 is back a little after rank 0, and beats
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
    assert ended == []


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


def test_a_restarted_rank_waits_at_the_rendezvous_for_the_others_of_its_own_start(ended, monkeypatch):
    port = _free_port()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    launcher = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)  # outlives both starts
    waiting = [threading.Thread(target=_meets, args=(rank, 2, 20), daemon=True) for rank in (0, 1)]
    for thread in waiting:  # start 0: both ranks meet
        thread.start()
    for thread in waiting:
        thread.join(20)
    assert launcher.get(liveness.this_start("eva_rendezvous/") + "count") == b"2"

    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert not _meets(1, 2, 1.0)  # start 1: rank 1 alone waits for rank 0
    assert _meets(0, 2, 20)
    assert launcher.get(liveness.this_start("eva_rendezvous/") + "count") == b"2"


def test_a_rank_that_reaches_another_runs_store_ends_at_once_naming_the_port(monkeypatch):
    for var in ("TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT"):  # launched without torchrun
        monkeypatch.delenv(var, raising=False)
    port = _free_port()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    other = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)  # another run's rank 0
    arrived = liveness.this_start("eva_rendezvous/")
    other.add(arrived + "count", 2)  # its two ranks met there, as meeting_store leaves it
    other.set(arrived + "all", "1")

    with pytest.raises(ValueError) as raised:  # this run's rank 1, whose rank 0 was refused the port
        _meets(1, 2, 20)
    assert str(raised.value) == (
        f"rank 1 of WORLD_SIZE=2 is process 3 to reach the store at MASTER_ADDR:MASTER_PORT 127.0.0.1:{port}: another "
        "run's rank 0 (still running, or stuck at its end) listens there (set MASTER_PORT to a free port, the same "
        "for every process, or end that run), or more processes than WORLD_SIZE were started for this run (give "
        "each its own RANK, from 0 to 1)")
    assert other.get(arrived + "count") == b"3"


def test_under_torchrun_a_store_with_more_arrivals_than_ranks_is_still_this_runs(ended, monkeypatch):
    """torchrun made the store for this run (an elastic change of its nodes restarts the processes without
    a new TORCHELASTIC_RESTART_COUNT): no other run can hold it."""
    port = _free_port()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    launcher = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)
    arrived = liveness.this_start("eva_rendezvous/")
    launcher.add(arrived + "count", 2)
    launcher.set(arrived + "all", "1")
    assert _meets(1, 2, 20)
