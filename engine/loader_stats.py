"""A loader's data counters gathered over all ranks (the eval lines, the training ``data`` lines, the summary) and
its unreadable rows with their reasons (the predictions file)."""

from __future__ import annotations

from typing import Any

from .distributed import DistContext, all_gather_objects

__all__ = ["loader_stats", "unreadable_rows"]


# Loader counters that describe the (shared) list rather than one rank's work: not summed over ranks.
_PER_LIST_STATS = ("bad_at_index", "listed_videos")


def loader_stats(loader: Any, ctx: DistContext, prefix: str = "") -> dict[str, Any]:
    """The loader's data-failure counters over all ranks, keys prefixed with ``prefix``.

    From ``loader.stats`` (counted since the loader was built): ``skipped_videos`` (quarantined while decoding),
    ``substituted`` (training samples replaced), ``rebuilds`` (decoder pipelines rebuilt), ``quarantined_earlier``
    (left out after another loader of the run quarantined them: of the same index, or of a list naming the same
    files) summed over ranks;
    ``bad_at_index`` (left out when the list was indexed) and ``listed_videos`` (rows in the list) as one rank
    sees them; ``skipped``: up to 20 "path: reason" strings. Empty for a loader without stats. Every rank must
    call it (it gathers).

    With several processes the same gather shares the training videos each rank quarantined since the last one
    (``loader.quarantines_to_share``), which every other rank then leaves out too (``loader.learn_quarantines``):
    a rank's own loader and indexes learn of its quarantines only. The train loop calls this at every epoch's end,
    before the validation.
    """
    stats = getattr(loader, "stats", None)
    stats = stats if isinstance(stats, dict) else {}
    local = {k: v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    entries = getattr(getattr(loader, "index", None), "entries", None)
    if entries is not None:
        local["listed_videos"] = len(entries)
    share = getattr(loader, "quarantines_to_share", None) if ctx.distributed else None
    parts = all_gather_objects({"counts": local, "skipped": [str(x) for x in stats.get("skipped", [])][:20],
                                "quarantined": share() if share is not None else []}, ctx)
    if share is not None:
        # the first process of each machine records them in the machine's files (its index cache, the quarantine
        # file), for all of its processes: not every rank writing, or failing to write, the same files
        loader.learn_quarantines([part["quarantined"] for part in parts], record=ctx.local_rank == 0)
    out: dict[str, Any] = {}
    for part in parts:
        for k, v in part["counts"].items():
            out[k] = max(out.get(k, v), v) if k in _PER_LIST_STATS else out.get(k, 0) + v
    skipped = [x for part in parts for x in part["skipped"]][:20]
    if out or skipped:
        out["skipped"] = skipped
    return {prefix + k: v for k, v in out.items()}


def unreadable_rows(loader: Any, ctx: DistContext) -> dict[int, str]:
    """``row -> reason`` of the loader's list rows left out as unreadable (its index's ``bad``: when the list was
    indexed, or quarantined while decoding by this rank's loaders of that index), over all ranks: each rank
    quarantines the videos of its own share. Empty for a loader without an index. Every rank must call it."""
    bad = getattr(getattr(loader, "index", None), "bad", None)
    local = {int(r): str(why) for r, why in bad.items()} if isinstance(bad, dict) else {}
    out: dict[int, str] = {}
    for part in all_gather_objects(local, ctx):
        out.update(part)
    return out
