"""Ctrl-C (SIGINT) during a fit: finish the current step, keep what a resume needs, say how.

The first Ctrl-C asks the fit to stop at the end of the step under way (a step cut in half
would leave the AR updated and the AV not); the second stops at once, as Python does."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import lightning as L

from nla_lightning.errors import RunInterrupted


class GracefulStop(L.Callback):
    """Stops a fit at a step boundary on the first SIGINT, calls `on_stop(trainer, module)`
    (the stage's checkpoint), then raises RunInterrupted with `hint` (how to go on)."""

    def __init__(
        self,
        stage: str,
        hint: str,
        on_stop: Callable[[L.Trainer, Any], None] | None = None,
    ) -> None:
        self.stage = stage
        self.hint = hint
        self.on_stop = on_stop
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        print(
            f"\n{self.stage}: stopping after the current step (Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def on_train_start(self, trainer: L.Trainer, module: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def on_train_batch_end(
        self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Within gradient accumulation the step is not done: its gradients would be lost.
        boundary = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if self.requested and boundary and not trainer.should_stop:
            if self.on_stop is not None:
                self.on_stop(trainer, module)
            trainer.should_stop = True

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_train_end(self, trainer: L.Trainer, module: Any) -> None:
        self._restore()
        if self.requested:
            raise RunInterrupted(f"{self.stage} stopped by Ctrl-C. {self.hint}")

    def on_exception(self, trainer: L.Trainer, module: Any, exception: BaseException) -> None:
        self._restore()
