"""Multi-view evaluation throughput (default 4 temporal clips x 3 spatial crops per video).

Two measurements on the same clips in one run:

1. decode stage, "once" vs "per view": decoding the union of the NUM_CLIP x T frame indices of a video once (what
   our test pipeline does; the 3 crops and the clips that share frames reuse the decoded pictures) versus decoding
   each view's T frames separately (NUM_CLIP x NUM_CROP decodes per video, what a one-view-per-sample loader does).
   Decoder: DALI mixed (NVDEC) with a GPU, DALI CPU for VP8/VP9 clips, else PyAV in worker processes.
2. end to end: our test loader (``build_loader(cfg, 'test')``) feeding the model's forward pass (inference mode,
   bf16 autocast on a GPU) with per-video softmax averaging over views: videos/s and data_wait_pct; plus the model
   alone on random input of the same shape and data type (the ceiling the loader must keep up with).

    python -m benchmarks.eval_throughput --quick
    python -m benchmarks.eval_throughput --arch eva-1b/14 --codec h264 --frames 250 --gop 16 --json e.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np

if __package__ in (None, ""):  # allow `python benchmarks/eval_throughput.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks import cli, common, cpu_monitor, hardware, inputs, reporting, stats  # noqa: E402
from benchmarks import decode_throughput as dt  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# 1. decode once vs once per view
# ---------------------------------------------------------------------------------------------------------------
def view_items(clips, t: int, num_clip: int, num_crop: int, per_view: bool) -> list[dict]:
    """Decode work items: one per video (union of its clips' frames) or one per view (a clip's T frames, repeated
    for every crop)."""
    from dali_pipelines.sampling import multiview_indices
    items = []
    for path, _, _ in clips:
        info = dt.probe(path)
        n = info["num_frames"]
        idx = multiview_indices(n, t, num_clip, mode="uniform")  # (num_clip, T)
        data = np.fromfile(path, dtype=np.uint8)
        groups = [idx[k] for _ in range(num_crop) for k in range(num_clip)] if per_view else [np.unique(idx)]
        for g in groups:
            items.append({"path": path, "idx": np.asarray(g, np.int64), "num_frames": n, "codec": info["codec"],
                          "gop_work": dt.gop_work(g, n, info["keyframes"]), "bytes": data})
    return items


def pick_decoder(codecs: set[str], requested: str) -> str:
    if requested == "dali_cpu" and not codecs <= set(dt.DALI_CPU_CODECS):  # else DALI's traceback, after the clips
        raise common.InputError(f"--decoder dali_cpu: DALI's CPU decoder takes only {'/'.join(dt.DALI_CPU_CODECS)} "
                                f"and the clips are {'/'.join(sorted(codecs))}; give --decoder pyav_np (or auto)")
    if requested != "auto":
        return requested
    if hardware.cuda_available():
        return "dali_mixed"
    if all(c in dt.DALI_CPU_CODECS for c in codecs):
        return "dali_cpu"
    return "pyav_np"


def decode_comparison(args, clips) -> list[dict]:
    results = []
    for per_view in (False, True):
        items = view_items(clips, args.num_frames, args.num_clip, args.num_crop, per_view)
        per_video = len(items) // len(clips)
        # Both variants decode the same videos: whole passes over the list, at least --min-videos per measurement
        # (so that DALI's prefetch queue, filled before the clock starts, is a small part of it).
        items = items * max(1, -(-args.min_videos // len(clips)))
        dec = pick_decoder({it["codec"] for it in items}, args.decoder)
        if dec.startswith("dali"):
            run, info, close = dt.make_dali("mixed" if dec == "dali_mixed" else "cpu", args.decode_batch,
                                            args.threads, items, use_frames=True)
        elif dec == "pyav_np":
            run, info, close = dt.make_pyav(1, args.threads)
        else:
            run, info, close = dt.make_pyav(1, 1)
        try:
            r = dt.measure(run, items, args.warmup, args.repeats, nvml=dec == "dali_mixed")
        finally:
            close()
        vps = stats.summarize([v / per_video for v in r["clips_per_s"].values])
        results.append(cli.measured({
            "name": f"decode {'per view' if per_view else 'once'} ({dec})", "stage": "decode", "decoder": dec,
            "decode_per_view": per_view, "decodes_per_video": per_video,
            "frames_per_video": sum(len(it["idx"]) for it in items) * per_video / len(items),
            "videos_per_s": vps, "frames_per_s": r["frames_per_s"], "gop_frames_per_s": r["gop_frames_per_s"],
            "cpu_util": r["cpu_util"], "peak_rss_mib": r["peak_rss_mib"],
            "gpu_mem_used_peak_mib": r.get("gpu_mem_used_peak_mib"), "nvdec_util_mean": r.get("nvdec_util_mean"),
            **info}))
        print(f"  {results[-1]['name']}: {vps.median:.2f} videos/s", file=sys.stderr, flush=True)
    return results


# ---------------------------------------------------------------------------------------------------------------
# 2. end to end: loader + model forward
# ---------------------------------------------------------------------------------------------------------------
# Config keys set from this benchmark's flags; --opts may not set them (parse_args): applied after the flags, they
# would be measured under the flags' labels.
_FLAG_KEYS = {"MODEL.ARCH": "--arch", "MODEL.ATTN_IMPL": "--attn", "TRAIN.PRECISION": "--precision",
              "DATA.NUM_FRAMES": "--num-frames", "DATA.INPUT_SIZE": "--input-size", "DATA.NUM_CLASSES": "--num-classes",
              "DATA.NUM_THREADS": "--threads", "DATA.NUM_WORKERS": "--workers", "TEST.BATCH_SIZE": "--batch",
              "TEST.NUM_CLIP": "--num-clip", "TEST.NUM_CROP": "--num-crop"}


def eval_cfg(args, list_path: str, root: str):
    from configs import load_config
    # TRAIN.PRECISION: the loader's clips are float32 for an fp32 model, float16 on a GPU otherwise (clip_dtype)
    opts = ["MODEL.ARCH", args.arch, "MODEL.ATTN_IMPL", args.attn, "TRAIN.PRECISION", args.precision,
            "DATA.NUM_FRAMES", str(args.num_frames), "DATA.INPUT_SIZE", str(args.input_size),
            "DATA.NUM_CLASSES", str(args.num_classes),
            "DATA.VAL_FILE", list_path, "DATA.ROOT", root, "DATA.NUM_THREADS", str(args.threads),
            "DATA.NUM_WORKERS", str(args.workers), "DATA.INDEX_WORKERS", "1", "TEST.BATCH_SIZE", str(args.batch),
            "TEST.NUM_CLIP", str(args.num_clip), "TEST.NUM_CROP", str(args.num_crop), "TEST.SAMPLING", "uniform",
            "MODEL.PRETRAINED", ""]
    return load_config(None, opts + list(args.opts or []))


def end_to_end(args, clips) -> list[dict]:
    from dali_pipelines import build_loader
    from dali_pipelines.loader import clip_dtype
    from models import build_model, forward_flops
    from benchmarks.loader_throughput import write_repeated_list, _Stream

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    b = args.batch
    rows = max((args.warmup + args.batches * args.repeats + 4) * b, len(clips))
    list_dir = args.data_dir or inputs.scratch_folder("eva_bench_lists")
    list_path, root = write_repeated_list(clips, rows, list_dir)
    cfg = eval_cfg(args, list_path, root)
    model = build_model(cfg, device=device).eval()
    views = args.num_clip * args.num_crop
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    t, s = args.num_frames, args.input_size

    def score(video: torch.Tensor) -> torch.Tensor:
        # (B, V, T, 3, S, S) -> all views in one forward -> mean of per-view softmax per video
        if amp is None:  # an fp32 model: the GPU loader hands out float16 clips
            video = video.float()
        with torch.inference_mode(), autocast:
            logits = model(video.reshape(-1, t, 3, s, s))
        return logits.float().softmax(-1).reshape(video.shape[0], views, -1).mean(1)

    results = []
    # Model alone on random input of the loader's shape and dtype: float16 on a GPU unless fp32 (clip_dtype), so
    # that this row and the loader's compare like with like. The loader's clips are on the model's device.
    dtype = clip_dtype(cfg.DATA.OUTPUT_DTYPE, "gpu" if device.type == "cuda" else "cpu", cfg.TRAIN.PRECISION)
    x = torch.randn(b, views, t, 3, s, s, device=device, dtype=getattr(torch, dtype))
    times = hardware.time_repeats(lambda: [score(x) for _ in range(args.batches)], args.warmup, args.repeats)
    vps = [args.batches * b / x_ for x_ in times]
    fwd = forward_flops(model)
    results.append(cli.measured({"name": f"model only ({args.arch}, {args.precision})", "stage": "model",
                                 "videos_per_s": stats.summarize(vps),
                                 "tflops": stats.summarize([v * views * fwd / 1e12 for v in vps])}))
    del x
    # Loader + model.
    loader = build_loader(cfg, "test")
    stream = _Stream(loader)
    waits: list[float] = []

    def step():
        t0 = time.perf_counter()
        batch = stream.next()
        waits.append(time.perf_counter() - t0)
        score(batch["video"])
        return batch["video"].shape[0]

    try:
        for _ in range(args.warmup):
            step()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        secs, vids = [], []
        with cpu_monitor.ProcessTreeMonitor() as mon:
            waits.clear()
            for _ in range(args.repeats):
                hardware.sync_cuda()
                t0 = time.perf_counter()
                n = sum(step() for _ in range(args.batches))
                hardware.sync_cuda()
                secs.append(time.perf_counter() - t0)
                vids.append(n)
    finally:
        loader.close()
    vps = [n / x_ for n, x_ in zip(vids, secs)]
    results.append(cli.measured({
        "name": f"loader + model ({loader.device} decode)", "stage": "end_to_end", "videos_per_s": stats.summarize(vps),
        "tflops": stats.summarize([v * views * fwd / 1e12 for v in vps]),
        "data_wait_pct": 100.0 * sum(waits) / sum(secs), "cpu_util": mon.cpu_util, "peak_rss_mib": mon.peak_rss / 2**20,
        "gpu_mem_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None}))
    print(f"  {results[-1]['name']}: {results[-1]['videos_per_s'].median:.2f} videos/s", file=sys.stderr, flush=True)
    return results


def parse_args(argv=None) -> argparse.Namespace:
    cuda = hardware.cuda_available()
    p = common.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    inputs.add_input_args(p, codec="h264 with a GPU, vp9 without", num_clips=8, frames=250, gop=16)
    p.add_argument("--arch", default="eva-1b/14" if cuda else "eva-tiny/16", help="models.ARCHS preset")
    p.add_argument("--attn", default="sdpa", choices=("sdpa", "math"))
    p.add_argument("--precision", default="bf16" if cuda else "fp32", choices=("bf16", "fp16", "fp32"))
    p.add_argument("--num-frames", type=int, default=16, help="frames per view (T)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--num-clip", type=int, default=4)
    p.add_argument("--num-crop", type=int, default=3, choices=(1, 3))
    p.add_argument("--num-classes", type=int, default=400)
    p.add_argument("--batch", type=int, default=2, help="videos per evaluation batch (TEST.BATCH_SIZE)")
    p.add_argument("--decode-batch", type=int, default=4, help="DALI batch of the decode comparison")
    p.add_argument("--min-videos", type=int, default=32, help="videos per timed decode measurement")
    p.add_argument("--decoder", default="auto", choices=("auto", "dali_mixed", "dali_cpu", "pyav_np", "pyav_1t"),
                   help="decoder of the decode comparison")
    p.add_argument("--workers", type=int, default=hardware.cpu_count())
    p.add_argument("--threads", type=int, default=hardware.cpu_count())
    p.add_argument("--warmup", type=int, default=2, help="untimed passes/batches")
    p.add_argument("--batches", type=int, default=4, help="batches per timed end-to-end measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-model", action="store_true", help="only the decode comparison")
    p.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="small settings (CI smoke test): eva-tiny/16, 4 clips of 64 "
                   "frames of 160x120, T 8, size 112, B 1, 2 batches, 3 repeats; sizes and counts given too win")
    p.add_argument("--json", type=common.home_path, help="write results to this JSON file")
    p.add_argument("--plot", type=common.home_path, help="write a PNG bar chart of videos/s")
    p.add_argument("--opts", nargs="*", default=[], help="extra KEY VALUE config overrides")
    args = p.parse_args(argv)
    cli.refuse_opts_set_by_flags(p, args.opts, _FLAG_KEYS)
    if args.codec is None:
        args.codec = "h264" if cuda else "vp9"
    cli.require_positive(p, args, ("batch", "decode_batch", "batches", "repeats", "num_frames", "num_clip",
                                   "num_clips", "threads", "min_videos", "input_size", "num_classes"))
    # --workers: DATA.NUM_WORKERS of the end-to-end loader (0: decode in this process), refused by the config only
    # after the decode comparison had run
    cli.require_positive(p, args, ("warmup", "torch_threads", "workers"), low=0)
    if args.quick:
        cli.set_quick_defaults(p, argv, args, arch="eva-tiny/16", num_clips=4, frames=64, num_frames=8,
                               input_size=112, batch=1, warmup=1, batches=2, repeats=3, min_videos=16, width=160,
                               height=120)
    inputs.check_clip_length(p, args, args.num_frames, f"--num-frames {args.num_frames}: the frames of each view")
    if args.decoder == "dali_mixed" and not cuda:  # else DALI's CUDA assertion, after the clips were made
        p.error("--decoder dali_mixed decodes with NVDEC and needs a CUDA GPU, and none is usable here; --decoder "
                "auto picks DALI's CPU decoder or PyAV")
    if not args.skip_model:
        cli.check_arch(p, args.arch, args.input_size)
    return args


def run_benchmark(args) -> dict:
    # Denormal floats (tiny gradients and Adam moments of the 0.001-scaled head early in training) make x86 CPU
    # arithmetic up to ~100x slower; flush them to zero as CPU training/inference setups usually do. No GPU effect.
    torch.set_flush_denormal(True)
    if args.torch_threads > 0:
        # On a busy machine, torch's OpenMP threads spin at barriers while another process holds "their" core:
        # fewer threads than cores can then be several times faster.
        torch.set_num_threads(args.torch_threads)
    clips, input_desc = inputs.read_list_or_synthetic(args)
    if not args.skip_model:  # before the decode comparison, not after it
        inputs.check_labels(args, clips, args.num_classes)
    results = decode_comparison(args, clips)
    if not args.skip_model:
        results += end_to_end(args, clips)
    once = next(r for r in results if r["stage"] == "decode" and not r["decode_per_view"])
    per = next(r for r in results if r["stage"] == "decode" and r["decode_per_view"])
    return {"benchmark": "eval_throughput", "machine": hardware.machine_info(), "input": input_desc,
            "torch_threads": torch.get_num_threads(),
            "settings": {k: getattr(args, k) for k in ("arch", "precision", "num_frames", "input_size", "num_clip",
                                                        "num_crop", "batch", "warmup", "batches", "repeats",
                                                        "quick")},
            "results": results,
            "ratios": {"decode once / per view": once["videos_per_s"].median / per["videos_per_s"].median}}


def report(payload: dict) -> str:
    rows = []
    for r in payload["results"]:
        rows.append({"name": r["name"], "vps": r["videos_per_s"].spread(2),
                     "fpv": r.get("frames_per_video"), "tf": f"{r['tflops'].median:.3g}" if "tflops" in r else None,
                     "wait": r.get("data_wait_pct"), "cpu": r.get("cpu_util"), "rss": r.get("peak_rss_mib"),
                     "gpu": r.get("gpu_mem_peak_mib") or r.get("gpu_mem_used_peak_mib"),
                     "nvdec": r.get("nvdec_util_mean")})
    cols = [("name", "stage"), ("vps", "videos/s"), ("fpv", "frames requested per video"), ("tf", "TFLOP/s"),
            ("wait", "data_wait_pct"), ("cpu", "CPU cores busy"), ("rss", "peak RSS MiB"), ("gpu", "GPU MiB"),
            ("nvdec", "NVDEC %")]
    st = payload["settings"]
    head = (f"Multi-view evaluation ({st['num_clip']} clips x {st['num_crop']} crops, T={st['num_frames']}, "
            f"{st['input_size']}px): {reporting.describe_input(payload['input'])}\n"
            f"Machine: {hardware.machine_line(payload['machine'])}\n"
            "Median (min-max) over the timed measurements; warm-up excluded.\n")
    ratios = "\n".join(f"- {k}: {v:.2f}x" for k, v in payload["ratios"].items())
    return head + "\n" + reporting.markdown_table(rows, cols) + "\n\n" + ratios


def main(argv=None) -> int:
    args = parse_args(argv)
    return cli.run_main(args, run_benchmark, report, "videos_per_s", "videos/s (median)",
                        "multi-view evaluation", ["videos_per_s"])


if __name__ == "__main__":
    from evautil.interrupt import stdout_may_close
    sys.exit(stdout_may_close(main, printing_only_without=("--json", "--plot")))  # | head: done at once
