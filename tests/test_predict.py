"""tools.predict: the same top-k classes and probabilities as an evaluation run on the same videos and views,
unreadable files listed and the rest predicted, the three output formats."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from configs import load_config
from engine.distributed import DistContext
from models import build_model
from tools import predict

from tests.video_fixtures import synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synthetic_dataset(tmp_path_factory, "synth_predict", 1, 2, num_frames=12, size=(48, 32))


def _opts(data: Path, out: Path) -> list[str]:
    return ["DATA.ROOT", str(data), "DATA.TRAIN_FILE", str(data / "train.txt"), "DATA.VAL_FILE",
            str(data / "val.txt"), "DATA.LABEL_LIST", str(data / "labels.csv"), "DATA.INPUT_SIZE", "32",
            "DATA.NUM_FRAMES", "4", "DATA.TUBELET_SIZE", "2", "DATA.NUM_THREADS", "1", "DATA.NUM_WORKERS", "1",
            "DATA.INDEX_WORKERS", "1", "TEST.BATCH_SIZE", "3", "TEST.NUM_CLIP", "2", "TEST.NUM_CROP", "3",
            "LOG.PROGRESS_BAR", "False", "LOG.TENSORBOARD", "False", "LOG.NVML", "False", "OUTPUT", str(out)]


@pytest.fixture(scope="module")
def evaluated(dataset, tmp_path_factory):
    """A randomly initialised tiny model (head scale 1: spread-out probabilities), evaluated by train.py."""
    tmp = tmp_path_factory.mktemp("predict_eval")
    opts = _opts(dataset, tmp / "eval")
    cfg = load_config(DEMO, opts)
    torch.manual_seed(3)
    ckpt = tmp / "model.pth"
    torch.save({"model": build_model(cfg).state_dict()}, ckpt)
    assert train.main(["--cfg", DEMO, "--only_test", "--resume", str(ckpt), "--opts", *opts]) == 0
    with open(tmp / "eval" / "predictions_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return tmp, opts, ckpt, rows


def test_predict_matches_evaluation_and_lists_unreadable(evaluated, dataset, capsys):
    tmp, opts, ckpt, eval_rows = evaluated
    broken = tmp / "broken.mp4"
    broken.write_bytes(b"this is not a video")
    out = tmp / "pred.jsonl"
    rc = predict.main([str(dataset / "val.txt"), str(broken), "--cfg", DEMO, "--weights", str(ckpt), "--top-k", "3",
                       "--out", str(out), "--work-dir", str(tmp / "work"), "--opts", *opts])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(eval_rows) + 1
    by_path = {r["path"]: r for r in records}
    assert by_path[str(broken)]["status"] == "error" and by_path[str(broken)]["error"]
    assert str(broken) in captured.out and "unreadable" in captured.out
    assert "predicted 8 of 9 videos (2 clips x 3 crops); 1 unreadable" in captured.err
    for row in eval_rows:
        rec = by_path[str(dataset / row["path"])]
        assert rec["status"] == "ok"
        assert [t["class"] for t in rec["top_k"]] == [int(row[f"top{k}_class"]) for k in (1, 2, 3)]
        assert [t["name"] for t in rec["top_k"]] == [row[f"top{k}_name"] for k in (1, 2, 3)]
        for k, t in enumerate(rec["top_k"], start=1):
            assert t["prob"] == pytest.approx(float(row[f"top{k}_prob"]), abs=2e-6)
    probs = [t["prob"] for r in records if r["status"] == "ok" for t in r["top_k"]]
    assert 0.05 < min(probs) and max(probs) < 0.95  # spread-out scores: the comparison is not vacuous


def test_predict_csv_and_table_formats_parse(evaluated, dataset):
    tmp, opts, ckpt, eval_rows = evaluated
    videos = sorted((dataset / "videos").rglob("*.webm"))[:3]
    args = [str(v) for v in videos] + ["--cfg", DEMO, "--weights", str(ckpt), "--top-k", "2", "--quiet",
                                       "--work-dir", str(tmp / "work_fmt"), "--opts", *opts]
    assert predict.main(args + ["--out", str(tmp / "p.csv")]) == 0
    with open(tmp / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [str(v) for v in videos]
    assert all(r["status"] == "ok" and r["top1_name"] and float(r["top1_prob"]) >= float(r["top2_prob"])
               for r in rows)
    assert predict.main(args + ["--out", str(tmp / "p.txt")]) == 0
    lines = (tmp / "p.txt").read_text().splitlines()
    assert lines[0].split() == ["video", "rank", "class", "name", "probability"]
    assert len(lines) == 1 + 2 * len(videos)
    first = rows[0]
    assert lines[1].startswith(str(videos[0])) and lines[1].split()[-1] == f"{float(first['top1_prob']):.4f}"


def test_predictor_gives_the_commands_records_and_removes_its_temporary_folder(evaluated, dataset, tmp_path):
    """The Python API: the model loaded once, the records of predict.main for the same videos (two calls, a list
    and a single path), a temporary work folder removed on leaving the with block; bad input raises."""
    from tools.inference import InputError

    tmp, opts, ckpt, eval_rows = evaluated
    out = tmp_path / "cli.jsonl"
    assert predict.main([str(dataset / "val.txt"), "--cfg", DEMO, "--weights", str(ckpt), "--top-k", "3", "--quiet",
                         "--out", str(out), "--work-dir", str(tmp_path / "cli_work"), "--opts", *opts]) == 0
    cli = [json.loads(line) for line in out.read_text().splitlines()]
    # given on its own, not from the labelled list, a video has no label
    unlabelled = {k: v for k, v in cli[-1].items() if k not in ("label", "label_name")}
    with predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, device="cpu") as predictor:
        work = Path(predictor.work_dir)
        assert predictor.predict(str(dataset / "val.txt"), top_k=3) == cli
        one = cli[-1]["path"]
        assert predictor.predict([Path(one)], top_k=3) == [unlabelled]  # the model stays loaded between calls
        assert len(list(work.glob("videos-*.txt"))) == 2  # one list per set of videos, with its index cache
        with pytest.raises(InputError, match="no videos found"):
            predictor.predict([str(tmp_path / "cli_work")])
    assert len(cli) == len(eval_rows) and all(r["status"] == "ok" for r in cli)
    assert not work.exists()
    with pytest.raises(RuntimeError, match="closed"):
        predictor.predict(one)
    # closed is said first: an input with no video in it was "no videos found", as if the Predictor could go on
    for call in (predictor.predict, predictor.features):
        with pytest.raises(RuntimeError, match="this Predictor is closed"):
            call([str(tmp_path / "cli_work")])
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        predict.Predictor(str(tmp_path / "none.pth"), cfg=DEMO, opts=opts)
    # the whole message: torch's "Expected one of cpu, cuda, ipu, xpu, ..." listed what is refused here
    for device in ("tpu", "gpu", "cuda:x"):
        with pytest.raises(ValueError) as raised:
            predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, device=device)
        assert str(raised.value) == f"device {device!r}: give auto, cpu, cuda or cuda:N"
    # a torch.device is taken as its name is; None was torch's ten lines of "invalid combination of arguments"
    from tools.model_io import compute_device

    assert compute_device(torch.device("cpu")) == torch.device("cpu")
    for device in (None, 1.5):
        with pytest.raises(TypeError) as raised:
            predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, device=device)
        assert str(raised.value) == ("device must be auto, cpu, cuda, cuda:N or a torch.device, got "
                                     f"{type(device).__name__} {device!r}")
    kept = tmp_path / "kept"
    # the type in any case, as torch's messages print it ("CPU" was refused)
    with predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, work_dir=str(kept), device="CPU") as predictor:
        assert predictor.predict(one, top_k=3) == [unlabelled]
    assert list(kept.glob("videos-*.index.npz"))  # a given work folder keeps its caches for the next run


def test_a_predictor_never_closed_leaves_no_temporary_folder(evaluated, dataset):
    """Without close() or a with block (a notebook's Predictor, dropped), its temporary folder and index caches
    stayed in the temporary folder for good: removed now when it is collected, and close() after that is harmless."""
    import gc

    tmp, opts, ckpt, eval_rows = evaluated
    predictor = predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, device="cpu")
    assert predictor.predict(str(dataset / eval_rows[0]["path"]), top_k=1)[0]["status"] == "ok"
    work = Path(predictor.work_dir)
    assert list(work.glob("videos-*.index.npz"))
    del predictor
    gc.collect()
    assert not work.exists()
    closed = predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, device="cpu")
    work = Path(closed.work_dir)
    closed.close()
    closed.close()
    assert not work.exists() and closed.work_dir is None


def test_predictor_opts_take_numbers_and_refuse_a_string_or_a_dict_naming_opts(evaluated, dataset):
    """opts=["TEST.NUM_CLIP", 1] was "'int' object has no attribute 'partition'"; a str was read letter by letter
    and a dict key by key, each into a ConfigError about KEY VALUE pairs that did not say opts was the wrong type."""
    tmp, opts, ckpt, eval_rows = evaluated
    with predict.Predictor(str(ckpt), cfg=DEMO, opts=[*opts, "TEST.NUM_CLIP", 1, "TEST.NUM_CROP", 1],
                           device="cpu") as predictor:
        assert (predictor.cfg.TEST.NUM_CLIP, predictor.cfg.TEST.NUM_CROP) == (1, 1)
    example = "e.g. opts=['TEST.NUM_CLIP', '4', 'TEST.NUM_CROP', '3']"
    for given, message in (("TEST.NUM_CLIP 1", f"opts must be a sequence of KEY VALUE items, {example}, got str "
                                                "'TEST.NUM_CLIP 1'"),
                           ({"TEST.NUM_CLIP": 1}, f"opts must be a sequence of KEY VALUE items, {example}, got dict "
                                                  "{'TEST.NUM_CLIP': 1}"),
                           (["TEST.NUM_CLIP", None], f"opts items must be str (a key or a value) or numbers, "
                                                     f"{example}, got NoneType None")):
        with pytest.raises(TypeError) as raised:
            predict.Predictor(str(ckpt), cfg=DEMO, opts=given, device="cpu")
        assert str(raised.value) == message


def test_a_relative_work_dir_stays_where_the_predictor_made_it(evaluated, dataset, tmp_path, monkeypatch):
    """A relative work_dir named a folder of the working folder at each call: after an os.chdir (a notebook's
    %cd) the caches went to a second folder of that name, made there, not to the one the Predictor made."""
    tmp, opts, ckpt, eval_rows = evaluated
    video = str(dataset / eval_rows[0]["path"])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    with predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, work_dir="work", device="cpu") as predictor:
        monkeypatch.chdir(tmp_path / "elsewhere")
        assert predictor.predict(video, top_k=1)[0]["status"] == "ok"
        assert predictor.work_dir == str(tmp_path / "work")
    assert list((tmp_path / "work").glob("videos-*.index.npz"))
    assert not os.listdir(tmp_path / "elsewhere")


def test_predictor_refuses_a_top_k_below_one_before_decoding(evaluated, dataset, monkeypatch):
    """The command refuses --top-k 0; Predictor.predict(top_k=0) returned "ok" records with no class at all, and a
    negative one failed after every video was decoded with torch's "selected index k out of range"."""
    from tools import inference

    tmp, opts, ckpt, eval_rows = evaluated
    video = str(dataset / eval_rows[0]["path"])
    with predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, device="cpu") as predictor:
        assert predictor.predict(video, top_k=1)[0]["top_k"][0]["class"] == int(eval_rows[0]["top1_class"])

        def no_loader(*args, **kwargs):
            raise AssertionError("a video was decoded")

        monkeypatch.setattr(inference, "build_view_loader", no_loader)
        for k in (0, -1, -2):
            with pytest.raises(ValueError, match=f"top_k must be at least 1, got {k}"):
                predictor.predict(video, top_k=k)
        # not an int: torch's "topk(): argument 'k' must be int, not float" once every video was decoded
        for k, typed in ((2.0, "float 2.0"), ("2", "str '2'"), (True, "bool True"), (False, "bool False")):
            with pytest.raises(TypeError, match=re.escape(f"top_k must be an int, got {typed}")):
                predictor.predict(video, top_k=k)
        monkeypatch.undo()
        assert predictor.predict(video, top_k=np.int64(1))[0]["top_k"][0]["class"] == int(eval_rows[0]["top1_class"])


