"""Checkpoint reading (nesting, safetensors, refusal of pickled code) and EVA conversion, on tiny models."""

from __future__ import annotations

import builtins
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from yacs.config import CfgNode

from configs import load_config
from models import (CheckpointError, EVAVideoTransformer, build_model, convert_state_dict,
                    load_configured_weights, load_pretrained)
from models import read_state_dict
from models.checkpoint import check_checkpoint, weights_fit
from models.pos_embed import grid_from_sizes

torch.set_num_threads(2)

D = 32


def tiny(num_frames: int = 4, tubelet_size: int = 1, num_classes: int = 5, img_size: int = 32,
         **kwargs) -> EVAVideoTransformer:
    """G = img_size / 8 patches per side, T' = num_frames / tubelet_size."""
    return EVAVideoTransformer(img_size=img_size, num_frames=num_frames, patch_size=8, tubelet_size=tubelet_size,
                               num_classes=num_classes, embed_dim=D, depth=2, num_heads=2, mlp_hidden_dim=64,
                               **kwargs)


def random_state_dict(model: EVAVideoTransformer, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) for k, v in model.state_dict().items()}


def image_checkpoint(seed: int = 1, grid: int = 4) -> dict[str, torch.Tensor]:
    """An EVA image checkpoint's layout: 2-D patch kernel, (1, 1+G², D) pos_embed, MIM-only extras, no head."""
    gen = torch.Generator().manual_seed(seed)
    sd = {k: v for k, v in random_state_dict(tiny(), seed).items() if not k.startswith(("head", "fc_norm"))}
    sd["pos_embed"] = torch.randn(1, 1 + grid * grid, D, generator=gen)
    sd["patch_embed.proj.weight"] = torch.randn(D, 3, 8, 8, generator=gen)
    sd["mask_token"] = torch.randn(1, 1, D, generator=gen)
    sd["lm_head.weight"], sd["lm_head.bias"] = torch.randn(11, D, generator=gen), torch.randn(11, generator=gen)
    sd["norm.weight"], sd["norm.bias"] = torch.randn(D, generator=gen), torch.randn(D, generator=gen)
    return sd


# ------------------------------------------------------------------------------------------------ 'eva' mode
def test_image_to_video_conversion():
    src = image_checkpoint()
    before = {k: v.clone() for k, v in src.items()}
    model = tiny(num_frames=4, tubelet_size=2)  # T' = 2, G = 4
    out, notes = convert_state_dict(src, model, "eva")

    # The input is untouched.
    assert src.keys() == before.keys() and all(torch.equal(src[k], before[k]) for k in src)
    # pos_embed: cls slot, then the 16-entry spatial table once per frame.
    pe, table = out["pos_embed"], src["pos_embed"][0, 1:].numpy()
    assert pe.shape == (1, 1 + 2 * 16, D)
    np.testing.assert_array_equal(pe[0, 0].numpy(), src["pos_embed"][0, 0].numpy())
    np.testing.assert_array_equal(pe[0, 1:].numpy(), np.concatenate([table, table]))
    # Conv2d -> Conv3d: each tubelet frame gets w / tubelet.
    w = out["patch_embed.proj.weight"]
    assert w.shape == (D, 3, 2, 8, 8)
    for t in range(2):
        np.testing.assert_allclose(w[:, :, t].numpy(), src["patch_embed.proj.weight"].numpy() / 2, rtol=1e-6)
    assert torch.equal(out["patch_embed.proj.bias"], src["patch_embed.proj.bias"])
    assert any("pos_embed" in n for n in notes) and any("inflated" in n for n in notes)
    # MIM-only keys and the final norm stay for load_state_dict to report (norm is not mapped to fc_norm).
    assert {"mask_token", "lm_head.weight", "norm.weight"} <= out.keys() and "fc_norm.weight" not in out

    # A clip of identical frames embeds exactly as the image did under the 2-D kernel.
    model.load_state_dict(out, strict=False)
    image = torch.randn(1, 3, 32, 32)
    clip = image[:, None].expand(1, 4, 3, 32, 32)
    with torch.no_grad():
        video_tokens = model.patch_embed(clip)  # (1, 2·16, D)
        image_tokens = torch.nn.functional.conv2d(image, src["patch_embed.proj.weight"], src["patch_embed.proj.bias"],
                                                  stride=8).flatten(2).transpose(1, 2)  # (1, 16, D)
    torch.testing.assert_close(video_tokens, torch.cat([image_tokens, image_tokens], 1), atol=1e-5, rtol=1e-5)


def test_image_to_video_load_reports_keys(tmp_path):
    path = tmp_path / "eva_image.pt"
    torch.save(image_checkpoint(), path)
    model = tiny(num_frames=2)
    missing, unexpected = load_pretrained(model, path, "eva")
    assert set(missing) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    assert set(unexpected) == {"mask_token", "lm_head.weight", "lm_head.bias", "norm.weight", "norm.bias"}


def test_image_pos_embed_spatial_resample():
    src = image_checkpoint(grid=4)
    src["pos_embed"][0, 1:] = 0.25  # a constant table stays constant under bicubic resampling
    out, notes = convert_state_dict(src, tiny(num_frames=2, img_size=48), "eva")  # G = 6
    assert out["pos_embed"].shape == (1, 1 + 2 * 36, D)
    torch.testing.assert_close(out["pos_embed"][0, 1:], torch.full((72, D), 0.25), atol=1e-6, rtol=0)
    assert any("bicubic" in n for n in notes)


# ------------------------------------------------------------------------------------------ 'eva_k722' mode
def _linear_time_resample(x: np.ndarray, new_len: int) -> np.ndarray:
    """Reference 1-D linear interpolation along axis 0 with align_corners=False (half-pixel centres)."""
    old_len = x.shape[0]
    out = np.empty((new_len,) + x.shape[1:], dtype=np.float64)
    for j in range(new_len):
        pos = min(max((j + 0.5) * old_len / new_len - 0.5, 0.0), old_len - 1)
        i0 = int(np.floor(pos))
        i1 = min(i0 + 1, old_len - 1)
        w = pos - i0
        out[j] = (1 - w) * x[i0] + w * x[i1]
    return out


def test_frame_resample_8_to_16():
    src = random_state_dict(tiny(num_frames=8))  # pos_embed (1, 1 + 8·16, D)
    model = tiny(num_frames=16)
    out, notes = convert_state_dict(src, model, "eva_k722", source_grid=(8, None))  # 128 tokens: 8x4x4, 2x8x8, ...
    pe = out["pos_embed"]
    assert pe.shape == (1, 1 + 16 * 16, D)
    torch.testing.assert_close(pe[0, 0], src["pos_embed"][0, 0])
    old = src["pos_embed"][0, 1:].double().numpy().reshape(8, 16, D)  # (T, G·G, D), t-major token order
    expected = _linear_time_resample(old, 16).reshape(16 * 16, D)
    np.testing.assert_allclose(pe[0, 1:].numpy(), expected, atol=1e-5)
    # SPEC.md example: new frame 1 = 0.75·old0 + 0.25·old1, new frame 0 = old frame 0.
    new = pe[0, 1:].reshape(16, 16, D)
    np.testing.assert_allclose(new[1].numpy(), 0.75 * old[0] + 0.25 * old[1], atol=1e-5)
    np.testing.assert_allclose(new[0].numpy(), old[0], atol=1e-6)
    assert any("8x4x4 -> 16x4x4" in n for n in notes)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_table_resampled_for_a_float32_model_keeps_the_float32_result(dtype):
    # The table was resampled in float32, then rounded back to the checkpoint's dtype before the float32 model
    # copied it: bfloat16 kept 8 bits of each interpolated value.
    from models.pos_embed import resample_image_table, resample_video_table

    src = {k: v.to(dtype) for k, v in random_state_dict(tiny(num_frames=8)).items()}
    out, _ = convert_state_dict(src, tiny(num_frames=16), "eva_k722", source_grid=(8, None))
    upcast = src["pos_embed"].float()
    assert out["pos_embed"].dtype == torch.float32
    assert torch.equal(out["pos_embed"], resample_video_table(upcast, (8, 4), (16, 4)))
    image = {k: v.to(dtype) for k, v in image_checkpoint(grid=4).items()}
    out, _ = convert_state_dict(image, tiny(num_frames=2, img_size=48), "eva")  # G = 6, bicubic
    table = resample_image_table(image["pos_embed"].float(), 4, 6)
    assert out["pos_embed"].dtype == torch.float32
    assert torch.equal(out["pos_embed"], torch.cat((table[:, :1], table[:, 1:].repeat(1, 2, 1)), dim=1))
    # a model kept in half precision gets the table in its own dtype, as before
    out, _ = convert_state_dict(src, tiny(num_frames=16).to(dtype), "eva_k722", source_grid=(8, None))
    assert torch.equal(out["pos_embed"], resample_video_table(src["pos_embed"], (8, 4), (16, 4)))


@pytest.mark.parametrize("tubelet", [3, 5, 6])
def test_a_half_precision_patch_kernel_inflated_over_the_tubelet_keeps_the_float32_result(tubelet):
    # w / 3, w / 5, w / 6 were rounded to float16 before the float32 model copied them: the frames' kernels summed
    # to the image's within 3 to 6 half-precision roundings, not one float32 rounding.
    image = image_checkpoint()
    fp32 = image["patch_embed.proj.weight"].half().float()  # the float16 kernel's values, exactly
    half = {k: v.half() for k, v in image.items()}
    out, _ = convert_state_dict(half, tiny(num_frames=tubelet * 2, tubelet_size=tubelet), "eva")
    inflated = out["patch_embed.proj.weight"]
    reference, _ = convert_state_dict({**image, "patch_embed.proj.weight": fp32},
                                      tiny(num_frames=tubelet * 2, tubelet_size=tubelet), "eva")
    assert inflated.dtype == torch.float32
    assert torch.equal(inflated, reference["patch_embed.proj.weight"])
    torch.testing.assert_close(inflated.sum(2), fp32, atol=0, rtol=tubelet * torch.finfo(torch.float32).eps)
    # a model kept in float16 gets the kernel rounded to float16 once, from the float32 quotient
    out, _ = convert_state_dict(half, tiny(num_frames=tubelet, tubelet_size=tubelet).half(), "eva")
    assert out["patch_embed.proj.weight"].dtype == torch.float16
    assert torch.equal(out["patch_embed.proj.weight"], reference["patch_embed.proj.weight"].half())


