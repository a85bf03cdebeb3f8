"""Kinetics preparation: lists and labels, the Kinetics-722 merge (union, dedup, leak removal, class mappings),
errors and --dry-run, loading the written lists, and the short-GOP H.264 re-encode."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tools import prepare_kinetics
from tools.kinetics import (
    CLASS_ALIASES, EncodeSettings, KineticsError, build_k722, canonical_class_name, check_encode_settings,
    class_mapping, plan_reencode, prepare_lists, probe_output, read_labels_csv, reencode_tree, scan_dataset, youtube_id,
)
from dali_pipelines.pyav_io import decode_frames
from tests.sync_order import record_syncs, synced_renames
from tests.video_fixtures import best_match, reference_clips

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kinetics_names(shared_dir) -> dict[str, list[str]]:
    """Official class names (id order) of K400/600/700/722 from the reference label CSVs."""
    d = shared_dir / "data" / "labels"
    return {k: read_labels_csv(str(d / f"kinetics{k[1:]}_labels.csv")) for k in ("k400", "k600", "k700", "k722")}


def vid(tag: str, start: int = 10) -> str:
    """Kinetics-style file name for an 11-character YouTube id built from ``tag``."""
    return f"{tag:_<11}_{start:06d}_{start + 10:06d}.mp4"


def make_tree(root: Path, splits: dict[str, dict[str, list[str]]], content: bytes = b"\x00not-a-real-video") -> Path:
    """``root/<split>/<class>/<file>`` with dummy (non-empty) files; only the names matter for list building."""
    for split, classes in splits.items():
        for cls, files in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for f in files:
                (root / split / cls / f).write_bytes(content)
    return root


def read_list(path: Path) -> list[tuple[str, int]]:
    out = []
    for line in path.read_text().splitlines():
        rel, lab = line.rsplit(" ", 1)
        out.append((rel, int(lab)))
    return out


def tiny_frames(t: int = 12, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth moving gradient (compresses well, every frame distinct)."""
    y, x = np.mgrid[0:h, 0:w]
    frames = [np.stack([(x * 4 + 9 * i) % 256, (y * 5 + 3 * i + seed * 40) % 256, np.full_like(x, 16 * i % 256)],
                       -1) for i in range(t)]
    return np.asarray(frames, dtype=np.uint8)


def write_clip(path: Path, t: int = 12, h: int = 48, w: int = 64, codec: str = "vp9", seed: int = 0,
               gop: int | None = None) -> Path:
    from dali_pipelines.pyav_encode import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(str(path), tiny_frames(t, h, w, seed), codec=codec, fps=25, gop=gop)
    return path


# ----------------------------------------------------------------------------------------------------------------
# per-dataset lists
# ----------------------------------------------------------------------------------------------------------------

def test_youtube_id():
    assert youtube_id("abcdefghijk_000010_000020.mp4") == "abcdefghijk"
    assert youtube_id("/x/y/-_-_-_-_-_-_000001_000011.webm") == "-_-_-_-_-_-"
    assert youtube_id("short.mp4") == "short"


def test_lists_labels_follow_sorted_class_names(tmp_path, kinetics_names):
    # Classes from the official K400 names (spaces, parentheses), created in a shuffled order.
    rng = np.random.default_rng(0)
    names = [kinetics_names["k400"][i] for i in rng.choice(400, size=6, replace=False)]
    names = list(dict.fromkeys(names + [PAF]))
    rng.shuffle(names)
    splits = {"train": {n: [vid(f"t{i}a"), vid(f"t{i}b")] for i, n in enumerate(names)},
              "val": {n: [vid(f"v{i}")] for i, n in enumerate(names)}}
    make_tree(tmp_path / "data" / "t400", splits)
    out = tmp_path / "data"
    scan = scan_dataset("t400", str(out / "t400"))
    prepare_lists([scan], str(out), log=lambda s: None)

    expected = sorted(names)
    assert read_labels_csv(str(out / "t400_labels.csv")) == expected
    assert (out / "t400_labels.csv").read_text().splitlines()[0] == "id,name"
    train, val = read_list(out / "t400_train.txt"), read_list(out / "t400_val.txt")
    assert len(train) == 2 * len(names) and len(val) == len(names)
    for rel, lab in train + val:
        split, cls, fname = rel.split("/")[1:]
        assert rel.startswith("t400/") and split in ("train", "val")
        assert lab == expected.index(cls)
        assert (out / rel).is_file()
    # The list line format, with a class name containing spaces.
    lines = (out / "t400_train.txt").read_text().splitlines()
    assert f"t400/train/{PAF}/{vid(f't{names.index(PAF)}a')} {expected.index(PAF)}" in lines
    rep = json.loads((out / "t400_report.json").read_text())
    assert rep["train_written"] == 2 * len(names) and rep["skipped"] == 0


def test_the_summary_line_counts_classes_in_the_right_number(tmp_path, capsys):
    # A one-class dataset (a trial on one class) was summed up as "t400: 1 classes".
    root = make_tree(tmp_path / "t400", {"train": {"a": [vid("a")]}, "val": {"a": [vid("b")]}})
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("t400: 1 class, train 1 of 1 ")


def test_lists_data_root_and_own_val_leak(tmp_path):
    # The original notebook announced "drop leaked K400 train" but never filtered: here the leak is dropped by
    # default, and kept (still counted) with drop_leaked=False.
    splits = {"train": {"a": [vid("x1"), vid("leak")], "b": [vid("x2")]},
              "val": {"a": [vid("y1")], "b": [vid("leak", 50)]}}
    make_tree(tmp_path / "videos" / "t400", splits)
    scan = scan_dataset("t400", str(tmp_path / "videos" / "t400"))
    rep = prepare_lists([scan], str(tmp_path / "lists"), data_root=str(tmp_path / "videos"), log=lambda s: None)
    assert rep["t400"]["train_ids_in_own_val"] == 1 and rep["t400"]["dropped_leaked"] == 1
    train = read_list(tmp_path / "lists" / "t400_train.txt")
    assert train == [(f"t400/train/a/{vid('x1')}", 0), (f"t400/train/b/{vid('x2')}", 1)]
    rep = prepare_lists([scan], str(tmp_path / "lists"), data_root=str(tmp_path / "videos"), drop_leaked=False,
                        log=lambda s: None)
    assert rep["t400"]["train_ids_in_own_val"] == 1 and rep["t400"]["dropped_leaked"] == 0
    assert len(read_list(tmp_path / "lists" / "t400_train.txt")) == 3


# Constructed overlaps within and across the splits of one dataset (YouTube ids are the tags). Scan order is class
# folder, then file name, so "first occurrence" below is in that order.
OVERLAP_TREE = {
    "train": {"a": [vid("D1", 0), vid("D1", 30), vid("K1"), vid("L1"), vid("X1", 5)],
              "b": [vid("D1", 60), vid("K2"), vid("L1", 70), vid("X1", 1)]},
    "val": {"a": [vid("V1"), vid("V1", 20), vid("L1", 90)], "b": [vid("V1", 40), vid("V2"), vid("X1", 9)]},
}


def _ids(lines: list[tuple[str, int]]) -> list[tuple[str, str, int]]:
    return [(rel.split("/")[2], youtube_id(rel), lab) for rel, lab in lines]


@pytest.mark.parametrize("name", ["t400", "t600", "t700"])
def test_lists_deduplicated_and_leak_free_by_the_notebooks_rule(tmp_path, name):
    make_tree(tmp_path / name, OVERLAP_TREE)
    rep = prepare_lists([scan_dataset(name, str(tmp_path / name))], str(tmp_path), log=lambda s: None)[name]
    d1, k1, k2, l1, x1, v1, v2 = (youtube_id(vid(t)) for t in ("D1", "K1", "K2", "L1", "X1", "V1", "V2"))
    # train: D1 first in a (second clip of a and the one in b dropped), L1 and X1 are in val (every clip dropped).
    assert _ids(read_list(tmp_path / f"{name}_train.txt")) == [("a", d1, 0), ("a", k1, 0), ("b", k2, 1)]
    # val: V1 first in a (its other clip in a and the one in b dropped); L1, V2, X1 kept once each.
    assert _ids(read_list(tmp_path / f"{name}_val.txt")) == [("a", l1, 0), ("a", v1, 0), ("b", v2, 1),
                                                              ("b", x1, 1)]
    assert (rep["train_found"], rep["train_written"], rep["val_found"], rep["val_written"]) == (9, 3, 6, 4)
    assert rep["dropped_leaked"] == 4 and rep["train_ids_in_own_val"] == 4
    assert (rep["train_duplicates"]["dropped"], rep["train_duplicates"]["other_class"]) == (2, 1)
    assert (rep["val_duplicates"]["dropped"], rep["val_duplicates"]["other_class"]) == (2, 1)
    md = (tmp_path / f"{name}_report.md").read_text()
    assert "4 dropped" in md and "train 2 (1 in another class), val 2 (1 in another class)" in md


def test_lists_cleaning_switches(tmp_path, capsys):
    make_tree(tmp_path / "t600", OVERLAP_TREE)
    args = ["lists", "--dataset", f"t600={tmp_path / 't600'}", "--out", str(tmp_path)]
    d1, k1, k2, l1, x1 = (youtube_id(vid(t)) for t in ("D1", "K1", "K2", "L1", "X1"))
    assert prepare_kinetics.main(args + ["--keep-leaked"]) == 0  # repeats still dropped, leaks kept once
    assert _ids(read_list(tmp_path / "t600_train.txt")) == [("a", d1, 0), ("a", k1, 0), ("a", l1, 0), ("a", x1, 0),
                                                            ("b", k2, 1)]
    assert prepare_kinetics.main(args + ["--keep-duplicates"]) == 0  # leaks dropped, repeats kept
    assert _ids(read_list(tmp_path / "t600_train.txt")) == [("a", d1, 0), ("a", d1, 0), ("a", k1, 0), ("b", d1, 1),
                                                            ("b", k2, 1)]
    assert len(read_list(tmp_path / "t600_val.txt")) == 6
    assert prepare_kinetics.main(args + ["--keep-duplicates", "--keep-leaked"]) == 0  # the files as found
    assert len(read_list(tmp_path / "t600_train.txt")) == 9
    rep = json.loads((tmp_path / "t600_report.json").read_text())
    assert (rep["dedup"], rep["drop_leaked"], rep["train_ids_in_own_val"], rep["dropped_leaked"]) == (False, False,
                                                                                                     4, 0)
    assert prepare_kinetics.main(args + ["--drop-leaked"]) == 0  # older command lines: the default
    assert len(read_list(tmp_path / "t600_train.txt")) == 3
    assert "train 3 of 9" in capsys.readouterr().out


def test_underscore_folders_and_extensions(tmp_path):
    root = tmp_path / "t400"
    make_tree(root, {"train": {"arm_wrestling": ["abcdefghijk_1_2.MP4", "bbcdefghijk_1_2.WebM", "notes.txt",
                                                 "cbcdefghijk_1_2.mkv", "dbcdefghijk_1_2.Avi", "ebcdefghijk.mov"]},
                     "val": {"arm_wrestling": ["zzcdefghijk_1_2.mp4"]}})
    scan = scan_dataset("t400", str(root), underscore_to_space=True)
    assert scan.classes == ["arm wrestling"]
    assert [os.path.basename(v.path) for v in scan.videos["train"]] == [
        "abcdefghijk_1_2.MP4", "bbcdefghijk_1_2.WebM", "cbcdefghijk_1_2.mkv", "dbcdefghijk_1_2.Avi", "ebcdefghijk.mov"]
    assert [os.path.basename(p) for p in scan.ignored] == ["notes.txt"]


# Names and whether the list reader (dali_pipelines.filelist) gives them back from a line "<name> <label>".
LIST_NAMES = {
    "a/b c.mp4": True, "a/two  spaces.mp4": True, "a/tab\tx.mp4": True, "a/mixed \t \u3000 x.mp4": True,
    "a/nbsp\xa0x.mp4": True, "a/ends in 5": True, "a/label 12 3": True, "a/zero\u200bwidth.mp4": True,
    "a/b\ufeffom.mp4": True, "x": True,
    " a/lead.mp4": False, "a/trail.mp4 ": False, "\ta/lead-tab.mp4": False, "a/trail-nbsp\xa0": False,
    "a/new\nline.mp4": False, "a/cr\rx.mp4": False, "a/crlf\r\nx.mp4": False, "\ufeffa/bom.mp4": False,
    # what str.splitlines also cut at, and an editor shows inside a line: the reader no longer cuts there either
    "a/vt\x0bx.mp4": True, "a/ff\x0cx.mp4": True, "a/fs\x1cx.mp4": True, "a/nel\x85x.mp4": True,
    "a/ls\u2028x.mp4": True, "a/ps\u2029x.mp4": True,
}


def _reads_back(tmp_path: Path, name: str, first: bool) -> bool:
    """True when read_file_list gives back exactly (name, 7) from a list holding the line "<name> 7" (the first
    line, or the second after an ordinary one)."""
    from dali_pipelines.filelist import DataListError, read_file_list

    lst = tmp_path / "probe.txt"
    lst.write_bytes(("" if first else "other.mp4 1\n").encode() + f"{name} 7\n".encode("utf-8"))
    try:
        entries = read_file_list(str(lst), str(tmp_path))
    except DataListError:
        return False
    return [(e.rel_path, e.label) for e in entries[(0 if first else 1):]] == [(name, 7)]


@pytest.mark.parametrize("name", sorted(LIST_NAMES), ids=ascii)
def test_listable_names_are_the_ones_the_list_reader_reads_back(tmp_path, name):
    # The writer's rule is checked against the reader itself, so the two cannot disagree again (the writer once
    # refused runs of spaces and tabs that the reader reads back as written).
    from tools.kinetics import format_list_line, is_listable

    assert _reads_back(tmp_path, name, first=True) == LIST_NAMES[name]
    assert is_listable(name) == LIST_NAMES[name]
    if LIST_NAMES[name]:
        assert _reads_back(tmp_path, name, first=False)
        assert format_list_line(name, 7) == f"{name} 7"
    else:
        with pytest.raises(KineticsError, match="cannot be written to a video list"):
            format_list_line(name, 7)


def test_a_listed_video_under_a_folder_named_tilde_is_read_under_the_root_not_the_home_folder(tmp_path,
                                                                                             monkeypatch):
    # A list line starting with "~" is read as the home folder: a dataset folder named "~" under the data root had
    # its lines read from the home folder wherever a file of that name was there. They are written as ./~ now, and
    # the check's index cache names them the same way, so the first build reuses it.
    from dali_pipelines.filelist import read_file_list
    from dali_pipelines.index import build_index

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    out = tmp_path / "data"
    root = _two_class_tree(out / "~", train_per_class=1)
    for clip in root.rglob("*.mp4"):  # the same names in the home folder
        twin = home / clip.relative_to(root)
        twin.parent.mkdir(parents=True, exist_ok=True)
        twin.write_bytes(b"not this one")
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(out), "--check",
                                  "--no-progress"]) == 0
    lst = out / "t400_train.txt"
    assert lst.read_text().splitlines() == [f"./~/train/{ARM}/{vid('t00')} 0", f"./~/train/{PAF}/{vid('t10')} 1"]
    assert [os.path.normpath(os.path.join(out, e.rel_path)) for e in read_file_list(str(lst), str(out))] == [
        str(root / "train" / ARM / vid("t00")), str(root / "train" / PAF / vid("t10"))]
    ix = build_index(str(lst), str(out), workers=1, progress=False)
    assert ix.probed == 0 and not ix.bad and len(ix) == 2


def test_lists_into_a_linked_out_folder_lead_to_a_dataset_outside_it(tmp_path, capsys):
    # --out data, a link to another disk, and a re-encoded tree under /tmp: its lines ../../tmp/... were read from
    # the link's target, where no video is, and every one was a missing file under the default data root.
    from dali_pipelines.index import build_index

    root = _two_class_tree(tmp_path / "reencoded", train_per_class=1)
    (tmp_path / "disk" / "store" / "data").mkdir(parents=True)
    (tmp_path / "project").mkdir()
    out = tmp_path / "project" / "data"
    out.symlink_to(tmp_path / "disk" / "store" / "data")
    args = ["lists", "--dataset", f"t400={root}", "--out", str(out), "--check", "--workers", "1", "--no-progress"]
    assert prepare_kinetics.main(args) == 0
    lst = out / "t400_train.txt"
    for rel, _ in read_list(lst):
        assert rel.startswith("../") and os.path.isfile(os.path.join(out, rel)), rel
    ix = build_index(str(lst), str(out), workers=1, progress=False)  # DATA.ROOT as given: the check's probes serve
    assert ix.probed == 0 and not ix.bad and len(ix) == 2
    capsys.readouterr()
    assert prepare_kinetics.main(args) == 0  # and the next check finds them
    assert "4 of 4 videos unchanged" in capsys.readouterr().err


def test_a_val_folder_that_links_to_the_train_folder_is_refused_before_any_list(tmp_path, capsys):
    # Every training video's id was then in the val list: the leak removal wrote an empty training list, exit 0.
    store = make_tree(tmp_path / "store", {"train": {"a": [vid("a")], "b": [vid("b")]}})
    root = tmp_path / "t400"
    root.mkdir()
    (root / "train").symlink_to(store / "train")
    (root / "val").symlink_to(store / "train")
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "t400_train.txt would be empty" in err[0] and "--val-dir" in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_class_whose_only_video_another_class_kept_is_named_in_a_warning(tmp_path, capsys):
    # Kinetics holds some files in two class folders: the first class's copy is kept, and a class with no other
    # training video was left out of the training list without a word.
    root = make_tree(tmp_path / "t400", {"train": {"a (in game)": [vid("x"), vid("a")], "b's": [vid("x")]},
                                         "val": {"a (in game)": [vid("va")], "b's": [vid("vb")]}})
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln for ln in out if ln.startswith("warning:")] == [
        "warning: dataset t400: 1 class left without a training video (\"b's\"), never trained on: each of its "
        "videos repeats a YouTube id another class kept (the same file in two class folders) or is in the val "
        "list; the report names them (--keep-duplicates and --keep-leaked keep them)"]
    assert [lab for _, lab in read_list(tmp_path / "t400_train.txt")] == [0, 0]


def test_lists_keep_names_with_runs_of_spaces_and_tabs(tmp_path, capsys):
    from dali_pipelines.filelist import read_file_list

    root = make_tree(tmp_path / "t400", {"train": {"a b": [vid("a"), "two  spaces_000001_000011.mp4"],
                                                   "c": ["tab\tname_000001_000011.mp4", "new\nline_000001_000011.mp4"]},
                                         "val": {"a b": [vid("v1")], "c": [vid("v2")]}})
    # a name that is not UTF-8 (os.scandir hands it over with surrogates): written, it crashed the list writer
    (root / "train" / "c").joinpath(os.fsdecode(b"bad\xffname_000001_000011.mp4")).write_bytes(b"x")
    args = ["lists", "--dataset", f"t400={root}", "--out", str(tmp_path)]
    assert prepare_kinetics.main(args) == 0
    entries = read_file_list(str(tmp_path / "t400_train.txt"), str(tmp_path))
    assert [(e.rel_path, e.label) for e in entries] == [
        (f"t400/train/a b/{vid('a')}", 0), ("t400/train/a b/two  spaces_000001_000011.mp4", 0),
        ("t400/train/c/tab\tname_000001_000011.mp4", 1)]
    assert all(os.path.isfile(e.path) for e in entries)
    rep = json.loads((tmp_path / "t400_report.json").read_text())
    reasons = {os.path.basename(f["path"]): f["reason"] for f in rep["skipped_files"]}
    assert reasons == {
        "new\nline_000001_000011.mp4": "cannot be written to a video list: name holds a line break ('\\n'), which "
                                       "would split its list line",
        os.fsdecode(b"bad\xffname_000001_000011.mp4"): "cannot be written to a video list: name is not valid UTF-8, "
                                                       "and a video list is UTF-8 text"}
    md = (tmp_path / "t400_report.md").read_text()
    assert f"- `{root}/train/c/new\\nline_000001_000011.mp4`: cannot be written" in md
    assert f"- `{root}/train/c/bad\\xffname_000001_000011.mp4`: cannot be written" in md
    assert "- train: 5 found = 3 written + 2 skipped (name not listable 2) + " in md
    capsys.readouterr()
    # --strict: the unlistable names are an error, the ones with spaces and tabs are not mentioned
    assert prepare_kinetics.main(args + ["--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dataset t400: 2 unusable video file(s):") and "line break" in err
    assert "two  spaces" not in err and "tab\tname" not in err


def test_a_video_beside_the_class_folders_is_a_warning_not_a_non_video_entry(tmp_path, capsys):
    # A video saved in train/ instead of train/<class>/ was left out of the lists with no word but the report's
    # "non-video entries ignored: 1".
    root = make_tree(tmp_path / "t400", {"train": {"a": [vid("a")]}, "val": {"a": [vid("b")]}})
    (root / "train" / vid("loose")).write_bytes(b"\x00not-a-real-video")
    (root / "train" / "notes.txt").write_text("not a video")
    out = tmp_path / "out"
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(out)]) == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "class folder" in ln]
    assert warnings == [f"warning: dataset t400: 1 video file(s) in {root / 'train'} lie outside any class folder "
                        f"and are left out of the lists (e.g. {root / 'train' / vid('loose')}); move each into its "
                        f"class folder"]
    assert "- entries ignored (not a video, or not where the layout has videos): 2" in (
        out / "t400_report.md").read_text().splitlines()


def test_lists_found_counts_every_video_file(tmp_path, capsys):
    # found = written + skipped + dropped (YouTube id in val) + dropped (repeated YouTube id), per split, with and
    # without --check; "found" used to leave the skipped files out.
    root = tmp_path / "t400"
    real = {"train": {"a": [vid("A1"), vid("A2"), vid("A2", 30), vid("L1"), vid("D1")],
                      "b": [vid("B1"), vid("B2"), vid("L2"), vid("B1", 50)]},
            "val": {"a": [vid("L1", 90), vid("V1"), vid("V1", 20)], "b": [vid("L2", 90), vid("V2")]}}
    for split, classes in real.items():
        for cls, files in classes.items():
            for f in files:
                write_clip(root / split / cls / f, t=2, h=16, w=16)
    (root / "train" / "a" / vid("E1")).write_bytes(b"")  # empty
    (root / "train" / "a" / vid("U1")).write_bytes(b"\x00not a video")  # undecodable (counted with --check)
    (root / "train" / "a" / "new\nline_000001_000011.mp4").write_bytes(b"x")  # unlistable name
    (root / "train" / "a" / "notes.txt").write_text("not a video file: ignored, not found")
    args = ["lists", "--dataset", f"t400={root}", "--out", str(tmp_path), "--workers", "1"]
    for check, skipped, written in ((False, {"empty": 1, "name not listable": 1}, 6),
                                    (True, {"empty": 1, "name not listable": 1, "undecodable (--check)": 1}, 5)):
        assert prepare_kinetics.main(args + (["--check"] if check else [])) == 0
        rep = json.loads((tmp_path / "t400_report.json").read_text())
        assert (rep["train_found"], rep["train_written"], rep["train_skipped"]) == (12, written, sum(skipped.values()))
        assert rep["train_skipped_by_kind"] == skipped
        assert (rep["dropped_leaked"], rep["train_duplicates"]["dropped"]) == (2, 2)
        assert rep["train_found"] == (rep["train_written"] + rep["train_skipped"] + rep["dropped_leaked"]
                                      + rep["train_duplicates"]["dropped"])
        assert (rep["val_found"], rep["val_written"], rep["val_skipped"], rep["val_duplicates"]["dropped"]) == (
            5, 4, 0, 1)
        assert rep["found"] == {"train": 12, "val": 5} and rep["skipped"] == len(skipped) == len(rep["skipped_files"])
        assert len(read_list(tmp_path / "t400_train.txt")) == written
        kinds = ", ".join(f"{k} {n}" for k, n in skipped.items())
        md = (tmp_path / "t400_report.md").read_text()
        assert (f"- train: 12 found = {written} written + {len(skipped)} skipped ({kinds}) + 2 dropped as YouTube id "
                f"in val + 2 dropped as repeated YouTube id") in md
        assert "- val: 5 found = 4 written + 0 skipped + 1 dropped as repeated YouTube id" in md
        assert f"train {written} of 12 (skipped {len(skipped)};" in capsys.readouterr().out


