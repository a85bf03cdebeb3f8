"""What the inference tools (tools/predict.py, tools/extract_features.py) say of inputs they cannot use: alike, and
before they write anything."""

from __future__ import annotations

import os

import pytest

from tests.conftest import ROOT
from tools import extract_features, predict

DEMO = str(ROOT / "configs" / "demo.yaml")


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs a file whose read fails: /proc/self/mem")
@pytest.mark.parametrize("tool, out_flag, opts", [
    (predict, "--work-dir", ["--opts", "DATA.LABEL_LIST", ""]),  # the demo's label list is made with its data set
    (extract_features, "--out", []),
], ids=["predict", "extract_features"])
def test_an_input_that_cannot_be_read_is_named_with_its_reason_before_writing(tool, out_flag, opts, tmp_path, capsys):
    # An OSError is "cannot read <file>: <reason>", naming the file the read failed on. predict said "error: [Errno 5]
    # Input/output error: '/proc/self/mem'"; extract_features called any OSError naming no file "cannot write in
    # --out" (a config the storage could not read sent the user to the output folder), then "cannot read an input
    # file", which of them unsaid.
    out, weights, video = tmp_path / "out", tmp_path / "w.pth", str(tmp_path / "a.mp4")

    def run(*args: str) -> tuple[int, str]:
        rc = tool.main([*args, out_flag, str(out), *opts])
        assert not out.exists()
        return rc, capsys.readouterr().err

    # an error of the tool's own, with no reason from the system, is as it was (extract_features': not "cannot write")
    assert run(video, "--cfg", DEMO, "--weights", str(weights)) == (2, f"error: weights file not found: {weights}\n")
    weights.write_bytes(b"weights")  # never loaded: the config is read first
    assert run(video, "--cfg", "/proc/self/mem", "--weights", str(weights)) == \
        (2, "error: cannot read /proc/self/mem: Input/output error\n")
    listed = tmp_path / "videos.txt"  # a list of videos the storage cannot read
    listed.symlink_to("/proc/self/mem")
    assert run(str(listed), "--cfg", DEMO, "--weights", str(weights)) == \
        (2, f"error: cannot read {listed}: Input/output error\n")


@pytest.mark.parametrize("tool, out_flag, opts", [
    (predict, "--work-dir", ["--opts", "DATA.LABEL_LIST", ""]),
    (extract_features, "--out", []),
], ids=["predict", "extract_features"])
def test_an_empty_output_folder_is_refused_in_one_line_naming_the_flag(tool, out_flag, opts, tmp_path, capsys):
    """An empty folder was checked as the current one, then made as "": "error: --work-dir : cannot create the folder
    (No such file or directory)", "error: cannot write in --out : No such file or directory"."""
    weights, video = tmp_path / "w.pth", str(tmp_path / "a.mp4")
    weights.write_bytes(b"weights")  # never loaded: the output is checked first
    assert tool.main([video, "--cfg", DEMO, "--weights", str(weights), out_flag, "", *opts]) == 2
    assert capsys.readouterr().err == f"error: {out_flag} is empty; give a folder\n"


def test_a_video_list_numbers_its_lines_as_an_editor_does(tmp_path):
    """The list was cut with ``str.splitlines``, which also cuts at U+2028 and a form feed: a label out of range
    was said to be on a later line than the one an editor (and the training list reader) shows."""
    from dali_pipelines.filelist import LabelRangeError
    from tools.inference import videos_of_inputs

    named = [tmp_path / "a\u2028b.mp4", tmp_path / "c\x0cd.mp4"]
    for video in named:
        video.write_bytes(b"x")
    lst = tmp_path / "videos.txt"
    lst.write_text("a\u2028b.mp4 1\nc\x0cd.mp4 0\nc\x0cd.mp4 7\n", encoding="utf-8")
    with pytest.raises(LabelRangeError) as e:
        videos_of_inputs([str(lst)], num_classes=4)
    assert str(e.value).startswith(f"{lst}:3: label 7 is outside [0, 4) as the model's head has 4 classes")
    lst.write_text("a\u2028b.mp4 1\nc\x0cd.mp4 0\n", encoding="utf-8")
    assert videos_of_inputs([str(lst)], num_classes=4) == [(str(named[0]), str(named[0]), 1),
                                                           (str(named[1]), str(named[1]), 0)]


