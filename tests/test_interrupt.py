"""Ctrl-C in a command: one line saying what stopped and what was kept, no traceback, the status of a SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from evautil.interrupt import on_interrupt
from tests.conftest import ROOT, child_env


# A command run from a terminal starts with SIGINT's default action. A test suite started in the background (`make
# test &`, nohup) hands its children SIGINT ignored, which the commands rightly keep (a background job's Ctrl-C is not
# for them): the child gets the default back, as from a terminal, before it execs the command.
_AS_FROM_A_TERMINAL = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                       "os.execv(sys.argv[1], sys.argv[1:])"]


def _interrupt_when(cmd: list[str], cwd, started: Callable[[str], bool], settle_s: float = 0.3,
                    sig: signal.Signals = signal.SIGINT) -> tuple[int, str]:
    """Run ``cmd`` (its first item the Python executable), send SIGINT (or ``sig``) to its process group (as a
    terminal's Ctrl-C does, or a batch scheduler) ``settle_s`` after ``started(stderr so far)`` holds, and return
    (status, stderr)."""
    p = subprocess.Popen([*_AS_FROM_A_TERMINAL, *cmd], cwd=cwd, env=child_env(), start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(p.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not started("".join(lines)):
            assert p.poll() is None and time.monotonic() < deadline, f"the work never started:\n{''.join(lines)}"
            time.sleep(0.05)
        time.sleep(settle_s)  # into the work, not at its first step
        os.killpg(p.pid, sig)
        status = p.wait(120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    reader.join(10)
    return status, "".join(lines)


def _run_script(script, body: str) -> subprocess.CompletedProcess:
    """Write ``body`` (which may use os, signal and sys, and import the project) to ``script`` and run it as from a
    terminal; its stderr is captured as text."""
    script.write_text(f"import os, signal, sys\nsys.path.insert(0, {str(ROOT)!r})\n" + body)
    return subprocess.run([*_AS_FROM_A_TERMINAL, sys.executable, str(script)], env=child_env(), capture_output=True,
                          text=True, timeout=60)


def _assert_one_line(status: int, err: str, says: str) -> str:
    # A process ended by SIGINT: a shell reports 130, and a shell loop over the command stops too.
    assert status == -signal.SIGINT, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and says in last, err
    return last


def test_make_synthetic_dataset_interrupted_says_the_dataset_is_incomplete(tmp_path):
    out = tmp_path / "synthetic dataset"
    status, err = _interrupt_when(
        [sys.executable, str(ROOT / "tools" / "make_synthetic_dataset.py"), "--out", str(out), "--train-per-class",
         "400", "--val-per-class", "1", "--frames", "8", "--workers", "1"], tmp_path,
        lambda _: any((out / "videos").glob("*/*.mp4")))  # (no bar without a terminal to say it started)
    last = _assert_one_line(status, err, f"writing the synthetic dataset in {out}")
    assert "the same command keeps the clips finished and writes the rest" in last
    assert json.loads((out / "dataset.json").read_text())["complete"] is False  # never marked complete


def test_verify_data_interrupted_keeps_the_videos_probed(tmp_path, real_clips_dir):
    # Many names for one real clip: a list that takes long enough to index (about 40 s on 2 cores) to be
    # interrupted in the middle, after the first results (the pool takes a few seconds to start).
    clip = real_clips_dir / "clip_32frames_340x256.mp4"
    (tmp_path / "v").mkdir()
    lines = []
    for i in range(4000):
        os.symlink(clip, tmp_path / "v" / f"{i}{clip.suffix}")
        lines.append(f"v/{i}{clip.suffix} 0\n")
    (tmp_path / "list.txt").write_text("".join(lines))
    status, err = _interrupt_when(
        [sys.executable, str(ROOT / "tools" / "verify_data.py"), str(tmp_path / "list.txt"), "--workers", "2",
         "--full-decode"], tmp_path, lambda err: "probing 4,000 of 4,000 videos" in err, settle_s=8.0)
    _assert_one_line(status, err, "the videos probed so far are saved in each list's <list>.index.npz")
    assert (tmp_path / "list.txt.index.npz").is_file()


def test_reencode_interrupted_keeps_the_finished_videos(tmp_path):
    clips = tmp_path / "clips"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_synthetic_dataset.py"), "--out", str(clips),
                    "--train-per-class", "1", "--val-per-class", "1", "--frames", "4", "--quiet"], check=True,
                   env=child_env(), stdout=subprocess.DEVNULL)
    src = tmp_path / "src"
    src.mkdir()
    for k, clip in enumerate(sorted((clips / "videos").glob("*/*_0.mp4"))):  # the 4 training clips
        for i in range(500):  # enough to be interrupted in the middle
            os.symlink(clip, src / f"{k}_{i}.mp4")
    dst = tmp_path / "dst"
    status, err = _interrupt_when(
        [sys.executable, str(ROOT / "tools" / "prepare_kinetics.py"), "reencode", "--src", str(src), "--dst",
         str(dst), "--short-side", "16", "--workers", "1"], tmp_path,
        lambda _: dst.is_dir() and any(dst.glob("*.mp4")))
    _assert_one_line(status, err, "re-encoding: the videos finished so far are kept")
    finished = list(dst.glob("*.mp4"))
    assert 0 < len(finished) < 2000
    rerun = subprocess.run([sys.executable, str(ROOT / "tools" / "prepare_kinetics.py"), "reencode", "--src",
                            str(src), "--dst", str(dst), "--dry-run"], env=child_env(), capture_output=True,
                           text=True, check=True)
    assert f"{len(finished)} already done" in rerun.stdout  # the same command goes on with the rest


_STALLING_REENCODE = """
import sys

from tests import crashing_jobs
from tools import prepare_kinetics
from tools.kinetics import reencode

if __name__ == "__main__":
    reencode._reencode_job = crashing_jobs.stalling_reencode_job  # the workers get it by name
    sys.exit(prepare_kinetics.main(sys.argv[1:]))
"""


def test_interrupted_reencode_counts_every_finished_video_and_removes_partial_ones(tmp_path):
    """Ctrl-C while the first file is still encoding: the others, finished in the other worker but never
    reported (results come in order), are on disk and counted; the stopped encode's `.part` file is removed."""
    from tests.crashing_jobs import STALL_MARK

    clips = tmp_path / "clips"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_synthetic_dataset.py"), "--out", str(clips),
                    "--train-per-class", "1", "--val-per-class", "1", "--frames", "4", "--quiet"], check=True,
                   env=child_env(), stdout=subprocess.DEVNULL)
    clip = sorted((clips / "videos").glob("*/*.mp4"))[0]
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    # The stalling one comes first; few enough files that the pool hands them out one by one (never with it).
    names = [f"a_{STALL_MARK}.mp4"] + [f"b_{i:02d}.mp4" for i in range(12)]
    for name in names:
        os.symlink(clip, src / name)
    (tmp_path / "run.py").write_text(_STALLING_REENCODE)
    cmd = [sys.executable, str(tmp_path / "run.py"), "reencode", "--src", str(src), "--dst", str(dst),
           "--short-side", "16", "--workers", "2"]
    status, err = _interrupt_when(cmd, tmp_path, lambda _: (dst / names[0]).with_suffix(".mp4.part").exists()
                                  and all((dst / n).exists() for n in names[1:]), settle_s=0.0)
    _assert_one_line(status, err, "re-encoding: the videos finished so far are kept")
    # no .part (hidden: the tree's settings record and lock)
    assert sorted(p.name for p in dst.iterdir() if p.suffix not in (".json", ".md") and p.name[0] != ".") == names[1:]
    report = json.loads((dst / "reencode_report.json").read_text())
    assert (report["done"], report["frames"], report["interrupted"]) == (12, 48, True)
    assert "encoded now: 12, failed: 0" in (dst / "reencode_report.md").read_text()
    rerun = subprocess.run([sys.executable, str(ROOT / "tools" / "prepare_kinetics.py"), "reencode", "--src",
                            str(src), "--dst", str(dst), "--short-side", "16", "--workers", "1"], env=child_env(),
                           capture_output=True, text=True, check=True)
    assert "re-encoded 1 video (4 frames)" in rerun.stdout and "skipped 12 already done" in rerun.stdout
    assert sorted(p.name for p in dst.glob("*.mp4")) == sorted(names)


