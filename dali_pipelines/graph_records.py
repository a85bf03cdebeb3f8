"""The per-sample records a DALI graph is fed, and the external source's columns made from them.

The contract between the Python side and the graphs (``pipelines.py``) is one typed record per sample,
:class:`SampleRecord`: its source (encoded bytes plus frame indices for NVDEC's decoder in the graph, or frames the
decode workers already decoded with PyAV or DALI's CPU decoder), its augmentation parameters (:class:`TrainParams`
or :class:`TestParams`) and its row. Each field a graph receives declares its :class:`GraphInput` (type,
dimensions, layout); ``pipelines.record_layout`` derives the external source's outputs from these declarations and
:func:`batch_columns` turns a batch of records into those outputs from the same fields (:func:`graph_fields`), so
the two cannot drift.

Plain dataclasses over numpy arrays: no DALI import here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Sequence, Union

import numpy as np

from .colour import IDENTITY

__all__ = ["GraphInput", "EncodedSource", "DecodedSource", "TrainParams", "TestParams", "SampleRecord",
           "graph_fields", "batch_columns"]


@dataclass(frozen=True)
class GraphInput:
    """One external-source output: numpy dtype, number of dimensions, DALI layout. ``per_frame``: one more
    dimension (a value per frame) when per-frame colour jitter is on."""

    dtype: type
    ndim: int
    layout: str = ""
    per_frame: bool = False


def _input(dtype, ndim: int, layout: str = "", per_frame: bool = False):
    return field(metadata={"graph": GraphInput(dtype, ndim, layout, per_frame)})


@dataclass
class EncodedSource:
    """For DALI's decoder: the (possibly GOP-cut) encoded file, the frame indices to decode from it and the 3x3
    map from the decoder's BT.601 colours to those of the stream's YUV matrix tag (``colour.correction``; the
    identity for BT.601 and untagged streams)."""

    encoded: np.ndarray = _input(np.uint8, 1)
    frames: np.ndarray = _input(np.int32, 1)
    colour: np.ndarray = field(default_factory=lambda: IDENTITY,
                               metadata={"graph": GraphInput(np.float32, 2)})


@dataclass
class DecodedSource:
    """For the PyAV route: the requested frames, already decoded on the host, (F, H, W, 3) uint8 RGB."""

    video: np.ndarray = _input(np.uint8, 4, "FHWC")


@dataclass
class TrainParams:
    """Training augmentation of one clip: crop window in source pixels ([y, x]), flip, colour twist."""

    roi_start: np.ndarray = _input(np.float32, 1)
    roi_end: np.ndarray = _input(np.float32, 1)
    mirror: np.ndarray = _input(np.int32, 0)
    brightness: np.ndarray = _input(np.float32, 0, per_frame=True)
    contrast: np.ndarray = _input(np.float32, 0, per_frame=True)
    saturation: np.ndarray = _input(np.float32, 0, per_frame=True)
    hue: np.ndarray = _input(np.float32, 0, per_frame=True)
    color_ops: np.ndarray = _input(np.int32, 1)  # the per-clip colour program (color_jitter.make_color_ops)


@dataclass
class TestParams:
    """Multi-view test layout of one video: one crop window per spatial crop (rows of ``roi_start``/``roi_end``)
    and the gather ``new_order`` that lays the V*T output frames out as [crop][clip][t]."""

    __test__ = False  # not a test class, whatever its name

    roi_start: np.ndarray = _input(np.float32, 2)  # (NUM_CROP, 2)
    roi_end: np.ndarray = _input(np.float32, 2)
    new_order: np.ndarray = _input(np.int32, 1)


@dataclass
class SampleRecord:
    """Everything the graph receives for one sample."""

    source: Union[EncodedSource, DecodedSource]
    params: Union[TrainParams, TestParams]
    index: np.ndarray = _input(np.int32, 0)  # the row in the list, returned by the graph beside the video


def graph_fields(cls) -> list[tuple[str, GraphInput]]:
    """The fields of the record type ``cls`` that a graph receives, in declaration order, each with its
    :class:`GraphInput`."""
    return [(f.name, f.metadata["graph"]) for f in fields(cls) if "graph" in f.metadata]


def batch_columns(records: Sequence[SampleRecord]) -> tuple[list[np.ndarray], ...]:
    """The external source's outputs for a batch: one list per field of ``pipelines.record_layout``, in
    its order.

    Raises:
        ValueError: the records do not all have the same source and parameter types (a graph has one record
            layout).
    """
    if not records:
        raise ValueError("an external-source batch needs at least one record")
    kinds = {(type(r.source), type(r.params)) for r in records}
    if len(kinds) != 1:
        raise ValueError(f"one batch mixes record kinds {sorted((s.__name__, p.__name__) for s, p in kinds)}")
    parts = [("source", type(records[0].source)), ("params", type(records[0].params)), (None, SampleRecord)]
    columns = []
    for attr, cls in parts:
        for name, _ in graph_fields(cls):
            columns.append([getattr(getattr(r, attr) if attr else r, name) for r in records])
    return tuple(columns)
