"""Telemetry a person watches: plain step lines with remaining time in the log whether or not a bar is drawn, the bar
only on a terminal, evaluation progress, the end-of-run table without zero counters, mean class accuracy, and the
PNG plots (their axes and size)."""

from __future__ import annotations

import io
import json
import os
import time

import pytest
import torch
from PIL import Image
from torch import nn

from engine.distributed import DistContext
from engine.evaluate import evaluate, evaluate_and_log, write_predictions
from engine.metrics import MetricLogger
from engine.plots import CURVES, MATRIX_MAX_CLASSES, confusion_figure, curves_figure, read_metrics, write_plots
from engine.progress import EvalProgress, RunClock, format_duration


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _log(out) -> str:
    return (out / "log_rank0.txt").read_text()


def _train_two_epochs(metrics: MetricLogger) -> None:
    """2 epochs x 4 steps, a line every 2 steps; the first window takes 0.5 s a step, every later one 1 s."""
    step = 0
    for epoch in range(2):
        metrics.start_epoch(epoch, 4, 0, epochs=2)
        for _ in range(4):
            step += 1
            metrics.log_step(step, epoch, loss=1.0 / step, lr=1e-3, clips=4, data_time=0.1,
                             step_time=0.5 if step <= 2 else 1.0)
        metrics.end_epoch(step, epoch)


def test_step_lines_reach_the_log_while_the_bar_is_drawn(tmp_path, monkeypatch, capsys):
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    metrics = MetricLogger(str(tmp_path), print_freq=2, tensorboard=False, nvml=False, progress_bar=True)
    _train_two_epochs(metrics)
    metrics.close()
    log = _log(tmp_path)
    # first window: 0.5 s/step -> 2 steps left in the epoch = 1 s, 6 left in the run = 3 s
    assert "epoch 1/2 [2/4] step 2/8  loss 0.75  lr 0.001  8.0 clips/s  data wait 20%" in log  # mean of 1, 1/2
    assert "eta 0:00:01 (epoch) 0:00:03 (run)" in log
    # later windows leave the start-up window out: 1 s/step -> at step 6, 2 s (epoch) and 2 s (run) left
    assert "epoch 2/2 [2/4] step 6/8" in log and "eta 0:00:02 (epoch) 0:00:02 (run)" in log
    assert len([ln for ln in log.splitlines() if " step " in ln]) == 4
    assert "epoch 1/2" in terminal.getvalue()  # the bar was drawn on the terminal
    assert " step " not in capsys.readouterr().out  # ... and the console got no duplicate step lines
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(d["epoch"], d["step"], d["eta_run_s"]) for d in lines] == [(1, 2, 3.0), (1, 4, 4.0), (2, 6, 2.0),
                                                                       (2, 8, 0.0)]


def test_no_bar_when_stderr_is_a_file(tmp_path, monkeypatch, capsys):
    redirected = io.StringIO()  # not a terminal: e.g. a scheduler's log file
    monkeypatch.setattr("sys.stderr", redirected)
    metrics = MetricLogger(str(tmp_path), print_freq=2, tensorboard=False, nvml=False, progress_bar=True)
    _train_two_epochs(metrics)
    progress = metrics.eval_progress("val", 5)
    for _ in range(5):
        progress(3)
    progress.close()
    metrics.close()
    assert redirected.getvalue() == ""  # no bar, no carriage returns
    out = capsys.readouterr().out
    assert "epoch 2/2 [4/4] step 8/8" in out and "\r" not in out
    log = _log(tmp_path)
    evals = [ln.split("] ", 1)[1] for ln in log.splitlines() if "eval val batch" in ln]
    # batch 2's line is the first, batch 4's comes within 30 s of it (left out), the last batch's is always written
    assert [e.split("  ")[0] for e in evals] == ["eval val batch 2/5 (40%)", "eval val batch 5/5 (100%)"]
    assert all("videos/s  eta " in e for e in evals) and evals[-1].endswith("eta 0:00:00")


def test_eval_progress_gives_no_rate_from_a_few_microseconds(monkeypatch):
    """The first batches of 3 videos in 40 µs were "75000.0 videos/s" with the time left worked out from that."""
    clock = [50.0]
    monkeypatch.setattr("engine.progress.time.perf_counter", lambda: clock[0])
    lines: list[str] = []
    progress = EvalProgress("val", 3, lines.append, every=1, bar=False, every_s=0.0)  # a line at every batch
    clock[0] += 40e-6
    progress(3)
    clock[0] += 2.0
    progress(3)
    progress(2)
    unsized = EvalProgress("test", None, lines.append, every=1, bar=False, every_s=0.0)
    unsized(1)
    assert lines == ["eval val batch 1/3 (33%)  - videos/s  eta -", "eval val batch 2/3 (67%)  3 videos/s  eta 0:00:01",
                     "eval val batch 3/3 (100%)  4 videos/s  eta 0:00:00", "eval test batch 1  - videos/s"]


def _eval_lines(monkeypatch, batches: int, every: int, batch_s: float) -> list[str]:
    """The batch counts of an evaluation's plain lines, each batch taking ``batch_s`` seconds of a fake clock."""
    clock = [100.0]
    monkeypatch.setattr("engine.progress.time.perf_counter", lambda: clock[0])
    lines: list[str] = []
    progress = EvalProgress("val", batches, lines.append, every=every, bar=False)
    for _ in range(batches):
        clock[0] += batch_s
        progress(2)
    return [ln.split("  ")[0].split()[-2] for ln in lines]


def test_eval_lines_come_every_print_freq_batches_at_most_one_per_30_s(monkeypatch):
    """A one-GPU evaluation of Kinetics-400 is ~9,900 batches seconds apart: a line every PRINT_FREQ (10) batches
    flooded the log with ~990 lines. Now a line is due every PRINT_FREQ batches and written only 30 s or more after
    the last one; the first and the last batch's are always written."""
    # fast batches (1 s): batch 10 (the first line), then the first due line 30 s later, ..., and the last
    assert _eval_lines(monkeypatch, 95, 10, 1.0) == ["10/95", "40/95", "70/95", "95/95"]
    # with PRINT_FREQ 1 the 30 s are counted from the line written, not from a due line left out
    assert _eval_lines(monkeypatch, 70, 1, 1.0) == ["1/70", "31/70", "61/70", "70/70"]
    # slow batches (4 s, 40 s per due line): every PRINT_FREQ batches, as before
    assert _eval_lines(monkeypatch, 35, 10, 4.0) == ["10/35", "20/35", "30/35", "35/35"]
    # one batch: its line is the first and the last, written once
    assert _eval_lines(monkeypatch, 1, 10, 1.0) == ["1/1"]


