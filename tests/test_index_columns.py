"""The index as columns (schema version 4): the cache round trip, memory per row, reuse of cached rows in a
reordered or extended list, and the list read in pieces."""

from __future__ import annotations

import gc
import logging
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from dali_pipelines import index as index_mod
from dali_pipelines import list_lines
from dali_pipelines.filelist import PathTable, read_file_list, read_video_list
from dali_pipelines.index import build_index, probe_video
from dali_pipelines.index_store import load_cache, save_cache
from dali_pipelines.video_table import BAD, COLUMNS, GOOD, UNKNOWN, VideoTable
from evautil.text import text_lines

TEXTS = ("codec", "pix_fmt", "chroma", "profile", "colorspace", "nvdec_numbering")  # the columns of string codes
REAL = ["clip_32frames_340x256.mp4", "clip_mpeg4_320x240.avi", "clip_6fps_340x256.mp4"]


@pytest.fixture()
def mixed(tmp_path, real_clips_dir) -> tuple[Path, Path]:
    """Real H.264 and MPEG-4 clips (symbolic links) under class folders, a garbage file and a missing one."""
    root = tmp_path / "data"
    rels = []
    for i, name in enumerate(REAL):
        rel = f"class {i}/{name}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(real_clips_dir / name, root / rel)
        rels.append(rel)
    (root / "junk").mkdir()
    (root / "junk" / "garbage.mp4").write_bytes(np.random.default_rng(1).bytes(3000))
    rels += ["junk/garbage.mp4", "junk/missing.mp4"]
    lst = tmp_path / "train.txt"
    lst.write_text("".join(f"{rel} {i}\n" for i, rel in enumerate(rels)))
    return lst, root


def snapshot(ix) -> dict:
    """Every row of an index as plain values: entry, good or not, its VideoInfo, its bad reason."""
    return {row: (ix.entries[row], ix.is_good(row), ix.info(row) if ix.is_good(row) else None, ix.bad.get(row))
            for row in range(len(ix))}


def test_v3_round_trip_keeps_every_field_of_every_row(mixed):
    lst, root = mixed
    built = build_index(str(lst), str(root), workers=1, progress=False)
    assert built.probed == len(REAL) + 1 and sorted(built.bad) == [3, 4]
    assert {built.info(r).codec for r in built.good_rows} == {"h264", "mpeg4"}
    loaded = build_index(str(lst), str(root), workers=1, progress=False)
    assert loaded.probed == 0
    assert snapshot(loaded) == snapshot(built)
    for row in built.good_rows:  # and each row is what a probe of the file says
        assert loaded.info(row) == probe_video(loaded.path(row))
    for name in COLUMNS:
        assert np.array_equal(loaded.table.columns[name], built.table.columns[name]), name
    # The file itself: the list's paths in list order, every column of its type, the strings by code.
    cache = load_cache(built.cache_path, os.path.abspath(root))
    assert cache.rel_paths == built.videos.rel_paths and [cache.rel_paths[i] for i in range(5)] == [
        e.rel_path for e in read_file_list(str(lst), str(root))]
    assert cache.table.status.tolist() == [GOOD, GOOD, GOOD, BAD, UNKNOWN]  # a missing file has no record
    assert cache.table.reason(3) == built.bad[3] and cache.table.text("codec", 1) == "mpeg4"


def test_table_round_trip_of_arbitrary_values(tmp_path):
    """save_cache / load_cache give back every column bit for bit, with the strings each code stands for."""
    rng = np.random.default_rng(0)
    n = 300
    table = VideoTable.empty(n)
    for name, dtype in COLUMNS.items():
        if np.issubdtype(dtype, np.integer) and name not in ("status", "reason", *TEXTS):
            info = np.iinfo(dtype)
            table.columns[name][:] = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
    table.columns["fps"][:] = rng.uniform(0, 240, n).round(6)
    table.columns["full_decode"][:] = rng.integers(0, 2, n).astype(bool)
    for name in TEXTS:
        table.texts[name] += [f"{name} value {k}" for k in range(5)]
        table.columns[name][:] = rng.integers(0, 6, n)
    table.reasons += ["truncated: 3 of 9", "no video stream (streams: audio)"]
    table.columns["status"][:] = rng.integers(0, 3, n)
    table.columns["reason"][:] = np.where(table.status == BAD, rng.integers(1, 3, n), 0)
    paths = PathTable.from_paths(f"k400/train/arm wrestling/caf\u00e9 {i}.mp4" for i in range(n))
    cache_path = str(tmp_path / "l.txt.index.npz")
    save_cache(cache_path, str(tmp_path / "l.txt"), "/data", paths, table)
    back = load_cache(cache_path, "/data")
    assert back.rel_paths == paths and back.rel_paths[7] == "k400/train/arm wrestling/caf\u00e9 7.mp4"
    for name, dtype in COLUMNS.items():
        assert back.table.columns[name].dtype == dtype
        if name in TEXTS:
            assert [back.table.text(name, r) for r in range(n)] == [table.text(name, r) for r in range(n)]
        elif name == "reason":
            assert [back.table.reason(r) for r in range(n)] == [table.reason(r) for r in range(n)]
        else:
            assert np.array_equal(back.table.columns[name], table.columns[name]), name
    moved = load_cache(cache_path, "/elsewhere")  # written for another root: read with it, for the build to reuse
    assert moved.other_root == "/data" and back.other_root is None  # the rows whose files kept size and mtime
    assert moved.rel_paths == paths and np.array_equal(moved.table.columns["mtime_ns"], table.columns["mtime_ns"])


