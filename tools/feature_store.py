"""Resumable on-disk store of per-video features: shards plus JSON-lines index files, one set per rank.

Layout of the output folder::

    features-rank000-00000.npy        (rows, D) array: the windows of several videos, one after the other
    index-rank000.jsonl               one line per finished video: where its rows are and what they cover
    failed-rank000.jsonl              one line per video left without features because it was unreadable (retried
                                      on the next run), rewritten at the end of each run
    index.jsonl                       all ranks' lines merged in input order, written at the end of a run
    settings.json                     what the features are (mode, window, model, ...): once an index lists a
                                      video, a rerun must match it
    .rank000.lock                     held by the run that writes rank 0's files (see lock_output)

A shard is written atomically before its videos' index lines are appended (and synced), so a video is listed only
once its features are on disk; a run killed at any point leaves only complete shards and lines (and, killed while
writing a shard, its temporary file, or killed before its lines were appended, a shard no line names: the next run
of that rank removes both, and redoes their videos). A later run skips every video listed in any
``index-rank*.jsonl`` whose shard is on disk (one whose shard is gone is extracted again) and numbers its shards
after the existing ones and those the index names: no line ever points into a newer shard. A video is keyed by its
resolved path (:func:`video_key`); its line records the file's size and mtime (:func:`file_identity`), and a video
whose file has changed since is extracted again, its newer line the one ``index.jsonl`` lists (:func:`resume_plan`).
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any, Collection, Sequence

import numpy as np

from evautil.files import (atomic_temp_glob, atomic_write, atomic_write_by_name, atomic_write_text, hold_lock,
                           make_output_folder, sync_folder)
from evautil.text import json_text

__all__ = ["FORMATS", "FeatureStore", "check_settings", "finished_paths", "merge_index", "read_features",
           "rewrite_failed", "failed_ranks", "lock_output", "lost_shards", "remove_unfinished_shards",
           "NonFiniteFeaturesError", "file_identity", "video_key", "resume_plan"]

FORMATS = {"npy": ".npy", "safetensors": ".safetensors"}


def _rank_files(out_dir: str, prefix: str) -> list[str]:
    """``out_dir/<prefix>-rank*.jsonl``, sorted; the folder's name is taken literally (it may hold ``[``)."""
    return sorted(glob.glob(os.path.join(glob.escape(out_dir), f"{prefix}-rank*.jsonl")))


def _shard_name(rank: int) -> re.Pattern[str]:
    """The names of rank ``rank``'s shards, their number the first group."""
    return re.compile(rf"features-rank{rank:03d}-(\d+)\.(npy|safetensors)")


def _json_line(record: dict[str, Any]) -> str:
    """``record`` as one line of an index or failed file (``evautil.text.json_text``: a video name that is not UTF-8
    escaped, so that ``json.loads`` gives the same name back; written as it reads, no line of its run was written)."""
    return json_text(record) + "\n"


