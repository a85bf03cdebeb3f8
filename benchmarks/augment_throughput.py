"""The training graph's augmentation half on its own: decoded frames in, normalised clips out (no decoding).

Times the ROI resize, the colour program and the flip/normalise of ``pipelines.train_pipeline`` on batches of
already decoded frames, for three colour programs: ``off`` (no jitter, no grayscale), ``drawn`` (programs drawn as
training draws them: jitter with probability AUG.COLOR_JITTER 0.8 in a random order, grayscale with 0.2) and
``all`` (the four jitter operations and the grayscale on every clip). Two implementations of the colour program
run interleaved on the same batches:

- ``planes``: ``color_jitter.jitter_frames``, the graph's: every operation on the three colour planes separately;
- ``interleaved``: the earlier version kept here as the baseline, the same arithmetic on interleaved FHWC frames
  (grey levels and hue's max/min as reductions over the 3-wide channel axis, the hue arithmetic on 1-wide channel
  slices, channels rebuilt with a concat).

Both produce the same values (the maximum difference is printed). Figures: milliseconds per batch, median (min-max)
over the repeats, and CPU milliseconds per clip (all threads of this process).

    python -m benchmarks.augment_throughput --batch 8 --num-frames 16 --input-size 224 --threads 2
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

if __package__ in (None, ""):  # allow `python benchmarks/augment_throughput.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import cli, common, hardware, stats  # noqa: E402

PROGRAMS = ("off", "drawn", "all")
IMPLEMENTATIONS = ("planes", "interleaved")


def interleaved_jitter(frames, color_ops, brightness, contrast, saturation, hue):
    """The colour program on interleaved FHWC frames (per-clip factors): the implementation before the planes one,
    kept as this benchmark's baseline. Returns float32 FHWC."""
    import nvidia.dali.math as dmath
    from nvidia.dali import fn, types

    from dali_pipelines.color_jitter import (GREY_WEIGHTS, NUM_SLOTS, OP_BRIGHTNESS, OP_CONTRAST, OP_GRAYSCALE,
                                             OP_HUE, OP_SATURATION, hue_shifted)

    def grey(x):
        return fn.reductions.sum(x * types.Constant(np.array(GREY_WEIGHTS, np.float32)), axes=[3], keep_dims=True)

    def clamp(x):
        return dmath.clamp(x, 0.0, 255.0)

    def hue_shift(x, degrees):
        # max and min as reductions over the channel axis; the hue arithmetic itself is the graph's
        r, g, b = x[:, :, :, 0:1], x[:, :, :, 1:2], x[:, :, :, 2:3]
        top = fn.reductions.max(x, axes=[3], keep_dims=True)
        span = top - fn.reductions.min(x, axes=[3], keep_dims=True)
        return fn.cat(*hue_shifted(r, g, b, top, span, degrees), axis=3)

    x = fn.cast(frames, dtype=types.FLOAT)
    for slot in range(NUM_SLOTS):
        op = color_ops[slot]
        if op == OP_BRIGHTNESS:
            x = clamp(brightness * x)
        elif op == OP_CONTRAST:
            mean = fn.reductions.mean(grey(x), axes=[0, 1, 2], keep_dims=True)
            x = clamp(contrast * x + (1.0 - contrast) * mean)
        elif op == OP_SATURATION:
            x = clamp(saturation * x + (1.0 - saturation) * grey(x))
        elif op == OP_HUE:
            x = hue_shift(x, hue)
        elif op == OP_GRAYSCALE:
            x = fn.cat(*([grey(x)] * 3), axis=3)
    return x


def make_batch(args, program: str):
    """The external source's columns: frames (B of (T, H, W, 3) uint8, smooth colour gradients with noise, so that
    hue and saturation have something to act on) and each clip's augmentation, drawn as training draws it."""
    from dali_pipelines.augment import draw_train_aug
    from dali_pipelines.color_jitter import OP_BRIGHTNESS, OP_CONTRAST, OP_HUE, OP_SATURATION, make_color_ops

    rng = np.random.default_rng(0)
    t, h, w = args.num_frames, args.height, args.width
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    columns: dict[str, list] = {k: [] for k in ("frames", "ops", "b", "c", "s", "h", "roi_start", "roi_end",
                                                "mirror")}
    for _ in range(args.batch):
        noise = rng.normal(0, 12, (t, h, w, 3))
        columns["frames"].append(np.clip(base[None] + noise, 0, 255).astype(np.uint8))
        aug = draw_train_aug(rng, w, h, args.input_size, t)
        ops = aug.color_ops
        if program == "off":
            ops = make_color_ops(np.arange(4), False, False)
        elif program == "all":
            ops = make_color_ops(np.array([OP_BRIGHTNESS, OP_CONTRAST, OP_SATURATION, OP_HUE]), True, True)
        columns["ops"].append(np.asarray(ops, np.int32))
        for key, value in (("b", aug.brightness), ("c", aug.contrast), ("s", aug.saturation), ("h", aug.hue)):
            columns[key].append(np.asarray(value, np.float32))
        columns["roi_start"].append(aug.roi_start)
        columns["roi_end"].append(aug.roi_end)
        columns["mirror"].append(np.array(aug.mirror, np.int32))
    return tuple(columns.values())


