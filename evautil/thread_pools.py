"""Executors without worker processes: one that runs a submission at once in the calling thread, and a thread
pool whose threads never hold up the end of the process."""

from __future__ import annotations

import concurrent.futures as cf
import queue
import threading

__all__ = ["InlineExecutor", "DaemonThreadPool"]


class InlineExecutor(cf.Executor):
    """Runs submissions immediately in the calling thread (0 workers), delivering results through futures."""

    def submit(self, fn, /, *args, **kwargs):
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - delivered through the future like a real executor
            fut.set_exception(e)
        return fut


class DaemonThreadPool(cf.Executor):
    """A thread pool whose threads never hold up the end of the process. ``ThreadPoolExecutor`` joins its threads
    when the interpreter exits, so one read stuck in the kernel (a network file system that stopped answering)
    kept a finished run from ending, even after its pool was given up (``shutdown(wait=False)``)."""

    def __init__(self, workers: int, name: str):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
                         for i in range(max(1, int(workers)))]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            fut, fn, args, kwargs = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - delivered through the future
                fut.set_exception(e)
            else:
                fut.set_result(result)
            del job, fut  # a finished result is not kept alive by an idle thread
        self._queue.put(None)  # for the next thread

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a thread pool that was shut down")
            fut: cf.Future = cf.Future()
            self._queue.put((fut, fn, args, kwargs))
            return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                if cancel_futures:
                    while True:
                        try:
                            job = self._queue.get_nowait()
                        except queue.Empty:
                            break
                        if job is not None:
                            job[0].cancel()
                self._queue.put(None)
        if wait:
            for t in self._threads:
                t.join()

