"""The README's requeueing SLURM batch script, run as written under bash, with stand-ins for srun and scontrol: the
step (torchrun and its workers) ends with torchrun's 1 while rank 0 writes its own code the way train.py does, and
only a stopped run (4) is requeued."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.process_end import EXIT_STATUS_FILE, record_exit
from tests.conftest import ROOT, child_env

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _readme_script() -> str:
    found = re.findall(r"```bash\n(#!/bin/bash\n.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert len(found) == 1, "the README holds one batch script"
    return found[0]


def _fake_slurm(bin_dir: Path, calls: Path, status: Path | None) -> None:
    """scontrol and srun that record their arguments. The job step leaves ``status`` (rank 0's exit status, as
    train.py writes it) in OUTPUT, or nothing when it was killed outright, and exits 1, as torchrun does."""
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "scontrol $*" >> {calls}\n'
                                      '[ "$1 $2" = "show hostnames" ] && echo node1\nexit 0\n')
    copy = f"cp {status} output/k400/\n" if status is not None else ""
    (bin_dir / "srun").write_text(f'#!/bin/bash\necho "srun $*" >> {calls}\n{copy}exit 1\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)


@pytest.mark.parametrize("code", [0, 1, 2, 3, 4, 5, 130, None])
def test_the_readme_batch_script_requeues_only_a_stopped_run_and_ends_with_rank_0s_code(tmp_path, code):
    script = tmp_path / "job.sbatch"
    script.write_text(_readme_script())
    calls = tmp_path / "calls.log"
    status = None
    if code is not None:
        (tmp_path / "rank0").mkdir()
        record_exit(str(tmp_path / "rank0"), code)
        status = tmp_path / "rank0" / EXIT_STATUS_FILE
    _fake_slurm(tmp_path / "bin", calls, status)
    out = tmp_path / "output" / "k400"
    out.mkdir(parents=True)
    (out / "exit_status.json").write_text(json.dumps({"exit_code": 4}))  # the last attempt's: no longer true
    env = child_env(PATH=f"{tmp_path / 'bin'}:{child_env()['PATH']}", SLURM_JOB_NODELIST="node1",
                    SLURM_NNODES="1", SLURM_JOB_ID="77")
    p = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    lines = calls.read_text().splitlines()
    assert lines[0] == "scontrol show hostnames node1" and lines[1].startswith("srun torchrun "), lines
    assert "--rdzv_endpoint node1:29500" in lines[1] and lines[1].endswith(" --output output/k400"), lines[1]
    assert lines[2:] == (["scontrol requeue 77"] if code == 4 else []), (code, lines, p.stderr)
    # the job's state: 0 for a finished run (COMPLETED), else rank 0's code, 1 when it wrote none
    assert p.returncode == (1 if code is None else code), (code, p.returncode, p.stderr)


def test_the_readme_batch_script_has_torchrun_forward_its_default_signals_and_sigusr1():
    """The list once read SIGTERM,SIGINT,SIGUSR1: a SIGHUP or SIGQUIT then ended torchrun alone, and its workers
    (each in a session of its own) trained on without it."""
    from torch.distributed.run import get_args_parser

    found = re.findall(r"--signals-to-handle (\S+)", _readme_script())
    assert len(found) == 1, found
    default = next(a.default for a in get_args_parser()._actions if "--signals-to-handle" in a.option_strings)
    forwarded = set(found[0].split(","))
    assert set(default.split(",")) | {"SIGUSR1"} <= forwarded, (default, found[0])