def build(args, implementation: str, columns):
    from nvidia.dali import fn, pipeline_def

    from dali_pipelines.color_jitter import jitter_frames
    from dali_pipelines.pipelines import _normalize, _roi_resize

    @pipeline_def(enable_conditionals=True)
    def graph():
        # The frames come from the graph's own device (on_device): a .gpu() here would upload them in every run.
        frames = fn.external_source(source=lambda: columns[0], batch=True, layout="FHWC", device=args.device)
        ops, b, c, s, h, start, end, mirror = fn.external_source(source=lambda: columns[1:], num_outputs=8,
                                                                 batch=True)
        video = _roi_resize(frames, start, end, args.input_size)
        if implementation == "planes":
            video = jitter_frames(video, ops, b, c, s, h)
        else:
            video = interleaved_jitter(video, ops, b, c, s, h)
        return _normalize(video, "float32", mirror=mirror)

    pipe = graph(batch_size=args.batch, num_threads=args.threads, device_id=0 if args.device == "gpu" else None,
                 prefetch_queue_depth=1, exec_dynamic=True)
    pipe.build()
    return pipe


def on_device(columns: tuple, device: str) -> tuple:
    """``columns`` with the frames where the graph runs. For a GPU graph they are uploaded here, once and before
    any timing, so that the timed runs hold the graph alone, as on the CPU; the external source then copies them
    within the device's memory, as the CPU graph's copies them within host memory."""
    if device != "gpu":
        return columns
    import torch

    frames = torch.from_numpy(np.stack(columns[0])).cuda()  # one contiguous batch: DALI takes it in one copy
    hardware.sync_cuda()
    return (frames,) + tuple(columns[1:])


def _output(pipe) -> np.ndarray:
    (out,) = pipe.run()
    out = out.as_cpu() if hasattr(out, "as_cpu") else out
    return np.array(out.as_tensor())


def run(args) -> list[dict]:
    """One row per program and colour implementation, each kept by ``cli.measured`` once measured: a stop keeps
    the programs finished before it in ``--json``."""
    results = []
    for program in args.program_list:
        columns = on_device(make_batch(args, program), args.device)
        pipes = {impl: build(args, impl, columns) for impl in IMPLEMENTATIONS}
        outputs = {impl: _output(pipe) for impl, pipe in pipes.items()}  # warm-up, and the values to compare
        # Its first call imports torch (seconds of CPU): untimed here, not in the first timed batches' figures.
        hardware.sync_cuda()
        times = {impl: [] for impl in IMPLEMENTATIONS}
        cpu = {impl: 0.0 for impl in IMPLEMENTATIONS}
        for _ in range(args.repeats):  # interleaved, so both see the same machine
            for impl, pipe in pipes.items():
                wall, proc = time.perf_counter(), time.process_time()
                for _ in range(args.batches):
                    # The graph only: a host copy of every output (77 MB a batch at the defaults; from a GPU, a
                    # transfer both implementations pay alike) would be timed too and pull their ratio towards 1.
                    pipe.run()
                hardware.sync_cuda()
                times[impl].append((time.perf_counter() - wall) / args.batches * 1e3)
                cpu[impl] += time.process_time() - proc
        clips = args.repeats * args.batches * args.batch
        diff = float(np.abs(outputs["planes"] - outputs["interleaved"]).max())
        for impl in IMPLEMENTATIONS:
            results.append(cli.measured({"name": f"{program}/{impl}", "program": program, "implementation": impl,
                                         "ms_per_batch": stats.summarize(times[impl]),
                                         "cpu_ms_per_clip": cpu[impl] / clips * 1e3, "max_abs_diff": diff}))
        del pipes
    return results


SETTINGS = ("batch", "num_frames", "width", "height", "input_size", "threads", "device", "programs", "batches",
            "repeats", "quick")


