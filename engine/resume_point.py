"""The checkpoint a run continues: found (the one named, else the newest usable one) and the same on every rank
(:func:`locate_checkpoint`), and the training data planned as the run that saved it planned them
(:func:`restore_data_plan`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from . import distributed as dist_utils
from .checkpoint_io import load_resumable
from .checkpointing import Checkpointer, CheckpointError
from .distributed import DistContext

__all__ = ["ResumePoint", "locate_checkpoint", "restore_data_plan"]


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a run continues (``path`` and its loaded ``ckpt``), or None for both: it starts from step 0."""

    path: str | None = None
    ckpt: dict[str, Any] | None = None

    def ends_training(self, epochs: int) -> bool:
        """Whether the checkpoint closes the last of ``epochs``: a run resumed from it trains no more."""
        return bool(self.ckpt and self.ckpt.get("epoch_complete") and self.ckpt.get("epoch", -1) + 1 >= epochs)


def locate_checkpoint(path: str | None, auto: bool, checkpointer: Checkpointer, ctx: DistContext) -> ResumePoint:
    """Load ``path`` (must work) or, with ``auto``, the newest usable checkpoint of ``checkpointer``'s directory.

    Raises:
        CheckpointError: the file cannot be resumed, or the ranks found different checkpoints.
    """
    if path:
        found: tuple[str, dict] | None = (path, load_resumable(path))
    elif auto:
        found = checkpointer.find_latest()
    else:
        found = None
    # Every rank must continue the same checkpoint (a node-local OUTPUT, or a stale directory cache after a
    # requeue, could show ranks different files): DDP does not re-sync weights loaded after it was built.
    loaded = dist_utils.all_gather_objects(
        (os.path.realpath(found[0]), found[1]["global_step"]) if found is not None else None, ctx)
    if len(set(loaded)) > 1:
        raise CheckpointError(f"the processes of this run resumed from different checkpoints (path, step by "
                              f"rank: {loaded}); every node must see the same OUTPUT and --resume file")
    return ResumePoint(*found) if found is not None else ResumePoint()


def restore_data_plan(loader: Any, point: ResumePoint, ctx: DistContext, warn: Callable[[str], None]) -> None:
    """Plan ``loader``'s epochs as the run that saved ``point`` did, before the steps per epoch are counted.

    A video quarantined during that run is bad in this run's freshly built index, which would leave it out of the
    plan: fewer steps per epoch, another permutation, and a mid-epoch position that no longer fits. The checkpoint
    records every rank's quarantined videos (and the ones its plan left out), and the loader plans them as they
    were and substitutes them as that run did. Videos bad now that it does not record are named in one warning:
    the run cannot continue exactly. A checkpoint without the record (an older one) plans from the index."""
    states = (point.ckpt or {}).get("data_plan")
    if not states or not hasattr(loader, "adopt_plan_state"):
        return
    note = loader.adopt_plan_state(states, ctx.rank if len(states) == ctx.world_size else None)
    if note:
        warn(f"checkpoint {point.path}: {note}")