def test_index_holds_columns_not_per_row_objects(tmp_path, real_clips_dir):
    """5,000 rows (links to one clip, cached): the loaded index is a handful of arrays, its Python objects do not
    grow with the rows, and it holds well under 200 bytes per row (the JSON-era index held about 1.4 KiB)."""
    clip, n = real_clips_dir / "clip_mpeg4_320x240.avi", 5000
    root = tmp_path / "videos"
    rels = [f"class_{i // 1000}/video {i:05d}.avi" for i in range(n)]
    for d in {r.split("/")[0] for r in rels}:
        (root / d).mkdir(parents=True)
    for rel in rels:
        os.symlink(clip, root / rel)
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{rel} {i % 400}\n" for i, rel in enumerate(rels)))
    table = VideoTable.empty(n)
    info = probe_video(str(clip))
    for row in range(n):  # the cache a build would write, without probing 5,000 links
        table.set_good(row, info, False)
    save_cache(index_mod.index_paths(str(lst)).cache, str(lst), str(root), PathTable.from_paths(rels), table)

    gc.collect()
    objects_before = len(gc.get_objects())
    tracemalloc.start()
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    assert ix.probed == 0 and len(ix) == n and not ix.bad and ix.info(4321) == info
    assert len(gc.get_objects()) - objects_before < 200
    assert held / n < 200, f"{held / n:.0f} bytes per row"
    assert isinstance(ix.videos.rel_paths.blob, np.ndarray) and ix.videos.rel_paths.blob.dtype == np.uint8
    assert len(ix.videos.rel_paths.offsets) == n + 1 and ix.videos.labels.shape == ix.videos.line_nos.shape == (n,)
    for name, dtype in COLUMNS.items():
        assert ix.table.columns[name].dtype == dtype and ix.table.columns[name].shape == (n,), name
    assert all(len(t) <= 2 for t in ix.table.texts.values()) and ix.table.reasons == [""]
    sized = {k: len(v) for k, v in vars(ix).items() if isinstance(v, (list, dict, tuple, set))}
    assert all(size < 100 for size in sized.values()), sized
    assert ix.entries[4321].rel_path == rels[4321] and ix.entries[4321].label == 4321 % 400
    assert ix.entries[4321].line_no == 4322 and ix.entries[-1].row == n - 1
    assert 4321 in ix.infos and len(ix.infos) == n and ix.good_rows[:3] == [0, 1, 2]


def test_reordered_and_extended_list_reuses_cached_rows(mixed, real_clips_dir, monkeypatch):
    lst, root = mixed
    first = build_index(str(lst), str(root), workers=1, progress=False)
    by_rel = {e.rel_path: (first.is_good(e.row), first.info(e.row) if first.is_good(e.row) else None,
                           first.bad.get(e.row)) for e in first.entries}
    calls: list[str] = []
    real_job = index_mod._probe_job
    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", 0)  # one worker probes in this process, patched
    monkeypatch.setattr(index_mod, "_probe_job", lambda job: calls.append(job[1]) or real_job(job))

    # Reversed, one new video, and one line twice: only the new video is probed, the rest keep their records.
    os.symlink(real_clips_dir / "clip_426x240_29.97fps.mp4", root / "class 0" / "new.mp4")
    rels = [e.rel_path for e in first.entries][::-1] + ["class 0/new.mp4", "class 1/clip_mpeg4_320x240.avi"]
    lst.write_text("".join(f"{rel} 1\n" for rel in rels))
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    assert calls == [str(root / "class 0" / "new.mp4")] and ix.probed == 1
    for e in ix.entries[:5]:
        assert (ix.is_good(e.row), ix.info(e.row) if ix.is_good(e.row) else None, ix.bad.get(e.row)) == by_rel[
            e.rel_path]
    assert ix.info(5).width == 426 and ix.info(6) == ix.info(3)  # the duplicate line reads the same record
    cache = load_cache(ix.cache_path, os.path.abspath(root))
    assert [cache.rel_paths[i] for i in range(len(cache.rel_paths))] == rels[:6]  # each path once, in list order

    # Unchanged since: nothing probed, nothing rewritten. Shortened: nothing probed, the cache follows the list.
    mtime = os.stat(ix.cache_path).st_mtime_ns
    assert build_index(str(lst), str(root), workers=1, progress=False).probed == 0
    assert os.stat(ix.cache_path).st_mtime_ns == mtime
    lst.write_text("".join(f"{rel} 1\n" for rel in rels[:2]))
    assert build_index(str(lst), str(root), workers=1, progress=False).probed == 0
    assert len(load_cache(ix.cache_path, os.path.abspath(root)).rel_paths) == 2
    assert calls == [str(root / "class 0" / "new.mp4")]


