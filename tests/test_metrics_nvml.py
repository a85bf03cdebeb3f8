"""NVML device lookup: the handle must be the GPU torch computes on, also under CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import pytest
import torch

from engine.metrics import nvml_handle


@pytest.mark.gpu
def test_nvml_handle_is_the_torch_device():
    pynvml = pytest.importorskip("pynvml")
    pynvml.nvmlInit()
    try:
        for i in range(torch.cuda.device_count()):
            handle = nvml_handle(pynvml, i)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
            assert uuid.endswith(str(torch.cuda.get_device_properties(i).uuid)), (i, uuid)
    finally:
        pynvml.nvmlShutdown()
