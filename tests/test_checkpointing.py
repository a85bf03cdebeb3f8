"""Atomic writes, weights_only loading, rotation, fallback past damaged files, RNG round trip."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
import sys
import time
from typing import Callable

import numpy as np
import pytest
import torch

from engine.checkpoint_io import CheckpointError, load_checkpoint, save_atomic
from engine.checkpointing import Checkpointer
from engine.resume_state import capture_rng, restore_rng
from evautil.files import _temp_beside


def _state(step: int, epoch: int = 0, complete: bool = False) -> dict:
    return {"model": {"w": torch.full((3,), float(step))}, "optimizer": {"state": {}, "param_groups": []},
            "scheduler": {"t": step}, "epoch": epoch, "global_step": step, "epoch_complete": complete,
            "config": "SEED: 1\n", "rng": [capture_rng()], "loader": [{"epoch": epoch, "position": step}]}


def test_a_checkpoint_saved_under_a_link_goes_where_the_link_points(tmp_path):
    # best.pth linked to a store on another disk was replaced by a regular file in OUTPUT, the store left stale
    (tmp_path / "store").mkdir()
    stored, link = tmp_path / "store" / "best.pth", tmp_path / "best.pth"
    save_atomic(_state(1), str(stored))
    link.symlink_to(stored)
    save_atomic(_state(2), str(link))
    assert link.is_symlink() and load_checkpoint(str(stored))["global_step"] == 2


def test_save_is_atomic_when_the_write_dies(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt_step_2.pth")
    save_atomic(_state(2), path)
    before = open(path, "rb").read()

    def dying_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_atomic(_state(3), path)
    assert open(path, "rb").read() == before  # the old file is intact under its name
    assert os.listdir(tmp_path) == ["ckpt_step_2.pth"]  # no temporary left behind
    assert load_checkpoint(path)["global_step"] == 2


def _age(path, seconds: float = 120.0) -> None:
    """Last modified ``seconds`` ago: a temporary file untouched that long, held open by no process, is a killed
    write's (one written to in the last minute may be a live one's)."""
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def test_a_save_removes_the_temporary_files_of_killed_writes(tmp_path):
    killed = [".ckpt_step_4.pth.x81hq2.tmp", ".ckpt_epoch_1.pth.a0b1c2.tmp", ".best.pth.zz9kd1.tmp"]
    for name in killed + [".notes.txt.tmp", "ckpt_step_4.pth.tmp"]:  # the last two are not ours
        (tmp_path / name).write_bytes(b"PK\x03\x04 the start of a checkpoint")
        _age(tmp_path / name)
    Checkpointer(str(tmp_path)).save(_state(6))
    assert sorted(os.listdir(tmp_path)) == [".notes.txt.tmp", "ckpt_step_4.pth.tmp", "ckpt_step_6.pth"]


def test_a_save_removes_the_temporary_files_a_killed_write_left_beside_a_linked_checkpoint(tmp_path):
    """A write through a link puts its temporary file beside the file the link names: the clean-up of OUTPUT alone
    left a whole checkpoint's size there after each kill."""
    out, store = tmp_path / "out", tmp_path / "store"
    out.mkdir(), store.mkdir()
    for name in ("run7_best.pth", "run7_step_2.pth"):
        save_atomic(_state(2), str(store / name))
    (out / "best.pth").symlink_to(store / "run7_best.pth")
    (out / "ckpt_step_2.pth").symlink_to(store / "run7_step_2.pth")
    killed = []
    for link in ("best.pth", "ckpt_step_2.pth"):  # what a write killed mid-way leaves: the writes' own temporary file
        _, fd, tmp = _temp_beside(str(out / link))
        os.write(fd, b"PK\x03\x04 the start of a checkpoint")
        os.close(fd)
        _age(tmp)
        killed.append(os.path.basename(tmp))
    assert all(os.path.exists(store / name) for name in killed)
    others = ["notes.txt", ".run7_best.pth.old.x1y2z3ab.tmp", ".run8_best.pth.x1y2z3ab.tmp"]  # someone else's
    for name in others:
        (store / name).write_bytes(b"kept")
    Checkpointer(str(out)).save(_state(6))
    assert sorted(os.listdir(store)) == sorted(others + ["run7_best.pth", "run7_step_2.pth"])
    assert (out / "best.pth").is_symlink() and load_checkpoint(str(out / "best.pth"))["global_step"] == 2


def test_a_save_leaves_the_temporary_file_of_a_write_still_going_on(tmp_path):
    """Another run's checkpoint being written into a store both runs' links name (or a folder shared across hosts)
    has its temporary file there: a save here removed it mid-write, and that run's save failed. One a live process
    holds open stays, as does one written to in the last minute; one that none holds, untouched for longer, goes."""
    out, store = tmp_path / "out", tmp_path / "store"
    out.mkdir(), store.mkdir()
    save_atomic(_state(2), str(store / "shared_best.pth"))
    (out / "best.pth").symlink_to(store / "shared_best.pth")
    writing, fresh, killed = (store / name for name in (".shared_best.pth.w1r2t3.tmp", ".shared_best.pth.f4r5s6.tmp",
                                                         ".shared_best.pth.k7l8d9.tmp"))
    for path in (writing, fresh, killed):
        path.write_bytes(b"PK\x03\x04 the start of a checkpoint")
    _age(writing), _age(killed)
    writer = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'ab'); print('open', "
                               "flush=True); time.sleep(120)", str(writing)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "open\n"
        Checkpointer(str(out)).save(_state(6))
        assert sorted(os.listdir(store)) == sorted([writing.name, fresh.name, "shared_best.pth"])
    finally:
        writer.kill()
        writer.wait()
    Checkpointer(str(out)).save(_state(8))  # the writer is gone: its file is a killed write's now
    assert sorted(os.listdir(store)) == sorted([fresh.name, "shared_best.pth"])


def test_plain_types_load_with_weights_only(tmp_path):
    path = str(tmp_path / "c.pth")
    save_atomic(_state(5), path)
    obj = torch.load(path, weights_only=True)
    assert obj["global_step"] == 5 and torch.equal(obj["model"]["w"], torch.full((3,), 5.0))


def test_rotation_keeps_last_k_ordered_by_step(tmp_path):
    ck = Checkpointer(str(tmp_path), keep_last=2)
    for step in (4, 8):
        ck.save(_state(step))
    ck.save(_state(10, epoch=0, complete=True))
    ck.save_best({"model": {"w": torch.zeros(1)}, "top1": 50.0})
    ck.save(_state(14, epoch=1))
    names = sorted(os.listdir(tmp_path))
    # epoch index 0 is the first epoch: its file is numbered 1, as the console and metrics.jsonl number it
    assert names == ["best.pth", "ckpt_epoch_1.pth", "ckpt_step_14.pth"]
    assert [os.path.basename(p) for p in ck.candidates()] == ["ckpt_step_14.pth", "ckpt_epoch_1.pth"]


def test_a_listing_after_a_save_parses_only_the_new_file(tmp_path, monkeypatch):
    """Every listing (the rotation after each save, find_latest) parsed every checkpoint in the folder to order it:
    for a billion-parameter model, thousands of tensors per file at each save. One Checkpointer remembers each
    file's order while the file is unchanged (its inode, size and modification time)."""
    parses: list[str] = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **kw: parses.append(os.path.basename(f)) or load(f, *a, **kw))
    ck = Checkpointer(str(tmp_path), keep_last=2)
    ck.save(_state(4))
    assert parses == ["ckpt_step_4.pth"]
    parses.clear()
    ck.save(_state(8))
    assert parses == ["ckpt_step_8.pth"]
    parses.clear()
    ck.save(_state(12))  # rotates ckpt_step_4.pth away, ordered without parsing the two older files again
    assert parses == ["ckpt_step_12.pth"]
    assert sorted(os.listdir(tmp_path)) == ["ckpt_step_12.pth", "ckpt_step_8.pth"]
    parses.clear()
    assert [os.path.basename(p) for p in ck.candidates()] == ["ckpt_step_12.pth", "ckpt_step_8.pth"] and not parses
    # a file replaced under the same name is parsed again, and ordered by what it holds now
    save_atomic(_state(20), str(tmp_path / "ckpt_step_8.pth"))
    assert [os.path.basename(p) for p in ck.candidates()] == ["ckpt_step_8.pth", "ckpt_step_12.pth"]
    assert parses == ["ckpt_step_8.pth"]
    parses.clear()
    path, state = ck.find_latest()  # the load itself reads the file, once
    assert os.path.basename(path) == "ckpt_step_8.pth" and state["global_step"] == 20
    assert parses == ["ckpt_step_8.pth"]


def test_a_start_parses_best_pth_once_while_it_is_unchanged(tmp_path, monkeypatch):
    """A --resume start read OUTPUT's best.pth for its step (whether it came after the resumed checkpoint and moves
    aside), then the trainer read it again for the score to beat (best_after), memory-mapped: thousands of tensors
    for EVA-g. The Checkpointers of the folder remember both from one parse, while the file is unchanged."""
    parses: list[str] = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **kw: parses.append(os.path.basename(f)) or load(f, *a, **kw))
    writer = Checkpointer(str(tmp_path), keep_last=2)
    writer.save_best({"model": {"w": torch.ones(3)}, "epoch": 1, "global_step": 12, "top1": 61.5})
    assert Checkpointer(str(tmp_path), writer=False).best_step() == 12
    assert parses == ["best.pth"]
    writer.save(_state(10))  # a rotation (it lists the folder) in between forgets nothing of best.pth
    parses.clear()
    trainer_side = Checkpointer(str(tmp_path), writer=False)
    assert trainer_side.best_after(10) == {"top1": 61.5, "epoch": 1, "global_step": 12}
    assert trainer_side.best_after(12) is None and trainer_side.best_step() == 12
    assert parses == [], parses
    # written again since (another inode, size or time): parsed again, and what it holds now is told
    writer.save_best({"model": {"w": torch.ones(3)}, "epoch": 2, "global_step": 18, "top1": 70.0})
    assert trainer_side.best_after(12) == {"top1": 70.0, "epoch": 2, "global_step": 18}
    assert parses == ["best.pth"], parses
    # moved aside: nothing to parse, nothing after any step
    parses.clear()
    os.rename(tmp_path / "best.pth", tmp_path / "elsewhere.pth")
    assert trainer_side.best_step() is None and trainer_side.best_after(0) is None and parses == []
    # a best.pth that is not ours (no step or score) tells none
    torch.save({"w": torch.ones(2)}, tmp_path / "best.pth")
    assert trainer_side.best_step() is None and trainer_side.best_after(0) is None


