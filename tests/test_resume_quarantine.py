"""Exact resume when a training video went bad during the run.

A video quarantined during a run stays in the epoch plan and is substituted; a resumed run's freshly built index
marks it bad from the start. Every checkpoint records the quarantined videos, and the resumed run plans them as the
interrupted one did: the same steps per epoch, permutation and substitutes. A video bad now that the checkpoint's
plan held without a record of its quarantine (it broke after the save) is planned and substituted too, as the
interrupted run would have done on reaching it, and named in one log line.

- the loader: a recorded quarantine is adopted (same plan and batches), an unrecorded one as well, and named;
- the engine: ``restore_data_plan`` says it once, and a checkpoint without the record loads as before;
- end to end (slow): a video corrupted after the epoch-1 checkpoint; a run killed after the epoch-2 checkpoint,
  mid-epoch 2, or right after the epoch-1 checkpoint (the video broke after it) resumes with the uninterrupted
  run's per-step losses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dali_pipelines.loader import build_loader
from engine.distributed import DistContext
from tests.video_fixtures import make_clip_dataset, small_cfg

# ------------------------------------------------------------------------------------------------ the loader


def _break(path: str) -> None:
    with open(path, "wb") as f:
        f.write(bytes(2000))


def _epoch(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(b["index"].clone(), b["video"].clone()) for b in loader]


@pytest.fixture
def clips(tmp_path):
    root = str(tmp_path)
    lst = make_clip_dataset(root, [24, 30, 26, 33, 28, 25, 29, 31])
    return small_cfg(root, lst)


def test_a_recorded_quarantine_is_planned_and_substituted_as_before(clips):
    first = build_loader(clips, "train")
    assert len(first) == 4
    victim = first.schedule.rows(1)[0]
    _break(first.index.entries[victim].path)
    _epoch(first)  # epoch 1 quarantines the victim and substitutes it
    assert first.stats["skipped_videos"] == 1 and victim in first.index.bad
    record, fingerprint = first.plan_state(), first.plan_fingerprint()
    rel = first.index.videos.rel_path(victim)
    assert (victim, rel) in record["quarantined"] and record["excluded"] == []
    second_epoch = _epoch(first)
    first.close()

    resumed = build_loader(clips, "train")  # a new index: the victim is bad from the start
    assert victim in resumed.index.bad and len(resumed) == 3  # what a resumed run planned before
    assert resumed.adopt_plan_state([record], rank=0) == ""
    assert len(resumed) == 4 and resumed.plan_fingerprint() == fingerprint
    resumed.set_epoch(1)
    got = _epoch(resumed)
    assert len(got) == len(second_epoch) == 4
    for (ri, rv), (gi, gv) in zip(second_epoch, got):
        assert torch.equal(ri, gi) and torch.equal(rv, gv)
    assert victim not in torch.cat([i for i, _ in got]).tolist()  # substituted, never delivered
    # recorded again by the resumed run's checkpoints, so that a second resume plans the same
    assert (victim, rel) in resumed.plan_state()["quarantined"]
    resumed.close()


def test_ranks_that_quarantined_different_videos_adopt_one_plan(clips):
    ranks = [build_loader(clips, "train", rank=r, world_size=2) for r in (0, 1)]
    fingerprint, steps = ranks[0].plan_fingerprint(), len(ranks[0])
    victim = ranks[1].schedule.rows(0)[0]  # in rank 1's share only: rank 0 never reads it
    _break(ranks[1].index.entries[victim].path)
    _epoch(ranks[1])
    _epoch(ranks[0])
    states = [loader.plan_state() for loader in ranks]
    assert states[0]["quarantined"] == [] and [v[0] for v in states[1]["quarantined"]] == [victim]
    assert "excluded" in states[0] and "excluded" not in states[1]  # rank 0 records the plan's left-out videos
    for loader in ranks:
        loader.close()
    resumed = [build_loader(clips, "train", rank=r, world_size=2) for r in (0, 1)]
    assert all(victim in loader.index.bad and len(loader) < steps for loader in resumed)
    assert [loader.adopt_plan_state(states, rank=r) for r, loader in enumerate(resumed)] == ["", ""]
    assert [loader.plan_fingerprint() for loader in resumed] == [fingerprint] * 2
    assert [len(loader) for loader in resumed] == [steps] * 2
    for loader in resumed:
        loader.close()


def test_a_video_that_broke_after_the_save_is_planned_and_substituted_and_named(clips):
    first = build_loader(clips, "train")
    record, fingerprint = first.plan_state(), first.plan_fingerprint()  # saved before anything broke
    victim = first.schedule.rows(2)[1]
    first.close()
    _break(first.index.entries[victim].path)
    resumed = build_loader(clips, "train")
    note = resumed.adopt_plan_state([record], rank=0)
    rel = resumed.index.videos.rel_path(victim)
    assert note.startswith("1 training video(s) of that run's epoch plan are bad in this run's index")
    assert rel in note and "planned and substituted" in note and "not continue exactly" not in note
    assert "\n" not in note
    # the interrupted run's plan, as it would have gone on: the video is substituted where it comes up
    assert victim not in resumed.schedule.excluded and len(resumed) == 4
    assert resumed.plan_fingerprint() == fingerprint
    resumed.close()


def test_a_record_of_other_list_rows_is_warned_about(clips):
    first = build_loader(clips, "train")
    record = first.plan_state()
    first.close()
    record["quarantined"] = [(3, "videos/renamed.webm")]  # the list was edited since
    resumed = build_loader(clips, "train")
    note = resumed.adopt_plan_state([record], rank=0)
    assert "1 video(s) it names are no longer at their rows of the list" in note and len(resumed) == 4
    resumed.close()


def test_restore_data_plan_warns_once_and_older_checkpoints_plan_from_the_index(clips):
    from engine.resume_point import ResumePoint, restore_data_plan

    first = build_loader(clips, "train")
    record = first.plan_state()
    victim = first.schedule.rows(0)[0]
    first.close()
    _break(first.index.entries[victim].path)
    warnings: list[str] = []
    old = build_loader(clips, "train")
    restore_data_plan(old, ResumePoint("ckpt_epoch_1.pth", {"global_step": 4}), DistContext(), warnings.append)
    assert warnings == [] and len(old) == 3  # no record: the index's plan, silently, as before
    old.close()
    new = build_loader(clips, "train")
    restore_data_plan(new, ResumePoint("ckpt_epoch_1.pth", {"data_plan": [record]}), DistContext(), warnings.append)
    assert len(warnings) == 1 and warnings[0].startswith("checkpoint ckpt_epoch_1.pth: 1 training video(s)")
    assert "planned and substituted" in warnings[0] and len(new) == 4
    new.close()


# ------------------------------------------------------------------------------------------------ end to end

# Corrupts a training video right after the epoch-1 checkpoint (global step 4) is written, and SIGKILLs the run
# right after the checkpoint of step KILL_AFTER_SAVE; installed into the e2e wrapper before train is imported.
BREAK_AFTER_EPOCH_1 = r'''
import engine.train_loop as _tl
_orig_save = _tl.Trainer.save
def _save(self, epoch_complete):
    path = _orig_save(self, epoch_complete)
    if epoch_complete and self.state.global_step == 4 and os.environ.get("VICTIM"):
        with open(os.environ["VICTIM"], "r+b") as f:
            f.seek(200)
            f.write(bytes(range(256)) * 8)
    if self.state.global_step == int(os.environ.get("KILL_AFTER_SAVE", "0")):
        os.kill(os.getpid(), signal.SIGKILL)
    return path
_tl.Trainer.save = _save
'''
VICTIM = "videos/growing/growing_1.webm"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from tests.video_fixtures import synthetic_dataset

    return synthetic_dataset(tmp_path_factory, "synth", 4, 2, num_frames=16, size=(64, 48))


def _e2e():
    import tests.test_engine_e2e as e2e

    return e2e


def _opts(data: Path, out: Path) -> list[str]:
    e2e = _e2e()
    # 16 clips, B 2 x ACC 2: 4 steps per epoch, 3 epochs; checkpoints every epoch and every 2 steps
    return e2e._opts(data, out, **{**e2e.RESUME_OPTS, "SAVE_FREQ": 1})


def _run(tmp: Path, data: Path, out: Path, mode: str = "", arg: int = 0, **env: str):
    e2e = _e2e()
    assert e2e.WRAPPER.count("import train\n") == 1
    script = tmp / "wrapper.py"
    script.write_text(e2e.WRAPPER.replace("import train\n", BREAK_AFTER_EPOCH_1 + "import train\n"))
    full = dict(os.environ, REPO=str(e2e.ROOT), E2E_MODE=mode, E2E_ARG=str(arg), OMP_NUM_THREADS="1",
                TMPDIR=e2e._private_tmp(tmp), **env)
    cmd = [sys.executable, str(script), "--cfg", str(e2e.ROOT / "configs" / "demo.yaml"), "--opts", *_opts(data, out)]
    return subprocess.run(cmd, cwd=e2e.ROOT, env=full, capture_output=True, text=True, timeout=300)


def _data_copy(dataset: Path, tmp: Path) -> Path:
    data = tmp / "data"  # its own copy: the run corrupts one of its videos
    shutil.copytree(dataset, data)
    return data


@pytest.fixture(scope="module")
def broken_reference(dataset, tmp_path_factory):
    """The uninterrupted run: the video breaks after the epoch-1 checkpoint and is quarantined during epoch 2."""
    tmp = tmp_path_factory.mktemp("broken_ref")
    data, out = _data_copy(dataset, tmp), tmp / "out"
    r = _run(tmp, data, out, VICTIM=str(data / VICTIM))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("mode,arg,kill_after_save,resumes_from", [
    ("", 0, 8, "ckpt_epoch_2.pth"),  # killed right after the epoch-2 checkpoint
    ("kill_after_step", 7, 0, "ckpt_step_6.pth"),  # killed mid-epoch 2, after the quarantine
    ("", 0, 4, "ckpt_epoch_1.pth"),  # killed right after the epoch-1 checkpoint: the video broke after it
])
def test_resume_after_a_runtime_quarantine_is_exact(broken_reference, dataset, tmp_path, mode, arg,
                                                    kill_after_save, resumes_from):
    e2e = _e2e()
    ref_out, ref = broken_reference
    assert "quarantining" in ref.stdout and _summary(ref_out)["train_substituted"] == 2  # epochs 2 and 3
    log = (ref_out / "log_rank0.txt").read_text()
    assert log.index("quarantining") < log.index("saved checkpoint " + str(ref_out / "ckpt_step_6.pth"))
    data, out = _data_copy(dataset, tmp_path), tmp_path / "out"
    killed = _run(tmp_path, data, out, mode, arg, VICTIM=str(data / VICTIM), KILL_AFTER_SAVE=str(kill_after_save))
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    resumed = _run(tmp_path, data, out)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {out / resumes_from}" in resumed.stdout
    ref_losses, got = e2e._losses(ref_out), e2e._losses(out)
    assert sorted(got) == sorted(ref_losses) == list(range(1, 13))
    for step in range(1, 13):
        assert got[step] == pytest.approx(ref_losses[step], rel=1e-6), (step, got[step], ref_losses[step])
    assert _summary(out)["optimizer_steps"] == _summary(ref_out)["optimizer_steps"] == 12
    assert "bad video" in resumed.stdout  # the new index does mark it bad from the start
    assert "3 epochs x 4 steps" in resumed.stdout, [x for x in resumed.stdout.splitlines() if "training on" in x]
    assert "another data layout" not in resumed.stdout and "not continue exactly" not in resumed.stdout
    named = [x for x in resumed.stdout.splitlines() if "planned and substituted" in x]
    if resumes_from == "ckpt_epoch_1.pth":  # no checkpoint recorded its quarantine: named once
        assert len(named) == 1 and VICTIM in named[0], resumed.stdout[-3000:]
        assert f"checkpoint {out / 'ckpt_epoch_1.pth'}: 1 training video(s)" in named[0]
    else:
        assert named == []


# ------------------------------------------------------------------------------------ lists that overlap


class _Uniform(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 3) + 0.0 * x.flatten(1)[:, :1]


def test_a_video_training_quarantined_is_left_out_of_the_evaluation_not_decoded_again(clips, tmp_path):
    """A validation list naming training videos (here by another path to the same files) is warned about once, with
    a count and examples; a video training found broken was decoded again by the evaluation (failing again, or
    waiting out DATA.VIDEO_TIMEOUT_S again): it is left out, named as quarantined earlier in this run."""
    from engine.evaluate import evaluate_and_log
    from engine.metrics import MetricLogger
    from engine.runner import Run, check_lists_overlap

    train_lines = open(clips.DATA.TRAIN_FILE).read().splitlines()
    val = tmp_path / "val.txt"
    val.write_text("".join(f"./{line}\n" for line in train_lines[2:5]))  # rows 2-4, each by another path
    clips.DATA.VAL_FILE = str(val)
    train, test = build_loader(clips, "train"), build_loader(clips, "val")
    metrics = MetricLogger(str(tmp_path / "run"), tensorboard=False, nvml=False, progress_bar=False)
    metrics.follow_logger("dali_pipelines")  # as a run does
    try:
        run = Run(ctx=DistContext(), metrics=metrics, model=_Uniform(), val_loader=test, train_loader=train)
        check_lists_overlap(run, clips)
        _break(train.index.entries[3].path)
        _epoch(train)  # quarantines it
        assert 3 in train.index.bad
        result = evaluate_and_log(_Uniform(), test, DistContext(), metrics, split="val", num_classes=3)
    finally:
        metrics.close()
        train.close()
        test.close()
    assert test.stats["skipped_videos"] == 0  # not decoded again
    assert (result["num_videos"], result["quarantined_earlier"]) == (2, 1)
    log = (tmp_path / "run" / "log_rank0.txt").read_text()
    assert (f"WARNING: DATA.TRAIN_FILE {clips.DATA.TRAIN_FILE} and DATA.VAL_FILE {val}: 3 files of the validation "
            "list are in the training list too, so the validation accuracy is measured partly on videos the model "
            f"trains on; e.g. ./{train_lines[2].rsplit(' ', 1)[0]} (training line 3, validation line 1); ") in log
    assert f"left out of {val} too (line 2), which lists the same file" in log
    assert "evaluated 2 of 3 listed videos (0 bad when the list was indexed, 1 quarantined earlier in this run, " \
           "0 failed while decoding)" in log
    with open(tmp_path / "run" / "predictions_val.csv") as f:
        row = [r for r in f if r.startswith("1,")][0]
    assert "error" in row and f"quarantined reading {clips.DATA.TRAIN_FILE} earlier in this run" in row
    assert "quarantined reading" in open(test.index.quarantine_path).read()
