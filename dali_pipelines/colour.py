"""YUV to RGB matrices: DALI's decoders convert every stream with BT.601; PyAV (and the original's decord) follow
the matrix the stream is tagged with. Frames that DALI decoded are corrected to the tagged matrix here.

For one range (limited or full) both conversions are ``RGB = A_m . (Y - y0, U - 128, V - 128)`` with the same
offsets and scales, so the tag's colours are one 3x3 linear map of DALI's: ``RGB_tag = A_tag . A_601^-1 . RGB_601``
(exact up to rounding and the clamping at 0 and 255). DALI's CPU decoder follows the full-range flag as PyAV does
(measured: a full-range stream tagged BT.709 needs the limited-range stream's map), so the map holds for both
ranges. Tags are FFmpeg's names of the stream's ``colorspace`` (``ffprobe``'s ``color_space``), as the index
records them.

No DALI import here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["colorspace_name", "correction", "IDENTITY", "correct_frames", "BT601_NAMES"]

# FFmpeg's AVColorSpace names, by code (libavutil's av_color_space_name).
_AVCOL_SPC_NAMES = ("gbr", "bt709", "unknown", "reserved", "fcc", "bt470bg", "smpte170m", "smpte240m", "ycgco",
                    "bt2020nc", "bt2020c", "smpte2085", "chroma-derived-nc", "chroma-derived-c", "ictcp")
# Tags converted with BT.601's matrix by every decoder ('unknown': untagged, which FFmpeg also converts so).
BT601_NAMES = frozenset({"unknown", "reserved", "bt470bg", "smpte170m"})
# The luma weights (Kr, Kb) of the other matrices FFmpeg's converter follows: the standards' values, which its
# integer tables round.
_KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "fcc": (0.30, 0.11), "smpte240m": (0.212, 0.087),
          "bt2020nc": (0.2627, 0.0593)}
IDENTITY = np.eye(3, dtype=np.float32)


def colorspace_name(code) -> str:
    """FFmpeg's name of an AVColorSpace code (PyAV's ``frame.colorspace``); 'unknown' for None."""
    if code is None:
        return "unknown"
    code = int(code)
    return _AVCOL_SPC_NAMES[code] if 0 <= code < len(_AVCOL_SPC_NAMES) else f"code{code}"


def _yuv_to_rgb(kr: float, kb: float) -> np.ndarray:
    kg = 1.0 - kr - kb
    return np.array([[1.0, 0.0, 2 * (1 - kr)],
                     [1.0, -2 * (1 - kb) * kb / kg, -2 * (1 - kr) * kr / kg],
                     [1.0, 2 * (1 - kb), 0.0]])


def correction(colorspace: str) -> np.ndarray | None:
    """The 3x3 map (float32, applied to RGB column vectors) from BT.601-converted RGB to ``colorspace``'s; None
    when the tag converts as BT.601 or is one this code does not correct (RGB streams, YCgCo, constant-luminance
    BT.2020, ICtCp, or not recorded: ''), whose frames stay as DALI decodes them."""
    weights = _KR_KB.get(colorspace) if colorspace not in BT601_NAMES else None
    if weights is None:
        return None
    return (_yuv_to_rgb(*weights) @ np.linalg.inv(_yuv_to_rgb(*_KR_KB["bt601"]))).astype(np.float32)


def correct_frames(frames: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """uint8 RGB frames (..., 3) mapped by ``matrix``, rounded and clamped to uint8."""
    out = np.matmul(frames, matrix.T, dtype=np.float32)  # one float32 pass, no float64 copy
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)
