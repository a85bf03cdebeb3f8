"""Readings of the machine for the run's lines: the dense peak a run's precision is measured against (MFU), NVML's
GPU and decoder (NVDEC) utilisation and device memory, sampled in a thread of its own, and the memory of this
process and the processes it started. What the numbers mean in metrics.jsonl is :mod:`engine.metrics`'s docstring.
"""

from __future__ import annotations

import os
import resource
import threading
from typing import Any

import torch

from evautil.flops import peak_flops

__all__ = ["matmul_precision", "device_peak_flops", "nvml_handle", "NvmlSampler", "max_mem_gb", "host_memory_gb"]


def matmul_precision(train_precision: str) -> str:
    """The peak a run of ``TRAIN.PRECISION`` (bf16, fp16, fp32) is measured against (evautil.flops' precisions): an
    fp32 run's matmuls are plain fp32 unless torch was told to use TF32 (``torch.backends.cuda.matmul.allow_tf32``,
    or ``torch.set_float32_matmul_precision`` other than 'highest'); torch's default is plain fp32."""
    if train_precision != "fp32":
        return train_precision
    tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    return "tf32" if tf32 else "fp32"


def device_peak_flops(device: torch.device, precision: str = "bf16") -> float | None:
    """Stated dense peak FLOP/s of ``device`` for a run of ``TRAIN.PRECISION`` ``precision`` (evautil.flops' table:
    an fp32 run is measured against plain fp32 unless torch uses TF32), else None (CPUs, unknown GPUs)."""
    if device.type != "cuda":
        return None
    return peak_flops(torch.cuda.get_device_name(device), matmul_precision(precision))


def nvml_handle(nvml: Any, device_index: int) -> Any:
    """NVML's handle of CUDA device ``device_index``.

    NVML numbers GPUs physically and ignores CUDA_VISIBLE_DEVICES, so CUDA index i is generally not NVML index i
    (e.g. CUDA_VISIBLE_DEVICES=2,3 makes NVML device 2 CUDA device 0). The device is matched by its UUID, then by
    its PCI address; the bare index is used only when neither is available.
    """
    props = torch.cuda.get_device_properties(device_index)
    uuid = str(getattr(props, "uuid", "") or "")
    if uuid:
        try:  # torch prints the bare UUID; NVML wants it with its "GPU-" prefix
            return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
        except Exception:
            pass
    if hasattr(props, "pci_bus_id"):
        try:
            bus_id = f"{getattr(props, 'pci_domain_id', 0):08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
            return nvml.nvmlDeviceGetHandleByPciBusId(bus_id)
        except Exception:
            pass
    return nvml.nvmlDeviceGetHandleByIndex(device_index)


class NvmlSampler:
    """Background thread averaging NVML GPU and decoder (NVDEC) utilisation, and the highest device memory used,
    between :meth:`read` calls.

    ``device_index`` is the CUDA index (as torch numbers devices); see :func:`nvml_handle`."""

    def __init__(self, device_index: int, period_s: float = 0.5) -> None:
        self.available = False
        self._sums = [0.0, 0.0]
        self._counts = [0, 0]
        self._mem_since_read: int | None = None
        # Since construction (not reset by read): the highest NVDEC utilisation and device memory used (bytes).
        self.max_nvdec_util: float | None = None
        self.peak_mem_used = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = nvml_handle(pynvml, device_index)
        except Exception:  # no driver / no NVIDIA GPU: utilisation stays null
            return
        self.available = True
        self._period = period_s
        self._sample()
        self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        nv = self._nvml
        gpu = dec = None
        try:
            gpu = nv.nvmlDeviceGetUtilizationRates(self._handle).gpu
        except Exception:
            pass
        try:
            # (utilisation %, sampling period in us); with several NVDEC engines the percentage is their average.
            dec = nv.nvmlDeviceGetDecoderUtilization(self._handle)[0]
        except Exception:
            pass
        try:
            # Device-wide, so it includes DALI's allocations, which bypass torch's caching allocator.
            mem = int(nv.nvmlDeviceGetMemoryInfo(self._handle).used)
        except Exception:
            mem = 0
        with self._lock:
            for i, v in enumerate((gpu, dec)):
                if v is not None:
                    self._sums[i] += float(v)
                    self._counts[i] += 1
            if dec is not None:
                self.max_nvdec_util = max(float(dec), self.max_nvdec_util or 0.0)
            self.peak_mem_used = max(self.peak_mem_used, mem)
            if mem:
                self._mem_since_read = max(mem, self._mem_since_read or 0)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self._sample()

    def read(self) -> tuple[float | None, float | None, int | None]:
        """(mean gpu %, mean nvdec %, highest device memory used in bytes) since the last read; None where nothing
        was sampled."""
        if not self.available:
            return None, None, None
        with self._lock:
            gpu, dec = (self._sums[i] / self._counts[i] if self._counts[i] else None for i in range(2))
            mem = self._mem_since_read
            self._sums, self._counts, self._mem_since_read = [0.0, 0.0], [0, 0], None
        return gpu, dec, mem

    def close(self) -> None:
        if self.available:
            self._stop.set()
            self._thread.join(timeout=2)


def max_mem_gb(device: torch.device) -> float:
    """Peak CUDA memory torch's tensors took on ``device``, or the process's peak RSS on the CPU (GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def host_memory_gb() -> dict[str, float] | None:
    """Resident memory now (GiB, from /proc): this process's (``host_rss_gb``) and that of every process it started,
    summed (``workers_rss_gb``: decode and probe workers, multiprocessing's helpers). None without /proc. Unlike
    ``max_mem_gb`` (a peak, CUDA memory on a GPU), epoch after epoch these show whether host memory keeps growing."""
    page = os.sysconf("SC_PAGE_SIZE")
    parents: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    for name in names:
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    parents[int(name)] = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # gone meanwhile, or not readable
                continue
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)

    def rss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            return 0

    own = os.getpid()
    descendants, todo = [], list(children.get(own, []))
    while todo:
        pid = todo.pop()
        descendants.append(pid)
        todo += children.get(pid, [])
    return {"host_rss_gb": rss(own) / 2**30, "workers_rss_gb": sum(map(rss, descendants)) / 2**30}
