"""train_one_epoch's optimizer steps in numbers: what a non-finite loss or another failure leaves in the log and says
on every rank, and the LR a skipped step logs."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from configs import load_config
from dali_pipelines.data_errors import DataError
from engine.distributed import DistContext
from engine.metrics import MetricLogger
from engine.optim import build_scheduler
from engine.train_epoch import NonFiniteLossError, TrainOptions, TrainState, train_one_epoch


class _NaNAtCall(torch.nn.Module):
    """Cross-entropy, NaN at the calls numbered in ``bad`` (1-based); the finite losses it returned, in ``seen``."""

    def __init__(self, bad: set[int]) -> None:
        super().__init__()
        self.bad, self.calls, self.seen = bad, 0, []

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(logits, target)
        if self.calls in self.bad:
            return loss * float("nan")
        self.seen.append(loss.item())
        return loss


def _batches(n: int) -> list[dict]:
    gen = torch.Generator().manual_seed(1)
    return [{"video": torch.randn(2, 4, generator=gen), "label": torch.tensor([0, 2])} for _ in range(n)]


def _train_lines(out) -> list[dict]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["kind"] == "train"]


def test_a_nonfinite_loss_stop_logs_the_steps_before_it(tmp_path):
    """PRINT_FREQ 10, a NaN loss at step 6: steps 1-5 get their train line (their mean loss) before the run stops.
    The stop used to leave them unlogged, the losses that led to the failure among them."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = build_scheduler(load_config(None, ["TRAIN.EPOCHS", "1", "TRAIN.WARMUP_EPOCHS", "0"]).TRAIN, opt, 8)
    criterion = _NaNAtCall({6})
    metrics = MetricLogger(str(tmp_path), print_freq=10, tensorboard=False, nvml=False, progress_bar=False)
    try:
        with pytest.raises(NonFiniteLossError, match=r"^non-finite loss \(nan\) at optimizer step 6 \(epoch 1\)"):
            train_one_epoch(model, _batches(8), opt, scheduler, criterion, TrainState(),
                            TrainOptions(epochs=1, steps_per_epoch=8), metrics, DistContext())
    finally:
        metrics.close()
    train = _train_lines(tmp_path)
    assert [x["step"] for x in train] == [5]
    assert len(criterion.seen) == 5 and train[0]["loss"] == pytest.approx(sum(criterion.seen) / 5, rel=1e-6)


class _FailsAtCall(torch.nn.Module):
    """A linear model whose forward raises ``error`` at call ``at`` (1-based), as CUDA running out of memory."""

    def __init__(self, at: int, error: BaseException) -> None:
        super().__init__()
        self.linear, self.at, self.error, self.calls = torch.nn.Linear(4, 3), at, error, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            raise self.error
        return self.linear(x)


def _loader_failing_after(n: int, error: BaseException):
    yield from _batches(n)
    raise error


FAILURES = {
    "the loader's DataError after 5 batches": (
        lambda e: torch.nn.Linear(4, 3), lambda e: _loader_failing_after(5, e), 1,
        DataError("DATA.TRAIN_FILE train.txt: every video of the list failed to decode"), [5]),
    "a Ctrl-C in the loader after 5 batches": (
        lambda e: torch.nn.Linear(4, 3), lambda e: _loader_failing_after(5, e), 1, KeyboardInterrupt(), [5]),
    # ACCUMULATION_STEPS 2: the 8th forward is the second micro-batch of step 4, after 3 whole steps
    "CUDA out of memory in step 4's second micro-batch": (
        lambda e: _FailsAtCall(8, e), lambda e: _batches(16), 2,
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), [3]),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_failure_in_the_steps_logs_the_steps_before_it_and_reaches_the_caller(tmp_path, case):
    """PRINT_FREQ 10: a failure other than a non-finite loss (out of memory, a DataError from the loader, a
    Ctrl-C) left the steps trained since the last line (up to PRINT_FREQ - 1) without one in metrics.jsonl. They
    get their line, with their mean loss, and the failure reaches the caller as it was raised."""
    make_model, make_loader, acc, error, steps = FAILURES[case]
    torch.manual_seed(0)
    model = make_model(error)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = build_scheduler(load_config(None, ["TRAIN.EPOCHS", "1", "TRAIN.WARMUP_EPOCHS", "0"]).TRAIN, opt, 8)
    criterion = _NaNAtCall(set())  # records the losses
    metrics = MetricLogger(str(tmp_path), print_freq=10, tensorboard=False, nvml=False, progress_bar=False)
    try:
        with pytest.raises(type(error)) as raised:
            train_one_epoch(model, make_loader(error), opt, scheduler, criterion, TrainState(),
                            TrainOptions(epochs=1, steps_per_epoch=8, accumulation_steps=acc), metrics,
                            DistContext())
    finally:
        metrics.close()
    assert raised.value is error
    train = _train_lines(tmp_path)
    assert [x["step"] for x in train] == steps
    trained = criterion.seen[:steps[0] * acc]  # a step's loss: the mean of its micro-batches'
    assert train[0]["loss"] == pytest.approx(sum(trained) / len(trained), rel=1e-6)