def test_predictor_takes_paths_as_bytes_and_names_an_argument_that_is_no_path(evaluated, dataset):
    """A bytes path (from os.listdir(b".")) was iterated into integers ("expected str, bytes or os.PathLike object,
    not int"), as weights "cannot use a string pattern on a bytes-like object"; a state_dict given as weights, or
    None as videos, was an error naming no argument. Bytes are now paths, as os.fsdecode reads them, and anything
    else a TypeError naming the argument; root=None is no root."""
    tmp, opts, ckpt, eval_rows = evaluated
    video = str(dataset / eval_rows[0]["path"])
    with predict.Predictor(os.fsencode(ckpt), cfg=os.fsencode(DEMO), opts=opts, device="cpu") as predictor:
        expected = predictor.predict(video, top_k=2)
        assert expected[0]["status"] == "ok"
        assert predictor.predict(os.fsencode(video), top_k=2) == expected
        assert predictor.predict([os.fsencode(video)], top_k=2, root=None) == expected
        for videos, typed in ((None, "NoneType None"), (3, "int 3")):
            with pytest.raises(TypeError, match=re.escape(f"videos must be a path or an iterable of paths (str, "
                                                          f"bytes or os.PathLike), got {typed}")):
                predictor.predict(videos)
        with pytest.raises(TypeError, match=re.escape("each of videos must be a path (str, bytes or os.PathLike), "
                                                      "got NoneType None")):
            predictor.features([video, None])
    state = torch.load(ckpt, map_location="cpu")
    with pytest.raises(TypeError) as raised:
        predict.Predictor(state["model"], cfg=DEMO, opts=opts, device="cpu")
    assert str(raised.value) == ("weights must be a path (str, bytes or os.PathLike), got OrderedDict (weights "
                                 "already loaded: give the file they were read from, or save them with torch.save)")


def test_a_device_is_taken_in_any_case_and_a_typo_named(monkeypatch):
    """Predictor(device="CPU") was refused ("give auto, cpu, cuda or cuda:N"), though torch's messages print the
    device so; the type is taken in any case, and a name that is no device is still refused, as given."""
    from tools.model_io import compute_device

    for name in ("CPU", "Cpu", "cpu"):
        assert compute_device(name) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert compute_device("AUTO") == torch.device("cpu")
    with pytest.raises(ValueError) as raised:  # a CUDA device, read as one: refused for the machine, not the name
        compute_device("Cuda:0")
    assert str(raised.value) == "device 'Cuda:0': CUDA is not available on this machine"
    for typo in ("CPUU", "Cuda:x", "GPU"):
        with pytest.raises(ValueError) as raised:
            compute_device(typo)
        assert str(raised.value) == f"device {typo!r}: give auto, cpu, cuda or cuda:N"


def test_predictor_reads_a_cfg_given_as_bytes_as_its_other_paths(tmp_path):
    """cfg as bytes (a name from os.listdir(b".")) reached the config reader undecoded: its errors named the file
    b'...'; a cfg that is no path was "expected str, bytes or os.PathLike object, not int", naming no argument."""
    from configs import ConfigError

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"never read: the config is")
    missing = tmp_path / "none.yaml"
    with pytest.raises(ConfigError) as raised:
        predict.Predictor(os.fsencode(weights), cfg=os.fsencode(missing), device="cpu")
    assert str(raised.value) == f"config file not found: {missing}"
    with pytest.raises(TypeError) as raised:
        predict.Predictor(str(weights), cfg=3, device="cpu")
    assert str(raised.value) == "cfg must be a path (str, bytes or os.PathLike), got int 3"


def test_predictor_notes_a_top_k_above_the_models_classes_as_the_command_does(evaluated, dataset, capsys):
    """The command says "note: --top-k 10 is more than the 4 classes: every class is listed"; Predictor.predict
    listed every class without a word. Now the same line, naming top_k; every class asked for, or the default
    (5) left out or asked for with None, is not noted, as in the command: the same records as a 5 given."""
    tmp, opts, ckpt, eval_rows = evaluated
    classes = load_config(DEMO, opts).DATA.NUM_CLASSES
    assert classes < 5  # the default top_k, 5, is above them
    video = str(dataset / eval_rows[0]["path"])
    with predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, device="cpu") as predictor:
        capsys.readouterr()
        for k in (classes + 6, np.int64(classes + 1), 5):  # the default's value, given
            records = predictor.predict(video, top_k=k)
            assert capsys.readouterr().err.splitlines() == [
                f"note: top_k {k} is more than the {classes} classes: every class is listed"]
            assert sorted(t["class"] for t in records[0]["top_k"]) == list(range(classes))
        noted = records  # top_k=5, the default's value given
        for given in ({"top_k": classes}, {}, {"top_k": None}):
            records = predictor.predict(video, **given)
            assert capsys.readouterr().err == "" and records == noted


def test_predictor_features_name_a_window_or_stride_that_is_no_int(evaluated, dataset):
    """features(window=2.5) was "'float' object cannot be interpreted as an integer", naming neither setting."""
    tmp, opts, ckpt, eval_rows = evaluated
    video = str(dataset / eval_rows[0]["path"])
    with predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, device="cpu") as predictor:
        for kwargs, message in (({"window": 2.5}, "window must be an int, got float 2.5"),
                                ({"window": 4, "stride": "2"}, "stride must be an int, got str '2'")):
            with pytest.raises(TypeError) as raised:
                predictor.features(video, **kwargs)
            assert str(raised.value) == message
        (record,) = predictor.features(video, window=np.int64(4), stride=np.int64(4))
        assert record["status"] == "ok" and record["mode"] == "windows"


def test_format_functions_round_trip():
    records = [{"path": "a b.mp4", "status": "ok", "top_k": [{"class": 2, "name": "x, y", "prob": 0.75}]},
               {"path": "c.mp4", "status": "error", "error": "zero-byte file"}]
    assert [json.loads(x) for x in predict.format_jsonl(records).splitlines()] == records
    rows = list(csv.reader(io.StringIO(predict.format_csv(records))))
    assert rows[1] == ["a b.mp4", "ok", "", "2", "x, y", "0.750000"] and rows[2][:3] == ["c.mp4", "error",
                                                                                         "zero-byte file"]
    assert "zero-byte file" in predict.format_table(records).splitlines()[2]
    # classes without names: the record has no "name"; CSV and table keep their columns, the name blank
    unnamed = [{"path": "a.mp4", "status": "ok", "top_k": [{"class": 2, "prob": 0.75}, {"class": 0, "prob": 0.25}]}]
    rows = list(csv.reader(io.StringIO(predict.format_csv(unnamed))))
    assert rows == [["path", "status", "error", "top1_class", "top1_name", "top1_prob", "top2_class", "top2_name",
                     "top2_prob"], ["a.mp4", "ok", "", "2", "", "0.750000", "0", "", "0.250000"]]
    table = predict.format_table(unnamed).splitlines()
    assert table[0].split() == ["video", "rank", "class", "name", "probability"]
    assert table[1].split() == ["a.mp4", "1", "2", "0.7500"] and table[2].split() == ["2", "0", "0.2500"]


def test_labels_in_the_formats_and_the_accuracy_line():
    """Labelled records: CSV's label columns come last, blank for a video without one (and for an unreadable one's
    missing scores); the table gets a label column; the accuracy counts the predicted videos with a label."""
    top = [{"class": 2, "name": "x", "prob": 0.75}, {"class": 1, "name": "y", "prob": 0.25}]
    records = [{"path": "a.mp4", "status": "ok", "top_k": top, "label": 1, "label_name": "y"},
               {"path": "b.mp4", "status": "error", "error": "missing file", "label": 0, "label_name": "z"},
               {"path": "c.mp4", "status": "ok", "top_k": top},
               {"path": "d.mp4", "status": "ok", "top_k": top, "label": 2}]
    rows = list(csv.reader(io.StringIO(predict.format_csv(records))))
    assert rows[0][-2:] == ["label", "label_name"] and len(rows[0]) == 11
    assert [r[-2:] for r in rows[1:]] == [["1", "y"], ["0", "z"], ["", ""], ["2", ""]]
    assert rows[2] == ["b.mp4", "error", "missing file"] + [""] * 6 + ["0", "z"]
    table = predict.format_table(records).splitlines()
    assert table[0].split() == ["video", "label", "rank", "class", "name", "probability"]
    assert table[1].split() == ["a.mp4", "1", "1", "2", "x", "0.7500"] and table[4].split()[:2] == ["c.mp4", "1"]
    assert predict.accuracy_line(records, 2) == "top-1 50.00 % / top-2 100.00 % on 2 labelled videos"
    assert predict.accuracy_line(records[:1], 1) == "top-1 0.00 % on 1 labelled video"
    assert predict.accuracy_line(records[1:3], 5) == ""  # no predicted video has a label
    # a top-k that ranks every class was "top-5 100.00 %" for any model (a 2-class one here), where an evaluation
    # run leaves its top-5 out
    assert predict.accuracy_line(records, 5) == "top-1 50.00 % (top-5 n/a: 2 classes) on 2 labelled videos"
    assert predict.accuracy_line(records, 2, num_classes=2) == \
        "top-1 50.00 % (top-2 n/a: 2 classes) on 2 labelled videos"
    assert predict.accuracy_line(records, 2, num_classes=3) == "top-1 50.00 % / top-2 100.00 % on 2 labelled videos"
    assert "label" not in predict.format_csv(records[2:3])  # no label: the columns of before


