"""An OUTPUT directory across attempts (engine/run_files.py): which files mark an earlier run, moving them aside,
and dropping the lines a stopped attempt wrote after the checkpoint a run resumes from."""

from __future__ import annotations

import errno
import glob
import json
import os
import time

import pytest

from engine.run_files import (EARLIER_RUNS_DIR, drop_lines_after, earlier_run_files, move_earlier_results,
                              move_earlier_run)


def _touch(folder, *names, text="x", age_s=0.0):
    """Write ``names`` in ``folder``, last modified ``age_s`` ago (a killed write's temporary file is left only while
    it may be a live one's: written to in the last minute)."""
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if age_s:
            stamp = time.time() - age_s
            os.utime(path, (stamp, stamp))


def test_logs_and_config_alone_are_no_earlier_run(tmp_path):
    _touch(tmp_path, "log_rank0.txt", "config.yaml")
    (tmp_path / "metrics.jsonl").write_text("")  # a run that stopped before its first line
    assert earlier_run_files(str(tmp_path)) == [] and move_earlier_run(str(tmp_path)) is None
    assert sorted(os.listdir(tmp_path)) == ["config.yaml", "log_rank0.txt", "metrics.jsonl"]


def test_an_earlier_run_moves_aside_whole_and_the_logs_stay(tmp_path):
    _touch(tmp_path, "ckpt_step_40.pth", "ckpt_epoch_3.pth", "best.pth", "metrics.jsonl", "summary.json",
           "config.yaml", "predictions_test.csv", "per_class_test.csv", "training_curves.png", "confusion_test.png",
           "tensorboard/events.out", "log_rank0.txt", "log_rank1.txt", "notes.txt", "ckpt_old.pth.bak",
           ".ckpt_step_44.pth.k2j1x9.tmp",  # the temporary file of a checkpoint write that was killed
           "test_progress.json",  # a stopped final test's videos, scored with that run's weights
           "only_test_progress.json")  # a stopped --only_test's, in the folder of that run
    first = move_earlier_run(str(tmp_path))
    assert first is not None
    dest, names = first
    assert os.path.dirname(dest) == str(tmp_path / EARLIER_RUNS_DIR)
    assert sorted(os.listdir(dest)) == sorted(names) == [
        ".ckpt_step_44.pth.k2j1x9.tmp", "best.pth", "ckpt_epoch_3.pth", "ckpt_step_40.pth", "config.yaml",
        "confusion_test.png", "metrics.jsonl", "only_test_progress.json", "per_class_test.csv",
        "predictions_test.csv", "summary.json", "tensorboard", "test_progress.json", "training_curves.png"]
    assert (tmp_path / EARLIER_RUNS_DIR / os.path.basename(dest) / "tensorboard" / "events.out").read_text() == "x"
    # the logs (a history of every attempt) and files the run did not write stay
    assert sorted(os.listdir(tmp_path)) == ["ckpt_old.pth.bak", EARLIER_RUNS_DIR, "log_rank0.txt", "log_rank1.txt",
                                            "notes.txt"]
    _touch(tmp_path, "best.pth")  # a second earlier run within the same second gets its own folder
    second = move_earlier_run(str(tmp_path))
    assert second is not None and second[0] != dest and os.listdir(second[0]) == ["best.pth"]


def test_an_evaluation_moves_aside_only_what_it_would_overwrite(tmp_path):
    _touch(tmp_path, "ckpt_epoch_3.pth", "best.pth", "metrics.jsonl", "summary.json", "predictions_test.csv",
           "predictions_val.csv", "per_class_test.csv", "training_curves.png", "test_progress.json",
           "only_test_progress.json")  # the stopped tests' videos: each waits for its own rerun
    (tmp_path / "config.yaml").write_text("TEST:\n  ONLY_TEST: false\n")
    dest, names = move_earlier_results(str(tmp_path))
    assert sorted(os.listdir(dest)) == sorted(names) == ["config.yaml", "per_class_test.csv",
                                                         "predictions_test.csv", "summary.json"]
    # the checkpoints it may evaluate, the training record and the validation predictions stay, and so does the
    # config that describes them (a copy goes with the results; the evaluation writes its own when it ends)
    assert sorted(os.listdir(tmp_path)) == ["best.pth", "ckpt_epoch_3.pth", "config.yaml", EARLIER_RUNS_DIR,
                                            "metrics.jsonl", "only_test_progress.json", "predictions_val.csv",
                                            "test_progress.json", "training_curves.png"]
    assert (tmp_path / "config.yaml").read_text() == (tmp_path / dest / "config.yaml").read_text() == \
        "TEST:\n  ONLY_TEST: false\n"
    os.remove(tmp_path / "config.yaml")
    assert move_earlier_results(str(tmp_path)) is None


