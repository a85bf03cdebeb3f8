"""Build an ``EVAVideoTransformer`` from the project config; then, as a separate step, load its configured weights."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

from configs import ConfigError
from configs.checks import check_patch_size

from .checkpoint import load_pretrained, pretrained_source_grid
from .eva import EVAVideoTransformer

__all__ = ["ARCHS", "build_model", "load_configured_weights", "model_kwargs"]

logger = logging.getLogger(__name__)

# Named presets. 'eva-1b/14' is the original EVA ViT-g/14 (~1.0 B parameters); the others are standard ViT widths
# for experiments, and the tiny ones let tests and the CPU demo run the real code path in seconds.
ARCHS: dict[str, dict[str, int]] = {
    "eva-1b/14": dict(embed_dim=1408, depth=40, num_heads=16, mlp_hidden=6144, patch_size=14),
    "eva-l/14": dict(embed_dim=1024, depth=24, num_heads=16, mlp_hidden=4096, patch_size=14),
    "eva-b/16": dict(embed_dim=768, depth=12, num_heads=12, mlp_hidden=3072, patch_size=16),
    "eva-s/16": dict(embed_dim=384, depth=12, num_heads=6, mlp_hidden=1536, patch_size=16),
    "eva-tiny/16": dict(embed_dim=128, depth=4, num_heads=4, mlp_hidden=512, patch_size=16),
    "eva-tiny/8": dict(embed_dim=128, depth=4, num_heads=4, mlp_hidden=512, patch_size=8),
}


def model_kwargs(cfg: Any) -> dict[str, Any]:
    """``EVAVideoTransformer`` constructor kwargs for ``cfg`` (a full config from ``configs.load_config``).

    Raises:
        ConfigError: unknown MODEL.ARCH (the message lists the presets) or an input size that does not divide
            into its patches (both depend on the presets, which only this package knows; a ConfigError, as
            configs.validate's, so that every command reports it as a config mistake, not a crash).
    """
    arch = cfg.MODEL.ARCH
    if arch not in ARCHS:
        raise ConfigError(f"MODEL.ARCH {arch!r} is not a known preset; choose one of {sorted(ARCHS)}")
    preset = ARCHS[arch]
    patch, size = preset["patch_size"], cfg.DATA.INPUT_SIZE
    check_patch_size(arch, size, patch)  # configs checks it at load where a config sets MODEL.ARCH; any arch here
    # DATA.NUM_FRAMES vs DATA.TUBELET_SIZE is checked by configs.validate (load_config), not again here.
    return dict(
        img_size=size, num_frames=cfg.DATA.NUM_FRAMES, patch_size=patch, tubelet_size=cfg.DATA.TUBELET_SIZE,
        num_classes=cfg.DATA.NUM_CLASSES, embed_dim=preset["embed_dim"], depth=preset["depth"],
        num_heads=preset["num_heads"], mlp_hidden_dim=preset["mlp_hidden"],
        drop_rate=cfg.MODEL.DROP_RATE, attn_drop_rate=cfg.MODEL.ATTN_DROP_RATE,
        drop_path_rate=cfg.MODEL.DROP_PATH_RATE, use_mean_pooling=cfg.MODEL.USE_MEAN_POOLING,
        init_scale=cfg.MODEL.INIT_SCALE, stop_grad_conv1=cfg.MODEL.STOP_GRAD_CONV1, attn_impl=cfg.MODEL.ATTN_IMPL,
        use_checkpoint=cfg.TRAIN.USE_CHECKPOINT,
    )


def build_model(cfg: Any, device: str | torch.device | None = None) -> EVAVideoTransformer:
    """Build the model described by ``cfg`` (MODEL.ARCH preset + DATA geometry + MODEL/TRAIN options), with its
    initial (random) weights; load weights with :func:`load_configured_weights` or ``load_pretrained``.

    Args:
        cfg: config from ``configs.load_config``.
        device: where parameters are created (None: the current default, usually CPU). ``'meta'`` allocates
            nothing (shapes and parameter counts only).

    The model is returned in training mode.
    """
    kwargs = model_kwargs(cfg)
    # Creating parameters directly on the target device avoids a CPU init of ~1 B parameters before the copy.
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = EVAVideoTransformer(**kwargs)
    logger.info("built %s: %.1fM parameters, %d frames of %dx%d, %d classes", cfg.MODEL.ARCH,
                sum(p.numel() for p in model.parameters()) / 1e6, kwargs["num_frames"], kwargs["img_size"],
                kwargs["img_size"], kwargs["num_classes"])
    return model


def load_configured_weights(model: EVAVideoTransformer, cfg: Any) -> tuple[list[str], list[str]] | None:
    """Load MODEL.PRETRAINED into ``model`` (mode MODEL.PRETRAINED_MODE, class mapping MODEL.CLASS_MAPPING);
    returns ``load_pretrained``'s (missing, unexpected) keys, or None when MODEL.PRETRAINED is empty."""
    if not cfg.MODEL.PRETRAINED:
        return None
    return load_pretrained(model, cfg.MODEL.PRETRAINED, cfg.MODEL.PRETRAINED_MODE,
                           class_mapping=cfg.MODEL.CLASS_MAPPING or None,
                           source_grid=pretrained_source_grid(cfg, model))
