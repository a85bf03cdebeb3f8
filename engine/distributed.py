"""Process-group setup from the torchrun environment, DDP wrapping and the few collectives the engine needs.

``torchrun --nproc_per_node N train.py ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; a plain ``python train.py``
sets none of them and runs as a single process without a process group. GPU runs use NCCL, CPU runs gloo.
Before joining, ``MASTER_ADDR`` and ``MASTER_PORT`` are checked (``rendezvous_address``, also for a dry run).
The join itself waits for the other processes for at most ``EVA_RENDEZVOUS_TIMEOUT_S`` seconds, in a way that
SIGTERM and Ctrl-C interrupt (``engine/rendezvous.py``).

The object collectives and barriers (gathers of predictions and loader counters, the agreement after a checkpoint
write) run in a second, gloo group with a long timeout (``EVA_WAIT_TIMEOUT_MIN``, 120 minutes by default): a rank
that waits there for slower ones (rank 0 writing a 12 GB checkpoint, feature extraction over videos of uneven
length) must not be killed by NCCL's 10-minute watchdog, which keeps guarding the training step's collectives.

A process that hangs instead of failing is found by ``engine/liveness.py``, started with the process group:
after ``EVA_HEARTBEAT_TIMEOUT_S`` seconds (300 by default, 0: off) without a sign of another rank, a process ends
with one line naming it.
"""

from __future__ import annotations

import inspect
import ipaddress
import os
import random
import re
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import liveness, rendezvous
from .run_files import standard_json

__all__ = [
    "DistContext", "gpu_index", "init_from_env", "wrap_ddp", "unwrap", "all_reduce_sum", "all_gather_objects",
    "barrier", "broadcast_object", "shutdown", "seed_everything", "lost_peer", "local_rank_from_env",
    "record_failure", "leave_after", "joined", "wait_settings", "rendezvous_address",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 for a single process).
        world_size: number of processes.
        local_rank: rank on this node; selects the GPU (:func:`gpu_index`).
        device: the torch device this process computes on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def device_id(self) -> int | None:
        """CUDA device index for the data pipeline, or None on the CPU."""
        return self.device.index if self.device.type == "cuda" else None


# The gloo group of the object collectives and barriers (see the module's docstring); None: the default group.
_WAIT_GROUP: Any = None


def _env_int(name: str, default: int, minimum: int | None = None, hint: str = "", maximum: int | None = None,
             most: str = "") -> int:
    """``name`` as an integer (``default`` when unset), from ``minimum`` (``hint`` says what it counts) to
    ``maximum`` (``most`` says why no more)."""
    value = os.environ.get(name, "")
    try:
        number = int(value) if value else default
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"environment variable {name}={value!r} must be at least {minimum}{hint}")
    if maximum is not None and number > maximum:
        raise ValueError(f"environment variable {name}={value!r} must be at most {maximum} ({most})")
    return number


# Set by srun in a job step and by mpirun: the number of tasks a process of several was started with.
_TASK_COUNTS = ("SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE")


def rank_and_world_size() -> tuple[int, int]:
    """RANK and WORLD_SIZE as a launcher sets them (0 and 1 when unset).

    Raises:
        ValueError: one that is not an integer, a WORLD_SIZE below 1 or a RANK outside it, naming the variables
            (else a dry run divided by zero, and a run indexed its lists before torch refused the rank); no
            WORLD_SIZE in a task of several that srun or mpirun started (each then trained alone); no RANK with a
            WORLD_SIZE above 1 (each process took rank 0: one waited at the rendezvous, the others failed there).
    """
    world_size = _env_int("WORLD_SIZE", 1, 1, " (the number of processes of the run)")
    rank = _env_int("RANK", 0, 0)
    tasks = next(((name, os.environ[name]) for name in _TASK_COUNTS if os.environ.get(name, "1") != "1"), None)
    if tasks is not None and not os.environ.get("WORLD_SIZE"):  # each would train alone, into the same OUTPUT
        # a single process meant to run alone (a shell inside a job step of several tasks) must not be stuck either
        alone = "srun --ntasks=1" if tasks[0].startswith("SLURM") else "mpirun -np 1"
        raise ValueError(f"this process is one of {tasks[0]}={tasks[1]} tasks, but WORLD_SIZE is not set, so each "
                         "would run alone: start torchrun in each task (one per node), or set RANK, WORLD_SIZE, "
                         "MASTER_ADDR and MASTER_PORT (and LOCAL_RANK or SLURM_LOCALID) for every task; to run "
                         f"one process alone, start it as a step of one task ({alone} python train.py ...) or set "
                         "WORLD_SIZE=1 for it")
    if world_size > 1 and not os.environ.get("RANK"):  # each process would be rank 0: all but one wait, or fail
        raise ValueError(f"WORLD_SIZE={world_size} but environment variable RANK is not set, so every process would "
                         "be rank 0: torchrun sets it; launched without torchrun, set RANK for every process, "
                         f"numbering them from 0 to {world_size - 1} (under srun: each task's SLURM_PROCID)")
    if rank >= world_size:
        unset = "" if os.environ.get("WORLD_SIZE") else " (unset: one process)"
        raise ValueError(f"environment variable RANK={rank} is not below WORLD_SIZE={world_size}{unset}: a launcher "
                         "sets both, numbering the processes from 0")
    return rank, world_size


