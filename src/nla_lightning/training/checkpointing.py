"""Checkpoints that are whole or absent: written to a temporary name, then renamed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """A kill during writing leaves the previous checkpoint, never a torn one that loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options=None) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)


def remove_checkpoint(path: Path) -> None:
    """Remove a checkpoint: a file, a link, or a directory of shards (trainer.strategy=fsdp)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def link_or_copy(source: Path, target: Path) -> None:
    """Make `target` a hard link to `source` (a copy where the filesystem has no hard links;
    a relative symbolic link where `source` is a directory of shards), swapped in atomically
    so `target` is always whole."""
    tmp = target.with_name(target.name + ".tmp")
    remove_checkpoint(tmp)
    if source.is_dir():
        tmp.symlink_to(source.name)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
        return
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def replace_directory(write: Any, directory: Path) -> Path:
    """Call write(tmp_dir) and swap the result in place of `directory` (exports of AV/AR)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
    except BaseException:
        # A full disk or a kill mid-write: no half-written directory is left to mislead.
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_in(tmp, directory)
    return directory


def swap_in(tmp: Path, target: Path) -> None:
    """Put the finished `tmp` (a file or directory) at `target`, whatever stood there before."""
    old = target.with_name(target.name + ".old")
    remove_checkpoint(old)
    if target.exists() or target.is_symlink():
        target.rename(old)
    tmp.rename(target)
    remove_checkpoint(old)


class RLCheckpoint(L.Callback):
    """Every `every` RL steps: a Lightning checkpoint (both models, both optimisers and
    schedulers, step counter) as `step-N.ckpt` and `last.ckpt`, and optional NLA exports."""

    def __init__(self, dirpath: str | Path, every: int, export_dir: str | Path | None = None):
        self.dirpath = Path(dirpath)
        self.every = every
        self.export_dir = Path(export_dir) if export_dir else None

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        step = module.steps_done
        if self.every and step % self.every == 0:
            self.save(trainer, module)

    def save(self, trainer: L.Trainer, module: Any) -> None:
        """Checkpoint the steps done so far (once per step count; none before the first)."""
        step = module.steps_done
        if step == 0 or step == getattr(self, "_last", -1):
            return
        self._last = step
        self.dirpath.mkdir(parents=True, exist_ok=True)
        step_path = self.dirpath / f"step-{step}.ckpt"
        trainer.save_checkpoint(step_path)
        # last.ckpt is the same bytes: a link, not a second multi-GB write of a real model.
        if trainer.is_global_zero:
            link_or_copy(step_path, self.dirpath / "last.ckpt")
        trainer.strategy.barrier("last.ckpt")
        if self.export_dir is not None and trainer.is_global_zero:
            module.export(self.export_dir / f"step-{step}")
