r"""Predict the classes of videos with the multi-view test protocol: top-k classes, names and probabilities.

    python -m tools.predict clips/ a.mp4 more.txt --cfg configs/k400.yaml --weights ckpt.pth \
        --opts TEST.NUM_CLIP 4 TEST.NUM_CROP 3
    python -m tools.predict a.mp4 --weights model.safetensors --out preds.jsonl     # no config needed
    torchrun --nproc_per_node 8 -m tools.predict videos.txt --cfg ... --weights hf://owner/repo/model.pth

Scores are the mean over views of the per-view softmax, as in evaluation. Class names come from DATA.LABEL_LIST,
else from an exported file, else classes are given by their index; a label list that is set but does not exist is
passed over with a warning (one that exists must be valid). Videos that cannot be read are listed with each one's
reason and the others predicted. A video whose display matrix turns it (a phone's portrait video) is scored as
stored, as evaluation reads it, with one ``note:`` line naming the turn. A list line's trailing integer label is
reported with its video (``label``, and ``label_name`` when the classes have names), and the top-1 and top-k
accuracy over the labelled videos predicted closes the run; a label outside the model's classes is an error naming
the list, the line and the label. From Python, :class:`Predictor` keeps the model loaded between calls and also
returns the features ``tools.extract_features`` writes.

Exit status: 0 when at least one video was predicted, 1 when none could be, 2 for unusable input (arguments,
config, weights, an --out or --work-dir that cannot be written, an --out that is an input) or NaN or infinite
scores (weights holding NaN; the error names the video) with a one-line error,
4 when stopped by SIGTERM or SIGUSR1 (a batch scheduler's stop) before the predictions are made, with one
``stopped:`` line: the predictions are printed and --out written at the end only, so nothing was, and an earlier
--out is left as it was; the video index in --work-dir keeps the videos probed so far. Once the predictions are
made a stop signal lets them be written.
"""

from __future__ import annotations

# Before any other import: a Ctrl-C or a stop signal from the process's first moments on is one line too.
from evautil.interrupt import STARTING, STOPPED_EXIT_STATUS, finished, on_interrupt  # noqa: E402

if __name__ == "__main__":  # until main() says what its work keeps (torch and the engine load in it: seconds)
    on_interrupt(STARTING, stop_status=STOPPED_EXIT_STATUS)

import argparse  # noqa: E402
import copy  # noqa: E402
import numbers  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import weakref  # noqa: E402
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence  # noqa: E402

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py: spinning OpenMP threads starve the loader

# torch, DALI and the engine are imported in the functions that use them: the loader's worker processes import this
# module again (evautil/workers.py) and need none of them.
from evautil.progress import counted  # noqa: E402
from tools.predict_output import (FORMATS, format_csv, format_for, format_json, format_jsonl,  # noqa: E402
                                  format_table, write_out, write_stdout)

if TYPE_CHECKING:
    import torch

    from engine.distributed import DistContext

__all__ = ["Predictor", "predict_videos", "DEFAULT_TOP_K", "NonFiniteScoresError", "accuracy_line", "format_table",
           "format_json", "format_jsonl", "format_csv", "main"]  # the formats: tools.predict_output


DEFAULT_TOP_K = 5  # classes per video: the command's --top-k and Predictor.predict's top_k when not given


