"""Ctrl-C in a command: one line saying what stopped and what was kept, instead of a traceback.

Python raises KeyboardInterrupt wherever the main thread happens to be (a worker pool's wait, a DALI call), so
the traceback names a place in the code, not what the user interrupted. A command calls :func:`on_interrupt`
with what it is doing and what an interruption keeps (the work saves itself on the way out: index caches,
finished files, reports); an uncaught KeyboardInterrupt then prints ``interrupted: <that>`` and nothing else.

The exit status stays the one Python gives an uncaught KeyboardInterrupt: after the usual clean-up the process
ends by SIGINT, which a shell reports as 130. Exiting normally with 130 instead would make a shell loop over the
command go on with its next iteration after a Ctrl-C.
"""

from __future__ import annotations

import sys
from types import TracebackType

__all__ = ["on_interrupt", "interrupted_line", "INTERRUPTED_EXIT_STATUS", "STARTING"]

# What a shell reports for a command ended by Ctrl-C: 128 + SIGINT.
INTERRUPTED_EXIT_STATUS = 130

_message: str | None = None

# What an entry script says for a Ctrl-C during its start (torch alone takes seconds to import): it installs the
# hook with this before its heavy imports, and says what its work keeps once that work begins.
STARTING = "stopped while starting: nothing was done or written yet"


def on_interrupt(message: str) -> None:
    """From now on an uncaught KeyboardInterrupt prints ``interrupted: <message>`` on stderr, without traceback.

    ``message`` says what was interrupted and what was kept or saved; a later call replaces it (a command that
    moves to another phase says what that phase keeps). Other exceptions reach the previous hook unchanged.
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


def interrupted_line() -> str:
    """The line a Ctrl-C prints (``interrupted: <message>``), for a command that also keeps it in its own log."""
    return f"interrupted: {_message or 'stopped by Ctrl-C'}"


def _quiet_unraisable_interrupts() -> None:
    """After the line: a KeyboardInterrupt that the interpreter's shutdown meets (a worker pool's exit handler
    joining its manager thread) would print "Exception ignored in ..." with a traceback; it says nothing more."""
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous(unraisable)

    sys.unraisablehook = hook
