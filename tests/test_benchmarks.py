"""Benchmarks: helper correctness (statistics, process monitoring, GOP work, the CPU reference loader's decode and
transforms) and a smoke run of every benchmark script in its quickest mode, checking that the JSON holds positive,
finite figures for every backend that ran. No timing assertions: speed is what the scripts print."""

from __future__ import annotations

import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from benchmarks import cpu_monitor, hardware, inputs, reporting, stats
from benchmarks.baseline_loaders import (MEAN, STD, OriginalTestTransform, OriginalTrainTransform,
                                         build_baseline_loader, decode_pyav, original_multiview_indices,
                                         original_tsn_indices)
from benchmarks.decode_throughput import gop_work, make_decord, probe

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: a few tiny clips shared by every test of this file
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench_clips")


@pytest.fixture(scope="module")
def vp9_clips(data_dir):
    return inputs.make_synthetic_clips(str(data_dir / "vp9"), 2, codec="vp9", size=(160, 120), num_frames=48, gop=16)


@pytest.fixture(scope="module")
def h264_clip(data_dir):
    return inputs.make_synthetic_clips(str(data_dir / "h264"), 1, codec="h264", size=(96, 64), num_frames=40,
                                       gop=8)[0]


def _all_frames(path: str) -> np.ndarray:
    import av
    with av.open(path) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


# ---------------------------------------------------------------------------------------------------------------
# stats.py and reporting.py
# ---------------------------------------------------------------------------------------------------------------
def test_summarize_median_and_spread():
    s = stats.summarize([3.0, 1.0, 2.0, 10.0])
    assert s.median == 2.5 and s.min == 1.0 and s.max == 10.0 and s.n == 4
    assert (s.q1, s.q3, s.mean) == (1.75, 4.75, 4.0)  # linear interpolation between the sorted values
    with pytest.raises(ValueError, match=r"^summarize\(\) needs at least one value$"):
        stats.summarize([])


def test_paired_ratio_geometric_mean_and_interval():
    # Per-round ratios 2, 2.2, 1.8 (b is 1 every round): geometric mean (2*2.2*1.8)^(1/3).
    r = stats.paired_ratio([2.0, 2.2, 1.8], [1.0, 1.0, 1.0])
    assert r.geomean == pytest.approx((2.0 * 2.2 * 1.8) ** (1 / 3))
    logs = np.log([2.0, 2.2, 1.8])
    half = 4.303 * logs.std(ddof=1) / np.sqrt(3)  # Student's t, 2 degrees of freedom
    assert (r.low, r.high) == pytest.approx((np.exp(logs.mean() - half), np.exp(logs.mean() + half)))
    assert r.n == 3 and r.a_faster == 3 and "1.99x, 95 % CI 1.55-2.56 over 3 paired rounds" in r.describe()
    # Pairing cancels a load both loaders shared: a round twice as slow for both moves nothing.
    even = stats.paired_ratio([1.0, 0.5, 1.0, 0.5], [1.0, 0.5, 1.0, 0.5])
    assert even.geomean == pytest.approx(1.0) and even.low == pytest.approx(1.0) and even.a_faster == 0
    one = stats.paired_ratio([3.0], [2.0])
    assert one.geomean == pytest.approx(1.5) and one.low is None and "CI" not in one.describe()
    with pytest.raises(ValueError, match="equally long"):
        stats.paired_ratio([1.0, 2.0], [1.0])
    # Past the table (df > 30) the quantile comes from an expansion: Student's t tables give these values.
    for df, table in ((40, 2.021), (60, 2.000), (120, 1.980)):
        assert stats._t975(df) == pytest.approx(table, abs=0.001), df


def test_markdown_table_and_json_roundtrip(tmp_path):
    rows = [{"a": "x", "b": 1234.5}, {"a": "y", "b": None}]
    table = reporting.markdown_table(rows, [("a", "A"), ("b", "B")])
    assert table.splitlines()[0] == "| A | B |"
    assert "| x | 1,234 |" in table and "| y | - |" in table
    path = tmp_path / "out" / "r.json"
    reporting.write_json(str(path), {"s": stats.summarize([1.0, 2.0]), "nan": float("nan")})
    data = json.loads(path.read_text())
    assert data["s"]["median"] == 1.5 and data["nan"] is None


def test_check_figures_flags_bad_values():
    good = {"name": "a", "x": stats.summarize([1.0])}
    assert reporting.check_figures([good, {"name": "s", "skipped": "no GPU"}], ["x"]) == []
    bad = reporting.check_figures([{"name": "b", "x": 0.0}, {"name": "c", "x": float("inf")}], ["x"])
    assert len(bad) == 2


def test_synthetic_clips_are_reused_without_computing_them_and_depend_only_on_seed_and_index(tmp_path, monkeypatch):
    """An existing clip's frames are not computed again (about 1 s per 250-frame clip), and leaving them out
    changes no other clip: clip i's frames depend on (seed, i) alone."""
    from benchmarks import inputs

    made = {}

    def encode(path, frames, **kwargs):
        made[os.path.basename(path)] = frames
        Path(path).write_bytes(b"clip")

    monkeypatch.setattr(inputs, "encode_clip", encode)
    settings = dict(codec="h264", size=(24, 16), num_frames=3, gop=4)
    clips = inputs.make_synthetic_clips(str(tmp_path / "a"), 3, **settings)
    every, made = made, {}
    assert len(every) == 3
    names = [os.path.basename(path) for path, _, _ in clips]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / names[1]).write_bytes(b"clip")  # the middle clip exists already
    inputs.make_synthetic_clips(str(tmp_path / "b"), 3, **settings)
    assert list(made) == [names[0], names[2]]
    assert all(np.array_equal(made[n], every[n]) for n in made)
    assert not np.array_equal(every[names[0]], every[names[1]])
    made.clear()
    inputs.make_synthetic_clips(str(tmp_path / "c"), 1, seed=1, **settings)
    assert not np.array_equal(made[names[0]], every[names[0]])

    def compute(*args):
        raise AssertionError("an existing clip's frames were computed")

    monkeypatch.setattr(inputs, "_textured_frames", compute)
    assert inputs.make_synthetic_clips(str(tmp_path / "a"), 3, **settings) == clips


def test_textured_frames_are_the_whole_image_formula():
    """The texture is computed per row and column (separable): the values of the per-pixel formula, to the bit."""
    from benchmarks.inputs import _textured_frames

    frames = _textured_frames(3, 7, 5, np.random.default_rng(4))
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:5, 0:7].astype(np.float32)
    phase, freq = rng.uniform(0, 2 * np.pi, size=3), rng.uniform(0.02, 0.08, size=3)
    for t in range(3):
        img = np.stack([127 + 80 * np.sin(freq[c] * (xx + 3 * t) + phase[c]) * np.cos(freq[c] * 0.7 * (yy - 2 * t))
                        for c in range(3)], -1) + rng.normal(0, 6, size=(5, 7, 3))
        assert np.array_equal(frames[t], np.clip(img, 0, 255).astype(np.uint8))


def test_process_tree_monitor_counts_child_cpu():
    # The child spins until it has used 0.6 s of CPU, however loaded the machine: a fixed amount of work to find.
    code = "import time\nwhile time.process_time() < 0.6: pass"
    with cpu_monitor.ProcessTreeMonitor(interval=0.05) as mon:
        subprocess.run([sys.executable, "-c", code], check=True)
        time.sleep(0.1)
    assert mon.cpu_seconds > 0.5
    assert mon.peak_rss > 10 * 2**20
    by = mon.cpu_seconds_by_kind
    assert by[cpu_monitor.KIND_WORKERS] > 0.5 and by[cpu_monitor.KIND_DALI] == 0.0  # the busy child, and no DALI here
    assert sum(by.values()) == pytest.approx(mon.cpu_seconds, abs=1e-6)


def test_process_tree_monitor_counts_dali_threads_apart():
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(batch_size=8, num_threads=2, device_id=None)
    def noise():
        return fn.random.uniform(range=[0.0, 1.0], shape=[512, 512, 3])

    pipe = noise()
    pipe.build()
    with cpu_monitor.ProcessTreeMonitor(interval=0.05) as mon:
        for _ in range(12):  # a fixed amount of work: about 0.08 CPU-s a batch of 8 x 3 MB of noise
            pipe.run()
    by = mon.cpu_seconds_by_kind
    # DALI's threads generate the noise: about 1 CPU-s (4 batches, about 0.35 s, once measured under 0.2 on a loaded
    # machine). The main process's share is not compared: it holds the monitor's own sampling thread, which a loaded
    # machine made as busy as DALI's.
    assert by[cpu_monitor.KIND_DALI] > 0.4, by
    assert by[cpu_monitor.KIND_WORKERS] == 0.0
    assert sum(by.values()) == pytest.approx(mon.cpu_seconds, abs=1e-6)