def test_run_clock_and_durations():
    clock = RunClock()
    assert clock.eta(0, 0) == (None, None)
    clock.plan(steps_per_epoch=10, epochs=3)
    clock.add(20.0, 2)  # start-up window: used only until a later window exists
    assert clock.eta(2, 2) == (80.0, 280.0)
    clock.add(3.0, 3)
    assert clock.eta(5, 5) == (5.0, 25.0)
    assert format_duration(3725) == "1:02:05" and format_duration(90000) == "1 day, 1:00:00"
    assert format_duration(None) == "-"


def test_summary_table_leaves_out_zero_counters(tmp_path, capsys):
    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    metrics.log_eval({"split": "test", "top1": 75.0, "top5": 100.0, "mean_class_top1": 50.0, "num_videos": 4,
                      "views": 6}, epoch=1, step=8)
    summary = metrics.summary({"best_epoch": 2, "train_listed_videos": 16, "train_skipped_videos": 0,
                               "train_substituted": 0, "val_rebuilds": 3})
    metrics.close()
    table = capsys.readouterr().out
    assert "train_listed_videos" in table and "val_rebuilds" in table and "best_epoch" in table
    assert "train_skipped_videos" not in table and "train_substituted" not in table
    assert "final_mean_class_top1 | 50" in table
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved == summary and saved["train_skipped_videos"] == 0 and saved["final_mean_class_top1"] == 50.0
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["epoch"] == 2  # index 1 = the second epoch


def test_the_evaluation_line_counts_its_views_in_the_right_number(tmp_path, capsys):
    from evautil.progress import counted

    assert (counted(1, "view"), counted(6, "view"), counted(1200, "batch")) == ("1 view", "6 views", "1,200 batches")
    assert (counted(1, "epoch"), counted(32, "epoch")) == ("1 epoch", "32 epochs")  # not "epoches"
    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    for views, videos in ((1, 4), (12, 4), (3, 1)):
        metrics.log_eval({"split": "val", "top1": 50.0, "top5": 100.0, "num_videos": videos, "views": views},
                         epoch=0, step=2)
    metrics.close()
    out = capsys.readouterr().out
    assert "eval val (1 view/video, 4 videos)" in out and "eval val (12 views/video, 4 videos)" in out, out
    assert "eval val (3 views/video, 1 video)" in out, out  # it was "1 videos"


class _AlwaysClassZero(nn.Module):
    def forward(self, x):
        logits = torch.zeros(x.shape[0], 3)
        logits[:, 0] = 1.0
        return logits + 0.0 * x.flatten(1).sum(1, keepdim=True)


def test_evaluate_reports_progress_and_mean_class_accuracy():
    # classes 0, 0, 0, 1 (class 2 absent): top-1 3/4 = 75 %; per class 100 % and 0 % -> mean class top-1 50 %
    batches = [{"video": torch.rand(2, 2, 1, 3, 4, 4), "label": torch.tensor(lbl), "index": torch.tensor(idx)}
               for lbl, idx in (([0, 0], [0, 1]), ([0, 1], [2, 3]))]
    seen = []
    result = evaluate(_AlwaysClassZero(), batches, DistContext(), progress=seen.append)
    assert seen == [2, 2]
    assert result["top1"] == 75.0 and result["mean_class_top1"] == 50.0 and result["num_videos"] == 4


def test_views_are_combined_as_the_mean_of_their_softmax_not_of_their_logits():
    """SPEC.md section 4: a video's score is the mean of its views' softmax. Two views fairly sure of class 0 and
    one very sure of class 1: the softmax mean picks class 0 (0.64), the logit mean would pick class 1."""
    view_logits = torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 10.0]])
    assert view_logits.mean(0).argmax().item() == 1  # what averaging logits would answer

    class LogitsOfTheView(nn.Module):  # view v's clip carries v in its pixels
        def forward(self, x):
            return view_logits[x.flatten(1)[:, 0].long()] + 0 * x.flatten(1)[:, :1]

    video = torch.arange(3.0).view(1, 3, 1, 1, 1, 1).expand(1, 3, 1, 3, 2, 2).contiguous()
    result = evaluate(LogitsOfTheView(), [{"video": video, "label": torch.tensor([0]), "index": torch.tensor([0])}],
                      DistContext())
    (_, _, classes, probs), = result["predictions"]
    assert result["top1"] == 100.0 and classes[0] == 0
    assert probs[0] == pytest.approx(view_logits.softmax(-1).mean(0)[0].item(), rel=1e-6)


class _QuarantiningLoader:
    """Two batches of 4 listed videos; while the second is produced, a third video is quarantined (as a loader does
    when one fails to decode mid-evaluation) and the clips decoded so far are counted."""

    def __init__(self):
        self.stats = {"skipped_videos": 0, "samples_pyav": 0, "skipped": []}
        entries = [type("Entry", (), {"row": r, "rel_path": f"{'abcd'[r]}.mp4", "path": f"/data/{'abcd'[r]}.mp4",
                                          "label": int(r == 3)})()
                   for r in range(4)]
        self.index = type("Index", (), {"entries": entries, "bad": {}})()

    def __len__(self):
        return 2

    def __iter__(self):
        for n, (labels, rows) in enumerate((([0, 0], [0, 1]), ([1], [3]))):
            if n == 1:
                self.stats["skipped_videos"] += 1
                self.stats["skipped"].append("c.mp4: BadVideoError: truncated")
                self.index.bad[2] = "BadVideoError: truncated"
            self.stats["samples_pyav"] += len(rows)
            yield {"video": torch.rand(len(rows), 1, 1, 3, 4, 4), "label": torch.tensor(labels),
                   "index": torch.tensor(rows)}


