"""What an evaluation writes, read back from its files: a predictions row for every listed video (the unreadable
ones with their reason, counted in neither top-1 nor top-5), top-5 left null where it cannot fail (5 classes or
fewer), and the eval line's clips, crops and scored checkpoint."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch
from torch import nn

from engine.distributed import DistContext
from configs import ConfigError
from engine.evaluate import evaluate, evaluate_and_log, read_label_names, write_predictions
from engine.metrics import EVAL_KEYS, MetricLogger
from engine.plots import read_predictions
from tests.sync_order import record_syncs


class _FixedRanking(nn.Module):
    """Every clip gets the same logits: the classes ranked in the order of ``logits`` (highest first)."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1) + 0.0 * x.flatten(1)[:, :1]


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A real CPU test loader (2 clips x 3 crops) over a list of 6 videos: row 5 is not a video (left out when the
    list is indexed) and row 1 is replaced after indexing (quarantined while decoding). The model ranks classes
    0, 2, 3, 4, 5 first (8 classes), so of the 4 scored videos (labels 0, 2, 0, 1) 2 are right at top-1, 3 at
    top-5."""
    from dali_pipelines.loader import build_loader
    from dali_pipelines.pyav_encode import write_video
    from tests.video_fixtures import make_clip_dataset, pattern_frames, small_cfg

    root = tmp_path_factory.mktemp("evaluated")
    lst = make_clip_dataset(str(root), [24, 30, 26, 33, 28])
    (root / "videos" / "broken.webm").write_bytes(b"\x1aE\xdf\xa3 not a video")
    with open(lst, "a") as f:
        f.write("videos/broken.webm 2\n")
    cfg = small_cfg(str(root), val_list=lst, **{"TEST.NUM_CLIP": 2, "TEST.NUM_CROP": 3, "DATA.NUM_CLASSES": 8})
    loader = build_loader(cfg, "test")
    replaced = loader.index.entries[1]
    write_video(replaced.path, pattern_frames(6, seed=1), codec="vp9", gop=8)  # 6 frames where 30 were indexed
    out = root / "run"
    metrics = MetricLogger(str(out), tensorboard=False, nvml=False, progress_bar=False)
    try:
        result = evaluate_and_log(_FixedRanking([8, 1, 7, 6, 5, 4, 3, 0]), loader, DistContext(), metrics,
                                  split="val", num_classes=8, class_names={c: f"class {c}" for c in range(8)})
    finally:
        metrics.close()
        loader.close()
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    quarantined = dict(x.split("\t") for x in open(loader.index.quarantine_path).read().splitlines())
    return out, result, line, quarantined


def test_every_listed_video_has_a_row_the_unreadable_ones_with_their_reason(evaluated):
    out, _, line, quarantined = evaluated
    rows = _rows(out / "predictions_val.csv")
    assert [r["index"] for r in rows] == ["0", "1", "2", "3", "4", "5"]  # list order, the left-out ones included
    assert [r["status"] for r in rows] == ["ok", "error", "ok", "ok", "ok", "error"]
    # the reasons the index recorded (its quarantine file), one left out when indexed and one while decoding
    broken, changed = rows[5], rows[1]
    assert (broken["path"], broken["label"], broken["label_name"]) == ("videos/broken.webm", "2", "class 2")
    assert broken["error"] == quarantined["videos/broken.webm"] and broken["error"]
    assert "changed since it was indexed" in changed["error"]
    assert changed["error"] == quarantined["videos/clip_1.webm"]
    # no score for them: the prediction columns are blank, the scored rows' error is
    for r in (broken, changed):
        assert r["correct_top1"] == "" and all(r[f"top{k}_{f}"] == "" for k in range(1, 6)
                                               for f in ("class", "name", "prob"))
    assert all(r["error"] == "" and r["top1_class"] == "0" and r["top5_class"] == "5" for r in rows if
               r["status"] == "ok")
    # ... and every row as wide as the header
    assert {len(r) for r in csv.reader(open(out / "predictions_val.csv"))} == {5 + 15 + 2}


def test_the_unreadable_rows_count_in_neither_the_accuracy_nor_the_plots(evaluated):
    out, result, line, _ = evaluated
    assert (line["num_videos"], line["listed_videos"], line["bad_at_index"], line["skipped_videos"]) == (4, 6, 1, 1)
    assert (line["top1"], line["top5"]) == (50.0, 75.0)  # labels 0, 2, 0, 1 of the scored videos only
    assert result["top1"] == line["top1"]
    per_class = _rows(out / "per_class_val.csv")
    assert [(r["class"], r["num_videos"], r["top1"], r["top5"]) for r in per_class] == [
        ("0", "2", "100.00", "100.00"), ("1", "1", "0.00", "0.00"), ("2", "1", "0.00", "100.00")]
    pairs, names = read_predictions(str(out / "predictions_val.csv"))
    assert pairs == [(0, 0), (2, 0), (0, 0), (1, 0)]


def test_the_eval_line_records_clips_and_crops_of_the_loader(evaluated):
    out, _, line, _ = evaluated
    assert (line["views"], line["num_clip"], line["num_crop"], line["checkpoint"]) == (6, 2, 3, None)
    assert set(EVAL_KEYS) <= set(line)
    assert "eval val (2 clips x 3 crops = 6 views/video, 4 videos): top-1 50.00%  top-5 75.00%" in (
        out / "log_rank0.txt").read_text()


def test_an_evaluation_that_scored_no_video_is_an_error_naming_the_list_not_a_top1_of_0(tmp_path, capsys):
    """Every video of the list changed after it was indexed: nothing was scored. The eval line read "1 clip x 1
    crop = 0 views/video, 0 videos): top-1 0.00%" and the summary a final_top1 of 0; now one line names the list,
    the counts and a reason, and the predictions file gives each video its row."""
    from dali_pipelines.loader import build_loader
    from dali_pipelines.pyav_encode import write_video
    from tests.video_fixtures import make_clip_dataset, pattern_frames, small_cfg

    lst = make_clip_dataset(str(tmp_path), [24, 30])
    cfg = small_cfg(str(tmp_path), val_list=lst, **{"TEST.NUM_CLIP": 1, "TEST.NUM_CROP": 1, "DATA.NUM_CLASSES": 8})
    loader = build_loader(cfg, "test")
    for entry in loader.index.entries:
        write_video(entry.path, pattern_frames(6, seed=1), codec="vp9", gop=8)
    metrics = MetricLogger(str(tmp_path / "run"), tensorboard=False, nvml=False, progress_bar=False)
    try:
        with pytest.raises(ConfigError) as raised:
            evaluate_and_log(_FixedRanking([1.0] + [0.0] * 7), loader, DistContext(), metrics, split="test",
                             num_classes=8)
    finally:
        metrics.close()
        loader.close()
    msg = str(raised.value)
    assert msg.startswith(f"DATA.VAL_FILE {lst}: none of its 2 listed videos could be scored (0 bad when the list "
                          "was indexed, 0 quarantined earlier in this run, 2 failed while decoding; e.g. ")
    assert "changed since it was indexed" in msg and "predictions_test.csv gives each its reason" in msg
    assert "\n" not in msg
    assert [r["status"] for r in _rows(tmp_path / "run" / "predictions_test.csv")] == ["error", "error"]
    assert "top-1 0.00%" not in capsys.readouterr().out
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == ""  # no eval line of no video


class _Batches:
    def __init__(self, labels: list[int]) -> None:
        self.labels = labels

    def __iter__(self):
        for r, y in enumerate(self.labels):
            yield {"video": torch.zeros(1, 1, 1, 3, 2, 2), "label": torch.tensor([y]), "index": torch.tensor([r])}


class _HostOnly(torch.Tensor):
    """A label or row tensor that records each call that would copy it to a device or to pinned memory."""

    moves: list[str] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in ("to", "cuda", "pin_memory", "copy_", "_to_copy"):
            cls.moves.append(name)
        return super().__torch_function__(func, types, args, kwargs or {})


def test_labels_and_rows_are_read_on_the_host_and_the_scores_are_the_mean_of_the_views_softmax():
    """The loader hands labels and list rows as host tensors: the evaluation reads them there, with no copy to the
    model's device and back at each batch (only the top-5 results come back, once). Each video's result is the
    top-5 of the mean of its views' softmax, by list row whatever the batches' order."""
    torch.manual_seed(0)
    videos = torch.randn(5, 3, 1, 3, 2, 2)  # 5 videos x 3 views of 1 frame
    labels, rows = [3, 0, 6, 2, 5], [4, 0, 3, 1, 2]
    model = nn.Sequential(nn.Flatten(1), nn.Linear(12, 7))
    batches = [{"video": videos[i:i + 2], "label": torch.tensor(labels[i:i + 2]).as_subclass(_HostOnly),
                "index": torch.tensor(rows[i:i + 2]).as_subclass(_HostOnly)} for i in range(0, 5, 2)]
    _HostOnly.moves.clear()
    result = evaluate(model, batches, DistContext())
    assert _HostOnly.moves == []
    with torch.no_grad():
        top = model(videos.flatten(0, 1)).softmax(-1).view(5, 3, 7).mean(1).topk(5)
    expected = sorted(zip(rows, labels, top.indices.tolist(), top.values.tolist()))
    got = result["predictions"]
    assert [p[:3] for p in got] == [e[:3] for e in expected]
    assert [p[3] for p in got] == [pytest.approx(e[3], abs=1e-6) for e in expected]
    assert result["top1"] == 100.0 * sum(e[2][0] == e[1] for e in expected) / 5
    assert result["top5"] == 100.0 * sum(e[1] in e[2] for e in expected) / 5
    assert (result["num_videos"], result["views"]) == (5, 3)


@pytest.mark.parametrize("classes, top5", [(3, None), (5, None), (6, 50.0)])
def test_top5_is_null_where_every_label_is_in_the_top_5(tmp_path, classes, top5, capsys):
    """With 5 classes or fewer every video's top 5 holds its label: a top-5 of 100 % would say nothing, whatever
    the model does. The key stays (null), in the eval line, the summary and the per-class file."""
    logits = [float(-c) for c in range(classes)]  # class 0 first, the last class last
    labels = [0, classes - 1]  # one right, one ranked last
    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    try:
        result = evaluate_and_log(_FixedRanking(logits), _Batches(labels), DistContext(), metrics, split="test",
                                  num_classes=classes)
        summary = metrics.summary({})
    finally:
        metrics.close()
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert (result["top1"], result["top5"], line["top5"], summary["final_top5"]) == (50.0, top5, top5, top5)
    per_class = _rows(tmp_path / "per_class_test.csv")
    assert [r["top5"] for r in per_class] == (["", ""] if top5 is None else ["100.00", "0.00"])
    out = capsys.readouterr().out
    assert ("top-5 n/a (5 classes or fewer)" in out) == (top5 is None)
    assert ("top-5 50.00%" in out) == (top5 is not None)
    # evaluate() alone says the same
    assert evaluate(_FixedRanking(logits), _Batches(labels), DistContext())["top5"] == top5


def test_the_eval_line_names_the_checkpoint_scored(tmp_path, capsys):
    weights = tmp_path / "ckpt_epoch_3.pth"
    weights.write_bytes(b"weights")
    metrics = MetricLogger(str(tmp_path / "run"), tensorboard=False, nvml=False, progress_bar=False)
    try:
        evaluate_and_log(_FixedRanking([1.0, 0.0]), _Batches([0]), DistContext(), metrics, split="test",
                         num_classes=2, checkpoint=str(weights))
    finally:
        metrics.close()
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert line["checkpoint"] == str(weights)
    assert (line["num_clip"], line["num_crop"]) == (None, None)  # a loader that does not say
    assert "eval test of ckpt_epoch_3.pth (1 view/video, 1 video): top-1 100.00%" in capsys.readouterr().out


def test_a_file_of_only_unreadable_videos_is_named_by_the_plots(tmp_path):
    pred, _ = write_predictions(str(tmp_path), "test", [], {0: "a.webm"}, num_classes=8,
                                unreadable=[(0, 1, "not a video")])
    assert _rows(pred) == [{"index": "0", "path": "a.webm", "label": "1", "label_name": "", "correct_top1": "",
                            **{f"top{k}_{f}": "" for k in range(1, 6) for f in ("class", "name", "prob")},
                            "status": "error", "error": "not a video"}]
    with pytest.raises(ValueError, match="all 1 rows are of videos that could not be read"):
        read_predictions(pred)


def test_the_predictions_and_per_class_files_are_synced_before_their_rename_and_the_folder_after(tmp_path,
                                                                                                 monkeypatch):
    """Both files were renamed into place unsynced, unlike the checkpoints and the run's other files: a power loss
    right after the eval line (which follows them) could leave an empty or half file under the final name. Each is
    now written whole to a temporary file, synced, renamed over its name, and the rename synced in its folder."""
    events = record_syncs(monkeypatch)
    preds = [(0, 0, [0, 1, 2, 3, 4], [.4, .2, .1, .1, .1]), (1, 3, [2, 3, 0, 1, 4], [.5, .3, .1, .05, .03])]
    written = write_predictions(str(tmp_path), "test", preds, {0: "a.mp4", 1: "b.mp4"}, 8)
    assert len(events) == 6, events
    for path, (synced, renamed, folder) in zip(written, (events[:3], events[3:])):
        name = os.path.basename(path)
        temp = synced[1]
        assert temp.startswith(f".{name}.") and temp.endswith(".tmp"), events
        assert synced == ("fsync", temp, os.path.getsize(path))  # the whole file, under its temporary name
        assert renamed == ("replace", temp, name) and folder == ("fsync folder", str(tmp_path)), events
    assert sorted(os.listdir(tmp_path)) == ["per_class_test.csv", "predictions_test.csv"]


def test_class_names_and_reasons_with_commas_quotes_line_breaks_and_accents_read_back_as_written(tmp_path):
    names = {0: "tying bow tie, knot", 1: 'say "hi"', 2: "café 跑步", 3: "x"}
    preds = [(0, 0, [0, 1, 2, 3], [.4, .3, .2, .1]), (1, 1, [2, 1, 0, 3], [.4, .3, .2, .1])]
    pred, per_class = write_predictions(str(tmp_path), "test", preds, {0: "a,b.mp4", 1: 'c"d.mp4', 2: "é.mp4"}, 4,
                                        names, unreadable=[(2, 2, 'first line\nsecond, "quoted"')])
    rows = _rows(pred)
    assert [(r["path"], r["label_name"], r["top1_name"], r["error"]) for r in rows] == [
        ("a,b.mp4", "tying bow tie, knot", "tying bow tie, knot", ""), ('c"d.mp4', 'say "hi"', "café 跑步", ""),
        ("é.mp4", "café 跑步", "", 'first line\nsecond, "quoted"')]
    assert [(r["class"], r["name"]) for r in _rows(per_class)] == [("0", "tying bow tie, knot"), ("1", 'say "hi"')]
    assert read_predictions(pred) == ([(0, 0), (1, 2)], {0: "tying bow tie, knot", 1: 'say "hi"', 2: "café 跑步"})


@pytest.mark.parametrize("rows_before", [2, 3000])  # 3000: past the first chunk the text decoder reads
def test_a_label_list_that_is_not_utf8_names_its_line(tmp_path, rows_before):
    """The error gave the byte offset within the decoder's chunk ("at byte 20"), which finds no line."""
    labels = tmp_path / "labels.csv"
    rows = "".join(f"{i},class {i}\n" for i in range(rows_before)).encode()
    labels.write_bytes(b"id,name\n" + rows + f"{rows_before},caf".encode() + b"\xe9\n")
    with pytest.raises(ConfigError) as e:
        read_label_names(str(labels))
    assert str(e.value) == (f"label list DATA.LABEL_LIST = {labels}, line {rows_before + 2}: not UTF-8 text "
                            "(invalid continuation byte, byte 0xe9)")


