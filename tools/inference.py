"""What ``predict`` and ``extract_features`` share: the config and weights, the videos to process, the multi-view
test loader, and the forward pass that yields pooled features and logits per view.

The data pipeline is reached through one function, :func:`build_view_loader`, which calls the same public entry
point as evaluation (``dali_pipelines.loader.build_loader(cfg, 'test', ...)``) so that a prediction sees exactly
the views an evaluation run sees.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from configs import ConfigError, load_config, opts_last  # opts_last: for the tools' parsers
from dali_pipelines.filelist import LabelRangeError, split_list_line  # plain Python: no DALI import
from engine.distributed import DistContext, barrier, broadcast_object
from engine.evaluate import read_label_names
from evautil.errors import not_utf8_line, weights_misfit
from evautil.files import naming_the_file, not_a_file, output_path_problem
from evautil.text import text_lines
from models import ARCHS, CheckpointError, build_model, load_pretrained
from models.checkpoint import (EMA_NOTE, head_mismatch, is_safetensors, layers_the_model_lacks, pretrained_source_grid,
                               read_checkpoint)
from models.weights_file import read_weights_metadata

__all__ = ["VIDEO_EXTENSIONS", "InputError", "opts_last", "check_output_path", "check_output_not_input",
           "videos_of_inputs", "collect_videos", "labelled_videos", "videos_of_rank_0", "load_setup", "load_model",
           "ViewLoader", "build_view_loader", "view_outputs", "progress_bar"]

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
                    ".ts")
_LIST_EXTENSIONS = (".txt", ".lst", ".list")


class InputError(ValueError):
    """Unusable command-line input (no videos, an unreadable list, weights without a config); named in one line."""


# ---------------------------------------------------------------------------------------------------- videos
def _read_video_list(path: str, root: str, num_classes: int | None = None) -> list[tuple[str, int | None]]:
    """(absolute path, label or None) per video line, relative to ``root`` (default: the list's folder). A trailing
    integer label, as in training lists, is taken off unless the whole line names an existing file; the name is then
    the one the training list reader (``dali_pipelines.filelist.read_video_list``) takes: the line up to the
    whitespace before the label, inner runs of spaces and tabs kept as written. Lines are cut, and numbered, as
    that reader cuts them (``evautil.text.text_lines``). With ``num_classes`` (the model's DATA.NUM_CLASSES) a
    label outside it is refused."""
    base = root or os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8-sig") as f, naming_the_file(path):  # a failed read names the list
            text = f.read()
    except UnicodeDecodeError as e:
        raise InputError(f"{path}, {not_utf8_line(path, e)}; a video list is UTF-8") from None
    out: list[tuple[str, int | None]] = []
    out_of_range = None
    for line_no, line in enumerate(text_lines(text), start=1):
        line = line.strip()
        if not line:
            continue
        full, label = os.path.join(base, line), None
        name, last = split_list_line(line)
        if not os.path.exists(full) and name and last.lstrip("-").isdigit():
            full = os.path.join(base, name)  # read_video_list's rule, not a re-join
            with contextlib.suppress(ValueError):  # digits int() does not read (superscripts): no label
                label = int(last)
            if label is not None and num_classes is not None and not 0 <= label < num_classes and not out_of_range:
                # training's own list check, but the model's head fixes the class count: no key can fit the label
                out_of_range = LabelRangeError(f"{path}:{line_no}", label, num_classes, line,
                                               LabelRangeError.MODEL_HEAD)
        out.append((os.path.abspath(full), label))
    # A list whose lines name no file at all is not a video list (a README, notes) or is read against the wrong
    # folder: one line now, not a row of "unreadable" per line after the model has loaded.
    if out and not any(os.path.exists(p) for p, _ in out):
        first = next(line.strip() for line in text_lines(text) if line.strip())
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


def videos_of_inputs(inputs: Sequence[str], root: str = "",
                     num_classes: int | None = None) -> list[tuple[str, str, int | None]]:
    """Every video of ``inputs`` (files, folders searched recursively for video extensions, links to folders
    followed and each folder searched once, list files ``.txt``/``.lst``/``.list``) in the given order, duplicates
    kept, as ``(name, absolute path, label)``: ``name`` is the
    input as given when it names the video itself, else the absolute path (a folder's or a list's video); ``label``
    is the trailing integer of a list line, None for a line without one and for files and folders' videos. Paths
    that do not exist are kept: the loader reports them as unreadable with the others.

    Raises:
        InputError: nothing to process, or a list none of whose lines names an existing file.
        LabelRangeError: with ``num_classes`` (DATA.NUM_CLASSES), a list label outside ``[0, num_classes)``, naming
            the list, its line and the label.
    """
    found: list[tuple[str, str, int | None]] = []
    empty_lists: list[str] = []  # a list is read line by line, not searched by extension: said apart
    for item in inputs:
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
                                           if f.lower().endswith(VIDEO_EXTENSIONS))]
        elif item.lower().endswith(_LIST_EXTENSIONS) and os.path.isfile(item):
            listed = _read_video_list(item, root, num_classes)
            found += [(p, p, label) for p, label in listed]
            if not listed:
                empty_lists.append(item)
        else:
            found.append((item, os.path.abspath(os.path.join(root, item) if root else item), None))
    if not found:
        searched = [i for i in inputs if i not in empty_lists]
        why = [f"in {', '.join(searched) or 'the inputs'} (extensions {' '.join(VIDEO_EXTENSIONS)})"] \
            if searched or not inputs else []
        why += [f"in {lst}: the list file has no video lines (it is empty or holds only blank lines; a video list "
                "names one video per line)" for lst in empty_lists]
        raise InputError(f"no videos found {'; '.join(why)}")
    return found


def collect_videos(inputs: Sequence[str], root: str = "") -> list[str]:
    """The absolute paths of :func:`videos_of_inputs`, in the given order, without duplicates (each video is
    processed once).

    Raises:
        InputError: nothing to process.
    """
    return list(dict.fromkeys(path for _, path, _ in videos_of_inputs(list(inputs), root)))


def labelled_videos(inputs: Sequence[str], root: str = "",
                    num_classes: int | None = None) -> list[tuple[str, int | None]]:
    """``(absolute path, label or None)`` per video to report, in the given order: a video given more than once
    without a label once (as :func:`collect_videos`), each labelled list line for itself, as an evaluation scores
    every line of its list: a video in two lists keeps each list's label. Errors: :func:`videos_of_inputs`'s."""
    reported: dict[tuple, tuple[str, int | None]] = {}
    for i, (_, path, label) in enumerate(videos_of_inputs(list(inputs), root, num_classes)):
        reported.setdefault((path,) if label is None else (path, i), (path, label))
    return list(reported.values())


def videos_of_rank_0(videos: list, ctx: DistContext) -> list:
    """Rank 0's :func:`collect_videos` (or :func:`labelled_videos`) on every rank: each rank's own scan of a folder
    could differ (a video being added between the scans), and the ranks' shares of different lists would miss some
    videos and repeat others."""
    return broadcast_object(videos, ctx)


# ---------------------------------------------------------------------------------------------- config, model
def _metadata_opts(meta: dict[str, Any]) -> list[str]:
    # num_classes 0: weights without a head, which give features only (load_model says so where a head is needed);
    # the config keeps its own class count, which no tensor of the file has
    classes = ["DATA.NUM_CLASSES", str(meta["num_classes"])] if meta["num_classes"] else []
    return ["MODEL.ARCH", meta["arch"], "DATA.NUM_FRAMES", str(meta["num_frames"]), "DATA.TUBELET_SIZE",
            str(meta["tubelet_size"]), "DATA.INPUT_SIZE", str(meta["input_size"]), *classes,
            "MODEL.USE_MEAN_POOLING", str(meta["use_mean_pooling"])]


def _check_metadata(cfg, meta: dict[str, Any], weights: str, cfg_path: str = "", opts: Sequence[str] = ()) -> None:
    """The config and the model file must describe the same model and the same input normalisation. A mismatch is
    named with where the config's value came from: ``--opts`` when it sets the key, else the ``--cfg`` file."""
    from dali_pipelines.augment import MEAN, STD  # numpy only, no DALI

    preset = ARCHS.get(meta["arch"])
    dims = {"embed_dim": "embed_dim", "depth": "depth", "num_heads": "num_heads", "mlp_hidden_dim": "mlp_hidden",
            "patch_size": "patch_size"}
    if preset is None or any(meta[k] != preset[p] for k, p in dims.items()):
        raise CheckpointError(f"{weights}: architecture {meta['arch']!r} with "
                              f"{ {k: meta[k] for k in dims} } is not a known MODEL.ARCH preset")
    # the pooling and the tubelet change which tensors the model has: a mismatch would be reported as missing keys
    pairs = {"MODEL.ARCH": (cfg.MODEL.ARCH, meta["arch"]), "DATA.NUM_FRAMES": (cfg.DATA.NUM_FRAMES, meta["num_frames"]),
             "DATA.TUBELET_SIZE": (cfg.DATA.TUBELET_SIZE, meta["tubelet_size"]),
             "DATA.INPUT_SIZE": (cfg.DATA.INPUT_SIZE, meta["input_size"]),
             "DATA.NUM_CLASSES": (cfg.DATA.NUM_CLASSES, meta["num_classes"]),
             "MODEL.USE_MEAN_POOLING": (cfg.MODEL.USE_MEAN_POOLING, meta["use_mean_pooling"])}
    if not meta["num_classes"]:  # no head: any class count fits its tensors
        del pairs["DATA.NUM_CLASSES"]
    set_by_opts = set(list(opts)[0::2])
    for key, (ours, theirs) in pairs.items():
        if ours == theirs:
            continue
        if key in set_by_opts or not cfg_path:  # --opts is applied last: its value is the one in force
            raise ConfigError(f"{key} = {ours} from --opts but {theirs} in {weights}; leave {key} out of --opts to "
                              "use the file's value")
        raise ConfigError(f"{key} = {ours} in --cfg {cfg_path} but {theirs} in {weights}; drop --cfg to use the "
                          "file's own settings")
    for name, want, have in (("mean", MEAN, meta["mean"]), ("std", STD, meta["std"])):
        if any(abs(a - b) > 1e-4 for a, b in zip(want, have)) or len(have) != len(want):
            raise CheckpointError(f"{weights}: expects inputs normalised with {name} {have}; the data pipeline "
                                  f"uses {list(want)}")


def load_setup(cfg_path: str | None, opts: Sequence[str], weights: str, class_names: bool = True,
               warn: bool = True) -> tuple[Any, dict[int, str]]:
    """The config (from ``cfg_path``, or from the metadata of an exported ``.safetensors`` when there is none) and
    the class names (DATA.LABEL_LIST, else the file's names, else none; none read when not ``class_names``).

    A DATA.LABEL_LIST that does not exist is passed over as if none were set, with a ``warning:`` line on stderr
    when ``warn``: class names label the results, they do not change them. One that exists must be valid.

    Raises:
        FileNotFoundError: the weights file does not exist.
        InputError: no config and the weights are not a self-describing file.
        ConfigError / CheckpointError: they disagree, or a value is invalid (the message names it).
    """
    from models.hub import resolve_weights_path

    local = resolve_weights_path(weights) if weights else ""
    if local and not os.path.isfile(local):
        raise FileNotFoundError(f"weights file not found: {weights}" + (" (a folder, not a file)"
                                                                        if os.path.isdir(local) else ""))
    meta = read_weights_metadata(local) if local and is_safetensors(local) else None
    if not cfg_path and meta is None:
        raise InputError(f"--cfg is needed: {weights or 'no --weights given'} is not a weights file exported by "
                         "tools.export_safetensors (which carries its own settings)")
    cfg = load_config(cfg_path or None, ([] if cfg_path else _metadata_opts(meta)) + list(opts))
    if meta is not None:
        _check_metadata(cfg, meta, weights, cfg_path or "", opts)
    if not class_names:
        return cfg, {}
    names: dict[int, str] = dict(enumerate(meta["class_names"])) if meta is not None else {}
    labels = cfg.DATA.LABEL_LIST
    if labels and not os.path.isfile(labels):
        if warn:
            print(f"warning: label list DATA.LABEL_LIST = {labels} {not_a_file(labels)}; "
                  + (f"class names from {weights}" if names else "classes are given by their index, without names"),
                  file=sys.stderr)
    elif labels:
        names = read_label_names(labels, cfg.DATA.NUM_CLASSES)
    return cfg, names


def load_model(cfg, weights: str, device: torch.device, warn: bool = True, features_only: bool = False,
               head_problem_to: list[str] | None = None, without_head: bool = False) -> nn.Module:
    """The model of ``cfg`` with ``weights`` (any checkpoint path or ``hf://`` reference) loaded, in eval mode.

    The checkpoint is converted by ``load_pretrained``; what the conversion changed (a positional
    embedding resampled to another DATA.NUM_FRAMES / DATA.INPUT_SIZE, a head gathered by a class mapping) is printed
    as ``warning:`` lines on stderr when ``warn``: a model used at another geometry than it was trained at is
    legitimate, but it should not happen unnoticed.

    ``features_only``: the model gives features, which stop before the head, so weights without a head or with a
    head of another class count are loaded too (the head left at its initialisation), with a ``note:`` line when
    ``warn``; the error predicting with them must raise is appended to ``head_problem_to``. ``without_head``:
    weights without a head (a pretrained backbone) give the model without one (``num_classes`` 0, its forward
    returning the pooled features), with that ``note:`` line; a head of another class count is still refused.

    Raises:
        CheckpointError: the weights leave model parameters unset (a wrong MODEL.ARCH or class count), or have no
            head or one of another class count (not with ``features_only``).
        ValueError: the checkpoint cannot be converted to the model (the message names the file and the key).
    """
    # what check_checkpoint reads (memory-mapped, no tensor loaded) and refuses, keeping the head's shape: a head of
    # another class count would be dropped and scored at random, named with both counts before the build
    mapping = cfg.MODEL.CLASS_MAPPING or None
    state, saved_config = read_checkpoint(weights, mmap=True)
    head = state.get("head.weight")
    head_problem, why_not_loaded = None, ""
    mismatch = head_mismatch({"head.weight": head}, cfg.DATA.NUM_CLASSES, mapping) if head is not None else None
    if head is None:
        why_not_loaded = "it has no classification head"
        head_problem = (f"{weights}: {why_not_loaded} (head.weight, head.bias): it gives features "
                        "(tools.extract_features, Predictor.features), not predictions")
    elif mismatch:
        why_not_loaded = f"its head has {head.shape[0]} classes and DATA.NUM_CLASSES is {cfg.DATA.NUM_CLASSES}"
        head_problem = f"{weights}: {mismatch}"
    if head_problem and not (features_only or (without_head and head is None)):
        raise CheckpointError(head_problem)
    built = cfg.clone()
    built.defrost()
    built.MODEL.PRETRAINED = ""
    built.TRAIN.USE_CHECKPOINT = False
    built.freeze()
    model = build_model(built, device=device)
    notes: list[str] = []
    # MODEL.PRETRAINED_FRAMES / _INPUT_SIZE give the geometry of a file that does not record it (the error asking
    # for it names these keys); a file's saved config decides otherwise, as a recipe's values describe the
    # checkpoint its MODEL.PRETRAINED names
    grid = pretrained_source_grid(cfg, model) if saved_config is None else None
    missing, unexpected = load_pretrained(model, weights, "eva_k722", class_mapping=mapping, source_grid=grid,
                                          notes_to=notes, misfit_is_error=True)
    # A recipe's MODEL.PRETRAINED_FRAMES that does not fit these weights describes the checkpoint the recipe trains
    # from (K722's 8 frames), not these: set aside without a word (the README's k400.yaml + K400 checkpoint case).
    notes = [n for n in notes if "set aside" not in n]
    if head_problem:  # features_only: the head's absence is said once, below, instead of the conversion's note
        missing = [k for k in missing if k not in ("head.weight", "head.bias")]
        notes = [n for n in notes if not n.startswith("head:")]
        if head_problem_to is not None:
            head_problem_to.append(head_problem)
    lacked = layers_the_model_lacks(unexpected, model)  # a deeper model's weights would predict as a truncated one
    if missing or lacked:
        raise CheckpointError(f"{weights} {weights_misfit(cfg.MODEL.ARCH, cfg.DATA.NUM_CLASSES, missing, lacked)}")
    if warn:
        if head_problem:
            print(f"note: {weights}: {why_not_loaded}: the head was not loaded, and features stop before it",
                  file=sys.stderr)
        for note in notes:  # which of a file's weights are used is information; what was changed, a warning
            print(f"{'note' if note == EMA_NOTE else 'warning'}: {weights}: {note}", file=sys.stderr)
        if any(n.startswith("pos_embed: resampled") for n in notes):
            print(f"warning: {weights} was trained at another geometry than DATA.NUM_FRAMES {cfg.DATA.NUM_FRAMES}, "
                  f"DATA.INPUT_SIZE {cfg.DATA.INPUT_SIZE}: its positional embedding was resampled to fit; set them "
                  "to the checkpoint's values to use the model as trained", file=sys.stderr)
    if without_head and head is None:
        model.reset_classifier(0)
    return model.eval()


# ---------------------------------------------------------------------------------------------------- loader
class ViewLoader:
    """The multi-view test loader over some videos (from :func:`build_view_loader`): batches
    ``{'video': (B, V, T, 3, S, S), 'index': (B,)}`` with ``index`` the position in the caller's ``paths``, and,
    after the iteration, :meth:`unreadable` for the videos that gave no batch."""

    def __init__(self, loader, positions: Sequence[int], unreadable: dict[int, str], index=None):
        self.loader = loader  # None when no video is readable
        self._positions = torch.as_tensor(list(positions), dtype=torch.int64)  # list row -> position in paths
        self._at_start = unreadable  # position -> reason: unlistable names and videos the index left out
        self._index = index
        self._bad_at_start = set(index.bad) if index is not None else set()

    def __len__(self) -> int:
        return len(self.loader) if self.loader is not None else 0

    def __iter__(self):
        if self.loader is None:
            return
        for batch in self.loader:
            yield {**batch, "index": self._positions[batch["index"]]}

    def unreadable(self, ctx: DistContext) -> dict[int, str]:
        """Positions of the videos not read, with each one's own reason: those known before the iteration
        (reported by the main rank only: every rank sees the same) and those this rank quarantined while decoding.
        Call after the iteration."""
        rows = dict(self._at_start) if ctx.is_main else {}
        if self._index is not None:
            rows.update({int(self._positions[r]): why for r, why in self._index.bad.items()
                         if r not in self._bad_at_start})
        return rows

    def close(self) -> None:
        if self.loader is not None:
            self.loader.close()


def build_view_loader(cfg, paths: Sequence[str], work_dir: str, ctx: DistContext,
                      progress: bool = True) -> ViewLoader:
    """The multi-view test loader (TEST.NUM_CLIP x TEST.NUM_CROP views) over ``paths``, sharded over the ranks.

    The videos are written as a list (label 0, unused) in ``work_dir``, named by a hash of its paths: runs on other
    videos sharing the work dir never read it, and a run on the same videos reuses its index cache (kept beside
    it). Rows are mapped back to ``paths`` by path, after checking that the index holds exactly the videos listed.
    A name no list line can hold (a line break, edge whitespace, not UTF-8) is reported unreadable with the reason,
    as is every video the index leaves out; when none is readable the loader yields nothing. This and
    :class:`ViewLoader` are the only contact with the data loader.

    Raises:
        DataError: the list does not hold the videos written to it, or the loader cannot run as configured.
    """
    from dali_pipelines.filelist import DataError
    from dali_pipelines.index import build_index, progress_lines_on_stderr
    from evautil.files import atomic_write_text
    from evautil.progress import stderr_is_terminal
    from tools.kinetics.scan import unlistable_reason

    unreadable: dict[int, str] = {}
    listed: list[int] = []
    for pos, path in enumerate(paths):
        why = unlistable_reason(path)
        if why:
            unreadable[pos] = f"cannot be passed to the loader's video list: {why}"
        else:
            listed.append(pos)
    if not listed:
        return ViewLoader(None, [], unreadable)
    text = "".join(f"{paths[i]} 0\n" for i in listed)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    list_path = os.path.join(os.path.abspath(work_dir), f"videos-{digest}.txt")
    if ctx.is_main:
        atomic_write_text(list_path, text, fsync=False)  # the same text when another run has the same videos
    barrier(ctx)
    data = cfg.DATA
    lines = progress and not stderr_is_terminal()  # a first index of many videos: a line every 30 s
    with progress_lines_on_stderr(warnings=True) if lines else contextlib.nullcontext():
        index = build_index(list_path, "", data.NUM_CLASSES, workers=data.INDEX_WORKERS,
                            full_decode=data.INDEX_FULL_DECODE, strict=False, timeout_s=float(data.VIDEO_TIMEOUT_S),
                            classes_name="DATA.NUM_CLASSES",
                            progress=progress and stderr_is_terminal(),  # as the loader builds it: any rank probes
                            root_name=None)  # a named file that is missing is reported as unreadable
    position_of = {paths[i]: i for i in listed}
    positions = [position_of.get(index.path(r), -1) for r in range(len(index))]
    if sorted(positions) != listed:
        raise DataError(f"{list_path} does not hold the {len(listed)} videos written to it (changed by another "
                        "process?); run again, or give this run a --work-dir of its own")
    single = np.flatnonzero(index.good_mask & (index.table.columns["num_frames"] < 2))
    for row in single.tolist():  # a still image (PNG, JPEG) opens as a one-frame video: no motion to classify
        index.quarantine(row, "a single frame: a still image, not a video", remember=False)
    for row, why in index.bad.items():
        unreadable[positions[row]] = why
    if not index.good_mask.any():  # the loader would refuse the list with one message for all videos
        return ViewLoader(None, positions, unreadable)
    test_cfg = cfg.clone()
    test_cfg.defrost()
    test_cfg.DATA.ROOT, test_cfg.DATA.VAL_FILE, test_cfg.DATA.STRICT = "", list_path, False
    test_cfg.freeze()
    from dali_pipelines.loader import build_loader

    loader = build_loader(test_cfg, "test", ctx.rank, ctx.world_size, ctx.device_id, index=index)
    return ViewLoader(loader, positions, unreadable, index)


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