def test_probed_rows_saved_for_a_list_are_what_its_build_reuses(mixed, monkeypatch):
    """save_probed_index (what `prepare_kinetics.py lists --check` writes): the rows of probe_videos, saved for a
    list, make its first build probe nothing and give what a build that probes finds; a stale quarantine file is
    removed, and a repeated path is saved once."""
    lst, root = mixed
    videos = read_video_list(str(lst), str(root))
    rels = [videos.rel_path(r) for r in range(len(videos))]
    probed = VideoTable.empty(len(rels))
    jobs = [(r, videos.path(r), False) for r in range(len(rels))]
    for row, info, reason in index_mod.probe_videos(jobs, 1, False, "test"):
        if info is None:  # bad rows keep the file's size and mtime, as a build records them (none when missing)
            st = os.stat(videos.path(row)) if os.path.exists(videos.path(row)) else None
            probed.set_bad(row, reason, st.st_size if st else 0, st.st_mtime_ns if st else 0, False)
        else:
            probed.set_good(row, index_mod.VideoInfo.from_record(info), False)
    quarantine = index_mod.index_paths(str(lst)).quarantine
    Path(quarantine).write_text("stale\tfrom an earlier list of this name\n")
    lst.write_text(lst.read_text() + f"{rels[0]} 2\n")  # a repeated path: saved once, reused for both rows
    table = VideoTable.concat([probed, probed.take(np.asarray([0]))])  # the rows of two scans, as for k722
    cache = index_mod.save_probed_index(str(lst), str(root), rels + rels[:1], table)
    assert cache == index_mod.index_paths(str(lst)).cache and not os.path.exists(quarantine)
    assert len(load_cache(cache, os.path.abspath(root)).rel_paths) == len(rels)

    calls = []
    real_job = index_mod._probe_job
    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", 0)  # one worker probes in this process, patched
    monkeypatch.setattr(index_mod, "_probe_job", lambda job: calls.append(job[1]) or real_job(job))
    seeded = build_index(str(lst), str(root), workers=1, progress=False)
    assert calls == [] and seeded.probed == 0 and sorted(seeded.bad) == [3, 4]
    assert os.path.exists(quarantine) and "garbage.mp4" in Path(quarantine).read_text()
    os.unlink(cache)
    fresh = build_index(str(lst), str(root), workers=1, progress=False)
    assert fresh.probed == len(rels) and snapshot(seeded) == snapshot(fresh)  # every row but the missing one


def test_list_read_in_pieces_is_the_list_read_whole(tmp_path, monkeypatch):
    """Lines split in small pieces (every piece ending after a newline) give exactly ``text_lines``' lines, line
    numbers included, whatever the line endings (a vertical tab and U+2028 end no line)."""
    text = ("a/x y.mp4 1\r\n\r\nb.mp4 2\rc.mp4 3\n\n  d e/f.mp4   4  \x0bg.mp4 5\u2028h.mp4 6\r\n" * 7) + "z.mp4 0"
    for chunk in (1, 2, 3, 5, 8, 13, 1 << 20):
        monkeypatch.setattr(list_lines, "_CHUNK_CHARS", chunk)
        assert list(list_lines._lines(text)) == text_lines(text), chunk
    lst = tmp_path / "l.txt"
    lst.write_bytes(text.encode("utf-8"))
    monkeypatch.setattr(list_lines, "_CHUNK_CHARS", 4)
    pieces = read_video_list(str(lst), "/r")
    monkeypatch.setattr(list_lines, "_CHUNK_CHARS", 1 << 20)
    whole = read_video_list(str(lst), "/r")
    assert [pieces.entry(r) for r in range(len(pieces))] == [whole.entry(r) for r in range(len(whole))]
    assert (whole.entry(3).rel_path, whole.entry(3).label) == ("d e/f.mp4   4  \x0bg.mp4 5\u2028h.mp4", 6)
    assert whole.entry(3).line_no == 6 and whole.entry(4).line_no == 7 and len(whole) == 7 * 4 + 1


def test_a_corrupt_cache_is_named_once_and_probed_again(mixed, caplog):
    """A build reads the cache under a shared lock, then again under the exclusive one to probe: an unreadable file
    is one warning, not one per read."""
    lst, root = mixed
    first = build_index(str(lst), str(root), workers=1, progress=False)
    Path(first.cache_path).write_bytes(b"PK\x03\x04 not a zip archive")
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.index_store"):
        again = build_index(str(lst), str(root), workers=1, progress=False)
    assert caplog.text.count("ignoring unreadable index cache") == 1
    assert again.probed == len(REAL) + 1 and snapshot(again) == snapshot(first)
    assert load_cache(again.cache_path, os.path.abspath(root)) is not None  # written again, readable
