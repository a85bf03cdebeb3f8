"""dali_pipelines.pyav_open.failure_reason: the reason a quarantine records for a video, without the video's path,
which the quarantine line names beside it."""

from __future__ import annotations

import errno
import os

import av
import pytest

from dali_pipelines.pyav_io import decode_frames
from dali_pipelines.pyav_open import BadVideoError, failure_reason


def _raised(call) -> BaseException:
    try:
        call()
    except Exception as e:  # noqa: BLE001 - the error itself is what is checked
        return e
    raise AssertionError("no error raised")


@pytest.mark.parametrize("name", ["clip.mp4", "it's a clip.mp4"])  # a quote: repr() writes "..." around it
def test_the_path_is_left_out_wherever_the_error_names_it(tmp_path, name):
    """An OSError (and PyAV's errors) end their message with ": '<path>'": the reason named the path twice."""
    missing = str(tmp_path / name)
    error = _raised(lambda: open(missing, "rb"))
    assert failure_reason(error, missing) == "FileNotFoundError: [Errno 2] No such file or directory"
    garbage = tmp_path / ("junk " + name)
    garbage.write_bytes(b"this is not a video" * 10)
    error = _raised(lambda: av.open(str(garbage)))
    reason = failure_reason(error, str(garbage))
    assert reason.startswith(f"{type(error).__name__}: [Errno ") and "Invalid data found" in reason, reason
    assert str(garbage) not in reason and name not in reason, reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_a_refused_read_says_why_without_the_path(tmp_path):
    video = tmp_path / "private.mp4"
    video.write_bytes(b"x")
    video.chmod(0)
    error = _raised(lambda: open(video, "rb"))
    assert failure_reason(error, str(video)) == "PermissionError: [Errno 13] Permission denied"


def test_a_bad_video_errors_leading_path_is_left_out_and_other_text_kept(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    error = _raised(lambda: decode_frames(str(empty), [0]))
    reason = failure_reason(error, str(empty))
    assert reason.startswith(f"{type(error).__name__}: ") and str(empty) not in reason, reason
    # another file named in the message is not this video's path: it stays
    other = BadVideoError(f"{empty}: its index names '{tmp_path / 'other.mp4'}'")
    assert failure_reason(other, str(empty)) == f"BadVideoError: its index names '{tmp_path / 'other.mp4'}'"
    # what open() raises for a file it may not read (as root, no chmod refuses one)
    refused = PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(empty))
    assert failure_reason(refused, str(empty)) == "PermissionError: [Errno 13] Permission denied"
    assert failure_reason(OSError(5, "Input/output error", "/elsewhere/b.mp4"), str(empty)) == \
        "OSError: [Errno 5] Input/output error: '/elsewhere/b.mp4'"