def test_a_line_that_cannot_be_written_leaves_the_failure_as_it_was(tmp_path, monkeypatch):
    """The pending line after a failure is written by a process in trouble (the GPU that ran out of memory asked for
    its memory, a full disk): its own error must not replace the one that ended the steps."""
    metrics = MetricLogger(str(tmp_path), print_freq=10, tensorboard=False, nvml=False, progress_bar=False)

    def full_disk(step: int, epoch: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics, "end_epoch", full_disk)
    error = DataError("DATA.TRAIN_FILE train.txt: every video of the list failed to decode")
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = build_scheduler(load_config(None, ["TRAIN.EPOCHS", "1", "TRAIN.WARMUP_EPOCHS", "0"]).TRAIN, opt, 8)
    try:
        with pytest.raises(DataError) as raised:
            train_one_epoch(model, _loader_failing_after(3, error), opt, scheduler, torch.nn.CrossEntropyLoss(),
                            TrainState(), TrainOptions(epochs=1, steps_per_epoch=8), metrics, DistContext())
    finally:
        metrics.close()
    assert raised.value is error and raised.value.__context__ is None


def test_a_skipped_steps_line_logs_its_own_lr(tmp_path):
    """TRAIN.SKIP_NONFINITE: the schedule goes on by step through a skipped step, and its line's lr is that step's
    LR on the schedule (it was the step before's, the LR being set only for an update)."""
    cfg = load_config(None, ["TRAIN.EPOCHS", "1", "TRAIN.WARMUP_EPOCHS", "1", "TRAIN.LR", "1e-3",
                             "TRAIN.WARMUP_START_LR", "0", "TRAIN.LR_MIN", "1e-6"])
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.TRAIN.LR)  # the schedule's peak: the optimizer's LR
    scheduler = build_scheduler(cfg.TRAIN, opt, 4)
    metrics = MetricLogger(str(tmp_path), print_freq=1, tensorboard=False, nvml=False, progress_bar=False)
    try:
        train_one_epoch(model, _batches(4), opt, scheduler, _NaNAtCall({3}), TrainState(),
                        TrainOptions(epochs=1, steps_per_epoch=4, skip_nonfinite=True), metrics, DistContext())
    finally:
        metrics.close()
    train = _train_lines(tmp_path)
    assert [x["loss"] is None for x in train] == [False, False, True, False]
    # a warmup of the run's 4 steps from 0 to 1e-3: step t runs at t x 2.5e-4
    assert [x["lr"] for x in train] == pytest.approx([0.0, 2.5e-4, 5e-4, 7.5e-4], abs=1e-12)


def _nan_loss_on_rank_1(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        torch.set_num_threads(1)
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        metrics = MetricLogger(out_dir, rank, world, print_freq=1, tensorboard=False, nvml=False,
                               progress_bar=False)
        scheduler = build_scheduler(load_config(None, ["TRAIN.EPOCHS", "1", "TRAIN.WARMUP_EPOCHS", "0"]).TRAIN,
                                    opt, 3)
        said = "no error"
        try:
            train_one_epoch(model, _batches(3), opt, scheduler, _NaNAtCall({2} if rank == 1 else set()),
                            TrainState(), TrainOptions(epochs=1, steps_per_epoch=3), metrics,
                            DistContext(rank=rank, world_size=world))
        except NonFiniteLossError as e:
            said = str(e)
        finally:
            metrics.close()
        with open(os.path.join(out_dir, f"said_{rank}.txt"), "w") as f:
            f.write(said)
        del model
        dist.barrier()
    finally:
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # as test_distributed's ranks: no gloo destructors at interpreter exit


def test_every_rank_names_the_same_nonfinite_loss(tmp_path):
    """Two processes, a NaN loss on rank 1 at step 2: every rank stops there with the same line, which names a
    non-finite loss. Rank 0, whose own loss was finite (its gradients all-reduced with rank 1's NaN ones), wrote
    "non-finite gradients (loss ...)" in the run's log instead, pointing away from the loss."""
    mp.spawn(_nan_loss_on_rank_1, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    said = [(tmp_path / f"said_{rank}.txt").read_text() for rank in (0, 1)]
    assert said[0] == said[1], said
    assert said[0].startswith("non-finite loss (nan) at optimizer step 2 (epoch 1); stopping."), said[0]


def test_a_loader_that_runs_out_inside_a_step_leaves_no_gradient_to_the_next_epoch(tmp_path):
    """TRAIN.ACCUMULATION_STEPS 2, 3 steps planned, a loader of 5 batches: 2 steps, and the fifth batch's backward
    without its step. Its gradients were left on the weights and added to the next epoch's first step; now the
    next epoch trains as after a loader of the 4 batches its steps used."""
    batches = _batches(9)

    def weights_after(first_epoch: list[dict]) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = build_scheduler(load_config(None, ["TRAIN.EPOCHS", "2", "TRAIN.WARMUP_EPOCHS", "0"]).TRAIN,
                                    opt, 3)
        metrics = MetricLogger(str(tmp_path), print_freq=10, tensorboard=False, nvml=False, progress_bar=False)
        state, opts = TrainState(), TrainOptions(epochs=2, steps_per_epoch=3, accumulation_steps=2)
        try:
            first = train_one_epoch(model, first_epoch, opt, scheduler, torch.nn.CrossEntropyLoss(), state, opts,
                                    metrics, DistContext())
            assert first["steps"] == 2 and all(p.grad is None for p in model.parameters())
            state.epoch, state.step_in_epoch = 1, 0
            train_one_epoch(model, batches[5:7], opt, scheduler, torch.nn.CrossEntropyLoss(), state, opts, metrics,
                            DistContext())
        finally:
            metrics.close()
        return model.weight.detach().clone()

    assert torch.equal(weights_after(batches[:5]), weights_after(batches[:4]))
