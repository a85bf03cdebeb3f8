"""``build_loader``: the DALI video loader for training and multi-view testing.

The loader owns the schedule. Per epoch it draws a global permutation from (SEED, epoch), cuts it into equal
per-rank shares, and for every sample draws frame indices and augmentation from ``sample_rng(SEED, epoch, row)``.
A feeder object, called by DALI's ``external_source``, turns the schedule into per-sample inputs (file bytes and
frame indices, or PyAV-decoded frames) a few batches ahead; the DALI graph decodes and augments on the GPU (or the
CPU). Because nothing random happens inside the graph, the stream of (index, video) is a pure function of
(SEED, epoch, position), which gives exact mid-epoch resume, and does not depend on thread or worker counts.

Failure handling: bad files found when the index is built never enter the schedule. A file that disappears or
fails to decode during the run is quarantined (``DatasetIndex.quarantine``); if DALI's decoder failed, the
pipeline is rebuilt at the first batch that was not delivered. In training a quarantined sample is replaced by a
deterministic substitute so every rank keeps the same batch size and count; in testing it is dropped (and
reported), since scoring it twice would be wrong.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
import multiprocessing as mp
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from . import augment, sampling
from .filelist import DataError
from .gop_pack import PACKABLE_CODECS, pack_for_frames
from .index import DatasetIndex, VideoInfo, build_index
from .pipelines import test_input_names, test_pipeline, train_input_names, train_pipeline
from .pyav_io import BadVideoError, decode_frames

__all__ = ["VideoLoader", "build_loader", "resolve_decode_device", "DataError"]

logger = logging.getLogger(__name__)

# Codecs that DALI's CPU decoder handles (its bundled FFmpeg has no H.264/HEVC/MPEG-4 software decoder).
_DALI_CPU_CODECS = ("vp8", "vp9", "mjpeg")


def resolve_decode_device(setting: str) -> str:
    """'gpu' or 'cpu' for DATA.DECODE_DEVICE ('auto': the GPU when CUDA is available).

    Raises:
        DataError: an unknown setting, or 'gpu' on a machine without CUDA (an input error, not a crash).
    """
    if setting == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if setting not in ("gpu", "cpu"):
        raise DataError(f"DATA.DECODE_DEVICE must be auto, gpu or cpu, got {setting!r}")
    if setting == "gpu" and not torch.cuda.is_available():
        raise DataError("DATA.DECODE_DEVICE is 'gpu' but CUDA is not available on this machine; "
                        "use 'auto' or 'cpu'")
    return setting


def _dali_cpu_codec(codec: str) -> bool:
    c = codec.lower()
    return any(k in c for k in _DALI_CPU_CODECS)


@dataclass
class _Sample:
    """One scheduled sample: its row, label and the external-source inputs (minus the decoded payload)."""

    row: int
    label: int
    inputs: dict[str, Any]
    frames: np.ndarray  # frame indices to decode (train: the clip; test: the sorted union of all clips)
    substitute_for: int | None = None
    retried: bool = False  # already resubmitted once after a worker-process crash


@dataclass
class _Batch:
    number: int  # position of this batch in the rank's epoch plan
    samples: list[_Sample]
    payload: list[Any] = field(default_factory=list)  # futures / arrays: encoded bytes or decoded frames


class _Feeder:
    """The ``external_source`` callback: hands DALI the inputs of the next planned batch.

    It keeps ``lookahead`` batches in preparation (file reads in threads, or PyAV decodes in worker processes) and
    records every batch it hands over in ``inflight`` (DALI returns outputs in the same order).
    """

    def __init__(self, loader: "VideoLoader", start: int):
        self.loader = loader
        self.next = start
        self.prepared: dict[int, _Batch] = {}
        self.inflight: collections.deque[_Batch] = collections.deque()
        self.error: BaseException | None = None

    def _prepare(self, number: int) -> None:
        if number in self.prepared or number >= self.loader._num_planned:
            return
        batch = _Batch(number, self.loader._make_samples(number))
        batch.payload = [self.loader._submit(s) for s in batch.samples]
        self.prepared[number] = batch

    def __call__(self):
        try:
            return self._next_batch()
        except StopIteration:
            raise
        except BaseException as e:  # noqa: BLE001 - kept so the loader re-raises it instead of "recovering"
            self.error = e
            raise

    def _next_batch(self):
        loader = self.loader
        while True:
            if self.next >= loader._num_planned:
                raise StopIteration
            number = self.next
            self.next += 1
            for b in range(number, number + loader._lookahead + 1):
                self._prepare(b)
            batch = self.prepared.pop(number)
            samples, payload = loader._collect(batch)
            if samples:  # a test batch whose every video was quarantined is skipped
                break
        out = _Batch(number, samples, [])
        self.inflight.append(out)
        names = loader._input_names
        columns = {n: [] for n in names}
        for s, p in zip(samples, payload):
            if loader._predecoded:
                columns["video"].append(p)
            elif isinstance(p, tuple):  # a GOP-packed stream with its renumbered frame indices
                columns["encoded"].append(p[0])
                columns["frames"].append(p[1])
            else:
                columns["encoded"].append(p)
                columns["frames"].append(s.frames.astype(np.int32))
            for k, v in s.inputs.items():
                columns[k].append(v)
        return tuple(columns[n] for n in names)


def _dali_reason(err: BaseException) -> str:
    """The informative line of a DALI error (its text is mostly pipeline traceback)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for ln in lines:
        if "failed" in ln.lower() and not ln.startswith("File "):
            return ln.split("failed: ", 1)[-1]
    return lines[0] if lines else type(err).__name__


