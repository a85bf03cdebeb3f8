"""Two ways for one loader to serve two decode routes in a batch, timed on the same mixed batches (CPU).

- ``merged``: what the loader does. One training graph per route (``pipelines.train_pipeline``: DALI's CPU decoder
  for the VP9 part, frames decoded beforehand for the H.264 part), each run on its part of the batch; the two
  outputs are concatenated and put back in the batch's order.
- ``conditional``: one graph with DALI conditionals (``enable_conditionals``): the external source carries every
  route's fields (dummies where a sample has none), ``if`` splits the batch per sample between the decoder and the
  decoded frames, the branches merge, and crop/resize, colour twist and normalise run once over the whole batch.

The H.264 frames are decoded with PyAV before timing and the VP9 files are read before timing, so only the
graph side differs: the same records, the same operators, the same threads. The batches alternate VP9 and H.264
clips. Figures: median (min..max) batches per second over the repeats.

    python -m benchmarks.route_merge --codec vp9,h264 --num-clips 8 --frames 128 --batch 8
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
        pipe = train_pipeline(_repeat(batch_columns([r for _, r in part])), input_size=args.input_size, route=route,
                              dtype="float32", batch_size=len(part), num_threads=args.threads, device_id=None,
                              prefetch_queue_depth=1, exec_dynamic=True)
        pipe.build()
        pipes[route] = pipe
    order = torch.as_tensor([i for part in parts.values() for i, _ in part]).argsort()

    def run():
        outs = [torch.from_dlpack(pipes[route].run()[0].as_tensor()) for route in parts]
        return torch.cat(outs)[order]

    return run


def _conditional(records, args):
    import torch
    from nvidia.dali import fn, pipeline_def, types

    from dali_pipelines.color_jitter import jitter_frames
    from dali_pipelines.pipelines import _normalize, _roi_resize

    names = ("roi_start", "roi_end", "mirror", "brightness", "contrast", "saturation", "hue", "color_ops")
    cols = {"encoded": [], "frames": [], "video": [], "is_decoded": [], **{n: [] for n in names}}
    for route, rec in records:
        decoded = route == "pyav"
        cols["encoded"].append(np.zeros(1, np.uint8) if decoded else rec.source.encoded)
        cols["frames"].append(np.zeros(1, np.int32) if decoded else rec.source.frames)
        cols["video"].append(rec.source.video if decoded else np.zeros((1, 1, 1, 3), np.uint8))
        cols["is_decoded"].append(np.array(decoded))
        for n in names:
            cols[n].append(getattr(rec.params, n))
    order = list(cols)
    data = tuple(cols[k] for k in order)
    dtypes = [types.UINT8, types.INT32, types.UINT8, types.BOOL, types.FLOAT, types.FLOAT, types.INT32, types.FLOAT,
              types.FLOAT, types.FLOAT, types.FLOAT, types.INT32]
    layouts = [None, None, "FHWC"] + [None] * 9

    @pipeline_def(enable_conditionals=True)
    def graph():
        x = dict(zip(order, fn.external_source(source=_repeat(data), num_outputs=len(order), batch=True,
                                               dtype=dtypes, layout=layouts)))
        if x["is_decoded"]:
            video = x["video"]
        else:
            video = fn.decoders.video(x["encoded"], device="cpu", frames=x["frames"], pad_mode="edge")
        video = _roi_resize(video, x["roi_start"], x["roi_end"], args.input_size)
        video = jitter_frames(video, x["color_ops"], x["brightness"], x["contrast"], x["saturation"], x["hue"],
                              per_frame=False)
        return _normalize(video, "float32", mirror=x["mirror"])

    pipe = graph(batch_size=len(records), num_threads=args.threads, device_id=None, prefetch_queue_depth=1,
                 exec_dynamic=True)
    pipe.build()
    return lambda: torch.from_dlpack(pipe.run()[0].as_tensor())


def run_benchmark(args) -> dict:
    clips, input_desc = common.read_list_or_synthetic(args, default_codec="vp9,h264")
    records = _records(clips, args.batch, args.num_frames, args.input_size)
    runs = {"merged": _merged(records, args), "conditional": _conditional(records, args)}
    outputs = {name: run() for name, run in runs.items()}
    # Both ways compute the same batch: a timing of different work would mean nothing.
    diff = float((outputs["merged"] - outputs["conditional"]).abs().max())
    if diff > 1e-3:
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
            "results": results, "ratios": {"merged/conditional": ratio}, "max_abs_diff": diff}


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
