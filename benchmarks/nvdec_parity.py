"""Does DALI's decoder return the frames PyAV returns, at the indices asked for? A table per clip.

For every clip, a fixed list of unordered and repeated frame indices (last, first, middle twice, a third, ...) is
decoded by DALI (``--decoder mixed``: NVDEC; ``cpu``: DALI's CPU decoder, VP8/VP9/MJPEG only) and compared with a
full sequential PyAV decode of the same file: for each requested frame, the PyAV frame it correlates with best
(it must be the requested one, or a frame identical to it), that correlation, and the mean absolute difference in
grey levels (NVDEC and swscale convert YUV to RGB slightly differently, so it is not zero). The requested frames
are also compared with PyAV's RGB under each YUV-to-RGB matrix, BT.601 and BT.709, and the closer one is named: the
original's decoder (FFmpeg's default conversion, as PyAV's) uses BT.601 for video that does not say otherwise, and a
decoder on the other matrix is off by about 1 to 2 grey levels on average, within the tolerance above.

    python -m benchmarks.nvdec_parity --real-dir $EVA_SHARED_DIR/data/real --json results/nvdec_parity.json
    python -m benchmarks.nvdec_parity --decoder cpu --quick        # CI: synthetic VP9 clips, DALI's CPU decoder

With ``--decoder cpu``, clips in a codec DALI's CPU decoder does not take (H.264, MPEG-4, ...) are skipped, each with
a line that names its codec (stderr, the printed report and the JSON's ``skipped``); they do not fail the run.

Exit code 1 when any requested frame is not found where it should be.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import av
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import cli, common, hardware, parity_report  # noqa: E402
from evautil.cli import flags_as_typed  # noqa: E402
from evautil.files import not_a_file  # noqa: E402

# A frame counts as found when its best match is the requested index (or a frame equal to it: static scenes tie),
# with at least this correlation, and no more than this mean difference in grey levels from PyAV's.
MIN_CORRELATION = 0.97
MAX_MEAN_ABS_DIFF = 8.0
# A second frame is "the same picture" as the requested one below this mean difference.
SAME_PICTURE = 1.0
MAX_REFERENCE_FRAMES = 320  # longer clips are compared over their first 320 frames
# FrameMatcher compares frames on every k-th row and column, k chosen to keep at least this many of the shorter
# side: a 1080p frame costs 1/16 of the work, and every kept pixel is a real one (no averaging to blur motion).
MATCH_MIN_SIDE = 256
# PyAV's names of the YUV-to-RGB matrices compared with the decoder's output.
MATRICES = {"BT.601": "ITU601", "BT.709": "ITU709"}
# Mean differences closer than this (grey levels) name no matrix: the clip's colours hardly tell them apart.
MATRIX_MARGIN = 0.1


class FrameMatcher:
    """Finds which of ``candidates`` (F, H, W[, C]) a frame is: the candidates are standardized once, so matching
    many frames against one decoded clip costs one matrix-vector product each."""

    def __init__(self, candidates: np.ndarray):
        candidates = np.asarray(candidates)
        self.step = max(1, min(candidates.shape[1], candidates.shape[2]) // MATCH_MIN_SIDE)
        self._candidates = self._standardized(candidates)

    def _standardized(self, frames: np.ndarray) -> np.ndarray:
        x = frames[:, ::self.step, ::self.step].reshape(frames.shape[0], -1).astype(np.float32)
        x -= x.mean(axis=1, keepdims=True)
        x /= x.std(axis=1, keepdims=True) + 1e-9
        return x

    def best(self, frame: np.ndarray) -> tuple[int, float]:
        """Index of the candidate most correlated with ``frame`` (the first of equals), and that (Pearson)
        correlation."""
        a = self._standardized(np.asarray(frame)[None])[0]
        corr = self._candidates @ a / a.size
        k = int(np.argmax(corr))
        return k, float(corr[k])


def best_match(frame: np.ndarray, candidates: np.ndarray) -> tuple[int, float]:
    """Index of the candidate frame most correlated with ``frame``, and that correlation (:class:`FrameMatcher`;
    build one to match many frames against the same candidates)."""
    return FrameMatcher(candidates).best(frame)


def probe_indices(num_frames: int) -> list[int]:
    """Unordered, repeated and boundary indices: what a TSN draw and a multi-view union ask a decoder for."""
    n = num_frames
    return [n - 1, 0, n // 2, n // 2, n // 3, 5 % n, n - 2 if n > 1 else 0, 1 % n]


def matrix_references(path: str, indices: list[int]) -> dict[str, np.ndarray]:
    """PyAV's RGB frames ``indices`` (in order, repeats included) under each of :data:`MATRICES`."""
    wanted, last = set(indices), max(indices)
    frames: dict[str, dict[int, np.ndarray]] = {name: {} for name in MATRICES}
    with av.open(path) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if n in wanted:
                for name, colorspace in MATRICES.items():
                    frames[name][n] = frame.reformat(format="rgb24", src_colorspace=colorspace).to_ndarray()
            if n >= last:
                break
    return {name: np.stack([got[k] for k in indices]) for name, got in frames.items()}


