"""The config tree's keys: the error every config mistake raises, looking up a dotted key, converting a value to
its key's type, and naming an unknown key with the valid ones."""

from __future__ import annotations

import ast
import difflib
import re
from typing import Any, Iterable

from yacs.config import CfgNode as CN


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the key, value and source."""


def _get(cfg: CN, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _is_key(cfg: CN, dotted: str) -> bool:
    try:
        return not isinstance(_get(cfg, dotted), CN)
    except (KeyError, TypeError):  # TypeError: a part below a value (SEED.X)
        return False


def _set_by(seen: dict, key: str, source: str) -> None:
    """Record in ``seen`` that ``source`` set ``key`` last: moved to the end, so that the order of ``seen`` is the
    order in which the keys' values were last set (a later source overrides an original key's mapping)."""
    seen.pop(key, None)
    seen[key] = source


def _leaves(node: CN, prefix: str = "") -> Iterable[tuple[str, Any]]:
    for name, value in node.items():
        if isinstance(value, CN):
            yield from _leaves(value, f"{prefix}{name}.")
        else:
            yield prefix + name, value


# The spellings of "no value": YAML's null (a file's empty value reads as None too) and Python's None, which the
# original's yacs read as None from a file and from --opts alike (it evaluated every string as a Python literal).
_NULLS = ("None", "null", "Null", "NULL", "~")


def _unset(key: str, default: Any, value: Any, source: str, origin: str | None) -> Any:
    """What None (``value``, as spelled) sets ``key`` to: its empty value where a key may be empty (a string, such as
    a path that may be unset, or a list of names), else a ConfigError naming the key."""
    if isinstance(default, str):
        return ""
    if isinstance(default, (tuple, list)) and not (default and all(isinstance(d, float) for d in default)):
        return type(default)()  # DATA.NVDEC_CODECS: empty means every codec
    current = f"from {origin}" if origin else "the default"
    kind = "tuple of numbers" if isinstance(default, tuple) else type(default).__name__
    raise ConfigError(f"{source}: key {key} cannot be unset (got {value if isinstance(value, str) else 'null'}): "
                      f"give it a value of type {kind}, or leave it out to keep {default!r} ({current})")


# A whole number written with leading zeros (SEED 0042): decimal, as the user means. Python refuses it as a literal,
# and YAML 1.1 read 010 as octal 8 (08 as a string): the file gave another value than --opts, silently.
_LEADING_ZEROS = re.compile(r"[-+]?0[0-9_]*[0-9]")


def with_leading_zeros(text: Any) -> bool:
    """Whether ``text`` is a whole number written with leading zeros (``010``), which ``_coerce`` reads as decimal."""
    return isinstance(text, str) and bool(_LEADING_ZEROS.fullmatch(text.strip())) and text.strip("+-0_ ") != ""


def _number(text: str) -> Any:
    """``text`` read as a Python literal (a number, a tuple ...), a whole number with leading zeros as decimal;
    ``text`` itself when it is none."""
    if with_leading_zeros(text):
        return int(text.strip().replace("_", ""))
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# A boolean's words, in any case: those YAML 1.1 reads as booleans in a file (yes, on ...), so that --opts, whose
# values arrive as strings, takes the same ones. 0 and 1 are not among them: a file reads them as numbers.
BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def bool_word(value: Any) -> bool | None:
    """The boolean ``value`` spells (one of :data:`BOOL_WORDS`), else None."""
    return BOOL_WORDS.get(value.strip().lower()) if isinstance(value, str) else None


def _name_item_problem(key: str, items: list, written: Any, source: str) -> ConfigError | None:
    """The error for the first item of the list of names ``items`` that is no name (a YAML file reads no, on, true,
    42 or 1.5 in a list as a boolean or a number: [h264, no] was [h264, False]), naming it as ``written`` (the
    items' texts as the file writes them, where known)."""
    texts = written if isinstance(written, list) and len(written) == len(items) else [None] * len(items)
    for item, text in zip(items, texts):
        if isinstance(item, (bool, int, float)):
            shown = text if text is not None else str(item)
            what = "a boolean" if isinstance(item, bool) else "a number"
            return ConfigError(f"{source}: key {key} lists names, and its item {shown} is read as {what} "
                               f"({item!r}): quote it ('{shown}') if it is a name, or remove it")
    return None


def _coerce(key: str, default: Any, value: Any, source: str, origin: str | None = None, written: Any = None) -> Any:
    """Convert ``value`` to the type of ``default``, the key's current value (set by ``origin``, None for the
    defaults), or fail naming the key, the source and where the current value came from. None (any of ``_NULLS``)
    unsets a key that may be empty (``_unset``). ``written``: for a list, its items' texts as a file writes them."""
    if value is None or isinstance(value, str) and value.strip() in _NULLS:
        return _unset(key, default, value, source, origin)
    if isinstance(value, str) and not isinstance(default, str):
        # Values from --opts arrive as strings; YAML 1.1 reads "1e-6" as a string too.
        value = _number(value)
    expected = type(default).__name__
    if isinstance(default, bool):
        expected = "bool (True or False; yes/no and on/off too, in any letter case, as a YAML file reads them)"
        if bool_word(value) is not None:
            return bool_word(value)
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(default, str):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(default, (tuple, list)):
        numbers = bool(default) and all(isinstance(d, float) for d in default)
        if numbers:
            expected = f"{type(default).__name__} of numbers"
        if isinstance(value, str) and not numbers:
            # A list of names given bare (--opts DATA.NVDEC_CODECS h264): one item, or several separated by commas,
            # in brackets or not (YAML's [h264, hevc], which is no Python literal, was read as the name "[h264").
            text = value.strip()
            if text[:1] + text[-1:] in ("[]", "()"):
                text = text[1:-1]
            value = [name for name in (item.strip().strip("'\"").strip() for item in text.split(",")) if name]
        if not numbers and isinstance(value, (bool, int, float)) and isinstance(written, str):
            value, written = [value], [written]  # a file's one name, unbracketed (NVDEC_CODECS: no)
        if isinstance(value, (tuple, list)):
            if not numbers:
                problem = _name_item_problem(key, list(value), written, source)
                if problem:
                    raise problem
                return type(default)(value)
            # YAML 1.1 reads 1e-3 as a string inside a list too ([0.9, 999e-3])
            value = [_number(v) if isinstance(v, str) else v for v in value]
            # A list of numbers (TRAIN.BETAS, AUG.CROP_SCALES): every item a number, as for a float key.
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                return type(default)(float(v) for v in value)
    else:  # pragma: no cover - every default is one of the types above
        return value
    current = f"from {origin}" if origin else "the default"
    # a file's yes read as True: the word the user wrote too
    as_written = f" (written {written})" if isinstance(written, str) and written != str(value) else ""
    raise ConfigError(
        f"{source}: key {key} expects a value of type {expected} (current value {default!r}, "
        f"{current}), got {value!r}{as_written}"
    )


def _unknown_key(source: str, key: str, node: CN, parent: str, root: CN | None = None) -> ConfigError:
    """The error for ``key``, whose part after ``parent`` is not among ``node``'s keys (the section ``parent`` of the
    tree ``root``): the closest name first, as a typo (NUM_WORKER for NUM_WORKERS) is the usual cause, or the key of
    that name in another section (LR under DATA: TRAIN.LR), then every valid one."""
    name, _, rest = key[len(parent) + 1 if parent else 0:].partition(".")
    # the keys are upper case: train.lr means TRAIN.LR, and num_worker is as close to NUM_WORKERS as NUM_WORKER is
    close = difflib.get_close_matches(name.upper(), list(node.keys()), n=1, cutoff=0.6)
    if close and close[0] == name.upper() and rest and _is_key(node, f"{close[0]}.{rest.upper()}"):
        close = [f"{close[0]}.{rest.upper()}"]  # the whole key, in the right case
    guess = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
    moved = _in_other_sections(root, f"{name}.{rest}" if rest else name) if root is not None else []
    if moved and not (close and close[0].split(".")[0] == name.upper()):  # a case slip in this section stays first
        guess = f"did you mean {' or '.join(moved)}? "
    written = key[len(parent) + 1 if parent else 0:]
    if close and close[0] == written:  # TRAIN.LR in a file, as --opts writes it: the guess was the key itself
        head, *parts = written.split(".")
        nested = "".join(f"{{{part}: " for part in parts) + "..." + "}" * len(parts)
        under = f" (under {parent})" if parent else ""
        return ConfigError(f"{source}: key {written}{under} is written with dots, as --opts takes it; a file nests "
                           f"each part under the one before: {head}: {nested}, or one per line, indented")
    return ConfigError(f"{source}: unknown config key {key} ({guess}valid keys under {parent or 'the top level'}: "
                       f"{', '.join(sorted(node.keys()))})")


def _in_other_sections(root: CN, name: str) -> list[str]:
    """The keys of ``root`` that end in ``name`` (any case): where a key written under the wrong section belongs.
    The original's MYCLIP keys only when no other section has the name (MODEL.USE_MEAN_POOLING, not its copy)."""
    found, name = [], name.upper()
    sections = [("", root)]
    while sections:
        prefix, node = sections.pop(0)
        if _is_key(node, name):
            found.append(prefix + name)
        sections += [(f"{prefix}{k}.", v) for k, v in node.items() if isinstance(v, CN)]
    current = [k for k in found if not k.startswith("MYCLIP.")]
    return current or found


def _section_keys(section: CN, key: str) -> str:
    """What the section ``key``, given a value as if it were a key (TRAIN.LR_SCHEDULER cosine), holds, for its
    message: a few plain keys by their whole names, to be copied; a larger section's names, as for an unknown key."""
    names = sorted(section.keys())
    if len(names) <= 3 and not any(isinstance(section[name], CN) for name in names):
        return f"its key{'s' if len(names) > 1 else ''}: {', '.join(f'{key}.{name}' for name in names)}"
    return f"keys under {key}: {', '.join(names)}"
