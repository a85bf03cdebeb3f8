"""The checks of a merged config's values: allowed choices, ranges, and keys that must agree."""

from __future__ import annotations

import difflib
import math
from typing import Any

from yacs.config import CfgNode as CN

from .keys import ConfigError, _get, _leaves

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
    "MODEL.ATTN_DROP_RATE", "TRAIN.EPOCHS", "TRAIN.WARMUP_EPOCHS", "TRAIN.WEIGHT_DECAY",
    "TRAIN.LR", "TRAIN.WARMUP_START_LR", "TRAIN.LR_MIN", "TRAIN.CLIP_GRAD", "AUG.LABEL_SMOOTH", "AUG.MIXUP",
    "AUG.CUTMIX", "TEST.EVAL_FREQ", "TEST.FINAL_NUM_CLIP", "SAVE_STEPS", "SAVE_MINUTES",
    # the original's keys first: mapped onto the two after them, a value of theirs is named as the user wrote it
    "MYCLIP.FT_FRAMES", "MYCLIP.FT_IMAGE_SIZE", "MODEL.PRETRAINED_FRAMES", "MODEL.PRETRAINED_INPUT_SIZE",
)
# DALI aborts the whole process ("terminate called", exit status 134) when it cannot start the threads asked for:
# 32768 did on a 2-core, 23 GiB machine, where 16384 still ran. Far above any machine's cores, and well below that.
MAX_DALI_THREADS = 1024
_DALI_THREAD_COUNTS = ("DATA.NUM_THREADS", "DATA.NVDEC_THREADS")
# Learning-rate keys: AdamW at a learning rate of 1 or more only diverges, so such a value is a typo.
_LEARNING_RATES = ("TRAIN.LR", "TRAIN.WARMUP_START_LR", "TRAIN.LR_MIN")
# The data order, augmentation and mixup draw from 32-bit seeds: a larger SEED would alias a smaller one.
_SEED_LIMIT = 2**32
# Keys that are probabilities.
_PROBABILITIES = ("AUG.COLOR_JITTER", "AUG.GRAY_SCALE", "AUG.FLIP", "AUG.MIXUP_SWITCH_PROB",
                  "DATA.CPU_ROUTE_MAX_SHARE", "MODEL.DROP_RATE", "MODEL.ATTN_DROP_RATE")


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
    if value == "" and "" not in choices:  # None and null in a file or --opts empty a string key (keys._unset)
        named = f"{source} ({key})" if _is_flag(source) else key
        raise ConfigError(f"{named} cannot be empty (None and null empty it): choose one of "
                          f"{', '.join(repr(c) for c in choices)}")
    if value not in choices:
        raise ConfigError(f"{_shown(key, value, source)} is not one of {', '.join(repr(c) for c in choices)}")


# The model presets' names and patch sizes (models.factory.ARCHS; configs imports nothing of the model package, so
# they are repeated here, and a test keeps the two alike): a typo, or an input size no patch grid fits, is refused
# with the config's other values, before a run looks for its files.
MODEL_PATCH_SIZES = {"eva-1b/14": 14, "eva-l/14": 14, "eva-b/16": 16, "eva-s/16": 16, "eva-tiny/16": 16,
                     "eva-tiny/8": 8}
MODEL_ARCHS = tuple(MODEL_PATCH_SIZES)


def _check_arch(arch: str, source: str | None) -> None:
    if arch in MODEL_ARCHS:
        return
    close = difflib.get_close_matches(arch.lower(), MODEL_ARCHS, n=1, cutoff=0.6)
    where = f"from {source}" if source else "the default"
    guess = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"MODEL.ARCH {arch!r} is not a known preset; choose one of {sorted(MODEL_ARCHS)} "
                      f"({where}{guess})")


