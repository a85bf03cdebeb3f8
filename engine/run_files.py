"""An OUTPUT directory across attempts: a run that resumes drops the lines its lost steps left in metrics.jsonl; files
another run or attempt left that this one would mix with, rotate away or overwrite move into earlier_runs/<time>/
(which files, and when, is decided by ``run_start.open_run``). The run lock (``claim_output``) keeps a second run out
of OUTPUT and names the process and host that hold it."""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import glob
import json
import math
import os
import pwd
import shutil
import socket
import time
from typing import IO, Any, Collection

from evautil.files import (atomic_temp_files, atomic_temp_glob, atomic_temp_target, atomic_write, atomic_write_text,
                           hold_lock, lock_is_free, naming_the_file)
from evautil.progress import counted, format_bytes

__all__ = ["EARLIER_RUNS_DIR", "RUN_LOCK", "PLOT_FILES", "claim_output", "release_output", "hold_outputs_to_exit",
           "release_held_outputs", "claimed_elsewhere", "earlier_run_files",
           "move_earlier_run", "move_earlier_results", "move_aside", "results_files", "drop_lines_after",
           "recorded_path", "standard_json", "remove_killed_writes", "killed_writes"]

EARLIER_RUNS_DIR = "earlier_runs"
# Held by rank 0 of the run writing OUTPUT (claim_output): a second run into the same OUTPUT at the same time (a job
# requeued while its first attempt still ends, the same command started twice) would move the first run's files
# aside while it writes them, and mix its lines and checkpoints with them.
RUN_LOCK = ".run.lock"
_CLAIMED: dict[str, IO[str]] = {}  # OUTPUT folders this process holds, by absolute path
_held_to_exit = False  # True: release_output lets go of nothing until release_held_outputs
# The plots engine.plots writes (into OUTPUT, or tools/plot_run.py's --out)
PLOT_FILES = ("training_curves.png", "confusion_*.png")
# What a run writes into OUTPUT (README, "What a run writes"), except its log_rank*.txt (they stay and grow, a
# history of every attempt) and exit_status.json (how the last process ended, rewritten as each one ends). The
# first group marks an earlier run; the second only comes along with it.
_RUN_MARKERS = ("ckpt_*.pth", "best.pth", "metrics.jsonl", "summary.json")
_RUN_COMPANIONS = (atomic_temp_glob("ckpt_*.pth"), atomic_temp_glob("best.pth"), "config.yaml", "predictions_*.csv",
                   "per_class_*.csv", *PLOT_FILES, "tensorboard",
                   "ckpt_*.pth.damaged*",  # a damaged checkpoint a resume passed over (Checkpointer.find_latest)
                   "test_progress.json",  # a stopped final test's videos (engine.test_progress): that run's only
                   "only_test_progress.json")  # a stopped --only_test's: set aside with the run that held it
# The run files written whole by a temporary file renamed into place (checkpoints aside): a kill mid-write leaves
# that temporary file behind. The predictions and per-class tables are engine.evaluate's, the progress files of a
# stopped test engine.test_progress's, the exit status engine.process_end's, the plots engine.plots'.
_WRITTEN_WHOLE = ("summary.json", "config.yaml", "metrics.jsonl", "predictions_*.csv", "per_class_*.csv",
                  "test_progress.json", "only_test_progress.json", "exit_status.json", *PLOT_FILES)
# What an evaluate-only run writes over (its eval line is appended to metrics.jsonl; the plots are redrawn from it).
# config.yaml is copied, not moved: the evaluation writes its own only with its results, so that one stopped before
# them leaves the config of the checkpoints and log beside it.
_EVALUATION_RESULTS = ("summary.json", "predictions_test.csv", "per_class_test.csv", "confusion_test.png")


def standard_json(value: Any, indent: int | None = None) -> str:
    """``value`` as standard JSON, a number that is not finite (a NaN loss, an infinite gradient norm or rate) as
    null: Python's json writes the bare NaN and Infinity, which jq and other JSON readers refuse, whole file and all.
    Python's json still reads such files of older versions (as NaN), and every reader here takes null as no value."""
    return json.dumps(_finite_or_null(value), indent=indent, allow_nan=False)


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def recorded_path(path: str | None) -> str | None:
    """``path`` as a run's files record it (summary.json, a checkpoint's record of the file it continued):
    absolute, since a relative path names a file only from the run's working folder, but not resolved (abspath, not
    realpath: a link the user chose stays the link). None, "" and an ``hf://`` reference are kept as they are."""
    return path if not path or "://" in path else os.path.abspath(path)