def _long_demo_training(tmp_path, *extra: str) -> tuple[Path, list[str]]:
    """(its OUTPUT, the --opts) of a demo training on a tiny synthetic set that runs far longer than a test waits."""
    from tools.synthetic import make_synthetic_dataset

    data, out = tmp_path / "data", tmp_path / "out"
    make_synthetic_dataset(str(data), train_per_class=4, val_per_class=1, num_frames=8, size=(48, 32), workers=1,
                           progress=False)
    return out, ["DATA.ROOT", str(data), "DATA.TRAIN_FILE", str(data / "train.txt"), "DATA.VAL_FILE",
                 str(data / "val.txt"), "DATA.LABEL_LIST", str(data / "labels.csv"), "DATA.INPUT_SIZE", "32",
                 "DATA.NUM_FRAMES", "4", "DATA.TUBELET_SIZE", "2", "DATA.NUM_WORKERS", "1", "DATA.INDEX_WORKERS",
                 "1", "TRAIN.BATCH_SIZE", "2", "TRAIN.EPOCHS", "500", "PRINT_FREQ", "1", "LOG.PROGRESS_BAR", "False",
                 "LOG.TENSORBOARD", "False", "LOG.NVML", "False", "OUTPUT", str(out), *extra]


def test_training_interrupted_says_so_on_the_console_and_in_its_log(tmp_path):
    out, opts = _long_demo_training(tmp_path)
    log = out / "log_rank0.txt"
    status, err = _interrupt_when(
        [sys.executable, str(ROOT / "train.py"), "--cfg", str(ROOT / "configs" / "demo.yaml"), "--opts", *opts],
        tmp_path, lambda _: log.is_file() and "step 3/" in log.read_text())
    last = _assert_one_line(status, err, "the run stopped where it was, without a checkpoint")
    assert log.read_text().strip().splitlines()[-1].endswith("] " + last)  # the run's own record says it too


