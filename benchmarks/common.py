"""Shared helpers of the benchmark scripts: timing and statistics, NVML sampling, machine description, and the
three outputs (markdown table, JSON, PNG bar chart), ``--quick``'s sizes, and a stop signal ended as a Ctrl-C
(``until_stopped``, exit code 4). Process-tree CPU and memory monitoring: ``cpu_monitor``.

Every benchmark follows the same method (docs/PERFORMANCE.md): a warm-up that is not timed, then ``repeats``
timed measurements of the same work; the reported figure is the median and the spread is min..max (and the
inter-quartile range in the JSON). CUDA work is synchronised before the clock is read.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from configs import ConfigError
from dali_pipelines.filelist import DataError  # DALI-free
from evautil.files import atomic_write, output_path_problem, write_output_text
from evautil.workers import usable_cpus

__all__ = [
    "InputError", "INPUT_ERRORS", "ArgumentParser", "input_error",
    "Summary", "summarize", "PairedRatio", "paired_ratio", "time_repeats", "NvmlSampler", "machine_info",
    "cuda_available", "describe_input", "machine_line", "add_input_args", "release_device_memory",
    "sync_cuda", "markdown_table", "write_json", "bar_plot", "fmt", "make_synthetic_clips", "encode_clip",
    "read_list_or_synthetic", "check_clip_length", "check_figures", "run_main", "require_positive", "cpu_count",
    "check_arch", "output_files_problem", "chosen_names", "say_what_an_interrupt_keeps", "until_stopped",
    "NOTHING_WRITTEN", "set_quick_defaults",
]


# ---------------------------------------------------------------------------------------------------------------
# Input errors: one line on stderr and exit code 2, never a traceback
# ---------------------------------------------------------------------------------------------------------------
class InputError(ValueError):
    """A bad option value or input file of a benchmark (``main()`` reports it with :func:`input_error`)."""


# What every benchmark's main() reports as ``error: ...`` with exit code 2: bad option values, a missing or
# malformed --list (DataListError is a DataError), data the loader cannot use (DataError), absent files, a config
# the options make that is refused.
INPUT_ERRORS: tuple[type[BaseException], ...] = (InputError, DataError, FileNotFoundError, ConfigError)


def input_error(err: BaseException) -> int:
    """Print ``err`` as one ``error: ...`` line on stderr; returns 2, the exit code for bad input."""
    print("error: " + " ".join(str(err).split()), file=sys.stderr)
    return 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad command line prints one ``error: ...`` line (pointing at --help) instead of the usage
    block; the exit code stays 2."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


# ---------------------------------------------------------------------------------------------------------------
# Statistics and timing
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Summary:
    """Median and spread of repeated measurements of one figure."""

    median: float
    min: float
    max: float
    q1: float
    q3: float
    mean: float
    n: int
    values: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"median": self.median, "min": self.min, "max": self.max, "q1": self.q1, "q3": self.q3,
                "mean": self.mean, "n": self.n, "values": list(self.values)}

    def spread(self, digits: int = 1) -> str:
        """``median (min-max)`` as printed in the tables."""
        return f"{fmt(self.median, digits)} ({fmt(self.min, digits)}-{fmt(self.max, digits)})"


def summarize(values: Iterable[float]) -> Summary:
    """Median, min/max and quartiles of ``values`` (at least one)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("summarize() needs at least one value")
    q1, q3 = (float(np.percentile(vals, 25)), float(np.percentile(vals, 75)))
    return Summary(median=float(statistics.median(vals)), min=min(vals), max=max(vals), q1=q1, q3=q3,
                   mean=float(statistics.fmean(vals)), n=len(vals), values=vals)