def test_damaged_latest_is_named_and_previous_used(tmp_path):
    warnings = []
    ck = Checkpointer(str(tmp_path), keep_last=5, warn=warnings.append)
    ck.save(_state(4))
    ck.save(_state(8))
    damaged = tmp_path / "ckpt_step_12.pth"
    good = open(tmp_path / "ckpt_step_8.pth", "rb").read()
    damaged.write_bytes(good[: len(good) // 2])  # truncated, as by a crash of a non-atomic writer
    path, state = ck.find_latest()
    assert os.path.basename(path) == "ckpt_step_8.pth" and state["global_step"] == 8
    assert len(warnings) == 1 and "ckpt_step_12.pth" in warnings[0]
    # a file without the training keys is not resumable either
    torch.save({"model": {}}, tmp_path / "ckpt_step_20.pth")
    path, _ = ck.find_latest()
    assert os.path.basename(path) == "ckpt_step_8.pth"
    assert any("ckpt_step_20.pth" in w and "lacks" in w for w in warnings)


def test_a_damaged_newest_epoch_checkpoint_is_named_and_set_aside_not_passed_over_in_silence(tmp_path):
    """A cut-short ckpt_epoch_{e}.pth tells no step: it was ranked below every readable checkpoint, so the resume
    went back to an older one without a word (the steps between were lost unsaid) and the file stayed. It ranks
    right after the checkpoints of epochs 1 to e now; an older damaged one stays below the newest readable file."""
    ck = Checkpointer(str(tmp_path), keep_last=5)
    ck.save(_state(4, epoch=0))
    ck.save(_state(5, epoch=0, complete=True))  # ckpt_epoch_1.pth
    ck.save(_state(8, epoch=1))
    ck.save(_state(10, epoch=1, complete=True))  # ckpt_epoch_2.pth
    for name in ("ckpt_epoch_1.pth", "ckpt_epoch_2.pth"):
        whole = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(whole[: len(whole) // 2])
    warnings: list[str] = []
    path, state = Checkpointer(str(tmp_path), warn=warnings.append).find_latest()
    assert os.path.basename(path) == "ckpt_step_8.pth" and state["global_step"] == 8
    assert len(warnings) == 1 and warnings[0].startswith(f"checkpoint {tmp_path / 'ckpt_epoch_2.pth'} is damaged: ")
    assert f"moved the damaged file to {tmp_path / 'ckpt_epoch_2.pth.damaged'}" in warnings[0]
    assert sorted(os.listdir(tmp_path)) == ["ckpt_epoch_1.pth", "ckpt_epoch_2.pth.damaged", "ckpt_step_4.pth",
                                            "ckpt_step_8.pth"]


def test_no_usable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    ck = Checkpointer(str(tmp_path))
    assert ck.find_latest() is None  # an empty directory: nothing to resume
    (tmp_path / "ckpt_epoch_3.pth").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="ckpt_epoch_3.pth"):
        ck.find_latest()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "nope.pth"))


def test_rng_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    path = str(tmp_path / "rng.pth")
    save_atomic({"rng": capture_rng()}, path)
    expect = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    assert restore_rng(torch.load(path, weights_only=True)["rng"]) == ""  # a CPU process: nothing left out
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[0] == expect[0] and got[1] == expect[1] and torch.equal(got[2], expect[2])


def test_cuda_random_states_of_another_gpu_count_are_named_not_dropped_silently(monkeypatch):
    """The CUDA states are one per visible GPU: a resume that sees another number of GPUs skipped them without a
    word, and its GPU random draws no longer continued exactly."""
    state = capture_rng()
    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 8  # saved by a process that saw 8 GPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert restore_rng(state) == ("the CUDA random states were saved by a process that saw 8 GPUs and this one sees "
                                  "1 GPU: they are not restored, so random draws on the GPU (drop path) do not "
                                  "continue exactly")
    assert restored == []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert restore_rng(state) == "" and restored == [state["cuda"]]


def test_mid_epoch_checkpoint_of_another_world_size_restarts_the_epoch(tmp_path):
    """A mid-epoch loader position is per rank of the saving run's world size; another world size restarts the
    interrupted epoch (and puts the LR schedule at its start) instead of failing inside the loader."""
    from torch import nn

    from engine.distributed import DistContext
    from engine.metrics import MetricLogger
    from engine.train_epoch import TrainOptions
    from engine.train_loop import Trainer

    class Loader:  # the position part of a loader: what Trainer.state_dict saves
        batch_size = 4

        def state_dict(self):
            return {"epoch": 1, "position": 4, "world_size": 2}

    def trainer(out: str) -> Trainer:
        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        metrics = MetricLogger(out, tensorboard=False, progress_bar=False)
        return Trainer(model=model, optimizer=opt, scheduler=sched, criterion=nn.CrossEntropyLoss(),
                       train_loader=Loader(), val_loader=None, checkpointer=Checkpointer(out), metrics=metrics,
                       ctx=DistContext(world_size=1), opts=TrainOptions(epochs=3, steps_per_epoch=5))

    saver = trainer(str(tmp_path / "a"))
    saver.state.epoch, saver.state.global_step, saver.state.step_in_epoch = 1, 6, 2
    ckpt = saver.state_dict(epoch_complete=False)
    ckpt["world_size"], ckpt["loader"] = 2, [Loader().state_dict()] * 2  # as written by a 2-process run
    ckpt["layout"]["world_size"] = 2
    resumed = trainer(str(tmp_path / "b"))
    resumed.load_state_dict(ckpt, "ckpt_step_6.pth")
    st = resumed.state
    # epoch 2 from its first step; the step count goes on from 6 (monotonic log and checkpoint order) while the LR
    # schedule is put at this epoch's start, 1 x 5 steps: global_step - schedule_offset
    assert (st.epoch, st.step_in_epoch, st.global_step, st.schedule_offset) == (1, 0, 6, 1)
    assert resumed._loader_state is None  # the old position is not applied to this run's loader
    resumed.metrics.close()
    log = (tmp_path / "b" / "log_rank0.txt").read_text()
    assert ("saved mid-epoch with another data layout (world_size 2 -> 1): epoch 2 restarts from its first "
            "step") in log
    # the same world size keeps the exact position
    ckpt["world_size"] = ckpt["layout"]["world_size"] = 1
    same = trainer(str(tmp_path / "c"))
    same.load_state_dict(ckpt, "ckpt_step_6.pth")
    assert (same.state.step_in_epoch, same.state.global_step) == (2, 6) and same._loader_state["position"] == 4
    assert same.state.schedule_offset == 6 - (1 * 5 + 2) == -1  # the saver's own (made-up) offset, kept
    same.metrics.close()
    # the same world size with another number of steps per epoch (batch size or list length changed) restarts too
    ckpt["layout"]["steps_per_epoch"] = 8
    other = trainer(str(tmp_path / "d"))
    other.load_state_dict(ckpt, "ckpt_step_6.pth")
    assert (other.state.step_in_epoch, other.state.global_step, other.state.schedule_offset) == (0, 6, 1)
    assert other._loader_state is None
    other.metrics.close()
    # ... and so does another batch size with the same steps per epoch (e.g. B 8 x ACC 1 -> B 4 x ACC 2): the
    # position counts batches of the old size
    ckpt["layout"].update(steps_per_epoch=5, batch_size=8)
    smaller = trainer(str(tmp_path / "e"))
    smaller.load_state_dict(ckpt, "ckpt_step_6.pth")
    assert smaller.state.step_in_epoch == 0 and smaller._loader_state is None
    smaller.metrics.close()
    assert "another data layout (batch_size 8 -> 4): epoch 2" in (tmp_path / "e" / "log_rank0.txt").read_text()


class _RunsCode:
    def __reduce__(self):
        return (print, ("unpickled",))


