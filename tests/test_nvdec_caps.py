"""The driver's NVDEC capabilities: the ctypes call sequence (against a fake driver of C-callable functions, so
the arguments go through ctypes as they would to libcuda and libnvcuvid), its failures, and how routing, the
support rule and the GPU environment check use the answers."""

from __future__ import annotations

import ctypes
import logging
from types import SimpleNamespace

import pytest

from benchmarks import gpu_env
from dali_pipelines import routing
from dali_pipelines.nvdec_caps import (_PROTOTYPES, CUDA_VIDEO_CODEC, DecoderCaps, NvdecCapsError, _DecodeCapsStruct,
                                       describe_caps, load_driver, query_decoder_caps)
from dali_pipelines.nvdec_support import NVDEC_LIMITS, nvdec_refusal, table_differences
from dali_pipelines.routing import (NVDEC, PYAV, RoutingPolicy, choose_route, machine_policy, nvdec_configs,
                                    nvdec_threads_line)

CTX = 0x5EED  # the fake primary context's handle
H264 = DecoderCaps(True, 7, (48, 16), (4096, 4096), 65536)
AV1 = DecoderCaps(False, 0, (0, 0), (0, 0), 0)


def test_struct_has_the_layout_of_cuviddec_h():
    assert ctypes.sizeof(_DecodeCapsStruct) == 88
    offsets = {name: getattr(_DecodeCapsStruct, name).offset for name, _ in _DecodeCapsStruct._fields_}
    assert (offsets["nBitDepthMinus8"], offsets["bIsSupported"], offsets["nNumNVDECs"], offsets["nMaxWidth"],
            offsets["nMaxMBCount"], offsets["nMinWidth"], offsets["nMinHeight"]) == (8, 24, 25, 28, 36, 40, 42)


class FakeDriver:
    """libcuda + libnvcuvid as C-callable functions: answers for the (codec, chroma, depth) of ``table`` (as
    cudaVideoCodec / cudaVideoChromaFormat values), an error status for the configurations in ``errors``, and a
    record of the calls."""

    def __init__(self, table: dict, errors=(), fail: dict | None = None):
        self.table, self.errors, self.fail, self.calls = table, set(errors), fail or {}, []
        self.current, self.released = None, []  # released: the device handles given back

        def call(name, body):
            def wrapper(*args):
                self.calls.append(name)
                return self.fail.get(name) or body(*args) or 0
            return _PROTOTYPES[name](wrapper)

        def device_get(handle, ordinal):
            self.calls.append(f"device {ordinal}")
            handle[0] = 100 + ordinal

        def retain(ctx, handle):
            assert handle == 101, handle  # the handle cuDeviceGet gave, not the ordinal
            ctx[0] = CTX

        def push(ctx):
            self.current = ctx

        def pop(ctx):
            ctx[0], self.current = self.current, None

        def caps(p):
            assert self.current == CTX, "no current context"
            c = p.contents
            key = (c.eCodecType, c.eChromaFormat, c.nBitDepthMinus8 + 8)
            if key in self.errors:
                return 1
            answer = self.table.get(key)
            if answer is not None:
                c.bIsSupported, c.nNumNVDECs = int(answer.supported), answer.engines
                (c.nMinWidth, c.nMinHeight), (c.nMaxWidth, c.nMaxHeight) = answer.min_size, answer.max_size
                c.nMaxMBCount = answer.max_macroblocks
            return 0

        self.functions = SimpleNamespace(
            cuInit=call("cuInit", lambda flags: None), cuDeviceGet=call("cuDeviceGet", device_get),
            cuDevicePrimaryCtxRetain=call("cuDevicePrimaryCtxRetain", retain),
            cuDevicePrimaryCtxRelease_v2=call("cuDevicePrimaryCtxRelease_v2", self.released.append),
            cuCtxPushCurrent_v2=call("cuCtxPushCurrent_v2", push), cuCtxPopCurrent_v2=call("cuCtxPopCurrent_v2", pop),
            cuvidGetDecoderCaps=call("cuvidGetDecoderCaps", caps))


def _h200_driver(**kwargs) -> FakeDriver:
    return FakeDriver({(CUDA_VIDEO_CODEC["h264"], 1, 8): H264, (CUDA_VIDEO_CODEC["av1"], 1, 8): AV1}, **kwargs)


def test_query_asks_each_configuration_in_the_devices_primary_context():
    fake = _h200_driver(errors={(CUDA_VIDEO_CODEC["hevc"], 1, 10)})
    configs = [("h264", "420", 8), ("av1", "420", 8), ("hevc", "420", 10)]
    answers = query_decoder_caps(configs, device=1, driver=fake.functions)
    assert answers == {("h264", "420", 8): H264, ("av1", "420", 8): AV1}  # the failed question is left out
    assert fake.calls == ["cuInit", "cuDeviceGet", "device 1", "cuDevicePrimaryCtxRetain", "cuCtxPushCurrent_v2",
                          *["cuvidGetDecoderCaps"] * 3, "cuCtxPopCurrent_v2", "cuDevicePrimaryCtxRelease_v2"]
    assert fake.current is None and fake.released == [101]  # popped, and the retained device's context released


