"""Builds a run from the config: the glue between ``configs``, the data loaders, the model and the engine.

The engine imports neither DALI nor the model package: ``train.py`` hands the concrete builders in through
:class:`Factories`, and everything here only calls them. Functions take the config (they are builders); the
loops in ``train_loop`` and ``evaluate`` take explicit objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import distributed as dist_utils
from configs import ConfigError

from .checkpointing import Checkpointer, CheckpointError
from .distributed import DistContext
from .evaluate import read_label_names
from .losses import VideoMixup, build_criterion
from .metrics import MetricLogger, print_plan
from .optim import build_optimizer, build_scheduler
from .plots import plot_finished_run
from .train_loop import Trainer, TrainOptions, loader_stats, resolve_precision

__all__ = ["Factories", "Run", "check_files", "dry_run", "build_run", "train", "only_test"]


@dataclass(frozen=True)
class Factories:
    """The concrete builders (from ``models`` and ``dali_pipelines``) that train.py passes in."""

    build_model: Callable[..., torch.nn.Module]            # (cfg, device=None) -> model
    build_loader: Callable[..., Any]                       # (cfg, split, rank, world_size, device_id, index=None)
    load_weights: Callable[..., Any]                       # (model, path, mode, class_mapping) -> (missing, unexpected)
    forward_flops: Callable[[torch.nn.Module], float]      # FLOPs of one clip forward
    read_file_list: Callable[..., list]                    # (list_path, root, num_classes) -> entries
    decode_device: Callable[[str], str]                    # DATA.DECODE_DEVICE -> 'gpu' | 'cpu'


def eval_checkpoint(cfg, resume: str = "") -> str:
    """The checkpoint an evaluate-only run scores: ``resume``, else the newest one in OUTPUT ("" when none)."""
    if resume:
        return resume
    found = Checkpointer(cfg.OUTPUT, writer=False).candidates()
    return found[0] if found else ""


def check_files(cfg, only_test: bool, resume: str = "") -> None:
    """Fail with one message naming every missing input file (lists, labels, weights, class mapping).

    Evaluate-only without ``--resume`` scores the newest checkpoint in OUTPUT, else MODEL.PRETRAINED; with
    neither it fails (random weights are never evaluated silently). Evaluating a checkpoint does not need
    MODEL.CLASS_MAPPING: the mapping is only used when the checkpoint's head is larger than the model's.
    """
    wanted = [("DATA.VAL_FILE", cfg.DATA.VAL_FILE)]
    checkpoint = eval_checkpoint(cfg, resume) if only_test else ""
    if not only_test:
        wanted.insert(0, ("DATA.TRAIN_FILE", cfg.DATA.TRAIN_FILE))
        wanted.append(("MODEL.PRETRAINED", cfg.MODEL.PRETRAINED))
    elif not checkpoint:
        if not cfg.MODEL.PRETRAINED:
            raise ConfigError(f"--only_test: nothing to evaluate: no --resume given, no checkpoint (ckpt_*.pth) in "
                              f"OUTPUT = {cfg.OUTPUT}, and MODEL.PRETRAINED is empty")
        wanted.append(("MODEL.PRETRAINED", cfg.MODEL.PRETRAINED))
    wanted.append(("DATA.LABEL_LIST", cfg.DATA.LABEL_LIST))
    if not checkpoint:
        wanted.append(("MODEL.CLASS_MAPPING", cfg.MODEL.CLASS_MAPPING))
    wanted.append(("--resume", resume))
    missing = [f"{key} = {path}" for key, path in wanted if path and not os.path.isfile(path)]
    if not cfg.DATA.VAL_FILE or (not only_test and not cfg.DATA.TRAIN_FILE):
        missing += [f"{k} is empty" for k, p in wanted[:2] if k.startswith("DATA.") and not p]
    if missing:
        raise FileNotFoundError("missing input files: " + "; ".join(missing))


def dry_run(cfg, factories: Factories, resume: str = "") -> dict[str, Any]:
    """Validate the lists, build the model on the meta device and print the plan; trains nothing."""
    only_test = cfg.TEST.ONLY_TEST
    val = factories.read_file_list(cfg.DATA.VAL_FILE, cfg.DATA.ROOT, cfg.DATA.NUM_CLASSES)
    train = [] if only_test else factories.read_file_list(cfg.DATA.TRAIN_FILE, cfg.DATA.ROOT, cfg.DATA.NUM_CLASSES)
    model = factories.build_model(cfg, device="meta")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    global_batch = cfg.TRAIN.BATCH_SIZE * cfg.TRAIN.ACCUMULATION_STEPS * world
    plan = {
        "mode": "evaluate only" if only_test else "train",
        "model": cfg.MODEL.ARCH,
        "parameters": sum(p.numel() for p in model.parameters()),
        "GFLOPs per clip (forward)": factories.forward_flops(model) / 1e9,
        "clip": f"{cfg.DATA.NUM_FRAMES} x 3 x {cfg.DATA.INPUT_SIZE} x {cfg.DATA.INPUT_SIZE}",
        "processes": world,
        "global batch (B x ACC x world)": f"{global_batch} = {cfg.TRAIN.BATCH_SIZE} x "
                                          f"{cfg.TRAIN.ACCUMULATION_STEPS} x {world}",
        "train videos (listed)": len(train),
        "iterations per epoch": len(train) // global_batch,
        "epochs": cfg.TRAIN.EPOCHS,
        "val videos (listed)": len(val),
        "test views (clips x crops)": f"{cfg.TEST.NUM_CLIP} x {cfg.TEST.NUM_CROP}",
        "data decode device": factories.decode_device(cfg.DATA.DECODE_DEVICE),
        "output": cfg.OUTPUT,
    }
    if only_test:  # no training: leave out the rows that would read 0
        for key in ("global batch (B x ACC x world)", "train videos (listed)", "iterations per epoch", "epochs"):
            del plan[key]
        plan["evaluates"] = eval_checkpoint(cfg, resume) or f"MODEL.PRETRAINED = {cfg.MODEL.PRETRAINED}"
    print_plan(plan)
    return plan


@dataclass
class Run:
    """The objects of a run; ``close`` releases loaders and loggers."""

    ctx: DistContext
    metrics: MetricLogger
    model: torch.nn.Module
    val_loader: Any
    train_loader: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        for loader in (self.train_loader, self.val_loader, *self.extras.get("loaders", [])):
            if loader is not None and hasattr(loader, "close"):
                loader.close()
        self.metrics.close()


def _test_cfg(cfg, num_clip: int, num_crop: int):
    out = cfg.clone()
    out.defrost()
    out.TEST.NUM_CLIP, out.TEST.NUM_CROP = num_clip, num_crop
    out.freeze()
    return out


def build_run(cfg, ctx: DistContext, factories: Factories, resume: str = "") -> Run:
    """Seed, loggers, loaders and the model (with pretrained weights unless evaluating a given checkpoint)."""
    dist_utils.seed_everything(cfg.SEED + ctx.rank)
    resolve_precision(cfg.TRAIN.PRECISION, ctx.device)  # a precision the device cannot run fails before indexing
    if ctx.device.type == "cpu":
        # AdamW's second moments of small weights decay into the denormal range, where x86 float arithmetic is
        # microcoded: some optimizer steps of the CPU demo ran ~100x slower. Flushing them to zero changes nothing
        # that matters for training (GPU kernels flush denormals in their fast paths too).
        torch.set_flush_denormal(True)
    metrics = MetricLogger(cfg.OUTPUT, ctx.rank, ctx.world_size, ctx.device, print_freq=cfg.PRINT_FREQ,
                           frames_per_clip=cfg.DATA.NUM_FRAMES, tensorboard=cfg.LOG.TENSORBOARD, nvml=cfg.LOG.NVML,
                           progress_bar=cfg.LOG.PROGRESS_BAR)
    metrics.write_config(cfg.dump())
    only_test = cfg.TEST.ONLY_TEST
    if only_test and eval_checkpoint(cfg, resume) and cfg.MODEL.PRETRAINED:
        # Evaluating a checkpoint: the initial weights would be overwritten anyway (the original loaded both).
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.PRETRAINED = ""
        cfg.freeze()
    train_loader = None if only_test else factories.build_loader(cfg, "train", ctx.rank, ctx.world_size,
                                                                 ctx.device_id)
    val_loader = factories.build_loader(cfg, "test" if only_test else "val", ctx.rank, ctx.world_size,
                                        ctx.device_id)
    # Parameters are created on the device directly: no host copy of a ~1 B parameter model per rank.
    model = factories.build_model(cfg, device=ctx.device)
    if cfg.MODEL.STOP_GRAD_CONV1 and hasattr(model, "patch_embed"):
        # The model detaches the patch embedding's output, so its parameters never get a gradient; DDP (with
        # find_unused_parameters=False) would fail on them, and the optimizer need not hold them.
        model.patch_embed.requires_grad_(False)
    metrics.flops_per_clip = factories.forward_flops(model)
    n_params = sum(p.numel() for p in model.parameters())
    metrics.info(f"model {cfg.MODEL.ARCH}: {n_params / 1e6:.2f} M parameters, "
                 f"{metrics.flops_per_clip / 1e9:.2f} GFLOPs per clip forward; device {ctx.device}, "
                 f"{ctx.world_size} process(es); data decoded on {getattr(val_loader, 'device', '?')}")
    return Run(ctx=ctx, metrics=metrics, model=model, val_loader=val_loader, train_loader=train_loader,
               extras={"cfg": cfg, "factories": factories, "loaders": []})


def _data_counts(loader: Any, ctx: DistContext, prefix: str) -> dict[str, Any]:
    """A loader's data-failure counters (over all ranks) for the end-of-run summary, without the path list."""
    return {k: v for k, v in loader_stats(loader, ctx, prefix).items() if not k.endswith("skipped")}


