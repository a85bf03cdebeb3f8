"""tools/verify_data.py on real clips mixed with broken files: every bad file named with its reason and exit code 1;
a clean list reports its codecs, sizes and frame counts with exit code 0; --dry-run opens no video."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_interrupt import _interrupt_when

ROOT = Path(__file__).resolve().parents[1]
GOOD = ("clip_32frames_340x256.mp4", "clip_mpeg4_320x240.avi")


def _verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "verify_data.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture()
def videos(tmp_path, real_clips_dir) -> Path:
    root = tmp_path / "videos"
    root.mkdir()
    for name in GOOD:
        os.symlink(real_clips_dir / name, root / name)
    data = (real_clips_dir / GOOD[0]).read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "garbage.mp4").write_bytes(b"\x00\x01 this is not a video" * 100)
    (root / "empty.mp4").write_bytes(b"")
    return root


def test_mixed_list_names_every_bad_file(tmp_path, videos):
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(f"{GOOD[0]} 0\ntruncated.mp4 1\n{GOOD[1]} 1\ngarbage.mp4 0\nempty.mp4 2\nmissing.mp4 2\n")
    r = _verify(str(mixed), "--root", str(videos), "--workers", "2")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"video index of {mixed}: 6 videos, 2 good, 4 bad" in r.stdout
    bad = {ln.strip().split(": ", 1)[0]: ln.strip().split(": ", 1)[1] for ln in r.stdout.splitlines()
           if ln.startswith("    ")}
    assert set(bad) == {str(videos / n) for n in ("truncated.mp4", "garbage.mp4", "empty.mp4", "missing.mp4")}
    assert bad[str(videos / "empty.mp4")] == "zero-byte file" and bad[str(videos / "missing.mp4")] == "missing file"
    assert "not a readable video container" in bad[str(videos / "garbage.mp4")]
    # an MP4 cut short loses its index (moov): not a readable container, with FFmpeg's reason
    assert bad[str(videos / "truncated.mp4")].startswith("not a readable video container (")
    assert "verified 1 list, 6 videos: 4 unreadable" in r.stdout
    # without a terminal: the build's progress as plain lines on stderr, and not the index's own warnings
    assert "indexing mixed.txt: probing 5 of 6 videos" in r.stderr  # the missing file is not probed
    assert "indexing mixed.txt: 5 videos done in" in r.stderr
    assert "bad video" not in r.stderr
    quarantine = (tmp_path / "mixed.txt.quarantine.txt").read_text()
    assert sorted(ln.split("\t")[0] for ln in quarantine.splitlines()) == [
        "empty.mp4", "garbage.mp4", "missing.mp4", "truncated.mp4"]


def test_clean_lists_exit_0_with_their_statistics(tmp_path, videos):
    lists = []
    for i, name in enumerate(GOOD):
        lst = tmp_path / f"clean{i}.txt"
        lst.write_text(f"{name} {i}\n")
        lists.append(str(lst))
    r = _verify(*lists, "--root", str(videos), "--workers", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "frames min/median/max: 32/32/32; codecs: h264 1; sizes: 340x256 1" in r.stdout
    assert "frames min/median/max: 164/164/164; codecs: mpeg4 1; sizes: 320x240 1" in r.stdout
    # each list's size in a unit that shows it (158,581 and 294,566 bytes), not "0.00 GiB"
    assert "  154.86 KiB of readable video" in r.stdout and "  287.66 KiB of readable video" in r.stdout
    assert "verified 2 lists, 2 videos: all readable" in r.stdout


def test_a_file_on_several_lines_counts_its_bytes_once(tmp_path, videos):
    """The size on disk counted a file once per line naming it: this list, naming one clip on three lines,
    reported 752.25 KiB of video where 442.53 KiB lie on disk."""
    lst = tmp_path / "repeated.txt"
    lst.write_text(f"{GOOD[0]} 0\n{GOOD[0]} 1\n{GOOD[1]} 1\n{GOOD[0]} 0\n")
    r = _verify(str(lst), "--root", str(videos), "--workers", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "  442.53 KiB of readable video" in r.stdout  # 158,581 + 294,566 bytes
    assert "verified 1 list, 4 videos: all readable" in r.stdout  # still an entry per line


def test_a_list_given_twice_is_verified_and_counted_once(tmp_path, videos):
    """A list given twice (here once through a ../ path) was verified twice: "verified 2 lists, 2 videos" for one
    list of one video; a config whose DATA.TRAIN_FILE is its DATA.VAL_FILE did the same."""
    lst = tmp_path / "clean.txt"
    lst.write_text(f"{GOOD[0]} 0\n")
    again = str(tmp_path / "videos" / ".." / "clean.txt")
    r = _verify(str(lst), again, "--root", str(videos), "--workers", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"list {again}: given more than once, verified once\n" in r.stdout
    assert r.stdout.count("video index of ") == 1 and "verified 1 list, 1 video: all readable" in r.stdout


def test_dry_run_checks_config_model_and_lists_without_opening_videos(tmp_path, videos):
    lst = tmp_path / "train.txt"
    lst.write_text(f"{GOOD[0]} 0\ngarbage.mp4 3\n")
    opts = ["--opts", "DATA.ROOT", str(videos), "DATA.TRAIN_FILE", str(lst), "DATA.VAL_FILE", str(lst)]
    r = _verify("--cfg", str(ROOT / "configs" / "demo.yaml"), "--dry-run", *opts)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "model eva-tiny/8:" in r.stdout and f"list {lst}: 2 videos, well-formed" in r.stdout
    assert not (tmp_path / "train.txt.index.npz").exists()  # nothing was probed
    # a label outside the config's 4 classes, and a bad config value: one line, exit 2, before any probing
    lst.write_text(f"{GOOD[0]} 7\n")
    r = _verify("--cfg", str(ROOT / "configs" / "demo.yaml"), "--dry-run", *opts)
    assert r.returncode == 2 and f"{lst}:1: label 7 is outside [0, 4)" in r.stderr
    r = _verify("--cfg", str(ROOT / "configs" / "demo.yaml"), "--dry-run", *opts, "TRAIN.NOPE", "1")
    assert r.returncode == 2 and "TRAIN.NOPE" in r.stderr and "Traceback" not in r.stderr


def test_a_label_list_giving_one_name_to_several_classes_is_said_as_train_and_predict_say_it(tmp_path, videos,
                                                                                             capsys):
    """verify_data read the config's label list and said nothing of two classes with one name, which train.py and
    predict warn of; it is a warning, the lists still verify."""
    from engine.evaluate import names_given_twice, read_label_names
    from tools import verify_data

    lst = tmp_path / "train.txt"
    lst.write_text(f"{GOOD[0]} 0\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n0,abseiling\n1,bowling\n2,abseiling\n3,archery\n")
    opts = ["--opts", "DATA.ROOT", str(videos), "DATA.TRAIN_FILE", str(lst), "DATA.VAL_FILE", str(lst),
            "DATA.LABEL_LIST", str(labels)]
    assert verify_data.main(["--cfg", str(ROOT / "configs" / "demo.yaml"), "--dry-run", *opts]) == 0
    said = names_given_twice(str(labels), read_label_names(str(labels), 4))
    assert "'abseiling' (ids 0, 2)" in said
    assert capsys.readouterr().err.splitlines() == [f"warning: {said}"]
    labels.write_text("id,name\n0,abseiling\n1,bowling\n2,archery\n3,air drumming\n")
    assert verify_data.main(["--cfg", str(ROOT / "configs" / "demo.yaml"), "--dry-run", *opts]) == 0
    assert capsys.readouterr().err == ""


def test_a_dry_run_without_a_config_vouches_for_the_lists_only(tmp_path, videos):
    """Given lists alone, the dry run said "config, model and lists are valid": no config or model was checked."""
    lst = tmp_path / "train.txt"
    lst.write_text(f"{GOOD[0]} 0\n")
    r = _verify(str(lst), "--root", str(videos), "--dry-run")
    assert r.returncode == 0 and r.stdout.splitlines() == [
        f"list {lst}: 1 video, well-formed",
        "dry run: the lists are well-formed (no --cfg: no config or model was checked); no video was opened"]
    assert not (tmp_path / "train.txt.index.npz").exists()


def test_main_called_in_a_process_that_goes_on_leaves_its_logging_as_it_was(tmp_path, videos, capsys):
    """main silences the index's own warnings for its report; called in-process (a test, a notebook) it left the
    data pipeline's logger at ERROR, and the process's later index builds logged no warning or note."""
    import logging

    from tools import verify_data

    lst = tmp_path / "train.txt"
    lst.write_text(f"{GOOD[0]} 0\n")
    pipeline_logger = logging.getLogger("dali_pipelines")
    before = pipeline_logger.level
    try:
        pipeline_logger.setLevel(logging.INFO)
        assert verify_data.main([str(lst), "--root", str(videos), "--workers", "1"]) == 0
        assert pipeline_logger.level == logging.INFO
    finally:
        pipeline_logger.setLevel(before)
    assert f"list {lst}: 1 video" in capsys.readouterr().out


def test_a_label_out_of_range_names_the_setting_of_the_classes(tmp_path, videos):
    """The range's bound came from DATA.NUM_CLASSES (--cfg) or --num-classes, named neither."""
    lst = tmp_path / "train.txt"
    lst.write_text(f"{GOOD[0]} 0\n{GOOD[1]} 7\n")
    opts = ["--opts", "DATA.ROOT", str(videos), "DATA.TRAIN_FILE", str(lst), "DATA.VAL_FILE", str(lst)]
    r = _verify("--cfg", str(ROOT / "configs" / "demo.yaml"), "--dry-run", *opts)
    assert r.returncode == 2 and r.stderr == (
        f"error: {lst}:2: label 7 is outside [0, 4) as DATA.NUM_CLASSES is 4 (line '{GOOD[1]} 7'): fix the label, "
        "or set DATA.NUM_CLASSES to the number of classes (at least 8)\n")
    for given in (["--cfg", str(ROOT / "configs" / "demo.yaml"), *opts], []):  # the flag wins over the config
        r = _verify(str(lst), "--root", str(videos), "--num-classes", "5", "--dry-run", *given)
        assert r.returncode == 2 and r.stderr == (
            f"error: {lst}:2: label 7 is outside [0, 5) as --num-classes is 5 (line '{GOOD[1]} 7'): fix the label, "
            "or set --num-classes to the number of classes (at least 8)\n")


