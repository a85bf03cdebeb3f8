"""Small helpers with one home, shared by every package (configs, dali_pipelines, models, engine, benchmarks,
tools): atomic file writes, worker pools with progress bars, progress lines for a log file, a command's Ctrl-C
message, the FLOPs conventions, common error types.

This package imports no other package of the project, so any of them may import it.
"""
