"""The wait of a process of several at the rendezvous, bounded and interruptible.

``distributed.init_from_env`` joins the process group as torch's ``init_process_group(env://)`` does: every rank
reaches the store that rank 0 (or torchrun) serves at MASTER_ADDR:MASTER_PORT, then waits there for the others. A
rank whose rank 0 never came up (its port in use, a wrong MASTER_ADDR, a failure at its start) waited for the process
group's timeout, 30 minutes, saying nothing; torch's store retries its connection through interrupted calls in C++,
so SIGTERM and Ctrl-C were not acted on either, and a scheduler's cancel ended it only by SIGKILL.

So the join runs in a daemon thread, and the main thread waits for it on a lock, a wait that signals interrupt: their
handlers run there, and the ones that raise (a stop signal's ``Stopped`` in ``evautil.interrupt.stop_signals_raise``,
a Ctrl-C's KeyboardInterrupt) end the wait at once. After ``EVA_RENDEZVOUS_TIMEOUT_S`` seconds the process ends with
:func:`timeout_line`. A join left waiting (timed out, or interrupted) is told to give up at the exit: its waits
for the other ranks are short calls (:func:`_wait_for`) that it stops making, and the exit waits for the call under
way (``_let_end_quietly``), which a peer ending during the interpreter's finalization woke with a C++ exception that
aborted the process (exit -6, torch's stack trace after the clean line). Its connection to the store is one call of
torch's, which ends at its own timeout: a process interrupted there does not wait for it (no peer can end it).

torch's own rendezvous waited at most the process group's timeout (30 minutes on gloo, 10 on NCCL) and cut a longer
``EVA_RENDEZVOUS_TIMEOUT_S`` short with its traceback. So :func:`meeting_store` makes the store as env:// does, with
a timeout past the setting, and every rank waits in it until all have come; then the store takes the group's
timeout, as env:// sets it, and ``init_process_group`` gets it with that same timeout for its collectives.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import uuid
from datetime import timedelta
from typing import Callable

import torch.distributed as dist
from torch.distributed import constants

from .liveness import set_start, torchrun_hosts_store

__all__ = ["DEFAULT_TIMEOUT_S", "MAX_TIMEOUT_S", "joined_within", "timeout_line", "crowded_line", "other_run_line",
           "group_timeout", "meeting_store"]

# EVA_RENDEZVOUS_TIMEOUT_S's default: long enough for ranks whose start (imports, file checks) lags by minutes, far
# below torch's 30.
DEFAULT_TIMEOUT_S = 300


# EVA_RENDEZVOUS_TIMEOUT_S's most, a week (and the other waits' of ``distributed.wait_settings``): the processes of
# one run that have not met by then are not coming, and a longer value is a typo (1000000000000, a digit or a unit
# too many) that waited in silence for ever.
MAX_TIMEOUT_S = 7 * 24 * 3600

# How often a join's waits for the other ranks (:func:`_wait_for`) look again, and so how soon a join given up
# stops: a short ``store.check``, not a ``store.wait`` with a timeout, which torch logs with a warning on each.
_POLL_S = 0.25

# How much longer than the wait (joined_within) the store's own calls may take: the wait ends first, with its line,
# never torch's timeout with a traceback. A process whose wait ended waits for its store's calls to end too at its
# exit (joined_within): a connection still under way ends within this margin, so keep it short.
_STORE_MARGIN_S = 10
# How long the exit waits at most for a join still under way (_let_end_quietly): a connection that times out
# ends within the margin, later on a loaded machine (seen 5 s past it), and the wait ends as soon as it does.
_EXIT_WAIT_S = _STORE_MARGIN_S + 30


def group_timeout(backend: str) -> timedelta:
    """The collective timeout that ``init_process_group`` gives a group of ``backend`` when given none."""
    nccl = constants.default_pg_nccl_timeout  # None where torch has no NCCL: torch then takes the other
    return nccl if backend == "nccl" and isinstance(nccl, timedelta) else constants.default_pg_timeout


def meeting_store(rank: int, world_size: int, seconds: float, timeout: timedelta) -> dist.Store:
    """The store of the process group, as ``init_process_group(init_method="env://")`` makes it (served by rank 0,
    or by torchrun where it hosts one), once every rank of ``world_size`` has reached it: the connection to it and
    the wait for the others may take ``seconds`` (and a margin) instead of the group's ``timeout``, which the store
    then takes for the run's other calls. The id of this start, which its ranks agreed on there (:func:`_meet`),
    keys what the start writes in the store later (``liveness.this_start``)."""
    waits = timedelta(seconds=seconds + _STORE_MARGIN_S)
    store, _, _ = next(dist.rendezvous("env://", rank, world_size, timeout=waits))
    joining = threading.current_thread()
    if isinstance(joining, _JoinThread):  # from here on its calls are short ones, which end once it is given up
        joining.connected = True
    # Rank 0's own store waits for every connection, but a client only for its own, and a store torchrun hosts
    # for none: without this, rank 1 waited for a missing rank 2 in the group's setup, for the group's timeout.
    set_start(_meet(store, rank, world_size, waits))
    store.set_timeout(timeout)
    return dist.PrefixStore("default_pg", store)  # env:// keeps the group's keys apart from others' so


_KEYS = "eva_rendezvous/"
# Set by srun (one job step) and by mpirun (PMIx): the same for every process of one launch, another for another's.
_LAUNCH_IDS = ("SLURM_JOB_ID", "SLURM_STEP_ID", "PMIX_NAMESPACE")


def _launch(world_size: int) -> str:
    """What every process of this run shares, as rank 0 writes it and the others compare it (without torchrun)."""
    return " ".join([f"WORLD_SIZE={world_size}"] + [f"{n}={os.environ[n]}" for n in _LAUNCH_IDS if n in os.environ])


def _meet(store: dist.Store, rank: int, world_size: int, waits: timedelta) -> str:
    """Wait in ``store`` until every rank of ``world_size`` has come; returns the id of this start of the run's
    processes, which rank 0 made and every rank shares (:func:`liveness.this_start`).

    The store torchrun hosts outlives the processes: a restart (``--max-restarts``) and, without a new
    TORCHELASTIC_RESTART_COUNT, an elastic change of its nodes start new ones there, which read the keys of the
    starts before. So only rank 0, one per start, makes a start id, fresh, and only rank 0 declares its start met;
    a rank that came before it finds the previous start's id (met, or left half met by processes now gone) and is
    sent on to the new one when rank 0 comes. Without torchrun the store is rank 0's own: a rank that finds another
    launch's rank 0 (``_launch``), or a start that met without it, reached another run's store and ends at once."""
    leader, own = _KEYS + "leader", not torchrun_hosts_store()
    if rank == 0:
        start = uuid.uuid4().hex
        previous = store.get(leader).decode().split()[0] if store.check([leader]) else None
        store.set(leader, f"{start} {_launch(world_size)}")
        if previous is not None:  # the ranks waiting in the previous start move on to this one
            store.set(f"{_KEYS}{previous}/next", start)
            store.set(f"{_KEYS}{previous}/go", "next")
        _wait_for(store, f"{_KEYS}{start}/full", waits)
        store.set(f"{_KEYS}{start}/go", "all")
        return start
    _wait_for(store, leader, waits)
    start, launch = store.get(leader).decode().split(" ", 1)
    if own and launch != _launch(world_size):
        raise ValueError(other_run_line(rank, world_size, launch))
    while True:
        go = f"{_KEYS}{start}/go"
        if own or not store.check([go]):  # a start not met yet: this rank's, or one whose rank 0 has gone
            count = store.add(f"{_KEYS}{start}/count", 1) + 1  # processes, rank 0 included
            if count > world_size and own:
                raise ValueError(crowded_line(rank, world_size, count))
            if count == world_size:
                store.set(f"{_KEYS}{start}/full", "1")
            _wait_for(store, go, waits)
            if store.get(go) == b"all":
                return start
        _wait_for(store, f"{_KEYS}{start}/next", waits)  # a previous start: wait for this one's rank 0
        start = store.get(f"{_KEYS}{start}/next").decode()


class _GivenUp(Exception):
    """The join's thread stops waiting: the process that no longer waited for it (timed out, or interrupted) exits."""


