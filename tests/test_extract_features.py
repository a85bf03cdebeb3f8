"""tools.extract_features: pooled features equal the model's on the loader's views; sliding-window starts and
frames as computed by hand (last window, videos shorter than a window); resume after an interruption; formats."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from configs import load_config
from engine.distributed import DistContext
from models import build_model
from tests.sync_order import record_syncs, synced_renames
from tests.video_fixtures import make_clip_dataset, pattern_frames, roi_resize_ref
from tools import extract_features as ef
from tools import feature_windows as fw
from tools.feature_store import FeatureStore, check_settings, finished_paths, merge_index, read_features
from tools.model_io import weights_identity

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")
OPTS = ["DATA.INPUT_SIZE", "32", "DATA.NUM_FRAMES", "4", "DATA.TUBELET_SIZE", "2", "DATA.NUM_CLASSES", "3",
        "DATA.NUM_THREADS", "1", "DATA.NUM_WORKERS", "1", "DATA.INDEX_WORKERS", "1", "DATA.LABEL_LIST", "",
        "DATA.DECODE_DEVICE", "cpu", "TEST.BATCH_SIZE", "2", "TEST.NUM_CLIP", "2", "TEST.NUM_CROP", "3"]
FPS = 25.0  # write_video's default frame rate


@pytest.mark.parametrize("n,window,stride,starts", [
    (10, 4, 3, [0, 3, 6]),        # the stride lands on the last window exactly
    (11, 4, 3, [0, 3, 6, 7]),     # an extra last window ending at the last frame
    (16, 8, 8, [0, 8]),
    (17, 8, 8, [0, 8, 9]),
    (4, 4, 2, [0]),               # exactly one window
    (3, 4, 1, [0]),               # shorter than a window: one window at 0
])
def test_window_starts_by_hand(n, window, stride, starts):
    assert ef.window_starts(n, window, stride) == starts


def test_window_frames_by_hand():
    assert ef.window_frames(7, 11, 4, 4).tolist() == [7, 8, 9, 10]
    assert ef.window_frames(0, 3, 4, 4).tolist() == [0, 1, 2, 2]  # past the end: the last frame repeats
    assert ef.window_frames(8, 40, 8, 4).tolist() == [8, 10, 12, 14]  # 4 frames spread over 8
    with pytest.raises(ValueError, match="^window and stride must be at least 1, got window 0, stride 1$"):
        ef.window_starts(10, 0, 1)
    with pytest.raises(ValueError, match="^window and stride must be at least 1, got window 4, stride 0$"):
        ef.window_starts(10, 4, 0)


def test_roi_resize_matches_the_pipeline_reference():
    frames = pattern_frames(3, 96, 72)
    start, end = np.array([4.5, 10.25], np.float32), np.array([70.0, 80.5], np.float32)
    ours = ef.roi_resize(torch.from_numpy(frames), start.tolist(), end.tolist(), 32)
    ref = np.clip(np.round(roi_resize_ref(frames, start, end, 32)), 0, 255)
    assert np.abs(ours.permute(0, 2, 3, 1).numpy() - ref).max() <= 1.0  # at most one 8-bit rounding step
    assert np.mean(ours.permute(0, 2, 3, 1).numpy() == ref) > 0.99


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("feat_clips")
    make_clip_dataset(str(root), [4, 3, 11], codec="vp9", size=(96, 72))
    (root / "broken.webm").write_bytes(b"\x1a\x45\xdf\xa3 not really a webm")
    return root


BROKEN = "not a readable video container (Invalid data found when processing input)"  # broken.webm's reason


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = load_config(DEMO, OPTS)
    torch.manual_seed(11)
    model = build_model(cfg).eval()
    ckpt = tmp_path_factory.mktemp("feat_model") / "model.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    return cfg, model, ckpt


def _videos(clips: Path) -> list[str]:
    return [str(p) for p in sorted((clips / "videos").iterdir())]


def _index(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "index.jsonl").read_text().splitlines()]


def test_view_features_equal_the_models_on_the_loaders_views(clips, tiny, tmp_path, capsys):
    from dali_pipelines.loader import build_loader

    cfg, model, ckpt = tiny
    videos = _videos(clips)
    out = tmp_path / "views"
    rc = ef.main([*videos, str(clips / "broken.webm"), "--cfg", DEMO, "--weights", str(ckpt), "--out", str(out),
                  "--quiet", "--opts", *OPTS])
    assert rc == 0, capsys.readouterr().err
    index = _index(out)
    assert [r["path"] for r in index] == videos and all(r["num_windows"] == 6 for r in index)
    failed = [json.loads(x) for x in (out / "failed-rank000.jsonl").read_text().splitlines()]
    assert failed == [{"path": str(clips / "broken.webm"), "error": BROKEN}]
    # the same views straight from the evaluation loader, through the model's own forward_features
    lst = tmp_path / "same.txt"
    lst.write_text("".join(f"{v} 0\n" for v in videos))
    test_cfg = cfg.clone()
    test_cfg.defrost()
    test_cfg.DATA.ROOT, test_cfg.DATA.VAL_FILE = "", str(lst)
    loader = build_loader(test_cfg, "test")
    by_path = {r["path"]: r for r in index}
    seen = 0
    with torch.no_grad():
        for batch in loader:
            clips_ = batch["video"].flatten(0, 1).float()
            want = model.forward_head(model.forward_features(clips_), pre_logits=True).view(*batch["video"].shape[:2],
                                                                                            -1)
            for row, feats in zip(batch["index"].tolist(), want):
                got = read_features(str(out), by_path[videos[row]])
                np.testing.assert_allclose(got, feats.numpy(), rtol=1e-5, atol=1e-5)
                seen += 1
    loader.close()
    assert seen == 3


def test_window_features_index_and_the_one_window_case(clips, tiny, tmp_path, capsys):
    cfg, model, ckpt = tiny
    videos = _videos(clips)  # 4, 3 and 11 frames
    out = tmp_path / "dense"
    rc = ef.main([*videos, "--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--window", "4", "--stride",
                  "3", "--windows-per-batch", "3", "--format", "safetensors", "--quiet", "--opts", *OPTS])
    assert rc == 0, capsys.readouterr().err
    index = {r["path"]: r for r in _index(out)}
    expect = {videos[0]: [0], videos[1]: [0], videos[2]: [0, 3, 6, 7]}
    for path, starts in expect.items():
        r = index[path]
        assert r["starts_frames"] == starts and r["num_windows"] == len(starts)
        assert r["starts_seconds"] == pytest.approx([s / FPS for s in starts])
        assert read_features(str(out), r).shape == (len(starts), model.embed_dim)
    # The 11-frame video's windows (two batches of windows, frames shared between windows decoded once) hold the
    # model's features of frames s..s+3, each window built here on its own from a plain decode of every frame.
    from dali_pipelines.pyav_io import decode_frames

    every = decode_frames(videos[2], range(11))
    cfg_size = int(OPTS[OPTS.index("DATA.INPUT_SIZE") + 1])
    with torch.no_grad():
        want = torch.cat([model.forward_head(model.forward_features(
            fw._normalised_centre_crop(every[s:s + 4], cfg_size, torch.device("cpu"))[None]), pre_logits=True)
            for s in expect[videos[2]]]).numpy()
    got = read_features(str(out), index[videos[2]])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(got[0] - got[1]).max() > 1e-3  # distinct windows, distinct features
    # a 4-frame video, window 4 = the frames of a 1-clip test view: the 1-clip x 1-crop view features agree when
    # the loader decodes with PyAV too (DALI's VP9 decoder converts colours slightly differently)
    views = tmp_path / "one_view"
    one = [o if o not in ("2", "3") else "1" for o in OPTS[-4:]]
    assert ef.main([videos[0], "--cfg", DEMO, "--weights", str(ckpt), "--out", str(views), "--quiet", "--opts",
                    *OPTS[:-4], *one, "DATA.CPU_DECODER", "pyav"]) == 0
    view_feats = read_features(str(views), _index(views)[0])
    # (DALI and torch round a few resized pixels to different 8-bit values: a small spread, not a bias)
    np.testing.assert_allclose(read_features(str(out), index[videos[0]]), view_feats, rtol=0, atol=5e-3)


def test_window_seconds_are_the_frames_own_times_after_a_gap(tiny, tmp_path, capsys):
    """starts_seconds was start / fps with the average rate: a video with a gap (dropped frames, a variable rate;
    here 4 frame times missing after frame 7) had every window placed at the wrong time, before and after the gap.
    They are the start frames' timestamps now, counted from the first frame."""
    from fractions import Fraction

    import av

    cfg, model, ckpt = tiny
    path = tmp_path / "gap.mp4"
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 96, 72, "yuv420p"
    stream.codec_context.time_base = Fraction(1, 25)
    for pixels, pts in zip(pattern_frames(16), [*range(8), *range(12, 20)]):
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts, frame.time_base = pts, Fraction(1, 25)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    out = tmp_path / "windows"
    assert ef.main([str(path), "--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--window", "4", "--quiet",
                    "--opts", *OPTS]) == 0, capsys.readouterr().err
    record, = _index(out)
    assert record["starts_frames"] == [0, 4, 8, 12] and record["fps"] == pytest.approx(20.0)  # 16 frames in 0.8 s
    assert record["starts_seconds"] == pytest.approx([0.0, 0.16, 0.48, 0.64])  # not [0, 0.2, 0.4, 0.6]


@pytest.mark.parametrize("windows", [[], ["--window", "4"]])
def test_a_still_image_is_not_a_video_in_either_mode(clips, tiny, tmp_path, capsys, windows):
    """The views refuse a still image (it opens as a one-frame video); --window gave it a row of features, with a
    frame rate made up for it, so that one file was unreadable or extracted depending on the mode."""
    import av

    cfg, model, ckpt = tiny
    image = tmp_path / "photo.png"
    container = av.open(str(image), "w", format="image2")
    stream = container.add_stream("png")
    stream.width, stream.height, stream.pix_fmt = 96, 72, "rgb24"
    for packet in [*stream.encode(av.VideoFrame.from_ndarray(pattern_frames(1)[0], format="rgb24")),
                   *stream.encode(None)]:
        container.mux(packet)
    container.close()
    video = _videos(clips)[2]
    out = tmp_path / "out"
    assert ef.main([str(image), video, "--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--quiet", *windows,
                    "--opts", *OPTS]) == 0, capsys.readouterr().err
    assert [r["path"] for r in _index(out)] == [video]
    failed = [json.loads(x) for x in (out / "failed-rank000.jsonl").read_text().splitlines()]
    assert failed == [{"path": str(image), "error": "a single frame: a still image, not a video"}]


def test_the_failed_list_named_by_help_is_the_file_a_run_writes(clips, tiny, tmp_path, capsys):
    """--help named the failed list ``failed-rank<r>.jsonl``, read as failed-rank0.jsonl, while rank 0 writes
    failed-rank000.jsonl: the help's placeholder has the width of the rank in the name written."""
    import re

    _, _, ckpt = tiny
    with pytest.raises(SystemExit):
        ef.parse_args(["--help"])
    placeholder = re.search(r"failed-rank<(r+)>\.jsonl", capsys.readouterr().out)
    assert placeholder, "--help names no failed-rank<...>.jsonl"
    out = tmp_path / "out"
    assert ef.main([str(clips / "broken.webm"), _videos(clips)[0], "--cfg", DEMO, "--weights", str(ckpt),
                    "--out", str(out), "--quiet", "--window", "4", "--opts", *OPTS]) == 0, capsys.readouterr().err
    written = sorted(p.name for p in out.glob("failed-rank*.jsonl"))
    assert written == [f"failed-rank{0:0{len(placeholder.group(1))}d}.jsonl"], written


