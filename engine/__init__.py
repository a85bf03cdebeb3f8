"""Training and evaluation engine: works on any ``nn.Module`` and any loader yielding
``{'video', 'label', 'index'}`` batches; imports neither DALI nor the model package.

- ``distributed``: torchrun environment -> ``DistContext``, DDP wrapping, collectives.
- ``liveness``: each rank of a process group watches that the others still answer, and names one that stopped.
- ``optim``: AdamW parameter groups (no decay, layer-wise LR decay), timm cosine schedule per optimizer step.
- ``losses``: label smoothing, video Mixup / CutMix keyed by (seed, step).
- ``train_loop``: ``train_one_epoch`` (accumulation, no_sync, AMP, clipping, EMA, NaN handling) and ``Trainer``.
- ``evaluate``: multi-view mean-of-softmax top-1/top-5 over all ranks, predictions files.
- ``checkpointing``: atomic checkpoints, rotation, resume with fallback past damaged files.
- ``metrics``: all console output and telemetry (metrics.jsonl, TensorBoard, progress bar, NVML, summary).
- ``runner``: builds a run from the config with the model/data builders that ``train.py`` passes in.
"""
