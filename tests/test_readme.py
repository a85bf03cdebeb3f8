"""README.md against the code: the train.py commands it quotes parse and load their configs, and its table of exit
codes is the one train.py writes to exit_status.json. A reader copies these as they are."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

import train
from configs import load_config
from engine.process_end import EXIT_MEANINGS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _block_commands() -> list[str]:
    """The train.py command lines of README's bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if not line.startswith("#") and re.search(r"\btrain\.py -", line):
                commands.append(line)
    return commands


def _inline_commands() -> list[str]:
    """``python train.py ...`` quoted inline in the prose (some wrap onto the next line)."""
    return [" ".join(c.split()) for c in re.findall(r"`(python train\.py -[^`]+)`", README)]


def _train_args(command: str) -> list[str]:
    words = shlex.split(command)
    return words[words.index("train.py") + 1:]


def test_readme_quotes_train_commands():
    # the Usage block (one process, torchrun, the original's launcher, --dry-run, --only_test), the SLURM script,
    # the published numbers and the commands in the prose
    assert len(_block_commands()) >= 9 and len(_inline_commands()) >= 3


@pytest.mark.parametrize("command", _block_commands())
def test_each_train_command_of_a_bash_block_parses_and_loads_its_config(command, monkeypatch):
    monkeypatch.chdir(ROOT)  # the recipes' paths are the checkout's
    args = train.parse_args(_train_args(command))
    cfg = load_config(args.cfg, args.opts, flags=train.config_overrides(args)[0])  # every key and value is real
    assert Path(args.cfg).is_file() and cfg.TEST.ONLY_TEST == args.only_test


@pytest.mark.parametrize("command", _inline_commands())
def test_each_train_command_in_the_prose_parses(command):
    args = train.parse_args(_train_args(command))
    assert (ROOT / args.cfg).is_file()


def test_the_list_forms_readme_gives_for_an_opts_value_load_as_a_list():
    """README's forms of a list of names after --opts, copied to a shell as written, load as that list (an
    unquoted "[h264, hevc]" is two words, the second refused where a key is expected)."""
    sentence = re.search(r"A list of names may be given bare\s*\((.*?)\);", README, re.S).group(1)
    forms = [" ".join(f.split()) for f in re.findall(r"`([^`]+)`", sentence)]
    assert len(forms) >= 3 and forms[0].startswith("--opts DATA.NVDEC_CODECS ")
    key = forms[0].split()[1]
    for form in forms:
        opts = shlex.split(form)[1:] if form.startswith("--opts ") else [key, *shlex.split(form)]
        codecs = load_config(str(ROOT / "configs" / "demo.yaml"), opts).DATA.NVDEC_CODECS
        assert codecs in (["h264"], ["h264", "hevc"]), form