def test_a_ctrl_c_after_a_checkpoint_names_the_resume_that_continues_it(tmp_path):
    """The demo's TRAIN.AUTO_RESUME False makes the same command start over (moving the checkpoints aside): a Ctrl-C
    line names the --resume that continues the run (a checkpoint in OUTPUT), as a stop signal's does."""
    out, opts = _long_demo_training(tmp_path, "SAVE_STEPS", "2")
    cmd = [sys.executable, str(ROOT / "train.py"), "--cfg", str(ROOT / "configs" / "demo.yaml"), "--opts", *opts]
    log = out / "log_rank0.txt"
    status, err = _interrupt_when(cmd, tmp_path, lambda _: log.is_file() and "step 3/" in log.read_text(),
                                  settle_s=0.0)
    last = _assert_one_line(status, err, "the run stopped where it was, without a checkpoint after ")
    named = last.split("--resume ")[1].split()[0]
    assert os.path.isfile(named) and os.path.dirname(named) == str(out), last
    assert "TRAIN.AUTO_RESUME is False" in last, last
    assert log.read_text().strip().splitlines()[-1].endswith("] " + last)


def test_a_ctrl_c_after_the_summary_changes_nothing(tmp_path):
    """Once a tool has printed its summary it has finished: a Ctrl-C while its process ends (loaders, worker pools
    and the interpreter closing, a second or so) neither ends it by SIGINT without the interrupted line nor shows a
    finaliser's traceback: it exits with the status of its work."""
    import torch

    from configs import load_config
    from models import build_model
    from tools.synthetic import make_synthetic_dataset

    data = tmp_path / "data"
    make_synthetic_dataset(str(data), train_per_class=1, val_per_class=0, num_frames=8, size=(48, 32), workers=1,
                           progress=False)
    opts = ["DATA.INPUT_SIZE", "32", "DATA.NUM_FRAMES", "4", "DATA.TUBELET_SIZE", "2", "DATA.NUM_CLASSES", "4",
            "DATA.NUM_THREADS", "1", "DATA.NUM_WORKERS", "1", "DATA.INDEX_WORKERS", "1", "DATA.LABEL_LIST", "",
            "DATA.DECODE_DEVICE", "cpu", "TEST.BATCH_SIZE", "2"]
    weights = tmp_path / "model.pth"
    torch.save({"model": build_model(load_config(str(ROOT / "configs" / "demo.yaml"), opts)).state_dict()}, weights)
    summary = " extracted, "
    for settle_s in (0.0, 0.3):  # the first run extracts, the second finds every video done
        status, err = _interrupt_when(
            [sys.executable, "-m", "tools.extract_features", str(data / "videos"), "--cfg",
             str(ROOT / "configs" / "demo.yaml"), "--weights", str(weights), "--out", str(tmp_path / "features"),
             "--quiet", "--opts", *opts], ROOT, lambda err: summary in err, settle_s=settle_s)
        assert status == 0, err
        assert summary in err.strip().splitlines()[-1] and "4 of 4" in err and "Traceback" not in err, err