def test_without_results_the_config_is_set_aside_once_and_never_lost(tmp_path):
    # a training run that stopped before any results: its config has no copy yet, and the evaluation will replace it
    _touch(tmp_path, "ckpt_epoch_0.pth")
    (tmp_path / "config.yaml").write_text("TRAIN:\n  EPOCHS: 30\n")
    dest, names = move_earlier_results(str(tmp_path))
    assert names == ["config.yaml"] and (tmp_path / dest / "config.yaml").read_text() == "TRAIN:\n  EPOCHS: 30\n"
    # that evaluation stopped before its results; its reruns find the same config set aside: no folder each time
    assert move_earlier_results(str(tmp_path)) is None
    assert move_earlier_results(str(tmp_path)) is None
    assert os.listdir(tmp_path / EARLIER_RUNS_DIR) == [os.path.basename(dest)]
    # another config (edited since) has no copy: it goes aside
    (tmp_path / "config.yaml").write_text("TRAIN:\n  EPOCHS: 40\n")
    second, names = move_earlier_results(str(tmp_path))
    assert names == ["config.yaml"] and (tmp_path / second / "config.yaml").read_text() == "TRAIN:\n  EPOCHS: 40\n"


def test_drop_lines_after_keeps_what_the_checkpoint_covers(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"kind": "train", "step": s} for s in range(1, 8)]
    lines.insert(4, {"kind": "eval", "step": 4, "top1": 50.0})
    lines.insert(0, {"kind": "eval", "step": None, "top1": 10.0})  # an evaluate-only run's line: no step
    path.write_text("".join(json.dumps(d) + "\n" for d in lines) + '{"kind": "train", "st')  # cut by a kill
    assert drop_lines_after(str(path), 5) == 3  # steps 6, 7 and the cut line
    kept = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(d["kind"], d["step"]) for d in kept] == [("eval", None), ("train", 1), ("train", 2), ("train", 3),
                                                      ("train", 4), ("eval", 4), ("train", 5)]
    assert drop_lines_after(str(path), 5) == 0 and drop_lines_after(str(tmp_path / "absent.jsonl"), 0) == 0


def test_mid_epoch_checkpoint_drops_the_epoch_end_lines_at_its_own_step(tmp_path):
    # a stop at an epoch's last step (8) saves a mid-epoch checkpoint; that epoch's data and eval lines came after
    path = tmp_path / "metrics.jsonl"
    lines = [{"kind": "train", "step": 8}, {"kind": "data", "step": 8}, {"kind": "eval", "step": 8}]
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    assert drop_lines_after(str(path), 8) == 0  # an epoch-end checkpoint covers them
    assert drop_lines_after(str(path), 8, mid_epoch=True) == 2
    assert [json.loads(x)["kind"] for x in path.read_text().splitlines()] == ["train"]


def _checkpoint(path, step):
    import torch

    torch.save({"model": {}, "optimizer": {}, "scheduler": {}, "epoch": 0, "global_step": step,
                "epoch_complete": False, "config": "SEED: 0\n"}, path)


def test_files_a_run_reads_or_a_bad_resume_file_never_move(tmp_path):
    from configs import load_config
    from engine.run_start import _set_aside_earlier_files

    out = tmp_path / "out"
    out.mkdir()
    for step in (4, 8):
        _checkpoint(out / f"ckpt_step_{step}.pth", step)
    (out / "best.pth").write_bytes(b"weights only")  # not a resumable checkpoint
    (out / "summary.json").write_text("{}")

    def cfg(**opts):
        pairs = [str(x) for kv in {"OUTPUT": str(out), **opts}.items() for x in kv]
        return load_config(None, pairs)

    # --resume of a file that cannot be resumed: nothing moves (the resume itself reports the file)
    assert _set_aside_earlier_files(cfg(), str(out / "best.pth")) == ""
    # a fresh start keeps MODEL.PRETRAINED even when it lies in OUTPUT
    note = _set_aside_earlier_files(cfg(**{"TRAIN.AUTO_RESUME": False, "MODEL.PRETRAINED": str(out / "best.pth")}),
                                    "")
    assert "starts from step 0" in note and (out / "best.pth").is_file() and not (out / "ckpt_step_8.pth").exists()
    # going back, through another name of the same folder (a symlink): only what came after moves
    (moved,) = (out / EARLIER_RUNS_DIR).iterdir()
    for name in ("ckpt_step_4.pth", "ckpt_step_8.pth", "summary.json"):
        os.replace(moved / name, out / name)
    (tmp_path / "link").symlink_to(out)
    note = _set_aside_earlier_files(cfg(), str(tmp_path / "link" / "ckpt_step_4.pth"))
    assert "goes back to" in note
    assert sorted(os.listdir(out)) == ["best.pth", "ckpt_step_4.pth", EARLIER_RUNS_DIR]
    newest = max((out / EARLIER_RUNS_DIR).iterdir())
    assert sorted(os.listdir(newest)) == ["ckpt_step_8.pth", "summary.json"]


