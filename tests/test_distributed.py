"""Two CPU processes (gloo): what every rank must agree on before training (the EMA copy's starting weights) and
the collectives that carry a rank-0 write's failure or a resume's choice to every rank."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from engine import distributed as dist_utils
from engine.checkpointing import CheckpointError
from engine.distributed import DistContext


def _ema_checksums(rank: int, world: int, init_file: str, out: dict) -> None:
    from engine.runner import models_for_training

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(1000 + rank)  # as the run seeds SEED + rank: randomly initialised weights differ
        model = torch.nn.Linear(8, 4)
        ctx = DistContext(rank=rank, world_size=world)
        _, ema = models_for_training(model, ctx, SimpleNamespace(EMA=True, EMA_DECAY=0.99, COMPILE=False))
        sums = dist_utils.all_gather_objects(float(sum(p.sum() for p in ema.module.parameters())), ctx)
        if rank == 0:
            out["sums"] = sums
        del model, ema
        dist.barrier()  # both ranks leave together, as in the data-wait test below (a rank whose peer had already
    finally:  # closed the group's connections was once aborted at exit under heavy load)
        dist.destroy_process_group()


def _manager():
    """A manager whose server process is spawned: forking the test process, which runs threads (DALI's, torch's),
    can deadlock the child (Python 3.12 warns of it), and a spawned one starts from nothing."""
    return mp.get_context("spawn").Manager()


def test_every_rank_starts_its_ema_copy_from_the_same_weights(tmp_path):
    with _manager() as manager:
        out = manager.dict()
        mp.spawn(_ema_checksums, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
        sums = out["sums"]
    assert len(sums) == 2 and sums[0] == sums[1]


def test_a_failed_write_on_rank_0_stops_the_other_ranks_too(tmp_path, monkeypatch):
    from tests.test_checkpointing import _tiny_trainer

    trainer = _tiny_trainer(str(tmp_path), num_classes=4)
    trainer.ctx = DistContext(rank=1, world_size=2)  # this process plays rank 1, which writes nothing
    monkeypatch.setattr(dist_utils, "all_gather_objects", lambda obj, ctx: ["no space left on the device", obj])
    with pytest.raises(CheckpointError, match="rank 0 could not write a checkpoint: no space left on the device"):
        trainer._written_by_rank0(lambda: str(tmp_path / "ckpt_epoch_1.pth"))
    monkeypatch.setattr(dist_utils, "all_gather_objects", lambda obj, ctx: [None, obj])
    assert trainer._written_by_rank0(lambda: "named") == "named"
    trainer.metrics.close()


def test_ranks_that_would_resume_different_checkpoints_stop(tmp_path, monkeypatch):
    from tests.test_checkpointing import _tiny_trainer

    trainer = _tiny_trainer(str(tmp_path), num_classes=4)
    trainer.state.epoch, trainer.state.global_step = 0, 5
    trainer.checkpointer.save(trainer.state_dict(epoch_complete=True))
    # the other rank's node saw no checkpoint in OUTPUT (a node-local folder)
    monkeypatch.setattr(dist_utils, "all_gather_objects", lambda obj, ctx: [obj, None])
    with pytest.raises(CheckpointError, match="resumed from different checkpoints"):
        _tiny_trainer(str(tmp_path), num_classes=4).resume("", auto=True)
    trainer.metrics.close()


def test_each_process_computes_on_the_gpu_it_can_see(monkeypatch):
    # torchrun: every process of a node sees all GPUs and takes its local rank's.
    assert [dist_utils.gpu_index(r, 8) for r in range(8)] == list(range(8))
    # a scheduler that gives every task its own GPU (CUDA_VISIBLE_DEVICES=<one>): LOCAL_RANK still counts the tasks
    assert dist_utils.gpu_index(3, 1) == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ValueError, match=r"^LOCAL_RANK=2 but this process sees 2 GPUs \(CUDA_VISIBLE_DEVICES=0,1\): "
                                         r"start at most 2 processes per node \(torchrun --nproc_per_node 2\)"):
        dist_utils.gpu_index(2, 2)
    # init_from_env selects that device (set_device recorded: no GPU here)
    chosen = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "1")
    ctx = dist_utils.init_from_env("cuda")
    assert chosen == [0] and ctx.device == torch.device("cuda", 0) and ctx.device_id == 0 and ctx.local_rank == 3


def _index_on_one_node(rank: int, world: int, init_file: str, root: str, train: str, val: str, out: dict) -> None:
    import wiring
    from tests.video_fixtures import small_cfg

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    stats, real_stat = [], os.stat

    def counting_stat(path, *args, **kwargs):
        if os.fsdecode(path).startswith(os.path.join(root, "videos")):  # not the lists, caches and locks
            stats.append(os.fsdecode(path))
        return real_stat(path, *args, **kwargs)

    os.stat = counting_stat
    try:
        ctx = DistContext(rank=rank, world_size=world, local_rank=rank)
        try:
            built = wiring.build_indexes(small_cfg(root, train, val), ctx, ["train", "val"])
        except Exception as e:  # noqa: BLE001 - what each rank raised is the result
            out[rank] = f"{type(e).__name__}: {e}"
            return
        out[rank] = {split: (ix.good_rows, sorted(ix.bad), ix.probed) for split, ix in built.items()}
        out[f"stats{rank}"] = len(stats)
    finally:
        os.stat = real_stat
        dist.destroy_process_group()


def test_one_rank_per_node_checks_the_listed_files_the_others_trust_its_index(tmp_path):
    from tests.video_fixtures import make_clip_dataset

    root = str(tmp_path / "data")
    train = make_clip_dataset(root, [12, 14, 16, 18], list_name="train.txt")
    with open(train) as f:
        first_two = f.readlines()[:2]
    val = os.path.join(root, "val.txt")
    with open(val, "w") as f:
        f.writelines(first_two)
    with open(train, "a") as f:
        f.write("videos/gone.webm 1\n")  # a missing file: bad on both ranks
    with _manager() as manager:
        out = manager.dict()
        mp.spawn(_index_on_one_node, args=(2, str(tmp_path / "init"), root, train, val, out), nprocs=2, join=True)
        out = dict(out)
    # the same index on both ranks: 4 good rows, the missing file bad; rank 0 probed the 4 videos of each list
    assert out[0]["train"] == ([0, 1, 2, 3], [4], 4) and out[0]["val"] == ([0, 1], [], 2)
    assert out[1]["train"][:2] == out[0]["train"][:2] and out[1]["val"][:2] == out[0]["val"][:2]
    assert out[1]["train"][2] == out[1]["val"][2] == 0  # rank 1 probed nothing
    # rank 0 stat'ed every listed file (7 rows, and the probes'); rank 1 only the missing one, which a cache
    # cannot record
    assert out["stats0"] >= 7 and out["stats1"] == 1


def test_a_list_that_fails_on_the_first_rank_fails_on_every_rank_with_its_error(tmp_path):
    from tests.video_fixtures import make_clip_dataset

    root = str(tmp_path / "data")
    val = make_clip_dataset(root, [12, 13], list_name="val.txt")
    train = tmp_path / "train.txt"
    train.write_text("videos/clip_1.webm 1\nvideos/clip_1.webm seven\n")
    with _manager() as manager:
        out = manager.dict()
        mp.spawn(_index_on_one_node, args=(2, str(tmp_path / "init"), root, str(train), val, out), nprocs=2,
                 join=True)
        out = dict(out)
    assert out[0] == out[1] and out[0].startswith("DataListError: ") and "train.txt" in out[0]
    assert "train.txt:2: label 'seven' is not an integer" in out[0]


def test_ddp_does_not_sync_buffers_in_forward_and_says_nothing_about_it(tmp_path, recwarn):
    """As the original (broadcast_buffers=False), without the FutureWarning newer torch prints for that name on
    every rank of every run."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        model = torch.nn.BatchNorm1d(4)  # a module with buffers
        ddp = dist_utils.wrap_ddp(model, SimpleNamespace(distributed=True, device=torch.device("cpu")))
        ddp(torch.randn(3, 4)).sum().backward()
        assert not ddp.will_sync_module_buffers()
    finally:
        dist.destroy_process_group()
    assert not [w for w in recwarn if "buffers" in str(w.message)], [str(w.message) for w in recwarn]


