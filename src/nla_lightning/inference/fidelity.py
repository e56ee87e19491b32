"""Fidelity: how much the target's next-token distribution moves when the activation at one
position is replaced by its NLA reconstruction, beside mean, shuffled and zero baselines."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from nla_lightning.core.activations import normalise
from nla_lightning.core.hooks import edit_block_output
from nla_lightning.core.verbalizer import MAX_NEW_TOKENS
from nla_lightning.data.datasets import derangement
from nla_lightning.evaluation.downstream_kl import splicer
from nla_lightning.inference.nla import NLA


@torch.inference_mode()
def next_token_logprobs(nla: NLA, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Log-probs of the token after each row's position: ids [B, T], positions [B] -> [B, V]."""
    # A causal model's output at p never sees tokens after p, so cut them off.
    ids = ids[:, : int(positions.max()) + 1]
    logits = nla.target(input_ids=ids, use_cache=False).logits
    rows = torch.arange(ids.shape[0], device=logits.device)
    return F.log_softmax(logits[rows, positions.to(logits.device)].float(), dim=-1)


@torch.inference_mode()
def spliced_kl(
    nla: NLA,
    ids: torch.Tensor,
    positions: Sequence[int],
    vectors: torch.Tensor,
    batch_size: int = 16,
) -> torch.Tensor:
    """KL(clean || spliced) of the next-token distribution at each position when block
    `layer`'s output there is replaced by its vector: ids [1, T], vectors [N, d] -> [N].
    One row per position (the text repeated), each row splicing only its own position."""
    where = torch.as_tensor(list(positions), device=nla.device)
    # The clean run is the same for every row: one forward of the text.
    logits = nla.target(input_ids=ids[:, : int(where.max()) + 1], use_cache=False).logits[0]
    clean = F.log_softmax(logits[where].float(), dim=-1)
    parts = []
    for start in range(0, len(where), batch_size):
        pos = where[start : start + batch_size]
        vec = vectors[start : start + batch_size].to(nla.device)
        with edit_block_output(nla.target, nla.layer, splicer(pos, vec)):
            spliced = next_token_logprobs(nla, ids.expand(len(pos), -1), pos)
        ref = clean[start : start + batch_size]
        parts.append((ref.exp() * (ref - spliced)).sum(dim=-1).clamp_min(0))
    return torch.cat(parts)


@torch.inference_mode()
def fidelity(
    nla: NLA,
    text: str,
    tokens: Sequence[int] | None = None,
    samples: int = 1,
    seed: int = 0,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 16,
) -> dict[str, object]:
    """Mean KL(clean || spliced) over the chosen positions for each replacement of h, all
    rescaled to ||h||: AR(AV(h)) (`samples` explanations each), the text's mean activation,
    another position's reconstruction (shuffled) and zero. Lower is more faithful."""
    names, acts = nla.activations(text)
    chosen = nla.check_tokens(tokens, len(names), text)
    ids = nla.encode(text)
    torch.manual_seed(seed)
    true = acts[chosen]
    norms = true.norm(dim=-1, keepdim=True)
    rollout = nla.av.sample(
        true.to(nla.av.prompt_ids.device), group_size=samples, max_new_tokens=max_new_tokens
    )
    recon = nla.reconstruct_many(rollout.explanations).view(len(chosen), samples, -1)
    repeated = [p for p in chosen for _ in range(samples)]

    def kl(vectors: torch.Tensor, where: Sequence[int]) -> torch.Tensor:
        return spliced_kl(nla, ids, where, vectors, batch_size)

    scaled = normalise(recon, 1.0) * norms.unsqueeze(1).to(recon.device)
    per_position = kl(scaled.flatten(0, 1), repeated).view(len(chosen), samples).mean(dim=1)
    mean = normalise(normalise(acts, 1.0).mean(dim=0), 1.0) * norms
    results: dict[str, object] = {
        "positions": chosen,
        "tokens": [names[i] for i in chosen],
        "kl_per_position": per_position.tolist(),
        "kl_reconstruction": float(per_position.mean()),
        "kl_mean": float(kl(mean, chosen).mean()),
        "kl_zero_ablation": float(kl(torch.zeros_like(true), chosen).mean()),
        "kl_shuffled": float("nan"),
        "explanations": [rollout.explanations[i * samples] for i in range(len(chosen))],
    }
    if len(chosen) > 1:
        # Each position gets the (first-sample) reconstruction of another, at its own norm.
        other = normalise(recon[derangement(len(chosen), seed), 0], 1.0) * norms.to(recon.device)
        results["kl_shuffled"] = float(kl(other, chosen).mean())
    return results