def test_a_predictions_file_that_is_not_utf8_names_its_line(tmp_path):
    """The plots' reader gave the byte offset within the decoder's chunk ("at byte 45"), not the line."""
    pred = tmp_path / "predictions_val.csv"
    pred.write_bytes(b"index,path,label,top1_class\n0,a.mp4,1,1\n1,caf\xe9.mp4,0,1\n")
    with pytest.raises(ValueError) as e:
        read_predictions(str(pred))
    assert str(e.value) == f"{pred}, line 3: not UTF-8 text (invalid continuation byte, byte 0xe9)"


@pytest.mark.parametrize("between, line", [("", 3), ("\n\n", 5)])
def test_a_predictions_row_without_integers_is_named_by_its_line(tmp_path, between, line):
    """The plots' reader counted data rows ("row 2"), one less than the line an editor shows (the header), and
    fewer still past blank lines."""
    pred = tmp_path / "predictions_val.csv"
    pred.write_text(f"index,path,label,top1_class\n0,a.mp4,1,1\n{between}1,b.mp4,one,1\n")
    with pytest.raises(ValueError) as e:
        read_predictions(str(pred))
    assert str(e.value) == (f"{pred}, line {line}: expected integer 'label' and 'top1_class' columns, got label "
                            "'one', top1_class '1'")