def _train_with_a_slow_loader_on_rank_1(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import time

    from engine.metrics import MetricLogger
    from engine.train_epoch import TrainOptions, TrainState, train_one_epoch

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        torch.set_num_threads(1)

        def batches():
            for _ in range(4):
                if rank == 1:
                    time.sleep(0.3)  # its loader lags: rank 0 waits for it in the step's all-reduce
                yield {"video": torch.randn(2, 8), "label": torch.randint(0, 3, (2,))}

        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 3))
        metrics = MetricLogger(out_dir, rank, world, print_freq=4, tensorboard=False, nvml=False, progress_bar=False)
        scheduler = SimpleNamespace(step_update=lambda step: None)
        try:
            train_one_epoch(model, batches(), torch.optim.SGD(model.parameters(), lr=0.1), scheduler,
                            torch.nn.CrossEntropyLoss(), TrainState(), TrainOptions(epochs=1, steps_per_epoch=4),
                            metrics, DistContext(rank=rank, world_size=world))
        finally:
            metrics.close()
        del model  # DDP's reducer holds the group: gone before it, and both ranks leave together (a rank whose
        dist.barrier()  # peer had already closed the group's connections was once aborted at exit)
    finally:
        dist.destroy_process_group()
    # Under load a rank was still aborted at interpreter exit ("terminate called without an active exception":
    # a gloo thread's destructor), after its work was done and written: leave without running those destructors.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def test_the_logged_data_wait_is_the_slowest_ranks(tmp_path):
    """Rank 0 alone writes metrics.jsonl; a rank whose loader lags shows on rank 0 as time in the all-reduce, not as
    waiting for data: the logged wait is the rank that waited longest at each step (0.3 s of a ~0.3 s step)."""
    import json

    mp.spawn(_train_with_a_slow_loader_on_rank_1, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
             join=True)
    lines = [json.loads(text) for text in open(tmp_path / "metrics.jsonl")]
    train = [line for line in lines if line["kind"] == "train"]
    assert len(train) == 1 and train[0]["step"] == 4
    assert train[0]["data_wait_pct"] > 50, train[0]  # rank 0's own wait, logged before, was about 0 %


