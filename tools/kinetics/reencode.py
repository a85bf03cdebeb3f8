"""Re-encoding a video tree to short-GOP H.264, resumable: the plan of source and output paths and the workers (one
video's encode and verification: ``encode.py``; the one run that writes into a --dst at a time, and what stopped
runs left there: ``dst_ownership.py``; whether an output is still its source's: ``source_record.py``; the settings
of the runs whose videos are in the tree: ``reencode_settings.py``; the report: ``reencode_report.py``)."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import time
from dataclasses import asdict
from typing import Callable

from dali_pipelines.pyav_probe import count_frames
from evautil.files import hold_lock
from evautil.progress import counted, stderr_line
from evautil.workers import WorkerTimeoutError

from .common import KineticsError, parallel_imap, walk_progress
from .dst_ownership import (LOCK_FILE, encoding_for, name_this_run, refuse_runs_above_or_below, remove_stale_parts,
                            wait_for_stopped_encodes, walk_dst)
from .encode import EncodeSettings, check_encode_settings, check_h264_encoder, reencode_video
# (each name these two modules took from this one is still importable from here)
from .reencode_report import REPORT_FILES, REPORT_JSON, REPORT_MD, VANISHED, _without_name  # noqa: F401
from .reencode_report import changed_text as _changed_text
from .reencode_report import write_report as _write_report
from .reencode_settings import SETTING_FLAGS as _SETTING_FLAGS  # noqa: F401
from .reencode_settings import SETTINGS_RECORD, _settings_used  # noqa: F401
from .reencode_settings import earlier_settings as _earlier_settings
from .reencode_settings import refuse_other_settings as _refuse_other_settings
from .reencode_settings import same_encoding as _same_encoding
from .reencode_settings import write_settings_record as _write_settings_record
from .source_record import (append_source, compact_sources, current_source, open_record,  # noqa: F401
                            output_is_current, read_sources, source_changed, source_note, source_stat)
from .video_files import broken_link
from .video_names import VIDEO_EXTENSIONS, is_video_file, printable_path

__all__ = ["plan_reencode", "reencode_tree", "default_dst", "REPORT_FILES", "REPORT_JSON", "REPORT_MD",
           "SETTINGS_RECORD", "REENCODE_TIME_LIMIT_S"]

# How long one video's re-encode may take (--time-limit) before its worker is ended and the video reported as failed:
# a 10-second Kinetics clip takes seconds, and a decode that never ends (a pathological file) held the end of the
# whole run.
REENCODE_TIME_LIMIT_S = 1800.0


def plan_reencode(src_root: str, dst_root: str, progress_lines: bool = True) -> list[tuple[str, str]]:
    """``(src, dst)`` pairs for every video under ``src_root`` (recursive, sorted, links to folders followed but
    never into a folder the path is already inside, nor into ``dst_root``); ``dst`` mirrors the relative path under
    ``dst_root`` with the extension changed to ``.mp4``. A long walk says how far it got on stderr, unless
    ``progress_lines`` is False.

    Raises:
        KineticsError: missing source root, one without videos, or roots that are equal or nested (outputs would
            mix with inputs).
    """
    src_root, dst_root = os.path.abspath(src_root), os.path.abspath(dst_root)
    if not os.path.isdir(src_root):
        why = broken_link(src_root, "folder") or "does not exist or is not a directory"
        raise KineticsError(f"source root {src_root!r} {why}")
    # named by their flags: "'/d/k400/h264' is inside '/d/k400'" left the user to work out which was which
    elsewhere = f"give a --dst outside --src (by default {default_dst(src_root)}, beside it)"
    if os.path.realpath(src_root) == os.path.realpath(dst_root):
        raise KineticsError(f"--dst must differ from --src ({src_root!r}); originals are never overwritten: "
                            f"{elsewhere}")
    if _inside(dst_root, src_root):
        raise KineticsError(f"--dst {dst_root!r} is inside --src {src_root!r}, where its outputs would be sources of "
                            f"the next run; {elsewhere}")
    if _inside(src_root, dst_root):
        raise KineticsError(f"--src {src_root!r} is inside --dst {dst_root!r}, where the outputs would mix with the "
                            f"sources; {elsewhere}")
    pairs: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    gone: list[str] = []  # links, other than videos', whose target is gone
    clashes: list[tuple[str, str, str]] = []  # two sources of one output, all named at once: a download may hold many
    # Links to folders are followed (a tree of linked class folders), but never back into a folder the walk is
    # inside: a link up (``latest -> ..``) had its videos planned again on each of ~40 levels, to nested outputs.
    inside = {src_root: {os.path.realpath(src_root)}}
    # A link under --src into --dst (``h264 -> ../k400_h264``) had the outputs planned as sources, into a folder of
    # --dst that the next run planned again: one more nested copy of the tree each run.
    real_dst = os.path.realpath(dst_root)
    into_dst: list[str] = []

    def leads_into_dst(path: str) -> bool:
        if os.path.realpath(path) == real_dst or _inside(path, real_dst):
            into_dst.append(path)
            return True
        return False

    walk = walk_progress(f"reencode: looking for videos in {src_root}", "video file",  # lines only when it is long
                         lines=progress_lines)
    for dirpath, dirnames, filenames in os.walk(src_root, followlinks=True):
        chain = inside.pop(dirpath)
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and os.path.realpath(os.path.join(dirpath, d)) not in chain
                             and not leads_into_dst(os.path.join(dirpath, d)))
        for d in dirnames:
            inside[os.path.join(dirpath, d)] = chain | {os.path.realpath(os.path.join(dirpath, d))}
        for f in sorted(filenames):
            if not is_video_file(f):
                link = os.path.join(dirpath, f)
                if not f.startswith(".") and os.path.islink(link) and not os.path.exists(link):
                    gone.append(link)  # a class folder on a disk not mounted: its class would vanish unsaid
                continue
            src = os.path.join(dirpath, f)
            rel = os.path.relpath(src, src_root)
            dst = os.path.join(dst_root, os.path.splitext(rel)[0] + ".mp4")
            if dst in seen:  # x.mp4 and x.mkv: every output is .mp4
                clashes.append((seen[dst], src, dst))
                continue
            seen[dst] = src
            pairs.append((src, dst))
            walk.update()
    walk.finish()
    if clashes:
        a, b, out = clashes[0]
        others = ", ".join(printable_path(y) for _, y, _ in clashes[1:6]) + (" ..." if len(clashes) > 6 else "")
        raise KineticsError(
            f"{counted(len(clashes), 'video')} under {src_root} with another of the same name but for its extension "
            f"(every output is .mp4), e.g. {printable_path(a)} and {printable_path(b)}, both to "
            f"{printable_path(out)}; keep one of each pair: remove or move the other out of {src_root} (the same "
            f"command then goes on)" + (f"; the others: {others}" if others else ""))
    if gone:
        stderr_line(f"warning: reencode: {counted(len(gone), 'symbolic link')} under {src_root} whose target is "
                    f"gone (or a link loop), e.g. {printable_path(gone[0])} -> "
                    f"{printable_path(os.readlink(gone[0]))}: were one a class folder, none of its videos is "
                    f"re-encoded and {dst_root} lacks the class; mount or fix the targets and run again")
    if into_dst:
        stderr_line(f"warning: reencode: {counted(len(into_dst), 'symbolic link')} under {src_root} into "
                    f"{dst_root} (--dst), e.g. {printable_path(into_dst[0])}: left out, as its outputs are no "
                    f"sources (each run re-encoded them again, one folder deeper)")
    if not pairs:  # a mistyped --src (a folder of lists, a split folder's parent) "re-encoded 0 videos", exit 0
        raise KineticsError(f"no video files under source root {src_root!r} (extensions "
                            f"{' '.join(VIDEO_EXTENSIONS)}, hidden files and folders left out)")
    return pairs


def _refuse_report_dir_in_src(src_root: str, report_dir: str | None) -> None:
    """Refuse a ``report_dir`` that is ``src_root`` or inside it, as a ``dst_root`` there is: the report's files
    were written into the source tree, which is only read.

    Raises:
        KineticsError: naming both flags, and where the report can go.
    """
    if not report_dir:
        return
    src_root, report_dir = os.path.abspath(src_root), os.path.abspath(report_dir)
    if os.path.realpath(report_dir) == os.path.realpath(src_root):
        where = f"--src ({src_root!r})"
    elif _inside(report_dir, src_root):
        where = f"inside --src {src_root!r}"
    else:
        return
    raise KineticsError(f"--report-dir {report_dir!r} is {where}, where {' and '.join(REPORT_FILES)} would be "
                        f"written among the sources, which are only read; give a --report-dir outside --src, or "
                        f"leave it out (the report then goes to --dst)")


def default_dst(src_root: str) -> str:
    """Where the outputs of ``src_root`` go without --dst: ``<src_root>_h264``, beside it."""
    return os.path.abspath(src_root).rstrip(os.sep) + "_h264"


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` is below ``folder``, links resolved (a folder is not inside itself)."""
    return os.path.realpath(path).startswith(os.path.realpath(folder).rstrip(os.sep) + os.sep)


