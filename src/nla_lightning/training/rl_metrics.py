"""What one RL step logs: its metrics and its example explanations."""

from __future__ import annotations

from typing import Any

import torch

from nla_lightning.core.verbalizer import Rollout


def step_metrics(
    rollout: Rollout,
    rewards: torch.Tensor,
    mse: torch.Tensor,
    valid: torch.Tensor,
    ar_loss: float | None,
    av_stats: dict[str, float] | None,
    times: dict[str, float],
    variance: float,
    group_size: int,
) -> dict[str, float]:
    """rl/* (FVE against the FVE denominator `variance`, rewards, lengths, failures, losses)
    and time/* (seconds of each phase, response tokens per second) of one step."""
    n_tokens = float(rollout.response_mask.sum())
    total_s = times["av"] - times["start"]
    within = rewards.view(-1, group_size).std(dim=1, unbiased=False).mean()
    metrics = {
        "rl/fve": 1.0 - float(mse.mean()) / variance,
        "rl/reward": float(rewards.mean()),
        "rl/reward_std_in_group": float(within),
        "rl/response_length": float(rollout.lengths.float().mean()),
        "rl/failure_rate": 1.0 - float(valid.float().mean()),
        "time/rollout_s": times["rollout"] - times["start"],
        "time/ar_s": times["ar"] - times["rollout"],
        "time/av_s": times["av"] - times["ar"],
        "time/tokens_per_s": n_tokens / max(total_s, 1e-9),
    }
    if ar_loss is not None:
        metrics["rl/ar_loss"] = ar_loss
    if av_stats is not None:
        metrics.update({f"rl/{k}": v for k, v in av_stats.items()})
    return metrics


def example_rows(
    step: int, rollout: Rollout, rewards: torch.Tensor, mse: torch.Tensor, group_size: int
) -> list[dict[str, Any]]:
    """The first sample of each group: its explanation (or raw text), reward and MSE."""
    return [
        {
            "step": step,
            "explanation": rollout.explanations[i] or rollout.texts[i],
            "reward": float(rewards[i]),
            "mse": float(mse[i]),
        }
        for i in range(0, len(rewards), group_size)
    ]