def test_query_failures_name_the_call_and_release_the_context():
    with pytest.raises(NvdecCapsError, match=r"cuDeviceGet\(3\) failed with CUresult 101"):
        query_decoder_caps([("h264", "420", 8)], device=3, driver=_h200_driver(fail={"cuDeviceGet": 101}).functions)
    fake = _h200_driver(fail={"cuCtxPushCurrent_v2": 201})
    with pytest.raises(NvdecCapsError, match="cuCtxPushCurrent failed with CUresult 201"):
        query_decoder_caps([("h264", "420", 8)], device=1, driver=fake.functions)
    assert fake.calls[-1] == "cuDevicePrimaryCtxRelease_v2" and fake.released == [101]
    fake = _h200_driver(errors={(CUDA_VIDEO_CODEC["h264"], 1, 8)})
    with pytest.raises(NvdecCapsError, match=r"cuvidGetDecoderCaps\(h264, 420, 8-bit\) failed with CUresult 1"):
        query_decoder_caps([("h264", "420", 8)], device=1, driver=fake.functions)
    assert fake.calls[-2:] == ["cuCtxPopCurrent_v2", "cuDevicePrimaryCtxRelease_v2"] and fake.released == [101]
    with pytest.raises(ValueError, match="'mjpeg'"):
        query_decoder_caps([("mjpeg", "420", 8)], driver=fake.functions)


def test_load_driver_without_an_nvidia_driver_says_which_library_is_missing():
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        with pytest.raises(NvdecCapsError, match=r"cannot load libcuda\.so\.1"):
            load_driver()
    else:  # a machine with the driver: every call binds, or the missing one is named
        try:
            functions = load_driver()
        except NvdecCapsError as e:
            assert "libnvcuvid.so.1" in str(e)
        else:
            assert set(vars(functions)) == set(_PROTOTYPES)


def test_caps_refusal_and_description():
    assert H264.refusal("h264", 48, 16, "420", 8) is None and H264.refusal("h264", 4096, 4096, "420", 8) is None
    assert "below NVDEC's h264 minimum of 48x16 on this GPU" in H264.refusal("h264", 46, 64, "420", 8)
    assert "above NVDEC's h264 maximum of 4096x4096" in H264.refusal("h264", 4112, 64, "420", 8)
    small_mb = DecoderCaps(True, 7, (48, 16), (4096, 4096), 1000)
    assert "has 1200 macroblocks, above NVDEC's h264 maximum of 1000" in small_mb.refusal("h264", 640, 480, "420", 8)
    assert "does not decode 8-bit 4:2:0 av1" in AV1.refusal("av1", 640, 480, "420", 8)
    assert describe_caps({("h264", "420", 8): H264, ("av1", "420", 8): AV1}) == [
        "av1 4:2:0: 8-bit not decoded", "h264 4:2:0: 8-bit 48x16 to 4096x4096"]


def test_the_drivers_answer_decides_where_it_has_one():
    caps = {("h264", "420", 8): DecoderCaps(True, 7, (64, 64), (4096, 4096), 65536),
            ("av1", "420", 8): DecoderCaps(True, 7, (128, 128), (8192, 8192), 262144)}
    # a GPU whose H.264 minimum is above the table's: refused with the driver's numbers
    assert "minimum of 64x64 on this GPU" in nvdec_refusal("h264", 48, 48, "yuv420p", driver_caps=caps)
    assert nvdec_refusal("h264", 48, 48, "yuv420p") is None  # the table alone would send it
    # an AV1 decoder the table does not expect on this compute capability: the driver knows better
    assert nvdec_refusal("av1", 640, 360, "yuv420p", compute_capability=(9, 0), driver_caps=caps) is None
    # what the driver was not asked about, or what the settings or DALI refuse, stays with the rule
    assert "above the configured maximum" in nvdec_refusal("hevc", 640, 360, "yuv420p10le", driver_caps=caps)
    assert "below NVDEC's vp9 minimum of 128x128" in nvdec_refusal("vp9", 64, 48, "yuv420p", driver_caps=caps)
    assert "4:4:4 chroma" in nvdec_refusal("h264", 640, 360, "yuv444p", driver_caps=caps)
    assert "configured for NVDEC" in nvdec_refusal("av1", 640, 360, "yuv420p", codecs={"h264"}, driver_caps=caps)
    refused = RoutingPolicy(gpu_usable=True, driver_caps={("h264", "420", 8): DecoderCaps(False, 0, (0, 0), (0, 0), 0)})
    route, reason = choose_route("h264", 640, 360, "yuv420p", refused)
    assert route == PYAV and "this GPU's NVDEC does not decode 8-bit 4:2:0 h264" in reason
    assert choose_route("h264", 640, 360, "yuv420p", RoutingPolicy(gpu_usable=True, driver_caps=caps))[0] == NVDEC


