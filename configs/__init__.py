"""Configuration: yacs defaults (``configs/defaults.py``) + a YAML file + ``KEY VALUE`` overrides.

    from configs import load_config
    cfg = load_config("configs/k400.yaml", ["TRAIN.LR", "2e-6"])

``load_config`` differs from a plain ``CfgNode.merge_from_file`` in five ways: an unknown key fails with a
message naming the key and the file (or the command line) it came from; a key set twice in one mapping of a file
fails naming both lines; an integer given for a float key is accepted (the original K722 YAML writes
``WARMUP_EPOCHS: 5``); the original code's legacy keys are mapped (see ``_apply_legacy``); and the merged values
are validated before the config is frozen.
"""

from __future__ import annotations

import ast
import difflib
import io
import math
import os
import re
from typing import Any, Iterable, Sequence

import yaml
from yacs.config import CfgNode as CN

from evautil.errors import not_utf8_line
from evautil.files import naming_the_file
from evautil.text import text_lines

from .defaults import get_cfg_defaults

__all__ = ["ConfigError", "load_config", "get_cfg_defaults", "check_choice", "opts_last", "flags_then_opts",
           "as_typed", "CONFIG_DIR"]

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the key, value and source."""


# Values allowed for enumerated keys.
_CHOICES = {
    "DATA.DECODE_DEVICE": ("auto", "gpu", "cpu"),
    "DATA.CPU_DECODER": ("auto", "dali", "pyav"),
    "DATA.NVDEC_MAX_BIT_DEPTH": (8, 10, 12),
    "DATA.SAMPLING": ("tsn", "dense"),
    "DATA.OUTPUT_DTYPE": ("auto", "float16", "float32"),
    "MODEL.PRETRAINED_MODE": ("eva", "eva_k722"),
    "MODEL.ATTN_IMPL": ("sdpa", "math"),
    "TRAIN.LR_SCHEDULER.NAME": ("cosine",),
    "TRAIN.OPTIMIZER.NAME": ("adamw",),
    "TRAIN.FUSED_OPTIMIZER": ("auto", "torch", "apex"),
    "TRAIN.PRECISION": ("auto", "bf16", "fp16", "fp32"),
    "TRAIN.OPT_LEVEL": ("", "O0", "O1", "O2", "O3"),
    "TEST.NUM_CROP": (1, 3),
    "TEST.FINAL_NUM_CROP": (1, 3),
    "TEST.SAMPLING": ("uniform", "random"),
    "AUG.MIXUP_PARTNERS": ("random", "derangement"),
}
# Keys that must be >= 1.
_POSITIVE = (
    "DATA.INPUT_SIZE", "DATA.NUM_FRAMES", "DATA.NUM_CLASSES", "DATA.TUBELET_SIZE", "DATA.NUM_THREADS",
    "DATA.FRAME_INTERVAL", "DATA.NVDEC_THREADS", "TRAIN.BATCH_SIZE", "TRAIN.ACCUMULATION_STEPS", "TEST.NUM_CLIP",
    "TEST.BATCH_SIZE",
    "SAVE_FREQ", "KEEP_LAST", "PRINT_FREQ",
)
# Keys that must be >= 0.
_NON_NEGATIVE = (
    "DATA.NUM_WORKERS", "DATA.INDEX_WORKERS", "DATA.PREFETCH", "DATA.VIDEO_TIMEOUT_S", "MODEL.DROP_RATE",
    "MODEL.ATTN_DROP_RATE", "MODEL.DROP_PATH_RATE", "TRAIN.EPOCHS", "TRAIN.WARMUP_EPOCHS", "TRAIN.WEIGHT_DECAY",
    "TRAIN.LR", "TRAIN.WARMUP_START_LR", "TRAIN.LR_MIN", "TRAIN.CLIP_GRAD", "AUG.LABEL_SMOOTH", "AUG.MIXUP",
    "AUG.CUTMIX", "TEST.EVAL_FREQ", "TEST.FINAL_NUM_CLIP", "SAVE_STEPS", "SAVE_MINUTES", "MODEL.PRETRAINED_FRAMES",
    "MODEL.PRETRAINED_INPUT_SIZE",
)
# Learning-rate keys: AdamW at a learning rate of 1 or more only diverges, so such a value is a typo.
_LEARNING_RATES = ("TRAIN.LR", "TRAIN.WARMUP_START_LR", "TRAIN.LR_MIN")
# The data order, augmentation and mixup draw from 32-bit seeds: a larger SEED would alias a smaller one.
_SEED_LIMIT = 2**32
# Keys that are probabilities.
_PROBABILITIES = ("AUG.COLOR_JITTER", "AUG.GRAY_SCALE", "AUG.FLIP", "AUG.MIXUP_SWITCH_PROB",
                  "DATA.CPU_ROUTE_MAX_SHARE", "MODEL.DROP_RATE", "MODEL.ATTN_DROP_RATE", "MODEL.DROP_PATH_RATE")


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


def _coerce(key: str, default: Any, value: Any, source: str, origin: str | None = None) -> Any:
    """Convert ``value`` to the type of ``default``, the key's current value (set by ``origin``, None for the
    defaults), or fail naming the key, the source and where the current value came from."""
    if isinstance(value, str) and not isinstance(default, str):
        # Values from --opts arrive as strings; YAML 1.1 reads "1e-6" as a string too.
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
    expected = type(default).__name__
    if isinstance(default, bool):
        expected = "bool (True or False)"
        if isinstance(value, str) and value.lower() in ("true", "false"):  # as a YAML file reads them
            return value.lower() == "true"
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
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(default, (tuple, list)):
        numbers = bool(default) and all(isinstance(d, float) for d in default)
        if numbers:
            expected = f"{type(default).__name__} of numbers"
        if isinstance(value, str) and not numbers:
            # A list of names given bare (--opts DATA.NVDEC_CODECS h264): one item, or several separated by commas.
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, (tuple, list)):
            if not numbers:
                return type(default)(value)
            # A list of numbers (TRAIN.BETAS, AUG.CROP_SCALES): every item a number, as for a float key.
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                return type(default)(float(v) for v in value)
    else:  # pragma: no cover - every default is one of the types above
        return value
    current = f"from {origin}" if origin else "the default"
    raise ConfigError(
        f"{source}: key {key} expects a value of type {expected} (current value {default!r}, "
        f"{current}), got {value!r}"
    )


def _unknown_key(source: str, key: str, node: CN, parent: str) -> ConfigError:
    """The error for ``key``, whose part after ``parent`` is not among ``node``'s keys (the section ``parent``): the
    closest name first, as a typo (NUM_WORKER for NUM_WORKERS) is the usual cause, then every valid one."""
    name, _, rest = key[len(parent) + 1 if parent else 0:].partition(".")
    # the keys are upper case: train.lr means TRAIN.LR, and num_worker is as close to NUM_WORKERS as NUM_WORKER is
    close = difflib.get_close_matches(name.upper(), list(node.keys()), n=1, cutoff=0.6)
    if close and close[0] == name.upper() and rest and _is_key(node, f"{close[0]}.{rest.upper()}"):
        close = [f"{close[0]}.{rest.upper()}"]  # the whole key, in the right case
    guess = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
    return ConfigError(f"{source}: unknown config key {key} ({guess}valid keys under {parent or 'the top level'}: "
                       f"{', '.join(sorted(node.keys()))})")


def _merge_dict(cfg: CN, data: dict, source: str, prefix: str = "", seen: dict | None = None) -> None:
    """Merge ``data`` into ``cfg``; ``seen`` maps every key set so far to where it was set."""
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in cfg:
            raise _unknown_key(source, key, cfg, prefix.rstrip("."))
        default = cfg[name]
        if isinstance(default, CN):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {key} is a section; expected a mapping, got {value!r}")
            _merge_dict(default, value, source, key + ".", seen)
        else:
            cfg[name] = _coerce(key, default, value, source, (seen or {}).get(key))
            if seen is not None:
                seen[key] = source


def _load_yaml(text: str, path: str) -> Any:
    """``yaml.safe_load(text)`` of the file ``path``, except that a key set twice in one mapping is a ConfigError
    naming both lines (a YAML parser keeps the last value silently)."""
    stream = io.StringIO(text)
    stream.name = path  # for the parser's own messages, as when it reads the file
    loader = yaml.SafeLoader(stream)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_unique_keys(node, path, "", set(), text)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _editor_place(mark: yaml.Mark, text: str) -> tuple[int, int]:
    """1-based line and column of ``mark`` in ``text`` as an editor shows them (:func:`evautil.text.text_lines`):
    YAML 1.1, which PyYAML reads, also ends a line at U+0085, U+2028 and U+2029, so its own numbers named a later
    line than the one at fault."""
    before = text_lines(text[:mark.index] + "?")  # "?": where the mark is
    return len(before), len(before[-1])


def _check_unique_keys(node: yaml.Node, path: str, prefix: str, visited: set, text: str) -> None:
    if id(node) in visited:  # an anchor used again (or within itself)
        return
    visited.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_unique_keys(item, path, prefix, visited, text)
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
            _check_unique_keys(value_node, path, f"{prefix}{name}." if name is not None else prefix, visited, text)


def _yaml_error_line(e: yaml.YAMLError, text: str) -> str:
    """The parser's message on one line: where it is in ``text`` (:func:`_editor_place`), what is wrong there and
    what it was reading."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None)
    if mark is None or not problem:
        return " ".join(str(e).split())
    context = getattr(e, "context", None)
    line, column = _editor_place(mark, text)
    return f"line {line}, column {column}: {problem}" + (f" ({context})" if context else "")


