"""build_loader on the CPU: outputs, sharding, exact resume, bad files and runtime failures, PyAV vs DALI routes."""

from __future__ import annotations

import collections
import logging
import os
import threading
import wave

import numpy as np
import pytest
import torch

from configs import ConfigError
from dali_pipelines import DataError
from dali_pipelines.loader import build_loader, build_split_index, clip_dtype, resolve_decode_device
from dali_pipelines.sampling import dense_multiview_indices, multiview_indices, sample_rng
from tests.conftest import ROOT, child_env
from tests.video_fixtures import make_clip_dataset, small_cfg

COUNTS = [24, 30, 3, 40, 26, 33, 28, 36, 25]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("loaderdata"))
    return root, make_clip_dataset(root, COUNTS)


def _epoch(loader):
    return [(b["index"].clone(), b["video"].clone(), b["label"].clone()) for b in loader]


def test_train_outputs(data):
    root, lst = data
    loader = build_loader(small_cfg(root, lst), "train")
    assert loader.cpu_decoder == "dali" and loader.dtype == "float32"
    batches = _epoch(loader)
    assert len(batches) == len(loader) == len(COUNTS) // 2
    seen = []
    for index, video, label in batches:
        assert video.shape == (2, 4, 3, 32, 32) and video.dtype == torch.float32
        assert index.dtype == torch.int64 and label.dtype == torch.int64 and index.shape == label.shape == (2,)
        assert label.tolist() == [loader.index.entries[r].label for r in index.tolist()]
        assert label.tolist() == [r % 3 for r in index.tolist()]  # how make_clip_dataset labels rows
        assert -3 < float(video.min()) and float(video.max()) < 3  # normalised
        seen += index.tolist()
    assert len(set(seen)) == len(seen)  # no repeats within an epoch
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["position"] == 0
    second = [b[0].tolist() for b in _epoch(loader)]
    assert second != [b[0].tolist() for b in batches]  # reshuffled every epoch
    loader.close()


def test_clip_dtype_follows_the_setting_the_device_and_an_fp32_run():
    assert clip_dtype("auto", "gpu", "auto") == clip_dtype("auto", "gpu", "bf16") == "float16"
    assert clip_dtype("auto", "gpu", "fp32") == "float32"  # an fp32 run sees unrounded inputs
    assert clip_dtype("auto", "cpu", "bf16") == "float32"
    assert clip_dtype("float16", "gpu", "fp32") == "float16" and clip_dtype("float32", "gpu", "bf16") == "float32"


def test_labels_are_pinned_only_where_they_are_copied_to_the_gpu():
    """Training copies each batch's labels to the GPU (pinned: the copy does not wait for the GPU's queue);
    evaluation reads them on the host, where a pinned allocation per batch bought nothing. Without a GPU none."""
    from dali_pipelines.loader import labels_pinned

    assert labels_pinned("gpu", training=True)
    assert not labels_pinned("gpu", training=False)
    assert not labels_pinned("cpu", training=True) and not labels_pinned("cpu", training=False)


def test_plan_fingerprint_changes_with_the_usable_videos_and_the_world(data):
    root, lst = data
    cfg = small_cfg(root, lst)
    a, same = build_loader(cfg, "train"), build_loader(cfg, "train")
    assert a.plan_fingerprint() == same.plan_fingerprint()
    same.close()
    index = build_split_index(cfg, "train")  # another node's index, which left one video out
    index.quarantine(int(index.good_rows[0]), "no answer within DATA.VIDEO_TIMEOUT_S", remember=False)
    b = build_loader(cfg, "train", index=index)
    assert a.plan_fingerprint() != b.plan_fingerprint()
    c = build_loader(cfg, "train", rank=1, world_size=2)
    assert c.plan_fingerprint() != a.plan_fingerprint()
    for loader in (a, b, c):
        loader.close()


def test_test_outputs_and_single_decode(data):
    root, lst = data
    cfg = small_cfg(root, val_list=lst, **{"TEST.NUM_CLIP": 3, "TEST.NUM_CROP": 3, "TEST.BATCH_SIZE": 4,
                                           "DATA.OUTPUT_DTYPE": "float16"})
    loader = build_loader(cfg, "val")
    rows = []
    for b in loader:
        assert b["video"].shape[1:] == (9, 4, 3, 32, 32) and b["video"].dtype == torch.float16
        rows += b["index"].tolist()
        assert b["label"].tolist() == [r % 3 for r in b["index"].tolist()]
    assert rows == list(range(len(COUNTS))) and len(loader) == 3
    # every sampled frame of a video is decoded once: the decoder gets the sorted union of all clips' indices
    s = loader.sample(3)
    assert np.array_equal(s.frames, np.unique(s.frames)) and len(s.params.new_order) == 9 * 4
    assert s.frames.tolist() == np.unique(multiview_indices(COUNTS[3], 4, 3)).tolist()
    loader.close()


def test_two_rank_sharding(data):
    root, lst = data
    cfg = small_cfg(root, lst, lst)
    train = [build_loader(cfg, "train", rank=r, world_size=2) for r in range(2)]
    assert len(train[0]) == len(train[1]) == len(COUNTS) // 4
    for epoch in range(2):
        rows = [[r for b in ld for r in b["index"].tolist()] for ld in train]
        assert len(rows[0]) == len(rows[1]) == 4
        assert not set(rows[0]) & set(rows[1])  # disjoint shares of one global permutation
    test = [build_loader(cfg, "test", rank=r, world_size=2) for r in range(2)]
    rows = [[r for b in ld for r in b["index"].tolist()] for ld in test]
    assert sorted(rows[0] + rows[1]) == list(range(len(COUNTS)))  # exactly once, no padding
    for ld in train + test:
        ld.close()


def test_two_rank_test_shares_stay_disjoint_when_one_rank_quarantined_a_video(data):
    """A video rank 1 quarantined while decoding (an earlier evaluation of the same index: the final multi-view
    test loader is built later, over it) is bad on rank 1 only: every other video is still scored exactly once."""
    root, lst = data
    cfg = small_cfg(root, val_list=lst)
    index = [build_split_index(cfg, "val") for _ in range(2)]  # each rank's own index of the list
    index[1].quarantine(3, "changed since it was indexed", remember=False)
    test = [build_loader(cfg, "test", rank=r, world_size=2, index=index[r]) for r in range(2)]
    rows = [r for ld in test for b in ld for r in b["index"].tolist()]
    assert sorted(rows) == [r for r in range(len(COUNTS)) if r != 3]  # no video twice, none left out but row 3
    # rank 1 names row 3 as quarantined earlier in the run, not as bad when the list was indexed
    assert [(ld.stats["bad_at_index"], ld.stats["quarantined_earlier"]) for ld in test] == [(0, 0), (0, 1)]
    for ld in test:
        ld.close()


def test_resume_mid_epoch_is_exact(data):
    root, lst = data
    cfg = small_cfg(root, lst, **{"AUG.JITTER_PER_FRAME": True})
    ref_loader = build_loader(cfg, "train")
    reference, states = [], []
    for _ in range(2):  # two epochs, recording the position after every batch
        for b in ref_loader:
            reference.append((b["index"].clone(), b["video"].clone()))
            states.append(ref_loader.state_dict())
    ref_loader.close()
    per_epoch = len(COUNTS) // 2
    for k in (1, per_epoch - 1, per_epoch + 2):  # mid-epoch 0, last batch of epoch 0, mid-epoch 1
        loader = build_loader(cfg, "train")
        loader.load_state_dict(states[k - 1])
        resumed = []
        while len(resumed) < len(reference) - k:
            for b in loader:
                resumed.append((b["index"].clone(), b["video"].clone()))
        for (ri, rv), (gi, gv) in zip(reference[k:], resumed):
            assert torch.equal(ri, gi) and torch.equal(rv, gv)
        loader.close()
    # stopping mid-epoch and resuming on the same loader object (pipeline rebuilt, prefetched batches discarded)
    loader = build_loader(cfg, "train")
    it = iter(loader)
    first = [next(it)["index"].clone() for _ in range(2)]
    del it
    state = loader.state_dict()
    assert state["position"] == 2 and state["epoch"] == 0
    loader.set_epoch(0)  # an engine calling set_epoch(resumed epoch) keeps the position
    rest = [b["index"].clone() for b in loader]
    assert [t.tolist() for t in first + rest] == [t.tolist() for t, _ in reference[:per_epoch]]
    loader.close()


def test_an_iterator_stopped_by_close_or_a_newer_one_says_so_and_the_loader_goes_on(data):
    """close() mid-epoch, then the old iterator asked for its next batch: it died with "'NoneType' object has no
    attribute 'peek'" (and after a newer iteration it would have taken that one's batches). It now stops with an
    error that says why and where the loader goes on; iterating the loader again delivers the rest of the epoch."""
    root, lst = data
    cfg = small_cfg(root, lst)
    reference = build_loader(cfg, "train")
    expected = [b["index"].tolist() for b in reference]
    reference.close()
    loader = build_loader(cfg, "train")
    old = iter(loader)
    got = [next(old)["index"].tolist()]
    loader.close()
    loader.close()  # twice: nothing left to release
    with pytest.raises(RuntimeError, match=r"stopped by close\(\) .* goes on at batch 1 of epoch 0\)$"):
        next(old)
    newer = iter(loader)
    got.append(next(newer)["index"].tolist())
    old = newer
    newer = iter(loader)
    got.append(next(newer)["index"].tolist())  # a newer iteration (once started) stops the one before too
    with pytest.raises(RuntimeError, match="or by a newer iteration of the loader"):
        next(old)
    got += [b["index"].tolist() for b in newer]
    assert got == expected
    loader.close()


