"""One loader over a list whose videos take different decode routes: VP9 through DALI's CPU decoder and H.264
through PyAV in the same epoch (one graph for both CPU routes, batches in the planned order), exact resume, the run-time
fallback from a failing route, the per-route counters and the CPU-share warning."""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import weakref

import numpy as np
import pytest
import torch

from dali_pipelines import DataError
from dali_pipelines.index import build_index
import dali_pipelines.loader_routing as loader_routing
from dali_pipelines.loader import build_loader
from dali_pipelines.graph_records import DecodedSource
from dali_pipelines.pyav_encode import write_video
from dali_pipelines.pyav_io import decode_frames, decode_indexed_frames
from dali_pipelines.routing import NVDEC, PYAV, VideoRoute
from engine.distributed import DistContext
from engine.runner import _data_counts
from engine.loader_stats import loader_stats
from tests.video_fixtures import (denormalize, make_clip_dataset, mark_rotated, pattern_frames, roi_resize_ref,
                                  small_cfg)

VP9_COUNTS = [24, 30, 26, 33, 28]
H264_COUNTS = [27, 31, 25, 29, 32]
NO_JITTER = {"AUG.COLOR_JITTER": 0.0, "AUG.GRAY_SCALE": 0.0}


def _mixed_list(root: str, vp9_size=(96, 72), h264_size=(96, 72)) -> tuple[str, set[int], set[int]]:
    """A list alternating VP9 (.webm) and H.264 (.mp4) clips; returns it with the VP9 and H.264 rows."""
    vp9 = make_clip_dataset(root, VP9_COUNTS, codec="vp9", size=vp9_size, list_name="vp9.txt")
    h264 = make_clip_dataset(root, H264_COUNTS, codec="h264", size=h264_size, list_name="h264.txt")
    lines = [ln for pair in zip(open(vp9).read().split("\n"), open(h264).read().split("\n")) for ln in pair if ln]
    path = os.path.join(root, "mixed.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    rows = range(len(lines))
    return path, {r for r in rows if r % 2 == 0}, {r for r in rows if r % 2 == 1}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("mixed"))
    return (root, *_mixed_list(root))


def _train_reference(loader, row) -> np.ndarray:
    """The (T, S, S, 3) pixels of ``row``'s training sample: its drawn frames decoded by PyAV, cropped, resized
    and flipped by a numpy reference of the graph (colour jitter off)."""
    sample = loader.sample(row)
    params = sample.params
    frames = decode_frames(sample.video.path, sample.frames)
    ref = roi_resize_ref(frames, params.roi_start, params.roi_end, loader.input_size)
    return ref[:, :, ::-1] if int(params.mirror) else ref


def _has_interleaved_batch(loader, epoch: int, vp9_rows: set[int]) -> bool:
    loader.set_epoch(epoch)
    for number in range(len(loader)):
        kinds = [r in vp9_rows for r in loader.schedule.rows(number)]
        if sum(a != b for a, b in zip(kinds, kinds[1:])) >= 2:  # the route changes twice within the batch
            return True
    return False