# Two-sided 97.5 % quantiles of Student's t for 1..30 degrees of freedom (standard tables).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def _t975(df: int) -> float:
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964  # Cornish-Fisher expansion around the normal quantile: within 0.001 of the table for df > 30
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass
class PairedRatio:
    """A / B over rounds that timed A and B back to back: the geometric mean of the per-round ratios and its 95 %
    confidence interval (Student's t on the log ratios; ``None`` with fewer than two rounds)."""

    geomean: float
    low: float | None
    high: float | None
    n: int
    a_faster: int  # rounds in which A was faster

    def describe(self) -> str:
        ci = f", 95 % CI {self.low:.2f}-{self.high:.2f}" if self.low is not None else ""
        return f"{self.geomean:.2f}x{ci} over {self.n} paired rounds, faster in {self.a_faster}"


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> PairedRatio:
    """Compare two rates measured in the same rounds (``a[i]`` and ``b[i]`` timed back to back).

    Pairing cancels what a round shares (a neighbour's load on a shared machine), which the ratio of two medians
    does not: on a noisy machine it is the figure that can tell "level" from "slower".
    """
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"paired_ratio needs two equally long, non-empty lists, got {len(a)} and {len(b)}")
    logs = np.log(np.asarray(a, dtype=float) / np.asarray(b, dtype=float))
    mean = float(logs.mean())
    low = high = None
    if len(logs) > 1:
        half = _t975(len(logs) - 1) * float(logs.std(ddof=1)) / math.sqrt(len(logs))
        low, high = math.exp(mean - half), math.exp(mean + half)
    return PairedRatio(math.exp(mean), low, high, len(logs), int((logs > 0).sum()))


def cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # torch missing or broken CUDA init: treat as CPU-only
        return False


def sync_cuda() -> None:
    """Wait for queued CUDA work so that a clock read after it measures the work (no-op without CUDA)."""
    if cuda_available():
        import torch
        torch.cuda.synchronize()


def release_device_memory() -> None:
    """Free what DALI's memory pools (device and pinned host) and torch's caching allocator hold unused: call it when
    a row's pipelines or loaders are closed. DALI keeps a closed pipeline's memory in its pools until asked, so NVML's
    device-wide "used", each GPU row's memory figure, carried the largest earlier row's buffers into every later
    row (a whole-video decode's into the 16-frame rows after it)."""
    try:
        from nvidia.dali.backend import ReleaseUnusedMemory
    except ImportError:  # no DALI here: nothing of its to free
        pass
    else:
        ReleaseUnusedMemory()
    if cuda_available():
        import torch
        torch.cuda.empty_cache()


