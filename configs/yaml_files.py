"""Reading a config's YAML file (and its BASE files) into the tree: a key set twice in one mapping, a parse error
or an unknown key fails naming the file and the line or key."""

from __future__ import annotations

import datetime
import io
import os
from typing import Any

import yaml
from yacs.config import CfgNode as CN

from evautil.errors import not_utf8_line
from evautil.files import file_head, naming_the_file
from evautil.text import text_lines
from evautil.zip_check import _is_torch_file

from .keys import ConfigError, _coerce, _name_item_problem, _section_keys, _set_by, _unknown_key, with_leading_zeros
from .original_keys import is_original_key, take_original_key


def _merge_dict(cfg: CN, data: dict, source: str, prefix: str = "", seen: dict | None = None,
                root: CN | None = None, written: dict | None = None) -> None:
    """Merge ``data`` into ``cfg`` (the section ``prefix`` of the tree ``root``); ``seen`` maps every key set so far
    to where it was set; ``written``: each key's unquoted value (a list's items) as the file writes it
    (:func:`_load_yaml`)."""
    root = cfg if root is None else root
    for name, value in data.items():
        key = f"{prefix}{name}"
        if is_original_key(key, value):  # a key of the original's defaults that this tree lacks
            take_original_key(root, key, value, source, {} if seen is None else seen)
            continue
        if name not in cfg:
            raise _unknown_key(source, key, cfg, prefix.rstrip("."), root)
        default = cfg[name]
        if isinstance(default, CN):
            if value is None:  # a section left empty (every key under it commented out) sets none, as an empty file
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {key} is a section; expected a mapping, got {value!r} "
                                  f"({_section_keys(default, key)})")
            _merge_dict(default, value, source, key + ".", seen, root, written)
        else:
            text = (written or {}).get(key)
            # a name YAML reads as a number or a date (OUTPUT: 2024.10 is 2024.1, 2024-10-01 a date): kept as written
            if isinstance(default, str) and isinstance(value, (int, float, datetime.date)) and text is not None:
                value = text
            if isinstance(value, int) and with_leading_zeros(text):  # YAML 1.1 reads 010 as octal 8
                value = text
            cfg[name] = _coerce(key, default, value, source, (seen or {}).get(key), written=text)
            if seen is not None:
                _set_by(seen, key, source)


def _load_yaml(text: str, path: str, written: dict | None = None) -> Any:
    """``yaml.safe_load(text)`` of the file ``path``, except that a key set twice in one mapping is a ConfigError
    naming both lines (a YAML parser keeps the last value silently); ``written`` receives each dotted key's unquoted
    value as the text writes it (a list's: each item's, None for a quoted one)."""
    stream = io.StringIO(text)
    stream.name = path  # for the parser's own messages, as when it reads the file
    loader = yaml.SafeLoader(stream)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_unique_keys(node, path, "", set(), text, {} if written is None else written)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _editor_place(mark: yaml.Mark, text: str) -> tuple[int, int]:
    """1-based line and column of ``mark`` in ``text`` as an editor shows them (:func:`evautil.text.text_lines`):
    YAML 1.1, which PyYAML reads, also ends a line at U+0085, U+2028 and U+2029, so its own numbers named a later
    line than the one at fault."""
    before = text_lines(text[:mark.index] + "?")  # "?": where the mark is
    return len(before), len(before[-1])


def _check_unique_keys(node: yaml.Node, path: str, prefix: str, visited: set, text: str, written: dict) -> None:
    if id(node) in visited:  # an anchor used again (or within itself)
        return
    visited.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_unique_keys(item, path, prefix, visited, text, written)
    elif isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = _editor_place(key_node.start_mark, text)[0]
            if name is not None and name in first_line:
                raise ConfigError(f"{path}: key {prefix}{name} is set twice, on line {first_line[name]} and on "
                                  f"line {line}; keep one")
            if name is not None:
                first_line[name] = line
                if isinstance(value_node, yaml.ScalarNode) and value_node.style is None:  # plain: not quoted
                    written[prefix + name] = value_node.value
                elif isinstance(value_node, yaml.SequenceNode):  # each item's text, None where quoted or no scalar
                    written[prefix + name] = [item.value if isinstance(item, yaml.ScalarNode) and item.style is None
                                              else None for item in value_node.value]
            _check_unique_keys(value_node, path, f"{prefix}{name}." if name is not None else prefix, visited, text,
                               written)


