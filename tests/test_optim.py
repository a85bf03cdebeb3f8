"""Parameter groups and the LR schedule, checked against values computed here from SPEC.md section 4."""

from __future__ import annotations

import math

import pytest
import torch

from configs import load_config
from engine.optim import build_optimizer, build_param_groups, build_scheduler, resolve_lr_min
from models import EVAVideoTransformer


def _model(depth: int) -> EVAVideoTransformer:
    # Original depth (40 blocks), tiny width: the layer ids are what matters here.
    return EVAVideoTransformer(img_size=16, num_frames=2, patch_size=8, num_classes=5, embed_dim=16, depth=depth,
                               num_heads=2, mlp_hidden_dim=32)


def _group_of(groups, model):
    ids = {id(p): g for g in groups for p in g["params"]}
    return {name: ids[id(p)] for name, p in model.named_parameters()}


def test_layer_decay_scales_match_original_ids():
    model = _model(40)
    groups = build_param_groups(model, weight_decay=0.05, layer_decay=0.95)
    by_name = _group_of(groups, model)
    # layer 0: embeddings -> 0.95^41 = 0.12209
    for name in ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"):
        assert by_name[name]["lr_scale"] == pytest.approx(0.95 ** 41, rel=1e-12)
    assert 0.95 ** 41 == pytest.approx(0.12209, abs=1e-5)
    # blocks.k -> id k+1 -> 0.95^(40-k)
    for k in (0, 7, 39):
        for name, g in by_name.items():
            if name.startswith(f"blocks.{k}."):
                assert g["lr_scale"] == pytest.approx(0.95 ** (40 - k), rel=1e-12), name
                assert g["name"].startswith(f"layer_{k + 1}_")
    # everything after the blocks -> id 41 -> 1.0
    for name in ("fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"):
        assert by_name[name]["lr_scale"] == 1.0
        assert by_name[name]["name"].startswith("layer_41_")
    # 42 layer ids, each with a decay and a no-decay group (the embeddings have both too)
    assert len({g["name"] for g in groups}) == len(groups) == 84


def test_weight_decay_membership():
    model = _model(2)
    for layer_decay in (0.95, 1.0):
        by_name = _group_of(build_param_groups(model, 0.05, layer_decay), model)
        no_decay = {n for n, g in by_name.items() if g["weight_decay"] == 0.0}
        decay = {n for n, g in by_name.items() if g["weight_decay"] == 0.05}
        for name, p in model.named_parameters():
            expect_nd = p.ndim == 1 or name.endswith(".bias") or name in ("pos_embed", "cls_token")
            assert (name in no_decay) == expect_nd, name
        assert {"pos_embed", "cls_token", "blocks.0.attn.q_bias", "blocks.0.attn.v_bias", "head.bias",
                "blocks.1.norm1.weight"} <= no_decay
        assert {"patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight",
                "head.weight"} <= decay
    groups = build_param_groups(model, 0.05, 1.0)
    assert len(groups) == 2 and all(g["lr_scale"] == 1.0 for g in groups)


def test_optimizer_hyperparameters():
    # LR and WEIGHT_DECAY off their defaults: the optimizer must take them from the config given
    cfg = load_config(None, ["TRAIN.LAYER_WISE_DECAY", "0.95", "TRAIN.LR", "2e-5", "TRAIN.WEIGHT_DECAY", "0.1"])
    model = _model(2)
    opt = build_optimizer(cfg.TRAIN, model, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW)
    for g in opt.param_groups:
        assert g["betas"] == (0.9, 0.98) and g["eps"] == 1e-6
        assert g["lr"] == 2e-5 and g["weight_decay"] in (0.1, 0.0) and not g["fused"]  # no fused kernel on the CPU
    held = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(held) == sorted(id(p) for p in model.parameters())  # every parameter, each once
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    assert id(model.head.weight) in decayed and id(model.head.bias) not in decayed


def _expected_lr(t, lr, warmup_start, lr_min, warmup_steps, total_steps):
    if t < warmup_steps:
        return warmup_start + t * (lr - warmup_start) / warmup_steps
    tc = t - warmup_steps
    t_max = total_steps - warmup_steps
    if tc >= t_max:
        return lr_min
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * tc / t_max))


