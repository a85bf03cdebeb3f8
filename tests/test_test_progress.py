"""A final test stopped by a signal keeps what it scored (engine.test_progress): with two ranks (gloo), one of them
signalled, and with a progress file that cannot be read."""

from __future__ import annotations

import csv
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dali_pipelines.loader import build_loader
from engine.distributed import DistContext
from engine.evaluate import EvaluationStopped, evaluate, evaluate_and_log
from engine.metrics import MetricLogger
from engine.test_progress import (EVALUATION_PROGRESS_FILE, PROGRESS_FILE, FinalTestProgress, _digest,
                                  interrupted_test)
from tests.gloo_ranks import gloo_rank
from tests.test_distributed import _manager
from tests.video_fixtures import make_clip_dataset, small_cfg


class _Flat(torch.nn.Module):
    """Scores a clip of 8 numbers; counts the clips it is given."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, 3)
        self.clips = 0

    def forward(self, x):
        self.clips += x.shape[0]
        return self.fc(x.flatten(1))


def _batches(rank: int, world: int, videos: int = 4):
    """Rank ``rank``'s videos (r, r + world, ...), one a batch, each of 2 views; the same video, the same clips."""
    for row in range(rank, videos, world):
        clips = torch.Generator().manual_seed(row)
        yield {"video": torch.randn(1, 2, 8, generator=clips), "label": torch.tensor([row % 3]),
               "index": torch.tensor([row])}


def _progress(output_dir: str, ctx: DistContext, warned: list[str], loader=None) -> FinalTestProgress:
    """The progress file of a test of 4 videos; its warnings go to ``warned``, its other lines nowhere."""
    checkpoint = os.path.join(output_dir, "ckpt_epoch_1.pth")
    metrics = SimpleNamespace(output_dir=output_dir, warn=warned.append, info=lambda line: None)
    return FinalTestProgress(metrics, ctx, checkpoint, 12, {"list": "test.txt"}, loader)


def _stop_on_rank_1(rank: int, world: int, init_file: str, output_dir: str, out: dict) -> None:
    with gloo_rank(init_file, rank, world):
        ctx, warned = DistContext(rank=rank, world_size=world), []
        model, done = _Flat(), []
        try:  # rank 1 alone is signalled, after its first batch: rank 0 scores all of its share
            evaluate(model, _batches(rank, world), ctx, split="test", progress=done.append,
                     stop_requested=lambda: rank == 1 and len(done) == 1)
            out[rank] = "not stopped"
            return
        except EvaluationStopped as stop:
            stopped = str(_progress(output_dir, ctx, warned).stopped(stop, "SIGUSR1" if rank else None, True))
        dist.barrier()
        model = _Flat()
        kept = _progress(output_dir, ctx, warned).kept()
        rerun = evaluate(model, _batches(rank, world), ctx, split="test", kept=kept)
        full = evaluate(_Flat(), _batches(rank, world), ctx, split="test")
        out[rank] = {"stopped": stopped, "rerun_clips": model.clips, "warned": warned, "same": rerun == {
            **full, **{k: rerun[k] for k in ("time_s", "videos_per_sec", "startup_s", "kept")}},
            "kept": rerun["kept"], "num_videos": rerun["num_videos"]}
        dist.barrier()


def test_a_stop_on_one_rank_keeps_every_ranks_videos_and_the_rerun_forwards_only_the_rest(tmp_path):
    """A stop signal that reached one rank of two during the final test: the test ran on until the scheduler's kill
    and every video was tested again. The signalled rank stops after its batch and says so in the gather that ends
    the evaluation (no collective per batch), every rank raises the same stop, rank 0 keeps the videos of both
    ranks (rank 0's whole share, rank 1's first) and the rerun forwards only rank 1's other video."""
    with _manager() as manager:
        out = manager.dict()
        mp.spawn(_stop_on_rank_1, args=(2, str(tmp_path / "init"), str(tmp_path), out), nprocs=2, join=True)
        out = dict(out)
    kept = json.loads((tmp_path / PROGRESS_FILE).read_text())
    assert sorted(p[0] for p in kept["predictions"]) == [0, 1, 2] and kept["test"]["global_step"] == 12
    assert out[0]["stopped"] == out[1]["stopped"].replace("SIGUSR1 received", "another process received a stop signal")
    assert f"the 3 videos scored so far are kept in {tmp_path / PROGRESS_FILE}" in out[1]["stopped"], out[1]
    assert [out[r]["rerun_clips"] for r in (0, 1)] == [0, 2]  # video 3's 2 views, on rank 1
    for rank in (0, 1):
        assert out[rank]["same"] and out[rank]["kept"] == 3 and out[rank]["num_videos"] == 4, out[rank]
        assert out[rank]["warned"] == []


