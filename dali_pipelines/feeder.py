"""The feeder: turns scheduled samples into the DALI graphs' per-sample records, a few batches ahead.

The feeder asks the :class:`Schedule` for the samples of the next batches, sends each sample down its decode route
(``sample.route``; the route objects are ``decode_routes.py``'s), waits for the results in order, and splits each
batch into one part per graph (``pipelines.graph_of``: NVDEC's, and the ``host`` graph of both CPU routes). Each
graph's ``external_source`` is :meth:`Feeder.source` of that graph: it hands the graph the columns
(``graph_records.batch_columns``) of its next part. The loader takes the batches in plan order
(:meth:`Feeder.peek`), runs every graph the batch has a part for, and puts the rows back in the planned order. A
video that cannot be read or decoded is reported to the schedule, which quarantines it and returns its substitute
(training) or nothing (testing). A video DALI's CPU decoder fails on, or one NVDEC would number otherwise than
the index (``pyav_probe.first_pictures_not_shown``), is first offered to the loader's ``reroute`` (its fallback
route: PyAV, or NVDEC's CPU route), the one call back into the loader.

Several routes serve one loader at once; every part handed to one graph holds only that graph's routes.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .decode_routes import EncodedRoute
from .draw import Sample
from .graph_records import SampleRecord, batch_columns
from .host_decode import DaliDecodeError
from .pipelines import graph_of, graphs_serving
from .pyav_open import BadVideoError, failure_reason
from .timed_reader import OverdueStreak
from evautil.workers import ResultOverdue, result_unless_a_worker_dies

__all__ = ["Feeder", "DeliveredBatch"]

logger = logging.getLogger(__name__)

# Pools that die more often than this in a row, with no video decoding between, point at the environment, not at the
# videos. A pool counts once, however many decodes it took with it; the one-worker pool of second tries counts too.
_MAX_POOL_DEATHS = 4


def drop_frames(handled: BaseException) -> None:
    """Forget the traceback of an exception the feeder (or the loader) has handled (turned into a quarantine, a
    retry or a rebuild). The exception also lives on in its future; its traceback holds this call's frames and,
    through them, the DALI frames that called the feeder or raised it and the pipeline itself: a reference cycle
    that would keep a closed loader's pipeline (or a failed one) alive until a garbage collection."""
    handled.__traceback__ = None
    if handled.__context__ is not None:
        handled.__context__.__traceback__ = None


@dataclass
class DeliveredBatch:
    """A batch handed to the graphs: its position in the epoch plan and its samples, in the planned order."""

    number: int
    samples: list[Sample]

    def parts(self) -> dict[str, list[int]]:
        """The positions (in ``samples``) of each graph's part (``pipelines.graph_of``), graphs in order of first
        appearance."""
        out: dict[str, list[int]] = {}
        for i, s in enumerate(self.samples):
            out.setdefault(graph_of(s.route), []).append(i)
        return out


@dataclass
class _Pending:
    number: int
    samples: list[Sample]
    futures: list[cf.Future]