def time_repeats(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; returns the seconds of each timed call.

    ``fn`` does one measurement's worth of work (e.g. N batches). CUDA is synchronised around each timed call.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync_cuda()
        t0 = time.perf_counter()
        fn()
        sync_cuda()
        times.append(time.perf_counter() - t0)
    return times


def fmt(x: float | None, digits: int = 1) -> str:
    """Number for a table cell: fixed digits, thousands kept readable, '-' for missing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


cpu_count = usable_cpus  # CPU cores this process may run on (the affinity mask, not the machine's total)


# ---------------------------------------------------------------------------------------------------------------
# NVML (GPU memory and NVDEC utilisation) sampling
# ---------------------------------------------------------------------------------------------------------------
class NvmlSampler:
    """GPU memory used, SM utilisation and NVDEC (decoder) utilisation of one GPU over a ``with`` block, sampled by
    the engine's NVML sampler (``engine.metrics.NvmlSampler``, which finds the GPU by UUID).

    All figures are None when ``enabled`` is False or there is no NVIDIA driver. DALI allocates outside torch's
    caching allocator, so NVML's device-wide "used" memory is the figure that includes the decoder's buffers; it
    also includes other processes on the GPU, so run benchmarks on an otherwise idle GPU.
    """

    def __init__(self, device_index: int = 0, interval: float = 0.05, enabled: bool = True):
        self.device_index, self.interval, self.enabled = device_index, interval, enabled
        self._result = {"nvdec_util_mean": None, "nvdec_util_max": None, "sm_util_mean": None,
                        "gpu_mem_used_peak_mib": None}
        self._sampler = None

    def __enter__(self) -> "NvmlSampler":
        if self.enabled:
            from engine.metrics import NvmlSampler as _Sampler

            self._sampler = _Sampler(self.device_index, period_s=self.interval)
        return self

    def __exit__(self, *exc) -> None:
        s, self._sampler = self._sampler, None
        if s is None or not s.available:
            return
        sm, dec, _ = s.read()
        s.close()
        if dec is not None:
            self._result = {"nvdec_util_mean": dec, "nvdec_util_max": s.max_nvdec_util, "sm_util_mean": sm,
                            "gpu_mem_used_peak_mib": s.peak_mem_used / 2**20}

    def result(self) -> dict:
        """Mean/max decoder and mean SM utilisation in percent, peak device memory used in MiB (None if off)."""
        return dict(self._result)


# ---------------------------------------------------------------------------------------------------------------
# Machine description
# ---------------------------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info() -> dict:
    """What produced the numbers: CPU, cores, GPU, library versions, command line."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(), "cpu_cores": cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        import torch
        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        info["gpu"] = None
    for mod, key in (("nvidia.dali", "dali"), ("av", "pyav"), ("decord", "decord")):
        try:
            m = __import__(mod, fromlist=["__version__"])
            info[key] = getattr(m, "__version__", "?")
        except Exception:
            info[key] = None
    return info


def describe_input(desc: dict) -> str:
    """One line for a report: ``input=synthetic, codec=vp9, width=340, ...`` (the folder left out)."""
    return ", ".join(f"{k}={v}" for k, v in desc.items() if k != "dir")


def machine_line(info: dict) -> str:
    gpu = info.get("gpu") or "no GPU"
    return f"{info['cpu']} ({info['cpu_cores']} cores), {gpu}; torch {info.get('torch')}, DALI {info.get('dali')}"


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------
def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A GitHub markdown table: ``columns`` is ``[(key, header), ...]``; values are formatted with ``fmt``."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _ in columns:
            v = r.get(key)
            cells.append(fmt(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v if v is not None
                                                                                                      else "-"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Summary):
        return x.as_dict()
    if isinstance(x, PairedRatio):
        return dataclasses.asdict(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None  # strict JSON has no NaN/inf; a missing figure is null
    return x


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` as indented strict JSON (NaN/inf become null), creating the folder. The file appears
    whole or not at all (:func:`write_output_text`): a run stopped while writing it left a truncated file, and an
    earlier run's file is kept until the new one is complete."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_output_text(path, json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")


def bar_plot(path: str, labels: Sequence[str], values: Sequence[float], ylabel: str, title: str,
             errors: Sequence[tuple[float, float]] | None = None) -> None:
    """PNG bar chart; ``errors`` are (low, high) absolute bounds drawn as error bars (e.g. min/max)."""
    import matplotlib
    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 2), 4.0))
    yerr = None
    if errors:
        yerr = np.array([[max(v - lo, 0.0) for v, (lo, _) in zip(values, errors)],
                         [max(hi - v, 0.0) for v, (_, hi) in zip(values, errors)]])
    ax.bar(range(len(values)), values, yerr=yerr, capsize=4, color="#4C72B0")
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    for i, v in enumerate(values):
        ax.text(i, v, fmt(v), ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    image = io.BytesIO()  # drawn first, then written whole (as write_json): never a truncated PNG under ``path``
    fig.savefig(image, format=os.path.splitext(path)[1][1:].lower() or "png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(image.getvalue()), fsync=False)


def set_quick_defaults(parser, argv, args, **values) -> None:
    """``--quick``: set each of ``values`` (``dest=value``) on ``args``, except the options given on the command
    line (``argv``, or sys.argv's), which win: ``--quick --rows 2000`` measured 400 rows without a word."""
    probe = copy.deepcopy(parser)
    for action in probe._actions:  # argparse lists the actions only there
        action.default = argparse.SUPPRESS
    given = vars(probe.parse_args(argv))  # only what the command line set
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


def output_files_problem(args) -> str:
    """Why ``args.json`` or ``args.plot`` (those the benchmark has and was given) cannot be written, in one line;
    "" when both can. Checked before the benchmark runs: a failed write came after the measurement, as a
    traceback."""
    for flag, example in (("json", "results.json"), ("plot", "results.png")):
        path = getattr(args, flag, None)
        problem = path and output_path_problem(path, f"--{flag}", folder=False, example=example)
        if problem:
            return problem
    return ""


NOTHING_WRITTEN = "nothing measured was written (--json and --plot are written whole, once the run ends)"


def say_what_an_interrupt_keeps(kept: str = NOTHING_WRITTEN) -> None:
    """From here on a Ctrl-C ends the benchmark with one ``interrupted: <script>: <kept>`` line on stderr
    (``evautil.interrupt``), as it ends the project's tools, instead of a traceback of wherever the main thread
    waited (a worker pool, a DALI call); the process still ends by SIGINT."""
    from evautil.interrupt import on_interrupt

    on_interrupt(f"{os.path.basename(sys.argv[0])}: {kept}")


def until_stopped(work: Callable[[], int], kept: str = NOTHING_WRITTEN) -> int:
    """``work()``'s exit code; a scheduler's stop signal (SIGTERM, SIGUSR1) during it ends it as a Ctrl-C does, by an
    exception, so that its clean-up runs (temporary folders, a clip being encoded under its temporary name, worker
    pools): the process killed by the signal left them behind. Then one ``stopped: <signal> received: <script>:
    <kept>; run the same command again`` line on stderr and exit code 4 (``evautil.interrupt``)."""
    from evautil.interrupt import Stopped, stop_signals_raise, stopped_during_work

    try:
        with stop_signals_raise():
            return work()
    except Stopped as stop:
        return stopped_during_work(stop, f"{os.path.basename(sys.argv[0])}: {kept}; run the same command again")


def run_main(args, run_benchmark: Callable, report: Callable, plot_key: str, plot_label: str,
             plot_title: str | Callable[[dict], str], required: Sequence[str]) -> int:
    """The shared ``main()`` of the benchmark scripts: run, print the markdown report, write ``--json`` and
    ``--plot`` (``plot_key``'s median with min..max bars for every row that ran), and check the figures.

    Returns the exit code: 0, 1 when a figure in ``required`` is not a positive finite number or a baseline the
    options named could not be measured (its package is not installed: a row with ``missing_package``), 2 for bad
    input (a bad --list, option value or video: printed as one line), 4 when a stop signal ended it
    (:func:`until_stopped`). ``plot_title`` may be a function of the payload.
    """
    problem = output_files_problem(args)
    if problem:
        return input_error(InputError(problem))
    say_what_an_interrupt_keeps()
    return until_stopped(lambda: _run_and_report(args, run_benchmark, report, plot_key, plot_label, plot_title,
                                                 required))


def _run_and_report(args, run_benchmark: Callable, report: Callable, plot_key: str, plot_label: str,
                    plot_title: str | Callable[[dict], str], required: Sequence[str]) -> int:
    """:func:`run_main`'s work, once its output files are known to be writable."""
    try:
        payload = run_benchmark(args)
    except INPUT_ERRORS as e:
        return input_error(e)
    print(report(payload))
    ran = [r for r in payload["results"] if not r.get("skipped")]
    if args.json:
        write_json(args.json, payload)
    if args.plot and ran:
        title = plot_title(payload) if callable(plot_title) else plot_title
        bar_plot(args.plot, [r["name"] for r in ran], [r[plot_key].median for r in ran], plot_label, title,
                 errors=[(r[plot_key].min, r[plot_key].max) for r in ran])
    problems = check_figures(ran, required)
    if problems:
        print("non-positive or non-finite figures: " + "; ".join(problems), file=sys.stderr)
        return 1
    missing = sorted({r["missing_package"] for r in payload["results"] if r.get("missing_package")})
    if missing:  # a comparison without its baseline must not pass as measured (e.g. a suite stage's exit code)
        print(f"error: not measured: {', '.join(missing)} (not installed), which the options name; install it or "
              "leave it out of the options", file=sys.stderr)
        return 1
    return 0


def check_figures(results: Sequence[dict], keys: Sequence[str]) -> list[str]:
    """Problems with ``results``: for every row that ran, each of ``keys`` must be a positive finite number."""
    problems = []
    for r in results:
        if r.get("skipped"):
            continue
        for k in keys:
            v = r.get(k)
            if isinstance(v, Summary):
                v = v.median
            elif isinstance(v, dict):
                v = v.get("median")
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                problems.append(f"{r.get('name', r)}: {k} = {v!r}")
    return problems


# The benchmarks' inputs (synthetic clips or a file list) live in benchmarks/inputs.py; re-exported here for the
# scripts that take them from this module.
from benchmarks.inputs import (add_input_args, check_clip_length, encode_clip,  # noqa: E402,F401
                               make_synthetic_clips, read_list_or_synthetic)
