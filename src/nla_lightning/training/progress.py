"""One progress bar per stage: its name, steps done / total and the metric that matters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L


# What a bar counts (functions of the module, not lambdas: spawned ranks receive the bar pickled).
def optimiser_steps(trainer: L.Trainer, _module: L.LightningModule) -> int:
    return trainer.global_step


def module_steps(_trainer: L.Trainer, module: Any) -> int:
    """RL's own step count (its manual optimisation steps two optimisers a step)."""
    return module.steps_done


class StageProgress(L.Callback):
    """A tqdm bar over a fit's optimiser steps (or the module's own step count, for RL), with
    `metric` from the logged values; on global rank 0 only. Replaces Lightning's bar, whose
    epoch counter reads `Epoch 0/-2` for step-bounded fits."""

    def __init__(
        self,
        name: str,
        total: int,
        metric: str,
        done: Callable[[L.Trainer, L.LightningModule], int] | None = None,
    ) -> None:
        self.name, self.total, self.metric = name, total, metric
        self.done = done or optimiser_steps
        self.bar: Any = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=self.total,
            initial=self.done(trainer, module),
            desc=self.name,
            unit="step",
            dynamic_ncols=True,
        )

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.bar is None:
            return
        self.bar.update(min(self.done(trainer, module), self.total) - self.bar.n)
        value = trainer.callback_metrics.get(self.metric)
        if value is not None:
            self.bar.set_postfix({self.metric: f"{float(value):.4g}"}, refresh=False)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer, module, exception) -> None:
        self.on_train_end(trainer, module)
