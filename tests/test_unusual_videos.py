"""Videos as they come from the wild, each with what the index and the loaders must make of it: files cut without
re-encoding (an MP4 edit list that hides the first frames, a stream that starts inside a GOP), a picture size that
changes within the stream, AV1 (named by its codec, not by FFmpeg's decoder), a WebM/MKV whose audio runs longer than
its video, and a damaged picture that the decoder conceals."""

from __future__ import annotations

import dataclasses

import av
import numpy as np
import pytest

from dali_pipelines.host_decode import decode_with_dali_cpu
from dali_pipelines.index import probe_video
from dali_pipelines.loader import build_loader
from dali_pipelines.pyav_encode import cut_with_edit_list, start_inside_gop, write_size_change, write_video
from dali_pipelines.pyav_io import decode_frames
from dali_pipelines.pyav_open import BadVideoError
from dali_pipelines.pyav_probe import first_pictures_not_shown, nvdec_pts_problem
from dali_pipelines.routing import NVDEC, RoutingPolicy, choose_route
from tests.video_fixtures import pattern_frames, small_cfg


# ------------------------------------------------------------ Cut without re-encoding
# Videos cut without re-encoding: an MP4 edit list that hides the first frames, a stream that starts inside a GOP.
# The index counts the frames a decode yields (never the packets it hides or drops), so every frame it promises
# decodes, on both CPU routes, and the test loader delivers these videos instead of quarantining them.
N = 40


def _reference(path: str) -> list[np.ndarray]:
    with av.open(path) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def cut_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("cut_videos")
    (root / "videos").mkdir()
    frames = pattern_frames(N)
    out = {}
    for name, codec, opts in (("h264_bframes", "h264", {}), ("h264", "h264", {"bframes": 0}),
                              ("mjpeg", "mjpeg", {})):
        whole = str(root / f"{name}_whole.mp4")
        write_video(whole, frames, codec=codec, gop=16, **opts)
        out[f"{name}_edit"] = str(root / "videos" / f"{name}_edit.mp4")
        cut_with_edit_list(whole, out[f"{name}_edit"], 3)
    whole = str(root / "gop8.mp4")
    write_video(whole, frames, codec="h264", gop=8, bframes=0)
    for ext in (".mp4", ".mkv"):
        out[f"inside_gop{ext}"] = str(root / "videos" / f"inside_gop{ext}")
        start_inside_gop(whole, out[f"inside_gop{ext}"], 3)
    return root, out


@pytest.mark.parametrize("full_decode", [False, True])
def test_the_index_counts_the_frames_a_decode_yields(cut_videos, full_decode):
    _, videos = cut_videos
    for name, path in videos.items():
        ref = _reference(path)
        assert len(ref) == (32 if name.startswith("inside_gop") else N - 3), name  # what FFmpeg shows
        info = probe_video(path, full_decode=full_decode)  # was: 40/37 frames, or 'truncated' (MJPEG, full decode)
        assert info.num_frames == len(ref), name
        last = np.arange(info.num_frames - 5, info.num_frames)
        got = decode_frames(path, last)
        assert all(np.array_equal(g, ref[i]) for g, i in zip(got, last)), name
        if info.codec == "mjpeg":  # DALI's CPU route, with and without the GOP cut
            for pack in (True, False):
                dali = decode_with_dali_cpu(path, last, info.size, info.mtime_ns, info.codec, pack)
                diff = [float(np.abs(d.astype(int) - ref[i].astype(int)).mean()) for d, i in zip(dali, last)]
                assert max(diff) < 3, (name, pack, diff)


def test_a_truncated_mp4_is_still_truncated(cut_videos, tmp_path):
    _, videos = cut_videos
    # each half file gets its own diagnosis: either text passed for both, so a half H.264 file no longer counted
    # against its header (40 samples, the 3 the edit list hides included) went unnoticed
    for name, message in (("h264_edit", r"truncated: \d+ frames readable, the header declares 40$"),
                          ("mjpeg_edit", r"not a readable video container \(Invalid data found when processing")):
        data = open(videos[name], "rb").read()
        cut = tmp_path / f"{name}_truncated.mp4"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(BadVideoError, match=message):
            probe_video(str(cut))


