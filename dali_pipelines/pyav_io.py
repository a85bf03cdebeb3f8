"""PyAV (FFmpeg) video decoding for the CPU decode route, tests and benchmarks. The opening of a video and its
errors are ``pyav_open``'s, which ``pyav_probe`` (what the dataset index reads of a video's stream) uses too.

Frame numbering everywhere is the presentation order of the decoded stream: frame ``i`` is the ``i``-th frame the
decoder emits. That is the numbering of DALI's ``fn.decoders.video(frames=...)``, so frame indices computed for one
decode route select the same pictures on the other.

No DALI import here: this module must work on machines (and in processes) without DALI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple

import av
from av.video.reformatter import VideoReformatter
import numpy as np

from .gop_plan import MERGE_GAP, NAL_CODECS, clean_cuts, go_on, plan_runs, presentation_order
from .pyav_open import (BadVideoError, VideoSource, check_unchanged, ffmpeg_message, first_video_stream, open_video,
                        source_name)

__all__ = ["decode_indexed_frames", "decode_frames", "VideoReader", "MAX_HELD_PACKET_BYTES"]

# The compressed packets a VideoReader holds to decode only the runs a request needs (skipping GOPs); beyond them a
# reader keeps timestamps only and decodes sequentially. 256 MiB: about 7 minutes of 1080p H.264 at 5 Mbit/s; the
# demux's peak is about twice what it holds (H.264/HEVC payloads are copied once to find the clean cuts).
MAX_HELD_PACKET_BYTES = 256 << 20


def decode_indexed_frames(path: str, indices: Iterable[int], size: int, mtime_ns: int,
                          threads: int = 0) -> np.ndarray:
    """:func:`decode_frames` of a video the index recorded with ``size`` and ``mtime_ns``; raises
    :class:`VideoChangedError` first when the file changed since."""
    check_unchanged(path, size, mtime_ns)
    return decode_frames(path, indices, threads)


def decode_frames(path: VideoSource, indices: Iterable[int], threads: int = 0,
                  stats: dict[str, Any] | None = None) -> np.ndarray:
    """Decode the frames ``indices`` of a video into RGB, skipping the GOPs that hold no requested frame.

    The file is demuxed once (no decoding) to learn every packet's timestamp and keyframe flag; the decoder is then
    fed only the runs of packets that start at a *clean cut* (a keyframe that resets the decoder, see
    :func:`gop_plan.clean_cuts`) at or before each requested frame, and frames are identified by their timestamps. Every
    run is checked to come out of the decoder as the consecutive presentation-order frames it was planned to hold;
    if anything deviates (missing/duplicate timestamps, a decode error, an unexpected frame), the whole request is
    redone by the plain sequential decode from frame 0, so the result is always what that decode returns.
    Several requests on one video: :class:`VideoReader` demuxes it once for all of them.

    Args:
        path: file path, or the encoded bytes of a whole file.
        indices: presentation-order frame numbers; any order, duplicates allowed.
        threads: decoder threads; 0 lets FFmpeg choose (frame + slice threading, ``thread_type='AUTO'``).
        stats: optional dict, filled with how the request was served: ``mode`` ('seek': runs of packets;
            'sequential': one decode from frame 0), ``runs`` (decoder (re)starts), ``packets`` (packets fed to the
            decoder; -1 when not counted) and ``frames`` (frames the decoder produced for this request). A
            :class:`VideoReader`'s request whose decode went on from its previous request's (sequential, or runs of
            packets): that first run is no (re)start (``runs`` 0 for a sequential one), and ``packets`` and
            ``frames`` count from where the previous one stopped.

    Returns:
        uint8 array ``(len(indices), H, W, 3)``, RGB, row ``k`` is frame ``indices[k]``.

    Raises:
        ValueError: a negative index.
        BadVideoError: the file cannot be opened/decoded, or an index is at or beyond the number of frames that
            could be decoded (the message names the file and the count).
    """
    idx = _indices(path, indices)  # a negative index is refused before the file is opened
    with VideoReader(path, threads, one_request=True) as reader:
        return reader.frames(idx, stats)


def _indices(path: VideoSource, indices: Iterable[int]) -> np.ndarray:
    idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices, dtype=np.int64).reshape(-1)
    if idx.size and idx.min() < 0:
        raise ValueError(f"{source_name(path)}: negative frame index {int(idx.min())} requested")
    return idx


class VideoReader:
    """One video opened for several :func:`decode_frames` requests (a sliding window's batches): the file is demuxed
    and its clean cuts found once, at the first request, not once per request (a cost that grows with the video's
    length: ~90,000 packets for an hour). Each request then decodes only its own runs of packets, with the same
    checks and the same sequential fallback as :func:`decode_frames`, which is one request of a reader. The decoder
    is left open where a request's last run stopped (fed on past its packets, not drained, until its last frame came
    out): the next request, where its first frame comes later with no clean cut more than ``gop_plan.MERGE_GAP``
    packets past that stop before it, goes on from there rather than restarting at that cut and decoding again
    packets the previous request decoded (windows with short gaps in a long GOP: up to a GOP per batch). Feeding on
    decodes the decoder's delay (frame threads, B-frames) ahead, wasted where the next request restarts: a caller
    that knows the next request's first frame passes it (``then``), and the decoder is left open only where that
    request goes on. A sequential decode from frame 0 (the fallback's, and every request's on a stream that cannot
    be skipped through, such as MPEG-4 Part 2 or open GOPs) is kept open: a request that starts at or after where it
    stopped goes on from there (requests in increasing order decode the video once), an earlier one starts again
    from frame 0. ``one_request`` (:func:`decode_frames`): no request follows, so such a stream's one request
    decodes the packets demuxed already rather than opening the file again for a decode that would be kept.

    The reader holds the video's compressed packets (what one :func:`decode_frames` call holds while it runs), and
    the kept decode's open file and decoder, until it is closed; decoded frames are kept only for the request that
    asked for them. Past ``max_held_bytes`` of packets (an hour of HD video is gigabytes) it keeps only their
    timestamps, for :meth:`frame_times`, and decodes every request sequentially: requests in increasing order
    still decode the video once, with memory that does not grow with its length. A context manager::

        with VideoReader(path) as reader:
            times = reader.frame_times()
            for batch in batches:
                frames = reader.frames(batch)

    Raises (at construction): BadVideoError: the file cannot be opened, or has no video stream.
    """

    def __init__(self, path: VideoSource, threads: int = 0, max_held_bytes: int = MAX_HELD_PACKET_BYTES,
                 one_request: bool = False):
        self._path, self._name, self._threads = path, source_name(path), threads
        self._one_request = one_request
        self._max_held_bytes = max_held_bytes
        self.holds_packets = True  # False once the packets outgrew max_held_bytes: every request is sequential
        self._start_pos = path.tell() if hasattr(path, "tell") and hasattr(path, "seek") else None
        self._container = open_video(path)
        try:
            self._stream = first_video_stream(self._container, self._name)
            _configure(self._stream, threads)
        except BaseException:
            self._container.close()
            raise
        self._demuxed = False
        self._numbered: _Numbered | None = None  # None: not demuxed yet, or the frames cannot be numbered from it
        self._cuts: tuple[list[int], dict[int, int]] | None = None  # clean cuts; timestamp -> frame number
        self.demux_passes = 0  # full demuxes of the file: at most one per reader
        self._sequential: _SequentialDecode | None = None  # the sequential decode, kept for the next request
        self.sequential_starts = 0  # sequential decodes from frame 0: the first, then one per request going back
        self._stopped: tuple[int, int] | None = None  # runs left open: last packet fed, last frame output
        self.runs_gone_on = 0  # requests whose runs went on from where the previous request's stopped

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()
        self._numbered = self._cuts = None  # the packets: the compressed video
        if self._sequential is not None:
            self._sequential.close()
            self._sequential = None

    def _demux(self) -> _Numbered | None:
        """Every data packet of the stream and their presentation order, demuxed once; None where they cannot tell
        it (a demux error, a packet without a timestamp, two shown packets with the same one)."""
        if not self._demuxed:
            self._demuxed = True
            self.demux_passes += 1
            try:
                packets = self._demux_packets()
            except av.error.FFmpegError:
                return None
            if not packets or any(p.pts is None for p in packets):
                return None
            # Packets flagged 'discard' (e.g. cut by an MP4 edit list) are decoded but not output: no frame number.
            numbered = presentation_order([p.pts for p in packets], [not p.is_discard for p in packets])
            if numbered is not None:
                self._numbered = _Numbered(packets, *numbered)
        return self._numbered

    def _demux_packets(self) -> list:
        """The stream's data packets (an empty one is a flush marker), or only their timestamps (:class:`_Stamp`)
        once they add up to more than ``max_held_bytes``."""
        packets: list = []
        held = 0
        for p in self._container.demux(self._stream):
            if not p.size:
                continue
            if self.holds_packets:
                held += p.size
                if held > self._max_held_bytes:
                    self.holds_packets = False
                    packets = [_Stamp(q.pts, q.is_discard) for q in packets]
            packets.append(p if self.holds_packets else _Stamp(p.pts, p.is_discard))
        return packets

    def frame_times(self) -> np.ndarray | None:
        """Presentation time of every frame (the numbering of :meth:`frames`), in seconds after the first one, from
        the packets' timestamps (this reader's demux, no decoding); None when they cannot tell (a packet without
        one, two frames with the same one). Frame ``i`` is not at ``i / fps`` when the rate varies or frames were
        dropped: an average rate spreads a gap over the whole video."""
        numbered = self._demux()
        time_base = self._stream.time_base
        if numbered is None or not numbered.order or time_base is None:
            return None
        ticks = np.array([numbered.packets[d].pts for d in numbered.order], dtype=np.int64)
        return (ticks - ticks[0]) * float(time_base)

    def frames(self, indices: Iterable[int], stats: dict[str, Any] | None = None, then: int | None = None
               ) -> np.ndarray:
        """:func:`decode_frames` of ``indices`` (with its ``stats``, errors and exact frames) on this video.

        ``then``: the first frame of the next request, where the caller knows it (negative: none follows). The
        decoder is left open after this request's runs only where that request would go on from it; None: left
        open wherever it can be."""
        idx = _indices(self._path, indices)
        if idx.size == 0:
            return np.zeros((0, self._stream.height, self._stream.width, 3), np.uint8)
        wanted = sorted(set(idx.tolist()))
        plan = self._plan(wanted)
        # Where only the first packet may start a run, every run decodes from frame 0: the kept sequential decode
        # serves a reader's requests from the first on, each going on from where the previous one stopped (a first
        # request served from the packets was decoded again from frame 0 by the second: twice the work for a short
        # video whose first batch of windows reaches its end). decode_frames' one request decodes the packets.
        sequential = self._cuts is not None and len(self._cuts[0]) == 1 and not self._one_request
        stopped, self._stopped = self._stopped, None  # whatever this request does, the decoder is not left there
        decoded = None
        if plan is not None and not sequential:
            plan.keep_open = self._worth_leaving_open(plan, then)
            runs = go_on(plan.runs, *stopped, wanted[0]) if stopped is not None else None
            if runs is not None:
                plan.runs, plan.goes_on = runs, True
            decoded = _decode_runs(self._stream, plan, wanted, stats)
            if decoded is not None:
                self._stopped = plan.stopped
                self.runs_gone_on += plan.goes_on
        if decoded is None:  # the stream does not allow exact skipping (or a check failed): decode sequentially
            decoded = self._decode_sequential(wanted, stats)
        sizes = sorted({(decoded[i].shape[1], decoded[i].shape[0], i) for i in wanted}, key=lambda t: t[2])
        if len({(w, h) for w, h, _ in sizes}) > 1:
            changes = [f"{w}x{h} at frame {i}" for k, (w, h, i) in enumerate(sizes)
                       if k == 0 or (w, h) != sizes[k - 1][:2]]
            raise BadVideoError(f"{self._name}: the picture size changes within the stream ({', '.join(changes)})")
        return np.stack([decoded[i] for i in idx.tolist()])

    def _decode_sequential(self, wanted: list[int], stats: dict[str, Any] | None) -> dict[int, np.ndarray]:
        """The sequential decode of ``wanted``: the one kept from an earlier request goes on when ``wanted`` starts
        at or after where it stopped; otherwise a new one starts from frame 0."""
        if self._sequential is not None and wanted[0] < self._sequential.position:
            self._sequential.close()
            self._sequential = None
        if self._sequential is None:
            if self._start_pos is not None:
                self._path.seek(self._start_pos)  # type: ignore[union-attr]
            self._sequential = _SequentialDecode(self._path, self._name, self._threads)
            self.sequential_starts += 1
        try:
            return self._sequential.decode(wanted, stats)
        except BaseException:  # an error (or an interruption) ends it: the next request starts from frame 0
            self._sequential.close()
            self._sequential = None
            raise

    def _worth_leaving_open(self, plan: _Plan, then: int | None) -> bool:
        """Whether to leave the decoder open after ``plan``'s last run for a next request from frame ``then``: it
        decodes ahead by the decoder's delay, wasted unless that request goes on (:func:`gop_plan.go_on`), which it
        does where its clean cut is at most ``MERGE_GAP`` packets past the run's last (restarting at a later cut
        decodes no packet twice)."""
        if self._one_request or (then is not None and then < 0):
            return False
        if then is None:
            return True
        numbered, cuts = self._numbered, self._cuts
        if numbered is None or cuts is None or not plan.runs[-1][3] < then < len(numbered.order):
            return False
        cut = plan_runs(cuts[0], numbered.ranks, numbered.order, [then])[0][0]
        return cut <= plan.runs[-1][1] + 1 + MERGE_GAP

    def _plan(self, wanted: list[int]) -> _Plan | None:
        """The packet runs that produce ``wanted``; None when exact skipping is not possible: the demux could not
        number the frames, or a requested frame is past the last packet (the sequential decode words that error).
        """
        numbered = self._demux()
        if numbered is None or not self.holds_packets or wanted[-1] >= len(numbered.order):
            return None
        packets, order, ranks = numbered.packets, numbered.order, numbered.ranks
        if self._cuts is None:  # found once: H.264/HEVC's need every packet's NAL units parsed
            ctx = self._stream.codec_context
            codec = ctx.name if ctx is not None else ""
            payloads = [bytes(p) for p in packets] if codec in NAL_CODECS else None
            cuts = clean_cuts(codec, ctx.extradata if ctx is not None else None, [p.is_keyframe for p in packets],
                              payloads, ranks)
            self._cuts = cuts, {packets[d].pts: r for r, d in enumerate(order)}
        cuts, rank = self._cuts
        runs = plan_runs(cuts, ranks, order, wanted)
        return _Plan(packets=packets, rank=rank, runs=runs, skips=len(runs) > 1 or runs[0][0] > 0)


def _configure(stream: av.video.stream.VideoStream, threads: int) -> None:
    stream.thread_type = "AUTO"
    if threads:
        stream.codec_context.thread_count = threads


def rgb_converter() -> Callable[[av.VideoFrame], np.ndarray]:
    """frame -> uint8 (H, W, 3) RGB, as ``frame.to_ndarray(format="rgb24")`` (the matrix the frame is tagged with),
    through one swscale context for all the frames it converts: ``to_ndarray`` sets one up for every new frame,
    which cost 0.77 ms against 0.15 ms reused for a 340x256 frame, more than decoding it. One per decode: a context
    is not to be shared between threads."""
    reformatter = VideoReformatter()
    return lambda frame: reformatter.reformat(frame, format="rgb24").to_ndarray()


class _SequentialDecode:
    """A decode forward from frame 0, numbering frames by the order the decoder emits them. A reader keeps it
    between requests: one that starts at or after :attr:`position` goes on from there, instead of decoding every
    frame before it again (a sliding window's batches over a long video cost the square of its length)."""

    def __init__(self, path: VideoSource, name: str, threads: int):
        self._name = name
        self._container = open_video(path)
        try:
            stream = first_video_stream(self._container, name)
            _configure(stream, threads)
        except BaseException:
            self._container.close()
            raise
        self._frames = self._container.decode(stream)
        self.position = 0  # frames emitted so far: the number of the next one

    def close(self) -> None:
        self._container.close()

    def decode(self, wanted: list[int], stats: dict[str, Any] | None) -> dict[int, np.ndarray]:
        """Decode on up to ``max(wanted)``; ``wanted`` (sorted) starts at or after :attr:`position`. After a
        BadVideoError the decode cannot go on."""
        wanted_set, last = set(wanted), wanted[-1]
        decoded: dict[int, np.ndarray] = {}
        start = n = self.position
        to_rgb = rgb_converter()
        try:
            for frame in self._frames:
                if n in wanted_set:
                    # RGB conversion (swscale) costs about as much as decoding; do it only for requested frames.
                    decoded[n] = to_rgb(frame)
                n += 1
                if n > last:  # decode forward only as far as the largest index
                    break
        except av.error.FFmpegError as e:
            raise BadVideoError(f"{self._name}: decode error after {n} frames ({ffmpeg_message(e)})") from e
        self.position = n
        if n <= last:
            raise BadVideoError(f"{self._name}: frame {last} requested but only {n} frames could be decoded")
        if stats is not None:  # packets: not counted by this route
            stats.update(mode="sequential", runs=int(start == 0), packets=-1, frames=n - start)
        return decoded


class _Stamp(NamedTuple):
    """What a reader keeps of a packet it does not hold: what numbers the frames and times them."""

    pts: int | None
    is_discard: bool


@dataclass
class _Numbered:
    """A stream's data packets (decode order) and their presentation order (:func:`gop_plan.presentation_order`)."""

    packets: list[av.Packet]
    order: list[int]
    ranks: list[int]


@dataclass
class _Plan:
    """Runs of packets to feed the decoder: ``runs[j] = (first, last, first_rank, last_rank)``.

    ``first``/``last`` are decode-order packet positions (inclusive); the run must produce the presentation-order
    frames ``first_rank .. last_rank`` as its first outputs, in that order. ``rank`` maps a timestamp to its
    presentation-order frame number. ``skips``: the runs as planned from the clean cuts skip packets (stats' mode).

    ``goes_on``: the first run goes on from the decoder's state (:func:`gop_plan.go_on`) instead of restarting it.
    ``keep_open``: the last run is fed on past ``last`` (up to the last packet) until its last frame comes out,
    instead of drained, so that the decoder can go on; :func:`_decode_runs` then sets ``stopped`` to (last packet
    fed, last frame output) where the frames it output past the run's last were numbered as planned.
    """

    packets: list[av.Packet]
    rank: dict[int, int]
    runs: list[tuple[int, int, int, int]]
    skips: bool = True
    goes_on: bool = False
    keep_open: bool = False
    stopped: tuple[int, int] | None = None


def _decode_runs(stream: av.video.stream.VideoStream, plan: _Plan, wanted: list[int],
                 stats: dict[str, Any] | None) -> dict[int, np.ndarray] | None:
    """Feed the planned packet runs to the decoder; None if any run does not come out exactly as planned."""
    ctx = stream.codec_context
    wanted_set = set(wanted)
    decoded: dict[int, np.ndarray] = {}
    fed = produced = 0
    to_rgb = rgb_converter()
    try:
        for j, (first, last, r0, r1) in enumerate(plan.runs):
            if j or not plan.goes_on:
                # forget the previous run (of this request or of a reader's earlier one): references, delayed
                # frames, end-of-stream state
                ctx.flush_buffers()
            # a reader's last run is fed on rather than drained (draining ends the decode): the next request may
            # go on from it
            end = len(plan.packets) - 1 if plan.keep_open and j == len(plan.runs) - 1 else last
            expect = r0  # frames must come out as r0, r0+1, ..., r1 (presentation order, none missing)
            done = False
            exact = True  # the frames output past r1 came numbered as planned: a decode that goes on stays exact
            for d in range(first, end + 2):
                frames = ctx.decode(plan.packets[d] if d <= end else None)  # None drains the delayed frames
                fed += d <= end
                for frame in frames:
                    produced += 1
                    numbered = frame.pts is not None and plan.rank.get(frame.pts) == expect
                    if expect > r1:  # past the run's last requested frame (B-frame lookahead, the decoder's delay)
                        exact = exact and numbered
                    elif not numbered:
                        return None
                    elif expect in wanted_set:
                        decoded[expect] = to_rgb(frame)
                    expect += 1
                if expect > r1:
                    done = True
                    break  # no need to feed or drain further
            if not done:
                return None
    except av.error.FFmpegError:
        return None
    plan.stopped = (d, expect - 1) if plan.keep_open and d <= end and exact else None
    if stats is not None:
        stats.update(mode="seek" if plan.skips else "sequential", runs=len(plan.runs) - plan.goes_on, packets=fed,
                     frames=produced)
    return decoded