def test_a_dangling_symlink_is_a_missing_video_not_a_non_video_entry(tmp_path, capsys):
    root = tmp_path / "t400"
    for split in ("train", "val"):
        for cls in ("a", "b"):
            write_clip(root / split / cls / vid(f"{split[0]}{cls}"), t=2, h=16, w=16)
    gone = root / "train" / "a" / vid("G1")
    gone.symlink_to(tmp_path / "elsewhere" / "moved.mp4")  # a download moved away
    args = ["lists", "--dataset", f"t400={root}", "--out", str(tmp_path), "--workers", "1"]
    for check in ([], ["--check"]):
        assert prepare_kinetics.main(args + check) == 0
        rep = json.loads((tmp_path / "t400_report.json").read_text())
        assert (rep["train_found"], rep["train_written"], rep["train_skipped"]) == (3, 2, 1)
        assert rep["train_skipped_by_kind"] == {"missing": 1} and rep["ignored_entries"] == 0
        assert rep["skipped_files"][0]["path"] == str(gone)
        assert rep["skipped_files"][0]["reason"].startswith("missing: dangling symlink")
        assert "2 written + 1 skipped (missing 1)" in (tmp_path / "t400_report.md").read_text()
        assert len(read_list(tmp_path / "t400_train.txt")) == 2


def test_a_class_folder_linked_to_a_missing_target_is_an_empty_class_not_a_dropped_one(tmp_path, capsys):
    # Class folders linked to a disk that is not mounted (or a link loop) were stray entries: the class vanished from
    # the labels and every later class's label shifted by one, with exit code 0 and no word on stderr.
    root = tmp_path / "t"
    for split in ("train", "val"):
        for cls in ("a", "c"):
            write_clip(root / split / cls / vid(f"{split[0]}{cls}"), t=2, h=16, w=16)
        (root / split / "b").symlink_to(tmp_path / "unmounted" / split / "b", target_is_directory=True)
    (root / "train" / "d").symlink_to("d")  # a loop: os.scandir's is_dir() raised ELOOP
    (root / "val" / "d").symlink_to(tmp_path / "unmounted" / "val" / "d")
    args = ["lists", "--dataset", f"t={root}", "--out", str(tmp_path / "out")]
    assert prepare_kinetics.main(args) == 2
    err = capsys.readouterr().err
    assert f"warning: dataset t: class folder {root / 'train' / 'b'} is a symbolic link whose target " in err
    assert f"class folder {root / 'train' / 'd'} is a symbolic link whose target 'd' is gone (or a link loop)" in err
    assert "2 class folder(s) in" in err and "have no usable video ('b', 'd')" in err
    assert not (tmp_path / "out").exists()
    assert prepare_kinetics.main(args + ["--allow-empty-classes"]) == 0  # the classes keep their ids, no videos
    assert (tmp_path / "out" / "t_labels.csv").read_text() == "id,name\n0,a\n1,b\n2,c\n3,d\n"
    assert read_list(tmp_path / "out" / "t_train.txt") == [(f"../t/train/a/{vid('ta')}", 0),
                                                           (f"../t/train/c/{vid('tc')}", 2)]


# ----------------------------------------------------------------------------------------------------------------
# Kinetics-722
# ----------------------------------------------------------------------------------------------------------------

ABS, ACT, ARM = "abseiling", "acting in play", "arm wrestling"
CW400, CW = "changing wheel", "changing wheel (not on bike)"
PAF, paf600 = "passing American football (not in game)", "passing american football (not in game)"
YOGA = "yoga"

# Constructed overlaps (YouTube ids are the tags): see test_k722_union_dedup_and_leaks for the expected outcome.
K722_TREES = {
    "t400": {"train": {ABS: [vid("A1"), vid("A2", 0), vid("A2", 30)], ARM: [vid("B1"), vid("L1")],
                       CW400: [vid("C1")], PAF: [vid("P1")]},
             "val": {ABS: [vid("V1")], ARM: [vid("L1", 90)], CW400: [vid("V2")], PAF: [vid("V3")]}},
    "t600": {"train": {ABS: [vid("A1", 20), vid("X1"), vid("M1")], ACT: [vid("G1"), vid("B1", 70)],
                       CW: [vid("C1", 40)], paf600: [vid("P2")]},
             "val": {ABS: [vid("V1", 5)], ACT: [vid("V4")], CW: [vid("V5")], paf600: [vid("V6")]}},
    "t700": {"train": {ABS: [vid("A3")], ACT: [vid("G2")], CW: [vid("C2")], PAF: [vid("P3")],
                       YOGA: [vid("Y1"), vid("V3", 200)]},
             "val": {ABS: [vid("M1", 300)], ACT: [vid("V4", 8)], CW: [vid("V8")], PAF: [vid("V9")],
                     YOGA: [vid("V7"), vid("V2", 400)]}},
}
K722_CLASSES = [ABS, ACT, ARM, CW, PAF, YOGA]


@pytest.fixture()
def k722_out(tmp_path, kinetics_names):
    for ds, tree in K722_TREES.items():
        for cls in tree["train"]:
            assert cls in kinetics_names["k" + ds[1:]], (ds, cls)  # the fixture uses real class names of each release
        make_tree(tmp_path / "data" / ds, tree)
    out = tmp_path / "data"
    rc = prepare_kinetics.main(["k722", "--dataset", f"t400={out / 't400'}", "--dataset", f"t600={out / 't600'}",
                                "--dataset", f"t700={out / 't700'}", "--out", str(out)])
    assert rc == 0
    return out


def test_k722_union_dedup_and_leaks(k722_out):
    out = k722_out
    assert read_labels_csv(str(out / "k722_labels.csv")) == K722_CLASSES
    lab = {c: i for i, c in enumerate(K722_CLASSES)}

    def line(ds, cls, f, k722_cls=None):
        return (f"{ds}/train/{cls}/{f}", lab[k722_cls or cls])

    expected_train = [
        # t400: A2 second clip is a within-dataset duplicate; L1 is in t400's own val (the notebook bug).
        line("t400", ABS, vid("A1")), line("t400", ABS, vid("A2", 0)), line("t400", ARM, vid("B1")),
        line("t400", CW400, vid("C1"), CW), line("t400", PAF, vid("P1")),
        # t600: A1 and C1 (renamed class, same canonical class) are duplicates of t400, M1 is in t700's val,
        # B1 is labelled differently than in t400 (conflict): all dropped.
        line("t600", ABS, vid("X1")), line("t600", ACT, vid("G1")), line("t600", paf600, vid("P2"), PAF),
        # t700: V3 is in t400's val.
        line("t700", ABS, vid("A3")), line("t700", ACT, vid("G2")), line("t700", CW, vid("C2")),
        line("t700", PAF, vid("P3")), line("t700", YOGA, vid("Y1")),
    ]
    assert read_list(out / "k722_train.txt") == expected_train

    val = read_list(out / "k722_val.txt")
    assert val == [
        (f"t400/val/{ABS}/{vid('V1')}", lab[ABS]), (f"t400/val/{ARM}/{vid('L1', 90)}", lab[ARM]),
        (f"t400/val/{CW400}/{vid('V2')}", lab[CW]), (f"t400/val/{PAF}/{vid('V3')}", lab[PAF]),
        (f"t600/val/{ACT}/{vid('V4')}", lab[ACT]), (f"t600/val/{CW}/{vid('V5')}", lab[CW]),
        (f"t600/val/{paf600}/{vid('V6')}", lab[PAF]),
        (f"t700/val/{ABS}/{vid('M1', 300)}", lab[ABS]), (f"t700/val/{CW}/{vid('V8')}", lab[CW]),
        (f"t700/val/{PAF}/{vid('V9')}", lab[PAF]), (f"t700/val/{YOGA}/{vid('V7')}", lab[YOGA]),
    ]
    # No training YouTube id occurs in any validation split, and every id trains once.
    train_ids = [youtube_id(r) for r, _ in read_list(out / "k722_train.txt")]
    assert len(set(train_ids)) == len(train_ids)
    all_val_ids = {youtube_id(f) for t in K722_TREES.values() for fs in t["val"].values() for f in fs}
    assert not set(train_ids) & all_val_ids

    rep = json.loads((out / "k722_report.json").read_text())
    tr, va = rep["train"], rep["val"]
    assert tr["input"] == {"t400": 7, "t600": 7, "t700": 6} and tr["total_kept"] == 13
    assert tr["kept"] == {"t400": 5, "t600": 3, "t700": 5}
    assert tr["dropped_leaked"] == 3 and tr["dropped_leaked_by_val"] == {"t400": 2, "t700": 1}
    assert tr["dropped_duplicate_same_class"] == 3 and tr["dropped_duplicate_same_class_within_dataset"] == 1
    assert tr["dropped_duplicate_conflict"] == 1
    assert tr["conflict_examples"][0]["youtube_id"] == youtube_id(vid("B1"))
    assert tr["conflict_examples"][0]["kept_class"] == ARM and tr["conflict_examples"][0]["dropped_class"] == ACT
    assert va["total_input"] == 14 and va["total_kept"] == 11
    assert va["dropped_duplicate_same_class"] == 2 and va["dropped_duplicate_conflict"] == 1
    assert rep["class_aliases_applied"] == {"t400": {CW400: CW}, "t600": {paf600: PAF}, "t700": {}}
    md = (out / "k722_report.md").read_text()
    assert "leak" in md and "conflict" in md
    # The k722 command also wrote each dataset's own lists.
    assert read_labels_csv(str(out / "t600_labels.csv")) == sorted(K722_TREES["t600"]["train"])


def test_k722_mappings_select_head_rows(k722_out):
    out = k722_out
    k722 = read_labels_csv(str(out / "k722_labels.csv"))
    expected = {"t400": [0, 2, 3, 4], "t600": [0, 1, 3, 4], "t700": [0, 1, 3, 4, 5]}
    head_w = torch.randn(len(k722), 8)
    head_b = torch.randn(len(k722))
    for ds, exp in expected.items():
        m = np.load(out / f"k722_to_{ds}_mapping.npy")
        assert m.dtype == np.int64 and m.tolist() == exp
        # Exactly what the checkpoint loader does with MODEL.CLASS_MAPPING.
        idx = torch.from_numpy(m)
        w, b = head_w[idx], head_b[idx]
        names = read_labels_csv(str(out / f"{ds}_labels.csv"))
        assert len(names) == len(m)
        for label, name in enumerate(names):
            row = k722.index(canonical_class_name(name))
            assert torch.equal(w[label], head_w[row]) and b[label] == head_b[row]
        # Every dataset list label picks the row of its own class folder.
        for rel, label in read_list(out / f"{ds}_train.txt") + read_list(out / f"{ds}_val.txt"):
            cls = rel.split("/")[2]
            assert names[label] == cls
            assert torch.equal(w[label], head_w[k722.index(canonical_class_name(cls))])


def test_k722_classes_match_the_released_head(kinetics_names):
    # With the renamed classes merged, the union of the official K400/600/700 names is the released 722-class
    # list (id for id), and every mapping is ascending with the dataset's class count.
    ds = {k: kinetics_names[k] for k in ("k400", "k600", "k700")}
    union = sorted({canonical_class_name(c) for names in ds.values() for c in names})
    assert union == kinetics_names["k722"]
    for k, names in ds.items():
        assert names == sorted(names)
        m = class_mapping(union, names)
        assert m.shape == (len(names),) and m.dtype == np.int64 and np.all(np.diff(m) > 0)
        assert [union[i] for i in m] == [canonical_class_name(c) for c in names]
    raw_union = {c for names in ds.values() for c in names}
    assert len(raw_union) == 725 and len(CLASS_ALIASES) == 3


def test_k722_no_aliases_and_unique_names(tmp_path):
    a = make_tree(tmp_path / "a", {"train": {CW400: [vid("a")]}, "val": {CW400: [vid("b")]}})
    b = make_tree(tmp_path / "b", {"train": {CW: [vid("c")]}, "val": {CW: [vid("d")]}})
    sa, sb = scan_dataset("t400", str(a)), scan_dataset("t700", str(b))
    assert build_k722([sa, sb]).classes == [CW]
    assert build_k722([sa, sb], aliases=None).classes == [CW400, CW]
    with pytest.raises(KineticsError, match="unique"):
        build_k722([sa, scan_dataset("t400", str(b))])



def test_a_k722_name_that_cannot_prefix_its_files_or_is_a_dataset_s_is_refused_before_the_scan(tmp_path, capsys):
    # --name was not checked as the dataset names are: 'a/b' wrote a/b_train.txt ... into a subfolder of --out,
    # '../x' outside it, '' wrote _train.txt; the name of a --dataset had the merge replace that dataset's own lists.
    a = make_tree(tmp_path / "t400", {"train": {"a": [vid("a")]}, "val": {"a": [vid("b")]}})
    out = tmp_path / "out"
    for name, message in (("a/b", "--name 'a/b' must contain only letters, digits, '-' and '_'"),
                          ("../x", "--name '../x' must contain only letters, digits, '-' and '_'"),
                          ("", "--name '' must contain only letters, digits, '-' and '_'"),
                          ("t400", f"--name t400: the merged lists, labels and report would replace those of "
                                   f"--dataset t400 in {out} (t400_train.txt ...); give the merge another --name, "
                                   f"or pass --no-dataset-lists")):
        assert prepare_kinetics.main(["k722", "--dataset", f"t400={a}", "--name", name, "--out", str(out)]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["t400"]
    # merged files only: nothing of the dataset's own to replace
    assert prepare_kinetics.main(["k722", "--dataset", f"t400={a}", "--name", "t400", "--out", str(out),
                                  "--no-dataset-lists"]) == 0
    assert read_list(out / "t400_train.txt") == [(f"../t400/train/a/{vid('a')}", 0)]


# ----------------------------------------------------------------------------------------------------------------
# errors and --dry-run
# ----------------------------------------------------------------------------------------------------------------

def test_a_missing_or_unexpected_official_class_is_an_error_not_a_label_shift(tmp_path, kinetics_names, capsys,
                                                                              shared_dir):
    # k400 with its first class folder missing: every later label would have moved down by one.
    official = kinetics_names["k400"]
    tree = {split: {c: [vid(f"{split[0]}{i}")] for i, c in enumerate(official[1:], 1)} for split in ("train", "val")}
    root = make_tree(tmp_path / "k400", tree)
    out = tmp_path / "out"
    assert prepare_kinetics.main(["lists", "--dataset", f"k400={root}", "--out", str(out)]) == 2
    err = capsys.readouterr().err  # without the released labels only the count is known
    assert "399 class folders" in err and "the official k400 has 400" in err and "--official-labels" in err
    args = ["lists", "--dataset", f"k400={root}", "--out", str(out),
            "--official-labels", str(shared_dir / "data" / "labels")]  # the original release's file names
    assert prepare_kinetics.main(args) == 2
    err = capsys.readouterr().err
    assert f"missing: 1 ({official[0]!r})" in err and "--allow-empty-classes" in err and "unexpected:" not in err
    assert not out.exists()
    assert prepare_kinetics.main(args[:-1] + [str(tmp_path)]) == 2  # a folder without the released file
    assert "holds no kinetics400_labels.csv or k400_labels.csv for dataset k400" in capsys.readouterr().err
    # --allow-empty-classes keeps the official ids: the missing class is an empty one.
    assert prepare_kinetics.main(args + ["--allow-empty-classes"]) == 0
    assert read_labels_csv(str(out / "k400_labels.csv")) == official
    lines = read_list(out / "k400_train.txt") + read_list(out / "k400_val.txt")
    assert len(lines) == 2 * 399 and all(lab == official.index(rel.split("/")[-2]) for rel, lab in lines)
    # A folder name that is no official class is refused even so, named with the count.
    for split in ("train", "val"):
        (root / split / "arm_wrestling").mkdir()
        (root / split / "arm_wrestling" / vid("u1")).write_bytes(b"x")
    assert prepare_kinetics.main(args + ["--allow-empty-classes"]) == 2
    err = capsys.readouterr().err
    assert "unexpected: 1 ('arm_wrestling')" in err and "--underscore-to-space" in err
    # The missing class that --allow-empty-classes allows is counted, not listed before the refused one.
    assert "; 1 missing, allowed by --allow-empty-classes;" in err and repr(official[0]) not in err


@pytest.mark.parametrize("rows, problem", [
    (b"0,abseiling\nxx\n", "line 3: id 'xx' is not a whole number"),
    (b"0,abseiling\n\xff1,air drumming\n", "line 3: not UTF-8 text (invalid start byte, byte 0xff)"),
    (b"0,abseiling\n2,air drumming\n", "line 3: id 2, expected 1"),
    (b"0,abseiling\n1,\n", "line 3: class 1 has no name"),
    # cut at its unquoted comma, the name was read as "air drumming" and the rest dropped
    (b"0,abseiling\n1,air drumming, (with sticks)\n", "line 3: 3 fields, the header has 2: quote a name that holds a "
                                                      "comma (csv cut 'air drumming' there)"),
])
def test_a_malformed_official_labels_file_is_one_line_naming_it(tmp_path, capsys, rows, problem):
    # --official-labels with a damaged label file: a traceback (exit 1) for a bad id or byte, naming neither.
    labels = tmp_path / "labels" / "kinetics400_labels.csv"
    labels.parent.mkdir()
    labels.write_bytes(b"id,name\n" + rows)
    root = make_tree(tmp_path / "k400", {s: {"abseiling": [vid(s[0])]} for s in ("train", "val")})
    args = ["lists", "--dataset", f"k400={root}", "--out", str(tmp_path / "out"), "--official-labels",
            str(labels.parent)]
    assert prepare_kinetics.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: labels CSV {str(labels)!r}, {problem}") and err.count("\n") == 1
    with pytest.raises(KineticsError, match=problem.split(":")[0]):
        read_labels_csv(str(labels))


@pytest.mark.parametrize("text, problem", [
    (b"0,abseiling\n1,air drumming\n", ", line 1: no column id, name in the header '0,abseiling' (expected id,name, "
                                        "then one row per class)"),
    (b"index,name\n0,abseiling\n", ", line 1: no column id in the header 'index,name' (expected id,name, then one "
                                   "row per class)"),
    # a spreadsheet saved where fields are separated by semicolons
    (b"\xef\xbb\xbfid;name\r\n0;abseiling\r\n", ", line 1: no column id, name in the header 'id;name' (expected "
                                                "id,name, then one row per class); its fields are separated by "
                                                "semicolons, not commas: save it as comma-separated values"),
    (b"", ", line 1: no column id, name in the header '' (expected id,name, then one row per class)"),
    (b"id,name\r\n\r\n", ": no row below its header (expected id,name, then one row per class)"),
])
def test_a_labels_file_without_its_columns_names_the_missing_ones_and_the_header(tmp_path, text, problem):
    # "expected an 'id,name' header and at least one row" named neither the column missing nor the header it read.
    labels = tmp_path / "kinetics400_labels.csv"
    labels.write_bytes(text)
    with pytest.raises(KineticsError) as e:
        read_labels_csv(str(labels))
    assert str(e.value) == f"labels CSV {str(labels)!r}{problem}"


def test_spaces_around_the_names_of_a_labels_file_are_not_part_of_them(tmp_path):
    # The training run's reader of the same file strips them; here " abseiling" was a class no folder matched.
    labels = tmp_path / "kinetics400_labels.csv"
    labels.write_bytes(b"id, name\r\n0, abseiling\r\n1,\tair drumming \r\n\r\n")
    assert read_labels_csv(str(labels)) == ["abseiling", "air drumming"]


def test_an_official_labels_file_in_another_order_than_the_labels_is_refused(tmp_path, capsys):
    # A label file numbered in sort(1)'s order ("skiing ..." before "ski jumping"): the lists' labels are positions
    # in the sorted names, so --allow-empty-classes wrote "ski jumping" as 1 where the file says 2 (exit 0).
    labels = tmp_path / "labels" / "kinetics400_labels.csv"
    labels.parent.mkdir()
    labels.write_text("id,name\n0,skateboarding\n1,skiing crosscountry\n2,ski jumping\n3,skydiving\n")
    root = make_tree(tmp_path / "k400", {s: {c: [vid(f"{s[0]}{c[:4]}")] for c in ("ski jumping", "skateboarding",
                                                                             "skiing crosscountry")}
                                         for s in ("train", "val")})
    args = ["lists", "--dataset", f"k400={root}", "--out", str(tmp_path / "out"), "--official-labels",
            str(labels.parent)]
    for more in ([], ["--allow-empty-classes"]):
        assert prepare_kinetics.main(args + more) == 2
        assert capsys.readouterr().err == (f"error: labels CSV {str(labels)!r}: id 2 'ski jumping' sorts before id 1 "
                                           "'skiing crosscountry'; a label is the position of its class in the sorted "
                                           "class names (by code point, as Python sorts), so this file's ids would "
                                           "not be the lists' labels: number the sorted names, each once\n")
        assert not (tmp_path / "out").exists()
    labels.write_text("id,name\n0,skateboarding\n1,ski jumping\n2,ski jumping\n3,skiing crosscountry\n")
    assert prepare_kinetics.main(args) == 2
    assert "id 2 'ski jumping' is given twice;" in capsys.readouterr().err
    labels.write_text("id,name\n0,skateboarding\n1,ski jumping\n2,skiing crosscountry\n3,skydiving\n")
    assert prepare_kinetics.main(args + ["--allow-empty-classes"]) == 0  # sorted: the ids hold
    assert read_list(tmp_path / "out" / "k400_train.txt") == [
        (f"../k400/train/{c}/{vid('t' + c[:4])}", i) for i, c in enumerate(["skateboarding", "ski jumping",
                                                                            "skiing crosscountry"])]


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(KineticsError, match="does not exist"):
        scan_dataset("t400", str(tmp_path / "nope"))
    make_tree(tmp_path / "noval", {"train": {"a": [vid("a")]}})
    with pytest.raises(KineticsError, match=r"noval/val"):
        scan_dataset("t400", str(tmp_path / "noval"))
    make_tree(tmp_path / "empty", {"train": {"a": [vid("a")], "b": [vid("b")]}, "val": {"a": [vid("c")]}})
    (tmp_path / "empty" / "val" / "b").mkdir()
    with pytest.raises(KineticsError, match=r"no usable video \('b'\)"):
        scan_dataset("t400", str(tmp_path / "empty"))
    assert scan_dataset("t400", str(tmp_path / "empty"), allow_empty_classes=True).classes == ["a", "b"]
    make_tree(tmp_path / "diff", {"train": {"a": [vid("a")], "b": [vid("b")]}, "val": {"a": [vid("c")]}})
    with pytest.raises(KineticsError, match=r"different classes.*only in train: \['b'\]"):
        scan_dataset("t400", str(tmp_path / "diff"))
    with pytest.raises(KineticsError, match="dataset name"):
        scan_dataset("k4/00", str(tmp_path / "diff"))


def test_class_names_in_other_unicode_forms_are_named_as_such(tmp_path):
    """A split unpacked on macOS spells 'crème' in NFD: "only in train: ['crème'], only in val: ['crème']" showed the
    same name on both sides. The error says they differ only in their Unicode form, which form each split has, and
    to rename one."""
    nfc, nfd = "cr\u00e8me", "cre\u0300me"
    root = make_tree(tmp_path / "t400", {"train": {"a": [vid("a")], nfc: [vid("b")]},
                                         "val": {"a": [vid("c")], nfd: [vid("d")]}})
    with pytest.raises(KineticsError) as e:
        scan_dataset("t400", str(root))
    assert str(e.value) == (f"dataset t400: 1 class name(s) of train and val differ only in their Unicode form: "
                            f"{nfc!r} (NFC) in train and {nfd!r} (NFD) in val; rename one of each pair so both "
                            f"splits spell it alike (in NFC, as most systems write names; macOS unpacks names in NFD)")


@pytest.mark.parametrize("underscore", [False, True], ids=["as-written", "underscore-to-space"])
def test_class_folders_of_one_split_in_other_unicode_forms_are_refused_naming_both(tmp_path, capsys, underscore):
    """A class folder copied again from macOS ('cafe' + combining accent, NFD) beside the one written on Linux
    ('caf\u00e9', NFC) made two classes that look alike, each with part of the videos, and shifted every later
    label."""
    nfc, nfd = "caf\u00e9_au_lait", "cafe\u0301_au_lait"
    root = make_tree(tmp_path / "t400", {"train": {"a": [vid("a")], nfc: [vid("b")], nfd: [vid("c")]},
                                         "val": {"a": [vid("d")], nfc: [vid("e")], nfd: [vid("f")]}})
    args = ["lists", "--dataset", f"t400={root}", "--out", str(tmp_path / "out")]
    assert prepare_kinetics.main(args + (["--underscore-to-space"] if underscore else [])) == 2
    assert capsys.readouterr().err == (  # in the walk's order: 'e' sorts before '\u00e9'
        f"error: dataset t400: class folders {str(root / 'train' / nfd)!r} (NFD) and "
        f"{str(root / 'train' / nfc)!r} (NFC) of train differ only in their Unicode form, and "
        f"would be two classes that look alike; keep one (the NFC one, as most systems write names): move the videos "
        f"of the other into it and remove that folder\n")
    assert not (tmp_path / "out").exists()


def test_a_split_folder_that_is_a_broken_link_is_named_with_its_target(tmp_path):
    """A split folder linked to storage that is gone (an unmounted disk) was reported as "does not exist", which
    sent the user looking for a folder that is there, as a link: the error names the link and its target."""
    root = make_tree(tmp_path / "t400", {"train": {"a": [vid("a")]}})
    target = tmp_path / "unmounted" / "val"
    (root / "val").symlink_to(target)
    with pytest.raises(KineticsError) as e:
        scan_dataset("t400", str(root))
    assert str(e.value).startswith(f"dataset t400: split folder {str(root / 'val')!r} is a symbolic link to "
                                   f"{str(target)!r}, which does not exist (or is a link loop): mount or fix its "
                                   f"target (expected <root>/val/<class name>/<video>")



def test_a_split_folder_named_in_another_case_is_named_with_the_flag_that_reads_it(tmp_path, capsys):
    """A download unpacked as Train/ and Val/ was "split folder '.../val' does not exist", the folder there in
    plain sight: the error names it and the flag to pass, and with that flag the lists are written."""
    root = make_tree(tmp_path / "t400", {"train": {"a": [vid("a")]}, "val": {"a": [vid("b")]}})
    (root / "val").rename(root / "Val")
    out = tmp_path / "out"
    args = ["lists", "--dataset", f"t400={root}", "--out", str(out)]
    assert prepare_kinetics.main(args) == 2
    assert capsys.readouterr().err == (f"error: dataset t400: split folder {str(root / 'val')!r} does not exist, but "
                                       f"{str(root / 'Val')!r} does, its name in another case: pass --val-dir Val\n")
    assert not out.exists()
    assert prepare_kinetics.main([*args, "--val-dir", "Val", "--data-root", str(tmp_path)]) == 0
    assert read_list(out / "t400_val.txt") == [(f"t400/Val/a/{vid('b')}", 0)]


GONE = "which does not exist (or is a link loop): mount or fix its target"


def test_a_dataset_root_that_is_a_broken_link_is_named_with_its_target(tmp_path):
    """A dataset root linked to storage that is gone said "does not exist or is not a directory", as the split
    folder once did: the error names the link and its target, as the split folder's does."""
    target = tmp_path / "unmounted" / "k400"
    (tmp_path / "k400").symlink_to(target)
    with pytest.raises(KineticsError) as e:
        scan_dataset("t400", str(tmp_path / "k400"))
    assert str(e.value) == (f"dataset t400: root {str(tmp_path / 'k400')!r} is a symbolic link to {str(target)!r}, "
                            f"{GONE}")


def test_a_reencode_dst_inside_src_or_equal_to_it_is_refused_naming_each_flag(tmp_path, capsys):
    # "'<src>/h264' is inside '<src>'; use separate source and destination roots" did not say which root was
    # which, nor where the outputs could go.
    src = make_tree(tmp_path / "k400", {"train": {"a": [vid("a")]}})
    elsewhere = f"give a --dst outside --src (by default {src}_h264, beside it)"
    for dst, told in ((src / "h264", f"--dst {str(src / 'h264')!r} is inside --src {str(src)!r}, where its outputs "
                                     f"would be sources of the next run; {elsewhere}"),
                      (tmp_path, f"--src {str(src)!r} is inside --dst {str(tmp_path)!r}, where the outputs would mix "
                                 f"with the sources; {elsewhere}"),
                      (src / "train" / "..", f"--dst must differ from --src ({str(src)!r}); originals are never "
                                             f"overwritten: {elsewhere}")):
        assert prepare_kinetics.main(["reencode", "--src", str(src), "--dst", str(dst), "--no-progress"]) == 2
        assert capsys.readouterr().err == f"error: {told}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k400"] and sorted(os.listdir(src)) == ["train"]


