"""benchmarks/gpu_suite.sh in its dry mode: the plans, their time boxes, and commands whose flags exist."""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, child_env

SUITE = ROOT / "benchmarks" / "gpu_suite.sh"


def _dry_run(*plans: str, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", str(SUITE), "--dry-run", *plans], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, **env})
    assert done.returncode == 0, done.stderr
    return done


def _stages(listing: str) -> dict[str, tuple[int, str]]:
    return {m.group(1): (int(m.group(2)), m.group(3))
            for m in re.finditer(r"^--- stage (\S+) \(time box (\d+) s\): (.*)$", listing, re.M)}


def test_smoke_plan_fits_four_minutes_and_lists_its_stages():
    listing = _dry_run("smoke").stdout
    stages = _stages(listing)
    assert list(stages) == ["env", "parity", "gpu_tests", "demo"]
    assert sum(b for b, _ in stages.values()) <= 240
    assert "time boxes add up to" in listing
    # the GPU tests get SIGINT inside their box (pytest then writes the junit report of the tests that ran), and
    # the log names each test's outcome and time
    tests_box, tests = stages["gpu_tests"]
    stop = re.match(r"timeout --foreground -s INT -k (\d+) (\d+) \S+ -m pytest ", tests)
    assert stop and int(stop[1]) + int(stop[2]) < tests_box and tests_box >= 120
    assert "--junitxml results/smoke/gpu_tests.xml" in tests and " -rA --durations=0 " in tests
    demo_box, demo = stages["demo"]
    assert "/tmp/" in demo and "results/smoke/demo_metrics.jsonl" in demo
    # training is stopped (SIGTERM: checkpoint, exit 4) before the box ends, and the metrics are copied after it
    stop = re.search(r"timeout --foreground -k (\d+) "
                     r"\$\(\( \(left = (\d+) - (\d+) - SECONDS\) > 5 \? left : 5 \)\) \S+ train\.py", demo)
    assert stop and int(stop[2]) == demo_box and int(stop[1]) < int(stop[3])
    assert demo.index("train.py") < demo.index("cp ") and "--signal" not in demo  # timeout's default: SIGTERM
    # a shortened demo, sized to end (training, the multi-view test, the plots) inside the box at 2-core CPU speed
    assert "TRAIN.EPOCHS 2 " in demo and "--cfg configs/demo.yaml" in demo
    # the GPU route or a failure: demo.yaml's `auto` would quietly train on the CPU route without NVDEC
    assert " DATA.DECODE_DEVICE gpu " in demo
    assert re.search(r" DATA\.INDEX_WORKERS \d+;", demo)  # the machine's cores, not the config's 2


def test_demo_time_limit_never_reaches_zero():
    """`timeout 0` means no limit: however long the dataset took, training gets SIGTERM at least 5 s after its
    start (the box's own SIGTERM follows)."""
    demo_box, demo = _stages(_dry_run("smoke").stdout)["demo"]
    limit = re.search(r"timeout --foreground -k \d+ (\$\(\(.*?\)\)) ", demo)[1]
    for elapsed, expected in ((0, demo_box - 12), (demo_box - 20, 8), (demo_box - 12, 5), (demo_box + 30, 5)):
        done = subprocess.run(["bash", "-c", f"SECONDS={elapsed}; echo {limit}"], capture_output=True, text=True)
        assert int(done.stdout) == expected, (elapsed, done.stdout, done.stderr)


def test_gpu_tests_stage_interrupted_in_its_box_still_writes_the_junit_report(tmp_path):
    """The stage's own command, its limit cut to 8 s, on a folder of two tests, one of them hung: SIGINT stops
    pytest, the report names the test that passed and the log the one that was running; the exit code is
    timeout's 124 (the suite reports "ran out of time")."""
    tests_box, tests = _stages(_dry_run("--out", str(tmp_path / "r"), "smoke").stdout)["gpu_tests"]
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_stage.py").write_text(
        "import time\n\nimport pytest\n\n\n@pytest.mark.gpu\ndef test_quick():\n    pass\n\n\n"
        "@pytest.mark.gpu\ndef test_hung():\n    time.sleep(60)\n")
    (tmp_path / "r" / "smoke").mkdir(parents=True)
    # 8 s: pytest starts slowly under load
    command = re.sub(r"^(timeout --foreground -s INT -k )\d+ \d+ ", r"\g<1>5 8 ", tests)
    assert command != tests
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 124, done.stdout[-2000:] + done.stderr[-2000:]
    report = (tmp_path / "r" / "smoke" / "gpu_tests.xml").read_text()
    assert 'name="test_quick"' in report and 'tests="1"' in report
    assert "tests/test_stage.py::test_quick PASSED" in done.stdout and "tests/test_stage.py::test_hung" in done.stdout
    assert "slowest durations" in done.stdout and "KeyboardInterrupt" in done.stdout


def test_dry_run_writes_nothing(tmp_path):
    subprocess.run(["bash", str(SUITE), "--dry-run", "--out", str(tmp_path / "r"), "smoke"], cwd=ROOT, check=True,
                   capture_output=True, env={"PATH": "/usr/bin:/bin", "EVA_TMP": str(tmp_path / "t")})
    assert not (tmp_path / "r").exists() and not (tmp_path / "t").exists()


def test_dry_run_names_missing_reference_clips(tmp_path):
    missing = _dry_run("smoke", EVA_SHARED_DIR=str(tmp_path / "none"))
    assert f"WARNING: no reference clips at {tmp_path / 'none'}/data/real" in missing.stderr
    (tmp_path / "shared" / "data" / "real").mkdir(parents=True)
    assert "WARNING" not in _dry_run("smoke", EVA_SHARED_DIR=str(tmp_path / "shared")).stderr