def test_an_unreadable_progress_file_is_named_ignored_and_replaced(tmp_path):
    """A progress file cut short (a disk that filled) or of another test is not merged: one warning names it, the
    test scores every video, and a stop replaces the file with this test's."""
    ctx, warned = DistContext(), []
    (tmp_path / PROGRESS_FILE).write_text('{"test": {"checkpoint": ')
    progress = _progress(str(tmp_path), ctx, warned)
    assert progress.kept() is None
    assert warned == [f"{tmp_path / PROGRESS_FILE} is cut short (its 24 bytes end inside the record): ignored, "
                      "this test scores every video and a stop replaces it"]
    model, done = _Flat(), []
    try:
        evaluate(model, _batches(0, 1), ctx, split="test", progress=done.append, stop_requested=lambda: len(done) == 2)
        raise AssertionError("the evaluation did not stop")
    except EvaluationStopped as stop:
        progress.stopped(stop, "SIGTERM", False)
    assert model.clips == 4 and progress.kept()["predictions"][1][0] == 1 and len(warned) == 1
    (tmp_path / PROGRESS_FILE).write_text((tmp_path / PROGRESS_FILE).read_text().replace('"global_step": 12',
                                                                                         '"global_step": 11'))
    assert progress.kept() is None and warned[-1] == (f"{tmp_path / PROGRESS_FILE} was written by another test "
                                                      "(its global_step 11, this test's 12): ignored, this test scores "
                                                      "every video and a stop replaces it")


def test_a_stop_before_the_first_batch_keeps_no_file(tmp_path):
    """A stop before any video was scored wrote a progress file of no video, which the rerun only read back ("0
    videos of the stopped test kept"). It writes none, says that no video was scored, and a file of another test that
    this test's warning said a stop would replace is gone."""
    ctx, warned = DistContext(), []
    (tmp_path / PROGRESS_FILE).write_text("{}")  # another test's (cut short)
    progress = _progress(str(tmp_path), ctx, warned)
    assert progress.kept() is None and len(warned) == 1
    try:
        evaluate(_Flat(), _batches(0, 1), ctx, split="test", stop_requested=lambda: True)
        raise AssertionError("the evaluation did not stop")
    except EvaluationStopped as stop:
        line = str(progress.stopped(stop, "SIGTERM", True))
    assert line.startswith("SIGTERM received during the final test: stopped before any of its videos was scored; "
                           "exit code 4."), line
    assert not (tmp_path / PROGRESS_FILE).exists()


