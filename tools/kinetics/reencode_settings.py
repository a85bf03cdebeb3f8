"""The settings of the re-encodes whose videos are in a --dst: the tree's own record of them, and the refusal to
resume with settings that none of them used (one tree never mixes encodings unasked; ``reencode.py`` runs)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from evautil.files import atomic_write_text

from .common import KineticsError
from .encode import EncodeSettings

__all__ = ["SETTING_FLAGS", "SETTINGS_RECORD", "earlier_settings", "write_settings_record", "same_encoding",
           "refuse_other_settings"]


# The settings that change the outputs' format (``threads`` does not), with their flags.
SETTING_FLAGS = {"short_side": "--short-side", "gop": "--gop", "crf": "--crf", "preset": "--preset",
                  "no_upscale": "--no-upscale"}


# The tree's own record of the settings of every run whose videos are in it (the report's ``settings_used``): the
# report may lie elsewhere (--report-dir), and a resume given another --report-dir, or none, found no report and
# refused nothing. Hidden, so that neither a re-encode nor the lists take it for a video or a class.
SETTINGS_RECORD = ".reencode_settings.json"


def _settings_used(path: str) -> list[dict] | None:
    """The ``settings_used`` of the record or report at ``path`` (a report written before that was kept: its run's
    ``settings``); None without a readable file."""
    try:
        with open(path, encoding="utf-8") as f:
            before = json.load(f)
        used = before["settings_used"] if "settings_used" in before else [before.get("settings") or {}]
        return [dict(e) for e in used if isinstance(e, dict)]
    except (OSError, ValueError, AttributeError, TypeError):  # none (or an unreadable one): nothing known
        return None


def earlier_settings(dst_root: str, report_path: str) -> tuple[list[dict], str]:
    """The settings of every earlier run whose videos are in the tree, and the file to see them in: the tree's
    record, or for a tree written before records were kept, the report; [] without either."""
    record_path = os.path.join(dst_root, SETTINGS_RECORD)
    recorded, reported = _settings_used(record_path), _settings_used(report_path)
    if recorded is None:
        return reported or [], report_path
    # the report, more readable, where it says the same
    return recorded, report_path if reported == recorded else record_path


def write_settings_record(dst_root: str, settings_used: list[dict]) -> None:
    """Replace the tree's record (:data:`SETTINGS_RECORD`) with ``settings_used``; none is made for a tree that
    holds no run's videos."""
    path = os.path.join(dst_root, SETTINGS_RECORD)
    if settings_used or os.path.exists(path):
        os.makedirs(dst_root, exist_ok=True)
        atomic_write_text(path, json.dumps({"settings_used": settings_used}, indent=2) + "\n")


def same_encoding(before: dict, now: dict) -> bool:
    """Whether settings ``before`` (a report's; a key it lacks is not compared) make the outputs ``now`` does."""
    return all(before[k] == now[k] for k in SETTING_FLAGS if k in before)


def refuse_other_settings(dst_root: str, seen_in: str, settings: EncodeSettings,
                           earlier: list[dict]) -> None:
    """Raise :class:`KineticsError` when ``settings`` make other outputs than every one of the ``earlier`` runs'
    (their videos in the same --dst): resuming would add an encoding to the tree. Settings that one of them used add
    none, also after a run mixed in another one on purpose."""
    now = asdict(settings)
    if not earlier or any(same_encoding(e, now) for e in earlier):
        return
    differ = []
    for k, flag in SETTING_FLAGS.items():
        values = []
        for value in (e[k] for e in earlier if k in e and e[k] != now[k]):
            values += [value] if value not in values else []
        if values:
            differ.append(f"{flag} {', '.join(map(repr, values))} before, {now[k]!r} now")
    # the tree is --dst: with --report-dir the report (named after it) lies elsewhere, and was named as the tree
    raise KineticsError(f"the videos already in {dst_root} were encoded with other settings "
                        f"({'; '.join(differ)}, see {seen_in}); resuming would add another encoding to the "
                        f"tree: give the same settings, another --dst, or --allow-other-settings to mix them")
