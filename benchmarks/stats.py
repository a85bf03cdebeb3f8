"""Statistics of the benchmarks' repeated measurements: the median and spread of one figure (``summarize``), the
paired ratio of two figures timed in the same rounds (``paired_ratio``), and how a number is printed (``fmt``).

Every benchmark follows the same method (docs/PERFORMANCE.md): a warm-up that is not timed, then ``repeats``
timed measurements of the same work; the reported figure is the median and the spread is min..max (and the
inter-quartile range in the JSON).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

__all__ = ["Summary", "summarize", "PairedRatio", "paired_ratio", "fmt"]


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


def fmt(x: float | None, digits: int = 1) -> str:
    """Number for a table cell: fixed digits, thousands kept readable, '-' for missing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"
