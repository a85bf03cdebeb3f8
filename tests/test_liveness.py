"""The liveness check's judgement on a fake clock, and its threads over a fake store (engine/liveness.py); real
processes are in tests/test_rank_hang.py."""

from __future__ import annotations

import threading
import time

import pytest

from engine import liveness
from engine.liveness import FAILED, LEFT, Watch, counter_key, failed_line, unanswered_line


def test_a_rank_whose_counter_stops_is_silent_after_the_timeout():
    w = Watch(rank=0, world_size=3, timeout=10, now=0)
    for t in range(0, 30):  # rank 1 beats every second; rank 2 beats until t=5
        w.read([t, min(t, 5)], now=t)
        silent, seconds, store = w.silent(now=t)
        assert not store
        assert silent == ([2] if t >= 15 else []), t
    assert seconds == 29 - 5


def test_a_store_that_does_not_answer_names_its_host_and_no_rank():
    w = Watch(rank=1, world_size=2, timeout=10, now=0)
    w.read([1], now=1)
    for t in range(2, 11):  # no answer from t=1: the ranks' counters cannot be read, they are not blamed
        assert w.silent(now=t) == ([], 0.0, False)
    assert w.silent(now=11) == ([], 10, True)


def test_a_slow_store_does_not_make_the_ranks_look_silent():
    w = Watch(rank=0, world_size=2, timeout=10, now=0)
    w.silent(now=4)
    w.silent(now=8)
    w.read([7], now=9)  # the store answered late, with a counter that moved meanwhile
    w.silent(now=12)
    w.read([7], now=13)  # answered at once, the counter not yet moved
    assert w.silent(now=16) == ([], 0.0, False)


def test_a_judge_that_ran_late_starts_its_count_over():
    # this process was stopped itself (or starved) for a minute: it saw nothing, which says nothing of the others
    w = Watch(rank=0, world_size=2, timeout=10, now=0)
    w.read([1], now=1)
    assert w.silent(now=61) == ([], 0.0, False)
    assert w.silent(now=65) == ([], 0.0, False)
    assert w.silent(now=69)[2] is False and w.silent(now=71)[2] is True  # still no answer: now it counts


def test_a_rank_that_left_is_not_watched():
    w = Watch(rank=0, world_size=2, timeout=10, now=0)
    w.read([LEFT], now=1)
    for t in range(2, 40, 2):
        w.read([LEFT], now=t)
        assert w.silent(now=t) == ([], 0.0, False)


def test_a_rank_that_failed_is_named_and_not_counted_silent():
    w = Watch(rank=0, world_size=3, timeout=10, now=0)
    w.read([1, 1], now=1)
    w.read([FAILED, 2], now=2)
    assert w.failed() == [1]
    for t in range(3, 40, 2):  # rank 1 no longer beats: it is not blamed for silence as well
        w.read([FAILED, t], now=t)
        assert w.silent(now=t) == ([], 0.0, False)


def test_the_line_names_the_silent_ranks_and_the_exit_code():
    assert unanswered_line([1], 120.4).startswith("error: rank 1 has not answered for 120 s (stopped")
    assert "ranks 1, 3 have not answered for 7 s" in unanswered_line([1, 3], 7)
    line = unanswered_line([], 9, "rank 0 (the host of the run's store)")
    assert line.startswith("error: rank 0 (the host of the run's store) has not answered for 9 s")
    assert "exit code 5" in line and "collective timeout" in line