class _JoinThread(threading.Thread):
    """The thread of a join (:func:`joined_within`): ``given_up`` once the process that stopped waiting exits, and
    ``connected`` once it reached the store, from when its calls are short (:func:`_wait_for`)."""

    def __init__(self, target: Callable[[], None]) -> None:
        super().__init__(target=target, name="eva-rendezvous", daemon=True)
        self.given_up = threading.Event()
        self.connected = False


def _wait_for(store: dist.Store, key: str, waits: timedelta) -> None:
    """Wait until ``store`` holds ``key``, at most ``waits``, in short looks (:data:`_POLL_S`); in a join's thread
    given up (:class:`_JoinThread`), stop at the next look.

    Raises:
        TimeoutError: ``key`` missing after ``waits``, as ``store.wait`` would (the join's own wait ends first).
    """
    joining = threading.current_thread()
    deadline = time.monotonic() + waits.total_seconds()
    while not store.check([key]):
        if isinstance(joining, _JoinThread) and joining.given_up.is_set():
            raise _GivenUp()
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the store had no {key!r} after {waits.total_seconds():.0f} s")
        time.sleep(_POLL_S)


def other_run_line(rank: int, world_size: int, launch: str) -> str:
    """Why rank ``rank`` of ``world_size`` ends when the rank 0 of the store at MASTER_ADDR:MASTER_PORT wrote another
    ``launch`` (``_launch``) than its own: that store is another run's."""
    meet = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    return (f"rank {rank} of {_launch(world_size)} reached the store at MASTER_ADDR:MASTER_PORT {meet} of another "
            f"run, whose rank 0 was started with {launch}: set MASTER_PORT to a free port, the same for every "
            "process of this run, or end that run")


