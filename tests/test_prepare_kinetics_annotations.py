"""Kinetics preparation from the flat layout of the official downloads, ``<root>/<split>/<id>_<start>_<end>.mp4``
with the classes in ``<root>/annotations/{train,val}.csv``. The lists must be those of a class-folder tree of the
same videos; missing and unannotated videos are reported; malformed CSVs are errors naming the file and line."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from tools import prepare_kinetics
from tools.kinetics import KineticsError, read_labels_csv, scan_dataset
from tools.kinetics.annotations import read_annotations
from tests.test_prepare_kinetics import (  # noqa: F401 (kinetics_names: a fixture)
    ARM, K722_TREES, kinetics_names, make_tree, read_list, vid, write_clip,
)

HEADER = ["label", "youtube_id", "time_start", "time_end", "split", "is_cc"]


def annotation_row(label: str, file_name: str, split: str) -> list[str]:
    """The CSV row of a Kinetics file name; every other row writes its end time as ``<n>.0``, as some releases do."""
    yid, start, end = os.path.splitext(file_name)[0].rsplit("_", 2)
    return [label, yid, str(int(start)), f"{int(end)}.0" if int(start) % 2 else str(int(end)), split, "0"]


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def make_flat(root: Path, splits: dict[str, dict[str, list[str]]], content: bytes = b"\x00not-a-real-video",
              csv_dir: Path | None = None, csv_names: dict[str, str] | None = None) -> Path:
    """The official downloads' layout of the tree ``make_tree`` takes: ``root/<split>/<file>``, and one CSV row per
    file in ``<csv_dir>/<csv_names[split]>`` (default ``root/annotations/<split>.csv``), class names as labels."""
    for split, classes in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for cls, files in classes.items():
            for f in files:
                (root / split / f).write_bytes(content)
                rows.append(annotation_row(cls, f, split))
        write_csv((csv_dir or root / "annotations") / (csv_names or {}).get(split, f"{split}.csv"), rows)
    return root


@pytest.fixture
def one_each(tmp_path: Path) -> Path:
    """A flat download ``t400`` of one class, with one video in train (A1) and one in val (V1)."""
    return make_flat(tmp_path / "t400", {"train": {"a": [vid("A1")]}, "val": {"a": [vid("V1")]}})


@pytest.fixture
def without_val(one_each: Path) -> Path:
    """``one_each`` whose val folder is gone (val.csv still lists V1)."""
    (one_each / "val" / vid("V1")).unlink()
    (one_each / "val").rmdir()
    return one_each


def refused_lists(root: Path, tmp_path: Path, capsys, *extra: str) -> str:
    """What ``lists`` of dataset t400 at ``root`` (and ``extra`` options) prints when refused: it exits 2 and makes
    no --out folder."""
    out = tmp_path / "out"
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(out), *extra]) == 2
    assert not out.exists()
    return capsys.readouterr().err


def _flat_rel(rel: str, flat: set[str]) -> str:
    """A class-folder list path ``<ds>/<split>/<class>/<file>`` as the flat layout has it, ``<ds>/<split>/<file>``,
    for the datasets in ``flat``."""
    ds, split, cls, name = rel.split("/")
    return f"{ds}/{split}/{name}" if ds in flat else rel


# report keys that hold paths (or say which layout): the rest must be the same for both layouts
PATH_KEYS = {"root", "data_root", "skipped_files", "ignored_examples", "leaked_examples", "layout", "annotations"}


def _without_paths(x):
    if isinstance(x, dict):
        return {k: _without_paths(v) for k, v in x.items() if k not in PATH_KEYS and not k.endswith("examples")}
    if isinstance(x, list):
        return [_without_paths(v) for v in x]
    return x


def _assert_same_outputs(folders: Path, flat: Path, stems: list[str], flat_datasets: set[str]) -> None:
    """The files written from the two layouts: labels identical, list lines identical but for the class folder in
    the paths of ``flat_datasets``, reports identical but for paths."""
    for stem in stems:
        assert (flat / f"{stem}_labels.csv").read_bytes() == (folders / f"{stem}_labels.csv").read_bytes()
        for split in ("train", "val"):
            tree = read_list(folders / f"{stem}_{split}.txt")
            assert tree, (stem, split)
            assert read_list(flat / f"{stem}_{split}.txt") == [(_flat_rel(rel, flat_datasets), lab)
                                                               for rel, lab in tree]
        rep_flat, rep_tree = (json.loads((d / f"{stem}_report.json").read_text()) for d in (flat, folders))
        assert _without_paths(rep_flat) == _without_paths(rep_tree)


def test_flat_layout_writes_the_lists_of_the_class_folder_tree(tmp_path):
    # K722_TREES: official class names (spaces, parentheses, renamed classes), repeated YouTube ids within and
    # across datasets, training ids in some val split, and a conflict: every rule depends on the scan's order.
    for ds, tree in K722_TREES.items():
        make_tree(tmp_path / "folders" / ds, tree)
        make_flat(tmp_path / "flat" / ds, tree)
    for layout in ("folders", "flat"):
        data = tmp_path / layout
        args = ["k722", "--out", str(data)]
        for ds in K722_TREES:
            args += ["--dataset", f"{ds}={data / ds}"]
        assert prepare_kinetics.main(args) == 0
    _assert_same_outputs(tmp_path / "folders", tmp_path / "flat", ["k722", *K722_TREES], set(K722_TREES))
    for ds in K722_TREES:
        a = np.load(tmp_path / "flat" / f"k722_to_{ds}_mapping.npy")
        b = np.load(tmp_path / "folders" / f"k722_to_{ds}_mapping.npy")
        assert a.dtype == np.int64 and a.tolist() == b.tolist()
        # The scan's records themselves: same classes, splits and order, the path without the class folder.
        tree, flat = (scan_dataset(ds, str(tmp_path / layout / ds)) for layout in ("folders", "flat"))
        assert flat.classes == tree.classes and not tree.annotations
        for split in ("train", "val"):
            assert [(v.dataset, v.split, v.class_name, v.path) for v in flat.videos[split]] == [
                (v.dataset, v.split, v.class_name, str(tmp_path / "flat" / ds / split / v.file_name))
                for v in tree.videos[split]]
    rep = json.loads((tmp_path / "flat" / "t400_report.json").read_text())
    assert rep["layout"] == "annotations" and rep["annotations"]["rows"] == {"train": 7, "val": 4}
    assert rep["annotations"]["csv"]["val"] == str(tmp_path / "flat" / "t400" / "annotations" / "val.csv")


def test_flat_layout_with_underscored_labels_and_checked_videos(tmp_path):
    # Labels written with underscores (--underscore-to-space), and --check: the probes and the lists' index caches.
    tree = {"train": {"arm_wrestling": [vid("a1"), vid("a2"), vid("d1")], "b_c": [vid("b1"), vid("d1", 40)]},
            "val": {"arm_wrestling": [vid("v1")], "b_c": [vid("v2"), vid("a2", 50)]}}
    flat = make_flat(tmp_path / "flat" / "t400", tree)
    for split, classes in tree.items():
        for cls, files in classes.items():
            for f in files:
                write_clip(flat / split / f, t=2, h=16, w=16)
                (tmp_path / "folders" / "t400" / split / cls).mkdir(parents=True, exist_ok=True)
                os.link(flat / split / f, tmp_path / "folders" / "t400" / split / cls / f)
    (flat / "train" / vid("bad")).write_bytes(b"\x00not a video")  # undecodable, and in no CSV row
    (tmp_path / "folders" / "t400" / "train" / "b_c" / vid("bad")).write_bytes(b"\x00not a video")
    for layout in ("folders", "flat"):
        data = tmp_path / layout
        assert prepare_kinetics.main(["lists", "--dataset", f"t400={data / 't400'}", "--out", str(data),
                                      "--underscore-to-space", "--check", "--workers", "1"]) == 0
        assert (data / "t400_train.txt.index.npz").is_file() and (data / "t400_val.txt.index.npz").is_file()
    assert read_labels_csv(str(tmp_path / "flat" / "t400_labels.csv")) == ["arm wrestling", "b c"]
    # a2 is dropped as in val, the second d1 as a repeat
    assert read_list(tmp_path / "flat" / "t400_train.txt") == [
        (f"t400/train/{vid('a1')}", 0), (f"t400/train/{vid('d1')}", 0), (f"t400/train/{vid('b1')}", 1)]
    rep = {layout: json.loads((tmp_path / layout / "t400_report.json").read_text()) for layout in ("folders", "flat")}
    # The same counts, but the bad file: undecodable in the class folder, not annotated in the flat layout.
    assert rep["folders"]["train_skipped_by_kind"] == {"undecodable (--check)": 1}
    assert rep["flat"]["train_skipped_by_kind"] == {"not in annotations": 1}
    for r in rep.values():
        r.pop("train_skipped_by_kind")
    assert _without_paths(rep["flat"]) == _without_paths(rep["folders"])


def test_a_check_refuses_an_annotated_class_without_a_video_before_its_first_probe(tmp_path, capsys, monkeypatch):
    # A class of val.csv none of whose videos was downloaded: refused only after every other video was probed.
    from dali_pipelines import index as index_mod

    tree = {"train": {"a": [vid("a1")], "b": [vid("b1")]}, "val": {"a": [vid("v1")], "b": [vid("v2")]}}
    flat = make_flat(tmp_path / "t400", tree)
    for split, classes in tree.items():
        for files in classes.values():
            write_clip(flat / split / files[0], t=2, h=16, w=16)
    (flat / "val" / vid("v2")).unlink()
    probed: list[str] = []
    real_job = index_mod._probe_job
    monkeypatch.setattr(index_mod, "_probe_job", lambda job: probed.append(job[1]) or real_job(job))
    out = tmp_path / "out"
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={flat}", "--out", str(out), "--check",
                                  "--workers", "1"]) == 2
    val_csv = str(flat / "annotations" / "val.csv")
    missing = (str(flat / "val" / os.path.splitext(vid("v2"))[0]),
               f"missing: no video file for line 3 of {val_csv} (class 'b')")
    assert capsys.readouterr().err.splitlines() == [
        f"error: dataset t400: 1 annotated class(es) of {val_csv!r} have no usable video ('b'); 1 unusable file(s) "
        f"were skipped in this split, e.g. {missing}; fix the download or pass --allow-empty-classes"]
    assert probed == [] and not list(out.glob("*.index.npz"))


def test_missing_unannotated_and_misplaced_videos_are_reported(tmp_path, capsys):
    tree = {"train": {"a": [vid("A1"), vid("A2"), vid("G1")], "b": [vid("B1"), vid("B2")]},
            "val": {"a": [vid("V1"), vid("V2")], "b": [vid("V3"), vid("G2")]}}
    root = make_flat(tmp_path / "t400", tree)
    (root / "train" / vid("G1")).unlink()  # rows without a video file: the usual gaps of a Kinetics download
    (root / "val" / vid("G2")).unlink()
    (root / "train" / vid("N1")).write_bytes(b"x")  # a video no row names
    (root / "train" / "notes.txt").write_text("not a video")
    (root / "train" / "extra").mkdir()  # a subfolder: no class folder in this layout
    (root / "train" / "extra" / vid("E1")).write_bytes(b"x")
    os.replace(root / "val" / vid("V2"), root / "train" / vid("V2"))  # a val video saved in train/
    args = ["lists", "--dataset", f"t400={root}", "--out", str(tmp_path)]
    # With a subfolder in a split folder the layout is not taken for flat by itself: the error says what to pass.
    assert prepare_kinetics.main(args) == 2
    assert (f"no class folders in {str(root / 'val')!r}; its 2 video files are the flat layout of the official "
            f"downloads, read as such with --annotations t400=DIR") in capsys.readouterr().err
    args += ["--annotations", f"t400={root / 'annotations'}"]
    assert prepare_kinetics.main(args) == 0
    # V2 follows its annotation: a validation video (which also keeps it out of training), at the path it has.
    assert read_list(tmp_path / "t400_train.txt") == [(f"t400/train/{vid('A1')}", 0), (f"t400/train/{vid('A2')}", 0),
                                                       (f"t400/train/{vid('B1')}", 1), (f"t400/train/{vid('B2')}", 1)]
    assert read_list(tmp_path / "t400_val.txt") == [(f"t400/val/{vid('V1')}", 0), (f"t400/train/{vid('V2')}", 0),
                                                     (f"t400/val/{vid('V3')}", 1)]
    rep = json.loads((tmp_path / "t400_report.json").read_text())
    assert rep["train_skipped_by_kind"] == {"missing": 1, "not in annotations": 1}
    assert rep["val_skipped_by_kind"] == {"missing": 1}
    assert (rep["train_found"], rep["train_written"], rep["val_found"], rep["val_written"]) == (6, 4, 4, 3)
    for split in ("train", "val"):
        assert rep[f"{split}_found"] == (rep[f"{split}_written"] + rep[f"{split}_skipped"]
                                         + rep["dropped_leaked"] * (split == "train")
                                         + rep[f"{split}_duplicates"]["dropped"])
    reasons = {f["path"]: f["reason"] for f in rep["skipped_files"]}
    g1, g2 = os.path.splitext(vid("G1"))[0], os.path.splitext(vid("G2"))[0]
    assert reasons == {
        str(root / "train" / vid("N1")): f"not in annotations: no row of the train or val CSV names "
                                          f"{os.path.splitext(vid('N1'))[0]}",
        str(root / "train" / g1): f"missing: no video file for line 4 of {root / 'annotations' / 'train.csv'} "
                                  f"(class 'a')",
        str(root / "val" / g2): f"missing: no video file for line 5 of {root / 'annotations' / 'val.csv'} "
                                f"(class 'b')"}
    assert sorted(rep["ignored_examples"]) == [str(root / "train" / "extra"), str(root / "train" / "notes.txt")]
    assert rep["annotations"]["rows_without_video"] == {"train": 1, "val": 1}
    assert rep["annotations"]["videos_in_other_split_folder"] == 1
    assert rep["annotations"]["videos_in_other_split_folder_examples"] == [str(root / "train" / vid("V2"))]
    md = (tmp_path / "t400_report.md").read_text()
    assert "- train: 6 found = 4 written + 2 skipped (missing 1, not in annotations 1) + 0 dropped" in md
    assert (f"- annotations: train `{root / 'annotations' / 'train.csv'}` (5 rows, 1 without a video file), val "
            f"`{root / 'annotations' / 'val.csv'}` (4 rows, 1 without a video file)") in md
    assert f"- videos in the other split's folder, listed in the split of their annotation: 1 (e.g. `{root}" in md
    assert f"- `{root / 'train' / g1}`: missing: no video file for line 4" in md
    capsys.readouterr()
    # --strict: a video no row names is an error; rows without a video never are.
    assert prepare_kinetics.main(args + ["--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dataset t400: 1 unusable video file(s):") and vid("N1") in err and g1 not in err
    (root / "train" / vid("N1")).unlink()
    assert prepare_kinetics.main(args + ["--strict"]) == 0


def test_a_video_listed_in_both_csvs_stays_in_the_split_it_lies_in(tmp_path, capsys):
    # No release lists a video in two splits; were one to, its file keeps the split of the folder it lies in. The
    # other split's row was reported as "missing: no video file" beside the videos the download lacks, although
    # the file is there: it is told apart, named with the file and the split that lists it.
    root = make_flat(tmp_path / "t400", {"train": {"a": [vid("A1"), vid("B1")]}, "val": {"a": [vid("V1")]}})
    rows = [annotation_row("a", vid("V1"), "val"), annotation_row("a", vid("B1"), "val"),
            annotation_row("a", vid("G1"), "val")]
    write_csv(root / "annotations" / "val.csv", rows)
    val_csv, b1 = root / "annotations" / "val.csv", root / "train" / vid("B1")
    scan = scan_dataset("t400", str(root))
    assert [v.file_name for v in scan.videos["train"]] == [vid("A1"), vid("B1")]
    assert [v.file_name for v in scan.videos["val"]] == [vid("V1")]
    assert scan.skipped == [
        (str(root / "val" / os.path.splitext(vid("B1"))[0]),
         f"listed in the other split: line 3 of {val_csv} (class 'a') names {b1}, which is in the train CSV too and "
         f"lies in its folder: listed in train only"),
        (str(root / "val" / os.path.splitext(vid("G1"))[0]),
         f"missing: no video file for line 4 of {val_csv} (class 'a')")]
    assert scan.skipped_counts == {"train": {}, "val": {"missing": 1, "listed in the other split": 1}}
    warning = (f"warning: dataset t400: 1 video in both the train and the val CSV: each is listed in the split whose "
               f"folder holds it, the other split's row skipped as 'listed in the other split', not missing "
               f"(e.g. {b1} (line 3 of {val_csv}))")
    assert warning in capsys.readouterr().err.splitlines()
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(tmp_path)]) == 0
    assert warning in capsys.readouterr().err.splitlines()
    rep = json.loads((tmp_path / "t400_report.json").read_text())
    assert rep["annotations"]["rows_without_video"] == {"train": 0, "val": 1}
    assert rep["annotations"]["rows_of_videos_in_other_split"] == {"train": 0, "val": 1}
    md = (tmp_path / "t400_report.md").read_text()
    assert (f"val `{val_csv}` (3 rows, 1 without a video file, 1 naming a video the other split lists)") in md
    assert (f"- videos in both CSVs, listed in the split whose folder holds them (the other split's row skipped as "
            f"`listed in the other split`): 1 (e.g. `{b1} (line 3 of {val_csv})`)") in md
    assert "- val: 3 found = 1 written + 2 skipped (missing 1, listed in the other split 1) + 0 dropped" in md


def test_annotation_csvs_as_the_releases_write_them(tmp_path):
    # A BOM, CRLF lines, columns in another order, k400's is_cc, times as "10" or "10.0", quoted labels holding a
    # comma or a quote, blank lines, and one video listed twice with the same label.
    path = tmp_path / "train.csv"
    path.write_bytes("\ufeffyoutube_id,label,time_end,time_start,split,is_cc\r\n"
                     "aaaaaaaaaaa,abseiling,20,10,train,0\r\n"
                     "bbbbbbbbbbb,\"passing American football (in game)\",11.0,1.0,train,1\r\n"
                     "\r\n"
                     "ccccccccccc,\"a, b\",1000010,1000000,train,0\r\n"
                     "ddddddddddd,\"say \"\"hi\"\"\",5,0,train,0\r\n"
                     "aaaaaaaaaaa,abseiling,20.0,10,train,0\r\n".encode("utf-8"))
    rows = read_annotations(str(path))
    assert {k: (r.label, r.line) for k, r in rows.items()} == {
        "aaaaaaaaaaa_000010_000020": ("abseiling", 2),
        "bbbbbbbbbbb_000001_000011": ("passing American football (in game)", 3),
        "ccccccccccc_1000000_1000010": ("a, b", 5), "ddddddddddd_000000_000005": ('say "hi"', 6)}


def test_annotation_csvs_joined_into_one_are_read_as_one(tmp_path):
    # `cat part1.csv part2.csv > train.csv`: the second part's header (and its BOM) was a row whose time_start
    # 'time_start' was not a whole number of seconds.
    part = "\ufefflabel,youtube_id,time_start,time_end,split\r\n{}\r\n"
    path = tmp_path / "train.csv"
    path.write_bytes((part.format("abseiling,aaaaaaaaaaa,10,20,train")
                      + part.format("\"a, b\",-bbbbbbbbbb,1.0,11.0,train")).encode("utf-8"))
    rows = read_annotations(str(path))
    assert {k: (r.label, r.line) for k, r in rows.items()} == {
        "aaaaaaaaaaa_000010_000020": ("abseiling", 2), "-bbbbbbbbbb_000001_000011": ("a, b", 4)}


@pytest.mark.parametrize("text, message", [
    ("label,youtube_id,time_start,split\nabseiling,aaaaaaaaaaa,10,train\n",
     r"line 1: no column time_end in the header 'label,youtube_id,time_start,split'"),
    ("", r"line 1: no column label, youtube_id, time_start, time_end in the header ''"),
    ("label\tyoutube_id\ttime_start\ttime_end\tsplit\nabseiling\taaaaaaaaaaa\t10\t20\ttrain\n",
     r"line 1: no column label, youtube_id, time_start, time_end in the header 'label\\tyoutube_id\\ttime_start"
     r"\\ttime_end\\tsplit' \(expected .*\); its fields are separated by tabs, not commas: save it as "
     r"comma-separated values$"),
    ("label,youtube_id,time_start,time_end,split\na,aaaaaaaaaaa,10,20,train\na,bbbbbbbbbbb,1x,11,train\n",
     r"line 3: time_start '1x' is not a whole number of seconds"),
    ("label,youtube_id,time_start,time_end,split\na,aaaaaaaaaaa,10,20.5,train\n",
     r"line 2: time_end '20.5' is not a whole number of seconds"),
    # "-1 is not a whole number" sent the user looking for a fraction
    ("label,youtube_id,time_start,time_end,split\na,aaaaaaaaaaa,-1,20,train\n",
     r"line 2: time_start '-1' is negative: a clip's times are seconds from the start of its YouTube video, 0 or "
     r"more; fix the row or remove it$"),
    # reversed or empty clips (time columns named the other way round) named videos no file is: every row "missing"
    ("label,youtube_id,time_start,time_end,split\na,aaaaaaaaaaa,10,20,train\na,bbbbbbbbbbb,20.0,10,train\n",
     r"line 3: time_end '10' is not after time_start '20.0': fix the row, or the header if it names the time "
     r"columns the other way round$"),
    ("label,youtube_id,time_end,time_start,split\na,aaaaaaaaaaa,10,10.0,train\n",
     r"line 2: time_end '10' is not after time_start '10.0'"),
    ("label,youtube_id,time_start,time_end,split\na,aaaaaaaaaaa,10,20,train\nb,bbbbbbbbbbb,1,2,train\n"
     "b,aaaaaaaaaaa,10.0,20,train\n",
     r"line 4: video aaaaaaaaaaa_000010_000020 has label 'b', and 'a' on line 2"),
    ("label,youtube_id,time_start,time_end,split\npassing American football, (in game),aaaaaaaaaaa,1,2,train\n",
     r"line 2: 6 fields, the header has 5 \(a label holding a comma must be quoted\)"),
    ("label,youtube_id,time_start,time_end,split\n,aaaaaaaaaaa,1,2,train\n", r"line 2: empty label"),
    ("label,youtube_id,time_start,time_end,split\na, ,1,2,train\n", r"line 2: empty youtube_id"),
    # A quote left open: the line it opens on, not the one csv stopped at (the last of a long file, or the next).
    ("label,youtube_id,time_start,time_end,split\na,aaaaaaaaaaa,1,2,train\n\"a,bbbbbbbbbbb,1,2,train\n"
     + "a,ccccccccccc,1,2,train\n" * 9000, r"line 3: field larger than field limit"),
    ("label,youtube_id,time_start,time_end,split\na,aaaaaaaaaaa,1,2,train\n\"a,bbbbbbbbbbb,1,2,train\n"
     "a,ccccccccccc,1,2,train\n", r"line 3: a quote opened on this line is closed only on line 4, or never"),
    # ... and closed on a later line, with as many fields as the header: a label holding a line break.
    ("label,youtube_id,time_start,time_end,split\n\"a,aaaaaaaaaaa,1,2,train\na\",bbbbbbbbbbb,1,2,train\n",
     r"line 2: a quote opened on this line is closed only on line 3, or never"),
    # Not UTF-8: the line, not a byte position within one of the decoder's chunks.
    (b"label,youtube_id,time_start,time_end,split\n" + b"a,aaaaaaaaaaa,1,2,train\n" * 5000
     + b"caf\xe9,bbbbbbbbbbb,1,2,train\n", r"line 5002: not UTF-8 text \(invalid continuation byte, byte 0xe9\)"),
])
def test_a_malformed_annotation_csv_is_an_error_naming_file_and_line(tmp_path, capsys, text, message):
    root = make_flat(tmp_path / "t400", {"train": {"a": [vid("a")]}, "val": {"a": [vid("b")]}})
    (root / "annotations" / "train.csv").write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    where = re.escape(f"annotation CSV {str(root / 'annotations' / 'train.csv')!r}, ")
    with pytest.raises(KineticsError, match=where + message):
        scan_dataset("t400", str(root))
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(tmp_path / "out")]) == 2
    assert re.search(where + message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("time", ["1_0", "1e1", "nan", "inf", "\u0661\u0660"])
def test_an_annotation_time_is_read_only_as_decimal_digits(tmp_path, time):
    # float() took '1_0' and '1e1' for 10 (the row then named the video ..._000010_..., its file another), and
    # 'nan', 'inf' or other scripts' digits too
    path = tmp_path / "train.csv"
    path.write_text(f"label,youtube_id,time_start,time_end,split\na,aaaaaaaaaaa,0,10,train\n"
                    f"a,bbbbbbbbbbb,{time},20,train\n", encoding="utf-8")
    with pytest.raises(KineticsError) as e:
        read_annotations(str(path))
    assert str(e.value) == (f"annotation CSV {str(path)!r}, line 3: time_start {time!r} is not a whole number of "
                            f"seconds written in digits, as 10 or 10.0 (a video's file name is "
                            f"<youtube_id>_<time_start:06d>_<time_end:06d>)")
    path.write_text("label,youtube_id,time_start,time_end,split\na,aaaaaaaaaaa,0 ,10.0,train\n", encoding="utf-8")
    assert list(read_annotations(str(path))) == ["aaaaaaaaaaa_000000_000010"]


def test_each_dataset_names_its_own_annotation_csvs(tmp_path, capsys):
    # k722 over three datasets: t400 flat with its CSVs elsewhere under other names (one per split), t600 flat with
    # a folder of train.csv and val.csv, t700 class folders. The outputs are those of three class-folder trees.
    csvs = tmp_path / "csv"
    make_flat(tmp_path / "flat" / "t400", K722_TREES["t400"], csv_dir=csvs,
              csv_names={"train": "kinetics400_train.csv", "val": "kinetics400_validate.csv"})
    make_flat(tmp_path / "flat" / "t600", K722_TREES["t600"], csv_dir=csvs / "t600")
    make_tree(tmp_path / "flat" / "t700", K722_TREES["t700"])
    for ds, tree in K722_TREES.items():
        make_tree(tmp_path / "folders" / ds, tree)
    flat, folders = tmp_path / "flat", tmp_path / "folders"
    datasets = [f"--dataset={ds}={flat / ds}" for ds in K722_TREES]
    names = [f"--annotations=t400:train={csvs / 'kinetics400_train.csv'}",
             f"--annotations=t400:val={csvs / 'kinetics400_validate.csv'}", f"--annotations=t600={csvs / 't600'}"]
    assert prepare_kinetics.main(["k722", "--out", str(flat), *datasets, *names]) == 0
    assert prepare_kinetics.main(["k722", "--out", str(folders)]
                                 + [f"--dataset={ds}={folders / ds}" for ds in K722_TREES]) == 0
    _assert_same_outputs(folders, flat, ["k722", "t400", "t600"], {"t400", "t600"})
    # t700 (class folders) lists as any class-folder tree does
    assert (flat / "t700_train.txt").read_text() == (folders / "t700_train.txt").read_text()
    rep = json.loads((flat / "k722_report.json").read_text())
    assert rep["inputs"]["t400"]["annotations"]["csv"] == {"train": str(csvs / "kinetics400_train.csv"),
                                                           "val": str(csvs / "kinetics400_validate.csv")}
    assert rep["inputs"]["t700"]["layout"] == "class folders" and "annotations" not in rep["inputs"]["t700"]
    capsys.readouterr()

    def error(*extra: str) -> str:
        assert prepare_kinetics.main(["lists", "--out", str(tmp_path / "out"), *datasets, *extra]) == 2
        return capsys.readouterr().err

    # t400's CSVs are not where the defaults look
    assert f"the train annotation CSV {str(flat / 't400' / 'annotations' / 'train.csv')!r} does not exist; name " \
           f"it with --annotations t400:train=CSV, or the folder holding train.csv and val.csv with --annotations " \
           f"t400=DIR" in error(*names[2:])
    assert f"no val annotation CSV given, and the annotation folder {str(flat / 't400' / 'annotations')!r} holds " \
           f"neither val.csv nor validate.csv" in error(*names[:1], *names[2:])
    assert "--annotations t999=x: no --dataset is named 't999' (datasets: t400, t600, t700)" in error(
        *names, "--annotations=t999=x")
    assert f"--annotations t600={csvs / 't600' / 'train.csv'}: not a folder" in error(
        *names[:2], f"--annotations=t600={csvs / 't600' / 'train.csv'}")
    assert f"the train annotation CSV of t400 is already {str(csvs / 'kinetics400_train.csv')!r}" in error(
        *names, f"--annotations=t400={csvs / 't600'}")
    assert f"the val annotation CSV {str(tmp_path / 'nope.csv')!r} does not exist" in error(
        *names[:1], f"--annotations=t400:val={tmp_path / 'nope.csv'}", *names[2:])
    # A folder given for one split's CSV exists: it said "does not exist"
    assert f"the val annotation CSV {str(csvs / 't600')!r} is a folder, not a CSV file (a folder holding train.csv " \
           f"and val.csv: --annotations t400=DIR)" in error(*names[:1], f"--annotations=t400:val={csvs / 't600'}",
                                                            *names[2:])
    with pytest.raises(SystemExit):
        prepare_kinetics.main(["lists", "--out", str(tmp_path / "out"), *datasets, "--annotations=t400:test=x.csv"])
    assert "expected NAME=DIR (DIR/train.csv and DIR/val.csv) or NAME:SPLIT=CSV" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_validate_csv_of_kinetics_700_2020_is_read_without_val_csv(tmp_path, capsys):
    # Kinetics-700-2020's download names its val CSV validate.csv: read when there is no val.csv, with one note
    # line; val.csv wins when both exist; with neither the error names both and the flag that names another CSV.
    tree = K722_TREES["t400"]
    make_tree(tmp_path / "folders" / "t400", tree)
    root = make_flat(tmp_path / "flat" / "t400", tree, csv_names={"val": "validate.csv"})
    notes = tmp_path / "notes"  # a folder of train.csv and validate.csv, for --annotations NAME=DIR
    make_flat(tmp_path / "other" / "t400", tree, csv_dir=notes, csv_names={"val": "validate.csv"})
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={tmp_path / 'folders' / 't400'}",
                                  "--out", str(tmp_path / "folders")]) == 0
    capsys.readouterr()

    def run(*extra: str, status: int = 0, out: str = "flat", dataset: Path = root) -> str:
        assert prepare_kinetics.main(["lists", "--dataset", f"t400={dataset}", "--out", str(tmp_path / out),
                                      *extra]) == status
        return capsys.readouterr().err

    validate = root / "annotations" / "validate.csv"
    note = (f"note: dataset t400: no val.csv in {str(root / 'annotations')!r}: the val annotations are read from "
            f"validate.csv (Kinetics-700-2020's name for it)\n")
    assert run() == note
    _assert_same_outputs(tmp_path / "folders", tmp_path / "flat", ["t400"], {"t400"})
    rep = json.loads((tmp_path / "flat" / "t400_report.json").read_text())
    assert rep["annotations"]["csv"]["val"] == str(validate)
    # --annotations NAME=DIR: the same for that folder
    assert run("--annotations", f"t400={notes}", out="other", dataset=tmp_path / "other" / "t400") == (
        f"note: dataset t400: no val.csv in {str(notes)!r}: the val annotations are read from validate.csv "
        f"(Kinetics-700-2020's name for it)\n")
    assert read_list(tmp_path / "other" / "t400_val.txt") == read_list(tmp_path / "flat" / "t400_val.txt")

    # both: val.csv is read, without a note (validate.csv here lists a video of no split folder)
    os.replace(validate, root / "annotations" / "val.csv")
    write_csv(validate, [annotation_row("x", vid("Z9"), "val")])
    assert run() == ""
    rep = json.loads((tmp_path / "flat" / "t400_report.json").read_text())
    assert rep["annotations"]["csv"]["val"] == str(root / "annotations" / "val.csv")
    assert read_list(tmp_path / "flat" / "t400_val.txt") == read_list(tmp_path / "other" / "t400_val.txt")

    # neither: one error line naming the folder, both names and the flag
    (root / "annotations" / "val.csv").unlink()
    validate.unlink()
    err = run(status=2, out="none")
    assert err == (f"error: dataset t400: the split folders in {str(root)!r} hold video files and no class folders "
                   f"(the flat layout of the official downloads), but the annotation folder "
                   f"{str(root / 'annotations')!r} holds neither val.csv nor validate.csv; name it with "
                   f"--annotations t400:val=CSV, or the folder holding train.csv and val.csv with --annotations "
                   f"t400=DIR\n")
    (notes / "validate.csv").unlink()
    assert run("--annotations", f"t400={notes}", status=2, out="none") == (
        f"error: --annotations t400={notes}: the annotation folder {str(notes)!r} holds neither val.csv nor "
        f"validate.csv; name each split's CSV with --annotations t400:train=CSV and --annotations t400:val=CSV\n")
    assert run("--annotations", f"t400:train={notes / 'train.csv'}", status=2, out="none") == (
        f"error: dataset t400: no val annotation CSV given, and the annotation folder "
        f"{str(root / 'annotations')!r} holds neither val.csv nor validate.csv; name it with --annotations "
        f"t400:val=CSV, or the folder holding train.csv and val.csv with --annotations t400=DIR\n")
    assert not (tmp_path / "none").exists()


def test_flat_layout_against_the_official_classes(tmp_path, kinetics_names, shared_dir, capsys):
    # k400 from the flat layout, its labels written with underscores: the class check, --official-labels and
    # --allow-empty-classes work on the annotated classes as on class folders.
    official = kinetics_names["k400"]
    tree = {split: {c.replace(" ", "_"): [vid(f"{split[0]}{i}")] for i, c in enumerate(official)}
            for split in ("train", "val")}
    root = make_flat(tmp_path / "k400", tree)
    out = tmp_path / "out"
    args = ["lists", "--dataset", f"k400={root}", "--out", str(out),
            "--official-labels", str(shared_dir / "data" / "labels")]
    assert prepare_kinetics.main(args) == 2
    err = capsys.readouterr().err
    assert f"the annotated classes in {str(root)!r} differ from the 400 official k400 classes" in err
    assert "fix those labels in the annotation CSVs (labels with '_': --underscore-to-space)" in err
    assert prepare_kinetics.main(args + ["--underscore-to-space"]) == 0
    assert read_labels_csv(str(out / "k400_labels.csv")) == official
    lines = read_list(out / "k400_train.txt")
    assert len(lines) == 400 and all(lab == int(os.path.basename(rel)[1:4].rstrip("_")) for rel, lab in lines)
    # The val video of the first class missing: an empty class, named as the CSV's, the example skipped file from
    # that split (not the first one skipped); allowed, the class keeps its id.
    (root / "val" / vid("v0")).unlink()
    (root / "train" / vid("n1")).write_bytes(b"x")  # skipped in train: no row names it
    assert prepare_kinetics.main(args + ["--underscore-to-space"]) == 2
    err = capsys.readouterr().err
    val_csv = str(root / "annotations" / "val.csv")
    missing = (str(root / "val" / os.path.splitext(vid("v0"))[0]),
               f"missing: no video file for line 2 of {val_csv} (class {official[0]!r})")
    assert (f"1 annotated class(es) of {val_csv!r} have no usable video ({official[0]!r}); 1 unusable file(s) were "
            f"skipped in this split, e.g. {missing}") in err
    assert prepare_kinetics.main(args + ["--underscore-to-space", "--allow-empty-classes"]) == 0
    assert read_labels_csv(str(out / "k400_labels.csv")) == official
    assert read_list(out / "k400_val.txt")[0] == (f"../k400/val/{vid('v1')}", 1)


def test_a_flat_folder_without_its_annotations_says_how_to_name_them(tmp_path, capsys):
    root = tmp_path / "t400"
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / split / vid(split)).write_bytes(b"x")
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert (f"error: dataset t400: the split folders in {str(root)!r} hold video files and no class folders (the "
            f"flat layout of the official downloads), but the train annotation CSV "
            f"{str(root / 'annotations' / 'train.csv')!r} does not exist; name it with --annotations t400:train=CSV")\
        in err
    # A class-folder tree with an empty split folder is not taken for the flat layout.
    (root / "val" / vid("val")).unlink()
    (root / "train" / vid("train")).unlink()
    (root / "train" / ARM).mkdir()
    (root / "train" / ARM / vid("a")).write_bytes(b"x")
    with pytest.raises(KineticsError, match=r"no class folders in .*val'; a flat folder of videos needs its "
                                            r"annotation CSVs: --annotations"):
        scan_dataset("t400", str(root))


def test_a_long_scan_of_the_flat_layout_says_how_far_it_got(tmp_path, capsys, monkeypatch):
    from evautil.progress import counted
    from tools.kinetics import common

    monkeypatch.setattr(common, "WALK_PROGRESS_EVERY_S", 0.0)  # every file's line due
    flat = make_flat(tmp_path / "t400", {"train": {"a": [vid("A1")], "b": [vid("B1")]},
                                         "val": {"a": [vid("V1")], "b": [vid("V2")]}})
    (flat / "train" / vid("X1")).write_bytes(b"x")  # no row names it: found all the same
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={flat}", "--out", str(tmp_path / "out")]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines()
             if x.startswith("scan t400: ") and not x.startswith("scan t400: reading annotation CSV")]  # its own
    assert [x.split(",")[0] for x in lines[:-1]] == [f"scan t400: {counted(n, 'video file')} so far"
                                                      for n in range(1, 6)]
    assert lines[-1].startswith("scan t400: 5 video files done in 0:00:0")


def test_a_label_not_among_the_official_classes_is_named_with_its_csv_line(tmp_path, kinetics_names, shared_dir,
                                                                             capsys):
    # A typo in one row of a CSV of thousands: the error names the row, in the first CSV giving that label.
    official = kinetics_names["k400"]
    tree = {split: {c: [vid(f"{split[0]}{i}")] for i, c in enumerate(official)} for split in ("train", "val")}
    root = make_flat(tmp_path / "k400", tree)
    for split in ("val", "train"):
        path = root / "annotations" / f"{split}.csv"
        lines = path.read_text().splitlines(keepends=True)
        assert lines[3].startswith("answering questions,")
        lines[3] = lines[3].replace("answering questions", "answering question", 1)
        path.write_text("".join(lines))
    args = ["lists", "--dataset", f"k400={root}", "--out", str(tmp_path / "out"),
            "--official-labels", str(shared_dir / "data" / "labels")]
    assert prepare_kinetics.main(args) == 2
    err = capsys.readouterr().err
    assert (f"missing: 1 ('answering questions'); unexpected: 1 ('answering question' on line 4 of "
            f"{root / 'annotations' / 'train.csv'})") in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_lists_of_a_reencoded_flat_download_name_the_source_annotations(tmp_path, capsys, one_each):
    # A re-encode writes videos only; the lists of its tree said to name "the folder holding train.csv and val.csv",
    # where the re-encode's own report knows which one: the source's.
    src = one_each
    for split, name in (("train", vid("A1")), ("val", vid("V1"))):
        write_clip(src / split / name, t=4)
    dst = tmp_path / "t400_h264"
    assert prepare_kinetics.main(["reencode", "--src", str(src), "--dst", str(dst), "--workers", "1",
                                  "--short-side", "32", "--no-progress"]) == 0
    args = ["lists", "--dataset", f"t400={dst}", "--out", str(tmp_path / "out")]
    capsys.readouterr()
    assert prepare_kinetics.main(args) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"does not exist; {str(dst)!r} is a re-encode of a download whose CSVs are named with "
                        f"--annotations t400={src / 'annotations'}\n") and err.count("\n") == 1
    assert prepare_kinetics.main(args + ["--annotations", f"t400={src / 'annotations'}"]) == 0
    assert read_list(tmp_path / "out" / "t400_train.txt") == [(f"../t400_h264/train/{vid('A1')}", 0)]


def test_spaces_around_the_labels_of_a_csv_are_not_part_of_the_class(tmp_path):
    # A CSV written "youtube_id, label, ..." (its header was read so) gave " arm wrestling": a class of its own,
    # which the Kinetics-722 merge counted beside the class-folder dataset's "arm wrestling".
    root = make_flat(tmp_path / "t400", {"train": {ARM: [vid("A1")], "b": [vid("B1")]},
                                         "val": {ARM: [vid("V1")], "b": [vid("V2")]}})
    for split in ("train", "val"):
        path = root / "annotations" / f"{split}.csv"
        rows = list(csv.reader(path.open(newline="")))
        path.write_text("".join(", ".join(r[1:2] + r[:1] + r[2:]) + "\n" for r in rows))
    assert path.read_text().startswith("youtube_id, label, ") and f", {ARM}, " in path.read_text()
    make_tree(tmp_path / "t700", {"train": {ARM: [vid("C1")]}, "val": {ARM: [vid("C2")]}})
    out = tmp_path / "out"
    assert prepare_kinetics.main(["k722", "--dataset", f"t400={root}", "--dataset", f"t700={tmp_path / 't700'}",
                                  "--out", str(out), "--no-progress"]) == 0
    assert read_labels_csv(str(out / "t400_labels.csv")) == sorted([ARM, "b"])
    assert read_labels_csv(str(out / "k722_labels.csv")) == sorted([ARM, "b"])


def test_an_unannotated_video_whose_name_is_not_utf8_is_reported_escaped(tmp_path, capsys, one_each):
    # Its reason quotes the name no row gives: writing the report's Markdown crashed with a traceback, after the
    # lists were written, and --strict printed the name as '\udcff'.
    root = one_each
    bad = os.path.join(os.fsencode(root / "train"), b"bad\xffname.mp4")
    with open(bad, "wb") as f:
        f.write(b"x")
    out = tmp_path / "out"
    args = ["lists", "--dataset", f"t400={root}", "--out", str(out), "--no-progress"]
    assert prepare_kinetics.main(args) == 0
    reason = r"not in annotations: no row of the train or val CSV names bad\xffname"
    assert f"- `{root / 'train'}/bad\\xffname.mp4`: {reason}\n" in (out / "t400_report.md").read_text()
    capsys.readouterr()
    assert prepare_kinetics.main(args + ["--strict"]) == 2
    assert capsys.readouterr().err.endswith(f"  {root / 'train'}/bad\\xffname.mp4: {reason}\n")


def test_a_flat_download_without_its_val_folder_is_named_so(tmp_path, capsys, without_val):
    # The flat layout needs both split folders: with val/ not there (yet) it was refused as "no class folders in
    # train", with --annotations to try, which then stopped at the missing val/.
    root = without_val
    err = refused_lists(root, tmp_path, capsys)
    assert err == (
        f"error: dataset t400: split folder {str(root / 'val')!r} does not exist (expected <root>/val/<class name>/"
        f"<video>, or the official downloads' flat <root>/val/<youtube_id>_<start>_<end>.<ext>; --train-dir, "
        f"--val-dir name others)\n")


def test_a_flat_split_folder_named_in_another_case_is_named_with_the_flag_that_reads_it(tmp_path, capsys, one_each):
    # TRAIN/ beside val/: "does not exist" with the folder in plain sight, named or found by default alike
    root = one_each
    (root / "train").rename(root / "TRAIN")
    told = (f"error: dataset t400: split folder {str(root / 'train')!r} does not exist, but {str(root / 'TRAIN')!r} "
            f"does, its name in another case: pass --train-dir TRAIN\n")
    assert refused_lists(root, tmp_path, capsys) == told
    assert refused_lists(root, tmp_path, capsys, "--annotations", f"t400={root / 'annotations'}") == told
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(tmp_path / "out"),
                                  "--train-dir", "TRAIN", "--data-root", str(tmp_path)]) == 0
    assert read_list(tmp_path / "out" / "t400_train.txt") == [(f"t400/TRAIN/{vid('A1')}", 0)]


def test_an_annotation_csv_named_in_another_case_is_named(tmp_path, capsys, one_each):
    # Train.csv or VAL.csv where train.csv and val.csv are looked for: "does not exist" with the file in plain sight
    root, folder = one_each, one_each / "annotations"
    (folder / "train.csv").rename(folder / "Train.csv")
    fix = f"{str(folder / 'Train.csv')!r} is there, its name in another case: rename it train.csv\n"
    assert refused_lists(root, tmp_path, capsys).endswith(f"the train annotation CSV {str(folder / 'train.csv')!r} "
                                                          f"does not exist; {fix}")
    assert refused_lists(root, tmp_path, capsys, "--annotations", f"t400={folder}") == (
        f"error: dataset t400: the train annotation CSV {str(folder / 'train.csv')!r} does not exist; {fix}")
    (folder / "Train.csv").rename(folder / "train.csv")
    (folder / "val.csv").rename(folder / "VAL.csv")
    assert refused_lists(root, tmp_path, capsys, "--annotations", f"t400={folder}") == (
        f"error: --annotations t400={folder}: the annotation folder {str(folder)!r} holds neither val.csv nor "
        f"validate.csv; {str(folder / 'VAL.csv')!r} is there, its name in another case: rename it val.csv\n")


def test_an_annotated_split_folder_that_is_a_broken_link_is_named_with_its_target(tmp_path, capsys, without_val):
    # With --annotations, a split folder linked to storage that is gone was "does not exist", unlike the class-folder
    # tree's error: both layouts name the link and its target.
    root = without_val
    target = tmp_path / "unmounted" / "val"
    (root / "val").symlink_to(target)
    assert refused_lists(root, tmp_path, capsys, "--annotations", f"t400={root / 'annotations'}") == (
        f"error: dataset t400: split folder {str(root / 'val')!r} is a symbolic link to {str(target)!r}, which does "
        f"not exist (or is a link loop): mount or fix its target (expected <root>/val/<youtube_id>_<start>_<end>."
        f"<ext>, annotated in {str(root / 'annotations' / 'val.csv')!r})\n")


def test_an_annotation_csv_that_is_a_broken_link_is_named_with_its_target(tmp_path, capsys, one_each):
    # A CSV linked to storage that is gone said "does not exist", which sent the user looking for a file that is
    # there, as a link: named or found by default, it is named with its target, as a split folder is.
    root = one_each
    gone = "which does not exist (or is a link loop): mount or fix its target"
    target = tmp_path / "unmounted" / "val.csv"
    link = tmp_path / "val.csv"
    link.symlink_to(target)
    with pytest.raises(KineticsError) as e:
        read_annotations(str(link))
    assert str(e.value) == f"annotation CSV {str(link)!r} is a symbolic link to {str(target)!r}, {gone}"
    assert refused_lists(root, tmp_path, capsys, f"--annotations=t400:val={link}") == (
        f"error: dataset t400: the val annotation CSV {str(link)!r} is a symbolic link to {str(target)!r}, {gone}\n")
    default = root / "annotations" / "train.csv"
    default.unlink()
    default.symlink_to(tmp_path / "unmounted" / "train.csv")
    err = refused_lists(root, tmp_path, capsys)
    assert f"the train annotation CSV {str(default)!r} is a symbolic link to " \
           f"{str(tmp_path / 'unmounted' / 'train.csv')!r}, {gone}; name it with" in err


def test_labels_of_one_csv_in_other_unicode_forms_are_refused_naming_both_lines(tmp_path, capsys):
    # Rows pasted from a file written on macOS spell 'caf\u00e9' in NFD: two classes that look alike, each with part
    # of the videos, and every later label shifted.
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    root = make_flat(tmp_path / "t400", {"train": {"a": [vid("A1")], nfc: [vid("A2")], nfd: [vid("A3")]},
                                         "val": {"a": [vid("V1")], nfc: [vid("V2")], nfd: [vid("V3")]}})
    assert refused_lists(root, tmp_path, capsys) == (
        f"error: dataset t400: annotation CSV {str(root / 'annotations' / 'train.csv')!r}: labels {nfc!r} (NFC) on "
        f"line 3 and {nfd!r} (NFD) on line 4 differ only in their Unicode form, and would be two classes that look "
        f"alike; write every row's label alike (in NFC, as most systems write names)\n")


def test_a_video_named_otherwise_than_its_row_is_told_the_row_s_name(tmp_path, capsys, one_each):
    # A download that wrote its files with unpadded times (<id>_10_20.mp4) had every video "not in annotations",
    # every row "missing", and nothing said that the names were the difference.
    root = one_each
    for split, name in (("train", vid("A1")), ("val", vid("V1"))):
        (root / split / name).rename(root / split / name.replace("_000010_000020", "_10_20"))
    stem = os.path.splitext(vid("A1"))[0]
    assert (f"not in annotations: no row of the train or val CSV names {stem.replace('_000010_000020', '_10_20')} "
            f"(a row names {stem}: a video's file name is <youtube_id>_<time_start:06d>_<time_end:06d>.<ext>)") \
        in refused_lists(root, tmp_path, capsys)


def test_videos_named_by_their_youtube_id_alone_take_that_id_s_row(tmp_path, capsys):
    # Downloaders name a video <youtube_id>.<ext> by default: every such file was "not in annotations" and every row
    # "missing", and a class without a video stopped the lists. Each now takes its id's one row; an id that two rows
    # name (two clips of one YouTube video) is named as such, not guessed.
    tree = {"train": {"a": [vid("A1"), vid("A2")], "b": [vid("B1")]}, "val": {"a": [vid("V1")], "b": [vid("V2")]}}
    named = make_flat(tmp_path / "named" / "t400", tree)
    root = make_flat(tmp_path / "by_id" / "t400", tree)
    for split, classes in tree.items():
        for f in (f for files in classes.values() for f in files):
            ext = ".webm" if f == vid("B1") else ".mp4"
            (root / split / f).rename(root / split / (f[:11] + ext))
    for top in (named.parent, root.parent):
        assert prepare_kinetics.main(["lists", "--dataset", f"t400={top / 't400'}", "--out", str(top)]) == 0
    ids = {f"t400/{split}/{f}": f"t400/{split}/{f[:11]}{'.webm' if f == vid('B1') else '.mp4'}"
           for split, classes in tree.items() for files in classes.values() for f in files}
    for split in ("train", "val"):
        assert read_list(root.parent / f"t400_{split}.txt") == [
            (ids[rel], lab) for rel, lab in read_list(named.parent / f"t400_{split}.txt")]
    assert json.loads((root.parent / "t400_report.json").read_text())["train_skipped"] == 0
    # A second clip of A2's YouTube video: the file named by the id alone is no longer one row's.
    with open(root / "annotations" / "train.csv", "a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow(annotation_row("b", vid("A2", start=50), "train"))
    capsys.readouterr()
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(root.parent)]) == 0
    a2 = os.path.splitext(vid("A2"))[0]
    reasons = {r["path"]: r["reason"] for r in json.loads((root.parent / "t400_report.json").read_text())[
        "skipped_files"]}
    assert reasons[str(root / "train" / f"{a2[:11]}.mp4")] == (
        f"not in annotations: no row of the train or val CSV names {a2[:11]} (rows name {a2}, "
        f"{os.path.splitext(vid('A2', start=50))[0]}, clips of the same YouTube video: a video's file name is "
        f"<youtube_id>_<time_start:06d>_<time_end:06d>.<ext>)")


def test_a_row_whose_video_is_a_download_not_finished_says_so(tmp_path):
    # A download stopped half-way leaves <name>.mp4.part: its row was "missing" like a video never downloaded, and
    # the .part file one of the entries ignored, nothing tying the two together.
    root = make_flat(tmp_path / "t400", {"train": {"a": [vid("A1"), vid("A2"), vid("A3")]}, "val": {"a": [vid("V1")]}})
    (root / "train" / vid("A2")).rename(root / "train" / (vid("A2") + ".part"))
    (root / "train" / vid("A3")).rename(root / "train" / (vid("A3")[:11] + ".webm.part"))  # named by its id alone
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "t400_report.json").read_text())
    reasons = {r["path"]: r["reason"] for r in rep["skipped_files"]}
    csv_path = root / "annotations" / "train.csv"
    for n, (name, part) in enumerate(((vid("A2"), vid("A2") + ".part"), (vid("A3"), vid("A3")[:11] + ".webm.part"))):
        assert reasons[str(root / "train" / os.path.splitext(name)[0])] == (
            f"missing: no video file for line {3 + n} of {csv_path} (class 'a'); {root / 'train' / part} is a "
            f"download not finished: download the video again")
    assert rep["train_skipped_by_kind"] == {"missing": 2}


def test_the_streams_an_unfinished_merge_left_are_a_download_not_finished(tmp_path):
    # yt-dlp leaves one file per format (<name>.f137.mp4, <name>.f140.m4a) when merging them fails or is stopped,
    # and <name>.temp.mp4 or <name>.mp4.ytdl on the way: those with a video extension counted as videos "not in
    # annotations", and the row as "missing" with no word of the download.
    videos = [vid("A1"), vid("A2"), vid("A3"), vid("A4")]
    root = make_flat(tmp_path / "t400", {"train": {"a": videos}, "val": {"a": [vid("V1")]}})
    train = root / "train"
    left = {vid("A2"): vid("A2")[:-4] + ".f137.mp4", vid("A3"): vid("A3")[:-4] + ".temp.mp4",
            vid("A4"): vid("A4")[:11] + ".mp4.ytdl"}  # the last one named by its YouTube id alone
    for name, leftover in left.items():
        (train / name).rename(train / leftover)
    (train / (vid("A2")[:-4] + ".f140.m4a")).write_bytes(b"audio")
    assert prepare_kinetics.main(["lists", "--dataset", f"t400={root}", "--out", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "t400_report.json").read_text())
    reasons = {r["path"]: r["reason"] for r in rep["skipped_files"]}
    csv_path = root / "annotations" / "train.csv"
    for line, name in enumerate(videos[1:], start=3):
        named = {train / left[name]} | ({train / (name[:-4] + ".f140.m4a")} if name == vid("A2") else set())
        reason = reasons[str(train / os.path.splitext(name)[0])]
        head, part = f"missing: no video file for line {line} of {csv_path} (class 'a'); ", reason.split("; ")[-1]
        assert reason.startswith(head) and part.endswith(" is a download not finished: download the video again")
        assert Path(part.split(" is a download")[0]) in named
    assert rep["train_skipped_by_kind"] == {"missing": 3}
    assert read_list(tmp_path / "t400_train.txt") == [(f"t400/train/{vid('A1')}", 0)]


def test_reading_a_large_annotation_csv_says_so_unless_no_progress(tmp_path, capsys, monkeypatch):
    # A 650,000-row CSV took seconds before the scan's first line, with nothing on stderr.
    from tools.kinetics import annotations

    root = make_flat(tmp_path / "t400", {"train": {"a": [vid("a1")]}, "val": {"a": [vid("v1")]}})
    monkeypatch.setattr(annotations, "ANNOUNCE_CSV_BYTES", 0)  # every CSV is large
    args = ["lists", "--dataset", f"t400={root}", "--out", str(tmp_path / "out")]
    assert prepare_kinetics.main(args) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if "reading annotation CSV" in x]
    assert [x.rsplit(" (", 1)[0] for x in lines] == [
        f"scan t400: reading annotation CSV {root / 'annotations' / split}.csv" for split in ("train", "val")]
    assert prepare_kinetics.main(args + ["--no-progress"]) == 0
    assert "reading annotation CSV" not in capsys.readouterr().err


def test_a_csv_without_time_columns_names_its_videos_by_youtube_id_alone(tmp_path, capsys):
    # A CSV of labels and YouTube ids only (no time_start, time_end) was an error, although a video named by its id
    # alone was already matched by the id. Its rows now name videos by id: a file <id>.<ext>, or <id>_<start>_<end>
    # with any times, takes its id's row, and one line says that the times were absent.
    tree = {"train": {"a": [vid("A1"), vid("A2")], "b": [vid("B1")]}, "val": {"a": [vid("V1")], "b": [vid("V2")]}}
    named = make_flat(tmp_path / "named" / "t400", tree)
    root = make_flat(tmp_path / "untimed" / "t400", tree)
    for split, classes in tree.items():
        rows = [[cls, f[:11], split] for cls, files in classes.items() for f in files]
        write_csv(root / "annotations" / f"{split}.csv", rows, ["label", "youtube_id", "split"])
    (root / "train" / vid("A1")).rename(root / "train" / f"{vid('A1')[:11]}.mp4")  # named by the id alone
    capsys.readouterr()
    for top in (named.parent, root.parent):
        assert prepare_kinetics.main(["lists", "--dataset", f"t400={top / 't400'}", "--out", str(top)]) == 0
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "has neither time_start nor time_end" in ln]
    assert [str(root / "annotations" / f"{split}.csv") in ln for ln, split in zip(notes, ("train", "val"))] == [
        True, True]
    for split in ("train", "val"):
        assert read_list(root.parent / f"t400_{split}.txt") == [
            (rel.replace(vid("A1"), f"{vid('A1')[:11]}.mp4"), lab)
            for rel, lab in read_list(named.parent / f"t400_{split}.txt")]
    assert json.loads((root.parent / "t400_report.json").read_text())["train_skipped"] == 0
