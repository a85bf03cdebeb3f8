"""What a batch leaves the loader as: the clips' data type, a graph's output as a torch tensor (DLPack, no copy),
the parts of two graphs merged into their planned rows, and the labels and rows beside them (pinned where they are
copied to the GPU)."""

from __future__ import annotations

from typing import Sequence

import torch

from .draw import Sample


def clip_dtype(setting: str, device: str, precision: str) -> str:
    """The clips' data type for DATA.OUTPUT_DTYPE ``setting`` ('auto': float16 on the GPU, which halves the copy and
    is what mixed-precision autocast computes in anyway, but float32 for TRAIN.PRECISION fp32, whose run must not
    see inputs rounded to float16; float32 on the CPU)."""
    if setting != "auto":
        return setting
    return "float16" if device == "gpu" and precision != "fp32" else "float32"


def labels_pinned(device: str, training: bool) -> bool:
    """Whether a batch's labels go out in pinned host memory: only where they are copied to the GPU, i.e. training
    on a GPU (a copy from pageable memory would wait for the GPU's queued work first). Evaluation reads labels and
    rows on the host (``engine.evaluate``): pinning them there cost a page-locked allocation per batch for nothing."""
    return device == "gpu" and training


def to_torch(tl, device_id: int | None) -> torch.Tensor:
    """A graph's video output ``tl`` as a torch tensor without a copy; on a GPU machine (``device_id`` set) every
    route's output is on the GPU already (CPU routes augment there, ``pipelines._decode``)."""
    t = tl.as_tensor()
    if device_id is not None:
        with torch.cuda.device(device_id):
            return torch.from_dlpack(t)
    return torch.from_dlpack(t)


def into_rows(merged: torch.Tensor | None, part: torch.Tensor, positions: Sequence[int], size: int) -> torch.Tensor:
    """``part`` copied into its planned rows ``positions`` of a batch of ``size`` videos (``merged``, made at the
    first part when None): one copy of the batch (a cat and a gather were two)."""
    if merged is None:
        merged = torch.empty((size,) + part.shape[1:], dtype=part.dtype, device=part.device)
    at = torch.tensor(positions)
    if part.is_cuda:  # from pageable memory the copy would wait for the GPU's queued work first
        at = at.pin_memory().to(part.device, non_blocking=True)
    merged.index_copy_(0, at, part)
    return merged


def batch_out(video: torch.Tensor, samples: Sequence[Sample], pinned: bool) -> dict[str, torch.Tensor]:
    """The batch a loader yields: ``video``, and the planned samples' labels and list rows (int64 on the host, the
    labels pinned when ``pinned``, :func:`labels_pinned`)."""
    labels = torch.tensor([s.label for s in samples], dtype=torch.int64)
    if pinned:
        labels = labels.pin_memory()
    return {"video": video, "label": labels, "index": torch.tensor([s.row for s in samples], dtype=torch.int64)}
