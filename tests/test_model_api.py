"""The timm-style model API: reset_classifier, set_grad_checkpointing, group_matcher (and timm's layer decay)."""

from __future__ import annotations

import pytest
import torch
from timm.optim import param_groups_layer_decay as timm_layer_decay

from engine.optim import param_groups_layer_decay
from models import EVAVideoTransformer


def _tiny(**kw) -> EVAVideoTransformer:
    torch.manual_seed(0)
    args = dict(img_size=16, num_frames=2, patch_size=8, tubelet_size=1, num_classes=5, embed_dim=32, depth=3,
                num_heads=2, mlp_hidden_dim=64, init_scale=1.0)
    args.update(kw)
    return EVAVideoTransformer(**args)


def test_reset_classifier_new_head_keeps_features():
    model = _tiny().eval()
    x = torch.randn(2, 2, 3, 16, 16)
    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    model.reset_classifier(7)
    assert model.num_classes == 7 and model.get_classifier().weight.shape == (7, 32)
    assert torch.count_nonzero(model.head.bias) == 0 and 0 < model.head.weight.std() < 0.05
    logits = model(x)
    assert logits.shape == (2, 7)
    torch.testing.assert_close(logits, model.head(feats))
    model.reset_classifier(0)
    torch.testing.assert_close(model(x), feats)  # Identity head: forward returns the pooled features
    with pytest.raises(ValueError, match="global_pool 'token'"):
        model.reset_classifier(3, global_pool="token")


def test_set_grad_checkpointing_same_gradients():
    model = _tiny().train()
    x = torch.randn(2, 2, 3, 16, 16)
    model(x).square().sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    assert model.use_checkpoint
    model(x).square().sum().backward()
    for a, p in zip(plain, model.parameters()):
        torch.testing.assert_close(p.grad, a)
    model.set_grad_checkpointing(False)
    assert not model.use_checkpoint


@pytest.mark.parametrize("mean_pooling", [True, False])
def test_timm_layer_decay_with_group_matcher_equals_ours(mean_pooling):
    model = _tiny(use_mean_pooling=mean_pooling)
    ours = param_groups_layer_decay(model, 0.05, 0.75)
    theirs = timm_layer_decay(model, weight_decay=0.05, layer_decay=0.75,
                              no_weight_decay_list=sorted(model.no_weight_decay()))
    names = {id(p): n for n, p in model.named_parameters()}

    def table(groups):
        return sorted((g["lr_scale"], g["weight_decay"], tuple(names[id(p)] for p in g["params"])) for g in groups)

    assert table(theirs) == table(ours)
    assert len(ours) == 2 * (model.depth + 2)  # stem, every block and the head part, each decay / no decay
    # the head group (fc_norm / norm and head) gets scale 1, the stem decay ** (depth + 1)
    scales = {n: g["lr_scale"] for g in ours for n in (names[id(p)] for p in g["params"])}
    assert scales["head.weight"] == 1.0 and scales["pos_embed"] == pytest.approx(0.75 ** 4)
    coarse = model.group_matcher(coarse=True)
    assert coarse["blocks"] == r"^blocks\.(\d+)"


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_integer_clip_is_refused_naming_its_dtype(dtype):
    model = _tiny().eval()
    pixels = torch.randint(0, 255, (1, 2, 3, 16, 16)).to(dtype)  # raw frames, not normalised
    with pytest.raises(ValueError, match=rf"expects a float clip, mean/std normalised, got {dtype}; convert"):
        model(pixels)


def test_clip_of_another_float_dtype_is_refused_unless_autocast():
    model = _tiny().eval()
    x = torch.randn(1, 2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"parameters are torch.float32 but the clip is torch.float64; "
                                         r"pass x.to\(torch.float32\)"):
        model(x.double())
    with pytest.raises(ValueError, match="parameters are torch.bfloat16 but the clip is torch.float32"):
        _tiny().eval().to(torch.bfloat16)(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts the clip itself: accepted
        assert model(x.bfloat16()).shape == (1, 5)
    torch.testing.assert_close(model(x.double().float()), model(x))  # the advised cast gives the fp32 result


def test_clip_that_is_not_a_tensor_is_refused():
    with pytest.raises(ValueError, match="expects a torch.Tensor clip of shape .* got a ndarray; convert it"):
        _tiny().eval()(torch.randn(1, 2, 3, 16, 16).numpy())


def test_clip_in_another_layout_says_how_to_fix_it():
    model = _tiny(num_frames=4, tubelet_size=2).eval()
    x = torch.randn(2, 4, 3, 16, 16)
    with pytest.raises(ValueError, match=r"= \(B, 4, 3, 16, 16\), got \(2, 3, 4, 16, 16\); that looks like the "
                                         r"\(B, C, T, H, W\) layout: pass x.transpose\(1, 2\)$"):
        model(x.transpose(1, 2))
    with pytest.raises(ValueError, match=r"got \(4, 3, 16, 16\); if that is one clip, \(T, C, H, W\), pass "
                                         r"x.unsqueeze\(0\)$"):
        model(x[0])
    with pytest.raises(ValueError, match=r"got \(2, 4, 3, 32, 32\)$"):  # other sizes: no layout advice
        model(torch.randn(2, 4, 3, 32, 32))
    torch.testing.assert_close(model(x.transpose(1, 2).transpose(1, 2)), model(x))  # the advice gives the output
    torch.testing.assert_close(model(x[0].unsqueeze(0)), model(x[:1]))


@pytest.mark.parametrize("name, value, least", [("num_classes", -1, 0), ("num_classes", 5.0, 0), ("patch_size", 0, 1),
                                                ("tubelet_size", 0, 1), ("num_heads", 0, 1)])
def test_constructor_refuses_a_count_out_of_range_naming_it(name, value, least):
    # -1 classes used to build a model without a head (forward returning features); a 0 size, a ZeroDivisionError
    with pytest.raises(ValueError, match=rf"^{name} must be an integer of at least {least}.*, got {value!r}$"):
        _tiny(**{name: value})


def test_reset_classifier_refuses_a_negative_class_count():
    model = _tiny()
    with pytest.raises(ValueError, match=r"^num_classes must be an integer of at least 0 .*got -3$"):
        model.reset_classifier(-3)
    assert model.num_classes == 5 and model.head.weight.shape == (5, 32)  # the model is left as it was
