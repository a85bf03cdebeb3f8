"""Loader throughput: the same clips through several loaders, measured in one run.

Loaders (``--loaders``):
  dali    our loader, ``dali_pipelines.build_loader`` (NVDEC decode + GPU augmentation with a GPU; without one the
          CPU routes: worker processes decode VP8/VP9 with DALI's CPU decoder and other codecs with PyAV, DALI CPU
          augmentation)
  decord  the original pipeline (benchmarks/baseline_loaders.py), the baseline every headline ratio names: torch
          DataLoader, N worker processes, TSN sampling, decord decode of the sampled frames (the original's
          decoder), resize, MultiScaleCrop, flip, per-frame colour jitter, grayscale, normalise. decord ships x86_64
          wheels only; elsewhere this loader is skipped and says so
  pyav    the same pipeline with PyAV decoding only the GOPs that hold sampled frames: a second, stronger CPU
          baseline, not the original
  dali-pyav  our loader with every video decoded by PyAV (``DATA.CPU_DECODER pyav``, NVDEC kept off): what a
          list mixing codecs cost before per-video routing, for comparison with ``dali`` on a mixed list
          (``--codec vp9,h264``)

Modes (``--modes``): ``train`` (B x T frames) and ``test`` (multi-view: NUM_CLIP x NUM_CROP views per video).

Method: all loaders of a mode are built and warmed up (``--warmup`` batches, untimed: pipeline build, worker
start-up, first decodes), the baselines first, so that their forked workers hold no DALI pipeline; then
``--repeats`` rounds, each timing ``--batches`` batches of every loader in turn (interleaved, so that load from
other processes on a shared machine hits every loader alike). Before its turn a loader's batches worked on while
it sat idle (its ready queue and, for our loader, the feeder's look-ahead, where PyAV keeps decoding) are drawn
untimed, so every measurement is steady-state production. Figures are the median with min..max over the rounds.
The list file repeats the clips so that no epoch ends inside a measurement. CPU use is that of the benchmark's
process tree (main process, DALI threads, this loader's workers; the idle loaders' workers are left out) during the
timed batches.

    python -m benchmarks.loader_throughput --quick
    python -m benchmarks.loader_throughput --synthetic --codec h264 --frames 250 --gop 16 --json l.json --plot l.png
    python -m benchmarks.loader_throughput --codec vp9,h264 --loaders dali,dali-pyav --modes train
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import numpy as np

if __package__ in (None, ""):  # allow `python benchmarks/loader_throughput.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import cli, common, cpu_monitor, hardware, inputs, reporting, stats  # noqa: E402
from benchmarks.baseline_loaders import build_baseline_loader, decord_available  # noqa: E402
from evautil.files import atomic_write_text  # noqa: E402

ALL_LOADERS = ("dali", "dali-pyav", "decord", "pyav")
DEFAULT_LOADERS = "dali,decord,pyav"
# Our loader's variants: extra config overrides.
# dali-pyav: every video through PyAV. On a GPU machine NVDEC would still take what it accepts, so it is narrowed to
# AV1, which the benchmarks never write (and Hopper does not decode): PyAV then takes every video, and the frames
# are still augmented on the GPU, as in the per-video loader.
DALI_VARIANTS = {"dali": [], "dali-pyav": ["DATA.CPU_DECODER", "pyav", "DATA.NVDEC_CODECS", "['av1']"]}
ALL_MODES = ("train", "test")


def write_repeated_list(clips: list[tuple[str, int, int]], rows: int, out_dir: str) -> tuple[str, str]:
    """A list file of ``rows`` lines cycling over ``clips`` (paths relative to their common folder), written
    atomically: a run stopped midway left a half list under the name the next run reads as whole, and two runs
    writing the same list raced."""
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p, _, _ in clips])
    path = os.path.join(out_dir, f"loader_bench_{len(clips)}clips_{rows}rows.txt")
    lines = [f"{os.path.relpath(clips[i % len(clips)][0], root)} {clips[i % len(clips)][1]}" for i in range(rows)]
    atomic_write_text(path, "\n".join(lines) + "\n")  # makes out_dir when missing
    return path, root


def expected_gop_work(clips: list[tuple[str, int, int]], mode: str, t: int, num_clip: int, draws: int = 8) -> float:
    """Mean frames per clip that a seek-to-preceding-keyframe decoder must decode for this mode's sampling
    (an estimate for loaders that do not report their decode count)."""
    from benchmarks.decode_throughput import gop_work, probe
    from dali_pipelines.sampling import multiview_indices, segment_indices
    rng = np.random.default_rng(0)
    total = []
    for path, _, _ in clips:
        info = probe(path)
        n = info["num_frames"]
        for _ in range(draws if mode == "train" else 1):
            idx = (segment_indices(n, t, rng) if mode == "train"
                   else multiview_indices(n, t, num_clip, "uniform").reshape(-1))
            total.append(gop_work(idx, n, info["keyframes"]))
    return float(np.mean(total))


class _Stream:
    """Endless batches from a loader: a new epoch (a new iterator) starts when one ends."""

    def __init__(self, loader):
        self.loader = loader
        self.it = iter(loader)

    def next(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)


# Config keys set from this benchmark's flags; --opts may not set them (parse_args): the rows are labelled with
# the flags' values.
_FLAG_KEYS = {"DATA.NUM_FRAMES": "--num-frames", "DATA.INPUT_SIZE": "--input-size", "DATA.NUM_CLASSES": "--num-classes",
              "DATA.NUM_THREADS": "--threads", "DATA.NUM_WORKERS": "--workers", "DATA.DECODE_DEVICE": "--decode-device",
              "TRAIN.BATCH_SIZE": "--batch", "TEST.BATCH_SIZE": "--test-batch", "TEST.NUM_CLIP": "--num-clip",
              "TEST.NUM_CROP": "--num-crop"}


def build_dali(args, mode: str, list_path: str, root: str, variant: list[str]):
    from configs import load_config
    from dali_pipelines import build_loader
    opts = ["DATA.TRAIN_FILE", list_path, "DATA.VAL_FILE", list_path, "DATA.ROOT", root,
            "DATA.NUM_FRAMES", str(args.num_frames), "DATA.INPUT_SIZE", str(args.input_size),
            "DATA.NUM_CLASSES", str(args.num_classes), "DATA.NUM_THREADS", str(args.threads),
            "DATA.NUM_WORKERS", str(args.workers), "DATA.DECODE_DEVICE", args.decode_device,
            "DATA.INDEX_WORKERS", "1", "TRAIN.BATCH_SIZE", str(args.batch), "TEST.BATCH_SIZE", str(args.test_batch),
            "TEST.NUM_CLIP", str(args.num_clip), "TEST.NUM_CROP", str(args.num_crop), "TEST.SAMPLING", "uniform",
            "LOG.PROGRESS_BAR", "False"] + list(args.opts or []) + variant
    cfg = load_config(None, opts)
    loader = build_loader(cfg, "train" if mode == "train" else "test")
    desc = f"{loader.device} decode" + (f" ({loader.cpu_decoder})" if loader.device == "cpu" else " (NVDEC)")
    return loader, desc


def worker_pids(loader) -> list[int]:
    """Worker processes a loader owns (DataLoader workers, or our PyAV route's decode pool), best effort."""
    pids = []
    it = getattr(loader, "_iterator", None)  # torch DataLoader with persistent workers
    for w in getattr(it, "_workers", None) or []:
        if w.pid:
            pids.append(w.pid)
    pyav = (getattr(loader, "routes", None) or {}).get("pyav")  # our loader's PyAV decode pool
    if pyav is not None:
        pids.extend(pyav.worker_pids())
    return pids


def batches_worked_ahead(loader) -> int:
    """Batches a loader works on while nobody consumes (drawn untimed after it sat idle): a DataLoader's workers
    stop at prefetch_factor batches each; our loader's graphs and feeder look further ahead (its PyAV decodes go on
    past what the graphs hold), so timing it right after its queue alone was drawn would count that work as free."""
    if hasattr(loader, "prefetch_factor"):
        return (loader.prefetch_factor or 2) * max(loader.num_workers, 1)
    return loader.batches_ahead


class LoaderRun:
    """One loader under test: its endless stream and the accumulated measurements."""

    def __init__(self, name: str, loader, close, route: str, settings: str, build_s: float):
        self.name, self.loader, self.close, self.route, self.settings = name, loader, close, route, settings
        self.stream = _Stream(loader)
        self.build_s = build_s
        self.secs: list[float] = []
        self.clips: list[int] = []
        self.decoded: list[int] = []
        self.cpu_seconds = 0.0
        self.cpu_by_kind: dict[str, float] = {}
        self.wall = 0.0
        self.peak_rss = 0
        self.torch_peak: int | None = None  # torch's allocations at their highest during this loader's batches
        self.nvml: list[dict] = []
        self.last = None

    def warm(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            self.last = self.stream.next()
        return time.perf_counter() - t0

    def measure(self, batches: int, exclude: list[int], nvml: bool) -> None:
        """Time ``batches`` batches (the caller has drained what was queued while this loader sat idle)."""
        cuda = hardware.cuda_available()
        if cuda:  # each loader's own peak: one reading after every round would give every row the largest
            import torch

            torch.cuda.reset_peak_memory_stats()
        with cpu_monitor.ProcessTreeMonitor(exclude=exclude) as mon, hardware.NvmlSampler(enabled=nvml) as gpu:
            n, d = 0, 0
            hardware.sync_cuda()
            t0 = time.perf_counter()
            for _ in range(batches):
                b = self.stream.next()
                n += b["video"].shape[0]
                if "decoded" in b:
                    d += int(b["decoded"].sum())
            hardware.sync_cuda()  # GPU batches are complete only after the stream's work is done
            self.secs.append(time.perf_counter() - t0)
        self.last = b
        self.clips.append(n)
        self.decoded.append(d)
        self.cpu_seconds += mon.cpu_seconds
        for kind, secs in mon.cpu_seconds_by_kind.items():
            self.cpu_by_kind[kind] = self.cpu_by_kind.get(kind, 0.0) + secs
        self.wall += mon.wall
        self.peak_rss = max(self.peak_rss, mon.peak_rss)
        if cuda:
            self.torch_peak = max(self.torch_peak or 0, torch.cuda.max_memory_allocated())
        if nvml:
            self.nvml.append(gpu.result())

    def result(self, views: int, t: int) -> dict:
        v = self.last["video"]
        per = views * t
        res = {
            "clips_per_s": stats.summarize([c / s for c, s in zip(self.clips, self.secs)]),
            "delivered_frames_per_s": stats.summarize([c * per / s for c, s in zip(self.clips, self.secs)]),
            "decoded_frames_per_s": (stats.summarize([d / s for d, s in zip(self.decoded, self.secs)])
                                     if all(self.decoded) else None),
            "cpu_util": self.cpu_seconds / self.wall if self.wall > 0 else None,
            # Where the cores went: DALI's threads, the rest of the main process, decode worker processes.
            "cpu_util_by_kind": ({k: v / self.wall for k, v in self.cpu_by_kind.items()} if self.wall > 0 else None),
            # Work per CPU time: robust to other processes taking cores away on a shared machine.
            "clips_per_cpu_s": sum(self.clips) / self.cpu_seconds if self.cpu_seconds > 0 else None,
            "peak_rss_mib": self.peak_rss / 2**20, "build_s": self.build_s,
            "batch_shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", ""), "device": str(v.device),
            "route": self.route, "settings": self.settings,
            "gpu_mem_peak_mib": None if self.torch_peak is None else self.torch_peak / 2**20,
        }
        if self.nvml:
            vals = [x["nvdec_util_mean"] for x in self.nvml if x["nvdec_util_mean"] is not None]
            res["nvdec_util_mean"] = float(np.mean(vals)) if vals else None
            peaks = [x["gpu_mem_used_peak_mib"] for x in self.nvml if x["gpu_mem_used_peak_mib"] is not None]
            res["gpu_mem_used_peak_mib"] = max(peaks) if peaks else None
        return res


def parse_args(argv=None) -> argparse.Namespace:
    p = common.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    inputs.add_input_args(p, codec="h264 with a GPU, vp9 without", num_clips=8, frames=250, gop=16)
    p.add_argument("--loaders", default=DEFAULT_LOADERS, help=f"comma-separated subset of {','.join(ALL_LOADERS)}")
    p.add_argument("--modes", default=",".join(ALL_MODES), help="comma-separated subset of train,test")
    p.add_argument("--batch", type=int, default=8, help="train batch size (clips)")
    p.add_argument("--test-batch", type=int, default=2, help="test batch size (videos)")
    p.add_argument("--num-frames", type=int, default=16, help="frames per clip (T)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--num-clip", type=int, default=4, help="temporal clips per test video")
    p.add_argument("--num-crop", type=int, default=3, choices=(1, 3), help="spatial crops per test clip")
    p.add_argument("--num-classes", type=int, default=400)
    p.add_argument("--workers", type=int, default=hardware.cpu_count(),
                   help="DataLoader worker processes of the baselines; DATA.NUM_WORKERS of ours")
    p.add_argument("--threads", type=int, default=hardware.cpu_count(), help="DATA.NUM_THREADS (DALI threads)")
    p.add_argument("--decode-device", default="auto", choices=("auto", "gpu", "cpu"), help="DATA.DECODE_DEVICE")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches per loader")
    p.add_argument("--batches", type=int, default=8, help="batches per timed measurement")
    p.add_argument("--repeats", type=int, default=5, help="timed measurements per loader")
    p.add_argument("--quick", action="store_true",
                   help="small settings for a 2-core CPU (CI smoke test): 4 clips of 64 frames, B 4, test B 1, "
                        "1 warm-up, 2 batches, 3 repeats; sizes and counts given too win")
    p.add_argument("--json", type=common.home_path, help="write results to this JSON file")
    p.add_argument("--plot", type=common.home_path, help="write a PNG bar chart of clips/s")
    p.add_argument("--opts", nargs="*", default=[], help="extra KEY VALUE config overrides for our loader")
    args = p.parse_args(argv)
    args.loaders_by_default = "loaders" not in cli.given_options(p, argv)  # for the line when decord is missing
    cli.refuse_opts_set_by_flags(p, args.opts, _FLAG_KEYS)
    if args.codec is None:
        args.codec = "h264" if hardware.cuda_available() else "vp9"
    cli.require_positive(p, args, ("batch", "test_batch", "batches", "repeats", "num_frames", "num_clip",
                                   "num_clips", "threads", "input_size", "num_classes"))
    cli.require_positive(p, args, ("warmup",), low=0)
    cli.require_thread_counts(p, [args.threads])
    if args.quick:
        cli.set_quick_defaults(p, argv, args, num_clips=4, frames=64, batch=4, test_batch=1, warmup=1, batches=2,
                               repeats=3)
    inputs.check_clip_length(p, args, args.num_frames, f"--num-frames {args.num_frames}: the frames sampled from each")
    if (args.decode_device == "gpu" and not hardware.cuda_available()
            and any(name.strip() in DALI_VARIANTS for name in args.loaders.split(","))):
        # else the clips were made first, then the loader's config refused DATA.DECODE_DEVICE, a key not typed
        p.error("--decode-device gpu decodes with NVDEC and needs a CUDA GPU, and none is usable here; give "
                "--decode-device auto or cpu")
    return args


def _start_run(args, name: str, mode: str, b: int, rows: int, clips, list_path: str, root: str) -> LoaderRun:
    """Build ``name``'s loader for ``mode`` and start its stream (a DataLoader's workers start then)."""
    t0 = time.perf_counter()
    if name in DALI_VARIANTS:
        loader, route = build_dali(args, mode, list_path, root, DALI_VARIANTS[name])
        return LoaderRun(name, loader, loader.close, route, f"B{b} threads {args.threads} workers {args.workers}",
                         time.perf_counter() - t0)  # threads: read, or decode on CPU routes
    loader = build_baseline_loader(
        clips, mode, batch_size=b, num_workers=args.workers, decoder=name,
        num_frames=args.num_frames, input_size=args.input_size, num_clips=args.num_clip,
        num_crop=args.num_crop, test_sampling="uniform", length=rows,
        pin_memory=hardware.cuda_available())
    route = (f"{'the original pipeline' if name == 'decord' else 'the original transforms'}: "
             f"DataLoader, {name} decode, CPU augmentation")

    def close(ld=loader):
        it = getattr(ld, "_iterator", None)
        if it is not None:
            it._shutdown_workers()

    # The workers are forked from this process: a DALI pipeline left for the collector would be copied into them
    # and its destructor could run there. None is alive now (baselines start first, an earlier mode's are freed).
    gc.collect()
    return LoaderRun(name, loader, close, route, f"B{b} workers {args.workers}", time.perf_counter() - t0)


def _run_mode(args, mode: str, loaders: list[str], clips, list_dir: str, results: list, notes: list) -> None:
    """Build, warm and measure every loader of ``mode`` (interleaved); their rows go into ``results``."""
    b = args.batch if mode == "train" else args.test_batch
    views = 1 if mode == "train" else args.num_clip * args.num_crop
    # Enough rows for one loader's warm-up, measurements and untimed queue draws (interleaving), in one epoch.
    rows = max((args.warmup + (args.batches + 2 * args.workers + 4) * args.repeats + 4) * b, len(clips))
    list_path, root = write_repeated_list(clips, rows, list_dir)
    work = expected_gop_work(clips, mode, args.num_frames, args.num_clip)
    started: dict[str, LoaderRun] = {}
    try:
        # The baselines first: their DataLoader workers fork before any of this mode's DALI pipelines exists.
        for name in sorted(loaders, key=lambda n: n in DALI_VARIANTS):
            if name == "decord" and not decord_available():
                results.append({"name": f"{name}/{mode}", "loader": name, "mode": mode,
                                "skipped": "decord is not installed", "missing_package": "decord"})
                notes.append("decord (the original pipeline): skipped, the decord package is not installed "
                             "(it has x86_64 wheels only); the pyav row is not the original")
                continue
            started[name] = run = _start_run(args, name, mode, b, rows, clips, list_path, root)
            run.warm_s = run.warm(args.warmup)  # pipeline build, worker start-up, first decodes
        runs = [started[name] for name in loaders if name in started]  # measured and reported in the asked order
        # Interleaved repeats: loader A, B, ..., A, B, ... so that a busy neighbour on a shared machine
        # slows every loader alike. A loader that sat idle has worked ahead: those batches are drawn untimed.
        for _ in range(args.repeats):
            for run in runs:
                if len(runs) > 1:
                    # The previous loader works ahead in the background after its turn: let that finish, then
                    # draw every batch this loader worked on while idle, so the timing sees steady state.
                    cpu_monitor.wait_until_idle()
                    run.warm(batches_worked_ahead(run.loader))
                others = [pid for o in runs if o is not run for pid in worker_pids(o.loader)]
                run.measure(args.batches, others, nvml=run.name in DALI_VARIANTS)
        for run in runs:
            r = {"name": f"{run.name}/{mode}", "loader": run.name, "mode": mode, "warmup_s": run.warm_s,
                 **run.result(views, args.num_frames), "gop_work_per_clip": work}
            r["gop_frames_per_s"] = stats.summarize([c * work for c in r["clips_per_s"].values])
            results.append(cli.measured(r))
            unit = "videos/s" if mode == "test" else "clips/s"  # a test item is a video of all its views
            print(f"  {r['name']:14s} {r['clips_per_s'].median:8.2f} {unit}  ({run.route})", file=sys.stderr,
                  flush=True)
    finally:
        for run in started.values():
            run.close()


def run_benchmark(args: argparse.Namespace) -> dict:
    loaders = cli.chosen_names("--loaders", args.loaders, ALL_LOADERS, "loader")
    modes = cli.chosen_names("--modes", args.modes, ALL_MODES, "mode")
    if args.workers < 1:
        raise common.InputError(f"--workers must be at least 1, got {args.workers}")
    clips, input_desc = inputs.read_list_or_synthetic(args)  # after the option checks: generating clips takes time
    if any(name in DALI_VARIANTS for name in loaders):  # the baselines do not check the labels
        inputs.check_labels(args, clips, args.num_classes)
    list_dir = args.data_dir or inputs.scratch_folder("eva_bench_lists")
    results, notes = [], []
    for mode in modes:
        _run_mode(args, mode, loaders, clips, list_dir, results, notes)
        # The mode's loaders are closed and no longer referenced; our loader's graphs sit in reference cycles that
        # only the collector frees. Freed now, not in the next mode's forked DataLoader workers (which would run
        # DALI's destructors there), and before the pools are emptied: the next mode's GPU memory is its own.
        gc.collect()
        hardware.release_device_memory()
    ratios, paired = {}, {}
    for mode in modes:
        by = {r["loader"]: r for r in results if r["mode"] == mode and not r.get("skipped")}
        if "dali" in by:
            for base in ("decord", "pyav", "dali-pyav"):
                if base in by:
                    ratios[f"dali/{base} {mode}"] = by["dali"]["clips_per_s"].median / by[base]["clips_per_s"].median
                    # Both were timed in every round (interleaved), so the rounds pair up.
                    paired[f"dali/{base} {mode}"] = stats.paired_ratio(by["dali"]["clips_per_s"].values,
                                                                       by[base]["clips_per_s"].values)
                    if by["dali"]["clips_per_cpu_s"] and by[base]["clips_per_cpu_s"]:
                        ratios[f"dali/{base} {mode}, per CPU-second"] = (by["dali"]["clips_per_cpu_s"]
                                                                        / by[base]["clips_per_cpu_s"])
    return {"benchmark": "loader_throughput", "machine": hardware.machine_info(), "input": input_desc,
            "settings": {k: getattr(args, k) for k in (
                "batch", "test_batch", "num_frames", "input_size", "num_clip", "num_crop", "workers", "threads",
                "decode_device", "warmup", "batches", "repeats", "quick")},
            "results": results, "ratios": ratios, "paired": paired, "notes": notes}


def _cpu_split(result: dict) -> str:
    by = result.get("cpu_util_by_kind")
    if not by:
        return "-"
    kinds = (cpu_monitor.KIND_DALI, cpu_monitor.KIND_WORKERS, cpu_monitor.KIND_MAIN)
    return " / ".join(f"{by.get(k, 0.0):.2f}" for k in kinds)


def report(payload: dict) -> str:
    rows = []
    for r in payload["results"]:
        if r.get("skipped"):
            rows.append({"name": r["name"], "clips": "skipped", "route": r["skipped"]})
            continue
        rows.append({"name": r["name"], "route": r["route"], "settings": r["settings"],
                     "clips": r["clips_per_s"].spread(2), "out": r["delivered_frames_per_s"].spread(0),
                     "dec": r["decoded_frames_per_s"].spread(0) if r["decoded_frames_per_s"] else "-",
                     "gop": r["gop_frames_per_s"].median, "cpu": r["cpu_util"], "split": _cpu_split(r),
                     "eff": r["clips_per_cpu_s"], "rss": r["peak_rss_mib"],
                     "gpu": r.get("gpu_mem_used_peak_mib") or r.get("gpu_mem_peak_mib"),
                     "nvdec": r.get("nvdec_util_mean")})
    cols = [("name", "loader/mode"), ("route", "route"), ("settings", "settings"),
            ("clips", "clips/s (test: videos/s)"),
            ("out", "delivered frames/s"), ("dec", "decoded frames/s"), ("gop", "GOP-work frames/s (est.)"),
            ("cpu", "CPU cores busy"), ("split", "of which DALI / workers / other"), ("eff", "clips per CPU-s"),
            ("rss", "peak RSS MiB"),
            ("gpu", "peak GPU MiB (NVML, else torch)"),
            ("nvdec", "NVDEC %")]
    inp = payload["input"]
    head = (f"Loader throughput: {reporting.describe_input(inp)}\n"
            f"Machine: {hardware.machine_line(payload['machine'])}\n"
            "Median (min-max) over the timed measurements; warm-up excluded. decord = the original pipeline; "
            "pyav = its transforms with PyAV decoding.\n")
    out = head + "\n" + reporting.markdown_table(rows, cols)
    if payload["ratios"]:
        out += "\n\nRatios (median clips/s, or clips per CPU-second, same run, same cores):\n" + "\n".join(
            f"- {k}: {v:.2f}x" for k, v in payload["ratios"].items())
    if payload.get("paired"):
        out += "\n\nPaired rounds (clips/s of the two loaders timed back to back in each round):\n" + "\n".join(
            f"- {k}: {p.describe()}" for k, p in payload["paired"].items())
    if payload["notes"]:
        out += "\n\n" + "\n".join(f"- {n}" for n in sorted(set(payload["notes"])))
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    return cli.run_main(args, run_benchmark, report, "clips_per_s", "clips/s (median)",
                        lambda p: f"loader throughput, {p['input'].get('codec', 'list')}",
                        ["clips_per_s", "delivered_frames_per_s", "cpu_util", "peak_rss_mib"], names_option="loaders")


if __name__ == "__main__":
    from evautil.interrupt import stdout_may_close
    sys.exit(stdout_may_close(main, printing_only_without=("--json", "--plot")))  # | head: done at once