def test_pickled_code_is_refused_without_torch_advice(tmp_path):
    from yacs.config import CfgNode

    path = tmp_path / "ckpt_epoch_0.pth"
    # beside the original code's yacs config: the global named is the one that runs code
    torch.save({**_state(4), "config": CfgNode({"SEED": 1}), "hook": _RunsCode()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(str(path))
    msg = str(err.value)
    assert msg.startswith(f"checkpoint {path} was refused: it holds pickled Python objects (builtins.print)")
    assert "\x1b" not in msg and "weights_only" not in msg and len(msg.splitlines()) == 1


def test_the_original_codes_checkpoint_is_named_as_such_not_as_code(tmp_path):
    from yacs.config import CfgNode

    path = tmp_path / "ckpt_epoch_0.pth"
    # the original's epoch_saving layout: its yacs config and a numpy max_accuracy are plain data, read as such by
    # the weights reader (--pretrained, --only_test): nothing in them runs code
    torch.save({"model": _state(4)["model"], "optimizer": {}, "lr_scheduler": {}, "max_accuracy": np.float64(80.0),
                "epoch": 3, "amp": {}, "config": CfgNode({"SEED": 1})}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(str(path))
    msg = str(err.value)  # (which numpy globals a file names depends on how it was pickled)
    assert msg.startswith(f"checkpoint {path} is another code's training checkpoint (it holds pickled numpy."), msg
    assert msg.endswith("yacs.config.CfgNode, as the original EVA code's do), not one of this project's runs"), msg


def test_damaged_file_reason_is_one_plain_line(tmp_path):
    path = tmp_path / "ckpt_step_3.pth"
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(str(path))
    msg = str(err.value)
    # what the file is, not the unpickler's complaint about its bytes ("UnpicklingError: Unsupported operand 103")
    assert msg == (f"checkpoint {path} is not a readable torch checkpoint: neither a zip archive nor a pickle: it "
                   "begins with the text 'garbage'")
    assert len(msg.splitlines()) == 1


class _DiskFillsUp:
    """A file whose device fills up after ``room`` bytes, as a full disk behaves (ENOSPC from write)."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_full_disk_is_one_line_and_loses_nothing(tmp_path, monkeypatch):
    ck = Checkpointer(str(tmp_path), keep_last=1)
    ck.save(_state(4))
    before = open(tmp_path / "ckpt_step_4.pth", "rb").read()
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: _DiskFillsUp(real_fdopen(fd, mode), room=300))
    with pytest.raises(CheckpointError) as err:
        ck.save(_state(8))
    msg = str(err.value)
    assert msg.startswith(f"no space left on the device writing checkpoint {tmp_path / 'ckpt_step_8.pth'}: ")
    assert " GB free there" in msg and "earlier checkpoints are intact" in msg and len(msg.splitlines()) == 1
    # the previous checkpoint survives (no rotation after a failed write) and no partial file is left
    assert os.listdir(tmp_path) == ["ckpt_step_4.pth"]
    assert open(tmp_path / "ckpt_step_4.pth", "rb").read() == before


class _WriteFails(_DiskFillsUp):
    """A file whose every write fails with ``code`` (a full disk, a file size limit, a folder made read-only)."""

    def __init__(self, f, code: int) -> None:
        super().__init__(f, room=0)
        self.code = code

    def write(self, data) -> int:
        raise OSError(self.code, os.strerror(self.code))


@pytest.mark.parametrize("code, start", [(errno.ENOSPC, "no space left on the device writing checkpoint "),
                                         (errno.EFBIG, "checkpoint "), (errno.EROFS, "cannot write checkpoint ")],
                         ids=["ENOSPC", "EFBIG", "EROFS"])
def test_a_failed_save_says_earlier_checkpoints_are_intact_only_when_there_are_some(tmp_path, monkeypatch, code,
                                                                                     start):
    """The first save of a run that failed said "earlier checkpoints are intact" and that the same command resumes
    from OUTPUT's last checkpoint, in an OUTPUT that held none: the rerun starts again."""
    ck = Checkpointer(str(tmp_path), keep_last=1)
    fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: _WriteFails(fdopen(fd, mode), code))
    with pytest.raises(CheckpointError) as err:
        ck.save(_state(4))
    msg = str(err.value)
    assert msg.startswith(start + str(tmp_path / "ckpt_step_4.pth")) and len(msg.splitlines()) == 1, msg
    assert "intact" not in msg and "resumes from" not in msg, msg
    assert msg.endswith(" and run the same command (it starts again where this run started: no checkpoint of it "
                        "was kept)"), msg
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    ck.save(_state(4))
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: _WriteFails(fdopen(fd, mode), code))
    with pytest.raises(CheckpointError) as err:
        ck.save(_state(8))
    msg = str(err.value)
    assert "; earlier checkpoints are intact. " in msg and "it resumes from OUTPUT's last checkpoint" in msg, msg


# A save under a file size limit (ulimit -f), in a process of its own: the limit would hold for the tests after it.
_SIZE_LIMITED_SAVE = """
import resource, sys, torch
from engine.checkpointing import Checkpointer
from evautil.errors import CheckpointError
ck = Checkpointer(sys.argv[1], keep_last=1)
ck.save({"model": {"w": torch.zeros(10)}, "optimizer": {}, "scheduler": {}, "epoch": 0, "global_step": 4,
         "epoch_complete": False})
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
try:
    ck.save({"model": {"w": torch.zeros(1_000_000)}, "optimizer": {}, "scheduler": {}, "epoch": 0,
             "global_step": 8, "epoch_complete": False})
except CheckpointError as e:
    print(e)
    sys.exit(2)
"""


def test_a_file_size_limit_names_the_checkpoint_and_the_limit_and_loses_nothing(tmp_path):
    """A checkpoint larger than the file size limit (ulimit -f, or FAT's 4 GB) failed with a traceback ending in
    torch.s "unexpected pos ...", which named neither the file nor the limit."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", _SIZE_LIMITED_SAVE, str(tmp_path)], cwd=root, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    msg = r.stdout.strip()
    assert msg.startswith(f"checkpoint {tmp_path / 'ckpt_step_8.pth'} could not be written: the file reached ")
    assert "ulimit -f" in msg and "earlier checkpoints are intact" in msg and len(msg.splitlines()) == 1
    assert "run the same command" in msg
    assert os.listdir(tmp_path) == ["ckpt_step_4.pth"]  # the earlier one kept, no temporary file left
    assert load_checkpoint(str(tmp_path / "ckpt_step_4.pth"))["global_step"] == 4


def test_an_output_folder_made_read_only_mid_run_is_named_for_the_checkpoint(tmp_path, monkeypatch):
    """OUTPUT remounted read-only (or its permissions taken away) between two saves: the error named the hidden
    temporary file (".ckpt_step_8.pth.x1y2z3.tmp"), a name the user never sees in the folder."""
    import evautil.files

    ck = Checkpointer(str(tmp_path), keep_last=1)
    ck.save(_state(4))

    def read_only(prefix, suffix, dir):
        name = os.path.join(dir, f"{prefix}x1y2z3{suffix}")
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), name)

    monkeypatch.setattr(evautil.files.tempfile, "mkstemp", read_only)
    with pytest.raises(CheckpointError) as err:
        ck.save(_state(8))
    msg = str(err.value)
    assert msg.startswith(f"cannot write checkpoint {tmp_path / 'ckpt_step_8.pth'}: {os.path.realpath(tmp_path)} "
                          "refuses it (Read-only file system); ")
    assert "earlier checkpoints are intact" in msg and "x1y2z3" not in msg and len(msg.splitlines()) == 1
    assert os.listdir(tmp_path) == ["ckpt_step_4.pth"]


def test_a_killed_write_left_on_a_nearly_full_disk_does_not_make_every_later_save_fail(tmp_path, monkeypatch):
    """A write killed mid-way left its temporary file (a whole checkpoint's size on a big model); the disk then had
    room for one checkpoint more, not two. The clean-up came after the next write, which failed for want of the
    space the leftover took, so every resumed attempt stopped at its first save."""
    ck = Checkpointer(str(tmp_path), keep_last=1)
    ck.save(_state(4))
    size = os.path.getsize(tmp_path / "ckpt_step_4.pth")
    killed = tmp_path / ".ckpt_step_8.pth.k1ll3d.tmp"
    killed.write_bytes(b"PK\x03\x04" + bytes(size))
    _age(killed)  # the requeued attempt's first save comes minutes later
    capacity = 2 * size + size // 2  # the kept checkpoint and one more fit, not the leftover besides

    def on_disk() -> int:
        return sum(os.path.getsize(p) for p in tmp_path.iterdir())

    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: _DiskFillsUp(real_fdopen(fd, mode), room=capacity - on_disk()))
    ck.save(_state(8))
    assert sorted(os.listdir(tmp_path)) == ["ckpt_step_8.pth"]
    assert load_checkpoint(str(tmp_path / "ckpt_step_8.pth"))["global_step"] == 8


def test_an_output_folder_removed_mid_run_is_made_again_for_the_next_checkpoint_and_said(tmp_path):
    """OUTPUT deleted under a running job (a purge of a scratch file system): the next save made it again without
    a word, and the user learnt only later that the record before it was gone."""
    out = tmp_path / "runs" / "k400"
    warnings: list[str] = []
    ck = Checkpointer(str(out), keep_last=2, warn=warnings.append)
    ck.save(_state(4))
    assert warnings == []
    shutil.rmtree(tmp_path / "runs")
    ck.save(_state(8))
    assert len(warnings) == 1
    assert warnings[0].startswith(f"OUTPUT = {out} is gone (deleted, or purged from its file system) since this run "
                                  "began: made it again to save ckpt_step_8.pth; its earlier files ")
    assert os.listdir(out) == ["ckpt_step_8.pth"] and load_checkpoint(str(out / "ckpt_step_8.pth"))["global_step"] == 8


def _tiny_trainer(out: str, num_classes: int, ema: bool = False, print_freq: int = 10):
    from timm.utils import ModelEmaV3
    from torch import nn

    from engine.distributed import DistContext
    from engine.metrics import MetricLogger
    from engine.train_epoch import TrainOptions
    from engine.train_loop import Trainer

    model = nn.Sequential()
    model.add_module("head", nn.Linear(4, num_classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return Trainer(model=model, optimizer=opt, scheduler=sched, criterion=nn.CrossEntropyLoss(), train_loader=None,
                   val_loader=None, checkpointer=Checkpointer(out), ctx=DistContext(),
                   metrics=MetricLogger(out, print_freq=print_freq, tensorboard=False, progress_bar=False),
                   opts=TrainOptions(epochs=3, steps_per_epoch=5), ema=ModelEmaV3(model, decay=0.99) if ema else None)


def test_ema_turned_on_at_resume_starts_from_the_resumed_weights(tmp_path):
    """A checkpoint of a run without EMA, resumed with TRAIN.EMA on: the average starts from the checkpoint's
    weights (it was left at the model's initialisation, and every evaluation used it)."""
    out = str(tmp_path)
    old = _tiny_trainer(out, num_classes=4)
    with torch.no_grad():
        old.model.head.weight.fill_(0.25)
    old.state.epoch, old.state.global_step = 0, 5
    old.checkpointer.save(old.state_dict(epoch_complete=True))
    new = _tiny_trainer(out, num_classes=4, ema=True)
    assert not torch.equal(new.ema.module.head.weight, old.model.head.weight)
    assert new.resume("", auto=True)
    assert torch.equal(new.ema.module.head.weight, old.model.head.weight)
    assert torch.equal(new.ema.module.head.bias, old.model.head.bias)
    assert "holds no EMA weights" in open(os.path.join(out, "log_rank0.txt")).read()
    for t in (old, new):
        t.metrics.close()


def test_newer_checkpoint_of_another_model_is_named_not_a_crash(tmp_path):
    out = str(tmp_path)
    old = _tiny_trainer(out, num_classes=5)
    old.state.epoch, old.state.global_step = 0, 5
    old.checkpointer.save(old.state_dict(epoch_complete=True))
    new = _tiny_trainer(out, num_classes=4)
    with pytest.raises(CheckpointError) as err:
        new.resume("", auto=True)
    msg = str(err.value)
    assert msg.startswith(f"checkpoint {tmp_path / 'ckpt_epoch_1.pth'} was saved from a different model")  # epoch 1
    assert "head.weight is 5x4 there, 4x4 here" in msg and "head.bias is 5 there, 4 here" in msg
    for t in (old, new):
        t.metrics.close()


def test_a_repeated_resume_command_continues_its_own_progress(tmp_path):
    """A requeued job repeats ``--resume SRC``: the checkpoints its attempts wrote record SRC as their origin, so
    the repeated command continues from the newest of them (preflight.resume_point) instead of starting over."""
    from types import SimpleNamespace

    from engine.checkpoint_io import load_resumable
    from engine.preflight import resume_point
    from wiring import check_weight_files

    src_dir, out = tmp_path / "pretrain", tmp_path / "out"
    first = _tiny_trainer(str(src_dir), num_classes=4)
    first.state.epoch, first.state.global_step = 0, 5
    src = first.checkpointer.save(first.state_dict(epoch_complete=True))
    attempt = _tiny_trainer(str(out), num_classes=4)
    assert attempt.resume(src, auto=True)
    assert attempt.state.origin == {"path": os.path.realpath(src), "step": 5}
    attempt.state.epoch, attempt.state.global_step = 1, 10
    mine = attempt.checkpointer.save(attempt.state_dict(epoch_complete=True))
    cfg = SimpleNamespace(OUTPUT=str(out), TEST=SimpleNamespace(ONLY_TEST=False),
                          TRAIN=SimpleNamespace(AUTO_RESUME=True), MODEL=SimpleNamespace(PRETRAINED=""))
    path, note = resume_point(cfg, src)
    assert path == mine and f"--resume {src}: {mine} continues it" in note
    assert _crc_reads(lambda: (check_weight_files(cfg, path), load_resumable(path))) == 0  # read whole once, above
    # the next attempt loads that checkpoint and keeps the origin, so a third one finds its progress too
    again = _tiny_trainer(str(out), num_classes=4)
    assert again.resume(path, auto=True, named=src)
    assert again.state.origin == {"path": os.path.realpath(src), "step": 5} and again.state.global_step == 10
    again.state.epoch, again.state.global_step = 2, 15
    newest = again.checkpointer.save(again.state_dict(epoch_complete=True))
    (out / "ckpt_step_99.pth").write_bytes(b"PK\x03\x04 damaged")  # skipped, as find_latest skips it
    assert resume_point(cfg, src)[0] == newest
    # a checkpoint of this attempt whose bytes changed on disk reads (memory-mapped) but is skipped too
    os.remove(out / "ckpt_step_99.pth")  # (it would rotate ckpt_epoch_3 away)
    changed = again.checkpointer.save({**again.state_dict(epoch_complete=False), "global_step": 20})
    assert os.path.basename(changed) == "ckpt_step_20.pth" and Checkpointer.step_of(changed) == 20
    _flip_a_byte_of_record(changed, "/data/0")
    assert resume_point(cfg, src)[0] == newest
    os.remove(changed)
    # TRAIN.AUTO_RESUME False, or an evaluation, takes the file as given
    cfg.TRAIN.AUTO_RESUME = False
    assert resume_point(cfg, src) == (src, "")
    cfg.TRAIN.AUTO_RESUME, cfg.TEST.ONLY_TEST = True, True
    assert resume_point(cfg, src) == (src, "")
    cfg.TEST.ONLY_TEST = False
    # another checkpoint of the source run (or the same name holding another step) is another start
    first.state.epoch, first.state.global_step = 1, 7
    other = first.checkpointer.save(first.state_dict(epoch_complete=True))
    assert resume_point(cfg, other) == (other, "")
    torch.save({**torch.load(other, weights_only=True), "global_step": 7}, src)
    assert resume_point(cfg, src) == (src, "")
    # the named file rotated away (an older checkpoint of OUTPUT itself, gone back to): matched by its path
    os.remove(src)
    assert resume_point(cfg, src)[0] == newest
    for t in (first, attempt, again):
        t.metrics.close()


def test_finding_the_continuation_of_a_resume_file_parses_each_checkpoint_once(tmp_path, monkeypatch):
    """continuation_of parsed each of OUTPUT's checkpoints twice, memory-mapped (once to order it, once more for
    the origin its TrainState records), and the named file once more for its step when it is one of them (a parse
    costs per tensor: thousands for EVA-1B). The listing's one parse keeps the origin too, and the Checkpointers of
    one folder share what they parsed: a later listing parses only files new or changed since."""
    src, out = str(tmp_path / "src.pth"), tmp_path / "out"
    save_atomic(_state(5), src)
    origin = {"path": os.path.realpath(src), "step": 5}
    out.mkdir()
    for step in (10, 15):
        save_atomic({**_state(step), "train_state": {"origin": origin}}, str(out / f"ckpt_step_{step}.pth"))
    save_atomic(_state(20), str(out / "ckpt_step_20.pth"))  # another run's, newest: not a continuation
    parses: list[str] = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **kw: parses.append(os.path.basename(f)) or load(f, *a, **kw))
    assert Checkpointer(str(out), writer=False).continuation_of(src) is None
    assert sorted(parses) == ["ckpt_step_10.pth", "ckpt_step_15.pth", "ckpt_step_20.pth", "src.pth"], parses
    os.remove(out / "ckpt_step_20.pth")
    parses.clear()
    assert Checkpointer(str(out), writer=False).continuation_of(src) == str(out / "ckpt_step_15.pth")
    assert parses == ["src.pth"], parses  # (outside the folder: not kept past its listing)
    # a checkpoint of OUTPUT itself, gone back to: its step comes from the listing
    parses.clear()
    assert Checkpointer(str(out), writer=False).continuation_of(str(out / "ckpt_step_10.pth")) is None
    assert parses == [], parses
    # a file written again since (another inode, size or time) is parsed again
    save_atomic({**_state(15), "train_state": {"origin": {"path": "elsewhere", "step": 1}}},
                str(out / "ckpt_step_15.pth"))
    assert Checkpointer(str(out), writer=False).continuation_of(src) is None
    assert sorted(parses) == ["ckpt_step_15.pth", "src.pth"], parses


def test_the_check_takes_the_continuation_as_found_only_while_its_file_is_unchanged(tmp_path, monkeypatch):
    """The file continuation_of settles on is offered, as it parsed it, to the check of that file (load_resumable,
    memory-mapped), which then parses nothing; a file written again since is parsed anew, and the offer is taken
    once."""
    from engine.checkpoint_io import load_resumable

    src = str(tmp_path / "src.pth")
    save_atomic(_state(5), src)
    parses: list[str] = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **kw: parses.append(os.path.basename(f)) or load(f, *a, **kw))
    for out, written_again in ((tmp_path / "out", False), (tmp_path / "again", True)):
        out.mkdir()
        mine = str(out / "ckpt_step_10.pth")
        save_atomic({**_state(10), "train_state": {"origin": {"path": os.path.realpath(src), "step": 5}}}, mine)
        assert Checkpointer(str(out), writer=False).continuation_of(src) == mine
        if written_again:  # after it was found (an atomic write: another inode)
            save_atomic({**_state(10), "global_step": 11}, mine)
        parses.clear()
        assert load_resumable(mine, mmap=True)["global_step"] == (11 if written_again else 10)
        assert parses == (["ckpt_step_10.pth"] if written_again else []), parses
        assert load_resumable(mine, mmap=True) and parses[-1:] == ["ckpt_step_10.pth"]  # taken once


def test_a_start_that_fails_after_the_continuation_was_found_holds_no_mapped_checkpoint(tmp_path):
    """A start that failed between the offer (preflight.resume_point) and the load that takes it (a list missing)
    kept the checkpoint memory-mapped in the process (an API caller's: a deleted file's space stayed in use)."""
    import wiring
    from configs import load_config
    from engine import checkpoint_io

    src = str(tmp_path / "src.pth")
    save_atomic(_state(5), src)
    out = tmp_path / "out"
    out.mkdir()
    mine = str(out / "ckpt_step_10.pth")
    save_atomic({**_state(10), "train_state": {"origin": {"path": os.path.realpath(src), "step": 5}}}, mine)
    cfg = load_config(None, ["OUTPUT", str(out), "DATA.TRAIN_FILE", str(tmp_path / "missing.txt")])
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        wiring.start(cfg, src)
    assert checkpoint_io._OFFERED == {}


def test_a_clock_set_back_during_the_run_makes_no_negative_wall_time(tmp_path, monkeypatch):
    """The system clock stepped back an hour (NTP, a DST bug, an admin) during the run: summary.json's wall_time_s
    was -3600 s, and a checkpoint carried it into the resumed run's."""
    from engine.metrics import MetricLogger

    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    set_back = time.time() - 3600
    monkeypatch.setattr(time, "time", lambda: set_back)
    assert 0 <= metrics.totals_state()["wall_time_s"] < 60
    summary = metrics.summary({})
    metrics.close()
    assert 0 <= summary["wall_time_s"] < 60
    assert json.loads((tmp_path / "summary.json").read_text())["wall_time_s"] == summary["wall_time_s"]


@pytest.mark.parametrize("tested_after_the_save, evaluations", [(True, 2), (False, 1)],
                         ids=["final-test-after-the-save", "one-pass-before-the-save"])
def test_a_clock_set_back_before_the_final_test_counts_it_once_when_only_the_summary_is_written_again(
        tmp_path, monkeypatch, tested_after_the_save, evaluations):
    """A finished run whose summary was lost is summarised again from metrics.jsonl (recall_evaluation), counting
    the final test when the last checkpoint's count lacks it. That was decided by comparing the test line's
    wall-clock time with the checkpoint's: a clock set back an hour between the save and the test counted the test
    in no summary, and one set back between a test (one pass serving as validation too) and the save counted it
    twice. The checkpoint now says which evaluation it counted last."""
    from engine.metrics import MetricLogger

    clock = [time.time()]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    result = {"top1": 50.0, "top5": None, "mean_class_top1": 50.0, "num_videos": 2, "views": 1}
    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    try:
        metrics.log_eval({"split": "val" if tested_after_the_save else "test", **result}, epoch=0, step=4)
        if not tested_after_the_save:
            clock[0] -= 3600
        saved, saved_at = metrics.totals_state(), time.time()  # the last epoch's checkpoint
        if tested_after_the_save:
            clock[0] -= 3600
            metrics.log_eval({"split": "test", **result}, epoch=0, step=4)
    finally:
        metrics.close()  # ended before its summary
    again = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    try:
        again.restore_totals(saved, step=4)
        assert again.recall_evaluation(4, "test", checkpoint_time=saved_at)["split"] == "test"
        summary = again.summary({})
    finally:
        again.close()
    assert summary["evaluations"] == evaluations
    assert json.loads((tmp_path / "summary.json").read_text())["evaluations"] == evaluations


def test_a_resumed_attempt_counts_its_start_up_in_the_wall_time(tmp_path):
    from engine.metrics import MetricLogger

    metrics = MetricLogger(str(tmp_path), tensorboard=False, progress_bar=False)
    time.sleep(0.3)  # this attempt's start-up: index, model, weights, before the checkpoint is applied
    metrics.restore_totals({"wall_time_s": 10.0, "evaluations": 1}, step=0)
    summary = metrics.summary({})
    metrics.close()
    assert summary["wall_time_s"] >= 10.3 and summary["evaluations"] == 1


def _log_steps(metrics, steps, loss_of) -> list[dict]:
    """Optimizer ``steps`` of epoch 0 (8 steps), 2 clips of 1 s each, 0.25 s of it waiting; the lines written."""
    lines = [metrics.log_step(s, 0, loss=loss_of(s), lr=1e-3, clips=2, data_time=0.25, step_time=1.0)
             for s in steps]
    return [line for line in lines if line is not None]


def _logger_every_4_steps(out):
    from engine.metrics import MetricLogger

    return MetricLogger(str(out), print_freq=4, tensorboard=False, nvml=False, progress_bar=False)


def test_a_checkpoint_inside_a_log_window_keeps_its_steps_for_the_resumed_line(tmp_path):
    """A run that saves every SAVE_STEPS (3) inside a PRINT_FREQ window (4), killed after step 5 and resumed from
    step 3's checkpoint, logs step 4's line as the uninterrupted run did: steps 1 to 3 were lost from every line."""
    def loss_of(step):
        return float(step)

    whole = _logger_every_4_steps(tmp_path / "whole")
    whole.start_epoch(0, 8, 0, epochs=1)
    expected = _log_steps(whole, range(1, 9), loss_of)
    whole.close()
    stopped = _logger_every_4_steps(tmp_path / "resumed")
    stopped.start_epoch(0, 8, 0, epochs=1)
    _log_steps(stopped, range(1, 4), loss_of)
    saved = stopped.totals_state()  # the checkpoint of step 3
    _log_steps(stopped, range(4, 6), loss_of)
    stopped.close()  # killed
    resumed = _logger_every_4_steps(tmp_path / "resumed")
    resumed.restore_totals(saved, step=3, mid_epoch=True)
    resumed.start_epoch(0, 8, 3, epochs=1)
    got = _log_steps(resumed, range(4, 9), loss_of)
    resumed.close()
    keys = ("step", "loss", "clips_per_sec", "data_wait_pct", "step_time_s")
    assert [{k: line[k] for k in keys} for line in got] == [{k: line[k] for k in keys} for line in expected]
    assert got[0]["loss"] == 2.5 and got[0]["clips_per_sec"] == 2.0  # steps 1 to 4: 8 clips in 4 s
    logged = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [line["loss"] for line in logged] == [2.5, 6.5]
    # a checkpoint whose epoch is trained again from its first step (another data layout) logs those steps anew
    again = _logger_every_4_steps(tmp_path / "again")
    again.restore_totals(saved, step=3, mid_epoch=True)
    again.start_epoch(0, 8, 0, epochs=1)
    assert _log_steps(again, range(4, 8), loss_of)[0]["loss"] == 5.5
    again.close()


def test_a_stop_signal_inside_a_log_window_logs_its_steps_and_keeps_them_for_the_resumed_line(tmp_path):
    """A stop at step 3 of 8 with PRINT_FREQ 4 logs steps 1 to 3 in a line (the log says what happened), yet its
    checkpoint keeps them pending: the resumed run's line comes at step 4 over steps 1 to 4, as the uninterrupted
    run's, and the stop's line is dropped (it stayed, and steps 1 to 3 were in two lines). A stop at the epoch's
    last step wrote the uninterrupted run's line: the resumed run writes none again."""
    whole = _logger_every_4_steps(tmp_path / "whole")
    whole.start_epoch(0, 8, 0, epochs=1)
    expected = _log_steps(whole, range(1, 9), float)
    whole.close()
    keys = ("step", "loss", "clips_per_sec", "data_wait_pct", "step_time_s")
    stopped = _logger_every_4_steps(tmp_path / "resumed")
    stopped.start_epoch(0, 8, 0, epochs=1)
    _log_steps(stopped, range(1, 4), float)
    stopped.flush_before_stop(3, 0)
    saved = stopped.totals_state()  # the stop's checkpoint
    stopped.close()
    resumed = _logger_every_4_steps(tmp_path / "resumed")
    resumed.restore_totals(saved, step=3, mid_epoch=True)
    resumed.start_epoch(0, 8, 3, epochs=1)
    got = _log_steps(resumed, range(4, 9), float)
    resumed.close()
    assert [{k: line[k] for k in keys} for line in got] == [{k: line[k] for k in keys} for line in expected]
    logged = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], line["loss"]) for line in logged] == [(4, 2.5), (8, 6.5)]
    at_end = _logger_every_4_steps(tmp_path / "end")
    at_end.start_epoch(0, 6, 0, epochs=1)
    _log_steps(at_end, range(1, 7), float)  # a line at step 4; steps 5 and 6 pending at the epoch's last step
    at_end.flush_before_stop(6, 0)
    saved = at_end.totals_state()
    at_end.close()
    again = _logger_every_4_steps(tmp_path / "end")
    again.restore_totals(saved, step=6, mid_epoch=True)
    again.start_epoch(0, 6, 6, epochs=1)
    again.end_epoch(6, 0)
    again.close()
    logged = [json.loads(x) for x in (tmp_path / "end" / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], line["loss"]) for line in logged] == [(4, 2.5), (6, 5.5)]