def _ends_a_line(path: str) -> bool:
    """Whether ``path`` is missing, empty or ends with a line break."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
    except FileNotFoundError:
        return True


def _index_lines(paths: Sequence[str]) -> list[dict[str, Any]]:
    """The records of index (or failed) files that name a video; any other line is passed over, and its video
    redone."""
    out = []
    for path in paths:
        # errors="replace": a line cut by a crash mid-append may end inside a multi-byte character of its path
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a crash mid-append: its video is redone
                        continue
                    if isinstance(record, dict) and isinstance(record.get("path"), str):
                        out.append(record)
    return out


def lock_output(out_dir: str, rank: int):
    """Hold ``out_dir/.rank<rank>.lock`` (created with the folder) for the run that writes that rank's files, until
    the returned file is closed. A second run into the folder at the same time would number its shards as the first
    does and replace them, leaving index lines that point at the other run's features.

    Raises:
        ValueError: another process holds it; OutputFolderError (a ValueError): the folder cannot be made.
    """
    path = os.path.join(out_dir, f".rank{rank:03d}.lock")
    # a link to a folder not made yet is made through (makedirs on the link itself finds it "exists")
    make_output_folder(os.path.realpath(out_dir), "--out")
    held = hold_lock(path)
    if held is None:
        raise ValueError(f"{out_dir} is being written by another run (it holds {path}); wait for it to end, or give "
                         "this run another --out")
    return held


def _describe(key: str, value: Any) -> str:
    if key == "weights_file" and isinstance(value, dict):  # a checkpoint's identity: see extract_features
        return f"{value.get('size')} bytes, sha256 {str(value.get('sha256'))[:16]}... ({value.get('hashed')})"
    return repr(value)


def check_settings(out_dir: str, settings: dict[str, Any], write: bool) -> list[str]:
    """Refuse to add features made differently to an output folder that holds features; record ``settings`` when
    ``write`` and the folder has none yet, or has other ones but no features (a run that extracted nothing: its
    settings bind nothing).

    A ``settings.json`` written before some keys of ``settings`` were recorded (by an older version) lacks them:
    they are not compared, as nothing tells how the features there were made, and are recorded from this run on.

    Returns:
        The keys of ``settings`` the folder's ``settings.json`` lacked while it holds features (taken as this
        run's), for the caller to say so; empty otherwise.

    Raises:
        ValueError: ``out_dir/settings.json`` differs from ``settings`` (or cannot be read) and an index lists a
            video; the message names every difference with both values (or the file), and what to do.
    """
    path = os.path.join(out_dir, "settings.json")
    recorded, outdated = os.path.isfile(path), False
    unrecorded: list[str] = []
    if recorded:
        try:
            with open(path, encoding="utf-8") as f:
                before = json.load(f)
        except ValueError as e:  # not JSON, or not UTF-8
            before, damage = None, str(e)
        else:
            damage = "" if isinstance(before, dict) else f"a JSON {type(before).__name__}, not an object"
        if damage:
            if finished_paths(out_dir):
                raise ValueError(f"{path} is damaged ({damage}): it records how the features in {out_dir} were "
                                 "made; restore it, or use another --out")
            before = {}  # nothing was made with it: it binds nothing, and is written again
        # the weights are told by their file's contents: the same file under another path (a copy, a new
        # download, an hf:// reference's cached file) made the same features
        same_file = before.get("weights_file") is not None and before.get("weights_file") == settings.get(
            "weights_file")
        changed = [f"{k}: {_describe(k, before[k])} before, {_describe(k, v)} now" for k, v in settings.items()
                   if k in before and before[k] != v and not (k == "weights" and same_file)]
        unrecorded = [k for k in settings if k not in before]
        outdated = bool(changed or unrecorded)
        if outdated and not finished_paths(out_dir):
            unrecorded = []  # nothing was made with the settings of before: they bind nothing
        elif changed:
            raise ValueError(f"{out_dir} holds features made with other settings ({'; '.join(changed)}); use "
                             "another --out or the same settings")
    if write and (outdated or not recorded):
        atomic_write_text(path, json.dumps(settings, indent=1))
    return unrecorded


def _listed(out_dir: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The index lines of every rank: those whose shard is on disk, and those whose shard is not (deleted, or not
    copied with the folder)."""
    on_disk: dict[str, bool] = {}
    kept, lost = [], []
    for r in _index_lines(_rank_files(out_dir, "index")):
        shard = r.get("shard")
        if isinstance(shard, str) and shard not in on_disk:
            on_disk[shard] = os.path.isfile(os.path.join(out_dir, shard))
        (kept if isinstance(shard, str) and on_disk[shard] else lost).append(r)
    return kept, lost


def finished_paths(out_dir: str) -> set[str]:
    """Videos already extracted in ``out_dir`` (by any rank of any earlier run), their shard on disk: a video whose
    shard is gone is not, and is extracted again (skipped, it was listed without features for ever)."""
    return {r["path"] for r in _listed(out_dir)[0]}


