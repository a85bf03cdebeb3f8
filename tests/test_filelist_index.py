"""Video lists, the dataset index (probing, bad-file quarantine, cache, lock) and PyAV frame decoding."""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import multiprocessing as mp
import os
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from dali_pipelines import index as index_mod
from dali_pipelines import index_files
from dali_pipelines.filelist import (DataError, DataListError, LabelRangeError, ListEntry, check_list_root,
                                     read_file_list, read_video_list)
from dali_pipelines.index import INDEX_SCHEMA_VERSION, BadVideoError, DatasetIndex, build_index, probe_video
from dali_pipelines.index_store import load_cache, save_cache
from dali_pipelines.pyav_io import decode_frames
from dali_pipelines.pyav_probe import count_frames, count_packets
from dali_pipelines.pyav_encode import write_video
from dali_pipelines.video_table import UNKNOWN
from evautil.errors import first_line_not_utf8
from tests.video_fixtures import reference_clips

# ----------------------------------------------------------------------------------------------------------------
# helpers


def counter_frames(n: int, w: int = 64, h: int = 48) -> np.ndarray:
    """Frames whose index k is visible: 6 big blocks spell k in binary, plus a k-dependent background level."""
    frames = np.empty((n, h, w, 3), np.uint8)
    ys, xs = np.mgrid[0:h, 0:w]
    for k in range(n):
        f = np.stack([(xs * 2 + k * 3) % 256, (ys * 3) % 256, np.full_like(xs, 60 + (k * 7) % 120)], -1)
        for bit in range(6):
            r, c = divmod(bit, 3)
            block = (slice(8 + r * 20, 8 + r * 20 + 14), slice(4 + c * 20, 4 + c * 20 + 16))
            f[block] = 235 if (k >> bit) & 1 else 20
        frames[k] = f
    return frames