def test_one_loader_decodes_vp9_with_dali_and_h264_with_pyav(mixed):
    root, lst, vp9_rows, h264_rows = mixed
    loader = build_loader(small_cfg(root, lst, **NO_JITTER, **{"TRAIN.BATCH_SIZE": 4}), "train")
    assert loader.routes_in_use() == ["dali_cpu", "pyav"] and loader.cpu_decoder == "dali+pyav"
    assert {r for r, vr in loader.video_routes.items() if vr.route == "dali_cpu"} == vp9_rows
    assert {r for r, vr in loader.video_routes.items() if vr.route == "pyav"} == h264_rows
    # an epoch with a batch whose routes interleave (VP9, H.264, VP9, ...): the graphs' parts must be put back
    epoch = next(e for e in range(20) if _has_interleaved_batch(loader, e, vp9_rows))
    loader.set_epoch(epoch)
    seen = []
    for batch in loader:
        assert len(loader.pipelines) == 1  # both CPU routes in one graph: nothing to merge
        rows = batch["index"].tolist()
        assert batch["video"].shape == (4, 4, 3, 32, 32)
        assert batch["label"].tolist() == [loader.index.entries[r].label for r in rows]
        assert rows == loader.schedule.rows(len(seen) // 4)  # the planned order
        for video, row in zip(batch["video"], rows):
            err = np.abs(denormalize(video) - _train_reference(loader, row)).mean()
            # PyAV's frames are the reference's own; DALI's VP9 decode converts YUV to RGB slightly differently.
            assert err < (1.0 if row in h264_rows else 3.0), (row, err)
        seen += rows
    assert len(seen) == len(set(seen)) == 8
    stats = loader.stats
    assert (stats["videos_dali_cpu"], stats["videos_pyav"], stats["videos_nvdec"]) == (5, 5, 0)
    assert stats["samples_dali_cpu"] == len(set(seen) & vp9_rows)
    assert stats["samples_pyav"] == len(set(seen) & h264_rows)
    assert stats["route_fallbacks"] == 0 and stats["skipped_videos"] == 0
    # the run summary's data counters (rank 0 of one process) carry the per-route counts
    summary = _data_counts(loader, DistContext(), "train_")
    assert summary["train_videos_dali_cpu"] == 5 and summary["train_videos_pyav"] == 5
    assert summary["train_samples_dali_cpu"] + summary["train_samples_pyav"] == 8
    assert loader_stats(loader, DistContext())["samples_pyav"] == stats["samples_pyav"]  # the eval lines' counters
    loader.close()


def test_forcing_dali_cpu_names_the_first_video_it_cannot_decode_by_line_and_path(mixed):
    root, lst, _, h264_rows = mixed
    first = min(h264_rows)  # 0-based row: the list's line first + 1
    path = os.path.join(root, open(lst).read().splitlines()[first].rsplit(" ", 1)[0])
    with pytest.raises(ValueError, match=rf"line {first + 1} \({re.escape(path)}\): DATA.CPU_DECODER is 'dali'"):
        build_loader(small_cfg(root, lst, **{"DATA.CPU_DECODER": "dali"}), "train")


def test_mixed_multiview_test_loader_keeps_list_order(mixed):
    root, lst, _, _ = mixed
    cfg = small_cfg(root, val_list=lst, **{"TEST.NUM_CLIP": 2, "TEST.NUM_CROP": 3, "TEST.BATCH_SIZE": 3})
    loader = build_loader(cfg, "val")
    rows = []
    for batch in loader:
        assert batch["video"].shape[1:] == (6, 4, 3, 32, 32)
        rows_here = batch["index"].tolist()
        # make_clip_dataset labels its i-th clip i % 3; the mixed list holds clip i of each codec at rows 2i, 2i+1
        assert batch["label"].tolist() == [(r // 2) % 3 for r in rows_here]
        rows += batch["index"].tolist()
    assert rows == list(range(10))
    assert loader.stats["samples_dali_cpu"] == loader.stats["samples_pyav"] == 5
    loader.close()


@pytest.mark.parametrize("split", ["val", "train"])
def test_graph_built_after_the_source_changed_runs_the_code_the_process_imported(mixed, tmp_path, split):
    """A loader's graph is built at its first batch: the multi-view test graph's at the first evaluation, hours into
    a run, and DALI converts a graph with conditionals (the training graph's colour program) from its source file
    when it is first defined. A copy of the packages is edited on disk (a helper's signature changes, every line
    moves) after the loader is built: the graph must still be the code the process imported (the loader converts
    the training graph's code when it is built; the test graph has no conditionals)."""
    root, lst, _, _ = mixed
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    copy = tmp_path / "checkout"
    for package in ("configs", "dali_pipelines", "evautil"):
        shutil.copytree(os.path.join(repo, package), copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "tests").mkdir()
    for name in ("__init__.py", "video_fixtures.py"):
        shutil.copy(os.path.join(repo, "tests", name), copy / "tests" / name)
    shape = (6, 4, 3, 32, 32) if split == "val" else (4, 3, 32, 32)  # 2 clips x 3 crops, or one clip
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(copy)!r})
        from dali_pipelines.loader import build_loader
        from tests.video_fixtures import small_cfg
        cfg = small_cfg({root!r}, train_list={lst!r}, val_list={lst!r},
                        **{{"TEST.NUM_CLIP": 2, "TEST.NUM_CROP": 3, "TEST.BATCH_SIZE": 3}})
        loader = build_loader(cfg, {split!r})
        path = {str(copy / "dali_pipelines" / "pipelines.py")!r}
        text = open(path).read()
        old = "def _normalize(video, dtype: str, mirror=None):"
        assert old in text
        edited = text.replace(old, "def _normalize(video, out_dtype: str, mirror=None):\\n    dtype = out_dtype")
        open(path, "w").write("# a later version of this file\\n" * 5 + edited)
        rows = []
        for batch in loader:
            assert tuple(batch["video"].shape[1:]) == {shape}, batch["video"].shape
            rows += batch["index"].tolist()
        print("rows", sorted(rows))
    """)
    env = dict(os.environ, TMPDIR=str(tmp_path))  # DALI writes its converted code there
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rows [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]" in proc.stdout


def test_mixed_resume_mid_epoch_is_exact(mixed):
    root, lst, _, _ = mixed
    cfg = small_cfg(root, lst, **{"TRAIN.BATCH_SIZE": 3})
    ref_loader = build_loader(cfg, "train")
    reference, states = [], []
    for _ in range(2):
        for b in ref_loader:
            reference.append((b["index"].clone(), b["video"].clone(), b["label"].clone()))
            states.append(ref_loader.state_dict())
    ref_loader.close()
    for k in (1, 4):  # mid-epoch 0, mid-epoch 1
        loader = build_loader(cfg, "train")
        loader.load_state_dict(states[k - 1])
        resumed = []
        while len(resumed) < len(reference) - k:
            resumed += [(b["index"].clone(), b["video"].clone(), b["label"].clone()) for b in loader]
        assert len(resumed) == len(reference) - k
        for (ri, rv, rl), (gi, gv, gl) in zip(reference[k:], resumed):
            assert torch.equal(ri, gi) and torch.equal(rv, gv) and torch.equal(rl, gl)
        loader.close()


def test_video_failing_on_dali_cpu_falls_back_to_pyav(tmp_path):
    """An H.264 video the index takes for VP9 goes to DALI's CPU decoder, which cannot decode it: its worker fails
    on that video alone, the video moves to PyAV (counted), and is delivered with its frames instead of being
    quarantined; the graph, which only augments, is never rebuilt."""
    root, lst, _, h264_rows = (str(tmp_path), *_mixed_list(str(tmp_path)))
    index = build_index(lst, root, 3, workers=1)
    victim = min(h264_rows)
    index.infos[victim] = dataclasses.replace(index.infos[victim], codec="vp9")
    cfg = small_cfg(root, val_list=lst, **{"DATA.CPU_PACK_GOPS": False, "TEST.BATCH_SIZE": 4})
    loader = build_loader(cfg, "val", index=index)
    assert loader.video_routes[victim].route == "dali_cpu"
    views = {}
    for batch in loader:
        views.update(zip(batch["index"].tolist(), batch["video"]))
    assert sorted(views) == list(range(10))
    reason = loader.video_routes[victim].reason
    assert loader.video_routes[victim].route == "pyav" and "failed on dali_cpu" in reason
    assert 'Failed to create video decoder' in reason  # DALI's own line, not its pipeline traceback
    assert loader.stats["route_fallbacks"] == 1 and loader.stats["skipped_videos"] == 0
    assert loader.stats["rebuilds"] == 0
    sample = loader.sample(victim)
    frames = decode_frames(sample.video.path, sample.frames)
    start, end = sample.params.roi_start[0], sample.params.roi_end[0]
    got = denormalize(views[victim][0])  # first crop, first clip: (T, S, S, 3)
    ref = roi_resize_ref(frames, start, end, loader.input_size)[sample.params.new_order[:loader.num_frames]]
    assert np.abs(got - ref).mean() < 1.0
    loader.close()


def test_a_video_moved_to_pyav_is_not_moved_again_where_it_also_stands_in_for_another(tmp_path):
    """A video that stands in for one quarantined earlier comes twice in the batches prepared together. When it
    failed on DALI's CPU decoder and moved to PyAV, its other sample, drawn before the move, was sent to DALI's
    decoder again and moved a second time: two route fallbacks and two warnings for one video. Its other sample
    now goes to its new route at once."""
    from dali_pipelines.schedule import epoch_plan

    root, lst, _, h264_rows = (str(tmp_path), *_mixed_list(str(tmp_path)))
    index = build_index(lst, root, 3, workers=1)
    order = epoch_plan(np.arange(len(index)), 7, 0, 2, 0, 1, True).order.tolist()
    at = next(i for i in range(1, len(order)) if order[i] in h264_rows)
    gone, victim = order[at - 1], order[at]  # victim stands in for gone, in gone's batch or the one before its own
    index.infos[victim] = dataclasses.replace(index.infos[victim], codec="vp9")  # DALI's CPU decoder then fails it
    loader = build_loader(small_cfg(root, lst, **{"DATA.CPU_PACK_GOPS": False}), "train", index=index)
    assert loader.schedule.plan().order.tolist() == order and loader.video_routes[victim].route == "dali_cpu"
    index.quarantine(gone, "quarantined earlier in the run", remember=False)
    rows = [r for b in loader for r in b["index"].tolist()]
    assert rows.count(victim) == 2 and gone not in rows
    assert loader.video_routes[victim].route == "pyav"
    assert loader.stats["route_fallbacks"] == 1 and loader.stats["skipped_videos"] == 0
    loader.close()


def _dali_error(line: str) -> str:
    """The text of a DALI pipeline error around its one informative ``line`` (as DALI 2.4 words it)."""
    return ("Critical error in pipeline:\nError in MIXED operator `nvidia.dali.fn.decoders.video`,\nwhich was used "
            "in the pipeline definition with the following traceback:\n\n  File \"pipelines.py\", line 248, in "
            f"_decode\n\nencountered:\n\n{line}\nC++ context: [frames_decoder_gpu.cc:176]\n\nCurrent pipeline "
            "object is no longer valid.")


def test_a_codec_configuration_the_gpu_refuses_moves_all_its_videos_at_once(mixed, caplog):
    """DALI's mixed decoder fails a video with "Codec configuration not supported on this GPU" (the driver could not
    be asked at start-up): every video of that codec, chroma and bit depth leaves NVDEC with it, not one graph
    rebuild per batch that holds one; another failure moves only its video. (On this CPU machine the H.264 rows
    are put on NVDEC by hand; after the move the epoch runs on the CPU routes and delivers every video.)"""
    root, lst, vp9_rows, h264_rows = mixed
    loader = build_loader(small_cfg(root, val_list=lst, **{"TEST.BATCH_SIZE": 4}), "val")
    on_nvdec = sorted(h264_rows)
    loader.video_routes.move(on_nvdec, VideoRoute(NVDEC))
    loader.video_routes[min(vp9_rows)] = VideoRoute(NVDEC)  # another configuration, which the GPU decodes
    first, second = on_nvdec[0], on_nvdec[1]
    fall_back = loader._fallback.fall_back  # the loader's run-time fallback (loader_fallback.py)
    fall_back(loader.sample(first), RuntimeError(_dali_error('Assert on "ok" failed: cannot parse frame 3')))
    assert loader.video_routes[first].route == "pyav" and loader.video_routes[second].route == NVDEC
    refused = "Codec configuration not supported on this GPU. Codec: H.264, chroma format: YUV 4:2:0, bit depth: 8"
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.loader_fallback"):
        fall_back(loader.sample(second), RuntimeError(_dali_error(f'Assert on "caps.bIsSupported" failed: '
                                                                  f'{refused}')))
    assert all(loader.video_routes[r].route == "pyav" for r in h264_rows)
    assert all(refused in loader.video_routes[r].reason for r in on_nvdec[1:])
    assert loader.video_routes[min(vp9_rows)].route == NVDEC  # VP9 stays
    assert loader.stats["route_fallbacks"] == len(h264_rows)
    assert "the other 3 videos of the same codec configuration (h264, yuv420p) go to the pyav route" in caplog.text
    loader.video_routes[min(vp9_rows)] = VideoRoute("dali_cpu")
    delivered = [i for batch in loader for i in batch["index"].tolist()]
    assert sorted(delivered) == sorted(vp9_rows | h264_rows) and loader.stats["skipped_videos"] == 0
    loader.close()


class _BrokenGraph:
    """Stands for the NVDEC graph on this CPU machine: it takes its parts from the feeder as DALI's does, and its
    run fails, as DALI's does once its decoder broke, whenever it has videos to decode."""

    def __init__(self, source):
        self.source = source

    def run(self):
        self.source()  # StopIteration at the end of the epoch
        raise RuntimeError(_dali_error('Assert on "ok" failed: cannot parse frame 3'))

    def reset(self):  # for the next epoch
        pass


