"""The end of a run in numbers: the fields of OUTPUT/summary.json from the run's totals and its last lines, and the
table of them printed at the end. Writing and printing them is ``MetricLogger.summary``'s; what the numbers mean is
:mod:`engine.metrics`' docstring.
"""

from __future__ import annotations

from typing import Any

from .progress import format_number as _fmt

__all__ = ["summary_fields", "summary_table"]


def summary_fields(t: dict[str, Any], wall_time_s: float, last_train: dict[str, Any], max_mem: float | None,
                   nvml: Any, evaluations: int, last: dict[str, Any] | None) -> dict[str, Any]:
    """summary.json's fields (without the caller's ``extra`` ones) from the run totals ``t`` (``MetricLogger.totals``),
    the last train line, the peak memory (``max_mem_gb``), the NVML sampler of this attempt (None: its figures are
    null), the count of evaluations and the last evaluation line (None: no ``final_*`` fields)."""
    out: dict[str, Any] = {
        "wall_time_s": wall_time_s,
        "optimizer_steps": t["steps"],
        "clips_trained": t["clips"],
        "mean_clips_per_sec": t["clips"] / t["train_time_s"] if t["train_time_s"] else None,
        "mean_data_wait_pct": 100.0 * t["data_time_s"] / t["train_time_s"] if t["train_time_s"] else None,
        "steady_clips_per_sec": t["steady_clips"] / t["steady_time_s"] if t["steady_time_s"] else None,
        "steady_data_wait_pct":
            100.0 * t["steady_data_time_s"] / t["steady_time_s"] if t["steady_time_s"] else None,
        "skipped_steps": t["skipped_steps"],
        "last_loss": last_train.get("loss"),
        "max_mem_gb": max_mem,
        "max_nvdec_util": None if nvml is None else nvml.max_nvdec_util,
        "peak_gpu_mem_used_gb": None if not (nvml and nvml.peak_mem_used) else nvml.peak_mem_used / 2**30,
    }
    out["evaluations"] = evaluations
    if last is not None:
        out.update({"final_split": last["split"], "final_top1": last["top1"], "final_top5": last.get("top5"),
                    "final_mean_class_top1": last.get("mean_class_top1"),
                    "final_num_videos": last["num_videos"], "final_views": last["views"],
                    "final_num_clip": last.get("num_clip"), "final_num_crop": last.get("num_crop"),
                    "final_checkpoint": last.get("checkpoint")})
    return out


def summary_table(out: dict[str, Any], extra: dict[str, Any]) -> list[str]:
    """The lines of the end-of-run table of summary ``out``."""
    # The table leaves out the counters of ``extra`` (the loaders' failure counts) that are zero: they say nothing
    # went wrong; summary.json keeps every one for tools.
    shown = {k: v for k, v in out.items()
             if not (k in extra and isinstance(v, int) and not isinstance(v, bool) and v == 0)}
    width = max(len(k) for k in shown)
    rule = "-" * (width + 24)
    return [rule, "Run summary", rule] + [f"{k.ljust(width)} | {_fmt(v)}" for k, v in shown.items()] + [rule]