def test_bar_plot_writes_png(tmp_path):
    path = tmp_path / "p.png"
    reporting.bar_plot(str(path), ["a", "b"], [1.0, 2.0], "y", "t", errors=[(0.5, 1.5), (2.0, 2.5)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------------------
# GOP work model and the reference loader
# ---------------------------------------------------------------------------------------------------------------
def test_gop_work():
    keys = [0, 16, 32]
    assert gop_work(None, 48, keys) == 48
    assert gop_work(np.array([3]), 48, keys) == 4  # keyframe 0 .. frame 3
    assert gop_work(np.array([3, 20, 17, 20]), 48, keys) == 4 + 5  # GOP 0 up to 3; GOP 1 (16) up to 20
    assert gop_work(np.array([47]), 48, keys) == 16


def test_probe_keyframes(vp9_clips):
    info = probe(vp9_clips[0][0])
    assert info["codec"] == "vp9" and info["num_frames"] == 48
    assert info["keyframes"][0] == 0 and 16 in info["keyframes"]


@pytest.mark.parametrize("which", ["vp9", "h264"])
def test_decode_pyav_matches_full_decode(which, vp9_clips, h264_clip):
    path = vp9_clips[0][0] if which == "vp9" else h264_clip[0]
    ref = _all_frames(path)
    idx = [len(ref) - 1, 0, 5, 17, 17, 30]
    frames, decoded = decode_pyav(path, idx)
    assert frames.shape == (len(idx),) + ref.shape[1:]
    for k, i in enumerate(idx):
        assert np.array_equal(frames[k], ref[i]), f"frame {i}"
    assert len(set(idx)) <= decoded <= len(ref)
    with pytest.raises(ValueError, match="out of range"):
        decode_pyav(path, [len(ref)])


def test_decode_pyav_skips_unneeded_gops(vp9_clips):
    path = vp9_clips[0][0]  # keyframes every 16 frames
    _, decoded = decode_pyav(path, [2, 3])
    assert decoded == 16  # only the first GOP


def test_decord_decoder_decodes_the_requested_frames_in_every_mode(monkeypatch):
    # The baseline once counted the requested frames without decoding them (tsn/multiview looked 11x faster).
    calls = []

    class Reader:
        def __init__(self, path, num_threads):
            self.path = path

        def __len__(self):
            return 10

        def get_batch(self, idx):
            calls.append((self.path, list(idx)))
            return type("Batch", (), {"asnumpy": lambda _: np.zeros((len(idx), 2, 2, 3), np.uint8)})()

    monkeypatch.setitem(sys.modules, "decord", type(sys)("decord"))
    monkeypatch.setattr(sys.modules["decord"], "VideoReader", Reader, raising=False)
    run, _, _ = make_decord(1)
    assert run([{"path": "a", "idx": [7, 2, 2]}, {"path": "b", "idx": None}]) == (2, 13, None)
    assert calls == [("a", [2, 7]), ("b", list(range(10)))]


def test_decord_baseline_reports_no_decoded_frame_count(monkeypatch):
    """decord does not say what it decoded: the loader table showed its requested frames as decoded frames/s,
    beside PyAV's count of every frame decoded."""
    from benchmarks import baseline_loaders as bl
    from benchmarks import loader_throughput as lt

    class Reader:
        def __init__(self, path, num_threads):
            pass

        def get_batch(self, idx):
            return type("Batch", (), {"asnumpy": lambda _: np.zeros((len(idx), 2, 2, 3), np.uint8)})()

    monkeypatch.setitem(sys.modules, "decord", type(sys)("decord"))
    monkeypatch.setattr(sys.modules["decord"], "VideoReader", Reader, raising=False)
    frames, decoded = bl.decode_decord("a", [7, 2, 2])
    assert frames.shape[0] == 3 and decoded == 0

    def batches():
        while True:
            yield {"video": torch.zeros(2, 4, 3, 8, 8), "decoded": torch.tensor([decoded, decoded])}

    run = lt.LoaderRun("decord", batches(), lambda: None, "", "", 0.0)
    monkeypatch.setattr(hardware, "cuda_available", lambda: False)
    run.measure(2, [], nvml=False)
    assert run.result(1, 4)["decoded_frames_per_s"] is None


def test_original_tsn_indices():
    np.random.seed(0)
    idx = original_tsn_indices(300, 16)
    avg = 300 // 16
    assert len(idx) == 16 and all(i * avg <= v < (i + 1) * avg for i, v in enumerate(idx))
    assert list(original_tsn_indices(8, 16)) == list(np.around(np.arange(16) * 0.5).astype(int) % 8)
    u = original_multiview_indices(64, 8, 4, "uniform")
    assert u.shape == (4, 8) and u.min() >= 0 and u.max() < 64
    assert list(u[:, 0]) == [1, 3, 5, 7]  # floor((k + .5) / 4 * 8)


def test_train_transform_shapes_crops_and_normalisation():
    tf = OriginalTrainTransform(224, color_jitter=0.0, gray=0.0)
    # MultiScaleCrop on the 340x256 -> short side 256 frame: the original's candidate sizes and 5 offsets.
    random.seed(0)
    sizes = {256, 224, 192, 168}
    for _ in range(200):
        x0, y0, cw, ch = tf.multiscale_crop(256, 340)
        assert cw in sizes and ch in sizes
        assert abs([256, 224, 192, 168].index(cw) - [256, 224, 192, 168].index(ch)) <= 1
        ws, hs = (340 - cw) // 4, (256 - ch) // 4
        assert (x0, y0) in {(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)}
    frames = np.full((4, 120, 160, 3), 128, np.uint8)
    frames[:, :, :80] = 30  # left half dark
    out = tf(frames)
    assert out.shape == (4, 3, 224, 224) and out.dtype == torch.float32
    # Uniform frames map to (v - mean) / std at every pixel, whatever the crop and flip drawn: one edge column of
    # the half-dark clip could be checked only where the crop happened to reach the grey half.
    for value in (128, 30):
        uniform = tf(np.full((4, 120, 160, 3), value, np.uint8)).numpy()
        expect = ((value - MEAN) / STD).reshape(1, 3, 1, 1)
        assert np.abs(uniform - expect).max() < 1e-4, value


def test_train_transform_flip_and_grayscale():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(2, 64, 96, 3), dtype=np.uint8)

    def run(**kw):
        random.seed(5)
        np.random.seed(5)
        torch.manual_seed(5)
        return OriginalTrainTransform(56, **kw)(frames)

    plain = run(flip=0.0, color_jitter=0.0, gray=0.0)
    flipped = run(flip=1.0, color_jitter=0.0, gray=0.0)
    assert torch.equal(flipped, plain.flip(-1))
    gray = run(flip=0.0, color_jitter=0.0, gray=1.0)
    pix = gray * torch.from_numpy(STD).view(1, 3, 1, 1) + torch.from_numpy(MEAN).view(1, 3, 1, 1)
    assert torch.allclose(pix[:, 0], pix[:, 1], atol=1e-3) and torch.allclose(pix[:, 1], pix[:, 2], atol=1e-3)
    jit = run(flip=0.0, color_jitter=1.0, gray=0.0)
    assert not torch.equal(jit, plain)


def test_test_transform_three_crops():
    t, n = 2, 2
    frames = np.zeros((n * t, 120, 200, 3), np.uint8)
    frames[..., 0] = np.arange(200, dtype=np.uint8)[None, None, :]  # red ramp along the width
    out = OriginalTestTransform(112, num_crop=3)(frames, n)
    assert out.shape == (3 * n, t, 3, 112, 112)
    red = out[:, 0, 0, 56] * STD[0] + MEAN[0]  # (views, width) of the middle row
    left, right, mid = red[0].mean(), red[n].mean(), red[2 * n].mean()
    assert left < mid < right  # [crop] order: left, right, centre


def test_baseline_loader_batches(vp9_clips):
    clips = [(p, lab, n) for p, lab, n in vp9_clips]
    dl = build_baseline_loader(clips, "train", batch_size=2, num_workers=0, num_frames=4, input_size=64)
    b = next(iter(dl))
    assert b["video"].shape == (2, 4, 3, 64, 64) and b["label"].shape == (2,)
    assert (b["decoded"] >= 4).all()
    dl = build_baseline_loader(clips, "test", batch_size=1, num_workers=0, num_frames=4, input_size=64,
                               num_clips=2, test_sampling="uniform")
    b = next(iter(dl))
    assert b["video"].shape == (1, 6, 4, 3, 64, 64)
    assert torch.isfinite(b["video"]).all()


# ---------------------------------------------------------------------------------------------------------------
# Smoke runs of the scripts (CI): positive finite figures for every backend that ran
# ---------------------------------------------------------------------------------------------------------------
# The top-level keys every benchmark's --json has, so that two benchmarks' files read side by side alike: index
# runs had no "settings" (their options were not in the file), augment runs none but "settings" and "results".
COMMON_KEYS = {"benchmark", "machine", "input", "settings", "results", "complete"}


def _run(module: str, args: list[str], tmp_path: Path) -> dict:
    out_json, out_png = tmp_path / f"{module}.json", tmp_path / f"{module}.png"
    env = dict(os.environ, TMPDIR=str(tmp_path))
    cmd = [sys.executable, "-m", f"benchmarks.{module}", "--quick", "--json", str(out_json), "--plot", str(out_png)]
    proc = subprocess.run(cmd + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{module} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "|---|" in proc.stdout  # the markdown table
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    data = json.loads(out_json.read_text())
    assert COMMON_KEYS <= set(data) and data["benchmark"] == module and data["complete"] is True, sorted(data)
    assert data["machine"]["cpu_cores"] > 0 and data["settings"]["quick"] is True
    return data


def _positive(x) -> bool:
    v = x["median"] if isinstance(x, dict) else x
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_smoke_decode_throughput(tmp_path, data_dir):
    data = _run("decode_throughput", ["--data-dir", str(data_dir / "smoke"), "--num-clips", "2", "--frames", "32",
                                      "--repeats", "2", "--min-clips", "4", "--batch", "2"], tmp_path)
    ran = [r for r in data["results"] if not r.get("skipped")]
    assert {r["decoder"] for r in ran} >= {"dali_cpu", "pyav_1t", "pyav_nt", "pyav_np"}
    assert {r["mode"] for r in ran} == {"all", "tsn", "multiview"}
    for r in ran:
        for k in ("clips_per_s", "frames_per_s", "gop_frames_per_s"):
            assert _positive(r[k]), (r["name"], k, r[k])
        # Delivered frames per clip: all frames, 16 sampled, or 4 x 16 = 64 (of 32 frames: the union is whole clip).
        per_clip = r["frames_per_s"]["median"] / r["clips_per_s"]["median"]
        assert per_clip == pytest.approx({"all": 32, "tsn": 16, "multiview": 64}[r["mode"]], rel=1e-6)
    if not torch.cuda.is_available():
        assert any(r.get("skipped") and r["decoder"] == "dali_mixed" for r in data["results"])


def test_decode_throughput_measures_several_thread_counts_in_one_run(tmp_path, data_dir, capsys):
    """--threads 1,2 (the GPU suite's sweep is 4,8,16): a row per count for the decoders it changes, one for those it
    does not, all in one JSON; a bad count is one line, exit 2."""
    data = _run("decode_throughput", ["--data-dir", str(data_dir / "smoke"), "--num-clips", "1", "--frames", "32",
                                      "--repeats", "1", "--min-clips", "1", "--modes", "tsn",
                                      "--decoders", "dali_mixed,pyav_1t,pyav_nt", "--threads", "1,2"], tmp_path)
    rows = {r["name"]: r for r in data["results"]}
    assert list(rows) == ["dali_mixed/tsn/t1", "dali_mixed/tsn/t2", "pyav_1t/tsn", "pyav_nt/tsn/t1", "pyav_nt/tsn/t2"]
    assert [rows[f"pyav_nt/tsn/t{t}"]["threads"] for t in (1, 2)] == [1, 2] and data["settings"]["threads"] == [1, 2]
    if not torch.cuda.is_available():
        assert rows["dali_mixed/tsn/t1"]["skipped"] and rows["dali_mixed/tsn/t2"]["skipped"]
        assert [n for n in data["notes"] if n.startswith("dali_mixed")] == ["dali_mixed: skipped, no CUDA GPU on "
                                                                            "this machine (NVDEC decoder skipped)"]
    from benchmarks import decode_throughput
    for bad in ("0", "4,x", "4,4"):
        with pytest.raises(SystemExit) as e:
            decode_throughput.main(["--threads", bad])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and f"'{bad}'" in err


def test_smoke_loader_throughput(tmp_path, data_dir):
    data = _run("loader_throughput", ["--data-dir", str(data_dir / "smoke"), "--num-clips", "2", "--frames", "32",
                                      "--width", "160", "--height", "120", "--batches", "1", "--repeats", "2",
                                      "--num-frames", "8", "--input-size", "112"], tmp_path)
    ran = [r for r in data["results"] if not r.get("skipped")]
    # decord is the original pipeline's decoder: where it installs (x86_64), it is measured, never skipped.
    expected = {(loader, mode) for loader in ("dali", "pyav") + (("decord",) if platform.machine() == "x86_64" else ())
                for mode in ("train", "test")}
    assert {(r["loader"], r["mode"]) for r in ran} >= expected
    for r in ran:
        for k in ("clips_per_s", "delivered_frames_per_s", "cpu_util", "peak_rss_mib"):
            assert _positive(r[k]), (r["name"], k, r[k])
        assert r["batch_shape"][-3:] == [3, 112, 112]
        by = r["cpu_util_by_kind"]
        assert sum(by.values()) == pytest.approx(r["cpu_util"], rel=1e-6)
        if r["loader"] == "dali":
            assert by["DALI threads"] > 0  # our loader augments in DALI's threads
        else:
            assert by["DALI threads"] == 0 and by["worker processes"] > 0  # DataLoader workers do all the work
    assert set(data["ratios"]) >= {f"dali/{base} {mode}" for base, mode in expected if base != "dali"}
    assert all(_positive(v) for v in data["ratios"].values())


def test_a_baseline_named_but_not_installed_fails_the_benchmark(tmp_path, data_dir, monkeypatch, capsys):
    """Without decord the original pipeline's row is skipped: the run reports the rest, but its exit code says the
    comparison it was asked for is missing (a GPU suite stage passed without its baseline)."""
    from benchmarks import decode_throughput, loader_throughput

    monkeypatch.setattr(loader_throughput, "decord_available", lambda: False)
    monkeypatch.setattr(decode_throughput, "decord_available", lambda: False)
    small = ["--quick", "--data-dir", str(data_dir / "smoke"), "--num-clips", "1", "--frames", "32"]
    assert loader_throughput.main([*small, "--loaders", "decord", "--modes", "train"]) == 1
    err = capsys.readouterr().err
    assert "error: not measured: decord (not installed), which the options name" in err
    assert decode_throughput.main([*small, "--decoders", "decord,pyav_1t", "--modes", "tsn", "--repeats", "1",
                                   "--min-clips", "1"]) == 1
    out, err = capsys.readouterr()
    assert "pyav_1t/tsn" in out and "error: not measured: decord" in err  # the rest was measured and reported


def test_the_default_names_without_decord_say_so_and_how_to_leave_it_out(monkeypatch, capsys):
    """Without decord, the default --loaders / --decoders (which include its baseline) ended with "which the options
    name" when the command named none: now the line says the default includes it and which value leaves it out;
    the exit code stays 1 (a GPU suite stage without its baseline fails)."""
    from benchmarks import decode_throughput, loader_throughput

    ran = {"name": "a", "clips_per_s": 1.0, "frames_per_s": 1.0, "delivered_frames_per_s": 1.0, "cpu_util": 1.0,
           "peak_rss_mib": 1.0}
    payload = {"results": [ran, {"name": "decord", "skipped": "decord is not installed", "missing_package": "decord"}]}
    for module, flag, rest in ((loader_throughput, "--loaders", "dali,pyav"),
                               (decode_throughput, "--decoders", "dali_mixed,dali_cpu,pyav_1t,pyav_nt,pyav_np")):
        monkeypatch.setattr(module, "run_benchmark", lambda args: payload)
        monkeypatch.setattr(module, "report", lambda p: "table")
        assert module.main(["--quick"]) == 1
        err = capsys.readouterr().err
        default = getattr(module, "DEFAULT_LOADERS", None) or ",".join(decode_throughput.ALL_DECODERS)
        assert err == (f"error: not measured: the default {flag} {default} includes the decord baseline, and decord "
                       f"is not installed; install it, or leave it out with {flag} {rest}\n"), err
        assert module.main(["--quick", flag, default]) == 1  # named: the options name it
        assert "decord (not installed), which the options name" in capsys.readouterr().err


def test_a_thread_count_dali_cannot_start_is_refused_before_anything_runs(capsys):
    """--threads 100000 ended the run in DALI's abort ("terminate called", exit status 134): now one line naming
    the flag and value, exit code 2, from each benchmark that gives --threads to DALI."""
    from benchmarks import augment_throughput, cli, decode_throughput, hardware, loader_throughput, train_throughput

    for parse, value in ((loader_throughput.parse_args, "100000"), (augment_throughput.parse_args, "100000"),
                         (decode_throughput.parse_args, "4,100000"), (train_throughput.parse_args, "100000")):
        with pytest.raises(SystemExit) as e:
            parse(["--quick", "--threads", value])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
        assert f"--threads 100000: at most {cli.MAX_THREADS} threads are taken" in err, err
        assert f"give e.g. --threads {hardware.cpu_count()} (see --help)" in err, err
    assert loader_throughput.parse_args(["--quick", "--threads", str(cli.MAX_THREADS)]).threads == cli.MAX_THREADS


def test_a_run_whose_every_row_was_skipped_fails(tmp_path, data_dir, monkeypatch, capsys):
    """--decoders dali_mixed on a machine without a GPU printed a table of skips and exited 0, as a measurement
    (and its --plot was silently not drawn): now its JSON and table still come, with one error line and exit 1."""
    from benchmarks import decode_throughput, hardware

    monkeypatch.setattr(hardware, "cuda_available", lambda: False)
    out = tmp_path / "d.json"
    assert decode_throughput.main(["--quick", "--data-dir", str(data_dir / "smoke"), "--num-clips", "1", "--frames",
                                   "32", "--decoders", "dali_mixed", "--modes", "tsn", "--json", str(out),
                                   "--plot", str(tmp_path / "d.png")]) == 1
    printed, err = capsys.readouterr()
    assert "| dali_mixed/tsn | skipped | no CUDA GPU on this machine" in printed
    assert err.endswith("error: nothing was measured: every row the options name was skipped, for the reason the "
                        f"table gives; --plot {tmp_path / 'd.png'} was not drawn\n")
    assert [r["skipped"] for r in json.loads(out.read_text())["results"]] == [
        "no CUDA GPU on this machine (NVDEC decoder skipped)"]
    assert sorted(os.listdir(tmp_path)) == ["d.json"]


def test_each_loader_row_has_its_own_gpu_memory_peak(monkeypatch):
    """Measured in turns, each loader's torch peak is its own: one reading after all rounds gave the baselines (CPU
    loaders) our loader's GPU peak."""
    from benchmarks import loader_throughput as lt

    allocated = {"now": 0, "peak": 0}  # bytes, as torch's allocator counts them
    monkeypatch.setattr(hardware, "cuda_available", lambda: True)
    monkeypatch.setattr(hardware, "sync_cuda", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats",
                        lambda device=None: allocated.update(peak=allocated["now"]))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: allocated["peak"])

    def batches(mib: int):
        while True:
            allocated["peak"] = max(allocated["peak"], mib << 20)  # what this loader's batch takes on the GPU
            yield {"video": torch.zeros(2, 4, 3, 8, 8)}

    ours, baseline = (lt.LoaderRun(name, batches(mib), lambda: None, "", "", 0.0) for name, mib in
                      (("dali", 512), ("decord", 1)))
    for _ in range(2):  # interleaved rounds, as the benchmark runs them
        for run in (ours, baseline):
            run.measure(1, [], nvml=False)
    assert ours.result(1, 4)["gpu_mem_peak_mib"] == 512 and baseline.result(1, 4)["gpu_mem_peak_mib"] == 1


def test_a_closed_dali_decoder_leaves_the_next_row_no_pool(tmp_path, data_dir, monkeypatch):
    """DALI keeps a closed pipeline's buffers in its pools, and NVML's device-wide "used" (a GPU row's memory) then
    carried them into every later row: the whole-video decode's into the 16-frame rows after it. Each row's
    pipeline hands its pool back when it is closed, before the next row's is built."""
    import nvidia.dali.backend as dali_backend

    from benchmarks import decode_throughput as dt

    events = []
    monkeypatch.setattr(dali_backend, "ReleaseUnusedMemory", lambda: events.append("release"))
    make_dali = dt.make_dali
    monkeypatch.setattr(dt, "make_dali", lambda *a, **k: events.append("build") or make_dali(*a, **k))
    assert dt.main(["--quick", "--data-dir", str(data_dir / "smoke"), "--num-clips", "1", "--frames", "32",
                    "--codec", "vp9", "--decoders", "dali_cpu", "--modes", "all,tsn", "--repeats", "1",
                    "--min-clips", "2", "--batch", "2"]) == 0
    assert events == ["build", "release", "build", "release"]


def test_each_loader_mode_starts_without_the_pools_of_the_last(data_dir, monkeypatch):
    """The train mode's loaders are closed before the test mode's are built; their DALI pools are handed back
    then, or the test rows' NVML memory would include the train rows' buffers."""
    import nvidia.dali.backend as dali_backend

    from benchmarks import loader_throughput as lt

    events = []
    monkeypatch.setattr(dali_backend, "ReleaseUnusedMemory", lambda: events.append("release"))

    class Loader:
        batches_ahead = 0

        def __init__(self, mode):
            self.mode = mode

        def __iter__(self):
            while True:
                yield {"video": torch.zeros(1, 2, 3, 8, 8)}

        def close(self):
            events.append(f"close {self.mode}")

    def build_dali(args, mode, list_path, root, variant):
        events.append(f"build {mode}")
        return Loader(mode), "a loader"

    monkeypatch.setattr(lt, "build_dali", build_dali)
    monkeypatch.setattr(lt, "expected_gop_work", lambda *a, **k: 1.0)
    args = lt.parse_args(["--quick", "--loaders", "dali", "--data-dir", str(data_dir / "smoke"), "--num-clips", "1",
                          "--frames", "32", "--codec", "vp9", "--repeats", "1"])
    lt.run_benchmark(args)
    assert events == ["build train", "close train", "release", "build test", "close test", "release"]


def test_baseline_workers_are_forked_without_a_dali_loader_in_them(tmp_path, data_dir, monkeypatch):
    """The baseline DataLoader's workers are forked: a DALI loader alive then, or left for the collector (its graphs
    sit in reference cycles), was copied into them, where its destructor could run. Each worker writes down which
    of our loaders it holds: none, in either mode (this mode's is built after the baselines' workers start, the
    last mode's is freed before)."""
    import gc
    import weakref

    from benchmarks import baseline_loaders as bl
    from benchmarks import loader_throughput as lt

    ours: list[weakref.ref] = []

    class Loader:  # our loader as the collector sees it: in a cycle, freed only by gc
        batches_ahead = 0

        def __init__(self):
            self.me = self

        def __iter__(self):
            while True:
                yield {"video": torch.zeros(1, 2, 3, 8, 8)}

        def close(self):
            pass

    def build_dali(args, mode, list_path, root, variant):
        loader = Loader()
        ours.append(weakref.ref(loader))
        return loader, "a loader"

    def seed_worker(worker_id):  # in the forked worker
        held = [i for i, ref in enumerate(ours) if ref() is not None]
        (tmp_path / f"worker_{os.getpid()}").write_text(f"{len(ours)} {held}")

    monkeypatch.setattr(lt, "build_dali", build_dali)
    monkeypatch.setattr(lt, "expected_gop_work", lambda *a, **k: 1.0)
    monkeypatch.setattr(bl, "_seed_worker", seed_worker)
    args = lt.parse_args(["--quick", "--loaders", "dali,pyav", "--data-dir", str(data_dir / "smoke"), "--num-clips",
                          "1", "--frames", "32", "--codec", "vp9", "--repeats", "1", "--workers", "1"])
    gc.disable()  # the collector runs only where the benchmark asks for it
    try:
        payload = lt.run_benchmark(args)
    finally:
        gc.enable()
    assert [r["name"] for r in payload["results"]] == ["dali/train", "pyav/train", "dali/test", "pyav/test"]
    seen = sorted(f.read_text() for f in tmp_path.glob("worker_*"))
    assert seen == ["0 []", "1 []"]  # train: before our train loader; test: our train loader freed, test's not built


def test_smoke_eval_throughput(tmp_path, data_dir):
    data = _run("eval_throughput", ["--torch-threads", "1", "--data-dir", str(data_dir / "smoke"), "--num-clips", "2",
                                    "--frames", "32",
                                    "--repeats", "2", "--num-frames", "4", "--input-size", "64",
                                    "--min-videos", "4",
                                    # the loader's dtype on a GPU (float16) under an fp32 model, as --precision fp32
                                    # runs there
                                    "--precision", "fp32", "--opts", "DATA.OUTPUT_DTYPE", "float16"], tmp_path)
    stages = {r["stage"] for r in data["results"]}
    assert stages == {"decode", "model", "end_to_end"}
    for r in data["results"]:
        assert _positive(r["videos_per_s"]), r["name"]
    per_view = next(r for r in data["results"] if r.get("decode_per_view"))
    assert per_view["decodes_per_video"] == 12
    assert _positive(data["ratios"]["decode once / per view"])


def test_smoke_train_throughput(tmp_path, data_dir):
    data = _run("train_throughput", ["--torch-threads", "1", "--attn", "sdpa,math", "--steps", "2", "--repeats", "2",
                                     "--input-size", "32", "--frames", "2"], tmp_path)
    assert [r["attn"] for r in data["results"]] == ["sdpa", "math"]
    for r in data["results"]:
        assert _positive(r["clips_per_s"]) and _positive(r["tflops"]) and r["forward_tflop_per_clip"] > 0
    data = _run("train_throughput", ["--torch-threads", "1", "--no-measure-peak", "--with-loader", "--steps", "2",
                                     "--repeats", "2", "--input-size", "32",
                                     "--frames", "2", "--data-dir", str(data_dir / "smoke"), "--num-clips", "2",
                                     "--clip-frames", "16"], tmp_path)
    (r,) = data["results"]
    assert _positive(r["clips_per_s"]) and 0 <= r["data_wait_pct"] <= 100


def test_train_report_without_a_stated_peak_says_so_with_a_dash():
    """A device with no stated peak (any CPU) printed 'peak: stated None'; the table's cells say '-' for that."""
    from benchmarks import train_throughput

    payload = {"results": [], "machine": {"cpu": "x", "cpu_cores": 2}, "device": "cpu", "input": {"input": "random"},
               "peak_tflops_stated": None, "peak_tflops_measured_matmul": 0.01}
    head = train_throughput.report(payload).splitlines()[1]
    assert head.endswith("peak: stated -, measured matmul 0.010 TFLOP/s."), head
    assert "stated 989.4," in train_throughput.report(dict(payload, peak_tflops_stated=989.4))


def test_train_throughput_prints_no_training_loop_lines(tmp_path):
    """Its measurements run the engine's epoch loop, whose lines said 'epoch 1/1 [3/3] step 10/3' on the console."""
    cmd = [sys.executable, "-m", "benchmarks.train_throughput", "--quick", "--torch-threads", "1", "--no-measure-peak",
           "--steps", "3", "--repeats", "3", "--input-size", "32", "--frames", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, TMPDIR=str(tmp_path)), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "|---|" in proc.stdout
    assert not [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("epoch ")], proc.stdout


def test_train_benchmark_warmup_time_waits_for_the_warmups_queued_device_work(monkeypatch):
    """On a GPU the warm-up's kernels run after run_steps returns: warmup_s was read without waiting for them, so
    it read short. A fake clock that a device synchronisation advances by 100 s stands in for that queued work."""
    import types

    from benchmarks import train_throughput as tt

    waited = [0.0]
    monkeypatch.setattr(tt, "time", types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + waited[0]))
    monkeypatch.setattr(hardware, "sync_cuda", lambda: waited.__setitem__(0, waited[0] + 100.0))
    args = tt.parse_args(["--quick", "--no-measure-peak", "--torch-threads", "1", "--input-size", "32", "--frames",
                          "2", "--warmup", "1", "--steps", "1", "--repeats", "1"])
    r = tt.run_config(args, "sdpa", False, False, torch.device("cpu"))
    # the wait after the warm-up counts, the one before it (the model's set-up) does not
    assert 100.0 <= r["warmup_s"] < 200.0, r["warmup_s"]


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_measured_matmul_peak_runs_in_the_precision_it_is_named_for(monkeypatch, precision, dtype):
    """The MFU against the measured peak compares a step with a matmul in the same precision: on a CPU an fp16 run's
    reference matmul ran in bf16, about 300x faster than a CPU's fp16 matmul."""
    from benchmarks import train_throughput as tt

    made = []
    real_randn = torch.randn

    def randn(*size, **kw):
        made.append(kw.get("dtype"))
        return real_randn(*size, **kw)

    monkeypatch.setattr(torch, "randn", randn)
    assert tt.measured_matmul_peak(torch.device("cpu"), precision, seconds=0.0) > 0
    assert made == [dtype, dtype]


