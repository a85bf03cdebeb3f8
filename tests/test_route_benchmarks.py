"""The mixed-list benchmark: the loader benchmark on a VP9+H.264 list (per-video routes against all-PyAV), run
small; and the --codec option's checks."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.inputs import codec_list

ROOT = Path(__file__).resolve().parents[1]


def _run(module: str, args: list[str], tmp_path: Path) -> tuple[dict, str]:
    out_json = tmp_path / f"{module}.json"
    env = dict(os.environ, TMPDIR=str(tmp_path))
    cmd = [sys.executable, "-m", f"benchmarks.{module}", "--json", str(out_json), "--data-dir", str(tmp_path / "clips"),
           "--codec", "vp9,h264", "--num-clips", "4", "--frames", "32", "--width", "96", "--height", "72"]
    proc = subprocess.run(cmd + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"{module} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(out_json.read_text()), proc.stdout


def _positive(x) -> bool:
    v = x["median"] if isinstance(x, dict) else x
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_loader_benchmark_on_a_mixed_list(tmp_path):
    data, out = _run("loader_throughput", ["--quick", "--modes", "train", "--loaders", "dali,dali-pyav",
                                           "--num-frames", "4", "--input-size", "64", "--repeats", "2"], tmp_path)
    assert data["input"]["codec"] == "vp9,h264" and data["input"]["num_clips"] == 4
    by = {r["loader"]: r for r in data["results"]}
    assert by["dali"]["route"] == "cpu decode (dali+pyav)" and by["dali-pyav"]["route"] == "cpu decode (pyav)"
    assert all(_positive(r["clips_per_s"]) for r in by.values())
    assert _positive(data["ratios"]["dali/dali-pyav train"]) and "dali/dali-pyav train" in out
    # The two loaders were timed in the same two rounds: the paired figure is the geometric mean of those ratios.
    paired = data["paired"]["dali/dali-pyav train"]
    rounds = [a / b for a, b in zip(by["dali"]["clips_per_s"]["values"], by["dali-pyav"]["clips_per_s"]["values"])]
    assert paired["n"] == 2 and paired["geomean"] == pytest.approx(math.sqrt(rounds[0] * rounds[1]))
    assert paired["low"] <= paired["geomean"] <= paired["high"] and "over 2 paired rounds" in out


def test_codec_option_accepts_a_mix_and_names_bad_values():
    assert codec_list("vp9, h264") == "vp9,h264" and codec_list("h264") == "h264"
    for bad in ("av1", "vp9,vp9", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="expected h264, vp9 or both"):
            codec_list(bad)