@pytest.mark.parametrize("first", ["O,abseiling", "0x,abseiling", "l,abseiling"])
def test_a_label_list_first_row_with_a_mistyped_id_is_named_not_taken_as_a_header(tmp_path, first):
    """Any first row whose id was not a number was skipped as a header: a mistyped 0 then surfaced as
    "no name for ids [0]", naming neither the row nor its line."""
    labels = tmp_path / "labels.csv"
    labels.write_text(f"{first}\n1,air drumming\n")
    with pytest.raises(ConfigError) as e:
        read_label_names(str(labels), 2)
    assert str(e.value) == (f"label list DATA.LABEL_LIST = {labels}, line 1: expected 'id,name' with an id >= 0, "
                            f"got {first!r} (nor is it a header, whose first column is a word such as 'id')")


@pytest.mark.parametrize("header", ["id,name", "Class ID,Class Name", "label,name", "category,name", "\n\nindex,name"])
def test_a_label_list_header_is_a_row_naming_its_id_column(tmp_path, header):
    """Headers name their id column (blank lines before one included, which made it an error)."""
    labels = tmp_path / "labels.csv"
    labels.write_text(f"{header}\n0,abseiling\n1,air drumming\n")
    assert read_label_names(str(labels), 2) == {0: "abseiling", 1: "air drumming"}


