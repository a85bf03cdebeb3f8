"""StepControl: stop signals become a flag polled at step boundaries; the clock-based save; handlers restored.

The agreement between ranks and the exact resume are checked end to end in tests/test_engine_e2e.py."""

from __future__ import annotations

import os
import signal

from engine.distributed import DistContext
from engine.preemption import (PREEMPTED_EXIT_CODE, STOP_SIGNALS, Preempted, StepControl, StopNotice,
                               StoppedAtTest, StoppedOutsideTraining, run_complete, stop_received,
                               stop_signals_raise)


def test_signal_sets_the_stop_flag_and_the_old_handler_comes_back():
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    with StepControl(DistContext()) as control:
        assert control.poll() == (False, False) and control.stop_requested() is False
        os.kill(os.getpid(), signal.SIGUSR1)  # the process survives: only a flag is set
        assert control.poll() == (True, False) and control.signal_name == "SIGUSR1"
        assert control.stop_requested() is True  # what an evaluation asks before every batch
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before


def test_the_first_of_two_signals_names_the_stop():
    # SIGUSR1 before the time limit, then the limit's SIGTERM while the stop's checkpoint is written: the run stopped
    # for the first (the line named the second, which reads as a preemption or a cancel)
    with StepControl(DistContext()) as control:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert control.poll() == (True, False) and control.signal_name == "SIGUSR1"


def test_clock_based_save_is_due_after_the_interval_and_restarts_on_save():
    now = [1000.0]
    control = StepControl(DistContext(), save_minutes=2.0, clock=lambda: now[0])
    now[0] += 119.0
    assert control.poll() == (False, False)
    now[0] += 1.0
    assert control.poll() == (False, True)
    control.saved()
    now[0] += 60.0
    assert control.poll() == (False, False)
    assert StepControl(DistContext(), save_minutes=0.0, clock=lambda: now[0] + 1e9).poll() == (False, False)


def test_preempted_message_names_step_checkpoint_and_exit_code():
    msg = str(Preempted(7, "out/ckpt_step_7.pth", "SIGTERM"))
    assert msg.startswith("SIGTERM received: stopped after optimizer step 7 with checkpoint out/ckpt_step_7.pth")
    assert f"exit code {PREEMPTED_EXIT_CODE}" in msg


def test_a_stop_is_named_by_its_signal_or_said_to_be_another_process_s():
    """With several processes a signal may reach only some; the others stop as agreed and say so."""
    assert str(Preempted(3, "c.pth", None)).startswith("another process received a stop signal: stopped after "
                                                       "optimizer step 3 with checkpoint c.pth;")
    assert str(StoppedAtTest("SIGUSR1", "c.pth", True, "during the final test: x")).startswith(
        "SIGUSR1 received during the final test: x; exit code 4.")
    assert stop_received("SIGTERM", "stop signal ") == "stop signal SIGTERM received"
    assert stop_received(None, "stop signal ") == "another process received a stop signal"


def test_a_stop_during_an_evaluation_is_said_once_after_the_batch_it_came_in():
    """StopNotice, the evaluation's after_batch: nothing without a signal or outside an evaluation; the line once,
    for the whole trainer; leaving the evaluation says one that came in its last batch, unless it failed."""
    import pytest

    said = []
    notice = StopNotice(said.append)
    with StepControl(DistContext()) as control:
        with notice.evaluating(control, "the validation of epoch 1", "finishing it"):
            notice()
            assert said == []
            os.kill(os.getpid(), signal.SIGTERM)
        assert said == ["stop signal SIGTERM received during the validation of epoch 1: finishing it"]
        with notice.evaluating(control, "the final test", "stopping"):
            notice()
        assert len(said) == 1
    failed, late = StopNotice(said.append), StopNotice(said.append)
    with StepControl(DistContext()) as control:
        os.kill(os.getpid(), signal.SIGUSR1)
        late()  # not evaluating: nothing to say
        with pytest.raises(RuntimeError), failed.evaluating(control, "the final test", "stopping"):
            raise RuntimeError("a decoder failed")
        with late.evaluating(control, "the final test", "stopping"):
            pass
    assert said[1:] == ["stop signal SIGUSR1 received during the final test: stopping"]
    assert not failed.said and late.said


