"""FLOPs conventions: what one training step costs in forward passes, and GPUs' stated peak throughput.

One home for both, so the engine's MFU (``metrics.jsonl``), the model's FLOPs helpers and the benchmarks agree.
"""

from __future__ import annotations

__all__ = ["TRAIN_STEP_FORWARDS", "RECOMPUTE_STEP_FORWARDS", "train_step_flops", "PEAK_TFLOPS", "peak_flops"]

# A training step costs about 3 forward passes (forward, and a backward of twice the forward), 4 when gradient
# checkpointing recomputes the forward during the backward.
TRAIN_STEP_FORWARDS = 3.0
RECOMPUTE_STEP_FORWARDS = 4.0


def train_step_flops(forward_flops: float, recompute: bool = False) -> float:
    """FLOPs of one clip's training step from its forward FLOPs."""
    return (RECOMPUTE_STEP_FORWARDS if recompute else TRAIN_STEP_FORWARDS) * float(forward_flops)


# Dense (no sparsity) peak TFLOP/s from the vendors' data sheets: (substring of the device name, bf16/fp16 tensor
# cores, fp32 via TF32 tensor cores or None when not listed). The first matching substring wins, so a more
# specific name comes first ('H100 PCIe' before 'H100': the SXM part reports itself as e.g. 'H100 80GB HBM3').
PEAK_TFLOPS: tuple[tuple[str, float, float | None], ...] = (
    ("GB200", 2500.0, None), ("B200", 2250.0, None), ("B100", 1750.0, None),
    ("GH200", 989.4, 494.7), ("H200", 989.4, 494.7), ("H100 PCIe", 756.0, 378.0), ("H100", 989.4, 494.7),
    ("H800", 989.4, 494.7), ("A100", 312.0, 156.0), ("A800", 312.0, 156.0),
    ("L40S", 362.0, None), ("L40", 181.0, None), ("L4", 121.0, None), ("A40", 150.0, None), ("A30", 165.0, None),
    ("A10", 125.0, None), ("RTX 6000 Ada", 364.0, None), ("A6000", 155.0, None), ("4090", 165.0, None),
    ("3090", 71.0, None), ("V100", 125.0, None), ("T4", 65.0, None),
)


def peak_flops(device_name: str | None, precision: str = "bf16") -> float | None:
    """Stated dense peak FLOP/s of a GPU by its name for 'bf16', 'fp16' or 'fp32'; None when unknown."""
    if not device_name:
        return None
    if precision not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"precision must be bf16, fp16 or fp32, got {precision!r}")
    for key, half, single in PEAK_TFLOPS:
        if key in device_name:
            tflops = single if precision == "fp32" else half
            return None if tflops is None else tflops * 1e12
    return None
