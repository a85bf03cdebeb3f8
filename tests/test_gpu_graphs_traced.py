"""The GPU machine's graphs, defined on the CPU: DALI checks every operator's arguments against its schema when the
graph is defined, before anything is built, so the GPU-only branches (the ``mixed`` decoder, frames moved to the
GPU for augmentation) are checked here without a GPU. Only building them needs CUDA.

Each graph is defined the way the loader defines it on a GPU machine (``device_id`` set, ``augment_on_gpu``), and
checked for where its work runs: decoding on the route's backend, every operator that touches frames on the GPU,
and the same program of operators as the CPU machine's graph of the same routes.

The NVDEC route's graph is also run here, with DALI's CPU decoder standing in for NVDEC: its records (encoded bytes,
frame indices, colour map), the decoder and the colour map inside the graph, its batches merged with the host
graph's and its failure recovery are the same code on either machine.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from dali_pipelines.pipelines import graphs_serving
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


# ------------------------------------------------------------------------------------- the NVDEC graph, run
def _nvdec_graph_on_the_cpu(monkeypatch) -> None:
    """Make the loader build and run its NVDEC graph on this machine: the ``nvdec`` route's decoder is DALI's CPU
    one (same operator, same arguments but ``affine``, which only the mixed backend has), and the machine's policy
    is a GPU's whose driver says NVDEC decodes VP9 from 80x64 (the 96x72 clips go to NVDEC, the 64x48 ones to the
    CPU route). Everything else of the route is the GPU machine's: records of encoded bytes, frame indices and
    colour map, the decoder and the colour map in the graph, a graph of its own beside the host graph."""
    from dali_pipelines import loader_routing
    from dali_pipelines import pipelines
    from dali_pipelines.nvdec_caps import DecoderCaps
    from dali_pipelines.routing import RoutingPolicy

    spec = pipelines.ROUTES[NVDEC]
    monkeypatch.setitem(pipelines.ROUTES, NVDEC, pipelines.RouteSpec("cpu", spec.source, spec.graph))
    caps = {("vp9", "420", 8): DecoderCaps(True, 1, (80, 64), (4096, 4096), 65536)}
    monkeypatch.setattr(loader_routing, "machine_policy",
                        lambda device, cpu_decoder="auto", *rest: RoutingPolicy(True, cpu_decoder=cpu_decoder,
                                                                                driver_caps=caps))


@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory):
    """VP9 clips of two sizes, alternating in one list, and one clip tagged BT.709 (its colours are mapped in the
    NVDEC graph, by the worker on the CPU routes)."""
    from tests.test_pipelines import _write_ramps
    from tests.video_fixtures import make_clip_dataset

    root = str(tmp_path_factory.mktemp("two_sizes"))
    big = make_clip_dataset(root, [24, 30, 26, 33], list_name="big.txt")
    small = make_clip_dataset(root + "/small", [28, 25, 27], size=(64, 48), list_name="small.txt")
    _write_ramps(root + "/videos/bt709.webm", 1, num_frames=12)
    big, small = open(big).read().splitlines(), ["small/" + ln for ln in open(small).read().splitlines()]
    lines = [big[0], small[0], big[1], small[1], big[2], small[2], big[3], "videos/bt709.webm 2"]
    with open(root + "/list.txt", "w") as f:
        f.write("\n".join(lines) + "\n")
    return root, root + "/list.txt"


@pytest.mark.parametrize("split", ["train", "test"])
def test_nvdec_graph_run_with_dalis_cpu_decoder_gives_the_cpu_routes_pixels(two_sizes, monkeypatch, split):
    """The NVDEC graph (the only one with a decoder in it) had run nowhere but on a GPU. Run on this machine with
    DALI's CPU decoder in NVDEC's place, a loader whose batches mix it with the host graph yields every clip with
    exactly the pixels a CPU machine's loader yields (colour jitter on; a BT.709 clip, whose colour map runs in the
    graph, to the rounding of one grey level), in the planned rows."""
    from dali_pipelines.loader import build_loader
    from tests.video_fixtures import pixels_by_row, small_cfg

    root, lst = two_sizes
    opts = {"TRAIN.BATCH_SIZE": 4, "TEST.BATCH_SIZE": 3, "TEST.NUM_CLIP": 2, "TEST.NUM_CROP": 3,
            "AUG.COLOR_JITTER": 1.0, "DATA.CPU_ROUTE_MAX_SHARE": 1.0}
    cpu = pixels_by_row(build_loader(small_cfg(root, lst, lst, **opts), split))
    _nvdec_graph_on_the_cpu(monkeypatch)
    loader = build_loader(small_cfg(root, lst, lst, **opts), split)
    assert loader.routes_in_use() == [NVDEC, DALI_CPU]
    assert {r for r, vr in loader.video_routes.items() if vr.route == NVDEC} == {0, 2, 4, 6, 7}
    assert loader.index.infos[7].colorspace == "bt709"
    assert set(graphs_serving(loader.routes_in_use())) == {"nvdec", "host"}
    nvdec = pixels_by_row(loader)
    assert sorted(nvdec) == sorted(cpu) == list(range(8))
    for row in cpu:
        diff = np.abs(nvdec[row] - cpu[row])
        if row == 7:  # the colour map rounds to 8 bits in the graph, by numpy in the CPU route's worker
            assert diff.max() <= 1.0 + 1e-4 and diff.mean() < 0.01, (diff.max(), diff.mean())
        else:
            assert diff.max() == 0.0, (row, diff.max())


def test_nvdec_graph_failure_quarantines_the_video_by_its_decode_alone(two_sizes, monkeypatch):
    """A video the index overstates fails the NVDEC graph's batch; the loader finds it by decoding the in-flight
    samples alone on the route's backend, quarantines it by name and rebuilds: every other video is yielded."""
    import dataclasses

    from dali_pipelines.loader import build_loader
    from tests.video_fixtures import small_cfg

    root, lst = two_sizes
    _nvdec_graph_on_the_cpu(monkeypatch)
    loader = build_loader(small_cfg(root, "", lst, **{"TEST.BATCH_SIZE": 3}), "test")
    info = loader.index.infos[2]
    loader.index.infos[2] = dataclasses.replace(info, num_frames=info.num_frames + 30)
    rows = [r for b in loader for r in b["index"].tolist()]
    loader.close()
    assert rows == [0, 1, 3, 4, 5, 6, 7]
    assert loader.stats["rebuilds"] == 1 and loader.stats["route_fallbacks"] == 0
    assert "shorter than its index says" in loader.stats["skipped"][0]
