"""The loader's routes as it starts: each video's decode route under this machine's policy, the videos moved off
NVDEC before the first batch, the start-up lines on the routes, the per-route counters and the route objects that
serve the routes. Functions over the index and ``routing.VideoRoutes``."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import torch

from evautil.errors import some_names

from .decode_routes import EncodedRoute, HostDecodeRoute
from .filelist import DataError
from .index import DatasetIndex
from .loader_graphs import nvdec_graph_threads
from .routing import (DALI_CPU, NVDEC, PYAV, RoutingPolicy, VideoRoute, VideoRoutes, cpu_share_warning,
                      fallback_route, machine_policy, nvdec_threads_line, route_videos)

logger = logging.getLogger(__name__)


def route_at_start(index: DatasetIndex, data, device: str, device_id: int | None, rank: int,
                   list_desc: str) -> tuple[RoutingPolicy, VideoRoutes]:
    """This machine's routing policy and each video's decode route as the loader starts (``routing.route_videos``),
    with the videos NVDEC would misnumber on their CPU route (:func:`keep_misnumbered_off_nvdec`). Logs on rank 0
    the videos per route, NVDEC's engines and decoder threads, the videos moved, and a warning when a GPU machine
    would decode more than DATA.CPU_ROUTE_MAX_SHARE of the list on the CPU: with DATA.STRICT a DataError."""
    policy = machine_policy(device, data.CPU_DECODER, data.NVDEC_CODECS, data.NVDEC_MAX_BIT_DEPTH, device_id)
    video_routes = route_videos(*index.decoder_groups(), policy, list_desc,
                                lambda row: f"line {index.entries[row].line_no} ({index.path(row)})")
    moved, reasons = keep_misnumbered_off_nvdec(index, video_routes, policy)
    if moved.size and rank == 0:
        logger.warning("%s", misnumbered_line(list_desc, index, moved, reasons))
    counts = video_routes.counts()  # on the codes: no object per video on a Kinetics-size list
    if rank == 0:
        logger.info("%s: videos per decode route %s", list_desc, counts)
        if counts[NVDEC]:
            logger.info("%s", nvdec_threads_line(policy.nvdec_engines, nvdec_graph_threads(data)))
    gpu_present = torch.cuda.is_available() and data.DECODE_DEVICE != "cpu"
    warning = cpu_share_warning(len(video_routes), video_routes.cpu_reasons(), gpu_present,
                                float(data.CPU_ROUTE_MAX_SHARE))
    if warning and data.STRICT:
        raise DataError(f"{list_desc}: {warning} (an error because DATA.STRICT is set)")
    if warning and rank == 0:
        logger.warning("%s: %s", list_desc, warning)
    return policy, video_routes

def keep_misnumbered_off_nvdec(index: DatasetIndex, video_routes: VideoRoutes,
                               policy: RoutingPolicy) -> tuple[np.ndarray, Counter]:
    """Put the videos routed to NVDEC that the index knows it would number otherwise than the index does (an MP4
    edit list, a stream that starts inside a GOP, pts that do not give the display order: a raw .h264 stream
    with B-frames) on their CPU route now, to be said in one line (:func:`misnumbered_line`), rather than failing
    each at its first NVDEC read with a warning of its own. That read's check (``EncodedRoute``) stays, for the
    records that do not say (migrated from an older cache) and for a codec whose CPU route DATA.CPU_DECODER 'dali'
    rules out. Returns the rows moved (sorted) and the videos moved per reason."""
    on_nvdec, moved, reasons = video_routes.rows_on(NVDEC), [], Counter()
    for codec, reason, rows in index.nvdec_misnumbered():
        rows, cpu = rows[on_nvdec[rows]], fallback_route(NVDEC, codec, policy)
        if rows.size and cpu is not None:
            video_routes.move(rows, VideoRoute(cpu, f"NVDEC would number its frames otherwise than the "
                                                    f"index: {reason}"))
            moved.append(rows)
            reasons[reason] += int(rows.size)
    return (np.sort(np.concatenate(moved)) if moved else np.zeros(0, np.int64)), reasons


def misnumbered_line(list_desc: str, index: DatasetIndex, rows: np.ndarray, reasons: Counter) -> str:
    """The warning on the videos :func:`keep_misnumbered_off_nvdec` moved: how many, some of their names, and the
    three commonest reasons."""
    why = "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common(3))
    return (f"{list_desc}: {len(rows)} videos go to their CPU route from the start "
            f"({some_names([index.path(r) for r in rows.tolist()])}): NVDEC would number their frames otherwise "
            f"than the index: {why}")


def route_counters(counts: dict[str, int], rank: int) -> dict[str, int]:
    """The per-route counters a loader starts ``stats`` with, from the videos per route (``VideoRoutes.counts``)."""
    out = {}
    for route, n in counts.items():
        # Every rank routes the same list; only rank 0 counts its videos, so that sums over ranks are right.
        out[f"videos_{route}"] = n if rank == 0 else 0
        out[f"samples_{route}"] = 0  # samples delivered on this route (this rank)
    out["route_fallbacks"] = 0  # videos moved to a CPU route after failing on theirs
    return out


def serve_routes(routes: dict[str, Any], in_use: list[str], data) -> None:
    """Add to ``routes`` (route name -> route object) those of the routes in use and of the CPU routes (every route
    falls back to one, ``routing.fallback_route``, also when no video is on it yet); a pool starts no process before
    it is started or sent a video."""
    for route in dict.fromkeys([*in_use, DALI_CPU, PYAV]):
        if route in routes:
            continue
        if route == NVDEC:
            # DALI 2.4's sources suggest its NVDEC decoder does not seek on in-memory input (the parity
            # benchmark's seek probe settles it on a GPU): DATA.NVDEC_PACK_GOPS hands it only the GOPs needed.
            routes[route] = EncodedRoute(route, int(data.NUM_WORKERS), pack_gops=bool(data.NVDEC_PACK_GOPS))
        else:
            # Both CPU routes decode in one pool of worker processes. DALI's CPU decoder decodes every frame from
            # 0 up to the last requested one (it never seeks): DATA.CPU_PACK_GOPS hands it only the GOP prefixes
            # the sampled frames need (gop_pack.py). Either route's videos may fall back to PyAV at run time,
            # so the pool serves both names.
            host = routes.get(DALI_CPU) or routes.get(PYAV) or HostDecodeRoute(
                int(data.NUM_WORKERS), pack_gops=bool(data.CPU_PACK_GOPS))
            routes[DALI_CPU] = routes[PYAV] = host
