"""TRAIN.PRECISION on a device: the autocast dtype and whether a loss scaler is needed (training, evaluation and the
tools that run the model), what ``auto`` chose and why, and the name of a dtype for the run's lines.

The ranks of a job decide together (:func:`agree_across_ranks`, once the process group is up): a job mixing GPU
generations (a node of A100s, one of V100s) took bf16 on some ranks and fp16 with a loss scaler on the others, and
DDP then all-reduced gradients of different dtypes and scales. Before the group is up (a run's checks of its config)
and in a single process, each process answers for its own GPU."""

from __future__ import annotations

import inspect

import torch

from configs import ConfigError

from .distributed import DistContext, all_gather_objects

__all__ = ["resolve_precision", "precision_name", "chosen_precision", "native_bf16", "emulated_bf16_warning",
           "agree_across_ranks", "forget_job_answer"]

# The job's answer once its ranks agreed (agree_across_ranks): None before that, in a single process and after
# ``distributed.shutdown`` (a second run in the process, a test or a notebook, agrees anew); "" when every rank's GPU
# computes bf16 natively, else the lowest rank's GPU that does not, as "rank 1's Tesla V100-SXM2-32GB (compute
# capability 7.0)" (or, on that rank itself, without "rank 1's"). One answer per process, as its group.
_JOB_WITHOUT_NATIVE_BF16: str | None = None
# How many more ranks lack native bf16, for the same lines: " (nor do 2 more of the job's 4 ranks)", or "".
_MORE_WITHOUT_NATIVE_BF16 = ""


def agree_across_ranks(ctx: DistContext) -> None:
    """Every rank of ``ctx`` learns whether all the job's GPUs compute bf16 natively, and which one does not: from
    then on this module answers for the job, so that ``auto`` picks one precision on every rank and bf16's warning
    names the GPU that emulates it. A collective: every rank calls it (``distributed.init_from_env`` does, once
    the process group is up, before any model is built)."""
    global _JOB_WITHOUT_NATIVE_BF16, _MORE_WITHOUT_NATIVE_BF16
    on_gpu = ctx.device.type == "cuda"
    answers = all_gather_objects((not on_gpu or _native_here(ctx.device), _gpu(ctx.device) if on_gpu else ""), ctx)
    lacking = [(rank, gpu) for rank, (native, gpu) in enumerate(answers) if not native]
    _MORE_WITHOUT_NATIVE_BF16 = ""
    if not lacking:
        _JOB_WITHOUT_NATIVE_BF16 = ""
        return
    rank, gpu = lacking[0]
    _JOB_WITHOUT_NATIVE_BF16 = gpu if rank == ctx.rank else f"rank {rank}'s {gpu}"
    # the lowest rank's GPU, and how many more lack it (a node of V100s is several ranks), in the same line
    more = len(lacking) - 1
    _MORE_WITHOUT_NATIVE_BF16 = f" (nor do {more} more of the job's {len(answers)} ranks)" if more else ""


def forget_job_answer() -> None:
    """Drop the job's answer (``distributed.shutdown``): a later run in this process answers for its own GPUs."""
    global _JOB_WITHOUT_NATIVE_BF16, _MORE_WITHOUT_NATIVE_BF16
    _JOB_WITHOUT_NATIVE_BF16, _MORE_WITHOUT_NATIVE_BF16 = None, ""


def native_bf16(device: torch.device) -> bool:
    """Whether CUDA ``device`` computes bf16 in hardware; once the ranks agreed (:func:`agree_across_ranks`),
    whether every GPU of the job does."""
    if _JOB_WITHOUT_NATIVE_BF16 is not None and device.type == "cuda":
        return not _JOB_WITHOUT_NATIVE_BF16
    return _native_here(device)


def _native_here(device: torch.device) -> bool:
    """Whether CUDA ``device`` computes bf16 in hardware (Ampere, compute capability 8.0, and later). Older GPUs (V100,
    T4) run bf16 emulated, far slower than fp16. torch's check reads the current GPU, which every run sets to its
    own (``distributed.init_from_env``); where that check has no ``including_emulation`` (it may count emulation as
    support), the capability decides."""
    check = torch.cuda.is_bf16_supported
    if "including_emulation" in inspect.signature(check).parameters:
        return bool(check(including_emulation=False))
    return tuple(torch.cuda.get_device_capability(device)) >= (8, 0)


def _deciding_gpu(device: torch.device) -> str:
    """The GPU the choice was made for: the job's first without native bf16 where there is one, else this one."""
    return _JOB_WITHOUT_NATIVE_BF16 or _gpu(device)


def _gpu(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"


def chosen_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """('bf16', 'fp16' or 'fp32': what TRAIN.PRECISION ``precision`` runs as on ``device``, why) for the run's
    start-up line. ``auto``: bf16 on a GPU that computes it natively, else fp16 with its loss scaler (as the
    original's apex O1); fp32 on a CPU."""
    if precision != "auto":
        return precision, f"TRAIN.PRECISION {precision}"
    if device.type != "cuda":
        return "fp32", "TRAIN.PRECISION auto on a CPU"
    if native_bf16(device):
        every = ", as every rank's GPU does" if _JOB_WITHOUT_NATIVE_BF16 is not None else ""
        return "bf16", f"TRAIN.PRECISION auto: {_gpu(device)} computes bf16 natively{every}"
    ranks = " on every rank" if _JOB_WITHOUT_NATIVE_BF16 is not None else ""
    return "fp16", (f"TRAIN.PRECISION auto: {_deciding_gpu(device)} has no native bf16{_MORE_WITHOUT_NATIVE_BF16}, "
                    f"so fp16 with a loss scaler{ranks}, as the original's apex O1")


def emulated_bf16_warning(precision: str, device: torch.device) -> str:
    """The warning for TRAIN.PRECISION bf16 set on a GPU without native bf16 ("" otherwise): the run goes on,
    slowly."""
    if precision != "bf16" or device.type != "cuda" or native_bf16(device):
        return ""
    more = _MORE_WITHOUT_NATIVE_BF16
    return (f"TRAIN.PRECISION bf16 on {_deciding_gpu(device)}, which has no native bf16{more}: it is emulated "
            "and runs far slower than fp16; set TRAIN.PRECISION auto or fp16 (with a loss scaler, as the original's "
            "apex O1)")


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None for fp32, whether a GradScaler is needed) for TRAIN.PRECISION on ``device``
    (:func:`chosen_precision`).

    Raises:
        ConfigError: fp16 on a CPU (no loss scaler there; CPU fp16 autocast is also slow): use bf16 or fp32.
    """
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"TRAIN.PRECISION = 'fp16' needs a CUDA device (loss scaling); this run is on "
                          f"{device.type}: use 'bf16', 'fp32' or 'auto'")
    name, _ = chosen_precision(precision, device)
    return {"bf16": (torch.bfloat16, False), "fp16": (torch.float16, True)}.get(name, (None, False))


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """'bf16', 'fp16' or 'fp32' for the autocast dtype :func:`resolve_precision` returned."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, "fp32")