def test_a_video_list_reads_its_labels_as_the_training_reader_does(tmp_path):
    """'+3' is label 3 to the training list reader (int()); the inference tools took it for the end of the file
    name ('a.mp4 +3', no such file) and the video went unread and unlabelled."""
    from dali_pipelines.filelist import read_file_list
    from tools.inference import videos_of_inputs

    for name in ("a.mp4", "b c.mp4"):
        (tmp_path / name).write_bytes(b"x")
    lst = tmp_path / "videos.txt"
    lst.write_text("a.mp4 +3\nb c.mp4 1\n", encoding="utf-8")
    trained = [(e.path, e.path, e.label) for e in read_file_list(str(lst), str(tmp_path))]
    a, bc = str(tmp_path / "a.mp4"), str(tmp_path / "b c.mp4")
    assert videos_of_inputs([str(lst)], num_classes=4) == trained == [(a, a, 3), (bc, bc, 1)]


@pytest.mark.parametrize("lines_before", [2, 3000])  # 3000: past the first chunk the text decoder reads
def test_a_video_list_that_is_not_utf8_names_its_line(tmp_path, lines_before):
    # It gave the byte offset within the decoder's chunk ("at byte 21" for line 3), which finds no line in the list.
    from tools.inference import InputError, collect_videos

    lst = tmp_path / "videos.txt"
    lst.write_bytes(b"".join(b"v%d.mp4 0\n" % i for i in range(lines_before)) + b"caf\xe9.mp4 1\nlast.mp4 0\n")
    with pytest.raises(InputError) as e:
        collect_videos([str(lst)])
    assert str(e.value) == (f"{lst}, line {lines_before + 1}: not UTF-8 text (invalid continuation byte, byte 0xe9); "
                            "a video list is UTF-8")


def test_a_folder_search_leaves_out_a_macs_appledouble_files(tmp_path):
    """A folder copied from a Mac holds a ``._`` file beside each video (and a .DS_Store): each was reported as an
    unreadable video, hiding the real failures among them. A folder search leaves them out; one named on its own,
    or in a list, is still tried (and named when unreadable)."""
    from tools.inference import videos_of_inputs

    (tmp_path / "clips" / "day 2").mkdir(parents=True)
    for name in ("clips/a.mp4", "clips/._a.mp4", "clips/.DS_Store", "clips/day 2/b.MOV", "clips/day 2/._b.MOV"):
        (tmp_path / name).write_bytes(b"\x00\x05\x16\x07" if "._" in name else b"")
    folder, named = str(tmp_path / "clips"), str(tmp_path / "clips" / "._a.mp4")
    lst = tmp_path / "list.txt"
    lst.write_text("clips/a.mp4\nclips/day 2/._b.MOV\n")
    got = [path for _, path, _ in videos_of_inputs([folder, named, str(lst)])]
    assert got == [str(tmp_path / p) for p in ("clips/a.mp4", "clips/day 2/b.MOV", "clips/._a.mp4", "clips/a.mp4",
                                               "clips/day 2/._b.MOV")]


def test_a_leading_tilde_in_a_name_given_from_python_is_the_home_folder(tmp_path, monkeypatch):
    """Predictor.predict(["~/a.mp4"]) reported a missing file (a folder named ~ in the working folder), while the
    commands' flags and the config keys read ~ as the home folder: now the inputs and ``root`` are expanded too, and
    a video named on its own keeps the name it was given, as Predictor's records pair with the videos given."""
    from tools.inference import InputError, videos_of_inputs

    home = tmp_path / "home"
    (home / "clips").mkdir(parents=True)
    (home / "clips" / "a.mp4").write_bytes(b"")
    (home / "list.txt").write_text("clips/a.mp4 1\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    a = str(home / "clips" / "a.mp4")
    assert videos_of_inputs(["~/clips/a.mp4", "~/clips", "~/list.txt", "~/clips/*.mp4"]) == \
        [("~/clips/a.mp4", a, None), (a, a, None), (a, a, 1), (a, a, None)]
    assert videos_of_inputs(["a.mp4"], root="~/clips") == [("a.mp4", a, None)]
    with pytest.raises(InputError, match="no videos found in ~/empty"):
        (home / "empty").mkdir()
        videos_of_inputs(["~/empty"])
