"""gop_pack: the cut streams decode to exactly the requested frames, and the loader gives identical batches with and
without cutting."""

from __future__ import annotations

import io
import os

import av
import numpy as np
import pytest

from dali_pipelines.gop_pack import pack_for_frames
from dali_pipelines.loader import build_loader
from dali_pipelines.pipelines import decode_with_dali
from dali_pipelines.pyav_encode import write_video
from tests.video_fixtures import (best_match, cuts_some_file, make_clip_dataset, pattern_frames, reference_clips,
                                  small_cfg)

N, GOP = 40, 8
SOURCE = pattern_frames(N, 64, 48, seed=3)  # every clip's frames, before encoding


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("gop_pack")
    out = {}
    for codec, ext in (("vp9", ".webm"), ("vp8", ".webm"), ("mjpeg", ".avi"), ("h264", ".mp4")):
        path = str(root / f"c_{codec}{ext}")
        write_video(path, SOURCE, codec=codec, gop=GOP)
        out[codec] = path
    return root, out


def _decode_packed(tmp, path, frames):
    data = np.fromfile(path, dtype=np.uint8)
    packed = pack_for_frames(data, np.asarray(frames), min_saving=0.0)  # cut even where nothing is saved
    assert packed is not None, f"{path}: expected a cut stream for {frames}"
    ivf, new = packed
    cut = os.path.join(tmp, "cut.ivf")
    ivf.tofile(cut)
    return decode_with_dali([cut], [new])[0], new


@pytest.mark.parametrize("codec", ["vp9", "vp8", "mjpeg"])
def test_cut_stream_decodes_the_same_pixels(clips, codec):
    root, paths = clips
    rng = np.random.default_rng(0)
    draws = [[3], [N - 1], [2, 2, 30, 9], [17, 5, 6, 33, 34]] + [rng.integers(0, N, 4).tolist() for _ in range(3)]
    for frames in draws:
        want = decode_with_dali([paths[codec]], [frames])[0]
        got, new = _decode_packed(str(root), paths[codec], frames)
        assert got.shape == want.shape and np.array_equal(got, want), (codec, frames)
        # and they are the requested frames of the source pattern (DALI's numbering, checked independently)
        assert [best_match(frame, SOURCE)[0] for frame in got] == frames, (codec, frames)
        # renumbering keeps the request's order and duplicates
        assert [a == b for a in frames for b in frames] == [a == b for a in new.tolist() for b in new.tolist()]


def test_cut_keeps_only_gop_prefixes(clips):
    root, paths = clips
    data = np.fromfile(paths["vp9"], dtype=np.uint8)
    # frames 10 and 12 (GOP 8..15) and 33 (GOP 32..39): packets 8..12 and 32..33 are needed
    ivf, new = pack_for_frames(data, np.array([33, 10, 12]))
    assert new.tolist() == [6, 2, 4]
    assert int.from_bytes(ivf[24:28].tobytes(), "little") == 7  # the IVF header's frame count
    # MJPEG is all keyframes: exactly the distinct requested frames are kept
    ivf, new = pack_for_frames(np.fromfile(paths["mjpeg"], dtype=np.uint8), np.array([30, 4, 4]))
    assert new.tolist() == [1, 0, 0] and int.from_bytes(ivf[24:28].tobytes(), "little") == 2


def test_left_whole_when_cutting_does_not_apply(clips):
    root, paths = clips
    vp9 = np.fromfile(paths["vp9"], dtype=np.uint8)
    assert pack_for_frames(vp9, np.array([0, 1, 2, 3])) is None  # nothing to save: the first GOP's prefix
    assert pack_for_frames(vp9, np.array([5, N])) is None  # past the end: left to the decoder's padding
    assert pack_for_frames(vp9, np.array([], dtype=np.int64)) is None
    mpeg4 = os.path.join(str(root), "c_mpeg4.avi")
    write_video(mpeg4, SOURCE, codec="mpeg4", gop=GOP)
    assert pack_for_frames(np.fromfile(mpeg4, dtype=np.uint8), np.array([30])) is None  # codec not cut
    assert pack_for_frames(np.frombuffer(b"not a video" * 50, dtype=np.uint8), np.array([30])) is None


