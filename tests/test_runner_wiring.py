"""The explicit wiring: one choice of initial weights per run, evaluation without a trainer."""

from __future__ import annotations

import json
import os
import signal

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from configs import load_config
from engine import start_weights
from engine.metrics import MetricLogger
from tests.gloo_ranks import gloo_rank

DEMO = "configs/demo.yaml"


def _cfg(tmp_path, *opts):
    return load_config(DEMO, ["OUTPUT", str(tmp_path / "out"), "LOG.TENSORBOARD", "False", *opts])


def test_weights_to_load_picks_exactly_one_source(tmp_path):
    metrics = MetricLogger(str(tmp_path / "log"), tensorboard=False, nvml=False, progress_bar=False)
    cfg = _cfg(tmp_path, "MODEL.PRETRAINED", "init.pth", "MODEL.PRETRAINED_MODE", "eva")
    choice = start_weights.weights_to_load(cfg, metrics)
    assert (choice.path, choice.mode, choice.checkpoint) == ("init.pth", "eva", False)
    assert choice.describe() == "MODEL.PRETRAINED = init.pth"
    # training that resumes (--resume, or a checkpoint in OUTPUT with TRAIN.AUTO_RESUME) does not read
    # MODEL.PRETRAINED: the checkpoint the trainer applies replaces every weight
    assert start_weights.weights_to_load(cfg, metrics, resume="ckpt.pth") is None
    # evaluation of a checkpoint loads only the checkpoint (the pretrained weights would be overwritten)
    test_cfg = _cfg(tmp_path, "MODEL.PRETRAINED", "init.pth", "TEST.ONLY_TEST", "True")
    choice = start_weights.weights_to_load(test_cfg, metrics, resume="ckpt.pth")
    assert (choice.path, choice.mode, choice.checkpoint) == ("ckpt.pth", "eva_k722", True)
    # nothing in OUTPUT: MODEL.PRETRAINED is what is evaluated
    assert start_weights.weights_to_load(test_cfg, metrics).path == "init.pth"
    nothing = _cfg(tmp_path, "TEST.ONLY_TEST", "True", "MODEL.PRETRAINED", "")
    assert start_weights.weights_to_load(nothing, metrics) is None
    # a checkpoint in OUTPUT: resumed with TRAIN.AUTO_RESUME (the demo's False starts over from MODEL.PRETRAINED)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ckpt_epoch_1.pth").write_bytes(b"")
    auto = _cfg(tmp_path, "MODEL.PRETRAINED", "init.pth", "TRAIN.AUTO_RESUME", "True")
    assert start_weights.weights_to_load(auto, metrics) is None
    assert start_weights.weights_to_load(_cfg(tmp_path, "MODEL.PRETRAINED", "init.pth"), metrics).path == "init.pth"
    metrics.close()