def _nvdec_on_a_cpu_machine(loader, rows, monkeypatch, hangs, release: threading.Event) -> list[str]:
    """Put ``rows`` on NVDEC, whose graph fails at its first run (the loader then decodes the graph's in-flight
    videos one by one, ``_recover``), and replace the decoder of those lone decodes with one that never ends for
    the videos ``hangs`` (until ``release``, or a generous 60 s, so that code that waits for it fails the test
    rather than hanging it) and fails with DALI's error for the others. Returns the videos it was asked to decode."""
    import dali_pipelines.pipelines as pipelines

    loader.video_routes.move(rows, VideoRoute(NVDEC))
    real = loader._make_pipeline
    monkeypatch.setattr(loader, "_make_pipeline",
                        lambda graph, routes: (_BrokenGraph(loader._feeder.source(graph)) if graph == NVDEC
                                               else real(graph, routes)))
    asked = []

    def decode(encoded, indices, device="cpu", device_id=None, name="memory file"):
        asked.append(name)
        if name in hangs:
            release.wait(60)
        raise RuntimeError(_dali_error('Assert on "ok" failed: cannot parse frame 3'))

    monkeypatch.setattr(pipelines, "decode_encoded_with_dali", decode)
    return asked


def test_a_lone_decode_that_does_not_end_after_a_graph_failure_leaves_its_video_out(tmp_path, monkeypatch):
    """After the NVDEC graph fails, the loader decodes its in-flight videos one by one to find the culprit; one whose
    decode never ends (a decoder that hangs) hung the run for ever, in the main thread. Each lone decode gets
    DATA.VIDEO_TIMEOUT_S, as the feeder's do: that video is left out of this run only, in the feeder's words,
    another that fails alone moves to PyAV, and the epoch delivers every other video with the pixels of a loader
    that met no failure; the next index build uses the video again without probing it."""
    root, lst, _, h264_rows = (str(tmp_path), *_mixed_list(str(tmp_path)))
    limit = 5.0  # what must answer within it: the NVDEC route's reads of two small files (no decode workers)
    cfg = small_cfg(root, val_list=lst, **{"TEST.BATCH_SIZE": 10, "DATA.NUM_WORKERS": 0,
                                           "DATA.VIDEO_TIMEOUT_S": limit})
    reference = build_loader(cfg, "val")
    expected = {r: v.clone() for b in reference for r, v in zip(b["index"].tolist(), b["video"])}
    reference.close()
    loader = build_loader(cfg, "val")
    hangs, fails = sorted(h264_rows)[:2]
    stuck = loader.index.entries[hangs].path
    release = threading.Event()
    try:
        asked = _nvdec_on_a_cpu_machine(loader, [hangs, fails], monkeypatch, {stuck}, release)
        got = {r: v.clone() for b in loader for r, v in zip(b["index"].tolist(), b["video"])}
    finally:
        release.set()
    assert sorted(asked) == sorted([stuck, loader.index.entries[fails].path])
    assert sorted(got) == sorted(set(range(10)) - {hangs})
    for r in got:
        assert torch.equal(got[r], expected[r]), r
    assert loader.video_routes[fails].route == "pyav" and loader.stats["route_fallbacks"] == 1
    assert loader.stats["rebuilds"] == 1 and loader.stats["skipped_videos"] == 1
    (line,) = loader.stats["skipped"]
    assert line.startswith(stuck) and f"did not decode within DATA.VIDEO_TIMEOUT_S = {limit:g} s" in line, line
    assert "left out of this run only" in line
    loader.close()
    again = build_index(lst, root, 3, workers=1)
    assert hangs in again.good_rows and again.probed == 0


