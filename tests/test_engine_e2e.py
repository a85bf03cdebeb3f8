"""End-to-end runs of train.py on a tiny synthetic dataset through the real DALI CPU pipeline.

- a full run: checkpoints, metrics.jsonl lines with every telemetry key, a multi-view evaluation line, predictions;
- exact resume: a run SIGKILLed mid-epoch (and one killed inside a checkpoint write) resumes and reproduces the
  uninterrupted run's per-step losses;
- two CPU processes under torchrun (gloo): training runs and evaluation counts every video exactly once;
- a non-finite loss stops the run naming the step and the last checkpoint, or is skipped and counted;
- micro-batches short of an optimizer step are not decoded, and a stop at an epoch's last step resumes exactly;
- SIGTERM / SIGUSR1 (to one rank of two, too): every rank stops at the same step with a step checkpoint and exit
  code 4, and the resumed run reproduces the uninterrupted run's per-step losses;
- a stop during the final test on two processes (to torchrun, or to one rank) keeps both ranks' scored videos, and
  the same command tests the rest to the uninterrupted run's predictions.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.video_fixtures import synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
TRAIN_KEYS = ("step", "epoch", "loss", "lr", "clips_per_sec", "frames_per_sec", "data_wait_pct", "step_time_s",
              "max_mem_gb", "mfu", "gpu_util", "nvdec_util")
EVAL_KEYS = ("split", "top1", "top5", "num_videos", "views")

pytestmark = pytest.mark.slow

# Wraps train.main for failure injection inside the real process (no test hooks in the product code).
WRAPPER = r'''
import os, signal, sys
sys.path.insert(0, os.environ["REPO"])
import torch
mode, arg = os.environ.get("E2E_MODE", ""), int(os.environ.get("E2E_ARG", "0"))
if mode == "kill_after_step":  # SIGKILL right after optimizer step `arg` was logged
    import engine.metrics as m
    orig = m.MetricLogger.log_step
    def log_step(self, step, *a, **k):
        out = orig(self, step, *a, **k)
        if step == arg:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    m.MetricLogger.log_step = log_step
elif mode == "signal_in_step":  # E2E_SIGNAL to this process (rank E2E_RANK only) during optimizer step `arg`:
    import engine.metrics as m  # sent as step arg - 1's line is logged, before step arg's batches are read
    orig = m.MetricLogger.log_step
    sig = getattr(signal, os.environ.get("E2E_SIGNAL", "SIGTERM"))
    def log_step(self, step, *a, **k):
        out = orig(self, step, *a, **k)
        if step == arg - 1 and os.environ.get("RANK", "0") == os.environ.get("E2E_RANK", "0"):
            os.kill(os.getpid(), sig)
        return out
    m.MetricLogger.log_step = log_step
elif mode == "signal_in_eval":  # SIGTERM while the evaluation after optimizer step `arg` runs
    import engine.evaluate as ev
    import engine.train_loop as tl
    orig_eval = ev.evaluate
    def evaluate(model, loader, ctx, **k):
        if tl.Trainer._current.state.global_step == arg:
            os.kill(os.getpid(), signal.SIGTERM)
        return orig_eval(model, loader, ctx, **k)
    ev.evaluate = evaluate
    orig_fit = tl.Trainer.fit
    def fit(self):
        tl.Trainer._current = self
        return orig_fit(self)
    tl.Trainer.fit = fit
elif mode == "interrupt_in_final_test":  # Ctrl-C (SIGINT; E2E_SIGNAL names another) as the final test starts
    import engine.evaluate as ev
    orig_eval = ev.evaluate
    sig = getattr(signal, os.environ.get("E2E_SIGNAL", "SIGINT"))
    def evaluate(model, loader, ctx, **k):
        if k.get("split") == "test":
            os.kill(os.getpid(), sig)
        return orig_eval(model, loader, ctx, **k)
    ev.evaluate = evaluate
elif mode == "signal_after_test_batch":  # once every rank scored its first final-test batch: E2E_SIGNAL to
    import time                         # torchrun (this process's parent), or with E2E_RANK to that rank alone
    import engine.metrics as m
    import engine.preemption as pre
    got, orig_on_signal, orig_progress = [], pre.StepControl._on_signal, m.MetricLogger.eval_progress
    sig, rank, alone = getattr(signal, os.environ["E2E_SIGNAL"]), os.environ["RANK"], os.environ.get("E2E_RANK")
    def on_signal(self, signum, frame):
        got.append(signum)
        return orig_on_signal(self, signum, frame)
    pre.StepControl._on_signal = on_signal
    def wait_for(done):
        deadline = time.monotonic() + 60
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)
    def first_test_batch_done():
        sync = os.environ["E2E_SYNC"]
        open(os.path.join(sync, f"rank{rank}"), "w").close()
        wait_for(lambda: len(os.listdir(sync)) == int(os.environ["WORLD_SIZE"]))
        if alone is None or alone == rank:
            os.kill(os.getppid() if alone is None else os.getpid(), sig)
            wait_for(lambda: got)  # this rank's next batch sees its stop
    class Progress:
        def __init__(self, inner):
            self.inner, self.batches = inner, 0
        def __call__(self, videos):
            self.inner(videos)
            self.batches += 1
            if self.batches == 1:
                first_test_batch_done()
        def __getattr__(self, name):
            return getattr(self.inner, name)
    def eval_progress(self, split, total):
        progress = orig_progress(self, split, total)
        return Progress(progress) if split == "test" else progress
    m.MetricLogger.eval_progress = eval_progress
elif mode == "interrupt_in_plots":  # Ctrl-C as the plots of a finished run are drawn, after its summary.json
    import engine.runner as r
    orig_plot = r.plot_finished_run
    def plot_finished_run(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)
        return orig_plot(*a, **k)
    r.plot_finished_run = plot_finished_run
elif mode == "kill_in_save":  # SIGKILL half-way through writing the checkpoint of step `arg`
    orig_save = torch.save
    def save(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("global_step") == arg and "optimizer" in obj:
            f.write(b"PK\x03\x04partial")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return orig_save(obj, f, *a, **k)
    torch.save = save
elif mode == "signal_in_index":  # SIGTERM to this process as it probes video `arg` of a first index build
    import dali_pipelines.index as ix
    orig_probe, probes = ix._probe_job, [0]
    def probe(job):
        probes[0] += 1
        if probes[0] == arg:
            os.kill(os.getpid(), signal.SIGTERM)
        return orig_probe(job)
    ix._probe_job = probe
elif mode == "signal_in_resume":  # SIGTERM to this process as the trainer loads its checkpoint
    import engine.train_loop as tl
    orig_resume = tl.Trainer.resume
    def resume(self, *a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        return orig_resume(self, *a, **k)
    tl.Trainer.resume = resume
elif mode in ("nan_at_call", "nan_grad_at_call"):  # micro-batch `arg` (1-based): a NaN loss, or NaN gradients
    import engine.runner as r
    orig_crit = r.build_criterion
    def build_criterion(*a, **k):
        crit, calls = orig_crit(*a, **k), [0]
        def wrapped(logits, target):
            calls[0] += 1
            loss = crit(logits, target)
            if calls[0] != arg:
                return loss
            if mode == "nan_at_call":
                return loss * float("nan")
            return loss + (logits * 0).sum().sqrt()  # adds 0, but sqrt's gradient at 0 is inf: inf x 0 = NaN
        return wrapped
    r.build_criterion = build_criterion
import train
if __name__ == "__main__":  # the decode workers (forkserver) import this module: they must not train
    sys.exit(train.main(sys.argv[1:]))
'''


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synthetic_dataset(tmp_path_factory, "synth", 4, 2, num_frames=16, size=(64, 48))


def _opts(data: Path, out: Path, **extra) -> list[str]:
    base = {
        "DATA.DATASET": "motion-e2e", "DATA.ROOT": data,
        "DATA.TRAIN_FILE": data / "train.txt", "DATA.VAL_FILE": data / "val.txt",
        "DATA.LABEL_LIST": data / "labels.csv", "DATA.INPUT_SIZE": 32, "DATA.NUM_FRAMES": 4, "DATA.TUBELET_SIZE": 2,
        "DATA.NUM_THREADS": 1, "DATA.NUM_WORKERS": 1, "DATA.INDEX_WORKERS": 1,
        "TRAIN.BATCH_SIZE": 4, "TRAIN.EPOCHS": 2, "TRAIN.WARMUP_EPOCHS": 0.5, "TEST.BATCH_SIZE": 3,
        "TEST.NUM_CLIP": 1, "TEST.NUM_CROP": 1, "TEST.EVAL_FREQ": 1, "TEST.FINAL_NUM_CLIP": 2,
        "TEST.FINAL_NUM_CROP": 3, "LOG.PROGRESS_BAR": False, "LOG.TENSORBOARD": False, "PRINT_FREQ": 1,
        "OUTPUT": out,
    }
    base.update(extra)
    return [str(x) for kv in base.items() for x in kv]


def _private_tmp(tmp_path: Path) -> str:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return str(tmp_path / "tmp")


def _run(tmp_path: Path, opts: list[str], mode: str = "", arg: int = 0, nproc: int = 0,
         launcher: str = "torch.distributed.run", **env_extra: str):
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    # TMPDIR: DALI's conditionals write their converted functions to temporary files that only an orderly exit
    # removes; the runs killed here would leave them behind.
    env = dict(os.environ, REPO=str(ROOT), E2E_MODE=mode, E2E_ARG=str(arg), OMP_NUM_THREADS="1",
               TMPDIR=_private_tmp(tmp_path), **env_extra)
    if nproc:
        cmd = [sys.executable, "-m", launcher, "--nproc_per_node", str(nproc), "--standalone", str(script)]
    else:
        cmd = [sys.executable, str(script)]
    cmd += ["--cfg", str(ROOT / "configs" / "demo.yaml"), "--opts", *opts]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _losses(out: Path) -> dict[int, float]:
    # The last line of each step wins (a resumed run re-logs the steps after its checkpoint).
    return {d["step"]: d["loss"] for d in _lines(out) if d["kind"] == "train"}


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """An uninterrupted run with accumulation, mixup, drop path and mid-epoch checkpoints (the resume baseline)."""
    tmp = tmp_path_factory.mktemp("ref")
    out = tmp / "out"
    r = _run(tmp, _opts(dataset, out, **RESUME_OPTS))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r


# 16 train clips, B 2 x ACC 2 -> 4 optimizer steps per epoch, 3 epochs; a checkpoint every 2 steps mid-epoch
# and after epochs 2 and 3 (SAVE_FREQ 2): steps 2, 6, 8 (end of epoch 2), 10, 12 (end of epoch 3). EMA (with a decay
# small enough that its weights differ from the model's) and gradient clipping are on, so both must resume exactly.
RESUME_OPTS = {"TRAIN.BATCH_SIZE": 2, "TRAIN.ACCUMULATION_STEPS": 2, "TRAIN.EPOCHS": 3, "SAVE_STEPS": 2,
               "TRAIN.EMA": True, "TRAIN.EMA_DECAY": 0.7, "TRAIN.CLIP_GRAD": 0.5,
               "MODEL.DROP_PATH_RATE": 0.2, "AUG.MIXUP": 0.8, "AUG.CUTMIX": 1.0, "TEST.EVAL_FREQ": 2,
               "TEST.FINAL_NUM_CLIP": 0, "KEEP_LAST": 3, "TRAIN.AUTO_RESUME": True, "SAVE_FREQ": 2}


def test_full_run_outputs(reference, dataset):
    out, r = reference
    lines = _lines(out)
    train = [d for d in lines if d["kind"] == "train"]
    assert [d["step"] for d in train] == list(range(1, 13))
    for d in train:
        for k in TRAIN_KEYS:
            assert k in d, k
        assert d["loss"] > 0 and d["lr"] > 0 and d["clips_per_sec"] > 0 and 0 <= d["data_wait_pct"] <= 100
        assert d["frames_per_sec"] == pytest.approx(4 * d["clips_per_sec"]) and d["max_mem_gb"] > 0
    evals = [d for d in lines if d["kind"] == "eval"]
    assert [e["epoch"] for e in evals] == [2, 3]  # EVAL_FREQ 2 + the last epoch (epochs counted from 1)
    for e in evals:
        assert all(k in e for k in EVAL_KEYS) and e["num_videos"] == 8 and e["views"] == 1
        # the loader's failure counters reach the eval line
        assert (e["listed_videos"], e["bad_at_index"], e["skipped_videos"], e["rebuilds"]) == (8, 0, 0, 0)
    # after every epoch, the training loader's counters: 16 samples (clips) an epoch (4 steps x B 2 x ACC 2), per route
    data = [d for d in lines if d["kind"] == "data"]
    assert [(d["split"], d["epoch"], d["step"]) for d in data] == [("train", 1, 4), ("train", 2, 8), ("train", 3, 12)]
    for d in data:
        routes = {k[len("samples_"):]: v for k, v in d.items() if k.startswith("samples_") and v}
        assert sum(routes.values()) == 16 * d["epoch"] and routes, d
        assert sum(v for k, v in d.items() if k.startswith("videos_")) == 16 and d["route_fallbacks"] == 0
        assert 0.05 < d["host_rss_gb"] < 20 and d["workers_rss_gb"] >= 0  # resident host memory at the epoch end
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_listed_videos"] == 16 and summary["train_skipped_videos"] == 0
    assert summary["train_substituted"] == 0 and summary["val_bad_at_index"] == 0
    assert summary["dataset"] == "motion-e2e" and "training on motion-e2e: 3 epochs x 4 steps" in r.stdout
    assert "global batch 4, precision fp32 (TRAIN.PRECISION auto on a CPU)" in r.stdout  # what auto chose, and why
    assert summary["mode"] == "train"
    names = sorted(os.listdir(out))
    assert {"ckpt_epoch_2.pth", "ckpt_epoch_3.pth", "best.pth", "config.yaml", "summary.json", "predictions_val.csv",
            "per_class_val.csv"} <= set(names), names
    assert len([n for n in names if n.startswith("ckpt_")]) == 3  # KEEP_LAST
    assert not [n for n in names if n.endswith(".tmp")]
    pred = (out / "predictions_val.csv").read_text().splitlines()
    assert len(pred) == 9 and "moving up" in "".join(pred)  # class names from DATA.LABEL_LIST
    rows = list(csv.reader(pred))  # 4 classes: ranks 1-4 only, every row as wide as the header
    assert rows[0][-5:] == ["top4_class", "top4_name", "top4_prob", "status", "error"]
    assert {len(x) for x in rows} == {len(rows[0])} and {x[-2] for x in rows[1:]} == {"ok"}
    assert "Run summary" in r.stdout


def test_multiview_final_test(dataset, tmp_path):
    out = tmp_path / "out"
    # the val list names a 9th video that is not readable: it is left out, counted and warned about
    (tmp_path / "broken.webm").write_bytes(b"\x1aE\xdf\xa3 not a video")
    val = tmp_path / "val.txt"
    val.write_text((dataset / "val.txt").read_text() + f"{tmp_path / 'broken.webm'} 0\n")
    r = _run(tmp_path, _opts(dataset, out, **{"TRAIN.EPOCHS": 1, "TEST.EVAL_FREQ": 0, "DATA.VAL_FILE": val}))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # EVAL_FREQ 0: the last epoch's validation (1x1, what best is chosen on), then the 2x3 final test
    last_val, test = [d for d in _lines(out) if d["kind"] == "eval"]
    assert (last_val["split"], last_val["views"], test["split"], test["views"]) == ("val", 1, "test", 6)
    # the final test scores the weights of the last epoch's checkpoint, saved just before it: its line names it
    assert (last_val["checkpoint"], test["checkpoint"]) == (None, str(out / "ckpt_epoch_1.pth"))
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["final_num_clip"], summary["final_num_crop"], summary["final_checkpoint"]) == (
        2, 3, str(out / "ckpt_epoch_1.pth"))
    assert (summary["best_top1"], summary["final_top1"]) == (last_val["top1"], test["top1"])
    assert test["num_videos"] == 8
    assert (test["listed_videos"], test["bad_at_index"]) == (9, 1)
    assert "test: evaluated 8 of 9 listed videos (1 bad when the list was indexed" in r.stdout
    # ... and has its row, with the index's reason, in the predictions of both evaluations
    for split in ("val", "test"):
        rows = list(csv.DictReader((out / f"predictions_{split}.csv").read_text().splitlines()))
        assert [r["status"] for r in rows] == ["ok"] * 8 + ["error"] and rows[-1]["path"].endswith("broken.webm")
        assert rows[-1]["error"] and rows[-1]["top1_class"] == ""
    assert (out / "ckpt_epoch_1.pth").exists()
    # the summary carries the final test loader's counters, as the eval line does
    assert (summary["test_listed_videos"], summary["test_bad_at_index"], summary["test_skipped_videos"]) == (9, 1, 0)
    # a sample of the test loader is a video with its 6 views (2 clips x 3 crops), not a clip
    assert sum(v for k, v in summary.items() if k.startswith("test_samples_")) == sum(
        v for k, v in test.items() if k.startswith("samples_")) == 8
    # the same command again: the run is finished, nothing is trained and its results stay as they are
    before = {name: (out / name).read_bytes() for name in ("summary.json", "metrics.jsonl", "predictions_test.csv")}
    again = _run(tmp_path, _opts(dataset, out, **{"TRAIN.EPOCHS": 1, "TEST.EVAL_FREQ": 0, "DATA.VAL_FILE": val,
                                                  "TRAIN.AUTO_RESUME": True}))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"the run in {out} is finished (epoch 1/1, step 4): nothing to train" in again.stdout
    assert {name: (out / name).read_bytes() for name in before} == before
    # ... unless its summary is missing or cut short (the attempt ended between its last checkpoint and its
    # summary): the summary is written from the results the run logged, without evaluating again
    for damage in ("unlink", "truncate"):
        if damage == "unlink":
            (out / "summary.json").unlink()
        else:
            (out / "summary.json").write_text('{"wall_time_s": 12.5, "optimiz')
        again = _run(tmp_path, _opts(dataset, out, **{"TRAIN.EPOCHS": 1, "TEST.EVAL_FREQ": 0, "DATA.VAL_FILE": val,
                                                      "TRAIN.AUTO_RESUME": True}))
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "finished training, but its summary.json is missing, damaged" in again.stdout
        assert "is in metrics.jsonl: the summary reports it (nothing is evaluated again)" in again.stdout
        assert (out / "metrics.jsonl").read_bytes() == before["metrics.jsonl"]  # no second line of the same test
        rewritten = json.loads((out / "summary.json").read_text())
        # the summary the run wrote, loaders' counters (train_*, val_*, test_*) included, but for what a process
        # measures itself: the wall time (the run's up to its last checkpoint) and the peak memory (its last
        # training line's)
        measured = ("wall_time_s", "max_mem_gb")
        assert {k: v for k, v in rewritten.items() if k not in measured} == \
            {k: v for k, v in summary.items() if k not in measured}
        assert 0 < rewritten["wall_time_s"] <= summary["wall_time_s"]
        assert rewritten["max_mem_gb"] == [d for d in _lines(out) if d["kind"] == "train"][-1]["max_mem_gb"]
        assert rewritten["final_top1"] == test["top1"] and rewritten["last_loss"] is not None


def _assert_one_record(out: Path, ref_out: Path, resumed_from: str) -> None:
    """A stopped and resumed run's record reads as the uninterrupted run's: one line per step and evaluation (the
    stopped attempt's lines after its checkpoint are gone), and a summary of the whole run."""
    lines = _lines(out)
    assert [d["step"] for d in lines if d["kind"] == "train"] == list(range(1, 13))
    assert [(d["kind"], d["step"]) for d in lines if d["kind"] != "train"] == [
        (d["kind"], d["step"]) for d in _lines(ref_out) if d["kind"] != "train"]
    ref_sum, got_sum = (json.loads((d / "summary.json").read_text()) for d in (ref_out, out))
    for key in ("optimizer_steps", "clips_trained", "evaluations", "skipped_steps"):
        assert got_sum[key] == ref_sum[key], key
    assert got_sum["resumed_from"] == str(out / resumed_from) and ref_sum["resumed_from"] is None


@pytest.mark.parametrize("mode,arg,resumes_from", [("kill_after_step", 7, "ckpt_step_6.pth"),
                                                    ("kill_in_save", 6, "ckpt_step_2.pth")])
def test_exact_resume_after_sigkill(reference, dataset, tmp_path, mode, arg, resumes_from):
    ref_out, _ = reference
    out = tmp_path / "out"
    opts = _opts(dataset, out, **RESUME_OPTS)
    killed = _run(tmp_path, opts, mode=mode, arg=arg)
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    if mode == "kill_in_save":
        assert not (out / "ckpt_step_6.pth").exists()  # never a half-written file under the final name
        killed_write = list(out.glob(".ckpt_step_6.pth.*.tmp"))
        assert len(killed_write) == 1  # the killed write's temporary file
        # a minute old, as a real resume finds it: a fresh one may be a live writer's, kept (run_files.killed_writes)
        os.utime(killed_write[0], (time.time() - 120,) * 2)
    resumed = _run(tmp_path, opts)  # TRAIN.AUTO_RESUME picks the newest complete checkpoint
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert not list(out.glob(".*.tmp"))  # removed by the resumed run's first save (a checkpoint's size each)
    assert f"resumed from {out / resumes_from}" in resumed.stdout, \
        [x for x in resumed.stdout.splitlines() if "resum" in x or "saved" in x]
    ref, got = _losses(ref_out), _losses(out)
    assert sorted(got) == sorted(ref) == list(range(1, 13))
    _assert_one_record(out, ref_out, resumes_from)
    for step in range(1, 13):
        assert got[step] == pytest.approx(ref[step], rel=1e-6), (step, got[step], ref[step])
    ref_eval = [d["top1"] for d in _lines(ref_out) if d["kind"] == "eval"]
    got_eval = [d["top1"] for d in _lines(out) if d["kind"] == "eval"]
    assert got_eval[-1] == ref_eval[-1]
    # the EMA weights (what is evaluated) continue exactly too
    import torch

    ref_ck, got_ck = (torch.load(d / "ckpt_epoch_3.pth", weights_only=True) for d in (ref_out, out))
    assert ref_ck["ema"] is not None and ref_ck["ema"].keys() == got_ck["ema"].keys()
    for k, v in ref_ck["ema"].items():
        torch.testing.assert_close(got_ck["ema"][k], v, rtol=1e-5, atol=1e-6, msg=k)
        assert k != "head.weight" or not torch.allclose(v, ref_ck["model"][k])  # EMA is not the model


def test_fresh_start_moves_an_earlier_longer_run_aside(reference, dataset, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)  # 12 steps, checkpoints up to step 12
    earlier = sorted(os.listdir(out))
    r = _run(tmp_path, _opts(dataset, out, **{**RESUME_OPTS, "TRAIN.AUTO_RESUME": False, "TRAIN.EPOCHS": 1}))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "held an earlier run's files and this run starts from step 0" in r.stdout
    (moved,) = (out / "earlier_runs").iterdir()
    assert sorted(os.listdir(moved)) == [n for n in earlier
                                         if not n.startswith("log_rank") and n not in ("exit_status.json", ".run.lock")]
    assert (moved / "ckpt_epoch_3.pth").is_file() and len(_lines(moved)) == len(_lines(ref_out))
    # (a copy: its summary names the checkpoint of the folder it was copied from, which did not move)
    assert json.loads((moved / "summary.json").read_text())["last_checkpoint"] == str(ref_out / "ckpt_epoch_3.pth")
    # this run's checkpoints were not rotated out by the earlier run's higher steps; its lines stand alone
    summary = json.loads((out / "summary.json").read_text())
    assert summary["optimizer_steps"] == 4 and os.path.isfile(summary["last_checkpoint"])
    assert sorted(n for n in os.listdir(out) if n.startswith("ckpt_")) == ["ckpt_epoch_1.pth", "ckpt_step_2.pth"]
    assert [d["step"] for d in _lines(out) if d["kind"] == "train"] == [1, 2, 3, 4]
    # evaluating into the same OUTPUT keeps the training run's summary (moved aside, not overwritten)
    r = _run(tmp_path, [*_opts(dataset, out, **RESUME_OPTS), "TEST.ONLY_TEST", "True"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    kept = [d / "summary.json" for d in (out / "earlier_runs").iterdir() if (d / "summary.json").is_file()]
    assert sorted(json.loads(p.read_text())["optimizer_steps"] for p in kept) == [4, 12]  # this run's, the first
    evaluated = json.loads((out / "summary.json").read_text())
    assert evaluated["evaluated"] == str(out / "ckpt_epoch_1.pth") and evaluated["mode"] == "evaluate only"


def test_resume_of_another_or_an_older_checkpoint_sets_superseded_files_aside(reference, dataset, tmp_path):
    ref_out, _ = reference
    # going back to epoch 2 of the run in OUTPUT: the checkpoints after it move aside, epoch 3 is trained again
    back = tmp_path / "back"
    shutil.copytree(ref_out, back)
    r = _run(tmp_path, _opts(dataset, back, **RESUME_OPTS) + ["--resume", str(back / "ckpt_epoch_2.pth")])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"this run goes back to {back / 'ckpt_epoch_2.pth'}" in r.stdout
    (moved,) = (back / "earlier_runs").iterdir()
    best_step = torch.load(ref_out / "best.pth", weights_only=True)["global_step"]
    assert sorted(os.listdir(moved)) == sorted(  # what came after step 8: checkpoints, a later best, results
        ["ckpt_epoch_3.pth", "ckpt_step_10.pth", "summary.json", "predictions_val.csv", "per_class_val.csv",
         "confusion_val.png"]
        + (["best.pth"] if best_step > 8 else []))
    assert sorted(n for n in os.listdir(back) if n.startswith("ckpt_")) == [
        "ckpt_epoch_2.pth", "ckpt_epoch_3.pth", "ckpt_step_10.pth"]
    _assert_one_record(back, ref_out, "ckpt_epoch_2.pth")
    # continuing that checkpoint in another OUTPUT that holds a longer run: the longer run moves aside
    other = tmp_path / "other"
    shutil.copytree(ref_out, other)
    r = _run(tmp_path, _opts(dataset, other, **RESUME_OPTS) + ["--resume", str(back / "ckpt_step_10.pth")])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"this run continues {back / 'ckpt_step_10.pth'}, a checkpoint from elsewhere" in r.stdout
    summary = json.loads((other / "summary.json").read_text())
    assert summary["last_checkpoint"] == str(other / "ckpt_epoch_3.pth") and os.path.isfile(summary["last_checkpoint"])
    assert [d["step"] for d in _lines(other) if d["kind"] == "train"] == [11, 12]


def test_a_requeued_resume_command_continues_its_own_progress(reference, dataset, tmp_path):
    # A job script names a checkpoint of another run with --resume and is requeued: each repeat of the command goes
    # on from the newest checkpoint its attempts wrote (it used to start over from the named file every time).
    ref_out, _ = reference
    out = tmp_path / "out"
    command = _opts(dataset, out, **RESUME_OPTS) + ["--resume", str(ref_out / "ckpt_epoch_2.pth")]
    killed = _run(tmp_path, command, mode="kill_after_step", arg=11)
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    repeated = _run(tmp_path, command)
    assert repeated.returncode == 0, repeated.stdout[-3000:] + repeated.stderr[-3000:]
    assert f"{out / 'ckpt_step_10.pth'} continues it" in repeated.stdout
    assert f"resumed from {out / 'ckpt_step_10.pth'}" in repeated.stdout
    assert not (out / "earlier_runs").exists()
    train = [d for d in _lines(out) if d["kind"] == "train"]
    assert [d["step"] for d in train] == [9, 10, 11, 12]
    ref = _losses(ref_out)
    for d in train:
        assert d["loss"] == pytest.approx(ref[d["step"]], rel=1e-6), d["step"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from"] == str(out / "ckpt_step_10.pth") and summary["optimizer_steps"] == 12
    # once more after the end: the run is finished, nothing is trained again
    again = _run(tmp_path, command)
    assert again.returncode == 0 and "is finished (epoch 3/3, step 12): nothing to train" in again.stdout


def test_resume_on_two_processes_keeps_counting_steps(dataset, tmp_path):
    # 1 process: 4 steps per epoch; killed after step 7, it resumes from ckpt_step_6 (mid epoch 2) on 2 processes
    # with 2 steps per epoch: epoch 2 restarts (steps 7, 8), epoch 3 is steps 9, 10. The step count never goes back,
    # so no line of the record is dropped or repeated and this run's checkpoints outrank the first attempt's.
    out = tmp_path / "out"
    opts = _opts(dataset, out, **{**RESUME_OPTS, "TEST.EVAL_FREQ": 1})
    killed = _run(tmp_path, opts, mode="kill_after_step", arg=7)
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    r = _run(tmp_path, opts, nproc=2)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"resumed from {out / 'ckpt_step_6.pth'}: epoch 2, step 6" in r.stdout
    lines = _lines(out)
    assert [d["step"] for d in lines if d["kind"] == "train"] == list(range(1, 11))
    assert [(d["epoch"], d["step"]) for d in lines if d["kind"] == "eval"] == [(1, 4), (2, 8), (3, 10)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["optimizer_steps"] == 10 and summary["last_checkpoint"] == str(out / "ckpt_epoch_3.pth")
    assert os.path.isfile(summary["last_checkpoint"])
    # the LR schedule followed this run's epochs: step 10 ran at position 5 of a 3 x 2-step schedule (the saved
    # schedule counted 4 steps per epoch and would have put it at mid-cosine)
    import torch

    from configs import load_config
    from engine.optim import build_scheduler

    cfg = load_config(str(out / "config.yaml"))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.TRAIN.LR)
    schedule = build_scheduler(cfg.TRAIN, opt, steps_per_epoch=2)
    schedule.step_update(5)
    assert [d["lr"] for d in lines if d["kind"] == "train"][-1] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-6)


def test_two_processes_gloo(dataset, tmp_path):
    out = tmp_path / "out"
    # Accumulation (no_sync on the first micro-batch) and a frozen patch embedding (STOP_GRAD_CONV1: parameters
    # without gradients, which DDP refuses unless they are frozen) under DDP.
    opts = {"TRAIN.EPOCHS": 1, "TEST.FINAL_NUM_CLIP": 0, "TRAIN.BATCH_SIZE": 2, "TRAIN.ACCUMULATION_STEPS": 2,
            "MODEL.STOP_GRAD_CONV1": True}
    r = _run(tmp_path, _opts(dataset, out, **opts), nproc=2)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = _lines(out)
    train = [d for d in lines if d["kind"] == "train"]
    assert [d["step"] for d in train] == [1, 2]  # 16 clips / (2 per rank x ACC 2 x 2 ranks)
    # the logged loss is the mean over both ranks' clips: both ranks log the same value (each trains other clips)
    logged = [[ln.split("loss ")[1].split()[0] for ln in (out / f"log_rank{r}.txt").read_text().splitlines()
               if " step " in ln and "loss " in ln] for r in (0, 1)]
    assert len(logged[0]) == 2 and logged[0] == logged[1]
    evals = [d for d in lines if d["kind"] == "eval"]
    assert evals[0]["num_videos"] == 8 and evals[0]["duplicates"] == 0
    rows = [line.split(",")[0] for line in (out / "predictions_val.csv").read_text().splitlines()[1:]]
    assert sorted(map(int, rows)) == list(range(8))  # every val video exactly once
    assert (out / "log_rank1.txt").exists()


def test_original_launch_command_two_processes(dataset, tmp_path):
    """The original's launch: 'python -m torch.distributed.launch ... main.py -cfg ...', which passes the local
    rank as an argument ('--local-rank=N' since torch 2.0)."""
    out = tmp_path / "out"
    r = _run(tmp_path, _opts(dataset, out, **{"TRAIN.EPOCHS": 1, "TEST.FINAL_NUM_CLIP": 0}), nproc=2,
             launcher="torch.distributed.launch")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "unrecognized arguments" not in r.stderr
    train = [d for d in _lines(out) if d["kind"] == "train"]
    assert [d["step"] for d in train] == [1, 2]  # 16 clips / (4 per rank x 2 ranks)
    assert (out / "log_rank1.txt").exists() and (out / "ckpt_epoch_1.pth").exists()


# A NaN loss, and NaN gradients under a finite loss (which would otherwise reach the weights: no loss scaler in
# bf16 or fp32), stop the run or are skipped alike.
NONFINITE = [("nan_at_call", "non-finite loss (nan)"), ("nan_grad_at_call", "non-finite gradients (loss ")]


@pytest.mark.parametrize("mode, says", NONFINITE)
def test_nonfinite_loss_stops_with_step_and_checkpoint(dataset, tmp_path, mode, says):
    out = tmp_path / "out"
    r = _run(tmp_path, _opts(dataset, out, SAVE_STEPS=2), mode=mode, arg=3)
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-2000:]
    msg = r.stdout + r.stderr
    assert says in msg and "step 3" in msg and str(out / "ckpt_step_2.pth") in msg
    assert "Traceback" not in msg


@pytest.mark.parametrize("mode", [m for m, _ in NONFINITE])
def test_nonfinite_loss_skipped_and_counted(dataset, tmp_path, mode):
    out = tmp_path / "out"
    r = _run(tmp_path, _opts(dataset, out, **{"TRAIN.SKIP_NONFINITE": True, "TRAIN.EPOCHS": 1,
                                              "TEST.FINAL_NUM_CLIP": 0}), mode=mode, arg=2)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_steps"] == 1
    train = [d for d in _lines(out) if d["kind"] == "train"]
    assert train[1]["loss"] is None and train[-1]["skipped_steps"] == 1 and len(train) == 4


@pytest.mark.parametrize("signal_name,step", [("SIGTERM", 7), ("SIGUSR1", 4)])  # mid-epoch; an epoch's last step
def test_stop_signal_saves_a_step_checkpoint_and_resumes_exactly(reference, dataset, tmp_path, signal_name, step):
    ref_out, _ = reference
    out = tmp_path / "out"
    opts = _opts(dataset, out, **RESUME_OPTS)
    stopped = _run(tmp_path, opts, mode="signal_in_step", arg=step, E2E_SIGNAL=signal_name)
    assert stopped.returncode == 4, stopped.stdout[-2000:] + stopped.stderr[-2000:]
    assert f"{signal_name} received: stopped after optimizer step {step} with checkpoint " \
           f"{out / f'ckpt_step_{step}.pth'}" in stopped.stdout
    assert max(_losses(out)) == step  # stopped within the step the signal arrived in
    assert "Traceback" not in stopped.stderr
    # what a batch script reads to requeue a stopped run only (README's SLURM script)
    assert json.loads((out / "exit_status.json").read_text())["exit_code"] == 4
    resumed = _run(tmp_path, opts)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert json.loads((out / "exit_status.json").read_text()) == {"exit_code": 0, "meaning": "finished"}
    assert f"resumed from {out / f'ckpt_step_{step}.pth'}" in resumed.stdout
    ref, got = _losses(ref_out), _losses(out)
    assert sorted(got) == sorted(ref) == list(range(1, 13))
    _assert_one_record(out, ref_out, f"ckpt_step_{step}.pth")
    for s in range(1, 13):
        assert got[s] == pytest.approx(ref[s], rel=1e-6), (s, got[s], ref[s])
    ref_eval = [(d["epoch"], d["top1"]) for d in _lines(ref_out) if d["kind"] == "eval"]
    assert [(d["epoch"], d["top1"]) for d in _lines(out) if d["kind"] == "eval"] == ref_eval


def test_micro_batches_short_of_a_step_are_not_decoded_and_a_stop_at_the_epoch_end_resumes_exactly(dataset, tmp_path):
    """16 clips, TRAIN.BATCH_SIZE 3: 5 batches an epoch, of which TRAIN.ACCUMULATION_STEPS 2 trains 2 steps on 4.
    The fifth was decoded only to be dropped; now it is not decoded: the data lines and the summary count 12 clips
    an epoch, not 15. A stop at epoch 1's last step (its loader at the last batch the steps use) resumes with the
    uninterrupted run's losses and decodes nothing more of epoch 1."""
    opts = {"TRAIN.BATCH_SIZE": 3, "TRAIN.ACCUMULATION_STEPS": 2, "TRAIN.EPOCHS": 2, "TEST.EVAL_FREQ": 2,
            "TEST.FINAL_NUM_CLIP": 0, "TRAIN.AUTO_RESUME": True}
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    ref = _run(tmp_path, _opts(dataset, ref_out, **opts))
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    assert "2 epochs x 2 steps" in ref.stdout and sorted(_losses(ref_out)) == [1, 2, 3, 4]

    def samples(d: dict) -> int:
        return sum(v for k, v in d.items() if k.startswith(("samples_", "train_samples_")))

    assert [(d["epoch"], samples(d)) for d in _lines(ref_out) if d["kind"] == "data"] == [(1, 12), (2, 24)]
    assert samples(json.loads((ref_out / "summary.json").read_text())) == 24
    stopped = _run(tmp_path, _opts(dataset, out, **opts), mode="signal_in_step", arg=2)
    assert stopped.returncode == 4 and (out / "ckpt_step_2.pth").exists(), stopped.stdout[-2000:]
    resumed = _run(tmp_path, _opts(dataset, out, **opts))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {out / 'ckpt_step_2.pth'}" in resumed.stdout
    assert _losses(out) == pytest.approx(_losses(ref_out), rel=1e-6)
    assert [(d["epoch"], samples(d)) for d in _lines(out) if d["kind"] == "data"] == [(1, 0), (2, 12)]


def test_stop_signal_logs_the_last_step_before_its_checkpoint(dataset, tmp_path):
    """A stop at step 2 of 4 with PRINT_FREQ 4: the step's pending progress line is written before the checkpoint's
    line, on the console and in log_rank0.txt, as it happened."""
    out = tmp_path / "out"
    opts = _opts(dataset, out, **{"TRAIN.EPOCHS": 1, "TEST.FINAL_NUM_CLIP": 0, "PRINT_FREQ": 4})
    stopped = _run(tmp_path, opts, mode="signal_in_step", arg=2)
    assert stopped.returncode == 4, stopped.stdout[-2000:] + stopped.stderr[-2000:]
    saved = f"saved checkpoint {out / 'ckpt_step_2.pth'}"
    for text in (stopped.stdout, (out / "log_rank0.txt").read_text()):
        lines = text.splitlines()
        order = [next(i for i, line in enumerate(lines) if needle in line)
                 for needle in ("epoch 1/1 [2/4] step 2/4 ", saved, "stopped: SIGTERM received")]
        assert order == sorted(order) and order[-1] == len(lines) - 1, text[-2000:]
    assert [d["step"] for d in _lines(out) if d["kind"] == "train"] == [2]


def test_stop_signal_during_evaluation_saves_the_epoch(reference, dataset, tmp_path):
    """The evaluation after epoch 2 (step 8) is interrupted by SIGTERM; with SAVE_FREQ 3 that epoch would not be
    saved, so the stop writes its epoch checkpoint, and the resumed run trains epoch 3 as the reference did."""
    ref_out, _ = reference
    out = tmp_path / "out"
    opts = _opts(dataset, out, **{**RESUME_OPTS, "SAVE_FREQ": 3})
    stopped = _run(tmp_path, opts, mode="signal_in_eval", arg=8)
    assert stopped.returncode == 4, stopped.stdout[-2000:] + stopped.stderr[-2000:]
    # epoch 2 ends at step 8: its checkpoint is ckpt_epoch_2.pth (epochs are numbered from 1)
    assert f"stopped after optimizer step 8 with checkpoint {out / 'ckpt_epoch_2.pth'}" in stopped.stdout
    assert len([d for d in _lines(out) if d["kind"] == "eval"]) == 1  # the evaluation itself completed
    resumed = _run(tmp_path, opts)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {out / 'ckpt_epoch_2.pth'}" in resumed.stdout
    ref, got = _losses(ref_out), _losses(out)
    assert sorted(got) == list(range(1, 13))
    for s in range(1, 13):
        assert got[s] == pytest.approx(ref[s], rel=1e-6), (s, got[s], ref[s])


def test_ctrl_c_in_the_final_test_keeps_the_last_epoch_and_the_rerun_only_tests(dataset, tmp_path):
    """The final multi-view test is the longest evaluation; stopped there, the run must not lose its last epoch's
    training: that epoch's checkpoint is written before the test, and the same command then tests it again."""
    out = tmp_path / "out"
    opts = _opts(dataset, out, **{"TRAIN.EPOCHS": 1, "TRAIN.AUTO_RESUME": True})
    stopped = _run(tmp_path, opts, mode="interrupt_in_final_test")
    assert stopped.returncode == -2, stopped.stdout[-2000:] + stopped.stderr[-2000:]  # by SIGINT: 130 in a shell
    assert (out / "ckpt_epoch_1.pth").is_file(), sorted(p.name for p in out.iterdir())
    # before its first batch: nothing kept, and no next step's checkpoint to speak of
    assert stopped.stderr.strip().splitlines()[-1] == (
        "interrupted: the final test stopped where it was (a Ctrl-C here, or with several processes, keeps no partial "
        "score; one during a single process's batches keeps the videos scored so far, as SIGTERM or SIGUSR1 do, which "
        "stop after the batch in flight and keep them in test_progress.json, exit code 4). The training is finished "
        f"(last checkpoint {out / 'ckpt_epoch_1.pth'}); its summary.json is not written yet. Run the same command "
        "again to test the rest and write the summary")
    assert not (out / "test_progress.json").exists()
    assert not (out / "summary.json").exists() and not (out / "predictions_test.csv").exists()
    assert [d["split"] for d in _lines(out) if d["kind"] == "eval"] == ["val"]
    steps = [d["step"] for d in _lines(out) if d["kind"] == "train"]
    rerun = _run(tmp_path, opts)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "finished training, but its summary.json is missing" in rerun.stdout
    assert [d["step"] for d in _lines(out) if d["kind"] == "train"] == steps  # no step trained again
    test = [d for d in _lines(out) if d["kind"] == "eval" and d["split"] == "test"]
    assert len(test) == 1 and test[0]["views"] == 6 and test[0]["step"] == steps[-1]
    # the rerun scored the weights it resumed, as saved: its line names that checkpoint (the validation of the
    # weights being trained names none)
    assert (test[0]["num_clip"], test[0]["num_crop"], test[0]["checkpoint"]) == (2, 3, str(out / "ckpt_epoch_1.pth"))
    assert [d["checkpoint"] for d in _lines(out) if d["kind"] == "eval" and d["split"] == "val"] == [None]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["final_split"], summary["final_top1"], summary["final_views"]) == ("test", test[0]["top1"], 6)
    assert summary["evaluations"] == 2  # the validation before the stop, the test after it
    assert summary["last_checkpoint"] == str(out / "ckpt_epoch_1.pth")


def test_a_finished_run_rerun_for_its_summary_counts_its_final_test_once(dataset, tmp_path):
    """A finished run that lost its summary is summarised again from metrics.jsonl, counting the logged final test
    as an evaluation when its last checkpoint was saved before it. Checkpoints of the earlier order (saved after
    the final test) count it already: their reruns reported one evaluation too many."""
    import torch

    out = tmp_path / "out"
    opts = _opts(dataset, out, **{"TRAIN.EPOCHS": 1, "TRAIN.AUTO_RESUME": True})
    first = _run(tmp_path, opts)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["evaluations"] == 2  # the validation, the final test
    val, test = [d["time"] for d in _lines(out) if d["kind"] == "eval"]
    path = out / "ckpt_epoch_1.pth"
    ckpt = torch.load(path, weights_only=True)
    saved_at = ckpt.pop("saved_at", None)
    assert ckpt["run_totals"]["evaluations"] == 1
    assert ckpt["run_totals"]["last_evaluation"] == {"split": "val", "step": 4}  # the test after it is not counted

    def summarised_again() -> int:
        (out / "summary.json").unlink()
        rerun = _run(tmp_path, opts)
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
        assert "its final test result at step 4 is in metrics.jsonl" in rerun.stdout
        return json.loads((out / "summary.json").read_text())["evaluations"]

    assert summarised_again() == 2
    # whatever the wall clock said when it was saved (one set back before the final test: saved "after" it)
    torch.save({**ckpt, "saved_at": test + 3600}, path)
    assert summarised_again() == 2
    # saved after the final test, counting it (the earlier order; no saved_at nor last_evaluation then: the file's
    # time tells)
    older = {k: v for k, v in ckpt["run_totals"].items() if k != "last_evaluation"}
    torch.save({**ckpt, "run_totals": {**older, "evaluations": 2}}, path)
    assert os.path.getmtime(path) > test
    assert summarised_again() == 2
    # saved before it without saved_at (this order before checkpoints recorded it)
    torch.save({**ckpt, "run_totals": older}, path)
    os.utime(path, ((val + test) / 2,) * 2)
    assert summarised_again() == 2
    assert saved_at is not None and val < saved_at < test


def test_an_evaluation_stopped_before_its_results_leaves_the_config_of_the_files_beside_it(dataset, tmp_path):
    """--only_test moves the training's summary aside and wrote its own config.yaml as it started: a Ctrl-C during
    its test left OUTPUT's checkpoints and log described by the config of an evaluation that wrote nothing."""
    out = tmp_path / "out"
    trained = _run(tmp_path, _opts(dataset, out, **{"TRAIN.EPOCHS": 1, "TEST.FINAL_NUM_CLIP": 0}))
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    training_config = (out / "config.yaml").read_text()
    assert "ONLY_TEST: false" in training_config
    evaluation = _opts(dataset, out, **{"TRAIN.EPOCHS": 1, "TEST.ONLY_TEST": True})
    stopped = _run(tmp_path, evaluation, mode="interrupt_in_final_test")
    assert stopped.returncode == -2, stopped.stdout[-2000:] + stopped.stderr[-2000:]
    assert "(config.yaml: a copy, the file stays until its results): moved 2 of them" in stopped.stdout
    assert not (out / "summary.json").exists()
    assert (out / "config.yaml").read_text() == training_config
    (aside,) = (out / "earlier_runs").iterdir()  # the training's results, with their config
    assert json.loads((aside / "summary.json").read_text())["mode"] == "train"
    assert (aside / "config.yaml").read_text() == training_config
    # the line says what an evaluation keeps, not what a training's stop keeps (a checkpoint, SIGTERM's next step)
    scored = out / "ckpt_epoch_1.pth"
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"interrupted: the evaluation of {scored} stopped where it was, before its summary.json (a Ctrl-C here, or "
        "with several processes, keeps no partial score; one during a single process's batches keeps the videos "
        "scored so far, as SIGTERM or SIGUSR1 do, which stop after the batch in flight and keep them in "
        "only_test_progress.json, exit code 4; OUTPUT's checkpoints are as they were); the same command evaluates it "
        "again, but for the videos an earlier stop kept")
    assert not (out / "only_test_progress.json").exists()
    # a scheduler's stop there (before its first batch): exit code 4, what it scored kept (nothing yet), OUTPUT's
    # other files as the Ctrl-C left them
    terminated = _run(tmp_path, evaluation, mode="interrupt_in_final_test", E2E_SIGNAL="SIGTERM")
    assert terminated.returncode == 4, terminated.stdout[-2000:] + terminated.stderr[-2000:]
    assert (f"stopped: SIGTERM received during the evaluation of {scored}: stopped before any of its 8 videos was "
            "scored; exit code 4. Its results and summary.json are not written yet. Run the same command again to "
            "score the rest and write them") in terminated.stdout
    assert not (out / "summary.json").exists() and (out / "config.yaml").read_text() == training_config
    assert not (out / "only_test_progress.json").exists()  # nothing scored: nothing kept
    # the same command again: its results come with its config
    again = _run(tmp_path, evaluation)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["mode"] == "evaluate only"
    assert "of the stopped test kept" not in again.stdout
    assert not (out / "only_test_progress.json").exists()
    assert "ONLY_TEST: true" in (out / "config.yaml").read_text()
    # nothing more set aside: no results to move (a copy of config.yaml alone was, once per rerun)
    assert [d.name for d in (out / "earlier_runs").iterdir()] == [aside.name]
    # a Ctrl-C once its summary is written: the line says the results are there, not that it stopped before them
    plotting = _run(tmp_path, evaluation, mode="interrupt_in_plots")
    assert plotting.returncode == -2, plotting.stdout[-2000:] + plotting.stderr[-2000:]
    assert plotting.stderr.strip().splitlines()[-1] == (
        f"interrupted: the evaluation of {scored} wrote its results (summary.json, predictions_test.csv); its plots "
        f"may be missing: python tools/plot_run.py {out} draws them")
    assert json.loads((out / "summary.json").read_text())["mode"] == "evaluate only"