# Errors of the output's file system, never of the video being encoded (sources are only read): every video after
# one would fail the same way, each decoded first; a full disk marched on through the whole tree, every video
# reported as failed.
_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _output_error(e: BaseException | None) -> OSError | None:
    """The OSError of the output's file system (:data:`_OUTPUT_ERRNOS`) behind ``e``, if any: the encoder's error
    is wrapped in KineticsError, and one raised while closing the output comes after it."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _OUTPUT_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
    return None


def _reencode_job(args: tuple[str, str, EncodeSettings, tuple[str, str]]) -> dict:
    src, dst, settings, run = args
    t0 = time.perf_counter()
    stat = source_stat(src)  # before the encode: a source replaced meanwhile is changed for the next run
    try:
        with encoding_for(run) as ours:
            if not ours:  # a worker of a run that was stopped: its videos are the new run's now
                raise KineticsError(f"{src}: not re-encoded: another re-encode took over {run[0]} (its "
                                    f"{LOCK_FILE} names that run now)")
            r = reencode_video(src, dst, settings, source_note(stat) if stat is not None else "")
        r["ok"], r["source_stat"] = True, stat
    except Exception as e:  # keep the pool alive whatever one file does; the report names it
        r = {"src": src, "dst": dst, "ok": False,
             "error": str(e) if isinstance(e, KineticsError) else f"{src}: {type(e).__name__}: {e}"}
        out = _output_error(e)
        if out is not None:  # the run stops on it (reencode_tree): a string, as results come back pickled
            r["output_error"] = f"{out.filename or os.path.dirname(dst)}: {out.strerror or os.strerror(out.errno)}"
        elif not os.path.lexists(src):  # deleted or moved since the plan listed it: not a damaged video
            r["error"], r["vanished"] = f"{src}: {VANISHED}: deleted or moved after the run listed it", True
    r["seconds"] = round(time.perf_counter() - t0, 3)
    return r


def _reencode_crashed(args: tuple[str, str, EncodeSettings, tuple[str, str]], how: str) -> dict:
    """The report row of a file whose re-encode killed its worker process (FFmpeg crashing on a damaged file); the
    partial output that worker left is removed."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(args[1] + ".part")
    return {"src": args[0], "dst": args[1], "ok": False, "error": f"{args[0]}: re-encoding it crashed the process: "
            f"{how}", "seconds": 0.0}


