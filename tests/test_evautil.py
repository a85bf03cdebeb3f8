"""The shared helpers: atomic writes, worker maps, FLOPs conventions."""

from __future__ import annotations

import os

import pytest

from evautil.files import atomic_write, atomic_write_text
from evautil.flops import peak_flops, train_step_flops
from evautil.workers import mp_context, map_with_progress


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    atomic_write_text(str(path), "first\n")
    assert path.read_text() == "first\n"

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(path), broken)
    assert path.read_text() == "first\n"  # the old content survives
    assert os.listdir(path.parent) == ["out.txt"]  # and no temporary file is left behind


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_the_mode_a_plain_open_would(tmp_path, umask, mode):
    """Not the temporary file's private 0600: an index cache beside a shared dataset must stay readable."""
    old = os.umask(umask)
    try:
        atomic_write_text(str(tmp_path / "index.npz"), "x")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "index.npz").st_mode & 0o777 == mode == os.stat(tmp_path / "plain.txt").st_mode & 0o777


def _square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_map_with_progress_returns_results_in_order(workers):
    assert list(map_with_progress(_square, list(range(7)), workers, "squares", progress=False)) == [
        x * x for x in range(7)]
    unordered = list(map_with_progress(_square, list(range(7)), workers, "squares", progress=False, ordered=False))
    assert sorted(unordered) == [x * x for x in range(7)]


def test_workers_are_never_forked():
    assert mp_context().get_start_method() in ("forkserver", "spawn")
    with pytest.raises(ValueError, match="never 'fork'"):
        mp_context("fork")


def test_flops_conventions():
    assert train_step_flops(2.0) == 6.0 and train_step_flops(2.0, recompute=True) == 8.0
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989.4e12  # the SXM part does not say 'SXM'
    assert peak_flops("NVIDIA H200", "fp32") == 494.7e12
    assert peak_flops("NVIDIA L4", "fp32") is None and peak_flops("Some CPU", "bf16") is None
    assert peak_flops(None) is None
    with pytest.raises(ValueError, match="precision"):
        peak_flops("NVIDIA H200", "int8")