def test_after_its_last_line_a_command_ends_with_its_status_whatever_signal_comes(tmp_path):
    """finished(): a Ctrl-C or a scheduler's SIGTERM / SIGUSR1 while the process closes changes nothing."""
    p = _run_script(tmp_path / "closing.py",
                    "from evautil.interrupt import finished\n"
                    "status = finished(3)\n"
                    "for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):\n"
                    "    os.kill(os.getpid(), sig)\n"
                    "print('closed', file=sys.stderr)\n"
                    "sys.exit(status)\n")
    assert p.returncode == 3 and p.stderr == "closed\n", p.stderr


def test_a_ctrl_c_while_a_command_starts_is_one_line_too(tmp_path):
    # 0.6 s in: past Python's start, inside the imports of torch and the engine (about 2 s here, more under load)
    for cmd in ([str(ROOT / "train.py"), "--cfg", str(ROOT / "configs" / "demo.yaml"), "--dry-run"],
                ["-m", "tools.export_safetensors", "--help"]):
        status, err = _interrupt_when([sys.executable, *cmd], ROOT, lambda _: True, settle_s=0.6)
        _assert_one_line(status, err, "stopped while starting: nothing was done or written yet")


def test_a_ctrl_c_while_make_synthetic_dataset_imports_is_one_line(tmp_path):
    """Its imports (numpy, PyAV) came before its handler: a Ctrl-C there was a KeyboardInterrupt traceback. The
    Ctrl-C comes as the script imports tools.synthetic, and nothing is written."""
    out = tmp_path / "never written"
    p = _run_script(tmp_path / "ctrl_c_on_import.py",
                    "import runpy\n"
                    "class CtrlC:\n"
                    "    def find_spec(self, name, path=None, target=None):\n"
                    "        if name == 'tools.synthetic':\n"
                    "            os.kill(os.getpid(), signal.SIGINT)\n"
                    "            sum(range(1000))  # the handler runs here\n"
                    "sys.meta_path.insert(0, CtrlC())\n"
                    f"sys.argv = ['make_synthetic_dataset.py', '--out', {str(out)!r}]\n"
                    f"runpy.run_path({str(ROOT / 'tools' / 'make_synthetic_dataset.py')!r}, run_name='__main__')\n")
    _assert_one_line(p.returncode, p.stderr, "stopped while starting: nothing was done or written yet")
    assert not out.exists()


@pytest.mark.parametrize("tool, first_import", [("tools.predict", "csv"), ("tools.export_safetensors", "torch")])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
def test_predict_and_export_stopped_while_they_import_say_so_in_one_line(tmp_path, tool, first_import, sig):
    """predict's handler came after its first imports (a Ctrl-C there was a KeyboardInterrupt traceback), and a stop
    signal while either started killed it with status 143 and no word. The signal comes as the tool imports
    ``first_import`` (predict's first import after its handler; torch for export_safetensors)."""
    p = _run_script(tmp_path / "signal_on_import.py",
                    "import runpy\n"
                    "class Signal:\n"
                    "    def find_spec(self, name, path=None, target=None):\n"
                    f"        if name == {first_import!r}:\n"
                    f"            os.kill(os.getpid(), {int(sig)})\n"
                    "            sum(range(1000))  # the handler runs here\n"
                    "sys.meta_path.insert(0, Signal())\n"
                    f"sys.argv = [{tool!r}, '--help']\n"
                    f"runpy.run_module({tool!r}, run_name='__main__', alter_sys=True)\n")
    if sig == signal.SIGINT:
        _assert_one_line(p.returncode, p.stderr, "stopped while starting: nothing was done or written yet")
    else:
        assert p.returncode == 4 and p.stderr == (f"stopped: {sig.name} received while starting: nothing was done "
                                                  "or written yet; run the same command again (exit code 4)\n"), p