class _InterruptedAt(_Flat):
    """A Ctrl-C inside the forward of its ``at``-th batch (as one lands in a large model's forward)."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.batches = at, 0

    def forward(self, x):
        self.batches += 1
        if self.batches == self.at:
            raise KeyboardInterrupt
        return super().forward(x)


def test_a_ctrl_c_inside_a_single_process_batch_keeps_the_whole_batches_before_it(tmp_path):
    """A Ctrl-C during a single process's evaluation kept nothing. With ``keep_on_interrupt`` it ends it as a stop
    does, with the batches scored before it (the one in flight dropped), which the progress file keeps and names;
    without it (a training's final test) or with several processes it stops at once, as before."""
    ctx, warned = DistContext(), []
    progress = _progress(str(tmp_path), ctx, warned)
    try:
        evaluate(_InterruptedAt(3), _batches(0, 1), ctx, split="test", keep_on_interrupt=True)
        raise AssertionError("the evaluation did not stop")
    except EvaluationStopped as stop:
        assert stop.interrupted and [p[0] for p in stop.predictions] == [0, 1]
        line = progress.interrupted(stop)
    assert line == f"stopped by Ctrl-C, the 2 videos scored so far are kept in {tmp_path / PROGRESS_FILE}"
    saved = json.loads((tmp_path / PROGRESS_FILE).read_text())
    assert saved["signal"] == "SIGINT" and [p[0] for p in saved["predictions"]] == [0, 1]
    assert [p[0] for p in progress.kept()["predictions"]] == [0, 1] and not warned
    for keep, world in ((False, 1), (True, 2)):  # a KeyboardInterrupt before any collective: none runs
        try:
            evaluate(_InterruptedAt(1), _batches(0, 1), DistContext(rank=0, world_size=world), split="test",
                     keep_on_interrupt=keep)
            raise AssertionError("the evaluation was not interrupted")
        except KeyboardInterrupt:
            pass


def test_a_ctrl_c_line_names_the_test_and_its_own_progress_file():
    """The training's final test and an evaluation-only run's share one Ctrl-C line but for its subject, file and
    what they add (tests/test_engine_e2e.py pins both whole, as printed)."""
    line = interrupted_test("the final test", PROGRESS_FILE)
    assert line == ("the final test stopped where it was (a Ctrl-C here, or with several processes, keeps no partial "
                    "score; one during a single process's batches keeps the videos scored so far, as SIGTERM or "
                    "SIGUSR1 do, which stop after the batch in flight and keep them in test_progress.json, exit "
                    "code 4)")
    line = interrupted_test("the evaluation of c.pth", EVALUATION_PROGRESS_FILE, ", before its summary.json",
                            "; OUTPUT's checkpoints are as they were")
    assert line.startswith("the evaluation of c.pth stopped where it was, before its summary.json (a Ctrl-C here,")
    assert line.endswith("keep them in only_test_progress.json, exit code 4; OUTPUT's checkpoints are as they were)")


def _strict_json(text: str):
    """``text`` read as standard JSON: NaN and Infinity, which jq and other readers refuse, fail here too."""
    def refused(constant):
        raise ValueError(f"not standard JSON: {constant}")

    return json.loads(text, parse_constant=refused)


def test_a_non_finite_probability_is_kept_as_null_and_read_back_as_nan(tmp_path):
    """A model whose output went NaN during the final test: the progress file held a bare NaN (Python's json),
    which jq and other JSON readers refuse. It holds null, and the rerun reads it back as the NaN it was."""
    ctx, warned = DistContext(), []
    progress = _progress(str(tmp_path), ctx, warned)
    stop = EvaluationStopped("test", [(0, 0, [1, 0, 2], [float("nan"), 0.25, float("inf")])], 2, 3, [0])
    progress.stopped(stop, "SIGTERM", True)
    saved = _strict_json((tmp_path / PROGRESS_FILE).read_text())
    assert saved["predictions"] == [[0, 0, [1, 0, 2], [None, 0.25, None]]]
    (_, _, classes, probs), = progress.kept()["predictions"]
    assert classes == [1, 0, 2] and probs[1] == 0.25 and all(p != p for p in (probs[0], probs[2])) and not warned


def test_the_failure_record_torchrun_reads_is_standard_json(tmp_path, monkeypatch):
    """record_failure writes through the run files' one JSON writer: the file torchrun's report reads is standard
    JSON in torch's ErrorHandler format."""
    from engine.distributed import record_failure

    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    recorded = record_failure("error: out of memory", "Traceback ...\nerror: out of memory")
    saved = _strict_json(error_file.read_text())
    assert saved == {"message": {"message": "error: out of memory", "extraInfo": {
        "py_callstack": "Traceback ...\nerror: out of memory", "timestamp": str(int(recorded))}}}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("clips"))
    return root, make_clip_dataset(root, [24, 30, 26, 40, 26, 33, 28])


