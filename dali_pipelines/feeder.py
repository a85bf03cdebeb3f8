"""The feeder: turns scheduled samples into the DALI graphs' per-sample records, a few batches ahead.

The feeder asks the :class:`Schedule` for the samples of the next batches, sends each sample down its decode route
(``sample.route``), waits for the results in order, and splits each batch into one part per graph
(``pipelines.graph_of``: NVDEC's, and the ``host`` graph of both CPU routes). Each graph's ``external_source`` is
:meth:`Feeder.source` of that graph: it hands the graph the columns (``pipelines.batch_columns``) of its next
part. The loader takes the batches in plan order
(:meth:`Feeder.peek`), runs every graph the batch has a part for, and puts the rows back in the planned order. A
video that cannot be read or decoded is reported to the schedule, which quarantines it and returns its substitute
(training) or nothing (testing). A video DALI's CPU decoder fails on, or one NVDEC would number otherwise than
the index (``pyav_probe.first_pictures_not_shown``), is first offered to the loader's ``reroute`` (its fallback
route: PyAV, or NVDEC's CPU route), the one call back into the loader.

Decode routes (``pipelines.ROUTES``):

- :class:`EncodedRoute` (``nvdec``): reads the file in a thread, for the NVDEC graph's decoder; it can cut the
  file down to the GOPs the sampled frames need (``gop_pack``).
- :class:`HostDecodeRoute` (``dali_cpu`` and ``pyav``): decodes the frames in worker processes
  (``host_decode.py``): DALI's CPU decoder on the GOPs the frames need, or PyAV.

Both routes first check that the file still has the size and modification time the index recorded (``VideoRef``):
a file replaced or truncated since it was probed is quarantined by name (``pyav_io.VideoChangedError``), never
decoded against a frame count that is not its own.

Several routes serve one loader at once; every part handed to one graph holds only that graph's routes.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .colour import IDENTITY, correction
from .draw import Sample, VideoRef
from .gop_pack import MP4_CODECS, PACKABLE_CODECS
from .host_decode import DaliDecodeError, decode_with_dali_cpu, read_bytes, read_source
from .pipelines import DecodedSource, EncodedSource, SampleRecord, batch_columns, graph_of, graphs_serving
from .pyav_io import BadVideoError, decode_indexed_frames, failure_reason
from .pyav_probe import first_pictures_not_shown
from .routing import DALI_CPU, NVDEC
from .timed_reader import OverdueStreak
from evautil.workers import (DaemonThreadPool, InlineExecutor, ResultOverdue, abandon_pool, jobs_started,
                             pool_lost_a_worker, pool_processes, result_unless_a_worker_dies, started_pool,
                             submit_to_pool)

__all__ = ["EncodedRoute", "HostDecodeRoute", "Feeder", "DeliveredBatch"]

logger = logging.getLogger(__name__)

# Pools that die more often than this in a row, with no video decoding between, point at the environment, not at the
# videos. A pool counts once, however many decodes it took with it; the one-worker pool of second tries counts too.
_MAX_POOL_DEATHS = 4


def _read_source(video: VideoRef, frames: np.ndarray, pack: bool,
                 numbering: dict[int, str] | None = None) -> EncodedSource:
    """``numbering`` (the NVDEC route's): why each video checked so far would be numbered otherwise by NVDEC than
    by the index ('' when it would not), by row; a video not yet in it is checked, one that would is a
    DaliDecodeError (the loader moves it to its CPU route)."""
    data = read_bytes(video.path, video.size, video.mtime_ns)
    if numbering is not None:
        if video.row not in numbering:  # once a run: its first packets only
            numbering[video.row] = first_pictures_not_shown(memoryview(data), name=video.path)
        if numbering[video.row]:
            raise DaliDecodeError(f"{video.path}: {numbering[video.row]}, which NVDEC would number as frames (the "
                                  "frames it returned would be others than the index numbers)")
    encoded, wanted = read_source(video.path, frames, video.size, video.mtime_ns, pack, data)
    matrix = correction(video.colorspace)
    return EncodedSource(encoded=encoded, frames=wanted, colour=IDENTITY if matrix is None else matrix)


class EncodedRoute:
    """Reads encoded files for the NVDEC graph's decoder (threads: file reads release the GIL).

    ``pack_gops``: cut files to the GOP prefixes the sampled frames need (see ``gop_pack``): VP8/VP9/MJPEG, and
    H.264/HEVC for NVDEC.

    NVDEC shows every packet's picture from the first packet on: a video whose first packets FFmpeg (and so the
    index) does not show, hidden by an MP4 edit list or before the first keyframe, would come out with its frames
    shifted. Each video's first packets are read once (``pyav_probe.first_pictures_not_shown``) and such a video
    fails its read with a DaliDecodeError, which moves it to its CPU route.
    """

    def __init__(self, name: str, workers: int, pack_gops: bool = False):
        self.name = name
        self.pack_gops = pack_gops
        self._workers = max(1, int(workers))
        self._pool: cf.Executor | None = None
        self._alone: cf.Executor | None = None  # one thread for the reads the feeder waits for at once
        self._numbering: dict[int, str] | None = {} if name == NVDEC else None

    def _packs(self, sample: Sample) -> bool:
        codec = sample.video.codec.lower()
        return self.pack_gops and (codec in PACKABLE_CODECS or (self.name == NVDEC and codec in MP4_CODECS))

    def load(self, sample: Sample) -> EncodedSource:
        """The sample's source, read now in the calling thread."""
        return _read_source(sample.video, sample.frames, self._packs(sample), self._numbering)

    def submit(self, sample: Sample) -> cf.Future:
        if self._pool is None:
            self._pool = DaemonThreadPool(self._workers, "video-read")
        return self._submit(self._pool, sample)

    def submit_alone(self, sample: Sample) -> cf.Future:
        """A read the feeder waits for at once (a retry, a substitute), in a thread that holds no other work: in
        the pool it would wait behind the reads of the batches ahead, one of which may never end."""
        if self._alone is None:
            self._alone = DaemonThreadPool(1, "video-read-alone")
        return self._submit(self._alone, sample)

    def _submit(self, pool: cf.Executor, sample: Sample) -> cf.Future:
        fut = pool.submit(_read_source, sample.video, sample.frames, self._packs(sample), self._numbering)
        fut.pool = pool  # type: ignore[attr-defined]  # the pool to replace if this read does not end
        return fut

    def source(self, sample: Sample, result: Any) -> EncodedSource:
        return result

    def restart_pool(self, broken: cf.Future) -> bool:
        """Threads do not die like processes, but a read can stop answering (``Feeder.wait_limit_s``): a thread
        cannot be stopped, so the pool it is in is left behind, not waited for (not even when the process ends:
        its threads are daemons), and its queued reads (cancelled) and the next ones go to a new pool. True when
        this call replaced the pool."""
        pool = getattr(broken, "pool", None)
        if broken.done() or pool is None or (pool is not self._pool and pool is not self._alone):
            return False
        pool.shutdown(wait=False, cancel_futures=True)  # reads queued behind the stuck one: submitted anew
        if pool is self._pool:
            self._pool = None
        else:
            self._alone = None
        return True

    def close(self, wait: bool = True) -> None:
        """Give the read threads up; ``wait`` is not honoured: a read in flight may never end (a file system that
        stopped answering), nobody takes its result, and waiting for it kept a stopped run from ending."""
        for pool in (self._pool, self._alone):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._alone = None


