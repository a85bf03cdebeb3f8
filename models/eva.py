"""EVA video ViT: the BEiT-style vision transformer of BAAI's EVA-01 video models (SPEC.md section 1).

Written for this project and numerically identical (fp32, CPU) to the original ``models/beit.py::VisionTransformer``
as configured by ``clip_mae.build_model``; parameter names and shapes are kept so original checkpoints load as-is.

Data flow for one clip (B = batch, T = frames, T' = T / tubelet, G = img / patch, N = T'·G², D = embed_dim)::

    (B, T, 3, H, W) --PatchEmbed3D--> (B, N, D) --[cls] + pos_embed--> (B, 1+N, D) --depth x Block--> (B, 1+N, D)
        --mean of the N patch tokens--> fc_norm --> head --> (B, num_classes) logits

Differences from the original, all of which leave the fp32 numbers unchanged:
- attention can run through ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU);
- the ``math`` path really computes the attention logits in fp32 under autocast (the original's ``q.float()``
  intent was undone by apex O1, SPEC.md section 6);
- gradient checkpointing is the non-reentrant form, which works with autocast and unused-input cases;
- bad input shapes raise ``ValueError`` instead of ``AssertionError``, as do inputs that are not a float tensor
  of the parameters' dtype (autocast aside), which would otherwise fail inside conv3d with a type mismatch.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint
from timm.layers import DropPath

try:  # Optional: NVIDIA apex's fused layer norm kernel. Not needed; torch's own kernel is used without it.
    from apex.normalization.fused_layer_norm import fused_layer_norm_affine as _apex_layer_norm
except Exception:  # ImportError, or an apex build whose CUDA extension does not load
    _apex_layer_norm = None

logger = logging.getLogger(__name__)

__all__ = ["EVAVideoTransformer", "LayerNormFP32", "PatchEmbed3D", "Attention", "Mlp", "Block"]

AttnImpl = Literal["sdpa", "math"]


def _autocast_on(device_type: str) -> bool:
    """Whether autocast is enabled for ``device_type`` (False for a type autocast does not know, e.g. meta)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return False


