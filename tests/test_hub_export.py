"""hf:// references resolved through a local Hugging Face cache made here (no network), the safetensors export
round trip, and predict from an exported file without a config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from configs import load_config
from engine.preflight import check_files
from models import CheckpointError, build_model, load_configured_weights, load_pretrained, read_state_dict
from models.hub import HubReference, HubReferenceError, parse_hub_reference, resolve_weights_path
from models.weights_file import read_weights_metadata, save_weights_file
from tools import export_safetensors, predict
from tools.inference import load_model, load_setup

from tests.conftest import child_env

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TINY = ["DATA.INPUT_SIZE", "32", "DATA.NUM_FRAMES", "4", "DATA.TUBELET_SIZE", "2", "DATA.NUM_THREADS", "1",
        "DATA.NUM_WORKERS", "1", "DATA.INDEX_WORKERS", "1", "TEST.BATCH_SIZE", "2", "LOG.PROGRESS_BAR", "False"]


def _hub_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """huggingface_hub's cache layout: blobs by content, snapshots/<commit>/<path> links, refs/main -> commit."""
    import hashlib

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / COMMIT / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture
def tiny(tmp_path):
    """A tiny model, its training-style checkpoint and its export (with class names)."""
    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n0,moving down\n1,growing\n2,moving up\n3,shrinking\n")
    cfg = load_config(DEMO, TINY + ["DATA.LABEL_LIST", str(labels)])
    torch.manual_seed(5)
    model = build_model(cfg).eval()
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"model": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 3}, ckpt)
    out = tmp_path / "tiny.safetensors"
    assert export_safetensors.main(["--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--opts", *TINY,
                                    "DATA.LABEL_LIST", str(labels)]) == 0
    return cfg, model, ckpt, out


def test_parse_references():
    assert parse_hub_reference("hf://BAAI/EVA/eva_video_k400.pth") == HubReference("BAAI/EVA", "eva_video_k400.pth")
    assert parse_hub_reference("hf://o/r@v1.0/a/b.safetensors") == HubReference("o/r", "a/b.safetensors", "v1.0")
    for bad in ("hf://BAAI/eva_video_k400.pth", "hf://o/r@/x.pth", "hf://o//x.pth", "hf://o/r/"):
        with pytest.raises(HubReferenceError, match="hf://"):
            parse_hub_reference(bad)
    # an empty revision was "o/r is not a valid repository id", of a repository id that is fine
    with pytest.raises(HubReferenceError) as info:
        parse_hub_reference("hf://o/r@/x.pth")
    assert str(info.value) == ("hf://o/r@/x.pth: no revision after '@'; name a branch, tag or commit "
                               "(hf://o/r@main/...), or leave out '@' for the default branch")
    assert resolve_weights_path("local/file.pth") == "local/file.pth"


def test_a_revision_with_a_slash_is_written_url_encoded():
    """hf://o/n@refs/pr/3/model.pth read revision 'refs' and file 'pr/3/model.pth': a pull request's files could
    not be named. Such a revision is written URL-encoded, and the form with bare slashes is refused, saying so."""
    want = HubReference("o/n", "model.pth", "refs/pr/3")
    assert parse_hub_reference("hf://o/n@refs%2Fpr%2F3/model.pth") == want
    assert parse_hub_reference("hf://o/n@refs%2fpr%2f3/model.pth") == want
    assert parse_hub_reference("hf://o/n@refs%2Fpr%2F3/sub/w.safetensors").filename == "sub/w.safetensors"
    assert parse_hub_reference("hf://o/n@v1.0/sub/w.pth") == HubReference("o/n", "sub/w.pth", "v1.0")
    with pytest.raises(HubReferenceError) as info:
        parse_hub_reference("hf://o/n@refs/pr/3/model.pth")
    assert str(info.value) == ("hf://o/n@refs/pr/3/model.pth: a revision with '/' must be written URL-encoded, '/' as "
                               "%2F (e.g. hf://o/n@refs%2Fpr%2F3/model.pth): the first '/' after the revision starts "
                               "the file's path")
    with pytest.raises(HubReferenceError, match="revision 'a//b' is not a valid branch, tag or commit"):
        parse_hub_reference("hf://o/n@a%2F%2Fb/model.pth")


def test_cached_weights_path_finds_a_cached_reference_without_a_request(offline_cache):
    from models.hub import cached_weights_path

    _hub_cache(offline_cache, "acme/eva", {"sub/w.pth": b"weights"})
    found = cached_weights_path("hf://acme/eva/sub/w.pth")
    assert found and open(found, "rb").read() == b"weights"
    assert cached_weights_path("hf://acme/eva/other.pth") is None
    assert cached_weights_path("local/w.pth") == "local/w.pth"


