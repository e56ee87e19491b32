"""The round trip AR(AV(h)): the AV explains each activation, the AR reads the explanation back."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nla_lightning.core.padding import pad_right
from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.verbalizer import MAX_NEW_TOKENS, ActivationVerbalizer


def readable_rows(
    ar: ActivationReconstructor, explanations: list[str | None]
) -> list[list[int] | None]:
    """AR input ids per explanation, None for a failure: no explanation, or one the AR cannot
    read (over its input limit, or a suffix its last characters broke)."""
    rows = ar.encode([e or "" for e in explanations], overflow="none")
    return [row if e is not None else None for e, row in zip(explanations, rows, strict=True)]


@torch.no_grad()
def predict_rows(
    ar: ActivationReconstructor, rows: list[list[int] | None], batch_size: int = 64
) -> torch.Tensor:
    """AR predictions [N, d]; a failure (None) is read as an empty explanation."""
    empty = ar.encode([""])[0]
    rows = [empty if row is None else row for row in rows]
    parts = []
    for i in range(0, len(rows), batch_size):
        ids, mask = pad_right(rows[i : i + batch_size], ar.tokenizer.pad_token_id)
        parts.append(ar(ids.to(ar.device), mask.to(ar.device)))
    return torch.cat(parts).float()


def reconstruct_explanations(
    ar: ActivationReconstructor, explanations: list[str | None], batch_size: int = 64
) -> torch.Tensor:
    """AR predictions [N, d]; a failure (no explanation, or one the AR cannot read) is read as
    an empty explanation."""
    return predict_rows(ar, readable_rows(ar, explanations), batch_size)


@dataclass
class RoundTrip:
    """What the AV said about each activation and what the AR made of it."""

    explanations: list[str | None]  # None where the AV wrote no closed explanation
    predicted: torch.Tensor  # [N, d] float32 on the CPU
    tokens: int  # response tokens written in all

    @property
    def failures(self) -> int:
        return sum(e is None for e in self.explanations)

    def reordered(self, order: torch.Tensor) -> RoundTrip:
        """The same round trips, row i being this one's row order[i]."""
        rows = order.tolist()
        return RoundTrip([self.explanations[i] for i in rows], self.predicted[order], self.tokens)


@torch.no_grad()
def round_trip(
    av: ActivationVerbalizer,
    ar: ActivationReconstructor,
    activations: torch.Tensor,
    batch_size: int = 64,
    max_new_tokens: int = MAX_NEW_TOKENS,
    temperature: float = 1.0,
) -> RoundTrip:
    """AR(AV(h)) for every row, `batch_size` activations per generate (greedy at temperature
    0); the caller seeds sampling."""
    explanations: list[str | None] = []
    rows: list[list[int] | None] = []
    tokens = 0
    for start in range(0, len(activations), batch_size):
        batch = activations[start : start + batch_size].to(av.prompt_ids.device)
        rollout = av.sample(batch, max_new_tokens=max_new_tokens, temperature=temperature)
        batch_rows = readable_rows(ar, rollout.explanations)
        # An explanation the AR cannot read counts as a failure, like an unclosed response.
        explanations.extend(
            e if row is not None else None
            for e, row in zip(rollout.explanations, batch_rows, strict=True)
        )
        rows.extend(batch_rows)
        tokens += int(rollout.lengths.sum())
    predicted = predict_rows(ar, rows, batch_size).cpu()
    return RoundTrip(explanations, predicted, tokens)
