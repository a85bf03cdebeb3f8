"""What a stopped test keeps, so that its rerun scores only the rest: ``OUTPUT/test_progress.json`` for a training's
final test, ``OUTPUT/only_test_progress.json`` for an evaluation-only run's (``--only_test``), so that either, stopped
in a folder where the other waits for its rerun, leaves the other's videos in place.

A billion-parameter model's multi-view test lasts hours, longer than a scheduler's warning before its kill. A stop
signal ends the test after the batch in flight (each rank after its own, told to the others in the gather that
ends every evaluation); rank 0 writes the predictions of all ranks gathered so far here, with what identifies the
test they belong to (the weights' checkpoint, the views and frames, the list, its number of videos). The rerun's
test (``Trainer.evaluate_finished``; an evaluation-only run's, ``runner.only_test``, the same) takes them when all
of that matches, forwards only the other videos, and removes the file once the test is complete; a file of another
test is named in a warning and replaced. The list is identified by its content too (a list rewritten in place with
as many lines), and the predictions by a checksum written with them: a file cut short, or edited by hand, is named
with what differs and ignored, and the test scores every video again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from typing import Any

from evautil.errors import some_names
from evautil.files import atomic_write_text
from evautil.progress import counted

from .distributed import DistContext, all_gather_objects
from .evaluate import EvaluationStopped
from .preemption import PREEMPTED_EXIT_CODE, StoppedAtTest
from .run_files import standard_json

__all__ = ["EVALUATION_PROGRESS_FILE", "PROGRESS_FILE", "STOP_DURING_TEST", "FinalTestProgress", "interrupted_test"]

PROGRESS_FILE = "test_progress.json"  # a training's final test
EVALUATION_PROGRESS_FILE = "only_test_progress.json"  # an evaluation-only run's test
# What a test does about a stop signal, said after the batch it came in: the test asks before every batch, so when
# that batch is its last, nothing is left to stop and the run writes its results as a complete one.
STOP_DURING_TEST = (f"stopping after the batch in flight, keeping the videos scored so far (exit code "
                    f"{PREEMPTED_EXIT_CODE}), unless that batch is its last: then writing its results (exit code 0)")


def interrupted_test(test: str, progress_file: str, before: str = "", also: str = "") -> str:
    """A Ctrl-C's line while ``test`` runs (``before``: e.g. ", before its summary.json"): what a Ctrl-C keeps of
    it, and what a stop signal keeps instead, in ``progress_file``; ``also``: what else is as it was."""
    return (f"{test} stopped where it was{before} (a Ctrl-C here, or with several processes, keeps no partial score; "
            "one during a single process's batches keeps the videos scored so far, as SIGTERM or SIGUSR1 do, which "
            f"stop after the batch in flight and keep them in {progress_file}, exit code {PREEMPTED_EXIT_CODE}{also})")


class FinalTestProgress:
    """The progress file of one final test in ``metrics.output_dir`` (its lines go to ``metrics``' info and warn):
    ``setting`` (the config's list, views and frames, from the runner), the checkpoint whose weights are tested, the
    training's ``step`` and the test ``loader`` identify it. ``evaluation``: the test is that of an evaluation-only
    run (``--only_test``), named so in its stop line (e.g. "the evaluation of ckpt.pth"), whose progress is
    :data:`EVALUATION_PROGRESS_FILE`; its ``step`` is None besides, so that it never takes a training's final test
    for its own or the other way round."""

    def __init__(self, metrics: Any, ctx: DistContext, checkpoint: str | None, step: int | None,
                 setting: dict[str, Any] | None, loader: Any, evaluation: str | None = None) -> None:
        name = EVALUATION_PROGRESS_FILE if evaluation else PROGRESS_FILE
        self.path, self.ctx, self.metrics = os.path.join(metrics.output_dir, name), ctx, metrics
        self.checkpoint, self.evaluation = checkpoint, evaluation
        try:
            st = os.stat(checkpoint) if checkpoint else None
        except OSError:
            st = None
        index = getattr(loader, "index", None)
        self._labels = getattr(getattr(index, "videos", None), "labels", None)  # each list row's label
        self.test = {"checkpoint": os.path.realpath(checkpoint) if checkpoint else None, "global_step": step,
                     "checkpoint_size": st.st_size if st else None,
                     "checkpoint_mtime_ns": st.st_mtime_ns if st else None,
                     "views": [getattr(loader, "num_clip", None), getattr(loader, "num_crop", None)],
                     "listed_videos": len(index) if hasattr(index, "__len__") else None,
                     # a list rewritten in place with as many lines (another order, a label fixed) is another test
                     "list_digest": getattr(getattr(index, "videos", None), "content_digest", None),
                     **(setting or {})}

    def kept(self) -> dict[str, Any] | None:
        """The earlier stopped test's ``{'predictions', 'views', 'classes'}`` (:func:`evaluate.evaluate`'s ``kept``)
        when the file belongs to this test, else None (a file of another test or one that cannot be read is
        named in a warning). Rank 0 reads; every rank gets its answer (every rank must call it)."""
        found = all_gather_objects(self._read() if self.ctx.is_main else None, self.ctx)[0]
        if found:
            self.metrics.info(f"{len(found['predictions'])} videos of the stopped test kept from "
                              f"{os.path.basename(self.path)}")
        return found

    def _read(self) -> dict[str, Any] | None:
        if not os.path.exists(self.path):
            return None
        try:
            with open(self.path, encoding="utf-8") as f:
                saved = _loaded(f.read())
            # a probability that was NaN (a model's NaN output) is written as null (standard_json): NaN again
            preds = [(int(r), int(y), [int(c) for c in cs], [math.nan if p is None else float(p) for p in ps])
                     for r, y, cs, ps in saved["predictions"]]
            test, views, classes = saved["test"], int(saved["views"]), int(saved["classes"])
            if not isinstance(test, dict):  # (JSON of another shape: compared below, it raised outside this try)
                raise TypeError(f"its 'test' is {type(test).__name__}, not an object")
        except _CutShort as e:
            self.metrics.warn(f"{self.path} is cut short ({e}): ignored, this test scores every video and a stop "
                              "replaces it")
            return None
        except (OSError, ValueError, TypeError, KeyError) as e:
            self.metrics.warn(f"{self.path} cannot be read ({type(e).__name__}: {e}): ignored, this test scores "
                              "every video and a stop replaces it")
            return None
        differs = sorted(k for k in set(test) | set(self.test) if test.get(k) != self.test.get(k))
        if differs:
            said = "; ".join(f"its {k} {_short(test.get(k))}, this test's {_short(self.test.get(k))}" for k in differs)
            self.metrics.warn(f"{self.path} was written by another test ({said}): ignored, this test scores every "
                              "video and a stop replaces it")
            return None
        problem = self._changed(saved, preds, classes)
        if problem:
            self.metrics.warn(f"{self.path} is not as the stop wrote it ({problem}): ignored, this test scores every "
                              "video again and a stop replaces it")
            return None
        return {"predictions": preds, "views": views, "classes": classes}

    def _changed(self, saved: dict[str, Any], preds: list[tuple], classes: int) -> str:
        """What in a progress file of this test says its predictions are not those the stop wrote ("" when none
        does): their checksum (an edit by hand, a file of an older version without one), then what the list and
        the model say each must be (a row listed once, its list label, ``classes`` ranked classes)."""
        if "predictions_digest" not in saved:
            return "it has no checksum of its predictions (written by an earlier version)"
        if saved["predictions_digest"] != _digest(saved["predictions"]):
            return f"its {len(preds)} predictions do not match the checksum written with them: edited after the stop"
        rows = [r for r, *_ in preds]
        listed = self.test["listed_videos"]
        wrong = sorted(r for r, n in Counter(rows).items() if n > 1)
        if wrong:
            return f"list rows {some_names([str(r) for r in wrong])} are scored more than once"
        wrong = [r for r in rows if r < 0 or (listed is not None and r >= listed)]
        if wrong:
            return f"list rows {some_names([str(r) for r in wrong])} are not rows of the list's {listed} videos"
        if self._labels is not None:
            wrong = [f"row {r}: {y}, the list's {int(self._labels[r])}" for r, y, *_ in preds if y != self._labels[r]]
            if wrong:
                return f"labels differ from the list's ({some_names(wrong)})"
        ranked = min(5, classes)
        wrong = [str(r) for r, _, cs, ps in preds
                 if len(cs) != ranked or len(ps) != ranked or not all(0 <= c < classes for c in cs)]
        if wrong:
            return f"list rows {some_names(wrong)} do not hold {ranked} of the model's {classes} classes"
        return ""

    def stopped(self, stop: EvaluationStopped, signal_name: str | None, auto_resume: bool) -> StoppedAtTest:
        """Rank 0 writes what ``stop`` gathered (every rank must call it); returns the stop every rank raises."""
        kept = self._keep(stop, signal_name)
        during = f"during {self.evaluation or 'the final test'}"
        return StoppedAtTest(signal_name, self.checkpoint or "", auto_resume, f"{during}: {kept}",
                             trained=self.evaluation is None)

    def interrupted(self, stop: EvaluationStopped) -> str:
        """A single process's Ctrl-C (``stop.interrupted``): writes what ``stop`` scored as :meth:`stopped` does;
        returns what was kept, for the ``interrupted:`` line (e.g. "stopped by Ctrl-C, the 3 of its 8 videos ...")."""
        return self._keep(stop, "SIGINT", by=" by Ctrl-C")

    def _keep(self, stop: EvaluationStopped, signal_name: str | None, by: str = "") -> str:
        """Rank 0 writes ``stop``'s predictions (none: no file); returns what was kept ("stopped<by> ...")."""
        failure = None
        if self.ctx.is_main:
            predictions = json.loads(standard_json([list(p) for p in stop.predictions]))  # as read back: NaN null
            record = {"test": self.test, "views": stop.views, "classes": stop.classes, "signal": signal_name,
                      "predictions": predictions, "predictions_digest": _digest(predictions)}
            try:
                if stop.predictions:  # whole or nothing, even when a second Ctrl-C comes while it is written
                    atomic_write_text(self.path, standard_json(record) + "\n")
                elif os.path.exists(self.path):  # another test's (this one's would have given predictions): replaced
                    os.remove(self.path)         # by nothing, as kept()'s warning said
            except OSError as e:
                failure = f"{type(e).__name__}: {e}"
        failure = all_gather_objects(failure, self.ctx)[0]
        listed = self.test["listed_videos"]
        if not stop.predictions:  # a stop before the first batch: a file of no video would only be read back
            return f"stopped{by} before any of its {f'{listed} ' if listed else ''}videos was scored"
        scored = (f"{len(stop.predictions)} of its {listed} videos" if listed else
                  counted(len(stop.predictions), "video"))
        how = f"stopped{by}, " if by else "stopped after the batch in flight, "
        return how + (f"the {scored} scored so far are kept in {self.path}" if failure is None else
                      f"the {scored} scored so far could not be kept ({failure}): the rerun tests every video")

    def done(self) -> None:
        """The test is complete: its progress file, if any, goes (rank 0)."""
        if self.ctx.is_main:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            except OSError as e:
                self.metrics.warn(f"{self.path} could not be removed ({e}): the test is complete, the file is "
                                  "stale")


class _CutShort(ValueError):
    """A progress file that ends inside its record."""


def _loaded(text: str) -> Any:
    """A progress file's JSON; one cut short (a disk that filled, a copy cut off) raises :class:`_CutShort` with its
    size: JSON's own "Expecting ',' delimiter" at its last character did not say so."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        end = text.rstrip()  # the stop writes one object: a file that stops before its last "}" was cut short
        if end and (e.pos >= len(end) or not end.endswith("}")):
            raise _CutShort(f"its {len(text.encode('utf-8'))} bytes end inside the record") from None
        raise


def _digest(predictions: list) -> str:
    """The checksum of a progress file's predictions (as JSON reads them back: a NaN probability is null)."""
    return hashlib.sha256(json.dumps(predictions, allow_nan=False).encode("ascii")).hexdigest()


def _short(value: Any) -> str:
    """``value`` for a warning line: a long one (a list's path) cut to its last 60 characters."""
    text = "none" if value is None else json.dumps(value) if isinstance(value, (list, bool)) else str(value)
    return text if len(text) <= 60 else "..." + text[-57:]
