"""The loader's plan as runs and ranks share it: the check that the usable videos fill one global batch, that a
saved position draws the same order, the plan's fingerprint, adopting the plan states a checkpoint recorded, and
the quarantines learnt from other ranks. Functions over the ``Schedule`` and its usable rows."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from evautil.progress import counted

from .filelist import DataError
from .index import DatasetIndex
from .schedule import Schedule


def check_global_batch(list_desc: str, usable: int, unreadable: int, batch_size: int, accumulation: int,
                       world_size: int) -> None:
    """Raise DataError when ``usable`` training videos are fewer than one optimizer step's clips, as the dry run
    counts them: with fewer, the trainer would get fewer batches than TRAIN.ACCUMULATION_STEPS, and lowering
    TRAIN.BATCH_SIZE alone might not be enough."""
    b, a, w = batch_size, accumulation, world_size
    if usable < b * a * w:
        bad = f", {unreadable} of the listed videos are unreadable" if unreadable else ""
        raise DataError(f"{list_desc}: {usable} usable training videos{bad}, fewer than one global batch "
                        f"(TRAIN.BATCH_SIZE {b} x TRAIN.ACCUMULATION_STEPS {a} x world size {w} = {b * a * w}): "
                        "lower TRAIN.BATCH_SIZE or TRAIN.ACCUMULATION_STEPS, or list more videos")


def check_same_order(state: dict[str, Any], **settings: int) -> None:
    """Raise ValueError when a loader position ``state`` (``VideoLoader.state_dict``) was saved with other
    ``settings`` (the seed, the world size) than this loader's: the data order would differ."""
    for key, value in settings.items():
        if key in state and state[key] != value:
            raise ValueError(f"loader state was saved with {key}={state[key]}, this loader has {value}; the data "
                             "order would differ")


def plan_fingerprint(usable: np.ndarray, seed: int, batch_size: int, world_size: int, listed: int) -> str:
    """A short digest of what the epoch plans are drawn from (the ``usable`` rows of a list of ``listed`` videos,
    the seed, the batch size and the world size)."""
    head = np.array([seed, batch_size, world_size, listed], np.int64)
    return hashlib.sha1(head.tobytes() + usable.astype(np.int64).tobytes()).hexdigest()[:12]


def adopt_plan(schedule: Schedule, states: list[dict[str, Any]], rank: int | None) -> str:
    """Make ``schedule`` plan as the run whose ranks recorded ``states`` (in rank order) did; ``rank``: which of
    them this process continues (None when the world size changed). Returns ``Schedule.adopt``'s warning line."""
    excluded = [v for s in states for v in s.get("excluded", ())]
    anywhere = [v for s in states for v in s.get("quarantined", ())]
    mine = rank is not None and rank < len(states)
    here = list(states[rank].get("quarantined", ())) if mine else anywhere
    note = schedule.adopt(excluded, anywhere, here)
    # Every rank quarantines the videos of its own record again (of all records, when none is its own): those
    # that every record names are known to every rank, not to be shared again (quarantines_to_share)
    records = [s.get("quarantined", ()) for s in states] if mine else [anywhere]
    schedule.count_as_told(list(set.intersection(*({tuple(v) for v in r} for r in records))))
    return note


def learn_from_ranks(schedule: Schedule, parts: list[list[tuple[int, str, str, bool, tuple[int, int]]]], rank: int,
                     record: bool) -> list[tuple[int, int, str]]:
    """Quarantine in ``schedule`` the videos the ranks other than ``rank`` shared (``parts``, in rank order;
    ``Schedule.learn_quarantines``); those new here as ``(row, rank that quarantined it, reason)``."""
    return [(row, other, why) for other, part in enumerate(parts) if other != rank
            for row, why in schedule.learn_quarantines(part, record)]


def learnt_line(list_desc: str, index: DatasetIndex, learnt: list[tuple[int, int, str]]) -> str:
    """The line on the videos ``learnt`` from other ranks, as ``(row, rank, reason)``: the first three named."""
    named = "; ".join(f"{index.path(row)} (row {row}): quarantined by rank {rank} ({why})"
                      for row, rank, why in learnt[:3])
    more = f"; and {len(learnt) - 3} more" if len(learnt) > 3 else ""
    return (f"{list_desc}: {counted(len(learnt), 'video')} quarantined by other processes during the run, left out "
            f"by this one too: {named}{more}")