def _merge_file(cfg: CN, path: str, seen: dict, chain: tuple[str, ...] = ()) -> None:
    """Merge the file ``path`` and, first, its BASE files; ``chain``: the files whose BASE led here."""
    named = f" (in BASE of {chain[-1]})" if chain else ""  # a BASE entry is found in another file than --cfg
    if os.path.isdir(path):
        raise ConfigError(f"config file {path} is a folder, not a YAML file{named}")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}{named}")
    if os.path.abspath(path) in map(os.path.abspath, chain):
        raise ConfigError(f"{path}: BASE files form a cycle: {' -> '.join((*chain, path))}")
    if len(chain) > 8:
        raise ConfigError(f"{path}: BASE files nest more than 8 deep")
    with open(path, encoding="utf-8") as f, naming_the_file(path):  # a failed read names the config file
        try:
            text = f.read()
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}, {not_utf8_line(path, e)}") from None
    try:
        data = _load_yaml(text, path) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_error_line(e, text)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    bases = data.pop("BASE", None) or []
    if isinstance(bases, str):  # one file written without the list brackets; iterating it would give characters
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: BASE must be a list of config files, got {bases!r}")
    for base in bases:
        if base:
            _merge_file(cfg, os.path.join(os.path.dirname(os.path.abspath(path)), base), seen, (*chain, path))
    _merge_dict(cfg, data, path, seen=seen)