def test_a_resumed_run_hides_the_tensorboard_points_of_the_steps_it_trains_again(tmp_path):
    """metrics.jsonl drops the stopped attempt's lines after the checkpoint; TensorBoard showed them beside the
    resumed run's, two points at each of those steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from engine.metrics import MetricLogger

    def attempt(loss_of, steps, resume_at=None):
        metrics = MetricLogger(str(tmp_path), print_freq=1, nvml=False, progress_bar=False)
        if resume_at is not None:
            metrics.restore_totals({}, step=resume_at, mid_epoch=True)
        metrics.start_epoch(0, 8, steps[0] - 1, epochs=1)
        _log_steps(metrics, steps, loss_of)
        metrics.close()

    attempt(lambda s: 1.0, range(1, 7))  # stopped after step 6, its checkpoint at step 3
    attempt(lambda s: 2.0, range(4, 9), resume_at=3)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == \
        [(1, 1.0), (2, 1.0), (3, 1.0), (4, 2.0), (5, 2.0), (6, 2.0), (7, 2.0), (8, 2.0)]
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == \
        list(range(1, 9))


def test_a_resume_with_tensorboard_off_hides_the_stopped_attempts_later_points_too(tmp_path):
    """A resume with LOG.TENSORBOARD False left the stopped attempt's points after its checkpoint in
    OUTPUT/tensorboard/ shown: a later run with it on showed them as if the run had trained those steps once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from engine.metrics import MetricLogger

    def attempt(loss, steps, resume_at=None, tensorboard=True):
        metrics = MetricLogger(str(tmp_path), print_freq=1, nvml=False, progress_bar=False, tensorboard=tensorboard)
        if resume_at is not None:
            metrics.restore_totals({}, step=resume_at, mid_epoch=True)
        metrics.start_epoch(0, 10, steps[0] - 1, epochs=1)
        _log_steps(metrics, steps, lambda s: loss)
        metrics.close()

    def shown():
        events = EventAccumulator(str(tmp_path / "tensorboard"))
        events.Reload()
        return [(e.step, e.value) for e in events.Scalars("train/loss")]

    attempt(1.0, range(1, 7))  # stopped after step 6, its checkpoint at step 3
    attempt(2.0, range(4, 9), resume_at=3, tensorboard=False)  # stopped after step 8, its checkpoint at step 5
    assert shown() == [(1, 1.0), (2, 1.0), (3, 1.0)]
    attempt(3.0, range(6, 11), resume_at=5)
    assert shown() == [(1, 1.0), (2, 1.0), (3, 1.0)] + [(s, 3.0) for s in range(6, 11)]
    off = MetricLogger(str(tmp_path / "never"), nvml=False, progress_bar=False, tensorboard=False)
    off.restore_totals({}, step=2)
    off.close()
    assert not (tmp_path / "never" / "tensorboard").exists()  # no folder made where no run showed any