def test_json_out_is_one_json_array_and_jsonl_a_line_per_video(evaluated, dataset, tmp_path, capsys):
    """--out preds.json wrote JSON Lines, which json.load refuses: .json is now one array, .jsonl JSON Lines, and
    --format decides over the extension as its help says."""
    tmp, opts, ckpt, _ = evaluated
    videos = [str(v) for v in sorted((dataset / "videos").rglob("*.webm"))[:2]]
    common = videos + ["--cfg", DEMO, "--weights", str(ckpt), "--top-k", "2", "--quiet", "--work-dir",
                       str(tmp / "work_json"), "--opts", *opts]
    assert predict.main(common + ["--out", str(tmp_path / "p.json")]) == 0
    assert predict.main(common + ["--out", str(tmp_path / "p.jsonl")]) == 0
    with open(tmp_path / "p.json", encoding="utf-8") as f:
        array = json.load(f)
    assert [r["path"] for r in array] == videos and all(r["status"] == "ok" for r in array)
    assert array == [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert predict.main(common + ["--out", str(tmp_path / "lines.json"), "--format", "jsonl"]) == 0
    assert (tmp_path / "lines.json").read_text() == (tmp_path / "p.jsonl").read_text()
    assert predict.main(common + ["--out", str(tmp_path / "array.txt"), "--format", "json"]) == 0
    assert json.loads((tmp_path / "array.txt").read_text()) == array
    with pytest.raises(SystemExit):
        predict.parse_args(["--help"])
    assert "json (one array), jsonl (a line per video) or csv" in " ".join(capsys.readouterr().out.split())


def test_format_without_out_is_the_format_of_stdout(evaluated, dataset, tmp_path, capsys):
    """--format without --out was ignored: stdout kept the table, and with --quiet the predictions were computed
    and printed nowhere (exit 0, empty stdout). It now names stdout's format, --quiet silencing only progress."""
    tmp, opts, ckpt, _ = evaluated
    videos = [str(v) for v in sorted((dataset / "videos").rglob("*.webm"))[:2]]
    common = videos + ["--cfg", DEMO, "--weights", str(ckpt), "--top-k", "2", "--quiet", "--work-dir",
                       str(tmp / "work_stdout"), "--opts", *opts]
    assert predict.main(common + ["--out", str(tmp_path / "p.jsonl")]) == 0
    written = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    capsys.readouterr()
    assert predict.main(common[:-len(opts) - 1] + ["--format", "jsonl", "--opts", *opts]) == 0
    assert [json.loads(x) for x in capsys.readouterr().out.splitlines()] == written
    loud = [a for a in common if a != "--quiet"]
    assert predict.main(loud[:-len(opts) - 1] + ["--format", "csv", "--opts", *opts]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["path"] for r in rows] == videos
    assert [float(r["top1_prob"]) for r in rows] == pytest.approx([r["top_k"][0]["prob"] for r in written], abs=1e-6)


def test_predictor_gives_a_record_per_video_given_named_as_given(evaluated, dataset, monkeypatch):
    """Predictor.predict dropped a video named twice, so that zip(videos, records) paired the wrong ones, and gave
    absolute paths for relative names: now one record per video given, in the order given, named as given (a
    folder's or a list's videos keep their absolute paths, as the command writes them)."""
    tmp, opts, ckpt, eval_rows = evaluated
    a, b = (str(dataset / r["path"]) for r in eval_rows[:2])
    top1 = {str(dataset / r["path"]): int(r["top1_class"]) for r in eval_rows}
    monkeypatch.chdir(os.path.dirname(b))
    given = [a, os.path.basename(b), a, str(dataset / "val.txt")]
    with predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, device="cpu") as predictor:
        records = predictor.predict(given, top_k=2)
    from tools.inference import collect_videos

    listed = collect_videos([str(dataset / "val.txt")])  # the list's videos, absolute, in its order
    assert [r["path"] for r in records] == given[:3] + listed
    assert [r["top_k"][0]["class"] for r in records] == [top1[a], top1[b], top1[a]] + [top1[p] for p in listed]
    assert records[0] == records[2] and records[1]["top_k"] == records[4]["top_k"]
    # each record its own: a repeat's top_k list was the first's, so that changing one changed both
    records[0]["top_k"][0]["prob"] = -1.0
    assert records[2]["top_k"][0]["prob"] > 0 and records[4]["top_k"][0]["prob"] > 0
    with predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, device="cpu") as predictor:
        first, again = predictor.features([a, a])
    first["features"] /= 2.0  # an in-place normalisation of one record
    np.testing.assert_array_equal(again["features"], 2.0 * first["features"])


@pytest.mark.parametrize("logits, ranked", [([0.0] * 8, [0, 1, 2, 3, 4]),
                                            ([0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0], [1, 2, 5, 0, 3])])
def test_tied_scores_are_ranked_toward_the_lower_class_as_evaluation_ranks_them(monkeypatch, logits, ranked):
    """torch.topk put tied classes in an arbitrary order (all-equal scores gave 4, 7, 6, 5, 2), so that predict's
    records could differ from the evaluation's predictions file: ties are now listed in class order in both."""
    from tools import inference

    def views_of_equal_clips(*args, each_batch, **kwargs):  # two videos of 3 views, every view scored ``logits``
        each_batch([0, 1], None, torch.tensor(logits).expand(2, 3, -1))
        return {}, {}

    monkeypatch.setattr(inference, "views_through_model", views_of_equal_clips)
    records = predict.predict_videos(load_config(DEMO), None, ["a.mp4", "b.mp4"], "unused", DistContext(),
                                     top_k=5, progress=False)
    assert [[t["class"] for t in r["top_k"]] for r in records] == [ranked, ranked]


def _listed_labels(lst: Path) -> list[tuple[str, int]]:
    """(absolute path, label) per line of a training list whose paths are relative to its folder."""
    return [(str(lst.parent / name), int(label)) for name, label in
            (line.rsplit(None, 1) for line in lst.read_text().splitlines() if line.strip())]


def test_predict_reports_a_labelled_lists_labels_and_accuracy(evaluated, dataset, tmp_path, capsys):
    """A list's trailing labels were read and dropped: predicting a validation list now gives each video its label
    and class name, and closes with the top-1 / top-k accuracy over them, an evaluation's top-1 on that list. A video
    given again in another list keeps each list's label; one given on its own has none."""
    tmp, opts, ckpt, eval_rows = evaluated
    listed = _listed_labels(dataset / "val.txt")
    names = {int(i): n for i, n in (row.split(",", 1) for row in (dataset / "labels.csv").read_text().splitlines()[1:])}
    common = ["--cfg", DEMO, "--weights", str(ckpt), "--top-k", "2", "--quiet", "--work-dir",
              str(tmp / "work_labelled"), "--opts", *opts]
    out = tmp_path / "val.jsonl"
    assert predict.main([str(dataset / "val.txt"), "--out", str(out)] + common) == 0
    err = capsys.readouterr().err.splitlines()
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["path"], r["label"], r["label_name"]) for r in records] == [(p, c, names[c]) for p, c in listed]
    assert {r["path"]: r["label"] for r in records} == {str(dataset / r["path"]): int(r["label"]) for r in eval_rows}
    top1 = 100.0 * sum(r["top_k"][0]["class"] == r["label"] for r in records) / len(records)
    top2 = 100.0 * sum(r["label"] in [t["class"] for t in r["top_k"]] for r in records) / len(records)
    assert err == ["predicted 8 of 8 videos (2 clips x 3 crops)",
                   f"top-1 {top1:.2f} % / top-2 {top2:.2f} % on 8 labelled videos"], err
    summary = json.loads((tmp / "eval" / "summary.json").read_text())
    assert f"{summary['final_top1']:.2f}" == f"{top1:.2f}"  # the evaluation's top-1 on the same list and weights
    assert top1 < top2 < 100, (top1, top2)  # the untrained model: top-1 0 %, some labels second

    # the first video again in another list, labelled with its top-1 class (a hit), and the second on its own; CSV
    (a, label_a), (b, _) = listed[:2]
    label_other = records[0]["top_k"][0]["class"]
    assert label_other != label_a
    other = tmp_path / "other.lst"
    other.write_text(f"{a} {label_other}\n")  # an absolute path: the list's folder is not joined to it
    inputs = [str(dataset / "val.txt"), str(other), b]
    assert predict.main(inputs + ["--out", str(tmp_path / "p.csv")] + common) == 0
    err = capsys.readouterr().err.splitlines()
    with open(tmp_path / "p.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["path", "status", "error"] + [f"top{k}_{f}" for k in (1, 2) for f in ("class", "name", "prob")] \
        + ["label", "label_name"]  # the columns before keep their places
    want = listed + [(a, label_other)]
    assert [(r[0], r[-2], r[-1]) for r in rows] == [(p, str(c), names[c]) for p, c in want] + [(b, "", "")]
    assert [r[3] for r in rows[:8]] == [str(r["top_k"][0]["class"]) for r in records]
    hits = [int(r[3]) == c for r, (_, c) in zip(rows, want)]
    assert sum(hits) == round(top1 * 8 / 100) + 1
    assert err == ["predicted 10 of 10 videos (2 clips x 3 crops)",  # a video per record, decoded once
                   f"top-1 {100.0 * sum(hits) / 9:.2f} % / top-2 "
                   f"{100.0 * sum(str(c) in (r[3], r[6]) for r, (_, c) in zip(rows, want)) / 9:.2f} % on 9 labelled "
                   "videos"], err
    # the Python API: the same fields, a record per video given
    with predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, device="cpu") as predictor:
        got = predictor.predict(inputs, top_k=2)
    assert got[:8] == records
    assert (got[8]["path"], got[8]["label"], got[8]["label_name"]) == (a, label_other, names[label_other])
    assert got[8]["top_k"] == records[0]["top_k"] and got[9]["path"] == b and "label" not in got[9]
    assert predict.accuracy_line(got, 2) == err[1]


def test_a_label_outside_the_models_classes_is_refused_naming_the_list_and_line(evaluated, dataset, tmp_path,
                                                                                monkeypatch, capsys):
    from dali_pipelines.filelist import LabelRangeError
    from tools import inference

    tmp, opts, ckpt, eval_rows = evaluated
    video, root = eval_rows[0]["path"], str(dataset)  # the list's paths are relative to --root
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{video} 0\n\n{video}  4\n{video} 9\n")  # the first label out of range is named
    # a trained model's head fixes its classes: no setting to change is suggested
    message = (f"{bad}:3: label 4 is outside [0, 4) as the model's head has 4 classes (line '{video}  4'): fix the "
               "label, or use a model of its classes")

    def not_here(*args, **kwargs):
        raise AssertionError("a video was decoded or the model loaded")

    with predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, device="cpu") as predictor:
        monkeypatch.setattr(inference, "build_view_loader", not_here)
        with pytest.raises(LabelRangeError) as e:
            predictor.predict(str(bad), root=root)
        assert str(e.value) == message
    monkeypatch.setattr(inference, "load_model", not_here)
    args = ["--root", root, "--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--work-dir", str(tmp_path / "w"),
            "--opts", *opts]
    assert predict.main([str(bad)] + args) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    bad.write_text(f"{video} -1\n")
    assert predict.main([str(bad)] + args) == 2
    assert capsys.readouterr().err == (f"error: {bad}:1: label -1 is outside [0, 4) as the model's head has 4 classes "
                                       f"(line '{video} -1'): fix the label, or use a model of its classes\n")


