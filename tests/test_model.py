"""EVAVideoTransformer: parity with the original model, sizes, init, checkpointing, autocast, factory and FLOPs."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from configs import load_config
from models import ARCHS, EVAVideoTransformer, build_model, forward_flops
from models.flops import train_step_flops

torch.set_num_threads(2)

# A small model used where the fixture's exact weights do not matter.
TINY = dict(img_size=32, num_frames=4, patch_size=8, tubelet_size=2, num_classes=5, embed_dim=32, depth=3,
            num_heads=2, mlp_hidden_dim=80)


@pytest.fixture(scope="module")
def parity(shared_dir):
    return torch.load(shared_dir / "fixtures" / "eva_parity_A.pt", map_location="cpu", weights_only=True)


def _model_from_fixture(config: dict, **overrides) -> EVAVideoTransformer:
    """Constructor kwargs from the fixture's config: everything our signature names, and nothing it doesn't."""
    accepted = inspect.signature(EVAVideoTransformer.__init__).parameters
    # Original-only arguments must be at the values our model hard-codes.
    assert config["qk_scale"] is None and config["init_values"] == 0.0 and config["use_abs_pos_emb"]
    assert not config["use_rel_pos_bias"] and config["norm_layer"] == "LayerNormWithForceFP32"
    kwargs = {k: v for k, v in config.items() if k in accepted}
    kwargs.update(overrides)
    return EVAVideoTransformer(**kwargs)


# ------------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("attn_impl", ["sdpa", "math"])
def test_parity_with_original(parity, attn_impl):
    model = _model_from_fixture(parity["config"], attn_impl=attn_impl).eval()
    result = model.load_state_dict(parity["state_dict"], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = parity["input"]
    with torch.no_grad():
        tokens = model.forward_features(x)
        pooled = model.forward_head(tokens, pre_logits=True)
        logits = model.forward_head(tokens)
        patch = model.patch_embed(x)
    assert tokens.shape == (2, 1 + 4 * 4 * 4, 64)
    torch.testing.assert_close(logits, parity["logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled, parity["pooled"], atol=1e-5, rtol=0)
    # The fixture's `patch_tokens` are the patch-embedding output (B, N, D), t-major token order.
    torch.testing.assert_close(patch, parity["patch_tokens"], atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), logits, atol=0, rtol=0)


@pytest.mark.parametrize("attn_impl", ["sdpa", "math"])
def test_parity_default_init(parity, attn_impl):
    model = _model_from_fixture(parity["config"], attn_impl=attn_impl).eval()
    model.load_state_dict(parity["state_dict_default_init"], strict=True)
    with torch.no_grad():
        logits = model(parity["input"])
    # Logits of the untouched init are ~1e-4 (head scaled by init_scale), so compare relatively.
    torch.testing.assert_close(logits, parity["logits_default_init"], atol=1e-8, rtol=1e-4)


def test_state_dict_layout_matches_original(parity):
    model = _model_from_fixture(parity["config"])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in parity["state_dict"].items()}
    assert ours == theirs
    assert len(list(model.buffers())) == 0


def test_the_fixture_file_starts_a_model_of_other_frames_and_size_from_the_geometry_its_config_gives(parity,
                                                                                                       shared_dir):
    """The fixture saves the original model's constructor arguments as its config (4 frames of 56 px): an 8-frame,
    112 px model refused its 64 patch tokens as ambiguous (1 x 8x8, 4 x 4x4 or 16 x 2x2) and asked for
    MODEL.PRETRAINED_FRAMES / PRETRAINED_INPUT_SIZE."""
    from models.checkpoint import load_pretrained
    from models.pos_embed import resample_video_table

    model = _model_from_fixture(parity["config"], num_frames=8, img_size=112)
    notes: list[str] = []
    missing, unexpected = load_pretrained(model, shared_dir / "fixtures" / "eva_parity_A.pt", notes_to=notes)
    assert not missing and not unexpected
    assert notes[0] == "pos_embed: source grid 4x4x4 tokens, 4 frames of 56 px (from the checkpoint's config)"
    expected = resample_video_table(parity["state_dict"]["pos_embed"], (4, 4), (8, 8))
    torch.testing.assert_close(model.pos_embed.detach(), expected, atol=0, rtol=0)
    assert torch.equal(model.head.weight.detach(), parity["state_dict"]["head.weight"])


# ---------------------------------------------------------------------------------------- sizes (meta device)
@pytest.mark.parametrize("config, params", [("configs/k400.yaml", 1_017_116_432), ("configs/k722.yaml", 1_014_686_546)])
def test_full_size_parameter_counts(config, params):
    model = build_model(load_config(config), device="meta")
    assert next(model.parameters()).device.type == "meta"
    assert sum(p.numel() for p in model.parameters()) == params
    sd = model.state_dict()
    assert len(sd) == 528
    frames = load_config(config).DATA.NUM_FRAMES
    assert sd["pos_embed"].shape == (1, 1 + frames * 256, 1408)
    assert sd["blocks.39.attn.qkv.weight"].shape == (4224, 1408)
    assert sd["blocks.0.mlp.fc1.weight"].shape == (6144, 1408)
    assert sd["patch_embed.proj.weight"].shape == (1408, 3, 1, 14, 14)


# ------------------------------------------------------------------------------------------- API and init
def test_input_shape_is_validated():
    model = EVAVideoTransformer(**TINY)
    with pytest.raises(ValueError, match=r"\(B, 4, 3, 32, 32\).*got \(2, 3, 4, 32, 32\)"):
        model(torch.zeros(2, 3, 4, 32, 32))  # (B, C, T, H, W) instead of (B, T, C, H, W)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\) = \(B, 4, 3, 32, 32\), got \(4, 3, 32, 32\); if"):
        model(torch.zeros(4, 3, 32, 32))  # a batch of images: no time axis


def test_layer_ids_and_no_weight_decay():
    model = EVAVideoTransformer(**TINY)
    ids = {name: model.get_layer_id(name) for name, _ in model.named_parameters()}
    assert ids["cls_token"] == ids["pos_embed"] == ids["patch_embed.proj.weight"] == ids["patch_embed.proj.bias"] == 0
    assert ids["blocks.0.attn.q_bias"] == 1 and ids["blocks.2.mlp.fc2.weight"] == 3
    assert ids["fc_norm.weight"] == ids["head.weight"] == ids["head.bias"] == 4
    assert model.get_layer_id("module.blocks.1.norm1.weight") == 2
    assert model.get_num_layers() == 3
    assert model.no_weight_decay() == {"pos_embed", "cls_token"}
    assert model.grid_size == (2, 4, 4) and model.num_tokens == 33 and model.num_patches == 32


def test_init_follows_original():
    torch.manual_seed(0)
    model = EVAVideoTransformer(img_size=32, num_frames=2, patch_size=8, num_classes=200, embed_dim=256, depth=4,
                                num_heads=4, mlp_hidden_dim=512, init_scale=0.001)
    for blk in model.blocks:
        assert torch.count_nonzero(blk.attn.q_bias) == 0 and torch.count_nonzero(blk.attn.v_bias) == 0
        assert torch.count_nonzero(blk.attn.proj.bias) == 0 and torch.count_nonzero(blk.mlp.fc1.bias) == 0
        assert torch.equal(blk.norm1.weight, torch.ones(256)) and torch.count_nonzero(blk.norm2.bias) == 0
    std = lambda t: t.detach().float().std().item()  # noqa: E731
    assert std(model.blocks[0].attn.qkv.weight) == pytest.approx(0.02, rel=0.05)
    assert std(model.pos_embed) == pytest.approx(0.02, rel=0.1)
    # fix_init_weight: block i's output projections shrink by sqrt(2 (i + 1)).
    for i in (0, 3):
        expected = 0.02 / math.sqrt(2 * (i + 1))
        assert std(model.blocks[i].attn.proj.weight) == pytest.approx(expected, rel=0.05)
        assert std(model.blocks[i].mlp.fc2.weight) == pytest.approx(expected, rel=0.05)
    assert std(model.head.weight) == pytest.approx(0.02 * 0.001, rel=0.05)
    assert torch.count_nonzero(model.head.bias) == 0


def test_no_mean_pooling_uses_cls_token_and_final_norm():
    model = EVAVideoTransformer(**TINY, use_mean_pooling=False).eval()
    keys = model.state_dict().keys()
    assert "norm.weight" in keys and not any(k.startswith("fc_norm") for k in keys)
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens[:, 0])
        assert model(x).shape == (2, 5)


def test_dropout_is_off_in_eval():
    torch.manual_seed(0)
    plain = EVAVideoTransformer(**TINY).eval()
    noisy = EVAVideoTransformer(**TINY, drop_rate=0.5, attn_drop_rate=0.5, drop_path_rate=0.5).eval()
    noisy.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(noisy(x), plain(x), atol=1e-6, rtol=0)
        assert not torch.allclose(noisy.train()(x), plain(x), atol=1e-4)


def test_stop_grad_conv1():
    model = EVAVideoTransformer(**TINY, stop_grad_conv1=True)
    model(torch.randn(1, 4, 3, 32, 32)).sum().backward()
    assert model.patch_embed.proj.weight.grad is None
    assert model.pos_embed.grad is not None


# ------------------------------------------------------------------------------- gradient checkpointing
def _grads(model: EVAVideoTransformer, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # drop-path masks come from the global RNG
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("drop_path", [0.0, 0.3])
@pytest.mark.parametrize("attn_impl", ["sdpa", "math"])
def test_checkpointing_gives_same_gradients(drop_path, attn_impl):
    torch.manual_seed(0)
    ref = EVAVideoTransformer(**TINY, drop_path_rate=drop_path, attn_impl=attn_impl).train()
    ckpt = EVAVideoTransformer(**TINY, drop_path_rate=drop_path, attn_impl=attn_impl, use_checkpoint=True).train()
    ckpt.load_state_dict(ref.state_dict())
    x, y = torch.randn(3, 4, 3, 32, 32), torch.tensor([0, 3, 4])

    calls = []
    # Hook inside the block: non-reentrant recompute stops early, once the saved tensors are rebuilt.
    hook = ckpt.blocks[0].mlp.fc1.register_forward_hook(lambda *_: calls.append(1))
    g_ckpt = _grads(ckpt, x, y, seed=123)
    hook.remove()
    assert len(calls) == 2, "with checkpointing a block runs twice: forward and recompute in backward"
    g_ref = _grads(ref, x, y, seed=123)
    assert g_ref.keys() == g_ckpt.keys()
    for name in g_ref:
        torch.testing.assert_close(g_ckpt[name], g_ref[name], atol=1e-6, rtol=1e-5, msg=name)
    if drop_path:
        # A different seed draws different drop-path masks: the comparison above is not trivially true.
        g_other = _grads(ref, x, y, seed=7)
        assert not torch.allclose(g_other["blocks.2.mlp.fc1.weight"], g_ref["blocks.2.mlp.fc1.weight"])


def test_checkpointing_only_in_training():
    model = EVAVideoTransformer(**TINY, use_checkpoint=True).eval()
    calls = []
    model.blocks[0].mlp.fc1.register_forward_hook(lambda *_: calls.append(1))
    model(torch.randn(1, 4, 3, 32, 32)).sum().backward()  # eval mode: no recompute even with gradients
    assert len(calls) == 1
    with torch.no_grad():
        model.train()(torch.randn(1, 4, 3, 32, 32))  # training without autograd: nothing to recompute
    assert len(calls) == 2


# -------------------------------------------------------------------------------------------------- autocast
@pytest.mark.parametrize("attn_impl", ["sdpa", "math"])
def test_bf16_autocast_close_to_fp32(parity, attn_impl):
    model = _model_from_fixture(parity["config"], attn_impl=attn_impl).eval()
    model.load_state_dict(parity["state_dict"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(parity["input"])
    assert torch.isfinite(logits).all()
    # bf16 has ~3 significant digits; the fixture logits are O(1).
    torch.testing.assert_close(logits.float(), parity["logits"], atol=0.1, rtol=0.05)


def test_bf16_autocast_backward_with_checkpointing():
    model = EVAVideoTransformer(**TINY, use_checkpoint=True, drop_path_rate=0.1).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(torch.randn(2, 4, 3, 32, 32)).float().logsumexp(-1).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.pos_embed.grad.dtype == torch.float32


# ---------------------------------------------------------------------------------------------------- factory
def _tiny_cfg(*opts: str):
    return load_config("configs/k400.yaml", ["MODEL.ARCH", "eva-tiny/16", "DATA.INPUT_SIZE", "32",
                                              "DATA.NUM_FRAMES", "4", "DATA.NUM_CLASSES", "6", "MODEL.PRETRAINED", "",
                                              "MODEL.CLASS_MAPPING", "", "TRAIN.USE_CHECKPOINT", "False", *opts])


def test_build_model_from_config():
    cfg = _tiny_cfg("DATA.TUBELET_SIZE", "2", "MODEL.ATTN_IMPL", "math", "MODEL.DROP_PATH_RATE", "0.1")
    model = build_model(cfg)
    preset = ARCHS["eva-tiny/16"]
    assert (model.embed_dim, model.depth, model.num_heads, model.mlp_hidden_dim) == (128, 4, 4, 512)
    assert model.patch_size == preset["patch_size"] and model.grid_size == (2, 2, 2)
    assert model.blocks[0].attn.attn_impl == "math" and model.num_classes == 6
    assert model.blocks[-1].drop_path.drop_prob == pytest.approx(0.1)
    assert model(torch.randn(2, 4, 3, 32, 32)).shape == (2, 6)


def test_build_model_errors():
    with pytest.raises(ValueError, match="eva-tiny/16"):  # the message lists the presets
        build_model(_tiny_cfg("MODEL.ARCH", "vit-huge"), device="meta")
    with pytest.raises(ValueError, match="DATA.INPUT_SIZE 40 .*patch size 16"):
        build_model(_tiny_cfg("DATA.INPUT_SIZE", "40"), device="meta")


def test_all_presets_build_on_meta():
    for arch, preset in ARCHS.items():
        model = build_model(_tiny_cfg("MODEL.ARCH", arch, "DATA.INPUT_SIZE", str(preset["patch_size"] * 4)),
                            device="meta")
        assert model.blocks[0].mlp.fc1.out_features == preset["mlp_hidden"], arch


# ------------------------------------------------------------------------------------------------------ FLOPs
def test_flops_eva_1b_16x224():
    flops = forward_flops(build_model(load_config("configs/k400.yaml"), device="meta"))
    assert flops == pytest.approx(12.06e12, rel=0.005)
    kwargs = dict(num_frames=16, num_classes=400, **{k: v for k, v in ARCHS["eva-1b/14"].items()})
    assert forward_flops(kwargs) == flops
    assert train_step_flops(kwargs) == 3 * flops and train_step_flops(kwargs, recompute=True) == 4 * flops


def _counted_flops(attn_impl: str) -> tuple[int, dict[str, int]]:
    """torch's FLOP counter over one tiny forward: the total and the per-operator counts."""
    model = EVAVideoTransformer(**TINY, attn_impl=attn_impl).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(3, 4, 3, 32, 32))
    per_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops(), per_op