def test_table_differences_name_what_the_table_gets_wrong():
    same = {("h264", "420", 8): H264, ("av1", "420", 8): AV1}
    assert table_differences(same, (9, 0)) == []  # an H200 as the table describes it
    assert table_differences({("av1", "420", 8): AV1}, (8, 6)) == [
        "av1 8-bit 4:2:0: the driver says not decoded, the table decoded"]
    other = {("hevc", "420", 8): DecoderCaps(True, 3, (128, 128), (8192, 8192), 262144)}
    assert table_differences(other, (9, 0)) == [
        "hevc 8-bit 4:2:0: the driver's sizes 128x128 to 8192x8192, the table's 144x144 to 8192x8192"]


def test_routing_asks_for_every_configuration_nvdec_may_be_sent(monkeypatch, caplog):
    assert nvdec_configs(["h264", "vp9", "mjpeg"], 8) == [("h264", "420", 8), ("vp9", "420", 8)]
    assert nvdec_configs(None, 10) == [(c, "420", d) for c in sorted(NVDEC_LIMITS)
                                       for d in sorted(NVDEC_LIMITS[c].bit_depths) if d <= 10]
    asked = []

    def fake_query(configs, device):
        asked.append((configs, device))
        return {("h264", "420", 8): H264}

    import torch

    monkeypatch.setattr(routing, "query_decoder_caps", fake_query)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    policy = machine_policy("gpu", nvdec_codecs=["H264"], device_id=2)
    assert asked == [([("h264", "420", 8)], 2)] and policy.driver_caps == {("h264", "420", 8): H264}
    assert policy.nvdec_engines == 7 and machine_policy("cpu").driver_caps is None

    def failing(configs, device):
        raise NvdecCapsError("cannot load libnvcuvid.so.1: not found")

    monkeypatch.setattr(routing, "query_decoder_caps", failing)
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.routing"):
        policy = machine_policy("gpu", device_id=0)
    assert policy.driver_caps is None and policy.nvdec_engines is None and policy.gpu_usable
    assert "could not ask the NVIDIA driver what NVDEC decodes on GPU 0 (cannot load libnvcuvid.so.1" in caplog.text


def test_nvdec_threads_line_compares_threads_with_engines():
    assert nvdec_threads_line(7, 8).startswith("NVDEC: 7 engines on this GPU (the driver's count); the NVDEC graph "
                                               "runs 8 decoder threads")
    assert "raise DATA.NVDEC_THREADS to 7" in nvdec_threads_line(7, 4)
    assert "engine count unknown" in nvdec_threads_line(None, 8) and "raise" not in nvdec_threads_line(None, 8)


def test_gpu_env_prints_the_drivers_answers_and_the_tables_differences(capsys):
    answers = {("h264", "420", 8): H264, ("av1", "420", 8): AV1,
               ("vp9", "420", 8): DecoderCaps(True, 7, (64, 64), (8192, 8192), 262144)}
    gpu_env.print_nvdec_caps((9, 0), query=lambda configs, device: answers)
    out = capsys.readouterr().out.splitlines()
    assert out == ["NVDEC engines   7", "NVDEC caps      av1 4:2:0: 8-bit not decoded",
                   "NVDEC caps      h264 4:2:0: 8-bit 48x16 to 4096x4096",
                   "NVDEC caps      vp9 4:2:0: 8-bit 64x64 to 8192x8192",
                   "NVDEC vs table  vp9 8-bit 4:2:0: the driver's sizes 64x64 to 8192x8192, the table's 128x128 to "
                   "8192x8192"]

    def failing(configs, device):
        raise NvdecCapsError("cuInit failed with CUresult 100")

    gpu_env.print_nvdec_caps((9, 0), query=failing)
    assert capsys.readouterr().out == ("NVDEC caps      could not ask the driver (cuInit failed with CUresult 100); "
                                       "routing follows the published table\n")


@pytest.mark.gpu
def test_the_driver_answers_on_this_gpu_and_routing_uses_the_answers():
    """On a GPU machine the question must work (a failure would leave routing to the table, silently but for one
    warning): H.264 8-bit is decoded, by at least one engine, in the sizes Kinetics needs; the answers are printed
    for the record, with where the table differs."""
    import torch

    device = torch.cuda.current_device()
    answers = query_decoder_caps(nvdec_configs(None, 8), device=device)
    print("\n".join(describe_caps(answers)))
    print("\n".join(table_differences(answers, torch.cuda.get_device_capability(device))) or "table agrees")
    h264 = answers[("h264", "420", 8)]
    assert h264.supported and h264.engines >= 1, h264
    assert h264.min_size[0] <= 64 and h264.min_size[1] <= 48 and h264.max_size[0] >= 1920, h264
    policy = machine_policy("gpu", device_id=device)
    assert policy.driver_caps == answers and policy.nvdec_engines >= 1