# Where launchers put a process's rank within its node: torchrun, then SLURM's srun, then Open MPI's mpirun.
LOCAL_RANK_VARIABLES = ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK")


def local_rank_from_env(world_size: int, visible_gpus: int) -> int:
    """This process's rank within its node: LOCAL_RANK for a single process (0 when unset), else the first of
    :data:`LOCAL_RANK_VARIABLES` that is set; 0 for a process of several that sees at most one GPU.

    Raises:
        ValueError: several processes, several visible GPUs and none of the variables: every process would take
            GPU 0 (NCCL then stops at its first collective with "Duplicate GPU detected"); a value that is not an
            integer from 0.
    """
    for name in LOCAL_RANK_VARIABLES if world_size > 1 else LOCAL_RANK_VARIABLES[:1]:
        if os.environ.get(name, ""):  # -1 (the "no launcher" of many scripts) made a GPU run a cuda:-1 traceback
            return _env_int(name, 0, 0, " (the process's rank within its node; unset it for a single process)")
    if world_size > 1 and visible_gpus > 1:
        raise ValueError(f"WORLD_SIZE={world_size} but none of {', '.join(LOCAL_RANK_VARIABLES)} is set, and this "
                         f"process sees {visible_gpus} GPUs: launch with torchrun (it sets LOCAL_RANK), or set "
                         "LOCAL_RANK to the process's rank within its node")
    return 0


def gpu_index(local_rank: int, visible: int) -> int:
    """The GPU a process with ``local_rank`` computes on when it sees ``visible`` GPUs: the one of its local rank
    (torchrun, one launcher per node), or the only one it sees (a scheduler that gives every process its own GPU
    through CUDA_VISIBLE_DEVICES, where LOCAL_RANK still counts the processes of the node).

    Raises:
        ValueError: more processes on the node than GPUs each can see, naming both numbers.
    """
    if local_rank < visible:
        return local_rank
    if visible == 1:
        return 0
    shown = os.environ.get("CUDA_VISIBLE_DEVICES")
    raise ValueError(f"LOCAL_RANK={local_rank} but this process sees {visible} GPUs"
                     + (f" (CUDA_VISIBLE_DEVICES={shown})" if shown is not None else "")
                     + f": start at most {visible} processes per node (torchrun --nproc_per_node {visible}), "
                     "or give each process one GPU")


def wait_settings() -> tuple[int, int, int]:
    """(EVA_WAIT_TIMEOUT_MIN, EVA_HEARTBEAT_TIMEOUT_S, EVA_RENDEZVOUS_TIMEOUT_S) from the environment: the wait
    group's timeout in minutes, the liveness check's in seconds and the rendezvous's in seconds. A run of several
    processes reads them before joining; a dry run checks them too, before the job is queued.

    Raises:
        ValueError: a value that is not an integer, below its minimum or past a week (one line naming the
            variable): a longer wait is a typo (a digit too many), which waited in silence for ever at the
            rendezvous, and overflowed into a traceback in the other two.
    """
    week_s = rendezvous.MAX_TIMEOUT_S
    # 0 minutes makes every wait time out at once (new_group itself failed with a traceback)
    wait_min = _env_int("EVA_WAIT_TIMEOUT_MIN", 120, 1, " (minutes; unset it for the default, 120)", week_s // 60,
                        "minutes, a week: a rank that waits that long for the others is stuck; unset it for the "
                        "default, 120")
    heartbeat_s = _env_int("EVA_HEARTBEAT_TIMEOUT_S", 300, 0, " (seconds; 0 turns the check off)", week_s,
                           "seconds, a week: a process silent that long is not coming back; 0 turns the check off")
    default_s = rendezvous.DEFAULT_TIMEOUT_S
    rendezvous_s = _env_int("EVA_RENDEZVOUS_TIMEOUT_S", default_s, 1,
                            f" (seconds; unset it for the default, {default_s})", week_s,
                            "seconds, a week: processes of one run that have not met by then are not coming; unset "
                            f"it for the default, {default_s}")
    return wait_min, heartbeat_s, rendezvous_s


