"""What one extraction run did: counts, shards and speed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ExtractionStats:
    """Counts of this run (a resumed run counts only its own work) and shards per split."""

    docs: int = 0
    skipped_short: int = 0
    skipped_empty: int = 0
    vectors: int = 0
    shards: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    resumed_from: int = 0

    @property
    def vectors_per_s(self) -> float:
        return self.vectors / self.wall_s if self.wall_s > 0 else 0.0

    def __str__(self) -> str:
        shards = ", ".join(f"{k}={v}" for k, v in self.shards.items())
        resumed = f" (resumed after {self.resumed_from} docs)" if self.resumed_from else ""
        return (
            f"extracted {self.vectors} vectors from {self.docs} docs{resumed} "
            f"(skipped {self.skipped_short} short, {self.skipped_empty} empty) in "
            f"{self.wall_s:.1f} s = {self.vectors_per_s:.1f} vectors/s; shards: {shards}"
        )