def _reencode_overdue(args: tuple[str, str, EncodeSettings, tuple[str, str]], how: str) -> dict:
    """The report row of a file whose re-encode gave no result within the time limit (its worker is ended by
    then); its partial output is removed."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(args[1] + ".part")
    return {"src": args[0], "dst": args[1], "ok": False, "error": f"{args[0]}: re-encoding it did not finish in time "
            f"({how}; a decode that never ends, or a video too long for --time-limit)", "seconds": 0.0}


def reencode_tree(src_root: str, dst_root: str | None = None, settings: EncodeSettings = EncodeSettings(), *,
                  workers: int = 1, dry_run: bool = False, progress: bool = True, report_dir: str | None = None,
                  log: Callable[[str], None] = print, allow_other_settings: bool = False,
                  progress_lines: bool = True, time_limit_s: float = REENCODE_TIME_LIMIT_S) -> dict:
    """Re-encode every video under ``src_root`` into ``dst_root`` (default: ``<src_root>_h264`` beside it).

    Resumable: a file whose output already exists is skipped (outputs only appear under their final name after
    verification), unless its source changed since that output was written (another size or mtime than the tree's
    record, :data:`~tools.kinetics.source_record.SOURCES_RECORD`, holds for it; without that line: another source
    than the one noted in the output, or for an output noting none, a source newer than it; or the output is not
    whole: :func:`~tools.kinetics.source_record.current_source`): encoded again, counted in ``source_changed``; an
    output kept without its line gets it; unless ``allow_other_settings``, only with
    settings (but ``threads``) that an earlier run whose videos are in the tree used, so that one tree never mixes
    encodings unasked: the report's ``settings_used`` keeps every such run's settings (this run's added when it
    encoded a video), each run's report replacing the last, and so does the tree's own record,
    :data:`SETTINGS_RECORD` in ``dst_root`` (read first, so that a ``report_dir`` changed between runs changes
    nothing; written before the first encode too, so that it holds after a run killed outright). Failures are
    collected, not raised; the report is
    written to ``report_dir`` (default ``dst_root``) as ``reencode_report.json`` and ``.md``, also when the run is
    interrupted (``"interrupted"``: then every output on disk counts as done, and the ``.part`` files of the
    stopped encodes are removed).
    Results are folded into the report as they come: nothing is kept per encoded file but its warnings and
    failures (a 650,000-video tree held a result dict per video). One run at a time writes into a ``dst_root``
    (:data:`LOCK_FILE`): a second one raises KineticsError, and one that follows a run killed outright waits for
    that run's workers to end first (:func:`wait_for_stopped_encodes`); every run then removes the partial outputs
    that stopped encodes left in the tree (:func:`remove_stale_parts`).
    A video whose re-encode gives no result within ``time_limit_s`` seconds (0: no limit) is a failure (its worker
    ended, no output left) and the others go on; ``MAX_OVERDUE_IN_A_ROW`` such videos in a row stop the run as a
    full disk does (the storage, not the videos). One worker with a limit is a worker process as well; without a
    limit the encodes of one worker run in this process.
    ``progress`` draws a bar; without one, plain progress lines go to stderr (the walks' when long, the encodes'
    every 30 s) unless ``progress_lines`` is False; ``log`` gets the summary either way.

    Returns:
        ``{"src_root", "dst_root", "settings", "settings_used", "total", "skipped_existing", "source_changed", "done",
        "failed": [...], "vanished", "warnings": [...], "frames", "seconds", "interrupted"}``; ``source_changed``
        counts the outputs found stale (their source changed since), which are among the videos to encode (``done``
        or ``failed``); ``vanished`` counts the failed whose source was deleted or moved after the plan listed it.
    """
    dst_root = os.path.abspath(dst_root or default_dst(src_root))
    _refuse_report_dir_in_src(src_root, report_dir)  # before the walk of --src, as a --dst there is refused
    pairs = plan_reencode(src_root, dst_root, progress_lines)
    outputs = walk_progress(f"reencode: looking for finished outputs in {dst_root}", "video", len(pairs),
                            lines=progress_lines)
    sources, _ = read_sources(dst_root)
    todo, unrecorded = [], []
    for s, d in pairs:
        stat = current_source(s, d, sources.get(d))
        if stat is None:
            todo.append((s, d))
        elif sources.get(d) != stat:  # finished, but its run was stopped before its line: checked, and kept
            unrecorded.append((d, stat))
        outputs.update()
    outputs.finish()
    changed = sum(1 for s, d in todo if source_changed(s, d, sources.get(d)))  # (not one cut short: not done)
    skipped = len(pairs) - len(todo)
    report_path = os.path.join(report_dir or dst_root, REPORT_JSON)
    # nothing skipped: every output is (re)written by this run, so no earlier run's encoding stays in the tree
    earlier, seen_in = _earlier_settings(dst_root, report_path) if skipped else ([], report_path)
    report = {"src_root": os.path.abspath(src_root), "dst_root": dst_root, "settings": asdict(settings),
              "settings_used": earlier, "total": len(pairs), "skipped_existing": skipped, "source_changed": changed,
              "done": 0, "failed": [], "vanished": 0, "warnings": [], "frames": 0, "seconds": 0.0, "interrupted": False}
    if skipped and not allow_other_settings:
        try:
            _refuse_other_settings(dst_root, seen_in, settings, earlier)
        except KineticsError as e:
            if not dry_run:
                raise
            log(f"[dry-run] the run would stop here: {e}")
    if dry_run:
        log(f"[dry-run] would re-encode {len(todo)} of {len(pairs)} videos from {printable_path(report['src_root'])} "
            f"into {printable_path(dst_root)} (H.264, short side {settings.short_side}, GOP {settings.gop}, no "
            f"B-frames); {report['skipped_existing']} already done" + _changed_text(report))
        for s, d in todo[:5]:  # one line each, UTF-8 (a name that is not UTF-8 was a traceback on a strict stdout)
            log(f"            {printable_path(s)} -> {printable_path(d)}")
        return report
    check_h264_encoder()
    check_encode_settings(settings)
    # One run at a time per tree: two runs into the same --dst wrote the same .part files at once, and renamed
    # each other's half-written files into place, where every resume skips them as done.
    lock = hold_lock(os.path.join(dst_root, LOCK_FILE))
    if lock is None:
        raise KineticsError(f"another re-encode into {dst_root} is running (it holds {LOCK_FILE} there): two at "
                            f"once would write the same files; wait for it to end (the same command then goes on "
                            f"with what is left), or give another --dst")
    with lock:
        # named first: an encode of the stopped run that checks the name after the wait leaves its video to this run
        run = (dst_root, name_this_run(lock))
        wait_for_stopped_encodes(dst_root)
        # One walk of --dst for both, after the wait (a stopped encode may leave a .part until then): other runs'
        # locks, looked for after this run's own lock (of two starting at once, each finds the other's) and before
        # any .part is removed (it may be a running inner run's), and the stale .part files.
        walked = walk_dst(dst_root, progress_lines)
        refuse_runs_above_or_below(dst_root, pairs, progress_lines, walked)
        remove_stale_parts(dst_root, progress_lines, walked)
        compact_sources(dst_root)
        if unrecorded:  # their lines now, so that a later change of their source is seen without a probe
            with open_record(dst_root) as record:
                for d, stat in unrecorded:
                    append_source(record, dst_root, d, stat)
        return _encode(report, todo, earlier, settings, run, workers, progress, report_dir, log, progress_lines,
                       time_limit_s, sources)


def _encode(report: dict, todo: list[tuple[str, str]], earlier: list[dict], settings: EncodeSettings,
            run: tuple[str, str], workers: int, progress: bool, report_dir: str | None, log: Callable[[str], None],
            progress_lines: bool, time_limit_s: float = 0, sources: dict | None = None) -> dict:
    """:func:`reencode_tree`'s work once planned: encode ``todo``, fold the results into ``report`` and write it
    and the tree's settings record (``earlier``: the settings of the runs whose videos are in the tree); ``run``
    names this run to its encodes (:func:`encoding_for`). Each video encoded adds its source's size and mtime to
    the tree's record of them (``sources``: that record as read before)."""
    dst_root = report["dst_root"]
    # The tree's record names this run's settings before its first video can appear in the tree: written only at
    # the end, a run killed outright (SIGKILL, the machine going down) left videos the record did not account for,
    # and a resume with other settings was not refused. The end of the run takes them out again if none was done.
    if todo and not any(_same_encoding(e, report["settings"]) for e in earlier):
        _write_settings_record(dst_root, earlier + [report["settings"]])
    new_folders = _missing_folders(dst_root, todo)
    t0 = time.perf_counter()
    report["interrupted"] = True  # until every file has a result
    results = parallel_imap(_reencode_job, [(s, d, settings, run) for s, d in todo], workers, "re-encode", progress,
                            on_crash=_reencode_crashed, lines=progress_lines, timeout=time_limit_s,
                            on_timeout=_reencode_overdue)
    received, output_error = 0, None
    record = open_record(dst_root) if todo else None
    try:
        for r in _unless_overdue_in_a_row(results, time_limit_s):
            if isinstance(r, str):
                output_error = r
                break
            received += 1
            if r.get("output_error"):
                output_error = r["output_error"]
                break
            if r["ok"]:
                if r.get("source_stat") is not None:
                    append_source(record, dst_root, r["dst"], tuple(r["source_stat"]))
                report["done"] += 1
                report["frames"] += r["frames"]
                for wmsg in r.get("warnings", []):
                    report["warnings"].append({"src": r["src"], "warning": wmsg})
            else:
                report["failed"].append({"src": r["src"], "error": r["error"]})
                report["vanished"] += bool(r.get("vanished"))
        report["interrupted"] = output_error is not None
    finally:
        results.close()  # ends the workers, so that the files left below are final
        try:
            if report["interrupted"]:
                # Results come in item order, so the files after the first `received` were never reported,
                # although some were finished (in a worker's batch still running, or behind a slower file).
                _settle_unreported(report, todo[received:], sources or {}, record)
        finally:
            if record is not None:
                record.close()
        _remove_empty(new_folders)
        report["seconds"] = round(time.perf_counter() - t0, 2)
        if report["done"] and not any(_same_encoding(e, report["settings"]) for e in earlier):
            report["settings_used"] = earlier + [report["settings"]]  # this run's videos are in the tree now
        try:
            _write_report(report, report_dir or dst_root, log)
        except OSError:
            if output_error is None:
                raise
            output_error += " (nor could the report be written)"
        try:
            _write_settings_record(dst_root, report["settings_used"])
        except OSError:
            if output_error is None:
                raise
            output_error += f" (nor could {os.path.join(dst_root, SETTINGS_RECORD)} be written)"
    if output_error is not None:
        raise KineticsError(f"{output_error}: re-encoding stopped, as every video after it would fail the same way; "
                            f"the {report['done']} videos finished are kept, and the same command goes on with the "
                            f"rest once the output can be written")
    return report


