"""train.py's command line: flag mapping, --dry-run, one-line errors with exit code 2, --only_test on checkpoints
in our format and in the original (released) format."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
from pathlib import Path

import pytest
import torch
from yacs.config import CfgNode

import train
from configs import load_config
from engine.checkpoint_io import save_atomic

from tests.video_fixtures import synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synthetic_dataset(tmp_path_factory, "synth_cli", 3, 2, num_frames=12, size=(48, 32))


def _opts(data: Path, out: Path, *extra: str) -> list[str]:
    return ["DATA.ROOT", str(data), "DATA.TRAIN_FILE", str(data / "train.txt"), "DATA.VAL_FILE",
            str(data / "val.txt"), "DATA.LABEL_LIST", str(data / "labels.csv"), "DATA.INPUT_SIZE", "32",
            "DATA.NUM_FRAMES", "4", "DATA.TUBELET_SIZE", "2", "DATA.NUM_THREADS", "1", "DATA.NUM_WORKERS", "1",
            "DATA.INDEX_WORKERS", "1",
            "TEST.BATCH_SIZE", "3", "LOG.PROGRESS_BAR", "False", "LOG.TENSORBOARD", "False", "OUTPUT", str(out),
            *extra]


def test_flags_map_to_config_keys():
    args = train.parse_args(["-cfg", DEMO, "--batch-size", "3", "--accumulation-steps", "2", "--output", "o",
                             "--pretrained", "w.pth", "--only_test", "--opts", "TEST.NUM_CLIP", "4"])
    cfg = load_config(args.cfg, args.opts, flags=train.config_overrides(args)[0])
    assert (cfg.TRAIN.BATCH_SIZE, cfg.TRAIN.ACCUMULATION_STEPS, cfg.OUTPUT) == (3, 2, "o")
    assert cfg.MODEL.PRETRAINED == "w.pth" and cfg.TEST.ONLY_TEST and cfg.TEST.NUM_CLIP == 4


def test_a_flag_that_opts_overrides_is_said(tmp_path, dataset, capsys):
    # --opts wins (README), but silently an --only_test run trained and a --batch-size was dropped
    rc = train.main(["--cfg", DEMO, "--dry-run", "--only_test", "--batch-size", "4", "--opts",
                     *_opts(dataset, tmp_path / "o", "TEST.ONLY_TEST", "False", "TRAIN.BATCH_SIZE", "6")])
    out, err = capsys.readouterr()
    assert rc == 0 and "mode                           : train" in out and "6 = 6 x 1 x 1" in out
    assert "note: --only_test is overridden by --opts TEST.ONLY_TEST False" in err
    assert "note: --batch-size 4 is overridden by --opts TRAIN.BATCH_SIZE 6" in err
    # the same value twice is no conflict
    args = train.parse_args(["--cfg", DEMO, "--batch-size", "4", "--opts", "TRAIN.BATCH_SIZE", "4"])
    assert train.config_overrides(args)[1] == []
    args = train.parse_args(["--cfg", DEMO, "--only_test", "--opts", "TEST.ONLY_TEST", "true"])  # a YAML spelling
    assert train.config_overrides(args)[1] == []


@pytest.mark.parametrize("flags,needle", [
    (["--batch-size", "0"], "error: --batch-size 0 (TRAIN.BATCH_SIZE) must be at least 1"),
    (["--accumulation-steps", "-1"], "error: --accumulation-steps -1 (TRAIN.ACCUMULATION_STEPS) must be at least 1"),
    (["--pretrained", "{tmp}/w.pth"], "missing input files: --pretrained {tmp}/w.pth (MODEL.PRETRAINED)"),
    (["--output", "{tmp}/file/out"], "error: --output {tmp}/file/out (OUTPUT) cannot be a directory"),
    # --opts wins over the flag: the value is then --opts', named by its key
    (["--batch-size", "4", "--opts", "TRAIN.BATCH_SIZE", "0"], "error: TRAIN.BATCH_SIZE = 0 must be at least 1"),
    # a value --opts cannot replace says where the current one came from: the flag, not --opts
    (["--batch-size", "4", "--opts", "TRAIN.BATCH_SIZE", "x"], "(current value 4, from --batch-size), got 'x'"),
])
def test_a_flags_bad_value_is_named_by_the_flag(flags, needle, tmp_path, dataset, capsys):
    """A flag's bad value was named by its config key only (TRAIN.BATCH_SIZE = 0), which the user never typed."""
    (tmp_path / "file").write_text("")
    flags = [f.format(tmp=tmp_path) for f in flags]
    opts = _opts(dataset, tmp_path / "o")[:-2 if flags[0] == "--output" else None]  # [-2:]: OUTPUT and its value
    rc = train.main(["--cfg", DEMO, "--dry-run", *flags[:2], "--opts", *opts, *flags[3:]])
    err = capsys.readouterr().err
    assert rc == 2 and needle.format(tmp=tmp_path) in err, err
    assert len([line for line in err.splitlines() if not line.startswith("note:")]) == 1


