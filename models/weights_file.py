"""Self-describing weights: a model's state dict as ``.safetensors`` with the metadata needed to use it.

The metadata (string values, as safetensors requires) records the architecture preset and its dimensions, the clip
geometry (frames, tubelet, input size), the pixel normalisation, the number of classes and their names. A file
written here loads wherever a checkpoint path is accepted (``read_state_dict`` reads ``.safetensors``), and
``predict`` can build the model from the metadata alone, without a config.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from torch import nn

from evautil.files import atomic_write_by_name

from .checkpoint import CheckpointError
from .checkpoint_read import safetensors_refusal
from .safe_load import refuse_empty

__all__ = ["FORMAT", "save_weights_file", "read_weights_metadata"]

FORMAT = "eva-video-weights/1"
_INT_KEYS = ("num_frames", "tubelet_size", "input_size", "num_classes", "embed_dim", "depth", "num_heads",
             "mlp_hidden_dim", "patch_size")
_JSON_KEYS = ("mean", "std", "class_names", "use_mean_pooling")


def save_weights_file(model: nn.Module, path: str, *, arch: str, mean: Sequence[float], std: Sequence[float],
                      class_names: Sequence[str] = (), source: str = "") -> dict[str, str]:
    """Write ``model``'s state dict and its metadata to ``path`` (``.safetensors``), atomically.

    Args:
        model: an ``EVAVideoTransformer`` (its dimensions are read from it).
        arch: the ``MODEL.ARCH`` preset it was built from.
        mean, std: the per-channel normalisation (0-255 scale, RGB) its inputs expect.
        class_names: names in class-id order; empty when unknown, else one per class.
        source: where the weights came from (kept as information only).

    Returns:
        The metadata written.
    """
    from safetensors.torch import save_file

    if not path.endswith(".safetensors"):
        raise ValueError(f"{path}: the output file name must end in .safetensors")
    if class_names and len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {model.num_classes} classes")
    meta: dict[str, Any] = {
        "format": FORMAT, "arch": arch, "num_frames": model.num_frames, "tubelet_size": model.tubelet_size,
        "input_size": model.img_size, "num_classes": model.num_classes, "embed_dim": model.embed_dim,
        "depth": model.depth, "num_heads": model.num_heads, "mlp_hidden_dim": model.mlp_hidden_dim,
        "patch_size": model.patch_size, "use_mean_pooling": model.use_mean_pooling, "mean": list(map(float, mean)),
        "std": list(map(float, std)), "class_names": list(class_names), "source": source,
    }
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    # safetensors refuses tensors that share storage; every tensor gets its own contiguous CPU copy.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    # with the mode a plain open() would give, as checkpoints have, so that other users and jobs can read it
    atomic_write_by_name(path, lambda tmp: save_file(tensors, tmp, metadata=text))
    return text


def read_weights_metadata(path: str) -> dict[str, Any] | None:
    """The parsed metadata of a file written by :func:`save_weights_file`; None for any other safetensors file.

    Raises:
        CheckpointError: ``path`` is not a readable safetensors file, or its metadata is damaged.
    """
    from safetensors import safe_open

    refuse_empty(path)
    try:
        with safe_open(path, framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
        raise safetensors_refusal(path, error) from None
    if raw.get("format") != FORMAT:
        return None
    try:
        meta: dict[str, Any] = dict(raw)
        for key in _INT_KEYS:
            meta[key] = int(raw[key])
        for key in _JSON_KEYS:
            meta[key] = json.loads(raw[key])
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: damaged weights metadata ({type(error).__name__}: {error})") from None
    return meta

