"""A loader's run-time fallback: a video that fails on its route moves to its fallback route
(``routing.fallback_route``) or is quarantined, the other videos of a codec configuration the GPU refuses leave
NVDEC with it, and after a graph failure the in-flight videos are decoded alone to find the ones that broke it."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from evautil.progress import THIS_RANK_ONLY
from evautil.workers import ResultOverdue

from .draw import Sample
from .feeder import DeliveredBatch, drop_frames
from .index import DatasetIndex
from .nvdec_support import chroma_and_bit_depth
from .pipelines import ROUTES, dali_error_reason, graph_of
from .pyav_open import BadVideoError, failure_reason
from .routing import NVDEC, RoutingPolicy, VideoRoute, VideoRoutes, fallback_route
from .schedule import Schedule
from .timed_reader import OverdueStreak, run_within

logger = logging.getLogger(__name__)

# DALI's mixed decoder when the driver says the GPU cannot decode a codec configuration (codec, chroma, bit depth):
# "Codec configuration not supported on this GPU. Codec: H.264, chroma format: YUV 4:2:0, bit depth: 8".
GPU_REFUSES_CONFIGURATION = "not supported on this GPU"


class GraphFailure(Exception):
    """DALI failed while running ``graph`` (a name of ``pipelines.graph_of``): the loader's graphs are unusable
    until the videos that broke it are found (:meth:`RouteFallback.convict`) and the graphs rebuilt."""

    def __init__(self, graph: str, error: BaseException):
        super().__init__(f"{graph}: {error}")
        self.graph, self.error = graph, error


def _chroma_and_depth(pix_fmt: str) -> tuple[str, int] | str:
    try:
        return chroma_and_bit_depth(pix_fmt)
    except ValueError:  # a pixel format without a known chroma: a configuration of its own
        return pix_fmt


class RouteFallback:
    """The fallback of one loader, over its index, schedule (which quarantines, and whose ``stats`` count the
    moves in ``route_fallbacks``), routes (``VideoRoutes``, changed in place), routing policy and the streak of
    videos past DATA.VIDEO_TIMEOUT_S that its feeders count in too."""

    def __init__(self, index: DatasetIndex, schedule: Schedule, video_routes: VideoRoutes, policy: RoutingPolicy,
                 overdue: OverdueStreak):
        self.index, self.schedule, self.video_routes = index, schedule, video_routes
        self.policy, self.overdue = policy, overdue

    def reroute(self, sample: Sample, reason: str) -> Sample | None:
        """Move a video that failed on its route to its fallback route; the sample on that route, or None when
        there is none (the caller quarantines it)."""
        nxt = fallback_route(sample.route, sample.video.codec, self.policy)
        if nxt is None:
            return None
        logger.warning("%s (row %d) failed on the %s route (%s); decoding it on the %s route from now on",
                       sample.video.path, sample.row, sample.route, reason, nxt, extra=THIS_RANK_ONLY)
        self.video_routes[sample.row] = VideoRoute(nxt, f"failed on {sample.route}: {reason}")
        self.schedule.stats["route_fallbacks"] += 1
        return dataclasses.replace(sample, route=nxt)

    def move_configuration(self, row: int, route: str, reason: str) -> None:
        """The GPU does not decode ``row``'s codec configuration (codec, chroma, bit depth), which is true of every
        video of that configuration: move all of them off NVDEC to ``route`` now, rather than one graph rebuild per
        batch that holds one of them. (Routing asks the driver at start-up; this covers a driver that could not be
        asked.)"""
        facts, group_of_row = self.index.decoder_groups()
        info = self.index.table.info(row)
        config = (info.codec, _chroma_and_depth(info.pix_fmt))
        same = [g for g, f in enumerate(facts) if (f.codec, _chroma_and_depth(f.pix_fmt)) == config]
        rows = np.flatnonzero(np.isin(group_of_row, same) & self.video_routes.rows_on(NVDEC))
        if not rows.size:
            return
        self.video_routes.move(rows, VideoRoute(route, f"failed on {NVDEC}: {reason}"))
        self.schedule.stats["route_fallbacks"] += int(rows.size)
        logger.warning("the other %d videos of the same codec configuration (%s, %s) go to the %s route as well: this "
                       "GPU does not decode it", rows.size, info.codec, info.pix_fmt, route, extra=THIS_RANK_ONLY)

    def fall_back(self, sample: Sample, error: Exception) -> None:
        """A video failed alone on its graph's decoder with DALI's ``error``: move it to its fallback route, or
        quarantine it when there is none; when the GPU refuses its codec configuration, the other videos of that
        configuration leave NVDEC with it."""
        reason = dali_error_reason(error)
        moved = self.reroute(sample, reason)
        if moved is None:
            self.schedule.quarantine(sample.row, f"decode failed during the run: {reason}")
        elif sample.route == NVDEC and GPU_REFUSES_CONFIGURATION in str(error):  # (DALI's whole text, not the line)
            self.move_configuration(sample.row, moved.route, reason)

    def convict(self, inflight: list[DeliveredBatch], graph: str, routes: dict, device_id: int | None) -> int:
        """``graph`` failed: decode alone each in-flight sample of that graph's decoder routes (still good and
        still on its route) and count the videos that fail, each left out of the graphs' way. Each sample is
        decoded from what its route (``routes``: route name -> route object) hands the graph (the GOP cut when the
        route cuts), so a failure of the cut is found too. A video shorter than its index says, changed since it
        was indexed or unreadable is quarantined (no route can decode frames it does not have); any other failure
        moves the video to its fallback route (or quarantines it when there is none). Its read and its decode each
        get DATA.VIDEO_TIMEOUT_S in a thread of their own, as the feeder's do: a video past it is left out of this
        run only, and counts in the videos in a row past it that end the run (``overdue``)."""
        from .pipelines import decode_encoded_with_dali

        limit_s, culprits = self.overdue.limit_s, 0
        for batch in inflight:
            for s in batch.samples:
                backend = ROUTES[s.route].backend
                if (backend is None or graph_of(s.route) != graph or not self.schedule.is_good(s.row)
                        or self.video_routes[s.row].route != s.route):
                    continue
                work = "read"
                try:
                    source = run_within(limit_s, routes[s.route].load, s)
                    work = "decode"
                    run_within(limit_s, decode_encoded_with_dali, [source.encoded], [source.frames], backend,
                               device_id, name=s.video.path)
                except ResultOverdue:  # a read or decode that does not end: its thread is left behind
                    self.schedule.quarantine(s.row, self.overdue.left_out(work, s.video.path), remember=False)
                    culprits += 1
                except (BadVideoError, OSError) as e:  # short, changed, empty or unreadable: the file, not the decoder
                    drop_frames(e)  # its frames hold the lone decode's pipeline (in a cycle through its future)
                    self.schedule.quarantine(s.row, failure_reason(e, s.video.path))
                    culprits += 1
                except Exception as e:  # noqa: BLE001 - any other failure of this video alone convicts it
                    drop_frames(e)
                    self.fall_back(s, e)
                    culprits += 1
                else:
                    self.overdue.answered()
        return culprits