def test_a_negative_label_without_a_class_count_is_said_to_be_negative(tmp_path, videos):
    """Without --num-classes, a label of -1 was refused as "outside [0, 2**63)": no word of what to fix."""
    lst = tmp_path / "list.txt"
    lst.write_text(f"{GOOD[0]} 0\n{GOOD[1]} -1\n")
    r = _verify(str(lst), "--root", str(videos), "--dry-run")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith(
        f"error: {lst}:2: label -1 is negative (line '{GOOD[1]} -1'): a label is a class number, counted from 0: "
        "fix the label"), r.stderr


@pytest.mark.parametrize("classes_name", ["DATA.NUM_CLASSES", "--num-classes"])
def test_the_index_build_names_the_setting_of_the_classes_too(tmp_path, classes_name):
    """The lists' format check names it (above), but the index build that follows read the list again naming
    "num_classes", a name the user never typed: a list edited between the two, or verify() called on its own."""
    from dali_pipelines.filelist import LabelRangeError
    from tools.verify_data import verify

    lst = tmp_path / "train.txt"
    lst.write_text(f"{GOOD[0]} 0\n{GOOD[1]} 7\n")
    with pytest.raises(LabelRangeError) as e:
        verify([(str(lst), str(tmp_path), 4)], workers=1, full_decode=False, classes_name=classes_name)
    assert str(e.value) == (f"{lst}:2: label 7 is outside [0, 4) as {classes_name} is 4 (line '{GOOD[1]} 7'): fix "
                            f"the label, or set {classes_name} to the number of classes (at least 8)")


