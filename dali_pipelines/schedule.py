"""The epoch plan and the schedule: which rows each batch of a rank holds, and the samples drawn for them.

:func:`epoch_plan` is pure numpy: from the usable rows, (seed, epoch), the batch size and the rank it cuts one
global permutation into equal per-rank shares (training) or deals the rows out in list order (testing).
:func:`substitute_row` picks the deterministic stand-in for a quarantined training row. Neither reads a file.

:class:`Schedule` puts the plan, the per-sample draw (``draw.py``) and the dataset index together for one loader:
it hands out the planned samples of a batch, quarantines a video that failed and returns its substitute. It is the
only object the feeder talks to; it keeps the loader's failure counters (``stats``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from evautil.progress import THIS_RANK_ONLY

from .draw import DrawSettings, Sample, VideoRef, draw_sample
from .filelist import DataError
from .index import DatasetIndex
from .video_table import BAD

__all__ = ["EpochPlan", "epoch_plan", "substitute_row", "Schedule", "VideoId"]

logger = logging.getLogger(__name__)

# A video as a checkpoint names it: its list row and its path relative to DATA.ROOT. Rows alone would name other
# videos in an edited list; the path alone would not tell a duplicated line apart. A rebuilt index of the same list
# (another machine, another mount of the root) has both.
VideoId = tuple[int, str]


@dataclass(frozen=True)
class EpochPlan:
    """``order``: the epoch's order of the usable rows (substitutes are searched in it); ``batches``: this rank's
    batches, arrays of rows."""

    order: np.ndarray
    batches: list[np.ndarray]


def epoch_plan(rows: np.ndarray, seed: int, epoch: int, batch_size: int, rank: int, world_size: int,
               training: bool) -> EpochPlan:
    """This rank's batches for ``epoch``.

    Training: one permutation of ``rows`` drawn from (seed, epoch), cut to whole global batches (batch size x
    world size; the remainder is dropped), rank r taking every world_size-th row from r: every rank gets the same
    number of full batches. Testing: rank r takes the list rows r, r + world_size, r + 2 x world_size, ... that are
    in ``rows``, in list order, the last batch may be short. Dealt by list row, not by position among the usable
    rows: a rank's share then does not depend on which videos the other ranks left out (a video one rank
    quarantined during an earlier evaluation, or one rank's index of the list that differs), so every video usable
    on the rank it falls to is scored exactly once.
    """
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    b, w = int(batch_size), int(world_size)
    if training:
        order = rows[np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch)]).permutation(len(rows))]
        n_batches = len(rows) // (b * w)
        mine = order[: n_batches * b * w][rank::w]
        return EpochPlan(order, [mine[i * b:(i + 1) * b] for i in range(n_batches)])
    mine = rows[rows % w == rank]
    return EpochPlan(rows, [mine[i:i + b] for i in range(0, len(mine), b)])


def substitute_row(order: np.ndarray, row: int, is_good: Callable[[int], bool]) -> int | None:
    """The next good row after ``row`` in the epoch ``order`` (wrapping around), or None when none is good."""
    pos = int(np.nonzero(order == row)[0][0])
    n = len(order)
    for k in range(1, n + 1):
        cand = int(order[(pos + k) % n])
        if is_good(cand):
            return cand
    return None


class Schedule:
    """The samples of one rank's epochs, over one dataset index.

    ``excluded``: rows left out of every epoch's plan (the videos that were bad when the index was built). Videos
    quarantined later stay in the plan and are substituted (training) or dropped (testing), so the plan, and every
    rank's batch count, does not depend on which rank found a bad file, or when. A resumed run's index already marks
    those bad: :meth:`record` and :meth:`adopt` carry both sets across, so that its plan is the interrupted one's.
    ``route_of(video)`` names the decode route of a video; ``draw`` is the per-sample draw (replaceable, e.g. by
    a test that wants static clips). ``strict`` (DATA.STRICT): a video that fails during the run is an error
    (:meth:`quarantine` records it, then raises a DataError).
    """

    def __init__(self, index: DatasetIndex, settings: DrawSettings, seed: int, batch_size: int, rank: int,
                 world_size: int, route_of: Callable[[VideoRef], str], list_desc: str, strict: bool = False):
        self.index = index
        self.settings = settings
        self.seed = int(seed)
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self.route_of = route_of
        self.list_desc = list_desc
        self.strict = bool(strict)  # DATA.STRICT: a video that fails during the run is an error, not quarantined
        self.draw = draw_sample
        self._excluded_version = 0
        self.excluded = index.bad
        self._scored: frozenset[int] = frozenset()  # test rows an earlier stopped evaluation scored (scored_earlier)
        self.epoch = 0
        self._plan: EpochPlan | None = None
        self._plan_key: tuple | None = None
        self.limit: int | None = None  # batches an epoch hands out, from its first (None: the plan's every batch)
        self._substitutions: set[tuple[int, int, int]] = set()
        self._quarantined: set[int] = set()  # rows quarantined during the run (substituted, not excluded)
        self._quarantined_lock = threading.Lock()  # the feeder's thread quarantines while a checkpoint records
        self._told: set[int] = set()  # rows of _quarantined the other ranks know of (unshared_quarantines)
        self._run_only: set[int] = set()  # rows of _quarantined left out for this run only (not remembered)
        self._left_out_later: set[int] = set()  # planned test rows another loader quarantined after this one's build
        # rows this loader's failures left out beside the failed one (other lines naming its file), and those of them
        # counted (_count_left_out)
        self._same_file: set[int] = set()
        self._same_file_counted: set[int] = set()
        self.stats: dict[str, Any] = {
            # Left out of this loader's plans: bad when the list was indexed, or quarantined by an earlier loader of
            # the same index (a video validation found broken, when the final test is built over its index).
            "bad_at_index": len(index.bad) - len(index.quarantined_at_run),
            # testing: of this rank's share only (rows r with r % world_size == rank), so that the sum over the
            # ranks counts a video once, however many ranks' indexes learnt of it (each training rank passes its own
            # quarantines on: runner.check_lists_overlap)
            "quarantined_earlier": sum(1 for r in index.quarantined_at_run
                                       if settings.training or int(r) % self.world_size == self.rank),
            "skipped_videos": 0, "substituted": 0, "rebuilds": 0,
            "worker_restarts": 0,  # PyAV decode pools restarted after a worker process died
            "skipped": [],  # "path: reason" of every video quarantined during this loader's life
        }

    # ------------------------------------------------------------------------------------------------ the plan
    @property
    def excluded(self) -> frozenset[int]:
        return self._excluded

    @excluded.setter
    def excluded(self, rows) -> None:
        # Replaced whole, never changed in place: a version number then keys the plan (sorting tens of thousands
        # of excluded rows for a key cost milliseconds on every batch).
        self._excluded = frozenset(int(r) for r in rows)
        self._excluded_version += 1

    @property
    def scored_earlier(self) -> frozenset[int]:
        """Test rows an earlier stopped evaluation scored: left out of the test plan, so that they are neither read
        nor decoded again. The other rows are dealt to the ranks by list row as before (``epoch_plan``), so every
        rank scores what it would have scored of them in an evaluation that was never stopped."""
        return self._scored

    @scored_earlier.setter
    def scored_earlier(self, rows) -> None:
        if self.settings.training and rows:
            raise ValueError("scored_earlier: a training plan draws from every usable row")
        self._scored = frozenset(int(r) for r in rows)
        self._excluded_version += 1  # a new plan

    def usable_rows(self) -> np.ndarray:
        usable = np.ones(len(self.index), bool)
        usable[np.fromiter(self.excluded, np.int64, len(self.excluded))] = False
        return np.flatnonzero(usable)

    def plan(self) -> EpochPlan:
        """The plan of ``self.epoch`` (recomputed when the epoch, the excluded or the earlier scored rows change)."""
        key = (self.epoch, self._excluded_version)
        if self._plan_key != key:
            rows = self.usable_rows()
            if self._scored:
                rows = rows[~np.isin(rows, np.fromiter(self._scored, np.int64, len(self._scored)))]
            self._plan = epoch_plan(rows, self.seed, self.epoch, self.batch_size, self.rank,
                                    self.world_size, self.settings.training)
            self._plan_key = key
        return self._plan  # type: ignore[return-value]

    def __len__(self) -> int:
        """The batches an epoch hands out: the plan's, at most ``limit``. The feeder prepares none past them, so a
        batch beyond the limit is neither read, decoded, substituted nor counted."""
        planned = len(self.plan().batches)
        return planned if self.limit is None else min(planned, self.limit)

    def rows(self, number: int) -> list[int]:
        """The planned rows of batch ``number`` (before any substitution)."""
        return [int(r) for r in self.plan().batches[number]]

    # ------------------------------------------------------------------------------------------------ samples
    def is_good(self, row: int) -> bool:
        return self.index.is_good(row)

    def video(self, row: int) -> VideoRef:
        info = self.index.info(row)
        return VideoRef(row=row, path=self.index.path(row), label=self.index.label(row), num_frames=info.num_frames,
                        width=info.width, height=info.height, codec=info.codec, size=info.size,
                        mtime_ns=info.mtime_ns, colorspace=info.colorspace)

    def sample(self, row: int, substitute_for: int | None = None) -> Sample:
        """The sample of (good) ``row`` in the current epoch."""
        video = self.video(row)
        return self.draw(self.settings, video, self.seed, self.epoch, self.route_of(video), substitute_for)

    def batch(self, number: int) -> list[Sample]:
        """The samples of batch ``number``: quarantined rows are substituted (training) or left out (testing)."""
        out = []
        for row in self.rows(number):
            if self.is_good(row):
                out.append(self.sample(row))
            elif self.settings.training:
                out.append(self.sample(self._substitute(row), substitute_for=row))
                self._count_substitution(number, row)
            else:
                self._count_left_out(row)
        return out

    def _count_left_out(self, row: int) -> None:
        """A planned test row dropped as bad, counted once however many evaluations drop it: another line naming
        the file of a video this loader found failing is a skipped video too (``skipped_videos``: each line is an
        entry of its own, scored or left out); a row no failure of this loader's made bad, another loader of the
        run (training's, over a list naming the same file) quarantined after this loader was built, with those left
        out at the build (``quarantined_earlier``). The failed row itself was counted by :meth:`quarantine`."""
        with self._quarantined_lock:
            ours, same_file = row in self._quarantined, row in self._same_file
        if ours:
            return
        if same_file:
            if row not in self._same_file_counted:
                self._same_file_counted.add(row)
                self.stats["skipped_videos"] += 1
        elif row not in self._left_out_later:
            self._left_out_later.add(row)
            self.stats["quarantined_earlier"] += 1

    def _substitute(self, row: int) -> int:
        found = substitute_row(self.plan().order, row, self.is_good)
        if found is None:
            raise DataError(f"{self.list_desc}: no readable training video is left (every one was quarantined "
                            f"during the run); {self.bad_examples()}")
        return found

    def _count_substitution(self, number: int, row: int) -> None:
        key = (self.epoch, number, row)
        if key not in self._substitutions:  # a rebuilt pipeline re-plans the same batches: count them once
            self._substitutions.add(key)
            self.stats["substituted"] += 1

    # ------------------------------------------------------------------------------------------------ failures
    def quarantine(self, row: int, reason: str, remember: bool = True) -> None:
        """Mark ``row``'s video bad (once), naming it in the log, the index's quarantine file and ``stats``; not
        ``remember``: for this run only (``DatasetIndex.quarantine``). A test row bad already (another line naming
        the same file failed since its batch was drawn) is only counted (:meth:`_count_left_out`)."""
        if not self.is_good(row):
            if not self.settings.training:
                self._count_left_out(int(row))
            return
        path = self.index.path(row)
        logger.warning("quarantining %s (row %d): %s", path, row, reason, extra=THIS_RANK_ONLY)
        bad_before = set(self.index.bad)
        self.index.quarantine(row, reason, remember)  # (and the list's other lines naming the same file)
        with self._quarantined_lock:
            self._same_file |= set(self.index.bad) - bad_before - {int(row)}
            self._quarantined.add(int(row))
            if not remember:
                self._run_only.add(int(row))
        self.stats["skipped_videos"] += 1
        self.stats["skipped"].append(f"{path}: {reason}")
        if self.strict:  # recorded first: the next build's STRICT refusal names it too
            self.index.flush_quarantines()
            instead = "substituted" if self.settings.training else "left out"
            raise DataError(f"{self.list_desc}: DATA.STRICT is on and {path} (line "
                            f"{int(self.index.videos.line_nos[row])}) failed during the run: "
                            f"{' '.join(str(reason).split())}; fix or remove it, or set DATA.STRICT False to have "
                            f"such videos quarantined and {instead}")

    def unshared_quarantines(self) -> list[tuple[int, str, str, bool, tuple[int, int]]]:
        """``(row, path relative to the root, reason, remembered, (size, mtime_ns))`` of the rows quarantined during
        the run that the other ranks have not been told of yet (:meth:`learn_quarantines`); from now on they count as
        told. ``remembered``: the index cache records the verdict (not a quarantine for this run only, nor a video a
        build left out without caching why: a missing file, a probe that gave no answer); the size and mtime are
        those of the file the verdict is about, as this rank's index recorded it."""
        with self._quarantined_lock:
            rows = sorted(self._quarantined - self._told)
            self._told |= set(rows)
            run_only = set(self._run_only)
        status = self.index.table.status
        return [(row, rel, self.index.bad.get(row, "runtime failure"), row not in run_only and bool(status[row] == BAD),
                 self._recorded_key(row)) for row, rel in self._ids(rows)]

    def _recorded_key(self, row: int) -> tuple[int, int]:
        """The (size, mtime_ns) this rank's index recorded for ``row``'s file (its probe's: a quarantine keeps it)."""
        c = self.index.table.columns
        return int(c["size"][row]), int(c["mtime_ns"][row])

    def count_as_told(self, ids: list[VideoId]) -> None:
        """Videos every rank knows of already (every rank's checkpoint record named them): not shared again."""
        rows, _ = self._rows(ids)
        with self._quarantined_lock:
            self._told |= rows & self._quarantined

    def learn_quarantines(self, found: list[tuple[int, str, str, bool, tuple[int, int]]],
                          record: bool = True) -> list[tuple[int, str]]:
        """Quarantine here the rows another rank quarantined (:meth:`unshared_quarantines`): its index leaves them
        out, and indexes it passes its quarantines to (the validation's) too, so that this rank neither decodes them
        again nor counts them as failed; they are substituted as the other rank's are, and recorded
        (:meth:`record`). Not counted in ``stats`` (the rank that found them counts them). The verdicts that rank's
        cache remembers are written to this rank's cache too (``DatasetIndex.quarantine``), which is another file
        when each machine keeps its own (a read-only list folder): the next build on this machine leaves them out
        as well; where it is the same file, the record is already there and nothing is written. Rows this list has
        not at the same path, or that the plan leaves out, are passed over. Not ``record``: neither file is written
        here (one process per machine records them, for all of its processes). A verdict on a file of another size
        or mtime than the one this rank's index recorded at that path is for this run only: each machine may keep
        its own copy of the dataset under the same path, and another machine's broken copy says nothing of this
        one's (where size and mtime agree, the copies are taken for one file, as everywhere in the index). Returns
        ``(row, reason)`` of the rows new here."""
        new = []
        for row, rel, reason, remembered, probed in found:
            row = int(row)
            if not 0 <= row < len(self.index) or self.index.videos.rel_path(row) != rel or row in self.excluded:
                continue
            remembered = remembered and self._recorded_key(row) == tuple(probed)
            with self._quarantined_lock:
                if row in self._quarantined:
                    continue
                self._quarantined.add(row)
                self._told.add(row)
                if not remembered:
                    self._run_only.add(row)
            if self.is_good(row):
                self.index.quarantine(row, reason, remember=bool(remembered), record=record)
            new.append((row, reason))
        return new

    def replace(self, sample: Sample, number: int, reason: str, remember: bool = True) -> Sample | None:
        """Quarantine ``sample``'s video (:meth:`quarantine`); its training substitute in batch ``number``, or None
        in testing (the video is dropped: scoring another video twice would be wrong)."""
        self.quarantine(sample.row, reason, remember)
        if not self.settings.training:
            return None
        orig = sample.substitute_for if sample.substitute_for is not None else sample.row
        self._count_substitution(number, orig)
        return self.sample(self._substitute(sample.row), substitute_for=orig)

    def bad_examples(self, limit: int = 3) -> str:
        """One line naming the first bad videos with their reasons and the quarantine file that lists them all."""
        bad = sorted(self.index.bad.items())
        if not bad:
            return "no bad video recorded"
        named = "; ".join(f"{self.index.path(r)}: {why}" for r, why in bad[:limit])
        more = f"; and {len(bad) - limit} more" if len(bad) > limit else ""
        return f"e.g. {named}{more} (all listed in {self.index.quarantine_path})"

    # ------------------------------------------------------------------------------------------------ resume
    def record(self, with_excluded: bool = True) -> dict[str, list[VideoId]]:
        """What a checkpoint keeps of the plan's videos: ``quarantined``, the videos quarantined during the run (so
        far, as this process saw them), and with ``with_excluded`` ``excluded``, those the plan leaves out."""
        with self._quarantined_lock:
            quarantined = sorted(self._quarantined)
        out = {"quarantined": self._ids(quarantined)}
        if with_excluded:
            out["excluded"] = self._ids(sorted(self.excluded))
        return out

    def _ids(self, rows) -> list[VideoId]:
        return [(int(r), self.index.videos.rel_path(int(r))) for r in rows]

    def _rows(self, ids) -> tuple[set[int], int]:
        """The rows of recorded videos that this list has at the same row, and how many it has not."""
        ids = {(int(row), rel) for row, rel in ids}  # (several ranks may name one video)
        n = len(self.index)
        rows = {row for row, rel in ids if 0 <= row < n and self.index.videos.rel_path(row) == rel}
        return rows, len(ids) - len(rows)

    def adopt(self, excluded: list[VideoId], quarantined_anywhere: list[VideoId],
              quarantined_here: list[VideoId]) -> str:
        """Plan as the run that recorded these videos did (:meth:`record`), before the first batch of a resumed run.

        ``excluded``: the videos its plan left out, left out again even when readable now. ``quarantined_anywhere``
        (every process's): planned, as they were usable when that run started; the index marks them bad, so they
        are substituted as they were. ``quarantined_here``: this process's share, quarantined again for this run
        when its index finds them readable now (a read that timed out), as the interrupted process would have kept
        them. A video the index finds bad that the record neither leaves out nor names as quarantined was in that
        run's plan and broke after the checkpoint was saved: it is planned and substituted too, as the interrupted
        run would have done on reaching it, so the continuation stays exact. Returns a line for the log, empty when
        there is nothing to say: those videos by name, and recorded videos no longer at their list rows (an edited
        list), after which the run does not continue exactly.
        """
        left_out, lost = self._rows(excluded)
        anywhere, lost_q = self._rows(quarantined_anywhere)
        here, _ = self._rows(quarantined_here)
        unrecorded = set(self.index.bad) - left_out - anywhere
        again = [row for row in sorted(here) if self.is_good(row)]
        for row in again:
            self.index.quarantine(row, "quarantined during the run before the checkpoint it resumes", False)
        with self._quarantined_lock:
            self._quarantined |= here | ((anywhere | unrecorded) & set(self.index.bad))
            self._run_only |= set(again)
        self.excluded = left_out
        parts = []
        if unrecorded:
            named = ", ".join(self.index.videos.rel_path(r) for r in sorted(unrecorded)[:3])
            more = ", ..." if len(unrecorded) > 3 else ""
            parts.append(f"{len(unrecorded)} training video(s) of that run's epoch plan are bad in this run's index "
                         f"and were not quarantined before it saved ({named}{more}): planned and substituted, as it "
                         f"would have done on reaching them")
        if lost + lost_q:
            parts.append(f"{lost + lost_q} video(s) it names are no longer at their rows of the list: the run does "
                         f"not continue exactly as the interrupted one would have")
        return "; ".join(parts)
