"""A message that names a flag names it as the user typed it (``--batch_size`` or ``--batch-size``): argparse's own
errors, each command's checks of its flags' values, and errors found later that name a flag, in every command."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from evautil.cli import ArgumentParser, flags_as_typed
from tests.test_evautil_cli import subcommand_parser

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="cmd")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--only_test", action="store_true")
    p.add_argument("--num-frames", "--frames", dest="num_frames", type=int, default=None)
    return p


def _error(parse, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        parse()
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["--batch_size", "x"], "error: argument --batch_size: invalid int value: 'x'"),
    (["--batch-size", "x"], "error: argument --batch-size: invalid int value: 'x'"),
    (["--batch_s", "x"], "error: argument --batch_size: invalid int value: 'x'"),  # abbreviated: named in full
    (["--batch", "x"], "error: argument --batch-size: invalid int value: 'x'"),
    (["--num_frames"], "error: argument --num_frames/--frames: expected one argument"),
    (["--only-test=1"], "error: argument --only-test: ignored explicit argument '1'"),
])
def test_argparse_own_errors_name_the_flag_as_typed(argv, words, capsys):
    """They named the declared spelling: 'argument --batch-size: invalid int value' after --batch_size x."""
    assert words in _error(lambda: _parser().parse_args(argv), capsys)


@pytest.mark.parametrize("argv, words", [
    (["--num_frames", "1", "--num-", "2"], "ambiguous option: --num- could match --num-frames, --num-clips"),
    (["--num_clips=1", "--num", "2"], "ambiguous option: --num could match --num-frames, --num-clips"),
    (["--num-clips=1", "--num_", "2"], "ambiguous option: --num_ could match --num-frames, --num-clips"),
])
def test_an_ambiguous_abbreviations_candidates_are_named_as_declared(argv, words, capsys):
    """They are offered, not typed: one typed elsewhere in the other spelling was named so, the others as declared
    ('--num- could match --num_frames, --num-clips' after --num_frames 1)."""
    p = ArgumentParser(prog="cmd")
    p.add_argument("--num-frames", type=int)
    p.add_argument("--num-clips", type=int)
    assert words in _error(lambda: p.parse_args(argv), capsys)


def test_a_commands_own_error_after_the_parse_names_the_flags_typed(capsys):
    p = _parser()
    p.parse_args(["--batch_size", "0", "--only-test"])
    err = _error(lambda: p.error("--batch-size must be at least 1 with --only_test (not --num-frames)"), capsys)
    assert err.endswith("cmd: error: --batch_size must be at least 1 with --only-test (not --num-frames)\n")
    p.parse_args(["--batch-size", "0"])  # the next parse's spellings only
    err = _error(lambda: p.error("--batch-size must be at least 1 with --only_test"), capsys)
    assert err.endswith("cmd: error: --batch-size must be at least 1 with --only_test\n")


def test_flags_as_typed_rewrites_whole_flags_only():
    args = _parser().parse_args(["--batch_size", "2", "--only-test", "--frames", "4"])
    assert flags_as_typed("--batch-size 2, --only_test: --batch-sizes --batch-size-x x--batch-size", args) == (
        "--batch_size 2, --only-test: --batch-sizes --batch-size-x x--batch-size")
    assert flags_as_typed(ValueError("--num-frames 4"), args) == "--num-frames 4"  # --frames was typed
    assert flags_as_typed("--batch-size 2", None) == "--batch-size 2"
    assert flags_as_typed("--batch-size 2", argparse.Namespace()) == "--batch-size 2"


def test_a_subcommands_flags_are_named_as_typed_too(capsys):
    p = subcommand_parser()
    args = p.parse_args(["--dry_run", "reencode", "--short_side", "240", "--dry-run"])
    # each spelling swapped once: the command's --dry-run was typed --dry_run, the subcommand's --dry_run --dry-run
    assert flags_as_typed("--short-side 240; --dry-run; --dry_run", args) == "--short_side 240; --dry_run; --dry-run"
    assert flags_as_typed("--short-side", p) == "--short_side"
    err = _error(lambda: p.parse_args(["reencode", "--short_side", "x"]), capsys)
    assert "error: argument --short_side: invalid int value: 'x'" in err


@pytest.mark.parametrize("flag", ["--only-test", "--only_test"])
def test_train_names_only_test_as_typed(flag, tmp_path, capsys):
    """'--only_test: nothing to evaluate' after --only-test: the message spelled the flag as the code declares it."""
    import train

    rc = train.main(["--cfg", DEMO, flag, "--opts", "OUTPUT", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and f"error: {flag}: nothing to evaluate: no --resume given" in err, err
    err = _error(lambda: train.parse_args(["--cfg", DEMO, flag.replace("only", "batch").replace("test", "size"),
                                           "x"]), capsys)
    assert f"argument {flag.replace('only', 'batch').replace('test', 'size')}: invalid int value: 'x'" in err


@pytest.mark.parametrize("sep", ["-", "_"])
def test_benchmark_errors_name_the_flag_as_typed(sep, capsys):
    from benchmarks import cli, common, eval_throughput, index_throughput

    err = _error(lambda: eval_throughput.main(["--quick", f"--torch{sep}threads", "-1"]), capsys)
    assert err.endswith(f": --torch{sep}threads must be at least 0, got -1 (see --help)\n"), err
    err = _error(lambda: index_throughput.main([f"--skip{sep}build"]), capsys)
    assert f"--skip{sep}build needs the --work-dir of an earlier run" in err, err  # --work-dir: not typed
    # an error found while measuring (InputError) too
    p = common.ArgumentParser(prog="bench")
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    args = p.parse_args([f"--skip{sep}build"])

    def run_benchmark(_args):
        raise common.InputError("--skip-build: 2 of 3 videos were not in the index; run without --skip-build")

    assert cli.run_main(args, run_benchmark, str, "x", "x", "x", []) == 2
    assert capsys.readouterr().err == (f"error: --skip{sep}build: 2 of 3 videos were not in the index; run without "
                                       f"--skip{sep}build\n")


@pytest.mark.parametrize("sep", ["-", "_"])
def test_tool_errors_name_the_flag_as_typed(sep, tmp_path, capsys):
    from tools import extract_features, make_synthetic_dataset, prepare_kinetics, verify_data

    src = str(tmp_path / "src")
    assert prepare_kinetics.main(["reencode", "--src", src, f"--short{sep}side", "0"]) == 2
    assert capsys.readouterr().err == f"error: --short{sep}side must be >= 1, got 0\n"
    (tmp_path / "file").write_text("")
    assert prepare_kinetics.main(["reencode", "--src", src, f"--report{sep}dir", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err.startswith(f"error: --report{sep}dir {tmp_path / 'file'} exists and is not a")
    err = _error(lambda: prepare_kinetics.main(["reencode", "--src", src, f"--short{sep}side", "x"]), capsys)
    assert f"error: argument --short{sep}side: invalid int value: 'x'" in err

    err = _error(lambda: verify_data.parse_args(["l.txt", f"--num{sep}classes", "0"]), capsys)
    assert f"error: --num{sep}classes 0: give the number of classes" in err
    # an error of the lists' check, after the parse
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "l.txt").write_text("a.mp4 7\n")
    assert verify_data.main([str(tmp_path / "l.txt"), f"--num{sep}classes", "5", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"as --num{sep}classes is 5" in err and f"or set --num{sep}classes to the number" in err, err

    err = _error(lambda: make_synthetic_dataset.main(["--out", str(tmp_path / "o"), f"--train{sep}per{sep}class",
                                                      "0"]), capsys)
    assert f"error: --train{sep}per{sep}class must be >= 1, got 0" in err
    err = _error(lambda: extract_features.parse_args(["v.mp4", "--weights", "w", "--out", "o",
                                                      f"--windows{sep}per{sep}batch", "0"]), capsys)
    assert f"error: --windows{sep}per{sep}batch must be at least 1, got 0" in err


@pytest.mark.parametrize("sep", ["-", "_"])
def test_predict_names_its_work_dir_as_typed(sep, tmp_path, capsys):
    from tools import predict

    (tmp_path / "file").write_text("")
    rc = predict.main(["v.mp4", "--weights", "w.pth", f"--work{sep}dir", str(tmp_path / "file")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: --work{sep}dir {tmp_path / 'file'} exists and is not a folder"), err
    err = _error(lambda: predict.parse_args(["v.mp4", "--weights", "w", f"--top{sep}k", "0"]), capsys)
    assert f"error: --top{sep}k must be at least 1, got 0" in err
