#!/usr/bin/env python
"""Write the PNG plots of a run from its output folder: training curves (loss, learning rate, top-1, clips/s,
data wait) from metrics.jsonl and the final evaluation's confusion matrix (or, for many classes, its most confused
pairs) from predictions_<split>.csv. A run writes them itself when it ends; this redraws them at any time, also
while the run is still going.

    python tools/plot_run.py output/demo
    python tools/plot_run.py output/k400 --out plots/k400
"""

from __future__ import annotations

import argparse
import os
import sys

# Runnable as `python tools/plot_run.py` from the repo root without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evautil.interrupt import STARTING, finished, on_interrupt  # noqa: E402

if __name__ == "__main__":  # a Ctrl-C during the imports below (seconds, for torch) is one line too
    on_interrupt(STARTING)

from engine.plots import final_predictions, read_metrics, write_plots  # noqa: E402
from engine.run_files import PLOT_FILES, remove_killed_writes  # noqa: E402
from evautil.cli import ArgumentParser  # noqa: E402
from evautil.files import cannot_read  # noqa: E402
from tools.inference import check_output_path  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("output_dir", help="a run's output folder (OUTPUT), holding metrics.jsonl (or that file)")
    ap.add_argument("--out", default=None, help="folder for the PNG files (default: the run's folder)")
    args = ap.parse_args(argv)
    if os.path.basename(os.path.normpath(args.output_dir)) == "metrics.jsonl" and os.path.isfile(args.output_dir):
        args.output_dir = os.path.dirname(os.path.abspath(args.output_dir))  # the run's file named: its folder
    on_interrupt("plotting: a plot being written is left as it was (each is replaced whole); the same command "
                 "draws them again")
    try:
        if args.out:
            check_output_path(args.out, "--out", folder=True)
            # a plot_run killed mid-write left a hidden temporary file there (a run's OUTPUT has its own cleaned
            # when the next run takes it); another plot_run's into the same --out, still writing, stays
            remove_killed_writes(args.out, PLOT_FILES)
        written = write_plots(args.output_dir, dest=args.out, warn=lambda line: print(f"note: {line}", file=sys.stderr))
    except (FileNotFoundError, ValueError) as e:  # ValueError: InputError, a damaged predictions file
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a full disk while a plot is written, or a run's folder this user may only read
        if e.filename and not str(e.filename).endswith(".png"):  # a file read on the way: not the plots' fault
            print(f"error: {cannot_read(e)}", file=sys.stderr)
        else:
            print(f"error: cannot write the plots: {e}" + ("" if args.out else "; --out FOLDER draws them elsewhere"),
                  file=sys.stderr)
        return 2
    # The evaluation logged, its predictions file gone (deleted, another folder's metrics.jsonl copied): say so,
    # rather than that nothing was logged or, beside the training curves, nothing at all
    preds = final_predictions(args.output_dir, read_metrics(args.output_dir)[1])
    lacking = f"{preds} (the last evaluation's, for its confusion plot) does not exist" \
        if preds and not os.path.isfile(preds) else ""
    if not written:
        print(f"error: {args.output_dir}/metrics.jsonl holds no training line, and "
              + (lacking or "no evaluation line yet"), file=sys.stderr)
        return 2
    if lacking:
        print(f"note: no confusion plot: {lacking}", file=sys.stderr)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    from evautil.interrupt import stdout_may_close
    sys.exit(finished(stdout_may_close(main)))  # a closed stdout stops no work; after its last line, nor a Ctrl-C