def test_a_loader_is_a_context_manager_that_closes_on_an_error(data):
    """``with build_loader(...) as loader:`` closes the loader however the block ends: an error inside it
    propagates unchanged, and the graphs, the decode workers and the threads the iteration started are gone."""
    root, lst = data
    loader = build_loader(small_cfg(root, lst, **{"DATA.NUM_WORKERS": 1}), "train")
    before = set(threading.enumerate())
    with pytest.raises(KeyError, match="inside the block"):
        with loader as entered:
            next(iter(entered))
            assert loader.pipelines and loader.routes["dali_cpu"].worker_pids()
            raise KeyError("inside the block")
    assert entered is loader
    assert loader.pipelines == () and loader.routes["dali_cpu"].worker_pids() == []
    assert [t.name for t in threading.enumerate() if t not in before] == []


def _write_bad_files(root):
    """Zero-byte, garbage, truncated, missing and audio-only files; returns their list lines."""
    vids = os.path.join(root, "videos")
    open(os.path.join(vids, "empty.webm"), "wb").close()
    with open(os.path.join(vids, "garbage.webm"), "wb") as f:
        f.write(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with open(os.path.join(vids, "clip_1.webm"), "rb") as f:
        data = f.read()
    with open(os.path.join(vids, "truncated.webm"), "wb") as f:
        f.write(data[: len(data) // 3])
    with wave.open(os.path.join(vids, "audio_only.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(8000, np.int16).tobytes())
    names = ["empty.webm", "garbage.webm", "truncated.webm", "missing.webm", "audio_only.wav"]
    return [f"videos/{n} 1" for n in names], names


def test_bad_inputs_are_skipped_and_named(tmp_path):
    root = str(tmp_path)
    lst = make_clip_dataset(root, [24, 30, 26, 33, 28])
    bad_lines, bad_names = _write_bad_files(root)
    good = open(lst).read().splitlines()
    mixed = [good[0], bad_lines[0], good[1], bad_lines[1], bad_lines[2], good[2], bad_lines[3], good[3],
             bad_lines[4], good[4]]
    mixed_list = os.path.join(root, "mixed.txt")
    with open(mixed_list, "w") as f:
        f.write("\n".join(mixed) + "\n")
    good_rows = [0, 2, 5, 7, 9]
    cfg = small_cfg(root, mixed_list, mixed_list)
    test = build_loader(cfg, "test")
    reported = test.index.summary() + "\n".join(test.stats["skipped"])
    for name in bad_names:
        assert name in reported, name
    rows = [r for b in test for r in b["index"].tolist()]
    assert rows == good_rows
    train = build_loader(cfg, "train", index=test.index)
    batches = [b["index"].tolist() for b in train]
    assert len(batches) == len(train) == 2 and all(len(b) == 2 for b in batches)
    assert set(r for b in batches for r in b) <= set(good_rows)
    test.close()
    train.close()


def test_a_list_short_of_one_optimizer_step_names_accumulation_steps(tmp_path):
    """3 videos, batches of 2 with TRAIN.ACCUMULATION_STEPS 2: the loader was built (one batch of 2 fits), and the
    run then stopped on its first optimizer step; with 1 video the loader's error said to lower TRAIN.BATCH_SIZE
    alone, leaving out that an optimizer step takes TRAIN.ACCUMULATION_STEPS batches."""
    root = str(tmp_path)
    lst = make_clip_dataset(root, [24, 30, 26])
    with pytest.raises(DataError) as e:
        build_loader(small_cfg(root, lst, **{"TRAIN.ACCUMULATION_STEPS": 2}), "train")
    assert str(e.value) == (
        f"DATA.TRAIN_FILE {lst}: 3 usable training videos, fewer than one global batch (TRAIN.BATCH_SIZE 2 x "
        "TRAIN.ACCUMULATION_STEPS 2 x world size 1 = 4): lower TRAIN.BATCH_SIZE or TRAIN.ACCUMULATION_STEPS, "
        "or list more videos")
    # batches of 1 make an optimizer step of 2 x 1 clips: the loader is built, with 3 batches
    ld = build_loader(small_cfg(root, lst, **{"TRAIN.ACCUMULATION_STEPS": 2, "TRAIN.BATCH_SIZE": 1}), "train")
    assert len(ld) == 3
    ld.close()


def test_unusable_data_raises_data_error(tmp_path, caplog):
    """Data that cannot be used as configured is an input error (DataError, a ValueError that the command-line
    tools report in one line), naming the list and the config key to change."""
    root = str(tmp_path)
    lst = make_clip_dataset(root, [24, 30, 26])
    bad_lines, bad_names = _write_bad_files(root)
    all_bad = os.path.join(root, "all_bad.txt")
    with open(all_bad, "w") as f:
        f.write("\n".join(bad_lines) + "\n")
    with pytest.raises(DataError) as e:
        build_loader(small_cfg(root, all_bad), "train")
    msg = str(e.value)
    assert f"DATA.TRAIN_FILE {all_bad}" in msg and "none of its 5 videos" in msg and "quarantine" in msg
    assert bad_names[0] in msg and "\n" not in msg
    with pytest.raises(DataError, match=r"DATA.VAL_FILE .*all_bad.txt: none of its 5 videos"):
        build_loader(small_cfg(root, val_list=all_bad), "val")

    # 3 good videos, 2 ranks x 2 clips: not one global batch (raised when the loader is built, not later)
    with pytest.raises(DataError) as e:
        build_loader(small_cfg(root, lst), "train", rank=0, world_size=2)
    msg = str(e.value)
    assert lst in msg and "3 usable training videos" in msg and (
        "(TRAIN.BATCH_SIZE 2 x TRAIN.ACCUMULATION_STEPS 1 x world size 2 = 4)") in msg
    # the test split has no such minimum: rank 1 of 2 simply gets one video
    ld = build_loader(small_cfg(root, val_list=lst), "test", rank=1, world_size=2)
    assert [r for b in ld for r in b["index"].tolist()] == [1]
    ld.close()

    # DATA.STRICT refuses a list with bad videos, naming them
    mixed = os.path.join(root, "mixed.txt")
    with open(mixed, "w") as f:
        f.write(open(lst).read() + bad_lines[1] + "\n")
    with caplog.at_level(logging.INFO, logger="dali_pipelines.index"):
        with pytest.raises(DataError, match=r"DATA.STRICT is on and 1 of 4 videos .*mixed.txt.*garbage.webm"):
            build_loader(small_cfg(root, mixed, **{"DATA.STRICT": True}), "train")
    # the index's summary line does not say "left out" just before the list is refused for them
    assert "  bad videos (all 1 listed in " in caplog.text and "left out" not in caplog.text

    with pytest.raises(ConfigError, match="DATA.DECODE_DEVICE = 'npu' is not one of 'auto', 'gpu', 'cpu'"):
        resolve_decode_device("npu")  # the config's own rule, not a second copy of it
    if not torch.cuda.is_available():
        with pytest.raises(DataError, match="DATA.DECODE_DEVICE is 'gpu' but CUDA is not available"):
            build_loader(small_cfg(root, lst, **{"DATA.DECODE_DEVICE": "gpu"}), "train")


@pytest.mark.parametrize("decoder", ["dali", "pyav"])
def test_runtime_failures_are_quarantined_without_a_rebuild(tmp_path, decoder):
    """Files that break after indexing: one turns to garbage of the same size and modification time (a change the
    size/mtime check cannot see: the worker's decode fails), one disappears (the read fails). The epoch goes on,
    both are named, every other video is yielded once, and the graph, which only augments, is never rebuilt."""
    root = str(tmp_path)
    lst = make_clip_dataset(root, [24, 30, 26, 33, 28, 25, 27])
    cfg = small_cfg(root, lst, lst, **{"DATA.CPU_DECODER": decoder})
    test = build_loader(cfg, "test")
    train = build_loader(cfg, "train", index=test.index)
    corrupt, gone = test.index.entries[3].path, test.index.entries[5].path
    st = os.stat(corrupt)
    with open(corrupt, "wb") as f:
        f.write(np.random.default_rng(1).integers(0, 256, st.st_size, dtype=np.uint8).tobytes())
    os.utime(corrupt, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.remove(gone)
    rows = [r for b in test for r in b["index"].tolist()]
    assert rows == [0, 1, 2, 4, 6]
    assert test.stats["skipped_videos"] == 2 and test.stats["rebuilds"] == 0
    assert test.stats["route_fallbacks"] == 0  # DATA.CPU_DECODER names one decoder: no other may retry
    assert any(os.path.basename(corrupt) in s for s in test.stats["skipped"])
    assert any(os.path.basename(gone) in s for s in test.stats["skipped"])
    assert 3 not in test.index.infos and 5 not in test.index.infos
    # the training schedule was cut before the failures: every batch stays full, the bad rows are substituted
    batches = [b["index"].tolist() for b in train]
    assert len(batches) == len(train) == 7 // 2 and all(len(b) == 2 for b in batches)
    assert not {3, 5} & {r for b in batches for r in b}
    test.close()
    train.close()


def test_runtime_failure_in_training_substitutes(tmp_path):
    root = str(tmp_path)
    lst = make_clip_dataset(root, [24, 30, 26, 33, 28, 25])
    cfg = small_cfg(root, lst)
    train = build_loader(cfg, "train")
    assert len(train) == 3
    victim = train.schedule.rows(1)[0]  # a row of the second batch
    path = train.index.entries[victim].path
    st = os.stat(path)  # damaged with its size and mtime kept: only the decoders can tell (DALI's, then PyAV's)
    with open(path, "wb") as f:
        f.write(b"\x1a\x45\xdf\xa3" + bytes(st.st_size - 4))  # a WebM magic number, then nothing decodable
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    batches = [b["index"].tolist() for b in train]
    assert len(batches) == 3 and all(len(b) == 2 for b in batches)
    assert victim not in {r for b in batches for r in b}
    assert train.stats["skipped_videos"] == 1 and train.stats["substituted"] >= 1
    assert train.stats["route_fallbacks"] == 1 and train.stats["rebuilds"] == 0
    train.close()


@pytest.mark.parametrize("split", ["train", "test"])
def test_strict_makes_a_video_that_breaks_during_the_run_an_error(tmp_path, split):
    """DATA.STRICT: a video that fails to decode during the run (it broke after indexing) ends the iteration with
    a DataError naming DATA.STRICT, the list and the video, instead of being substituted or left out in silence;
    its quarantine line is written first, so the next build's STRICT refusal names it too."""
    root = str(tmp_path)
    lst = make_clip_dataset(root, [24, 30, 26, 33, 28, 25])
    loader = build_loader(small_cfg(root, lst, lst, **{"DATA.STRICT": True, "DATA.CPU_DECODER": "pyav"}), split)
    victim = 3
    path = loader.index.entries[victim].path
    st = os.stat(path)  # damaged with its size and mtime kept: only the decoder can tell
    with open(path, "wb") as f:
        f.write(b"\x1a\x45\xdf\xa3" + bytes(st.st_size - 4))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DataError) as err:
        for _ in loader:
            pass
    msg = str(err.value)
    assert "\n" not in msg and "DATA.STRICT" in msg and lst in msg and f"{path} (line 4)" in msg, msg
    with open(loader.index.quarantine_path, encoding="utf-8") as f:
        assert os.path.basename(path) in f.read()
    loader.close()


def test_a_video_that_breaks_is_not_decoded_again_where_it_also_stands_in_for_another(tmp_path):
    """A video quarantined earlier in the run is substituted by the next video of the epoch's order, which then
    comes twice in the batches prepared together (its own place, and the place it stands in for). When it breaks,
    its other sample, drawn before, was decoded all the same: on DALI's CPU decoder it was moved to PyAV a second
    time (two route fallbacks for one video), and a decode past DATA.VIDEO_TIMEOUT_S was waited for twice. Now a
    sample whose video was quarantined since its batch was drawn is substituted without a decode."""
    root = str(tmp_path)
    lst = make_clip_dataset(root, [24, 30, 26, 33, 28, 25, 27, 31])
    train = build_loader(small_cfg(root, lst), "train")
    order = train.schedule.plan().order.tolist()
    assert train.schedule.rows(0) == order[:2] and train.schedule.rows(1) == order[2:4]
    gone, broken = order[1], order[2]  # broken stands in for gone in batch 0, and has its own place in batch 1
    train.index.quarantine(gone, "quarantined earlier in the run", remember=False)
    path = train.index.entries[broken].path
    st = os.stat(path)  # damaged with its size and mtime kept: only the decoders can tell (DALI's, then PyAV's)
    with open(path, "wb") as f:
        f.write(b"\x1a\x45\xdf\xa3" + bytes(st.st_size - 4))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    batches = [b["index"].tolist() for b in train]
    assert len(batches) == 4 and all(len(b) == 2 for b in batches)
    assert not {gone, broken} & {r for b in batches for r in b}
    assert train.stats["skipped_videos"] == 1 and train.stats["route_fallbacks"] == 1
    train.close()


def test_pyav_route_matches_dali_route(data):
    """Both CPU routes feed the same augmentation graph: same rows, same pixels up to decoder colour."""
    root, lst = data
    out = {}
    for decoder in ("dali", "pyav"):
        cfg = small_cfg(root, lst, **{"DATA.CPU_DECODER": decoder, "DATA.NUM_WORKERS": 2})
        loader = build_loader(cfg, "train")
        out[decoder] = _epoch(loader)
        loader.close()
    for (ia, va, _), (ib, vb, _) in zip(out["dali"], out["pyav"]):
        assert torch.equal(ia, ib)
        assert float((va - vb).abs().mean()) < 0.05  # ~2 pixel levels / std 57


def test_batches_ahead_bounds_the_decoding_done_while_nobody_takes_batches(data, tmp_path, monkeypatch):
    """While the consumer pauses, PyAV's decodes go on past what the graphs' queue holds (the feeder's look-ahead);
    ``batches_ahead`` bounds that work, so a benchmark that draws it untimed after a pause times none of it."""
    import time

    from dali_pipelines import decode_routes

    root, lst = data
    long_list = tmp_path / "long.txt"
    long_list.write_text(open(lst).read() * 4)  # enough batches that no epoch ends while it works ahead
    submitted = []
    real_submit = decode_routes.HostDecodeRoute.submit
    monkeypatch.setattr(decode_routes.HostDecodeRoute, "submit",
                        lambda self, s: submitted.append(s) or real_submit(self, s))
    cfg = small_cfg(root, str(long_list), **{"DATA.CPU_DECODER": "pyav", "DATA.NUM_WORKERS": 2,
                                             "DATA.PREFETCH": 2})
    loader = build_loader(cfg, "train")
    it = iter(loader)
    delivered = 2
    for _ in range(delivered):
        next(it)
    count, t0 = -1, time.monotonic()
    while count != len(submitted) and time.monotonic() - t0 < 30:  # until the graphs stop asking for more
        count = len(submitted)
        time.sleep(1.0)
    worked_ahead = len(submitted) // cfg.TRAIN.BATCH_SIZE - delivered
    # More than the graphs' queue plus the batch being assembled (all a benchmark used to draw after a pause).
    assert cfg.DATA.PREFETCH + 1 < worked_ahead <= loader.batches_ahead, (worked_ahead, loader.batches_ahead)
    loader.close()


def test_resume_after_runtime_quarantine_is_exact(tmp_path):
    """A run that quarantined a video mid-epoch, resumed in a new loader whose freshly built index already marks
    that video bad, continues with the same schedule (the saved 'excluded' rows) and the same substitutes."""
    root = str(tmp_path)
    lst = make_clip_dataset(root, [24, 30, 26, 33, 28, 25, 29, 31])
    cfg = small_cfg(root, lst)
    first = build_loader(cfg, "train")
    assert len(first) == 4
    victim = first.schedule.rows(2)[1]
    with open(first.index.entries[victim].path, "wb") as f:
        f.write(bytes(2000))
    reference, states = [], []
    for _ in range(2):
        for b in first:
            reference.append((b["index"].clone(), b["video"].clone()))
            states.append(first.state_dict())
    assert first.stats["skipped_videos"] == 1
    first.close()
    resumed_loader = build_loader(cfg, "train")  # new index: the victim is now bad from the start
    assert victim in resumed_loader.index.bad
    resumed_loader.load_state_dict(states[0])
    resumed = []
    for _ in range(2):
        resumed += [(b["index"].clone(), b["video"].clone()) for b in resumed_loader]
    assert len(resumed) == len(reference) - 1
    for (ri, rv), (gi, gv) in zip(reference[1:], resumed):
        assert torch.equal(ri, gi) and torch.equal(rv, gv)
    with pytest.raises(ValueError, match="seed"):
        resumed_loader.load_state_dict({**states[0], "seed": 1})
    resumed_loader.close()


def test_dense_and_random_sampling_options(data):
    root, lst = data
    cfg = small_cfg(root, lst, lst, **{"DATA.SAMPLING": "dense", "DATA.FRAME_INTERVAL": 2,
                                       "TEST.NUM_CLIP": 2, "TEST.SAMPLING": "random"})
    train = build_loader(cfg, "train")
    s = train.sample(3)
    assert np.all(np.diff(s.frames) == 2)  # 4 frames, 2 apart (40-frame clip: no clamping)
    assert sum(b["video"].shape[0] for b in train) == 2 * len(train)
    test = build_loader(cfg, "test")
    # random clip starts: two dense clips drawn from the row's own generator (TEST.SAMPLING reaches the draw)
    drawn = dense_multiview_indices(COUNTS[3], 4, 2, 2, "random", sample_rng(cfg.SEED, 0, 3))
    assert test.sample(3).frames.tolist() == np.unique(drawn).tolist()
    uniform = build_loader(small_cfg(root, lst, lst, **{"DATA.SAMPLING": "dense", "DATA.FRAME_INTERVAL": 2,
                                                         "TEST.NUM_CLIP": 2}), "test").sample(3)
    assert uniform.frames.tolist() == [0, 2, 4, 6, 33, 35, 37, 39]  # starts 0 and 40 - 7
    assert test.sample(3).frames.tolist() != uniform.frames.tolist()  # (the seed's draw is not the uniform one)
    assert sum(b["video"].shape[0] for b in test) == len(COUNTS)
    train.close()
    test.close()


def test_every_evaluation_pass_draws_the_clips_of_the_first(data):
    # A resumed run evaluates with a fresh loader: with TEST.SAMPLING random, a loader whose later passes drew other
    # clips would score the evaluations after a resume (best.pth, best_top1) on clips the uninterrupted run did not.
    root, lst = data
    test = build_loader(small_cfg(root, lst, lst, **{"TEST.NUM_CLIP": 2, "TEST.SAMPLING": "random"}), "test")
    frames = test.sample(3).frames.tolist()
    first, second = _epoch(test), _epoch(test)
    assert test.sample(3).frames.tolist() == frames
    assert [i.tolist() for i, _, _ in second] == [i.tolist() for i, _, _ in first]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, second))
    test.close()


_SECOND_LOADER_SCRIPT = """
import gc, os, sys, weakref
sys.path.insert(0, os.getcwd())
from dali_pipelines.loader import build_loader
from tests.video_fixtures import make_clip_dataset, small_cfg

def main(root):
    gc.disable()  # whatever close() leaves in a reference cycle stays alive
    lst = make_clip_dataset(root, [24, 30, 26, 33, 28])
    cfg = small_cfg(root, val_list=lst, **{"DATA.CPU_DECODER": "pyav", "DATA.NUM_WORKERS": 2})
    first = build_loader(cfg, "test")
    with open(first.index.entries[2].path, "wb") as f:  # breaks after indexing: quarantined while decoding
        f.write(bytes(3000))
    rows = [r for b in first for r in b["index"].tolist()]
    assert rows == [0, 1, 3, 4] and first.stats["skipped_videos"] == 1, rows
    pipelines = [weakref.ref(p) for p in first.pipelines]
    assert pipelines
    first.close()
    print("first pipeline released by close:", all(p() is None for p in pipelines))
    index = first.index
    second = build_loader(cfg, "test", index=index)
    rows = [r for b in second for r in b["index"].tolist()]
    print("second loader rows", rows)
    del second  # not closed: its pipeline and worker pool stay alive beside the third loader's
    third = build_loader(cfg, "test", index=index)
    rows = [r for b in third for r in b["index"].tolist()]
    third.close()
    print("third loader rows", rows)

if __name__ == "__main__":
    main(sys.argv[1])
"""


def test_second_pyav_loader_in_one_process_finishes(tmp_path):
    """PyAV-route loaders one after the other in one process, the first having quarantined a video: its close()
    releases its DALI pipeline at once (no reference cycle keeps it), and later loaders finish, even beside one
    that was never closed (decode workers never inherit DALI state: they are never forked). Run in a child
    process with a time limit, so a hang fails the test instead of stalling the suite."""
    import subprocess
    import sys

    script = tmp_path / "two_loaders.py"
    script.write_text(_SECOND_LOADER_SCRIPT)
    root = tmp_path / "data"
    root.mkdir()
    env = child_env()
    try:
        done = subprocess.run([sys.executable, str(script), str(root)], capture_output=True, text=True,
                              timeout=240, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the second loader did not finish within {e.timeout} s (hang)")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "first pipeline released by close: True" in done.stdout
    assert "second loader rows [0, 1, 3, 4]" in done.stdout and "third loader rows [0, 1, 3, 4]" in done.stdout


def test_killed_decode_worker_is_replaced_and_counted(data):
    """A PyAV decode worker killed mid-epoch (as by the OOM killer): the pool is restarted, the lost decodes are
    redone, the epoch delivers every sample with the same pixels as an undisturbed run, and the restart is
    counted."""
    import signal

    root, lst = data
    # One video per batch: when the first batch is out, the feeder has sent at most batches_ahead more to the
    # workers, so decodes are certain to remain for the pool with the killed worker (with two per batch the whole
    # epoch could be decoded already, and the kill would go unnoticed).
    cfg = small_cfg(root, val_list=lst, **{"DATA.CPU_DECODER": "pyav", "DATA.NUM_WORKERS": 2, "TEST.BATCH_SIZE": 1})
    reference = build_loader(cfg, "test")
    expected = [(b["index"].clone(), b["video"].clone()) for b in reference]
    reference.close()
    loader = build_loader(cfg, "test")
    assert len(loader) > 1 + loader.batches_ahead
    got = []
    for b in loader:
        got.append((b["index"].clone(), b["video"].clone()))
        if len(got) == 1:
            pids = loader.routes["pyav"].worker_pids()
            assert pids
            os.kill(pids[0], signal.SIGKILL)
    assert loader.stats["worker_restarts"] >= 1 and loader.stats["skipped_videos"] == 0
    assert len(got) == len(expected)
    for (ri, rv), (gi, gv) in zip(expected, got):
        assert torch.equal(ri, gi) and torch.equal(rv, gv)
    loader.close()


@pytest.mark.parametrize("decoder", ["dali", "pyav"])
def test_video_changed_or_shorter_than_indexed_is_quarantined_never_padded(tmp_path, decoder):
    """After indexing, one file is replaced by a shorter valid video (its size and mtime differ from the index's
    record) and another is shorter than the index says while looking unchanged (as a damaged tail the quick probe
    missed): on both routes both are quarantined by name, neither is delivered (no clip of repeated frames), and
    every other video comes out with its own frames."""
    import dataclasses

    from dali_pipelines.pyav_encode import write_video
    from tests.video_fixtures import pattern_frames

    root = str(tmp_path)
    lst = make_clip_dataset(root, [24, 30, 26, 33, 28])
    cfg = small_cfg(root, val_list=lst, **{"DATA.CPU_DECODER": decoder, "DATA.NUM_WORKERS": 1})
    reference = build_loader(cfg, "test")
    expected = {r: v.clone() for b in reference for r, v in zip(b["index"].tolist(), b["video"])}
    reference.close()

    loader = build_loader(cfg, "test")
    replaced, overstated = loader.index.entries[1], loader.index.entries[3]
    write_video(replaced.path, pattern_frames(6, seed=1), codec="vp9", gop=8)  # 6 frames where 30 were indexed
    info = loader.index.infos[3]
    loader.index.infos[3] = dataclasses.replace(info, num_frames=info.num_frames + 30)  # asks past frame 32
    assert loader.sample(3).frames.max() >= info.num_frames
    got = {r: v for b in loader for r, v in zip(b["index"].tolist(), b["video"])}
    assert sorted(got) == [0, 2, 4]
    for r in got:
        assert torch.equal(got[r], expected[r])
    skipped = loader.stats["skipped"]
    assert loader.stats["skipped_videos"] == 2 and len(skipped) == 2
    assert any(s.startswith(replaced.path) and "changed since it was indexed" in s for s in skipped), skipped
    assert any(s.startswith(overstated.path) and f"only {info.num_frames} frames" in s for s in skipped), skipped
    assert {1, 3} <= set(loader.index.bad)
    loader.close()
    # The changed file is probed again by the next build (the quarantine was about the change, not the new file).
    rebuilt = build_loader(cfg, "test")
    assert rebuilt.index.infos[1].num_frames == 6 and 3 in rebuilt.index.bad
    rebuilt.close()


def _stuck(path: str) -> str:
    """Put a named pipe with no writer in place of ``path`` (the file moves aside): reading it blocks, as a read
    from a network file system that stopped answering does. Returns where the file went."""
    aside = path + ".aside"
    os.rename(path, aside)
    os.mkfifo(path)
    return aside


@pytest.mark.parametrize("decoder", ["dali", "pyav"])
def test_a_video_whose_decode_does_not_end_is_left_out_of_this_run_only(tmp_path, decoder):
    """One video's decode never ends (its file is a pipe nobody writes): after DATA.VIDEO_TIMEOUT_S the decode
    workers are replaced, the video is left out by name, every other video comes out with its own pixels, and the
    index cache is left as it was: the next build uses the video again without probing it."""
    import dataclasses

    root = str(tmp_path)
    lst = make_clip_dataset(root, [24, 30, 26, 33, 28])
    # The other videos decode within the limit on a loaded machine too, also in the workers started anew: a fresh
    # worker's first video (its imports, DALI's pipeline) took more than 5 s with a load of 12 on 2 cores.
    limit = 30.0
    cfg = small_cfg(root, val_list=lst, **{"DATA.CPU_DECODER": decoder, "DATA.NUM_WORKERS": 2,
                                           "TEST.BATCH_SIZE": 1, "DATA.VIDEO_TIMEOUT_S": limit})
    reference = build_loader(cfg, "test")
    expected = {r: v.clone() for b in reference for r, v in zip(b["index"].tolist(), b["video"])}
    reference.close()

    loader = build_loader(cfg, "test")
    stuck = loader.index.entries[2]
    aside = _stuck(stuck.path)
    # size and mtime 0: not recorded, so the pipe is not refused as a changed file before it is read
    loader.index.infos[2] = dataclasses.replace(loader.index.infos[2], size=0, mtime_ns=0)
    got = {r: v.clone() for b in loader for r, v in zip(b["index"].tolist(), b["video"])}
    assert sorted(got) == [0, 1, 3, 4]
    for r in got:
        assert torch.equal(got[r], expected[r])
    assert loader.stats["skipped_videos"] == 1 and loader.stats["worker_restarts"] >= 1
    (line,) = loader.stats["skipped"]
    assert line.startswith(stuck.path) and f"did not decode within DATA.VIDEO_TIMEOUT_S = {limit:g} s" in line, line
    assert "left out of this run only" in line
    with open(loader.index.quarantine_path, encoding="utf-8") as f:
        assert f.read().startswith(stuck.rel_path + "\t")
    loader.close()
    os.remove(stuck.path)
    os.rename(aside, stuck.path)  # the same file, size and mtime as indexed
    rebuilt = build_loader(cfg, "test")
    assert 2 not in rebuilt.index.bad and rebuilt.index.probed == 0
    assert sorted(r for b in rebuilt for r in b["index"].tolist()) == [0, 1, 2, 3, 4]
    rebuilt.close()


def test_videos_that_do_not_decode_in_time_three_in_a_row_end_the_run(tmp_path):
    """Three videos in a row past DATA.VIDEO_TIMEOUT_S point at the storage, not at the videos: the loader stops
    with one message naming the limit and the last video, instead of leaving out one video after another."""
    import dataclasses

    root = str(tmp_path)
    lst = make_clip_dataset(root, [24, 30, 26, 33, 28])
    cfg = small_cfg(root, val_list=lst, **{"DATA.CPU_DECODER": "pyav", "DATA.NUM_WORKERS": 1,
                                           "TEST.BATCH_SIZE": 1, "DATA.VIDEO_TIMEOUT_S": 1.0})
    loader = build_loader(cfg, "test")
    for row in (0, 1, 2):  # the first ones: no video before them has to decode within the short limit
        _stuck(loader.index.entries[row].path)
        loader.index.infos[row] = dataclasses.replace(loader.index.infos[row], size=0, mtime_ns=0)
    rows = []
    limit = "3 videos in a row did not decode within DATA.VIDEO_TIMEOUT_S = 1 s"
    with pytest.raises(RuntimeError, match=limit) as e:
        for b in loader:
            rows += b["index"].tolist()
    assert loader.index.entries[2].path in str(e.value)
    assert rows == [] and loader.stats["skipped_videos"] == 2
    loader.close()


def _closes_by_itself(close, fifo: str) -> bool:
    """Call ``close()``; whether it returned by itself. Past a generous limit (a close that waits for the work stuck
    reading the pipe ``fifo``, for ever) the pipe gets a writer that leaves at once: the stuck read sees the end of
    its file and ends, and the test reports the hang instead of hanging."""
    import threading

    returned, gave_up = threading.Event(), threading.Event()

    def unstick():
        if not returned.wait(60):
            gave_up.set()
            os.close(os.open(fifo, os.O_WRONLY))  # blocks until the stuck reader has the pipe open

    threading.Thread(target=unstick, daemon=True).start()
    close()
    returned.set()
    return not gave_up.is_set()


def _has_reader(fifo: str) -> bool:
    """Whether a process (or thread) has the pipe ``fifo`` open for reading."""
    import errno

    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError as e:
        if e.errno == errno.ENXIO:
            return False
        raise
    return True


def test_closing_a_loader_does_not_wait_for_a_decode_that_does_not_end(tmp_path):
    """A run that stops (Ctrl-C, a stop signal, an error) while a decode worker is stuck on a video of a batch ahead
    (a file system that stopped answering) closes its loaders: close() waited for that decode, for ever, so the run
    never ended (and a stopped one never wrote the exit status its batch script requeues on). It ends the workers."""
    import dataclasses

    root = str(tmp_path)
    lst = make_clip_dataset(root, [24, 30, 26, 33])
    cfg = small_cfg(root, val_list=lst, **{"DATA.CPU_DECODER": "pyav", "DATA.NUM_WORKERS": 1, "DATA.PREFETCH": 1,
                                           "TEST.BATCH_SIZE": 1, "DATA.VIDEO_TIMEOUT_S": 0.0})
    loader = build_loader(cfg, "test")
    stuck = loader.index.entries[2].path
    _stuck(stuck)
    loader.index.infos[2] = dataclasses.replace(loader.index.infos[2], size=0, mtime_ns=0)
    batches = iter(loader)
    assert next(batches)["index"].tolist() == [0]  # batches 1 and 2 are being decoded ahead, 2 for ever
    workers = loader.routes["pyav"].worker_pids()
    assert len(workers) == 1
    batches.close()  # as a stop leaves the loop
    assert _closes_by_itself(loader.close, stuck), "close() waited for a decode that does not end"
    assert not _has_reader(stuck)  # the stuck worker is gone
    with pytest.raises(ProcessLookupError):
        os.kill(workers[0], 0)


class _FeederSchedule:
    """What a Feeder asks of the loader's schedule: the batches' samples, the counters, and replacements (dropped,
    as in testing, and recorded)."""

    def __init__(self, batches):
        self.batches, self.stats, self.replaced = batches, collections.Counter(), []

    def __len__(self):
        return len(self.batches)

    def batch(self, number):
        return self.batches[number]

    def is_good(self, row):  # nothing is quarantined before the feeder reports it
        return True

    def replace(self, sample, number, reason, remember=True):
        self.replaced.append((sample.video.path, number, reason, remember))
        return None


def test_a_read_that_does_not_end_leaves_its_thread_and_the_nvdec_route_goes_on(tmp_path):
    """The NVDEC route reads files in threads, which cannot be stopped: a read past the limit leaves its video out
    of this run (not remembered), the next reads get a new pool, and the stuck thread ends when its read does."""

    from dali_pipelines.draw import Sample, VideoRef
    from dali_pipelines.decode_routes import EncodedRoute
    from dali_pipelines.feeder import Feeder
    from dali_pipelines.routing import NVDEC

    from dali_pipelines.pyav_encode import write_video
    from tests.video_fixtures import pattern_frames

    good, stuck = str(tmp_path / "good.mp4"), str(tmp_path / "stuck.mp4")
    write_video(good, pattern_frames(8), codec="h264", gop=8)
    os.mkfifo(stuck)

    def sample(row, path):
        return Sample(VideoRef(row, path, 0, 8, 64, 48, "h264"), NVDEC, np.arange(4), params=None)

    schedule = _FeederSchedule([[sample(0, stuck)], [sample(1, good)]])
    route = EncodedRoute(NVDEC, workers=1)
    feeder = Feeder(schedule, {NVDEC: route}, 0, lookahead=1, wait_limit_s=1.0)
    batch = feeder.peek()
    assert batch.number == 1 and [s.video.path for s in batch.samples] == [good]
    assert feeder._parts["nvdec"][0][0].source.encoded.tobytes() == open(good, "rb").read()
    ((path, number, reason, remember),) = schedule.replaced
    assert (path, number, remember) == (stuck, 0, False)
    assert "did not read within DATA.VIDEO_TIMEOUT_S = 1 s" in reason
    assert schedule.stats["worker_restarts"] == 1
    os.close(os.open(stuck, os.O_WRONLY | os.O_NONBLOCK))  # the stuck read ends (an empty file)
    route.close()


def test_closing_the_nvdec_route_does_not_wait_for_a_read_that_does_not_end(tmp_path):
    """The NVDEC route's close() (a stopped run's loader closing) joined its read threads, one stuck for ever in a
    read (a file system that stopped answering): the run never ended. The stuck thread is left, a daemon."""
    import time

    from dali_pipelines.draw import Sample, VideoRef
    from dali_pipelines.decode_routes import EncodedRoute
    from dali_pipelines.routing import NVDEC

    stuck = str(tmp_path / "stuck.mp4")
    os.mkfifo(stuck)  # nobody writes: opening it for reading blocks
    route = EncodedRoute(NVDEC, workers=1)
    fut = route.submit(Sample(VideoRef(0, stuck, 0, 8, 64, 48, "h264"), NVDEC, np.arange(4), params=None))
    deadline = time.monotonic() + 60
    while not fut.running() and time.monotonic() < deadline:  # its thread has taken it
        time.sleep(0.01)
    assert fut.running()
    closed = _closes_by_itself(route.close, stuck)
    if closed:  # the test's own cleanup: the read ends (an empty file)
        os.close(os.open(stuck, os.O_WRONLY))
    assert closed, "close() waited for a read that does not end"
    assert fut.exception(timeout=60) is not None  # the stuck thread ended once its read did (an empty pipe)


def test_a_decode_submitted_as_its_worker_is_killed_is_redone_not_timed_out(monkeypatch):
    """A decode worker killed (SIGKILL, as by the OOM killer) just as the feeder submits the next decode: the
    pool's manager thread fails every decode it knows of, but the one being submitted is added after it did and
    never ends. Once the pool was replaced for an earlier decode, that decode was waited for until
    DATA.VIDEO_TIMEOUT_S and its video left out as one that does not decode (seen under load). It is redone on the
    new pool. The kill is made to land inside ``submit``, between the pool's broken check and the queueing."""
    import concurrent.futures.process as cfp
    import signal
    import time

    from dali_pipelines.draw import Sample, VideoRef
    from dali_pipelines.decode_routes import HostDecodeRoute
    from dali_pipelines.feeder import Feeder
    from dali_pipelines.routing import PYAV

    def sample(row):
        return Sample(VideoRef(row, f"clip_{row}.webm", 0, 8, 2, 2, "vp9"), PYAV, np.arange(row + 1), params=None)

    route = HostDecodeRoute(workers=1)
    calls = collections.Counter()

    def call(s):  # stands in for the decode: picklable functions the worker imports by name
        calls[s.video.row] += 1
        if s.video.row == 0 and calls[0] == 1:
            return time.sleep, 120  # still running when its worker is killed
        return np.zeros, (s.video.row + 1, 2, 2, 3), np.uint8

    route._call = call
    killed = []

    class KillingWorkItem(cfp._WorkItem):
        def __init__(self, future, fn, args, kwargs):
            # args: the decode and its arguments, as submit_to_pool hands them to its wrapper in the worker
            if args[:1] == (np.zeros,) and args[1][0] == 2 and not killed:  # row 1's first submission
                pool = route._pool
                killed.extend(route.worker_pids())
                os.kill(killed[0], signal.SIGKILL)
                deadline = time.monotonic() + 10  # where the manager never clears its list: no race to force
                # the manager thread marks the pool broken and fails what it has queued (row 0's decode)
                while (not pool._broken or pool._pending_work_items) and time.monotonic() < deadline:
                    time.sleep(0.01)
            super().__init__(future, fn, args, kwargs)

    monkeypatch.setattr(cfp, "_WorkItem", KillingWorkItem)
    schedule = _FeederSchedule([[sample(0)], [sample(1)]])
    feeder = Feeder(schedule, {PYAV: route}, 0, lookahead=1, wait_limit_s=5.0)
    delivered = []
    try:
        for batch, video in _drain(feeder):
            delivered.append((batch.number, video.shape[0]))
    finally:
        route.close(wait=False)
    assert killed and schedule.replaced == [] and delivered == [(0, 1), (1, 2)], schedule.replaced
    assert schedule.stats["worker_restarts"] == 1 and calls == {0: 2, 1: 2}


def _drain(feeder):
    """Each batch a Feeder delivers until the schedule ends, with its first host-decoded sample's frames, taking
    each off the feeder as DALI's external source would."""
    while True:
        try:
            batch = feeder.peek()
        except StopIteration:
            return
        yield batch, feeder._parts["host"].popleft()[0].source.video
        feeder.inflight.popleft()


def _crash_samples(tmp_path, names):
    """One PyAV-route sample per file named, each a small real video; a name holding ``crashing_jobs.CRASH_MARK``
    crashes its decode worker (SIGSEGV, as FFmpeg on a damaged file) once ``_crashing_decodes`` is in place."""
    from dali_pipelines.draw import Sample, VideoRef
    from dali_pipelines.pyav_encode import write_video
    from dali_pipelines.routing import PYAV
    from tests.video_fixtures import pattern_frames

    samples = []
    for row, name in enumerate(names):
        path = str(tmp_path / name)
        write_video(path, pattern_frames(8, 32, 24, seed=row), codec="vp9", gop=4)
        st = os.stat(path)
        video = VideoRef(row, path, 0, 8, 32, 24, "vp9", st.st_size, st.st_mtime_ns)
        samples.append(Sample(video, PYAV, np.arange(0, 8, 2), params=None))
    return samples


def _crashing_decodes(monkeypatch):
    from dali_pipelines import decode_routes
    from tests import crashing_jobs

    monkeypatch.setattr(decode_routes, "decode_indexed_frames", crashing_jobs.decode_indexed_frames)  # imported by name


def test_a_video_retried_beside_another_crasher_is_not_quarantined(tmp_path, monkeypatch):
    """Two videos that crash their decode worker, a good one between them, one worker, one batch decoded ahead. The
    first crasher's death takes the good video's decode with it, and the good video is tried again. That second try
    went to the new pool behind the second crasher's decode (queued there for the next batch) and died with it: the
    good video was quarantined for good, "the decoding worker process died twice on it" (and the deaths in a row
    then ended the run). A second try runs in a worker of its own: only the crashers are quarantined, each having
    died twice, the second time alone, and the good videos come out with their own frames."""
    from dali_pipelines.decode_routes import HostDecodeRoute
    from dali_pipelines.feeder import Feeder
    from dali_pipelines.pyav_io import decode_indexed_frames
    from dali_pipelines.routing import PYAV
    from tests.crashing_jobs import CRASH_MARK

    samples = _crash_samples(tmp_path, [f"first_{CRASH_MARK}.webm", "good_a.webm", f"second_{CRASH_MARK}.webm",
                                        "good_b.webm"])
    paths = [s.video.path for s in samples]
    expected = {s.video.path: decode_indexed_frames(s.video.path, s.frames, s.video.size, s.video.mtime_ns)
                for s in samples[1::2]}
    _crashing_decodes(monkeypatch)
    route = HostDecodeRoute(workers=1)
    schedule = _FeederSchedule([[s] for s in samples])
    feeder = Feeder(schedule, {PYAV: route}, 0, lookahead=1)
    delivered, error = [], None
    try:
        for batch, video in _drain(feeder):
            delivered.append((batch.number, batch.samples[0].video.path, video))
    except RuntimeError as e:  # the deaths in a row: checked after the quarantines, which show whom it blamed
        error = e
    finally:
        route.close()
    alone = "the decoding worker process died twice on it, the second time alone"
    assert schedule.replaced == [(paths[0], 0, alone, True), (paths[2], 2, alone, True)], schedule.replaced
    assert error is None, error
    assert [(n, p) for n, p, _ in delivered] == [(1, paths[1]), (3, paths[3])]
    for _, path, video in delivered:
        assert np.array_equal(video, expected[path])


def test_a_second_try_is_not_lost_to_its_worker_killed_while_idle(tmp_path, monkeypatch):
    """The worker kept for second tries is killed while it waits for the next one (as by the OOM killer): the next
    second try gets a new worker and decodes, where submitting it to the dead pool would fail it unrun, and the
    feeder would quarantine its video as one that died twice."""
    import signal
    import time

    from dali_pipelines.decode_routes import HostDecodeRoute
    from dali_pipelines.pyav_io import decode_indexed_frames
    from evautil.workers import pool_lost_a_worker, result_unless_a_worker_dies

    (s,) = _crash_samples(tmp_path, ["good.webm"])
    expected = decode_indexed_frames(s.video.path, s.frames, s.video.size, s.video.mtime_ns)
    route = HostDecodeRoute(workers=1)
    try:
        first = route.submit_alone(s)
        assert np.array_equal(result_unless_a_worker_dies(first.pool, first), expected)
        (pid,) = route.worker_pids()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not pool_lost_a_worker(first.pool) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool_lost_a_worker(first.pool)
        again = route.submit_alone(s)
        assert again.pool is not first.pool
        assert np.array_equal(result_unless_a_worker_dies(again.pool, again), expected)
    finally:
        route.close()


def _decoded(samples):
    """Each sample's frames as PyAV decodes them here, by path."""
    from dali_pipelines.pyav_io import decode_indexed_frames

    return {s.video.path: decode_indexed_frames(s.video.path, s.frames, s.video.size, s.video.mtime_ns)
            for s in samples}


def _feed(schedule, route, **feeder_args):
    """Drain a Feeder of ``route`` (the PyAV route) over ``schedule``: (batch number, path, frames) of each
    delivered batch's first sample and the error that ended it (None when the schedule ran out)."""
    from dali_pipelines.feeder import Feeder
    from dali_pipelines.routing import PYAV

    feeder = Feeder(schedule, {PYAV: route}, 0, **feeder_args)
    delivered = []
    try:
        for batch, video in _drain(feeder):
            delivered.append((batch.number, batch.samples[0].video.path, video))
    except RuntimeError as e:  # checked by the caller after what was quarantined, which shows whom it blamed
        return delivered, e
    finally:
        route.close()
    return delivered, None


def test_crashers_decoded_together_are_one_pool_death_not_three(tmp_path, monkeypatch):
    """Three videos that crash their decode worker in one batch, decoded in one pool: its one death broke all three
    decodes, and each broken decode counted as a death, so with the second tries (each alone, each a death) the
    count passed the limit and ended the run, "the PyAV decoding worker processes keep dying". A pool counts once:
    the crashers are quarantined, each having died alone, and the good video of the next batch comes out."""
    from dali_pipelines.decode_routes import HostDecodeRoute
    from tests.crashing_jobs import CRASH_MARK

    samples = _crash_samples(tmp_path, [f"{n}_{CRASH_MARK}.webm" for n in ("a", "b", "c")] + ["good.webm"])
    paths = [s.video.path for s in samples]
    expected = _decoded(samples[3:])
    _crashing_decodes(monkeypatch)
    schedule = _FeederSchedule([samples[:3], samples[3:]])
    delivered, error = _feed(schedule, HostDecodeRoute(workers=1), lookahead=1)
    alone = "the decoding worker process died twice on it, the second time alone"
    assert schedule.replaced == [(p, 0, alone, True) for p in paths[:3]], schedule.replaced
    assert error is None, error
    assert [(n, p) for n, p, _ in delivered] == [(1, paths[3])]
    assert np.array_equal(delivered[0][2], expected[paths[3]])
    assert schedule.stats["worker_restarts"] == 4  # the shared pool once, the second tries' pool three times


def test_workers_that_die_on_every_video_still_end_the_run(tmp_path, monkeypatch):
    """Workers that die on every video (a broken environment, not broken videos): the run ends with one message
    before the deaths in a row quarantine video after video."""
    from dali_pipelines.decode_routes import HostDecodeRoute
    from tests.crashing_jobs import CRASH_MARK

    samples = _crash_samples(tmp_path, [f"{i}_{CRASH_MARK}.webm" for i in range(8)])
    _crashing_decodes(monkeypatch)
    schedule = _FeederSchedule([[s] for s in samples])
    delivered, error = _feed(schedule, HostDecodeRoute(workers=1), lookahead=1)
    assert error is not None and "the PyAV decoding worker processes keep dying" in str(error)
    assert delivered == [] and 0 < len(schedule.replaced) < len(samples) / 2, schedule.replaced


class _SubstitutingSchedule(_FeederSchedule):
    """A _FeederSchedule that gives each replaced sample the substitute mapped to its path (as training does)."""

    def __init__(self, batches, substitutes):
        super().__init__(batches)
        self.substitutes = substitutes

    def replace(self, sample, number, reason, remember=True):
        super().replace(sample, number, reason, remember)
        return self.substitutes.get(sample.video.path)


def test_a_rebuilt_feeder_does_not_wait_behind_a_decode_of_the_old_one_that_does_not_end(tmp_path, monkeypatch):
    """The loader rebuilds its graphs after a graph failure: it cancels the old feeder (``Feeder.cancel``) and
    builds a new one on the same routes. A decode of a batch ahead that a worker had already taken could not be
    cancelled and kept the one worker: the new feeder's first video waited behind it, a decode that never ends, and
    was left out as one that did not decode within DATA.VIDEO_TIMEOUT_S, though it never ran. The cancel now
    replaces a pool that still runs a decode, and keeps one that runs none."""
    import time

    from dali_pipelines.decode_routes import HostDecodeRoute
    from dali_pipelines.feeder import Feeder
    from dali_pipelines.routing import PYAV
    from evautil.workers import jobs_started
    from tests.crashing_jobs import ANSWERS_WITHIN_S, STALL_MARK

    first, stalled, good = _crash_samples(tmp_path, ["first.webm", f"{STALL_MARK}.webm", "good.webm"])
    expected = _decoded([first, good])
    _crashing_decodes(monkeypatch)
    route = HostDecodeRoute(workers=1)
    limit = 2 * ANSWERS_WITHIN_S  # a fresh worker's first decode (its imports) too
    try:
        old = Feeder(_FeederSchedule([[first], [stalled]]), {PYAV: route}, 0, lookahead=1, wait_limit_s=limit)
        batch, video = next(_drain(old))  # batch 1's decode, which never ends, is handed to the pool meanwhile
        assert batch.samples[0].video.path == first.video.path and np.array_equal(video, expected[first.video.path])
        ahead = old._prepared[1].futures[0]
        # the worker's jobs: the start-up check's no-op, the first decode, then this one, which it takes once free
        deadline = time.monotonic() + 12 * ANSWERS_WITHIN_S
        while jobs_started(ahead.pool) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert jobs_started(ahead.pool) == 3 and not ahead.done()  # the worker runs it: it cannot be cancelled
        stuck_on = route.worker_pids()
        old.cancel()  # as the loader does before it rebuilds the graphs
        schedule = _FeederSchedule([[good]])
        new = Feeder(schedule, {PYAV: route}, 0, lookahead=0, wait_limit_s=limit)
        delivered = [(b.number, b.samples[0].video.path, v) for b, v in _drain(new)]
        assert schedule.replaced == [], schedule.replaced
        assert [(n, p) for n, p, _ in delivered] == [(0, good.video.path)]
        assert np.array_equal(delivered[0][2], expected[good.video.path])
        decoding = route.worker_pids()
        assert not set(decoding) & set(stuck_on)
        new.cancel()  # nothing in flight: the pool and its worker are kept
        assert route.worker_pids() == decoding
    finally:
        route.close()


def test_a_rebuilt_feeder_does_not_wait_behind_a_read_of_the_old_one_that_does_not_end(tmp_path):
    """The NVDEC route's twin of the test above: its reads run in threads, which cannot be stopped. A read of a
    batch ahead that a thread had already taken (a file system that stopped answering) cannot be cancelled either:
    the rebuilt feeder's first read would wait behind it in the route's one-thread pool and be left out as one that
    did not read within DATA.VIDEO_TIMEOUT_S, though it never ran. The cancel leaves that pool behind; the new
    feeder's read runs in a new one at once, and closing the route does not wait for the stuck thread."""
    import time

    from dali_pipelines.draw import Sample, VideoRef
    from dali_pipelines.decode_routes import EncodedRoute
    from dali_pipelines.feeder import Feeder
    from dali_pipelines.pyav_encode import write_video
    from dali_pipelines.routing import NVDEC
    from tests.crashing_jobs import ANSWERS_WITHIN_S
    from tests.video_fixtures import pattern_frames

    def sample(row, path, frames):
        return Sample(VideoRef(row, path, 0, 8, 64, 48, "h264"), NVDEC, np.array(frames), params=None)

    first, good = str(tmp_path / "first.mp4"), str(tmp_path / "good.mp4")
    for seed, path in enumerate((first, good)):
        write_video(path, pattern_frames(8, seed=seed), codec="h264", gop=8)
    stuck = str(tmp_path / "stuck.mp4")
    os.mkfifo(stuck)  # nobody writes: opening it for reading blocks
    route = EncodedRoute(NVDEC, workers=1)
    limit = 2 * ANSWERS_WITHIN_S
    try:
        old_schedule = _FeederSchedule([[sample(0, first, [0, 2, 4, 6])], [sample(1, stuck, [0, 1, 2, 3])]])
        old = Feeder(old_schedule, {NVDEC: route}, 0, lookahead=1, wait_limit_s=limit)
        assert old.peek().number == 0  # batch 1's read, which never ends, is handed to the pool meanwhile
        assert old._parts["nvdec"][0][0].source.encoded.tobytes() == open(first, "rb").read()
        ahead = old._prepared[1].futures[0]
        deadline = time.monotonic() + 60
        while not ahead.running() and time.monotonic() < deadline:  # the one read thread has taken it
            time.sleep(0.01)
        assert ahead.running()
        old.cancel()  # as the loader does before it rebuilds the graphs
        assert ahead.running() and old_schedule.stats["worker_restarts"] == 1  # a thread cannot be stopped
        schedule = _FeederSchedule([[sample(2, good, [1, 3, 5, 7])]])
        new = Feeder(schedule, {NVDEC: route}, 0, lookahead=0, wait_limit_s=limit)
        began = time.monotonic()
        try:
            batch = new.peek()
        except StopIteration:  # its one video left out
            batch = None
        took = time.monotonic() - began
        assert schedule.replaced == [] and batch is not None, schedule.replaced
        assert batch.number == 0 and [s.video.path for s in batch.samples] == [good]
        (record,) = new._parts["nvdec"].popleft()
        assert record.source.encoded.tobytes() == open(good, "rb").read()
        assert record.source.frames.tolist() == [1, 3, 5, 7] and int(record.index) == 2
        assert took < limit, took  # it did not wait behind the stuck read
        closed = _closes_by_itself(route.close, stuck)
        assert closed, "close() waited for a read that does not end"
        assert ahead.running()  # close returned with the read still stuck: it did not wait for it
    finally:
        _has_reader(stuck)  # a writer that comes and goes: the stuck read ends (an empty file)
        route.close()
    assert ahead.exception(timeout=60) is not None  # the stuck thread ended once its read did


def test_a_substitute_is_not_timed_out_behind_a_decode_of_a_batch_ahead_that_does_not_end(tmp_path, monkeypatch):
    """One decode worker; a video of the first batch fails (a changed file) and its substitute is decoded at once.
    It was queued in the pool behind the decodes of the batches ahead, one of which never ends, and was left out
    as a video that did not decode within DATA.VIDEO_TIMEOUT_S, though it never ran. It decodes in the worker kept
    for the decodes waited for at once; only the video that does not end is left out."""
    import dataclasses

    from dali_pipelines.decode_routes import HostDecodeRoute
    from tests.crashing_jobs import ANSWERS_WITHIN_S, STALL_MARK

    changed, sub, good, stalled = _crash_samples(tmp_path, ["changed.webm", "sub.webm", "good.webm",
                                                            f"{STALL_MARK}.webm"])
    changed = dataclasses.replace(changed, video=dataclasses.replace(changed.video, size=changed.video.size + 1))
    expected = _decoded([sub, good])
    _crashing_decodes(monkeypatch)
    schedule = _SubstitutingSchedule([[changed], [good], [stalled]], {changed.video.path: sub})
    limit = 2 * ANSWERS_WITHIN_S  # a fresh worker's first decode (its imports) too
    delivered, error = _feed(schedule, HostDecodeRoute(workers=1), lookahead=2, wait_limit_s=limit)
    assert error is None, error
    assert [(p, n, remember) for p, n, _, remember in schedule.replaced] == [
        (changed.video.path, 0, True), (stalled.video.path, 2, False)], schedule.replaced
    # the reason, logged and recorded beside the video's path, does not name it again
    reason = schedule.replaced[0][2]
    assert reason.startswith("VideoChangedError: ") and changed.video.path not in reason, reason
    assert f"did not decode within DATA.VIDEO_TIMEOUT_S = {limit:g} s" in schedule.replaced[1][2]
    assert [(n, p) for n, p, _ in delivered] == [(0, sub.video.path), (1, good.video.path)]
    for _, path, video in delivered:
        assert np.array_equal(video, expected[path])


def test_a_read_retried_after_a_read_that_did_not_end_is_not_timed_out_behind_another(tmp_path):
    """One read thread; a read that does not end (a file system that stopped answering) is past the limit: its
    pool is left behind and the reads queued there are cancelled. The first of them, submitted anew, was queued in
    the new pool behind the read of a batch ahead that does not end either, and was left out for its time. It
    is read in a thread of its own; only the two reads that do not end are left out."""
    from dali_pipelines.draw import Sample, VideoRef
    from dali_pipelines.decode_routes import EncodedRoute
    from dali_pipelines.feeder import Feeder
    from dali_pipelines.pyav_encode import write_video
    from dali_pipelines.routing import NVDEC
    from tests.crashing_jobs import ANSWERS_WITHIN_S
    from tests.video_fixtures import pattern_frames

    def sample(row, path):
        return Sample(VideoRef(row, path, 0, 8, 64, 48, "h264"), NVDEC, np.arange(4), params=None)

    goods = [str(tmp_path / f"good_{i}.mp4") for i in range(2)]
    for path in goods:
        write_video(path, pattern_frames(8), codec="h264", gop=8)
    stuck = [str(tmp_path / f"stuck_{i}.mp4") for i in range(2)]
    for path in stuck:
        os.mkfifo(path)  # nobody writes: opening it for reading blocks
    schedule = _FeederSchedule([[sample(0, stuck[0])], [sample(1, goods[0])], [sample(2, goods[1])],
                                [sample(3, stuck[1])]])
    route = EncodedRoute(NVDEC, workers=1)
    feeder = Feeder(schedule, {NVDEC: route}, 0, lookahead=2, wait_limit_s=ANSWERS_WITHIN_S)
    delivered = []
    try:
        while True:
            try:
                batch = feeder.peek()
            except StopIteration:
                break
            delivered.append((batch.number, feeder._parts["nvdec"].popleft()[0].source.encoded.tobytes()))
            feeder.inflight.popleft()
    finally:
        for path in stuck:
            _has_reader(path)  # a writer that comes and goes: a stuck read ends (an empty file)
        route.close()
    assert [(p, n, remember) for p, n, _, remember in schedule.replaced] == [(stuck[0], 0, False),
                                                                            (stuck[1], 3, False)], schedule.replaced
    assert delivered == [(1, open(goods[0], "rb").read()), (2, open(goods[1], "rb").read())]


def test_a_second_try_whose_worker_is_killed_before_it_starts_is_sent_again(tmp_path, monkeypatch):
    """A crasher takes two good videos of its batch down with it; their second tries run one by one in the worker
    kept for them. That worker is killed (as by the OOM killer) after the feeder looked at it and before the second
    good video's decode reaches it: the decode never ran, and the video was quarantined as one that died twice.
    A second try whose worker never started it is sent again, to a new worker, and decodes."""
    import signal
    import time

    from dali_pipelines import decode_routes
    from dali_pipelines.decode_routes import HostDecodeRoute
    from dali_pipelines.feeder import Feeder
    from evautil.workers import pool_processes
    from tests.crashing_jobs import ANSWERS_WITHIN_S, CRASH_MARK

    samples = _crash_samples(tmp_path, [f"a_{CRASH_MARK}.webm", "good_a.webm", "good_b.webm"])
    paths = [s.video.path for s in samples]
    expected = _decoded(samples[1:])
    _crashing_decodes(monkeypatch)
    route = HostDecodeRoute(workers=1)
    real_lost, killed = decode_routes.pool_lost_a_worker, []

    def lost_then_killed(pool):  # submit_alone's look at its idle worker; killed just after it
        lost = real_lost(pool)
        if not lost and pool is route._alone and not killed:
            (worker,) = pool_processes(pool)
            os.kill(worker.pid, signal.SIGKILL)
            killed.append(worker.pid)
            deadline = time.monotonic() + 12 * ANSWERS_WITHIN_S
            while not pool._broken and time.monotonic() < deadline:  # the pool has seen it: submit fails at once
                time.sleep(0.01)
        return lost

    monkeypatch.setattr(decode_routes, "pool_lost_a_worker", lost_then_killed)
    schedule = _FeederSchedule([samples])
    fed = Feeder(schedule, {"pyav": route}, 0, lookahead=0)
    try:
        batch = fed.peek()
        videos = [r.source.video for r in fed._parts["host"].popleft()]
    finally:
        route.close()
    assert killed
    assert schedule.replaced == [(paths[0], 0, "the decoding worker process died twice on it, the second time "
                                                "alone", True)], schedule.replaced
    assert [s.video.path for s in batch.samples] == paths[1:]
    for path, video in zip(paths[1:], videos):
        assert np.array_equal(video, expected[path])


def test_an_error_the_main_process_cannot_unpickle_quarantines_its_video_not_the_workers(tmp_path, monkeypatch):
    """A decode that fails with an exception that cannot be rebuilt from its pickle (a library's exception class
    whose constructor wants other arguments) broke the pool (concurrent.futures treats what it cannot read as a
    dead worker): the video was quarantined as one whose worker "died twice", and such videos counted as worker
    deaths. The worker sends it as its nearest built-in class, with its name and message: the video is
    quarantined for its own error, its neighbours decode, and no worker is restarted."""
    from dali_pipelines.decode_routes import HostDecodeRoute
    from tests.crashing_jobs import UNPICKLABLE_MARK

    samples = _crash_samples(tmp_path, ["good_a.webm", f"{UNPICKLABLE_MARK}.webm", "good_b.webm"])
    paths = [s.video.path for s in samples]
    expected = _decoded([samples[0], samples[2]])
    _crashing_decodes(monkeypatch)
    schedule = _FeederSchedule([[s] for s in samples])
    delivered, error = _feed(schedule, HostDecodeRoute(workers=1), lookahead=1)
    assert error is None, error
    assert schedule.replaced == [(paths[1], 1, f"ValueError: DamagedStream: {paths[1]}: the stream is damaged",
                                  True)], schedule.replaced
    assert [(n, p) for n, p, _ in delivered] == [(0, paths[0]), (2, paths[2])]
    for _, path, video in delivered:
        assert np.array_equal(video, expected[path])
    assert schedule.stats["worker_restarts"] == 0


_READ_FOR_EVER = """
import sys
import numpy as np
from dali_pipelines.draw import Sample, VideoRef
from dali_pipelines.decode_routes import EncodedRoute
from dali_pipelines.routing import NVDEC

route = EncodedRoute(NVDEC, workers=1)
fut = route.submit(Sample(VideoRef(0, sys.argv[1], 0, 8, 64, 48, "h264"), NVDEC, np.arange(4), params=None))
route.restart_pool(fut)  # as the feeder does when the read is overdue
print("the run's work is done", flush=True)
"""


def test_a_read_that_does_not_end_does_not_keep_the_process_from_ending(tmp_path):
    """A thread stuck in a read (a file system that stopped answering) cannot be stopped, and Python joins a
    ThreadPoolExecutor's threads when it exits: a run that had left such a video out finished its work and then
    never ended. The NVDEC route's read threads are daemons now: the process ends."""
    import subprocess
    import sys

    stuck = str(tmp_path / "stuck.mp4")
    os.mkfifo(stuck)  # nobody writes: opening it for reading blocks
    # the old pool: the child never ends, and subprocess.run kills it after the timeout and raises
    done = subprocess.run([sys.executable, "-c", _READ_FOR_EVER, stuck], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "the run's work is done\n", done.stderr


def test_the_split_index_names_data_num_classes_with_a_label_outside_it(tmp_path):
    # It named "num_classes", the index builder's argument, not the key the user sets.
    lst = tmp_path / "train.txt"
    lst.write_text("a.mp4 0\nb.mp4 5\n")
    with pytest.raises(DataError, match=r"as DATA\.NUM_CLASSES is 3 .*set DATA\.NUM_CLASSES to the number of classes"):
        build_split_index(small_cfg(str(tmp_path), train_list=str(lst)), "train")


def test_a_loader_told_the_batches_an_epoch_uses_reads_none_after_them_and_trains_the_same(tmp_path, monkeypatch):
    """TRAIN.ACCUMULATION_STEPS 2 over 3 batches: one optimizer step, and a third micro-batch that the training loop
    drops. Told the 2 batches the steps use (``use_batches``, as runner.train does), the loader hands the decode
    workers no video of the third, counts none of its clips and quarantines none of its bad videos; the step's loss
    and the weights are those of a loader that decoded it, and a position at the limit ends the epoch."""
    from dali_pipelines import decode_routes
    from engine.distributed import DistContext
    from engine.metrics import MetricLogger
    from engine.train_epoch import TrainOptions, TrainState, train_one_epoch

    read = []
    for name in ("submit", "submit_alone"):
        real = getattr(decode_routes.HostDecodeRoute, name)
        monkeypatch.setattr(decode_routes.HostDecodeRoute, name,
                            lambda self, s, real=real: read.append(s.row) or real(self, s))
    root = str(tmp_path)
    cfg = small_cfg(root, make_clip_dataset(root, [24, 30, 26, 33, 28, 25, 29]))
    scheduler = type("Scheduler", (), {"step_update": lambda self, t: None})()

    def train(loader, out):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 32 * 32, 3))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        metrics = MetricLogger(str(tmp_path / out), tensorboard=False, nvml=False, progress_bar=False)
        read.clear()
        try:
            got = train_one_epoch(model, loader, optimizer, scheduler, torch.nn.CrossEntropyLoss(), TrainState(),
                                  TrainOptions(epochs=1, steps_per_epoch=1, accumulation_steps=2), metrics,
                                  DistContext())
        finally:
            metrics.close()
        return got["loss"], model.state_dict(), sorted(read)

    whole = build_loader(cfg, "train")
    assert len(whole) == 3
    planned = [whole.schedule.rows(n) for n in range(3)]
    ref_loss, ref_weights, ref_read = train(whole, "whole")
    assert ref_read == sorted(planned[0] + planned[1] + planned[2]) and whole.stats["samples_dali_cpu"] == 6
    whole.close()

    used = build_loader(cfg, "train")
    victim = planned[2][0]  # broken since the index was built, in the batch the step does not use
    with open(whole.index.entries[victim].path, "wb") as f:
        f.write(bytes(2000))
    used.use_batches(2)
    assert len(used) == 2 and used.plan_fingerprint() == whole.plan_fingerprint()
    loss, weights, got_read = train(used, "used")
    assert got_read == sorted(planned[0] + planned[1])  # no clip of the dropped batch read or decoded
    assert used.stats["samples_dali_cpu"] == 4 and used.stats["skipped_videos"] == used.stats["substituted"] == 0
    assert loss == ref_loss and all(torch.equal(weights[k], ref_weights[k]) for k in ref_weights)
    assert used.state_dict()["epoch"] == 1 and used.state_dict()["position"] == 0
    used.close()

    resumed = build_loader(cfg, "train", index=used.index)  # from a checkpoint saved at the epoch's last step
    resumed.use_batches(2)
    resumed.load_state_dict({"epoch": 0, "position": 2})
    assert [b for b in resumed] == [] and resumed.state_dict()["epoch"] == 1
    assert resumed.stats["skipped_videos"] == 0 and resumed.stats["samples_dali_cpu"] == 0
    resumed.close()
    with build_loader(small_cfg(root, val_list=cfg.DATA.TRAIN_FILE), "val") as val:
        with pytest.raises(ValueError, match="val loader scores every planned batch"):
            val.use_batches(1)
