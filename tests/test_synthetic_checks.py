"""make_synthetic_dataset: what a rerun checks before it reuses clips, and how a stop, a full disk or a missing
encoder ends it."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tools import synthetic
from tools.synthetic import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
TOOL = str(ROOT / "tools" / "make_synthetic_dataset.py")
SMALL = dict(train_per_class=3, val_per_class=2, num_frames=8, size=(64, 48), seed=3, workers=1, progress=False)


def clips(out: Path) -> list[Path]:
    return sorted(p for p in (out / "videos").rglob("*") if p.is_file())


def parts(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if ".part" in p.name]


def without_records(out: Path) -> None:
    """dataset.json as a run killed before it recorded its clips left it (or as written before clips were
    recorded)."""
    meta = json.loads((out / "dataset.json").read_text())
    for key in ("clip_bytes", "clip_blake2b"):
        meta.pop(key, None)
    (out / "dataset.json").write_text(json.dumps(meta))


def test_damaged_clips_are_written_again_and_counted(tmp_path, capsys):
    """A clip overwritten with garbage of its own size, one cut short and one emptied (a disk's hiccup) were reused
    as they were: the dataset failed only when training read them."""
    out, whole = tmp_path / "out", tmp_path / "whole"
    make_synthetic_dataset(str(out), **SMALL)
    make_synthetic_dataset(str(whole), **SMALL)
    garbled, cut, emptied, *others = clips(out)
    garbled.write_bytes(b"\0" * garbled.stat().st_size)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    emptied.write_bytes(b"")
    untouched = {p: p.stat().st_mtime_ns for p in others}
    capsys.readouterr()
    s = make_synthetic_dataset(str(out), **SMALL)
    err = capsys.readouterr().err
    assert not s["skipped"] and s["rewritten"] == 3
    assert err == (f"synthetic dataset in {out}: 3 clips on disk not as written (damaged or changed since, e.g. "
                   f"{garbled.relative_to(out)}): writing them again\n")
    for p in clips(out):
        assert p.read_bytes() == (whole / p.relative_to(out)).read_bytes(), p
    assert {p: p.stat().st_mtime_ns for p in others} == untouched  # the others were not written again
    s = make_synthetic_dataset(str(out), **SMALL)
    assert s["skipped"] and s["rewritten"] == 0 and capsys.readouterr().err == ""


def test_unrecorded_clips_are_probed_then_recorded(tmp_path, capsys):
    """A clip a killed run renamed into place but did not record: the index's quick probe decides, and a clip that
    passes is recorded so that the next reuse only hashes it."""
    out = tmp_path / "out"
    make_synthetic_dataset(str(out), **SMALL)
    recorded = json.loads((out / "dataset.json").read_text())
    without_records(out)
    cut = clips(out)[4]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    s = make_synthetic_dataset(str(out), **SMALL)
    assert not s["skipped"] and s["rewritten"] == 1 and str(cut.relative_to(out)) in capsys.readouterr().err
    assert json.loads((out / "dataset.json").read_text()) == recorded  # the same bytes as before, all recorded
    without_records(out)
    assert make_synthetic_dataset(str(out), **SMALL)["skipped"]
    assert json.loads((out / "dataset.json").read_text()) == recorded


def test_a_damaged_list_is_written_again(tmp_path):
    """A cut-short train.txt was reused (only its size was looked at): training then saw a part of the clips."""
    out = tmp_path / "out"
    make_synthetic_dataset(str(out), **SMALL)
    text = (out / "train.txt").read_text()
    (out / "train.txt").write_text(text[:30])
    assert not make_synthetic_dataset(str(out), **SMALL)["skipped"]
    assert (out / "train.txt").read_text() == text


def test_a_dataset_in_a_folder_that_cannot_be_written_is_still_reused(tmp_path, monkeypatch):
    """Recording the clips a probe checked is a convenience: a read-only dataset (a shared copy) stays usable."""
    out = tmp_path / "out"
    make_synthetic_dataset(str(out), **SMALL)
    without_records(out)
    before = (out / "dataset.json").read_text()

    def read_only(path, text, fsync=True):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(synthetic, "atomic_write_text", read_only)
    assert make_synthetic_dataset(str(out), **SMALL)["skipped"]
    assert (out / "dataset.json").read_text() == before