def _yaml_error_line(e: yaml.YAMLError, text: str) -> str:
    """The parser's message on one line: where it is in ``text`` (:func:`_editor_place`), what is wrong there and
    what it was reading."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None)
    if mark is None or not problem:
        return " ".join(str(e).split())
    context = getattr(e, "context", None)
    line, column = _editor_place(mark, text)
    hint = "; use spaces there, not a tab" if "'\\t'" in problem else ""  # the parser names the tab only
    return f"line {line}, column {column}: {problem}" + (f" ({context})" if context else "") + hint


# The folder of the project's own configs (demo.yaml, the recipes), named when a --cfg is not found.
CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


def _where_else(path: str) -> list[str]:
    """Notes for a missing config ``path``: the folder a relative path was looked for in (--cfg configs/demo.yaml run
    from another folder), and the project's config of that name, where there is one."""
    notes = [] if os.path.isabs(path) else [f"looked for in {os.getcwd()}"]
    shipped = os.path.join(CONFIG_DIR, os.path.basename(path))
    if os.path.isfile(shipped):  # the missing path is not that file, which exists
        notes.append(f"the project's {os.path.basename(path)} is {shipped}")
    return notes


def _in_base_of(chain: tuple[str, ...]) -> str:
    """Where a BASE entry was found: each file whose BASE led to it, the nearest first ("" for --cfg itself)."""
    return ", ".join(f"in BASE of {file}" for file in reversed(chain))


def _merge_file(cfg: CN, path: str, seen: dict, chain: tuple[str, ...] = ()) -> None:
    """Merge the file ``path`` and, first, its BASE files; ``chain``: the files whose BASE led here."""
    path = os.path.expanduser(path)  # ~ as the shell reads it: --cfg=~/x.yaml, or a BASE entry
    named = f" ({_in_base_of(chain)})" if chain else ""  # a BASE entry is found in another file than --cfg
    if os.path.isdir(path):
        raise ConfigError(f"config file {path} is a folder, not a YAML file{named}")
    if not os.path.isfile(path):
        notes = ([_in_base_of(chain)] if chain else []) + _where_else(path)
        raise ConfigError(f"config file not found: {path}" + (f" ({'; '.join(notes)})" if notes else ""))
    # By the file reached, not its name: a linked folder (sub -> .) named the same file by ever longer paths
    same = [file for file in chain if os.path.realpath(file) == os.path.realpath(path)]
    if same:
        linked = os.path.abspath(path) != os.path.abspath(same[0])
        through = f" ({path} is {same[0]}, through a symbolic link)" if linked else ""
        raise ConfigError(f"{path}: BASE files form a cycle: {' -> '.join((*chain, path))}{through}")
    if len(chain) > 8:
        raise ConfigError(f"{path}: BASE files nest more than 8 deep")
    with open(path, encoding="utf-8") as f, naming_the_file(path):  # a failed read names the config file
        try:
            text = f.read()
        except UnicodeDecodeError as e:
            if _is_torch_file(file_head(path, 4)[0]):  # --cfg best.pth: "not UTF-8 text" said not what it is
                raise ConfigError(f"{path}{named}: looks like a checkpoint (it begins as torch.save's zip archive or "
                                  "pickle), not a YAML config: give it to --resume, or set MODEL.PRETRAINED to it, "
                                  "and a YAML file to --cfg") from None
            raise ConfigError(f"{path}{named}, {not_utf8_line(path, e)}") from None
    try:
        written: dict = {}
        data = _load_yaml(text, path, written) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}{named}: not valid YAML: {_yaml_error_line(e, text)}") from None
    if not isinstance(data, dict):
        kind = {"str": "plain text", "list": "a list", "int": "a number", "float": "a number"}.get(
            type(data).__name__, type(data).__name__)
        raise ConfigError(f"{path}{named}: expected a mapping of config keys at the top level, got {kind}: write one "
                          "'KEY: value' per line, a section's keys indented under it ('TRAIN:', '  LR: 1e-4')")
    bases = data.pop("BASE", None) or []
    if isinstance(bases, str):  # one file written without the list brackets; iterating it would give characters
        bases = [bases]
    problem = _name_item_problem("BASE", bases, written.get("BASE"), path) if isinstance(bases, list) else None
    if problem:  # BASE: [base.yaml, 2024] named the whole list
        raise problem
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: BASE must be a list of config files, got {bases!r}")
    for base in bases:
        if base:
            base = os.path.join(os.path.dirname(os.path.abspath(path)), os.path.expanduser(base))
            _merge_file(cfg, base, seen, (*chain, path))
    _merge_dict(cfg, data, path, seen=seen, written=written)
