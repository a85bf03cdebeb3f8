"""A short run of train.py as it runs under a scheduler: progress bar switched on, stderr redirected to a file.

What a person reads afterwards must be plain and agree with itself: step lines with remaining time in the log,
evaluation progress, one epoch numbering in console, file names, metrics.jsonl and summary.json, a summary table
without zero counters, and the plots written into the output folder (and again by tools/plot_run.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.plots import read_predictions

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tools.synthetic import make_synthetic_dataset

    tmp = tmp_path_factory.mktemp("watched")
    data = tmp / "data"
    make_synthetic_dataset(str(data), train_per_class=4, val_per_class=2, num_frames=16, size=(64, 48), workers=2,
                           progress=False)
    out = tmp / "out"
    opts = {"DATA.ROOT": data, "DATA.TRAIN_FILE": data / "train.txt", "DATA.VAL_FILE": data / "val.txt",
            "DATA.LABEL_LIST": data / "labels.csv", "DATA.INPUT_SIZE": 32, "DATA.NUM_FRAMES": 4,
            "DATA.TUBELET_SIZE": 2, "DATA.NUM_THREADS": 1, "DATA.NUM_WORKERS": 1, "DATA.INDEX_WORKERS": 1,
            "TRAIN.BATCH_SIZE": 4, "TRAIN.EPOCHS": 2, "TRAIN.WARMUP_EPOCHS": 0.5, "TEST.BATCH_SIZE": 3,
            "TEST.NUM_CLIP": 1, "TEST.NUM_CROP": 1, "TEST.EVAL_FREQ": 1, "TEST.FINAL_NUM_CLIP": 2,
            "TEST.FINAL_NUM_CROP": 3, "LOG.PROGRESS_BAR": True, "LOG.TENSORBOARD": False, "PRINT_FREQ": 2,
            "SAVE_FREQ": 1, "KEEP_LAST": 3, "OUTPUT": out}
    cmd = [sys.executable, str(ROOT / "train.py"), "--cfg", str(ROOT / "configs" / "demo.yaml"), "--opts",
           *[str(x) for kv in opts.items() for x in kv]]
    stderr_file = tmp / "stderr.txt"
    with open(stderr_file, "w") as err:
        proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                              stderr=err, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + stderr_file.read_text()[-3000:]
    return out, proc.stdout, stderr_file.read_text()


def _log_lines(out: Path) -> list[str]:
    return [ln.split("] ", 1)[1] for ln in (out / "log_rank0.txt").read_text().splitlines()]


def test_plain_step_lines_with_eta(run):
    out, stdout, stderr = run
    assert "\r" not in stderr and "\r" not in stdout  # no bar: stderr is a file
    steps = [ln for ln in _log_lines(out) if re.match(r"epoch \d/2 \[\d/4\] step \d/8 ", ln)]
    assert [ln.split(" step ")[1].split()[0] for ln in steps] == ["2/8", "4/8", "6/8", "8/8"]
    for ln in steps:
        assert re.search(r"loss \S+  lr \S+  \S+ clips/s  data wait \d+%  mem \S+ GiB  "
                         r"eta \d+:\d\d:\d\d \(epoch\) \d+:\d\d:\d\d \(run\)$", ln), ln
        assert ln in stdout  # and on the console, since no bar shows them
    assert steps[-1].endswith("eta 0:00:00 (epoch) 0:00:00 (run)")


def test_evaluation_reports_progress(run):
    out, stdout, _ = run
    lines = _log_lines(out)
    # 8 val videos in batches of 3 on one process: 3 batches, a line every PRINT_FREQ (2) batches and the last;
    # after each of the 2 epochs
    assert [ln.split("  ")[0] for ln in lines if ln.startswith("eval val batch")] == [
        "eval val batch 2/3 (67%)", "eval val batch 3/3 (100%)"] * 2
    final = [ln for ln in lines if ln.startswith("eval test batch")]
    assert final and final[-1].startswith("eval test batch 3/3 (100%)") and "videos/s  eta " in final[-1]
    assert "eval test batch 3/3 (100%)" in stdout


def test_epoch_numbers_agree(run):
    out, stdout, _ = run
    assert "epoch 1/2 done" in stdout and "epoch 2/2 done" in stdout and "epoch 0/" not in stdout
    assert {"ckpt_epoch_1.pth", "ckpt_epoch_2.pth"} <= set(os.listdir(out))
    assert f"saved checkpoint {out / 'ckpt_epoch_2.pth'}" in stdout
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [d for d in lines if d["kind"] == "train"]
    assert [(d["epoch"], d["step"]) for d in train] == [(1, 2), (1, 4), (2, 6), (2, 8)]
    evals = [d for d in lines if d["kind"] == "eval"]
    # the last epoch is validated like the others (1x1), then tested (2x3): best is chosen among the validations
    assert [(e["split"], e["epoch"], e["step"], e["views"]) for e in evals] == [
        ("val", 1, 4, 1), ("val", 2, 8, 1), ("test", 2, 8, 6)]
    summary = json.loads((out / "summary.json").read_text())
    best = max(evals[:2], key=lambda e: e["top1"])
    assert summary["best_epoch"] == best["epoch"] and summary["best_top1"] == best["top1"]
    assert summary["final_split"] == "test" and summary["final_top1"] == evals[2]["top1"]
    # the checkpoint dict keeps the loops' 0-based index, as the original's did; its file name is the number
    assert torch.load(out / "ckpt_epoch_2.pth", weights_only=True)["epoch"] == 1


def test_summary_table(run):
    out, stdout, _ = run
    summary = json.loads((out / "summary.json").read_text())
    table = stdout[stdout.index("Run summary"):]
    assert summary["train_skipped_videos"] == 0 and "train_skipped_videos" not in table
    assert summary["train_listed_videos"] == 16 and re.search(r"train_listed_videos +\| 16", table)
    # the final evaluation's mean per-class top-1, recomputed from the predictions it wrote
    pairs, _ = read_predictions(str(out / "predictions_test.csv"))
    per_class = {c: np.mean([p == c for lab, p in pairs if lab == c]) for c in {lab for lab, _ in pairs}}
    assert summary["final_mean_class_top1"] == pytest.approx(100 * np.mean(list(per_class.values())), abs=1e-3)
    assert "final_mean_class_top1" in table
    assert "not / ACC" not in stdout


def test_plots_written_and_redrawn(run, tmp_path):
    out, stdout, _ = run
    for name in ("training_curves.png", "confusion_test.png"):
        assert (out / name).is_file() and name in stdout
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "plot_run.py"), str(out), "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "training_curves.png"), str(tmp_path / "confusion_test.png")]
    with Image.open(tmp_path / "training_curves.png") as im:
        assert im.format == "PNG" and im.size == (700, 1000)
    with Image.open(tmp_path / "confusion_test.png") as im:  # 4 classes: the matrix
        assert im.format == "PNG" and im.size[0] >= 400 and im.size[1] >= 400
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "plot_run.py"), str(tmp_path / "nothing")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "metrics.jsonl does not exist" in r.stderr
