"""Held-out FVE of AR(AV(h)) during RL, so every run has a learning curve to plot."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L


def log_held_out(logger: Any, step: int, result: dict[str, float]) -> None:
    """Write one point of the curve at `step`: `val/fve`, `val/fve_shuffled` and, in the toy
    world, `val/recall`, `val/precision` and `val/confabulation`."""
    if not logger:
        return
    names = ("fve", "fve_shuffled", "recall", "precision", "confabulation")
    logger.log_metrics(
        {f"val/{k}": result[k] for k in names if result.get(k) is not None}, step=step
    )
    logger.save()


class HeldOutCurve(L.Callback):
    """Evaluates every `every` RL steps on global rank 0 (the other ranks skip: evaluation has
    no collective operations). The points before and after RL are logged by the stage itself,
    which evaluates them anyway for the summary."""

    def __init__(self, evaluate: Callable[[], dict[str, float]], every: int) -> None:
        self.evaluate = evaluate
        self.every = every
        self.curve: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, *_args: Any) -> None:
        step = module.steps_done
        last = step >= module.hp.steps
        if not self.every or step % self.every or last or not trainer.is_global_zero:
            return
        if self.curve and self.curve[-1]["step"] == step:
            return
        result = self.evaluate()
        self.curve.append({"step": step, **result})
        log_held_out(trainer.logger, step, result)