def test_flops_match_torch_flop_counter_math_path():
    # On the math path every FLOP is a plain matmul or convolution, which torch counts by a documented rule
    # (2·M·N·K), so the total checks our formula exactly.
    total, _ = _counted_flops("math")
    assert total == 3 * forward_flops(EVAVideoTransformer(**TINY, attn_impl="math"))


def test_flops_sdpa_path_counts_the_same_linear_and_conv_work():
    # Whether and how torch counts the fused attention kernel changes between releases (2.14.1 on the CPU counts
    # nothing for it, 2.15 counts it), so it is left out; every other operator must be counted exactly as on the
    # math path, where the attention is two batched matmuls.
    _, sdpa_ops = _counted_flops("sdpa")
    _, math_ops = _counted_flops("math")
    shared = {op for op in sdpa_ops if "scaled_dot_product" not in op}
    assert {"aten.convolution", "aten.addmm"} <= shared
    assert {op: sdpa_ops[op] for op in shared} == {op: math_ops[op] for op in shared}
    assert set(math_ops) - shared == {"aten.bmm"}


# ------------------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("attn_impl", ["sdpa", "math"])
def test_cuda_parity_fp32_and_bf16(parity, attn_impl):
    model = _model_from_fixture(parity["config"], attn_impl=attn_impl).cuda().eval()
    model.load_state_dict(parity["state_dict"])
    x = parity["input"].cuda()
    with torch.no_grad():
        fp32 = model(x).float().cpu()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = model(x).float().cpu()
    # TF32 may be on for matmuls; SPEC.md section 7 gives ~1e-2 relative on a GPU.
    torch.testing.assert_close(fp32, parity["logits"], atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(bf16, parity["logits"], atol=0.1, rtol=0.05)


@pytest.mark.gpu
def test_cuda_checkpointed_bf16_training_step():
    model = EVAVideoTransformer(**TINY, use_checkpoint=True, drop_path_rate=0.1).cuda().train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 4, 3, 32, 32, device="cuda")),
                                                 torch.tensor([1, 2], device="cuda"))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())