def test_label_list_lines_are_those_an_editor_shows(tmp_path):
    """Rows were numbered as CSV records: a quote left open took the later lines into one name (a row spanning
    lines), the names after it were lost and the next error named a record number, not a line."""
    labels = tmp_path / "labels.csv"
    labels.write_text('id,name\n0,"abseiling\n1,air drumming\n2,zumba\n')
    with pytest.raises(ConfigError) as e:
        read_label_names(str(labels), 3)
    assert str(e.value) == (f"label list DATA.LABEL_LIST = {labels}, line 2: a quote opened on this line is closed "
                            "only on line 4, or never")
    labels.write_bytes(b"id,name\r\n0,a\r1,b\r\n2,c\n0,d\n")  # \r ends a line too, as in an editor
    with pytest.raises(ConfigError, match=r"line 5: class 0 is named twice"):
        read_label_names(str(labels))


@pytest.mark.parametrize("row, why", [
    ("3,tying bow tie, knot", "expected 'id,name', got 3 fields '3,tying bow tie, knot': quote a name that holds a "
                              "comma"),
    ("3, ", "class 3 has no name ('3, ')")])
def test_a_label_list_row_whose_name_is_cut_or_empty_is_named(tmp_path, row, why):
    """csv cuts an unquoted name at its comma: class 3 was silently named "tying bow tie"; an empty name left the
    class blank in every prediction file."""
    labels = tmp_path / "labels.csv"
    labels.write_text(f"id,name\n0,a\n1,b\n2,c\n{row}\n")
    with pytest.raises(ConfigError) as e:
        read_label_names(str(labels), 4)
    assert str(e.value) == f"label list DATA.LABEL_LIST = {labels}, line 5: {why}"
    labels.write_text('id,name\n0,a,\n1,"b, c"\n')  # a trailing comma (a spreadsheet's empty column) is no field
    assert read_label_names(str(labels), 2) == {0: "a", 1: "b, c"}


