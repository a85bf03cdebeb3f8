"""The per-video routing rule: NVDEC when it takes the video, else DALI's CPU decoder, else PyAV."""

from __future__ import annotations

import numpy as np
import pytest

from configs import ConfigError, load_config
from dali_pipelines.index import VideoInfo
from dali_pipelines.routing import (DALI_CPU, NVDEC, PYAV, RoutingPolicy, VideoRoute, VideoRoutes, choose_route,
                                    cpu_share_warning, fallback_route, machine_policy, route_videos)

GPU = RoutingPolicy(gpu_usable=True)
CPU = RoutingPolicy(gpu_usable=False)

# (codec, width, height, pix_fmt, policy) -> route
TABLE = [
    ("h264", 340, 256, "yuv420p", GPU, NVDEC),
    ("h264", 340, 256, "yuv420p", CPU, PYAV),
    ("h264", 32, 32, "yuv420p", GPU, PYAV),               # below H.264's 48x16 width
    ("h264", 340, 256, "yuv444p", GPU, PYAV),             # 4:4:4 H.264
    ("hevc", 340, 256, "yuv444p", GPU, PYAV),             # 4:4:4 HEVC: NVDEC has it, DALI's NV12 output not
    ("h264", 340, 256, "yuv420p10le", GPU, PYAV),         # 10-bit H.264
    ("hevc", 340, 256, "yuv420p", GPU, NVDEC),
    ("hevc", 128, 96, "yuv420p", GPU, PYAV),              # HEVC below 144x144
    ("hevc", 640, 360, "yuv420p10le", GPU, PYAV),         # 10-bit: not by default
    ("vp9", 64, 48, "yuv420p", GPU, DALI_CPU),            # VP9 below 128x128: DALI's CPU decoder takes it
    ("vp9", 320, 240, "yuv420p", GPU, NVDEC),
    ("vp9", 320, 240, "yuv420p", CPU, DALI_CPU),
    ("vp8", 320, 240, "yuv420p", CPU, DALI_CPU),
    ("mjpeg", 320, 240, "yuvj420p", GPU, DALI_CPU),
    ("mpeg4", 320, 240, "yuv420p", GPU, NVDEC),
    ("mpeg4", 320, 240, "yuv420p", CPU, PYAV),
    ("av1", 320, 240, "yuv420p", GPU, PYAV),              # Hopper has no AV1 decoder
    ("av1", 320, 240, "yuv420p", RoutingPolicy(gpu_usable=True, compute_capability=(8, 9)), NVDEC),
]


@pytest.mark.parametrize("codec, w, h, pix_fmt, policy, route", TABLE)
def test_rule_table(codec, w, h, pix_fmt, policy, route):
    got, reason = choose_route(codec, w, h, pix_fmt, policy)
    assert got == route
    assert (reason == "") == (route == NVDEC)


def test_config_keys_change_the_route():
    wide = RoutingPolicy(gpu_usable=True, nvdec_max_bit_depth=10)
    assert choose_route("hevc", 640, 360, "yuv420p10le", wide)[0] == NVDEC
    narrow = RoutingPolicy(gpu_usable=True, nvdec_codecs=frozenset({"h264"}))
    assert choose_route("hevc", 640, 360, "yuv420p", narrow)[0] == PYAV
    assert choose_route("vp9", 640, 360, "yuv420p", narrow)[0] == DALI_CPU
    all_pyav = RoutingPolicy(gpu_usable=False, cpu_decoder="pyav")
    assert choose_route("vp9", 640, 360, "yuv420p", all_pyav)[0] == PYAV
    dali_only = RoutingPolicy(gpu_usable=False, cpu_decoder="dali")
    assert choose_route("vp9", 640, 360, "yuv420p", dali_only)[0] == DALI_CPU
    with pytest.raises(ValueError, match="cannot decode h264"):
        choose_route("h264", 640, 360, "yuv420p", dali_only)
    with pytest.raises(ValueError, match="CPU_DECODER"):
        RoutingPolicy(gpu_usable=False, cpu_decoder="gpu")


def _video_routes(rows):
    """A VideoRoutes of ``(route, reason)`` per row (None: a row not routed), its table of routes in another order
    than the rows' (reasons descending), so that nothing can lean on the two orders being the same."""
    choices = sorted({VideoRoute(*r) for r in rows if r}, key=lambda c: (c.reason, c.route), reverse=True)
    return VideoRoutes(np.array([choices.index(VideoRoute(*r)) if r else -1 for r in rows]), choices)


