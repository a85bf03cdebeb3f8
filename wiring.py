"""The wiring of a run: the one place that imports the data, model and engine packages together.

``build_run`` makes the objects in the order a reader follows them: the logger, the loaders, the model with its
initial weights, then the one set of weights it starts from (``runner.weights_to_load``), and hands them to the
engine as a ready ``runner.Run``. ``dry_run`` gathers the same facts without building anything heavy.
"""

from __future__ import annotations

from engine import runner
from engine.distributed import DistContext
from engine.resume_config import check_resume_config


def _test_cfg(cfg, num_clip: int, num_crop: int):
    out = cfg.clone()
    out.defrost()
    out.TEST.NUM_CLIP, out.TEST.NUM_CROP = num_clip, num_crop
    out.freeze()
    return out


def build_run(cfg, ctx: DistContext, resume: str = "", resume_note: str = "") -> runner.Run:
    """Logger, loaders, model and weights for ``cfg`` on this process."""
    from models import build_model

    build_model(cfg, device="meta")  # a bad MODEL.ARCH or an input size the patch does not divide: before indexing
    metrics = runner.open_run(cfg, ctx, resume, resume_note)
    metrics.follow_logger("dali_pipelines")  # bad videos, quarantines and index progress belong in the run's log
    try:
        return _assemble_run(cfg, ctx, metrics, resume)
    except BaseException:
        metrics.close()  # e.g. an unreadable list: the log ends, and the data pipeline's loggers are let go
        raise


def _assemble_run(cfg, ctx: DistContext, metrics, resume: str) -> runner.Run:
    from dali_pipelines.loader import build_loader  # imports DALI
    from models import build_model, forward_flops, load_pretrained
    from models.checkpoint import pretrained_source_grid

    only_test = cfg.TEST.ONLY_TEST
    train_loader = None if only_test else build_loader(cfg, "train", ctx.rank, ctx.world_size, ctx.device_id)
    val_loader = build_loader(cfg, "test" if only_test else "val", ctx.rank, ctx.world_size, ctx.device_id)
    # Parameters are created on the device directly: no host copy of a ~1 B parameter model per rank.
    model = build_model(cfg, device=ctx.device)
    choice = runner.weights_to_load(cfg, metrics, resume)
    if choice is not None:
        # A released checkpoint's positional grid comes from the config (MODEL.PRETRAINED_FRAMES / _INPUT_SIZE) or
        # the file; our own checkpoints have the model's grid.
        grid = None if choice.checkpoint else pretrained_source_grid(cfg, model)
        missing, _ = load_pretrained(model, choice.path, choice.mode, class_mapping=choice.class_mapping,
                                     source_grid=grid)
        runner.check_weights_fit(cfg, choice, missing)
    runner.announce_model(cfg, model, metrics, ctx, forward_flops(model), val_loader.device)

    def make_test_loader(num_clip: int, num_crop: int):
        loader = build_loader(_test_cfg(cfg, num_clip, num_crop), "test", ctx.rank, ctx.world_size, ctx.device_id,
                              index=val_loader.index)
        run.test_loaders.append(loader)
        return loader

    run = runner.Run(ctx=ctx, metrics=metrics, model=model, val_loader=val_loader, train_loader=train_loader,
                     make_test_loader=make_test_loader,
                     weights=choice.describe() if choice is not None else "initial weights")
    return run


def dry_run(cfg, resume: str = "") -> dict:
    """Validate the lists, build the model on the meta device and print the plan; trains nothing."""
    from dali_pipelines.filelist import read_video_list
    from dali_pipelines.routing import resolve_decode_device
    from models import build_model, forward_flops

    data = cfg.DATA
    model = build_model(cfg, device="meta")  # model errors first: reading long lists takes a while
    if not cfg.TEST.ONLY_TEST:
        check_resume_config(cfg, resume)  # a changed config in a reused OUTPUT
    val = read_video_list(data.VAL_FILE, data.ROOT, data.NUM_CLASSES)
    train = [] if cfg.TEST.ONLY_TEST else read_video_list(data.TRAIN_FILE, data.ROOT, data.NUM_CLASSES)
    return runner.print_dry_run_plan(cfg, num_params=sum(p.numel() for p in model.parameters()),
                                     forward_flops=forward_flops(model), val_videos=len(val),
                                     train_videos=len(train), decode_device=resolve_decode_device(data.DECODE_DEVICE),
                                     resume=resume)
