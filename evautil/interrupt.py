"""Ctrl-C in a command: one line saying what stopped and what was kept, instead of a traceback.

Python raises KeyboardInterrupt wherever the main thread happens to be (a worker pool's wait, a DALI call), so
the traceback names a place in the code, not what the user interrupted. A command calls :func:`on_interrupt`
with what it is doing and what an interruption keeps (the work saves itself on the way out: index caches,
finished files, reports); an uncaught KeyboardInterrupt then prints ``interrupted: <that>`` and nothing else.

The exit status stays the one Python gives an uncaught KeyboardInterrupt: after the usual clean-up the process
ends by SIGINT, which a shell reports as 130. Exiting normally with 130 instead would make a shell loop over the
command go on with its next iteration after a Ctrl-C.

While a command starts (:data:`STARTING`) a Ctrl-C does not raise at all: the line is printed and the process ends
by SIGINT at once. A KeyboardInterrupt raised then would surface inside the imports of torch and DALI, whose C++
code may call back into Python: one that crosses such a boundary aborts the process ("terminate called after
throwing an instance of 'pybind11::error_already_set'", status 134), and one raised in a finaliser is swallowed.
Nothing was done or written yet, so there is nothing to clean up.

Once a command has printed its last line (its summary, or its error) it has finished (:func:`finished`): SIGINT is
ignored from then on, and the process ends with the status of its work. Its process may still take a second to end
(loaders and worker pools closing, the interpreter's clean-up), and a Ctrl-C there ended it by SIGINT without the
line, once Python had stopped running signal handlers, or raised inside a finaliser and was swallowed (status 0
and a traceback); there is nothing left to stop.

A batch scheduler stops a job with SIGTERM (SLURM also sends SIGUSR1 before the time limit, with ``--signal``): a
command that keeps its work on such a stop and says so, with exit code :data:`STOPPED_EXIT_STATUS` ("stopped, the
same command goes on"; train.py, verify_data.py), passes ``stop_status`` with :data:`STARTING`, so that a stop
signal during its start prints one ``stopped:`` line and ends the process with that status at once (nothing raised,
as for a Ctrl-C then), and handles the signals itself once its work begins, e.g. with :func:`stop_signals_raise`.
predict and export_safetensors do too: they write their output at the end only, atomically, so a stop leaves an
earlier output as it was, and the same command runs again.

A reader of stdout that goes away (``| head``) is the other way a terminal ends a command early: with
:func:`stdout_may_close` around its ``main`` the command's printing goes to /dev/null from then on and its work
goes on (a command that only prints ends at once, as Unix tools do); so does its stderr's when that reader was
stderr's too (``2>&1 | head``). Both write a file name's bytes as they are, whatever the locale's error handler.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import TracebackType
from typing import Callable, Iterator

__all__ = ["on_interrupt", "interrupted_line", "finished", "stop_signals_raise", "Stopped", "stopped_during_work",
           "stdout_may_close", "BROKEN_PIPE_EXIT_STATUS", "INTERRUPTED_EXIT_STATUS", "STARTING", "STOP_SIGNALS",
           "STOPPED_EXIT_STATUS"]

# What a shell reports for a command ended by Ctrl-C: 128 + SIGINT.
INTERRUPTED_EXIT_STATUS = 130

_message: str | None = None

# What an entry script says for a Ctrl-C during its start (torch alone takes seconds to import): it installs the
# hook with this before its heavy imports, and says what its work keeps once that work begins.
STARTING = "stopped while starting: nothing was done or written yet"

# A batch scheduler's stop signals: SLURM sends SIGTERM when it preempts or cancels a job, SIGUSR1 with --signal.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# Exit status of a command that a stop signal ended after keeping its work: resumable, the same command goes on
# (2: fix the input; 143 would be a process killed by SIGTERM before it could save or say anything).
STOPPED_EXIT_STATUS = 4

_stop_status: int | None = None  # the status a stop signal ends a starting command with (see on_interrupt)


class Stopped(BaseException):
    """A stop signal in a :func:`stop_signals_raise` block. A BaseException, as KeyboardInterrupt: a handler of
    per-item errors (``except Exception``) must not take it for a bad item."""

    def __init__(self, signal_name: str, message: str | None = None) -> None:
        self.signal_name = signal_name
        super().__init__(message or f"{signal_name} received")


def stopped_during_work(stop: Stopped, kept: str) -> int:
    """The one line of a command a stop signal ended during its work (:func:`stop_signals_raise`), saying what
    ``kept``, on stderr; returns the command's exit status, :data:`STOPPED_EXIT_STATUS`."""
    print(f"stopped: {stop.signal_name} received: {kept} (exit code {STOPPED_EXIT_STATUS})", file=sys.stderr,
          flush=True)
    return STOPPED_EXIT_STATUS