def _count(name: str, value: object, least: int) -> int:
    """``value`` as an int of at least ``least``; ValueError naming ``name`` otherwise (a float or a bool too)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
        no_head = " (0: no head, the model returns the pooled features)" if name == "num_classes" else ""
        raise ValueError(f"{name} must be an integer of at least {least}{no_head}, got {value!r}")
    return int(value)


class LayerNormFP32(nn.Module):
    """LayerNorm that always normalises in fp32 and returns the input dtype (original ``LayerNormWithForceFP32``).

    Under bf16/fp16 autocast the residual stream stays fp32 but block inputs may be half precision; computing
    the statistics in fp32 keeps the normalisation exact. Parameters are named ``weight``/``bias`` as in
    ``nn.LayerNorm`` so state dicts match.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.normalized_shape = (dim,)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _apex_layer_norm is not None and x.is_cuda:
            out = self._apex_forward(x)
            if out is not None:
                return out
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return out.type_as(x)

    def _apex_forward(self, x: torch.Tensor) -> torch.Tensor | None:
        """The same fp32-in / cast-back semantics through apex's fused kernel; None when apex turns out unusable
        (torch's kernel from then on). Autocast is off around it: apex casts its inputs to the autocast dtype,
        which would undo the fp32 statistics. Keywords: apex releases differ in the positional order of
        normalized_shape."""
        global _apex_layer_norm
        try:
            with torch.autocast(device_type=x.device.type, enabled=False):
                out = _apex_layer_norm(input=x.float(), weight=self.weight.float(), bias=self.bias.float(),
                                       normalized_shape=self.normalized_shape, eps=self.eps)
            return out.type_as(x)
        # apex loads its CUDA extension at the first call: a build without a working one fails here
        except (ImportError, RuntimeError, TypeError) as error:
            logger.warning("apex fused layer norm unusable (%s); using torch's layer norm", error)
            _apex_layer_norm = None
            return None

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class PatchEmbed3D(nn.Module):
    """Tubelet embedding: a Conv3d with kernel = stride = (tubelet, patch, patch) over a (B, T, C, H, W) clip."""

    def __init__(self, img_size: int, patch_size: int, num_frames: int, tubelet_size: int, in_chans: int,
                 embed_dim: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.grid_size = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1] * self.grid_size[2]
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=(tubelet_size, patch_size, patch_size),
                              stride=(tubelet_size, patch_size, patch_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(rearrange(x, "b t c h w -> b c t h w"))
        # Token index = t·G² + h·G + w (time-major, then row-major), as in the original.
        return rearrange(x, "b d t h w -> b (t h w) d")


class Attention(nn.Module):
    """Multi-head self-attention with BEiT-style biases: q and v have a bias, k has none.

    ``attn_impl='sdpa'`` calls ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU,
    fp32 accumulation); ``'math'`` is the original formulation with the q·kᵀ logits computed in fp32 even under
    autocast. Both give the same fp32 result to ~1e-6.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, attn_impl: AttnImpl = "sdpa") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        if attn_impl not in ("sdpa", "math"):
            raise ValueError(f"attn_impl must be 'sdpa' or 'math', got {attn_impl!r}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.attn_impl = attn_impl
        # One (3D x D) matmul for q, k and v; its bias is assembled from q_bias / v_bias in forward.
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = None
            self.v_bias = None
        self.attn_drop_p = attn_drop
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None
        if self.q_bias is not None:
            # k's slot is a constant zero (no parameter, no gradient).
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias, requires_grad=False), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = rearrange(qkv, "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.num_heads).unbind(0)

        if self.attn_impl == "sdpa":
            dropout_p = self.attn_drop_p if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=self.scale)
        else:
            # fp32 attention logits even under autocast; a full (B, H, N, N) matrix, so memory-hungry for long clips.
            with torch.autocast(device_type=x.device.type, enabled=False):
                attn = (q.float() * self.scale) @ k.float().transpose(-2, -1)
                attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn.type_as(v))
            x = attn @ v
        x = rearrange(x, "b h n d -> b n (h d)")
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2 -> dropout (the original applies dropout only after fc2)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x))). No layer scale."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden_dim: int, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, norm_eps: float = 1e-6,
                 attn_impl: AttnImpl = "sdpa") -> None:
        super().__init__()
        self.norm1 = LayerNormFP32(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop,
                              attn_impl=attn_impl)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = LayerNormFP32(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden_dim, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class EVAVideoTransformer(nn.Module):
    """EVA ViT over video clips (tubelet patch embedding, learnable absolute space-time positions, mean pooling).

    Args (names as in the original ``VisionTransformer``):
        img_size: square input size H = W; must be divisible by ``patch_size``.
        num_frames: T, frames per clip; must be divisible by ``tubelet_size``.
        patch_size / tubelet_size: Conv3d kernel = stride = (tubelet_size, patch_size, patch_size).
        in_chans: input channels (3).
        num_classes: logits per clip; 0 replaces the head by Identity (forward returns pooled features).
        embed_dim / depth / num_heads: transformer width, number of blocks, attention heads.
        mlp_ratio: MLP hidden width = int(embed_dim * mlp_ratio) (6144 for EVA-1B).
        qkv_bias: learn q and v biases (k never has one).
        drop_rate / attn_drop_rate / drop_path_rate: dropout after pos-embed, MLP and projection; on the attention
            probabilities; stochastic-depth rate of the last block (linearly increasing from 0 over the blocks).
        use_mean_pooling: True: mean of the patch tokens -> ``fc_norm`` -> head (the EVA recipe). False: a final
            ``norm`` over all tokens and the cls token -> head.
        init_scale: multiplier applied to the freshly initialised head weight and bias.
        use_checkpoint: recompute every block in the backward pass (activation memory ~ one block).
        norm_eps: LayerNorm epsilon. attn_impl: 'sdpa' or 'math' (see ``Attention``).
        stop_grad_conv1: detach the patch embedding output (no gradient into the Conv3d).
        mlp_hidden_dim: explicit MLP width, overriding ``mlp_ratio`` (used by the named presets).
    """

    def __init__(self, img_size: int = 224, num_frames: int = 8, patch_size: int = 14, tubelet_size: int = 1,
                 in_chans: int = 3, num_classes: int = 400, embed_dim: int = 1408, depth: int = 40,
                 num_heads: int = 16, mlp_ratio: float = 6144 / 1408, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, use_mean_pooling: bool = True,
                 init_scale: float = 0.001, use_checkpoint: bool = False, norm_eps: float = 1e-6,
                 attn_impl: AttnImpl = "sdpa", stop_grad_conv1: bool = False,
                 mlp_hidden_dim: int | None = None) -> None:
        super().__init__()
        sizes = dict(img_size=img_size, num_frames=num_frames, patch_size=patch_size, tubelet_size=tubelet_size,
                     in_chans=in_chans, embed_dim=embed_dim, num_heads=num_heads, depth=depth)
        # a 0 would end in a ZeroDivisionError, a negative class count in a silent Identity head
        img_size, num_frames, patch_size, tubelet_size, in_chans, embed_dim, num_heads, depth = (
            _count(name, value, 0 if name == "depth" else 1) for name, value in sizes.items())
        num_classes = _count("num_classes", num_classes, 0)
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        if num_frames % tubelet_size:
            raise ValueError(f"num_frames {num_frames} is not divisible by tubelet_size {tubelet_size}")
        self.img_size = img_size
        self.num_frames = num_frames
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.embed_dim = self.num_features = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.use_checkpoint = use_checkpoint
        self.stop_grad_conv1 = stop_grad_conv1
        self.use_mean_pooling = use_mean_pooling
        self.attn_impl = attn_impl
        self.mlp_hidden_dim = int(embed_dim * mlp_ratio) if mlp_hidden_dim is None else int(mlp_hidden_dim)

        self.patch_embed = PatchEmbed3D(img_size, patch_size, num_frames, tubelet_size, in_chans, embed_dim)
        self.grid_size = self.patch_embed.grid_size  # (T', G, G)
        self.num_patches = self.patch_embed.num_patches
        self.num_tokens = self.num_patches + 1  # + cls

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)

        dpr = [r.item() for r in torch.linspace(0, drop_path_rate, depth, device="cpu")]  # stochastic depth decay
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, self.mlp_hidden_dim, qkv_bias=qkv_bias, drop=drop_rate,
                  attn_drop=attn_drop_rate, drop_path=dpr[i], norm_eps=norm_eps, attn_impl=attn_impl)
            for i in range(depth)
        ])
        # Original layout: with mean pooling the final ``norm`` is Identity and ``fc_norm`` normalises the pooled
        # vector; without it, ``norm`` normalises all tokens and there is no ``fc_norm`` (state-dict names follow).
        if use_mean_pooling:
            self.norm = nn.Identity()
            self.fc_norm = LayerNormFP32(embed_dim, eps=norm_eps)
        else:
            self.norm = LayerNormFP32(embed_dim, eps=norm_eps)
            self.fc_norm = None
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

        self._init_weights(init_scale)

    # ------------------------------------------------------------------------------------------------ init
    @torch.no_grad()
    def _init_weights(self, init_scale: float) -> None:
        """Original init: trunc-normal(.02) tokens and Linear weights, zero biases, rescaled residual outputs."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, LayerNormFP32):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, Attention) and m.q_bias is not None:
                nn.init.zeros_(m.q_bias)
                nn.init.zeros_(m.v_bias)
        # The Conv3d keeps PyTorch's default (kaiming-uniform) init, as in the original.
        # fix_init_weight: shrink each block's residual-branch outputs by sqrt(2 * layer_id).
        for i, blk in enumerate(self.blocks):
            blk.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))
        if isinstance(self.head, nn.Linear):
            self.head.weight.mul_(init_scale)
            self.head.bias.mul_(init_scale)

    # ------------------------------------------------------------------------------------------- optimizer
    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay besides biases and norms (handled by ndim == 1)."""
        return {"pos_embed", "cls_token"}

    def get_num_layers(self) -> int:
        """Number of transformer blocks (the original's ``vision_layers``)."""
        return self.depth

    def get_layer_id(self, param_name: str) -> int:
        """Layer index for layer-wise LR decay: embeddings 0, ``blocks.k`` k+1, everything after the blocks depth+1."""
        name = param_name.removeprefix("module.")
        if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.depth + 1

    # ------------------------------------------------------------------------------------------- timm API
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter grouping: stem (embeddings) first, then one group per block; everything after the
        blocks (``norm``, ``fc_norm``, ``head``) falls through to timm's last group. With timm's
        ``param_groups_layer_decay`` this reproduces ``get_layer_id`` exactly (0, k + 1, depth + 1)."""
        return dict(stem=r"^cls_token|^pos_embed|^patch_embed",
                    blocks=r"^blocks\.(\d+)" if coarse else [(r"^blocks\.(\d+)", None)])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every block in the backward pass (same switch as ``use_checkpoint``)."""
        self.use_checkpoint = bool(enable)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head by a freshly initialised ``Linear(embed_dim, num_classes)`` (Identity for 0).

        The new head is created on the old parameters' device and dtype and initialised like the original head
        (trunc-normal .02 weight, zero bias); ``init_scale`` is not applied again. ``global_pool`` is accepted for
        timm compatibility: only ``None``, ``'avg'`` (mean pooling) and ``'token'`` (cls token) matching the
        model's pooling are allowed, since the pooling decides which norm layers exist.
        """
        if global_pool is not None:
            current = "avg" if self.use_mean_pooling else "token"
            if global_pool != current:
                raise ValueError(f"global_pool {global_pool!r} differs from this model's pooling {current!r}; "
                                 f"build the model with use_mean_pooling={global_pool == 'avg'} instead")
        num_classes = self.num_classes = _count("num_classes", num_classes, 0)
        ref = self.cls_token
        if num_classes > 0:
            head = nn.Linear(self.embed_dim, num_classes, device=ref.device, dtype=ref.dtype)
            nn.init.trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)
            self.head = head
        else:
            self.head = nn.Identity()

    # ---------------------------------------------------------------------------------------------- forward
    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.num_frames, self.in_chans, self.img_size, self.img_size)
        want = f"(B, T, C, H, W) = (B, {', '.join(map(str, expected))})"
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"EVAVideoTransformer expects a torch.Tensor clip of shape {want}, got a "
                             f"{type(x).__name__}; convert it with torch.as_tensor")
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"EVAVideoTransformer expects a float clip of shape {want}, got {tuple(x.shape)}"
                             + self._layout_hint(tuple(x.shape)))
        weight = self.patch_embed.proj.weight
        if not x.is_floating_point():  # raw pixels: conv3d would only say that the input and bias types differ
            raise ValueError(f"EVAVideoTransformer expects a float clip, mean/std normalised, got {x.dtype}; "
                             f"convert it to {weight.dtype} and normalise it (dali_pipelines.augment.MEAN / STD)")
        if x.dtype != weight.dtype and not _autocast_on(x.device.type):  # autocast casts both itself
            raise ValueError(f"EVAVideoTransformer's parameters are {weight.dtype} but the clip is {x.dtype}; "
                             f"pass x.to({weight.dtype}), or run the model under torch.autocast")

    def _layout_hint(self, shape: tuple[int, ...]) -> str:
        """What to do with a clip of the right sizes in another layout (the two mistakes a caller makes most)."""
        t, c, size = self.num_frames, self.in_chans, self.img_size
        if shape == (t, c, size, size):
            return "; if that is one clip, (T, C, H, W), pass x.unsqueeze(0)"  # or a batch of images: no advice
        if len(shape) == 5 and shape[1:] == (c, t, size, size):
            return "; that looks like the (B, C, T, H, W) layout: pass x.transpose(1, 2)"
        return ""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) normalised clip -> final token features (B, 1+N, D), cls token first."""
        self._check_input(x)
        x = self.patch_embed(x)
        if self.stop_grad_conv1:
            x = x.detach()
        # cat and the pos_embed add promote to fp32 under autocast: the residual stream stays fp32 (as in the original).
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.pos_drop(x + self.pos_embed)
        recompute = self.use_checkpoint and self.training and torch.is_grad_enabled()
        for blk in self.blocks:
            if recompute:
                # Non-reentrant: correct with autocast and inputs that need no grad; RNG state (drop path) is
                # saved and replayed so the recomputed forward matches the original one.
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Token features (B, 1+N, D) -> pooled features (pre_logits) or logits (B, num_classes)."""
        if self.fc_norm is not None:
            x = self.fc_norm(x[:, 1:].mean(dim=1))  # cls token excluded from the mean, as in the original
        else:
            x = x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) float clip, already mean/std normalised -> (B, num_classes) raw logits."""
        return self.forward_head(self.forward_features(x))
