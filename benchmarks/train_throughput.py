"""Training-step throughput of the EVA video transformer: forward, backward and AdamW step.

One row per combination of ``--attn`` (sdpa, math), ``--checkpoint`` (0/1) and ``--compile`` (0/1). Reported:
clips/s, achieved TFLOP/s (model FLOPs: 3 x the analytic forward count of ``models.forward_flops`` per clip, the
recomputation of gradient checkpointing not counted), MFU against the device's stated peak and against a measured
matmul peak, and peak memory. With ``--with-loader`` the real DALI loader (``dali_pipelines.build_loader``) feeds
the model and ``data_wait_pct`` is the share of step time spent waiting for the next batch.

Input: random clips already on the device (no loader) unless ``--with-loader``.

    python -m benchmarks.train_throughput --quick
    python -m benchmarks.train_throughput --arch eva-1b/14 --frames 16 --batch 4 --precision bf16 --attn sdpa,math
    python -m benchmarks.train_throughput --arch eva-1b/14 --frames 16 --batch 4 --with-loader --codec h264
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import sys
import tempfile
import time

if __package__ in (None, ""):  # allow `python benchmarks/train_throughput.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks import cli, common, cpu_monitor, hardware, inputs, reporting, stats  # noqa: E402
from engine.telemetry import matmul_precision  # noqa: E402
from evautil.flops import peak_flops, train_step_flops  # noqa: E402


def stated_peak(device_name: str | None, precision: str) -> float | None:
    """Stated dense peak TFLOP/s of the GPU (the project's one table, evautil.flops)."""
    peak = peak_flops(device_name, precision)
    return None if peak is None else peak / 1e12


def measured_matmul_peak(device: torch.device, precision: str, seconds: float = 1.0) -> float:
    """TFLOP/s of a large square matmul in ``precision`` on ``device`` (an achievable-peak reference)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    # The peak is the rate of the precision the training step runs in. A CPU has no fast fp16 matmul (about
    # 300x slower than bf16 here), so it gets a smaller square that still finishes within ``seconds``.
    n = 8192 if device.type != "cpu" else 256 if dtype == torch.float16 else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    hardware.sync_cuda()
    iters, t0 = 0, time.perf_counter()
    while True:
        a @ b
        iters += 1
        if iters % 4 == 0:
            hardware.sync_cuda()
            if time.perf_counter() - t0 > seconds:
                break
    return 2 * n ** 3 * iters / (time.perf_counter() - t0) / 1e12


# Config keys set from this benchmark's flags; --opts may not set them (parse_args).
_FLAG_KEYS = {"MODEL.ARCH": "--arch", "MODEL.ATTN_IMPL": "--attn", "TRAIN.USE_CHECKPOINT": "--checkpoint",
              "TRAIN.COMPILE": "--compile", "TRAIN.PRECISION": "--precision", "DATA.NUM_FRAMES": "--frames",
              "DATA.INPUT_SIZE": "--input-size", "DATA.NUM_CLASSES": "--num-classes", "TRAIN.BATCH_SIZE": "--batch",
              "DATA.NUM_THREADS": "--threads", "DATA.NUM_WORKERS": "--workers",
              "TRAIN.ACCUMULATION_STEPS": "nothing: one optimizer step per timed step"}


def make_cfg(args, attn: str, ckpt: bool, list_path: str | None = None, root: str | None = None):
    from configs import load_config
    # TRAIN.PRECISION: the loader's clips are float32 for an fp32 run, float16 on a GPU otherwise (clip_dtype)
    opts = ["MODEL.ARCH", args.arch, "MODEL.ATTN_IMPL", attn, "TRAIN.USE_CHECKPOINT", str(bool(ckpt)),
            "TRAIN.PRECISION", args.precision, "DATA.NUM_FRAMES", str(args.frames),
            "DATA.INPUT_SIZE", str(args.input_size), "DATA.NUM_CLASSES", str(args.num_classes),
            "TRAIN.BATCH_SIZE", str(args.batch),
            "MODEL.DROP_PATH_RATE", "0.1", "MODEL.PRETRAINED", ""]
    if list_path:
        opts += ["DATA.TRAIN_FILE", list_path, "DATA.ROOT", root, "DATA.NUM_THREADS", str(args.threads),
                 "DATA.NUM_WORKERS", str(args.workers), "DATA.INDEX_WORKERS", "1"]
    return load_config(None, opts + list(args.opts or []))


class _BatchSource:
    """The batches of the timed loop: one synthetic batch again and again, or the real loader's (across epochs),
    recording how long each one was waited for."""

    def __init__(self, loader, synthetic: dict):
        self.loader, self.synthetic = loader, synthetic
        self.stream = None
        self.waits: list[float] = []

    def __call__(self) -> dict:
        if self.loader is None:
            return self.synthetic
        t0 = time.perf_counter()
        if self.stream is None:
            self.stream = iter(self.loader)
        try:
            batch = next(self.stream)
        except StopIteration:  # epoch end: the next epoch starts
            self.stream = iter(self.loader)
            batch = next(self.stream)
        self.waits.append(time.perf_counter() - t0)
        return batch


def _batches(n: int, next_batch):
    """Exactly ``n`` batches from ``next_batch`` (one timed measurement of the engine's epoch loop)."""
    for _ in range(n):
        yield next_batch()


def run_config(args, attn: str, ckpt: bool, compile_: bool, device: torch.device, loader=None) -> dict:
    """Time the engine's own training loop (``engine.train_epoch.train_one_epoch`` with the engine's optimizer,
    schedule, loss and precision handling) on synthetic clips or the real loader."""
    from engine.distributed import DistContext
    from engine.losses import build_criterion
    from engine.metrics import MetricLogger
    from engine.optim import build_optimizer, build_scheduler
    from engine.train_epoch import TrainOptions, TrainState, train_one_epoch
    from models import build_model, forward_flops
    cfg = make_cfg(args, attn, ckpt)
    model = build_model(cfg, device=device).train()
    fwd = forward_flops(model)
    optimizer = build_optimizer(cfg.TRAIN, model, device)
    scheduler = build_scheduler(cfg.TRAIN, optimizer, max(args.steps, args.warmup, 1))
    criterion = build_criterion(cfg.AUG.LABEL_SMOOTH, mixup_active=False)
    step_model = torch.compile(model) if compile_ else model
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler(device.type) if args.precision == "fp16" else None
    ctx = DistContext(device=device)
    b, t, s = args.batch, args.frames, args.input_size
    synthetic = {"video": torch.randn(b, t, 3, s, s, device=device),
                 "label": torch.randint(0, args.num_classes, (b,), device=device)}
    next_batch = _BatchSource(loader, synthetic)
    waits = next_batch.waits

    with tempfile.TemporaryDirectory(prefix="train_bench_") as log_dir:
        metrics = MetricLogger(log_dir, device=device, print_freq=10**9, tensorboard=False, nvml=False,
                               progress_bar=False)
        # The loop's end-of-epoch lines go to the temporary log only: each measurement is an "epoch" of its own
        # while the step count runs on, so on the console they read "epoch 1/1 [3/3] step 10/3".
        metrics.report = metrics._write_log
        state = TrainState()

        def run_steps(n: int):
            opts = TrainOptions(epochs=1, steps_per_epoch=n, amp_dtype=amp_dtype, num_classes=args.num_classes)
            state.step_in_epoch = 0
            train_one_epoch(step_model, _batches(n, next_batch), optimizer, scheduler, criterion, state, opts,
                            metrics, ctx, scaler=scaler)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        hardware.sync_cuda()  # the model's set-up queued before is not the warm-up's
        t_build = time.perf_counter()
        run_steps(args.warmup)  # includes compilation and autotuning when --compile
        hardware.sync_cuda()  # its last kernels may still be queued: without the wait warmup_s reads short
        warmup_s = time.perf_counter() - t_build
        with cpu_monitor.ProcessTreeMonitor() as mon:
            waits.clear()
            times = hardware.time_repeats(lambda: run_steps(args.steps), 0, args.repeats)
        metrics.close()
    clips = [args.steps * b / s_ for s_ in times]
    res = {
        "name": f"{args.arch} {args.precision} attn={attn} ckpt={int(ckpt)} compile={int(compile_)}"
                + (" +loader" if loader is not None else ""),
        "arch": args.arch, "attn": attn, "checkpoint": bool(ckpt), "compile": bool(compile_),
        "precision": args.precision, "batch": b, "frames": t, "input_size": s,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "forward_tflop_per_clip": fwd / 1e12,
        "clips_per_s": stats.summarize(clips),
        # model FLOPs (3 forwards per step), also with gradient checkpointing: its recompute is not useful work
        "tflops": stats.summarize([c * train_step_flops(fwd) / 1e12 for c in clips]),
        "warmup_s": warmup_s, "peak_rss_mib": mon.peak_rss / 2**20, "cpu_util": mon.cpu_util,
        "peak_mem_mib": (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None),
    }
    if loader is not None:
        total = sum(times)
        res["data_wait_pct"] = 100.0 * sum(waits) / total if total > 0 else None
    del model, optimizer, step_model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def parse_args(argv=None) -> argparse.Namespace:
    cuda = hardware.cuda_available()
    p = common.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="eva-1b/14" if cuda else "eva-tiny/16", help="models.ARCHS preset")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (T); also the loader's")
    p.add_argument("--batch", type=int, default=4 if cuda else 2, help="clips per step")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=400)
    p.add_argument("--precision", default="bf16" if cuda else "fp32", choices=("bf16", "fp16", "fp32"))
    p.add_argument("--attn", default="sdpa", help="comma-separated attention paths: sdpa,math")
    p.add_argument("--checkpoint", default="0", help="comma-separated gradient checkpointing settings: 0,1")
    p.add_argument("--compile", default="0", help="comma-separated torch.compile settings: 0,1")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration")
    p.add_argument("--steps", type=int, default=10, help="steps per timed measurement")
    p.add_argument("--repeats", type=int, default=3, help="timed measurements per configuration")
    p.add_argument("--peak-tflops", type=float, default=None, help="stated peak TFLOP/s for MFU (default: table)")
    p.add_argument("--no-measure-peak", action="store_true", help="skip the matmul peak measurement")
    p.add_argument("--with-loader", action="store_true", help="feed the model from the real DALI loader")
    p.add_argument("--workers", type=int, default=hardware.cpu_count(), help="DATA.NUM_WORKERS for --with-loader")
    p.add_argument("--threads", type=int, default=hardware.cpu_count(), help="DATA.NUM_THREADS for --with-loader")
    inputs.add_input_args(p, codec="h264 with a GPU, vp9 without", num_clips=8, frames=250, gop=16,
                          frames_flag="--clip-frames")
    p.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--quick", action="store_true",
                   help="tiny model and clips (CI smoke test): eva-tiny/16, T 4, size 64, B 2, 3 steps, 3 repeats; "
                        "sizes and counts given too win")
    p.add_argument("--json", type=common.home_path, help="write results to this JSON file")
    p.add_argument("--plot", type=common.home_path, help="write a PNG bar chart of clips/s")
    p.add_argument("--opts", nargs="*", default=[], help="extra KEY VALUE config overrides")
    args = p.parse_args(argv)
    # Through --opts these were ignored (TRAIN.PRECISION, TRAIN.COMPILE, TRAIN.ACCUMULATION_STEPS) or applied under
    # another row's label (MODEL.ATTN_IMPL math timed as "attn=sdpa").
    cli.refuse_opts_set_by_flags(p, args.opts, _FLAG_KEYS)
    if args.codec is None:
        args.codec = "h264" if cuda else "vp9"
    cli.require_positive(p, args, ("batch", "steps", "repeats", "frames", "input_size", "num_classes", "threads"))
    cli.require_positive(p, args, ("warmup", "torch_threads", "workers"), low=0)
    cli.require_thread_counts(p, [args.threads])
    if args.peak_tflops is not None and not args.peak_tflops > 0:  # a negative peak made every MFU negative
        p.error(f"--peak-tflops must be above 0, got {args.peak_tflops}")
    if args.peak_tflops is not None and args.peak_tflops == float("inf"):  # every MFU was 0, passed as measured
        p.error(f"--peak-tflops must be a finite number, got {args.peak_tflops}")
    try:
        args.attns = cli.chosen_names("--attn", args.attn, ("sdpa", "math"), "attention path")
        args.ckpts, args.compiles = (_switches(flag, text) for flag, text in (("--checkpoint", args.checkpoint),
                                                                              ("--compile", args.compile)))
    except common.InputError as e:
        p.error(str(e))
    if args.quick:
        cli.set_quick_defaults(p, argv, args, arch="eva-tiny/16", frames=4, input_size=64, batch=2, warmup=1,
                               steps=3, repeats=3, num_clips=4, clip_frames=32, width=160, height=120)
    if args.list and not args.with_loader:  # else the list went unread: random tensors measured, exit code 0
        p.error(f"--list {args.list}: the list is read only with --with-loader (without it the model is fed random "
                "tensors); add --with-loader")
    if args.with_loader:  # the only clips it reads
        inputs.check_clip_length(p, args, args.frames, f"--frames {args.frames}: the frames sampled from each",
                                 "--clip-frames")
    cli.check_arch(p, args.arch, args.input_size)
    return args


