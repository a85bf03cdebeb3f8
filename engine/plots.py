"""PNG plots of a run from what it wrote to its output folder: training curves from ``metrics.jsonl`` and the
confusion of the final evaluation from ``predictions_<split>.csv``.

Written at the end of every run (rank 0) and on demand by ``tools/plot_run.py <output dir>``. Files:

- ``training_curves.png``: loss, learning rate, evaluation top-1 (and mean class top-1), clips/s and data wait
  against the optimizer step;
- ``confusion_<split>.png``: the confusion matrix of the last evaluation for up to ``MATRIX_MAX_CLASSES`` classes;
  with more (Kinetics: 400-722), the most confused (true, predicted) pairs as a bar chart.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import warnings
from collections import Counter
from typing import Any, Callable

import numpy as np

from evautil.errors import not_utf8_line
from evautil.files import atomic_write, make_output_folder, naming_the_file
from evautil.progress import counted

from .metrics_file import read_lines

__all__ = ["read_metrics", "read_predictions", "final_predictions", "confusion_title", "curves_figure",
           "confusion_figure", "write_plots", "plot_finished_run",
           "MATRIX_MAX_CLASSES", "CURVES"]

MATRIX_MAX_CLASSES = 30
TOP_PAIRS = 25
# (metrics.jsonl key, y-axis label) of the training curves, in panel order; top-1 comes from the eval lines.
CURVES = (("loss", "loss"), ("lr", "learning rate"), ("top1", "top-1 (%)"), ("clips_per_sec", "clips/s"),
          ("data_wait_pct", "data wait (%)"))


def read_metrics(output_dir: str) -> tuple[list[dict], list[dict]]:
    """The training and evaluation lines of ``output_dir/metrics.jsonl``. A resumed run logs again the steps after
    its checkpoint; the last line of each step (and of each evaluation's step and split) wins.

    Raises:
        FileNotFoundError: no metrics.jsonl in ``output_dir``.
    """
    path = os.path.join(output_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: not the output folder of a run")
    train: dict[Any, dict] = {}
    evals: dict[Any, dict] = {}
    for n, text in enumerate(read_lines(path), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:  # a line cut short by a killed run: the others are still good
            continue
        if not isinstance(line, dict):  # not a line a run writes
            continue
        step = line.get("step")
        # Lines of another shape (edited, another program's) are passed over: a step that is not a number
        # could not be ordered, an eval line without its split names no predictions file (were tracebacks)
        if line.get("kind") == "train" and _is_number(step):
            train[step] = line
        elif line.get("kind") == "eval" and isinstance(line.get("split"), str) and (step is None or
                                                                                     _is_number(step)):
            evals[(step, line["split"], n if step is None else 0)] = line
    return [train[k] for k in sorted(train)], list(evals.values())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def _number_or_null(value: Any) -> bool:
    """A number, or null: what a run writes for a value that was NaN or infinite (text is no value of a run's)."""
    return value is None or _is_number(value)


def read_predictions(path: str) -> tuple[list[tuple[int, int]], dict[int, str]]:
    """``[(label, top-1 class)]`` and the class names found in a ``predictions_<split>.csv``; the rows of videos that
    were not scored (``status`` ``error``) are passed over.

    Raises:
        ValueError: a header without ``label`` or ``top1_class``, no scored row, a row without integers there, or a
            file that is not UTF-8 (its line named).
    """
    pairs, names = [], {}
    header: list[str] = []
    rows: list[tuple[int, dict[str, str]]] = []  # (the line a row begins on, as an editor numbers it; the row)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        start = 1  # csv's line_num is the line a row ends on; blank lines come as empty rows, so they count
        try:
            for cells in reader:
                line, start = start, reader.line_num + 1
                if line == 1:
                    header = cells
                elif cells:
                    rows.append((line, dict(zip(header, cells))))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}, {not_utf8_line(path, e)}") from None
    # Without these columns every line was taken for the header or a row of nothing: an empty plot, no word
    lacking = [c for c in ("label", "top1_class") if c not in header]
    if lacking:
        raise ValueError(f"{path}: its header has no {' and no '.join(map(repr, lacking))} column (got "
                         f"{','.join(header) or 'an empty file'!r}): not a predictions file of a run")
    if not rows:  # an evaluation writes a row per video: a file cut short (it drew an empty confusion plot)
        raise ValueError(f"{path}: a header and no row: no video's prediction to plot (a file cut short?)")
    unscored = sum(row.get("status") == "error" for _, row in rows)
    if unscored == len(rows):
        raise ValueError(f"{path}: no video's prediction to plot: all {len(rows)} rows are of videos that could not "
                         "be read (status error)")
    for line, row in rows:
        if row.get("status") == "error":
            continue
        try:
            label, pred = int(row["label"]), int(row["top1_class"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}, line {line}: expected integer 'label' and 'top1_class' columns, got "
                             f"label {row.get('label')!r}, top1_class {row.get('top1_class')!r}") from None
        pairs.append((label, pred))
        for cls, name in ((label, row.get("label_name")), (pred, row.get("top1_name"))):
            if name:
                names[cls] = name
    return pairs, names


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    return plt


def curves_figure(train: list[dict], evals: list[dict]):
    """A figure with one panel per entry of ``CURVES`` (x: optimizer step); the loss panel marks the steps whose
    line has no finite loss."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(CURVES), 1, figsize=(7.0, 2.0 * len(CURVES)), sharex=True)
    for ax, (key, label) in zip(axes, CURVES):
        if key == "top1":
            _eval_panel(ax, evals)
        else:
            # a null (a NaN or infinite value as metrics.jsonl writes it) is a gap: passed over, the line bridged it
            points = [(d["step"], d[key] if _is_finite(d[key]) else math.nan) for d in train
                      if key in d and _number_or_null(d[key])]
            if points:
                ax.plot(*zip(*points), color="#4C72B0", linewidth=1.2)
            if key == "loss":
                _mark_lost_losses(ax, train)
            if key == "lr":
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("optimizer step")
    axes[0].set_title("training curves")
    fig.tight_layout()
    return fig


def _mark_lost_losses(ax, train: list[dict]) -> None:
    """Mark, along the loss panel's foot, the steps whose line has no finite loss (null: metrics.jsonl writes a NaN
    or infinite mean loss so; older files NaN, Infinity): the curve only stopped there, which read as nothing logged
    rather than a loss that diverged."""
    lost = [d["step"] for d in train if "loss" in d and _number_or_null(d["loss"]) and not _is_finite(d["loss"])]
    if lost:
        ax.plot(lost, [0.04] * len(lost), transform=ax.get_xaxis_transform(), linestyle="none", marker="x",
                color="#C44E52", label=f"no finite loss ({counted(len(lost), 'line')})")
        ax.legend(fontsize=7, loc="upper right")


def _eval_panel(ax, evals: list[dict]) -> None:
    scored = [e for e in evals if e.get("step") is not None and _is_number(e.get("top1"))]
    for split in sorted({e["split"] for e in scored}):
        rows = sorted((e for e in scored if e["split"] == split), key=lambda e: e["step"])
        ax.plot([e["step"] for e in rows], [e["top1"] for e in rows], marker="o", label=f"{split} top-1")
        mean_class = [(e["step"], e["mean_class_top1"]) for e in rows if _is_number(e.get("mean_class_top1"))]
        if mean_class:
            ax.plot(*zip(*mean_class), marker="x", linestyle="--", label=f"{split} mean class top-1")
    if ax.lines:
        ax.legend(fontsize=7, loc="lower right")


def confusion_figure(pairs: list[tuple[int, int]], names: dict[int, str], title: str):
    """The confusion matrix (rows: true class, columns: predicted) for few classes, the most confused pairs for
    many."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    classes = sorted({c for p in pairs for c in p} | set(names))
    shown = _class_labels(classes, names)
    label = [shown[c] for c in classes]
    if len(classes) <= MATRIX_MAX_CLASSES:
        pos = {c: i for i, c in enumerate(classes)}
        matrix = np.zeros((len(classes), len(classes)), dtype=int)
        for t, p in pairs:
            matrix[pos[t], pos[p]] += 1
        side = max(4.0, 0.35 * len(classes) + 2.5)
        fig, ax = plt.subplots(figsize=(side + 1.0, side))
        im = ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(classes)), label, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(classes)), label, fontsize=7)
        if len(classes) <= 12:
            for (i, j), v in np.ndenumerate(matrix):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                        color="white" if v > matrix.max() / 2 else "black")
        fig.colorbar(im, ax=ax, label="videos", ticks=MaxNLocator(integer=True))  # counts: no 0.5 of a video
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    else:
        confused = Counter((t, p) for t, p in pairs if t != p).most_common(TOP_PAIRS)
        fig, ax = plt.subplots(figsize=(8.0, max(3.0, 0.3 * len(confused) + 1.5)))
        ax.barh(range(len(confused)), [n for _, n in confused], color="#C44E52")
        ax.set_yticks(range(len(confused)), [f"{shown[t]} -> {shown[p]}" for (t, p), _ in confused], fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.5 of a video
        if not confused:  # an empty chart on a scale of -0.04 to 0.04 said nothing
            ax.text(0.5, 0.5, "no confused pair: every video's top-1 class is its label", ha="center", va="center",
                    transform=ax.transAxes)
        ax.invert_yaxis()
        ax.set_xlabel("videos (true -> predicted)")
        ax.set_ylabel("most confused pairs")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def _class_labels(classes: list[int], names: dict[int, str]) -> dict[int, str]:
    """How each of ``classes`` is named on a plot: its name, with its id where another class has the same name (a
    label list naming two classes alike drew two rows of one name, and a pair of them as "run -> run", which reads
    as no confusion at all); its id when it has no name."""
    count = Counter(names.get(c) for c in classes)
    return {c: str(c) if c not in names else names[c] if count[names[c]] == 1 else f"{names[c]} ({c})"
            for c in classes}


def confusion_title(last: dict) -> str:
    """The confusion plot's title from the evaluation's line ``last``: its split, videos, views and top-1, each
    count in the right number, and what the line does not hold (null, or not a finite number) left out: "None
    videos", "1 videos" and "top-1 nan%" were drawn."""
    parts = [counted(last[key], unit) for key, unit in (("num_videos", "video"), ("views", "view"))
             if _is_number(last.get(key))]
    if _is_finite(last.get("top1")):
        parts.append(f"top-1 {last['top1']:.2f}%")
    return f"{last['split']}: {', '.join(parts)}" if parts else last["split"]


def final_predictions(output_dir: str, evals: list[dict]) -> str:
    """The predictions file of the last of ``evals`` (:func:`read_metrics`' eval lines), the confusion plot's
    source; empty without an evaluation."""
    return os.path.join(output_dir, f"predictions_{evals[-1]['split']}.csv") if evals else ""


def write_plots(output_dir: str, dest: str | None = None,
                log: Callable[[str], None] | None = None, dest_flag: str = "--out",
                warn: Callable[[str], None] | None = None) -> list[str]:
    """Write the training curves (when the run trained) and the final evaluation's confusion plot (when it
    evaluated) of the run in ``output_dir`` into ``dest`` (default: ``output_dir``). Returns the files written.
    Class names holding characters that the plots' font lacks are said to ``warn`` in one line (else matplotlib's
    warning, one for each character).

    Raises:
        FileNotFoundError: no metrics.jsonl in ``output_dir``.
        ValueError: the final evaluation's predictions file is damaged (named); no plot is written. Also
            (OutputFolderError) ``dest`` cannot be made: named with ``dest_flag``, the option that gave it.
    """
    plt = _pyplot()
    train, evals = read_metrics(output_dir)  # first: a folder that is not a run's is named as such, and not made
    split = evals[-1]["split"] if evals else None
    preds = final_predictions(output_dir, evals)
    # Read before anything is drawn: a damaged file is refused without leaving some of the plots behind
    predictions = read_predictions(preds) if preds and os.path.isfile(preds) else None
    if dest:
        make_output_folder(dest, dest_flag)
    dest = dest or output_dir
    written = []
    if train:
        fig = curves_figure(train, evals)
        written.append(_save(fig, os.path.join(dest, "training_curves.png"), plt))
    if predictions is not None:
        pairs, names = predictions
        with _missing_glyphs_said(warn):
            fig = confusion_figure(pairs, names, confusion_title(evals[-1]))
            written.append(_save(fig, os.path.join(dest, f"confusion_{split}.png"), plt))
    if log is not None and written:
        log("plots: " + ", ".join(written))
    return written


# matplotlib's warning for a character its font lacks, drawn as a box: "Glyph 27493 (\N{CJK UNIFIED IDEOGRAPH-6B65})
# missing from font(s) DejaVu Sans."
_MISSING_GLYPH = re.compile(r"Glyph (\d+) .*missing from font\(s\) (.+?)\.?$")


@contextlib.contextmanager
def _missing_glyphs_said(warn: Callable[[str], None] | None):
    """Within the block, matplotlib's warnings for characters of the class names that its font lacks (two console
    lines for each character: hundreds for a dataset whose class names are Chinese) are said to ``warn`` in one
    line naming a few, with the way to draw them; without ``warn``, as matplotlib says them."""
    if warn is None:
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", message="Glyph .* missing from font", category=UserWarning)
        yield
    lacking: dict[str, str] = {}
    for w in caught:
        found = _MISSING_GLYPH.match(str(w.message))
        if found:
            lacking.setdefault(chr(int(found.group(1))), found.group(2))
        else:  # any other warning, as it would have been shown
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if lacking:
        fonts = ", ".join(sorted(set(lacking.values())))
        warn(f"the confusion plot draws {len(lacking)} characters of the class names as boxes "
             f"({''.join(list(lacking)[:10])}{' ...' if len(lacking) > 10 else ''}): the font {fonts} has none of "
             "them; install a font that has them, add it to matplotlib's font.sans-serif (matplotlibrc), "
             "and draw the plots again with tools/plot_run.py")


def _save(fig, path: str, plt) -> str:
    """Write ``fig`` to ``path`` whole or not at all: a kill mid-write left half a PNG that a viewer, or the next
    plot_run, failed on (the temporary file a kill leaves goes when the next run takes OUTPUT). A failed write
    names ``path``, not the temporary file beside it."""
    try:
        with naming_the_file(path, written=True):
            # unsynced: a plot is drawn again from the run's files (tools/plot_run.py), and a sync per plot slows
            # every epoch's end
            atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100), fsync=False)
    finally:
        plt.close(fig)
    return path


def plot_finished_run(output_dir: str, info: Callable[[str], None], warn: Callable[[str], None]) -> list[str]:
    """:func:`write_plots` at the end of a run: a plotting failure is reported, with the command that draws them
    once its cause is mended (a full disk, a folder made read-only), never fatal to a finished run."""
    try:
        return write_plots(output_dir, log=info, warn=warn)
    except Exception as e:  # e.g. matplotlib missing or a broken font cache: the run's results are already saved
        warn(f"plots not written: {type(e).__name__}: {e}; the run's results are saved: once that is mended, "
             f"python tools/plot_run.py {output_dir} draws them")
        return []