def test_eval_line_counts_the_videos_that_evaluation_skipped(tmp_path, capsys):
    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    evaluate_and_log(_AlwaysClassZero(), _QuarantiningLoader(), DistContext(), metrics, split="val", num_classes=3)
    metrics.close()
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert (line["num_videos"], line["listed_videos"], line["skipped_videos"], line["samples_pyav"]) == (3, 4, 1, 3)
    out = capsys.readouterr()
    assert "val: evaluated 3 of 4 listed videos (0 bad when the list was indexed, 1 failed while decoding)" in (
        out.out + out.err + _log(tmp_path))
    assert "c.mp4: BadVideoError: truncated" in out.out + out.err + _log(tmp_path)
    # the skipped video keeps its row, with its reason and no score
    assert [r.split(",")[1:3] + r.split(",")[-2:] for r in
            (tmp_path / "predictions_val.csv").read_text().splitlines()[1:]] == [
        ["a.mp4", "0", "ok", ""], ["b.mp4", "0", "ok", ""], ["c.mp4", "0", "error", "BadVideoError: truncated"],
        ["d.mp4", "1", "ok", ""]]


def test_eval_line_of_a_result_without_num_videos_says_the_rest(tmp_path, capsys):
    """An evaluation result without num_videos (absent, or null as log_eval fills a key the result lacks) crashed the
    eval line with a TypeError after the line was written to metrics.jsonl; now it says the rest."""
    from engine.progress import eval_line

    line = {"split": "val", "top1": 50.0, "top5": None, "views": 2, "num_clip": None, "num_crop": None,
            "checkpoint": None, "videos_per_sec": 3.0, "startup_s": 0.5, "time_s": 2.0}
    assert eval_line(line) == ("eval val (2 views/video): top-1 50.00%  top-5 n/a (5 classes or fewer)  "
                               "(3.0 videos/s, 0.50 s of 2.00 s before the first batch)")
    assert eval_line({**line, "num_videos": None, "kept": 4}) == (
        "eval val (2 views/video): top-1 50.00%  top-5 n/a (5 classes or fewer)  "
        "(3.0 videos/s, 4 kept from the stopped test, 0.50 s of 2.00 s before the first batch)")
    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    try:
        metrics.log_eval({"split": "val", "top1": 50.0, "views": 1}, epoch=None, step=None)
    finally:
        metrics.close()
    assert "eval val (1 view/video): top-1 50.00%" in capsys.readouterr().out + _log(tmp_path)


class _ListLoader:
    """One batch per video of a real list file (its entries as the index holds them), labels from the list."""

    def __init__(self, list_path):
        from dali_pipelines.filelist import read_file_list

        entries = read_file_list(str(list_path), str(list_path.parent))
        self.index = type("Index", (), {"entries": entries})()

    def __len__(self):
        return len(self.index.entries)

    def __iter__(self):
        for e in self.index.entries:
            yield {"video": torch.rand(1, 1, 1, 3, 4, 4), "label": torch.tensor([e.label]),
                   "index": torch.tensor([e.row])}


def _evaluate_list(tmp_path, lines: str) -> None:
    """Evaluate a model that always says class 0 on the videos of a list holding ``lines``, logging into run/."""
    listed = tmp_path / "val.txt"
    listed.write_text(lines)
    metrics = MetricLogger(str(tmp_path / "run"), tensorboard=False, nvml=False, progress_bar=False)
    evaluate_and_log(_AlwaysClassZero(), _ListLoader(listed), DistContext(), metrics, split="val", num_classes=3)
    metrics.close()


def test_a_video_listed_twice_is_named_where_it_is_counted_twice(tmp_path, capsys):
    # "the accuracy counts every video once" holds for a list without repeats only: a repeated line is scored again
    _evaluate_list(tmp_path, "a.mp4 0\nb.mp4 1\n./a.mp4 0\nc.mp4 0\n\nb.mp4 1\n")
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert (line["num_videos"], line["top1"]) == (5, 60.0)  # every line scored, as the warning says
    out = capsys.readouterr()
    assert ("WARNING: val: 2 videos listed on more than one line (2 repeated lines), each line scored and counted in "
            "the accuracy: a.mp4 (lines 1, 3); b.mp4 (lines 2, 6); remove the repeated lines to count every video "
            "once") in out.out + out.err
    assert "more than one line" in (tmp_path / "run" / "log_rank0.txt").read_text()


def test_dotdot_after_a_symbolic_link_is_not_taken_for_a_repeat(tmp_path, capsys):
    # 'link/..' is the parent of the link's target (here deep/), not tmp_path: 'link/../a.mp4' is deep/a.mp4, which
    # dropping 'link/..' by name took for a.mp4, warning of a repeat the list does not have
    (tmp_path / "deep" / "inner").mkdir(parents=True)
    os.symlink(tmp_path / "deep" / "inner", tmp_path / "link")
    _evaluate_list(tmp_path, "a.mp4 0\nlink/../a.mp4 1\nb.mp4 1\n")
    out = capsys.readouterr()
    assert "WARNING" not in out.out + out.err and "eval val (1 view/video, 3 videos)" in out.out + out.err


def test_a_list_without_repeats_gives_no_repeat_warning(tmp_path, capsys):
    _evaluate_list(tmp_path, "a.mp4 0\nb.mp4 1\nsub/a.mp4 0\n")
    out = capsys.readouterr()
    assert "WARNING" not in out.out + out.err and "eval val (1 view/video, 3 videos)" in out.out + out.err