class _Pooled(torch.nn.Module):
    """Scores a clip by its mean colour; counts the clips it is given."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(3, 3)
        self.clips = 0

    def forward(self, x):  # (N, T, 3, S, S)
        self.clips += x.shape[0]
        return self.fc(x.mean((1, 3, 4)))


def _decoded(loader) -> int:
    return sum(v for k, v in loader.stats.items() if k.startswith("samples_"))


def test_a_rerun_decodes_only_the_videos_its_stopped_test_did_not_keep(clips, tmp_path):
    """A rerun of a test stopped at 90 % decoded every video again and dropped the kept ones' rows after decoding.
    Its loader now leaves the kept videos out: they are not decoded, the others are dealt by list row as before,
    and the predictions, per-class file and metrics are those of a test that was never stopped."""
    root, lst = clips
    cfg = small_cfg(root, lst, lst, **{"TEST.NUM_CLIP": 2, "TEST.NUM_CROP": 1})
    ctx = DistContext()

    def test(output: str, kept=None) -> tuple[dict, object, int]:
        loader = build_loader(cfg, "test")
        model = _Pooled()
        metrics = MetricLogger(output, tensorboard=False, nvml=False, progress_bar=False)
        try:
            result = evaluate_and_log(model, loader, ctx, metrics, split="test", num_classes=3, kept=kept)
        finally:
            metrics.close()
            loader.close()
        return result, loader, model.clips

    full, loader, clips_forwarded = test(str(tmp_path / "full"))
    assert full["num_videos"] == 7 and _decoded(loader) == 7 and clips_forwarded == 14
    rows = [int(r["index"]) for r in csv.DictReader((tmp_path / "full" / "predictions_test.csv").open())]
    preds = {r: p for r, p in zip(rows, _scored(tmp_path / "full"))}
    kept = {"predictions": [preds[r] for r in (0, 2, 3, 5)], "views": 2, "classes": 3}
    rerun, loader, clips_forwarded = test(str(tmp_path / "rerun"), kept)
    assert _decoded(loader) == 3 and clips_forwarded == 6 and rerun["kept"] == 4  # rows 1, 4 and 6 only
    assert {k: rerun[k] for k in ("top1", "top5", "mean_class_top1", "num_videos", "views")} == {
        k: full[k] for k in ("top1", "top5", "mean_class_top1", "num_videos", "views")}
    for name in ("predictions_test.csv", "per_class_test.csv"):
        assert (tmp_path / "rerun" / name).read_text() == (tmp_path / "full" / name).read_text()
    # every video kept: the loader builds no graph and decodes nothing, the metrics are the kept videos'
    kept = {"predictions": list(preds.values()), "views": 2, "classes": 3}
    again, loader, clips_forwarded = test(str(tmp_path / "again"), kept)
    assert _decoded(loader) == 0 and clips_forwarded == 0 and again["kept"] == 7 and again["top1"] == full["top1"]
    assert loader.pipelines == () and len(loader) == 4  # every row is back in it afterwards
    assert (tmp_path / "again" / "predictions_test.csv").read_text() == (
        tmp_path / "full" / "predictions_test.csv").read_text()
    # the logged eval line: the rerun's rate is of its decoded videos; one that decoded none read "0.0 videos/s,
    # 0.00 s of 0.00 s before the first batch", as if its loader had stalled
    assert " videos/s over the 3 videos decoded, 4 kept from the stopped test, " in _eval_line(tmp_path / "rerun")
    assert _eval_line(tmp_path / "again").endswith(
        "(all 7 videos kept from the stopped test: nothing decoded)")
    assert "kept" not in _eval_line(tmp_path / "full")


def _eval_line(output) -> str:
    """The eval line of the log_rank0.txt in ``output``."""
    lines = [x for x in (output / "log_rank0.txt").read_text().splitlines() if "eval test (2 clips" in x]
    assert len(lines) == 1, lines
    return lines[0]


def _scored(output) -> list[tuple]:
    """The predictions of a predictions_test.csv as evaluate gives them (probabilities to its 6 decimals)."""
    out = []
    for r in csv.DictReader((output / "predictions_test.csv").open()):
        classes = [int(r[f"top{k}_class"]) for k in (1, 2, 3)]
        out.append((int(r["index"]), int(r["label"]), classes, [float(r[f"top{k}_prob"]) for k in (1, 2, 3)]))
    return out


def test_the_ranks_of_a_rerun_share_the_videos_left_as_the_uninterrupted_test_shared_them(clips):
    """Two ranks, rows 0, 2, 3 and 5 kept: rank r decodes the rows r::2 that were not kept, as the never stopped
    test's rank r scored them, and a rank whose share was kept whole starts no decoder."""
    root, lst = clips
    cfg = small_cfg(root, lst, lst)
    for kept, expected in (((0, 2, 3, 5), [[4, 6], [1]]), ((0, 2, 4, 6), [[], [1, 3, 5]])):
        for rank in (0, 1):
            with build_loader(cfg, "test", rank=rank, world_size=2) as loader:
                loader.leave_out_scored(kept)
                rows = [r for b in loader for r in b["index"].tolist()]
                assert rows == expected[rank] and _decoded(loader) == len(rows), (kept, rank)
                if not rows:
                    assert loader.pipelines == () and len(loader) == 0