def test_a_root_that_is_not_a_folder_is_one_line_before_any_video_is_looked_for(tmp_path):
    """--root (or DATA.ROOT) mistyped: every video was reported missing, one line each, and the list's quarantine
    file rewritten with all of them (exit 1); --dry-run called the lists valid (exit 0)."""
    lst = tmp_path / "train.txt"
    lst.write_text("clips/a.mp4 0\nclips/b.mp4 1\n")
    gone = tmp_path / "typo"
    want = f"{gone} is not an existing folder, and the paths of {lst} are relative to it (first: 'clips/a.mp4'): set "
    for args, name in ((["--root", str(gone)], "--root"), (["--root", str(gone), "--dry-run"], "--root"),
                       (["--cfg", str(ROOT / "configs" / "demo.yaml"), "--dry-run", "--opts", "DATA.ROOT", str(gone),
                         "DATA.TRAIN_FILE", str(lst), "DATA.VAL_FILE", str(lst), "DATA.LABEL_LIST", ""], "DATA.ROOT")):
        r = _verify(str(lst), *args) if name == "--root" else _verify(*args)
        assert r.returncode == 2 and r.stderr == f"error: {name} = {want}{name} to the folder they are relative to\n", \
            r.stdout + r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.txt"]  # no index, no quarantine file