def _missing_folders(dst_root: str, pairs: list[tuple[str, str]]) -> list[str]:
    """The output folders of ``pairs``, and those between them and ``dst_root``, that are not there yet, deepest
    first: the ones this run may make."""
    missing: set[str] = set()
    for folder in {os.path.dirname(d) for _, d in pairs}:
        while folder.startswith(dst_root + os.sep) and folder not in missing and not os.path.isdir(folder):
            missing.add(folder)
            folder = os.path.dirname(folder)
    return sorted(missing, key=lambda f: f.count(os.sep), reverse=True)


def _remove_empty(folders: list[str]) -> None:
    """Remove those of ``folders`` (deepest first) that are empty once the workers have ended: a class whose every
    source failed left an empty folder in --dst, an empty class to the lists of that tree. A folder something was
    written into stays."""
    for folder in folders:
        with contextlib.suppress(OSError):  # not empty (or gone): kept as it is
            os.rmdir(folder)


def _unless_overdue_in_a_row(results, time_limit_s: float):
    """``results``, then the error (a str) if several videos in a row gave no result in time: the storage."""
    try:
        yield from results
    except WorkerTimeoutError as e:  # its message names the last video by its path (parallel_imap's describe)
        yield f"re-encoding stopped (--time-limit {time_limit_s:g} s): {e}"