def on_interrupt(message: str, *, stop_status: int | None = None) -> None:
    """From now on an uncaught KeyboardInterrupt prints ``interrupted: <message>`` on stderr, without traceback.

    ``message`` says what was interrupted and what was kept or saved; a later call replaces it (a command that
    moves to another phase says what that phase keeps). Other exceptions reach the previous hook unchanged.

    With :data:`STARTING` and ``stop_status``, a stop signal (:data:`STOP_SIGNALS`) until the next call also ends
    the process at once, with one ``stopped:`` line and that status (when the signal's action is the default one:
    an ignored signal stays ignored); the next call gives the signals their default action back, for the command's
    own handling of them.
    """
    global _message
    if _message is None:
        previous = sys.excepthook

        def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
            if issubclass(kind, KeyboardInterrupt) and _message is not None:
                print(interrupted_line(), file=sys.stderr, flush=True)
                _quiet_unraisable_interrupts()
            else:
                previous(kind, error, tb)

        sys.excepthook = hook
    _message = message
    _handle_sigint_while_starting(message == STARTING)
    _handle_stop_signals_while_starting(stop_status if message == STARTING else None)


def finished(status: int) -> int:
    """The command has printed its last line: ignore SIGINT and a scheduler's stop signals (SIGTERM, SIGUSR1) from
    now on, so that it ends with ``status`` however long its clean-up takes (a background job's ignored SIGINT stays
    so too). Returns ``status``, for ``sys.exit(finished(main()))``."""
    if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
        for sig in (signal.SIGINT, *STOP_SIGNALS):
            signal.signal(sig, signal.SIG_IGN)
    return status


