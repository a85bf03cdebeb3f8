"""Shared test fixtures: where ../shared lives, GPU skipping, small threads on the 2-core CI machine."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Reference material beside the checkout (SPEC.md, fixtures, real clips); EVA_SHARED_DIR overrides.
SHARED = Path(os.environ.get("EVA_SHARED_DIR", ROOT.parent / "shared"))


# With -m gpu (the GPU suite's short, time-boxed stage) these files run first, in this order: the quick checks of
# the driver, NVML and the model's CUDA kernels, then the decoding graphs, so that a box cut short loses the least.
GPU_TEST_ORDER = ("test_nvdec_caps.py", "test_metrics_nvml.py", "test_model.py", "test_gpu_pipelines.py")


def pytest_configure(config):
    # The tests that press Ctrl-C in a child process (os.kill(SIGINT)) stand for a terminal's Ctrl-C. A suite started
    # as a background job without job control (`make test &` in a script, nohup) inherits SIGINT ignored, and so
    # would every child: the project keeps an ignored SIGINT ignored, on purpose, and those tests would fail for the
    # launch, not the code. Children get the default again (an exec resets a handled signal, not an ignored one).
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _gpu_order(item) -> int:
    name = item.path.name
    return GPU_TEST_ORDER.index(name) if name in GPU_TEST_ORDER else len(GPU_TEST_ORDER)


def pytest_collection_modifyitems(config, items):
    if config.getoption("markexpr", "") == "gpu":
        items.sort(key=_gpu_order)  # stable: each file's tests keep their order
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (GPU tests run on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a Python child process that imports the project: this one's, with the checkout put
    first on PYTHONPATH. The caller's PYTHONPATH is kept, not replaced: packages may be importable only through
    it (DALI unpacked beside a preinstalled Python, as on the GPU machine)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def config_refusal(path: str | None, opts=(), **kwargs) -> str:
    """The one line of the ConfigError that ``configs.load_config(path, opts, **kwargs)`` raises (the test fails
    when it loads)."""
    from configs import ConfigError, load_config

    with pytest.raises(ConfigError) as err:
        load_config(path, opts, **kwargs)
    return str(err.value)


def require_reference_dir(path: Path, cuda: bool) -> Path:
    """The reference folder, or skip without it on a CPU machine. On a CUDA machine its absence fails the test:
    there the GPU tests are the point, and a skip would hide that they never ran."""
    if path.is_dir():
        return path
    message = f"reference folder {path} not found (set EVA_SHARED_DIR to the folder with data/ and fixtures/)"
    if cuda:
        pytest.fail(message + "; on a CUDA machine the GPU tests need it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return require_reference_dir(SHARED, torch.cuda.is_available())


@pytest.fixture(scope="session")
def real_clips_dir(shared_dir) -> Path:
    return shared_dir / "data" / "real"
