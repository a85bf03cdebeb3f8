"""The original code's config keys that this tree lacks (configs/original_keys.py): mapped, ignored with one warning
line, or refused naming the key, the value and why, from a YAML file and from --opts alike."""

from __future__ import annotations

import pytest

from configs import ConfigError, get_cfg_defaults, load_config
from tests.conftest import config_refusal

# The original's config defaults (its utils/config.py), every key, as a YAML file would write them; only ARCH and
# PRETRAINED_MODE differ (its ViT-B/16 CLIP mode is not built here).
ORIGINAL_DEFAULTS = """\
BASE: ['']
DATA: {ROOT: '', TRAIN_FILE: '', VAL_FILE: '', DATASET: kinetics400, INPUT_SIZE: 224, NUM_FRAMES: 8, TUBELET_SIZE: 1,
       NUM_CLASSES: 400, LABEL_LIST: ''}
MODEL: {ARCH: eva-1b/14, DROP_PATH_RATE: 0., DROP_RATE: 0., ATTN_DROP_RATE: 0., INIT_VALUES: 0., PRETRAINED: null,
        PRETRAINED_MODE: eva_k722, CLASS_MAPPING: null, RESUME: null, FIX_TEXT: True, FIX_FINE_TUNE: 0}
TRAIN: {EPOCHS: 40, WARMUP_EPOCHS: 5., WEIGHT_DECAY: 0.05, LR: 8.e-6, WARMUP_START_LR: 0., LR_MIN: 0., BATCH_SIZE: 1,
        LR_SCHEDULER: cosine, LR_SCHEDULER_WARMUP_PREFIX: True, OPTIMIZER: adamw, BETAS: [0.9, 0.98], EPS: 1e-6,
        OPT_LEVEL: O1, AUTO_RESUME: False, ACCUMULATION_STEPS: 4, USE_CHECKPOINT: True, LAYER_WISE_DECAY: 1.}
AUG: {LABEL_SMOOTH: 0.1, COLOR_JITTER: 0.8, GRAY_SCALE: 0.2, MIXUP: 0.8, CUTMIX: 1.0, MIXUP_SWITCH_PROB: 0.5}
TEST: {BATCH_SIZE: 2, NUM_CLIP: 1, NUM_CROP: 1, ONLY_TEST: False}
MYCLIP: {NUM_EXTRA_TOKENS: 1, FT_FRAMES: 8, FT_IMAGE_SIZE: 224, USE_LEARNABLE_POS_EMB: True, USE_MEAN_POOLING: True,
         STOP_GRAD_CONV1: False, USE_SAME_PE: False, USE_GLOBAL_ATTEN: True, CHECKPOINT_SEGMENTS: 3,
         USE_TEXT_EMBED: False}
OUTPUT: ''
SAVE_FREQ: 1
PRINT_FREQ: 10
SEED: 1024
"""

# Keys the original ignored (or whose value asks for what this project does), with a value that changes nothing
# and the warning's reason.
IGNORED = [
    ("MODEL.INIT_VALUES", "0.", "0.0", "as in the original, whose EVA models hard-code init_values 0"),
    ("MODEL.FIX_TEXT", "False", "False", "which have no CLIP text tower to freeze"),
    ("MODEL.FIX_FINE_TUNE", "0", "0", "0 freezes no block, in the original as here"),
    ("MODEL.RESUME", "", "''", "empty: no checkpoint to resume, the original's default"),
    ("TRAIN.LR_SCHEDULER_WARMUP_PREFIX", "True", "True", "the cosine starts after the warmup"),
    ("MYCLIP.NUM_EXTRA_TOKENS", "1", "1", "the model has one class token"),
    ("MYCLIP.USE_SAME_PE", "True", "True", "where only its CLIP models read it"),
    ("MYCLIP.USE_GLOBAL_ATTEN", "False", "False", "where only its CLIP models read it"),
]