def _switches(flag: str, text: str) -> list[int]:
    """A comma-separated list of 0/1 settings (``--checkpoint 0,1``); anything else names the flag (a 2 was
    timed as 1)."""
    values = [c.strip() for c in text.split(",") if c.strip()]
    if not values or any(v not in ("0", "1") for v in values):
        raise common.InputError(f"{flag} {text!r}: expected 0, 1 or both comma-separated (0,1)")
    return [int(v) for v in values]


def build_train_loader(args, configs: int = 1):
    """The real training loader over synthetic clips (or --list) with the model's frames and size, its list long
    enough for ``configs`` configurations' steps in one epoch (they share the loader)."""
    from dali_pipelines import build_loader
    from benchmarks.loader_throughput import write_repeated_list
    # The synthetic clips' own length is --clip-frames; the loader samples args.frames of them.
    clip_args = argparse.Namespace(**vars(args))
    clip_args.frames = args.clip_frames
    clips, desc = inputs.read_list_or_synthetic(clip_args)
    inputs.check_labels(args, clips, args.num_classes)
    # An epoch ending inside a timed measurement would count the graphs' refill as data wait.
    rows = max((configs * (args.warmup + args.steps * args.repeats) + 4) * args.batch, len(clips))
    list_dir = args.data_dir or inputs.scratch_folder("eva_bench_lists")
    list_path, root = write_repeated_list(clips, rows, list_dir)
    cfg = make_cfg(args, args.attns[0], False, list_path, root)
    return build_loader(cfg, "train"), desc


