"""Checks before a run builds anything: what it reads and where it starts, and the plan of a dry run.

:func:`check_files` names every missing input file at once (and where such files come from); :func:`resume_point`
finds the checkpoint a repeated ``--resume`` command goes on from; :func:`scores_checkpoint` and
:func:`reads_pretrained` say which weights files a run reads; :func:`print_dry_run_plan` prints what
``train.py --dry-run`` would do.
"""

from __future__ import annotations

import os
from typing import Any

from . import distributed as dist_utils
from configs import ConfigError
from evautil.files import same_path
from evautil.hub_names import hub_reference

from .checkpointing import Checkpointer, check_output_dir, checkpoint_files, starts_fresh
from .evaluate import read_label_names
from .metrics import print_plan
from .progress import check_countable_run

__all__ = ["scores_checkpoint", "resume_point", "where_they_come_from", "reads_pretrained", "check_files",
           "print_dry_run_plan"]


def scores_checkpoint(cfg, resume: str = "") -> bool:
    """Whether an evaluate-only run scores a checkpoint (``resume``, else OUTPUT's newest usable one) rather than
    MODEL.PRETRAINED. Told by the files' names: which one is newest takes parsing them, which the check of the one
    to evaluate does once (``wiring.check_weight_files``; several GB for EVA-1B)."""
    return bool(resume or checkpoint_files(cfg.OUTPUT))


def resume_point(cfg, resume: str) -> tuple[str, str]:
    """The checkpoint a training run given ``--resume resume`` continues, and a note when it is another one.

    A requeued job repeats its command: when OUTPUT's newest checkpoint was written by an earlier attempt that
    started from ``resume`` (TrainState.origin), the run goes on from that checkpoint instead of starting over from
    ``resume`` (and moving the progress aside). TRAIN.AUTO_RESUME False keeps ``resume`` as given. The file it
    settles on, as parsed to find it, serves the run's check of that file (``Checkpointer.continuation_of``).
    """
    if not resume or cfg.TEST.ONLY_TEST or not cfg.TRAIN.AUTO_RESUME:
        return resume, ""
    later = Checkpointer(cfg.OUTPUT, writer=False).continuation_of(resume)
    if later is None or same_path(later, resume):
        return resume, ""
    # the named file may be gone (rotated away by the attempts that continued it): then nothing starts over from it
    instead = (f"it would start over from {resume}" if os.path.exists(resume)
               else f"it would stop, as {resume} no longer exists")
    return later, (f"--resume {resume}: {later} continues it (an earlier attempt of this run started from it), so "
                   f"the run goes on from there (with TRAIN.AUTO_RESUME False {instead})")


def where_they_come_from(missing: list[str], only_test: bool = False) -> str:
    """What makes the missing files, for a first run that has none of them yet. ``only_test``: a ``--resume`` is
    weights to evaluate (a released file among them), not a training run's checkpoint to continue."""
    hints = []
    if any(m.startswith("DATA.") for m in missing):
        hints.append("the demo's clips and lists: python tools/make_synthetic_dataset.py --out data/synthetic (or "
                     "make demo); Kinetics lists and labels: python tools/prepare_kinetics.py lists")
    resume = any(m.startswith("--resume") for m in missing)
    if any(m.startswith("MODEL.") for m in missing) or (resume and only_test):
        hints.append("released weights and class mappings: README, Checkpoints (the recipes read checkpoints/)")
    if resume and not only_test:  # released weights are no training state: sending the user there was a dead end
        hints.append("a training --resume continues a checkpoint an earlier run wrote to its OUTPUT (ckpt_epoch_*.pth, "
                     "ckpt_step_*.pth); released weights start a run as MODEL.PRETRAINED")
    return f" ({'; '.join(hints)})" if hints else ""