# Values the original's key asks for that cannot be had here: the error's text after "<source>: ".
REFUSED = [
    ("MODEL.INIT_VALUES", "0.1", "MODEL.INIT_VALUES = 0.1 cannot be honoured: the original ignored it too (its EVA "
                                 "models hard-code init_values 0) and this model has no layer-scale; remove the key"),
    ("MODEL.FIX_FINE_TUNE", "20", "MODEL.FIX_FINE_TUNE = 20 has no equivalent: every block is trained here; remove the "
                                  "key (TRAIN.LAYER_WISE_DECAY gives the lower blocks smaller steps, "
                                  "MODEL.STOP_GRAD_CONV1 True freezes the patch embedding)"),
    ("MODEL.RESUME", "ckpt.pth", "MODEL.RESUME = 'ckpt.pth' is not a config key here: pass the checkpoint as "
                                 "train.py's --resume ckpt.pth instead"),
    ("TRAIN.LR_SCHEDULER_WARMUP_PREFIX", "False", "TRAIN.LR_SCHEDULER_WARMUP_PREFIX = False has no equivalent: the "
                                                  "cosine always starts after the warmup here (the original's default "
                                                  "True); remove the key"),
    ("MYCLIP.NUM_EXTRA_TOKENS", "0", "MYCLIP.NUM_EXTRA_TOKENS = 0 has no equivalent: the model always has one class "
                                     "token (the original's default 1); remove the key"),
    # mapped keys: the value reaches our key's check, named as the user wrote it
    ("TRAIN.LR_SCHEDULER", "step", "TRAIN.LR_SCHEDULER = 'step' (read as TRAIN.LR_SCHEDULER.NAME) is not one of "
                                   "'cosine'"),
    ("TRAIN.OPTIMIZER", "sgd", "TRAIN.OPTIMIZER = 'sgd' (read as TRAIN.OPTIMIZER.NAME) is not one of 'adamw'"),
]


def _yaml(tmp_path, key: str, value: str):
    section, name = key.split(".")
    path = tmp_path / "original.yaml"
    path.write_text(f"{section}:\n  {name}: {value if value else repr(value)}\n")
    return path


