"""The wiring of a run: the one place that imports the data, model and engine packages together.

``start`` is train.py's start once its config is loaded: the checks, then the plan or the run. ``build_run`` makes
the objects in the order a reader follows them: the logger, the loaders, the model with its initial weights, then
the one set of weights it starts from (``start_weights.weights_to_load``), and hands them to the engine as a ready
``runner.Run``. ``dry_run`` gathers the same facts without building anything heavy, and prints
where the processes meet and what the run starts from.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Any, Callable, NamedTuple

from engine import preflight, run_start, runner, start_weights
from engine.checkpoint_io import drop_offered
from engine.distributed import DistContext, all_gather_objects, barrier, init_from_env, rank_and_world_size
from engine.evaluate import names_given_twice, read_label_names
from engine.losses import mixing_blends_nothing
from engine.process_end import end_line_also_to
from engine.resume_config import check_resume_config
from engine.run_files import EARLIER_RUNS_DIR, RUN_LOCK, claimed_elsewhere, earlier_run_files, release_output
from evautil.errors import some_names
from evautil.files import same_path
from evautil.hub_names import hub_reference
from evautil.progress import counted
from evautil.workers import sendable_error

# The first rank of a node may probe a whole list before the node's other ranks can read its index (hours, for a
# first build of a Kinetics-size list): they wait this long. A rank that dies ends the wait at once.
INDEX_WAIT = timedelta(days=2)


def _test_cfg(cfg, num_clip: int, num_crop: int):
    out = cfg.clone()
    out.defrost()
    out.TEST.NUM_CLIP, out.TEST.NUM_CROP = num_clip, num_crop
    out.freeze()
    return out


def check_before_indexing(cfg, device) -> Any:
    """What a run (and its --dry-run plan) refuses before it reads its lists, which takes a while: a bad MODEL.ARCH
    or an input size the patch does not divide, a precision ``device`` cannot run (fp16 on a CPU), an optimizer
    this machine lacks (apex; else found after the lists are indexed, as a traceback). Returns the model, built on
    the meta device (no memory for weights)."""
    from engine.optim import check_optimizer_available
    from engine.precision import resolve_precision
    from models import build_model

    model = build_model(cfg, device="meta")
    resolve_precision(cfg.TRAIN.PRECISION, device)
    if not cfg.TEST.ONLY_TEST:
        check_optimizer_available(cfg.TRAIN)
    return model


def start(cfg, named: str = "", plan_only: bool = False) -> tuple[runner.Run | None, str]:
    """What every start of train.py does once its config is loaded: the checkpoint a training run continues
    (``named``: the --resume given; a repeated, requeued command whose earlier attempt went on from it continues
    that progress), every missing input named at once, then the dry run's plan (``plan_only``; printed by rank 0
    alone, and no run: None) or the run built on this process. Returns the run and the checkpoint it continues."""
    try:
        resume, resume_note = preflight.resume_point(cfg, named)
        _refuse_miswritten_hub_references(cfg, resume)
        preflight.check_files(cfg, cfg.TEST.ONLY_TEST, resume=resume)
        if plan_only:
            if rank_and_world_size()[0] == 0:
                dry_run(cfg, resume=resume, resume_note=resume_note)
            return None, resume
        return build_run(cfg, init_from_env(), resume=resume, resume_note=resume_note), resume
    finally:  # the checkpoint resume_point parsed, when no load took it: its mapped file is not held by this process
        drop_offered()


def _refuse_miswritten_hub_references(cfg, resume: str) -> None:
    """A weights path that may be an ``hf://`` reference (MODEL.PRETRAINED; --resume with --only_test), written
    'hf:owner/...', 'hf//...', and naming no file, is refused with its right spelling (``models.hub``), not listed
    among the missing input files. One the tools read as a reference (' hf://...', 'HF://...') is read so."""
    from models.hub import HubReferenceError, miswritten_hub_reference

    for path in (cfg.MODEL.PRETRAINED, resume if cfg.TEST.ONLY_TEST else ""):
        problem = miswritten_hub_reference(path) if path and not hub_reference(path) else None
        if problem:
            raise HubReferenceError(problem)


def build_run(cfg, ctx: DistContext, resume: str = "", resume_note: str = "") -> runner.Run:
    """Logger, loaders, model and weights for ``cfg`` on this process."""
    meta_model = check_before_indexing(cfg, ctx.device)
    passed_over: list[str] = []  # damaged checkpoints an evaluation does not score, said once the log is open
    read = check_weight_files(cfg, resume, warn=passed_over.append)
    if not cfg.TEST.ONLY_TEST:  # its list of changed keys says more than the shapes they changed (again at open_run)
        check_resume_config(cfg, resume, read.resumed)
    check_weights_fit_model(cfg, meta_model, resume, read)
    metrics = run_start.open_run(cfg, ctx, resume, resume_note, read.resumed)
    for line in passed_over:
        metrics.warn(line)
    blend = _blending_nothing(cfg)
    if blend:  # in the log too (before the log was open it reached the console only)
        metrics.warn(blend)
    same_names = _names_given_twice(cfg)
    if same_names:  # once, at the start: the run reads the list again for each evaluation
        metrics.warn(same_names)
    newest = _newest_scored(cfg, resume, read)
    del read  # its memory-mapped files: the loads read the weights anew
    metrics.follow_logger("dali_pipelines")  # bad videos, quarantines and index progress belong in the run's log
    try:
        return _assemble_run(cfg, ctx, metrics, resume, newest)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):  # e.g. while indexing: the run's log says so, as the console does
            metrics.log_interrupted()
        else:  # an error or a stop signal: train.py's line for it ends the log too
            end_line_also_to(metrics.log_path)
        metrics.close()  # e.g. an unreadable list: the log ends, and the data pipeline's loggers are let go
        release_output(cfg.OUTPUT)
        raise


def _names_given_twice(cfg) -> str:
    """The warning that DATA.LABEL_LIST gives one name to several classes (``evaluate.names_given_twice``); ""
    without a list or when it does not (its format was checked before: ``preflight.check_files``)."""
    if not cfg.DATA.LABEL_LIST:
        return ""
    return names_given_twice(cfg.DATA.LABEL_LIST, read_label_names(cfg.DATA.LABEL_LIST, cfg.DATA.NUM_CLASSES))


def _blending_nothing(cfg) -> str:
    """The warning that Mixup/CutMix, though on, blend nothing in training (``losses.mixing_blends_nothing``: a
    per-GPU batch of 1); "" when they blend or nothing trains. Not an error: the original ran so too (randperm of
    one clip). Said once the run's log is open, so that its log keeps it too; a dry run prints it."""
    if cfg.TEST.ONLY_TEST:
        return ""
    return mixing_blends_nothing(cfg.AUG.MIXUP, cfg.AUG.CUTMIX, cfg.TRAIN.BATCH_SIZE)