def test_stop_signal_during_the_first_index_build_keeps_what_was_probed(dataset, tmp_path):
    out = tmp_path / "out"
    fresh = tmp_path / "train.txt"  # a list never indexed: its build runs in this process (INDEX_WORKERS 1 and
    fresh.write_text((dataset / "train.txt").read_text())  # no time limit: one worker with one is a worker process)
    opts = _opts(dataset, out, **{"DATA.TRAIN_FILE": fresh, "TRAIN.EPOCHS": 1, "TEST.FINAL_NUM_CLIP": 0,
                                  "DATA.VIDEO_TIMEOUT_S": 0})
    stopped = _run(tmp_path, opts, mode="signal_in_index", arg=5)
    assert stopped.returncode == 4, stopped.stdout[-2000:] + stopped.stderr[-2000:]
    assert "stopped: SIGTERM received outside the training steps" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    again = _run(tmp_path, opts)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "probing 12 of 16 videos (4 known from the cache)" in again.stdout  # the 4 probed before the signal
    # between start-up and the first step (a checkpoint's load): the same exit code and line, not a kill
    loading = _run(tmp_path, opts, mode="signal_in_resume")
    assert loading.returncode == 4, loading.stdout[-2000:] + loading.stderr[-2000:]
    assert "stopped: SIGTERM received outside the training steps" in loading.stdout


