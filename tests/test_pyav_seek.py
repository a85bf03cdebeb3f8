"""decode_frames skips GOPs without requested frames, and returns exactly what a decode from frame 0 returns."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from dali_pipelines.pyav_io import decode_frames
from dali_pipelines.pyav_open import BadVideoError
from dali_pipelines.pyav_encode import write_video
from tests.video_fixtures import best_match, count_demuxes, pattern_frames


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
    except av.codec.codec.UnknownCodecError:
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


# ---------------------------------------------------------------------------------------------------- VideoReader
def decoded_times(path: str) -> np.ndarray:
    """Seconds after the first frame of every frame a plain decode returns, from their own timestamps (sorted: an
    AVI's frames carry their packets' decode-order stamps)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        pts = np.sort(np.array([f.pts for f in container.decode(stream)], dtype=np.int64))
        return (pts - pts[0]) * float(stream.time_base)


@pytest.mark.parametrize("gop, bframes", [(8, 0), (16, 2)])
def test_a_reader_demuxes_once_for_all_its_requests(synth_clips, monkeypatch, gop, bframes):
    """decode_frames demuxed the whole file for every request: a sliding window's batches over a long video cost
    the square of its length. A VideoReader demuxes it once; each request returns what decode_frames returns (the
    sequential decode's frames, served the same way: the packets fed differ, as a reader's runs are left open for
    the next request), and its frame times are the decoded frames' own."""
    from dali_pipelines.pyav_io import VideoReader

    path, _ = synth_clips[gop, bframes]
    requests = [[0, 2, 4], [8, 10, 12, 13], [62, 63], [5, 1], [], [3, 3, 40], list(range(64))[::-1]]
    separately = []
    for want in requests:
        stats: dict = {}
        separately.append((decode_frames(path, want, stats=stats), stats))
    demuxes = count_demuxes(monkeypatch)
    with VideoReader(path) as reader:
        times = reader.frame_times()
        for want, (frames, stats) in zip(requests, separately):
            got: dict = {}
            assert np.array_equal(reader.frames(want, stats=got), frames), want
            assert got.get("mode") == stats.get("mode"), want  # (an empty request fills none)
            if want:
                assert np.array_equal(frames, reference_decode(path, want)), want
        with pytest.raises(BadVideoError, match=r"frame 64 requested but only 64"):  # decode_frames' error
            reader.frames([3, 64])
        assert reader.demux_passes == 1
    assert demuxes == [path]  # (the sequential decode that words the error decodes, demuxing nothing)
    assert np.allclose(times, decoded_times(path))


def test_a_reader_recovers_from_a_request_that_fell_back(synth_clips, monkeypatch):
    """A request whose runs do not come out as planned is redone from frame 0 (here: an open file, rewound for
    it); the reader's next requests still skip GOPs and give the exact frames."""
    import dataclasses

    from dali_pipelines import pyav_io

    path, _ = synth_clips[16, 2]
    real = pyav_io._decode_runs
    calls = []

    def second_fails(stream, plan, wanted, stats):
        calls.append(wanted)
        if len(calls) == 2:  # every frame's timestamp unknown: the run's check fails after packets were fed
            plan = dataclasses.replace(plan, rank={})
        return real(stream, plan, wanted, stats)

    monkeypatch.setattr(pyav_io, "_decode_runs", second_fails)
    with open(path, "rb") as f, pyav_io.VideoReader(f) as reader:
        for want, mode in (([40, 41], "seek"), ([50, 20], "sequential"), ([60, 33], "seek")):
            stats: dict = {}
            assert np.array_equal(reader.frames(want, stats=stats), reference_decode(path, want)), want
            assert stats["mode"] == mode, want
        assert reader.demux_passes == 1


def test_a_reader_on_real_clips_equals_one_decode_per_request(real_clips_dir):
    """A sliding window's batches through one reader are decode_frames' frames batch by batch (H.264 with B-frames
    that seeks, an MPEG-4 AVI decoded from frame 0 each time, a 29.97 fps clip)."""
    from dali_pipelines.pyav_io import VideoReader

    for name in ("k400_arm_wrestling_340x256.mp4", "clip_mpeg4_320x240.avi", "clip_426x240_29.97fps.mp4"):
        path = str(real_clips_dir / name)
        with av.open(path) as c:
            n = sum(1 for p in c.demux(video=0) if p.size)
        batches = [np.unique(np.minimum(np.arange(s, s + 48, 3), n - 1)) for s in range(0, n, 40)]
        with VideoReader(path) as reader:
            assert np.allclose(reader.frame_times(), decoded_times(path)), name
            for want in batches:
                assert np.array_equal(reader.frames(want), decode_frames(path, want)), (name, want)