def run_benchmark(args) -> dict:
    """The JSON of a run, with the top-level keys of the other benchmarks' (``benchmark``, ``machine``, ``input``,
    ``settings``, ``results``: one row per program and implementation)."""
    results = run(args)
    return {"benchmark": "augment_throughput", "machine": hardware.machine_info(),
            "input": {"input": "synthetic decoded frames", "width": args.width, "height": args.height,
                      "num_frames": args.num_frames},
            "settings": {k: getattr(args, k) for k in SETTINGS}, "results": results}


def report(payload: dict) -> str:
    st, rows = payload["settings"], {r["name"]: r for r in payload["results"]}
    lines = [f"Augmentation half of the training graph: B {st['batch']}, {st['num_frames']} frames of "
             f"{st['width']}x{st['height']} -> {st['input_size']}px, {st['threads']} threads, {st['device']}",
             hardware.machine_line(payload["machine"]), "",
             "| program / colour implementation | ms per batch | CPU ms per clip | max output difference |",
             "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['ms_per_batch'].spread(0)} | {r['cpu_ms_per_clip']:.1f} | "
                     f"{r['max_abs_diff']:.2g} |")
    for program in dict.fromkeys(r["program"] for r in payload["results"]):
        a, b = rows[f"{program}/interleaved"], rows[f"{program}/planes"]
        lines.append(f"- {program}: interleaved / planes = "
                     f"{a['ms_per_batch'].median / b['ms_per_batch'].median:.2f}x per batch, "
                     f"{a['cpu_ms_per_clip'] / b['cpu_ms_per_clip']:.2f}x CPU per clip")
    return "\n".join(lines)


def parse_args(argv=None):
    p = common.ArgumentParser(description=__doc__, formatter_class=common.argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--width", type=int, default=340, help="decoded frame width")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=hardware.cpu_count())
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="where the augmentation runs")
    p.add_argument("--programs", default=",".join(PROGRAMS), help=f"comma-separated subset of {','.join(PROGRAMS)}")
    p.add_argument("--batches", type=int, default=3, help="batches per timed measurement")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true",
                   help="tiny settings (CI smoke test): B 2, 4 frames of 64x48, size 32, 1 batch, 2 repeats; the "
                        "sizes and counts given too win")
    p.add_argument("--json", type=common.home_path, default=None, help="write the figures here")
    args = p.parse_args(argv)
    if args.quick:
        cli.set_quick_defaults(p, argv, args, batch=2, num_frames=4, width=64, height=48, input_size=32, batches=1,
                               repeats=2)
    args.program_list = [x for x in args.programs.split(",") if x]
    unknown = set(args.program_list) - set(PROGRAMS)
    if unknown or not args.program_list:
        p.error(f"--programs: {args.programs!r}; choose from {', '.join(PROGRAMS)}")
    if args.device == "gpu" and not hardware.cuda_available():
        p.error("--device gpu needs CUDA")
    cli.require_positive(p, args, ["batch", "num_frames", "width", "height", "input_size", "threads",
                                   "batches", "repeats"])
    cli.require_thread_counts(p, [args.threads])
    problem = _memory_problem(args)
    if problem:
        p.error(problem)
    return args


def _memory_problem(args) -> str:
    """Why the batch cannot be held in the memory available, in one line ("" when it can, or when that is not
    known): at least its decoded frames (uint8), one clip's float64 noise and the float64 gradient and int64 grid
    they are drawn from, and both graphs' float32 outputs. --batch 100000 swapped for minutes and --num-frames
    100000 ended in numpy's MemoryError."""
    from evautil.progress import format_bytes
    from tools.synthetic import available_memory

    available = available_memory()
    clip = args.num_frames * args.height * args.width * 3
    outputs = len(IMPLEMENTATIONS) * args.batch * args.num_frames * 3 * args.input_size ** 2 * 4
    need = (args.batch + 8) * clip + 40 * args.height * args.width + outputs
    if available is None or need <= available:
        return ""
    return (f"--batch {args.batch} of --num-frames {args.num_frames} frames of {args.width}x{args.height} "
            f"(--input-size {args.input_size}) needs at least {format_bytes(need)}, and {format_bytes(available)} "
            "of memory is available; give a smaller --batch, --num-frames, --width, --height or --input-size")


def main(argv=None) -> int:
    args = parse_args(argv)
    return cli.run_main(args, run_benchmark, report, "ms_per_batch", "ms per batch (median)",
                        "augmentation half of the training graph", ["ms_per_batch", "cpu_ms_per_clip"])


if __name__ == "__main__":
    from evautil.interrupt import stdout_may_close
    sys.exit(stdout_may_close(main, printing_only_without=("--json", "--plot")))  # | head: done at once