def test_collect_videos_from_files_folders_and_lists(tmp_path):
    from tools.inference import InputError, collect_videos

    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.mp4", "a/b/y.webm", "a/notes.md", "with space.mkv"):
        (tmp_path / name).write_bytes(b"")
    lst = tmp_path / "list.txt"
    lst.write_text("with space.mkv 3\n\na/x.mp4\nmissing.mp4\n")  # a training list's label is dropped
    got = collect_videos([str(tmp_path / "a"), str(lst), str(tmp_path / "a" / "x.mp4")])
    assert got == [str(tmp_path / p) for p in ("a/x.mp4", "a/b/y.webm", "with space.mkv", "missing.mp4")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no videos found"):
        collect_videos([str(tmp_path / "empty")])


def test_a_quoted_pattern_gives_the_videos_it_matches(evaluated, dataset, tmp_path, monkeypatch, capsys):
    """A pattern given quoted (or to Predictor.predict, which no shell expands) was one "missing file": now its
    matches are predicted, as the shell's expansion would be, relative to --root when given; one that matches
    nothing is still reported missing, with the other videos predicted."""
    from tools.inference import collect_videos

    tmp, opts, ckpt, eval_rows = evaluated
    top1 = {str(dataset / r["path"]): int(r["top1_class"]) for r in eval_rows}
    matched = sorted(str(p) for p in dataset.glob("videos/*/*.webm"))  # the training videos too
    scored = [p for p in matched if p in top1]
    assert len(scored) == len(eval_rows) and len(matched) > len(scored)
    lst = tmp_path / "sub" / "some.txt"
    lst.parent.mkdir()
    lst.write_text(f"{matched[0]} 1\n")
    assert collect_videos([str(dataset / "videos" / "**" / "*.webm"), str(tmp_path / "s*" / "*.txt")]) == \
        sorted(str(p) for p in dataset.glob("videos/**/*.webm"))
    assert collect_videos(["videos/*/*.webm"], root=str(dataset)) == matched
    out = tmp_path / "p.jsonl"
    nothing = str(tmp_path / "*.mkv")
    rc = predict.main([str(dataset / "videos" / "*" / "*.webm"), nothing, "--cfg", DEMO, "--weights", str(ckpt),
                       "--quiet", "--out", str(out), "--work-dir", str(tmp_path / "work"), "--opts", *opts])
    assert rc == 0, capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    predicted = {r["path"]: r["top_k"][0]["class"] for r in records if r["status"] == "ok"}
    assert list(predicted) == matched and {p: predicted[p] for p in scored} == {p: top1[p] for p in scored}
    assert records[-1] == {"path": nothing, "status": "error", "error": "missing file"}
    with predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, device="cpu") as predictor:
        records = predictor.predict("videos/*/*.webm", root=str(dataset), top_k=1)
    assert [r["path"] for r in records] == matched
    assert [r["top_k"][0]["class"] for r in records if r["path"] in top1] == [top1[p] for p in scored]


def test_a_folder_gives_its_camcorder_videos(evaluated, dataset, tmp_path, capsys):
    """A folder's .MTS and .m2ts videos (a camcorder's MPEG-TS) were passed over without a word, the same file
    named on the command line predicted: now they are found, and score as that file."""
    import shutil

    from dali_pipelines.pyav_encode import write_video
    from tests.video_fixtures import pattern_frames

    tmp, opts, ckpt, _ = evaluated
    named = tmp_path / "named.ts"
    write_video(str(named), pattern_frames(16, 48, 32), codec="h264", gop=4)
    folder = tmp_path / "camera"
    (folder / "day 2").mkdir(parents=True)
    shutil.copy(named, folder / "00001.MTS")
    shutil.copy(named, folder / "day 2" / "00002.m2ts")
    out = tmp_path / "p.jsonl"
    rc = predict.main([str(named), str(folder), "--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--out", str(out),
                       "--work-dir", str(tmp_path / "work"), "--opts", *opts])
    assert rc == 0, capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in records] == [str(named), str(folder / "00001.MTS"), str(folder / "day 2" / "00002.m2ts")]
    assert records[0]["status"] == "ok" and all(r["top_k"] == records[0]["top_k"] for r in records)


def test_an_empty_list_says_it_has_no_video_lines(evaluated, tmp_path, capsys):
    """An empty list was reported as "no videos found in X.txt (extensions ...)", as if searched like a folder; a
    list is read line by line, and says so. Among other inputs each is said apart."""
    from tools.inference import VIDEO_EXTENSIONS, InputError, collect_videos

    tmp, opts, ckpt, _ = evaluated
    empty, blank = tmp_path / "empty.txt", tmp_path / "blank.lst"
    empty.write_text("")
    blank.write_text("\n  \n\t\n")
    no_lines = "the list file has no video lines (it is empty or holds only blank or comment lines; a video list " \
               "names one video per line)"
    for lst in (empty, blank):
        assert predict.main([str(lst), "--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--work-dir",
                             str(tmp_path / "work"), "--opts", *opts]) == 2
        assert capsys.readouterr().err == f"error: no videos found in {lst}: {no_lines}\n"
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError) as e:
        collect_videos([str(tmp_path / "folder"), str(empty)])
    assert str(e.value) == (f"no videos found in {tmp_path / 'folder'} (extensions {' '.join(VIDEO_EXTENSIONS)}); "
                            f"in {empty}: {no_lines}")


def test_folders_reached_through_links_are_searched_once(tmp_path):
    """A folder's linked subfolders were passed over without a word (os.walk does not follow links): a dataset of
    linked class folders gave none of their videos. They are followed now, each folder once, loops included."""
    from tools.inference import collect_videos

    (tmp_path / "store" / "jump").mkdir(parents=True)
    (tmp_path / "top" / "own").mkdir(parents=True)
    for name in ("store/jump/j.mp4", "top/own/o.mp4"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "top" / "jump").symlink_to(tmp_path / "store" / "jump", target_is_directory=True)
    (tmp_path / "top" / "jump_again").symlink_to(tmp_path / "store" / "jump", target_is_directory=True)
    (tmp_path / "top" / "own" / "up").symlink_to(tmp_path / "top", target_is_directory=True)  # a loop
    (tmp_path / "top" / "own_link").symlink_to(tmp_path / "top" / "own", target_is_directory=True)
    got = collect_videos([str(tmp_path / "top")])
    assert got == [str(tmp_path / p) for p in ("top/jump/j.mp4", "top/own/o.mp4")]


def test_a_text_file_that_is_not_a_video_list_is_refused_in_one_line(tmp_path):
    # A README given by mistake: every line would have become a video "not found", one output row per line.
    from tools.inference import InputError, collect_videos

    notes = tmp_path / "notes.txt"
    notes.write_text("# EVA video\n\nTrain with torchrun train.py --cfg configs/k600.yaml\nSee docs/.\n")
    # its heading opens with #: a comment line, passed over
    with pytest.raises(InputError, match=r"notes\.txt: none of its 2 lines names an existing file under .*"
                                         r"first line: 'Train with torchrun train\.py --cfg configs/k600\.yaml'"):
        collect_videos([str(notes)])
    # the same list read against the folder that holds its videos is fine, missing ones included
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"")
    lst = tmp_path / "clips.txt"
    lst.write_text("a.mp4 0\nb.mp4 1\n")
    with pytest.raises(InputError, match="none of its 2 lines"):
        collect_videos([str(lst)])
    got = collect_videos([str(lst)], str(tmp_path / "clips"))
    assert got == [str(tmp_path / "clips" / n) for n in ("a.mp4", "b.mp4")]


def _by_path(records: list[dict]) -> dict[str, dict]:
    return {r["path"]: r for r in records}


def test_runs_sharing_a_work_dir_keep_their_own_videos(evaluated, dataset, monkeypatch):
    # Run B starts (and finishes) in the window between run A writing its video list and reading it back, the
    # window two runs at once with the default --work-dir share. Each must still score its own videos.
    from tools import inference, view_loader

    tmp, opts, ckpt, eval_rows = evaluated
    cfg = load_config(DEMO, opts)
    model = inference.load_model(cfg, str(ckpt), torch.device("cpu")).eval()
    want = {str(dataset / r["path"]): (int(r["top1_class"]), float(r["top1_prob"])) for r in eval_rows}
    videos = sorted(want)
    a, b = videos[:2], videos[2:5]
    work = tmp / "shared_work"
    got_b = {}
    real_barrier = view_loader.barrier  # the loader's list is written, then read back after this barrier

    def run_b_meanwhile(ctx):
        real_barrier(ctx)
        if not got_b:
            got_b["records"] = []  # no second nesting
            got_b["records"] = predict.predict_videos(cfg, model, b, str(work), ctx, progress=False)

    monkeypatch.setattr(view_loader, "barrier", run_b_meanwhile)
    got_a = predict.predict_videos(cfg, model, a, str(work), DistContext(), progress=False)
    for path, rec in {**_by_path(got_a), **_by_path(got_b["records"])}.items():
        assert rec["status"] == "ok", rec
        assert (rec["top_k"][0]["class"], rec["top_k"][0]["prob"]) == (want[path][0], pytest.approx(want[path][1],
                                                                                                    abs=2e-6))
    assert [r["path"] for r in got_a] == a and [r["path"] for r in got_b["records"]] == b
    lists = sorted(work.glob("videos-*.txt"))
    assert len(lists) == 2  # one list (and index cache) per set of videos
    # A rerun on the same videos reuses that list and its index cache; rows are mapped back by path, so a list
    # rewritten in another order in the meantime still gives each video its own scores.
    monkeypatch.setattr(view_loader, "barrier", real_barrier)

    def reorder(ctx):
        for lst in work.glob("videos-*.txt"):
            lines = lst.read_text().splitlines(keepends=True)
            if len(lines) == len(b):
                lst.write_text("".join(reversed(lines)))

    monkeypatch.setattr(view_loader, "barrier", reorder)
    again = predict.predict_videos(cfg, model, b, str(work), DistContext(), progress=False)
    assert sorted(work.glob("videos-*.txt")) == lists
    assert [(r["path"], r["top_k"][0]["class"]) for r in again] == [(p, want[p][0]) for p in b]
    assert [r["top_k"][0]["prob"] for r in again] == pytest.approx([want[p][1] for p in b], abs=2e-6)

    def other_videos(ctx):
        for lst in work.glob("videos-*.txt"):
            if len(lst.read_text().splitlines()) == len(b):
                lst.write_text("".join(f"{p} 0\n" for p in videos[5:8]))

    monkeypatch.setattr(view_loader, "barrier", other_videos)
    with pytest.raises(ValueError, match="does not hold the 3 videos written to it"):
        predict.predict_videos(cfg, model, b, str(work), DistContext(), progress=False)


