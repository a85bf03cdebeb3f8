"""A training video that breaks in one rank's share: its quarantine reaches every rank at the epoch's end (README:
quarantine), before the validation.

- the loaders of two ranks in one process: the other rank leaves it out from the next epoch on, without decoding
  it, and a resume from the records of both continues that epoch exactly;
- two CPU processes (gloo) of train.py:

  one list serves training and validation (as the README's quarantined_earlier case). The victim is truncated
  after indexing, by rank 1 as its training starts; it is in rank 1's training share of epoch 1, in rank 0's validation
  share and in rank 0's training share of epoch 2. Each process used to learn only its own quarantines: rank 0's
  validation decoded it again (counted as failed while decoding, not as quarantined earlier), rank 0's training of
  epoch 2 decoded it again too (counted twice in the training's counters), and rank 0's record in the checkpoints
  lacked it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dali_pipelines.index as index_mod
import dali_pipelines.index_files as index_files
from dali_pipelines.index import build_index
from dali_pipelines.loader import build_loader
from dali_pipelines.schedule import epoch_plan
from tests.conftest import ROOT, child_env
from tests.test_rank_failure import _free_port, _opts
from tests.test_resume_quarantine import _break, _epoch
from tests.video_fixtures import make_clip_dataset, small_cfg, synthetic_dataset

# train.main, with rank 1 truncating the video VICTIM (relative to DATA.ROOT) as its training starts: after the
# index was built, so the run finds it changed when it reads it.
WRAPPER = r'''
import os, sys
sys.path.insert(0, os.environ["REPO"])
import train
if __name__ == "__main__":  # the decode workers import this module: they must not train
    import engine.train_loop as tl
    orig_fit = tl.Trainer.fit
    def fit(self):
        if self.ctx.rank == 1:
            victim = os.path.join(os.environ["DATA_ROOT"], os.environ["VICTIM"])
            os.truncate(victim, os.path.getsize(victim) // 2)
        return orig_fit(self)
    tl.Trainer.fit = fit
    sys.exit(train.main(sys.argv[1:]))
'''
BATCH, WORLD, SEED = 2, 2, 0  # TRAIN.BATCH_SIZE of test_rank_failure's options, and demo.yaml's SEED


def _victim(listed: int, seed: int = SEED) -> int:
    """A list row in rank 1's training share of epoch 1 and rank 0's of epoch 2, and in rank 0's validation share
    (even rows: the evaluations deal rows out by row modulo the world size)."""
    rows = np.arange(listed)

    def share(epoch: int, rank: int) -> set[int]:
        return {int(r) for b in epoch_plan(rows, seed, epoch, BATCH, rank, WORLD, True).batches for r in b}

    return min(r for r in share(0, 1) & share(1, 0) if r % WORLD == 0)


def test_the_other_rank_substitutes_it_without_decoding_it_and_a_resume_continues_exactly(tmp_path):
    root = str(tmp_path)
    cfg = small_cfg(root, make_clip_dataset(root, [24, 30, 26, 33, 28, 25, 29, 31]))
    ranks = [build_loader(cfg, "train", rank=r, world_size=WORLD) for r in range(WORLD)]
    steps, fingerprint = len(ranks[0]), ranks[0].plan_fingerprint()
    victim = _victim(len(ranks[0].index), cfg.SEED)
    rel = ranks[0].index.videos.rel_path(victim)
    _break(ranks[1].index.entries[victim].path)
    for loader in ranks:
        _epoch(loader)
    assert [loader.stats["skipped_videos"] for loader in ranks] == [0, 1]
    # what loader_stats gathers at the epoch's end, and hands every rank
    before = [loader.plan_state() for loader in ranks]  # a mid-epoch checkpoint's records: rank 1's names it
    parts = [loader.quarantines_to_share() for loader in ranks]
    assert parts[0] == [] and [(r, p) for r, p, *_ in parts[1]] == [(victim, rel)]
    for loader in ranks:
        loader.learn_quarantines(parts)
    assert victim in ranks[0].index.bad and "changed" in ranks[0].index.bad[victim]
    assert [loader.quarantines_to_share() for loader in ranks] == [[], []]  # each told once
    states = [loader.plan_state() for loader in ranks]
    assert [s["quarantined"] for s in states] == [[(victim, rel)]] * WORLD
    # the plan is the same (substituted, not left out): equal steps, the same digest on both ranks
    assert [len(loader) for loader in ranks] == [steps] * WORLD
    assert [loader.plan_fingerprint() for loader in ranks] == [fingerprint] * WORLD
    live = _epoch(ranks[0])  # epoch 2: the victim is in rank 0's share
    assert (ranks[0].stats["skipped_videos"], ranks[0].stats["substituted"]) == (0, 1)
    assert victim not in torch.cat([i for i, _ in live]).tolist()
    for loader in ranks:
        loader.close()

    resumed = [build_loader(cfg, "train", rank=r, world_size=WORLD) for r in range(WORLD)]
    assert [loader.adopt_plan_state(states, rank=r) for r, loader in enumerate(resumed)] == ["", ""]
    assert [len(loader) for loader in resumed] == [steps] * WORLD
    assert [loader.quarantines_to_share() for loader in resumed] == [[], []]  # every rank recorded it: known
    resumed[0].set_epoch(1)
    again = _epoch(resumed[0])
    assert len(again) == len(live) == steps
    for (li, lv), (ai, av) in zip(live, again):
        assert torch.equal(li, ai) and torch.equal(lv, av)
    for loader in resumed:
        loader.close()
    # resumed from records made before the epoch's end: rank 1 shares it again at the next one
    early = [build_loader(cfg, "train", rank=r, world_size=WORLD) for r in range(WORLD)]
    assert [loader.adopt_plan_state(before, rank=r) for r, loader in enumerate(early)] == ["", ""]
    assert [(r, p) for r, p, *_ in early[1].quarantines_to_share()] == [(victim, rel)]
    for loader in early:
        loader.close()
    named = [x for x in open(ranks[0].index.quarantine_path, encoding="utf-8") if x.startswith(rel + "\t")]
    assert len(named) == 1, named


def _machines_with_own_caches(tmp_path, monkeypatch):
    """A dataset whose list folder is read-only, so that each machine keeps its own index cache, and
    ``on_machine(m, rank)``: a training loader of ``rank`` on machine ``m`` (its own cache folder)."""
    root = str(tmp_path / "data")
    cfg = small_cfg(root, make_clip_dataset(root, [24, 30, 26, 33, 28, 25, 29, 31]))
    monkeypatch.setattr(index_files, "_dir_writable", lambda d: False)

    def on_machine(m: int, rank: int):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / f"machine{m}"))
        return build_loader(cfg, "train", rank=rank, world_size=WORLD)

    return cfg, on_machine


def test_a_quarantine_learnt_from_another_machine_is_recorded_in_that_machines_cache(tmp_path, monkeypatch):
    # A read-only list folder: each machine keeps its own index cache. A video rank 1 found broken while decoding was
    # left out by rank 0 from the epoch's end, but only rank 1's machine's cache recorded it: rank 0's machine's next
    # run used it, and decoded it, again.
    cfg, on_machine = _machines_with_own_caches(tmp_path, monkeypatch)
    root = cfg.DATA.ROOT

    ranks = [on_machine(r, r) for r in range(WORLD)]
    neighbour = on_machine(0, 0)  # another process of machine 0, which learns it too
    assert ranks[0].index.cache_path != ranks[1].index.cache_path
    broken, slow = 3, 5
    ranks[1].schedule.quarantine(broken, "decode failed during the run")  # as the feeder does: the file as probed
    ranks[1].schedule.quarantine(slow, "no answer within DATA.VIDEO_TIMEOUT_S", remember=False)  # this run only
    parts = [loader.quarantines_to_share() for loader in ranks]
    assert [(r, remembered) for r, _, _, remembered, _ in parts[1]] == [(broken, True), (slow, False)]
    for loader in ranks:
        loader.learn_quarantines(parts)
    # the neighbour finds the record there: machine 0's cache is not written again
    cache0 = ranks[0].index.cache_path
    written = os.stat(cache0).st_ino, os.stat(cache0).st_mtime_ns
    neighbour.learn_quarantines(parts)
    assert broken in neighbour.index.bad and (os.stat(cache0).st_ino, os.stat(cache0).st_mtime_ns) == written
    for loader in [*ranks, neighbour]:
        loader.close()
    rel = ranks[0].index.videos.rel_path(broken)
    for m in range(WORLD):  # the next run on either machine leaves it out without probing or decoding it
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / f"machine{m}"))
        again = build_index(cfg.DATA.TRAIN_FILE, root, workers=1, progress=False)
        assert again.probed == 0 and again.bad == {broken: "decode failed during the run"}, (m, again.bad)
        with open(again.quarantine_path, encoding="utf-8") as f:
            assert f.read() == f"{rel}\tdecode failed during the run\n"


def test_a_quarantine_of_another_machines_copy_of_a_file_is_not_recorded_in_this_machines_cache(tmp_path,
                                                                                                 monkeypatch):
    # Each machine keeps its own copy of the dataset under the same path, and machine 1's copy of one video is
    # another file (here: another clip's bytes). Rank 1 found its copy broken; machine 0 recorded that verdict in its
    # own cache against its own, good copy, and its later runs left that video out for good.
    cfg, on_machine = _machines_with_own_caches(tmp_path, monkeypatch)
    rank0 = on_machine(0, 0)
    row = 3
    path, other = rank0.index.entries[row].path, rank0.index.entries[row + 1].path
    kept = tmp_path / "machine0_copy"
    shutil.copy2(path, kept)
    shutil.copyfile(other, path)  # machine 1's copy under the same path
    rank1 = on_machine(1, 1)
    shutil.copyfile(kept, path)  # machine 0's copy again, as it was probed (size and mtime)
    os.utime(path, ns=(os.stat(kept).st_atime_ns, os.stat(kept).st_mtime_ns))
    rank1.schedule.quarantine(row, "decode failed during the run")
    parts = [rank0.quarantines_to_share(), rank1.quarantines_to_share()]
    rank0.learn_quarantines(parts)
    assert row in rank0.index.bad  # left out this run all the same: the ranks plan alike
    for loader in (rank0, rank1):
        loader.close()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "machine0"))
    again = build_index(cfg.DATA.TRAIN_FILE, cfg.DATA.ROOT, workers=1, progress=False)
    assert again.probed == 0 and again.bad == {}, again.bad  # machine 0's next run uses its copy, unprobed


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synthetic_dataset(tmp_path_factory, "synth_rank_quarantine", 4, 2, num_frames=8, size=(32, 24))


@pytest.mark.slow
def test_a_video_one_rank_quarantines_is_left_out_by_every_rank_from_the_epochs_end(tmp_path, dataset):
    data, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(dataset, data)
    listed = (data / "train.txt").read_text().splitlines()
    row = _victim(len(listed))
    rel = listed[row].rsplit(" ", 1)[0]
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    opts = _opts(data, out) + ["DATA.VAL_FILE", str(data / "train.txt"), "TEST.EVAL_FREQ", "1", "SAVE_FREQ", "1",
                               "SEED", str(SEED)]
    env = child_env(REPO=str(ROOT), DATA_ROOT=str(data), VICTIM=rel, OMP_NUM_THREADS="1",
                    MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(WORLD))
    cmd = [sys.executable, str(script), "--cfg", str(ROOT / "configs" / "demo.yaml"), "--opts", *opts]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(WORLD)]
    try:
        said = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], "".join(o + e for o, e in said)[-4000:]
    logs = [(out / f"log_rank{r}.txt").read_text() for r in range(WORLD)]
    assert f"quarantining {data / rel} (row {row})" in logs[1], logs[1][-3000:]
    # rank 0 never decodes it: not in its validation share (after epoch 1), nor in its training share of epoch 2
    assert "quarantining" not in logs[0], logs[0][-3000:]
    assert f"{data / rel} (row {row}): quarantined by rank 1" in logs[0], logs[0][-3000:]

    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [(d["epoch"], d["num_videos"], d["quarantined_earlier"], d["skipped_videos"])
             for d in lines if d["kind"] == "eval"]
    assert evals == [(1, 15, 1, 0), (2, 15, 1, 0)]  # left out as quarantined earlier, counted once, in both
    data_lines = [(d["epoch"], d["skipped_videos"]) for d in lines if d["kind"] == "data" and d["split"] == "train"]
    assert data_lines == [(1, 1), (2, 1)]  # one video failed while decoding in training, once
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["train_skipped_videos"], summary["val_quarantined_earlier"], summary["val_skipped_videos"]) \
        == (1, 1, 0)

    # every rank's record in the epoch checkpoints names it: a resume plans it, and quarantines it again
    for epoch in (1, 2):
        ckpt = torch.load(out / f"ckpt_epoch_{epoch}.pth", map_location="cpu", weights_only=False)
        assert [[tuple(v) for v in s["quarantined"]] for s in ckpt["data_plan"]] == [[(row, rel)]] * WORLD
    # the list's quarantine file names it once, with the reason rank 1 found
    named = [x for x in (data / "train.txt.quarantine.txt").read_text().splitlines() if x.startswith(rel + "\t")]
    assert len(named) == 1 and "changed" in named[0], named


# As WRAPPER, with each rank a machine of its own (LOCAL_RANK 0 for both, each its own XDG_CACHE_HOME) whose list
# folder is read-only to the index, so that each keeps its index cache in its own cache folder.
ON_TWO_MACHINES = WRAPPER.replace("import engine.train_loop as tl",
                                  "import engine.train_loop as tl\n"
                                  "    import dali_pipelines.index_files as index_files\n"
                                  "    index_files._dir_writable = lambda d: False")


@pytest.mark.slow
def test_a_warning_every_rank_gives_is_printed_once_and_one_only_a_rank_saw_by_that_rank(tmp_path, dataset):
    # Every rank's console used to be silent but rank 0's: a video that broke in rank 1's share, or rank 1's own
    # unreadable index cache, were said only in log_rank1.txt. The bad video both ranks index is said once.
    data, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(dataset, data)
    listed = (data / "train.txt").read_text().splitlines()
    rows = np.arange(len(listed))
    row = min(r for b in epoch_plan(rows, SEED, 0, BATCH, 1, WORLD, True).batches for r in b)  # rank 1's epoch 1
    rel = listed[row].rsplit(" ", 1)[0]
    (data / "broken.mp4").write_bytes(b"not a video")
    with open(data / "train.txt", "a", encoding="utf-8") as f:
        f.write("broken.mp4 0\n")
    caches = [tmp_path / f"machine{r}" for r in range(WORLD)]
    with pytest.MonkeyPatch.context() as mp:  # where machine 1 keeps the training list's cache: unreadable there
        mp.setenv("XDG_CACHE_HOME", str(caches[1]))
        mp.setattr(index_files, "_dir_writable", lambda d: False)
        cache1 = index_mod.index_paths(str(data / "train.txt")).cache
    os.makedirs(os.path.dirname(cache1), exist_ok=True)
    with open(cache1, "wb") as f:
        f.write(b"not an index cache")
    script = tmp_path / "wrapper.py"
    script.write_text(ON_TWO_MACHINES)
    opts = _opts(data, out) + ["TRAIN.EPOCHS", "1", "SEED", str(SEED)]
    env = child_env(REPO=str(ROOT), DATA_ROOT=str(data), VICTIM=rel, OMP_NUM_THREADS="1",
                    MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(WORLD))
    cmd = [sys.executable, str(script), "--cfg", str(ROOT / "configs" / "demo.yaml"), "--opts", *opts]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**env, "RANK": str(r), "LOCAL_RANK": "0", "XDG_CACHE_HOME": str(caches[r])})
             for r in range(WORLD)]
    try:
        said = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    console = "".join(said)
    assert [p.returncode for p in procs] == [0, 0], console[-4000:]
    bad = f"WARNING: bad video {data / 'broken.mp4'}: "
    assert console.count(bad) == 1 and bad in said[0], console[-4000:]  # both ranks indexed it: rank 0 says it
    assert all(bad in (out / f"log_rank{r}.txt").read_text() for r in range(WORLD))  # each rank's log keeps it
    assert said[1].count(f"[rank 1] WARNING: ignoring unreadable index cache {cache1} (") == 1, said[1][-4000:]
    assert f"[rank 1] WARNING: quarantining {data / rel} (row {row}): " in said[1], said[1][-4000:]
    assert "quarantining" not in said[0] and "ignoring unreadable" not in said[0], said[0][-4000:]


def test_one_process_per_machine_records_a_learnt_quarantine_and_a_failure_is_said_once(tmp_path, monkeypatch,
                                                                                        caplog):
    # Every rank recorded the quarantines it learnt: the processes of a machine each wrote the same files and, where
    # they could not, each warned once per video.
    import builtins
    import errno
    import logging

    import dali_pipelines.dataset_index as dataset_index_mod
    import engine.loader_stats as loader_stats_mod
    from engine.distributed import DistContext

    cfg, on_machine = _machines_with_own_caches(tmp_path, monkeypatch)
    root = cfg.DATA.ROOT

    first, finder, neighbour = on_machine(0, 0), on_machine(1, 1), on_machine(0, 0)
    ctxs = {id(first): DistContext(0, WORLD, 0), id(finder): DistContext(1, WORLD, 0),
            id(neighbour): DistContext(0, WORLD, 1)}  # the neighbour: a second process of machine 0

    def epoch_end(loaders, found):  # loader_stats at the epoch's end, its gather handing every rank rank 1's share
        parts = [{"counts": {}, "skipped": [], "quarantined": []}, {"counts": {}, "skipped": [], "quarantined": found}]
        monkeypatch.setattr(loader_stats_mod, "all_gather_objects", lambda obj, ctx: parts)
        for loader in loaders:
            loader_stats_mod.loader_stats(loader, ctxs[id(loader)])

    broken = 3
    finder.schedule.quarantine(broken, "decode failed during the run")
    found = finder.quarantines_to_share()
    cache0, quarantine0 = first.index.cache_path, first.index.quarantine_path
    written = os.stat(cache0).st_mtime_ns
    epoch_end([neighbour], found)  # left out, but not recorded: machine 0's files are its first process's
    assert broken in neighbour.index.bad and os.stat(cache0).st_mtime_ns == written
    assert not os.path.exists(quarantine0)
    epoch_end([first], found)
    rel = first.index.videos.rel_path(broken)
    with open(quarantine0, encoding="utf-8") as f:
        assert f.read() == f"{rel}\tdecode failed during the run\n"
    assert load_cache_bad(cache0, root) == {rel}

    # files no process can write: each that tries says so once, for both videos, not once per video
    real_open = builtins.open

    def read_only(path, mode="r", *a, **k):
        if str(path).endswith(".quarantine.txt") and mode == "a":
            raise OSError(errno.EROFS, "Read-only file system", path)
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(dataset_index_mod, "open", read_only, raising=False)
    monkeypatch.setattr(dataset_index_mod, "save_cache",
                        lambda path, *a: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system", path)))
    with caplog.at_level(logging.WARNING, logger="dali_pipelines.index"):
        for row in (1, 6):
            finder.schedule.quarantine(row, "decode failed during the run")
        epoch_end([neighbour, first, finder], finder.quarantines_to_share())
        for loader in (neighbour, first, finder):
            loader.close()
    said = [r.getMessage() for r in caplog.records if "could not record the quarantine of" in r.getMessage()]
    # one line from machine 1's finder, one from machine 0's first process, none from its neighbour
    assert sorted(s.split(" (")[0] for s in said) == sorted(
        f"could not record the quarantine of 2 videos in {loader.index.quarantine_path}" for loader in (first, finder))
    assert all({1, 6} <= set(loader.index.bad) for loader in (neighbour, first, finder))  # left out all the same


def load_cache_bad(cache: str, root: str) -> set[str]:
    """The paths the index cache ``cache`` records as bad."""
    from dali_pipelines.index_store import load_cache
    from dali_pipelines.video_table import BAD

    c = load_cache(cache, os.path.abspath(root))
    return {c.rel_paths[i] for i in np.flatnonzero(c.table.status == BAD)}