class Feeder:
    """The ``external_source`` callbacks (one per graph, :meth:`source`) over one epoch of a schedule, from batch
    ``start`` on; ``routes`` maps the routes served to their route objects (EncodedRoute, HostDecodeRoute).
    ``reroute(sample, reason)``: the same sample on its fallback route, or None when it has none (then it is
    quarantined).

    Keeps ``lookahead`` batches in preparation. ``inflight``: the collected batches the loader has not finished,
    in plan order; each graph's parts of them are queued for it, and it returns outputs in the same order.
    ``error`` keeps an exception of the feeder itself, so the loader re-raises it instead of treating it as a
    decoder failure.

    ``wait_limit_s`` (DATA.VIDEO_TIMEOUT_S; 0: no limit): the longest the feeder waits for one video's read or
    decode. A video that takes longer is left out of this run (a file system that stopped answering, a decoder
    that does not end: the cause may pass) and the decode workers are replaced; threads cannot be stopped, so a
    read stuck in the kernel keeps its thread. ``evautil.workers.MAX_OVERDUE_IN_A_ROW`` such videos in a row end the
    run, counted in ``overdue`` (the loader's, which also counts its re-decodes after a graph failure; else one of
    the feeder's own). The limit counts a video's own time only: the routes' pools take the batches' videos in the
    order the feeder waits for them, and what it submits while it waits (retries, substitutes, rerouted videos) goes
    to the route's one-worker pool (``submit_alone``), never behind the videos of the batches ahead.
    """

    def __init__(self, schedule, routes: dict[str, Any], start: int, lookahead: int,
                 reroute: Callable[[Sample, str], Sample | None] | None = None, wait_limit_s: float = 0,
                 overdue: OverdueStreak | None = None):
        self.schedule = schedule
        self.routes = routes
        self._reroute = reroute
        self.wait_limit_s = float(wait_limit_s)
        self.overdue = overdue if overdue is not None else OverdueStreak(self.wait_limit_s)
        self.next = start
        self.lookahead = lookahead
        self.inflight: collections.deque[DeliveredBatch] = collections.deque()
        self.error: BaseException | None = None
        self._prepared: dict[int, _Pending] = {}
        self._parts: dict[str, collections.deque[list[SampleRecord]]] = {
            g: collections.deque() for g in graphs_serving(list(routes))}
        self._pool_deaths = 0
        self._moved: dict[int, str] = {}  # row -> the route this feeder's reroute moved its video to

    def _route(self, sample: Sample):
        try:
            return self.routes[sample.route]
        except KeyError:
            raise RuntimeError(f"{sample.video.path}: decode route {sample.route!r} is not served by this loader "
                               f"(it serves {', '.join(self.routes)})") from None

    def _prepare(self, number: int) -> None:
        if number in self._prepared or number >= len(self.schedule):
            return
        samples = self.schedule.batch(number)
        self._prepared[number] = _Pending(number, samples, [self._route(s).submit(s) for s in samples])

    def source(self, graph: str):
        """The ``external_source`` callback of ``graph``: the columns of its next part."""

        def next_part():
            try:
                while not self._parts[graph]:
                    if not self._collect_next():
                        raise StopIteration
                return batch_columns(self._parts[graph].popleft())
            except StopIteration:
                raise
            except BaseException as e:  # noqa: BLE001 - kept so the loader re-raises it instead of "recovering"
                self.error = e
                raise

        return next_part

    def peek(self) -> DeliveredBatch:
        """The next batch for the loader (collected now if need be; it stays in ``inflight`` until the loader
        pops it). StopIteration at the end of the epoch."""
        try:
            while not self.inflight:
                if not self._collect_next():
                    raise StopIteration
        except StopIteration:
            raise
        except BaseException as e:  # noqa: BLE001 - as in the graphs' callbacks
            self.error = e
            raise
        return self.inflight[0]

    def _collect_next(self) -> bool:
        """Collect the next planned batch and queue its parts; False at the end of the epoch."""
        while True:
            if self.next >= len(self.schedule):
                return False
            number = self.next
            self.next += 1
            for b in range(number, number + self.lookahead + 1):
                self._prepare(b)
            samples, sources = self._collect(self._prepared.pop(number))
            if samples:  # a test batch whose every video was quarantined is skipped
                break
        batch = DeliveredBatch(number, samples)
        self.inflight.append(batch)
        for graph, positions in batch.parts().items():
            self._parts[graph].append([SampleRecord(source=sources[i], params=samples[i].params,
                                                    index=np.array(samples[i].row, np.int32)) for i in positions])
        return True

    def _collect(self, pending: _Pending) -> tuple[list[Sample], list[Any]]:
        """Wait for a batch's sources; quarantine videos that cannot be read (and substitute or drop them)."""
        samples, sources = [], []
        for s, fut in zip(pending.samples, pending.futures):
            retried = resent = False
            if not self.schedule.is_good(s.row):
                # Quarantined since its batch was drawn (a video that also stands in for another one comes twice
                # in the batches prepared together): replaced as the plan would now, not decoded (or moved to its
                # fallback route, or waited for past the limit) a second time.
                fut.cancel()
                s = self.schedule.replace(s, pending.number, "quarantined earlier in this epoch")
                if s is not None:
                    fut = self._route(s).submit_alone(s)
            elif self._moved.get(s.row, s.route) != s.route:
                # Moved to its fallback route since its batch was drawn: sent there now, not failed (and moved, and
                # counted) again on the route it left.
                fut.cancel()
                s = dataclasses.replace(s, route=self._moved[s.row])
                fut = self._route(s).submit_alone(s)
            while s is not None:
                route = self._route(s)
                try:
                    result = result_unless_a_worker_dies(getattr(fut, "pool", None), fut, self.wait_limit_s)
                    sources.append(route.source(s, result))
                    samples.append(s)
                    self._pool_deaths = 0
                    self.overdue.answered()
                    break
                except ResultOverdue:
                    s = self._overdue(s, route, fut, pending.number)
                except cf.CancelledError:  # queued on a pool that was replaced meanwhile: submitted anew
                    fut = route.submit_alone(s)
                    continue
                except cf.BrokenExecutor as e:
                    # A worker process died (FFmpeg crashed, the OOM killer), maybe on another video in its pool:
                    # start a new pool and try this video again, alone; one that kills that worker too is
                    # quarantined. A second try beside other work could die of another video and convict this one.
                    if route.restart_pool(fut):  # the first of a dead pool's decodes: the pool's one death
                        self.schedule.stats["worker_restarts"] += 1
                        self._pool_deaths += 1
                    if self._pool_deaths > _MAX_POOL_DEATHS:
                        raise RuntimeError("the PyAV decoding worker processes keep dying; see their errors above "
                                           "(DATA.NUM_WORKERS 0 decodes in the main process)") from e
                    drop_frames(e)
                    if retried and not resent and not route.ran(fut):
                        # the second try's worker was killed before it took the decode: not this video's doing
                        resent = True
                        fut = route.submit_alone(s)
                        continue
                    if not retried:
                        retried = True
                        fut = route.submit_alone(s)
                        continue
                    s = self.schedule.replace(s, pending.number, "the decoding worker process died twice on it, the "
                                              "second time alone")
                except (OSError, BadVideoError, ValueError, RuntimeError) as e:
                    drop_frames(e)
                    moved = (self._reroute(s, str(e)) if isinstance(e, DaliDecodeError) and self._reroute
                             else None)
                    if moved is not None:
                        self._moved[s.row] = moved.route
                    s = moved or self.schedule.replace(s, pending.number, failure_reason(e, s.video.path))
                if s is not None:  # a substitute or a rerouted video, waited for at once
                    retried = resent = False
                    fut = self._route(s).submit_alone(s)
        return samples, sources

    def _overdue(self, sample: Sample, route, fut: cf.Future, number: int) -> Sample | None:
        """``sample``'s read or decode took longer than ``wait_limit_s``: stop the worker processes on it (their
        other work is redone, as after a death) and leave the video out of this run; its substitute or None."""
        if route.restart_pool(fut):
            self.schedule.stats["worker_restarts"] += 1
        work = "read" if isinstance(route, EncodedRoute) else "decode"
        return self.schedule.replace(sample, number, self.overdue.left_out(work, sample.video.path), remember=False)

    def cancel(self) -> None:
        """Drop the batches in preparation (the pipeline is being rebuilt or closed). A read or decode a worker has
        already taken cannot be cancelled: the next feeder's would wait behind it in the route's pool, and one that
        never ends would have them timed out for its time, so a pool that still runs any is replaced (its workers
        ended, a read thread left behind). One that runs none is kept: replacing it costs a start of its workers."""
        for pending in self._prepared.values():
            for s, f in zip(pending.samples, pending.futures):
                if not f.cancel() and not f.done() and self._route(s).restart_pool(f):
                    self.schedule.stats["worker_restarts"] += 1
        self._prepared.clear()
        for queue in self._parts.values():
            queue.clear()
