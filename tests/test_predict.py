"""tools.predict: the same top-k classes and probabilities as an evaluation run on the same videos and views,
unreadable files listed and the rest predicted, the three output formats."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch

import train
from configs import load_config
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
    assert "predicted 8 of 9 videos; 1 unreadable" in captured.err
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


def test_format_functions_round_trip():
    records = [{"path": "a b.mp4", "status": "ok", "top_k": [{"class": 2, "name": "x, y", "prob": 0.75}]},
               {"path": "c.mp4", "status": "error", "error": "zero-byte file"}]
    assert [json.loads(x) for x in predict.format_jsonl(records).splitlines()] == records
    rows = list(csv.reader(io.StringIO(predict.format_csv(records))))
    assert rows[1] == ["a b.mp4", "ok", "", "2", "x, y", "0.750000"] and rows[2][:3] == ["c.mp4", "error",
                                                                                         "zero-byte file"]
    assert "zero-byte file" in predict.format_table(records).splitlines()[2]


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
