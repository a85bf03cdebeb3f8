"""The multi-view test loader of ``predict`` and ``extract_features``' views (:func:`build_view_loader`): their
videos written as a list in the work folder, indexed as training indexes its lists, and read through the same public
entry point as evaluation (``dali_pipelines.loader.build_loader(cfg, 'test', ...)``) so that a prediction sees
exactly the views an evaluation run sees; :class:`ViewLoader` maps its batches back to the caller's videos and says
which were not read. ``tools.inference`` re-exports both and runs the loop through the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from typing import Iterable, Sequence

import numpy as np
import torch

from engine.distributed import DistContext, barrier
from evautil.progress import counted

__all__ = ["ViewLoader", "build_view_loader", "STILL_IMAGE"]


class ViewLoader:
    """The multi-view test loader over some videos (from :func:`build_view_loader`): batches
    ``{'video': (B, V, T, 3, S, S), 'index': (B,)}`` with ``index`` the position in the caller's ``paths``, and,
    after the iteration, :meth:`unreadable` for the videos that gave no batch; :meth:`turned` for those a player
    would turn (:meth:`learn_turns` for those whose record has no turn)."""

    def __init__(self, loader, positions: Sequence[int], unreadable: dict[int, str], index=None):
        self.loader = loader  # None when no video is readable
        self._positions = torch.as_tensor(list(positions), dtype=torch.int64)  # list row -> position in paths
        self._at_start = unreadable  # position -> reason: unlistable names and videos the index left out
        self._index = index
        self._bad_at_start = set(index.bad) if index is not None else set()

    def __len__(self) -> int:
        return len(self.loader) if self.loader is not None else 0

    def __iter__(self):
        if self.loader is None:
            return
        for batch in self.loader:
            yield {**batch, "index": self._positions[batch["index"]]}

    def unreadable(self, ctx: DistContext) -> dict[int, str]:
        """Positions of the videos not read, with each one's own reason: those known before the iteration
        (reported by the main rank only: every rank sees the same) and those this rank quarantined while decoding.
        Call after the iteration."""
        rows = dict(self._at_start) if ctx.is_main else {}
        if self._index is not None:
            rows.update({int(self._positions[r]): why for r, why in self._index.bad.items()
                         if r not in self._bad_at_start})
        return rows

    def turned(self) -> dict[int, int]:
        """Positions of the readable videos whose display matrix turns them (a phone's portrait video), with the
        turn in degrees counter-clockwise as the index's probe recorded it from the frame it decoded (no video is
        opened again; ``ROTATION_NOT_RECORDED`` for a record of a cache older than that). The same on every rank."""
        if self._index is None:
            return {}
        turns = self._index.table.columns["rotation"]
        rows = np.flatnonzero(self._index.good_mask & (turns != 0))
        return {int(self._positions[r]): int(turns[r]) for r in rows.tolist()}

    def learn_turns(self, positions: Iterable[int]) -> None:
        """Read the display turn of those of ``positions`` (videos this rank read) whose record has none
        (``ROTATION_NOT_RECORDED``: an index cache migrated from before the turn) from their first frame, and keep
        it in the index and its cache (:meth:`DatasetIndex.record_turns`): :meth:`turned` gives it from then on, and
        a later run on these videos decodes no first frame for it."""
        if self._index is None:
            return
        from dali_pipelines import pyav_probe
        from dali_pipelines.video_table import ROTATION_NOT_RECORDED

        row_of = {position: row for row, position in enumerate(self._positions.tolist())}
        turns = self._index.table.columns["rotation"]
        rows = sorted({row_of[p] for p in positions if p in row_of})
        unknown = [r for r in rows if self._index.is_good(r) and turns[r] == ROTATION_NOT_RECORDED]
        if unknown:
            self._index.record_turns({r: pyav_probe.display_rotation(self._index.path(r)) for r in unknown})

    def close(self) -> None:
        if self.loader is not None:
            self.loader.close()


def build_view_loader(cfg, paths: Sequence[str], work_dir: str, ctx: DistContext,
                      progress: bool = True) -> ViewLoader:
    """The multi-view test loader (TEST.NUM_CLIP x TEST.NUM_CROP views) over ``paths``, sharded over the ranks.

    The videos are written as a list (label 0, unused) in ``work_dir``, named by a hash of its paths: runs on other
    videos sharing the work dir never read it, and a run on the same videos reuses its index cache (kept beside
    it). Rows are mapped back to ``paths`` by path, after checking that the index holds exactly the videos listed.
    A name no list line can hold (a line break, edge whitespace, not UTF-8) is reported unreadable with the reason,
    as is every video the index leaves out; when none is readable the loader yields nothing. This and
    :class:`ViewLoader` are the only contact with the data loader.

    Raises:
        DataError: the list does not hold the videos written to it, or the loader cannot run as configured.
    """
    from dali_pipelines.filelist import DataError
    from dali_pipelines.index import build_index, progress_lines_on_stderr
    from evautil.files import atomic_write_text
    from evautil.progress import stderr_is_terminal
    from tools.kinetics.video_names import unlistable_reason

    unreadable: dict[int, str] = {}
    listed: list[int] = []
    for pos, path in enumerate(paths):
        why = unlistable_reason(path)
        if why:
            unreadable[pos] = f"cannot be passed to the loader's video list: {why}"
        else:
            listed.append(pos)
    if not listed:
        return ViewLoader(None, [], unreadable)
    text = "".join(f"{paths[i]} 0\n" for i in listed)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    list_path = os.path.join(os.path.abspath(work_dir), f"videos-{digest}.txt")
    if ctx.is_main:
        atomic_write_text(list_path, text, fsync=False)  # the same text when another run has the same videos
    barrier(ctx)
    data = cfg.DATA
    lines = progress and not stderr_is_terminal()  # a first index of many videos: a line every 30 s
    with progress_lines_on_stderr(warnings=True) if lines else contextlib.nullcontext():
        index = build_index(list_path, "", data.NUM_CLASSES, workers=data.INDEX_WORKERS,
                            full_decode=data.INDEX_FULL_DECODE, strict=False, timeout_s=float(data.VIDEO_TIMEOUT_S),
                            classes_name="DATA.NUM_CLASSES",
                            progress=progress and stderr_is_terminal(),  # as the loader builds it: any rank probes
                            root_name=None)  # a named file that is missing is reported as unreadable
        position_of = {paths[i]: i for i in listed}
        positions = [position_of.get(index.path(r), -1) for r in range(len(index))]
        if sorted(positions) != listed:
            raise DataError(f"{list_path} does not hold the {len(listed)} videos written to it (changed by another "
                            "process?); run again, or give this run a --work-dir of its own")
        single = np.flatnonzero(index.good_mask & (index.table.columns["num_frames"] < 2))
        for row in single.tolist():  # a still image (PNG, JPEG) opens as a one-frame video: no motion to classify
            index.quarantine(row, STILL_IMAGE, remember=False)
        _warn_still_images(index, single.tolist())  # where the index's warnings go: they named the other bad ones
    for row, why in index.bad.items():
        unreadable[positions[row]] = why
    if not index.good_mask.any():  # the loader would refuse the list with one message for all videos
        return ViewLoader(None, positions, unreadable)
    test_cfg = cfg.clone()
    test_cfg.defrost()
    test_cfg.DATA.ROOT, test_cfg.DATA.VAL_FILE, test_cfg.DATA.STRICT = "", list_path, False
    test_cfg.freeze()
    from dali_pipelines.loader import build_loader

    loader = build_loader(test_cfg, "test", ctx.rank, ctx.world_size, ctx.device_id, index=index)
    return ViewLoader(loader, positions, unreadable, index)


STILL_IMAGE = "a single frame: a still image, not a video"


def _warn_still_images(index, rows: Sequence[int]) -> None:
    """A ``bad video`` warning per still image, in the index's words and on its logger (the first
    ``BAD_VIDEOS_NAMED``, then a count): a one-frame video passes the index's probe, so its warnings never named
    them, while they named every other video the results report unreadable."""
    from dali_pipelines.dataset_index import BAD_VIDEOS_NAMED

    index_logger = logging.getLogger("dali_pipelines.index")
    for row in rows[:BAD_VIDEOS_NAMED]:
        index_logger.warning("bad video %s: %s", os.path.abspath(index.path(row)), STILL_IMAGE)
    if len(rows) > BAD_VIDEOS_NAMED:
        index_logger.warning("and %s", counted(len(rows) - BAD_VIDEOS_NAMED, "more still image"))
