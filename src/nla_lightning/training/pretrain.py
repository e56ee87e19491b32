"""The toy target: a Qwen2 built from config and pretrained next-token on a corpus, so its
activations mean something."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from nla_lightning.core.target import Target
from nla_lightning.training.checkpointing import replace_directory
from nla_lightning.training.progress import StageProgress
from nla_lightning.training.resumable import EpochSeededSampler, existing
from nla_lightning.training.sft import warmup_cosine
from nla_lightning.training.sharding import shard_under_strategy
from nla_lightning.training.trainer import make_trainer, resumable_fit


class CausalLMPretrainModule(L.LightningModule):
    def __init__(
        self, model: torch.nn.Module, lr: float, warmup_steps: int, max_steps: int
    ) -> None:
        super().__init__()
        self.model = model
        self.save_hyperparameters(ignore=["model"])

    def configure_model(self) -> None:
        shard_under_strategy(self, self.model)

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


def toy_config(tokenizer: Any, architecture: dict[str, Any]) -> Any:
    """The toy target's Qwen2 config: the architecture fields plus the tokenizer's ids."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **architecture,
    )


def build_toy_target(
    model_cfg: dict[str, Any],
    tokenizer: Any,
    corpus: list[str],
    path: Path,
    trainer_cfg: dict[str, Any],
    logger: Any,
    seed: int,
    callbacks: list[L.Callback] | None = None,
    checkpoint: Path | None = None,
) -> Target:
    """A Qwen2-architecture model built from config, pretrained on `corpus`, saved to `path`
    (logs beside it, in its parent). `checkpoint`: written every pretrain.checkpoint_every
    steps; where an earlier attempt left it, pretraining continues from it."""
    from transformers import AutoModelForCausalLM

    started = time.time()
    config = toy_config(tokenizer, dict(model_cfg["architecture"]))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    pretrain = model_cfg["pretrain"]
    rows = tokenizer(corpus, add_special_tokens=False)["input_ids"]
    blocks = pack_blocks(rows, pretrain["block_size"], tokenizer.eos_token_id)
    data = DataLoader(
        blocks, batch_size=pretrain["batch_size"], sampler=EpochSeededSampler(blocks, seed)
    )
    module = CausalLMPretrainModule(
        model, lr=pretrain["lr"], warmup_steps=pretrain["warmup_steps"], max_steps=pretrain["steps"]
    )
    trainer = make_trainer(
        trainer_cfg,
        pretrain["steps"],
        path.parent,
        logger,
        gradient_clip_val=pretrain.get("gradient_clip_val"),
        progress=StageProgress("target", pretrain["steps"], "train/loss"),
        callbacks=[
            *resumable_fit(checkpoint, pretrain["checkpoint_every"], data),
            *(callbacks or []),
        ],
    )
    trainer.fit(module, data, ckpt_path=checkpoint and existing(checkpoint))
    loss = float(trainer.callback_metrics.get("train/loss", float("nan")))

    def save(directory: Path) -> None:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    replace_directory(save, path)  # whole or absent
    pretraining = {
        "params": sum(p.numel() for p in model.parameters()),
        "pretrain_loss": loss,
        "pretrain_steps": pretrain["steps"],
        "corpus_tokens": int(sum(len(r) for r in rows)),
        "wall_s": round(time.time() - started, 1),
    }
    return Target(
        name=model_cfg["name"],
        path=str(path),
        tokenizer=tokenizer,
        config=config,
        pretraining=pretraining,
    )