def test_auto_resume_into_an_output_holding_only_best_pth_says_why_it_starts_over_and_names_the_weights(tmp_path):
    """OUTPUT held best.pth alone (the rotating checkpoints deleted to save room): TRAIN.AUTO_RESUME True started from
    step 0 with "(no --resume, TRAIN.AUTO_RESUME True)", which read as a contradiction, and did not say that best.pth
    cannot be resumed, nor where it went for a start from its weights."""
    from configs import load_config
    from engine.run_start import _set_aside_earlier_files

    out = tmp_path / "out"
    out.mkdir()
    (out / "best.pth").write_bytes(b"the best evaluation's weights")

    def cfg(**opts):
        return load_config(None, [str(x) for kv in {"OUTPUT": str(out), **opts}.items() for x in kv])

    note = _set_aside_earlier_files(cfg(**{"TRAIN.AUTO_RESUME": True}), "")
    (dest,) = (out / EARLIER_RUNS_DIR).iterdir()
    assert note == (
        f"{out} held an earlier run's files and this run starts from step 0 (no --resume, and TRAIN.AUTO_RESUME found "
        f"no ckpt_epoch_*.pth or ckpt_step_*.pth there to resume): moved 1 of them (best.pth) to {dest}; its best.pth "
        "holds the best evaluation's weights only (no optimizer, schedule or data position), which no run resumes: "
        f"to train from those weights, stop this run and give --pretrained {dest / 'best.pth'}")
    assert (dest / "best.pth").read_bytes() == b"the best evaluation's weights"
    (out / "best.pth").write_bytes(b"another run's")  # a start over on purpose: nothing more to say
    note = _set_aside_earlier_files(cfg(**{"TRAIN.AUTO_RESUME": False}), "")
    assert note.endswith("this run starts from step 0 (no --resume, TRAIN.AUTO_RESUME False): moved 1 of them "
                         f"(best.pth) to {max((out / EARLIER_RUNS_DIR).iterdir())}")


def test_a_folder_name_with_glob_characters_is_taken_literally(tmp_path):
    from engine.checkpointing import checkpoint_files

    out = tmp_path / "run[1]"
    out.mkdir()
    _checkpoint(out / "ckpt_step_4.pth", 4)
    _touch(out, "summary.json")
    assert [os.path.basename(p) for p in checkpoint_files(str(out))] == ["ckpt_step_4.pth"]
    assert earlier_run_files(str(out)) == ["ckpt_step_4.pth", "summary.json"]


def test_a_moved_summary_names_the_moved_files_where_they_went(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a run names its files as its OUTPUT is spelled: relative here
    _touch(tmp_path, "out/ckpt_epoch_2.pth", "out/ckpt_epoch_3.pth", "out/best.pth", "out/metrics.jsonl",
           "init.pth")
    summary = {"mode": "train", "best_top1": 50.0, "last_checkpoint": "out/ckpt_epoch_3.pth", "output": "out",
               "resumed_from": str(tmp_path / "out" / "ckpt_epoch_2.pth"), "pretrained": "out/best.pth",
               "note": "ckpt_epoch_3.pth", "elsewhere": "init.pth", "skipped": ["videos/ckpt_epoch_3.pth"],
               "copied_from": "original/ckpt_epoch_3.pth"}  # (a folder copied whole names the original's files)
    (tmp_path / "out" / "summary.json").write_text(json.dumps(summary))
    # a fresh start that reads out/best.pth as MODEL.PRETRAINED: that file stays, and so does its path
    dest, names = move_earlier_run("out", keep=["out/best.pth"])
    assert "best.pth" not in names and os.path.isfile("out/best.pth")
    moved = json.loads((tmp_path / dest / "summary.json").read_text())
    where = os.path.join("out", EARLIER_RUNS_DIR, os.path.basename(dest))
    assert moved == {**summary, "last_checkpoint": os.path.join(where, "ckpt_epoch_3.pth"),
                     "resumed_from": str(tmp_path / where / "ckpt_epoch_2.pth")}
    for key in ("last_checkpoint", "resumed_from"):
        assert os.path.isfile(moved[key])
    # an evaluation moves the summary only: the checkpoint it names stays, and so does its path
    (tmp_path / "out" / "summary.json").write_text(json.dumps({"mode": "evaluate only",
                                                                "evaluated": "out/best.pth"}))
    evaluation, _ = move_earlier_results("out")
    assert json.loads((tmp_path / evaluation / "summary.json").read_text())["evaluated"] == "out/best.pth"
    # until a later run moves that checkpoint; a summary cut short is moved as it is
    (tmp_path / "out" / "summary.json").write_text('{"last_checkpoint": "out/best.pth", "mo')
    dest, _ = move_earlier_run("out")
    assert (tmp_path / dest / "summary.json").read_text() == '{"last_checkpoint": "out/best.pth", "mo'
    evaluated = json.loads((tmp_path / evaluation / "summary.json").read_text())["evaluated"]
    assert evaluated == os.path.join(dest, "best.pth") and os.path.isfile(evaluated)


def test_a_full_disk_while_a_resume_drops_lines_leaves_the_file_whole_and_the_log_open(tmp_path, monkeypatch):
    """The rewrite of metrics.jsonl that drops the lines after the checkpoint fails on a full disk: the file is as
    it was, the error says the free space the rewrite needs, and the logger still writes its lines (its handle was
    left closed: every later line failed with "I/O operation on closed file")."""
    import evautil.files
    from engine.metrics import MetricLogger
    from evautil.files import write_failure

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"kind": "train", "step": s, "loss": 1.0}) + "\n" for s in range(1, 8)))
    before = path.read_bytes()
    real_write = evautil.files.atomic_write

    def disk_fills(target, write, fsync=True):
        def half_then_full(f):  # the first bytes go in, then the disk is full
            f.write(b'{"kind": "tr')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(target, half_then_full, fsync)

    monkeypatch.setattr(evautil.files, "atomic_write", disk_fills)
    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    try:
        with pytest.raises(OSError) as failed:
            metrics.restore_totals({}, step=5)
        assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["log_rank0.txt", "metrics.jsonl"]
        kept = sum(len(x) + 1 for x in before.decode().splitlines()[:5])
        line = write_failure(failed.value)
        assert line.startswith(f"cannot write {path}: No space left on device; dropping the 2 lines written after "
                               f"step 5 rewrites it, which needs {kept} B free on its disk (")
        assert "; the file is left as it was; free space and run the same command" in line
        monkeypatch.setattr(evautil.files, "atomic_write", real_write)
        metrics.log_eval({"split": "val", "top1": 50.0, "top5": None, "mean_class_top1": 50.0, "num_videos": 2,
                          "views": 1}, epoch=0, step=7)
    finally:
        metrics.close()
    written = path.read_text().splitlines()
    assert len(written) == 8 and json.loads(written[-1])["kind"] == "eval"