def _settle_unreported(report: dict, pairs: list[tuple[str, str]], sources: dict[str, tuple[int, int]],
                       record) -> None:
    """After an interruption: count into ``report`` the outputs of ``pairs`` that are on disk although no result
    said so (and of their source as it is, by ``sources``, the record read before the run, or the source noted in
    the output: a stale output the run did not reach is not done), add their lines to ``record`` (the tree's, open),
    and remove the ``.part`` files of the encodes that were stopped (their workers were killed).

    An output gets its name only once verified, so each is a finished video; its frames are read from the MP4
    header (the verified count), its warnings are not known. A listing per folder, not a look-up per file: a run
    stopped early leaves most of a large tree in ``pairs`` (which plan_reencode lists folder by folder).
    """
    import av

    for folder, group in itertools.groupby(pairs, key=lambda pair: os.path.dirname(pair[1])):
        try:
            present = set(os.listdir(folder))
        except FileNotFoundError:
            continue
        for src, dst in group:
            name = os.path.basename(dst)
            if name + ".part" in present:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(dst + ".part")
            stat = current_source(src, dst, sources.get(dst)) if name in present else None
            if stat is None:
                continue
            if record is not None and sources.get(dst) != stat:
                append_source(record, report["dst_root"], dst, stat)
            report["done"] += 1
            try:
                with av.open(dst) as c:
                    report["frames"] += c.streams.video[0].frames or count_frames(dst)
            except Exception:  # a file this run wrote and verified: whatever its header says, it is done
                pass
