"""The same checks on the GPU (NVDEC ``mixed`` decoding, augmentation on the GPU). Skipped without CUDA.

Clips are H.264 (the production codec) at 160x128: NVDEC has minimum frame sizes (128x128 for VP9), so the tiny
96x72 CPU fixtures are not used here.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from dali_pipelines.color_jitter import OP_GRAYSCALE
from dali_pipelines.draw import draw_sample
from dali_pipelines.loader import build_loader
from dali_pipelines.pipelines import decode_with_dali
from dali_pipelines.pyav_io import decode_frames
from dali_pipelines.pyav_encode import write_video
from tests.test_pipelines import _check_test_views, _train_sample_reference
from tests.video_fixtures import (FrameMatcher, cuts_some_file, denormalize, make_clip_dataset, mark_rotated,
                                  pattern_frames, pixels_by_row, reference_clips, small_cfg)

pytestmark = pytest.mark.gpu

COUNTS = [24, 30, 3, 40, 26, 33, 28, 36, 25]


@pytest.fixture(scope="module")
def h264_data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("gpudata"))
    return root, make_clip_dataset(root, COUNTS, codec="h264", size=(160, 128))


def _gpu_cfg(root, train="", val="", **kw):
    return small_cfg(root, train, val, **{"DATA.DECODE_DEVICE": "gpu", "DATA.INPUT_SIZE": 64, **kw})


def test_h264_on_gpu_matches_pyav(real_clips_dir, tmp_path):
    """NVDEC frames for given indices are PyAV's frames at those indices, up to colour conversion."""
    names = ["clip_32frames_340x256.mp4", "k400_arm_wrestling_340x256.mp4", "clip_426x240_29.97fps.mp4",
             "clip_1920x1080_72frames.mp4"]
    paths = [str(p) for p in reference_clips(real_clips_dir, names)]
    synthetic = str(tmp_path / "pattern.mp4")
    write_video(synthetic, pattern_frames(48, 160, 128), codec="h264", gop=12)
    paths.append(synthetic)
    for path in paths:
        reference = decode_frames(path, range(min(72, _count(path))))
        n = len(reference)
        want = [0, n // 3, n - 1, 5 % n, n // 2, n // 2]
        (got,) = decode_with_dali([path], [want], device="mixed", device_id=0)
        assert got.shape == (len(want),) + reference.shape[1:]
        matcher = FrameMatcher(reference)
        for frame, k in zip(got, want):
            match, corr = matcher.best(frame)
            same = np.abs(reference[match].astype(int) - reference[k]).mean() < 1.0  # static neighbours tie
            assert (match == k or same) and corr > 0.97, (path, k, match, corr)
            assert np.abs(frame.astype(int) - reference[k]).mean() < 8.0, path  # colour conversion


def test_nvdec_does_not_apply_rotation_metadata(tmp_path):
    """Like the CPU routes (test_mixed_routes): a track marked as shown rotated by 90 degrees decodes on NVDEC to
    exactly the frames of the same file unmarked, in the coded orientation."""
    plain, marked = str(tmp_path / "plain.mp4"), str(tmp_path / "marked.mp4")
    write_video(plain, pattern_frames(24, 160, 128), codec="h264", gop=8)
    shutil.copyfile(plain, marked)
    mark_rotated(marked)
    want = [0, 9, 23, 9]
    (got,) = decode_with_dali([marked], [want], device="mixed", device_id=0)
    (ref,) = decode_with_dali([plain], [want], device="mixed", device_id=0)
    assert got.shape == (4, 128, 160, 3) and np.array_equal(got, ref)


def test_nvdec_index_past_end_is_an_error(tmp_path):
    """NVDEC never pads past the end either (the static-clip defect): the short decode names the file."""
    from dali_pipelines.pyav_open import BadVideoError

    path = str(tmp_path / "short.mp4")
    write_video(path, pattern_frames(20, 160, 128), codec="h264", gop=8)
    with pytest.raises(BadVideoError, match=r"frame 25 requested but the decoder finds only 20 frames"):
        decode_with_dali([path], [[3, 19, 25]], device="mixed", device_id=0)


@pytest.mark.parametrize("damage", ["replaced", "overstated"])
def test_nvdec_route_quarantines_a_video_shorter_than_indexed(h264_data, tmp_path, damage):
    """On the NVDEC route a video replaced after indexing (caught by its size/mtime before it is read) or one the
    index overstates (caught by the decoder) is quarantined by name, never delivered as repeated frames."""
    import dataclasses

    src_root, lst = h264_data
    root = str(tmp_path / "copy")
    shutil.copytree(src_root, root)
    loader = build_loader(_gpu_cfg(root, val=lst.replace(src_root, root)), "test", device_id=0)
    victim = loader.index.entries[1]
    if damage == "replaced":
        write_video(victim.path, pattern_frames(6, 160, 128), codec="h264", gop=8)
    else:
        info = loader.index.infos[1]
        loader.index.infos[1] = dataclasses.replace(info, num_frames=info.num_frames + 30)
    rows = [r for b in loader for r in b["index"].tolist()]
    assert rows == [r for r in range(len(COUNTS)) if r != 1]
    assert loader.stats["skipped_videos"] == 1 and loader.stats["skipped"][0].startswith(victim.path)
    # The file is at fault, not NVDEC: quarantined at once, not moved to PyAV to fail there again.
    assert loader.stats["route_fallbacks"] == 0
    assert ("changed since it was indexed" if damage == "replaced" else "shorter than its index says") in \
        loader.stats["skipped"][0]
    loader.close()


def _count(path):
    from dali_pipelines.index import probe_video

    return probe_video(path).num_frames


def test_train_on_gpu(h264_data):
    root, lst = h264_data
    cfg = _gpu_cfg(root, lst, **{"AUG.COLOR_JITTER": 0.0, "AUG.GRAY_SCALE": 0.0})
    loader = build_loader(cfg, "train", device_id=0)
    assert loader.device == "gpu" and loader.dtype == "float16"
    n = 0
    for batch in loader:
        v = batch["video"]
        assert v.is_cuda and v.dtype == torch.float16 and v.shape == (2, 4, 3, 64, 64)
        assert batch["label"].tolist() == [r % 3 for r in batch["index"].tolist()]
        assert batch["label"].is_pinned()  # training copies it to the GPU
        for video, row in zip(v, batch["index"].tolist()):
            ref, _ = _train_sample_reference(loader, row)
            assert np.abs(denormalize(video) - ref).mean() < 8.0
        n += 1
    assert n == len(loader) == len(COUNTS) // 2
    loader.close()


def test_clip_consistency_on_gpu(h264_data):
    """A clip whose frames are all one picture stays constant through the GPU augmentation graph."""
    root, lst = h264_data
    cfg = _gpu_cfg(root, lst, **{"AUG.COLOR_JITTER": 1.0, "AUG.GRAY_SCALE": 0.5})
    loader = build_loader(cfg, "train", device_id=0)
    def repeated(*args, **kwargs):  # the loader's own draw, with every frame index set to the clip's second
        s = draw_sample(*args, **kwargs)
        s.frames = np.full_like(s.frames, s.frames[1])
        return s

    loader.schedule.draw = repeated
    for batch in loader:
        v = batch["video"].float()
        assert float((v - v[:, :1]).abs().max()) == 0.0
        for clip, row in zip(v, batch["index"].tolist()):
            pix = denormalize(clip.cpu())[0]  # the first frame (S, S, 3), back in 8-bit units
            assert pix.std(axis=(0, 1)).max() > 5.0  # still a picture, not a constant
            spread = np.abs(pix[..., 0] - pix[..., 1]).max()
            if loader.sample(row).params.color_ops[-1] == OP_GRAYSCALE:
                assert spread <= 1.5, row  # grayscale: R = G = B
            else:
                assert spread > 10.0, row
    loader.close()


@pytest.mark.parametrize("num_clip,num_crop", [(1, 1), (2, 3)])
def test_multiview_on_gpu(h264_data, num_clip, num_crop):
    root, lst = h264_data
    cfg = _gpu_cfg(root, val=lst, **{"TEST.NUM_CLIP": num_clip, "TEST.NUM_CROP": num_crop, "TEST.BATCH_SIZE": 4})
    loader = build_loader(cfg, "test", device_id=0)
    rows = []
    for batch in loader:
        assert batch["video"].is_cuda
        # the evaluation reads labels and rows on the host: nothing there to pin
        assert not batch["label"].is_pinned() and not batch["index"].is_pinned()
        _check_test_views(loader, batch, tol_mean=8.0)
        rows += batch["index"].tolist()
    assert rows == list(range(len(COUNTS)))
    loader.close()


def test_sharding_and_resume_on_gpu(h264_data):
    root, lst = h264_data
    cfg = _gpu_cfg(root, lst, lst)
    ranks = [build_loader(cfg, "test", rank=r, world_size=2, device_id=0) for r in range(2)]
    rows = sorted(r for ld in ranks for b in ld for r in b["index"].tolist())
    assert rows == list(range(len(COUNTS)))
    train = [build_loader(cfg, "train", rank=r, world_size=2, device_id=0) for r in range(2)]
    assert len(train[0]) == len(train[1]) == len(COUNTS) // 4
    shares = [[r for b in ld for r in b["index"].tolist()] for ld in train]
    assert len(shares[0]) == len(shares[1]) == 4 and not set(shares[0]) & set(shares[1])  # disjoint shares
    for ld in ranks + train:
        ld.close()

    ref_loader = build_loader(cfg, "train", device_id=0)
    reference, states = [], []
    for b in ref_loader:
        reference.append((b["index"].cpu(), b["video"].cpu()))
        states.append(ref_loader.state_dict())
    ref_loader.close()
    loader = build_loader(cfg, "train", device_id=0)
    loader.load_state_dict(states[1])
    resumed = [(b["index"].cpu(), b["video"].cpu()) for b in loader]
    assert len(resumed) == len(reference) - 2
    for (ri, rv), (gi, gv) in zip(reference[2:], resumed):
        assert torch.equal(ri, gi) and torch.equal(rv, gv)
    loader.close()


def test_runtime_failure_on_gpu(tmp_path):
    root = str(tmp_path)
    lst = make_clip_dataset(root, [24, 30, 26, 33, 28, 25, 27], codec="h264", size=(160, 128))
    cfg = _gpu_cfg(root, lst, lst)
    test = build_loader(cfg, "test", device_id=0)
    victim = test.index.entries[3].path
    with open(victim, "wb") as f:
        f.write(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    rows = [r for b in test for r in b["index"].tolist()]
    assert rows == [0, 1, 2, 4, 5, 6]
    assert test.stats["skipped_videos"] == 1
    assert any(os.path.basename(victim) in s for s in test.stats["skipped"])
    test.close()


@pytest.mark.parametrize("bframes", [0, 2])
def test_nvdec_decodes_cut_streams_like_the_whole_file(real_clips_dir, tmp_path, bframes):
    """DATA.NVDEC_PACK_GOPS's premise: NVDEC, given the MP4 cut of a file (gop_pack), returns at the renumbered
    indices exactly the frames it returns from the whole file; a raw Kinetics clip (B-frames) and synthetic clips
    with a keyframe every 12 frames."""
    from dali_pipelines.gop_pack import pack_for_frames

    synthetic = str(tmp_path / f"pattern_b{bframes}.mp4")
    write_video(synthetic, pattern_frames(96, 160, 128), codec="h264", gop=12, bframes=bframes)
    kinetics, = reference_clips(real_clips_dir, ["k400_arm_wrestling_340x256.mp4"])
    for path, frames in ((synthetic, [95, 3, 40, 40, 61]), (str(kinetics), [279, 11, 140, 141, 233])):
        cut, new = pack_for_frames(np.fromfile(path, dtype=np.uint8), np.array(frames), min_saving=0.0)
        cut_path = str(tmp_path / "cut.mp4")
        cut.tofile(cut_path)
        (whole,) = decode_with_dali([path], [frames], device="mixed", device_id=0)
        (got,) = decode_with_dali([cut_path], [new.tolist()], device="mixed", device_id=0)
        assert np.array_equal(got, whole), (path, frames, new.tolist())


def test_loader_batches_identical_with_and_without_the_nvdec_cut(h264_data):
    root, lst = h264_data
    runs = {}
    for pack in (True, False):
        loader = build_loader(_gpu_cfg(root, lst, **{"DATA.NVDEC_PACK_GOPS": pack}), "train", device_id=0)
        route = loader.routes["nvdec"]
        assert route.pack_gops is pack
        assert not pack or cuts_some_file(route.pack_gops, loader, (0, 1, 3, 5))
        runs[pack] = [(b["index"].cpu(), b["video"].cpu()) for b in loader]
        loader.close()
    assert len(runs[True]) == len(runs[False]) > 0
    for (i1, v1), (i2, v2) in zip(runs[True], runs[False]):
        assert torch.equal(i1, i2) and torch.equal(v1, v2)


def _evaluate_on(loader_device: str, root: str, lst: str, wait_every_batch: bool) -> list:
    """Predictions of a small EVA on the multi-view loader; ``wait_every_batch`` makes the host wait for every
    forward, as a per-batch copy of the results to the host did."""
    from engine.distributed import DistContext
    from engine.evaluate import evaluate
    from models.eva import EVAVideoTransformer

    device = torch.device("cuda", 0) if loader_device == "gpu" else torch.device("cpu")
    torch.manual_seed(3)
    model = EVAVideoTransformer(img_size=64, num_frames=4, patch_size=16, num_classes=3, embed_dim=64, depth=2,
                                num_heads=2, mlp_hidden_dim=128).to(device)
    torch.nn.init.normal_(model.head.weight, std=3.0)  # probabilities that differ from video to video

    class WaitingForEveryForward(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, clips):
            logits = self.model(clips)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return logits

    cfg = small_cfg(root, "", lst, **{"DATA.DECODE_DEVICE": loader_device, "DATA.INPUT_SIZE": 64,
                                      "TEST.NUM_CLIP": 2, "TEST.NUM_CROP": 3, "TEST.BATCH_SIZE": 2})
    loader = build_loader(cfg, "test", device_id=0 if loader_device == "gpu" else None)
    try:
        return evaluate(WaitingForEveryForward() if wait_every_batch else model, loader, DistContext(device=device),
                        autocast_dtype=torch.bfloat16 if device.type == "cuda" else None)["predictions"]
    finally:
        loader.close()


def test_evaluation_on_gpu_equals_one_that_waits_for_every_batch(h264_data):
    """Evaluation keeps every batch's top-5 on the GPU and copies them to the host once after the loop, so the
    loader runs ahead of the model: the GPU buffers DALI hands over must stay valid until the forward that reads
    them has run. The results equal those of a run in which the host waits for every forward."""
    root, lst = h264_data
    ahead, waited = (_evaluate_on("gpu", root, lst, wait) for wait in (False, True))
    assert [p[:3] for p in ahead] == [p[:3] for p in waited] and len(ahead) == len(COUNTS)
    assert np.allclose([p[3] for p in ahead], [p[3] for p in waited], atol=1e-6)


def _h264_ramps(path: str, colorspace: int | None) -> None:
    """An H.264 clip of smooth saturated ramps, 160x128 (over NVDEC's minimum), tagged with the AVColorSpace
    ``colorspace`` (1: BT.709; None: untagged)."""
    import av

    yy, xx = np.mgrid[0:128, 0:160]
    frames = np.stack([np.stack([xx * 255 // 160, yy * 255 // 128, (xx + yy + 20 * t) % 256], -1)
                       for t in range(8)]).astype(np.uint8)
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 128, "yuv420p"
        if colorspace is not None:
            stream.codec_context.colorspace = colorspace
        for frame in frames:
            yuv = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
                format="yuv420p", dst_colorspace="ITU709" if colorspace == 1 else "ITU601")
            for packet in stream.encode(yuv):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_a_bt709_clip_has_the_same_colours_on_nvdec_as_on_pyav(tmp_path):
    """NVDEC converts with BT.601 whatever the tag (DALI's source); the graph maps its frames of a BT.709-tagged
    video to the tag's colours, PyAV's: as close to the PyAV route's as an untagged clip's (about 6 grey levels
    uncorrected on these ramps)."""
    from dali_pipelines import routing

    root = str(tmp_path)
    os.makedirs(os.path.join(root, "videos"))
    _h264_ramps(os.path.join(root, "videos", "bt709.mp4"), 1)
    _h264_ramps(os.path.join(root, "videos", "plain.mp4"), None)
    lst = os.path.join(root, "list.txt")
    with open(lst, "w") as f:
        f.write("videos/bt709.mp4 0\nvideos/plain.mp4 1\n")
    out = {}
    for device in ("gpu", "cpu"):
        cfg = small_cfg(root, lst, lst, **{"DATA.DECODE_DEVICE": device, "DATA.CPU_DECODER": "pyav",
                                           "DATA.NUM_WORKERS": 0, "AUG.COLOR_JITTER": 0.0, "AUG.GRAY_SCALE": 0.0})
        loader = build_loader(cfg, "val")
        assert loader.routes_in_use() == [routing.NVDEC if device == "gpu" else routing.PYAV]
        out[device] = pixels_by_row(loader)
    tagged, plain = (np.abs(out["gpu"][r] - out["cpu"][r]).mean() for r in (0, 1))
    assert tagged < plain + 0.5, (tagged, plain)