@pytest.mark.parametrize("test", ["null", "[1, 2]", '"ckpt.pth"'])
def test_a_progress_file_whose_test_is_not_an_object_is_named_and_ignored(tmp_path, test):
    """A progress file that is JSON of another shape (its ``test`` null, a list): comparing it with this test
    raised a TypeError or AttributeError with a traceback, and the rerun ended there."""
    warned: list[str] = []
    (tmp_path / PROGRESS_FILE).write_text(f'{{"test": {test}, "views": 2, "classes": 3, "predictions": []}}')
    assert _progress(str(tmp_path), DistContext(), warned).kept() is None
    assert len(warned) == 1 and warned[0].startswith(f"{tmp_path / PROGRESS_FILE} cannot be read (TypeError: its "
                                                     "'test' is ")


class _Listed:
    """A test loader's index as the progress file reads it: the list's row count, labels and content digest."""

    def __init__(self, labels: list[int], digest: str):
        self.index = self
        self.videos = SimpleNamespace(labels=np.array(labels), content_digest=digest)

    def __len__(self) -> int:
        return len(self.videos.labels)


def _stopped_after(output_dir, warned: list[str], batches: int, loader=None) -> FinalTestProgress:
    """A real stop of the 4-video test after ``batches`` batches, its videos kept in the progress file."""
    progress, done = _progress(str(output_dir), DistContext(), warned, loader), []
    try:
        evaluate(_Flat(), _batches(0, 1), DistContext(), split="test", progress=done.append,
                 stop_requested=lambda: len(done) == batches)
        raise AssertionError("the evaluation did not stop")
    except EvaluationStopped as stop:
        progress.stopped(stop, "SIGTERM", True)
    return progress


def _rerun_forwards(progress: FinalTestProgress) -> int:
    """The clips the rerun of the 4-video test forwards with what ``progress`` kept (8: every video again)."""
    model = _Flat()
    result = evaluate(model, _batches(0, 1), DistContext(), split="test", kept=progress.kept())
    assert result["num_videos"] == 4
    return model.clips