def test_cosine_warmup_schedule_per_step_with_layer_scale():
    # K722-like: warmup 0 -> LR over 5 epochs, cosine to LR/100 (LR_MIN 0), per optimizer step.
    cfg = load_config(None, ["TRAIN.EPOCHS", "8", "TRAIN.WARMUP_EPOCHS", "5", "TRAIN.LR", "8e-6",
                             "TRAIN.WARMUP_START_LR", "0", "TRAIN.LR_MIN", "0", "TRAIN.LAYER_WISE_DECAY", "0.9"])
    assert resolve_lr_min(8e-6, 0.0) == pytest.approx(8e-8)
    model = _model(3)
    opt = build_optimizer(cfg.TRAIN, model, torch.device("cpu"))
    n_iter = 7
    sched = build_scheduler(cfg.TRAIN, opt, n_iter)
    for t in [0, 1, 17, 34, 35, 36, 44, 55, 56, 60]:
        sched.step_update(t)
        base = _expected_lr(t, 8e-6, 0.0, 8e-8, 5 * n_iter, 8 * n_iter)
        for g in opt.param_groups:
            assert g["lr"] == pytest.approx(base * g["lr_scale"], rel=1e-9, abs=1e-20), (t, g["name"])
    # the first layer's scale in this 3-block model is 0.9^4
    assert min(g["lr_scale"] for g in opt.param_groups) == pytest.approx(0.9 ** 4)


def test_k400_schedule_is_constant():
    cfg = load_config(None, ["TRAIN.EPOCHS", "1", "TRAIN.WARMUP_EPOCHS", "0", "TRAIN.LR", "1e-6",
                             "TRAIN.WARMUP_START_LR", "1e-6", "TRAIN.LR_MIN", "1e-6", "TRAIN.LAYER_WISE_DECAY",
                             "0.95"])
    model = _model(40)
    opt = build_optimizer(cfg.TRAIN, model, torch.device("cpu"))
    sched = build_scheduler(cfg.TRAIN, opt, 916)
    for t in (0, 1, 400, 915):
        sched.step_update(t)
        lrs = sorted(g["lr"] for g in opt.param_groups)
        # the log's lr_first 1.22e-7 / lr_last 1e-6
        assert lrs[0] == pytest.approx(1e-6 * 0.95 ** 41) and lrs[-1] == pytest.approx(1e-6)


@pytest.mark.parametrize("epochs,warmup,steps,lrs", [
    ("1", "0", 1, [1e-3]),                # one epoch of one step: the step runs at LR
    ("2", "1", 1, [1e-5, 1e-3]),          # one warmup step, then one at LR
    ("1", "1", 2, [1e-5, 5.05e-4]),       # all warmup
])
def test_a_one_step_cosine_is_built_without_timms_warning(caplog, epochs, warmup, steps, lrs):
    """timm warns "Cosine annealing scheduler will have no effect" whenever the cosine is one step long: runs whose
    epochs are one step long got it, for a schedule that is the one asked for. That warning alone is dropped."""
    import logging

    cfg = load_config(None, ["TRAIN.EPOCHS", epochs, "TRAIN.WARMUP_EPOCHS", warmup, "TRAIN.LR", "1e-3",
                             "TRAIN.WARMUP_START_LR", "1e-5", "TRAIN.LR_MIN", "1e-6"])
    opt = build_optimizer(cfg.TRAIN, _model(1), torch.device("cpu"))
    timm_log = logging.getLogger("timm.scheduler.cosine_lr")
    with caplog.at_level(logging.WARNING):
        sched = build_scheduler(cfg.TRAIN, opt, steps)
        timm_log.warning("another warning of the scheduler's")
    assert [r.getMessage() for r in caplog.records] == ["another warning of the scheduler's"]
    assert timm_log.filters == []
    for t, lr in enumerate(lrs):
        sched.step_update(t)
        assert max(g["lr"] for g in opt.param_groups) == pytest.approx(lr)