def run_benchmark(args) -> dict:
    # Denormal floats (tiny gradients and Adam moments of the 0.001-scaled head early in training) make x86 CPU
    # arithmetic up to ~100x slower; flush them to zero as CPU training/inference setups usually do. No GPU effect.
    torch.set_flush_denormal(True)
    if args.torch_threads > 0:
        # On a busy machine, torch's OpenMP threads spin at barriers while another process holds "their" core:
        # fewer threads than cores can then be several times faster.
        torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    attns, ckpts, compiles = args.attns, args.ckpts, args.compiles
    info = hardware.machine_info()
    peak = args.peak_tflops or stated_peak(info.get("gpu"), matmul_precision(args.precision))
    measured = None if args.no_measure_peak else measured_matmul_peak(device, args.precision,
                                                                      seconds=0.3 if args.quick else 1.0)
    configs = list(itertools.product(attns, ckpts, compiles))
    loader, input_desc = None, {"input": "random tensors on the device"}
    if args.with_loader:
        loader, input_desc = build_train_loader(args, len(configs))
    results = []
    try:
        for attn, ck, comp in configs:
            # Free what a previous configuration (or its out-of-memory traceback) left behind.
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            try:
                r = run_config(args, attn, bool(ck), bool(comp), device, loader)
            except torch.cuda.OutOfMemoryError as e:  # e.g. math attention without checkpointing: keep going
                results.append({"name": f"{args.arch} {args.precision} attn={attn} ckpt={ck} compile={comp}",
                                "attn": attn, "checkpoint": bool(ck), "compile": bool(comp),
                                "skipped": f"out of memory: {str(e).splitlines()[0]}"})
                print(f"  attn={attn} ckpt={ck} compile={comp}: out of memory", file=sys.stderr, flush=True)
                continue
            tf = r["tflops"].median
            r["mfu_stated"] = tf / peak if peak else None
            r["mfu_measured"] = tf / measured if measured else None
            results.append(cli.measured(r))
            print(f"  {r['name']}: {r['clips_per_s'].median:.2f} clips/s, {tf:.3f} TFLOP/s", file=sys.stderr,
                  flush=True)
    finally:
        if loader is not None:
            loader.close()
    return {"benchmark": "train_throughput", "machine": info, "device": str(device), "input": input_desc,
            "torch_threads": torch.get_num_threads(), "peak_tflops_stated": peak,
            "peak_tflops_measured_matmul": measured,
            "settings": {k: getattr(args, k) for k in ("arch", "frames", "batch", "input_size", "precision",
                                                        "warmup", "steps", "repeats", "with_loader", "quick")},
            "results": results}


