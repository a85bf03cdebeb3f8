"""The model that ``predict``, ``extract_features`` and ``export_safetensors`` run: its config and class names
(:func:`load_setup`: from ``--cfg``, or from an exported file's own settings), its weights (:func:`load_model`),
the device it runs on (:func:`compute_device`) and what tells one weights file from another
(:func:`weights_identity`). ``tools.inference`` gives these names to the tools too.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
from typing import Any, Sequence

import torch
from torch import nn

from configs import ConfigError, load_config
from engine.evaluate import names_given_twice, read_label_names
from engine.precision import chosen_precision, emulated_bf16_warning
from evautil.errors import weights_misfit
from evautil.files import not_a_file
from evautil.progress import counted
from models import ARCHS, CheckpointError, build_model, load_pretrained
from models.checkpoint import (EMA_NOTE, head_mismatch, is_safetensors, layers_the_model_lacks, pretrained_source_grid,
                               read_checkpoint)
from models.weights_file import read_weights_metadata

__all__ = ["InputError", "load_setup", "load_model", "compute_device", "weights_identity"]


class InputError(ValueError):
    """Unusable command-line input (no videos, an unreadable list, weights without a config); named in one line."""


def _metadata_opts(meta: dict[str, Any]) -> list[str]:
    # num_classes 0: weights without a head, which give features only (load_model says so where a head is needed);
    # the config keeps its own class count, which no tensor of the file has
    classes = ["DATA.NUM_CLASSES", str(meta["num_classes"])] if meta["num_classes"] else []
    return ["MODEL.ARCH", meta["arch"], "DATA.NUM_FRAMES", str(meta["num_frames"]), "DATA.TUBELET_SIZE",
            str(meta["tubelet_size"]), "DATA.INPUT_SIZE", str(meta["input_size"]), *classes,
            "MODEL.USE_MEAN_POOLING", str(meta["use_mean_pooling"])]


def _check_metadata(cfg, meta: dict[str, Any], weights: str, cfg_path: str = "", opts: Sequence[str] = ()) -> None:
    """The config and the model file must describe the same model and the same input normalisation. A mismatch is
    named with where the config's value came from: ``--opts`` when it sets the key, else the ``--cfg`` file."""
    from dali_pipelines.augment import MEAN, STD  # numpy only, no DALI

    preset = ARCHS.get(meta["arch"])
    dims = {"embed_dim": "embed_dim", "depth": "depth", "num_heads": "num_heads", "mlp_hidden_dim": "mlp_hidden",
            "patch_size": "patch_size"}
    if preset is None or any(meta[k] != preset[p] for k, p in dims.items()):
        raise CheckpointError(f"{weights}: architecture {meta['arch']!r} with "
                              f"{ {k: meta[k] for k in dims} } is not a known MODEL.ARCH preset")
    # the pooling and the tubelet change which tensors the model has: a mismatch would be reported as missing keys
    pairs = {"MODEL.ARCH": (cfg.MODEL.ARCH, meta["arch"]), "DATA.NUM_FRAMES": (cfg.DATA.NUM_FRAMES, meta["num_frames"]),
             "DATA.TUBELET_SIZE": (cfg.DATA.TUBELET_SIZE, meta["tubelet_size"]),
             "DATA.INPUT_SIZE": (cfg.DATA.INPUT_SIZE, meta["input_size"]),
             "DATA.NUM_CLASSES": (cfg.DATA.NUM_CLASSES, meta["num_classes"]),
             "MODEL.USE_MEAN_POOLING": (cfg.MODEL.USE_MEAN_POOLING, meta["use_mean_pooling"])}
    if not meta["num_classes"]:  # no head: any class count fits its tensors
        del pairs["DATA.NUM_CLASSES"]
    # each key --opts sets, as typed: the original's MYCLIP.USE_MEAN_POOLING sets ours (configs._apply_legacy)
    typed = {"MODEL.USE_MEAN_POOLING" if key == "MYCLIP.USE_MEAN_POOLING" else key: key for key in list(opts)[0::2]}
    for key, (ours, theirs) in pairs.items():
        if ours == theirs:
            continue
        if key in typed or not cfg_path:  # --opts is applied last: its value is the one in force
            name = typed.get(key, key)
            raise ConfigError(f"{name} = {ours} from --opts but {theirs} in {weights}; leave {name} out of --opts "
                              "to use the file's value")
        raise ConfigError(f"{key} = {ours} in --cfg {cfg_path} but {theirs} in {weights}; drop --cfg to use the "
                          "file's own settings")
    for name, want, have in (("mean", MEAN, meta["mean"]), ("std", STD, meta["std"])):
        if any(abs(a - b) > 1e-4 for a, b in zip(want, have)) or len(have) != len(want):
            raise CheckpointError(f"{weights}: expects inputs normalised with {name} {have}; the data pipeline "
                                  f"uses {list(want)}")