@pytest.mark.parametrize("precision, dtype", [("fp32", "float32"), ("bf16", "float16")])
def test_train_and_eval_benchmarks_give_their_loader_the_precision_they_measure(precision, dtype):
    """An fp32 run's loader hands out float32 clips, a mixed-precision run's float16 on a GPU (clip_dtype). The
    loaders' configs left TRAIN.PRECISION at 'auto', so `--precision fp32 --with-loader` (and eval's loader + model
    row) timed the float16 loader of a bf16 run under an fp32 label."""
    from benchmarks import eval_throughput as et
    from benchmarks import train_throughput as tt
    from dali_pipelines.loader import clip_dtype

    train = tt.make_cfg(tt.parse_args(["--quick", "--precision", precision]), "sdpa", False, "list.txt", "root")
    test = et.eval_cfg(et.parse_args(["--quick", "--precision", precision]), "list.txt", "root")
    for cfg in (train, test):
        assert clip_dtype(cfg.DATA.OUTPUT_DTYPE, "gpu", cfg.TRAIN.PRECISION) == dtype


class _StopAfterModelRow(Exception):
    pass


@pytest.mark.parametrize("cuda, precision, opts, dtype", [
    (True, "bf16", [], torch.float16), (True, "fp16", [], torch.float16), (True, "fp32", [], torch.float32),
    (True, "bf16", ["DATA.OUTPUT_DTYPE", "float32"], torch.float32), (False, "bf16", [], torch.float32)])
