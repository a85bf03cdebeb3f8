"""The GOP-skip planner on hand-made packet tables (no video files): clean cuts and packet runs."""

from __future__ import annotations

from dali_pipelines.gop_plan import clean_cuts, go_on, plan_runs, presentation_order


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


def _length_prefixed(nal_types: list[int], codec: str, length_size: int = 4) -> bytes:
    """One packet of NAL units of the given types (a 2-byte body each), MP4-style: each behind its length."""
    out = b""
    for kind in nal_types:
        head = bytes([0x60 | kind]) if codec == "h264" else bytes([kind << 1, 1])  # H.264: nal_ref_idc 3
        body = head + b"\x00" * (2 - len(head) + 1)
        out += len(body).to_bytes(length_size, "big") + body
    return out


def _avcc(length_size: int) -> bytes:
    return bytes([1, 100, 0, 30, 0xFC | (length_size - 1)])


def _hvcc(length_size: int) -> bytes:
    return bytes([1] + [0] * 20 + [0xFC | (length_size - 1), 0])  # lengthSizeMinusOne in byte 21


def test_h264_cuts_are_idr_pictures_whatever_the_length_field_size():
    """Only IDR pictures (NAL type 5) flagged as keyframes cut an H.264 stream: a non-IDR I picture (type 1, which
    encoders flag as a keyframe too, e.g. open GOPs or intra refresh) lets later pictures refer across it."""
    ranks = list(range(6))
    keys = [True, False, True, False, True, False]
    for size in (1, 2, 4):
        payloads = [_length_prefixed(t, "h264", size) for t in ([5], [1], [1], [1], [5], [1])]
        assert clean_cuts("h264", _avcc(size), keys, payloads, ranks) == [0, 4], size
    # a length field read with the wrong size does not parse: nothing is cut (never a wrong cut)
    payloads = [_length_prefixed(t, "h264", 4) for t in ([5], [1], [1], [1], [5], [1])]
    assert clean_cuts("h264", _avcc(2), keys, payloads, ranks) == [0]
    # NAL types above 15 (here 21, a 3D-AVC slice) are no IDR, whatever their low bits
    assert clean_cuts("h264", _avcc(4), keys, payloads[:4] + [_length_prefixed([21], "h264")] + payloads[5:],
                      ranks) == [0]
    # an IDR not flagged as a keyframe by the demuxer is not taken either
    assert clean_cuts("h264", _avcc(4), [True, False, True, False, False, False], payloads, ranks) == [0]


def test_hevc_cuts_are_irap_pictures_and_read_the_length_size_from_hvcc():
    ranks = list(range(8))
    keys = [True] * 8
    kinds = [[19], [1], [16], [1], [21], [0], [20], [22]]  # IDR_W_RADL, TRAIL_R, BLA_W_LP, ..., CRA, RSV_IRAP_22
    for size in (2, 4):
        payloads = [_length_prefixed(t, "hevc", size) for t in kinds]
        assert clean_cuts("hevc", _hvcc(size), keys, payloads, ranks) == [0, 2, 4, 6], size
    # an avcC-sized record is not an hvcC: its length size is unknown, nothing is cut
    assert clean_cuts("hevc", _avcc(4), keys, [_length_prefixed(t, "hevc") for t in kinds], ranks) == [0]


def test_a_cra_whose_leading_pictures_are_shown_before_it_is_not_a_cut():
    """Decode order CRA0 P | CRA2 RASL RASL: the two pictures decoded after the second CRA are shown before it
    (ranks 2, 3 before its 4): starting there would lose them, so only the stream's start is a cut."""
    ranks = [0, 1, 4, 2, 3]
    payloads = [_length_prefixed(t, "hevc") for t in ([21], [1], [21], [8], [8])]
    assert clean_cuts("hevc", _hvcc(4), [True, False, True, False, False], payloads, ranks) == [0]


def test_in_band_parameter_sets_allow_only_packets_that_carry_them_as_cuts():
    """SPS/PPS repeated in the packets (not only in avcC): skipping a packet that carries them would lose them, so
    an IDR may start a run only when it carries its own."""
    ranks = list(range(6))
    keys = [True, False, True, False, True, False]
    payloads = [_length_prefixed(t, "h264") for t in ([7, 8, 5], [1], [5], [1], [7, 8, 5], [1])]
    assert clean_cuts("h264", _avcc(4), keys, payloads, ranks) == [0, 4]
    hevc = [_length_prefixed(t, "hevc") for t in ([32, 33, 34, 19], [1], [19], [1], [32, 33, 34, 19], [1])]
    assert clean_cuts("hevc", _hvcc(4), keys, hevc, ranks) == [0, 4]
    for carried in ([8], [32]):  # any one of them in band is enough (a PPS, a VPS)
        codec = "h264" if carried == [8] else "hevc"
        idr = [5] if codec == "h264" else [19]
        other = [_length_prefixed(t, codec) for t in (carried + idr, [1], idr, [1], carried + idr, [1])]
        extradata = _avcc(4) if codec == "h264" else _hvcc(4)
        assert clean_cuts(codec, extradata, keys, other, ranks) == [0, 4], carried