def _read_bytes(path: str) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise BadVideoError(f"{path}: zero-byte file")
    return data


def _read_packed(path: str, frames: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The file's bytes cut down to the GOP prefixes that decoding ``frames`` needs, with the renumbered indices
    (see ``gop_pack``); the whole file's bytes when cutting does not apply."""
    data = _read_bytes(path)
    packed = pack_for_frames(data, frames)
    return data if packed is None else packed


class VideoLoader:
    """Iterable over one epoch of batches ``{'video', 'label', 'index'}`` for one rank.

    - train: ``video`` (B, T, 3, S, S); every rank gets ``len(self)`` full batches per epoch.
    - val/test: ``video`` (B, V, T, 3, S, S), V = NUM_CLIP * NUM_CROP ordered [crop][clip]; rank r covers good
      rows r::world once, the last batch may be partial.

    ``label`` and ``index`` (row in the list) are int64 on the same device as ``video``. GPU videos are handed to
    torch through DLPack without a copy; the tensors stay valid until released by torch.

    Position: ``state_dict()`` / ``load_state_dict()`` hold (epoch, batches consumed); iterating after
    ``load_state_dict`` continues at the exact next batch. A finished epoch advances ``epoch`` by one;
    ``set_epoch(e)`` with a different epoch starts that epoch from its beginning (the same epoch keeps a resumed
    position).
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
        list_path = data.TRAIN_FILE if self.training else data.VAL_FILE
        if not list_path:
            key = "DATA.TRAIN_FILE" if self.training else "DATA.VAL_FILE"
            raise ValueError(f"{key} is empty; set it to the {split} file list")
        self.index = index if index is not None else build_index(
            list_path, data.ROOT, data.NUM_CLASSES, workers=data.INDEX_WORKERS, full_decode=data.INDEX_FULL_DECODE,
            strict=data.STRICT, progress=rank == 0)
        list_key = "DATA.TRAIN_FILE" if self.training else "DATA.VAL_FILE"
        self._list_desc = f"{list_key} {list_path}"
        if not self.index.good_rows:
            raise DataError(f"{self._list_desc}: none of its {len(self.index)} videos is readable "
                            f"(DATA.ROOT {data.ROOT!r}); {self._bad_examples()}")

        self.device = resolve_decode_device(data.DECODE_DEVICE)
        if self.device == "gpu":
            self.device_id = torch.cuda.current_device() if device_id is None else int(device_id)
            self._decode_device = "mixed"
            self._predecoded = False
            self.cpu_decoder = None
        else:
            self.device_id = None
            self._decode_device = "cpu"
            choice = data.CPU_DECODER
            if choice == "auto":
                codecs = {self.index.infos[r].codec for r in self.index.good_rows}
                choice = "dali" if all(_dali_cpu_codec(c) for c in codecs) else "pyav"
            elif choice == "dali":
                other = sorted({i.codec for i in self.index.infos.values() if not _dali_cpu_codec(i.codec)})
                if other:
                    raise ValueError(f"DATA.CPU_DECODER is 'dali' but {list_path} has {', '.join(other)} videos, "
                                     "which DALI cannot decode on the CPU; use 'auto' or 'pyav'")
            elif choice != "pyav":
                raise ValueError(f"DATA.CPU_DECODER must be auto, dali or pyav, got {choice!r}")
            self.cpu_decoder = choice
            self._predecoded = choice == "pyav"
        # DALI's CPU decoder decodes every frame from 0 up to the last requested one (it never seeks); handing it
        # only the GOP prefixes the sampled frames need cuts that work (gop_pack.py). The GPU route is unchanged.
        self._pack_gops = (self.device == "cpu" and not self._predecoded and bool(data.CPU_PACK_GOPS))
        dtype = data.OUTPUT_DTYPE
        self.dtype = ("float16" if self.device == "gpu" else "float32") if dtype == "auto" else dtype

        self.num_frames = data.NUM_FRAMES
        self.input_size = data.INPUT_SIZE
        self.batch_size = cfg.TRAIN.BATCH_SIZE if self.training else cfg.TEST.BATCH_SIZE
        self.num_clip = 1 if self.training else cfg.TEST.NUM_CLIP
        self.num_crop = 1 if self.training else cfg.TEST.NUM_CROP
        self.num_views = self.num_clip * self.num_crop
        self.seed = int(cfg.SEED)
        self._prefetch = max(1, int(data.PREFETCH))
        self._lookahead = self._prefetch + 1
        self._input_names = (train_input_names(self._predecoded) if self.training
                             else test_input_names(self._predecoded, self.num_crop))

        self.epoch = 0
        self.position = 0
        # Rows left out of every epoch's schedule: the videos that were bad when the index was built. Videos that
        # fail later are substituted (train) or dropped (test) but stay in the permutation, so the schedule (and
        # every rank's batch count) does not depend on which rank happened to find a bad file, or when.
        self._excluded: set[int] = set(self.index.bad)
        self._plan: list[np.ndarray] = []
        self._order: np.ndarray = np.zeros(0, np.int64)
        self._plan_key: tuple | None = None
        self._pipe = None
        self._pipe_clean = False
        self._feeder: _Feeder | None = None
        self._pool: cf.Executor | None = None
        self._substitutions: set[tuple[int, int, int]] = set()
        self._pool_deaths = 0
        self.stats: dict[str, Any] = {
            "bad_at_index": len(self.index.bad), "skipped_videos": 0, "substituted": 0, "rebuilds": 0,
            "skipped": [],  # "path: reason" of every video quarantined during this loader's life
        }
        if self.training:
            self._check_global_batch(len(self._usable_rows()))

    def _bad_examples(self, limit: int = 3) -> str:
        """One line naming the first bad videos with their reasons and the quarantine file that lists them all."""
        bad = sorted(self.index.bad.items())
        if not bad:
            return "no bad video recorded"
        named = "; ".join(f"{self.index.entries[r].path}: {why}" for r, why in bad[:limit])
        more = f"; and {len(bad) - limit} more" if len(bad) > limit else ""
        return f"e.g. {named}{more} (all listed in {self.index.quarantine_path})"

    def _check_global_batch(self, usable: int) -> None:
        b, w = self.batch_size, self.world_size
        if usable < b * w:
            bad = f", {len(self.index.bad)} of the listed videos are unreadable" if self.index.bad else ""
            raise DataError(
                f"{self._list_desc}: {usable} usable training videos{bad}; one global batch needs "
                f"TRAIN.BATCH_SIZE {b} x world size {w} = {b * w}; lower TRAIN.BATCH_SIZE or list more videos")

    # ------------------------------------------------------------------------------------------------ schedule
    def _usable_rows(self) -> np.ndarray:
        rows = [e.row for e in self.index.entries if e.row not in self._excluded]
        return np.asarray(sorted(rows), dtype=np.int64)

    def _build_plan(self) -> None:
        """This rank's batches (arrays of rows) for ``self.epoch``."""
        key = (self.epoch, tuple(sorted(self._excluded)))
        if self._plan_key == key:
            return
        rows = self._usable_rows()
        b, w = self.batch_size, self.world_size
        if self.training:
            order = rows[np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch]).permutation(len(rows))]
            n_batches = len(rows) // (b * w)
            if n_batches == 0:
                self._check_global_batch(len(rows))
            mine = order[: n_batches * b * w][self.rank::w]
            self._order = order
            self._plan = [mine[i * b:(i + 1) * b] for i in range(n_batches)]
        else:
            mine = rows[self.rank::w]
            self._order = rows
            self._plan = [mine[i:i + b] for i in range(0, len(mine), b)]
        self._plan_key = key

    @property
    def _num_planned(self) -> int:
        return len(self._plan)

    def __len__(self) -> int:
        self._build_plan()
        return len(self._plan)

    def _is_good(self, row: int) -> bool:
        return row in self.index.infos

    def _substitute(self, row: int) -> int:
        """Deterministic stand-in for a quarantined training row: the next good row after it in the epoch order."""
        pos = int(np.nonzero(self._order == row)[0][0])
        n = len(self._order)
        for k in range(1, n + 1):
            cand = int(self._order[(pos + k) % n])
            if self._is_good(cand):
                return cand
        raise DataError(f"{self._list_desc}: no readable training video is left (every one was quarantined "
                        f"during the run); {self._bad_examples()}")

    def _sample(self, row: int, substitute_for: int | None = None) -> _Sample:
        info: VideoInfo = self.index.infos[row]
        label = self.index.entries[row].label
        rng = sampling.sample_rng(self.seed, self.epoch, row)
        data, aug_cfg = self.cfg.DATA, self.cfg.AUG
        n, t = info.num_frames, self.num_frames
        if self.training:
            if data.SAMPLING == "dense":
                frames = sampling.dense_indices(n, t, data.FRAME_INTERVAL, rng)
            else:
                frames = sampling.segment_indices(n, t, rng)
            a = augment.draw_train_aug(
                rng, info.width, info.height, self.input_size, t, scales=tuple(aug_cfg.CROP_SCALES),
                flip_prob=aug_cfg.FLIP, jitter_prob=aug_cfg.COLOR_JITTER, gray_prob=aug_cfg.GRAY_SCALE,
                per_frame_jitter=aug_cfg.JITTER_PER_FRAME)
            inputs = {"roi_start": a.roi_start, "roi_end": a.roi_end, "mirror": np.array(a.mirror, np.int32),
                      "brightness": a.brightness, "contrast": a.contrast, "saturation": a.saturation,
                      "hue": a.hue, "color_ops": a.color_ops, "index": np.array(row, np.int32)}
            return _Sample(row, label, inputs, frames, substitute_for)
        mode = self.cfg.TEST.SAMPLING
        if data.SAMPLING == "dense":
            clips = sampling.dense_multiview_indices(n, t, data.FRAME_INTERVAL, self.num_clip, mode, rng)
        else:
            clips = sampling.multiview_indices(n, t, self.num_clip, mode, rng)
        union = np.unique(clips)  # each frame is decoded once, however many views use it
        pos = np.searchsorted(union, clips)  # (NUM_CLIP, T) positions in the union
        order = np.concatenate([c * len(union) + pos.reshape(-1) for c in range(self.num_crop)]).astype(np.int32)
        inputs = {"new_order": order, "index": np.array(row, np.int32)}
        rois = augment.test_view_rois(info.width, info.height, self.input_size, self.num_crop)
        for c, (start, end) in enumerate(rois):
            inputs[f"roi_start@{c}"] = start
            inputs[f"roi_end@{c}"] = end
        return _Sample(row, label, inputs, union, substitute_for)

    def _make_samples(self, number: int) -> list[_Sample]:
        out = []
        for row in self._plan[number]:
            row = int(row)
            if self._is_good(row):
                out.append(self._sample(row))
            elif self.training:
                out.append(self._sample(self._substitute(row), substitute_for=row))
                self._count_substitution(number, row)
            # test: a quarantined video is dropped from its batch
        return out

    # ------------------------------------------------------------------------------------------------ payloads
    def _executor(self) -> cf.Executor:
        if self._pool is None:
            workers = int(self.cfg.DATA.NUM_WORKERS)
            if self._predecoded:
                # Separate processes decode in parallel (PyAV holds the GIL while converting to RGB). 'fork' starts
                # workers instantly and works from scripts without a __main__ guard ('spawn' re-imports __main__);
                # the workers only run PyAV/numpy, never DALI or CUDA, and _build_pipeline starts them before the
                # first DALI pipeline exists (DALI's own parallel external source forks the same way).
                self._pool = (cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"))
                              if workers > 0 else _InlineExecutor())
            else:
                self._pool = cf.ThreadPoolExecutor(max(1, workers), thread_name_prefix="video-read")
        return self._pool

    def _path(self, row: int) -> str:
        return self.index.entries[row].path

    def _submit(self, s: _Sample) -> cf.Future:
        if self._predecoded:
            return self._executor().submit(decode_frames, self._path(s.row), s.frames, 1)
        if self._pack_gops and self.index.infos[s.row].codec.lower() in PACKABLE_CODECS:
            return self._executor().submit(_read_packed, self._path(s.row), s.frames)
        return self._executor().submit(_read_bytes, self._path(s.row))

    def _collect(self, batch: _Batch) -> tuple[list[_Sample], list[Any]]:
        """Wait for a batch's payloads; quarantine videos that cannot be read (and substitute or drop them)."""
        samples, payload = [], []
        for s, fut in zip(batch.samples, batch.payload):
            while s is not None:
                try:
                    data = fut.result()
                    samples.append(s)
                    payload.append(data)
                    self._pool_deaths = 0
                    break
                except cf.BrokenExecutor as e:
                    # A worker process died (e.g. FFmpeg crashed): start a new pool and retry once; a video that
                    # kills the pool twice is quarantined. Pools that keep dying point at the environment, not at
                    # the videos: stop rather than quarantine the whole dataset.
                    self._pool = None
                    self._pool_deaths += 1
                    if self._pool_deaths > 4:
                        raise RuntimeError("the PyAV decoding worker processes keep dying; see their errors above "
                                           "(DATA.NUM_WORKERS 0 decodes in the main process)") from e
                    if not s.retried:
                        s.retried = True
                        fut = self._submit(s)
                        continue
                    s = self._replace(s, batch.number, "the decoding worker process died twice on this video")
                except (OSError, BadVideoError, ValueError, RuntimeError) as e:
                    s = self._replace(s, batch.number, f"{type(e).__name__}: {e}")
                if s is not None:
                    fut = self._submit(s)
        return samples, payload

    def _replace(self, s: _Sample, number: int, reason: str) -> _Sample | None:
        """Quarantine ``s``'s video; its training substitute, or None in testing (the video is dropped)."""
        self._quarantine(s.row, reason)
        if not self.training:
            return None
        orig = s.substitute_for if s.substitute_for is not None else s.row
        self._count_substitution(number, orig)
        return self._sample(self._substitute(s.row), substitute_for=orig)

    def _count_substitution(self, number: int, row: int) -> None:
        key = (self.epoch, number, row)
        if key not in self._substitutions:  # a rebuilt pipeline re-plans the same batches: count them once
            self._substitutions.add(key)
            self.stats["substituted"] += 1

    def _quarantine(self, row: int, reason: str) -> None:
        if not self._is_good(row):
            return
        path = self._path(row)
        logger.warning("quarantining %s (row %d): %s", path, row, reason)
        self.index.quarantine(row, reason)
        self.stats["skipped_videos"] += 1
        self.stats["skipped"].append(f"{path}: {reason}")

    # ------------------------------------------------------------------------------------------------ pipeline
    def _build_pipeline(self, start: int) -> None:
        self._close_pipeline()
        if self._predecoded and self._pool is None:
            self._executor().submit(int).result()  # fork the decoding workers now, before DALI starts threads
        self._feeder = _Feeder(self, start)
        common = dict(batch_size=self.batch_size, num_threads=int(self.cfg.DATA.NUM_THREADS),
                      device_id=self.device_id, prefetch_queue_depth=self._prefetch, exec_dynamic=True,
                      seed=self.seed & 0x7FFFFFFF)
        if self.training:
            pipe = train_pipeline(self._feeder, input_size=self.input_size, decode_device=self._decode_device,
                                  predecoded=self._predecoded, dtype=self.dtype,
                                  per_frame_jitter=bool(self.cfg.AUG.JITTER_PER_FRAME), **common)
        else:
            pipe = test_pipeline(self._feeder, input_size=self.input_size, num_crop=self.num_crop,
                                 decode_device=self._decode_device, predecoded=self._predecoded, dtype=self.dtype,
                                 **common)
        pipe.build()
        self._pipe = pipe
        self._pipe_clean = True

    def _close_pipeline(self) -> None:
        if self._feeder is not None:
            for b in self._feeder.prepared.values():
                for f in b.payload:
                    f.cancel()
            self._feeder = None
        self._pipe = None  # DALI shuts the pipeline's threads down when the object is released

    def _recover(self, err: Exception) -> None:
        """DALI failed (the pipeline is now unusable): find the video(s) among the in-flight samples that fail
        to decode alone, quarantine them, and rebuild the pipeline at the first undelivered batch."""
        from .pipelines import decode_with_dali

        inflight = list(self._feeder.inflight)
        first = inflight[0].number if inflight else self._feeder.next
        self._close_pipeline()
        culprits = 0
        for batch in inflight:
            for s in batch.samples:
                if not self._is_good(s.row):
                    continue
                try:
                    decode_with_dali([self._path(s.row)], [s.frames], self._decode_device, self.device_id)
                except Exception as e:  # noqa: BLE001 - any failure of this video alone convicts it
                    self._quarantine(s.row, f"decode failed during the run: {_dali_reason(e)}")
                    culprits += 1
        if culprits == 0:
            raise RuntimeError(f"the DALI pipeline failed but every in-flight video decodes alone: {err}") from err
        self.stats["rebuilds"] += 1
        logger.warning("rebuilding the %s pipeline at batch %d of epoch %d", self.split, first, self.epoch)
        self._build_pipeline(first)

    # ------------------------------------------------------------------------------------------------ iteration
    def _to_torch(self, tl) -> torch.Tensor:
        t = tl.as_tensor()
        if self.device == "gpu":
            with torch.cuda.device(self.device_id):
                return torch.from_dlpack(t)
        return torch.from_dlpack(t)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self._build_plan()
        if self._pipe is None or not self._pipe_clean:
            self._build_pipeline(self.position)
        else:
            self._feeder.next = self.position
        self._pipe_clean = False  # until this epoch runs to its end
        while True:
            try:
                video, index = self._pipe.run()
            except StopIteration:
                break
            except Exception as e:  # noqa: BLE001 - DALI raises RuntimeError; anything from the feeder re-raises
                if self._feeder.error is not None:
                    raise self._feeder.error
                self._recover(e)
                continue
            batch = self._feeder.inflight.popleft()
            rows = [s.row for s in batch.samples]
            got = np.array(index.as_tensor()).reshape(-1).tolist()
            if got != rows:  # the FIFO pairing of feeder batches and pipeline outputs is an invariant
                raise RuntimeError(f"internal error: pipeline returned rows {got}, expected {rows}")
            v = self._to_torch(video)
            if not self.training:
                b, s = len(rows), self.input_size
                v = v.view(b, self.num_views, self.num_frames, 3, s, s)
            labels = torch.tensor([x.label for x in batch.samples], dtype=torch.int64)
            idx = torch.tensor(rows, dtype=torch.int64)
            self.position = batch.number + 1
            yield {"video": v, "label": labels.to(v.device, non_blocking=True),
                   "index": idx.to(v.device, non_blocking=True)}
        # A complete epoch: the pipeline can be reset and reused; the next iteration is the next epoch.
        self._pipe.reset()
        self._pipe_clean = True
        self._feeder.inflight.clear()
        self.set_epoch(self.epoch + 1)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate next (its permutation and augmentations). A new epoch starts at its first
        batch; setting the current epoch again keeps the position (so resume + set_epoch works)."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self.position = 0

    def state_dict(self) -> dict[str, Any]:
        """Position of the loader: resume with ``load_state_dict`` to continue at the next undelivered batch."""
        self._build_plan()
        return {"epoch": self.epoch, "position": self.position, "split": self.split, "seed": self.seed,
                "world_size": self.world_size, "excluded": sorted(int(r) for r in self._excluded),
                "stats": {k: v for k, v in self.stats.items() if k != "skipped"}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position saved by ``state_dict``; the next iteration yields exactly the batch that an
        uninterrupted run would have yielded next (same samples, same augmentation)."""
        for key in ("seed", "world_size"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"loader state was saved with {key}={state[key]}, this loader has "
                                 f"{getattr(self, key)}; the data order would differ")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        # The schedule must be cut from the same rows as in the saved run; videos quarantined since (now bad in the
        # index) are substituted, as they were in that run, instead of changing the permutation.
        if "excluded" in state:
            self._excluded = set(int(r) for r in state["excluded"])
        self._pipe_clean = False

    def close(self, wait: bool = True) -> None:
        """Release the pipeline and the worker pool (the loader can be iterated again; both are recreated)."""
        self._close_pipeline()
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None

    def __del__(self):
        try:
            self.close(wait=False)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class _InlineExecutor(cf.Executor):
    """Runs submissions immediately in the calling thread (DATA.NUM_WORKERS = 0 on the PyAV route)."""

    def submit(self, fn, /, *args, **kwargs):
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - delivered through the future like a real executor
            fut.set_exception(e)
        return fut


def build_loader(cfg, split: str, rank: int = 0, world_size: int = 1, device_id: int | None = None,
                 index: DatasetIndex | None = None) -> VideoLoader:
    """The loader of ``split`` ('train', or 'val'/'test': the multi-view test pipeline over DATA.VAL_FILE) for
    one rank. ``index`` reuses an already built DatasetIndex of the same list.

    Raises:
        DataListError: the list is missing or malformed.
        DataError: no readable video in the list, fewer usable training videos than one global batch
            (TRAIN.BATCH_SIZE x world size), bad videos with DATA.STRICT, or DATA.DECODE_DEVICE 'gpu' without CUDA.
    """
    return VideoLoader(cfg, split, rank=rank, world_size=world_size, device_id=device_id, index=index)