@pytest.fixture(scope="module")
def long_gop(tmp_path_factory) -> dict[int, str]:
    """400 frames in GOPs of 100 (x264), without and with B-frames."""
    root = tmp_path_factory.mktemp("long_gop")
    src = pattern_frames(400, 64, 48)
    paths = {}
    for bframes in (0, 2):
        paths[bframes] = str(root / f"g100_b{bframes}.mp4")
        write_video(paths[bframes], src, "h264", gop=100, bframes=bframes)
    return paths


@pytest.mark.parametrize("bframes, threads", [(0, 1), (2, 0)])
def test_a_reader_request_after_where_the_previous_one_stopped_goes_on_from_there(long_gop, bframes, threads):
    """Windows with short gaps in a long GOP: every batch restarted at the clean cut before its first frame and
    decoded again the packets the batch before it had decoded (up to a GOP per batch). A reader's runs go on from
    where the previous request's stopped, through a clean cut it reaches: no packet is fed twice, the frames are
    decode_frames' own. A request past the next clean cut, or going back, restarts at its cut."""
    from dali_pipelines.pyav_io import VideoReader

    path = long_gop[bframes]
    # every 3rd frame of windows of 48 every 50: gaps of 2 frames, two batches per GOP
    batches = [list(range(s, s + 48, 3)) for s in (0, 50, 100, 150)]
    fed, alone = [], []
    with VideoReader(path, threads) as reader:
        for b, want in enumerate(batches):
            stats: dict = {}
            assert np.array_equal(reader.frames(want, stats=stats), reference_decode(path, want)), want
            fed.append(stats["packets"])
            one: dict = {}
            assert np.array_equal(decode_frames(path, want, threads, stats=one), reference_decode(path, want)), want
            alone.append(one["packets"])
            assert stats["mode"] == one["mode"] and stats["runs"] == (b == 0), (want, stats)
        assert reader.runs_gone_on == 3
        # every packet from the first to where the decode stopped, once (the decoder's delay included); restarting
        # per batch, batches 2 and 4 fed the 50 packets of batches 1 and 3 again
        assert sum(fed) == reader._stopped[0] + 1 < sum(alone) - 50, (fed, alone)
        for want, gone_on in (([350, 370, 351], 3), ([10, 12], 3), ([40, 60], 4)):  # past a cut; back; on
            stats = {}
            assert np.array_equal(reader.frames(want, stats=stats), reference_decode(path, want)), want
            assert stats["runs"] == int(gone_on == 3) and reader.runs_gone_on == gone_on, (want, stats)


def test_a_reader_decodes_ahead_only_for_a_next_request_that_goes_on(long_gop):
    """Leaving the decoder open feeds it on past a request's packets by its delay (frame threads, B-frames), wasted
    where the next request restarts at a later clean cut or none follows. Told the next request's first frame
    (``then``), a reader drains the decoder as decode_frames does (the same packets) unless that request goes on."""
    from dali_pipelines.pyav_io import VideoReader

    path = long_gop[2]
    want = list(range(50, 98, 3))
    alone: dict = {}
    decode_frames(path, want, stats=alone)
    # none follows; past the next cut but one (200); not after this request's frames; in this GOP; in the next one,
    # whose cut (100) is within MERGE_GAP packets of the run's last (95's packet or a B-frame's after it); unknown
    for then, left_open in ((-1, False), (250, False), (95, False), (99, True), (150, True), (None, True)):
        with VideoReader(path) as reader:
            stats: dict = {}
            assert np.array_equal(reader.frames(want, stats, then=then), reference_decode(path, want)), then
            assert (reader._stopped is not None) == left_open, then
            if not left_open:
                assert stats == alone, then


