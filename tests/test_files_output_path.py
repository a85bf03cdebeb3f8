"""The check that an output file can be written (evautil.files.output_path_problem) before a command works: an
existing file is replaced by a new one written beside it, so its folder must take a new file, not only the file
be writable."""

from __future__ import annotations

import os
import sys

import pytest

from evautil.files import output_path_problem
from tests.test_hub_export import _as_a_user_file_modes_bind, run_bound_by_file_modes


def _refused_in(folder, monkeypatch) -> None:
    """access() answers no for ``folder`` as for a user who may not write in it (the file modes of root's tests)."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: (
        False if os.path.realpath(p) == str(folder) and mode & os.W_OK else real_access(p, mode, **k)))


def test_an_existing_file_in_a_folder_that_takes_no_new_file_is_refused_naming_the_folder(tmp_path, monkeypatch):
    """A file the user may write, in a folder they may not: the check asked about the file alone and passed, and the
    atomic write failed after all the work, when it made its temporary file beside it. The check names the folder,
    for every caller, a link's file by the folder of the file it names."""
    shelf, own = tmp_path / "shelf", tmp_path / "own"
    shelf.mkdir()
    own.mkdir()
    (shelf / "out.json").write_text("{}")
    os.symlink(shelf / "out.json", own / "link.json")
    _refused_in(shelf, monkeypatch)
    for given in (shelf / "out.json", own / "link.json"):
        assert output_path_problem(str(given), "--json", folder=False) == (
            f"--json {given}: cannot write in its folder {shelf} (Permission denied), where the new file is written "
            f"before it replaces {given.name}; give --json a file in a folder you can write in")
    assert output_path_problem(str(shelf / "new.json"), "--out", folder=False) == \
        f"--out {shelf / 'new.json'}: no permission to write {shelf}"  # a new file: the folder, as before
    assert output_path_problem(str(own / "out.json"), "--out", folder=False) == ""  # a writable folder beside it


def test_a_pipe_or_an_open_files_alias_in_such_a_folder_is_written_straight_and_passes(tmp_path, monkeypatch):
    """What is written straight (a named pipe, /dev/stdout sent to a file) makes no file beside it: not refused."""
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    os.mkfifo(shelf / "pipe")
    _refused_in(shelf, monkeypatch)
    assert output_path_problem(str(shelf / "pipe"), "--out", folder=False) == ""
    with open(shelf / "stdout.txt", "w") as f:  # this process's fd of a file in that folder
        assert output_path_problem(f"/proc/self/fd/{f.fileno()}", "--out", folder=False) == ""


def test_an_existing_file_in_a_read_only_folder_is_refused_for_a_user_without_root(tmp_path):
    """The same, from file modes alone: a process without the capabilities that override them (root's tests drop
    them) is refused a 0555 folder; its file, 0644 and its own, passes access()."""
    prefix = _as_a_user_file_modes_bind()
    if prefix is None:
        pytest.skip("runs as root, and setpriv cannot drop the capabilities that override file modes")
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    (shelf / "out.json").write_text("{}")
    check = ("import sys; from evautil.files import output_path_problem; "
             "print(output_path_problem(sys.argv[1], '--out', folder=False))")
    done = run_bound_by_file_modes(prefix, [sys.executable, "-c", check, str(shelf / "out.json")], shelf)
    assert done.returncode == 0, done
    assert done.stdout == (f"--out {shelf / 'out.json'}: cannot write in its folder {shelf} (Permission denied), "
                           "where the new file is written before it replaces out.json; give --out a file in a folder "
                           "you can write in\n")
