"""The GOP-skip planner: which packets a decoder must be fed to produce a set of frames exactly.

Both CPU routes skip the GOPs that hold no requested frame: the PyAV route feeds the decoder runs of packets
(``pyav_io.decode_frames``), the DALI CPU route cuts the file down to those packets (``gop_pack``). Both plan with
the two pure functions here: :func:`clean_cuts` (where decoding may start) and :func:`plan_runs` (the runs of
packets, from a clean cut up to each requested frame); :func:`go_on` lets a PyAV reader's request go on from where
its previous one left the decoder.

Terms: packets are numbered in decode order (``d``); ``ranks[d]`` is the presentation-order frame number of packet
``d`` (-1 for a packet that is decoded but not shown); ``order[r]`` is the packet of frame ``r``.
No PyAV or DALI import: the inputs are plain lists.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["MERGE_GAP", "NAL_CODECS", "presentation_order", "clean_cuts", "plan_runs", "go_on"]

# Packets skipped between two runs below which the runs are merged (decoding a few extra packets is cheaper than
# draining the decoder and restarting its threads).
MERGE_GAP = 4

# NAL unit types of pictures after which no picture in decode *and* presentation order refers to anything before:
# H.264 IDR (5); HEVC BLA/IDR/CRA (16-21; pictures decoded after a CRA but shown before it are excluded separately
# by the clean-cut test in clean_cuts). H.264 non-IDR I-frames do not qualify: later P-frames may still reference
# frames before them.
_RESET_NALS = {"h264": frozenset({5}), "hevc": frozenset(range(16, 22))}
# Codecs whose reset points are read from the packets' NAL units (clean_cuts needs their payloads).
NAL_CODECS = frozenset(_RESET_NALS)
_PARAM_SET_NALS = {"h264": frozenset({7, 8}), "hevc": frozenset({32, 33, 34})}
# Codecs whose keyframes reset all decoder references (no B-frame reordering is checked separately).
_INTRA_RESET_CODECS = frozenset({"vp8", "vp9", "mjpeg"})


def _nal_types(data: bytes, codec: str, length_size: int) -> list[int] | None:
    """NAL unit types of a length-prefixed (MP4-style) H.264/HEVC packet; None if it does not parse."""
    types, pos, n = [], 0, len(data)
    while pos < n:
        if pos + length_size > n:
            return None
        size = int.from_bytes(data[pos:pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > n:
            return None
        head = data[pos]
        types.append(head & 0x1F if codec == "h264" else (head >> 1) & 0x3F)
        pos += size
    return types


def _length_size(codec: str, extradata: bytes | None) -> int | None:
    """NAL length-field size from avcC/hvcC extradata; None for Annex-B (start-code) streams or unknown layout."""
    if not extradata or extradata[0] != 1:
        return None
    if codec == "h264" and len(extradata) >= 5:
        return (extradata[4] & 0x03) + 1
    if codec == "hevc" and len(extradata) >= 23:
        return (extradata[21] & 0x03) + 1
    return None


def presentation_order(stamps: Sequence[int], shown: Sequence[bool]) -> tuple[list[int], list[int]] | None:
    """``(order, ranks)`` from the packets' presentation timestamps (decode order): ``order[r]`` is the packet of
    frame ``r``, ``ranks[d]`` the frame number of packet ``d`` (-1 where ``shown`` is False: decoded, not output).
    None when two shown packets share a timestamp (the frames could not be told apart)."""
    order = sorted((d for d, s in enumerate(shown) if s), key=lambda d: stamps[d])
    if len({stamps[d] for d in order}) != len(order):
        return None
    ranks = [-1] * len(stamps)
    for r, d in enumerate(order):
        ranks[d] = r
    return order, ranks


def clean_cuts(codec: str, extradata: bytes | None, keyframes: Sequence[bool], payloads: Sequence[bytes] | None,
               ranks: Sequence[int]) -> list[int]:
    """Decode positions where decoding may start and yield exactly the frames a full decode yields from there on.

    A position ``d`` (frame rank ``r``) qualifies when its packet resets the decoder (H.264 IDR / HEVC IRAP picture
    with parameter sets available; a VP8/VP9/MJPEG keyframe in a stream without reordering), and it is a clean
    cut of the order: every packet before ``d`` in decode order is shown before frame ``r`` and every packet from
    ``d`` on at or after it. Position 0 (the plain decode from the start) is always included.

    Args:
        codec: FFmpeg codec name; extradata: the codec's extradata (avcC/hvcC for H.264/HEVC in MP4).
        keyframes: every packet's keyframe flag; payloads: every packet's bytes (needed for H.264/HEVC only).
        ranks: every packet's presentation-order frame number (-1: not shown).
    """
    n = len(keyframes)
    cuts = [0]
    if codec in _RESET_NALS:
        length_size = _length_size(codec, extradata)
        if length_size is None or payloads is None:
            return cuts
        nals = [_nal_types(p, codec, length_size) for p in payloads]
        if any(t is None for t in nals):
            return cuts
        # In-band parameter sets (SPS/PPS...) would be lost by skipping the packet carrying them: then only packets
        # that carry their own may start a run.
        in_band = any(set(t) & _PARAM_SET_NALS[codec] for t in nals)  # type: ignore[arg-type]
        ok = [k and bool(set(t) & _RESET_NALS[codec])  # type: ignore[arg-type]
              and (not in_band or bool(set(t) & _PARAM_SET_NALS[codec])) for k, t in zip(keyframes, nals)]
    elif codec in _INTRA_RESET_CODECS:
        if any(ranks[i] > ranks[i + 1] for i in range(n - 1)):  # reordering: not what these codecs should do
            return cuts
        ok = [bool(k) for k in keyframes]
    else:  # MPEG-4 Part 2 and others: headers may sit in-band in the first packet only; do not skip
        return cuts
    if not (ok[0] and ranks[0] == 0):
        # A stream that does not open on a reset picture may have its first frames dropped by the decoder (missing
        # references), which would shift the numbering of everything after them: skip nothing.
        return cuts
    # Clean cut at d: max(ranks[:d]) < ranks[d] <= min(ranks[d:]); discarded packets have rank -1 and never start.
    prefix_max, run = [], -1
    for r in ranks:
        prefix_max.append(run)
        run = max(run, r)
    suffix_min, low = [0] * n, n + 1
    for d in range(n - 1, -1, -1):
        if ranks[d] >= 0:
            low = min(low, ranks[d])
        suffix_min[d] = low
    cuts += [d for d in range(1, n) if ok[d] and ranks[d] >= 0 and prefix_max[d] < ranks[d] == suffix_min[d]]
    return cuts


def plan_runs(cuts: Sequence[int], ranks: Sequence[int], order: Sequence[int], wanted: Sequence[int],
              merge_gap: int = MERGE_GAP) -> list[tuple[int, int, int, int]]:
    """The runs of packets that produce the sorted frame numbers ``wanted``: ``(first, last, first_rank,
    last_rank)``, where ``first``/``last`` are decode positions (inclusive) and the run yields the frames
    ``first_rank .. last_rank`` as its first outputs. Runs closer than ``merge_gap`` skipped packets are merged
    (decoding a few extra packets is cheaper than draining and restarting the decoder)."""
    cut_ranks = [ranks[d] if d else 0 for d in cuts]
    # For every requested frame, the run from the latest cut at or before it; the run must feed every packet of the
    # frames between the cut and the frame (B-frames may be decoded after later frames), hence the max over order.
    groups: dict[int, int] = {}  # cut position -> largest requested rank it serves
    j = 0
    for f in wanted:
        while j + 1 < len(cuts) and cut_ranks[j + 1] <= f:
            j += 1
        groups[cuts[j]] = f
    runs: list[tuple[int, int, int, int]] = []
    for d in sorted(groups):
        r0, f = (ranks[d] if d else 0), groups[d]
        end = max(order[r0:f + 1])
        if runs and d <= runs[-1][1] + 1 + merge_gap:  # continuing through is exact and about as cheap
            first, last, fr0, _ = runs[-1]
            runs[-1] = (first, max(last, end), fr0, f)
        else:
            runs.append((d, end, r0, f))
    return runs


def go_on(runs: Sequence[tuple[int, int, int, int]], fed: int, shown: int, first_wanted: int,
          merge_gap: int = MERGE_GAP) -> list[tuple[int, int, int, int]] | None:
    """``runs`` (:func:`plan_runs`, for frames from ``first_wanted`` on) served by a decoder that is still open on a
    run from a clean cut: fed the packets up to decode position ``fed`` and output the frames up to ``shown``, not
    drained. The runs with the first one going on from there, ``(fed + 1, last, shown + 1, last_rank)``, taking in
    the next runs it reaches within ``merge_gap``; None where it cannot (``first_wanted`` was output already) or
    restarting at the first run's clean cut skips more than ``merge_gap`` packets. Decoding on through a clean cut
    gives the frames a restart there gives, so the frames are the same either way; going on decodes no packet
    again (a restart at a cut at or before ``fed`` decodes the packets from it to ``fed`` a second time)."""
    if first_wanted <= shown or runs[0][0] > fed + 1 + merge_gap:
        return None
    merged = [(fed + 1, max(runs[0][1], fed), shown + 1, runs[0][3])]
    for run in runs[1:]:
        if run[0] <= merged[-1][1] + 1 + merge_gap:  # fed up to (or near) this run's cut already: go on through
            merged[-1] = (merged[-1][0], max(merged[-1][1], run[1]), merged[-1][2], run[3])
        else:
            merged.append(run)
    return merged