def _phone_and_plain(folder: Path) -> tuple[str, str]:
    """A plain H.264 clip and the same clip marked as a phone's portrait video (shown turned 90° clockwise)."""
    import shutil

    from dali_pipelines.pyav_encode import write_video
    from tests.video_fixtures import mark_rotated

    folder.mkdir()
    plain, phone = folder / "plain.mp4", folder / "phone.mp4"
    write_video(str(plain), pattern_frames(16, 48, 32), codec="h264", gop=4)
    shutil.copy(plain, phone)
    mark_rotated(str(phone))
    return str(plain), str(phone)


def _turned_note(phone: str) -> str:
    return (f"note: {phone}: its display matrix shows it turned 90° clockwise (a phone's portrait video); it was read "
            "for its features as stored, unturned, as evaluation reads it")


@pytest.mark.parametrize("extra", [(), ("--window", "4")], ids=["views", "windows"])
def test_a_video_marked_to_be_shown_turned_gets_predicts_note(tiny, tmp_path, capsys, extra):
    """A phone's portrait video was used sideways, as stored, without a word, where predict notes it: one note per
    such video now, in predict's words (its features those of the same frames unmarked); a rerun that skips it, as
    extracted, says nothing."""
    _, _, ckpt = tiny
    plain, phone = _phone_and_plain(tmp_path / "videos")
    out = tmp_path / "out"
    for run in ("first", "rerun"):
        rc = ef.main([plain, phone, "--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--quiet", *extra,
                      "--opts", *OPTS])
        err = capsys.readouterr().err
        assert rc == 0, err
        notes = [line for line in err.splitlines() if line.startswith("note:")]
        assert notes == ([_turned_note(phone)] if run == "first" else []), run
    rows = {r["path"]: r for r in _index(out)}
    np.testing.assert_array_equal(read_features(str(out), rows[phone]), read_features(str(out), rows[plain]))


def test_predictor_features_give_the_note_on_a_turned_video(tiny, tmp_path, capsys):
    """Predictor.features notes a phone's portrait video as the command does, once per call, in both modes."""
    from tools.predict import Predictor

    _, _, ckpt = tiny
    plain, phone = _phone_and_plain(tmp_path / "videos")
    with Predictor(str(ckpt), cfg=DEMO, opts=OPTS, device="cpu") as predictor:
        for kwargs in ({}, {"window": 4}):
            records = predictor.features([plain, phone, phone], **kwargs)
            assert [r["status"] for r in records] == ["ok"] * 3, kwargs
            notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
            assert notes == [_turned_note(phone)], kwargs


def test_predictor_features_are_the_commands_in_both_modes(clips, tiny, tmp_path):
    """tools.predict.Predictor.features returns in memory, in the order given, what the command writes: the view
    rows and the window rows with their starts; an unreadable video is a record with its reason."""
    from tools.predict import Predictor

    _, model, ckpt = tiny
    videos = _videos(clips)[::-1] + [str(clips / "broken.webm")]
    with Predictor(str(ckpt), cfg=DEMO, opts=OPTS, device="cpu") as predictor:
        for mode, extra, kwargs in (("views", [], {}), ("windows", ["--window", "4", "--stride", "3"],
                                                         {"window": 4, "stride": 3})):
            out = tmp_path / mode
            assert ef.main([*videos, "--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--quiet", *extra,
                            "--opts", *OPTS]) == 0
            written = {r["path"]: r for r in _index(out)}
            records = predictor.features(videos, **kwargs)
            assert [r["path"] for r in records] == videos
            assert records[-1]["status"] == "error" and records[-1]["error"] == BROKEN
            for record in records[:-1]:
                row = written[record["path"]]
                assert record["status"] == "ok" and record["mode"] == mode
                assert record["starts_frames"] == row["starts_frames"]
                assert record["features"].shape == (row["num_windows"], model.embed_dim)
                np.testing.assert_allclose(record["features"], read_features(str(out), row), rtol=1e-6, atol=1e-6)


def test_interrupted_run_resumes_without_redoing_finished_videos(clips, tiny, tmp_path, monkeypatch):
    cfg, model, _ = tiny
    videos = _videos(clips)
    full, part = tmp_path / "full", tmp_path / "part"
    ef.extract(cfg, model, videos, str(full), DistContext(), window=4, stride=2, shard_videos=1, progress=False)
    flushes = {"n": 0}
    real_flush = FeatureStore.flush

    def flush_then_die(self):
        real_flush(self)
        flushes["n"] += 1
        if flushes["n"] == 1 and self.written == 1:
            raise KeyboardInterrupt  # killed right after the first video's shard and index line

    monkeypatch.setattr(FeatureStore, "flush", flush_then_die)
    with pytest.raises(KeyboardInterrupt):
        ef.extract(cfg, model, videos, str(part), DistContext(), window=4, stride=2, shard_videos=1, progress=False)
    monkeypatch.setattr(FeatureStore, "flush", real_flush)
    first_shard = part / "features-rank000-00000.npy"
    stamp = first_shard.stat().st_mtime_ns
    result = ef.extract(cfg, model, videos, str(part), DistContext(), window=4, stride=2, shard_videos=1,
                        progress=False)
    assert (result["done_before"], result["written"]) == (1, 2)
    assert first_shard.stat().st_mtime_ns == stamp  # the finished video was not redone
    lines = [json.loads(x) for x in (part / "index-rank000.jsonl").read_text().splitlines()]
    assert sorted(r["path"] for r in lines) == sorted(videos)  # each video exactly once
    assert sorted(p.name for p in part.glob("features-*")) == [f"features-rank000-0000{i}.npy" for i in range(3)]
    for a, b in zip(_index(full), _index(part)):
        assert a["path"] == b["path"] and a["starts_frames"] == b["starts_frames"]
        np.testing.assert_array_equal(read_features(str(full), a), read_features(str(part), b))
    again = ef.extract(cfg, model, videos, str(part), DistContext(), window=4, stride=2, progress=False)
    assert (again["done_before"], again["written"]) == (3, 0)
    with pytest.raises(ValueError, match="stride: 2 before, 3 now"):  # other settings never mix into the folder
        ef.extract(cfg, model, videos, str(part), DistContext(), window=4, stride=3, progress=False)


def test_a_feature_folder_that_cannot_be_made_is_one_line_naming_it(tmp_path):
    """FeatureStore made its folder with a plain makedirs: a bad one was an OSError that named no argument."""
    from evautil.errors import OutputFolderError

    (tmp_path / "a_file").write_text("x")
    for out, why in ((tmp_path / "a_file" / "feats", "Not a directory"),
                     (tmp_path / ("f" * 300), "File name too long")):
        with pytest.raises(OutputFolderError) as raised:
            FeatureStore(str(out))
        assert str(raised.value) == f"out_dir {out}: cannot create the folder ({why})"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_line_cut_by_a_crash_does_not_swallow_the_next_runs_first_line(tmp_path):
    out = str(tmp_path)
    store = FeatureStore(out, shard_videos=1)
    store.add({"path": "a.mp4"}, np.ones((2, 3)))
    store.add({"path": "b.mp4"}, np.ones((2, 3)))
    index = tmp_path / "index-rank000.jsonl"
    text = index.read_text()
    index.write_text(text[:-20])  # b's line cut by a crash mid-append: b is redone by the next run
    assert finished_paths(out) == {"a.mp4"}
    store = FeatureStore(out, shard_videos=1)
    store.add({"path": "b.mp4"}, 2 * np.ones((2, 3)))
    assert finished_paths(out) == {"a.mp4", "b.mp4"}  # not glued onto the cut line and lost again
    merge_index(out, ["a.mp4", "b.mp4"])
    assert [r["path"] for r in _index(tmp_path)] == ["a.mp4", "b.mp4"]
    np.testing.assert_array_equal(read_features(out, _index(tmp_path)[1]), 2 * np.ones((2, 3), np.float32))


def test_every_file_of_the_store_is_synced_before_its_rename_and_the_folder_after(tmp_path, monkeypatch):
    """index.jsonl (a rename of an unsynced file), settings.json and failed-rank000.jsonl were written unsynced: a
    power loss right after a run could leave them empty or cut under their names. The index lines are synced once
    per shard (not per video), and the new index file's name in its folder."""
    out = str(tmp_path)
    events = record_syncs(monkeypatch)
    check_settings(out, {"mode": "video"}, write=True)
    store = FeatureStore(out, shard_videos=2)
    for i, name in enumerate(("a.mp4", "b.mp4", "c.mp4")):
        store.add({"path": name}, i * np.ones((2, 3)))
    store.flush()
    store.fail("d.mp4", "unreadable")
    store.write_failed(retried={"d.mp4"}, done={"a.mp4", "b.mp4", "c.mp4"})
    merge_index(out, ["a.mp4", "b.mp4", "c.mp4"])
    files = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert files == ["failed-rank000.jsonl", "features-rank000-00000.npy", "features-rank000-00001.npy",
                     "index-rank000.jsonl", "index.jsonl", "settings.json"]
    renamed = sorted(synced_renames(events, out))
    assert renamed == sorted((f, (tmp_path / f).stat().st_size) for f in files if f != "index-rank000.jsonl"), events
    appended = [e for e in events if e[:2] == ("fsync", "index-rank000.jsonl")]
    assert len(appended) == 2, events  # one per shard
    first = events.index(appended[0])
    assert events[first + 1] == ("fsync folder", out), events  # the new file's name, once


def test_a_video_whose_shard_is_gone_is_redone_and_no_shard_name_is_reused(tmp_path):
    """An index line whose shard was gone (deleted, not copied with the folder) kept its video skipped for ever,
    and the next shard took the lost one's name: the old line then read another video's rows as its features."""
    out = str(tmp_path)
    store = FeatureStore(out, shard_videos=1)
    store.add({"path": "a.mp4"}, np.ones((2, 3)))
    store.add({"path": "b.mp4"}, 2 * np.ones((1, 3)))
    (tmp_path / "features-rank000-00001.npy").unlink()  # b's, the last shard
    assert finished_paths(out) == {"a.mp4"}
    store = FeatureStore(out, shard_videos=1)
    store.add({"path": "c.mp4"}, 3 * np.ones((4, 3)))
    assert (tmp_path / "features-rank000-00002.npy").is_file()
    assert not (tmp_path / "features-rank000-00001.npy").exists()
    merge_index(out, ["a.mp4", "b.mp4", "c.mp4"])  # b has no features: left out, not pointed into c's shard
    assert [(r["path"], r["shard"]) for r in _index(tmp_path)] == [("a.mp4", "features-rank000-00000.npy"),
                                                                   ("c.mp4", "features-rank000-00002.npy")]
    np.testing.assert_array_equal(read_features(out, _index(tmp_path)[1]), 3 * np.ones((4, 3), np.float32))
    store.add({"path": "b.mp4"}, 2 * np.ones((1, 3)))  # a rerun given b extracts it again
    merge_index(out, ["a.mp4", "b.mp4", "c.mp4"])
    assert [r["shard"] for r in _index(tmp_path)] == [f"features-rank000-0000{i}.npy" for i in (0, 3, 2)]
    np.testing.assert_array_equal(read_features(out, _index(tmp_path)[1]), 2 * np.ones((1, 3), np.float32))