def test_a_fractional_warmup_is_whole_steps_and_the_cosine_ends_with_the_run():
    """WARMUP_EPOCHS 2.5 of 10 epochs of 3 steps: a warmup of int(7.5) = 7 steps, then a cosine over the run's other
    23, reaching LR_MIN as the 30 steps end. The original's (EPOCHS - WARMUP) * n_iter gives 22.5: cut to whole
    steps, 7 + 22 = 29 and the last step would run at LR_MIN; unrounded, step 7 would still be warmup, short of LR."""
    cfg = load_config(None, ["TRAIN.EPOCHS", "10", "TRAIN.WARMUP_EPOCHS", "2.5", "TRAIN.LR", "1e-3",
                             "TRAIN.WARMUP_START_LR", "1e-5", "TRAIN.LR_MIN", "1e-6"])
    opt = build_optimizer(cfg.TRAIN, _model(1), torch.device("cpu"))
    sched = build_scheduler(cfg.TRAIN, opt, 3)
    lrs = []
    for t in range(31):  # the run's 30 steps, and the one after it
        sched.step_update(t)
        lrs.append(max(g["lr"] for g in opt.param_groups))
    assert lrs == pytest.approx([_expected_lr(t, 1e-3, 1e-5, 1e-6, 7, 30) for t in range(31)], rel=1e-9)
    assert lrs[6] < 1e-3 and lrs[7] == pytest.approx(1e-3)  # the first step after the warmup runs at LR
    assert lrs[29] > 5e-6 and lrs[30] == pytest.approx(1e-6)  # the last step is still above LR_MIN


def test_ema_copies_only_the_first_update_then_averages():
    """TRAIN.EMA: timm's ModelEmaV3 takes the count of updates made, this one included (its train script's
    num_updates): the first step's weights are copied, every later one is averaged with EMA_DECAY. Counted from 0,
    the second update copied the weights too and the first step's weights never entered the average."""
    from types import SimpleNamespace

    from timm.utils import ModelEmaV3

    from engine.distributed import DistContext
    from engine.train_epoch import TrainOptions, TrainState, train_one_epoch

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    ema = ModelEmaV3(model, decay=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    weights = []
    metrics = SimpleNamespace(start_epoch=lambda *a, **k: None, end_epoch=lambda *a, **k: None,
                              log_step=lambda *a, **k: weights.append(model.weight.detach().clone()))
    batches = [{"video": torch.randn(2, 4), "label": torch.tensor([0, 2])} for _ in range(2)]
    train_one_epoch(model, batches, opt, SimpleNamespace(step_update=lambda t: None), torch.nn.CrossEntropyLoss(),
                    TrainState(), TrainOptions(epochs=1, steps_per_epoch=2), metrics, DistContext(), ema=ema)
    w1, w2 = weights
    assert not torch.equal(w1, w2)
    torch.testing.assert_close(ema.module.weight, 0.5 * w1 + 0.5 * w2)


@pytest.mark.parametrize("warmup,steps,whole", [("2.3", 100, 230), ("0.57", 100, 57), ("0.29", 200, 58)])
def test_a_warmup_of_whole_steps_is_not_cut_a_step_short_by_floating_point(warmup, steps, whole):
    """WARMUP_EPOCHS 2.3 at 100 steps an epoch is 230 steps of warmup, but 2.3 x 100 is 229.99999999999997 in
    binary floating point, which int() cut to 229: the warmup ended a step early, on another slope."""
    cfg = load_config(None, ["TRAIN.EPOCHS", "5", "TRAIN.WARMUP_EPOCHS", warmup, "TRAIN.LR", "1e-3",
                             "TRAIN.WARMUP_START_LR", "0", "TRAIN.LR_MIN", "1e-6"])
    assert float(warmup) * steps < whole  # the product the schedule is cut from
    opt = build_optimizer(cfg.TRAIN, _model(1), torch.device("cpu"))
    sched = build_scheduler(cfg.TRAIN, opt, steps)
    lrs = []
    for t in (1, whole - 1, whole):
        sched.step_update(t)
        lrs.append(max(g["lr"] for g in opt.param_groups))
    assert lrs == pytest.approx([1e-3 / whole, 1e-3 * (whole - 1) / whole, 1e-3], rel=1e-9)