def test_counts_and_cpu_share_warning():
    routes = _video_routes([(NVDEC, "")] * 6 + [(PYAV, "32x32 is below NVDEC's h264 minimum of 48x16")] * 3
                           + [(DALI_CPU, "NVDEC does not decode mjpeg")])
    assert routes.counts() == {NVDEC: 6, DALI_CPU: 1, PYAV: 3}
    assert _video_routes([None]).counts() == {NVDEC: 0, DALI_CPU: 0, PYAV: 0}
    warning = cpu_share_warning(len(routes), routes.cpu_reasons(), gpu_present=True, max_share=0.25)
    assert "4 of 10 videos (40%)" in warning and "3 x 32x32 is below" in warning
    assert cpu_share_warning(len(routes), routes.cpu_reasons(), gpu_present=True, max_share=0.5) is None
    assert cpu_share_warning(len(routes), routes.cpu_reasons(), gpu_present=False, max_share=0.0) is None
    assert cpu_share_warning(0, {}, gpu_present=True, max_share=0.0) is None


def test_the_cpu_share_warning_of_a_list_mixing_routes_and_reasons():
    """Counted on the codes, the warning is the one a count over the rows gives: a reason shared by two CPU routes
    counts once with both their videos, rows not routed count nowhere, and equal counts rank by their first row."""
    routes = _video_routes([(PYAV, "r-b"), (NVDEC, ""), (DALI_CPU, "r-a"), None, (PYAV, "r-a"), (DALI_CPU, "r-c"),
                            (PYAV, "r-b"), (NVDEC, ""), (PYAV, "r-d"), (DALI_CPU, "r-c"), (PYAV, "r-a"), (NVDEC, "")])
    assert len(routes) == 11 and routes.counts() == {NVDEC: 3, DALI_CPU: 3, PYAV: 5}
    assert routes.cpu_reasons() == {"r-b": 2, "r-a": 3, "r-c": 2, "r-d": 1}
    assert list(routes.cpu_reasons()) == ["r-b", "r-a", "r-c", "r-d"]
    assert cpu_share_warning(len(routes), routes.cpu_reasons(), gpu_present=True, max_share=0.5) == (
        "8 of 11 videos (73%) will be decoded on the CPU although this machine has a GPU "
        "(more than DATA.CPU_ROUTE_MAX_SHARE = 50%): 3 x r-a; 2 x r-b; 2 x r-c")


def test_fallback_route_goes_to_the_cpu_route_of_the_rule():
    assert fallback_route(NVDEC, "vp9", GPU) == DALI_CPU
    assert fallback_route(NVDEC, "h264", GPU) == PYAV
    assert fallback_route(NVDEC, "vp9", RoutingPolicy(gpu_usable=True, cpu_decoder="pyav")) == PYAV
    assert fallback_route(NVDEC, "h264", RoutingPolicy(gpu_usable=True, cpu_decoder="dali")) is None
    assert fallback_route(DALI_CPU, "vp9", CPU) == PYAV
    assert fallback_route(DALI_CPU, "vp9", RoutingPolicy(gpu_usable=False, cpu_decoder="dali")) is None
    assert fallback_route(PYAV, "h264", CPU) is None


def _info(codec, w, h, pix_fmt="yuv420p", coded=(0, 0)):
    return VideoInfo(num_frames=30, codec=codec, width=w, height=h, fps=25.0, coded_width=coded[0],
                     coded_height=coded[1], pix_fmt=pix_fmt)


