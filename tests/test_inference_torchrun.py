"""predict and extract-features under torchrun: two CPU processes (gloo), each its own share of the videos; the
results equal a single-process run's."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from configs import load_config
from models import build_model
from tests.conftest import ROOT, child_env
from tests.video_fixtures import make_clip_dataset
from tools import predict
from tools.feature_store import read_features

DEMO = str(ROOT / "configs" / "demo.yaml")
OPTS = ["DATA.INPUT_SIZE", "32", "DATA.NUM_FRAMES", "4", "DATA.TUBELET_SIZE", "2", "DATA.NUM_CLASSES", "3",
        "DATA.NUM_THREADS", "1", "DATA.NUM_WORKERS", "1", "DATA.INDEX_WORKERS", "1", "DATA.LABEL_LIST", "",
        "DATA.DECODE_DEVICE", "cpu", "TEST.BATCH_SIZE", "1", "TEST.NUM_CLIP", "2", "TEST.NUM_CROP", "3"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrun_clips")
    make_clip_dataset(str(root), [9, 12, 7, 10, 8], codec="vp9", size=(64, 48))
    torch.manual_seed(2)
    ckpt = root / "model.pth"
    torch.save({"model": build_model(load_config(DEMO, OPTS)).state_dict()}, ckpt)
    return root, ckpt


def _run(module: str, args: list[str], nproc: int) -> subprocess.CompletedProcess:
    env = child_env(OMP_NUM_THREADS="1")
    launch = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--standalone", "-m"]
              if nproc > 1 else [sys.executable, "-m"])
    return subprocess.run(launch + [module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_predict_two_processes(setup, tmp_path):
    root, ckpt = setup
    results = {}
    for nproc in (1, 2):
        out = tmp_path / f"p{nproc}.jsonl"
        r = _run("tools.predict", [str(root / "list.txt"), "--cfg", DEMO, "--weights", str(ckpt), "--quiet",
                                   "--out", str(out), "--work-dir", str(tmp_path / f"w{nproc}"), "--opts", *OPTS],
                 nproc)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        results[nproc] = [json.loads(x) for x in out.read_text().splitlines()]
        accuracy = [line for line in r.stderr.splitlines() if line.endswith("labelled videos")]
        assert accuracy == [predict.accuracy_line(results[nproc], 5)], r.stderr  # rank 0's, each video once
    assert len(results[2]) == 5 and all(r["status"] == "ok" for r in results[2])
    assert [r["label"] for r in results[2]] == [0, 1, 2, 0, 1]  # the list's
    for a, b in zip(results[1], results[2]):
        assert a["path"] == b["path"] and [t["class"] for t in a["top_k"]] == [t["class"] for t in b["top_k"]]
        assert [t["prob"] for t in a["top_k"]] == pytest.approx([t["prob"] for t in b["top_k"]], abs=1e-6)


def test_extract_features_two_processes(setup, tmp_path):
    root, ckpt = setup
    indexes = {}
    for nproc in (1, 2):
        out = tmp_path / f"f{nproc}"
        r = _run("tools.extract_features", [str(root / "list.txt"), "--cfg", DEMO, "--weights", str(ckpt), "--out",
                                            str(out), "--window", "4", "--stride", "3", "--shard-videos", "2",
                                            "--quiet", "--opts", *OPTS], nproc)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        indexes[nproc] = [json.loads(x) for x in (out / "index.jsonl").read_text().splitlines()]
    two = tmp_path / "f2"
    assert {p.name.split("-")[1] for p in two.glob("features-*.npy")} == {"rank000", "rank001"}
    assert [r["path"] for r in indexes[2]] == [r["path"] for r in indexes[1]]  # all 5, in input order, once
    for a, b in zip(indexes[1], indexes[2]):
        assert a["starts_frames"] == b["starts_frames"]
        np.testing.assert_allclose(read_features(str(tmp_path / "f1"), a), read_features(str(two), b),
                                   rtol=1e-5, atol=1e-5)


# Rank 1 scans the inputs before a video appears (the first of the list, e.g. a folder still being filled): without
# an agreement the ranks would shard different lists (predict: rank 1 looks for a video list of another name).
SCANS_DIFFER = r'''
import os, sys
sys.path.insert(0, os.environ["REPO"])
if __name__ == "__main__":  # decode workers import this module: they must not run the command
    import importlib
    import tools.inference as inference
    if os.environ.get("RANK") == "1":
        scan = inference.videos_of_inputs  # what collect_videos and labelled_videos read the inputs with
        inference.videos_of_inputs = lambda *args: scan(*args)[1:]
    sys.exit(importlib.import_module(sys.argv[1]).main(sys.argv[2:]))
'''


@pytest.mark.parametrize("module", ["tools.predict", "tools.extract_features"])
def test_every_rank_works_on_rank_0s_videos(setup, tmp_path, module):
    root, ckpt = setup
    script = tmp_path / "scans_differ.py"
    script.write_text(SCANS_DIFFER)
    out = tmp_path / ("p.jsonl" if module == "tools.predict" else "f")
    args = [str(root / "list.txt"), "--cfg", DEMO, "--weights", str(ckpt), "--quiet", "--out", str(out)]
    args += (["--work-dir", str(tmp_path / "w")] if module == "tools.predict" else ["--window", "4", "--stride", "3"])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(script), module,
           *args, "--opts", *OPTS]
    r = subprocess.run(cmd, cwd=ROOT, env=child_env(OMP_NUM_THREADS="1", REPO=str(ROOT)), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [json.loads(x) for x in (out if module == "tools.predict" else out / "index.jsonl").read_text().splitlines()]
    listed = [str(root / line.rsplit(" ", 1)[0]) for line in (root / "list.txt").read_text().splitlines()]
    assert [row["path"] for row in rows] == listed  # all 5, once each, in rank 0's order
    if module == "tools.predict":
        assert all(row["status"] == "ok" for row in rows)