def test_a_rerun_extracts_again_the_videos_whose_shard_is_gone_and_says_so(clips, tiny, tmp_path, capsys):
    _, _, ckpt = tiny
    videos = _videos(clips)
    out = tmp_path / "feats"
    args = [*videos, "--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--shard-videos", "1", "--quiet",
            "--opts", *OPTS]
    assert ef.main(args) == 0, capsys.readouterr().err
    before = {r["path"]: read_features(str(out), r) for r in _index(out)}
    (out / "features-rank000-00001.npy").unlink()  # the second video's
    capsys.readouterr()
    assert ef.main(args) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"note: the index in {out} lists 1 video without features, its shard gone "
                   "(features-rank000-00001.npy): extracted again when given",
                   f"1 video extracted, 2 already done; 3 of 3 in {out / 'index.jsonl'}"]
    index = _index(out)
    assert [r["path"] for r in index] == videos and index[1]["shard"] == "features-rank000-00003.npy"
    for r in index:
        np.testing.assert_array_equal(read_features(str(out), r), before[r["path"]])
    assert ef.main(args) == 0  # done: no note, nothing extracted
    assert capsys.readouterr().err.splitlines() == [f"0 videos extracted, 3 already done; 3 of 3 in "
                                                    f"{out / 'index.jsonl'}"]


def test_the_temporary_shards_of_a_run_killed_mid_write_are_removed_by_the_next(clips, tiny, tmp_path):
    """A run killed (SIGKILL, a node lost) while writing a shard left its temporary file, as large as the shard,
    hidden in the folder for ever: a job preempted again and again filled the disk with them."""
    import tempfile

    cfg, model, _ = tiny
    out = tmp_path / "feats"
    out.mkdir()

    def left_by_a_kill(name: str) -> Path:  # atomic_write's temporary name for the shard it was writing
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out)
        os.write(fd, b"\x93NUMPY half a shard")
        os.close(fd)
        return Path(tmp)

    ours = [left_by_a_kill("features-rank000-00000.npy"), left_by_a_kill("features-rank000-00007.safetensors")]
    others = [left_by_a_kill("features-rank001-00000.npy"), left_by_a_kill("settings.json")]  # not rank 0's shards
    result = ef.extract(cfg, model, _videos(clips)[:1], str(out), DistContext(), window=4, progress=False)
    assert result["written"] == 1
    assert not any(p.exists() for p in ours) and all(p.exists() for p in others)
    assert sorted(p.name for p in out.glob("features-*")) == ["features-rank000-00000.npy"]
    np.testing.assert_array_equal(read_features(str(out), _index(out)[0]).shape, (1, model.num_features))


def test_a_shard_a_killed_run_left_without_index_lines_is_removed_by_the_next(clips, tiny, tmp_path, monkeypatch):
    """A run killed between writing a shard and appending its index lines left a complete shard that no line names:
    its videos were redone into a new shard and the old one stayed on disk for ever. The next run of that rank
    removes it; shards an index line names, and another rank's (that rank may be between its two writes), stay."""
    import tools.feature_store as fs

    cfg, model, _ = tiny
    videos = _videos(clips)
    out = tmp_path / "feats"
    real_line, lines = fs._json_line, {"n": 0}

    def killed_after_the_first_videos_line(record):
        lines["n"] += 1
        if lines["n"] > 1:
            raise KeyboardInterrupt  # the second video's shard is on disk, its line never written
        return real_line(record)

    monkeypatch.setattr(fs, "_json_line", killed_after_the_first_videos_line)
    with pytest.raises(KeyboardInterrupt):
        ef.extract(cfg, model, videos, str(out), DistContext(), window=4, shard_videos=1, progress=False)
    monkeypatch.setattr(fs, "_json_line", real_line)
    assert sorted(p.name for p in out.glob("features-*")) == ["features-rank000-00000.npy",
                                                              "features-rank000-00001.npy"]
    other_rank = out / "features-rank001-00000.npy"  # no line names it either, but it is rank 1's
    other_rank.write_bytes((out / "features-rank000-00001.npy").read_bytes())
    first = (out / "features-rank000-00000.npy").stat().st_mtime_ns
    result = ef.extract(cfg, model, videos, str(out), DistContext(), window=4, shard_videos=1, progress=False)
    assert (result["done_before"], result["written"]) == (1, 2)
    named = sorted(r["shard"] for r in _index(out))
    assert named == [f"features-rank000-0000{i}.npy" for i in range(3)]
    assert sorted(p.name for p in out.glob("features-*")) == named + [other_rank.name]
    assert (out / "features-rank000-00000.npy").stat().st_mtime_ns == first