def test_a_dry_run_names_a_list_none_of_whose_videos_is_where_its_paths_lead(tmp_path):
    """A list in another folder than its videos (no --root: the list's own folder): --dry-run called it valid, and
    the error then said "--root = <the list's folder>" though no --root was given."""
    lst = tmp_path / "train.txt"
    lst.write_text("clips/a.mp4 0\nclips/b.mp4 1\n")
    r = _verify(str(lst), "--dry-run")
    assert r.returncode == 2 and r.stderr == (
        f"error: the list's own folder {tmp_path} (no --root given) holds none of the 2 videos listed in {lst}, whose "
        "paths are relative to it (first: 'clips/a.mp4'): set --root to the folder its paths are relative to\n"), \
        r.stdout + r.stderr
    r = _verify(str(lst), "--root", str(tmp_path))  # given, the flag is named as set (and no video is looked for)
    assert r.returncode == 2 and r.stderr.startswith(f"error: --root = {tmp_path} holds none of the 2 videos"), \
        r.stdout + r.stderr


def test_a_list_linked_from_another_folder_is_said_to_be_a_link(tmp_path):
    """A list linked into another folder (lists/train.txt -> data/train.txt) whose paths are relative to its
    target's folder: the error named the link's folder as the list's own, and never the folder that holds them."""
    (tmp_path / "data" / "clips").mkdir(parents=True)
    (tmp_path / "data" / "clips" / "a.mp4").write_bytes(b"x")
    (tmp_path / "data" / "train.txt").write_text("clips/a.mp4 0\nclips/b.mp4 1\n")
    (tmp_path / "lists").mkdir()
    lst = tmp_path / "lists" / "train.txt"
    lst.symlink_to(tmp_path / "data" / "train.txt")
    r = _verify(str(lst), "--dry-run")
    assert r.returncode == 2 and r.stderr == (
        f"error: the list's own folder {lst.parent} (no --root given) holds none of the 2 videos listed in {lst}, "
        f"whose paths are relative to it (first: 'clips/a.mp4'); {lst} is a symbolic link to "
        f"{tmp_path / 'data' / 'train.txt'}, whose folder holds that file: set --root to {tmp_path / 'data'}\n"), \
        r.stdout + r.stderr


def test_config_problems_are_one_line_exit_2(tmp_path, videos):
    (tmp_path / "latin1.yaml").write_bytes("OUTPUT: caf\xe9\n".encode("latin-1"))
    r = _verify("--cfg", str(tmp_path / "latin1.yaml"), "--dry-run")
    want = f"error: {tmp_path / 'latin1.yaml'}, line 1: not UTF-8 text (invalid continuation byte, byte 0xe9)\n"
    assert r.returncode == 2 and r.stderr == want, r.stderr
    (tmp_path / "list.txt").write_text(f"{GOOD[0]} 0\n")
    (tmp_path / "labels.csv").write_text("id,name\n0,a\nb\n")
    (tmp_path / "cfg.yaml").write_text(f"DATA:\n  ROOT: {videos}\n  VAL_FILE: {tmp_path / 'list.txt'}\n"
                                       f"  LABEL_LIST: {tmp_path / 'labels.csv'}\n  NUM_CLASSES: 2\n")
    r = _verify("--cfg", str(tmp_path / "cfg.yaml"), "--dry-run")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "labels.csv, line 3: expected 'id,name'" in r.stderr