def test_no_readable_video_gives_each_videos_own_reason(evaluated, capsys):
    tmp, opts, ckpt, _ = evaluated
    broken, missing = tmp / "garbage.mp4", tmp / "not_there.mp4"
    broken.write_bytes(b"this is not a video")
    out = tmp / "none.jsonl"
    rc = predict.main([str(missing), str(broken), "--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--out",
                       str(out), "--work-dir", str(tmp / "work_none"), "--opts", *opts])
    err = capsys.readouterr().err
    assert rc == 1, err
    records = _by_path(json.loads(x) for x in out.read_text().splitlines())
    assert records[str(missing)] == {"path": str(missing), "status": "error", "error": "missing file"}
    assert records[str(broken)]["error"].startswith("not a readable video container")
    assert "predicted 0 of 2 videos (2 clips x 3 crops); 2 unreadable" in err


def test_the_summary_says_where_the_unreadable_videos_are_listed(evaluated, capsys):
    """With --quiet no table is printed, yet the closing line said the unreadable videos were "listed above":
    they are in --out then, or (--quiet alone) nowhere."""
    tmp, opts, ckpt, _ = evaluated
    missing = tmp / "not_there.mp4"
    out = tmp / "where.csv"
    common = ["--cfg", DEMO, "--weights", str(ckpt), "--work-dir", str(tmp / "work_where"), "--opts", *opts]
    summary = "predicted 0 of 1 video (2 clips x 3 crops); 1 unreadable"
    assert predict.main([str(missing), "--quiet", "--out", str(out), *common]) == 1
    captured = capsys.readouterr()
    assert f"{summary} (listed in {out})\n" in captured.err and captured.out == ""
    assert "missing file" in out.read_text()
    assert predict.main([str(missing), "--quiet", *common]) == 1
    captured = capsys.readouterr()
    assert f"{summary}\n" in captured.err and captured.out == ""
    assert predict.main([str(missing), *common]) == 1
    captured = capsys.readouterr()
    assert f"{summary} (listed above)\n" in captured.err and "missing file" in captured.out
    assert predict.main([str(missing), "--quiet", "--format", "json", *common]) == 1
    captured = capsys.readouterr()
    assert f"{summary} (listed above)\n" in captured.err and "missing file" in captured.out


def _write_still_image(path: Path) -> Path:
    """A PNG, which opens as a one-frame video."""
    import av

    with av.open(str(path), "w", format="image2") as out_file:
        stream = out_file.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")):
            out_file.mux(packet)
        for packet in stream.encode():
            out_file.mux(packet)
    return path


def test_a_still_image_is_not_scored_as_a_video(evaluated, dataset, capsys):
    """A PNG opens as a one-frame video; its score (a motion classifier's, on one repeated frame) meant nothing
    and was printed like any other."""
    tmp, opts, ckpt, _ = evaluated
    still = _write_still_image(tmp / "still.png")
    video = next(str(p) for p in sorted((dataset / "videos").rglob("*.webm")))
    out = tmp / "still.jsonl"
    rc = predict.main([str(still), video, "--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--out", str(out),
                       "--work-dir", str(tmp / "work_still"), "--opts", *opts])
    err = capsys.readouterr().err
    assert rc == 0, err
    records = _by_path(json.loads(x) for x in out.read_text().splitlines())
    assert records[str(still)]["status"] == "error"
    assert records[str(still)]["error"] == "a single frame: a still image, not a video"
    assert records[video]["status"] == "ok" and "predicted 1 of 2 videos (2 clips x 3 crops); 1 unreadable" in err


_QUIET_SCRIPT = """
import json, logging, sys

from tools import predict

if __name__ == "__main__":
    videos, out, weights, cfg, work, opts = json.loads(sys.argv[1])
    before = list(logging.getLogger("dali_pipelines").handlers)
    rc = predict.main(videos + ["--quiet", "--out", out, "--weights", weights, "--cfg", cfg, "--work-dir", work,
                                "--opts", *opts])
    with predict.Predictor(weights, cfg=cfg, opts=opts, device="cpu") as predictor:  # progress=False
        records = predictor.predict(videos)
    left = logging.getLogger("dali_pipelines").handlers == before  # as found, for later callers
    print(json.dumps({"rc": rc, "errors": [r["error"] for r in records], "left_as_found": left}))
"""


