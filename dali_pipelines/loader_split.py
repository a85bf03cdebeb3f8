"""Which list a loader's split reads (DATA.TRAIN_FILE or DATA.VAL_FILE) and its index as the loader builds it."""

from __future__ import annotations

from evautil.progress import stderr_is_terminal

from .index import DatasetIndex, build_index


def split_list(cfg, split: str) -> tuple[str, str]:
    """(config key, list path) of ``split``'s video list: DATA.TRAIN_FILE for 'train', else DATA.VAL_FILE."""
    key = "DATA.TRAIN_FILE" if split == "train" else "DATA.VAL_FILE"
    path = cfg.DATA.TRAIN_FILE if split == "train" else cfg.DATA.VAL_FILE
    if not path:
        raise ValueError(f"{key} is empty; set it to the {split} file list")
    return key, path


def build_split_index(cfg, split: str, checked_by_peer: bool = False) -> DatasetIndex:
    """The index of ``split``'s list (:func:`split_list`) as the loader builds it; ``checked_by_peer``: see
    :func:`~dali_pipelines.index.build_index`."""
    data = cfg.DATA
    return build_index(
        split_list(cfg, split)[1], data.ROOT, data.NUM_CLASSES, workers=data.INDEX_WORKERS,
        full_decode=data.INDEX_FULL_DECODE, strict=data.STRICT,
        # Whichever rank takes the lock first probes and reports, with a bar on a terminal, else in lines (no
        # carriage returns in a log file).
        progress=stderr_is_terminal(), checked_by_peer=checked_by_peer, timeout_s=float(data.VIDEO_TIMEOUT_S),
        classes_name="DATA.NUM_CLASSES")