class WeightFiles(NamedTuple):
    """The files a run starts from as :func:`check_weight_files` read them, each as (path, state read
    memory-mapped), or None.

    ``resumed``: the checkpoint a training run resumes (``--resume``, else with TRAIN.AUTO_RESUME OUTPUT's newest
    loadable one), for the config checks, ``run_start.open_run`` and :func:`check_weights_fit_model`; None for an
    evaluation or a run that starts from step 0. ``weights``: the weights the model is built from
    (``start_weights.weights_to_load``): those an evaluate-only run scores (``--resume``, else OUTPUT's newest usable
    checkpoint, else MODEL.PRETRAINED), or the MODEL.PRETRAINED a training run starts from step 0 with; None when
    there are none, or for an ``hf://`` reference not fetched."""

    resumed: tuple[str, Any] | None = None
    weights: tuple[str, Any] | None = None


def check_weight_files(cfg, resume: str, fetch_hub: bool = True,
                       warn: Callable[[str], None] | None = None) -> WeightFiles:
    """A ``--resume`` file, MODEL.PRETRAINED, or (evaluating or resuming OUTPUT's newest checkpoint) OUTPUT's
    checkpoints, that this run would read but cannot use (unreadable, damaged, of the wrong kind; to be evaluated,
    with a head of another class count: :func:`models.checkpoint.head_mismatch`) fail here, before anything is
    written to OUTPUT, with the error its load would raise; tensors are not loaded (memory-mapped), and the load
    that follows does not read a file again for its CRC-32s. An evaluation that scores a checkpoint does not read
    MODEL.PRETRAINED. An ``hf://`` reference is fetched into the Hub cache here, so that one that cannot be fetched
    is named before the lists are indexed (``fetch_hub`` False, as for a dry run, which downloads nothing: left to
    the load). Returns the files it read (:class:`WeightFiles`), parsed once for all the checks that follow (a
    parse costs per tensor, thousands for a billion-parameter model). ``warn``: told of each damaged checkpoint an
    evaluation passes over for an older one."""
    from engine.checkpoint_io import load_resumable
    from engine.checkpointing import Checkpointer
    from models.checkpoint import check_checkpoint

    scored = cfg.TEST.ONLY_TEST and preflight.scores_checkpoint(cfg, resume)  # a checkpoint, not MODEL.PRETRAINED
    if resume and cfg.TEST.ONLY_TEST:  # any weights file: ours, a released one, safetensors
        parsed = check_checkpoint(resume, fetch_hub, **_head_of(cfg))
        return WeightFiles(weights=(resume, parsed) if parsed is not None else None)
    if scored:  # raises when all are damaged
        read = Checkpointer(cfg.OUTPUT, writer=False, warn=warn).find_latest(mmap=True)
        if read:
            check_checkpoint(read[0], parsed=read[1], **_head_of(cfg))
        return WeightFiles(weights=read)
    resumed = None
    if resume and not cfg.TEST.ONLY_TEST:
        resumed = resume, load_resumable(resume, mmap=True)
    elif cfg.TRAIN.AUTO_RESUME and not cfg.TEST.ONLY_TEST:  # raises when all are damaged; the trainer names each
        resumed = Checkpointer(cfg.OUTPUT, writer=False).find_latest(mmap=True)
    weights = None
    if cfg.MODEL.PRETRAINED and (cfg.TEST.ONLY_TEST or preflight.reads_pretrained(cfg, resume)):
        parsed = check_checkpoint(cfg.MODEL.PRETRAINED, fetch_hub)
        weights = (cfg.MODEL.PRETRAINED, parsed) if parsed is not None else None
    return WeightFiles(resumed, weights)


