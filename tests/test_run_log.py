"""A run's log file that cannot be written (a full disk): the console keeps every line, one warning names the file
and what to do, and the run goes on without its log. /dev/full fails every write as a full disk does."""

from __future__ import annotations

import logging
import os

import pytest

from engine.metrics import MetricLogger

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (every write: ENOSPC)")


def _logger_on_a_full_disk(out, rank: int = 0) -> MetricLogger:
    out.mkdir()
    (out / f"log_rank{rank}.txt").symlink_to("/dev/full")
    return MetricLogger(str(out), rank=rank, world_size=2, tensorboard=False, nvml=False, progress_bar=False)


def _stopped(path) -> str:
    return (f"WARNING: cannot write {path}: No space left on device; this rank's log stops here and the run goes on "
            "without it (its console lines are printed as before): free space on its disk for the next run's lines")


def test_a_full_disk_under_the_log_keeps_every_console_line_and_says_so_once(tmp_path, capsys):
    """The log was written before the console line was printed: its error lost the line; and a followed logger's
    records (the data pipeline's) printed Python's "--- Logging error ---" traceback each."""
    out = tmp_path / "out"
    metrics = _logger_on_a_full_disk(out)
    pipeline = logging.getLogger("eva_test_full_log")
    metrics.follow_logger(pipeline.name)
    try:
        metrics.info("epoch 1/2 done")
        pipeline.warning("videos/a.mp4: decode failed")
        metrics.info("saved checkpoint")
        pipeline.info("indexed 3 videos")
    finally:
        metrics.close()
    said = capsys.readouterr()
    assert said.out.splitlines() == ["epoch 1/2 done", _stopped(out / "log_rank0.txt"),
                                     "WARNING: videos/a.mp4: decode failed", "saved checkpoint", "indexed 3 videos"]
    assert "Logging error" not in said.err and "Traceback" not in said.err


def test_another_rank_whose_log_cannot_be_written_says_so_once_naming_itself(tmp_path, capsys):
    out = tmp_path / "out"
    metrics = _logger_on_a_full_disk(out, rank=1)
    try:
        metrics.info("epoch 1/2 done")  # rank 0's console only
        metrics.warn("videos/a.mp4: decode failed", this_rank_only=True)
        metrics.warn("videos/b.mp4: decode failed", this_rank_only=True)
    finally:
        metrics.close()
    assert capsys.readouterr().out.splitlines() == [
        f"[rank 1] {_stopped(out / 'log_rank1.txt')}", "[rank 1] WARNING: videos/a.mp4: decode failed",
        "[rank 1] WARNING: videos/b.mp4: decode failed"]