@contextlib.contextmanager
def stop_signals_raise(stopped: Callable[[str], BaseException] = Stopped,
                       ignored: Callable[[], bool] = lambda: False) -> Iterator[None]:
    """Within the block the first stop signal raises ``stopped(<signal name>)`` (:class:`Stopped`) where the main
    thread is, so that the work saves itself on the way out as on a Ctrl-C, and the ones after it are ignored, so
    that they cannot cut that saving short. While ``ignored()`` holds a stop signal changes nothing. Elsewhere than
    in the main thread (e.g. a notebook worker thread) signals keep their action. The previous handlers come back
    after the block."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def stop(signum: int, frame) -> None:
        if ignored():
            return
        for sig in STOP_SIGNALS:  # a second signal (a launcher forwarding the scheduler's) must not cut a save short
            signal.signal(sig, signal.SIG_IGN)
        raise stopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def interrupted_line() -> str:
    """The line a Ctrl-C prints (``interrupted: <message>``), for a command that also keeps it in its own log."""
    return f"interrupted: {_message or 'stopped by Ctrl-C'}"


def _handle_sigint_while_starting(starting: bool) -> None:
    """Install :func:`_stop_while_starting` as SIGINT's handler while starting; give Python's back after."""
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers (and only its Ctrl-C reaches Python)
    current = signal.getsignal(signal.SIGINT)
    if starting and current is signal.default_int_handler:  # a SIG_IGN (a background job's) stays
        signal.signal(signal.SIGINT, _stop_while_starting)
    elif not starting and current is _stop_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _stop_while_starting(signum: int, frame) -> None:
    """SIGINT during a start: print the line and end by SIGINT now, without raising anything."""
    print(interrupted_line(), file=sys.stderr, flush=True)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.raise_signal(signal.SIGINT)


def _handle_stop_signals_while_starting(status: int | None) -> None:
    """Install :func:`_stopped_while_starting` as the stop signals' handler while starting (``status`` given); give
    them their default action back after."""
    global _stop_status
    if threading.current_thread() is not threading.main_thread():
        return
    _stop_status = status
    for sig in STOP_SIGNALS:
        current = signal.getsignal(sig)
        if status is not None and current is signal.SIG_DFL:
            signal.signal(sig, _stopped_while_starting)
        elif status is None and current is _stopped_while_starting:
            signal.signal(sig, signal.SIG_DFL)


def _stopped_while_starting(signum: int, frame) -> None:
    """A stop signal during a start: print the line and end with the command's stop status now, without raising
    anything (see SIGINT's case above); nothing was done or written yet."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    status = STOPPED_EXIT_STATUS if _stop_status is None else _stop_status
    print(f"stopped: {signal.Signals(signum).name} received while starting: nothing was done or written yet; run the "
          f"same command again (exit code {status})", file=sys.stderr, flush=True)
    with contextlib.suppress(Exception):  # what the start printed (the main thread may be writing it: reentrant)
        sys.stdout.flush()
    os._exit(status)


def _quiet_unraisable_interrupts() -> None:
    """After the line: a KeyboardInterrupt that the interpreter's shutdown meets (a worker pool's exit handler
    joining its manager thread) would print "Exception ignored in ..." with a traceback; it says nothing more."""
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous(unraisable)

    sys.unraisablehook = hook


# What a shell reports for a command ended by SIGPIPE (128 + 13), as ``yes | head -1`` reports for ``yes``.
BROKEN_PIPE_EXIT_STATUS = 141


def stdout_may_close(main: Callable[[], int], *, printing_only_without: tuple[str, ...] | None = None) -> int:
    """Runs a command's ``main()`` and returns its status; a reader of stdout that goes away meanwhile (``| head``,
    ``| less`` then q) no longer stops the command's work: ``sys.exit(finished(stdout_may_close(main)))``.

    Python ignores SIGPIPE, so a print into a closed pipe raises BrokenPipeError wherever it happens: a list or a
    report was left half written, an ``except OSError`` blamed an output flag for it, and the interpreter's last
    flush printed "Exception ignored ... BrokenPipeError". From now on the first such write sends stdout to
    /dev/null (Python's docs, signal module, "Note on SIGPIPE") and the work goes on: files are written whole and
    the command exits with its work's status. A command whose work is printing (a benchmark's table) has nothing
    left to do: with ``printing_only_without`` (the flags naming files it writes at its end, e.g. ``--json``) and
    none of them given, it ends at once with :data:`BROKEN_PIPE_EXIT_STATUS`, as Unix tools do.

    stderr is handled the same way (``2>&1 | head`` closes it too: a progress line, a warning or the error line met
    the closed pipe, and the error printed about that met it again), except that its closing never ends a command:
    its lines (progress, warnings, errors) are no command's work, and a printing command's table on stdout ends it
    when it meets the closed pipe itself.
    """
    names = [a.split("=")[0] for a in sys.argv[1:] if a.startswith("--") and len(a) > 2]
    printing_only = printing_only_without is not None and not any(  # argparse takes a flag's prefix too
        flag.startswith(name) for name in names for flag in printing_only_without)
    if not isinstance(sys.stdout, _StreamThatMayClose):
        sys.stdout = _StreamThatMayClose(_names_as_bytes(sys.stdout), printing_only)
    if not isinstance(sys.stderr, _StreamThatMayClose):
        sys.stderr = _StreamThatMayClose(_names_as_bytes(sys.stderr), False)
    return main()


def _names_as_bytes(stream):
    """``stream``, writing the bytes of a name that are not text in its encoding as they are (surrogateescape).

    Python holds them (``caf\\xe9.mp4`` under a UTF-8 locale) as surrogate escapes, decoded with the locale's
    encoding: written back with it they are the name's own bytes, which a shell given them back finds. Under a
    strict locale (``LANG=en_US.UTF-8``; C.UTF-8 escapes them already) such a name raised UnicodeEncodeError, a
    traceback instead of the command's line, and stderr's backslashreplace printed ``caf\\udce9.mp4``, no file's
    name. A handler the user chose otherwise (``PYTHONIOENCODING=utf-8:replace``) stays."""
    reconfigure = getattr(stream, "reconfigure", None)  # a TextIOWrapper; another stream is left as it is
    if reconfigure is not None and getattr(stream, "errors", None) in ("strict", "backslashreplace"):
        reconfigure(errors="surrogateescape")
    return stream


class _StreamThatMayClose:
    """sys.stdout or sys.stderr, whose writes into a closed pipe go to /dev/null instead (see
    :func:`stdout_may_close`)."""

    def __init__(self, stream, printing_only: bool) -> None:
        self._stream = stream
        self._printing_only = printing_only

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def _reader_gone(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())  # what the buffer still holds goes there too, at its next flush
        finally:
            os.close(devnull)
        if self._printing_only:
            self._printing_only = False  # the clean-up on the way out may print: that goes to /dev/null
            raise SystemExit(BROKEN_PIPE_EXIT_STATUS)