def test_stop_signal_to_one_rank_stops_both_at_the_same_step(dataset, tmp_path):
    out = tmp_path / "out"
    # 4 steps per epoch; a clock-based checkpoint is due after every step (both ranks must agree to write it)
    opts = {"TRAIN.EPOCHS": 2, "TEST.FINAL_NUM_CLIP": 0, "TRAIN.BATCH_SIZE": 2, "SAVE_MINUTES": 1e-5,
            "PRINT_FREQ": 4}
    r = _run(tmp_path, _opts(dataset, out, **opts), mode="signal_in_step", arg=2, nproc=2, E2E_RANK="1")
    assert r.returncode != 0  # torchrun reports its workers' exit code 4 as a failure
    logs = [(out / f"log_rank{rank}.txt").read_text() for rank in (0, 1)]
    assert "SIGTERM received: stopped after optimizer step 2" in logs[1]
    assert "another process received a stop signal: stopped after optimizer step 2" in logs[0]
    assert "exitcode  : 4" in r.stderr or "exit code 4" in r.stderr + r.stdout, r.stderr[-2000:]
    assert [d["step"] for d in _lines(out) if d["kind"] == "train"] == [2]  # the pending log window is written
    assert f"saved checkpoint {out / 'ckpt_step_1.pth'}" in logs[0]  # the clock-based one
    ckpt = torch_load(out / "ckpt_step_2.pth")
    assert ckpt["global_step"] == 2 and not ckpt["epoch_complete"] and len(ckpt["loader"]) == 2


