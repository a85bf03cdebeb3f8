"""A liveness check between the processes of a run, so that one that hangs does not hold the others for a
collective's timeout (30 minutes on gloo, NCCL's 10-minute watchdog, ``EVA_WAIT_TIMEOUT_MIN`` in the wait group).

A process that dies closes its connections and the others meet that at once (``distributed.lost_peer``); one that
is alive but never answers (SIGSTOP, a frozen node, a node or network gone without closing its sockets) leaves them
waiting. So every rank of a process group runs two daemon threads:

- the beat thread bumps this rank's counter in the run's store (the TCPStore that ``init_process_group(env://)``
  created, through a connection of its own) every ``timeout / 10`` seconds and reads the other ranks' counters;
- the judge thread never touches the store (a store call to a stopped host blocks, whatever its timeout says):
  on this process's own monotonic clock it checks that every other rank's counter moved within ``timeout`` of the
  last answer of the store, and that the store answered within ``timeout``. A rank that went silent, or the
  store's host (rank 0, or torchrun on the first node when torchrun hosts the store), ends this process
  with one line naming it and exit code :data:`UNANSWERED_EXIT_CODE` (``os._exit``: the main thread is usually
  blocked inside the collective that would wait).

What keeps it from ending a healthy run: the counters are bumped by a thread, not by the training step, so a rank
that is slow but alive (rank 0 writing a large checkpoint while the others wait) keeps beating; a store that is
slow for less than ``timeout`` only delays the reads; a judge that itself ran late (this process was stopped or
starved) starts its count over instead of blaming the others; a rank that leaves the run (``stop``, at
``distributed.shutdown``) or runs without the check marks its counter :data:`LEFT` and is not watched; a store
that refuses the connection means its host exited, a death the collectives report, and the check ends quietly.
It cannot see a main thread that deadlocks while its process runs: the collectives' timeouts remain the bound.

A rank of an NCCL run that ends on a failure marks its counter :data:`FAILED` instead (``stop(failed=True)``):
NCCL does not tell the peers that a process left (inside one node they wait in the collective until NCCL's
watchdog ends them, 10 minutes), so the others' judges end their processes within a beat, with one line naming
it. Under torchrun its agent ends them sooner; the marker is for launches without it (srun, mpirun). The host of
the store (rank 0 when no torchrun agent hosts it) waits, for at most a beat and a half, until every watching rank
has beaten once more, and so read the mark, before its exit closes the store. Gloo's collectives fail at once when a
peer closes its connections, so a gloo run's ranks leave with :data:`LEFT`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any, Callable

from torch.distributed import DistStoreError as _StoreTimeout  # a store call past its timeout (not a closed one)

__all__ = ["UNANSWERED_EXIT_CODE", "LEFT", "FAILED", "Watch", "start", "stop", "log_to", "unanswered_line",
           "failed_line", "torchrun_hosts_store", "this_start", "set_start", "counter_key"]

# Exit code of a process that ended because another process of its run stopped answering, or ended early while
# this one waited for it (2: fix the input, 3: non-finite loss, 4: stopped by a signal after a checkpoint).
UNANSWERED_EXIT_CODE = 5
# A counter's value once its rank has left the run, or runs without the check: not watched.
LEFT = -1
# A counter's value once its rank has ended on a failure in a run whose collectives would not tell the others.
FAILED = -2
# Each rank beats (and each judge looks) this many times per timeout.
BEATS_PER_TIMEOUT = 10
_PREFIX = "eva_liveness/"


class Watch:
    """The judgement, without threads or store: fed the other ranks' counters as the store returns them, says
    which ranks have gone silent on one monotonic clock (``now`` arguments)."""

    def __init__(self, rank: int, world_size: int, timeout: float, now: float) -> None:
        self.timeout = timeout
        self.peers = [p for p in range(world_size) if p != rank]
        self.seen: dict[int, int | None] = {p: None for p in self.peers}
        self.changed_at = {p: now for p in self.peers}
        self.answered_at = now  # the store's last answer
        self.judged_at = now

    def read(self, values: list[int], now: float) -> None:
        """The counters of :attr:`peers`, in order, as the store returned them at ``now``."""
        for p, value in zip(self.peers, values):
            if value != self.seen[p]:
                self.seen[p], self.changed_at[p] = value, now
        self.answered_at = now

    def silent(self, now: float) -> tuple[list[int], float, bool]:
        """(the silent ranks, for how long the longest has been silent, whether the store itself is the one that
        does not answer). A judge that ran more than half a timeout late was itself stopped or starved: what it
        did not see says nothing about the others, and the count starts over."""
        if now - self.judged_at > self.timeout / 2:
            self.answered_at = now
            self.changed_at = {p: now for p in self.peers}
        self.judged_at = now
        if now - self.answered_at >= self.timeout:
            return [], now - self.answered_at, True
        # measured up to the store's last answer: a store slower than the beats must not make the ranks look silent
        late = {p: self.answered_at - self.changed_at[p] for p in self.peers if self.seen[p] not in (LEFT, FAILED)}
        silent = sorted(p for p, t in late.items() if t >= self.timeout)
        return silent, max((late[p] for p in silent), default=0.0), False

    def failed(self) -> list[int]:
        """The ranks whose counter says they ended on a failure (:data:`FAILED`)."""
        return [p for p in self.peers if self.seen[p] == FAILED]


def unanswered_line(ranks: list[int], seconds: float, store_host: str | None = None) -> str:
    """The ``error:`` line of a process that ends because ``ranks`` (or the store's host, ``store_host``) did
    not answer for ``seconds``."""
    if store_host is not None:
        who, verb = store_host, "has"
    else:
        who = f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))
        verb = "has" if len(ranks) == 1 else "have"
    return (f"error: {who} {verb} not answered for {seconds:.0f} s (stopped, stuck outside Python, or its node "
            "or network is down): ending this process so the run does not wait for the collective timeout "
            f"(EVA_HEARTBEAT_TIMEOUT_S; exit code {UNANSWERED_EXIT_CODE})")


def failed_line(ranks: list[int]) -> str:
    """The ``error:`` line of a process that ends because ``ranks`` ended early on a failure of their own."""
    who = f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))
    logs = ", ".join(f"log_rank{r}.txt" for r in ranks)
    return (f"error: {who} ended early, on a failure or a stop of its own (its line, its {logs}, says why): "
            "ending this process so the run does not wait in a collective it left for NCCL's timeout "
            f"(exit code {UNANSWERED_EXIT_CODE})")


def torchrun_hosts_store() -> bool:
    """Whether torchrun serves the run's store at MASTER_ADDR:MASTER_PORT (else rank 0 does, inside its process)."""
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


# The id of this start of the run's processes, which they agreed on at the rendezvous (set_start); None before it.
_START: str | None = None


def set_start(start: str | None) -> None:
    """This start's id (``rendezvous.meeting_store``), or None at the end of the run (``distributed.shutdown``)."""
    global _START
    _START = start


def this_start(prefix: str) -> str:
    """``prefix`` followed by this start of the run's processes: the id its ranks agreed on at the rendezvous, else
    (a process group joined without it) ``TORCHELASTIC_RESTART_COUNT``, 0 without torchrun. The store torchrun
    hosts outlives a restart (``--max-restarts``) and an elastic change of its nodes (which keeps the count), so
    every key this start writes there must be its own, or a new rank reads a previous start's (a rank marked failed
    or left)."""
    return f"{prefix}{_START if _START is not None else os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"


def counter_key(rank: int) -> str:
    """The store key of ``rank``'s counter in this start of the run."""
    return f"{this_start(_PREFIX)}{rank}"


def _store_host() -> str:
    if torchrun_hosts_store():
        return f"the run's store (torchrun on the first node, {os.environ.get('MASTER_ADDR', '?')})"
    return "rank 0 (the host of the run's store)"


class _Liveness:
    def __init__(self, store: Any, rank: int, world_size: int, timeout: float,
                 end: Callable[[str], None]) -> None:
        self.store, self.rank, self.timeout, self.end = store, rank, timeout, end
        self.interval = timeout / BEATS_PER_TIMEOUT
        self.watch = Watch(rank, world_size, timeout, time.monotonic())
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.gone = threading.Event()  # the store's host exited: nothing left to watch through it
        self.failed = False  # set by stop(failed=True) before ``stopping``: the counter's last value is FAILED
        # This process hosts the store: its exit closes it, so on a failure it waits for the others to read FAILED.
        self.hosts_store = rank == 0 and not torchrun_hosts_store()
        self.beat = threading.Thread(target=self._beat, name="eva-liveness-beat", daemon=True)
        self.judge = threading.Thread(target=self._judge, name="eva-liveness-judge", daemon=True)

    def _beat(self) -> None:
        key, keys = counter_key(self.rank), [counter_key(p) for p in self.watch.peers]
        try:
            # A connection of its own: a call that blocks on a stopped host must not hold the default store's
            # client, which the main thread uses (new groups, barriers).
            store = self.store.clone() if hasattr(self.store, "clone") else self.store
            for k in keys:  # the counters of ranks that have not beaten yet: multi_get would wait for them
                store.add(k, 0)
            while True:
                try:
                    store.add(key, 1)
                    values = [int(v) for v in store.multi_get(keys)]
                    with self.lock:
                        self.watch.read(values, time.monotonic())
                except _StoreTimeout:  # slow, not gone: the judge decides when that has lasted too long
                    pass
                if self.stopping.wait(self.interval):
                    break
            if self.watch.seen.get(0) != LEFT:  # rank 0 leaving may close the store: a write would fail, noisily
                store.set(key, str(FAILED if self.failed else LEFT))
                if self.failed and self.hosts_store:
                    self._until_read(store, keys)
        except Exception:  # noqa: BLE001 - the host refused or closed the connection: it exited, a death
            self.gone.set()

    def _until_read(self, store: Any, keys: list[str]) -> None:
        """Wait until every rank that still watches has beaten once after this rank's FAILED was written (its read
        of the counters follows its beat at once), or for at most a beat and a half."""
        before = [int(v) for v in store.multi_get(keys)]
        deadline = time.monotonic() + 1.5 * self.interval
        while time.monotonic() < deadline:
            time.sleep(min(0.2, self.interval / 4))
            now = [int(v) for v in store.multi_get(keys)]
            if all(n != b or n in (LEFT, FAILED) for n, b in zip(now, before)):
                time.sleep(min(1.0, self.interval / 4))  # the beat's read of the counters, right after its add
                return

    def _judge(self) -> None:
        while not self.stopping.wait(self.interval) and not self.gone.is_set():
            with self.lock:
                failed = self.watch.failed()
                ranks, seconds, store_silent = self.watch.silent(time.monotonic())
            if self.stopping.is_set():
                return
            if failed:
                self.end(failed_line(failed))
                return
            if ranks or store_silent:
                self.end(unanswered_line(ranks, seconds, _store_host() if store_silent else None))
                return


_ACTIVE: _Liveness | None = None
# Where the line of a process that ends goes besides stderr: the run's logger, once it exists (log_to).
_LOG: SimpleNamespace | None = None


def _end_process(line: str) -> None:
    """Say why this process ends (its log, the console, torchrun's error file), then end it: the main thread is
    blocked in a collective, so nothing else would. A log on a dead filesystem gets a few seconds, not forever."""
    def say() -> None:
        from . import distributed, process_end  # here, not at the top: distributed imports this module

        if _LOG is not None:
            process_end.report_end(_LOG, line)
            # rank 0's exit_status.json, as a run that ends by returning writes it
            process_end.record_exit(_LOG.metrics.output_dir, UNANSWERED_EXIT_CODE)
        else:
            print(line if _ACTIVE is None or _ACTIVE.rank == 0 else f"[rank {_ACTIVE.rank}] {line}",
                  file=sys.stderr, flush=True)
            distributed.record_failure(line)

    teller = threading.Thread(target=say, daemon=True)
    teller.start()
    teller.join(timeout=10)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(UNANSWERED_EXIT_CODE)


def start(store: Any, rank: int, world_size: int, timeout_s: float,
          end: Callable[[str], None] = _end_process) -> None:
    """Start the check for this rank of a process group of ``world_size`` over ``store``; ``timeout_s`` 0 (or a
    single process) starts nothing, and marks this rank as not to be watched by ranks that run the check."""
    global _ACTIVE
    if world_size < 2 or _ACTIVE is not None:
        return
    if timeout_s <= 0:
        store.set(counter_key(rank), str(LEFT))
        return
    _ACTIVE = _Liveness(store, rank, world_size, timeout_s, end)
    _ACTIVE.beat.start()
    _ACTIVE.judge.start()


def log_to(metrics: Any, ctx: Any) -> None:
    """Write the line of a process that ends to the run's logger ``metrics`` (``process_end.report_end``)."""
    global _LOG
    if _ACTIVE is not None:
        _LOG = SimpleNamespace(metrics=metrics, ctx=ctx)


def stop(failed: bool = False) -> None:
    """Stop the check at the end of a run (or of a test): this rank's counter says it left, or with ``failed`` that
    it ended on a failure (the others then end too); a beat thread stuck in a store call is not waited for (a
    daemon)."""
    global _ACTIVE, _LOG
    active, _ACTIVE, _LOG = _ACTIVE, None, None
    if active is not None:
        active.failed = failed
        active.stopping.set()
        active.judge.join(timeout=1)
        active.beat.join(timeout=2 + (2 * active.interval if failed and active.hosts_store else 0))
