"""The command-line parser of every command: a long flag may be typed with ``_`` or ``-`` alike after its leading
``--`` (``--dry_run`` is ``--dry-run``, ``--only-test`` is ``--only_test``, ``--batch_size=8`` is
``--batch-size=8``). The original EVA flags are spelled with underscores (``--only_test``, ``--local_rank``), the
project's own with hyphens, and which is which is not worth remembering. A message names a flag as the user typed it
(``argument --batch_size: invalid int value: 'x'`` after ``--batch_size x``): the parser's own errors, and any other
message through :func:`flags_as_typed`. A flag that a message offers, not typed (a flag to add), is named as the
command declares it, as ``--help`` lists it; so are the flags an ambiguous abbreviation could match, even one typed
elsewhere in the other spelling: ``ambiguous option: --num- could match --num-frames, --num-clips`` also after
``--num_frames 1``."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from typing import Any, Sequence

__all__ = ["ArgumentParser", "Namespace", "as_typed_flags", "flags_as_typed", "home_path"]


def _plain(flag: str) -> str:
    """``flag`` without its spelling: ``--dry_run`` and ``--dry-run`` are both ``--dry-run``."""
    return "--" + flag[2:].replace("_", "-")


def _spelled_as(flag: str, typed: str) -> str:
    """``flag`` with the word separator of ``typed``, an abbreviation of it: ``--only_test`` as ``--only-t`` is
    ``--only-test``."""
    for sep, other in (("_", "-"), ("-", "_")):
        if sep in typed[2:]:
            return "--" + flag[2:].replace(other, sep)
    return flag


# argparse's message for an abbreviation of several flags (the one _resolve gives too): what was typed, as typed
# (never respelled, as no flag matched it), then the candidates.
_AMBIGUOUS = re.compile(r"ambiguous option: .+ could match --.*", re.DOTALL)


# The spellings typed on the command line being parsed: a subcommand's parser, whose namespace argparse copies
# value by value (without the spellings), adds its own to those of the command's parser.
_parse_under_way: list[dict[str, str]] = []


class Namespace(argparse.Namespace):
    """argparse's Namespace that also keeps the flags typed in the other spelling (``{the parser's spelling: as
    typed}``, a subcommand's flags included), in a slot: not one of the values, so ``vars()``, ``==`` and the repr
    leave it out."""

    __slots__ = ("typed_spellings",)


_UNRECOGNIZED = "unrecognized arguments: "

# Flags of other video training tools (mmaction2's --auto-resume) that are a config key here: offered instead of
# the closest declared flag (--resume, which takes a checkpoint and does something else), by commands that
# declare the flags named (the one it would be taken for, and --opts to set the key).
_FOREIGN_FLAGS = {
    "--auto-resume": (("--resume", "--opts"), "resuming from OUTPUT's newest checkpoint is the config key "
                      "TRAIN.AUTO_RESUME (True by default; --opts TRAIN.AUTO_RESUME False starts over)"),
}


def _with_suggestions(message: str, parser: argparse.ArgumentParser) -> str:
    """argparse's "unrecognized arguments" with the declared flag each mistyped one is closest to (``--dryrun``:
    did you mean --dry-run?), its subcommands' flags included (argparse says their unknown flags at the top), or,
    for another tool's flag in :data:`_FOREIGN_FLAGS`, what this command has instead."""
    if not message.startswith(_UNRECOGNIZED):
        return message
    parsers, declared = [parser], {}
    while parsers:
        p = parsers.pop()
        for action in p._actions:
            declared.update({_plain(s): s for s in action.option_strings if s.startswith("--")})
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    hints = []
    for item in message[len(_UNRECOGNIZED):].split():
        name = item.partition("=")[0]
        needs, instead = _FOREIGN_FLAGS.get(_plain(name), ((), ""))
        if instead and all(f in declared for f in needs):
            hints.append(f"{name}: {instead}")
            continue
        close = difflib.get_close_matches(_plain(name), declared, n=1, cutoff=0.75) if name.startswith("--") else []
        if close:
            hints.append(f"{name}: did you mean {declared[close[0]]}?")
    return message + (f" ({'; '.join(hints)})" if hints else "")


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, taking each long flag in either spelling (``_`` or ``-`` between its words), also as
    ``--flag=value`` and abbreviated (as argparse abbreviates). The flag is only respelled before argparse reads it:
    ``--help`` lists the spelling the command declares, :meth:`error` (argparse's own errors too) the one typed,
    and a value is never changed (an item after ``--``, a command of a subparser and what follows it, the items a
    ``nargs=argparse.REMAINDER`` option takes, ``--flag=value``'s value)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._typed: dict[str, str] = {}  # respelled() keeps what it changed here for the next parse
        self.typed_spellings: dict[str, str] = {}  # of the last parse, for error()

    def error(self, message: str):  # type: ignore[override]
        """argparse's error (usage, ``prog: error: message``, exit code 2), each flag named as typed; an ambiguous
        abbreviation's candidates as declared (they are offered, not typed: rewriting one the user typed elsewhere
        in the other spelling mixed the two spellings in one list)."""
        super().error(self.explained(message))

    def explained(self, message: str) -> str:
        """argparse's error ``message`` as :meth:`error` says it: each flag named as typed, a mistyped flag's
        closest declared one offered."""
        return message if _AMBIGUOUS.fullmatch(message) else _with_suggestions(flags_as_typed(message, self), self)

    def respelled(self, argv: Sequence[str] | None = None) -> list[str]:
        """``argv`` (sys.argv's by default) with its flags in this parser's spelling, for ``configs.opts_last``,
        which moves ``--opts KEY VALUE ...`` (a REMAINDER option) to the end and finds the flags after the pairs by
        their exact spelling: after a REMAINDER option, the full name of a flag in the other spelling (``--opts K
        V --dry_run``) is respelled too, so that opts_last sees the flag; any other item there is a key or value
        and stays as typed."""
        self.typed_spellings = {}  # (an error on the way names no flag of an earlier parse)
        return self._respell(sys.argv[1:] if argv is None else argv, flags_in_remainder=True)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None):  # type: ignore[override]
        outer = not _parse_under_way
        self.typed_spellings = spellings = {} if outer else _parse_under_way[-1]
        args = self._respell(sys.argv[1:] if args is None else args, flags_in_remainder=False)
        spellings.update(self._typed)
        self._typed = {}
        if outer:
            _parse_under_way.append(spellings)
        try:
            parsed, extras = super().parse_known_args(args, Namespace() if namespace is None else namespace)
        finally:
            if outer:
                _parse_under_way.pop()
        if isinstance(parsed, Namespace):
            parsed.typed_spellings = spellings
        return parsed, extras

    def _respell(self, argv: Sequence[str], flags_in_remainder: bool) -> list[str]:
        flags = {s: a for a in self._actions for s in a.option_strings}
        long = {s: a for s, a in flags.items() if s.startswith("--") and len(s) > 2}
        commands = {c for a in self._actions if isinstance(a, argparse._SubParsersAction) for c in a.choices}
        out: list[str] = []
        in_remainder = False  # only with flags_in_remainder: the parse stops respelling at a REMAINDER option
        for k, item in enumerate(argv):
            if not in_remainder and (item == "--" or item in commands):  # the rest: values, or a subparser's
                return out + list(argv[k:])
            name, eq, value = item.partition("=")
            if in_remainder:  # keys and values, but for a flag: configs.opts_last ends the pairs there
                action, spelled = (flags[name], name) if name in flags else self._full_name(name, long)
            elif item.startswith("--") and len(name) > 2:
                action, spelled = self._resolve(name, long)
            else:
                action, spelled = None, name
            if action is not None:
                item = spelled + eq + value
                in_remainder = action.nargs == argparse.REMAINDER
                if in_remainder and not flags_in_remainder:
                    return out + [item] + list(argv[k + 1:])
            out.append(item)
        return out

    def _full_name(self, name: str, long: dict) -> tuple[argparse.Action | None, str]:
        """The action ``name`` names in full in the other spelling, and its declared spelling (noted, with the
        spelling typed, for the namespace)."""
        matches = [s for s in long if _plain(s) == _plain(name)] if name.startswith("--") else []
        if len({id(long[s]) for s in matches}) != 1:
            return None, name
        self._typed[matches[0]] = name
        return long[matches[0]], matches[0]

    def _resolve(self, name: str, long: dict) -> tuple[argparse.Action | None, str]:
        """The action a flag (outside a REMAINDER option's items) names, None where argparse is left to decide
        (an unknown flag, an ambiguous abbreviation), and its spelling for argparse."""
        if name in long:
            return long[name], name
        found = {id(long[s]): long[s] for s in long if s.startswith(name)} if self.allow_abbrev else {}
        if found:  # an abbreviation argparse takes already: left as typed
            return (next(iter(found.values())) if len(found) == 1 else None), name
        action, spelled = self._full_name(name, long)
        if action is not None or not self.allow_abbrev:
            return action, spelled
        matches = [s for s in long if _plain(s).startswith(_plain(name))]  # abbreviated in the other spelling
        if len({id(long[s]) for s in matches}) > 1:
            self.error(f"ambiguous option: {name} could match {', '.join(matches)}")
        if not matches:
            return None, name
        self._typed[matches[0]] = _spelled_as(matches[0], name)  # messages name it in full, as the user spells it
        return long[matches[0]], matches[0]


def home_path(text: str) -> str:
    """A path flag's ``type``: a leading ~ is the home folder. The shell expands none after ``=`` (``--out=~/x``)
    or in quotes, and the command wrote a folder named ~ in the working folder."""
    return os.path.expanduser(text)


def named_path(text: str) -> str:
    """A required path flag's ``type``: :func:`home_path`, refusing an empty or blank value, which an unset shell
    variable gives (``--cfg "$CFG"``) and which would otherwise read as "no file given"."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a file, got {text!r} (an unset shell variable?)")
    return home_path(text)


def as_typed_flags(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, str]:
    """``flags`` (``{config key: flag}``, each flag as the parser declares it) with each flag the user typed in the
    other spelling as typed, for messages that name a flag as the user typed it (``--batch_size 0
    (TRAIN.BATCH_SIZE)``)."""
    typed = getattr(args, "typed_spellings", None) or {}
    return {key: typed.get(flag, flag) for key, flag in flags.items()}


def flags_as_typed(message: object, typed: Any) -> str:
    """``message`` with each flag the user typed in the other spelling (as ``typed``, a namespace or parser of
    :class:`ArgumentParser`, records) named as typed: ``--only_test: nothing to evaluate`` after ``--only-test``.
    For messages written in the code with the declared spelling; ``typed`` None (or a namespace of argparse's
    own): the message as it is."""
    text, spellings = str(message), getattr(typed, "typed_spellings", None)
    if not spellings:
        return text
    names = "|".join(re.escape(f) for f in sorted(spellings, key=len, reverse=True))
    # a whole flag only (not --batch-size-x), each rewritten once (a parser and its subcommand may swap spellings)
    return re.sub(rf"(?<![\w-])(?:{names})(?![\w-])", lambda m: spellings[m.group(0)], text)