class _FailingPipeline:
    """Stands for the small pipeline of a lone re-decode: it fails as DALI's does, so that the error's traceback
    holds it (through its ``run`` frame), as a DALI pipeline error holds its pipeline."""

    def run(self):
        raise RuntimeError(_dali_error('Assert on "ok" failed: cannot parse frame 3'))


def test_a_failed_graph_and_the_lone_decodes_pipelines_are_freed_at_once(tmp_path, monkeypatch):
    """After the NVDEC graph fails, the loader re-decodes its in-flight videos alone and builds new graphs. DALI's
    errors hold their pipelines in their tracebacks: the failed graph stayed alive through the recovery (beside
    the lone decodes' pipelines and the rebuilt graphs: GPU memory and NVDEC decoders twice), and each lone
    decode's pipeline stayed in a reference cycle through its future until a garbage collection. Both are freed
    as soon as they are done with (checked with the garbage collector off), and the epoch delivers every video."""
    import dali_pipelines.pipelines as pipelines

    root, lst, _, h264_rows = (str(tmp_path), *_mixed_list(str(tmp_path)))
    cfg = small_cfg(root, val_list=lst, **{"TEST.BATCH_SIZE": 10, "DATA.NUM_WORKERS": 0})
    loader = build_loader(cfg, "val")
    rows = sorted(h264_rows)[:2]
    loader.video_routes.move(rows, VideoRoute(NVDEC))
    graphs, lone = weakref.WeakSet(), weakref.WeakSet()
    real = loader._make_pipeline

    def make(graph, routes):
        if graph != NVDEC:
            return real(graph, routes)
        broken = _BrokenGraph(loader._feeder.source(graph))
        graphs.add(broken)
        return broken

    alive_at_decode = []

    def decode(encoded, indices, device="cpu", device_id=None, name="memory file"):
        alive_at_decode.append((len(graphs), len(lone)))
        pipe = _FailingPipeline()
        lone.add(pipe)
        pipe.run()

    monkeypatch.setattr(loader, "_make_pipeline", make)
    monkeypatch.setattr(pipelines, "decode_encoded_with_dali", decode)
    gc.collect()
    gc.disable()  # only reference counting frees: what a cycle holds stays
    try:
        got = [r for b in loader for r in b["index"].tolist()]
        alive_after = (len(graphs), len(lone))
    finally:
        gc.enable()
    assert sorted(got) == list(range(10))
    assert [loader.video_routes[r].route for r in rows] == [PYAV, PYAV] and loader.stats["rebuilds"] == 1
    assert alive_at_decode == [(0, 0), (0, 0)]  # neither the failed graph nor the first lone pipeline is alive
    assert alive_after == (0, 0)
    loader.close()


