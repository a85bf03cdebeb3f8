"""Two CPU processes (gloo) of train.py where one process fails in the middle of an epoch, through the real data
loader: what the console, each rank's log file and the exit codes say afterwards.

The processes are started as a scheduler starts them (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment; no
launcher that would end the other process), so the other rank always meets the failure in its next collective.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, child_env
from tests.video_fixtures import synthetic_dataset

pytestmark = pytest.mark.slow

# train.main, with the training loader of rank FAIL_RANK failing at its FAIL_AT-th batch of the first epoch:
# FAIL_KIND "data" raises a DataError (an unusable input: exit code 2), "crash" a RuntimeError (a bug), "kill"
# sends that rank SIGKILL; "evalcrash" raises a RuntimeError in that rank's first validation batch; "startup"
# fails that rank's start instead, as weights damaged on its node would (a CheckpointError: exit code 2).
WRAPPER = r'''
import os, signal, sys
sys.path.insert(0, os.environ["REPO"])
import train
if __name__ == "__main__":  # the decode workers import this module: they must not train
    from dali_pipelines import loader as ld
    from dali_pipelines.filelist import DataError
    from engine import runner
    from evautil.errors import CheckpointError
    orig_announce = runner.announce_model
    def announce_model(*a, **k):
        if os.environ["FAIL_KIND"] == "startup" and int(os.environ["RANK"]) == int(os.environ["FAIL_RANK"]):
            raise CheckpointError("injected: the weights are damaged on this node")
        return orig_announce(*a, **k)
    runner.announce_model = announce_model
    orig_iter = ld.VideoLoader.__iter__
    fail_rank, fail_at = int(os.environ["FAIL_RANK"]), int(os.environ["FAIL_AT"])
    def iterate(self):
        for n, batch in enumerate(orig_iter(self), 1):
            if os.environ["FAIL_KIND"] == "evalcrash" and not self.training and int(os.environ["RANK"]) == fail_rank:
                raise RuntimeError("injected: the validation ran out of memory")
            if self.training and n == fail_at and self.epoch == 0 and int(os.environ["RANK"]) == fail_rank \
                    and os.environ["FAIL_KIND"] != "evalcrash":
                if os.environ["FAIL_KIND"] == "kill":  # killed outright (the out-of-memory killer): no line
                    os.kill(os.getpid(), signal.SIGKILL)
                if os.environ["FAIL_KIND"] == "data":
                    raise DataError("injected: every video left to this rank is unreadable")
                raise RuntimeError("injected: a bug on one rank")
            yield batch
    ld.VideoLoader.__iter__ = iterate
    sys.exit(train.main(sys.argv[1:]))
'''


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synthetic_dataset(tmp_path_factory, "synth_ranks", 4, 2, num_frames=8, size=(32, 24))


def _opts(data: Path, out: Path) -> list[str]:
    opts = {
        "DATA.ROOT": data, "DATA.TRAIN_FILE": data / "train.txt", "DATA.VAL_FILE": data / "val.txt",
        "DATA.LABEL_LIST": data / "labels.csv", "DATA.INPUT_SIZE": 32, "DATA.NUM_FRAMES": 4,
        "DATA.TUBELET_SIZE": 2, "DATA.NUM_THREADS": 1, "DATA.NUM_WORKERS": 1, "DATA.INDEX_WORKERS": 1,
        "DATA.DECODE_DEVICE": "cpu", "TRAIN.BATCH_SIZE": 2, "TRAIN.EPOCHS": 2, "TRAIN.WARMUP_EPOCHS": 0,
        "TEST.BATCH_SIZE": 2, "TEST.NUM_CLIP": 1, "TEST.NUM_CROP": 1, "TEST.FINAL_NUM_CLIP": 0,
        "LOG.PROGRESS_BAR": False, "LOG.TENSORBOARD": False, "LOG.NVML": False, "PRINT_FREQ": 1, "OUTPUT": out,
    }
    return [str(x) for kv in opts.items() for x in kv]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(tmp_path: Path, data: Path, kind: str) -> tuple[Path, list[subprocess.CompletedProcess]]:
    """Both ranks to their end (generous deadline: a rank left waiting in a collective would hit it)."""
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    out = tmp_path / "out"
    env = child_env(REPO=str(ROOT), FAIL_RANK="1", FAIL_AT="3", FAIL_KIND=kind, OMP_NUM_THREADS="1",
                    MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2")
    cmd = [sys.executable, str(script), "--cfg", str(ROOT / "configs" / "demo.yaml"), "--opts", *_opts(data, out)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    done = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=300)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return out, done


def test_an_input_error_of_one_rank_reaches_the_console_and_the_other_rank_says_it_lost_it(tmp_path, dataset):
    out, (r0, r1) = _two_ranks(tmp_path, dataset, "data")
    assert r1.returncode == 2, r1.stderr[-3000:]
    # the failing rank's own line on its console, with its rank, not only in its log file
    assert "[rank 1] error: injected: every video left to this rank is unreadable" in r1.stderr, r1.stderr[-3000:]
    assert "error: injected: every video left to this rank is unreadable" in (out / "log_rank1.txt").read_text()
    # the other rank fails in its next collective, and says that it is the consequence, in its log file too
    assert r0.returncode == 1
    lost = "error: this process lost its connection to another process of the run, which failed or was killed"
    assert lost in r0.stdout + r0.stderr, (r0.stdout + r0.stderr)[-3000:]
    assert lost in (out / "log_rank0.txt").read_text()


def test_a_crash_of_one_rank_is_in_its_log_file(tmp_path, dataset):
    out, (r0, r1) = _two_ranks(tmp_path, dataset, "crash")
    assert r1.returncode == 1 and "RuntimeError: injected: a bug on one rank" in r1.stderr  # the traceback
    assert "error: RuntimeError: injected: a bug on one rank" in (out / "log_rank1.txt").read_text()
    assert r0.returncode == 1
    assert "lost its connection to another process of the run" in (out / "log_rank0.txt").read_text()
    # nothing of this run was left running or half-written: the first epoch never ended, no checkpoint
    assert not list(out.glob("ckpt_*.pth")) and not list(out.glob("*.tmp*"))


def test_a_validation_crash_of_one_rank_keeps_the_epoch_and_the_other_rank_names_it(tmp_path, dataset):
    """Rank 1's validation fails after an epoch: both ranks learn it where the evaluation gathers its
    results, write the epoch's checkpoint together (it came after the validation, so the rerun trained the epoch
    again), and end; rank 0 names rank 1's error instead of a lost connection."""
    out, (r0, r1) = _two_ranks(tmp_path, dataset, "evalcrash")
    assert r1.returncode == 1 and "RuntimeError: injected: the validation ran out of memory" in r1.stderr, \
        r1.stderr[-3000:]
    assert r0.returncode == 1, (r0.stdout + r0.stderr)[-3000:]
    said = "rank 1's val evaluation failed (RuntimeError: injected: the validation ran out of memory)"
    assert said in (out / "log_rank0.txt").read_text(), (r0.stdout + r0.stderr)[-3000:]
    # the validation that failed is the last epoch's (TEST.EVAL_FREQ): its checkpoint, written before the end
    ckpt = torch.load(out / "ckpt_epoch_2.pth", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["epoch_complete"] and ckpt["global_step"] > 0


def test_a_rank_killed_outright_is_named_by_the_other(tmp_path, dataset):
    """A rank killed with SIGKILL writes no line of its own; the other's line said only that 'another process' was
    lost and sent the user to 'its log_rank<r>.txt', which ends with a step line. Of two processes, it names the rank
    and where its end is told (the launcher's report), and ends with exit code 1 (README: a lost connection)."""
    out, (r0, r1) = _two_ranks(tmp_path, dataset, "kill")
    assert r1.returncode == -9
    assert r0.returncode == 1, (r0.stdout + r0.stderr)[-3000:]
    named = ("error: this process lost its connection to another process of the run, which failed or was killed: "
             "rank 1's error (its own line, its log_rank1.txt, or for a process killed outright the launcher's "
             "report) says why (")
    assert named in r0.stdout + r0.stderr, (r0.stdout + r0.stderr)[-3000:]
    assert named in (out / "log_rank0.txt").read_text()
    assert json.loads((out / "exit_status.json").read_text())["exit_code"] == 1


def _torchrun(tmp_path: Path, data: Path, kind: str) -> tuple[Path, subprocess.CompletedProcess]:
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    out = tmp_path / "out"
    env = child_env(REPO=str(ROOT), FAIL_RANK="1", FAIL_AT="3", FAIL_KIND=kind, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(script),
           "--cfg", str(ROOT / "configs" / "demo.yaml"), "--opts", *_opts(data, out)]
    return out, subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _root_cause(report: str) -> str:
    """The 'Root Cause' block of torchrun's failure report."""
    assert "Root Cause (first observed failure):" in report, report[-3000:]
    return report.split("Root Cause (first observed failure):", 1)[1].split("=====", 1)[0]


@pytest.mark.parametrize("kind, line", [("data", "error: injected: every video left to this rank is unreadable"),
                                        ("crash", "error: RuntimeError: injected: a bug on one rank"),
                                        ("startup", "error: injected: the weights are damaged on this node")])
def test_torchrun_names_the_failing_rank_and_its_error_as_the_root_cause(tmp_path, dataset, kind, line):
    # The other rank fails in its next collective too and may exit first; torchrun's report must still name
    # rank 1, with its error instead of 'To enable traceback see ...'.
    out, r = _torchrun(tmp_path, dataset, kind)
    assert r.returncode != 0
    cause = _root_cause(r.stdout + r.stderr)
    assert "rank      : 1 (local_rank: 1)" in cause and line in cause, cause
    # the other rank's entry, when torchrun had its record, says it lost rank 1 rather than naming an error of its own
    others = (r.stdout + r.stderr).split("Failures:", 1)[1].split("Root Cause", 1)[0]
    assert "injected" not in others and "To enable traceback" not in others, others
    if kind != "startup":  # a start-up error has no run log yet: its line is on stderr only
        assert line in (out / "log_rank1.txt").read_text()
    else:  # with the rank that printed it, as a running rank's error line
        assert f"[rank 1] {line}" in r.stderr and f"[rank 0] {line}" not in r.stderr, r.stderr[-3000:]


def test_a_second_run_of_two_ranks_into_a_running_runs_output_writes_nothing_there(tmp_path, dataset):
    """A second run (two processes) into an OUTPUT that a running run holds: rank 0 was refused by the run lock, but
    rank 1 had opened its log by then and appended a 'lost its connection' error to the RUNNING run's
    log_rank1.txt. Every rank now learns rank 0's claim before it opens anything in OUTPUT; the refusal names the
    process that holds the folder."""
    import socket as sockets

    from engine.run_files import RUN_LOCK, claim_output, release_output

    out = tmp_path / "out"
    out.mkdir()
    running = {"log_rank0.txt": "the running run's rank 0\n", "log_rank1.txt": "the running run's rank 1\n",
               "metrics.jsonl": '{"kind": "train", "step": 1}\n', "exit_status.json": "the running run's\n"}
    for name, text in running.items():
        (out / name).write_text(text)
    claim_output(str(out))  # this process is the running run's rank 0
    try:
        env = child_env(OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "train.py",
               "--cfg", str(ROOT / "configs" / "demo.yaml"), "--opts", *_opts(dataset, out)]
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode != 0
        refusal = (f"error: OUTPUT {out} is being written by another run (process {os.getpid()} on "
                   f"{sockets.gethostname()} holds {RUN_LOCK} there): wait for it to end, or give this run another "
                   "OUTPUT")
        # once on the console, by rank 0: rank 1 printed it again as "[rank 1] error: ..."
        assert r.stderr.splitlines().count(refusal) == 1 and "[rank 1]" not in r.stderr, r.stderr[-3000:]
        # rank 1 still fails with it: torchrun's report of rank 1 gives it as that rank's recorded error
        report = r.stderr.split("Failures:", 1)[-1]
        assert re.search(rf"rank +: 1 \(local_rank: 1\)\n(.*\n)*? +traceback +: {re.escape(refusal)}\n", report), \
            r.stderr[-3000:]
        assert "lost its connection" not in r.stdout + r.stderr, r.stderr[-3000:]
        assert {p.name: p.read_text() for p in out.iterdir() if p.name != RUN_LOCK} == running
    finally:
        release_output(str(out))


def test_a_rank_whose_line_rank_zero_prints_ends_with_its_code_and_prints_nothing(monkeypatch, capsys):
    """The rank of a refused run other than 0 (:func:`test_a_second_run_of_two_ranks_into_a_running_runs_output_\
    writes_nothing_there`) ends as before, with the same exit code, only without printing rank 0's line again;
    the next line ended with is printed (with its rank) as before."""
    from engine.process_end import end_before_run, end_line_said_by_rank_zero

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("TORCHELASTIC_ERROR_FILE", raising=False)
    end_line_said_by_rank_zero()
    assert end_before_run("error: refused", 2) == 2 and capsys.readouterr().err == ""
    assert end_before_run("error: another", 2) == 2 and capsys.readouterr().err == "[rank 1] error: another\n"