def test_packets_that_do_not_parse_or_a_start_code_stream_are_never_cut():
    ranks = list(range(4))
    keys = [True, False, True, False]
    good = [_length_prefixed(t, "h264") for t in ([5], [1], [5], [1])]
    assert clean_cuts("h264", _avcc(4), keys, good, ranks) == [0, 2]
    for bad in (good[2][:-1],  # the last unit cut short
                good[2] + b"\x00\x00",  # a length field cut short
                (0).to_bytes(4, "big") + good[2]):  # a unit of length 0
        assert clean_cuts("h264", _avcc(4), keys, good[:2] + [bad] + good[3:], ranks) == [0], bad
    annex_b = [b"\x00\x00\x00\x01" + bytes([0x60 | t]) for t in (5, 1, 5, 1)]  # would parse as 4-byte lengths
    assert clean_cuts("h264", b"\x00\x00\x00\x01\x67", keys, annex_b, ranks) == [0]  # extradata not avcC
    assert clean_cuts("h264", None, keys, good, ranks) == [0] and clean_cuts("h264", _avcc(4), keys, None, ranks) == [0]
    assert clean_cuts("h264", _avcc(4), [False] + keys[1:], good, ranks) == [0]  # not opening on a keyframe
    # opening on a keyframe that is not the first frame shown (a picture before it in presentation order)
    assert clean_cuts("h264", _avcc(4), keys, good, [1, 0, 2, 3]) == [0]
    assert clean_cuts("mpeg4", None, keys, None, ranks) == [0]  # headers may sit in the first packet only


def test_a_discarded_packet_never_starts_a_run():
    """A keyframe packet an edit list discards (rank -1) is decoded but not shown: it cannot start a run."""
    keys = [True, False, True, True, False]
    ranks = [0, 1, -1, 2, 3]
    payloads = [_length_prefixed(t, "h264") for t in ([5], [1], [5], [5], [1])]
    assert clean_cuts("h264", _avcc(4), keys, payloads, ranks) == [0, 3]
    # ... and does not stop an IDR before it from being a cut
    payloads = [_length_prefixed(t, "h264") for t in ([5], [1], [5], [1], [1])]
    assert clean_cuts("h264", _avcc(4), [True, False, True, False, False], payloads, [0, 1, 2, -1, 3]) == [0, 2]


def test_runs_merge_up_to_the_merge_gap_of_skipped_packets_and_no_further():
    ranks = list(range(40))
    cuts = list(range(0, 40, 4))  # a cut every 4 packets
    # frames 1 and 9: runs (0, 1) and (8, 9) skip packets 2..7 (6 packets)
    assert plan_runs(cuts, ranks, ranks, [1, 9], merge_gap=6) == [(0, 9, 0, 9)]
    assert plan_runs(cuts, ranks, ranks, [1, 9], merge_gap=5) == [(0, 1, 0, 1), (8, 9, 8, 9)]
    # the default gap (MERGE_GAP 4): 4 skipped packets merge, 6 do not
    assert plan_runs(cuts, ranks, ranks, [3, 8]) == [(0, 8, 0, 8)]
    assert plan_runs(cuts, ranks, ranks, [1, 9]) == [(0, 1, 0, 1), (8, 9, 8, 9)]
    assert plan_runs(cuts, ranks, ranks, [2, 8]) == [(0, 2, 0, 2), (8, 8, 8, 8)]  # 5 skipped: not merged


def test_a_run_feeds_every_packet_of_the_frames_shown_before_its_last():
    """Frame 2's packet is decoded before frame 1's (decode order: frames 0, 2, 3, 1): to have frames 0..2 come
    out, the run goes through frame 1's packet, the last one, not only up to frame 2's."""
    ranks = [0, 2, 3, 1]
    order = [0, 3, 1, 2]
    assert plan_runs([0], ranks, order, [2], merge_gap=0) == [(0, 3, 0, 2)]


def test_a_decoder_left_open_goes_on_unless_the_first_frame_was_output_or_a_later_cut_skips_more():
    ranks = list(range(40))
    cuts = [0, 20]  # a cut every 20 packets
    # the decoder was fed up to packet 13 and output frames up to 11 (its delay): frames 15 and 18 of the same GOP
    # go on from packet 14 (frames 12.. come out first), not from the cut at 0 again
    runs = plan_runs(cuts, ranks, ranks, [15, 18])
    assert runs == [(0, 18, 0, 18)]
    assert go_on(runs, fed=13, shown=11, first_wanted=15) == [(14, 18, 12, 18)]
    # fed past the wanted frames' packets already: nothing more to feed but the decoder's delayed frames
    assert go_on(plan_runs(cuts, ranks, ranks, [12]), fed=13, shown=11, first_wanted=12) == [(14, 13, 12, 12)]
    # the first wanted frame was output already (dropped): restart at the cut
    assert go_on(runs, fed=13, shown=15, first_wanted=15) is None
    # the next cut within MERGE_GAP (4) skipped packets: go on through it; further: restart at it
    assert go_on(plan_runs(cuts, ranks, ranks, [21]), fed=15, shown=13, first_wanted=21) == [(16, 21, 14, 21)]
    assert go_on(plan_runs(cuts, ranks, ranks, [21]), fed=14, shown=12, first_wanted=21) is None
    # a later run the decode reaches (it fed past its cut) is taken in; one further on still restarts at its cut
    runs = plan_runs([0, 20, 30], ranks, ranks, [10, 21, 35])
    assert runs == [(0, 10, 0, 10), (20, 21, 20, 21), (30, 35, 30, 35)]
    assert go_on(runs, fed=16, shown=8, first_wanted=10) == [(17, 21, 9, 21), (30, 35, 30, 35)]