def test_route_videos_uses_the_coded_size_and_names_the_list():
    # Groups of videos with the same decoder facts; rows 1 and 4 are not routed (bad videos).
    facts = [_info("h264", 340, 256), _info("vp9", 340, 256, coded=(64, 48)), _info("hevc", 320, 240)]
    groups = np.array([1, -1, 2, 0, -1, 1, 2])
    routes = route_videos(facts, groups, GPU, "DATA.TRAIN_FILE l.txt")
    assert sorted(routes) == [0, 2, 3, 5, 6] and len(routes) == 5 and 1 not in routes
    assert {r: routes[r].route for r in routes} == {0: DALI_CPU, 2: NVDEC, 3: NVDEC, 5: DALI_CPU, 6: NVDEC}
    assert "64x48 is below NVDEC's vp9 minimum" in routes[0].reason and routes[2].reason == ""
    assert routes.counts() == {NVDEC: 3, DALI_CPU: 2, PYAV: 0}
    assert routes.items() == [(r, routes[r]) for r in (0, 2, 3, 5, 6)] and routes.values() == [
        routes[r] for r in (0, 2, 3, 5, 6)]
    assert routes.codes.dtype == np.int32 and len(routes.choices) == 2  # one entry per distinct route and reason
    routes[6] = VideoRoute(PYAV, "failed on nvdec: bad frame")  # a run-time fallback moves one video
    assert routes[6] == VideoRoute(PYAV, "failed on nvdec: bad frame") and routes[2].route == NVDEC
    assert routes.counts() == {NVDEC: 2, DALI_CPU: 2, PYAV: 1}
    # counted over a mask of rows (the loader's: those still good), unrouted rows in it included
    assert routes.counts(np.array([1, 1, 0, 0, 1, 0, 1], bool)) == {NVDEC: 0, DALI_CPU: 1, PYAV: 1}
    # The error names the first refused row in list order: row 2 (hevc), before row 3 of group 0 (h264).
    with pytest.raises(ValueError, match="DATA.TRAIN_FILE l.txt, row 2: DATA.CPU_DECODER is 'dali'.* hevc"):
        route_videos(facts, groups, RoutingPolicy(gpu_usable=False, cpu_decoder="dali"), "DATA.TRAIN_FILE l.txt")


def test_routing_config_keys_are_read_and_checked():
    cfg = load_config(opts=["DATA.NVDEC_CODECS", "['h264', 'HEVC']", "DATA.NVDEC_MAX_BIT_DEPTH", "10"])
    policy = machine_policy("cpu", cfg.DATA.CPU_DECODER, cfg.DATA.NVDEC_CODECS, cfg.DATA.NVDEC_MAX_BIT_DEPTH)
    assert policy.nvdec_codecs == frozenset({"h264", "hevc"}) and policy.nvdec_max_bit_depth == 10
    assert not policy.gpu_usable and machine_policy("cpu").nvdec_codecs is None
    with pytest.raises(ConfigError, match="DATA.NVDEC_CODECS .* names codecs NVDEC does not decode: mjpeg"):
        load_config(opts=["DATA.NVDEC_CODECS", "['mjpeg']"])
    with pytest.raises(ConfigError, match="DATA.NVDEC_MAX_BIT_DEPTH = 9"):
        load_config(opts=["DATA.NVDEC_MAX_BIT_DEPTH", "9"])
    with pytest.raises(ConfigError, match="DATA.CPU_ROUTE_MAX_SHARE = 1.5"):
        load_config(opts=["DATA.CPU_ROUTE_MAX_SHARE", "1.5"])


@pytest.mark.parametrize("codec, coded, route", [
    ("vp9", (120, 120), DALI_CPU),   # libavcodec's coded size is VP9's own: 120 < NVDEC's 128, so not NVDEC
    ("h264", (128, 128), NVDEC),     # H.264's coded size is whole macroblocks
])
def test_a_probed_video_is_routed_on_its_decoded_coded_size(tmp_path, codec, coded, route):
    """The index's coded size is the one libavcodec reports after the probe's first frame, not the display size
    rounded up to 16 (which would send a 120x120 VP9 to NVDEC as 128x128, to fail there batch after batch)."""
    from dali_pipelines.index import probe_video
    from dali_pipelines.pyav_encode import write_video
    from tests.video_fixtures import pattern_frames

    path = str(tmp_path / f"clip.{'webm' if codec == 'vp9' else 'mp4'}")
    write_video(path, pattern_frames(4, 120, 120), codec=codec)
    info = probe_video(path)
    assert (info.width, info.height, info.coded_width, info.coded_height) == (120, 120, *coded)
    routes = route_videos([info], np.array([0]), GPU, "DATA.TRAIN_FILE l.txt")
    assert routes[0].route == route
    if route != NVDEC:
        assert "120x120 is below NVDEC's vp9 minimum of 128x128" in routes[0].reason