@pytest.mark.parametrize("cut", ["half", "last brace", "inner object"])
def test_a_kept_file_cut_short_is_named_with_its_size_and_every_video_scored_again(tmp_path, cut):
    """A progress file cut short (a disk that filled, a copy cut off) was named only by JSON's parse error
    ("Expecting ',' delimiter: line 1 column 612"), which did not say the file was incomplete. The warning says it
    is cut short, with its size, and the rerun scores every video."""
    warned: list[str] = []
    progress = _stopped_after(tmp_path, warned, 3)
    whole = (tmp_path / PROGRESS_FILE).read_bytes()
    assert _rerun_forwards(progress) == 2 and not warned  # whole: only video 3's 2 views
    kept = {"half": whole[:len(whole) // 2], "last brace": whole[:-2],
            "inner object": whole[:whole.index(b"}") + 1]}[cut]  # a cut right after the test's own object
    (tmp_path / PROGRESS_FILE).write_bytes(kept)
    assert _rerun_forwards(progress) == 8
    assert warned == [f"{tmp_path / PROGRESS_FILE} is cut short (its {len(kept)} bytes end inside the record): "
                      "ignored, this test scores every video and a stop replaces it"]


def test_a_kept_file_edited_by_hand_is_named_and_every_video_scored_again(tmp_path):
    """The kept predictions were taken as the file held them: a probability, class or label changed by hand (or a
    row dropped) went into the accuracy and the predictions file. A checksum written with them says the file is
    not as the stop wrote it, the warning names the file, and the rerun scores every video."""
    warned: list[str] = []
    progress = _stopped_after(tmp_path, warned, 3)
    saved = json.loads((tmp_path / PROGRESS_FILE).read_text())
    saved["predictions"][1][2] = [saved["predictions"][1][1]] + [c for c in saved["predictions"][1][2]
                                                                 if c != saved["predictions"][1][1]]
    (tmp_path / PROGRESS_FILE).write_text(json.dumps(saved) + "\n")
    assert _rerun_forwards(progress) == 8
    assert warned == [f"{tmp_path / PROGRESS_FILE} is not as the stop wrote it (its 3 predictions do not match the "
                      "checksum written with them: edited after the stop): ignored, this test scores every video "
                      "again and a stop replaces it"]
    del saved["predictions_digest"]  # a file of an earlier version: what it holds cannot be told
    (tmp_path / PROGRESS_FILE).write_text(json.dumps(saved) + "\n")
    assert _rerun_forwards(progress) == 8 and "(it has no checksum of its predictions" in warned[-1]


def test_a_kept_file_of_a_list_rewritten_in_place_is_named_with_what_differs(tmp_path):
    """A list edited in place with as many lines (another order, a label fixed) kept its path and video count, the
    only list facts the progress file held: the stopped test's predictions were merged with rows that now name
    other videos. Its content digest is part of the test, and the warning says which facts differ."""
    warned: list[str] = []
    _stopped_after(tmp_path, warned, 2, _Listed([0, 1, 2, 0], "a1b2c3"))
    assert json.loads((tmp_path / PROGRESS_FILE).read_text())["test"]["list_digest"] == "a1b2c3"
    assert _rerun_forwards(_progress(str(tmp_path), DistContext(), warned, _Listed([0, 1, 2, 0], "a1b2c3"))) == 4
    assert _rerun_forwards(_progress(str(tmp_path), DistContext(), warned, _Listed([0, 1, 2, 0], "d4e5f6"))) == 8
    assert warned == [f"{tmp_path / PROGRESS_FILE} was written by another test (its list_digest a1b2c3, this test's "
                      "d4e5f6): ignored, this test scores every video and a stop replaces it"]


@pytest.mark.parametrize("edit, said", [
    (lambda p: p.append(p[0]), "list rows 0 are scored more than once"),
    (lambda p: p.append([7, 1, [1, 0, 2], [0.5, 0.3, 0.2]]), "list rows 7 are not rows of the list's 4 videos"),
    (lambda p: p[1].__setitem__(1, 2), "labels differ from the list's (row 1: 2, the list's 1)"),
    (lambda p: p[0].__setitem__(2, [0, 1, 3]), "list rows 0 do not hold 3 of the model's 3 classes"),
])
def test_kept_predictions_the_list_or_the_model_contradict_are_not_merged(tmp_path, edit, said):
    """Predictions whose checksum was rewritten with them (or that a bug wrote) are checked against the list and
    the model too: a row kept twice, a row past the list, a label that is not the list's, classes the model has
    not. Each is named and the rerun scores every video."""
    warned: list[str] = []
    listed = _Listed([0, 1, 2, 0], "a1b2c3")
    progress = _stopped_after(tmp_path, warned, 2, listed)
    saved = json.loads((tmp_path / PROGRESS_FILE).read_text())
    edit(saved["predictions"])
    saved["predictions_digest"] = _digest(saved["predictions"])
    (tmp_path / PROGRESS_FILE).write_text(json.dumps(saved) + "\n")
    assert _rerun_forwards(progress) == 8
    assert warned == [f"{tmp_path / PROGRESS_FILE} is not as the stop wrote it ({said}): ignored, this test scores "
                      "every video again and a stop replaces it"]