def test_drop_lines_after_cuts_lines_where_an_editor_does(tmp_path):
    """A JSON line may hold U+2028 or U+0085 as they are (a line written with ensure_ascii=False): splitlines cut
    it in two pieces that are not JSON, and both were dropped as cut short by a kill. The lines that are not JSON are
    named by their editor line numbers."""
    path = tmp_path / "metrics.jsonl"
    note = json.dumps({"kind": "note", "step": 2, "text": "a\u2028b\x85c"}, ensure_ascii=False)
    path.write_text(f'{{"step": 1}}\n{note}\n{{"step": 9}}\n{{"st\n{{"step": 3}}\n', encoding="utf-8")
    cut: list[int] = []
    assert drop_lines_after(str(path), 5, cut=cut) == 2 and cut == [4]
    assert [json.loads(x)["step"] for x in path.read_text(encoding="utf-8").split("\n")[:-1]] == [1, 2, 3]


def test_a_resumed_run_names_the_lines_of_metrics_jsonl_that_were_not_json(tmp_path):
    from engine.metrics import MetricLogger

    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n{"kind": "tr\n{"kind": "train", "step": 2}\n'
                                            '{"kind": "train", "step": 3}\n')
    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    try:
        metrics.restore_totals({}, step=2)
    finally:
        metrics.close()
    log = (tmp_path / "log_rank0.txt").read_text()
    assert ("metrics.jsonl: dropped 2 lines written after step 2 by the attempt that was stopped (this run writes "
            f"them again); not JSON (cut short by the stop): {tmp_path / 'metrics.jsonl'}:2\n") in log


def test_a_log_line_holding_a_form_feed_stays_one_line(tmp_path):
    """A message naming a file whose name holds \\x1c or \\x85 was cut there into two stamped log lines."""
    from engine.run_log import stamped

    assert stamped("quarantining a\x1cb\x85c.mp4\nnext").count("\n") == 2
    assert stamped("").endswith("] \n")


def test_a_log_line_naming_a_file_whose_name_is_no_utf8_is_logged_as_its_bytes(tmp_path):
    """A file named in bytes that are no UTF-8 (a folder named on a Latin-1 system: Python holds its name with
    surrogates) ended the run at the first log line naming it, after an epoch of training, with a traceback."""
    import os

    from engine.metrics import MetricLogger
    from engine.process_end import end_before_run, end_line_also_to

    name = os.fsdecode(b"caf\xe9.mp4")
    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    try:
        metrics.info(f"saved checkpoint {name}")
    finally:
        metrics.close()
    end_line_also_to(str(tmp_path / "log_rank0.txt"))  # a run whose building failed: its line ends the same log
    assert end_before_run(f"error: cannot read {name}", 2) == 2
    lines = (tmp_path / "log_rank0.txt").read_bytes().splitlines()
    assert lines[0].endswith(b"] saved checkpoint caf\xe9.mp4")
    assert lines[1].endswith(b"] error: cannot read caf\xe9.mp4")


