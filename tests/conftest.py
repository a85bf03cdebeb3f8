"""Shared test fixtures: where ../shared lives, GPU skipping, small threads on the 2-core CI machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Reference material beside the checkout (SPEC.md, fixtures, real clips); EVA_SHARED_DIR overrides.
SHARED = Path(os.environ.get("EVA_SHARED_DIR", ROOT.parent / "shared"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (GPU tests run on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"reference folder {SHARED} not found (set EVA_SHARED_DIR)")
    return SHARED


@pytest.fixture(scope="session")
def real_clips_dir(shared_dir) -> Path:
    return shared_dir / "data" / "real"
