"""Training and evaluation engine: works on any ``nn.Module`` and any loader yielding
``{'video', 'label', 'index'}`` batches; imports neither DALI nor the model package.

- ``distributed``: torchrun environment -> ``DistContext``, DDP wrapping, collectives.
- ``liveness``: each rank of a process group watches that the others still answer, and names one that stopped.
- ``optim``: AdamW parameter groups (no decay, layer-wise LR decay), timm cosine schedule per optimizer step.
- ``losses``: label smoothing, video Mixup / CutMix keyed by (seed, step, rank).
- ``train_epoch``: ``train_one_epoch`` (accumulation, no_sync, AMP, clipping, EMA, NaN handling); ``train_loop``:
  the ``Trainer`` that runs the epochs, evaluations and final test, with ``trainer_checkpoints`` what a checkpoint
  holds of it and its resume; ``resume_point``: the checkpoint a run continues and its data plan;
  ``precision``: TRAIN.PRECISION's autocast dtype and loss scaler.
- ``evaluate``: multi-view mean-of-softmax top-1/top-5 over all ranks, predictions files.
- ``checkpointing``: a run's checkpoints in OUTPUT: rotation, resume with fallback past damaged files;
  ``checkpoint_io``: one checkpoint file written atomically, read back safely and checked;
  ``resume_state``: the model, optimizer, schedule and RNG states a checkpoint carries, put back on resume.
- ``metrics``: all console output and telemetry (metrics.jsonl, TensorBoard, progress bar, NVML, summary), over
  ``telemetry`` (device peak, NVML, memory), ``step_window`` (a train line's steps, the run totals), ``tb_events``,
  ``metrics_file``, ``run_log`` and ``run_summary``;
  ``progress``: remaining-time estimates and evaluation progress; ``plots``: the run's PNG plots.
- ``loader_stats``: a loader's counters and unreadable rows gathered over ranks.
- ``run_files``: the OUTPUT lock, files moved aside into earlier_runs/, lines a stopped attempt left.
- ``resume_config``: the config of the checkpoint a run resumes against the one given now.
- ``preemption``: stop signals and clock-based saves, agreed by all ranks at optimizer-step boundaries.
- ``process_end``: how a process says it ends (console, its log, torchrun's error file, exit_status.json).
- ``preflight``: checks before a run builds anything (input files, where it starts, the dry run's plan).
- ``run_start``: a run's start in OUTPUT (seed, run lock, earlier files set aside, the logger opened).
- ``start_weights``: the one set of weights a run's model starts from, their fit and the log of where they came from.
- ``runner``: runs a training or an evaluation from the ready objects that ``wiring.py`` builds.
"""
