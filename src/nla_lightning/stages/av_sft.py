"""Stage `av_sft`: the AV's supervised warm start on (activation, explanation) pairs, saved
as checkpoints/av; held-out loss beside the same with shuffled activations."""

from __future__ import annotations

import time
from typing import Any

import torch

from nla_lightning.core.verbalizer import ActivationVerbalizer, encode_responses
from nla_lightning.data.columns import table_explanations
from nla_lightning.data.datasets import ActivationTokens
from nla_lightning.data.store import read_activations
from nla_lightning.settings import RunSettings
from nla_lightning.stages.context import Need, StageContext, warm_start_needs
from nla_lightning.training.builders import warm_start_av
from nla_lightning.training.checkpointing import replace_directory
from nla_lightning.training.resumable import save_now
from nla_lightning.training.sft import AVSFTModule
from nla_lightning.training.trainer import fit_and_validate, make_logger

NAME = "av_sft"


def needs(settings: RunSettings) -> list[Need]:
    return warm_start_needs(settings, "the AV's data", "av_sft")


def makes(settings: RunSettings) -> list[str]:
    return ["checkpoints/av"]


def run(ctx: StageContext) -> dict[str, Any]:
    settings, hp = ctx.settings, ctx.settings.sft.av
    started = time.time()
    target, meta = ctx.load_target(), ctx.load_meta()
    av = warm_start_av(target.path, target.tokenizer, meta, settings.model["train"])
    train_table = read_activations(ctx.split("av_sft"), expect=meta)
    eval_table = read_activations(ctx.split("eval"), expect=meta)
    train, held_out = (
        ActivationTokens(
            table.activations,
            encode_responses(target.tokenizer, table_explanations(table)),
            seed=settings.seed,
        )
        for table in (train_table, eval_table)
    )
    module = AVSFTModule(av, **hp.optimiser())
    logger = make_logger(settings.logger, ctx.run.root, NAME)
    checkpoint = ctx.run.stage_checkpoint(NAME)  # continued from, where a start left it
    train_loss, metrics = fit_and_validate(
        module,
        train,
        held_out,
        av.pad_id,
        hp,
        settings.trainer,
        ctx.run.root,
        logger,
        settings.seed,
        name=NAME,
        callbacks=[ctx.graceful_stop(NAME, save_now, checkpoint)],
        checkpoint=checkpoint,
    )
    replace_directory(av.save, ctx.run.nla("warm_start")[0])  # whole or absent
    # Sampled from the seed, not from whatever the fit left in the global generator (a fit
    # continued from a checkpoint draws less from it).
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        examples = _examples(av.eval(), eval_table, n=4, max_new_tokens=hp.max_new_tokens)
    return {
        "loss": metrics["val/loss"],
        "loss_shuffled": metrics["val/loss_shuffled"],
        "train_loss": train_loss,
        "steps": hp.max_steps,
        "train_rows": len(train),
        "eval_rows": len(held_out),
        "examples": examples,
        "wall_s": round(time.time() - started, 1),
    }


def _examples(av: ActivationVerbalizer, table: Any, n: int, max_new_tokens: int) -> list[dict]:
    """A few sampled explanations of held-out activations beside their text and target."""
    rollout = av.sample(table.activations[:n], max_new_tokens=max_new_tokens)
    targets = table_explanations(table)
    return [
        {
            "text": table.columns["text"][i],
            "warm_start_target": targets[i],
            "sampled": rollout.explanations[i] or f"(no explanation: {rollout.texts[i][:80]!r})",
        }
        for i in range(min(n, len(rollout.texts)))
    ]
