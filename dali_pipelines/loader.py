"""``build_loader``: the DALI video loader for training and multi-view testing (its lifecycle).

A clip's way from a list line to a batch, and the module that owns each step:

1. ``index.py``: the list is read and every video probed once (frame count, size, codec), cached beside the list.
2. ``schedule.py``: per epoch, a global permutation from (SEED, epoch) cut into equal per-rank shares (pure numpy).
3. ``draw.py``: per sample, frame indices and augmentation from ``sample_rng(SEED, epoch, row)`` (pure).
4. ``feeder.py``: the sample goes down its decode route (``routing.py``, chosen per video: file bytes for NVDEC's
   decoder in the graph, or frames decoded in the worker processes), a few batches ahead; unreadable videos are
   quarantined and substituted or dropped. Each batch is split into one part per graph.
5. ``pipelines.py``: the graphs augment their part, NVDEC's graph after decoding it. Both CPU routes decode in
   the worker processes (``host_decode.py``) and share one graph, so on a machine without NVDEC a batch leaves one
   graph in its planned order; NVDEC's graph and the CPU graph are merged back into the planned order. Outputs
   reach torch through DLPack.

This module routes the videos, builds the graphs and their feeder, rebuilds them when DALI's decoder fails (after
moving the video that broke it to a CPU route, or quarantining it), frees a graph no good video needs any more,
iterates, saves and restores the position, and releases everything at ``close()`` (or a ``with`` block's end).
Because nothing random happens inside the graph, the stream of (index, video) is a pure function of (SEED, epoch,
position): exact mid-epoch resume, independent of thread or worker counts.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import logging
import weakref
from collections import Counter
from typing import Any, Iterator

import numpy as np
import torch

from evautil.errors import some_names
from evautil.progress import THIS_RANK_ONLY, counted, stderr_is_terminal
from evautil.workers import ResultOverdue

from .decode_routes import EncodedRoute, HostDecodeRoute
from .draw import DrawSettings, Sample, VideoRef
from .feeder import DeliveredBatch, Feeder, drop_frames
from .filelist import DataError
from .index import DatasetIndex, build_index
from .nvdec_support import chroma_and_bit_depth
from .pipelines import (ROUTES, convert_graph_code, dali_error_reason, graph_of, graphs_serving, test_pipeline,
                        train_pipeline)
from .pyav_open import BadVideoError, failure_reason
from .routing import (DALI_CPU, NVDEC, PYAV, VideoRoute, cpu_share_warning, fallback_route, machine_policy,
                      nvdec_threads_line, resolve_decode_device, route_videos)
from .schedule import Schedule
from .timed_reader import OverdueStreak, run_within

__all__ = ["VideoLoader", "build_loader", "build_split_index", "resolve_decode_device", "DataError"]

logger = logging.getLogger(__name__)


def clip_dtype(setting: str, device: str, precision: str) -> str:
    """The clips' data type for DATA.OUTPUT_DTYPE ``setting`` ('auto': float16 on the GPU, which halves the copy and
    is what mixed-precision autocast computes in anyway, but float32 for TRAIN.PRECISION fp32, whose run must not
    see inputs rounded to float16; float32 on the CPU)."""
    if setting != "auto":
        return setting
    return "float16" if device == "gpu" and precision != "fp32" else "float32"


def labels_pinned(device: str, training: bool) -> bool:
    """Whether a batch's labels go out in pinned host memory: only where they are copied to the GPU, i.e. training
    on a GPU (a copy from pageable memory would wait for the GPU's queued work first). Evaluation reads labels and
    rows on the host (``engine.evaluate``): pinning them there cost a page-locked allocation per batch for nothing."""
    return device == "gpu" and training


# DALI's mixed decoder when the driver says the GPU cannot decode a codec configuration (codec, chroma, bit depth):
# "Codec configuration not supported on this GPU. Codec: H.264, chroma format: YUV 4:2:0, bit depth: 8".
GPU_REFUSES_CONFIGURATION = "not supported on this GPU"


def _chroma_and_depth(pix_fmt: str) -> tuple[str, int] | str:
    try:
        return chroma_and_bit_depth(pix_fmt)
    except ValueError:  # a pixel format without a known chroma: a configuration of its own
        return pix_fmt


class _GraphFailure(Exception):
    """DALI failed while running ``graph`` (a name of ``pipelines.graph_of``)."""

    def __init__(self, graph: str, error: BaseException):
        super().__init__(f"{graph}: {error}")
        self.graph, self.error = graph, error


class VideoLoader:
    """Iterable over one epoch of batches ``{'video', 'label', 'index'}`` for one rank.

    - train: ``video`` (B, T, 3, S, S); every rank gets ``len(self)`` full batches per epoch (the plan's, or its
      first ones only: ``use_batches``).
    - val/test: ``video`` (B, V, T, 3, S, S), V = NUM_CLIP * NUM_CROP ordered [crop][clip]; rank r covers the good
      ones of list rows r::world once, the last batch may be partial.

    ``video`` is on the decode device (GPU videos are handed to torch through DLPack without a copy); ``label``
    and ``index`` (row in the list) are int64 on the host: moving them is the consumer's choice.

    Position: ``state_dict()`` / ``load_state_dict()`` hold (epoch, batches consumed); iterating after
    ``load_state_dict`` continues at the exact next batch. A finished training epoch advances ``epoch`` by one
    (an evaluation loader's passes all draw epoch 0's clips);
    ``set_epoch(e)`` with a different epoch starts that epoch from its beginning (the same epoch keeps a resumed
    position). ``sample(row)`` is the sample this loader draws for ``row`` in the current epoch.

    ``close()`` (or the end of a ``with`` block over the loader) releases its graphs and worker processes.
    """

    def __init__(self, cfg, split: str, rank: int = 0, world_size: int = 1, device_id: int | None = None,
                 index: DatasetIndex | None = None):
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.cfg = cfg
        self.split = split
        self.training = split == "train"
        self.rank, self.world_size = rank, world_size
        data = cfg.DATA
        list_key, list_path = _split_list(cfg, split)
        self.index = index if index is not None else build_split_index(cfg, split)
        self._list_desc = f"{list_key} {list_path}"

        self.device = resolve_decode_device(data.DECODE_DEVICE)
        self.device_id = (torch.cuda.current_device() if device_id is None else int(device_id)
                          ) if self.device == "gpu" else None
        self.settings = DrawSettings.from_config(cfg, self.training)
        self.batch_size = cfg.TRAIN.BATCH_SIZE if self.training else cfg.TEST.BATCH_SIZE
        self.seed = int(cfg.SEED)
        self.schedule = Schedule(self.index, self.settings, self.seed, self.batch_size, rank, world_size,
                                 route_of=self._route_of, list_desc=self._list_desc, strict=bool(data.STRICT))
        if not self.index.good_mask.any():
            raise DataError(f"{self._list_desc}: none of its {len(self.index)} videos is readable "
                            f"(DATA.ROOT {data.ROOT!r}); {self.schedule.bad_examples()}")
        self.policy = machine_policy(self.device, data.CPU_DECODER, data.NVDEC_CODECS, data.NVDEC_MAX_BIT_DEPTH,
                                     self.device_id)
        self.video_routes = route_videos(*self.index.decoder_groups(), self.policy, self._list_desc,
                                         lambda row: f"line {self.index.entries[row].line_no} ({self.index.path(row)})")
        self._keep_misnumbered_off_nvdec()
        self._report_routes()
        self.routes: dict[str, Any] = {}  # route name -> EncodedRoute / HostDecodeRoute, for the routes in use
        self._serve_routes()
        self.dtype = clip_dtype(data.OUTPUT_DTYPE, self.device, cfg.TRAIN.PRECISION)
        self.num_frames = self.settings.num_frames
        self.input_size = self.settings.input_size
        self.num_clip, self.num_crop = self.settings.num_clip, self.settings.num_crop
        self.num_views = self.settings.num_views
        self._prefetch = max(1, int(data.PREFETCH))  # batches each graph computes ahead
        self._lookahead = self._prefetch + 1  # batches the feeder prepares past the one a graph collects
        self.position = 0
        self._pipes: dict[str, Any] = {}  # graph name (pipelines.graph_of) -> its DALI pipeline
        self._pipe_clean = False
        self._feeder: Feeder | None = None
        self._iterations = 0  # iterators started: an older one was stopped by a newer one (or by close)
        # Videos in a row past DATA.VIDEO_TIMEOUT_S, counted across the feeders and the re-decodes of _recover
        self._overdue = OverdueStreak(float(data.VIDEO_TIMEOUT_S))
        if self.training:
            self._check_global_batch(len(self.schedule.usable_rows()))
            # Its graph is built at the first batch and rebuilt for a fallback route: convert the graph's code now,
            # from the files this process imported.
            convert_graph_code(**self._graph_kwargs())

    @property
    def batches_ahead(self) -> int:
        """The most batches past the last one delivered that this loader works on while nobody takes them: the
        graphs' queues and the feeder's look-ahead, whose decodes (PyAV's, on its route) go on in the background.
        A benchmark that lets a loader sit idle draws this many untimed before timing it again; otherwise the
        decoding done while it sat idle would count as free."""
        return self._prefetch + self._lookahead

    # ------------------------------------------------------------------------------------------------ routes
    @property
    def pipelines(self) -> tuple:
        """The DALI graphs built now, one per graph the routes in use need (empty before the first batch and after
        close), and one built during the epoch for a video that moved to a route no graph served (``_run_batch``)."""
        return tuple(self._pipes.values())

    def _good_videos_per_route(self) -> dict[str, int]:
        """The list's good videos per route now: those quarantined during the run keep their route, not counted."""
        return self.video_routes.counts(self.index.good_mask)

    def routes_in_use(self) -> list[str]:
        """The routes of the list's good videos now (in ROUTES order)."""
        counts = self._good_videos_per_route()
        return [r for r in ROUTES if counts[r]]

    @property
    def route(self) -> str:
        """The list's route when it has one, else 'mixed'."""
        used = self.routes_in_use()
        return used[0] if len(used) == 1 else "mixed"

    @property
    def cpu_decoder(self) -> str | None:
        """The CPU decoders in use: 'dali', 'pyav', 'dali+pyav', or None when every video is on NVDEC."""
        used = [name for route, name in ((DALI_CPU, "dali"), (PYAV, "pyav")) if route in self.routes_in_use()]
        return "+".join(used) or None

    def _route_of(self, video: VideoRef) -> str:
        return self.video_routes[video.row].route

    def _report_routes(self) -> None:
        """Log the routes, warn (or with DATA.STRICT fail) when a GPU machine would decode too much on the CPU,
        and put the per-route counters into ``stats``."""
        data = self.cfg.DATA
        counts = self.video_routes.counts()  # on the codes: no object per video on a Kinetics-size list
        if self.rank == 0:
            logger.info("%s: videos per decode route %s", self._list_desc, counts)
            if counts[NVDEC]:
                logger.info("%s", nvdec_threads_line(self.policy.nvdec_engines, self._nvdec_graph_threads()))
        gpu_present = torch.cuda.is_available() and data.DECODE_DEVICE != "cpu"
        warning = cpu_share_warning(len(self.video_routes), self.video_routes.cpu_reasons(), gpu_present,
                                    float(data.CPU_ROUTE_MAX_SHARE))
        if warning and data.STRICT:
            raise DataError(f"{self._list_desc}: {warning} (an error because DATA.STRICT is set)")
        if warning and self.rank == 0:
            logger.warning("%s: %s", self._list_desc, warning)
        for route, n in counts.items():
            # Every rank routes the same list; only rank 0 counts its videos, so that sums over ranks are right.
            self.stats[f"videos_{route}"] = n if self.rank == 0 else 0
            self.stats[f"samples_{route}"] = 0  # samples delivered on this route (this rank)
        self.stats["route_fallbacks"] = 0  # videos moved to a CPU route after failing on theirs

    def _keep_misnumbered_off_nvdec(self) -> None:
        """Put the videos routed to NVDEC that the index knows it would number otherwise than the index does (an MP4
        edit list, a stream that starts inside a GOP, pts that do not give the display order: a raw .h264 stream
        with B-frames) on their CPU route now, said in one line, rather than failing each at its first NVDEC read
        with a warning of its own. That read's check (``EncodedRoute``) stays, for the records that do not say
        (migrated from an older cache) and for a codec whose CPU route DATA.CPU_DECODER 'dali' rules out."""
        on_nvdec, moved, reasons = self.video_routes.rows_on(NVDEC), [], Counter()
        for codec, reason, rows in self.index.nvdec_misnumbered():
            rows, cpu = rows[on_nvdec[rows]], fallback_route(NVDEC, codec, self.policy)
            if rows.size and cpu is not None:
                self.video_routes.move(rows, VideoRoute(cpu, f"NVDEC would number its frames otherwise than the "
                                                             f"index: {reason}"))
                moved.append(rows)
                reasons[reason] += int(rows.size)
        if moved and self.rank == 0:
            rows = np.sort(np.concatenate(moved)).tolist()
            why = "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common(3))
            logger.warning("%s: %d videos go to their CPU route from the start (%s): NVDEC would number their "
                           "frames otherwise than the index: %s", self._list_desc, len(rows),
                           some_names([self.index.path(r) for r in rows]), why)

    def _serve_routes(self) -> None:
        """Route objects for the routes in use and for the CPU routes (every route falls back to one,
        ``routing.fallback_route``, also when no video is on it yet); a pool starts no process before it is started or
        sent a video."""
        data = self.cfg.DATA
        for route in dict.fromkeys([*self.routes_in_use(), DALI_CPU, PYAV]):
            if route in self.routes:
                continue
            if route == NVDEC:
                # DALI 2.4's sources suggest its NVDEC decoder does not seek on in-memory input (the parity
                # benchmark's seek probe settles it on a GPU): DATA.NVDEC_PACK_GOPS hands it only the GOPs needed.
                self.routes[route] = EncodedRoute(route, int(data.NUM_WORKERS), pack_gops=bool(data.NVDEC_PACK_GOPS))
            else:
                # Both CPU routes decode in one pool of worker processes. DALI's CPU decoder decodes every frame from
                # 0 up to the last requested one (it never seeks): DATA.CPU_PACK_GOPS hands it only the GOP prefixes
                # the sampled frames need (gop_pack.py). Either route's videos may fall back to PyAV at run time,
                # so the pool serves both names.
                host = self.routes.get(DALI_CPU) or self.routes.get(PYAV) or HostDecodeRoute(
                    int(data.NUM_WORKERS), pack_gops=bool(data.CPU_PACK_GOPS))
                self.routes[DALI_CPU] = self.routes[PYAV] = host

    def _reroute(self, sample: Sample, reason: str) -> Sample | None:
        """Move a video that failed on its route to its fallback route; the sample on that route, or None when
        there is none (the caller quarantines it)."""
        nxt = fallback_route(sample.route, sample.video.codec, self.policy)
        if nxt is None:
            return None
        logger.warning("%s (row %d) failed on the %s route (%s); decoding it on the %s route from now on",
                       sample.video.path, sample.row, sample.route, reason, nxt, extra=THIS_RANK_ONLY)
        self.video_routes[sample.row] = VideoRoute(nxt, f"failed on {sample.route}: {reason}")
        self.stats["route_fallbacks"] += 1
        return dataclasses.replace(sample, route=nxt)

    def _move_configuration(self, row: int, route: str, reason: str) -> None:
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
        self.stats["route_fallbacks"] += int(rows.size)
        logger.warning("the other %d videos of the same codec configuration (%s, %s) go to the %s route as well: this "
                       "GPU does not decode it", rows.size, info.codec, info.pix_fmt, route, extra=THIS_RANK_ONLY)

    def _fall_back(self, sample: Sample, error: Exception) -> None:
        """A video failed alone on its graph's decoder with DALI's ``error``: move it to its fallback route, or
        quarantine it when there is none; when the GPU refuses its codec configuration, the other videos of that
        configuration leave NVDEC with it."""
        reason = dali_error_reason(error)
        moved = self._reroute(sample, reason)
        if moved is None:
            self.schedule.quarantine(sample.row, f"decode failed during the run: {reason}")
        elif sample.route == NVDEC and GPU_REFUSES_CONFIGURATION in str(error):  # (DALI's whole text, not the line)
            self._move_configuration(sample.row, moved.route, reason)

    def _check_global_batch(self, usable: int) -> None:
        # One optimizer step's clips, as the dry run counts them: with fewer, the trainer would get fewer batches
        # than TRAIN.ACCUMULATION_STEPS, and lowering TRAIN.BATCH_SIZE alone might not be enough.
        b, a, w = self.batch_size, int(self.cfg.TRAIN.ACCUMULATION_STEPS), self.world_size
        if usable < b * a * w:
            bad = f", {len(self.index.bad)} of the listed videos are unreadable" if self.index.bad else ""
            raise DataError(
                f"{self._list_desc}: {usable} usable training videos{bad}, fewer than one global batch "
                f"(TRAIN.BATCH_SIZE {b} x TRAIN.ACCUMULATION_STEPS {a} x world size {w} = {b * a * w}): "
                "lower TRAIN.BATCH_SIZE or TRAIN.ACCUMULATION_STEPS, or list more videos")

    # ------------------------------------------------------------------------------------------------ public
    @property
    def epoch(self) -> int:
        return self.schedule.epoch

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: bad_at_index, quarantined_earlier (by an earlier loader of the same index, e.g. validation's
        before the final test), skipped_videos, substituted, rebuilds, worker_restarts, the ``skipped`` lines,
        and per route: ``videos_<route>`` (routed at start-up, counted on rank 0), ``samples_<route>`` (delivered:
        a training clip, or a test video with all its views, decoded once) and ``route_fallbacks``."""
        return self.schedule.stats

    def __len__(self) -> int:
        return len(self.schedule)

    def use_batches(self, n: int) -> None:
        """Deliver only the first ``n`` planned batches of every training epoch, and read or decode none after
        them: the trainer's optimizer steps use ``steps x TRAIN.ACCUMULATION_STEPS`` batches, and a remainder of
        fewer micro-batches than one step would be decoded only to be dropped. ``len(self)`` counts the first ``n``.
        The plan (permutation, fingerprint, substitutes) is the whole one and positions count the same batches,
        so a saved position resumes exactly; one at or past ``n`` ends its epoch at the next iteration."""
        if not self.training:
            raise ValueError(f"use_batches: the {self.split} loader scores every planned batch")
        if int(n) < 1:
            raise ValueError(f"use_batches: at least 1 batch per epoch, got {n}")
        self.schedule.limit = int(n)

    def plan_fingerprint(self) -> str:
        """A short digest of what the epoch plans are drawn from (the list's usable rows, the seed, the batch size
        and the world size): ranks whose loaders agree on it plan the same epochs."""
        usable = self.schedule.usable_rows().astype(np.int64)
        head = np.array([self.seed, self.batch_size, self.world_size, len(self.index)], np.int64)
        return hashlib.sha1(head.tobytes() + usable.tobytes()).hexdigest()[:12]

    def plan_state(self) -> dict[str, Any]:
        """What every checkpoint keeps of this rank's plan, by list row and path: the videos quarantined during the
        run (they are bad in a resumed run's index, yet were planned), by this rank or by another before an epoch's
        end (:meth:`learn_quarantines`), and, on rank 0 (the ranks plan alike), the videos the plan leaves out.
        ``adopt_plan_state`` of a resumed run takes every rank's."""
        return self.schedule.record(with_excluded=self.rank == 0)

    def quarantines_to_share(self) -> list[tuple[int, str, str, bool]]:
        """The training videos this rank quarantined (or adopted from a checkpoint) since it last shared them,
        as ``(row, path relative to the root, reason, remembered)`` (``Schedule.unshared_quarantines``); empty for
        an evaluation loader, whose ranks score shares of fixed rows (no rank reaches another's)."""
        return self.schedule.unshared_quarantines() if self.training else []

    def learn_quarantines(self, parts: list[list[tuple[int, str, str, bool]]], record: bool = True) -> None:
        """Leave out the videos the other ranks quarantined (``parts``: each rank's :meth:`quarantines_to_share`,
        in rank order), in this rank's index and the indexes it passes its quarantines to (the validation's), and
        record them in this rank's :meth:`plan_state`, and the remembered ones in this machine's index cache at once
        (``Schedule.learn_quarantines``). The plan does not change (they are substituted), so every rank keeps its
        steps per epoch. Logs one line naming the first of them. Not ``record``: this machine's files are left to
        the process of the machine that records them."""
        learnt = [(row, rank, why) for rank, part in enumerate(parts) if rank != self.rank
                  for row, why in self.schedule.learn_quarantines(part, record)]
        if not learnt:
            return
        self.index.flush_quarantines()  # at the epoch's end, as this rank's own: a stopped run leaves them recorded
        named = "; ".join(f"{self.index.path(row)} (row {row}): quarantined by rank {rank} ({why})"
                          for row, rank, why in learnt[:3])
        more = f"; and {len(learnt) - 3} more" if len(learnt) > 3 else ""
        logger.info("%s: %s quarantined by other processes during the run, left out by this one too: %s%s",
                    self._list_desc, counted(len(learnt), "video"), named, more)

    def adopt_plan_state(self, states: list[dict[str, Any]], rank: int | None) -> str:
        """Plan as the run whose ranks recorded ``states`` (:meth:`plan_state`, in rank order) did; ``rank``: which
        of them this process continues (None when the world size changed). Before the first batch, so that the
        steps per epoch and :meth:`plan_fingerprint` count the adopted plan. Returns a warning line, empty when the
        plan is the recorded one (:meth:`Schedule.adopt`)."""
        if self._pipes or self.position:
            raise RuntimeError("adopt_plan_state: the loader has started; adopt a plan before the first batch")
        excluded = [v for s in states for v in s.get("excluded", ())]
        anywhere = [v for s in states for v in s.get("quarantined", ())]
        mine = rank is not None and rank < len(states)
        here = list(states[rank].get("quarantined", ())) if mine else anywhere
        note = self.schedule.adopt(excluded, anywhere, here)
        # Every rank quarantines the videos of its own record again (of all records, when none is its own): those
        # that every record names are known to every rank, not to be shared again (quarantines_to_share)
        records = [s.get("quarantined", ()) for s in states] if mine else [anywhere]
        self.schedule.count_as_told(list(set.intersection(*({tuple(v) for v in r} for r in records))))
        self._check_global_batch(len(self.schedule.usable_rows()))
        return note

    def sample(self, row: int) -> Sample:
        """The sample (route, frames to decode, graph parameters) of good ``row`` in the current epoch."""
        return self.schedule.sample(row)

    # ------------------------------------------------------------------------------------------------ pipeline
    def _build_pipelines(self, start: int) -> None:
        self._close_pipeline()
        self._serve_routes()
        used = self.routes_in_use()
        for route in used:
            if hasattr(self.routes[route], "start"):
                self.routes[route].start()  # worker processes first, before DALI starts its threads
        # Every route served, not only those in use: a video may move to its fallback route during the epoch (its
        # graph, when none of the good videos needed it, is built at its first part: _run_batch).
        self._feeder = Feeder(self.schedule, dict(self.routes), start, lookahead=self._lookahead,
                              reroute=self._reroute, wait_limit_s=self._overdue.limit_s, overdue=self._overdue)
        self._pipes = {graph: self._make_pipeline(graph, routes) for graph, routes in graphs_serving(used).items()}
        self._pipe_clean = True

    def _make_pipeline(self, graph: str, routes: tuple[str, ...]):
        data = self.cfg.DATA
        threads = self._nvdec_graph_threads() if NVDEC in routes else int(data.NUM_THREADS)
        # A graph prefetches parts of its routes ahead; for routes with less than one video per batch that would
        # make the feeder collect (and hold) many batches ahead to find them, so such a graph does not prefetch.
        counts = self._good_videos_per_route()
        share = sum(counts[r] for r in routes) / max(1, sum(counts.values()))
        depth = self._prefetch if share * self.batch_size >= 1 else 1
        make = train_pipeline if self.training else test_pipeline
        pipe = make(self._feeder.source(graph), batch_size=self.batch_size, num_threads=threads,
                    device_id=self.device_id, prefetch_queue_depth=depth, exec_dynamic=True,
                    seed=self.seed & 0x7FFFFFFF, routes=routes, **self._graph_kwargs())
        pipe.build()
        return pipe

    def _nvdec_graph_threads(self) -> int:
        # The mixed (NVDEC) decoder runs one decoding session per pipeline thread: give it DATA.NVDEC_THREADS.
        return max(int(self.cfg.DATA.NUM_THREADS), int(self.cfg.DATA.NVDEC_THREADS))

    def _graph_kwargs(self) -> dict[str, Any]:
        """The graph function's arguments other than its source, routes and DALI's pipeline settings."""
        out = dict(dtype=self.dtype, input_size=self.input_size, nvdec_affine=bool(self.cfg.DATA.NVDEC_AFFINE),
                   augment_on_gpu=self.device == "gpu")
        if self.training:
            out["per_frame_jitter"] = self.settings.per_frame_jitter
        else:
            out["num_crop"] = self.num_crop
        return out

    def _close_pipeline(self) -> None:
        if self._feeder is not None:
            self._feeder.cancel()
            self._feeder = None
        self._release_graphs(list(self._pipes))

    def _release_graphs(self, graphs: list[str]) -> None:
        """Drop the pipelines of ``graphs``; DALI shuts a pipeline's threads and decoders down when it is freed."""
        released = [weakref.ref(self._pipes.pop(g)) for g in graphs]
        if any(r() is not None for r in released):  # still referenced (a reference cycle?): release them now
            logger.debug("a %s pipeline is still referenced after its release; collecting garbage", self.split)
            gc.collect()

    def _recover(self, failure: "_GraphFailure") -> None:
        """A graph failed (the graphs are now unusable): find the video(s) of that graph's decoder routes among
        the in-flight samples that fail to decode alone, and rebuild the graphs at the first undelivered batch.
        Each sample is decoded from what its route hands the graph (the GOP cut when the route cuts), so a failure
        of the cut is found too. A video shorter than its index says, changed since it was indexed or unreadable is
        quarantined (no route can decode frames it does not have); any other failure moves the video to its
        fallback route (or quarantines it when there is none). Its read and its decode each get DATA.VIDEO_TIMEOUT_S
        in a thread of their own, as the feeder's do: a video past it is left out of this run only, and counts in
        the videos in a row past it that end the run (``self._overdue``, which the feeders count in too)."""
        from .pipelines import decode_encoded_with_dali

        inflight = list(self._feeder.inflight)
        first = inflight[0].number if inflight else self._feeder.next
        self._close_pipeline()
        limit_s, culprits = self._overdue.limit_s, 0
        for batch in inflight:
            for s in batch.samples:
                backend = ROUTES[s.route].backend
                if (backend is None or graph_of(s.route) != failure.graph or not self.schedule.is_good(s.row)
                        or self.video_routes[s.row].route != s.route):
                    continue
                work = "read"
                try:
                    source = run_within(limit_s, self.routes[s.route].load, s)
                    work = "decode"
                    run_within(limit_s, decode_encoded_with_dali, [source.encoded], [source.frames], backend,
                               self.device_id, name=s.video.path)
                except ResultOverdue:  # a read or decode that does not end: its thread is left behind
                    self.schedule.quarantine(s.row, self._overdue.left_out(work, s.video.path), remember=False)
                    culprits += 1
                except (BadVideoError, OSError) as e:  # short, changed, empty or unreadable: the file, not the decoder
                    drop_frames(e)  # its frames hold the lone decode's pipeline (in a cycle through its future)
                    self.schedule.quarantine(s.row, failure_reason(e, s.video.path))
                    culprits += 1
                except Exception as e:  # noqa: BLE001 - any other failure of this video alone convicts it
                    drop_frames(e)
                    self._fall_back(s, e)
                    culprits += 1
                else:
                    self._overdue.answered()
        if culprits == 0:
            raise RuntimeError(f"the DALI pipeline of the {failure.graph} graph failed but every in-flight video "
                               f"decodes alone: {failure.error}") from failure.error
        self.stats["rebuilds"] += 1
        logger.warning("rebuilding the %s pipelines at batch %d of epoch %d", self.split, first, self.epoch,
                       extra=THIS_RANK_ONLY)
        self._build_pipelines(first)

    # ------------------------------------------------------------------------------------------------ iteration
    def _to_torch(self, tl) -> torch.Tensor:
        """A graph's video output as a torch tensor without a copy; on a GPU machine every route's output is on the
        GPU already (CPU routes augment there, ``pipelines._decode``)."""
        t = tl.as_tensor()
        if self.device == "gpu":
            with torch.cuda.device(self.device_id):
                return torch.from_dlpack(t)
        return torch.from_dlpack(t)

    def _run_batch(self, batch: DeliveredBatch) -> torch.Tensor:
        """Run every graph ``batch`` has a part for; the videos in the batch's planned order."""
        parts = batch.parts()
        merged = None
        for graph, positions in parts.items():
            if graph not in self._pipes:
                # A video moved during the epoch (the feeder's fallback) to a route no good video needed when the
                # graphs were built: its graph takes the parts queued for it, in order, from this batch on.
                self._pipes[graph] = self._make_pipeline(graph, graphs_serving(list(ROUTES))[graph])
            try:
                video, index = self._pipes[graph].run()
            except StopIteration:
                raise RuntimeError(f"internal error: the {graph} graph ended before batch {batch.number}") from None
            except Exception as e:  # noqa: BLE001 - DALI raises RuntimeError
                raise _GraphFailure(graph, e) from e
            got = np.array(index.as_tensor()).reshape(-1).tolist()
            rows = [batch.samples[i].row for i in positions]
            if got != rows:  # the FIFO pairing of a graph's parts and its outputs is an invariant
                raise RuntimeError(f"internal error: the {graph} graph returned rows {got}, expected {rows}")
            part = self._to_torch(video)
            if len(parts) == 1:
                return part
            if merged is None:
                merged = torch.empty((len(batch.samples),) + part.shape[1:], dtype=part.dtype, device=part.device)
            # Each part straight into its planned rows: one copy of the batch (a cat and a gather were two).
            at = torch.tensor(positions)
            if part.is_cuda:  # from pageable memory the copy would wait for the GPU's queued work first
                at = at.pin_memory().to(part.device, non_blocking=True)
            merged.index_copy_(0, at, part)
        return merged

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self._iterations += 1
        this = self._iterations
        self.schedule.plan()
        if not self._pipes or not self._pipe_clean:
            self._build_pipelines(self.position)
        else:
            self._feeder.next = self.position
        self._pipe_clean = False  # until this epoch runs to its end
        while True:
            if this != self._iterations or self._feeder is None:  # resumed after close() or a newer iteration
                raise RuntimeError(f"this iterator of the {self.split} loader was stopped by close() or by a newer "
                                   f"iteration of the loader; iterate the loader again (it goes on at batch "
                                   f"{self.position} of epoch {self.epoch})")
            try:
                batch = self._feeder.peek()
            except StopIteration:
                break
            try:
                v = self._run_batch(batch)
            except _GraphFailure as failure:
                if self._feeder.error is not None:
                    raise self._feeder.error
                # DALI's error holds the failed graph in its frames: released now, not alive beside the new graphs
                drop_frames(failure)
                self._recover(failure)
                continue
            self._feeder.inflight.popleft()
            for s in batch.samples:
                self.stats[f"samples_{s.route}"] += 1
            rows = [s.row for s in batch.samples]
            if not self.training:
                b, s = len(rows), self.input_size
                v = v.view(b, self.num_views, self.num_frames, 3, s, s)
            self.position = batch.number + 1
            labels = torch.tensor([x.label for x in batch.samples], dtype=torch.int64)
            if labels_pinned(self.device, self.training):
                labels = labels.pin_memory()
            yield {"video": v, "label": labels, "index": torch.tensor(rows, dtype=torch.int64)}
        self._end_epoch()

    def _end_epoch(self) -> None:
        """A complete epoch: every graph has its end-of-data ahead; reach it and reset the graphs for reuse. The
        next iteration is the next epoch."""
        for graph, pipe in self._pipes.items():
            try:
                pipe.run()
            except StopIteration:
                pipe.reset()
                continue
            raise RuntimeError(f"internal error: the {graph} graph has output left at the end of the epoch")
        self._pipe_clean = True
        # A graph whose last video was quarantined or moved to another route this epoch: its threads, memory and
        # decoders go now, not at the next rebuild (a clean loader reuses its graphs for every epoch).
        needed = graphs_serving(self.routes_in_use())
        self._release_graphs([g for g in self._pipes if g not in needed])
        self.index.flush_quarantines()
        if self.training:
            self.set_epoch(self.epoch + 1)
        else:  # every evaluation draws the first pass's clips: a resumed run's fresh loader scores the same ones
            self.position = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate next (its permutation and augmentations). A new epoch starts at its first
        batch; setting the current epoch again keeps the position (so resume + set_epoch works)."""
        epoch = int(epoch)
        if epoch != self.schedule.epoch:
            self.schedule.epoch = epoch
            self.position = 0

    def state_dict(self) -> dict[str, Any]:
        """Position of the loader: resume with ``load_state_dict`` to continue at the next undelivered batch."""
        return {"epoch": self.epoch, "position": self.position, "split": self.split, "seed": self.seed,
                "world_size": self.world_size, "excluded": sorted(int(r) for r in self.schedule.excluded),
                "stats": {k: v for k, v in self.stats.items() if k != "skipped"}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position saved by ``state_dict``; the next iteration yields exactly the batch that an
        uninterrupted run would have yielded next (same samples, same augmentation)."""
        for key in ("seed", "world_size"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"loader state was saved with {key}={state[key]}, this loader has "
                                 f"{getattr(self, key)}; the data order would differ")
        self.schedule.epoch = int(state["epoch"])
        self.position = int(state["position"])
        # The plan must be cut from the same rows as in the saved run; videos quarantined since (now bad in the
        # index) are substituted, as they were in that run, instead of changing the permutation. (A checkpoint that
        # records its plan had it adopted before the steps per epoch were counted, adopt_plan_state: these rows
        # are then the same.)
        if "excluded" in state:
            self.schedule.excluded = state["excluded"]
        self._pipe_clean = False

    def close(self, wait: bool = True) -> None:
        """Release the pipelines and the worker pools (the loader can be iterated again; both are recreated, and
        a new iterator goes on at the next undelivered batch). An iterator started before stops with an error."""
        self.index.flush_quarantines()
        self._close_pipeline()
        for route in self.routes.values():
            route.close(wait=wait)

    def __enter__(self) -> "VideoLoader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self):
        try:
            self.close(wait=False)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _split_list(cfg, split: str) -> tuple[str, str]:
    """(config key, list path) of ``split``'s video list: DATA.TRAIN_FILE for 'train', else DATA.VAL_FILE."""
    key = "DATA.TRAIN_FILE" if split == "train" else "DATA.VAL_FILE"
    path = cfg.DATA.TRAIN_FILE if split == "train" else cfg.DATA.VAL_FILE
    if not path:
        raise ValueError(f"{key} is empty; set it to the {split} file list")
    return key, path


def build_split_index(cfg, split: str, checked_by_peer: bool = False) -> DatasetIndex:
    """The index of ``split``'s list (:func:`_split_list`) as the loader builds it; ``checked_by_peer``: see
    :func:`~dali_pipelines.index.build_index`."""
    data = cfg.DATA
    return build_index(
        _split_list(cfg, split)[1], data.ROOT, data.NUM_CLASSES, workers=data.INDEX_WORKERS,
        full_decode=data.INDEX_FULL_DECODE, strict=data.STRICT,
        # Whichever rank takes the lock first probes and reports, with a bar on a terminal, else in lines (no
        # carriage returns in a log file).
        progress=stderr_is_terminal(), checked_by_peer=checked_by_peer, timeout_s=float(data.VIDEO_TIMEOUT_S),
        classes_name="DATA.NUM_CLASSES")


def build_loader(cfg, split: str, rank: int = 0, world_size: int = 1, device_id: int | None = None,
                 index: DatasetIndex | None = None) -> VideoLoader:
    """The loader of ``split`` ('train', or 'val'/'test': the multi-view test pipeline over DATA.VAL_FILE) for
    one rank. ``index`` reuses an already built DatasetIndex of the same list.

    Raises:
        DataListError: the list is missing or malformed.
        DataError: no readable video in the list, fewer usable training videos than one global batch
            (TRAIN.BATCH_SIZE x TRAIN.ACCUMULATION_STEPS x world size), bad videos with DATA.STRICT, or
            DATA.DECODE_DEVICE 'gpu' without CUDA.
    """
    return VideoLoader(cfg, split, rank=rank, world_size=world_size, device_id=device_id, index=index)
