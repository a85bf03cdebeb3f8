"""What ``predict`` and ``extract_features`` share: the config and weights, the videos to process, the multi-view
test loader, and the forward pass that yields pooled features and logits per view.

The data pipeline is reached through one function, :func:`build_view_loader`, which calls the same public entry
point as evaluation (``dali_pipelines.loader.build_loader(cfg, 'test', ...)``) so that a prediction sees exactly
the views an evaluation run sees.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from configs import ConfigError, load_config
from engine.distributed import DistContext, barrier
from engine.evaluate import read_label_names
from models import ARCHS, CheckpointError, build_model, load_pretrained
from models.weights_file import read_weights_metadata

__all__ = ["VIDEO_EXTENSIONS", "InputError", "opts_last", "collect_videos", "load_setup", "load_model",
           "build_view_loader", "unreadable_rows", "view_outputs", "progress_bar"]

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
                    ".ts")
_LIST_EXTENSIONS = (".txt", ".lst", ".list")


class InputError(ValueError):
    """Unusable command-line input (no videos, an unreadable list, weights without a config); named in one line."""


def opts_last(parser, argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--opts KEY VALUE ...`` moved to the end, so flags may follow it (as train.py allows)."""
    argv = list(argv)
    if "--opts" not in argv:
        return argv
    flags = {s for a in parser._actions for s in a.option_strings}
    i = argv.index("--opts")
    j = next((k for k in range(i + 1, len(argv)) if argv[k].split("=")[0] in flags), len(argv))
    return argv[:i] + argv[j:] + argv[i:j]


# ---------------------------------------------------------------------------------------------------- videos
def _read_video_list(path: str, root: str) -> list[str]:
    """One video per line, relative to ``root`` (default: the list's folder). A trailing integer label, as in
    training lists, is dropped unless the whole line names an existing file."""
    base = root or os.path.dirname(os.path.abspath(path))
    out = []
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            full = os.path.join(base, line)
            tokens = line.split()
            if not os.path.exists(full) and len(tokens) > 1 and tokens[-1].lstrip("-").isdigit():
                full = os.path.join(base, " ".join(tokens[:-1]))
            out.append(os.path.abspath(full))
    return out


def collect_videos(inputs: Iterable[str], root: str = "") -> list[str]:
    """Absolute video paths from files, folders (searched recursively for video extensions) and list files
    (``.txt``/``.lst``/``.list``), in the given order, without duplicates. Paths that do not exist are kept: the
    loader reports them as unreadable with the others.

    Raises:
        InputError: nothing to process.
    """
    found: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            for folder, dirs, files in os.walk(item):
                dirs.sort()
                found += [os.path.join(folder, f) for f in sorted(files) if f.lower().endswith(VIDEO_EXTENSIONS)]
        elif item.lower().endswith(_LIST_EXTENSIONS) and os.path.isfile(item):
            found += _read_video_list(item, root)
        else:
            found.append(os.path.join(root, item) if root else item)
    unique = list(dict.fromkeys(os.path.abspath(p) for p in found))
    if not unique:
        raise InputError(f"no videos found in {', '.join(inputs) or 'the inputs'} "
                         f"(extensions {' '.join(VIDEO_EXTENSIONS)})")
    return unique


# ---------------------------------------------------------------------------------------------- config, model
def _metadata_opts(meta: dict[str, Any]) -> list[str]:
    return ["MODEL.ARCH", meta["arch"], "DATA.NUM_FRAMES", str(meta["num_frames"]), "DATA.TUBELET_SIZE",
            str(meta["tubelet_size"]), "DATA.INPUT_SIZE", str(meta["input_size"]), "DATA.NUM_CLASSES",
            str(meta["num_classes"]), "MODEL.USE_MEAN_POOLING", str(meta["use_mean_pooling"])]


def _check_metadata(cfg, meta: dict[str, Any], weights: str) -> None:
    """The config and the model file must describe the same model and the same input normalisation."""
    from dali_pipelines.augment import MEAN, STD  # numpy only, no DALI

    preset = ARCHS.get(meta["arch"])
    dims = {"embed_dim": "embed_dim", "depth": "depth", "num_heads": "num_heads", "mlp_hidden_dim": "mlp_hidden",
            "patch_size": "patch_size"}
    if preset is None or any(meta[k] != preset[p] for k, p in dims.items()):
        raise CheckpointError(f"{weights}: architecture {meta['arch']!r} with "
                              f"{ {k: meta[k] for k in dims} } is not a known MODEL.ARCH preset")
    pairs = {"MODEL.ARCH": (cfg.MODEL.ARCH, meta["arch"]), "DATA.NUM_FRAMES": (cfg.DATA.NUM_FRAMES, meta["num_frames"]),
             "DATA.INPUT_SIZE": (cfg.DATA.INPUT_SIZE, meta["input_size"]),
             "DATA.NUM_CLASSES": (cfg.DATA.NUM_CLASSES, meta["num_classes"])}
    for key, (ours, theirs) in pairs.items():
        if ours != theirs:
            raise ConfigError(f"{key} = {ours} in the config but {theirs} in {weights}; drop --cfg to use the "
                              "file's own settings")
    for name, want, have in (("mean", MEAN, meta["mean"]), ("std", STD, meta["std"])):
        if any(abs(a - b) > 1e-4 for a, b in zip(want, have)) or len(have) != len(want):
            raise CheckpointError(f"{weights}: expects inputs normalised with {name} {have}; the data pipeline "
                                  f"uses {list(want)}")