def test_quiet_prints_no_loader_warnings_and_without_it_still_images_are_named(evaluated, capsys, tmp_path):
    """--quiet and Predictor(progress=False) still printed the index's "bad video" warnings (from Python's
    last-resort handler: a run of the command or a script sets no logging handler), where the results already
    list each unreadable video; without --quiet those warnings named every unreadable video but still images."""
    import subprocess
    import sys

    from tests.conftest import child_env

    tmp, opts, ckpt, _ = evaluated
    still, missing, out = _write_still_image(tmp_path / "still.png"), tmp_path / "gone.mp4", tmp_path / "q.jsonl"
    script = tmp_path / "quiet.py"
    script.write_text(_QUIET_SCRIPT)
    given = [[str(still), str(missing)], str(out), str(ckpt), DEMO, str(tmp_path / "work_q"), opts]
    done = subprocess.run([sys.executable, str(script), json.dumps(given)], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # the command's closing line alone: no "bad video" lines, no still image named
    assert done.stderr == f"predicted 0 of 2 videos (2 clips x 3 crops); 2 unreadable (listed in {out})\n"
    assert json.loads(done.stdout) == {"rc": 1, "errors": ["a single frame: a still image, not a video",
                                                           "missing file"], "left_as_found": True}
    # without --quiet (stderr not a terminal: the index's lines are printed), the still image is named as well
    rc = predict.main([str(still), str(missing), "--weights", str(ckpt), "--cfg", DEMO, "--work-dir",
                       str(tmp_path / "work_loud"), "--opts", *opts])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert f"bad video {still}: a single frame: a still image, not a video\n" in err, err
    assert f"bad video {missing}: missing file\n" in err, err


def test_progress_without_a_terminal_is_plain_lines(evaluated, dataset, capsys):
    tmp, opts, ckpt, _ = evaluated
    rc = predict.main([str(dataset / "val.txt"), "--cfg", DEMO, "--weights", str(ckpt), "--work-dir",
                       str(tmp / "work_lines"), "--opts", *opts])
    err = capsys.readouterr().err  # not a terminal, as a log file
    assert rc == 0, err
    assert "predict: 3 batches done in " in err and "\r" not in err, err  # 8 videos, 3 a batch
    # the index build's own lines too (a first index of many videos takes minutes): here its start and its end
    assert re.search(r"^indexing videos-[0-9a-f]{16}\.txt: probing 8 of 8 videos$", err, re.M), err
    assert re.search(r"^indexing videos-[0-9a-f]{16}\.txt: 8 videos done in 0:00:0", err, re.M), err
    rc = predict.main([str(dataset / "val.txt"), "--cfg", DEMO, "--weights", str(ckpt), "--work-dir",
                       str(tmp / "work_quiet"), "--quiet", "--opts", *opts])
    # --quiet: no progress at all; the views used are named (an export does not record them), then the labelled
    # list's accuracy
    err = capsys.readouterr().err.splitlines()
    assert rc == 0 and err[0] == "predicted 8 of 8 videos (2 clips x 3 crops)", err
    assert len(err) == 2 and err[1].endswith(" on 8 labelled videos"), err


def test_bad_out_is_refused_before_the_model_runs(evaluated, dataset, monkeypatch, capsys):
    tmp, opts, ckpt, _ = evaluated
    (tmp / "a_folder").mkdir()
    (tmp / "a_file").write_text("x")
    from tools import inference  # the tool looks load_model up here when it runs

    monkeypatch.setattr(inference, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    video = str(sorted((dataset / "videos").rglob("*.webm"))[0])
    cases = [(["--out", str(tmp / "a_folder")], "is a folder; give a file name"),
             (["--out", str(tmp / "a_file" / "p.jsonl")], "is a file, so no folder can be made there"),
             (["--work-dir", str(tmp / "a_file")], "exists and is not a folder"),
             # a new folder's name: was written as a file named "new_folder", status 0
             (["--out", str(tmp / "new_folder") + "/"], "new_folder/ names a folder (it ends with /); give a file "
              f"name, e.g. {tmp / 'new_folder' / 'predictions.jsonl'}")]
    if os.path.isdir("/proc/self"):  # a folder nobody can create files in, whatever access() says (root)
        cases.append((["--out", "/proc/no_such_folder/p.jsonl"], "cannot write in /proc ("))
    for extra, needle in cases:
        assert predict.main([video, "--cfg", DEMO, "--weights", str(ckpt), "--quiet", *extra, "--opts", *opts]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp / "new_folder").exists()


def test_out_naming_one_of_the_inputs_is_refused_and_the_input_kept(evaluated, dataset, monkeypatch, capsys):
    """--out written at the end replaced its own input: a video list, a video, the weights or the label list
    given as --out became a table of predictions."""
    tmp, opts, ckpt, _ = evaluated
    from tools import inference

    monkeypatch.setattr(inference, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    videos = sorted((dataset / "videos").rglob("*.webm"))
    listed = tmp / "given.txt"
    listed.write_text(f"{videos[0]} 0\n")
    link = tmp / "link_to_weights.pth"  # another name of the same file
    link.unlink(missing_ok=True)
    link.symlink_to(ckpt)
    labels = opts[opts.index("DATA.LABEL_LIST") + 1]
    cases = [([str(listed)], listed, f"is the input {listed}"), ([str(videos[1])], videos[1], "is the input"),
             ([str(listed)], videos[0], f"is the video {videos[0]}, one of the inputs"),
             ([str(listed)], link, f"is --weights {ckpt}"), ([str(listed)], Path(labels), "is DATA.LABEL_LIST")]
    for inputs, out, needle in cases:
        before = out.read_bytes()
        assert predict.main([*inputs, "--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--out", str(out),
                             "--work-dir", str(tmp / "work_in"), "--opts", *opts]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --out {out} ") and needle in err and "give another file name" in err, err
        assert len(err.strip().splitlines()) == 1 and out.read_bytes() == before


def test_a_work_dir_that_cannot_be_made_is_one_line_naming_the_flag(evaluated, dataset, capsys):
    """A name too long passes the check before the model runs; the first write in it failed with a bare errno."""
    tmp, opts, ckpt, _ = evaluated
    work = tmp / ("w" * 300)
    video = str(sorted((dataset / "videos").rglob("*.webm"))[0])
    assert predict.main([video, "--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--work-dir", str(work),
                         "--opts", *opts]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --work-dir {work}: cannot create the folder (File name too long)\n", err


def test_a_predictor_work_dir_that_cannot_be_made_is_one_line_naming_it(evaluated, dataset):
    """Predictor made its work_dir only at its first write, in the first call: a raw OSError from deep inside the
    loader, naming neither the argument nor the folder."""
    from evautil.errors import OutputFolderError

    tmp, opts, ckpt, _ = evaluated
    work = tmp / ("w" * 300)
    with pytest.raises(OutputFolderError) as raised:
        predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, work_dir=str(work), device="cpu")
    assert str(raised.value) == f"work_dir {work}: cannot create the folder (File name too long)"
    made = tmp / "made" / "below"  # one that can be made is, with the folders above it
    with predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, work_dir=str(made), device="cpu") as predictor:
        assert made.is_dir() and predictor.work_dir == str(made)
    assert made.is_dir()  # a given work_dir is kept


def test_out_that_fails_when_written_keeps_the_predictions(evaluated, dataset, monkeypatch, capsys):
    tmp, opts, ckpt, _ = evaluated
    out = tmp / "late.jsonl"
    real = predict.predict_videos

    def then_block_out(*args, **kwargs):
        records = real(*args, **kwargs)
        out.mkdir()  # the target became unwritable while the model ran
        return records

    monkeypatch.setattr(predict, "predict_videos", then_block_out)
    video = str(sorted((dataset / "videos").rglob("*.webm"))[0])
    rc = predict.main([video, "--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--out", str(out), "--work-dir",
                       str(tmp / "work_late"), "--opts", *opts])
    captured = capsys.readouterr()
    assert rc == 2
    assert f"error: cannot write --out {out}: Is a directory; the predictions follow on stdout" in captured.err
    (record,) = [json.loads(x) for x in captured.out.splitlines()]
    assert record["path"] == video and record["status"] == "ok"


def test_out_cut_short_by_a_full_disk_leaves_no_half_file_and_keeps_the_earlier_one(evaluated, dataset, capsys):
    """--out was opened for writing in place: a disk that filled up mid-write left the first 4 KB of the
    predictions, a line cut in half at the end, where the earlier file had been."""
    import resource
    import signal

    tmp, opts, ckpt, _ = evaluated
    out = tmp / "full_disk.jsonl"
    out.write_text("earlier predictions\n")
    command = [str(dataset / "videos"), "--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--out", str(out),
               "--work-dir", str(tmp / "work_full"), "--opts", *opts]
    assert predict.main(command) == 0  # the videos' index is built, and the whole file written
    written = out.read_text()
    assert len(written) > 1024
    out.write_text("earlier predictions\n")
    capsys.readouterr()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))  # writes past 1 KB fail, as on a full disk
    try:
        rc = predict.main(command)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    captured = capsys.readouterr()
    assert rc == 2 and f"error: cannot write --out {out}: File too large; the predictions follow" in captured.err
    assert captured.out == written  # not lost: on stdout
    assert out.read_text() == "earlier predictions\n"
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(("full_disk", ".full_disk"))) == \
        ["full_disk.jsonl"]


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="needs /dev/fd and named pipes")
def test_out_into_a_pipe_or_through_a_link_is_written_there(evaluated, dataset, capsys):
    """--out was always renamed into place: a named pipe was replaced by a file (its reader got nothing), a shell's
    >(...) (/dev/fd/N) failed after all the work, and a link was replaced by a copy of the predictions; /dev/stdout
    is written after the table, appended to where stdout goes."""
    import stat
    import threading

    tmp, opts, ckpt, _ = evaluated
    video = str(sorted((dataset / "videos").rglob("*.webm"))[0])

    def run(out: str) -> int:
        return predict.main([video, "--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--format", "jsonl", "--out",
                             out, "--work-dir", str(tmp / "work_pipes"), "--opts", *opts])

    assert run(str(tmp / "plain.jsonl")) == 0
    expected = (tmp / "plain.jsonl").read_text()
    assert json.loads(expected)["path"] == video
    fifo, got = tmp / "preds.fifo", []
    os.mkfifo(fifo)
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    assert run(str(fifo)) == 0
    reader.join(timeout=30)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and got == [expected]
    r, w = os.pipe()  # what bash's >(...) hands a command: /dev/fd/N
    with os.fdopen(r, encoding="utf-8") as f:
        try:
            rc = run(f"/dev/fd/{w}")
        finally:
            os.close(w)
        assert rc == 0 and f.read() == expected
    # --out /dev/stdout with stdout appended to a log (>>): it emptied the log, the table printed before included
    import subprocess
    import sys

    from tests.conftest import child_env

    log = tmp / "log.txt"
    log.write_text("earlier\n")
    with open(log, "ab") as appended:
        done = subprocess.run([sys.executable, "-m", "tools.predict", video, "--cfg", DEMO, "--weights", str(ckpt),
                               "--format", "jsonl", "--out", "/dev/stdout", "--work-dir", str(tmp / "work_pipes"),
                               "--opts", *opts], cwd=tmp, env=child_env(), stdout=appended, stderr=subprocess.PIPE,
                              text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert log.read_text() == "earlier\n" + predict.format_table([json.loads(expected)]) + expected
    (tmp / "kept.jsonl").write_text("earlier\n")
    link = tmp / "link.jsonl"
    link.symlink_to("kept.jsonl")
    assert run(str(link)) == 0
    assert link.is_symlink() and (tmp / "kept.jsonl").read_text() == expected
    assert "error" not in capsys.readouterr().err


def test_list_names_keep_runs_of_spaces_and_tabs(tmp_path):
    from dali_pipelines.filelist import read_file_list
    from tools.inference import collect_videos

    names = ["sub dir/deeper/d  e.mp4", "t\tab.mp4", "trailing 12.mp4"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    lst = tmp_path / "list.txt"
    lst.write_text("sub dir/deeper/d  e.mp4 1\nt\tab.mp4\t2\ntrailing 12.mp4  0\n")
    assert collect_videos([str(lst)]) == [str(tmp_path / n) for n in names]
    # the training list reader reads the same names from the same lines
    assert [e.path for e in read_file_list(str(lst), str(tmp_path))] == [str(tmp_path / n) for n in names]


def test_comment_lines_in_a_list_are_passed_over_not_reported_unreadable(tmp_path):
    """A list written by hand with a comment ("# day 2") gave a video "<folder>/# day 2" reported unreadable (and
    listed in extract_features' failed file on every run). A line opening with # that names no file is a comment
    now, with CRLF line ends and blank lines as elsewhere; a video whose name opens with # is still a video."""
    from tools.inference import InputError, collect_videos, labelled_videos

    for name in ("a b.mp4", "#2.mp4", "é.mp4"):
        (tmp_path / name).write_bytes(b"")
    lst = tmp_path / "list.txt"
    lst.write_bytes("# clips of day 2\r\n\r\na b.mp4 1\r\n  # another comment 3\r\n#2.mp4 0\r\n#2.mp4\r\né.mp4\r\n"
                    .encode())
    assert labelled_videos([str(lst)]) == [(str(tmp_path / "a b.mp4"), 1), (str(tmp_path / "#2.mp4"), 0),
                                           (str(tmp_path / "#2.mp4"), None), (str(tmp_path / "é.mp4"), None)]
    only = tmp_path / "only.txt"
    only.write_text("# nothing yet\n\n")
    with pytest.raises(InputError) as e:
        collect_videos([str(only)])
    assert str(e.value) == (f"no videos found in {only}: the list file has no video lines (it is empty or holds "
                            "only blank or comment lines; a video list names one video per line)")
    notes = tmp_path / "notes.txt"  # a text that is no video list: its first line that is no comment is shown
    notes.write_text("# my notes\nbuy milk\n")
    with pytest.raises(InputError, match=re.escape("(first line: 'buy milk')")):
        collect_videos([str(notes)])


def test_a_list_saved_as_a_table_is_refused_in_one_line_not_predicted_as_a_video(tmp_path):
    """val.csv (a list kept as a spreadsheet's table) was taken for a video: one "not a readable video container"
    record, exit status 1, and the list's videos never read. One line naming it and what to do now; a folder's
    search and a .csv that does not exist (a missing video, as any other name) are as before."""
    from tools.inference import InputError, collect_videos

    (tmp_path / "a.mp4").write_bytes(b"")
    for name in ("val.csv", "val.TSV"):
        (tmp_path / name).write_text("a.mp4 0\n")
        with pytest.raises(InputError) as e:
            collect_videos([str(tmp_path / "a.mp4"), str(tmp_path / name)])
        assert str(e.value) == (f"{tmp_path / name} is a {os.path.splitext(name)[1]} file, not a video: a video "
                                "list is read from a .txt, .lst or .list file (one video per line, an optional "
                                "trailing label); save or rename it as one")
    assert collect_videos([str(tmp_path)]) == [str(tmp_path / "a.mp4")]
    assert collect_videos([str(tmp_path / "gone.csv")]) == [str(tmp_path / "gone.csv")]


def test_list_paths_starting_with_a_tilde_are_the_home_folder_as_for_training(tmp_path, monkeypatch):
    """A list line ``~/k/a b.mp4 3`` named a folder ``~`` beside the list, while predict reads a leading ~ in the
    paths it is given as the home folder: the list was refused as naming no existing file."""
    from dali_pipelines.filelist import read_file_list
    from tools.inference import collect_videos

    home, lists = tmp_path / "home", tmp_path / "lists"
    (home / "k").mkdir(parents=True)
    (home / "k" / "a b.mp4").write_bytes(b"")
    lists.mkdir()
    lst = lists / "list.txt"
    lst.write_text("~/k/a b.mp4 3\n")
    monkeypatch.setenv("HOME", str(home))
    assert collect_videos([str(lst)]) == [str(home / "k" / "a b.mp4")]
    assert [e.path for e in read_file_list(str(lst), str(lists))] == [str(home / "k" / "a b.mp4")]


def test_lists_joined_with_cat_name_the_same_videos_as_for_training(tmp_path):
    """Each list saved with a byte-order mark and joined with cat keeps the later ones at the start of a line: the
    training reader drops them, and predict's took the mark for the first character of the file name."""
    from dali_pipelines.filelist import read_file_list
    from tools.inference import collect_videos

    names = ["a.mp4", "b.mp4", "c.mp4"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    lst = tmp_path / "joined.txt"
    lst.write_bytes("\ufeffa.mp4 0\n".encode() + "\ufeffb.mp4 1\n".encode() + "c.mp4 2\n".encode())
    assert collect_videos([str(lst)]) == [str(tmp_path / n) for n in names]
    assert [e.path for e in read_file_list(str(lst), str(tmp_path))] == [str(tmp_path / n) for n in names]


def test_a_name_no_list_line_can_hold_is_reported_not_mixed_up(evaluated, dataset, capsys):
    import shutil

    tmp, opts, ckpt, eval_rows = evaluated
    first = str(dataset / eval_rows[0]["path"])
    odd = tmp / "new\nline.webm"
    shutil.copy(first, odd)
    out = tmp / "odd.jsonl"
    rc = predict.main([str(odd), first, "--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--out", str(out),
                       "--work-dir", str(tmp / "work_odd"), "--opts", *opts])
    assert rc == 0, capsys.readouterr().err
    records = _by_path(json.loads(x) for x in out.read_text().splitlines())
    assert records[str(odd)]["status"] == "error" and "line break" in records[str(odd)]["error"]
    assert records[first]["top_k"][0]["class"] == int(eval_rows[0]["top1_class"])


def test_a_missing_label_list_is_a_warning_and_a_bad_one_an_error(evaluated, dataset, tmp_path, capsys):
    """A DATA.LABEL_LIST that does not exist leaves the classes without names (one warning line naming it) rather
    than refusing to predict; one that exists but is malformed is still a one-line error."""
    tmp, opts, ckpt, eval_rows = evaluated
    video = str(dataset / eval_rows[0]["path"])
    at = opts.index("DATA.LABEL_LIST") + 1
    absent = tmp_path / "labels.csv"
    out = tmp_path / "p.jsonl"
    args = [video, "--cfg", DEMO, "--weights", str(ckpt), "--top-k", "3", "--quiet", "--out", str(out),
            "--work-dir", str(tmp / "work_labels"), "--opts"]
    rc = predict.main(args + opts[:at] + [str(absent)] + opts[at + 1:])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert err.splitlines() == [f"warning: label list DATA.LABEL_LIST = {absent} does not exist; classes are given "
                                "by their index, without names", "predicted 1 of 1 video (2 clips x 3 crops)"], err
    (record,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert [t["class"] for t in record["top_k"]] == [int(eval_rows[0][f"top{k}_class"]) for k in (1, 2, 3)]
    # no names: no "name" key (a name "" read as the class's name), as a label gets no "label_name"
    assert [sorted(t) for t in record["top_k"]] == [["class", "prob"]] * 3
    absent.write_text("id,name\n0,moving down\n0,growing\n")
    rc = predict.main(args + opts[:at] + [str(absent)] + opts[at + 1:])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == f"error: label list DATA.LABEL_LIST = {absent}, line 3: class 0 is named twice\n", err


@pytest.mark.parametrize("with_names", [True, False])
def test_the_readmes_predictor_example_runs_as_a_script(evaluated, dataset, tmp_path, with_names):
    """README's "From Python" example, saved as a script with only its file names replaced: it runs (the decode
    workers import the script again, which its __main__ guard makes harmless) and prints a class per video: its
    name, or for a model exported without class names (records without "name") its index, where the example read
    ["name"] and failed with a KeyError."""
    import subprocess
    import sys

    from tests.conftest import child_env
    from tools import export_safetensors

    tmp, opts, ckpt, _ = evaluated
    exported = tmp_path / "eva_k400.safetensors"
    no_names = [] if with_names else ["DATA.LABEL_LIST", ""]
    assert export_safetensors.main(["--cfg", DEMO, "--weights", str(ckpt), "--out", str(exported),
                                    "--opts", *opts, *no_names]) == 0
    readme = (ROOT / "README.md").read_text()
    block = readme.split("- **From Python**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    code = "\n".join(line[2:] for line in block.splitlines())  # the bullet's two-space indent
    video = dataset / (dataset / "val.txt").read_text().split()[0]
    clips = tmp_path / "clips"
    clips.mkdir()
    os.symlink(video, clips / f"b{video.suffix}")
    for name, path in (("eva_k400.safetensors", exported), ("clips/", clips), ("a.mp4", video)):
        assert f'"{name}"' in code, name
        code = code.replace(f'"{name}"', repr(str(path)))
    script = tmp_path / "example.py"
    script.write_text(code + "\n    print('embeddings', len(embeddings), embeddings[0].shape)\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=child_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    names = [row.split(",", 1)[1] for row in (dataset / "labels.csv").read_text().splitlines()[1:]]
    printed = done.stdout.splitlines()
    assert [line.split(" ", 1)[0] for line in printed[:2]] == [str(video), str(clips / f"b{video.suffix}")], printed
    classes = set(names) if with_names else {str(c) for c in range(len(names))}
    assert all(line.split(" ", 1)[1] in classes for line in printed[:2]), (printed, classes)
    assert re.fullmatch(r"embeddings 1 \(\d+,\)", printed[2]), printed


def test_the_summary_line_counts_in_the_singular_for_one(evaluated, dataset, capsys):
    """One video, one clip, one crop read "predicted 1 of 1 videos (1 clips x 1 crops)"."""
    tmp, opts, ckpt, eval_rows = evaluated
    videos = [str(dataset / row["path"]) for row in eval_rows[:2]]
    args = ["--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--work-dir", str(tmp / "work_singular"), "--opts"]
    assert predict.main(videos[:1] + args + opts + ["TEST.NUM_CLIP", "1", "TEST.NUM_CROP", "1"]) == 0
    assert capsys.readouterr().err == "predicted 1 of 1 video (1 clip x 1 crop)\n"
    assert predict.main(videos + args + opts + ["TEST.NUM_CLIP", "2", "TEST.NUM_CROP", "1"]) == 0
    assert capsys.readouterr().err == "predicted 2 of 2 videos (2 clips x 1 crop)\n"


def test_names_with_spaces_accents_and_bytes_that_are_no_utf8_are_written(evaluated, dataset, tmp_path,
                                                                          monkeypatch, capsys):
    """A video named with bytes that are not UTF-8 (a file from a Latin-1 system) is unreadable with its reason,
    but writing its name raised after all the work (--out as JSON, CSV or a table, and the table on a UTF-8
    terminal), and no video's predictions were written. Now the JSON escapes the byte (the file stays UTF-8 and
    reads back to the name os.fsencode turns into the file's bytes), the table and the CSV hold the name's bytes."""
    import io
    import shutil

    tmp, opts, ckpt, eval_rows = evaluated
    source = dataset / eval_rows[0]["path"]
    latin1 = os.path.join(os.fsencode(tmp_path), "caf\xe9 1.webm".encode("latin-1"))
    shutil.copy(source, latin1)
    accented = tmp_path / "vidéo d'été.webm"
    shutil.copy(source, accented)
    videos = [os.fsdecode(latin1), str(accented)]
    common = ["--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--work-dir", str(tmp_path / "work"), "--opts", *opts]
    for name in ("p.jsonl", "p.json", "p.csv", "p.txt"):
        rc = predict.main([*videos, "--out", str(tmp_path / name), *common])
        assert rc == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    assert records == json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))
    assert [os.fsencode(r["path"]) for r in records] == [latin1, os.fsencode(accented)]
    assert records[0]["status"] == "error" and "not valid UTF-8" in records[0]["error"]
    assert records[1]["status"] == "ok" and len(records[1]["top_k"]) == 4
    rows = list(csv.DictReader(io.StringIO((tmp_path / "p.csv").read_bytes().decode("utf-8", "surrogateescape"))))
    assert [(os.fsencode(r["path"]), r["status"]) for r in rows] == [(latin1, "error"), (os.fsencode(accented), "ok")]
    table = (tmp_path / "p.txt").read_bytes()
    assert table.splitlines()[1].startswith(latin1 + b"  ") and os.fsencode(accented) + b"  1 " in table
    # the table on a terminal whose encoding is UTF-8 (stdout refuses such a name there)
    terminal = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr("sys.stdout", terminal)
    assert predict.main([*videos, *common[:-len(opts) - 1], "--format", "table", "--opts", *opts]) == 0
    terminal.flush()
    assert terminal.buffer.getvalue() == table


_STOP_SCRIPT = """
import os, signal, sys

from evautil.interrupt import finished
from tools import inference, predict

when, sig = os.environ["STOP_AT"], getattr(signal, os.environ["STOP_WITH"])
real_views, real_jsonl = inference.view_outputs, predict.format_jsonl


def views_then_signal(*args, **kwargs):  # the signal arrives as the model runs on the first batch
    if when == "work":
        os.kill(os.getpid(), sig)
    return real_views(*args, **kwargs)


def jsonl_then_signal(records):  # or once the predictions are made, as they are written
    if when == "results":
        os.kill(os.getpid(), sig)
    return real_jsonl(records)


inference.view_outputs, predict.format_jsonl = views_then_signal, jsonl_then_signal
if __name__ == "__main__":
    sys.exit(finished(predict.main(sys.argv[1:])))
"""


@pytest.mark.parametrize("sig,at", [("SIGTERM", "work"), ("SIGUSR1", "work"), ("SIGINT", "work"),
                                    ("SIGTERM", "results")])
def test_a_stop_signal_while_predicting_is_one_line_and_leaves_out_as_it_was(evaluated, dataset, tmp_path, sig, at):
    """A scheduler's SIGTERM or SIGUSR1 while the model ran killed predict with status 143 and no word. Now it ends
    as a Ctrl-C does, with one `stopped:` line and exit code 4; the predictions are written at the end only, so an
    earlier --out is left whole, and no temporary file beside it. Once the predictions are made a stop signal lets
    them be written: the work is done."""
    import subprocess
    import sys

    from tests.conftest import child_env

    tmp, opts, ckpt, _ = evaluated
    out, work = tmp_path / "preds.jsonl", tmp_path / "work"
    out.write_text("earlier predictions\n")
    video = str(sorted((dataset / "videos").rglob("*.webm"))[0])
    script = tmp_path / "stop.py"
    script.write_text(_STOP_SCRIPT)
    done = subprocess.run([sys.executable, str(script), video, "--cfg", DEMO, "--weights", str(ckpt), "--quiet",
                           "--out", str(out), "--work-dir", str(work), "--opts", *opts], cwd=ROOT,
                          env=child_env(STOP_AT=at, STOP_WITH=sig), capture_output=True, text=True, timeout=300)
    if at == "results":
        assert done.returncode == 0 and done.stderr == "predicted 1 of 1 video (2 clips x 3 crops)\n", done.stderr
        (record,) = [json.loads(x) for x in out.read_text().splitlines()]
        assert record["path"] == video and record["status"] == "ok"
        return
    kept = (f"no predictions printed or written (--out {out} left as it was); the video index in {work} keeps the "
            "videos probed so far, for the next run")
    if sig == "SIGINT":
        assert done.returncode == -2 and done.stderr.splitlines()[-1] == f"interrupted: predicting: {kept}", done
    else:
        assert done.returncode == 4, done.stderr
        assert done.stderr == f"stopped: {sig} received: {kept} (exit code 4)\n"
    assert done.stdout == "" and out.read_text() == "earlier predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.jsonl", "stop.py", "work"]
    assert list(work.glob("*.index.npz")), sorted(work.iterdir())  # the videos probed are kept


def test_flags_take_either_spelling_and_the_pairs_stay_as_typed():
    """--top_k or --work_dir (the spelling of train.py's --only_test) was refused as an unrecognized argument."""
    args = predict.parse_args(["a.mp4", "--weights", "w.pth", "--top_k", "3", "--work_dir=w", "--opts",
                               "DATA.ROOT", "my_videos", "--quiet"])
    assert (args.top_k, args.work_dir, args.quiet) == (3, "w", True)
    assert args.opts == ["DATA.ROOT", "my_videos"]


def test_a_top_k_above_the_models_classes_says_every_class_is_listed(evaluated, dataset, capsys):
    """--top-k 10 with a 4-class model listed the 4 classes without a word (only an accuracy line said "n/a")."""
    tmp, opts, ckpt, eval_rows = evaluated
    classes = load_config(DEMO, opts).DATA.NUM_CLASSES
    assert classes < 5  # the default top-k, 5, is above them
    video = str(dataset / eval_rows[0]["path"])
    args = [video, "--cfg", DEMO, "--weights", str(ckpt), "--format", "jsonl", "--quiet", "--work-dir",
            str(tmp / "work_top_k"), "--opts", *opts]
    for flag, k in (("--top-k", classes + 6), ("--top_k", classes + 1)):  # the flag named as typed
        assert predict.main(args + [flag, str(k)]) == 0
        out, err = capsys.readouterr()
        assert err.splitlines() == [f"note: {flag} {k} is more than the {classes} classes: every class is listed",
                                    "predicted 1 of 1 video (2 clips x 3 crops)"]
        assert sorted(t["class"] for t in json.loads(out)["top_k"]) == list(range(classes))
    # every class, as asked, or the default top-5 of a 4-class model, not asked for: nothing to say
    for given in (["--top-k", str(classes)], []):
        assert predict.main(args + given) == 0
        out, err = capsys.readouterr()
        assert err == "predicted 1 of 1 video (2 clips x 3 crops)\n" and len(json.loads(out)["top_k"]) == classes


def test_nan_scores_are_refused_in_one_line_naming_the_video(evaluated, dataset, tmp_path, capsys):
    """A model whose weights are NaN gave NaN probabilities, which --out wrote as a bare NaN: not JSON."""
    tmp, opts, ckpt, _ = evaluated
    state = torch.load(ckpt, map_location="cpu")["model"]
    state["head.weight"].fill_(float("nan"))
    nan_ckpt = tmp_path / "nan.pth"
    torch.save({"model": state}, nan_ckpt)
    video = str(sorted((dataset / "videos").rglob("*.webm"))[0])
    out = tmp_path / "nan.json"
    rc = predict.main([video, "--cfg", DEMO, "--weights", str(nan_ckpt), "--quiet", "--out", str(out), "--work-dir",
                       str(tmp_path / "work"), "--opts", *opts])
    captured = capsys.readouterr()
    assert rc == 2 and not out.exists(), captured.err
    assert captured.err == (f"error: the model's scores for {video} are NaN or infinite: check the weights for NaN "
                            "or inf values (a training run that diverged)\n"), captured.err  # on the CPU: fp32
    with predict.Predictor(str(nan_ckpt), cfg=DEMO, opts=opts, device="cpu") as predictor:
        with pytest.raises(predict.NonFiniteScoresError, match=re.escape(video)):
            predictor.predict(video)


def test_a_video_marked_to_be_shown_turned_is_scored_as_stored_with_one_note(evaluated, tmp_path, capsys):
    """A phone's portrait video (frames stored sideways, a display matrix saying how to show them) was scored as
    stored without a word: now one note per such video names its turn and says it was scored as stored, its scores
    those of the same frames unmarked (as evaluation reads them); an unmarked video gets no note."""
    import shutil

    import av

    from dali_pipelines.pyav_encode import write_video
    from tests.video_fixtures import mark_rotated, pattern_frames

    tmp, opts, ckpt, _ = evaluated
    plain, phone = tmp_path / "plain.mp4", tmp_path / "phone.mp4"
    write_video(str(plain), pattern_frames(16, 48, 32), codec="h264", gop=4)
    shutil.copy(plain, phone)
    mark_rotated(str(phone))
    with av.open(str(phone)) as container:  # FFmpeg reads the mark: the test is not vacuous
        assert next(container.decode(video=0)).rotation == -90
    out = tmp_path / "p.jsonl"
    rc = predict.main([str(plain), str(phone), str(phone), "--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--out",
                       str(out), "--work-dir", str(tmp_path / "work"), "--opts", *opts])
    err = capsys.readouterr().err
    assert rc == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {phone}: its display matrix shows it turned 90° clockwise (a phone's portrait video); "
                     "it was scored as stored, unturned, as evaluation reads it"]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"] and records[0]["top_k"] == records[1]["top_k"]


def _phone_and_plain(tmp_path: Path) -> tuple[Path, Path]:
    """A plain H.264 clip and the same clip marked as a phone's portrait video (shown turned 90° clockwise)."""
    import shutil

    from dali_pipelines.pyav_encode import write_video
    from tests.video_fixtures import mark_rotated, pattern_frames

    plain, phone = tmp_path / "plain.mp4", tmp_path / "phone.mp4"
    write_video(str(plain), pattern_frames(16, 48, 32), codec="h264", gop=4)
    shutil.copy(plain, phone)
    mark_rotated(str(phone))
    return plain, phone


def _turn_reads(monkeypatch) -> list[str]:
    """The videos predict opens and decodes again for their display matrix, a path per call, from now on."""
    from dali_pipelines import pyav_probe

    reads, real = [], pyav_probe.display_rotation
    monkeypatch.setattr(pyav_probe, "display_rotation", lambda path: reads.append(str(path)) or real(path))
    return reads


def test_the_turn_of_a_video_is_read_by_the_index_probe_not_by_another_decode(evaluated, tmp_path, capsys,
                                                                                 monkeypatch):
    """The note on a turned video came from a second open and decode of every video scored, after the index's probe
    had decoded its first frame already: the probe records the turn with the video's other facts (the index cache
    keeps it), so a first run and a run from the cache note it without reading any video again."""
    from dali_pipelines.probe_verdict import probe_video

    tmp, opts, ckpt, _ = evaluated
    plain, phone = _phone_and_plain(tmp_path)
    reads = _turn_reads(monkeypatch)
    note = (f"note: {phone}: its display matrix shows it turned 90° clockwise (a phone's portrait video); it was "
            "scored as stored, unturned, as evaluation reads it")
    for run in ("first", "from the cache"):
        rc = predict.main([str(plain), str(phone), "--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--work-dir",
                           str(tmp_path / "work"), "--opts", *opts])
        err = capsys.readouterr().err
        assert rc == 0, (run, err)
        assert [line for line in err.splitlines() if line.startswith("note:")] == [note], run
        assert reads == [], run
    assert (probe_video(str(phone)).rotation, probe_video(str(plain)).rotation) == (270, 0)  # what the index keeps


def _cache_turns(cache: Path) -> dict[str, int]:
    """The turn each video's record in an index cache keeps, by its path as the cache holds it."""
    from dali_pipelines.filelist import PathTable

    with np.load(cache, allow_pickle=False) as archive:
        rel_paths = PathTable(archive["paths"], archive["path_offsets"])
        return {os.path.basename(rel_paths[r]): int(t) for r, t in enumerate(archive["rotation"].tolist())}


def test_an_index_cache_older_than_the_turn_learns_it_once_and_keeps_it(evaluated, tmp_path, capsys, monkeypatch):
    """A cache written before the index recorded the turn (schema version 7) is migrated with its records kept and
    their turns not recorded: predict read the turn from the first frame of each video scored, and the migrated
    cache kept them unrecorded, so every later run decoded them again. Now the first run keeps the turns it learnt
    in the cache (the note the same) and the next run decodes no first frame; a video changed in between is probed
    again, its turn the new file's, not the cache's."""
    import shutil

    from dali_pipelines.index_store import INDEX_SCHEMA_VERSION

    tmp, opts, ckpt, _ = evaluated
    plain, phone = _phone_and_plain(tmp_path)
    work = tmp_path / "work"
    args = [str(plain), str(phone), "--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--work-dir", str(work),
            "--opts", *opts]
    assert predict.main(args) == 0
    capsys.readouterr()
    (cache,) = work.glob("videos-*.index.npz")
    with np.load(cache, allow_pickle=False) as archive:  # as version 7 wrote it: no rotation column
        arrays = {k: archive[k] for k in archive.files if k != "rotation"}
    header = json.loads(arrays["header"].tobytes())
    header["version"] = 7
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with open(cache, "wb") as f:
        np.savez(f, **arrays)
    note = (f"note: {phone}: its display matrix shows it turned 90° clockwise (a phone's portrait video); it was "
            "scored as stored, unturned, as evaluation reads it")
    reads = _turn_reads(monkeypatch)
    assert predict.main(args) == 0
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")] == [note]
    assert sorted(reads) == sorted([str(plain), str(phone)])  # the migrated records' turns, each read once
    with np.load(cache, allow_pickle=False) as archive:  # saved migrated, and not probed again
        assert json.loads(archive["header"].tobytes())["version"] == INDEX_SCHEMA_VERSION
    assert _cache_turns(cache) == {"plain.mp4": 0, "phone.mp4": 270}  # the turns learnt, kept

    reads.clear()
    assert predict.main(args) == 0
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")] == [note]
    assert reads == []  # from the cache: no first frame decoded again

    shutil.copy(phone, plain)  # plain is now a phone's video too: its record (turn 0) is not its turn any more
    stat = os.stat(plain)
    os.utime(plain, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert predict.main(args) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [note.replace(str(phone), str(plain)), note]
    assert reads == []  # the changed file probed again, its turn with it
    assert _cache_turns(cache) == {"plain.mp4": 270, "phone.mp4": 270}


def test_a_file_named_twice_through_a_link_is_scored_and_reported_once(evaluated, dataset, tmp_path, monkeypatch,
                                                                       capsys):
    """A video is the file its path resolves to, as extract_features keys it: a folder given again through a link,
    or a relative name in a linked working folder beside its absolute name through the link, was scored and reported
    once per name. Now once, under the first name given, with one note counting the other names."""
    tmp, opts, ckpt, eval_rows = evaluated
    first = dataset / eval_rows[0]["path"]
    folder = first.parent
    link = tmp_path / "linked"
    link.symlink_to(folder, target_is_directory=True)
    top1 = {str(dataset / r["path"]): int(r["top1_class"]) for r in eval_rows}
    scored = []
    real_predict_videos = predict.predict_videos

    def counting(cfg, model, paths, *args, **kwargs):
        scored.extend(paths)
        return real_predict_videos(cfg, model, paths, *args, **kwargs)

    monkeypatch.setattr(predict, "predict_videos", counting)
    monkeypatch.chdir(link)  # the working folder is the linked one: a relative name is its real path
    out = tmp_path / "pred.jsonl"
    rc = predict.main([first.name, str(link / first.name), str(folder), str(link), "--cfg", DEMO, "--weights",
                       str(ckpt), "--quiet", "--out", str(out), "--work-dir", str(tmp_path / "work"), "--opts", *opts])
    err = capsys.readouterr().err
    assert rc == 0, err
    in_folder = sorted(str(p) for p in folder.glob("*.webm"))
    want = [str(first)] + [p for p in in_folder if p != str(first)]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in records] == want and sorted(scored) == sorted(want)
    assert all(r["top_k"][0]["class"] == top1[r["path"]] for r in records if r["path"] in top1)
    assert err.count("note:") == 1
    assert (f"note: {len(in_folder)} names given were the file of an earlier name (a folder through a link, or a path "
            "spelled otherwise): each file is predicted once and listed under the first name given") in err
    assert f"predicted {len(want)} of {len(want)} videos" in err
    scored.clear()
    with predict.Predictor(str(ckpt), cfg=DEMO, opts=opts, device="cpu") as predictor:
        again, linked = predictor.predict([str(first), str(link / first.name)], top_k=2)
    assert scored == [str(first)]  # one file, scored once; a record per name given, each its own
    assert (again["path"], linked["path"]) == (str(first), str(link / first.name))
    assert again["top_k"] == linked["top_k"] and again["top_k"] is not linked["top_k"]
