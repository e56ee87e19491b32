"""Stage `ar_sft`: the AR's supervised warm start on (explanation, activation) pairs, saved
as checkpoints/ar; held-out FVE beside the shuffled and mean-vector baselines."""

from __future__ import annotations

import time
from typing import Any

from nla_lightning.core.metrics import mean_baseline_fve
from nla_lightning.data.columns import table_explanations
from nla_lightning.data.datasets import ActivationTokens
from nla_lightning.data.store import read_activations
from nla_lightning.settings import RunSettings
from nla_lightning.stages.context import Need, StageContext, warm_start_needs
from nla_lightning.training.builders import warm_start_ar
from nla_lightning.training.checkpointing import replace_directory
from nla_lightning.training.resumable import save_now
from nla_lightning.training.sft import ARSFTModule
from nla_lightning.training.trainer import fit_and_validate, make_logger

NAME = "ar_sft"


def needs(settings: RunSettings) -> list[Need]:
    return warm_start_needs(settings, "the AR's data", "ar_sft")


def makes(settings: RunSettings) -> list[str]:
    return ["checkpoints/ar"]


def run(ctx: StageContext) -> dict[str, Any]:
    settings, hp = ctx.settings, ctx.settings.sft.ar
    started = time.time()
    target, meta = ctx.load_target(), ctx.load_meta()
    ar = warm_start_ar(target.path, target.tokenizer, meta, settings.model["train"])
    train_table = read_activations(ctx.split("ar_sft"), expect=meta)
    eval_table = read_activations(ctx.split("eval"), expect=meta)
    train, held_out = (
        ActivationTokens(
            table.activations,
            ar.encode(table_explanations(table)),
            seed=settings.seed,
        )
        for table in (train_table, eval_table)
    )
    module = ARSFTModule(ar, **hp.optimiser())
    logger = make_logger(settings.logger, ctx.run.root, NAME)
    checkpoint = ctx.run.stage_checkpoint(NAME)  # continued from, where a start left it
    train_loss, metrics = fit_and_validate(
        module,
        train,
        held_out,
        target.tokenizer.pad_token_id,
        hp,
        settings.trainer,
        ctx.run.root,
        logger,
        settings.seed,
        name=NAME,
        callbacks=[ctx.graceful_stop(NAME, save_now, checkpoint)],
        checkpoint=checkpoint,
    )
    replace_directory(ar.save, ctx.run.nla("warm_start")[1])  # whole or absent
    return {
        "fve": metrics["val/fve"],
        "fve_shuffled": metrics["val/fve_shuffled"],
        "fve_mean_baseline": mean_baseline_fve(
            train_table.activations, eval_table.activations, meta.mse_scale
        ),
        "loss": metrics["val/loss"],
        "train_loss": train_loss,
        "steps": hp.max_steps,
        "train_rows": len(train),
        "eval_rows": len(held_out),
        "wall_s": round(time.time() - started, 1),
    }