_WEIGHTS_SUFFIXES = (".pth", ".pt", ".safetensors")


def _weights_in(folder: str) -> str:
    """What a folder given for the weights holds (a training run's output folder, say): its weights files, the one
    to name first (``best.pth`` where there is one), or that it holds none; a user told only "a folder" had to look
    for the file's name. Suggested: ``best.pth``, else the newest."""
    try:
        names = sorted(f for f in os.listdir(folder) if f.endswith(_WEIGHTS_SUFFIXES) and not f.startswith(".")
                       and os.path.isfile(os.path.join(folder, f)))
        if not names:
            return f": it holds no {', '.join(_WEIGHTS_SUFFIXES)} file; name the weights file itself"
        first = "best.pth" if "best.pth" in names else max(names, key=lambda f: os.path.getmtime(
            os.path.join(folder, f)))
    except OSError:  # unreadable, or a file gone meanwhile: the folder alone is named
        return ""
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f": it holds {shown}; name one of them, e.g. {os.path.join(folder, first)}"


def _no_settings(weights: str, command: str) -> InputError:
    """The line for weights that leave the model unknown: none given, or a file without settings and no --cfg;
    ``command``: the tool's command line without --cfg and --weights, for the example that works."""
    example = f"{command} --cfg configs/k400.yaml --weights {shlex.quote(weights or 'eva_video_k400.pth')}"
    if not weights:
        return InputError(f"no --weights given: give --weights with a checkpoint and --cfg with the config of its "
                          f"model, e.g. {example}")
    return InputError(f"--cfg is needed with --weights {weights}, which holds no settings of its own (only a "
                      f".safetensors file written by tools.export_safetensors does): give the config of its model, "
                      f"e.g. {example}")


def load_setup(cfg_path: str | None, opts: Sequence[str], weights: str, class_names: bool = True,
               warn: bool = True, command: str = "python -m tools.predict videos.txt") -> tuple[Any, dict[int, str]]:
    """The config (from ``cfg_path``, or from the metadata of an exported ``.safetensors`` when there is none) and
    the class names (DATA.LABEL_LIST, else the file's names, else none; none read when not ``class_names``).

    A DATA.LABEL_LIST that does not exist is passed over as if none were set, with a ``warning:`` line on stderr
    when ``warn``: class names label the results, they do not change them. One that exists must be valid.

    ``command``: the calling tool's command line without ``--cfg`` and ``--weights``, which the line for missing
    weights or settings completes into an example.

    Raises:
        FileNotFoundError: the weights file does not exist.
        InputError: no weights, or no config and the weights are not a self-describing file.
        ConfigError / CheckpointError: they disagree, or a value is invalid (the message names it).
    """
    from models.hub import resolve_weights_path

    if not weights:  # with --cfg too: the load would look for a file named ""
        raise _no_settings(weights, command)
    local = resolve_weights_path(weights)
    if not os.path.isfile(local):
        raise FileNotFoundError(f"weights file not found: {weights}" + (f" (a folder, not a file){_weights_in(local)}"
                                                                        if os.path.isdir(local) else ""))
    meta = read_weights_metadata(local) if is_safetensors(local) else None
    if not cfg_path and meta is None:
        raise _no_settings(weights, command)
    cfg = load_config(cfg_path or None, ([] if cfg_path else _metadata_opts(meta)) + list(opts))
    if meta is not None:
        _check_metadata(cfg, meta, weights, cfg_path or "", opts)
    if not class_names:
        return cfg, {}
    names: dict[int, str] = dict(enumerate(meta["class_names"])) if meta is not None else {}
    labels = cfg.DATA.LABEL_LIST
    if labels and not os.path.isfile(labels):
        if warn:
            print(f"warning: label list DATA.LABEL_LIST = {labels} {not_a_file(labels)}; "
                  + (f"class names from {weights}" if names else "classes are given by their index, without names"),
                  file=sys.stderr)
    read_list = bool(labels) and os.path.isfile(labels)
    if read_list:
        names = _label_names_for_weights(labels, cfg.DATA.NUM_CLASSES, weights, meta)
    # the label list's names, else those the exported file holds: either may give one name to several classes
    same_names = names_given_twice(labels, names) if read_list else names_given_twice(weights, names, embedded=True)
    if warn and same_names:
        print(f"warning: {same_names}", file=sys.stderr)
    return cfg, names