def test_eval_benchmark_model_row_gets_the_dtype_the_loader_gives(monkeypatch, cuda, precision, opts, dtype):
    """The model-only row fed the model float32 where the loader hands out float16 clips (a GPU, bf16 or fp16):
    the two rows compared different inputs. A GPU is stood in for by fakes; the model records what it is given."""
    import contextlib

    import dali_pipelines
    import models
    from benchmarks import eval_throughput as et
    from benchmarks import loader_throughput as lt

    seen = []

    class Model:
        def eval(self):
            return self

        def __call__(self, video):
            seen.append(video.dtype)
            return torch.zeros(video.shape[0], 4)

    real_randn = torch.randn
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch, "randn", lambda *shape, device=None, **kw: real_randn(*shape, **kw))  # on the host
    monkeypatch.setattr(torch, "autocast", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(hardware, "sync_cuda", lambda: None)
    monkeypatch.setattr(models, "build_model", lambda cfg, device: Model())
    monkeypatch.setattr(models, "forward_flops", lambda model: 1.0)
    monkeypatch.setattr(lt, "write_repeated_list", lambda clips, rows, out_dir: ("list.txt", "root"))

    def build_loader(cfg, split):
        raise _StopAfterModelRow

    monkeypatch.setattr(dali_pipelines, "build_loader", build_loader)
    args = et.parse_args(["--quick", "--precision", precision, "--num-clip", "1", "--num-crop", "1", "--opts", *opts])
    with pytest.raises(_StopAfterModelRow):
        et.end_to_end(args, [("c.mp4", 0, 32)])
    assert seen and set(seen) == {dtype}, seen


def test_train_benchmark_loader_list_holds_every_configurations_batches(monkeypatch):
    """The configurations share one loader: its list was sized for one of them, so with several an epoch ended
    inside a timed measurement and the graphs' refill counted as data wait."""
    import dali_pipelines
    from benchmarks import loader_throughput as lt
    from benchmarks import train_throughput as tt

    args = tt.parse_args(["--quick", "--no-measure-peak", "--with-loader", "--attn", "sdpa,math", "--checkpoint",
                          "0,1", "--warmup", "1", "--steps", "3", "--repeats", "2", "--batch", "2"])
    listed, drawn = [], []
    monkeypatch.setattr(inputs, "read_list_or_synthetic", lambda a: ([("c.mp4", 0, 32)], {"input": "synthetic"}))
    monkeypatch.setattr(lt, "write_repeated_list", lambda clips, rows, out_dir: listed.append(rows) or ("l", "r"))
    monkeypatch.setattr(tt, "make_cfg", lambda *a, **k: None)
    monkeypatch.setattr(dali_pipelines, "build_loader", lambda cfg, split: type("L", (), {"close": lambda s: None})())

    def run_config(args, attn, ckpt, compile_, device, loader):
        drawn.append(args.warmup + args.steps * args.repeats)  # the batches one configuration takes
        return {"name": attn, "tflops": stats.summarize([1.0]), "clips_per_s": stats.summarize([1.0])}

    monkeypatch.setattr(tt, "run_config", run_config)
    tt.run_benchmark(args)
    assert len(drawn) == 4 and listed[0] >= sum(drawn) * args.batch


def test_decode_throughput_whole_videos_without_dali_warning(tmp_path):
    """Whole-video decoding fed an unused frame-index output, which DALI warned about on every run."""
    cmd = [sys.executable, "-m", "benchmarks.decode_throughput", "--quick", "--decoders", "dali_cpu", "--modes", "all",
           "--repeats", "1", "--num-clips", "2", "--frames", "32", "--min-clips", "2", "--batch", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, TMPDIR=str(tmp_path)), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| dali_cpu/all |" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr


def test_smoke_index_throughput(tmp_path):
    work = tmp_path / "work"
    data = _run("index_throughput", ["--work-dir", str(work)], tmp_path)
    assert data["benchmark"] == "index_throughput" and data["complete"] is True  # as every benchmark's JSON
    builds = [r for r in data["results"] if r["phase"] == "build"]
    loads = [r for r in data["results"] if r["phase"] == "load"]
    assert [r["workers"] for r in builds] == [1, 2]
    for r in builds:  # every linked row probed and found good
        assert (r["good"], r["bad"]) == (400, 0) and _positive(r["seconds"]) and _positive(r["index_mib"])
    assert sorted(r["rank"] for r in loads) == [0, 1]
    for r in loads:  # each rank read the finished index from the cache, probing nothing
        assert (r["rows"], r["probed"]) == (400, 0)
        assert _positive(r["seconds"]) and _positive(r["peak_rss_mib"]) and r["peak_increase_mib"] >= 0
    # --skip-build: the loads again, on the index built above, with no build
    again = _run("index_throughput", ["--work-dir", str(work), "--skip-build"], tmp_path)
    assert {r["phase"] for r in again["results"]} == {"load"} and _positive(again["index_mib"])
    assert [(r["rows"], r["probed"]) for r in again["results"]] == [(400, 0), (400, 0)]


def test_index_links_follow_the_clips_of_this_run_in_a_reused_work_dir(tmp_path):
    """A second run in the same --work-dir with other --clips of the same extension kept the first run's links: its
    rows were probed and loaded from the earlier clips while its report named the new ones."""
    from benchmarks.index_throughput import make_links

    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    for clip in (first, second):
        clip.write_bytes(b"")
    work = tmp_path / "work"
    list_path, root = make_links(str(work), [str(first)], 3)
    names = [line.split()[0] for line in open(list_path).read().splitlines()]
    assert {os.readlink(os.path.join(root, n)) for n in names} == {str(first)}
    mask = os.umask(0o022)
    try:
        list_path, root = make_links(str(work), [str(second), str(first)], 3)
    finally:
        os.umask(mask)
    assert [os.readlink(os.path.join(root, n)) for n in names] == [str(second), str(first), str(second)]
    # made in a folder of its own first, then renamed: readable by the other users of the work dir, as made in place
    assert oct(os.stat(root).st_mode & 0o777) == oct(0o755) and sorted(os.listdir(work)) == ["list.txt", "videos"]


class _HalfWritten:
    """A file whose first ``write`` writes half its data, then stops as a Ctrl-C does."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[:len(data) // 2])
        self._f.flush()
        raise KeyboardInterrupt

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


def _stop_list_writes_midway(monkeypatch, module) -> None:
    """Every file ``module`` writes, by ``open`` or through an atomic write's ``os.fdopen``, stops halfway through
    its first write."""
    import builtins

    real_open, real_fdopen = builtins.open, os.fdopen
    monkeypatch.setattr(module, "open", lambda *a, **k: _HalfWritten(real_open(*a, **k)), raising=False)
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: _HalfWritten(real_fdopen(*a, **k)))


def test_loader_list_stopped_midway_leaves_no_half_list(tmp_path, monkeypatch):
    """The loader benchmark's list was written in place: a Ctrl-C midway left a half list under the name that the
    next run (same clips, same rows) took as whole."""
    from benchmarks import loader_throughput as lt

    clips = [(str(tmp_path / f"clip{i}.mp4"), i, 32) for i in range(3)]
    _stop_list_writes_midway(monkeypatch, lt)
    with pytest.raises(KeyboardInterrupt):
        lt.write_repeated_list(clips, 50, str(tmp_path / "lists"))
    assert os.listdir(tmp_path / "lists") == []  # neither the list nor a temporary file
    monkeypatch.undo()
    path, root = lt.write_repeated_list(clips, 50, str(tmp_path / "lists"))
    assert open(path).read().splitlines()[-2:] == ["clip0.mp4 0", "clip1.mp4 1"] and root == str(tmp_path)


def test_index_links_and_list_stopped_midway_leave_the_earlier_whole_ones(tmp_path, monkeypatch):
    """The index benchmark made its links and wrote its list in place: a Ctrl-C midway left some rows linked to
    the earlier run's clips and some to this run's (or a half list), which the next run took as whole."""
    from benchmarks import index_throughput
    from benchmarks.index_throughput import make_links

    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    for clip in (first, second):
        clip.write_bytes(b"")
    work = tmp_path / "work"
    list_path, root = make_links(str(work), [str(first)], 5)
    listed = open(list_path).read()
    names = [line.split()[0] for line in listed.splitlines()]
    real_symlink, made = os.symlink, []

    def symlink(src, dst):
        if len(made) == 3:
            raise KeyboardInterrupt
        made.append(dst)
        real_symlink(src, dst)

    monkeypatch.setattr(os, "symlink", symlink)
    with pytest.raises(KeyboardInterrupt):
        make_links(str(work), [str(second)], 5)
    monkeypatch.undo()
    assert [os.readlink(os.path.join(root, n)) for n in names] == [str(first)] * 5
    assert sorted(os.listdir(work)) == ["list.txt", "videos"]  # no half-made folder left either
    _stop_list_writes_midway(monkeypatch, index_throughput)
    with pytest.raises(KeyboardInterrupt):
        make_links(str(work), [str(second)], 5)
    monkeypatch.undo()
    assert open(list_path).read() == listed and sorted(os.listdir(work)) == ["list.txt", "videos"]
    # the links themselves were made whole and put in place before the list: they are this run's
    assert [os.readlink(os.path.join(root, n)) for n in names] == [str(second)] * 5


def test_index_throughput_bad_input_is_one_line(tmp_path, capsys):
    from benchmarks import index_throughput

    assert index_throughput.main(["--quick", "--clips", str(tmp_path / "gone.mp4")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --clips: {tmp_path / 'gone.mp4'} does not exist; give video files\n"
    # a folder of clips given for the clips was "no such file"
    assert index_throughput.main(["--quick", "--clips", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: --clips: {tmp_path} is a folder, not a file; give video files\n"
    with pytest.raises(SystemExit) as e:
        index_throughput.main(["--workers", "0"])
    assert e.value.code == 2 and "--workers must name at least one count" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        index_throughput.main(["--skip-build"])
    assert e.value.code == 2 and "--skip-build needs the --work-dir" in capsys.readouterr().err
    # a --work-dir without a build: refused at once; it was filled with links and every row probed first
    for work in (tmp_path / "nothing", tmp_path):
        (tmp_path / "list.txt").write_text("a.mp4 0\n")
        with pytest.raises(SystemExit) as e:
            index_throughput.main(["--skip-build", "--work-dir", str(work), "--rows", "5"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1, err
        assert f"--skip-build: --work-dir {work} holds no built index" in err
    assert sorted(os.listdir(tmp_path)) == ["list.txt"]


def test_index_throughput_refuses_sizes_that_cannot_fit_before_linking_rows(tmp_path, monkeypatch, capsys):
    """--ranks 100000 or --rows 1000000000 started the build or every rank until the memory ran out, and rows too
    many for the disk (or its inodes) were linked until it filled: now one line naming the sizes, what they need
    and what there is, exit code 2, before any row is linked."""
    import types

    import tools.synthetic
    from benchmarks import index_throughput

    monkeypatch.setattr(index_throughput, "make_links", lambda *a: pytest.fail("rows linked"))
    monkeypatch.setattr(tools.synthetic, "available_memory", lambda: 4 << 30)

    def refused(given: list[str]) -> str:
        with pytest.raises(SystemExit) as e:
            index_throughput.main(given)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
        return err

    for given, words in ((["--ranks", "100000"], "--rows 240000 loaded by --ranks 100000 at once need at least "),
                         (["--rows", "1000000000"], "--rows 1000000000 loaded by --ranks 8 at once need at least ")):
        err = refused(given)
        assert words in err and "of memory (each rank holds the whole index), and 4.00 GiB is available; give a " \
                                "smaller --rows or --ranks" in err, err
    monkeypatch.setattr(tools.synthetic, "available_memory", lambda: None)  # unknown: not refused for memory
    fs = types.SimpleNamespace(f_files=1000, f_favail=50, f_bavail=10, f_frsize=4096)
    monkeypatch.setattr(index_throughput.os, "statvfs", lambda path: fs)
    work = tmp_path / "new" / "work"  # not made yet: the disk it will be on
    err = refused(["--quick", "--work-dir", str(work)])
    assert f"--rows 400 needs 402 new files (a link a row) and --work-dir {work} has room for 50; give a smaller " \
           "--rows or a --work-dir on another disk" in err, err
    fs.f_favail = 10**6
    err = refused(["--quick", "--work-dir", str(work)])
    assert f"--rows 400 needs at least 46.88 KiB for its links, list and index, and --work-dir {work} has 40.00 KiB " \
           "free; give a smaller --rows" in err, err
    assert not (tmp_path / "new").exists()
    fs.f_bavail = 10**6
    assert index_throughput.parse_args(["--quick", "--work-dir", str(work)]).rows == 400


def test_index_throughput_refuses_clips_that_are_not_videos_before_linking_rows(tmp_path, monkeypatch, capsys):
    """--clips notes.mp4 (a file, not a video) linked every row to it, probed them all as bad and timed the ranks'
    loads of an index of bad rows, exit code 0: now one line naming the clip and the probe's reason, exit code 2,
    before any row is linked."""
    from benchmarks import index_throughput

    monkeypatch.setattr(index_throughput, "make_links", lambda *a: pytest.fail("rows linked"))
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n")
    work = tmp_path / "work"
    assert index_throughput.main(["--quick", "--work-dir", str(work), "--clips", str(notes)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --clips: {notes} is not a video the index can read ("), err
    assert err.endswith("); give video files\n") and not work.exists(), err


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    """A missing or malformed --list, an unreadable listed video or a bad option value: every benchmark's main()
    prints one 'error: ...' line naming the file / option and returns 2 (no traceback); checked in-process, and once
    as a real command line."""
    from benchmarks import decode_throughput, eval_throughput, loader_throughput, train_throughput

    missing = tmp_path / "missing.txt"
    malformed = tmp_path / "malformed.txt"
    malformed.write_text("a.mp4 0\nb.mp4\n")
    gone = tmp_path / "gone.txt"
    gone.write_text("nothere.mp4 0\n")
    cases = [
        (decode_throughput, ["--list", str(missing)], "missing.txt' does not exist"),
        (loader_throughput, ["--list", str(malformed)], "malformed.txt:2: expected"),
        (eval_throughput, ["--list", str(gone)], "gone.txt:1: cannot read video"),
        (train_throughput, ["--with-loader", "--no-measure-peak", "--list", str(missing)], "does not exist"),
        (decode_throughput, ["--modes", "bogus"], "--modes: unknown mode 'bogus'"),
        (loader_throughput, ["--workers", "0"], "--workers must be at least 1, got 0"),
    ]
    for module, args, words in cases:
        assert module.main(["--quick", *args]) == 2, (module.__name__, args)
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, (module.__name__, args, err)
    with pytest.raises(SystemExit) as e:  # argparse errors: one line as well, same exit code
        loader_throughput.main(["--no-such-flag"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--no-such-flag" in err
    with pytest.raises(SystemExit) as e:  # a clip length below 1 was a traceback from the encoder
        decode_throughput.main(["--quick", "--frames", "-3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.endswith(": argument --frames: must be at least 1, got -3 (see --help)\n")

    proc = subprocess.run([sys.executable, "-m", "benchmarks.loader_throughput", "--list", str(missing)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: video list {str(missing)!r} does not exist"]


def test_bad_counts_and_empty_choices_are_one_line_naming_the_flag_and_value(monkeypatch, capsys):
    """A negative warm-up or torch thread count, --min-videos 0, a negative --peak-tflops (every MFU negative) and
    --checkpoint 2 (timed as 1) ran; --loaders '' (or --modes, --decoders, --attn naming nothing) measured nothing and
    exited 0. Each is now one 'error:' line naming the flag and the value, exit code 2, before anything runs."""
    from benchmarks import decode_throughput, eval_throughput, inputs, loader_throughput, train_throughput

    monkeypatch.setattr(inputs, "make_synthetic_clips", lambda *a, **k: pytest.fail("clips made"))
    parsed = [(loader_throughput, ["--warmup", "-1"], "--warmup must be at least 0, got -1"),
              (decode_throughput, ["--warmup", "-2"], "--warmup must be at least 0, got -2"),
              (eval_throughput, ["--min-videos", "0"], "--min-videos must be at least 1, got 0"),
              (eval_throughput, ["--torch-threads", "-1"], "--torch-threads must be at least 0, got -1"),
              (train_throughput, ["--warmup", "-1"], "--warmup must be at least 0, got -1"),
              (train_throughput, ["--torch-threads", "-3"], "--torch-threads must be at least 0, got -3"),
              (train_throughput, ["--peak-tflops", "-1"], "--peak-tflops must be above 0, got -1.0"),
              (train_throughput, ["--peak-tflops", "inf"], "--peak-tflops must be a finite number, got inf"),
              (train_throughput, ["--checkpoint", "2"], "--checkpoint '2': expected 0, 1 or both"),
              (train_throughput, ["--compile", "0,x"], "--compile '0,x': expected 0, 1 or both"),
              (train_throughput, ["--attn", "flash"], "--attn: unknown attention path 'flash'"),
              (train_throughput, ["--attn", ","], "--attn ',' names no attention path")]
    for module, args, words in parsed:
        with pytest.raises(SystemExit) as e:
            module.main(["--quick", "--no-measure-peak", *args] if module is train_throughput else ["--quick", *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, (args, err)
        assert words in err, (args, err)
    for module, args, words in [(loader_throughput, ["--loaders", ""], "--loaders '' names no loader (choose from"),
                                (loader_throughput, ["--modes", ","], "--modes ',' names no mode"),
                                (decode_throughput, ["--decoders", " "], "--decoders ' ' names no decoder")]:
        assert module.main(["--quick", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, (args, err)


def test_train_benchmark_refuses_a_list_it_would_not_read(tmp_path, monkeypatch, capsys):
    """train_throughput --list L without --with-loader fed the model random tensors and exited 0, L unread (a missing
    L too): now one line naming --list and the flag that reads it, exit code 2, before anything is measured."""
    from benchmarks import train_throughput

    monkeypatch.setattr(train_throughput, "run_benchmark", lambda args: pytest.fail("measured"))
    missing = tmp_path / "missing.txt"
    with pytest.raises(SystemExit) as e:
        train_throughput.main(["--quick", "--no-measure-peak", "--list", str(missing)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert (f".py: --list {missing}: the list is read only with --with-loader (without it the model "
            "is fed random tensors); add --with-loader (see --help)") in err, err
    args = train_throughput.parse_args(["--quick", "--no-measure-peak", "--with-loader", "--list", str(missing)])
    assert args.list == str(missing) and args.with_loader


def test_result_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """--json and --plot were written in place: a run stopped (or failing) while writing them left a truncated
    file in place of the earlier run's. Now the earlier file stays until the new one is complete."""
    import matplotlib.figure

    out = tmp_path / "results.json"
    out.write_text('{"earlier": 1}\n')
    with pytest.raises(TypeError):  # a figure JSON cannot hold, after others were written
        reporting.write_json(str(out), {"a": 1, "b": object()})
    assert out.read_text() == '{"earlier": 1}\n' and os.listdir(tmp_path) == ["results.json"]
    reporting.write_json(str(out), {"a": 1})
    assert json.loads(out.read_text()) == {"a": 1}

    png = tmp_path / "results.png"
    reporting.bar_plot(str(png), ["a"], [1.0], "clips/s", "t")
    earlier = png.read_bytes()

    def cut_short(self, fname, **kwargs):  # savefig stopped after writing the start of the image
        f = open(fname, "wb") if isinstance(fname, (str, os.PathLike)) else fname
        f.write(b"\x89PNG\r\n\x1a\n")
        if f is not fname:
            f.close()
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", cut_short)
    with pytest.raises(KeyboardInterrupt):
        reporting.bar_plot(str(png), ["a", "b"], [1.0, 2.0], "clips/s", "t")
    assert png.read_bytes() == earlier and sorted(os.listdir(tmp_path)) == ["results.json", "results.png"]


def _decode_benchmark_cut(out: Path, cut: str) -> subprocess.CompletedProcess:
    """decode_throughput --quick --json ``out`` run in a process whose benchmark is ``cut``'s ``def cut(args)`` (it
    may use ``cli`` and ``stats``), with Ctrl-C's default action, as a terminal's Ctrl-C finds it."""
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
            "from benchmarks import cli, decode_throughput as d, stats\n" + cut +
            "d.run_benchmark = cut\n"
            f"sys.argv[0] = 'decode_throughput.py'; sys.exit(d.main(['--quick', '--json', {str(out)!r}]))\n")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_ctrl_c_during_a_benchmark_is_one_line_saying_nothing_was_written(tmp_path):
    """A Ctrl-C mid-benchmark printed a traceback of wherever the main thread waited; now one 'interrupted:' line
    says that no result file was written, the earlier --json is left as it was, and the process ends by SIGINT."""
    out = tmp_path / "results.json"
    out.write_text('{"earlier": 1}\n')
    done = _decode_benchmark_cut(out, "def cut(args): raise KeyboardInterrupt\n")
    assert done.returncode == -2, done.stderr[-2000:]
    assert done.stderr.splitlines() == ["interrupted: decode_throughput.py: nothing measured was written (--json and "
                                        "--plot are written whole, once the run ends)"], done.stderr[-2000:]
    assert out.read_text() == '{"earlier": 1}\n'


