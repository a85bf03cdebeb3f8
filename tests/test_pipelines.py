"""DALI graphs on the CPU: frame exactness of decoding, crop/flip/normalise geometry against a numpy reference,
per-clip consistency of augmentation, the multi-view test layout, and the real H.264 / MPEG-4 clips of
../shared/data/real through the PyAV route, frame by frame against an independent sequential PyAV decode."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from dali_pipelines import augment
from dali_pipelines.color_jitter import OP_GRAYSCALE, make_color_ops
from dali_pipelines.draw import train_params
from dali_pipelines.loader import build_loader
from dali_pipelines import routing
from dali_pipelines.graph_records import DecodedSource, EncodedSource, SampleRecord, TestParams, batch_columns
from dali_pipelines.pipelines import ROUTES, decode_with_dali, graph_of, one_batch_source, train_pipeline
from dali_pipelines.pipelines import test_pipeline as multiview_graph  # not a test: renamed for collection
from dali_pipelines.host_decode import decode_bytes_with_dali_cpu
from dali_pipelines.pyav_io import decode_frames
from dali_pipelines.pyav_open import BadVideoError
from dali_pipelines.sampling import multiview_indices, sample_rng, segment_indices
from dali_pipelines.pyav_encode import write_video
from tests.conftest import ROOT, child_env
from tests.video_fixtures import (FrameMatcher, best_match, denormalize, make_clip_dataset, pattern_frames,
                                  pixels_by_row, reference_clips, roi_resize_ref, small_cfg)


@pytest.fixture(scope="module")
def vp9_clip(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("clip") / "pattern.webm")
    write_video(path, pattern_frames(48), codec="vp9", gop=12)  # 4 keyframes: seeks land mid-GOP
    return path


@pytest.fixture(scope="module")
def vp9_data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("vp9data"))
    lst = make_clip_dataset(root, [24, 30, 3, 40, 26, 33])
    portrait = make_clip_dataset(root, [20, 28], size=(72, 96), list_name="portrait.txt")
    return root, lst, portrait


def test_vp9_frames_exact(vp9_clip):
    """The frames DALI decodes for given indices (any order, duplicates) are PyAV's frames at those indices."""
    reference = decode_frames(vp9_clip, range(48))
    want = [0, 5, 13, 31, 47, 47, 2, 24]
    (got,) = decode_with_dali([vp9_clip], [want], device="cpu")
    assert got.shape == (len(want), 72, 96, 3) and got.dtype == np.uint8
    for frame, k in zip(got, want):
        match, corr = best_match(frame, reference)
        assert match == k and corr > 0.98, (k, match, corr)
        assert np.abs(frame.astype(int) - reference[k]).mean() < 3.0


