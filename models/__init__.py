"""EVA video transformer, built from the config (``factory``); reading and converting its checkpoints
(``checkpoint``, ``pos_embed``), ``hf://`` references (``hub``), self-describing ``.safetensors`` weights
(``weights_file``) and FLOP counts (``flops``). Pure PyTorch: no DALI, no training code."""

from .checkpoint import CheckpointError, convert_state_dict, load_pretrained, read_checkpoint, read_state_dict
from .eva import EVAVideoTransformer
from .factory import ARCHS, build_model, load_configured_weights
from .flops import forward_flops, train_step_flops

__all__ = [
    "ARCHS",
    "CheckpointError",
    "EVAVideoTransformer",
    "build_model",
    "convert_state_dict",
    "forward_flops",
    "load_configured_weights",
    "load_pretrained",
    "read_checkpoint",
    "read_state_dict",
    "train_step_flops",
]