def test_a_graph_no_video_needs_any_more_is_freed_at_the_end_of_the_epoch(tmp_path, monkeypatch):
    """The NVDEC graph's only video changed on disk after it was indexed and is quarantined by the feeder: no video
    needs that graph any more, yet it stayed built (its threads, GPU memory and NVDEC decoders) for every later
    epoch, since a loader reuses its graphs. It is freed at the end of the epoch; the next epoch runs on the other
    graph alone and delivers the same videos."""
    root, lst, _, h264_rows = (str(tmp_path), *_mixed_list(str(tmp_path)))
    cfg = small_cfg(root, val_list=lst, **{"TEST.BATCH_SIZE": 10, "DATA.NUM_WORKERS": 0})
    loader = build_loader(cfg, "val")
    row = min(h264_rows)
    loader.video_routes[row] = VideoRoute(NVDEC)
    graphs = weakref.WeakSet()
    real = loader._make_pipeline

    def make(graph, routes):
        if graph != NVDEC:
            return real(graph, routes)
        nvdec = _BrokenGraph(loader._feeder.source(graph))  # fails if it is ever handed a video
        graphs.add(nvdec)
        return nvdec

    monkeypatch.setattr(loader, "_make_pipeline", make)
    with open(loader.index.entries[row].path, "ab") as f:  # changed since it was indexed: quarantined when read
        f.write(b"\0")
    gc.collect()
    gc.disable()
    try:
        first = [r for b in loader for r in b["index"].tolist()]
        after_first = (len(graphs), len(loader.pipelines))
        second = [r for b in loader for r in b["index"].tolist()]
        after_second = (len(graphs), len(loader.pipelines))
    finally:
        gc.enable()
    assert sorted(first) == sorted(second) == sorted(set(range(10)) - {row})
    assert loader.stats["skipped_videos"] == 1 and loader.routes_in_use() == ["dali_cpu", PYAV]
    assert after_first == after_second == (0, 1)
    loader.close()


def test_lone_decodes_that_do_not_end_three_in_a_row_end_the_run(tmp_path, monkeypatch):
    """Three of the failed graph's videos in a row whose lone decode does not end within DATA.VIDEO_TIMEOUT_S point
    at the decoding, not at the videos: the run ends with the feeder's message naming the limit and the last one,
    instead of leaving out one video after another."""
    root, lst, _, h264_rows = (str(tmp_path), *_mixed_list(str(tmp_path)))
    cfg = small_cfg(root, val_list=lst, **{"TEST.BATCH_SIZE": 10, "DATA.NUM_WORKERS": 0, "DATA.VIDEO_TIMEOUT_S": 3.0})
    loader = build_loader(cfg, "val")
    rows = sorted(h264_rows)[:3]
    paths = [loader.index.entries[r].path for r in rows]
    release = threading.Event()
    try:
        _nvdec_on_a_cpu_machine(loader, rows, monkeypatch, set(paths), release)
        with pytest.raises(RuntimeError, match="3 videos in a row did not decode within DATA.VIDEO_TIMEOUT_S = 3 s"
                           ) as e:
            for _ in loader:
                pass
    finally:
        release.set()
    assert f"(the last: {paths[2]})" in str(e.value)
    assert loader.stats["skipped_videos"] == 2 and loader.stats["rebuilds"] == 0
    loader.close()


def _views(loader) -> dict[int, torch.Tensor]:
    """One pass of an evaluation loader: each delivered row's views."""
    return {r: v.clone() for b in loader for r, v in zip(b["index"].tolist(), b["video"])}


def _record_graphs(loader, monkeypatch, routes_of=None) -> list[tuple[str, tuple[str, ...]]]:
    """The (graph, routes) of every graph the loader builds from now on (``routes_of(graph, routes)``: the routes
    to build it with instead)."""
    built, real = [], loader._make_pipeline

    def make(graph, routes):
        built.append((graph, routes))
        return real(graph, routes_of(graph, routes) if routes_of else routes)

    monkeypatch.setattr(loader, "_make_pipeline", make)
    return built


def _replace_files(loader, rows) -> None:
    for row in rows:
        with open(loader.index.path(row), "ab") as f:
            f.write(b"\0" * 64)  # another size than the index's: the feeder quarantines it by name