def _sequential(video) -> np.ndarray:
    """Every frame of a file or of encoded bytes, decoded one after another from the first (no seeking)."""
    with av.open(io.BytesIO(video.tobytes()) if isinstance(video, np.ndarray) else video) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.mark.parametrize("bframes", [0, 2])
def test_h264_cut_into_mp4_decodes_to_the_requested_frames(tmp_path, bframes):
    """H.264 (NVDEC's route) is cut into MP4: decoded plainly from its first packet, the cut stream holds the
    requested frames at the renumbered positions, bit for bit what the whole file gives, B-frames or not."""
    path = str(tmp_path / f"b{bframes}.mp4")
    write_video(path, SOURCE, codec="h264", gop=GOP, bframes=bframes)
    data = np.fromfile(path, dtype=np.uint8)
    whole = _sequential(path)
    rng = np.random.default_rng(1)
    draws = [[N - 1], [3, 3, 30, 17], [12, 13, 14]] + [rng.integers(0, N, 5).tolist() for _ in range(3)]
    for frames in draws:
        packed = pack_for_frames(data, np.array(frames), min_saving=0.0)
        assert packed is not None, frames
        cut, new = packed
        got = _sequential(cut)
        assert np.array_equal(got[new], whole[frames]), (bframes, frames)
        assert [best_match(g, SOURCE)[0] for g in got[new]] == frames
        # only the GOP prefixes: the last frame needs its GOP's 8 packets, not all N
        if frames == [N - 1]:
            assert len(got) == GOP and new.tolist() == [GOP - 1]
    assert pack_for_frames(data, np.array([2])) is None  # nothing to save within the first GOP


def test_real_kinetics_clip_with_b_frames_cut_into_mp4(real_clips_dir):
    """A raw Kinetics clip (H.264 with B-frames, long GOPs): the cut stream's frames are the whole file's, and it
    holds fewer frames than the file."""
    path, = reference_clips(real_clips_dir, ["k400_arm_wrestling_340x256.mp4"])
    data = np.fromfile(path, dtype=np.uint8)
    whole = _sequential(str(path))
    for frames in ([len(whole) - 1, 0, 140, 140], [11, 75, 85, 141, 175, 233]):
        cut, new = pack_for_frames(data, np.array(frames), min_saving=0.0)
        got = _sequential(cut)
        assert np.array_equal(got[new], whole[frames]), frames
        assert len(got) < len(whole)


