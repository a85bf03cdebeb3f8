"""decode_frames skips GOPs without requested frames, and returns exactly what a decode from frame 0 returns."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from dali_pipelines.pyav_io import BadVideoError, decode_frames
from dali_pipelines.pyav_encode import write_video
from tests.video_fixtures import best_match, pattern_frames


def reference_decode(path: str | Path, indices: list[int]) -> np.ndarray:
    """Independent reference: decode from the start, number frames by the order they come out of the decoder."""
    wanted, out = set(indices), {}
    with av.open(str(path)) as c:
        for n, frame in enumerate(c.decode(video=0)):
            if n in wanted:
                out[n] = frame.to_ndarray(format="rgb24")
            if n >= max(indices):
                break
    return np.stack([out[i] for i in indices])


def index_sets(n: int) -> list[list[int]]:
    rng = np.random.default_rng(n)
    return [
        [n - 1],  # late: only the last GOP
        [3, n - 2, 17, n - 1, 17, 0, n // 2],  # sparse, unordered, duplicated
        sorted(rng.choice(n, 16, replace=False).tolist()),  # TSN-like spread
        rng.permutation(n).tolist(),  # every frame, shuffled
        [n // 2, n // 2, n // 2 + 1],  # duplicates, adjacent
    ]


SYNTH = [(8, 0), (16, 0), (8, 3), (16, 2)]  # (gop, bframes)


@pytest.fixture(scope="module")
def synth_clips(tmp_path_factory) -> dict[tuple[int, int], tuple[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("seek")
    src = pattern_frames(64, 64, 48)
    clips = {}
    for gop, bframes in SYNTH:
        path = str(root / f"g{gop}_b{bframes}.mp4")
        write_video(path, src, "h264", gop=gop, bframes=bframes)
        clips[gop, bframes] = (path, src)
    return clips


@pytest.mark.parametrize("gop, bframes", SYNTH)
def test_seeking_matches_sequential_decode(synth_clips, gop, bframes):
    path, src = synth_clips[gop, bframes]
    if bframes:
        with av.open(path) as c:
            pts = [p.pts for p in c.demux(video=0) if p.size]
        assert pts != sorted(pts)  # B-frames really reorder decode vs presentation order
    for want in index_sets(len(src)):
        stats: dict = {}
        got = decode_frames(path, want, stats=stats)
        assert np.array_equal(got, reference_decode(path, want)), (gop, bframes, want)
        assert stats["mode"] in ("seek", "sequential")
        # and the frames are the encoded ones (the reference numbering is right, not just consistent)
        idx = [best_match(g, src)[0] for g in got]
        assert idx == want
    # bytes input, numpy indices and one thread give the same pixels
    want = [60, 9, 33]
    assert np.array_equal(decode_frames(Path(path).read_bytes(), np.array(want), threads=1),
                          reference_decode(path, want))


@pytest.mark.parametrize("gop, bframes", SYNTH)
def test_seeking_skips_gops(synth_clips, gop, bframes):
    path, _ = synth_clips[gop, bframes]
    stats: dict = {}
    decode_frames(path, [62], stats=stats)
    assert stats["mode"] == "seek"
    # only the last GOP (64 = whole GOPs) is decoded, not frames 0..62
    assert 0 < stats["packets"] <= gop and stats["frames"] <= gop
    stats = {}
    decode_frames(path, [1, 2 * gop + 1, 40 + gop // 2], stats=stats)
    assert stats["mode"] == "seek" and stats["runs"] >= 2 and stats["packets"] < 40 + gop // 2
    stats = {}
    decode_frames(path, [gop - 1, gop], stats=stats)  # adjacent GOPs: one continuous run
    assert stats["runs"] == 1


def test_open_gop_is_not_cut(tmp_path):
    """x264's open GOPs flag non-IDR I-frames as keyframes; later frames may reference the previous GOP, so they
    must not start a run (the result equals the sequential decode and no GOP is skipped)."""
    path = str(tmp_path / "open.mp4")
    write_video(path, pattern_frames(48, 64, 48), "h264", gop=16, bframes=3, **{"x264-params": "open-gop=1"})
    with av.open(path) as c:
        assert sum(p.is_keyframe for p in c.demux(video=0) if p.size) > 1
    want = [40, 20, 47]
    stats: dict = {}
    assert np.array_equal(decode_frames(path, want, stats=stats), reference_decode(path, want))
    assert stats["mode"] == "sequential" and stats["frames"] >= 48


def write_hevc(path: str, frames: np.ndarray, gop: int, open_gop: bool) -> None:
    """HEVC through libx265 (the synthetic writer has no HEVC): fixed GOP, 3 B-frames, closed or open GOPs."""
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=3:open-gop={int(open_gop)}:log-level=error"
    with av.open(path, "w") as c:
        s = c.add_stream("libx265", rate=25, options={"x265-params": params, "preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.time_base = Fraction(1, 25)
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode(None))


@pytest.mark.parametrize("open_gop", [False, True])
def test_hevc(tmp_path, open_gop):
    """Closed GOPs (IDR) are cut; open GOPs (CRA with leading pictures decoded after it) are decoded through."""
    try:
        av.codec.Codec("libx265", "w")
    except Exception:
        pytest.skip("no libx265 encoder in this FFmpeg")
    path = str(tmp_path / "h.mp4")
    src = pattern_frames(48, 64, 48)
    write_hevc(path, src, 8, open_gop)
    for want in index_sets(48):
        stats: dict = {}
        got = decode_frames(path, want, stats=stats)
        assert np.array_equal(got, reference_decode(path, want)), (open_gop, want)
        assert [best_match(g, src)[0] for g in got] == want
    stats = {}
    decode_frames(path, [45], stats=stats)
    assert stats["mode"] == ("sequential" if open_gop else "seek")


def test_vp9_keyframes(tmp_path):
    path = str(tmp_path / "v.webm")
    write_video(path, pattern_frames(40, 64, 48), "vp9", gop=8)
    for want in index_sets(40):
        assert np.array_equal(decode_frames(path, want), reference_decode(path, want)), want
    stats: dict = {}
    decode_frames(path, [35], stats=stats)
    assert stats["mode"] == "seek" and stats["packets"] <= 8


def test_errors_unchanged_on_seekable_file(synth_clips):
    path, _ = synth_clips[8, 0]
    with pytest.raises(BadVideoError, match=r"g8_b0\.mp4.*frame 64 requested but only 64"):
        decode_frames(path, [3, 64])
    assert decode_frames(path, []).shape == (0, 48, 64, 3)


def test_real_clips_match_sequential_decode(real_clips_dir):
    clips = sorted(real_clips_dir.glob("*.mp4")) + sorted(real_clips_dir.glob("*.avi"))
    assert clips
    modes = {}
    for path in clips:
        with av.open(str(path)) as c:
            n = sum(1 for p in c.demux(video=0) if p.size)
        rng = np.random.default_rng(len(path.name))
        sets = [[n - 1], [n - 3, 2, n // 2, n - 3, 0], rng.choice(n, 8).tolist()]
        if "1920x1080" in path.name:
            sets = sets[:2]  # big frames: keep the test quick
        for want in sets:
            stats: dict = {}
            got = decode_frames(path, want, stats=stats)
            assert np.array_equal(got, reference_decode(path, want)), (path.name, want)
            modes[path.name] = stats["mode"]
    # clips with several IDR frames (B-frames included) do skip GOPs
    assert modes["k400_arm_wrestling_340x256.mp4"] == "seek"


@pytest.mark.slow
def test_speedup_tsn_draw_gop16(tmp_path):
    """Prints (does not assert) the speed-up on a 300-frame 340x256 GOP-16 clip for a 16-frame TSN draw."""
    path = str(tmp_path / "tsn.mp4")
    write_video(path, pattern_frames(300, 340, 256), "h264", gop=16, bframes=0)
    seg = 300 / 16
    want = [int(seg * k + seg / 2) for k in range(16)]

    def best(fn, reps=3):
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return min(times), out

    t_seq, ref = best(lambda: reference_decode(path, want))
    stats: dict = {}
    t_seek, got = best(lambda: decode_frames(path, want, stats=stats))
    assert np.array_equal(got, ref)
    print(f"\nTSN 16/300, 340x256, GOP 16: sequential {t_seq * 1e3:.1f} ms, seeking {t_seek * 1e3:.1f} ms "
          f"(x{t_seq / t_seek:.2f}); {stats}")