def predict_videos(cfg, model, paths: Sequence[str], work_dir: str, ctx: DistContext, *, top_k: int = DEFAULT_TOP_K,
                   class_names: dict[int, str] | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """One record per path, in the order of ``paths`` (identical on every rank):
    ``{'path', 'status': 'ok', 'top_k': [{'class', 'name', 'prob'}, ...]}`` (``name`` left out when the classes
    have no names, as a label's ``label_name`` is) or ``{'path', 'status': 'error', 'error': reason}``."""
    from engine import distributed
    from engine.precision import resolve_precision
    from engine.ranking import top_classes
    from tools.inference import loader_warnings_unprinted, note_turned, views_through_model

    top_k = _top_k_argument(top_k)
    names = class_names or {}
    amp_dtype, _ = resolve_precision(cfg.TRAIN.PRECISION, ctx.device)
    local: dict[int, list] = {}

    def rank(rows: list[int], _, logits) -> None:
        probs = logits.softmax(-1).mean(1)  # mean of the per-view softmax, as evaluation scores
        top_p, top_i = top_classes(probs, min(top_k, probs.shape[-1]))  # ties in class order, as evaluated
        for row, classes, ps in zip(rows, top_i.cpu().tolist(), top_p.cpu().tolist()):
            local[row] = list(zip(classes, ps))

    # quiet: the loader's "bad video" warnings are left out too, the records give each unreadable video's reason
    with loader_warnings_unprinted(quiet=not progress):
        # scores that are NaN or infinite are refused, naming the first video that got them: their probabilities
        # would be NaN, which JSON cannot hold (json.dumps writes a bare NaN), and their ranking means nothing
        failed, turned = views_through_model(cfg, model, paths, work_dir, ctx, amp_dtype, checked="scores",
                                     error=NonFiniteScoresError, bar="predict" if progress and ctx.is_main else None,
                                     progress=progress, each_batch=rank)
    preds: dict[int, list] = {}
    for part in distributed.all_gather_objects({"preds": local, "failed": failed}, ctx):
        preds.update(part["preds"])
        failed.update(part["failed"])
    if ctx.is_main:  # the turns the index recorded, the same on every rank: of the videos scored
        note_turned({paths[row]: turned[row] for row in sorted(turned) if row in preds}, "scored")
    records = []
    for row, path in enumerate(paths):
        if row in preds:
            top = [{"class": int(c), **({"name": names[int(c)]} if int(c) in names else {}), "prob": float(p)}
                   for c, p in preds[row]]
            records.append({"path": path, "status": "ok", "top_k": top})
        else:
            records.append({"path": path, "status": "error", "error": failed.get(row, "not decoded")})
    return records


def _top_k_argument(top_k: Any) -> int:
    """``top_k`` as an int of at least 1, checked before any video is decoded: a float (2.0) or a str failed once
    every video was, in torch's words; 0 gave empty "ok" records, below 0 torch's "k out of range".

    Raises:
        TypeError: not an int (:func:`_int_argument`). ValueError: below 1."""
    top_k = _int_argument(top_k, "top_k")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    return top_k


def _int_argument(value: Any, name: str) -> int:
    """``value`` as an int (numpy's integers too), or a TypeError naming ``name``: a float or a str is refused, not
    rounded, and a bool is no count."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    return int(value)


class NonFiniteScoresError(ValueError):
    """The model gave NaN or infinite logits for a video: the command's exit-2 error, raised by the Python API."""


def _with_label(record: dict[str, Any], label: int | None, names: dict[int, str]) -> dict[str, Any]:
    """``record`` with the ``label`` its video was listed with and, when the classes have names, its ``label_name``;
    a video given without a label keeps its record as it is (no label fields)."""
    if label is None:
        return record
    return {**record, "label": label, **({"label_name": names[label]} if label in names else {})}


def accuracy_line(records: Sequence[dict[str, Any]], top_k: int, num_classes: int | None = None) -> str:
    """``top-1 87.50 % / top-5 100.00 % on 8 labelled videos`` over the predicted records with a ``label`` (top-1
    alone when ``top_k`` is 1); empty when there is none. A ``top_k`` that ranks every class (``num_classes``, or
    more than the records rank) is 100 % whatever the model does: ``(top-5 n/a: 4 classes)``, as an evaluation run
    leaves out its top-5 then."""
    scored = [r for r in records if r["status"] == "ok" and r.get("label") is not None]
    if not scored:
        return ""

    def share(k: int) -> str:  # of the videos whose label is among their first k classes
        hits = sum(r["label"] in [t["class"] for t in r["top_k"][:k]] for r in scored)
        return f"top-{k} {100.0 * hits / len(scored):.2f} %"

    ranked = len(scored[0]["top_k"])  # min(top_k, the model's classes)
    classes = num_classes if num_classes is not None else ranked if ranked < top_k else None
    if top_k > 1 and classes is not None and top_k >= classes:
        return f"{share(1)} (top-{top_k} n/a: {counted(classes, 'class')}) on {counted(len(scored), 'labelled video')}"
    shares = [share(k) for k in sorted({1, top_k})]
    return f"{' / '.join(shares)} on {counted(len(scored), 'labelled video')}"


# ------------------------------------------------------------------------------------------------ Python API
class Predictor:
    """The command's predictions from Python, with the model loaded once for any number of calls.

        from tools.predict import Predictor
        with Predictor("eva_k400.safetensors", opts=["TEST.NUM_CLIP", "4", "TEST.NUM_CROP", "3"]) as predictor:
            for record in predictor.predict(["a.mp4", "clips/"], top_k=5):
                print(record["path"], record["status"], record.get("top_k"))

    ``weights``, ``cfg`` and ``opts`` are the command's ``--weights``, ``--cfg`` and ``--opts`` (a list of KEY
    VALUE items, a value a str or a number); a path (weights, cfg, ``work_dir``, videos, ``root``) is a str, bytes or
    os.PathLike (anything else: a TypeError naming the argument);
    records are those of :func:`predict_videos`, one per video given, in the order given: a video named twice gets
    two records (it is processed once, as is a file named twice through a link), and a record's ``path`` is the
    video as given when the input names it (a
    str; a folder's or a list's videos: their absolute paths), so that ``zip(videos, records)`` pairs them; a
    video from a list line with a label gets that line's ``label`` (and ``label_name`` when the classes have
    names). One process, on ``device``:
    ``auto`` (the GPU when CUDA is available, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` (in any case: ``CPU``) or
    a torch.device (CUDA where it is not available: a ValueError). The videos' lists and
    index caches go to ``work_dir``; with none, to a temporary folder that :meth:`close` (or leaving the ``with``
    block) removes, as does the collection of a Predictor never closed, or the end of the process. Errors are
    raised, not printed: unusable settings or weights as the command's exit-2 errors (ValueError, OSError and the
    config and checkpoint errors; a ``work_dir`` that cannot be made as
    ``OutputFolderError``, a ValueError naming it), and an input with no video in it as ``InputError``;
    a video that cannot be read is a record with its reason. Weights without a head, or with a head of another
    class count, give features (one ``note:`` line) and :meth:`predict` refuses them (CheckpointError).
    """

    def __init__(self, weights: str | bytes | os.PathLike, cfg: str | bytes | os.PathLike | None = None,
                 opts: Sequence[str] = (), work_dir: str | bytes | os.PathLike | None = None,
                 device: str | torch.device = "auto", progress: bool = False):
        from engine.distributed import DistContext
        from evautil.cli import home_path
        from evautil.files import make_output_folder
        from tools.inference import check_output_path, load_model, load_setup
        from tools.model_io import compute_device

        # a leading ~ is the home folder, as for the command's flags and cfg: weights were "not found", and a
        # work_dir "~/x" was made as a folder named ~ in the working folder
        weights = home_path(_path_argument(weights, "weights"))
        # absolute: a relative one followed the working folder, the caches of a call after an os.chdir going to
        # another folder than the one made here
        work_dir = None if work_dir is None else os.path.abspath(home_path(_path_argument(work_dir, "work_dir")))
        # bytes as the other paths: a config's error named the file b'...', a number was "expected str, bytes or
        # os.PathLike object, not int", naming no argument
        cfg = None if cfg is None else home_path(_path_argument(cfg, "cfg"))
        self.cfg, self.class_names = load_setup(cfg, _opts_argument(opts), weights)
        self.ctx = DistContext(device=compute_device(device))
        if work_dir is not None:
            check_output_path(work_dir, "work_dir", folder=True)
        head_problem: list[str] = []  # features stop before the head: weights without a usable one still give them
        self.model = load_model(self.cfg, weights, self.ctx.device, features_only=True, head_problem_to=head_problem)
        self._head_problem = head_problem[0] if head_problem else None
        self.progress = progress
        self._own_work_dir = work_dir is None  # made last: nothing is left behind when loading fails
        if work_dir is not None:  # what the check cannot foresee (a name too long): one line naming work_dir
            make_output_folder(work_dir, "work_dir")
        self.work_dir: str | None = tempfile.mkdtemp(prefix="eva_predict_") if work_dir is None else work_dir
        # a Predictor never closed (a notebook's, dropped or left at exit) left its temporary folder and caches in
        # the temporary folder for good: removed when it is collected, or when the process ends
        self._remove_work_dir = weakref.finalize(self, shutil.rmtree, self.work_dir, ignore_errors=True) \
            if self._own_work_dir else None

    def predict(self, videos: str | bytes | os.PathLike | Iterable[str | bytes | os.PathLike],
                top_k: int | None = None, root: str | os.PathLike | None = "") -> list[dict[str, Any]]:
        """Records for the videos of ``videos`` (files, folders searched recursively, list files; one or several),
        one per video given, in the order given (see the class); ``root`` prefixes relative names as the command's
        ``--root``. ``top_k``: classes per video, None for :data:`DEFAULT_TOP_K`; one given above the model's classes
        lists every class, with the command's ``note:`` line on stderr (None, the default, is not noted, as the
        command's default is not).

        Raises:
            RuntimeError: the Predictor is closed (:meth:`close`, or its ``with`` block left), said first.
            CheckpointError: the weights have no head, or one of another class count (they give features only).
            TypeError: ``top_k`` not an int (a float, a str), or ``videos`` or ``root`` not paths (str, bytes or
                os.PathLike; None for no ``root``), naming the argument.
            ValueError: ``top_k`` below 1, which the command's ``--top-k`` refuses too.
            LabelRangeError: a list's label outside the model's classes (a ValueError naming the list, the line
                and the label), as the command refuses it.
            NonFiniteScoresError: the model's scores for a video are NaN or infinite (a ValueError naming it).
        """
        from models import CheckpointError
        from tools.inference import first_names, note_top_k

        work_dir = self._work_dir()  # first: a closed Predictor said "no videos found" of an empty folder
        if self._head_problem:
            raise CheckpointError(self._head_problem)
        named = self._videos(videos, root, self.cfg.DATA.NUM_CLASSES)
        given_top_k = top_k is not None
        top_k = _top_k_argument(DEFAULT_TOP_K if top_k is None else top_k)
        # as the command notes a --top-k above the classes, in its words: the API listed every class without one
        note_top_k(top_k, self.cfg.DATA.NUM_CLASSES, warn=given_top_k, name="top_k")
        first = first_names(path for _, path, _ in named)  # each file scored once (a folder through a link too)
        paths = list(dict.fromkeys(first.values()))
        records = dict(zip(paths, predict_videos(self.cfg, self.model, paths, work_dir, self.ctx, top_k=top_k,
                                                 class_names=self.class_names, progress=self.progress)))
        given = _per_video_given([(name, path) for name, path, _ in named],
                                 {path: records[f] for path, f in first.items()})
        return [_with_label(r, label, self.class_names) for r, (_, _, label) in zip(given, named)]

    def features(self, videos: str | bytes | os.PathLike | Iterable[str | bytes | os.PathLike],
                 window: int | None = None, stride: int | None = None,
                 root: str | os.PathLike | None = "") -> list[dict[str, Any]]:
        """The pooled pre-logit features (the fc_norm output) of ``videos`` (as for :meth:`predict`: one record
        per video given, in the order given), as ``python -m tools.extract_features`` computes them: ``{'path',
        'status': 'ok', 'features': float32 array, ...}`` with a row per test view ([crop][clip] order; ``mode``
        'views') or, with ``window`` frames every ``stride`` (both at least 1; default ``window``), per sliding
        window (``mode`` 'windows', with the windows' ``starts_frames`` and ``starts_seconds``); ``{'path',
        'status': 'error', 'error': reason}`` for a video that cannot be read.

        Raises:
            TypeError: ``window`` or ``stride`` neither None nor an int (a float, a str), naming it.
            ValueError: the window settings the command refuses (``window`` below 1, ``stride`` without
                ``window`` or below 1), in its words.
            NonFiniteFeaturesError: the model's features for a video are NaN or infinite (a ValueError naming it).
        """
        from tools.extract_features import extract_into
        from tools.feature_windows import window_settings_error

        work_dir = self._work_dir()  # first, as for predict
        # a float was "'float' object cannot be interpreted as an integer", naming neither setting
        window, stride = (None if value is None else _int_argument(value, name)
                          for value, name in ((window, "window"), (stride, "stride")))
        problem = window_settings_error(window, stride)
        if problem:
            raise ValueError(problem)
        named, collected = [(name, path) for name, path, _ in self._videos(videos, root)], _CollectedFeatures()
        paths = list(dict.fromkeys(path for _, path in named))
        extract_into(self.cfg, self.model, paths, collected, self.ctx, window=window or 0, stride=stride or 0,
                     work_dir=work_dir, progress=self.progress)
        return _per_video_given(named, collected.records)

    def close(self) -> None:
        """Remove the temporary work folder (a given ``work_dir`` is kept, with its index caches)."""
        if self._remove_work_dir is not None:
            self._remove_work_dir()  # once: a second call does nothing
        self.work_dir = None

    def _videos(self, videos, root: str, num_classes: int | None = None) -> list[tuple[str, str, int | None]]:
        """(name as given, absolute path, label) per video given: see :func:`tools.inference.videos_of_inputs`."""
        from tools.inference import videos_of_inputs

        # bytes are a path too, as os.fspath gives it (a name from os.listdir(b".")): iterated, they were integers
        items = [videos] if isinstance(videos, (str, bytes, os.PathLike)) else videos
        try:
            items = list(items)
        except TypeError:
            raise TypeError(f"videos must be a path or an iterable of paths (str, bytes or os.PathLike), got "
                            f"{type(videos).__name__} {videos!r}") from None
        names = [_path_argument(v, "each of videos") for v in items]
        return videos_of_inputs(names, "" if root is None else _path_argument(root, "root"), num_classes)

    def _work_dir(self) -> str:
        if self.work_dir is None:
            raise RuntimeError("this Predictor is closed")
        return self.work_dir

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _path_argument(value: Any, name: str) -> str:
    """``value`` (str, bytes or os.PathLike) as a str path, bytes decoded as ``os.fsdecode`` does; anything else
    a TypeError naming the argument: a state_dict given as ``weights`` was torch's "expected str, bytes or
    os.PathLike object, not dict", naming no argument."""
    try:
        return os.fsdecode(value)
    except TypeError:
        loaded = " (weights already loaded: give the file they were read from, or save them with torch.save)" \
            if name == "weights" and isinstance(value, dict) else ""
        raise TypeError(f"{name} must be a path (str, bytes or os.PathLike), got {type(value).__name__}"
                        f"{'' if isinstance(value, dict) else f' {value!r}'}{loaded}") from None


def _opts_argument(opts: Any) -> list[str]:
    """``opts`` as the command's ``--opts`` strings, a number (``["TEST.NUM_CLIP", 4]``) written as ``str`` writes
    it: its int was "'int' object has no attribute 'partition'", and a str or a dict was read item by item (a str's
    letters as keys, a dict's keys alone) into a ConfigError about pairs.

    Raises:
        TypeError: ``opts`` is a str, bytes or a mapping, or an item is neither a str nor a number, naming it."""
    example = "e.g. opts=['TEST.NUM_CLIP', '4', 'TEST.NUM_CROP', '3']"
    if isinstance(opts, (str, bytes, Mapping)):
        raise TypeError(f"opts must be a sequence of KEY VALUE items, {example}, got {type(opts).__name__} "
                        f"{opts!r}")
    items = list(opts)
    for item in items:
        if not isinstance(item, (str, numbers.Number)):  # None, a list: no value the command could be given
            raise TypeError(f"opts items must be str (a key or a value) or numbers, {example}, got "
                            f"{type(item).__name__} {item!r}")
    return [item if isinstance(item, str) else str(item) for item in items]


def _per_video_given(named: Sequence[tuple[str, str]], by_path: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """For each (name, path) of :meth:`Predictor._videos`, the path's record (each video is processed once) under
    the name given: the results pair with the videos given, duplicates included, each record its own: a repeat's
    ``top_k`` list and ``features`` array were the first's, so that normalising one in place changed both."""
    seen: set[int] = set()  # the records given out: by identity, as two names of one file share one
    records = []
    for name, path in named:
        record = by_path.get(path, {"path": path, "status": "error", "error": "not decoded"})
        records.append({**(copy.deepcopy(record) if id(record) in seen else record), "path": name})
        seen.add(id(record))
    return records


class _CollectedFeatures:
    """An in-memory feature store for :meth:`Predictor.features` (what extract_into hands a FeatureStore)."""

    def __init__(self):
        self.records: dict[str, dict[str, Any]] = {}  # path -> record

    def add(self, meta: dict[str, Any], features) -> None:
        self.records[meta["path"]] = {"path": meta["path"], "status": "ok", "features": features,
                                      **{k: v for k, v in meta.items() if k != "path"}}

    def fail(self, path: str, reason: str) -> None:
        self.records[path] = {"path": path, "status": "error", "error": reason}


# ---------------------------------------------------------------------------------------------------- command
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from evautil.cli import ArgumentParser, home_path
    from tools.inference import opts_last

    p = ArgumentParser(prog="python -m tools.predict", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=home_path,
                   help="video files, folders (searched recursively), quoted patterns ('clips/*.mp4') or lists (.txt, "
                        "one video per line; a trailing "
                        "integer label is reported with the video, and the accuracy over the labelled videos closes "
                        "the run)")
    p.add_argument("--weights", required=True, type=home_path,
                   help="checkpoint (.pth/.pt), exported .safetensors, or an hf:// reference "
                        "(hf://owner/repo[@rev]/file)")
    p.add_argument("--cfg", default="", type=home_path, help="config YAML (optional with an exported .safetensors)")
    p.add_argument("--root", default="", type=home_path,
                   help="folder that relative paths in lists and arguments are joined to")
    p.add_argument("--top-k", type=int, default=None, help=f"classes per video (default {DEFAULT_TOP_K})")
    p.add_argument("--out", default="", type=home_path, help="also write the predictions here")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="of --out: table, json (one array), jsonl (a line per video) or csv (default: from its "
                        "extension, .json, .jsonl or .csv, else table); without --out, of stdout (also with "
                        "--quiet)")
    p.add_argument("--work-dir", default="output/predict", type=home_path,
                   help="where the video lists and their index caches go (one per set of videos; default "
                        "output/predict)")
    p.add_argument("--quiet", action="store_true", help="no table on stdout, no progress (bar or lines), no "
                                                      "warnings for unreadable videos (the results list them)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides, e.g. "
                                                                        "TEST.NUM_CLIP 4 TEST.NUM_CROP 3")
    args = p.parse_args(opts_last(p, p.respelled(argv)))
    if args.top_k is not None and args.top_k < 1:
        p.error(f"--top-k must be at least 1, got {args.top_k}")
    # given: one above the classes is noted
    args.top_k_given, args.top_k = args.top_k is not None, args.top_k or DEFAULT_TOP_K
    return args


def main(argv: list[str] | None = None) -> int:
    from engine import distributed
    from tools.inference import (InputError, check_output_not_input, check_output_path, error_exit, first_names,
                                 labelled_files, load_model, load_setup, note_top_k, stopped_exit, videos_of_rank_0)

    args = parse_args(argv)
    # the predictions are printed and written at the end only: an --out written before is left as it was
    kept = (f"no predictions printed or written{f' (--out {args.out} left as it was)' if args.out else ''}; the "
            f"video index in {args.work_dir} keeps the videos probed so far, for the next run")
    on_interrupt(f"predicting: {kept}")
    from evautil.files import make_output_folder
    from evautil.interrupt import Stopped, stop_signals_raise
    from train import INPUT_ERRORS

    ctx, writing = None, False  # the index caches in --work-dir are written from predict_videos on
    done = []  # once set, a stop signal lets the predictions made be printed and written (a second): they are kept
    # A batch scheduler's stop (SIGTERM, SIGUSR1) ends the work as a Ctrl-C does (the index caches save what they
    # probed), with one line and the exit code of a stopped run.
    with stop_signals_raise(ignored=lambda: bool(done)):
        try:
            if args.out:  # before the model runs: a bad target found after predicting would lose the predictions
                check_output_path(args.out, "--out", folder=False, example="predictions.jsonl")
            check_output_path(args.work_dir, "--work-dir", folder=True)
            cfg, names = load_setup(args.cfg, args.opts, args.weights, warn=int(os.environ.get("RANK", "0")) == 0,
                                    command=shlex.join(["python", "-m", "tools.predict", *args.inputs]))
            # (path, label or None), a file once under its first name, and how many other names it had
            videos, same_file = labelled_files(args.inputs, args.root, cfg.DATA.NUM_CLASSES)
            check_output_not_input(args.out, "--out", [("the input", i) for i in args.inputs] + [
                ("--weights", args.weights), ("--cfg", args.cfg), ("DATA.LABEL_LIST", cfg.DATA.LABEL_LIST)],
                [path for path, _ in videos])
            # What the check cannot foresee (a name too long), once the inputs are known good: a bad one leaves no
            # empty folder behind
            make_output_folder(args.work_dir, "--work-dir")
            ctx = distributed.init_from_env()
            note_top_k(args.top_k, cfg.DATA.NUM_CLASSES, args, warn=ctx.is_main and args.top_k_given)
            if same_file and ctx.is_main:
                print(f"note: {counted(same_file, 'name')} given {'was' if same_file == 1 else 'were'} the file of an "
                      "earlier name (a folder through a link, or a path spelled otherwise): each file is predicted "
                      "once and listed under the first name given", file=sys.stderr)
            videos = videos_of_rank_0(videos, ctx)
            model = load_model(cfg, args.weights, ctx.device, warn=ctx.is_main)
            writing = True
            first = first_names(path for path, _ in videos)  # each file decoded once, under its first name
            paths = list(dict.fromkeys(first.values()))
            by_path = dict(zip(paths, predict_videos(cfg, model, paths, args.work_dir, ctx, top_k=args.top_k,
                                                     class_names=names, progress=not args.quiet)))
            # a labelled line keeps its own name
            records = [_with_label({**by_path[first[path]], "path": path}, label, names) for path, label in videos]
            done.append(True)
        except Stopped as e:
            return stopped_exit(e, kept)
        except INPUT_ERRORS + (InputError, ValueError, OSError) as e:
            done.append(True)  # the error is the command's last word
            # a read of the config, a list or the weights that the storage failed (an I/O error), as the other tools
            # say it; errors of the project's own (no strerror) say it all
            return error_exit(e, args, writing=writing)
        written = True
        distributed.shutdown()  # before the results, which are the last thing the command does
        if ctx.is_main:
            formats = {"table": format_table, "json": format_json, "jsonl": format_jsonl, "csv": format_csv}
            printed = bool(args.format and not args.out) or not args.quiet  # the records are on stdout
            if args.format and not args.out:  # the format asked for goes to stdout: ignored, --quiet printed nothing
                write_stdout(formats[args.format](records))
            elif not args.quiet:
                write_stdout(format_table(records))
            if args.out:
                text = formats[format_for(args.out, args.format)](records)
                written = write_out(args.out, text, args.quiet)
                printed = printed or (args.quiet and not written)  # write_out put them on stdout instead
            bad = sum(r["status"] != "ok" for r in records)
            # where the unreadable videos' reasons are: --quiet prints no table, so "above" held only without it
            where = " (listed above)" if printed else f" (listed in {args.out})" if args.out else ""
            # the views, which an export does not record: TEST.NUM_CLIP x TEST.NUM_CROP
            print(f"predicted {len(records) - bad} of {counted(len(records), 'video')} ("
                  f"{counted(cfg.TEST.NUM_CLIP, 'clip')} x {counted(cfg.TEST.NUM_CROP, 'crop')})"
                  + (f"; {bad} unreadable{where}" if bad else ""), file=sys.stderr)
            # rank 0's records: each reported video counted once
            accuracy = accuracy_line(records, args.top_k, cfg.DATA.NUM_CLASSES)
            if accuracy:
                print(accuracy, file=sys.stderr)
    ok = any(r["status"] == "ok" for r in records)
    return 2 if not written else 0 if ok else 1


if __name__ == "__main__":
    from evautil.interrupt import stdout_may_close
    sys.exit(finished(stdout_may_close(main)))  # a closed stdout stops no work; after its last line, nor a Ctrl-C