class FakeStore:
    """The store calls the check makes; ``frozen`` set: every call blocks, as on a stopped host."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.lock = threading.Lock()
        self.frozen = threading.Event()

    def _call(self) -> None:
        while self.frozen.is_set():
            time.sleep(0.01)

    def add(self, key: str, n: int) -> int:
        self._call()
        with self.lock:
            self.values[key] = self.values.get(key, 0) + n
            return self.values[key]

    def multi_get(self, keys: list[str]) -> list[bytes]:
        self._call()
        with self.lock:
            return [str(self.values[k]).encode() for k in keys]

    def set(self, key: str, value: str) -> None:
        self._call()
        with self.lock:
            self.values[key] = int(value)


@pytest.fixture
def ended():
    """The lines the check would end the process with, instead of ending it."""
    lines: list[str] = []
    yield lines
    liveness.stop()


def _wait_for(lines: list[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not lines and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_peer_that_stops_beating_ends_the_process_naming_it(ended):
    store = FakeStore()
    liveness.start(store, 0, 2, 0.5, end=ended.append)
    store.add(counter_key(1), 1)  # rank 1 beat once, then nothing
    _wait_for(ended, 5)
    assert ended and ended[0].startswith("error: rank 1 has not answered for"), ended


def test_a_store_whose_calls_block_ends_the_process_naming_its_host(ended):
    store = FakeStore()

    def peer() -> None:  # rank 1 beats until the store freezes
        while not store.frozen.is_set() and not ended:
            store.add(counter_key(1), 1)
            time.sleep(0.05)

    threading.Thread(target=peer, daemon=True).start()
    liveness.start(store, 0, 2, 0.5, end=ended.append)
    time.sleep(0.6)
    assert not ended  # a peer that beats is not silent
    store.frozen.set()
    _wait_for(ended, 5)
    store.frozen.clear()
    assert ended and ended[0].startswith("error: rank 0 (the host of the run's store) has not answered"), ended


def test_stop_marks_this_rank_left_and_ends_nothing(ended):
    store = FakeStore()
    liveness.start(store, 1, 2, 0.5, end=ended.append)
    time.sleep(0.2)
    liveness.stop()
    assert store.values[counter_key(1)] == LEFT
    time.sleep(1)  # past the timeout: rank 0 never beat, but the check is stopped
    assert not ended
    assert not [t for t in threading.enumerate() if t.name.startswith("eva-liveness")]


def test_a_peer_that_failed_ends_the_process_within_a_beat_naming_it(ended):
    store = FakeStore()
    liveness.start(store, 1, 2, 2.0, end=ended.append)

    def rank0() -> None:  # beats for a while, then ends on a failure
        for _ in range(5):
            store.add(counter_key(0), 1)
            time.sleep(0.1)
        store.set(counter_key(0), str(FAILED))

    threading.Thread(target=rank0, daemon=True).start()
    began = time.monotonic()
    _wait_for(ended, 5)
    assert ended == [failed_line([0])], ended
    assert time.monotonic() - began < 1.5  # a beat (0.2 s) after the mark, not the 2 s timeout
    assert ended[0].startswith("error: rank 0 ended early, on a failure or a stop of its own (its line, its "
                               "log_rank0.txt, says why)") and "exit code 5" in ended[0]


def test_a_failed_store_host_waits_until_the_others_have_read_its_mark(ended, monkeypatch):
    """Rank 0 hosts the store without torchrun: its exit closes the store, so it leaves only once the others have
    beaten after its FAILED (their read of the counters follows their beat)."""
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    store, seen = FakeStore(), []

    def rank1() -> None:  # beats every 0.3 s and reads rank 0's counter right after, as the beat thread does
        while not seen:
            store.add(counter_key(1), 1)
            if store.multi_get([counter_key(0)]) == [str(FAILED).encode()]:
                seen.append(time.monotonic())
            time.sleep(0.3)

    store.add(counter_key(0), 0)
    threading.Thread(target=rank1, daemon=True).start()
    liveness.start(store, 0, 2, 3.0, end=ended.append)  # beats every 0.3 s too
    time.sleep(0.5)
    liveness.stop(failed=True)
    left = time.monotonic()
    assert store.values[counter_key(0)] == FAILED
    assert seen and seen[0] <= left, "rank 0 left before rank 1 read its mark"
    assert not ended


def test_a_gloo_or_graceful_stop_marks_left_and_a_rank_not_hosting_the_store_does_not_wait(ended, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")  # torchrun's agent hosts the store
    store = FakeStore()
    liveness.start(store, 0, 2, 10.0, end=ended.append)  # rank 1 never beats: a wait would last 15 s
    time.sleep(0.2)
    began = time.monotonic()
    liveness.stop(failed=True)
    assert store.values[counter_key(0)] == FAILED and time.monotonic() - began < 3
    liveness.start(store, 1, 2, 10.0, end=ended.append)
    time.sleep(0.2)
    liveness.stop()
    assert store.values[counter_key(1)] == LEFT and not ended


def test_off_or_a_single_process_starts_nothing(ended):
    store = FakeStore()
    liveness.start(store, 0, 1, 0.5, end=ended.append)
    liveness.start(store, 1, 2, 0, end=ended.append)  # off: the other ranks are told not to watch this one
    assert store.values == {counter_key(1): LEFT}
    assert not [t for t in threading.enumerate() if t.name.startswith("eva-liveness")]