def rendezvous_address(world_size: int) -> str:
    """Where the processes of a run of ``world_size`` meet, as env:// reads it: ``MASTER_ADDR:MASTER_PORT`` and the
    address the host name resolves to here. A run of several processes checks it before joining (a typo'd host
    name otherwise stops every rank in torch's rendezvous, with a traceback, or makes it wait until a timeout), and
    a dry run before the job is queued. torchrun sets both variables; a launch without it must.

    Raises:
        ValueError: a variable unset, a port that is no number from 1 to 65535, or a host name that does not
            resolve here (one line naming the variable and its value).
    """
    how = "torchrun sets it; launched without torchrun, set MASTER_ADDR and MASTER_PORT alike for every process"
    addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    for name, value in (("MASTER_ADDR", addr), ("MASTER_PORT", port)):
        if not value:
            raise ValueError(f"WORLD_SIZE={world_size} but environment variable {name} is not set: the processes "
                             f"meet at MASTER_ADDR:MASTER_PORT, rank 0's host and a free port there ({how})")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"environment variable MASTER_PORT={port!r} is not a port number (1 to 65535; {how})")
    try:
        resolved = socket.getaddrinfo(addr, int(port), type=socket.SOCK_STREAM)[0][4][0]
    except (socket.gaierror, UnicodeError) as e:
        raise ValueError(f"environment variable MASTER_ADDR={addr!r} does not resolve to an address here "
                         f"({getattr(e, 'strerror', None) or e}): set it to the host name or address of rank 0's "
                         "node") from None
    # a loopback address is reachable from this node only: a run across nodes would wait at the rendezvous
    loopback = " (loopback: reachable from this node only)" if ipaddress.ip_address(resolved).is_loopback else ""
    return f"{addr}:{port}" + ("" if resolved == addr else f" ({resolved})") + loopback


def init_from_env(device: str = "auto") -> DistContext:
    """Read RANK / WORLD_SIZE / LOCAL_RANK and join the process group when WORLD_SIZE > 1; the ranks then agree on
    whether every GPU of the job computes bf16 natively (``precision.agree_across_ranks``).

    Args:
        device: "auto" (the GPU of :func:`gpu_index` when CUDA is available, else the CPU), "cpu" or "cuda".

    Raises:
        ValueError: a bad launcher variable (:func:`rank_and_world_size`, :func:`rendezvous_address`), for rank 0
            of a launch without torchrun a MASTER_PORT another program listens on, or a rendezvous that did not
            meet every rank within EVA_RENDEZVOUS_TIMEOUT_S (``rendezvous.timeout_line``); one line each.
        BaseException: what a signal's handler raises during the rendezvous (a stop signal's ``Stopped`` within
            ``evautil.interrupt.stop_signals_raise``, a Ctrl-C's KeyboardInterrupt): it ends the wait at once.
    """
    rank, world_size = rank_and_world_size()
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    local_rank = local_rank_from_env(world_size, torch.cuda.device_count() if use_cuda else 0)
    if use_cuda:
        index = gpu_index(local_rank, torch.cuda.device_count())
        torch.cuda.set_device(index)
        dev = torch.device("cuda", index)
    else:
        dev = torch.device("cpu")
    global _WAIT_GROUP
    if world_size > 1:  # before joining: a bad value stops every rank with one line, none waits for the others
        wait_min, heartbeat_s, rendezvous_s = wait_settings()
    if world_size > 1 and not dist.is_initialized():
        meet = rendezvous_address(world_size)

        def join() -> None:  # MASTER_ADDR / MASTER_PORT come from torchrun; env:// reads them
            if use_cuda:  # the current GPU is the thread's own
                torch.cuda.set_device(dev)
            backend = "nccl" if use_cuda else "gloo"
            timeout = rendezvous.group_timeout(backend)  # torch's own, for the collectives
            store = rendezvous.meeting_store(rank, world_size, rendezvous_s, timeout)
            dist.init_process_group(backend=backend, store=store, timeout=timeout, rank=rank, world_size=world_size,
                                    device_id=dev if use_cuda else None)

        try:
            if not rendezvous.joined_within(join, rendezvous_s):
                raise ValueError(rendezvous.timeout_line(rank, world_size, meet, rendezvous_s))
        except dist.DistNetworkError as e:
            if not re.search(r"EADDRINUSE|address already in use", str(e), re.IGNORECASE):
                raise
            # rank 0 listens at MASTER_PORT (launched without torchrun): another run or program there was a traceback
            port = os.environ.get("MASTER_PORT")
            raise ValueError(f"environment variable MASTER_PORT={port} is in use on this host (rank 0's, where the "
                             "processes meet): another run or program listens there; set MASTER_PORT to a free port, "
                             "the same for every process") from None
    if world_size > 1 and _WAIT_GROUP is None:  # also when the caller had joined a group already (every rank)
        _WAIT_GROUP = dist.new_group(backend="gloo", timeout=timedelta(minutes=wait_min))
        liveness.start(dist.distributed_c10d._get_default_store(), rank, world_size, heartbeat_s)
    ctx = DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)
    if world_size > 1:  # one precision for the job, before any model is built (a job may mix GPU generations)
        from .precision import agree_across_ranks  # precision reads this module's collectives

        agree_across_ranks(ctx)
    return ctx