def _newest_scored(cfg, resume: str, read: WeightFiles) -> str:
    """OUTPUT's newest usable checkpoint as :func:`check_weight_files` found it, when it is the one an
    evaluate-only run without ``--resume`` scores; "" otherwise."""
    if cfg.TEST.ONLY_TEST and not resume and read.weights is not None and preflight.scores_checkpoint(cfg, resume):
        return read.weights[0]
    return ""


def check_weights_fit_model(cfg, model, resume: str, read: WeightFiles = WeightFiles(),
                            fetch_hub: bool = True) -> None:
    """The weights this run starts from, against ``model`` (built on the meta device) by their names and shapes,
    so that what their load would refuse after the lists are indexed (hours, for a first build) is refused now:
    a checkpoint to resume that holds another model (a model or class count changed with
    TRAIN.ALLOW_CONFIG_CHANGE), weights to evaluate that leave a parameter unset or a trained layer unused
    (``start_weights.check_weights_fit``), a tensor no conversion fits. Follows :func:`check_weight_files`, which named
    the files that cannot be read and read them (``read``), not parsed again here; an ``hf://`` reference not
    fetched (``fetch_hub`` False) is left to the load."""
    from engine.checkpoint_io import check_same_model
    from models.checkpoint import weights_fit

    choice = start_weights.weights_to_load(cfg, None, resume, _newest_scored(cfg, resume, read))
    if choice is not None and (fetch_hub or not hub_reference(choice.path)):
        parsed = read.weights[1] if read.weights is not None and read.weights[0] == choice.path else None
        missing, lacked = weights_fit(model, choice.path, choice.mode, choice.class_mapping,
                                      _source_grid(cfg, choice, model), parsed=parsed)
        start_weights.check_weights_fit(cfg, choice, missing, lacked)
    if read.resumed is not None:  # the checkpoint the trainer will take (damaged ones are named then, not twice)
        check_same_model(model, read.resumed[1], read.resumed[0])


