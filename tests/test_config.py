"""configs.load_config: merging, legacy keys, type coercion, and errors that name the key."""

from __future__ import annotations

import os
import re

import pytest

from configs import ConfigError, load_config
from tests.conftest import ROOT, config_refusal


def test_project_recipes_load_and_match_the_original(shared_dir):
    k400 = load_config(str(ROOT / "configs" / "k400.yaml"))
    assert (k400.DATA.NUM_FRAMES, k400.DATA.NUM_CLASSES, k400.MODEL.DROP_PATH_RATE) == (16, 400, 0.2)
    assert (k400.TRAIN.LR, k400.TRAIN.WARMUP_START_LR, k400.TRAIN.LR_MIN) == (1e-6, 1e-6, 1e-6)
    assert k400.TRAIN.LAYER_WISE_DECAY == 0.95 and k400.TRAIN.BETAS == (0.9, 0.98) and k400.TRAIN.EPS == 1e-6
    assert (k400.TEST.NUM_CLIP, k400.TEST.NUM_CROP) == (4, 3)
    k722 = load_config(str(ROOT / "configs" / "k722.yaml"))
    assert (k722.DATA.NUM_FRAMES, k722.DATA.NUM_CLASSES, k722.MODEL.PRETRAINED_MODE) == (8, 722, "eva")
    assert (k722.AUG.MIXUP, k722.AUG.CUTMIX, k722.TRAIN.WARMUP_EPOCHS, k722.TRAIN.EPOCHS) == (0.8, 1.0, 5.0, 40)
    for name in ("k400", "k600", "k700", "k722"):
        cfg = load_config(str(ROOT / "configs" / f"{name}.yaml"))
        assert "/path/to" not in cfg.MODEL.PRETRAINED, "recipes must not carry placeholder paths"


def _flat(node, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}{key}.") if hasattr(value, "items") else {prefix + key: value})
    return out


@pytest.mark.parametrize("ours, original", [("k400", "kinetics400_ft"), ("k600", "kinetics600_ft"),
                                            ("k700", "kinetics700_ft"), ("k722", "kinetics722_intermediate_ft")])
def test_each_recipe_is_the_original_config_but_for_the_differences_the_readme_names(shared_dir, ours, original):
    """Loaded the same way, a recipe and the original's config hold the same settings (frames, crop, LR, layer decay,
    drop path, epochs, batch, augmentation, pretrained geometry, ...) but for the README's differences: the paths
    this project's tools write, the 4 x 3 validation of the K400/600/700 recipes, and mid-epoch checkpoints."""
    recipe = _flat(load_config(str(ROOT / "configs" / f"{ours}.yaml")))
    theirs = _flat(load_config(str(shared_dir / "data" / "original_configs" / f"{original}.yaml")))
    differ = {key: (recipe[key], theirs[key]) for key in recipe if recipe[key] != theirs[key]}
    expected = {"DATA.LABEL_LIST": (f"data/{ours}_labels.csv", f"labels/kinetics{ours[1:]}_labels.csv"),
                "MODEL.PRETRAINED": ("checkpoints/" + theirs["MODEL.PRETRAINED"].split("/")[-1],
                                     theirs["MODEL.PRETRAINED"]),
                "SAVE_MINUTES": (30.0, 0.0)}
    if ours != "k722":
        expected.update({"TEST.NUM_CLIP": (4, 1), "TEST.NUM_CROP": (3, 1)})
    assert differ == expected


@pytest.mark.parametrize("name", ["kinetics400_ft", "kinetics600_ft", "kinetics700_ft", "kinetics722_intermediate_ft"])
def test_original_configs_load(shared_dir, name):
    cfg = load_config(str(shared_dir / "data" / "original_configs" / f"{name}.yaml"))
    assert cfg.TRAIN.EPS == 1e-6  # written "1e-6", which YAML 1.1 reads as a string
    assert cfg.TRAIN.BETAS == (0.9, 0.98)
    assert isinstance(cfg.TRAIN.WARMUP_EPOCHS, float)  # K722 writes the integer 5
    assert cfg.MODEL.USE_MEAN_POOLING is True  # mapped from MYCLIP.USE_MEAN_POOLING
    assert cfg.is_frozen()


def test_opts_override_and_coerce():
    cfg = load_config(None, ["TRAIN.LR", "2e-5", "DATA.NUM_FRAMES", "4", "TRAIN.BETAS", "(0.9, 0.999)",
                             "TRAIN.USE_CHECKPOINT", "True", "DATA.ROOT", "some dir/"])
    assert cfg.TRAIN.LR == 2e-5 and cfg.DATA.NUM_FRAMES == 4 and cfg.TRAIN.BETAS == (0.9, 0.999)
    assert cfg.TRAIN.USE_CHECKPOINT is True and cfg.DATA.ROOT == "some dir/"