def test_explicit_source_grid():
    src = random_state_dict(tiny(num_frames=2, img_size=64))  # (T0, S0) = (2, 8): 128 tokens = 8·4·4 as well
    out, notes = convert_state_dict(src, tiny(num_frames=4, img_size=64), "eva_k722", source_grid=(2, 8))
    assert out["pos_embed"].shape == (1, 1 + 4 * 64, D)
    with pytest.raises(ValueError, match="pos_embed"):
        convert_state_dict(src, tiny(num_frames=4, img_size=64), "eva_k722", source_grid=(3, 8))


def test_class_mapping_gathers_head_rows(tmp_path):
    src = random_state_dict(tiny(num_classes=10))
    mapping = np.array([7, 2, 9, 0], dtype=np.int64)
    path = tmp_path / "k10_to_k4.npy"
    np.save(path, mapping)
    for given in (path, str(path), mapping):
        out, notes = convert_state_dict(src, tiny(num_classes=4), "eva_k722", class_mapping=given)
        np.testing.assert_array_equal(out["head.weight"].numpy(), src["head.weight"].numpy()[[7, 2, 9, 0]])
        np.testing.assert_array_equal(out["head.bias"].numpy(), src["head.bias"].numpy()[[7, 2, 9, 0]])
    model = tiny(num_classes=4)
    missing, unexpected = load_pretrained(model, _save(tmp_path / "k10.pth", src), "eva_k722", class_mapping=path)
    assert not missing and not unexpected
    assert torch.equal(model.head.bias.detach(), src["head.bias"][[7, 2, 9, 0]])