def _source_grid(cfg, choice: start_weights.WeightsChoice, model):
    """The positional grid the weights of ``choice`` were trained at, as their load is told it: a released
    checkpoint's comes from the config (MODEL.PRETRAINED_FRAMES / _INPUT_SIZE) or the file; our own checkpoints
    have the model's grid (None)."""
    from models.checkpoint import pretrained_source_grid

    return None if choice.checkpoint else pretrained_source_grid(cfg, model)


def _head_of(cfg) -> dict:
    """What the head of weights to evaluate must fit as it is (else it would be left at random: refused)."""
    return dict(num_classes=cfg.DATA.NUM_CLASSES, class_mapping=cfg.MODEL.CLASS_MAPPING or None)


def _assemble_run(cfg, ctx: DistContext, metrics, resume: str, newest: str) -> runner.Run:
    from dali_pipelines.loader import build_loader  # imports DALI
    from models import build_model, forward_flops, load_pretrained
    from models.checkpoint import layers_the_model_lacks

    only_test = cfg.TEST.ONLY_TEST
    splits = ["test"] if only_test else ["train", "val"]
    with metrics.keep_warnings() as kept:  # those of the index build: rank 0 prints them, the others only theirs
        index = build_indexes(cfg, ctx, splits)
    metrics.say_unsaid_warnings(all_gather_objects(kept, ctx))
    train_loader = None if only_test else build_loader(cfg, "train", ctx.rank, ctx.world_size, ctx.device_id,
                                                       index=index["train"])
    val_loader = build_loader(cfg, splits[-1], ctx.rank, ctx.world_size, ctx.device_id, index=index[splits[-1]])
    # Parameters are created on the device directly: no host copy of a ~1 B parameter model per rank.
    model = build_model(cfg, device=ctx.device)
    choice = start_weights.weights_to_load(cfg, metrics, resume, newest)  # the load parses the file whole, once
    if choice is not None:
        notes: list[str] = []
        missing, unexpected = load_pretrained(model, choice.path, choice.mode, class_mapping=choice.class_mapping,
                                              source_grid=_source_grid(cfg, choice, model), notes_to=notes)
        lacked = layers_the_model_lacks(unexpected, model)
        start_weights.check_weights_fit(cfg, choice, missing, lacked)
        start_weights.announce_weights(metrics, choice, notes, missing, lacked)
    runner.announce_model(cfg, model, metrics, ctx, forward_flops(model), val_loader.device)

    def make_test_loader(num_clip: int, num_crop: int):
        loader = build_loader(_test_cfg(cfg, num_clip, num_crop), "test", ctx.rank, ctx.world_size, ctx.device_id,
                              index=val_loader.index)
        run.test_loaders.append(loader)
        return loader

    run = runner.Run(ctx=ctx, metrics=metrics, model=model, val_loader=val_loader, train_loader=train_loader,
                     make_test_loader=make_test_loader,
                     weights=choice.describe() if choice is not None else "initial weights",
                     weights_file=choice.path if choice is not None else None)
    return run