def test_legacy_opt_level_o0_means_fp32(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("TRAIN:\n  OPT_LEVEL: O0\n")
    assert load_config(str(path)).TRAIN.PRECISION == "fp32"


def test_a_legacy_key_given_after_ours_wins(tmp_path):
    """The original's --opts MYCLIP.FT_FRAMES 16 (to load a 16-frame checkpoint) over a recipe that sets
    MODEL.PRETRAINED_FRAMES 8 was ignored without a word; ours given later, or in the same file, still wins."""
    recipe = str(ROOT / "configs" / "k400.yaml")
    cfg = load_config(recipe, ["MYCLIP.FT_FRAMES", "16", "MYCLIP.USE_MEAN_POOLING", "False"])
    assert (cfg.MODEL.PRETRAINED_FRAMES, cfg.MODEL.PRETRAINED_INPUT_SIZE) == (16, 224)
    assert cfg.MODEL.USE_MEAN_POOLING is False
    assert load_config(recipe, ["MYCLIP.FT_FRAMES", "16", "MODEL.PRETRAINED_FRAMES", "4"]).MODEL.PRETRAINED_FRAMES == 4
    assert load_config(recipe, ["TRAIN.PRECISION", "bf16", "TRAIN.OPT_LEVEL", "O0"]).TRAIN.PRECISION == "fp32"
    child = tmp_path / "child.yaml"  # an original-style file over a recipe: the file that names the BASE wins
    child.write_text(f"BASE: ['{recipe}']\nMYCLIP:\n  FT_FRAMES: 32\n")
    assert load_config(str(child)).MODEL.PRETRAINED_FRAMES == 32
    both = tmp_path / "both.yaml"  # as a run's saved config.yaml writes them: ours is the value in force
    both.write_text("MODEL:\n  PRETRAINED_FRAMES: 0\n  STOP_GRAD_CONV1: true\n"
                    "MYCLIP:\n  FT_FRAMES: 8\n  STOP_GRAD_CONV1: false\n")
    cfg = load_config(str(both))
    assert (cfg.MODEL.PRETRAINED_FRAMES, cfg.MODEL.STOP_GRAD_CONV1) == (0, True)


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("TRAIN:\n  LR: 1.0e-3\n  LEARNING_RATE: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "TRAIN.LEARNING_RATE" in str(err.value) and str(path) in str(err.value)


def test_unknown_key_in_opts():
    with pytest.raises(ConfigError, match="DATA.NUM_FRAME"):
        load_config(None, ["DATA.NUM_FRAME", "8"])


@pytest.mark.parametrize("opts, needle", [
    # a small section: its keys are named whole, to be copied (the original's TRAIN.LR_SCHEDULER is mapped instead)
    (["LOG", "true"], "--opts: LOG is a section, not a key "
                      "(its keys: LOG.NVML, LOG.PROGRESS_BAR, LOG.TENSORBOARD)"),
    # a large section: the names under it, as for an unknown key
    (["TRAIN", "1"], "--opts: TRAIN is a section, not a key (keys under TRAIN: ACCUMULATION_STEPS, "),
])
def test_a_section_given_a_value_in_opts_names_its_keys(opts, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, opts)
    assert needle in str(err.value)


def test_a_section_given_a_value_in_a_file_names_its_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("LOG: true\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(err.value) == (f"{path}: LOG is a section; expected a mapping, got True "
                              "(its keys: LOG.NVML, LOG.PROGRESS_BAR, LOG.TENSORBOARD)")


@pytest.mark.parametrize("opts", [["TRAIN.LR=1e-4"], ["TRAIN.LR=1e-4", "SEED=3"], ["SEED", "1", "TRAIN.LR=1e-4"]])
def test_key_equals_value_in_opts_says_how_to_write_it(opts):
    """It was "an odd number of items", or "unknown config key TRAIN.LR=1e-4" for two of them."""
    with pytest.raises(ConfigError) as err:
        load_config(None, opts)
    assert str(err.value) == "--opts takes KEY VALUE pairs, not KEY=VALUE: write TRAIN.LR 1e-4 for TRAIN.LR=1e-4"
    # a value may hold "=" (a path), and a key=value whose key is no config key stays an unknown key
    assert load_config(None, ["DATA.ROOT", "/data/a=b"]).DATA.ROOT == "/data/a=b"
    with pytest.raises(ConfigError, match="unknown config key TRAIN.LRR=1"):
        load_config(None, ["TRAIN.LRR=1", "2"])


@pytest.mark.parametrize("opts, message", [
    (["SEED", "1", "TRAIN.LR"], "TRAIN.LR has no value (it is the last item)"),
    (["TRAIN.LR", "TRAIN.EPOCHS", "3"], "TRAIN.LR has no value (the next item, TRAIN.EPOCHS, is a key)"),
    (["SEED", "1", "2", "TRAIN.LR", "1e-4"], "'2' (after SEED 1) stands where a key is expected: a key or a value is "
                                             "missing before it"),
    (["1e-4", "SEED", "1"], "'1e-4' (the first item) stands where a key is expected: a key or a value is missing "
                            "before it"),
])
def test_an_odd_number_of_opts_names_the_item_that_lacks_its_pair(opts, message):
    """It printed every item (with the flags' pairs and a script's own, dozens) and left the user to find it."""
    assert config_refusal(None, opts) == f"--opts expects KEY VALUE pairs; {message}"


@pytest.mark.parametrize("value, expected", [("True", True), ("False", False), ("false", False), ("TRUE", True),
                                             ("no", False), ("off", False), ("OFF", False), ("Yes", True),
                                             ("on", True)])
def test_a_boolean_in_opts_is_read_as_a_yaml_file_reads_it(value, expected):
    """`AUTO_RESUME: false` loads from a file, but --opts TRAIN.AUTO_RESUME false was refused as 'type bool'; so
    were no, off, yes and on, which a file (YAML 1.1) reads as booleans too."""
    assert load_config(None, ["TRAIN.AUTO_RESUME", value]).TRAIN.AUTO_RESUME is expected


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "True", "false", "YES", "Off"])
def test_a_boolean_word_means_the_same_in_a_file_and_in_opts(tmp_path, word):
    path = tmp_path / "ema.yaml"
    path.write_text(f"TRAIN:\n  EMA: {word}\n")
    assert load_config(str(path)).TRAIN.EMA is load_config(None, ["TRAIN.EMA", word]).TRAIN.EMA


@pytest.mark.parametrize("value", ["0", "1", "y", "maybe"])
def test_a_boolean_that_is_no_boolean_says_how_to_write_one(value):
    """0 and 1 stay refused: a file reads them as numbers, which a boolean key refuses too."""
    with pytest.raises(ConfigError) as err:
        load_config(None, ["TRAIN.AUTO_RESUME", value])
    assert str(err.value) == (
        "--opts: key TRAIN.AUTO_RESUME expects a value of type bool (True or False; yes/no and on/off too, in any "
        f"letter case, as a YAML file reads them) (current value True, the default), got {_literal(value)!r}")


def _literal(text: str):
    return int(text) if text.isdigit() else text


def test_a_switch_given_again_as_yes_in_opts_has_no_note():
    from types import SimpleNamespace

    from configs import flags_then_opts

    args = SimpleNamespace(only_test=True, opts=["TEST.ONLY_TEST", "yes"])
    assert flags_then_opts({"TEST.ONLY_TEST": "--only_test"}, args)[1] == []
    args.opts = ["TEST.ONLY_TEST", "off"]
    assert flags_then_opts({"TEST.ONLY_TEST": "--only_test"}, args)[1] == [
        "note: --only_test is overridden by --opts TEST.ONLY_TEST off"]


@pytest.mark.parametrize("text, item, what", [
    ("[h264, no]", "no", "a boolean (False)"), ("[hevc, On]", "On", "a boolean (True)"),
    ("\n    - h264\n    - 264", "264", "a number (264)"), ("[vp9, 1.5]", "1.5", "a number (1.5)"),
    ("[h264, 0x10]", "0x10", "a number (16)"), ("no", "no", "a boolean (False)")])
def test_a_boolean_or_number_in_a_list_of_names_is_named_as_written(tmp_path, text, item, what):
    """NVDEC_CODECS: [h264, no] was [h264, False], refused as the codec False (and a list of names [a, 0x10] as 16)."""
    path = tmp_path / "codecs.yaml"
    path.write_text(f"DATA:\n  NVDEC_CODECS: {text}\n")
    assert config_refusal(str(path)) == (
        f"{path}: key DATA.NVDEC_CODECS lists names, and its item {item} is read as {what}: quote it ('{item}') if "
        "it is a name, or remove it")
    path.write_text('DATA:\n  NVDEC_CODECS: [h264, "hevc"]\n')
    assert load_config(str(path)).DATA.NVDEC_CODECS == ["h264", "hevc"]


def test_a_wrong_type_from_a_file_names_the_value_as_written(tmp_path):
    """EPOCHS: yes was refused as "got True", a word the file does not hold."""
    path = tmp_path / "epochs.yaml"
    path.write_text("TRAIN:\n  EPOCHS: yes\n")
    assert config_refusal(str(path)) == (f"{path}: key TRAIN.EPOCHS expects a value of type int (current value 30, "
                                         "the default), got True (written yes)")
    path.write_text("TRAIN:\n  EPOCHS: fast\n")
    assert config_refusal(str(path)).endswith("got 'fast'")


def test_a_boolean_in_a_list_of_names_in_opts_is_named():
    assert config_refusal(None, ["DATA.NVDEC_CODECS", "['h264', True]"]) == (
        "--opts: key DATA.NVDEC_CODECS lists names, and its item True is read as a boolean (True): quote it ('True') "
        "if it is a name, or remove it")


def test_a_number_in_base_is_named_as_written(tmp_path):
    path = tmp_path / "child.yaml"
    path.write_text("BASE: [base.yaml, 2024.10]\n")
    assert config_refusal(str(path)) == (
        f"{path}: key BASE lists names, and its item 2024.10 is read as a number (2024.1): quote it ('2024.10') if "
        "it is a name, or remove it")


def test_unknown_key_in_opts_lists_the_valid_keys_as_for_a_file():
    """A file's unknown key came with the section's valid keys, the same typo in --opts with none."""
    with pytest.raises(ConfigError) as err:
        load_config(None, ["TRAIN.EPOCH", "3"])
    assert str(err.value).startswith("--opts: unknown config key TRAIN.EPOCH (did you mean TRAIN.EPOCHS? valid keys "
                                     "under TRAIN: "), err.value
    assert ", EPOCHS, " in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(None, ["TRAN.EPOCHS", "3"])
    assert str(err.value).startswith("--opts: unknown config key TRAN.EPOCHS (did you mean TRAIN? valid keys under "
                                     "the top level: ")
    assert str(err.value).endswith(", TEST, TRAIN)")
    with pytest.raises(ConfigError) as err:  # nothing close: no guess
        load_config(None, ["TRAIN.ZZZ", "3"])
    assert str(err.value).startswith("--opts: unknown config key TRAIN.ZZZ (valid keys under TRAIN: ")


