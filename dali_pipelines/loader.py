"""``build_loader``: the DALI video loader for training and multi-view testing (its lifecycle).

A clip's way from a list line to a batch, and the module that owns each step:

1. ``index.py``: the list is read and every video probed once (frame count, size, codec), cached beside the list.
2. ``schedule.py``: per epoch, a global permutation from (SEED, epoch) cut into equal per-rank shares (pure numpy).
3. ``draw.py``: per sample, frame indices and augmentation from ``sample_rng(SEED, epoch, row)`` (pure).
4. ``feeder.py``: the sample goes down its decode route (``routing.py``, chosen per video at the loader's start:
   ``loader_routing.py``; file bytes for NVDEC's decoder in the graph, or frames decoded in the worker processes), a
   few batches ahead; unreadable videos are quarantined and substituted or dropped. Each batch is split into one
   part per graph.
5. ``pipelines.py``: the graphs augment their part, NVDEC's graph after decoding it. Both CPU routes decode in
   the worker processes (``host_decode.py``) and share one graph, so on a machine without NVDEC a batch leaves one
   graph in its planned order; NVDEC's graph and the CPU graph are merged back into the planned order. Outputs
   reach torch through DLPack (``loader_output.py``).

This module builds the graphs and their feeder, rebuilds them when DALI's decoder fails (``loader_fallback.py``
moves the video that broke it to a CPU route, or quarantines it), frees a graph no good video needs any more,
iterates, saves and restores the position and the plan (``loader_plan.py``), and releases everything at ``close()``
(or a ``with`` block's end). Because nothing random happens inside the graph, the stream of (index, video) is a pure
function of (SEED, epoch, position): exact mid-epoch resume, independent of thread or worker counts.
"""

from __future__ import annotations

import gc
import logging
import weakref
from typing import Any, Iterator

import numpy as np
import torch

from evautil.progress import THIS_RANK_ONLY

from .draw import DrawSettings, Sample, VideoRef
from .feeder import DeliveredBatch, Feeder, drop_frames
from .filelist import DataError
from .index import DatasetIndex
from .loader_fallback import GraphFailure, RouteFallback
from .loader_graphs import graph_kwargs, nvdec_graph_threads, prefetch_depth
from .loader_output import batch_out, clip_dtype, into_rows, labels_pinned, to_torch
from .loader_plan import (adopt_plan, check_global_batch, check_same_order, learn_from_ranks, learnt_line,
                          plan_fingerprint)
from .loader_routing import route_at_start, route_counters, serve_routes
from .loader_split import build_split_index, split_list
from .pipelines import ROUTES, convert_graph_code, graphs_serving, test_pipeline, train_pipeline
from .routing import DALI_CPU, NVDEC, PYAV, resolve_decode_device
from .schedule import Schedule
from .timed_reader import OverdueStreak

__all__ = ["VideoLoader", "build_loader", "build_split_index", "resolve_decode_device", "DataError", "clip_dtype",
           "labels_pinned"]