def test_a_route_whose_videos_were_all_quarantined_is_no_longer_in_use(tmp_path, monkeypatch):
    """The VP9 files (DALI's CPU decoder) are replaced between two evaluations: the feeder quarantines them, and the
    loader's routes are then those of the videos left, PyAV's alone: ``routes_in_use``, ``route``, ``cpu_decoder``
    and the graph built for the next pass, which delivers the H.264 videos' views as before."""
    root = str(tmp_path)
    lst, vp9_rows, h264_rows = _mixed_list(root)
    loader = build_loader(small_cfg(root, val_list=lst, **{"TEST.BATCH_SIZE": 4}), "val")
    assert loader.routes_in_use() == ["dali_cpu", "pyav"] and loader.cpu_decoder == "dali+pyav"
    expected = _views(loader)
    assert sorted(expected) == list(range(10))
    _replace_files(loader, vp9_rows)
    built = _record_graphs(loader, monkeypatch)
    for graphs in ([("host", ("dali_cpu", "pyav"))], [("host", ("pyav",))]):
        loader.load_state_dict(loader.state_dict())  # the graphs are built again for this pass
        got = _views(loader)
        assert built == graphs
        built.clear()
        assert sorted(got) == sorted(h264_rows) and loader.stats["skipped_videos"] == 5
        for r in got:
            assert torch.equal(got[r], expected[r]), r
        assert loader.routes_in_use() == ["pyav"]
        assert loader.route == "pyav" and loader.cpu_decoder == "pyav"
    loader.close()


def test_a_graph_whose_only_video_was_left_out_is_not_built_again(tmp_path, monkeypatch):
    """The NVDEC graph fails and the lone decode of its only video does not end within DATA.VIDEO_TIMEOUT_S: the
    video is left out of this run, and the graphs rebuilt at the first undelivered batch are those of the videos
    left, not an NVDEC graph with no video to decode; the epoch delivers every other video unchanged."""
    root, lst, _, h264_rows = (str(tmp_path), *_mixed_list(str(tmp_path)))
    cfg = small_cfg(root, val_list=lst, **{"TEST.BATCH_SIZE": 10, "DATA.NUM_WORKERS": 0, "DATA.VIDEO_TIMEOUT_S": 3.0})
    reference = build_loader(cfg, "val")
    expected = _views(reference)
    reference.close()
    loader = build_loader(cfg, "val")
    victim = min(h264_rows)
    release = threading.Event()
    try:
        _nvdec_on_a_cpu_machine(loader, [victim], monkeypatch, {loader.index.entries[victim].path}, release)
        assert loader.routes_in_use() == [NVDEC, "dali_cpu", "pyav"]
        got = _views(loader)
    finally:
        release.set()
    assert sorted(got) == sorted(set(range(10)) - {victim})
    for r in got:
        assert torch.equal(got[r], expected[r]), r
    assert loader.stats["rebuilds"] == 1 and loader.stats["skipped_videos"] == 1
    assert loader.routes_in_use() == ["dali_cpu", "pyav"] and loader.route == "mixed"
    assert len(loader.pipelines) == 1 and not isinstance(loader.pipelines[0], _BrokenGraph)
    loader.close()


def test_a_video_falling_back_to_a_route_without_a_graph_gets_that_graph(tmp_path, monkeypatch):
    """Every video on NVDEC: only NVDEC's graph is built. One fails its read as a video NVDEC would number otherwise
    than the index, and the feeder moves it to PyAV during the epoch, without a rebuild: the host graph, which no
    video needed, is built at its first part, and the epoch delivers every video with the views of a CPU-only
    loader. (On this CPU machine NVDEC's graph is a host graph, fed the frames PyAV decodes.)"""
    root = str(tmp_path)
    lst = make_clip_dataset(root, H264_COUNTS, codec="h264")
    cfg = small_cfg(root, val_list=lst, **{"TEST.BATCH_SIZE": 2})
    reference = build_loader(cfg, "val")
    expected = _views(reference)
    reference.close()
    real_routing = loader_routing.route_videos

    def all_on_nvdec(*args, **kwargs):  # as a GPU machine routes them
        routes = real_routing(*args, **kwargs)
        routes.move(np.arange(5), VideoRoute(NVDEC))
        return routes

    monkeypatch.setattr(loader_routing, "route_videos", all_on_nvdec)  # where the loader routes at its start
    loader = build_loader(cfg, "val")
    assert loader.routes_in_use() == [NVDEC]
    nvdec = loader.routes[NVDEC]
    monkeypatch.setattr(nvdec, "source", lambda s, encoded: DecodedSource(video=decode_indexed_frames(
        s.video.path, s.frames, s.video.size, s.video.mtime_ns, 1)))
    victim = 3
    nvdec._numbering[victim] = "a picture an MP4 edit list hides"
    built = _record_graphs(loader, monkeypatch, lambda graph, routes: (PYAV,) if graph == NVDEC else routes)
    got = _views(loader)
    assert built == [(NVDEC, (NVDEC,)), ("host", ("dali_cpu", "pyav"))]
    assert sorted(got) == list(range(5))
    for r in got:
        assert torch.equal(got[r], expected[r]), r
    moved = loader.video_routes[victim]
    assert moved.route == PYAV and "failed on nvdec" in moved.reason and "NVDEC would number its frames" in moved.reason
    assert loader.stats["route_fallbacks"] == 1 and loader.stats["rebuilds"] == 0
    assert (loader.stats["samples_nvdec"], loader.stats["samples_pyav"]) == (4, 1)
    assert loader.routes_in_use() == [NVDEC, PYAV] and len(loader.pipelines) == 2
    loader.close()