def _class_names(cfg) -> dict[int, str] | None:
    return read_label_names(cfg.DATA.LABEL_LIST) if cfg.DATA.LABEL_LIST else None


def only_test(run: Run, cfg, resume: str = "") -> dict[str, Any]:
    """Evaluate ``resume`` (ours or an original/released checkpoint: weights only), else the newest usable
    checkpoint in OUTPUT, else MODEL.PRETRAINED (``check_files`` refuses a run with none of them)."""
    factories: Factories = run.extras["factories"]
    path = resume
    if not path:  # the newest usable checkpoint of OUTPUT (damaged ones are named and skipped)
        found = Checkpointer(cfg.OUTPUT, writer=False, warn=run.metrics.warn).find_latest()
        path = found[0] if found else ""
    if path:
        missing, _ = factories.load_weights(run.model, path, "eva_k722", cfg.MODEL.CLASS_MAPPING or None)
        if missing:
            raise CheckpointError(f"checkpoint {path} does not fit MODEL.ARCH {cfg.MODEL.ARCH} with "
                                  f"{cfg.DATA.NUM_CLASSES} classes: missing {', '.join(missing[:6])}"
                                  + (" (set MODEL.CLASS_MAPPING for a larger head)" if "head.weight" in missing
                                     else ""))
        run.metrics.info(f"evaluating {path}")
    elif cfg.MODEL.PRETRAINED:
        run.metrics.info(f"no checkpoint given or in {cfg.OUTPUT}: evaluating MODEL.PRETRAINED = "
                         f"{cfg.MODEL.PRETRAINED}")
    else:  # check_files refuses this case; kept for callers that skip it
        run.metrics.warn("no checkpoint given or found: evaluating the initial weights")
    amp_dtype, _ = resolve_precision(cfg.TRAIN.PRECISION, run.ctx.device)
    trainer = _eval_only_trainer(run, cfg, amp_dtype)
    result = trainer.run_eval(run.val_loader, "test", epoch=None)
    run.metrics.summary({"evaluated": path or cfg.MODEL.PRETRAINED or "initial weights",
                         **_data_counts(run.val_loader, run.ctx, "test_")})
    if run.ctx.is_main:
        plot_finished_run(cfg.OUTPUT, run.metrics.info, run.metrics.warn)
    return result