def _merge_opts(cfg: CN, opts: Sequence[str], seen: dict) -> None:
    opts = list(opts)
    for item in opts:  # KEY=VALUE (other tools' syntax) read as a key: "odd number of items" or "unknown key"
        key, eq, value = item.partition("=")
        if eq and _is_key(cfg, key):
            raise ConfigError(f"--opts takes KEY VALUE pairs, not KEY=VALUE: write {key} {value} for {item}")
    if len(opts) % 2:
        raise ConfigError(f"--opts expects KEY VALUE pairs; {_unpaired(cfg, opts)}")
    for key, value in zip(opts[0::2], opts[1::2]):
        parts = key.split(".")
        node = cfg
        for i, part in enumerate(parts):
            if not isinstance(node, CN):
                raise ConfigError(f"--opts: unknown config key {key} ({'.'.join(parts[:i])} is a key, not a section)")
            if part not in node:  # as for a file: the valid names where it went wrong
                raise _unknown_key("--opts", key, node, ".".join(parts[:i]))
            if i < len(parts) - 1:
                node = node[part]
        if isinstance(node[parts[-1]], CN):
            raise ConfigError(f"--opts: {key} is a section, not a key")
        node[parts[-1]] = _coerce(key, node[parts[-1]], value, "--opts", seen.get(key))
        seen[key] = "--opts"