def test_the_start_warning_names_every_file_it_moved_up_to_five(tmp_path):
    """The warning listed four names and "..." for five files: the one left out was config.yaml."""
    from configs import load_config
    from engine.run_start import _set_aside_earlier_files

    cfg = load_config(None, ["OUTPUT", str(tmp_path), "TEST.ONLY_TEST", "True"])
    _touch(tmp_path, "summary.json", "predictions_test.csv", "per_class_test.csv", "confusion_test.png", "config.yaml")
    warning = _set_aside_earlier_files(cfg, "")
    assert warning.startswith(f"{tmp_path} held an earlier run's files and this evaluation would overwrite them")
    listed = warning.split("moved 5 of them (", 1)[1].split(") to ", 1)[0]
    assert sorted(listed.split(", ")) == ["config.yaml", "confusion_test.png", "per_class_test.csv",
                                          "predictions_test.csv", "summary.json"]


def test_a_run_lock_this_process_may_not_write_is_asked_read_only(tmp_path, monkeypatch):
    """An OUTPUT on a read-only file system (or another user's): the run's line said so, then writing its exit status
    asked the run lock, whose open to append failed; a traceback followed and the run ended with 1, not 2."""
    import errno
    import fcntl

    import engine.run_files as run_files
    from engine.process_end import EXIT_STATUS_ENV, EXIT_STATUS_FILE, record_exit

    out = tmp_path / "out"
    out.mkdir()
    (out / run_files.RUN_LOCK).write_text('{"pid": 41, "host": "node7"}\n')  # left by the run that wrote OUTPUT

    def read_only(path):  # what hold_lock's open(path, "a") does there
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(run_files, "hold_lock", read_only)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv(EXIT_STATUS_ENV, raising=False)
    assert run_files.claimed_elsewhere(str(out)) == ""
    record_exit(str(out), 2)
    assert json.loads((out / EXIT_STATUS_FILE).read_text())["exit_code"] == 2
    with open(out / run_files.RUN_LOCK, encoding="utf-8") as other:  # a run on a host that may write it holds it
        fcntl.flock(other, fcntl.LOCK_EX)
        assert run_files.claimed_elsewhere(str(out)) == "process 41 on node7"


def test_bytes_that_are_no_utf8_in_metrics_jsonl_do_not_stop_a_resume(tmp_path):
    """A metrics.jsonl holding a byte that is no UTF-8 (damaged on disk, a line another program wrote) stopped the
    resume with a UnicodeDecodeError traceback (exit 1), as did the rerun of a finished run for its summary."""
    from engine.metrics_file import recall_lines

    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"kind": "train", "step": 1, "note": "caf\xe9"}\n{"kind": "train", "step": 2}\n\xff\xfe\x00\n'
                     b'{"kind": "eval", "step": 2, "split": "val", "top1": 50.0}\n{"kind": "train", "step": 3}\n')
    found, last_train, _ = recall_lines(str(path), 2, "val")
    assert found == {"kind": "eval", "step": 2, "split": "val", "top1": 50.0} and last_train["step"] == 2
    cut: list[int] = []
    assert drop_lines_after(str(path), 2, cut=cut) == 2 and cut == [3]
    assert [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] == [
        {"kind": "train", "step": 1, "note": "caf\ufffd"}, {"kind": "train", "step": 2},
        {"kind": "eval", "step": 2, "split": "val", "top1": 50.0}]


def test_a_metrics_jsonl_saved_with_a_byte_order_mark_keeps_its_first_line(tmp_path):
    """An editor that saved metrics.jsonl wrote a BOM (and CRLF line ends) before its first line: that line was no
    JSON to any reader, passed over without a word by the plots and by a finished run's summary, and dropped from
    the file by a resume as a line cut short."""
    from engine.metrics_file import recall_lines
    from engine.plots import read_metrics

    path = tmp_path / "metrics.jsonl"
    lines = [{"kind": "eval", "step": 1, "split": "val", "top1": 50.0}, {"kind": "train", "step": 1, "loss": 2.0},
             {"kind": "train", "step": 2, "loss": 1.0}, {"kind": "train", "step": 3, "loss": 0.5}]
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(d) + "\r\n" for d in lines).encode())
    train, evals = read_metrics(str(tmp_path))
    assert [d["step"] for d in train] == [1, 2, 3] and evals == lines[:1]
    found, last_train, counted = recall_lines(str(path), 1, "val")
    assert found == lines[0] and last_train == lines[1] and counted == {"val_": lines[0]}
    cut: list[int] = []
    assert drop_lines_after(str(path), 2, cut=cut) == 1 and cut == []  # step 3's line only
    assert [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] == lines[:3]


