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


def make_trainer(
    trainer_cfg: dict[str, Any], max_steps: int, out_dir: str | Path, logger: Any = None
) -> L.Trainer:
    """A Trainer for one stage; checkpoints are exported in the NLA layout instead."""
    # Stages validate once, after fitting, on held-out data.
    warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    options = {k: v for k, v in trainer_cfg.items() if k not in ("device",)}
    if str(options.get("strategy", "")).endswith("spawn"):
        # Spawned ranks receive the module through shared memory; file descriptors of empty
        # storages fail to map in some containers, files always work.
        torch.multiprocessing.set_sharing_strategy("file_system")
    return L.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        logger=logger if logger is not None else False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(out_dir),
        **options,
    )


def loader(
    dataset: ActivationTokens, batch_size: int, pad_id: int, shuffle: bool, seed: int = 0
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=partial(dataset.collate, pad_id=pad_id),
    )


def make_logger(cfg: dict[str, Any], out_dir: str | Path, version: str) -> Any:
    """The configured Lightning logger for one stage (None when logger=none)."""
    from hydra.utils import instantiate

    logger_cfg = cfg.get("logger")
    if not logger_cfg:
        return None
    return instantiate({**logger_cfg, "save_dir": str(out_dir)}, version=version)


def device_of(trainer_cfg: dict[str, Any]) -> str:
    """The device for work done outside a Trainer (extraction, sampling)."""
    accelerator = str(trainer_cfg.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"