def test_prediction_files_are_replaced_whole_or_left_as_they_were(tmp_path):
    """A write stopped part way (here: a row that cannot be formatted) leaves the earlier files whole, not their
    first rows: predictions_<split>.csv is read back as a complete result by the plots and by users."""
    good = [(0, 1, [1, 0], [0.75, 0.25]), (1, 0, [1, 0], [0.5, 0.5])]
    pred_path, cls_path = write_predictions(str(tmp_path), "test", good, {0: "a.mp4", 1: "b.mp4"}, num_classes=2)
    before = (open(pred_path, "rb").read(), open(cls_path, "rb").read())
    assert before[0].splitlines()[1:] == [b"0,a.mp4,1,,1,1,,0.750000,0,,0.250000,ok,",
                                          b"1,b.mp4,0,,0,1,,0.500000,0,,0.500000,ok,"]
    broken = [good[0], (1, 0, [1, 0], ["not a probability", 0.5])]
    with pytest.raises(ValueError):
        write_predictions(str(tmp_path), "test", broken, {0: "a.mp4", 1: "b.mp4"}, num_classes=2)
    assert (open(pred_path, "rb").read(), open(cls_path, "rb").read()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["per_class_test.csv", "predictions_test.csv"]


def _train_lines(n: int) -> list[dict]:
    return [{"kind": "train", "step": s, "epoch": 1 + s // 5, "loss": 2.0 / s, "lr": 1e-3 * s / n,
             "clips_per_sec": 10.0 + s, "data_wait_pct": 5.0} for s in range(1, n + 1)]


class _SlowStartLoader:
    """Two batches of two videos (2 views each); the first arrives after ``delay`` s, as a fresh DALI loader's
    first batch does (graph build, decode workers' start)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __iter__(self):
        time.sleep(self.delay)
        for b in range(2):
            yield {"video": torch.zeros(2, 2, 1, 3, 4, 4), "label": torch.tensor([0, 1]),
                   "index": torch.tensor([2 * b, 2 * b + 1])}


class _TinyHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1)[:, :1])


def test_eval_reports_the_loaders_start_apart(tmp_path, capsys):
    result = evaluate(_TinyHead(), _SlowStartLoader(0.3), DistContext(device=torch.device("cpu")), split="test")
    assert result["num_videos"] == 4
    assert result["videos_per_sec"] == result["num_videos"] / result["time_s"]
    # The start was 0.3 s of an evaluation that took a few ms more: videos/s alone (~13) hid that the batches ran
    # hundreds of times faster once the loader had started.
    assert 0.3 <= result["startup_s"] <= result["time_s"]
    assert result["time_s"] - result["startup_s"] < 0.2
    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    try:
        line = metrics.log_eval({k: v for k, v in result.items() if k != "predictions"}, epoch=None, step=None)
    finally:
        metrics.close()
    assert line["startup_s"] == result["startup_s"]
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["startup_s"] == result["startup_s"]
    assert "before the first batch" in capsys.readouterr().out


def test_curves_figure_has_every_panel():
    evals = [{"kind": "eval", "split": "val", "step": s, "top1": t, "mean_class_top1": t - 5} for s, t in
             ((5, 40.0), (10, 70.0))]
    fig = curves_figure(_train_lines(10), evals)
    axes = fig.axes
    assert [ax.get_ylabel() for ax in axes] == [label for _, label in CURVES]
    assert axes[-1].get_xlabel() == "optimizer step"
    loss_x, loss_y = axes[0].lines[0].get_data()
    assert list(loss_x) == list(range(1, 11)) and loss_y[0] == 2.0
    top1 = axes[2].lines[0].get_data()
    assert list(top1[0]) == [5, 10] and list(top1[1]) == [40.0, 70.0]


def test_confusion_matrix_counts_whole_videos_on_its_scale():
    fig = confusion_figure([(0, 0), (0, 0), (0, 0), (1, 0), (1, 1), (2, 2)], {}, "test")
    ticks = fig.axes[1].get_yticks()  # the colour bar's: was 0, 0.5, 1, ... 3
    assert len(ticks) > 1 and all(float(t).is_integer() for t in ticks)


def test_confusion_for_many_classes_shows_the_most_confused_pairs():
    n = MATRIX_MAX_CLASSES + 10
    pairs = [(c, c) for c in range(n)] + [(3, 7)] * 5 + [(8, 1)] * 2 + [(9, 2)]
    fig = confusion_figure(pairs, {3: "abseiling", 7: "air drumming"}, "test")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["abseiling -> air drumming", "8 -> 1", "9 -> 2"]
    assert [p.get_width() for p in ax.patches] == [5, 2, 1]


def test_classes_named_alike_are_told_apart_by_their_ids():
    """A label list naming two classes alike (ids are checked to be unique, names not) drew two matrix rows of one
    name, and a confused pair of them as "run -> run", which reads as no confusion at all."""
    names = {0: "run", 1: "jump", 2: "run"}
    fig = confusion_figure([(0, 0), (0, 2), (1, 1), (2, 0)], names, "test")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["run (0)", "jump", "run (2)"]
    n = MATRIX_MAX_CLASSES + 10
    many = {**names, **{c: f"class {c}" for c in range(3, n)}}
    fig = confusion_figure([(c, c) for c in range(n)] + [(0, 2)] * 3 + [(1, 0)], many, "test")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["run (0) -> run (2)", "jump -> run (0)"]


def test_the_most_confused_pairs_count_whole_videos_and_say_when_there_is_none():
    """The bar chart's scale ran 0, 0.2, ... 1 for pairs confused once (no 0.2 of a video); with no confused pair it
    was an empty chart on a scale of -0.04 to 0.04, without a word."""
    n = MATRIX_MAX_CLASSES + 10
    fig = confusion_figure([(c, c) for c in range(n)] + [(3, 7), (8, 1)], {}, "test")
    fig.canvas.draw()
    ticks = fig.axes[0].get_xticks()
    assert len(ticks) > 1 and all(float(t).is_integer() for t in ticks)
    fig = confusion_figure([(c, c) for c in range(n)], {}, "test")
    assert [t.get_text() for t in fig.axes[0].texts] == ["no confused pair: every video's top-1 class is its label"]


def test_write_plots_from_an_output_folder(tmp_path):
    lines = _train_lines(12) + [{"kind": "eval", "split": "test", "epoch": 2, "step": 12, "top1": 50.0, "top5": 100.0,
                                 "mean_class_top1": 50.0, "num_videos": 4, "views": 6}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    (tmp_path / "predictions_test.csv").write_text(
        "index,path,label,label_name,correct_top1,top1_class,top1_name,top1_prob\n"
        "0,a.mp4,0,up,1,0,up,0.9\n1,b.mp4,1,down,0,0,up,0.6\n2,c.mp4,1,down,1,1,down,0.7\n"
        "3,d.mp4,2,grow,0,1,down,0.5\n")
    written = write_plots(str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in written] == ["training_curves.png", "confusion_test.png"]
    with Image.open(written[0]) as im:
        assert im.format == "PNG" and im.size == (700, 1000)  # 7 x 10 inches at 100 dpi
    with Image.open(written[1]) as im:
        assert im.format == "PNG" and min(im.size) >= 400


def test_the_confusion_plot_title_counts_in_the_right_number_and_leaves_out_what_the_line_lacks(tmp_path,
                                                                                                 monkeypatch):
    """The title read "val: 1 videos, 1 views", "None videos, None views" for an eval line with null counts, and
    "top-1 nan%" for a NaN top-1 (Python's json writes and reads it)."""
    from engine import plots

    titles = []
    drawn = plots.confusion_figure
    monkeypatch.setattr(plots, "confusion_figure", lambda *a: titles.append(a[2]) or drawn(*a))
    (tmp_path / "predictions_val.csv").write_text("index,path,label,top1_class\n0,a.mp4,0,0\n")
    for line in ('"num_videos": 1, "views": 1, "top1": 100.0', '"num_videos": 3, "views": 6, "top1": NaN',
                 '"num_videos": null, "views": null, "top1": null', '"views": 2, "top1": Infinity'):
        (tmp_path / "metrics.jsonl").write_text(f'{{"kind": "eval", "split": "val", "step": 1, {line}}}\n')
        assert write_plots(str(tmp_path)) == [str(tmp_path / "confusion_val.png")]
    assert titles == ["val: 1 video, 1 view, top-1 100.00%", "val: 3 videos, 6 views", "val", "val: 2 views"]


def test_plots_a_full_disk_refuses_at_the_end_of_a_run_are_one_warning_naming_the_file_and_the_way_on(tmp_path,
                                                                                                       monkeypatch):
    """A full disk when a finished run drew its plots: the warning named the file and the error, not how to draw them
    once space is freed. Every write goes to /dev/full, which refuses each one as a full disk does."""
    import evautil.files
    from engine.plots import plot_finished_run

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(d) + "\n" for d in _train_lines(4)))

    def on_a_full_disk(fd, mode="r", *args, **kwargs):
        os.close(fd)
        return open("/dev/full", mode)

    monkeypatch.setattr(evautil.files.os, "fdopen", on_a_full_disk)
    warned = []
    assert plot_finished_run(str(tmp_path), info=print, warn=warned.append) == []
    monkeypatch.undo()
    assert warned == [f"plots not written: OSError: [Errno 28] No space left on device: "
                      f"'{tmp_path / 'training_curves.png'}'; the run's results are saved: once that is mended, "
                      f"python tools/plot_run.py {tmp_path} draws them"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]  # no temporary file left either


