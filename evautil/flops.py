"""FLOPs conventions: what one training step costs in forward passes, GPUs' stated peak throughput, and how a
model's size is printed.

One home for these, so the engine's MFU (``metrics.jsonl``), the model's FLOPs helpers, the benchmarks and the
commands' model lines agree.
"""

from __future__ import annotations

__all__ = ["TRAIN_STEP_FORWARDS", "RECOMPUTE_STEP_FORWARDS", "train_step_flops", "PEAK_TFLOPS", "PRECISIONS",
           "peak_flops", "model_size_text"]

# A training step costs about 3 forward passes (forward, and a backward of twice the forward), 4 when gradient
# checkpointing recomputes the forward during the backward.
TRAIN_STEP_FORWARDS = 3.0
RECOMPUTE_STEP_FORWARDS = 4.0


def train_step_flops(forward_flops: float, recompute: bool = False) -> float:
    """FLOPs of one clip's training step from its forward FLOPs."""
    return (RECOMPUTE_STEP_FORWARDS if recompute else TRAIN_STEP_FORWARDS) * float(forward_flops)


# Dense (no sparsity) peak TFLOP/s from the vendors' data sheets: (substring of the device name, bf16/fp16 tensor
# cores, fp32 matmuls on TF32 tensor cores, plain fp32; None when not listed). The first matching substring wins,
# so a more specific name comes first ('H100 PCIe' and 'H100 NVL' before 'H100': the SXM part reports itself as
# e.g. 'H100 80GB HBM3'). The sheets print tensor-core figures with sparsity: the dense ones are half of those.
PEAK_TFLOPS: tuple[tuple[str, float, float | None, float | None], ...] = (
    ("GB200", 2500.0, None, None), ("B200", 2250.0, None, None), ("B100", 1750.0, None, None),
    ("GH200", 989.4, 494.7, 67.0), ("H200 NVL", 835.5, 417.5, 60.0), ("H200", 989.4, 494.7, 67.0),
    ("H100 NVL", 835.5, 417.5, 60.0), ("H100 PCIe", 756.0, 378.0, 51.0), ("H100", 989.4, 494.7, 67.0),
    ("H800", 989.4, 494.7, 67.0), ("A100", 312.0, 156.0, 19.5), ("A800", 312.0, 156.0, 19.5),
    ("L40S", 362.0, None, 91.6), ("L40", 181.0, None, 90.5), ("L4", 121.0, None, 30.3), ("A40", 150.0, None, 37.4),
    ("A30", 165.0, None, 10.3), ("A10", 125.0, None, 31.2), ("RTX 6000 Ada", 364.0, None, 91.1),
    ("A6000", 155.0, None, 38.7), ("4090", 165.0, None, 82.6), ("3090", 71.0, None, 35.6), ("V100", 125.0, None, 15.7),
    ("T4", 65.0, None, 8.1),
)
PRECISIONS = ("bf16", "fp16", "tf32", "fp32")


def peak_flops(device_name: str | None, precision: str = "bf16") -> float | None:
    """Stated dense peak FLOP/s of a GPU by its name for 'bf16', 'fp16', 'tf32' (fp32 matmuls on tensor cores) or
    'fp32' (plain); None when unknown."""
    if not device_name:
        return None
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    for key, half, tf32, single in PEAK_TFLOPS:
        if key in device_name:
            tflops = {"tf32": tf32, "fp32": single}.get(precision, half)
            return None if tflops is None else tflops * 1e12
    return None


def model_size_text(num_params: int, forward_flops: float, clip: str = "clip") -> str:
    """``"<params> M parameters, <GFLOPs> GFLOPs per <clip> forward"``, four significant digits each: the same
    figures in the training log, ``verify_data`` and the ``--dry-run`` plan (which prints its numbers so)."""
    return f"{num_params / 1e6:.4g} M parameters, {forward_flops / 1e9:.4g} GFLOPs per {clip} forward"