def test_a_run_without_a_working_tensorboard_says_so_once_and_logs_on(tmp_path, monkeypatch, capsys):
    """A broken or missing tensorboard package is a warning, then the run goes on: the warning was given before the
    logger had the attributes a warning reads, so the start ended in an AttributeError."""
    from engine.metrics import MetricLogger

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # its import raises ImportError
    metrics = MetricLogger(str(tmp_path), print_freq=1, nvml=False, progress_bar=False)
    metrics.start_epoch(0, 2, 0, epochs=1)
    _log_steps(metrics, range(1, 3), lambda s: 1.5)
    metrics.close()
    said = [line for line in capsys.readouterr().out.splitlines() if "TensorBoard disabled" in line]
    # what to do, and where the numbers are meanwhile (it said the import's error alone)
    assert said == [f"WARNING: TensorBoard disabled, no events in {tmp_path / 'tensorboard'}: import of "
                    "torch.utils.tensorboard halted; None in sys.modules; install the tensorboard package (pip install "
                    "tensorboard), or set LOG.TENSORBOARD False; metrics.jsonl holds the same numbers"]
    assert said[0] in (tmp_path / "log_rank0.txt").read_text()
    assert [json.loads(x)["loss"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1.5, 1.5]
    assert not (tmp_path / "tensorboard").exists()


def _logged_while_the_disk_fills(out, capsys, fill: Callable[[], object],
                                 from_step: int) -> tuple[list[str], str, list[int]]:
    """A run of 6 steps logged every step into ``out``, whose disk fills (``fill()``) before step ``from_step`` (0:
    before the logger starts): the lines printed about TensorBoard, all that was printed and the steps
    metrics.jsonl holds."""
    from engine.metrics import MetricLogger

    if from_step == 0:
        fill()
    metrics = MetricLogger(str(out), print_freq=1, nvml=False, progress_bar=False)
    metrics.start_epoch(0, 6, 0, epochs=1)
    _log_steps(metrics, range(1, max(from_step, 1)), lambda s: 1.5)
    if from_step:
        fill()  # every later event fails
    _log_steps(metrics, range(max(from_step, 1), 7), lambda s: 1.5)
    metrics.close()
    printed = capsys.readouterr().out
    said = [line for line in printed.splitlines() if "TensorBoard" in line]
    return said, printed, [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("from_step, fails, what", [(3, "append", "stopped, no more events"),
                                                    (0, "write", "disabled, no events")])
def test_tensorboard_events_that_cannot_be_written_stop_with_one_warning_and_the_run_goes_on(tmp_path, monkeypatch,
                                                                                            capsys, from_step, fails,
                                                                                            what):
    """TensorBoard writes its events in a thread of its own: a full disk there printed that thread's traceback, and
    its error came back on a later add_scalar (or the close) as a traceback that ended the run. The disk full before
    the first event (``from_step`` 0): the same one line (it named the events file as bytes, with no way out, under
    the writer thread's traceback)."""
    pytest.importorskip("tensorboard")
    import threading

    from tensorboard.compat.tensorflow_stub.io.gfile import LocalFileSystem

    def full_disk(fs, filename, content, binary_mode=False):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    others: list[BaseException] = []  # the errors of threads that are not tensorboard's still go to the hook
    monkeypatch.setattr(threading, "excepthook", lambda args: others.append(args.exc_value))
    said, out, steps = _logged_while_the_disk_fills(
        tmp_path, capsys, lambda: monkeypatch.setattr(LocalFileSystem, fails, full_disk), from_step)
    assert said == [f"WARNING: TensorBoard {what} in {tmp_path / 'tensorboard'}: No space left on device; free space "
                    "there (a resumed run writes them again from its checkpoint on), or set LOG.TENSORBOARD False to "
                    "go without; metrics.jsonl is still written and holds the same numbers"]
    assert "Traceback" not in out and others == []
    assert steps == [1, 2, 3, 4, 5, 6]
    thread = threading.Thread(target=lambda: 1 / 0)  # the hook still takes the errors of other threads
    thread.start()
    thread.join()
    assert [type(e) for e in others] == [ZeroDivisionError]


def test_best_comes_from_validations_and_is_written_before_the_checkpoint_that_records_it(tmp_path, monkeypatch):
    """Three epochs validated 1x1 (80, 83, 82 % top-1), then a 2x3 final test (85 %): best is epoch 2's
    validation, as the original chose it (the test reports apart), and each best.pth precedes its checkpoint."""
    import engine.train_loop as train_loop

    trainer = _tiny_trainer(str(tmp_path), num_classes=4)
    trainer.opts.final_test, trainer.make_test_loader = True, lambda: "test loader"
    trainer.train_loader = type("Loader", (), {"set_epoch": lambda self, epoch: None})()
    trainer.val_loader = "val loader"
    scores, order = {"val": iter([80.0, 83.0, 82.0]), "test": iter([85.0])}, []

    def train_one_epoch(*args, **kwargs):
        trainer.state.global_step += 5
        trainer.state.step_in_epoch = 5
        return {"loss": 1.0, "steps": 5}

    tested = []

    def run_eval(loader, split, epoch, checkpoint=None, **stop):  # stop: the final test's stop_requested, kept
        order.append((split, epoch + 1))
        tested.append(checkpoint)
        return {"split": split, "top1": next(scores[split])}

    monkeypatch.setattr(train_loop, "train_one_epoch", train_one_epoch)
    monkeypatch.setattr(train_loop, "loader_stats", lambda *a: {})
    monkeypatch.setattr(trainer, "run_eval", run_eval)
    saves = trainer.checkpointer.save, trainer.checkpointer.save_best
    monkeypatch.setattr(trainer.checkpointer, "save", lambda state: order.append(("ckpt", state["epoch"] + 1))
                        or saves[0](state))
    monkeypatch.setattr(trainer.checkpointer, "save_best", lambda state: order.append(("best", state["epoch"] + 1))
                        or saves[1](state))
    result = trainer.fit()
    trainer.metrics.close()
    assert order == [("val", 1), ("best", 1), ("ckpt", 1), ("val", 2), ("best", 2), ("ckpt", 2),
                     ("val", 3), ("ckpt", 3), ("test", 3)]  # the final test after the last checkpoint
    # ... whose weights it scores: its line names that file (the validations score the weights being trained)
    assert tested == [None, None, None, str(tmp_path / "ckpt_epoch_3.pth")], tested
    assert (result["best_top1"], result["best_epoch"], result["final"]["top1"]) == (83.0, 2, 85.0)
    assert torch.load(tmp_path / "best.pth", weights_only=True)["top1"] == 83.0


def _flip_a_byte_of_record(path, suffix: str) -> None:
    """Change one byte in the middle of the stored (uncompressed) record whose name ends with ``suffix``, as a bad
    sector or a storage fault would after the write."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)  # the local header's name and extra-field lengths
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
        at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x10]))


def test_a_checkpoint_changed_on_disk_is_refused_and_the_previous_one_used(tmp_path):
    warnings = []
    ck = Checkpointer(str(tmp_path), keep_last=5, warn=warnings.append)
    ck.save(_state(4))
    ck.save({**_state(8), "model": {"w": torch.arange(4096, dtype=torch.float32)}})
    changed = tmp_path / "ckpt_step_8.pth"
    _flip_a_byte_of_record(changed, "/data/0")
    # torch.load does not check the CRC-32 it wrote: the changed weight would be trained on
    assert not torch.equal(torch.load(changed, weights_only=True)["model"]["w"], torch.arange(4096.0))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(str(changed))
    assert str(info.value).startswith(f"checkpoint {changed} is damaged: record ")
    assert "does not match the CRC-32 written with it" in str(info.value)
    path, state = ck.find_latest()
    assert os.path.basename(path) == "ckpt_step_4.pth" and state["global_step"] == 4
    assert len(warnings) == 1 and "ckpt_step_8.pth is damaged" in warnings[0]


def test_weights_changed_on_disk_are_refused_by_the_weights_reader(tmp_path):
    from models.checkpoint import read_state_dict

    path = tmp_path / "best.pth"
    save_atomic({"model": {"w": torch.arange(4096, dtype=torch.float32)}, "top1": 50.0}, str(path))
    assert torch.equal(read_state_dict(path)["w"], torch.arange(4096.0))
    _flip_a_byte_of_record(path, "/data/0")
    with pytest.raises(CheckpointError, match=r"best.pth: damaged: record \S+/data/0 does not match the CRC-32"):
        read_state_dict(path)


def test_archives_written_without_crcs_still_load(tmp_path):
    import zipfile

    from torch.utils.serialization import config

    path = str(tmp_path / "ckpt_step_3.pth")
    before = config.save.compute_crc32
    config.save.compute_crc32 = False  # not monkeypatch: undoing deletes the key from torch's config module
    try:
        save_atomic(_state(3), path)
    finally:
        config.save.compute_crc32 = before
    assert {i.CRC for i in zipfile.ZipFile(path).infolist()} == {0}
    assert load_checkpoint(path)["global_step"] == 3


def _crc_reads(work) -> int:
    """How many archives ``work()`` reads whole for their CRC-32s (evautil.zip_check)."""
    import zipfile

    from evautil import zip_check

    opened = []

    class Counted(zipfile.ZipFile):
        def __init__(self, *args, **kwargs):
            opened.append(args[0])
            super().__init__(*args, **kwargs)

    before, zip_check.zipfile.ZipFile = zip_check.zipfile.ZipFile, Counted
    try:
        work()
    finally:
        zip_check.zipfile.ZipFile = before
    return len(opened)


def test_the_checks_of_one_start_read_a_file_once_and_the_next_check_reads_it_again(tmp_path):
    """A check that remembers, then one more that remembers (the early check of the checkpoint a repeated command
    continues), then the load: the file is read for its CRC-32s once; the check after them reads it again."""
    from evautil.zip_check import damaged_zip_record

    path = str(tmp_path / "ckpt_step_8.pth")
    save_atomic({**_state(8), "model": {"w": torch.arange(4096, dtype=torch.float32)}}, path)
    assert _crc_reads(lambda: damaged_zip_record(path, remember=True)) == 1
    assert _crc_reads(lambda: damaged_zip_record(path, remember=True)) == 0
    assert _crc_reads(lambda: damaged_zip_record(path)) == 0
    assert _crc_reads(lambda: damaged_zip_record(path)) == 1


def test_a_file_found_intact_skips_only_the_next_crc_check(tmp_path):
    """The check before a run writes anything remembers an intact file so that the load right after does not read
    it again; one skip only: a byte changed in place within one mtime tick is caught by every check after that."""
    from evautil.zip_check import damaged_zip_record

    path = tmp_path / "ckpt_step_8.pth"
    save_atomic({**_state(8), "model": {"w": torch.arange(4096, dtype=torch.float32)}}, str(path))
    assert damaged_zip_record(str(path), remember=True) is None
    st = os.stat(path)
    _flip_a_byte_of_record(path, "/data/0")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same size and mtime: only the bytes tell
    assert damaged_zip_record(str(path)) is None  # the remembered check
    assert "does not match the CRC-32" in damaged_zip_record(str(path))
    assert "does not match the CRC-32" in damaged_zip_record(str(path))


@pytest.mark.parametrize("keep_new", [False, True])
def test_a_resumed_optimizer_keeps_this_runs_kernels(keep_new):
    """Optimizer.load_state_dict takes the saved groups' flags: a checkpoint of an unfused AdamW (the CPU's) resumed
    by a fused one (a GPU's) trained unfused, and with a changed config accepted its step counts stayed where the
    fused kernel does not take them. The run's own kernels are kept, the moments and steps are the checkpoint's."""
    from engine.resume_state import restore_training_objects

    torch.manual_seed(0)
    saved_model = torch.nn.Linear(4, 3)
    saved = torch.optim.AdamW(saved_model.parameters(), lr=1e-3, fused=False)
    saved_model(torch.randn(2, 4)).sum().backward()
    saved.step()
    ckpt = {"model": saved_model.state_dict(), "optimizer": saved.state_dict(), "scheduler": {}}
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, fused=True)
    restore_training_objects(ckpt, "ckpt.pth", model, optimizer, scheduler=None, keep_new_hyperparameters=keep_new,
                             keep_new_schedule=True)
    group = optimizer.param_groups[0]
    assert group["fused"] is True and group["lr"] == (2e-3 if keep_new else 1e-3)
    for p, q in zip(model.parameters(), saved_model.parameters()):
        step = optimizer.state[p]["step"]
        assert step.dtype == torch.float32 and step.device == p.device and float(step) == 1.0
        torch.testing.assert_close(optimizer.state[p]["exp_avg"], saved.state[q]["exp_avg"])
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()  # the fused kernel runs on the restored state
    assert all(float(optimizer.state[p]["step"]) == 2.0 for p in model.parameters())


@pytest.mark.parametrize("damage", ["truncated", "crc"])
def test_a_damaged_newer_checkpoint_does_not_count_as_kept(tmp_path, damage):
    """An attempt that fell back past a damaged newer checkpoint: with KEEP_LAST 1 its first save deleted the
    checkpoint it resumed from and kept the damaged one, so the next resume found nothing usable."""
    ck = Checkpointer(str(tmp_path), keep_last=1, warn=lambda msg: None)
    ck.save(_state(100))
    ck.keep_last = 5
    ck.save({**_state(200), "model": {"w": torch.arange(4096, dtype=torch.float32)}})
    damaged = tmp_path / "ckpt_step_200.pth"
    if damage == "truncated":
        damaged.write_bytes(damaged.read_bytes()[:300])
    else:  # the header reads, a record's bytes changed: only the CRC check finds it (in find_latest)
        _flip_a_byte_of_record(damaged, "/data/0")
    attempt = Checkpointer(str(tmp_path), keep_last=1, warn=lambda msg: None)
    assert os.path.basename(attempt.find_latest()[0]) == "ckpt_step_100.pth"
    attempt.save(_state(110))
    # the damaged one set aside, not deleted
    assert sorted(os.listdir(tmp_path)) == ["ckpt_step_110.pth", "ckpt_step_200.pth.damaged"]
    path, state = Checkpointer(str(tmp_path), keep_last=1).find_latest()
    assert os.path.basename(path) == "ckpt_step_110.pth" and state["global_step"] == 110


@pytest.mark.parametrize("damage", ["truncated", "crc"])
def test_a_damaged_checkpoint_passed_over_is_set_aside_once_and_named_once(tmp_path, damage):
    """A damaged newer checkpoint that a resume passed over stayed in place, and every later resume (each requeue)
    warned of it again. The resume that passes it moves it to <name>.damaged, bytes unchanged, and says so once."""
    ck = Checkpointer(str(tmp_path), keep_last=5)
    ck.save(_state(100))
    ck.save({**_state(200), "model": {"w": torch.arange(4096, dtype=torch.float32)}})
    damaged = tmp_path / "ckpt_step_200.pth"
    if damage == "truncated":
        damaged.write_bytes(damaged.read_bytes()[:300])
    else:
        _flip_a_byte_of_record(damaged, "/data/0")
    kept = damaged.read_bytes()
    (tmp_path / "ckpt_step_200.pth.damaged").write_bytes(b"an earlier one")  # never overwritten
    warnings: list[str] = []
    path, _ = Checkpointer(str(tmp_path), warn=warnings.append).find_latest()
    assert os.path.basename(path) == "ckpt_step_100.pth"
    aside = tmp_path / "ckpt_step_200.pth.damaged.2"
    assert len(warnings) == 1 and warnings[0].startswith(f"checkpoint {damaged} ")
    assert warnings[0].endswith(f"; resuming from the previous checkpoint {path}, and moved the damaged file to "
                                f"{aside} so that later resumes do not name it again (look at it, or delete it)")
    assert aside.read_bytes() == kept and not damaged.exists()
    assert (tmp_path / "ckpt_step_200.pth.damaged").read_bytes() == b"an earlier one"
    again: list[str] = []
    path, _ = Checkpointer(str(tmp_path), warn=again.append).find_latest()
    assert os.path.basename(path) == "ckpt_step_100.pth" and again == []


def test_damaged_checkpoints_stay_when_nothing_else_resumes_or_the_finder_does_not_write(tmp_path):
    """Only a writer that resumes an older checkpoint moves a damaged one: with none usable the run must stop (a
    move would let the next start begin from step 0), a reader (an evaluation, a rank other than 0) moves nothing,
    and a file that reads but holds no training state is no damaged checkpoint."""
    (tmp_path / "ckpt_step_300.pth").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        Checkpointer(str(tmp_path)).find_latest()
    assert os.listdir(tmp_path) == ["ckpt_step_300.pth"]
    Checkpointer(str(tmp_path)).save(_state(100))
    torch.save({"model": {}}, tmp_path / "ckpt_step_400.pth")  # weights someone put there
    warnings: list[str] = []
    path, _ = Checkpointer(str(tmp_path), writer=False, warn=warnings.append).find_latest()
    assert os.path.basename(path) == "ckpt_step_100.pth" and len(warnings) == 2
    assert sorted(os.listdir(tmp_path)) == ["ckpt_step_100.pth", "ckpt_step_300.pth", "ckpt_step_400.pth"]
    warnings.clear()
    path, _ = Checkpointer(str(tmp_path), warn=warnings.append).find_latest()
    assert sorted(os.listdir(tmp_path)) == ["ckpt_step_100.pth", "ckpt_step_300.pth.damaged", "ckpt_step_400.pth"]
    assert "ckpt_step_400.pth lacks" in warnings[0] and "trying the previous checkpoint" in warnings[0]
    assert "moved the damaged file to" in warnings[1]


def test_a_damaged_checkpoint_rank_0_sets_aside_while_another_rank_looks_is_not_named_there(tmp_path, monkeypatch):
    """Every rank looks for the checkpoint to resume; rank 0 may move a damaged one aside between another rank's
    listing and its load, whose log then said "checkpoint ... does not exist; trying the previous checkpoint"."""
    import engine.checkpointing as checkpointing

    Checkpointer(str(tmp_path)).save(_state(100))
    damaged = tmp_path / "ckpt_step_200.pth"
    damaged.write_bytes(b"PK\x03\x04 cut short")
    load, rank_0 = checkpointing.load_checkpoint, []

    def rank_0_moves_it_first(path, *args, **kwargs):
        if os.path.basename(path) == damaged.name and not rank_0:
            rank_0.append("looking")
            Checkpointer(str(tmp_path), warn=lambda msg: None).find_latest()
        return load(path, *args, **kwargs)

    monkeypatch.setattr(checkpointing, "load_checkpoint", rank_0_moves_it_first)  # the load find_latest calls
    warnings: list[str] = []
    path, _ = Checkpointer(str(tmp_path), writer=False, warn=warnings.append).find_latest()
    assert os.path.basename(path) == "ckpt_step_100.pth" and warnings == []
    assert sorted(os.listdir(tmp_path)) == ["ckpt_step_100.pth", "ckpt_step_200.pth.damaged"]


def test_a_fresh_start_takes_the_damaged_checkpoints_set_aside_along_with_the_earlier_run(tmp_path):
    from engine.run_files import move_earlier_run

    Checkpointer(str(tmp_path)).save(_state(100))
    (tmp_path / "ckpt_step_200.pth.damaged").write_bytes(b"cut short")
    dest, names = move_earlier_run(str(tmp_path))
    assert names == ["ckpt_step_100.pth", "ckpt_step_200.pth.damaged"]
    assert sorted(os.listdir(dest)) == names


def test_an_end_of_epoch_resume_on_another_training_list_says_so(tmp_path):
    """Mid-epoch, another list restarts the epoch with a warning; at an epoch's end nothing restarts, and the
    changed data went unmentioned (a regenerated dataset of 36 clips instead of 32 trained on silently)."""
    from types import SimpleNamespace

    out = str(tmp_path)

    def loader(videos: int, plan: str):
        return SimpleNamespace(index=[None] * videos, batch_size=2, plan_fingerprint=lambda: plan)

    old = _tiny_trainer(out, num_classes=4)
    old.train_loader = loader(32, "aaaa")
    old.state.epoch, old.state.global_step = 0, 5
    old.checkpointer.save(old.state_dict(epoch_complete=True))
    same = _tiny_trainer(out, num_classes=4)
    same.train_loader = loader(32, "aaaa")
    assert same.resume("", auto=True)
    new = _tiny_trainer(out, num_classes=4)
    new.train_loader = loader(36, "bbbb")
    assert new.resume("", auto=True) and new.state.epoch == 1
    log = open(os.path.join(out, "log_rank0.txt")).read()
    assert log.count("the training data changed since checkpoint") == 1
    assert "listed_videos 32 -> 36, plan aaaa -> bbbb): epoch 2 on are planned" in log
    for t in (old, same, new):
        t.metrics.close()


def test_an_end_of_epoch_resume_with_another_batch_size_does_not_say_the_data_changed(tmp_path):
    """The epoch plan's digest counts the batch size and the world size: a run resumed on another number of
    processes warned that its training data had changed, sending the user to check a list nobody had touched."""
    from types import SimpleNamespace

    out = str(tmp_path)

    def loader(batch_size: int, videos: int, plan: str):
        return SimpleNamespace(index=[None] * videos, batch_size=batch_size, plan_fingerprint=lambda: plan)

    old = _tiny_trainer(out, num_classes=4)
    old.train_loader = loader(2, 32, "aaaa")
    old.state.epoch, old.state.global_step = 0, 5
    old.checkpointer.save(old.state_dict(epoch_complete=True))
    same_list = _tiny_trainer(out, num_classes=4)
    same_list.train_loader = loader(4, 32, "cccc")
    assert same_list.resume("", auto=True) and same_list.state.epoch == 1
    assert "the training data changed" not in open(os.path.join(out, "log_rank0.txt")).read()
    longer = _tiny_trainer(out, num_classes=4)
    longer.train_loader = loader(4, 36, "dddd")  # a list of another length is a change under any batch size
    assert longer.resume("", auto=True)
    assert "the training data changed since checkpoint" in open(os.path.join(out, "log_rank0.txt")).read()
    for t in (old, same_list, longer):
        t.metrics.close()


class _ListIndex:
    def __init__(self, videos):
        self.videos = videos

    def __len__(self):
        return len(self.videos)


class _ListLoader:
    """A loader over a training list file as read for a run (its index's rows), 8 clips a batch, with a position
    a mid-epoch checkpoint keeps."""

    batch_size = 8

    def __init__(self, list_file):
        from dali_pipelines.filelist import read_video_list

        self.index = _ListIndex(read_video_list(str(list_file), str(list_file.parent)))
        self.position = 0

    def plan_fingerprint(self):  # as the loader's: the usable rows, counted, not what they name
        return "rows-0-to-31"

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


@pytest.mark.parametrize("epoch_complete", [False, True])
def test_a_resume_on_a_list_rewritten_with_as_many_lines_says_the_data_changed(tmp_path, epoch_complete):
    """A training list rewritten in place (sorted otherwise, a video replaced) keeps its length and its plan's
    digest: a mid-epoch position went on over rows that now name other videos, an epoch checkpoint planned the
    next epochs from it, and neither said so (a list of another length restarts the epoch, or is warned of)."""
    out, lst = tmp_path / "out", tmp_path / "train.txt"
    lines = [f"videos/c{i % 4}/v{i}.mp4 {i % 4}" for i in range(32)]
    lst.write_text("\n".join(lines) + "\n")
    old = _tiny_trainer(str(out), num_classes=4)
    old.train_loader = _ListLoader(lst)
    old.state.epoch, old.state.step_in_epoch, old.state.global_step = 1, 2, 7
    old.train_loader.position = 2
    old.checkpointer.save(old.state_dict(epoch_complete=epoch_complete))
    same = _tiny_trainer(str(out), num_classes=4)
    same.train_loader = _ListLoader(lst)  # the same list: the position goes on
    assert same.resume("", auto=True) and same._loader_state == (None if epoch_complete else {"position": 2})
    lst.write_text("\n".join(lines[::-1]) + "\n")  # as many lines, in another order
    new = _tiny_trainer(str(out), num_classes=4)
    new.train_loader = _ListLoader(lst)
    assert new.resume("", auto=True)
    log = open(out / "log_rank0.txt").read()
    if epoch_complete:
        assert new.state.epoch == 2 and log.count("the training data changed since checkpoint") == 1, log
    else:  # the interrupted epoch trains again from its first step, on the list as it is now
        assert (new.state.epoch, new.state.step_in_epoch, new._loader_state) == (1, 0, None)
        assert "was saved mid-epoch with another data layout (list_digest " in log, log
    for t in (old, same, new):
        t.metrics.close()


class _PositionLoader:
    """``batches`` batches of 2 clips an epoch, with a position a checkpoint keeps; ``stop_before``: a scheduler's
    SIGTERM arrives while that batch (1-based) is trained; ``fail_at``: reading that batch fails (a crash)."""

    batch_size = 2

    def __init__(self, stop_before: int = 0, batches: int = 2, fail_at: int = 0):
        self.position, self.stop_before, self.batches, self.fail_at = 0, stop_before, batches, fail_at

    def set_epoch(self, epoch):
        self.position = 0

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]

    def __iter__(self):
        import signal

        gen = torch.Generator().manual_seed(0)
        batches = [{"video": torch.randn(2, 4, generator=gen), "label": torch.tensor([0, 1])}
                   for _ in range(self.batches)]
        while self.position < len(batches):
            if self.position + 1 == self.fail_at:
                raise OSError(f"batch {self.fail_at} could not be read")
            self.position += 1
            if self.position == self.stop_before:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batches[self.position - 1]


class _ConstantSchedule:  # the LR schedule's interface (timm's)
    def step_update(self, step):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _one_epoch_trainer(out: str, loader: _PositionLoader, print_freq: int = 10):
    """A tiny trainer of one epoch of ``loader.batches`` steps on ``loader`` (the same initial weights every time),
    evaluated without data; loader_stats must be patched."""
    torch.manual_seed(0)
    t = _tiny_trainer(out, num_classes=2, print_freq=print_freq)
    t.scheduler = _ConstantSchedule()
    t.opts.epochs, t.opts.steps_per_epoch, t.opts.final_test = 1, loader.batches, False
    t.train_loader = loader
    t.run_eval = lambda loader, split, epoch, checkpoint=None: {"split": split, "top1": 50.0}
    return t


def _stopped_then_resumed(out: str, stop_before: int):
    """Train the epoch, stopped by SIGTERM during batch ``stop_before``, then resumed to its end."""
    from engine.preemption import Preempted

    stopped = _one_epoch_trainer(out, _PositionLoader(stop_before=stop_before))
    with pytest.raises(Preempted):
        stopped.fit()
    stopped.metrics.close()
    resumed = _one_epoch_trainer(out, _PositionLoader())
    assert resumed.resume(None, auto=True)
    resumed.fit()
    resumed.metrics.summary({})
    resumed.metrics.close()
    return resumed


def test_a_stop_at_the_last_step_resumed_keeps_the_runs_last_loss_in_its_summary(tmp_path, monkeypatch):
    """A stop signal during the last epoch's last step saves that step mid-epoch; the attempt that resumes from it
    trains no step. Its summary.json must still report the run's last loss (the attempt had none of its own: it
    was null), and its log must not say the epoch's mean loss was nan."""
    import json

    import engine.train_loop as train_loop

    monkeypatch.setattr(train_loop, "loader_stats", lambda *a: {})
    resumed = _stopped_then_resumed(str(tmp_path), stop_before=2)
    assert resumed.state.global_step == 2
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last_loss = [x for x in lines if x.get("kind") == "train"][-1]["loss"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["optimizer_steps"] == 2 and summary["last_loss"] == pytest.approx(last_loss)
    log = (tmp_path / "log_rank0.txt").read_text()
    assert "mean loss nan" not in log and "epoch 1/1 done: mean loss " in log


@pytest.mark.parametrize("end", ["stop", "crash"])
def test_a_run_resumed_inside_a_log_window_logs_each_step_in_one_line(tmp_path, monkeypatch, end):
    """PRINT_FREQ 4 over a 4-step epoch, ended after step 3 by a stop signal (its line of steps 1 to 3, then its
    checkpoint) or by a crash reading batch 4 right after step 3's SAVE_STEPS checkpoint (the crash's line of steps
    1 to 3). The resumed run's line at step 4 covers steps 1 to 4, as the uninterrupted run's: the line at step 3
    stayed beside it, and plots and step counts took steps 1 to 3 twice."""
    import engine.train_loop as train_loop

    monkeypatch.setattr(train_loop, "loader_stats", lambda *a: {})
    whole = _one_epoch_trainer(str(tmp_path / "whole"), _PositionLoader(batches=4), print_freq=4)
    whole.fit()
    whole.metrics.close()
    out = str(tmp_path / end)
    ended = _one_epoch_trainer(out, _PositionLoader(batches=4, stop_before=3 * (end == "stop"),
                                                    fail_at=4 * (end == "crash")), print_freq=4)
    ended.opts.save_steps = 3
    with pytest.raises(Exception) as stopped:
        ended.fit()
    assert type(stopped.value).__name__ == ("Preempted" if end == "stop" else "OSError")
    ended.metrics.close()

    def train_lines(run):
        lines = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [(x["step"], round(x["loss"], 6)) for x in lines if x["kind"] == "train"]

    assert [step for step, _ in train_lines(end)] == [3]  # what the ended attempt logged
    # resumed on a list of another length: the epoch is trained again from its first step, no line goes on from
    # steps 1 to 3, and the line that logged them stays
    shutil.copytree(out, tmp_path / "relisted")
    relisted = _one_epoch_trainer(str(tmp_path / "relisted"), _PositionLoader(batches=5), print_freq=4)
    assert relisted.resume(None, auto=True)
    relisted.fit()
    relisted.metrics.close()
    assert [step for step, _ in train_lines("relisted")] == [3, 7, 8]
    resumed = _one_epoch_trainer(out, _PositionLoader(batches=4), print_freq=4)
    assert resumed.resume(None, auto=True)
    resumed.fit()
    resumed.metrics.close()
    assert train_lines(end) == train_lines("whole") and len(train_lines("whole")) == 1
    assert "metrics.jsonl: dropped 1 line written after step 3" in (tmp_path / end / "log_rank0.txt").read_text()


def test_an_epoch_resumed_mid_way_reports_the_mean_loss_of_all_its_steps(tmp_path, monkeypatch):
    """An epoch stopped after its first step and resumed reported the mean loss of the steps since the resume only
    (here: the second step's loss alone). The epoch's loss sum and step count ride in the checkpoint, so the line
    equals an uninterrupted run's."""
    import re

    import engine.train_loop as train_loop

    monkeypatch.setattr(train_loop, "loader_stats", lambda *a: {})
    whole = _one_epoch_trainer(str(tmp_path / "whole"), _PositionLoader())
    whole.fit()
    whole.metrics.close()
    _stopped_then_resumed(str(tmp_path / "resumed"), stop_before=1)

    def epoch_line(run):
        found = re.findall(r"epoch 1/1 done: (.*)", (tmp_path / run / "log_rank0.txt").read_text())
        assert len(found) == 1, found
        return found[0]

    assert re.fullmatch(r"mean loss \d+\.\d{4}", epoch_line("whole"))
    assert epoch_line("resumed") == epoch_line("whole")


def test_a_best_pth_newer_than_the_resumed_checkpoint_stays_the_best_to_beat(tmp_path, monkeypatch):
    """best.pth is written before the epoch checkpoint that records its score. An attempt killed between the two
    leaves a best.pth (80 %, epoch 2) newer than the checkpoint the next attempt resumes (epoch 1, best 50 %). When
    the rerun of epoch 2 scores lower (GPU nondeterminism, another number of processes), the summary said best 50 %
    at epoch 1 while best.pth held another model, the one that scored 80 %; epoch 1's weights were gone. The file's
    score now stays the best to beat, so that best_top1 and best_epoch describe the file."""
    import engine.train_loop as train_loop

    class Killed(Exception):
        pass

    def train_one_epoch(*args, **kwargs):
        state = args[5]
        state.global_step += 5
        state.step_in_epoch = 5
        return {"loss": 1.0, "steps": 5}

    def attempt(scores: list[float], killed_at_epoch: int = 0):
        t = _tiny_trainer(str(tmp_path), num_classes=4)
        t.opts.final_test = False
        t.train_loader = type("Loader", (), {"set_epoch": lambda self, epoch: None})()
        evals = iter(scores)
        t.run_eval = lambda loader, split, epoch, checkpoint=None: {"split": split, "top1": next(evals)}
        save = t.checkpointer.save

        def save_or_die(state):
            if state["epoch"] + 1 == killed_at_epoch:  # after best.pth, before the epoch's checkpoint
                raise Killed
            return save(state)

        monkeypatch.setattr(t.checkpointer, "save", save_or_die)
        return t

    monkeypatch.setattr(train_loop, "train_one_epoch", train_one_epoch)
    monkeypatch.setattr(train_loop, "loader_stats", lambda *a: {})
    first = attempt([50.0, 80.0], killed_at_epoch=2)
    with pytest.raises(Killed):
        first.fit()
    first.metrics.close()
    assert torch.load(tmp_path / "best.pth", weights_only=True)["top1"] == 80.0
    second = attempt([40.0, 45.0])
    assert second.resume(None, auto=True) and second.state.global_step == 5  # ckpt_epoch_1.pth
    result = second.fit()
    second.metrics.close()
    best = torch.load(tmp_path / "best.pth", weights_only=True)
    assert (result["best_top1"], result["best_epoch"]) == (best["top1"], best["epoch"] + 1) == (80.0, 2)
    assert "best.pth (top-1 80.00 % at epoch 2, step 10) is newer than" in (tmp_path / "log_rank0.txt").read_text()


def test_an_epoch_resumed_from_a_checkpoint_without_loss_totals_says_how_many_steps_its_mean_covers(tmp_path,
                                                                                                    monkeypatch):
    """A checkpoint written before the epoch's loss totals were saved: the resumed epoch's mean covers the steps
    since the resume only, and the line says so instead of passing it off as the epoch's."""
    import engine.train_loop as train_loop
    from engine.preemption import Preempted

    monkeypatch.setattr(train_loop, "loader_stats", lambda *a: {})
    stopped = _one_epoch_trainer(str(tmp_path), _PositionLoader(stop_before=1))
    with pytest.raises(Preempted):
        stopped.fit()
    stopped.metrics.close()
    path = stopped.state.last_checkpoint
    ckpt = torch.load(path, weights_only=False)
    for key in ("epoch_loss_sum", "epoch_loss_steps"):
        del ckpt["train_state"][key]
    save_atomic(ckpt, path)
    resumed = _one_epoch_trainer(str(tmp_path), _PositionLoader())
    assert resumed.resume(None, auto=True)
    resumed.fit()
    resumed.metrics.close()
    log = (tmp_path / "log_rank0.txt").read_text()
    assert "epoch 1/1 done: mean loss " in log and " over 1 of its 2 steps" in log


def test_resume_advises_pretrained_only_for_weights_without_a_training_state(tmp_path):
    """--resume of random bytes, a text file or a cut-short archive was told to use --pretrained, as if it held
    weights: its error says what the file is, and only a file of weights (a state dict, a safetensors file) is
    pointed to --pretrained."""
    from safetensors.torch import save_file

    from engine.checkpoint_io import load_resumable
    from tests.test_checkpoint import GARBAGE

    tip = "use --pretrained for weights-only"
    whole = tmp_path / "whole.pth"
    save_atomic({"model": {"w": torch.ones(64)}, "epoch": 0}, str(whole))
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    bad = {name: reason for name, (data, reason) in GARBAGE.items() if not (tmp_path / name).write_bytes(data)}
    bad["cut.pth"] = "cut short: "
    for name, reason in bad.items():
        with pytest.raises(CheckpointError) as err:
            load_resumable(str(tmp_path / name))
        assert reason in str(err.value) and tip not in str(err.value), str(err.value)
    torch.save({"blocks.0.w": torch.ones(4), "head.weight": torch.ones(2, 4)}, tmp_path / "state_dict.pth")
    save_file({"head.weight": torch.ones(2, 4)}, str(tmp_path / "released.bin"))
    for name, what in [("state_dict.pth", "lacks model, optimizer"), ("released.bin", "is a safetensors file")]:
        with pytest.raises(CheckpointError) as err:
            load_resumable(str(tmp_path / name))
        assert what in str(err.value) and str(err.value).endswith(f"{tip} (e.g. released) files"), str(err.value)


class _OverflowAt:
    """A loss whose fp16-scaled gradients overflow on the chosen calls (1-based): the loss itself stays finite
    (x 1e35), the loss scaler's x 65536 makes the gradients inf, as fp16 gradients past their range are."""

    def __init__(self, calls):
        self.calls, self.n = set(calls), 0

    def __call__(self, logits, target):
        self.n += 1
        loss = torch.nn.functional.cross_entropy(logits, target)
        return loss * 1e35 if self.n in self.calls else loss


@pytest.mark.parametrize("fused", [False, True])  # fused AdamW takes the scaler's inf check into its kernel
def test_a_step_the_loss_scaler_skips_is_a_skipped_step(tmp_path, fused):
    """fp16's GradScaler skips optimizer.step() when the scaled gradients hold inf/NaN (and lowers its scale). The
    loop treated such a step as taken: the EMA averaged the un-updated weights in (and its first update, the copy,
    went to a step that changed nothing), the step's loss entered the line and the epoch's mean, and skipped_steps
    did not count it. Steps 1 and 3 of 4 overflow here."""
    import json

    from timm.utils import ModelEmaV3

    from engine.distributed import DistContext
    from engine.metrics import MetricLogger
    from engine.train_epoch import TrainOptions, TrainState, train_one_epoch

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    ema = ModelEmaV3(model, decay=0.5)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True) if fused else \
        torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    w0 = model.weight.detach().clone()
    metrics = MetricLogger(str(tmp_path), print_freq=1, tensorboard=False, nvml=False, progress_bar=False)
    weights, averages, log_step = [], [], metrics.log_step

    def logged(*a, **k):
        weights.append(model.weight.detach().clone())
        averages.append(ema.module.weight.detach().clone())
        return log_step(*a, **k)

    metrics.log_step = logged
    batches = [{"video": torch.randn(2, 4), "label": torch.tensor([0, 2])} for _ in range(4)]
    criterion, state = _OverflowAt({1, 3}), TrainState()
    try:
        stats = train_one_epoch(model, batches, opt, _ConstantSchedule(), criterion, state,
                                TrainOptions(epochs=1, steps_per_epoch=4), metrics, DistContext(), scaler=scaler,
                                ema=ema)
    finally:
        metrics.close()
    w1, w2, w3, w4 = weights
    assert torch.equal(w1, w0) and torch.equal(w3, w2)  # no update on the skipped steps
    assert not torch.equal(w2, w1) and not torch.equal(w4, w3)  # the others train
    assert scaler.get_scale() == 65536.0 / 4  # lowered twice, as the scaler does
    # the first update (step 2) is copied, the skipped step 3 leaves the average alone
    assert torch.equal(averages[1], w2) and torch.equal(averages[2], w2)
    torch.testing.assert_close(averages[3], 0.5 * w2 + 0.5 * w4)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in lines if x["kind"] == "train"]
    assert [x["step"] for x in train] == [1, 2, 3, 4]
    assert [x["skipped_steps"] for x in train] == [1, 1, 2, 2]
    assert train[0]["loss"] is None and train[2]["loss"] is None
    assert state.skipped_steps == 2 and state.epoch_loss_steps == 2 and stats["steps"] == 2
    assert stats["loss"] == pytest.approx((train[1]["loss"] + train[3]["loss"]) / 2)
    assert stats["loss"] < 10


def test_a_run_resumed_after_a_step_the_loss_scaler_skipped_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    """fp16: the run's first step overflows and is skipped; a stop right after it and a resume give the weights,
    the EMA (its first update, step 2, copies: the skipped count rides in the checkpoint), the scale and the
    counts of the run that was not stopped, bit for bit."""
    import re

    import engine.train_loop as train_loop
    from engine.preemption import Preempted

    monkeypatch.setattr(train_loop, "loader_stats", lambda *a: {})

    def trainer(out, loader, overflow):
        torch.manual_seed(0)
        t = _tiny_trainer(out, num_classes=2, ema=True)
        t.scheduler, t.criterion, t.scaler = _ConstantSchedule(), _OverflowAt(overflow), torch.amp.GradScaler("cpu")
        t.opts.epochs, t.opts.steps_per_epoch, t.opts.final_test = 2, 2, False
        t.train_loader = loader
        t.run_eval = lambda loader, split, epoch, checkpoint=None: {"split": split, "top1": 50.0}
        return t

    whole = trainer(str(tmp_path / "whole"), _PositionLoader(), {1})
    steps = []
    ema_update = whole.ema.update
    whole.ema.update = lambda model, step: (steps.append(step), ema_update(model, step=step))
    whole.fit()
    whole.metrics.close()
    assert steps == [1, 2, 3]  # the updates made: step 1 of the run was skipped

    stopped = trainer(str(tmp_path / "resumed"), _PositionLoader(stop_before=1), {1})
    with pytest.raises(Preempted):
        stopped.fit()
    stopped.metrics.close()
    assert stopped.state.global_step == 1 and stopped.state.skipped_steps == 1
    resumed = trainer(str(tmp_path / "resumed"), _PositionLoader(), set())  # the overflow was before the stop
    assert resumed.resume(None, auto=True)
    resumed.fit()
    resumed.metrics.close()
    for a, b in ((whole.model, resumed.model), (whole.ema.module, resumed.ema.module)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name
    assert whole.scaler.get_scale() == resumed.scaler.get_scale() == 32768.0
    assert whole.state.skipped_steps == resumed.state.skipped_steps == 1
    assert whole.state.global_step == resumed.state.global_step == 4

    def epoch_lines(run):
        return re.findall(r"epoch \d/2 done: (.*)", (tmp_path / run / "log_rank0.txt").read_text())

    assert epoch_lines("resumed") == epoch_lines("whole")
    assert re.fullmatch(r"mean loss \d\.\d{4} over 1 of its 2 steps", epoch_lines("whole")[0])


def test_resume_of_a_pickled_model_says_how_to_save_its_weights_as_pretrained_does(tmp_path):
    """torch.save(model) given to --resume got the generic "refused: it holds pickled Python objects" line, while
    MODEL.PRETRAINED said what the file is and how to save its weights: both say the latter, and --resume adds that
    those weights go to --pretrained."""
    from engine.checkpoint_io import load_resumable
    from models.checkpoint import read_state_dict

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.GELU())
    for name, obj in (("whole.pth", model), ("in_dict.pth", {**_state(4), "model": model})):
        path = tmp_path / name
        torch.save(obj, path)
        with pytest.raises(CheckpointError) as pretrained:
            read_state_dict(path)
        with pytest.raises(CheckpointError) as resumed:
            load_resumable(str(path))
        assert str(resumed.value) == (
            f"{pretrained.value}; --resume continues a training run from one of its checkpoints: use --pretrained "
            "for weights-only (e.g. released) files")
        assert str(pretrained.value).startswith(f"{path}: a pickled model object (torch.save(model): it holds "
                                                 "torch.nn.modules."), str(pretrained.value)