def file_identity(path: str) -> dict[str, int] | None:
    """``{'size', 'mtime_ns'}`` of the file ``path`` names (a link followed), None when it cannot be read. Recorded
    with a video's features (taken before its decode: a file rewritten meanwhile is redone by the next run), so that a
    rerun tells a video re-encoded under the same name since."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def video_key(path: str) -> str:
    """The resolved path that keys a video in the store: the same file reached through a linked folder, or named
    relative or absolute, is one video."""
    return os.path.realpath(path)


def _freshness(record: dict[str, Any], identity: dict[str, int] | None) -> int:
    """2: ``record`` was made from the file as it is now (``identity``, :func:`file_identity`); 1: unknown (a line
    of an older version records no size or mtime, or the file cannot be read now); 0: the file changed since."""
    if "size" not in record or "mtime_ns" not in record or identity is None:
        return 1
    return 2 if (record["size"], record["mtime_ns"]) == (identity["size"], identity["mtime_ns"]) else 0


def _current_lines(out_dir: str, identities: dict[str, dict[str, int] | None]) -> dict[str, tuple[dict, int]]:
    """Per video (:func:`video_key`) its line whose shard is on disk that best matches the file now, with its
    :func:`_freshness`: one made from the file as it is, else one that cannot tell, else the newest; the latest
    line among equals. ``identities``: the files' identities by key, where known; a video with several lines and no
    identity given is looked at now (its re-extracted line must win, whichever rank wrote it)."""
    lines: dict[str, list[dict[str, Any]]] = {}
    for r in _listed(out_dir)[0]:
        lines.setdefault(video_key(r["path"]), []).append(r)
    best = {}
    for key, records in lines.items():
        identity = identities[key] if key in identities else (file_identity(key) if len(records) > 1 else None)
        rated = [(_freshness(r, identity), i) for i, r in enumerate(records)]
        fresh, i = max(rated)
        best[key] = (records[i], fresh)
    return best


def resume_plan(out_dir: str, paths: Sequence[str],
                identities: dict[str, dict[str, int] | None]) -> tuple[list[str], list[str], list[str]]:
    """What a run given ``paths`` (each a distinct video, :func:`video_key`) does with ``out_dir``'s features:
    ``(todo, changed, unknown)``, the videos to extract (none up to date on disk), those of them whose features were
    made from the file before it changed (another size or mtime), and those skipped whose lines record neither (an
    older version's: a change cannot be told). ``identities``: :func:`file_identity` per path."""
    current = _current_lines(out_dir, {video_key(p): identities.get(p) for p in paths})
    todo, changed, unknown = [], [], []
    for p in paths:
        line = current.get(video_key(p))
        if line is None or line[1] == 0:
            todo.append(p)
            if line is not None:
                changed.append(p)
        elif "size" not in line[0] or "mtime_ns" not in line[0]:
            unknown.append(p)
    return todo, changed, unknown


def lost_shards(out_dir: str) -> dict[str, int]:
    """The shards that index lines name but that are not on disk, with how many videos in each have no features
    elsewhere in ``out_dir`` (those a run given them extracts again); shards of only re-extracted videos are left
    out."""
    kept, lost = _listed(out_dir)
    done = {r["path"] for r in kept}
    counts: dict[str, int] = {}
    for r in lost:
        if r["path"] not in done:
            shard = str(r.get("shard"))
            counts[shard] = counts.get(shard, 0) + 1
    return counts


def remove_unfinished_shards(out_dir: str, rank: int) -> list[str]:
    """Remove what runs of rank ``rank`` killed mid-write left: its shards' temporary files (hidden, each as large as
    a shard, and never renamed into one: a folder of a job preempted often filled up with them) and its shards that
    no index line names (killed between writing a shard and appending its lines: their videos are redone into a new
    shard, and the old one stayed for ever). Call with that rank's lock held (:func:`lock_output`): no run of the
    rank is writing then. Another rank's shards are left alone, as that rank may be between the two writes now.
    Returns the files removed."""
    found = glob.glob(os.path.join(glob.escape(out_dir), atomic_temp_glob(f"features-rank{rank:03d}-*")))
    merged = os.path.join(out_dir, "index.jsonl")  # names them too, should the rank files be gone
    named = {str(r.get("shard")) for r in _index_lines(_rank_files(out_dir, "index")
                                                       + ([merged] if os.path.isfile(merged) else []))}
    ours = _shard_name(rank)
    found += [os.path.join(out_dir, f) for f in sorted(os.listdir(out_dir)) if ours.fullmatch(f) and f not in named]
    for path in found:
        os.unlink(path)
    return found


def merge_index(out_dir: str, order: Sequence[str],
                identities: dict[str, dict[str, int] | None] | None = None) -> str:
    """Write ``index.jsonl``: every rank's lines whose shard is on disk, one per video (:func:`video_key`: the
    line made from the file as it is now, else the newest), in the order of ``order`` (others last). A video of
    ``identities`` (:func:`file_identity` per path) whose every line was made before its file changed is left out:
    its features are no longer the video's (a re-extraction that failed lists it as failed)."""
    keyed = {video_key(p): identity for p, identity in (identities or {}).items()}
    rank: dict[str, int] = {}
    for i, p in enumerate(order):
        rank.setdefault(video_key(p), i)
    current = _current_lines(out_dir, keyed)
    kept = sorted((rank.get(key, len(rank)), record["path"], key) for key, (record, fresh) in current.items()
                  if fresh or key not in keyed)
    lines = [current[key][0] for _, _, key in kept]
    path = os.path.join(out_dir, "index.jsonl")
    # synced before its rename and the rename after: a power loss right after the run could leave it empty or cut
    atomic_write_text(path, "".join(_json_line(r) for r in lines))
    return path


def rewrite_failed(out_dir: str, rank: int, failures: dict[str, str], retried: Collection[str],
                   done: Collection[str]) -> int:
    """Rewrite ``failed-rank<rank>.jsonl`` (atomically) at the end of a run: this run's ``failures`` (path ->
    reason) and the earlier lines of videos this run did not try again (not in ``retried``), less every video now
    in an index (``done``); the file is removed when nothing is left. Returns the number of lines written.

    Appending instead would repeat a video on every rerun and keep listing one that a rerun extracted.
    """
    path = os.path.join(out_dir, f"failed-rank{rank:03d}.jsonl")
    lines = {r["path"]: r for r in _index_lines([path] if os.path.isfile(path) else [])
             if isinstance(r, dict) and "path" in r and r["path"] not in retried}
    lines.update({p: {"path": p, "error": why} for p, why in failures.items()})
    kept = [r for p, r in lines.items() if p not in done]
    if kept:
        atomic_write_text(path, "".join(_json_line(r) for r in kept))
    elif os.path.exists(path):
        os.unlink(path)
    return len(kept)


def failed_ranks(out_dir: str) -> list[int]:
    """The ranks that have a ``failed-rank<r>.jsonl`` in ``out_dir``."""
    return sorted(int(m.group(1)) for f in os.listdir(out_dir) if (m := re.fullmatch(r"failed-rank(\d+)\.jsonl", f)))


def read_features(out_dir: str, record: dict[str, Any]) -> np.ndarray:
    """The (num_windows, D) features of one index record."""
    shard = os.path.join(out_dir, record["shard"])
    if shard.endswith(".safetensors"):
        from safetensors.numpy import load_file

        array = load_file(shard)["features"]
    else:
        array = np.load(shard, mmap_mode="r")
    return np.asarray(array[record["row"]:record["row"] + record["num_windows"]])


class NonFiniteFeaturesError(ValueError):
    """The model gave NaN or infinite features for a video (weights holding NaN): ``extract_features`` stores none
    of them and exits 2 with this one line naming the video; ``Predictor.features`` raises it."""


class FeatureStore:
    """Buffers one rank's finished videos and writes them ``shard_videos`` at a time.

    Args:
        out_dir: the output folder (created; one that cannot be made raises
            :class:`~evautil.errors.OutputFolderError`, a ValueError naming it).
        rank: this process's rank (names its files).
        fmt: ``'npy'`` or ``'safetensors'`` (one tensor named ``features``).
        fp16: store float16 instead of float32.
        shard_videos: videos per shard.
        identities: path -> :func:`file_identity`, taken before the videos are decoded: written in their index
            lines (``size``, ``mtime_ns``), so that a rerun extracts again a video changed since.
    """

    def __init__(self, out_dir: str, rank: int = 0, fmt: str = "npy", fp16: bool = False, shard_videos: int = 64,
                 identities: dict[str, dict[str, int] | None] | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"feature format must be one of {sorted(FORMATS)}, got {fmt!r}")
        if shard_videos < 1:
            raise ValueError(f"videos per shard must be at least 1, got {shard_videos}")
        make_output_folder(out_dir, "out_dir")  # OutputFolderError, one line naming the folder, not an OSError
        self.out_dir, self.rank, self.fmt, self.shard_videos = out_dir, rank, fmt, shard_videos
        self.dtype = np.float16 if fp16 else np.float32
        self._pending: list[tuple[dict[str, Any], np.ndarray]] = []
        # path -> its file's size and mtime before its decode (file_identity), recorded with its features
        self.identities = identities or {}
        self.index_path = os.path.join(out_dir, f"index-rank{rank:03d}.jsonl")
        # after the shards on disk and those this rank's index names: a shard gone from the disk, its name reused,
        # would have its old lines point at another video's rows
        named = [str(r.get("shard")) for r in _index_lines([self.index_path] if os.path.isfile(self.index_path)
                                                           else [])]
        taken = [int(m.group(1)) for f in os.listdir(out_dir) + named if (m := _shard_name(rank).fullmatch(f))]
        self._next_shard = max(taken, default=-1) + 1
        self.failed_path = os.path.join(out_dir, f"failed-rank{rank:03d}.jsonl")
        self.written = 0  # videos written by this store
        self.failed: dict[str, str] = {}  # path -> reason, for write_failed at the end of the run

    def add(self, record: dict[str, Any], features: np.ndarray) -> None:
        """Queue one video's ``(num_windows, D)`` features with its index ``record`` (path and window fields)."""
        if features.ndim != 2:
            raise ValueError(f"{record['path']}: expected (windows, dim) features, got shape {features.shape}")
        identity = self.identities.get(record["path"])
        self._pending.append(({**record, **(identity or {})}, np.ascontiguousarray(features, dtype=self.dtype)))
        if len(self._pending) >= self.shard_videos:
            self.flush()

    def fail(self, path: str, reason: str) -> None:
        """Note that ``path`` could not be read; :meth:`write_failed` writes the notes at the end of the run."""
        self.failed[path] = reason

    def write_failed(self, retried: Collection[str], done: Collection[str]) -> int:
        """This rank's ``failed-rank<r>.jsonl`` for the run that ends: see :func:`rewrite_failed`."""
        return rewrite_failed(self.out_dir, self.rank, self.failed, retried, done)

    def flush(self) -> None:
        """Write the queued videos as one shard, then their index lines."""
        if not self._pending:
            return
        name = f"features-rank{self.rank:03d}-{self._next_shard:05d}{FORMATS[self.fmt]}"
        array = np.concatenate([f for _, f in self._pending])
        path = os.path.join(self.out_dir, name)
        # both with the mode open() gives, so that other users and jobs can read them; on a failed write (a full
        # disk) no temporary file is left, and the error names the shard. Synced: the index lines synced below
        # must not outlive their shard in a power loss (the rerun would skip videos whose features are gone)
        if self.fmt == "npy":
            atomic_write(path, lambda f: np.save(f, array))
        else:
            from safetensors.numpy import save_file

            atomic_write_by_name(path, lambda tmp: save_file({"features": array}, tmp))
        lines, row = [], 0
        for record, feats in self._pending:
            lines.append(_json_line({**record, "shard": name, "row": row, "num_windows": len(feats),
                                     "dim": feats.shape[1]}))
            row += len(feats)
        created = not os.path.exists(self.index_path)
        with open(self.index_path, "a", encoding="utf-8") as f:
            if not _ends_a_line(self.index_path):  # a line cut by a crash mid-append: end it (it stays unreadable
                f.write("\n")  # and its video is redone) rather than glue this shard's first line onto it
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())  # once per shard: the lines of all its videos together
        if created:  # the new file's name too, or a power loss could lose the synced lines with it
            sync_folder(self.out_dir)
        self.written += len(self._pending)
        self._next_shard += 1
        self._pending = []
