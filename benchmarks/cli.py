"""The benchmark scripts' command line and run: checks of option values made before anything is measured (one
``error: ...`` line, exit code 2), ``--quick``'s sizes, which the sizes given win over (``set_quick_defaults``), and
``run_main``, the shared ``main()``: it runs a measurement through ``until_stopped``, so that SIGTERM or SIGUSR1 ends
it as a Ctrl-C does (temporary folders and worker pools cleaned up), with one ``stopped:`` line and exit code 4.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from typing import Callable, Sequence

from benchmarks.common import INPUT_ERRORS, InputError, input_error
from benchmarks.reporting import bar_plot, check_figures, write_json
from configs import ConfigError
from configs.checks import MAX_DALI_THREADS
from evautil.files import output_path_problem, write_failure

__all__ = ["given_options", "set_quick_defaults", "require_positive", "MAX_THREADS", "require_thread_counts",
           "chosen_names", "refuse_opts_set_by_flags", "check_arch", "output_files_problem", "NOTHING_WRITTEN",
           "NOTHING_WRITTEN_JSON_ONLY", "say_what_an_interrupt_keeps", "until_stopped", "measured",
           "results_written", "run_main"]


def given_options(parser, argv) -> set[str]:
    """The ``dest`` of each option given on the command line (``argv``, or sys.argv's) that ``parser`` parsed."""
    probe = copy.deepcopy(parser)
    for action in probe._actions:  # argparse lists the actions only there
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))  # only what the command line set


def set_quick_defaults(parser, argv, args, **values) -> None:
    """``--quick``: set each of ``values`` (``dest=value``) on ``args``, except the options given on the command
    line (``argv``, or sys.argv's), which win: ``--quick --rows 2000`` measured 400 rows without a word."""
    given = given_options(parser, argv)
    for dest, value in values.items():
        if dest not in given:
            setattr(args, dest, value)


def require_positive(parser, args, names: Sequence[str], low: int = 1) -> None:
    """``parser.error`` (one line, exit 2) for the first of ``args.<name>`` that is below ``low`` (1, or 0 for the
    counts where none is a choice: warm-up, torch threads), naming the value given."""
    for name in names:
        value = getattr(args, name)
        if value < low:
            parser.error(f"--{name.replace('_', '-')} must be at least {low}, got {value}")


MAX_THREADS = MAX_DALI_THREADS  # DALI aborts the process past it (configs.checks)


def require_thread_counts(parser, counts: Sequence[int], flag: str = "--threads") -> None:
    """``parser.error`` (one line, exit 2) for the first of ``counts`` above :data:`MAX_THREADS`: --threads 100000
    ended the run in DALI's abort, without a word of which option."""
    from benchmarks.hardware import cpu_count

    for count in counts:
        if count > MAX_THREADS:
            parser.error(f"{flag} {count}: at most {MAX_THREADS} threads are taken (more exhaust the threads a "
                         f"process can start, and DALI aborts it); this machine has {cpu_count()} usable cores: give "
                         f"e.g. {flag} {cpu_count()}")


def chosen_names(flag: str, text: str, choices: Sequence[str], what: str) -> list[str]:
    """The names of a comma-separated option (``--loaders dali,decord``), each one of ``choices``. An unknown name,
    or none at all, is an :class:`InputError` naming the flag: an empty list measured nothing and passed as a
    run (exit code 0)."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    for x in names:
        if x not in choices:
            raise InputError(f"{flag}: unknown {what} {x!r} (choose from {', '.join(choices)})")
    if not names:
        raise InputError(f"{flag} {text!r} names no {what} (choose from {', '.join(choices)})")
    return names


def refuse_opts_set_by_flags(parser, opts: Sequence[str], flag_keys: dict[str, str]) -> None:
    """``parser.error`` (one line, exit 2) when ``--opts`` sets a config key the benchmark takes from one of its
    flags (``flag_keys``: key -> flag): such a key was ignored, or applied under another row's label; or when the
    config refuses ``--opts`` (an unknown key, a value of the wrong type), found before anything is measured."""
    from configs import load_config

    taken = [f"{key} (use {flag})" for key, flag in flag_keys.items() if key in list(opts or [])[0::2]]
    if taken:
        parser.error(f"--opts sets keys this benchmark takes from its flags: {', '.join(taken)}")
    try:
        load_config(None, list(opts or []))
    except ConfigError as e:
        parser.error(str(e))


def check_arch(parser, arch: str, input_size: int) -> None:
    """``parser.error`` for an ``--arch`` that is not a preset or an ``--input-size`` its patch does not divide
    (both were a traceback when the model was built, after the stages measured before it); the rules are the
    model factory's (``models.factory.model_kwargs``)."""
    from configs import load_config
    from models.factory import model_kwargs

    try:
        model_kwargs(load_config(None, ["MODEL.ARCH", arch, "DATA.INPUT_SIZE", str(input_size)]))
    except (ValueError, ConfigError) as e:
        parser.error(f"--arch {arch}, --input-size {input_size}: {e}")