def _attention_grads(impl: str, state: dict, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The bf16-autocast backward of one EVA-1B attention layer (1408 wide, 16 heads of 88) through ``impl``."""
    from models.eva import Attention

    attn = Attention(1408, 16, attn_impl=impl).to(x.device)
    attn.load_state_dict(state)
    x = x.detach().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        out = attn(x)
    out.float().square().mean().backward()
    return x.grad, {n: p.grad for n, p in attn.named_parameters()}


@pytest.mark.gpu
def test_cuda_attention_backward_at_eva_1b_head_size_matches_the_math_path():
    """The kernel torch picks for SDPA on this GPU (flash, memory-efficient, or cuDNN, which recent torch prefers
    on Hopper and which has given NaN gradients in bf16 at some shapes) against the fp32-logits math path, at EVA-1B's
    head size and 8 frames x 16 x 16 tokens: finite, and the same gradients to bf16's precision."""
    from models.eva import Attention

    torch.manual_seed(0)
    state = {k: v.cuda() for k, v in Attention(1408, 16).state_dict().items()}
    state["q_bias"].normal_(std=0.02)
    state["v_bias"].normal_(std=0.02)
    x = torch.randn(2, 1 + 8 * 16 * 16, 1408, device="cuda")
    (gx_sdpa, gp_sdpa), (gx_math, gp_math) = (_attention_grads(impl, state, x) for impl in ("sdpa", "math"))
    for name, got, ref in [("input", gx_sdpa, gx_math)] + [(n, gp_sdpa[n], gp_math[n]) for n in gp_math]:
        assert torch.isfinite(got).all(), name
        assert float((got - ref).norm() / ref.norm()) < 0.03, (name, float((got - ref).norm() / ref.norm()))


def test_apex_layer_norm_runs_in_fp32_outside_autocast_and_falls_back_when_unusable(monkeypatch, caplog):
    """apex's fused layer norm casts its inputs to the autocast dtype, which would undo the fp32 statistics: it is
    called with autocast off. An apex whose CUDA extension does not load fails at the first call (ImportError):
    torch's kernel takes over, once and for good. (A fake stands in for apex: it records what it was given.)"""
    import logging

    from models import eva

    seen = []

    def fake_apex(input, weight, bias, normalized_shape, eps):
        seen.append((input.dtype, weight.dtype, torch.is_autocast_enabled("cpu")))
        return torch.nn.functional.layer_norm(input, normalized_shape, weight, bias, eps)

    ln = eva.LayerNormFP32(8)
    x = torch.randn(2, 8, dtype=torch.bfloat16)
    monkeypatch.setattr(eva, "_apex_layer_norm", fake_apex)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ln._apex_forward(x)
    assert seen == [(torch.float32, torch.float32, False)] and out.dtype == torch.bfloat16
    torch.testing.assert_close(out, torch.nn.functional.layer_norm(x.float(), (8,), eps=1e-6).bfloat16())

    def missing_extension(**kwargs):
        raise ModuleNotFoundError("No module named 'fused_layer_norm_cuda'")

    monkeypatch.setattr(eva, "_apex_layer_norm", missing_extension)
    with caplog.at_level(logging.WARNING, logger="models.eva"):
        assert ln._apex_forward(x) is None
    assert eva._apex_layer_norm is None and "fused_layer_norm_cuda" in caplog.text
