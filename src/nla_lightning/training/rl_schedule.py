"""What each RL step reads: its index (from the module's own counter, so a resumed run goes on
where its checkpoint stopped), its rows and its seed, all functions of (seed, step, rank)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import IterableDataset


class StepIndices(IterableDataset):
    """Yields RL step indices from the module's counter on, without end: the module stops the
    Trainer after its last step, so a resumed run continues exactly where the checkpoint stopped
    (Lightning's own step counter counts both optimisers and skipped steps differently)."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.module.steps_done)


def seed_for(*parts: Any) -> int:
    """A 64-bit seed from the parts (e.g. seed, "step", step, rank)."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


def batch_rows(n: int, size: int, step: int, world_size: int, rank: int, seed: int) -> torch.Tensor:
    """Row indices of `rank`'s batch of `size` at `step`, out of `n` rows: epochs of seeded
    permutations, each rank a different slice."""
    start = (step * world_size + rank) * size
    permutations: dict[int, torch.Tensor] = {}
    rows = []
    for position in range(start, start + size):
        epoch, offset = divmod(position, n)
        if epoch not in permutations:
            generator = torch.Generator().manual_seed(seed_for(seed, "epoch", epoch))
            permutations[epoch] = torch.randperm(n, generator=generator)
        rows.append(int(permutations[epoch][offset]))
    return torch.tensor(rows)
