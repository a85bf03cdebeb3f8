"""What ``predict`` and ``extract_features`` share: the videos to process, the loop through the model of the
multi-view test loader's batches (the forward pass that yields pooled features and logits per view), the quiet
run's loader warnings and the commands' ends on a stop or an exit-2 error; the config and weights from
``tools.model_io``.

The data pipeline is reached through one function, :func:`build_view_loader` (``tools.view_loader``'s, imported
from here too), which calls the same public entry point as evaluation (``dali_pipelines.loader.build_loader(cfg,
'test', ...)``) so that a prediction sees exactly the views an evaluation run sees.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import sys
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from configs import opts_last  # for the tools' parsers
from dali_pipelines.filelist import (LabelRangeError, list_label, list_root,  # plain Python: no DALI import
                                     listed_path, split_list_line)
from engine.distributed import DistContext, broadcast_object, shutdown
from evautil.cli import flags_as_typed, home_path
from evautil.errors import not_utf8_line
from evautil.files import cannot_read, naming_the_file, output_path_problem
from evautil.progress import counted
from evautil.text import text_lines
from tools.model_io import InputError, load_model, load_setup  # the tools' one place to import them from
from tools.view_loader import STILL_IMAGE, ViewLoader, build_view_loader  # re-exported: the tools import them here

__all__ = ["VIDEO_EXTENSIONS", "InputError", "opts_last", "check_output_path", "check_output_not_input", "note_top_k",
           "videos_of_inputs", "collect_videos", "labelled_videos", "labelled_files", "first_names", "videos_of_rank_0",
           "load_setup", "load_model",
           "ViewLoader", "build_view_loader", "STILL_IMAGE", "loader_warnings_unprinted", "views_through_model",
           "note_turned", "refuse_non_finite", "view_outputs", "progress_bar", "error_exit", "stopped_exit"]

# What a folder is searched for. The decoders read a video by its content, not its name: a camcorder's MPEG-TS
# (.mts, .m2ts) left out here was passed over without a word, while predicted when named.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
                    ".ts", ".mts", ".m2ts", ".3g2", ".ogv", ".vob", ".f4v", ".mxf")
_LIST_EXTENSIONS = (".txt", ".lst", ".list")
_TABLE_EXTENSIONS = (".csv", ".tsv")  # a list kept as a table: no video either


# ---------------------------------------------------------------------------------------------------- videos
def _read_video_list(path: str, root: str, num_classes: int | None = None) -> list[tuple[str, int | None]]:
    """(absolute path, label or None) per video line, relative to ``root`` (default: the list's folder). A trailing
    integer label, as in training lists, is taken off unless the whole line names an existing file; the name is then
    the one the training list reader (``dali_pipelines.filelist.read_video_list``) takes: the line up to the
    whitespace before the label, inner runs of spaces and tabs kept as written. Lines are cut, and numbered, as
    that reader cuts them (``evautil.text.text_lines``). A line opening with ``#`` that names no file is a comment,
    passed over. With ``num_classes`` (the model's DATA.NUM_CLASSES) a label outside it is refused."""
    base = list_root(path, root)
    try:
        with open(path, encoding="utf-8-sig") as f, naming_the_file(path):  # a failed read names the list
            text = f.read()
    except UnicodeDecodeError as e:
        raise InputError(f"{path}, {not_utf8_line(path, e)}; a video list is UTF-8") from None
    out: list[tuple[str, int | None]] = []
    out_of_range, first_video_line = None, ""
    for line_no, line in enumerate(text_lines(text), start=1):
        # lists joined with cat each bring their BOM: the training reader drops one opening any line, and so here
        line = (line[1:] if line.startswith("\ufeff") else line).strip()
        if not line:
            continue
        full, label = os.path.join(base, listed_path(line, base)), None  # ~ the home folder, as the reader reads it
        name, last = split_list_line(line)
        if line.startswith("#") and not os.path.exists(full) and not (
                name and os.path.exists(os.path.join(base, listed_path(name, base)))):
            continue  # a comment ("# clips of day 2"): it was reported as an unreadable video, and kept so for ever
        if not os.path.exists(full) and name:
            label = list_label(last)  # the training reader's labels ('+3' too, which was taken for part of the name)
        if label is not None:
            full = os.path.join(base, listed_path(name, base))  # read_video_list's rule, not a re-join
            if num_classes is not None and not 0 <= label < num_classes and not out_of_range:
                # training's own list check, but the model's head fixes the class count: no key can fit the label
                out_of_range = LabelRangeError(f"{path}:{line_no}", label, num_classes, line,
                                               LabelRangeError.MODEL_HEAD)
        out.append((os.path.abspath(full), label))
        first_video_line = first_video_line or line
    # A list whose lines name no file at all is not a video list (a README, notes) or is read against the wrong
    # folder: one line now, not a row of "unreadable" per line after the model has loaded.
    if out and not any(os.path.exists(p) for p, _ in out):
        first = first_video_line
        raise InputError(f"{path}: none of its {len(out)} lines names an existing file under {base} (first line: "
                         f"{first[:80]!r}); a video list has one video per line, relative to the list's folder "
                         f"or to --root")
    if out_of_range:  # after that check: a text that is not a video list is said to be one, not a bad label
        raise out_of_range
    return out


def check_output_path(path: str, flag: str, folder: bool, example: str = "") -> None:
    """Refuse an output target that cannot be written, before any model runs: see
    :func:`evautil.files.output_path_problem`.

    Raises:
        InputError: one line naming ``flag`` and what is wrong.
    """
    problem = output_path_problem(path, flag, folder, example)
    if problem:
        raise InputError(problem)


def check_output_not_input(out: str, flag: str, files: Sequence[tuple[str, str]], videos: Sequence[str] = ()) -> None:
    """Refuse an output file that is one of the command's inputs, which writing it would replace: ``files`` are
    (what, path) pairs (``("--weights", path)``, a video list given), ``videos`` the absolute paths of the videos.

    Raises:
        InputError: one line naming ``flag``, the input and what to do.
    """
    if not out or not os.path.isfile(out):  # a new file, a pipe or /dev/stdout replaces nothing
        return
    for what, path in files:
        with contextlib.suppress(OSError):  # an input that does not exist (an hf:// name) is no file to keep
            if path and os.path.samefile(out, path):
                raise InputError(f"{flag} {out} is {what} {path}: writing it would replace that input; give "
                                 "another file name")
    same = {os.path.abspath(out), os.path.realpath(out)}  # names, not a stat of each of a long list's videos
    video = next((v for v in videos if v in same), None)
    if video:
        raise InputError(f"{flag} {out} is the video {video}, one of the inputs: writing it would replace that "
                         "video; give another file name")


def note_top_k(top_k: int, num_classes: int, typed: Any = None, warn: bool = True, name: str = "--top-k") -> None:
    """One ``note:`` line on stderr (with ``warn``: from one process, and for a ``--top-k`` given, not the default)
    when ``--top-k`` asks for more classes than the model's ``num_classes``: every class is listed, which the
    command did without a word (its accuracy line alone said "n/a"). The flag is named as typed (``typed``: the
    command's arguments, see ``evautil.cli.flags_as_typed``); ``name``: what the line names instead (``top_k``,
    ``Predictor.predict``'s argument)."""
    if warn and top_k > num_classes:
        print(flags_as_typed(f"note: {name} {top_k} is more than the {counted(num_classes, 'class')}: every class "
                             f"is listed", typed), file=sys.stderr)


def videos_of_inputs(inputs: Sequence[str], root: str = "",
                     num_classes: int | None = None) -> list[tuple[str, str, int | None]]:
    """Every video of ``inputs`` (files, folders searched recursively for video extensions, links to folders
    followed and each folder searched once, list files ``.txt``/``.lst``/``.list``, quoted patterns such as
    ``'clips/*.mp4'`` expanded as a shell would, a leading ``~`` in an input or ``root`` the home folder as for the
    commands' flags) in the given order, duplicates kept, as ``(name, absolute path, label)``: ``name`` is the input
    as given (``~`` kept) when it names the video itself, else the absolute path (a folder's, a list's or a pattern's
    video); ``label``
    is the trailing integer of a list line, None for a line without one and for files and folders' videos. Paths
    that do not exist are kept: the loader reports them as unreadable with the others.

    Raises:
        InputError: nothing to process, a list none of whose lines names an existing file, or a table (``.csv``,
            ``.tsv``) given as an input.
        LabelRangeError: with ``num_classes`` (DATA.NUM_CLASSES), a list label outside ``[0, num_classes)``, naming
            the list, its line and the label.
    """
    found: list[tuple[str, str, int | None]] = []
    empty_lists: list[str] = []  # a list is read line by line, not searched by extension: said apart
    root = home_path(root)  # Predictor's names: "~/a.mp4" was a missing file (the commands' shell or flags expand)
    for given, item, matched in _globs_expanded(inputs, root):
        if os.path.isdir(item):
            # links to folders are followed (a dataset of linked class folders gave none of their videos), each
            # folder searched once: a link back up, or two links to one folder, neither loops nor repeats
            seen = {os.path.realpath(item)}
            for folder, dirs, files in os.walk(item, followlinks=True):
                keep = []
                for d in sorted(dirs, key=lambda d: (os.path.islink(os.path.join(folder, d)), d)):  # real first
                    real = os.path.realpath(os.path.join(folder, d))
                    if real not in seen:
                        seen.add(real)
                        keep.append(d)
                dirs[:] = sorted(keep)
                found += [(p, p, None) for p in (os.path.abspath(os.path.join(folder, f)) for f in sorted(files)
                                           if f.lower().endswith(VIDEO_EXTENSIONS) and not _apple_double(f))]
        elif item.lower().endswith(_LIST_EXTENSIONS) and os.path.isfile(item):
            listed = _read_video_list(item, root, num_classes)
            found += [(p, p, label) for p, label in listed]
            if not listed:
                empty_lists.append(given)
        elif item.lower().endswith(_TABLE_EXTENSIONS) and os.path.isfile(item):
            # a list saved as a table (val.csv) was one video, "not a readable video container", exit 1
            raise InputError(f"{given} is a {os.path.splitext(item)[1]} file, not a video: a video list is read from "
                             f"a {', '.join(_LIST_EXTENSIONS[:-1])} or {_LIST_EXTENSIONS[-1]} file (one video per "
                             "line, an optional trailing label); save or rename it as one")
        elif matched:  # a pattern's match already holds the root: named by its absolute path, as a folder's
            found.append((os.path.abspath(item),) * 2 + (None,))
        else:
            found.append((given, os.path.abspath(os.path.join(root, item) if root else item), None))
    if not found:
        searched = [i for i in inputs if i not in empty_lists]
        why = [f"in {', '.join(searched) or 'the inputs'} (extensions {' '.join(VIDEO_EXTENSIONS)})"] \
            if searched or not inputs else []
        why += [f"in {lst}: the list file has no video lines (it is empty or holds only blank or comment lines; a "
                "video list names one video per line)" for lst in empty_lists]
        raise InputError(f"no videos found {'; '.join(why)}")
    return found


def _apple_double(name: str) -> bool:
    """Whether a file name is a macOS AppleDouble companion (``._clip.mp4``: the metadata of ``clip.mp4``, which a
    Mac writes beside each file it copies to a disk of another format). Left out of a folder search: each one was
    reported as an unreadable video, burying the real failures; one named on its own is still tried."""
    return name.startswith("._")


def _globs_expanded(inputs: Sequence[str], root: str) -> Iterator[tuple[str, str, bool]]:
    """``(input as given, path, whether a pattern matched it)`` per input, its leading ``~`` the home folder, a
    quoted pattern (``'clips/*.mp4'``, ``**`` for any depth, relative to ``root`` when given) that names no file
    replaced by its matches in sorted order, as a shell expands it: given to Python, or quoted, every video was one
    ``missing file``. A pattern matching nothing is kept as given: reported missing."""
    for given in inputs:
        item = home_path(given)
        pattern = os.path.join(root, item) if root else item
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(item) and not os.path.lexists(
            pattern) and not os.path.lexists(item) else []
        if matches:
            yield from ((given, match, True) for match in matches)
        else:
            yield given, item, False


def collect_videos(inputs: Sequence[str], root: str = "") -> list[str]:
    """The absolute paths of :func:`videos_of_inputs`, in the given order, without duplicates (each video is
    processed once).

    Raises:
        InputError: nothing to process.
    """
    return list(dict.fromkeys(path for _, path, _ in videos_of_inputs(list(inputs), root)))


def labelled_videos(inputs: Sequence[str], root: str = "",
                    num_classes: int | None = None) -> list[tuple[str, int | None]]:
    """``(absolute path, label or None)`` per video to report, in the given order: a file given more than once
    without a label once, under the first name given (:func:`labelled_files`), each labelled list line for itself,
    as an evaluation scores every line of its list: a video in two lists keeps each list's label. Errors:
    :func:`videos_of_inputs`'s."""
    return labelled_files(inputs, root, num_classes)[0]


def labelled_files(inputs: Sequence[str], root: str = "",
                   num_classes: int | None = None) -> tuple[list[tuple[str, int | None]], int]:
    """:func:`labelled_videos`, and how many names given were the file of an earlier name (a video is the file its
    path resolves to, :func:`tools.feature_store.video_key`, as ``extract_features`` keys it: the same folder
    through a link, or a relative name in a linked working folder and its absolute one, gave a video twice)."""
    given = videos_of_inputs(list(inputs), root, num_classes)
    first = first_names(path for _, path, _ in given)
    reported: dict[tuple, tuple[str, int | None]] = {}
    for i, (_, path, label) in enumerate(given):
        reported.setdefault((first[path],) if label is None else (path, i), (path, label))
    return list(reported.values()), len(first) - len(set(first.values()))


def first_names(paths: Iterable[str]) -> dict[str, str]:
    """Each name of ``paths`` -> the first name given of its file (the path it resolves to,
    :func:`tools.feature_store.video_key`, as ``extract_features`` keys a video), each name resolved once."""
    from tools.feature_store import video_key

    first: dict[str, str] = {}  # resolved path -> its first name
    return {name: first.setdefault(video_key(name), name) for name in dict.fromkeys(paths)}


def videos_of_rank_0(videos: list, ctx: DistContext) -> list:
    """Rank 0's :func:`collect_videos` (or :func:`labelled_videos`) on every rank: each rank's own scan of a folder
    could differ (a video being added between the scans), and the ranks' shares of different lists would miss some
    videos and repeat others."""
    return broadcast_object(videos, ctx)


# ---------------------------------------------------------------------------------------------------- loader
@contextlib.contextmanager
def loader_warnings_unprinted(quiet: bool = True) -> Iterator[None]:
    """While inside, the data loader's warnings (the index's ``bad video ...`` lines, a decode failure's
    ``quarantining ...``) are not printed on stderr: Python prints a warning that no handler takes (its last-resort
    handler), and a handler that drops them takes them here. A quiet run reports its unreadable videos in its
    results only; handlers of the caller's own (on the root logger) still get them. The logger is left as found.
    Not ``quiet`` (a run with progress): nothing changes."""
    if not quiet:
        yield
        return
    loader_logger = logging.getLogger("dali_pipelines")
    handler = logging.NullHandler()
    loader_logger.addHandler(handler)
    try:
        yield
    finally:
        loader_logger.removeHandler(handler)


def views_through_model(cfg, model: nn.Module, paths: Sequence[str], work_dir: str, ctx: DistContext,
                        amp_dtype: torch.dtype | None, *, checked: str, error: type[ValueError], bar: str | None,
                        progress: bool, each_batch: Callable[[list[int], torch.Tensor, torch.Tensor], None]
                        ) -> tuple[dict[int, str], dict[int, int]]:
    """The loop ``predict`` and the views of ``extract_features`` share: this rank's share of ``paths`` through
    :func:`build_view_loader` (its index's progress shown with ``progress`` on the main rank) and ``model``
    (:func:`view_outputs`), ``each_batch(rows, pooled, logits)`` per batch, ``rows`` the videos' positions in
    ``paths``, once the outputs ``checked`` (``features``: pooled, ``scores``: logits) are refused with ``error``
    when NaN or infinite (:func:`refuse_non_finite`). ``bar``: the batches' progress bar's label, None for none.
    Returns the positions of the videos not read with their reasons (:meth:`ViewLoader.unreadable`) and those of the
    videos a player would turn, with their turns (:meth:`ViewLoader.turned`, for :func:`note_turned`)."""
    loader = build_view_loader(cfg, paths, work_dir, ctx, progress=progress and ctx.is_main)
    try:
        read: set[int] = set()
        for batch in progress_bar(loader, len(loader), bar is not None and len(loader) > 0, bar or ""):
            pooled, logits = view_outputs(model, batch["video"].to(ctx.device), amp_dtype)
            rows = [int(row) for row in batch["index"].tolist()]
            refuse_non_finite(pooled if checked == "features" else logits, [paths[row] for row in rows], checked,
                              amp_dtype, error)
            each_batch(rows, pooled, logits)
            read.update(rows)
        # a migrated cache's rows record no turn: learnt from the videos this rank read and kept in the cache, so
        # that the next run reads none of them again
        loader.learn_turns(read)
        return loader.unreadable(ctx), loader.turned()
    finally:
        loader.close()


def note_turned(turned: dict[str, int], done: str) -> None:
    """One ``note:`` line on stderr per video whose display matrix turns it (``{path: degrees counter-clockwise}``;
    ``ROTATION_NOT_RECORDED``, a record of an index cache older than the turn that another rank read, is read from
    the video now; :func:`views_through_model` learns and keeps the turns of the videos its rank read): a
    phone's portrait video was used sideways, as stored, without a word. Training and evaluation read frames as
    stored too, so ``predict`` and ``extract_features`` see what an evaluation sees; rotate the file to have it
    upright. ``done``: what was done with its frames, in the line's words (``scored``)."""
    from dali_pipelines.pyav_probe import display_rotation, rotation_words
    from dali_pipelines.video_table import ROTATION_NOT_RECORDED

    for path, degrees in turned.items():
        degrees = display_rotation(path) if degrees == ROTATION_NOT_RECORDED else degrees
        if degrees:
            print(f"note: {path}: its display matrix shows it turned {rotation_words(degrees)} (a phone's portrait "
                  f"video); it was {done} as stored, unturned, as evaluation reads it", file=sys.stderr)


def refuse_non_finite(values: torch.Tensor, paths: Sequence[str], what: str, amp_dtype: torch.dtype | None,
                      error: type[ValueError]) -> None:
    """Raise ``error`` in one line naming the first of ``paths`` (a path a row of ``values``) whose model outputs
    (``what``: scores, features) hold NaN or inf: ``predict`` and ``extract_features`` refuse them in the same words."""
    bad = (~torch.isfinite(values)).flatten(1).any(1).nonzero()
    if len(bad):
        fp32 = f", or TRAIN.PRECISION fp32 (this run computed in {str(amp_dtype)[6:]})" if amp_dtype else ""
        raise error(f"the model's {what} for {paths[int(bad[0])]} are NaN or infinite: check the weights for NaN or "
                    f"inf values (a training run that diverged){fp32}")


# ---------------------------------------------------------------------------------------------------- forward
@torch.no_grad()
def view_outputs(model: nn.Module, video: torch.Tensor, amp_dtype: torch.dtype | None = None,
                 max_clips: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, V, T, 3, S, S) views -> pooled pre-logit features (B, V, D) (the ``fc_norm`` output) and logits
    (B, V, C), both fp32. The same operations as ``model(clip)``; ``max_clips`` bounds clips per forward."""
    b, v = video.shape[:2]
    clips = video.flatten(0, 1)
    if amp_dtype is None:
        clips = clips.float()
    amp = torch.autocast(clips.device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    chunk = max_clips or clips.shape[0]
    pooled, logits = [], []
    with amp:
        for i in range(0, clips.shape[0], chunk):
            feats = model.forward_head(model.forward_features(clips[i:i + chunk]), pre_logits=True)
            pooled.append(feats.float())
            logits.append(model.head(feats).float())
    return torch.cat(pooled).view(b, v, -1), torch.cat(logits).view(b, v, -1)


def progress_bar(iterable, total: int, enabled: bool, desc: str, unit: str = "batch"):
    """``iterable`` with its progress on stderr when ``enabled`` (a bar on a terminal, else plain lines:
    :func:`evautil.progress.with_progress`), else unchanged."""
    if not enabled:
        return iterable
    from evautil.progress import with_progress

    return with_progress(iterable, total, desc, unit)


# ---------------------------------------------------------------------------------------------------- ends
def stopped_exit(stop: BaseException, kept: str) -> int:
    """A tool's end when a stop signal or a Ctrl-C ends its work: the ``stopped:`` line saying what ``kept`` keeps
    (:func:`evautil.interrupt.stopped_during_work`, whose exit status is returned), the other ranks not waited for."""
    from evautil.interrupt import stopped_during_work

    status = stopped_during_work(stop, kept)
    shutdown(graceful=False)
    return status


def error_exit(error: BaseException, typed: Any, *, writing: bool, out: str | None = None) -> int:
    """A tool's exit-2 error: one ``error:`` line on stderr, its flags named as typed (``typed``: the command's
    arguments, :func:`evautil.cli.flags_as_typed`), the other ranks not waited for (the error may be this rank's
    alone: a file it could not read); returns 2. An OSError with the system's reason before ``writing`` (the outputs
    being written) is a failed read, naming its file (:func:`evautil.files.cannot_read`); with ``out`` (the --out
    folder), an OSError naming no file once ``writing`` is a failed write in it (a full disk names no file)."""
    if isinstance(error, OSError) and out is not None and writing and not error.filename:
        line: object = f"cannot write in --out {out}: {error.strerror or error}"
    elif isinstance(error, OSError) and error.strerror and not writing:
        line = cannot_read(error)
    else:
        line = error
    print(f"error: {flags_as_typed(line, typed)}", file=sys.stderr)
    shutdown(graceful=False)
    return 2
