"""One process of a test that runs several gloo ranks on this machine (spawned by ``torch.multiprocessing``)."""
from __future__ import annotations

import contextlib
import os
import sys

import torch.distributed as dist


@contextlib.contextmanager
def gloo_rank(init_file: str, rank: int, world: int):
    """Inside, this process is rank ``rank`` of ``world`` (gloo, meeting through ``init_file``). Left normally (a
    ``return`` too), the group is destroyed and the process ends at once with code 0: without the gloo threads'
    destructors, which may hang at the interpreter's exit; results go back through the caller's shared dict. Left
    by an error, the group is destroyed and the error ends the process (its traceback, a non-zero code)."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