def test_flags_take_either_spelling(tmp_path, dataset, capsys):
    """--only_test and --local_rank are the original's spellings, --dry-run and --batch-size the project's: the
    other spelling of any of them was refused as an unrecognized argument."""
    args = train.parse_args(["--cfg", DEMO, "--dry_run", "--only-test", "--batch_size", "8",
                             "--accumulation_steps=2", "--local-rank=0", "--opts", "TEST.NUM_CLIP", "4"])
    assert (args.dry_run, args.only_test, args.batch_size, args.accumulation_steps) == (True, True, 8, 2)
    assert args.local_rank == 0 and args.opts == ["TEST.NUM_CLIP", "4"]
    # the pairs are keys and values, as typed; a flag after them is read in either spelling
    args = train.parse_args(["--cfg", DEMO, "--opts", "DATA.ROOT", "my_data_dir", "TRAIN.LR", "-5e-6", "--dry_run",
                             "--batch_size", "2"])
    assert args.opts == ["DATA.ROOT", "my_data_dir", "TRAIN.LR", "-5e-6"] and args.dry_run and args.batch_size == 2
    # a message names the flag as typed
    rc = train.main(["--cfg", DEMO, "--dry_run", "--batch_size", "0", "--opts", *_opts(dataset, tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "error: --batch_size 0 (TRAIN.BATCH_SIZE) must be at least 1" in err, err
    args = train.parse_args(["--cfg", DEMO, "--only-test", "--batch-size", "4", "--opts", "TEST.ONLY_TEST", "False"])
    assert train.config_overrides(args)[1] == ["note: --only-test is overridden by --opts TEST.ONLY_TEST False"]
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--cfg", DEMO, "--dry_runs"])
    assert e.value.code == 2 and "unrecognized arguments: --dry_runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "--only_test" in out and "--dry-run" in out and "--only-test" not in out and "--dry_run" not in out


def test_dry_run_original_k400_yaml_names_missing_lists(shared_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the YAML's relative data paths must not exist
    rc = train.main(["--cfg", str(shared_dir / "data" / "original_configs" / "kinetics400_ft.yaml"), "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "DATA.TRAIN_FILE = data/k400_train.txt" in err and "DATA.VAL_FILE = data/k400_val.txt" in err
    assert "MODEL.PRETRAINED = /path/to/eva_video_k722.pth" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    # and where such files come from, for a first run that has none yet
    assert "python tools/make_synthetic_dataset.py --out data/synthetic" in err
    assert "tools/prepare_kinetics.py lists" in err and "README, Checkpoints" in err


@pytest.mark.parametrize("opts,needle", [
    (["TRAIN.NOPE", "1"], "unknown config key TRAIN.NOPE"),
    (["TRAIN.PRECISION", "fp8"], "TRAIN.PRECISION = 'fp8'"),
    (["TRAIN.BATCH_SIZE", "0"], "TRAIN.BATCH_SIZE = 0 must be at least 1"),
    # the original's keys: mapped onto ours and checked there, or refused where no equivalent exists
    (["TRAIN.LR_SCHEDULER", "step"], "TRAIN.LR_SCHEDULER = 'step' (read as TRAIN.LR_SCHEDULER.NAME) is not one of"),
    (["MODEL.INIT_VALUES", "0.1"], "--opts: MODEL.INIT_VALUES = 0.1 cannot be honoured"),
])
def test_bad_config_is_one_line_exit_2(opts, needle, capsys):
    rc = train.main(["--cfg", DEMO, "--dry-run", "--opts", *opts])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize("opts, needle", [
    (["TRAIN.PRECISION", "fp16"], "TRAIN.PRECISION = 'fp16' needs a CUDA device"),
    (["TRAIN.FUSED_OPTIMIZER", "apex"], "TRAIN.FUSED_OPTIMIZER = 'apex' but apex is not installed"),
])
def test_what_this_machine_cannot_run_is_refused_by_the_plan_and_before_output_is_written(
        tmp_path, dataset, capsys, opts, needle, dry_run):
    import importlib.util

    if opts[1] == "fp16" and torch.cuda.is_available():
        pytest.skip("fp16 runs on this machine")
    if opts[1] == "apex" and importlib.util.find_spec("apex") is not None:
        pytest.skip("apex is installed")
    out = tmp_path / "out"
    rc = train.main(["--cfg", DEMO, *(["--dry-run"] if dry_run else []), "--opts", *_opts(dataset, out, *opts)])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err, err
    assert not out.exists()  # refused before the run opened OUTPUT (and indexed its lists)


@pytest.mark.parametrize("given", ["", "  "])
def test_an_empty_cfg_is_refused_not_read_as_no_file(given, tmp_path, capsys):
    # `--cfg "$CFG"` with CFG unset: the defaults alone ran and then reported missing data lists
    with pytest.raises(SystemExit) as ended:
        train.main(["--cfg", given, "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert ended.value.code == 2 and f"--cfg/-cfg/--config: expected a file, got {given!r}" in err, err
    assert "missing" not in err and not (tmp_path / "o").exists()


def test_missing_config_file_and_resume(tmp_path, dataset, capsys):
    assert train.main(["--cfg", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err
    rc = train.main(["--cfg", DEMO, "--resume", str(tmp_path / "gone.pth"), "--opts", *_opts(dataset, tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "missing input files: --resume " + str(tmp_path / "gone.pth") + " (" in err  # as typed, no "="
    # training continues its own checkpoint: released weights (no training state) are not where it comes from
    assert "an earlier run wrote to its OUTPUT" in err and "released weights and class mappings" not in err
    # OUTPUT says how the process ended, for a batch script that requeues only a stopped run (torchrun's code is 1)
    assert json.loads((tmp_path / "exit_status.json").read_text()) == {
        "exit_code": 2, "meaning": "bad input or a file that cannot be written"}
    rc = train.main(["--cfg", DEMO, "--only_test", "--resume", str(tmp_path / "gone.pth"), "--opts",
                     *_opts(dataset, tmp_path)])
    err = capsys.readouterr().err  # weights to evaluate: a released file is one
    assert rc == 2 and "released weights and class mappings" in err and "an earlier run wrote" not in err


def test_a_tilde_the_shell_leaves_in_a_flag_is_the_home_folder(tmp_path, dataset, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # bash expands no ~ after --resume=; it was looked up as ./~/gone.pth
    rc = train.main(["--cfg", DEMO, "--dry-run", "--resume=~/gone.pth", "--opts", *_opts(dataset, tmp_path)])
    assert rc == 2 and f"missing input files: --resume {tmp_path / 'gone.pth'} (" in capsys.readouterr().err
    args = train.parse_args(["--cfg", DEMO, "--output=~/runs"])
    assert load_config(args.cfg, args.opts, flags=train.config_overrides(args)[0]).OUTPUT == str(tmp_path / "runs")


def test_a_folder_given_for_an_input_file_is_named_as_a_folder(tmp_path, dataset, capsys):
    """The data folder given as DATA.TRAIN_FILE, or a run's folder as --resume, was called missing."""
    rc = train.main(["--cfg", DEMO, "--dry-run", "--resume", str(dataset), "--opts",
                     *_opts(dataset, tmp_path / "o", "DATA.TRAIN_FILE", str(dataset))])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: missing input files: DATA.TRAIN_FILE = {dataset} (a folder, not a file); "
                          f"--resume {dataset} (a folder, not a file) ("), err


def test_a_dry_run_writes_no_exit_status_and_a_run_overwrites_the_last_one(tmp_path, dataset):
    out = tmp_path / "out"
    assert train.main(["--cfg", DEMO, "--dry-run", "--batch-size", "4", "--opts", *_opts(dataset, out)]) == 0
    assert not (out / "exit_status.json").exists()
    (out / "exit_status.json").parent.mkdir(exist_ok=True)
    (out / "exit_status.json").write_text('{"exit_code": 4}')  # an earlier attempt's
    bad = tmp_path / "bad.txt"
    bad.write_text("videos/a.webm x\n")
    assert train.main(["--cfg", DEMO, "--opts", *_opts(dataset, out, "DATA.TRAIN_FILE", str(bad))]) == 2
    assert json.loads((out / "exit_status.json").read_text())["exit_code"] == 2


def test_malformed_list_names_file_and_line(tmp_path, dataset, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("videos/a.webm 1\nvideos/b.webm x\n")
    rc = train.main(["--cfg", DEMO, "--dry-run", "--opts", *_opts(dataset, tmp_path, "DATA.TRAIN_FILE", str(bad))])
    assert rc == 2 and f"{bad}:2" in capsys.readouterr().err


@pytest.mark.parametrize("content, needle", [
    (b"id,name\n0,a\nzz,b\n2,c\n3,d\n", "line 3: expected 'id,name' with an id >= 0, got 'zz,b'"),
    (b"id,name\n0,a\n1\n2,c\n3,d\n", "line 3: expected 'id,name'"),
    (b"0,a\n1,b\n1,c\n3,d\n", "line 3: class 1 is named twice"),
    (b"id,name\n0,a\n1,b\n", "names 2 classes, but DATA.NUM_CLASSES 4 means ids 0 to 3: no name for ids [2, 3]"),
    (b"id,name\n0,a\n1,b\n2,c\n3,d\n4,e\n", "ids [4] are too large"),
    # a wrong id: the one too large and the one it left unnamed, both
    (b"id,name\n0,a\n1,b\n2,c\n5,d\n", "ids [5] are too large; no name for ids [3]"),
    (b"id,name\n0,caf\xe9\n", "line 2: not UTF-8 text"),
])
def test_malformed_label_list_is_one_line_exit_2(tmp_path, dataset, capsys, content, needle):
    # Before, such rows were skipped (classes left unnamed in every prediction file) or, not UTF-8, a traceback
    # after the lists were indexed and the loaders built.
    labels = tmp_path / "labels.csv"
    labels.write_bytes(content)
    rc = train.main(["--cfg", DEMO, "--dry-run", "--opts", *_opts(dataset, tmp_path / "out", "DATA.LABEL_LIST",
                                                                   str(labels))])
    err = capsys.readouterr().err
    assert rc == 2 and f"DATA.LABEL_LIST = {labels}" in err and needle in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_label_out_of_range_names_data_num_classes(tmp_path, dataset, capsys, dry_run):
    """A list label past the config's classes named the list, the line and the range, not DATA.NUM_CLASSES that set
    it: both in the plan and when a run builds its index (the index code is given only the number)."""
    first = (dataset / "train.txt").read_text().splitlines()[0]
    lst = tmp_path / "train.txt"
    lst.write_text(f"{first}\n{first.rsplit(' ', 1)[0]} 6\n")
    rc = train.main(["--cfg", DEMO, *(["--dry-run"] if dry_run else []), "--opts",
                     *_opts(dataset, tmp_path / "out", "DATA.TRAIN_FILE", str(lst), "DATA.VAL_FILE", str(lst),
                            "DATA.LABEL_LIST", "")])
    err = capsys.readouterr().err
    line = f"{first.rsplit(' ', 1)[0]} 6"
    assert rc == 2 and err.strip().splitlines()[-1] == (
        f"error: {lst}:2: label 6 is outside [0, 4) as DATA.NUM_CLASSES is 4 (line {line!r}): fix the label, or set "
        "DATA.NUM_CLASSES to the number of classes (at least 7)")


@pytest.mark.parametrize("flags, key", [(["--dry-run"], "DATA.TRAIN_FILE"), ([], "DATA.TRAIN_FILE"),
                                        (["--only_test", "--dry-run"], "DATA.VAL_FILE"),
                                        (["--only_test"], "DATA.VAL_FILE")])
def test_an_empty_list_names_the_key_that_gave_it(tmp_path, dataset, capsys, flags, key):
    """An empty list named its file only, not the config key that gave it, where every other list error of a run
    names it: in the plan, and when a training or evaluate-only run builds its index."""
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    weights = tmp_path / "w.pth"
    cfg = load_config(DEMO, _opts(dataset, tmp_path / "out"))
    torch.save({"model": _constant_head_weights(cfg, 0, num_classes=4)}, weights)
    rc = train.main(["--cfg", DEMO, *flags, *(["--resume", str(weights)] if "--only_test" in flags else []),
                     "--opts", *_opts(dataset, tmp_path / "out", key, str(empty))])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().splitlines()[-1] == (
        f"error: video list {str(empty)!r} ({key}) has no entries (empty or only blank lines): add "
        f"'<relative path> <label>' lines to it, or set {key} to a list that has them")


def test_dry_run_prints_plan(tmp_path, dataset, capsys):
    rc = train.main(["--cfg", DEMO, "--dry-run", "--opts", *_opts(dataset, tmp_path / "out")])
    out, err = capsys.readouterr()
    assert "parameters" in out and "GFLOPs per clip" in out and "data decode device" in out
    # 12 train clips, global batch 16 from demo.yaml -> 0 iterations, which the run would refuse after indexing:
    # the plan is printed, and the dry run fails as the run would (a script checking its status learns it); batch 4
    # -> 3
    assert "global batch (B x ACC x world) : 16 = 16 x 1 x 1" in out
    assert rc == 2 and err.startswith("error: DATA.TRAIN_FILE ") and "12 listed training videos, fewer than one " \
        "global batch" in err and "= 16): the run would stop before its first step" in err and err.count("\n") == 1
    rc = train.main(["--cfg", DEMO, "--dry-run", "--batch-size", "4", "--opts", *_opts(dataset, tmp_path / "o")])
    out, err = capsys.readouterr()
    assert rc == 0 and "iterations per epoch           : 3" in out and "warning" not in err and "error" not in err
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_more_epochs_than_the_run_can_count_are_refused_before_training(tmp_path, dataset, capsys):
    """TRAIN.EPOCHS of 400 digits passed the config check and the dry run; the run set up the model and the data
    and stopped at its first logged step on an OverflowError traceback (its remaining time). 10**20 (and 1e20,
    read as that int) trained, logging a remaining time of trillions of days. Past 10**12 steps a plan is refused;
    10**12 steps load (Kinetics at batch 1 for 1000 epochs is some 5e8)."""
    def refusal(shown: str) -> str:
        return (f"error: TRAIN.EPOCHS {shown} x 3 optimizer steps per epoch is more than 10**12 steps, more than any "
                "run takes (a million a day for 2,700 years): set TRAIN.EPOCHS to the epochs to train (the recipes "
                "use 1 to 40)\n")

    for epochs, shown in ((str(10**400), "(a number of 401 digits)"), ("1e20", str(10**20)),
                          (str(10**12 // 3 + 1), str(10**12 // 3 + 1))):
        for dry_run in (["--dry-run"], []):
            rc = train.main(["--cfg", DEMO, *dry_run, "--batch-size", "4", "--opts",
                             *_opts(dataset, tmp_path / "out", "TRAIN.EPOCHS", epochs)])
            text = "".join(capsys.readouterr())  # a run logs its error on stdout, a dry run on stderr
            assert rc == 2 and text.endswith(refusal(shown)) and "Traceback" not in text, text
            assert not list((tmp_path / "out").glob("*.pth"))
    rc = train.main(["--cfg", DEMO, "--dry-run", "--batch-size", "4", "--opts",
                     *_opts(dataset, tmp_path / "o", "TRAIN.EPOCHS", str(10**12 // 3))])
    out, err = capsys.readouterr()
    assert rc == 0 and f"epochs                         : {10**12 // 3}" in out and "error" not in err


def test_dry_run_and_verify_data_print_the_same_model_figures(tmp_path, dataset, capsys):
    # They rounded differently (0.07516, 0.1 and, in the training log, 0.08 GFLOPs for the demo's model).
    from tools.verify_data import check_model

    opts = _opts(dataset, tmp_path / "out")
    assert train.main(["--cfg", DEMO, "--dry-run", "--batch-size", "4", "--opts", *opts]) == 0
    plan = capsys.readouterr().out
    planned = re.search(r"^ *GFLOPs per clip \(forward\)\s*: (\S+)$", plan, re.M).group(1)
    params = int(re.search(r"^ *parameters\s*: (\d+)$", plan, re.M).group(1))
    line = check_model(DEMO, opts)
    assert f"{params / 1e6:.4g} M parameters, {planned} GFLOPs per 4x32x32 clip forward" in line, (plan, line)


def test_dry_run_under_torchrun_prints_the_plan_once(tmp_path, dataset, capsys, monkeypatch):
    printed = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")  # as torchrun sets them
        monkeypatch.setenv("MASTER_PORT", "29500")
        opts = _opts(dataset, tmp_path / "out")
        assert train.main(["--cfg", DEMO, "--dry-run", "--batch-size", "4", "--opts", *opts]) == 0
        printed.append(capsys.readouterr().out)
    assert "global batch (B x ACC x world) : 8 = 4 x 1 x 2" in printed[0] and printed[1] == ""


@pytest.mark.parametrize("env, line", [
    ({"MASTER_PORT": "29500"}, "error: WORLD_SIZE=2 but environment variable MASTER_ADDR is not set: the processes "
     "meet at MASTER_ADDR:MASTER_PORT, rank 0's host and a free port there (torchrun sets it; launched without "
     "torchrun, set MASTER_ADDR and MASTER_PORT alike for every process)"),
    ({"MASTER_ADDR": "127.0.0.1"}, "error: WORLD_SIZE=2 but environment variable MASTER_PORT is not set"),
    ({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "295000"}, "error: environment variable MASTER_PORT='295000' is not "
     "a port number (1 to 65535;"),
    ({"MASTER_ADDR": "node-01.invalid", "MASTER_PORT": "29500"}, "error: environment variable "
     "MASTER_ADDR='node-01.invalid' does not resolve to an address here ("),
])
@pytest.mark.parametrize("dry_run", [True, False])
def test_where_the_processes_meet_is_checked_before_anyone_waits_there(tmp_path, dataset, capsys, monkeypatch, env,
                                                                       line, dry_run):
    """A run of several processes launched without torchrun, with a typo'd MASTER_ADDR, passed its dry run and
    learned of it only when its ranks failed (or waited) at the rendezvous, after the job had queued."""
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    out = tmp_path / "out"
    rc = train.main(["--cfg", DEMO, *(["--dry-run"] if dry_run else []), "--opts", *_opts(dataset, out)])
    captured = capsys.readouterr()
    assert rc == 2 and len(captured.err.strip().splitlines()) == 1 and captured.err.startswith(line), captured
    assert not (out / "log_rank0.txt").exists()  # refused before the run opened its log
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert train.main(["--cfg", DEMO, "--dry-run", "--batch-size", "4", "--opts", *_opts(dataset, out)]) == 0
    assert re.search(r"^  rendezvous \(MASTER_ADDR:PORT\) *: 127\.0\.0\.1:29500 \(loopback: reachable from this node "
                     r"only\)$", capsys.readouterr().out, re.M)


def test_a_master_port_another_program_listens_on_is_named_and_nothing_is_written(tmp_path, dataset, capsys,
                                                                                  monkeypatch):
    """Rank 0 of a run launched without torchrun listens at MASTER_PORT: a port another run (or program) held
    ended it with torch's DistNetworkError traceback (exit 1), naming no variable."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        for var, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", port)):
            monkeypatch.setenv(var, str(value))
        out = tmp_path / "out"
        rc = train.main(["--cfg", DEMO, "--batch-size", "4", "--opts", *_opts(dataset, out)])
    captured = capsys.readouterr()
    assert rc == 2 and captured.err.strip().splitlines() == [
        f"error: environment variable MASTER_PORT={port} is in use on this host (rank 0's, where the processes meet): "
        "another run or program listens there; set MASTER_PORT to a free port, the same for every process"], captured
    assert not out.exists() and not torch.distributed.is_initialized()


def test_dry_run_says_which_checkpoint_the_run_would_continue(tmp_path, dataset, capsys):
    """The plan said nothing of the checkpoint TRAIN.AUTO_RESUME or --resume would continue: a user learned only
    from the run's log whether it resumed, and from where, or started over."""
    out = tmp_path / "out"
    opts = _opts(dataset, out, "TRAIN.AUTO_RESUME", "True", "TRAIN.BATCH_SIZE", "4")  # 12 clips: a batch fits
    cfg = load_config(DEMO, opts)

    def plan(*flags: str, extra: tuple = ()) -> str:
        assert train.main(["--cfg", DEMO, "--dry-run", *flags, "--opts", *opts, *extra]) == 0
        return re.search(r"^  starts from *: (.*)$", capsys.readouterr().out, re.M).group(1)

    assert plan() == f"step 0, random initial weights (no checkpoint in OUTPUT = {out})"
    assert plan(extra=("TRAIN.AUTO_RESUME", "False")) == "step 0, random initial weights (TRAIN.AUTO_RESUME False)"
    weights = _constant_head_weights(cfg, cls=1, num_classes=4)
    state = {"model": weights, "optimizer": {}, "scheduler": {}, "config": cfg.dump()}
    save_atomic({**state, "epoch": 1, "global_step": 6, "epoch_complete": True}, str(out / "ckpt_epoch_2.pth"))
    assert plan() == f"{out / 'ckpt_epoch_2.pth'}: end of epoch 2, step 6"
    # the last epoch's checkpoint: the plan said where the run starts, not that it trains nothing from there
    assert plan(extra=("TRAIN.EPOCHS", "2", "TRAIN.WARMUP_EPOCHS", "1", "TRAIN.ALLOW_CONFIG_CHANGE", "True")) == (
        f"{out / 'ckpt_epoch_2.pth'}: end of epoch 2, step 6; training is finished (TRAIN.EPOCHS 2): the run trains "
        "nothing, and writes its summary only where it is missing or older")
    mid = tmp_path / "mid.pth"  # a stop's checkpoint, in the middle of epoch 3
    save_atomic({**state, "epoch": 2, "global_step": 8, "epoch_complete": False}, str(mid))
    assert plan("--resume", str(mid), extra=("TRAIN.AUTO_RESUME", "False")) == f"{mid}: epoch 3, step 8"
    # a requeued --resume command goes on from its own later checkpoint, and says why it is not the file named
    later = out / "ckpt_step_12.pth"
    save_atomic({**state, "epoch": 2, "global_step": 12, "epoch_complete": False,
                 "train_state": {"origin": {"path": os.path.realpath(mid), "step": 8}}}, str(later))
    assert train.main(["--cfg", DEMO, "--dry-run", "--resume", str(mid), "--opts", *opts]) == 0
    printed = capsys.readouterr()
    assert re.search(rf"^  starts from *: {re.escape(str(later))}: epoch 3, step 12$", printed.out, re.M)
    assert f"note: --resume {mid}: {later} continues it" in printed.err
    assert not any(p.name.startswith(("log_", "exit_")) for p in out.iterdir())  # a dry run writes nothing


def test_a_repeated_resume_of_a_file_rotated_away_says_what_auto_resume_false_would_do(tmp_path, dataset, capsys):
    """The note said 'with TRAIN.AUTO_RESUME False it would start over from FILE' though FILE was gone."""
    out, mid = tmp_path / "out", tmp_path / "out" / "ckpt_step_8.pth"
    opts = _opts(dataset, out, "TRAIN.AUTO_RESUME", "True", "TRAIN.BATCH_SIZE", "4")
    cfg = load_config(DEMO, opts)
    state = {"model": _constant_head_weights(cfg, cls=1, num_classes=4), "optimizer": {}, "scheduler": {},
             "config": cfg.dump(), "epoch": 2, "epoch_complete": False}
    save_atomic({**state, "global_step": 8}, str(mid))
    later = out / "ckpt_step_12.pth"
    save_atomic({**state, "global_step": 12, "train_state": {"origin": {"path": os.path.realpath(mid), "step": 8}}},
                str(later))
    os.remove(mid)  # rotated away (KEEP_LAST) by the attempts that continued it
    assert train.main(["--cfg", DEMO, "--dry-run", "--resume", str(mid), "--opts", *opts]) == 0
    err = capsys.readouterr().err
    assert (f"note: --resume {mid}: {later} continues it (an earlier attempt of this run started from it), so the "
            f"run goes on from there (with TRAIN.AUTO_RESUME False it would stop, as {mid} no longer exists)") in err
    assert "start over" not in err


@pytest.mark.parametrize("name, value, line", [
    ("EVA_WAIT_TIMEOUT_MIN", "0", "error: environment variable EVA_WAIT_TIMEOUT_MIN='0' must be at least 1 (minutes; "
                                  "unset it for the default, 120)"),
    ("EVA_WAIT_TIMEOUT_MIN", "1.5", "error: environment variable EVA_WAIT_TIMEOUT_MIN='1.5' is not an integer"),
    ("EVA_HEARTBEAT_TIMEOUT_S", "-1", "error: environment variable EVA_HEARTBEAT_TIMEOUT_S='-1' must be at least 0 "
                                      "(seconds; 0 turns the check off)"),
    ("EVA_RENDEZVOUS_TIMEOUT_S", "0", "error: environment variable EVA_RENDEZVOUS_TIMEOUT_S='0' must be at least 1 "
                                      "(seconds; unset it for the default, 300)"),
    ("EVA_RENDEZVOUS_TIMEOUT_S", "9" * 13, f"error: environment variable EVA_RENDEZVOUS_TIMEOUT_S='{'9' * 13}' must be "
                                           "at most 604800 (seconds, a week: processes of one run that have not met "
                                           "by then are not coming; unset it for the default, 300)"),
])
def test_a_dry_run_refuses_the_wait_settings_a_run_of_several_processes_would_stop_on(
        tmp_path, dataset, capsys, monkeypatch, name, value, line):
    """The plan is made by one process, for a job of several that reads these variables only when it starts: a
    bad value passed the dry run and stopped the queued job. Now the dry run stops on the same line, exit code 2."""
    for var in ("RANK", "WORLD_SIZE", "EVA_WAIT_TIMEOUT_MIN", "EVA_HEARTBEAT_TIMEOUT_S", "EVA_RENDEZVOUS_TIMEOUT_S"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(name, value)
    rc = train.main(["--cfg", DEMO, "--dry-run", "--batch-size", "4", "--opts", *_opts(dataset, tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 2 and err.strip().splitlines() == [line] and out == ""
    monkeypatch.setenv(name, "0" if name == "EVA_HEARTBEAT_TIMEOUT_S" else "1")  # the least each allows
    assert train.main(["--cfg", DEMO, "--dry-run", "--batch-size", "4", "--opts", *_opts(dataset, tmp_path / "o")]) == 0
    assert "iterations per epoch" in capsys.readouterr().out


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize("env, line", [
    ({"WORLD_SIZE": "0"}, "error: environment variable WORLD_SIZE='0' must be at least 1 (the number of processes of "
                          "the run)"),
    ({"RANK": "3"}, "error: environment variable RANK=3 is not below WORLD_SIZE=1 (unset: one process): a launcher "
                    "sets both, numbering the processes from 0"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "error: environment variable RANK='x' is not an integer"),
    ({"WORLD_SIZE": "two"}, "error: environment variable WORLD_SIZE='two' is not an integer"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "[rank 2] error: environment variable RANK=2 is not below WORLD_SIZE=2: a "
                                       "launcher sets both, numbering the processes from 0"),
    ({"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, "error: WORLD_SIZE=2 but environment "
     "variable RANK is not set, so every process would be rank 0: torchrun sets it; launched without torchrun, set "
     "RANK for every process, numbering them from 0 to 1 (under srun: each task's SLURM_PROCID)"),
    ({"SLURM_STEP_NUM_TASKS": "2"}, "error: this process is one of SLURM_STEP_NUM_TASKS=2 tasks, but WORLD_SIZE is not "
     "set, so each would run alone: start torchrun in each task (one per node), or set RANK, WORLD_SIZE, MASTER_ADDR "
     "and MASTER_PORT (and LOCAL_RANK or SLURM_LOCALID) for every task; to run one process alone, start it as a step "
     "of one task (srun --ntasks=1 python train.py ...) or set WORLD_SIZE=1 for it"),
])
def test_a_bad_rank_or_world_size_is_named_before_anything_runs(tmp_path, dataset, capsys, monkeypatch, env, line,
                                                                dry_run):
    """WORLD_SIZE=0 made the plan a ZeroDivisionError traceback; RANK=3 of one process was planned in silence
    (exit 0), and a run indexed its lists before torch refused 'rank 3 out of range for world_size 1', naming no
    variable; RANK=x was 'invalid literal for int()'. Two tasks of srun without WORLD_SIZE each trained alone (the
    second refused: OUTPUT 'is being written by another run'). WORLD_SIZE=2 without RANK made every process rank 0:
    its plan passed, and in the run one waited at the rendezvous while the others failed there with a traceback."""
    for var in ("RANK", "WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    out = tmp_path / "out"
    rc = train.main(["--cfg", DEMO, *(["--dry-run"] if dry_run else []), "--batch-size", "4", "--opts",
                     *_opts(dataset, out)])
    captured = capsys.readouterr()
    assert rc == 2 and captured.err.strip().splitlines() == [line] and captured.out == "", captured
    assert not out.exists()


def _constant_head_weights(cfg, cls: int, num_classes: int) -> dict:
    from models import build_model

    model = build_model(cfg)
    sd = model.state_dict()
    sd["head.weight"] = torch.zeros(num_classes, sd["head.weight"].shape[1])
    sd["head.bias"] = torch.full((num_classes,), -5.0)
    sd["head.bias"][cls] = 5.0  # every clip predicts `cls`
    return sd


def _eval_line(out: Path) -> dict:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][-1]


@pytest.mark.parametrize("fmt", ["original", "ours"])
def test_only_test_evaluates_checkpoint(tmp_path, dataset, capsys, fmt):
    out = tmp_path / "out"
    # a class-mapping file that does not exist: evaluating a same-size checkpoint never reads it
    opts = _opts(dataset, out, "TEST.NUM_CLIP", "2", "TEST.NUM_CROP", "3", "MODEL.CLASS_MAPPING",
                 str(tmp_path / "absent.npy"))
    cfg = load_config(DEMO, opts)
    sd = _constant_head_weights(cfg, cls=2, num_classes=4)
    ckpt = tmp_path / "ckpt.pth"
    if fmt == "original":
        # the original epoch_saving layout: weights under 'model' plus a pickled yacs CfgNode
        torch.save({"model": {"module." + k: v for k, v in sd.items()}, "config": CfgNode({"SEED": 1}),
                    "epoch": 3, "max_accuracy": 80.0}, ckpt)
    else:
        save_atomic({"model": sd, "optimizer": {}, "scheduler": {}, "epoch": 0, "global_step": 4,
                     "epoch_complete": True, "config": cfg.dump()}, str(ckpt))
    rc = train.main(["--cfg", DEMO, "--only_test", "--resume", str(ckpt), "--opts", *opts])
    assert rc == 0, capsys.readouterr()
    line = _eval_line(out)
    # 8 val videos, 2 per class; everything is predicted as class 2 -> exactly 25 % top-1
    assert (line["split"], line["views"], line["num_videos"]) == ("test", 6, 8)
    # 4 classes: every video's top 5 holds its label, so top-5 says nothing and is null
    assert line["top1"] == pytest.approx(25.0) and line["top5"] is None
    assert (line["num_clip"], line["num_crop"], line["checkpoint"]) == (2, 3, str(ckpt))
    assert "eval test of ckpt.pth (2 clips x 3 crops = 6 views/video, 8 videos): top-1 25.00%  top-5 n/a" in \
        (out / "log_rank0.txt").read_text()
    assert json.loads((out / "summary.json").read_text())["final_top5"] is None
    rows = (out / "predictions_test.csv").read_text().splitlines()[1:]
    assert len(rows) == 8 and all(",2,moving up," in r for r in rows)
    per_class = (out / "per_class_test.csv").read_text().splitlines()
    assert per_class[3].startswith("2,moving up,2,100.00")


@pytest.mark.parametrize("classes, fmt", [(5, "pth"), (2, "pth"), (2, "safetensors")])
def test_only_test_wrong_head_is_one_line_before_output_is_written(tmp_path, dataset, capsys, classes, fmt):
    """A checkpoint whose head has another class count would be scored with a random head: refused with the two
    counts and what to set, before the lists are indexed and before OUTPUT is written."""
    from safetensors.torch import save_file

    out = tmp_path / "out"
    opts = _opts(dataset, out)
    cfg = load_config(DEMO, opts)
    ckpt = tmp_path / f"k{classes}.{fmt}"
    weights = _constant_head_weights(cfg, 0, num_classes=classes)
    if fmt == "pth":
        torch.save({"model": weights}, ckpt)
    else:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(ckpt))
    rc = train.main(["--cfg", DEMO, "--only_test", "--resume", str(ckpt), "--opts", *opts])
    err = capsys.readouterr().err
    advice = f"set DATA.NUM_CLASSES {classes} to use it as trained" + (
        ", or MODEL.CLASS_MAPPING to take 4 of its classes" if classes > 4 else "")
    assert rc == 2 and err == f"error: {ckpt}: its head has {classes} classes and DATA.NUM_CLASSES is 4: {advice}\n"
    assert not out.exists()


def test_only_test_of_output_after_a_class_count_change_is_refused_before_writing(tmp_path, dataset, capsys):
    """Evaluating OUTPUT's newest checkpoint (no --resume) with another DATA.NUM_CLASSES: the same early refusal."""
    out = tmp_path / "out"
    cfg = load_config(DEMO, _opts(dataset, out))
    out.mkdir()
    save_atomic({"model": _constant_head_weights(cfg, 0, num_classes=4), "optimizer": {}, "scheduler": {},
                 "epoch": 0, "global_step": 4, "epoch_complete": True, "config": cfg.dump()},
                str(out / "ckpt_epoch_1.pth"))
    before = sorted(p.name for p in out.iterdir())
    rc = train.main(["--cfg", DEMO, "--only_test",
                     "--opts", *_opts(dataset, out, "DATA.NUM_CLASSES", "3", "DATA.LABEL_LIST", "")])
    err = capsys.readouterr().err
    assert rc == 2 and "ckpt_epoch_1.pth: its head has 4 classes and DATA.NUM_CLASSES is 3: set DATA.NUM_CLASSES 4" \
        in err, err
    assert sorted(p.name for p in out.iterdir()) == sorted(before + ["exit_status.json"])  # only how it ended
    assert json.loads((out / "exit_status.json").read_text())["exit_code"] == 2


def _bad_checkpoint(tmp_path: Path, damage: str) -> Path:
    """A --resume file that cannot be used: bytes that are no checkpoint, a training checkpoint cut short, or one
    whose weights changed on disk after it was written (its CRC-32 no longer matches)."""
    from tests.test_checkpointing import _flip_a_byte_of_record

    path = tmp_path / f"{damage}.pth"
    if damage == "garbage":
        path.write_bytes(b"not a checkpoint\n" * 64)
        return path
    save_atomic({"model": {"w": torch.arange(4096, dtype=torch.float32)}, "optimizer": {}, "scheduler": {},
                 "epoch": 0, "global_step": 4, "epoch_complete": True}, str(path))
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-300])
    else:
        _flip_a_byte_of_record(path, "/data/0")
    return path


# what each damage is called: "damaged" or "not a readable torch checkpoint" alone fit a wrong diagnosis too
_BAD_CHECKPOINT_REASONS = {
    "garbage": "not a readable torch checkpoint: neither a zip archive nor a pickle: it begins with the text "
               "'not a checkpoint'",
    "truncated": r"damaged: cut short: \d+ bytes of a zip archive \(torch's format\) without its end record",
    "changed": "damaged: record archive/data/0 does not match the CRC-32 written with it: its bytes changed after it "
               "was written"}


@pytest.mark.parametrize("only_test", [True, False])
@pytest.mark.parametrize("damage", ["garbage", "truncated", "changed"])
def test_a_bad_resume_file_is_one_line_before_output_is_written(tmp_path, dataset, capsys, only_test, damage):
    ckpt, out = _bad_checkpoint(tmp_path, damage), tmp_path / "out"
    rc = train.main(["--cfg", DEMO, "--resume", str(ckpt), *(["--only_test"] if only_test else []),
                     "--opts", *_opts(dataset, out, "TRAIN.BATCH_SIZE", "4", "LOG.TENSORBOARD", "True")])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and str(ckpt) in lines[0], captured
    assert re.search(_BAD_CHECKPOINT_REASONS[damage], lines[0]), lines[0]
    assert not out.exists()  # no config.yaml, metrics.jsonl, log or tensorboard/ of a run that never started


@pytest.mark.parametrize("only_test", [True, False])
def test_a_resume_file_of_random_bytes_says_what_it_is_not_the_unpicklers_error(tmp_path, dataset, capsys, only_test):
    """Random bytes were reported as "(KeyError: 174812789)": the unpickler's complaint about an opcode that read
    a memo index. The line says what the file begins with instead, and (training) no longer advises --pretrained,
    which reads weights: these bytes are none."""
    from tests.test_checkpoint import GARBAGE

    ckpt, out = tmp_path / "junk.pth", tmp_path / "out"
    ckpt.write_bytes(GARBAGE["memo_index.pth"][0])
    rc = train.main(["--cfg", DEMO, "--resume", str(ckpt), *(["--only_test"] if only_test else []),
                     "--opts", *_opts(dataset, out)])
    lines = capsys.readouterr().err.strip().splitlines()
    what = "neither a zip archive nor a pickle: it begins with the text 'julk'"
    assert rc == 2 and lines == [f"error: {ckpt}: not a readable torch checkpoint: {what}" if only_test else
                                 f"error: checkpoint {ckpt} is not a readable torch checkpoint: {what}"], lines


@pytest.mark.parametrize("only_test", [True, False])
@pytest.mark.parametrize("damage", ["garbage", "changed"])
def test_a_bad_pretrained_file_is_one_line_before_output_is_written(tmp_path, dataset, capsys, only_test, damage):
    weights, out = _bad_checkpoint(tmp_path, damage), tmp_path / "out"
    rc = train.main(["--cfg", DEMO, *(["--only_test"] if only_test else []),
                     "--opts", *_opts(dataset, out, "MODEL.PRETRAINED", str(weights))])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and str(weights) in lines[0], captured
    assert re.search(_BAD_CHECKPOINT_REASONS[damage], lines[0]), lines[0]
    assert not out.exists()  # no index was built and no log written for weights the run could not have loaded


@pytest.mark.parametrize("only_test", [True, False])
def test_a_hub_reference_that_cannot_be_fetched_is_one_line_before_output_is_written(tmp_path, dataset, capsys,
                                                                                     monkeypatch, only_test):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # empty, and offline: nothing can be fetched
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref, out = "hf://acme/absent/model.pth", tmp_path / "out"
    opts = _opts(dataset, out, "MODEL.PRETRAINED", ref)
    rc = train.main(["--cfg", DEMO, *(["--only_test"] if only_test else []), "--opts", *opts])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"error: {ref}: ") and "offline" in lines[0], captured
    assert not out.exists()  # named before the lists were indexed and the run's files written
    # a dry run downloads no weights: the plan is printed and the reference left to the run's load
    assert train.main(["--cfg", DEMO, "--dry-run", "--batch-size", "4", "--opts", *opts]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("only_test", [True, False])
def test_a_miswritten_hub_reference_is_named_with_its_spelling_not_as_a_missing_file(tmp_path, dataset, capsys,
                                                                                     only_test):
    """MODEL.PRETRAINED hf:acme/eva/model.pth (or hf//...) was listed among the "missing input files"."""
    out = tmp_path / "out"
    for ref in ("hf:acme/eva/model.pth", "hf//acme/eva/model.pth"):
        rc = train.main(["--cfg", DEMO, *(["--only_test"] if only_test else []), "--dry-run", "--batch-size", "4",
                         "--opts", *_opts(dataset, out, "MODEL.PRETRAINED", ref)])
        err = capsys.readouterr().err
        assert rc == 2 and err == (f"error: {ref}: not a file, nor a Hub reference, which is written in lower case "
                                   "with two slashes: hf://owner/name[@revision]/path/to/file (here "
                                   "hf://acme/eva/model.pth)\n"), err
    assert not out.exists()


@pytest.mark.parametrize("given, only_test", [("MODEL.PRETRAINED", False), ("MODEL.PRETRAINED", True),
                                              ("--resume", True)])
def test_a_hub_reference_with_spaces_around_it_or_an_upper_case_scheme_is_read_as_the_tools_read_it(
        tmp_path, dataset, capsys, monkeypatch, given, only_test):
    """" hf://owner/name/file" (spaces from a copied line) or "HF://..." loads in the tools (predict, export,
    extract_features), but train.py refused it as miswritten: it is fetched as the reference it stands for."""
    from models.hub import HubReferenceError, resolve_weights_path

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # empty, and offline: nothing can be fetched
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    for ref in (" hf://acme/absent/model.pth", "HF://acme/absent/model.pth\t"):
        with pytest.raises(HubReferenceError) as tools:
            resolve_weights_path(ref)
        weights = ["--resume", ref] if given == "--resume" else []
        opts = _opts(dataset, out, *(["MODEL.PRETRAINED", ref] if given == "MODEL.PRETRAINED" else []))
        only = ["--only_test"] if only_test else []
        # a dry run downloads no weights: past the check of the input files, the plan is printed
        rc = train.main(["--cfg", DEMO, *only, *weights, "--dry-run", "--batch-size", "4", "--opts", *opts])
        assert rc == 0, capsys.readouterr().err
        capsys.readouterr()
        rc = train.main(["--cfg", DEMO, *only, *weights, "--opts", *opts])
        err = capsys.readouterr().err
        assert rc == 2 and err == f"error: {tools.value}\n", err  # the line the tools give, from the fetch
        assert str(tools.value).startswith("hf://acme/absent/model.pth: not in the local Hugging Face cache"), err
        assert not out.exists()  # named before the lists were indexed and the run's files written


@pytest.mark.parametrize("damage", ["garbage", "changed"])
def test_evaluating_output_whose_checkpoints_are_all_damaged_is_one_line_before_output_is_written(
        tmp_path, dataset, capsys, damage):
    out = tmp_path / "out"
    out.mkdir()
    _bad_checkpoint(tmp_path, damage).rename(out / "ckpt_epoch_1.pth")
    rc = train.main(["--cfg", DEMO, "--only_test", "--opts", *_opts(dataset, out)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"error: no usable checkpoint in {out}: "), captured
    # no config, log or metrics written: only how the process ended
    assert sorted(p.name for p in out.iterdir()) == ["ckpt_epoch_1.pth", "exit_status.json"]


def test_a_training_whose_only_checkpoint_is_damaged_says_how_to_go_on(tmp_path, dataset, capsys):
    # KEEP_LAST 1: the damaged newest checkpoint is all OUTPUT holds; the line said what was wrong, not what to do
    out = tmp_path / "out"
    out.mkdir()
    _bad_checkpoint(tmp_path, "truncated").rename(out / "ckpt_epoch_1.pth")
    opts = _opts(dataset, out, "KEEP_LAST", "1", "TRAIN.AUTO_RESUME", "True")
    rc = train.main(["--cfg", DEMO, "--batch-size", "4", "--opts", *opts])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"error: no usable checkpoint in {out}: "), lines
    assert lines[0].endswith("; put back an intact copy, or name the checkpoint to use with --resume (a training run "
                             "starts over from step 0 with --opts TRAIN.AUTO_RESUME False, which moves these files "
                             f"into {out / 'earlier_runs'})"), lines
    assert sorted(p.name for p in out.iterdir()) == ["ckpt_epoch_1.pth", "exit_status.json"]  # nothing moved
    # what it advises works: the dry run of that command plans a start from step 0
    rc = train.main(["--cfg", DEMO, "--dry-run", "--batch-size", "4", "--opts", *opts, "TRAIN.AUTO_RESUME", "False"])
    assert rc == 0 and re.search(r"starts from +: step 0, ", capsys.readouterr().out)


def test_evaluating_a_checkpoint_does_not_read_model_pretrained(tmp_path, dataset):
    # the pretrained weights would be overwritten by the checkpoint's: a bad file there is no reason to refuse
    from evautil.errors import CheckpointError
    from models.checkpoint import read_state_dict
    from tests.test_checkpointing import _crc_reads
    from wiring import check_weight_files

    ckpt = tmp_path / "ckpt.pth"
    save_atomic({"model": {"w": torch.zeros(4)}}, str(ckpt))
    bad = _bad_checkpoint(tmp_path, "garbage")
    cfg = load_config(DEMO, _opts(dataset, tmp_path / "out", "MODEL.PRETRAINED", str(bad), "TEST.ONLY_TEST", "True"))
    check_weight_files(cfg, str(ckpt))
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint|damaged"):
        check_weight_files(cfg, "")  # nothing to evaluate in OUTPUT: MODEL.PRETRAINED is what would be scored
    # a good file is read whole for its CRC-32s once: the early check's memo spares the load
    good = tmp_path / "pretrained.pth"
    save_atomic({"model": {"w": torch.ones(4)}}, str(good))
    cfg = load_config(DEMO, _opts(dataset, tmp_path / "out", "MODEL.PRETRAINED", str(good)))
    assert _crc_reads(lambda: (check_weight_files(cfg, ""), read_state_dict(str(good)))) == 1


def test_a_resumed_run_neither_needs_nor_reads_model_pretrained(tmp_path, dataset, capsys):
    # A requeued fine-tuning run resumes from OUTPUT's checkpoint, whose weights replace the pretrained ones: a
    # pretrained file deleted (or moved) since the first attempt is no reason to refuse, nor worth loading again.
    from models import build_model

    out, pretrained = tmp_path / "out", tmp_path / "pretrained.pth"
    opts = _opts(dataset, out, "TRAIN.WARMUP_EPOCHS", "0", "TRAIN.BATCH_SIZE", "4", "TRAIN.AUTO_RESUME", "True",
                 "MODEL.PRETRAINED", str(pretrained), "TEST.FINAL_NUM_CLIP", "0")
    save_atomic({"model": build_model(load_config(DEMO, opts)).state_dict()}, str(pretrained))
    assert train.main(["--cfg", DEMO, "--opts", *opts, "TRAIN.EPOCHS", "1"]) == 0, capsys.readouterr().err
    pretrained.unlink()
    rc = train.main(["--cfg", DEMO, "--opts", *opts, "TRAIN.EPOCHS", "2", "TRAIN.ALLOW_CONFIG_CHANGE", "True"])
    assert rc == 0, capsys.readouterr().err
    log = (out / "log_rank0.txt").read_text()
    assert f"MODEL.PRETRAINED = {pretrained} is not read: the run resumes a checkpoint" in log
    assert "resumed from" in log and "epoch 2/2 done" in log
    # a run that starts from step 0 still needs it
    rc = train.main(["--cfg", DEMO, "--opts", *_opts(dataset, tmp_path / "fresh", "MODEL.PRETRAINED",
                                                     str(pretrained))])
    assert rc == 2 and f"MODEL.PRETRAINED = {pretrained}" in capsys.readouterr().err


def test_a_stop_signal_after_the_summary_lets_the_run_end_as_complete(tmp_path, dataset, capsys, monkeypatch):
    # SIGTERM while the plots are drawn (a scheduler's time limit, seconds after the run's end): the run is done
    # and says so with exit 0 and its plots, not "stopped ... run the same command again" with exit 4.
    from engine import runner

    plot = runner.plot_finished_run

    def signalled_while_plotting(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        return plot(*args)

    monkeypatch.setattr(runner, "plot_finished_run", signalled_while_plotting)
    out = tmp_path / "out"
    rc = train.main(["--cfg", DEMO, "--opts", *_opts(dataset, out, "TRAIN.EPOCHS", "1", "TRAIN.WARMUP_EPOCHS", "0",
                                                     "TRAIN.BATCH_SIZE", "4")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert (out / "summary.json").is_file() and (out / "training_curves.png").is_file()
    assert "stopped" not in captured.out + captured.err + (out / "log_rank0.txt").read_text()


@pytest.mark.parametrize("ending", ["SIGTERM", "error"])
def test_a_stop_or_an_error_while_the_run_is_built_ends_its_log_with_the_line_too(tmp_path, dataset, capsys,
                                                                                    monkeypatch, ending):
    # After the log is opened (lists indexed, loaders built), before training: the console's line is the log's
    # last line too, so that log_rank0.txt, kept across attempts, says why this one ended (it ended without it).
    from engine import runner

    def announce(*args):
        if ending == "SIGTERM":
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))  # the handler raises here
        raise ValueError("a bad value found while building")

    monkeypatch.setattr(runner, "announce_model", announce)
    out = tmp_path / "out"
    rc = train.main(["--cfg", DEMO, "--opts", *_opts(dataset, out, "TRAIN.BATCH_SIZE", "4")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == (4 if ending == "SIGTERM" else 2), last
    assert last.startswith("stopped: SIGTERM received" if ending == "SIGTERM" else "error: a bad value"), last
    log = (out / "log_rank0.txt").read_text().strip().splitlines()
    assert "train.txt" in log[0] and log[-1].endswith("] " + last), log[-3:]


def test_opts_may_be_followed_by_flags():
    args = train.parse_args(["--cfg", DEMO, "--opts", "TRAIN.EPOCHS", "1", "TRAIN.LR", "-5e-6", "--dry-run",
                             "--batch-size", "2"])
    assert args.dry_run and args.batch_size == 2
    assert args.opts == ["TRAIN.EPOCHS", "1", "TRAIN.LR", "-5e-6"]  # -5e-6 is a value, not a flag


def test_several_opts_groups_are_joined_and_flags_after_each_are_read():
    """A second --opts (added to a script's command) took the flags after it for pairs: '--dry-run' was refused as
    an unknown config key. The groups are joined in order, so the later value of a key wins."""
    args = train.parse_args(["--cfg", DEMO, "--opts", "TRAIN.EPOCHS", "1", "--output", "o", "--opts", "TRAIN.LR",
                             "-5e-6", "TRAIN.EPOCHS", "2", "--dry-run"])
    assert args.dry_run and args.output == "o"
    assert args.opts == ["TRAIN.EPOCHS", "1", "TRAIN.LR", "-5e-6", "TRAIN.EPOCHS", "2"]
    assert train.config_overrides(args)[0] == [("--output", "OUTPUT", "o")]  # applied before the pairs


def test_another_tools_auto_resume_flag_is_told_the_config_key(capsys):
    """--auto-resume (mmaction2's) was offered --resume, which needs a checkpoint and does something else."""
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--cfg", DEMO, "--auto_resume"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "did you mean" not in err
    assert "(--auto_resume: resuming from OUTPUT's newest checkpoint is the config key TRAIN.AUTO_RESUME (True by " \
        "default; --opts TRAIN.AUTO_RESUME False starts over))" in err


@pytest.mark.parametrize("opts", ["--opt", "--op"])
def test_opts_abbreviated_may_be_followed_by_flags(opts):
    """argparse takes --opt for --opts, but the flags after its pairs were read as pairs: '--dry-run' (after
    TRAIN.EPOCHS 1) stands where a key is expected."""
    args = train.parse_args(["--cfg", DEMO, opts, "TRAIN.EPOCHS", "1", "--dry-run", "--opts", "TRAIN.LR", "-5e-6"])
    assert args.dry_run and args.opts == ["TRAIN.EPOCHS", "1", "TRAIN.LR", "-5e-6"]


def test_help_lists_every_exit_code(capsys):
    """--help listed the exit codes but 1, a crash, which a batch script meets too."""
    from engine.process_end import EXIT_MEANINGS

    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    listed = re.search(r"Exit codes: (.*?)\. Each end is said in one line\.", text).group(1)
    assert sorted(int(code) for code in re.findall(r"(?:^|; )(\d+) ", listed)) == sorted(EXIT_MEANINGS)
    assert "1 a crash" in listed


def test_help_keeps_the_continuation_line(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "eva_video_k400.pth \\\n        --opts TEST.NUM_CLIP 4" in out


def test_only_test_without_anything_to_evaluate_is_exit_2(tmp_path, dataset, capsys):
    out = tmp_path / "empty_out"
    rc = train.main(["--cfg", DEMO, "--only_test", "--opts", *_opts(dataset, out)])
    err = capsys.readouterr().err
    assert rc == 2 and "nothing to evaluate" in err and str(out) in err and len(err.strip().splitlines()) == 1
    assert err.rstrip().endswith("; give --resume FILE (a checkpoint) or --opts MODEL.PRETRAINED FILE (weights)")
    out.mkdir(exist_ok=True)
    (out / "best.pth").write_bytes(b"")  # a run that kept its best weights: the line names them
    rc = train.main(["--cfg", DEMO, "--only_test", "--opts", *_opts(dataset, out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.rstrip().endswith(f"; give --resume {out / 'best.pth'} to score the best weights it holds")


def test_only_test_picks_latest_checkpoint_in_output(tmp_path, dataset, capsys):
    out = tmp_path / "out"
    opts = _opts(dataset, out)
    cfg = load_config(DEMO, opts)
    for step, cls in ((4, 1), (8, 3)):  # the newer checkpoint (step 8) predicts class 3 for every clip
        save_atomic({"model": _constant_head_weights(cfg, cls=cls, num_classes=4), "optimizer": {},
                     "scheduler": {}, "epoch": step // 4 - 1, "global_step": step, "epoch_complete": True,
                     "config": cfg.dump()}, str(out / f"ckpt_epoch_{step // 4}.pth"))
    rc = train.main(["--cfg", DEMO, "--only_test", "--opts", *opts])
    captured = capsys.readouterr()
    assert rc == 0, captured
    assert f"evaluating {out / 'ckpt_epoch_2.pth'}" in captured.out
    rows = (out / "predictions_test.csv").read_text().splitlines()[1:]
    assert len(rows) == 8 and all(r.split(",")[5] == "3" for r in rows)  # top-1 class of every video
    line = _eval_line(out)
    assert (line["listed_videos"], line["skipped_videos"], line["bad_at_index"]) == (8, 0, 0)


def test_only_test_gives_an_unreadable_video_a_row_with_its_reason(tmp_path, dataset, capsys):
    """A val list naming a file that is not a video: the predictions file has a row for it with the reason the index
    recorded (no score), the accuracy counts the 8 readable videos only, and the plots still come out. Weights from
    MODEL.PRETRAINED: the eval line names that file."""
    out = tmp_path / "out"
    (tmp_path / "broken.webm").write_bytes(b"\x1aE\xdf\xa3 not a video")
    val = tmp_path / "val.txt"
    val.write_text((dataset / "val.txt").read_text() + f"{tmp_path / 'broken.webm'} 1\n")
    opts = _opts(dataset, out, "DATA.VAL_FILE", str(val))
    weights = tmp_path / "released.pth"
    torch.save({"model": _constant_head_weights(load_config(DEMO, opts), cls=2, num_classes=4)}, weights)
    rc = train.main(["--cfg", DEMO, "--only_test", "--pretrained", str(weights), "--opts", *opts])
    assert rc == 0, capsys.readouterr()
    line = _eval_line(out)
    assert (line["num_videos"], line["listed_videos"], line["bad_at_index"]) == (8, 9, 1)
    assert line["top1"] == pytest.approx(25.0) and line["checkpoint"] == str(weights)
    with open(out / "predictions_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and [r["status"] for r in rows] == ["ok"] * 8 + ["error"]
    broken = rows[-1]
    reason = (tmp_path / "val.txt.quarantine.txt").read_text().split("\t", 1)[1].strip()
    assert (broken["index"], broken["path"], broken["label"], broken["label_name"]) == (
        "8", str(tmp_path / "broken.webm"), "1", "moving down")
    assert broken["error"] == reason and broken["correct_top1"] == broken["top1_class"] == ""
    assert all(r["top1_class"] == "2" and r["error"] == "" for r in rows[:8])
    assert (out / "confusion_test.png").is_file()


def _released_weights(path: Path, opts: list[str]) -> Path:
    """A weights-only file of the model ``opts`` build (the plan checks that weights fit it, by their shapes)."""
    from models import build_model

    torch.save({"model": build_model(load_config(DEMO, opts), device="cpu").state_dict()}, path)
    return path


def test_dry_run_plan_names_the_views_each_evaluation_uses(tmp_path, dataset, capsys):
    # Training validates with TEST.NUM_CLIP x NUM_CROP and ends with a final test of FINAL_NUM_CLIP x FINAL_NUM_CROP:
    # the plan printed "test views 1 x 1" for a run whose final test used 4 x 3 views.
    views = ["TEST.NUM_CLIP", "1", "TEST.NUM_CROP", "1", "TEST.FINAL_NUM_CLIP", "4", "TEST.FINAL_NUM_CROP", "3"]
    opts = _opts(dataset, tmp_path / "o", *views)
    assert train.main(["--cfg", DEMO, "--dry-run", "--batch-size", "4", "--opts", *opts]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ *val views \(clips x crops\)\s*: 1 x 1$", out, re.M), out
    assert re.search(r"^ *final test \(clips x crops\)\s*: 4 x 3$", out, re.M), out
    assert "  test views" not in out
    ckpt = _released_weights(tmp_path / "released.pth", _opts(dataset, tmp_path / "o"))
    assert train.main(["--cfg", DEMO, "--only_test", "--resume", str(ckpt), "--dry-run", "--opts",
                       *_opts(dataset, tmp_path / "o", *views)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ *test views \(clips x crops\)\s*: 1 x 1$", out, re.M), out  # what --only_test evaluates
    assert "final test (" not in out and "val views" not in out


def test_eval_only_dry_run_plan_and_no_class_mapping_needed(tmp_path, dataset, capsys):
    ckpt = _released_weights(tmp_path / "released.pth", _opts(dataset, tmp_path / "o"))
    rc = train.main(["--cfg", DEMO, "--only_test", "--resume", str(ckpt), "--dry-run", "--opts",
                     *_opts(dataset, tmp_path / "o", "MODEL.CLASS_MAPPING", str(tmp_path / "absent.npy"))])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "val videos (listed)" in captured.out
    for row in ("train videos", "iterations per epoch", "epochs", "global batch"):
        assert row not in captured.out, row
    assert str(ckpt) in captured.out
    # training still needs the mapping file it names
    rc = train.main(["--cfg", DEMO, "--dry-run", "--opts",
                     *_opts(dataset, tmp_path / "o", "MODEL.CLASS_MAPPING", str(tmp_path / "absent.npy"))])
    assert rc == 2 and "MODEL.CLASS_MAPPING" in capsys.readouterr().err


def test_fp16_on_cpu_is_rejected(tmp_path, dataset, capsys):
    rc = train.main(["--cfg", DEMO, "--opts", *_opts(dataset, tmp_path / "o", "TRAIN.PRECISION", "fp16")])
    err = capsys.readouterr().err
    assert rc == 2 and "TRAIN.PRECISION = 'fp16' needs a CUDA device" in err and len(err.strip().splitlines()) == 1


def test_resume_with_weights_only_file_points_to_pretrained(tmp_path, dataset, capsys):
    cfg = load_config(DEMO, _opts(dataset, tmp_path))
    ckpt = tmp_path / "weights.pth"
    torch.save({"model": _constant_head_weights(cfg, 0, num_classes=4)}, ckpt)
    rc = train.main(["--cfg", DEMO, "--resume", str(ckpt), "--opts",
                     *_opts(dataset, tmp_path / "o", "TRAIN.BATCH_SIZE", "4")])
    captured = capsys.readouterr()
    assert rc == 2 and "use --pretrained for weights-only" in captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err


def test_resume_of_a_pickled_model_says_how_to_save_its_weights(tmp_path, dataset, capsys):
    """train.py --resume of a torch.save(model) file ended with the generic "refused: it holds pickled Python
    objects" line; it now says what MODEL.PRETRAINED says of such a file (how to save its weights alone), and that
    those weights go to --pretrained."""
    from models import build_model

    ckpt = tmp_path / "model.pth"
    torch.save(build_model(load_config(DEMO, _opts(dataset, tmp_path))), ckpt)
    rc = train.main(["--cfg", DEMO, "--resume", str(ckpt), "--opts", *_opts(dataset, tmp_path / "o")])
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert rc == 2 and re.fullmatch(
        rf"error: {re.escape(str(ckpt))}: a pickled model object \(torch.save\(model\): it holds torch\.nn\.[\w.]+\), "
        r"not a state dict; it was not unpickled, .* torch\.save\(torch\.load\(file, weights_only=False\)"
        r"\.state_dict\(\), 'weights\.pth'\) .*, and give that file; --resume continues a training run from one "
        r"of its checkpoints: use --pretrained for weights-only \(e\.g\. released\) files", line), err
    assert not (tmp_path / "o").exists()


def test_strict_list_with_a_bad_video_is_exit_2(tmp_path, dataset, capsys):
    bad = tmp_path / "broken.webm"
    bad.write_bytes(b"not a video")
    lst = tmp_path / "train.txt"
    lst.write_text((dataset / "train.txt").read_text() + f"{bad} 1\n")
    rc = train.main(["--cfg", DEMO, "--opts", *_opts(dataset, tmp_path / "o", "DATA.TRAIN_FILE", str(lst),
                                                     "DATA.STRICT", "True")])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (the indexing progress bar writes to stderr before it)
    assert rc == 2 and last.startswith("error: ") and "broken.webm" in last and "Traceback" not in err, err


def test_resume_of_the_original_codes_checkpoint_says_what_takes_it(tmp_path, dataset, capsys):
    ckpt = tmp_path / "original.pth"
    # the original code's checkpoint layout: a pickled yacs CfgNode beside the weights. It was refused as if it
    # could run code, with no word of the --pretrained and --only_test that read it (README, "Where we differ")
    torch.save({"model": {}, "optimizer": {}, "config": CfgNode({"SEED": 1}), "epoch": 3}, ckpt)
    rc = train.main(["--cfg", DEMO, "--resume", str(ckpt), "--opts",
                     *_opts(dataset, tmp_path / "o", "TRAIN.BATCH_SIZE", "4")])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert rc == 2 and (f"error: checkpoint {ckpt} is another code's training checkpoint (it holds pickled "
                        "yacs.config.CfgNode, as the original EVA code's do), not one of this project's runs; "
                        "--resume continues this project's training runs only: --pretrained starts from its weights "
                        "(its optimizer state is not carried over), --only_test --resume evaluates it") in text, text
    assert "\x1b" not in text and "weights_only" not in text and "Traceback" not in text


@pytest.mark.parametrize("below", [False, True])
def test_output_that_is_a_file_is_one_line(tmp_path, dataset, capsys, below):
    existing = tmp_path / "results"
    existing.write_text("not a folder")
    output = existing / "run1" if below else existing
    rc = train.main(["--cfg", DEMO, "--opts", *_opts(dataset, output)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    where = existing if below else "it"
    assert f"OUTPUT = {output} cannot be a directory: {where} is an existing file" in err
    assert existing.read_text() == "not a folder"


@pytest.mark.parametrize("dry_run", [True, False])
def test_an_output_whose_path_is_no_utf8_is_refused_before_training(tmp_path, dataset, capsys, dry_run):
    """A folder named in bytes that are no UTF-8 (on a Latin-1 system): the run trained its first epoch and crashed
    on a log line naming it; and torch reads no checkpoint under such a name, so no resume could have gone on."""
    output = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"r\xe9sultats"))
    rc = train.main(["--cfg", DEMO, *(["--dry-run"] if dry_run else []), "--opts", *_opts(dataset, output)])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().splitlines()[-1] == (
        f"error: OUTPUT = {tmp_path}/r\\xe9sultats: its path holds bytes that are no UTF-8, and torch cannot read "
        "checkpoints back from there; give a folder whose path is UTF-8 (or rename it)"), err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("dry_run", [True, False])
def test_an_empty_output_is_one_line_and_nothing_is_written(tmp_path, dataset, capsys, monkeypatch, dry_run):
    """OUTPUT "" was the working folder: a run left its lock there, then failed with "[Errno 2] ...: ''"."""
    monkeypatch.chdir(tmp_path)
    rc = train.main(["--cfg", DEMO, "--output", "", *(["--dry-run"] if dry_run else []), "--opts",
                     *_opts(dataset, tmp_path / "o")[:-2]])
    err = capsys.readouterr().err
    assert rc == 2 and err == "error: OUTPUT is empty: name the folder the run writes to (--output DIR, or OUTPUT " \
                              "in the config; the default is output)\n", err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("opts,needle", [
    (["MODEL.ARCH", "eva-tiny/9"], "MODEL.ARCH 'eva-tiny/9' is not a known preset"),
    (["DATA.INPUT_SIZE", "36"], "DATA.INPUT_SIZE 36 is not divisible by the patch size 8 of MODEL.ARCH 'eva-tiny/8' "
                                "(e.g. use 32 or 40)"),
    (["DATA.INPUT_SIZE", "4"], "patch size 8 of MODEL.ARCH 'eva-tiny/8' (e.g. use 8)\n"),  # not 0, which is refused
])
def test_model_errors_come_before_the_lists_are_indexed(tmp_path, dataset, capsys, monkeypatch, opts, needle):
    import dali_pipelines.loader as loader_mod

    built = []
    real = loader_mod.build_loader
    monkeypatch.setattr(loader_mod, "build_loader", lambda *a, **k: built.append(a[1]) or real(*a, **k))
    rc = train.main(["--cfg", DEMO, "--opts", *_opts(dataset, tmp_path / "o"), *opts])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert built == []  # no loader (and so no index) was built


@pytest.mark.parametrize("launcher_args", [["--local_rank", "0"], ["--local-rank=0"], ["--local_rank=1"]])
def test_launcher_local_rank_forms_are_accepted(launcher_args, monkeypatch):
    """torch.distributed.launch passes '--local_rank N' (before torch 2.0) or '--local-rank=N' (since), ahead of
    the script's own flags; the rank reaches LOCAL_RANK unless the launcher already set it there."""
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    args = train.parse_args([*launcher_args, "--config", DEMO, "--opts", "TRAIN.EPOCHS", "1"])
    assert args.cfg == DEMO and args.opts == ["TRAIN.EPOCHS", "1"]
    assert args.local_rank == int(launcher_args[-1][-1])
    assert os.environ["LOCAL_RANK"] == str(args.local_rank)
    monkeypatch.setenv("LOCAL_RANK", "3")  # torchrun's environment wins
    train.parse_args(["--local-rank=0", "--cfg", DEMO])
    assert os.environ["LOCAL_RANK"] == "3"


def test_a_full_disk_mid_run_is_one_line_exit_2_and_the_same_command_resumes(tmp_path, dataset, monkeypatch,
                                                                            capsys):
    import errno

    import engine.metrics as metrics_mod

    out = tmp_path / "out"
    command = ["--cfg", DEMO, "--opts", *_opts(dataset, out, "TRAIN.BATCH_SIZE", "2", "TRAIN.EPOCHS", "1",
                                               "TRAIN.WARMUP_EPOCHS", "0.5", "SAVE_STEPS", "2", "PRINT_FREQ", "1",
                                               "TEST.FINAL_NUM_CLIP", "0",
                                               "TRAIN.AUTO_RESUME", "True")]
    write = metrics_mod.MetricLogger._write

    def full_disk(self, line):
        if line.get("kind") == "train" and line["step"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", self._jsonl.name)
        return write(self, line)

    monkeypatch.setattr(metrics_mod.MetricLogger, "_write", full_disk)
    assert train.main(command) == 2
    seen = capsys.readouterr()
    # (it said "or point OUTPUT elsewhere", which starts over, and promised a resume whatever TRAIN.AUTO_RESUME)
    assert f"error: cannot write {out / 'metrics.jsonl'}: No space left on device; free space and run the same " \
           "command: with TRAIN.AUTO_RESUME True (the default) it resumes from the last checkpoint in OUTPUT" \
           in seen.out
    assert "Traceback" not in seen.out + seen.err
    # (it said "bad input" to a batch script's author looking at a run that had filled its disk)
    assert json.loads((out / "exit_status.json").read_text()) == {
        "exit_code": 2, "meaning": "bad input or a file that cannot be written"}
    monkeypatch.undo()  # space freed
    assert train.main(command) == 0
    assert f"resumed from {out / 'ckpt_step_2.pth'}" in capsys.readouterr().out
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "train"]
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] > 3


def test_an_output_folder_that_cannot_be_written_is_named_before_anything_runs(tmp_path, dataset, monkeypatch,
                                                                               capsys):
    readonly = tmp_path / "mounted"
    readonly.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: str(p) != str(readonly) and real_access(p, mode, **k))
    rc = train.main(["--cfg", DEMO, "--dry-run", "--opts", *_opts(dataset, readonly / "run1")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"OUTPUT = {readonly / 'run1'} cannot be written: {readonly}, where it would be made, is on a read-only" \
        in err


def test_an_output_folder_that_cannot_be_made_is_named_with_output(tmp_path, dataset, monkeypatch, capsys):
    """OUTPUT /proc/out (where access() says yes to root, and mkdir fails) ended in "error: [Errno 2] No such file
    or directory: '/proc/out'": neither OUTPUT nor the folder that failed was named as such."""
    if os.path.isdir("/proc/self"):  # refused before anything runs: a file made there on trial fails
        rc = train.main(["--cfg", DEMO, "--dry-run", "--opts", *_opts(dataset, Path("/proc/out"))])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: OUTPUT = /proc/out") and len(err.strip().splitlines()) == 1, err
    out = tmp_path / "runs" / "run1"
    real_makedirs = os.makedirs

    def refused(name, *args, **kwargs):  # what the checks before cannot foresee: a race, a name too long
        if os.path.abspath(name).startswith(str(tmp_path / "runs")):
            raise PermissionError(13, "Permission denied", str(tmp_path / "runs"))
        return real_makedirs(name, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", refused)
    rc = train.main(["--cfg", DEMO, "--opts", *_opts(dataset, out)])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"error: OUTPUT = {out}: cannot create the folder {tmp_path / 'runs'} above it " \
                              "(Permission denied)\n", err
    assert os.listdir(tmp_path) == []


def test_a_second_run_into_an_output_another_run_is_writing_is_refused_and_moves_nothing(tmp_path, dataset, capsys):
    """Two runs into one OUTPUT at once (a job requeued while its first attempt still ends, a command started
    twice) both went on: the second moved the first's files into earlier_runs/ while it wrote them, and their lines
    and checkpoints mixed. Rank 0 holds OUTPUT/.run.lock for the run; a refused run writes nothing there, not even
    its exit status."""
    from engine.run_files import RUN_LOCK
    from evautil.files import hold_lock

    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')  # the running run's
    (out / "exit_status.json").write_text("the running run's\n")
    other = hold_lock(str(out / RUN_LOCK))  # the other run
    try:
        rc = train.main(["--cfg", DEMO, "--opts", *_opts(dataset, out)])
        err = capsys.readouterr().err
        assert rc == 2 and err.strip().splitlines()[-1] == (
            f"error: OUTPUT {out} is being written by another run (it holds {RUN_LOCK} there): wait for it to end, "
            "or give this run another OUTPUT"), err
        assert sorted(p.name for p in out.iterdir()) == [RUN_LOCK, "exit_status.json", "metrics.jsonl"]
        assert (out / "exit_status.json").read_text() == "the running run's\n"
    finally:
        other.close()
    from models import build_model

    weights = tmp_path / "weights.pth"
    torch.save(build_model(load_config(DEMO, _opts(dataset, out))).state_dict(), weights)
    rc = train.main(["--cfg", DEMO, "--only_test", "--resume", str(weights), "--opts", *_opts(dataset, out)])
    assert rc == 0, capsys.readouterr()  # the lock let go, the folder is usable (and this run let go of it too)
    assert json.loads((out / "exit_status.json").read_text())["exit_code"] == 0
    again = hold_lock(str(out / RUN_LOCK))
    assert again is not None
    again.close()


def test_a_dry_run_names_a_data_root_that_is_not_a_folder(tmp_path, dataset, capsys):
    """The plan said nothing of a mistyped DATA.ROOT (exit 0); the run then found every video missing, after
    indexing every list."""
    gone = tmp_path / "typo"
    rc = train.main(["--cfg", DEMO, "--dry-run", "--opts", *_opts(dataset, tmp_path / "out", "DATA.ROOT", str(gone))])
    err = capsys.readouterr().err
    first = (dataset / "val.txt").read_text().split("\n")[0].rsplit(" ", 1)[0]
    assert rc == 2 and err == f"error: DATA.ROOT = {gone} is not an existing folder, and the paths of " \
                              f"{dataset / 'val.txt'} are relative to it (first: {first!r}): set DATA.ROOT to the " \
                              "folder they are relative to\n", err


def test_a_dry_run_counts_the_missing_videos_a_run_leaves_out_and_refuses_them_under_strict(tmp_path, dataset,
                                                                                             capsys):
    """The plan promised to check that the lists' videos are found under DATA.ROOT, but looked only for the first
    one: two missing of 14 passed in silence with 14 // 7 = 2 iterations per epoch, where the run trains 12 // 7 =
    1, and under DATA.STRICT the plan said 0 where the queued run stopped after indexing."""
    lst = tmp_path / "train.txt"
    lst.write_text((dataset / "train.txt").read_text() + "videos/gone/a.mp4 1\nvideos/gone/b.mp4 2\n")
    opts = _opts(dataset, tmp_path / "out", "DATA.TRAIN_FILE", str(lst), "TRAIN.BATCH_SIZE", "7")
    assert train.main(["--cfg", DEMO, "--dry-run", "--opts", *opts]) == 0
    out, err = capsys.readouterr()
    assert "train videos (listed)          : 14" in out and "train videos (found)           : 12" in out
    assert "iterations per epoch           : 1" in out
    gone = f"{dataset / 'videos/gone/a.mp4'}; {dataset / 'videos/gone/b.mp4'}"
    assert err == f"warning: 2 of the 14 videos listed in {lst} (DATA.TRAIN_FILE) are missing: {gone} (a run " \
                  "leaves them out)\n", err
    assert train.main(["--cfg", DEMO, "--dry-run", "--opts", *opts, "DATA.STRICT", "True"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"error: DATA.STRICT is on and 2 of the 14 videos listed in {lst} (DATA.TRAIN_FILE) " \
                                f"are missing: {gone}; fix or remove them, or set DATA.STRICT False to leave them out\n"


def test_a_dry_run_says_one_missing_video_in_the_singular(tmp_path, dataset, capsys):
    """One missing video read "1 of the 13 videos ... are missing ... (a run leaves them out)"."""
    lst = tmp_path / "train.txt"
    lst.write_text((dataset / "train.txt").read_text() + "videos/gone/a.mp4 1\n")
    opts = _opts(dataset, tmp_path / "out", "DATA.TRAIN_FILE", str(lst), "TRAIN.BATCH_SIZE", "7")
    assert train.main(["--cfg", DEMO, "--dry-run", "--opts", *opts]) == 0
    gone = dataset / "videos/gone/a.mp4"
    err = capsys.readouterr().err
    assert err == f"warning: 1 of the 13 videos listed in {lst} (DATA.TRAIN_FILE) is missing: {gone} (a run " \
                  "leaves it out)\n", err
    assert train.main(["--cfg", DEMO, "--dry-run", "--opts", *opts, "DATA.STRICT", "True"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: DATA.STRICT is on and 1 of the 13 videos listed in {lst} (DATA.TRAIN_FILE) is missing: " \
                  f"{gone}; fix or remove it, or set DATA.STRICT False to leave it out\n", err


@pytest.mark.parametrize("dry_run", [True, False])
def test_an_empty_data_root_with_the_list_relative_to_another_folder_is_named(tmp_path, dataset, capsys, monkeypatch,
                                                                             dry_run):
    """With DATA.ROOT empty the list's relative paths are looked up from the working folder: run from another
    folder, the plan said nothing (exit 0), and before that the run wrote a quarantine file beside the list marking
    every video missing, then ended with no readable video."""
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in dataset.iterdir())
    rc = train.main(["--cfg", DEMO, *(["--dry-run"] if dry_run else []), "--opts",
                     *_opts(dataset, tmp_path / "out", "DATA.ROOT", "", "TRAIN.EPOCHS", "1",
                            "TRAIN.WARMUP_EPOCHS", "0")])
    err = capsys.readouterr().err
    listed = dataset / ("val.txt" if dry_run else "train.txt")  # the plan reads the val list first, a run indexes train
    first = listed.read_text().split("\n")[0].rsplit(" ", 1)[0]
    count = len(listed.read_text().splitlines())
    assert rc == 2 and err.strip().splitlines()[-1] == (
        f"error: DATA.ROOT is empty, and none of the {count} videos listed in {listed} exists from the working "
        f"folder {tmp_path} (first: {first!r}): set DATA.ROOT to the folder its paths are relative to"), err
    assert sorted(p.name for p in dataset.iterdir()) == before  # no quarantine file (nor index) beside the list


def test_resuming_an_epoch_checkpoint_names_the_epoch_it_closes(tmp_path, dataset, capsys):
    """ckpt_epoch_1.pth was announced as 'epoch 2', and a finished 1-epoch run as 'epoch 2' then 'epoch 1/1'."""
    out = tmp_path / "out"
    command = ["--cfg", DEMO, "--opts", *_opts(dataset, out, "TRAIN.BATCH_SIZE", "3", "TRAIN.EPOCHS", "1",
                                               "TRAIN.WARMUP_EPOCHS", "0.5", "TEST.FINAL_NUM_CLIP", "0",
                                               "TRAIN.AUTO_RESUME", "True")]
    assert train.main(command) == 0
    capsys.readouterr()
    assert train.main(command) == 0
    seen = capsys.readouterr().out
    steps = json.loads((out / "summary.json").read_text())["optimizer_steps"]
    assert f"resumed from {out / 'ckpt_epoch_1.pth'}: end of epoch 1, step {steps}\n" in seen, seen
    assert f"is finished (epoch 1/1, step {steps})" in seen and "epoch 2" not in seen, seen


def test_epochs_shortened_below_the_checkpoint_names_the_checkpoints_epoch(tmp_path, dataset, capsys):
    """TRAIN.EPOCHS 1 (TRAIN.ALLOW_CONFIG_CHANGE) after a 2-epoch run said 'finished (epoch 1/1, ...)' though the
    checkpoint ends epoch 2, or is in it: the line names the checkpoint's place; the summary is still kept."""
    out = tmp_path / "out"
    common = _opts(dataset, out, "TRAIN.BATCH_SIZE", "3", "TRAIN.WARMUP_EPOCHS", "0.5", "TEST.FINAL_NUM_CLIP", "0",
                   "TRAIN.AUTO_RESUME", "True", "SAVE_STEPS", "1", "KEEP_LAST", "20")
    assert train.main(["--cfg", DEMO, "--opts", *common, "TRAIN.EPOCHS", "2"]) == 0
    summary = (out / "summary.json").read_bytes()
    steps = json.loads(summary)["optimizer_steps"]
    shorter = ["--cfg", DEMO, "--opts", *common, "TRAIN.EPOCHS", "1", "TRAIN.ALLOW_CONFIG_CHANGE", "True"]
    capsys.readouterr()
    assert train.main(shorter) == 0
    seen = capsys.readouterr().out
    assert (f"the run in {out} is finished (its checkpoint {out / 'ckpt_epoch_2.pth'} is at the end of epoch 2, "
            f"step {steps}, and TRAIN.EPOCHS 1 now ends before it): nothing to train") in seen, seen
    assert "epoch 1/1" not in seen and (out / "summary.json").read_bytes() == summary
    (out / "ckpt_epoch_2.pth").unlink()  # the newest is now the last step checkpoint, mid-epoch 2
    mid = max(out.glob("ckpt_step_*.pth"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    assert train.main(shorter) == 0
    seen = capsys.readouterr().out
    assert (f"the run in {out} is finished (its checkpoint {mid} is at mid-epoch 2, step {mid.stem.rsplit('_')[-1]}, "
            "and TRAIN.EPOCHS 1 now ends before it): nothing to train") in seen, seen


def test_fine_tuning_says_which_weights_it_starts_from_and_what_their_conversion_changed(tmp_path, dataset, capsys):
    """A --pretrained file with a 5-class head for a 4-class run: the log names the file, the head dropped and the
    parameters left at their initialisation; summary.json records the file."""
    cfg = load_config(DEMO, _opts(dataset, tmp_path / "out"))
    weights = tmp_path / "k5.pth"
    torch.save({"model": _constant_head_weights(cfg, 0, num_classes=5)}, weights)
    out = tmp_path / "out"
    rc = train.main(["--cfg", DEMO, "--pretrained", str(weights),
                     "--opts", *_opts(dataset, out, "TRAIN.EPOCHS", "1", "TRAIN.WARMUP_EPOCHS", "0",
                                      "TRAIN.BATCH_SIZE", "4", "TEST.FINAL_NUM_CLIP", "0")])
    assert rc == 0, capsys.readouterr().err
    log = (out / "log_rank0.txt").read_text()
    assert f"starting from MODEL.PRETRAINED = {weights} (MODEL.PRETRAINED_MODE eva_k722)" in log, log
    assert "weights: head: checkpoint has 5 classes, model 4; head dropped" in log
    assert "weights: left at their initialisation: head.weight, head.bias" in log
    assert json.loads((out / "summary.json").read_text())["pretrained"] == str(weights)


def test_a_stop_before_the_summary_names_the_resume_that_writes_it_and_the_summary_paths_are_absolute(
        tmp_path, dataset, capsys, monkeypatch):
    """A stop signal after the last epoch's checkpoint, before summary.json, said "Run the same command again",
    which with TRAIN.AUTO_RESUME False starts over from step 0. It says the training is finished and names the
    --resume that writes the summary. That summary, of a run whose OUTPUT and --resume were given relative, names
    its files by absolute paths (the user's link kept: abspath, not realpath), which mean something wherever it is
    read from; the checkpoint the run resumed is recorded so too, for a summary written from another folder."""
    import engine.metrics as metrics_mod

    log_step, summary = metrics_mod.MetricLogger.log_step, metrics_mod.MetricLogger.summary

    def signalled_in_step_2(self, step, *args, **kwargs):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return log_step(self, step, *args, **kwargs)

    def signalled_before_summary(self, *args, **kwargs):  # as a scheduler's SIGTERM once the training is done
        os.kill(os.getpid(), signal.SIGTERM)
        return summary(self, *args, **kwargs)

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    here = Path(os.getcwd())
    out = os.path.join("link", "out")
    opts = ["--opts", *_opts(dataset, Path(out), "TRAIN.EPOCHS", "1", "TRAIN.WARMUP_EPOCHS", "0", "TRAIN.BATCH_SIZE",
                             "2", "TEST.FINAL_NUM_CLIP", "0", "TRAIN.AUTO_RESUME", "False")]
    monkeypatch.setattr(metrics_mod.MetricLogger, "log_step", signalled_in_step_2)
    assert train.main(["--cfg", DEMO, *opts]) == 4
    monkeypatch.setattr(metrics_mod.MetricLogger, "log_step", log_step)
    monkeypatch.setattr(metrics_mod.MetricLogger, "summary", signalled_before_summary)
    step_2 = os.path.join(out, "ckpt_step_2.pth")
    assert train.main(["--cfg", DEMO, "--resume", step_2, *opts]) == 4
    stopped = capsys.readouterr().out.strip().splitlines()[-1]
    checkpoint = os.path.join(out, "ckpt_epoch_1.pth")
    assert stopped == (f"stopped: SIGTERM received after the training's last checkpoint {checkpoint}; exit code "
                       "4. The training is finished; its summary.json is not written yet. To write it, run the "
                       f"command with --resume {checkpoint} (TRAIN.AUTO_RESUME is False: the same command would "
                       "start over)")
    assert not os.path.exists(os.path.join(out, "summary.json"))
    monkeypatch.setattr(metrics_mod.MetricLogger, "summary", summary)
    monkeypatch.chdir(here / "elsewhere")  # that command, from another folder
    opts[opts.index(out)] = os.path.join("..", out)
    assert train.main(["--cfg", DEMO, "--resume", os.path.join("..", checkpoint), *opts]) == 0
    assert "finished training, but its summary.json is missing" in capsys.readouterr().out
    written = json.loads((here / out / "summary.json").read_text())
    assert written["last_checkpoint"] == str(here / "link" / "out" / "ckpt_epoch_1.pth")
    assert written["resumed_from"] == str(here / "link" / "out" / "ckpt_step_2.pth")
    assert written["output"] == str(here / "link" / "out") and written["optimizer_steps"] == 6
    assert not os.path.exists(here / out / "earlier_runs")  # nothing was started over
    assert train.main(["--cfg", DEMO, "--only_test", "--resume", os.path.join("..", checkpoint), *opts]) == 0
    evaluated = json.loads((here / out / "summary.json").read_text())["evaluated"]
    assert evaluated == str(here / "link" / "out" / "ckpt_epoch_1.pth")


def test_a_stopped_run_without_auto_resume_names_the_command_that_resumes_it(tmp_path, dataset, capsys, monkeypatch):
    """With TRAIN.AUTO_RESUME False (the demo's) the same command starts over from step 0 and moves the stopped
    attempt's checkpoint aside: its stop line said "Run the same command again to resume". It names --resume and
    the checkpoint instead, and that command continues the run."""
    import engine.metrics as metrics_mod

    log_step = metrics_mod.MetricLogger.log_step

    def signalled_in_step_2(self, step, *args, **kwargs):  # as a scheduler's SIGTERM during step 2
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return log_step(self, step, *args, **kwargs)

    monkeypatch.setattr(metrics_mod.MetricLogger, "log_step", signalled_in_step_2)
    out = tmp_path / "out"
    opts = _opts(dataset, out, "TRAIN.EPOCHS", "1", "TRAIN.WARMUP_EPOCHS", "0", "TRAIN.BATCH_SIZE", "2",
                 "TEST.FINAL_NUM_CLIP", "0", "TRAIN.AUTO_RESUME", "False")
    assert train.main(["--cfg", DEMO, "--opts", *opts]) == 4
    stopped = capsys.readouterr().out.strip().splitlines()[-1]
    checkpoint = out / "ckpt_step_2.pth"
    assert checkpoint.is_file() and stopped.startswith("stopped: SIGTERM received: stopped after optimizer step 2")
    assert "Run the same command again" not in stopped and f"run the command with --resume {checkpoint}" in stopped
    monkeypatch.undo()
    assert train.main(["--cfg", DEMO, "--resume", str(checkpoint), "--opts", *opts]) == 0
    assert f"resumed from {checkpoint}: epoch 1, step 2" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["optimizer_steps"] == 6  # 12 clips / 2, every step once


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_training_run_of_zero_epochs_is_refused_before_output_is_written(tmp_path, dataset, capsys, dry_run):
    """TRAIN.EPOCHS 0 was taken for a finished run: the plan showed "epochs : 0" and the run built its loaders,
    tested the random initial weights and said its summary was "missing, damaged or older than None"."""
    out = tmp_path / "out"
    rc = train.main(["--cfg", DEMO, *(["--dry-run"] if dry_run else []),
                     "--opts", *_opts(dataset, out, "TRAIN.EPOCHS", "0", "TRAIN.BATCH_SIZE", "4")])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().splitlines() == [
        "error: TRAIN.EPOCHS = 0 (from --opts) leaves a training run nothing to train: set it to at least 1, or "
        "evaluate weights with --only_test (--resume FILE or MODEL.PRETRAINED)"], err
    assert not out.exists()


def test_a_dry_run_says_what_the_start_sets_aside_and_that_another_run_holds_output(tmp_path, dataset, capsys):
    """The plan of a run that starts over said "step 0" only: that it first moves the earlier run's checkpoints out
    of OUTPUT, or that another run writing OUTPUT would refuse it, was learned from the run itself."""
    from engine.run_files import RUN_LOCK
    from evautil.files import hold_lock

    out = tmp_path / "out"
    out.mkdir()
    opts = _opts(dataset, out, "TRAIN.BATCH_SIZE", "4")

    def plan(*extra: str) -> tuple[str, str]:
        assert train.main(["--cfg", DEMO, "--dry-run", "--opts", *opts, *extra]) == 0
        printed = capsys.readouterr()
        row = re.search(r"^  sets aside *: (.*)$", printed.out, re.M)
        return (row.group(1) if row else ""), printed.err

    assert plan() == ("", "")  # nothing there yet
    for name in ("ckpt_epoch_2.pth", "config.yaml", "metrics.jsonl", "summary.json", "predictions_test.csv"):
        (out / name).write_text("{}\n")
    from models import build_model

    torch.save(build_model(load_config(DEMO, opts)).state_dict(), out / "best.pth")
    assert plan()[0] == ("an earlier run's 6 files in OUTPUT (best.pth, ckpt_epoch_2.pth, config.yaml, "
                         "metrics.jsonl, predictions_test.csv and 1 more), to earlier_runs/<date-time>/")
    assert plan("MODEL.PRETRAINED", str(out / "best.pth"))[0] == (  # what the run reads stays where it is
        "an earlier run's 5 files in OUTPUT (ckpt_epoch_2.pth, config.yaml, metrics.jsonl, predictions_test.csv, "
        "summary.json), to earlier_runs/<date-time>/")
    other = hold_lock(str(out / RUN_LOCK))
    try:
        (out / RUN_LOCK).write_text('{"pid": 4321, "host": "node7"}\n')
        assert plan()[1].splitlines() == [
            f"warning: OUTPUT {out} is being written by another run now (process 4321 on node7 holds {RUN_LOCK} "
            "there): this run would be refused until it ends"]
    finally:
        other.close()
    assert plan()[1] == ""


def test_a_batch_with_accumulation_larger_than_the_list_is_named_with_what_to_change(tmp_path, dataset, capsys):
    """12 training clips in batches of 8 make one batch, short of an optimizer step of 2 accumulated batches: the
    run (whose plan refused it with the global batch) ended on '1 batches per process is less than one optimizer
    step', naming neither the key of the list nor what to lower. The training loader refuses it as the plan does."""
    rc = train.main(["--cfg", DEMO, "--opts", *_opts(dataset, tmp_path / "out", "TRAIN.BATCH_SIZE", "8",
                                                     "TRAIN.ACCUMULATION_STEPS", "2")])
    printed = capsys.readouterr()
    last = (printed.out + printed.err).strip().splitlines()[-1]  # the run's log is open: its console lines
    assert rc == 2 and last == (
        f"error: DATA.TRAIN_FILE {dataset / 'train.txt'}: 12 usable training videos, fewer than one global batch "
        "(TRAIN.BATCH_SIZE 8 x TRAIN.ACCUMULATION_STEPS 2 x world size 1 = 16): lower TRAIN.BATCH_SIZE or "
        "TRAIN.ACCUMULATION_STEPS, or list more videos"), last



FINISHED = "(the training is done; nothing to resume)"
STOP_TEST = ("stopping after the batch in flight, keeping the videos scored so far (exit code 4), unless that batch is "
             "its last: then writing its results (exit code 0)")


@pytest.mark.parametrize("case,opts,call,said", [
    ("final test", ["TEST.NUM_CLIP", "1", "TEST.NUM_CROP", "1"], 2, f"the final test: {STOP_TEST}"),
    ("final test serving as validation", [], 1, f"the final test: finishing it {FINISHED}"),
    ("last validation", ["TEST.NUM_CLIP", "1", "TEST.NUM_CROP", "1"], 1,
     "the last epoch's validation: finishing it, then stopping with the last epoch's checkpoint before the final "
     "test (exit code 4)"),
    ("earlier validation", ["TRAIN.EPOCHS", "2", "TEST.EVAL_FREQ", "1"], 1,
     "the validation of epoch 1: finishing it, then stopping with the epoch's checkpoint (exit code 4)")])
def test_a_stop_signal_during_an_evaluation_is_said_as_it_is_seen(tmp_path, dataset, capsys, monkeypatch, case, opts,
                                                                    call, said):
    """A scheduler's SIGTERM during the final test let the test finish and the run end with exit 0 without a word:
    its log could not tell the signal was seen. It is said once, after the batch it came in; so is one during an
    earlier epoch's validation, after which the run stops with the epoch's checkpoint, exit code 4. The final test
    (hours for a large model, longer than a scheduler's grace time) stops after that batch, exit code 4; one that
    came during the last validation stops the run before the test; only a test serving as the last validation
    (before the epoch's checkpoint) finishes."""
    import engine.evaluate as evaluate_mod

    evaluate, calls = evaluate_mod.evaluate, []

    def signalled(model, loader, ctx, **kwargs):  # as evaluation `call` starts: the signal comes before its batches
        calls.append(kwargs["split"])
        if len(calls) == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(model, loader, ctx, **kwargs)

    monkeypatch.setattr(evaluate_mod, "evaluate", signalled)
    out = tmp_path / "out"
    rc = train.main(["--cfg", DEMO, "--opts", *_opts(dataset, out, "TRAIN.EPOCHS", "1", "TRAIN.WARMUP_EPOCHS", "0",
                                                     "TRAIN.BATCH_SIZE", "4", *opts)])
    captured = capsys.readouterr()
    printed, said = captured.out, f"stop signal SIGTERM received during {said}"
    finished = case == "final test serving as validation"
    assert rc == (0 if finished else 4), captured.out[-2000:] + captured.err[-2000:]
    log = (out / "log_rank0.txt").read_text()
    assert json.loads((out / "exit_status.json").read_text())["exit_code"] == rc
    lines = printed.splitlines()
    assert lines.count(said) == 1, printed[-2000:]
    assert sum(line.endswith("] " + said) for line in log.splitlines()) == 1, log[-2000:]
    # said before the evaluation's own line, as its batches run
    evaluated = [i for i, line in enumerate(lines) if re.match(r"eval \w+ (of \S+ )?\(", line)]
    assert lines.index(said) < (evaluated + [len(lines) - 1])[call - 1], printed[-2000:]  # a stopped test: none
    assert not any(line.startswith("stop signal") for line in lines if line != said)
    if finished:
        assert (out / "summary.json").is_file() and (out / "predictions_test.csv").is_file()
        assert "stopped" not in printed + log
        assert calls == (["val", "test"] if "TEST.NUM_CLIP" in opts else ["test"])
    else:
        assert not (out / "summary.json").exists() and (out / "ckpt_epoch_1.pth").is_file()
        assert calls == (["val", "test"] if case == "final test" else ["val"])
        assert json.loads((out / "exit_status.json").read_text())["meaning"] == "stopped by a signal, resumable"
        stopped = {"earlier validation": "stopped: SIGTERM received: stopped after optimizer step 3 with checkpoint "
                                         f"{out / 'ckpt_epoch_1.pth'}",
                   "last validation": "stopped: SIGTERM received before the final test: stopped after the last "
                                      "epoch's checkpoint; exit code 4. The training is finished (last checkpoint "
                                      f"{out / 'ckpt_epoch_1.pth'}); its final test is not complete, its "
                                      "summary.json not written yet.",
                   # before its first batch: nothing scored, no progress file
                   "final test": "stopped: SIGTERM received during the final test: stopped before any of its 8 "
                                 "videos was scored; exit code 4."}[case]
        assert lines[-1].startswith(stopped), lines[-1]
        assert not (out / "test_progress.json").exists()


def _final_test_runs(dataset: Path, capsys, monkeypatch, signal_after_batch: int, sent: int = signal.SIGTERM):
    """``(run, forwarded)``: ``run(output, *flags)`` trains the demo 1 epoch (validation 1 x 1, final test 2 x 1, 8
    videos in batches of 3) and returns its exit code (None: it raised KeyboardInterrupt) and printed text; the first
    run's final test gets ``sent`` (a SIGTERM) after its batch ``signal_after_batch``; ``forwarded`` holds the clips
    each forward of the run's evaluations had."""
    import engine.evaluate as evaluate_mod

    evaluate, score = evaluate_mod.evaluate, evaluate_mod._score_batches
    pending, forwarded = [signal_after_batch], []

    def signalled(model, loader, ctx, **kwargs):
        progress, batches = kwargs["progress"], []

        def batch_done(videos: int) -> None:
            progress(videos)
            batches.append(videos)
            if kwargs["split"] == "test" and pending and pending[0] == len(batches):
                pending.clear()
                os.kill(os.getpid(), sent)
        return evaluate(model, loader, ctx, **{**kwargs, "progress": batch_done})

    def counted(model, loader, *args):
        def forward(clips):
            forwarded.append(clips.shape[0])
            return model(clips)
        return score(forward, loader, *args)

    monkeypatch.setattr(evaluate_mod, "evaluate", signalled)
    monkeypatch.setattr(evaluate_mod, "_score_batches", counted)
    views = ["TEST.NUM_CLIP", "1", "TEST.NUM_CROP", "1", "TEST.FINAL_NUM_CLIP", "2", "TEST.FINAL_NUM_CROP", "1"]

    def run(output: Path, *flags: str, signal_after: int | None = None) -> tuple[int, str]:
        """``signal_after``: this run's test gets ``sent`` after that batch too."""
        forwarded.clear()
        if signal_after is not None:
            pending[:] = [signal_after]
        try:
            rc = train.main(["--cfg", DEMO, *flags, "--opts", *_opts(dataset, output, "TRAIN.EPOCHS", "1",
                                                                     "TRAIN.WARMUP_EPOCHS", "0", "TRAIN.BATCH_SIZE",
                                                                     "4", *views)])
        except KeyboardInterrupt:  # what a Ctrl-C ends the command with (the interrupt hook prints its line)
            rc = None
        captured = capsys.readouterr()
        return rc, captured.out + captured.err
    return run, forwarded


def test_a_stopped_final_test_keeps_its_videos_and_the_rerun_forwards_only_the_rest(tmp_path, dataset, capsys,
                                                                                     monkeypatch):
    """A SIGTERM during the final test (hours for a large model, longer than a scheduler's grace time) let the test
    run on until the kill: no exit status, and the rerun tested every video again. It stops after the batch in
    flight, exit code 4, keeping that batch's videos in test_progress.json; the rerun forwards only the others and
    writes the predictions an uninterrupted test writes. A progress file of another test (here: another
    checkpoint's) is named in a warning and ignored: that rerun tests every video, the uninterrupted baseline."""
    import shutil

    run, forwarded = _final_test_runs(dataset, capsys, monkeypatch, signal_after_batch=1)
    out, other = tmp_path / "out", tmp_path / "other"
    rc, printed = run(out)
    assert rc == 4 and json.loads((out / "exit_status.json").read_text())["exit_code"] == 4, printed[-2000:]
    progress = json.loads((out / "test_progress.json").read_text())
    kept = {p[0] for p in progress["predictions"]}
    assert len(kept) == 3 and sum(forwarded) == 8 + 2 * 3, forwarded  # the validation's 8 clips, a test batch
    assert progress["test"]["checkpoint"] == os.path.realpath(out / "ckpt_epoch_1.pth")
    assert progress["test"]["views"] == [2, 1] and progress["test"]["listed_videos"] == 8
    assert not (out / "summary.json").exists() and not (out / "predictions_test.csv").exists()
    shutil.copytree(out, other)
    rc, printed = run(out, "--resume", str(out / "ckpt_epoch_1.pth"))
    assert rc == 0, printed[-2000:]
    assert "3 videos of the stopped test kept from test_progress.json" in printed.splitlines()
    assert sum(forwarded) == 2 * 5 and not (out / "test_progress.json").exists()  # only the 5 others' 2 views
    (test,) = [d for d in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
               if d["kind"] == "eval" and d["split"] == "test"]
    assert sum(v for k, v in test.items() if k.startswith("samples_")) == 5, test  # the 3 kept were not decoded
    rc, printed = run(other, "--resume", str(other / "ckpt_epoch_1.pth"))
    assert rc == 0 and sum(forwarded) == 2 * 8, printed[-2000:]
    warned = [line for line in printed.splitlines() if str(other / "test_progress.json") in line]
    assert len(warned) == 1 and "written by another test (its checkpoint" in warned[0] and "ignored" in warned[0]
    for name in ("predictions_test.csv", "per_class_test.csv"):
        assert (out / name).read_text() == (other / name).read_text()
    rows = {int(r["index"]): r for r in csv.DictReader((out / "predictions_test.csv").open())}
    assert all(rows[p[0]]["top1_prob"] == f"{p[3][0]:.6f}" for p in progress["predictions"])
    summaries = [json.loads((d / "summary.json").read_text()) for d in (out, other)]
    assert summaries[0]["final_top1"] == summaries[1]["final_top1"]
    assert summaries[0]["final_num_videos"] == summaries[1]["final_num_videos"] == 8


def test_a_ctrl_c_during_a_single_process_final_test_keeps_its_videos_as_a_stop_signal_does(tmp_path, dataset,
                                                                                             capsys, monkeypatch):
    """A Ctrl-C during a training's final test on one GPU kept nothing (the rerun tested every video again) and its
    line spoke of a checkpoint at the next step, while --only_test kept the batches scored before it. The final
    test keeps them too, in test_progress.json, and still ends as a Ctrl-C, its line saying what was kept and how
    the summary gets written; the rerun forwards only the other videos, to an uninterrupted test's predictions."""
    import shutil

    from evautil.interrupt import interrupted_line

    run, forwarded = _final_test_runs(dataset, capsys, monkeypatch, signal_after_batch=1, sent=signal.SIGINT)
    out, other = tmp_path / "out", tmp_path / "other"
    rc, printed = run(out)
    assert rc is None, printed[-2000:]
    ckpt = out / "ckpt_epoch_1.pth"
    assert interrupted_line() == (
        f"interrupted: the final test stopped by Ctrl-C, the 3 of its 8 videos scored so far are kept in "
        f"{out / 'test_progress.json'}. The training is finished (last checkpoint {ckpt}); its summary.json is not "
        f"written yet. To test the rest and write the summary, run the command with --resume {ckpt} "
        "(TRAIN.AUTO_RESUME is False: the same command would start over)")
    progress = json.loads((out / "test_progress.json").read_text())
    assert sorted(p[0] for p in progress["predictions"]) == [0, 1, 2] and progress["signal"] == "SIGINT"
    assert sum(forwarded) == 8 + 2 * 3  # the validation's 8 clips, the test's first batch
    assert not (out / "summary.json").exists() and not (out / "predictions_test.csv").exists()
    shutil.copytree(out, other)
    os.remove(other / "test_progress.json")  # the uninterrupted baseline: the same checkpoint, every video tested
    rc, printed = run(out, "--resume", str(ckpt))
    assert rc == 0 and sum(forwarded) == 2 * 5, printed[-2000:]
    assert "3 videos of the stopped test kept from test_progress.json" in printed.splitlines()
    assert not (out / "test_progress.json").exists()
    rc, printed = run(other, "--resume", str(other / "ckpt_epoch_1.pth"))
    assert rc == 0 and sum(forwarded) == 2 * 8, printed[-2000:]
    for name in ("predictions_test.csv", "per_class_test.csv"):
        assert (out / name).read_text() == (other / name).read_text()
    assert json.loads((out / "summary.json").read_text())["final_num_videos"] == 8


def test_a_ctrl_c_after_the_final_test_names_the_command_that_writes_the_summary(tmp_path, dataset, capsys,
                                                                                 monkeypatch):
    """A Ctrl-C after the final test, before the summary, said the run stopped without a checkpoint after the last
    one and that SIGTERM would stop at the next step, though no step follows. Its line says the test's result is in
    metrics.jsonl and names the command that writes the summary, which then tests nothing again."""
    from engine.metrics import MetricLogger
    from evautil.interrupt import interrupted_line

    run, forwarded = _final_test_runs(dataset, capsys, monkeypatch, signal_after_batch=0)  # no signal
    summary = MetricLogger.summary

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(MetricLogger, "summary", interrupted)
    out = tmp_path / "out"
    rc, printed = run(out)
    ckpt = out / "ckpt_epoch_1.pth"
    assert rc is None and sum(forwarded) == 8 + 2 * 8, printed[-2000:]
    assert interrupted_line() == (
        f"interrupted: the run stopped after its final test, whose result metrics.jsonl holds. The training is "
        f"finished (last checkpoint {ckpt}); its summary.json is not written yet. To write the summary, run the "
        f"command with --resume {ckpt} (TRAIN.AUTO_RESUME is False: the same command would start over)")
    monkeypatch.setattr(MetricLogger, "summary", summary)
    rc, printed = run(out, "--resume", str(ckpt))
    assert rc == 0 and forwarded == [] and "its final test result at step 3 is in metrics.jsonl" in printed
    assert json.loads((out / "summary.json").read_text())["final_num_videos"] == 8


def test_a_stop_signal_in_the_final_tests_last_batch_lets_the_run_write_its_summary(tmp_path, dataset, capsys,
                                                                                    monkeypatch):
    """A SIGTERM in the final test's last batch ended the run with code 4, the test's results written but not the
    summary, so a requeued job ran again only to write it; an --only_test evaluation in the same case ended complete.
    The training's does too: the summary is seconds away, so the run writes it and exits 0 (nothing to resume,
    nothing forwarded again), its log saying the signal came after the last batch."""
    run, forwarded = _final_test_runs(dataset, capsys, monkeypatch, signal_after_batch=3)
    out = tmp_path / "out"
    rc, printed = run(out)
    assert rc == 0, printed[-2000:]
    assert json.loads((out / "exit_status.json").read_text()) == {"exit_code": 0, "meaning": "finished"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_num_videos"] == 8 and summary["final_split"] == "test"
    assert (out / "predictions_test.csv").is_file() and not (out / "test_progress.json").exists()
    assert sum(forwarded) == 8 + 2 * 8  # the validation's 8 clips, the test's 8 videos x 2 views: all once
    lines, log = printed.splitlines(), (out / "log_rank0.txt").read_text()
    after = ("stop signal SIGTERM received after the last batch of the final test: writing its results and the "
             "summary (nothing to resume)")
    during = f"stop signal SIGTERM received during the final test: {STOP_TEST}"  # said after that batch: still true
    assert lines.count(during) == 1 and lines.count(after) == 1 and lines.index(during) < lines.index(after)
    assert sum(line.endswith("] " + after) for line in log.splitlines()) == 1, log[-2000:]
    assert not any(line.startswith("stopped:") for line in lines), printed[-2000:]


def test_a_training_and_an_only_test_stopped_in_one_folder_keep_each_others_videos(tmp_path, dataset, capsys,
                                                                                    monkeypatch):
    """A training's stopped final test and an --only_test evaluation both kept their videos in test_progress.json:
    an --only_test run stopped in the training's OUTPUT replaced the training's file, and the training's rerun tested
    every video again. Each keeps its own file (the final test's test_progress.json, the evaluation's
    only_test_progress.json): either stopped beside the other leaves the other's file as it was, and each rerun
    forwards only the videos its own stop left."""
    run, forwarded = _final_test_runs(dataset, capsys, monkeypatch, signal_after_batch=1)
    out = tmp_path / "out"
    weights, evaluate = _weights_to_evaluate(dataset, tmp_path)
    training, evaluation = out / "test_progress.json", out / "only_test_progress.json"
    rc, printed = run(out)  # the final test stopped after its first batch
    assert rc == 4 and training.is_file() and not evaluation.exists(), printed[-2000:]
    trained = training.read_bytes()
    rc, printed = run(out, *evaluate, signal_after=1)  # an evaluation of other weights, stopped the same way
    assert rc == 4 and training.read_bytes() == trained, printed[-2000:]
    assert json.loads(evaluation.read_text())["test"]["checkpoint"] == os.path.realpath(weights)
    assert len(json.loads(evaluation.read_text())["predictions"]) == 3
    evaluated = evaluation.read_bytes()
    rc, printed = run(out, "--resume", str(out / "ckpt_epoch_1.pth"))  # the training's rerun: its 5 other videos
    assert rc == 0 and sum(forwarded) == 2 * 5, printed[-2000:]
    assert "3 videos of the stopped test kept from test_progress.json" in printed.splitlines()
    assert not training.exists() and evaluation.read_bytes() == evaluated
    assert json.loads((out / "summary.json").read_text())["final_num_videos"] == 8
    rc, printed = run(out, *evaluate)  # the evaluation's rerun: its 5 other videos, 1 view each
    assert rc == 0 and sum(forwarded) == 5, printed[-2000:]
    assert "3 videos of the stopped test kept from only_test_progress.json" in printed.splitlines()
    assert not evaluation.exists()
    assert json.loads((out / "summary.json").read_text())["mode"] == "evaluate only"


def _weights_to_evaluate(dataset: Path, tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    """A weights file of the demo's model with random weights (spread-out predictions, each video its own) and the
    flags that evaluate it (--only_test)."""
    from models import build_model

    weights = tmp_path / "model.pth"
    torch.manual_seed(3)
    torch.save({"model": build_model(load_config(DEMO, _opts(dataset, tmp_path / "out"))).state_dict()}, weights)
    return weights, ("--only_test", "--resume", str(weights))


def _the_same_command_scores_the_rest(run, forwarded: list[int], out: Path, evaluate: tuple[str, ...]) -> None:
    """After a stop that kept the first batch (3 of 8 videos): the same command forwards only the 5 others and
    removes the progress file."""
    rc, printed = run(out, *evaluate)
    assert rc == 0, printed[-2000:]
    assert "3 videos of the stopped test kept from only_test_progress.json" in printed.splitlines()
    assert sum(forwarded) == 5 and not (out / "only_test_progress.json").exists()


def _equal_to_an_uninterrupted_evaluation(run, forwarded: list[int], out: Path, other: Path,
                                          evaluate: tuple[str, ...]) -> list[dict]:
    """An uninterrupted evaluation in ``other`` forwards all 8 videos and writes the same prediction files and top-1
    as ``out``'s; returns both summaries."""
    rc, printed = run(other, *evaluate)
    assert rc == 0 and sum(forwarded) == 8, printed[-2000:]
    for name in ("predictions_test.csv", "per_class_test.csv"):
        assert (out / name).read_text() == (other / name).read_text()
    summaries = [json.loads((d / "summary.json").read_text()) for d in (out, other)]
    assert summaries[0]["final_top1"] == summaries[1]["final_top1"] and summaries[0]["final_num_videos"] == 8
    return summaries


def test_a_stopped_only_test_keeps_its_videos_and_the_same_command_forwards_only_the_rest(tmp_path, dataset, capsys,
                                                                                         monkeypatch):
    """A SIGTERM during an --only_test evaluation (hours for a large model's 4 x 3 views) ended it at once, keeping
    nothing: the same command evaluated every video again. It stops after the batch in flight, exit code 4 (said in
    exit_status.json), keeping that batch's videos in only_test_progress.json; the same command forwards only the
    others, removes the file and writes the predictions and accuracy of an uninterrupted evaluation."""
    run, forwarded = _final_test_runs(dataset, capsys, monkeypatch, signal_after_batch=1)
    out, other = tmp_path / "out", tmp_path / "other"
    weights, evaluate = _weights_to_evaluate(dataset, tmp_path)
    rc, printed = run(out, *evaluate)
    assert rc == 4, printed[-2000:]
    assert json.loads((out / "exit_status.json").read_text()) == {"exit_code": 4,
                                                                  "meaning": "stopped by a signal, resumable"}
    said = f"stop signal SIGTERM received during the evaluation of {weights}: {STOP_TEST}"
    assert printed.splitlines().count(said) == 1  # after the batch it came in, before the stop's own line
    assert printed.strip().splitlines()[-1] == (
        f"stopped: SIGTERM received during the evaluation of {weights}: stopped after the batch in flight, the 3 of "
        f"its 8 videos scored so far are kept in {out / 'only_test_progress.json'}; exit code 4. Its results and "
        "summary.json are not written yet. Run the same command again to score the rest and write them")
    progress = json.loads((out / "only_test_progress.json").read_text())
    assert sorted(p[0] for p in progress["predictions"]) == [0, 1, 2] and forwarded == [3]  # batch 1, 1 view each
    assert progress["test"]["checkpoint"] == os.path.realpath(weights) and progress["test"]["global_step"] is None
    assert not (out / "summary.json").exists() and not (out / "predictions_test.csv").exists()
    _the_same_command_scores_the_rest(run, forwarded, out, evaluate)
    assert not (out / "earlier_runs").exists()  # nothing set aside: the file was this evaluation's own
    summaries = _equal_to_an_uninterrupted_evaluation(run, forwarded, out, other, evaluate)
    assert summaries[0]["mode"] == "evaluate only"


def test_a_ctrl_c_during_a_single_process_only_test_keeps_its_videos_as_a_stop_signal_does(tmp_path, dataset, capsys,
                                                                                           monkeypatch):
    """A Ctrl-C during an --only_test evaluation on one GPU (how a user stops it at a workstation) kept nothing: the
    same command evaluated every video again. It keeps the batches scored before it in only_test_progress.json, as a
    stop signal does, and still ends as a Ctrl-C (KeyboardInterrupt), its line saying what was kept and where; the
    same command forwards only the others and writes the predictions of an uninterrupted evaluation."""
    from evautil.interrupt import interrupted_line

    run, forwarded = _final_test_runs(dataset, capsys, monkeypatch, signal_after_batch=1, sent=signal.SIGINT)
    out, other = tmp_path / "out", tmp_path / "other"
    weights, evaluate = _weights_to_evaluate(dataset, tmp_path)
    rc, printed = run(out, *evaluate)
    assert rc is None, printed[-2000:]
    line = (f"interrupted: the evaluation of {weights} stopped by Ctrl-C, the 3 of its 8 videos scored so far are kept "
            f"in {out / 'only_test_progress.json'}; its summary.json is not written yet: the same command scores the "
            "rest and writes its results")
    assert interrupted_line() == line
    progress = json.loads((out / "only_test_progress.json").read_text())
    assert sorted(p[0] for p in progress["predictions"]) == [0, 1, 2] and forwarded == [3]  # batch 1, 1 view each
    assert progress["signal"] == "SIGINT" and progress["test"]["checkpoint"] == os.path.realpath(weights)
    assert not (out / "summary.json").exists() and not (out / "predictions_test.csv").exists()
    _the_same_command_scores_the_rest(run, forwarded, out, evaluate)
    _equal_to_an_uninterrupted_evaluation(run, forwarded, out, other, evaluate)


def test_a_stop_signal_after_an_only_test_evaluations_last_batch_lets_it_write_its_results(tmp_path, dataset,
                                                                                          capsys, monkeypatch):
    """A SIGTERM after an --only_test evaluation's last batch (while its predictions were written) ended the run with
    code 4 and no summary: every video was evaluated again. The results are seconds away: the run says the signal,
    writes them and ends complete (exit code 0, nothing to resume)."""
    run, forwarded = _final_test_runs(dataset, capsys, monkeypatch, signal_after_batch=3)
    out, weights = tmp_path / "out", tmp_path / "model.pth"
    torch.save({"model": _constant_head_weights(load_config(DEMO, _opts(dataset, out)), 1, num_classes=4)}, weights)
    rc, printed = run(out, "--only_test", "--resume", str(weights))
    assert rc == 0 and sum(forwarded) == 8, printed[-2000:]
    assert (f"stop signal SIGTERM received after the last batch of the evaluation of {weights}: writing its results "
            "(nothing to resume)") in printed.splitlines()
    assert f"stop signal SIGTERM received during the evaluation of {weights}: {STOP_TEST}" in printed.splitlines()
    assert json.loads((out / "exit_status.json").read_text()) == {"exit_code": 0, "meaning": "finished"}
    assert json.loads((out / "summary.json").read_text())["final_num_videos"] == 8
    assert not (out / "only_test_progress.json").exists()


@pytest.mark.parametrize("batch, cutmix, warned", [("1", "1.0", True), ("2", "1.0", False), ("1", "0.0", False)])
def test_mixing_on_at_a_batch_of_one_is_said_to_blend_nothing(tmp_path, dataset, capsys, batch, cutmix, warned):
    """Partners come from the clip's own micro-batch: at TRAIN.BATCH_SIZE 1 CutMix/Mixup pasted each clip onto
    itself and the run said nothing of it."""
    rc = train.main(["--cfg", DEMO, "--dry-run", "--batch-size", batch, "--opts",
                     *_opts(dataset, tmp_path / "o", "AUG.CUTMIX", cutmix)])
    err = capsys.readouterr().err
    assert rc == 0
    line = ("warning: AUG.MIXUP 0.0 / AUG.CUTMIX 1.0 blend nothing at TRAIN.BATCH_SIZE 1: a clip is mixed with one of "
            "its own micro-batch, so every clip is its own partner and the run trains as without them; raise "
            "TRAIN.BATCH_SIZE, or set AUG.MIXUP 0 and AUG.CUTMIX 0 to say so\n")
    assert (line in err) == warned and ("blend nothing" in err) == warned
