"""evautil.cli: every command's long flags in either spelling (``--dry_run`` / ``--dry-run``), values untouched."""

from __future__ import annotations

import argparse

import pytest

from evautil.cli import ArgumentParser, as_typed_flags


def _parser(**kwargs) -> ArgumentParser:
    p = ArgumentParser(prog="cmd", **kwargs)
    p.add_argument("--only_test", action="store_true", help="the original's spelling")
    p.add_argument("--batch-size", type=int, default=None, help="the project's spelling")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--name", default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    return p


@pytest.mark.parametrize("argv", [
    ["--only-test", "--batch_size", "8", "--dry_run"],
    ["--only_test", "--batch-size", "8", "--dry-run"],
    ["--only-test", "--batch_size=8", "--dry_run"],
    ["--only-t", "--batch_s", "8", "--dry_r"],  # abbreviated in the other spelling
    ["--only", "--batch", "8", "--dry"],  # abbreviations argparse took before
])
def test_either_spelling_of_a_long_flag(argv):
    args = _parser().parse_args(argv)
    assert (args.only_test, args.batch_size, args.dry_run) == (True, 8, True)


def test_values_are_never_respelled():
    p = _parser()
    args = p.parse_args(["--name=--dry_run", "--lr", "-0.5", "--opts", "DATA.ROOT", "my_dir", "--batch_size", "2"])
    assert args.name == "--dry_run" and args.lr == -0.5 and args.batch_size is None
    assert args.opts == ["DATA.ROOT", "my_dir", "--batch_size", "2"]  # a REMAINDER option's items are its own
    p.add_argument("rest", nargs="*")
    assert p.parse_args(["--dry_run", "--", "--only-test"]).rest == ["--only-test"]  # after --: values


def test_respelled_finds_flags_after_remainder_pairs_by_their_full_name():
    """For configs.opts_last, which ends ``--opts KEY VALUE ...`` at the next flag spelled exactly as declared."""
    p = _parser()
    argv = ["--opts", "MODEL.NAME", "eva_g", "DATA.ROOT", "--only-test-dir", "--dry_run", "--batch_s", "3"]
    assert p.respelled(argv) == ["--opts", "MODEL.NAME", "eva_g", "DATA.ROOT", "--only-test-dir", "--dry-run",
                                 "--batch-size", "3"]
    assert p.respelled(["--opts", "K", "V", "--opts", "A_B", "--only-test=1"])[-1] == "--only_test=1"


@pytest.mark.parametrize("argv, words", [
    (["--dry_runs"], "unrecognized arguments: --dry_runs"),
    (["--batch-size_x", "2"], "unrecognized arguments: --batch-size_x"),
    (["--batch_size", "x"], "argument --batch_size: invalid int value: 'x'"),  # named as typed
])
def test_unknown_flags_and_bad_values_still_error(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(argv)
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_a_mistyped_flag_is_told_the_declared_one_it_is_closest_to(capsys):
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["--dryrun", "--bacth-size", "2", "--zzz"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2
    assert err == ("cmd: error: unrecognized arguments: --dryrun --bacth-size 2 --zzz (--dryrun: did you mean "
                   "--dry-run?; --bacth-size: did you mean --batch-size?)")
    top = ArgumentParser(prog="tool")
    sub = top.add_subparsers(dest="command").add_parser("lists")
    sub.add_argument("--allow-empty-classes", action="store_true")
    with pytest.raises(SystemExit):
        top.parse_args(["lists", "--alow-empty-classes"])
    assert "(--alow-empty-classes: did you mean --allow-empty-classes?)" in capsys.readouterr().err


def test_another_tools_flag_is_told_what_this_command_has_instead(capsys):
    """mmaction2's --auto-resume was offered --resume (closest, but it takes a checkpoint): a command that declares
    --resume and --opts names the config key; one without --resume (that key does nothing there) does not."""
    p = _parser()
    p.add_argument("--resume", default="")
    for typed in ("--auto-resume", "--auto_resume=False"):
        with pytest.raises(SystemExit) as e:
            p.parse_args([typed])
        name = typed.partition("=")[0]
        assert e.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"cmd: error: unrecognized arguments: {typed} ({name}: resuming from OUTPUT's newest checkpoint is the "
            "config key TRAIN.AUTO_RESUME (True by default; --opts TRAIN.AUTO_RESUME False starts over))")
    with pytest.raises(SystemExit):
        _parser().parse_args(["--auto-resume"])
    assert capsys.readouterr().err.strip().endswith("cmd: error: unrecognized arguments: --auto-resume")


def test_an_abbreviation_of_two_flags_in_the_other_spelling_is_ambiguous(capsys):
    p = ArgumentParser(prog="cmd")
    p.add_argument("--num-frames", type=int)
    p.add_argument("--num-clips", type=int)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--num_", "3"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "ambiguous option: --num_ could match --num-frames, --num-clips" in err
    assert p.parse_args(["--num_c", "3"]).num_clips == 3
    strict = ArgumentParser(prog="cmd", allow_abbrev=False)
    strict.add_argument("--num-frames", type=int)
    assert strict.parse_args(["--num_frames", "4"]).num_frames == 4
    with pytest.raises(SystemExit):
        strict.parse_args(["--num_f", "4"])


def test_help_lists_each_flag_once_as_declared(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "--only_test" in out and "--batch-size" in out and "--dry-run" in out
    assert "--only-test" not in out and "--batch_size" not in out and "--dry_run" not in out


def subcommand_parser() -> ArgumentParser:
    """A command with a subcommand, each with its --dry-run spelt the other way."""
    p = ArgumentParser(prog="cmd")
    p.add_argument("--dry-run", action="store_true")
    sub = p.add_subparsers(dest="command", required=True).add_parser("reencode")
    sub.add_argument("--short-side", type=int)
    sub.add_argument("--dry_run", action="store_true", dest="sub_dry_run")
    return p


def test_a_subcommands_flags_are_its_own():
    args = subcommand_parser().parse_args(["--dry_run", "reencode", "--short_side", "240", "--dry-run"])
    assert (args.dry_run, args.short_side, args.sub_dry_run) == (True, 240, True)


def test_the_spelling_typed_is_kept_for_messages_but_is_no_value():
    p = _parser()
    args = p.parse_args(["--batch_size", "0", "--only_test", "--dry-run"])
    flags = {"TRAIN.BATCH_SIZE": "--batch-size", "TEST.ONLY_TEST": "--only_test", "OUTPUT": "--name"}
    assert as_typed_flags(args, flags) == {"TRAIN.BATCH_SIZE": "--batch_size", "TEST.ONLY_TEST": "--only_test",
                                           "OUTPUT": "--name"}
    assert args == argparse.Namespace(only_test=True, batch_size=0, dry_run=True, name=None, lr=None, opts=[])
    args = p.parse_args(p.respelled(["--opts", "K", "V", "--only-test"]))  # respelled before the parse
    assert as_typed_flags(args, flags)["TEST.ONLY_TEST"] == "--only-test"
    assert as_typed_flags(p.parse_args([]), flags) == flags
    assert as_typed_flags(argparse.Namespace(), flags) == flags  # a namespace of argparse's own
