"""GRPO pieces for training the activation verbaliser: rewards, group-relative advantages,
the token-level clipped policy loss, the KL to a frozen reference (k1 or k3) and loss
aggregation. The options are documented once, on `RLSettings` (settings/rl.py).

Pure torch functions, no model code. Rows are grouped contiguously: rows ``g*i .. g*i+g-1``
are the ``g`` responses sampled for activation ``i``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from nla_lightning.settings.rl import AGGREGATIONS, KL_ESTIMATORS, REWARD_KINDS


def group_advantages(
    rewards: Tensor, group_size: int, scale_by_std: bool = False, eps: float = 1e-6
) -> Tensor:
    """Group-relative advantages: rewards [N] -> [N] float32, reward minus its group's mean.

    With ``scale_by_std`` the centred reward is divided by ``std + eps`` where std is the
    *unbiased* std of the group (divides by g - 1), as the release and TRL do: a group of 2
    with rewards a < b gets -+1/sqrt(2) before eps. A group whose rewards are all equal
    (including every group of 1, where g - 1 = 0) gets exactly 0 for every row:
    floating-point means of equal values need not equal the values, so such groups are zeroed
    explicitly.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    n = rewards.shape[0]
    if n % group_size != 0:
        raise ValueError(
            f"number of rewards ({n}) is not a multiple of group_size ({group_size}); "
            "rows must be grouped contiguously, group_size responses per activation"
        )
    grouped = rewards.float().view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_by_std:
        spread = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.ones_like(centred)
        centred = centred / (spread + eps)
    # Equal rewards carry no learning signal; force exact zeros (also covers group_size 1).
    degenerate = grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)
    return torch.where(degenerate, torch.zeros_like(centred), centred).view(n)