def test_opts_take_values_that_look_like_flags_and_flags_may_follow(tmp_path, videos):
    """--opts as in train.py: -1e-6 is a value, not a flag, and a flag after the pairs is still a flag."""
    lst = tmp_path / "train.txt"
    lst.write_text(f"{GOOD[0]} 0\n")
    opts = ["--opts", "DATA.ROOT", str(videos), "DATA.TRAIN_FILE", str(lst), "DATA.VAL_FILE", str(lst)]
    r = _verify("--cfg", str(ROOT / "configs" / "demo.yaml"), *opts, "MODEL.INIT_SCALE", "-1e-3", "--dry-run")
    assert r.returncode == 0 and "model eva-tiny/8:" in r.stdout, r.stderr
    assert not (tmp_path / "train.txt.index.npz").exists()  # --dry-run was taken as the flag
    r = _verify("--cfg", str(ROOT / "configs" / "demo.yaml"), *opts, "TRAIN.LR", "-1e-6", "--dry-run")
    assert r.returncode == 2 and r.stderr == "error: TRAIN.LR = -1e-06 must not be negative\n", r.stderr


def test_opts_without_a_config_are_refused_not_ignored(tmp_path):
    """--opts DATA.ROOT ... without --cfg was dropped without a word: the videos were looked for elsewhere."""
    lst = tmp_path / "list.txt"
    lst.write_text("a.mp4 0\n")
    r = _verify(str(lst), "--opts", "DATA.ROOT", str(tmp_path / "videos"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith(
        f"error: --opts overrides keys of --cfg, and no --cfg is given (DATA.ROOT {tmp_path / 'videos'}); "
        "without a config use --root and --num-classes"), r.stderr
    assert not (tmp_path / "list.txt.index.npz").exists()


def test_a_negative_number_of_workers_is_refused_in_one_line(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("a.mp4 0\n")
    r = _verify(str(lst), "--workers", "-2")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith("error: --workers -2: give a number of processes, or 0 for "
                                                      "every core"), r.stderr
    assert not (tmp_path / "list.txt.index.npz").exists()


@pytest.mark.parametrize("flag, says", [("--root", "give a folder"), ("--cfg", "give a config file")])
def test_an_empty_root_or_config_is_refused_not_taken_for_none(tmp_path, videos, flag, says):
    """--root "$DATA" with DATA unset verified the videos beside the list ("no --root given"), and --cfg "$CFG"
    beside a list verified it without the config: an empty value is one line, exit 2."""
    lst = tmp_path / "list.txt"
    lst.write_text(f"videos/{GOOD[0]} 0\n")
    r = _verify(str(lst), flag, "", "--workers", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith(f"error: {flag} is empty; {says}, or leave {flag} out")
    assert not (tmp_path / "list.txt.index.npz").exists()


def test_a_number_of_classes_below_1_is_refused_in_one_line(tmp_path):
    """--num-classes 0 reported every line's label as outside [0, 0)."""
    lst = tmp_path / "list.txt"
    lst.write_text("a.mp4 0\n")
    r = _verify(str(lst), "--num-classes", "0")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith(
        "error: --num-classes 0: give the number of classes (labels lie in [0, N)), at least 1"), r.stderr
    assert not (tmp_path / "list.txt.index.npz").exists()


@pytest.mark.parametrize("opts,needle", [
    (["MODEL.ARCH", "eva-tiny/9"], "MODEL.ARCH 'eva-tiny/9' is not a known preset"),
    (["DATA.INPUT_SIZE", "36"], "DATA.INPUT_SIZE 36 is not divisible by the patch size 8"),
])
def test_a_model_the_config_cannot_build_is_one_line_exit_2(tmp_path, opts, needle):
    """The model's presets are checked where the model is built: that was a traceback here."""
    lst = tmp_path / "list.txt"
    lst.write_text("a.mp4 0\n")
    r = _verify("--cfg", str(ROOT / "configs" / "demo.yaml"), "--dry-run", "--opts", "DATA.VAL_FILE", str(lst),
                "DATA.TRAIN_FILE", "", *opts)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and needle in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def _verify_with_a_hanging_probe(*args: str) -> subprocess.CompletedProcess:
    """verify_data.py whose probes never answer for files named with ``crashing_jobs.STALL_MARK``."""
    script = ("import runpy, sys\n"
              "import dali_pipelines.index as index\n"
              "from tests import crashing_jobs\n"
              "index._probe_job = crashing_jobs.stalling_probe_job\n"
              f"sys.argv = ['verify_data.py', *{list(args)!r}]\n"
              f"runpy.run_path({str(ROOT / 'tools' / 'verify_data.py')!r}, run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_video_whose_probe_does_not_answer_is_reported_and_the_others_verified(tmp_path, videos):
    """The time limit comes from --video-timeout, else from the config's DATA.VIDEO_TIMEOUT_S: a probe that does not
    answer in time makes its video unreadable this time only; every other video is verified."""
    from tests.crashing_jobs import ANSWERS_WITHIN_S, STALL_MARK

    os.symlink(videos / GOOD[0], videos / f"hangs_{STALL_MARK}.mp4")
    lst = tmp_path / "list.txt"
    lst.write_text(f"{GOOD[0]} 0\nhangs_{STALL_MARK}.mp4 1\n{GOOD[1]} 1\n")
    # limits the good videos meet on a loaded machine too, and told apart: the option's, then the config's
    option, config = f"{ANSWERS_WITHIN_S + 0.5:g}", f"{ANSWERS_WITHIN_S:g}"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"DATA:\n  ROOT: {videos}\n  VAL_FILE: {lst}\n  NUM_CLASSES: 2\n"
                   f"  VIDEO_TIMEOUT_S: {ANSWERS_WITHIN_S!r}\n")
    for args, limit in [([str(lst), "--root", str(videos), "--video-timeout", option], option),
                        (["--cfg", str(cfg)], config)]:
        r = _verify_with_a_hanging_probe(*args, "--workers", "2")
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"video index of {lst}: 3 videos, 2 good, 1 bad" in r.stdout
        (line,) = [ln.strip() for ln in r.stdout.splitlines() if ln.startswith("    ")]
        assert line.startswith(f"{videos / f'hangs_{STALL_MARK}.mp4'}: no answer while probing (no result within "
                               f"{limit} s, the only item in flight)"), line
        assert line.endswith("left out of this build only, the next one probes it again"), line


def test_a_negative_video_timeout_is_refused_in_one_line(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("a.mp4 0\n")
    r = _verify(str(lst), "--video-timeout", "-1")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith("error: --video-timeout -1: give seconds, or 0 for no limit")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=lambda s: s.name)
def test_a_stop_signal_saves_the_videos_probed_says_so_and_exits_4(tmp_path, videos, sig):
    """A batch scheduler stops a job with SIGTERM (SLURM also SIGUSR1 with --signal): as after a Ctrl-C, the videos
    probed so far are saved and the same command probes only the rest, with one line and exit code 4 (as train.py),
    not a process killed by the signal (143) that loses them all."""
    from tests.crashing_jobs import STALL_MARK

    os.symlink(videos / GOOD[0], videos / f"hangs_{STALL_MARK}.mp4")  # never answered for: the build goes on
    names = [f"{i}.mp4" for i in range(6)]
    for name in names:
        os.symlink(videos / GOOD[0], videos / name)
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{name} 0\n" for name in names) + f"hangs_{STALL_MARK}.mp4 1\n")
    script = ("import runpy, sys\n"
              "import dali_pipelines.index as index\n"
              "from tests import crashing_jobs\n"
              "index._probe_job = crashing_jobs.stalling_probe_job\n"
              "index._LOG_EVERY_S = 0.0  # a progress line per video probed\n"
              f"sys.argv = ['verify_data.py', {str(lst)!r}, '--root', {str(videos)!r}, '--workers', '2', "
              "'--video-timeout', '0']\n"
              f"runpy.run_path({str(ROOT / 'tools' / 'verify_data.py')!r}, run_name='__main__')\n")
    # the whole job is signalled, as a scheduler does (the probing processes ignore it), once all but the hanging
    # video are probed
    status, err = _interrupt_when([sys.executable, "-c", script], ROOT, settle_s=0.0, sig=sig,
                                  started=lambda so_far: f"{len(names)} of {len(names) + 1} videos done" in so_far)
    assert status == 4, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        f"stopped: {sig.name} received: the videos probed so far are saved in each list's <list>.index.npz; the "
        "same command probes only the rest (exit code 4)"), err
    assert (tmp_path / "list.txt.index.npz").is_file()
    lst.write_text("".join(f"{name} 0\n" for name in names))  # the same list without the hanging file
    r = _verify(str(lst), "--root", str(videos), "--workers", "1")
    assert r.returncode == 0 and "probing" not in r.stderr, r.stderr  # every video known from the saved index


def test_a_configs_missing_lists_are_named_by_key_with_what_makes_them(tmp_path):
    """The config's lists, not yet made: named by their keys with the command that makes them, as train.py names
    them, where the message was only "video list 'data/...' does not exist"."""
    train, val = tmp_path / "k_train.txt", tmp_path / "k_val.txt"
    val.write_text("")
    r = _verify("--cfg", str(ROOT / "configs" / "demo.yaml"), "--dry-run", "--opts", "DATA.TRAIN_FILE", str(train),
                "DATA.VAL_FILE", str(val))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    demo = ROOT / "configs" / "demo.yaml"
    assert line.startswith(f"error: {demo}: missing video lists: DATA.TRAIN_FILE = {train} ("), line
    assert "DATA.VAL_FILE" not in line and "python tools/prepare_kinetics.py lists" in line, line


def test_a_bad_video_reached_through_dotdot_is_named_by_its_clean_absolute_path(tmp_path):
    """A list beside ``out/`` naming ``../mini_bad/x.mp4``: the report named ``<out>/../mini_bad/x.mp4``."""
    (tmp_path / "out").mkdir()
    (tmp_path / "mini_bad").mkdir()
    (tmp_path / "mini_bad" / "x.mp4").write_bytes(b"\x00\x01 this is not a video" * 100)
    listed = tmp_path / "out" / "l.txt"
    listed.write_text("../mini_bad/x.mp4 0\n")
    r = _verify(str(listed), "--num-classes", "1", "--workers", "1")
    assert r.returncode == 1, r.stderr
    shown = str(tmp_path / "mini_bad" / "x.mp4")
    assert f"    {shown}: not a readable video container" in r.stdout, r.stdout
    assert ".." not in r.stdout
    # the list's own entry and its quarantine line stay as written: relative to the root
    assert (tmp_path / "out" / "l.txt.quarantine.txt").read_text().startswith("../mini_bad/x.mp4\t")


def test_the_index_warning_and_strict_refusal_name_a_dotdot_path_cleanly_too(tmp_path, caplog):
    from dali_pipelines.filelist import DataError
    from dali_pipelines.index import build_index

    (tmp_path / "out").mkdir()
    (tmp_path / "mini_bad").mkdir()
    (tmp_path / "mini_bad" / "x.mp4").write_bytes(b"\x00\x01 this is not a video" * 100)
    listed = tmp_path / "out" / "l.txt"
    listed.write_text("../mini_bad/x.mp4 0\n")
    shown = str(tmp_path / "mini_bad" / "x.mp4")
    with caplog.at_level("WARNING", logger="dali_pipelines"), pytest.raises(DataError) as e:
        build_index(str(listed), str(tmp_path / "out"), 1, workers=1, strict=True, progress=False)
    assert f"1 of 1 video in {listed} is unreadable: {shown} (not a readable video container" in str(e.value)
    assert f"bad video {shown}: not a readable video container" in caplog.text, caplog.text


def test_a_full_disk_under_the_index_cache_is_one_line_naming_it(tmp_path, videos, capsys, monkeypatch):
    """A write() the disk refuses names no file: verify_data ended in a traceback whose last line did not say which
    file could not be written."""
    import errno

    import numpy as np

    from tools import verify_data

    def full_disk(*args, **kwargs):  # as write() fails on a full disk: no file named
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    lst = tmp_path / "train.txt"
    lst.write_text(f"{GOOD[0]} 0\n")
    monkeypatch.setattr(np, "savez", full_disk)
    assert verify_data.main([str(lst), "--root", str(videos), "--workers", "1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (f"error: cannot write {lst}.index.npz: No space left on device; free space and run the same "
                       f"command")
    assert not any(line.startswith(("Traceback", "error:")) for line in err[:-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.txt", "train.txt.index.lock", "videos"]