def test_a_plot_cut_short_leaves_the_one_before_it_whole(tmp_path, monkeypatch):
    """A run or plot_run stopped while it wrote a plot left half a PNG under its name, which the next reader
    (a viewer, a report) failed on. A plot is written whole or not at all: the one before it stays."""
    from matplotlib.figure import Figure

    lines = _train_lines(12) + [{"kind": "eval", "split": "test", "step": 12, "top1": 50.0, "num_videos": 2,
                                 "views": 6}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    (tmp_path / "predictions_test.csv").write_text("index,path,label,top1_class\n0,a.mp4,0,0\n1,b.mp4,1,0\n")
    written = write_plots(str(tmp_path))
    before = {p: open(p, "rb").read() for p in written}

    def cut_short(self, fname, *args, **kwargs):  # the first bytes of a PNG, then the stop
        if isinstance(fname, str):
            with open(fname, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n")
        else:
            fname.write(b"\x89PNG\r\n\x1a\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", cut_short)
    with pytest.raises(KeyboardInterrupt):
        write_plots(str(tmp_path))
    monkeypatch.undo()
    assert {p: open(p, "rb").read() for p in written} == before
    for path in written:
        with Image.open(path) as im:
            im.load()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion_test.png", "metrics.jsonl",
                                                          "predictions_test.csv", "training_curves.png"]


def test_class_names_the_font_cannot_draw_are_said_in_one_line(tmp_path, capsys):
    """Class names in a script the plots' font lacks (Chinese): matplotlib warned twice for every character, at the
    end of every run, and the note that the plot shows boxes, and how to draw it, was nowhere."""
    import warnings

    import matplotlib

    from tools import plot_run

    names = ["打篮球", "踢足球", "跑步", "游泳"]
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "split": "test", "step": None, "top1": 0.0,
                                                        "num_videos": 4, "views": 1}) + "\n")
    (tmp_path / "predictions_test.csv").write_text("index,path,label,label_name,top1_class,top1_name\n" + "".join(
        f"{i},v{i}.mp4,{i},{names[i]},{(i + 1) % 4},{names[(i + 1) % 4]}\n" for i in range(4)), encoding="utf-8")
    # matplotlib's own font, whatever other fonts this machine has
    with warnings.catch_warnings(record=True) as escaped, matplotlib.rc_context({"font.sans-serif": ["DejaVu Sans"]}):
        warnings.simplefilter("always")
        assert plot_run.main([str(tmp_path)]) == 0
    assert [str(w.message) for w in escaped] == []
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(tmp_path / "confusion_test.png")]
    assert err.splitlines() == ["note: the confusion plot draws 9 characters of the class names as boxes "
                                "(打篮球踢足跑步游泳): the font DejaVu Sans has none of them; "
                                "install a font that has them, add it to matplotlib's font.sans-serif (matplotlibrc), "
                                "and draw the plots again with tools/plot_run.py"]


def test_plot_run_stopped_while_it_writes_a_plot_says_the_plot_is_left_as_it_was(tmp_path):
    """A Ctrl-C while plot_run wrote a plot said that the plot may be cut short; now a plot is replaced whole, and
    the line says the one there stays as it was."""
    import os
    import subprocess
    import sys

    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(d) + "\n" for d in _train_lines(4)))
    (tmp_path / "training_curves.png").write_bytes(b"the plot before")
    stop = ("import runpy, sys; from matplotlib.figure import Figure\n"
            "def stopped(*a, **k): raise KeyboardInterrupt\n"
            "Figure.savefig = stopped\n"
            f"sys.argv = ['plot_run.py', {str(tmp_path)!r}]\n"
            "runpy.run_path('tools/plot_run.py', run_name='__main__')\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", stop], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == ("interrupted: plotting: a plot being written is left as it was "
                                                    "(each is replaced whole); the same command draws them again")
    assert (tmp_path / "training_curves.png").read_bytes() == b"the plot before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "training_curves.png"]