# The folders a benchmark writes into besides its results (those it has): synthetic clips and lists, the index's
# links, the parity check's clips. Naming a file, they ended the run in a traceback from os.makedirs.
WORK_FOLDERS = ("data_dir", "work_dir", "tmp")


def output_files_problem(args) -> str:
    """Why ``args.json`` or ``args.plot``, or one of the :data:`WORK_FOLDERS` (those the benchmark has and was
    given), cannot be written, in one line; "" when all can. Checked before the benchmark runs: a failed write came
    after the measurement, as a traceback."""
    for flag, example in (("json", "results.json"), ("plot", "results.png")):
        path = getattr(args, flag, None)
        problem = path and output_path_problem(path, f"--{flag}", folder=False, example=example)
        if problem:
            return problem
    for name in WORK_FOLDERS:
        path = getattr(args, name, None)
        problem = path and output_path_problem(path, f"--{name.replace('_', '-')}", folder=True)
        if problem:
            return problem
    return (_same_file_problem(args) or _scratch_folder_problem(args)
            or _plot_format_problem(getattr(args, "plot", None)))


def _same_file_problem(args) -> str:
    """Why ``--json`` and ``--plot`` cannot both be written ("" when they can): the same file for both (the chart
    replaced the JSON, exit code 0), or one of them the ``--list`` or a ``--clips`` file the run reads (overwritten
    by the results, the input was lost)."""
    outputs = [(f"--{flag}", getattr(args, flag, None)) for flag in ("json", "plot")]
    inputs = [("--list", getattr(args, "list", None)), *(("--clips", c) for c in getattr(args, "clips", None) or [])]
    seen: dict[str, tuple[str, str]] = {}
    for flag, path in outputs + inputs:
        if not path:
            continue
        real = os.path.realpath(path)
        if real in seen:
            first, first_path = seen[real]
            if flag in ("--json", "--plot"):
                return (f"{first} {first_path} and {flag} {path} name the same file: one would replace the other; "
                        "give each a file of its own (e.g. results.json and results.png)")
            return (f"{first} {first_path} is the {flag} file this run reads: the results would overwrite it; give "
                    f"{first} a file of its own")
        if flag in ("--json", "--plot"):
            seen[real] = (flag, path)
    return ""


def _scratch_folder_problem(args) -> str:
    """Why the default folder of the synthetic clips and lists under $TMPDIR (``inputs.scratch_folder``, used
    without ``--data-dir``) cannot be made ("" when it can, or when it is not used): a TMPDIR naming a file ended
    the run in a NotADirectoryError traceback once the clips were written."""
    from benchmarks.inputs import scratch_folder

    if not hasattr(args, "data_dir") or args.data_dir or not getattr(args, "with_loader", True):
        return ""
    problem = output_path_problem(scratch_folder("eva_bench_clips"), "TMPDIR", folder=True)
    return problem and f"{problem}; give --data-dir, or set TMPDIR to a folder you can write in"


def _plot_format_problem(path: str | None) -> str:
    """Why matplotlib cannot draw ``--plot`` in the format its extension names ("" when it can; no extension is a
    PNG): ``--plot results.json`` (the flags swapped) measured the whole run, then ended in a traceback."""
    ext = os.path.splitext(path or "")[1][1:].lower()
    if not ext:
        return ""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if ext in formats:
        return ""
    return (f"--plot {path}: matplotlib cannot write .{ext} images; end the name with one of "
            f"{', '.join('.' + f for f in sorted(formats))} (e.g. results.png)")