def test_only_shards_no_index_line_names_are_unfinished(tmp_path):
    """A shard named by index.jsonl alone (its rank's index file gone) is kept; a .safetensors one is found too."""
    from tools.feature_store import remove_unfinished_shards

    store = FeatureStore(str(tmp_path), shard_videos=1)
    store.add({"path": "a.mp4"}, np.ones((2, 3)))
    store.add({"path": "b.mp4"}, np.ones((2, 3)))
    merge_index(str(tmp_path), ["a.mp4", "b.mp4"])
    lines = (tmp_path / "index-rank000.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "index-rank000.jsonl").write_text(lines[0])  # b's line is in index.jsonl only
    (tmp_path / "features-rank000-00002.safetensors").write_bytes(b"never indexed")
    removed = remove_unfinished_shards(str(tmp_path), 0)
    assert [os.path.basename(p) for p in removed] == ["features-rank000-00002.safetensors"]
    assert sorted(p.name for p in tmp_path.glob("features-*")) == ["features-rank000-00000.npy",
                                                                   "features-rank000-00001.npy"]


def _not_utf8_copy(clips: Path, folder: Path) -> str:
    """A copy of a clip under a name whose bytes are not UTF-8 (as os.listdir gives it: with a surrogate)."""
    import shutil

    folder.mkdir()
    name = os.path.join(str(folder), os.fsdecode(b"caf\xe9.webm"))
    shutil.copy(_videos(clips)[2], name)
    return name


def test_a_video_name_that_is_not_utf8_is_extracted_in_windows_and_listed_unreadable_in_views(clips, tiny, tmp_path,
                                                                                              capsys):
    """A name with bytes that are not UTF-8 (a file copied from an old Latin-1 disk) could not be written to an index
    or failed line: every run exited 2 with "'utf-8' codec can't encode character '\\udce9'", naming no file, and
    left a shard no line named; no video of the list was ever finished (windows) or listed (views)."""
    _, _, ckpt = tiny
    odd = _not_utf8_copy(clips, tmp_path / "odd")
    videos = [odd, _videos(clips)[0]]
    for mode, out, extra in (("windows", tmp_path / "w", ["--window", "4"]), ("views", tmp_path / "v", [])):
        args = [*videos, "--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--quiet", *extra, "--opts", *OPTS]
        rc = ef.main(args)
        err = capsys.readouterr().err
        assert rc == 0, err
        if mode == "windows":
            assert [r["path"] for r in _index(out)] == videos  # the name read back is the file's
            assert _index(out)[0]["starts_frames"] == [0, 4, 7]  # its 11 frames were read
            assert read_features(str(out), _index(out)[0]).shape[0] == 3
            assert ef.main(args) == 0
            assert capsys.readouterr().err.endswith(f"0 videos extracted, 2 already done; 2 of 2 in "
                                                    f"{out / 'index.jsonl'}\n")
        else:
            assert [r["path"] for r in _index(out)] == videos[1:]
            assert _failed(out) == {odd: "cannot be passed to the loader's video list: name is not valid UTF-8, and "
                                         "a video list is UTF-8 text"}


def test_a_video_given_twice_is_extracted_once(clips, tiny, tmp_path):
    """extract() given a video twice extracted it twice (windows), or stopped the views' loader with "does not hold
    the 3 videos written to it (changed by another process?)"."""
    cfg, model, _ = tiny
    videos = _videos(clips)[:2]
    for window in (4, 0):
        out = tmp_path / f"w{window}"
        result = ef.extract(cfg, model, [*videos, videos[0]], str(out), DistContext(), window=window, progress=False)
        assert (result["written"], result["listed"]) == (2, 2)
        lines = (out / "index-rank000.jsonl").read_text().splitlines()
        assert sorted(json.loads(x)["path"] for x in lines) == sorted(videos)


@pytest.mark.parametrize("fmt", ["npy", "safetensors"])
def test_a_shard_is_on_disk_before_its_index_lines_are(tmp_path, monkeypatch, fmt):
    """The index lines were synced but the shard was not: after a power loss the index could list videos whose
    shard is empty or gone, and every rerun skipped them. What a power loss keeps is what was synced: the shard's
    contents and the folder entry the rename made must be synced before the index lines are."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    store = FeatureStore(str(tmp_path), fmt=fmt, shard_videos=1)
    store.add({"path": "a.mp4"}, np.ones((2, 3)))
    shard = f"features-rank000-00000.{fmt}"
    before_index = synced[:synced.index(str(tmp_path / "index-rank000.jsonl"))]
    contents = [i for i, p in enumerate(before_index) if os.path.basename(p).startswith(f".{shard}.")]
    assert contents, synced  # the temporary file the shard was renamed from
    assert str(tmp_path) in before_index[contents[0] + 1:], synced  # then the rename into the folder
    record = json.loads((tmp_path / "index-rank000.jsonl").read_text())
    np.testing.assert_array_equal(read_features(str(tmp_path), record), np.ones((2, 3)))


def test_a_line_cut_inside_a_character_of_its_path_is_redone(tmp_path):
    """A crash mid-append may cut a line inside a multi-byte character of a non-ASCII path: the file stopped being
    UTF-8 and every later run failed with "'utf-8' codec can't decode byte", without naming a file."""
    store = FeatureStore(str(tmp_path), shard_videos=1)
    store.add({"path": "a.mp4"}, np.ones((2, 3)))
    index = tmp_path / "index-rank000.jsonl"
    with open(index, "ab") as f:
        f.write('{"path": "\u00fc'.encode()[:-1])  # the first byte of the two of "ü"
    for line in ("1", '{"no_path": 1}'):  # lines that are JSON but name no video are passed over too
        store = FeatureStore(str(tmp_path), shard_videos=1)
        with open(index, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    assert finished_paths(str(tmp_path)) == {"a.mp4"}
    store.add({"path": "b.mp4"}, np.ones((2, 3)))
    assert finished_paths(str(tmp_path)) == {"a.mp4", "b.mp4"}
    merge_index(str(tmp_path), ["a.mp4", "b.mp4"])
    assert [r["path"] for r in _index(tmp_path)] == ["a.mp4", "b.mp4"]


@pytest.mark.parametrize("text", ["", "{cut", "[]", "\udcff"])
def test_a_damaged_settings_file_is_named(clips, tiny, tmp_path, capsys, text):
    """A settings.json that is not a JSON object gave a traceback, or a line that named no file ("error: Expecting
    value: line 1 column 1 (char 0)"). With features in the folder it is refused, naming it; without, it binds
    nothing and is written again."""
    _, _, ckpt = tiny
    video = _videos(clips)[2]
    common = [video, "--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--window", "8"]
    for out, features in ((tmp_path / "with", True), (tmp_path / "without", False)):
        if features:
            assert ef.main([*common, "--out", str(out), "--opts", *OPTS]) == 0, capsys.readouterr().err
            capsys.readouterr()
        out.mkdir(exist_ok=True)
        (out / "settings.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        rc = ef.main([*common, "--out", str(out), "--opts", *OPTS])
        err = capsys.readouterr().err
        if features:
            assert rc == 2 and len(err.splitlines()) == 1, err
            assert err.startswith(f"error: {out / 'settings.json'} is damaged ("), err
            assert (out / "settings.json").read_bytes() == text.encode("utf-8", "surrogateescape")
        else:
            assert rc == 0, err
            assert json.loads((out / "settings.json").read_text())["window"] == 8


def test_a_second_run_into_the_same_folder_at_once_is_refused(clips, tiny, tmp_path):
    """Two runs into one --out at the same time both wrote features-rank000-00000.npy, the second replacing the
    first's rows, and both exited 0: half of index.jsonl pointed at the other run's features."""
    from tools.feature_store import lock_output

    cfg, model, _ = tiny
    videos, out = _videos(clips), str(tmp_path / "feats")
    with lock_output(out, 0):  # another run, writing rank 0's files
        with pytest.raises(ValueError, match=f"^{out} is being written by another run "):
            ef.extract(cfg, model, videos[:1], out, DistContext(), window=4, progress=False)
        assert sorted(os.listdir(out)) == [".rank000.lock"]  # nothing read or written
        other = ef.extract(cfg, model, videos[:1], str(tmp_path / "other"), DistContext(), window=4, progress=False)
        assert other["written"] == 1
    first = ef.extract(cfg, model, videos[:1], out, DistContext(), window=4, progress=False)
    again = ef.extract(cfg, model, videos, out, DistContext(), window=4, progress=False)  # the lock was let go
    assert (first["written"], again["done_before"], again["written"]) == (1, 1, 2)


def test_an_out_linked_to_a_folder_not_made_yet_is_made_through_the_link(clips, tiny, tmp_path):
    """--out a link to a folder that did not exist yet failed with "error: [Errno 17] File exists": the lock's
    makedirs took the link for an existing file, where a link to an existing folder worked."""
    cfg, model, _ = tiny
    link = tmp_path / "feats"
    link.symlink_to(tmp_path / "on_the_big_disk" / "feats")
    result = ef.extract(cfg, model, _videos(clips)[:1], str(link), DistContext(), window=4, progress=False)
    assert result["written"] == 1 and link.is_symlink()
    real = tmp_path / "on_the_big_disk" / "feats"
    (record,) = _index(real)
    assert read_features(str(real), record).shape == (record["num_windows"], model.embed_dim)


@pytest.mark.parametrize("fmt", ["npy", "safetensors"])
def test_a_full_disk_is_one_line_and_leaves_no_partial_shard(clips, tiny, tmp_path, monkeypatch, capsys, fmt):
    """A shard that filled the disk gave a traceback (safetensors' own error type) or "error: 6144 requested and
    2016 written", naming no file, and left features-rank000-00000.<ext>.tmp behind."""
    import safetensors.numpy
    from safetensors import SafetensorError

    _, _, ckpt = tiny
    out = tmp_path / "feats"

    def full_disk_npy(file, array):
        file.write(b"part")
        raise OSError("6144 requested and 2016 written")  # numpy's words for a short write

    def full_disk_safetensors(tensors, filename):
        with open(filename, "wb") as f:
            f.write(b"part")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    if fmt == "npy":
        monkeypatch.setattr(np, "save", full_disk_npy)
    else:
        monkeypatch.setattr(safetensors.numpy, "save_file", full_disk_safetensors)
    rc = ef.main([_videos(clips)[2], "--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--quiet",
                  "--window", "8", "--format", fmt, "--opts", *OPTS])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1, err
    shard = out / f"features-rank000-00000.{fmt}"
    assert err == (f"error: cannot write in --out {out}: 6144 requested and 2016 written\n" if fmt == "npy" else
                   f"error: [Errno 28] No space left on device: '{shard}'\n")
    assert sorted(p.name for p in out.iterdir() if p.name != ".work") == [".rank000.lock", "settings.json"]
    assert finished_paths(str(out)) == set()


def test_progress_without_a_terminal_is_plain_lines(clips, tiny, tmp_path, capsys):
    _, _, ckpt = tiny
    videos = _videos(clips)
    for mode, done in (([], "2 batches done in "), (["--window", "4"], "3 videos done in ")):  # 2 videos a batch
        rc = ef.main([*videos, "--cfg", DEMO, "--weights", str(ckpt), "--out", str(tmp_path / f"out{len(mode)}"),
                      *mode, "--opts", *OPTS])
        err = capsys.readouterr().err  # not a terminal, as a log file
        assert rc == 0, err
        assert f"features (rank 0): {done}" in err and "\r" not in err, err


def test_fp16_shards(clips, tiny, tmp_path):
    cfg, model, _ = tiny
    videos = _videos(clips)[:2]
    ef.extract(cfg, model, videos, str(tmp_path / "a"), DistContext(), window=4, progress=False)
    ef.extract(cfg, model, videos, str(tmp_path / "b"), DistContext(), window=4, fp16=True, fmt="safetensors",
               progress=False)
    for a, b in zip(_index(tmp_path / "a"), _index(tmp_path / "b")):
        fa, fb = read_features(str(tmp_path / "a"), a), read_features(str(tmp_path / "b"), b)
        assert fa.dtype == np.float32 and fb.dtype == np.float16
        np.testing.assert_allclose(fb.astype(np.float32), fa, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_shards_get_the_mode_open_gives(tmp_path, umask):
    # safetensors writes a private (0600) file; both formats' shards must be readable as .npy ones always were.
    old = os.umask(umask)
    try:
        for fmt in ("npy", "safetensors"):
            store = FeatureStore(str(tmp_path / fmt), fmt=fmt)
            store.add({"path": "a.mp4"}, np.ones((2, 3), np.float32))
            store.flush()
            (shard,) = (tmp_path / fmt).glob("features-*")
            assert oct(shard.stat().st_mode & 0o777) == oct(0o666 & ~umask), fmt
            record = json.loads((tmp_path / fmt / "index-rank000.jsonl").read_text())
            np.testing.assert_array_equal(read_features(str(tmp_path / fmt), record), np.ones((2, 3), np.float32))
    finally:
        os.umask(old)


def _failed(out: Path, rank: int = 0) -> dict[str, str]:
    lines = [json.loads(x) for x in (out / f"failed-rank{rank:03d}.jsonl").read_text().splitlines()]
    assert len({r["path"] for r in lines}) == len(lines), lines  # each video once
    return {r["path"]: r["error"] for r in lines}


def test_no_readable_video_exits_1_with_each_videos_reason(clips, tiny, tmp_path, capsys):
    _, _, ckpt = tiny
    missing, broken = str(tmp_path / "not_there.webm"), str(clips / "broken.webm")
    out = tmp_path / "none"
    rc = ef.main([missing, broken, "--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--quiet", "--opts",
                  *OPTS])
    err = capsys.readouterr().err
    assert rc == 1, err
    failed = _failed(out)
    assert failed[missing] == "missing file"
    assert failed[broken] == BROKEN  # the video's own reason, not the list's or the run's
    assert "0 of 2 in" in err and "2 unreadable, listed in" in err


def test_a_name_whose_bytes_are_not_utf8_is_listed_failed_and_the_others_extracted(clips, tiny, tmp_path, capsys):
    """A video named with bytes that are not UTF-8 (from a Latin-1 system) is unreadable, a video list being UTF-8
    text; writing it to the failed list raised once the features were made ("error: 'utf-8' codec can't encode
    ...", exit 2). Now the list escapes the bytes, and reads back to the name (os.fsencode: the file's bytes)."""
    import shutil

    _, _, ckpt = tiny
    video = _videos(clips)[2]
    latin1 = os.path.join(os.fsencode(tmp_path), "caf\xe9.webm".encode("latin-1"))
    shutil.copy(video, latin1)
    out = tmp_path / "feats"
    args = [os.fsdecode(latin1), video, "--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--quiet",
            "--opts", *OPTS]
    for _ in range(2):  # the rerun retries the failed video, and lists it once
        assert ef.main(args) == 0, capsys.readouterr().err
        failed = [json.loads(x) for x in (out / "failed-rank000.jsonl").read_text(encoding="utf-8").splitlines()]
        assert [os.fsencode(r["path"]) for r in failed] == [latin1] and "not valid UTF-8" in failed[0]["error"]
        assert [r["path"] for r in _index(out)] == [video]


def test_reruns_rewrite_the_failed_list(clips, tiny, tmp_path, capsys):
    import shutil

    _, _, ckpt = tiny
    videos = _videos(clips)
    late, broken = tmp_path / "late.webm", str(clips / "broken.webm")
    out = tmp_path / "rerun"
    args = [videos[0], broken, str(late), "--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--quiet",
            "--opts", *OPTS]
    assert ef.main(args) == 0, capsys.readouterr().err
    assert _failed(out) == {broken: BROKEN, str(late): "missing file"}
    shutil.copy(videos[1], late)  # the missing video arrives
    # an earlier run with more ranks left its own file: one video retried now, one this run does not name
    (out / "failed-rank003.jsonl").write_text(json.dumps({"path": str(late), "error": "old"}) + "\n"
                                              + json.dumps({"path": "/elsewhere/x.webm", "error": "kept"}) + "\n")
    assert ef.main(args) == 0, capsys.readouterr().err
    assert list(_failed(out)) == [broken]  # once, and without the video extracted by this run
    assert _failed(out, 3) == {"/elsewhere/x.webm": "kept"}
    assert sorted(r["path"] for r in _index(out)) == sorted([videos[0], str(late)])
    assert ef.main(args) == 0
    assert list(_failed(out)) == [broken]


def test_failed_files_of_several_ranks():
    import tempfile

    from tools.feature_store import rewrite_failed

    with tempfile.TemporaryDirectory() as out:
        for rank, paths in ((0, ["a", "b"]), (1, ["c"])):
            rewrite_failed(out, rank, {p: f"bad {p}" for p in paths}, set(), set())
        # the next run: a and c retried (a by rank 1 now, and it fails again; c extracted), b not named
        rewrite_failed(out, 0, {}, {"a", "c"}, {"c"})
        rewrite_failed(out, 1, {"a": "bad a again"}, {"a", "c"}, {"c"})
        assert _failed(Path(out), 0) == {"b": "bad b"}
        assert _failed(Path(out), 1) == {"a": "bad a again"}
        rewrite_failed(out, 0, {}, {"b"}, {"b"})
        assert not os.path.exists(os.path.join(out, "failed-rank000.jsonl"))  # nothing left: no file


def test_output_folder_with_brackets_resumes(clips, tiny, tmp_path):
    cfg, model, _ = tiny
    videos = _videos(clips)[:2]
    out = str(tmp_path / "feats[1]")
    assert ef.extract(cfg, model, videos, out, DistContext(), window=4, progress=False)["written"] == 2
    again = ef.extract(cfg, model, videos, out, DistContext(), window=4, progress=False)
    assert (again["done_before"], again["written"], again["listed"]) == (2, 0, 2)


def test_out_that_is_a_file_is_refused_before_the_model_runs(clips, tiny, tmp_path, monkeypatch, capsys):
    _, _, ckpt = tiny
    taken = tmp_path / "existing.csv"
    taken.write_text("x")
    from tools import inference  # the tool looks load_model up here when it runs

    monkeypatch.setattr(inference, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    rc = ef.main([_videos(clips)[0], "--cfg", DEMO, "--weights", str(ckpt), "--out", str(taken), "--opts", *OPTS])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"error: --out {taken} exists and is not a folder; give a folder (new or existing)\n"
    assert taken.read_text() == "x"


def test_an_out_folder_that_cannot_be_made_is_one_line_naming_the_flag(clips, tiny, tmp_path, capsys):
    """A name too long passes the check before the model runs; making the folder failed with a bare errno line."""
    _, _, ckpt = tiny
    out = tmp_path / ("x" * 300)
    rc = ef.main([_videos(clips)[0], "--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--opts", *OPTS])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"error: --out {out}: cannot create the folder (File name too long)\n", err


@pytest.mark.parametrize("stride", ["0", "-2"])
def test_a_stride_below_one_is_refused(stride, capsys):
    """--stride 0 was taken as the default (--window) without a word: windows every 8 frames for a stride of 0."""
    with pytest.raises(SystemExit) as info:
        ef.parse_args(["a.mp4", "--weights", "w.pth", "--out", "f", "--window", "8", "--stride", stride])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: --stride must be at least 1, got {stride}")
    args = ef.parse_args(["a.mp4", "--weights", "w.pth", "--out", "f", "--window", "8"])
    assert (args.window, args.stride) == (8, 0)  # 0: extract() uses --window


@pytest.mark.parametrize("window", ["0", "-3"])
def test_a_window_below_one_is_refused(window, capsys):
    """--window 0 meant the test views without a word, while --stride 0 was refused: both are refused alike."""
    with pytest.raises(SystemExit) as info:
        ef.parse_args(["a.mp4", "--weights", "w.pth", "--out", "f", "--window", window])
    assert info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].endswith(f"error: --window must be at least 1, got {window}"), err
    assert ef.parse_args(["a.mp4", "--weights", "w.pth", "--out", "f"]).window == 0  # no --window: the test views


@pytest.mark.parametrize("flag, value", [("--shard-videos", "0"), ("--windows-per-batch", "-1")])
def test_a_batch_or_shard_size_below_one_is_refused_naming_the_flag_and_value(flag, value, capsys):
    """The error named both flags, not which one was wrong, nor its value."""
    with pytest.raises(SystemExit) as info:
        ef.parse_args(["a.mp4", "--weights", "w.pth", "--out", "f", "--window", "8", flag, value])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m tools.extract_features: error: {flag} must be at " \
                                                      f"least 1, got {value}"


def test_a_missing_label_list_is_not_needed(clips, tiny, tmp_path, capsys):
    """Features have no class names: a config whose DATA.LABEL_LIST is absent still extracts them."""
    _, model, ckpt = tiny
    video = _videos(clips)[2]
    absent = tmp_path / "labels.csv"
    out = tmp_path / "feats"
    rc = ef.main([video, "--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--window", "4", "--quiet",
                  "--opts", *OPTS, "DATA.LABEL_LIST", str(absent)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert err == f"1 video extracted, 0 already done; 1 of 1 in {out / 'index.jsonl'}\n"  # no error, no warning
    (record,) = _index(out)
    assert record["path"] == video and record["starts_frames"] == [0, 4, 7]  # 11 frames
    assert read_features(str(out), record).shape == (3, model.embed_dim)


def test_a_run_that_extracted_nothing_does_not_bind_the_folder(clips, tiny, tmp_path, capsys):
    """A first run whose videos are all missing writes no features, so its settings.json must not refuse a retry
    with other settings; once the folder holds features, other settings are refused as before."""
    _, _, ckpt = tiny
    video, missing = _videos(clips)[2], str(tmp_path / "not_there.webm")
    out = tmp_path / "feats"
    common = ["--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--quiet"]
    assert ef.main([missing, *common, "--opts", *OPTS]) == 1, capsys.readouterr().err
    capsys.readouterr()
    rc = ef.main([video, missing, *common, "--window", "8", "--opts", *OPTS])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "other settings" not in err, err
    assert [r["path"] for r in _index(out)] == [video] and _index(out)[0]["window"] == 8
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["mode"], settings["window"], settings["stride"]) == ("windows", 8, 8)
    assert _failed(out) == {missing: "missing file"}
    rc = ef.main([video, *common, "--opts", *OPTS])  # the test views into a folder of 8-frame windows
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(f"error: {out} holds features made with other settings (mode: 'windows' before, 'views' "
                          "now; window: 8 before, 0 now;") and len(err.splitlines()) == 1, err
    assert json.loads((out / "settings.json").read_text()) == settings


# ---------------------------------------------------------------------------------------------------- interruptions
@pytest.mark.parametrize("stop,window", [(KeyboardInterrupt(), 4), (KeyboardInterrupt(), 0),
                                         ("stopped", 4), (RuntimeError("CUDA error: out of memory"), 4)])
def test_an_interruption_or_a_crash_writes_the_finished_videos_first(clips, tiny, tmp_path, monkeypatch, stop,
                                                                     window):
    """Features went to disk --shard-videos (64) videos at a time: a Ctrl-C, a stop signal or a crash lost every
    video finished since the last shard, though the Ctrl-C line said the finished work was kept. They are written
    on the way out, and the same run then skips them."""
    from evautil.interrupt import Stopped

    stop = Stopped("SIGTERM") if stop == "stopped" else stop
    cfg, model, _ = tiny
    videos = _videos(clips)
    full, part = tmp_path / "full", tmp_path / "part"
    ef.extract(cfg, model, videos, str(full), DistContext(), window=window, progress=False)
    real_add, added = FeatureStore.add, []

    def add_then_stop(self, record, features):
        real_add(self, record, features)
        added.append(record["path"])
        if len(added) == 2:
            raise stop

    monkeypatch.setattr(FeatureStore, "add", add_then_stop)
    with pytest.raises(type(stop)):
        ef.extract(cfg, model, videos, str(part), DistContext(), window=window, progress=False)
    monkeypatch.setattr(FeatureStore, "add", real_add)
    lines = [json.loads(x) for x in (part / "index-rank000.jsonl").read_text().splitlines()]
    assert [r["path"] for r in lines] == added  # both finished videos, on disk with their rows
    for r in lines:
        np.testing.assert_array_equal(read_features(str(part), r),
                                      read_features(str(full), {r["path"]: r for r in _index(full)}[r["path"]]))
    result = ef.extract(cfg, model, videos, str(part), DistContext(), window=window, progress=False)
    assert (result["done_before"], result["written"], result["listed"]) == (2, 1, 3)
    for a, b in zip(_index(full), _index(part)):
        assert a["path"] == b["path"]
        np.testing.assert_array_equal(read_features(str(full), a), read_features(str(part), b))


_STOP_SCRIPT = """
import os, signal, sys

from evautil.interrupt import finished
from tools import extract_features as ef
from tools.feature_store import FeatureStore

real_add, added = FeatureStore.add, []


def add_then_signal(self, record, features):  # the signal arrives once two videos are done
    real_add(self, record, features)
    added.append(record["path"])
    if len(added) == 2:
        os.kill(os.getpid(), getattr(signal, os.environ["STOP_WITH"]))


FeatureStore.add = add_then_signal
if __name__ == "__main__":
    sys.exit(finished(ef.main(sys.argv[1:])))
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_or_ctrl_c_keeps_the_finished_videos_and_says_so(clips, tiny, tmp_path, capsys, sig):
    """SIGTERM ended the command with status -15 and nothing said, SIGINT with a line saying the written shards were
    kept while the finished videos were lost. Now both write them; SIGTERM ends with a `stopped:` line and exit code
    4 (as train.py and verify_data.py), Ctrl-C as before by SIGINT; the same command then does only the rest."""
    import signal
    import subprocess
    import sys

    from tests.conftest import child_env

    _, _, ckpt = tiny
    videos = _videos(clips)
    out = tmp_path / "feats"
    args = [*videos, "--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--window", "4", "--quiet",
            "--opts", *OPTS]
    script = tmp_path / "stop.py"
    script.write_text(_STOP_SCRIPT)
    done = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, env=child_env(STOP_WITH=sig),
                          capture_output=True, text=True, timeout=300)
    kept = (f"the videos finished so far are written to {out} (index-rank*.jsonl, with their shards), and the same "
            "command skips them")
    if sig == "SIGTERM":
        assert done.returncode == 4, done.stderr
        assert done.stderr.splitlines()[-1] == f"stopped: SIGTERM received: {kept} (exit code 4)", done.stderr
    else:
        assert done.returncode == -signal.SIGINT, done.stderr
        assert done.stderr.splitlines()[-1] == f"interrupted: extracting features: {kept}", done.stderr
    assert [json.loads(x)["path"] for x in (out / "index-rank000.jsonl").read_text().splitlines()] == videos[:2]
    assert ef.main(args) == 0
    assert capsys.readouterr().err == f"1 video extracted, 2 already done; 3 of 3 in {out / 'index.jsonl'}\n"
    assert [r["path"] for r in _index(out)] == videos


# ---------------------------------------------------------------------------------------------------- settings
def test_other_weights_under_the_same_name_or_other_feature_settings_are_refused(clips, tiny, tmp_path, capsys):
    """settings.json named the weights by path only and left out TEST.SAMPLING, the precision and the pooling: a
    checkpoint replaced under the same name, or another sampling, mixed other features into the folder without a
    word. The weights file's size and content hash and those settings are recorded and compared now."""
    import shutil

    cfg, model, trained = tiny
    videos = _videos(clips)
    ckpt = tmp_path / "model.pth"
    shutil.copy(trained, ckpt)
    out = tmp_path / "feats"
    common = ["--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--quiet", "--opts", *OPTS]
    assert ef.main([videos[0], *common]) == 0, capsys.readouterr().err
    capsys.readouterr()
    settings = json.loads((out / "settings.json").read_text())
    assert settings["weights_file"]["size"] == ckpt.stat().st_size
    assert (settings["TEST.SAMPLING"], settings["TRAIN.PRECISION"], settings["MODEL.USE_MEAN_POOLING"]) == (
        "uniform", "fp32", True)
    os.utime(ckpt, (1, 1))  # the same contents, touched (or copied, downloaded again): the same weights
    assert ef.main([videos[1], *common]) == 0, capsys.readouterr().err
    capsys.readouterr()

    def refused(args: list[str], needle: str) -> None:
        before = (out / "settings.json").read_text()
        assert ef.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {out} holds features made with other settings (") and needle in err, err
        assert err.endswith("; use another --out or the same settings\n") and len(err.splitlines()) == 1, err
        assert (out / "settings.json").read_text() == before and len(_index(out)) == 2

    refused([videos[2], *common, "TEST.SAMPLING", "random"], "TEST.SAMPLING: 'uniform' before, 'random' now")
    refused([videos[2], *common, "TRAIN.PRECISION", "bf16"], "TRAIN.PRECISION: 'fp32' before, 'bf16' now")
    pooled = cfg.clone()
    pooled.defrost()
    pooled.MODEL.USE_MEAN_POOLING = False
    with pytest.raises(ValueError, match=r"MODEL\.USE_MEAN_POOLING: True before, False now"):
        ef.extract(pooled, model, videos[2:], str(out), DistContext(), progress=False, weights=str(ckpt))
    torch.manual_seed(12)  # other weights saved under the same name
    torch.save({"model": build_model(cfg).state_dict()}, ckpt)
    size = ckpt.stat().st_size
    refused([videos[2], *common], f"weights_file: {settings['weights_file']['size']} bytes, sha256 "
                                  f"{settings['weights_file']['sha256'][:16]}... (whole file) before, {size} bytes, "
                                  f"sha256 {weights_identity(str(ckpt))['sha256'][:16]}... (whole file) now")


def test_views_of_another_temporal_sampling_are_refused(clips, tiny, tmp_path, capsys):
    """DATA.SAMPLING (tsn or dense) and, dense, DATA.FRAME_INTERVAL choose the frames of every test view, but
    settings.json left them out: a rerun with another config mixed features of other frames into the folder."""
    _, _, ckpt = tiny
    videos = _videos(clips)
    out, dense = tmp_path / "tsn", tmp_path / "dense"

    assert _extract_one(capsys, ckpt, videos[0], out)[0] == 0
    rc, err = _extract_one(capsys, ckpt, videos[2], out, "DATA.SAMPLING", "dense")
    assert rc == 2 and err == (f"error: {out} holds features made with other settings (DATA.SAMPLING: 'tsn' before, "
                               "'dense' now; DATA.FRAME_INTERVAL: None before, 4 now); use another --out or the "
                               "same settings\n")
    assert json.loads((out / "settings.json").read_text())["DATA.SAMPLING"] == "tsn" and len(_index(out)) == 1
    assert _extract_one(capsys, ckpt, videos[1], out, "DATA.FRAME_INTERVAL", "2") == (
        0, f"1 video extracted, 0 already done; 1 of 1 in {out / 'index.jsonl'}\n")  # tsn: unused
    assert _extract_one(capsys, ckpt, videos[0], dense, "DATA.SAMPLING", "dense", "DATA.FRAME_INTERVAL", "2")[0] == 0
    rc, err = _extract_one(capsys, ckpt, videos[2], dense, "DATA.SAMPLING", "dense", "DATA.FRAME_INTERVAL", "3")
    assert rc == 2 and "(DATA.FRAME_INTERVAL: 2 before, 3 now)" in err and len(_index(dense)) == 1


def test_the_same_weights_file_copied_elsewhere_is_the_same_weights(clips, tiny, tmp_path):
    """weights_identity tells weights by their contents: a copy (or a new download) of the file at another path
    made the same features, so a rerun with it goes on in the folder."""
    import shutil

    cfg, model, trained = tiny
    videos = _videos(clips)
    first, moved = tmp_path / "a" / "model.pth", tmp_path / "b" / "model.pth"
    for path in (first, moved):
        path.parent.mkdir()
        shutil.copy(trained, path)
    out = tmp_path / "feats"
    ef.extract(cfg, model, videos[:1], str(out), DistContext(), progress=False, weights=str(first))
    result = ef.extract(cfg, model, videos[:2], str(out), DistContext(), progress=False, weights=str(moved))
    assert (result["done_before"], result["written"]) == (1, 1)
    torch.save({"model": {k: v + 1 for k, v in model.state_dict().items()}}, moved)  # other contents: refused
    with pytest.raises(ValueError, match="weights_file: "):
        ef.extract(cfg, model, videos, str(out), DistContext(), progress=False, weights=str(moved))


def test_an_older_settings_file_without_the_new_fields_is_read(clips, tiny, tmp_path, capsys):
    """A folder made by an older version has no weights identity, sampling, precision or pooling in settings.json:
    its features are taken as made with the run's own (a note line says so), and those are recorded from then on."""
    _, _, ckpt = tiny
    videos = _videos(clips)
    out = tmp_path / "feats"
    common = ["--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--quiet", "--window", "4", "--opts", *OPTS]
    assert ef.main([videos[0], *common]) == 0, capsys.readouterr().err
    capsys.readouterr()
    new = json.loads((out / "settings.json").read_text())
    added = ["weights_file", "TEST.SAMPLING", "TRAIN.PRECISION", "MODEL.USE_MEAN_POOLING", "DATA.TUBELET_SIZE"]
    (out / "settings.json").write_text(json.dumps({k: v for k, v in new.items() if k not in added}))
    assert ef.main([*videos[:2], *common]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"note: {out / 'settings.json'} was written by an older version without "
                             f"{', '.join(added)}: its features are taken as made with this run's ("), err
    assert err[1] == f"1 video extracted, 1 already done; 2 of 2 in {out / 'index.jsonl'}"
    assert json.loads((out / "settings.json").read_text()) == new
    assert ef.main([videos[1], *common]) == 0 and "note:" not in capsys.readouterr().err


def _extract_one(capsys, ckpt, video: str, folder: Path, *opts: str, extra: tuple = ()) -> tuple[int, str]:
    """extract_features of one video into ``folder`` with the demo's settings and ``opts``: its exit code and stderr."""
    rc = ef.main([video, "--cfg", DEMO, "--weights", str(ckpt), "--out", str(folder), "--quiet", *extra,
                  "--opts", *OPTS, *opts])
    return rc, capsys.readouterr().err


def test_the_views_decode_device_and_input_type_are_recorded_and_bind(clips, tiny, tmp_path, capsys):
    """GPU or CPU decoding and float16 or float32 clips change the views' features slightly, but settings.json left
    DATA.DECODE_DEVICE and DATA.OUTPUT_DTYPE out: a rerun with others mixed their features into the folder. They are
    recorded as the loader decides them ('auto' resolved), compared, and unused (None) by the windows."""
    _, _, ckpt = tiny
    videos = _videos(clips)
    out, windows = tmp_path / "views", tmp_path / "windows"

    assert _extract_one(capsys, ckpt, videos[0], out)[0] == 0
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["DATA.DECODE_DEVICE"], settings["DATA.OUTPUT_DTYPE"]) == ("cpu", "float32")
    rc, err = _extract_one(capsys, ckpt, videos[1], out, "DATA.OUTPUT_DTYPE", "float16")
    assert rc == 2 and err == (f"error: {out} holds features made with other settings (DATA.OUTPUT_DTYPE: 'float32' "
                               "before, 'float16' now); use another --out or the same settings\n")
    # float32 when decoding on the CPU: the same
    assert _extract_one(capsys, ckpt, videos[1], out, "DATA.OUTPUT_DTYPE", "auto")[0] == 0
    (out / "settings.json").write_text(json.dumps({**settings, "DATA.DECODE_DEVICE": "gpu"}))  # made on a GPU
    rc, err = _extract_one(capsys, ckpt, videos[2], out)
    assert rc == 2 and "(DATA.DECODE_DEVICE: 'gpu' before, 'cpu' now)" in err and len(_index(out)) == 2
    older = {k: v for k, v in settings.items() if k not in ("DATA.DECODE_DEVICE", "DATA.OUTPUT_DTYPE")}
    (out / "settings.json").write_text(json.dumps(older))  # written before they were recorded: no refusal
    rc, err = _extract_one(capsys, ckpt, videos[2], out)
    assert rc == 0 and err.startswith(f"note: {out / 'settings.json'} was written by an older version without "
                                      "DATA.DECODE_DEVICE, DATA.OUTPUT_DTYPE: "), err
    assert json.loads((out / "settings.json").read_text()) == settings
    assert _extract_one(capsys, ckpt, videos[0], windows, extra=("--window", "4"))[0] == 0
    assert json.loads((windows / "settings.json").read_text())["DATA.OUTPUT_DTYPE"] is None
    rc, err = _extract_one(capsys, ckpt, videos[1], windows, "DATA.OUTPUT_DTYPE", "float16", extra=("--window", "4"))
    assert rc == 0, err  # the windows are decoded and normalised alike whatever it says


def test_the_views_cpu_decoder_is_recorded_and_binds(clips, tiny, tmp_path, capsys):
    """DALI's CPU decoder and PyAV give the views slightly different pixels, but settings.json left DATA.CPU_DECODER
    out: a rerun with the other mixed its features into the folder. It is recorded, compared, and unused (None) by
    the windows; a settings.json written before it was recorded is read with a note."""
    _, _, ckpt = tiny
    videos = _videos(clips)
    out, windows = tmp_path / "views", tmp_path / "windows"

    assert _extract_one(capsys, ckpt, videos[0], out, "DATA.CPU_DECODER", "pyav")[0] == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["DATA.CPU_DECODER"] == "pyav"
    rc, err = _extract_one(capsys, ckpt, videos[1], out, "DATA.CPU_DECODER", "dali")
    assert rc == 2 and err == (f"error: {out} holds features made with other settings (DATA.CPU_DECODER: 'pyav' "
                               "before, 'dali' now); use another --out or the same settings\n")
    assert len(_index(out)) == 1
    older = {k: v for k, v in settings.items() if k != "DATA.CPU_DECODER"}
    (out / "settings.json").write_text(json.dumps(older))  # written before it was recorded: no refusal
    rc, err = _extract_one(capsys, ckpt, videos[1], out, "DATA.CPU_DECODER", "pyav")
    assert rc == 0 and err.startswith(f"note: {out / 'settings.json'} was written by an older version without "
                                      "DATA.CPU_DECODER: its features are taken as made with this run's "
                                      "(DATA.CPU_DECODER 'pyav'), recorded from now on"), err
    assert json.loads((out / "settings.json").read_text()) == settings
    assert _extract_one(capsys, ckpt, videos[0], windows, extra=("--window", "4"))[0] == 0
    assert json.loads((windows / "settings.json").read_text())["DATA.CPU_DECODER"] is None
    rc, err = _extract_one(capsys, ckpt, videos[1], windows, "DATA.CPU_DECODER", "pyav", extra=("--window", "4"))
    assert rc == 0, err  # the windows are decoded by PyAV whatever it says


# ---------------------------------------------------------------------------------------------------- weights
def test_a_backbone_without_head_or_with_other_classes_gives_features_not_predictions(clips, tiny, tmp_path,
                                                                                        capsys):
    """Features stop before the head, yet a checkpoint without head.* or with a head of another class count was
    refused. It gives features now (the same as with the head), with a note line; predicting still refuses it."""
    from models import CheckpointError
    from tools.inference import load_model
    from tools.predict import Predictor

    cfg, model, ckpt = tiny
    video = _videos(clips)[2]
    full = tmp_path / "full"
    common = ["--quiet", "--window", "4", "--cfg", DEMO]
    assert ef.main([video, *common, "--weights", str(ckpt), "--out", str(full), "--opts", *OPTS]) == 0
    capsys.readouterr()
    want = read_features(str(full), _index(full)[0])
    backbone = tmp_path / "backbone.pth"
    torch.save({"model": {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}}, backbone)
    for weights, extra, why in ((backbone, [], "it has no classification head"),
                                (ckpt, ["DATA.NUM_CLASSES", "5"], "its head has 3 classes and DATA.NUM_CLASSES is 5")):
        out = tmp_path / f"feats{len(extra)}"
        rc = ef.main([video, *common, "--weights", str(weights), "--out", str(out), "--opts", *OPTS, *extra])
        err = capsys.readouterr().err
        assert rc == 0, err
        assert err.splitlines() == [f"note: {weights}: {why}: the head was not loaded, and features stop before it",
                                    f"1 video extracted, 0 already done; 1 of 1 in {out / 'index.jsonl'}"], err
        np.testing.assert_array_equal(read_features(str(out), _index(out)[0]), want)
    with Predictor(str(backbone), cfg=DEMO, opts=OPTS, device="cpu") as predictor:
        (record,) = predictor.features(video, window=4)
        np.testing.assert_allclose(record["features"], want, rtol=1e-6, atol=1e-6)
        with pytest.raises(CheckpointError) as info:
            predictor.predict(video)
    assert str(info.value) == (f"{backbone}: it has no classification head (head.weight, head.bias): it gives "
                               "features (tools.extract_features, Predictor.features), not predictions")
    with pytest.raises(CheckpointError, match="its head has 3 classes and DATA.NUM_CLASSES is 5"):
        load_model(load_config(DEMO, OPTS + ["DATA.NUM_CLASSES", "5"]), str(ckpt), torch.device("cpu"))


def test_a_backbone_without_head_is_exported_for_features_and_predict_refuses_the_file(clips, tiny, tmp_path,
                                                                                      capsys):
    """export_safetensors refused weights without a classification head, pointing to extract_features: a
    pretrained backbone could not be had as a safetensors file. It is exported without a head (num_classes 0 in
    its settings), extract_features gives the features of the original from the file alone, and predict refuses
    the file in one line that points to extract_features. A head of another class count is still refused."""
    from safetensors import safe_open

    from models import load_pretrained
    from models.weights_file import read_weights_metadata
    from tools import export_safetensors, predict

    _, model, ckpt = tiny
    video = _videos(clips)[2]
    full = tmp_path / "full"
    assert ef.main([video, "--quiet", "--window", "4", "--cfg", DEMO, "--weights", str(ckpt), "--out", str(full),
                    "--opts", *OPTS]) == 0
    want = read_features(str(full), _index(full)[0])
    backbone = tmp_path / "backbone.pth"
    torch.save({"model": {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}}, backbone)
    exported = tmp_path / "backbone.safetensors"
    capsys.readouterr()
    assert export_safetensors.main(["--cfg", DEMO, "--weights", str(backbone), "--out", str(exported),
                                    "--opts", *OPTS]) == 0
    captured = capsys.readouterr()
    assert captured.out == (f"wrote {exported}: eva-tiny/8, 4 frames of 32 px, no classification head (features "
                            "only: tools.extract_features)\n")
    assert captured.err == (f"note: {backbone}: it has no classification head: the head was not loaded, and "
                            "features stop before it\n")
    meta = read_weights_metadata(str(exported))
    assert (meta["num_classes"], meta["class_names"]) == (0, [])
    with safe_open(str(exported), framework="pt") as f:
        assert sorted(f.keys()) == sorted(k for k in model.state_dict() if not k.startswith("head."))
    fine_tuned = build_model(load_config(DEMO, OPTS + ["DATA.NUM_CLASSES", "5"]))  # as MODEL.PRETRAINED
    assert load_pretrained(fine_tuned, str(exported)) == (["head.weight", "head.bias"], [])
    torch.testing.assert_close(fine_tuned.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)
    out = tmp_path / "feats"
    assert ef.main([video, "--quiet", "--window", "4", "--weights", str(exported), "--out", str(out),
                    "--opts", *OPTS]) == 0  # no --cfg: the file's settings
    np.testing.assert_array_equal(read_features(str(out), _index(out)[0]), want)
    capsys.readouterr()
    assert predict.main([video, "--weights", str(exported), "--quiet", "--work-dir", str(tmp_path / "work"),
                         "--opts", *OPTS]) == 2
    assert capsys.readouterr().err == (f"error: {exported}: it has no classification head (head.weight, head.bias): "
                                       "it gives features (tools.extract_features, Predictor.features), not "
                                       "predictions\n")
    assert export_safetensors.main(["--cfg", DEMO, "--weights", str(ckpt), "--out", str(tmp_path / "5.safetensors"),
                                    "--opts", *OPTS, "DATA.NUM_CLASSES", "5"]) == 2
    assert "its head has 3 classes and DATA.NUM_CLASSES is 5" in capsys.readouterr().err
    assert not (tmp_path / "5.safetensors").exists()


# ---------------------------------------------------------------------------------------------------- Predictor
def test_predictor_features_give_a_record_per_video_given(clips, tiny, monkeypatch):
    """Videos named twice were dropped, so that the records no longer paired with the videos given, and paths came
    back absolute: now one record per video given, in the order given, named as given."""
    from tools.predict import Predictor

    _, _, ckpt = tiny
    videos = _videos(clips)
    monkeypatch.chdir(clips / "videos")
    given = [videos[2], os.path.basename(videos[0]), videos[2], Path(videos[0]), str(clips / "broken.webm")]
    with Predictor(str(ckpt), cfg=DEMO, opts=OPTS, device="cpu") as predictor:
        records = predictor.features(given, window=4)
    assert [r["path"] for r in records] == [os.fspath(g) for g in given]
    assert [r["status"] for r in records] == ["ok"] * 4 + ["error"]
    assert [r["starts_frames"] for r in records[:4]] == [[0, 4, 7], [0], [0, 4, 7], [0]]
    np.testing.assert_array_equal(records[0]["features"], records[2]["features"])
    np.testing.assert_array_equal(records[1]["features"], records[3]["features"])


def test_predictor_features_refuse_the_window_settings_the_command_refuses(clips, tiny, capsys):
    """A stride without a window gave the test views, a window below 1 too, without a word; the command refuses
    both. Predictor.features (and extract_into) refuse them with the command's words, in their own names."""
    from tools.predict import Predictor

    cfg, model, ckpt = tiny
    video = _videos(clips)[2]
    cases = [({"stride": 4}, "stride needs window", ["--stride", "4"]),
             ({"window": 0}, "window must be at least 1, got 0", ["--window", "0"]),
             ({"window": -3}, "window must be at least 1, got -3", ["--window", "-3"]),
             ({"window": 4, "stride": 0}, "stride must be at least 1, got 0", ["--window", "4", "--stride", "0"])]
    with Predictor(str(ckpt), cfg=DEMO, opts=OPTS, device="cpu") as predictor:
        for kwargs, message, flags in cases:
            with pytest.raises(ValueError) as info:
                predictor.features(video, **kwargs)
            assert str(info.value) == message
            with pytest.raises(SystemExit):
                ef.parse_args([video, "--weights", "w.pth", "--out", "f", *flags])
            cli = message.replace("stride", "--stride").replace("window", "--window")
            assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {cli}")
    for window, stride, message in ((0, 3, "stride needs window"), (-2, 0, "window must be at least 1, got -2"),
                                    (4, -1, "stride must be at least 1, got -1")):
        with pytest.raises(ValueError, match=f"^{message}$"):
            ef.extract_into(cfg, model, [video], FeatureStore(str(clips / "unused")), DistContext(), window=window,
                            stride=stride, work_dir=str(clips / "unused"), progress=False)


def test_the_window_mode_demuxes_a_video_once_whatever_its_length(clips, tiny, tmp_path, monkeypatch):
    """Every batch of windows demuxed the whole file again (and the frame times once more): an hour of video, ~700
    batches over ~90,000 packets, cost the square of its length. Now the probe's demux and one for the frame
    times and all the batches; the features are those of any batch size."""
    from tests.video_fixtures import count_demuxes

    cfg, model, _ = tiny
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATA.VIDEO_TIMEOUT_S = 0  # no limit: the probe runs in this process, where its demux is counted
    video = _videos(clips)[2]  # 11 frames, window 4 stride 1: 8 windows
    ef.extract(cfg, model, [video], str(tmp_path / "together"), DistContext(), window=4, stride=1, per_batch=8,
               progress=False)
    demuxes = count_demuxes(monkeypatch)
    ef.extract(cfg, model, [video], str(tmp_path / "apart"), DistContext(), window=4, stride=1, per_batch=1,
               progress=False)
    assert demuxes.count(video) == 2  # not 2 + 8 batches
    together, apart = _index(tmp_path / "together")[0], _index(tmp_path / "apart")[0]
    assert apart["starts_frames"] == together["starts_frames"] == list(range(8))
    assert apart["starts_seconds"] == together["starts_seconds"]
    np.testing.assert_array_equal(read_features(str(tmp_path / "apart"), apart),
                                  read_features(str(tmp_path / "together"), together))


# overlapping windows; gaps longer than a GOP (12); gaps shorter than one
@pytest.mark.parametrize("window, stride", [(8, 3), (4, 40), (4, 7)])
@pytest.mark.parametrize("codec, ext", [("mpeg4", ".avi"), ("h264", ".mp4")])
def test_window_frames_are_decoded_once_in_order_with_the_features_of_a_decode_per_batch(tiny, tmp_path, monkeypatch,
                                                                                        codec, ext, window, stride):
    """Windows overlap from batch to batch, so each batch asked the reader for frames before those the previous one
    asked for: on a stream that cannot be skipped through (MPEG-4 Part 2) every batch was decoded from frame 0, the
    cost of a long video the square of its length. Now the reader is asked for every frame once, in increasing
    order (here also frames before the end of a batch that only a later one uses: 4 frames over a window of 8), and
    decodes such a stream about once (and H.264 with gaps shorter than a GOP: a batch goes on from the previous
    one); the features are bit for bit those of one decode per batch, as before."""
    from dali_pipelines import pyav_io
    from dali_pipelines.pyav_encode import write_video
    from engine.precision import resolve_precision
    from tools.inference import view_outputs

    cfg, model, _ = tiny
    n, per_batch, t = 150, 4, cfg.DATA.NUM_FRAMES
    video = str(tmp_path / f"long{ext}")
    write_video(video, pattern_frames(n, 96, 72), codec, gop=12)
    requests: list[tuple[list[int], dict]] = []
    real = pyav_io.VideoReader.frames

    def recorded(self, indices, stats=None, then=None):
        stats = {} if stats is None else stats
        frames = real(self, indices, stats, then)
        requests.append((np.asarray(indices).tolist(), dict(stats)))
        return frames

    monkeypatch.setattr(pyav_io.VideoReader, "frames", recorded)
    out = tmp_path / "windows"
    ef.extract(cfg, model, [video], str(out), DistContext(), window=window, stride=stride, per_batch=per_batch,
               progress=False)
    monkeypatch.undo()
    record, = _index(out)
    starts = ef.window_starts(n, window, stride)
    assert record["starts_frames"] == starts and len(requests) > (5 if stride < window else 0)
    asked = [f for indices, _ in requests for f in indices]
    assert asked == sorted(set(asked)) == sorted({int(f) for s in starts for f in ef.window_frames(s, n, window, t)})
    decoded = sum(s["frames"] for _, s in requests)
    if stride < window or codec == "mpeg4":
        # Windows without gaps, or a stream that cannot be skipped through: one decode from frame 0 that goes on, to
        # the last frame asked (it was one per batch on MPEG-4; H.264 decoded from a clean cut before each batch,
        # about 3 times the work on the real clips); with packets held for the gaps, the first request was served
        # from them and the second decoded its frames again from frame 0
        assert [(s["mode"], s["runs"]) for _, s in requests] == [("sequential", 1)] + [
            ("sequential", 0)] * (len(requests) - 1)
        assert decoded == asked[-1] + 1
    elif stride - window > 12:  # gaps of more than a GOP are skipped
        assert {s["mode"] for _, s in requests} == {"seek"} and decoded < asked[-1] // 2
    else:  # gaps shorter than a GOP: each batch restarted at the clean cut before it, decoding again frames of
        # the batch before; now it goes on from where that one stopped, every packet fed once
        assert [s["runs"] for _, s in requests] == [1] + [0] * (len(requests) - 1)
        assert decoded == sum(s["packets"] for _, s in requests) == asked[-1] + 1
    # what the command computed before: each batch's frames from a decode of its own
    amp_dtype, _ = resolve_precision(cfg.TRAIN.PRECISION, torch.device("cpu"))
    before = []
    for i in range(0, len(starts), per_batch):
        idx = np.stack([ef.window_frames(s, n, window, t) for s in starts[i:i + per_batch]])
        union, inverse = np.unique(idx, return_inverse=True)
        frames = fw._normalised_centre_crop(pyav_io.decode_frames(video, union), cfg.DATA.INPUT_SIZE,
                                            torch.device("cpu"))
        pooled, _ = view_outputs(model, frames[torch.from_numpy(inverse.reshape(idx.shape))][:, None], amp_dtype)
        before.append(pooled[:, 0].numpy())
    np.testing.assert_array_equal(read_features(str(out), record), np.concatenate(before))


def test_a_video_whose_probe_does_not_answer_is_failed_naming_the_limit(clips, tiny, tmp_path, monkeypatch):
    """The windows probed each video in this process, with no time limit: one whose probe never ends (a hung
    network file system) hung the whole extraction. They are probed as the index probes them, in worker processes
    with DATA.VIDEO_TIMEOUT_S each: such a video is failed with a reason naming the limit, the others extracted."""
    import shutil

    from dali_pipelines import index as index_mod
    from tests import crashing_jobs

    cfg, model, _ = tiny
    video = _videos(clips)[2]
    stuck = str(tmp_path / f"clip_{crashing_jobs.STALL_MARK}.webm")
    shutil.copy(video, stuck)
    monkeypatch.setattr(index_mod, "_probe_job", crashing_jobs.stalling_probe_job)
    cfg = cfg.clone()
    cfg.defrost()
    limit = crashing_jobs.ANSWERS_WITHIN_S  # the other video answers within it on a loaded machine too
    cfg.DATA.INDEX_WORKERS, cfg.DATA.VIDEO_TIMEOUT_S = 2, limit
    out = tmp_path / "windows"
    result = ef.extract(cfg, model, [stuck, video], str(out), DistContext(), window=4, progress=False)
    assert result["listed"] == 1 and [r["path"] for r in _index(out)] == [video]
    reason = _failed(out)[stuck]
    assert reason.startswith(index_mod.PROBE_OVERDUE + f" (no result within {limit:g} s, the only item in flight)"), \
        reason
    assert reason.endswith("the limit is DATA.VIDEO_TIMEOUT_S, the next run tries it again"), reason


@pytest.mark.parametrize("local_world_size, workers", [(None, 1), ("2", 4)])
def test_window_probes_share_the_cores_among_the_ranks_of_a_node(tiny, monkeypatch, local_world_size, workers):
    """Every rank probes its share of the videos at once, on the cores its process may use: 8 ranks on 2 nodes of
    4 gave each rank 1/8 of a node's cores (the global world size); torchrun's LOCAL_WORLD_SIZE now says how many
    ranks share this node's."""
    from dali_pipelines import index as index_mod
    from evautil import workers as workers_mod

    cfg, _, _ = tiny
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATA.INDEX_WORKERS = 0
    asked = []

    class NoVideos(list):
        def close(self):
            pass

    monkeypatch.setattr(index_mod, "probe_videos", lambda jobs, n, *a, **k: asked.append(n) or NoVideos())
    monkeypatch.setattr(workers_mod, "usable_cpus", lambda: 8)
    if local_world_size is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world_size)
    assert fw._probe_all(cfg, ["a.mp4"], DistContext(rank=0, world_size=8), progress=False) == {}
    assert asked == [workers]


def test_videos_in_a_row_whose_probes_do_not_answer_stop_the_windows_with_one_error(clips, tiny, tmp_path,
                                                                                    monkeypatch):
    """Every video hanging is the storage, as for the index: the run stops with one error naming the limit."""
    import shutil

    from dali_pipelines import index as index_mod
    from dali_pipelines.filelist import DataError
    from evautil.workers import MAX_OVERDUE_IN_A_ROW
    from tests import crashing_jobs

    cfg, model, _ = tiny
    stuck = [str(tmp_path / f"clip{i}_{crashing_jobs.STALL_MARK}.webm") for i in range(MAX_OVERDUE_IN_A_ROW)]
    for path in stuck:
        shutil.copy(_videos(clips)[2], path)
    monkeypatch.setattr(index_mod, "_probe_job", crashing_jobs.stalling_probe_job)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATA.INDEX_WORKERS, cfg.DATA.VIDEO_TIMEOUT_S = 2, 0.5  # short: no video here answers, none races it
    with pytest.raises(DataError, match=rf"^probing the videos of rank 0: {MAX_OVERDUE_IN_A_ROW} items in a row gave "
                                        r"no result within 0.5 s each .*DATA.VIDEO_TIMEOUT_S"):
        ef.extract(cfg, model, stuck, str(tmp_path / "windows"), DistContext(), window=4, progress=False)


def _hang_after_probe(monkeypatch, stuck: list[str]) -> None:
    """Each of ``stuck`` becomes, once probed as the video it was, a pipe nobody writes: its decode's open never
    returns (a file system that stopped answering)."""
    probe_all = fw._probe_all

    def probe_then_hang(*args, **kwargs):
        probed = probe_all(*args, **kwargs)
        for path in stuck:
            os.remove(path)
            os.mkfifo(path)
        return probed

    monkeypatch.setattr(fw, "_probe_all", probe_then_hang)


@contextlib.contextmanager
def _pipes_answer_after(stuck: list[str], delay_s: float = 20.0):
    """After ``delay_s`` (far past the limits given here), and once more at the end, a writer comes and goes at each
    of the pipes ``stuck``: a decode without a limit then reads an empty file and fails on it, rather than waiting
    for ever, and the threads a limit left in the pipes' opens go."""
    done = threading.Event()

    def answer() -> None:
        late = not done.wait(delay_s)
        while True:
            for path in stuck:
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:  # nobody in it, or not a pipe yet
                    pass
            if not late or done.wait(0.2):
                return

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_a_window_decode_that_does_not_end_is_failed_naming_the_limit(clips, tiny, tmp_path, monkeypatch):
    """The windows' frames were decoded with no time limit (only the probes had one): a video whose read never
    returns hung the whole extraction. Each request to its reader now has DATA.VIDEO_TIMEOUT_S, as the clips'
    decodes do: the video is failed naming the limit, and the next one is extracted as it is without it."""
    import shutil

    cfg, model, _ = tiny
    video = _videos(clips)[2]
    stuck = str(tmp_path / "stuck.webm")
    shutil.copy(video, stuck)
    _hang_after_probe(monkeypatch, [stuck])
    limited = cfg.clone()
    limited.defrost()
    limited.DATA.VIDEO_TIMEOUT_S = 1.0
    out, alone = tmp_path / "windows", tmp_path / "alone"
    with _pipes_answer_after([stuck]):
        result = ef.extract(limited, model, [stuck, video], str(out), DistContext(), window=4, progress=False)
    assert result["listed"] == 1 and [r["path"] for r in _index(out)] == [video]
    assert _failed(out) == {stuck: "did not decode within DATA.VIDEO_TIMEOUT_S = 1 s (a file system that stopped "
                                   "answering, or a decoder that does not end); left out of this run only, the next "
                                   "run tries it again"}
    monkeypatch.undo()
    ef.extract(cfg, model, [video], str(alone), DistContext(), window=4, progress=False)
    np.testing.assert_array_equal(read_features(str(out), _index(out)[0]), read_features(str(alone), _index(alone)[0]))


def test_window_decodes_that_do_not_end_in_a_row_stop_with_one_error(clips, tiny, tmp_path, monkeypatch):
    """Every video's decode hanging is the storage, as for the probes and the clips: the run stops with one error
    naming the limit and the last video, instead of giving up one video after another."""
    import shutil

    from dali_pipelines.filelist import DataError
    from evautil.workers import MAX_OVERDUE_IN_A_ROW

    cfg, model, _ = tiny
    stuck = [str(tmp_path / f"clip{i}.webm") for i in range(MAX_OVERDUE_IN_A_ROW)]
    for path in stuck:
        shutil.copy(_videos(clips)[2], path)
    _hang_after_probe(monkeypatch, stuck)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATA.VIDEO_TIMEOUT_S = 0.5
    with _pipes_answer_after(stuck), pytest.raises(
            DataError, match=rf"^decoding the windows of rank 0: {MAX_OVERDUE_IN_A_ROW} videos in a row did not "
                             rf"decode within DATA.VIDEO_TIMEOUT_S = 0.5 s \(the last: {stuck[-1]}\): the storage"):
        ef.extract(cfg, model, stuck, str(tmp_path / "windows"), DistContext(), window=4, progress=False)


def test_a_video_that_fails_otherwise_does_not_break_a_streak_of_window_decodes_that_do_not_end(clips, tiny, tmp_path,
                                                                                               monkeypatch):
    """The windows counted their own videos in a row past DATA.VIDEO_TIMEOUT_S, and any other failure between them
    (here a file that is no video) started the count again, where the loaders' count (``OverdueStreak``) starts
    again only at a video that decodes: a storage that stopped answering went on, video after video, for as long as
    unreadable files came between. One count, one rule: overdue, unreadable, overdue, overdue ends the run."""
    import shutil

    from dali_pipelines.filelist import DataError
    from evautil.workers import MAX_OVERDUE_IN_A_ROW

    assert MAX_OVERDUE_IN_A_ROW == 3  # the list below
    cfg, model, _ = tiny
    stuck = [str(tmp_path / f"clip{i}.webm") for i in range(3)]
    for path in stuck:
        shutil.copy(_videos(clips)[2], path)
    unreadable = tmp_path / "not_a_video.webm"
    unreadable.write_bytes(b"no video here")
    _hang_after_probe(monkeypatch, stuck)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATA.VIDEO_TIMEOUT_S = 0.5  # no video here decodes: none races the limit
    with _pipes_answer_after(stuck), pytest.raises(
            DataError, match=rf"^decoding the windows of rank 0: 3 videos in a row did not decode within "
                             rf"DATA.VIDEO_TIMEOUT_S = 0.5 s \(the last: {stuck[-1]}\): the storage"):
        ef.extract(cfg, model, [stuck[0], str(unreadable), *stuck[1:]], str(tmp_path / "windows"), DistContext(),
                   window=4, progress=False)


_QUIET_SCRIPT = """
import json, logging, sys

from tools import extract_features as ef
from tools.predict import Predictor

if __name__ == "__main__":
    videos, out, weights, cfg, opts = json.loads(sys.argv[1])
    before = list(logging.getLogger("dali_pipelines").handlers)
    rc = ef.main(videos + ["--quiet", "--out", out, "--weights", weights, "--cfg", cfg, "--opts", *opts])
    with Predictor(weights, cfg=cfg, opts=opts, device="cpu") as predictor:  # progress=False
        records = predictor.features(videos)
    left = logging.getLogger("dali_pipelines").handlers == before  # as found, for later callers
    print(json.dumps({"rc": rc, "errors": [r["error"] for r in records], "left_as_found": left}))
"""


def test_quiet_prints_no_loader_warnings(clips, tiny, tmp_path, capsys):
    """--quiet and Predictor.features (progress off) still printed the index's "bad video" warnings (Python's
    last-resort handler: a run of the command or a script sets no logging handler), where failed-rank*.jsonl and
    the records already give each unreadable video's reason; predict --quiet leaves them out."""
    import subprocess
    import sys

    from tests.conftest import child_env

    _, _, ckpt = tiny
    missing, broken, out = str(tmp_path / "gone.webm"), str(clips / "broken.webm"), tmp_path / "q"
    script = tmp_path / "quiet.py"
    script.write_text(_QUIET_SCRIPT)
    done = subprocess.run([sys.executable, str(script), json.dumps([[missing, broken], str(out), str(ckpt), DEMO,
                                                                    OPTS])],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # the command's closing line alone: no "bad video" lines
    assert done.stderr == (f"0 videos extracted, 0 already done; 0 of 2 in {out / 'index.jsonl'}; 2 unreadable, "
                           f"listed in {out / 'failed-rank*.jsonl'}\n"), done.stderr
    assert json.loads(done.stdout) == {"rc": 1, "errors": ["missing file", BROKEN], "left_as_found": True}
    # without --quiet the index's lines name them
    rc = ef.main([missing, broken, "--cfg", DEMO, "--weights", str(ckpt), "--out", str(tmp_path / "loud"),
                  "--opts", *OPTS])
    err = capsys.readouterr().err
    assert rc == 1 and f"bad video {missing}: missing file\n" in err, err


@pytest.mark.parametrize("extra", [[], ["--window", "4", "--stride", "3"]], ids=["views", "windows"])
def test_nan_features_are_refused_in_one_line_naming_the_video(clips, tiny, tmp_path, capsys, extra):
    """Weights holding NaN gave NaN features, written without a word (and a rerun skipped those videos as done).
    Now the run stops with one line naming the video and exit status 2, and writes none of them."""
    from tools.predict import Predictor

    _, model, ckpt = tiny
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["fc_norm.weight"].fill_(float("nan"))  # the pooled features' last layer
    nan_ckpt = tmp_path / "nan.pth"
    torch.save({"model": state}, nan_ckpt)
    videos, out = _videos(clips), tmp_path / "feats"
    rc = ef.main([*videos, "--cfg", DEMO, "--weights", str(nan_ckpt), "--out", str(out), "--quiet", *extra,
                  "--opts", *OPTS])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err == (f"error: the model's features for {videos[0]} are NaN or infinite: check the weights for NaN or "
                   "inf values (a training run that diverged)\n"), err  # on the CPU: fp32
    assert finished_paths(str(out)) == set() and not list(out.glob("features-*")), sorted(os.listdir(out))
    window = {"window": 4, "stride": 3} if extra else {}
    with Predictor(str(nan_ckpt), cfg=DEMO, opts=OPTS, device="cpu") as predictor:
        with pytest.raises(ef.NonFiniteFeaturesError, match=f"^the model's features for {videos[0]} are NaN"):
            predictor.features(videos, **window)
