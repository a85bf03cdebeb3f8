"""tools.extract_features resumes by video, not by spelling: the same file reached through a linked folder is one
video, and a video rewritten under the same name since its features were made (another size or mtime) is extracted
again, its old features replaced in the index; an older index without sizes and mtimes keeps working."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_extract_features import DEMO, OPTS, tiny  # noqa: F401 (a fixture)
from tests.video_fixtures import pattern_frames
from tools import extract_features as ef
from tools.feature_store import read_features

WINDOWS = ["--window", "4", "--quiet"]  # decoded by PyAV, one probe per video: the quickest mode


@pytest.fixture()
def videos(tmp_path) -> Path:
    """A folder of two H.264 clips, 8 and 12 frames, and (beside it) a third to copy over one of them."""
    from dali_pipelines.pyav_encode import write_video

    folder = tmp_path / "videos"
    folder.mkdir()
    for name, frames, seed in (("a.mp4", 8, 1), ("b.mp4", 12, 2), ("../other.mp4", 16, 3)):
        write_video(str(folder / name), pattern_frames(frames, 48, 32, seed=seed), codec="h264", gop=4)
    return folder


def _run(inputs: list[str], out: Path, ckpt, capsys) -> tuple[int, list[str]]:
    rc = ef.main([*inputs, "--cfg", DEMO, "--weights", str(ckpt), "--out", str(out), *WINDOWS, "--opts", *OPTS])
    return rc, capsys.readouterr().err.splitlines()


def _index(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "index.jsonl").read_text().splitlines()]


def _summary(written: int, before: int, listed: int, out: Path) -> str:
    return f"{written} video{'s' * (written != 1)} extracted, {before} already done; {listed} of {listed} in " \
           f"{out / 'index.jsonl'}"


def test_a_folder_reached_through_a_link_is_not_extracted_again(videos, tiny, tmp_path, capsys):  # noqa: F811
    """Videos were keyed by their absolute path as given: the same folder through a link (or both at once) was
    extracted a second time, each video listed twice in index.jsonl."""
    _, _, ckpt = tiny
    link = tmp_path / "linked"
    link.symlink_to(videos, target_is_directory=True)
    out = tmp_path / "feats"
    rc, err = _run([str(videos)], out, ckpt, capsys)
    assert rc == 0 and err == [_summary(2, 0, 2, out)], err
    first = _index(out)
    rc, err = _run([str(link)], out, ckpt, capsys)
    assert rc == 0 and err == [_summary(0, 2, 2, out)], err
    assert _index(out) == first  # one line per video, under the name it was extracted by
    # both names in one run into a new folder: each video once
    fresh = tmp_path / "both"
    rc, err = _run([str(link / "a.mp4"), str(videos / "a.mp4")], fresh, ckpt, capsys)
    assert rc == 0 and err == [f"1 video extracted, 0 already done; 1 of 1 in {fresh / 'index.jsonl'}"], err
    assert [r["path"] for r in _index(fresh)] == [str(link / "a.mp4")]


@pytest.mark.parametrize("change", ["rewritten", "touched"])
def test_a_video_changed_since_its_features_is_extracted_again_and_replaced(videos, tiny, tmp_path, capsys,
                                                                             change):  # noqa: F811
    """A video re-encoded under the same name after its features were made was skipped for ever, its old features
    listed as its own. Its size and mtime are recorded with its features now: another size or mtime, it is
    extracted again (one note counts them), and index.jsonl lists its new features alone."""
    _, _, ckpt = tiny
    a, b = str(videos / "a.mp4"), str(videos / "b.mp4")
    out, reference = tmp_path / "feats", tmp_path / "reference"
    rc, err = _run([a, b], out, ckpt, capsys)
    assert rc == 0, err
    lines = [json.loads(x) for x in (out / "index-rank000.jsonl").read_text().splitlines()]
    assert [(r["size"], r["mtime_ns"]) for r in lines] == [(os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in (a, b)]
    old = {r["path"]: read_features(str(out), r) for r in _index(out)}
    stat = os.stat(a)
    if change == "rewritten":  # another clip under the same name, with the same mtime: its size tells it
        shutil.copyfile(videos.parent / "other.mp4", a)
        os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    else:  # the same bytes, written again: its mtime tells it
        os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    rc, err = _run([a, b], out, ckpt, capsys)
    assert rc == 0 and err == [f"note: 1 video changed (another size or modification time) since its features in "
                               f"{out} were extracted: extracted again, their old features left out of index.jsonl",
                               _summary(1, 1, 2, out)], err
    index = _index(out)
    assert [r["path"] for r in index] == [a, b]  # each video once
    assert (index[0]["size"], index[0]["mtime_ns"]) == (os.stat(a).st_size, os.stat(a).st_mtime_ns)
    np.testing.assert_array_equal(read_features(str(out), index[1]), old[b])
    rc, err = _run([a], reference, ckpt, capsys)  # the video as it is now, into a folder of its own
    assert rc == 0, err
    np.testing.assert_array_equal(read_features(str(out), index[0]),
                                  read_features(str(reference), _index(reference)[0]))
    if change == "rewritten":
        assert index[0]["num_windows"] != old[a].shape[0]  # 16 frames now, not 8
    rc, err = _run([a, b], out, ckpt, capsys)  # nothing changed since: nothing done, nothing said
    assert rc == 0 and err == [_summary(0, 2, 2, out)], err
    assert _index(out) == index


def test_an_older_index_without_sizes_keeps_working_and_says_once_it_cannot_tell_changes(videos, tiny, tmp_path,
                                                                                        capsys):  # noqa: F811
    _, _, ckpt = tiny
    a, b = str(videos / "a.mp4"), str(videos / "b.mp4")
    out = tmp_path / "feats"
    assert _run([a, b], out, ckpt, capsys)[0] == 0
    for name in ("index-rank000.jsonl", "index.jsonl"):  # as an older version wrote them
        lines = [json.loads(x) for x in (out / name).read_text().splitlines()]
        (out / name).write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("size", "mtime_ns")})
                                        + "\n" for r in lines))
    before = _index(out)
    stat = os.stat(a)
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # not detectable there
    rc, err = _run([a, b], out, ckpt, capsys)
    assert rc == 0 and err == [f"note: the index in {out} records no size or modification time for 2 videos given "
                               "(extracted by an older version): a video changed since cannot be detected there, and "
                               "is not extracted again (another --out extracts every video anew)",
                               _summary(0, 2, 2, out)], err
    assert _index(out) == before


def test_a_video_changed_into_an_unreadable_file_is_failed_and_its_old_features_not_listed(videos, tiny, tmp_path,
                                                                                         capsys):  # noqa: F811
    """Features of the file as it was are no longer the video's: index.jsonl leaves them out, the failed list names
    the video with its reason, and the next run tries it again."""
    _, _, ckpt = tiny
    a, b = str(videos / "a.mp4"), str(videos / "b.mp4")
    out = tmp_path / "feats"
    assert _run([a, b], out, ckpt, capsys)[0] == 0
    Path(a).write_bytes(b"no longer a video")
    for _ in range(2):
        rc, err = _run([a, b], out, ckpt, capsys)
        assert rc == 0 and err[-1] == (f"0 videos extracted, 1 already done; 1 of 2 in {out / 'index.jsonl'}; "
                                       f"1 unreadable, listed in {out / 'failed-rank*.jsonl'}"), err
        assert err[0].startswith("note: 1 video changed"), err
        assert [r["path"] for r in _index(out)] == [b]
        failed = [json.loads(x) for x in (out / "failed-rank000.jsonl").read_text().splitlines()]
        assert [r["path"] for r in failed] == [a], failed
