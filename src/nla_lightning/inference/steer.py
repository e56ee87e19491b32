"""Steering: add an AR-derived direction to the target's residual stream at block `layer`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch

from nla_lightning.core.hooks import edit_block_output
from nla_lightning.errors import NLAConfigError
from nla_lightning.inference.nla import NLA

Positions = Sequence[int] | Literal["all"] | None


def steering_vector(nla: NLA, original: str, edited: str) -> torch.Tensor:
    """AR(edited) - AR(original): the direction the edit moves the activation, [d]."""
    predicted = nla.reconstruct_many([original, edited])
    return predicted[1] - predicted[0]


def unit(vector: torch.Tensor) -> torch.Tensor:
    """vector [d] / ||vector||; a zero vector cannot give a direction."""
    norm = vector.float().norm()
    if not torch.isfinite(norm) or norm == 0:
        raise NLAConfigError(
            "the steering vector is zero or not finite: the original and edited explanations "
            "reconstruct to the same activation; make a larger edit"
        )
    return vector.float() / norm


@contextmanager
def steering(
    nla: NLA, vector: torch.Tensor, alpha: float, positions: Positions = None
) -> Iterator[None]:
    """Inside the block, block `layer`'s output h at each chosen absolute position gets
    alpha * ||h|| * vector/||vector||. positions: indices (prompt positions, so decode steps are
    untouched), None for every prompt position of the prefill, "all" for every token."""
    direction = unit(vector).to(nla.device)
    chosen = None if positions in (None, "all") else torch.tensor(list(positions))

    def edit(hidden: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        if positions == "all":
            mask = torch.ones_like(where, dtype=torch.bool)
        elif chosen is None:
            # A decode step (one token past the cache) has a position id > 0; the prefill
            # starts at 0, so "the prompt" is every token of a forward that starts at 0.
            mask = (where[:, :1] == 0).expand_as(where)
        else:
            mask = torch.isin(where, chosen.to(where.device))
        norms = hidden.float().norm(dim=-1, keepdim=True)
        added = alpha * norms * direction
        return torch.where(mask.unsqueeze(-1), hidden.float() + added, hidden.float())

    with edit_block_output(nla.target, nla.layer, edit):
        yield


def check_positions(positions: Positions, n: int) -> None:
    if positions in (None, "all"):
        return
    bad = [p for p in positions if not 0 <= int(p) < n]
    if bad:
        raise NLAConfigError(
            f"steering positions {bad[:5]} are outside the prompt's {n} tokens: use 0..{n - 1}, "
            "None for the whole prompt or 'all' for every token"
        )


@torch.inference_mode()
def steer_generate(
    nla: NLA,
    prompt: str,
    vector: torch.Tensor,
    alpha: float,
    positions: Positions = None,
    max_new_tokens: int = 20,
    samples: int = 1,
    seed: int = 0,
    temperature: float = 0.0,
) -> list[str]:
    """`samples` continuations of `prompt` with steering (greedy when temperature is 0), one
    batched generate; seed makes sampling reproducible."""
    ids = nla.encode(prompt)
    check_positions(positions, ids.shape[1])
    batch = ids.expand(samples, -1)
    sample = temperature > 0
    torch.manual_seed(seed)
    pad = nla.tokenizer.pad_token_id
    with steering(nla, vector, alpha, positions):
        out = nla.target.generate(
            input_ids=batch,
            attention_mask=torch.ones_like(batch),
            do_sample=sample,
            temperature=temperature if sample else None,
            top_k=0 if sample else None,
            top_p=1.0 if sample else None,
            max_new_tokens=max_new_tokens,
            pad_token_id=nla.tokenizer.eos_token_id if pad is None else pad,
            use_cache=True,
        )
    return nla.tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)


def compare_steering(
    nla: NLA, prompt: str, vector: torch.Tensor, alpha: float, **kwargs: object
) -> dict[str, list[str]]:
    """Continuations without (alpha=0) and with steering, same seed: {baseline, steered}."""
    return {
        "baseline": steer_generate(nla, prompt, vector, 0.0, **kwargs),
        "steered": steer_generate(nla, prompt, vector, alpha, **kwargs),
    }