def test_a_class_mapping_that_gives_one_row_to_several_classes_says_which(tmp_path):
    """Two classes mapped to one checkpoint row start with identical head rows: evaluated before fine-tuning they
    tie on every video. Allowed (a start for fine-tuning), and the conversion notes (shown as warnings) name them."""
    src = random_state_dict(tiny(num_classes=10))
    out, notes = convert_state_dict(src, tiny(num_classes=4), "eva_k722", class_mapping=np.array([7, 2, 7, 0]))
    assert torch.equal(out["head.weight"][0], out["head.weight"][2])
    assert [n for n in notes if n.startswith("class mapping:")] == [
        "class mapping: classes given the same checkpoint row start with the same head row and cannot be told apart "
        "until fine-tuned: row 7 -> classes 0, 2"]
    _, notes = convert_state_dict(src, tiny(num_classes=8), "eva_k722", class_mapping=np.arange(8) // 2)
    assert [n for n in notes if n.startswith("class mapping:")][0].endswith(
        "row 0 -> classes 0, 1; row 1 -> classes 2, 3; row 2 -> classes 4, 5; row 3 -> classes 6, 7")
    _, notes = convert_state_dict(src, tiny(num_classes=4), "eva_k722", class_mapping=np.array([7, 2, 9, 0]))
    assert not [n for n in notes if n.startswith("class mapping")]


def test_a_class_mapping_with_no_head_to_gather_says_which_head_is_missing():
    """A recipe's MODEL.CLASS_MAPPING with the image checkpoint (no head) or a model without a head: the note said
    the checkpoint's head "already matches the model's classes", of a head that is not there."""
    mapping = np.array([7, 2, 9, 0])
    _, notes = convert_state_dict(image_checkpoint(), tiny(num_classes=4, tubelet_size=2), "eva",
                                  class_mapping=mapping)
    assert notes[-1] == ("class mapping not applied: the checkpoint has no classification head (no head.weight), the "
                         "model's is left at its fresh init")
    _, notes = convert_state_dict(random_state_dict(tiny(num_classes=10)), tiny(num_classes=0), "eva_k722",
                                  class_mapping=mapping)
    assert notes == ["class mapping not applied: the model has no classification head (DATA.NUM_CLASSES 0)"]
    _, notes = convert_state_dict(random_state_dict(tiny(num_classes=4)), tiny(num_classes=4), "eva_k722",
                                  class_mapping=mapping)
    assert notes == ["class mapping not applied: the checkpoint head already matches the model's classes"]


def test_a_k400_head_mapped_to_k600_classes_starts_the_classes_it_lacks_at_zero(tmp_path, shared_dir):
    """K400 -> K600 by the label files: 368 of K600's classes have a K400 name, the others none. A mapping had to
    give those some K400 row (refused: "indices must lie in [0, 400)"), each then tied with that class."""
    import csv

    def names(kinetics: str) -> list[str]:
        with open(shared_dir / "data" / "labels" / f"kinetics{kinetics}_labels.csv", newline="") as f:
            return [row["name"] for row in csv.DictReader(f)]

    k400, k600 = names("400"), names("600")
    row_of = {name: i for i, name in enumerate(k400)}
    mapping = np.array([row_of.get(name, -1) for name in k600], dtype=np.int64)
    np.save(tmp_path / "k400_to_k600.npy", mapping)
    src = random_state_dict(tiny(num_classes=400))
    out, notes = convert_state_dict(src, tiny(num_classes=600), "eva_k722", class_mapping=tmp_path / "k400_to_k600.npy")
    kept = mapping >= 0
    assert kept.sum() == 368
    assert torch.equal(out["head.weight"][kept], src["head.weight"][mapping[kept]])
    assert torch.equal(out["head.bias"][kept], src["head.bias"][mapping[kept]])
    assert not out["head.weight"][~kept].any() and not out["head.bias"][~kept].any()
    assert notes == ["head: 400 checkpoint classes gathered to 600 by the class mapping; 232 classes it gives -1 "
                     "(none of the checkpoint's) start at zero"]  # and no classes said to share a row
    model = tiny(num_classes=600)
    path = tmp_path / "k400.safetensors"
    save_file(src, str(path))
    assert load_pretrained(model, path, class_mapping=tmp_path / "k400_to_k600.npy") == ([], [])
    assert model.head.weight[k600.index("abseiling")].equal(src["head.weight"][k400.index("abseiling")])
    with torch.device("meta"):
        meta = tiny(num_classes=600)
    assert weights_fit(meta, path, class_mapping=tmp_path / "k400_to_k600.npy") == ([], [])


@pytest.mark.parametrize("bad, message", [
    (np.array([0, 1, 2], dtype=np.int64), "3 entries but the model has 4"),
    (np.array([0.0, 1.0, 2.0, 3.0]), "1-D integer"),
    (np.zeros((2, 2), dtype=np.int64), "1-D integer"),
    (np.array([0, 1, 2, 10], dtype=np.int32), r"\[0, 10\)"),
    (np.array([0, -2, 2, 3], dtype=np.int64), r"\[0, 10\).*or be -1 for a class it lacks"),
])
def test_bad_class_mapping(tmp_path, bad, message):
    path = tmp_path / "bad_mapping.npy"
    np.save(path, bad)
    src = random_state_dict(tiny(num_classes=10))
    with pytest.raises(ValueError, match=f"bad_mapping.npy.*{message}"):
        convert_state_dict(src, tiny(num_classes=4), "eva_k722", class_mapping=path)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        convert_state_dict(src, tiny(num_classes=4), "eva_k722", class_mapping=tmp_path / "missing.npy")



def test_a_class_mapping_that_is_no_npy_file_says_what_it_is(tmp_path):
    src = random_state_dict(tiny(num_classes=10))
    npz, text, folder = tmp_path / "mapping.npz", tmp_path / "mapping.npy", tmp_path / "mappings"
    np.savez(npz, mapping=np.arange(4))  # np.load gave an archive without .ndim: an AttributeError traceback
    text.write_text("0 1 2 3\n")  # numpy's words: "This file contains pickled (object) data"
    folder.mkdir()
    for path, words in ((npz, "not a .npy file (a zip archive (np.savez's .npz?)): save the integer array with "
                              "np.save"),
                        (text, "not a .npy file (no NumPy header): save the integer array with np.save")):
        with pytest.raises(ValueError) as error:
            convert_state_dict(src, tiny(num_classes=4), "eva_k722", class_mapping=path)
        assert str(error.value) == f"class mapping {path}: {words}"
    with pytest.raises(FileNotFoundError) as missing:
        convert_state_dict(src, tiny(num_classes=4), "eva_k722", class_mapping=folder)
    assert str(missing.value) == f"class mapping file not found: {folder} (a folder, not a file)"


def test_head_dropped_without_mapping(tmp_path, caplog):
    src = random_state_dict(tiny(num_classes=10))
    out, notes = convert_state_dict(src, tiny(num_classes=4), "eva_k722")
    assert "head.weight" not in out and "head.bias" not in out and any("dropped" in n for n in notes)
    assert "head.weight" in src  # input untouched
    model = tiny(num_classes=4)
    with caplog.at_level(logging.INFO, logger="models.checkpoint"):
        missing, unexpected = load_pretrained(model, _save(tmp_path / "k10.pth", src), "eva_k722")
    assert missing == ["head.weight", "head.bias"] and unexpected == []
    assert "head.weight" in caplog.text
    assert torch.equal(model.blocks[1].mlp.fc2.weight.detach(), src["blocks.1.mlp.fc2.weight"])


def test_shape_mismatch_names_key_and_shapes():
    src = random_state_dict(tiny())
    src["blocks.1.mlp.fc1.weight"] = torch.zeros(48, D)
    with pytest.raises(ValueError, match=r"blocks\.1\.mlp\.fc1\.weight.*\(48, 32\).*\(64, 32\)"):
        convert_state_dict(src, tiny(), "eva_k722")
    with pytest.raises(ValueError, match="unknown checkpoint mode 'clip'"):
        convert_state_dict(src, tiny(), "clip")


def test_other_patch_size_names_both_patch_sizes(tmp_path):
    # The demo's checkpoint: eva-tiny/8 at 48 px (6x6 patches, one tubelet of 8), with its config saved. Loading it
    # into an eva-tiny/16 model used to fail on pos_embed ("gives 1 frames of 3x3 patches ... 36 patch tokens").
    cfg = load_config("configs/demo.yaml", ["DATA.LABEL_LIST", ""])
    path = _save(tmp_path / "best.pth", {"model": random_state_dict(build_model(cfg, device="meta")),
                                         "config": cfg.dump()})
    cfg.defrost()
    cfg.MODEL.ARCH = "eva-tiny/16"
    for mode in ("eva_k722", "eva"):
        with pytest.raises(ValueError) as error:
            load_pretrained(build_model(cfg), path, mode)
        message = str(error.value)
        assert "MODEL.ARCH's patch size (16 px) differs from the checkpoint's (8 px)" in message, message
        assert "pos_embed" not in message and str(path) in message
    # An image checkpoint's 2-D kernel with other patches is refused the same way, before any inflation.
    with pytest.raises(ValueError, match=r"patch size \(16 px\) differs from the checkpoint's \(8 px\)"):
        convert_state_dict(image_checkpoint(), EVAVideoTransformer(img_size=64, num_frames=4, patch_size=16,
                                                                   tubelet_size=2, num_classes=5, embed_dim=D,
                                                                   depth=2, num_heads=2, mlp_hidden_dim=64), "eva")


def test_other_tubelet_size_is_named():
    src = random_state_dict(tiny(num_frames=8, tubelet_size=2))
    with pytest.raises(ValueError, match=r"DATA\.TUBELET_SIZE \(4\) differs from the checkpoint's tubelet size \(2\)"):
        convert_state_dict(src, tiny(num_frames=8, tubelet_size=4), "eva_k722")


def test_a_video_checkpoint_in_eva_mode_is_refused_even_when_its_table_is_square():
    # 4 frames of 8x8 patches: 256 tokens, the length of a 16x16 image table. 'eva' mode read it as one and
    # resampled it to the model's 4x4 grid without a word (a K400 checkpoint's 16 x 16 x 16 = 64² alike).
    video = random_state_dict(tiny(num_frames=4, img_size=64))
    with pytest.raises(ValueError) as error:
        convert_state_dict(video, tiny(), "eva")
    message = str(error.value)
    assert "the checkpoint is a video model's (a 3-D patch kernel and a table of 256 patch tokens)" in message
    assert "MODEL.PRETRAINED_MODE eva_k722" in message
    out, _ = convert_state_dict(video, tiny(), "eva_k722", source_grid=(4, 8))  # the mode it names adapts it
    assert out["pos_embed"].shape == (1, 1 + 4 * 16, D)


def test_another_width_names_both_widths_and_the_checkpoints_preset(tmp_path):
    cfg = load_config("configs/demo.yaml", ["DATA.LABEL_LIST", "", "MODEL.ARCH", "eva-tiny/16"])
    path = _save(tmp_path / "best.pth", {"model": random_state_dict(build_model(cfg, device="meta"))})
    cfg.defrost()
    cfg.MODEL.ARCH = "eva-s/16"
    with pytest.raises(ValueError) as error:
        load_pretrained(build_model(cfg), path, "eva_k722")
    message = str(error.value)
    assert message.startswith(f"{path}: cls_token: the checkpoint's model is 128 wide and MODEL.ARCH's 384"), message
    assert "(128 wide, 16 px patches, 4 blocks: MODEL.ARCH eva-tiny/16;" in message
    src = random_state_dict(tiny())  # no preset of these sizes: said so
    with pytest.raises(ValueError, match="32 wide and MODEL.ARCH's 48.*no MODEL.ARCH preset has these dimensions"):
        convert_state_dict(src, EVAVideoTransformer(img_size=32, num_frames=4, patch_size=8, tubelet_size=1,
                                                    num_classes=5, embed_dim=48, depth=2, num_heads=2,
                                                    mlp_hidden_dim=64), "eva_k722")


def test_conversion_on_meta_model():
    with torch.device("meta"):
        model = tiny(num_frames=8)
    out, _ = convert_state_dict(random_state_dict(tiny(num_frames=4)), model, "eva_k722", source_grid=(4, 4))
    assert out["pos_embed"].shape == (1, 1 + 8 * 16, D) and out["pos_embed"].device.type == "cpu"


# ----------------------------------------------------------------------------------------------------- reading
def _save(path, obj):
    torch.save(obj, path)
    return path


def test_nested_and_prefixed_files_load(tmp_path):
    sd = random_state_dict(tiny())
    files = {
        "raw.pth": sd,
        "module.pth": {"module": sd},
        "model.pth": {"model": sd, "epoch": 3, "optimizer": {"state": {}, "param_groups": []}},
        "state_dict.ckpt": {"state_dict": sd},
        "prefixed.pth": {f"module.{k}": v for k, v in sd.items()},
        # timm's EMA weights kept alone ('model_ema' was "no tensors found (top-level keys: ['model_ema'])")
        "model_ema.pth": {"model_ema": sd, "epoch": 3},
        "state_dict_ema.pth": {"state_dict_ema": {f"module.{k}": v for k, v in sd.items()}},
        "nested_prefixed.pth": {"model": {f"module.{k}": v for k, v in sd.items()}},
        # the model's settings under 'model', its weights under 'state_dict': was "no tensors found (top-level
        # keys: ['arch', 'depth'])", the settings' keys
        "settings_under_model.pth": {"model": {"arch": "eva-tiny", "depth": 2}, "state_dict": sd},
        "empty_model_entry.pth": {"model": {}, "module": sd},
    }
    for name, obj in files.items():
        loaded = read_state_dict(_save(tmp_path / name, obj))
        assert loaded.keys() == sd.keys(), name
        assert all(torch.equal(loaded[k], sd[k]) for k in sd), name
        model = tiny()
        missing, unexpected = load_pretrained(model, tmp_path / name, "eva_k722")
        assert not missing and not unexpected, name
        assert torch.equal(model.pos_embed.detach(), sd["pos_embed"]), name


def test_raw_weights_beside_timms_ema_ones_stay_the_ones_read(tmp_path):
    sd = random_state_dict(tiny())
    ema = random_state_dict(tiny(), seed=1)
    for wrapped in ({"model": sd, "model_ema": ema}, {"state_dict": sd, "state_dict_ema": ema}):
        loaded = read_state_dict(_save(tmp_path / "both.pth", wrapped))
        assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_entries_under_keys_that_are_no_names_are_left_out_not_a_crash(tmp_path):
    """A key that is no string (a dict of tensors by index saved beside the weights) crashed every reader with
    AttributeError: 'int' object has no attribute 'startswith' (a traceback from train.py)."""
    sd = random_state_dict(tiny())
    model = tiny()
    missing, unexpected = load_pretrained(model, _save(tmp_path / "mixed.pth", {0: torch.zeros(3), **sd}))
    assert not missing and not unexpected
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    path = _save(tmp_path / "by_index.pth", {0: torch.zeros(3), 1: torch.ones(2)})
    with pytest.raises(CheckpointError) as error:
        check_checkpoint(path)
    assert str(error.value) == f"{path}: no tensors found (top-level keys: ['0', '1'])"


def test_a_file_none_of_whose_tensors_fits_the_model_is_refused(tmp_path):
    """A fine-tuning run must not start from its initialisation while saying it starts from MODEL.PRETRAINED: a
    file none of whose tensors is a model key (another framework's prefixes, another model) is refused by name."""
    model = tiny()
    sd = random_state_dict(model)
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in sd.items()}, "epoch": 1}, path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"lightning\.ckpt: none of its 34 tensors .* model\.blocks\.0\."):
        load_pretrained(model, path, "eva_k722")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # one matching tensor is enough (a partial load is logged, as the original's strict=False)
    torch.save({"pos_embed": sd["pos_embed"], "other.weight": torch.zeros(2)}, path)
    missing, unexpected = load_pretrained(model, path, "eva_k722")
    assert unexpected == ["other.weight"] and "pos_embed" not in missing


def test_weights_saved_from_a_compiled_model_load_without_its_prefix_said_once(tmp_path, caplog):
    """A torch.compile'd model saves its names as '_orig_mod.<name>' ('module._orig_mod.<name>' under DDP): such a
    file was refused as weights saved under another prefix, with advice to re-save them without it."""
    from models.checkpoint import COMPILE_NOTE

    source = tiny()
    compiled = torch.compile(source)  # compiles at its first call: saving it compiles nothing
    wrapper = torch.nn.Module()
    wrapper.module = compiled  # as DistributedDataParallel holds the model it wraps
    files = {"compiled.pth": compiled.state_dict(), "ddp.pth": wrapper.state_dict(),
             "training.pth": {"model": compiled.state_dict(), "epoch": 3}}
    assert next(iter(files["ddp.pth"])).startswith("module._orig_mod.")
    for name, obj in files.items():
        path = _save(tmp_path / name, obj)
        check_checkpoint(path)
        assert weights_fit(tiny(), path) == ([], []), name
        model, notes = tiny(), []
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="models.checkpoint"):
            assert load_pretrained(model, path, notes_to=notes) == ([], []), name
        assert notes == [COMPILE_NOTE]
        assert [r.getMessage() for r in caplog.records if "_orig_mod" in r.getMessage()] == [f"  {COMPILE_NOTE}"]
        assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items()), name
    # names of a compiled model and plain ones in one file: no prefix fits them all, refused
    mixed = {**compiled.state_dict(), "head.weight": torch.zeros(5, D)}
    path = _save(tmp_path / "mixed.pth", mixed)
    expected = (f"{path}: 34 of its 35 names carry torch.compile's prefix '_orig_mod.', the others not (e.g. "
                "'head.weight'): the weights of a compiled model mixed with others; save one model's, a compiled "
                "one's as model._orig_mod.state_dict()")
    for read in (check_checkpoint, lambda p: load_pretrained(tiny(), p), lambda p: weights_fit(tiny(), p)):
        with pytest.raises(CheckpointError) as error:
            read(path)
        assert str(error.value) == expected
    with pytest.raises(ValueError, match="34 of its 35 names carry torch.compile's prefix"):
        convert_state_dict(mixed, tiny(), "eva_k722")


