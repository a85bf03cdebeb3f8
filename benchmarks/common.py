"""What every benchmark script shares at its command line: the parser (``ArgumentParser``, a bad command line as one
line) and the input errors its ``main()`` reports as one ``error: ...`` line with exit code 2, never a traceback.

The rest of what the scripts share has a module a job: ``stats`` (median and spread, paired ratios), ``hardware``
(CUDA timing, NVML sampling, the machine description), ``reporting`` (table, JSON, bar chart), ``cli`` (option
checks, ``--quick``, ``run_main``), ``inputs`` (synthetic clips or a file list) and ``cpu_monitor``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from configs import ConfigError
from dali_pipelines.filelist import DataError  # DALI-free
from evautil import cli
from evautil.cli import home_path  # the type of every path flag: a leading ~ is the home folder

__all__ = ["InputError", "INPUT_ERRORS", "ArgumentParser", "input_error", "home_path"]


class InputError(ValueError):
    """A bad option value or input file of a benchmark (``main()`` reports it with :func:`input_error`)."""


# What every benchmark's main() reports as ``error: ...`` with exit code 2: bad option values, a missing or
# malformed --list (DataListError is a DataError), data the loader cannot use (DataError), absent files, a config
# the options make that is refused.
INPUT_ERRORS: tuple[type[BaseException], ...] = (InputError, DataError, FileNotFoundError, ConfigError)


def input_error(err: BaseException, args: Any = None) -> int:
    """Print ``err`` as one ``error: ...`` line on stderr, each flag named as typed on the command line that
    parsed ``args`` (``cli.flags_as_typed``); returns 2, the exit code for bad input."""
    print("error: " + cli.flags_as_typed(" ".join(str(err).split()), args), file=sys.stderr)
    return 2


class ArgumentParser(cli.ArgumentParser):
    """argparse, but a bad command line prints one ``error: ...`` line (pointing at --help) instead of the usage
    block, each flag named as typed (a mistyped one told the flag it is closest to); the exit code stays 2."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {self.prog}: {self.explained(message)} (see --help)", file=sys.stderr)
        raise SystemExit(2)