@pytest.mark.parametrize("backend, graceful, expected", [
    ("nccl", True, ["stop", "destroy"]), ("nccl", False, ["stop failed", "abort"]),
    ("gloo", True, ["stop", "destroy"]), ("gloo", False, ["stop", "destroy"]),
])
def test_a_process_ending_on_a_failure_aborts_nccl_instead_of_destroying_it(monkeypatch, backend, graceful,
                                                                            expected):
    """NCCL's destroy waits for the node's other ranks, which hangs when one has died or is inside a collective:
    a process that ends on a failure aborts its NCCL group and tells the peers through the liveness check (NCCL
    would not); gloo's destroy is local and stays, and its peers' collectives fail at once."""
    calls = []
    monkeypatch.setattr(dist_utils.liveness, "stop",
                        lambda failed=False: calls.append("stop failed" if failed else "stop"))
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: backend)
    monkeypatch.setattr(dist, "destroy_process_group", lambda group=None: calls.append("destroy"))
    monkeypatch.setattr(dist.distributed_c10d, "_abort_process_group", lambda group=None: calls.append("abort"),
                        raising=False)
    dist_utils.shutdown(graceful=graceful)
    assert calls == expected


def test_the_local_rank_comes_from_the_launcher_or_the_error_says_how(monkeypatch):
    for name in dist_utils.LOCAL_RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert dist_utils.local_rank_from_env(1, 8) == 0  # a single process
    assert dist_utils.local_rank_from_env(4, 1) == 0  # one GPU per process: nothing to choose
    with pytest.raises(ValueError, match=r"WORLD_SIZE=4 but none of LOCAL_RANK, SLURM_LOCALID, "
                                         r"OMPI_COMM_WORLD_LOCAL_RANK is set, and this process sees 8 GPUs"):
        dist_utils.local_rank_from_env(4, 8)  # every process would take GPU 0
    monkeypatch.setenv("SLURM_LOCALID", "5")  # srun without torchrun
    assert dist_utils.local_rank_from_env(16, 8) == 5
    assert dist_utils.local_rank_from_env(1, 8) == 0  # a single process ignores the scheduler's task numbering
    monkeypatch.setenv("LOCAL_RANK", "2")  # torchrun's wins
    assert dist_utils.local_rank_from_env(16, 8) == 2 and dist_utils.local_rank_from_env(1, 8) == 2


@pytest.mark.parametrize("name, world", [("LOCAL_RANK", 1), ("SLURM_LOCALID", 2)])
def test_a_negative_local_rank_is_named_not_taken_for_a_device(monkeypatch, name, world):
    """LOCAL_RANK=-1 (or --local_rank -1, the "no launcher" value of many training scripts) was taken as the local
    rank: a GPU run then ended in torch's 'Device index must not be negative' traceback, naming no variable."""
    for var in dist_utils.LOCAL_RANK_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(name, "-1")
    with pytest.raises(ValueError) as refused:
        dist_utils.local_rank_from_env(world, 8)
    assert str(refused.value) == (f"environment variable {name}='-1' must be at least 0 (the process's rank within "
                                  "its node; unset it for a single process)")