def test_a_stop_signal_while_train_py_starts_is_one_line_and_exit_code_4(tmp_path):
    """A batch scheduler's SIGTERM (or SIGUSR1) while torch still loads, before the run's own handling of the stop
    signals: one line and the exit code of a stopped run, not a process killed by the signal (143)."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        status, err = _interrupt_when([sys.executable, str(ROOT / "train.py"), "--cfg",
                                       str(ROOT / "configs" / "demo.yaml"), "--dry-run"], ROOT, lambda _: True,
                                      settle_s=0.6, sig=sig)
        assert status == 4 and "Traceback" not in err, (sig, status, err)
        assert err.strip().splitlines()[-1] == (f"stopped: {sig.name} received while starting: nothing was done or "
                                                "written yet; run the same command again (exit code 4)"), err


def test_verify_data_with_a_config_imports_torch_before_its_start_ends(tmp_path):
    """verify_data --cfg needs torch (the label list and model checks): it is imported while a signal still ends
    the start at once, not after, where a Ctrl-C or a stop signal inside torch's import could abort the process."""
    p = _run_script(tmp_path / "spy.py",
                    "from tools import verify_data\n"
                    "real = verify_data.on_interrupt\n"
                    "def spy(message, **kwargs):\n"
                    "    print('torch imported' if 'torch' in sys.modules else 'torch not imported', file=sys.stderr)\n"
                    "    real(message, **kwargs)\n"
                    "verify_data.on_interrupt = spy\n"
                    f"status = verify_data.main(['--cfg', {str(ROOT / 'configs' / 'demo.yaml')!r}, '--dry-run'])\n"
                    "print('status', status, file=sys.stderr)\n")
    lines = p.stderr.strip().splitlines()
    assert lines[0] == "torch imported" and p.stdout.startswith("model eva-tiny/8"), (p.stdout, p.stderr)
    assert lines[-1].startswith("status "), p.stderr  # (2 where the demo's lists were not generated)


def test_a_stop_signal_while_starting_ends_the_process_at_once_with_the_stop_status(tmp_path):
    """As a Ctrl-C then, it raises nothing (inside a finaliser, or inside C++ code calling back into Python, an
    exception would be swallowed or abort the process); stdout's buffered lines come out first."""
    p = _run_script(tmp_path / "starting.py",
                    "from evautil.interrupt import STARTING, on_interrupt\n"
                    "on_interrupt(STARTING, stop_status=4)\n"
                    "print('a line written before')\n"
                    "class Finalised:\n"
                    "    def __del__(self):\n"
                    "        os.kill(os.getpid(), signal.SIGTERM)\n"
                    "        sum(range(1000))  # the handler runs here, inside the finaliser\n"
                    "Finalised()\n"
                    "print('went on after the signal', file=sys.stderr)\n")
    assert p.returncode == 4 and p.stdout == "a line written before\n", (p.returncode, p.stdout, p.stderr)
    assert p.stderr == ("stopped: SIGTERM received while starting: nothing was done or written yet; run the same "
                        "command again (exit code 4)\n"), p.stderr