def test_a_reencode_report_dir_inside_src_or_equal_to_it_is_refused_naming_each_flag(tmp_path, capsys):
    # --report-dir <src>/reports wrote reencode_report.json and .md into the source tree, which is only read
    src = make_tree(tmp_path / "k400", {"train": {"a": [vid("a")]}})
    dst = tmp_path / "k400_h264"
    for report_dir, where in ((src / "reports", f"inside --src {str(src)!r}"),
                              (src / "train" / "..", f"--src ({str(src)!r})")):
        for dry_run in ([], ["--dry-run"]):
            assert prepare_kinetics.main(["reencode", "--src", str(src), "--dst", str(dst), "--report-dir",
                                          str(report_dir), "--no-progress", *dry_run]) == 2
            assert capsys.readouterr().err == (
                f"error: --report-dir {os.path.abspath(report_dir)!r} is {where}, where reencode_report.json and "
                f"reencode_report.md would be written among the sources, which are only read; give a --report-dir "
                f"outside --src, or leave it out (the report then goes to --dst)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k400"] and sorted(os.listdir(src)) == ["train"]


def test_a_reencode_src_that_is_a_broken_link_is_named_with_its_target(tmp_path):
    """reencode's --src linked to storage that is gone is named with its target, as a split folder is."""
    target = tmp_path / "unmounted" / "k400"
    (tmp_path / "src").symlink_to(target)
    with pytest.raises(KineticsError) as e:
        plan_reencode(str(tmp_path / "src"), str(tmp_path / "dst"))
    assert str(e.value) == f"source root {str(tmp_path / 'src')!r} is a symbolic link to {str(target)!r}, {GONE}"
    assert not (tmp_path / "dst").exists()


def test_a_labels_csv_that_is_a_broken_link_is_named_with_its_target(tmp_path, capsys):
    """A released label file linked to storage that is gone said "does not exist" read alone, and given in
    --official-labels it was passed over as if absent ("holds no kinetics400_labels.csv"): both name its target."""
    target = tmp_path / "unmounted" / "kinetics400_labels.csv"
    labels = tmp_path / "labels" / "kinetics400_labels.csv"
    labels.parent.mkdir()
    labels.symlink_to(target)
    with pytest.raises(KineticsError) as e:
        read_labels_csv(str(labels))
    assert str(e.value) == f"labels CSV {str(labels)!r} is a symbolic link to {str(target)!r}, {GONE}"
    root = make_tree(tmp_path / "k400", {s: {"abseiling": [vid(s[0])]} for s in ("train", "val")})
    assert prepare_kinetics.main(["lists", "--dataset", f"k400={root}", "--out", str(tmp_path / "out"),
                                  "--official-labels", str(labels.parent)]) == 2
    assert capsys.readouterr().err == f"error: {e.value}\n"
    assert not (tmp_path / "out").exists()

def test_unreadable_files_skipped_and_reported(tmp_path, capsys):
    root = make_tree(tmp_path / "t400", {"train": {"a": [vid("a"), vid("b")]}, "val": {"a": [vid("c")]}})
    (root / "train" / "a" / vid("zero")).write_bytes(b"")
    scan = scan_dataset("t400", str(root))
    assert [os.path.basename(p) for p, _ in scan.skipped] == [vid("zero")]
    assert "empty file" in scan.skipped[0][1]
    with pytest.raises(KineticsError, match=r"(?s)unusable.*zero.*empty file"):
        scan_dataset("t400", str(root), strict=True)
    # --check probes each file as the training index does: the dummy bytes are not videos, a real clip is.
    write_clip(root / "train" / "a" / vid("real"), t=4)
    scan = scan_dataset("t400", str(root), check=True, workers=1, allow_empty_classes=True)
    assert [os.path.basename(v.path) for v in scan.videos["train"]] == [vid("real")]
    bad = {os.path.basename(p): r for p, r in scan.skipped}
    assert set(bad) == {vid("a"), vid("b"), vid("c"), vid("zero")} and "not a readable video container" in bad[vid("a")]
    # The val class now has no usable video.
    with pytest.raises(KineticsError, match=r"no usable video \('a'\); 1 unusable file"):
        scan_dataset("t400", str(root), check=True)
    rc = prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(tmp_path), "--strict"])
    assert rc == 2 and "error: dataset t400: 1 unusable" in capsys.readouterr().err
    rc = prepare_kinetics.main(["lists", "--dataset", f"t400={tmp_path / 'missing'}", "--out", str(tmp_path)])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_dry_run_writes_nothing(tmp_path, capsys):
    for ds, tree in K722_TREES.items():
        make_tree(tmp_path / "data" / ds, tree)
    out = tmp_path / "out"
    args = ["--dataset", f"t400={tmp_path / 'data' / 't400'}", "--dataset", f"t700={tmp_path / 'data' / 't700'}",
            "--out", str(out), "--data-root", str(tmp_path / "data"), "--dry-run"]
    assert prepare_kinetics.main(["lists"] + args) == 0
    assert prepare_kinetics.main(["k722"] + args) == 0
    assert not out.exists()
    text = capsys.readouterr().out
    for name in ("t400_train.txt", "t700_val.txt", "t400_labels.csv", "k722_train.txt", "k722_labels.csv",
                 "k722_to_t400_mapping.npy", "k722_to_t700_mapping.npy", "k722_report.json"):
        assert f"[dry-run] would write {out / name}" in text
    assert f"t400/train/{ABS}/{vid('A1')} 0" in text  # a preview of the list lines


def test_an_output_folder_that_cannot_be_written_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    """An --out, --dst or --report-dir that is a file or cannot be written ended in a traceback: lists and k722
    after scanning (and probing, with --check) every video, reencode after encoding every video."""
    root = make_tree(tmp_path / "t400", {"train": {"a": [vid("a")]}, "val": {"a": [vid("b")]}})
    src = tmp_path / "src"
    write_clip(src / "train" / "a" / vid("a"), t=4)
    taken, readonly = tmp_path / "taken.txt", tmp_path / "mounted"
    taken.write_text("x")
    readonly.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: str(p) != str(readonly) and real_access(p, mode, **k))
    monkeypatch.setattr(prepare_kinetics, "reencode_tree", lambda *a, **k: pytest.fail("re-encoding started"))
    cases = [(["lists", "--dataset", f"t400={root}", "--out", str(taken)],
              f"--out {taken} exists and is not a folder; give a folder (new or existing)"),
             (["k722", "--dataset", f"t400={root}", "--out", str(readonly / "out")],
              f"--out {readonly / 'out'}: no permission to write {readonly}"),
             (["lists", "--dataset", f"t400={root}", "--out", str(readonly), "--dry-run"],
              f"--out {readonly}: no permission to write {readonly}"),
             (["reencode", "--src", str(src), "--dst", str(taken)],
              f"--dst {taken} exists and is not a folder; give a folder (new or existing)"),
             (["reencode", "--src", str(src), "--dst", str(tmp_path / "dst"), "--report-dir", str(readonly)],
              f"--report-dir {readonly}: no permission to write {readonly}")]
    for argv, message in cases:
        assert prepare_kinetics.main(argv) == 2, argv
        assert capsys.readouterr().err == f"error: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mounted", "src", "t400", "taken.txt"]
    assert taken.read_text() == "x" and not any(readonly.iterdir())


def test_a_write_that_fails_on_the_way_is_one_line(tmp_path, monkeypatch, capsys):
    root = make_tree(tmp_path / "t400", {"train": {"a": [vid("a")]}, "val": {"a": [vid("b")]}})

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prepare_kinetics, "prepare_lists", full_disk)
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'out'}: No space left on device\n"


def test_a_list_whose_name_a_folder_takes_is_named_in_the_error(tmp_path, capsys):
    # The rename of the written list over a folder failed, and the error named the temporary file instead.
    root = make_tree(tmp_path / "t400", {"train": {"a": [vid("a")]}, "val": {"a": [vid("b")]}})
    (tmp_path / "out" / "t400_train.txt").mkdir(parents=True)
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {tmp_path / 'out' / 't400_train.txt'}: Is a directory"
    assert os.listdir(tmp_path / "out") == ["t400_train.txt"]