def build_indexes(cfg, ctx: DistContext, splits: list[str]) -> dict[str, Any]:
    """The dataset index of each split's list. With several processes the first rank of each node builds them
    (stat'ing every listed file, probing what changed) while the node's other ranks wait, then those read the
    finished index trusting its recorded file sizes and times (``checked_by_peer``): at a start, one process per
    node stats every listed video, not every rank (a network file system's metadata server serves one stat per
    video and node instead of per GPU). A build that fails on a first rank fails on every rank, with its error."""
    from dali_pipelines.filelist import EmptyListError, LabelRangeError
    from dali_pipelines.loader import build_split_index

    def build(split: str, checked_by_peer: bool = False):
        try:
            return build_split_index(cfg, split, checked_by_peer=checked_by_peer)
        except LabelRangeError as e:  # the loader's index is given the number only; it is the config's key
            raise e.named("DATA.NUM_CLASSES") from None
        except EmptyListError as e:  # and the list's path only
            raise e.named("DATA.TRAIN_FILE" if split == "train" else "DATA.VAL_FILE") from None

    first = ctx.local_rank == 0
    built: dict[str, Any] = {}
    failure: BaseException | None = None
    if first:
        try:
            built = {split: build(split) for split in splits}
        except Exception as e:  # noqa: BLE001 - every rank must hear of it before anyone raises
            failure = e
    barrier(ctx, INDEX_WAIT)
    failures = all_gather_objects(sendable_error(failure), ctx)
    if failure is not None:
        raise failure
    elsewhere = next((f for f in failures if f is not None), None)
    if elsewhere is not None:
        raise elsewhere
    if not first:
        built = {split: build(split, checked_by_peer=True) for split in splits}
    return built


