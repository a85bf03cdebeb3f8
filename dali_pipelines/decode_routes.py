"""The decode routes: how the feeder (``feeder.py``) gets each sample's source for its graph (``pipelines.ROUTES``).

- :class:`EncodedRoute` (``nvdec``): reads the file in a thread, for the NVDEC graph's decoder; it can cut the
  file down to the GOPs the sampled frames need (``gop_pack``).
- :class:`HostDecodeRoute` (``dali_cpu`` and ``pyav``): decodes the frames in worker processes
  (``host_decode.py``): DALI's CPU decoder on the GOPs the frames need, or PyAV.

Both routes first check that the file still has the size and modification time the index recorded (``VideoRef``):
a file replaced or truncated since it was probed is quarantined by name (``pyav_open.VideoChangedError``), never
decoded against a frame count that is not its own.

Each route has ``submit`` (a sample of the batches ahead, into its pool), ``submit_alone`` (one the feeder waits for
at once), ``source`` (the graph's record of a result), ``restart_pool`` (a pool to give up) and ``close``.
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any

import numpy as np

from .colour import IDENTITY, correction
from .draw import Sample, VideoRef
from .gop_pack import MP4_CODECS, PACKABLE_CODECS
from .graph_records import DecodedSource, EncodedSource
from .host_decode import DaliDecodeError, decode_with_dali_cpu, read_bytes, read_source
from .pyav_io import decode_indexed_frames
from .pyav_open import BadVideoError
from .pyav_probe import first_pictures_not_shown
from .routing import DALI_CPU, NVDEC
from evautil.workers import (DaemonThreadPool, InlineExecutor, abandon_pool, jobs_started, pool_lost_a_worker,
                             pool_processes, started_pool, submit_to_pool)

__all__ = ["EncodedRoute", "HostDecodeRoute"]


def _read_source(video: VideoRef, frames: np.ndarray, pack: bool,
                 numbering: dict[int, str] | None = None) -> EncodedSource:
    """``numbering`` (the NVDEC route's): why each video checked so far would be numbered otherwise by NVDEC than
    by the index ('' when it would not), by row; a video not yet in it is checked, one that would is a
    DaliDecodeError (the loader moves it to its CPU route)."""
    data = read_bytes(video.path, video.size, video.mtime_ns)
    if numbering is not None:
        if video.row not in numbering:  # once a run: a demux, no decode
            numbering[video.row] = first_pictures_not_shown(memoryview(data), name=video.path)
        if numbering[video.row]:
            raise DaliDecodeError(f"{video.path}: {numbering[video.row]}: NVDEC would number its frames otherwise "
                                  "than the index (the frames it returned would be others than those asked for)")
    encoded, wanted = read_source(video.path, frames, video.size, video.mtime_ns, pack, data)
    matrix = correction(video.colorspace)
    return EncodedSource(encoded=encoded, frames=wanted, colour=IDENTITY if matrix is None else matrix)


class EncodedRoute:
    """Reads encoded files for the NVDEC graph's decoder (threads: file reads release the GIL).

    ``pack_gops``: cut files to the GOP prefixes the sampled frames need (see ``gop_pack``): VP8/VP9/MJPEG, and
    H.264/HEVC for NVDEC.

    NVDEC shows every packet's picture from the first packet on, in the order of the packets' pts: a video whose
    first packets FFmpeg (and so the index) does not show, hidden by an MP4 edit list or before the first keyframe,
    would come out with its frames shifted, and one whose pts do not give the display order (none, as in a raw
    .h264 stream) with its frames reordered. The loader routes the videos whose index records say so to their CPU
    route at start-up; as a safety net (records of an older cache do not say), each video's packets are demuxed once
    a run here (``pyav_probe.first_pictures_not_shown``) and such a video fails its read with a DaliDecodeError,
    which moves it to its CPU route.
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