class _FullDisk:
    """A file on a disk with no space left: every write fails as the system's does, with an error naming no file."""

    def __init__(self, fd, mode):
        os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, data):
        import errno

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_under_the_files_set_aside_names_the_file_that_could_not_be_written(tmp_path, monkeypatch):
    """The copy of config.yaml an evaluation sets aside, and the summaries a move rewrites to name the moved files
    where they went, are written whole (a temporary file renamed into place); on a full disk the run's start ended
    with "cannot write: No space left on device", naming no file."""
    from evautil.files import write_failure

    out = tmp_path / "out"
    _touch(out, "ckpt_epoch_3.pth", "metrics.jsonl", "predictions_test.csv")
    (out / "config.yaml").write_text("SEED: 0\n")
    (out / "summary.json").write_text(json.dumps({"last_checkpoint": str(out / "ckpt_epoch_3.pth")}))
    monkeypatch.setattr(os, "fdopen", _FullDisk)
    with pytest.raises(OSError) as caught:  # the evaluation's copy of config.yaml
        move_earlier_results(str(out))
    copy = write_failure(caught.value).split(": No space left on device; ")[0].removeprefix("cannot write ")
    assert os.path.dirname(os.path.dirname(copy)) == str(out / EARLIER_RUNS_DIR), copy
    assert os.path.basename(copy) == "config.yaml" and not (out / EARLIER_RUNS_DIR).exists()  # nothing went in
    with pytest.raises(OSError) as caught:  # the moved summary, rewritten to name the checkpoint where it went
        move_earlier_run(str(out))
    summary = list(glob.glob(str(out / EARLIER_RUNS_DIR / "*" / "summary.json")))
    assert len(summary) == 1
    assert write_failure(caught.value).startswith(f"cannot write {summary[0]}: No space left on device; ")
    monkeypatch.undo()
    moved = os.path.dirname(summary[0])  # the move itself went through: no file cut short
    assert sorted(os.listdir(moved)) == ["ckpt_epoch_3.pth", "config.yaml", "metrics.jsonl", "predictions_test.csv",
                                         "summary.json"]
    assert open(os.path.join(moved, "config.yaml")).read() == "SEED: 0\n"
    assert json.loads(open(summary[0]).read()) == {"last_checkpoint": str(out / "ckpt_epoch_3.pth")}


def test_a_move_aside_that_fails_leaves_no_empty_folder_but_keeps_what_went_in(tmp_path, monkeypatch):
    """A copy or a move that failed part-way left an empty earlier_runs/<time>/ behind, as if a run had been set
    aside without a file; the folders of earlier moves, and the files that did go in, stay."""
    out = tmp_path / "out"
    _touch(out, "ckpt_epoch_3.pth", "metrics.jsonl", "summary.json", "predictions_test.csv")
    (out / "config.yaml").write_text("SEED: 0\n")
    monkeypatch.setattr(os, "fdopen", _FullDisk)
    with pytest.raises(OSError):  # the evaluation's copy of config.yaml: nothing went in, earlier_runs/ was new
        move_earlier_results(str(out))
    assert not (out / EARLIER_RUNS_DIR).exists()
    monkeypatch.undo()
    _touch(out / EARLIER_RUNS_DIR / "20260101-000000", "best.pth")  # an earlier move's
    monkeypatch.setattr(os, "fdopen", _FullDisk)
    with pytest.raises(OSError):
        move_earlier_results(str(out))
    monkeypatch.undo()
    assert os.listdir(out / EARLIER_RUNS_DIR) == ["20260101-000000"]
    replace = os.replace

    def fails_for_the_summary(src, dst):
        if os.path.basename(src) == "summary.json":
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", fails_for_the_summary)
    with pytest.raises(OSError):  # the moves before summary.json's went in: they stay there
        move_earlier_run(str(out))
    monkeypatch.undo()
    moved = sorted(set(os.listdir(out / EARLIER_RUNS_DIR)) - {"20260101-000000"})
    assert len(moved) == 1
    assert sorted(os.listdir(out / EARLIER_RUNS_DIR / moved[0])) == ["ckpt_epoch_3.pth", "config.yaml",
                                                                     "metrics.jsonl", "predictions_test.csv"]
    assert sorted(os.listdir(out)) == [EARLIER_RUNS_DIR, "summary.json"]


def test_the_temporary_files_of_killed_writes_go_once_the_run_lock_is_held(tmp_path):
    """A run killed while it wrote summary.json, config.yaml or metrics.jsonl whole left a hidden .NAME.*.tmp in
    OUTPUT for ever (only a checkpoint's were removed, by the next save). The run that takes the lock removes them;
    a run the lock refuses touches nothing."""
    from engine.run_files import RUN_LOCK, claim_output, release_output
    from evautil.files import hold_lock

    out = tmp_path / "out"
    killed = [".summary.json.k2j1x9.tmp", ".config.yaml.a8b7c6.tmp", ".metrics.jsonl.zz91qa.tmp"]
    others = ["summary.json", "metrics.jsonl", "notes.tmp", ".summary.json.old.x1y2.tmp",  # summary.json.old's
              ".ckpt_step_4.pth.q1w2e3.tmp"]  # the Checkpointer's, removed before its next save
    _touch(out, *killed, *others, age_s=120)
    other = hold_lock(str(out / RUN_LOCK))  # another run holds OUTPUT: its writes may be going on
    try:
        with pytest.raises(ValueError, match="is being written by another run"):
            claim_output(str(out))
    finally:
        other.close()
    assert sorted(os.listdir(out)) == sorted([RUN_LOCK, *killed, *others])
    claim_output(str(out))
    try:
        assert sorted(os.listdir(out)) == sorted([RUN_LOCK, *others])
    finally:
        release_output(str(out))