def wrap_ddp(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel with the original's settings; the model itself for a single process."""
    if not ctx.distributed:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
        find_unused_parameters=False, **_no_buffer_sync_in_forward())


def _no_buffer_sync_in_forward() -> dict:
    """The original's ``broadcast_buffers=False``. Newer torch deprecates that name (a FutureWarning on every rank
    of every run) for ``forward_sync_buffers``, which still syncs buffers once at wrapping: harmless here, where every
    rank builds the same buffers (the EVA models have none)."""
    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile and DDP wrappers (for state dicts, eval and parameter groups)."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over all ranks in place (identity for one process); returns it."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order (picklable objects; fine for per-video prediction lists)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj, group=_WAIT_GROUP)
    return out


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_WAIT_GROUP)
    return box[0]


def barrier(ctx: DistContext, timeout: timedelta | None = None) -> None:
    """Wait for every rank. ``timeout``: how long, when a rank may take longer than the wait group's own timeout
    (``EVA_WAIT_TIMEOUT_MIN``) to get here; a rank that dies meanwhile ends the wait at once (gloo sees its
    connection close)."""
    if not ctx.distributed:
        return
    if timeout is None:
        dist.barrier(group=_WAIT_GROUP)
    else:
        dist.monitored_barrier(group=_WAIT_GROUP, timeout=timeout)


# How gloo, NCCL and the sockets under them report a process of the group that is gone (exited, crashed, killed).
_LOST_PEER = re.compile(r"connection closed by peer|connection reset by peer|broken pipe|remote process exit"
                        r"|communicator was aborted|ncclRemoteError", re.IGNORECASE)


def lost_peer(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is a collective that lost another process of the group:
    a consequence of that process's failure, not a failure of this one."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, RuntimeError) and _LOST_PEER.search(str(error)):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def record_failure(line: str, detail: str = "") -> float | None:
    """Record why this process ends where torchrun reads it (the file named by TORCHELASTIC_ERROR_FILE, in the
    format of torch's ``ErrorHandler``), at once, before the process closes anything: torchrun's report then shows
    ``detail`` (else ``line``) for this rank instead of 'To enable traceback see ...', and names as the root cause
    the failure recorded first (in whole seconds; of two in one second, the process that exited first). Returns
    the time recorded; None outside torchrun or when the file cannot be written."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return None
    now = time.time()
    data = {"message": {"message": line, "extraInfo": {"py_callstack": detail or line, "timestamp": str(int(now))}}}
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(standard_json(data))
    except OSError:
        return None
    return now


def leave_after(recorded: float | None) -> None:
    """Before a process whose own failure was recorded at ``recorded`` (:func:`record_failure`) leaves the process
    group: wait for the next whole second (at most one; the loaders' closing has usually taken longer). The other
    processes meet the failure only when this one's connections close; from then on they record a later second,
    so torchrun names this process as the root cause and not one of them, whichever exits first."""
    if recorded is not None and joined():
        time.sleep(max(0.0, int(recorded) + 1 - time.time()))


def joined() -> bool:
    """Whether this process is in a process group of several processes."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shutdown(graceful: bool = True) -> None:
    """Leave the process group (safe to call when none was created).

    ``graceful`` False: this process ends on a failure (its own, or a peer's), which the other ranks may not share.
    An NCCL group is then aborted, not destroyed: NCCL's destroy is a collective of the node's ranks, which hangs
    when a peer has died or is still inside a collective (gloo's is local and stays); and the liveness check tells
    the peers (NCCL does not: they would wait in their next collective for its watchdog). The job's answers (its
    precision, its start's keys) are dropped: a later run in this process (a test, a notebook) finds its own."""
    from .precision import forget_job_answer  # precision reads this module's collectives

    global _WAIT_GROUP
    nccl = dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl"
    liveness.stop(failed=nccl and not graceful)
    if dist.is_available() and dist.is_initialized():
        if graceful or not nccl:
            dist.destroy_process_group()
        else:
            _abort_process_group()
    _WAIT_GROUP = None
    liveness.set_start(None)
    forget_job_answer()


def _abort_process_group() -> None:
    """Abort every communicator of the default group without waiting for the peers; when this torch has no abort,
    leave the group to the process's exit (which does not wait for them either)."""
    abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
    if abort is None:
        return
    try:
        abort()
    except Exception:  # noqa: BLE001 - the process is ending on an error already; its exit releases the rest
        pass


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every GPU); the original seeds with SEED + rank."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