def test_flags_agreed_with_the_step_answer_the_next_poll_without_a_collective():
    """The training step all-reduces local_flags with its loss and hands the sums to agree(): the poll after that
    step returns them once; the next poll looks again."""
    with StepControl(DistContext(), save_minutes=0.0) as control:
        assert control.local_flags() == [0.0, 0.0]
        os.kill(os.getpid(), signal.SIGTERM)
        assert control.local_flags() == [1.0, 0.0]
        control.agree([0.0, 2.0])  # summed over ranks: no rank had a signal then, two found a save due
        assert control.poll() == (False, True)
        assert control.poll() == (True, False)  # no agreement left: this rank's own flag (one process)


def test_outside_the_steps_the_first_signal_raises_and_the_next_cannot_cut_its_handling_short():
    import pytest

    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    saved = []
    with pytest.raises(StoppedOutsideTraining, match="SIGUSR1 received outside the training steps"):
        with stop_signals_raise():
            try:
                os.kill(os.getpid(), signal.SIGUSR1)
                raise AssertionError("the signal did not raise")
            except StoppedOutsideTraining:
                os.kill(os.getpid(), signal.SIGTERM)  # torchrun forwarding the scheduler's signal: ignored
                saved.append("an index build's work")  # what an interrupted build does before it re-raises
                raise
    assert saved and {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before


def test_the_line_of_a_stop_outside_the_steps_says_stopped_once():
    """train.py prefixes "stopped: "; the message said it a second time ("...: stopped; exit code 4")."""
    line = f"stopped: {StoppedOutsideTraining('SIGTERM')}"
    assert line == ("stopped: SIGTERM received outside the training steps (start-up, a checkpoint's load, an "
                    "evaluation-only run or the summary); exit code 4. Run the same command again (an index build "
                    "goes on from what it saved)")
    after = StoppedOutsideTraining("SIGUSR1").after_training("out/ckpt_epoch_2.pth", auto_resume=True)
    assert f"stopped: {after}" == ("stopped: SIGUSR1 received after the training's last checkpoint "
                                   "out/ckpt_epoch_2.pth; exit code 4. The training is finished; its summary.json is "
                                   "not written yet. Run the same command again to write it")


def test_once_the_run_is_complete_a_stop_signal_changes_nothing():
    """After the summary (run_complete) the plots and the closing finish: no StoppedOutsideTraining, no exit 4. The
    next block (another run in the same process) stops on a signal again."""
    import pytest

    with stop_signals_raise():
        run_complete()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGUSR1)
        sum(range(1000))  # the handlers run here
    with pytest.raises(StoppedOutsideTraining, match="SIGTERM"):
        with stop_signals_raise():
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))


def test_a_stop_signal_between_the_start_and_the_index_builds_stops_the_run_with_code_4(tmp_path):
    """From the end of train.py's start (torch loaded) to the training steps, reading the config, checking the files,
    the --dry-run plan and joining the other processes included, a stop signal ends the run in one line with code 4,
    never by the signal (143). Here it comes while the files are checked."""
    import subprocess
    import sys

    from tests.conftest import ROOT, child_env

    script = tmp_path / "run.py"
    script.write_text("import os, runpy, signal, sys\n"
                      "from engine import preflight\n"
                      "preflight.check_files = lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM) or sum(range(9))\n"
                      f"sys.argv = ['train.py', '--cfg', {str(ROOT / 'configs' / 'demo.yaml')!r}, '--dry-run']\n"
                      f"runpy.run_path({str(ROOT / 'train.py')!r}, run_name='__main__')\n")
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=child_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == PREEMPTED_EXIT_CODE and "Traceback" not in p.stderr, (p.returncode, p.stderr)
    assert p.stderr.strip().splitlines()[-1].startswith("stopped: SIGTERM received outside the training steps"), \
        p.stderr
