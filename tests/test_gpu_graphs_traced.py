"""The GPU machine's graphs, defined on the CPU: DALI checks every operator's arguments against its schema when the
graph is defined, before anything is built, so the GPU-only branches (the ``mixed`` decoder, frames moved to the
GPU for augmentation) are checked here without a GPU. Only building them needs CUDA.

Each graph is defined the way the loader defines it on a GPU machine (``device_id`` set, ``augment_on_gpu``), and
checked for where its work runs: decoding on the route's backend, every operator that touches frames on the GPU,
and the same program of operators as the CPU machine's graph of the same routes.
"""

from __future__ import annotations

from collections import Counter

import pytest

from dali_pipelines.pipelines import test_pipeline as multiview_pipeline
from dali_pipelines.pipelines import train_pipeline
from dali_pipelines.routing import DALI_CPU, NVDEC, PYAV

# The loader's graphs: NVDEC has its own; the CPU routes share the host graph (one or both of them).
GRAPH_ROUTES = [(NVDEC,), (DALI_CPU, PYAV), (DALI_CPU,), (PYAV,)]
# Operators that take frames (not parameters): on a GPU machine they must all run on the GPU.
FRAME_OPERATORS = {"Resize", "CropMirrorNormalize", "Stack", "Cast", "reductions__Mean", "Cat",
                   "SequenceRearrange", "CoordTransform"}


def _no_data():
    raise StopIteration


def _define(training: bool, routes: tuple[str, ...], on_gpu: bool, **kwargs):
    """The graph as the loader defines it (pipelines' arguments), traced in Python only: nothing is built."""
    make = train_pipeline if training else multiview_pipeline
    shape = {} if training else {"num_crop": 3}
    pipe = make(_no_data, batch_size=2, num_threads=2, device_id=0 if on_gpu else None, routes=routes,
                input_size=64, dtype="float16", augment_on_gpu=on_gpu and routes != (NVDEC,), **shape, **kwargs)
    pipe._build_graph()  # DALI's own tracing step of build(); the backend (which needs CUDA) is never created
    return pipe


def _operators(pipe) -> list[tuple[str, str, dict]]:
    """(device, DALI schema name, the arguments it was given) of every operator of the traced graph. Read from
    DALI 2.4's operator objects (not a public API: the lock pins DALI)."""
    return [(op._op.device, getattr(op._op, "schema_name", type(op._op).__name__),
             dict(getattr(op._op, "_init_args", {}))) for op in pipe._ops]


@pytest.mark.parametrize("training", [True, False], ids=["train", "multiview"])
@pytest.mark.parametrize("routes", GRAPH_ROUTES, ids=["+".join(r) for r in GRAPH_ROUTES])
def test_gpu_machine_graph_decodes_on_its_backend_and_augments_on_the_gpu(training, routes):
    pipe = _define(training, routes, on_gpu=True)
    ops = _operators(pipe)
    decoders = [(device, args) for device, name, args in ops if name == "decoders__Video"]
    if NVDEC in routes:
        assert [d for d, _ in decoders] == ["mixed"]
        assert decoders[0][1]["affine"] is False and decoders[0][1]["pad_mode"] == "none"
        # the decoder's BT.601 colours mapped to the tag's, on the GPU (the CPU routes' workers do it for theirs)
        assert [d for d, name, _ in ops if name == "CoordTransform"] == ["gpu"]
    else:  # both CPU routes decode in the worker processes: the host graph only augments
        assert decoders == []
    frame_ops = [(device, name) for device, name, _ in ops if name in FRAME_OPERATORS]
    assert {"Resize", "CropMirrorNormalize"} <= {name for _, name in frame_ops}
    assert {device for device, _ in frame_ops} == {"gpu"}, sorted(set(frame_ops))
    assert [out.device for out in pipe._graph_outputs] == ["gpu", "cpu"]  # video on the GPU, index on the host


@pytest.mark.parametrize("training", [True, False], ids=["train", "multiview"])
@pytest.mark.parametrize("routes", GRAPH_ROUTES, ids=["+".join(r) for r in GRAPH_ROUTES])
def test_gpu_machine_graph_runs_the_cpu_machines_program(training, routes):
    """The same operators, argument for argument, whichever device runs them (the CPU machine has no NVDEC: its
    graph of the NVDEC route's program is the host graph's, which differs only in its inputs: frames, not encoded
    bytes and frame indices for a decoder, and in the decoder's colour correction, which the CPU route's workers
    apply before the frames reach the graph)."""
    cpu_routes = (DALI_CPU,) if routes == (NVDEC,) else routes

    def program(pipe):
        return Counter((name, repr(sorted((k, v) for k, v in args.items() if k != "affine")))
                       for _, name, args in _operators(pipe)
                       if name not in ("decoders__Video", "ExternalSource", "CoordTransform"))

    on_gpu, on_cpu = _define(training, routes, on_gpu=True), _define(training, cpu_routes, on_gpu=False)
    assert program(on_gpu) == program(on_cpu)
    assert {device for device, _, _ in _operators(on_cpu)} == {"cpu"}


@pytest.mark.parametrize("affine", [True, False])
def test_nvdec_affinity_setting_reaches_the_mixed_decoder(affine):
    ops = _operators(_define(True, (NVDEC,), on_gpu=True, nvdec_affine=affine))
    assert [args["affine"] for device, name, args in ops if name == "decoders__Video"] == [affine]


def test_per_frame_jitter_graph_on_the_gpu():
    ops = _operators(_define(True, (NVDEC,), on_gpu=True, per_frame_jitter=True))
    means = [(device, args) for device, name, args in ops if name == "reductions__Mean"]
    # per-frame contrast takes each frame's mean (axes 1, 2 of the F, H, W planes), on the GPU
    assert means and all(d == "gpu" and list(a["axes"]) == [1, 2] and a["keep_dims"] for d, a in means)


def test_decode_only_graph_on_nvdec():
    """The graph that probes which video broke an NVDEC graph (and decodes for the GPU exactness tests)."""
    from dali_pipelines.pipelines import _decode_only_pipeline

    pipe = _decode_only_pipeline(_no_data, decode_device="mixed", batch_size=2, num_threads=1, device_id=0)
    pipe._build_graph()
    decoders = [(device, args.get("affine"), args.get("pad_mode"))
                for device, name, args in _operators(pipe) if name == "decoders__Video"]
    assert decoders == [("mixed", False, "none")]
    assert [out.device for out in pipe._graph_outputs] == ["gpu"]