def _unpaired(cfg: CN, opts: list[str]) -> str:
    """Which item of an odd-numbered ``opts`` lacks its value: the first key followed by another key, or the last
    item; otherwise the first item read as a key that is none (a key or a value is missing before it)."""
    for i in range(0, len(opts), 2):
        if not _is_key(cfg, opts[i]):
            after = f"after {opts[i - 2]} {opts[i - 1]}" if i else "the first item"
            return f"{opts[i]!r} ({after}) stands where a key is expected: a key or a value is missing before it"
        if i + 1 == len(opts):
            return f"{opts[i]} has no value (it is the last item)"
        if _is_key(cfg, opts[i + 1]) and not isinstance(_get(cfg, opts[i]), str):
            return f"{opts[i]} has no value (the next item, {opts[i + 1]}, is a key)"
    return f"got an odd number of items: {opts}"  # not reached: an odd list ends on a key or stops above


def _apply_legacy(cfg: CN, seen: dict) -> None:
    """Map the original code's keys onto ours (only where the user set them)."""
    for name in ("USE_MEAN_POOLING", "STOP_GRAD_CONV1"):
        if f"MYCLIP.{name}" in seen and f"MODEL.{name}" not in seen:
            cfg.MODEL[name] = cfg.MYCLIP[name]
    # The original read MODEL.PRETRAINED's grid from FT_FRAMES / FT_IMAGE_SIZE (and asserted it against the table).
    for legacy, key in (("FT_FRAMES", "PRETRAINED_FRAMES"), ("FT_IMAGE_SIZE", "PRETRAINED_INPUT_SIZE")):
        if f"MYCLIP.{legacy}" in seen and f"MODEL.{key}" not in seen:
            cfg.MODEL[key] = cfg.MYCLIP[legacy]
    if cfg.TRAIN.OPT_LEVEL == "O0" and cfg.TRAIN.PRECISION == "auto":
        cfg.TRAIN.PRECISION = "fp32"


def _leaves(node: CN, prefix: str = "") -> Iterable[tuple[str, Any]]:
    for name, value in node.items():
        if isinstance(value, CN):
            yield from _leaves(value, f"{prefix}{name}.")
        else:
            yield prefix + name, value


def _check_finite(cfg: CN) -> None:
    """Every float (alone or in a tuple) must be finite: "1e999" parses as inf and would train with it."""
    for key, value in _leaves(cfg):
        values = value if isinstance(value, (tuple, list)) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ConfigError(f"{key} = {value!r} is not a finite number")


def check_choice(key: str, value: Any, source: str | None = None) -> None:
    """Raise ConfigError unless ``value`` is allowed for the enumerated ``key`` (e.g. DATA.DECODE_DEVICE);
    ``source``: where the value was set (a flag is named as typed)."""
    choices = _CHOICES[key]
    if value not in choices:
        raise ConfigError(f"{_shown(key, value, source)} is not one of {', '.join(repr(c) for c in choices)}")