def _label_names_for_weights(labels: str, num_classes: int, weights: str,
                             meta: dict[str, Any] | None) -> dict[int, str]:
    """``read_label_names`` of DATA.LABEL_LIST ``labels``; a list that is sound but of another class count than an
    exported file's head says so: its error named a DATA.NUM_CLASSES that no config of the user's set (the file
    gives it), and not what to do."""
    try:
        return read_label_names(labels, num_classes)
    except ConfigError as e:
        if meta is None or not meta["num_classes"]:
            raise
        try:
            read_label_names(labels)  # sound on its own: the class count alone is at fault
        except ConfigError:
            raise e from None
        kept = "the class names it holds" if meta["class_names"] else "class indices"
        raise ConfigError(f"{e}; DATA.NUM_CLASSES is the {counted(num_classes, 'class')} of {weights}'s head: "
                          f"give a label list of those classes, or leave DATA.LABEL_LIST out to use {kept}") from None


def load_model(cfg, weights: str, device: torch.device, warn: bool = True, features_only: bool = False,
               head_problem_to: list[str] | None = None, without_head: bool = False) -> nn.Module:
    """The model of ``cfg`` with ``weights`` (any checkpoint path or ``hf://`` reference) loaded, in eval mode.

    The checkpoint is converted by ``load_pretrained``; what the conversion changed (a positional
    embedding resampled to another DATA.NUM_FRAMES / DATA.INPUT_SIZE, a head gathered by a class mapping) is printed
    as ``warning:`` lines on stderr when ``warn``: a model used at another geometry than it was trained at is
    legitimate, but it should not happen unnoticed. So is TRAIN.PRECISION bf16 on a GPU that emulates it (the
    run's start warns of it in the same words), and TRAIN.PRECISION auto's fp16 on such a GPU is one ``note:``
    line naming the precision and why, as a training run's start line names them.

    ``features_only``: the model gives features, which stop before the head, so weights without a head or with a
    head of another class count are loaded too (the head left at its initialisation), with a ``note:`` line when
    ``warn``; the error predicting with them must raise is appended to ``head_problem_to``. ``without_head``:
    weights without a head (a pretrained backbone) give the model without one (``num_classes`` 0, its forward
    returning the pooled features), with that ``note:`` line; a head of another class count is still refused.

    Raises:
        CheckpointError: the weights leave model parameters unset (a wrong MODEL.ARCH or class count), or have no
            head or one of another class count (not with ``features_only``).
        ValueError: the checkpoint cannot be converted to the model (the message names the file and the key).
    """
    # what check_checkpoint reads (memory-mapped, no tensor loaded) and refuses, keeping the head's shape: a head of
    # another class count would be dropped and scored at random, named with both counts before the build
    mapping = cfg.MODEL.CLASS_MAPPING or None
    state, saved_config = read_checkpoint(weights, mmap=True)
    head = state.get("head.weight")
    head_problem, why_not_loaded = None, ""
    mismatch = head_mismatch({"head.weight": head}, cfg.DATA.NUM_CLASSES, mapping) if head is not None else None
    if head is None:
        why_not_loaded = "it has no classification head"
        head_problem = (f"{weights}: {why_not_loaded} (head.weight, head.bias): it gives features "
                        "(tools.extract_features, Predictor.features), not predictions")
    elif mismatch:
        why_not_loaded = f"its head has {head.shape[0]} classes and DATA.NUM_CLASSES is {cfg.DATA.NUM_CLASSES}"
        head_problem = f"{weights}: {mismatch}"
    if head_problem and not (features_only or (without_head and head is None)):
        raise CheckpointError(head_problem)
    built = cfg.clone()
    built.defrost()
    built.MODEL.PRETRAINED = ""
    built.TRAIN.USE_CHECKPOINT = False
    built.freeze()
    model = build_model(built, device=device)
    notes: list[str] = []
    # MODEL.PRETRAINED_FRAMES / _INPUT_SIZE give the geometry of a file that does not record it (the error asking
    # for it names these keys); a file's saved config decides otherwise, as a recipe's values describe the
    # checkpoint its MODEL.PRETRAINED names
    grid = pretrained_source_grid(cfg, model) if saved_config is None else None
    missing, unexpected = load_pretrained(model, weights, "eva_k722", class_mapping=mapping, source_grid=grid,
                                          notes_to=notes, misfit_is_error=True)
    # A recipe's MODEL.PRETRAINED_FRAMES that does not fit these weights describes the checkpoint the recipe trains
    # from (K722's 8 frames), not these: set aside without a word (the README's k400.yaml + K400 checkpoint case).
    notes = [n for n in notes if "set aside" not in n]
    if head_problem:  # features_only: the head's absence is said once, below, instead of the conversion's note
        missing = [k for k in missing if k not in ("head.weight", "head.bias")]
        notes = [n for n in notes if not n.startswith("head:")]
        if head_problem_to is not None:
            head_problem_to.append(head_problem)
    lacked = layers_the_model_lacks(unexpected, model)  # a deeper model's weights would predict as a truncated one
    if missing or lacked:
        raise CheckpointError(f"{weights} {weights_misfit(cfg.MODEL.ARCH, cfg.DATA.NUM_CLASSES, missing, lacked)}")
    if warn:
        if head_problem:
            print(f"note: {weights}: {why_not_loaded}: the head was not loaded, and features stop before it",
                  file=sys.stderr)
        for note in notes:  # which of a file's weights are used is information; what was changed, a warning
            print(f"{'note' if note == EMA_NOTE else 'warning'}: {weights}: {note}", file=sys.stderr)
        if any(n.startswith("pos_embed: resampled") for n in notes):
            print(f"warning: {weights} was trained at another geometry than DATA.NUM_FRAMES {cfg.DATA.NUM_FRAMES}, "
                  f"DATA.INPUT_SIZE {cfg.DATA.INPUT_SIZE}: its positional embedding was resampled to fit; set them "
                  "to the checkpoint's values to use the model as trained", file=sys.stderr)
        slow_bf16 = emulated_bf16_warning(cfg.TRAIN.PRECISION, device)  # the model runs under it: bf16 on a V100
        if slow_bf16:
            print(f"warning: {slow_bf16}", file=sys.stderr)
        # auto's fp16 on a GPU without native bf16 changes the scores' rounding: said, as a training run's start
        # line says it, in its words
        precision, why = chosen_precision(cfg.TRAIN.PRECISION, device)
        if cfg.TRAIN.PRECISION == "auto" and precision == "fp16":
            print(f"note: precision {precision} ({why})", file=sys.stderr)
    if without_head and head is None:
        model.reset_classifier(0)
    return model.eval()


