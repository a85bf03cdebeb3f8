"""Writing lists, labels, class mappings and reports to disk (or, with ``dry_run``, only describing them)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from evautil.files import atomic_write, atomic_write_text
from evautil.progress import counted
from evautil.text import text_lines

from .k722 import CLASS_ALIASES, K722Result, build_k722
from .common import KineticsError
from .lists import (DatasetLists, class_labels, classes_left_without_training, clean_dataset_lists, climbs_out,
                    format_list_line, labels_csv_text, relative_path)
from .scan import DatasetScan, Video
from .video_names import printable_path

if TYPE_CHECKING:
    from dali_pipelines.video_table import VideoTable

__all__ = ["prepare_lists", "prepare_k722"]


class _Writer:
    """Writes text/npy files, or with ``dry_run`` only describes them; records what it wrote."""

    def __init__(self, out_dir: str, dry_run: bool, log: Callable[[str], None], written: list[str] | None = None):
        self.out_dir, self.dry_run, self.log = out_dir, dry_run, log
        self.written: list[str] = [] if written is None else written  # the caller's: it names them on a stop

    def text(self, name: str, text: str, preview_lines: int = 3) -> str:
        path = os.path.join(self.out_dir, name)
        lines = text_lines(text)
        if self.dry_run:
            self.log(f"[dry-run] would write {path} ({counted(len(lines), 'line')})")
            for ln in lines[:preview_lines]:
                self.log(f"            {ln}")
        else:
            atomic_write_text(path, text)  # synced before the rename, and the rename after: lists a user keeps
            self.log(f"wrote {path} ({counted(len(lines), 'line')})")
        self.written.append(path)
        return path

    def index_cache(self, list_name: str, root: str, rel_paths: Sequence[str], table: "VideoTable") -> None:
        """The index cache of list ``list_name`` (``dali_pipelines.index.save_probed_index``), from its videos'
        ``--check`` probes: the first training run (or verify_data) on the list probes none of them."""
        list_path = os.path.join(self.out_dir, list_name)
        if self.dry_run:
            self.log(f"[dry-run] would write the index cache of {list_path} ({counted(len(rel_paths), 'video')}, "
                     "probed by --check)")
            return
        from dali_pipelines.index import save_probed_index  # local: lists without --check need no PyAV

        path = save_probed_index(list_path, root, rel_paths, table)
        self.log(f"wrote {path} (the index of {counted(len(rel_paths), 'video')}, probed by --check)")
        self.written.append(path)

    def npy(self, name: str, array: np.ndarray) -> str:
        path = os.path.join(self.out_dir, name)
        if self.dry_run:
            self.log(f"[dry-run] would write {path} ({array.dtype}, shape {tuple(array.shape)}, "
                     f"first {array[:5].tolist()})")
        else:
            # atomically, as the lists: a stop or a full disk mid-write left a cut-short .npy under the mapping's name,
            # or an empty one in place of the whole one an earlier run wrote
            atomic_write(path, lambda f: np.save(f, array))
            self.log(f"wrote {path} ({array.dtype}, shape {tuple(array.shape)})")
        self.written.append(path)
        return path


def _lines_text(lines: Sequence[str]) -> str:
    return "".join(ln + "\n" for ln in lines)


def _probed_table(scans: Sequence[DatasetScan], videos: Sequence[Video]) -> "VideoTable | None":
    """The ``--check`` probe rows of ``videos``, in their order (what their list's index cache holds); None when
    the list is empty or some video's dataset was scanned without ``--check``."""
    by_name = {s.name: s for s in scans}
    used = [by_name[n] for n in dict.fromkeys(v.dataset for v in videos)]
    if not used or any(s.probes is None for s in used):
        return None
    from dali_pipelines.video_table import VideoTable

    offsets, start = {}, 0
    for s in used:
        offsets[s.name], start = start, start + len(s.probes)
    rows = np.fromiter((offsets[v.dataset] + by_name[v.dataset].probe_rows[v.path] for v in videos), np.int64,
                       len(videos))
    return VideoTable.concat([s.probes for s in used]).take(rows)


def _write_list(w: _Writer, name: str, scans: Sequence[DatasetScan], videos: Sequence[Video],
                labels: Sequence[int], data_root: str) -> None:
    """Write list ``name`` (``videos`` with ``labels``, paths relative to ``data_root``) and, when its videos were
    probed by ``--check``, its index cache."""
    rel_paths = [relative_path(v.path, data_root) for v in videos]
    w.text(name, _lines_text([format_list_line(p, lab) for p, lab in zip(rel_paths, labels)]))
    table = _probed_table(scans, videos)
    if table is not None:
        # paths that climb out lead from the folder the root really is (relative_path): recorded under it, the
        # next --check finds their videos, and a build under the root given accepts it as the same root
        cache_root = os.path.realpath(data_root) if any(climbs_out(p) for p in rel_paths) else data_root
        w.index_cache(name, cache_root, rel_paths, table)


def _check_data_root(scans: Sequence[DatasetScan], data_root: str, log: Callable[[str], None]) -> None:
    for s in scans:
        if climbs_out(os.path.relpath(s.root, data_root)):
            log(f"warning: dataset {s.name} root {s.root} is outside the data root {data_root}; list paths will "
                f"start with '..' (set DATA.ROOT to {data_root})")


def _scan_report(s: DatasetScan, max_examples: int = 50) -> dict:
    rep = {"root": s.root, "layout": "annotations" if s.annotations else "class folders",
           "num_classes": len(s.classes),
           "found": {k: s.found_in(k) for k in s.videos}, "videos": {k: len(v) for k, v in s.videos.items()},
           "skipped": len(s.skipped), "skipped_files": [{"path": p, "reason": r} for p, r in s.skipped],
           "ignored_entries": len(s.ignored), "ignored_examples": s.ignored[:max_examples]}
    if s.annotations:
        rep["annotations"] = s.annotations
    return rep


def _annotations_markdown(a: dict) -> list[str]:
    """The report lines on the annotation CSVs of a dataset in the flat layout."""
    twice = a.get("rows_of_videos_in_other_split", {})
    csvs = ", ".join(f"{split} `{a['csv'][split]}` ({a['rows'][split]} rows, {a['rows_without_video'][split]} "
                     f"without a video file{_in_other_split(twice.get(split, 0))})" for split in a["csv"])
    md = [f"- annotations: {csvs}"]
    if sum(twice.values()):
        examples = "; ".join(f"`{x}`" for x in a["rows_of_videos_in_other_split_examples"][:3])
        md.append(f"- videos in both CSVs, listed in the split whose folder holds them (the other split's row "
                  f"skipped as `listed in the other split`): {sum(twice.values())} (e.g. {examples})")
    if a["videos_in_other_split_folder"]:
        md.append(f"- videos in the other split's folder, listed in the split of their annotation: "
                  f"{a['videos_in_other_split_folder']} (e.g. `{a['videos_in_other_split_folder_examples'][0]}`)")
    return md


def _in_other_split(rows: int) -> str:
    return f", {rows} naming a video the other split lists" if rows else ""


def _write_report(w: _Writer, stem: str, report: dict, markdown: str) -> None:
    w.text(stem + ".json", json.dumps(report, indent=2, sort_keys=False) + "\n", preview_lines=0)
    w.text(stem + ".md", markdown, preview_lines=0)


def _split_sum(rep: dict, split: str) -> str:
    """``<found> found = <written> written + <skipped> skipped (by kind) + ...``: where every file went."""
    skipped, kinds = rep[f"{split}_skipped"], rep[f"{split}_skipped_by_kind"]
    by_kind = f" ({', '.join(f'{k} {n}' for k, n in kinds.items())})" if kinds else ""
    parts = [f"{rep[f'{split}_written']} written", f"{skipped} skipped{by_kind}"]
    if split == "train":
        parts.append(f"{rep['dropped_leaked']} dropped as YouTube id in val")
    parts.append(f"{rep[f'{split}_duplicates']['dropped']} dropped as repeated YouTube id")
    return f"{rep[f'{split}_found']} found = " + " + ".join(parts)


def _lists_markdown(s: DatasetScan, data_root: str, rep: dict) -> str:
    tdup, vdup = rep["train_duplicates"], rep["val_duplicates"]
    if rep["drop_leaked"]:
        leak = f"{rep['dropped_leaked']} dropped"
    else:
        leak = f"{rep['train_ids_in_own_val']} kept (--keep-leaked)"
    dedup = "dropped, first occurrence kept" if rep["dedup"] else "kept (--keep-duplicates)"
    md = [f"# {s.name} lists", "", f"- root: `{s.root}`", f"- data root: `{data_root}`"]
    md += _annotations_markdown(s.annotations) if s.annotations else []
    md += [f"- classes: {len(s.classes)}",
           f"- train: {_split_sum(rep, 'train')}",
           f"- val: {_split_sum(rep, 'val')}",
           f"- training videos whose YouTube id is also in val: {rep['train_ids_in_own_val']}, {leak}",
           f"- repeated YouTube ids ({dedup}): train {tdup['dropped']} ({tdup['other_class']} in another class), "
           f"val {vdup['dropped']} ({vdup['other_class']} in another class)",
           f"- video files skipped (unusable, not in the annotations, or missing): {len(s.skipped)}"
           if s.annotations else f"- unusable video files skipped: {len(s.skipped)}",
           f"- entries ignored (not a video, or not where the layout has videos): {len(s.ignored)}", ""]
    if s.skipped:
        # a reason may quote a name that is not UTF-8 too (no annotation row names it): escaped as the path is
        md += ["## Skipped files", ""] + [f"- `{printable_path(p)}`: {printable_path(r)}"
                                          for p, r in s.skipped] + [""]
    return "\n".join(md)


def _refuse_emptied_train(s: DatasetScan, cleaned: DatasetLists) -> None:
    """Refuse a training list that the leak removal emptied: every training video's YouTube id in the val list is a
    val folder that is the train folder (a link to it, ``--val-dir train``), which wrote an empty list, exit 0."""
    if s.videos["train"] and not cleaned.train:
        raise KineticsError(
            f"dataset {s.name}: every one of its {len(s.videos['train']):,} training videos has its YouTube id in "
            f"its val list, so {s.name}_train.txt would be empty: its val folder holds the training videos (the "
            f"train folder, or a link to it?); point --val-dir at the validation videos, or pass --keep-leaked")


def _warn_classes_left_without_training(s: DatasetScan, cleaned: DatasetLists, log: Callable[[str], None]) -> None:
    """A class whose every training video the cleaning dropped is never trained on, though it has a label."""
    emptied = classes_left_without_training(s, cleaned)
    if emptied:
        names = ", ".join(repr(c) for c in emptied[:5]) + (" ..." if len(emptied) > 5 else "")
        log(f"warning: dataset {s.name}: {counted(len(emptied), 'class')} left without a training video "
            f"({names}), never trained on: each of its videos repeats a YouTube id another class kept (the same "
            f"file in two class folders) or is in the val list; the report names them (--keep-duplicates and "
            f"--keep-leaked keep them)")


def prepare_lists(scans: Sequence[DatasetScan], out_dir: str, data_root: str | None = None, *,
                  dedup: bool = True, drop_leaked: bool = True, dry_run: bool = False,
                  log: Callable[[str], None] = print, written: list[str] | None = None) -> dict:
    """Write ``<name>_train.txt``, ``<name>_val.txt``, ``<name>_labels.csv`` and ``<name>_report.{json,md}``.

    Args:
        scans: scanned datasets.
        out_dir: output directory.
        data_root: directory the list paths are relative to (``DATA.ROOT``); default ``out_dir``.
        dedup: de-duplicate train and val by YouTube id, first occurrence kept (the original notebook's rule).
        drop_leaked: leave out training videos whose YouTube id is in the same dataset's val list (the notebook
            did so for K600 and K700, not for K400); counted in the report either way.
        dry_run: print what would be written instead of writing.
        written: each file's path is appended to it once written (what a stop on the way leaves).

    Returns:
        ``{dataset name: report dict}``.
    """
    data_root = os.path.abspath(data_root or out_dir)
    _check_data_root(scans, data_root, log)
    w = _Writer(out_dir, dry_run, log, written)
    reports = {}
    cleaned_lists = [clean_dataset_lists(s, dedup=dedup, drop_leaked=drop_leaked) for s in scans]
    for s, cleaned in zip(scans, cleaned_lists):  # before any file is written
        _refuse_emptied_train(s, cleaned)
    for s, cleaned in zip(scans, cleaned_lists):
        labels = class_labels(s.classes)
        _warn_classes_left_without_training(s, cleaned, log)
        for split, videos in (("train", cleaned.train), ("val", cleaned.val)):
            _write_list(w, f"{s.name}_{split}.txt", [s], videos, [labels[v.class_name] for v in videos], data_root)
        w.text(f"{s.name}_labels.csv", labels_csv_text(s.classes))
        rep = _scan_report(s)
        rep["data_root"] = data_root
        rep.update(cleaned.report)
        _write_report(w, f"{s.name}_report", rep, _lists_markdown(s, data_root, rep))
        reports[s.name] = rep
        log(f"{s.name}: {counted(len(s.classes), 'class')}, train {rep['train_written']} of {rep['train_found']} "
            f"(skipped {rep['train_skipped']}; ids also in val {rep['train_ids_in_own_val']}"
            f"{', dropped' if drop_leaked else ', kept'}; repeated ids {rep['train_duplicates']['dropped']}), "
            f"val {rep['val_written']} of {rep['val_found']} (skipped {rep['val_skipped']}; "
            f"repeated ids {rep['val_duplicates']['dropped']})")
    return reports


def prepare_k722(scans: Sequence[DatasetScan], out_dir: str, data_root: str | None = None, *, name: str = "k722",
                 aliases: dict[str, str] | None = CLASS_ALIASES, dry_run: bool = False,
                 log: Callable[[str], None] = print, written: list[str] | None = None) -> K722Result:
    """Build Kinetics-722 (:func:`build_k722`) and write its lists, labels, class mappings and report (each path
    appended to ``written`` once written)."""
    data_root = os.path.abspath(data_root or out_dir)
    _check_data_root(scans, data_root, log)
    res = build_k722(scans, aliases)
    if {s.name.lower() for s in scans} == {"k400", "k600", "k700"} and len(res.classes) != 722:
        log(f"warning: the union has {len(res.classes)} classes, the released Kinetics-722 head has 722; class "
            f"folder names differ from the official ones (underscores? try --underscore-to-space)")
    underscored = sorted({c for s in scans for c in s.classes if "_" in c and " " not in c})
    if underscored:
        log(f"warning: {len(underscored)} class names contain '_' but no space (e.g. {underscored[0]!r}); the "
            f"official names use spaces, so labels and mappings would not match released heads "
            f"(try --underscore-to-space)")
    w = _Writer(out_dir, dry_run, log, written)
    for split, videos in (("train", res.train), ("val", res.val)):
        _write_list(w, f"{name}_{split}.txt", scans, [v for v, _ in videos], [lab for _, lab in videos], data_root)
    w.text(f"{name}_labels.csv", labels_csv_text(res.classes))
    for ds, m in res.mappings.items():
        w.npy(f"{name}_to_{ds}_mapping.npy", m)
    rep = dict(res.report)
    rep["data_root"] = data_root
    rep["inputs"] = {s.name: _scan_report(s) for s in scans}
    tr, va = rep["train"], rep["val"]
    md = [f"# {name}: merge of {', '.join(rep['datasets'])}", "", f"- classes: {rep['num_classes']} "
          f"(per dataset: {rep['classes_per_dataset']})",
          f"- class renames merged: {sum(len(a) for a in rep['class_aliases_applied'].values())} "
          f"{ {k: v for k, v in rep['class_aliases_applied'].items() if v} }", "",
          "## Training videos", "",
          f"- input: {tr['total_input']} {tr['input']}",
          f"- dropped, YouTube id in a validation split (leak): {tr['dropped_leaked']} "
          f"(by the first val split containing it: {tr['dropped_leaked_by_val']})",
          f"- dropped, duplicate YouTube id with the same class: {tr['dropped_duplicate_same_class']} "
          f"(within one dataset: {tr['dropped_duplicate_same_class_within_dataset']})",
          f"- dropped, duplicate YouTube id with a different class (conflict): {tr['dropped_duplicate_conflict']}",
          f"- kept: {tr['total_kept']} {tr['kept']}", "",
          "## Validation videos", "",
          f"- input: {va['total_input']} {va['input']}",
          f"- dropped, duplicate YouTube id with the same class: {va['dropped_duplicate_same_class']}",
          f"- dropped, duplicate YouTube id with a different class (conflict): {va['dropped_duplicate_conflict']}",
          f"- kept: {va['total_kept']} {va['kept']}", "",
          f"Rules: {rep['rules']}.", ""]
    if tr["conflict_examples"] or va["conflict_examples"]:
        md += ["## Conflict examples", ""]
        for ex in tr["conflict_examples"] + va["conflict_examples"]:
            md.append(f"- {ex['youtube_id']}: kept `{ex['kept_class']}` ({ex['kept']}), dropped "
                      f"`{ex['dropped_class']}` ({ex['dropped']})")
        md.append("")
    _write_report(w, f"{name}_report", rep, "\n".join(md))
    res.report = rep
    log(f"{name}: {len(res.classes)} classes; train kept {tr['total_kept']} of {tr['total_input']} "
        f"(leaked {tr['dropped_leaked']}, duplicates {tr['dropped_duplicate_same_class']}, "
        f"conflicts {tr['dropped_duplicate_conflict']}); val kept {va['total_kept']} of {va['total_input']}")
    return res