def test_the_temporary_files_of_killed_prediction_and_progress_writes_go_too(tmp_path):
    """The predictions, per-class tables and a stopped test's progress are written whole too; a run killed while it
    wrote one left its hidden temporary file in OUTPUT for good (only the summary's, config's and metrics' were
    removed). They go by the same rule: only a file's own (not those of predictions_test.csv.old), and for a file
    that is a link, those beside the file it names."""
    from engine.run_files import RUN_LOCK, claim_output, release_output

    out, store = tmp_path / "out", tmp_path / "store"
    killed = [".predictions_test.csv.p0o9i8.tmp", ".predictions_val.csv.r4t5y6.tmp", ".per_class_val.csv.q1w2e3.tmp",
              ".test_progress.json.a1b2c3.tmp", ".only_test_progress.json.z9y8x7.tmp"]
    others = ["predictions_test.csv", ".predictions_test.csv.old.x1y2.tmp", ".predictions.csv.k2j1x9.tmp",
              ".test_progress.json.old.b2c3d4.tmp", "notes.csv", ".notes.csv.c3d4e5.tmp"]
    _touch(out, *killed, *others, age_s=120)
    # linked from OUTPUT: its own beside it
    _touch(store, "per_class_test.csv", ".per_class_test.csv.m3n4b5.tmp", age_s=120)
    (out / "per_class_test.csv").symlink_to(store / "per_class_test.csv")
    claim_output(str(out))
    try:
        assert sorted(os.listdir(out)) == sorted([RUN_LOCK, "per_class_test.csv", *others])
        assert os.listdir(store) == ["per_class_test.csv"]
    finally:
        release_output(str(out))


def test_the_temporary_files_of_killed_exit_status_and_plot_writes_go_too(tmp_path):
    """exit_status.json and the plots (training curves, confusion) are written whole too; a process killed while it
    wrote one left its hidden temporary file in OUTPUT for good. They go by the same rule as the summary's."""
    from engine.run_files import RUN_LOCK, claim_output, release_output

    out = tmp_path / "out"
    killed = [".exit_status.json.k2j1x9.tmp", ".training_curves.png.a8b7c6.tmp", ".confusion_test.png.zz91qa.tmp",
              ".confusion_val.png.q1w2e3.tmp"]
    others = ["exit_status.json", "training_curves.png", ".exit_status.json.old.x1y2.tmp", "notes.png",
              ".notes.png.c3d4e5.tmp", ".exit_status.7.json.b2c3d4.tmp"]  # a job's own copy: not OUTPUT's
    _touch(out, *killed, *others, age_s=120)
    claim_output(str(out))
    try:
        assert sorted(os.listdir(out)) == sorted([RUN_LOCK, *others])
    finally:
        release_output(str(out))


def test_a_run_taking_output_leaves_the_temporary_files_of_writes_it_cannot_tell_are_killed(tmp_path, monkeypatch):
    """A plot_run redrawing a run's plots while the next run took OUTPUT lost its temporary file mid-write. Where
    the writers cannot be seen (no /proc, another host's process on a shared folder), a temporary file goes only
    once an hour old; where they can, once a minute old and held open by none."""
    from engine import run_files
    from engine.run_files import RUN_LOCK, claim_output, release_output

    out = tmp_path / "out"
    _touch(out, ".training_curves.png.a1b2c3.tmp", ".summary.json.d4e5f6.tmp", age_s=120)
    _touch(out, ".confusion_val.png.k2j1x9.tmp", age_s=7200)
    monkeypatch.setattr(run_files, "_files_held_open", lambda uid: None, raising=False)
    claim_output(str(out))
    try:
        assert sorted(os.listdir(out)) == sorted([RUN_LOCK, ".training_curves.png.a1b2c3.tmp",
                                                  ".summary.json.d4e5f6.tmp"])
    finally:
        release_output(str(out))
    monkeypatch.undo()
    with open(out / ".summary.json.d4e5f6.tmp", "ab"):  # a live write's
        claim_output(str(out))
        release_output(str(out))
    assert sorted(os.listdir(out)) == sorted([RUN_LOCK, ".summary.json.d4e5f6.tmp"])