@pytest.mark.parametrize("held", [0, 3])  # packets held before the limit is crossed
def test_a_reader_past_its_packet_limit_keeps_timestamps_only_and_decodes_in_order(synth_clips, real_clips_dir,
                                                                                     held):
    """A reader held every compressed packet of its video until closed: gigabytes for an hour of HD video in the
    sliding-window mode. Past ``max_held_bytes`` it keeps their timestamps only (the same frame times) and decodes
    sequentially, going on from request to request: the same frames, one decode from frame 0 while the requests
    increase, and no packet held."""
    from dali_pipelines.pyav_io import VideoReader

    clips = [synth_clips[16, 2][0], str(real_clips_dir / "k400_arm_wrestling_340x256.mp4")]
    for path in clips:
        with av.open(path) as c:
            sizes = [p.size for p in c.demux(video=0) if p.size]
        limit = sum(sizes[:held])
        requests = [[0, 2, 4], [8, 10, 12, 13], [40, 30], [41, 62, 63]]
        with VideoReader(path) as holding, VideoReader(path, max_held_bytes=limit) as light:
            assert np.allclose(light.frame_times(), holding.frame_times()), path
            for want in requests:
                stats: dict = {}
                assert np.array_equal(light.frames(want, stats=stats), holding.frames(want)), (path, want)
                assert stats["mode"] == "sequential", (path, want)
            assert holding.holds_packets and not light.holds_packets
            assert light.sequential_starts == 1 and light.demux_passes == 1
            assert not any(isinstance(p, av.Packet) for p in light._numbered.packets), path
            with pytest.raises(BadVideoError, match="requested but only"):
                light.frames([10_000])
            assert light.frames([1]).shape[0] == 1 and light.sequential_starts == 2  # back: from frame 0 again


def test_frames_are_converted_through_one_swscale_context_per_decode_as_to_ndarray_does(tmp_path, monkeypatch):
    """``frame.to_ndarray(format="rgb24")`` set up a new swscale context for every frame (on the demo's 64x48
    clips most of the decode's time). One context per decode gives the same pixels, tag and range followed."""
    from av.video.reformatter import ColorRange, Colorspace

    from dali_pipelines import pyav_io

    rgb = pattern_frames(12, 64, 48)
    plain, tagged = tmp_path / "plain.mp4", tmp_path / "bt709_full.mp4"
    write_video(str(plain), rgb, codec="h264", fps=25, gop=4)
    with av.open(str(tagged), "w") as out:  # BT.709, full range: both follow the frame's tags
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        stream.codec_context.colorspace, stream.codec_context.color_range = 1, 2
        for frame in rgb:
            yuv = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
                format="yuvj420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.JPEG)
            for packet in stream.encode(yuv):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    made, real = [], pyav_io.VideoReformatter

    def counted():
        made.append(real())
        return made[-1]

    monkeypatch.setattr(pyav_io, "VideoReformatter", counted)
    for path in (plain, tagged):
        with av.open(str(path)) as c:
            expected = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        made.clear()
        wanted = [11, 0, 5, 5, 7]
        assert np.array_equal(decode_frames(str(path), wanted), expected[wanted])
        assert len(made) == 1


# ---------------------------------------------------------------------------------------- a sequential decode goes on
@pytest.fixture(scope="module")
def unskippable(tmp_path_factory) -> dict[str, str]:
    """48 frames in streams that cannot be skipped through: MPEG-4 Part 2 (only its first packet may start a run:
    every request decodes from frame 0) and raw H.264 (no timestamps: the frames cannot be numbered from the demux,
    every request takes the sequential fallback)."""
    root = tmp_path_factory.mktemp("unskippable")
    src = pattern_frames(48, 64, 48)
    paths = {"mpeg4": str(root / "m.avi"), "raw": str(root / "r.h264")}
    write_video(paths["mpeg4"], src, "mpeg4", gop=8)
    write_video(paths["raw"], src, "h264", gop=8)
    for kind, path in paths.items():
        stats: dict = {}
        decode_frames(path, [40], stats=stats)
        assert stats["mode"] == "sequential" and (stats["packets"] == -1) == (kind == "raw"), (kind, stats)
    return paths


class TrackedContainer:
    """A container that records its closing and, with ``fail_at``, raises a decode error before that frame."""

    def __init__(self, container, fail_at: int | None):
        self._container, self._fail_at, self.closed = container, fail_at, False

    def __getattr__(self, attr):
        return getattr(self._container, attr)

    def close(self):
        self.closed = True
        self._container.close()

    def decode(self, *args, **kwargs):
        for n, frame in enumerate(self._container.decode(*args, **kwargs)):
            if n == self._fail_at:
                raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
            yield frame


def track_containers(monkeypatch, fail_at: int | None = None) -> list[TrackedContainer]:
    """Every container pyav_io opens from now on (``open_video`` is patched where pyav_io looks it up)."""
    from dali_pipelines import pyav_io

    opened: list[TrackedContainer] = []
    real = pyav_io.open_video

    def tracked(src, name=""):
        opened.append(TrackedContainer(real(src, name), fail_at))
        return opened[-1]

    monkeypatch.setattr(pyav_io, "open_video", tracked)
    return opened