def dry_run(cfg, resume: str = "", resume_note: str = "") -> dict:
    """Validate the lists, build the model on the meta device and print the plan; trains nothing. ``resume``,
    ``resume_note``: the checkpoint a training run continues and why it is not the --resume given
    (``preflight.resume_point``)."""
    from dali_pipelines.filelist import EmptyListError, read_video_list
    from dali_pipelines.routing import resolve_decode_device
    from models import forward_flops

    import torch

    data = cfg.DATA
    if resume_note:  # as the run would log it
        print(f"note: {resume_note}", file=sys.stderr)
    for warning in (_blending_nothing(cfg), _names_given_twice(cfg)):
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    holder = claimed_elsewhere(cfg.OUTPUT)
    if holder:  # not an error: a plan is often made while the run before still ends
        print(f"warning: OUTPUT {cfg.OUTPUT} is being written by another run now ({holder} holds {RUN_LOCK} there): "
              "this run would be refused until it ends", file=sys.stderr)
    model = check_before_indexing(cfg, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    read = check_weight_files(cfg, resume, fetch_hub=False)  # a plan downloads no weights
    if not cfg.TEST.ONLY_TEST:
        check_resume_config(cfg, resume, read.resumed)  # a changed config in a reused OUTPUT
    check_weights_fit_model(cfg, model, resume, read, fetch_hub=False)

    def read_list(key: str, path: str):
        try:
            return read_video_list(path, data.ROOT, data.NUM_CLASSES, classes_name="DATA.NUM_CLASSES")
        except EmptyListError as e:  # named as a run names it (build_indexes)
            raise e.named(key) from None

    val = read_list("DATA.VAL_FILE", data.VAL_FILE)
    train = [] if cfg.TEST.ONLY_TEST else read_list("DATA.TRAIN_FILE", data.TRAIN_FILE)
    found = {key: _found_videos(videos, key, data) for key, videos in
             (("DATA.VAL_FILE", val), ("DATA.TRAIN_FILE", train)) if key == "DATA.VAL_FILE" or train}
    return preflight.print_dry_run_plan(cfg, num_params=sum(p.numel() for p in model.parameters()),
                                        forward_flops=forward_flops(model), val_videos=len(val),
                                        train_videos=len(train),
                                        decode_device=resolve_decode_device(data.DECODE_DEVICE),
                                        evaluates=resume or _newest_scored(cfg, resume, read),
                                        train_found=found.get("DATA.TRAIN_FILE"), starts_from=_starts_from(cfg, read),
                                        sets_aside=_sets_aside(cfg, resume, read))


def _starts_from(cfg, read: WeightFiles) -> str:
    """Where a training run starts, for the plan: the checkpoint it resumes with the place in it, as the run's log
    says it (its epoch and step read from the checkpoint as already memory-mapped), or step 0 and its weights."""
    from engine.resume_point import ResumePoint

    if read.resumed is not None:
        path, state = read.resumed
        epoch, step = int(state["epoch"]) + 1, int(state["global_step"])
        done = ""
        if ResumePoint(path, state).ends_training(cfg.TRAIN.EPOCHS):  # as runner.train finds it
            done = (f"; training is finished (TRAIN.EPOCHS {cfg.TRAIN.EPOCHS}): the run trains nothing, and writes "
                    "its summary only where it is missing or older")
        return f"{path}: {'end of ' if state['epoch_complete'] else ''}epoch {epoch}, step {step}{done}"
    weights = f"MODEL.PRETRAINED = {cfg.MODEL.PRETRAINED}" if cfg.MODEL.PRETRAINED else "random initial weights"
    why = f"no checkpoint in OUTPUT = {cfg.OUTPUT}" if cfg.TRAIN.AUTO_RESUME else "TRAIN.AUTO_RESUME False"
    return f"step 0, {weights} ({why})"


def _sets_aside(cfg, resume: str, read: WeightFiles) -> str:
    """What a training run moves into OUTPUT/earlier_runs/ as it starts (``run_start``: an earlier run's files,
    before a start from step 0 or a --resume of a checkpoint from another folder), for the plan; "" for nothing."""
    resumed = read.resumed[0] if read.resumed is not None else ""  # --resume, or TRAIN.AUTO_RESUME's in OUTPUT
    if cfg.TEST.ONLY_TEST or resumed and same_path(os.path.dirname(os.path.abspath(resumed)), cfg.OUTPUT):
        return ""
    names = earlier_run_files(cfg.OUTPUT, keep=(resume, cfg.MODEL.PRETRAINED))
    if not names:
        return ""
    return (f"an earlier run's {counted(len(names), 'file')} in OUTPUT ({some_names(names, 5)}), to "
            f"{EARLIER_RUNS_DIR}/<date-time>/")


def _found_videos(videos, key: str, data) -> int:
    """How many of a list's videos exist, looked up as a run's index build does (a plan opens no video): a list
    none of which exists is refused naming DATA.ROOT; missing ones are a warning, or with DATA.STRICT the error
    the run would stop on after indexing (a job queued after its plan would not start).

    Raises:
        DataListError: none of the videos exists (see ``check_list_root``).
        DataError: DATA.STRICT and some video is missing.
    """
    import numpy as np

    from dali_pipelines.filelist import DataError, check_list_root

    present = videos.stat_keys(timeout_s=float(data.VIDEO_TIMEOUT_S))[2]
    check_list_root(videos, "DATA.ROOT", present)
    missing = np.flatnonzero(~present)
    if not missing.size:
        return len(videos)
    named = "; ".join(videos.path(r) for r in missing[:3]) + ("; ..." if missing.size > 3 else "")
    is_are, them = ("is", "it") if missing.size == 1 else ("are", "them")  # "1 of the 14 videos ... is missing"
    what = f"{missing.size} of the {len(videos)} videos listed in {videos.list_path} ({key}) {is_are} missing: {named}"
    if data.STRICT:
        raise DataError(f"DATA.STRICT is on and {what}; fix or remove {them}, or set DATA.STRICT False to leave "
                        f"{them} out")
    print(f"warning: {what} (a run leaves {them} out)", file=sys.stderr)
    return len(videos) - int(missing.size)