def _check_nvdec_codecs(codecs) -> None:
    # The NVDEC support table's codec names (dali_pipelines.nvdec_support.NVDEC_LIMITS); configs imports nothing
    # of the data package, so the names are repeated here.
    known = ("h264", "hevc", "vp9", "vp8", "mpeg4", "av1")
    unknown = [c for c in codecs if str(c).lower() not in known]
    if unknown:
        raise ConfigError(f"DATA.NVDEC_CODECS = {list(codecs)!r} names codecs NVDEC does not decode: "
                          f"{', '.join(map(str, unknown))} (known: {', '.join(known)})")


def _is_flag(source: str | None) -> bool:
    """Whether ``source`` (where a key was set) is one of a command's own flags (``--batch-size``), not a file or
    ``--opts``."""
    return bool(source) and source.startswith("--") and source != "--opts"


def _shown(key: str, value: Any, source: str | None) -> str:
    """``key`` and ``value`` for a message: as the user typed them when a flag of the command set the key
    (``--batch-size 0 (TRAIN.BATCH_SIZE)``; a switch without its value), else ``KEY = value``."""
    if not _is_flag(source):
        return f"{key} = {value!r}"
    return f"{source}{'' if isinstance(value, bool) else f' {value}'} ({key})"


def validate(cfg: CN, sources: dict | None = None) -> None:
    """Raise ConfigError for values no run can use; the message names the key and the value (and, for a conflict
    between two keys, where each value came from: ``sources`` maps a key to the file, --opts or flag that set it;
    a value a command's flag set is named by that flag, as typed)."""

    def shown(key: str) -> str:
        return _shown(key, _get(cfg, key), (sources or {}).get(key))

    def given(key: str) -> str:
        where = (sources or {}).get(key)
        if _is_flag(where):
            return shown(key)
        return f"{key} = {_get(cfg, key)!r} ({f'from {where}' if where else 'the default'})"

    _check_finite(cfg)
    for key in _CHOICES:
        check_choice(key, _get(cfg, key), (sources or {}).get(key))
    for key in _POSITIVE:
        if _get(cfg, key) < 1:
            raise ConfigError(f"{shown(key)} must be at least 1")
    for key in _NON_NEGATIVE:
        if _get(cfg, key) < 0:
            raise ConfigError(f"{shown(key)} must not be negative")
    for key in _PROBABILITIES:
        if not 0.0 <= _get(cfg, key) <= 1.0:
            raise ConfigError(f"{shown(key)} must be a probability in [0, 1]")
    for key in _LEARNING_RATES:
        if _get(cfg, key) >= 1.0:
            raise ConfigError(f"{shown(key)} is not a usable AdamW learning rate (must be below 1; "
                              "the recipes use 1e-6 to 1e-3)")
    if not 0 <= cfg.SEED < _SEED_LIMIT:
        raise ConfigError(f"SEED = {cfg.SEED} must be in [0, 2**32 - 1] (data order, augmentation and mixup "
                          "use 32-bit seeds)")
    if cfg.DATA.NUM_FRAMES % cfg.DATA.TUBELET_SIZE:
        raise ConfigError(
            f"DATA.NUM_FRAMES = {cfg.DATA.NUM_FRAMES} must be a multiple of DATA.TUBELET_SIZE = {cfg.DATA.TUBELET_SIZE}"
        )
    if cfg.TRAIN.WARMUP_EPOCHS > cfg.TRAIN.EPOCHS > 0:
        raise ConfigError(f"{given('TRAIN.WARMUP_EPOCHS')} exceeds {given('TRAIN.EPOCHS')}: lower "
                          "TRAIN.WARMUP_EPOCHS too")
    # 0 would not mean "off" here (as it does for TRAIN.CLIP_GRAD): every layer below the head would get LR 0, and a
    # negative factor gives every other block a negative LR; above 1 the factor was silently ignored.
    if not 0.0 < cfg.TRAIN.LAYER_WISE_DECAY <= 1.0:
        raise ConfigError(f"TRAIN.LAYER_WISE_DECAY = {cfg.TRAIN.LAYER_WISE_DECAY!r} must be in (0, 1] (1: no "
                          "layer-wise decay; 0 would freeze every layer below the head)")
    if not 0.0 <= cfg.TRAIN.EMA_DECAY <= 1.0:
        raise ConfigError(f"TRAIN.EMA_DECAY = {cfg.TRAIN.EMA_DECAY!r} must be in [0, 1]")
    if cfg.TRAIN.EPS <= 0:
        raise ConfigError(f"TRAIN.EPS = {cfg.TRAIN.EPS!r} must be positive")
    if not 0.0 <= cfg.AUG.LABEL_SMOOTH < 1.0:
        raise ConfigError(f"AUG.LABEL_SMOOTH = {cfg.AUG.LABEL_SMOOTH!r} must be in [0, 1)")
    if len(cfg.TRAIN.BETAS) != 2 or not all(0.0 <= b < 1.0 for b in cfg.TRAIN.BETAS):
        raise ConfigError(f"TRAIN.BETAS = {cfg.TRAIN.BETAS!r} must be two numbers in [0, 1)")
    if not cfg.AUG.CROP_SCALES or not all(0.0 < s <= 1.0 for s in cfg.AUG.CROP_SCALES):
        raise ConfigError(f"AUG.CROP_SCALES = {cfg.AUG.CROP_SCALES!r} must be fractions in (0, 1]")
    _check_nvdec_codecs(cfg.DATA.NVDEC_CODECS)
    if cfg.MODEL.CLASS_MAPPING and cfg.MODEL.PRETRAINED_MODE != "eva_k722":
        raise ConfigError("MODEL.CLASS_MAPPING is only used with MODEL.PRETRAINED_MODE 'eva_k722'")