def compute_device(name: str | torch.device) -> torch.device:
    """``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` (or a torch device) as a torch device, the type in any case
    (``CPU``, ``Cuda:0``); the GPU is made the current one, as a run does (the data pipeline decodes on the current
    GPU).

    Raises:
        TypeError: ``name`` is neither a str nor a torch device (None), naming the value.
        ValueError: a device this project does not run on, or CUDA where it is not available."""
    if not isinstance(name, (str, torch.device)):  # None: torch's "invalid combination of arguments", 10 lines
        raise TypeError(f"device must be auto, cpu, cuda, cuda:N or a torch.device, got {type(name).__name__} "
                        f"{name!r}")
    given = name
    if isinstance(name, str):  # the type in any case: torch's messages say "CPU" and "CUDA", and "CPU" was refused
        kind, colon, index = name.partition(":")
        name = kind.casefold() + colon + index
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's words list every device type it knows, which this one does not take
        raise ValueError(f"device {given!r}: give auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {given!r}: give auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {given!r}: CUDA is not available on this machine")
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        torch.cuda.set_device(device)
    return device


_WHOLE_FILE_HASH_BYTES = 256 << 20  # weights up to this size are hashed whole (well under a second)
_HASH_PARTS, _HASH_PART_BYTES = 64, 1 << 20  # larger ones (multi-GB): 64 MiB read, spread over the file


def weights_identity(path: str) -> dict[str, Any]:
    """What tells a weights file from another under the same name: its size and a SHA-256 of its contents (the
    whole file up to 256 MiB, else 64 parts of 1 MiB spread evenly over it, first and last included). Contents,
    not the modification time: a copy or a new download of the same file stays the same weights."""
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= _WHOLE_FILE_HASH_BYTES:
            for block in iter(lambda: f.read(_HASH_PART_BYTES), b""):
                digest.update(block)
            hashed = "whole file"
        else:
            for i in range(_HASH_PARTS):
                f.seek((size - _HASH_PART_BYTES) * i // (_HASH_PARTS - 1))
                digest.update(f.read(_HASH_PART_BYTES))
            hashed = f"{_HASH_PARTS} parts of {_HASH_PART_BYTES >> 20} MiB"
    return {"size": size, "sha256": digest.hexdigest(), "hashed": hashed}