def test_a_label_list_giving_one_name_to_several_classes_is_read_and_said_by_the_tools(tmp_path, capsys):
    """Two ids with one name were taken without a word, and the predictions by name could not tell them apart. The
    list is still read (the original reads names only to tokenise them), and predict's start warns once, naming each
    such name with its ids; a list whose names differ says nothing."""
    import os

    from engine.evaluate import names_given_twice
    from tools.model_io import load_setup

    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n0,abseiling\n1,air drumming\n2,abseiling\n3,air drumming\n4,abseiling\n5,bowling\n")
    names = read_label_names(str(labels), 6)
    assert names[0] == names[2] == names[4] == "abseiling"
    said = (f"label list DATA.LABEL_LIST = {labels} gives one name to several classes: 'abseiling' (ids 0, 2, 4), "
            "'air drumming' (ids 1, 3); the predictions and per-class tables name them alike (their ids tell them "
            "apart): rename them in the list to tell them apart by name")
    assert names_given_twice(str(labels), names) == said
    assert names_given_twice(str(labels), {0: "a", 1: "A", 2: "b"}) == ""
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"not read here")
    demo = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "demo.yaml")
    opts = ["DATA.LABEL_LIST", str(labels), "DATA.NUM_CLASSES", "6"]
    assert load_setup(demo, opts, str(weights))[1] == names
    assert capsys.readouterr().err.splitlines() == [f"warning: {said}"]
    load_setup(demo, opts, str(weights), warn=False)  # a caller that says its warnings itself
    assert capsys.readouterr().err == ""