def test_each_plan_names_its_result_files_and_more_than_eight_are_warned_about():
    """Smoke and bench together write 8 files (a remote machine's results come back in one small copy). Every
    file a stage's command writes into the results folder is among its plan's listed files, and the other way
    round (the first listed is the plan's log, which the suite writes)."""
    done = _dry_run("smoke", "bench", "decode", "loader", "train", "eval")
    listing = done.stdout
    plans = {m[1]: (m[2].split(), int(m[3])) for m in re.finditer(
        r"^=== plan (\S+): .*; results in results/\1/: (.*) \((\d+) files\)$", listing, re.M)}
    assert {plan: count for plan, (_, count) in plans.items()} == {"smoke": 5, "bench": 3, "decode": 5, "loader": 3,
                                                                   "train": 3, "eval": 3}
    for plan, (files, count) in plans.items():
        assert len(files) == count and files[0] == f"{plan}.log"
        section = listing.split(f"=== plan {plan}:")[1].split("=== plan")[0]
        written = set(re.findall(rf"results/{plan}/([\w.]+)", section.split("\n", 1)[1]))
        assert written == set(files[1:]), plan
    assert "WARNING: smoke bench decode loader train eval write 22 result files" in done.stderr
    assert "result files" not in _dry_run("smoke", "bench").stderr
    assert "write 10 result files" in _dry_run("smoke", "decode").stderr


def test_bench_and_full_stages_are_listed_with_boxes():
    stages = _stages(_dry_run("bench", "decode", "loader", "train", "eval").stdout)
    assert {"decode_sweep", "train_step", "decode", "loader", "train", "eval"} == set(stages)
    assert all(box == 600 for name, (box, _) in stages.items() if name in ("decode", "loader", "train", "eval"))
    # the three thread counts in one process: the clips are generated (or found) and read once
    assert "--threads 4,8,16 " in stages["decode_sweep"][1] and "--json results/bench/decode_sweep.json" in (
        stages["decode_sweep"][1])


