"""Two ways for one loader to serve two decode routes in a batch, timed on the same mixed batches (CPU).

- ``conditional``: what the loader does. One training graph for both CPU routes
  (``pipelines.train_pipeline(routes=("dali_cpu", "pyav"))``): its records carry either route's fields
  (``EitherSource``), a DALI conditional sends each sample to DALI's CPU decoder or passes its decoded frames
  through, the branches merge, and crop/resize, colour program and normalise run once over the whole batch.
- ``merged``: what the loader did before. One training graph per route, each run on its part of the batch, the
  two outputs copied into their planned rows of one tensor (``index_copy_``).

The H.264 frames are decoded with PyAV before timing and the VP9 files are read before timing, so only the
graph side differs: the same records, the same operators, the same threads. The batches alternate VP9 and H.264
clips. Figures: median (min..max) batches per second over the repeats.

    python -m benchmarks.route_merge --codec vp9,h264 --num-clips 8 --frames 250 --batch 8 --num-frames 16 \
        --input-size 224
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

if __package__ in (None, ""):  # allow `python benchmarks/route_merge.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402


def _records(clips, batch: int, num_frames: int, input_size: int):
    """One batch's samples, alternating codecs: (route, SampleRecord) with the sources ready."""
    from dali_pipelines.augment import draw_train_aug
    from dali_pipelines.draw import train_params
    from dali_pipelines.pipelines import DecodedSource, EncodedSource, SampleRecord
    from dali_pipelines.pyav_io import decode_frames, probe_stream
    from dali_pipelines.sampling import segment_indices

    rng = np.random.default_rng(0)
    out = []
    for row in range(batch):
        path = clips[row % len(clips)][0]
        info = probe_stream(path)
        frames = segment_indices(info.packets, num_frames, rng).astype(np.int32)
        params = train_params(draw_train_aug(rng, info.width, info.height, input_size, num_frames))
        if path.endswith(".mp4"):
            route, source = "pyav", DecodedSource(video=decode_frames(path, frames))
        else:
            route, source = "dali_cpu", EncodedSource(encoded=np.fromfile(path, np.uint8), frames=frames)
        out.append((route, SampleRecord(source=source, params=params, index=np.array(row, np.int32))))
    return out


def _repeat(columns):
    """An external-source callback handing over the same batch forever."""
    return lambda: columns


def _merged(records, args):
    import torch

    from dali_pipelines.pipelines import batch_columns, train_pipeline

    parts = {}
    for i, (route, rec) in enumerate(records):
        parts.setdefault(route, []).append((i, rec))
    pipes = {}
    for route, part in parts.items():
        pipe = train_pipeline(_repeat(batch_columns([r for _, r in part])), input_size=args.input_size, routes=route,
                              dtype="float32", batch_size=len(part), num_threads=args.threads, device_id=None,
                              prefetch_queue_depth=1, exec_dynamic=True)
        pipe.build()
        pipes[route] = pipe
    rows = {route: torch.as_tensor([i for i, _ in part]) for route, part in parts.items()}

    def run():
        merged = None
        for route in parts:
            out = torch.from_dlpack(pipes[route].run()[0].as_tensor())
            if merged is None:
                merged = torch.empty((len(records),) + out.shape[1:], dtype=out.dtype)
            merged.index_copy_(0, rows[route], out)
        return merged

    return run


def _conditional(records, args):
    import torch

    from dali_pipelines.pipelines import batch_columns, train_pipeline

    shared = [rec.with_either_source() for _, rec in records]
    pipe = train_pipeline(_repeat(batch_columns(shared)), input_size=args.input_size,
                          routes=sorted({route for route, _ in records}), dtype="float32", batch_size=len(records),
                          num_threads=args.threads, device_id=None, prefetch_queue_depth=1, exec_dynamic=True)
    pipe.build()
    return lambda: torch.from_dlpack(pipe.run()[0].as_tensor())


def run_benchmark(args) -> dict:
    clips, input_desc = common.read_list_or_synthetic(args, default_codec="vp9,h264")
    records = _records(clips, args.batch, args.num_frames, args.input_size)
    runs = {"conditional": _conditional(records, args), "merged": _merged(records, args)}
    outputs = {name: run() for name, run in runs.items()}
    # Both ways compute the same batch, bit for bit: a timing of different work would mean nothing.
    diff = float((outputs["merged"] - outputs["conditional"]).abs().max())
    if diff > 0:
        raise RuntimeError(f"the two graphs disagree (max abs difference {diff})")
    secs = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved, so that a busy neighbour slows both alike
        for name, run in runs.items():
            t0 = time.perf_counter()
            for _ in range(args.batches):
                run()
            secs[name].append(time.perf_counter() - t0)
    results = [{"name": name, "batches_per_s": common.summarize([args.batches / s for s in secs[name]]),
                "routes": sorted({r for r, _ in records})} for name in runs]
    ratio = results[0]["batches_per_s"].median / results[1]["batches_per_s"].median
    return {"benchmark": "route_merge", "machine": common.machine_info(), "input": input_desc,
            "settings": {k: getattr(args, k) for k in ("batch", "num_frames", "input_size", "threads", "batches",
                                                       "repeats")},
            "results": results, "ratios": {"conditional/merged": ratio}, "max_abs_diff": diff}


def report(payload: dict) -> str:
    rows = [{"name": r["name"], "bps": r["batches_per_s"].spread(2)} for r in payload["results"]]
    out = (f"Two routes in one batch: {common.describe_input(payload['input'])}\n"
           f"Machine: {common.machine_line(payload['machine'])}\n\n"
           + common.markdown_table(rows, [("name", "way"), ("bps", "batches/s")]))
    return out + "".join(f"\n- {k}: {v:.2f}x" for k, v in payload["ratios"].items())


def parse_args(argv=None) -> argparse.Namespace:
    p = common.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_input_args(p, codec="vp9,h264", num_clips=8, frames=128, gop=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--input-size", type=int, default=160)
    p.add_argument("--threads", type=int, default=common.cpu_count(), help="DALI threads of each graph")
    p.add_argument("--batches", type=int, default=4, help="batches per timed measurement")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", help="write results to this JSON file")
    p.add_argument("--plot", help="write a PNG bar chart of batches/s")
    args = p.parse_args(argv)
    common.require_positive(p, args, ("batch", "num_frames", "batches", "repeats", "num_clips"))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return common.run_main(args, run_benchmark, report, "batches_per_s", "batches/s (median)",
                           lambda p: "two routes in one batch", ["batches_per_s"])


if __name__ == "__main__":
    sys.exit(main())
