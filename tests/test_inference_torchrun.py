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
    assert len(results[2]) == 5 and all(r["status"] == "ok" for r in results[2])
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