@pytest.mark.parametrize("prefix", ["backbone.", "encoder.", "model.encoder."])
def test_weights_saved_under_a_prefix_are_refused_naming_it_and_load_once_saved_without(tmp_path, prefix):
    """A backbone saved inside a larger model (mmaction's 'backbone.', an encoder's 'encoder.') was refused as
    "the weights of another model, or names saved with another prefix", without saying which prefix."""
    sd = random_state_dict(tiny())
    state_dict = {prefix + k: v for k, v in sd.items()}
    state_dict["cls_head.fc.weight"] = torch.zeros(5, D)
    path = tmp_path / "prefixed.pth"
    torch.save({"state_dict": state_dict}, path)
    for check in (lambda: load_pretrained(tiny(), path), lambda: weights_fit(tiny(), path)):
        with pytest.raises(CheckpointError) as error:
            check()
        assert str(error.value).endswith(
            f"its names carry the prefix {prefix!r}, without which 34 of them are the model's; save them without it, "
            f"{{k.removeprefix({prefix!r}): v for k, v in state_dict.items()}}")
        assert str(error.value).startswith(f"{path}: none of its 35 tensors is a tensor of the model")
    torch.save({k.removeprefix(prefix): v for k, v in state_dict.items()}, path)  # what the message says to do
    model = tiny()
    missing, unexpected = load_pretrained(model, path)
    assert not missing and unexpected == ["cls_head.fc.weight"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


def test_safetensors_loads(tmp_path):
    sd = random_state_dict(tiny())
    save_file(sd, str(tmp_path / "w.safetensors"))
    loaded = read_state_dict(tmp_path / "w.safetensors")
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_an_exported_file_starts_a_model_of_other_frames_from_the_geometry_it_records(tmp_path):
    """An exported .safetensors records its frames and input size, but a load into a model of another frame count
    said the file had "no config that says its geometry" and asked for MODEL.PRETRAINED_FRAMES (64 patch tokens
    could be 4 frames of 4x4 patches, 16 of 2x2 or 1 of 8x8)."""
    from models.pos_embed import resample_video_table
    from models.weights_file import save_weights_file

    source = tiny()
    sd = random_state_dict(source)
    source.load_state_dict(sd)
    path = tmp_path / "exported.safetensors"
    save_weights_file(source, str(path), arch="tiny", mean=(0, 0, 0), std=(1, 1, 1))
    model = tiny(num_frames=8)
    assert weights_fit(model, path) == ([], [])
    notes: list[str] = []
    assert load_pretrained(model, path, notes_to=notes) == ([], [])
    assert notes[0] == "pos_embed: source grid 4x4x4 tokens, 4 frames of 32 px (from the checkpoint's config)"
    assert torch.equal(model.pos_embed.detach(), resample_video_table(sd["pos_embed"], (4, 4), (8, 4)))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items() if k != "pos_embed")


def test_a_cut_short_safetensors_file_says_so_in_words(tmp_path):
    from models.weights_file import read_weights_metadata, save_weights_file

    model = tiny()
    whole = tmp_path / "w.safetensors"
    save_weights_file(model, str(whole), arch="tiny", mean=(0, 0, 0), std=(1, 1, 1))
    data = whole.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    cut, in_header = tmp_path / "cut.safetensors", tmp_path / "in_header.safetensors"
    cut.write_bytes(data[:-100])
    in_header.write_bytes(data[:50])
    # safetensors' own words were "incomplete metadata, file not fully covered" and "invalid header length"
    expected = {cut: f"{cut}: not a readable safetensors file: cut short: {len(data) - 100} bytes of a safetensors "
                     f"file whose header describes {len(data)} (an interrupted save, copy or download?); save, copy "
                     "or download it again",
                in_header: f"{in_header}: not a readable safetensors file: cut short: 50 bytes, inside its "
                           f"{header}-byte header (an interrupted save, copy or download?); save, copy or download it "
                           "again"}
    for path, message in expected.items():
        for read in (read_state_dict, lambda p: load_pretrained(tiny(), p), lambda p: read_weights_metadata(str(p))):
            with pytest.raises(CheckpointError) as error:
                read(path)
            assert str(error.value) == message
    assert read_weights_metadata(str(whole))["num_classes"] == 5


_LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 1234567\n"
_LFS_REASON = ("a Git LFS pointer of a 1234567-byte file, not the file itself (a clone or copy made without git-lfs?): "
               "fetch it with 'git lfs pull', or download the file")


def test_a_git_lfs_pointer_in_place_of_the_weights_says_so_and_how_to_fetch_them(tmp_path):
    """A repository cloned without git-lfs leaves a short text file under the weights' name; it was called a file
    that begins with the text 'version https://git-lfs...' (.pth) or "header too large" (.safetensors)."""
    from models.weights_file import read_weights_metadata

    for name, kind in (("w.pth", "torch checkpoint"), ("w.safetensors", "safetensors file")):
        path = tmp_path / name
        path.write_bytes(_LFS_POINTER)
        for read in (read_state_dict, lambda p: load_pretrained(tiny(), p), check_checkpoint):
            with pytest.raises(CheckpointError) as error:
                read(path)
            assert str(error.value) == f"{path}: not a readable {kind}: {_LFS_REASON}"
    with pytest.raises(CheckpointError) as error:
        read_weights_metadata(str(path))
    assert str(error.value) == f"{path}: not a readable safetensors file: {_LFS_REASON}"


_EMPTY = ("an empty file (0 bytes), which holds no weights (an interrupted save, copy or download?): save, copy or "
          "download it again")


def test_a_safetensors_name_on_what_is_no_safetensors_file_says_what_it_is(tmp_path):
    """safetensors said "header too small" of an empty file and "header too large" of a torch.save one or a web
    page saved under the weights' name; torch.load reads such a name as safetensors, so a torch file needs another."""
    from models.weights_file import read_weights_metadata

    torch.save(random_state_dict(tiny()), tmp_path / "torch.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "page.safetensors").write_bytes(b"<!DOCTYPE html>\n<html><body>Not found</body></html>\n")
    reasons = {"torch": "not a readable safetensors file: a torch.save file, not safetensors: give it a name ending "
                        "in .pth",
               "empty": _EMPTY,
               "page": "not a readable safetensors file: no safetensors header: it begins with the text "
                       "'<!DOCTYPE html>'; save, copy or download it again"}
    for stem, reason in reasons.items():
        path = tmp_path / f"{stem}.safetensors"
        for read in (read_state_dict, lambda p: load_pretrained(tiny(), p), lambda p: read_weights_metadata(str(p))):
            with pytest.raises(CheckpointError) as error:
                read(path)
            assert str(error.value) == f"{path}: {reason}"
    (tmp_path / "torch.safetensors").rename(tmp_path / "torch.pth")  # as the message says: then it loads
    assert read_state_dict(tmp_path / "torch.pth").keys() == tiny().state_dict().keys()


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        read_state_dict(tmp_path / "nowhere.pth")
    with pytest.raises(CheckpointError, match=r"empty\.pth: no tensors"):
        read_state_dict(_save(tmp_path / "empty.pth", {"epoch": 1}))


class _CreatesMarker:
    """Unpickling this object calls open(marker, 'w'), i.e. creates a file: the stand-in for arbitrary code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def test_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "executed.txt"
    path = _save(tmp_path / "evil.pth", {"model": random_state_dict(tiny()), "payload": _CreatesMarker(str(marker))})
    with pytest.raises(CheckpointError) as read:
        read_state_dict(path)
    assert str(read.value).startswith(f"{path}: refused to load the pickled global 'io.open'; it was not executed. "
                                      "Only tensors and plain data are read from checkpoints."), read.value
    with pytest.raises(CheckpointError) as loaded:  # the loader refuses it the same way, not on a later error
        load_pretrained(tiny(), path, "eva_k722")
    assert str(loaded.value) == str(read.value)
    assert not marker.exists()
    # The payload is real: an unsafe load would have run it.
    handle = torch.load(path, weights_only=False)["payload"]
    handle.close()
    assert marker.exists()


def test_a_pickled_model_is_refused_with_the_way_to_save_its_weights(tmp_path):
    """torch.save(model) pickles the model object: the advice for other refused files, re-save ckpt['model'], failed
    on it (a model is no dict); the one given works, and what it writes loads."""
    model = tiny()
    for name, obj in (("whole.pth", model), ("in_dict.pth", {"model": model, "epoch": 1})):
        path = tmp_path / name
        torch.save(obj, path)
        with pytest.raises(CheckpointError) as error:
            read_state_dict(path)
        assert str(error.value) == (
            f"{path}: a pickled model object (torch.save(model): it holds torch.nn.modules.activation.GELU), not a "
            "state dict; it was not unpickled, which would run code from the file. If you trust the file, save the "
            "model's weights alone, torch.save(torch.load(file, weights_only=False).state_dict(), 'weights.pth') "
            "(for a model kept under a key, e.g. ['model'], call state_dict() on that entry), and give that file")
    torch.save(torch.load(tmp_path / "whole.pth", weights_only=False).state_dict(), tmp_path / "weights.pth")
    loaded = read_state_dict(tmp_path / "weights.pth")
    assert loaded.keys() == model.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


class _OwnParameters(torch.nn.Module):
    """A model that holds its parameters itself: its pickle names no torch.nn class."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))


def test_a_pickled_model_naming_no_torch_nn_class_is_called_a_model_too(tmp_path):
    """Its refusal advised re-saving ckpt['model'] (indexing a model fails), not the model's state_dict()."""
    path = _save(tmp_path / "own.pth", _OwnParameters())
    for read in (read_state_dict, check_checkpoint, lambda p: load_pretrained(tiny(), p)):
        with pytest.raises(CheckpointError) as error:
            read(path)
        assert str(error.value).startswith(f"{path}: a pickled model object (torch.save(model): it holds "
                                           "torch.nn.Module), not a state dict; it was not unpickled"), error.value
    # a plain-data file that carries another refused global is still refused by that global's name
    path = _save(tmp_path / "dict.pth", {"weight": torch.ones(3), "extra": _NotAModel()})
    with pytest.raises(CheckpointError, match=r"refused to load the pickled global '.*_NotAModel'"):
        read_state_dict(path)


class _NotAModel:
    pass


def _safetensors_with_header(path: Path, header: bytes, data: bytes = bytes(8)) -> Path:
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    return path


def test_a_safetensors_file_with_a_damaged_header_says_so_and_what_to_do(tmp_path):
    """safetensors' own words came alone ("Error while deserializing header: header too large"), naming neither the
    header as damaged nor what to do."""
    from models.weights_file import read_weights_metadata

    cases = {
        "json": (_safetensors_with_header(tmp_path / "json.safetensors", b'{"w": {"dtype": "F32", "shape": [2]'),
                 "invalid JSON in header"),
        "offsets": (_safetensors_with_header(tmp_path / "offsets.safetensors",
                                             b'{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}'),
                    "invalid shape, data type, or offset for tensor"),
        "length": (tmp_path / "length.safetensors", "header too large"),
    }
    (tmp_path / "length.safetensors").write_bytes((10 ** 12).to_bytes(8, "little") + b'{"w": 1}')
    for path, words in cases.values():
        for read in (read_state_dict, check_checkpoint, lambda p: read_weights_metadata(str(p))):
            with pytest.raises(CheckpointError) as error:
                read(path)
            message = str(error.value)
            assert message.startswith(f"{path}: not a readable safetensors file: its header is damaged (Error while "
                                      "deserializing header: "), message
            assert words in message and message.endswith("); save, copy or download it again"), message
            assert "\n" not in message and error.value.__cause__ is None


def test_training_checkpoint_with_config_and_numpy_scalars(tmp_path):
    model = tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(1, 4, 3, 32, 32)).sum().backward()
    optimizer.step()
    config = CfgNode()
    config.MODEL = CfgNode()
    config.MODEL.ARCH = "eva-1b/14"
    config.DATA = CfgNode({"NUM_FRAMES": 8, "MEAN": [123.675, 116.28, 103.53]})
    config.freeze()
    ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "lr_scheduler": {"t_initial": 10},
            "max_accuracy": np.float64(81.5), "best_epoch": np.int64(3), "epoch": 4, "amp": {}, "config": config}
    loaded = read_state_dict(_save(tmp_path / "ckpt_epoch_4.pth", ckpt))
    assert loaded.keys() == model.state_dict().keys()
    assert torch.equal(loaded["head.weight"], model.head.weight.detach())


