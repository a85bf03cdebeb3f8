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


# (codec, width, height, pix_fmt, compute capability) -> accepted?
CASES = [
    ("h264", 64, 48, "yuv420p", (9, 0), True),
    ("h264", 48, 16, "yuv420p", (9, 0), True),         # exactly the minimum
    ("h264", 46, 48, "yuv420p", (9, 0), False),        # narrower than 48
    ("h264", 4096, 2160, "yuv420p", (9, 0), True),
    ("h264", 4100, 2160, "yuv420p", (9, 0), False),    # wider than H.264's 4096
    ("h264", 640, 360, "yuv444p", (9, 0), False),      # 4:4:4 H.264
    ("h264", 640, 360, "yuv420p10le", (9, 0), False),  # 10-bit H.264
    ("hevc", 144, 144, "yuv420p", (9, 0), True),
    ("hevc", 128, 144, "yuv420p", (9, 0), False),      # HEVC needs 144x144
    ("hevc", 640, 360, "yuv444p", (9, 0), False),      # HEVC 4:4:4 is in the hardware, not in DALI's NV12 output
    ("vp9", 64, 48, "yuv420p", (9, 0), False),         # the old demo clips: VP9 needs 128x128
    ("vp9", 128, 128, "yuv420p", (9, 0), True),
    ("vp8", 64, 48, "yuv420p", (9, 0), True),
    ("mpeg4", 2048, 1080, "yuv420p", (9, 0), False),   # MPEG-4 stops at 2032
    ("av1", 640, 360, "yuv420p", (9, 0), False),       # Hopper has no AV1 decoder
    ("av1", 640, 360, "yuv420p", (8, 0), False),       # nor GA100
    ("av1", 640, 360, "yuv420p", (8, 6), True),        # GA10x has
    ("av1", 640, 360, "yuv420p", (10, 0), True),       # Blackwell has
    ("mjpeg", 640, 360, "yuvj420p", (9, 0), False),    # not in the table: the CPU route takes it
    ("theora", 640, 360, "yuv420p", (9, 0), False),
]


@pytest.mark.parametrize("codec, w, h, pix_fmt, cc, accepted", CASES)
def test_nvdec_rule(codec, w, h, pix_fmt, cc, accepted):
    reason = nvdec_refusal(codec, w, h, pix_fmt, compute_capability=cc)
    assert (reason is None) == accepted, reason
    if reason is not None:
        assert codec in reason or pix_fmt in reason or f"{w}x{h}" in reason or "GPU" in reason


def test_nvdec_rule_settings_narrow_and_widen():
    assert nvdec_refusal("hevc", 640, 360, "yuv420p10le") is not None           # 8 bits by default
    assert nvdec_refusal("hevc", 640, 360, "yuv420p10le", max_bit_depth=10) is None
    assert nvdec_refusal("h264", 640, 360, "yuv420p10le", max_bit_depth=10) is not None  # hardware limit stays
    assert "configured" in nvdec_refusal("vp9", 640, 360, "yuv420p", codecs={"h264", "hevc"})
    assert nvdec_refusal("h264", 640, 360, "yuv420p", codecs={"h264"}) is None


def test_gpu_decode_problems_name_the_cause_and_the_fix():
    assert gpu_decode_problems(driver_cuda=(13, 0), dali_cuda=13, nvcuvid=True) == []
    assert gpu_decode_problems(driver_cuda=(12, 8), dali_cuda=12, nvcuvid=True) == []
    (mismatch,) = gpu_decode_problems(driver_cuda=(12, 4), dali_cuda=13, nvcuvid=True)
    assert "CUDA 13" in mismatch and "12.4" in mismatch and "cuda12" in mismatch
    (missing,) = gpu_decode_problems(driver_cuda=(13, 0), dali_cuda=13, nvcuvid=False)
    assert "libnvcuvid.so.1" in missing and "video" in missing
    assert len(gpu_decode_problems(driver_cuda=(12, 4), dali_cuda=None, nvcuvid=False)) == 2


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