def closer_matrix(decoded: np.ndarray, references: dict[str, np.ndarray]) -> tuple[str, dict[str, float]]:
    """The matrix whose PyAV frames ``decoded`` is closer to ("either" within :data:`MATRIX_MARGIN`) and the mean
    absolute difference from each."""
    diffs = {name: float(np.abs(decoded.astype(np.int16) - ref).mean()) for name, ref in references.items()}
    (first, a), (_, b) = sorted(diffs.items(), key=lambda kv: kv[1])
    return (first if b - a >= MATRIX_MARGIN else "either"), diffs


def compare_clip(path: str, decoder: str, device_id: int | None) -> dict:
    from dali_pipelines.index import probe_video
    from dali_pipelines.pipelines import decode_with_dali
    from dali_pipelines.pyav_io import decode_frames

    with av.open(path) as container:
        stream = container.streams.video[0]
        codec, size = stream.codec_context.name, f"{stream.width}x{stream.height}"
        has_b = bool(stream.codec_context.has_b_frames)
    reference = decode_frames(path, range(min(probe_video(path).num_frames, MAX_REFERENCE_FRAMES)))
    wanted = probe_indices(len(reference))
    (decoded,) = decode_with_dali([path], [wanted], device=decoder, device_id=device_id)
    rows = []
    matcher = FrameMatcher(reference)
    for frame, k in zip(decoded, wanted):
        match, corr = matcher.best(frame)
        diff = float(np.abs(frame.astype(np.int16) - reference[k]).mean())
        same = match == k or float(np.abs(reference[match].astype(np.int16) - reference[k]).mean()) < SAME_PICTURE
        rows.append({"index": k, "best_match": match, "corr": corr, "mean_abs_diff": diff,
                     "ok": bool(same and corr >= MIN_CORRELATION and diff <= MAX_MEAN_ABS_DIFF)})
    matrix, matrix_diffs = closer_matrix(np.stack(decoded), matrix_references(path, wanted))
    return {"clip": os.path.basename(path), "codec": codec, "size": size, "frames": len(reference),
            "matrix": matrix, "mean_abs_diff_by_matrix": matrix_diffs,
            "b_frames": has_b, "indices": wanted, "found": sum(r["ok"] for r in rows), "asked": len(rows),
            "min_corr": min(r["corr"] for r in rows),
            "mean_abs_diff": float(np.mean([r["mean_abs_diff"] for r in rows])),
            "max_abs_diff": max(r["mean_abs_diff"] for r in rows),
            "best_matches": [r["best_match"] for r in rows], "frames_detail": rows}


def seek_verdict(setup_s: float, early_s: float, late_s: float, early: int, late: int, gop: int) -> dict:
    """Whether a decoder seeks, from the times of frame 0 (``setup_s``: building the graph and the decoder, one
    frame), an early frame and a late one. Each call builds its graph, so that set-up is taken off first: with an
    NVDEC decoder it may rival the decode itself, and the plain late/early ratio would then shrink towards 1 and
    pass a decoder that does not seek. Beyond frame 0, one that seeks decodes from the keyframe before the frame,
    one that does not from frame 0; the verdict is the expectation nearer (geometrically) to the measured ratio.
    Frame k costs k + 1 decoded frames and frame 0's one is in ``setup_s``: beyond it, late / early (not
    (late + 1) / (early + 1), the ratio of the raw times that :func:`seek_probe` speaks of)."""
    beyond_early, beyond_late = max(early_s - setup_s, 1e-9), max(late_s - setup_s, 1e-9)
    ratio = beyond_late / beyond_early
    if_seeking = max(late % gop, 1) / max(early % gop, 1)
    if_not = late / early
    seeks = ratio < (if_seeking * if_not) ** 0.5
    return {"setup_s": setup_s, "late_over_early_beyond_setup": ratio, "if_seeking": if_seeking,
            "if_decoding_from_frame_0": if_not, "verdict": "seeks" if seeks else "decodes from frame 0 (no seek)"}