def check_patch_size(arch: str, size: int, patch: int) -> None:
    """Raise ConfigError unless DATA.INPUT_SIZE ``size`` divides into the ``patch``-px patches of MODEL.ARCH
    ``arch``; the message names both and the nearest sizes that do."""
    if size % patch:
        near = [s for s in (size // patch * patch, (size // patch + 1) * patch) if s > 0]  # 0 is no size
        raise ConfigError(f"DATA.INPUT_SIZE {size} is not divisible by the patch size {patch} of MODEL.ARCH {arch!r} "
                          f"(e.g. use {' or '.join(map(str, near))})")


def _check_nvdec_codecs(codecs) -> None:
    # The NVDEC support table's codec names (dali_pipelines.nvdec_support.NVDEC_LIMITS); configs imports nothing
    # of the data package, so the names are repeated here.
    known = ("h264", "hevc", "vp9", "vp8", "mpeg4", "av1")
    unknown = [c for c in codecs if str(c).lower() not in known]
    if unknown:
        raise ConfigError(f"DATA.NVDEC_CODECS = {list(codecs)!r} names codecs NVDEC does not decode: "
                          f"{', '.join(map(str, unknown))} (known: {', '.join(known)})")


def _check_crop_sides(scales, input_size: int) -> None:
    """A scale whose crop side rounds to 0 px gave an empty crop window: the run trained on blank clips without
    a word. The sides are those of dali_pipelines.augment.multiscale_crop (configs imports nothing of the data
    package): int(short * s) of the short side int(INPUT_SIZE * 256 / 224), a side within 3 px of INPUT_SIZE
    snapped to it."""
    short = int(input_size * 256 / 224)
    empty = [s for s in scales if int(short * s) < 1 and abs(int(short * s) - input_size) >= 3]
    if empty:
        raise ConfigError(f"AUG.CROP_SCALES = {tuple(scales)!r}: {', '.join(map(str, empty))} of the {short}-px "
                          f"short side (DATA.INPUT_SIZE {input_size} x 256/224) is a 0-px crop; use scales of at "
                          f"least 1/{short} (the recipes use 0.66 to 1.0)")


def _check_lr_schedule(cfg: CN, given) -> None:
    """A training run's peak LR, its warmup's start and its cosine's end: the schedule goes from WARMUP_START_LR to
    TRAIN.LR to TRAIN.LR_MIN whatever their order, so an LR_MIN above LR raised the LR for the whole run (and a
    WARMUP_START_LR above LR lowered it in the warmup), and LR 0 gave every step (and AdamW's decoupled weight decay,
    which scales with it) nothing to do. ``given``: a key as the messages name it, with its source."""
    if cfg.TRAIN.LR == 0:
        raise ConfigError(f"{given('TRAIN.LR')} leaves the weights unchanged (every AdamW step, weight decay "
                          "included, scales with it): set the peak LR above 0 (the recipes use 1e-6 to 1e-3), or "
                          "evaluate weights with --only_test")
    if cfg.TRAIN.LR_MIN > cfg.TRAIN.LR:
        raise ConfigError(f"{given('TRAIN.LR_MIN')} is above {given('TRAIN.LR')}: the cosine would raise the LR "
                          "to it instead of lowering it; set TRAIN.LR_MIN at most TRAIN.LR (0: TRAIN.LR / 100)")
    if cfg.TRAIN.WARMUP_EPOCHS > 0 and cfg.TRAIN.WARMUP_START_LR > cfg.TRAIN.LR:
        raise ConfigError(f"{given('TRAIN.WARMUP_START_LR')} is above {given('TRAIN.LR')}: the warmup would lower "
                          "the LR from it instead of raising it to TRAIN.LR; set TRAIN.WARMUP_START_LR at most "
                          "TRAIN.LR, or TRAIN.WARMUP_EPOCHS 0")


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
    _check_arch(cfg.MODEL.ARCH, (sources or {}).get("MODEL.ARCH"))
    for key in _CHOICES:
        check_choice(key, _get(cfg, key), (sources or {}).get(key))
    for key in _POSITIVE:
        if _get(cfg, key) < 1:
            raise ConfigError(f"{shown(key)} must be at least 1")
    # At load, not only when the model is built. A config that leaves MODEL.ARCH at its default may feed a loader
    # alone (a loader benchmark, a list check), whose DATA.INPUT_SIZE no model takes: the model build refuses that.
    if "MODEL.ARCH" in (sources or {}):
        check_patch_size(cfg.MODEL.ARCH, cfg.DATA.INPUT_SIZE, MODEL_PATCH_SIZES[cfg.MODEL.ARCH])
    for key in _DALI_THREAD_COUNTS:
        if _get(cfg, key) > MAX_DALI_THREADS:
            raise ConfigError(f"{shown(key)} is more threads than DALI can start: at most {MAX_DALI_THREADS} are "
                              "taken (more exhaust the threads a process may start, and DALI aborts it); the "
                              "defaults are 4 and 8")
    # Before the sign check, so that -1 gets this message too. Else the run took itself for a finished one: it
    # tested its initial weights and said its summary was missing. An evaluation (TEST.ONLY_TEST) trains nothing.
    if not cfg.TEST.ONLY_TEST and cfg.TRAIN.EPOCHS < 1:
        raise ConfigError(f"{given('TRAIN.EPOCHS')} leaves a training run nothing to train: set it to at least 1, "
                          "or evaluate weights with --only_test (--resume FILE or MODEL.PRETRAINED)")
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
    # AdamW's decay is decoupled from the gradient: every step multiplies each decayed weight by 1 - lr x decay, at
    # any lr of the schedule (at most TRAIN.LR, itself below 1). At 1 or more (a typo like 5 for 5e-2) the weights
    # shrank towards 0 whatever they learnt, without a word. An evaluation decays nothing.
    if not cfg.TEST.ONLY_TEST and cfg.TRAIN.WEIGHT_DECAY >= 1.0:
        raise ConfigError(f"{shown('TRAIN.WEIGHT_DECAY')} is not a usable AdamW weight decay (must be below 1: "
                          "each step shrinks the decayed weights by its LR x TRAIN.WEIGHT_DECAY of themselves, "
                          "whatever the gradient; the recipes use 0.05)")
    if not cfg.TEST.ONLY_TEST:
        _check_lr_schedule(cfg, given)
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
    if cfg.TRAIN.EMA and cfg.TRAIN.EMA_DECAY == 1.0 and not cfg.TEST.ONLY_TEST:
        # timm's average keeps decay x itself: at 1 it never leaves the first step's weights, and every validation,
        # best.pth included, scored those
        raise ConfigError(f"{given('TRAIN.EMA_DECAY')} with TRAIN.EMA True keeps the average at the first step's "
                          "weights, which every validation would score: use a decay below 1 (e.g. 0.9999), or "
                          "TRAIN.EMA False")
    if cfg.TRAIN.EPS <= 0:
        raise ConfigError(f"TRAIN.EPS = {cfg.TRAIN.EPS!r} must be positive")
    # The deepest block drops its residual branches with probability DROP_PATH_RATE (linspace(0, rate, depth)): at 1
    # they were always dropped and never trained.
    if not 0.0 <= cfg.MODEL.DROP_PATH_RATE < 1.0:
        raise ConfigError(f"{shown('MODEL.DROP_PATH_RATE')} must be in [0, 1) (at 1 the deepest block's residual "
                          "branches are always dropped and never train; the recipes use 0.2 and 0.3)")
    if not 0.0 <= cfg.AUG.LABEL_SMOOTH < 1.0:
        raise ConfigError(f"AUG.LABEL_SMOOTH = {cfg.AUG.LABEL_SMOOTH!r} must be in [0, 1)")
    if len(cfg.TRAIN.BETAS) != 2 or not all(0.0 <= b < 1.0 for b in cfg.TRAIN.BETAS):
        raise ConfigError(f"TRAIN.BETAS = {cfg.TRAIN.BETAS!r} must be two numbers in [0, 1)")
    if not cfg.AUG.CROP_SCALES:  # "fractions in (0, 1]" read as if one of them were wrong
        raise ConfigError(f"AUG.CROP_SCALES = {cfg.AUG.CROP_SCALES!r} is empty: it needs at least one scale, a "
                          "fraction in (0, 1] of the short side (the default (1.0, 0.875, 0.75, 0.66); (1.0,) for "
                          "no multi-scale crop)")
    if not all(0.0 < s <= 1.0 for s in cfg.AUG.CROP_SCALES):
        raise ConfigError(f"AUG.CROP_SCALES = {cfg.AUG.CROP_SCALES!r} must be fractions in (0, 1]")
    _check_crop_sides(cfg.AUG.CROP_SCALES, cfg.DATA.INPUT_SIZE)
    _check_nvdec_codecs(cfg.DATA.NVDEC_CODECS)
    if cfg.MODEL.CLASS_MAPPING and cfg.MODEL.PRETRAINED_MODE != "eva_k722":
        raise ConfigError("MODEL.CLASS_MAPPING is only used with MODEL.PRETRAINED_MODE 'eva_k722'")
