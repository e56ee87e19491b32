"""Fits that continue where a killed process stopped, on exactly the batches it would have seen.

Lightning restores the weights, optimiser, scheduler and step counter from a checkpoint, but a
plain DataLoader starts its epoch again from the first batch. Here the shuffled order of each
epoch is a function of (seed, epoch) alone, the same order `RandomSampler` with a seeded
generator draws, and the checkpoint records how many batches of the epoch were done: a resumed
fit skips them and goes on bit for bit (on the CPU) as an uninterrupted one."""

from __future__ import annotations

from collections.abc import Sized
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import RandomSampler

from nla_lightning.training.checkpointing import AtomicCheckpointIO


class EpochSeededSampler(RandomSampler):
    """`RandomSampler(data, generator=Generator().manual_seed(seed))` as iterated once per epoch,
    but reproducible from the epoch number (Lightning calls `set_epoch`), and able to skip the
    batches a resumed fit already trained on.

    With several ranks (the stages' Trainers keep Lightning's DistributedSampler out) rank r of
    W takes every W-th index of that same order from r on, the epoch cut to a multiple of W so
    every rank runs as many batches: with W x the batch size of one process, the ranks' batches
    together are exactly that process's batches."""

    def __init__(self, data_source: Sized, seed: int) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, samples) to skip once

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_once(self, epoch: int, samples: int) -> None:
        """The next pass over `epoch` starts after its first `samples` indices."""
        self._skip = (epoch, samples)

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed)
        # A seeded RandomSampler's generator has been drawn from once per earlier epoch.
        for _ in range(self.epoch):
            for _ in super().__iter__():
                pass
        skip = 0
        if self._skip is not None and self._skip[0] == self.epoch:
            skip, self._skip = self._skip[1], None
        world, rank = ranks()
        order = list(super().__iter__())
        for position, index in enumerate(order[rank : len(order) - len(order) % world : world]):
            if position >= skip:
                yield index

    def __len__(self) -> int:
        world, _ = ranks()
        return super().__len__() // world


def ranks() -> tuple[int, int]:
    """(world size, rank) of the process group; (1, 0) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class StepCheckpoint(L.Callback):
    """Every `every` optimiser steps (never at the last), `path` is replaced atomically by a
    Lightning checkpoint that also records the position in the epoch, so `fit(ckpt_path=path)`
    continues on the next batch. `sampler`: the fit's EpochSeededSampler (None: the loader is
    not shuffled by one, e.g. under DDP, and a resume restarts the epoch's order)."""

    def __init__(
        self, path: str | Path, every: int, sampler: EpochSeededSampler | None, batch_size: int
    ) -> None:
        self.path = Path(path)
        self.every = every
        self.sampler = sampler
        self.batch_size = batch_size
        self._position = (0, 0)  # (epoch, batches of it done)
        self._saved_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, outputs, batch, batch_idx):
        self._position = (trainer.current_epoch, batch_idx + 1)
        step = trainer.global_step
        if self.every and step % self.every == 0 and 0 < step < trainer.max_steps:
            self.save(trainer)

    def save(self, trainer: L.Trainer) -> None:
        """Checkpoint now (once per optimiser step): at a step boundary, as on_train_batch_end
        after the optimiser stepped is."""
        if trainer.global_step == self._saved_step:
            return
        self._saved_step = trainer.global_step
        self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(self.path)

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self._position
        return {"epoch": epoch, "batches_done": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if self.sampler is not None:
            self.sampler.skip_once(state["epoch"], state["batches_done"] * self.batch_size)


def save_now(trainer: L.Trainer, _module: Any = None) -> None:
    """The fit's mid-stage checkpoint, now (Ctrl-C: the step under way has finished)."""
    for callback in trainer.callbacks:
        if isinstance(callback, StepCheckpoint):
            callback.save(trainer)


def checkpoint_plugins() -> list[Any]:
    """A kill while a checkpoint is written leaves the previous one whole."""
    return [AtomicCheckpointIO()]


def existing(path: Path) -> str | None:
    """`path` as a `ckpt_path` when an earlier attempt left it (a file, or a directory of
    shards under trainer.strategy=fsdp), else None (a fresh fit)."""
    return str(path) if path.exists() else None