NOTHING_WRITTEN = "nothing measured was written (--json and --plot are written whole, once the run ends)"
NOTHING_WRITTEN_JSON_ONLY = "nothing measured was written (--json is written whole, once the run ends)"  # no --plot


def say_what_an_interrupt_keeps(kept: str = NOTHING_WRITTEN) -> None:
    """From here on a Ctrl-C ends the benchmark with one ``interrupted: <script>: <kept>`` line on stderr
    (``evautil.interrupt``), as it ends the project's tools, instead of a traceback of wherever the main thread
    waited (a worker pool, a DALI call); the process still ends by SIGINT."""
    from evautil.interrupt import on_interrupt

    on_interrupt(f"{os.path.basename(sys.argv[0])}: {kept}")


def until_stopped(work: Callable[[], int], kept: str | Callable[[], str] = NOTHING_WRITTEN) -> int:
    """``work()``'s exit code; a scheduler's stop signal (SIGTERM, SIGUSR1) during it ends it as a Ctrl-C does, by an
    exception, so that its clean-up runs (temporary folders, a clip being encoded under its temporary name, worker
    pools): the process killed by the signal left them behind. Then one ``stopped: <signal> received: <script>:
    <kept>; run the same command again`` line on stderr and exit code 4 (``evautil.interrupt``); ``kept`` may be a
    function, asked once the work has ended (what it kept by then)."""
    from evautil.interrupt import Stopped, stop_signals_raise, stopped_during_work

    try:
        with stop_signals_raise():
            return work()
    except Stopped as stop:
        kept = kept() if callable(kept) else kept
        return stopped_during_work(stop, f"{os.path.basename(sys.argv[0])}: {kept}; run the same command again")


# The rows of the run_main() in progress, each added by measured() once measured; None outside run_main().
_rows_measured: list[dict] | None = None


def measured(row: dict) -> dict:
    """``row``, a result row just measured, kept for :func:`run_main`: a Ctrl-C or stop signal before the run ends
    leaves the rows measured so far in ``--json``, marked ``"complete": false``, where a run of hours lost them all."""
    if _rows_measured is not None:
        _rows_measured.append(row)
    return row


def run_main(args, run_benchmark: Callable, report: Callable, plot_key: str, plot_label: str,
             plot_title: str | Callable[[dict], str], required: Sequence[str], names_option: str = "") -> int:
    """The shared ``main()`` of the benchmark scripts: run, print the markdown report, write ``--json`` and
    ``--plot`` (``plot_key``'s median with min..max bars for every row that ran), and check the figures.
    ``names_option``: the dest of the option naming the rows (``loaders``), whose default may name a baseline
    that is not installed (``args.<dest>_by_default`` says whether the default was used).

    Returns the exit code: 0, 1 when a figure in ``required`` is not a positive finite number, a baseline the
    options named could not be measured (its package is not installed: a row with ``missing_package``) or no row
    ran at all (each skipped: no GPU for NVDEC, a codec the decoder does not take, out of memory), 2 for bad
    input (a bad --list, option value or video: printed as one line), 4 when a stop signal ended it
    (:func:`until_stopped`). ``plot_title`` may be a function of the payload.
    """
    global _rows_measured
    problem = output_files_problem(args)
    if problem:
        return input_error(InputError(problem), args)
    # what a stop keeps, once the rows measured so far are saved
    kept: list[str] = [NOTHING_WRITTEN if hasattr(args, "plot") else NOTHING_WRITTEN_JSON_ONLY]
    say_what_an_interrupt_keeps(kept[0])
    _rows_measured = []
    try:
        return until_stopped(lambda: _run_and_report(args, run_benchmark, report, plot_key, plot_label, plot_title,
                                                     required, kept, names_option), lambda: kept[0])
    finally:
        _rows_measured = None


