"""Per-split row buffers flushed as numbered Parquet shards (each written atomically)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nla_lightning.core.meta import NLAMeta
from nla_lightning.data.store import sidecar_path, write_activations

SHARD_GLOB = "shard-*.parquet"


def shard_path(out_dir: Path, split: str, index: int) -> Path:
    return Path(out_dir) / split / f"shard-{index:05d}.parquet"


def shard_index(path: Path) -> int | None:
    """The number in `shard-00012.parquet`, or None for other names."""
    stem = path.name.removesuffix(".parquet")
    number = stem.removeprefix("shard-")
    return int(number) if stem.startswith("shard-") and number.isdigit() else None


def remove_orphans(out_dir: Path, split: str, keep: int) -> list[Path]:
    """Delete shards numbered >= keep: written by a crashed run after its last manifest."""
    removed = []
    for path in sorted((Path(out_dir) / split).glob("shard-*")):
        # Matches shard files, their sidecars and leftover .tmp files alike.
        index = shard_index(Path(path.name.split(".parquet")[0] + ".parquet"))
        if index is not None and index >= keep:
            path.unlink()
            removed.append(path)
    return removed


@dataclass
class Row:
    """One extracted prefix."""

    vector: torch.Tensor
    doc_id: str
    n_raw_tokens: int
    text: str


@dataclass
class ShardWriter:
    """Buffers rows per split; `flush` writes every buffer as shards of <= shard_rows rows."""

    out_dir: Path
    meta: NLAMeta
    shard_rows: int
    shards: dict[str, int]
    buffers: dict[str, list[Row]] = field(default_factory=dict)

    def add(self, split: str, rows: list[Row]) -> None:
        self.buffers.setdefault(split, []).extend(rows)

    def full(self) -> bool:
        return any(len(rows) >= self.shard_rows for rows in self.buffers.values())

    def flush(self) -> None:
        for split, rows in self.buffers.items():
            for start in range(0, len(rows), self.shard_rows):
                self._write(split, rows[start : start + self.shard_rows])
        self.buffers = {}

    def _write(self, split: str, rows: list[Row]) -> None:
        index = self.shards.get(split, 0)
        columns: dict[str, list[Any]] = {
            "doc_id": [r.doc_id for r in rows],
            "n_raw_tokens": [r.n_raw_tokens for r in rows],
            "activation_layer": [self.meta.layer] * len(rows),
            "text": [r.text for r in rows],
            "split": [split] * len(rows),
        }
        vectors = torch.stack([r.vector for r in rows])
        write_activations(shard_path(self.out_dir, split, index), vectors, columns, self.meta)
        self.shards[split] = index + 1


def shard_files(out_dir: Path, split: str, count: int | None = None) -> list[Path]:
    """The first `count` shards of a split, or all complete ones when count is None."""
    if count is not None:
        return [shard_path(out_dir, split, i) for i in range(count)]
    found = [p for p in (Path(out_dir) / split).glob(SHARD_GLOB) if shard_index(p) is not None]
    return sorted(p for p in found if sidecar_path(p).exists())
