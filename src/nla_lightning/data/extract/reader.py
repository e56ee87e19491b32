"""Reading one split of an extraction back as a single tensor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nla_lightning.core.meta import NLAMeta
from nla_lightning.data.extract.manifest import Manifest
from nla_lightning.data.extract.shards import shard_files
from nla_lightning.data.store import read_activations
from nla_lightning.errors import NLAConfigError


def read_split(
    out_dir: str | Path, split: str, expect: NLAMeta | None = None
) -> tuple[torch.Tensor, dict[str, list[Any]]]:
    """All rows of `split` in order: (activations [N, d], columns)."""
    out_dir = Path(out_dir)
    manifest = Manifest.load(out_dir)
    # The manifest's count excludes shards a crashed run wrote after its last manifest.
    count = None if manifest is None else manifest.shards.get(split, 0)
    if manifest is not None and split not in manifest.shards:
        raise NLAConfigError(
            f"{out_dir} has no split {split!r}; its splits are {sorted(manifest.shards)}"
        )
    paths = shard_files(out_dir, split, count)
    vectors: list[torch.Tensor] = []
    columns: dict[str, list[Any]] = {}
    for path in paths:
        table = read_activations(path, expect=expect)
        vectors.append(table.activations)
        for name, values in table.columns.items():
            columns.setdefault(name, []).extend(values)
    if not vectors:
        d_model = expect.d_model if expect is not None else 0
        return torch.empty((0, d_model), dtype=torch.float32), columns
    return torch.cat(vectors), columns
