"""Downstream KL: how far the target's next-token distribution moves when block `layer`'s
output at a position is replaced by other vectors (an NLA's reconstruction, a baseline)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from nla_lightning.core.activations import normalise
from nla_lightning.core.hooks import Edit, edit_block_output
from nla_lightning.core.padding import pad_right
from nla_lightning.data.datasets import derangement


def splicer(positions: torch.Tensor, vectors: torch.Tensor) -> Edit:
    """An edit putting vectors[i] [d] at (row i, positions[i]) of the block output [B, T, d]."""

    def splice(hidden: torch.Tensor, _where: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(positions), device=hidden.device)
        hidden = hidden.clone()
        hidden[rows, positions.to(hidden.device)] = vectors.to(hidden.device, hidden.dtype)
        return hidden

    return splice


@torch.inference_mode()
def last_token_kl(
    model: torch.nn.Module,
    layer: int,
    rows: Sequence[Sequence[int]],
    replacements: dict[str, torch.Tensor],
    pad_id: int = 0,
    batch_size: int = 32,
) -> dict[str, torch.Tensor]:
    """KL(clean || spliced) of the next-token distribution after each row's LAST token, when
    block `layer`'s output there is replaced by each named set of vectors [N, d] -> name: [N].
    Many texts at once (right-padded; a causal model's last real token never sees the padding),
    one clean forward per batch shared by every replacement."""
    device = next(model.parameters()).device
    out: dict[str, list[torch.Tensor]] = {name: [] for name in replacements}
    for start in range(0, len(rows), batch_size):
        ids, mask = pad_right([list(r) for r in rows[start : start + batch_size]], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        last = mask.sum(dim=1) - 1
        clean = _last_logprobs(model, ids, mask, last)
        for name, vectors in replacements.items():
            batch = vectors[start : start + batch_size].to(device)
            with edit_block_output(model, layer, splicer(last, batch)):
                spliced = _last_logprobs(model, ids, mask, last)
            out[name].append((clean.exp() * (clean - spliced)).sum(dim=-1).clamp_min(0).cpu())
    return {name: torch.cat(parts) for name, parts in out.items()}


def _last_logprobs(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, last: torch.Tensor
) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    rows = torch.arange(ids.shape[0], device=ids.device)
    return F.log_softmax(logits[rows, last].float(), dim=-1)


def fidelity_scores(
    target: torch.nn.Module,
    layer: int,
    rows: Sequence[Sequence[int]],
    activations: torch.Tensor,
    predicted: torch.Tensor,
    pad_id: int = 0,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    """Mean KL after each row's last token when h there is replaced by AR(AV(h)) (`kl_nla`),
    by the mean direction (`kl_mean`) or by another row's reconstruction (`kl_shuffled`), each
    rescaled to the norm of the h it replaces. `rows` are the first len(rows) held-out texts."""
    n = len(rows)
    norms = activations[:n].norm(dim=-1, keepdim=True)
    mean = normalise(activations.float(), 1.0).mean(dim=0, keepdim=True).expand(n, -1)

    def at_norm(vectors: torch.Tensor) -> torch.Tensor:
        return normalise(vectors[:n].float(), 1.0) * norms

    kl = last_token_kl(
        target,
        layer,
        rows,
        {
            "kl_nla": at_norm(predicted),
            "kl_mean": at_norm(mean),
            "kl_shuffled": at_norm(predicted[derangement(n, seed)]),
        },
        pad_id=pad_id,
        batch_size=batch_size,
    )
    return {name: float(v.mean()) for name, v in kl.items()} | {"rows": n}