def test_plot_run_removes_the_temporary_files_a_killed_plot_run_left_in_its_out_folder(tmp_path, capsys):
    """A plot_run killed while it wrote into --out left its hidden temporary file there for good: only a run's
    OUTPUT had them removed, when the next run took it. The next plot_run into that --out removes those of the plots,
    and leaves every other file (another file's temporary one too) as it was."""
    from tools import plot_run

    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(d) + "\n" for d in _train_lines(4)))
    out = tmp_path / "plots"
    out.mkdir()
    left = [".training_curves.png.k2j1x9.tmp", ".confusion_val.png.a8b7c6.tmp"]
    others = [".training_curves.png.old.a8b7c6.tmp", ".notes.txt.k2j1x9.tmp", "notes.txt"]
    for name in left + others:
        _written(out / name, b"cut short", age_s=120)
    assert plot_run.main([str(tmp_path), "--out", str(out)]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted(others + ["training_curves.png"])


def _written(path, data: bytes, age_s: float) -> None:
    """``data`` in ``path``, last modified ``age_s`` ago."""
    path.write_bytes(data)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))


def test_plot_run_leaves_the_temporary_file_of_another_plot_run_still_writing_into_its_out_folder(tmp_path, capsys):
    """Two plot_run into one --out at once: the second removed the first one's temporary file mid-write (it took it
    for a killed write's), and the first one's plot failed. A temporary file a live process holds open, or that was
    written to in the last minute, stays; one no process holds and a minute old, or an hour old, goes."""
    import subprocess
    import sys

    from tools import plot_run

    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(d) + "\n" for d in _train_lines(4)))
    out = tmp_path / "plots"
    out.mkdir()
    live, fresh = out / ".training_curves.png.a1b2c3.tmp", out / ".confusion_val.png.d4e5f6.tmp"
    dead, old = out / ".training_curves.png.k2j1x9.tmp", out / ".confusion_test.png.zz91qa.tmp"
    for path, age_s in ((live, 120), (fresh, 0), (dead, 120), (old, 7200)):
        _written(path, b"half a plot", age_s)
    # the writer: a process holding its temporary file open, as a plot_run does while it writes
    writer = subprocess.Popen([sys.executable, "-c", "import sys; f = open(sys.argv[1], 'ab'); print('open', "
                               "flush=True); sys.stdin.read()", str(live)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "open\n"
        assert plot_run.main([str(tmp_path), "--out", str(out)]) == 0, capsys.readouterr().err
    finally:
        writer.communicate("")
    assert sorted(p.name for p in out.iterdir()) == sorted([live.name, fresh.name, "training_curves.png"])
    assert live.read_bytes() == b"half a plot"
    # once its writer is gone (killed) and a minute has passed, the next plot_run removes it
    _written(live, b"half a plot", 120)
    assert plot_run.main([str(tmp_path), "--out", str(out)]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted([fresh.name, "training_curves.png"])


def test_non_finite_values_in_metrics_jsonl_are_gaps_in_the_curves(tmp_path, capsys):
    """A loss that went NaN or infinite (Python's json writes and reads NaN and Infinity) and a last line cut short:
    the curves are drawn from the finite points."""
    from tools import plot_run

    text = "".join(json.dumps(d) + "\n" for d in _train_lines(4))
    text += '{"kind": "train", "step": 5, "loss": NaN, "lr": Infinity, "clips_per_sec": -Infinity}\n'
    text += '{"kind": "eval", "split": "val", "step": 5, "top1": NaN, "num_videos": 2, "views": 1}\n{"kind": "tr'
    (tmp_path / "metrics.jsonl").write_text(text)
    assert plot_run.main([str(tmp_path)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "training_curves.png")]
    with Image.open(tmp_path / "training_curves.png") as im:
        assert im.size == (700, 1000)


def test_the_loss_panel_marks_the_steps_whose_loss_was_not_finite(tmp_path):
    """A loss that went NaN or infinite is null in metrics.jsonl (NaN, Infinity in older files): the curve only
    stopped there, as if nothing had been logged. Those steps are marked along the panel's foot, and counted."""
    lines = [dict(d, loss=loss) for d, loss in zip(_train_lines(5), (1.0, None, float("nan"), float("inf"), 0.5))]
    fig = curves_figure(lines + [{"kind": "train", "step": 6, "lr": 1e-3}], [])  # (a line without a loss: not one)
    loss_axes = fig.axes[[key for key, _ in CURVES].index("loss")]
    marked = [line for line in loss_axes.lines if line.get_label().startswith("no finite loss")]
    assert [(line.get_label(), list(line.get_xdata())) for line in marked] == [("no finite loss (3 lines)", [2, 3, 4])]
    assert [t.get_text() for t in loss_axes.get_legend().get_texts()] == ["no finite loss (3 lines)"]
    # a gap where the loss was null, as where it was NaN: the curve drawn straight over the lost steps read as losses
    curve = loss_axes.lines[0]
    assert list(curve.get_xdata()) == [1, 2, 3, 4, 5] and [y != y for y in curve.get_ydata()] == [
        False, True, True, True, False]
    fig = curves_figure(_train_lines(3), [])
    assert fig.axes[0].get_legend() is None and len(fig.axes[0].lines) == 1


def test_write_plots_names_a_folder_without_metrics(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        write_plots(str(tmp_path))


def test_plot_run_refuses_a_file_for_a_folder_in_one_line(tmp_path, capsys):
    from tools import plot_run

    a_file = tmp_path / "a file"
    a_file.write_text("")
    assert plot_run.main([str(a_file)]) == 2  # was a FileExistsError traceback
    assert capsys.readouterr().err == f"error: {a_file}/metrics.jsonl does not exist: not the output folder of a run\n"
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(d) + "\n" for d in _train_lines(4)))
    assert plot_run.main([str(tmp_path), "--out", str(a_file)]) == 2
    assert capsys.readouterr().err == f"error: --out {a_file} exists and is not a folder; give a folder (new or " \
                                      "existing)\n"
    long = tmp_path / ("p" * 300)  # passes the check; its folder cannot be made (was "cannot write the plots: [Errno")
    assert plot_run.main([str(tmp_path), "--out", str(long)]) == 2
    assert capsys.readouterr().err == f"error: --out {long}: cannot create the folder (File name too long)\n"
    assert plot_run.main([str(tmp_path), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "training_curves.png").is_file()
    # the run's metrics.jsonl named instead of its folder: the folder's plots (was ".../metrics.jsonl/metrics.jsonl
    # does not exist")
    capsys.readouterr()
    assert plot_run.main([str(tmp_path / "metrics.jsonl")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == str(tmp_path / "training_curves.png")


def test_plot_run_in_a_run_folder_it_may_only_read_says_how_to_draw_them_elsewhere(tmp_path, capsys, monkeypatch):
    """A run's folder that this user may read but not write (a colleague's, a read-only archive): the one line said
    the plot could not be written, not that --out writes them elsewhere; and a metrics.jsonl that could not be read
    was said to be a plot that could not be written."""
    import errno
    import os
    import tempfile

    import engine.metrics_file
    from tools import plot_run

    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(d) + "\n" for d in _train_lines(4)))

    def refused(prefix="", suffix="", dir=None, **kwargs):  # what the system says making the plot's file there
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.path.join(dir, f"{prefix}k2j1x9{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    assert plot_run.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: cannot write the plots: [Errno 13] Permission denied: "
                                       f"'{tmp_path / 'training_curves.png'}'; --out FOLDER draws them elsewhere\n")
    monkeypatch.undo()
    assert plot_run.main([str(tmp_path), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "training_curves.png").is_file()
    capsys.readouterr()

    def unreadable(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    monkeypatch.setattr(engine.metrics_file, "open", unreadable, raising=False)  # (its reader of metrics.jsonl)
    assert plot_run.main([str(tmp_path), "--out", str(tmp_path / "plots")]) == 2
    assert capsys.readouterr().err == f"error: cannot read {tmp_path / 'metrics.jsonl'}: Permission denied\n"


def test_plot_run_given_damaged_files_says_which_in_one_line(tmp_path, capsys):
    """A metrics.jsonl line cut inside a multi-byte character, a line that is JSON but not an object, an eval line
    without its split and a predictions file with a row that is not numbers each gave a traceback."""
    from tools import plot_run

    good = "".join(json.dumps(d) + "\n" for d in _train_lines(4))
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_bytes(good.encode() + b'{"kind": "train", "note": "\xc3\n[1, 2]\n"x"\n{"kind": "eval", "epoch": 1}\n')
    assert plot_run.main([str(tmp_path)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "training_curves.png")]
    metrics.write_text(good + json.dumps({"kind": "eval", "split": "test", "step": 4, "top1": 50.0}) + "\n")
    (tmp_path / "predictions_test.csv").write_text("index,path,label,top1_class\n0,a.mp4,0,1\n1,b.mp4,zz,1\n")
    assert plot_run.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'predictions_test.csv'}, line 3: expected integer 'label' " \
                                      "and 'top1_class' columns, got label 'zz', top1_class '1'\n"
    # a file of another kind (or emptied): was an empty confusion plot and exit code 0
    for text, header in (("garbage\n", "'garbage'"), ("", "'an empty file'")):
        (tmp_path / "predictions_test.csv").write_text(text)
        assert plot_run.main([str(tmp_path)]) == 2
        assert capsys.readouterr().err == f"error: {tmp_path / 'predictions_test.csv'}: its header has no 'label' " \
                                          f"and no 'top1_class' column (got {header}): not a predictions file of a " \
                                          "run\n"
    # its header and no row (a file cut short): was an empty confusion plot and exit code 0, then the training
    # curves were still drawn before the refusal
    (tmp_path / "training_curves.png").unlink()
    (tmp_path / "predictions_test.csv").write_text("index,path,label,top1_class\n")
    for out in ([], ["--out", str(tmp_path / "plots")]):
        assert plot_run.main([str(tmp_path), *out]) == 2
        assert capsys.readouterr().err == f"error: {tmp_path / 'predictions_test.csv'}: a header and no row: no " \
                                          "video's prediction to plot (a file cut short?)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "predictions_test.csv"]  # no plot


def test_a_line_cut_short_does_not_swallow_the_next_runs_first_line(tmp_path, capsys):
    """A training attempt whose last line was cut short (a full disk, a crash), then an --only_test run into the
    same folder: its eval line was appended to the cut one, and neither could be read (nor plotted)."""
    first = json.dumps(_train_lines(1)[0]) + "\n"
    for cut in ('{"kind": "train", "step": 2, "lo', json.dumps(_train_lines(2)[1])):  # mid-line; at its newline
        (tmp_path / "metrics.jsonl").write_text(first + cut)
        metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
        metrics.log_eval({"split": "test", "top1": 50.0, "num_videos": 4, "views": 6}, epoch=None, step=None)
        metrics.close()
        lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
        assert lines[:2] == [first.strip(), cut] and json.loads(lines[2])["top1"] == 50.0
    capsys.readouterr()


def test_plot_run_passes_over_lines_of_another_shape(tmp_path, capsys):
    """Lines that are JSON objects but not as a run writes them (a step that is not a number, an eval line without
    its split or top-1, a value that is text) each stopped the plotting with a traceback."""
    from tools import plot_run

    odd = [{"kind": "train", "step": "x", "loss": 1.0}, {"kind": "train", "loss": 1.0},
           {"kind": "train", "step": True, "loss": 1.0}, {"kind": "train", "step": 5, "loss": "high"},
           {"kind": "eval", "step": 4, "top1": 3.0}, {"kind": "eval", "split": "val", "step": 4},
           {"kind": "eval", "split": "val", "step": "4", "top1": 3.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(d) + "\n" for d in _train_lines(4) + odd))
    assert plot_run.main([str(tmp_path)]) == 0, capsys.readouterr().err
    fig = curves_figure(*read_metrics(str(tmp_path)))
    assert list(fig.axes[0].lines[0].get_data()[0]) == [1, 2, 3, 4]  # the loss of the run's own lines
    assert not fig.axes[2].lines  # no eval line with a split and a top-1


def test_plot_run_names_the_missing_predictions_of_the_last_evaluation(tmp_path, capsys):
    """An evaluation logged without its predictions file beside (deleted, or metrics.jsonl copied alone): the
    error said that metrics.jsonl held no evaluation line, and beside the training curves nothing was said."""
    from tools import plot_run

    evaluation = {"kind": "eval", "split": "test", "epoch": None, "step": None, "top1": 50.0, "num_videos": 4,
                  "views": 6}
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps(evaluation) + "\n")
    lacking = f"{tmp_path / 'predictions_test.csv'} (the last evaluation's, for its confusion plot) does not exist"
    assert plot_run.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}/metrics.jsonl holds no training line, and {lacking}\n"
    metrics.write_text("".join(json.dumps(d) + "\n" for d in _train_lines(4) + [evaluation]))
    assert plot_run.main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(tmp_path / "training_curves.png")]
    assert err == f"note: no confusion plot: {lacking}\n"
    metrics.write_text("")
    assert plot_run.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}/metrics.jsonl holds no training line, and no evaluation " \
                                      "line yet\n"


