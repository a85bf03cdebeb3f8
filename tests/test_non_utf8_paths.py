"""Folders whose names are not UTF-8 (Python holds such a byte as a surrogate, ``os.fsdecode(b"caf\\xe9")``): a
DATA.ROOT, a list's folder or a home folder so named is read as the file system names it, and an index built under
it is summarised, saved and read back. The lists themselves stay UTF-8 text."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from dali_pipelines import index_files
from dali_pipelines.filelist import read_video_list
from dali_pipelines.index import build_index
from dali_pipelines.path_table import PathTable
from dali_pipelines.pyav_encode import write_video

ROOT = Path(__file__).resolve().parents[1]
CAFE = os.fsdecode(b"caf\xe9")  # a folder name in Latin-1 on a UTF-8 file system


def _clip(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_video(path, np.zeros((8, 48, 64, 3), np.uint8), "vp9")


def test_an_index_under_a_root_not_named_in_utf8_is_built_summarised_saved_and_read_back(tmp_path):
    """The summary's repeated lines raised UnicodeEncodeError (the root was encoded as UTF-8 to key the files):
    training and verify_data stopped with a traceback before their first video."""
    root = os.path.join(tmp_path, CAFE)
    _clip(os.path.join(root, "a.webm"))
    _clip(os.path.join(root, "sub", "c.webm"))
    lst = tmp_path / "list.txt"
    lst.write_text("a.webm 0\nsub/c.webm 1\n./a.webm 0\nsub//c.webm 1\n")
    first = build_index(str(lst), root, workers=1, progress=False)
    assert first.good_rows == [0, 1, 2, 3]
    assert first.videos.file_key(2) == os.path.join(root, "a.webm")
    assert os.fsencode(first.videos.file_key(3)) == os.fsencode(tmp_path) + b"/caf\xe9/sub/c.webm"
    repeated = ("  2 videos listed on more than one line, each line an entry of its own (2 repeated lines): "
                "a.webm (lines 1, 3); sub/c.webm (lines 2, 4)")
    assert repeated in first.summary().splitlines()
    assert os.path.isfile(str(lst) + ".index.npz")
    again = build_index(str(lst), root, workers=1, progress=False)
    assert again.probed == 0 and "(0 probed, 4 from cache)" in again.summary()
    assert repeated in again.summary().splitlines()
    assert [again.infos[r].num_frames for r in again.good_rows] == [8, 8, 8, 8]


def test_paths_are_kept_as_the_file_system_names_them_and_utf8_ones_as_before(tmp_path):
    """Valid names keep their UTF-8 bytes (caches written before read alike); other bytes are kept as they were."""
    table = PathTable.from_paths(["é/a.mp4", f"{CAFE}/b.mp4"])
    assert table.raw(0) == "é/a.mp4".encode("utf-8") and table.raw(1) == b"caf\xe9/b.mp4"
    assert table[1] == f"{CAFE}/b.mp4" and table.find(f"{CAFE}/b.mp4") == 1
    assert table.select(np.array([1, 0])) == PathTable.from_paths([f"{CAFE}/b.mp4", "é/a.mp4"])
    assert table.append(f"x/{CAFE}")[2] == f"x/{CAFE}"


def test_a_home_folder_not_named_in_utf8_is_read_for_a_tilde_line(tmp_path, monkeypatch):
    home = os.path.join(tmp_path, CAFE)
    _clip(os.path.join(home, "a.webm"))
    monkeypatch.setenv("HOME", home)
    lst = tmp_path / "list.txt"
    lst.write_text("~/a.webm 0\n")
    videos = read_video_list(str(lst), str(tmp_path / "data"))
    assert videos.path(0) == os.path.join(home, "a.webm") and videos.stat_keys()[2].tolist() == [True]
    ix = build_index(str(lst), str(tmp_path / "data"), workers=1, progress=False)
    assert ix.good_rows == [0] and ix.shared_with(ix) == {0: [0]}  # the rows two lists share, by their real files


def test_a_list_in_a_read_only_folder_not_named_in_utf8_gets_its_cache_name(tmp_path, monkeypatch):
    """The cache kept in the per-user folder is named from a digest of the list's path, which was encoded as UTF-8;
    a UTF-8 path keeps the name it had."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(index_files, "_dir_writable", lambda d: False)
    lst = os.path.join(tmp_path, CAFE, "list.txt")
    paths = index_files.index_paths(lst)
    digest = hashlib.sha1(os.fsencode(lst)).hexdigest()[:16]
    assert paths.cache == str(tmp_path / "xdg" / "eva_dali_video" / f"{digest}.list.txt.index.npz")
    plain = str(tmp_path / "é" / "list.txt")
    digest = hashlib.sha1(plain.encode("utf-8")).hexdigest()[:16]
    assert index_files.index_paths(plain).cache == str(tmp_path / "xdg" / "eva_dali_video" / f"{digest}.list.txt"
                                                                                        ".index.npz")


def test_verify_data_with_a_root_not_named_in_utf8_reports(tmp_path):
    root = os.path.join(tmp_path, CAFE)
    _clip(os.path.join(root, "a.webm"))
    lst = tmp_path / "list.txt"
    lst.write_text("a.webm 0\na.webm 1\n")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "verify_data.py"), str(lst), "--root", root,
                        "--workers", "1"], cwd=ROOT, capture_output=True, timeout=300)
    out, err = (os.fsdecode(b) for b in (r.stdout, r.stderr))
    assert r.returncode == 0, out + err
    assert "Traceback" not in err
    assert f"video index of {lst}: 2 videos, 2 good, 0 bad" in out
    assert "a.webm (lines 1, 2; labels 0, 1)" in out and "verified 1 list, 2 videos: all readable" in out