def test_a_ctrl_c_or_stop_keeps_the_rows_measured_so_far_in_the_json_marked_incomplete(tmp_path, monkeypatch,
                                                                                          capsys):
    """A Ctrl-C or SIGTERM after some rows were measured (a loader mode, a decoder, a configuration of a run of
    hours) left no result file: every finished row was lost. Now --json holds them, marked "complete": false, and
    the one line says so; a run that ends writes "complete": true."""
    from benchmarks import decode_throughput
    from evautil.interrupt import Stopped

    out = tmp_path / "results.json"
    out.write_text('{"earlier": 1}\n')
    done = _decode_benchmark_cut(out, "def cut(args):\n"
                                      "    row = {'name': 'pyav_1t/all', 'clips_per_s': stats.summarize([2.0, 3.0])}\n"
                                      "    cli.measured(row)\n"
                                      "    raise KeyboardInterrupt\n")
    assert done.returncode == -2, done.stderr[-2000:]
    assert done.stderr.splitlines() == [f"interrupted: decode_throughput.py: --json {out} holds the 1 row(s) measured "
                                        "before it, marked \"complete\": false (the rest were not measured)"], \
        done.stderr
    saved = json.loads(out.read_text())
    assert saved["complete"] is False and saved["benchmark"] == "decode_throughput" and saved["settings"]["quick"]
    # the keys of a finished run's file that a stop knows: a stopped run's named its options "options", no machine
    assert {"benchmark", "machine", "settings", "results"} <= set(saved) and "options" not in saved, sorted(saved)
    assert saved["machine"]["cpu_cores"] > 0
    assert [r["name"] for r in saved["results"]] == ["pyav_1t/all"]
    assert saved["results"][0]["clips_per_s"]["values"] == [2.0, 3.0]

    def stop(args):  # a scheduler's SIGTERM, as until_stopped raises it
        decode_throughput.cli.measured({"name": "dali_cpu/all", "clips_per_s": stats.summarize([1.0])})
        raise Stopped("SIGTERM")

    monkeypatch.setattr(decode_throughput, "run_benchmark", stop)
    monkeypatch.setattr(sys, "argv", ["decode_throughput.py"])
    plot = tmp_path / "plot.png"
    assert decode_throughput.main(["--quick", "--json", str(out), "--plot", str(plot)]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--json {out} holds the 1 row(s) measured before it" in err, err
    assert "--plot was not drawn); run the same command again" in err and not plot.exists(), err
    assert [r["name"] for r in json.loads(out.read_text())["results"]] == ["dali_cpu/all"]

    def disk_full(path, payload):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(decode_throughput.cli, "write_json", disk_full)  # the stop's line, not a traceback
    assert decode_throughput.main(["--quick", "--json", str(out)]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (f"the 1 row(s) measured before it could not be written to --json {out} "
                                     "([Errno 28] No space left on device); run the same command again") in err, err
    monkeypatch.undo()
    monkeypatch.setattr(sys, "argv", ["decode_throughput.py"])

    def whole(args):
        return {"results": [decode_throughput.cli.measured({"name": "x", "frames_per_s": stats.summarize([1.0])})]}

    monkeypatch.setattr(decode_throughput, "run_benchmark", whole)
    monkeypatch.setattr(decode_throughput, "report", lambda payload: "table")
    assert decode_throughput.main(["--quick", "--json", str(out)]) in (0, 1)
    assert json.loads(out.read_text())["complete"] is True
    assert decode_throughput.cli._rows_measured is None  # kept only while a run_main() runs


def test_a_full_disk_when_the_results_are_written_is_one_line_under_the_table(tmp_path, monkeypatch, capsys):
    """A disk that filled during a run ended it, once the table was printed, in a traceback from writing --json:
    now one 'error:' line naming the file and the fix, exit code 1."""
    from benchmarks import decode_throughput

    def disk_full(path, payload):
        raise OSError(28, "No space left on device")

    out = tmp_path / "results.json"
    monkeypatch.setattr(decode_throughput, "run_benchmark", lambda args: {"results": [{"name": "x"}]})
    monkeypatch.setattr(decode_throughput, "report", lambda payload: "table")
    monkeypatch.setattr(decode_throughput.cli, "write_json", disk_full)
    assert decode_throughput.main(["--quick", "--json", str(out)]) == 1
    printed, err = capsys.readouterr()
    assert printed == "table\n" and err == (f"error: --json {out}: cannot write: No space left on device; free space "
                                             "and run the same command again (the table above holds the figures "
                                             "measured)\n")
    from benchmarks import augment_throughput

    monkeypatch.setattr(augment_throughput, "run_benchmark", lambda args: {"results": []})
    monkeypatch.setattr(augment_throughput, "report", lambda payload: "table")
    monkeypatch.setattr(augment_throughput.cli, "write_json", disk_full)
    assert augment_throughput.main(["--quick", "--json", str(out)]) == 1
    printed, err = capsys.readouterr()
    assert printed == "table\n" and err.startswith(f"error: --json {out}: cannot write: No space left") and \
        err.count("\n") == 1, err


def _signal_the_group_once(args: list[str], tmp: Path, ready, sig: int, timeout: float = 180):
    """Run ``python -m benchmarks.<args>`` in a process group of its own (TMPDIR: ``tmp``), send ``sig`` to the whole
    group, as a terminal's Ctrl-C or a scheduler does, once ``ready(process)`` holds; returns (status, stdout,
    stderr)."""
    import psutil

    tmp.mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=dict(os.environ, TMPDIR=str(tmp)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready(psutil.Process(proc.pid)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.communicate()
    return proc.returncode, out, err


def test_a_ctrl_c_to_the_process_group_prints_no_worker_tracebacks(tmp_path):
    """A terminal sends Ctrl-C to every process of the group: the PyAV decode processes of pyav_np (a spawned
    multiprocessing pool) each printed their own KeyboardInterrupt traceback under the main process's one line."""
    import psutil

    def workers_running(main) -> bool:
        """Both pool workers (the fork server's children) have run their set-up, which starts a thread: this test
        is about set-up workers (tests/test_interrupt_startup.py signals a pool while it starts one)."""
        try:
            workers = [p for p in main.children(recursive=True) if p.ppid() != main.pid]
            return len(workers) >= 2 and all(p.num_threads() >= 2 for p in workers)
        except psutil.Error:  # a process ended between the listing and the question
            return False

    status, _, err = _signal_the_group_once(
        ["benchmarks.decode_throughput", "--quick", "--decoders", "pyav_np", "--threads", "2", "--modes", "all",
         "--num-clips", "2"], tmp_path / "tmp", workers_running, signal.SIGINT)
    assert status == -signal.SIGINT and "Traceback" not in err, err[-3000:]
    assert err.splitlines()[-1].startswith("interrupted: decode_throughput.py: nothing measured was written"), err


def test_a_sigterm_leaves_no_temporary_folder_and_ends_with_exit_code_4(tmp_path):
    """A scheduler's SIGTERM killed the benchmark where it was: index_throughput's index_bench_* folder (links, list,
    index) stayed in TMPDIR. Now it is removed as on a Ctrl-C, and one 'stopped:' line says so, exit code 4."""
    tmp = tmp_path / "tmp"

    def building(_) -> bool:  # the rows are linked and the index build has begun
        return any(tmp.glob("index_bench_*/list.txt"))

    status, _, err = _signal_the_group_once(["benchmarks.index_throughput", "--rows", "3000", "--workers", "1",
                                             "--ranks", "1"], tmp, building, signal.SIGTERM)
    assert status == 4 and "Traceback" not in err, err[-3000:]
    assert err.splitlines()[-1] == ("stopped: SIGTERM received: index_throughput.py: nothing measured was written "
                                    "(--json and --plot are written whole, once the run ends); run the same command "
                                    "again (exit code 4)"), err
    assert os.listdir(tmp) == []


@pytest.mark.parametrize("own_dir", [True, False])
def test_a_stopped_build_says_its_videos_are_saved_only_where_they_stay(tmp_path, monkeypatch, caplog, own_dir):
    """Stopped while building in its own temporary folder, the benchmark showed the index code's warning that the
    videos probed so far were saved there for the next build, and then removed that folder. In a --work-dir,
    which stays, they are still saved and the warning said."""
    import logging

    from benchmarks import index_throughput
    from dali_pipelines import index as index_mod

    monkeypatch.setattr(index_throughput.tempfile, "tempdir", str(tmp_path))
    work = tmp_path / "work"
    real_job, probed = index_mod._probe_job, []

    def stopped_after_3(job):
        if len(probed) == 3:
            raise KeyboardInterrupt
        probed.append(job[1])
        return real_job(job)

    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", 0)  # one worker probes in this process, patched
    monkeypatch.setattr(index_mod, "_probe_job", stopped_after_3)
    args = index_throughput.parse_args(["--rows", "8", "--workers", "1", "--ranks", "1",
                                        *([] if own_dir else ["--work-dir", str(work)])])
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.index"), pytest.raises(KeyboardInterrupt):
        index_throughput.run_benchmark(args)
    assert len(probed) == 3
    if own_dir:  # nothing said of a folder removed at once
        assert "stopped after" not in caplog.text and os.listdir(tmp_path) == []
    else:
        assert f"stopped after 3 of 8 videos; they are saved in {work / 'list.txt'}.index.npz, the next build " \
               "probes the other 5" in caplog.text
        assert (work / "list.txt.index.npz").is_file()


def test_a_sigterm_while_a_synthetic_clip_is_encoded_leaves_no_part_file(tmp_path):
    """A SIGTERM while a synthetic clip was being encoded left its '.part' file (the clip under its temporary
    name) in --data-dir: the clean-up that a Ctrl-C runs did not run."""
    clips = tmp_path / "clips"

    def encoding(_) -> bool:
        return any(clips.glob("h264/*.part.*"))

    status, _, err = _signal_the_group_once(
        ["benchmarks.decode_throughput", "--codec", "h264", "--frames", "3000", "--width", "160", "--height", "120",
         "--num-clips", "1", "--decoders", "pyav_1t", "--data-dir", str(clips)], tmp_path / "tmp", encoding,
        signal.SIGTERM)
    assert status == 4 and "Traceback" not in err, err[-3000:]
    assert err.splitlines()[-1].startswith("stopped: SIGTERM received: decode_throughput.py: nothing measured"), err
    assert os.listdir(clips / "h264") == []


def test_a_synthetic_clip_cut_short_is_made_again_not_reused(tmp_path, monkeypatch):
    """A run stopped while it encoded a clip left a shorter clip under the final name, which the next run reused
    as a complete one (--data-dir: reused when present): 40 frames measured as 48."""
    import av

    from benchmarks import inputs
    from dali_pipelines.pyav_probe import count_packets

    original, made = av.VideoFrame.from_ndarray, [0]

    def stop_at_frame_40(*args, **kwargs):
        made[0] += 1
        if made[0] > 40:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    settings = dict(codec="vp9", size=(64, 48), num_frames=48, gop=8)
    monkeypatch.setattr(av.VideoFrame, "from_ndarray", stop_at_frame_40)
    with pytest.raises(KeyboardInterrupt):
        inputs.make_synthetic_clips(str(tmp_path), 1, **settings)
    assert os.listdir(tmp_path) == []  # no clip, and no temporary file left
    monkeypatch.undo()
    [(path, _, frames)] = inputs.make_synthetic_clips(str(tmp_path), 1, **settings)
    assert frames == 48 and count_packets(path) == 48


def test_two_runs_making_the_same_synthetic_clips_at_once_both_finish(tmp_path, monkeypatch):
    """Two benchmarks given one --data-dir encoded a missing clip into one shared temporary name: the first rename
    took the other run's file, whose own rename then failed (FileNotFoundError traceback), and list.txt was
    rewritten in place under the other run's reader. Here a second run makes the same clips while the first
    encodes its clip: both finish, with the whole clip, the list, and nothing else in the folder."""
    import stat

    from benchmarks import inputs
    from dali_pipelines import pyav_encode
    from dali_pipelines.pyav_probe import count_packets

    real_write, real_atomic = pyav_encode.write_video, inputs.atomic_write_text
    encoded, listed = [], []

    def write_video(path, *args, **kwargs):
        encoded.append(os.path.basename(path))
        real_write(path, *args, **kwargs)
        if len(encoded) == 1:  # the other run, from start to end, before this one renames its clip
            assert [frames for _, _, frames in inputs.make_synthetic_clips(str(tmp_path), 1, **settings)] == [24]

    def atomic_write_text(path, text, fsync=True):
        listed.append(os.path.basename(path))
        real_atomic(path, text, fsync=fsync)

    settings = dict(codec="vp9", size=(64, 48), num_frames=24, gop=8)
    monkeypatch.setattr(pyav_encode, "write_video", write_video)
    monkeypatch.setattr(inputs, "atomic_write_text", atomic_write_text)
    [(path, label, frames)] = inputs.make_synthetic_clips(str(tmp_path), 1, **settings)
    assert len(encoded) == 2 and encoded[0] != encoded[1] and all(".part." in name for name in encoded), encoded
    assert count_packets(path) == frames == 24 and listed == ["list.txt", "list.txt"]
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(path), "list.txt"])
    assert (tmp_path / "list.txt").read_text() == f"{os.path.basename(path)} {label}\n"
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o044 == 0o644 & ~_umask() & 0o044  # not a private file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_train_benchmark_refuses_opts_that_its_flags_set(capsys):
    """--opts MODEL.ATTN_IMPL math was timed under the row label "attn=sdpa", and TRAIN.PRECISION / TRAIN.COMPILE
    through --opts were ignored: each key names the flag to use instead, before anything is measured."""
    from benchmarks import train_throughput

    with pytest.raises(SystemExit) as e:
        train_throughput.main(["--quick", "--no-measure-peak", "--opts", "MODEL.ATTN_IMPL", "math",
                               "TRAIN.PRECISION", "bf16", "MODEL.DROP_PATH_RATE", "0.0", "TRAIN.COMPILE", "True"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "MODEL.ATTN_IMPL (use --attn)" in err and "TRAIN.PRECISION (use --precision)" in err
    assert "TRAIN.COMPILE (use --compile)" in err and "DROP_PATH_RATE" not in err

    # the evaluation and loader benchmarks label their rows with their flags too
    from benchmarks import eval_throughput, loader_throughput

    for module, opts, named in ((eval_throughput, ["TEST.NUM_CLIP", "2", "MODEL.ATTN_IMPL", "math"],
                                 ("TEST.NUM_CLIP (use --num-clip)", "MODEL.ATTN_IMPL (use --attn)")),
                                (loader_throughput, ["DATA.NUM_THREADS", "1", "DATA.OUTPUT_DTYPE", "float16"],
                                 ("DATA.NUM_THREADS (use --threads)",))):
        with pytest.raises(SystemExit) as e:
            module.main(["--quick", "--opts", *opts])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and all(n in err for n in named), err
        assert "OUTPUT_DTYPE" not in err


def test_bad_opts_arch_and_output_files_are_one_line_before_anything_is_measured(tmp_path, monkeypatch, capsys):
    """An --opts key the config refuses, an --arch that is no preset, an --input-size its patch does not divide,
    and a --json or --plot that cannot be written were tracebacks: the first three when the model was built (after
    the decode stages had run), the last after the measurement, whose figures were then lost."""
    from benchmarks import (augment_throughput, decode_throughput, eval_throughput, index_throughput, inputs,
                            loader_throughput, nvdec_parity, train_throughput)

    a_file = tmp_path / "a file"
    a_file.write_text("x")
    parsed = [(eval_throughput, ["--opts", "NO.SUCH_KEY", "1"], "--opts: unknown config key NO"),
              (train_throughput, ["--opts", "TRAIN.LR", "fast"], "key TRAIN.LR expects a value of type float"),
              (loader_throughput, ["--opts", "NO.SUCH_KEY", "1"], "--opts: unknown config key NO"),
              (eval_throughput, ["--arch", "eva-huge/14"],
               "--arch eva-huge/14, --input-size 112: MODEL.ARCH 'eva-huge/14' is not a known preset; choose one of "),
              (train_throughput, ["--input-size", "50", "--arch", "eva-tiny/8", "--no-measure-peak"],
               "--input-size 50: DATA.INPUT_SIZE 50 is not divisible by the patch size 8 of MODEL.ARCH 'eva-tiny/8'"),
              (augment_throughput, ["--json", str(a_file / "a.json")], f"{a_file} is a file, so no folder"),
              (nvdec_parity, ["--decoder", "cpu", "--json", str(tmp_path)], f"--json {tmp_path} is a folder")]
    for module, args, words in parsed:
        if module is augment_throughput:
            monkeypatch.setattr(module, "run", lambda *a: pytest.fail("measured"))
            assert module.main(["--quick", *args]) == 2
        else:
            with pytest.raises(SystemExit) as e:
                module.main(["--quick", *args])
            assert e.value.code == 2, (module.__name__, args)
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, (module.__name__, args, err)
    monkeypatch.setattr(inputs, "read_list_or_synthetic", lambda *a: pytest.fail("measured"))
    for module, args, words in ((decode_throughput, ["--plot", str(tmp_path)], f"--plot {tmp_path} is a folder"),
                                (index_throughput, ["--json", str(a_file / "i.json")], f"{a_file} is a file")):
        assert module.main(["--quick", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, (module.__name__, args, err)


def test_a_json_or_plot_ending_with_a_slash_is_refused_before_anything_is_measured(tmp_path, monkeypatch, capsys):
    """"--json results/" (a folder not made yet) was measured, then written as a file named "results"."""
    from benchmarks import augment_throughput, decode_throughput, inputs, nvdec_parity

    monkeypatch.setattr(inputs, "read_list_or_synthetic", lambda *a: pytest.fail("measured"))
    monkeypatch.setattr(augment_throughput, "run", lambda *a: pytest.fail("measured"))
    new = str(tmp_path / "results") + "/"
    for module, flag in ((decode_throughput, "--plot"), (augment_throughput, "--json"), (decode_throughput, "--json")):
        assert module.main(["--quick", flag, new]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag} {new} names a folder (it ends with /); give a file name, e.g. ") \
            and err.count("\n") == 1, (module.__name__, err)
    with pytest.raises(SystemExit) as e:
        nvdec_parity.main(["--quick", "--decoder", "cpu", "--json", new])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"--json {new} names a folder (it ends with /)" in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == []


def test_a_work_folder_naming_a_file_is_refused_before_anything_is_measured(tmp_path, monkeypatch, capsys):
    """--data-dir, --work-dir or --tmp naming a file (or a path below one) ended the run in os.makedirs' traceback,
    after its option checks; now one line naming the flag, exit code 2, nothing made or measured."""
    from benchmarks import decode_throughput, index_throughput, loader_throughput, nvdec_parity

    monkeypatch.setattr(inputs, "make_synthetic_clips", lambda *a, **k: pytest.fail("clips made"))
    monkeypatch.setattr(inputs, "read_list_or_synthetic", lambda *a: pytest.fail("measured"))
    taken = tmp_path / "taken"
    taken.write_text("a file\n")
    cases = [(decode_throughput, ["--quick", "--data-dir", str(taken)], "--data-dir", str(taken)),
             (loader_throughput, ["--quick", "--data_dir", f"{taken}/clips"], "--data_dir", f"{taken}/clips"),
             (index_throughput, ["--rows", "10", "--work-dir", str(taken)], "--work-dir", str(taken))]
    for module, argv, flag, path in cases:
        assert module.main(argv) == 2, module.__name__
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag} {path}") and err.count("\n") == 1, (module.__name__, err)
        assert ("exists and is not a folder" if path == str(taken) else f"{taken} is a file") in err
    with pytest.raises(SystemExit) as e:
        nvdec_parity.main(["--quick", "--decoder", "cpu", "--tmp", str(taken)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"--tmp {taken} exists and is not a folder" in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == ["taken"] and taken.read_text() == "a file\n"


@pytest.mark.parametrize("module, args, expected", [
    ("decode_throughput", ["--quick", "--json=~/r/d.json", "--plot=~/r/d.png", "--list=~/v/list.txt", "--root=~/v",
                           "--data-dir=~/clips"],
     {"json": "r/d.json", "plot": "r/d.png", "list": "v/list.txt", "root": "v", "data_dir": "clips"}),
    ("loader_throughput", ["--quick", "--json=~/l.json", "--plot=~/l.png"], {"json": "l.json", "plot": "l.png"}),
    ("eval_throughput", ["--quick", "--json=~/e.json", "--plot=~/e.png"], {"json": "e.json", "plot": "e.png"}),
    ("train_throughput", ["--quick", "--json=~/t.json", "--plot=~/t.png"], {"json": "t.json", "plot": "t.png"}),
    ("augment_throughput", ["--quick", "--json=~/a.json"], {"json": "a.json"}),
    ("index_throughput", ["--work-dir=~/w", "--json=~/i.json", "--plot=~/i.png"],
     {"work_dir": "w", "json": "i.json", "plot": "i.png"}),
])
def test_a_leading_tilde_in_a_benchmarks_path_flag_is_the_home_folder(module, args, expected, monkeypatch):
    """The shell expands no ~ after '=' (--json=~/r.json) or in quotes: the benchmarks wrote their results into a
    folder named ~ in the working folder (and looked for a --list there), where the project's tools read the home
    folder."""
    import importlib

    monkeypatch.setenv("HOME", "/home/someone")
    parsed = importlib.import_module(f"benchmarks.{module}").parse_args(args)
    assert {k: getattr(parsed, k) for k in expected} == {k: f"/home/someone/{v}" for k, v in expected.items()}


def test_a_leading_tilde_in_the_clip_flags_is_the_home_folder(monkeypatch, tmp_path):
    """--clips of index_throughput and nvdec_parity, and nvdec_parity's --real-dir, --tmp and --json."""
    from benchmarks import index_throughput, nvdec_parity

    monkeypatch.setenv("HOME", str(tmp_path))
    assert index_throughput.parse_args(["--clips", "~/a.mp4", "~/b.mp4"]).clips == [f"{tmp_path}/a.mp4",
                                                                                   f"{tmp_path}/b.mp4"]
    seen = {}
    (tmp_path / "c.mp4").write_bytes(b"")  # a --clips file that is not there is refused before compare()
    monkeypatch.setattr(nvdec_parity, "compare", lambda args, tmp: seen.update(vars(args), given_tmp=tmp) or 0)
    assert nvdec_parity.main(["--decoder", "cpu", "--clips", "~/c.mp4", "--real-dir=~/real", "--tmp=~/t",
                              "--json=~/p.json"]) == 0
    assert (seen["clips"], seen["real_dir"], seen["given_tmp"], seen["json"]) == (
        [f"{tmp_path}/c.mp4"], f"{tmp_path}/real", f"{tmp_path}/t", f"{tmp_path}/p.json")


def test_an_eval_decoder_that_cannot_decode_here_is_one_line_before_anything_is_measured(h264_clip, monkeypatch,
                                                                                           capsys):
    """eval_throughput --decoder dali_mixed without a GPU made its clips, then ended in DALI's CUDA assertion; and
    --decoder dali_cpu on H.264 clips in DALI's "Failed to create video decoder" traceback. Now each is one line
    naming the flag, exit code 2: the first before any clip is made, the second once the clips' codecs are known."""
    from benchmarks import decode_throughput, eval_throughput, hardware

    monkeypatch.setattr(hardware, "cuda_available", lambda: False)
    monkeypatch.setattr(inputs, "make_synthetic_clips", lambda *a, **k: pytest.fail("clips made"))
    with pytest.raises(SystemExit) as e:
        eval_throughput.main(["--quick", "--skip-model", "--decoder", "dali_mixed"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert ".py: --decoder dali_mixed decodes with NVDEC and needs a CUDA GPU, and none is usable here" in err
    listed = Path(h264_clip[0]).parent / "list.txt"
    monkeypatch.setattr(decode_throughput, "measure", lambda *a, **k: pytest.fail("measured"))
    assert eval_throughput.main(["--quick", "--skip-model", "--decoder", "dali_cpu", "--list", str(listed)]) == 2
    assert capsys.readouterr().err == ("error: --decoder dali_cpu: DALI's CPU decoder takes only vp8/vp9/mjpeg and "
                                       "the clips are h264; give --decoder pyav_np (or auto)\n")


def test_loader_decode_device_gpu_without_one_is_one_line_naming_the_flag(monkeypatch, capsys):
    """loader_throughput --decode-device gpu on a machine without CUDA made its clips, then stopped on
    "DATA.DECODE_DEVICE is 'gpu' but CUDA is not available", a key the command line never named; the baselines alone
    do not use it."""
    from benchmarks import hardware, loader_throughput

    monkeypatch.setattr(hardware, "cuda_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        loader_throughput.parse_args(["--quick", "--decode-device", "gpu", "--loaders", "pyav,dali-pyav"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert ".py: --decode-device gpu decodes with NVDEC and needs a CUDA GPU, and none is usable here; give " \
           "--decode-device auto or cpu (see --help)" in err
    assert loader_throughput.parse_args(["--quick", "--decode-device", "gpu", "--loaders", "pyav"]).loaders == "pyav"


def test_labels_beyond_num_classes_are_one_line_naming_the_list_and_the_flag(vp9_clips, tmp_path, monkeypatch,
                                                                             capsys):
    """A Kinetics-700 list with the default --num-classes 400 made our loader stop on "<the benchmark's own
    repeated list>:1: label 650 is outside [0, 400) as DATA.NUM_CLASSES is 400", naming neither the --list typed nor
    the flag (and eval_throughput said so only after its decode comparison): now one line naming both, exit code 2,
    before any loader is built or anything measured."""
    from benchmarks import eval_throughput, loader_throughput, train_throughput

    listed = tmp_path / "k700.txt"
    listed.write_text("".join(f"{os.path.basename(path)} {650 + i}\n" for i, (path, _, _) in enumerate(vp9_clips)))
    root = os.path.dirname(vp9_clips[0][0])
    monkeypatch.setattr(loader_throughput, "build_dali", lambda *a, **k: pytest.fail("loader built"))
    monkeypatch.setattr(eval_throughput, "decode_comparison", lambda *a, **k: pytest.fail("measured"))
    monkeypatch.setattr(train_throughput, "run_config", lambda *a, **k: pytest.fail("measured"))
    line = (f"error: --list {listed}: video {vp9_clips[1][0]!r} has label 651, outside [0, 400) of --num-classes 400; "
            "give --num-classes 652 or more\n")
    for module, extra in ((loader_throughput, ["--loaders", "pyav,dali"]), (eval_throughput, []),
                          (train_throughput, ["--with-loader", "--no-measure-peak"])):
        assert module.main(["--quick", "--list", str(listed), "--root", root, *extra]) == 2, module.__name__
        assert capsys.readouterr().err == line, module.__name__
    monkeypatch.setattr(inputs, "read_list_or_synthetic", lambda *a: ([("clip.webm", 3, 64)], {"input": "synthetic"}))
    assert eval_throughput.main(["--quick", "--num-classes", "2"]) == 2
    assert capsys.readouterr().err == ("error: the synthetic clips are labelled 0 to 3, outside [0, 2) of "
                                       "--num-classes 2; give --num-classes 4 or more\n")


def test_a_tmpdir_naming_a_file_is_one_line_before_anything_is_measured(tmp_path, monkeypatch, capsys):
    """With TMPDIR naming a file (and no --data-dir), the run ended in a NotADirectoryError traceback when it made
    its folder of synthetic clips: now one line naming TMPDIR and the fix, exit code 2, before anything runs."""
    from benchmarks import cli, decode_throughput, loader_throughput, train_throughput

    not_a_folder = tmp_path / "tmpdir"
    not_a_folder.write_text("")
    monkeypatch.setenv("TMPDIR", str(not_a_folder))
    monkeypatch.setattr(inputs, "make_synthetic_clips", lambda *a, **k: pytest.fail("clips made"))
    folder = not_a_folder / f"eva_bench_clips-{os.getuid()}"
    for module in (decode_throughput, loader_throughput):
        assert module.main(["--quick"]) == 2
        assert capsys.readouterr().err == (f"error: TMPDIR {folder}: {not_a_folder} is a file, so no folder can be "
                                           "made there; give --data-dir, or set TMPDIR to a folder you can write "
                                           "in\n")
    assert cli.output_files_problem(decode_throughput.parse_args(["--quick", "--data-dir", str(tmp_path)])) == ""
    # no clips without --with-loader: nothing to refuse
    assert cli.output_files_problem(train_throughput.parse_args(["--quick", "--no-measure-peak"])) == ""


def test_default_clip_and_list_folders_are_the_users_own(tmp_path, monkeypatch):
    """Without --data-dir, every user's synthetic clips and lists went to one $TMPDIR/eva_bench_clips and
    eva_bench_lists: made by the first user of a shared machine, not writable by the next, whose run ended in a
    PermissionError traceback. Each user now has folders of their own (named with the uid)."""
    import argparse

    from benchmarks import loader_throughput

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    made = []
    monkeypatch.setattr(inputs, "make_synthetic_clips",
                        lambda out_dir, *a, **k: made.append(out_dir) or [(os.path.join(out_dir, "c.webm"), 0, 64)])
    args = argparse.Namespace(list=None, codec="vp9", data_dir=None, num_clips=1, width=64, height=48, frames=64,
                              gop=16)
    inputs.read_list_or_synthetic(args)
    assert made == [str(tmp_path / f"eva_bench_clips-{os.getuid()}" / "vp9")]

    class Listed(Exception):
        pass

    def write_repeated_list(clips, rows, out_dir):
        raise Listed(out_dir)

    monkeypatch.setattr(loader_throughput, "write_repeated_list", write_repeated_list)
    with pytest.raises(Listed) as e:
        loader_throughput.run_benchmark(loader_throughput.parse_args(["--quick", "--loaders", "pyav"]))
    assert str(e.value) == str(tmp_path / f"eva_bench_lists-{os.getuid()}")


def test_augment_benchmark_refuses_a_batch_larger_than_the_memory_available(monkeypatch, capsys):
    """augment_throughput --batch 100000 swapped for minutes, and --num-frames 100000 or a 100000x100000 frame ended
    in numpy's MemoryError traceback: now one line naming the sizes, what they need and what is available, exit
    code 2, before any frame is drawn."""
    import tools.synthetic
    from benchmarks import augment_throughput

    monkeypatch.setattr(tools.synthetic, "available_memory", lambda: 4 << 30)
    monkeypatch.setattr(augment_throughput, "make_batch", lambda *a: pytest.fail("frames drawn"))
    for given, words in ((["--batch", "100000"], "--batch 100000 of --num-frames 16 frames of 340x256"),
                         (["--num-frames", "100000"], "--batch 8 of --num-frames 100000 frames of 340x256"),
                         (["--width", "100000", "--height", "100000"], "16 frames of 100000x100000")):
        with pytest.raises(SystemExit) as e:
            augment_throughput.main(given)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
        assert words in err and ", and 4.00 GiB of memory is available; give a smaller --batch" in err, err
    assert augment_throughput.parse_args([]).batch == 8  # the defaults need a few hundred MiB
    monkeypatch.setattr(tools.synthetic, "available_memory", lambda: None)  # unknown: not refused
    assert augment_throughput.parse_args(["--batch", "100000"]).batch == 100000


def test_augment_benchmark_error_line_names_each_flag_as_typed(monkeypatch, capsys):
    """augment_throughput's error line before the run named a flag typed with '_' (--num_frames) in the declared
    spelling, where every other benchmark echoes it as typed (the problem here is made up: today's name only
    --json, which has one spelling)."""
    from benchmarks import augment_throughput, cli

    monkeypatch.setattr(cli, "output_files_problem", lambda args: "--num-frames and --json: cannot go together")
    monkeypatch.setattr(augment_throughput, "run", lambda args: pytest.fail("measured"))
    assert augment_throughput.main(["--quick", "--num_frames", "4"]) == 2
    assert capsys.readouterr().err == "error: --num_frames and --json: cannot go together\n"


def test_augment_benchmark_copies_outputs_to_the_host_only_for_the_comparison(monkeypatch):
    """The timed batches copied every output to the host: on a GPU the transfer, the same for both colour
    implementations, was timed with the graph."""
    from benchmarks import augment_throughput as at

    copies = []
    real_output = at._output
    monkeypatch.setattr(at, "_output", lambda pipe: copies.append(pipe) or real_output(pipe))
    args = at.parse_args(["--quick", "--threads", "1", "--programs", "off", "--repeats", "2"])
    results = at.run(args)
    assert [r["name"] for r in results] == ["off/planes", "off/interleaved"]
    assert results[0]["ms_per_batch"].median > 0
    assert len(copies) == len(at.IMPLEMENTATIONS)  # one output of each, for the maximum difference


def test_augment_benchmark_gpu_graph_takes_its_frames_on_the_device(monkeypatch):
    """With --device gpu the graph took host frames and uploaded them (a `.gpu()` inside it), so every timed run
    held a host-to-device copy of the input. The frames now enter a GPU graph on the device, uploaded once before
    the timing (on_device), as a CPU graph's enter it in host memory. Checked on the defined, unbuilt graph."""
    from nvidia.dali import Pipeline

    from benchmarks import augment_throughput as at

    args = at.parse_args(["--quick", "--threads", "1", "--programs", "all"])
    columns = at.make_batch(args, "all")
    monkeypatch.setattr(Pipeline, "build", lambda self: None)  # building a GPU graph needs a GPU
    for device in ("gpu", "cpu"):
        args.device = device  # parse_args refuses gpu without CUDA; nothing runs here
        for impl in at.IMPLEMENTATIONS:
            pipe = at.build(args, impl, columns)
            pipe._build_graph()  # DALI's own graph definition step of build()
            made = {out.name: (op.name, out.device) for op in pipe._ops for out in op.outputs}
            # The frames' way in: the ROI resize's input, and the operator and device that made it (a .gpu() makes
            # a GPU node of a host output, i.e. an upload in every run).
            [resize] = [op for op in pipe._ops if op.name.startswith("__Resize")]
            frames = resize.inputs[0]  # the rest are its ROI arguments
            source, made_on = made[frames.name]
            assert source.startswith("__ExternalSource") and (frames.device, made_on) == (device, device), (
                device, impl, source, frames.device, made_on)
            assert {o.device for o in pipe._graph_outputs} == {device}, (device, impl)
    assert at.on_device(columns, "cpu") is columns  # the CPU graph's frames stay where they are
    # For a GPU graph: one upload of the whole batch, waited for (a fake .cuda() keeps it on the host here).
    events = []
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self: events.append("upload") or self)
    monkeypatch.setattr(hardware, "sync_cuda", lambda: events.append("sync"))
    frames, *rest = at.on_device(columns, "gpu")
    assert events == ["upload", "sync"] and rest == list(columns[1:])
    assert np.array_equal(frames.numpy(), np.stack(columns[0]))


def test_augment_benchmark_times_both_colour_implementations_on_the_same_batches(tmp_path):
    """Quick mode: every program runs with both colour implementations, which compute the same values."""
    out_json = tmp_path / "augment.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.augment_throughput", "--quick", "--threads", "1",
                           "--json", str(out_json)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out_json.read_text())
    # the other benchmarks' top-level keys and rows (a list, each named): it had only "settings" and "results", a
    # dict by name, and a median without its repeats
    assert COMMON_KEYS <= set(data) and data["benchmark"] == "augment_throughput" and data["complete"] is True
    assert data["machine"]["cpu_cores"] > 0 and data["settings"]["quick"] is True and "json" not in data["settings"]
    results = data["results"]
    assert [r["name"] for r in results] == [f"{p}/{i}" for p in ("off", "drawn", "all") for i in ("planes",
                                                                                                  "interleaved")]
    for r in results:
        assert r["ms_per_batch"]["median"] > 0 and len(r["ms_per_batch"]["values"]) == 2
        assert r["cpu_ms_per_clip"] > 0 and r["max_abs_diff"] < 1e-3
    assert "drawn: interleaved / planes" in proc.stdout


def test_augment_benchmark_stopped_keeps_the_rows_measured_in_the_json_marked_incomplete(tmp_path, monkeypatch,
                                                                                          capsys):
    """A SIGTERM (or Ctrl-C) after a colour program was measured left no --json, where the other benchmarks keep
    the rows measured so far: now its rows are there, marked "complete": false, and the one line says so."""
    from benchmarks import augment_throughput as at
    from evautil.interrupt import Stopped

    real_make_batch, programs = at.make_batch, []

    def make_batch(args, program):  # the stop comes as the second program starts
        programs.append(program)
        if len(programs) == 2:
            raise Stopped("SIGTERM")
        return real_make_batch(args, program)

    monkeypatch.setattr(at, "make_batch", make_batch)
    monkeypatch.setattr(sys, "argv", ["augment_throughput.py"])
    out = tmp_path / "augment.json"
    assert at.main(["--quick", "--threads", "1", "--programs", "off,all", "--json", str(out)]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("stopped: SIGTERM received: augment_throughput.py: ") and (
        f"--json {out} holds the 2 row(s) measured before it, marked \"complete\": false (the rest were not "
        "measured); run the same command again") in err, err
    saved = json.loads(out.read_text())
    assert saved["complete"] is False and saved["benchmark"] == "augment_throughput", saved
    assert [r["name"] for r in saved["results"]] == ["off/planes", "off/interleaved"]
    assert saved["results"][0]["ms_per_batch"]["median"] > 0 and saved["settings"]["programs"] == "off,all"


def test_augment_benchmark_times_no_torch_import_in_its_first_measurement(tmp_path):
    """On a CPU the first CUDA check imports torch (about a CPU-second): a fresh process must do it before the clock
    starts, or the first program's first implementation is charged for it (hundreds of ms per quick clip). Checked
    without timing anything: every read of the CPU clock in the run finds torch imported already."""
    from tests.conftest import child_env
    script = (
        "import sys, time\n"
        "reads, process_time = [], time.process_time\n"
        "def read():\n"
        "    reads.append('torch' in sys.modules)\n"
        "    return process_time()\n"
        "time.process_time = read\n"
        "from benchmarks import augment_throughput\n"
        "assert augment_throughput.main(['--quick', '--threads', '1', '--programs', 'off']) == 0\n"
        "print('reads', reads)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=child_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    reads = [line for line in proc.stdout.splitlines() if line.startswith("reads ")]
    assert len(reads) == 1 and reads[0].count("True") >= 4 and "False" not in reads[0], proc.stdout[-2000:]


def test_parity_check_finds_every_frame_and_probes_seeking_on_the_cpu_decoder(tmp_path, capsys):
    """The parity benchmark's CPU dry run (DALI's CPU decoder, synthetic VP9): every requested frame is found, and
    the seek probe reports its timings and a verdict (on the GPU the same probe tells whether NVDEC seeks)."""
    from benchmarks import nvdec_parity

    out = tmp_path / "parity.json"
    assert nvdec_parity.main(["--decoder", "cpu", "--quick", "--tmp", str(tmp_path / "clips"),
                              "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["failures"] == [] and report["clips"]
    assert all(c["found"] == c["asked"] == 8 for c in report["clips"])
    seek = report["seek_probe"]
    assert seek["early_s"] > 0 and seek["late_s"] > 0 and seek["late_cut_s"] > 0
    assert seek["from_frame_0_would_be"] == (94 + 1) / (4 + 1)
    # DALI 2.4's CPU decoder does not seek, which the probe's times usually show; on a loaded 2-core machine the
    # early frame's time swells and the verdict can flip, so it is not asserted here (test_the_seek_verdict_...
    # checks the rule): a frame 94 decodes more frames than frame 4 either way.
    assert seek["setup_s"] > 0 and seek["late_over_early_beyond_setup"] > 1
    # every requested frame is named against both YUV-to-RGB matrices; PyAV wrote these clips with BT.601
    assert all(c["matrix"] == "BT.601" and set(c["mean_abs_diff_by_matrix"]) == {"BT.601", "BT.709"}
               for c in report["clips"]), report["clips"]
    assert "seek probe (seek_probe_vp9.webm" in capsys.readouterr().out
    assert report["complete"] is True
    # named, with its machine, as every benchmark's JSON is (its file alone had no "benchmark")
    assert report["benchmark"] == "nvdec_parity" and report["machine"]["cpu_cores"] > 0
    # DALI's CPU decoder numbers an edit-list MP4 as FFmpeg does (libavcodec drops the hidden pictures); the row is
    # there to tell, on a GPU, whether NVDEC does (the NVDEC route keeps such files off it either way)
    [edit] = report["numbering"]
    assert edit["cut"] == "edit list hides the first 3" and edit["shift"] == 0 and edit["kept_off_nvdec"] is True
    assert edit["best_matches"] == edit["indices"] and edit["frames"] == 21
    # The raw .h264 row (B-frames, no pts; H.264, so in numbering_probe on NVDEC only) holds the route's verdict on
    # the CPU too: found before the decode, which DALI's CPU decoder refuses; the report prints both
    from benchmarks import parity_report

    raw = nvdec_parity.raw_h264_row(str(tmp_path / "clips"), "cpu", None, True)
    assert raw["clip"] == "numbering_raw_bframes_h264.h264" and raw["kept_off_nvdec"] is True, raw
    assert raw["frames"] == 24 and raw["indices"] == nvdec_parity.probe_indices(24)
    # DALI's CPU decoder takes no H.264: the row names why in one line, not the start of the pipeline's traceback
    assert raw["error"] == 'RuntimeError: Failed to create video decoder for "memory file"', raw["error"]
    assert "best_matches" not in raw
    with av.open(str(tmp_path / "clips" / raw["clip"])) as c:
        assert all(p.pts is None for p in c.demux(video=0) if p.size)
    with av.open(str(tmp_path / "clips" / raw["clip"])) as c:
        assert 3 in {int(f.pict_type) for f in c.decode(video=0)}  # B-frames: decode order is not display order
    parity_report._print_numbering([edit, raw])
    out = capsys.readouterr().out
    assert ("  numbering_cut_with_edit_list_vp9.mp4 (edit list hides the first 3): asked "
            f"{' '.join(map(str, edit['indices']))}, best-matching PyAV frames "
            f"{' '.join(map(str, edit['indices']))}: shift +0; the NVDEC route keeps it off NVDEC: yes\n") in out, out
    raw_line = "  numbering_raw_bframes_h264.h264 (raw .h264 stream with B-frames, its packets without pts): FAILED "
    assert raw_line + "RuntimeError" in out, out
    assert out[out.index(raw_line):].rstrip().endswith("; the NVDEC route keeps it off NVDEC: yes"), out


def test_the_seek_verdict_takes_the_set_up_off_first():
    """Every probe call builds its graph and decoder: with an NVDEC decoder that may take longer than the decode,
    and the plain late/early ratio (1.7 below, under the old threshold of 2) passed a decoder that does not seek."""
    from benchmarks.nvdec_parity import seek_verdict

    setup, per_frame, copies = 2.0, 0.001, 8  # seconds
    def time_to(first, frame):  # decoding from ``first`` up to ``frame``, 8 copies, after the set-up
        return setup + (frame - first + 1) * per_frame * copies

    no_seek = seek_verdict(time_to(0, 0), time_to(0, 8), time_to(0, 248), 8, 248, 12)
    assert time_to(0, 248) / time_to(0, 8) < 2 and no_seek["verdict"] == "decodes from frame 0 (no seek)"
    assert no_seek["late_over_early_beyond_setup"] == pytest.approx(248 / 8)
    seeking = seek_verdict(time_to(0, 0), time_to(0, 8), time_to(240, 248), 8, 248, 12)
    assert seeking["verdict"] == "seeks" and seeking["late_over_early_beyond_setup"] == pytest.approx(1.0)
    assert seeking["if_seeking"] == 1.0 and seeking["if_decoding_from_frame_0"] == 31.0


def test_parity_report_is_on_disk_before_the_seek_probe_and_a_missing_reference_folder_is_named(
        tmp_path, monkeypatch, capsys):
    """A parity run stopped by its time box still leaves the clips it compared (the report is written after every
    clip); a --real-dir that does not exist or holds no video fails the run (exit 1, named on stderr and in the
    report) but the synthetic clips and the seek probe are still measured."""
    from benchmarks import nvdec_parity

    out = tmp_path / "parity.json"
    seen = {}

    def probe_reading_the_report(*args, **kwargs):
        seen.update(json.loads(out.read_text()))
        raise RuntimeError("stopped here")

    monkeypatch.setattr(nvdec_parity, "seek_probe", probe_reading_the_report)
    assert nvdec_parity.main(["--decoder", "cpu", "--quick", "--tmp", str(tmp_path / "clips"),
                              "--json", str(out)]) == 0
    assert seen["complete"] is False and seen["clips"] and all(c["found"] == 8 for c in seen["clips"])
    final = json.loads(out.read_text())
    assert final["complete"] is True and final["seek_probe"] == {"error": "RuntimeError: stopped here"}
    monkeypatch.undo()
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    for folder, why in (("nowhere", "no such folder"), ("empty", "no video files there")):
        out = tmp_path / f"{folder}.json"
        assert nvdec_parity.main(["--decoder", "cpu", "--real-dir", str(tmp_path / folder), "--quick",
                                  "--tmp", str(tmp_path / "clips"), "--json", str(out)]) == 1
        streams = capsys.readouterr()
        assert f"error: --real-dir {tmp_path / folder}: {why}" in streams.err
        report = json.loads(out.read_text())
        [failure] = report["failures"]
        assert failure["clip"] == f"--real-dir {tmp_path / folder}" and failure["error"].startswith(why)
        assert report["clips"] and all(c["found"] == 8 for c in report["clips"])  # the synthetic clips, compared
        assert "verdict" in report["seek_probe"] and "seek probe (" in streams.out


def test_a_parity_real_dir_naming_a_file_is_named_as_such(tmp_path, capsys):
    """--real-dir clip.mp4 (a clip given for the folder of clips) was said to be "no such folder": now the line and
    the report's failure say it is a file."""
    import argparse

    from benchmarks import nvdec_parity

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    failures = []
    assert nvdec_parity._real_clips(argparse.Namespace(real_dir=str(clip)), failures) == []
    why = "a file, not a folder (of clips)"
    assert failures == [{"clip": f"--real-dir {clip}", "error": why}]
    assert capsys.readouterr().err == f"error: --real-dir {clip}: {why}; going on with the other clips\n"


def test_parity_report_holds_the_seek_verdict_before_the_numbering_rows_run(tmp_path, monkeypatch):
    """The numbering rows end with a stream whose picture size changes, the decode most likely to take the process
    down on NVDEC: the seek verdict was measured after them, so such a crash lost it too. Now it is on disk first,
    and the report says complete only once the numbering rows are in."""
    from benchmarks import nvdec_parity

    out = tmp_path / "parity.json"
    seen, numbering_probe = {}, nvdec_parity.numbering_probe

    def numbering_reading_the_report(*args, **kwargs):
        seen.update(json.loads(out.read_text()))
        return numbering_probe(*args, **kwargs)

    monkeypatch.setattr(nvdec_parity, "numbering_probe", numbering_reading_the_report)
    assert nvdec_parity.main(["--decoder", "cpu", "--quick", "--tmp", str(tmp_path / "clips"),
                              "--json", str(out)]) == 0
    assert seen["complete"] is False and "verdict" in seen["seek_probe"] and seen["numbering"] == []
    final = json.loads(out.read_text())
    assert final["complete"] is True and final["numbering"] and final["seek_probe"] == seen["seek_probe"]


def test_parity_real_dir_takes_videos_of_any_case_and_no_macos_companion_files(tmp_path):
    """A camera's or phone's clips (CLIP.MP4, .mov) were left out of --real-dir, a folder of only those was "no video
    files there", and the ._ files macOS leaves beside copied clips were compared, each a failure (exit code 1)."""
    import argparse

    from benchmarks import nvdec_parity

    for name in ("A.MP4", "b.mov", "c.webm", "._c.webm", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.mp4").mkdir()
    failures: list = []
    real = nvdec_parity._real_clips(argparse.Namespace(real_dir=str(tmp_path)), failures)
    assert real == [str(tmp_path / n) for n in ("A.MP4", "b.mov", "c.webm")] and failures == []


def test_parity_on_nvdec_without_a_gpu_is_one_line(tmp_path, monkeypatch, capsys):
    """Without CUDA the default (NVDEC) run printed DALI's multi-sentence CUDA assertion once per clip, exit 1."""
    from benchmarks import hardware, nvdec_parity

    monkeypatch.setattr(hardware, "cuda_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        nvdec_parity.main(["--quick", "--tmp", str(tmp_path / "clips")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: ") and "--decoder mixed (the default) checks NVDEC and needs a CUDA GPU" in err, err
    assert not (tmp_path / "clips").exists()  # refused before any clip was written


def test_a_parity_clip_that_is_not_there_is_refused_before_anything_is_compared(tmp_path, monkeypatch, capsys):
    """A mistyped --clips file was found missing after every other clip and the probes had run (minutes on a GPU
    machine), as one failed row and exit code 1; index_throughput refuses its --clips before it starts. Now one
    line, exit code 2, no clip written or compared."""
    from benchmarks import nvdec_parity

    monkeypatch.setattr(nvdec_parity, "compare", lambda *a: pytest.fail("compared"))
    gone = tmp_path / "gone.mp4"
    for clip, why in ((gone, f"{gone} does not exist"), (tmp_path, f"{tmp_path} is a folder, not a file")):
        with pytest.raises(SystemExit) as stop:
            nvdec_parity.main(["--quick", "--decoder", "cpu", "--tmp", str(tmp_path / "clips"), "--clips", str(clip)])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1, err
        assert err.startswith("error: ") and f"--clips: {why}; give video files" in err, err
    assert os.listdir(tmp_path) == []


def test_parity_on_the_cpu_decoder_skips_clips_in_codecs_it_does_not_take_with_one_line_each(tmp_path, capsys):
    """DALI's CPU decoder takes VP8/VP9/MJPEG only: an H.264 or MPEG-4 clip (--real-dir's) failed with a long DALI
    traceback in its report row and failed the run. Each is skipped up front, with its codec and what it needs."""
    from benchmarks import nvdec_parity
    from dali_pipelines.pyav_encode import write_video

    frames = np.random.default_rng(0).integers(0, 255, (6, 32, 48, 3), dtype=np.uint8)
    clips = [str(tmp_path / "a.mp4"), str(tmp_path / "b.avi")]
    write_video(clips[0], frames, codec="h264")
    write_video(clips[1], frames, codec="mpeg4")
    out = tmp_path / "parity.json"
    assert nvdec_parity.main(["--decoder", "cpu", "--quick", "--clips", *clips, "--tmp", str(tmp_path / "clips"),
                              "--json", str(out)]) == 0
    streams = capsys.readouterr()
    need = ("DALI's CPU decoder takes only VP8/VP9/MJPEG; this comparison needs --decoder mixed (NVDEC, on a GPU "
            "machine)")
    assert streams.err.splitlines() == [f"skipped a.mp4: h264: {need}", f"skipped b.avi: mpeg4: {need}"]
    assert "Critical error" not in streams.out + streams.err
    report = json.loads(out.read_text())
    assert report["failures"] == [] and [s["codec"] for s in report["skipped"]] == ["h264", "mpeg4"]
    assert report["clips"] and all(c["codec"] == "vp9" and c["found"] == 8 for c in report["clips"])


def test_parity_removes_its_temporary_folder_of_synthetic_clips(tmp_path, monkeypatch, capsys):
    """Without --tmp, every nvdec_parity run left its eva_parity_* folder of synthetic clips in TMPDIR."""
    from benchmarks import nvdec_parity

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    assert nvdec_parity.main(["--decoder", "cpu", "--quick"]) == 0, capsys.readouterr().err[-2000:]
    assert "seek probe (" in capsys.readouterr().out and os.listdir(tmp_path / "tmp") == []


def test_sizes_given_with_quick_win_over_its_own(capsys):
    """index_throughput --quick --rows 2000 measured 400 rows (and augment_throughput --quick --batch 8 a batch of
    2) without a word: the flags given on the command line now win, and --help says so."""
    from benchmarks import augment_throughput, index_throughput

    args = index_throughput.parse_args(["--quick", "--rows", "2000", "--ranks", "3"])
    assert (args.rows, args.ranks, args.worker_counts) == (2000, 3, [1, 2])
    args = index_throughput.parse_args(["--quick", "--workers", "4"])
    assert (args.rows, args.ranks, args.worker_counts) == (400, 2, [4])
    args = augment_throughput.parse_args(["--quick", "--batch", "8", "--num-frames", "16"])
    assert (args.batch, args.num_frames, args.width, args.repeats) == (8, 16, 64, 2)
    for module in (index_throughput, augment_throughput):
        with pytest.raises(SystemExit):
            module.parse_args(["--help"])
        assert "given too win" in " ".join(capsys.readouterr().out.split())


def test_flags_take_either_spelling(capsys):
    """--num_frames (the spelling of train.py's --only_test) was refused as an unrecognized argument; given with
    --quick, it wins over --quick's size as --num-frames does."""
    from benchmarks import augment_throughput

    args = augment_throughput.parse_args(["--quick", "--batch", "8", "--num_frames", "16"])
    assert (args.batch, args.num_frames, args.width, args.repeats) == (8, 16, 64, 2)
    with pytest.raises(SystemExit) as e:
        augment_throughput.parse_args(["--quick", "--num_framez", "16"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and ("unrecognized arguments: --num_framez 16 (--num_framez: did you mean "
                                   "--num-frames?) (see --help)") in err, err


@pytest.mark.parametrize("module, args, line", [
    ("loader_throughput", ["--frames", "1"], "--frames 1: a synthetic clip must hold at least 16 frames (--num-frames "
                                             "16: the frames sampled from each); give --frames 16 or more"),
    ("loader_throughput", ["--frames", "12", "--num-frames", "8"], None),
    ("eval_throughput", ["--frames", "4", "--num-frames", "8"], "--frames 4: a synthetic clip must hold at least 8 "
                                                               "frames"),
    ("train_throughput", ["--with-loader", "--frames", "4", "--clip-frames", "3"], "--clip-frames 3: a synthetic "
                                                                                   "clip must hold at least 4 frames"),
    ("train_throughput", ["--frames", "4", "--clip-frames", "1"], None),  # no clips without --with-loader
    ("decode_throughput", ["--frames", "1", "--modes", "all"], "--frames 1: a synthetic clip must hold at least 2 "
                                                               "frames (a video, not a still image)"),
    ("decode_throughput", ["--frames", "8"], "--frames 8: a synthetic clip must hold at least 16 frames"),
])
def test_synthetic_clips_shorter_than_what_is_sampled_from_them_are_refused(module, args, line, capsys):
    """loader_throughput --frames 1 measured clips of one frame repeated 16 times (a still image, not a video):
    every benchmark that writes synthetic clips refuses clips shorter than the frames it samples from each, in one
    line naming the flag and the values it takes, exit code 2."""
    import importlib

    parse_args = importlib.import_module(f"benchmarks.{module}").parse_args
    if line is None:
        parse_args(["--quick", *args])
        assert capsys.readouterr().err == ""
        return
    with pytest.raises(SystemExit) as e:
        parse_args(["--quick", *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and f".py: {line}" in err, err


@pytest.mark.parametrize("module, given, expected", [
    ("loader_throughput", ["--frames", "250", "--test-batch", "2", "--repeats", "5"],
     {"frames": 250, "test_batch": 2, "repeats": 5, "batch": 4, "num_clips": 4}),
    ("decode_throughput", ["--frames", "128", "--width", "340"], {"frames": 128, "width": 340, "height": 120}),
    ("eval_throughput", ["--num-frames", "16", "--batch", "2"], {"num_frames": 16, "batch": 2, "input_size": 112}),
    ("train_throughput", ["--frames", "8", "--batch", "4", "--no-measure-peak"], {"frames": 8, "batch": 4,
                                                                                  "input_size": 64}),
])
def test_every_benchmark_lets_sizes_given_with_quick_win(module, given, expected, capsys):
    """loader_throughput --quick --frames 250 wrote 64-frame clips and --quick --test-batch 2 measured batches of
    one, without a word (each --quick capped or replaced what was given): what is given wins, the rest is --quick's."""
    import importlib

    args = importlib.import_module(f"benchmarks.{module}").parse_args(["--quick", *given])
    assert {k: getattr(args, k) for k in expected} == expected


@pytest.mark.parametrize("module, args, line", [
    ("loader_throughput", ["--threads", "0"], "--threads must be at least 1, got 0"),
    ("loader_throughput", ["--input-size", "0"], "--input-size must be at least 1, got 0"),
    ("eval_throughput", ["--num-classes", "0"], "--num-classes must be at least 1, got 0"),
    ("eval_throughput", ["--workers", "-1"], "--workers must be at least 0, got -1"),
    ("train_throughput", ["--threads", "0", "--with-loader"], "--threads must be at least 1, got 0"),
    ("train_throughput", ["--workers", "-1", "--with-loader"], "--workers must be at least 0, got -1"),
    ("decode_throughput", ["--seed", "-1"], "--seed must be at least 0, got -1"),
])
def test_loader_and_model_sizes_are_checked_by_their_flag_before_anything_runs(module, args, line, capsys):
    """loader_throughput --threads 0 wrote its clips and built its index, then stopped on 'DATA.NUM_THREADS = 0 must
    be at least 1', a config key the command line never named: now one line naming the flag, at once (and
    decode_throughput --seed -1, numpy's ValueError traceback once its clips were written)."""
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(f"benchmarks.{module}").parse_args(["--quick", *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and f".py: {line} (see --help)" in err, err


def test_a_plot_in_a_format_matplotlib_cannot_write_is_refused_before_anything_is_measured(tmp_path, monkeypatch,
                                                                                          capsys):
    """"--plot results.json" (the two flags swapped) measured the whole run, then ended in matplotlib's traceback
    ("Format 'json' is not supported") with nothing written; a name without an extension is still drawn as PNG."""
    import argparse

    from benchmarks import cli, decode_throughput, inputs

    monkeypatch.setattr(inputs, "read_list_or_synthetic", lambda *a: pytest.fail("measured"))
    swapped = str(tmp_path / "results.json")
    assert decode_throughput.main(["--quick", "--plot", swapped]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --plot {swapped}: matplotlib cannot write .json images; end the name with one "
                          "of ") and ".png" in err and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == []
    assert cli.output_files_problem(argparse.Namespace(json=None, plot=str(tmp_path / "results"))) == ""
    assert cli.output_files_problem(argparse.Namespace(json=None, plot=str(tmp_path / "r.PDF"))) == ""
    assert "cannot write .txt images" in cli.output_files_problem(argparse.Namespace(plot="r.txt"))


def test_json_and_plot_naming_one_file_or_the_input_are_refused_before_anything_is_measured(tmp_path, monkeypatch,
                                                                                           capsys):
    """`--json r.png --plot r.png` measured the run, then the chart replaced the JSON with exit code 0; `--json`
    naming the `--list` (or a `--clips` file) read overwrote it with the results. Now one line, exit code 2, nothing
    measured and every file as it was."""
    from benchmarks import cli, decode_throughput, inputs, nvdec_parity

    monkeypatch.setattr(inputs, "read_list_or_synthetic", lambda *a: pytest.fail("measured"))
    listing = tmp_path / "list.txt"
    listing.write_text("a.mp4 0\n")
    same = str(tmp_path / "r.png")
    for argv, line in (
            (["--json", same, "--plot", str(tmp_path / "." / "r.png")],
             f"error: --json {same} and --plot {tmp_path / '.' / 'r.png'} name the same file: one would replace "
             "the other; give each a file of its own (e.g. results.json and results.png)\n"),
            (["--list", str(listing), "--json", str(listing)],
             f"error: --json {listing} is the --list file this run reads: the results would overwrite it; give "
             "--json a file of its own\n")):
        assert decode_throughput.main(["--quick", *argv]) == 2, argv
        assert capsys.readouterr().err == line
    assert sorted(os.listdir(tmp_path)) == ["list.txt"] and listing.read_text() == "a.mp4 0\n"
    clip = tmp_path / "clip.webm"
    with pytest.raises(SystemExit) as e:
        nvdec_parity.main(["--quick", "--decoder", "cpu", "--clips", str(clip), "--json", str(clip)])
    assert e.value.code == 2 and f"--json {clip} is the --clips file this run reads" in capsys.readouterr().err
    assert cli.output_files_problem(decode_throughput.parse_args(
        ["--quick", "--json", str(tmp_path / "r.json"), "--plot", same, "--list", str(listing)])) == ""


def test_a_sigterm_to_the_group_while_a_baseline_dataloader_works_is_one_stopped_line(tmp_path, data_dir):
    """A scheduler's SIGTERM reaches every process of the group (so does the GPU suite's time box): it killed the
    baseline DataLoader's workers too, and the DataLoader's "worker (pid ...) is killed by signal: Terminated" ended
    the run with a traceback and exit code 1 instead of the one `stopped:` line and exit code 4."""
    import psutil

    clips = data_dir / "sigterm"
    inputs.make_synthetic_clips(str(clips / "vp9"), 2, codec="vp9", size=(160, 120), num_frames=48, gop=16)

    def decoding(main) -> bool:  # both DataLoader workers have taken up work
        try:
            workers = main.children()
            return len(workers) >= 2 and all(p.cpu_times().user > 0.5 for p in workers)
        except psutil.Error:
            return False

    status, _, err = _signal_the_group_once(
        ["benchmarks.loader_throughput", "--quick", "--loaders", "pyav", "--modes", "train", "--data-dir",
         str(clips), "--codec", "vp9", "--num-clips", "2", "--frames", "48", "--width", "160", "--height", "120",
         "--workers", "2", "--repeats", "50", "--input-size", "112", "--num-frames", "8"],
        tmp_path / "tmp", decoding, signal.SIGTERM)
    assert status == 4 and "Traceback" not in err, err[-3000:]
    assert err.splitlines() == ["stopped: SIGTERM received: loader_throughput.py: nothing measured was written "
                                "(--json and --plot are written whole, once the run ends); run the same command "
                                "again (exit code 4)"], err[-3000:]