def reads_pretrained(cfg, resume: str = "") -> bool:
    """Whether a training run reads MODEL.PRETRAINED: only when it starts from step 0. A run that resumes (``resume``,
    or TRAIN.AUTO_RESUME with a checkpoint in OUTPUT) takes every weight from the checkpoint, so the pretrained file
    (gigabytes for the recipes, maybe gone since the first attempt) is neither needed nor loaded."""
    return bool(cfg.MODEL.PRETRAINED) and starts_fresh(cfg.OUTPUT, resume, cfg.TRAIN.AUTO_RESUME)


def check_files(cfg, only_test: bool, resume: str = "") -> None:
    """Fail with one message naming every missing input file (lists, labels, weights, class mapping).

    Evaluate-only without ``--resume`` scores the newest checkpoint in OUTPUT, else MODEL.PRETRAINED; with
    neither it fails (random weights are never evaluated silently). Evaluating a checkpoint does not need
    MODEL.CLASS_MAPPING: the mapping is only used when the checkpoint's head is larger than the model's.
    """
    wanted = [("DATA.VAL_FILE", cfg.DATA.VAL_FILE)]
    checkpoint = only_test and scores_checkpoint(cfg, resume)
    if not only_test:
        wanted.insert(0, ("DATA.TRAIN_FILE", cfg.DATA.TRAIN_FILE))
        if reads_pretrained(cfg, resume):
            wanted.append(("MODEL.PRETRAINED", cfg.MODEL.PRETRAINED))
    elif not checkpoint:
        if not cfg.MODEL.PRETRAINED:
            best = os.path.join(cfg.OUTPUT, "best.pth")
            what = (f"--resume {best} to score the best weights it holds" if os.path.isfile(best) else
                    "--resume FILE (a checkpoint) or --opts MODEL.PRETRAINED FILE (weights)")
            raise ConfigError(f"--only_test: nothing to evaluate: no --resume given, no checkpoint (ckpt_*.pth) in "
                              f"OUTPUT = {cfg.OUTPUT}, and MODEL.PRETRAINED is empty; give {what}")
        wanted.append(("MODEL.PRETRAINED", cfg.MODEL.PRETRAINED))
    wanted.append(("DATA.LABEL_LIST", cfg.DATA.LABEL_LIST))
    if not checkpoint:
        wanted.append(("MODEL.CLASS_MAPPING", cfg.MODEL.CLASS_MAPPING))
    wanted.append(("--resume", resume))
    check_output_dir(cfg.OUTPUT)
    # hf:// weight references (" HF://..." too, as the tools read them) are fetched, and a failure named, by
    # wiring.check_weight_files, before the index.
    hub = {"MODEL.PRETRAINED"} | ({"--resume"} if only_test else set())
    # A folder is the usual slip (the data folder given for its list): say so, it is not missing. A flag is named
    # as typed (--resume PATH), a key as KEY = PATH.
    missing = [f"{key}{' ' if key.startswith('--') else ' = '}{path}"
               + (" (a folder, not a file)" if os.path.isdir(path) else "") for key, path in wanted
               if path and not (key in hub and hub_reference(path)) and not os.path.isfile(path)]
    if not cfg.DATA.VAL_FILE or (not only_test and not cfg.DATA.TRAIN_FILE):
        missing += [f"{k} is empty" for k, p in wanted[:2] if k.startswith("DATA.") and not p]
    if missing:
        raise FileNotFoundError("missing input files: " + "; ".join(missing) + where_they_come_from(missing, only_test))
    if cfg.DATA.LABEL_LIST:  # its format now, not after the lists are indexed and the loaders built
        read_label_names(cfg.DATA.LABEL_LIST, cfg.DATA.NUM_CLASSES)


