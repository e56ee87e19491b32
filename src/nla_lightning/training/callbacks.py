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
    """Evaluates when RL starts (at step 0 the stage's own `start` scores are reused; a resumed
    run continues the curve its checkpoint holds) and every `every` steps, on global rank 0
    (the other ranks skip: evaluation has no collective operations; with sharded models they
    only join in gathering the AV and AR whole first). The point after RL is logged by the
    stage itself, which evaluates it anyway for the summary."""

    def __init__(
        self, evaluate: Callable[[], dict[str, float]], every: int, start: dict[str, float]
    ) -> None:
        self.evaluate = evaluate
        self.every = every
        self.start = start
        self.curve: list[dict[str, float]] = []

    def on_train_start(self, trainer: L.Trainer, module: Any) -> None:
        # By now a resumed run has its checkpoint's weights, step counter and (from this
        # callback's state) the curve so far; a checkpoint without that curve is scored here.
        step = module.steps_done
        if step == 0:
            if trainer.is_global_zero:
                self._record(trainer, step, self.start)
        elif self._agreed(trainer, not self.curve):
            self._evaluate(trainer, module, step)

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curve = list(state["curve"])

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, *_args: Any) -> None:
        step = module.steps_done
        last = step >= module.hp.steps
        if not self.every or step % self.every or last:
            return
        if self._agreed(trainer, not (self.curve and self.curve[-1]["step"] == step)):
            self._evaluate(trainer, module, step)

    @staticmethod
    def _agreed(trainer: L.Trainer, due: bool) -> bool:
        """Rank 0's decision, on every rank (only rank 0 holds the curve)."""
        return bool(trainer.strategy.broadcast(due))

    def _evaluate(self, trainer: L.Trainer, module: Any, step: int) -> None:
        with module.gathered():
            if trainer.is_global_zero:
                self._record(trainer, step, self.evaluate())

    def _record(self, trainer: L.Trainer, step: int, result: dict[str, float]) -> None:
        self.curve.append({"step": step, **result})
        log_held_out(trainer.logger, step, result)
