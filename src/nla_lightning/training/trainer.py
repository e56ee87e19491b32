"""Small helpers shared by the stages: a Lightning Trainer per stage and data loaders."""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from nla_lightning.data.datasets import ActivationTokens
from nla_lightning.settings.sft import SFTSettings
from nla_lightning.training.progress import StageProgress
from nla_lightning.training.resumable import (
    EpochSeededSampler,
    StepCheckpoint,
    checkpoint_plugins,
    existing,
)
from nla_lightning.training.sharded_strategy import resolve_strategy


def make_trainer(
    trainer_cfg: dict[str, Any],
    max_steps: int,
    out_dir: str | Path,
    logger: Any = None,
    gradient_clip_val: float | None = None,
    accumulate_grad_batches: int = 1,
    progress: StageProgress | None = None,
    callbacks: list[L.Callback] | None = None,
) -> L.Trainer:
    """A Trainer for one stage (automatic optimisation, clipping by norm at
    `gradient_clip_val`, `accumulate_grad_batches` loader batches per optimiser step);
    checkpoints are exported in the NLA layout instead. `progress`: the stage's bar, shown
    unless `trainer.enable_progress_bar` is false."""
    # Stages validate once, after fitting, on held-out data.
    warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    # Resuming mid-epoch is exact here: the sampler skips the batches done (resumable.py).
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    # Several ranks: each validates on all held-out rows, so there is nothing to synchronise.
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed.*")
    options = resolve_strategy({k: v for k, v in trainer_cfg.items() if k not in ("device",)})
    callbacks = [*stage_bar(options, progress), *(callbacks or [])]
    return L.Trainer(
        plugins=checkpoint_plugins(),
        max_steps=max_steps,
        max_epochs=-1,
        logger=logger if logger is not None else False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(out_dir),
        gradient_clip_val=gradient_clip_val,
        accumulate_grad_batches=accumulate_grad_batches,
        callbacks=callbacks,
        # Stage loaders split themselves between ranks (EpochSeededSampler) in the order one
        # process would take; held-out validation runs whole on every rank.
        use_distributed_sampler=False,
        **options,
    )


def stage_bar(options: dict[str, Any], progress: StageProgress | None) -> list[L.Callback]:
    """The stage's own bar in place of Lightning's (taken out of the trainer `options`)."""
    shown = options.pop("enable_progress_bar", True)
    options["enable_progress_bar"] = False
    return [progress] if progress is not None and shown else []


def loader(
    dataset: ActivationTokens, batch_size: int, pad_id: int, shuffle: bool, seed: int = 0
) -> DataLoader:
    """Batches of `dataset`; shuffled: each epoch's order from (seed, epoch), resumable."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSeededSampler(dataset, seed) if shuffle else None,
        collate_fn=partial(dataset.collate, pad_id=pad_id),
    )


def make_logger(logger_cfg: dict[str, Any] | None, out_dir: str | Path, version: str) -> Any:
    """The configured Lightning logger for one stage (None when logger=none)."""
    from hydra.utils import instantiate

    if not logger_cfg:
        return None
    return instantiate({**logger_cfg, "save_dir": str(out_dir)}, version=version)


def device_of(trainer_cfg: dict[str, Any]) -> str:
    """The device for work done outside a Trainer (extraction, sampling)."""
    accelerator = str(trainer_cfg.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def fit_and_validate(
    module: L.LightningModule,
    train: ActivationTokens,
    held_out: ActivationTokens,
    pad_id: int,
    hp: SFTSettings,
    trainer_cfg: dict[str, Any],
    out_dir: str | Path,
    logger: Any,
    seed: int,
    name: str = "warm start",
    callbacks: list[L.Callback] | None = None,
    checkpoint: Path | None = None,
) -> tuple[float, dict[str, float]]:
    """Fit a warm-start module for hp.max_steps, then validate it once on held-out rows:
    (last training loss, validation metrics). `checkpoint`: a mid-fit checkpoint every
    hp.checkpoint_every steps; when an earlier attempt left it, the fit continues from it."""
    train_loader = loader(train, hp.batch_size, pad_id, shuffle=True, seed=seed)
    saver = resumable_fit(checkpoint, hp.checkpoint_every, train_loader)
    trainer = make_trainer(
        trainer_cfg,
        hp.max_steps,
        out_dir,
        logger,
        hp.gradient_clip_val,
        hp.accumulate_grad_batches,
        progress=StageProgress(name, hp.max_steps, "train/loss"),
        callbacks=[*saver, *(callbacks or [])],
    )
    trainer.fit(module, train_loader, ckpt_path=checkpoint and existing(checkpoint))
    train_loss = float(trainer.callback_metrics.get("train/loss", float("nan")))
    held_out_loader = loader(held_out, hp.batch_size, pad_id, shuffle=False)
    metrics = trainer.validate(module, held_out_loader, verbose=False)[0]
    return train_loss, metrics


def resumable_fit(checkpoint: Path | None, every: int, data: DataLoader) -> list[StepCheckpoint]:
    """The mid-fit checkpoint callback for `data`, a loader shuffled by an EpochSeededSampler
    (none without a path)."""
    if checkpoint is None:
        return []
    sampler = data.sampler if isinstance(data.sampler, EpochSeededSampler) else None
    return [StepCheckpoint(checkpoint, every, sampler, data.batch_size)]