def test_videos_the_index_knows_nvdec_would_misnumber_start_on_their_cpu_route(tmp_path, monkeypatch, caplog):
    """A raw .h264 stream with B-frames carries no pts, so DALI's NVDEC decoder would hand its frames out in decode
    order. The index records that verdict, and a GPU machine's routing (here: a policy whose GPU may decode, which
    sends H.264 to NVDEC) puts such videos on their CPU route before any read, said in one start-up line; the epoch
    then reads the MP4s on NVDEC (whose reads still run the check) with no per-video fallback warning. (On this CPU
    machine NVDEC's graph is a host graph, fed the frames PyAV decodes.)"""
    from dali_pipelines.routing import RoutingPolicy

    root = str(tmp_path)
    lst = make_clip_dataset(root, H264_COUNTS[:3], codec="h264")
    for name in ("raw a.h264", "raw_b.h264"):
        write_video(os.path.join(root, "videos", name), pattern_frames(30), codec="h264", gop=16)
    with open(lst, "a") as f:
        f.write("videos/raw a.h264 0\nvideos/raw_b.h264 1\n")
    raw_rows = [3, 4]
    monkeypatch.setattr(loader_routing, "machine_policy", lambda *a, **k: RoutingPolicy(gpu_usable=True))
    with caplog.at_level(logging.INFO, logger="dali_pipelines"):
        loader = build_loader(small_cfg(root, val_list=lst, **{"TEST.BATCH_SIZE": 2}), "val")
    try:
        routes = loader.video_routes
        assert [routes[r].route for r in range(5)] == [NVDEC, NVDEC, NVDEC, PYAV, PYAV]  # was: all on NVDEC
        for r in raw_rows:
            assert routes[r].reason.startswith("NVDEC would number its frames otherwise than the index: packets "
                                               "carry no timestamp")
            assert loader.index.info(r).nvdec_problem.startswith("packets carry no timestamp")
        assert loader.index.info(0).nvdec_problem == ""
        lines = [r.getMessage() for r in caplog.records if "from the start" in r.getMessage()]
        assert len(lines) == 1, lines
        raw = [os.path.join(root, "videos", name) for name in ("raw a.h264", "raw_b.h264")]
        assert lines[0].startswith(f"DATA.VAL_FILE {lst}: 2 videos go to their CPU route from the start ({raw[0]}, "
                                   f"{raw[1]}): NVDEC would number their frames otherwise than the index: 2 x packets "
                                   "carry no timestamp")
        assert "videos per decode route {'nvdec': 3, 'dali_cpu': 0, 'pyav': 2}" in caplog.text
        nvdec = loader.routes[NVDEC]
        monkeypatch.setattr(nvdec, "source", lambda s, encoded: DecodedSource(video=decode_indexed_frames(
            s.video.path, s.frames, s.video.size, s.video.mtime_ns, 1)))
        built = _record_graphs(loader, monkeypatch, lambda graph, routes: (PYAV,) if graph == NVDEC else routes)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dali_pipelines"):
            got = _views(loader)
        assert sorted(got) == list(range(5)) and loader.stats["skipped_videos"] == 0
        assert sorted(built) == [("host", (PYAV,)), (NVDEC, (NVDEC,))]  # both graphs from the start
        assert loader.stats["route_fallbacks"] == 0 and "failed on the nvdec route" not in caplog.text
        assert (loader.stats["samples_nvdec"], loader.stats["samples_pyav"]) == (3, 2)
        assert sorted(nvdec._numbering) == [0, 1, 2]  # NVDEC's reads checked their videos, never the raw ones
    finally:
        loader.close()


def test_every_video_quarantined_during_the_run_ends_it_with_the_same_error_again(tmp_path):
    """Every file replaced after the training loader was built: the feeder quarantines each, and the run ends saying
    that no readable training video is left; iterated again, the loader builds no graph and says the same."""
    root, lst, vp9_rows, h264_rows = (str(tmp_path), *_mixed_list(str(tmp_path)))
    loader = build_loader(small_cfg(root, lst, **{"TRAIN.BATCH_SIZE": 4}), "train")
    _replace_files(loader, vp9_rows | h264_rows)
    for _ in range(2):
        with pytest.raises(DataError, match="no readable training video is left .every one was quarantined"):
            for _ in loader:
                pass
    assert loader.stats["skipped_videos"] == 10
    assert loader.routes_in_use() == [] and loader.pipelines == ()
    loader.close()


def test_cpu_share_warning_and_strict_on_a_gpu_machine_without_nvdec(mixed, monkeypatch, caplog):
    """A machine with a GPU whose NVDEC route does not work (here: CUDA reported available on a machine without
    a driver) decodes every video on the CPU: the loader says so at start-up, and DATA.STRICT makes it an error."""
    root, lst, _, _ = mixed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = small_cfg(root, lst, **{"DATA.DECODE_DEVICE": "auto"})
    loader = build_loader(cfg, "train")
    assert loader.device == "cpu" and loader.route == "mixed"
    assert "10 of 10 videos (100%) will be decoded on the CPU" in caplog.text and "no usable GPU" in caplog.text
    loader.close()
    with pytest.raises(DataError, match="DATA.CPU_ROUTE_MAX_SHARE.*DATA.STRICT is set"):
        build_loader(small_cfg(root, lst, **{"DATA.DECODE_DEVICE": "auto", "DATA.STRICT": True}), "train")
    quiet = build_loader(small_cfg(root, lst, **{"DATA.DECODE_DEVICE": "auto", "DATA.CPU_ROUTE_MAX_SHARE": 1.0,
                                                 "DATA.STRICT": True}), "train")
    quiet.close()