def crowded_line(rank: int, world_size: int, count: int) -> str:
    """Why rank ``rank`` of ``world_size`` ends when it arrived ``count``-th at the store at MASTER_ADDR:MASTER_PORT:
    a store that more processes reached than the run has is another run's (still running, or stuck at its end),
    whose rank 0 holds the port and this run's rank 0 was refused it, or more processes than the run has were
    started. Joining there waited for the other run's rank 0 and, while that run lived, wrote into its store."""
    meet = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    return (f"rank {rank} of WORLD_SIZE={world_size} is process {count} to reach the store at MASTER_ADDR:MASTER_PORT "
            f"{meet}: another run's rank 0 (still running, or stuck at its end) listens there (set MASTER_PORT to a "
            "free port, the same for every process, or end that run), or more processes than WORLD_SIZE were "
            f"started for this run (give each its own RANK, from 0 to {world_size - 1})")


def joined_within(join: Callable[[], None], seconds: float) -> bool:
    """Run ``join`` in a daemon thread and wait for it at most ``seconds``: False when it is still waiting then; its
    own error raised when it failed; what a signal's handler raises, at once."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            join()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread, which raises it
            failed.append(e)

    thread = _JoinThread(run)
    thread.start()
    try:
        thread.join(min(seconds, threading.TIMEOUT_MAX))
    except BaseException:  # a stop signal or a Ctrl-C: the process ends, and its exit must not abort either
        _give_up(thread, interrupted=True)
        raise
    if failed:
        raise failed[0]
    if thread.is_alive():
        _give_up(thread, interrupted=False)
        return False
    return True


def _give_up(thread: _JoinThread, interrupted: bool) -> None:
    """The process no longer waits for the join in ``thread``: let its exit stop the join and wait for the call
    under way first. A store's call that ends while the interpreter is finalizing (by a peer that ended and closed
    the connection, or by its own timeout) raises a C++ exception that aborts the process (exit -6 after its clean
    line). Once connected, the thread waits for the others in short calls that stop at the exit; before, its
    connection ends within the margin when the wait timed out, and an interrupted process does not wait for it: no
    peer is connected to end it. Until the exit the join goes on: a caller that lives on may still meet."""
    if thread.connected or not interrupted:
        atexit.register(_let_end_quietly, thread, _EXIT_WAIT_S)


def _let_end_quietly(thread: _JoinThread, seconds: float) -> None:
    """Stop the join in ``thread`` and wait at most ``seconds`` for it, with the process's stderr closed meanwhile:
    the process said why it ends, and torch's C++ code logs its store call's end (a timeout, a lost connection)
    with a stack trace."""
    thread.given_up.set()
    sys.stderr.flush()
    kept = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        thread.join(seconds)
    finally:
        os.dup2(kept, 2)
        os.close(kept)


def timeout_line(rank: int, world_size: int, meet: str, seconds: float) -> str:
    """Why rank ``rank`` of ``world_size``, which waited ``seconds`` at ``meet`` (``distributed.rendezvous_address``)
    for the others, ends: what most likely kept them apart, and the variable that sets the wait."""
    if rank == 0 or torchrun_hosts_store():  # the store is up: ranks are missing
        causes = ("another rank has not started or failed at its start (its own line says why), or cannot reach "
                  "that address (its MASTER_ADDR names another host, or a firewall blocks MASTER_PORT)")
    else:
        causes = ("rank 0, which listens there, has not started or failed at its start (its own line says why), "
                  "MASTER_ADDR is not rank 0's host, or a firewall blocks MASTER_PORT; or another rank is missing")
    return (f"rank {rank} of WORLD_SIZE={world_size} waited {seconds:.0f} s at the rendezvous, MASTER_ADDR:MASTER_PORT "
            f"{meet}, without meeting the other processes: {causes}; EVA_RENDEZVOUS_TIMEOUT_S sets how long to "
            f"wait (seconds, {DEFAULT_TIMEOUT_S} by default)")
