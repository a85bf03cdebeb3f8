"""The pure parts of the loader, without DALI pipelines or video files: the epoch plan, substitutes, the
per-sample draw and the graph's record layout."""

from __future__ import annotations

import numpy as np
import pytest

from dali_pipelines import augment, sampling
from dali_pipelines.draw import DrawSettings, VideoRef, draw_sample
from dali_pipelines.graph_records import (DecodedSource, EncodedSource, SampleRecord, TestParams, TrainParams,
                                          batch_columns)
from dali_pipelines.pipelines import record_layout
from dali_pipelines.schedule import epoch_plan, substitute_row

ROWS = np.array([0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 12], dtype=np.int64)  # 3 and 11 excluded


def test_the_plan_is_cut_once_per_epoch_and_excluded_rows_are_replaced_whole(monkeypatch):
    from types import SimpleNamespace

    import dali_pipelines.schedule as schedule_mod

    cut = []
    real = schedule_mod.epoch_plan
    monkeypatch.setattr(schedule_mod, "epoch_plan", lambda rows, *a: cut.append(rows.tolist()) or real(rows, *a))
    index = type("Index", (), {"bad": {3: "unreadable", 11: "unreadable"}, "quarantined_at_run": set(),
                               "__len__": lambda self: 13})()
    schedule = schedule_mod.Schedule(index, SimpleNamespace(training=True), seed=5, batch_size=2, rank=0,
                                     world_size=1, route_of=lambda video: "pyav", list_desc="train.txt")
    for number in range(5):  # the loader asks for a batch's rows several times a batch
        assert len(schedule.rows(number)) == 2
    assert cut == [ROWS.tolist()]
    with pytest.raises(AttributeError):  # changed in place, the plan would not follow
        schedule.excluded.add(4)
    schedule.excluded = [3]  # a resumed loader restores the rows its run excluded
    schedule.rows(0)
    assert len(cut) == 2 and 11 in cut[1] and 3 not in cut[1]
    schedule.epoch = 1
    schedule.rows(0)
    assert len(cut) == 3


def test_a_video_quarantined_earlier_is_counted_once_over_the_ranks_that_leave_it_out():
    """Each rank's test loader counts the videos of its own share another loader quarantined, before its build or
    after it (then once, however many evaluations drop it): with every rank's training passing its quarantines to
    that rank's validation index, a video two ranks quarantined was counted twice in the summed eval line."""
    from types import SimpleNamespace

    from dali_pipelines.schedule import Schedule

    class Index:
        def __init__(self) -> None:
            self.bad, self.quarantined_at_run = {3: "decode failed"}, {3}  # both ranks' training found it

        def __len__(self) -> int:
            return 8

        def is_good(self, row: int) -> bool:
            return row not in self.bad

    indexes = [Index(), Index()]
    ranks = [Schedule(ix, SimpleNamespace(training=False), seed=0, batch_size=8, rank=r, world_size=2,
                      route_of=lambda video: "pyav", list_desc="val.txt") for r, ix in enumerate(indexes)]
    assert [s.stats["quarantined_earlier"] for s in ranks] == [0, 1]  # row 3 is rank 1's to score
    for s in ranks:
        s.sample = lambda row, substitute_for=None: row
    indexes[0].bad[5] = indexes[1].bad[5] = "decode failed"  # quarantined by training after the loaders' build
    for _ in range(2):  # two evaluations leave it out
        assert [s.batch(0) for s in ranks] == [[0, 2, 4, 6], [1, 7]]
    assert [s.stats["quarantined_earlier"] for s in ranks] == [0, 2]