def test_export_round_trip_same_logits(tiny):
    cfg, model, ckpt, out = tiny
    meta = read_weights_metadata(str(out))
    assert (meta["arch"], meta["num_frames"], meta["tubelet_size"], meta["input_size"], meta["num_classes"]) == \
        ("eva-tiny/8", 4, 2, 32, 4)
    assert meta["class_names"] == ["moving down", "growing", "moving up", "shrinking"]
    assert meta["mean"] == [123.675, 116.28, 103.53] and meta["std"] == [58.395, 57.12, 57.375]
    sd = read_state_dict(str(out))
    assert sd.keys() == model.state_dict().keys()
    cfg2, names = load_setup("", [], str(out))  # no config: everything from the file
    assert names[2] == "moving up" and cfg2.MODEL.ARCH == "eva-tiny/8"
    loaded = load_model(cfg2, str(out), torch.device("cpu"))
    x = torch.randn(3, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_a_tilde_the_shell_leaves_in_a_path_flag_is_the_home_folder(tiny, tmp_path, monkeypatch):
    """bash expands no ~ after --out= (nor in quotes): the export went to a folder named ~ in the working folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert export_safetensors.main(["--weights=~/tiny.safetensors", "--out=~/again.safetensors"]) == 0
    assert (tmp_path / "again.safetensors").is_file() and not (tmp_path / "work" / "~").exists()
    args = predict.parse_args(["~/a.mp4", "--weights=~/w.pth", "--cfg=~/c.yaml", "--root=~/r", "--out=~/p.json",
                               "--work-dir=~/wd"])
    assert [args.inputs[0], args.weights, args.cfg, args.root, args.out, args.work_dir] == [
        str(tmp_path / name) for name in ("a.mp4", "w.pth", "c.yaml", "r", "p.json", "wd")]
    from tools import extract_features
    args = extract_features.parse_args(["~/a.mp4", "--weights=~/w.pth", "--cfg=~/c.yaml", "--root=~/r", "--out=~/f"])
    assert [args.inputs[0], args.weights, args.cfg, args.root, args.out] == [
        str(tmp_path / name) for name in ("a.mp4", "w.pth", "c.yaml", "r", "f")]


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_export_gets_the_mode_open_gives(tmp_path, umask):
    # safetensors writes a private (0600) file; an export must be as readable as a torch.save checkpoint beside it.
    model = build_model(load_config(DEMO, TINY + ["DATA.LABEL_LIST", ""]), device="meta").to_empty(device="cpu")
    old = os.umask(umask)
    try:
        out, ckpt = tmp_path / "w.safetensors", tmp_path / "w.pth"
        save_weights_file(model, str(out), arch="eva-tiny/8", mean=(0, 0, 0), std=(1, 1, 1))
        torch.save(model.state_dict(), ckpt)
    finally:
        os.umask(old)
    assert oct(out.stat().st_mode & 0o777) == oct(ckpt.stat().st_mode & 0o777) == oct(0o666 & ~umask)
    assert read_weights_metadata(str(out))["arch"] == "eva-tiny/8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth", "w.safetensors"]  # no temporary file left


def test_hub_reference_resolves_offline_and_loads(tiny, offline_cache):
    cfg, model, ckpt, out = tiny
    _hub_cache(offline_cache, "acme/eva-tiny", {"weights/tiny.safetensors": out.read_bytes(),
                                               "ckpt.pth": ckpt.read_bytes()})
    path = resolve_weights_path("hf://acme/eva-tiny/weights/tiny.safetensors")
    assert Path(path).read_bytes() == out.read_bytes() and COMMIT in path
    assert resolve_weights_path(f"hf://acme/eva-tiny@{COMMIT}/ckpt.pth").endswith("ckpt.pth")
    x = torch.randn(2, 4, 3, 32, 32)
    for ref in ("hf://acme/eva-tiny/weights/tiny.safetensors", "hf://acme/eva-tiny@main/ckpt.pth"):
        fresh = build_model(cfg).eval()
        missing, _ = load_pretrained(fresh, ref)
        assert not missing
        with torch.no_grad():
            torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    # MODEL.PRETRAINED (and so --pretrained) takes a reference: check_files accepts it, the configured weights load
    ref_cfg = load_config(DEMO, TINY + ["MODEL.PRETRAINED", "hf://acme/eva-tiny/ckpt.pth", "DATA.TRAIN_FILE",
                                        str(ckpt), "DATA.VAL_FILE", str(ckpt), "DATA.LABEL_LIST", ""])
    check_files(ref_cfg, only_test=False)
    check_files(ref_cfg, only_test=True, resume="hf://acme/eva-tiny/ckpt.pth")  # --only_test --resume hf://...
    local_cfg = load_config(DEMO, TINY + ["MODEL.PRETRAINED", "absent.pth", "DATA.TRAIN_FILE", str(ckpt),
                                          "DATA.VAL_FILE", str(ckpt), "DATA.LABEL_LIST", ""])
    with pytest.raises(FileNotFoundError, match="MODEL.PRETRAINED = absent.pth"):  # local paths are still checked
        check_files(local_cfg, only_test=False)
    configured = build_model(ref_cfg).eval()
    load_configured_weights(configured, ref_cfg)
    with torch.no_grad():
        torch.testing.assert_close(configured(x), model(x), rtol=0, atol=0)


def test_uncached_reference_offline_fails_in_one_line(offline_cache):
    with pytest.raises(HubReferenceError) as info:
        resolve_weights_path("hf://acme/absent/model.pth")
    assert str(info.value) == ("hf://acme/absent/model.pth: not in the local Hugging Face cache and offline mode "
                               "(HF_HUB_OFFLINE) is on; unset HF_HUB_OFFLINE to download it, or give a local file")


def test_offline_through_transformers_offline_names_that_variable(tmp_path, monkeypatch):
    """TRANSFORMERS_OFFLINE=1 alone was reported as HF_HUB_OFFLINE being on: a user who checked that variable found
    it unset. The message names the variable that is set, and what to do."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(HubReferenceError) as info:
        resolve_weights_path("hf://acme/absent/model.pth")
    assert str(info.value) == ("hf://acme/absent/model.pth: not in the local Hugging Face cache and offline mode "
                               "(TRANSFORMERS_OFFLINE) is on; unset TRANSFORMERS_OFFLINE to download it, or give a "
                               "local file")


CLOSED_PORT = "http://127.0.0.1:9"  # nothing listens there: like a machine without network


def _no_network(monkeypatch, cache: Path) -> None:
    """Online mode (no HF_HUB_OFFLINE) with the Hub at a closed port; both are read at huggingface_hub's import."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", CLOSED_PORT)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        CLOSED_PORT + "/{repo_id}/resolve/{revision}/{filename}")


def test_uncached_reference_without_network_fails_fast_in_one_line(tmp_path, monkeypatch, capfd):
    # huggingface_hub retries an unreachable Hub 5 times (~23 s, 11 "Retrying in Ns" lines) for an uncached file.
    _no_network(monkeypatch, tmp_path / "empty")
    with pytest.raises(HubReferenceError) as info:
        resolve_weights_path("hf://acme/absent@v1/model.pth")
    message = str(info.value)
    assert message.startswith("hf://acme/absent@v1/model.pth: not in the local Hugging Face cache and the Hub "
                              "could not be reached (") and "\n" not in message
    assert message.endswith("); download it where the Hub can be reached (into the same cache), or give a local file")
    assert "Retry" not in capfd.readouterr().err  # no retries: they are what took the time


def test_cached_reference_without_network_is_used(tmp_path, monkeypatch, capfd):
    _no_network(monkeypatch, tmp_path / "hub")
    _hub_cache(tmp_path / "hub", "acme/eva-tiny", {"ckpt.pth": b"weights"})
    for ref in ("hf://acme/eva-tiny/ckpt.pth", "hf://acme/eva-tiny@main/ckpt.pth",
                f"hf://acme/eva-tiny@{COMMIT}/ckpt.pth"):
        path = resolve_weights_path(ref)
        assert Path(path).read_bytes() == b"weights" and COMMIT in path, ref
    assert "Retry" not in capfd.readouterr().err


def test_predict_without_network_names_the_reference_in_one_line(tmp_path):
    # The whole command as a user runs it, HF_ENDPOINT in the environment: stderr is the one error line.
    env = {k: v for k, v in child_env(HF_ENDPOINT=CLOSED_PORT, HF_HUB_CACHE=str(tmp_path / "empty")).items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    done = subprocess.run([sys.executable, "-m", "tools.predict", "a.mp4", "--weights", "hf://acme/absent/model.pth",
                           "--work-dir", str(tmp_path / "w")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: hf://acme/absent/model.pth: not in the local Hugging Face cache and the Hub could not be reached ("), \
        done.stderr  # one line: none of the ~23 s of "Retrying in Ns" lines huggingface_hub would log


def _predict_top1(weights: Path, data: Path, work: Path, capsys) -> list[int]:
    out = work / "preds.jsonl"
    assert predict.main([str(data / "val.txt"), "--quiet", "--weights", str(weights), "--out", str(out), "--work-dir",
                         str(work), "--opts", "DATA.NUM_THREADS", "1", "DATA.NUM_WORKERS", "1", "DATA.INDEX_WORKERS",
                         "1", "TEST.NUM_CLIP", "1", "TEST.NUM_CROP", "1"]) == 0, capsys.readouterr().err
    return [json.loads(line)["top_k"][0]["class"] for line in out.read_text().splitlines()]


@pytest.mark.slow
def test_an_exported_file_is_re_exported_to_another_dtype_without_cfg(tiny, tmp_path, capsys):
    """Re-exporting an exported file (to bfloat16, say) asked for --cfg, a config the file makes needless: its
    settings and class names are carried over, the tensors rounded to the new type, and predict agrees."""
    from tools.synthetic import make_synthetic_dataset

    _, _, _, out = tiny
    bf16 = tmp_path / "tiny_bf16.safetensors"
    assert export_safetensors.main(["--weights", str(out), "--out", str(bf16), "--dtype", "bfloat16"]) == 0
    assert capsys.readouterr().out == f"wrote {bf16}: eva-tiny/8, 4 frames of 32 px, 4 classes\n"
    before, after = read_state_dict(str(out)), read_state_dict(str(bf16))
    assert after.keys() == before.keys()
    for key, value in before.items():  # each value the original's, rounded to bfloat16
        assert after[key].dtype == torch.bfloat16 and torch.equal(after[key], value.to(torch.bfloat16)), key
    old, new = read_weights_metadata(str(out)), read_weights_metadata(str(bf16))
    assert new["class_names"] == ["moving down", "growing", "moving up", "shrinking"]
    assert new.pop("source") == out.name  # the file the weights came from
    assert {k: v for k, v in old.items() if k != "source"} == new
    data = tmp_path / "clips"
    make_synthetic_dataset(str(data), train_per_class=0, val_per_class=2, num_frames=12, size=(48, 32), workers=1,
                           progress=False)
    top1 = _predict_top1(out, data, tmp_path / "wa", capsys)
    assert len(top1) == 8 and _predict_top1(bf16, data, tmp_path / "wb", capsys) == top1


def test_an_exported_file_giving_one_name_to_several_classes_is_said_as_a_label_list_is(tiny, tmp_path, capsys):
    """The class names a .safetensors file holds were taken unchecked: two classes of one name, which a label list
    is warned of, were named alike in predict's output without a word. A label list given replaces them."""
    from engine.evaluate import names_given_twice

    _, model, _, _ = tiny
    out = tmp_path / "twice.safetensors"
    meta = read_weights_metadata(str(tiny[3]))
    save_weights_file(model, str(out), arch="eva-tiny/8", mean=meta["mean"], std=meta["std"],
                      class_names=["growing", "moving", "moving", "growing"])
    said = (f"the class names in {out} give one name to several classes: 'growing' (ids 0, 3), 'moving' (ids 1, 2); "
            "the predictions and per-class tables name them alike (their ids tell them apart): give a "
            "DATA.LABEL_LIST whose names tell them apart (it replaces the file's names)")
    capsys.readouterr()
    cfg, names = load_setup("", [], str(out))
    assert names == {0: "growing", 1: "moving", 2: "moving", 3: "growing"}
    assert capsys.readouterr().err.splitlines() == [f"warning: {said}"]
    assert names_given_twice(str(out), names, embedded=True) == said
    labels = tmp_path / "labels.csv"
    labels.write_text("0,a\n1,b\n2,c\n3,d\n")
    assert load_setup("", ["DATA.LABEL_LIST", str(labels)], str(out))[1] == {0: "a", 1: "b", 2: "c", 3: "d"}
    assert capsys.readouterr().err == ""
    load_setup("", [], str(out), warn=False)  # a caller that says its warnings itself
    assert capsys.readouterr().err == ""


def test_an_export_giving_one_name_to_several_classes_says_so_in_one_line(tiny, tmp_path, capsys):
    """export_safetensors wrote class names that give one name to several classes without the warning train.py and
    predict give: re-exported from a file (whose settings it reads without their warnings) or from a label list."""
    _, model, ckpt, tiny_out = tiny
    twice, again = tmp_path / "twice.safetensors", tmp_path / "again.safetensors"
    meta = read_weights_metadata(str(tiny_out))
    save_weights_file(model, str(twice), arch="eva-tiny/8", mean=meta["mean"], std=meta["std"],
                      class_names=["growing", "moving", "moving", "growing"])
    capsys.readouterr()
    assert export_safetensors.main(["--weights", str(twice), "--out", str(again)]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"warning: the class names in {twice} give one name to several classes: 'growing' (ids 0, 3), 'moving' (ids "
        "1, 2); the predictions and per-class tables name them alike (their ids tell them apart): give a "
        "DATA.LABEL_LIST whose names tell them apart (it replaces the file's names)"]
    assert read_weights_metadata(str(again))["class_names"] == ["growing", "moving", "moving", "growing"]
    labels = tmp_path / "twice.csv"
    labels.write_text("0,a\n1,b\n2,a\n3,d\n")
    assert export_safetensors.main(["--cfg", DEMO, "--weights", str(ckpt), "--out", str(again), "--opts", *TINY,
                                    "DATA.LABEL_LIST", str(labels)]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"warning: label list DATA.LABEL_LIST = {labels} gives one name to several classes: 'a' (ids 0, 2); the "
        "predictions and per-class tables name them alike (their ids tell them apart): rename them in the list to "
        "tell them apart by name"]
    assert export_safetensors.main(["--weights", str(tiny_out), "--out", str(again)]) == 0
    assert capsys.readouterr().err == ""  # names of one class each: no line


def test_a_label_list_of_other_classes_than_an_exported_head_says_where_the_count_comes_from(tiny, tmp_path):
    """Without --cfg, a label list of 3 classes for a file whose head has 4 was refused naming "DATA.NUM_CLASSES 4",
    a key no config of the user's set, and not what to do: the file's head is named now, with the two ways out.
    A list at fault on its own is refused in its own words, as before."""
    from configs import ConfigError

    _, _, _, out = tiny
    three, empty = tmp_path / "three.csv", tmp_path / "empty.csv"
    three.write_text("id,name\n0,a\n1,b\n2,c\n")
    empty.write_text("id,name\n0,a\n1,\n2,c\n3,d\n")
    with pytest.raises(ConfigError) as raised:
        load_setup("", ["DATA.LABEL_LIST", str(three)], str(out))
    assert str(raised.value) == (
        f"label list DATA.LABEL_LIST = {three} names 3 classes, but DATA.NUM_CLASSES 4 means ids 0 to 3: no name for "
        f"ids [3]; DATA.NUM_CLASSES is the 4 classes of {out}'s head: give a label list of those classes, or leave "
        "DATA.LABEL_LIST out to use the class names it holds")
    with pytest.raises(ConfigError) as raised:
        load_setup("", ["DATA.LABEL_LIST", str(empty)], str(out))
    assert str(raised.value) == f"label list DATA.LABEL_LIST = {empty}, line 3: class 1 has no name ('1,')"


def test_re_export_takes_a_label_list_and_refuses_a_setting_against_the_file(tiny, tmp_path, capsys):
    """Without --cfg, DATA.LABEL_LIST in --opts names the classes anew; a setting the file contradicts is refused."""
    _, _, _, out = tiny
    other, again = tmp_path / "other.csv", tmp_path / "again.safetensors"
    other.write_text("0,a\n1,b\n2,c\n3,d\n")
    assert export_safetensors.main(["--weights", str(out), "--out", str(again), "--opts", "DATA.LABEL_LIST",
                                    str(other)]) == 0
    assert read_weights_metadata(str(again))["class_names"] == ["a", "b", "c", "d"]
    capsys.readouterr()
    assert export_safetensors.main(["--weights", str(out), "--out", str(again), "--opts", "DATA.NUM_FRAMES", "8"]) == 2
    assert capsys.readouterr().err == (f"error: DATA.NUM_FRAMES = 8 from --opts but 4 in {out}; leave DATA.NUM_FRAMES "
                                       "out of --opts to use the file's value\n")


def test_a_checkpoint_without_settings_needs_cfg_in_one_line(tiny, tmp_path, capsys):
    """A .pth holds no settings: without --cfg the export stops with one line naming --cfg, exit status 2."""
    _, _, ckpt, _ = tiny
    target = tmp_path / "m.safetensors"
    assert export_safetensors.main(["--weights", str(ckpt), "--out", str(target)]) == 2
    assert capsys.readouterr().err == (
        f"error: --cfg is needed with --weights {ckpt}, which holds no settings of its own (only a .safetensors file "
        "written by tools.export_safetensors does): give the config of its model, e.g. python -m "
        f"tools.export_safetensors --out {target} --cfg configs/k400.yaml --weights {ckpt}\n")
    assert not target.exists()


def test_weights_missing_or_without_settings_are_one_sentence_with_a_command_that_works(tiny, tmp_path, capsys):
    """No --weights read "--cfg is needed: no --weights given is not a weights file exported by ..."; --weights ""
    with --cfg went on to look for a file named "". Now one sentence names the flags with the tool's own command;
    a name with a space is quoted in it, so that the command can be pasted."""
    _, _, ckpt, _ = tiny
    spaced = tmp_path / "my weights.pth"
    spaced.write_bytes(ckpt.read_bytes())
    work = ["--work-dir", str(tmp_path / "w")]
    for cfg in ([], ["--cfg", DEMO]):
        assert predict.main(["a.mp4", "--weights", "", *cfg, *work]) == 2
        assert capsys.readouterr().err == (
            "error: no --weights given: give --weights with a checkpoint and --cfg with the config of its model, e.g. "
            "python -m tools.predict a.mp4 --cfg configs/k400.yaml --weights eva_video_k400.pth\n")
    assert predict.main(["a.mp4", "b c.mp4", "--weights", str(spaced), *work]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --cfg is needed with --weights {spaced}, which holds no settings") and err.endswith(
        f"e.g. python -m tools.predict a.mp4 'b c.mp4' --cfg configs/k400.yaml --weights '{spaced}'\n"), err


@pytest.mark.slow
def test_predict_from_exported_file_without_config(tiny, tmp_path, capsys):
    from tools.synthetic import make_synthetic_dataset

    cfg, model, ckpt, out = tiny
    data = tmp_path / "clips"
    make_synthetic_dataset(str(data), train_per_class=0, val_per_class=1, num_frames=12, size=(48, 32), workers=1,
                           progress=False)
    common = [str(data / "val.txt"), "--quiet", "--top-k", "4", "--opts", "DATA.NUM_THREADS", "1",
              "DATA.NUM_WORKERS", "1", "DATA.INDEX_WORKERS", "1", "TEST.NUM_CLIP", "2", "TEST.NUM_CROP", "3"]
    assert predict.main(common[:4] + ["--weights", str(out), "--out", str(tmp_path / "a.jsonl"), "--work-dir",
                                      str(tmp_path / "wa")] + common[4:]) == 0, capsys.readouterr().err
    with_cfg = ["--weights", str(ckpt), "--cfg", DEMO, "--out", str(tmp_path / "b.jsonl"), "--work-dir",
                str(tmp_path / "wb")]
    assert predict.main(common[:4] + with_cfg + common[4:] + TINY + ["DATA.LABEL_LIST", ""]) == 0
    a = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert len(a) == 4 and all(r["status"] == "ok" for r in a)
    assert {t["name"] for r in a for t in r["top_k"]} == {"moving down", "growing", "moving up", "shrinking"}
    for ra, rb in zip(a, b):  # the same scores from the exported file as from the checkpoint and its config
        assert [t["class"] for t in ra["top_k"]] == [t["class"] for t in rb["top_k"]]
        assert [t["prob"] for t in ra["top_k"]] == pytest.approx([t["prob"] for t in rb["top_k"]], abs=1e-6)


def test_predict_input_errors_are_one_line(tiny, tmp_path, capsys, offline_cache):
    cfg, model, ckpt, out = tiny
    cases = [(["a.mp4", "--weights", str(tmp_path / "gone.safetensors")], "weights file not found: "),
             (["a.mp4", "--weights", str(ckpt)], "--cfg is needed"),
             (["a.mp4", "--weights", "hf://acme/none/x.pth"], "hf://acme/none/x.pth: "),
             # a run's folder for its checkpoint: "not found" alone named a folder that is there
             (["a.mp4", "--weights", str(tmp_path)], f"weights file not found: {tmp_path} (a folder, not a file)")]
    for args, needle in cases:
        assert predict.main(args + ["--work-dir", str(tmp_path / "w")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1, err
    assert export_safetensors.main(["--cfg", DEMO, "--weights", str(tmp_path), "--out", str(tmp_path / "x.safetensors"),
                                    "--opts", *TINY, "DATA.LABEL_LIST", ""]) == 2
    assert capsys.readouterr().err == f"error: checkpoint file not found: {tmp_path} (a folder, not a file)\n"


def test_predictor_reads_a_leading_tilde_as_the_home_folder(tiny, tmp_path, monkeypatch):
    """Predictor("~/tiny.safetensors") said "weights file not found", and work_dir "~/work" was made as a folder
    named ~ in the working folder, where the command's --weights and --work-dir (and cfg) read ~ as home."""
    _, _, _, out = tiny
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    with predict.Predictor(f"~/{out.name}", work_dir="~/work", device="cpu") as predictor:
        assert predictor.work_dir == str(tmp_path / "work") and (tmp_path / "work").is_dir()
        assert predictor.cfg.DATA.NUM_FRAMES == 4  # the file's own settings: it was read
    assert not list((tmp_path / "cwd").iterdir())


def test_a_miswritten_hub_reference_says_how_one_is_written(tiny, tmp_path, monkeypatch, capsys):
    """HF://..., hf:/... or hf:... was looked for as a local file: "weights file not found", with no word of the Hub.
    A local file under such a name (a folder "HF:") is still read."""
    _, _, ckpt, out = tiny
    how = "not a file, nor a Hub reference, which is written in lower case with two slashes: hf://owner/name"
    # "hf:" without slashes was read as a local path ("weights file not found"); each line ends in the right spelling
    for ref in ("hf:/acme/repo/model.safetensors", "hf:acme/repo/model.safetensors", "hf//acme/repo/model.safetensors"):
        assert predict.main(["a.mp4", "--weights", ref, "--work-dir", str(tmp_path / "w")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {ref}: {how}") and len(err.splitlines()) == 1, err
        assert err.rstrip().endswith("(here hf://acme/repo/model.safetensors)"), err
    with pytest.raises(HubReferenceError) as info:  # a load given the name directly (MODEL.PRETRAINED) says so too
        read_state_dict("hf:acme/r/w.pth")
    assert str(info.value) == f"hf:acme/r/w.pth: {how}[@revision]/path/to/file (here hf://acme/r/w.pth)"
    ref = "hf//acme/repo/model.pth"
    assert export_safetensors.main(["--cfg", DEMO, "--weights", ref, "--out", str(tmp_path / "x.safetensors"),
                                    "--opts", *TINY, "DATA.LABEL_LIST", ""]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {ref}: {how}") and len(err.splitlines()) == 1, err
    (tmp_path / "HF:").mkdir()
    (tmp_path / "HF:" / "m.safetensors").write_bytes(Path(out).read_bytes())
    monkeypatch.chdir(tmp_path)
    assert resolve_weights_path("HF:/m.safetensors") == "HF:/m.safetensors"


def test_a_hub_reference_with_spaces_around_it_or_an_upper_case_scheme_is_read_as_one(tiny, offline_cache):
    """" hf://owner/name/file" (spaces from a copied line) and "HF://..." were looked for as local files, or refused
    as miswritten: they load as the reference they stand for."""
    from models.hub import cached_weights_path, miswritten_hub_reference

    cfg, model, ckpt, _ = tiny
    _hub_cache(offline_cache, "acme/eva-tiny", {"ckpt.pth": ckpt.read_bytes()})
    local = resolve_weights_path("hf://acme/eva-tiny/ckpt.pth")
    x = torch.randn(2, 4, 3, 32, 32)
    for ref in (" hf://acme/eva-tiny/ckpt.pth", "hf://acme/eva-tiny/ckpt.pth  ", "\tHF://acme/eva-tiny/ckpt.pth\n",
                "HF://acme/eva-tiny/ckpt.pth", "Hf://acme/eva-tiny/ckpt.pth"):
        assert resolve_weights_path(ref) == local and cached_weights_path(ref) == local, ref
        fresh = build_model(cfg).eval()
        assert load_pretrained(fresh, ref) == ([], []), ref
        with torch.no_grad():
            torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
        # a caller that compares names as written is told the reference's spelling
        assert miswritten_hub_reference(ref).endswith("(here hf://acme/eva-tiny/ckpt.pth)"), ref
    with pytest.raises(HubReferenceError) as info:  # not cached: the error names the reference as it is spelled
        resolve_weights_path(" HF://acme/eva-tiny/absent.pth")
    assert str(info.value).startswith("hf://acme/eva-tiny/absent.pth: not in the local Hugging Face cache")
    # the other slips are refused, in one line that shows the reference's spelling (spaces around them shown)
    how = "not a file, nor a Hub reference, which is written in lower case with two slashes"
    expected = {"hf//acme/r/w.pth": f"hf//acme/r/w.pth: {how}",
                "hf:/acme/r/w.pth": f"hf:/acme/r/w.pth: {how}",
                "hf:acme/r/w.pth": f"hf:acme/r/w.pth: {how}",
                " HF:/acme/r/w.pth ": f"' HF:/acme/r/w.pth ': {how}, without spaces around it"}
    for ref, start in expected.items():
        with pytest.raises(HubReferenceError) as info:
            read_state_dict(ref)
        assert str(info.value) == f"{start}: hf://owner/name[@revision]/path/to/file (here hf://acme/r/w.pth)"
    assert resolve_weights_path("hf/w.pth") == "hf/w.pth"  # a relative path under a folder named hf: no reference


def test_a_hub_files_web_address_says_how_its_reference_is_written(tiny, tmp_path, monkeypatch, capsys):
    """The address copied from the Hub's page was looked for as a local file ("not found", no word of the Hub); the
    page's blob/main/ written into a reference was a file of that path, "no file 'blob/main/m.pth'"."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    _, _, ckpt, _ = tiny
    how = ": a web address, which is not downloaded; a file on the Hugging Face Hub is given as hf://owner/name" \
          "[@revision]/path/to/file (here "
    for address, meant in (("https://huggingface.co/acme/eva/blob/main/w/m.pth", "hf://acme/eva@main/w/m.pth"),
                           ("https://huggingface.co/acme/eva/resolve/v1/m.pth?download=true", "hf://acme/eva@v1/m.pth"),
                           ("https://hf.co/acme/eva", "hf://acme/eva/path/to/file")):
        with pytest.raises(HubReferenceError) as info:
            read_state_dict(address)
        assert str(info.value) == f"{address}{how}{meant})"
    address = "https://huggingface.co/acme/eva/blob/main/m.pth"
    assert export_safetensors.main(["--cfg", DEMO, "--weights", address, "--out", str(tmp_path / "x.safetensors"),
                                    "--opts", *TINY, "DATA.LABEL_LIST", ""]) == 2
    assert capsys.readouterr().err == f"error: {address}{how}hf://acme/eva@main/m.pth)\n"
    assert resolve_weights_path("https://example.com/m.pth") == "https://example.com/m.pth"  # no Hub address

    def not_in_the_repository(*args, **kwargs):
        raise EntryNotFoundError("404")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", not_in_the_repository)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("models.hub._offline", lambda: "")
    monkeypatch.setattr("models.hub._check_reachable", lambda path, ref: None)
    with pytest.raises(HubReferenceError) as info:
        resolve_weights_path("hf://acme/eva/blob/main/w/m.pth")
    assert str(info.value) == ("hf://acme/eva/blob/main/w/m.pth: no file 'blob/main/w/m.pth' in acme/eva; 'blob/main/' "
                               "is the web address's revision, which a reference gives after '@': "
                               "hf://acme/eva@main/w/m.pth")
    with pytest.raises(HubReferenceError) as info:
        resolve_weights_path("hf://acme/eva/w/m.pth")
    assert str(info.value) == "hf://acme/eva/w/m.pth: no file 'w/m.pth' in acme/eva"


def test_config_mismatch_names_where_the_value_came_from(tiny):
    from configs import ConfigError

    _, _, _, out = tiny
    with pytest.raises(ConfigError) as info:  # no --cfg: the value can only come from --opts
        load_setup("", ["DATA.NUM_FRAMES", "8"], str(out))
    assert str(info.value) == (f"DATA.NUM_FRAMES = 8 from --opts but 4 in {out}; leave DATA.NUM_FRAMES out of --opts "
                               "to use the file's value")
    no_frames = TINY[:2] + TINY[4:]
    with pytest.raises(ConfigError) as info:  # demo.yaml's 8 frames
        load_setup(DEMO, no_frames, str(out))
    assert str(info.value) == (f"DATA.NUM_FRAMES = 8 in --cfg {DEMO} but 4 in {out}; drop --cfg to use the file's "
                               "own settings")
    with pytest.raises(ConfigError, match="DATA.NUM_FRAMES = 16 from --opts"):  # --opts overrides the file
        load_setup(DEMO, no_frames + ["DATA.NUM_FRAMES", "16"], str(out))


def test_pooling_and_tubelet_mismatch_name_the_key_not_missing_tensors(tiny, tmp_path):
    """An exported file records use_mean_pooling and the tubelet, but a config contradicting them was not compared:
    the load then failed with 'missing norm.weight, norm.bias' (or a kernel shape). Now they are named like the
    other keys, with both values and where the config's came from."""
    from configs import ConfigError

    _, _, _, out = tiny
    with pytest.raises(ConfigError) as info:
        load_setup("", ["MODEL.USE_MEAN_POOLING", "False"], str(out))
    assert str(info.value) == (f"MODEL.USE_MEAN_POOLING = False from --opts but True in {out}; leave "
                               "MODEL.USE_MEAN_POOLING out of --opts to use the file's value")
    for cfg_file in ("", DEMO):  # the original's key: named as typed, not blamed on --cfg
        with pytest.raises(ConfigError) as info:
            load_setup(cfg_file, [*(TINY if cfg_file else []), "MYCLIP.USE_MEAN_POOLING", "False"], str(out))
        assert str(info.value) == (f"MYCLIP.USE_MEAN_POOLING = False from --opts but True in {out}; leave "
                                   "MYCLIP.USE_MEAN_POOLING out of --opts to use the file's value")
    with pytest.raises(ConfigError) as info:
        load_setup("", ["DATA.TUBELET_SIZE", "4"], str(out))
    assert str(info.value) == (f"DATA.TUBELET_SIZE = 4 from --opts but 2 in {out}; leave DATA.TUBELET_SIZE out of "
                               "--opts to use the file's value")
    cfg_file = tmp_path / "cls_token.yaml"
    cfg_file.write_text(f"BASE: ['{DEMO}']\nMODEL:\n  USE_MEAN_POOLING: False\n")
    with pytest.raises(ConfigError) as info:
        load_setup(str(cfg_file), TINY, str(out))
    assert str(info.value) == (f"MODEL.USE_MEAN_POOLING = False in --cfg {cfg_file} but True in {out}; drop --cfg to "
                               "use the file's own settings")


def test_export_refuses_an_unwritable_out_before_loading(tiny, tmp_path, capsys):
    _, _, ckpt, _ = tiny
    a_file = tmp_path / "a file"
    a_file.write_text("")
    common = ["--cfg", DEMO, "--weights", str(ckpt), "--opts", *TINY, "DATA.LABEL_LIST", ""]
    assert export_safetensors.main(["--out", str(a_file / "m.safetensors"), *common]) == 2  # was a traceback
    assert capsys.readouterr().err == f"error: --out {a_file / 'm.safetensors'}: {a_file} is a file, so no folder " \
                                      "can be made there\n"
    assert export_safetensors.main(["--out", str(tmp_path), *common]) == 2
    assert capsys.readouterr().err == f"error: --out {tmp_path} is a folder; give a file name, e.g. " \
                                      f"{tmp_path / 'model.safetensors'}\n"
    new = str(tmp_path / "exports") + "/"  # a folder not made yet: was written as a file named "exports"
    assert export_safetensors.main(["--out", new, *common]) == 2
    assert capsys.readouterr().err == f"error: --out {new} names a folder (it ends with /); give a file name, " \
                                      f"e.g. {tmp_path / 'exports' / 'model.safetensors'}\n"
    assert not (tmp_path / "exports").exists()


def _as_a_user_file_modes_bind() -> list[str] | None:
    """The command prefix under which a child process is refused what file modes refuse: none for a user other than
    root; for root, setpriv without the capabilities that override file modes; None when that cannot be had."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    try:
        works = subprocess.run([*prefix, "true"], capture_output=True).returncode == 0
    except OSError:  # no setpriv
        return None
    return prefix if works else None


def run_bound_by_file_modes(prefix: list[str], command: list[str], read_only: Path) -> subprocess.CompletedProcess:
    """``command`` run under ``prefix`` (:func:`_as_a_user_file_modes_bind`) from the project's root while the
    folder ``read_only`` is 0555 (0755 again after)."""
    read_only.chmod(0o555)
    try:
        return subprocess.run([*prefix, *command], capture_output=True, text=True, cwd=ROOT, env=child_env())
    finally:
        read_only.chmod(0o755)


def test_export_over_a_file_in_a_folder_it_cannot_write_in_is_refused_before_loading(tiny, tmp_path):
    """The export writes the new file beside --out and renames it over it: a file the user can write, in a folder
    they cannot, passed the checks and failed once the weights had loaded, 'Permission denied' of that file."""
    prefix = _as_a_user_file_modes_bind()
    if prefix is None:
        pytest.skip("runs as root, and setpriv cannot drop the capabilities that override file modes")
    _, _, ckpt, _ = tiny
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    out = shelf / "m.safetensors"
    out.write_bytes(b"an earlier export")
    garbage = tmp_path / "garbage.pth"  # weights that fail to load: the refusal must come before they are read
    garbage.write_bytes(b"no checkpoint")
    done = run_bound_by_file_modes(prefix, [sys.executable, "-m", "tools.export_safetensors", "--out", str(out),
                                            "--cfg", DEMO, "--weights", str(garbage), "--opts", *TINY,
                                            "DATA.LABEL_LIST", ""], shelf)
    assert done.returncode == 2, done
    assert done.stderr == (f"error: --out {out}: cannot write in its folder {shelf} (Permission denied), where the "
                           "new file is written before it replaces m.safetensors; give --out a file in a folder you "
                           "can write in\n")
    assert out.read_bytes() == b"an earlier export" and os.listdir(shelf) == ["m.safetensors"]


def test_export_refuses_an_out_without_the_safetensors_extension_before_loading(tiny, tmp_path, monkeypatch,
                                                                               capsys):
    """The writer refused a name without .safetensors only once the weights were loaded (minutes for a large
    checkpoint), and its message named the file but not --out."""
    _, _, ckpt, _ = tiny
    monkeypatch.setattr(export_safetensors, "load_model", lambda *a, **k: pytest.fail("the weights were loaded"))
    out = tmp_path / "model.pth"
    assert export_safetensors.main(["--out", str(out), "--cfg", DEMO, "--weights", str(ckpt), "--opts", *TINY,
                                    "DATA.LABEL_LIST", ""]) == 2
    assert capsys.readouterr().err == f"error: --out {out}: the file name must end in .safetensors, e.g. " \
                                      f"{tmp_path / 'model.safetensors'}\n"
    assert not out.exists()


def _export_over_an_earlier_file(tiny, tmp_path, monkeypatch, save_file) -> tuple[int, object]:
    """export_safetensors.main, with ``save_file`` as safetensors' writer, to an --out holding an earlier export;
    (exit status, --out)."""
    import safetensors.torch

    _, _, ckpt, _ = tiny
    out = tmp_path / "out" / "m.safetensors"
    out.parent.mkdir()
    out.write_bytes(b"an earlier export")
    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    rc = export_safetensors.main(["--out", str(out), "--cfg", DEMO, "--weights", str(ckpt), "--opts", *TINY,
                                  "DATA.LABEL_LIST", ""])
    return rc, out


def test_an_export_that_fills_the_disk_is_one_line_and_keeps_the_file_it_would_replace(tiny, tmp_path, monkeypatch,
                                                                                          capsys):
    """safetensors reports a failed write in its own error type, which the command did not catch: a traceback."""
    from safetensors import SafetensorError

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"part of the file")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    rc, out = _export_over_an_earlier_file(tiny, tmp_path, monkeypatch, full_disk)
    assert rc == 2
    assert capsys.readouterr().err == f"error: cannot write --out {out}: No space left on device\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.safetensors"]  # no temporary file left
    assert out.read_bytes() == b"an earlier export"


def test_a_stop_signal_during_an_export_is_one_line_and_keeps_the_file_it_would_replace(tiny, tmp_path, monkeypatch,
                                                                                         capsys):
    """A scheduler's SIGTERM while the file was written killed the command with status 143 and no word, and left the
    temporary file beside --out. Now: one `stopped:` line, exit code 4, the earlier file as it was, no temporary file.
    The signal comes half-way through the write; this test's own handler stands for the default action (killing
    the test run) where the command has none."""
    import signal

    def stopped_mid_write(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"part of the file")
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(1000))  # the handler runs here
        pytest.fail("the stop signal did not stop the export")

    def unhandled(signum, frame):
        raise AssertionError("SIGTERM during the export had its default action: the process is killed, status 143")

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        rc, out = _export_over_an_earlier_file(tiny, tmp_path, monkeypatch, stopped_mid_write)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert rc == 4
    assert capsys.readouterr().err == (f"stopped: SIGTERM received: {out} not written; an earlier file there is left "
                                       "as it was (exit code 4)\n")
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.safetensors"]  # no temporary file left
    assert out.read_bytes() == b"an earlier export"


def test_a_stop_signal_once_the_new_file_is_in_place_lets_the_export_end_as_written(tiny, tmp_path, monkeypatch,
                                                                                    capsys):
    """A SIGTERM between the rename of the new file over --out and the end of the export said "--out not written;
    an earlier file there is left as it was" with exit code 4, while the whole new file was there. The signal comes
    right after the rename; this test's own handler stands for the default action where the command has none."""
    import signal

    replace = os.replace

    def replace_then_stop(src, dst, **kwargs):
        replace(src, dst, **kwargs)
        if os.path.basename(dst) == "m.safetensors":
            signal.raise_signal(signal.SIGTERM)
            sum(range(1000))  # the handler runs here

    monkeypatch.setattr(os, "replace", replace_then_stop)
    out = _export_ending_as_written(tiny, tmp_path, monkeypatch, capsys, "after the rename")
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.safetensors"]  # no temporary file left


def test_a_stop_signal_as_the_export_says_it_wrote_the_file_lets_it_end_as_written(tiny, tmp_path, monkeypatch,
                                                                                   capsys):
    """The stop handler was removed before the "wrote" line: a SIGTERM then had its default action (status 143,
    no line) although the file was whole. This test's own handler stands for that default action."""
    import builtins
    import signal

    def print_with_a_stop(*args, **kwargs):
        if args and str(args[0]).startswith("wrote "):
            signal.raise_signal(signal.SIGTERM)
        builtins.print(*args, **kwargs)

    monkeypatch.setattr(export_safetensors, "print", print_with_a_stop, raising=False)
    _export_ending_as_written(tiny, tmp_path, monkeypatch, capsys, "at the 'wrote' line")


def _export_ending_as_written(tiny, tmp_path, monkeypatch, capsys, when: str):
    """Export over an earlier file with a SIGTERM handler standing for the signal's default action (the process
    killed, status 143), and check the export ended as written, with the new file whole; returns its path."""
    import signal

    import safetensors.torch

    def unhandled(signum, frame):
        raise AssertionError(f"SIGTERM {when} had its default action: the process is killed, status 143")

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        rc, out = _export_over_an_earlier_file(tiny, tmp_path, monkeypatch, safetensors.torch.save_file)
    finally:
        signal.signal(signal.SIGTERM, previous)
    captured = capsys.readouterr()
    assert rc == 0 and captured.err == "" and captured.out.startswith(f"wrote {out}: ")
    assert read_weights_metadata(str(out))["num_frames"] == 4  # the new export, whole
    return out


def test_a_ctrl_c_once_the_new_file_is_in_place_says_it_was_written(tiny, tmp_path, monkeypatch):
    """A Ctrl-C between the rename of the new file over --out and the end of the export printed "interrupted:
    exporting: --out not written; an earlier file there is left as it was" while the whole new file was there."""
    import safetensors.torch

    from evautil.interrupt import interrupted_line

    replace = os.replace

    def replace_then_interrupt(src, dst, **kwargs):
        replace(src, dst, **kwargs)
        if os.path.basename(dst) == "m.safetensors":
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _export_over_an_earlier_file(tiny, tmp_path, monkeypatch, safetensors.torch.save_file)
    out = tmp_path / "out" / "m.safetensors"
    assert interrupted_line() == f"interrupted: exporting: {out} was written whole before the interrupt"
    assert read_weights_metadata(str(out))["num_frames"] == 4  # the new export, whole


def test_a_ctrl_c_before_the_rename_says_the_earlier_file_is_kept(tiny, tmp_path, monkeypatch):
    """The other side of the test above: interrupted while the file is written, --out keeps its earlier bytes and
    the line says so."""
    from evautil.interrupt import interrupted_line

    def interrupted_write(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"part of the file")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _export_over_an_earlier_file(tiny, tmp_path, monkeypatch, interrupted_write)
    out = tmp_path / "out" / "m.safetensors"
    assert interrupted_line() == (f"interrupted: exporting: {out} not written; an earlier file there is left as it "
                                  f"was")
    assert out.read_bytes() == b"an earlier export"


def test_export_to_a_link_writes_the_file_it_names_and_keeps_the_link(tiny, tmp_path):
    """--out naming a link: the link was replaced with a regular file and the file it named kept its old bytes."""
    _, _, ckpt, exported = tiny
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "released.safetensors"
    real.write_bytes(b"an earlier export")
    link = tmp_path / "latest.safetensors"
    link.symlink_to(os.path.relpath(real, link.parent))
    assert export_safetensors.main(["--cfg", DEMO, "--weights", str(ckpt), "--out", str(link), "--opts", *TINY,
                                    "DATA.LABEL_LIST", ""]) == 0
    assert link.is_symlink() and os.readlink(link) == os.path.join("store", "released.safetensors")
    assert read_weights_metadata(str(real))["num_frames"] == 4
    assert sorted(p.name for p in real.parent.iterdir()) == ["released.safetensors"]  # no temporary file left


def test_resampled_positional_embedding_is_a_warning(tiny, tmp_path, capsys):
    cfg, model, _, _ = tiny
    ckpt = tmp_path / "with_config.pth"  # as train.py saves: the config says the grid (2x4x4 tokens)
    torch.save({"model": model.state_dict(), "config": cfg.dump()}, ckpt)
    common = ["--cfg", DEMO, "--weights", str(ckpt), "--opts", *TINY, "DATA.LABEL_LIST", ""]
    assert export_safetensors.main(["--out", str(tmp_path / "same.safetensors"), *common]) == 0
    assert "warning" not in capsys.readouterr().err
    f8 = tmp_path / "f8.safetensors"
    assert export_safetensors.main(["--out", str(f8), *common, "DATA.NUM_FRAMES", "8"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {ckpt}: pos_embed: resampled (T', S, S) in tokens 2x4x4 -> 4x4x4 (trilinear" in err
    assert (f"warning: {ckpt} was trained at another geometry than DATA.NUM_FRAMES 8, DATA.INPUT_SIZE 32: its "
            "positional embedding was resampled to fit") in err
    assert read_weights_metadata(str(f8))["num_frames"] == 8  # still resampled, not refused
    cfg8 = load_config(DEMO, TINY + ["DATA.LABEL_LIST", "", "DATA.NUM_FRAMES", "8"])
    load_model(cfg8, str(ckpt), torch.device("cpu"), warn=False)  # e.g. a rank other than the first
    assert capsys.readouterr().err == ""


def test_a_raw_state_dicts_geometry_can_be_given_as_the_error_says(tiny, tmp_path, capsys):
    """A state dict without a saved config whose token count fits several grids: the error says to set
    MODEL.PRETRAINED_FRAMES / PRETRAINED_INPUT_SIZE, and predict, extract_features and export then use them."""
    from models.pos_embed import resample_video_table

    cfg, model, _, _ = tiny  # 4 frames, tubelet 2, 32 px, 8 px patches: 2x4x4 = 32 tokens, also 8x2x2 or 32x1x1
    raw = tmp_path / "raw.pth"
    torch.save(model.state_dict(), raw)
    big = TINY + ["DATA.LABEL_LIST", "", "DATA.INPUT_SIZE", "48"]
    with pytest.raises(ValueError, match="Set MODEL.PRETRAINED_FRAMES / MODEL.PRETRAINED_INPUT_SIZE"):
        load_model(load_config(DEMO, big), str(raw), torch.device("cpu"), warn=False)
    given = load_config(DEMO, big + ["MODEL.PRETRAINED_FRAMES", "4", "MODEL.PRETRAINED_INPUT_SIZE", "32"])
    loaded = load_model(given, str(raw), torch.device("cpu"), warn=False)
    torch.testing.assert_close(loaded.pos_embed, resample_video_table(model.pos_embed.detach(), (2, 4), (2, 6)))
    # a recipe's geometry for another checkpoint (k400.yaml names K722's 8 frames) does not stop one with a config
    ckpt = tmp_path / "with_config.pth"
    torch.save({"model": model.state_dict(), "config": cfg.dump()}, ckpt)
    other = load_config(DEMO, TINY + ["DATA.LABEL_LIST", "", "MODEL.PRETRAINED_FRAMES", "16"])
    assert torch.equal(load_model(other, str(ckpt), torch.device("cpu"), warn=False).pos_embed, model.pos_embed)
    # nor one without a config at the model's own geometry (k400.yaml, whose 8 frames of 224 px are K722's, with a
    # released 16-frame K400 checkpoint), in silence
    recipe = load_config(DEMO, TINY + ["DATA.LABEL_LIST", "", "MODEL.PRETRAINED_FRAMES", "8",
                                       "MODEL.PRETRAINED_INPUT_SIZE", "64"])
    capsys.readouterr()
    assert torch.equal(load_model(recipe, str(raw), torch.device("cpu")).pos_embed, model.pos_embed)
    assert capsys.readouterr().err == ""


def test_an_image_checkpoint_is_named_so_by_predict_and_extract_features(tiny, tmp_path, capsys):
    """They asked for MODEL.PRETRAINED_FRAMES / _INPUT_SIZE and named its grid "1 frames of 4x4": an image model's
    table has no frames, and these tools take a video model's checkpoint."""
    from tools import extract_features

    _, model, _, _ = tiny
    image = {k: v for k, v in model.state_dict().items()}
    dim = image["pos_embed"].shape[-1]
    image["pos_embed"] = torch.randn(1, 1 + 16, dim)  # 4x4 patches of 8 px: 32 px, no frames
    image["patch_embed.proj.weight"] = torch.randn(dim, 3, 8, 8)
    weights = tmp_path / "image.pth"
    torch.save(image, weights)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not read: the weights are refused first")
    common = [str(video), "--cfg", DEMO, "--weights", str(weights)]
    opts = ["--opts", *TINY, "DATA.LABEL_LIST", "", "DATA.INPUT_SIZE", "48"]
    capsys.readouterr()
    assert predict.main(common + ["--work-dir", str(tmp_path / "w")] + opts) == 2
    assert extract_features.main(common + ["--out", str(tmp_path / "f")] + opts) == 2
    err = capsys.readouterr().err.splitlines()
    said = (f"error: {weights}: pos_embed: the checkpoint is an image model's (a 2-D patch kernel and a table of 4x4 "
            "patches, 32 px, without frames), not a video model's: it starts a video model for training as "
            "MODEL.PRETRAINED with MODEL.PRETRAINED_MODE eva; to predict or extract features, give a video model's "
            "checkpoint (one trained from it)")
    assert err == [said, said]


def test_weights_that_do_not_fit_are_refused_in_one_line(tiny, tmp_path):
    """A head of another class count is an error of its own; the load's 'missing keys' warning only preceded it.

    Run as a command: pytest's log capture would hide the warning, which logging's last-resort handler prints."""
    _, _, ckpt, _ = tiny
    done = subprocess.run([sys.executable, "-m", "tools.export_safetensors", "--out", str(tmp_path / "5.safetensors"),
                           "--cfg", DEMO, "--weights", str(ckpt), "--opts", *TINY, "DATA.LABEL_LIST", "",
                           "DATA.NUM_CLASSES", "5"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"error: {ckpt}: its head has 4 classes and DATA.NUM_CLASSES is 5: set DATA.NUM_CLASSES 4 "
                           "to use it as trained\n")


def test_a_missing_label_list_falls_back_to_the_files_names(tiny, tmp_path, capsys):
    """predict's setup: a DATA.LABEL_LIST that does not exist gives the exported file's names, else none, and one
    warning line naming it; an existing list still wins over the file's names."""
    _, _, ckpt, out = tiny
    absent = tmp_path / "gone.csv"
    _, names = load_setup("", ["DATA.LABEL_LIST", str(absent)], str(out))
    assert names == {0: "moving down", 1: "growing", 2: "moving up", 3: "shrinking"}
    assert capsys.readouterr().err == (f"warning: label list DATA.LABEL_LIST = {absent} does not exist; class names "
                                       f"from {out}\n")
    _, names = load_setup(DEMO, TINY + ["DATA.LABEL_LIST", str(absent)], str(ckpt))  # a .pth has no names
    assert names == {}
    assert capsys.readouterr().err == (f"warning: label list DATA.LABEL_LIST = {absent} does not exist; classes are "
                                       "given by their index, without names\n")
    _, names = load_setup("", ["DATA.LABEL_LIST", str(tmp_path)], str(out))  # a folder is not called missing
    assert names[3] == "shrinking"
    assert capsys.readouterr().err == (f"warning: label list DATA.LABEL_LIST = {tmp_path} is a folder, not a file; "
                                       f"class names from {out}\n")
    _, names = load_setup("", ["DATA.LABEL_LIST", str(absent)], str(out), warn=False)  # e.g. a rank other than 0
    assert names[3] == "shrinking" and capsys.readouterr().err == ""
    other = tmp_path / "other.csv"
    other.write_text("0,a\n1,b\n2,c\n3,d\n")
    assert load_setup("", ["DATA.LABEL_LIST", str(other)], str(out))[1] == {0: "a", 1: "b", 2: "c", 3: "d"}


def test_export_refuses_a_missing_label_list_before_loading(tiny, tmp_path, monkeypatch, capsys):
    """The names go into the file for every later use: a label list that is set but absent stays an error, now
    found before the model is loaded and naming how to export without names."""
    _, _, ckpt, _ = tiny
    absent = tmp_path / "gone.csv"
    target = tmp_path / "m.safetensors"
    monkeypatch.setattr(export_safetensors, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert export_safetensors.main(["--out", str(target), "--cfg", DEMO, "--weights", str(ckpt), "--opts", *TINY,
                                    "DATA.LABEL_LIST", str(absent)]) == 2
    assert capsys.readouterr().err == (f"error: label list DATA.LABEL_LIST = {absent} does not exist; the export "
                                       "records the class names: give the list's path, or --opts DATA.LABEL_LIST "
                                       "\"\" to export without names\n")
    assert export_safetensors.main(["--out", str(target), "--cfg", DEMO, "--weights", str(ckpt), "--opts", *TINY,
                                    "DATA.LABEL_LIST", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: label list DATA.LABEL_LIST = {tmp_path} is a folder, not a "
                                              "file; the export records")
    assert not target.exists()


def test_weights_of_a_deeper_or_shallower_model_are_refused_naming_the_layers(tiny, tmp_path):
    """A checkpoint of a deeper model (MODEL.ARCH one preset too small) loaded with its extra blocks ignored:
    predict, extract_features and export scored and exported a truncated model, said only at logger-info level."""
    cfg, model, _, _ = tiny
    depth = len(model.blocks)
    deeper = dict(model.state_dict())
    deeper.update({k.replace("blocks.0.", f"blocks.{depth}.", 1): v.clone() for k, v in model.state_dict().items()
                   if k.startswith("blocks.0.")})
    torch.save(deeper, tmp_path / "deeper.pth")
    with pytest.raises(CheckpointError, match=rf"deeper\.pth does not fit MODEL.ARCH eva-tiny/8 with 4 classes: "
                                              rf"the model has no blocks\.{depth}\.norm1\.weight, .* and \d+ more"):
        load_model(cfg, str(tmp_path / "deeper.pth"), torch.device("cpu"), warn=False)
    shallower = {k: v for k, v in model.state_dict().items() if not k.startswith(f"blocks.{depth - 1}.")}
    torch.save(shallower, tmp_path / "shallower.pth")
    with pytest.raises(CheckpointError, match=rf"shallower\.pth does not fit .*: missing blocks\.{depth - 1}\."):
        load_model(cfg, str(tmp_path / "shallower.pth"), torch.device("cpu"), warn=False)
    # the parts an EVA checkpoint carries for what a fine-tuned model drops are no reason to refuse it
    extras = dict(model.state_dict(), mask_token=torch.zeros(1, 1, 128), **{"lm_head.weight": torch.zeros(7, 128)})
    torch.save(extras, tmp_path / "extras.pth")
    loaded = load_model(cfg, str(tmp_path / "extras.pth"), torch.device("cpu"), warn=False)
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_weights_pooled_the_other_way_are_refused_naming_use_mean_pooling(tiny, tmp_path):
    """A .pth of a model built with the other MODEL.USE_MEAN_POOLING (its final norm is norm.* without mean pooling,
    fc_norm.* with it) was refused as 'missing norm.weight, norm.bias', which did not say which key differs."""
    cfg, model, _, _ = tiny
    for pooled in (False, True):
        other = cfg.clone()
        other.defrost()
        other.MODEL.USE_MEAN_POOLING = pooled
        other.freeze()
        torch.save(build_model(other).state_dict(), tmp_path / "other.pth")
        own = cfg.clone()
        own.defrost()
        own.MODEL.USE_MEAN_POOLING = not pooled
        own.freeze()
        with pytest.raises(CheckpointError) as error:
            load_model(own, str(tmp_path / "other.pth"), torch.device("cpu"), warn=False)
        norm, their_norm = ("norm", "fc_norm") if pooled else ("fc_norm", "norm")
        assert str(error.value) == (
            f"{tmp_path / 'other.pth'} does not fit MODEL.ARCH eva-tiny/8 with 4 classes: missing {norm}.weight, "
            f"{norm}.bias (a model's {'with' if pooled else 'without'} mean pooling, whose final norm is "
            f"{their_norm}.*? set MODEL.USE_MEAN_POOLING {pooled})")
        assert load_model(other, str(tmp_path / "other.pth"), torch.device("cpu"), warn=False) is not None


def test_a_checkpoint_with_ema_weights_is_exported_as_its_ema_and_says_so(tiny, tmp_path, capsys):
    # the tools set up no logging: the log line read_checkpoint writes was never seen, and a user could not tell
    # which of the file's two sets of weights was used
    cfg, model, _, _ = tiny
    raw = model.state_dict()
    ema = {k: v + 0.5 if v.is_floating_point() else v for k, v in raw.items()}
    ckpt = tmp_path / "ema.pth"
    torch.save({"model": raw, "ema": ema, "epoch": 3}, ckpt)
    out = tmp_path / "ema.safetensors"
    assert export_safetensors.main(["--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), "--opts", *TINY,
                                    "DATA.LABEL_LIST", ""]) == 0
    assert torch.equal(read_state_dict(str(out))["blocks.0.attn.qkv.weight"], ema["blocks.0.attn.qkv.weight"])
    assert (f"note: {ckpt}: using its EMA weights (the ones the run evaluated), not its raw 'model' weights"
            in capsys.readouterr().err)
    load_model(cfg, str(ckpt), torch.device("cpu"), warn=False)  # e.g. a rank other than the first
    assert capsys.readouterr().err == ""


def test_an_exported_file_under_another_name_is_read_as_safetensors(tiny, tmp_path):
    # found by the name alone, a renamed export was "not a weights file exported by tools.export_safetensors"
    # (without --cfg) or a pickle torch could not read ("Unsupported operand 8")
    cfg, model, _, out = tiny
    for name in ("renamed.pth", "no_extension"):
        renamed = tmp_path / name
        renamed.write_bytes(out.read_bytes())
        loaded = read_state_dict(str(renamed))
        assert loaded.keys() == model.state_dict().keys()
        assert torch.equal(loaded["head.weight"], model.state_dict()["head.weight"])
        setup, names = load_setup(None, [], str(renamed))
        assert setup.MODEL.ARCH == cfg.MODEL.ARCH and names[0] == "moving down"
    (tmp_path / "text.pth").write_text("{not safetensors}")  # the sniff does not take text for a header
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        read_state_dict(str(tmp_path / "text.pth"))


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs a file whose read fails: /proc/self/mem")
def test_an_input_that_cannot_be_read_is_not_called_a_failed_write_of_out(tiny, tmp_path, capsys):
    # every OSError past the input checks was "cannot write --out": a config or weights file that could not be read
    # (permissions, an I/O error of the storage) sent the user to the output's folder
    _, _, ckpt, _ = tiny
    out = tmp_path / "m.safetensors"
    assert export_safetensors.main(["--cfg", "/proc/self/mem", "--weights", str(ckpt), "--out", str(out)]) == 2
    # naming the file (it was "cannot read an input file")
    assert capsys.readouterr().err == "error: cannot read /proc/self/mem: Input/output error\n"
    assert not out.exists()


def test_errors_about_a_file_behind_a_reference_name_the_reference(tmp_path, offline_cache):
    """read_checkpoint named the cached file alone (a blob path under the Hub cache the user never wrote), while the
    same error from a run's check, which reuses its parse, named the reference: every message names the reference,
    with the cached file in parentheses, whichever of them speaks."""
    from models.checkpoint import check_checkpoint
    from models.hub import cached_weights_path

    good = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.zeros(3)}}, good)
    no_tensors = tmp_path / "plain.pth"
    torch.save({"epoch": 3}, no_tensors)
    _hub_cache(offline_cache, "acme/eva", {"cut.pth": good.read_bytes()[:-100], "plain.pth": no_tensors.read_bytes()})
    for name, why in (("cut.pth", ": damaged: cut short: "), ("plain.pth", ": no tensors found (top-level keys: ")):
        ref = f"hf://acme/eva/{name}"
        messages = []
        for read in (read_state_dict, check_checkpoint):
            with pytest.raises(CheckpointError) as info:
                read(ref)
            messages.append(str(info.value))
        local = cached_weights_path(ref)
        assert local and messages[0].startswith(f"{ref} ({local}){why}") and messages[0] == messages[1], messages


def test_export_refuses_to_write_over_its_own_weights(tiny, tmp_path, monkeypatch, capsys):
    """A --dtype change "in place" (--out naming the --weights file, or a link to it) replaced the float32 weights
    with their bfloat16 rounding, without a word; now one line before the weights load, and the file is kept."""
    _, _, _, out = tiny
    before = out.read_bytes()
    link = tmp_path / "link.safetensors"
    link.symlink_to(out)
    monkeypatch.setattr(export_safetensors, "load_model", lambda *a, **k: pytest.fail("the weights were loaded"))
    for target in (out, link):
        assert export_safetensors.main(["--weights", str(out), "--out", str(target), "--dtype", "bfloat16"]) == 2
        assert capsys.readouterr().err == f"error: --out {target} is --weights {out}: writing it would replace " \
                                          "that input; give another file name\n"
    assert out.read_bytes() == before
