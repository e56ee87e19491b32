"""The RL stage's two optimisers (AV and AR), their schedules, and the rule that stops them
after too many bad (non-finite) steps in a row."""

from __future__ import annotations

import torch
from torch import nn

from nla_lightning.settings.rl import RLSettings
from nla_lightning.training.sft import warmup_cosine


def rl_optimisers(av: nn.Module, ar: nn.Module, hp: RLSettings):
    """AdamW for the AV's and the AR's trainable parameters (rl.av_lr, rl.ar_lr), each with a
    linear warm-up to a constant rate: Lightning's ([optimisers], [schedules])."""
    adam = {"betas": tuple(hp.adam_betas), "eps": hp.adam_eps, "weight_decay": hp.weight_decay}
    optimisers = [
        torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, **adam)
        for model, lr in ((av, hp.av_lr), (ar, hp.ar_lr))
    ]
    schedules = [
        torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(hp.warmup_steps, hp.steps, floor=1.0))
        for opt in optimisers
    ]
    return optimisers, schedules


def count_bad_step(bad_steps: int, skipped: list[str], limit: int) -> int:
    """The count of bad steps in a row after this one: a step with any skipped update (AR, AV
    or both) is one bad step, a clean one resets the count; `limit` in a row stop the run."""
    if not skipped:
        return 0
    bad_steps += 1
    if bad_steps >= limit:
        what = " and ".join(dict.fromkeys(skipped))
        raise RuntimeError(
            f"{bad_steps} RL steps in a row had a NaN/inf {what}: training diverged. "
            "Lower rl.av_lr / rl.ar_lr, raise rl.beta, or resume from the last checkpoint"
        )
    return bad_steps