class _TwoVideoShare:
    """Rank ``rank``'s share (rows r, r + 2) of a 4-video test list, one video a batch."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def __iter__(self):
        for row in (self.rank, self.rank + 2):
            yield {"video": torch.full((1, 1, 4), float(row)), "label": torch.tensor([row % 2]),
                   "index": torch.tensor([row])}


class _SignalsInItsLastBatch(torch.nn.Linear):
    """Sends its process SIGTERM while it scores its second (last) batch."""

    def __init__(self) -> None:
        super().__init__(4, 2)
        self.batches = 0

    def forward(self, x):
        self.batches += 1
        if self.batches == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().forward(x.flatten(1))


def _only_test_with_rank_1_signalled(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from engine.distributed import DistContext
    from engine.runner import Run, only_test

    with gloo_rank(init_file, rank, world):
        cfg = load_config(DEMO, ["OUTPUT", out_dir, "LOG.TENSORBOARD", "False", "DATA.NUM_CLASSES", "2",
                                 "DATA.LABEL_LIST", "", "TRAIN.PRECISION", "fp32"])
        ctx = DistContext(rank=rank, world_size=world)
        metrics = MetricLogger(out_dir, rank=rank, world_size=world, tensorboard=False, nvml=False,
                               progress_bar=False)
        torch.manual_seed(0)
        model = _SignalsInItsLastBatch() if rank == 1 else torch.nn.Sequential(torch.nn.Flatten(),
                                                                              torch.nn.Linear(4, 2))
        only_test(Run(ctx=ctx, metrics=metrics, model=model, val_loader=_TwoVideoShare(rank), weights="w.pth",
                      weights_file="w.pth"), cfg)
        metrics.close()
        dist.barrier()


def test_only_test_says_a_stop_that_reached_another_rank_in_the_last_batch(tmp_path):
    """With two processes, a SIGTERM that reached only rank 1 during the last batch of an --only_test evaluation:
    rank 0, whose log is the console, said nothing of it (it read only its own flag), while the trainer's final test
    says it. Every rank agrees on it now: rank 0 says another process received it, rank 1 names its signal, and the
    results are written."""
    out = tmp_path / "out"
    mp.spawn(_only_test_with_rank_1_signalled, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    after = "after the last batch of the evaluation of w.pth: writing its results (nothing to resume)"
    logs = [[line.split(" ", 2)[-1] for line in (out / f"log_rank{r}.txt").read_text().splitlines()] for r in (0, 1)]
    assert f"another process received a stop signal {after}" in logs[0], logs[0]
    assert f"stop signal SIGTERM received {after}" in logs[1], logs[1]
    assert json.loads((out / "summary.json").read_text())["final_num_videos"] == 4


def test_mixing_that_blends_nothing_is_said_once_and_kept_in_the_runs_log(tmp_path_factory, tmp_path, capsys,
                                                                          monkeypatch):
    """The warning that CutMix blends nothing at TRAIN.BATCH_SIZE 1 was printed before the run's logger existed:
    on the console only, never in OUTPUT/log_rank0.txt, the record a run keeps of itself."""
    import train
    import wiring
    from tests.video_fixtures import synthetic_dataset

    def stop_after_the_log_opened(*args):
        raise ValueError("stopped here, the log open")

    data = synthetic_dataset(tmp_path_factory, "synth_blend", 1, 1, num_frames=8, size=(32, 32))
    monkeypatch.setattr(wiring, "_assemble_run", stop_after_the_log_opened)  # no index build, no training
    out = tmp_path / "out"
    rc = train.main(["--cfg", DEMO, "--batch-size", "1", "--opts", "DATA.ROOT", str(data), "DATA.TRAIN_FILE",
                     str(data / "train.txt"), "DATA.VAL_FILE", str(data / "val.txt"), "DATA.LABEL_LIST",
                     str(data / "labels.csv"), "AUG.CUTMIX", "1.0", "LOG.PROGRESS_BAR", "False",
                     "LOG.TENSORBOARD", "False", "OUTPUT", str(out)])
    captured = capsys.readouterr()
    assert rc == 2 and "error: stopped here, the log open" in captured.err, captured.err
    warning = ("WARNING: AUG.MIXUP 0.0 / AUG.CUTMIX 1.0 blend nothing at TRAIN.BATCH_SIZE 1: a clip is mixed with one "
               "of its own micro-batch, so every clip is its own partner and the run trains as without them; raise "
               "TRAIN.BATCH_SIZE, or set AUG.MIXUP 0 and AUG.CUTMIX 0 to say so")
    log = [line.split("] ", 1)[-1] for line in (out / "log_rank0.txt").read_text().splitlines()]
    assert log.count(warning) == 1, log
    assert (captured.out + captured.err).count("blend nothing") == 1 and warning in captured.out.splitlines()


def test_a_label_list_giving_one_name_to_two_classes_is_said_once_at_the_start(tmp_path_factory, tmp_path, capsys,
                                                                               monkeypatch):
    """A DATA.LABEL_LIST naming two classes alike was taken without a word: the predictions named both alike. The
    start warns once, naming each such name and its ids, in the run's log too; the dry run warns as well."""
    import train
    import wiring
    from tests.video_fixtures import synthetic_dataset

    def stop_after_the_log_opened(*args):
        raise ValueError("stopped here, the log open")

    data = synthetic_dataset(tmp_path_factory, "synth_names", 1, 1, num_frames=8, size=(32, 32))
    lines = (data / "labels.csv").read_text().splitlines()
    rows = [line.split(",", 1) for line in lines if line[:1].isdigit()]
    names = {int(i): n for i, n in rows}
    names[3] = names[1]
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"{i},{n}\n" for i, n in sorted(names.items())))
    monkeypatch.setattr(wiring, "_assemble_run", stop_after_the_log_opened)  # no index build, no training
    out = tmp_path / "out"
    opts = ["DATA.ROOT", str(data), "DATA.TRAIN_FILE", str(data / "train.txt"), "DATA.VAL_FILE", str(data / "val.txt"),
            "DATA.LABEL_LIST", str(labels), "DATA.NUM_CLASSES", str(len(names)), "LOG.PROGRESS_BAR", "False",
            "LOG.TENSORBOARD", "False", "OUTPUT", str(out)]
    warning = (f"label list DATA.LABEL_LIST = {labels} gives one name to several classes: {names[1]!r} (ids 1, 3); "
               "the predictions and per-class tables name them alike (their ids tell them apart): rename them in the "
               "list to tell them apart by name")
    assert train.main(["--cfg", DEMO, "--opts", *opts]) == 2
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("gives one name to several classes") == 1, captured.err
    log = [line.split("] ", 1)[-1] for line in (out / "log_rank0.txt").read_text().splitlines()]
    assert log.count(f"WARNING: {warning}") == 1, log
    assert train.main(["--cfg", DEMO, "--dry-run", "--batch-size", "2", "--opts", *opts]) == 0
    assert f"warning: {warning}" in capsys.readouterr().err.splitlines()