def test_ranks_that_would_plan_different_epochs_stop_before_training(monkeypatch):
    """A rank whose index left out another video plans other epochs: DDP would pair its steps with the others'
    and hang (fewer steps) or train clips twice (as many): every rank stops with the same line first."""
    from configs import ConfigError
    from engine import runner

    ctx = DistContext(rank=1, world_size=3)
    monkeypatch.setattr(runner, "all_gather_objects", lambda obj, ctx: [(4, "a1b2"), obj, (4, "a1b2")])
    runner.check_ranks_plan_alike(ctx, "train.txt", 4, "a1b2")  # all alike
    with pytest.raises(ConfigError, match=r"^train\.txt: the ranks disagree on the training plan \(rank 0: 4 steps "
                                          r"per epoch, usable videos a1b2; rank 1: 3 steps per epoch, usable videos "
                                          r"ffff; rank 2: .*run tools/verify_data\.py on the list"):
        runner.check_ranks_plan_alike(ctx, "train.txt", 3, "ffff")


def _evaluate_with_a_slow_rank_1(rank: int, world: int, init_file: str, out: dict) -> None:
    import time

    from engine.evaluate import evaluate

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)

        class Flat(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(8, 3)

            def forward(self, x):
                return self.fc(x.flatten(1))

        def batches():
            for i in range(2):  # rank r takes videos r, r + 2, ...: 4 videos in all
                if rank == 1:
                    time.sleep(0.5)  # its decoding lags: the evaluation lasts until it is done
                yield {"video": torch.randn(1, 1, 8), "label": torch.tensor([0]),
                       "index": torch.tensor([rank + 2 * i])}

        result = evaluate(Flat(), batches(), DistContext(rank=rank, world_size=world))
        out[rank] = (result["num_videos"], result["time_s"], result["videos_per_sec"])
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_the_evaluation_time_and_rate_are_the_slowest_ranks():
    """The eval line's time_s and videos_per_sec count every rank's videos over the time of the rank that finished
    last, not over rank 0's own time (rank 0, done in no time, reported several times the real rate)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, _manager() as manager:
        out = manager.dict()
        mp.spawn(_evaluate_with_a_slow_rank_1, args=(2, os.path.join(tmp, "init"), out), nprocs=2, join=True)
        out = dict(out)
    for rank in (0, 1):
        num_videos, time_s, rate = out[rank]
        assert num_videos == 4 and time_s >= 1.0, out  # rank 1 took 2 x 0.5 s
        assert rate == pytest.approx(4 / time_s) and rate <= 4.0


class _ShareLoader:
    """Rank ``rank``'s share (rows r::2) of a 6-video list: row 5 was bad when the list was indexed (every rank's
    index says so), and rank 1 quarantines row 3 while decoding it (only rank 1's index knows)."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        entries = [SimpleNamespace(row=r, rel_path=f"v{r}.mp4", path=f"/data/v{r}.mp4", label=r % 2,
                                   line_no=r + 1) for r in range(6)]
        self.index = SimpleNamespace(entries=entries, bad={5: "not a video"})

    def __iter__(self):
        for row in range(self.rank, 6, 2):
            if row == 3:
                self.index.bad[3] = "truncated: 12 frames readable"
                continue
            if row in self.index.bad:
                continue
            yield {"video": torch.zeros(1, 1, 1, 3, 2, 2), "label": torch.tensor([row % 2]),
                   "index": torch.tensor([row])}


def _evaluate_shares(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from engine.evaluate import evaluate_and_log
    from engine.metrics import MetricLogger

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ctx = DistContext(rank=rank, world_size=world)
        metrics = MetricLogger(out_dir, rank=rank, world_size=world, tensorboard=False, nvml=False, progress_bar=False)
        try:
            evaluate_and_log(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)), _ShareLoader(rank),
                             ctx, metrics, split="val", num_classes=2)
        finally:
            metrics.close()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_rank_0_lists_the_videos_another_rank_could_not_read(tmp_path):
    """The predictions file has a row for every listed video: one another rank quarantined while decoding comes
    with the reason that rank's index recorded (gathered), and the accuracy counts the 4 scored videos only."""
    import csv
    import json

    mp.spawn(_evaluate_shares, args=(2, str(tmp_path / "init"), str(tmp_path / "run")), nprocs=2, join=True)
    with open(tmp_path / "run" / "predictions_val.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["index"], r["status"], r["error"]) for r in rows] == [
        ("0", "ok", ""), ("1", "ok", ""), ("2", "ok", ""), ("3", "error", "truncated: 12 frames readable"),
        ("4", "ok", ""), ("5", "error", "not a video")]
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert line["num_videos"] == 4 and line["listed_videos"] == 6