def test_a_section_left_empty_in_a_file_sets_nothing(tmp_path):
    """A section whose keys were all commented out (DATA: with nothing under it) was refused as "expected a
    mapping, got None"; an empty file loads, and so does an empty section now. A value is still refused."""
    path = tmp_path / "c.yaml"
    path.write_text("TRAIN:\n  LR: 1.0e-4\nDATA:\n#  NUM_WORKERS: 4\nLOG: null\n")
    cfg = load_config(str(path))
    assert (cfg.TRAIN.LR, cfg.DATA.NUM_WORKERS, cfg.LOG.NVML) == (1e-4, 2, True)
    path.write_text("DATA: 4\n")
    assert config_refusal(str(path)).startswith(f"{path}: DATA is a section; expected a mapping, got 4 (keys under ")


def test_a_typo_in_a_config_file_names_the_close_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("DATA:\n  NUM_WORKER: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert f"{path}: unknown config key DATA.NUM_WORKER (did you mean DATA.NUM_WORKERS? " in str(err.value)
    with pytest.raises(ConfigError, match=r"^--opts: unknown config key SEED.X \(SEED is a key, not a section\)$"):
        load_config(None, ["SEED.X", "3"])


@pytest.mark.parametrize(
    "opts, needle",
    [
        (["DATA.DECODE_DEVICE", "tpu"], "DATA.DECODE_DEVICE"),
        (["TEST.NUM_CROP", "2"], "TEST.NUM_CROP"),
        (["AUG.FLIP", "1.5"], "AUG.FLIP"),
        (["TRAIN.BATCH_SIZE", "0"], "TRAIN.BATCH_SIZE"),
        (["DATA.NUM_FRAMES", "eight"], "DATA.NUM_FRAMES"),
        (["DATA.NUM_FRAMES", "6", "DATA.TUBELET_SIZE", "4"], "DATA.TUBELET_SIZE"),
        (["TRAIN.LR"], "TRAIN.LR has no value"),
        (["TRAIN.LAYER_WISE_DECAY", "0"], "TRAIN.LAYER_WISE_DECAY"),
        (["TRAIN.LAYER_WISE_DECAY", "-0.9"], "TRAIN.LAYER_WISE_DECAY"),
        (["TRAIN.LAYER_WISE_DECAY", "1.05"], "TRAIN.LAYER_WISE_DECAY"),
        (["TRAIN.EMA_DECAY", "1.5"], "TRAIN.EMA_DECAY"),
        (["TRAIN.EPS", "0"], "TRAIN.EPS"),
        (["AUG.LABEL_SMOOTH", "1.5"], "AUG.LABEL_SMOOTH"),
        (["MODEL.DROP_PATH_RATE", "1.5"], "MODEL.DROP_PATH_RATE"),
        (["MODEL.DROP_RATE", "1.5"], "MODEL.DROP_RATE"),
    ],
)
def test_bad_values_name_the_key(opts, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(None, opts)


@pytest.mark.parametrize("key, value", [("TRAIN.BETAS", "('a', 'b')"), ("TRAIN.BETAS", "(0.9, None)"),
                                        ("AUG.CROP_SCALES", "('x',)"), ("AUG.CROP_SCALES", "(True, 0.5)")])
def test_a_list_of_numbers_with_another_item_is_a_config_error_naming_the_key(key, value):
    # these reached validate() and failed there with a TypeError traceback (exit code 1), or took True for 1.0
    with pytest.raises(ConfigError, match=rf"--opts: key {re.escape(key)} expects a value of type tuple of numbers"):
        load_config(None, [key, value])
    assert load_config(None, ["TRAIN.BETAS", "(0, 0.98)"]).TRAIN.BETAS == (0.0, 0.98)


def test_base_files_merge_first(tmp_path):
    (tmp_path / "base.yaml").write_text("DATA:\n  NUM_FRAMES: 4\n  NUM_CLASSES: 10\n")
    (tmp_path / "child.yaml").write_text("BASE: ['base.yaml']\nDATA:\n  NUM_CLASSES: 7\n")
    cfg = load_config(str(tmp_path / "child.yaml"))
    assert (cfg.DATA.NUM_FRAMES, cfg.DATA.NUM_CLASSES) == (4, 7)


def test_base_files_that_cannot_be_merged_are_named_with_the_file_naming_them(tmp_path):
    """A missing BASE file was named without the file that named it, a folder was "not found", and a cycle was
    "more than 8 deep (a cycle?)", naming one of its files."""
    child = tmp_path / "child.yaml"
    child.write_text("BASE: ['missing.yaml']\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(child))
    assert str(info.value) == f"config file not found: {tmp_path / 'missing.yaml'} (in BASE of {child})"
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert str(info.value) == f"config file {tmp_path} is a folder, not a YAML file"
    (tmp_path / "a.yaml").write_text("BASE: ['b.yaml']\n")
    (tmp_path / "b.yaml").write_text("BASE: ['a.yaml']\n")
    child.write_text("BASE: ['a.yaml']\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(child))
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert str(info.value) == f"{a}: BASE files form a cycle: {child} -> {a} -> {b} -> {a}"


def test_a_base_cycle_through_a_symbolic_link_is_named_as_a_cycle(tmp_path):
    """BASE: [sub/a.yaml] with sub a link to the file's own folder named the same file by ever longer paths: the
    cycle was "nest more than 8 deep"."""
    a, looped = tmp_path / "a.yaml", tmp_path / "sub" / "a.yaml"
    (tmp_path / "sub").symlink_to(tmp_path, target_is_directory=True)
    a.write_text("BASE: ['sub/a.yaml']\n")
    assert config_refusal(str(a)) == (f"{looped}: BASE files form a cycle: {a} -> {looped} ({looped} is {a}, "
                                      "through a symbolic link)")


@pytest.mark.parametrize("text,problem", [
    ("- 1\n- 2\n", "expected a mapping of config keys at the top level, got a list"),
    ("DATA: [1\n", "not valid YAML: line 2, column 1"),
])
def test_a_base_file_that_cannot_be_read_names_the_files_whose_base_led_to_it(tmp_path, text, problem):
    """A BASE file that was a list or not YAML was named alone: the --cfg file that led to it was not."""
    child, middle, bad = tmp_path / "child.yaml", tmp_path / "middle.yaml", tmp_path / "bad.yaml"
    child.write_text("BASE: [middle.yaml]\n")
    middle.write_text("BASE: [bad.yaml]\n")
    bad.write_text(text)
    assert config_refusal(str(child)).startswith(
        f"{bad} (in BASE of {middle}, in BASE of {child}): {problem}")
    assert config_refusal(str(bad)).startswith(f"{bad}: {problem}")  # as --cfg: no BASE to name


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_checkpoint_given_as_the_config_is_named_as_one(tmp_path, zip_format):
    """--cfg best.pth said only "not UTF-8 text": a checkpoint (torch.save's zip archive, or its legacy pickle) is
    named as one, with the flag and key that take it."""
    import torch

    ckpt = tmp_path / "best.pth"
    torch.save({"model": {"w": torch.zeros(3)}}, ckpt, _use_new_zipfile_serialization=zip_format)
    assert config_refusal(str(ckpt)) == (f"{ckpt}: looks like a checkpoint (it begins as torch.save's zip archive or "
                                         "pickle), not a YAML config: give it to --resume, or set MODEL.PRETRAINED "
                                         "to it, and a YAML file to --cfg")


def test_base_in_opts_is_refused_as_it_would_not_be_read(tmp_path):
    """--opts BASE other.yaml set the key and merged nothing: the run went on without the file's values."""
    other = tmp_path / "other.yaml"
    other.write_text("TRAIN:\n  LR: 1.0e-4\n")
    with pytest.raises(ConfigError) as info:
        load_config(None, ["BASE", str(other)])
    assert str(info.value) == (f"--opts: BASE {other} would not be read: BASE files are merged from a config file "
                               "only; write BASE: [FILE] in the --cfg file, or give that file as --cfg")


def test_a_leading_tilde_in_a_path_is_the_home_folder(tmp_path, monkeypatch):
    """A file's OUTPUT: ~/runs (or a quoted --opts value) was a folder named ~ in the working folder, a BASE entry
    ~/base.yaml one under the file's folder, and --cfg=~/c.yaml was not found."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("DATA:\n  ROOT: ~/videos\n")
    (tmp_path / "sub" / "c.yaml").write_text("BASE: [~/base.yaml]\nOUTPUT: ~/runs/k400\n")
    cfg = load_config("~/sub/c.yaml", ["MODEL.PRETRAINED", "~/w.pth", "DATA.TRAIN_FILE", "lists/~train.txt"])
    assert (cfg.DATA.ROOT, cfg.OUTPUT) == (str(tmp_path / "videos"), str(tmp_path / "runs" / "k400"))
    assert cfg.MODEL.PRETRAINED == str(tmp_path / "w.pth") and cfg.DATA.TRAIN_FILE == "lists/~train.txt"


def test_base_may_name_one_file_without_a_list(tmp_path):
    (tmp_path / "base.yaml").write_text("DATA:\n  NUM_FRAMES: 4\n")
    (tmp_path / "child.yaml").write_text("BASE: base.yaml\nDATA:\n  NUM_CLASSES: 7\n")
    cfg = load_config(str(tmp_path / "child.yaml"))
    assert (cfg.DATA.NUM_FRAMES, cfg.DATA.NUM_CLASSES) == (4, 7)
    (tmp_path / "child.yaml").write_text("BASE: 5\n")
    with pytest.raises(ConfigError, match="child.yaml: BASE must be a list of config files, got 5"):
        load_config(str(tmp_path / "child.yaml"))


@pytest.mark.parametrize("lines_before", [2, 3000])  # 3000: past the first chunk the text decoder reads
def test_a_yaml_that_is_not_utf8_names_the_file_and_line(tmp_path, lines_before):
    # It gave the byte offset within the decoder's chunk ("at byte 35" for line 3), which finds no line in the file.
    cfg = tmp_path / "latin1.yaml"
    cfg.write_bytes(b"# a comment\n" * lines_before + "OUTPUT: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        load_config(str(cfg))
    assert str(e.value) == f"{cfg}, line {lines_before + 1}: not UTF-8 text (invalid continuation byte, byte 0xe9)"


def test_missing_file():
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config("nope.yaml")


@pytest.mark.parametrize(
    "opts, message",
    [
        (["TRAIN.LR", "1e999"], "TRAIN.LR = inf is not a finite number"),
        (["AUG.CROP_SCALES", "(1.0, 1e999)"], "AUG.CROP_SCALES = (1.0, inf) is not a finite number"),
        (["TRAIN.LR", "5.0"], "TRAIN.LR = 5.0 is not a usable AdamW learning rate"),
        (["TRAIN.LR_MIN", "1.0"], "TRAIN.LR_MIN = 1.0 is not a usable AdamW learning rate"),
        (["SEED", str(2**64)], f"SEED = {2**64} must be in [0, 2**32 - 1]"),
        (["SEED", "-1"], "SEED = -1 must be in [0, 2**32 - 1]"),
    ],
)
def test_non_finite_absurd_and_overflowing_numbers_name_the_key(opts, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, opts)
    assert message in str(err.value)


@pytest.mark.parametrize("value", ["1.0", "1", "1.5", "-0.1"])
def test_a_drop_path_rate_outside_0_to_1_is_refused_naming_the_key(value):
    """At 1.0 the deepest block's residual branches were always dropped (linspace(0, rate, depth)) and never
    trained, without a word; 0 (no drop path) and the recipes' rates load."""
    assert config_refusal(None, ["MODEL.DROP_PATH_RATE", value]).startswith(
        f"MODEL.DROP_PATH_RATE = {float(value)!r} must be in [0, 1) (at 1 the deepest block's residual branches")
    for rate in ("0", "0.3", "0.99"):
        assert load_config(None, ["MODEL.DROP_PATH_RATE", rate]).MODEL.DROP_PATH_RATE == float(rate)


def test_non_finite_number_in_a_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("TRAIN:\n  LR: 1.0e999\n")
    with pytest.raises(ConfigError, match=r"TRAIN\.LR = inf is not a finite number"):
        load_config(str(path))


def test_largest_seed_and_recipe_save_minutes_load():
    assert load_config(None, ["SEED", str(2**32 - 1)]).SEED == 2**32 - 1
    for name in ("k400", "k600", "k700", "k722"):
        assert load_config(str(ROOT / "configs" / f"{name}.yaml")).SAVE_MINUTES > 0, name


def test_a_key_set_twice_in_one_mapping_is_a_one_line_error(tmp_path, capsys):
    """A YAML parser keeps the last value of a repeated key: a config would train with the one a reader missed."""
    import train

    path = tmp_path / "twice.yaml"
    path.write_text("TRAIN:\n  LR: 2.0e-4\n  EPOCHS: 3\n  WARMUP_EPOCHS: 1\n  LR: 1.0e-4\n")
    assert train.main(["--cfg", str(path), "--dry-run"]) == 2
    assert capsys.readouterr().err == f"error: {path}: key TRAIN.LR is set twice, on line 2 and on line 5; keep one\n"
    path.write_text("TRAIN:\n  BATCH_SIZE: 3\nTEST:\n  BATCH_SIZE: 5\n")  # one name in two mappings: no repeat
    cfg = load_config(str(path))
    assert (cfg.TRAIN.BATCH_SIZE, cfg.TEST.BATCH_SIZE) == (3, 5)


def test_a_value_of_the_wrong_type_says_where_the_current_value_came_from(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("TRAIN:\n  EPOCHS: 3\n  WARMUP_EPOCHS: 1\n")
    child = tmp_path / "child.yaml"
    child.write_text("BASE: [base.yaml]\nTRAIN:\n  EPOCHS: three\n")
    cases = [
        (str(base), ["TRAIN.EPOCHS", "abc"], f"--opts: key TRAIN.EPOCHS expects a value of type int (current value 3, "
                                             f"from {base}), got 'abc'"),
        (None, ["TRAIN.EPOCHS", "abc"], "--opts: key TRAIN.EPOCHS expects a value of type int (current value 30, "
                                        "the default), got 'abc'"),
        (None, ["TRAIN.EPOCHS", "4", "TRAIN.EPOCHS", "x"], "--opts: key TRAIN.EPOCHS expects a value of type int "
                                                           "(current value 4, from --opts), got 'x'"),
        (str(child), [], f"{child}: key TRAIN.EPOCHS expects a value of type int (current value 3, from {base}), "
                         "got 'three'"),
    ]
    for path, opts, message in cases:
        assert config_refusal(path, opts) == message


def test_two_keys_in_conflict_say_where_each_value_came_from():
    demo = str(ROOT / "configs" / "demo.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(demo, ["TRAIN.EPOCHS", "1"])
    assert str(info.value) == (f"TRAIN.WARMUP_EPOCHS = 1.5 (from {demo}) exceeds TRAIN.EPOCHS = 1 (from --opts): "
                               "lower TRAIN.WARMUP_EPOCHS too")
    with pytest.raises(ConfigError, match=r"= 40.0 \(from --opts\) exceeds TRAIN.EPOCHS = 30 \(the default\)"):
        load_config(None, ["TRAIN.WARMUP_EPOCHS", "40.0"])


def test_a_yaml_syntax_error_is_one_line_with_its_position(tmp_path):
    """The parser's own message spans four lines; the CLI promises one line naming the file."""
    (tmp_path / "flow.yaml").write_text("TRAIN:\n  EPOCHS: [3\n")
    (tmp_path / "tab.yaml").write_text("TRAIN:\n\tEPOCHS: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(tmp_path / "flow.yaml"))
    msg = str(err.value)
    assert "\n" not in msg and "flow.yaml: not valid YAML: line 3, column 1" in msg, msg
    assert "expected ',' or ']'" in msg and "while parsing a flow sequence" in msg, msg
    msg = config_refusal(str(tmp_path / "tab.yaml"))  # the parser's words did not say what to type instead
    assert "\n" not in msg and "tab.yaml: not valid YAML: line 2, column 1" in msg, msg
    assert msg.endswith("found character '\\t' that cannot start any token (while scanning for the next token); "
                        "use spaces there, not a tab"), msg


@pytest.mark.parametrize("text, kind", [("- TRAIN.LR: 1e-4\n", "a list"), ("TRAIN.LR 1e-4\n", "plain text")])
def test_a_yaml_file_that_is_no_mapping_says_how_to_write_one(tmp_path, text, kind):
    """It read "got list" or "got str", Python's names, and did not say what a config file holds."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert config_refusal(str(path)) == (f"{path}: expected a mapping of config keys at the top level, got {kind}: "
                                         "write one 'KEY: value' per line, a section's keys indented under it "
                                         "('TRAIN:', '  LR: 1e-4')")


def test_config_errors_name_the_line_an_editor_shows(tmp_path):
    """YAML 1.1 (PyYAML) also ends a line at U+2028, U+2029 and U+0085, which an editor shows inside one: a value
    holding one moved every line number after it (the not-UTF-8 line is counted as an editor does)."""
    path = tmp_path / "noted.yaml"
    path.write_text('OUTPUT: "runs\u2028a"\nTRAIN:\n  LR: 2.0e-4\n  LR: 1.0e-4\n', encoding="utf-8")
    assert config_refusal(str(path)) == f"{path}: key TRAIN.LR is set twice, on line 3 and on line 4; keep one"
    path.write_text('OUTPUT: "runs\x85\u2029a"\nTRAIN:\n  EPOCHS: [3\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"noted\.yaml: not valid YAML: line 4, column 1: expected ',' or ']'"):
        load_config(str(path))


def test_a_list_of_names_may_be_given_bare():
    """``--opts DATA.NVDEC_CODECS h264`` was refused as "expects a value of type list"; a list of numbers given one
    number stays refused (TRAIN.BETAS needs its two)."""
    assert load_config(None, ["DATA.NVDEC_CODECS", "h264"]).DATA.NVDEC_CODECS == ["h264"]
    assert load_config(None, ["DATA.NVDEC_CODECS", "h264, hevc"]).DATA.NVDEC_CODECS == ["h264", "hevc"]
    assert load_config(None, ["DATA.NVDEC_CODECS", "['vp9']"]).DATA.NVDEC_CODECS == ["vp9"]
    assert load_config(None, ["DATA.NVDEC_CODECS", ""]).DATA.NVDEC_CODECS == []
    # as a YAML file writes a list: it was read as the names "[h264" and "hevc]", refused as codecs NVDEC lacks
    for written in ("[h264, hevc]", "[h264,'hevc']", "(h264, hevc)"):
        assert load_config(None, ["DATA.NVDEC_CODECS", written]).DATA.NVDEC_CODECS == ["h264", "hevc"], written
    assert load_config(None, ["DATA.NVDEC_CODECS", "[]"]).DATA.NVDEC_CODECS == []
    with pytest.raises(ConfigError, match=r"--opts: key TRAIN\.BETAS expects a value of type tuple of numbers"):
        load_config(None, ["TRAIN.BETAS", "0.9"])
    with pytest.raises(ConfigError, match=r"--opts: key DATA\.NVDEC_CODECS expects a value of type list"):
        load_config(None, ["DATA.NVDEC_CODECS", "3"])


def test_a_value_a_commands_flag_set_is_named_by_that_flag():
    """train.py's --batch-size 0 was refused as "TRAIN.BATCH_SIZE = 0", a name the user never typed, and the
    flags were recorded as --opts."""
    with pytest.raises(ConfigError, match=re.escape("--batch-size 0 (TRAIN.BATCH_SIZE) must be at least 1")):
        load_config(None, flags=[("--batch-size", "TRAIN.BATCH_SIZE", "0")])
    # a conflict between two keys names each one's source: the flag as typed, --opts by key
    with pytest.raises(ConfigError, match=re.escape("TRAIN.WARMUP_EPOCHS = 9.0 (from --opts) exceeds --epochs 2 "
                                                    "(TRAIN.EPOCHS)")):
        load_config(None, ["TRAIN.WARMUP_EPOCHS", "9"], flags=[("--epochs", "TRAIN.EPOCHS", "2")])
    with pytest.raises(ConfigError, match=re.escape("(current value 4, from --batch-size), got 'x'")):
        load_config(None, ["TRAIN.BATCH_SIZE", "x"], flags=[("--batch-size", "TRAIN.BATCH_SIZE", "4")])
    assert load_config(None, ["TRAIN.BATCH_SIZE", "6"], flags=[("--batch-size", "TRAIN.BATCH_SIZE", "4")]) \
        .TRAIN.BATCH_SIZE == 6  # --opts wins


def test_as_typed_names_the_flags_in_the_engines_messages():
    from configs import as_typed

    flags = [("--pretrained", "MODEL.PRETRAINED", "w.pth"), ("--output", "OUTPUT", "o"),
             ("--only_test", "TEST.ONLY_TEST", "True")]
    line = "missing input files: MODEL.PRETRAINED = w.pth; OUTPUT = o/x; MODEL.PRETRAINED_MODE = 'eva'"
    assert as_typed(line, flags) == ("missing input files: --pretrained w.pth (MODEL.PRETRAINED); OUTPUT = o/x; "
                                     "MODEL.PRETRAINED_MODE = 'eva'")  # o/x is not the flag's value
    assert as_typed("OUTPUT = 'o' is a file", flags) == "--output o (OUTPUT) is a file"
    assert as_typed("TEST.ONLY_TEST = True: no", flags) == "--only_test (TEST.ONLY_TEST): no"
    # a key --opts set again has the value --opts gave: named as it is
    assert as_typed("OUTPUT = o: full", flags, ["OUTPUT", "o"]) == "OUTPUT = o: full"


@pytest.mark.parametrize("opts, guess", [
    (["train.lr", "1e-4"], "unknown config key train.lr (did you mean TRAIN.LR? valid keys under the top level:"),
    (["DATA.num_worker", "2"], "unknown config key DATA.num_worker (did you mean DATA.NUM_WORKERS? valid keys under"),
    (["Train.nope", "2"], "unknown config key Train.nope (did you mean TRAIN? valid keys under the top level:"),
])
def test_a_key_in_the_wrong_case_is_guessed(opts, guess):
    """A key typed in lower case (train.lr) got no guess, only the list of every top-level section."""
    with pytest.raises(ConfigError, match=re.escape(f"--opts: {guess}")):
        load_config(None, opts)


def test_a_yaml_key_in_the_wrong_case_is_guessed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  LR: 1.0e-4\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: unknown config key train (did you mean TRAIN?")):
        load_config(str(path))


@pytest.mark.parametrize("spelled", ["None", "null", "~", ""])
def test_none_unsets_a_path_from_opts_as_null_does_in_a_file(spelled, tmp_path):
    """The original (yacs) read --opts MODEL.PRETRAINED None as None; here it was the path "None", and the run
    stopped on a missing file None. A YAML file's null, ~ and '' (and None, which yacs read as None too) agree."""
    recipe = str(ROOT / "configs" / "k400.yaml")  # sets MODEL.PRETRAINED and MODEL.CLASS_MAPPING
    cfg = load_config(recipe, ["MODEL.PRETRAINED", spelled, "MODEL.CLASS_MAPPING", spelled, "DATA.NVDEC_CODECS",
                               spelled, "TRAIN.OPT_LEVEL", spelled])
    assert (cfg.MODEL.PRETRAINED, cfg.MODEL.CLASS_MAPPING, cfg.DATA.NVDEC_CODECS, cfg.TRAIN.OPT_LEVEL) == \
        ("", "", [], "")
    path = tmp_path / "c.yaml"
    path.write_text(f"BASE: [{recipe}]\nMODEL:\n  PRETRAINED: {spelled or repr(spelled)}\n  CLASS_MAPPING: {spelled}\n"
                    f"DATA:\n  NVDEC_CODECS: {spelled}\n")
    cfg = load_config(str(path))
    assert (cfg.MODEL.PRETRAINED, cfg.MODEL.CLASS_MAPPING, cfg.DATA.NVDEC_CODECS) == ("", "", [])


@pytest.mark.parametrize("key, message", [
    ("TRAIN.LR", "key TRAIN.LR cannot be unset (got {got}): give it a value of type float, or leave it out to keep "
                 "8e-06 (the default)"),
    ("TRAIN.USE_CHECKPOINT", "key TRAIN.USE_CHECKPOINT cannot be unset (got {got}): give it a value of type bool, or "
                             "leave it out to keep False (the default)"),
    ("TRAIN.BETAS", "key TRAIN.BETAS cannot be unset (got {got}): give it a value of type tuple of numbers, or leave "
                    "it out to keep (0.9, 0.98) (the default)"),
])
def test_none_for_a_key_that_needs_a_value_is_refused_naming_it(key, message, tmp_path):
    """None was "expects a value of type float ... got None", which did not say that None cannot unset the key."""
    assert config_refusal(None, [key, "None"]) == "--opts: " + message.format(got="None")
    section, name = key.split(".")
    path = tmp_path / "c.yaml"
    path.write_text(f"{section}:\n  {name}: ~\n")
    assert config_refusal(str(path), []) == f"{path}: " + message.format(got="null")


def test_none_for_a_key_with_choices_says_to_choose_one(capsys):
    """It read "MODEL.PRETRAINED_MODE = 'None' is not one of ..." (and '' for a file's null); the command ends on
    one line with exit code 2."""
    import train

    message = "MODEL.PRETRAINED_MODE cannot be empty (None and null empty it): choose one of 'eva', 'eva_k722'"
    assert config_refusal(None, ["MODEL.PRETRAINED_MODE", "None"]) == message
    demo = str(ROOT / "configs" / "demo.yaml")
    assert train.main(["--cfg", demo, "--dry-run", "--opts", "MODEL.PRETRAINED_MODE", "null"]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_a_name_yaml_reads_as_a_number_keeps_its_text(tmp_path):
    """YAML reads OUTPUT: 2024.10 as the number 2024.1 (and 0x1F as 31): the run wrote into a folder the file did
    not name. --opts keeps the text as typed; a file now does too (a number key still reads a number)."""
    path = tmp_path / "c.yaml"
    path.write_text("OUTPUT: 2024.10\nDATA:\n  DATASET: 0x1F\n  ROOT: 1_000\nSEED: 0x1F\n")
    cfg = load_config(str(path))
    assert (cfg.OUTPUT, cfg.DATA.DATASET, cfg.DATA.ROOT, cfg.SEED) == ("2024.10", "0x1F", "1_000", 31)
    assert load_config(None, ["OUTPUT", "2024.10"]).OUTPUT == "2024.10"


@pytest.mark.parametrize("text, message", [
    ("TRAIN.LR: 1.0e-4\n", "key TRAIN.LR is written with dots, as --opts takes it; a file nests each part under the "
                           "one before: TRAIN: {LR: ...}, or one per line, indented"),
    ("TRAIN:\n  LR_SCHEDULER.NAME: cosine\n", "key LR_SCHEDULER.NAME (under TRAIN) is written with dots, as --opts "
                                              "takes it; a file nests each part under the one before: LR_SCHEDULER: "
                                              "{NAME: ...}, or one per line, indented"),
])
def test_a_dotted_key_in_a_file_says_to_nest_it(tmp_path, text, message):
    """A key copied from --opts into a file was "unknown config key TRAIN.LR (did you mean TRAIN.LR? ...)"."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert config_refusal(str(path)) == f"{path}: {message}"


def test_a_training_run_of_no_epochs_is_refused_by_the_config_check(tmp_path, capsys):
    """TRAIN.EPOCHS 0 passed the config check (tools loading the config took it) and was refused later, by the
    run's model check, without saying where the value came from; an evaluation may keep any EPOCHS."""
    import train

    todo = ("leaves a training run nothing to train: set it to at least 1, or evaluate weights with --only_test "
            "(--resume FILE or MODEL.PRETRAINED)")
    assert config_refusal(None, ["TRAIN.EPOCHS", "0"]) == f"TRAIN.EPOCHS = 0 (from --opts) {todo}"
    assert config_refusal(None, ["TRAIN.EPOCHS", "-2"]) == f"TRAIN.EPOCHS = -2 (from --opts) {todo}"
    path = tmp_path / "c.yaml"
    path.write_text("TRAIN:\n  EPOCHS: 0\n  WARMUP_EPOCHS: 0\n")
    assert config_refusal(str(path)) == f"TRAIN.EPOCHS = 0 (from {path}) {todo}"
    # --only_test is applied before the check, as train.py passes it
    args = train.parse_args(["--cfg", str(path), "--only_test", "--dry-run"])
    assert load_config(args.cfg, args.opts, flags=train.config_overrides(args)[0]).TRAIN.EPOCHS == 0
    assert load_config(None, ["TEST.ONLY_TEST", "True", "TRAIN.EPOCHS", "0"]).TEST.ONLY_TEST
    demo = str(ROOT / "configs" / "demo.yaml")
    assert train.main(["--cfg", demo, "--opts", "TRAIN.EPOCHS", "0", "--dry-run"]) == 2
    assert capsys.readouterr().err == f"error: TRAIN.EPOCHS = 0 (from --opts) {todo}\n"


@pytest.mark.parametrize("empty", ["[]", "()"])
def test_empty_crop_scales_are_refused_as_empty(empty, tmp_path):
    """AUG.CROP_SCALES [] was refused with "must be fractions in (0, 1]", as if one of its scales were wrong."""
    want = ("AUG.CROP_SCALES = () is empty: it needs at least one scale, a fraction in (0, 1] of the short side (the "
            "default (1.0, 0.875, 0.75, 0.66); (1.0,) for no multi-scale crop)")
    assert config_refusal(None, ["AUG.CROP_SCALES", empty]) == want
    path = tmp_path / "empty.yaml"
    path.write_text(f"AUG:\n  CROP_SCALES: {empty}\n")
    assert config_refusal(str(path)).startswith("AUG.CROP_SCALES = () is empty: it needs at least one scale")


def test_a_crop_scale_that_rounds_to_a_0_px_crop_is_refused_and_the_smallest_kept_one_crops_a_pixel():
    """AUG.CROP_SCALES (0.001,) was accepted: its crop side int(256 * 0.001) is 0, and the run trained on empty
    crop windows without a word."""
    import numpy as np

    from dali_pipelines.augment import draw_train_aug

    assert config_refusal(None, ["AUG.CROP_SCALES", "(1.0, 0.001)"]) == (
        "AUG.CROP_SCALES = (1.0, 0.001): 0.001 of the 256-px short side (DATA.INPUT_SIZE 224 x 256/224) is a 0-px "
        "crop; use scales of at least 1/256 (the recipes use 0.66 to 1.0)")
    cfg = load_config(None, ["AUG.CROP_SCALES", "(0.004,)"])  # 1/256 = 0.0039: a 1-px crop
    aug = draw_train_aug(np.random.default_rng(0), 320, 240, cfg.DATA.INPUT_SIZE, 8, scales=cfg.AUG.CROP_SCALES)
    assert (aug.roi_end - aug.roi_start > 0).all()


@pytest.mark.parametrize("text, opts, message", [
    ("DATA:\n  LR: 1.0e-4\n", ["DATA.LR", "1e-4"],
     "unknown config key DATA.LR (did you mean TRAIN.LR? valid keys under DATA: "),
    ("LR: 1.0e-4\n", ["LR", "1e-4"], "unknown config key LR (did you mean TRAIN.LR? valid keys under the top level: "),
    ("TRAIN:\n  NUM_CLIP: 4\n", ["TRAIN.NUM_CLIP", "4"],
     "unknown config key TRAIN.NUM_CLIP (did you mean TEST.NUM_CLIP? valid keys under TRAIN: "),
    ("TRAIN:\n  SEED: 3\n", ["TRAIN.SEED", "3"], "unknown config key TRAIN.SEED (did you mean SEED? valid keys under "),
    ("DATA:\n  BATCH_SIZE: 2\n", ["DATA.BATCH_SIZE", "2"],
     "unknown config key DATA.BATCH_SIZE (did you mean TRAIN.BATCH_SIZE or TEST.BATCH_SIZE? valid keys under DATA: "),
    # the original's MYCLIP copy is named only where no other section has the key
    ("DATA:\n  USE_MEAN_POOLING: true\n", ["DATA.USE_MEAN_POOLING", "True"],
     "unknown config key DATA.USE_MEAN_POOLING (did you mean MODEL.USE_MEAN_POOLING? valid keys under DATA: "),
])
def test_a_key_under_the_wrong_section_names_the_section_it_belongs_to(tmp_path, text, opts, message):
    """A key written under another section (LR under DATA, NUM_CLIP under TRAIN) was refused with the wrong
    section's keys only, or with a guess of a near name there, never the key that was meant."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert config_refusal(str(path)).startswith(f"{path}: {message}")
    assert config_refusal(None, opts).startswith(f"--opts: {message}")


def test_a_learning_rate_schedule_that_cannot_train_is_refused_naming_both_keys(tmp_path):
    """TRAIN.LR_MIN above TRAIN.LR was accepted, and the cosine raised the LR to LR_MIN over the run; TRAIN.LR 0 was
    accepted, and a whole run's steps changed no weight. An evaluation keeps the training keys as they are."""
    demo = str(ROOT / "configs" / "demo.yaml")
    assert config_refusal(demo, ["TRAIN.LR", "5e-6"]) == (
        f"TRAIN.LR_MIN = 1e-05 (from {demo}) is above TRAIN.LR = 5e-06 (from --opts): the cosine would raise the LR "
        "to it instead of lowering it; set TRAIN.LR_MIN at most TRAIN.LR (0: TRAIN.LR / 100)")
    path = tmp_path / "c.yaml"
    path.write_text("TRAIN:\n  LR: 0.0\n")
    assert config_refusal(str(path)) == (
        f"TRAIN.LR = 0.0 (from {path}) leaves the weights unchanged (every AdamW step, weight decay included, "
        "scales with it): set the peak LR above 0 (the recipes use 1e-6 to 1e-3), or evaluate weights with "
        "--only_test")
    assert config_refusal(None, ["TRAIN.LR", "0", "TRAIN.LR_MIN", "1e-6"]).startswith("TRAIN.LR = 0.0 (from --opts)")
    # equal is the recipes' constant LR; LR_MIN 0 is LR / 100
    assert load_config(demo, ["TRAIN.LR", "1e-5"]).TRAIN.LR_MIN == 1e-5
    assert load_config(None, ["TRAIN.LR", "1e-4", "TRAIN.LR_MIN", "0"]).TRAIN.LR_MIN == 0.0
    assert load_config(str(path), ["TEST.ONLY_TEST", "True"]).TRAIN.LR == 0.0
    assert load_config(demo, ["TRAIN.LR", "5e-6", "TEST.ONLY_TEST", "True"]).TRAIN.LR == 5e-6


def test_a_warmup_that_starts_above_the_peak_lr_is_refused_naming_both_keys():
    """TRAIN.WARMUP_START_LR above TRAIN.LR was accepted, and the warmup lowered the LR to the peak instead of raising
    it; without a warmup the start is unused (the K400 recipe's constant LR sets it equal)."""
    assert config_refusal(None, ["TRAIN.WARMUP_START_LR", "1e-4", "TRAIN.LR_MIN", "1e-6"]) == (
        "TRAIN.WARMUP_START_LR = 0.0001 (from --opts) is above TRAIN.LR = 8e-06 (the default): the warmup would "
        "lower the LR from it instead of raising it to TRAIN.LR; set TRAIN.WARMUP_START_LR at most TRAIN.LR, or "
        "TRAIN.WARMUP_EPOCHS 0")
    k400 = str(ROOT / "configs" / "k400.yaml")
    assert load_config(k400, ["TRAIN.WARMUP_START_LR", "1e-4"]).TRAIN.WARMUP_EPOCHS == 0
    assert load_config(None, ["TRAIN.WARMUP_START_LR", "8e-6"]).TRAIN.WARMUP_START_LR == 8e-6


def test_a_negative_value_of_the_originals_pretrained_grid_keys_is_named_as_written():
    """MYCLIP.FT_IMAGE_SIZE -1 was refused as MODEL.PRETRAINED_INPUT_SIZE = -1, a key the command never named."""
    assert config_refusal(None, ["MYCLIP.FT_IMAGE_SIZE", "-1"]) == "MYCLIP.FT_IMAGE_SIZE = -1 must not be negative"
    assert config_refusal(None, ["MYCLIP.FT_FRAMES", "-8"]) == "MYCLIP.FT_FRAMES = -8 must not be negative"
    assert load_config(None, ["MYCLIP.FT_FRAMES", "16"]).MODEL.PRETRAINED_FRAMES == 16


def test_an_ema_that_would_never_move_is_refused_for_training():
    """TRAIN.EMA with EMA_DECAY 1 was accepted: timm's average keeps decay x itself, so it stayed at the first
    step's weights, and every validation (and best.pth) scored those instead of the trained ones."""
    assert config_refusal(None, ["TRAIN.EMA", "True", "TRAIN.EMA_DECAY", "1"]) == (
        "TRAIN.EMA_DECAY = 1.0 (from --opts) with TRAIN.EMA True keeps the average at the first step's weights, "
        "which every validation would score: use a decay below 1 (e.g. 0.9999), or TRAIN.EMA False")
    assert load_config(None, ["TRAIN.EMA", "True", "TRAIN.EMA_DECAY", "0.9999"]).TRAIN.EMA
    assert load_config(None, ["TRAIN.EMA_DECAY", "1"]).TRAIN.EMA_DECAY == 1.0  # no EMA: the decay is unused
    assert load_config(None, ["TRAIN.EMA", "True", "TRAIN.EMA_DECAY", "1", "TEST.ONLY_TEST", "True"]).TEST.ONLY_TEST


@pytest.mark.parametrize("value", ["1", "5", "1.0", "50.0"])
def test_a_weight_decay_of_1_or_more_is_refused_for_training(value):
    """AdamW's decoupled decay shrinks every decayed weight by lr x WEIGHT_DECAY each step, whatever the gradient:
    5 (typed for 5e-2) trained and the weights withered without a word. The recipes' 0.05 and 0 (off) load, and
    an evaluation, which decays nothing, takes any value."""
    assert config_refusal(None, ["TRAIN.WEIGHT_DECAY", value]) == (
        f"TRAIN.WEIGHT_DECAY = {float(value)!r} is not a usable AdamW weight decay (must be below 1: each step "
        "shrinks the decayed weights by its LR x TRAIN.WEIGHT_DECAY of themselves, whatever the gradient; the "
        "recipes use 0.05)")
    for decay in ("0", "0.05", "0.3", "0.999"):
        assert load_config(None, ["TRAIN.WEIGHT_DECAY", decay]).TRAIN.WEIGHT_DECAY == float(decay)
    assert load_config(None, ["TRAIN.WEIGHT_DECAY", value, "TEST.ONLY_TEST", "True"]).TRAIN.WEIGHT_DECAY == float(value)


@pytest.mark.parametrize("key", ["DATA.NUM_THREADS", "DATA.NVDEC_THREADS"])
def test_more_dali_threads_than_a_process_can_start_are_refused(key):
    """DATA.NUM_THREADS 100000 ended the run in DALI's abort ("terminate called", exit status 134) with no word of
    the key: it is refused at load, naming it; the cap itself loads."""
    from configs.checks import MAX_DALI_THREADS
    from configs.keys import _get

    assert config_refusal(None, [key, "100000"]) == (
        f"{key} = 100000 is more threads than DALI can start: at most {MAX_DALI_THREADS} are taken (more exhaust the "
        "threads a process may start, and DALI aborts it); the defaults are 4 and 8")
    assert _get(load_config(None, [key, str(MAX_DALI_THREADS)]), key) == MAX_DALI_THREADS


def test_a_name_yaml_reads_as_a_date_keeps_its_text(tmp_path):
    """OUTPUT: 2024-10-01 (a folder named by its day) was refused as a datetime.date for a str key."""
    path = tmp_path / "c.yaml"
    path.write_text("OUTPUT: 2024-10-01\nDATA:\n  DATASET: 2024-10-01 10:00:00\n")
    cfg = load_config(str(path))
    assert (cfg.OUTPUT, cfg.DATA.DATASET) == ("2024-10-01", "2024-10-01 10:00:00")


@pytest.mark.parametrize("written, expected", [("010", 10), ("08", 8), ("0042", 42), ("0", 0)])
def test_a_whole_number_with_leading_zeros_is_decimal_in_a_file_and_in_opts(tmp_path, written, expected):
    """YAML 1.1 read SEED: 010 as octal 8 (and 08 as a string, refused); --opts refused both."""
    path = tmp_path / "c.yaml"
    path.write_text(f"TRAIN:\n  WARMUP_EPOCHS: {written}\n  EPOCHS: 50\nSEED: {written}\n")
    cfg = load_config(str(path))
    assert (cfg.TRAIN.WARMUP_EPOCHS, cfg.SEED) == (float(expected), expected)
    assert load_config(None, ["SEED", written]).SEED == expected


def test_a_number_yaml_reads_as_a_string_inside_a_list_is_a_number(tmp_path):
    """YAML 1.1 reads 999e-3 as a string in a list too: TRAIN.BETAS: [0.9, 999e-3] was refused."""
    path = tmp_path / "c.yaml"
    path.write_text("TRAIN:\n  BETAS: [0.9, 999e-3]\nAUG:\n  CROP_SCALES: [1, 875e-3]\n")
    cfg = load_config(str(path))
    assert (cfg.TRAIN.BETAS, cfg.AUG.CROP_SCALES) == ((0.9, 0.999), (1.0, 0.875))


def test_a_relative_cfg_not_found_names_the_folder_and_the_project_config_of_that_name(tmp_path, monkeypatch):
    """--cfg configs/demo.yaml run from another folder said only "not found"."""
    from configs import CONFIG_DIR

    assert CONFIG_DIR == str(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    assert config_refusal("configs/demo.yaml") == (
        f"config file not found: configs/demo.yaml (looked for in {tmp_path}; the project's demo.yaml is "
        f"{ROOT / 'configs' / 'demo.yaml'})")
    assert config_refusal("mine.yaml") == f"config file not found: mine.yaml (looked for in {tmp_path})"
    child = tmp_path / "child.yaml"
    child.write_text("BASE: [k400.yaml]\n")  # a recipe named as if it lay beside the file
    assert config_refusal(str(child)) == (f"config file not found: {tmp_path / 'k400.yaml'} (in BASE of {child}; "
                                          f"the project's k400.yaml is {ROOT / 'configs' / 'k400.yaml'})")


def test_the_config_names_the_model_presets():
    from configs.checks import MODEL_ARCHS
    from models import ARCHS

    assert sorted(MODEL_ARCHS) == sorted(ARCHS)


def test_the_config_names_the_model_presets_patch_sizes():
    from configs.checks import MODEL_PATCH_SIZES
    from models import ARCHS

    assert MODEL_PATCH_SIZES == {name: preset["patch_size"] for name, preset in ARCHS.items()}


def test_an_input_size_the_patch_does_not_divide_is_refused_at_load(tmp_path):
    """It was refused only when the model was built (tools that build none took it)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("MODEL:\n  ARCH: eva-b/16\nDATA:\n  INPUT_SIZE: 200\n")
    assert config_refusal(str(cfg)) == ("DATA.INPUT_SIZE 200 is not divisible by the patch size 16 of MODEL.ARCH "
                                        "'eva-b/16' (e.g. use 192 or 208)")
    with pytest.raises(ConfigError, match=re.escape("DATA.INPUT_SIZE 36 is not divisible by the patch size 8 of "
                                                    "MODEL.ARCH 'eva-tiny/8' (e.g. use 32 or 40)")):
        load_config(str(ROOT / "configs" / "demo.yaml"), ["DATA.INPUT_SIZE", "36"])
    # a config that leaves MODEL.ARCH at its default may feed a loader alone: the model build refuses it
    assert load_config(None, ["DATA.INPUT_SIZE", "32"]).DATA.INPUT_SIZE == 32


def test_an_unknown_arch_is_refused_before_the_files_are_looked_for(tmp_path, monkeypatch, capsys):
    """A typo in MODEL.ARCH was said only once every missing file (the lists, the weights) had been fixed."""
    import train

    monkeypatch.chdir(tmp_path)  # the demo's lists are not there
    rc = train.main(["--cfg", str(ROOT / "configs" / "demo.yaml"), "--dry-run", "--opts", "MODEL.ARCH", "eva-tiny/9"])
    assert rc == 2 and capsys.readouterr().err == (
        "error: MODEL.ARCH 'eva-tiny/9' is not a known preset; choose one of ['eva-1b/14', 'eva-b/16', 'eva-l/14', "
        "'eva-s/16', 'eva-tiny/16', 'eva-tiny/8'] (from --opts; did you mean 'eva-tiny/8'?)\n")
    assert config_refusal(None, ["MODEL.ARCH", "EVA-1B/14"]).endswith("(from --opts; did you mean 'eva-1b/14'?)")
    assert os.listdir(tmp_path) == []
