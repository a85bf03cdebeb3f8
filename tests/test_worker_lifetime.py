"""Decode worker processes: they ignore the scheduler's stop signals and never outlive their main process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dali_pipelines.loader import build_loader
from evautil.workers import WATCH_INTERVAL_S
from tests.video_fixtures import make_clip_dataset, small_cfg

_HOLDER_SCRIPT = """
import os, sys, time
sys.path.insert(0, os.getcwd())
from dali_pipelines.loader import build_loader
from tests.video_fixtures import make_clip_dataset, small_cfg

if __name__ == "__main__":
    root = sys.argv[1]
    lst = make_clip_dataset(root, [24, 30, 26, 33])
    loader = build_loader(small_cfg(root, val_list=lst, **{"DATA.CPU_DECODER": "pyav", "DATA.NUM_WORKERS": 2}),
                          "test")
    next(iter(loader))  # the decode workers are running now
    print("workers", *loader.routes["pyav"].worker_pids(), flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc")
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_decode_workers_end_with_their_main_process(tmp_path, stop):
    """A process holding a PyAV-route loader is killed (SIGKILL) or terminated (SIGTERM, which the workers
    ignore): its decode workers are gone within a few seconds."""
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER_SCRIPT)
    (tmp_path / "data").mkdir()
    holder = subprocess.Popen([sys.executable, str(script), str(tmp_path / "data")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=os.getcwd(),
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        line = holder.stdout.readline()
        assert line.startswith("workers "), (line, holder.stderr.read() if holder.poll() is not None else "")
        pids = [int(p) for p in line.split()[1:]]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        os.kill(holder.pid, stop)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    deadline = time.monotonic() + 10 * WATCH_INTERVAL_S + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [p for p in pids if _alive(p)]
    for p in survivors:  # leave nothing behind, even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not survivors, f"decode workers {survivors} outlived their main process ({stop.name})"


def test_decode_workers_ignore_scheduler_signals(tmp_path):
    """SIGTERM and SIGUSR1 sent to every decode worker mid-epoch (as a cluster scheduler signals every process of
    a job) are left to the main process: no worker dies, nothing is restarted, every video is delivered with the
    same pixels as in an undisturbed epoch."""
    root = str(tmp_path)
    lst = make_clip_dataset(root, [24, 30, 26, 33, 28, 25, 27])
    cfg = small_cfg(root, val_list=lst, **{"DATA.CPU_DECODER": "pyav", "DATA.NUM_WORKERS": 2})
    reference = build_loader(cfg, "test")
    expected = [(b["index"].clone(), b["video"].clone()) for b in reference]
    reference.close()
    loader = build_loader(cfg, "test")
    got, pids = [], []
    for b in loader:
        got.append((b["index"].clone(), b["video"].clone()))
        if len(got) == 1:
            pids = loader.routes["pyav"].worker_pids()
            for pid in pids:
                os.kill(pid, signal.SIGUSR1)
                os.kill(pid, signal.SIGTERM)
            time.sleep(0.5)  # a signal that kills would have done so by now
    assert len(pids) == 2 and loader.routes["pyav"].worker_pids() == pids and all(_alive(p) for p in pids)
    assert loader.stats["worker_restarts"] == 0 and loader.stats["skipped_videos"] == 0
    assert len(got) == len(expected)
    for (ei, ev), (gi, gv) in zip(expected, got):
        assert torch.equal(ei, gi) and torch.equal(ev, gv)
    loader.close()
