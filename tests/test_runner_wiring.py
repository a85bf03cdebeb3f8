"""The explicit wiring: one choice of initial weights per run, evaluation without a trainer."""

from __future__ import annotations

from configs import load_config
from engine import start_weights
from engine.metrics import MetricLogger

DEMO = "configs/demo.yaml"


def _cfg(tmp_path, *opts):
    return load_config(DEMO, ["OUTPUT", str(tmp_path / "out"), "LOG.TENSORBOARD", "False", *opts])


def test_weights_to_load_picks_exactly_one_source(tmp_path):
    metrics = MetricLogger(str(tmp_path / "log"), tensorboard=False, nvml=False, progress_bar=False)
    cfg = _cfg(tmp_path, "MODEL.PRETRAINED", "init.pth", "MODEL.PRETRAINED_MODE", "eva")
    choice = start_weights.weights_to_load(cfg, metrics)
    assert (choice.path, choice.mode, choice.checkpoint) == ("init.pth", "eva", False)
    assert choice.describe() == "MODEL.PRETRAINED = init.pth"
    # training that resumes (--resume, or a checkpoint in OUTPUT with TRAIN.AUTO_RESUME) does not read
    # MODEL.PRETRAINED: the checkpoint the trainer applies replaces every weight
    assert start_weights.weights_to_load(cfg, metrics, resume="ckpt.pth") is None
    # evaluation of a checkpoint loads only the checkpoint (the pretrained weights would be overwritten)
    test_cfg = _cfg(tmp_path, "MODEL.PRETRAINED", "init.pth", "TEST.ONLY_TEST", "True")
    choice = start_weights.weights_to_load(test_cfg, metrics, resume="ckpt.pth")
    assert (choice.path, choice.mode, choice.checkpoint) == ("ckpt.pth", "eva_k722", True)
    # nothing in OUTPUT: MODEL.PRETRAINED is what is evaluated
    assert start_weights.weights_to_load(test_cfg, metrics).path == "init.pth"
    nothing = _cfg(tmp_path, "TEST.ONLY_TEST", "True", "MODEL.PRETRAINED", "")
    assert start_weights.weights_to_load(nothing, metrics) is None
    # a checkpoint in OUTPUT: resumed with TRAIN.AUTO_RESUME (the demo's False starts over from MODEL.PRETRAINED)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ckpt_epoch_1.pth").write_bytes(b"")
    auto = _cfg(tmp_path, "MODEL.PRETRAINED", "init.pth", "TRAIN.AUTO_RESUME", "True")
    assert start_weights.weights_to_load(auto, metrics) is None
    assert start_weights.weights_to_load(_cfg(tmp_path, "MODEL.PRETRAINED", "init.pth"), metrics).path == "init.pth"
    metrics.close()