def test_a_clock_set_back_during_an_evaluation_leaves_its_time_and_rate_positive(tmp_path, capsys, monkeypatch):
    """The evaluation's duration is measured on the monotonic clock: a wall clock set back an hour at every read
    (NTP, a virtual machine resumed) made time_s negative and videos/s 0 or negative, in metrics.jsonl and the
    console's eval line. The line's ``time`` stays the wall clock's (a time stamp, not a duration)."""
    import time

    wall = iter(range(10**9, 0, -3600))
    monkeypatch.setattr(time, "time", lambda: float(next(wall)))
    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    try:
        evaluate_and_log(_FixedRanking([1.0, 0.0]), _Batches([0, 1, 0]), DistContext(), metrics, split="val",
                         num_classes=2)
    finally:
        metrics.close()
    line = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert line["time_s"] >= 0 and 0 <= line["startup_s"] <= line["time_s"]
    assert line["videos_per_sec"] > 0 or line["time_s"] == 0
    assert line["time"] <= 10**9  # the wall clock's, as the patched clock read it
    said = [x for x in capsys.readouterr().out.splitlines() if x.startswith("eval val")]
    assert len(said) == 1 and " -" not in said[0], said


@pytest.mark.parametrize("label", [4, 7, -1])
def test_a_label_that_is_no_class_of_the_model_is_refused_naming_its_row(tmp_path, label):
    """A label at or past the head's classes was counted wrong in silence by evaluate() (and evaluate_and_log then
    failed with a bare IndexError); a label of -1 was counted in the per-class table as the last class."""
    with pytest.raises(ValueError, match=rf"labels outside the model's 4 classes \(0 to 3\): list row 1 has label "
                                         rf"{label}; check the list's labels"):
        evaluate(_FixedRanking([4, 3, 2, 1]), _Batches([0, label, 2]), DistContext())
    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    try:
        with pytest.raises(ValueError, match="list row 1 has label"):
            evaluate_and_log(_FixedRanking([4, 3, 2, 1]), _Batches([0, label]), DistContext(), metrics,
                             split="test", num_classes=4)
    finally:
        metrics.close()
    assert not (tmp_path / "per_class_test.csv").exists()