def test_stop_signals_while_starting_then_the_commands_own_handling(monkeypatch):
    """Only a command that asks for it (stop_status) ends with a status on a stop signal while starting; once its
    work begins the signals have their default action again, for its own handlers (e.g. stop_signals_raise), and an
    ignored signal stays ignored throughout."""
    from evautil import interrupt
    from evautil.interrupt import STOP_SIGNALS, STOPPED_EXIT_STATUS, Stopped, stop_signals_raise

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr("evautil.interrupt._message", None)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, *STOP_SIGNALS)}
    try:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        on_interrupt(interrupt.STARTING)
        assert {signal.getsignal(sig) for sig in STOP_SIGNALS} == {signal.SIG_DFL}
        on_interrupt(interrupt.STARTING, stop_status=STOPPED_EXIT_STATUS)
        assert {signal.getsignal(sig) for sig in STOP_SIGNALS} == {interrupt._stopped_while_starting}
        on_interrupt("working: the files written so far are kept")
        assert {signal.getsignal(sig) for sig in STOP_SIGNALS} == {signal.SIG_DFL}
        with stop_signals_raise():
            try:
                os.kill(os.getpid(), signal.SIGUSR1)
                raise AssertionError("the signal did not raise")
            except Stopped as e:
                assert e.signal_name == "SIGUSR1"
        assert {signal.getsignal(sig) for sig in STOP_SIGNALS} == {signal.SIG_DFL}
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        on_interrupt(interrupt.STARTING, stop_status=STOPPED_EXIT_STATUS)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGUSR1) is interrupt._stopped_while_starting
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_a_ctrl_c_while_starting_ends_the_process_even_where_python_would_swallow_it(tmp_path):
    """While starting, a Ctrl-C raises nothing: raised inside C++ code that called back into Python (torch's and
    DALI's imports) a KeyboardInterrupt aborted the process (status -6, 'terminate called ...'); raised inside a
    finaliser, Python swallows it and the command goes on. The finaliser case is the one Python can show alone."""
    p = _run_script(tmp_path / "starting.py",
                    "from evautil.interrupt import STARTING, on_interrupt\n"
                    "on_interrupt(STARTING)\n"
                    "class Finalised:\n"
                    "    def __del__(self):\n"
                    "        os.kill(os.getpid(), signal.SIGINT)\n"
                    "        sum(range(1000))  # the handler runs here, inside the finaliser\n"
                    "Finalised()\n"
                    "print('went on after the Ctrl-C', file=sys.stderr)\n")
    _assert_one_line(p.returncode, p.stderr, "stopped while starting: nothing was done or written yet")
    assert "went on" not in p.stderr


def test_once_the_work_begins_a_ctrl_c_raises_keyboardinterrupt_again(monkeypatch):
    import signal as signals

    from evautil import interrupt

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr("evautil.interrupt._message", None)
    previous = signals.getsignal(signals.SIGINT)
    try:
        signals.signal(signals.SIGINT, signals.default_int_handler)
        on_interrupt(interrupt.STARTING)
        assert signals.getsignal(signals.SIGINT) is interrupt._stop_while_starting
        on_interrupt("working: the files written so far are kept")  # clean-up on the way out needs the exception
        assert signals.getsignal(signals.SIGINT) is signals.default_int_handler
        signals.signal(signals.SIGINT, signals.SIG_IGN)  # a background job's ignored SIGINT stays ignored
        on_interrupt(interrupt.STARTING)
        assert signals.getsignal(signals.SIGINT) is signals.SIG_IGN
    finally:
        signals.signal(signals.SIGINT, previous)


def test_on_interrupt_leaves_other_errors_to_the_previous_hook(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: seen.append(exc[0]))
    monkeypatch.setattr("evautil.interrupt._message", None)
    on_interrupt("first phase")
    on_interrupt("second phase: its files are kept")  # a later phase replaces what is said
    sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
    sys.excepthook(ValueError, ValueError("x"), None)
    assert capsys.readouterr().err == "interrupted: second phase: its files are kept\n"
    assert seen == [ValueError]


def test_after_the_line_an_interrupt_during_shutdown_prints_nothing_more(monkeypatch, capsys):
    """A worker pool's exit handler joining its thread can meet the KeyboardInterrupt again while the interpreter
    shuts down; Python reports that through sys.unraisablehook ("Exception ignored in ..." and a traceback)."""
    from types import SimpleNamespace

    reported = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: None)
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    monkeypatch.setattr("evautil.interrupt._message", None)
    on_interrupt("writing: incomplete")
    sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
    during_exit = SimpleNamespace(exc_type=KeyboardInterrupt, exc_value=KeyboardInterrupt(), exc_traceback=None,
                                  err_msg="Exception ignored in", object=None)
    other = SimpleNamespace(exc_type=OSError, exc_value=OSError("disk"), exc_traceback=None,
                            err_msg="Exception ignored in", object=None)
    sys.unraisablehook(during_exit)
    sys.unraisablehook(other)
    assert capsys.readouterr().err == "interrupted: writing: incomplete\n"
    assert reported == [other]  # anything else still reaches the previous hook
