"""Reusing an output folder with another config: keys that define the run are compared with the checkpoint's;
a difference stops the run before anything is written, unless TRAIN.ALLOW_CONFIG_CHANGE accepts it, and then the
new values really run (the LR schedule is the new one) and config.yaml records them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import train
from configs import load_config
from engine.resume_config import config_differences

from tests.video_fixtures import synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")


def test_only_keys_that_define_the_run_are_reported():
    base = load_config(DEMO)
    changed = load_config(DEMO, ["TRAIN.LR", "2e-3", "SEED", "7", "DATA.NUM_WORKERS", "5", "TEST.NUM_CLIP", "4",
                                 "OUTPUT", "elsewhere", "SAVE_MINUTES", "10", "MODEL.PRETRAINED", "w.pth"])
    assert config_differences(base.dump(), changed.dump()) == ["SEED 0 -> 7", "TRAIN.LR 0.0005 -> 0.002"]
    assert config_differences(base.dump(), base.dump()) == []
    # which decoder takes which video depends on the machine, not on the run: a resume may move to other routes
    routing = load_config(DEMO, ["DATA.NVDEC_CODECS", "['h264']", "DATA.NVDEC_MAX_BIT_DEPTH", "10",
                                 "DATA.NVDEC_THREADS", "3", "DATA.NVDEC_AFFINE", "True", "DATA.CPU_ROUTE_MAX_SHARE",
                                 "0.5", "DATA.DECODE_DEVICE", "cpu", "DATA.CPU_DECODER", "pyav"])
    assert config_differences(base.dump(), routing.dump()) == []
    # a key the saved config does not know (added by a code update) is not a difference
    saved = yaml.safe_load(base.dump())
    del saved["SAVE_MINUTES"]
    assert config_differences(yaml.safe_dump(saved), changed.dump()) == ["SEED 0 -> 7", "TRAIN.LR 0.0005 -> 0.002"]


def test_another_spelling_of_the_same_data_paths_is_no_change(tmp_path, monkeypatch):
    """A requeued command that spells DATA.ROOT with a trailing /, a list by a relative path or through a symbolic
    link reads the same files: it was refused as a run with another config. Another folder still differs."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text("a.mp4 0\n")
    (tmp_path / "link").symlink_to(data)
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    saved = load_config(DEMO, ["DATA.ROOT", str(data), "DATA.TRAIN_FILE", str(data / "train.txt")]).dump()
    for root, train_file in ((f"{data}/", "data/train.txt"), ("link", "./link//train.txt"), ("data", "link/train.txt")):
        now = load_config(DEMO, ["DATA.ROOT", root, "DATA.TRAIN_FILE", train_file]).dump()
        assert config_differences(saved, now) == [], (root, train_file)
    moved = load_config(DEMO, ["DATA.ROOT", "other", "DATA.TRAIN_FILE", str(data / "train.txt")]).dump()
    assert config_differences(saved, moved) == [f"DATA.ROOT {str(data)!r} -> 'other'"]


def test_an_output_of_another_config_names_the_way_to_start_over_in_it(tmp_path):
    """OUTPUT holds a checkpoint of another MODEL.ARCH and TRAIN.AUTO_RESUME is on: the refusal named only another
    OUTPUT as the way to a new run; TRAIN.AUTO_RESUME False starts over in this one, the earlier run set aside."""
    from configs import ConfigError
    from engine.checkpointing import starts_fresh
    from engine.resume_config import check_resume_config

    out = str(tmp_path / "out")
    ckpt = tmp_path / "out" / "ckpt_epoch_2.pth"
    saved = load_config(DEMO, ["MODEL.ARCH", "eva-tiny/16", "OUTPUT", out]).dump()
    state = {"model": {}, "optimizer": {}, "scheduler": {}, "epoch": 1, "global_step": 8, "epoch_complete": True,
             "config": saved}
    cfg = load_config(DEMO, ["OUTPUT", out, "TRAIN.AUTO_RESUME", "True"])
    with pytest.raises(ConfigError) as refused:
        check_resume_config(cfg, resumed=(str(ckpt), state))
    assert str(refused.value).endswith(
        f"to start a new run, choose another OUTPUT, or start over in this one with --opts TRAIN.AUTO_RESUME False "
        f"(the earlier run's files move to {out}/earlier_runs)")
    assert "MODEL.ARCH 'eva-tiny/16' -> 'eva-tiny/8'" in str(refused.value)
    fresh = load_config(DEMO, ["OUTPUT", out, "TRAIN.AUTO_RESUME", "False"])  # what that advice runs
    assert check_resume_config(fresh) == "" and starts_fresh(out, "", fresh.TRAIN.AUTO_RESUME)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synthetic_dataset(tmp_path_factory, "synth_resume", 3, 1, num_frames=12, size=(48, 32))


