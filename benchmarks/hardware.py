"""What the benchmarks run on and how they read it: CUDA (``cuda_available``; ``sync_cuda`` before the clock is
read, in ``time_repeats``; ``release_device_memory`` between rows), the GPU's memory and NVDEC use over a block
(``NvmlSampler``), and the machine description printed with every result (``machine_info``, ``machine_line``).
Process-tree CPU and memory monitoring: ``cpu_monitor``.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any, Callable

from evautil.workers import usable_cpus

__all__ = ["cuda_available", "sync_cuda", "release_device_memory", "time_repeats", "cpu_count", "NvmlSampler",
           "machine_info", "machine_line"]


def cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # torch missing or broken CUDA init: treat as CPU-only
        return False


def sync_cuda() -> None:
    """Wait for queued CUDA work so that a clock read after it measures the work (no-op without CUDA)."""
    if cuda_available():
        import torch
        torch.cuda.synchronize()


def release_device_memory() -> None:
    """Free what DALI's memory pools (device and pinned host) and torch's caching allocator hold unused: call it when
    a row's pipelines or loaders are closed. DALI keeps a closed pipeline's memory in its pools until asked, so NVML's
    device-wide "used", each GPU row's memory figure, carried the largest earlier row's buffers into every later
    row (a whole-video decode's into the 16-frame rows after it)."""
    try:
        from nvidia.dali.backend import ReleaseUnusedMemory
    except ImportError:  # no DALI here: nothing of its to free
        pass
    else:
        ReleaseUnusedMemory()
    if cuda_available():
        import torch
        torch.cuda.empty_cache()


def time_repeats(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; returns the seconds of each timed call.

    ``fn`` does one measurement's worth of work (e.g. N batches). CUDA is synchronised around each timed call.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync_cuda()
        t0 = time.perf_counter()
        fn()
        sync_cuda()
        times.append(time.perf_counter() - t0)
    return times


cpu_count = usable_cpus  # CPU cores this process may run on (the affinity mask, not the machine's total)


# ---------------------------------------------------------------------------------------------------------------
# NVML (GPU memory and NVDEC utilisation) sampling
# ---------------------------------------------------------------------------------------------------------------
class NvmlSampler:
    """GPU memory used, SM utilisation and NVDEC (decoder) utilisation of one GPU over a ``with`` block, sampled by
    the engine's NVML sampler (``engine.telemetry.NvmlSampler``, which finds the GPU by UUID).

    All figures are None when ``enabled`` is False or there is no NVIDIA driver. DALI allocates outside torch's
    caching allocator, so NVML's device-wide "used" memory is the figure that includes the decoder's buffers; it
    also includes other processes on the GPU, so run benchmarks on an otherwise idle GPU.
    """

    def __init__(self, device_index: int = 0, interval: float = 0.05, enabled: bool = True):
        self.device_index, self.interval, self.enabled = device_index, interval, enabled
        self._result = {"nvdec_util_mean": None, "nvdec_util_max": None, "sm_util_mean": None,
                        "gpu_mem_used_peak_mib": None}
        self._sampler = None

    def __enter__(self) -> "NvmlSampler":
        if self.enabled:
            from engine.telemetry import NvmlSampler as _Sampler

            self._sampler = _Sampler(self.device_index, period_s=self.interval)
        return self

    def __exit__(self, *exc) -> None:
        s, self._sampler = self._sampler, None
        if s is None or not s.available:
            return
        sm, dec, _ = s.read()
        s.close()
        if dec is not None:
            self._result = {"nvdec_util_mean": dec, "nvdec_util_max": s.max_nvdec_util, "sm_util_mean": sm,
                            "gpu_mem_used_peak_mib": s.peak_mem_used / 2**20}

    def result(self) -> dict:
        """Mean/max decoder and mean SM utilisation in percent, peak device memory used in MiB (None if off)."""
        return dict(self._result)


# ---------------------------------------------------------------------------------------------------------------
# Machine description
# ---------------------------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info() -> dict:
    """What produced the numbers: CPU, cores, GPU, library versions, command line."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(), "cpu_cores": cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        import torch
        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        info["gpu"] = None
    for mod, key in (("nvidia.dali", "dali"), ("av", "pyav"), ("decord", "decord")):
        try:
            m = __import__(mod, fromlist=["__version__"])
            info[key] = getattr(m, "__version__", "?")
        except Exception:
            info[key] = None
    return info


def machine_line(info: dict) -> str:
    gpu = info.get("gpu") or "no GPU"
    return f"{info['cpu']} ({info['cpu_cores']} cores), {gpu}; torch {info.get('torch')}, DALI {info.get('dali')}"