@pytest.mark.parametrize("name, value, expected", [
    ("EVA_WAIT_TIMEOUT_MIN", "0", "EVA_WAIT_TIMEOUT_MIN='0' must be at least 1"),
    ("EVA_WAIT_TIMEOUT_MIN", "1.5", "EVA_WAIT_TIMEOUT_MIN='1.5' is not an integer"),
    ("EVA_HEARTBEAT_TIMEOUT_S", "-1", "EVA_HEARTBEAT_TIMEOUT_S='-1' must be at least 0"),
    ("EVA_RENDEZVOUS_TIMEOUT_S", "0", "EVA_RENDEZVOUS_TIMEOUT_S='0' must be at least 1"),
    ("EVA_WAIT_TIMEOUT_MIN", "10081", "EVA_WAIT_TIMEOUT_MIN='10081' must be at most 10080 (minutes, a week: a rank "
                                      "that waits that long for the others is stuck; unset it for the default, 120)"),
    ("EVA_HEARTBEAT_TIMEOUT_S", "604801", "EVA_HEARTBEAT_TIMEOUT_S='604801' must be at most 604800 (seconds, a week: "
                                          "a process silent that long is not coming back; 0 turns the check off)"),
    ("EVA_RENDEZVOUS_TIMEOUT_S", "1000000000000", "EVA_RENDEZVOUS_TIMEOUT_S='1000000000000' must be at most 604800 "
                                                  "(seconds, a week: processes of one run that have not met by then "
                                                  "are not coming; unset it for the default, 300)"),
])
def test_bad_wait_settings_are_refused_before_joining(monkeypatch, name, value, expected):
    """A 0-minute wait made every wait of the gloo group time out at once: rank 0 crashed with a traceback in
    new_group while the others waited for it. A bad value is refused before the process group is joined (no
    MASTER_ADDR is set here: joining would fail on that instead)."""
    for var in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "EVA_WAIT_TIMEOUT_MIN", "EVA_HEARTBEAT_TIMEOUT_S",
                "EVA_RENDEZVOUS_TIMEOUT_S"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as raised:
        dist_utils.init_from_env("cpu")
    assert f"environment variable {expected}" in str(raised.value)
    assert not dist.is_initialized()


def test_waits_of_a_week_are_taken_and_no_longer(monkeypatch):
    """A week is the most: a typo past it waited in silence for ever at the rendezvous, and was a traceback in the
    liveness check's thread (a wait past the clock's range) or in new_group (a timedelta past its range)."""
    monkeypatch.setenv("EVA_WAIT_TIMEOUT_MIN", "10080")
    monkeypatch.setenv("EVA_HEARTBEAT_TIMEOUT_S", "604800")
    monkeypatch.setenv("EVA_RENDEZVOUS_TIMEOUT_S", "604800")
    assert dist_utils.wait_settings() == (10080, 604800, 604800)
    monkeypatch.setenv("EVA_RENDEZVOUS_TIMEOUT_S", "604801")
    with pytest.raises(ValueError, match="EVA_RENDEZVOUS_TIMEOUT_S='604801' must be at most 604800 "):
        dist_utils.wait_settings()


@pytest.mark.parametrize("variable, alone", [("SLURM_STEP_NUM_TASKS", "srun --ntasks=1"),
                                             ("OMPI_COMM_WORLD_SIZE", "mpirun -np 1")])
def test_a_task_of_several_without_world_size_is_told_how_to_run_alone(monkeypatch, variable, alone):
    """The refusal said how to start several processes, but not how a single python run inside a step of several
    tasks (a shell of the step) goes on: it was stuck. The way it names does run one process."""
    for name in ("RANK", "WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "4")
    with pytest.raises(ValueError, match=f"one of {variable}=4 tasks") as refused:
        dist_utils.rank_and_world_size()
    assert f"to run one process alone, start it as a step of one task ({alone} python train.py ...) or set " \
           "WORLD_SIZE=1 for it" in str(refused.value) and "\n" not in str(refused.value)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert dist_utils.rank_and_world_size() == (0, 1)
    monkeypatch.setenv("WORLD_SIZE", "")
    monkeypatch.setenv(variable, "1")  # what the step of one task sets
    assert dist_utils.rank_and_world_size() == (0, 1)