@pytest.mark.parametrize("drawn_before_the_failure", [False, True])
def test_each_line_of_a_file_that_fails_while_testing_counts_as_a_skipped_video(drawn_before_the_failure):
    """Lines 2 and 5 name one file, which fails at line 2: line 5 is left out too and counted as the skipped video
    it is (it was counted as quarantined earlier, or not at all when its batch was drawn before the failure), once
    however many evaluations leave it out; the listed lines still add up to the scored ones and the counts."""
    from types import SimpleNamespace

    from dali_pipelines.schedule import Schedule

    class Index:
        def __init__(self) -> None:
            self.bad: dict[int, str] = {}
            self.quarantined_at_run: set[int] = set()

        def __len__(self) -> int:
            return 8

        def is_good(self, row: int) -> bool:
            return row not in self.bad

        def path(self, row: int) -> str:
            return "a.mp4" if row in (2, 5) else f"v{row}.mp4"

        def quarantine(self, row: int, reason: str, remember: bool = True) -> None:
            for r in (row, *({2, 5} - {row} if row in (2, 5) else ())):  # every line naming the file
                self.bad[r] = reason
                self.quarantined_at_run.add(r)

    schedule = Schedule(Index(), SimpleNamespace(training=False), seed=0, batch_size=2, rank=0, world_size=1,
                        route_of=lambda video: "pyav", list_desc="val.txt")
    schedule.sample = lambda row, substitute_for=None: SimpleNamespace(row=row, substitute_for=substitute_for)
    scored = []
    for evaluation in range(2):
        drawn = {0: schedule.batch(0), 1: schedule.batch(1)}
        if drawn_before_the_failure:
            drawn[2] = schedule.batch(2)  # (the loader draws batches ahead of the one it decodes)
        for number in range(4):
            for sample in drawn.get(number) or schedule.batch(number):
                if evaluation == 0 and sample.row == 2:
                    schedule.replace(sample, number, "decode failed")  # None: dropped
                elif not schedule.is_good(sample.row):
                    schedule.replace(sample, number, "quarantined earlier in this epoch")
                else:
                    scored.append(sample.row)
        stats = schedule.stats
        assert (stats["skipped_videos"], stats["quarantined_earlier"], stats["skipped"]) == \
            (2, 0, ["a.mp4: decode failed"])
    assert scored == [0, 1, 3, 4, 6, 7] * 2  # 8 lines: 6 scored, 2 skipped


def test_training_plan_is_one_permutation_cut_into_equal_rank_shares():
    plans = [epoch_plan(ROWS, seed=5, epoch=2, batch_size=2, rank=r, world_size=2, training=True) for r in range(2)]
    assert all(len(p.batches) == 2 and all(len(b) == 2 for b in p.batches) for p in plans)  # 11 // 4 = 2
    assert np.array_equal(plans[0].order, plans[1].order)
    assert sorted(plans[0].order.tolist()) == ROWS.tolist()
    mine = [np.concatenate(p.batches).tolist() for p in plans]
    assert not set(mine[0]) & set(mine[1])
    # rank r takes every world-th row of the permutation's first whole global batches, from r
    assert mine[0] == plans[0].order[:8][0::2].tolist() and mine[1] == plans[0].order[:8][1::2].tolist()
    # the order is a function of (seed, epoch) only
    again = epoch_plan(ROWS[::-1], seed=5, epoch=2, batch_size=2, rank=0, world_size=2, training=True)
    assert np.array_equal(again.order, plans[0].order)
    other = epoch_plan(ROWS, seed=5, epoch=3, batch_size=2, rank=0, world_size=2, training=True)
    assert not np.array_equal(other.order, plans[0].order)


def test_test_plan_covers_every_row_once_in_list_order():
    plans = [epoch_plan(ROWS, seed=5, epoch=0, batch_size=4, rank=r, world_size=3, training=False) for r in range(3)]
    assert [b.tolist() for b in plans[0].batches] == [[0, 6, 9, 12]]  # list rows 0::3 (3 is excluded)
    assert [b.tolist() for b in plans[2].batches] == [[2, 5, 8]]  # list rows 2::3 (11 is excluded)
    got = sorted(int(r) for p in plans for b in p.batches for r in b)
    assert got == ROWS.tolist()


def test_a_ranks_test_share_does_not_depend_on_what_the_other_ranks_left_out():
    """Rank 1 quarantined row 5 during an earlier evaluation (or its index of the list differs): rank 0, which
    still counts row 5 usable, must not shift its share, else rows are scored twice and others never."""
    on_rank = {0: ROWS, 1: ROWS[ROWS != 5]}
    plans = [epoch_plan(on_rank[r], seed=5, epoch=0, batch_size=2, rank=r, world_size=2, training=False)
             for r in range(2)]
    got = [int(r) for p in plans for b in p.batches for r in b]
    assert sorted(got) == [r for r in ROWS.tolist() if r != 5]  # each once; 5 left out by the rank it falls to


def test_substitute_is_the_next_good_row_in_the_epoch_order():
    order = np.array([5, 2, 9, 7, 1])
    good = {2, 7, 1}
    assert substitute_row(order, 5, good.__contains__) == 2
    assert substitute_row(order, 9, good.__contains__) == 7
    assert substitute_row(order, 1, {5}.__contains__) == 5  # wraps around
    assert substitute_row(order, 1, set().__contains__) is None


VIDEO = VideoRef(row=3, path="videos/x.webm", label=1, num_frames=40, width=96, height=72, codec="vp9")