def _with_dropped_frames(src: str, dst: str, every: int) -> int:
    """Copy the AVI ``src`` to ``dst`` with an empty chunk (a frame a capture dropped) after every ``every``-th
    frame; returns the chunks the header then counts."""
    with av.open(src) as inp, av.open(dst, "w") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        tick = 0
        for n, p in enumerate(p for p in inp.demux(stream) if p.size):
            chunks = [p] + ([av.Packet(b"")] if n % every == every - 1 else [])
            for q in chunks:
                q.stream, q.pts, q.dts, q.time_base = copy, tick, tick, stream.time_base
                out.mux(q)
                tick += 1
    return tick


@pytest.mark.parametrize("codec", ["mjpeg", "mpeg4"])
def test_an_avi_cut_short_is_truncated_and_one_with_dropped_frames_is_not(tmp_path, codec):
    """An AVI cut short loses its index (at the file's end): FFmpeg then estimates the duration from the file's size,
    which at an even bit rate ends where the cut is, and the cut file passed as a shorter good video. The header's
    chunk count is what the file declares; empty chunks (dropped frames) are counted there and in the timestamps."""
    whole, dropped, cut = (str(tmp_path / f"{n}.avi") for n in ("whole", "dropped", "cut"))
    write_video(whole, pattern_frames(N), codec=codec, gop=8)
    assert probe_video(whole).num_frames == N
    assert _with_dropped_frames(whole, dropped, 8) == N + N // 8
    with av.open(dropped) as c:  # the empty chunks are in the header's count, not among the packets
        assert c.streams.video[0].frames == N + N // 8 and sum(p.size > 0 for p in c.demux(video=0)) == N
    assert probe_video(dropped).num_frames == N
    data = open(whole, "rb").read()
    open(cut, "wb").write(data[: len(data) * 8 // 10])
    with pytest.raises(BadVideoError, match=rf"truncated: \d+ frames readable, the header declares {N}$"):
        probe_video(cut)


def test_an_avi_an_index_before_the_chunk_count_called_good_is_probed_again(tmp_path, caplog):
    """A cache of schema version 6 kept the good record an older probe gave an AVI cut short (the frames left, here
    under an upper-case '.AVI') until the file changed. Its good AVI rows, and only those, are probed again as it is
    read: the cut one is left out as truncated, a whole one stays good, an MP4 is not probed again; the cache the build
    writes is trusted."""
    import json
    import os

    from dali_pipelines.index import build_index
    from dali_pipelines.index_store import INDEX_SCHEMA_VERSION, load_cache, save_cache

    (tmp_path / "videos").mkdir()
    whole, cut, mp4 = (str(tmp_path / "videos" / n) for n in ("whole.avi", "cut.AVI", "clip.mp4"))
    write_video(whole, pattern_frames(N), codec="mjpeg", gop=8)
    write_video(mp4, pattern_frames(N), codec="h264", gop=8)
    data = open(whole, "rb").read()
    open(cut, "wb").write(data[: len(data) * 8 // 10])
    lst = tmp_path / "list.txt"
    lst.write_text("videos/cut.AVI 0\nvideos/whole.avi 1\nvideos/clip.mp4 2\n")
    with av.open(cut) as c:  # what an older probe recorded: the frames left
        left = sum(p.size > 0 for p in c.demux(video=0))
    assert 0 < left < N
    first = build_index(str(lst), str(tmp_path), workers=1, progress=False)
    assert first.good_rows == [1, 2] and first.bad == {0: f"truncated: {left} frames readable, the header declares {N}"}
    stored = load_cache(first.cache_path, str(tmp_path))
    st = os.stat(cut)
    older = dataclasses.replace(first.info(1), num_frames=left, size=st.st_size, mtime_ns=st.st_mtime_ns)
    stored.table.set_good(0, older, False)
    save_cache(first.cache_path, str(lst), str(tmp_path), stored.rel_paths, stored.table)
    with np.load(first.cache_path, allow_pickle=False) as archive:  # as version 6 wrote it: no rotation (version 8)
        arrays = {k: archive[k] for k in archive.files if k != "rotation"}
    header = json.loads(arrays["header"].tobytes())
    header["version"] = 6
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with open(first.cache_path, "wb") as f:
        np.savez(f, **arrays)
    with caplog.at_level("INFO", logger="dali_pipelines"):
        ix = build_index(str(lst), str(tmp_path), workers=1, progress=False)
    # was: 0 probed, the cut AVI good with the frames left
    assert ix.probed == 2 and ix.good_rows == [1, 2] and ix.bad == {0: first.bad[0]}
    # the kept record's turn is not recorded (-1): version 8 added it
    assert [ix.info(r) for r in (1, 2)] == [first.info(1), dataclasses.replace(first.info(2), rotation=-1)]
    assert f"migrating index cache {first.cache_path} (schema version 6) to version {INDEX_SCHEMA_VERSION}" \
        in caplog.text
    assert f"index cache {first.cache_path}: probing 2 AVI videos again that schema version 6 recorded as good" \
        in caplog.text
    with np.load(first.cache_path, allow_pickle=False) as archive:
        assert json.loads(archive["header"].tobytes())["version"] == INDEX_SCHEMA_VERSION
    assert build_index(str(lst), str(tmp_path), workers=1, progress=False).probed == 0


def test_the_test_loader_delivers_cut_videos(cut_videos):
    root, videos = cut_videos
    lst = root / "list.txt"
    lst.write_text("".join(f"videos/{p.split('/')[-1]} {i % 3}\n" for i, p in enumerate(videos.values())))
    cfg = small_cfg(str(root), val_list=str(lst), **{"DATA.NUM_FRAMES": 8, "TEST.NUM_CLIP": 2, "TEST.NUM_CROP": 1})
    loader = build_loader(cfg, "test")
    try:
        rows = [r for b in loader for r in b["index"].tolist()]
        assert loader.stats["skipped"] == [] and not loader.index.bad  # was: quarantined, 'only 37 frames'
        assert rows == list(range(len(videos)))
    finally:
        loader.close()


def _as_an_older_index_wrote_it(cache: str, num_frames, full_decode, version: int, bad=None) -> None:
    """Rewrite ``cache`` as an index older than schema version 4 left it: no colour tags, these frame counts and
    probe kinds, and the verdicts ``bad`` ({row: reason}); ``version`` 3, or 4 for a version 3 cache's rows a
    version 4 build took over."""
    import json

    with np.load(cache, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    header = json.loads(arrays["header"].tobytes())
    arrays["num_frames"] = np.asarray(num_frames, np.int32)
    arrays["full_decode"] = np.asarray(full_decode, bool)
    for row, reason in (bad or {}).items():  # as set_bad leaves a row: the file's key and the reason
        for name, col in arrays.items():
            if name not in ("header", "paths", "path_offsets", "size", "mtime_ns", "full_decode"):
                col[row] = 0
        arrays["status"][row], arrays["reason"][row] = 2, len(header["reasons"])
        header["reasons"].append(reason)
    del arrays["nvdec_numbering"], header["texts"]["nvdec_numbering"]  # recorded since version 6
    del arrays["rotation"]  # since version 8
    if version == 3:
        del arrays["colorspace"], header["texts"]["colorspace"]
    else:
        arrays["colorspace"][:] = 0  # code 0: ''
    header["version"] = version
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with open(cache, "wb") as f:
        np.savez(f, **arrays)


def test_counts_an_index_older_than_the_edit_list_rules_took_are_taken_again(cut_videos, tmp_path, caplog):
    """An index older than schema version 4 counted the packets an MP4 edit list hides (40 where 37 decode) and
    those before a stream's first keyframe (35 where 32 decode), and such a record was trusted until its file
    changed (the run then quarantined the video). Its quick probes are probed again, from a version 3 file and from
    a version 4 one that took its rows over, with one line saying why; a full decode of that age (which counted the
    frames that came out), and the cache the build writes, are reused."""
    from dali_pipelines.index import build_index, probed_before
    from dali_pipelines.index_store import load_cache

    root, videos = cut_videos
    paths = [videos["h264_edit"], videos["inside_gop.mkv"]]
    shown = [len(_reference(p)) for p in paths]
    assert shown == [N - 3, 32]
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"videos/{p.split('/')[-1]} {i}\n" for i, p in enumerate(paths)))
    cache = build_index(str(lst), str(root), workers=1, progress=False).cache_path
    for version in (3, 4):
        _as_an_older_index_wrote_it(cache, [N, 35], [False, False], version)
        if version == 3:
            assert not probed_before([cache]).rows  # a --check probes them again too
        caplog.clear()
        with caplog.at_level("INFO", logger="dali_pipelines.index"):
            ix = build_index(str(lst), str(root), workers=1, progress=False)
        assert ix.probed == 2 and [ix.infos[r].num_frames for r in range(2)] == shown, version  # was: 40, 35
        assert f"index cache {cache}: probing 2 videos again, quick probes recorded before schema version 4" \
            in caplog.text
        stored = load_cache(cache, str(root)).table
        assert stored.columns["num_frames"].tolist() == shown and "" not in {stored.info(r).colorspace for r in (0, 1)}
        caplog.clear()
        with caplog.at_level("INFO", logger="dali_pipelines.index"):
            assert build_index(str(lst), str(root), workers=1, progress=False).probed == 0  # what it wrote: trusted
        assert "probing" not in caplog.text
    _as_an_older_index_wrote_it(cache, [N, 32], [False, True], 3)
    assert list(probed_before([cache]).rows) == [paths[1]]
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    assert ix.probed == 1 and [ix.infos[r].num_frames for r in range(2)] == shown
    assert ix.infos[1].colorspace == ""  # the full decode's record, kept


def test_bad_verdicts_an_older_index_recorded_are_probed_again(cut_videos, tmp_path, caplog):
    """An index older than the edit-list rules called an edit-list MP4 truncated (37 packets where its header
    declares 40), and its cache, of version 3 or a version 4 one that took its rows over, kept the verdict until it
    was deleted. Such a cache's bad verdicts, and only those, are probed again: the MP4 is good with the frames it
    shows, a truly truncated copy stays bad with this code's reason, a good record is reused as it was; the cache
    the build writes is trusted, a bad verdict of its version included."""
    import shutil

    from dali_pipelines.index import build_index
    from dali_pipelines.index_store import load_cache, save_cache

    _, videos = cut_videos
    (tmp_path / "videos").mkdir()
    shutil.copy(videos["h264_edit"], tmp_path / "videos" / "edit.mp4")
    shutil.copy(videos["inside_gop.mkv"], tmp_path / "videos" / "kept.mkv")
    data = open(videos["h264_edit"], "rb").read()
    (tmp_path / "videos" / "half.mp4").write_bytes(data[: len(data) // 2])
    lst = tmp_path / "list.txt"
    lst.write_text("videos/edit.mp4 0\nvideos/kept.mkv 1\nvideos/half.mp4 2\n")
    first = build_index(str(lst), str(tmp_path), workers=1, progress=False)
    assert first.good_rows == [0, 1] and first.infos[0].num_frames == N - 3
    truncated = first.bad[2]
    assert truncated.startswith("truncated: ") and truncated.endswith("the header declares 40")
    cache = first.cache_path
    old = {0: "truncated: 37 frames readable, the header declares 40", 2: "a verdict of the older index"}
    for version in (3, 4):
        _as_an_older_index_wrote_it(cache, [0, 32, 0], [False, True, False], version, bad=old)
        caplog.clear()
        with caplog.at_level("INFO", logger="dali_pipelines"):
            ix = build_index(str(lst), str(tmp_path), workers=1, progress=False)
        # was: 0 probed, the MP4 left out as truncated
        assert ix.probed == 2 and ix.good_rows == [0, 1] and ix.bad == {2: truncated}, version
        assert ix.info(0) == first.info(0)
        assert ix.info(1) == dataclasses.replace(first.info(1), colorspace="", nvdec_numbering="", rotation=-1)
        assert f"index cache {cache}: probing 2 videos again that schema version {version} recorded as bad" \
            in caplog.text
        assert build_index(str(lst), str(tmp_path), workers=1, progress=False).probed == 0
    stored = load_cache(cache, str(tmp_path))
    stored.table.set_bad(0, old[0], first.info(0).size, first.info(0).mtime_ns, False)  # this version's verdict
    save_cache(cache, str(lst), str(tmp_path), stored.rel_paths, stored.table)
    again = build_index(str(lst), str(tmp_path), workers=1, progress=False)
    assert again.probed == 0 and again.bad == {0: old[0], 2: truncated}


def _video_ref(row: int, path: str) -> "VideoRef":
    import os

    from dali_pipelines.draw import VideoRef

    info, st = probe_video(path), os.stat(path)
    return VideoRef(row, path, 0, info.num_frames, info.width, info.height, info.codec, st.st_size, st.st_mtime_ns)


def test_the_nvdec_route_sends_videos_whose_first_pictures_are_not_shown_to_their_cpu_route(cut_videos, tmp_path,
                                                                                           monkeypatch):
    """NVDEC numbers a stream's pictures from its first packet on and reads no edit list (DALI 2.4's GPU decoder
    hands every packet to the parser): the 3 pictures an edit list hides would be its frames 0-2, every frame
    shifted by 3 against the index; a stream that starts inside a GOP would be numbered otherwise too. Such a video
    fails its NVDEC read, once per run, and the feeder decodes it on its CPU route instead."""
    import collections

    from dali_pipelines import decode_routes
    from dali_pipelines.decode_routes import EncodedRoute, HostDecodeRoute
    from dali_pipelines.draw import Sample
    from dali_pipelines.feeder import Feeder
    from dali_pipelines.host_decode import DaliDecodeError
    from dali_pipelines.routing import PYAV
    from tests.test_loader import _FeederSchedule

    _, videos = cut_videos
    whole = str(tmp_path / "whole.mp4")
    write_video(whole, pattern_frames(N), codec="h264", gop=16)
    checks = collections.Counter()
    real_check = decode_routes.first_pictures_not_shown
    monkeypatch.setattr(decode_routes, "first_pictures_not_shown",
                        lambda data, **kw: checks.update([len(data)]) or real_check(data, **kw))
    route = EncodedRoute(NVDEC, 1)
    want = {"h264_edit": "an MP4 edit list hides its first 3 pictures",
            "h264_bframes_edit": "an MP4 edit list hides its first 3 pictures",
            "inside_gop.mp4": "the stream starts inside a GOP", "inside_gop.mkv": "the stream starts inside a GOP"}
    for row, (name, reason) in enumerate(want.items()):
        sample = Sample(_video_ref(row, videos[name]), NVDEC, np.arange(4), params=None)
        for _ in range(2):
            with pytest.raises(DaliDecodeError, match=reason):  # was: the whole file handed to NVDEC
                route.load(sample)
    clean = Sample(_video_ref(9, whole), NVDEC, np.array([20, 30]), params=None)
    assert route.load(clean).encoded.size == clean.video.size and route.load(clean).frames.tolist() == [20, 30]
    assert sum(checks.values()) == len(want) + 1  # each video's first packets read once
    # the feeder moves the video to its CPU route, where it decodes to the frames the index numbers
    edit = Sample(_video_ref(0, videos["h264_edit"]), NVDEC, np.array([20, 30]), params=None)
    moved = []

    def reroute(sample, reason):
        moved.append(reason)
        return Sample(sample.video, PYAV, sample.frames, sample.params)

    host = HostDecodeRoute(workers=0)
    feeder = Feeder(_FeederSchedule([[edit]]), {NVDEC: EncodedRoute(NVDEC, 1), PYAV: host}, 0, lookahead=0,
                    reroute=reroute)
    try:
        batch = feeder.peek()
        frames = feeder._parts["host"].popleft()[0].source.video
    finally:
        host.close()
    ref = _reference(videos["h264_edit"])
    assert [s.route for s in batch.samples] == [PYAV] and "hides its first 3 pictures" in moved[0]
    assert all(np.array_equal(f, ref[i]) for f, i in zip(frames, [20, 30]))


def test_nvdec_pts_problem_names_the_pts_that_would_reorder_nvdecs_frames():
    """DALI 2.4's NVDEC decoder tags each picture, in decode order, with its packet's pts (a counter for a packet
    without one; 32-bit, -1 meaning an empty slot) and hands out the smallest of the next 8 decoded: only pts that
    give the display order within that window number its frames as FFmpeg does."""
    assert nvdec_pts_problem([0, 3, 1, 2, 6, 4, 5]) == ""  # B-frames: reordered within the window
    assert nvdec_pts_problem([-3, -2, 0]) == "" and nvdec_pts_problem([]) == ""
    assert "no timestamp" in nvdec_pts_problem([0, None, 2])
    assert "timestamp -1" in nvdec_pts_problem([-2, -1, 0])
    assert "32 bits" in nvdec_pts_problem([2**31, 2**31 + 1])
    assert "share a timestamp" in nvdec_pts_problem([0, 1, 1, 2])
    assert "decoded 8 packets after" in nvdec_pts_problem(list(range(1, 9)) + [0])  # shown first, decoded 9th
    assert nvdec_pts_problem(list(range(1, 8)) + [0]) == ""  # 7 packets late: within the window


def test_a_raw_h264_stream_goes_from_nvdec_to_its_cpu_route(tmp_path):
    """A raw .h264 stream's packets carry no pts: DALI's NVDEC decoder numbers its pictures in decode order, which
    B-frames make another order than FFmpeg's display order (the index's). Its NVDEC read fails (the feeder moves
    it to its CPU route), where PyAV decodes the frames the index numbers."""
    from dali_pipelines.decode_routes import EncodedRoute
    from dali_pipelines.draw import Sample
    from dali_pipelines.host_decode import DaliDecodeError

    path = str(tmp_path / "raw.h264")
    source = pattern_frames(N)
    write_video(path, source, codec="h264", gop=16)
    with av.open(path) as c:
        assert all(p.pts is None for p in c.demux(video=0) if p.size)
    with av.open(path) as c:
        assert 3 in {int(f.pict_type) for f in c.decode(video=0)}  # B-frames: decode order is not display order
    assert first_pictures_not_shown(path).startswith("packets carry no timestamp")
    sample = Sample(_video_ref(0, path), NVDEC, np.arange(4), params=None)
    with pytest.raises(DaliDecodeError, match="no timestamp.*NVDEC would number its frames otherwise"):
        EncodedRoute(NVDEC, 1).load(sample)  # was: handed to NVDEC, its frames in decode order
    wanted = [9, 20, 33]
    frames = decode_frames(path, wanted)
    nearest = [int(np.argmin([np.abs(f.astype(int) - s).mean() for s in source])) for f in frames]
    assert nearest == wanted


def test_the_index_records_which_videos_nvdec_would_number_otherwise(cut_videos, tmp_path, caplog):
    """The index's probe demuxes every packet anyway: it records NVDEC's numbering verdict (the NVDEC route's check's
    own), which routing reads at start-up, and the cache keeps it. A version 5 cache is migrated with its records
    kept, not probed again: their verdict is not recorded ('', left to the NVDEC route's check at the first read)."""
    import json

    from dali_pipelines.index import build_index
    from dali_pipelines.index_store import INDEX_SCHEMA_VERSION, load_cache
    from dali_pipelines.video_table import NUMBERED_AS_INDEXED

    _, videos = cut_videos
    (tmp_path / "videos").mkdir()
    write_video(str(tmp_path / "videos" / "raw.h264"), pattern_frames(N), codec="h264", gop=16)
    write_video(str(tmp_path / "videos" / "whole.mp4"), pattern_frames(N), codec="h264", gop=16)
    rels = ["videos/raw.h264", "videos/whole.mp4", videos["h264_edit"], videos["inside_gop.mkv"]]
    want = ["packets carry no timestamp (NVDEC would hand the frames out in decode order, not display order)",
            NUMBERED_AS_INDEXED, "an MP4 edit list hides its first 3 pictures",
            "the stream starts inside a GOP (its first packet is no keyframe)"]
    for rel, verdict in zip(rels, want):
        path = str(tmp_path / rel)
        assert probe_video(path).nvdec_numbering == verdict  # was: no such field
        assert (first_pictures_not_shown(path) or NUMBERED_AS_INDEXED) == verdict
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{rel} {i % 3}\n" for i, rel in enumerate(rels)))
    first = build_index(str(lst), str(tmp_path), workers=1, progress=False)
    assert [first.info(r).nvdec_numbering for r in range(4)] == want
    assert [(codec, reason, rows.tolist()) for codec, reason, rows in first.nvdec_misnumbered()] == [
        ("h264", want[0], [0]), ("h264", want[2], [2]), ("h264", want[3], [3])]
    again = build_index(str(lst), str(tmp_path), workers=1, progress=False)
    assert again.probed == 0 and [again.info(r).nvdec_numbering for r in range(4)] == want
    cache = first.cache_path
    with np.load(cache, allow_pickle=False) as archive:  # as version 5 wrote it
        arrays = {k: archive[k] for k in archive.files}
    header = json.loads(arrays["header"].tobytes())
    del arrays["nvdec_numbering"], header["texts"]["nvdec_numbering"], arrays["rotation"]
    header["version"] = 5
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with open(cache, "wb") as f:
        np.savez(f, **arrays)
    with caplog.at_level("INFO", logger="dali_pipelines"):
        migrated = build_index(str(lst), str(tmp_path), workers=1, progress=False)
    assert f"migrating index cache {cache} (schema version 5) to version {INDEX_SCHEMA_VERSION}" in caplog.text
    assert migrated.probed == 0 and migrated.nvdec_misnumbered() == []
    assert [migrated.info(r) for r in range(4)] == [dataclasses.replace(first.info(r), nvdec_numbering="", rotation=-1)
                                                   for r in range(4)]
    assert [load_cache(cache, str(tmp_path)).table.info(r).nvdec_numbering for r in range(4)] == [""] * 4


def test_a_video_the_nvdec_routes_first_packet_check_cannot_read_is_named_by_its_path(tmp_path):
    """The check reads the file's bytes, which PyAV names '<in-memory video>': the quarantine's reason named no file."""
    from dali_pipelines.draw import Sample, VideoRef
    from dali_pipelines.decode_routes import EncodedRoute

    path = tmp_path / "garbage.mp4"
    path.write_bytes(bytes(range(256)) * 20)
    st = path.stat()
    video = VideoRef(0, str(path), 0, 10, 96, 64, "h264", st.st_size, st.st_mtime_ns)
    with pytest.raises(BadVideoError) as info:
        EncodedRoute(NVDEC, 1).load(Sample(video, NVDEC, np.arange(4), params=None))
    assert str(info.value).startswith(f"{path}: not a readable video container"), info.value


# ------------------------------------------------------------ A picture size that changes within the stream
# A video whose picture size changes within the stream (a new SPS mid-stream: a screen recording, a stream switched
# between renditions) is left out with that reason, never augmented with crop windows drawn for the indexed size.
@pytest.fixture(scope="module")
def size_change(tmp_path_factory):
    """10 frames of 96x72, then 30 of 160x120, in an MKV whose header says 96x72."""
    root = tmp_path_factory.mktemp("size_change")
    (root / "videos").mkdir()
    path = root / "videos" / "size_change.mkv"
    write_size_change(str(path), pattern_frames(10, 96, 72), pattern_frames(30, 160, 120, seed=3))
    return root, str(path)


def test_pyav_names_a_size_change(size_change):
    _, path = size_change
    with pytest.raises(BadVideoError, match="picture size changes within the stream"):  # was a bare ValueError
        decode_frames(path, [5, 25])


def test_a_full_decode_probe_names_a_size_change(size_change):
    """The index's full decode (verify_data.py --full-decode, DATA.INDEX_FULL_DECODE) sees every frame: it leaves such a
    video out at once, by the reason the decode routes give at run time (the quick probe decodes one frame)."""
    _, path = size_change
    assert probe_video(path).num_frames == 40
    with pytest.raises(BadVideoError, match=r"^the picture size changes within the stream \(96x72 at frame 0, "
                                            r"160x120 at frame 10\)$"):  # was: a good video of 40 frames
        probe_video(path, full_decode=True)


def test_frames_of_another_size_than_indexed_are_quarantined(size_change):
    root, path = size_change
    lst = root / "list.txt"
    lst.write_text("videos/size_change.mkv 0\n")
    cfg = small_cfg(str(root), val_list=str(lst), **{"DATA.NUM_FRAMES": 2, "TEST.NUM_CLIP": 1, "TEST.NUM_CROP": 1})
    loader = build_loader(cfg, "test")
    try:
        s = loader.sample(0)
        assert (s.video.width, s.video.height) == (96, 72) and s.frames.min() >= 10  # every frame drawn is 160x120
        batches = list(loader)  # was: one batch, a 96x72 crop window applied to 160x120 frames
        assert batches == []
        assert len(loader.stats["skipped"]) == 1 and "the index recorded 96x72" in loader.stats["skipped"][0]
    finally:
        loader.close()


# ------------------------------------------------------------ Codec names
# The index records a video's codec by the codec's name, not by the decoder FFmpeg picked for it: an AV1 video is
# 'av1' (decoded here by 'libdav1d'), so that NVDEC's limits and DATA.NVDEC_CODECS apply to it.
def _av1(path: str) -> None:
    try:
        av.codec.Codec("libsvtav1", "w")
    except av.codec.codec.UnknownCodecError:  # an FFmpeg build without the encoder
        pytest.skip("no AV1 encoder (libsvtav1) in this FFmpeg")
    with av.open(path, "w") as c:
        s = c.add_stream("libsvtav1", rate=25, options={"preset": "12"})
        s.width, s.height, s.pix_fmt = 256, 192, "yuv420p"
        for i, f in enumerate(pattern_frames(8, 256, 192)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts = i
            c.mux(s.encode(frame))
        c.mux(s.encode(None))


def test_an_av1_video_is_indexed_as_av1_and_goes_to_an_av1_nvdec(tmp_path):
    path = str(tmp_path / "clip.mp4")
    _av1(path)
    info = probe_video(path)
    assert info.codec == "av1" and info.num_frames == 8  # was 'libdav1d'
    ampere = RoutingPolicy(gpu_usable=True, compute_capability=(8, 6))  # GA10x: NVDEC decodes AV1
    assert choose_route(info.codec, info.coded_width, info.coded_height, info.pix_fmt, ampere) == (NVDEC, "")


def test_an_av1_record_cached_as_libdav1d_is_probed_again(tmp_path):
    from dali_pipelines.index import build_index, probed_before
    from dali_pipelines.index_store import load_cache, save_cache

    _av1(str(tmp_path / "clip.mp4"))
    lst = tmp_path / "list.txt"
    lst.write_text("clip.mp4 0\n")
    cache = build_index(str(lst), str(tmp_path), progress=False).cache_path
    stored = load_cache(cache, str(tmp_path))
    stored.table.texts["codec"][stored.table.columns["codec"][0]] = "libdav1d"  # what an index built before wrote
    save_cache(cache, str(lst), str(tmp_path), stored.rel_paths, stored.table)
    assert load_cache(cache, str(tmp_path)).table.info(0).codec == "libdav1d"
    assert not probed_before([cache]).rows  # a lists --check probes it again too (it reused the record)
    again = build_index(str(lst), str(tmp_path), progress=False)  # was: the record reused, NVDEC rules not applied
    assert again.probed == 1 and again.infos[0].codec == "av1"
    assert load_cache(cache, str(tmp_path)).table.info(0).codec == "av1"


# ------------------------------------------------------------ Audio longer than the video
# A complete WebM/MKV whose audio track runs longer than its video is not 'truncated' (Matroska declares only the
# file's duration, which the longer stream sets); a truncated copy still is.
def _with_longer_audio(path: str, vcodec: str, acodec: str, audio_s: float = 3.0) -> None:
    with av.open(path, "w") as c:
        video = c.add_stream(vcodec, rate=25, options={"deadline": "realtime", "cpu-used": "8"}
                             if vcodec == "libvpx-vp9" else {"preset": "veryfast"})
        video.width, video.height, video.pix_fmt = 96, 72, "yuv420p"
        audio = c.add_stream(acodec, rate=48000)
        for i, f in enumerate(pattern_frames(40)):  # 1.6 s of video
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            c.mux(video.encode(frame))
        c.mux(video.encode(None))
        for i in range(int(audio_s * 48000 / 960)):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="flt", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * 960
            c.mux(audio.encode(frame))
        c.mux(audio.encode(None))


@pytest.mark.parametrize("name,vcodec,acodec", [("clip.webm", "libvpx-vp9", "libopus"), ("clip.mkv", "libx264", "aac")])
def test_audio_longer_than_the_video_is_not_truncation(tmp_path, name, vcodec, acodec):
    path = tmp_path / name
    _with_longer_audio(str(path), vcodec, acodec)
    with av.open(str(path)) as c:
        assert c.duration / 1e6 > 2.9 and len(list(c.decode(video=0))) == 40
    assert probe_video(str(path)).num_frames == 40  # was: 'truncated: 40 frames readable, ending at 1.600 s of 3 s'
    data = path.read_bytes()
    cut = tmp_path / f"cut_{name}"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(BadVideoError, match="truncated"):
        probe_video(str(cut))


# ------------------------------------------------------------ A damaged picture the decoder conceals
# The full-decode probe (DATA.INDEX_FULL_DECODE, verify_data.py --full-decode) catches a damaged picture in the
# middle of a stream that the decoder conceals and outputs anyway (an H.264 frame flagged corrupt), as it promises.
def test_a_concealed_damaged_frame_fails_the_full_decode_probe(tmp_path):
    good, bad = str(tmp_path / "good.mp4"), str(tmp_path / "bad.mp4")
    write_video(good, pattern_frames(40), codec="h264", gop=8)
    with av.open(good) as c:
        pos, size = [(p.pos, p.size) for p in c.demux(video=0) if p.size][20]
    data = bytearray(open(good, "rb").read())
    data[pos + size // 4:pos + size] = np.random.default_rng(0).integers(0, 256, size - size // 4, np.uint8).tobytes()
    open(bad, "wb").write(bytes(data))
    with av.open(bad) as c:
        assert len(list(c.decode(video=0))) == 40  # every frame comes out: FFmpeg conceals the damage
    assert probe_video(good, full_decode=True).num_frames == 40
    assert probe_video(bad).num_frames == 40  # the quick probe decodes only the first frame
    with pytest.raises(BadVideoError, match="corrupt: frame 20 decodes with errors"):  # was: 40 frames, good
        probe_video(bad, full_decode=True)