def seek_probe(out_dir: str, decoder: str, device_id: int | None, quick: bool, copies: int = 8) -> dict:
    """Does the decoder seek to a requested frame, or decode every frame from the first one up to it?

    A clip with a keyframe every 12 frames; ``copies`` copies of it are decoded at an early frame and at a late one
    (best of 3 after a warm-up). A decoder that seeks does about the same work for both; one that decodes from frame
    0 does (late + 1) / (early + 1) times as much. DALI 2.4's CPU decoder is known not to seek on in-memory input
    (hence ``gop_pack``); whether its NVDEC decoder does decides whether the GPU route needs the same cut.
    """
    from dali_pipelines.gop_pack import pack_for_frames
    from dali_pipelines.pipelines import decode_with_dali
    from dali_pipelines.pyav_encode import write_video

    codec = "h264" if decoder == "mixed" else "vp9"
    n, size, early = (96, (128, 128), 4) if quick else (250, (320, 256), 8)
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (n, size[1] // 8, size[0] // 8, 3), dtype=np.uint8), 8, axis=1)
    frames = np.repeat(frames, 8, axis=2)  # blocky noise: costs the decoder real work, compresses poorly
    path = os.path.join(out_dir, f"seek_probe_{codec}.{'mp4' if codec == 'h264' else 'webm'}")
    write_video(path, frames, codec=codec, gop=12)
    late = n - 2

    def seconds(source: str, index: int) -> float:
        t0 = time.perf_counter()
        decode_with_dali([source] * copies, [[index]] * copies, device=decoder, device_id=device_id)
        return time.perf_counter() - t0

    # The late frame again from gop_pack's cut of the file (its GOP alone), as DATA.*_PACK_GOPS would hand it over.
    cut, (cut_index,) = pack_for_frames(np.fromfile(path, dtype=np.uint8), np.array([late]))
    cut_path = path + ".cut" + (".mp4" if codec == "h264" else ".ivf")
    cut.tofile(cut_path)
    seconds(path, early)  # warm-up: decoder creation, first CUDA work
    t_setup = min(seconds(path, 0) for _ in range(3))
    t_early = min(seconds(path, early) for _ in range(3))
    t_late = min(seconds(path, late) for _ in range(3))
    t_cut = min(seconds(cut_path, int(cut_index)) for _ in range(3))
    return {"clip": os.path.basename(path), "frames": n, "gop": 12, "copies": copies, "early_index": early,
            "late_index": late, "early_s": t_early, "late_s": t_late, "late_cut_s": t_cut,
            "late_over_early": t_late / t_early, "late_over_cut": t_late / t_cut,
            "from_frame_0_would_be": (late + 1) / (early + 1),
            **seek_verdict(t_setup, t_early, t_late, early, late, 12)}


def _textured_frames(quick: bool) -> np.ndarray:
    """Smooth shading plus a moving box: every frame differs from every other, and no high-frequency texture that
    chroma subsampling would turn into a colour-conversion difference."""
    size = (96, 64) if quick else (160, 128)
    n = 24 if quick else 48
    yy, xx = np.mgrid[0:size[1], 0:size[0]].astype(np.float32)
    frames = np.empty((n, size[1], size[0], 3), np.uint8)
    for t in range(n):
        shade = 128 + 60 * np.sin(xx / 13.0 + 0.4 * t) * np.cos(yy / 11.0 - 0.3 * t)
        frame = np.stack([shade, 255 - shade, np.full_like(shade, 40 + 4 * t)], -1)
        x0, y0 = (6 * t) % (size[0] - 16), (4 * t) % (size[1] - 16)
        frame[y0:y0 + 16, x0:x0 + 16] = (240, 230, 30)
        frames[t] = np.clip(frame, 0, 255)
    return frames


def synthetic_clips(out_dir: str, codec: str, quick: bool) -> list[str]:
    """Textured moving clips, one with B-frames and one without (what the project's re-encoder writes)."""
    from dali_pipelines.pyav_encode import write_video

    frames = _textured_frames(quick)
    size = (frames.shape[2], frames.shape[1])
    paths = []
    for bframes in ((2, 0) if codec == "h264" else (None,)):
        name = f"synthetic_{codec}_{size[0]}x{size[1]}" + ("" if bframes is None else f"_b{bframes}")
        path = os.path.join(out_dir, name + {"h264": ".mp4"}.get(codec, ".webm"))
        opts = {} if bframes is None else {"bframes": bframes}
        write_video(path, frames, codec=codec, gop=12, **opts)
        paths.append(path)
    return paths


# Files cut without re-encoding: how many pictures the cut hides or drops at the start.
CUT = 3


def _error_text(err: BaseException) -> str:
    """A failure for the report, in at most 300 characters: a DALI error's informative line (its message is mostly
    the pipeline's traceback, and the first 300 characters held none of the reason)."""
    text = str(err)
    if "\n" in text:
        from dali_pipelines.pipelines import dali_error_reason

        text = dali_error_reason(err)
    return f"{type(err).__name__}: {text}"[:300]


def numbering_probe(out_dir: str, decoder: str, device_id: int | None, quick: bool) -> list[dict]:
    """How the decoder numbers files cut without re-encoding, given whole (as the loader would give them): an MP4
    whose edit list hides its first CUT pictures, and a stream that starts CUT packets inside a GOP; on NVDEC also a
    raw .h264 stream with B-frames (:func:`raw_h264_row`) and a stream whose picture size changes. Each row: the
    indices asked, the PyAV frames (the index's numbering) they match best, the shift when it is one number, and
    whether the loader's NVDEC route keeps such a file off NVDEC (``pyav_probe.first_pictures_not_shown``). Not part of
    the exit code: a shift here is what that route check exists for (DALI 2.4's GPU decoder reads no edit list, by
    its source)."""
    from dali_pipelines.pyav_encode import cut_with_edit_list, start_inside_gop, write_video

    codec = "h264" if decoder == "mixed" else "vp9"  # DALI's CPU decoder takes no H.264
    whole = os.path.join(out_dir, f"numbering_whole_{codec}.mp4")
    write_video(whole, _textured_frames(quick), codec=codec, gop=12, **({"bframes": 0} if codec == "h264" else {}))
    cuts = {"edit list hides the first 3": (cut_with_edit_list, ".mp4")}
    if codec == "h264":  # (FFmpeg's VP9 decoder refuses a stream that starts without a keyframe)
        cuts["starts 3 packets inside a GOP"] = (start_inside_gop, ".mkv")
    rows = [_numbering_row(os.path.join(out_dir, f"numbering_{cut.__name__}_{codec}{ext}"), what,
                           lambda path, cut=cut: cut(whole, path, CUT), decoder, device_id)
            for what, (cut, ext) in cuts.items()]
    if codec == "h264":
        rows += [raw_h264_row(out_dir, decoder, device_id, quick), _size_change_row(out_dir, decoder, device_id)]
    return rows


def raw_h264_row(out_dir: str, decoder: str, device_id: int | None, quick: bool) -> dict:
    """The numbering row of a raw .h264 stream with B-frames: its packets carry no pts, so DALI 2.4's GPU decoder
    hands its frames out in decode order, by its source (``pyav_probe.nvdec_pts_problem``). H.264 only: on DALI's
    CPU decoder the row is its error, with the route's verdict (computed before the decode)."""
    from dali_pipelines.pyav_encode import write_video

    return _numbering_row(os.path.join(out_dir, "numbering_raw_bframes_h264.h264"),
                          "raw .h264 stream with B-frames, its packets without pts",
                          lambda path: write_video(path, _textured_frames(quick), codec="h264", gop=12, bframes=2),
                          decoder, device_id)


def _numbering_row(path: str, what: str, write, decoder: str, device_id: int | None) -> dict:
    """``write(path)``, then the row: PyAV's frames against the decoder's at ``probe_indices``. The frame count,
    the indices and the route's verdict come first, so that a decode that fails still leaves them in the row."""
    from dali_pipelines.pipelines import decode_with_dali
    from dali_pipelines.pyav_io import decode_frames
    from dali_pipelines.pyav_probe import first_pictures_not_shown

    row: dict = {"clip": os.path.basename(path), "cut": what}
    try:
        write(path)
        with av.open(path) as container:
            reference = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        wanted = probe_indices(len(reference))
        row.update(frames=len(reference), indices=wanted, kept_off_nvdec=bool(first_pictures_not_shown(path)))
        (decoded,) = decode_with_dali([path], [wanted], device=decoder, device_id=device_id)
        matcher = FrameMatcher(reference)
        best = [matcher.best(frame)[0] for frame in decoded]
        shifts = {b - k for b, k in zip(best, wanted)}
        row.update(best_matches=best, shift=shifts.pop() if len(shifts) == 1 else None)
        assert decode_frames(path, wanted[:1]).shape[0] == 1  # the index's own decoder reads it
    except Exception as err:  # a report row, as for the clips
        row["error"] = _error_text(err)
    return row


def _size_change_row(out_dir: str, decoder: str, device_id: int | None) -> dict:
    """What the decoder gives for a stream whose picture size changes within it (96x64, then 160x128 from frame
    12): DALI 2.4's GPU decoder keeps its first size, by its source; the loader checks sizes on the CPU routes only."""
    from dali_pipelines.pipelines import decode_with_dali
    from dali_pipelines.pyav_encode import write_size_change

    path = os.path.join(out_dir, "numbering_size_change_h264.mkv")
    row: dict = {"clip": os.path.basename(path), "cut": "picture size 96x64, then 160x128 from frame 12"}
    try:
        write_size_change(path, _textured_frames(True)[:12], _textured_frames(False)[12:36])
        wanted = [5, 20]
        (decoded,) = decode_with_dali([path], [wanted], device=decoder, device_id=device_id)
        row.update(indices=wanted, decoded_shapes=[list(f.shape) for f in decoded])
    except Exception as err:  # noqa: BLE001 - what the decoder does is the row
        row["error"] = _error_text(err)
    return row


def cpu_decodable(clips: list[str]) -> tuple[list[str], list[dict]]:
    """The clips DALI's CPU decoder can decode (VP8/VP9/MJPEG) and, for the others, ``{"clip", "codec", "reason"}``,
    each also named on stderr. A clip PyAV cannot open is kept: its comparison fails with the reason, as any other
    failure does."""
    from dali_pipelines.routing import DALI_CPU_CODECS

    kept, skipped = [], []
    for path in clips:
        try:
            with av.open(path) as container:
                codec = container.streams.video[0].codec_context.name
        except Exception:  # noqa: BLE001 - compare_clip reports it
            kept.append(path)
            continue
        if codec in DALI_CPU_CODECS:
            kept.append(path)
        else:
            skipped.append({"clip": os.path.basename(path), "codec": codec,
                            "reason": f"{codec}: DALI's CPU decoder takes only VP8/VP9/MJPEG; this comparison needs "
                                      "--decoder mixed (NVDEC, on a GPU machine)"})
            print(f"skipped {skipped[-1]['clip']}: {skipped[-1]['reason']}", file=sys.stderr)
    return kept, skipped


def main(argv: list[str] | None = None) -> int:
    p = common.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--decoder", default="mixed", choices=("mixed", "cpu"),
                   help="DALI backend to check: mixed (NVDEC, a CUDA GPU) or cpu (DALI's CPU decoder, which takes "
                        "VP8/VP9/MJPEG only: clips in other codecs, e.g. H.264 or MPEG-4, are skipped, each named "
                        "with its codec on stderr and in the report's 'skipped'; they need --decoder mixed)")
    p.add_argument("--real-dir", type=common.home_path, default=None,
                   help="folder of real clips (*.mp4, *.mov, *.avi, *.webm, *.mkv, any case) to include (its "
                        "H.264/MPEG-4 clips are compared with --decoder mixed only)")
    p.add_argument("--clips", type=common.home_path, nargs="*", default=[], help="more clips to include")
    p.add_argument("--tmp", type=common.home_path, default=None,
                   help="where synthetic clips are written (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="small synthetic clips only (with --decoder cpu: VP9)")
    p.add_argument("--json", type=common.home_path, help="write the results to this JSON file")
    args = p.parse_args(argv)
    if args.decoder == "mixed" and not hardware.cuda_available():  # else DALI's CUDA assertion for every clip
        p.error("--decoder mixed (the default) checks NVDEC and needs a CUDA GPU, and none is usable here; "
                "--decoder cpu checks DALI's CPU decoder")
    problem = cli.output_files_problem(args)
    if problem:  # before any clip is decoded, not when the report is written
        p.error(problem)
    missing = [c for c in args.clips if not os.path.isfile(c)]
    if missing:  # a mistyped clip was found missing after every other clip and probe had run (exit code 1)
        p.error("--clips: " + "; ".join(f"{c} {not_a_file(c)}" for c in missing) + "; give video files")
    kept = ("--json holds the report of the clips compared so far, if any, with \"complete\": false" if args.json
            else "nothing was written (no --json)")
    cli.say_what_an_interrupt_keeps(kept)
    tmp = args.tmp or tempfile.mkdtemp(prefix="eva_parity_")
    try:
        return cli.until_stopped(lambda: compare(args, tmp), kept)
    finally:
        if not args.tmp:  # the synthetic clips of this run only: a folder left behind by every run, stopped or not
            shutil.rmtree(tmp, ignore_errors=True)


def compare(args, tmp: str) -> int:
    """Compare the clips, run the probes and print the report; ``main()``'s work, its exit code."""
    os.makedirs(tmp, exist_ok=True)
    failures: list[dict] = []
    clips = list(args.clips) + _real_clips(args, failures)
    skipped = []
    if args.decoder == "cpu":  # else each such clip fails deep inside DALI, with a long traceback per clip
        clips, skipped = cpu_decodable(clips)  # (each named on stderr)
    clips += synthetic_clips(tmp, "h264" if args.decoder == "mixed" else "vp9", args.quick)
    device_id = 0 if args.decoder == "mixed" else None
    report = parity_report.Report(args.decoder, args.json, hardware.machine_info(), failures=failures,
                                  skipped=skipped)
    seconds = _measure(report, clips, tmp, device_id, args.quick)
    parity_report.print_report(report, len(clips), seconds, MATRICES)
    bad = report.failures or [r for r in report.results if r["found"] < r["asked"]]
    return 1 if bad else 0


def _real_clips(args, failures: list[dict]) -> list[str]:
    """The video files of ``--real-dir`` (none without it). Missing reference clips fail the run (exit 1, a row of
    ``failures``) without stopping it: on a short visit to a GPU machine the synthetic clips and the seek probe are
    still worth measuring."""
    from tools.kinetics.video_names import is_video_file  # also .MP4 and .mov; no macOS ._ file

    if not args.real_dir:
        return []
    real = (sorted(os.path.join(args.real_dir, f) for f in os.listdir(args.real_dir)
                   if is_video_file(f) and os.path.isfile(os.path.join(args.real_dir, f)))
            if os.path.isdir(args.real_dir) else None)
    if not real:
        why = ("no video files there" if real is not None
               else "a file, not a folder (of clips)" if os.path.exists(args.real_dir)  # was "no such folder"
               else "no such folder (the reference clips: EVA_SHARED_DIR/data/real)")
        flag = flags_as_typed("--real-dir", args)  # --real_dir, if so typed
        failures.append({"clip": f"{flag} {args.real_dir}", "error": why})
        print(f"error: {flag} {args.real_dir}: {why}; going on with the other clips", file=sys.stderr)
    return real or []


def _measure(report: parity_report.Report, clips: list[str], tmp: str, device_id: int | None, quick: bool) -> float:
    """Compare the clips, then run the seek probe and the numbering probe, into ``report`` (saved after each);
    returns the seconds the clips took."""
    t0 = time.perf_counter()
    for path in clips:
        try:
            report.results.append(compare_clip(path, report.decoder, device_id))
        except Exception as err:  # one clip's failure is a row of the report, not the end of it
            report.failures.append({"clip": os.path.basename(path), "error": _error_text(err)})
        report.save(time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    try:
        report.seek = seek_probe(tmp, report.decoder, device_id, quick)
    except Exception as err:  # a report row, as for the clips
        report.seek = {"error": _error_text(err)}
    report.save(seconds)
    # Last: its stream whose picture size changes is the one most likely to take NVDEC down with the process (DALI
    # 2.4 keeps the decoder it made for the first size), and the report saved so far then keeps the seek verdict.
    report.numbering = numbering_probe(tmp, report.decoder, device_id, quick)
    report.finished = True
    report.save(seconds)
    return seconds


if __name__ == "__main__":
    from evautil.interrupt import stdout_may_close
    sys.exit(stdout_may_close(main, printing_only_without=("--json", "--plot")))  # | head: done at once
