"""The one set of weights a run's freshly built model starts from (:func:`weights_to_load`), the check that weights
being evaluated fit the model (:func:`check_weights_fit`) and the log of where they came from
(:func:`announce_weights`). ``wiring.py`` asks for the choice twice: before the lists are indexed, to check the
weights' names and shapes against the model built on the meta device, and when it builds the run, to load them
(the engine imports no model code).
"""

from __future__ import annotations

from dataclasses import dataclass

from evautil.errors import some_names, weights_misfit

from .checkpointing import Checkpointer, CheckpointError
from .metrics import MetricLogger
from .preflight import reads_pretrained, scores_checkpoint

__all__ = ["WeightsChoice", "weights_to_load", "check_weights_fit", "announce_weights"]


@dataclass(frozen=True)
class WeightsChoice:
    """Weights to load into a freshly built model: ``path`` in ``mode`` ('eva', 'eva_k722', ...), with an
    optional class mapping; ``checkpoint``: one of our checkpoints being evaluated (it must fit the model)."""

    path: str
    mode: str
    class_mapping: str | None
    checkpoint: bool

    def describe(self) -> str:
        return self.path if self.checkpoint else f"MODEL.PRETRAINED = {self.path}"


def weights_to_load(cfg, metrics: MetricLogger | None, resume: str = "", newest: str = "") -> WeightsChoice | None:
    """The one set of weights the model starts from. Training: MODEL.PRETRAINED (a resumed checkpoint is applied
    later by the trainer, with the optimizer). Evaluate-only: ``resume``, else the newest usable checkpoint in
    OUTPUT (damaged ones are named and skipped), else MODEL.PRETRAINED. None: keep the initial weights.
    ``metrics`` None (a check before the run's log is open): the choice is made without a word. ``newest``:
    OUTPUT's newest usable checkpoint as the run's check found it (``wiring.check_weight_files``), not looked for
    again (each look parses every checkpoint there)."""
    mapping = cfg.MODEL.CLASS_MAPPING or None
    if cfg.TEST.ONLY_TEST and scores_checkpoint(cfg, resume):
        path = resume or newest
        if not path:
            warn = metrics.warn if metrics is not None else None
            # its path only: memory-mapped, its CRC-32 check is the one the load right after relies on (not reread)
            found = Checkpointer(cfg.OUTPUT, writer=False, warn=warn).find_latest(mmap=True)
            path = found[0] if found else ""
        if path:
            return WeightsChoice(path, "eva_k722", mapping, checkpoint=True)
    if cfg.MODEL.PRETRAINED and not cfg.TEST.ONLY_TEST and not reads_pretrained(cfg, resume):
        if metrics is not None:
            metrics.info(f"MODEL.PRETRAINED = {cfg.MODEL.PRETRAINED} is not read: the run resumes a checkpoint, "
                         "whose weights replace it")
        return None
    if cfg.MODEL.PRETRAINED:
        return WeightsChoice(cfg.MODEL.PRETRAINED, cfg.MODEL.PRETRAINED_MODE, mapping, checkpoint=False)
    return None


def check_weights_fit(cfg, choice: WeightsChoice, missing: list[str], lacked: list[str]) -> None:
    """Weights being evaluated (a checkpoint, or MODEL.PRETRAINED in an evaluate-only run without one) must fill
    every parameter of the model, and the model must have every layer they trained (``lacked``: see
    ``models.checkpoint.layers_the_model_lacks``); raise CheckpointError naming them."""
    if (choice.checkpoint or cfg.TEST.ONLY_TEST) and (missing or lacked):
        raise CheckpointError(f"{'checkpoint ' if choice.checkpoint else ''}{choice.describe()} "
                              f"{weights_misfit(cfg.MODEL.ARCH, cfg.DATA.NUM_CLASSES, missing, lacked)}")


def announce_weights(metrics: MetricLogger, choice: WeightsChoice, notes: list[str], missing: list[str],
                     lacked: list[str]) -> None:
    """Log where the weights came from and what their conversion changed (a resampled positional embedding, a head
    dropped for another class count and left at its initialisation): a fine-tuning run must say what it starts
    from. (An evaluation names its checkpoint when it starts scoring.)"""
    if not choice.checkpoint:
        metrics.info(f"starting from {choice.describe()} (MODEL.PRETRAINED_MODE {choice.mode})")
    for note in notes:
        metrics.info(f"  weights: {note}")
    if missing:
        metrics.info(f"  weights: left at their initialisation: {some_names(missing)}")
    if lacked:  # the model is not the one these weights trained: a shallower or otherwise built MODEL.ARCH
        metrics.warn(f"weights: not used, the model has no such layer: {some_names(lacked)}")
