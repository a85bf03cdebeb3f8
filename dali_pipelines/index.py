"""Dataset index: per-video frame count, codec, size and fps, plus quarantine of unreadable videos.

DALI's ``fn.decoders.video`` needs frame indices before it decodes, and nothing in a DALI graph can tell how many
frames a file has, so the counts are measured once, ahead of time, here. The same pass finds videos that would
crash or silently corrupt a DALI pipeline (a garbage file invalidates the whole pipeline; a truncated one decodes
silently into zero frames), so they can be left out instead.

The index is built automatically the first time a list is used and cached beside it as ``<list>.index.json``
(or in a per-user cache directory when the list's directory is read-only). Each cached video is keyed by
(relative path, size, mtime_ns): a changed or replaced video is probed again, the others are reused. A file lock
makes several processes that start at once (torchrun ranks) probe only once.

The cache file carries the schema version (:data:`INDEX_SCHEMA_VERSION`); a file written by another version is
ignored and every video probed again, never read with the wrong meaning. Version 2 added the decoder facts
(coded size, pixel format, chroma format, bit depth, profile) and each video's size and mtime to ``VideoInfo``.

No DALI import here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Iterator

from evautil.files import atomic_write_text
from evautil.workers import map_with_progress

from .filelist import DataError, ListEntry, read_file_list
from .pyav_io import BadVideoError, DecoderFacts, StreamProbe, probe_stream

__all__ = ["VideoInfo", "BadVideoError", "DataError", "probe_video", "DatasetIndex", "build_index", "index_paths",
           "INDEX_SCHEMA_VERSION"]

logger = logging.getLogger(__name__)

# The meaning of the cached records; bump it whenever a field is added, removed or changes meaning.
INDEX_SCHEMA_VERSION = 2
# Duration-derived frame counts (WebM/Matroska have no frame count in the header) are estimates: allow this much
# slack before calling a file truncated.
_DURATION_SLACK = 0.02
# The wording of a truncation verdict drawn from nominal rate x duration even where the packets carry timestamps
# (before variable-frame-rate videos were judged by time): cached records with it are probed again.
_RETIRED_TRUNCATION = "the duration implies"
# Bad files named in the DATA.STRICT error message itself (the quarantine file lists them all).
_STRICT_NAMED = 10


@dataclass(frozen=True)
class VideoInfo:
    """What the loaders need to know about one good video.

    ``num_frames`` is the number of frames in presentation order that DALI's decoder (and PyAV) can decode;
    valid frame indices are ``0 .. num_frames - 1``.
    """

    num_frames: int
    codec: str
    width: int
    height: int
    fps: float
    # Decoder facts (see pyav_io.DecoderFacts): which decoder can take the video.
    coded_width: int = 0
    coded_height: int = 0
    pix_fmt: str = ""
    chroma: str = ""
    bit_depth: int = 0
    profile: str = ""
    # The file as probed: a file whose size or modification time differs is not the video described here.
    size: int = 0
    mtime_ns: int = 0

    @property
    def decoder(self) -> DecoderFacts:
        return DecoderFacts(codec=self.codec, coded_width=self.coded_width, coded_height=self.coded_height,
                            pix_fmt=self.pix_fmt, chroma=self.chroma, bit_depth=self.bit_depth, profile=self.profile)

    @classmethod
    def from_record(cls, rec: dict) -> "VideoInfo":
        """From a cached record (a dict of this schema version's fields; unknown keys are an error)."""
        names = {f.name for f in fields(cls)}
        extra = set(rec) - names
        if extra:
            raise ValueError(f"unknown VideoInfo fields {sorted(extra)}")
        return cls(**rec)


def probe_video(path: str, full_decode: bool = False) -> VideoInfo:
    """Probe one video: count its frames and check that it is readable.

    Without ``full_decode`` the frame count is the number of demuxed video packets carrying data (the count DALI's
    decoder sees) and only the first frame is decoded. With ``full_decode`` every frame is decoded and the decoded
    count is used, which also catches corruption in the middle of a stream.

    Raises:
        BadVideoError: with a short reason (no file name): missing file, zero-byte file, not a video container,
            no video stream, no frames, undecodable first frame, truncated, decode errors.
    """
    if not os.path.exists(path):
        raise BadVideoError("missing file")
    if not os.path.isfile(path):
        raise BadVideoError("not a regular file")
    st = os.stat(path)
    if st.st_size == 0:
        raise BadVideoError("zero-byte file")
    try:
        p = probe_stream(path, full_decode=full_decode)
    except BadVideoError as e:
        # Messages are "<path>: <reason>"; the caller names the file itself.
        msg = str(e)
        raise BadVideoError(msg[len(path) + 2:] if msg.startswith(path + ": ") else msg) from None
    if p.packets == 0:
        raise BadVideoError("no frames (the video stream has no packets)")
    if not p.first_frame_ok:
        raise BadVideoError("first frame cannot be decoded" + (f" ({p.error})" if p.error else ""))
    if p.error:
        raise BadVideoError(f"corrupt or truncated: {p.error}")
    if p.width <= 0 or p.height <= 0:
        raise BadVideoError(f"invalid frame size {p.width}x{p.height}")
    _check_complete(p)
    num_frames = p.packets
    if full_decode:
        if p.decoded_frames < p.packets:
            raise BadVideoError(f"truncated or corrupt: only {p.decoded_frames} of {p.packets} frames decode")
        num_frames = p.decoded_frames
    d = p.decoder
    return VideoInfo(num_frames=num_frames, codec=p.codec, width=p.width, height=p.height, fps=round(p.fps, 6),
                     coded_width=d.coded_width if d else 0, coded_height=d.coded_height if d else 0,
                     pix_fmt=d.pix_fmt if d else "", chroma=d.chroma if d else "", bit_depth=d.bit_depth if d else 0,
                     profile=d.profile if d else "", size=st.st_size, mtime_ns=st.st_mtime_ns)


def _check_complete(p: StreamProbe) -> None:
    """BadVideoError when the stream stops short of what its container declares.

    An exact header count (MP4/AVI) is compared with the packets. Without one (WebM/Matroska), time is compared
    with time: the packets' timestamps must reach the declared duration. Nominal rate x duration is not a frame
    count for a variable-frame-rate video (fewer frames than that is valid); it is used only when the packets
    carry no timestamps."""
    if p.declared_exact:
        if p.packets < p.declared_frames:
            raise BadVideoError(f"truncated: {p.packets} frames readable, the header declares {p.declared_frames}")
    elif p.duration_s > 0 and p.packets_end_s >= 0:
        slack = max(_DURATION_SLACK * p.duration_s, 2.0 / p.fps if p.fps > 0 else 0.0)
        if p.packets_end_s < p.duration_s - slack:
            raise BadVideoError(f"truncated: {p.packets} frames readable, ending at {p.packets_end_s:.3f} s of the "
                                f"{p.duration_s:.3f} s the container declares")
    elif p.declared_frames > 0:
        slack = max(1, int(_DURATION_SLACK * p.declared_frames))
        if p.packets < p.declared_frames - slack:
            raise BadVideoError(f"truncated: {p.packets} frames readable, {p.declared_frames} expected from the "
                                "declared duration and rate (the packets carry no timestamps)")


# ----------------------------------------------------------------------------------------------------------------
# Cache files


def _user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "eva_dali_video")


