"""Small helpers with one home, shared by every package (configs, dali_pipelines, models, engine, benchmarks, tools):
atomic file writes, output checks and locks (``files``), worker pools with progress bars and errors sent to another
process (``workers``, over ``worker_process``, ``process_pools`` and ``thread_pools``), progress lines for a log file
(``progress``), a command's Ctrl-C and stop-signal lines and its work going on when stdout's reader goes away
(``interrupt``), the FLOPs conventions (``flops``), common error types and their words (``errors``), the lines of a
text file as an editor numbers them (``text``), the CRC-32 check of ``torch.save`` files (``zip_check``), every
command's argument parser, taking ``_`` and ``-`` alike in a long flag (``cli``).

This package imports no other package of the project, so any of them may import it, and no torch: every worker
process imports it (tests/test_layout.py).
"""
