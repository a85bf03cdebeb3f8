"""The README's requeueing SLURM batch script, run as written under bash, with stand-ins for srun and scontrol: the
step (torchrun and its workers) ends with torchrun's 1 while rank 0 writes its own code the way train.py does, and
only a stopped run (4) is requeued; two jobs on one OUTPUT each read their own code."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, child_env

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _readme_script() -> str:
    found = re.findall(r"```bash\n(#!/bin/bash\n.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert len(found) == 1, "the README holds one batch script"
    return found[0]


_RECORD = "import sys; from engine.process_end import record_exit; record_exit('output/k400', int(sys.argv[1]))"


def _fake_slurm(bin_dir: Path, calls: Path, codes: dict[str, int], inner: dict[str, str] | None = None) -> None:
    """scontrol and srun that record their arguments. The job step of job ``j`` ends the way train.py's rank 0
    does with ``codes[j]`` (record_exit, in the environment the script gives srun), or writes nothing when ``j``
    has no code (killed outright), and exits 1, as torchrun does. ``inner[j]``: another job on the same OUTPUT,
    whose whole script runs during job ``j``'s step (after its rank 0's record, as it ends), with its exit status
    left in ``job<id>.rc``."""
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "scontrol $*" >> {calls}\n'
                                      '[ "$1 $2" = "show hostnames" ] && echo node1\nexit 0\n')
    step = [f'#!/bin/bash\necho "srun $*" >> {calls}\ncase "$SLURM_JOB_ID" in']
    for job in sorted(set(codes) | set(inner or {})):
        record = f'"{sys.executable}" -c "{_RECORD}" {codes[job]}; ' if job in codes else ""
        other = (inner or {}).get(job)
        nested = f"SLURM_JOB_ID={other} bash job.sbatch; echo $? > job{other}.rc; " if other else ""
        step.append(f"  {job}) {record}{nested};;")
    (bin_dir / "srun").write_text("\n".join(step) + "\nesac\nexit 1\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)


def _run_script(tmp_path: Path, job: str) -> subprocess.CompletedProcess:
    (tmp_path / "job.sbatch").write_text(_readme_script())
    env = child_env(PATH=f"{tmp_path / 'bin'}:{child_env()['PATH']}", SLURM_JOB_NODELIST="node1",
                    SLURM_NNODES="1", SLURM_JOB_ID=job)
    env.pop("EVA_EXIT_STATUS_FILE", None)
    return subprocess.run(["bash", "job.sbatch"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("code", [0, 1, 2, 3, 4, 5, 130, None])
def test_the_readme_batch_script_requeues_only_a_stopped_run_and_ends_with_rank_0s_code(tmp_path, code):
    calls = tmp_path / "calls.log"
    _fake_slurm(tmp_path / "bin", calls, {} if code is None else {"77": code})
    out = tmp_path / "output" / "k400"
    out.mkdir(parents=True)
    for stale in out / "exit_status.json", out / "exit_status.77.json":  # the last attempt's: no longer true
        stale.write_text(json.dumps({"exit_code": 4}))
    p = _run_script(tmp_path, "77")
    lines = calls.read_text().splitlines()
    assert lines[0] == "scontrol show hostnames node1" and lines[1].startswith("srun torchrun "), lines
    assert "--rdzv_endpoint node1:29500" in lines[1] and lines[1].endswith(" --output output/k400"), lines[1]
    assert lines[2:] == (["scontrol requeue 77"] if code == 4 else []), (code, lines, p.stderr)
    # the job's state: 0 for a finished run (COMPLETED), else rank 0's code, 1 when it wrote none
    assert p.returncode == (1 if code is None else code), (code, p.returncode, p.stderr)
    assert not (out / "exit_status.77.json").exists()  # the job's own copy is removed once read
    if code is not None:  # exit_status.json still tells how the run's last process ended
        assert json.loads((out / "exit_status.json").read_text())["exit_code"] == code


@pytest.mark.parametrize("first", ["77", "78"])
def test_two_jobs_on_one_output_each_read_their_own_exit_status(tmp_path, first):
    """Job 77's run stops (4) while job 78, on the same OUTPUT, starts and ends without a status (its step killed,
    or refused by the run lock before its own copy existed). With one exit_status.json, 78's ``rm -f`` deleted
    77's status between its write and its read (77 not requeued: "77" first), or 78 read 77's 4 and requeued
    itself ("78" first)."""
    calls = tmp_path / "calls.log"
    second = "78" if first == "77" else "77"
    _fake_slurm(tmp_path / "bin", calls, {"77": 4}, inner={first: second})
    (tmp_path / "output" / "k400").mkdir(parents=True)
    p = _run_script(tmp_path, first)
    codes = {first: p.returncode, second: int((tmp_path / f"job{second}.rc").read_text())}
    assert codes == {"77": 4, "78": 1}, (codes, p.stderr)
    assert [line for line in calls.read_text().splitlines() if "requeue" in line] == ["scontrol requeue 77"]
    assert sorted(os.listdir(tmp_path / "output" / "k400")) == ["exit_status.json"]


def test_the_readme_batch_script_has_torchrun_forward_its_default_signals_and_sigusr1():
    """The list once read SIGTERM,SIGINT,SIGUSR1: a SIGHUP or SIGQUIT then ended torchrun alone, and its workers
    (each in a session of its own) trained on without it."""
    from torch.distributed.run import get_args_parser

    found = re.findall(r"--signals-to-handle (\S+)", _readme_script())
    assert len(found) == 1, found
    default = next(a.default for a in get_args_parser()._actions if "--signals-to-handle" in a.option_strings)
    forwarded = set(found[0].split(","))
    assert set(default.split(",")) | {"SIGUSR1"} <= forwarded, (default, found[0])


def test_a_run_the_lock_refuses_writes_its_code_to_its_jobs_file_only(tmp_path, monkeypatch):
    from engine.process_end import EXIT_STATUS_ENV, record_exit
    from engine.run_files import RUN_LOCK
    from evautil.files import hold_lock

    out, own = tmp_path / "out", tmp_path / "out" / "exit_status.78.json"
    out.mkdir()
    (out / "exit_status.json").write_text("the running run's\n")
    monkeypatch.setenv(EXIT_STATUS_ENV, str(own))
    monkeypatch.delenv("RANK", raising=False)
    record_exit(None, 0)  # a dry run: nothing anywhere
    assert not own.exists()
    other = hold_lock(str(out / RUN_LOCK))  # the run that writes OUTPUT
    try:
        record_exit(str(out), 2)
    finally:
        other.close()
    assert json.loads(own.read_text()) == {"exit_code": 2, "meaning": "bad input or a file that cannot be written"}
    assert (out / "exit_status.json").read_text() == "the running run's\n"
    monkeypatch.setenv("RANK", "1")  # another rank: rank 0 alone writes
    own.unlink()
    record_exit(str(out), 4)
    assert not own.exists()