def test_unknown_plan_is_refused():
    done = subprocess.run(["bash", str(SUITE), "--dry-run", "everything"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: unknown plan or stage: everything")
    done = subprocess.run(["bash", str(SUITE), "--dry-run"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: name a plan or stage: ") \
        and done.stderr.count("\n") == 1, done.stderr


def test_a_run_on_a_machine_without_a_gpu_is_refused_at_once(tmp_path):
    """Without a GPU the smoke plan ran for two minutes: each stage failed after its start-up, and the GPU tests'
    stage said "passed" with every test skipped. Now one line says there is no GPU, before anything runs."""
    if glob.glob("/dev/nvidia[0-9]*") or shutil.which("nvidia-smi"):
        pytest.skip("this machine may have an NVIDIA GPU: the refusal is for machines without one")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": "false", "EVA_TMP": str(tmp_path / "t")}
    done = subprocess.run(["bash", str(SUITE), "--out", str(tmp_path / "r"), "smoke", "bench"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        "error: no NVIDIA GPU on this machine (no /dev/nvidia0, and nvidia-smi lists none): the suite checks and "
        "measures a GPU; --dry-run lists what it would run, --without-gpu runs it here anyway (its GPU stages fail "
        "or skip)"]
    assert not (tmp_path / "r").exists() and not (tmp_path / "t").exists()
    rehearsal = subprocess.run(["bash", str(SUITE), "--without-gpu", "--out", str(tmp_path / "r"), "bench"],
                               cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert rehearsal.returncode == 1 and "FAILED: decode_sweep failed with exit code 1" in rehearsal.stdout


def test_a_gpu_that_nvidia_smi_lists_is_not_refused_when_more_lines_follow(tmp_path):
    """Without a device node the suite asks `nvidia-smi -L`. `grep -q` stopped reading at the first GPU line and
    nvidia-smi, still writing (a MIG device's line after it), died of SIGPIPE, which pipefail made the pipeline's
    exit status: the machine's GPU was called missing and the whole run refused with exit code 2."""
    if glob.glob("/dev/nvidia[0-9]*"):
        pytest.skip("this machine has a device node: nvidia-smi is not asked")
    (tmp_path / "bin").mkdir()
    smi = tmp_path / "bin" / "nvidia-smi"  # a stand-in that writes its list in two parts, as a MIG machine's may
    smi.write_text('#!/bin/sh\necho "GPU 0: NVIDIA H200 (UUID: GPU-0)"\nsleep 1\n'
                   'echo "  MIG 1g.18gb     Device  0: (UUID: MIG-0)"\n')
    smi.chmod(0o755)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "PYTHON": "false", "EVA_TMP": str(tmp_path / "t")}
    done = subprocess.run(["bash", str(SUITE), "--out", str(tmp_path / "r"), "bench"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1 and "no NVIDIA GPU" not in done.stderr, done.stdout + done.stderr
    assert "FAILED: decode_sweep failed with exit code 1" in done.stdout  # PYTHON=false: the stages ran, and failed


def test_out_without_a_folder_is_one_line_and_exit_2():
    """`--out` with no folder after it (or an empty one) ended with bash's "line 28: 2: --out needs a folder" and
    exit code 1, which a caller reads as a failed stage, not a bad command line."""
    for args, got in ((["smoke", "--out"], ""), (["--out", "", "smoke"], ""), (["--out", "--dry-run", "smoke"],
                                                                             "--dry-run")):
        done = subprocess.run(["bash", str(SUITE), "--dry-run", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2 and done.stdout == "", (args, done.stdout, done.stderr)
        assert done.stderr == f"error: --out needs a folder (--out DIR), got '{got}'\n", (args, done.stderr)


def test_a_results_folder_that_cannot_be_made_is_refused_before_any_stage(tmp_path):
    """`--out` naming a file: every stage ran to its end with no log to write ("tee: ...: Not a directory") and
    no folder for its results. Now one line names the folder before the first stage."""
    a_file = tmp_path / "a file"
    a_file.write_text("x")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": "false", "EVA_TMP": str(tmp_path / "t")}
    done = subprocess.run(["bash", str(SUITE), "--without-gpu", "--out", str(a_file), "bench"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    assert done.stderr == (f"error: --out {a_file}: the results folder cannot be made or written there; give a "
                           "folder this user can write (default results/)\n")
    assert a_file.read_text() == "x" and not (tmp_path / "t").exists()


def test_a_relative_out_is_the_callers_folder(tmp_path):
    """Run from another folder, `--out r` made r/ under the repository root while the listing said "results in
    r/bench/"; now r/ is the caller's, as for any command, and a leading ~ (left by the shell in --out=~/x) is the
    home folder. The same for a relative EVA_TMP."""
    env = {"PATH": "/usr/bin:/bin", "PYTHON": "false", "EVA_TMP": str(tmp_path / "t"), "HOME": str(tmp_path / "home")}
    here = tmp_path / "here"
    here.mkdir()
    done = subprocess.run(["bash", str(SUITE), "--without-gpu", "--out", "r", "bench"], cwd=here,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1, done.stdout + done.stderr  # PYTHON=false: every stage fails at once
    assert f"results in {here}/r/bench/: bench.log" in done.stdout
    assert (here / "r" / "bench" / "bench.log").is_file() and not (ROOT / "r").exists()
    listing = subprocess.run(["bash", str(SUITE), "--dry-run", "--out=~/x", "bench"], cwd=here, capture_output=True,
                             text=True, timeout=60, env=env).stdout
    assert f"results in {tmp_path}/home/x/bench/: bench.log" in listing
    assert "results in results/bench/: bench.log" in _dry_run("bench").stdout  # the default: the repository's
    # and a relative EVA_TMP, where the clips are generated, is the caller's too (it was the repository root's)
    listing = subprocess.run(["bash", str(SUITE), "--dry-run", "bench"], cwd=here, capture_output=True, text=True,
                             timeout=60, env={**env, "EVA_TMP": "scratch"}).stdout
    assert f" --data-dir {here}/scratch/clips_b " in listing, listing


def test_folders_with_spaces_reach_each_stage_as_one_argument(tmp_path):
    """`--out "my results"` (or an EVA_TMP with a space) was pasted unquoted into the stages' commands: the benchmark
    got `--json .../my` and a stray `results/bench/...json`, refused them, and every stage failed. So did an
    interpreter ($PYTHON) in a folder with a space: "No such file or directory", exit code 127, for every stage."""
    argv_file = tmp_path / "argv.txt"
    (tmp_path / "my bin").mkdir()
    fake_python = tmp_path / "my bin" / "python"
    fake_python.write_text(f"#!/bin/bash\nprintf '%s\\n' \"$@\" >> '{argv_file}'\nexit 1\n")
    fake_python.chmod(0o755)
    out, tmp = tmp_path / "my results", tmp_path / "my tmp"
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(fake_python), "EVA_TMP": str(tmp)}
    done = subprocess.run(["bash", str(SUITE), "--without-gpu", "--out", str(out), "bench"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1 and (out / "bench" / "bench.log").is_file(), done.stdout + done.stderr
    argv = argv_file.read_text().splitlines()
    assert f"{out}/bench/decode_sweep.json" in argv and f"{out}/bench/train_step.json" in argv, argv
    assert f"{tmp}/clips_b" in argv, argv


def test_help_shows_the_whole_header():
    """--help printed the header's lines but its last, where the reference clips are read from. Run by a path
    relative to another folder than the repository root, it printed nothing ("sed: can't read ...") and exit code 0:
    the script reads its header after moving to the root, where that path leads nowhere."""
    header = SUITE.read_text().split("\nset -uo pipefail")[0].splitlines()[1:]
    for cwd in (ROOT, SUITE.parent):  # `bash gpu_suite.sh --help` from benchmarks/
        done = subprocess.run(["bash", os.path.relpath(SUITE, cwd), "--help"], cwd=cwd, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0 and done.stdout.splitlines() == header, (cwd, done.stderr)
        assert "EVA_SHARED_DIR" in done.stdout and done.stderr == ""


def _python_invocations(listing: str) -> list[list[str]]:
    """Each python command of the listing as argv after the interpreter (split at shell separators)."""
    found = []
    for _, (_, command) in _stages(listing).items():
        for part in re.split(r"&&|\|\||;|\bdo\b|\bdone\b", command):
            words = shlex.split(part.replace("$t", "4").replace("$", ""))
            if sys.executable in words:  # after any wrapper (taskset, timeout) and its arguments
                found.append(words[words.index(sys.executable) + 1:])
    return found


def _pytest_parses(argv: list[str], tests: str) -> subprocess.CompletedProcess:
    """pytest's own parser (its plugins' flags included) on ``argv`` (after ``-m pytest``), the test folder replaced
    by ``tests``: exit code 5 (no tests collected) when it accepts them, 4 when it does not."""
    argv = [tests if word == "tests" else word for word in argv]
    return subprocess.run([sys.executable, "-m", "pytest", *argv, "--collect-only", "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=child_env())


def test_every_stage_command_is_accepted_by_the_parser_of_what_it_runs(tmp_path, monkeypatch):
    """Each command line the stages run, taken from the dry run, parsed by the parser of the script it runs: the
    benchmarks' and tools' (as README's commands are, tests/test_readme.py), train.py's with its --opts loaded into
    the config, and pytest's. A flag, value, choice or config key a script lacks fails its stage on the GPU machine,
    where nothing can be fixed during the visit."""
    import train
    from configs import load_config
    from tests.test_readme import _main_until_parsed

    monkeypatch.chdir(ROOT)  # the stages run from the repository root
    listing = _dry_run("--out", str(tmp_path / "r"), "smoke", "bench", "decode", "loader", "train", "eval",
                       EVA_TMP=str(tmp_path / "t")).stdout
    invocations = _python_invocations(listing)
    ran = []
    for argv in invocations:
        if argv[:2] == ["-m", "pytest"]:
            (tmp_path / "no_tests").mkdir(exist_ok=True)
            done = _pytest_parses(argv[2:], str(tmp_path / "no_tests"))
            assert done.returncode == 5, (argv, done.stdout[-2000:] + done.stderr[-2000:])
            misspelt = _pytest_parses([*argv[2:], "--timeot", "30"], str(tmp_path / "no_tests"))
            assert misspelt.returncode == 4  # the check above can fail
        elif argv[0] == "train.py":
            args = train.parse_args(argv[1:])
            load_config(args.cfg, args.opts, flags=train.config_overrides(args)[0])  # every key and value is real
        else:
            module, rest = (argv[1], argv[2:]) if argv[0] == "-m" else (argv[0][:-3].replace("/", "."), argv[1:])
            with monkeypatch.context() as patched:  # its parse_args stopped: train.py's above and below parse
                _main_until_parsed(shlex.join([module, *rest]), patched)
        ran.append(argv[1] if argv[0] == "-m" else argv[0])
    assert sorted(set(ran)) == ["benchmarks.decode_throughput", "benchmarks.eval_throughput", "benchmarks.gpu_env",
                                "benchmarks.loader_throughput", "benchmarks.nvdec_parity",
                                "benchmarks.train_throughput", "pytest", "tools/make_synthetic_dataset.py",
                                "tools/prepare_kinetics.py", "train.py"]
    assert len(ran) == 14, ran  # every command of every stage: decode runs three, demo and train two each


def test_every_benchmark_in_the_suite_takes_a_median_of_at_least_three_measurements():
    """The bench plan's training step was timed twice: a 'median' of two is their mean, and one disturbed
    measurement moves it by half its error, with nothing to tell it from the other."""
    import importlib

    listing = _dry_run("smoke", "bench", "decode", "loader", "train", "eval").stdout
    checked = []
    for argv in _python_invocations(listing):
        if argv[0] != "-m" or not argv[1].startswith("benchmarks."):
            continue
        module = importlib.import_module(argv[1])
        if hasattr(module, "parse_args"):
            args = module.parse_args(argv[2:])
            assert args.repeats >= 3, (argv[1], args.repeats)
            checked.append(argv[1])
    assert "benchmarks.train_throughput" in checked and "benchmarks.decode_throughput" in checked


def test_the_decode_stage_passes_over_its_clips_few_enough_times_to_fit_its_box():
    """Each half of the decode stage is every decoder and mode over 32 clips of 250 frames; at the default five
    repeats (six passes with the warm-up) one half took 10 min on the 2-core CPU machine, 160 s of it (by their
    rates) in the single-threaded PyAV rows that more cores do not speed up: two halves did not fit the stage's
    10 minutes."""
    from benchmarks import decode_throughput

    _, command = _stages(_dry_run("decode").stdout)["decode"]
    halves = [shlex.split(part) for part in _commands(command) if "benchmarks.decode_throughput" in part]
    assert len(halves) == 2
    for argv in halves:
        args = decode_throughput.parse_args(argv[argv.index("benchmarks.decode_throughput") + 1:])
        assert args.warmup + args.repeats <= 4 and args.repeats >= 3, argv


def _commands(stage_command: str) -> list[str]:
    """The commands of a stage in order, without the exit-code bookkeeping between them (``rc=$?``, ``exit $rc``)."""
    parts = re.split(r" && | \|\| |; ", stage_command)
    return [part for part in parts if not re.fullmatch(r"rc=\$\?|exit \$rc", part)]


@pytest.mark.slow
def test_the_decode_stage_benchmarks_the_clips_the_re_encoder_wrote(tmp_path):
    """The stage's middle commands run for real on two small clips laid out as the benchmarks write them: the list
    its second benchmark reads must exist and name re-encoded clips that decode (it named a list that was never
    there, so the re-encoded half of the comparison never ran)."""
    from benchmarks.inputs import make_synthetic_clips

    _, command = _stages(_dry_run("decode", EVA_TMP=str(tmp_path)).stdout)["decode"]
    first, *middle, last = _commands(command)
    assert "--num-clips 32" in first and "--num-clips 32" in last  # the same clips in both halves
    make_synthetic_clips(str(tmp_path / "clips_b" / "h264"), 2, size=(64, 48), num_frames=24, gop=8)
    for part in middle:  # the re-encoder and the list's copy, as the stage runs them
        subprocess.run(["bash", "-c", part], cwd=ROOT, check=True, timeout=300, env=child_env(), capture_output=True)
    listed = shlex.split(last)[shlex.split(last).index("--list") + 1]
    names = [line.split()[0] for line in open(listed).read().splitlines()]
    assert len(names) == 2 and listed.startswith(str(tmp_path / "clips_reencoded"))
    done = subprocess.run([sys.executable, "-m", "benchmarks.decode_throughput", "--list", listed,
                           "--decoders", "pyav_np", "--modes", "tsn", "--batch", "2", "--repeats", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=child_env())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pyav_np" in done.stdout


@pytest.mark.parametrize("stage, fails, then", [("decode", "decode_bframes.json", "decode_reencoded.json"),
                                                ("train", "/train.json", "train_loader.json")])
def test_a_stage_measures_its_second_half_when_the_first_fails(tmp_path, stage, fails, then):
    """The decode stage's first benchmark exits 1 after its report when decord, its baseline, is missing (as on a
    GPU machine without the wheel): its `&&` skipped the re-encoded half. The train stage's loader-fed step was
    lost the same way to any failure of the attention/checkpointing sweep. Each half now runs, and the stage still
    fails with the first half's exit code."""
    calls = tmp_path / "calls"
    python = tmp_path / "python"  # records each command; the first half's benchmark fails
    python.write_text(f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in *{fails}*) exit 1 ;; esac\n')
    python.chmod(0o755)
    tmp = tmp_path / "t"
    (tmp / "clips_b" / "h264").mkdir(parents=True)  # what the decode stage copies between its halves
    (tmp / "clips_b" / "h264" / "list.txt").write_text("clip000.mp4 0\n")
    (tmp / "clips_reencoded" / "h264").mkdir(parents=True)
    _, command = _stages(_dry_run(stage, EVA_TMP=str(tmp), PYTHON=str(python)).stdout)[stage]
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    ran = calls.read_text()
    assert fails in ran and then in ran, (command, ran)
    assert done.returncode == 1, done.stderr


def test_env_stage_names_every_runtime_package_with_its_installed_version(capsys):
    import importlib.metadata

    import torch

    from benchmarks import gpu_env
    from tests.test_dependencies import declared_distributions, distributions_providing

    # every core dependency of pyproject.toml is among the packages the env stage checks
    checked = set().union(*(distributions_providing(name) for name in gpu_env.RUNTIME_IMPORTS))
    assert declared_distributions(core_only=True) <= checked, declared_distributions(core_only=True) - checked

    rc = gpu_env.main([])
    out = capsys.readouterr().out
    versions = dict(re.findall(r"^(\S+)\s+(\S+)$", out, re.M))
    assert versions["yacs"] == importlib.metadata.version("yacs")  # no __version__: read from its metadata
    assert versions["pynvml"] == importlib.metadata.version("nvidia-ml-py")
    assert versions["torch"] == torch.__version__
    assert set(gpu_env.RUNTIME_IMPORTS) <= set(versions)
    # and what the gpu_tests stage runs with (pytest's --timeout comes from pytest-timeout)
    assert versions["pytest_timeout"] == importlib.metadata.version("pytest-timeout")
    assert versions["pytest"] == importlib.metadata.version("pytest")
    assert (rc == 0) == ("PROBLEM" not in out)
    # the GPU facts come first: a stage cut short by its time box while importing packages still has them
    assert out.index("driver CUDA ") < out.index("libnvcuvid ") < out.index("\ntimm ")
    if not torch.cuda.is_available():
        assert rc == 1 and "PROBLEM: missing: CUDA" in out


def test_env_stage_walks_the_installed_distributions_once_for_the_versions(capsys, monkeypatch):
    """Each package without ``__version__`` (yacs, pynvml, pytest_timeout) had every installed distribution's files
    walked again to find its version, and DALI's CUDA was looked up twice: 0.3 to 1 s a walk, in a 20 s box that a
    busy 2-core machine overran. One walk finds the versions, one DALI's CUDA; the versions are the same."""
    import importlib
    import importlib.metadata

    from benchmarks import gpu_env

    for name in gpu_env.RUNTIME_IMPORTS + gpu_env.SUITE_IMPORTS:  # already imported: their imports walk nothing here
        importlib.import_module(name)
    walks = []
    every = importlib.metadata.distributions

    def distributions(**kwargs):
        walks.append(kwargs)
        return every(**kwargs)

    monkeypatch.setattr(importlib.metadata, "distributions", distributions)
    gpu_env.main([])
    versions = dict(re.findall(r"^(\S+)\s+(\S+)$", capsys.readouterr().out, re.M))
    assert versions["yacs"] == importlib.metadata.version("yacs")
    assert versions["pytest_timeout"] == importlib.metadata.version("pytest-timeout")
    assert len(walks) == 2, walks


def test_env_stage_names_a_missing_pytest_timeout(capsys, monkeypatch):
    import importlib

    from benchmarks import gpu_env

    real_import = importlib.import_module

    def without_pytest_timeout(name, *args):
        if name == "pytest_timeout":
            raise ModuleNotFoundError("No module named 'pytest_timeout'")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_pytest_timeout)
    assert gpu_env.main([]) == 1
    assert "PROBLEM: missing: pytest_timeout (ModuleNotFoundError" in capsys.readouterr().out


def test_env_stage_finds_timm_without_importing_it_and_names_it_missing(capsys, monkeypatch):
    """timm's import (torchvision's models, torch._dynamo) was half of the env stage's CPU time, which a busy 2-core
    machine stretched past its box: the stage finds timm and reads its version without importing it (in a process
    of its own here, as the stage runs), and a timm that is not there is still a problem."""
    import importlib.metadata
    import importlib.util

    from benchmarks import gpu_env

    probe = ("import sys\nfrom benchmarks import gpu_env\ngpu_env.main([])\n"
             "print('imported:', *sorted(m for m in ('timm', 'torchvision') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=child_env())
    assert done.stdout.splitlines()[-1] == "imported:", done.stdout + done.stderr
    versions = dict(re.findall(r"^(\S+)\s+(\S+)$", done.stdout, re.M))
    assert versions["timm"] == importlib.metadata.version("timm")

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real_find_spec(
        name, *a))
    assert gpu_env.main([]) == 1
    assert "PROBLEM: missing: timm (ModuleNotFoundError: No module named 'timm')" in capsys.readouterr().out


def test_env_stage_names_a_timm_that_is_installed_but_fails_on_import(tmp_path):
    """The stage finds timm without importing it: a timm installed but failing on import (built for another torch)
    passed the stage and failed every later one. Its import runs in a process of its own, beside the other checks,
    and its error's last line is a problem."""
    fake = tmp_path / "site"
    (fake / "timm").mkdir(parents=True)
    (fake / "timm" / "__init__.py").write_text(
        "raise ImportError('timm 9.9.9 needs torch 9, found another: reinstall timm for this torch')\n")
    info = fake / "timm-9.9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: timm\nVersion: 9.9.9\n")
    (info / "top_level.txt").write_text("timm\n")
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(fake), env["PYTHONPATH"]])
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_env"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"^timm\s+9\.9\.9$", done.stdout, re.M), done.stdout  # found, as before: the fake one
    assert ("PROBLEM: timm is installed but its import fails: ImportError: timm 9.9.9 needs torch 9, found another: "
            "reinstall timm for this torch\n") in done.stdout, done.stdout


def test_env_stage_says_whether_the_original_pipelines_decoder_is_there(capsys, monkeypatch):
    """decord is no problem for the smoke and bench plans, but the full loader and decode stages fail without it:
    the environment line says which it is before those stages are sent."""
    import importlib
    import importlib.metadata
    import importlib.util

    from benchmarks import gpu_env

    real_import = importlib.import_module
    if importlib.util.find_spec("decord"):  # x86_64 only
        gpu_env.main([])
        version = re.escape(importlib.metadata.version("decord"))
        assert re.search(rf"^decord\s+{version}$", capsys.readouterr().out, re.M)

    def without_decord(name, *args):
        if name == "decord":
            raise ModuleNotFoundError("No module named 'decord'")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_decord)
    gpu_env.main([])
    out = capsys.readouterr().out
    assert "decord          not installed (the loader and decode stages' original-pipeline baseline)" in out
    assert "PROBLEM: missing: decord" not in out


def test_failing_stages_do_not_stop_the_next_and_missing_reference_clips_are_named(tmp_path):
    """A real (not dry) run where every stage fails at once (the interpreter is `false`): each stage is reported as
    failed and the next still runs, the exit code is 1, the log stays in the results folder, and the missing
    reference folder is named up front. An earlier run's results (its demo's OUTPUT, the results folder's files)
    are not passed off as this run's."""
    env = {"PATH": "/usr/bin:/bin", "PYTHON": "false", "EVA_TMP": str(tmp_path / "t"),
           "EVA_SHARED_DIR": str(tmp_path / "no_reference")}
    earlier = [tmp_path / "t" / "demo" / "summary.json", tmp_path / "t" / "demo" / "metrics.jsonl",
               *(tmp_path / "r" / "smoke" / name for name in ("demo_summary.json", "nvdec_parity.json", "smoke.log"))]
    for path in earlier:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"from": "an earlier run"}\n')
    done = subprocess.run(["bash", str(SUITE), "--without-gpu", "--out", str(tmp_path / "r"), "smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"no reference clips at {tmp_path / 'no_reference'}/data/real" in done.stderr
    failed = re.findall(r"FAILED: (\S+) failed with exit code 1 after \d+ s", done.stdout)
    assert failed == ["env", "parity", "gpu_tests", "demo"]
    log = (tmp_path / "r" / "smoke" / "smoke.log").read_text()
    assert [ln.split(":")[0] for ln in log.splitlines() if ln.startswith("--- stage ")] == [
        f"--- stage {s}" for s in failed]
    assert "an earlier run" not in log
    assert not any(path.exists() for path in earlier[:4]), [p for p in earlier[:4] if p.exists()]


def test_gpu_tests_stage_reports_pytest_counts(tmp_path):
    """A GPU test that skipped checked nothing: the stage's line carries pytest's own count. Here the real pytest
    runs the gpu-marked tests (on a CPU machine every one skips); the other stages' interpreter fails at once."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\n[ "$2" = pytest ] && exec {sys.executable} "$@"\nexit 1\n')
    python.chmod(0o755)
    env = child_env(PYTHON=str(python), EVA_TMP=str(tmp_path / "t"))  # pytest imports the project and DALI
    done = subprocess.run(["bash", str(SUITE), "--without-gpu", "--out", str(tmp_path / "r"), "smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
    counts = re.search(r"--- stage gpu_tests .*\n    (passed in|FAILED: .* after) \d+ s \((.*) in [0-9.]+s\)",
                       done.stdout)
    assert counts, done.stdout
    import torch

    if not torch.cuda.is_available():
        assert re.fullmatch(r"\d+ skipped, \d+ deselected", counts.group(2)), counts.group(2)


def test_the_gpu_stage_runs_the_quick_checks_first():
    """A time box cut short loses the tests at the end: with -m gpu the driver, NVML and model checks come first,
    then the decoding graphs, then the rest (alphabetical order put the model and driver checks near the end)."""
    from tests.conftest import GPU_TEST_ORDER

    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "tests", "--collect-only", "-q",
                           "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=child_env())
    files = [line.split("::")[0].split("/")[-1] for line in done.stdout.splitlines() if "::" in line]
    order = list(dict.fromkeys(files))  # each file once, in the order its tests run
    assert order[:len(GPU_TEST_ORDER)] == list(GPU_TEST_ORDER), order
    assert len(order) > len(GPU_TEST_ORDER) and files == sorted(files, key=order.index)  # files not interleaved


def test_a_stage_out_of_time_ends_when_its_processes_have_ended(tmp_path):
    """The box's SIGTERM reaches the stage's whole process group, but timeout returned once the stage's shell was
    gone: a process still handling the signal (training saving its checkpoint) ran on into the next stage and wrote
    into the log after the stage's verdict. Here the env stage's interpreter leaves a child that takes 4 s over its
    SIGTERM: its line is in the log before the verdict, and it has ended when the suite returns."""
    python = tmp_path / "python"
    python.write_text('#!/bin/bash\n[ "$2" = benchmarks.gpu_env ] || exit 1\n'
                      f"( trap 'sleep 4; echo late stage output; touch {tmp_path / 'late'}; exit 0' TERM\n"
                      "  sleep 100 & wait ) &\nsleep 100\n")
    python.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(python), "EVA_TMP": str(tmp_path / "t")}
    done = subprocess.run(["bash", str(SUITE), "--without-gpu", "--out", str(tmp_path / "r"), "smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)
    assert (tmp_path / "late").exists(), done.stdout + done.stderr
    assert re.search(r"FAILED: env ran out of time after \d+ s \(time box 20 s\)", done.stdout), done.stdout
    log = (tmp_path / "r" / "smoke" / "smoke.log").read_text().splitlines()
    verdict = next(i for i, line in enumerate(log) if "FAILED: env" in line)
    assert log.index("late stage output") < verdict < log.index(next(ln for ln in log if "stage parity" in ln))


def test_flags_take_either_spelling_and_an_unknown_option_is_named():
    """Every command takes `_` and `-` alike inside a long flag and `--flag=value` (README): the suite took
    `--dry_run` for a plan ("unknown plan or stage: --dry_run") and `--out=DIR` too; a misspelt option was called a
    plan."""
    listing = _dry_run("--out=elsewhere", "bench").stdout
    assert "results in elsewhere/bench/: " in listing
    done = subprocess.run(["bash", str(SUITE), "--dry_run", "--without_gpu", "bench"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and "=== plan bench: " in done.stdout, done.stderr
    done = subprocess.run(["bash", str(SUITE), "--dryrun", "smoke"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stdout == "" and done.stderr == (
        "error: unknown option --dryrun (options: --dry-run --without-gpu --out DIR; see --help)\n")


def test_the_demo_box_reaches_training_started_by_the_inner_timeout_and_the_metrics_come_back(tmp_path):
    """The demo's inner timeout made a process group of its own: when the box ended first (a slow dataset leaves
    training at least 5 s), its SIGTERM and its end-of-stage check missed training, which ran on after the stage's
    verdict, and the stage's shell died before it copied the metrics. Here the suite's copy has a 4 s demo box
    (training's own limit is then 5 s): the stand-in training reports the box's SIGTERM before the verdict, and
    what it wrote reaches the results folder."""
    suite = tmp_path / "benchmarks" / "gpu_suite.sh"
    suite.parent.mkdir()
    script = SUITE.read_text()
    assert script.count("demo) echo 60 ;;") == 1
    suite.write_text(script.replace("demo) echo 60 ;;", "demo) echo 4 ;;"))
    demo = tmp_path / "t" / "demo"
    python = tmp_path / "python"  # the dataset is made at once; training runs until a SIGTERM, then saves
    python.write_text('#!/bin/bash\ncase $1 in tools/make_synthetic_dataset.py) exit 0 ;; train.py) ;; *) exit 1 ;; '
                      f'esac\nmkdir -p {demo}\necho \'{{"step": 1}}\' > {demo}/metrics.jsonl\n'
                      f"trap 'kill $!; echo training stopped; echo {{}} > {demo}/summary.json; exit 4' TERM\n"
                      "sleep 100 & wait\n")
    python.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(python), "EVA_TMP": str(tmp_path / "t")}
    done = subprocess.run(["bash", str(suite), "--without-gpu", "--out", str(tmp_path / "r"), "smoke"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert re.search(r"FAILED: demo ran out of time after \d+ s \(time box 4 s\)", done.stdout), done.stdout
    log = (tmp_path / "r" / "smoke" / "smoke.log").read_text().splitlines()
    verdict = next(i for i, line in enumerate(log) if "FAILED: demo" in line)
    assert "training stopped" in log[:verdict], log
    assert (tmp_path / "r" / "smoke" / "demo_metrics.jsonl").read_text() == '{"step": 1}\n'
    assert (tmp_path / "r" / "smoke" / "demo_summary.json").exists()


def test_a_benchmark_killed_mid_write_leaves_no_temporary_in_the_results(tmp_path):
    """A benchmark killed by SIGKILL while writing its JSON left the hidden temporary of the atomic write beside it,
    a file more than the plan lists (8 at most for smoke and bench). Each stand-in benchmark here starts its
    write and is killed; an earlier run's temporary is there too. The folder ends with the plan's log alone."""
    python = tmp_path / "python"
    python.write_text('#!/bin/bash\nwhile [ $# -gt 0 ]; do [ "$1" = --json ] && json=$2; shift; done\n'
                      'touch "$(dirname "$json")/.$(basename "$json").x1y2z3.tmp"\nkill -KILL $$\n')
    python.chmod(0o755)
    results = tmp_path / "r" / "bench"
    results.mkdir(parents=True)
    (results / ".train_step.json.old123.tmp").write_text("an earlier run's")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(python), "EVA_TMP": str(tmp_path / "t")}
    done = subprocess.run(["bash", str(SUITE), "--without-gpu", "--out", str(tmp_path / "r"), "bench"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=env)
    assert re.findall(r"FAILED: (\S+) ", done.stdout) == ["decode_sweep", "train_step"], done.stdout
    assert sorted(os.listdir(results)) == ["bench.log"]


def test_a_stage_killed_before_its_box_ended_is_reported_killed_not_out_of_time(tmp_path):
    """A stage ended by SIGKILL (the out-of-memory killer, a kill -9) exits with 137, which the suite took for its
    own box's SIGKILL: "ran out of time after 0 s". Here the env stage's interpreter kills itself at once; the other
    stages' fails."""
    python = tmp_path / "python"
    python.write_text('#!/bin/bash\n[ "$2" = benchmarks.gpu_env ] && kill -KILL $$\nexit 1\n')
    python.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(python), "EVA_TMP": str(tmp_path / "t")}
    done = subprocess.run(["bash", str(SUITE), "--without-gpu", "--out", str(tmp_path / "r"), "smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    verdicts = re.findall(r"^    FAILED: (\S+) (.*) \(see ", done.stdout, re.M)
    assert verdicts[0][0] == "env" and re.fullmatch(
        r"killed \(SIGKILL, exit 137; out of memory\?\) after \d+ s \(time box \d+ s\)", verdicts[0][1]), verdicts
    assert [why.startswith("failed with exit code 1 ") for _, why in verdicts[1:]] == [True] * 3, verdicts
    assert "ran out of time" not in (tmp_path / "r" / "smoke" / "smoke.log").read_text()


def test_a_stage_killed_by_its_own_box_still_ran_out_of_time(tmp_path):
    """timeout sends SIGKILL 10 s after the box's SIGTERM to a stage that ignores it: exit 137 then is a lack of
    time. The suite's copy here has a 1 s env box, and the env stage's interpreter ignores SIGTERM."""
    suite = tmp_path / "benchmarks" / "gpu_suite.sh"
    suite.parent.mkdir()
    script, count = re.subn(r"\benv\) echo \d+ ;;", "env) echo 1 ;;", SUITE.read_text())
    assert count == 1
    suite.write_text(script)
    python = tmp_path / "python"
    python.write_text("#!/bin/bash\n[ \"$2\" = benchmarks.gpu_env ] || exit 1\ntrap '' TERM\nsleep 60\n")
    python.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(python), "EVA_TMP": str(tmp_path / "t")}
    done = subprocess.run(["bash", str(suite), "--without-gpu", "--out", str(tmp_path / "r"), "smoke"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert re.search(r"FAILED: env ran out of time after \d+ s \(time box 1 s\)", done.stdout), done.stdout
    assert "SIGKILL" not in done.stdout


@pytest.mark.skipif(shutil.which("flock", path="/usr/bin:/bin") is None, reason="no flock on this machine")
@pytest.mark.parametrize("busy", ["out", "tmp"])
def test_a_second_run_on_the_same_results_or_eva_tmp_is_refused_and_leaves_the_first_runs_files(tmp_path, busy):
    """A second run started beside the first, on the same --out or EVA_TMP, removed the first's results and its
    demo's OUTPUT, and both wrote into one log. Here a process holds the folder's lock, as a running suite does:
    the new run is one line, exit code 2, and the files of the run in progress are as they were."""
    out, tmp = tmp_path / "r", tmp_path / "t"
    files = [out / "smoke" / "smoke.log", out / "smoke" / "nvdec_parity.json", tmp / "demo" / "summary.json"]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the run in progress\n")
    held = out if busy == "out" else tmp
    holder = subprocess.Popen(["flock", str(held), "sleep", "60"])  # waits out our own tries below
    try:
        env = {"PATH": "/usr/bin:/bin", "PYTHON": "false", "EVA_TMP": str(tmp),
               "EVA_SHARED_DIR": str(tmp_path / "no_reference")}  # its warning comes first
        for _ in range(200):  # the holder has taken the lock once a try of our own fails
            if subprocess.run(["flock", "-n", str(held), "true"]).returncode:
                break
            time.sleep(0.05)
        done = subprocess.run(["bash", str(SUITE), "--without-gpu", "--out", str(out), "smoke"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, env=env)
    finally:
        holder.kill()
        holder.wait()
    named = f"{out}" if busy == "out" else f"{tmp} (EVA_TMP)"
    assert done.returncode == 2 and done.stdout == "" and done.stderr.endswith(  # after any warning
        f"\nerror: another gpu_suite.sh run is using {named}; wait for it to end, or give this run a --out and an "
        "EVA_TMP of its own\n"), done.stdout + done.stderr
    assert all(path.read_text() == "the run in progress\n" for path in files)
