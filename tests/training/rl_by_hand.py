"""The RL step's maths written out again for the tests, independently of training/grpo.py and of
the AV's log-prob code: only the models' forward passes are shared."""

from __future__ import annotations

import math

import torch

from nla_lightning.training.rl import NLARLModule

TRAINER = {
    "accelerator": "cpu",
    "devices": 1,
    "max_epochs": -1,
    "enable_progress_bar": False,
    "logger": False,
    "enable_checkpointing": False,
    "enable_model_summary": False,
}


class RecordingRL(NLARLModule):
    """The RL module unchanged, except that it keeps what each step sampled:
    `self.rollouts[step] = (activations [B, d], Rollout)`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rollouts = []

    def rollout(self, activations):
        rollout = super().rollout(activations)
        self.rollouts.append((activations.detach().clone(), rollout))
        return rollout


def logprobs_by_hand(av, activations, ids, mask) -> torch.Tensor:
    """log p(response token t | AV prompt with the activation injected, tokens < t): [N, T],
    0 where masked. One plain forward of the causal LM on [prompt, response] with the prompt's
    injection-token embedding replaced by the activation rescaled to norm injection_scale (no
    hook, no KV cache, no shared prompt). `activations`: one row per response [N, d]."""
    prompt = av.prompt_ids
    n, width = ids.shape
    tokens = torch.cat([prompt.unsqueeze(0).expand(n, -1), ids], dim=1)
    attention = torch.cat([torch.ones(n, len(prompt), dtype=mask.dtype), mask], dim=1)
    embeddings = av.model.get_input_embeddings()(tokens)
    at = prompt.tolist().index(av.meta.injection_token_id)
    vectors = activations.float()
    vectors = vectors * (av.meta.injection_scale / vectors.norm(dim=-1, keepdim=True))
    embeddings = torch.cat(
        [embeddings[:, :at], vectors.to(embeddings.dtype).unsqueeze(1), embeddings[:, at + 1 :]],
        dim=1,
    )
    logits = av.model(inputs_embeds=embeddings, attention_mask=attention).logits.float()
    # Position p predicts token p + 1: the prompt's last position predicts the first response token.
    logits = logits[:, len(prompt) - 1 : len(prompt) - 1 + width]
    picked = torch.log_softmax(logits, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return picked * mask


def mse_by_hand(predicted: torch.Tensor, targets: torch.Tensor, scale: float) -> torch.Tensor:
    """Per-row MSE [n] after rescaling both rows to L2 norm `scale` (the method's comparison)."""
    p = predicted.float() * (scale / predicted.float().norm(dim=-1, keepdim=True))
    t = targets.float() * (scale / targets.float().norm(dim=-1, keepdim=True))
    return ((p - t) ** 2).mean(dim=-1)


def ar_predictions(ar, explanations: list[str]) -> torch.Tensor:
    """The AR's predictions [n, d] for explanations (its own tokenisation and forward)."""
    rows = ar.encode(explanations, overflow="none")
    assert all(r is not None for r in rows)
    width = max(len(r) for r in rows)
    pad = ar.tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ar(ids, mask)


def rewards_by_hand(ar, explanations, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards [N], per-sample MSE [N]) of the rollout's explanations against their targets
    [N, d]: reward = -log(MSE) where the response closed its tag, else the failure reward
    -log(2) (MSE 2, an orthogonal reconstruction). No gradient."""
    valid = [i for i, e in enumerate(explanations) if e is not None]
    mse = torch.full((len(explanations),), 2.0)
    with torch.no_grad():
        if valid:
            predicted = ar_predictions(ar, [explanations[i] for i in valid])
            mse[valid] = mse_by_hand(predicted, targets[valid], ar.meta.mse_scale)
    rewards = torch.full((len(explanations),), -math.log(2.0))
    rewards[valid] = -torch.log(mse[valid])
    return rewards, mse


def advantages_by_hand(rewards: torch.Tensor, group_size: int, scale_by_std: bool) -> torch.Tensor:
    """Reward minus its group's mean (optionally over the group's unbiased std + 1e-6); a group
    whose rewards are all equal gets zeros."""
    out = torch.zeros_like(rewards)
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size].double()
        if bool((group == group[0]).all()):
            continue
        centred = group - group.mean()
        if scale_by_std:
            centred = centred / (group.std(unbiased=True) + 1e-6)
        out[start : start + group_size] = centred.float()
    return out


def aggregate_by_hand(per_token: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """token_mean: over every real token of the batch; sequence_mean: each response's token
    mean, then the mean over responses."""
    keep = mask.bool()
    values = torch.where(keep, per_token, torch.zeros_like(per_token))
    if how == "token_mean":
        return values.sum() / keep.sum()
    if how == "sequence_mean":
        return (values.sum(dim=1) / keep.sum(dim=1).clamp(min=1)).mean()
    raise ValueError(how)


def first_adamw_update(grad: torch.Tensor, lr: float, eps: float) -> torch.Tensor:
    """The weight change of AdamW's first step (no weight decay): m = (1 - b1) g and
    v = (1 - b2) g^2, bias-corrected to g and g^2, so the change is -lr * g / (|g| + eps)."""
    return -lr * grad / (grad.abs() + eps)


def deltas(after, before) -> list[torch.Tensor]:
    """Weight changes in float64 (the difference of two float32 values is exact there)."""
    return [a.detach().double() - b.detach().double() for a, b in zip(after, before, strict=True)]


def relative_error(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    """||actual - expected|| / ||expected|| over all the tensors together."""
    diff = sum(
        float((a.double() - e.double()).pow(2).sum()) for a, e in zip(actual, expected, strict=True)
    )
    norm = sum(float(e.double().pow(2).sum()) for e in expected)
    return math.sqrt(diff / norm)


def normalise_rows(vectors: torch.Tensor, scale: float) -> torch.Tensor:
    """Each row rescaled to L2 norm `scale`."""
    return vectors * (scale / vectors.norm(dim=-1, keepdim=True))