def torch_load(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=True)


def test_sigusr1_to_torchrun_is_forwarded_and_both_ranks_stop_together(dataset, tmp_path):
    """The README's SLURM recipe: torchrun with --signals-to-handle forwards SIGUSR1 to its workers."""
    import re
    import signal
    import time

    out = tmp_path / "out"
    opts = _opts(dataset, out, **{"TRAIN.EPOCHS": 4, "TEST.FINAL_NUM_CLIP": 0, "TRAIN.BATCH_SIZE": 2})
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=_private_tmp(tmp_path))  # as in _run
    # torch 2.11's torchrun has no --shutdown-timeout (2.13 and 2.14 have it; the README says so)
    help_text = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--help"], capture_output=True,
                               text=True, check=True).stdout
    grace = ["--shutdown-timeout", "120"] if "--shutdown-timeout" in help_text else []
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "--signals-to-handle", "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1", *grace, str(ROOT / "train.py"),
           "--cfg", str(ROOT / "configs" / "demo.yaml"), "--opts", *opts]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not ((out / "metrics.jsonl").exists() and '"step": 2' in (out / "metrics.jsonl").read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "training did not reach step 2"
            time.sleep(0.2)
        proc.send_signal(signal.SIGUSR1)
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    stops = [re.search(r"stopped after optimizer step (\d+) with checkpoint (\S+);",
                       (out / f"log_rank{r}.txt").read_text()) for r in (0, 1)]
    assert all(stops), output[-3000:]
    assert stops[0].groups() == stops[1].groups()  # the same step and checkpoint on both ranks
    step, ckpt = int(stops[0].group(1)), stops[0].group(2)
    assert 2 <= step < 16 and os.path.isfile(ckpt)
    assert torch_load(Path(ckpt))["global_step"] == step
    assert max(d["step"] for d in _lines(out) if d["kind"] == "train") == step


def test_a_video_training_quarantines_is_counted_alike_in_the_eval_lines_and_the_summary(dataset, tmp_path):
    """One list for training and validation; a video breaks after epoch 1 and training quarantines it in epoch 2.
    The evaluations after leave it out as quarantined earlier in this run: the summary said 0 of them (the
    validation loader's count at its build) while the eval line said 1."""
    from tests.test_resume_quarantine import BREAK_AFTER_EPOCH_1, VICTIM, _data_copy

    data, out = _data_copy(dataset, tmp_path), tmp_path / "out"
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER.replace("import train\n", BREAK_AFTER_EPOCH_1 + "import train\n"))
    opts = _opts(data, out, **{**RESUME_OPTS, "SAVE_FREQ": 1, "TEST.EVAL_FREQ": 1, "DATA.VAL_FILE": data / "train.txt",
                               "TEST.FINAL_NUM_CLIP": 1, "TEST.FINAL_NUM_CROP": 3})  # 3 epochs of 4 steps
    env = dict(os.environ, REPO=str(ROOT), OMP_NUM_THREADS="1", TMPDIR=_private_tmp(tmp_path),
               VICTIM=str(data / VICTIM))
    r = subprocess.run([sys.executable, str(script), "--cfg", str(ROOT / "configs" / "demo.yaml"), "--opts", *opts],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "quarantining" in r.stdout
    evals = [(d["split"], d["epoch"], d["num_videos"], d["quarantined_earlier"], d["skipped_videos"])
             for d in _lines(out) if d["kind"] == "eval"]
    # counted once however many evaluations leave it out; the final test is built over the validation's index
    assert evals == [("val", 1, 16, 0, 0), ("val", 2, 15, 1, 0), ("val", 3, 15, 1, 0), ("test", 3, 15, 1, 0)]
    said = [x for x in r.stdout.splitlines() if "evaluated 15 of 16 listed videos" in x]
    assert len(said) == 3 and all("1 quarantined earlier in this run, 0 failed while decoding" in x for x in said)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["val_quarantined_earlier"], summary["val_skipped_videos"], summary["test_quarantined_earlier"],
            summary["train_skipped_videos"]) == (1, 0, 1, 1)