@pytest.mark.parametrize("key, value, shown, reason", IGNORED)
def test_an_ignored_original_key_in_opts_loads_with_one_warning_line(key, value, shown, reason, capsys):
    cfg = load_config(None, [key, value])
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: --opts: {key} {shown} is ignored (") and reason in err[0]
    assert cfg.dump() == get_cfg_defaults().dump()  # nothing of ours changed


@pytest.mark.parametrize("key, value, shown, reason", IGNORED)
def test_an_ignored_original_key_in_a_yaml_file_loads_with_one_warning_line(key, value, shown, reason, tmp_path,
                                                                             capsys):
    path = _yaml(tmp_path, key, value)
    cfg = load_config(str(path))
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {path}: {key} {shown} is ignored (") and reason in err[0]
    assert cfg.dump() == get_cfg_defaults().dump()



# The original's MYCLIP keys this tree keeps but never reads: a value asking for what this project does not do.
UNREAD = [
    ("MYCLIP.USE_LEARNABLE_POS_EMB", "False", "the position embedding is always learned here"),
    ("MYCLIP.USE_TEXT_EMBED", "True", "the model classifies the video alone: it has no text branch"),
]


@pytest.mark.parametrize("key, value, reason", UNREAD)
def test_a_kept_myclip_key_with_a_value_not_honoured_warns_once(key, value, reason, tmp_path, capsys):
    # The value was dropped without a word, unlike the original's other keys this project does not honour.
    assert load_config(None, [key, value]) is not None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: --opts: {key} {value} is ignored (") and reason in err[0]
    path = _yaml(tmp_path, key, value)
    load_config(str(path))
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {path}: {key} {value} is ignored (") and reason in err[0]


def test_a_kept_myclip_key_with_the_value_honoured_loads_silently(capsys):
    load_config(None, ["MYCLIP.USE_LEARNABLE_POS_EMB", "True", "MYCLIP.USE_TEXT_EMBED", "False"])
    assert capsys.readouterr().err == ""

def test_the_warning_is_printed_by_the_first_process_of_a_run_only(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    load_config(None, ["MODEL.INIT_VALUES", "0"])
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    load_config(None, ["MODEL.INIT_VALUES", "0"])
    assert capsys.readouterr().err.startswith("warning: --opts: MODEL.INIT_VALUES 0.0 is ignored")


@pytest.mark.parametrize("key, value, message", REFUSED)
def test_an_original_key_asking_for_what_cannot_be_had_is_refused_from_opts(key, value, message):
    assert config_refusal(None, [key, value]) == f"--opts: {message}"


@pytest.mark.parametrize("key, value, message", REFUSED)
def test_an_original_key_asking_for_what_cannot_be_had_is_refused_from_a_yaml_file(key, value, message, tmp_path):
    path = _yaml(tmp_path, key, value)
    assert config_refusal(str(path)) == f"{path}: {message}"


@pytest.mark.parametrize("key, value", [("TRAIN.LR_SCHEDULER", "cosine"), ("TRAIN.OPTIMIZER", "adamw")])
def test_a_mapped_original_key_sets_ours_without_a_word(key, value, tmp_path, capsys):
    for cfg in (load_config(None, [key, value]), load_config(str(_yaml(tmp_path, key, value)))):
        assert cfg.TRAIN[key.split(".")[1]].NAME == value  # our key, TRAIN.LR_SCHEDULER.NAME / TRAIN.OPTIMIZER.NAME
    assert capsys.readouterr().err == ""
    # our own spelling, a section in a file, still merges as any section
    path = tmp_path / "ours.yaml"
    path.write_text(f"TRAIN:\n  {key.split('.')[1]}:\n    NAME: {value}\n")
    assert load_config(str(path)).dump() == get_cfg_defaults().dump()


def test_a_value_of_the_wrong_type_for_an_original_key_names_its_type():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["MODEL.FIX_TEXT", "maybe"])
    assert str(err.value) == ("--opts: key MODEL.FIX_TEXT expects a value of type bool (True or False; yes/no and "
                              "on/off too, in any letter case, as a YAML file reads them) (current value True, from "
                              "the original's defaults), got 'maybe'")


@pytest.mark.parametrize("opts, message", [
    (["MODEL.INIT_VALUES=0"], "--opts takes KEY VALUE pairs, not KEY=VALUE: write MODEL.INIT_VALUES 0 for "
                              "MODEL.INIT_VALUES=0"),
    (["SEED", "1", "MODEL.FIX_TEXT"], "--opts expects KEY VALUE pairs; MODEL.FIX_TEXT has no value (it is the last "
                                      "item)"),
])
def test_an_original_key_is_read_as_a_key_when_opts_are_miswritten(opts, message):
    assert config_refusal(None, opts) == message


def test_a_file_with_every_key_of_the_originals_defaults_loads(tmp_path, capsys):
    path = tmp_path / "original_defaults.yaml"
    path.write_text(ORIGINAL_DEFAULTS)
    cfg = load_config(str(path))
    assert (cfg.TRAIN.LR_SCHEDULER.NAME, cfg.TRAIN.OPTIMIZER.NAME) == ("cosine", "adamw")
    assert (cfg.TRAIN.ACCUMULATION_STEPS, cfg.TRAIN.EPOCHS, cfg.MODEL.PRETRAINED) == (4, 40, "")
    warned = [line.split(" ")[2] for line in capsys.readouterr().err.splitlines()]
    assert warned == ["MODEL.INIT_VALUES", "MODEL.RESUME", "MODEL.FIX_TEXT", "MODEL.FIX_FINE_TUNE",
                      "TRAIN.LR_SCHEDULER_WARMUP_PREFIX", "MYCLIP.NUM_EXTRA_TOKENS", "MYCLIP.USE_SAME_PE",
                      "MYCLIP.USE_GLOBAL_ATTEN"]