def load_setup(cfg_path: str | None, opts: Sequence[str], weights: str) -> tuple[Any, dict[int, str]]:
    """The config (from ``cfg_path``, or from the metadata of an exported ``.safetensors`` when there is none) and
    the class names (DATA.LABEL_LIST, else the file's names, else none).

    Raises:
        FileNotFoundError: the weights file does not exist.
        InputError: no config and the weights are not a self-describing file.
        ConfigError / CheckpointError: they disagree, or a value is invalid (the message names it).
    """
    from models.hub import resolve_weights_path

    local = resolve_weights_path(weights) if weights else ""
    if local and not os.path.isfile(local):
        raise FileNotFoundError(f"weights file not found: {weights}")
    meta = read_weights_metadata(local) if local.endswith(".safetensors") else None
    if not cfg_path and meta is None:
        raise InputError(f"--cfg is needed: {weights or 'no --weights given'} is not a weights file exported by "
                         "tools.export_safetensors (which carries its own settings)")
    cfg = load_config(cfg_path or None, ([] if cfg_path else _metadata_opts(meta)) + list(opts))
    if meta is not None:
        _check_metadata(cfg, meta, weights)
    names: dict[int, str] = {}
    if cfg.DATA.LABEL_LIST:
        names = read_label_names(cfg.DATA.LABEL_LIST)
    elif meta is not None:
        names = dict(enumerate(meta["class_names"]))
    return cfg, names


def load_model(cfg, weights: str, device: torch.device) -> nn.Module:
    """The model of ``cfg`` with ``weights`` (any checkpoint path or ``hf://`` reference) loaded, in eval mode.

    Raises:
        CheckpointError: the weights leave model parameters unset (a wrong MODEL.ARCH or class count).
    """
    built = cfg.clone()
    built.defrost()
    built.MODEL.PRETRAINED = ""
    built.TRAIN.USE_CHECKPOINT = False
    built.freeze()
    model = build_model(built, device=device)
    missing, _ = load_pretrained(model, weights, "eva_k722", class_mapping=cfg.MODEL.CLASS_MAPPING or None)
    if missing:
        raise CheckpointError(f"{weights} does not fit MODEL.ARCH {cfg.MODEL.ARCH} with {cfg.DATA.NUM_CLASSES} "
                              f"classes: missing {', '.join(missing[:6])}")
    return model.eval()


# ---------------------------------------------------------------------------------------------------- loader
def build_view_loader(cfg, paths: Sequence[str], work_dir: str, ctx: DistContext):
    """The multi-view test loader (TEST.NUM_CLIP x TEST.NUM_CROP views) over ``paths``, sharded over the ranks.

    The videos are written as a list (label 0, unused) in ``work_dir``; its index cache is kept there too. Batches
    are ``{'video': (B, V, T, 3, S, S), 'index': (B,)}`` with ``index`` the position in ``paths``; after the
    iteration :func:`unreadable_rows` names the videos that could not be read. These two functions are the only
    contact with the data loader.

    Raises:
        DataError: none of the videos is readable.
    """
    list_path = os.path.join(os.path.abspath(work_dir), "videos.txt")
    if ctx.is_main:
        os.makedirs(work_dir, exist_ok=True)
        tmp = f"{list_path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(f"{p} 0\n" for p in paths)
        os.replace(tmp, list_path)
    barrier(ctx)
    test_cfg = cfg.clone()
    test_cfg.defrost()
    test_cfg.DATA.ROOT, test_cfg.DATA.VAL_FILE, test_cfg.DATA.STRICT = "", list_path, False
    test_cfg.freeze()
    from dali_pipelines.loader import build_loader

    return build_loader(test_cfg, "test", ctx.rank, ctx.world_size, ctx.device_id)


def unreadable_rows(loader, paths: Sequence[str], ctx: DistContext) -> dict[int, str]:
    """Positions in ``paths`` that ``loader`` (from :func:`build_view_loader`) could not read, with the reason:
    those found when indexing (reported by rank 0 only: every rank sees the same) and those that failed while this
    rank decoded them. Call after the iteration."""
    rows: dict[int, str] = dict(loader.index.bad) if ctx.is_main else {}
    row_of = {p: i for i, p in enumerate(paths)}
    for line in loader.stats["skipped"]:  # "path: reason"
        path, _, reason = line.partition(": ")
        if path in row_of:
            rows[row_of[path]] = reason
    return rows


# ---------------------------------------------------------------------------------------------------- forward
@torch.no_grad()
def view_outputs(model: nn.Module, video: torch.Tensor, amp_dtype: torch.dtype | None = None,
                 max_clips: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, V, T, 3, S, S) views -> pooled pre-logit features (B, V, D) (the ``fc_norm`` output) and logits
    (B, V, C), both fp32. The same operations as ``model(clip)``; ``max_clips`` bounds clips per forward."""
    b, v = video.shape[:2]
    clips = video.flatten(0, 1)
    if amp_dtype is None:
        clips = clips.float()
    amp = torch.autocast(clips.device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    chunk = max_clips or clips.shape[0]
    pooled, logits = [], []
    with amp:
        for i in range(0, clips.shape[0], chunk):
            feats = model.forward_head(model.forward_features(clips[i:i + chunk]), pre_logits=True)
            pooled.append(feats.float())
            logits.append(model.head(feats).float())
    return torch.cat(pooled).view(b, v, -1), torch.cat(logits).view(b, v, -1)


def progress_bar(iterable, total: int, enabled: bool, desc: str):
    """``iterable`` wrapped in a tqdm bar on stderr (with ETA) when ``enabled``, else unchanged."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, file=sys.stderr)
