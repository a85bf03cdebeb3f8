"""A folder given as the weights of predict, extract_features or a Predictor (a training run's output folder) is
refused in one line that names the weights files in it and the one to give, not only "a folder"."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tools import extract_features, predict
from tools.model_io import load_setup

DEMO = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")


def _run_folder(folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    for i, name in enumerate(names):
        (folder / name).write_bytes(b"weights")
        os.utime(folder / name, (1_000_000 + i, 1_000_000 + i))  # the later in the list, the newer
    (folder / "log.txt").write_text("not weights")
    return folder


@pytest.mark.parametrize("names, hint", [
    (["ckpt_epoch_9.pth", "best.pth", "ckpt_epoch_10.pth"],
     "it holds best.pth, ckpt_epoch_10.pth, ckpt_epoch_9.pth; name one of them, e.g. {folder}/best.pth"),
    (["ckpt_epoch_9.pth", "ckpt_epoch_10.pth"],  # no best.pth: the newest
     "it holds ckpt_epoch_10.pth, ckpt_epoch_9.pth; name one of them, e.g. {folder}/ckpt_epoch_10.pth"),
    ([], "it holds no .pth, .pt, .safetensors file; name the weights file itself"),
])
def test_a_weights_folder_is_named_with_the_files_it_holds(tmp_path, capsys, names, hint):
    folder = _run_folder(tmp_path / "run", names)
    want = f"weights file not found: {folder} (a folder, not a file): {hint.format(folder=folder)}"
    with pytest.raises(FileNotFoundError) as raised:
        load_setup(DEMO, [], str(folder))
    assert str(raised.value) == want
    out = tmp_path / "feats"
    assert extract_features.main([str(tmp_path / "a.mp4"), "--weights", str(folder), "--cfg", DEMO, "--out",
                                  str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == f"error: {want}\n" and not out.exists()  # refused before anything is written
    assert predict.main([str(tmp_path / "a.mp4"), "--weights", str(folder), "--cfg", DEMO, "--work-dir",
                         str(tmp_path / "work"), "--quiet"]) == 2
    assert capsys.readouterr().err == f"error: {want}\n"
