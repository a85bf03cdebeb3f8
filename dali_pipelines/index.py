"""Dataset index (frame counts, codec, size, fps, bad-file quarantine), built and cached on first use of a list."""
# (implementation in progress)
from __future__ import annotations

from dataclasses import dataclass, field

from .filelist import ListEntry
from .pyav_io import BadVideoError

__all__ = ["VideoInfo", "BadVideoError", "probe_video", "DatasetIndex", "build_index"]


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    codec: str
    width: int
    height: int
    fps: float


def probe_video(path: str, full_decode: bool = False) -> VideoInfo:
    raise NotImplementedError


@dataclass
class DatasetIndex:
    list_path: str
    root: str
    entries: list[ListEntry]
    infos: dict[int, VideoInfo]
    bad: dict[int, str]
    quarantine_path: str

    @property
    def good_rows(self) -> list[int]:
        return sorted(self.infos)

    def quarantine(self, row: int, reason: str) -> None:
        raise NotImplementedError

    def summary(self) -> str:
        raise NotImplementedError


def build_index(list_path: str, root: str, num_classes: int | None = None, *, workers: int = 0,
                full_decode: bool = False, strict: bool = False, progress: bool = True) -> DatasetIndex:
    raise NotImplementedError
