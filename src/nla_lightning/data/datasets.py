"""Torch datasets pairing activations with token rows (AV responses or AR inputs)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from nla_lightning.core.padding import pad_right


def derangement(n: int, seed: int) -> torch.Tensor:
    """A permutation with no fixed point, for the shuffled-activation control."""
    if n < 2:
        raise ValueError("the shuffled control needs at least 2 rows")
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    # Shifting along a random cycle moves every row.
    shuffled = torch.empty_like(perm)
    shuffled[perm] = perm.roll(1)
    return shuffled


class ActivationTokens(Dataset):
    """Row i: activation i, token ids i, and (for the control) another row's activation."""

    def __init__(
        self, activations: torch.Tensor, rows: Sequence[Sequence[int]], seed: int = 0
    ) -> None:
        if len(rows) != activations.shape[0]:
            raise ValueError(f"{activations.shape[0]} activations but {len(rows)} token rows")
        self.activations = activations
        self.rows = [list(r) for r in rows]
        self.shuffled = (
            derangement(len(rows), seed) if len(rows) > 1 else torch.zeros(1, dtype=torch.long)
        )

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, list[int]]:
        return i, self.rows[i]

    def collate(self, items: list[tuple[int, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
        index = torch.tensor([i for i, _ in items])
        ids, mask = pad_right([row for _, row in items], pad_id)
        return {
            "activations": self.activations[index],
            "activations_shuffled": self.activations[self.shuffled[index]],
            "ids": ids,
            "mask": mask,
        }