def _opts(data: Path, out: Path, *extra: str) -> list[str]:
    # 12 clips, batch 4: 3 optimizer steps per epoch; a 3-step warmup from 1e-5, then the cosine from TRAIN.LR
    return ["DATA.ROOT", str(data), "DATA.TRAIN_FILE", str(data / "train.txt"), "DATA.VAL_FILE",
            str(data / "val.txt"), "DATA.LABEL_LIST", str(data / "labels.csv"), "DATA.INPUT_SIZE", "32",
            "DATA.NUM_FRAMES", "4", "DATA.TUBELET_SIZE", "2", "DATA.NUM_THREADS", "1", "DATA.NUM_WORKERS", "1",
            "DATA.INDEX_WORKERS", "1", "TRAIN.BATCH_SIZE", "4", "TRAIN.WARMUP_EPOCHS", "1.0",
            "TRAIN.AUTO_RESUME", "True", "TEST.NUM_CLIP", "1", "TEST.NUM_CROP", "1", "TEST.BATCH_SIZE", "2",
            "TEST.FINAL_NUM_CLIP", "0", "PRINT_FREQ", "1", "LOG.PROGRESS_BAR", "False", "LOG.TENSORBOARD", "False",
            "OUTPUT", str(out), *extra]


def _lrs(out: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {d["step"]: d["lr"] for d in lines if d["kind"] == "train"}


def test_changed_config_stops_or_runs_on_purpose(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert train.main(["--cfg", DEMO, "--opts", *_opts(dataset, out, "TRAIN.EPOCHS", "1")]) == 0
    first = (out / "config.yaml").read_text()
    assert ": 1 epoch x 3 steps" in capsys.readouterr().out  # in the right number ("1 epochs" before)

    # a longer run at another LR and seed in the same folder: refused, listing what differs, nothing rewritten
    changed = _opts(dataset, out, "TRAIN.EPOCHS", "2", "TRAIN.LR", "2e-3", "SEED", "5")
    assert train.main(["--cfg", DEMO, "--dry-run", "--opts", *changed]) == 2  # the dry run finds it too
    assert "TRAIN.LR 0.0005 -> 0.002" in capsys.readouterr().err
    rc = train.main(["--cfg", DEMO, "--opts", *changed])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"OUTPUT = {out} holds checkpoint {out / 'ckpt_epoch_1.pth'} of a run with another config" in err
    assert "(saved -> now): SEED 0 -> 5; TRAIN.EPOCHS 1 -> 2; TRAIN.LR 0.0005 -> 0.002. " in err
    assert "TRAIN.ALLOW_CONFIG_CHANGE True" in err
    assert (out / "config.yaml").read_text() == first
    # the same checkpoint named by --resume from another OUTPUT: another OUTPUT would not help, dropping --resume does
    ckpt = out / "ckpt_epoch_1.pth"
    rc = train.main(["--cfg", DEMO, "--resume", str(ckpt), "--opts", *_opts(dataset, tmp_path / "new", "TRAIN.LR",
                                                                           "2e-3", "TRAIN.AUTO_RESUME", "False")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"--resume names checkpoint {ckpt} of a run with another config" in err
    assert f"to start a new run, drop --resume (--pretrained {ckpt} starts from its weights)" in err, err

    # accepted on purpose: the new schedule runs from the checkpoint and config.yaml says so
    rc = train.main(["--cfg", DEMO, "--opts", *changed, "TRAIN.ALLOW_CONFIG_CHANGE", "True"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    assert "TRAIN.LR 0.0005 -> 0.002" in captured.out and f"resumed from {out / 'ckpt_epoch_1.pth'}" in captured.out
    lrs = _lrs(out)
    assert sorted(lrs) == [1, 2, 3, 4, 5, 6]
    # step 4 is the first after the warmup: the new peak 2e-3 (the checkpoint's schedule peaks at 5e-4, demo.yaml's)
    assert lrs[4] == pytest.approx(2e-3, rel=1e-6)
    saved = load_config(None, [])
    saved.merge_from_other_cfg(saved.load_cfg((out / "config.yaml").read_text()))
    assert (saved.TRAIN.LR, saved.TRAIN.EPOCHS, saved.SEED) == (2e-3, 2, 5)


def test_changed_seed_mid_epoch_cannot_be_accepted(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert train.main(["--cfg", DEMO, "--opts", *_opts(dataset, out, "TRAIN.EPOCHS", "1", "SAVE_STEPS", "2")]) == 0
    (out / "ckpt_epoch_1.pth").unlink()  # as if the run had stopped after its mid-epoch checkpoint
    capsys.readouterr()
    rc = train.main(["--cfg", DEMO, "--opts", *_opts(dataset, out, "TRAIN.EPOCHS", "1", "SAVE_STEPS", "2", "SEED",
                                                     "3", "TRAIN.ALLOW_CONFIG_CHANGE", "True")])
    err = capsys.readouterr().err
    assert rc == 2 and f"checkpoint {out / 'ckpt_step_2.pth'} was saved mid-epoch" in err
    assert "SEED can only change from an epoch checkpoint" in err and "Traceback" not in err


def test_rerunning_a_stopped_evaluation_sets_nothing_more_aside(dataset, tmp_path, monkeypatch):
    """An evaluation stopped before its results had set the training's summary aside with a copy of config.yaml;
    each rerun of it then set aside a folder holding a copy of config.yaml alone (nothing else to move)."""
    from engine import runner

    out = tmp_path / "out"
    opts = _opts(dataset, out, "TRAIN.EPOCHS", "1")
    assert train.main(["--cfg", DEMO, "--opts", *opts]) == 0
    training_config = (out / "config.yaml").read_text()
    evaluate = runner.evaluate_and_log

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C during the test

    monkeypatch.setattr(runner, "evaluate_and_log", stopped)
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            train.main(["--cfg", DEMO, "--only_test", "--opts", *opts])
    monkeypatch.setattr(runner, "evaluate_and_log", evaluate)
    assert train.main(["--cfg", DEMO, "--only_test", "--opts", *opts]) == 0
    (aside,) = (out / "earlier_runs").iterdir()  # the training's results, with their config
    assert sorted(p.name for p in aside.iterdir()) == ["config.yaml", "summary.json"]
    assert aside.joinpath("config.yaml").read_text() == training_config
    assert json.loads(aside.joinpath("summary.json").read_text())["mode"] == "train"
    assert json.loads((out / "summary.json").read_text())["mode"] == "evaluate only"
    assert "ONLY_TEST: true" in (out / "config.yaml").read_text()


def test_a_finished_run_whose_summary_an_evaluation_replaced_says_where_the_trainings_went(dataset, tmp_path,
                                                                                             capsys):
    """--only_test on a finished run moves the training's summary.json into earlier_runs/; rerunning the training
    command said its summary was "kept as it is", which was now the evaluation's."""
    out = tmp_path / "out"
    opts = _opts(dataset, out, "TRAIN.EPOCHS", "1")
    assert train.main(["--cfg", DEMO, "--opts", *opts]) == 0
    assert train.main(["--cfg", DEMO, "--only_test", "--opts", *opts]) == 0
    capsys.readouterr()
    assert train.main(["--cfg", DEMO, "--opts", *opts]) == 0
    said = capsys.readouterr().out
    (moved,) = (out / "earlier_runs").glob("*/summary.json")
    assert json.loads(moved.read_text())["optimizer_steps"] == 3
    assert json.loads((out / "summary.json").read_text())["optimizer_steps"] == 0
    assert f"Its summary.json is that of a later evaluation (--only_test); the training's is {moved}" in said, said


def test_summaries_set_aside_name_the_checkpoints_where_they_went(dataset, tmp_path):
    """A summary moved into earlier_runs/ kept naming OUTPUT/ckpt_*.pth: after a fresh start there, the new run's
    files of the same name. Here the training's summary (set aside by an evaluation, while its checkpoint stayed)
    and the evaluation's, once a fresh start moves that checkpoint too."""
    out = tmp_path / "out"
    opts = _opts(dataset, out, "TRAIN.EPOCHS", "1")
    assert train.main(["--cfg", DEMO, "--opts", *opts]) == 0
    assert train.main(["--cfg", DEMO, "--only_test", "--opts", *opts]) == 0
    (training,) = (out / "earlier_runs").glob("*/summary.json")
    assert json.loads(training.read_text())["last_checkpoint"] == str(out / "ckpt_epoch_1.pth")  # it stayed
    assert train.main(["--cfg", DEMO, "--opts", *opts, "TRAIN.AUTO_RESUME", "False", "TRAIN.EPOCHS", "2"]) == 0
    (fresh,) = [d for d in (out / "earlier_runs").iterdir() if (d / "ckpt_epoch_1.pth").is_file()]
    assert json.loads(training.read_text())["last_checkpoint"] == str(fresh / "ckpt_epoch_1.pth")
    assert json.loads((fresh / "summary.json").read_text())["evaluated"] == str(fresh / "ckpt_epoch_1.pth")
    assert json.loads((out / "summary.json").read_text())["last_checkpoint"] == str(out / "ckpt_epoch_2.pth")


def test_a_model_changed_on_purpose_is_refused_before_the_lists_are_indexed(dataset, tmp_path, capsys):
    """A resume that accepts a changed model (TRAIN.ALLOW_CONFIG_CHANGE) cannot load the checkpoint's weights: it
    was refused only after the lists were indexed (hours, for a first build of a large list), with config.yaml
    and the run's log already rewritten for a run that never ran. The plan (--dry-run) did not see it."""
    out = tmp_path / "out"
    assert train.main(["--cfg", DEMO, "--opts", *_opts(dataset, out, "TRAIN.EPOCHS", "1")]) == 0
    def kept() -> dict[str, bytes]:  # every file but exit_status.json, which records each command's end
        return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "exit_status.json"}

    written = kept()
    capsys.readouterr()
    changed = _opts(dataset, out, "TRAIN.EPOCHS", "2", "DATA.TUBELET_SIZE", "1", "TRAIN.ALLOW_CONFIG_CHANGE", "True")
    for plan in (["--dry-run"], []):
        rc = train.main(["--cfg", DEMO, *plan, "--opts", *changed])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith(f"error: checkpoint {out / 'ckpt_epoch_1.pth'} was saved from a different "
                                          "model than this run's (pos_embed is 1x33x128 there, 1x65x128 here; "
                                          "patch_embed.proj.weight is 128x3x2x8x8 there, 128x3x1x8x8 here)"), err
    assert kept() == written

    # the same check finds an explicit --resume file of another model too
    rc = train.main(["--cfg", DEMO, "--resume", str(out / "ckpt_epoch_1.pth"), "--opts",
                     *_opts(dataset, tmp_path / "elsewhere", "DATA.TUBELET_SIZE", "1",
                            "TRAIN.ALLOW_CONFIG_CHANGE", "True")])
    assert rc == 2 and "was saved from a different model" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere" / "config.yaml").exists()


def test_parameter_groups_changed_on_purpose_name_the_keys_and_the_way_on(dataset, tmp_path, capsys):
    """Layer-wise decay switched on (or the patch embedding frozen) with TRAIN.ALLOW_CONFIG_CHANGE makes other
    parameter groups: the checkpoint's optimizer cannot continue, and the error named neither the keys nor what to
    do. What it offers works: a new run from the checkpoint's weights."""
    out = tmp_path / "out"
    assert train.main(["--cfg", DEMO, "--opts", *_opts(dataset, out, "TRAIN.EPOCHS", "1")]) == 0
    capsys.readouterr()
    ckpt = out / "ckpt_epoch_1.pth"
    for key, value in (("TRAIN.LAYER_WISE_DECAY", "0.75"), ("MODEL.STOP_GRAD_CONV1", "True")):
        rc = train.main(["--cfg", DEMO, "--opts", *_opts(dataset, out, "TRAIN.EPOCHS", "2", key, value,
                                                         "TRAIN.ALLOW_CONFIG_CHANGE", "True")])
        captured = capsys.readouterr()
        lines = [x for x in (captured.out + captured.err).splitlines() if x.startswith("error: ")]
        assert rc == 2 and len(lines) == 1, captured
        assert lines[-1].startswith(f"error: checkpoint {ckpt}: its optimizer state does not fit this run's "
                                    "parameter groups ("), lines
        assert lines[-1].endswith("), which TRAIN.LAYER_WISE_DECAY (1.0, or below it) and MODEL.STOP_GRAD_CONV1 "
                                  "decide: set them back to the checkpoint's, or start a new run from its weights "
                                  f"(--pretrained {ckpt}, no --resume, another OUTPUT)"), lines
    rc = train.main(["--cfg", DEMO, "--pretrained", str(ckpt), "--opts",
                     *_opts(dataset, tmp_path / "new", "TRAIN.EPOCHS", "1", "TRAIN.LAYER_WISE_DECAY", "0.75")])
    assert rc == 0 and (tmp_path / "new" / "ckpt_epoch_1.pth").is_file()


def test_a_start_reads_the_checkpoint_it_continues_or_scores_once_for_its_crcs(dataset, tmp_path, capsys,
                                                                               monkeypatch):
    """The checks before the lists are indexed and the load after them share one CRC-32 read of the file (each
    is a full read: 12 GB for an EVA-g training checkpoint); scoring OUTPUT's newest checkpoint read it twice."""
    import zipfile

    from evautil import zip_check

    out = tmp_path / "out"
    assert train.main(["--cfg", DEMO, "--opts", *_opts(dataset, out, "TRAIN.EPOCHS", "1")]) == 0
    newest = str(out / "ckpt_epoch_1.pth")
    reads: list[str] = []

    class Counted(zipfile.ZipFile):
        def __init__(self, file, *args, **kwargs):
            reads.append(str(file))
            super().__init__(file, *args, **kwargs)

    monkeypatch.setattr(zip_check.zipfile, "ZipFile", Counted)
    assert train.main(["--cfg", DEMO, "--only_test", "--opts", *_opts(dataset, out, "TRAIN.EPOCHS", "1")]) == 0
    assert reads.count(newest) == 1, reads
    reads.clear()
    more = _opts(dataset, out, "TRAIN.EPOCHS", "2", "TRAIN.ALLOW_CONFIG_CHANGE", "True")
    assert train.main(["--cfg", DEMO, "--opts", *more]) == 0
    assert f"resumed from {newest}" in capsys.readouterr().out
    assert reads.count(newest) == 1, reads
    # an explicit --resume file is parsed (memory-mapped) once by the checks before indexing, then loaded
    from engine import checkpoint_io

    parsed: list[str] = []
    load = checkpoint_io.load_checkpoint
    monkeypatch.setattr(checkpoint_io, "load_checkpoint", lambda path, **kw: parsed.append(path) or load(path, **kw))
    resumed = str(out / "ckpt_epoch_2.pth")
    elsewhere = _opts(dataset, tmp_path / "next", "TRAIN.EPOCHS", "3", "TRAIN.ALLOW_CONFIG_CHANGE", "True")
    assert train.main(["--cfg", DEMO, "--resume", resumed, "--opts", *elsewhere]) == 0
    assert parsed == [resumed, resumed], parsed


def _parses_of(path: str, monkeypatch) -> list[str]:
    """A list that gets "mmap" or "whole" for each torch.load of ``path`` from now on."""
    import torch

    loads: list[str] = []
    load = torch.load

    def counted(f, *args, **kwargs):
        if str(f) == path:
            loads.append("mmap" if kwargs.get("mmap") else "whole")
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    return loads


def test_a_resume_file_is_parsed_once_for_the_checks_and_once_to_resume(dataset, tmp_path, monkeypatch):
    """The config checks (before indexing, again as the run's log opens, and whether the earlier run's files move
    aside) each parsed the --resume file once more, memory-mapped (about 0.1 s each for a 380 MB checkpoint of
    1,440 tensors, more with more tensors), and so did resume_point with nothing in OUTPUT to compare it with. The
    checks share the one parse of the file's check, and the resume loads it once."""
    out = tmp_path / "out"
    assert train.main(["--cfg", DEMO, "--opts", *_opts(dataset, out, "TRAIN.EPOCHS", "1")]) == 0
    resumed = str(out / "ckpt_epoch_1.pth")
    loads = _parses_of(resumed, monkeypatch)
    elsewhere = _opts(dataset, tmp_path / "next", "TRAIN.EPOCHS", "2", "TRAIN.ALLOW_CONFIG_CHANGE", "True")
    assert train.main(["--cfg", DEMO, "--dry-run", "--resume", resumed, "--opts", *elsewhere]) == 0
    assert loads == ["mmap"], loads
    loads.clear()
    assert train.main(["--cfg", DEMO, "--resume", resumed, "--opts", *elsewhere]) == 0
    assert loads == ["mmap", "whole"], loads
    assert json.loads((tmp_path / "next" / "summary.json").read_text())["optimizer_steps"] == 6


def test_an_automatic_resume_parses_its_checkpoint_once_for_the_checks(dataset, tmp_path, monkeypatch):
    """With TRAIN.AUTO_RESUME and no --resume, OUTPUT's newest checkpoint was parsed six times, memory-mapped, before
    the load that resumes it: for its order among the checkpoints and its config (before indexing and again as the
    run's log opens), and for its order and its model check. The checks share one parse, which also orders it; the
    resume finds the checkpoints' orders known (the Checkpointers of a folder share them) and loads the newest
    whole."""
    out = tmp_path / "out"
    assert train.main(["--cfg", DEMO, "--opts", *_opts(dataset, out, "TRAIN.EPOCHS", "1")]) == 0
    newest = str(out / "ckpt_epoch_1.pth")
    loads = _parses_of(newest, monkeypatch)
    more = _opts(dataset, out, "TRAIN.EPOCHS", "2", "TRAIN.ALLOW_CONFIG_CHANGE", "True")
    assert train.main(["--cfg", DEMO, "--dry-run", "--opts", *more]) == 0
    assert loads == ["mmap"], loads
    loads.clear()
    assert train.main(["--cfg", DEMO, "--opts", *more]) == 0
    # (the checkpoint of epoch 2 then rotates the checkpoints without parsing this one again: its order is known)
    assert loads == ["mmap", "whole"], loads
    summary = json.loads((out / "summary.json").read_text())
    assert summary["optimizer_steps"] == 6 and summary["resumed_from"] == newest, summary


def test_a_fresh_start_parses_its_pretrained_weights_once_for_the_checks(dataset, tmp_path, monkeypatch, capsys):
    """A training run starting from step 0 with MODEL.PRETRAINED parsed that file twice, memory-mapped, before the
    load that reads it whole (its dry run twice too): for the file check, then for its names and shapes against the
    model. (Several GB for EVA-1B: a parse costs per tensor.) The file check's parse serves both."""
    import torch

    first = tmp_path / "first"
    assert train.main(["--cfg", DEMO, "--opts", *_opts(dataset, first, "TRAIN.EPOCHS", "1")]) == 0
    pretrained = str(tmp_path / "pretrained.pth")
    torch.save(torch.load(first / "ckpt_epoch_1.pth", weights_only=True)["model"], pretrained)
    loads = _parses_of(pretrained, monkeypatch)
    out = tmp_path / "out"
    opts = _opts(dataset, out, "TRAIN.EPOCHS", "1", "MODEL.PRETRAINED", pretrained)
    assert train.main(["--cfg", DEMO, "--dry-run", "--opts", *opts]) == 0
    assert loads == ["mmap"], loads
    loads.clear()
    capsys.readouterr()
    assert train.main(["--cfg", DEMO, "--opts", *opts]) == 0
    assert loads == ["mmap", "whole"], loads
    assert f"starting from MODEL.PRETRAINED = {pretrained}" in (out / "log_rank0.txt").read_text()
    assert json.loads((out / "summary.json").read_text())["optimizer_steps"] == 3


def test_an_evaluation_parses_the_checkpoint_it_scores_once_for_the_checks(dataset, tmp_path, monkeypatch, capsys):
    """--only_test parsed the checkpoint it scores seven times, memory-mapped, before the load that reads it whole
    (its dry run seven times too): to order OUTPUT's checkpoints (for the file check, the weights check, the model
    check, the plan and the run's choice of weights), for its head's class count and for its names and shapes
    against the model; a --resume file twice. (Several GB for EVA-1B: a parse costs per tensor.) The checks share
    one parse and the load reads the file whole."""
    out = tmp_path / "out"
    opts = _opts(dataset, out, "TRAIN.EPOCHS", "1")
    assert train.main(["--cfg", DEMO, "--opts", *opts]) == 0
    newest, damaged = str(out / "ckpt_epoch_1.pth"), out / "ckpt_step_99.pth"
    damaged.write_bytes(b"PK\x03\x04 cut short")  # a later one that does not load: passed over, and said so
    loads = _parses_of(newest, monkeypatch)
    capsys.readouterr()
    assert train.main(["--cfg", DEMO, "--only_test", "--dry-run", "--opts", *opts]) == 0
    assert loads == ["mmap"], loads
    assert re.search(rf"^ *evaluates\s*: {re.escape(newest)}$", capsys.readouterr().out, re.M)
    loads.clear()
    assert train.main(["--cfg", DEMO, "--only_test", "--opts", *opts]) == 0
    assert loads == ["mmap", "whole"], loads
    assert json.loads((out / "summary.json").read_text())["evaluated"] == newest
    log = (out / "log_rank0.txt").read_text()
    assert f"checkpoint {damaged} is damaged: cut short" in log and "trying the previous checkpoint" in log, log
    # a --resume file to evaluate: the same
    loads.clear()
    assert train.main(["--cfg", DEMO, "--only_test", "--dry-run", "--resume", newest, "--opts", *opts]) == 0
    assert loads == ["mmap"], loads
    loads.clear()
    assert train.main(["--cfg", DEMO, "--only_test", "--resume", newest, "--opts", *opts]) == 0
    assert loads == ["mmap", "whole"], loads
    assert json.loads((out / "summary.json").read_text())["evaluated"] == newest


def test_a_repeated_resume_command_parses_the_checkpoint_it_goes_on_from_once_for_the_checks(dataset, tmp_path,
                                                                                              monkeypatch):
    """A requeued ``--resume SRC`` command goes on from OUTPUT's newest checkpoint (preflight.resume_point), which
    finding it parsed, memory-mapped, for its order and origin; the file checks then parsed it once more. They take
    the state that finding it read (a parse costs per tensor: thousands for EVA-1B)."""
    src = str(tmp_path / "src" / "ckpt_epoch_1.pth")
    assert train.main(["--cfg", DEMO, "--opts", *_opts(dataset, tmp_path / "src", "TRAIN.EPOCHS", "1")]) == 0
    out = tmp_path / "out"
    first = _opts(dataset, out, "TRAIN.EPOCHS", "2", "TRAIN.ALLOW_CONFIG_CHANGE", "True")
    assert train.main(["--cfg", DEMO, "--resume", src, "--opts", *first]) == 0  # an attempt, then the same command
    newest = str(out / "ckpt_epoch_2.pth")
    loads = _parses_of(newest, monkeypatch)
    more = _opts(dataset, out, "TRAIN.EPOCHS", "3", "TRAIN.ALLOW_CONFIG_CHANGE", "True")
    assert train.main(["--cfg", DEMO, "--dry-run", "--resume", src, "--opts", *more]) == 0
    assert loads == ["mmap"], loads
    loads.clear()
    assert train.main(["--cfg", DEMO, "--resume", src, "--opts", *more]) == 0
    assert loads == ["mmap", "whole"], loads
    summary = json.loads((out / "summary.json").read_text())
    assert summary["optimizer_steps"] == 9 and summary["resumed_from"] == newest, summary


def test_a_resume_start_parses_outputs_best_pth_once(dataset, tmp_path, monkeypatch):
    """A --resume of one of OUTPUT's checkpoints parsed OUTPUT's best.pth twice, memory-mapped (EVA-g's: several GB,
    thousands of tensors): for its step, to set it aside when it came after the resumed checkpoint, then in the
    trainer for the score to beat (Checkpointer.best_after). One parse serves both, while the file is unchanged: a
    repeated command, after the file was written again, parses it anew and finds what it holds now."""
    import torch

    out = tmp_path / "out"
    assert train.main(["--cfg", DEMO, "--opts", *_opts(dataset, out, "TRAIN.EPOCHS", "1")]) == 0
    best = str(out / "best.pth")
    assert torch.load(best, weights_only=True)["global_step"] == 3  # as late as the resumed checkpoint: it stays
    loads = _parses_of(best, monkeypatch)
    resumed = str(out / "ckpt_epoch_1.pth")
    more = _opts(dataset, out, "TRAIN.EPOCHS", "2", "TRAIN.ALLOW_CONFIG_CHANGE", "True")
    assert train.main(["--cfg", DEMO, "--resume", resumed, "--opts", *more]) == 0
    assert loads == ["mmap"], loads
    assert not (out / "earlier_runs").exists()
    # best.pth written again (here: saved after epoch 2's checkpoint, by an attempt stopped before its next
    # checkpoint), then the same command is requeued: it goes on from epoch 2, reads best.pth as it is now, not as
    # the first start read it, and keeps it as the score to beat, as TRAIN.AUTO_RESUME does (it was set aside as
    # superseded, as if the run went back to an older checkpoint)
    torch.save({**torch.load(best, weights_only=True), "global_step": 7, "top1": 100.0}, best)
    loads.clear()
    more = _opts(dataset, out, "TRAIN.EPOCHS", "3", "TRAIN.ALLOW_CONFIG_CHANGE", "True")
    assert train.main(["--cfg", DEMO, "--resume", resumed, "--opts", *more]) == 0
    assert loads == ["mmap"], loads
    assert not (out / "earlier_runs").exists()
    kept = torch.load(best, weights_only=True)
    assert (kept["top1"], kept["global_step"]) == (100.0, 7), (kept["top1"], kept["global_step"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["optimizer_steps"] == 9 and summary["resumed_from"] == str(out / "ckpt_epoch_2.pth"), summary
