"""A list's many relative paths kept as two arrays (:class:`PathTable`) instead of one Python string each: the
paths of a :class:`~dali_pipelines.video_list.VideoList` and the keys of the index cache's rows.

A path becomes bytes and bytes a path as the operating system gives them (``os.fsencode``, ``os.fsdecode``): UTF-8
for a name that is UTF-8, the file's own bytes for one that is not (a root or home folder named in another
encoding, which Python holds as surrogates and which ``str.encode("utf-8")`` refused)."""

from __future__ import annotations

import os
from array import array
from typing import Iterable

import numpy as np

__all__ = ["PathTable"]


class PathTable:
    """Many relative paths in two arrays: their bytes (``os.fsencode``) one after the other (``blob``) and where each
    one starts (``offsets``, one more than there are paths). About the bytes of the paths themselves, where a list of
    ``str`` costs some 60 more bytes per path."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        self.blob = np.ascontiguousarray(blob, dtype=np.uint8)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)

    @classmethod
    def from_paths(cls, paths: Iterable[str]) -> "PathTable":
        return cls.from_raw(os.fsencode(p) for p in paths)

    @classmethod
    def from_raw(cls, raws: Iterable[bytes]) -> "PathTable":
        """The table of paths given as bytes (``os.fsencode``'s)."""
        blob, offsets = bytearray(), array("q", [0])
        for raw in raws:
            blob += raw
            offsets.append(len(blob))
        return cls(np.frombuffer(blob, np.uint8), np.frombuffer(offsets, np.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def raw(self, i: int) -> bytes:
        """Path ``i`` as bytes (``os.fsencode``)."""
        return self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes()

    def __getitem__(self, i: int) -> str:
        if not -len(self) <= i < len(self):
            raise IndexError(f"path {i} of {len(self)}")
        return os.fsdecode(self.raw(i % len(self)))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PathTable) and np.array_equal(self.offsets, other.offsets)
                and np.array_equal(self.blob, other.blob))

    def positions(self) -> dict[bytes, int]:
        """``{path bytes: first position}`` (a dict of every path: for matching two tables that differ)."""
        data, cut = self.blob.tobytes(), self.offsets.tolist()
        out: dict[bytes, int] = {}
        for i in range(len(self)):
            out.setdefault(data[cut[i]:cut[i + 1]], i)
        return out

    def find(self, path: str) -> int:
        """The first position of ``path``, or -1."""
        raw = os.fsencode(path)
        for i in np.flatnonzero(np.diff(self.offsets) == len(raw)):
            if self.raw(int(i)) == raw:
                return int(i)
        return -1

    def select(self, rows: np.ndarray) -> "PathTable":
        """The paths at ``rows`` (positions), in that order."""
        data, cut = self.blob.tobytes(), self.offsets
        return PathTable.from_raw(data[cut[r]:cut[r + 1]] for r in np.asarray(rows).tolist())

    def append(self, path: str) -> "PathTable":
        raw = np.frombuffer(os.fsencode(path), np.uint8)
        return PathTable(np.concatenate([self.blob, raw]),
                         np.concatenate([self.offsets, [self.offsets[-1] + len(raw)]]))
