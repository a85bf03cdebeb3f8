"""make_synthetic_dataset: what a rerun checks before it reuses clips, and how a stop, a full disk or a missing
encoder ends it."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tools import synthetic
from tools.synthetic import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
TOOL = str(ROOT / "tools" / "make_synthetic_dataset.py")
SMALL = dict(train_per_class=3, val_per_class=2, num_frames=8, size=(64, 48), seed=3, workers=1, progress=False)


def clips(out: Path) -> list[Path]:
    return sorted(p for p in (out / "videos").rglob("*") if p.is_file())


def parts(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if ".part" in p.name]


def without_records(out: Path) -> None:
    """dataset.json as a run killed before it recorded its clips left it (or as written before clips were
    recorded)."""
    meta = json.loads((out / "dataset.json").read_text())
    for key in ("clip_bytes", "clip_blake2b"):
        meta.pop(key, None)
    (out / "dataset.json").write_text(json.dumps(meta))


def test_damaged_clips_are_written_again_and_counted(tmp_path, capsys):
    """A clip overwritten with garbage of its own size, one cut short and one emptied (a disk's hiccup) were reused
    as they were: the dataset failed only when training read them."""
    out, whole = tmp_path / "out", tmp_path / "whole"
    make_synthetic_dataset(str(out), **SMALL)
    make_synthetic_dataset(str(whole), **SMALL)
    garbled, cut, emptied, *others = clips(out)
    garbled.write_bytes(b"\0" * garbled.stat().st_size)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    emptied.write_bytes(b"")
    untouched = {p: p.stat().st_mtime_ns for p in others}
    capsys.readouterr()
    s = make_synthetic_dataset(str(out), **SMALL)
    err = capsys.readouterr().err
    assert not s["skipped"] and s["rewritten"] == 3
    assert err == (f"synthetic dataset in {out}: 3 clips on disk not as written (damaged or changed since, e.g. "
                   f"{garbled.relative_to(out)}): writing them again\n")
    for p in clips(out):
        assert p.read_bytes() == (whole / p.relative_to(out)).read_bytes(), p
    assert {p: p.stat().st_mtime_ns for p in others} == untouched  # the others were not written again
    s = make_synthetic_dataset(str(out), **SMALL)
    assert s["skipped"] and s["rewritten"] == 0 and capsys.readouterr().err == ""


def test_unrecorded_clips_are_probed_then_recorded(tmp_path, capsys):
    """A clip a killed run renamed into place but did not record: the index's quick probe decides, and a clip that
    passes is recorded so that the next reuse only hashes it."""
    out = tmp_path / "out"
    make_synthetic_dataset(str(out), **SMALL)
    recorded = json.loads((out / "dataset.json").read_text())
    without_records(out)
    cut = clips(out)[4]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    s = make_synthetic_dataset(str(out), **SMALL)
    assert not s["skipped"] and s["rewritten"] == 1 and str(cut.relative_to(out)) in capsys.readouterr().err
    assert json.loads((out / "dataset.json").read_text()) == recorded  # the same bytes as before, all recorded
    without_records(out)
    assert make_synthetic_dataset(str(out), **SMALL)["skipped"]
    assert json.loads((out / "dataset.json").read_text()) == recorded


def test_a_damaged_list_is_written_again(tmp_path):
    """A cut-short train.txt was reused (only its size was looked at): training then saw a part of the clips."""
    out = tmp_path / "out"
    make_synthetic_dataset(str(out), **SMALL)
    text = (out / "train.txt").read_text()
    (out / "train.txt").write_text(text[:30])
    assert not make_synthetic_dataset(str(out), **SMALL)["skipped"]
    assert (out / "train.txt").read_text() == text


def test_a_dataset_in_a_folder_that_cannot_be_written_is_still_reused(tmp_path, monkeypatch):
    """Recording the clips a probe checked is a convenience: a read-only dataset (a shared copy) stays usable."""
    out = tmp_path / "out"
    make_synthetic_dataset(str(out), **SMALL)
    without_records(out)
    before = (out / "dataset.json").read_text()

    def read_only(path, text, fsync=True):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(synthetic, "atomic_write_text", read_only)
    assert make_synthetic_dataset(str(out), **SMALL)["skipped"]
    assert (out / "dataset.json").read_text() == before


# The tool run with synthetic.<step> sending it signal <sig> at its <nth> call (--workers 1: in this process, in
# order), after <before>(its argument).
_STOPPED_AT_A_CALL = """
import os, runpy, signal, sys
sys.path.insert(0, {root!r})
from tools import synthetic

step, calls = synthetic.{step}, []

def stopped(arg):
    calls.append(arg)
    if len(calls) == {nth}:
        {before}(arg)
        os.kill(os.getpid(), {sig})
        sum(range(1000))  # the handler runs here
    return step(arg)

synthetic.{step} = stopped
sys.argv = [{tool!r}, *{args!r}]
runpy.run_path({tool!r}, run_name="__main__")
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_keeps_the_finished_clips_in_one_line_with_exit_code_4(tmp_path, sig):
    """A scheduler's SIGTERM (SIGUSR1) killed the tool (status 143, no word) and left the clip being written as a
    .part file; it now ends as train.py and the other tools do, and the same command writes only the rest."""
    out = tmp_path / "out"
    args = ["--out", str(out), "--train-per-class", "3", "--val-per-class", "2", "--frames", "8", "--seed", "3",
            "--codec", "h264", "--workers", "1", "--quiet"]
    script = tmp_path / "stopped.py"
    part = '(lambda job: open(job[0] + ".part.mp4", "wb").close())'  # the clip being written when the signal came
    script.write_text(_STOPPED_AT_A_CALL.format(root=str(ROOT), step="_write_job", nth=4, sig=int(sig), tool=TOOL,
                                                args=args, before=part))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 4, r
    assert r.stderr == (f"stopped: {sig.name} received: writing the synthetic dataset in {out}: it is incomplete "
                        "(its dataset.json says so); the same command keeps the clips finished and writes the rest "
                        "(exit code 4)\n")
    assert r.stdout == "" and not parts(out)
    meta = json.loads((out / "dataset.json").read_text())
    finished = clips(out)
    assert meta["complete"] is False and len(finished) == 3 and sorted(meta["clip_bytes"]) == sorted(
        str(p.relative_to(out)) for p in finished)
    kept = {p: p.stat().st_mtime_ns for p in finished}
    s = make_synthetic_dataset(str(out), **{**SMALL, "codec": "h264"})
    assert not s["skipped"] and s["rewritten"] == 0 and len(clips(out)) == 20
    assert {p: p.stat().st_mtime_ns for p in finished} == kept


_SIGNAL_ON_IMPORT = """
import os, runpy, sys
sys.path.insert(0, {root!r})

class Signal:
    def find_spec(self, name, path=None, target=None):
        if name == "tools.synthetic":
            os.kill(os.getpid(), {sig})
            sum(range(1000))  # the handler runs here

sys.meta_path.insert(0, Signal())
sys.argv = [{tool!r}, "--out", {out!r}]
runpy.run_path({tool!r}, run_name="__main__")
"""


def test_a_stop_signal_while_it_imports_is_one_line_and_exit_code_4(tmp_path):
    """Before its work begins (numpy and PyAV loading) SIGTERM killed it with status 143 and no word."""
    out = tmp_path / "never written"
    script = tmp_path / "signal_on_import.py"
    script.write_text(_SIGNAL_ON_IMPORT.format(root=str(ROOT), sig=int(signal.SIGTERM), tool=TOOL, out=str(out)))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 4 and r.stderr == ("stopped: SIGTERM received while starting: nothing was done or written "
                                              "yet; run the same command again (exit code 4)\n"), r
    assert not out.exists()


def _marked_processes(mark: str) -> list[int]:
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if mark.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_with_worker_processes_leaves_no_part_file_and_no_worker(tmp_path):
    out = tmp_path / "out"
    mark = f"synthetic-stop-{uuid.uuid4().hex}"
    p = subprocess.Popen([sys.executable, TOOL, "--out", str(out), "--train-per-class", "250", "--val-per-class",
                          "1", "--frames", "8", "--size", "32x32", "--workers", "2"], cwd=ROOT,
                         env={**os.environ, "SYNTHETIC_TEST_MARK": mark}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while len(list((out / "videos").glob("*/*.mp4"))) < 4 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 4, stderr
    assert stderr.startswith("stopped: SIGTERM received: writing the synthetic dataset in ") and len(
        stderr.splitlines()) == 1, stderr
    assert stdout == "" and not parts(out)
    assert json.loads((out / "dataset.json").read_text())["complete"] is False
    deadline = time.monotonic() + 5  # the fork server and resource tracker end once the main process is gone
    while _marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _marked_processes(mark) == []


def _file_size_limit(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_full_disk_is_one_line_and_leaves_no_part_file(tmp_path, workers):
    """A disk that fills up (here: a file size limit) left the clips being written as .part files."""
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, TOOL, "--out", str(out), "--train-per-class", "2", "--val-per-class", "1",
                        "--frames", "8", "--workers", workers, "--quiet"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, preexec_fn=_file_size_limit(1000))
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"error: cannot write the synthetic dataset in {out}: File too large (")
    assert r.stderr.endswith("; the clips finished are kept: free space, then run the same command\n")
    assert not parts(out) and json.loads((out / "dataset.json").read_text())["complete"] is False


_WITHOUT_VP9_ENCODER = """
import runpy, sys
sys.path.insert(0, {root!r})
import dali_pipelines.pyav_encode as pyav_encode

pyav_encode._encoder_available = lambda name: name != "libvpx-vp9"
sys.argv = [{tool!r}, *{args!r}]
runpy.run_path({tool!r}, run_name="__main__")
"""


def test_a_codec_this_pyav_cannot_encode_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    """Every encoding process raised it: a traceback, exit code 1, and a folder with a dataset.json left."""
    out = tmp_path / "out"
    script = tmp_path / "no_vp9.py"
    script.write_text(_WITHOUT_VP9_ENCODER.format(root=str(ROOT), tool=TOOL, args=[
        "--out", str(out), "--codec", "vp9", "--train-per-class", "1", "--val-per-class", "1", "--frames", "2",
        "--workers", "1", "--quiet"]))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: --codec vp9: the FFmpeg inside PyAV ") and r.stderr.endswith(
        "has no 'libvpx-vp9' encoder for codec 'vp9'; choose one it has: vp8, h264, mpeg4, mjpeg\n"), r.stderr
    assert not out.exists()
    # A dataset written where the encoder was is reused where it is not (decoding it needs no encoder).
    make_synthetic_dataset(str(out), **SMALL)
    import dali_pipelines.pyav_encode as pyav_encode

    monkeypatch.setattr(pyav_encode, "_encoder_available", lambda name: name != "libvpx-vp9")
    assert make_synthetic_dataset(str(out), **SMALL)["skipped"]
    (out / "train.txt").write_text("")  # but what must be written again cannot be
    with pytest.raises(synthetic.MissingEncoderError):
        make_synthetic_dataset(str(out), **SMALL)