logger = logging.getLogger(__name__)


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
        list_key, list_path = split_list(cfg, split)
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
        self.policy, self.video_routes = route_at_start(self.index, data, self.device, self.device_id, rank,
                                                        self._list_desc)
        self.stats.update(route_counters(self.video_routes.counts(), rank))
        self.routes: dict[str, Any] = {}  # route name -> EncodedRoute / HostDecodeRoute, for the routes in use
        serve_routes(self.routes, self.routes_in_use(), data)
        self.dtype = clip_dtype(data.OUTPUT_DTYPE, self.device, cfg.TRAIN.PRECISION)
        st = self.settings
        self.num_frames, self.input_size, self.num_views = st.num_frames, st.input_size, st.num_views
        self.num_clip, self.num_crop = st.num_clip, st.num_crop
        self._prefetch = max(1, int(data.PREFETCH))  # batches each graph computes ahead
        self._lookahead = self._prefetch + 1  # batches the feeder prepares past the one a graph collects
        self.position = 0
        self._pipes: dict[str, Any] = {}  # graph name (pipelines.graph_of) -> its DALI pipeline
        self._pipe_clean = False
        self._feeder: Feeder | None = None
        self._iterations = 0  # iterators started: an older one was stopped by a newer one (or by close)
        # Videos in a row past DATA.VIDEO_TIMEOUT_S, counted across the feeders and the re-decodes of _recover
        self._overdue = OverdueStreak(float(data.VIDEO_TIMEOUT_S))
        self._fallback = RouteFallback(self.index, self.schedule, self.video_routes, self.policy, self._overdue)
        if self.training:
            self._check_global_batch()
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

    def _check_global_batch(self) -> None:
        check_global_batch(self._list_desc, len(self.schedule.usable_rows()), len(self.index.bad), self.batch_size,
                           int(self.cfg.TRAIN.ACCUMULATION_STEPS), self.world_size)

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

    def leave_out_scored(self, rows) -> None:
        """Leave the list rows ``rows`` out of this evaluation loader's batches: an earlier stopped evaluation scored
        them (``()`` puts every row back). They are neither read nor decoded; the others are dealt to the ranks by
        list row, as without them, and ``len(self)`` counts the batches left. A rank with no row left builds no
        graph and starts no decoder."""
        if self.training:
            raise ValueError(f"leave_out_scored: the {self.split} loader is no evaluation loader")
        self.schedule.scored_earlier = rows

    def plan_fingerprint(self) -> str:
        """A short digest of what the epoch plans are drawn from (the list's usable rows, the seed, the batch size
        and the world size): ranks whose loaders agree on it plan the same epochs."""
        return plan_fingerprint(self.schedule.usable_rows(), self.seed, self.batch_size, self.world_size,
                                len(self.index))

    def plan_state(self) -> dict[str, Any]:
        """What every checkpoint keeps of this rank's plan, by list row and path: the videos quarantined during the
        run (they are bad in a resumed run's index, yet were planned), by this rank or by another before an epoch's
        end (:meth:`learn_quarantines`), and, on rank 0 (the ranks plan alike), the videos the plan leaves out.
        ``adopt_plan_state`` of a resumed run takes every rank's."""
        return self.schedule.record(with_excluded=self.rank == 0)

    def quarantines_to_share(self) -> list[tuple[int, str, str, bool, tuple[int, int]]]:
        """The training videos this rank quarantined (or adopted from a checkpoint) since it last shared them,
        as ``(row, path relative to the root, reason, remembered, (size, mtime_ns))``
        (``Schedule.unshared_quarantines``); empty for
        an evaluation loader, whose ranks score shares of fixed rows (no rank reaches another's)."""
        return self.schedule.unshared_quarantines() if self.training else []

    def learn_quarantines(self, parts: list[list[tuple[int, str, str, bool, tuple[int, int]]]],
                          record: bool = True) -> None:
        """Leave out the videos the other ranks quarantined (``parts``: each rank's :meth:`quarantines_to_share`,
        in rank order), in this rank's index and the indexes it passes its quarantines to (the validation's), and
        record them in this rank's :meth:`plan_state`, and the remembered ones in this machine's index cache at once
        (``Schedule.learn_quarantines``). The plan does not change (they are substituted), so every rank keeps its
        steps per epoch. Logs one line naming the first of them. Not ``record``: this machine's files are left to
        the process of the machine that records them."""
        learnt = learn_from_ranks(self.schedule, parts, self.rank, record)
        if not learnt:
            return
        self.index.flush_quarantines()  # at the epoch's end, as this rank's own: a stopped run leaves them recorded
        logger.info("%s", learnt_line(self._list_desc, self.index, learnt))

    def adopt_plan_state(self, states: list[dict[str, Any]], rank: int | None) -> str:
        """Plan as the run whose ranks recorded ``states`` (:meth:`plan_state`, in rank order) did; ``rank``: which
        of them this process continues (None when the world size changed). Before the first batch, so that the
        steps per epoch and :meth:`plan_fingerprint` count the adopted plan. Returns a warning line, empty when the
        plan is the recorded one (:meth:`Schedule.adopt`)."""
        if self._pipes or self.position:
            raise RuntimeError("adopt_plan_state: the loader has started; adopt a plan before the first batch")
        note = adopt_plan(self.schedule, states, rank)
        self._check_global_batch()
        return note

    def sample(self, row: int) -> Sample:
        """The sample (route, frames to decode, graph parameters) of good ``row`` in the current epoch."""
        return self.schedule.sample(row)

    # ------------------------------------------------------------------------------------------------ pipeline
    def _build_pipelines(self, start: int) -> None:
        self._close_pipeline()
        serve_routes(self.routes, self.routes_in_use(), self.cfg.DATA)
        used = self.routes_in_use()
        for route in used:
            if hasattr(self.routes[route], "start"):
                self.routes[route].start()  # worker processes first, before DALI starts its threads
        # Every route served, not only those in use: a video may move to its fallback route during the epoch (its
        # graph, when none of the good videos needed it, is built at its first part: _run_batch).
        self._feeder = Feeder(self.schedule, dict(self.routes), start, lookahead=self._lookahead,
                              reroute=self._fallback.reroute, wait_limit_s=self._overdue.limit_s, overdue=self._overdue)
        self._pipes = {graph: self._make_pipeline(graph, routes) for graph, routes in graphs_serving(used).items()}
        self._pipe_clean = True

    def _make_pipeline(self, graph: str, routes: tuple[str, ...]):
        data = self.cfg.DATA
        threads = nvdec_graph_threads(data) if NVDEC in routes else int(data.NUM_THREADS)
        depth = prefetch_depth(self._good_videos_per_route(), routes, self._prefetch, self.batch_size)
        make = train_pipeline if self.training else test_pipeline
        pipe = make(self._feeder.source(graph), batch_size=self.batch_size, num_threads=threads,
                    device_id=self.device_id, prefetch_queue_depth=depth, exec_dynamic=True,
                    seed=self.seed & 0x7FFFFFFF, routes=routes, **self._graph_kwargs())
        pipe.build()
        return pipe

    def _graph_kwargs(self) -> dict[str, Any]:
        return graph_kwargs(self.cfg.DATA, self.settings, self.dtype, self.training, self.device)

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

    def _recover(self, failure: GraphFailure) -> None:
        """A graph failed (the graphs are now unusable): find the video(s) of that graph's decoder routes among
        the in-flight samples that fail to decode alone (``RouteFallback.convict``: each moves to its fallback route
        or is quarantined), and rebuild the graphs at the first undelivered batch."""
        inflight = list(self._feeder.inflight)
        first = inflight[0].number if inflight else self._feeder.next
        self._close_pipeline()
        culprits = self._fallback.convict(inflight, failure.graph, self.routes, self.device_id)
        if culprits == 0:
            raise RuntimeError(f"the DALI pipeline of the {failure.graph} graph failed but every in-flight video "
                               f"decodes alone: {failure.error}") from failure.error
        self.stats["rebuilds"] += 1
        logger.warning("rebuilding the %s pipelines at batch %d of epoch %d", self.split, first, self.epoch,
                       extra=THIS_RANK_ONLY)
        self._build_pipelines(first)

    # ------------------------------------------------------------------------------------------------ iteration
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
                raise GraphFailure(graph, e) from e
            got = np.array(index.as_tensor()).reshape(-1).tolist()
            rows = [batch.samples[i].row for i in positions]
            if got != rows:  # the FIFO pairing of a graph's parts and its outputs is an invariant
                raise RuntimeError(f"internal error: the {graph} graph returned rows {got}, expected {rows}")
            part = to_torch(video, self.device_id)
            if len(parts) == 1:
                return part
            merged = into_rows(merged, part, positions, len(batch.samples))
        return merged

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self._iterations += 1
        this = self._iterations
        self.schedule.plan()
        if not self.training and not len(self.schedule):  # nothing to score on this rank: no graph, no decoder
            self.position = 0
            return
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
            except GraphFailure as failure:
                if self._feeder.error is not None:
                    raise self._feeder.error
                # DALI's error holds the failed graph in its frames: released now, not alive beside the new graphs
                drop_frames(failure)
                self._recover(failure)
                continue
            self._feeder.inflight.popleft()
            for s in batch.samples:
                self.stats[f"samples_{s.route}"] += 1
            if not self.training:
                b, s = len(batch.samples), self.input_size
                v = v.view(b, self.num_views, self.num_frames, 3, s, s)
            self.position = batch.number + 1
            yield batch_out(v, batch.samples, labels_pinned(self.device, self.training))
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
        check_same_order(state, seed=self.seed, world_size=self.world_size)
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