@pytest.mark.parametrize("kind", ["mpeg4", "raw"])
def test_a_reader_goes_on_from_where_its_sequential_decode_stopped(unskippable, kind):
    """Where a stream cannot be skipped through, every request of a reader decoded from frame 0 again: a sliding
    window's batches over a long video cost the square of its length. The reader keeps its sequential decode, and a
    request that starts at or after where it stopped goes on from there (``runs`` 0, ``frames`` counted from there);
    every request returns what decode_frames returns."""
    from dali_pipelines.pyav_io import VideoReader

    path = unskippable[kind]
    requests = [[2, 0, 7], [9, 8, 15], [16, 30, 16], [31], [47, 41]]
    # (runs, frames) of each request: the kept decode starts at the first and goes on (MPEG-4's first request was
    # served from the demuxed packets, as decode_frames serves its one, and its second decoded frames 0-7 again)
    served = [(1, 8), (0, 8), (0, 15), (0, 1), (0, 16)]
    with VideoReader(path) as reader:
        for want, (runs, frames) in zip(requests, served):
            stats: dict = {}
            assert np.array_equal(reader.frames(want, stats=stats), decode_frames(path, want)), want
            assert np.array_equal(decode_frames(path, want), reference_decode(path, want)), want
            assert (stats["mode"], stats["runs"], stats["frames"]) == ("sequential", runs, frames), want
        assert reader.sequential_starts == 1


@pytest.mark.parametrize("source", ["path", "file", "bytes"])
def test_a_reader_request_before_where_its_sequential_decode_stopped_starts_again(unskippable, source):
    """A request for an earlier frame decodes from frame 0 again (an open file is rewound for it), and the next
    ones go on from there."""
    from dali_pipelines.pyav_io import VideoReader

    for kind, path in unskippable.items():
        with open(path, "rb") as f:
            src = {"path": path, "file": f, "bytes": Path(path).read_bytes()}[source]
            with VideoReader(src) as reader:
                for want in ([5, 20], [30], [10, 3, 25], [26, 40]):
                    stats: dict = {}
                    assert np.array_equal(reader.frames(want, stats=stats), reference_decode(path, want)), want
                assert (stats["runs"], stats["frames"]) == (0, 15), kind  # [26, 40] went on from [10, 3, 25]
                assert reader.sequential_starts == 2, kind  # the second: [10, 3, 25]


def test_errors_of_a_sequential_decode_that_went_on_are_decode_frames_own(unskippable, monkeypatch):
    """A frame past the end, and a decode error, are worded as decode_frames words them (the frame count from frame
    0, not from where the request went on); the decode ends there, and the next request starts from frame 0."""
    from dali_pipelines.pyav_io import VideoReader

    def check(path: str, failing: list[int], message: str, after: list[int], frames: int | None) -> None:
        """Two requests that go on, then ``failing`` fails as decode_frames does; ``after`` starts from 0."""
        with pytest.raises(BadVideoError) as alone:
            decode_frames(path, failing)
        with VideoReader(path) as reader:
            reader.frames([failing[0] // 5])
            reader.frames([failing[0] - 5])
            with pytest.raises(BadVideoError) as going_on:
                reader.frames(failing)
            assert str(going_on.value) == str(alone.value) == f"{path}: {message}"
            stats: dict = {}
            assert np.array_equal(reader.frames(after, stats=stats), reference_decode(path, after))
            assert stats["runs"] == 1 and reader.sequential_starts == 2
            assert frames is None or stats["frames"] == frames

    for path in unskippable.values():
        check(path, [20, 48], "frame 48 requested but only 48 frames could be decoded", [12, 47], None)
    track_containers(monkeypatch, fail_at=30)  # every request decodes sequentially, through the containers tracked
    check(unskippable["raw"], [25, 40], "decode error after 30 frames (Invalid data found when processing input)",
          [21, 29], 30)


def test_closing_a_reader_closes_its_kept_sequential_decode(unskippable, monkeypatch):
    from dali_pipelines.pyav_io import VideoReader

    for path in unskippable.values():
        opened = track_containers(monkeypatch)
        reader = VideoReader(path)
        reader.frames([3])
        reader.frames([10])
        reader.frames([2])  # starts again: the first sequential decode is closed
        assert len(opened) == 3 and opened[1].closed and not opened[2].closed, path
        reader.close()
        assert all(c.closed for c in opened), path