def print_dry_run_plan(cfg, *, num_params: int, forward_flops: float, val_videos: int, train_videos: int,
                       decode_device: str, evaluates: str = "", train_found: int | None = None,
                       starts_from: str = "", sets_aside: str = "") -> dict[str, Any]:
    """Print what a run would do (from facts the caller gathered without training anything) and return it.
    ``evaluates``: the checkpoint an evaluate-only run scores, as its check found it ("": MODEL.PRETRAINED).
    ``train_found``: the listed training videos that exist (None: all), which a run's epochs are made of.
    ``starts_from``: where a training run starts (the checkpoint it resumes, or step 0 and its weights).
    ``sets_aside``: what that start moves out of OUTPUT's way first ("": nothing).

    Raises:
        ValueError: a bad EVA_WAIT_TIMEOUT_MIN, EVA_HEARTBEAT_TIMEOUT_S or EVA_RENDEZVOUS_TIMEOUT_S, with the line a
            run of several processes would stop on (the plan is usually made by one process for a job of several),
            RANK or WORLD_SIZE, or with several processes a MASTER_ADDR or MASTER_PORT that is unset, no port or a
            host name that does not resolve (``distributed.rendezvous_address``).
    """
    dist_utils.wait_settings()
    only_test = cfg.TEST.ONLY_TEST
    world = dist_utils.rank_and_world_size()[1]
    meet = dist_utils.rendezvous_address(world) if world > 1 else ""
    global_batch = cfg.TRAIN.BATCH_SIZE * cfg.TRAIN.ACCUMULATION_STEPS * world
    found = train_videos if train_found is None else train_found
    plan = {
        "mode": "evaluate only" if only_test else "train",
        "model": cfg.MODEL.ARCH,
        "parameters": num_params,
        "GFLOPs per clip (forward)": forward_flops / 1e9,
        "clip": f"{cfg.DATA.NUM_FRAMES} x 3 x {cfg.DATA.INPUT_SIZE} x {cfg.DATA.INPUT_SIZE}",
        "processes": world,
        **({"rendezvous (MASTER_ADDR:PORT)": meet} if meet else {}),
        "global batch (B x ACC x world)": f"{global_batch} = {cfg.TRAIN.BATCH_SIZE} x "
                                          f"{cfg.TRAIN.ACCUMULATION_STEPS} x {world}",
        "train videos (listed)": train_videos,
        **({} if found == train_videos else {"train videos (found)": found}),
        "iterations per epoch": found // global_batch,
        "epochs": cfg.TRAIN.EPOCHS,
        **({"starts from": starts_from} if starts_from and not only_test else {}),
        **({"sets aside": sets_aside} if sets_aside and not only_test else {}),
        "val videos (listed)": val_videos,
        # An evaluate-only run tests with TEST.NUM_CLIP x NUM_CROP views; training validates with those and ends
        # with the final test's FINAL_NUM_CLIP x FINAL_NUM_CROP (none when FINAL_NUM_CLIP is 0).
        **({"test views (clips x crops)": f"{cfg.TEST.NUM_CLIP} x {cfg.TEST.NUM_CROP}"} if only_test else {
            "val views (clips x crops)": f"{cfg.TEST.NUM_CLIP} x {cfg.TEST.NUM_CROP}",
            "final test (clips x crops)": (f"{cfg.TEST.FINAL_NUM_CLIP} x {cfg.TEST.FINAL_NUM_CROP}"
                                           if cfg.TEST.FINAL_NUM_CLIP > 0 else "none")}),
        "data decode device": decode_device,
        "output": cfg.OUTPUT,
    }
    if only_test:  # no training: leave out the rows that would read 0
        for key in ("global batch (B x ACC x world)", "train videos (listed)", "iterations per epoch", "epochs"):
            del plan[key]
        plan["evaluates"] = evaluates or f"MODEL.PRETRAINED = {cfg.MODEL.PRETRAINED}"
    print_plan(plan)
    if not only_test and found < global_batch:  # the run stops on this, but only after indexing the lists
        counted = "listed" if found == train_videos else "found"
        raise ValueError(f"DATA.TRAIN_FILE {cfg.DATA.TRAIN_FILE}: {found} {counted} training videos, fewer than one "
                         f"global batch (TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} x TRAIN.ACCUMULATION_STEPS "
                         f"{cfg.TRAIN.ACCUMULATION_STEPS} x world size {world} = {global_batch}): the run would stop "
                         "before its first step; lower TRAIN.BATCH_SIZE or list more videos")
    if not only_test:
        check_countable_run(cfg.TRAIN.EPOCHS, found // global_batch)
    return plan
