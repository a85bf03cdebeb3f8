"""NVDEC's support rule, the machine checks for the GPU route, and the demo's clips against both."""

from __future__ import annotations

import av
import pytest

from dali_pipelines.nvdec_support import (NVDEC_LIMITS, chroma_and_bit_depth, dali_cuda_major, gpu_decode_problems,
                                          nvdec_refusal)
from tests.conftest import ROOT


@pytest.mark.parametrize("pix_fmt, expected", [
    ("yuv420p", ("420", 8)), ("yuvj420p", ("420", 8)), ("yuv420p10le", ("420", 10)), ("yuv444p", ("444", 8)),
    ("yuv422p10le", ("422", 10)), ("yuv444p12le", ("444", 12)), ("nv12", ("420", 8)), ("gray", ("400", 8)),
])
def test_chroma_and_bit_depth(pix_fmt, expected):
    assert chroma_and_bit_depth(pix_fmt) == expected


# (codec, width, height, pix_fmt, compute capability) -> None where accepted, else the reason given
CASES = [
    ("h264", 64, 48, "yuv420p", (9, 0), None),
    ("h264", 48, 16, "yuv420p", (9, 0), None),         # exactly the minimum
    ("h264", 46, 48, "yuv420p", (9, 0), "46x48 is below NVDEC's h264 minimum of 48x16"),
    ("h264", 4096, 2160, "yuv420p", (9, 0), None),
    ("h264", 4100, 2160, "yuv420p", (9, 0), "4100x2160 is above NVDEC's h264 maximum of 4096x4096"),
    ("h264", 640, 360, "yuv444p", (9, 0), "NVDEC does not decode h264 with 4:4:4 chroma (yuv444p)"),
    ("h264", 640, 360, "yuv420p10le", (9, 0), "NVDEC does not decode 10-bit h264 (yuv420p10le)"),
    ("hevc", 144, 144, "yuv420p", (9, 0), None),
    ("hevc", 128, 144, "yuv420p", (9, 0), "128x144 is below NVDEC's hevc minimum of 144x144"),
    # HEVC 4:4:4 is in the hardware, not in DALI's NV12 output
    ("hevc", 640, 360, "yuv444p", (9, 0),
     "DALI's NVDEC decoder outputs 4:2:0 only; hevc with 4:4:4 chroma (yuv444p) goes to the CPU"),
    ("vp9", 64, 48, "yuv420p", (9, 0), "64x48 is below NVDEC's vp9 minimum of 128x128"),  # the old demo clips
    ("vp9", 128, 128, "yuv420p", (9, 0), None),
    ("vp8", 64, 48, "yuv420p", (9, 0), None),
    ("mpeg4", 2048, 1080, "yuv420p", (9, 0), "2048x1080 is above NVDEC's mpeg4 maximum of 2032x2032"),
    ("av1", 640, 360, "yuv420p", (9, 0), "this GPU (compute capability 9.0) has no AV1 decoder"),  # Hopper
    ("av1", 640, 360, "yuv420p", (8, 0), "this GPU (compute capability 8.0) has no AV1 decoder"),  # nor GA100
    ("av1", 640, 360, "yuv420p", (8, 6), None),        # GA10x has
    ("av1", 640, 360, "yuv420p", (10, 0), None),       # Blackwell has
    ("mjpeg", 640, 360, "yuvj420p", (9, 0), "NVDEC does not decode mjpeg"),  # the CPU route takes it
    ("theora", 640, 360, "yuv420p", (9, 0), "NVDEC does not decode theora"),
]


@pytest.mark.parametrize("codec, w, h, pix_fmt, cc, refusal", CASES)
def test_nvdec_rule(codec, w, h, pix_fmt, cc, refusal):
    # the reason itself: it is what the route report and the loader's error show the user
    assert nvdec_refusal(codec, w, h, pix_fmt, compute_capability=cc) == refusal


def test_nvdec_rule_settings_narrow_and_widen():
    assert nvdec_refusal("hevc", 640, 360, "yuv420p10le") == (  # 8 bits by default
        "10-bit video is above the configured maximum of 8 bits for NVDEC (yuv420p10le)")
    assert nvdec_refusal("hevc", 640, 360, "yuv420p10le", max_bit_depth=10) is None
    assert nvdec_refusal("h264", 640, 360, "yuv420p10le", max_bit_depth=10) == (  # the hardware limit stays
        "NVDEC does not decode 10-bit h264 (yuv420p10le)")
    assert nvdec_refusal("vp9", 640, 360, "yuv420p", codecs={"h264", "hevc"}) == (
        "vp9 is not among the codecs configured for NVDEC (h264, hevc)")
    assert nvdec_refusal("h264", 640, 360, "yuv420p", codecs={"h264"}) is None


def test_gpu_decode_problems_name_the_cause_and_the_fix():
    assert gpu_decode_problems(driver_cuda=(13, 0), dali_cuda=13, nvcuvid=True) == []
    assert gpu_decode_problems(driver_cuda=(12, 8), dali_cuda=12, nvcuvid=True) == []
    (mismatch,) = gpu_decode_problems(driver_cuda=(12, 4), dali_cuda=13, nvcuvid=True)
    assert "CUDA 13" in mismatch and "12.4" in mismatch and "cuda12" in mismatch
    (missing,) = gpu_decode_problems(driver_cuda=(13, 0), dali_cuda=13, nvcuvid=False)
    assert "libnvcuvid.so.1" in missing and "video" in missing
    # both causes, each once: a missing DALI is named, not compared with the driver's CUDA
    assert gpu_decode_problems(driver_cuda=(12, 4), dali_cuda=None, nvcuvid=False) == [
        "NVIDIA DALI is not installed: install the project with the cuda13 extra (or cuda12 for a CUDA 12 driver)",
        missing]


def test_installed_dali_is_the_locked_cuda13_build():
    assert dali_cuda_major() == 13


def test_demo_clips_meet_nvdec_minimums_and_are_8bit_420(tmp_path):
    # What `make demo` writes (the generator's defaults), a few clips of it.
    from tools.make_synthetic_dataset import main

    assert main(["--out", str(tmp_path), "--train-per-class", "1", "--val-per-class", "1", "--quiet"]) == 0
    clips = sorted((tmp_path / "videos").rglob("*.*"))
    assert len(clips) == 8
    for clip in clips:
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            codec, w, h, pix_fmt = stream.codec_context.name, stream.width, stream.height, stream.format.name
        assert codec in NVDEC_LIMITS
        assert chroma_and_bit_depth(pix_fmt) == ("420", 8), (clip, pix_fmt)
        assert nvdec_refusal(codec, w, h, pix_fmt) is None, clip
    assert "DECODE_DEVICE: auto" in (ROOT / "configs" / "demo.yaml").read_text()


def test_missing_reference_data_fails_on_cuda_and_skips_on_cpu(tmp_path):
    from tests.conftest import require_reference_dir

    assert require_reference_dir(tmp_path, cuda=True) == tmp_path
    with pytest.raises(pytest.fail.Exception, match="GPU tests need it"):
        require_reference_dir(tmp_path / "absent", cuda=True)
    with pytest.raises(pytest.skip.Exception, match="EVA_SHARED_DIR"):
        require_reference_dir(tmp_path / "absent", cuda=False)