def _eval_only_trainer(run: Run, cfg, amp_dtype) -> Trainer:
    opts = TrainOptions(epochs=0, steps_per_epoch=0, amp_dtype=amp_dtype, num_classes=cfg.DATA.NUM_CLASSES)
    return Trainer(model=run.model, optimizer=None, scheduler=None, criterion=None, train_loader=None,  # type: ignore
                   val_loader=run.val_loader, checkpointer=Checkpointer(cfg.OUTPUT, writer=False),
                   metrics=run.metrics, ctx=run.ctx, opts=opts, class_names=_class_names(cfg))


def train(run: Run, cfg, resume: str = "") -> dict[str, Any]:
    """Optimizer, schedule, loss, DDP/compile/EMA, resume, then :meth:`Trainer.fit` and the summary."""
    ctx, metrics, model = run.ctx, run.metrics, run.model
    factories: Factories = run.extras["factories"]
    t = cfg.TRAIN
    steps_per_epoch = len(run.train_loader) // t.ACCUMULATION_STEPS
    if steps_per_epoch < 1:
        raise ConfigError(f"{cfg.DATA.TRAIN_FILE}: {len(run.train_loader)} batches per process is less than one "
                         f"optimizer step (TRAIN.ACCUMULATION_STEPS = {t.ACCUMULATION_STEPS})")
    optimizer = build_optimizer(t, model, ctx.device)
    scheduler = build_scheduler(t, optimizer, steps_per_epoch)
    amp_dtype, needs_scaler = resolve_precision(t.PRECISION, ctx.device)
    scaler = torch.amp.GradScaler(ctx.device.type) if needs_scaler else None
    mix = cfg.AUG.MIXUP > 0 or cfg.AUG.CUTMIX > 0
    mixup = VideoMixup(cfg.AUG.MIXUP, cfg.AUG.CUTMIX, cfg.AUG.MIXUP_SWITCH_PROB, cfg.AUG.LABEL_SMOOTH,
                       cfg.DATA.NUM_CLASSES, seed=cfg.SEED, rank=ctx.rank) if mix else None
    ema = None
    if t.EMA:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=t.EMA_DECAY)
    loop_model = dist_utils.wrap_ddp(model, ctx)
    if t.COMPILE:
        loop_model = torch.compile(loop_model)
    final_views = (cfg.TEST.FINAL_NUM_CLIP, cfg.TEST.FINAL_NUM_CROP)

    def make_test_loader():
        loader = factories.build_loader(_test_cfg(cfg, *final_views), "test", ctx.rank, ctx.world_size,
                                        ctx.device_id, index=getattr(run.val_loader, "index", None))
        run.extras["loaders"].append(loader)
        return loader

    opts = TrainOptions(
        epochs=t.EPOCHS, steps_per_epoch=steps_per_epoch, accumulation_steps=t.ACCUMULATION_STEPS,
        clip_grad=t.CLIP_GRAD, amp_dtype=amp_dtype, skip_nonfinite=t.SKIP_NONFINITE, save_freq=cfg.SAVE_FREQ,
        save_steps=cfg.SAVE_STEPS, eval_freq=cfg.TEST.EVAL_FREQ, final_test=cfg.TEST.FINAL_NUM_CLIP > 0,
        num_classes=cfg.DATA.NUM_CLASSES)
    trainer = Trainer(
        model=loop_model, optimizer=optimizer, scheduler=scheduler,
        criterion=build_criterion(cfg.AUG.LABEL_SMOOTH, mix),
        train_loader=run.train_loader, val_loader=run.val_loader,
        checkpointer=Checkpointer(cfg.OUTPUT, cfg.KEEP_LAST, writer=ctx.is_main, warn=metrics.warn),
        metrics=metrics, ctx=ctx, opts=opts, config_yaml=cfg.dump(), mixup=mixup, scaler=scaler, ema=ema,
        make_test_loader=make_test_loader, class_names=_class_names(cfg))
    trainer.resume(resume, auto=t.AUTO_RESUME)
    global_batch = t.BATCH_SIZE * t.ACCUMULATION_STEPS * ctx.world_size
    metrics.info(f"training {t.EPOCHS} epochs x {steps_per_epoch} steps, global batch {global_batch}, "
                 f"precision {amp_dtype or 'fp32'}")
    result = trainer.fit()
    metrics.summary({"best_top1": result["best_top1"], "best_epoch": result["best_epoch"],
                     "last_checkpoint": result["last_checkpoint"], "output": cfg.OUTPUT,
                     **_data_counts(run.train_loader, ctx, "train_"), **_data_counts(run.val_loader, ctx, "val_")})
    if ctx.is_main:
        plot_finished_run(cfg.OUTPUT, metrics.info, metrics.warn)
    return result