def test_cli_script_runs(tmp_path):
    # As a plain script (repository root not on sys.path): the import bootstrap works and --dry-run writes nothing.
    root = make_tree(tmp_path / "t400", {"train": {"a": [vid("a")]}, "val": {"a": [vid("b")]}})
    r = subprocess.run([sys.executable, str(REPO / "tools" / "prepare_kinetics.py"), "lists", "--dataset",
                        f"t400={root}", "--out", str(tmp_path / "o"), "--dry-run"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "would write" in r.stdout and not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------------------------
# the written lists load in the data pipeline
# ----------------------------------------------------------------------------------------------------------------

def test_lists_load_in_the_loader(tmp_path, kinetics_names):
    from dali_pipelines.filelist import read_file_list

    classes = [ARM, "air drumming", PAF]
    assert all(c in kinetics_names["k400"] for c in classes)
    data = tmp_path / "data"
    for i, c in enumerate(classes):
        for j in range(2):
            write_clip(data / "t400" / "train" / c / vid(f"t{i}{j}"), t=8, seed=i)
        write_clip(data / "t400" / "val" / c / vid(f"v{i}"), t=8, seed=i)
    prepare_lists([scan_dataset("t400", str(data / "t400"))], str(data), log=lambda s: None)
    entries = read_file_list(str(data / "t400_train.txt"), str(data), num_classes=len(classes))
    assert len(entries) == 6
    for e in entries:
        assert os.path.isfile(e.path) and e.label == sorted(classes).index(e.rel_path.split("/")[2])

    _check_one_epoch(data, data / "t400_train.txt", len(classes), "cpu")


def _check_one_epoch(root: Path, list_path: Path, num_classes: int, device: str) -> None:
    """One training epoch through build_loader: every listed video once, each with its list label; on the GPU,
    every one decoded on NVDEC."""
    from configs import load_config
    from dali_pipelines import build_loader
    from dali_pipelines.filelist import read_file_list

    entries = read_file_list(str(list_path), str(root), num_classes)
    cfg = load_config(None, ["DATA.ROOT", str(root), "DATA.TRAIN_FILE", str(list_path),
                             "DATA.NUM_CLASSES", str(num_classes), "DATA.NUM_FRAMES", "4", "DATA.INPUT_SIZE", "32",
                             "TRAIN.BATCH_SIZE", "2", "DATA.DECODE_DEVICE", device])
    loader = build_loader(cfg, "train")
    seen = []
    for batch in loader:
        assert tuple(batch["video"].shape) == (2, 4, 3, 32, 32)
        for row, label in zip(batch["index"].tolist(), batch["label"].tolist()):
            assert label == entries[row].label
            seen.append(row)
    assert sorted(seen) == list(range(len(entries)))  # one epoch covers every listed video once
    if device == "gpu":  # every video decoded on NVDEC: none routed to, or fallen back to, a CPU decoder
        assert loader.routes_in_use() == ["nvdec"], loader.routes_in_use()
        assert loader.stats["samples_nvdec"] == len(seen) and loader.stats["route_fallbacks"] == 0
    loader.close()


def test_the_reports_a_reencode_leaves_in_the_tree_are_no_stray_entries_of_its_lists(tmp_path, capsys):
    # A re-encode of one split (or one class folder) writes its report into that folder by default; the lists of the
    # tree counted them among the "entries ignored", the count that points at misplaced or stray files.
    src, dst = tmp_path / "t400", tmp_path / "t400_h264"
    for split in ("train", "val"):
        write_clip(src / split / ARM / vid(split), t=4)
    base = ["reencode", "--workers", "1", "--no-progress", "--short-side", "32"]
    assert prepare_kinetics.main(base + ["--src", str(src / "train"), "--dst", str(dst / "train")]) == 0
    assert prepare_kinetics.main(base + ["--src", str(src / "val" / ARM), "--dst", str(dst / "val" / ARM)]) == 0
    assert all((folder / name).is_file() for folder in (dst / "train", dst / "val" / ARM)
               for name in ("reencode_report.json", "reencode_report.md"))
    out = tmp_path / "out"
    args = ["lists", "--dataset", f"t400={dst}", "--out", str(out)]
    assert prepare_kinetics.main(args) == 0
    assert json.loads((out / "t400_report.json").read_text())["ignored_entries"] == 0
    assert "- entries ignored (not a video, or not where the layout has videos): 0" in (
        out / "t400_report.md").read_text().splitlines()
    # other files there are still counted, at either level
    (dst / "train" / "reencode_report.txt").write_text("notes")
    (dst / "val" / ARM / "reencode_report.json.bak").write_text("{}")
    assert prepare_kinetics.main(args) == 0
    rep = json.loads((out / "t400_report.json").read_text())
    assert rep["ignored_entries"] == 2 and sorted(map(os.path.basename, rep["ignored_examples"])) == [
        "reencode_report.json.bak", "reencode_report.txt"]


def _reencoded_lists(tmp_path: Path) -> tuple[Path, Path]:
    """VP9 class tree -> short-GOP H.264 tree -> t400 lists over the new root."""
    classes = [ARM, PAF]
    for i, c in enumerate(classes):
        for j in range(2):
            write_clip(tmp_path / "t400" / "train" / c / vid(f"t{i}{j}"), t=10, seed=i)
        write_clip(tmp_path / "t400" / "val" / c / vid(f"v{i}"), t=10, seed=i)
    data = tmp_path / "data"
    rep = reencode_tree(str(tmp_path / "t400"), str(data / "t400"), EncodeSettings(short_side=48, gop=4),
                        workers=1, progress=False, log=lambda s: None)
    assert rep["done"] == 6 and not rep["failed"]
    prepare_lists([scan_dataset("t400", str(data / "t400"))], str(data), log=lambda s: None)
    return data, data / "t400_train.txt"


def test_reencoded_tree_loads_on_cpu(tmp_path):
    # The whole chain: re-encode, list the new root, load it (H.264 goes through PyAV on the CPU).
    data, train_list = _reencoded_lists(tmp_path)
    _check_one_epoch(data, train_list, 2, "cpu")


@pytest.mark.gpu
def test_reencoded_tree_loads_on_nvdec(tmp_path):
    # The point of re-encoding: the H.264 output decodes on NVDEC through DALI's mixed backend.
    data, train_list = _reencoded_lists(tmp_path)
    _check_one_epoch(data, train_list, 2, "gpu")


# ----------------------------------------------------------------------------------------------------------------
# --check writes the lists' index caches: the first training run probes nothing
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture()
def counted_probes(monkeypatch) -> list[str]:
    """The paths the index's probe job is run on (check and index builds alike; one worker: in this process, the
    check's too, as it has no time limit here)."""
    from dali_pipelines import index as index_mod

    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", 0)  # with one, its one worker is a worker process
    calls: list[str] = []
    real_job = index_mod._probe_job
    monkeypatch.setattr(index_mod, "_probe_job", lambda job: calls.append(job[1]) or real_job(job))
    return calls


def _truncate(path: Path, share: float = 0.6) -> None:
    """Cut a clip short: its first frame still decodes, the index calls it truncated."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * share)])


def _fresh_infos(list_path: Path, root: Path) -> list:
    """Every row's facts as a build without a cache probes them (a copy of the list, which has no cache)."""
    from dali_pipelines.index import build_index

    copy = list_path.with_name("fresh_" + list_path.name)
    copy.write_bytes(list_path.read_bytes())
    ix = build_index(str(copy), str(root), workers=1, progress=False)
    assert ix.probed == len(ix) and not ix.bad
    return [ix.table.info(r) for r in range(len(ix))]


def _two_class_tree(root: Path, train_per_class: int) -> Path:
    """``root/{train,val}/<class>/`` for two classes: training clips t<class><j> of 6, 7, ... frames, one val clip
    v<class> of 5 frames each."""
    for i, cls in enumerate((ARM, PAF)):
        for j in range(train_per_class):
            write_clip(root / "train" / cls / vid(f"t{i}{j}"), t=6 + j, seed=i)
        write_clip(root / "val" / cls / vid(f"v{i}"), t=5, seed=i)
    return root


def test_checked_lists_come_with_their_index_and_training_probes_nothing(tmp_path, counted_probes, capsys):
    from dali_pipelines.index import build_index, index_paths

    root = _two_class_tree(tmp_path / "t400", train_per_class=3)
    cut = write_clip(root / "train" / ARM / vid("cut"), t=30, codec="h264")
    _truncate(cut)
    (root / "val" / PAF / vid("junk")).write_bytes(b"\x00not a video" * 50)
    files = sorted(str(p) for p in root.rglob("*.mp4"))
    data = tmp_path / "data"
    args = ["lists", "--dataset", f"t400={root}", "--out", str(data), "--data-root", str(tmp_path),
            "--workers", "1"]
    assert prepare_kinetics.main(args + ["--check"]) == 0
    assert sorted(counted_probes) == files  # the check probed each file once, with the index's probe
    rep = json.loads((data / "t400_report.json").read_text())
    skipped = {os.path.basename(f["path"]): f["reason"] for f in rep["skipped_files"]}
    assert set(skipped) == {vid("cut"), vid("junk")} and skipped[vid("cut")].startswith("truncated")
    lists = {split: data / f"t400_{split}.txt" for split in ("train", "val")}
    assert [len(read_list(p)) for p in lists.values()] == [6, 2]  # the rejected files are not listed

    counted_probes.clear()
    for split, lst in lists.items():
        assert Path(index_paths(str(lst)).cache).is_file()
        ix = build_index(str(lst), str(tmp_path), 2, workers=1, progress=False)  # as the first training run
        assert counted_probes == [] and ix.probed == 0 and not ix.bad and len(ix) == len(read_list(lst))
        assert f"({len(ix)} probed" not in ix.summary() and f"(0 probed, {len(ix)} from cache)" in ix.summary()
        assert [ix.table.info(r) for r in range(len(ix))] == _fresh_infos(lst, tmp_path)  # the index's own facts
        counted_probes.clear()
    r = subprocess.run([sys.executable, str(REPO / "tools" / "verify_data.py"), *map(str, lists.values()), "--root",
                        str(tmp_path), "--workers", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(0 probed, 6 from cache)" in r.stdout and "(0 probed, 2 from cache)" in r.stdout

    # A clip changed after the check (same name, other content) is probed again, and only it.
    changed = root / "train" / PAF / vid("t11")
    write_clip(changed, t=11, seed=5)
    ix = build_index(str(lists["train"]), str(tmp_path), 2, workers=1, progress=False)
    assert counted_probes == [str(changed)] and ix.probed == 1
    assert ix.infos[ix.videos.rel_paths.find(os.path.relpath(changed, tmp_path))].num_frames == 11

    # Without --check: the lists as before and no index cache; the first build probes every video.
    counted_probes.clear()
    plain = tmp_path / "plain"
    assert prepare_kinetics.main(args[:4] + [str(plain)] + args[5:]) == 0
    assert counted_probes == [] and not list(plain.glob("*.index.npz"))
    assert len(read_list(plain / "t400_train.txt")) == 7  # the truncated clip is listed (the index finds it)
    ix = build_index(str(plain / "t400_train.txt"), str(tmp_path), 2, workers=1, progress=False)
    assert ix.probed == 7 and len(counted_probes) == 7 and list(ix.bad.values())[0].startswith("truncated")

    # --check with --dry-run: says it would write the caches, writes nothing.
    capsys.readouterr()
    assert prepare_kinetics.main(args[:4] + [str(tmp_path / "dry")] + args[5:] + ["--check", "--dry-run"]) == 0
    assert not (tmp_path / "dry").exists()
    assert f"would write the index cache of {tmp_path / 'dry' / 't400_train.txt'} (6 videos" in capsys.readouterr().out


def test_the_wrote_lines_count_in_the_right_number(tmp_path, capsys):
    # "wrote .../t400_val.txt (1 lines)", "(the index of 1 videos, probed by --check)"
    root = tmp_path / "t400"
    write_clip(root / "train" / ARM / vid("a"), t=4)
    write_clip(root / "train" / ARM / vid("b"), t=4)
    write_clip(root / "val" / ARM / vid("c"), t=4)
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(tmp_path), "--check",
                                  "--workers", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"wrote {tmp_path / 't400_train.txt'} (2 lines)" in out
    assert f"wrote {tmp_path / 't400_val.txt'} (1 line)" in out
    assert f"wrote {tmp_path / 't400_val.txt.index.npz'} (the index of 1 video, probed by --check)" in out


def test_a_second_check_probes_only_new_and_changed_videos(tmp_path, counted_probes, capsys):
    from dali_pipelines.index import build_index

    root = _two_class_tree(tmp_path / "t400", train_per_class=2)
    data = tmp_path / "data"
    # the lists' paths are relative to --out (the default data root), so they start with "../t400/"
    args = ["lists", "--dataset", f"t400={root}", "--out", str(data), "--workers", "1", "--check"]
    assert prepare_kinetics.main(args) == 0
    assert len(counted_probes) == 6 and read_list(data / "t400_val.txt")[0][0].startswith("../t400/val/")
    # a clip replaced (other content), one added, one damaged after the first check; the rest unchanged
    changed = write_clip(root / "train" / PAF / vid("t10"), t=11, seed=5)
    added = write_clip(root / "train" / ARM / vid("new"), t=9, seed=3)
    damaged = root / "train" / ARM / vid("t00")
    damaged.write_bytes(b"\x00not a video" * 50)
    counted_probes.clear()
    capsys.readouterr()
    assert prepare_kinetics.main(args) == 0
    assert sorted(counted_probes) == sorted(map(str, (changed, added, damaged)))
    assert "check t400: 4 of 7 videos unchanged since the index caches an earlier check wrote; probing 3" in (
        capsys.readouterr().err)
    rep = json.loads((data / "t400_report.json").read_text())
    assert [os.path.basename(f["path"]) for f in rep["skipped_files"]] == [vid("t00")]
    # the lists' caches hold the same facts a build without any cache probes, and training probes nothing
    for split, rows in (("train", 4), ("val", 2)):
        lst = data / f"t400_{split}.txt"
        counted_probes.clear()
        ix = build_index(str(lst), str(data), 2, workers=1, progress=False)
        assert counted_probes == [] and ix.probed == 0 and len(ix) == rows
        assert [ix.table.info(r) for r in range(len(ix))] == _fresh_infos(lst, data)


def test_a_check_through_a_link_to_the_dataset_reuses_the_earlier_probes(tmp_path, counted_probes, capsys):
    # The caches name their videos by the paths the check was given: a dataset root given through a symbolic link
    # (or the real folder after a check through the link) named other paths, and every video was probed again.
    root = _two_class_tree(tmp_path / "t400", train_per_class=2)
    link = tmp_path / "link"
    link.symlink_to(root, target_is_directory=True)
    out = tmp_path / "data"

    def check(dataset: Path) -> str:
        counted_probes.clear()
        capsys.readouterr()
        assert prepare_kinetics.main(["lists", "--dataset", f"t400={dataset}", "--out", str(out), "--workers", "1",
                                      "--check"]) == 0
        return capsys.readouterr().err

    check(root)
    assert len(counted_probes) == 6
    assert "6 of 6 videos unchanged since the index caches an earlier check wrote; probing 0" in check(link)
    assert counted_probes == [] and read_list(out / "t400_val.txt")[0][0].startswith("../link/val/")
    # the caches now name the videos through the link: a check of the real folder reuses them too
    assert "6 of 6 videos unchanged" in check(root) and counted_probes == []
    # a copy of the tree elsewhere (same names, sizes and mtimes) is other files: probed
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    assert "0 of 6 videos unchanged" in check(copy) and len(counted_probes) == 6


@pytest.mark.parametrize("out_inside", [True, False], ids=["lists-in-the-tree", "lists-elsewhere"])
def test_a_check_of_a_moved_data_root_reuses_the_earlier_probes(tmp_path, counted_probes, capsys, out_inside):
    # The index caches reuse the records of another root for files of the same relative path, size and mtime; a
    # check looked up earlier probes by the absolute paths they had, so a data root moved (or copied with cp -p)
    # had every video probed again.
    old, new = tmp_path / "old", tmp_path / "new"
    _two_class_tree(old / "t400", train_per_class=2)

    def check(tree: Path) -> str:
        counted_probes.clear()
        capsys.readouterr()
        out = tree / "data" if out_inside else tmp_path / "lists"
        assert prepare_kinetics.main(["lists", "--dataset", f"t400={tree / 't400'}", "--out", str(out),
                                      "--data-root", str(tree), "--workers", "1", "--check"]) == 0
        return capsys.readouterr().err

    check(old)
    assert len(counted_probes) == 6
    old.rename(new)  # a move keeps every file's size and mtime
    assert "6 of 6 videos unchanged since the index caches an earlier check wrote; probing 0" in check(new)
    assert counted_probes == []
    lists = new / "data" if out_inside else tmp_path / "lists"
    assert read_list(lists / "t400_val.txt")[0][0].startswith("t400/val/")
    # a file changed after the move is probed again, as a build would
    changed = write_clip(new / "t400" / "train" / PAF / vid("t10"), t=11, seed=5)
    assert "5 of 6 videos unchanged" in check(new) and counted_probes == [str(changed)]


def test_what_the_names_decide_is_refused_before_check_probes_a_video(tmp_path, counted_probes, capsys):
    # A class only in train, a tree named k400 with 2 classes, --strict with a non-video file: each is known from the
    # folders alone, and was refused only after --check had probed every video (hours on Kinetics, all lost).
    root = _two_class_tree(tmp_path / "t400", train_per_class=1)
    write_clip(root / "train" / "extra class" / vid("x"), t=4)
    args = ["lists", "--dataset", f"t400={root}", "--out", str(tmp_path / "data"), "--check", "--workers", "1"]
    assert prepare_kinetics.main(args) == 2
    assert "different classes" in capsys.readouterr().err and counted_probes == []
    (root / "train" / "extra class" / vid("x")).unlink()
    (root / "train" / "extra class").rmdir()
    assert prepare_kinetics.main(args[:2] + [f"k400={root}"] + args[3:]) == 2
    assert "the official k400 has 400" in capsys.readouterr().err and counted_probes == []
    (root / "val" / ARM / vid("zero")).write_bytes(b"")
    assert prepare_kinetics.main(args + ["--strict"]) == 2
    assert "1 unusable video file(s)" in capsys.readouterr().err and counted_probes == []


def _unreadable_while_checked(monkeypatch, dataset: str, folder: Path):
    """Makes ``dataset``'s storage fail (``folder``: permission denied) once it is walked, while it is checked,
    after the datasets before it were probed; returns the real ``finish_scan``."""
    real_finish = prepare_kinetics.finish_scan

    def unreadable(walked, **kwargs):
        if walked.name == dataset:
            raise OSError(13, "Permission denied", str(folder))
        return real_finish(walked, **kwargs)

    monkeypatch.setattr(prepare_kinetics, "finish_scan", unreadable)
    return real_finish


def _k722_check_then_a_flat_download(tmp_path):
    """A class-folder dataset t400 and a flat download t600 (one video per split, no annotation CSVs), and the
    ``k722 --check`` arguments over t400 alone (the tests add t600): ``(first, flat, out, args)``."""
    first = _two_class_tree(tmp_path / "t400", train_per_class=2)
    flat = tmp_path / "t600"
    for split in ("train", "val"):
        write_clip(flat / split / vid(f"f{split[0]}"), t=4)
    out = tmp_path / "data"
    return first, flat, out, ["k722", "--dataset", f"t400={first}", "--out", str(out), "--check", "--workers", "1"]


def _annotate_flat(flat: Path) -> None:
    """The annotation CSVs of ``_k722_check_then_a_flat_download``'s flat download: its two videos of one class."""
    for split in ("train", "val"):
        csv = flat / "annotations" / f"{split}.csv"
        csv.parent.mkdir(exist_ok=True)
        csv.write_text(f"label,youtube_id,time_start,time_end,split\nabseiling,f{split[0]:_<10},10,20,{split}\n")


def _no_csv_error(flat: Path) -> str:
    """The error of ``_k722_check_then_a_flat_download``'s flat download without its annotation CSVs."""
    return (f"dataset t600: the split folders in '{flat}' hold video files and no class folders (the flat layout of "
            f"the official downloads), but the train annotation CSV '{flat / 'annotations' / 'train.csv'}' does not "
            f"exist; name it with --annotations t600:train=CSV, or the folder holding train.csv and val.csv with "
            f"--annotations t600=DIR")


def test_a_check_refuses_a_later_datasets_folders_before_the_first_probe(tmp_path, counted_probes, capsys):
    # k722 over two datasets, the second's flat folders without their annotation CSVs: refused only once every video
    # of the first was probed (hours on Kinetics); every dataset is now walked before the first probe.
    first, flat, out, args = _k722_check_then_a_flat_download(tmp_path)
    assert prepare_kinetics.main(args + ["--dataset", f"t600={flat}"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {_no_csv_error(flat)}"]
    assert counted_probes == [] and not list(out.glob("*.index.npz"))
    _annotate_flat(flat)
    assert prepare_kinetics.main(args + ["--dataset", f"t600={flat}"]) == 0 and len(counted_probes) == 8


def test_a_check_that_fails_keeps_its_probes_for_the_fixed_command(tmp_path, counted_probes, capsys):
    # k722 over two datasets, the second's only val video undecodable, its class left without a usable video by the
    # check: the probes (hours on Kinetics) were lost with the error, and probed again by the fixed command.
    first, flat, out, args = _k722_check_then_a_flat_download(tmp_path)
    _annotate_flat(flat)
    args += ["--dataset", f"t600={flat}"]
    fv = flat / "val" / vid("fv")
    good = fv.read_bytes()
    fv.write_bytes(b"\x00not a video" * 50)
    assert prepare_kinetics.main(args) == 2
    assert "no usable video" in capsys.readouterr().err and len(counted_probes) == 8
    counted_probes.clear()
    fv.write_bytes(good)
    assert prepare_kinetics.main(args) == 0 and counted_probes == [str(fv)]
    assert len(read_list(out / "k722_train.txt")) == 5 and not list(out.glob("*_check_interrupted*"))

    # One dataset whose check leaves a class without a usable video: its good videos' probes are kept too.
    junk = first / "val" / ARM / vid("v0")
    junk.write_bytes(b"\x00not a video" * 50)
    other = tmp_path / "other"
    args = ["lists", "--dataset", f"t400={first}", "--out", str(other), "--check", "--workers", "1"]
    counted_probes.clear()
    assert prepare_kinetics.main(args) == 2
    assert "no usable video" in capsys.readouterr().err and len(counted_probes) == 6
    counted_probes.clear()
    assert prepare_kinetics.main(args + ["--allow-empty-classes"]) == 0 and counted_probes == [str(junk)]


def test_checked_k722_lists_come_with_their_index(tmp_path, counted_probes):
    # The merged lists mix the datasets' probes (here one VP9 and one H.264 dataset: other codec codes).
    from dali_pipelines.index import build_index

    for ds, codec in (("t400", "vp9"), ("t600", "h264")):
        for cls in (ARM, ABS):
            write_clip(tmp_path / ds / "train" / cls / vid(f"{ds}{cls[:2]}"), t=7, codec=codec)
            write_clip(tmp_path / ds / "val" / cls / vid(f"{ds}v{cls[:2]}"), t=5, codec=codec)
    out = tmp_path / "out"
    assert prepare_kinetics.main(["k722", "--dataset", f"t400={tmp_path / 't400'}", "--dataset",
                                  f"t600={tmp_path / 't600'}", "--out", str(out), "--data-root", str(tmp_path),
                                  "--workers", "1", "--check"]) == 0
    assert len(counted_probes) == 8
    counted_probes.clear()
    for name in ("k722_train.txt", "k722_val.txt", "t400_train.txt", "t600_val.txt"):
        ix = build_index(str(out / name), str(tmp_path), workers=1, progress=False)
        assert counted_probes == [] and ix.probed == 0 and len(ix) == len(read_list(out / name)) > 0
        assert [ix.table.info(r) for r in range(len(ix))] == _fresh_infos(out / name, tmp_path)
        counted_probes.clear()
    codecs = {ix.table.info(r).codec for r in range(len(ix))}
    assert codecs == {"h264"}  # t600_val: its own rows, not t400's


# ----------------------------------------------------------------------------------------------------------------
# re-encoding
# ----------------------------------------------------------------------------------------------------------------

def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reencode_h264_short_side_gop_and_failures(tmp_path):
    src = tmp_path / "t400"
    a = write_clip(src / "train" / ARM / vid("a"), t=21, h=64, w=96, codec="vp9", gop=50)       # landscape, VP9
    b = write_clip(src / "val" / ARM / "bbbbbbbbbbb_1_2.webm", t=13, h=80, w=48, codec="vp9")  # portrait, .webm
    corrupt = src / "train" / ARM / vid("corrupt")
    corrupt.write_bytes(os.urandom(2000))
    (src / "train" / ARM / "readme.txt").write_text("not a video")
    before = {p: _digest(p) for p in (a, b, corrupt)}
    dst = tmp_path / "t400_h264"

    rep = reencode_tree(str(src), str(dst), EncodeSettings(short_side=32, gop=4), workers=2, progress=False,
                        log=lambda s: None)
    assert rep["total"] == 3 and rep["done"] == 2 and rep["skipped_existing"] == 0
    assert [os.path.basename(f["src"]) for f in rep["failed"]] == [vid("corrupt")]
    assert "not a readable video" in rep["failed"][0]["error"]
    assert {p: _digest(p) for p in (a, b, corrupt)} == before  # originals untouched

    out_a = dst / "train" / ARM / vid("a")
    out_b = dst / "val" / ARM / "bbbbbbbbbbb_1_2.mp4"
    assert not (dst / "train" / ARM / vid("corrupt")).exists()
    assert not list(dst.rglob("*.part"))
    ia, ib = probe_output(str(out_a)), probe_output(str(out_b))
    assert (ia["codec"], ia["width"], ia["height"], ia["frames"]) == ("h264", 48, 32, 21)
    assert (ib["codec"], ib["width"], ib["height"], ib["frames"]) == ("h264", 32, 54, 13)
    for info, n in ((ia, 21), (ib, 13)):
        assert info["pix_fmt"] == "yuv420p" and info["fps"] == 25.0
        assert info["keyframes"] == list(range(0, n, 4))  # exactly every GOP frames
        assert not info["reordered"] and info["faststart"]  # no B-frames, moov first
        # The encoder's own record: fixed GOP, no scene-cut keyframes, no B-frames (x264 records open_gop only
        # when B-frames are on; without them every GOP is closed).
        x = info["x264"]
        assert (x["keyint"], x["scenecut"], x["bframes"], x.get("open_gop", "0")) == ("4", "0", "0", "0")

    disk = json.loads((dst / "reencode_report.json").read_text())
    assert disk["failed"] == rep["failed"]
    assert vid("corrupt") in (dst / "reencode_report.md").read_text()

    # Resumable: finished files are skipped; the corrupt one is retried (and fails again).
    mtime = out_a.stat().st_mtime_ns
    rep2 = reencode_tree(str(src), str(dst), EncodeSettings(short_side=32, gop=4), workers=1, progress=False,
                         log=lambda s: None)
    assert rep2["skipped_existing"] == 2 and rep2["done"] == 0 and len(rep2["failed"]) == 1
    assert out_a.stat().st_mtime_ns == mtime


@pytest.mark.timeout(120)  # the old pool hung here: fail fast, not at the suite's limit
def test_reencode_of_a_full_range_source_keeps_its_grey_levels(tmp_path):
    # MJPEG is full-range yuvj420p; the H.264 output is limited-range yuv420p: copying Y unchanged stretched the
    # contrast (decoded grey = 1.164 * source - 19).
    import av

    from dali_pipelines.pyav_encode import write_video

    levels = [20, 60, 128, 200, 235]
    src = tmp_path / "src" / "a" / "grey.avi"
    src.parent.mkdir(parents=True)
    write_video(str(src), np.stack([np.full((48, 64, 3), v, np.uint8) for v in levels]), codec="mjpeg", fps=5)

    def greys(path: Path) -> list[float]:
        with av.open(str(path)) as c:
            return [float(f.to_ndarray(format="rgb24").mean()) for f in c.decode(video=0)]

    report = reencode_tree(str(tmp_path / "src"), str(tmp_path / "dst"), EncodeSettings(short_side=48),
                           progress=False, log=lambda s: None)
    assert report["done"] == 1 and not report["failed"]
    with av.open(str(src)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuvj420p"
    src_greys, out_greys = greys(src), greys(tmp_path / "dst" / "a" / "grey.mp4")
    assert len(out_greys) == len(levels)
    assert max(abs(a - b) for a, b in zip(src_greys, out_greys)) <= 2, (src_greys, out_greys)


@pytest.mark.timeout(120)
def test_reencode_of_a_bt709_source_keeps_its_colours_for_every_decoder(tmp_path):
    # The output is untagged (read as BT.601 by every decoder, DALI's whatever the tag); the source's BT.709
    # YCbCr was copied into it unchanged, so its colours came out shifted (7.8 grey levels on this ramp).
    import av

    ramp = np.zeros((6, 64, 96, 3), np.uint8)
    ramp[..., 0] = np.linspace(0, 255, 96, dtype=np.uint8)[None, :]
    ramp[..., 1] = np.linspace(255, 0, 64, dtype=np.uint8)[:, None]
    ramp[..., 2] = np.arange(6, dtype=np.uint8)[:, None, None] * 40
    src = tmp_path / "src" / "a" / "hd.mp4"
    src.parent.mkdir(parents=True)
    with av.open(str(src), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.codec_context.colorspace = 1  # AVCOL_SPC_BT709, written into the stream's header
        for rgb in ramp:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p", dst_colorspace="ITU709")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(str(src)) as c:
        assert c.streams.video[0].codec_context.colorspace == 1
    # PyAV follows the tag: the source decodes to the ramp
    assert np.abs(decode_frames(str(src), range(6)).astype(int) - ramp).mean() < 2

    report = reencode_tree(str(tmp_path / "src"), str(tmp_path / "dst"), EncodeSettings(short_side=64),
                           progress=False, log=lambda s: None)
    assert report["done"] == 1 and not report["failed"]
    out_path = tmp_path / "dst" / "a" / "hd.mp4"
    with av.open(str(out_path)) as c:
        assert c.streams.video[0].codec_context.colorspace == 2  # untagged
        frames = list(c.decode(video=0))
    source = decode_frames(str(src), range(6)).astype(int)
    # read as BT.601 (as every decoder reads it), the output is the source's picture; read as BT.709 it is not
    # (before: 7.4 grey levels from the source as BT.601, 1.2 as BT.709)
    diff = {m: np.abs(np.stack([f.reformat(format="rgb24", src_colorspace=m).to_ndarray() for f in frames])
                      .astype(int) - source).mean() for m in ("ITU601", "ITU709")}
    assert diff["ITU601"] < 4 < diff["ITU709"], diff


def test_a_file_that_crashes_its_worker_is_reported_and_the_others_are_done(tmp_path, monkeypatch):
    """`lists --check` and `reencode` over a tree where one file kills the worker process that decodes it (as a
    crash in FFmpeg would): that file is reported as such, and every other file is checked and re-encoded. (With
    multiprocessing.Pool both waited forever for the lost result.)"""
    from dali_pipelines import index as index_mod
    from tests import crashing_jobs
    from tools.kinetics import reencode as reencode_mod

    src = tmp_path / "t400"
    for split, tag in (("train", "a"), ("train", crashing_jobs.CRASH_MARK), ("val", "c")):
        write_clip(src / split / ARM / vid(tag), t=8)
    crasher = vid(crashing_jobs.CRASH_MARK)
    monkeypatch.setattr(index_mod, "_probe_job", crashing_jobs.probe_job)  # workers import it by name
    scan = scan_dataset("t400", str(src), check=True, workers=2)
    bad = {os.path.basename(p): r for p, r in scan.skipped}
    assert list(bad) == [crasher] and bad[crasher].startswith("probing it crashed the process")
    assert "signal SIGSEGV" in bad[crasher]
    assert [os.path.basename(v.path) for v in scan.videos["train"] + scan.videos["val"]] == [vid("a"), vid("c")]

    monkeypatch.setattr(reencode_mod, "_reencode_job", crashing_jobs.reencode_job)
    rep = reencode_tree(str(src), str(tmp_path / "out"), EncodeSettings(short_side=32, gop=4), workers=2,
                        progress=False, log=lambda s: None)
    assert rep["done"] == 2 and [os.path.basename(f["src"]) for f in rep["failed"]] == [crasher]
    assert "re-encoding it crashed the process" in rep["failed"][0]["error"]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.mp4")) == [vid("a"), vid("c")]


def test_the_partial_output_of_an_encode_that_crashed_its_worker_is_removed(tmp_path):
    # The worker is dead: nothing else removes its .part file (a resume that fails on the same file left one again).
    from tools.kinetics.reencode import _reencode_crashed

    out = tmp_path / "out" / ARM / vid("a")
    part = out.with_name(out.name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"half a video")
    row = _reencode_crashed((str(tmp_path / vid("a")), str(out)), "signal SIGSEGV")
    assert not row["ok"] and row["error"].endswith("re-encoding it crashed the process: signal SIGSEGV")
    assert not part.exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [2, 1])
def test_a_reencode_that_never_ends_is_a_failure_and_the_others_are_done(tmp_path, monkeypatch, workers):
    """A video whose re-encode never ends (a decode that hangs on a pathological file) held the end of the whole
    run: past the time limit its worker is ended, the video reported as failed, its partial output removed, and
    every other video is re-encoded. With one worker too: its encodes ran in the main process, with no limit."""
    from tests import crashing_jobs
    from tools.kinetics import reencode as reencode_mod

    src = tmp_path / "t400"
    for tag in ("a", crashing_jobs.STALL_MARK, "c"):
        write_clip(src / "train" / ARM / vid(tag), t=8)
    monkeypatch.setattr(reencode_mod, "_reencode_job", crashing_jobs.stalling_reencode_job)  # workers: by name
    out = tmp_path / "out"
    rep = reencode_tree(str(src), str(out), EncodeSettings(short_side=32, gop=4), workers=workers, progress=False,
                        log=lambda s: None, time_limit_s=crashing_jobs.ANSWERS_WITHIN_S)
    stalled = vid(crashing_jobs.STALL_MARK)
    assert rep["done"] == 2 and [os.path.basename(f["src"]) for f in rep["failed"]] == [stalled]
    assert "re-encoding it did not finish in time" in rep["failed"][0]["error"]
    assert sorted(p.name for p in out.rglob("*") if p.is_file() and p.parent != out) == [vid("a"), vid("c")]


def test_reencode_stopped_by_videos_in_a_row_past_the_limit_names_the_last(tmp_path):
    """Videos in a row without a result within --time-limit stop the re-encode with its own error, which named
    neither video: it names the last by its path, as the pool's error does (not as a job tuple)."""
    from evautil.workers import MAX_OVERDUE_IN_A_ROW, WorkerTimeoutError
    from tools.kinetics import common
    from tools.kinetics.reencode import _unless_overdue_in_a_row

    last = str(tmp_path / "caf\udce9" / vid("c"))

    def results():
        yield {"ok": True}
        raise WorkerTimeoutError(f"{MAX_OVERDUE_IN_A_ROW} items in a row gave no result within 5 s each (the last: "
                                 f"{common.job_video((last, last + '.out'))}): what they are read from, or the work "
                                 f"itself, does not answer")

    got = list(_unless_overdue_in_a_row(results(), 5.0))
    assert got[0] == {"ok": True} and len(got) == 2
    assert got[1].startswith("re-encoding stopped (--time-limit 5 s): ") and f"(the last: {last})" in got[1]


@pytest.mark.timeout(120)
def test_a_check_where_every_file_hangs_stops_with_one_error(tmp_path, monkeypatch):
    """`lists --check` over storage that stopped answering: a video whose probe never answers is skipped with that
    reason, and MAX_OVERDUE_IN_A_ROW of them in a row stop the check with one error naming the dataset (no list
    written from half an answer), instead of waiting for ever."""
    from dali_pipelines import index as index_mod
    from evautil.workers import MAX_OVERDUE_IN_A_ROW
    from tests import crashing_jobs

    src = tmp_path / "t400"
    write_clip(src / "train" / ARM / vid("a"), t=8)
    write_clip(src / "train" / ARM / vid(crashing_jobs.STALL_MARK), t=8)
    write_clip(src / "val" / ARM / vid("c"), t=8)
    monkeypatch.setattr(index_mod, "_probe_job", crashing_jobs.stalling_probe_job)  # workers import it by name
    limit = crashing_jobs.ANSWERS_WITHIN_S  # the other videos answer within it on a loaded machine too
    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", limit)
    scan = scan_dataset("t400", str(src), check=True, workers=2)
    (reason,) = [r for _, r in scan.skipped]
    assert reason.startswith(index_mod.PROBE_OVERDUE + f" (no result within {limit:g} s, the only item in flight)")
    for tag in "xyz"[:MAX_OVERDUE_IN_A_ROW]:
        write_clip(src / "train" / ARM / vid(f"{tag}_{crashing_jobs.STALL_MARK}"), t=8)
    for good in (src / "train" / ARM / vid("a"), src / "val" / ARM / vid("c")):
        good.unlink()  # every file hangs: a short limit that no answer has to race
    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", 0.5)
    with pytest.raises(KineticsError, match=rf"^dataset t400: --check stopped: {MAX_OVERDUE_IN_A_ROW} items in a "
                                            r"row gave no result within 0.5 s each"):
        # (val's class now has no video, refused before any probe without allow_empty_classes)
        scan_dataset("t400", str(src), check=True, workers=2, allow_empty_classes=True)


@pytest.mark.timeout(120)
def test_a_one_worker_check_whose_probe_never_ends_skips_that_video_and_finishes(tmp_path, monkeypatch):
    """`lists --check --workers 1` probed in the main process, where no time limit holds: a video whose probe never
    ends (a read from a file system that stopped answering) held the check for ever. Its one worker is a worker
    process now, ended past the limit: the video is a skipped file named with that reason, the others are listed."""
    from dali_pipelines import index as index_mod
    from tests import crashing_jobs

    root = _two_class_tree(tmp_path / "t400", train_per_class=1)
    stalled = write_clip(root / "train" / PAF / vid(crashing_jobs.STALL_MARK), t=8)
    monkeypatch.setattr(index_mod, "_probe_job", crashing_jobs.stalling_probe_job)  # workers import it by name
    monkeypatch.setattr(index_mod, "PROBE_TIMEOUT_S", crashing_jobs.ANSWERS_WITHIN_S)
    out = tmp_path / "out"
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(out), "--check",
                                  "--workers", "1", "--no-progress"]) == 0
    skipped = json.loads((out / "t400_report.json").read_text())["skipped_files"]
    assert [f["path"] for f in skipped] == [str(stalled)]
    assert skipped[0]["reason"].startswith(index_mod.PROBE_OVERDUE + " (no result within")
    assert f"- `{stalled}`: {index_mod.PROBE_OVERDUE} (" in (out / "t400_report.md").read_text()
    assert sorted(os.path.basename(p) for p, _ in read_list(out / "t400_train.txt")) == [vid("t00"), vid("t10")]


def test_a_reencode_dry_run_names_each_video_on_one_line_of_utf8(tmp_path):
    # Names with a line break or bytes that are not UTF-8: the preview split a line, or was a traceback on a stdout
    # that does not let such bytes through (a UTF-8 locale other than C.UTF-8).
    src = tmp_path / "t400"
    (src / "train" / ARM).mkdir(parents=True)
    for name in (b"a\nb.mp4", b"c\xff.mp4"):
        (src / "train" / ARM / os.fsdecode(name)).write_bytes(b"x")
    lines: list[str] = []
    reencode_tree(str(src), str(tmp_path / "out"), dry_run=True, log=lines.append)
    clip, out = src / "train" / ARM, tmp_path / "out" / "train" / ARM
    assert lines[1:] == [f"            {clip}/a\\nb.mp4 -> {out}/a\\nb.mp4",
                         f"            {clip}/c\\xff.mp4 -> {out}/c\\xff.mp4"]
    for line in lines:
        line.encode("utf-8")  # strict


def test_a_reencode_leaves_out_the_streams_of_an_unfinished_download(tmp_path):
    # x.f137.mp4 and x.temp.mp4 (what yt-dlp leaves when a merge fails or is stopped) were encoded as videos.
    src = tmp_path / "t400"
    (src / "train" / ARM).mkdir(parents=True)
    for name in ("a.mp4", "b.f137.mp4", "b.f248.webm", "c.temp.mp4", "d.mp4.part", "e.mkv.ytdl"):
        (src / "train" / ARM / name).write_bytes(b"x")
    lines: list[str] = []
    reencode_tree(str(src), str(tmp_path / "out"), dry_run=True, log=lines.append)
    clip, out = src / "train" / ARM, tmp_path / "out" / "train" / ARM
    assert lines[1:] == [f"            {clip}/a.mp4 -> {out}/a.mp4"]


def test_reencode_names_every_video_whose_output_another_takes_and_what_to_do(tmp_path, capsys):
    # x.mp4 beside x.mkv (a download kept in two formats) was refused without saying what to do, one pair a run.
    src = tmp_path / "t400"
    for name in ("a.mkv", "a.mp4", "b.mp4", "b.webm", "c.mp4"):
        (src / "train" / ARM).mkdir(parents=True, exist_ok=True)
        (src / "train" / ARM / name).write_bytes(b"x")
    dst = tmp_path / "out"
    assert prepare_kinetics.main(["reencode", "--src", str(src), "--dst", str(dst), "--dry-run"]) == 2
    clip = src / "train" / ARM
    assert capsys.readouterr().err.splitlines() == [
        f"error: 2 videos under {src} with another of the same name but for its extension (every output is .mp4), "
        f"e.g. {clip / 'a.mkv'} and {clip / 'a.mp4'}, both to {dst / 'train' / ARM / 'a.mp4'}; keep one of each "
        f"pair: remove or move the other out of {src} (the same command then goes on); the others: "
        f"{clip / 'b.webm'}"]


def test_reencode_cli_dry_run_and_bad_roots(tmp_path, capsys):
    src = tmp_path / "src"
    write_clip(src / "train" / "a" / vid("a"), t=4)
    assert prepare_kinetics.main(["reencode", "--src", str(src), "--dry-run"]) == 0
    assert not (tmp_path / "src_h264").exists()
    assert "would re-encode 1 of 1" in capsys.readouterr().out
    assert prepare_kinetics.main(["reencode", "--src", str(src), "--dst", str(src)]) == 2
    assert "must differ" in capsys.readouterr().err
    assert prepare_kinetics.main(["reencode", "--src", str(src), "--dst", str(src / "out")]) == 2
    assert "inside" in capsys.readouterr().err
    assert prepare_kinetics.main(["reencode", "--src", str(tmp_path / "nope"), "--dst", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # Default destination beside the source; exit status 0 with no failures.
    assert prepare_kinetics.main(["reencode", "--src", str(src), "--short-side", "16", "--gop", "2", "--workers",
                                  "1", "--no-progress"]) == 0
    info = probe_output(str(tmp_path / "src_h264" / "train" / "a" / vid("a")))
    assert info["codec"] == "h264" and min(info["width"], info["height"]) == 16 and info["frames"] == 4


def test_reencode_real_clips_keeps_frame_counts_and_rate(tmp_path, real_clips_dir):
    # Real H.264 (29.97 fps, 32 frames) and MPEG-4 Part 2 in AVI, linked (not copied) into a class tree.
    clips = {"clip_32frames_340x256.mp4": "aaaaaaaaaaa_0_10.mp4", "clip_426x240_29.97fps.mp4": "bbbbbbbbbbb_0_10.mp4",
             "clip_mpeg4_320x240.avi": "ccccccccccc_0_10.avi"}
    src = tmp_path / "src"
    (src / "train" / ARM).mkdir(parents=True)
    reference_clips(real_clips_dir, clips)
    for name, link in clips.items():
        (src / "train" / ARM / link).symlink_to(real_clips_dir / name)
    rep = reencode_tree(str(src), str(tmp_path / "dst"), EncodeSettings(short_side=64, gop=8), workers=1,
                        progress=False, log=lambda s: None)
    assert rep["done"] == 3 and not rep["failed"]
    import av

    for name, link in clips.items():
        with av.open(str(real_clips_dir / name)) as c:
            st = c.streams.video[0]
            src_frames = sum(1 for _ in c.decode(st))
            src_rate, (w, h) = st.average_rate, (st.width, st.height)
        info = probe_output(str(tmp_path / "dst" / "train" / ARM / (link[:-4] + ".mp4")))
        assert info["frames"] == src_frames and info["codec"] == "h264"
        assert info["height"] == 64 and info["width"] == 2 * round(w * 64 / h / 2)
        assert info["fps"] == pytest.approx(float(src_rate), rel=1e-6)
        assert info["keyframes"] == list(range(0, src_frames, 8))
        # the pictures: every written frame is its own source frame, scaled down (not a repeat, a shift or black)
        written = decode_frames(str(tmp_path / "dst" / "train" / ARM / (link[:-4] + ".mp4")), range(src_frames))
        source = torch.from_numpy(decode_frames(str(real_clips_dir / name), range(src_frames)))
        scaled = torch.nn.functional.interpolate(source.permute(0, 3, 1, 2).float(), size=written.shape[1:3],
                                                 mode="area").permute(0, 2, 3, 1).numpy()
        step = max(1, src_frames // 12)
        for k in range(0, src_frames, step):
            match = best_match(written[k], scaled)[0]
            assert match == k or np.abs(scaled[k] - scaled[match]).mean() < 1.0, (name, k, match)  # static ties
            err = np.abs(written[k].astype(np.float32) - scaled[k]).mean()
            assert err < 8.0, (name, k, err)  # H.264 at 64 px against an area-scaled source: 3.6-6.6 seen


def test_reencode_output_that_fails_verification_is_not_kept(tmp_path, monkeypatch):
    # If the written file does not decode to the source's frame count, it must not appear under the final name.
    import tools.kinetics.encode as kin

    src = write_clip(tmp_path / "a.webm", t=6)
    monkeypatch.setattr(kin, "count_frames", lambda path: 5)
    with pytest.raises(KineticsError, match="output has 5 frames, source decoded to 6"):
        kin.reencode_video(str(src), str(tmp_path / "out" / "a.mp4"), EncodeSettings(short_side=16, gop=2))
    assert os.listdir(tmp_path / "out") == []


def test_preparation_without_a_terminal_reports_progress_in_plain_lines(capsys):
    from tools.kinetics import parallel_map

    assert parallel_map(abs, [-1, -2, -3], 1, "check t400", progress=False) == [1, 2, 3]
    err = capsys.readouterr().err
    assert err.startswith("check t400: 3 files done in ") and "\r" not in err


def test_a_job_that_crashes_its_worker_every_time_is_named_by_its_video_path(tmp_path):
    # Without on_crash the pool's error named the job as Python writes its tuple: "('/data/caf\\udce9 ...', ...)".
    from evautil.workers import WorkerCrashError
    from tests import crashing_jobs
    from tools.kinetics import parallel_map

    src = str(tmp_path / os.fsdecode(f"caf\xe9 {crashing_jobs.CRASH_MARK}.mp4".encode("latin-1")))
    with pytest.raises(WorkerCrashError) as e:
        parallel_map(crashing_jobs.reencode_job, [(src, src + ".out", None, None)], 2, "re-encode", progress=False)
    assert str(e.value).startswith(f"{src}: ") and "SIGSEGV" in str(e.value)


def test_an_interrupted_reencode_writes_its_report_and_the_rerun_goes_on(tmp_path, monkeypatch):
    from tools.kinetics import reencode as reencode_mod

    src = tmp_path / "t400"
    for tag in ("a", "b", "c"):
        write_clip(src / "train" / ARM / vid(tag), t=8)
    real_job, jobs = reencode_mod._reencode_job, []

    def interrupted_job(args):
        if len(jobs) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the third file
        jobs.append(args[0])
        return real_job(args)

    monkeypatch.setattr(reencode_mod, "_reencode_job", interrupted_job)
    lines = []
    with pytest.raises(KeyboardInterrupt):  # no time limit: one worker's encodes run in this process, patched here
        reencode_tree(str(src), str(tmp_path / "out"), EncodeSettings(short_side=32, gop=4), workers=1,
                      progress=False, log=lines.append, time_limit_s=0)
    report = json.loads((tmp_path / "out" / "reencode_report.json").read_text())
    assert (report["done"], report["interrupted"], report["total"]) == (2, True, 3)
    assert "interrupted: the same command goes on with the rest" in lines[-1]
    monkeypatch.setattr(reencode_mod, "_reencode_job", real_job)
    again = reencode_tree(str(src), str(tmp_path / "out"), EncodeSettings(short_side=32, gop=4), workers=1,
                          progress=False, log=lines.append)
    assert (again["skipped_existing"], again["done"], again["interrupted"]) == (2, 1, False)


def _stopping_script(module: str, function: str, before: int, sig: str, first: str = "") -> str:
    """A ``python -c`` script running ``prepare_kinetics.main`` whose ``module.function`` (a worker's job, or any
    function: its other arguments are passed on) sends this process ``sig`` when ``before`` calls have run
    (after ``first``, code with ``args``, the first argument of the call stopped). A check's probes have no time
    limit there, so that one worker probes in this process."""
    return f"""
import os, signal, sys
sys.path.insert(0, {str(REPO)!r})
from tools import prepare_kinetics
import dali_pipelines.index
dali_pipelines.index.PROBE_TIMEOUT_S = 0
import {module} as m
real, jobs = m.{function}, []
def job(args, *rest, **kw):
    if len(jobs) == {before}:
        {first or "pass"}
        os.kill(os.getpid(), getattr(signal, {sig!r}))
    jobs.append(args)
    return real(args, *rest, **kw)
m.{function} = job
sys.exit(prepare_kinetics.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGUSR1"])
def test_a_stop_signal_during_reencode_keeps_the_report_like_ctrl_c(tmp_path, sig):
    src, dst = tmp_path / "t400", tmp_path / "out"
    for tag in ("a", "b", "c"):
        write_clip(src / "train" / ARM / vid(tag), t=8)
    # a scheduler's stop during the third file, whose encode has begun its .part file
    begun = "os.makedirs(os.path.dirname(args[1]), exist_ok=True); open(args[1] + '.part', 'wb').write(b'partial')"
    script = _stopping_script("tools.kinetics.reencode", "_reencode_job", 2, sig, first=begun)
    r = subprocess.run([sys.executable, "-c", script, "reencode",  # no time limit: the encodes in the script's process
                        "--src", str(src), "--dst", str(dst), "--short-side", "32", "--gop", "4", "--workers", "1",
                        "--time-limit", "0", "--no-progress"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 4, r.stderr
    stopped = [ln for ln in r.stderr.splitlines() if ln.startswith("stopped:")]
    assert len(stopped) == 1 and sig in stopped[0] and "Traceback" not in r.stderr
    report = json.loads((dst / "reencode_report.json").read_text())
    assert (report["done"], report["interrupted"], report["total"]) == (2, True, 3)
    assert not list(dst.rglob("*.part"))
    assert sorted(p.name for p in dst.rglob("*.mp4")) == [vid("a"), vid("b")]


@pytest.mark.parametrize("module, function, before, done", [
    ("tools.kinetics.reencode", "_reencode_job", 0, []),  # before the first video
    ("tools.kinetics.encode", "count_frames", 1, ["a"]),  # the second one written whole, not yet verified
    ("tools.kinetics.reencode", "_reencode_job", 2, ["a", "b"]),  # after two videos, the third not begun
])
def test_a_reencode_killed_outright_leaves_whole_videos_that_its_settings_record_accounts_for(
        tmp_path, capsys, module, function, before, done):
    """The settings record was written at the end of a run only: a run killed outright (SIGKILL, the machine going
    down) left its videos in --dst unrecorded, and a resume with other settings mixed a second encoding into the
    tree unrefused, its record then naming only that one."""
    src, dst = tmp_path / "t400", tmp_path / "out"
    for tag in ("a", "b", "c"):
        write_clip(src / "train" / ARM / vid(tag), t=8)
    # no time limit: one worker's encodes run in the script's process, which the patched function kills
    base = ["reencode", "--src", str(src), "--dst", str(dst), "--short-side", "32", "--workers", "1", "--no-progress",
            "--time-limit", "0"]
    r = subprocess.run([sys.executable, "-c", _stopping_script(module, function, before, "SIGKILL")] + base
                       + ["--gop", "4"], capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr
    out = dst / "train" / ARM
    # a video is under its name only whole: every one there decodes to its 8 frames
    assert sorted(p.name for p in out.glob("*.mp4")) == [vid(t) for t in done]
    assert all(probe_output(str(out / vid(t)))["frames"] == 8 for t in done)
    capsys.readouterr()
    if done:  # the tree holds --gop 4 videos: another GOP is refused, naming them
        assert prepare_kinetics.main(base + ["--gop", "8"]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and "(--gop 4 before, 8 now, see " in err[0], err
    else:  # nothing of the killed run is in the tree: any settings may start it
        assert prepare_kinetics.main(base + ["--gop", "8", "--dry-run"]) == 0
        assert "the run would stop here" not in capsys.readouterr().out
    assert prepare_kinetics.main(base + ["--gop", "4"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [vid("a"), vid("b"), vid("c")]  # no .part file left either
    assert [s["gop"] for s in json.loads((dst / ".reencode_settings.json").read_text())["settings_used"]] == [4]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_an_interrupted_check_keeps_its_probes_and_the_rerun_probes_only_the_rest(tmp_path, counted_probes, sig):
    root = _two_class_tree(tmp_path / "data" / "t400", train_per_class=3)
    out = tmp_path / "data"
    args = ["lists", "--dataset", f"t400={root}", "--out", str(out), "--check", "--workers", "1"]
    script = _stopping_script("dali_pipelines.index", "_probe_job", 3, sig)  # a stop during the fourth probe
    r = subprocess.run([sys.executable, "-c", script, *args],
                       capture_output=True, text=True, timeout=120)
    assert not (out / "t400_train.txt").exists()
    if sig == "SIGTERM":
        assert r.returncode == 4, r.stderr
        stopped = [ln for ln in r.stderr.splitlines() if ln.startswith("stopped:")]
        assert len(stopped) == 1 and "probes only the rest" in stopped[0] and "Traceback" not in r.stderr
    else:
        assert r.returncode != 0 and "interrupted:" in r.stderr and "Traceback" not in r.stderr
    # the saved probes alone: their cache's lock file was left beside them until a check completed
    assert sorted(p.name for p in out.glob("t400_*")) == ["t400_check_interrupted.txt.index.npz"]
    # The same command probes only the 5 of the 8 videos that were not probed before the stop.
    assert prepare_kinetics.main(args) == 0
    assert len(counted_probes) == 8 - 3
    assert len(read_list(out / "t400_train.txt")) == 6 and len(read_list(out / "t400_val.txt")) == 2
    assert not list(out.glob("*_check_interrupted*"))


def test_a_check_stopped_before_its_first_probe_says_nothing_was_saved(tmp_path):
    # Stopped in the scan of a large tree, or in the first probe, it said that the videos probed so far were saved in
    # <out>/*_check_interrupted.txt.index.npz: no such file was written, nor the --out folder made.
    root = _two_class_tree(tmp_path / "t400", train_per_class=1)
    out = tmp_path / "data"
    args = ["lists", "--dataset", f"t400={root}", "--out", str(out), "--check", "--workers", "1"]
    script = _stopping_script("dali_pipelines.index", "_probe_job", 0, "SIGTERM")
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 4, r.stderr
    assert r.stderr.splitlines()[-1] == ("stopped: SIGTERM received: lists --check: no list was written and no video "
                                         "was probed yet; run the same command again (exit code 4)")
    assert not out.exists()


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_check_stopped_while_writing_the_lists_says_what_it_wrote_and_keeps_the_probes(tmp_path, counted_probes,
                                                                                          sig):
    # Stopped after the probes, while the lists were written, it said "no list was written; the videos probed so
    # far are saved in *_check_interrupted.txt.index.npz": the train list and its index were written, no such file
    # was, and the same command probed the videos of the lists not yet written again.
    root = _two_class_tree(tmp_path / "data" / "t400", train_per_class=3)
    out = tmp_path / "data"
    args = ["lists", "--dataset", f"t400={root}", "--out", str(out), "--check", "--workers", "1"]
    script = _stopping_script("tools.kinetics.writers", "text_lines", 1, sig)  # in the second file, val's
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
    said = (f"lists --check: stopped while writing the lists: wrote t400_train.txt, t400_train.txt.index.npz and "
            f"not the rest; the usable videos probed are saved in {out}/*_check_interrupted.txt.index.npz, and the "
            f"same command probes none of them again and writes every file")
    if sig == "SIGTERM":
        assert r.returncode == 4, r.stderr
        assert r.stderr.splitlines()[-1] == f"stopped: SIGTERM received: {said} (exit code 4)"
    else:
        assert r.returncode != 0 and r.stderr.splitlines()[-1] == f"interrupted: {said}", r.stderr
    written = sorted(p.name for p in out.glob("t400_*") if p.suffix != ".lock")
    assert written == ["t400_check_interrupted.txt.index.npz", "t400_train.txt", "t400_train.txt.index.npz"]
    # the written list's cache keeps its lock, which its builds take; that of the saved probes is gone
    assert sorted(p.name for p in out.glob("t400_*.lock")) == ["t400_train.txt.index.lock"]
    assert len(read_list(out / "t400_train.txt")) == 6
    assert prepare_kinetics.main(args) == 0
    assert counted_probes == []
    assert len(read_list(out / "t400_train.txt")) == 6 and len(read_list(out / "t400_val.txt")) == 2
    assert not list(out.glob("*_check_interrupted*"))


def test_a_check_killed_outright_keeps_the_probes_it_saved_on_the_way(tmp_path, counted_probes):
    # A check saved its probes only when stopped by a signal it could catch: one killed outright (SIGKILL, the
    # out-of-memory killer) after hours of probes left nothing, and the same command probed every video again.
    root = _two_class_tree(tmp_path / "data" / "t400", train_per_class=3)
    out = tmp_path / "data"
    args = ["lists", "--dataset", f"t400={root}", "--out", str(out), "--check", "--workers", "1"]
    script = _stopping_script("dali_pipelines.index", "_probe_job", 3, "SIGKILL")  # killed in the fourth probe
    save_at_once = "import dali_pipelines.index as ix; ix._SAVE_EVERY_S, ix._SAVE_SHARE = 0, 1e9\n"
    script = script.replace("import os,", save_at_once + "import os,")
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr
    assert "saved the" not in r.stderr  # the saves on the way are silent
    assert sorted(p.name for p in out.glob("t400_*")) == ["t400_check_interrupted.txt.index.npz"]
    # The same command probes only the 5 of the 8 videos that were not probed before the kill.
    assert prepare_kinetics.main(args) == 0
    assert len(counted_probes) == 8 - 3
    assert len(read_list(out / "t400_train.txt")) == 6 and len(read_list(out / "t400_val.txt")) == 2
    assert not list(out.glob("*_check_interrupted*"))


@pytest.mark.parametrize("cause", ["folder", "full disk"])
def test_a_check_whose_list_write_fails_keeps_its_probes_for_the_same_command(tmp_path, counted_probes, capsys,
                                                                              monkeypatch, cause):
    # An error while the lists were written (a full disk, a list's name a folder takes) lost the probes of the
    # lists not yet written, kept only in memory, and the same command, the cause fixed, probed them all again.
    from tools.kinetics import writers

    root = _two_class_tree(tmp_path / "data" / "t400", train_per_class=1)
    out = tmp_path / "data"
    args = ["lists", "--dataset", f"t400={root}", "--out", str(out), "--check", "--workers", "1"]
    val = out / "t400_val.txt"
    if cause == "folder":
        val.mkdir()
        failed = f"{val}: Is a directory"
    else:
        real_write, lists_written = writers.atomic_write_text, []

        def full_at_the_second_list(path, text, **kwargs):
            if path.endswith(".txt"):
                lists_written.append(path)
                if len(lists_written) == 2:
                    raise OSError(28, "No space left on device", path)
            return real_write(path, text, **kwargs)

        monkeypatch.setattr(writers, "atomic_write_text", full_at_the_second_list)
        failed = f"{val}: No space left on device"
    saved = (f"the usable videos probed are saved in {out}/*_check_interrupted.txt.index.npz, and the same command "
             f"probes none of them again")
    assert prepare_kinetics.main(args) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {failed}; {saved}"
    assert len(counted_probes) == 4 and not val.is_file()
    if cause == "folder":
        val.rmdir()  # the full disk fails the second list write only (counted_probes' patch is kept)
    counted_probes.clear()
    assert prepare_kinetics.main(args) == 0
    assert counted_probes == [] and len(read_list(val)) == 2 and not list(out.glob("*_check_interrupted*"))


def test_a_check_whose_probes_cannot_be_saved_after_a_failed_list_write_says_only_the_error(tmp_path, capsys,
                                                                                           monkeypatch):
    root = _two_class_tree(tmp_path / "data" / "t400", train_per_class=1)
    out = tmp_path / "data"
    (out / "t400_val.txt").mkdir()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prepare_kinetics, "save_checked", full_disk)
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(out), "--check",
                                  "--workers", "1"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {out / 't400_val.txt'}: Is a directory"
    assert not list(out.glob("*_check_interrupted*"))


@pytest.mark.parametrize("cause", ["undecodable", "OSError"])
def test_a_scan_error_after_a_dataset_was_probed_says_its_probes_are_kept(tmp_path, counted_probes, capsys,
                                                                         monkeypatch, cause):
    # k722 whose second dataset fails after the first was probed: the probes were saved (a KineticsError's) or lost
    # (an OSError's), and the error line did not say that the fixed command probes none of them again.
    first, flat, out, args = _k722_check_then_a_flat_download(tmp_path)
    _annotate_flat(flat)
    fv = flat / "val" / vid("fv")
    if cause == "undecodable":  # its only val video: its class is left without a usable video by its check
        good = fv.read_bytes()
        fv.write_bytes(b"\x00not a video" * 50)
        failed = f"dataset t600: 1 annotated class(es) of '{flat / 'annotations' / 'val.csv'}' have no usable video"
        end = "; fix the download or pass --allow-empty-classes"
        saved_now = ["t400_check_interrupted.txt.index.npz", "t600_check_interrupted.txt.index.npz"]
        probed_again = [str(fv)]

        def fix():
            fv.write_bytes(good)
    else:  # its storage fails while it is checked
        real_finish = _unreadable_while_checked(monkeypatch, "t600", flat / "train")
        failed = end = f"{flat / 'train'}: Permission denied"
        saved_now = ["t400_check_interrupted.txt.index.npz"]
        probed_again = [str(flat / "train" / vid("ft")), str(fv)]

        def fix():
            monkeypatch.setattr(prepare_kinetics, "finish_scan", real_finish)
    saved = (f"; the usable videos probed are saved in {out}/*_check_interrupted.txt.index.npz, and the same "
             f"command probes none of them again")
    args += ["--dataset", f"t600={flat}"]
    assert prepare_kinetics.main(args) == 2
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith(f"error: {failed}") and line.endswith(end + saved)
    assert len(counted_probes) == 6 + 2 * (cause == "undecodable")
    assert sorted(p.name for p in out.glob("*.index.npz")) == saved_now
    if cause == "OSError":  # nothing probed yet (the failing dataset first): the error line alone
        counted_probes.clear()
        assert prepare_kinetics.main(["k722", "--dataset", f"t600={flat}", "--out", str(tmp_path / "other"),
                                      "--check", "--workers", "1", "--dataset", f"t400={first}"]) == 2
        assert capsys.readouterr().err.splitlines()[-1] == f"error: {failed}" and counted_probes == []
    # The cause fixed, the same command probes only the videos not probed (or changed) before.
    fix()
    counted_probes.clear()
    assert prepare_kinetics.main(args) == 0
    assert sorted(counted_probes) == probed_again
    assert len(read_list(out / "k722_train.txt")) == 5 and not list(out.glob("*_check_interrupted*"))


def test_a_dataset_left_without_a_usable_video_by_its_check_says_its_probes_are_kept(tmp_path, counted_probes,
                                                                                     capsys):
    root = _two_class_tree(tmp_path / "t400", train_per_class=1)
    junk = root / "val" / ARM / vid("v0")
    junk.write_bytes(b"\x00not a video" * 50)
    out = tmp_path / "data"
    args = ["lists", "--dataset", f"t400={root}", "--out", str(out), "--check", "--workers", "1"]
    assert prepare_kinetics.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "saved the" not in err  # the check's progress line, then the error line alone
    line = err.splitlines()[-1]
    assert line.startswith(f"error: dataset t400: 1 class folder(s) in '{root / 'val'}' have no usable video ('{ARM}')")
    assert line.endswith(f"--allow-empty-classes; the usable videos probed are saved in "
                         f"{out}/*_check_interrupted.txt.index.npz, and the same command probes none of them again")
    assert len(counted_probes) == 4 and [p.name for p in out.iterdir()] == ["t400_check_interrupted.txt.index.npz"]
    counted_probes.clear()
    assert prepare_kinetics.main(args + ["--allow-empty-classes"]) == 0 and counted_probes == [str(junk)]


def test_a_check_refuses_an_empty_class_folder_before_its_first_probe(tmp_path, counted_probes, capsys):
    # A class folder with no video was refused only after every other video was probed (hours on Kinetics): no
    # probe can give it one, so the refusal comes first, with the same message as without --check.
    root = _two_class_tree(tmp_path / "t400", train_per_class=2)
    shutil.rmtree(root / "val" / PAF)
    (root / "val" / PAF).mkdir()
    out = tmp_path / "data"
    args = ["lists", "--dataset", f"t400={root}", "--out", str(out)]
    refused = (f"error: dataset t400: 1 class folder(s) in '{root / 'val'}' have no usable video ('{PAF}'); fix the "
               f"download or pass --allow-empty-classes")
    assert prepare_kinetics.main(args) == 2 and capsys.readouterr().err.splitlines()[-1] == refused
    assert prepare_kinetics.main(args + ["--check", "--workers", "1"]) == 2
    assert capsys.readouterr().err.splitlines() == [refused]  # no progress line of a check, no "probes saved"
    assert counted_probes == [] and not list(out.glob("*.index.npz"))
    assert prepare_kinetics.main(args + ["--check", "--workers", "1", "--allow-empty-classes"]) == 0
    assert len(counted_probes) == 5 and len(read_list(out / "t400_val.txt")) == 1


@pytest.mark.parametrize("failing", ["a later dataset", "the probed one"])
def test_a_scan_error_whose_probes_cannot_be_saved_says_only_the_error(tmp_path, counted_probes, capsys,
                                                                      monkeypatch, failing):
    from tools.kinetics import scan

    first = _two_class_tree(tmp_path / "t400", train_per_class=1)
    out = tmp_path / "data"

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prepare_kinetics, "save_checked", full_disk)
    monkeypatch.setattr(scan, "save_checked", full_disk)
    args = ["k722", "--dataset", f"t400={first}", "--out", str(out), "--check", "--workers", "1"]
    if failing == "a later dataset":  # its storage fails while it is checked, after the first was probed
        second = _two_class_tree(tmp_path / "t600", train_per_class=1)
        _unreadable_while_checked(monkeypatch, "t600", second / "train")
        args += ["--dataset", f"t600={second}"]
        failed = end = f"{second / 'train'}: Permission denied"
    else:  # its check leaves a class without a usable video (an empty folder is refused before any probe)
        (first / "val" / PAF / vid("v1")).write_bytes(b"\x00not a video" * 50)
        failed = f"dataset t400: 1 class folder(s) in '{first / 'val'}' have no usable video ('{PAF}'); 1 unusable"
        end = "; fix the download or pass --allow-empty-classes"
    assert prepare_kinetics.main(args) == 2
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith(f"error: {failed}") and line.endswith(end) and len(counted_probes) == 4
    assert not list(out.glob("*_check_interrupted*"))


def test_the_lists_labels_mappings_and_reports_are_synced_before_their_rename_and_the_folder_after(tmp_path,
                                                                                                    monkeypatch):
    # They were renamed into place unsynced: a power loss right after the command could leave a list empty or cut
    # under its name, which a training run then read as the whole list.
    out = tmp_path / "data"
    for ds in ("t400", "t700"):
        make_tree(out / ds, K722_TREES[ds])
    events = record_syncs(monkeypatch)
    args = ["k722", "--dataset", f"t400={out / 't400'}", "--dataset", f"t700={out / 't700'}", "--out", str(out)]
    assert prepare_kinetics.main(args) == 0
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    assert {"k722_train.txt", "k722_val.txt", "k722_labels.csv", "k722_to_t400_mapping.npy",
            "k722_report.json"} <= set(files)
    assert sorted(synced_renames(events, str(out))) == [(f, (out / f).stat().st_size) for f in files], events


def test_a_k722_stopped_while_writing_a_class_mapping_leaves_no_half_written_one(tmp_path):
    # The class mappings were written by np.save straight under their names: a stop (or a full disk) in the write
    # of one left it cut short under its name (here empty: opened, nothing written yet), or emptied the whole one
    # an earlier run had written.
    out = tmp_path / "data"
    for ds in ("t400", "t700"):
        make_tree(out / ds, K722_TREES[ds])
    args = ["k722", "--dataset", f"t400={out / 't400'}", "--dataset", f"t700={out / 't700'}", "--out", str(out)]
    script = _stopping_script("numpy.lib.format", "write_array", 1, "SIGTERM")  # in the second mapping's write
    first, second = out / "k722_to_t400_mapping.npy", out / "k722_to_t700_mapping.npy"

    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 4, r.stderr
    stopped_first = first.read_bytes()
    assert not second.exists() and not list(out.glob(".*.tmp"))
    assert prepare_kinetics.main(args) == 0
    assert first.read_bytes() == stopped_first  # the one written before the stop was whole
    whole = second.read_bytes()
    assert len(np.load(second)) == len(read_labels_csv(str(out / "t700_labels.csv")))  # one K722 id a class

    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 4, r.stderr
    assert second.read_bytes() == whole and not list(out.glob(".*.tmp"))  # the earlier run's, untouched


def test_an_unknown_preset_is_one_line_with_no_x264_line_before_it(tmp_path, capfd):
    # x264 printed "x264 [error]: invalid preset 'fastest'" straight to the terminal (past FFmpeg's log level)
    # before the tool's own line.
    write_clip(tmp_path / "t400" / "train" / ARM / vid("a"), t=4)
    assert prepare_kinetics.main(["reencode", "--src", str(tmp_path / "t400"), "--dst", str(tmp_path / "out"),
                                  "--workers", "1", "--no-progress", "--preset", "fastest"]) == 2
    assert capfd.readouterr().err.splitlines() == ["error: --preset 'fastest' is not one of x264's presets: "
                                                   "ultrafast, superfast, veryfast, faster, fast, medium, slow, "
                                                   "slower, veryslow, placebo"]
    assert not (tmp_path / "out").exists()


def test_bad_encoder_settings_fail_once_up_front_naming_the_option(tmp_path, capsys):
    src = tmp_path / "t400"
    for tag in ("a", "b", "c"):
        write_clip(src / "train" / ARM / vid(tag), t=4)
    base = ["reencode", "--src", str(src), "--dst", str(tmp_path / "out"), "--workers", "1", "--no-progress"]
    for extra, named in ((["--preset", "veryfsat"], "--preset 'veryfsat'"), (["--crf", "-5"], "--crf"),
                         (["--crf", "99"], "--crf")):
        assert prepare_kinetics.main(base + extra) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and named in err[0] and extra[1] in err[0], err
        assert not list((tmp_path / "out").rglob("*.mp4"))
    # The check itself, as the library runs it before any worker starts.
    with pytest.raises(KineticsError, match="--crf -5"):
        check_encode_settings(EncodeSettings(crf=-5))


@pytest.mark.parametrize("command", ["lists", "k722", "reencode"])
def test_a_number_of_workers_below_1_is_refused_by_every_subcommand(tmp_path, capsys, command):
    """lists --check and k722 --check ran 0 or -2 workers as 1 without a word; reencode refused them."""
    src = tmp_path / "t400"
    write_clip(src / "train" / ARM / vid("a"), t=4)
    args = (["--src", str(src), "--dst", str(tmp_path / "out")] if command == "reencode" else
            ["--dataset", f"t400={src}", "--out", str(tmp_path / "out"), "--check"])
    assert prepare_kinetics.main([command, *args, "--workers", "0"]) == 2
    assert capsys.readouterr().err == "error: --workers must be >= 1, got 0\n"
    assert not (tmp_path / "out").exists()


def test_a_source_without_videos_is_refused_before_anything_is_written(tmp_path, capsys):
    """It "re-encoded 0 videos" with exit code 0 and wrote an empty report into --dst."""
    src = tmp_path / "lists"
    src.mkdir()
    (src / "train.txt").write_text("a.mp4 0\n")
    assert prepare_kinetics.main(["reencode", "--src", str(src), "--dst", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: no video files under source root {str(src)!r} (extensions .mp4 " \
                                      ".webm .mkv .avi .mov, hidden files and folders left out)\n"
    assert not (tmp_path / "out").exists()


def test_resuming_into_a_dst_made_with_other_settings_is_refused(tmp_path, capsys):
    src, dst = tmp_path / "t400", tmp_path / "out"
    for tag in ("a", "b"):
        write_clip(src / "train" / ARM / vid(tag), t=4)
    base = ["reencode", "--src", str(src), "--dst", str(dst), "--workers", "1", "--no-progress", "--short-side", "32"]
    assert prepare_kinetics.main(base + ["--gop", "4"]) == 0
    (dst / "train" / ARM / vid("b")).unlink()  # one video left to do
    capsys.readouterr()
    assert prepare_kinetics.main(base + ["--gop", "8", "--crf", "30"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--gop 4 before, 8 now" in err[0] and "--crf 23 before, 30 now" in err[0], err
    assert "--allow-other-settings" in err[0] and not (dst / "train" / ARM / vid("b")).exists()
    assert prepare_kinetics.main(base + ["--gop", "8", "--dry-run"]) == 0  # describes, as dry runs do
    assert "[dry-run] the run would stop here: " in capsys.readouterr().out
    # The same settings (other --threads) go on; --allow-other-settings mixes on purpose.
    assert prepare_kinetics.main(base + ["--gop", "4", "--threads", "2"]) == 0
    assert probe_output(str(dst / "train" / ARM / vid("b")))["keyframes"] == [0]
    (dst / "train" / ARM / vid("b")).unlink()
    assert prepare_kinetics.main(base + ["--gop", "2", "--allow-other-settings"]) == 0
    assert probe_output(str(dst / "train" / ARM / vid("b")))["keyframes"] == [0, 2]


def test_the_settings_refusal_names_the_dst_tree_also_with_a_report_dir(tmp_path, capsys):
    # With --report-dir the refusal said "the videos already in <the report folder>", which holds no video.
    src, dst, reports = tmp_path / "t400", tmp_path / "out", tmp_path / "reports"
    for tag in ("a", "b"):
        write_clip(src / "train" / ARM / vid(tag), t=4)
    base = ["reencode", "--src", str(src), "--dst", str(dst), "--workers", "1", "--no-progress", "--short-side", "32",
            "--report-dir", str(reports)]
    assert prepare_kinetics.main(base + ["--gop", "4"]) == 0
    (dst / "train" / ARM / vid("b")).unlink()
    capsys.readouterr()
    assert prepare_kinetics.main(base + ["--gop", "8"]) == 2
    err = capsys.readouterr().err
    assert f"the videos already in {dst} were encoded" in err and f"see {reports / 'reencode_report.json'}" in err


def test_the_settings_guard_knows_every_earlier_runs_settings_not_only_the_last(tmp_path, capsys):
    """The guard read only the last run's settings from the report, which each run replaces: after a run with
    --gop 4 and one with --gop 2 mixed in on purpose, --gop 4 (already in the tree) was refused as "--gop 2 before",
    and --gop 8 was refused naming only --gop 2 although the tree holds --gop 4 videos too."""
    src, dst = tmp_path / "t400", tmp_path / "out"
    for tag in ("a", "b", "c"):
        write_clip(src / "train" / ARM / vid(tag), t=4)
    base = ["reencode", "--src", str(src), "--dst", str(dst), "--workers", "1", "--no-progress", "--short-side", "32"]
    out = dst / "train" / ARM
    assert prepare_kinetics.main(base + ["--gop", "4"]) == 0
    (out / vid("b")).unlink()
    assert prepare_kinetics.main(base + ["--gop", "2", "--allow-other-settings"]) == 0  # mixed on purpose
    report = json.loads((dst / "reencode_report.json").read_text())
    assert [s["gop"] for s in report["settings_used"]] == [4, 2] and report["settings"]["gop"] == 2
    (out / vid("c")).unlink()
    capsys.readouterr()
    assert prepare_kinetics.main(base + ["--gop", "8"]) == 2  # a third encoding: refused, naming both
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "(--gop 4, 2 before, 8 now, see " in err[0] and not (out / vid("c")).exists(), err
    assert prepare_kinetics.main(base + ["--gop", "4"]) == 0  # one the tree holds already: no new mix
    assert probe_output(str(out / vid("c")))["keyframes"] == [0]
    report = json.loads((dst / "reencode_report.json").read_text())
    assert [s["gop"] for s in report["settings_used"]] == [4, 2]  # kept, not replaced by this run's
    # a run that encodes nothing (all done) adds no settings to the tree's
    assert prepare_kinetics.main(base + ["--gop", "8", "--allow-other-settings"]) == 0
    assert [s["gop"] for s in json.loads((dst / "reencode_report.json").read_text())["settings_used"]] == [4, 2]



def test_the_settings_guard_holds_whatever_the_report_dir(tmp_path, capsys):
    """The earlier runs' settings were read only from the report, in --report-dir: a resume given another
    --report-dir, or none, found no report and mixed another encoding into the tree unrefused. The tree keeps its
    own record of them now."""
    src, dst, r1, r2 = tmp_path / "t400", tmp_path / "out", tmp_path / "r1", tmp_path / "r2"
    for tag in ("a", "b"):
        write_clip(src / "train" / ARM / vid(tag), t=4)
    base = ["reencode", "--src", str(src), "--dst", str(dst), "--workers", "1", "--no-progress", "--short-side", "32"]
    out = dst / "train" / ARM
    assert prepare_kinetics.main(base + ["--gop", "4", "--report-dir", str(r1)]) == 0
    assert not (dst / "reencode_report.json").exists()
    (out / vid("b")).unlink()
    capsys.readouterr()
    for where in (["--report-dir", str(r2)], []):
        assert prepare_kinetics.main(base + ["--gop", "8"] + where) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and f"the videos already in {dst} were encoded" in err[0], err
        assert f"(--gop 4 before, 8 now, see {dst / '.reencode_settings.json'})" in err[0], err
        assert not (out / vid("b")).exists()
    # the same settings go on, with either
    assert prepare_kinetics.main(base + ["--gop", "4", "--report-dir", str(r2)]) == 0
    assert probe_output(str(out / vid("b")))["keyframes"] == [0]
    (out / vid("b")).unlink()
    assert prepare_kinetics.main(base + ["--gop", "4"]) == 0
    assert probe_output(str(out / vid("b")))["keyframes"] == [0]
    assert json.loads((dst / ".reencode_settings.json").read_text())["settings_used"][0]["gop"] == 4


def test_the_settings_guard_holds_when_a_report_dir_is_given_only_on_resuming(tmp_path, capsys):
    src, dst, reports = tmp_path / "t400", tmp_path / "out", tmp_path / "reports"
    for tag in ("a", "b", "c"):
        write_clip(src / "train" / ARM / vid(tag), t=4)
    base = ["reencode", "--src", str(src), "--dst", str(dst), "--workers", "1", "--no-progress", "--short-side", "32",
            "--gop", "4"]
    out = dst / "train" / ARM
    assert prepare_kinetics.main(base) == 0
    (out / vid("b")).unlink()
    (out / vid("c")).unlink()
    capsys.readouterr()
    assert prepare_kinetics.main(base + ["--crf", "30", "--report-dir", str(reports)]) == 2
    err = capsys.readouterr().err
    assert f"the videos already in {dst} were encoded" in err and "--crf 23 before, 30 now" in err, err
    assert not (out / vid("b")).exists() and not reports.exists()
    assert prepare_kinetics.main(base + ["--report-dir", str(reports)]) == 0  # the same settings go on
    assert probe_output(str(out / vid("b")))["keyframes"] == [0]
    # a mix made on purpose, reported elsewhere, is known to a run that gives no --report-dir
    (out / vid("c")).unlink()
    assert prepare_kinetics.main(base[:-1] + ["2", "--report-dir", str(reports), "--allow-other-settings"]) == 0
    (out / vid("a")).unlink()
    assert prepare_kinetics.main(base[:-1] + ["2"]) == 0
    assert probe_output(str(out / vid("a")))["keyframes"] == [0, 2]
    (out / vid("a")).unlink()
    capsys.readouterr()
    assert prepare_kinetics.main(base[:-1] + ["8"]) == 2
    assert "(--gop 4, 2 before, 8 now, see " in capsys.readouterr().err


def test_lists_of_a_reencoded_tree_leave_its_settings_record_out(tmp_path):
    # The record lies at the root of --dst: a split re-encoded on its own has it in its split folder.
    src, dst = tmp_path / "t400", tmp_path / "data" / "t400"
    write_clip(src / "train" / ARM / vid("a"), t=4)
    write_clip(src / "val" / ARM / vid("b"), t=4)
    settings = EncodeSettings(short_side=32, gop=4)
    for split in ("train", "val"):
        reencode_tree(str(src / split), str(dst / split), settings, workers=1, progress=False,
                      report_dir=str(tmp_path / "reports" / split), log=lambda s: None)  # (else ignored entries)
        assert (dst / split / ".reencode_settings.json").is_file()
    scan = scan_dataset("t400", str(dst))
    assert scan.classes == [ARM] and scan.ignored == [] and scan.skipped == []
    assert [os.path.basename(v.path) for s in ("train", "val") for v in scan.videos[s]] == [vid("a"), vid("b")]
    prepare_lists([scan], str(tmp_path / "data"), log=lambda s: None)
    assert read_list(tmp_path / "data" / "t400_train.txt") == [(f"t400/train/{ARM}/{vid('a')}", 0)]
    assert read_list(tmp_path / "data" / "t400_val.txt") == [(f"t400/val/{ARM}/{vid('b')}", 0)]


def test_a_source_replaced_after_its_output_is_encoded_again(tmp_path, monkeypatch):
    # An output used to count as done whatever happened to its source: a video downloaded again (a longer or fixed
    # copy) kept its old encode. Now an output older than its source is encoded again, and counted as such.
    from tools.kinetics import reencode as reencode_mod

    src, dst = tmp_path / "t400", tmp_path / "out"
    for tag in ("a", "b", "c"):
        write_clip(src / "train" / ARM / vid(tag), t=4)
    settings = EncodeSettings(short_side=32, gop=4)
    assert reencode_tree(str(src), str(dst), settings, workers=1, progress=False, log=lambda s: None)["done"] == 3
    for tag in ("b", "c"):  # new downloads of b and c, with more frames, written after the outputs
        write_clip(src / "train" / ARM / vid(tag), t=6, seed=1)
        earlier = (src / "train" / ARM / vid(tag)).stat().st_mtime - 5  # the old output: from before the download
        os.utime(dst / "train" / ARM / vid(tag), (earlier, earlier))
    lines = []
    rep = reencode_tree(str(src), str(dst), settings, dry_run=True, log=lines.append)
    assert "would re-encode 2 of 3" in lines[0] and "2 encoded again as their source changed" in lines[0]
    assert (rep["skipped_existing"], rep["source_changed"]) == (1, 2)
    # Stopped during c: b is encoded again, c's old output (still on disk) is not counted as done.
    real_job, jobs = reencode_mod._reencode_job, []

    def interrupted_job(args):
        if len(jobs) == 1:
            raise KeyboardInterrupt
        jobs.append(args[0])
        return real_job(args)

    monkeypatch.setattr(reencode_mod, "_reencode_job", interrupted_job)
    with pytest.raises(KeyboardInterrupt):  # no time limit: one worker's encodes run in this process, patched here
        reencode_tree(str(src), str(dst), settings, workers=1, progress=False, log=lambda s: None, time_limit_s=0)
    report = json.loads((dst / "reencode_report.json").read_text())
    assert (report["done"], report["source_changed"], report["interrupted"]) == (1, 2, True)
    assert probe_output(str(dst / "train" / ARM / vid("b")))["frames"] == 6
    assert probe_output(str(dst / "train" / ARM / vid("c")))["frames"] == 4
    monkeypatch.setattr(reencode_mod, "_reencode_job", real_job)
    lines = []
    again = reencode_tree(str(src), str(dst), settings, workers=1, progress=False, log=lines.append)
    assert (again["skipped_existing"], again["source_changed"], again["done"]) == (2, 1, 1)
    assert probe_output(str(dst / "train" / ARM / vid("c")))["frames"] == 6
    assert "skipped 2 already done; 1 encoded again as their source changed since their output was written" in lines[-1]
    md = (dst / "reencode_report.md").read_text()
    assert "- outputs whose source changed since (another size or mtime), encoded again: 1" in md
    again = reencode_tree(str(src), str(dst), settings, workers=1, progress=False, log=lambda s: None)
    assert (again["skipped_existing"], again["source_changed"], again["done"]) == (3, 0, 0)


def _two_clips_encoded(tmp_path: Path) -> tuple[Path, Path, EncodeSettings]:
    """A tree of two clips (a, b) re-encoded once: its source, its --dst and the settings used."""
    src, dst = tmp_path / "t400", tmp_path / "out"
    for tag in ("a", "b"):
        write_clip(src / "train" / ARM / vid(tag), t=4)
    settings = EncodeSettings(short_side=32, gop=4)
    assert reencode_tree(str(src), str(dst), settings, workers=1, progress=False, log=lambda s: None)["done"] == 2
    return src, dst, settings


def test_a_source_downloaded_again_with_an_older_mtime_is_encoded_again(tmp_path):
    # A downloader that sets a file's mtime to the video's upload date (yt-dlp without --no-mtime) made a fresh
    # download look older than its output, which counted as done: only "source newer than output" was a change.
    # Now any difference of size or mtime from what the source had when its output was written is one.
    src, dst, settings = _two_clips_encoded(tmp_path)
    again = src / "train" / ARM / vid("b")
    write_clip(again, t=6, seed=1)  # downloaded again: another size...
    uploaded = (dst / "train" / ARM / vid("b")).stat().st_mtime - 86400 * 365
    os.utime(again, (uploaded, uploaded))  # ...and the upload date as its mtime, a year before the output
    rep = reencode_tree(str(src), str(dst), settings, workers=1, progress=False, log=lambda s: None)
    assert (rep["skipped_existing"], rep["source_changed"], rep["done"]) == (1, 1, 1)
    assert probe_output(str(dst / "train" / ARM / vid("b")))["frames"] == 6
    rep = reencode_tree(str(src), str(dst), settings, workers=1, progress=False, log=lambda s: None)
    assert (rep["skipped_existing"], rep["source_changed"], rep["done"]) == (2, 0, 0)
    assert len((dst / ".reencode_sources.jsonl").read_text().splitlines()) == 2  # b's first line dropped
    # the same file again, only its mtime set back (a copy that kept the upload date): changed too
    os.utime(again, (uploaded - 60, uploaded - 60))
    rep = reencode_tree(str(src), str(dst), settings, dry_run=True, log=lambda s: None)
    assert (rep["skipped_existing"], rep["source_changed"]) == (1, 1)
    assert (dst / ".reencode_sources.jsonl").is_file()  # hidden (the lists pass it over), at the root of --dst


# A run killed (SIGKILL, the machine going down) after an output got its name but before the run added its line to
# the tree's record of sources: what the next run finds of it.
_SMALL_RUN = ["--short-side", "32", "--gop", "4", "--workers", "1", "--no-progress", "--time-limit", "0"]


def _killed_before_the_line(src: Path, dst: Path, before: int) -> None:
    """Re-encode ``src`` into ``dst``, killed outright as it is about to add its ``before + 1``-th video's line to
    the record (that video's output finished under its name)."""
    script = _stopping_script("tools.kinetics.reencode", "append_source", before, "SIGKILL")
    r = subprocess.run([sys.executable, "-c", script, "reencode", "--src", str(src), "--dst", str(dst)] + _SMALL_RUN,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr


def _recorded(dst: Path) -> dict[str, list[int]]:
    """The tree's record of sources: its last line per output."""
    lines = [json.loads(line) for line in (dst / ".reencode_sources.jsonl").read_text().splitlines()]
    return {rel: [size, mtime_ns] for rel, size, mtime_ns in lines}


def _source_of(path: Path) -> list[int]:
    return [path.stat().st_size, path.stat().st_mtime_ns]


def _b_left_without_its_line(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A tree of two clips (a, b) re-encoded, killed before b's line: its source, its --dst and b's source."""
    src, dst = tmp_path / "t400", tmp_path / "out"
    for tag in ("a", "b"):
        write_clip(src / "train" / ARM / vid(tag), t=4)
    _killed_before_the_line(src, dst, 1)
    return src, dst, src / "train" / ARM / vid("b")


def _resumed(src: Path, dst: Path) -> dict:
    """The report of the run after: the same command, which must succeed."""
    assert prepare_kinetics.main(["reencode", "--src", str(src), "--dst", str(dst)] + _SMALL_RUN) == 0
    return json.loads((dst / "reencode_report.json").read_text())


def test_an_output_left_without_its_line_is_kept_and_gets_it(tmp_path):
    # Such an output counted as done (its source not newer) but never got its line, on any later run: a later new
    # download of its source that keeps the upload date as mtime was never seen. Now it is checked and recorded.
    src, dst, b = _b_left_without_its_line(tmp_path)
    assert (dst / "train" / ARM / vid("b")).is_file() and list(_recorded(dst)) == [f"train/{ARM}/{vid('a')}"]
    report = _resumed(src, dst)
    assert (report["skipped_existing"], report["done"]) == (2, 0)
    assert _recorded(dst)[f"train/{ARM}/{vid('b')}"] == _source_of(b)


def test_a_source_downloaded_again_after_its_output_was_left_without_its_line_is_encoded_again(tmp_path):
    # Without its line, an output counted as done unless its source was newer: a new download that keeps the upload
    # date as its mtime kept the old encode. The output notes the source it was written from, which tells.
    src, dst, b = _b_left_without_its_line(tmp_path)
    write_clip(b, t=6, seed=1)
    uploaded = (dst / "train" / ARM / vid("b")).stat().st_mtime - 86400 * 365
    os.utime(b, (uploaded, uploaded))
    report = _resumed(src, dst)
    assert (report["skipped_existing"], report["done"], report["source_changed"]) == (1, 1, 1)
    assert probe_output(str(dst / "train" / ARM / vid("b")))["frames"] == 6
    assert _recorded(dst)[f"train/{ARM}/{vid('b')}"] == _source_of(b)


@pytest.mark.parametrize("share", [0.6, 0.99])
def test_a_partial_output_without_its_line_is_encoded_again(tmp_path, share):
    # An output cut short under its name (renamed before its data reached the disk, by a version that did not sync
    # first; a copy stopped midway) counted as done when its source was not newer: now one without its line is
    # probed, also one cut in its last frame, whose frames all still demux.
    src, dst, _ = _b_left_without_its_line(tmp_path)
    out = dst / "train" / ARM / vid("b")
    _truncate(out, share)
    report = _resumed(src, dst)
    assert (report["skipped_existing"], report["done"]) == (1, 1)
    assert report["source_changed"] == 0  # its source is the one it was written from
    assert probe_output(str(out))["frames"] == 4 and out.stat().st_size > 0


def test_an_output_encoded_again_but_left_with_its_old_line_is_not_encoded_once_more(tmp_path):
    # A source downloaded again, its output encoded again, the run killed before the new line: the old line (the old
    # download's) made the next run encode the video a third time. The output's note names the source it is of.
    src, dst, settings = _two_clips_encoded(tmp_path)
    b = src / "train" / ARM / vid("b")
    old_line = _recorded(dst)[f"train/{ARM}/{vid('b')}"]
    write_clip(b, t=6, seed=1)
    _killed_before_the_line(src, dst, 0)
    assert _recorded(dst)[f"train/{ARM}/{vid('b')}"] == old_line
    assert probe_output(str(dst / "train" / ARM / vid("b")))["frames"] == 6
    rep = reencode_tree(str(src), str(dst), settings, workers=1, progress=False, log=lambda s: None)
    assert (rep["skipped_existing"], rep["done"], rep["source_changed"]) == (2, 0, 0)
    assert _recorded(dst)[f"train/{ARM}/{vid('b')}"] == _source_of(b)
    # and the source changed after that is still seen
    write_clip(b, t=5, seed=2)
    rep = reencode_tree(str(src), str(dst), settings, workers=1, progress=False, log=lambda s: None)
    assert (rep["skipped_existing"], rep["done"], rep["source_changed"]) == (1, 1, 1)


def test_ctrl_c_after_an_unreported_encode_of_a_changed_source_counts_and_records_it(tmp_path, monkeypatch):
    # Stopped after b's new encode was written but before its result came back, the run counted it as not done
    # (the record's line was the old download's), and the next run encoded it again.
    from tools.kinetics import reencode as reencode_mod

    src, dst, settings = _two_clips_encoded(tmp_path)
    b = src / "train" / ARM / vid("b")
    write_clip(b, t=6, seed=1)
    real_job = reencode_mod._reencode_job

    def stopped_after_the_encode(args):
        real_job(args)
        raise KeyboardInterrupt  # Ctrl-C between the output and its result

    monkeypatch.setattr(reencode_mod, "_reencode_job", stopped_after_the_encode)
    with pytest.raises(KeyboardInterrupt):  # no time limit: one worker's encodes run in this process, patched here
        reencode_tree(str(src), str(dst), settings, workers=1, progress=False, log=lambda s: None, time_limit_s=0)
    report = json.loads((dst / "reencode_report.json").read_text())
    assert (report["done"], report["frames"], report["interrupted"]) == (1, 6, True)
    assert _recorded(dst)[f"train/{ARM}/{vid('b')}"] == _source_of(b)
    monkeypatch.setattr(reencode_mod, "_reencode_job", real_job)
    rep = reencode_tree(str(src), str(dst), settings, workers=1, progress=False, log=lambda s: None)
    assert (rep["skipped_existing"], rep["done"]) == (2, 0)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, whose every write fails with ENOSPC")
def test_a_full_output_disk_stops_the_reencode_at_once(tmp_path, capsys):
    # Every video after the disk filled failed the same way, each decoded first, and was reported as a failed
    # video (exit code 1): on a large tree hours of work and a report of failures. Now the first write refused
    # for want of room stops the run, with one line, the finished videos kept and the report written.
    src, dst = tmp_path / "t400", tmp_path / "out"
    for tag in ("a", "b", "c"):
        write_clip(src / "train" / ARM / vid(tag), t=4)
    part = dst / "train" / ARM / (vid("b") + ".part")
    part.parent.mkdir(parents=True)
    part.symlink_to("/dev/full")  # b's output is written there: the kernel's own "No space left on device"
    assert prepare_kinetics.main(["reencode", "--src", str(src), "--dst", str(dst), "--workers", "1",
                                  "--no-progress", "--short-side", "32", "--gop", "4"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {part}: No space left on device: re-encoding stopped"), err
    assert "the 1 videos finished are kept" in err[0]
    assert sorted(p.name for p in (dst / "train" / ARM).iterdir()) == [vid("a")]  # c was not started
    report = json.loads((dst / "reencode_report.json").read_text())
    assert (report["done"], report["failed"], report["interrupted"]) == (1, [], True)
    assert json.loads((dst / ".reencode_settings.json").read_text())["settings_used"] == report["settings_used"]
    # With room again, the same command goes on with the rest.
    assert prepare_kinetics.main(["reencode", "--src", str(src), "--dst", str(dst), "--workers", "1",
                                  "--no-progress", "--short-side", "32", "--gop", "4"]) == 0
    assert sorted(p.name for p in (dst / "train" / ARM).iterdir()) == [vid(t) for t in "abc"]


def test_reencode_follows_folder_links_but_never_around_a_loop(tmp_path):
    # A link back up (latest -> ..) was walked ~40 levels deep (until the path held too many links), each video
    # planned, and encoded, once per level into nested output folders (two folders linking to each other: a
    # number of paths growing exponentially with the depth, a plan that never ended).
    src = tmp_path / "src"
    write_clip(src / "train" / ARM / vid("a"), t=4)
    write_clip(tmp_path / "elsewhere" / vid("b"), t=4)
    (src / "train" / ARM / "up").symlink_to("..")                       # a loop through the parent
    (src / "train" / ACT).symlink_to(tmp_path / "elsewhere")            # a linked class folder: followed
    (src / "val").symlink_to(tmp_path / "elsewhere")                    # the same folder linked twice: both kept
    pairs = plan_reencode(str(src), str(tmp_path / "dst"))
    assert [(os.path.relpath(s, src), os.path.relpath(d, tmp_path / "dst")) for s, d in pairs] == [
        (f"train/{ACT}/{vid('b')}",) * 2, (f"train/{ARM}/{vid('a')}",) * 2, (f"val/{vid('b')}",) * 2]
    # Two folders linking to each other: each entered once per path into it.
    (tmp_path / "elsewhere" / "back").symlink_to(src / "train")
    pairs = plan_reencode(str(src), str(tmp_path / "dst"))
    assert [os.path.relpath(s, src) for s, _ in pairs] == [
        f"train/{ACT}/{vid('b')}", f"train/{ARM}/{vid('a')}", f"val/{vid('b')}", f"val/back/{ARM}/{vid('a')}"]


def test_reencode_leaves_out_a_link_under_src_into_dst(tmp_path, capsys):
    # A link in --src to --dst (h264 -> ../k400_h264) had the outputs planned as sources, into a folder of --dst that
    # the next run planned again: one nested copy more of the tree on each run.
    src, dst = tmp_path / "k400", tmp_path / "k400_h264"
    write_clip(src / "train" / ARM / vid("a"), t=4)
    dst.mkdir()
    (src / "h264").symlink_to(dst)
    for _ in range(2):
        assert prepare_kinetics.main(["reencode", "--src", str(src), "--dst", str(dst)] + _SMALL_RUN) == 0
    assert [p.relative_to(dst).as_posix() for p in dst.rglob("*.mp4")] == [f"train/{ARM}/{vid('a')}"]
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 2 and f"1 symbolic link under {src} into {dst} (--dst), e.g. {src / 'h264'}" in warnings[0]


def test_reencode_names_a_folder_link_whose_target_is_gone(tmp_path, capsys):
    # A class folder linked to a disk not mounted was passed over without a word: the re-encoded tree lacked the
    # class, and the lists made from it numbered every later class one lower than the source's lists.
    src = tmp_path / "src"
    write_clip(src / "train" / ARM / vid("a"), t=4)
    (src / "train" / ABS).symlink_to(tmp_path / "unmounted" / ABS, target_is_directory=True)
    (src / "train" / ".hidden").symlink_to(tmp_path / "unmounted" / "hidden")  # hidden: left out, as ever
    pairs = plan_reencode(str(src), str(tmp_path / "dst"))
    assert [os.path.relpath(s, src) for s, _ in pairs] == [f"train/{ARM}/{vid('a')}"]
    assert capsys.readouterr().err == (
        f"warning: reencode: 1 symbolic link under {src} whose target is gone (or a link loop), e.g. "
        f"{src / 'train' / ABS} -> {tmp_path / 'unmounted' / ABS}: were one a class folder, none of its videos is "
        f"re-encoded and {tmp_path / 'dst'} lacks the class; mount or fix the targets and run again\n")


def test_reencode_failures_named_in_one_line_each_whatever_their_file_names(tmp_path, capsys):
    # A failing source whose name is not UTF-8 made the markdown report a UnicodeEncodeError traceback (its JSON
    # twin was written), and one whose name holds a line break printed its `failed:` line in two pieces.
    src, dst = tmp_path / "src", tmp_path / "out"
    write_clip(src / ARM / vid("a"), t=4)
    not_utf8, two_lines = src / ARM / os.fsdecode(b"bad\xff.mp4"), src / ARM / "new\nline.mp4"
    not_utf8.write_bytes(b"not a video")
    two_lines.write_bytes(b"not a video")
    assert prepare_kinetics.main(["reencode", "--src", str(src), "--dst", str(dst), "--workers", "1",
                                  "--no-progress", "--short-side", "32", "--gop", "4"]) == 1
    failed = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("failed: ")]
    assert [ln.split(": ")[1] for ln in failed] == [f"{src / ARM}/bad\\xff.mp4", f"{src / ARM}/new\\nline.mp4"]
    md = (dst / "reencode_report.md").read_text(encoding="utf-8")
    assert f"- `{src / ARM}/bad\\xff.mp4`: " in md and f"- `{src / ARM}/new\\nline.mp4`: " in md
    assert json.loads((dst / "reencode_report.json").read_text())["failed"][0]["src"] == str(not_utf8)


def test_a_source_that_is_no_video_is_named_once_with_the_reason(tmp_path, capsys):
    # It was "<path>: cannot open: InvalidDataError: [Errno 1094995529] Invalid data found when processing input:
    # '<path>'", the report's line then naming the path a third time; an empty file said the same.
    src, dst = tmp_path / "src", tmp_path / "out"
    write_clip(src / ARM / vid("a"), t=4)
    (src / ARM / vid("b")).write_bytes(b"")
    (src / ARM / vid("c")).write_bytes(b"not a video")
    (src / ARM / vid("d")).symlink_to(tmp_path / "gone.mp4")
    assert prepare_kinetics.main(["reencode", "--src", str(src), "--dst", str(dst), "--workers", "1",
                                  "--no-progress", "--short-side", "32", "--gop", "4"]) == 1
    failed = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("failed: ")]
    unreadable = "not a readable video (Invalid data found when processing input)"
    assert failed == [f"failed: {src / ARM / vid('b')}: not a readable video (empty file, 0 bytes)",
                      f"failed: {src / ARM / vid('c')}: {unreadable}",
                      f"failed: {src / ARM / vid('d')}: the source is a symbolic link to "
                      f"{str(tmp_path / 'gone.mp4')!r}, {GONE}"]
    md = (dst / "reencode_report.md").read_text(encoding="utf-8")
    assert f"- `{src / ARM / vid('b')}`: not a readable video (empty file, 0 bytes)\n" in md
    assert md.count(vid("c")) == 1


def test_a_source_deleted_after_the_plan_listed_it_is_a_failure_counted_on_its_own_line(tmp_path, capsys,
                                                                                       monkeypatch):
    # A source deleted or moved while the run went on (a download cleaned up, a class folder moved) failed as "not a
    # readable video (No such file or directory)", as a damaged file or a failing disk does: the report now says it
    # vanished since listed, on a line of its own, and still counts it among the failed.
    from tools.kinetics import reencode

    src, dst = tmp_path / "src", tmp_path / "out"
    for tag in ("a", "b"):
        write_clip(src / ARM / vid(tag), t=4)
    (src / ARM / vid("c")).write_bytes(b"not a video")
    gone = src / ARM / vid("b")
    plan = reencode.plan_reencode

    def plan_then_delete(*args, **kw):
        pairs = plan(*args, **kw)
        gone.unlink()
        return pairs

    monkeypatch.setattr(reencode, "plan_reencode", plan_then_delete)
    assert prepare_kinetics.main(["reencode", "--src", str(src), "--dst", str(dst)] + _SMALL_RUN) == 1
    out, err = capsys.readouterr()
    assert [ln for ln in err.splitlines() if ln.startswith("failed: ")] == [
        f"failed: {gone}: vanished since listed: deleted or moved after the run listed it",
        f"failed: {src / ARM / vid('c')}: not a readable video (Invalid data found when processing input)"]
    assert (f"skipped 0 already done; 2 failed (1 vanished since listed) (see {dst / 'reencode_report.md'})"
            in out)
    md = (dst / "reencode_report.md").read_text(encoding="utf-8").splitlines()
    assert "- videos: 3, already done (skipped): 0, encoded now: 1, failed: 2" in md
    assert "- vanished since listed (deleted or moved during the run; among the failed): 1" in md
    assert f"- `{gone}`: vanished since listed: deleted or moved after the run listed it" in md
    report = json.loads((dst / "reencode_report.json").read_text())
    assert (report["vanished"], len(report["failed"]), report["done"]) == (1, 2, 1)
    assert [p.name for p in dst.rglob("*.mp4")] == [vid("a")]


def _refused_while_each_runs(capsys, dst: Path, cases: list[tuple[Path, list[str], str]]) -> None:
    """Each ``(running, command, where)``: with the lock of a run into ``running`` held, ``command`` is refused with
    one error line naming that folder and ``where`` it is, and writes no output into ``dst``."""
    from evautil.files import hold_lock

    for running, command, where in cases:
        with hold_lock(str(running / ".reencode.lock")):  # as the run into it does
            assert prepare_kinetics.main(command) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(
            f"error: another re-encode is running into {running} (it holds .reencode.lock there), {where}: "), err
        assert not list(dst.rglob("*.mp4"))


def test_a_reencode_into_a_folder_of_a_running_one_or_holding_it_is_refused(tmp_path, capsys):
    # A split re-encoded into the split's folder of a tree being re-encoded (or the other way round) was not
    # refused: both wrote the same files, and each removed the other's partial outputs as stale, failing a video.
    src, dst = tmp_path / "t400", tmp_path / "out"
    write_clip(src / "train" / ARM / vid("a"), t=4)
    whole = ["reencode", "--src", str(src), "--dst", str(dst)] + _SMALL_RUN
    split = ["reencode", "--src", str(src / "train"), "--dst", str(dst / "train")] + _SMALL_RUN
    _refused_while_each_runs(capsys, dst, [(dst, split, f"a folder that holds {dst / 'train'}"),
                                           (dst / "train", whole, f"a folder of {dst}")])
    assert prepare_kinetics.main(whole) == 0 and prepare_kinetics.main(split) == 0  # one after the other: both go on
    assert [p.relative_to(dst).as_posix() for p in dst.rglob("*.mp4")] == [f"train/{ARM}/{vid('a')}"]


def test_a_reencode_into_any_folder_under_a_running_ones_dst_or_holding_it_is_refused(tmp_path, capsys):
    # Only the folders of --dst that mirror source folders were looked at: a run into another folder of a running
    # --dst (a trial into out/trial/h264) went ahead, and the outer run removed the inner one's partial outputs.
    src, dst = tmp_path / "t400", tmp_path / "out"
    write_clip(src / "train" / ARM / vid("a"), t=4)
    inner = dst / "trial" / "h264"
    part = inner / ARM / (vid("b") + ".part")  # the inner run's encode under way
    part.parent.mkdir(parents=True)
    part.write_bytes(b"half an encode")
    whole = ["reencode", "--src", str(src), "--dst", str(dst)] + _SMALL_RUN
    trial = ["reencode", "--src", str(src / "train"), "--dst", str(inner)] + _SMALL_RUN
    _refused_while_each_runs(capsys, dst, [(inner, whole, f"a folder of {dst}"),
                                           (dst, trial, f"a folder that holds {inner}")])
    assert part.read_bytes() == b"half an encode"


def test_a_class_whose_every_source_fails_leaves_no_empty_folder_in_dst(tmp_path, monkeypatch, capsys):
    # Each output's folder was made before its source was opened: a class whose every source failed stayed in --dst
    # as an empty folder, an empty class to the lists of that tree. A folder that was there before stays.
    import tools.kinetics.encode as kin

    src, dst = tmp_path / "t400", tmp_path / "out"
    write_clip(src / "train" / ARM / vid("a"), t=4)
    (src / "train" / PAF).mkdir(parents=True)
    (src / "train" / PAF / vid("b")).write_bytes(b"not a video")  # fails as it is opened
    write_clip(src / "val" / YOGA / vid("c"), t=4)  # fails once encoded: its output does not verify
    (src / "train" / "kept").mkdir()
    (src / "train" / "kept" / vid("d")).write_bytes(b"not a video")
    (dst / "train" / "kept").mkdir(parents=True)  # the user's, empty
    real_count = kin.count_frames
    monkeypatch.setattr(kin, "count_frames", lambda path: 0 if YOGA in path else real_count(path))
    assert prepare_kinetics.main(["reencode", "--src", str(src), "--dst", str(dst)] + _SMALL_RUN) == 1
    assert len([ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("failed: ")]) == 3
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_dir()) == [
        "train", f"train/{ARM}", "train/kept"]
    assert [p.relative_to(dst).as_posix() for p in dst.rglob("*.mp4")] == [f"train/{ARM}/{vid('a')}"]


def test_a_source_cut_short_is_one_warning_line_naming_the_count_and_the_report(tmp_path, capsys):
    # A download stopped part way still decodes, to fewer frames: it was re-encoded into an output as short, whole
    # to the lists' --check, and said only in the report (a WebM or MKV, with no frame count in its header, not even
    # there); the run's lines said nothing of it.
    src, dst = tmp_path / "t400", tmp_path / "out"
    write_clip(src / "train" / ARM / vid("a"), t=8)
    cut_mkv = write_clip(src / "train" / ARM / "bbbbbbbbbbb_000010_000020.mkv", t=50, codec="h264")
    cut_mp4 = write_clip(src / "train" / ARM / vid("c"), t=30, codec="mpeg4")
    _truncate(cut_mkv, 0.5)
    _truncate(cut_mp4)
    assert prepare_kinetics.main(["reencode", "--src", str(src), "--dst", str(dst)] + _SMALL_RUN) == 0
    out, err = capsys.readouterr()
    assert out.startswith("re-encoded 3 videos")
    warned = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert len(warned) == 1 and warned[0].startswith(
        f"warning: reencode: 2 videos re-encoded with a warning, e.g. {cut_mkv}: container header says 2.00 s, "
        f"decoded "), warned
    assert warned[0].endswith(f"; each is named in {dst / 'reencode_report.md'}")
    report = json.loads((dst / "reencode_report.json").read_text())
    assert [(os.path.basename(w["src"]), w["warning"].split(",")[0]) for w in report["warnings"]] == [
        ("bbbbbbbbbbb_000010_000020.mkv", "container header says 2.00 s"),
        (vid("c"), "container header says 30 frames")]
    assert f"- `{cut_mkv}`: container header says 2.00 s, decoded " in (dst / "reencode_report.md").read_text()


def test_a_second_reencode_into_the_same_dst_is_refused_while_one_runs(tmp_path, capsys):
    # Two runs into one --dst (a command started twice, a job requeued while the first still ran) wrote the same
    # .part files at once and renamed each other's half-written files into place: 7 of 8 outputs did not decode,
    # and every resume skipped them as done.
    from evautil.files import hold_lock

    src, dst = tmp_path / "t400", tmp_path / "out"
    write_clip(src / "train" / ARM / vid("a"), t=4)
    args = ["reencode", "--src", str(src), "--dst", str(dst), "--workers", "1", "--no-progress", "--short-side", "32"]
    other = hold_lock(str(dst / ".reencode.lock"))  # the run under way
    assert other is not None
    try:
        assert prepare_kinetics.main(args) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: another re-encode into {dst} is running"), err
        assert not list(dst.rglob("*.mp4*")) and not (dst / "reencode_report.json").exists()
        assert prepare_kinetics.main(args + ["--dry-run"]) == 0  # it writes nothing: no need to wait
        assert "[dry-run] would re-encode 1 of 1 videos" in capsys.readouterr().out
    finally:
        other.close()
    assert prepare_kinetics.main(args) == 0  # once the other run has ended
    assert probe_output(str(dst / "train" / ARM / vid("a")))["frames"] == 4


_PAUSING_REENCODE = """
import sys

from tests import pausing_jobs
from tools import prepare_kinetics
from tools.kinetics import reencode

if __name__ == "__main__":
    reencode._reencode_job = pausing_jobs.pausing_reencode_job  # the workers get it by name
    sys.exit(prepare_kinetics.main(sys.argv[1:]))
"""


def _until(holds, what: str, limit_s: float = 120.0) -> None:
    """Wait for ``holds()`` (a test that never gets there fails, naming ``what``, instead of hanging)."""
    import time

    deadline = time.monotonic() + limit_s
    while not holds():
        assert time.monotonic() < deadline, f"no {what} within {limit_s:g} s"
        time.sleep(0.05)


def _kill(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_a_reencode_started_again_at_once_waits_for_the_workers_of_the_one_killed(tmp_path):
    """A worker ends only once it sees its main process gone (every 0.5 s, later while its encode holds the
    interpreter): a re-encode killed outright and started again at once began encoding the video a dying worker was
    finishing, into the same .part file; the dying worker then renamed that half-written file into place, where
    every resume skipped it as done."""
    from dali_pipelines.pyav_encode import write_video
    from tests.conftest import child_env
    from tests.pausing_jobs import PAUSE_AT, PAUSE_DIR

    src, dst = tmp_path / "t400", tmp_path / "out"
    (src / ARM).mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 256, (8, 240, 320, 3), dtype=np.uint8)  # outputs of many bytes
    write_video(str(src / ARM / vid("a")), noise, codec="h264", fps=25)
    (tmp_path / "run.py").write_text(_PAUSING_REENCODE)
    cmd = [sys.executable, str(tmp_path / "run.py"), "reencode", "--src", str(src), "--dst", str(dst),
           "--short-side", "240", "--workers", "2", "--no-progress"]
    first, second = tmp_path / "first", tmp_path / "second"
    runs, workers = [], []  # killed whatever happens: none of them ends by itself

    def start(pause_at: str, folder: Path) -> subprocess.Popen:
        folder.mkdir()
        with open(folder / "stderr", "w") as err:
            runs.append(subprocess.Popen(cmd, env=child_env(**{PAUSE_AT: pause_at, PAUSE_DIR: str(folder)}),
                                         stdout=subprocess.DEVNULL, stderr=err))
        return runs[-1]

    def paused(folder: Path) -> None:
        _until(lambda: (folder / "paused").exists(), f"stop of the encode of the {folder.name} run")
        workers.append(int((folder / "paused").read_text()))

    waits = f"reencode: waiting for the workers of the re-encode into {dst} that was stopped"
    try:
        run = start("renaming", first)  # the killed run: its worker stops before renaming its output
        paused(first)
        run.kill()
        assert run.wait() == -9
        again = start("writing", second)  # started again at once: its worker stops halfway through
        _until(lambda: (second / "paused").exists() or waits in (second / "stderr").read_text(),
               "encode nor wait of the second run")
        (first / "go").touch()  # the dying worker goes on: its output renamed into place
        _until(lambda: (dst / ARM / vid("a")).exists(), "output renamed by the first run's worker")
        paused(second)
        again.kill()  # the second run killed halfway through its encode too
        assert again.wait() == -9
    finally:
        for p in runs:
            p.kill()
            p.wait()
        for pid in workers:
            _kill(pid)
    r = subprocess.run(cmd[:1] + [str(REPO / "tools" / "prepare_kinetics.py")] + cmd[2:], env=child_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # the video under its name is whole: all its 8 frames decode
    assert probe_output(str(dst / ARM / vid("a")))["frames"] == 8
    assert waits in (second / "stderr").read_text()  # the second run said why it waited


def test_a_reencode_gives_up_on_workers_of_a_stopped_run_that_do_not_end(tmp_path, capsys, monkeypatch):
    import fcntl

    from tools.kinetics import dst_ownership

    src, dst = tmp_path / "t400", tmp_path / "out"
    write_clip(src / ARM / vid("a"), t=4)
    args = ["reencode", "--src", str(src), "--dst", str(dst), "--workers", "1", "--no-progress", "--short-side", "32"]
    dst.mkdir()
    monkeypatch.setattr(dst_ownership, "STOPPED_ENCODES_WAIT_S", 0.3)
    with open(dst / ".reencode.encodes.lock", "a") as stuck:  # an encode of a stopped run that does not end
        fcntl.flock(stuck, fcntl.LOCK_SH)
        assert prepare_kinetics.main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"reencode: waiting for the workers of the re-encode into {dst} that was stopped before this one "
                   "to end (they may still be writing there)",
                   f"error: the workers of a re-encode into {dst} that was stopped still hold "
                   f"{dst / '.reencode.encodes.lock'} after 0.3 s: end them (`fuser {dst / '.reencode.encodes.lock'}` "
                   "names them), then run the same command again"]
    assert not (dst / ARM).exists()
    assert prepare_kinetics.main(args) == 0  # once they have ended
    assert probe_output(str(dst / ARM / vid("a")))["frames"] == 4


def test_an_encode_of_a_run_whose_tree_another_run_took_over_writes_nothing(tmp_path):
    # A worker of a stopped run can take one more video from its queue after the next run has taken the tree over
    # (which waits for the encodes under way only): it leaves the video, and the .part file, to that run.
    from tools.kinetics.reencode import _reencode_job

    src, dst = write_clip(tmp_path / "t400" / ARM / vid("a"), t=4), tmp_path / "out"
    out = dst / ARM / vid("a")
    part = out.with_name(out.name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"the first frames of the new run's encode")
    (dst / ".reencode.lock").write_text("123 the-new-run\n")
    job = (str(src), str(out), EncodeSettings(short_side=32, gop=4))
    r = _reencode_job(job + ((str(dst), "99 the-stopped-run"),))
    assert not r["ok"] and r["error"] == f"{src}: not re-encoded: another re-encode took over {dst} (its " \
                                         ".reencode.lock names that run now)"
    assert not out.exists() and part.read_bytes() == b"the first frames of the new run's encode"
    r = _reencode_job(job + ((str(dst), "123 the-new-run"),))  # the run that holds the tree
    assert r["ok"] and probe_output(str(out))["frames"] == 4 and not part.exists()


def test_an_output_is_on_the_disk_before_it_gets_its_name(tmp_path, monkeypatch):
    # Renamed unsynced, a machine going down could leave a truncated (not only an empty) video under its final name,
    # which every resume skipped as done. The write order: the whole .part file synced, then renamed.
    src, dst = tmp_path / "t400", tmp_path / "out"
    for tag in ("a", "b"):
        write_clip(src / "train" / ARM / vid(tag), t=4)
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("fsync", path, os.path.getsize(path)))
        real_fsync(fd)

    def replace(a, b):
        events.append(("replace", os.fspath(a), os.path.getsize(a)))
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    reencode_tree(str(src), str(dst), EncodeSettings(short_side=32, gop=4), workers=1, progress=False,
                  log=lambda s: None, time_limit_s=0)  # no time limit: the encodes in this process, patched here
    for tag in ("a", "b"):
        part = str(dst / "train" / ARM / vid(tag)) + ".part"
        mine = [e for e in events if e[1] == part]
        size = (dst / "train" / ARM / vid(tag)).stat().st_size
        assert mine == [("fsync", part, size), ("replace", part, size)], events


def test_an_empty_output_is_encoded_again_not_skipped_as_done(tmp_path):
    # Outputs are renamed into place unsynced: a machine going down can leave one empty under its final name,
    # which every rerun skipped as done (newer than its source), the video lost to the lists built from the tree.
    src, dst, settings = _two_clips_encoded(tmp_path)
    (dst / "train" / ARM / vid("b")).write_bytes(b"")  # newer than its source, as the real output was
    rep = reencode_tree(str(src), str(dst), settings, workers=1, progress=False, log=lambda s: None)
    assert (rep["skipped_existing"], rep["done"], rep["source_changed"], rep["failed"]) == (1, 1, 0, [])
    assert probe_output(str(dst / "train" / ARM / vid("b")))["frames"] == 4


def test_a_reencode_removes_the_partial_outputs_that_stopped_encodes_left_in_its_tree(tmp_path, capsys):
    # A run killed while encoding a video again beside its finished output (its source newer) leaves that video's
    # .part file; a resume that no longer encodes it (the source back to its old time, or gone from --src) skipped it
    # as done, and the .part stayed for good. After the wait for stopped encodes, every .part is stale.
    src, dst = tmp_path / "t400", tmp_path / "out"
    for tag in ("a", "b"):
        write_clip(src / "train" / ARM / vid(tag), t=4)
    args = ["reencode", "--src", str(src), "--dst", str(dst), "--short-side", "32", "--gop", "4", "--workers", "1",
            "--no-progress"]
    assert prepare_kinetics.main(args) == 0
    out = dst / "train" / ARM / vid("b")
    finished = out.read_bytes()
    stale = [out.with_name(out.name + ".part"), dst / "train" / "gone_class" / (vid("c") + ".part")]
    for part in stale:
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(b"the first frames of a stopped encode")
    hidden = dst / ".cache" / (vid("d") + ".part")  # no encode writes into a hidden folder: not the run's to remove
    hidden.parent.mkdir()
    hidden.write_bytes(b"someone else's")
    capsys.readouterr()
    assert prepare_kinetics.main(args) == 0
    assert not any(p.exists() for p in stale) and hidden.exists()
    assert out.read_bytes() == finished
    assert capsys.readouterr().err.splitlines() == [
        f"reencode: removed 2 partial outputs (.mp4.part) of encodes stopped before this run in {dst}"]
    assert prepare_kinetics.main(args) == 0  # none left: nothing said
    assert capsys.readouterr().err == ""


def test_a_reencode_walks_its_dst_once_to_remove_stale_parts_and_refuse_runs_below(tmp_path, capsys, monkeypatch):
    # The removal of stale .part files and the refusal of runs into folders of --dst each walked the whole tree: on a
    # 650,000-video tree (network storage) that was minutes, twice. One walk now serves both.
    from evautil.files import hold_lock

    src, dst = tmp_path / "t400", tmp_path / "out"
    write_clip(src / "train" / ARM / vid("a"), t=4)
    walks: list[str] = []
    real_walk = os.walk

    def counted_walk(top, *args, **kw):
        walks.append(os.fspath(top))
        return real_walk(top, *args, **kw)

    monkeypatch.setattr(os, "walk", counted_walk)
    stale = dst / "train" / "gone_class" / (vid("c") + ".part")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"the first frames of a stopped encode")
    args = ["reencode", "--src", str(src), "--dst", str(dst)] + _SMALL_RUN
    assert prepare_kinetics.main(args) == 0
    assert not stale.exists() and walks.count(str(dst)) == 1
    inner = dst / "trial"
    inner.mkdir()
    walks.clear()
    capsys.readouterr()
    with hold_lock(str(inner / ".reencode.lock")):  # a run into a folder of --dst
        assert prepare_kinetics.main(args) == 2
    assert capsys.readouterr().err.startswith(f"error: another re-encode is running into {inner} ")
    assert walks.count(str(dst)) == 1


@pytest.mark.parametrize("every_s", [0.0, 1e9])
def test_a_long_scan_says_how_far_it_got_on_stderr_and_a_short_one_says_nothing(tmp_path, capsys, monkeypatch,
                                                                                  every_s):
    # A 650,000-file tree took some 25 s (minutes on network storage) with nothing printed; a line is now due
    # every WALK_PROGRESS_EVERY_S seconds: 0 makes each file's line due, 1e9 none.
    from tools.kinetics import common

    monkeypatch.setattr(common, "WALK_PROGRESS_EVERY_S", every_s)
    root = make_tree(tmp_path / "t400", {"train": {"a": [vid("A1"), vid("A2")], "b": [vid("B1")]},
                                         "val": {"a": [vid("V1")], "b": [vid("V2")]}})
    (root / "train" / "a" / vid("E1")).write_bytes(b"")  # skipped, but found: counted
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("scan t400: ")]
    if every_s:
        assert lines == []
    else:
        assert lines[0].startswith("scan t400: 1 video file so far, ")
        assert lines[5].startswith("scan t400: 6 video files so far, ")
        assert lines[-1].startswith("scan t400: 6 video files done in 0:00:0") and len(lines) == 7


def test_a_long_reencode_plan_says_how_far_it_got_on_stderr(tmp_path, capsys, monkeypatch):
    from tools.kinetics import common

    monkeypatch.setattr(common, "WALK_PROGRESS_EVERY_S", 0.0)
    src = make_tree(tmp_path / "src", {"train": {"a": [vid("A1"), vid("A2")]}, "val": {"a": [vid("V1")]}})
    assert prepare_kinetics.main(["reencode", "--src", str(src), "--dry-run"]) == 0
    err = capsys.readouterr().err.splitlines()
    walk = f"reencode: looking for videos in {src}: "
    outputs = f"reencode: looking for finished outputs in {src}_h264: "
    assert [x[len(walk):].split(",")[0] for x in err if x.startswith(walk)][:3] == [
        "1 video file so far", "2 video files so far", "3 video files so far"]
    assert err[3].startswith(walk + "3 video files done in 0:00:0")
    # a known total: the share and eta too; the last item is said by the closing line
    said = [x[len(outputs):] for x in err if x.startswith(outputs)]
    assert [x.split(",")[0] for x in said[:2]] == ["1 of 3 videos done (33.3%)", "2 of 3 videos done (66.7%)"]
    assert len(said) == 3 and said[2].startswith("3 videos done in 0:00:0")


def test_a_subcommands_flags_take_either_spelling():
    """--short_side or --dry_run (the spelling of train.py's --only_test) was refused as an unrecognized argument."""
    args = prepare_kinetics.build_parser().parse_args(["reencode", "--src", "s", "--short_side", "240", "--dry_run",
                                                       "--report_dir=r"])
    assert (args.command, args.short_side, args.dry_run, args.report_dir) == ("reencode", 240, True, "r")


def test_reencode_no_progress_prints_no_progress_lines(tmp_path, capsys, monkeypatch):
    # --no-progress printed a progress line every 30 s anyway whenever stderr was no terminal (a log file, the only
    # place it mattered). Each line is made due at once here: without the flag they show; with it, none does, and
    # the summary still prints.
    from tools.kinetics import common

    monkeypatch.setattr(common, "WALK_PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(common, "PROGRESS_EVERY_S", 0.0)
    src = tmp_path / "src"
    for tag in ("a", "b", "c"):
        write_clip(src / "train" / ARM / vid(tag), t=4)
    base = ["reencode", "--src", str(src), "--short-side", "32", "--gop", "4", "--workers", "1"]
    progress = ("reencode: looking for videos in ", "reencode: looking for finished outputs in ", "re-encode: ")
    assert prepare_kinetics.main([*base, "--dst", str(tmp_path / "lines")]) == 0
    out, err = capsys.readouterr()
    said = [x for x in err.splitlines() if x.startswith(progress)]
    assert [sum(x.startswith(p) for x in said) for p in progress] == [4, 3, 3], said  # (each with "done in")
    assert "re-encoded 3 videos (12 frames)" in out
    assert prepare_kinetics.main([*base, "--dst", str(tmp_path / "quiet"), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "re-encoded 3 videos (12 frames)" in out
    assert sorted(p.name for p in (tmp_path / "quiet" / "train" / ARM).iterdir()) == [vid(t) for t in "abc"]


def test_lists_check_no_progress_prints_no_progress_lines(tmp_path, capsys, monkeypatch):
    # lists --check had no --no-progress: in a log file its probes wrote a progress line every 30 s and a long walk
    # its own. Each line is made due at once here: without the flag they show; with it, none does, and the lists
    # and the summary are the same.
    from dali_pipelines import index
    from tools.kinetics import common

    monkeypatch.setattr(common, "WALK_PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(index, "_LOG_EVERY_S", 0.0)
    root = _two_class_tree(tmp_path / "t400", train_per_class=2)
    base = ["lists", "--dataset", f"t400={root}", "--data-root", str(tmp_path), "--workers", "1", "--check"]
    progress = ("scan t400: ", "check t400: ")
    assert prepare_kinetics.main([*base, "--out", str(tmp_path / "lines")]) == 0
    out, err = capsys.readouterr()
    said = [x for x in err.splitlines() if x.startswith(progress)]
    assert [sum(x.startswith(p) for x in said) for p in progress] == [7, 6], said  # a line per video, then one
    assert all(" done in " in x for x in (said[6], said[-1])), said  # with the time taken
    assert prepare_kinetics.main([*base, "--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
    quiet_out, err = capsys.readouterr()
    assert err == "" and quiet_out.splitlines()[-1] == out.splitlines()[-1] == (
        "t400: 2 classes, train 4 of 4 (skipped 0; ids also in val 0, dropped; repeated ids 0), val 2 of 2 (skipped "
        "0; repeated ids 0)")
    for name in ("t400_train.txt", "t400_val.txt", "t400_labels.csv"):
        assert (tmp_path / "quiet" / name).read_text() == (tmp_path / "lines" / name).read_text()
    assert (tmp_path / "quiet" / "t400_train.txt.index.npz").is_file()
    k722 = ["k722", *base[1:], "--out", str(tmp_path / "k722"), "--no-progress"]  # its scans are the same
    assert prepare_kinetics.main(k722) == 0 and capsys.readouterr().err == ""
    assert (tmp_path / "k722" / "k722_train.txt").is_file()