def _exit_code_table() -> dict[int, str]:
    """README's exit codes: ``code -> meaning`` from the table whose header names exit_status.json's meaning."""
    header = README.index("| Code | `meaning` in `exit_status.json` |")
    rows = {}
    for line in README[header:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        code, meaning = (cell.strip() for cell in line.strip("|").split("|")[:2])
        rows[int(code)] = meaning
    return rows


def test_the_exit_code_table_is_what_runs_write():
    """A batch script reads exit_status.json's code and meaning: the README table lists exactly those."""
    assert _exit_code_table() == EXIT_MEANINGS


def test_the_lists_of_exit_codes_say_a_refused_start_is_2():
    """A MASTER_PORT in use and a rendezvous that timed out end with exit code 2 (one line each); neither the
    README's table nor train.py --help said so, and a batch script's author read 2 as a config to fix."""
    table = README[README.index("| Code | `meaning` in `exit_status.json` |"):]
    assert "a refused start" in next(line for line in table.splitlines() if line.startswith("| 2 |"))
    note = " ".join(re.search(r"\n\nA refused start is code 2 too: (.*?)\n\n", table, re.S).group(1).split())
    codes = " ".join(train.__doc__[train.__doc__.index("Exit codes:"):].split())
    help_2 = codes[codes.index("; 2 "):codes.index("; 3 ")]
    for name in ("MASTER_PORT", "EVA_RENDEZVOUS_TIMEOUT_S"):
        assert name in note and name in help_2



def test_a_run_refused_before_output_exists_writes_its_code_to_the_jobs_file_only(tmp_path, monkeypatch, capsys):
    """README: exit_status.json is not written before OUTPUT exists, but the job's own copy the SLURM script reads
    is, so the script exits with the run's 2 rather than 1."""
    from engine.process_end import EXIT_STATUS_ENV

    out, own = tmp_path / "out", tmp_path / "exit_status.7.json"
    monkeypatch.setenv(EXIT_STATUS_ENV, str(own))
    monkeypatch.delenv("RANK", raising=False)
    rc = train.main(["--cfg", str(ROOT / "configs" / "demo.yaml"), "--output", str(out), "--resume",
                     str(tmp_path / "gone.pth")])
    assert rc == 2 and f"--resume {tmp_path / 'gone.pth'}" in capsys.readouterr().err
    assert not out.exists()
    assert json.loads(own.read_text()) == {"exit_code": 2, "meaning": EXIT_MEANINGS[2]}


def _layout_block() -> list[str]:
    """The names README's layout of the demo's OUTPUT lists (epoch numbers as written)."""
    start = README.index("\noutput/demo/\n") + len("\noutput/demo/\n")
    block = README[start:README.index("```", start)]
    names = []
    for line in block.splitlines():
        # name(s), then at least two spaces, then the description
        names += line.strip().split("  ")[0].split()
    return names


def test_the_layout_of_output_is_what_a_run_writes(tmp_path_factory, tmp_path, monkeypatch):
    """A short run of the demo's config, its checkpoints every epoch and KEEP_LAST 2 as the demo's, writes the files
    README's layout names (checkpoints by their pattern), and nothing else; a second run adds earlier_runs/."""
    from tests.video_fixtures import synthetic_dataset

    data = synthetic_dataset(tmp_path_factory, "readme_layout", 2, 1, num_frames=8, size=(48, 32))
    out = tmp_path / "demo"
    args = ["--cfg", str(ROOT / "configs" / "demo.yaml"), "--opts", "DATA.ROOT", str(data), "DATA.TRAIN_FILE",
            str(data / "train.txt"), "DATA.VAL_FILE", str(data / "val.txt"), "DATA.LABEL_LIST",
            str(data / "labels.csv"), "DATA.INPUT_SIZE", "32", "DATA.NUM_FRAMES", "4", "DATA.TUBELET_SIZE", "2",
            "DATA.NUM_THREADS", "1", "DATA.NUM_WORKERS", "1", "DATA.INDEX_WORKERS", "1", "LOG.PROGRESS_BAR", "False",
            "TEST.BATCH_SIZE", "2", "TRAIN.BATCH_SIZE", "4", "TRAIN.EPOCHS", "3", "TRAIN.WARMUP_EPOCHS", "0",
            "SAVE_FREQ", "1", "OUTPUT", str(out)]
    assert train.main(args) == 0
    expected = {re.sub(r"_\d+\.pth$", "_*.pth", name.rstrip("/")) for name in _layout_block()}
    written = {re.sub(r"_\d+\.pth$", "_*.pth", p.name) for p in out.iterdir()}
    assert written == expected - {"earlier_runs/<date-time>"}
    assert sorted(p.name for p in out.glob("ckpt_*.pth")) == ["ckpt_epoch_2.pth", "ckpt_epoch_3.pth"]  # KEEP_LAST
    assert (out / "tensorboard").is_dir() and any((out / "tensorboard").iterdir())
    assert train.main(args) == 0  # the same command again: the demo starts over, setting the first run aside
    (moved,) = (out / "earlier_runs").iterdir()
    assert re.fullmatch(r"\d{8}-\d{6}", moved.name) and (moved / "summary.json").is_file()


# The short names README's prose gives a command before one of its flags (``verify_data.py --root``, ``predict
# --quiet``, ``lists --dataset ...``)
_COMMAND_NAMES = {"verify_data": "tools.verify_data", "predict": "tools.predict",
                  "nvdec_parity": "benchmarks.nvdec_parity", "lists": "tools.prepare_kinetics lists",
                  "extract_features": "tools.extract_features", "export_safetensors": "tools.export_safetensors"}


def _tool_commands() -> list[str]:
    """README's whole command lines of the tools and benchmarks, as ``module arg ...``: those of its bash blocks
    (the batch script aside, which tests/test_slurm_script.py runs) and those quoted inline."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        if not block.startswith("#!"):
            lines += [line.split(" #", 1)[0].strip() for line in block.replace("\\\n", " ").splitlines()]
    lines += [" ".join(c.split()) for c in re.findall(r"`((?:python|torchrun) [^`]+)`", README)]
    commands = []
    for line in lines:
        words = line.replace("$EVA_SHARED_DIR", "shared").split()
        if not words or re.search(r"\btrain\.py\b", line) or words[:2] == ["python", "-c"]:
            continue
        if words[0] in ("python", "torchrun") and "-m" in words and words[words.index("-m") + 1] != "pytest":
            commands.append(" ".join(words[words.index("-m") + 1:]))
        elif words[0] == "python" and words[1].endswith(".py"):
            commands.append(" ".join([words[1][:-3].replace("/", "."), *words[2:]]))
    return commands


def _flags_in_prose() -> list[str]:
    """The flags README's prose names after a command's short name, as ``module [subcommand] --flag ...``."""
    found = re.findall(r"`((?:%s)(?:\.py)? --[^`]+)`" % "|".join(_COMMAND_NAMES), README)
    return [" ".join([_COMMAND_NAMES[c.split()[0].removesuffix(".py")], *c.split()[1:]]) for c in found]


def test_readme_quotes_the_tools_and_benchmarks():
    # Using a model (predict, extract_features, export_safetensors), Tools and benchmarks, and the prose
    modules = {command.split()[0] for command in _tool_commands()}
    assert len(modules) >= 13 and {"tools.prepare_kinetics", "benchmarks.nvdec_parity"} <= modules
    assert len(_flags_in_prose()) >= 5


class _Parsed(Exception):
    """A command's parser, and what it parsed: raised where its main() would start the work."""

    def __init__(self, parser, namespace=None):
        super().__init__(parser.prog)
        self.parser, self.namespace = parser, namespace


def _main_until_parsed(command: str, monkeypatch, parse: bool = True) -> _Parsed:
    """Runs ``command``'s main() up to its argument parsing (through it with ``parse``: an unknown flag or
    subcommand, a missing argument or a bad choice is argparse's exit code 2)."""
    import argparse
    import importlib

    parse_args = argparse.ArgumentParser.parse_args

    def parsed(self, args=None, namespace=None):
        raise _Parsed(self, parse_args(self, args, namespace) if parse else None)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parsed)
    module, *argv = shlex.split(command)
    with pytest.raises(_Parsed) as stopped:
        importlib.import_module(module).main(argv)
    return stopped.value


