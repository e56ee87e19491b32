"""Warm start: AV SFT (response-only next-token loss with injection) and AR SFT (normalised MSE)."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from nla_lightning.core.activations import normalised_mse
from nla_lightning.core.metrics import FVE
from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.verbalizer import ActivationVerbalizer
from nla_lightning.training.distributed import GradientSync
from nla_lightning.training.sharding import is_sharded, shard_under_strategy


def warmup_cosine(warmup_steps: int, total_steps: int, floor: float = 0.1):
    """Linear warm-up, then cosine decay to `floor` x the peak learning rate."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class _WarmStartModule(L.LightningModule):
    """AdamW with a linear warm-up, then cosine decay to 0.1x (`cosine`) or a constant rate
    (`constant`, the release's); the optimiser settings are `SFTSettings.optimiser()`'s."""

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 20,
        max_steps: int = 1000,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        lr_schedule: str = "cosine",
    ) -> None:
        super().__init__()
        # Lightning also collects the subclass's init arguments: the models themselves are
        # saved as weights, and trying to pickle a real model into hparams costs seconds.
        self.save_hyperparameters(ignore=["av", "ar"])

    def on_fit_start(self) -> None:
        # from_pretrained returns models in eval mode (dropout off); training wants train mode.
        self.train()

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            params, lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.adam_betas)
        )
        floor = 1.0 if hp.lr_schedule == "constant" else 0.1
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(hp.warmup_steps, hp.max_steps, floor=floor)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class AVSFTModule(_WarmStartModule):
    """Teaches the AV to write the warm-start explanation of an injected activation."""

    def __init__(self, av: ActivationVerbalizer, **optimiser: Any) -> None:
        super().__init__(**optimiser)
        self.av = av

    def configure_model(self) -> None:
        shard_under_strategy(self, self.av.model)

    def on_train_start(self) -> None:
        # By now the strategy has wrapped (DDP) or sharded the AV; the process group exists.
        self.ranks = GradientSync(self.trainer.strategy, sharded=is_sharded(self.av.model))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.av.sft_loss(batch["activations"], batch["ids"], batch["mask"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["ids"].shape[0])
        # Several ranks: the mean over the tokens of ALL ranks' batches, as one process's.
        return loss * self.ranks.share(float(batch["mask"].sum()))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        n = batch["ids"].shape[0]
        loss = self.av.sft_loss(batch["activations"], batch["ids"], batch["mask"])
        shuffled = self.av.sft_loss(batch["activations_shuffled"], batch["ids"], batch["mask"])
        self.log("val/loss", loss, prog_bar=True, batch_size=n)
        self.log("val/loss_shuffled", shuffled, batch_size=n)


class ARSFTModule(_WarmStartModule):
    """Teaches the AR to map a warm-start explanation back to its activation."""

    def __init__(self, ar: ActivationReconstructor, **optimiser: Any) -> None:
        super().__init__(**optimiser)
        self.ar = ar
        self.val_fve = FVE(ar.meta.d_model, ar.meta.mse_scale)
        self.val_fve_shuffled = FVE(ar.meta.d_model, ar.meta.mse_scale)

    def configure_model(self) -> None:
        shard_under_strategy(self, self.ar, blocks_of=self.ar.backbone)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        prediction = self.ar(batch["ids"], batch["mask"])
        return normalised_mse(prediction, batch["activations"], self.ar.meta.mse_scale), prediction

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)[0].mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["ids"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        mse, prediction = self.loss(batch)
        self.val_fve.update(prediction, batch["activations"])
        self.val_fve_shuffled.update(prediction, batch["activations_shuffled"])
        n = batch["ids"].shape[0]
        self.log("val/loss", mse.mean(), batch_size=n)
        self.log("val/fve", self.val_fve, prog_bar=True, batch_size=n)
        self.log("val/fve_shuffled", self.val_fve_shuffled, batch_size=n)