def closest_frames(decoded: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each decoded frame: the index of the closest source frame (mean absolute difference) and the gap to the
    runner-up. (Not tests.video_fixtures.best_match, which correlates: this one also says how clear the win is.)"""
    d = np.abs(decoded[:, None].astype(np.int16) - source[None].astype(np.int16)).mean(axis=(2, 3, 4))
    order = np.sort(d, axis=1)
    return d.argmin(axis=1), order[:, 1] - order[:, 0]


def write_audio_only(path: str) -> None:
    c = av.open(path, "w")
    s = c.add_stream("libopus", rate=48000)
    for i in range(10):
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="flt", layout="mono")
        fr.sample_rate, fr.pts = 48000, i * 960
        c.mux(s.encode(fr))
    c.mux(s.encode(None))
    c.close()


# ----------------------------------------------------------------------------------------------------------------
# file lists


def test_read_file_list_spaces_blank_lines(tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("k400/train/arm wrestling/a b.mp4 3\n\n  \nk400/train/abseiling/x.mp4\t0\nplain.webm 12\n")
    entries = read_file_list(str(lst), "/data", num_classes=13)
    assert entries == [
        ListEntry(0, "k400/train/arm wrestling/a b.mp4", "/data/k400/train/arm wrestling/a b.mp4", 3, 1),
        ListEntry(1, "k400/train/abseiling/x.mp4", "/data/k400/train/abseiling/x.mp4", 0, 4),
        ListEntry(2, "plain.webm", "/data/plain.webm", 12, 5),
    ]


def test_names_with_runs_of_spaces_and_tabs_are_kept_as_written(tmp_path):
    """The original re-joined a name's words with single spaces; a name with two spaces or a tab then pointed at
    a file that does not exist. Here the name is the line up to the whitespace before the label."""
    names = ["two  spaces.mp4", "a\ttab.mp4", "trailing dots ... .webm"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"  {name} \t {i}\n" for i, name in enumerate(names)))
    entries = read_file_list(str(lst), str(tmp_path))
    assert [e.rel_path for e in entries] == names and [e.label for e in entries] == [0, 1, 2]
    assert all(os.path.isfile(e.path) for e in entries)


def test_a_path_starting_with_a_tilde_is_the_home_folder_as_for_the_commands(tmp_path, monkeypatch):
    """``~/kinetics/a.mp4 3`` was read as a folder named ``~`` in the root, while the commands read a leading ~ as
    the home folder: every such video was missing, and a list of them refused. A file the root holds under the name
    as written, where the home has none, is still that file (lists that worked before); ``./~`` always names it."""
    home, root = tmp_path / "home", tmp_path / "data"
    for f in (home / "kinetics" / "a b.mp4", home / "both.mp4", root / "~" / "old.mp4", root / "~" / "both.mp4"):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x")
    monkeypatch.setenv("HOME", str(home))
    only_home = tmp_path / "home_list.txt"
    only_home.write_text("~/kinetics/a b.mp4 3\n")
    videos = read_video_list(str(only_home), str(root))
    check_list_root(videos, "DATA.ROOT")  # its video is found: no refusal
    assert videos.path(0) == str(home / "kinetics" / "a b.mp4") and videos.stat_keys()[2].tolist() == [True]

    lst = tmp_path / "list.txt"
    lst.write_text("~/kinetics/a b.mp4 3\n~/old.mp4 1\n~/both.mp4 2\n./~/both.mp4 0\n~/gone.mp4 4\n"
                   "~no-such-user-here/x.mp4 5\n")
    videos = read_video_list(str(lst), str(root))
    assert [videos.path(r) for r in range(len(videos))] == [
        str(home / "kinetics" / "a b.mp4"), str(root / "~" / "old.mp4"), str(home / "both.mp4"),
        os.path.join(root, "./~/both.mp4"), str(home / "gone.mp4"), str(root / "~no-such-user-here" / "x.mp4")]
    assert videos.stat_keys()[2].tolist() == [True, True, True, True, False, False]
    assert [e.label for e in read_file_list(str(lst), str(root))] == [3, 1, 2, 0, 4, 5]


@pytest.mark.parametrize("content, line, words", [
    ("a.mp4 1\nno_label_here\n", 2, "no label"),
    ("a.mp4 1\n\nb.mp4 one\n", 3, "not an integer"),
    ("a.mp4 1.5\n", 1, "not an integer"),
    ("a.mp4 0\nb.mp4 5\n", 2, "outside [0, 5)"),
    ("a.mp4 -1\n", 1, "outside"),
])
def test_read_file_list_errors_name_file_and_line(tmp_path, content, line, words):
    lst = tmp_path / "bad list.txt"
    lst.write_text(content)
    with pytest.raises(DataListError) as e:
        read_file_list(str(lst), str(tmp_path), num_classes=5)
    assert f"{lst}:{line}" in str(e.value) and words in str(e.value)


@pytest.mark.parametrize("content, said", [
    ("path label\na.mp4 0\n", ":1: label 'label' is not an integer (line 'path label'): a list has no header or "
                               "comment lines: remove it, if it is one; else fix the label"),
    ("\n# k400 train list\na.mp4 0\n", ":2: label 'list' is not an integer (line '# k400 train list'): a list has no "
                                      "header or comment lines: remove it, if it is one; else fix the label"),
    ("a b.mp4 3.0\n", ":1: label '3.0' is not an integer (line 'a b.mp4 3.0'): write it as 3"),
    ("a.mp4 0\nb.mp4 x\n", ":2: label 'x' is not an integer (line 'b.mp4 x'): fix the label"),
    ("a.mp4 0\nb.mp4 1_0\n", ":2: label '1_0' is not an integer (line 'b.mp4 1_0'): fix the label"),  # was 10
    ("a.mp4 0\nb.mp4 1_0.0\n", ":2: label '1_0.0' is not an integer (line 'b.mp4 1_0.0'): fix the label"),
])
def test_a_label_that_is_not_an_integer_is_told_what_to_do(tmp_path, content, said):
    """A header line (a table written with its column names), a comment, or labels written as floats ("3.0", a
    table library's float column) were named, not what to do of them. A label with an underscore was read as
    Python reads a number ("1_0" as class 10)."""
    lst = tmp_path / "list.txt"
    lst.write_text(content)
    with pytest.raises(DataListError) as e:
        read_video_list(str(lst), str(tmp_path), 5)
    assert str(e.value) == f"{lst}{said}"


def test_a_list_that_is_a_folder_is_said_to_be_one(tmp_path):
    """The data folder given for its list was "does not exist (or is not a file)", which sent its user looking for
    a missing file."""
    with pytest.raises(DataListError) as e:
        read_video_list(str(tmp_path), str(tmp_path))
    assert str(e.value) == (f"video list {str(tmp_path)!r} is a folder, not a file: name the list file, one "
                            "'<path> <label>' line per video")
    with pytest.raises(DataListError) as e:
        read_video_list(str(tmp_path / "gone.txt"), str(tmp_path))
    assert str(e.value) == f"video list {str(tmp_path / 'gone.txt')!r} does not exist"


def test_a_label_out_of_range_names_what_set_the_number_of_classes(tmp_path):
    """The message said only "label 3 is outside [0, 3)": not which setting gave the 3, nor what to change. Named
    by the reader's caller (a config key, a flag); the error keeps its text when sent to another process."""
    import pickle

    lst = tmp_path / "list.txt"
    lst.write_text("a.mp4 0\n\nb.mp4  3\n")
    with pytest.raises(DataListError) as e:
        read_video_list(str(lst), str(tmp_path), 3, classes_name="DATA.NUM_CLASSES")
    text = (f"{lst}:3: label 3 is outside [0, 3) as DATA.NUM_CLASSES is 3 (line 'b.mp4  3'): fix the label, or set "
            "DATA.NUM_CLASSES to the number of classes (at least 4)")
    assert str(e.value) == text and str(pickle.loads(pickle.dumps(e.value))) == text
    assert str(e.value.named("--num-classes")) == text.replace("DATA.NUM_CLASSES", "--num-classes")
    lst.write_text("a.mp4 -1\n")
    with pytest.raises(DataListError) as e:
        read_video_list(str(lst), str(tmp_path), 3, classes_name="--num-classes")
    assert str(e.value) == f"{lst}:1: label -1 is outside [0, 3) as --num-classes is 3 (line 'a.mp4 -1'): labels " \
                           "start at 0: fix the label"


def test_the_list_of_entries_names_what_set_the_number_of_classes_too(tmp_path):
    """read_file_list, the reader of a plain list of entries, takes the caller's name for the number of classes as
    read_video_list does (it named a generic 'num_classes' whatever its caller's setting was)."""
    lst = tmp_path / "list.txt"
    lst.write_text("a.mp4 0\nb.mp4 3\n")
    with pytest.raises(LabelRangeError) as e:
        read_file_list(str(lst), str(tmp_path), 3, classes_name="DATA.NUM_CLASSES")
    assert str(e.value) == (f"{lst}:2: label 3 is outside [0, 3) as DATA.NUM_CLASSES is 3 (line 'b.mp4 3'): fix the "
                            "label, or set DATA.NUM_CLASSES to the number of classes (at least 4)")
    with pytest.raises(LabelRangeError, match="as num_classes is 3"):  # no name given: the parameter's own
        read_file_list(str(lst), str(tmp_path), 3)


def test_a_label_past_int64_is_a_list_error_without_num_classes(tmp_path):
    """Labels are kept as int64: a larger one is refused like any bad label (naming the line), not an overflow."""
    lst = tmp_path / "list.txt"
    lst.write_text(f"a.mp4 {2**63 - 1}\nb.mp4 {2**63}\n")
    with pytest.raises(DataListError) as e:
        read_file_list(str(lst), str(tmp_path))
    assert str(e.value) == (f"{lst}:2: label {2**63} is too large (line 'b.mp4 {2**63}'): a label is a class number, "
                            "counted from 0, at most 9,223,372,036,854,775,807: fix the label")
    lst.write_text(f"a.mp4 {2**63 - 1}\n")
    assert read_file_list(str(lst), str(tmp_path))[0].label == 2**63 - 1


def test_a_negative_label_without_num_classes_says_it_is_negative(tmp_path):
    """Read with no class count, a label of -1 was "outside [0, 2**63)", which told its user nothing to act on."""
    lst = tmp_path / "list.txt"
    lst.write_text("a.mp4 0\n\nb.mp4  -1\n")
    for read in (read_video_list, read_file_list):
        with pytest.raises(DataListError) as e:
            read(str(lst), str(tmp_path))
        assert str(e.value) == (f"{lst}:3: label -1 is negative (line 'b.mp4  -1'): a label is a class number, "
                                "counted from 0: fix the label")


@pytest.mark.parametrize("content, line, column", [
    (b"a.mp4 1\nb.mp4 2\nvideos/caf\xe9.mp4 0\nd.mp4 1\n", 3, 11),  # one Latin-1 byte in one path
    (b"\xef\xbb\xbfa.mp4 1\r\n\xff.mp4 2\r\n", 2, 1),  # after a BOM and CRLF line ends, opening a line
    (b"\xc3.mp4 0\n", 1, 1),
])
def test_read_file_list_non_utf8_line_is_named(tmp_path, content, line, column):
    """One non-UTF-8 byte refuses the list like any malformed line: naming the file, the line and the column."""
    lst = tmp_path / "bytes list.txt"
    lst.write_bytes(content)
    with pytest.raises(DataListError) as e:
        read_file_list(str(lst), str(tmp_path))
    assert f"{lst}:{line}: not valid UTF-8" in str(e.value) and f"at column {column}" in str(e.value)
    good = tmp_path / "good.txt"
    good.write_bytes(b"\xef\xbb\xbfvideos/caf\xc3\xa9.mp4 0\r\n")  # UTF-8 with a BOM reads as before
    assert read_file_list(str(good), "/d")[0].rel_path == "videos/caf\u00e9.mp4"


def test_lists_joined_with_cat_read_without_the_bom_each_brought(tmp_path):
    """Two lists saved with a BOM and joined (``cat a.txt b.txt``): the second BOM opened a line's file name, so that
    video was quarantined as a missing file under a name that looked right in every message."""
    lst = tmp_path / "joined.txt"
    lst.write_bytes(b"\xef\xbb\xbftrain/a b.mp4 1\r\n" + b"\xef\xbb\xbftrain/c.mp4 0\r\n\xef\xbb\xbf\r\nd.mp4\t2\n")
    assert [(e.rel_path, e.label, e.line_no) for e in read_file_list(str(lst), str(tmp_path))] == [
        ("train/a b.mp4", 1, 1), ("train/c.mp4", 0, 2), ("d.mp4", 2, 4)]


def test_list_lines_are_numbered_as_an_editor_numbers_them(tmp_path):
    """A form feed, U+2028 or \\x85 inside a line cut it in two for ``str.splitlines``: messages named a later line
    than an editor shows (and than the count of ``first_line_not_utf8``), and a name holding one was read as two
    lines, the first without a label."""
    lst = tmp_path / "list.txt"
    lst.write_bytes("a\x0cb.mp4 1\nc\u2028d.mp4 2\r\ne\x85f.mp4 0\rbad.mp4 x\n".encode())
    with pytest.raises(DataListError, match=rf"^{re.escape(str(lst))}:4: label 'x' is not an integer"):
        read_file_list(str(lst), str(tmp_path))
    lst.write_bytes("a\x0cb.mp4 1\nc\u2028d.mp4 2\r\ne\x85f.mp4 0\r".encode())
    assert [(e.rel_path, e.label, e.line_no) for e in read_file_list(str(lst), str(tmp_path))] == [
        ("a\x0cb.mp4", 1, 1), ("c\u2028d.mp4", 2, 2), ("e\x85f.mp4", 0, 3)]
    lst.write_bytes("a\x0cb.mp4 1\nc\u2028d.mp4 2\n".encode() + b"caf\xe9.mp4 0\n")
    with pytest.raises(DataListError) as e:
        read_file_list(str(lst), str(tmp_path))
    assert f"{lst}:3: not valid UTF-8 (byte 0xe9 at column 4)" in str(e.value) and first_line_not_utf8(str(lst)) == 3


@pytest.mark.parametrize("content, line, column, needle", [
    (b"a.mp4 1\nvideos/a\x00b.mp4 0\n", 2, 9, "a NUL character"),  # no file name holds one
    ("a.mp4 1\nb.mp4 2\n".encode("utf-16-le"), 1, 2, "a NUL character"),  # UTF-16 saved without a BOM
    ("a.mp4 1\n".encode("utf-16"), 1, 1, "the file starts with a UTF-16 byte-order mark"),
], ids=["nul", "utf16-without-bom", "utf16"])
def test_a_nul_or_utf16_list_is_a_malformed_line_not_a_traceback(tmp_path, content, line, column, needle):
    """A NUL in a path parsed, and every file lookup of the index build then failed on it with a ValueError traceback
    (verify_data.py and train.py alike); a UTF-16 list is named as such."""
    lst = tmp_path / "list.txt"
    lst.write_bytes(content)
    with pytest.raises(DataListError) as e:
        read_video_list(str(lst), str(tmp_path))
    assert str(e.value).startswith(f"{lst}:{line}: ") and needle in str(e.value)
    assert f"column {column}" in str(e.value)


def test_read_file_list_missing_and_empty(tmp_path):
    with pytest.raises(DataListError, match="does not exist") as e:
        read_file_list(str(tmp_path / "nope.txt"), str(tmp_path))
    assert "nope.txt" in str(e.value)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n")
    with pytest.raises(DataListError, match="no entries") as e:
        read_file_list(str(empty), str(tmp_path))
    assert "empty.txt" in str(e.value)


# ----------------------------------------------------------------------------------------------------------------
# index on a directory of tiny clips, good and bad

GOOD = {  # rel path -> (frames, width, height, fps)
    "clips/cls a/good 0.webm": (12, 64, 48, 25),
    "clips/cls a/good_1.webm": (20, 80, 64, 30),
    "clips/cls_b/good_2.webm": (9, 48, 32, 12.5),
}
BAD = {  # rel path -> word the reason must contain
    "clips/cls_b/zero.webm": "zero-byte",
    "clips/cls_b/garbage.webm": "container",
    "clips/cls_b/truncated.webm": "truncated",
    "clips/cls_b/missing.webm": "missing",
    "clips/cls_b/audio only.webm": "no video stream",
}


@pytest.fixture()
def dataset(tmp_path) -> tuple[Path, Path]:
    root = tmp_path / "data"
    for rel, (n, w, h, fps) in GOOD.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_video(str(root / rel), counter_frames(n, w, h), "vp9", fps=fps)
    bad_dir = root / "clips/cls_b"
    (bad_dir / "zero.webm").write_bytes(b"")
    (bad_dir / "garbage.webm").write_bytes(np.random.default_rng(0).bytes(4000))
    write_video(str(bad_dir / "full.webm"), counter_frames(40), "vp9")
    data = (bad_dir / "full.webm").read_bytes()
    (bad_dir / "truncated.webm").write_bytes(data[: len(data) // 2])
    (bad_dir / "full.webm").unlink()
    write_audio_only(str(bad_dir / "audio only.webm"))
    lst = tmp_path / "lists" / "train.txt"
    lst.parent.mkdir()
    rels = list(GOOD) + list(BAD)
    lst.write_text("".join(f"{rel} {i % 2}\n" for i, rel in enumerate(rels)))
    return lst, root


def check_index(ix: DatasetIndex, lst: Path, root: Path) -> None:
    rows = {e.rel_path: e.row for e in ix.entries}
    assert ix.good_rows == sorted(rows[r] for r in GOOD)
    for rel, (n, w, h, fps) in GOOD.items():
        info = ix.infos[rows[rel]]
        assert (info.num_frames, info.codec, info.width, info.height, info.fps) == (n, "vp9", w, h, fps)
        st = os.stat(root / rel)
        assert (info.size, info.mtime_ns) == (st.st_size, st.st_mtime_ns)
        assert (info.chroma, info.bit_depth, info.pix_fmt) == ("420", 8, "yuv420p")
        assert info.coded_width >= w and info.coded_height >= h and info.coded_width % 2 == 0
    assert set(ix.bad) == {rows[r] for r in BAD}
    for rel, word in BAD.items():
        assert word in ix.bad[rows[rel]], (rel, ix.bad[rows[rel]])
    assert ix.quarantine_path == str(lst) + ".quarantine.txt"
    lines = Path(ix.quarantine_path).read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == sorted(BAD)
    assert all(len(line.split("\t")) == 2 and line.split("\t")[1] for line in lines)
    summary = ix.summary()
    for rel in BAD:
        assert str(root / rel) in summary


def test_the_summary_names_the_first_bad_videos_only(dataset, monkeypatch):
    import dali_pipelines.index_summary as index_summary_mod

    lst, root = dataset
    monkeypatch.setattr(index_summary_mod, "BAD_VIDEOS_NAMED", 2)  # 20 in use: a half-downloaded list has 1000s
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    lines = ix.summary().splitlines()
    named = [ln for ln in lines if ln.startswith("    ") and ": " in ln]
    assert len(named) == 2 and lines[-1] == f"    and {len(BAD) - 2} more"
    assert f"all {len(BAD)} listed in {ix.quarantine_path}" in ix.summary()


def test_build_index_good_and_bad(dataset, caplog):
    lst, root = dataset
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.index"):
        ix = build_index(str(lst), str(root), num_classes=2, workers=2, progress=False)
    check_index(ix, lst, root)
    assert ix.probed == len(GOOD) + len(BAD) - 1  # the missing file is never probed
    assert ix.missing == 1 and f"{len(GOOD) + len(BAD) - 1} probed, 0 from cache, 1 missing)" in ix.summary()
    again = build_index(str(lst), str(root), num_classes=2, workers=2, progress=False)
    assert f"(0 probed, {len(GOOD) + len(BAD) - 1} from cache, 1 missing)" in again.summary()
    warned = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for rel in BAD:
        assert str(root / rel) in warned
    assert os.path.exists(str(lst) + ".index.npz")


def test_repeated_lines_are_said_in_the_summary_with_their_lines_and_differing_labels(tmp_path):
    """A list naming a file on several lines trains (or scores) it once per line, and one giving it two labels
    teaches the same clip as two classes; nothing said either before the evaluation, and nothing at all of a
    training list."""
    write_video(str(tmp_path / "a b.webm"), counter_frames(8), "vp9")
    write_video(str(tmp_path / "c.webm"), counter_frames(8), "vp9")
    lst = tmp_path / "list.txt"
    lst.write_text("a b.webm 0\nc.webm 1\n\na b.webm 0\nc.webm 2\na b.webm 0\n")
    summary = build_index(str(lst), str(tmp_path), workers=1, progress=False).summary()
    assert ("  2 videos listed on more than one line, each line an entry of its own (3 repeated lines; 1 with "
            "different labels): a b.webm (lines 1, 4, 6); c.webm (lines 2, 5; labels 1, 2)") in summary.splitlines()
    lst.write_text("a b.webm 0\nc.webm 1\n")
    assert "more than one line" not in build_index(str(lst), str(tmp_path), workers=1, progress=False).summary()


def test_a_file_on_several_lines_is_probed_once(tmp_path, monkeypatch):
    """A list that repeats a video (a rare class drawn more often) had the file probed once per line at its first
    build, a full decode too; each line keeps its own label and the file's one verdict, good or bad."""
    write_video(str(tmp_path / "a b.webm"), counter_frames(8), "vp9")
    (tmp_path / "bad.webm").write_bytes(b"not a video")
    lst = tmp_path / "list.txt"
    lst.write_text("a b.webm 0\nbad.webm 1\na b.webm 2\nbad.webm 1\na b.webm 1\n")
    calls: list[str] = []
    real_job = index_mod._probe_job
    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", 0)  # one worker probes in this process, patched
    monkeypatch.setattr(index_mod, "_probe_job", lambda job: calls.append(job[1]) or real_job(job))
    ix = build_index(str(lst), str(tmp_path), workers=1, progress=False, full_decode=True)
    assert sorted(calls) == [str(tmp_path / "a b.webm"), str(tmp_path / "bad.webm")]
    assert ix.good_rows == [0, 2, 4] and [ix.label(r) for r in ix.good_rows] == [0, 2, 1]
    assert {ix.infos[r].num_frames for r in ix.good_rows} == {8} and sorted(ix.bad) == [1, 3]
    assert ix.bad[1] == ix.bad[3] and (tmp_path / "list.txt.quarantine.txt").read_text().count("bad.webm") == 1


def test_a_run_quarantine_leaves_out_every_line_of_that_file(tmp_path, caplog):
    """A video that failed during the run was left out at its one line only: the list's other lines naming it
    stayed good, so the run decoded it again (failing again, or waiting out the time limit again); only the next
    build left them out. Now every line naming the file is left out at once, with the same reason, said in the log;
    the quarantine file names each spelling once."""
    write_video(str(tmp_path / "a.webm"), counter_frames(8), "vp9")
    write_video(str(tmp_path / "b.webm"), counter_frames(8), "vp9")
    lst = tmp_path / "list.txt"
    lst.write_text("a.webm 0\nb.webm 1\n./a.webm 2\na.webm 0\n")
    ix = build_index(str(lst), str(tmp_path), workers=1, progress=False)
    assert ix.good_rows == [0, 1, 2, 3]
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.index"):
        ix.quarantine(2, "decode failed")
    assert ix.good_rows == [1] and ix.bad == {0: "decode failed", 2: "decode failed", 3: "decode failed"}
    warned = [r.getMessage() for r in caplog.records]
    assert any("left out at line 1 too" in m for m in warned) and any("line 4 too" in m for m in warned)
    ix.flush_quarantines()
    listed = (tmp_path / "list.txt.quarantine.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in listed] == ["./a.webm", "a.webm"]
    assert build_index(str(lst), str(tmp_path), workers=1, progress=False).good_rows == [1]


def test_spellings_of_one_file_are_one_file_but_dotdot_after_a_link_is_not(tmp_path, monkeypatch):
    """'videos/./a.webm', 'videos//a.webm' and 'x/../videos/a.webm' (x a folder) name 'videos/a.webm': they were
    probed once each and the summary said nothing of a repeated video. 'link/../videos/a.webm' is another file when
    'link' is a symbolic link (its '..' is the parent of the link's target): probed on its own, never merged."""
    (tmp_path / "videos").mkdir()
    (tmp_path / "x").mkdir()
    (tmp_path / "deep" / "inner").mkdir(parents=True)
    (tmp_path / "deep" / "videos").mkdir()
    os.symlink(tmp_path / "deep" / "inner", tmp_path / "link")
    write_video(str(tmp_path / "videos" / "a.webm"), counter_frames(8), "vp9")
    write_video(str(tmp_path / "deep" / "videos" / "a.webm"), counter_frames(5), "vp9")
    lst = tmp_path / "list.txt"
    lst.write_text("videos/a.webm 0\nvideos/./a.webm 1\nvideos//a.webm 1\nx/../videos/a.webm 2\n"
                   "link/../videos/a.webm 0\n")
    calls: list[str] = []
    real_job = index_mod._probe_job
    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", 0)  # one worker probes in this process, patched
    monkeypatch.setattr(index_mod, "_probe_job", lambda job: calls.append(job[1]) or real_job(job))
    ix = build_index(str(lst), str(tmp_path), workers=1, progress=False)
    assert sorted(calls) == [os.path.join(tmp_path, "link/../videos/a.webm"), str(tmp_path / "videos/a.webm")]
    assert [ix.infos[r].num_frames for r in range(5)] == [8, 8, 8, 8, 5]
    assert [e.path for e in ix.entries][1:4] == [os.path.join(tmp_path, p) for p in  # opened as written
                                                 ("videos/./a.webm", "videos//a.webm", "x/../videos/a.webm")]
    assert ("  1 video listed on more than one line, each line an entry of its own (3 repeated lines; 1 with "
            "different labels): videos/a.webm (lines 1, 2, 3, 4; labels 0, 1, 1, 2)") in ix.summary().splitlines()


def test_a_link_whose_target_is_gone_is_named_so_not_an_unexplained_stat_failure(tmp_path):
    """A symbolic link to a deleted video (a dataset folder of links) and a loop of links both said "cannot stat
    file", which named neither the cause nor the target."""
    write_video(str(tmp_path / "a.webm"), counter_frames(8), "vp9")
    os.symlink(str(tmp_path / "moved away.webm"), tmp_path / "b.webm")
    os.symlink("c.webm", tmp_path / "d.webm")
    os.symlink("d.webm", tmp_path / "c.webm")
    lst = tmp_path / "list.txt"
    lst.write_text("a.webm 0\nb.webm 0\nc.webm 0\nmissing.webm 0\n")
    ix = build_index(str(lst), str(tmp_path), workers=1, progress=False)
    assert ix.bad == {1: f"symbolic link to a missing file ({tmp_path / 'moved away.webm'})",
                      2: f"cannot stat file ({os.strerror(errno.ELOOP)})", 3: "missing file"}
    assert ix.missing == 3 and list(ix.good_rows) == [0]


def test_many_bad_videos_are_named_up_to_a_limit_then_counted(tmp_path, caplog):
    """A list with many missing files (a half-downloaded dataset) names the first ones in the log and counts the
    rest in one line pointing at the quarantine file, which names them all."""
    lst = tmp_path / "list.txt"
    write_video(str(tmp_path / "present.webm"), counter_frames(8), "vp9")  # a list of none is refused instead
    lst.write_text("present.webm 0\n" + "".join(f"missing_{i:02d}.mp4 0\n" for i in range(27)))
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.index"):
        ix = build_index(str(lst), str(tmp_path), workers=1, progress=False)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    named = [m for m in warned if m.startswith("bad video ")]
    assert len(named) == 20 and "missing_00.mp4: missing file" in named[0] and "missing_19.mp4" in named[-1]
    assert f"and 7 more bad videos in {lst}: all 27 listed with their reasons in {ix.quarantine_path}" in warned
    assert len(open(ix.quarantine_path).read().splitlines()) == 27


def test_the_index_lines_count_one_video_in_the_singular(tmp_path, monkeypatch, caplog):
    write_video(str(tmp_path / "only.webm"), counter_frames(8), "vp9")
    one = tmp_path / "one.txt"
    one.write_text("only.webm 0\n")
    with caplog.at_level(logging.INFO, logger="dali_pipelines.index"):
        ix = build_index(str(one), str(tmp_path), workers=1, progress=False)
    assert f"video index of {one}: 1 video, 1 good, 0 bad (1 probed, 0 from cache)" in ix.summary()
    assert f"video index of {one}: 1 video, 1 good" in caplog.text

    monkeypatch.setattr(index_mod, "BAD_VIDEOS_NAMED", 1)  # the second missing video is counted, not named
    three = tmp_path / "three.txt"
    three.write_text("only.webm 0\nmissing_a.webm 0\nmissing_b.webm 0\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.index"):
        build_index(str(three), str(tmp_path), workers=1, progress=False)
    assert f"and 1 more bad video in {three}: all 2 listed with their reasons in" in caplog.text


@pytest.mark.parametrize("root", ["", "elsewhere", "absolute"])
def test_a_list_none_of_whose_videos_exists_is_refused_without_a_quarantine_file(dataset, tmp_path, monkeypatch,
                                                                                 root):
    """An empty root looks the relative paths up from the working folder: run from another folder, every video was
    quarantined as missing (a quarantine file beside the list marking them all) and the run ended later with "no
    readable video"; the same for a root that exists but is not the list's."""
    lst, data = dataset
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    if root == "absolute":
        lst.write_text(f"{tmp_path / 'gone' / 'a.webm'} 0\n{tmp_path / 'gone' / 'b.webm'} 1\n")
    with pytest.raises(DataListError) as err:
        build_index(str(lst), root and str(tmp_path / "elsewhere"), num_classes=2, workers=1, progress=False)
    count = 2 if root == "absolute" else len(GOOD) + len(BAD)
    listed = f"the {count} videos listed in {lst}"
    fix = "(first: 'clips/cls a/good 0.webm'): set DATA.ROOT to the folder"
    want = {"": f"DATA.ROOT is empty, and none of {listed} exists from the working folder {tmp_path} {fix}",
            "elsewhere": f"DATA.ROOT = {tmp_path / 'elsewhere'} holds none of {listed}, whose paths are relative to "
                         f"it {fix}",
            "absolute": f"none of {listed} exists (first: '{tmp_path / 'gone' / 'a.webm'}'; its paths are "
                        "absolute)"}[root]
    assert str(err.value).startswith(want), str(err.value)
    assert sorted(p.name for p in lst.parent.iterdir()) == ["train.txt"]  # no quarantine file, no index
    # the right root indexes the list as before
    if root != "absolute":
        check_index(build_index(str(lst), str(data), num_classes=2, workers=1, progress=False), lst, data)


def test_a_plan_refuses_a_list_without_its_videos_but_not_one_that_lacks_its_first(tmp_path):
    """Without the index's lookups (a dry run) the list's files are looked up once its first is missing: a list
    with some of its videos (a half-downloaded dataset) is the index's to quarantine, not refused."""
    write_video(str(tmp_path / "present.webm"), counter_frames(8), "vp9")
    lst = tmp_path / "list.txt"
    lst.write_text("missing.webm 0\npresent.webm 0\n")
    check_list_root(read_video_list(str(lst), str(tmp_path)), "--root")
    lst.write_text("missing.webm 0\ngone.webm 0\n")
    with pytest.raises(DataListError) as err:
        check_list_root(read_video_list(str(lst), str(tmp_path)), "--root")
    assert str(err.value) == f"--root = {tmp_path} holds none of the 2 videos listed in {lst}, whose paths are " \
                             "relative to it (first: 'missing.webm'): set --root to the folder its paths are " \
                             "relative to"


def test_a_relative_root_is_named_with_the_working_folder_it_is_taken_from(tmp_path, monkeypatch):
    """A relative DATA.ROOT is taken from where the command runs (a job script's folder, not the config's): the
    error named the root as typed, which exists where its user looks, and said nothing to do of one that is no
    folder there."""
    (tmp_path / "data" / "clips").mkdir(parents=True)
    write_video(str(tmp_path / "data" / "clips" / "a.webm"), counter_frames(8), "vp9")
    lst = tmp_path / "list.txt"
    lst.write_text("clips/a.webm 0\n")
    jobs = tmp_path / "jobs"
    (jobs / "data").mkdir(parents=True)
    monkeypatch.chdir(jobs)
    with pytest.raises(DataListError) as err:
        check_list_root(read_video_list(str(lst), "data/"), "DATA.ROOT")
    assert str(err.value) == (f"DATA.ROOT = data/ (from the working folder {jobs}) holds none of the 1 videos listed "
                              f"in {lst}, whose paths are relative to it (first: 'clips/a.webm'): set DATA.ROOT to "
                              "the folder its paths are relative to")
    with pytest.raises(DataListError) as err:
        check_list_root(read_video_list(str(lst), "dta"), "DATA.ROOT")
    assert str(err.value) == (f"DATA.ROOT = dta (from the working folder {jobs}) is not an existing folder, and the "
                              f"paths of {lst} are relative to it (first: 'clips/a.webm'): set DATA.ROOT to the "
                              "folder they are relative to")
    monkeypatch.chdir(tmp_path)
    check_list_root(read_video_list(str(lst), "data/"), "DATA.ROOT")  # from there, the right one


def test_a_list_with_a_frame_count_column_is_named_so_not_sent_to_another_root(tmp_path):
    """'<path> <frames> <label>' lines (mmaction2's) read as files named '<path> <frames>', none of which exists:
    the error told the user to change a root that was right."""
    (tmp_path / "clips").mkdir()
    write_video(str(tmp_path / "clips" / "a b.webm"), counter_frames(8), "vp9")
    lst = tmp_path / "list.txt"
    lst.write_text("clips/a b.webm 8 0\nclips/c.webm 300 1\n")
    with pytest.raises(DataListError) as err:
        build_index(str(lst), str(tmp_path), workers=1, progress=False, root_name="DATA.ROOT")
    assert str(err.value) == (
        f"none of the 2 videos listed in {lst} exists: the first path, 'clips/a b.webm 8', is the file 'clips/a "
        "b.webm' and a number (a frame count column, as in mmaction2's lists?); a list line is '<path> <label>': "
        "remove that column")
    lst.write_text("clips/a b.webm 8 0\nclips/a b.webm 1\n")  # one video found: the index's to quarantine the other
    check_list_root(read_video_list(str(lst), str(tmp_path)), "DATA.ROOT")


def test_a_list_written_on_windows_is_named_so_not_sent_to_another_root(tmp_path):
    """'clips\\a.webm' names no file here, where folders are separated by '/': the error told the user to change a
    root that was right."""
    (tmp_path / "clips").mkdir()
    write_video(str(tmp_path / "clips" / "a.webm"), counter_frames(8), "vp9")
    lst = tmp_path / "list.txt"
    lst.write_bytes(b"clips\\a.webm 0\r\nclips\\b.webm 1\r\n")
    with pytest.raises(DataListError) as err:
        build_index(str(lst), str(tmp_path), workers=1, progress=False, root_name="DATA.ROOT")
    assert str(err.value) == (f"none of the 2 videos listed in {lst} exists: its paths use '\\' between folders, as "
                              "on Windows (first: 'clips\\\\a.webm'): write them with '/'")
    lst.write_text("clips\\b.webm 1\n")  # with '/' it names no file either: then the root is named
    with pytest.raises(DataListError, match="set DATA.ROOT to the folder"):
        build_index(str(lst), str(tmp_path), workers=1, progress=False, root_name="DATA.ROOT")


def test_build_index_strict_names_every_bad_file(dataset):
    lst, root = dataset
    # An input error (DataError, a ValueError) with a one-line message naming the key, the list and every bad file.
    with pytest.raises(DataError) as e:
        build_index(str(lst), str(root), workers=1, strict=True, progress=False)
    msg = str(e.value)
    assert isinstance(e.value, ValueError) and not isinstance(e.value, BadVideoError)
    assert "\n" not in msg and "DATA.STRICT" in msg and str(lst) in msg
    assert f"{len(BAD)} of {len(GOOD) + len(BAD)} videos" in msg
    for rel, why in BAD.items():
        assert str(root / rel) in msg
        assert why in msg
    for rel in GOOD:
        assert str(root / rel) not in msg


def test_full_decode_agrees(dataset):
    lst, root = dataset
    ix = build_index(str(lst), str(root), workers=1, full_decode=True, progress=False)
    check_index(ix, lst, root)


def test_cache_reused_and_replaced_video_reprobed(dataset, monkeypatch):
    lst, root = dataset
    build_index(str(lst), str(root), workers=1, progress=False)
    cache = Path(str(lst) + ".index.npz")
    mtime = cache.stat().st_mtime_ns

    calls: list[str] = []
    real_job = index_mod._probe_job
    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", 0)  # one worker probes in this process, patched
    monkeypatch.setattr(index_mod, "_probe_job", lambda job: calls.append(job[1]) or real_job(job))
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    assert calls == [] and ix.probed == 0
    assert cache.stat().st_mtime_ns == mtime  # nothing changed, nothing rewritten
    check_index(ix, lst, root)

    # Replace one good video with a longer one: only it is probed again and its new count is used.
    rel = "clips/cls a/good_1.webm"
    write_video(str(root / rel), counter_frames(33, 80, 64), "vp9", fps=30)
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    assert calls == [str(root / rel)] and ix.probed == 1
    row = next(e.row for e in ix.entries if e.rel_path == rel)
    assert ix.infos[row].num_frames == 33
    # A full-decode build does not trust results of quick probes: everything present is probed again.
    calls.clear()
    build_index(str(lst), str(root), workers=1, full_decode=True, progress=False)
    assert len(calls) == len(GOOD) + len(BAD) - 1


def test_a_root_reached_through_a_link_reuses_the_cache(dataset, tmp_path, monkeypatch, caplog):
    """``--root /tmp/link`` where the link leads to the folder the cache was built for: the same videos, so nothing
    is probed again; a video changed since is. A copy of the dataset in another folder kept its sizes and mtimes
    (a dataset moved or mounted elsewhere): another root, but the same rule reuses its records, bad verdicts too;
    it was probed again in full (hours for a Kinetics-size list)."""
    lst, root = dataset
    first = build_index(str(lst), str(root), workers=1, progress=False)
    link = tmp_path / "link"
    link.symlink_to(root, target_is_directory=True)

    calls: list[str] = []
    real_job = index_mod._probe_job
    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", 0)  # one worker probes in this process, patched
    monkeypatch.setattr(index_mod, "_probe_job", lambda job: calls.append(job[1]) or real_job(job))
    ix = build_index(str(lst), str(link), workers=1, progress=False)
    assert calls == [] and ix.probed == 0
    assert ix.good_rows == first.good_rows and ix.infos[ix.good_rows[0]] == first.infos[first.good_rows[0]]
    assert f"(0 probed, {len(GOOD) + len(BAD) - 1} from cache, 1 missing)" in ix.summary()

    rel = "clips/cls a/good_1.webm"  # changed through the link: its record is not reused
    st = os.stat(link / rel)
    os.utime(link / rel, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ix = build_index(str(lst), str(link), workers=1, progress=False)
    assert calls == [str(link / rel)] and ix.probed == 1

    copy = tmp_path / "copy"  # the same names, sizes and mtimes elsewhere: reused by the same rule
    shutil.copytree(root, copy)
    changed = "clips/cls_b/garbage.webm"  # a bad verdict is reused only for the same size and mtime, too
    st = os.stat(copy / changed)
    os.utime(copy / changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    calls.clear()
    with caplog.at_level(logging.INFO, logger="dali_pipelines.index"):
        moved = build_index(str(lst), str(copy), workers=1, progress=False)
    assert calls == [str(copy / changed)] and moved.probed == 1
    assert moved.good_rows == first.good_rows and sorted(moved.bad) == sorted(first.bad)
    assert (f"index cache {moved.cache_path} of root {link} reused for root {copy}: {len(GOOD) + len(BAD) - 2} list "
            "rows reused (files with the recorded size and mtime), 1 to probe") in caplog.messages
    calls.clear()  # saved for the new root: its next build reads it as its own
    assert build_index(str(lst), str(copy), workers=1, progress=False).probed == 0 and calls == []

    plain = tmp_path / "plain"  # a copy that did not keep the mtimes: other files as far as the cache can tell
    shutil.copytree(root, plain, copy_function=shutil.copyfile)
    calls.clear()
    build_index(str(lst), str(plain), workers=1, progress=False)
    assert len(calls) == len(GOOD) + len(BAD) - 1


def test_the_records_of_absolute_paths_serve_under_any_root(tmp_path, monkeypatch):
    """A list of absolute paths names the same files whatever DATA.ROOT is, but its cache was read only for the
    root it was built with: checked with verify_data (the list's folder) and trained with DATA.ROOT "" (the working
    folder), or started from another folder, every video was probed again. Only its relative paths' are now."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.webm", "b c.webm"):
        write_video(str(videos / name), counter_frames(8), "vp9")
    lst = tmp_path / "lists" / "list.txt"
    lst.parent.mkdir()
    lst.write_text(f"{videos / 'a.webm'} 0\n{videos / 'b c.webm'} 1\nvideos/a.webm 1\n")
    first = build_index(str(lst), str(tmp_path), workers=1, progress=False)
    assert first.probed == 3 and len(first.good_rows) == 3

    calls: list[str] = []
    real_job = index_mod._probe_job
    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", 0)  # one worker probes in this process, patched
    monkeypatch.setattr(index_mod, "_probe_job", lambda job: calls.append(job[1]) or real_job(job))
    other = tmp_path / "other"
    shutil.copytree(videos, other / "videos")  # the relative path leads to another file there: probed again
    st = os.stat(other / "videos" / "a.webm")  # (another mtime: a copy that kept it would be reused)
    os.utime(other / "videos" / "a.webm", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ix = build_index(str(lst), str(other), workers=1, progress=False)
    assert calls == [str(other / "videos" / "a.webm")] and ix.probed == 1
    assert ix.good_rows == [0, 1, 2] and [ix.label(r) for r in range(3)] == [0, 1, 1]
    calls.clear()
    ix = build_index(str(lst), str(tmp_path), workers=1, progress=False)  # back: its relative path's record was
    assert calls == [str(videos / "a.webm")] and ix.good_rows == [0, 1, 2]  # the other root's file's


@pytest.mark.timeout(120)  # the old pool hung here: fail fast, not at the suite's limit
def test_a_video_that_crashes_its_probe_is_bad_and_the_build_finishes(dataset, monkeypatch):
    """The index build used to wait forever for the result of a worker that died; now the video that kills its
    worker (even probed alone) is a bad video saying so, cached like the others, and every other row is probed."""
    from tests import crashing_jobs

    lst, root = dataset
    victim = "clips/cls a/good_1.webm"
    renamed = victim.replace("good_1", f"good_1_{crashing_jobs.CRASH_MARK}")
    os.rename(root / victim, root / renamed)
    lst.write_text(lst.read_text().replace(victim, renamed))
    real_job = index_mod._probe_job
    monkeypatch.setattr(index_mod, "_probe_job", crashing_jobs.probe_job)  # pickled by name: workers import it
    ix = build_index(str(lst), str(root), workers=2, progress=False)
    rows = {e.rel_path: e.row for e in ix.entries}
    crashed = rows[renamed]
    assert "probing it crashed the process" in ix.bad[crashed] and "signal SIGSEGV" in ix.bad[crashed]
    assert ix.good_rows == sorted(rows[r] for r in GOOD if r != victim)
    for rel, word in BAD.items():
        assert word in ix.bad[rows[rel]], (rel, ix.bad[rows[rel]])
    monkeypatch.setattr(index_mod, "_probe_job", real_job)
    again = build_index(str(lst), str(root), workers=2, progress=False)  # from the cache: not probed again
    assert again.probed == 0 and again.bad[crashed] == ix.bad[crashed]


def _mark_stalling(lst: Path, root: Path, rels: list[str]) -> dict[str, str]:
    """Rename ``rels`` so that ``crashing_jobs.stalling_probe_job`` never answers for them; marked -> original."""
    from tests import crashing_jobs

    marked = {}
    for rel in rels:
        new = rel.replace(".webm", f"_{crashing_jobs.STALL_MARK}.webm")
        os.rename(root / rel, root / new)
        lst.write_text(lst.read_text().replace(rel, new))
        marked[new] = rel
    return marked


def test_a_video_whose_probe_does_not_answer_is_left_out_of_this_build_only(dataset, monkeypatch):
    """A video whose probe never ends (a hung network file system) used to hang the build for ever. Now, after
    ``timeout_s`` (twice, the second time with the pool to itself), it is left out of this build with a reason
    that says so, every other video is indexed as usual, and the cache does not record it: the next build probes
    it again (and only it)."""
    from tests import crashing_jobs

    lst, root = dataset
    (stuck_rel, _), = _mark_stalling(lst, root, ["clips/cls a/good_1.webm"]).items()
    monkeypatch.setattr(index_mod, "_probe_job", crashing_jobs.stalling_probe_job)
    limit = crashing_jobs.ANSWERS_WITHIN_S  # the others answer within it on a loaded machine too
    ix = build_index(str(lst), str(root), workers=2, progress=False, timeout_s=limit)
    rows = {e.rel_path: e.row for e in ix.entries}
    stuck = rows[stuck_rel]
    assert ix.bad[stuck].startswith(index_mod.PROBE_OVERDUE + f" (no result within {limit:g} s, the only item in "
                                    "flight)")
    assert ix.bad[stuck].endswith("left out of this build only, the next one probes it again")
    assert ix.good_rows == sorted(rows[r] for r in GOOD if r != "clips/cls a/good_1.webm")
    for rel, word in BAD.items():
        assert word in ix.bad[rows[rel]], (rel, ix.bad[rows[rel]])
    quarantined = Path(ix.quarantine_path).read_text().splitlines()
    assert f"{stuck_rel}\t{ix.bad[stuck]}" in quarantined
    monkeypatch.setattr(index_mod, "_probe_job", crashing_jobs.probe_job)  # the file system answers again
    again = build_index(str(lst), str(root), workers=2, progress=False, timeout_s=limit)
    assert again.probed == 1 and stuck in again.good_rows and again.infos[stuck].num_frames == 20
    assert stuck_rel not in Path(again.quarantine_path).read_text()


@pytest.mark.timeout(120)
def test_one_probing_worker_is_held_to_the_time_limit_too(dataset, monkeypatch):
    """DATA.INDEX_WORKERS 1 probed in the main process, where no time limit holds: a video whose probe never ends
    (a hung network file system) held the build, and training's start, for ever. Its one worker is a worker process
    now, ended past the limit: the video is left out of this build only, every other video is indexed."""
    from tests import crashing_jobs

    lst, root = dataset
    build_index(str(lst), str(root), workers=1, progress=False, timeout_s=0)  # cached: the next build probes one
    (stuck_rel, _), = _mark_stalling(lst, root, ["clips/cls a/good_1.webm"]).items()
    monkeypatch.setattr(index_mod, "_probe_job", crashing_jobs.stalling_probe_job)  # workers import it by name
    limit = crashing_jobs.ANSWERS_WITHIN_S
    ix = build_index(str(lst), str(root), workers=1, progress=False, timeout_s=limit)
    rows = {e.rel_path: e.row for e in ix.entries}
    assert ix.probed == 1
    assert ix.bad[rows[stuck_rel]].startswith(index_mod.PROBE_OVERDUE + f" (no result within {limit:g} s")
    assert ix.good_rows == sorted(rows[r] for r in GOOD if r != "clips/cls a/good_1.webm")
    for rel, word in BAD.items():
        assert word in ix.bad[rows[rel]], (rel, ix.bad[rows[rel]])
    assert f"{stuck_rel}\t{ix.bad[rows[stuck_rel]]}" in Path(ix.quarantine_path).read_text().splitlines()


def test_the_probe_time_limit_of_tools_without_a_config_is_the_config_default():
    from configs import get_cfg_defaults

    assert index_mod.PROBE_TIMEOUT_S == get_cfg_defaults().DATA.VIDEO_TIMEOUT_S


def test_videos_in_a_row_without_an_answer_stop_the_build_with_one_error(dataset, monkeypatch):
    """Every video hanging is the storage: the build stops with one error naming the list and DATA.VIDEO_TIMEOUT_S
    after MAX_OVERDUE_IN_A_ROW of them, the videos probed so far saved (the next build probes only the others)."""
    from evautil.workers import MAX_OVERDUE_IN_A_ROW
    from tests import crashing_jobs

    lst, root = dataset
    marked = _mark_stalling(lst, root, list(GOOD))
    assert len(marked) >= MAX_OVERDUE_IN_A_ROW
    lines = lst.read_text().splitlines(keepends=True)  # the hanging ones last: the others are probed first
    lst.write_text("".join(sorted(lines, key=lambda line: crashing_jobs.STALL_MARK in line)))
    monkeypatch.setattr(index_mod, "_probe_job", crashing_jobs.stalling_probe_job)
    limit = crashing_jobs.ANSWERS_WITHIN_S  # the bad videos probed first answer within it on a loaded machine too
    with pytest.raises(DataError, match=rf"^indexing {re.escape(str(lst))}: {MAX_OVERDUE_IN_A_ROW} items in a row "
                                        rf"gave no result within {limit:g} s each .*DATA.VIDEO_TIMEOUT_S") as stop:
        build_index(str(lst), str(root), workers=2, progress=False, timeout_s=limit)
    last = re.search(r"\(the last: (.*)\): what they are read from", str(stop.value))
    assert last and last.group(1) in {os.path.join(root, rel) for rel in marked}, str(stop.value)  # the file, plain
    monkeypatch.setattr(index_mod, "_probe_job", crashing_jobs.probe_job)
    again = build_index(str(lst), str(root), workers=2, progress=False)
    assert again.probed == len(marked)  # the bad ones were probed and saved before the build stopped
    assert sorted(again.entries[r].rel_path for r in again.good_rows) == sorted(marked)
    rows = {e.rel_path: e.row for e in again.entries}
    for rel, word in BAD.items():
        assert word in again.bad[rows[rel]], (rel, again.bad[rows[rel]])


def cache_header(cache: Path) -> dict:
    with np.load(cache, allow_pickle=False) as archive:
        return json.loads(archive["header"].tobytes())


def test_corrupt_cache_is_ignored(dataset):
    lst, root = dataset
    Path(str(lst) + ".index.npz").write_text("{not an archive")
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    check_index(ix, lst, root)
    assert cache_header(Path(str(lst) + ".index.npz"))["version"] == INDEX_SCHEMA_VERSION


def test_a_cache_with_a_damaged_zip_header_is_named_and_probed_again(dataset, caplog):
    """A byte damaged in the cache's zip directory (a disk or copy error) reads as an unsupported compression method:
    the build stopped with NotImplementedError, naming no file. Now the file is named, ignored and written again."""
    lst, root = dataset
    build_index(str(lst), str(root), workers=1, progress=False)
    cache = Path(str(lst) + ".index.npz")
    data = bytearray(cache.read_bytes())
    entry = data.index(b"PK\x01\x02")  # the first entry of the zip's central directory
    data[entry + 10:entry + 12] = (99).to_bytes(2, "little")  # its compression method: none that exists
    cache.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.index_store"):
        ix = build_index(str(lst), str(root), workers=1, progress=False)
    assert ix.probed == len(GOOD) + len(BAD) - 1  # all but the missing file
    check_index(ix, lst, root)
    assert any(f"ignoring unreadable index cache {cache}" in r.getMessage() for r in caplog.records)
    assert cache_header(cache)["version"] == INDEX_SCHEMA_VERSION


def test_runtime_quarantine_persists(dataset):
    lst, root = dataset
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    row = ix.good_rows[0]
    ix.quarantine(row, "decoder failed:\n  NVDEC error")
    assert row not in ix.good_rows and ix.bad[row] == "decoder failed: NVDEC error"
    assert f"{ix.entries[row].rel_path}\tdecoder failed: NVDEC error" in Path(ix.quarantine_path).read_text()
    ix2 = build_index(str(lst), str(root), workers=1, progress=False)
    assert ix2.probed == 0 and row not in ix2.good_rows and "decoder failed" in ix2.bad[row]


def test_a_video_is_in_the_quarantine_file_once(dataset):
    """A list naming a video on two rows, and two indexes of one list (two splits over it): each video is one line
    of the quarantine file, with the reason first given; a rebuild writes it once as well."""
    lst, root = dataset
    rels, bad = list(GOOD) + list(BAD), list(BAD)[0]
    lst.write_text("".join(f"{rel} {i % 2}\n" for i, rel in enumerate(rels + rels[:1] + [bad])))
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    other = build_index(str(lst), str(root), workers=1, progress=False)
    first, again = 0, len(rels)  # rels[0] on two rows
    ix.quarantine(first, "decode failed during the run")
    ix.quarantine(again, "another reason")
    other.quarantine(first, "a third reason")
    lines = Path(ix.quarantine_path).read_text().splitlines()
    assert [x for x in lines if x.startswith(rels[0] + "\t")] == [f"{rels[0]}\tdecode failed during the run"]
    assert len([x for x in lines if x.startswith(bad + "\t")]) == 1  # named twice in the list, bad at build
    ix.flush_quarantines()
    rebuilt = Path(build_index(str(lst), str(root), workers=1, progress=False).quarantine_path).read_text()
    assert len(rebuilt.splitlines()) == len(BAD) + 1 and rebuilt.count(rels[0] + "\t") == 1


@pytest.mark.parametrize("same", [True, False])
def test_a_run_warns_once_of_validation_videos_that_are_training_videos(dataset, tmp_path, same):
    """Nothing said that a validation list named training videos (the same list, or one overlapping it)."""
    from types import SimpleNamespace

    from engine.metrics import MetricLogger
    from engine.runner import Run, check_lists_overlap
    from tests.video_fixtures import small_cfg

    lst, root = dataset
    rels = list(GOOD)
    val = lst if same else tmp_path / "val.txt"
    if not same:
        val.write_text(f"other.webm 0\n{rels[2]} 0\n./{rels[0]} 1\n{rels[0]} 1\n")
    cfg = small_cfg(str(root), str(lst), str(val))
    train_index = build_index(str(lst), str(root), workers=1, progress=False)
    val_index = build_index(str(val), str(root), workers=1, progress=False)
    metrics = MetricLogger(str(tmp_path / "run"), tensorboard=False, nvml=False, progress_bar=False)
    try:
        check_lists_overlap(Run(ctx=None, metrics=metrics, model=None, val_loader=SimpleNamespace(index=val_index),
                                train_loader=SimpleNamespace(index=train_index)), cfg)
    finally:
        metrics.close()
    warned = [x for x in (tmp_path / "run" / "log_rank0.txt").read_text().splitlines() if "WARNING" in x]
    lists = (f"DATA.TRAIN_FILE and DATA.VAL_FILE are both {lst}" if same else
             f"DATA.TRAIN_FILE {lst} and DATA.VAL_FILE {val}")
    files, named = ((len(rels) + len(BAD), f"{rels[0]} (training line 1, validation line 1); {rels[1]} (training line "
                     f"2, validation line 2); {rels[2]} (training line 3, validation line 3); ...") if same else
                    (2, f"{rels[2]} (training line 3, validation line 2); ./{rels[0]} (training line 1, validation "
                     "line 3)"))
    assert len(warned) == 1 and warned[0].endswith(
        f"WARNING: {lists}: {files} files of the validation list are in the training list too, so the validation "
        f"accuracy is measured partly on videos the model trains on; e.g. {named}: remove them from one of the lists, "
        "unless meant")


def test_a_name_with_a_tab_reads_back_whole_from_the_quarantine_file(tmp_path, monkeypatch):
    """'<name>\\t<reason>' lines: a name with a tab was read back as its part before the tab, so a video already
    listed got a line again from each index that quarantined it (another rank, the validation's); a reason with a
    line break or a tab (a library's message) made a line that was no video's. The name is the line up to its last
    tab (a reason keeps none), which reads the files written before the same."""
    write_video(str(tmp_path / "clip\tone.webm"), counter_frames(8), "vp9")
    (tmp_path / "bad\ttwo.webm").write_bytes(b"not a video")
    lst = tmp_path / "list.txt"
    lst.write_text("clip\tone.webm 0\nbad\ttwo.webm 1\n")
    real_job = index_mod._probe_job
    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", 0)  # one worker probes in this process, patched
    monkeypatch.setattr(index_mod, "_probe_job", lambda job: (job[0], None, "no frames:\n\tat all") if "bad" in
                        job[1] else real_job(job))
    first = build_index(str(lst), str(tmp_path), workers=1, progress=False)
    second = build_index(str(lst), str(tmp_path), workers=1, progress=False)
    assert Path(first.quarantine_path).read_text() == "bad\ttwo.webm\tno frames: at all\n"
    for ix in (first, second, first):
        ix.quarantine(0, "decode failed")
        ix.quarantine(1, "decode failed")
    assert Path(first.quarantine_path).read_text() == ("bad\ttwo.webm\tno frames: at all\n"
                                                       "clip\tone.webm\tdecode failed\n")


def test_a_name_not_in_utf8_is_quarantined_as_its_bytes_and_read_back(tmp_path, monkeypatch):
    """A '~' line under a home folder whose name is not UTF-8 (the file system's bytes, held as surrogates) naming a
    bad video: writing the quarantine file as strict UTF-8 stopped the build with UnicodeEncodeError. Its line holds
    the name's own bytes; the next build reads it back (nothing to rewrite), and a runtime quarantine finds the video
    listed already and adds the other one's line the same way."""
    home = os.path.join(tmp_path, os.fsdecode(b"caf\xe9"))  # a Latin-1 name on a UTF-8 file system
    os.makedirs(home)
    write_video(os.path.join(home, "good.webm"), counter_frames(8), "vp9")
    Path(home, "bad.webm").write_bytes(b"not a video")
    monkeypatch.setenv("HOME", home)
    lst = tmp_path / "list.txt"
    lst.write_text("~/good.webm 0\n~/bad.webm 1\n")
    first = build_index(str(lst), home, workers=1, progress=False)  # a root so named too
    assert first.good_rows == [0] and sorted(first.bad) == [1]
    quarantine = Path(first.quarantine_path)
    bad_line = os.fsencode(home) + b"/bad.webm\t" + " ".join(first.bad[1].split()).encode("utf-8", "surrogateescape")
    assert quarantine.read_bytes() == bad_line + b"\n"
    written = quarantine.stat().st_mtime_ns
    second = build_index(str(lst), home, workers=1, progress=False)
    assert second.probed == 0 and second.bad == first.bad and quarantine.stat().st_mtime_ns == written
    second.quarantine(1, "decode failed")  # listed already: no second line
    second.quarantine(0, "decode failed")
    assert quarantine.read_bytes() == bad_line + b"\n" + os.fsencode(home) + b"/good.webm\tdecode failed\n"


def test_a_quarantine_is_passed_to_the_index_of_a_list_naming_the_same_file(dataset, tmp_path):
    """Training's quarantines reach the validation's index (runner.check_lists_overlap), whatever path a list names
    a file by and however many lines name it; with one list for both, its quarantine file keeps training's reason."""
    lst, root = dataset
    rels = list(GOOD)
    train = build_index(str(lst), str(root), workers=1, progress=False)
    same = build_index(str(lst), str(root), workers=1, progress=False)
    link = tmp_path / "linked"
    link.symlink_to(root)
    val = tmp_path / "val.txt"
    val.write_text(f"{rels[1]} 0\n{rels[0]} 0\n./{rels[0]} 1\n")
    other = build_index(str(val), str(link), workers=1, progress=False)
    assert train.shared_with(other) == {0: [1, 2], 1: [0]}
    train.pass_quarantines_to(other)
    train.pass_quarantines_to(same)
    train.quarantine(0, "decode failed during the run")
    why = f"decode failed during the run (quarantined reading {lst} earlier in this run)"
    assert (other.bad, same.bad[0]) == ({1: why, 2: why}, why) and other.good_rows == [0]
    assert Path(other.quarantine_path).read_text() == f"{rels[0]}\t{why}\n./{rels[0]}\t{why}\n"
    assert f"{rels[0]}\tdecode failed during the run\n" in Path(train.quarantine_path).read_text()
    assert why not in Path(train.quarantine_path).read_text()


def test_a_burst_of_runtime_quarantines_rewrites_the_cache_once(dataset, monkeypatch):
    import dali_pipelines.dataset_index as dataset_index_mod

    lst, root = dataset
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    saves = []
    real_save = dataset_index_mod.save_cache
    monkeypatch.setattr(dataset_index_mod, "save_cache", lambda *a: saves.append(1) or real_save(*a))
    rows = ix.good_rows[:3]
    for row in rows:  # e.g. a folder deleted during the run
        ix.quarantine(row, "decode failed during the run")
    assert len(saves) == 1  # the first at once, the others wait for the interval or a flush
    lines = Path(ix.quarantine_path).read_text().splitlines()  # the quarantine file has every line at once
    assert len([x for x in lines if x.endswith("\tdecode failed during the run")]) == 3
    ix.flush_quarantines()
    ix.flush_quarantines()  # nothing left to write
    assert len(saves) == 2
    again = build_index(str(lst), str(root), workers=1, progress=False)
    assert again.probed == 0 and all("decode failed during the run" in again.bad[r] for r in rows)


def test_turns_learnt_after_the_build_are_kept_in_the_cache_only_for_files_unchanged_since(dataset):
    """record_turns keeps the turns a run learnt (of a migrated cache's rows, which record none) in the cache file,
    read again under the lock, but not for a file changed since its probe: the turn read from the new file is not
    the probed record's, and the next build probes that file again anyway."""
    lst, root = dataset
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    kept, changed = ix.good_rows[:2]
    stat = os.stat(ix.path(changed))
    os.utime(ix.path(changed), ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    ix.record_turns({kept: 90, changed: 180})
    assert ix.table.columns["rotation"][[kept, changed]].tolist() == [90, 180]  # this run's notes have them
    cache = load_cache(ix.cache_path, os.path.abspath(root))
    at = [cache.rel_paths.find(ix.videos.rel_path(r)) for r in (kept, changed)]
    assert cache.table.columns["rotation"][at].tolist() == [90, 0]  # 0: as probed
    again = build_index(str(lst), str(root), workers=1, progress=False)
    assert again.probed == 1 and again.info(kept).rotation == 90 and again.info(changed).rotation == 0


def test_readonly_list_dir_uses_user_cache(dataset, tmp_path, monkeypatch):
    lst, root = dataset
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(index_files, "_dir_writable", lambda d: False)
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    assert ix.cache_path.startswith(str(tmp_path / "xdg" / "eva_dali_video"))
    assert ix.quarantine_path.startswith(str(tmp_path / "xdg" / "eva_dali_video"))
    assert os.path.exists(ix.cache_path) and os.path.exists(ix.quarantine_path)
    assert not os.path.exists(str(lst) + ".index.npz")
    assert build_index(str(lst), str(root), workers=1, progress=False).probed == 0


def test_readonly_list_reached_through_a_link_shares_the_user_cache(dataset, tmp_path, monkeypatch):
    # The per-user cache was named from the list's path as given: the list reached through a linked folder had its
    # own cache there, and every video was probed again.
    lst, root = dataset
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(index_files, "_dir_writable", lambda d: False)
    linked = tmp_path / "linked_lists"
    linked.symlink_to(lst.parent, target_is_directory=True)
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    assert ix.probed > 0
    again = build_index(str(linked / lst.name), str(root), workers=1, progress=False)
    assert again.probed == 0 and again.cache_path == ix.cache_path
    # A cache named from the link's path, as before the real path named them, is still used through the link.
    given = index_files._user_cache_stem(os.path.dirname(ix.cache_path), str(linked / lst.name)) + ".index.npz"
    os.replace(ix.cache_path, given)
    again = build_index(str(linked / lst.name), str(root), workers=1, progress=False)
    assert again.probed == 0 and again.cache_path == given


def test_a_cache_beside_a_list_in_a_read_only_folder_starts_each_users_cache(dataset, tmp_path, monkeypatch):
    # A shared dataset indexed where it lies (by its owner, or prepare_kinetics.py lists --check), then read-only to
    # the other users: their per-user caches started empty, and each user's first build probed every video again.
    lst, root = dataset
    first = build_index(str(lst), str(root), workers=1, progress=False)
    assert first.probed > 0 and first.cache_path == str(lst) + ".index.npz"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(index_files, "_dir_writable", lambda d: False)
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    assert ix.probed == 0 and ix.cache_path.startswith(str(tmp_path / "xdg")) and os.path.isfile(ix.cache_path)
    assert ix.good_rows == first.good_rows and ix.bad == first.bad
    rel = ix.entries[ix.good_rows[0]].rel_path  # changed since the owner's build: probed again, as with any cache
    st = os.stat(root / rel)
    os.utime(root / rel, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert build_index(str(lst), str(root), workers=1, progress=False).probed == 1


def test_a_users_cache_learns_the_newer_records_of_the_cache_beside_the_list(dataset, tmp_path, monkeypatch, caplog):
    # A per-user cache started as a copy of the owner's cache beside the list, but never learnt its later rows: each
    # video the owner probed since (new, replaced) was probed again by every user. The user's own verdicts stay.
    lst, root = dataset
    first = build_index(str(lst), str(root), workers=1, progress=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    writable = {"now": False}
    monkeypatch.setattr(index_files, "_dir_writable", lambda d: writable["now"])
    mine = build_index(str(lst), str(root), workers=1, progress=False)
    assert mine.probed == 0 and mine.cache_path != first.cache_path
    quarantined = mine.good_rows[0]  # the user's run found it broken: recorded in the user's cache only
    mine.quarantine(quarantined, "decode failed during the run")
    mine.flush_quarantines()

    changed, added = "clips/cls a/good_1.webm", "clips/cls a/good_3.webm"
    st = os.stat(root / changed)
    os.utime(root / changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    shutil.copy2(root / "clips/cls a/good 0.webm", root / added)
    lst.write_text(lst.read_text() + f"{added} 0\n")
    writable["now"] = True  # the owner's build, beside the list
    assert build_index(str(lst), str(root), workers=1, progress=False).probed == 2
    mtime = os.stat(mine.cache_path).st_mtime_ns + 10**9  # written after the user's, whatever the clock's grain
    os.utime(first.cache_path, ns=(mtime, mtime))

    writable["now"] = False
    calls: list[str] = []
    real_job = index_mod._probe_job
    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", 0)  # one worker probes in this process, patched
    monkeypatch.setattr(index_mod, "_probe_job", lambda job: calls.append(job[1]) or real_job(job))
    with caplog.at_level(logging.INFO, logger="dali_pipelines.index"):
        again = build_index(str(lst), str(root), workers=1, progress=False)
    assert calls == [] and again.probed == 0 and again.cache_path == mine.cache_path
    assert "decode failed during the run" in again.bad[quarantined]  # the user's own verdict stays
    assert len(again.good_rows) == len(first.good_rows)  # the added one in, the quarantined one out
    assert (f"index cache {mine.cache_path}: 2 list rows reused from the newer cache {first.cache_path} beside "
            "the list") in caplog.messages
    assert build_index(str(lst), str(root), workers=1, progress=False).probed == 0  # saved in the user's cache


def test_the_recount_line_counts_only_the_rows_no_newer_cache_beside_the_list_filled(dataset, tmp_path, monkeypatch,
                                                                                     caplog):
    # A user's cache of quick probes recorded before schema version 4 (frame counts that may include frames that
    # never decode), the owner's newer cache beside the list with this code's records of all but one: the line
    # said every such row of the user's cache was probed again, though the newer cache had filled all but one.
    from dali_pipelines.index_store import load_cache, save_cache

    lst, root = dataset
    first = build_index(str(lst), str(root), workers=1, progress=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(index_files, "_dir_writable", lambda d: False)
    mine = build_index(str(lst), str(root), workers=1, progress=False)
    assert mine.probed == 0 and mine.cache_path != first.cache_path

    def untag(cache_path: str, rows: list[int]) -> None:  # as an index before schema version 4 recorded them
        cache = load_cache(cache_path, str(root))
        cache.table.columns["colorspace"][rows] = 0  # code 0: ''
        save_cache(cache_path, str(lst), str(root), cache.rel_paths, cache.table)

    untag(mine.cache_path, mine.good_rows)
    untag(first.cache_path, mine.good_rows[:1])
    mtime = os.stat(mine.cache_path).st_mtime_ns + 10**9  # the owner's, written after the user's
    os.utime(first.cache_path, ns=(mtime, mtime))
    calls: list[str] = []
    real_job = index_mod._probe_job
    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", 0)  # one worker probes in this process, patched
    monkeypatch.setattr(index_mod, "_probe_job", lambda job: calls.append(job[1]) or real_job(job))
    with caplog.at_level(logging.INFO, logger="dali_pipelines.index"):
        again = build_index(str(lst), str(root), workers=1, progress=False)
    assert calls == [mine.path(mine.good_rows[0])] and again.probed == 1
    assert (f"index cache {mine.cache_path}: probing 1 video again, quick probes recorded before schema version 4"
            in caplog.text)
    assert (f"index cache {mine.cache_path}: {len(mine.good_rows) - 1} list rows reused from the newer cache "
            f"{first.cache_path} beside the list") in caplog.messages


def test_a_list_linked_into_a_users_folder_starts_from_the_cache_beside_the_list(dataset, tmp_path):
    # A user links a shared dataset's list into an own (writable) folder: the cache beside the link started empty,
    # and every video was probed again although the list's own cache was beside it.
    lst, root = dataset
    first = build_index(str(lst), str(root), workers=1, progress=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train.txt").symlink_to(lst)
    ix = build_index(str(mine / "train.txt"), str(root), workers=1, progress=False)
    assert ix.probed == 0 and ix.cache_path == str(mine / "train.txt.index.npz") and ix.bad == first.bad


def _concurrent_build(lst: str, root: str, barrier, out) -> None:
    barrier.wait()
    out.put(build_index(lst, root, workers=1, progress=False).probed)


def test_concurrent_builds_probe_once(dataset):
    lst, root = dataset
    ctx = mp.get_context("spawn")  # not fork: the test process runs threads, which a forked child can deadlock on
    barrier, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_concurrent_build, args=(str(lst), str(root), barrier, out)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    probed = sorted(out.get(timeout=5) for _ in procs)
    assert probed == [0, 0, len(GOOD) + len(BAD) - 1]


def test_probe_video_reasons(tmp_path):
    with pytest.raises(BadVideoError, match="missing file"):
        probe_video(str(tmp_path / "nothing.webm"))
    (tmp_path / "e.webm").write_bytes(b"")
    with pytest.raises(BadVideoError, match="zero-byte"):
        probe_video(str(tmp_path / "e.webm"))


def write_vfr_webm(path: str, frames: np.ndarray, pts_ms: list[int], nominal_fps: int = 30) -> None:
    """A variable-frame-rate VP9 WebM: frame k shown at ``pts_ms[k]`` milliseconds, nominal rate ``nominal_fps``."""
    from fractions import Fraction

    c = av.open(path, "w")
    s = c.add_stream("libvpx-vp9", rate=nominal_fps)
    s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    s.time_base = s.codec_context.time_base = Fraction(1, 1000)
    for f, t in zip(frames, pts_ms):
        vf = av.VideoFrame.from_ndarray(f, format="rgb24")
        vf.pts, vf.time_base = t, Fraction(1, 1000)
        c.mux(s.encode(vf))
    c.mux(s.encode(None))
    c.close()


def test_variable_frame_rate_webm_is_not_called_truncated(tmp_path):
    """A VFR WebM whose average rate (40 frames in 4.67 s) is far below its nominal 30 fps is valid: the index
    keeps all 40 frames, which both decoders reach; the same file cut in half is still truncated."""
    frames = counter_frames(40)
    pts = [round(i * 1000 / 30) for i in range(20)] + [633 + 200 * (k + 1) for k in range(20)]  # then 5 fps
    path = str(tmp_path / "vfr.webm")
    write_vfr_webm(path, frames, pts)
    info = probe_video(path)
    assert info.num_frames == 40
    want = [0, 19, 20, 39]
    got = decode_frames(path, want)
    assert closest_frames(got, frames)[0].tolist() == want
    from dali_pipelines.pipelines import decode_with_dali

    (dali,) = decode_with_dali([path], [want])
    assert closest_frames(dali, frames)[0].tolist() == want
    data = Path(path).read_bytes()
    (tmp_path / "cut.webm").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadVideoError, match=r"truncated: \d+ frames readable, ending at 0\.\d+ s of the 4\.666 s"):
        probe_video(str(tmp_path / "cut.webm"))
    # An index cached by the old rule (bad: "the duration implies 140") probes the video again.
    lst = tmp_path / "list.txt"
    lst.write_text("vfr.webm 0\n")
    cache = build_index(str(lst), str(tmp_path), progress=False).cache_path
    stored = load_cache(cache, str(tmp_path))
    size, mtime = (int(stored.table.columns[k][0]) for k in ("size", "mtime_ns"))
    stored.table.set_bad(0, "truncated: 40 frames readable, the duration implies 140", size, mtime, False)
    save_cache(cache, str(lst), str(tmp_path), stored.rel_paths, stored.table)
    again = build_index(str(lst), str(tmp_path), progress=False)
    assert again.probed == 1 and again.infos[0].num_frames == 40 and not again.bad


# ----------------------------------------------------------------------------------------------------------------
# frame counts against DALI (VP9) and a full PyAV decode (real H.264 / MPEG-4 clips)


def test_counts_match_dali_cpu_decoder_vp9(tmp_path):
    dali = pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn

    clips = {"plain.webm": ({}, 23), "gop4.webm": ({"gop": 4}, 17),
             # good-quality mode with alt-ref frames: hidden frames travel in superframes, not extra packets
             "altref.webm": ({"gop": 16, "deadline": "good", "cpu-used": "4", "lag-in-frames": "16",
                              "auto-alt-ref": "1"}, 40)}
    paths = []
    for name, (opts, n) in clips.items():
        write_video(str(tmp_path / name), counter_frames(n), "vp9", **opts)
        paths.append(str(tmp_path / name))

    @dali.pipeline_def(batch_size=len(paths), num_threads=1, device_id=None)
    def pipe():
        enc, _ = fn.readers.file(files=paths)
        return fn.decoders.video(enc, device="cpu")

    p = pipe()
    p.build()
    out = p.run()[0]
    for i, path in enumerate(paths):
        dali_frames = np.asarray(out[i])
        assert probe_video(path).num_frames == dali_frames.shape[0] == count_packets(path) == count_frames(path)
        # Same numbering: DALI's frame k is PyAV's frame k.
        idx, _ = closest_frames(dali_frames, decode_frames(path, range(dali_frames.shape[0])))
        assert idx.tolist() == list(range(dali_frames.shape[0]))


def test_counts_match_full_decode_on_real_clips(real_clips_dir):
    clips = sorted(p for p in real_clips_dir.iterdir() if p.suffix in (".mp4", ".avi"))
    assert len(clips) >= 7, f"the reference clips are missing from {real_clips_dir}"
    for clip in clips:
        info = probe_video(str(clip))
        assert info.num_frames == count_frames(str(clip)), clip.name
        assert info.codec in ("h264", "mpeg4") and info.width > 0 and info.fps > 0
        assert probe_video(str(clip), full_decode=True) == info


def test_index_on_real_clips_with_spaces(real_clips_dir, tmp_path):
    # Real clips under a class folder with spaces, via a list: the pipeline's view of the data.
    clips = reference_clips(real_clips_dir, ["clip_32frames_340x256.mp4", "clip_426x240_29.97fps.mp4"])
    (tmp_path / "arm wrestling").mkdir()
    for c in clips:
        shutil.copy(c, tmp_path / "arm wrestling" / c.name)
    lst = tmp_path / "val.txt"
    lst.write_text("".join(f"arm wrestling/{c.name} 7\n" for c in clips))
    ix = build_index(str(lst), str(tmp_path), num_classes=8, workers=1, progress=False)
    assert ix.good_rows == list(range(len(clips))) and not ix.bad
    assert [ix.num_frames(r) for r in ix.good_rows] == [count_frames(str(c)) for c in clips]


# ----------------------------------------------------------------------------------------------------------------
# decode_frames


@pytest.mark.parametrize("codec, opts", [("vp9", {"gop": 8}), ("h264", {"bframes": 3, "preset": "medium"})])
def test_decode_frames_returns_requested_frames(tmp_path, codec, opts):
    src = counter_frames(40)
    path = str(tmp_path / f"counter.{'webm' if codec == 'vp9' else 'mp4'}")
    write_video(path, src, codec, **opts)
    if codec == "h264":
        with av.open(path) as c:
            pts = [p.pts for p in c.demux(video=0) if p.size]
        assert pts != sorted(pts)  # B-frames: decode order differs from presentation order
    want = [37, 0, 5, 17, 5, 39, 17, 8]  # unordered, duplicates, across GOPs
    got = decode_frames(path, want)
    assert got.shape == (len(want), 48, 64, 3) and got.dtype == np.uint8
    idx, margin = closest_frames(got, src)
    assert idx.tolist() == want
    assert margin.min() > 5  # the best match is unambiguous
    assert np.abs(got.astype(int) - src[want]).mean() < 6
    # bytes input, numpy indices, threads=1 give the same pixels
    assert np.array_equal(decode_frames(Path(path).read_bytes(), np.array(want), threads=1), got)


def test_decode_frames_errors(tmp_path):
    path = str(tmp_path / "c.webm")
    write_video(path, counter_frames(10), "vp9")
    with pytest.raises(BadVideoError, match=r"c\.webm.*frame 10 requested but only 10"):
        decode_frames(path, [0, 10])
    with pytest.raises(ValueError, match="negative"):
        decode_frames(path, [-1])
    assert decode_frames(path, []).shape == (0, 48, 64, 3)
    with pytest.raises(BadVideoError, match="nothing.webm"):
        decode_frames(str(tmp_path / "nothing.webm"), [0])
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(BadVideoError, match="junk.mp4"):
        decode_frames(str(tmp_path / "junk.mp4"), [0])


def _rewrite_archive(cache: Path, change) -> None:
    """Rewrite the cache archive with ``change(header, arrays)`` applied."""
    with np.load(cache, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    header = json.loads(arrays["header"].tobytes())
    change(header, arrays)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with open(cache, "wb") as f:
        np.savez(f, **arrays)


def test_cache_of_another_schema_version_is_probed_again(dataset):
    """A cache file written by another schema version is never read: its records (here, wrong on purpose) are
    ignored and every video is probed again; so is one whose arrays differ from this version's."""
    lst, root = dataset
    build_index(str(lst), str(root), workers=1, progress=False)
    cache = Path(str(lst) + ".index.npz")
    everything = len(GOOD) + len(BAD) - 1  # all but the missing file

    def older(header, arrays):
        arrays["num_frames"] = np.full_like(arrays["num_frames"], 999)
        header["version"] = INDEX_SCHEMA_VERSION + 1  # a later version's (versions 3 and 4 are migrated: next tests)

    _rewrite_archive(cache, older)
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    assert ix.probed == everything
    check_index(ix, lst, root)
    assert cache_header(cache)["version"] == INDEX_SCHEMA_VERSION
    # the same records under the current version but with an unknown column, or a column of another type
    _rewrite_archive(cache, lambda header, arrays: arrays.update(nvdec_ok=np.ones(len(arrays["status"]), bool)))
    assert build_index(str(lst), str(root), workers=1, progress=False).probed == everything
    _rewrite_archive(cache, lambda header, arrays: arrays.update(width=arrays["width"].astype(np.float32)))
    assert build_index(str(lst), str(root), workers=1, progress=False).probed == everything
    assert build_index(str(lst), str(root), workers=1, progress=False).probed == 0


def test_version_3_cache_is_migrated_its_quick_probes_probed_again(dataset, caplog):
    """A version 3 cache (no colour matrix tags) is migrated and saved as the current version: its fully decoded
    records are kept (here, one whose count is changed on purpose to tell it from a probe), without a tag (''),
    which the log says at every load: probing them again would be a full decode of a Kinetics-size list. Its quick
    probes' videos are probed again, tags and all: their counts may include frames an MP4 edit list hides; so are its
    bad videos (here, one whose verdict is changed on purpose): the checks have changed since
    (tests/test_unusual_videos.py)."""
    lst, root = dataset
    first = build_index(str(lst), str(root), workers=1, progress=False)
    cache = Path(first.cache_path)
    bad_rel = next(rel for rel in BAD if rel.endswith(".webm") and "missing" not in rel)
    bad_row = next(e.row for e in first.entries if e.rel_path == bad_rel)
    kept = first.good_rows[0]

    def version_3(header, arrays):
        del arrays["colorspace"], header["texts"]["colorspace"]
        del arrays["nvdec_numbering"], header["texts"]["nvdec_numbering"]  # (added in version 6)
        del arrays["rotation"]  # (added in version 8)
        header["reasons"][arrays["reason"][bad_row]] = "a verdict of the version 3 cache"
        arrays["full_decode"][kept], arrays["num_frames"][kept] = True, 7
        header["version"] = 3

    _rewrite_archive(cache, version_3)
    with caplog.at_level("INFO"):
        ix = build_index(str(lst), str(root), workers=1, progress=False)
    recorded_bad = len(first.bad) - 1  # all but the missing file, which no cache records
    assert ix.probed == len(first.good_rows) - 1 + recorded_bad
    assert cache_header(cache)["version"] == INDEX_SCHEMA_VERSION
    assert f"migrating index cache {cache} (schema version 3) to version {INDEX_SCHEMA_VERSION}" in caplog.text
    untagged = f"index cache {cache}: 1 of its videos (fully decoded by an index older than schema version 4) have " \
        "no colour matrix tag recorded"
    assert untagged in caplog.text
    assert ix.bad == first.bad  # this code's verdicts
    assert ix.info(kept) == dataclasses.replace(first.info(kept), num_frames=7, colorspace="", nvdec_numbering="",
                                                rotation=-1)
    assert {r: ix.info(r) for r in ix.good_rows if r != kept} == \
        {r: first.info(r) for r in first.good_rows if r != kept}  # probed again: tagged ('unknown': untagged)
    # Saved as the current version with that row's tag unrecorded: every later load says so (a prepare_kinetics
    # --check passes such rows on to the caches it writes, where the migration's line would not be seen again).
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert build_index(str(lst), str(root), workers=1, progress=False).probed == 0
    assert untagged in caplog.text
    cache.unlink()
    build_index(str(lst), str(root), workers=1, progress=False)
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert build_index(str(lst), str(root), workers=1, progress=False).probed == 0
    assert "colour matrix tag" not in caplog.text


def _v2_cache(ix: DatasetIndex) -> dict:
    """The index as the JSON document a version 2 cache held."""
    videos = {}
    for row, entry in enumerate(ix.entries):
        c = ix.table.columns
        rec = {"size": int(c["size"][row]), "mtime_ns": int(c["mtime_ns"][row]),
               "full_decode": bool(c["full_decode"][row])}
        if ix.is_good(row):
            rec["info"] = dataclasses.asdict(ix.info(row))
            for added in ("colorspace", "nvdec_numbering", "rotation"):  # recorded since versions 4, 6 and 8
                del rec["info"][added]
        elif row in ix.bad and ix.bad[row] != "missing file":
            rec["bad"] = ix.bad[row]
        else:
            continue
        videos[entry.rel_path] = rec
    return {"version": 2, "list": str(ix.list_path), "root": os.path.abspath(ix.root), "videos": videos}


def test_version_2_json_cache_is_migrated(dataset):
    """A version 2 JSON cache is read (its full decodes are used as they are, here one changed on purpose to tell
    them from a probe; its quick probes' and bad videos are probed again, as a version 3 cache's), saved as the
    current version and removed; a JSON cache of version 1 is not read."""
    lst, root = dataset
    first = build_index(str(lst), str(root), workers=1, progress=False)
    doc = _v2_cache(first)
    rel = "clips/cls a/good_1.webm"
    doc["videos"][rel]["info"]["num_frames"] = 7
    doc["videos"][rel]["full_decode"] = True
    json_cache, cache = Path(str(lst) + ".index.json"), Path(first.cache_path)
    cache.unlink()
    json_cache.write_text(json.dumps(doc))
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    recorded_bad = len(first.bad) - 1  # all but the missing file, which no cache records
    assert ix.probed == len(first.good_rows) - 1 + recorded_bad and not json_cache.exists()
    assert cache_header(cache)["version"] == INDEX_SCHEMA_VERSION
    row = next(e.row for e in ix.entries if e.rel_path == rel)
    assert ix.infos[row].num_frames == 7
    assert {r: ix.info(r) for r in ix.good_rows if r != row} == {r: first.info(r) for r in first.good_rows if r != row}
    assert ix.bad == first.bad
    again = build_index(str(lst), str(root), workers=1, progress=False)  # now from the file saved above
    assert again.probed == 0 and again.infos[row].num_frames == 7

    cache.unlink()
    json_cache.write_text(json.dumps({**doc, "version": 1}))
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    assert ix.probed == len(GOOD) + len(BAD) - 1 and ix.infos[row].num_frames == 20
    check_index(ix, lst, root)


def test_a_version_2_json_cache_of_another_root_is_read_for_this_one(dataset, caplog):
    """A version 2 cache written for another root (the dataset moved since) was ignored, every video probed again,
    while a newer cache of another root is read: its records carry each file's size and mtime, so those of the
    files that keep them are reused (a full decode, changed on purpose to tell it from a probe, here)."""
    lst, root = dataset
    first = build_index(str(lst), str(root), workers=1, progress=False)
    rel = "clips/cls a/good_1.webm"
    doc = {**_v2_cache(first), "root": "/elsewhere/before/the/move"}
    doc["videos"][rel]["info"]["num_frames"] = 7
    doc["videos"][rel]["full_decode"] = True
    json_cache, cache = Path(str(lst) + ".index.json"), Path(first.cache_path)
    cache.unlink()
    json_cache.write_text(json.dumps(doc))
    with caplog.at_level("INFO", logger="dali_pipelines"):
        ix = build_index(str(lst), str(root), workers=1, progress=False)
    row = next(e.row for e in ix.entries if e.rel_path == rel)
    assert ix.infos[row].num_frames == 7 and ix.probed == len(first.good_rows) - 1 + len(first.bad) - 1
    assert f"index cache {cache} of root /elsewhere/before/the/move reused for root {os.path.abspath(root)}: " in (
        caplog.text)
    assert not json_cache.exists() and cache_header(cache)["root"] == os.path.abspath(root)


def test_touched_video_is_probed_again(dataset):
    lst, root = dataset
    build_index(str(lst), str(root), workers=1, progress=False)
    rel = "clips/cls a/good_1.webm"
    st = os.stat(root / rel)
    os.utime(root / rel, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same size, new modification time
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    assert ix.probed == 1
    row = next(e.row for e in ix.entries if e.rel_path == rel)
    assert ix.infos[row].mtime_ns == st.st_mtime_ns + 10**9


def test_a_dataset_and_cache_copied_keeping_mtimes_are_reused_whatever_their_inodes(dataset, tmp_path):
    # rsync -a or cp -p to another machine: every file (the cache too) is a new inode with the same size and mtime,
    # the same videos, so nothing is probed again (a file is known by size and mtime: cache_match.match_list).
    lst, root = dataset
    first = build_index(str(lst), str(root), workers=1, progress=False)
    for path in [*sorted(p for p in root.rglob("*") if p.is_file()), Path(first.cache_path)]:
        shutil.copy2(path, tmp_path / "copy")
        inode = os.stat(path).st_ino
        os.replace(tmp_path / "copy", path)
        assert os.stat(path).st_ino != inode
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    assert ix.probed == 0 and ix.good_rows == first.good_rows and ix.bad == first.bad


def _encode(path: str, codec: str, pix_fmt: str, size=(64, 48), frames: int = 4) -> None:
    with av.open(path, "w") as out:
        s = out.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = size[0], size[1], pix_fmt
        img = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        for _ in range(frames):
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt)):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)


@pytest.mark.parametrize("codec,ext,pix_fmt,chroma,depth,profile", [
    ("libx264", "mp4", "yuv420p", "420", 8, "High"),
    ("libx264", "mp4", "yuv444p", "444", 8, "High 4:4:4 Predictive"),
    ("libx264", "mp4", "yuv422p", "422", 8, "High 4:2:2"),
    ("libvpx-vp9", "webm", "yuv420p", "420", 8, "Profile 0"),
    ("libvpx-vp9", "webm", "yuv420p10le", "420", 10, "Profile 2"),  # skipped where libvpx lacks high bit depth
    ("libx264", "mp4", "yuv420p10le", "420", 10, "High 10"),
    ("libx265", "mp4", "yuv420p10le", "420", 10, "Main 10"),
])
def test_index_records_decoder_facts(tmp_path, codec, ext, pix_fmt, chroma, depth, profile):
    """Codec, coded size, pixel format, chroma format, bit depth and profile: what decides whether NVDEC can take
    a video. Written by the encoder with known settings, read back through the index (and its cache)."""
    path = tmp_path / f"clip.{ext}"
    try:
        _encode(str(path), codec, pix_fmt, size=(70, 50))
    except (av.error.FFmpegError, ValueError) as e:  # an FFmpeg build without this encoder or pixel format
        pytest.skip(f"cannot encode {codec} {pix_fmt} here: {e}")
    lst = tmp_path / "list.txt"
    lst.write_text(f"clip.{ext} 0\n")
    probed = []
    for _ in range(2):  # probed, then from the cache
        ix = build_index(str(lst), str(tmp_path), workers=1, progress=False)
        info, probed = ix.infos[0], probed + [ix.probed]
        assert (info.codec, info.pix_fmt, info.chroma, info.bit_depth) == (
            {"libx264": "h264", "libx265": "hevc"}.get(codec, "vp9"), pix_fmt, chroma, depth)
        assert (info.width, info.height) == (70, 50)
        assert info.coded_width >= 70 and info.coded_height >= 50
        assert info.profile == profile
        assert info.decoder.chroma == chroma
    assert probed == [1, 0]  # the second pass read every fact back from the cache


def test_decoder_facts_of_real_clips(real_clips_dir):
    path, = reference_clips(real_clips_dir, ["clip_1920x1080_72frames.mp4"])
    info = probe_video(str(path))
    assert (info.codec, info.width, info.height, info.coded_width, info.coded_height) == ("h264", 1920, 1080,
                                                                                         1920, 1088)
    assert (info.chroma, info.bit_depth, info.profile) == ("420", 8, "Main")


# ----------------------------------------------------------------------------------------------------------------
# progress lines and interrupted builds


def _rows(ix: DatasetIndex) -> dict:
    """Every row of an index as plain values: good or not, its VideoInfo, its bad reason."""
    return {row: (ix.is_good(row), ix.info(row) if ix.is_good(row) else None, ix.bad.get(row))
            for row in range(len(ix))}


def test_a_build_without_a_terminal_logs_progress_lines(dataset, monkeypatch, caplog):
    """Without a bar (stderr is a log file) the process that probes logs plain lines: what it is about to probe,
    then count, share, rate and time left (every 30 s; here after every video), and the total time at the end."""
    lst, root = dataset
    probed = len(GOOD) + len(BAD) - 1
    monkeypatch.setattr(index_mod, "_LOG_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="dali_pipelines.index"):
        build_index(str(lst), str(root), workers=1, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("indexing train.txt")]
    assert lines[0] == f"indexing train.txt: probing {probed} of {probed + 1} videos"
    assert len(lines) == probed + 1  # nothing per video beyond the progress lines
    for k, line in enumerate(lines[1:-1], 1):
        assert re.fullmatch(rf"indexing train\.txt: {k} of {probed} videos done \({100 * k / probed:.1f}%\), "
                            r"([0-9.,]+ videos?/s, eta \d+:\d\d:\d\d|- videos/s, eta -)", line), line
    assert re.fullmatch(rf"indexing train\.txt: {probed} videos done in 0:00:\d\d \(([0-9.,]+|-) videos?/s\)",
                        lines[-1])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dali_pipelines.index"):  # from the cache: nothing to report
        assert build_index(str(lst), str(root), workers=1, progress=False).probed == 0
    assert not [r for r in caplog.records if r.getMessage().startswith("indexing")]


def test_the_probing_line_counts_the_files_probed_when_lines_repeat_them(dataset, monkeypatch, caplog):
    """A file named on several lines is probed once, and the progress lines count files; the line before them said
    'probing 9 of 10 videos' (lines) and then '7 of 7 videos done'."""
    lst, root = dataset
    lst.write_text(lst.read_text() + "clips/cls_b/good_2.webm 0\nclips/cls a/good 0.webm 1\n")
    probed = len(GOOD) + len(BAD) - 1
    monkeypatch.setattr(index_mod, "_LOG_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="dali_pipelines.index"):
        build_index(str(lst), str(root), workers=1, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("indexing train.txt")]
    assert lines[0] == f"indexing train.txt: probing {probed} videos, named on {probed + 2} of the list's " \
                       f"{probed + 3} lines"
    assert re.fullmatch(rf"indexing train\.txt: {probed} videos done in .*", lines[-1]), lines[-1]


def test_the_probing_lines_count_one_video_in_the_singular(tmp_path, caplog):
    """The line before the progress lines said "probing 1 videos" (and "of 1 videos"), and DATA.STRICT "1 of 1
    videos ... are unreadable"."""
    write_video(str(tmp_path / "only.webm"), counter_frames(8), "vp9")
    (tmp_path / "bad.webm").write_bytes(b"not a video")
    one, repeated, bad = tmp_path / "one.txt", tmp_path / "repeated.txt", tmp_path / "bad.txt"
    one.write_text("only.webm 0\n")
    repeated.write_text("only.webm 0\nonly.webm 1\nonly.webm 0\n")
    bad.write_text("bad.webm 0\n")
    with caplog.at_level(logging.INFO, logger="dali_pipelines.index"):
        build_index(str(one), str(tmp_path), workers=1, progress=False)
        build_index(str(repeated), str(tmp_path), workers=1, progress=False)
    said = [r.getMessage() for r in caplog.records]
    assert "indexing one.txt: probing 1 of 1 video" in said
    assert "indexing repeated.txt: probing 1 video, named on 3 of the list's 3 lines" in said
    with pytest.raises(DataError) as e:
        build_index(str(bad), str(tmp_path), workers=1, strict=True, progress=False)
    assert str(e.value).startswith(f"DATA.STRICT is on and 1 of 1 video in {bad} is unreadable: ")


def test_the_summary_counts_a_file_on_several_lines_as_one_file_probed(tmp_path):
    """One file named on 3 lines is probed once, and the summary said "(3 probed, 0 from cache)": it counted lines
    as probes. It says the files probed and the lines they stand for."""
    write_video(str(tmp_path / "only.webm"), counter_frames(8), "vp9")
    write_video(str(tmp_path / "other.webm"), counter_frames(8), "vp9")
    lst = tmp_path / "list.txt"
    lst.write_text("only.webm 0\nonly.webm 1\nonly.webm 0\n")
    ix = build_index(str(lst), str(tmp_path), workers=1, progress=False)
    assert (ix.probed, ix.probed_files) == (3, 1)
    assert f"video index of {lst}: 3 videos, 3 good, 0 bad (1 file probed for 3 lines, 0 from cache)" in ix.summary()
    lst.write_text("only.webm 0\nother.webm 1\nonly.webm 0\nmissing.webm 1\n")
    os.unlink(ix.cache_path)
    summary = build_index(str(lst), str(tmp_path), workers=1, progress=False).summary()
    assert "4 videos, 3 good, 1 bad (2 files probed for 3 lines, 0 from cache, 1 missing)" in summary
    lst.write_text("only.webm 0\nother.webm 1\n")  # one line a file: counted as before
    assert "(0 probed, 2 from cache)" in build_index(str(lst), str(tmp_path), workers=1, progress=False).summary()
    os.unlink(ix.cache_path)
    assert "(2 probed, 0 from cache)" in build_index(str(lst), str(tmp_path), workers=1, progress=False).summary()


def _interrupt_probing_after(monkeypatch, probes: int) -> list[str]:
    """Ctrl-C (KeyboardInterrupt) when the probe after ``probes`` videos starts; returns the paths probed."""
    calls: list[str] = []
    real_job = index_mod._probe_job

    def interrupted_job(job):
        if len(calls) == probes:
            raise KeyboardInterrupt
        calls.append(job[1])
        return real_job(job)

    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", 0)  # one worker probes in this process, patched
    monkeypatch.setattr(index_mod, "_probe_job", interrupted_job)
    return calls


def test_an_interrupted_build_keeps_what_it_probed(dataset, monkeypatch, caplog):
    """Ctrl-C at the 5th video: the 4 videos probed are saved before the KeyboardInterrupt goes on, the next build
    probes only the other 3, and the index is the one an uninterrupted build makes."""
    lst, root = dataset
    probed = len(GOOD) + len(BAD) - 1
    real_job = index_mod._probe_job
    calls = _interrupt_probing_after(monkeypatch, 4)
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.index"), pytest.raises(KeyboardInterrupt):
        build_index(str(lst), str(root), workers=1, progress=False)
    assert f"stopped after 4 of {probed} videos; they are saved in {lst}.index.npz" in caplog.text
    assert int((load_cache(str(lst) + ".index.npz", str(root)).table.status != UNKNOWN).sum()) == 4
    monkeypatch.setattr(index_mod, "_probe_job", lambda job: calls.append(job[1]) or real_job(job))
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    assert ix.probed == probed - 4 and sorted(calls) == sorted(set(calls)) and len(calls) == probed
    check_index(ix, lst, root)
    for path in (ix.cache_path, ix.quarantine_path):
        os.unlink(path)
    whole = build_index(str(lst), str(root), workers=1, progress=False)
    assert whole.probed == probed and _rows(whole) == _rows(ix)


def test_a_killed_build_leaves_its_periodic_saves(dataset, monkeypatch):
    """No handler runs when a build is killed (SIGKILL after a preemption's grace time): the cache saved while
    probing (every minute; here after every video) is what the next build starts from. A path listed twice is
    cached once, probed or not, and probed once."""
    lst, root = dataset
    lst.write_text(lst.read_text() + "clips/cls_b/good_2.webm 0\nclips/cls a/good 0.webm 1\n")
    monkeypatch.setattr(index_mod, "_SAVE_EVERY_S", 0.0)
    monkeypatch.setattr(index_mod, "_SAVE_SHARE", 1e9)
    cache = Path(str(lst) + ".index.npz")
    killed: list[bytes | None] = []
    calls: list[str] = []
    real_job = index_mod._probe_job

    def job_then_kill(job):  # the cache as it stands when the 4th video starts: what a kill leaves
        if len(calls) == 3:
            killed.append(cache.read_bytes() if cache.exists() else None)
        calls.append(job[1])
        return real_job(job)

    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", 0)  # one worker probes in this process, patched
    monkeypatch.setattr(index_mod, "_probe_job", job_then_kill)
    whole = build_index(str(lst), str(root), workers=1, progress=False)
    left = [path for path in calls if path not in calls[:3]]
    assert len(calls) == len(GOOD) + len(BAD) - 1 and len(left) == len(calls) - 3  # each file once, none missing
    if killed[0] is None:
        cache.unlink()
    else:
        cache.write_bytes(killed[0])
    monkeypatch.setattr(index_mod, "_probe_job", lambda job: calls.append(job[1]) or real_job(job))
    del calls[:]
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    assert calls == left and ix.probed == len(left)
    assert _rows(ix) == _rows(whole)


def test_an_interrupted_migration_keeps_the_migrated_records(dataset, monkeypatch):
    """A build that migrates a version 2 JSON cache and is interrupted has saved the migrated records with the
    videos it probed: the next build reads that, probes only the rest, and removes the JSON cache."""
    lst, root = dataset
    first = build_index(str(lst), str(root), workers=1, progress=False)
    doc = _v2_cache(first)
    doc["videos"]["clips/cls a/good_1.webm"]["info"]["num_frames"] = 7  # tells the migrated record from a probe
    for rec in doc["videos"].values():
        rec["full_decode"] = True  # a quick probe's record would be probed again (counted before edit lists)
    unrecorded = ["clips/cls a/good 0.webm", "clips/cls_b/good_2.webm"]
    for rel in unrecorded:
        del doc["videos"][rel]
    json_cache, cache = Path(str(lst) + ".index.json"), Path(first.cache_path)
    cache.unlink()
    json_cache.write_text(json.dumps(doc))
    real_job = index_mod._probe_job
    calls = _interrupt_probing_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        build_index(str(lst), str(root), workers=1, progress=False)
    assert calls == [str(root / unrecorded[0])] and cache.exists()
    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", 0)  # one worker probes in this process, patched
    monkeypatch.setattr(index_mod, "_probe_job", lambda job: calls.append(job[1]) or real_job(job))
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    bad_paths = [str(root / rel) for rel in doc["videos"] if "bad" in doc["videos"][rel]]  # probed again
    assert ix.probed == 1 + len(bad_paths) and not json_cache.exists()
    assert sorted(calls[1:]) == sorted([str(root / unrecorded[1])] + bad_paths)
    rows = {e.rel_path: e.row for e in ix.entries}
    assert ix.infos[rows["clips/cls a/good_1.webm"]].num_frames == 7
    assert ix.infos[rows[unrecorded[0]]] == first.infos[rows[unrecorded[0]]] and ix.bad == first.bad


def test_index_files_another_user_owns_or_a_full_disk_do_not_stop_a_run(dataset, monkeypatch, caplog):
    import builtins
    import errno

    import dali_pipelines.dataset_index as dataset_index_mod
    import dali_pipelines.index_lock as index_lock_mod

    lst, root = dataset
    build_index(str(lst), str(root), workers=1, progress=False)
    real_open = builtins.open

    def another_users_lock(path, mode="r", *a, **k):
        if str(path).endswith(".lock") and mode != "r":
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(index_lock_mod, "open", another_users_lock, raising=False)
    ix = build_index(str(lst), str(root), workers=1, progress=False)  # the lock opens read-only: flock works
    assert ix.probed == 0 and ix.good_rows
    # on NFS an exclusive lock needs a file open for writing: a build that must probe goes on unlocked, saying so
    real_fcntl = index_lock_mod.fcntl
    real_flock = real_fcntl.flock

    def nfs_flock(fd, op):
        read_only = real_fcntl.fcntl(fd, real_fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
        if op == real_fcntl.LOCK_EX and read_only:
            raise OSError(errno.EBADF, "Bad file descriptor")
        return real_flock(fd, op)

    monkeypatch.setattr(index_lock_mod.fcntl, "flock", nfs_flock)
    changed = root / ix.entries[ix.good_rows[0]].rel_path
    os.utime(changed, ns=(1, 1))  # changed since it was probed: this build probes it again
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.index_lock"):
        again = build_index(str(lst), str(root), workers=1, progress=False)
    assert again.probed == 1 and "going on without the lock" in caplog.text
    monkeypatch.setattr(index_lock_mod.fcntl, "flock", real_flock)

    def full_disk(path, mode="r", *a, **k):
        if str(path).endswith(".quarantine.txt") and mode == "a":
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(dataset_index_mod, "open", full_disk, raising=False)
    row = ix.good_rows[0]
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.index"):
        ix.quarantine(row, "decode failed during the run")  # the run goes on with the video left out
        ix.flush_quarantines()  # (said at the epoch's end)
    assert row not in ix.good_rows and "could not record the quarantine of 1 video in" in caplog.text
    assert "No space left on device" in caplog.text


def _three_quarantines_over_three_flushes(ix, caplog) -> tuple[list[int], list[str]]:
    """Two quarantines, the epoch's end, a third, two more flushes (the next epoch's end, the loader's close):
    ``(the rows quarantined, the "could not record" warnings given)``."""
    rows = ix.good_rows[:3]
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.index"):
        for row in rows[:2]:
            ix.quarantine(row, "decode failed during the run")
        ix.flush_quarantines()
        ix.quarantine(rows[2], "decode failed during the run")
        ix.flush_quarantines()
        ix.flush_quarantines()
    return rows, [r.getMessage() for r in caplog.records if "could not record" in r.getMessage()]


def test_quarantines_a_run_cannot_record_are_said_once_with_their_count(dataset, monkeypatch, caplog):
    # A list folder the run cannot write: a warning per quarantined video used to be said, however many.
    import builtins

    import dali_pipelines.dataset_index as dataset_index_mod

    lst, root = dataset
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    real_open = builtins.open

    def read_only(path, mode="r", *a, **k):
        if str(path).endswith(".quarantine.txt") and mode == "a":
            raise OSError(errno.EROFS, "Read-only file system", path)
        return real_open(path, mode, *a, **k)

    def read_only_cache(path, *a):
        raise OSError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(dataset_index_mod, "open", read_only, raising=False)
    monkeypatch.setattr(dataset_index_mod, "save_cache", read_only_cache)
    rows, said = _three_quarantines_over_three_flushes(ix, caplog)
    # the cache failed too (a read-only folder): one line names both files, not a second warning per flush
    assert said == [f"could not record the quarantine of 2 videos in {ix.quarantine_path} ([Errno 30] Read-only "
                    f"file system: '{ix.quarantine_path}'), nor in the index cache {ix.cache_path}; this run leaves "
                    "them out all the same, and a later run will try them again unless this run can record them in "
                    "the cache later"], said
    assert not any(r in ix.good_rows for r in rows)  # left out all the same
    monkeypatch.undo()
    with open(ix.quarantine_path, encoding="utf-8") as f:  # (it lists the videos bad when indexed)
        listed = f.read()
    assert not any(ix.entries[r].rel_path + "\t" in listed for r in rows), listed
    again = build_index(str(lst), str(root), workers=1, progress=False)  # the next run uses them again
    assert all(r in again.good_rows for r in rows)


def test_quarantines_the_cache_cannot_record_are_said_once_naming_the_cache(dataset, monkeypatch, caplog):
    # A cache that cannot be saved (a full disk) was said at every flush, and its first failure, while recording
    # the quarantine, was blamed on the quarantine file, which had been written.
    import dali_pipelines.dataset_index as dataset_index_mod

    lst, root = dataset
    ix = build_index(str(lst), str(root), workers=1, progress=False)

    def full_disk(path, *a):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(dataset_index_mod, "save_cache", full_disk)
    rows, said = _three_quarantines_over_three_flushes(ix, caplog)
    assert said == [f"could not record the quarantine of 2 videos in the index cache {ix.cache_path} ([Errno 28] "
                    f"No space left on device: '{ix.cache_path}'); this run leaves them out all the same, and a "
                    "later run will try them again unless this run can record them later"], said
    assert not any(r in ix.good_rows for r in rows)  # left out all the same
    monkeypatch.undo()
    with open(ix.quarantine_path, encoding="utf-8") as f:  # the quarantine file was written
        listed = f.read()
    assert all(ix.entries[r].rel_path + "\tdecode failed during the run" in listed for r in rows), listed
    again = build_index(str(lst), str(root), workers=1, progress=False)  # the cache did not: the next run uses them
    assert all(r in again.good_rows for r in rows)
    with open(ix.quarantine_path, encoding="utf-8") as f:  # (and its quarantine file no longer names them)
        listed = f.read()
    assert not any(ix.entries[r].rel_path + "\t" in listed for r in rows), listed


def _cache_saves_fail(monkeypatch, times: int) -> list[int]:
    """The next ``times`` index cache saves fail as on a full disk, then they write again; the list counts down."""
    import dali_pipelines.dataset_index as dataset_index_mod

    real_save, fails = dataset_index_mod.save_cache, [times]

    def full_disk_for_a_while(path, *a):
        if fails[0]:
            fails[0] -= 1
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real_save(path, *a)

    monkeypatch.setattr(dataset_index_mod, "save_cache", full_disk_for_a_while)
    return fails


def test_quarantines_a_full_disk_kept_from_the_cache_are_recorded_when_it_has_room_again(dataset, monkeypatch,
                                                                                         caplog):
    # A cache save that failed (a full disk) dropped its records: when space came back later in the run, those
    # quarantines never reached the cache and the next run decoded the videos again. Now the next flush tries again.
    lst, root = dataset
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    fails = _cache_saves_fail(monkeypatch, 2)
    row = ix.good_rows[0]
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.index"):
        ix.quarantine(row, "decode failed during the run")  # saves the cache at once: the disk is full
        ix.flush_quarantines()  # the epoch's end: still full, said
        ix.flush_quarantines()  # the next one: there is room again
        ix.flush_quarantines()
    monkeypatch.undo()
    again = build_index(str(lst), str(root), workers=1, progress=False)  # the next run: from the cache, not probed
    assert row not in again.good_rows and again.bad[row] == "decode failed during the run" and again.probed == 0
    assert fails == [0]  # (both failures were tried)
    said = [r.getMessage() for r in caplog.records if "could not record" in r.getMessage()]
    assert said == [f"could not record the quarantine of 1 video in the index cache {ix.cache_path} ([Errno 28] "
                    f"No space left on device: '{ix.cache_path}'); this run leaves them out all the same, and a "
                    "later run will try them again unless this run can record them later"], said


def test_a_cache_save_that_fails_once_and_then_succeeds_at_the_flush_is_not_said(dataset, monkeypatch, caplog):
    # The quarantine's own save fails and the epoch's end records it: no warning that it could not be recorded.
    lst, root = dataset
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    fails = _cache_saves_fail(monkeypatch, 1)
    row = ix.good_rows[0]
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.index"):
        ix.quarantine(row, "decode failed during the run")
        ix.flush_quarantines()
    monkeypatch.undo()
    again = build_index(str(lst), str(root), workers=1, progress=False)
    assert row not in again.good_rows and again.probed == 0
    assert fails == [0] and "could not record" not in caplog.text, caplog.text


def _quarantine_appends_fail(monkeypatch, times: int, cut_at: int = 0) -> list[int]:
    """The next ``times`` appends to a quarantine file fail as on a full disk (the first writing its first ``cut_at``
    characters: a write cut short), then they write again; the list counts down."""
    import builtins

    import dali_pipelines.dataset_index as dataset_index_mod

    real_open, fails = builtins.open, [times]

    class CutShort:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            self.f.write(text[:cut_at])
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device", self.f.name)

    def full_disk_for_a_while(path, mode="r", *a, **k):
        if str(path).endswith(".quarantine.txt") and mode == "a" and fails[0]:
            fails[0] -= 1
            if cut_at and fails[0] == times - 1:
                return CutShort(real_open(path, mode, *a, **k))
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(dataset_index_mod, "open", full_disk_for_a_while, raising=False)
    return fails


def test_quarantine_lines_a_full_disk_kept_out_are_written_at_the_next_flush_once(dataset, monkeypatch, caplog):
    # A quarantine line that could not be appended (a full disk, a list folder briefly unwritable) was dropped: the
    # quarantine file missed videos the run left out. Now each flush tries them again, in order, each video once.
    lst, root = dataset
    rels = list(GOOD)
    lst.write_text("".join(f"{rel} 0\n" for rel in rels + rels[:1]))  # rels[0] on two rows
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    fails = _quarantine_appends_fail(monkeypatch, 3, cut_at=5)
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.index"):
        ix.quarantine(0, "decode failed during the run")  # its write cut short
        ix.quarantine(len(rels), "another reason")  # the same file: still pending, not a second line
        ix.quarantine(1, "frames missing")
        assert fails == [0] and "\t" not in Path(ix.quarantine_path).read_text()
        ix.flush_quarantines()  # the epoch's end: there is room again
        ix.quarantine(2, "a third failure")  # written at once
        ix.flush_quarantines()  # the loader's close: nothing left to write
    assert Path(ix.quarantine_path).read_text().splitlines()[-3:] == [
        f"{rels[0]}\tdecode failed during the run", f"{rels[1]}\tframes missing", f"{rels[2]}\ta third failure"]
    assert "could not record" not in caplog.text, caplog.text  # recorded after all: nothing to say


def test_quarantine_lines_still_unwritable_at_the_close_are_said_once_with_their_count(dataset, monkeypatch, caplog):
    # Two lines kept out at first and written at the epoch's end are not said; the one the close still cannot write
    # is, once, with its count (it used to be said at the epoch's end, counting the two that were written).
    lst, root = dataset
    ix = build_index(str(lst), str(root), workers=1, progress=False)
    rows = ix.good_rows[:3]
    _quarantine_appends_fail(monkeypatch, 2)
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.index"):
        for row in rows[:2]:
            ix.quarantine(row, "decode failed during the run")
        ix.flush_quarantines()  # the epoch's end: written
        _quarantine_appends_fail(monkeypatch, 100)
        ix.quarantine(rows[2], "decode failed during the run")
        ix.flush_quarantines()  # the next epoch's end: still full
        ix.flush_quarantines()  # the loader's close: still full
    said = [r.getMessage() for r in caplog.records if "could not record" in r.getMessage()]
    assert said == [f"could not record the quarantine of 1 video in {ix.quarantine_path} ([Errno 28] No space left "
                    f"on device: '{ix.quarantine_path}'); this run leaves them out all the same, but a later run will "
                    "try them again unless the index cache recorded them"], said
    listed = Path(ix.quarantine_path).read_text()
    assert [listed.count(ix.entries[r].rel_path + "\t") for r in rows] == [1, 1, 0], listed


def test_long_lists_stat_their_files_in_threads_with_the_same_result(dataset, monkeypatch):
    import dali_pipelines.video_list as video_list_mod

    lst, root = dataset
    videos = read_video_list(str(lst), str(root))
    serial = videos.stat_keys()
    monkeypatch.setattr(video_list_mod, "_STAT_THREADED_FROM", 1)
    monkeypatch.setattr(video_list_mod, "_STAT_THREADS", 3)  # chunks of uneven size over the rows
    threaded = videos.stat_keys()
    assert all(np.array_equal(a, b) for a, b in zip(serial, threaded))
    assert serial[2].any() and not serial[2].all()  # the list has missing files too


def test_a_lookup_that_does_not_answer_stops_the_build_with_one_error_naming_the_file(dataset, monkeypatch):
    """A network file system that stopped answering hangs ``os.stat``: before, the index build (and the run) waited
    for ever before any video was probed. Now the build stops after ``timeout_s`` without an answer, naming the
    file, and the thread stuck in the call does not keep the process from ending (a daemon)."""
    import threading
    import time

    import dali_pipelines.video_list as video_list_mod

    lst, root = dataset
    hung = os.fsencode(str(root / "clips/cls_b/good_2.webm"))
    answer, real_stat = threading.Event(), os.stat

    def hanging_stat(path, *args, **kwargs):
        if os.fsencode(path) == hung:
            answer.wait()  # until the test ends: the file system answers again
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(video_list_mod.os, "stat", hanging_stat)
    videos = read_video_list(str(lst), str(root))
    try:
        t0 = time.monotonic()
        with pytest.raises(DataError, match=rf"^{re.escape(str(lst))}: looking up {re.escape(os.fsdecode(hung))} "
                                            r"\(os.stat\) gave no answer within 0.5 s: the file system under "):
            videos.stat_keys(timeout_s=0.5)
        assert time.monotonic() - t0 < 10
        stuck = [t for t in threading.enumerate() if t.name.startswith("stat_")]
        assert stuck and all(t.daemon for t in stuck)
        with pytest.raises(DataError, match="gave no answer within 0.5 s"):
            build_index(str(lst), str(root), workers=2, progress=False, timeout_s=0.5)
        assert not os.path.exists(str(lst) + ".index.npz")  # nothing was probed, nothing written
    finally:
        answer.set()
    limited = videos.stat_keys(timeout_s=0.5)  # it answers again: the same keys as without a limit
    assert all(np.array_equal(a, b) for a, b in zip(limited, videos.stat_keys())) and limited[2].sum() == 7


def _count_stats_under(monkeypatch, root: Path) -> list[bytes]:
    """Record every os.stat call on a file below ``root`` (the list's, the probe's)."""
    import dali_pipelines.video_list as video_list_mod

    calls, real_stat, below = [], os.stat, os.fsencode(str(root))

    def counting_stat(path, *args, **kwargs):
        if os.fsencode(path).startswith(below):
            calls.append(os.fsencode(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(video_list_mod.os, "stat", counting_stat)
    return calls


def test_a_rank_whose_peer_checked_the_files_stats_only_the_rows_the_cache_lacks(dataset, monkeypatch):
    lst, root = dataset
    checked = build_index(str(lst), str(root), workers=1)
    calls = _count_stats_under(monkeypatch, root)
    trusted = build_index(str(lst), str(root), workers=1, checked_by_peer=True)
    # the missing file is the only row the cache has no record of (nothing to record): stat'ed, still bad
    assert calls == [os.fsencode(str(root / "clips/cls_b/missing.webm"))]
    assert trusted.good_rows == checked.good_rows and trusted.bad == checked.bad
    assert [trusted.infos[r] for r in trusted.good_rows] == [checked.infos[r] for r in checked.good_rows]
    assert trusted.probed == 0
    calls.clear()
    build_index(str(lst), str(root), workers=1)
    assert len(calls) == len(GOOD) + len(BAD)  # without the peer's check every listed file is stat'ed


def test_a_trusting_rank_still_probes_a_row_its_peer_did_not_record(dataset, monkeypatch):
    lst, root = dataset
    build_index(str(lst), str(root), workers=1)
    # a file that appears after the peer's check (and a list row the cache does not know yet)
    write_video(str(root / "clips/cls_b/missing.webm"), counter_frames(15), "vp9")
    with open(lst, "a") as f:
        f.write("clips/cls_b/late.webm 1\n")
    write_video(str(root / "clips/cls_b/late.webm"), counter_frames(10), "vp9")
    calls = _count_stats_under(monkeypatch, root)
    ix = build_index(str(lst), str(root), workers=1, checked_by_peer=True)
    # only those two files are looked at (stat'ed, then probed: the probe stats them too)
    assert set(calls) == {os.fsencode(str(root / f"clips/cls_b/{n}.webm")) for n in ("late", "missing")}
    rows = {e.rel_path: e.row for e in ix.entries}
    assert ix.infos[rows["clips/cls_b/missing.webm"]].num_frames == 15
    assert ix.infos[rows["clips/cls_b/late.webm"]].num_frames == 10 and ix.probed == 2
