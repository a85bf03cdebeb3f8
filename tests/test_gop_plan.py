"""The GOP-skip planner on hand-made packet tables (no video files): clean cuts and packet runs."""

from __future__ import annotations

from dali_pipelines.gop_plan import clean_cuts, plan_runs, presentation_order


def test_vp9_keyframes_are_cuts_and_runs_stop_at_the_last_wanted_frame():
    keys = [True, False, False, False, True, False, False, False, True, False]
    ranks = list(range(10))
    cuts = clean_cuts("vp9", None, keys, None, ranks)
    assert cuts == [0, 4, 8]
    # frame 6 needs packets 4..6; frame 9 needs 8..9; nothing of GOP 0
    assert plan_runs(cuts, ranks, ranks, [6, 9], merge_gap=0) == [(4, 6, 4, 6), (8, 9, 8, 9)]
    # runs closer than the merge gap become one run through the skipped packets
    assert plan_runs(cuts, ranks, ranks, [5, 9], merge_gap=4) == [(4, 9, 4, 9)]
    # a stream that does not open on a keyframe is never cut
    assert clean_cuts("vp9", None, [False] + keys[1:], None, ranks) == [0]


def test_reordered_stream_cuts_only_where_decode_and_display_order_agree():
    # decode order I0 P3 B1 B2 | I4 P7 B5 B6 : ranks (display numbers) per decode position
    ranks = [0, 3, 1, 2, 4, 7, 5, 6]
    order = [0, 2, 3, 1, 4, 6, 7, 5]  # packet of each display frame
    keys = [True, False, False, False, True, False, False, False]
    assert clean_cuts("vp9", None, keys, None, ranks) == [0]  # VP9 should not reorder: skip nothing
    # H.264 with IDR pictures (NAL type 5) at decode positions 0 and 4, 4-byte length prefixes (avcC)
    avcc = bytes([1, 100, 0, 30, 0xFF])

    def nal(kind: int) -> bytes:
        return (2).to_bytes(4, "big") + bytes([kind, 0])

    payloads = [nal(5), nal(1), nal(1), nal(1), nal(5), nal(1), nal(1), nal(1)]
    cuts = clean_cuts("h264", avcc, keys, payloads, ranks)
    assert cuts == [0, 4]
    # frame 6 (decode position 7) needs the run from the IDR at 4 through every packet shown up to frame 6
    assert plan_runs(cuts, ranks, order, [6], merge_gap=0) == [(4, 7, 4, 6)]
    # frame 2 alone: from 0, through position 3 (frame 2 is decoded after frame 3's packet)
    assert plan_runs(cuts, ranks, order, [2], merge_gap=0) == [(0, 3, 0, 2)]


def test_presentation_order_numbers_shown_packets_by_timestamp():
    # decode order I P B B (pts 0 3 1 2) plus a discarded packet: frames 0..3 are packets 0, 2, 3, 1
    order, ranks = presentation_order([0, 3, 1, 2, -5], [True, True, True, True, False])
    assert order == [0, 2, 3, 1] and ranks == [0, 3, 1, 2, -1]
    assert presentation_order([0, 2, 2], [True, True, True]) is None  # two frames with one timestamp
    assert presentation_order([0, 2, 2], [True, True, False]) == ([0, 1], [0, 1, -1])