def test_a_training_checkpoint_with_ema_weights_gives_those(tmp_path, caplog):
    """A run with TRAIN.EMA evaluates (and writes best.pth from) the averaged weights; evaluating, predicting or
    fine-tuning from its checkpoint reads the same ones, not the raw "model" entry. Without EMA: "model"."""
    model, ema = tiny(), tiny()
    with torch.no_grad():
        ema.head.weight.fill_(0.5)
    ckpt = {"model": model.state_dict(), "ema": ema.state_dict(), "epoch": 2, "config": "MODEL: {}\n"}
    with caplog.at_level(logging.INFO, logger="models.checkpoint"):
        loaded = read_state_dict(_save(tmp_path / "ckpt_epoch_2.pth", ckpt))
    assert torch.equal(loaded["head.weight"], ema.head.weight) and loaded.keys() == ema.state_dict().keys()
    assert "using its EMA weights" in caplog.text
    # ... and said where the tools and a run show it (they show no log record of this module): train.py's log
    # has the loader's notes as "weights:" lines
    notes: list[str] = []
    load_pretrained(tiny(), tmp_path / "ckpt_epoch_2.pth", notes_to=notes)
    assert notes == ["using its EMA weights (the ones the run evaluated), not its raw 'model' weights"]
    ckpt["ema"] = None  # TRAIN.EMA off: the entry is None
    loaded = read_state_dict(_save(tmp_path / "ckpt_epoch_3.pth", ckpt))
    assert torch.equal(loaded["head.weight"], model.head.weight)


