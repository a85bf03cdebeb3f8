"""The dataset index's table of probed facts, one numpy column per field (the cache file that holds it is
``index_store``'s).

A Kinetics-size list has hundreds of thousands of videos and every rank of a run holds its index, so the facts are
kept as columns (:class:`VideoTable`): a row costs about 64 bytes instead of a Python object per video, and a rank
loads the cache with a few array reads. Strings that repeat (codec, pixel format, chroma format, profile, the
reason a video is bad, the YUV matrix tag, why NVDEC would number the frames otherwise) are stored once in a small
table each and referred to by an integer code; the display turn is a number (-1: not recorded).

No DALI import here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np

from .pyav_probe import DecoderFacts

__all__ = ["UNKNOWN", "GOOD", "BAD", "TEXTS", "COLUMNS", "NUMBERED_AS_INDEXED", "ROTATION_NOT_RECORDED", "VideoInfo",
           "VideoTable"]

# A row's status: not probed (or its record dropped), a good video, a bad one (with a reason).
UNKNOWN, GOOD, BAD = 0, 1, 2

TEXTS = ("codec", "pix_fmt", "chroma", "profile", "colorspace", "nvdec_numbering")
COLUMNS: dict[str, type] = {
    "status": np.int8, "full_decode": np.bool_,  # how the row was probed (a full decode or the quick probe)
    "size": np.int64, "mtime_ns": np.int64,  # the file as probed: a row is reused only while these still hold
    "num_frames": np.int32, "width": np.int32, "height": np.int32, "fps": np.float64,
    "coded_width": np.int32, "coded_height": np.int32, "bit_depth": np.int16,
    **{name: np.int16 for name in TEXTS if name != "nvdec_numbering"},  # codes into the string tables
    # (nvdec_numbering's reasons hold counts, "hides its first 3 pictures": more than 32,767 of them may differ)
    "nvdec_numbering": np.int32,
    "reason": np.int32,  # code into the reasons (0: none)
    "rotation": np.int16,  # the display turn in degrees counter-clockwise (VideoInfo.rotation)
}
# The nvdec_numbering of a video NVDEC numbers as the index does ('' is a record that does not say).
NUMBERED_AS_INDEXED = "as indexed"
# The rotation of a record migrated from a cache older than the column (0 is a video shown as stored).
ROTATION_NOT_RECORDED = -1


@dataclass(frozen=True)
class VideoInfo:
    """What the loaders need to know about one good video (one row of the table, built on demand).

    ``num_frames`` is the number of frames in presentation order that DALI's decoder (and PyAV) can decode;
    valid frame indices are ``0 .. num_frames - 1``.
    """

    num_frames: int
    codec: str
    width: int
    height: int
    fps: float
    # Decoder facts (see pyav_probe.DecoderFacts): which decoder can take the video.
    coded_width: int = 0
    coded_height: int = 0
    pix_fmt: str = ""
    chroma: str = ""
    bit_depth: int = 0
    profile: str = ""
    # The file as probed: a file whose size or modification time differs is not the video described here.
    size: int = 0
    mtime_ns: int = 0
    # The stream's YUV matrix tag (FFmpeg's name, colour.py): DALI-decoded frames are corrected to it. '': not
    # recorded (a record migrated from an older cache: its frames are left as DALI decodes them).
    colorspace: str = ""
    # Why DALI's NVDEC decoder would number the frames otherwise than the index (pyav_probe.first_pictures_not_shown:
    # an MP4 edit list, a stream that starts inside a GOP, pts that do not give the display order), or
    # NUMBERED_AS_INDEXED; '': not recorded (a record migrated from an older cache: NVDEC's route checks it at its
    # first read).
    nvdec_numbering: str = ""
    # The turn a player gives the frames (pyav_probe.display_rotation: a phone's portrait video), in degrees
    # counter-clockwise, 0 for none; the decoders use frames as stored. ROTATION_NOT_RECORDED: a record migrated from
    # an older cache.
    rotation: int = ROTATION_NOT_RECORDED

    @property
    def nvdec_problem(self) -> str:
        """Why NVDEC would number the frames otherwise than the index, '' when it would not or nobody knows."""
        return "" if self.nvdec_numbering == NUMBERED_AS_INDEXED else self.nvdec_numbering

    @property
    def decoder(self) -> DecoderFacts:
        return DecoderFacts(codec=self.codec, coded_width=self.coded_width, coded_height=self.coded_height,
                            pix_fmt=self.pix_fmt, chroma=self.chroma, bit_depth=self.bit_depth, profile=self.profile)

    @classmethod
    def from_record(cls, rec: dict) -> "VideoInfo":
        """From a record (a dict of exactly these fields, as a version 2 cache holds them; unknown keys are an
        error)."""
        names = {f.name for f in fields(cls)}
        extra = set(rec) - names
        if extra:
            raise ValueError(f"unknown VideoInfo fields {sorted(extra)}")
        return cls(**rec)


_INFO_NUMBERS = tuple(f.name for f in fields(VideoInfo) if f.name not in TEXTS)


class VideoTable:
    """Per-row probe results: the :data:`COLUMNS` arrays, the string tables they code into, and the reasons.

    Code 0 of every string table (and of ``reasons``) is the empty string, so a row of zeros is a consistent
    UNKNOWN row.
    """

    def __init__(self, columns: dict[str, np.ndarray], texts: dict[str, list[str]], reasons: list[str]):
        self.columns = columns
        self.texts = texts
        self.reasons = reasons
        self._codes: dict[str, dict[str, int]] = {}

    @classmethod
    def empty(cls, rows: int) -> "VideoTable":
        return cls({name: np.zeros(rows, dtype) for name, dtype in COLUMNS.items()},
                   {name: [""] for name in TEXTS}, [""])

    def __len__(self) -> int:
        return len(self.columns["status"])

    @property
    def status(self) -> np.ndarray:
        return self.columns["status"]

    def text(self, name: str, row: int) -> str:
        return self.texts[name][self.columns[name][row]]

    def info(self, row: int) -> VideoInfo:
        """The VideoInfo of ``row`` (whatever its status: the caller checks it is GOOD)."""
        c = self.columns
        values = {name: c[name][row].item() for name in _INFO_NUMBERS}
        return VideoInfo(**values, **{name: self.text(name, row) for name in TEXTS})

    def reason(self, row: int) -> str:
        return self.reasons[self.columns["reason"][row]]

    def _code(self, table: list[str], key: str, value: str, limit: int) -> int:
        codes = self._codes.get(key)
        if codes is None or len(codes) != len(table):  # (re)built after a load or another writer appended
            codes = self._codes[key] = {s: i for i, s in enumerate(table)}
        code = codes.get(value)
        if code is None:
            if len(table) >= limit:
                raise ValueError(f"the index has more than {limit} distinct {key} values")
            code = codes[value] = len(table)
            table.append(value)
        return code

    def set_good(self, row: int, info: VideoInfo, full_decode: bool) -> None:
        c = self.columns
        for name in _INFO_NUMBERS:
            c[name][row] = getattr(info, name)
        for name in TEXTS:
            c[name][row] = self._code(self.texts[name], name, getattr(info, name), np.iinfo(COLUMNS[name]).max)
        # The status last: a row left half-written by an interruption is UNKNOWN when the build saves it.
        c["full_decode"][row], c["reason"][row], c["status"][row] = full_decode, 0, GOOD

    def set_bad(self, row: int, reason: str, size: int, mtime_ns: int, full_decode: bool) -> None:
        self.clear(np.asarray([row]))
        c = self.columns
        c["size"][row], c["mtime_ns"][row], c["full_decode"][row] = size, mtime_ns, full_decode
        c["reason"][row] = self._code(self.reasons, "reason", reason, np.iinfo(COLUMNS["reason"]).max)
        c["status"][row] = BAD  # last, as in set_good

    def clear(self, rows: np.ndarray) -> None:
        """Make ``rows`` UNKNOWN (all zeros): their videos are probed again."""
        for col in self.columns.values():
            col[rows] = 0

    def take(self, rows: np.ndarray) -> "VideoTable":
        """A table of the rows at ``rows`` (positions in this one; -1 gives an UNKNOWN row)."""
        rows = np.asarray(rows, np.int64)
        missing = rows < 0
        out = {}
        for name, col in self.columns.items():
            if len(col):
                out[name] = col[np.where(missing, 0, rows)]
                out[name][missing] = 0
            else:
                out[name] = np.zeros(len(rows), col.dtype)
        return VideoTable(out, {k: list(v) for k, v in self.texts.items()}, list(self.reasons))

    @classmethod
    def concat(cls, tables: Sequence["VideoTable"]) -> "VideoTable":
        """The rows of ``tables``, one table after another, their string codes mapped into one set of tables."""
        out = cls.empty(0)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in COLUMNS}
        for t in tables:
            for name, col in t.columns.items():
                if name in TEXTS or name == "reason":
                    src, dst = (t.reasons, out.reasons) if name == "reason" else (t.texts[name], out.texts[name])
                    limit = np.iinfo(COLUMNS[name]).max
                    col = np.asarray([out._code(dst, name, s, limit) for s in src], COLUMNS[name])[col]
                parts[name].append(col)
        return cls({name: np.concatenate([np.zeros(0, COLUMNS[name]), *cols]) for name, cols in parts.items()},
                   out.texts, out.reasons)

    def rows_with_reason(self, phrase: str) -> np.ndarray:
        """A mask of the BAD rows whose reason contains ``phrase``."""
        codes = [i for i, r in enumerate(self.reasons) if i and phrase in r]
        return (self.status == BAD) & np.isin(self.columns["reason"], codes)

    def rows_with_text(self, name: str, texts: Sequence[str]) -> np.ndarray:
        """A mask of the rows whose string column ``name`` (e.g. 'codec') is one of ``texts``."""
        codes = [i for i, t in enumerate(self.texts[name]) if i and t in texts]
        return np.isin(self.columns[name], codes)

    def counted_before_edit_lists(self) -> np.ndarray:
        """A mask of the good rows whose frame count may include frames that never come out of a decoder: quick
        probes recorded before schema version 4 (no colour tag: the probe has recorded one, 'unknown' at least,
        since then), whose count took in the packets an MP4 edit list hides and those before a stream's first
        keyframe. A full decode counted the frames that came out, then as now."""
        return (self.status == GOOD) & (self.columns["colorspace"] == 0) & ~self.columns["full_decode"]

    def check(self) -> None:
        """ValueError unless every column has its type and the table's length and every code has its string."""
        n = len(self)
        for name, dtype in COLUMNS.items():
            col = self.columns[name]
            if col.dtype != dtype or col.shape != (n,):
                raise ValueError(f"column {name!r} is {col.dtype} {col.shape}, expected {np.dtype(dtype)} ({n},)")
        coded = {**self.texts, "reason": self.reasons}
        for name, table in coded.items():
            if not table or table[0] != "" or not all(isinstance(s, str) for s in table):
                raise ValueError(f"string table {name!r} must be strings starting with ''")
            col = self.columns[name]
            if n and (col.min() < 0 or col.max() >= len(table)):
                raise ValueError(f"column {name!r} has codes outside its table of {len(table)}")
        if n and not np.isin(self.status, (UNKNOWN, GOOD, BAD)).all():
            raise ValueError("column 'status' has values other than 0, 1, 2")