def test_an_empty_out_is_refused_not_the_current_folder(tmp_path, monkeypatch, capsys):
    """`--out "$DATA"` with DATA unset wrote the dataset into the current folder (abspath("") is it)."""
    from tools.make_synthetic_dataset import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["--out", "", "--train-per-class", "1", "--val-per-class", "1", "--frames", "2", "--quiet"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("--out is empty; give a folder")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a folder no process may write in")
def test_a_folder_that_cannot_be_written_is_named_not_a_temporary_file(tmp_path):
    """The line named the hidden temporary file beside dataset.json (/proc/<pid>/.dataset.json.<random>.tmp)."""
    r = subprocess.run([sys.executable, TOOL, "--out", "/proc/self", "--train-per-class", "1", "--val-per-class", "1",
                        "--frames", "2", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: --out /proc/self: ") and ".tmp" not in r.stderr, r.stderr


_MEMORY_OF_4_GIB = """
import runpy, sys
sys.path.insert(0, {root!r})
from tools import synthetic

def never_rendered(*args, **kwargs):  # the refusal comes first: a 4096x4096 clip is never rendered here
    raise AssertionError("a clip was rendered")

synthetic.available_memory = lambda: 4 << 30
synthetic.motion_clip = never_rendered
sys.argv = [{tool!r}, *{args!r}]
runpy.run_path({tool!r}, run_name="__main__")
"""


def test_a_clip_larger_than_the_memory_available_is_one_line_before_anything_is_written(tmp_path):
    """--size 4096x4096 with 32 frames was accepted: each encoding process held the clip and its float
    intermediates (about 28 GiB), one per core, until the memory ran out."""
    out = tmp_path / "out"
    script = tmp_path / "small_memory.py"
    script.write_text(_MEMORY_OF_4_GIB.format(root=str(ROOT), tool=TOOL, args=[
        "--out", str(out), "--size", "4096x4096", "--frames", "64", "--train-per-class", "1", "--val-per-class", "1",
        "--workers", "1", "--quiet"]))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr == ("error: --size 4096x4096 with --frames 64: one clip needs about 5.75 GiB to render and encode "
                        "and 4.00 GiB of memory is available, even with --workers 1: give --frames 36 or fewer at this "
                        "--size, or a smaller --size\n")
    assert r.stdout == "" and not out.exists()


def test_fewer_clips_are_written_at_once_when_more_would_not_fit_in_memory(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    each = synthetic.clip_memory(SMALL["num_frames"], SMALL["size"]) + synthetic.WORKER_BYTES
    monkeypatch.setattr(synthetic, "available_memory", lambda: each + 1)
    asked, map_with_progress = [], synthetic.map_with_progress

    def counting(fn, items, workers, *args, **kwargs):
        asked.append(workers)
        return map_with_progress(fn, items, workers, *args, **kwargs)

    monkeypatch.setattr(synthetic, "map_with_progress", counting)
    s = make_synthetic_dataset(str(out), **{**SMALL, "workers": 4})
    assert not s["skipped"] and len(clips(out)) == 20 and asked == [1]
    assert capsys.readouterr().err == (f"synthetic clips: 1 written at once, not 4: each needs about "
                                       f"{synthetic.format_bytes(each)} (8 frames of 64x48) and "
                                       f"{synthetic.format_bytes(each + 1)} of memory is available\n")
    # A complete dataset is reused without rendering anything, whatever memory there is.
    monkeypatch.setattr(synthetic, "available_memory", lambda: 0)
    assert make_synthetic_dataset(str(out), **SMALL)["skipped"]
    clips(out)[0].unlink()  # but a clip to render again is refused, before anything is written
    meta = (out / "dataset.json").read_text()
    with pytest.raises(synthetic.NotEnoughMemoryError):
        make_synthetic_dataset(str(out), **SMALL)
    assert (out / "dataset.json").read_text() == meta and len(clips(out)) == 19


def test_the_memory_a_clip_needs_is_not_underestimated(tmp_path):
    """The bound above is only as true as CLIP_BYTES_PER_PIXEL: the peak of what rendering and encoding a clip
    allocates must stay within it."""
    import tracemalloc

    job = (str(tmp_path / "clip.mp4"), "moving up", 2, 0, 0, (128, 96), "h264", 25.0, None, 16)
    tracemalloc.start()
    try:
        synthetic._write_job(job)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert synthetic.clip_memory(16, (128, 96)) // 2 < peak <= synthetic.clip_memory(16, (128, 96))



@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_a_complete_dataset_is_checked_says_it_is_complete_and_untouched(tmp_path, sig):
    """The line said the dataset was incomplete (its dataset.json says so), while that file said complete and
    nothing had been written."""
    out = tmp_path / "out"
    make_synthetic_dataset(str(out), **{**SMALL, "codec": "h264"})
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    args = ["--out", str(out), "--train-per-class", "3", "--val-per-class", "2", "--frames", "8", "--seed", "3",
            "--codec", "h264", "--workers", "1", "--quiet"]
    script = tmp_path / "stopped.py"
    # the reuse check hashes each recorded clip: stopped at the third
    script.write_text(_STOPPED_AT_A_CALL.format(root=str(ROOT), step="_clip_record", nth=3, sig=int(sig), tool=TOOL,
                                                args=args, before="id"))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    line = (f"checking the synthetic dataset in {out}: it is complete and untouched; the same command checks it "
            "again and reuses it")
    if sig == signal.SIGINT:
        assert r.returncode == -signal.SIGINT and r.stderr == f"interrupted: {line}\n", r  # ends by SIGINT
    else:
        assert r.returncode == 4 and r.stderr == f"stopped: SIGTERM received: {line} (exit code 4)\n", r
    assert r.stdout == ""
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()} == before
    assert make_synthetic_dataset(str(out), **{**SMALL, "codec": "h264"})["skipped"]
