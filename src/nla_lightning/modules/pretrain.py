"""Next-token pretraining of the toy target, so its activations mean something."""

from __future__ import annotations

import lightning as L
import torch

from nla_lightning.modules.sft import warmup_cosine


class CausalLMPretrainModule(L.LightningModule):
    def __init__(
        self, model: torch.nn.Module, lr: float, warmup_steps: int, max_steps: int
    ) -> None:
        super().__init__()
        self.model = model
        self.save_hyperparameters(ignore=["model"])

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.model(input_ids=batch, labels=batch, use_cache=False).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.shape[0])
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(self.hparams.warmup_steps, self.hparams.max_steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def pack_blocks(token_rows: list[list[int]], block_size: int, separator: int) -> torch.Tensor:
    """Concatenate documents (separated) and cut into full blocks: [n_blocks, block_size]."""
    flat: list[int] = []
    for row in token_rows:
        flat.extend(row)
        flat.append(separator)
    n_blocks = len(flat) // block_size
    if n_blocks == 0:
        raise ValueError(f"corpus of {len(flat)} tokens is shorter than one block of {block_size}")
    return torch.tensor(flat[: n_blocks * block_size]).view(n_blocks, block_size)
