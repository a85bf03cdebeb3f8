"""The wait of a process of several at the rendezvous, bounded and interruptible.

``distributed.init_from_env`` joins the process group through torch's ``init_process_group(env://)``: every rank
reaches the store that rank 0 (or torchrun) serves at MASTER_ADDR:MASTER_PORT, then waits there for the others. A
rank whose rank 0 never came up (its port in use, a wrong MASTER_ADDR, a failure at its start) waited for the process
group's timeout, 30 minutes, saying nothing; torch's store retries its connection through interrupted calls in C++,
so SIGTERM and Ctrl-C were not acted on either, and a scheduler's cancel ended it only by SIGKILL.

So the join runs in a daemon thread, unchanged (the same call, the same timeouts for the collectives after it), and
the main thread waits for it on a lock, a wait that signals interrupt: their handlers run there, and the ones that
raise (a stop signal's ``Stopped`` in ``evautil.interrupt.stop_signals_raise``, a Ctrl-C's KeyboardInterrupt) end
the wait at once. After ``EVA_RENDEZVOUS_TIMEOUT_S`` seconds the process ends with :func:`timeout_line`. A join left
waiting cannot be cancelled: the process ends, and the thread with it.
"""

from __future__ import annotations

import threading
from typing import Callable

from .liveness import torchrun_hosts_store

__all__ = ["DEFAULT_TIMEOUT_S", "joined_within", "timeout_line"]

# EVA_RENDEZVOUS_TIMEOUT_S's default: long enough for ranks whose start (imports, file checks) lags by minutes, far
# below torch's 30.
DEFAULT_TIMEOUT_S = 300


def joined_within(join: Callable[[], None], seconds: float) -> bool:
    """Run ``join`` in a daemon thread and wait for it at most ``seconds``: False when it is still waiting then; its
    own error raised when it failed; what a signal's handler raises, at once."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            join()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread, which raises it
            failed.append(e)

    thread = threading.Thread(target=run, name="eva-rendezvous", daemon=True)
    thread.start()
    thread.join(min(seconds, threading.TIMEOUT_MAX))
    if failed:
        raise failed[0]
    return not thread.is_alive()


def timeout_line(rank: int, world_size: int, meet: str, seconds: float) -> str:
    """Why rank ``rank`` of ``world_size``, which waited ``seconds`` at ``meet`` (``distributed.rendezvous_address``)
    for the others, ends: what most likely kept them apart, and the variable that sets the wait."""
    if rank == 0 or torchrun_hosts_store():  # the store is up: ranks are missing
        causes = ("another rank has not started or failed at its start (its own line says why), or cannot reach "
                  "that address (its MASTER_ADDR names another host, or a firewall blocks MASTER_PORT)")
    else:
        causes = ("rank 0, which listens there, has not started or failed at its start (its own line says why), "
                  "MASTER_ADDR is not rank 0's host, or a firewall blocks MASTER_PORT; or another rank is missing")
    return (f"rank {rank} of WORLD_SIZE={world_size} waited {seconds:.0f} s at the rendezvous, MASTER_ADDR:MASTER_PORT "
            f"{meet}, without meeting the other processes: {causes}; EVA_RENDEZVOUS_TIMEOUT_S sets how long to "
            f"wait (seconds, {DEFAULT_TIMEOUT_S} by default)")