@pytest.mark.parametrize("command", _tool_commands())
def test_each_tool_and_benchmark_command_exists_and_takes_its_flags(command, monkeypatch):
    monkeypatch.chdir(ROOT)
    module = command.split()[0]
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module
    for path in re.findall(r"\bconfigs/\w+\.yaml\b", command):
        assert (ROOT / path).is_file(), path
    _main_until_parsed(command, monkeypatch)


@pytest.mark.parametrize("mention", _flags_in_prose())
def test_each_flag_the_prose_gives_a_command_is_one_of_its_flags(mention, monkeypatch):
    import argparse

    module, *words = mention.split()
    parser = _main_until_parsed(module, monkeypatch, parse=False).parser
    if not words[0].startswith("--"):  # a subcommand
        (subcommands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = subcommands.choices[words[0]]
    for flag in (w.split("=")[0] for w in words if w.startswith("--")):
        assert flag in parser._option_string_actions, f"{module} has no {flag}"


@pytest.mark.parametrize("command", ["tools.predict a.mp4 --topk 5", "tools.prepare_kinetics list --out data/",
                                     "benchmarks.nvdec_parity --decoder gpu"])
def test_the_flag_check_refuses_a_misspelt_command(command, monkeypatch):
    """The check above must fail for a flag, subcommand or choice the command lacks."""
    with pytest.raises(SystemExit) as ended:
        _main_until_parsed(command, monkeypatch)
    assert ended.value.code == 2


def test_the_scripts_and_make_targets_readme_names_exist():
    """``bash benchmarks/gpu_suite.sh <plan>``, ``make <target>``, the test files README runs and CI's script."""
    for script, plan in re.findall(r"bash (benchmarks/\S+\.sh) (\w+)", README):
        assert f"{plan})" in (ROOT / script).read_text(encoding="utf-8"), (script, plan)
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M))
    assert set(re.findall(r"`make (\w+)", README)) <= targets
    for test_file in re.findall(r"python -m pytest (tests/\S+\.py)", README):
        assert (ROOT / test_file).is_file(), test_file
    for script in re.findall(r"`CI=true bash (\S+)`", README):
        assert (ROOT / script).is_file(), script
