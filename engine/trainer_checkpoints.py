"""The Trainer's checkpoint state: what a checkpoint holds of the run (:meth:`TrainerCheckpoints.state_dict`), its
writing by rank 0 (``save``) and a resume that puts it back (``load_state_dict``, ``resume``)."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict
from typing import Any, Callable

from evautil.interrupt import on_interrupt

from . import distributed as dist_utils
from .checkpointing import CheckpointError
from .distributed import all_gather_objects, unwrap
from .preemption import interrupted_after
from .resume_point import ResumePoint, locate_checkpoint
from .resume_state import capture_rng, restore_rng, restore_training_objects
from .run_files import recorded_path

__all__ = ["TrainerCheckpoints"]


def _changes(saved: dict[str, Any], layout: dict[str, Any], keys: list[str]) -> str:
    """What of the data layout changed since a checkpoint, for a warning: "key saved -> now", comma-separated."""
    return ", ".join(f"{k} {saved[k]} -> {layout[k]}" for k in keys)


class TrainerCheckpoints:
    """Mixed into :class:`engine.train_loop.Trainer`, whose fields these methods read and set (the run's objects,
    ``state``, ``resumed_from``, ``_saved_at``, ``_loader_state``, ``_control``). A mixin rather than an object the
    Trainer holds: the methods share all of the Trainer's state, and ``trainer.save`` / ``trainer.resume`` stay the
    calls the runner and the Trainer's run make.
    """

    def state_dict(self, epoch_complete: bool) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimizer, schedule, scaler, EMA, position, RNG."""
        # Every checkpoint, the epoch ones too: the videos quarantined during the run are bad in a resumed run's
        # index but were in this run's plan (restore_data_plan). One gather with the RNG states.
        plan = self.train_loader.plan_state() if hasattr(self.train_loader, "plan_state") else None
        rng, plans = zip(*dist_utils.all_gather_objects((capture_rng(), plan), self.ctx))
        loader_states = None
        if not epoch_complete and hasattr(self.train_loader, "state_dict"):
            loader_states = dist_utils.all_gather_objects(self.train_loader.state_dict(), self.ctx)
        st = asdict(self.state)
        st.pop("last_checkpoint")
        st["resumed_from"] = recorded_path(self.resumed_from)  # read back by a process in another working folder
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "epoch": self.state.epoch,
            "global_step": self.state.global_step,
            "epoch_complete": epoch_complete,
            "layout": self._layout(),
            "train_state": st,
            "loader": loader_states,
            "data_plan": list(plans) if plan is not None else None,
            "rng": list(rng),
            "world_size": self.ctx.world_size,
            "config": self.config_yaml,
            "best_metric": self.state.best_top1,
            "run_totals": self.metrics.totals_state(),  # so that a resumed run's summary covers the whole run
            # which logged evaluations its count of them holds: those logged before this moment (evaluate_finished)
            "saved_at": time.time(),
        }

    def _layout(self) -> dict[str, Any]:
        """What a saved data position and LR schedule depend on: a mid-epoch position is only valid where all of it
        is the same, the schedule where the steps per epoch are."""
        index = getattr(self.train_loader, "index", None)
        plan = getattr(self.train_loader, "plan_fingerprint", None)
        return {"world_size": self.ctx.world_size, "steps_per_epoch": self.opts.steps_per_epoch,
                "batch_size": getattr(self.train_loader, "batch_size", None),
                "accumulation_steps": self.opts.accumulation_steps,
                "listed_videos": len(index) if index is not None else None,
                # what the list names, row by row: a list rewritten with as many lines (another order, a video
                # replaced) keeps the length and the plan's digest, which counts rows, not what they hold
                # (an index without a list, as some tests build, has none: compared as unchanged)
                "list_digest": getattr(getattr(index, "videos", None), "content_digest", None),
                # the usable videos the epochs are cut from: a position is a place in one plan only
                "plan": plan() if plan is not None else None}

    def save(self, epoch_complete: bool) -> str:
        state = self.state_dict(epoch_complete)
        path = self._written_by_rank0(lambda: self.checkpointer.save(state))
        self.state.last_checkpoint = path
        if self._control is not None:
            self._control.saved()
        self.metrics.info(f"saved checkpoint {path}")
        # A Ctrl-C from now on names this checkpoint and how to continue it (a demo's rerun would start over)
        on_interrupt(interrupted_after(path, self.opts.auto_resume))
        return path

    def _written_by_rank0(self, write: Callable[[], str]) -> str:
        """``write()`` (rank 0 writes, the others only name the file), then every rank learns whether it worked:
        nobody runs ahead (or reads) before the file is in place, and a failed write (a full disk) stops every
        rank with its message instead of leaving the others waiting in the next collective."""
        failure = None
        try:
            path = write()
        except (CheckpointError, OSError) as e:
            failure, path = e, ""
        reports = dist_utils.all_gather_objects(str(failure) if failure else None, self.ctx)
        if failure is not None:
            raise failure
        if reports[0] is not None:
            raise CheckpointError(f"rank 0 could not write a checkpoint: {reports[0]}")
        return path

    def load_state_dict(self, ckpt: dict[str, Any], path: str) -> None:
        """Restore a checkpoint written by :meth:`state_dict` (any rank count; RNG/loader per rank if equal)."""
        # What the saved data position and LR schedule were counted in; older checkpoints lack some entries.
        layout = self._layout()
        saved = {**layout, "world_size": ckpt.get("world_size"), **ckpt.get("layout", {})}
        changed = [k for k in layout if saved[k] != layout[k]]
        same_world = saved["world_size"] == self.ctx.world_size
        restore_training_objects(ckpt, path, unwrap(self.model), self.optimizer, self.scheduler,
                                 keep_new_hyperparameters=self.opts.adopt_config,
                                 keep_new_schedule=saved["steps_per_epoch"] != layout["steps_per_epoch"]
                                 or ("layout" not in ckpt and not same_world))
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema.module.load_state_dict(ckpt["ema"])
        elif self.ema is not None:
            # TRAIN.EMA turned on at resume: the average starts from the resumed weights, not from the ones the
            # model had before the checkpoint was loaded (its initialisation), which it would drift from for
            # thousands of steps while every evaluation and best.pth used it.
            self.ema.module.load_state_dict(unwrap(self.model).state_dict())
            self.metrics.warn(f"checkpoint {path} holds no EMA weights (TRAIN.EMA was off): the EMA starts from "
                              f"its model weights")
        for k, v in ckpt.get("train_state", {}).items():
            if hasattr(self.state, k):
                setattr(self.state, k, v)
        self.state.last_checkpoint = path
        r = self.ctx.rank if same_world else 0
        if ckpt["epoch_complete"]:
            self.state.epoch, self.state.step_in_epoch = ckpt["epoch"] + 1, 0
            self._loader_state = None
            data = [k for k in ("listed_videos", "list_digest", "plan") if k in changed]
            if "world_size" in changed or "batch_size" in changed:  # the plan's digest counts both: it differs
                data = [k for k in data if k != "plan"]  # whatever the list, and the world size is warned of apart
            if data:  # nothing to restart, but the run no longer trains on what it did: say so
                diffs = _changes(saved, layout, data)
                self.metrics.warn(f"the training data changed since checkpoint {path} ({diffs}): epoch "
                                  f"{self.state.epoch + 1} on are planned from this run's list and index")
        elif changed:
            # The saved loader position is a place in another per-rank schedule (another world size, batch size or
            # list length), which this run's schedule does not have: the interrupted epoch is trained again from
            # its first step.
            self.state.epoch, self.state.step_in_epoch = ckpt["epoch"], 0
            self._loader_state = None
            diffs = _changes(saved, layout, changed)
            self.metrics.warn(f"checkpoint {path} was saved mid-epoch with another data layout ({diffs}): "
                              f"epoch {self.state.epoch + 1} restarts from its first step")
        else:
            loaders = ckpt.get("loader")
            if not loaders:
                raise CheckpointError(f"checkpoint {path} is mid-epoch but holds no loader position")
            self._loader_state = loaders[r]
        # The LR schedule resumes at this run's position of the epoch; the step count goes on from the checkpoint's.
        self.state.schedule_offset = self.state.global_step - (
            self.state.epoch * self.opts.steps_per_epoch + self.state.step_in_epoch)
        if ckpt.get("rng") and same_world:
            not_restored = restore_rng(ckpt["rng"][r])
            if not_restored:
                self.metrics.warn(f"resuming {path}: {not_restored}")
        elif ckpt.get("rng"):
            self.metrics.warn(f"world size changed ({ckpt.get('world_size')} -> {self.ctx.world_size}): "
                              "RNG streams are re-seeded, the run continues but not bit-exactly")
        totals = dict(ckpt.get("run_totals") or {})
        # No position kept (an epoch checkpoint, another data layout): no line goes on from its pending steps, so a
        # line the stopped attempt wrote of them (its stop's, its crash's) stays theirs
        if self._loader_state is None:
            totals.pop("window", None)
        self.metrics.restore_totals(totals, self.state.global_step, mid_epoch=not ckpt["epoch_complete"])
        self.resumed_from = path
        self._saved_at = ckpt.get("saved_at")
        if self._saved_at is None:  # saved before checkpoints recorded it: written once, its file's time says it
            with contextlib.suppress(OSError):
                self._saved_at = os.path.getmtime(path)

    def resume(self, path: str | None, auto: bool, named: str = "", located: ResumePoint | None = None) -> bool:
        """Resume from ``path`` (must work) or, with ``auto``, from the newest usable checkpoint in the output
        directory. Returns whether a checkpoint was loaded. Never starts from scratch after a failed load.

        ``named``: the checkpoint the command names with ``--resume`` (``path``, or a later checkpoint of this run
        that continues it: ``preflight.resume_point``); it becomes the run's recorded ``origin``. ``located``: what
        :func:`locate_checkpoint` found for the same ``path`` and ``auto`` (``runner.train`` looks first, to plan
        the data as the checkpoint did); None looks now."""
        explicit = path or ""
        if located is None:
            located = locate_checkpoint(path, auto, self.checkpointer, self.ctx)
        path, ckpt = located.path, located.ckpt
        if ckpt is None:
            return False
        self.load_state_dict(ckpt, path)
        self._keep_a_later_best(path)
        named = named or explicit
        if named and (self.state.origin or {}).get("path") != os.path.realpath(named):
            self.state.origin = {"path": os.path.realpath(named), "step": self.state.global_step}
        if ckpt.get("epoch_complete") and self.state.step_in_epoch == 0:  # epochs are numbered from 1: the
            # checkpoint closes epoch N (ckpt_epoch_N.pth); "epoch N + 1" read as if it came from a later one
            self.metrics.info(f"resumed from {path}: end of epoch {self.state.epoch}, step {self.state.global_step}")
        else:
            self.metrics.info(f"resumed from {path}: epoch {self.state.epoch + 1}, step {self.state.global_step}")
        return True

    def _keep_a_later_best(self, path: str) -> None:
        """best.pth is written before the checkpoint that records its score: an attempt stopped in between leaves
        one newer than ``path``. Its weights scored what it says; kept as the best to beat, so that a rerun that
        scores lower (another layout, GPU nondeterminism) does not leave best_top1 naming weights best.pth lost."""
        later = self.checkpointer.best_after(self.state.global_step) if self.ctx.is_main else None
        later = all_gather_objects(later, self.ctx)[0]  # every rank must agree on what an improvement is
        if later is None or later["top1"] <= self.state.best_top1:
            return
        self.state.best_top1, self.state.best_epoch = float(later["top1"]), int(later["epoch"])
        self.metrics.warn(f"best.pth (top-1 {later['top1']:.2f} % at epoch {later['epoch'] + 1}, step "
                          f"{later['global_step']}) is newer than {path}: written by the attempt that stopped, it "
                          "stays the best to beat")
