"""A name whose bytes are not UTF-8 (``caf\\xe9``: Python holds it as a surrogate escape) printed by a command under
a strict locale (``LANG=en_US.UTF-8``, here ``PYTHONIOENCODING=utf-8:strict``): the command's own lines, with the
name's bytes as they are, and no traceback (evautil.interrupt.stdout_may_close)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import child_env
from tests.video_fixtures import synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
NAME = "caf\udce9"  # the bytes b"caf\xe9", as Python holds a file name that is not UTF-8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synthetic_dataset(tmp_path_factory, "synth_encoding", 1, 1, num_frames=4, size=(32, 32))


def _strict(*args: str) -> subprocess.CompletedProcess:
    """Runs a command under a strict UTF-8 locale; its output as bytes, as a terminal gets them."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=child_env(PYTHONIOENCODING="utf-8:strict"),
                          capture_output=True, timeout=300)


def _no_traceback(r: subprocess.CompletedProcess) -> None:
    assert b"Traceback" not in r.stderr and b"UnicodeEncodeError" not in r.stderr, r.stderr
    assert b"\\udce9" not in r.stdout + r.stderr, r.stdout + r.stderr  # escaped, the name of no file


def test_verify_data_report_names_the_list_and_its_missing_video(dataset, tmp_path):
    listed = tmp_path / f"{NAME}.txt"
    first = (dataset / "train.txt").read_text().splitlines()[0]
    listed.write_text(f"{first}\nvideos/gone.avi 0\n")
    r = _strict("tools/verify_data.py", "--root", str(dataset), "--num-classes", "4", str(listed))
    _no_traceback(r)
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == b"list " + os.fsencode(listed) + b": 2 videos, well-formed", r.stdout
    assert os.fsencode(dataset / "videos" / "gone.avi") + b": missing file" in [line.strip() for line in lines]
    assert lines[-1] == b"verified 1 list, 2 videos: 1 unreadable (see the lists above)", r.stdout


def test_verify_data_error_line_names_the_root(tmp_path):
    root = tmp_path / NAME
    root.mkdir()
    listed = tmp_path / "val.txt"
    listed.write_text("a.mp4 0\n")
    r = _strict("tools/verify_data.py", "--root", str(root), "--num-classes", "1", str(listed))
    _no_traceback(r)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(b"error: --root = " + os.fsencode(root) + b" holds none of the 1 videos"), r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr


def test_make_synthetic_dataset_summary_names_its_out(tmp_path):
    out = tmp_path / NAME
    r = _strict("tools/make_synthetic_dataset.py", "--out", str(out), "--train-per-class", "1", "--val-per-class", "1",
                "--frames", "4", "--size", "32x32", "--codec", "mjpeg", "--workers", "1", "--quiet")
    _no_traceback(r)
    assert r.returncode == 0, r.stderr
    assert b"  videos:     " + os.fsencode(out / "videos") in r.stdout.splitlines(), r.stdout
    assert len((out / "train.txt").read_text().splitlines()) == 4
