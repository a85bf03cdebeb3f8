"""CPU time and memory of the benchmark's process tree, and waiting for it to go quiet.

The loaders under test spread their work over DALI's threads, the main process and decode worker processes, all in
the benchmark process's tree: :class:`ProcessTreeMonitor` samples that tree's CPU time (split by kind) and resident
memory while a measurement runs, and :func:`wait_until_idle` keeps one loader's background refill out of the next
one's timing.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Iterable

__all__ = ["KIND_DALI", "KIND_MAIN", "KIND_WORKERS", "ProcessTreeMonitor", "wait_until_idle"]

KIND_DALI, KIND_MAIN, KIND_WORKERS = "DALI threads", "main process, other threads", "worker processes"
_THREAD_DALI, _THREAD_OTHER = "thread: DALI", "thread: other"  # the monitored process's threads, by name


class ProcessTreeMonitor:
    """Samples the CPU time and resident memory of a process and all its descendants in a background thread.

    DataLoader workers and DALI threads live in the tree of the benchmark process, so this measures the loader's
    CPU use. Usage::

        with ProcessTreeMonitor() as mon:
            ...work...
        mon.cpu_util   # CPU-seconds per wall second (1.0 = one core fully busy)
        mon.peak_rss   # bytes, high-water of the summed RSS of the tree

    CPU time of a process is remembered from its last sample, so workers that exit between samples are counted up
    to that sample; sampling every ``interval`` seconds loses at most that much per exiting process. RSS of the tree
    double-counts pages shared between forked workers (copy-on-write), so it is an upper bound.

    ``mon.cpu_seconds_by_kind`` splits the CPU time into DALI's threads (named ``[DALI]...``, Linux only: thread
    names are read from /proc), the rest of the monitored process, and its child processes (decode workers).
    """

    def __init__(self, pid: int | None = None, interval: float = 0.1, exclude: Iterable[int] = ()):
        import psutil
        self._psutil = psutil
        self.root = psutil.Process(pid or os.getpid())
        # Processes (and their children) left out, e.g. the idle workers of another loader built in the same run.
        self.exclude = set(int(x) for x in exclude)
        self.interval = interval
        self._first: dict[tuple, float] = {}
        self._last: dict[tuple, float] = {}
        self._kind: dict[tuple, str] = {}  # sample key -> KIND_MAIN, KIND_WORKERS or _THREAD_* (("thread", tid))
        self._procs: dict[tuple, Any] = {}
        self._started = False
        self.peak_rss = 0
        self.wall = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _tree(self) -> list:
        try:
            procs = [self.root] + self.root.children(recursive=True)
        except self._psutil.Error:
            procs = [self.root]
        if self.exclude:
            skip = set(self.exclude)
            for pid in self.exclude:
                try:
                    skip.update(c.pid for c in self._psutil.Process(pid).children(recursive=True))
                except self._psutil.Error:
                    pass
            procs = [p for p in procs if p.pid not in skip]
        out = []
        for p in procs:
            # Keep one Process object per (pid, start time) so a reused pid is seen as a new process.
            try:
                key = (p.pid, p.create_time())
            except self._psutil.Error:
                continue
            out.append((key, self._procs.setdefault(key, p)))
        return out

    def _record(self, key: tuple, cpu: float, kind: str) -> None:
        if key not in self._first:
            # Alive when the monitor started: count from now. Started later: count its whole CPU time.
            self._first[key] = cpu if not self._started else 0.0
            self._kind[key] = kind
        self._last[key] = cpu

    def _root_threads(self) -> list[tuple[tuple, float, bool]]:
        """(key, CPU-seconds, is a DALI thread) of the monitored process's threads."""
        out = []
        try:
            threads = self.root.threads()
        except self._psutil.Error:
            return out
        for t in threads:
            try:
                with open(f"/proc/{self.root.pid}/task/{t.id}/comm") as f:
                    name = f.read()
            except OSError:  # exited, or not Linux
                continue
            out.append((("thread", t.id), t.user_time + t.system_time, name.startswith("[DALI]")))
        return out

    def sample(self) -> None:
        rss = 0
        for key, p in self._tree():
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    cpu = t.user + t.system
                    rss += p.memory_info().rss
            except self._psutil.Error:
                continue
            self._record(key, cpu, KIND_MAIN if p is self.root else KIND_WORKERS)
            if p is self.root:  # its threads right after its own total, so that the two describe one moment
                for tkey, tcpu, dali in self._root_threads():
                    self._record(tkey, tcpu, _THREAD_DALI if dali else _THREAD_OTHER)
        self.peak_rss = max(self.peak_rss, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "ProcessTreeMonitor":
        self._started = False
        self.sample()
        self._started = True
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        self.wall = time.perf_counter() - self._t0

    @property
    def cpu_seconds(self) -> float:
        """CPU-seconds (user + system) the tree used while monitored."""
        return self._delta(KIND_MAIN) + self._delta(KIND_WORKERS)

    def _delta(self, kind: str) -> float:
        return sum(self._last[k] - self._first[k] for k in self._last if self._kind[k] == kind)

    @property
    def cpu_seconds_by_kind(self) -> dict[str, float]:
        """``cpu_seconds`` split by KIND_*: DALI's threads, the rest of the monitored process, its child processes.

        The process's total is split in the proportion its live threads were seen to use (threads that exited
        between samples are in the total but not in the threads), so the kinds add up to ``cpu_seconds``."""
        main, dali, other = self._delta(KIND_MAIN), self._delta(_THREAD_DALI), self._delta(_THREAD_OTHER)
        in_dali = main * dali / (dali + other) if dali + other > 0 else 0.0
        return {KIND_DALI: in_dali, KIND_MAIN: main - in_dali, KIND_WORKERS: self._delta(KIND_WORKERS)}

    @property
    def cpu_util(self) -> float:
        """Mean busy cores over the monitored interval (CPU-seconds / wall-seconds)."""
        return self.cpu_seconds / self.wall if self.wall > 0 else float("nan")


def wait_until_idle(max_cores: float = 0.15, window: float = 0.25, timeout: float = 30.0) -> float:
    """Block until this process tree uses less than ``max_cores`` over a ``window`` (or ``timeout`` passes).

    Loaders keep producing into their queues after the consumer stops; waiting for that to finish before timing
    another loader keeps one loader's background refill out of the next one's measurement. Returns seconds waited.
    """
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        with ProcessTreeMonitor(interval=window) as mon:
            time.sleep(window)
        if mon.cpu_util < max_cores:
            break
    return time.perf_counter() - t0