def test_the_data_pipelines_log_records_are_lines_of_the_run_log(tmp_path, capsys):
    import logging

    from engine.metrics import MetricLogger

    pipeline = logging.getLogger("dali_pipelines.schedule")
    loggers = [MetricLogger(str(tmp_path), rank, 2, tensorboard=False, nvml=False, progress_bar=False)
               for rank in (0, 1)]
    for metrics in loggers:
        metrics.follow_logger("dali_pipelines")
    pipeline.warning("quarantining %s (row %d): %s", "videos/a.mp4", 3, "decode failed")
    logging.getLogger("dali_pipelines.index").info("indexing train.txt: 10 of 40 videos probed")
    pipeline.debug("not a line of the log")
    for metrics in loggers:
        metrics.close()
    pipeline.warning("after the run")
    seen = capsys.readouterr()
    for rank in (0, 1):
        log = (tmp_path / f"log_rank{rank}.txt").read_text()
        assert "WARNING: quarantining videos/a.mp4 (row 3): decode failed" in log
        assert "indexing train.txt: 10 of 40 videos probed" in log and "not a line" not in log
        assert "after the run" not in log
    # rank 0's console has each line once; rank 1 prints nothing; after close the logger is as it was
    assert seen.out.count("quarantining videos/a.mp4") == 1 and "quarantining" not in seen.err
    assert logging.getLogger("dali_pipelines").propagate and not logging.getLogger("dali_pipelines").handlers
    index_logger = logging.getLogger("dali_pipelines.index")  # its cached answer is the root's again
    assert index_logger.isEnabledFor(logging.INFO) == logging.getLogger().isEnabledFor(logging.INFO)