def _keep_rows_measured(args, kept: list[str]) -> None:
    """Before a Ctrl-C or stop signal ends the run: the rows measured so far into ``--json`` (whole, marked
    ``"complete": false``), and ``kept[0]`` and the ``interrupted:`` line saying so. The file has the top-level
    keys of a finished run's that are known without its end (``benchmark``, ``machine``, ``settings``: here every
    option, ``results``): a stopped run's file named its options ``options`` and left out the machine."""
    from benchmarks.hardware import machine_info

    rows = list(_rows_measured or [])
    if not (args.json and rows):
        return
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "plot")}
    try:
        write_json(args.json, {"benchmark": os.path.splitext(os.path.basename(sys.argv[0]))[0], "complete": False,
                               "machine": machine_info(), "settings": settings, "results": rows})
    except (OSError, TypeError, ValueError) as e:  # the interrupt's line still comes, not this traceback
        kept[0] = f"the {len(rows)} row(s) measured before it could not be written to --json {args.json} ({e})"
        say_what_an_interrupt_keeps(kept[0])
        return
    not_drawn = ", --plot was not drawn" if getattr(args, "plot", None) else ""  # a benchmark may have no --plot
    kept[0] = (f"--json {args.json} holds the {len(rows)} row(s) measured before it, marked \"complete\": false "
               f"(the rest were not measured{not_drawn})")
    say_what_an_interrupt_keeps(kept[0])


def results_written(args, writes: Sequence[tuple[str, Callable[[], None] | None]]) -> bool:
    """Each ``(flag, write)``: ``write()`` when ``args.<flag>`` names a file (and ``write`` is not None). False, after
    one ``error:`` line naming the file, when a write fails for want of space or permission: a disk that filled
    during the run ended it in a traceback under the table already printed."""
    for flag, write in writes:
        path = getattr(args, flag, None)
        if not (path and write):
            continue
        try:
            write()
        except OSError as e:
            why = write_failure(e, "run the same command again")
            if why is None:
                raise
            print(f"error: --{flag} {path}: {why} (the table above holds the figures measured)", file=sys.stderr)
            return False
    return True


def _not_installed_line(args, missing: list[str], names_option: str) -> str:
    """The error line of a run that measured all but the baselines in ``missing`` (not installed). With the
    default ``--<names_option>`` it says so, and which value leaves them out: the user named none of them."""
    if not (names_option and getattr(args, f"{names_option}_by_default", False)):
        return (f"error: not measured: {', '.join(missing)} (not installed), which the options name; install it or "
                "leave it out of the options")
    flag = f"--{names_option.replace('_', '-')}"
    value = getattr(args, names_option)
    rest = ",".join(n.strip() for n in value.split(",") if n.strip() and n.strip() not in missing)
    return (f"error: not measured: the default {flag} {value} includes the {' and '.join(missing)} baseline, and "
            f"{' and '.join(missing)} is not installed; install it, or leave it out with {flag} {rest}")


def _run_and_report(args, run_benchmark: Callable, report: Callable, plot_key: str, plot_label: str,
                    plot_title: str | Callable[[dict], str], required: Sequence[str], kept: list[str],
                    names_option: str) -> int:
    """:func:`run_main`'s work, once its output files are known to be writable."""
    from evautil.interrupt import Stopped

    try:
        payload = run_benchmark(args)
    except INPUT_ERRORS as e:
        return input_error(e, args)  # a flag as typed: --skip_build, not --skip-build
    except (KeyboardInterrupt, Stopped):
        _keep_rows_measured(args, kept)
        raise
    print(report(payload))
    ran = [r for r in payload["results"] if not r.get("skipped")]
    def plot() -> None:
        title = plot_title(payload) if callable(plot_title) else plot_title
        bar_plot(args.plot, [r["name"] for r in ran], [r[plot_key].median for r in ran], plot_label, title,
                 errors=[(r[plot_key].min, r[plot_key].max) for r in ran])

    if not results_written(args, [("json", lambda: write_json(args.json, {**payload, "complete": True})),
                                  ("plot", plot if ran else None)]):
        return 1
    problems = check_figures(ran, required)
    if problems:
        print("non-positive or non-finite figures: " + "; ".join(problems), file=sys.stderr)
        return 1
    missing = sorted({r["missing_package"] for r in payload["results"] if r.get("missing_package")})
    if missing:  # a comparison without its baseline must not pass as measured (e.g. a suite stage's exit code)
        print(_not_installed_line(args, missing, names_option), file=sys.stderr)
        return 1
    if not ran:  # e.g. --decoders dali_mixed without a GPU: a table of skips passed as a measurement (exit code 0)
        print("error: nothing was measured: every row the options name was skipped, for the reason the table gives"
              + (f"; --plot {args.plot} was not drawn" if getattr(args, "plot", None) else ""), file=sys.stderr)
        return 1
    return 0
