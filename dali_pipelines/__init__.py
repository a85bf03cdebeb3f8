"""Video data pipelines: file lists, dataset index, frame sampling, and DALI decode + augmentation loaders.

``from dali_pipelines import build_loader`` is the entry point. The DALI-dependent modules are imported lazily so
that DALI-free parts (sampling, file lists, the index, PyAV decoding) can be used, e.g. in worker processes,
without loading DALI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_loader", "VideoLoader", "build_decode_pipeline", "decode_with_dali", "DataError", "DataListError",
           "BadVideoError"]

_LAZY = {
    # DALI-free: the input errors that command-line tools report in one line (exit code 2).
    "DataError": "filelist",
    "DataListError": "filelist",
    "BadVideoError": "pyav_open",
    "build_loader": "loader",
    "VideoLoader": "loader",
    "build_decode_pipeline": "pipelines",
    "decode_with_dali": "pipelines",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