def report(payload: dict) -> str:
    rows = []
    for r in payload["results"]:
        if r.get("skipped"):
            rows.append({"name": r["name"], "cfg": "skipped", "clips": r["skipped"]})
            continue
        rows.append({"name": r["name"], "cfg": f"B{r['batch']} T{r['frames']} {r['input_size']}px",
                     "clips": r["clips_per_s"].spread(2), "tflops": r["tflops"].spread(3),
                     "mfu_s": None if r["mfu_stated"] is None else 100 * r["mfu_stated"],
                     "mfu_m": None if r["mfu_measured"] is None else 100 * r["mfu_measured"],
                     "mem": r["peak_mem_mib"], "rss": r["peak_rss_mib"], "wait": r.get("data_wait_pct")})
    cols = [("name", "configuration"), ("cfg", "shape"), ("clips", "clips/s"), ("tflops", "TFLOP/s (3x fwd)"),
            ("mfu_s", "MFU % (stated peak)"), ("mfu_m", "MFU % (measured matmul)"), ("mem", "peak GPU MiB"),
            ("rss", "peak RSS MiB"), ("wait", "data_wait_pct")]
    m = payload["machine"]
    ran = [r for r in payload["results"] if not r.get("skipped")]
    fwd = f"{ran[0]['forward_tflop_per_clip'] * 1000:.3f}" if ran else "-"
    head = (f"Training step throughput on {payload['device']} ({hardware.machine_line(m)})\n"
            f"Forward FLOPs per clip: {fwd} GFLOP "
            f"(models.forward_flops); peak: stated {stats.fmt(payload['peak_tflops_stated'])}, measured matmul "
            f"{stats.fmt(payload['peak_tflops_measured_matmul'], 3)} TFLOP/s.\n"
            f"Input: {reporting.describe_input(payload['input'])}\n"
            "Median (min-max) over the timed measurements; warm-up excluded.\n")
    return head + "\n" + reporting.markdown_table(rows, cols)


def main(argv=None) -> int:
    args = parse_args(argv)
    return cli.run_main(args, run_benchmark, report, "clips_per_s", "clips/s (median)",
                        f"training step, {args.arch}", ["clips_per_s", "tflops"])


if __name__ == "__main__":
    from evautil.interrupt import stdout_may_close
    sys.exit(stdout_may_close(main, printing_only_without=("--json", "--plot")))  # | head: done at once