class HostDecodeRoute:
    """Decodes the sampled frames on the host, in ``workers`` processes (0: in the calling thread), for both CPU
    routes: DALI's CPU decoder for ``dali_cpu`` samples (on the GOPs they need when ``pack_gops``), PyAV for
    ``pyav`` ones (``host_decode.py``). One pool serves both, so a mixed list starts ``workers`` processes (and
    one more, kept from the first retry or substitute on, for the decodes the feeder waits for at once:
    :meth:`submit_alone`).

    Separate processes decode in parallel with each other and with the graph (DALI runs a graph's CPU operators
    one at a time; PyAV holds the GIL while converting to RGB). Workers return plain arrays.
    """

    def __init__(self, workers: int, pack_gops: bool = True, start_method: str = "forkserver"):
        self._workers = int(workers)
        self.pack_gops = pack_gops
        self._start_method = start_method
        self._pool: cf.Executor | None = None
        self._alone: cf.Executor | None = None  # one worker for the decodes waited for at once (submit_alone)
        self._reaping: list = []  # manager threads of pools given up by restart_pool, which reap their workers

    def _call(self, sample: Sample) -> tuple:
        v = sample.video
        if sample.route == DALI_CPU:
            return (decode_with_dali_cpu, v.path, sample.frames, v.size, v.mtime_ns, v.codec, self.pack_gops,
                    v.colorspace)
        return decode_indexed_frames, v.path, sample.frames, v.size, v.mtime_ns, 1

    def load(self, sample: Sample) -> DecodedSource:
        fn, *args = self._call(sample)
        return self.source(sample, fn(*args))

    def _new_pool(self, workers: int) -> cf.Executor:
        """A pool of ``workers`` decode processes that are known to start (``evautil.workers.started_pool``: one
        more try, then WorkerStartError, for workers that die as they start or do not answer), or the calling
        thread (0)."""
        if workers <= 0:
            return InlineExecutor()
        return started_pool(workers, self._start_method, what="decode worker processes")

    def start(self) -> None:
        """Start the worker processes now (before DALI starts its threads)."""
        if self._pool is None:
            self._pool = self._new_pool(self._workers)

    def submit(self, sample: Sample) -> cf.Future:
        self.start()
        return self._submit(self._pool, sample)  # type: ignore[arg-type]

    def submit_alone(self, sample: Sample) -> cf.Future:
        """A decode the feeder waits for at once, in a pool of one worker that holds no other work: the feeder
        waits for each before the next and sends nothing else there. A second try at ``sample``, whose worker died
        (maybe on another video: a pool's workers die with it): a death there is this video's own doing, never that
        of a video decoded beside it. A retry or a substitute: in the pool it would wait behind the decodes of the
        batches ahead, one of which may never end, and be timed out for their time. The pool is kept; one whose
        idle worker was killed is replaced first (killed after this look: :meth:`ran` tells)."""
        if self._workers <= 0:
            return self.submit(sample)
        if self._alone is not None and pool_lost_a_worker(self._alone):
            self._give_up(self._alone)
            self._alone = None
        if self._alone is None:
            self._alone = self._new_pool(1)
        return self._submit(self._alone, sample)

    def _submit(self, pool: cf.Executor, sample: Sample) -> cf.Future:
        try:
            fut = submit_to_pool(pool, *self._call(sample))
        except cf.BrokenExecutor as e:
            # A worker died since the last submission: hand the breakage over through the future, where the
            # feeder restarts the pool and redoes the work (as for a worker that dies while decoding).
            fut = cf.Future()
            fut.set_exception(e)
        fut.pool = pool  # type: ignore[attr-defined]  # which pool to restart if this future breaks
        fut.started_before = jobs_started(pool)  # type: ignore[attr-defined]  # see ran()
        return fut

    def ran(self, fut: cf.Future) -> bool:
        """Whether a worker took ``fut``'s decode, submitted with :meth:`submit_alone`, and began it, also after
        its pool broke: a pool that broke before was not broken by it (its idle worker was killed). True where
        that cannot be told (a pool of several workers)."""
        before = getattr(fut, "started_before", None)
        return before is None or jobs_started(fut.pool) > before  # type: ignore[attr-defined]

    def source(self, sample: Sample, result: Any) -> DecodedSource:
        v = sample.video
        if tuple(result.shape[1:3]) != (v.height, v.width):
            # The crop windows were drawn for the indexed size: other frames would give wrong views, silently.
            raise BadVideoError(f"{v.path}: frames {sample.frames.tolist()} decode at {result.shape[2]}x"
                                f"{result.shape[1]}, the index recorded {v.width}x{v.height} (the picture size "
                                "changes within the stream)")
        return DecodedSource(video=result)

    def worker_pids(self) -> list[int]:
        """Process ids of the running decode workers, the one for second tries included (none before the first
        submission or with 0 workers)."""
        return sorted(p.pid for pool in (self._pool, self._alone) for p in pool_processes(pool))

    def restart_pool(self, broken: cf.Future) -> bool:
        """Abandon the pool ``broken`` came from, if it is a current one (a worker died); the next submission
        starts a new pool. The old pool's other futures carry the same breakage and are redone by the feeder,
        one by one, without restarting the new pool again. True when this call restarted the pool."""
        pool = getattr(broken, "pool", None)
        if pool is None:
            return False
        if pool is self._pool:
            self._pool = None
        elif pool is self._alone:
            self._alone = None
        else:
            return False
        self._give_up(pool)
        return True

    def _give_up(self, pool: cf.Executor) -> None:
        """Abandon ``pool`` (its workers killed, ``abandon_pool``) and keep the thread that reaps them, so that
        :meth:`close` can wait until they are gone."""
        self._reaping = [t for t in self._reaping if t.is_alive()]
        manager = getattr(pool, "_executor_manager_thread", None)  # private: it reaps the killed workers
        if manager is not None:
            self._reaping.append(manager)
        abandon_pool(pool)

    def close(self, wait: bool = True) -> None:
        """End the decode workers (``wait``: and return once they are gone). Decodes in flight are not waited
        for: nobody takes their results, and one may never end (a decoder that hangs, a file system that stopped
        answering), which kept a stopped run from ending."""
        pools = [p for p in (self._pool, self._alone) if p is not None]
        self._pool = self._alone = None
        for pool in pools:
            self._give_up(pool)
        reaping, self._reaping = self._reaping, []  # pools given up before (Feeder.cancel's too): gone as well
        if wait:
            for manager in reaping:
                manager.join()


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