def test_nan_scores_are_refused_naming_the_rows_not_ranked_by_chance():
    """A model whose output is NaN made every probability of a video NaN; its top-5 was then an arbitrary ranking,
    which matched the label by chance and counted in top-1 and top-5."""
    with pytest.raises(ValueError, match=r"scores for 3 videos \(list rows 0, 1, 2\) are NaN or infinite"):
        evaluate(_FixedRanking([float("nan")] + [0.0] * 7), _Batches([0, 3, 5]), DistContext())
    # a finite output is scored as before
    assert evaluate(_FixedRanking([1.0] + [0.0] * 7), _Batches([0, 3]), DistContext())["top1"] == 50.0


@pytest.mark.parametrize("logits, ranked", [([0.0] * 8, [0, 1, 2, 3, 4]),
                                            ([0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0], [1, 2, 5, 0, 3])])
def test_tied_scores_are_ranked_toward_the_lower_class_in_the_predictions_file(tmp_path, logits, ranked):
    """torch.topk put tied classes in an arbitrary order (all-equal scores gave 4, 7, 6, 5, 2), which predict need
    not share: ties are now listed in class order, as predict lists them."""
    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    try:
        evaluate_and_log(_FixedRanking(logits), _Batches([0, 3]), DistContext(), metrics, split="test", num_classes=8)
    finally:
        metrics.close()
    rows = _rows(tmp_path / "predictions_test.csv")
    assert [[int(r[f"top{k}_class"]) for k in range(1, 6)] for r in rows] == [ranked, ranked]


def test_a_full_disk_at_the_predictions_file_still_logs_the_accuracy_then_names_the_file(tmp_path, capsys,
                                                                                          monkeypatch):
    """The predictions file is written before the eval line: a full disk there raised before the accuracy was
    printed or logged, and the hours of a multi-view test left no number. The eval line comes first now, then the
    error naming the file."""
    import errno

    import engine.prediction_files as prediction_files

    def full_disk(path, text, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prediction_files, "atomic_write_text", full_disk)
    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    try:
        with pytest.raises(OSError, match="predictions_test.csv"):
            evaluate_and_log(_FixedRanking([3.0, 2, 1, 0, -1, -2]), _Batches([0, 1, 0]), DistContext(), metrics,
                             split="test", num_classes=6)
    finally:
        metrics.close()
    assert "eval test (1 view/video, 3 videos): top-1 66.67%" in capsys.readouterr().out
    line = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert (line["kind"], line["top1"], line["num_videos"]) == ("eval", pytest.approx(200 / 3), 3)


def test_an_eval_line_that_metrics_jsonl_cannot_take_is_printed_before_the_error(tmp_path, capsys, monkeypatch):
    """A full disk at metrics.jsonl raised before the eval line reached the console: no accuracy anywhere."""
    import engine.metrics as metrics_module

    def full_disk(jsonl, line):
        raise OSError(28, f"No space left on device: {jsonl.name!r}")

    monkeypatch.setattr(metrics_module, "write_line", full_disk)
    metrics = MetricLogger(str(tmp_path), tensorboard=False, nvml=False, progress_bar=False)
    try:
        with pytest.raises(OSError, match="metrics.jsonl"):
            metrics.log_eval({"split": "val", "top1": 75.0, "top5": 100.0, "num_videos": 4, "views": 12}, None,
                             None)
    finally:
        metrics.close()
    assert "top-1 75.00%" in capsys.readouterr().out
