"""A reader of stdout that goes away (``| head``, ``| less`` then q): the work goes on and writes its files whole,
no error blames an output flag for the console, no traceback, and the exit status README gives (the work's status;
141 for a benchmark that only prints)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import child_env
from tests.test_prepare_kinetics import read_list
from tests.test_train_cli import _opts
from tests.video_fixtures import synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synthetic_dataset(tmp_path_factory, "synth_pipe", 2, 1, num_frames=12, size=(48, 32))


def _into_closed_pipe(*args: str) -> subprocess.CompletedProcess:
    """Runs a command whose stdout is a pipe nobody reads any more, as ``cmd | head`` once head has its lines
    (closed before the command starts, so that its first write meets it, whatever its buffering)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=child_env(), stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)


def _quiet(stderr: str) -> None:
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert "Broken pipe" not in stderr and "BrokenPipeError" not in stderr, stderr  # named as a file's error


def test_train_dry_run(dataset, tmp_path):
    r = _into_closed_pipe("train.py", "--cfg", "configs/demo.yaml", "--dry-run", "--batch-size", "4",
                          "--opts", *_opts(dataset, tmp_path / "out"))
    _quiet(r.stderr)
    assert r.returncode == 0, r.stderr


def _kinetics_tree(root: Path) -> None:
    for split, per_class in (("train", 200), ("val", 20)):
        for c in ("abseiling", "bowling"):
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                (root / split / c / f"{split[0]}{c[0]}{i:09d}_000010_000020.mp4").write_bytes(b"\x00not-a-video")


def test_prepare_kinetics_lists_writes_its_files_whole(tmp_path):
    _kinetics_tree(tmp_path / "t400")
    out = tmp_path / "lists"
    r = _into_closed_pipe("tools/prepare_kinetics.py", "lists", "--dataset", f"t400={tmp_path / 't400'}",
                          "--out", str(out))
    _quiet(r.stderr)
    assert "--out" not in r.stderr and str(out) not in r.stderr, r.stderr  # the console is not the output folder
    assert r.returncode == 0, r.stderr
    assert len((out / "t400_train.txt").read_text().splitlines()) == 400
    assert len((out / "t400_val.txt").read_text().splitlines()) == 40
    assert (out / "t400_labels.csv").read_text().splitlines()[-1].endswith("bowling")
    assert (out / "t400_report.md").stat().st_size > 0 and (out / "t400_report.json").stat().st_size > 0


def test_prepare_kinetics_lists_dry_run(tmp_path):
    _kinetics_tree(tmp_path / "t400")
    r = _into_closed_pipe("tools/prepare_kinetics.py", "lists", "--dataset", f"t400={tmp_path / 't400'}",
                          "--out", str(tmp_path / "lists"), "--dry-run")
    _quiet(r.stderr)
    assert r.returncode == 0 and "error" not in r.stderr, r.stderr
    assert not (tmp_path / "lists" / "t400_train.txt").exists()


def test_verify_data(dataset):
    r = _into_closed_pipe("tools/verify_data.py", str(dataset / "train.txt"), "--root", str(dataset),
                          "--workers", "1")
    _quiet(r.stderr)
    assert r.returncode == 0, r.stderr


def test_a_benchmark_that_only_prints_ends_at_once_with_141(tmp_path):
    r = _into_closed_pipe("-m", "benchmarks.index_throughput", "--quick", "--work-dir", str(tmp_path / "work"))
    _quiet(r.stderr)
    assert r.returncode == 141, r.stderr


def test_a_benchmark_with_json_goes_on_and_writes_it_whole(tmp_path):
    out = tmp_path / "index.json"
    r = _into_closed_pipe("-m", "benchmarks.index_throughput", "--quick", "--work-dir", str(tmp_path / "work"),
                          "--json", str(out))
    _quiet(r.stderr)
    assert r.returncode == 0, r.stderr
    results = json.loads(out.read_text())["results"]  # whole: every phase measured after the table's first line
    assert [(r["phase"], r["workers"]) for r in results if r["phase"] == "build"] == [("build", 1), ("build", 2)]
    assert sorted(r["rank"] for r in results if r["phase"] == "load") == [0, 1]



def test_prepare_kinetics_with_stderr_into_the_same_pipe_as_stdout(tmp_path):
    # `python -m tools.prepare_kinetics ... 2>&1 | head -n 1`: a reader of both streams that goes away after the
    # first line. Only stdout was handled: the next stderr line met the closed pipe, the error printed about that
    # met it again, no list was written and the exit status was 1. Here each of 40 datasets prints a note on stderr
    # (its val CSV is validate.csv) and the pipe holds 4 KiB, less than the notes: the command waits on it until the
    # reader has gone, so that the notes after meet the closed pipe.
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_SETPIPE_SZ"):
        pytest.skip("needs a pipe whose size can be set (Linux)")
    from tests.test_prepare_kinetics import vid
    from tests.test_prepare_kinetics_annotations import make_flat

    names = [f"t{i:02d}" for i in range(40)]
    for ds in names:
        make_flat(tmp_path / ds, {"train": {"a": [vid("A1")], "b": [vid("B1")]}, "val": {"a": [vid("V1")],
                                                                                         "b": [vid("V2")]}},
                  csv_names={"val": "validate.csv"})
    out = tmp_path / "lists"
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, 4096)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "tools.prepare_kinetics", "lists", "--out", str(out),
                                 "--data-root", str(tmp_path),
                                 *[f"--dataset={ds}={tmp_path / ds}" for ds in names]],
                                cwd=ROOT, env=child_env(), stdout=write_end, stderr=write_end)
    finally:
        os.close(write_end)
    first = b""
    try:
        try:
            while not first.endswith(b"\n"):  # one byte at a time: the rest stays in the pipe
                byte = os.read(read_end, 1)
                if not byte:
                    break
                first += byte
        finally:
            os.close(read_end)  # the reader goes away
        status = proc.wait(timeout=120)
    finally:
        proc.kill()  # (when the test itself failed: no command left behind)
    assert status == 0
    assert first.decode().startswith(f"note: dataset t00: no val.csv in {str(tmp_path / 't00' / 'annotations')!r}")
    for ds in names:  # every list written whole
        assert read_list(out / f"{ds}_train.txt") == [(f"{ds}/train/{vid('A1')}", 0), (f"{ds}/train/{vid('B1')}", 1)]
        assert read_list(out / f"{ds}_val.txt") == [(f"{ds}/val/{vid('V1')}", 0), (f"{ds}/val/{vid('V2')}", 1)]
        assert json.loads((out / f"{ds}_report.json").read_text())["annotations"]["csv"]["val"].endswith(
            "validate.csv")
