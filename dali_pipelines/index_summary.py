"""The summary of a dataset index a build logs (:meth:`DatasetIndex.summary
<dali_pipelines.dataset_index.DatasetIndex.summary>`): how many videos are good, bad, probed and from the cache,
their frame counts, codecs and sizes, the files a list names on several lines, and the first bad videos with their
reasons. No DALI import here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from evautil.progress import counted

from .filelist import VideoList

if TYPE_CHECKING:
    from .dataset_index import DatasetIndex

__all__ = ["BAD_VIDEOS_NAMED", "summary_text"]

BAD_VIDEOS_NAMED = 20  # bad videos named in a log or a summary; the quarantine file lists every one


def summary_text(index: "DatasetIndex", name_bad: bool = True, left_out: bool = True) -> str:
    """The summary of ``index``: counts, frame statistics, codecs, and (``name_bad``) the first bad files with their
    reasons; ``left_out``: the bad videos are left out (not when DATA.STRICT refuses the list instead)."""
    good, c = np.flatnonzero(index.good_mask), index.table.columns
    missing = f", {index.missing} missing" if index.missing else ""
    cached = len(index) - index.probed - index.missing
    # a file named on several lines is probed once: "3 probed" of one file counted lines as probes
    probed = (f"{index.probed} probed" if index.probed_files == index.probed else
              f"{counted(index.probed_files, 'file')} probed for {counted(index.probed, 'line')}")
    lines = [f"video index of {index.list_path}: {counted(len(index), 'video')}, {len(good)} good, "
             f"{len(index.bad)} bad ({probed}, {cached} from cache{missing})"]
    if good.size:
        frames = c["num_frames"][good]
        codecs = [(index.table.texts["codec"][k], n) for k, n in _most_common(c["codec"][good])]
        wh = c["width"][good].astype(np.int64) << 32 | c["height"][good].astype(np.int64)
        sizes = [(f"{k >> 32}x{k & 0xFFFFFFFF}", n) for k, n in _most_common(wh)]
        lines.append(f"  frames min/median/max: {frames.min()}/{np.median(frames):g}/{frames.max()}; "
                     f"codecs: {', '.join(f'{s} {n}' for s, n in codecs)}; "
                     f"sizes: {', '.join(f'{s} {n}' for s, n in sizes[:3])}" + (" ..." if len(sizes) > 3 else ""))
    repeated = index.videos.repeated()
    if repeated:  # not an error (the original read such lists too), but nothing else says it
        lines.append(_repeated_text(index.videos, repeated))
    if index.bad:
        bad = sorted(index.bad.items())
        lines.append(f"  bad videos ({'left out; ' if left_out else ''}all {len(bad)} listed in "
                     f"{index.quarantine_path})"
                     + (":" if name_bad else ""))
        if name_bad:
            lines += [f"    {index.videos.shown_path(r)}: {why}" for r, why in bad[:BAD_VIDEOS_NAMED]]
            if len(bad) > BAD_VIDEOS_NAMED:  # a half-downloaded Kinetics would fill the log
                lines.append(f"    and {len(bad) - BAD_VIDEOS_NAMED} more")
    return "\n".join(lines)


def _repeated_text(videos: VideoList, repeated: list[np.ndarray]) -> str:
    """One summary line for the files of :meth:`VideoList.repeated`: counts, and the first few with their lines (and
    their labels, where those differ: the same clip taught as two classes)."""
    def named(rows: np.ndarray) -> str:
        nos = ", ".join(str(n) for n in videos.line_nos[rows[:4]].tolist()) + (", ..." if len(rows) > 4 else "")
        labels = videos.labels[rows]
        differ = f"; labels {', '.join(str(y) for y in labels[:4].tolist())}" if np.unique(labels).size > 1 else ""
        return f"{videos.rel_path(int(rows[0]))} (lines {nos}{differ})"

    relabelled = sum(np.unique(videos.labels[g]).size > 1 for g in repeated)
    return (f"  {counted(len(repeated), 'video')} listed on more than one line, each line an entry of its own "
            f"({counted(sum(len(g) - 1 for g in repeated), 'repeated line')}"
            + (f"; {relabelled} with different labels" if relabelled else "") + "): "
            + "; ".join(named(g) for g in repeated[:3]) + ("; ..." if len(repeated) > 3 else ""))


def _most_common(values: np.ndarray) -> list[tuple[int, int]]:
    """``(value, count)`` pairs, commonest first, ties in order of first appearance (as ``Counter``)."""
    uniq, first, counts = np.unique(values, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    return [(int(uniq[i]), int(counts[i])) for i in order]