def claim_output(output_dir: str) -> None:
    """Hold ``output_dir``'s RUN_LOCK until :func:`release_output` (or this process ends); once held, remove the
    temporary files that killed writes of the run's summary, config, metrics, predictions, per-class tables, test
    progress, exit status and plots left there.

    Raises:
        ValueError: another process holds it, or it is another user's that this one may not open, naming the
            folder.
    """
    key = os.path.abspath(output_dir)
    if key in _CLAIMED:
        return
    lock = os.path.join(key, RUN_LOCK)
    try:
        held = hold_lock(lock)
    except PermissionError as e:
        owner = _other_owner(lock)
        if not owner:  # this user's own lock, or a folder it may not write: "cannot access" says that
            raise
        if lock_is_free(lock):  # else a live run of that user: refused below, naming it
            raise ValueError(f"OUTPUT {output_dir}: its run lock {lock} belongs to {owner}, and this user may not "
                             f"open it ({e.strerror}): give this run another OUTPUT, or, once no run of theirs is "
                             "live, ask its owner to remove the lock (or remove it yourself, with write access to "
                             "the folder)") from e
        held = None
    if held is None:
        holder = _lock_holder(lock)
        raise ValueError(f"OUTPUT {output_dir} is being written by another run ({holder or 'it'} holds {RUN_LOCK} "
                         "there): wait for it to end, or give this run another OUTPUT")
    try:  # who holds it, for the line of a run it refuses (the lock, not this text, is what refuses it)
        held.truncate(0)
        held.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
        held.flush()
    except OSError:  # a full disk: the refusal then does without the name
        pass
    _CLAIMED[key] = held
    remove_killed_writes(key)


def remove_killed_writes(output_dir: str, patterns: tuple[str, ...] = _WRITTEN_WHOLE) -> None:
    """Remove the hidden temporary files that a process killed while it wrote one of ``patterns`` (by default
    ``_WRITTEN_WHOLE``: a run's summary, config, metrics, predictions, per-class tables, test progress, exit status,
    plots) left in ``output_dir`` (the checkpoints' own are the Checkpointer's, before each save): nothing else
    would, and they stayed there for good. Those of a write still going on stay (:func:`killed_writes`): two
    ``tools/plot_run.py`` into one ``--out``, or one redrawing a run's plots while the next run takes OUTPUT, each
    removed the other's mid-write, and its plot failed."""
    temps = [path for name in _written_whole_names(output_dir, patterns)
             for path in atomic_temp_files(os.path.join(output_dir, name))]
    for path in killed_writes(temps):
        try:
            os.remove(path)
        except OSError:  # one that cannot be removed is left, as before: the run needs none of them
            pass


# A write holds its temporary file open until just before the rename, and writes it without pausing for long. One that
# no process of its owner holds open and untouched for _QUIET_S is a killed write's; one untouched for _STALE_S is
# even where its writer could not be seen (another user's file, no /proc, a process on another host).
_QUIET_S = 60.0
_STALE_S = 3600.0


def killed_writes(temps: list[str]) -> list[str]:
    """Those of ``temps`` (temporary files of atomic writes) that a killed process left, not a live one's: the one
    rule of every clean-up of them (this module's, the Checkpointer's before each save)."""
    now, me = time.time(), os.geteuid()
    killed, quiet = [], {}
    for path in temps:
        try:
            found = os.stat(path)
        except OSError:  # gone meanwhile: its write ended
            continue
        if now - found.st_mtime >= _STALE_S:
            killed.append(path)
        elif now - found.st_mtime >= _QUIET_S and found.st_uid == me:
            quiet[(found.st_dev, found.st_ino)] = path
    held = _files_held_open(me) if quiet else None
    if held is not None:
        killed += [path for key, path in quiet.items() if key not in held]
    return killed


def _files_held_open(uid: int) -> set[tuple[int, int]] | None:
    """The (device, inode) of every file the processes of user ``uid`` on this host hold open; None without /proc."""
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return None
    held = set()
    for pid in pids:
        fds = f"/proc/{pid}/fd"
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            names = os.listdir(fds)
        except OSError:  # ended meanwhile, or not this user's to read
            continue
        for name in names:
            try:
                found = os.stat(os.path.join(fds, name))  # the open file itself (the link is followed)
            except OSError:
                continue
            held.add((found.st_dev, found.st_ino))
    return held