def test_train_draw_is_a_pure_function_of_seed_epoch_row():
    s = DrawSettings(training=True, num_frames=4, input_size=32)
    a = draw_sample(s, VIDEO, seed=7, epoch=1, route="dali_cpu")
    b = draw_sample(s, VIDEO, seed=7, epoch=1, route="dali_cpu")
    assert a.route == "dali_cpu" and a.row == 3 and a.label == 1
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.params.roi_start, b.params.roi_start)
    # the same frames and augmentation as drawing by hand from the sample's own generator
    rng = sampling.sample_rng(7, 1, 3)
    frames = sampling.segment_indices(40, 4, rng)
    aug = augment.draw_train_aug(rng, 96, 72, 32, 4)
    assert a.frames.tolist() == frames.tolist()
    assert np.array_equal(a.params.roi_end, aug.roi_end) and int(a.params.mirror) == aug.mirror
    assert float(a.params.hue) == float(aug.hue)
    c = draw_sample(s, VIDEO, seed=7, epoch=2, route="dali_cpu")
    assert not (np.array_equal(a.frames, c.frames) and np.array_equal(a.params.roi_start, c.params.roi_start))


def test_test_draw_decodes_the_union_once_and_lays_out_views():
    s = DrawSettings(training=False, num_frames=4, input_size=32, num_clip=2, num_crop=3)
    t = draw_sample(s, VIDEO, seed=7, epoch=0, route="pyav")
    clips = sampling.multiview_indices(40, 4, 2)
    assert t.frames.tolist() == np.unique(clips).tolist()
    u = len(t.frames)
    # view (crop c, clip k), frame i: crop c's copy of the union, at the position of clip k's frame i
    order = t.params.new_order.reshape(3, 2, 4)
    for c in range(3):
        for k in range(2):
            assert (t.frames[order[c, k] - c * u]).tolist() == clips[k].tolist()
    rois = augment.test_view_rois(96, 72, 32, 3)
    assert t.params.roi_start.shape == (3, 2)
    assert np.array_equal(t.params.roi_start[2], rois[2][0]) and np.array_equal(t.params.roi_end[1], rois[1][1])


def test_record_layout_follows_the_dataclasses():
    names = [n for n, _ in record_layout(TrainParams, "nvdec")]
    assert names == ["encoded", "frames", "colour", "roi_start", "roi_end", "mirror", "brightness", "contrast",
                     "saturation", "hue", "color_ops", "index"]
    specs = dict(record_layout(TrainParams, "pyav", per_frame_jitter=True))
    assert "encoded" not in specs and specs["video"].layout == "FHWC" and specs["video"].ndim == 4
    assert specs["hue"].ndim == 1 and specs["mirror"].ndim == 0  # per-frame jitter adds a dimension
    assert specs["color_ops"].ndim == 1  # one colour program per clip, even with per-frame factors
    test = dict(record_layout(TestParams, "nvdec"))
    assert list(test) == ["encoded", "frames", "colour", "roi_start", "roi_end", "new_order", "index"]
    assert test["roi_start"].ndim == 2
    with pytest.raises(ValueError, match="unknown decode route 'npu'"):
        record_layout(TrainParams, "npu")
    # one graph serving both CPU routes: both hand it decoded frames (the workers decode), one layout
    both = record_layout(TrainParams, ("dali_cpu", "pyav"))
    assert both == record_layout(TrainParams, "pyav") == record_layout(TrainParams, "dali_cpu")
    with pytest.raises(ValueError, match="not served by one graph"):
        record_layout(TrainParams, ("nvdec", "dali_cpu"))


def test_batch_columns_match_the_layout():
    s = DrawSettings(training=False, num_frames=4, input_size=32, num_crop=3)
    samples = [draw_sample(s, VIDEO, 7, 0, "nvdec") for _ in range(2)]
    records = [SampleRecord(EncodedSource(np.arange(5, dtype=np.uint8), x.frames.astype(np.int32)), x.params,
                            np.array(r, np.int32)) for r, x in enumerate(samples)]
    cols = batch_columns(records)
    layout = record_layout(TestParams, "nvdec")
    assert len(cols) == len(layout)
    for (name, spec), col in zip(layout, cols):
        assert len(col) == 2
        assert all(np.asarray(v).dtype == spec.dtype and np.ndim(v) == spec.ndim for v in col), name
    assert [int(v) for v in cols[-1]] == [0, 1]
    mixed = records[:1] + [SampleRecord(DecodedSource(np.zeros((1, 2, 2, 3), np.uint8)), samples[1].params,
                                        np.array(1, np.int32))]
    with pytest.raises(ValueError, match="mixes record kinds"):
        batch_columns(mixed)