def load_config(path: str | None = None, opts: Iterable[str] = (), freeze: bool = True,
                flags: Iterable[tuple[str, str, str]] = ()) -> CN:
    """Defaults <- YAML file (with its BASE files) <- a command's ``flags`` <- ``KEY VALUE`` overrides; legacy keys
    mapped; validated. ``flags``: ``(flag, key, value)`` for each flag of the command that sets a key (see
    :func:`flags_then_opts`), so that a message about that value names the flag the user typed."""
    cfg = get_cfg_defaults()
    seen: dict = {}  # key -> the file, flag or --opts that set it
    if path:
        _merge_file(cfg, path, seen)
    for flag, key, value in flags:
        node, name = (_get(cfg, key.rsplit(".", 1)[0]), key.rsplit(".", 1)[1]) if "." in key else (cfg, key)
        node[name] = _coerce(key, node[name], value, flag, seen.get(key))
        seen[key] = flag
    _merge_opts(cfg, list(opts or ()), seen)
    _apply_legacy(cfg, seen)
    validate(cfg, seen)
    if freeze:
        cfg.freeze()
    return cfg


def opts_last(parser, argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--opts KEY VALUE ...`` moved to the end, for a ``parser`` that declares ``--opts`` with
    ``nargs=argparse.REMAINDER``: the pairs run up to the next flag of ``parser``, so flags may follow them. (With
    ``nargs="*"`` a value such as -1e-6 is not a negative number to argparse and would be taken for a flag.)
    Several ``--opts`` groups (one added to a script's command) are joined in their order, so the last value of a
    key wins; moved one by one, the later group took the flags after it for pairs."""
    argv = list(argv)
    if "--opts" not in argv:
        return argv
    flags = {s for a in parser._actions for s in a.option_strings}
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
    # a switch's True is also given as true (as a YAML file writes it): the same value, no note
    same = {key for key, (_, value) in given.items() if key in by_opts
            and (by_opts[key] == value or value == "True" and by_opts[key].lower() == "true")}
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