def k3_kl(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(policy || ref), same shape as the inputs, float32.

    ``exp(ref - logp) - (ref - logp) - 1``: unbiased for samples drawn from the policy, always
    >= 0 and exactly 0 where the two agree. Gradient flows through ``logprobs`` only. No clamp
    is applied, so a huge ``ref - logp`` overflows to inf (caught by ``finite_or_none``).
    """
    delta = ref_logprobs.detach().float() - logprobs.float()
    return torch.exp(delta) - delta - 1.0


def k1_kl(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k1 estimate of KL(policy || ref): ``logp - ref``, float32 (the release's).

    Unbiased for samples drawn from the policy but, unlike k3, negative wherever the sample is
    likelier under the reference; as a loss term its gradient is the score function alone.
    Gradient flows through ``logprobs`` only."""
    return logprobs.float() - ref_logprobs.detach().float()


KL_FUNCTIONS = {"k1": k1_kl, "k3": k3_kl}


def clipped_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
) -> tuple[Tensor, Tensor]:
    """PPO-style clipped loss: logprobs/old_logprobs [N, T], advantages [N] -> ([N, T] float32
    per-token loss, [N, T] bool is_clipped).

    loss = max(-A * ratio, -A * clamp(ratio, 1 - clip_eps, 1 + clip_eps_high)), with
    ``clip_eps_high`` defaulting to ``clip_eps`` (set it higher for DAPO's clip-higher).
    ``is_clipped`` marks tokens where the clamped term is strictly larger, i.e. where clipping
    changed the value (and so zeroed the gradient). Gradient flows through ``logprobs`` only.
    """
    if logprobs.shape != old_logprobs.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)} and old_logprobs {tuple(old_logprobs.shape)} "
            "must have the same shape"
        )
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(
            f"advantages must be [N] = [{logprobs.shape[0]}], got {tuple(advantages.shape)}"
        )
    high = clip_eps if clip_eps_high is None else clip_eps_high
    # float32: bf16 logprob differences lose the precision the ratio near 1 needs.
    ratio = torch.exp(logprobs.float() - old_logprobs.detach().float())
    adv = advantages.detach().float().unsqueeze(-1)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def aggregate(
    per_token: Tensor, mask: Tensor, mode: str = "token_mean", max_length: int | None = None
) -> Tensor:
    """Reduce a per-token value [N, T] under a mask [N, T] (True/1 = real token) to a scalar.

    - ``token_mean``: sum over unmasked tokens / their count (DAPO).
    - ``sequence_mean``: mean over each sequence's tokens, then mean over all N sequences
      (original GRPO; a sequence with no tokens contributes 0).
    - ``constant_norm``: sum / (N * max_length) (Dr. GRPO; ``max_length`` required).
    - ``sum``: the plain sum over every unmasked token (no normalisation).

    Masked positions are selected out with ``where`` rather than multiplied by 0, so NaN/inf
    in padding does not leak into the value. No tokens at all gives 0, not NaN.
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {mode!r}; expected one of {AGGREGATIONS}")
    if mask.shape != per_token.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must match per_token {tuple(per_token.shape)}")
    if mode == "constant_norm" and (max_length is None or max_length < 1):
        raise ValueError(f"constant_norm aggregation needs max_length >= 1, got {max_length}")
    keep = mask.bool()
    values = torch.where(keep, per_token, torch.zeros_like(per_token))
    n = per_token.shape[0]
    if n == 0:
        return values.sum()  # 0, still attached to the graph
    if mode == "token_mean":
        return values.sum() / keep.sum().clamp(min=1)
    if mode == "sequence_mean":
        return (values.sum(dim=-1) / keep.sum(dim=-1).clamp(min=1)).mean()
    if mode == "sum":
        return values.sum()
    return values.sum() / (n * max_length)


def chunk_weight(mode: str, chunk_mask: Tensor, batch_mask: Tensor) -> float:
    """The weight of a micro-batch's loss (rows ``chunk_mask`` [n, T] of ``batch_mask``
    [N, T]) so that the weighted chunk losses sum to the whole batch's ``aggregate(mode)``."""
    if mode == "token_mean":
        return float(chunk_mask.sum() / batch_mask.sum().clamp(min=1))
    if mode == "sum":
        return 1.0
    return chunk_mask.shape[0] / batch_mask.shape[0]


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of values [N, T] over mask [N, T] as a detached float32 scalar; 0 if mask is empty."""
    keep = mask.bool()
    values = torch.where(keep, values.detach().float(), torch.zeros((), device=values.device))
    return values.sum() / keep.sum().clamp(min=1)


@dataclass
class GRPOLoss:
    """Scalars from one GRPO step: ``loss`` carries the graph; the rest are detached logs."""

    loss: Tensor
    policy_loss: Tensor
    kl: Tensor
    clip_fraction: Tensor


def grpo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    ref_logprobs: Tensor | None = None,
    beta: float = 0.0,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    aggregation: str = "token_mean",
    max_length: int | None = None,
    kl_estimator: str = "k3",
) -> GRPOLoss:
    """GRPO loss from logprobs/old_logprobs/ref_logprobs/mask [N, T] and advantages [N].

    Per token: clipped policy loss + ``beta`` * KL (``kl_estimator`` k1 or k3; added only when
    ``beta > 0``; needs ``ref_logprobs``), reduced with ``aggregate(mode=aggregation)``.
    ``policy_loss`` is the policy term alone under the same aggregation; ``kl`` is the masked
    token mean of the estimator (reported whenever ``ref_logprobs`` is given, else 0);
    ``clip_fraction`` is the fraction of unmasked tokens whose ratio was clipped.
    """
    if kl_estimator not in KL_FUNCTIONS:
        raise ValueError(f"unknown kl_estimator {kl_estimator!r}; expected one of {KL_ESTIMATORS}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logprobs is None:
        # A silent loss without its KL term would be a hard bug to notice.
        raise ValueError("beta > 0 needs ref_logprobs")
    if ref_logprobs is not None and ref_logprobs.shape != logprobs.shape:
        raise ValueError(
            f"ref_logprobs {tuple(ref_logprobs.shape)} must match logprobs {tuple(logprobs.shape)}"
        )
    policy_tok, is_clipped = clipped_policy_loss(
        logprobs, old_logprobs, advantages, clip_eps=clip_eps, clip_eps_high=clip_eps_high
    )
    per_token = policy_tok
    kl = torch.zeros((), device=logprobs.device)
    if ref_logprobs is not None:
        kl_tok = KL_FUNCTIONS[kl_estimator](logprobs, ref_logprobs)
        kl = _masked_mean(kl_tok, mask)
        if beta > 0:
            per_token = per_token + beta * kl_tok
    loss = aggregate(per_token, mask, mode=aggregation, max_length=max_length)
    policy_loss = aggregate(policy_tok.detach(), mask, mode=aggregation, max_length=max_length)
    return GRPOLoss(
        loss=loss,
        policy_loss=policy_loss,
        kl=kl,
        clip_fraction=_masked_mean(is_clipped, mask),
    )


def failure_reward(kind: str) -> float:
    """Reward of a failed reconstruction: an orthogonal one at norm sqrt(d), per-dim MSE = 2."""
    if kind == "neg_log_mse":
        return -math.log(2.0)
    if kind == "neg_mse":
        return -2.0
    raise ValueError(f"unknown reward kind {kind!r}; expected one of {REWARD_KINDS}")


def rewards_from_mse(
    mse: Tensor, valid: Tensor, kind: str = "neg_log_mse", eps: float = 1e-8
) -> Tensor:
    """Rewards [N] float32 from per-row MSE [N] and a bool validity mask [N].

    ``-log(mse + eps)`` (neg_log_mse) or ``-mse`` (neg_mse) where valid, ``failure_reward(kind)``
    where not. Invalid rows are replaced via ``where`` (their MSE may be garbage or NaN);
    a NaN MSE on a *valid* row propagates, so ``finite_or_none`` can catch it.
    """
    fail = failure_reward(kind)  # validates kind
    if mse.shape != valid.shape:
        raise ValueError(f"mse {tuple(mse.shape)} and valid {tuple(valid.shape)} must match")
    valid = valid.bool()
    # Swap invalid rows for a harmless value first so log never sees garbage there.
    safe = torch.where(valid, mse.detach().float(), torch.ones((), device=mse.device))
    reward = -torch.log(safe + eps) if kind == "neg_log_mse" else -safe
    return torch.where(valid, reward, torch.full_like(reward, fail))


def finite_or_none(*tensors: Tensor | None) -> bool:
    """True if every given tensor (any shape; None entries skipped) is all finite."""
    # One host sync per tensor; call once per step, on the loss and a few scalars.
    return all(bool(torch.isfinite(t).all()) for t in tensors if t is not None)
