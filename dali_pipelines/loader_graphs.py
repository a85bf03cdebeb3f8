"""The settings a loader builds its DALI graphs with: the graph function's arguments, the NVDEC graph's decoder
threads and a graph's prefetch depth."""

from __future__ import annotations

from typing import Any

from .draw import DrawSettings


def nvdec_graph_threads(data) -> int:
    """The NVDEC graph's threads: its mixed decoder runs one decoding session per pipeline thread, so it gets
    DATA.NVDEC_THREADS (DATA.NUM_THREADS when that is more)."""
    return max(int(data.NUM_THREADS), int(data.NVDEC_THREADS))


def graph_kwargs(data, settings: DrawSettings, dtype: str, training: bool, device: str) -> dict[str, Any]:
    """The graph function's arguments other than its source, routes and DALI's pipeline settings."""
    out = dict(dtype=dtype, input_size=settings.input_size, nvdec_affine=bool(data.NVDEC_AFFINE),
               augment_on_gpu=device == "gpu")
    if training:
        out["per_frame_jitter"] = settings.per_frame_jitter
    else:
        out["num_crop"] = settings.num_crop
    return out


def prefetch_depth(counts: dict[str, int], routes: tuple[str, ...], prefetch: int, batch_size: int) -> int:
    """The prefetch queue depth of the graph of ``routes`` (``counts``: the good videos per route). A graph
    prefetches parts of its routes ahead; for routes with less than one video per batch that would make the feeder
    collect (and hold) many batches ahead to find them, so such a graph does not prefetch."""
    share = sum(counts[r] for r in routes) / max(1, sum(counts.values()))
    return prefetch if share * batch_size >= 1 else 1