def _written_whole_names(output_dir: str, patterns: tuple[str, ...]) -> list[str]:
    """The names matching ``patterns`` of the files in ``output_dir`` (one that is a link has its temporary files
    beside the file it names) and of those a killed write left a temporary file of there (a first write's has no
    file beside it)."""
    temps = _matching(output_dir, tuple(atomic_temp_glob(pattern) for pattern in patterns))
    written = {atomic_temp_target(temp) for temp in temps}
    return sorted({n for n in written if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
                  | set(_matching(output_dir, patterns)))


def _other_owner(path: str) -> str:
    """The user owning the file at ``path`` ("user <name>", "user id <uid>" without a name) when it is not this
    process's; "" when it is, or when it cannot be asked."""
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return ""
    if uid == os.geteuid():
        return ""
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"user id {uid}"


def _lock_holder(path: str) -> str:
    """"process <pid> on <host>", as the holder of the lock at ``path`` wrote it; "" when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.loads(f.read(4096))
        pid, host = record["pid"], record["host"]
    except (OSError, ValueError, TypeError, KeyError):
        return ""
    if not isinstance(pid, int) or not isinstance(host, str) or not host.isprintable() or len(host) > 255:
        return ""
    return f"process {pid} on {host}"


def release_output(output_dir: str) -> None:
    """Let go of the lock :func:`claim_output` took (nothing when this process holds none, and nothing yet after
    :func:`hold_outputs_to_exit`)."""
    if _held_to_exit:
        return
    held = _CLAIMED.pop(os.path.abspath(output_dir), None)
    if held is not None:
        held.close()


def hold_outputs_to_exit() -> None:
    """Keep every run lock this process takes until :func:`release_held_outputs`, whatever lets go of its run before:
    the process's exit status is written into OUTPUT after its run is closed, and a new run that took OUTPUT in
    between removed that write's temporary file with the other killed writes (the status was lost)."""
    global _held_to_exit
    _held_to_exit = True


def release_held_outputs() -> None:
    """Let go of every run lock this process holds (the end of :func:`hold_outputs_to_exit`)."""
    global _held_to_exit
    _held_to_exit = False
    for key in list(_CLAIMED):
        release_output(key)


def claimed_elsewhere(output_dir: str) -> str:
    """Who holds ``output_dir``'s RUN_LOCK now when another process does ("process <pid> on <host>", "another run"
    when its record cannot be read), else "" (a run refused because of it writes nothing there, not even its exit
    status; a dry run names it)."""
    key = os.path.abspath(output_dir)
    if key in _CLAIMED or not os.path.exists(os.path.join(key, RUN_LOCK)):
        return ""
    lock = os.path.join(key, RUN_LOCK)
    try:
        held = hold_lock(lock)
    except OSError:  # a lock this process may not write (OUTPUT read-only, or another user's): asked read-only
        return "" if lock_is_free(lock) else _lock_holder(lock) or "another run"
    if held is None:
        return _lock_holder(lock) or "another run"
    held.close()
    return ""


def earlier_run_files(output_dir: str, keep: Collection[str] = ()) -> list[str]:
    """Names of the files (and the tensorboard folder) an earlier run left in ``output_dir``, but ``keep`` (paths
    a new run still reads, e.g. MODEL.PRETRAINED); empty when it holds no checkpoint, best.pth, non-empty
    metrics.jsonl or summary.json (a run that stopped before writing any)."""
    markers = [n for n in _matching(output_dir, _RUN_MARKERS)
               if n != "metrics.jsonl" or os.path.getsize(os.path.join(output_dir, n)) > 0]
    kept = {os.path.realpath(p) for p in keep if p}
    return [n for n in sorted(markers + _matching(output_dir, _RUN_COMPANIONS))
            if os.path.realpath(os.path.join(output_dir, n)) not in kept] if markers else []


def _matching(output_dir: str, patterns: tuple[str, ...]) -> list[str]:
    """Names in ``output_dir`` matching any of ``patterns``, sorted; the folder's own name is taken literally."""
    folder = glob.escape(output_dir)
    return sorted({os.path.basename(p) for pattern in patterns for p in glob.glob(os.path.join(folder, pattern))})


def move_earlier_run(output_dir: str, keep: Collection[str] = ()) -> tuple[str, list[str]] | None:
    """Move an earlier run's files into ``output_dir/earlier_runs/<time>/``, except ``keep`` (paths this run still
    reads, e.g. MODEL.PRETRAINED). Returns (that folder, the names moved), or None when there was nothing to move.
    Call it on one process, before the new run writes there."""
    return move_aside(output_dir, earlier_run_files(output_dir, keep))


def results_files(output_dir: str) -> list[str]:
    """The evaluation results in ``output_dir``: summary.json, predictions, per-class tables, confusion plots."""
    return _matching(output_dir, ("summary.json", "predictions_*.csv", "per_class_*.csv", "confusion_*.png"))


def move_earlier_results(output_dir: str) -> tuple[str, list[str]] | None:
    """Before an evaluate-only run: move the summary, test predictions and confusion plot it would overwrite (a
    training run's, or an earlier evaluation's) into ``output_dir/earlier_runs/<time>/``, with a copy of the
    config.yaml it replaces when it writes them; the checkpoints stay. With no results to move, config.yaml is
    copied aside only when no copy of it is there yet: a rerun of an evaluation stopped before its results (whose
    config.yaml went with the results it moved) would leave a folder holding a config copy alone at each rerun,
    while the config of a training run stopped before any results has no copy and must not be lost."""
    results = [n for n in _EVALUATION_RESULTS if os.path.exists(os.path.join(output_dir, n))]
    config = os.path.join(output_dir, "config.yaml")
    copied = ["config.yaml"] if os.path.isfile(config) and (results or not _copy_set_aside(output_dir, config)) else []
    return move_aside(output_dir, results, copied=copied)


def _copy_set_aside(output_dir: str, path: str) -> bool:
    """Whether a file of ``path``'s name and bytes is in one of ``output_dir``'s earlier_runs/ folders."""
    with open(path, "rb") as f:
        data = f.read()
    for copy in glob.glob(os.path.join(glob.escape(output_dir), EARLIER_RUNS_DIR, "*", os.path.basename(path))):
        try:
            with open(copy, "rb") as f:
                if f.read() == data:
                    return True
        except OSError:
            continue
    return False


def move_aside(output_dir: str, names: list[str], copied: Collection[str] = ()) -> tuple[str, list[str]] | None:
    """Move ``names`` (files or folders in ``output_dir``) into ``output_dir/earlier_runs/<time>/``, and copy the
    files ``copied`` there. Returns (that folder, ``names`` + ``copied``), or None when both are empty."""
    if not names and not copied:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = os.path.join(output_dir, EARLIER_RUNS_DIR, stamp)
    n = 1
    while os.path.exists(dest):  # two fresh starts within one second
        n += 1
        dest = os.path.join(output_dir, EARLIER_RUNS_DIR, f"{stamp}-{n}")
    made = [dest] if os.path.isdir(os.path.dirname(dest)) else [dest, os.path.dirname(dest)]
    os.makedirs(dest)
    try:
        for name in copied:  # written whole: a copy cut short must not pass for the earlier run's file
            with open(os.path.join(output_dir, name), "rb") as src:
                with naming_the_file(os.path.join(output_dir, name)):  # a failed read() or write() names no file
                    data = src.read()  # a config: small, read whole so that an error names the file it came from
            with naming_the_file(os.path.join(dest, name)):
                atomic_write(os.path.join(dest, name), lambda f, data=data: f.write(data))
        for name in names:  # a rename within one file system: no copy, even of large checkpoints
            os.replace(os.path.join(output_dir, name), os.path.join(dest, name))
    except BaseException:
        # a failure before anything went in left an empty folder, which looked like a run set aside with no file;
        # earlier_runs/ goes too when this move made it
        with contextlib.suppress(OSError):  # not empty (what went in stays), or cannot be removed
            for folder in made:
                os.rmdir(folder)
        raise
    # The summaries set aside, this one's and earlier ones' (an evaluation's move leaves the checkpoints that the
    # training's summary names in OUTPUT, until a later run moves them too).
    for summary in glob.glob(os.path.join(glob.escape(output_dir), EARLIER_RUNS_DIR, "*", "summary.json")):
        _repoint_summary(summary, output_dir, set(names), dest)
    return dest, [*names, *copied]


def _repoint_summary(summary: str, output_dir: str, moved: set[str], dest: str) -> None:
    """Rewrite the paths in ``summary`` that named the files ``moved`` from ``output_dir`` (its
    ``last_checkpoint``, ``resumed_from``, ``evaluated``) to their place in ``dest``: left as they were, they would
    name the next run's files of the same name. Files that stayed (read by the new run) keep their paths; a summary
    that is no JSON is left as it is."""
    try:
        with open(summary, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return
    # Only paths that name this folder now: a summary copied with its folder names the files of the original,
    # which did not move.
    here = os.path.realpath(output_dir)
    new_folder = os.path.relpath(dest, output_dir)

    def repoint(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: repoint(v) for k, v in value.items()}
        if isinstance(value, list):
            return [repoint(v) for v in value]
        if not isinstance(value, str) or not value or os.path.basename(value) not in moved:
            return value
        folder = os.path.dirname(value)
        if os.path.realpath(folder or ".") != here:
            return value
        return os.path.join(folder, new_folder, os.path.basename(value))

    repointed = repoint(record)
    if repointed != record:
        with naming_the_file(summary):  # a full disk's error from write() names no file
            atomic_write_text(summary, standard_json(repointed, indent=2))


def drop_lines_after(jsonl_path: str, step: int, mid_epoch: bool = False, cut: list[int] | None = None,
                     train_line_at_step: bool = False) -> int:
    """Rewrite ``jsonl_path`` without the lines whose ``step`` is above ``step`` (written by an attempt after the
    checkpoint it resumes from; the resumed run writes them again). With ``mid_epoch`` (the checkpoint was saved
    before its epoch ended, e.g. a stop at the epoch's last step), the epoch-end ``data`` and ``eval`` lines at
    ``step`` itself came after it too; with ``train_line_at_step`` (the checkpoint kept steps no line had covered,
    which the resumed run's next line covers: a stop signal's or a crash's line logged them), the ``train`` line
    at ``step`` as well. Lines without a step are kept; lines that are not JSON (cut short by a kill)
    are dropped, and their 1-based numbers, as an editor shows them (:func:`evautil.text.text_lines`), appended to
    ``cut``. Returns how many were dropped."""
    if not os.path.isfile(jsonl_path):
        return 0
    from .metrics_file import read_lines  # (not at the top: metrics_file imports this module)

    # A byte that is no UTF-8 (the file damaged on disk, a line another program wrote) makes its line one that is
    # not JSON (dropped as cut short), or is U+FFFD inside a string; it stopped the resume
    lines = list(read_lines(jsonl_path))
    kinds_at_step = ("data", "eval") * mid_epoch + ("train",) * train_line_at_step
    kept = []
    for number, line in enumerate(lines, 1):
        after = _after(line, step, kinds_at_step)
        if after is None and cut is not None:
            cut.append(number)
        if after is False:
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        text = "".join(line + "\n" for line in kept)
        try:
            with naming_the_file(jsonl_path):  # a full disk's error from write() names no file
                atomic_write_text(jsonl_path, text)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise _no_room_to_rewrite(error, jsonl_path, dropped, step, len(text.encode("utf-8"))) from error
    return dropped


def _no_room_to_rewrite(error: OSError, jsonl_path: str, dropped: int, step: int, size: int) -> OSError:
    """``error`` (a full disk, a quota) of the rewrite of ``jsonl_path`` again, saying how much free space the
    rewrite needs (the ``size`` bytes of lines kept, written whole beside the file before they replace it) and that
    the file is as it was: "No space left on device" alone said neither."""
    try:
        free = f" ({format_bytes(shutil.disk_usage(os.path.dirname(os.path.abspath(jsonl_path))).free)} free now)"
    except OSError:
        free = ""
    dropping = f"dropping the {counted(dropped, 'line')} written after step {step} rewrites it"
    return type(error)(error.errno, f"{error.strerror or os.strerror(error.errno)}; {dropping}, which needs "
                       f"{format_bytes(size)} free on its disk{free}; the file is left as it was", jsonl_path)


def _after(line: str, step: int, kinds_at_step: tuple[str, ...]) -> bool | None:
    """Whether ``line`` came after the checkpoint at ``step`` (at ``step`` itself: a line of ``kinds_at_step``);
    None for a line that is not JSON (a line cut short by the kill: it belongs to the lost attempt)."""
    try:
        record = json.loads(line)
        value = record.get("step")
    except (ValueError, AttributeError):
        return None
    if not isinstance(value, int):
        return False
    return value > step or (value == step and record.get("kind") in kinds_at_step)
