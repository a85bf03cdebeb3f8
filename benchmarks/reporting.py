"""The benchmarks' three outputs: a markdown table (printed), strict JSON (``--json``) and a PNG bar chart
(``--plot``), both written whole or not at all; and the check that every figure of a row that ran is a positive
finite number (``check_figures``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from typing import Any, Sequence

import numpy as np

from benchmarks.stats import PairedRatio, Summary, fmt
from evautil.files import atomic_write, write_output_text

__all__ = ["describe_input", "markdown_table", "write_json", "bar_plot", "check_figures"]


def describe_input(desc: dict) -> str:
    """One line for a report: ``input=synthetic, codec=vp9, width=340, ...`` (the folder left out)."""
    return ", ".join(f"{k}={v}" for k, v in desc.items() if k != "dir")


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