@pytest.mark.gpu
def test_gpu_list_mixing_nvdec_and_cpu_routes_trains_one_epoch(tmp_path):
    """H.264 96x72 clips go to NVDEC, VP9 64x48 clips (below NVDEC's 128x128 VP9 minimum) to DALI's CPU decoder:
    one epoch of training steps on both routes, the counters match the list. The two graphs' parts of a batch whose
    routes interleave are put back in the planned rows: labels and pixels belong to the row beside them."""
    root = str(tmp_path)
    lst, vp9_rows, h264_rows = _mixed_list(root, vp9_size=(64, 48), h264_size=(96, 72))
    cfg = small_cfg(root, lst, **NO_JITTER, **{"DATA.DECODE_DEVICE": "gpu", "TRAIN.BATCH_SIZE": 4,
                                               "DATA.CPU_ROUTE_MAX_SHARE": 0.6})
    loader = build_loader(cfg, "train")
    assert loader.routes_in_use() == ["nvdec", "dali_cpu"]
    assert {r for r, vr in loader.video_routes.items() if vr.route == "nvdec"} == h264_rows
    assert all("below NVDEC's vp9 minimum" in loader.video_routes[r].reason for r in vp9_rows)
    loader.set_epoch(next(e for e in range(20) if _has_interleaved_batch(loader, e, vp9_rows)))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3)).cuda()
    seen = []
    for batch in loader:
        video = batch["video"]
        assert video.is_cuda and video.shape == (4, 4, 3, 32, 32)
        rows = batch["index"].tolist()
        assert rows == loader.schedule.rows(len(seen) // 4)  # the planned order, across the two graphs
        assert batch["label"].tolist() == [loader.index.entries[r].label for r in rows]
        for clip, row in zip(video, rows):
            err = np.abs(denormalize(clip.cpu()) - _train_reference(loader, row)).mean()
            # NVDEC's and DALI's YUV-to-RGB conversions differ from PyAV's (the reference's decoder); the bound is
            # the GPU pipeline tests' for NVDEC; another row's clip differs from this reference by 17 or more.
            assert err < 8.0, (row, err)
        logits = model(video.float())
        loss = torch.nn.functional.cross_entropy(logits, batch["label"].cuda())
        loss.backward()
        assert torch.isfinite(loss)
        seen += batch["index"].tolist()
    stats = loader.stats
    assert (stats["videos_nvdec"], stats["videos_dali_cpu"], stats["videos_pyav"]) == (5, 5, 0)
    assert stats["samples_nvdec"] == len(set(seen) & h264_rows)
    assert stats["samples_dali_cpu"] == len(set(seen) & vp9_rows)
    assert stats["samples_nvdec"] + stats["samples_dali_cpu"] == 8 and stats["route_fallbacks"] == 0
    loader.close()


@pytest.mark.gpu
@pytest.mark.parametrize("routes", [["dali_cpu"], ["dali_cpu", "pyav"]])
def test_gpu_machine_augments_cpu_routed_videos_on_the_gpu_like_the_cpu(tmp_path, routes):
    """On a GPU machine a CPU route's frames are augmented on the GPU (colour program included): the batch comes
    out on the GPU with the same rows as a CPU-only loader's and the same pixels up to resize rounding. With both
    CPU routes in use (H.264 kept off NVDEC by DATA.NVDEC_CODECS), their shared graph moves the merged branches'
    frames to the GPU."""
    root = str(tmp_path)
    if routes == ["dali_cpu"]:
        lst = make_clip_dataset(root, VP9_COUNTS, codec="vp9", size=(64, 48), list_name="vp9.txt")  # < NVDEC's VP9
    else:
        lst, _, _ = _mixed_list(root, vp9_size=(64, 48))
    opts = {"TRAIN.BATCH_SIZE": 4, "DATA.OUTPUT_DTYPE": "float32", "DATA.CPU_ROUTE_MAX_SHARE": 1.0,
            "DATA.NVDEC_CODECS": ["hevc"]}
    gpu = build_loader(small_cfg(root, lst, **opts, **{"DATA.DECODE_DEVICE": "gpu"}), "train")
    cpu = build_loader(small_cfg(root, lst, **opts, **{"DATA.DECODE_DEVICE": "cpu"}), "train")
    assert gpu.routes_in_use() == cpu.routes_in_use() == routes
    for a, b in zip(gpu, cpu):
        assert len(gpu.pipelines) == 1
        assert a["video"].is_cuda and a["index"].tolist() == b["index"].tolist()
        err = np.abs(denormalize(a["video"]) - denormalize(b["video"]))
        assert err.mean() < 0.5 and err.max() < 8, (err.mean(), err.max())
    gpu.close()
    cpu.close()


def test_rotation_metadata_is_not_applied_on_either_cpu_route(tmp_path):
    """A phone video's display matrix (a track marked as shown rotated by 90 degrees) is not applied: VP9 through
    DALI's CPU decoder and H.264 through PyAV give exactly the views of the same files unmarked, in the coded
    orientation, as the index records it."""
    import av

    frames = pattern_frames(24, 96, 64)
    lists = {}
    for marked in (False, True):
        root = tmp_path / ("marked" if marked else "plain")
        (root / "videos").mkdir(parents=True)
        for codec in ("vp9", "h264"):
            path = str(root / "videos" / f"{codec}.mp4")
            write_video(path, frames, codec=codec, gop=8)
            if marked:
                mark_rotated(path)
                with av.open(path) as container:  # FFmpeg reads the mark: the test is not vacuous
                    assert abs(next(container.decode(video=0)).rotation) == 90
        (root / "list.txt").write_text("videos/vp9.mp4 0\nvideos/h264.mp4 1\n")
        lists[marked] = (str(root), str(root / "list.txt"))
    views = {}
    for marked, (root, lst) in lists.items():
        cfg = small_cfg(root, val_list=lst, **{"TEST.BATCH_SIZE": 2, "DATA.INPUT_SIZE": 48})
        loader = build_loader(cfg, "val")
        assert [loader.video_routes[i].route for i in (0, 1)] == ["dali_cpu", "pyav"]
        assert [(loader.index.infos[i].width, loader.index.infos[i].height) for i in (0, 1)] == [(96, 64)] * 2
        (batch,) = list(loader)
        views[marked] = batch["video"].clone()
        loader.close()
    assert torch.equal(views[True], views[False])