def _dir_writable(directory: str) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


def index_paths(list_path: str) -> tuple[str, str, str]:
    """``(index_json, quarantine_txt, lock_file)`` for a list.

    Beside the list when its directory is writable, else in the per-user cache directory under a name derived
    from the list's absolute path.
    """
    list_abs = os.path.abspath(list_path)
    directory = os.path.dirname(list_abs)
    if _dir_writable(directory):
        stem = list_abs
    else:
        digest = hashlib.sha1(list_abs.encode()).hexdigest()[:16]
        cache_dir = _user_cache_dir()
        os.makedirs(cache_dir, exist_ok=True)
        stem = os.path.join(cache_dir, f"{digest}.{os.path.basename(list_abs)}")
    return stem + ".index.json", stem + ".quarantine.txt", stem + ".index.lock"


@contextlib.contextmanager
def _locked(lock_path: str, shared: bool = False) -> Iterator[None]:
    """Inter-process lock (``flock`` on ``lock_path``): exclusive for writers, ``shared`` for readers, so that the
    ranks of a run read a finished index at the same time; released when the block exits or the process dies."""
    with open(lock_path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _load_cache(cache_path: str, root: str) -> dict[str, dict]:
    """The cached per-video records, or {} when absent, unreadable, of another version or for another root."""
    try:
        with open(cache_path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        logger.warning("ignoring unreadable index cache %s (%s); re-probing", cache_path, e)
        return {}
    if not isinstance(data, dict) or data.get("root") != root:
        return {}
    if data.get("version") != INDEX_SCHEMA_VERSION:
        logger.info("index cache %s has schema version %r, this code reads %d: probing again", cache_path,
                    data.get("version"), INDEX_SCHEMA_VERSION)
        return {}
    videos = data.get("videos")
    return videos if isinstance(videos, dict) else {}


def _save_cache(cache_path: str, list_path: str, root: str, videos: dict[str, dict]) -> None:
    data = {"version": INDEX_SCHEMA_VERSION, "list": os.path.abspath(list_path), "root": root, "videos": videos}
    atomic_write_text(cache_path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _stat_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


# ----------------------------------------------------------------------------------------------------------------
# Index


@dataclass
class DatasetIndex:
    """The probed state of one video list.

    Attributes:
        list_path, root: the list and the directory its paths are relative to.
        entries: every list entry (``entries[row].row == row``), good or bad.
        infos: ``row -> VideoInfo`` for good videos only.
        bad: ``row -> reason`` for videos left out (probe failures and runtime quarantines).
        quarantine_path: text file listing bad videos as ``<rel path>\\t<reason>`` lines.
        cache_path: the ``.index.json`` cache file.
        probed: how many videos this build actually probed (0 when everything came from the cache).
    """

    list_path: str
    root: str
    entries: list[ListEntry]
    infos: dict[int, VideoInfo]
    bad: dict[int, str]
    quarantine_path: str
    cache_path: str = ""
    probed: int = 0
    _lock_path: str = field(default="", repr=False)

    @property
    def good_rows(self) -> list[int]:
        """Rows of the usable videos, ascending."""
        return sorted(self.infos)

    @property
    def good_entries(self) -> list[ListEntry]:
        return [self.entries[r] for r in self.good_rows]

    def num_frames(self, row: int) -> int:
        return self.infos[row].num_frames

    def __len__(self) -> int:
        return len(self.entries)

    def quarantine(self, row: int, reason: str) -> None:
        """Mark a video bad after a runtime failure (e.g. the GPU decoder rejected it).

        The video leaves ``infos``/``good_rows`` and a line is appended to the quarantine file. The cache records
        it as bad, so the next build leaves it out too unless the file is replaced; but when the file already
        differs from what was probed (size or modification time), the failure may be the change itself: its cache
        record is dropped instead, so the next build probes the file as it is now.
        """
        entry = self.entries[row]
        reason = " ".join(str(reason).split()) or "runtime failure"
        info = self.infos.pop(row, None)
        self.bad[row] = reason
        logger.warning("quarantined %s: %s", entry.path, reason)
        lock = self._lock_path or index_paths(self.list_path)[2]
        with _locked(lock):
            with open(self.quarantine_path, "a", encoding="utf-8") as f:
                f.write(f"{entry.rel_path}\t{reason}\n")
            if self.cache_path:
                videos = _load_cache(self.cache_path, self.root)
                key = _stat_key(entry.path)
                changed = info is not None and info.size > 0 and key != (info.size, info.mtime_ns)
                if changed:
                    videos.pop(entry.rel_path, None)
                elif key is not None:
                    videos[entry.rel_path] = {"size": key[0], "mtime_ns": key[1], "full_decode": True,
                                              "bad": reason}
                if changed or key is not None:
                    _save_cache(self.cache_path, self.list_path, self.root, videos)

    def summary(self) -> str:
        """Human-readable summary: counts, frame statistics, codecs, and every bad file with its reason."""
        lines = [f"video index of {self.list_path}: {len(self.entries)} videos, {len(self.infos)} good, "
                 f"{len(self.bad)} bad ({self.probed} probed, {len(self.entries) - self.probed} from cache)"]
        if self.infos:
            frames = [i.num_frames for i in self.infos.values()]
            codecs = Counter(i.codec for i in self.infos.values())
            sizes = Counter(f"{i.width}x{i.height}" for i in self.infos.values())
            lines.append(f"  frames min/median/max: {min(frames)}/{statistics.median(frames):g}/{max(frames)}; "
                         f"codecs: {', '.join(f'{c} {n}' for c, n in codecs.most_common())}; "
                         f"sizes: {', '.join(f'{s} {n}' for s, n in sizes.most_common(3))}"
                         + (" ..." if len(sizes) > 3 else ""))
        if self.bad:
            lines.append(f"  bad videos (left out; listed in {self.quarantine_path}):")
            lines += [f"    {self.entries[r].path}: {why}" for r, why in sorted(self.bad.items())]
        return "\n".join(lines)


def _probe_job(job: tuple[int, str, bool]) -> tuple[int, dict | None, str | None]:
    """Worker: probe one video -> (row, VideoInfo as dict or None, bad reason or None). Never raises."""
    row, path, full_decode = job
    try:
        return row, asdict(probe_video(path, full_decode=full_decode)), None
    except BadVideoError as e:
        return row, None, str(e) or "unreadable"
    except Exception as e:  # an unexpected library failure on one file must not stop indexing the others
        return row, None, f"probe failed: {type(e).__name__}: {e}"


def _probe_all(jobs: list[tuple[int, str, bool]], workers: int, progress: bool,
               desc: str) -> Iterator[tuple[int, dict | None, str | None]]:
    # The job function is looked up here, at call time, so a replaced _probe_job is the one that runs.
    return map_with_progress(_probe_job, jobs, workers, desc, progress=progress, unit="video", ordered=False)


def _reuse(rec: dict, row: int, infos: dict[int, VideoInfo], bad: dict[int, str]) -> bool:
    """Take a cached record into ``infos`` or ``bad``; False (probe again) when it does not read as this schema."""
    if "bad" in rec:
        if _RETIRED_TRUNCATION in str(rec["bad"]):
            return False  # judged by nominal rate x duration, which rejected valid variable-frame-rate videos
        bad[row] = str(rec["bad"])
        return True
    try:
        infos[row] = VideoInfo.from_record(rec["info"])
    except (KeyError, TypeError, ValueError):
        return False
    return True


def _from_cache(entries: list[ListEntry], cached: dict[str, dict], full_decode: bool):
    """Split the entries into those the cache describes (same size and mtime, probed at least as thoroughly) and
    the probe jobs of the others; missing files are bad at once.
    Returns (videos, infos, bad, jobs, keys): reused records, good infos, bad reasons, jobs, (size, mtime) keys."""
    videos: dict[str, dict] = {}
    infos: dict[int, VideoInfo] = {}
    bad: dict[int, str] = {}
    jobs: list[tuple[int, str, bool]] = []
    keys: dict[int, tuple[int, int]] = {}
    for e in entries:
        key = _stat_key(e.path)
        if key is None:
            bad[e.row] = "missing file" if not os.path.lexists(e.path) else "cannot stat file"
            continue
        keys[e.row] = key
        rec = cached.get(e.rel_path)
        if (isinstance(rec, dict) and rec.get("size") == key[0] and rec.get("mtime_ns") == key[1]
                and (rec.get("full_decode") or not full_decode) and _reuse(rec, e.row, infos, bad)):
            videos[e.rel_path] = rec
        else:
            jobs.append((e.row, e.path, full_decode))
    return videos, infos, bad, jobs, keys


def _quarantine_text(entries: list[ListEntry], bad: dict[int, str]) -> str:
    return "".join(f"{entries[r].rel_path}\t{why}\n" for r, why in sorted(bad.items()))


def _quarantine_is(path: str, text: str) -> bool:
    """Whether the quarantine file says exactly ``text`` (absent when there is nothing to say)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read() == text
    except FileNotFoundError:
        return text == ""


def _probe_and_save(jobs, entries, keys, videos, infos, bad, cached, full_decode, workers, progress, list_path,
                    root_abs, cache_path) -> None:
    """Probe the videos of ``jobs`` into ``videos`` / ``infos`` / ``bad`` and save the cache when it changed."""
    if jobs:
        desc = f"indexing {os.path.basename(list_path)}"
        for row, info, reason in _probe_all(jobs, workers, progress, desc):
            e = entries[row]
            rec = {"size": keys[row][0], "mtime_ns": keys[row][1], "full_decode": full_decode}
            if info is not None:
                infos[row] = VideoInfo.from_record(info)
                rec["info"] = info
            else:
                bad[row] = reason or "unreadable"
                rec["bad"] = bad[row]
            videos[e.rel_path] = rec
    if jobs or set(videos) != set(cached):
        _save_cache(cache_path, list_path, root_abs, videos)


def build_index(list_path: str, root: str, num_classes: int | None = None, *, workers: int = 0,
                full_decode: bool = False, strict: bool = False, progress: bool = True) -> DatasetIndex:
    """Read a video list and probe every video (or reuse the cached results).

    Args:
        list_path: ``<relative path> <label>`` list (see :func:`read_file_list`).
        root: directory the list's paths are relative to.
        num_classes: when given, labels must lie in ``[0, num_classes)``.
        workers: probing processes; 0 = ``os.cpu_count()``.
        full_decode: decode every frame (slow, catches mid-stream corruption); cached results from a full decode
            also satisfy later quick builds, not the other way round.
        strict: raise instead of leaving bad videos out (``DATA.STRICT``).
        progress: show a progress bar while probing.

    Returns:
        The index; bad videos are in ``bad`` (with reasons), logged as warnings and written to the quarantine file.

    Raises:
        DataListError: the list is missing or malformed.
        DataError: ``strict`` and at least one video is bad; the one-line message names the list, the bad files
            (the first ten) with their reasons and the quarantine file.
    """
    entries = read_file_list(list_path, root, num_classes)
    root_abs = os.path.abspath(root)
    cache_path, quarantine_path, lock_path = index_paths(list_path)

    # Readers first, under a shared lock: when the cache already covers every video as it is on disk (every rank
    # of a run after the first build), all ranks read it at once instead of one after another.
    with _locked(lock_path, shared=True):
        cached = _load_cache(cache_path, root_abs)
        videos, infos, bad, jobs, keys = _from_cache(entries, cached, full_decode)
        current = not jobs and set(videos) == set(cached) and _quarantine_is(quarantine_path, _quarantine_text(
            entries, bad))
    if not current:
        with _locked(lock_path):  # probe and write, one process at a time; another may have done it meanwhile
            cached = _load_cache(cache_path, root_abs)
            videos, infos, bad, jobs, keys = _from_cache(entries, cached, full_decode)
            _probe_and_save(jobs, entries, keys, videos, infos, bad, cached, full_decode, workers, progress,
                            list_path, root_abs, cache_path)
            text = _quarantine_text(entries, bad)
            if text:
                atomic_write_text(quarantine_path, text)
            elif os.path.exists(quarantine_path):
                os.unlink(quarantine_path)  # stale: every listed video is fine now

    index = DatasetIndex(list_path=list_path, root=root, entries=entries, infos=infos, bad=bad,
                         quarantine_path=quarantine_path, cache_path=cache_path, probed=len(jobs),
                         _lock_path=lock_path)
    for row, why in sorted(bad.items()):
        logger.warning("bad video %s: %s", entries[row].path, why)
    logger.info("%s", index.summary())
    if strict and bad:
        # Per-video failures are BadVideoErrors internally; refusing the whole list is an input error (DataError),
        # which command-line entry points report in one line without a traceback.
        # One line: up to _STRICT_NAMED files inline, every one in the quarantine file (and the warnings above).
        named = [f"{entries[r].path} ({why})" for r, why in sorted(bad.items())[:_STRICT_NAMED]]
        more = f"; and {len(bad) - len(named)} more" if len(bad) > len(named) else ""
        raise DataError(
            f"DATA.STRICT is on and {len(bad)} of {len(entries)} videos in {list_path} are unreadable: "
            f"{'; '.join(named)}{more} (all listed in {quarantine_path}); fix or remove them, or set DATA.STRICT "
            "False to leave them out")
    if not infos:
        logger.error("no usable video in %s", list_path)
    return index