def test_legacy_format_and_unreadable_files(tmp_path):
    config = CfgNode({"TRAIN": CfgNode({"LR": 1e-6})})
    sd = random_state_dict(tiny())
    path = tmp_path / "legacy.pth"
    torch.save({"model": sd, "config": config, "max_accuracy": np.float32(0.5)}, path,
               _use_new_zipfile_serialization=False)
    assert read_state_dict(path).keys() == sd.keys()
    (tmp_path / "garbage.pth").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        read_state_dict(tmp_path / "garbage.pth")
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "legacy.pth").read_bytes()[:100])
    with pytest.raises(CheckpointError) as info:
        read_state_dict(tmp_path / "truncated.pth")
    assert str(info.value) == (f"{tmp_path / 'truncated.pth'}: not a readable torch checkpoint: damaged: it ends "
                               "inside its pickle (cut short?)")
    torch.save(sd, tmp_path / "zip.pth")
    (tmp_path / "truncated_zip.pth").write_bytes((tmp_path / "zip.pth").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated_zip.pth"):
        read_state_dict(tmp_path / "truncated_zip.pth")



# Files that are neither a torch zip nor a pickle, and what is said of each. Torch's weights-only unpickler reads
# such bytes as arbitrary opcodes, and its complaint ("KeyError: 105", "IndexError: pop from empty list") was in the
# message, though it says nothing of the file; before that, any exception type crashed train.py with a traceback.
_TEXT, _BYTES = "neither a zip archive nor a pickle: it begins with the text ", "neither a zip archive nor a " \
    "pickle: it begins with the bytes "
GARBAGE = {
    "hi.pth": (b"hi\n", f"{_TEXT}'hi'"),  # `echo hi > x.pth`: KeyError: 105
    "random17.pth": (np.random.default_rng(17).bytes(100), f"{_BYTES}73 cc af bd 55 d2 56 d8"),  # IndexError
    "random21.pth": (np.random.default_rng(21).bytes(100), f"{_BYTES}72 68 29 4d 82 52 f7 c7"),
    # 'j' (LONG_BINGET) then a 4-byte memo index: torch raised "KeyError: 174812789"
    "memo_index.pth": (b"j\x75\x6c\x6b\x0a\xd7\xe1\xb0" + bytes(range(256)) * 4, f"{_TEXT}'julk'"),
    "utf8.pth": (b"X\xbe\x64\xd8\x46\xaa\xb6\x4f" * 8, f"{_BYTES}58 be 64 d8 46 aa b6 4f"),  # UnicodeDecodeError
    # another file given by mistake: its first byte is no pickle opcode. This was reported as a refused unsafe
    # pickle ("safe (weights_only) loading failed and the file was not unpickled further")
    "labels.csv": (b"id,name\n0,growing\n", f"{_TEXT}'id,name'"),
    "demo.yaml": (b"# Demo\nDATA:\n  ROOT: data\n", f"{_TEXT}'# Demo'"),
    # a pickle's header, then bytes that are no pickle: a damaged legacy-format file
    "bad_pickle.pth": (b"\x80\x02" + np.random.default_rng(3).bytes(100),
                       "damaged: its pickle cannot be read (cut short, or its bytes changed?)"),
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_files_are_checkpoint_errors(tmp_path, name):
    data, reason = GARBAGE[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    assert str(info.value) == f"{path}: not a readable torch checkpoint: {reason}"
    assert "Error" not in str(info.value) and info.value.__cause__ is None  # no unpickler exception, chained or not
    with pytest.raises(CheckpointError, match=f"{name}: not a readable torch checkpoint"):
        load_pretrained(tiny(), path, "eva_k722")


def test_a_zip_archive_that_is_no_checkpoint_is_called_a_zip_archive(tmp_path):
    """A zip of something else (a dataset's archive given by mistake) is named as a zip torch does not read, with
    torch's own reason, not as a damaged checkpoint."""
    path = tmp_path / "videos.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train.txt", "a.mp4 0\n")
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable torch checkpoint: a zip archive torch does not read as a "
                              "checkpoint: "), message
    assert "\n" not in message and info.value.__cause__ is None


def test_a_checkpoint_cut_short_says_so_wherever_it_was_cut(tmp_path):
    """A torch file cut short said "not a readable torch checkpoint: OSError: [Errno 22] Invalid argument" at some
    lengths, "RuntimeError: PytorchStreamReader failed reading zip archive" at others; an empty one "EOFError"."""
    torch.save({"model": random_state_dict(tiny()), "epoch": 1}, tmp_path / "zip.pth")
    data = (tmp_path / "zip.pth").read_bytes()
    cut = tmp_path / "cut.pth"
    for length in sorted({1, 3, 4, 33, 1000, *(len(data) * k // 20 for k in range(1, 20)), len(data) - 1}):
        cut.write_bytes(data[:length])
        with pytest.raises(CheckpointError) as info:
            read_state_dict(cut)
        assert str(info.value) == (f"{cut}: damaged: cut short: {length} bytes of a zip archive (torch's format) "
                                   "without its end record (an interrupted save, copy or download?), or with "
                                   "more than 64 KiB appended after it; save, copy or download it again"), length
    cut.write_bytes(data + bytes(70 << 10))  # a whole archive with bytes appended: its end record is not found
    with pytest.raises(CheckpointError, match=r"without its end record .*, or with more than 64 KiB appended"):
        read_state_dict(cut)
    cut.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        read_state_dict(cut)
    assert str(info.value) == f"{cut}: {_EMPTY}"


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from tests.video_fixtures import synthetic_dataset

    return synthetic_dataset(tmp_path_factory, "synth_ckpt", 1, 1, num_frames=8, size=(48, 32))


@pytest.mark.parametrize("name", ["hi.pth", "random21.pth"])
def test_train_only_test_on_a_garbage_checkpoint_is_one_line_exit_2(tmp_path, tiny_dataset, capsys, name):
    import train

    path = tmp_path / name
    path.write_bytes(GARBAGE[name][0])
    opts = _tiny_run_opts(tiny_dataset, tmp_path / "out")
    demo = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    rc = train.main(["--cfg", demo, "--only_test", "--resume", str(path), "--opts", *opts])
    captured = capsys.readouterr()
    errors = [line for line in (captured.out + captured.err).splitlines() if line.startswith("error: ")]
    assert rc == 2 and errors == [f"error: {path}: not a readable torch checkpoint: {GARBAGE[name][1]}"], captured
    assert "Traceback" not in captured.out + captured.err


def _tiny_run_opts(data: Path, out: Path) -> list[str]:
    return ["DATA.ROOT", str(data), "DATA.TRAIN_FILE", str(data / "train.txt"), "DATA.VAL_FILE", str(data / "val.txt"),
            "DATA.LABEL_LIST", str(data / "labels.csv"), "DATA.INPUT_SIZE", "32", "DATA.NUM_FRAMES", "4",
            "DATA.TUBELET_SIZE", "2", "DATA.NUM_THREADS", "1", "DATA.NUM_WORKERS", "1", "DATA.INDEX_WORKERS", "1",
            "LOG.PROGRESS_BAR", "False", "LOG.TENSORBOARD", "False", "OUTPUT", str(out)]


def _with_one_more_block(model) -> dict[str, torch.Tensor]:
    sd = dict(model.state_dict())
    depth = len(model.blocks)
    sd.update({k.replace("blocks.0.", f"blocks.{depth}.", 1): v for k, v in model.state_dict().items()
               if k.startswith("blocks.0.")})
    return sd


def test_evaluating_a_deeper_models_checkpoint_is_one_line_exit_2(tmp_path, tiny_dataset, capsys):
    """Its extra blocks were ignored and a truncated model scored."""
    import train

    demo = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    opts = _tiny_run_opts(tiny_dataset, tmp_path / "out")
    model = build_model(load_config(demo, opts), device="cpu")
    path = tmp_path / "ckpt_epoch_0.pth"
    listed_before = sorted(p.name for p in tiny_dataset.iterdir())
    torch.save({"model": _with_one_more_block(model), "epoch": 0}, path)
    depth = len(model.blocks)
    expected = f"error: checkpoint {path} does not fit MODEL.ARCH eva-tiny/8 with 4 classes: the model has no " \
               f"blocks.{depth}.norm1.weight, "
    for plan in (["--dry-run"], []):  # the plan finds it too
        rc = train.main(["--cfg", demo, "--only_test", *plan, "--resume", str(path), "--opts", *opts])
        captured = capsys.readouterr()
        errors = [line for line in (captured.out + captured.err).splitlines() if line.startswith("error: ")]
        assert rc == 2 and len(errors) == 1, captured
        assert errors[0].startswith(expected), errors
    # refused from the names and shapes before the lists were indexed (hours for a first build): OUTPUT holds no
    # config.yaml, log or metrics of a run that never ran, and no index was built beside the list
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert sorted(p.name for p in tiny_dataset.iterdir()) == listed_before


def test_only_test_of_a_deeper_models_pretrained_weights_is_one_line_exit_2(tmp_path, tiny_dataset, capsys):
    """--only_test without a checkpoint scores MODEL.PRETRAINED: a deeper model's weights were a WARNING there, and
    the truncated model was scored (exit 0)."""
    import train

    demo = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    opts = _tiny_run_opts(tiny_dataset, tmp_path / "out")
    model = build_model(load_config(demo, opts), device="cpu")
    path = tmp_path / "deeper.safetensors"  # the header alone is read before the lists are
    save_file({k: v.clone() for k, v in _with_one_more_block(model).items()}, str(path))
    rc = train.main(["--cfg", demo, "--only_test", "--pretrained", str(path), "--opts", *opts])
    captured = capsys.readouterr()
    errors = [line for line in (captured.out + captured.err).splitlines() if line.startswith("error: ")]
    assert rc == 2 and len(errors) == 1, captured
    # named by the flag the user typed (train.py's --pretrained), with its key
    assert errors[0].startswith(f"error: --pretrained {path} (MODEL.PRETRAINED) does not fit MODEL.ARCH eva-tiny/8 "
                                f"with 4 classes: the model has no blocks.{len(model.blocks)}.attn."), errors  # sorted
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # refused before the run


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_fit_finds_from_shapes_what_the_load_finds(tmp_path, suffix):
    """A run checks its weights against a meta-device model before it indexes its lists: the check must see the
    missing and foreign layers, and the misfit shapes, that loading the same file into a real model finds."""
    from models.checkpoint import layers_the_model_lacks, weights_fit

    model = tiny()
    with torch.device("meta"):
        meta = tiny()
    deeper = _with_one_more_block(model)
    deeper.pop("blocks.0.mlp.fc1.bias")
    path = tmp_path / f"deeper{suffix}"
    if suffix == ".pth":
        torch.save({"model": deeper}, path)
    else:
        save_file({k: v.clone() for k, v in deeper.items()}, str(path))
    missing, unexpected = load_pretrained(model, path, "eva_k722")
    assert missing == ["blocks.0.mlp.fc1.bias"] and unexpected
    assert weights_fit(meta, path) == (missing, layers_the_model_lacks(unexpected, model))

    wide = dict(deeper, **{"blocks.1.mlp.fc1.weight": torch.zeros(3, 3)})
    torch.save({"model": wide}, path.with_suffix(".wide.pth"))
    with pytest.raises(ValueError, match=r"wide\.pth: blocks\.1\.mlp\.fc1\.weight: checkpoint shape \(3, 3\)"):
        weights_fit(meta, path.with_suffix(".wide.pth"))
    torch.save({"model": {"other.weight": torch.zeros(2)}}, path.with_suffix(".other.pth"))
    with pytest.raises(CheckpointError, match="none of its 1 tensors is a tensor of the model"):
        weights_fit(meta, path.with_suffix(".other.pth"))


def test_fine_tuning_from_a_deeper_models_weights_is_a_warning_in_the_runs_log(tmp_path):
    from engine.metrics import MetricLogger
    from engine.start_weights import WeightsChoice, announce_weights
    from models.checkpoint import layers_the_model_lacks

    model = tiny()
    path = _save(tmp_path / "deeper.pth", _with_one_more_block(model))
    _, unexpected = load_pretrained(model, path, "eva_k722")
    lacked = layers_the_model_lacks(unexpected, model)
    assert lacked and all(k.startswith("blocks.2.") for k in lacked) and len(lacked) == len(unexpected)
    metrics = MetricLogger(str(tmp_path / "run"), tensorboard=False, progress_bar=False)
    try:
        announce_weights(metrics, WeightsChoice(str(path), "eva_k722", None, False), [], [], lacked)
    finally:
        metrics.close()
    log = "\n".join(p.read_text() for p in (tmp_path / "run").glob("*.txt"))
    assert "WARNING: weights: not used, the model has no such layer: blocks.2.norm1.weight," in log, log


def test_an_image_checkpoints_pretraining_parts_are_not_layers_the_model_lacks():
    from models.checkpoint import layers_the_model_lacks

    model = tiny()
    sd = image_checkpoint()
    sd["blocks.0.attn.q_bias_extra"] = torch.zeros(D)  # a block built otherwise than the model's
    unexpected = [k for k in sd if k not in model.state_dict()]
    assert layers_the_model_lacks(unexpected, model) == ["blocks.0.attn.q_bias_extra"]


def test_build_model_then_load_configured_weights(tmp_path):
    # An 8-frame, 10-class checkpoint with the eva-tiny/8 preset's sizes (4x4 patches at 32 px).
    src = random_state_dict(EVAVideoTransformer(img_size=32, num_frames=8, patch_size=8, num_classes=10,
                                                embed_dim=128, depth=4, num_heads=4, mlp_hidden_dim=512), seed=5)
    np.save(tmp_path / "map.npy", np.array([9, 8, 7], dtype=np.int64))
    cfg = load_config("configs/k400.yaml", [
        "MODEL.ARCH", "eva-tiny/8", "DATA.INPUT_SIZE", "32", "DATA.NUM_FRAMES", "16", "DATA.NUM_CLASSES", "3",
        "MODEL.PRETRAINED", str(_save(tmp_path / "k10_8f.pth", {"model": src})),
        "MODEL.PRETRAINED_MODE", "eva_k722", "MODEL.CLASS_MAPPING", str(tmp_path / "map.npy"),
        "MODEL.PRETRAINED_FRAMES", "8", "MODEL.PRETRAINED_INPUT_SIZE", "32",  # the recipe's 8 / 224 px, scaled
    ])
    model = build_model(cfg)  # built with its initial weights only: loading is the next, separate step
    assert not torch.equal(model.blocks[3].attn.v_bias.detach(), src["blocks.3.attn.v_bias"])
    missing, _ = load_configured_weights(model, cfg)
    assert missing == []
    assert model.pos_embed.shape == (1, 1 + 16 * 16, 128)
    torch.testing.assert_close(model.pos_embed[0, 0].detach(), src["pos_embed"][0, 0])
    assert torch.equal(model.head.bias.detach(), src["head.bias"][[9, 8, 7]])
    assert torch.equal(model.blocks[3].attn.v_bias.detach(), src["blocks.3.attn.v_bias"])
    assert build_model(cfg, device="meta").pos_embed.device.type == "meta"
    cfg.defrost()
    cfg.MODEL.PRETRAINED = ""
    assert load_configured_weights(model, cfg) is None


# --------------------------------------------------------------------- source grid of a video checkpoint's table
def _interpolate_axis(x: np.ndarray, new_len: int, axis: int) -> np.ndarray:
    return np.moveaxis(_linear_time_resample(np.moveaxis(x, axis, 0), new_len), 0, axis)


def _reference_resample(table: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """Trilinear with align_corners=False done as three 1-D linear passes in float64 (it is separable)."""
    (t0, s0), (t1, s1) = src, dst
    grid = table.astype(np.float64).reshape(t0, s0, s0, -1)  # token t·S²+h·S+w -> (t, h, w)
    for axis, new_len in enumerate((t1, s1, s1)):
        grid = _interpolate_axis(grid, new_len, axis)
    return grid.reshape(t1 * s1 * s1, -1)


def _eva14(img_size: int, num_frames: int = 16) -> EVAVideoTransformer:
    with torch.device("meta"):  # only shapes are read: no memory for the 448 px table's model
        return EVAVideoTransformer(img_size=img_size, num_frames=num_frames, patch_size=14, num_classes=5,
                                   embed_dim=6, depth=1, num_heads=1, mlp_hidden_dim=8)


def _k722_like_table(seed: int = 3) -> dict[str, torch.Tensor]:
    """The Kinetics-722 checkpoint's positional table: 8 frames of 16x16 patches (224 px at patch 14), D = 6."""
    gen = torch.Generator().manual_seed(seed)
    return {"pos_embed": torch.randn(1, 1 + 8 * 16 * 16, 6, generator=gen)}


def _original_config(frames: int, size: int) -> CfgNode:
    return CfgNode({"DATA": CfgNode({"NUM_FRAMES": frames, "INPUT_SIZE": size, "TUBELET_SIZE": 1}),
                    "MYCLIP": CfgNode({"FT_FRAMES": 8, "FT_IMAGE_SIZE": 224})})


@pytest.mark.parametrize("img_size, grid", [(112, 8), (224, 16), (336, 24), (448, 32)])
def test_k722_table_into_112_to_448_px_models(img_size, grid):
    # The original's rule: source (FT_FRAMES, FT_IMAGE_SIZE // 14) = (8, 16), trilinear to (16, G, G).
    src = _k722_like_table()
    table = src["pos_embed"][0, 1:].numpy()
    expected = _reference_resample(table, (8, 16), (16, grid))
    model = _eva14(img_size)
    for given in ({"source_grid": (8, 16)}, {"source_grid": (8, None)}, {"source_grid": (None, 16)},
                  {"checkpoint_config": _original_config(8, 224)}, {"checkpoint_config": "DATA:\n  NUM_FRAMES: 8\n"
                                                                                         "  INPUT_SIZE: 224\n"}):
        out, notes = convert_state_dict(src, model, "eva_k722", **given)
        pe = out["pos_embed"]
        assert pe.shape == (1, 1 + 16 * grid * grid, 6), given
        np.testing.assert_array_equal(pe[0, 0].numpy(), src["pos_embed"][0, 0].numpy())
        np.testing.assert_allclose(pe[0, 1:].numpy(), expected, atol=2e-5, err_msg=str(given))
        assert any(f"8x16x16 -> 16x{grid}x{grid}" in n for n in notes), notes
    # Without the geometry the token count (2048 = 8x16x16 = 2x32x32 = 32x8x8 = ...) is ambiguous: refused by name.
    with pytest.raises(ValueError, match=r"2048 patch tokens.*2 frames of 32x32 \(448 px\).*8 frames of "
                                         r"16x16 \(224 px\).*MODEL\.PRETRAINED_FRAMES.*MYCLIP\.FT_FRAMES"):
        convert_state_dict(src, model, "eva_k722")


def test_an_image_checkpoint_given_for_a_video_one_is_named_so_and_one_frame_is_singular():
    """An image table in 'eva_k722' mode (predict, extract_features) asked for MODEL.PRETRAINED_FRAMES, naming its
    grid "1 frames of 4x4" among video candidates: it has no frames to give."""
    model = tiny(num_frames=4, tubelet_size=2, img_size=48)  # T' = 2, G = 6: the image's 4x4 table does not fit
    with pytest.raises(ValueError) as caught:
        convert_state_dict(image_checkpoint(), model, "eva_k722")
    assert str(caught.value) == (
        "pos_embed: the checkpoint is an image model's (a 2-D patch kernel and a table of 4x4 patches, 32 px, without "
        "frames), not a video model's: it starts a video model for training as MODEL.PRETRAINED with "
        "MODEL.PRETRAINED_MODE eva; to predict or extract features, give a video model's checkpoint (one trained "
        "from it)")
    out, _ = convert_state_dict(image_checkpoint(), model, "eva")  # the mode the message names converts it
    assert out["pos_embed"].shape == (1, 1 + 2 * 36, D)
    video = random_state_dict(tiny(num_frames=1), seed=3)  # 1 x 4 x 4 = 16 tokens, also 4 x 2 x 2
    one_frame = tiny(num_frames=4, img_size=48)  # tubelets of 1: a temporal token is one frame
    with pytest.raises(ValueError, match=r"it could be 1 frame of 4x4 \(32 px\), 4 frames of 2x2 \(16 px\)\. Set "):
        convert_state_dict(video, one_frame, "eva_k722")
    with pytest.raises(ValueError, match=r"gives 1 frame of 6x6 patches"):
        convert_state_dict(video, one_frame, "eva_k722", source_grid=(1, 6))


def test_grid_messages_count_frames_not_temporal_tokens():
    """With tubelets of 2 a table of 1 x 4 x 4 tokens is 2 frames of 32 px: the messages said "1 frame of 4x4", and
    MODEL.PRETRAINED_FRAMES 1, as they advised, is refused (1 frame does not divide into tubelets of 2)."""
    model = tiny(num_frames=8, tubelet_size=2)  # T' = 4, G = 4
    video = random_state_dict(tiny(num_frames=2, tubelet_size=2), seed=3)  # 1 x 4 x 4 = 16 tokens, also 4 x 2 x 2
    with pytest.raises(ValueError) as caught:
        convert_state_dict(video, model, "eva_k722")
    assert str(caught.value) == (
        "pos_embed: the checkpoint has 16 patch tokens and no config that says its geometry; it could be 2 frames of "
        "4x4 (32 px), 8 frames of 2x2 (16 px). Set MODEL.PRETRAINED_FRAMES / MODEL.PRETRAINED_INPUT_SIZE (the "
        "original's MYCLIP.FT_FRAMES / FT_IMAGE_SIZE) to the checkpoint's frames and input size")
    # the frames and size the message names, set as the keys say (in frames and px), are the table's grid
    out, notes = convert_state_dict(video, model, "eva_k722", source_grid=grid_from_sizes(2, 32, 8, 2, "keys"))
    expected = _reference_resample(video["pos_embed"][0, 1:].numpy(), (1, 4), (4, 4))
    np.testing.assert_allclose(out["pos_embed"][0, 1:].numpy(), expected, atol=1e-5)
    assert ("pos_embed: source grid 1x4x4 tokens, 2 frames of 32 px (given by MODEL.PRETRAINED_FRAMES / "
            "MODEL.PRETRAINED_INPUT_SIZE)") in notes, notes
    assert "pos_embed: resampled (T', S, S) in tokens 1x4x4 -> 4x4x4 (trilinear, align_corners=False)" in notes
    with pytest.raises(ValueError) as caught:  # 4 frames of 16 px: 2 x 2 x 2 tokens, not 16
        convert_state_dict(video, model, "eva_k722", source_grid=grid_from_sizes(4, 16, 8, 2, "keys"))
    assert "gives 4 frames of 2x2 patches, but the checkpoint's table has 16 patch tokens; set them to" in str(
        caught.value)
    saved = CfgNode({"DATA": CfgNode({"NUM_FRAMES": 8, "INPUT_SIZE": 16, "TUBELET_SIZE": 2})})  # 4 x 2 x 2 tokens
    with pytest.raises(ValueError, match=r"PRETRAINED_INPUT_SIZE say 2 frames of 32 px but the checkpoint's config "
                                         r"says 8 frames of 16 px$"):
        convert_state_dict(video, model, "eva_k722", source_grid=grid_from_sizes(2, 32, 8, 2, "keys"),
                           checkpoint_config=saved)
    _, notes = convert_state_dict(image_checkpoint(), model, "eva")
    repeated = f"pos_embed: image table repeated over 4 temporal tokens (8 frames in tubelets of 2) -> (1, 65, {D})"
    assert repeated in notes, notes


def test_equal_token_count_is_resampled_when_the_geometry_differs():
    # 8x16x16 and 2x32x32 both have 2048 tokens: a 2-frame 448 px model used to take the table as it was.
    src = _k722_like_table()
    model = _eva14(448, num_frames=2)
    unchanged, _ = convert_state_dict(src, model, "eva_k722")  # no geometry known: the model's own is assumed
    assert torch.equal(unchanged["pos_embed"], src["pos_embed"])
    out, notes = convert_state_dict(src, model, "eva_k722", checkpoint_config=_original_config(8, 224))
    expected = _reference_resample(src["pos_embed"][0, 1:].numpy(), (8, 16), (2, 32))
    np.testing.assert_allclose(out["pos_embed"][0, 1:].numpy(), expected, atol=2e-5)
    assert any("checkpoint's config" in n for n in notes)


def test_source_geometry_errors_name_the_keys():
    src, model = _k722_like_table(), _eva14(224)
    with pytest.raises(ValueError, match=r"MODEL\.PRETRAINED_FRAMES.*gives 16 frames of 16x16.*2048 patch tokens"):
        convert_state_dict(src, model, "eva_k722", source_grid=(16, 16))
    with pytest.raises(ValueError, match=r"say 2 frames of 448 px but the checkpoint's config says 8 frames of 224"):
        convert_state_dict(src, model, "eva_k722", source_grid=(2, 32), checkpoint_config=_original_config(8, 224))
    with pytest.raises(ValueError, match=r"checkpoint's config gives 16 frames of 16x16"):
        convert_state_dict(src, model, "eva_k722", checkpoint_config=_original_config(16, 224))


def test_a_recipes_geometry_that_does_not_fit_another_checkpoint_is_set_aside():
    """The K400 recipe's MODEL.PRETRAINED_FRAMES 8 describes the K722 checkpoint; given a 16-frame checkpoint instead
    (the released K400 weights, to fine-tune further), the original's assertion, and ours before, refused it.
    A geometry that cannot fit the table is set aside, with a note, when the checkpoint's config or the model's
    equal token count decides; with nothing else to go by it stays an error that says what to set."""
    gen = torch.Generator().manual_seed(3)
    k400 = {"pos_embed": torch.randn(1, 1 + 16 * 16 * 16, 6, generator=gen)}  # 16 frames of 16x16
    out, notes = convert_state_dict(k400, _eva14(224), "eva_k722", source_grid=(8, 16))
    assert torch.equal(out["pos_embed"], k400["pos_embed"])  # the model's own grid: taken as it is
    assert any("gives 8 frames of 16x16 patches, but the checkpoint's table has 4096 patch tokens: set aside, the "
               "geometry is the model's own (equal token count)" in n for n in notes), notes
    # an 8-frame model from the same file: the checkpoint's config decides, and the table is resampled 16 -> 8
    out, notes = convert_state_dict(k400, _eva14(224, num_frames=8), "eva_k722", source_grid=(8, 16),
                                    checkpoint_config=_original_config(16, 224))
    expected = _reference_resample(k400["pos_embed"][0, 1:].numpy(), (16, 16), (8, 16))
    np.testing.assert_allclose(out["pos_embed"][0, 1:].numpy(), expected, atol=2e-5)
    assert any("set aside, the geometry is from the checkpoint's config" in n for n in notes), notes
    with pytest.raises(ValueError, match=r"gives 8 frames of 16x16 patches, but the checkpoint's table has 4096 "
                                         r"patch tokens; set them to this checkpoint's frames and input size"):
        convert_state_dict(k400, _eva14(224, num_frames=8), "eva_k722", source_grid=(8, 16))


def test_a_token_count_with_one_grid_is_used():
    # 18 = 2 x 3 x 3 is the only (T, S >= 2) that fits: taken without any key, then 2 -> 4 frames.
    gen = torch.Generator().manual_seed(0)
    src = {"pos_embed": torch.randn(1, 1 + 18, D, generator=gen)}
    out, notes = convert_state_dict(src, tiny(num_frames=4, img_size=24), "eva_k722")
    expected = _reference_resample(src["pos_embed"][0, 1:].numpy(), (2, 3), (4, 3))
    np.testing.assert_allclose(out["pos_embed"][0, 1:].numpy(), expected, atol=1e-5)
    assert any("only grid" in n for n in notes)


def test_a_table_without_cls_slot_is_read_as_patch_tokens_and_given_a_zero_cls_position(tmp_path):
    """A video table of exactly T·S² rows (a model whose cls token had no position) was read as a cls slot and
    T·S² - 1 patch tokens: 64 rows became "the only grid" of 63 tokens, 7x3x3, resampled into nonsense, said only in
    a note. Now a geometry that fits the whole length reads it without the slot, and the cls position is zeros."""
    gen = torch.Generator().manual_seed(4)
    bare = torch.randn(1, 4 * 4 * 4, D, generator=gen)  # 4 frames of 4x4 patches, no cls slot
    model = tiny(num_frames=4)  # T' = 4, G = 4: the model's own grid fits all 64 rows
    out, notes = convert_state_dict({"pos_embed": bare}, model, "eva_k722")
    assert torch.equal(out["pos_embed"][:, 0], torch.zeros(1, D)) and torch.equal(out["pos_embed"][:, 1:], bare)
    assert notes == ["pos_embed: the checkpoint's table has no cls slot (64 rows, all patch tokens): the cls token's "
                     "position is zeros, as it had none"], notes
    # the geometry from the checkpoint's config, another model's grid: resampled from the table's true grid
    out, notes = convert_state_dict({"pos_embed": bare}, tiny(num_frames=8), "eva_k722",
                                    checkpoint_config=_original_config(4, 32))
    expected = _reference_resample(bare[0].numpy(), (4, 4), (8, 4))
    np.testing.assert_allclose(out["pos_embed"][0, 1:].numpy(), expected, atol=1e-5)
    assert torch.equal(out["pos_embed"][:, 0], torch.zeros(1, D))
    assert "pos_embed: resampled (T', S, S) in tokens 4x4x4 -> 8x4x4 (trilinear, align_corners=False)" in notes
    # a whole training file of such a model loads as the model it is: the same logits as with the zero slot put in
    sd = random_state_dict(model, seed=6)
    sd["pos_embed"] = sd["pos_embed"][:, 1:]
    torch.save({"model": sd}, tmp_path / "bare.pth")
    loaded = tiny(num_frames=4)
    assert load_pretrained(loaded, tmp_path / "bare.pth", "eva_k722") == ([], [])
    reference = tiny(num_frames=4)
    reference.load_state_dict({**sd, "pos_embed": torch.cat((torch.zeros(1, 1, D), sd["pos_embed"]), dim=1)})
    clip = torch.randn(2, 4, 3, 32, 32, generator=gen)
    torch.testing.assert_close(loaded.eval()(clip), reference.eval()(clip), rtol=0, atol=0)
    # an image table of S² rows in 'eva' mode: the same, then repeated over the frames
    image = image_checkpoint()
    image["pos_embed"] = image["pos_embed"][:, 1:]
    out, _ = convert_state_dict(image, tiny(num_frames=2), "eva")
    assert torch.equal(out["pos_embed"], torch.cat((torch.zeros(1, 1, D), image["pos_embed"].repeat(1, 2, 1)), 1))


def test_a_table_length_that_fits_a_grid_with_and_without_cls_slot_is_refused_by_name():
    """9 rows are a cls slot and 2x2x2 tokens, or 1x3x3 tokens without one: the first was taken as "the only grid"."""
    table = {"pos_embed": torch.randn(1, 9, D, generator=torch.Generator().manual_seed(5))}
    with pytest.raises(ValueError) as caught:
        convert_state_dict(table, tiny(num_frames=4), "eva_k722")
    assert str(caught.value) == (
        "pos_embed: the checkpoint's table of 9 rows and no config that says its geometry could be a cls slot and 2 "
        "frames of 2x2 (16 px), or 1 frame of 3x3 (24 px) without a cls slot. Set MODEL.PRETRAINED_FRAMES / "
        "MODEL.PRETRAINED_INPUT_SIZE (the original's MYCLIP.FT_FRAMES / FT_IMAGE_SIZE) to the checkpoint's frames and "
        "input size")
    out, _ = convert_state_dict(table, tiny(num_frames=4), "eva_k722", source_grid=(2, 2))  # as the keys decide
    assert torch.equal(out["pos_embed"][:, 0], table["pos_embed"][:, 0])
    out, _ = convert_state_dict(table, tiny(num_frames=4), "eva_k722", source_grid=(1, 3))
    assert torch.equal(out["pos_embed"][:, 0], torch.zeros(1, D))


def test_saved_configs_and_keys_reach_the_conversion(tmp_path):
    # The original's training checkpoint (yacs config) and ours (YAML text) both say 8 frames at 32 px.
    src = random_state_dict(tiny(num_frames=8), seed=2)
    original = _save(tmp_path / "original.pth", {"model": src, "config": _original_config(8, 32), "epoch": 39})
    ours = _save(tmp_path / "ours.pth", {"model": src, "config": "DATA:\n  NUM_FRAMES: 8\n  INPUT_SIZE: 32\n"})
    bare = _save(tmp_path / "bare.pth", {"model": src})
    reference = convert_state_dict(src, tiny(num_frames=16), "eva_k722", source_grid=(8, 4))[0]["pos_embed"]
    for path in (original, ours):
        model = tiny(num_frames=16)
        assert load_pretrained(model, path, "eva_k722") == ([], [])
        assert torch.equal(model.pos_embed.detach(), reference)
    with pytest.raises(ValueError, match=r"bare\.pth: pos_embed: the checkpoint has 128 patch tokens"):
        load_pretrained(tiny(num_frames=16), bare, "eva_k722")
    # The original's MYCLIP.FT_FRAMES / FT_IMAGE_SIZE reach MODEL.PRETRAINED_* and the factory.
    cfg = load_config(None, ["MODEL.ARCH", "eva-tiny/8", "DATA.INPUT_SIZE", "32", "DATA.NUM_FRAMES", "16",
                             "DATA.NUM_CLASSES", "5", "MODEL.PRETRAINED", str(bare), "MYCLIP.FT_FRAMES", "8",
                             "MYCLIP.FT_IMAGE_SIZE", "32"])
    assert (cfg.MODEL.PRETRAINED_FRAMES, cfg.MODEL.PRETRAINED_INPUT_SIZE) == (8, 32)
    assert load_config(None).MODEL.PRETRAINED_FRAMES == 0  # the defaults (8 / 224) are not taken as given
    src_b = random_state_dict(EVAVideoTransformer(img_size=32, num_frames=8, patch_size=8, num_classes=5,
                                                  embed_dim=128, depth=4, num_heads=4, mlp_hidden_dim=512), seed=4)
    torch.save({"model": src_b}, bare)
    model = build_model(cfg)
    load_configured_weights(model, cfg)
    expected = _reference_resample(src_b["pos_embed"][0, 1:].numpy(), (8, 4), (16, 4))
    np.testing.assert_allclose(model.pos_embed[0, 1:].detach().numpy(), expected, atol=1e-5)