def test_another_users_run_lock_says_what_to_do(tmp_path, monkeypatch):
    """A .run.lock another user's run left (it stays after each run) refused every run of another user with "cannot
    access .../.run.lock: Permission denied", which named no way on. (Run as root, the refused open is a stand-in.)"""
    import errno
    import fcntl
    import pwd

    import engine.run_files as run_files

    out = tmp_path / "out"
    out.mkdir()
    lock = out / run_files.RUN_LOCK
    lock.write_text('{"pid": 41, "host": "node7"}\n')

    def refused(path):  # what hold_lock's open(path, "a") does for a file of another user's, mode 644
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    monkeypatch.setattr(run_files, "hold_lock", refused)
    with pytest.raises(PermissionError):  # this user's own lock (a folder it may not write): as before
        run_files.claim_output(str(out))
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(lock).st_uid + 1)  # the lock is another user's
    with pytest.raises(ValueError) as caught:
        run_files.claim_output(str(out))
    assert str(caught.value) == (
        f"OUTPUT {out}: its run lock {lock} belongs to user {pwd.getpwuid(lock.stat().st_uid).pw_name}, and this "
        "user may not "
        "open it (Permission denied): give this run another OUTPUT, or, once no run of theirs is live, ask its owner "
        "to remove the lock (or remove it yourself, with write access to the folder)")
    with open(lock, encoding="utf-8") as live:  # a run of theirs holds it now: that run is named
        fcntl.flock(live, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match=r"is being written by another run \(process 41 on node7 holds"):
            run_files.claim_output(str(out))
    assert os.listdir(out) == [run_files.RUN_LOCK]


def _strict_json(text: str):
    """``text`` read as standard JSON: the bare NaN and Infinity Python's json writes by default are refused, as
    jq and other JSON readers refuse them."""
    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_metrics_are_written_as_null_in_metrics_jsonl_and_summary_json(tmp_path):
    """A NaN top-1, an infinite learning rate or rate and a NaN summary field were written as the bare NaN and
    Infinity, which is no JSON: jq refused the whole metrics.jsonl and summary.json. They are null now, which the
    run's own readers (the resume's recall, the plots) take as no value."""
    from engine.metrics import MetricLogger
    from engine.metrics_file import recall_lines
    from engine.plots import read_metrics

    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False, print_freq=1)
    try:
        metrics.log_step(1, 0, loss=2.0, lr=float("inf"), clips=2, data_time=0.0, step_time=0.0)
        metrics.log_eval({"split": "val", "top1": float("nan"), "top5": float("-inf"), "num_videos": 2, "views": 1},
                         epoch=0, step=1)
        metrics.summary({"val_failures": float("nan"), "nested": [1.5, float("inf")]})
    finally:
        metrics.close()
    lines = [_strict_json(t) for t in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(d["kind"], d.get("lr"), d.get("top1"), d.get("top5")) for d in lines] == [
        ("train", None, None, None), ("eval", None, None, None)]
    summary = _strict_json((tmp_path / "summary.json").read_text())
    assert summary["final_top1"] is None and summary["val_failures"] is None and summary["nested"] == [1.5, None]
    found, last_train, _ = recall_lines(str(tmp_path / "metrics.jsonl"), 1, "val")
    assert found["top1"] is None and last_train["loss"] == 2.0
    train, evals = read_metrics(str(tmp_path))
    assert train[0]["lr"] is None and evals[0]["top1"] is None


@pytest.mark.parametrize("ends", ["finished", "stopped", "crashed"])
def test_the_exit_status_is_written_before_a_new_run_may_take_output(tmp_path, monkeypatch, ends):
    """exit_status.json was written after the run lock was let go: a new run that took OUTPUT in between removed
    the record's temporary file with the other killed writes, and the status was lost without a word. The lock is
    now held until the record is written, however the run ends; a run started meanwhile is refused."""
    import subprocess
    import sys

    from engine import process_end, run_files
    from evautil.files import atomic_write, lock_is_free

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv(process_end.EXIT_STATUS_ENV, raising=False)
    out = tmp_path / "out"
    out.mkdir()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    new_run = f"from engine.run_files import claim_output; claim_output({str(out)!r})"
    started = []

    def written_as_a_new_run_starts(path: str, text: str) -> None:
        def write(f) -> None:
            f.write(text.encode("utf-8"))
            f.flush()  # the temporary file is complete, not yet renamed into place, when the other run starts
            started.append(subprocess.run([sys.executable, "-c", new_run], cwd=root, capture_output=True, text=True,
                                          timeout=120))
        atomic_write(path, write)

    monkeypatch.setattr(process_end, "atomic_write_text", written_as_a_new_run_starts)

    def body(ended: dict) -> int:
        ended["output"] = str(out)
        run_files.claim_output(str(out))
        run_files.release_output(str(out))  # as the run's close does, before the process's exit status
        if ends == "crashed":
            raise RuntimeError("a crash")
        return 0 if ends == "finished" else 4

    if ends == "crashed":
        with pytest.raises(RuntimeError):
            process_end.with_exit_status(body, None)
    else:
        assert process_end.with_exit_status(body, None) == (0 if ends == "finished" else 4)
    code = {"finished": 0, "stopped": 4, "crashed": 1}[ends]
    assert json.loads((out / process_end.EXIT_STATUS_FILE).read_text()) == {
        "exit_code": code, "meaning": process_end.EXIT_MEANINGS[code]}
    assert len(started) == 1 and started[0].returncode != 0
    assert f"OUTPUT {out} is being written by another run" in started[0].stderr
    assert lock_is_free(str(out / run_files.RUN_LOCK))  # let go once written
    assert not glob.glob(str(out / ".exit_status.json.*.tmp"))
