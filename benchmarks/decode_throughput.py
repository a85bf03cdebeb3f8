"""Decode-only throughput of the decoders this project cares about, on the same files in one run.

Decoders (``--decoders``, default all that can run here):
  dali_mixed    DALI ``fn.decoders.video(device='mixed')`` (NVDEC; needs a GPU)
  dali_cpu      DALI ``fn.decoders.video(device='cpu')`` (VP8/VP9/MJPEG only)
  pyav_1t       PyAV in this process, one decoder thread
  pyav_nt       PyAV in this process, FFmpeg frame+slice threading with N threads
  pyav_np       PyAV in N worker processes, one thread each (how a DataLoader decodes)
  decord        decord ``VideoReader(num_threads=1)`` (the original's decoder), when installed

Modes (``--modes``): ``all`` (every frame), ``tsn`` (16 segment-sampled frames per clip, the original's training
sampling), ``multiview`` (4 clips x 16 uniform frames, the test protocol, each frame decoded once).

Every decoder produces RGB uint8 frames (PyAV includes the YUV->RGB conversion, as DALI does). The encoded files are
read into memory before timing, so disk speed is not measured. Figures: clips/s, delivered frames/s (frames handed
out), decoded frames/s where the decoder's own count is known (PyAV; for the others only the delivered count is
known), and ``gop_frames/s``, the frames a decoder that seeks to the preceding keyframe must decode at least
(a decoder-independent measure of the work, computed from the clips' keyframe positions).

    python -m benchmarks.decode_throughput --quick
    python -m benchmarks.decode_throughput --synthetic --codec h264 --frames 250 --gop 16 --json out.json --plot d.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

import numpy as np

if __package__ in (None, ""):  # allow `python benchmarks/decode_throughput.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import cli, common, cpu_monitor, hardware, inputs, reporting, stats  # noqa: E402
from benchmarks.baseline_loaders import decode_pyav, decord_available  # noqa: E402
from evautil.workers import abandon_pool, started_pool  # noqa: E402

ALL_DECODERS = ("dali_mixed", "dali_cpu", "pyav_1t", "pyav_nt", "pyav_np", "decord")
ALL_MODES = ("all", "tsn", "multiview")
DALI_CPU_CODECS = ("vp8", "vp9", "mjpeg")
UNTHREADED = ("pyav_1t", "decord")  # decoders that --threads does not change


# ---------------------------------------------------------------------------------------------------------------
# Workload: per-clip frame indices for each mode
# ---------------------------------------------------------------------------------------------------------------
def clip_indices(num_frames: int, mode: str, rng: np.random.Generator, segments: int = 16,
                 num_clips: int = 4) -> np.ndarray | None:
    """Frame indices decoded for one clip in ``mode`` (None = all frames)."""
    from dali_pipelines.sampling import multiview_indices, segment_indices
    if mode == "all":
        return None
    if mode == "tsn":
        return segment_indices(num_frames, segments, rng)
    if mode == "multiview":
        return multiview_indices(num_frames, segments, num_clips, mode="uniform").reshape(-1)
    raise ValueError(f"mode {mode!r} is not one of {ALL_MODES}")


def probe(path: str) -> dict:
    """Codec, frame count and keyframe positions (demux only)."""
    import av
    with av.open(path) as c:
        s = c.streams.video[0]
        pk = [p for p in c.demux(s) if p.size > 0]
        return {"codec": s.codec_context.name, "num_frames": len(pk),
                "keyframes": [i for i, p in enumerate(pk) if p.is_keyframe] or [0]}


def gop_work(indices: np.ndarray | None, num_frames: int, keyframes: list[int]) -> int:
    """Frames a seek-to-preceding-keyframe decoder must decode for ``indices``: in every GOP holding a requested
    frame, everything from the keyframe up to the last requested frame of that GOP."""
    if indices is None:
        return num_frames
    kf = np.asarray(keyframes)
    work = 0
    last_in_gop: dict[int, int] = {}
    for i in np.unique(indices):
        g = int(np.searchsorted(kf, i, side="right") - 1)
        last_in_gop[g] = max(last_in_gop.get(g, -1), int(i))
    for g, last in last_in_gop.items():
        work += last - int(kf[g]) + 1
    return work


# ---------------------------------------------------------------------------------------------------------------
# Decoders: each returns (run_one_rep(items) -> (clips, frames_out, frames_decoded or None), info, closer)
# ---------------------------------------------------------------------------------------------------------------
def _pyav_all(path: str, threads: int) -> tuple[int, int]:
    import av
    n = 0
    with av.open(path) as c:
        cc = c.streams.video[0].codec_context
        cc.thread_count = max(threads, 1)
        if threads > 1:
            cc.thread_type = "AUTO"
        for f in c.decode(video=0):
            f.to_ndarray(format="rgb24")
            n += 1
    return n, n


def _pyav_task(args: tuple) -> tuple[int, int]:
    """(frames delivered, frames decoded) for one clip; top-level so worker processes can run it."""
    path, idx, threads = args
    if idx is None:
        return _pyav_all(path, threads)
    frames, decoded = decode_pyav(path, idx, threads)
    return len(frames), decoded


def make_pyav(threads: int, procs: int):
    # The project's worker processes (evautil.workers): they ignore SIGINT, so a Ctrl-C in a terminal, which reaches
    # the whole process group, leaves the one line of the main process, not a KeyboardInterrupt traceback per worker.
    pool = started_pool(procs, what="the PyAV decode processes of pyav_np") if procs > 1 else None

    def run(items):
        tasks = [(it["path"], it["idx"], threads) for it in items]
        res = list(pool.map(_pyav_task, tasks)) if pool else [_pyav_task(t) for t in tasks]
        return len(items), sum(r[0] for r in res), sum(r[1] for r in res)

    def close():
        if pool:  # no result is wanted any more: its workers are ended at once, also mid-task on an interrupt
            abandon_pool(pool)
    return run, {"threads": threads, "processes": max(procs, 1), "batch": 1}, close


def make_decord(threads: int):
    import decord

    def run(items):
        out = 0
        for it in items:
            vr = decord.VideoReader(it["path"], num_threads=threads)
            idx = list(range(len(vr))) if it["idx"] is None else sorted(set(int(i) for i in it["idx"]))
            frames = vr.get_batch(idx).asnumpy()  # every mode decodes: the requested frames, or all of them
            out += len(frames) if it["idx"] is None else len(it["idx"])
        return len(items), out, None
    return run, {"threads": threads, "processes": 1, "batch": 1}, lambda: None


def make_dali(device: str, batch: int, threads: int, items_pool: list[dict], use_frames: bool):
    """A DALI pipeline: external_source feeds (encoded bytes, frame indices) per sample, decoders.video decodes.

    The feed cycles over ``items_pool``; run() executes as many iterations as needed for the requested items.
    """
    from nvidia.dali import fn, pipeline_def, types

    from dali_pipelines.pipelines import use_dali_host_pool

    use_dali_host_pool()  # as the loader's graphs do
    state = {"k": 0}

    def source():
        encs, idxs = [], []
        for _ in range(batch):
            it = items_pool[state["k"] % len(items_pool)]
            state["k"] += 1
            encs.append(it["bytes"])
            idxs.append(it["idx"].astype(np.int32) if it["idx"] is not None else np.zeros(1, np.int32))
        return encs, idxs

    device_id = 0 if device == "mixed" else None

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=device_id, prefetch_queue_depth=2)
    def pipe():
        # The loader's decoder settings: no padding past the end, and no NVML CPU mask for NVDEC's threads.
        extra = {"affine": False} if device == "mixed" else {}
        if use_frames:
            enc, idx = fn.external_source(source=source, num_outputs=2, batch=True,
                                          dtype=[types.UINT8, types.INT32])
            return fn.decoders.video(enc, device=device, frames=idx, pad_mode="none", **extra)
        # Whole videos: the bytes only (an unused second output makes DALI warn that the feed does needless work)
        (enc,) = fn.external_source(source=lambda: source()[:1], num_outputs=1, batch=True, dtype=[types.UINT8])
        return fn.decoders.video(enc, device=device, pad_mode="none", **extra)

    p = pipe()
    p.build()

    def run(items):
        iters = max(1, -(-len(items) // batch))
        frames = 0
        for _ in range(iters):
            (out,) = p.run()
            # Shapes are known without copying the frames to the host.
            frames += sum(int(s[0]) for s in out.shape())
        if device == "mixed":
            hardware.sync_cuda()
        return iters * batch, frames, None

    def close():
        nonlocal p
        del p
        hardware.release_device_memory()  # the next row's GPU memory is its own, not this pipeline's pool
    return run, {"threads": threads, "processes": 1, "batch": batch}, close


# ---------------------------------------------------------------------------------------------------------------
# Benchmark driver
# ---------------------------------------------------------------------------------------------------------------
def measure(run: Callable, items: list[dict], warmup: int, repeats: int, nvml: bool) -> dict:
    """Warm-up passes, then ``repeats`` timed passes over ``items``; figures per pass, summarised."""
    for _ in range(warmup):
        run(items)
    secs, clips, out_frames, dec_frames = [], [], [], []
    with cpu_monitor.ProcessTreeMonitor() as mon, hardware.NvmlSampler(enabled=nvml) as gpu:
        for _ in range(repeats):
            t0 = time.perf_counter()
            c, f, d = run(items)
            secs.append(time.perf_counter() - t0)
            clips.append(c)
            out_frames.append(f)
            dec_frames.append(d)
    work = sum(it["gop_work"] for it in items)
    res = {
        "clips_per_s": stats.summarize([c / s for c, s in zip(clips, secs)]),
        "frames_per_s": stats.summarize([f / s for f, s in zip(out_frames, secs)]),
        # The required decode work scales with clips actually run (DALI rounds up to whole batches).
        "gop_frames_per_s": stats.summarize([work * (c / len(items)) / s for c, s in zip(clips, secs)]),
        "decoded_frames_per_s": (stats.summarize([d / s for d, s in zip(dec_frames, secs)])
                                 if all(d is not None for d in dec_frames) else None),
        "cpu_util": mon.cpu_util,
        # Work per CPU time: robust to other processes taking cores away on a shared machine.
        "clips_per_cpu_s": sum(clips) / mon.cpu_seconds if mon.cpu_seconds > 0 else None,
        "peak_rss_mib": mon.peak_rss / 2**20,
        "seconds": secs,
    }
    if nvml:
        res.update(gpu.result())
    return res


def build_items(clips: list[tuple[str, int, int]], mode: str, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    items = []
    for path, _, _ in clips:
        info = probe(path)
        idx = clip_indices(info["num_frames"], mode, rng)
        items.append({"path": path, "idx": idx, "num_frames": info["num_frames"], "codec": info["codec"],
                      "gop_work": gop_work(idx, info["num_frames"], info["keyframes"]),
                      "bytes": np.fromfile(path, dtype=np.uint8)})
    return items


def thread_counts(value: str) -> list[int]:
    """The ``--threads`` option: a thread count, or a comma-separated list of counts (each measured in turn)."""
    try:
        counts = [int(v) for v in value.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"--threads {value!r}: expected counts of 1 or more, comma-separated "
                                         "(4,8,16), each once")
    return counts


def parse_args(argv=None) -> argparse.Namespace:
    p = common.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    gpu = hardware.cuda_available()
    inputs.add_input_args(p, codec="h264 with a GPU, vp9 without", num_clips=8, frames=250, gop=16)
    p.add_argument("--decoders", default=",".join(ALL_DECODERS), help="comma-separated subset of " + ",".join(
        ALL_DECODERS))
    p.add_argument("--modes", default=",".join(ALL_MODES), help="comma-separated subset of " + ",".join(ALL_MODES))
    p.add_argument("--batch", type=int, default=4, help="DALI batch size")
    p.add_argument("--threads", type=thread_counts, default=[hardware.cpu_count()],
                   help="DALI num_threads, PyAV threads (pyav_nt) and processes (pyav_np); a comma-separated list "
                        "(4,8,16) measures each count in turn, in one run on the same clips")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes over the clips")
    p.add_argument("--repeats", type=int, default=5, help="timed passes over the clips")
    p.add_argument("--min-clips", type=int, default=32, help="clips per timed repeat (whole passes over the list)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="small clips and few repeats (CI smoke test): 4 clips, 64 frames of 160x120, 3 repeats of 16 "
                        "clips, 1 warm-up; sizes and counts given too win")
    p.add_argument("--json", type=common.home_path, help="write results to this JSON file")
    p.add_argument("--plot", type=common.home_path, help="write a PNG bar chart of decoded frames/s")
    args = p.parse_args(argv)
    args.decoders_by_default = "decoders" not in cli.given_options(p, argv)  # for the line when decord is missing
    if args.codec is None:
        args.codec = "h264" if gpu else "vp9"
    cli.require_positive(p, args, ("batch", "repeats", "num_clips", "min_clips"))
    cli.require_positive(p, args, ("warmup", "seed"), low=0)  # numpy takes no negative seed: a traceback, late
    cli.require_thread_counts(p, args.threads)
    if args.quick:
        cli.set_quick_defaults(p, argv, args, num_clips=4, frames=64, repeats=3, min_clips=16, warmup=1, width=160,
                               height=120)
    if {m.strip() for m in args.modes.split(",")} & {"tsn", "multiview"}:  # they sample 16 segments of a clip
        inputs.check_clip_length(p, args, 16, "--modes tsn and multiview: one frame of each of 16 segments")
    else:
        inputs.check_clip_length(p, args, 2, "a video, not a still image")
    return args


def run_benchmark(args: argparse.Namespace) -> dict:
    gpu = hardware.cuda_available()
    decoders = cli.chosen_names("--decoders", args.decoders, ALL_DECODERS, "decoder")
    modes = cli.chosen_names("--modes", args.modes, ALL_MODES, "mode")
    clips, input_desc = inputs.read_list_or_synthetic(args)  # after the option checks: generating clips takes time

    # Several --threads counts: a row for each, its name ending in /t<count> (pyav_1t and decord take none: one row).
    sweep = len(args.threads) > 1
    runs = [(d, t, f"/t{t}" if sweep and d not in UNTHREADED else "") for d in decoders
            for t in (args.threads[:1] if d in UNTHREADED else args.threads)]
    results, notes = [], []
    for mode in modes:
        items = build_items(clips, mode, args.seed)
        # Each timed repeat covers at least --min-clips clips (whole passes over the list) so that DALI's prefetch
        # queue, filled before the clock starts, is a small part of a measurement.
        passes = max(1, -(-args.min_clips // len(items)))
        items = items * passes
        codecs = sorted({it["codec"] for it in items})
        for dec, threads, suffix in runs:
            name = f"{dec}/{mode}{suffix}"
            skip = None
            if dec == "dali_mixed" and not gpu:
                skip = "no CUDA GPU on this machine (NVDEC decoder skipped)"
            elif dec == "dali_cpu" and any(c not in DALI_CPU_CODECS for c in codecs):
                skip = f"DALI's CPU decoder handles only {'/'.join(DALI_CPU_CODECS)}; clips are {'/'.join(codecs)}"
            elif dec == "decord" and not decord_available():
                skip = "decord is not installed"
            if skip:
                results.append({"name": name, "decoder": dec, "mode": mode, "skipped": skip,
                                **({"missing_package": "decord"} if dec == "decord" else {})})
                note = f"{dec}: skipped, {skip}"
                if note not in notes:
                    notes.append(note)
                continue
            if dec.startswith("dali"):
                run, info, close = make_dali("mixed" if dec == "dali_mixed" else "cpu", args.batch, threads,
                                             items, use_frames=mode != "all")
            elif dec == "pyav_1t":
                run, info, close = make_pyav(1, 1)
            elif dec == "pyav_nt":
                run, info, close = make_pyav(threads, 1)
            elif dec == "pyav_np":
                run, info, close = make_pyav(1, threads)
            else:
                run, info, close = make_decord(1)
            try:
                r = measure(run, items, args.warmup, args.repeats, nvml=(dec == "dali_mixed"))
            finally:
                close()
            r.update({"name": name, "decoder": dec, "mode": mode, **info})
            results.append(cli.measured(r))
            print(f"  {name:22s} {r['frames_per_s'].median:9.1f} frames/s  {r['clips_per_s'].median:7.2f} clips/s",
                  file=sys.stderr, flush=True)
    return {"benchmark": "decode_throughput", "machine": hardware.machine_info(), "input": input_desc,
            "settings": {k: getattr(args, k)
                         for k in ("batch", "threads", "warmup", "repeats", "min_clips", "seed", "quick")},
            "results": results, "notes": notes}


def report(payload: dict) -> str:
    rows = []
    for r in payload["results"]:
        if r.get("skipped"):
            rows.append({"name": r["name"], "clips": "skipped", "frames": r["skipped"]})
            continue
        rows.append({
            "name": r["name"], "clips": r["clips_per_s"].spread(2), "frames": r["frames_per_s"].spread(0),
            "decoded": r["decoded_frames_per_s"].spread(0) if r["decoded_frames_per_s"] else "-",
            "gop": r["gop_frames_per_s"].spread(0), "cfg": f"b{r['batch']} t{r['threads']} p{r['processes']}",
            "cpu": r["cpu_util"], "eff": r["clips_per_cpu_s"], "rss": r["peak_rss_mib"],
            "gpumem": r.get("gpu_mem_used_peak_mib"),
            "nvdec": r.get("nvdec_util_mean"),
        })
    cols = [("name", "decoder/mode"), ("clips", "clips/s"), ("frames", "delivered frames/s"),
            ("decoded", "decoded frames/s"), ("gop", "GOP-work frames/s"), ("cfg", "batch/threads/procs"),
            ("cpu", "CPU cores busy"), ("eff", "clips per CPU-s"), ("rss", "peak RSS MiB"), ("gpumem", "GPU mem MiB"),
            ("nvdec", "NVDEC %")]
    inp = payload["input"]
    head = (f"Decode throughput: {reporting.describe_input(inp)}\n"
            f"Machine: {hardware.machine_line(payload['machine'])}\n"
            "Median (min-max) over the timed repeats; warm-up excluded.\n")
    notes = "\n".join(f"- {n}" for n in payload["notes"])
    return head + "\n" + reporting.markdown_table(rows, cols) + ("\n\n" + notes if notes else "")


def main(argv=None) -> int:
    args = parse_args(argv)
    return cli.run_main(args, run_benchmark, report, "frames_per_s", "delivered frames/s (median)",
                        lambda p: f"decode throughput, {p['input'].get('codec', 'list')}",
                        ["clips_per_s", "frames_per_s"], names_option="decoders")


if __name__ == "__main__":
    from evautil.interrupt import stdout_may_close
    sys.exit(stdout_may_close(main, printing_only_without=("--json", "--plot")))  # | head: done at once