@pytest.mark.parametrize("split", ["train", "val"])
def test_loader_batches_identical_with_and_without_cutting(tmp_path, split):
    root = str(tmp_path)
    lst = make_clip_dataset(root, [40, 33, 48, 36], gop=GOP)
    extra = {"TEST.NUM_CLIP": 2, "TEST.NUM_CROP": 1, "TEST.BATCH_SIZE": 2, "TEST.SAMPLING": "uniform"}
    runs = {}
    for pack in (True, False):
        cfg = small_cfg(root, lst, lst, **{"DATA.CPU_PACK_GOPS": pack, **extra})
        loader = build_loader(cfg, split)
        route = loader.routes["dali_cpu"]
        assert loader.route == "dali_cpu" and route.pack_gops is pack
        assert not pack or cuts_some_file(route.pack_gops, loader, range(4))
        runs[pack] = [(b["index"].clone(), b["video"].clone()) for b in loader]
        loader.close()
    assert len(runs[True]) == len(runs[False]) > 0
    for (i1, v1), (i2, v2) in zip(runs[True], runs[False]):
        assert i1.tolist() == i2.tolist() and torch_equal(v1, v2)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_nvdec_route_cuts_h264_only_when_asked(tmp_path):
    """The NVDEC route's file reads cut H.264 into MP4 with DATA.NVDEC_PACK_GOPS (off by default)."""
    from dali_pipelines.draw import Sample, VideoRef
    from dali_pipelines.decode_routes import EncodedRoute
    from dali_pipelines.routing import NVDEC

    path = str(tmp_path / "c.mp4")
    write_video(path, SOURCE, codec="h264", gop=GOP)
    st = os.stat(path)
    video = VideoRef(row=0, path=path, label=0, num_frames=N, width=64, height=48, codec="h264", size=st.st_size,
                     mtime_ns=st.st_mtime_ns)
    sample = Sample(video=video, route=NVDEC, frames=np.array([33, 5, 33]), params=None)
    cut = EncodedRoute(NVDEC, 1, pack_gops=True).load(sample)
    assert cut.encoded.size < st.st_size / 2  # the prefixes of two of the five GOPs
    assert cut.frames[0] == cut.frames[2] != cut.frames[1]
    assert [best_match(f, SOURCE)[0] for f in _sequential(cut.encoded)[cut.frames]] == [33, 5, 33]
    whole = EncodedRoute(NVDEC, 1, pack_gops=False).load(sample)
    assert whole.encoded.size == st.st_size and whole.frames.tolist() == [33, 5, 33]


def test_hevc_cut_into_mp4_decodes_to_the_requested_frames(tmp_path):
    """HEVC with a keyframe every 8 frames (x265's defaults otherwise: B-frames, open GOPs where it chooses): the
    cut stream's frames are the whole file's at the renumbered positions."""
    path = str(tmp_path / "c.mp4")
    try:
        av.codec.Codec("libx265", "w")
    except av.codec.codec.UnknownCodecError:  # an FFmpeg build without x265; a failing encode is a failure
        pytest.skip("no libx265 encoder in this FFmpeg")
    with av.open(path, "w") as out:
        params = f"keyint={GOP}:min-keyint={GOP}:log-level=0"
        s = out.add_stream("libx265", rate=25, options={"x265-params": params})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for frame in SOURCE:
            out.mux(s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")))
        out.mux(s.encode())
    whole = _sequential(path)
    data = np.fromfile(path, dtype=np.uint8)
    for frames in ([N - 1], [3, 3, 30, 17], [12, 13, 25, 38]):
        cut, new = pack_for_frames(data, np.array(frames), min_saving=0.0)
        got = _sequential(cut)
        assert np.array_equal(got[new], whole[frames]), frames
    assert len(_sequential(pack_for_frames(data, np.array([N - 1]), min_saving=0.0)[0])) < N


def test_an_edit_list_that_hides_frames_is_not_cut_into_ivf(tmp_path):
    """VP9 in MP4 with an edit list that hides its first 3 frames (a cut without re-encoding): the IVF cut would show
    the hidden frames and shift every frame by 3, so the file is decoded whole; DALI's route then gives the frames
    PyAV numbers (frame k is the k-th frame shown)."""
    from dali_pipelines.host_decode import decode_with_dali_cpu
    from dali_pipelines.pyav_encode import cut_with_edit_list

    whole, path = str(tmp_path / "whole.mp4"), str(tmp_path / "edit.mp4")
    write_video(whole, SOURCE, codec="vp9", gop=GOP)
    cut_with_edit_list(whole, path, 3)
    with av.open(path) as c:
        ref = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(ref) == N - 3
    frames = np.array([20, 30])
    assert pack_for_frames(np.fromfile(path, dtype=np.uint8), frames, min_saving=0.0) is None
    st = os.stat(path)
    for pack in (True, False):
        got = decode_with_dali_cpu(path, frames, st.st_size, st.st_mtime_ns, "vp9", pack)
        assert [best_match(g, np.stack(ref))[0] for g in got] == frames.tolist(), pack  # was [17, 27] with the cut