def test_a_validation_that_scores_no_video_stops_the_run_after_keeping_the_epoch(dataset, tmp_path):
    """Every validation video breaks after indexing: the validation scores none, which stops the run (exit 2)
    naming the list. The epoch's checkpoint is written before validation would have chosen best: the run stopped
    on the validation's error first, losing the epoch's training."""
    data, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(dataset, data)
    first = (data / "val.txt").read_text().splitlines()[0].rsplit(" ", 1)
    shutil.copy(data / first[0], data / "val_only.webm")
    (data / "val_only.txt").write_text(f"val_only.webm {first[1]}\n")
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER.replace("import train\n", """import engine.train_loop as _tl
_orig_run_eval = _tl.Trainer.run_eval
def _run_eval(self, *args, **kwargs):  # the one validation video breaks once indexed
    with open(os.environ["VICTIM"], "r+b") as f:
        f.seek(200)
        f.write(bytes(range(256)) * 8)
    return _orig_run_eval(self, *args, **kwargs)
_tl.Trainer.run_eval = _run_eval
import train
"""))
    opts = _opts(data, out, **{"DATA.VAL_FILE": data / "val_only.txt", "TEST.FINAL_NUM_CLIP": 0, "SAVE_FREQ": 1})
    env = dict(os.environ, REPO=str(ROOT), OMP_NUM_THREADS="1", TMPDIR=_private_tmp(tmp_path),
               VICTIM=str(data / "val_only.webm"))
    r = subprocess.run([sys.executable, str(script), "--cfg", str(ROOT / "configs" / "demo.yaml"), "--opts", *opts],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    said = r.stdout + r.stderr
    assert r.returncode == 2, said[-3000:]
    assert f"error: DATA.VAL_FILE {data / 'val_only.txt'}: none of its 1 listed video could be scored" in said, \
        said[-3000:]
    ckpt = torch.load(out / "ckpt_epoch_1.pth", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 0 and ckpt["epoch_complete"] and ckpt["global_step"] > 0
    assert not (out / "best.pth").exists()



def test_a_validation_that_crashes_keeps_the_epochs_training_in_a_run_of_one_process(dataset, tmp_path):
    """A validation that fails for another reason (here a RuntimeError, as an out-of-memory error would be) still
    ends the run as a crash (exit 1), but the epoch's checkpoint it came before is written first: the rerun resumes
    after that epoch instead of training it again."""
    out = tmp_path / "out"
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER.replace("import train\n", """import engine.train_loop as _tl
def _run_eval(self, *args, **kwargs):
    raise RuntimeError("validation ran out of memory")
_tl.Trainer.run_eval = _run_eval
import train
"""))
    opts = _opts(dataset, out, **{"TEST.FINAL_NUM_CLIP": 0, "SAVE_FREQ": 1})
    env = dict(os.environ, REPO=str(ROOT), OMP_NUM_THREADS="1", TMPDIR=_private_tmp(tmp_path))
    r = subprocess.run([sys.executable, str(script), "--cfg", str(ROOT / "configs" / "demo.yaml"), "--opts", *opts],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    said = r.stdout + r.stderr
    assert r.returncode == 1, said[-3000:]
    assert "RuntimeError: validation ran out of memory" in said, said[-3000:]
    ckpt = torch.load(out / "ckpt_epoch_1.pth", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 0 and ckpt["epoch_complete"] and ckpt["global_step"] > 0
    assert f"saved checkpoint {out / 'ckpt_epoch_1.pth'}" in said, said[-3000:]


def test_a_class_no_training_video_has_is_named_in_one_warning(dataset, tmp_path):
    """A label list (and DATA.NUM_CLASSES) with a class the training videos lack, as a class folder that failed to
    download leaves: the run trains (it may be meant) but says which class the model never sees, by id and name."""
    out = tmp_path / "out"
    labels = tmp_path / "labels5.csv"
    labels.write_text((dataset / "labels.csv").read_text().rstrip("\n") + "\n4,jumping\n")
    opts = _opts(dataset, out, **{"DATA.LABEL_LIST": labels, "DATA.NUM_CLASSES": 5, "TRAIN.EPOCHS": 1,
                                  "TEST.EVAL_FREQ": 0, "TEST.FINAL_NUM_CLIP": 0})
    r = _run(tmp_path, opts)
    said = r.stdout + r.stderr
    assert r.returncode == 0, said[-3000:]
    line = (f"WARNING: DATA.TRAIN_FILE {dataset / 'train.txt'} has no usable video of 1 of the 5 classes "
            "(DATA.NUM_CLASSES): 4 'jumping'; the model never learns them")
    assert said.count(line) == 1, said[-3000:]
    assert line in (out / "log_rank0.txt").read_text()


def test_a_stop_mid_line_resumes_with_the_uninterrupted_runs_lines(dataset, tmp_path):
    """PRINT_FREQ 3, a stop at step 2 of 4: the stopped attempt logs step 2's line, and the resumed run's lines come at
    the uninterrupted run's steps (3 and 4) over the same steps, so their losses are its losses. The resumed run
    restarted its window at step 3 before: one line at step 4, the mean of steps 3 and 4. Step 2's line is dropped
    at the resume: it kept steps 1 and 2 in two lines."""
    opts = {"TRAIN.EPOCHS": 1, "TEST.FINAL_NUM_CLIP": 0, "TEST.EVAL_FREQ": 0, "PRINT_FREQ": 3}
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    ref = _run(tmp_path, _opts(dataset, ref_out, **opts))
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    stopped = _run(tmp_path, _opts(dataset, out, **opts), mode="signal_in_step", arg=2)
    assert stopped.returncode == 4, stopped.stdout[-2000:] + stopped.stderr[-2000:]
    resumed = _run(tmp_path, _opts(dataset, out, **opts, **{"TRAIN.AUTO_RESUME": True}))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {out / 'ckpt_step_2.pth'}" in resumed.stdout
    ref_lines = [(d["step"], d["loss"]) for d in _lines(ref_out) if d["kind"] == "train"]
    got = [(d["step"], d["loss"]) for d in _lines(out) if d["kind"] == "train"]
    assert [s for s, _ in ref_lines] == [3, 4] and [s for s, _ in got] == [3, 4], got
    assert got == [(s, pytest.approx(loss, rel=1e-6)) for s, loss in ref_lines]
    assert json.loads((out / "summary.json").read_text())["last_loss"] == pytest.approx(ref_lines[-1][1], rel=1e-6)


@pytest.fixture(scope="module")
def two_process_final_test(dataset, tmp_path_factory) -> Path:
    """An uninterrupted run of one epoch on two processes with its final test: the stopped ones' baseline."""
    tmp = tmp_path_factory.mktemp("two_process_final_test")
    r = _run(tmp, _opts(dataset, tmp / "out", **{"TRAIN.EPOCHS": 1, "TEST.BATCH_SIZE": 1}), nproc=2)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp / "out"


def test_stops_in_a_two_process_final_test_keep_both_ranks_videos(two_process_final_test, dataset, tmp_path):
    """SIGTERM to torchrun (forwarded to both ranks), then to rank 1 alone, each once every rank scored its first
    test batch (a video each: rows r::2 of 8): every rank stops (none waits in a collective), rank 0 keeps what both
    scored, and the same command tests the rest to the uninterrupted run's predictions, decoding only the rest."""
    out = tmp_path / "out"
    opts = _opts(dataset, out, **{"TRAIN.EPOCHS": 1, "TRAIN.AUTO_RESUME": True, "TEST.BATCH_SIZE": 1})
    progress, ckpt = out / "test_progress.json", out / "ckpt_epoch_1.pth"

    def stop(attempt: int, **to_rank: str) -> subprocess.CompletedProcess:
        sync = tmp_path / f"sync{attempt}"
        sync.mkdir()
        r = _run(tmp_path, opts, mode="signal_after_test_batch", nproc=2, E2E_SIGNAL="SIGTERM", E2E_SYNC=str(sync),
                 **to_rank)  # within _run's timeout: no rank hangs
        assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]  # torchrun's code for any failed worker
        assert json.loads((out / "exit_status.json").read_text())["exit_code"] == 4
        return r

    def rows() -> list[int]:
        return [p[0] for p in json.loads(progress.read_text())["predictions"]]

    def last_lines() -> list[str]:
        return [(out / f"log_rank{r}.txt").read_text().splitlines()[-1].split("] ", 1)[1] for r in (0, 1)]

    said = (f"during the final test: stopped after the batch in flight, the {{}} of its 8 videos scored so far are "
            f"kept in {progress}; exit code 4. The training is finished (last checkpoint {ckpt}); its final test is "
            "not complete, its summary.json not written yet. Run the same command again to test the rest and write "
            "the summary")
    stop(1)
    assert rows() == [0, 1]  # rank 0's 0 and rank 1's 1
    assert last_lines() == ["stopped: SIGTERM received " + said.format(2)] * 2
    # rank 1 alone: rank 0 scores the rest of its share (rows 2, 4, 6), rank 1 one more video (3) and stops
    again = stop(2, E2E_RANK="1")
    assert "2 videos of the stopped test kept from test_progress.json" in again.stdout
    assert rows() == [0, 1, 2, 3, 4, 6]
    assert last_lines() == [f"stopped: another process received a stop signal {said.format(6)}",
                            f"stopped: SIGTERM received {said.format(6)}"]
    done = _run(tmp_path, opts, nproc=2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((out / "exit_status.json").read_text())["exit_code"] == 0
    assert "6 videos of the stopped test kept from test_progress.json" in done.stdout
    assert not progress.exists()
    assert json.loads((out / "summary.json").read_text())["final_num_videos"] == 8
    assert (out / "predictions_test.csv").read_text() == (two_process_final_test / "predictions_test.csv").read_text()
    # the rerun decoded rows 5 and 7 (rank 1's), not the 6 kept ones again; rank 0 had none left
    (test,) = [d for d in _lines(out) if d["kind"] == "eval" and d["split"] == "test"]
    assert sum(v for k, v in test.items() if k.startswith("samples_")) == 2 and test["kept"] == 6, test