def _write_ramps(path: str, colorspace: int | None, num_frames: int = 4, full_range: bool = False) -> str:
    """A VP9 clip of smooth saturated ramps (the matrices differ, chroma upsampling hardly), tagged with the
    AVColorSpace ``colorspace`` (1: BT.709; None: untagged), full-range when ``full_range``."""
    import av

    yy, xx = np.mgrid[0:72, 0:96]
    frames = np.stack([np.stack([xx * 255 // 96, yy * 255 // 72, (xx + yy + 40 * t) % 256], -1)
                       for t in range(num_frames)]).astype(np.uint8)
    with av.open(path, "w") as out:
        stream = out.add_stream("libvpx-vp9", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        ctx = stream.codec_context
        if colorspace is not None:
            ctx.colorspace = ctx.color_primaries = ctx.color_trc = colorspace
        if full_range:
            ctx.color_range = 2  # AVCOL_RANGE_JPEG
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_a_bt709_tag_is_followed_by_pyav_but_not_by_dalis_cpu_decoder(tmp_path):
    """DALI's CPU decoder converts a stream tagged BT.709 with BT.601, as an untagged one; PyAV, like the original's
    decord, converts it with the tagged BT.709. The dali_cpu route's worker corrects DALI's frames to the tag's
    colours (colour.py), with the tag the index's probe recorded."""
    import av

    from dali_pipelines.host_decode import decode_with_dali_cpu
    from dali_pipelines.index import probe_video

    path = _write_ramps(str(tmp_path / "bt709.webm"), 1)
    with av.open(path) as container:
        decoded = list(container.decode(video=0))
    assert len(decoded) == 4 and decoded[0].colorspace == 1
    as601, as709 = (np.stack([f.to_ndarray(format="rgb24", src_colorspace=cs) for f in decoded]).astype(float)
                    for cs in ("itu601", "itu709"))
    gap = np.abs(as601 - as709).mean()
    assert gap > 3.0  # the pattern's colours tell the two matrices apart
    (dali,) = decode_with_dali([path], [[0, 1, 2, 3]], device="cpu")
    assert np.abs(dali - as601).mean() < gap / 3 < np.abs(dali - as709).mean()
    assert np.abs(decode_frames(path, range(4)) - as709).mean() < 0.5
    info = probe_video(path)
    assert info.colorspace == "bt709"
    routed = decode_with_dali_cpu(path, [0, 1, 2, 3], info.size, info.mtime_ns, info.codec,
                                  colorspace=info.colorspace)
    assert np.abs(routed - as709).mean() < np.abs(dali - as601).mean() + 0.3 < gap / 3


def test_an_untagged_clip_leaves_dalis_cpu_decoder_unchanged(tmp_path):
    """Untagged (BT.601) video: the dali_cpu route's frames are DALI's, bit for bit."""
    from dali_pipelines.host_decode import decode_with_dali_cpu
    from dali_pipelines.index import probe_video

    path = _write_ramps(str(tmp_path / "plain.webm"), None)
    info = probe_video(path)
    assert info.colorspace == "unknown"
    (dali,) = decode_with_dali([path], [[3, 0, 2]], device="cpu")
    routed = decode_with_dali_cpu(path, [3, 0, 2], info.size, info.mtime_ns, info.codec, colorspace=info.colorspace)
    assert np.array_equal(routed, dali)


@pytest.mark.parametrize("tag, full_range, name", [(1, True, "bt709"), (9, False, "bt2020nc"), (7, False, "smpte240m")],
                         ids=["bt709-full-range", "bt2020nc", "smpte240m"])
def test_other_tags_and_full_range_get_pyavs_colours_on_dalis_cpu_route(tmp_path, tag, full_range, name):
    """Other matrices, and full-range video (DALI's CPU decoder follows the range flag as PyAV does, so the same
    map holds): the dali_cpu route's frames are as close to PyAV's as an untagged clip's."""
    from dali_pipelines.host_decode import decode_with_dali_cpu
    from dali_pipelines.index import probe_video

    def gaps(path):
        info = probe_video(path)
        pyav = decode_frames(path, range(4)).astype(float)
        raw = decode_with_dali_cpu(path, range(4), info.size, info.mtime_ns, info.codec)
        routed = decode_with_dali_cpu(path, range(4), info.size, info.mtime_ns, info.codec,
                                      colorspace=info.colorspace)
        return info.colorspace, np.abs(raw - pyav).mean(), np.abs(routed - pyav).mean()

    _, _, plain = gaps(_write_ramps(str(tmp_path / "plain.webm"), None, full_range=full_range))
    colorspace, raw, routed = gaps(_write_ramps(str(tmp_path / "tagged.webm"), tag, full_range=full_range))
    assert colorspace == name and raw > plain + 2.0, (raw, plain)
    assert routed < plain + 0.3, (routed, plain)


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_bt709_clip_has_the_same_colours_on_dalis_cpu_route_as_on_pyavs(tmp_path, split):
    """The graphs' output for a VP9 clip tagged BT.709 on DALI's CPU route is PyAV's (as close as for an untagged
    clip, whose two routes differ only by chroma upsampling): DALI's BT.601 colours are corrected to the tag's."""
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "videos"))
    _write_ramps(os.path.join(root, "videos", "bt709.webm"), 1, num_frames=8)
    _write_ramps(os.path.join(root, "videos", "plain.webm"), None, num_frames=8)
    lst = os.path.join(root, "list.txt")
    with open(lst, "w") as f:
        f.write("videos/bt709.webm 0\nvideos/plain.webm 1\n")
    out = {}
    for decoder in ("dali", "pyav"):
        cfg = small_cfg(root, lst, lst, **{"AUG.COLOR_JITTER": 0.0, "AUG.GRAY_SCALE": 0.0,
                                           "DATA.CPU_DECODER": decoder, "DATA.NUM_WORKERS": 0})
        loader = build_loader(cfg, split)
        assert loader.routes_in_use() == [routing.DALI_CPU if decoder == "dali" else routing.PYAV]
        out[decoder] = pixels_by_row(loader)
    tagged, plain = (np.abs(out["dali"][r] - out["pyav"][r]).mean() for r in (0, 1))
    print(f"{split}: mean |DALI CPU route - PyAV route| = {tagged:.2f} grey levels tagged BT.709, {plain:.2f} untagged")
    assert tagged < plain + 0.5 and tagged < 2.0, (tagged, plain)  # uncorrected: about 6 grey levels


def test_index_past_end_is_an_error_naming_the_file(vp9_clip):
    """Frames past the end are never padded (a static clip of the last frame): the sampler never asks past the
    index's count, so a decoder that finds fewer frames means the file is not what the index says."""
    with pytest.raises(BadVideoError, match=rf"{vp9_clip}: frame 48 requested but the decoder finds only 48 frames"):
        decode_with_dali([vp9_clip], [[46, 47, 48, 60]], device="cpu")
    (got,) = decode_with_dali([vp9_clip], [[46, 47]], device="cpu")  # the last real frames still decode
    reference = decode_frames(vp9_clip, range(48))
    assert got.shape == (2, 72, 96, 3)
    for frame, k in zip(got, (46, 47)):  # those frames, not any bright picture
        assert best_match(frame, reference)[0] == k and np.abs(frame.astype(int) - reference[k]).mean() < 3.0, k


def test_encoded_bytes_decode_like_the_file_and_errors_name_the_video(vp9_clip):
    """What the loader re-decodes when a graph fails: the bytes the graph was given (here gop_pack's cut of the
    file, renumbered indices) decode to the whole file's frames, and a short one is a BadVideoError naming it."""
    from dali_pipelines.gop_pack import pack_for_frames
    from dali_pipelines.pipelines import decode_encoded_with_dali

    want = [40, 3, 40, 17]
    (whole,) = decode_with_dali([vp9_clip], [want], device="cpu")
    encoded = np.fromfile(vp9_clip, dtype=np.uint8)
    cut, new = pack_for_frames(encoded, np.asarray(want))
    assert cut.size < encoded.size and list(new) != want  # a real cut: fewer bytes, renumbered frames
    (got,) = decode_encoded_with_dali([cut], [new], device="cpu", name=vp9_clip)
    assert np.array_equal(got, whole)
    with pytest.raises(BadVideoError, match=rf"{vp9_clip}: frame 60 requested but the decoder finds only 48 frames"):
        decode_encoded_with_dali([encoded], [[1, 60]], device="cpu", name=vp9_clip)


def _train_sample_reference(loader, row):
    """Expected (T, S, S, 3) pixels of a training sample, recomputed from its (seed, epoch, row) generator."""
    info = loader.index.infos[row]
    rng = sample_rng(loader.seed, loader.epoch, row)
    frames = segment_indices(info.num_frames, loader.num_frames, rng)
    aug = augment.draw_train_aug(rng, info.width, info.height, loader.input_size, loader.num_frames,
                                 jitter_prob=0.0, gray_prob=0.0)
    ref = roi_resize_ref(decode_frames(loader.index.entries[row].path, frames), aug.roi_start, aug.roi_end,
                         loader.input_size)
    return ref[:, :, ::-1] if aug.mirror else ref, aug


@pytest.mark.parametrize("decoder", ["dali", "pyav"])
def test_train_geometry_matches_reference(vp9_data, decoder):
    """MultiScaleCrop + resize + flip + normalise in the graph equal a numpy reference of the same parameters."""
    root, lst, _ = vp9_data
    cfg = small_cfg(root, lst, **{"AUG.COLOR_JITTER": 0.0, "AUG.GRAY_SCALE": 0.0, "DATA.CPU_DECODER": decoder,
                                  "DATA.NUM_WORKERS": 0})
    loader = build_loader(cfg, "train")
    mirrors = set()
    for batch in loader:
        for video, row in zip(batch["video"], batch["index"].tolist()):
            ref, aug = _train_sample_reference(loader, row)
            mirrors.add(aug.mirror)
            got = denormalize(video)  # (T, S, S, 3)
            err = np.abs(got - ref)
            # PyAV frames are the reference's own frames: only resampling rounding is left. DALI's VP9 decode
            # converts YUV to RGB slightly differently (chroma upsampling at sharp edges): ~1-2 levels on average.
            assert err.mean() < (1.0 if decoder == "pyav" else 3.0), (row, err.mean())
            flipped = np.abs(got - ref[:, :, ::-1]).mean()
            assert flipped > 3 * err.mean() + 1  # the check can tell a flipped clip from a correct one
    assert mirrors == {0, 1}
    loader.close()


def _record(source, aug, row: int) -> SampleRecord:
    return SampleRecord(source=source, params=train_params(aug), index=np.array(row, np.int32))


def _decoded(record: SampleRecord) -> SampleRecord:
    """A record of encoded bytes as the dali_cpu route hands it to the graph: decoded by DALI's CPU decoder."""
    if isinstance(record.source, DecodedSource):
        return record
    video = decode_bytes_with_dali_cpu(record.source.encoded, record.source.frames)
    return SampleRecord(DecodedSource(video=video), record.params, record.index)


def _run_train_graph(records, per_frame=False, size=24, routes=None):
    """Run the host training graph once on hand-made records (encoded bytes + frames, decoded first by DALI's CPU
    decoder as on the dali_cpu route, or decoded frames; ``routes``: the graph's routes, by default the one the
    records' source belongs to)."""
    if routes is None:
        routes = "pyav" if isinstance(records[0].source, DecodedSource) else "dali_cpu"
    records = [_decoded(r) for r in records]
    source = one_batch_source(batch_columns(records))
    pipe = train_pipeline(source, input_size=size, routes=routes, dtype="float32", per_frame_jitter=per_frame,
                          batch_size=len(records), num_threads=1, device_id=None)
    pipe.build()
    video, index = pipe.run()
    assert np.array(index.as_tensor()).reshape(-1).tolist() == [int(r.index) for r in records]
    return [np.array(video[i]) for i in range(len(records))]


def test_every_frame_of_a_clip_gets_the_same_augmentation(vp9_clip):
    """A clip made of one frame repeated stays constant over time through crop, flip, jitter and grayscale."""
    enc = np.fromfile(vp9_clip, np.uint8)
    samples, augs = [], []
    for k in range(6):
        rng = np.random.default_rng(k)
        augs.append(augment.draw_train_aug(rng, 96, 72, 24, 6, jitter_prob=1.0, gray_prob=0.5))
        samples.append(_record(EncodedSource(encoded=enc, frames=np.full(6, 7 + k, np.int32)), augs[-1], k))
    outs = _run_train_graph(samples)
    for s, out in zip(samples, outs):
        assert out.shape == (6, 3, 24, 24)
        assert np.abs(out - out[0]).max() == 0.0
        pix = out[0] * np.array([58.395, 57.12, 57.375])[:, None, None] + np.array([123.675, 116.28, 103.53])[
            :, None, None]
        channel_spread = np.abs(pix[0] - pix[1]).max()
        if s.params.color_ops[-1] == OP_GRAYSCALE:
            assert channel_spread <= 1.5  # grayscale: R = G = B
        else:
            assert channel_spread > 10
    # per-frame jitter (the original's behaviour) does change frames of the same picture
    a = augment.draw_train_aug(np.random.default_rng(99), 96, 72, 24, 6, jitter_prob=1.0, gray_prob=0.0,
                               per_frame_jitter=True)
    out = _run_train_graph([_record(samples[0].source, a, 0)], per_frame=True)[0]
    assert np.abs(out[1:] - out[0]).max() > 0.1


def _bilinear(frames: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """cv2.resize(INTER_LINEAR) of (F, H, W, 3) uint8 frames to uint8, as the original's mmcv.imresize: half-pixel
    centres, edge clamp, no antialias, rounded to 8 bits."""
    h, w = frames.shape[1:3]

    def axis(n_out, n_in):
        c = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(c).astype(int)
        return i0, np.minimum(i0 + 1, n_in - 1), (c - i0).astype(np.float32)

    y0, y1, wy = axis(out_h, h)
    x0, x1, wx = axis(out_w, w)
    f = frames.astype(np.float32)
    rows = f[:, y0] * (1 - wy)[None, :, None, None] + f[:, y1] * wy[None, :, None, None]
    out = rows[:, :, x0] * (1 - wx)[None, None, :, None] + rows[:, :, x1] * wx[None, None, :, None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def test_train_crop_matches_the_originals_two_resizes():
    """The one-pass crop samples the source where the original's Resize(short side) -> MultiScaleCrop ->
    Resize(S, S) -> Flip did: on linear ramps, which bilinear filtering reproduces exactly wherever it samples, the
    graph's pixels equal that two-resize chain's up to its 8-bit roundings (a sampling position off by half an
    output pixel moves R by 2 levels or more)."""
    src_w, src_h, size = 48, 36, 24  # short side 27 (int(24 * 256 / 224)), so the window is resized 36 x 27
    y, x = np.mgrid[0:src_h, 0:src_w]
    frame = np.stack([5 * x, 7 * y, 2 * x + 3 * y], axis=-1).astype(np.uint8)  # 0..235, 0..245, 0..199
    frames = np.repeat(frame[None], 2, axis=0)
    records, expected, windows, mirrors = [], [], set(), set()
    for k in range(12):
        aug = augment.draw_train_aug(np.random.default_rng(k), src_w, src_h, size, 2, jitter_prob=0.0,
                                     gray_prob=0.0)
        # the original's chain, on the window the same draw picks (the crop is the draw's first choice)
        res_w, res_h = augment.resized_size(src_w, src_h, augment.short_side_for(size))
        x0, y0, cw, ch = augment.multiscale_crop(np.random.default_rng(k), res_w, res_h, size)
        windows.add((x0, y0, cw, ch))
        mirrors.add(aug.mirror)
        ref = _bilinear(_bilinear(frames, res_h, res_w)[:, y0:y0 + ch, x0:x0 + cw], size, size)
        expected.append(ref[:, :, ::-1] if aug.mirror else ref)
        records.append(_record(DecodedSource(video=frames), aug, k))
    assert len(windows) > 6 and mirrors == {0, 1}  # several crop sizes and offsets, flipped or not
    for got, ref in zip(_run_train_graph(records, size=size), expected):
        pix = denormalize(got)
        err = np.abs(pix - ref)[:, 1:-1, 1:-1]  # the borders clamp differently in one pass and in two
        assert err.max() <= 1.5, err.max()


@pytest.mark.parametrize("num_crop", [1, 3])
def test_test_crops_match_the_originals_resize_and_crop(num_crop):
    """The test views sample the source where the original's Resize -> CenterCrop (short side S * 256 / 224) or
    Resize -> ThreeCrop (short side S) did, checked on linear ramps as the training crop is above."""
    src_w, src_h, size = 48, 36, 24
    y, x = np.mgrid[0:src_h, 0:src_w]
    frames = np.repeat(np.stack([5 * x, 7 * y, 2 * x + 3 * y], axis=-1).astype(np.uint8)[None], 2, axis=0)
    rois = augment.test_view_rois(src_w, src_h, size, num_crop)
    params = TestParams(roi_start=np.stack([r[0] for r in rois]), roi_end=np.stack([r[1] for r in rois]),
                        new_order=np.arange(2 * num_crop, dtype=np.int32))
    record = SampleRecord(source=DecodedSource(video=frames), params=params, index=np.array(0, np.int32))
    pipe = multiview_graph(one_batch_source(batch_columns([record])), input_size=size, num_crop=num_crop,
                           routes="pyav", dtype="float32", batch_size=1, num_threads=1, device_id=None)
    pipe.build()
    video, _ = pipe.run()
    got = denormalize(np.array(video[0])).reshape(num_crop, 2, size, size, 3)
    if num_crop == 1:  # 48 x 36 -> 36 x 27, centre crop at (6, 1)
        resized = _bilinear(frames, 27, 36)
        refs = [resized[:, 1:1 + size, 6:6 + size]]
    else:  # 48 x 36 -> 32 x 24, crops at x = 0, 4, 8 (the original's order: 0, 8, 4)
        resized = _bilinear(frames, 24, 32)
        refs = [resized[:, :, k * 4:k * 4 + size] for k in range(3)]
    for view, ref in zip(got, refs):
        assert np.abs(view - ref)[:, 1:-1, 1:-1].max() <= 1.0


def _plain_full_decode(path: str) -> np.ndarray:
    """Every frame in presentation order from one sequential PyAV decode (independent of dali_pipelines)."""
    import av

    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _check_test_views(loader, batch, tol_mean=2.5, independent=False):
    """Each view of ``batch`` is its clip's frames in its crop. ``independent``: the reference frames come from a
    plain sequential decode instead of ``decode_frames`` (which the PyAV route itself uses)."""
    s = loader.input_size
    for video, row in zip(batch["video"], batch["index"].tolist()):
        info = loader.index.infos[row]
        clips = multiview_indices(info.num_frames, loader.num_frames, loader.num_clip)
        rois = augment.test_view_rois(info.width, info.height, s, loader.num_crop)
        path = loader.index.entries[row].path
        decoded = _plain_full_decode(path) if independent else decode_frames(path, range(info.num_frames))
        assert len(decoded) == info.num_frames, (path, len(decoded), info.num_frames)
        got = denormalize(video)  # (V, T, S, S, 3)
        assert got.shape == (loader.num_views, loader.num_frames, s, s, 3)
        for c, (start, end) in enumerate(rois):
            every = roi_resize_ref(decoded, start, end, s)  # this crop of every frame of the video
            matcher = FrameMatcher(every)
            for k in range(loader.num_clip):
                view = got[c * loader.num_clip + k]
                ref = every[clips[k]]
                assert np.abs(view - ref).mean() < tol_mean, (row, c, k, np.abs(view - ref).mean())
                for t in range(loader.num_frames):
                    match, _ = matcher.best(view[t])
                    # the best-matching frame is the requested one (or an identical-looking repeat)
                    assert np.abs(every[match] - every[clips[k][t]]).mean() < 1.0, (row, c, k, t, match)
                if loader.num_crop == 3 and c != 1:  # the other windows really differ from this one
                    other = roi_resize_ref(decoded[clips[k]], *rois[2 - c], s)
                    assert np.abs(view - other).mean() > 2 * np.abs(view - ref).mean()


@pytest.mark.parametrize("num_clip,num_crop", [(1, 1), (2, 3)])
def test_multiview_views_vp9(vp9_data, num_clip, num_crop):
    root, lst, portrait = vp9_data
    for list_path in (lst, portrait):
        cfg = small_cfg(root, val_list=list_path, **{"TEST.NUM_CLIP": num_clip, "TEST.NUM_CROP": num_crop,
                                                      "TEST.BATCH_SIZE": 3})
        loader = build_loader(cfg, "test")
        rows = []
        for batch in loader:
            _check_test_views(loader, batch)
            rows += batch["index"].tolist()
        assert rows == loader.index.good_rows
        loader.close()


def test_h264_real_clips_through_pyav_route(real_clips_dir, tmp_path):
    """Real H.264 (and MPEG-4) files on the CPU: the loader picks PyAV decoding; every view holds the requested
    frames (numbered by an independent sequential decode), cropped as specified."""
    names = ["clip_32frames_340x256.mp4", "clip_6fps_340x256.mp4", "clip_426x240_29.97fps.mp4",
             "clip_mpeg4_320x240.avi"]
    reference_clips(real_clips_dir, names)
    lst = tmp_path / "real.txt"
    lst.write_text("".join(f"{n} {i % 3}\n" for i, n in enumerate(names)))
    cfg = small_cfg(str(real_clips_dir), val_list=str(lst), **{"TEST.NUM_CLIP": 2, "TEST.NUM_CROP": 3,
                                                                 "DATA.NUM_FRAMES": 3, "DATA.INPUT_SIZE": 48})
    loader = build_loader(cfg, "test")
    assert loader.cpu_decoder == "pyav"
    rows = []
    for batch in loader:
        _check_test_views(loader, batch, tol_mean=1.0, independent=True)
        rows += batch["index"].tolist()
    assert rows == list(range(len(names)))
    loader.close()


# ----------------------------------------------------------------------------------------------------------------
# Real H.264 / MPEG-4 clips (B-frames, odd sizes and frame rates): frame numbering against an independent reference
# ----------------------------------------------------------------------------------------------------------------
REAL_CLIPS = ["clip_32frames_340x256.mp4", "clip_6fps_340x256.mp4", "clip_426x240_29.97fps.mp4",
              "clip_340x256_30fps.mp4", "k400_arm_wrestling_340x256.mp4", "clip_mpeg4_320x240.avi",
              "clip_1920x1080_72frames.mp4"]


def _sequential_reference(path: str, roi_start, roi_end, size: int) -> np.ndarray:
    """Every frame of ``path`` in presentation order, from one plain sequential PyAV decode (no seeking, no
    threading options, nothing from dali_pipelines), each cut to the source window ``[roi_start, roi_end)`` and
    resized to ``size`` as the graph does: (N, size, size, 3) float32. Resizing frame by frame keeps the memory
    small even for the 1080p clip."""
    import av

    with av.open(path) as container:
        return np.stack([roi_resize_ref(f.to_ndarray(format="rgb24")[None], roi_start, roi_end, size)[0]
                         for f in container.decode(video=0)])


def _assert_requested_frame(view: np.ndarray, want: int, ref: np.ndarray, what) -> None:
    """``view`` (S, S, 3) is reference frame ``want``: highly correlated with it, best match among all frames."""
    match, corr = best_match(view, ref)
    assert corr > 0.97, (what, want, match, corr)
    if match != want:
        # Only acceptable when the file itself repeats the picture (a duplicated frame): then the two reference
        # frames are the same image and no comparison could tell them apart.
        assert np.abs(ref[match] - ref[want]).mean() < 0.25, (what, "best match", match, "requested", want, corr)
    assert np.abs(view - ref[want]).mean() < 1.5, (what, want, np.abs(view - ref[want]).mean())


def test_real_clips_train_frames_match_sequential_decode(real_clips_dir, tmp_path):
    """The training loader on real H.264 and MPEG-4 files (CPU: the PyAV route into the DALI graph), augmentation
    neutralised (no flip, no colour change, full-size crops): every output frame is the requested frame of the
    video, as numbered by an independent sequential full decode. This checks the presentation-order numbering
    (B-frames reorder decode and display) and the frame counts of the index, at indices spread over each clip."""
    names = REAL_CLIPS
    reference_clips(real_clips_dir, names)
    lst = tmp_path / "real.txt"
    lst.write_text("".join(f"{n} {i % 3}\n" for i, n in enumerate(names)))
    t, size = 8, 64
    cfg = small_cfg(str(real_clips_dir), train_list=str(lst), **{
        "DATA.NUM_FRAMES": t, "DATA.INPUT_SIZE": size, "TRAIN.BATCH_SIZE": 1, "AUG.FLIP": 0.0,
        "AUG.COLOR_JITTER": 0.0, "AUG.GRAY_SCALE": 0.0, "AUG.CROP_SCALES": [1.0]})
    loader = build_loader(cfg, "train")
    assert loader.cpu_decoder == "pyav"
    seen = []
    for batch in loader:  # one batch per video; the epoch (hence each sample's draw) is still 0 inside the loop
        row = int(batch["index"][0])
        sample = loader.sample(row)  # the frames and crop the loader drew for this row
        n = loader.index.infos[row].num_frames
        frames = sample.frames.tolist()
        assert int(sample.params.mirror) == 0 and float(sample.params.saturation) == 1.0
        assert len(frames) == t and frames[-1] >= (t - 2) * n // t  # spread over the clip, up to its late part
        path = loader.index.entries[row].path
        ref = _sequential_reference(path, sample.params.roi_start, sample.params.roi_end, size)
        assert len(ref) == n, (path, "index counts", n, "a full decode yields", len(ref))
        video = denormalize(batch["video"][0])  # (T, S, S, 3)
        for k, want in enumerate(frames):
            _assert_requested_frame(video[k], want, ref, (os.path.basename(path), k))
        seen.append(row)
    assert sorted(seen) == list(range(len(names)))
    loader.close()


def test_real_clips_late_and_unordered_indices_pyav_route(real_clips_dir):
    """Hand-picked indices (the last frames, out of order, repeated) decoded by the PyAV route and passed through
    the DALI training graph with an identity augmentation: each is the same-numbered frame of a sequential full
    decode."""
    from dali_pipelines.index import probe_video

    names = REAL_CLIPS
    reference_clips(real_clips_dir, names)
    size = 64
    for name in names:
        path = str(real_clips_dir / name)
        info = probe_video(path)
        n = info.num_frames
        want = [n - 1, 0, n // 2, n - 2, n // 5, 3 * n // 4, 1, n - 1, n - 3]
        start = np.zeros(2, np.float32)
        end = np.array([info.height, info.width], np.float32)
        identity = augment.TrainAug(start, end, 0, np.array(1, np.float32), np.array(1, np.float32),
                                    np.array(1, np.float32), np.array(0, np.float32),
                                    make_color_ops(np.arange(4), False, False))
        record = _record(DecodedSource(video=decode_frames(path, want, 1)), identity, 0)
        (out,) = _run_train_graph([record], size=size)
        video = denormalize(out)
        ref = _sequential_reference(path, start, end, size)
        assert len(ref) == n, (name, n, len(ref))
        for k, w in enumerate(want):
            _assert_requested_frame(video[k], w, ref, (name, k))


def test_the_graph_knows_every_route_routing_can_choose():
    """routing.ROUTES names the routes (and their order); the graph has an entry for each and no other: NVDEC's
    graph decodes EncodedSource records ('mixed'); both CPU routes decode in the worker processes and share the host
    graph, which takes their frames."""
    assert tuple(ROUTES) == routing.ROUTES
    assert [(ROUTES[r].backend, ROUTES[r].source, graph_of(r)) for r in routing.ROUTES] == [
        ("mixed", EncodedSource, "nvdec"), (None, DecodedSource, "host"), (None, DecodedSource, "host")]
    with pytest.raises(ValueError, match="not served by one graph"):
        train_pipeline(one_batch_source(()), input_size=8, routes=("nvdec", "pyav"), dtype="float32",
                       batch_size=1, num_threads=1, device_id=None)


def test_dali_cpu_route_decodes_in_a_worker_what_dalis_decoder_decodes(vp9_clip):
    """The dali_cpu route's worker function returns exactly what DALI's decoder makes of the whole file: GOP-cut
    or not, unordered and repeated indices, in the order asked; its pipeline is built once per process; a frame past
    the end is a BadVideoError naming the file."""
    from dali_pipelines import host_decode

    want = [3, 9, 9, 30, 47, 11]
    whole_file = decode_with_dali([vp9_clip], [want])[0]
    cut = host_decode.decode_with_dali_cpu(vp9_clip, want, 0, 0, "vp9", pack=True)
    pipe = host_decode._PIPELINE
    uncut = host_decode.decode_with_dali_cpu(vp9_clip, want, 0, 0, "vp9", pack=False)
    assert host_decode._PIPELINE is pipe  # reused, not rebuilt per video
    assert cut.shape == (6, 72, 96, 3) and cut.dtype == np.uint8
    assert np.array_equal(cut, whole_file) and np.array_equal(uncut, whole_file)
    assert np.array_equal(cut[1], cut[2]) and not np.array_equal(cut[0], cut[3])
    with pytest.raises(BadVideoError, match=re.escape(vp9_clip) + ": frame 5000 requested but the decoder finds only "
                       "48 frames"):
        host_decode.decode_with_dali_cpu(vp9_clip, [0, 5000], 0, 0, "vp9", pack=False)


def test_one_graph_serves_both_cpu_routes_in_the_planned_order(vp9_clip):
    """The host graph built for both CPU routes augments frames from either and returns every clip, colour program
    included, bit-identical to the graph of its own route, in the batch's order, for a batch whose routes
    interleave."""
    from dali_pipelines import host_decode

    frames = [np.array([3, 9, 9, 30, 47, 11], np.int32), np.array([0, 12, 24, 36, 40, 44], np.int32)]
    records = []
    for k in range(5):
        rng = np.random.default_rng(10 + k)
        aug = augment.draw_train_aug(rng, 96, 72, 24, 6, jitter_prob=1.0, gray_prob=0.3)
        wanted = frames[k % 2]
        video = (host_decode.decode_with_dali_cpu(vp9_clip, wanted, 0, 0, "vp9") if k % 2 == 0
                 else decode_frames(vp9_clip, wanted))
        records.append(_record(DecodedSource(video=video), aug, 100 + k))
    alone = [_run_train_graph([r], routes=("dali_cpu", "pyav")[k % 2])[0] for k, r in enumerate(records)]
    shared = _run_train_graph(records, routes=("dali_cpu", "pyav"))
    assert len(shared) == len(records)
    for k, (a, b) in enumerate(zip(alone, shared)):
        assert a.shape == b.shape == (6, 3, 24, 24)
        assert np.array_equal(a, b), (k, np.abs(a - b).max())
    assert not np.array_equal(shared[0], shared[2])  # different draws: the comparison can fail


def test_converting_graph_code_ahead_logs_a_failure_and_tries_again_later(monkeypatch, caplog):
    from dali_pipelines import pipelines

    def broken(*args, **kwargs):
        raise RuntimeError("no such operator")

    monkeypatch.setattr(pipelines, "train_pipeline", broken)
    kwargs = dict(dtype="float32", input_size=17, unique_to_this_test=True)  # a key no real graph uses
    with caplog.at_level("WARNING", logger="dali_pipelines.pipelines"):
        pipelines.convert_graph_code(**kwargs)  # logged, not raised
    assert "could not convert the training graph's code ahead (RuntimeError: no such operator)" in caplog.text
    calls = []
    monkeypatch.setattr(pipelines, "train_pipeline", lambda *a, **k: calls.append(k))
    pipelines.convert_graph_code(**kwargs)
    pipelines.convert_graph_code(**kwargs)
    assert len(calls) == 1 and calls[0]["routes"] == ("dali_cpu", "pyav")  # retried once it can work, then kept


_PAGE_FAULTS_SCRIPT = """
import argparse, resource
from benchmarks.augment_throughput import build, make_batch, _output
args = argparse.Namespace(batch=2, num_frames=16, height=256, width=340, input_size=224, threads=1, device="cpu")
pipe = build(args, "planes", make_batch(args, "all"))  # the training graph's augmentation, every colour op
_output(pipe)  # warm-up: the pool takes its memory here
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    _output(pipe)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_graph_buffers_come_from_dalis_pool_not_fresh_pages():
    """Importing the graphs sets DALI_MALLOC_POOL_THRESHOLD (unless the environment has it): the training graph's
    per-sample buffers (3.2 MB planes at 16 x 224 x 224) are then reused from DALI's pool instead of being mapped
    afresh by malloc, which showed as page faults. With DALI's own default (32M) the same three batches fault many
    times more."""

    def page_faults(threshold: str | None) -> int:
        env = child_env()
        env.pop("DALI_MALLOC_POOL_THRESHOLD", None)  # the child's import of the graphs sets the default
        if threshold:
            env["DALI_MALLOC_POOL_THRESHOLD"] = threshold
        done = subprocess.run([sys.executable, "-c", _PAGE_FAULTS_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return int(done.stdout.split()[-1])

    pooled, dali_default = page_faults(None), page_faults("32M")
    assert pooled * 4 < dali_default, (pooled, dali_default)
