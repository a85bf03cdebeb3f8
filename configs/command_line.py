"""The command line's side of a config: ``--opts KEY VALUE`` pairs merged into the tree, and the glue between a
command's own flags, its ``--opts`` and the messages that name them."""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

from yacs.config import CfgNode as CN

from .checks import _shown
from .keys import ConfigError, _coerce, _get, _is_key, _section_keys, _set_by, _unknown_key, bool_word
from .original_keys import is_original_key, take_original_key


def _takes(cfg: CN, key: str) -> bool:
    """Whether --opts takes ``key``: one of the tree's keys or of the original's that it lacks."""
    return _is_key(cfg, key) or is_original_key(key)


def _merge_opts(cfg: CN, opts: Sequence[str], seen: dict) -> None:
    opts = list(opts)
    for item in opts:  # KEY=VALUE (other tools' syntax) read as a key: "odd number of items" or "unknown key"
        key, eq, value = item.partition("=")
        if eq and _takes(cfg, key):
            raise ConfigError(f"--opts takes KEY VALUE pairs, not KEY=VALUE: write {key} {value} for {item}")
    if len(opts) % 2:
        raise ConfigError(f"--opts expects KEY VALUE pairs; {_unpaired(cfg, opts)}")
    for key, value in zip(opts[0::2], opts[1::2]):
        if key == "BASE":  # read from files only: in --opts it was set and never merged
            raise ConfigError(f"--opts: BASE {value} would not be read: BASE files are merged from a config file "
                              "only; write BASE: [FILE] in the --cfg file, or give that file as --cfg")
        if is_original_key(key):  # a key of the original's defaults that this tree lacks
            take_original_key(cfg, key, value, "--opts", seen)
            continue
        parts = key.split(".")
        node = cfg
        for i, part in enumerate(parts):
            if not isinstance(node, CN):
                raise ConfigError(f"--opts: unknown config key {key} ({'.'.join(parts[:i])} is a key, not a section)")
            if part not in node:  # as for a file: the valid names where it went wrong
                raise _unknown_key("--opts", key, node, ".".join(parts[:i]), cfg)
            if i < len(parts) - 1:
                node = node[part]
        if isinstance(node[parts[-1]], CN):
            raise ConfigError(f"--opts: {key} is a section, not a key ({_section_keys(node[parts[-1]], key)})")
        node[parts[-1]] = _coerce(key, node[parts[-1]], value, "--opts", seen.get(key))
        _set_by(seen, key, "--opts")


def _unpaired(cfg: CN, opts: list[str]) -> str:
    """Which item of an odd-numbered ``opts`` lacks its value: the first key followed by another key, or the last
    item; otherwise the first item read as a key that is none (a key or a value is missing before it)."""
    for i in range(0, len(opts), 2):
        if not _takes(cfg, opts[i]):
            after = f"after {opts[i - 2]} {opts[i - 1]}" if i else "the first item"
            return f"{opts[i]!r} ({after}) stands where a key is expected: a key or a value is missing before it"
        if i + 1 == len(opts):
            return f"{opts[i]} has no value (it is the last item)"
        if _takes(cfg, opts[i + 1]) and not (_is_key(cfg, opts[i]) and isinstance(_get(cfg, opts[i]), str)):
            return f"{opts[i]} has no value (the next item, {opts[i + 1]}, is a key)"
    return f"got an odd number of items: {opts}"  # not reached: an odd list ends on a key or stops above


def opts_last(parser, argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--opts KEY VALUE ...`` moved to the end, for a ``parser`` that declares ``--opts`` with
    ``nargs=argparse.REMAINDER``: the pairs run up to the next flag of ``parser``, so flags may follow them. (With
    ``nargs="*"`` a value such as -1e-6 is not a negative number to argparse and would be taken for a flag.)
    Several ``--opts`` groups (one added to a script's command) are joined in their order, so the last value of a
    key wins; moved one by one, the later group took the flags after it for pairs."""
    flags = {s for a in parser._actions for s in a.option_strings}
    # --opt and --op are --opts to argparse, which then took the flags after the pairs for pairs
    argv = ["--opts" if _abbreviates_opts(parser, flags, item) else item for item in argv]
    if "--opts" not in argv:
        return argv
    rest, pairs, k = [], [], 0
    while k < len(argv):
        if argv[k] != "--opts":
            rest.append(argv[k])
            k += 1
            continue
        j = next((m for m in range(k + 1, len(argv)) if argv[m].split("=")[0] in flags), len(argv))
        pairs += argv[k + 1:j]
        k = j
    return rest + ["--opts"] + pairs


def _abbreviates_opts(parser, flags: set[str], item: str) -> bool:
    """Whether argparse reads ``item`` as ``--opts`` abbreviated: the one flag of ``parser`` it begins."""
    return (parser.allow_abbrev and item.startswith("--") and item not in flags
            and [f for f in flags if f.startswith(item)] == ["--opts"])


def flags_then_opts(flags: dict[str, str], args: Any) -> tuple[list[tuple[str, str, str]], list[str]]:
    """A command's flags (``{config key: flag}``, read from the parsed ``args``; None or False: not given) as
    ``(flag, key, value)`` for :func:`load_config`, which applies ``args.opts`` after them (so they win, as
    documented), and a note for each flag that ``--opts`` overrides with another value (``--only_test`` with
    ``--opts TEST.ONLY_TEST False`` trains)."""
    values = {key: (flag, getattr(args, flag.lstrip("-").replace("-", "_"))) for key, flag in flags.items()}
    given = {key: (flag, str(value)) for key, (flag, value) in values.items()
             if value is not None and value is not False}
    opts = list(args.opts or [])
    by_opts = dict(zip(opts[0::2], opts[1::2]))  # a key given twice: its last value, the one applied
    # a switch's True is also given as true or yes (as a YAML file writes it): the same value, no note
    same = {key for key, (_, value) in given.items() if key in by_opts
            and (by_opts[key] == value or value == "True" and bool_word(by_opts[key]) is True)}
    notes = [f"note: {flag}{'' if value == 'True' else ' ' + value} is overridden by --opts {key} {by_opts[key]}"
             for key, (flag, value) in given.items() if key in by_opts and key not in same]
    return [(flag, key, value) for key, (flag, value) in given.items()], notes


def as_typed(message: object, flags: Iterable[tuple[str, str, str]], opts: Sequence[str] = ()) -> str:
    """``message`` (an error naming config keys as ``KEY = value``, as the engine's checks of files and folders
    do) with each key that one of the command's ``flags`` (``(flag, key, value)``, :func:`flags_then_opts`) set,
    and ``opts`` did not set again, named as the user typed it: ``--pretrained w.pth (MODEL.PRETRAINED)``."""
    text, later = str(message), set(list(opts)[0::2])
    for flag, key, value in flags:
        if key in later:
            continue
        shown = _shown(key, True if value == "True" else value, flag)
        for spelled in dict.fromkeys((value, repr(value))):  # a path as is; a value of validate() as repr
            text = re.sub(rf"(?<![\w.]){re.escape(key)} = {re.escape(spelled)}(?=$|[\s:;,)])",
                          lambda _: shown, text)
    return text