class _FullDisk(io.FileIO):
    """A file on a disk with no space left: every write fails as the system's does, with an error naming no file."""

    def write(self, data) -> int:
        import errno
        import os

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_under_the_run_files_names_the_file_that_could_not_be_written(tmp_path):
    """A full disk fails the write (or flush) on the open metrics.jsonl, and that error names no file: the run's one
    line said "cannot write: No space left on device", not which file of which folder. (A log that cannot be
    written stops with one warning naming it, and the run goes on: tests/test_run_log.py.)"""
    import contextlib

    from evautil.files import write_failure

    logger = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    try:
        for attr, name, write in (("_jsonl", "metrics.jsonl", lambda: logger.log_data("train", {}, 0, 8)),):
            getattr(logger, attr).close()
            full = io.TextIOWrapper(io.BufferedWriter(_FullDisk(str(tmp_path / name), "a")), encoding="utf-8")
            setattr(logger, attr, full)
            with pytest.raises(OSError) as caught:
                write()
            assert write_failure(caught.value).startswith(f"cannot write {tmp_path / name}: No space left on device; ")
            with contextlib.suppress(OSError):  # its unwritten line fails the close's flush too
                full.close()
            setattr(logger, attr, open(tmp_path / name, "a", encoding="utf-8"))
    finally:
        logger.close()


def test_a_run_file_past_the_file_size_limit_is_one_line_naming_it_and_the_limit(tmp_path):
    """A file size limit (ulimit -f) is an OSError (EFBIG) where the run writes (Python ignores SIGXFSZ): a
    checkpoint said so, but metrics.jsonl, the log or summary.json past it ended the run with a traceback, exit 1."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import resource, sys\n"
        "from engine.metrics import MetricLogger\n"
        "from evautil.files import write_failure\n"
        "logger = MetricLogger(sys.argv[1], tensorboard=False, nvml=False, progress_bar=False)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))\n"
        "try:\n"
        "    for step in range(1000):\n"
        "        logger.log_data('train', {}, 0, step)\n"
        "except OSError as e:\n"
        "    print(write_failure(e))\n")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=root, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"cannot write {tmp_path / 'metrics.jsonl'}: File too large; the file reached the largest "
                           "this process may write (the shell's file size limit, ulimit -f, or the file system's "
                           "largest file): lift the limit and run the same command: with TRAIN.AUTO_RESUME True (the "
                           "default) it resumes from the last checkpoint in OUTPUT\n")


def test_a_full_disk_under_the_files_written_whole_names_the_file_that_could_not_be_written(tmp_path, monkeypatch):
    """config.yaml, summary.json, the predictions and the metrics.jsonl a resume rewrites are written to a temporary
    file renamed into place; a full disk failed that file's write with an error naming no file, and a training that
    filled the disk at its end said only "error: cannot write: No space left on device"."""
    import os

    from engine.run_files import drop_lines_after
    from evautil.files import write_failure

    logger = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n{"kind": "train", "step": 2}\n')
    writes = {"config.yaml": lambda: logger.write_config("SEED: 0\n"),
              "summary.json": lambda: logger.summary({}),
              "predictions_test.csv": lambda: write_predictions(str(tmp_path), "test", [(0, 1, [1, 0], [0.9, 0.1])],
                                                                {0: "a.mp4"}, num_classes=2),
              "metrics.jsonl": lambda: drop_lines_after(str(tmp_path / "metrics.jsonl"), 1)}
    try:
        monkeypatch.setattr(os, "fdopen", lambda fd, mode: io.BufferedWriter(_FullDisk(fd, "w")))
        for name, write in writes.items():
            with pytest.raises(OSError) as caught:
                write()
            assert write_failure(caught.value).startswith(f"cannot write {tmp_path / name}: No space left on "
                                                          "device; "), name
    finally:
        monkeypatch.undo()
        logger.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log_rank0.txt", "metrics.jsonl"]  # no file cut short
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
