"""Parquet files of raw activations plus their `{file}.nla_meta.yaml` sidecar."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from nla_lightning.activations import check_finite, check_width
from nla_lightning.errors import NLAConfigError
from nla_lightning.meta import NLAMeta

ACTIVATION_COLUMN = "activation_vector"


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".nla_meta.yaml")


def write_activations(
    path: str | Path,
    activations: np.ndarray | torch.Tensor,
    columns: dict[str, list[Any]],
    meta: NLAMeta,
) -> Path:
    """Write raw activations [N, d] and per-row columns; the file appears whole or not at all."""
    path = Path(path)
    if isinstance(activations, torch.Tensor):
        activations = activations.detach().to("cpu", torch.float32).numpy()
    activations = np.ascontiguousarray(activations, dtype=np.float32)
    n, d = activations.shape
    check_width(torch.from_numpy(activations[:1]), meta.d_model, where=str(path))
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    vectors = pa.ListArray.from_arrays(offsets, pa.array(activations.reshape(-1)))
    arrays = {ACTIVATION_COLUMN: vectors}
    for name, values in columns.items():
        if len(values) != n:
            raise ValueError(f"column {name!r} has {len(values)} rows, expected {n}")
        arrays[name] = pa.array(values)
    table = pa.table(arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    meta.save(sidecar_path(path), kind="nla_dataset")
    tmp.replace(path)
    return path


@dataclass
class ActivationTable:
    """Activations [N, d] as one float32 tensor plus the other columns."""

    activations: torch.Tensor
    columns: dict[str, list[Any]]
    meta: NLAMeta

    def __len__(self) -> int:
        return self.activations.shape[0]


def read_activations(
    path: str | Path, expect: NLAMeta | None = None, columns: list[str] | None = None
) -> ActivationTable:
    """Read a file written by `write_activations` (or the official layout), checking its sidecar
    against `expect` and its vectors for width and NaN/inf."""
    path = Path(path)
    if not path.exists():
        raise NLAConfigError(f"no activation file at {path}")
    meta = NLAMeta.load(sidecar_path(path))
    if expect is not None:
        expect.check_compatible(meta, what=f"the dataset {path.name}")
    try:
        table = pq.read_table(path, columns=columns and [ACTIVATION_COLUMN, *columns])
    except (pa.ArrowInvalid, OSError) as err:
        raise NLAConfigError(
            f"{path} is not a readable Parquet file ({err}); delete it and extract it again"
        ) from err
    if ACTIVATION_COLUMN not in table.column_names:
        raise NLAConfigError(f"{path} has no {ACTIVATION_COLUMN!r} column")
    vectors = table.column(ACTIVATION_COLUMN).combine_chunks()
    lengths = np.diff(vectors.offsets.to_numpy())
    if len(lengths) and not (lengths == meta.d_model).all():
        raise NLAConfigError(
            f"{path}: activation vectors have lengths {sorted(set(lengths.tolist()))[:5]} but the "
            f"sidecar says d_model={meta.d_model}"
        )
    flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=True)
    activations = torch.from_numpy(flat.reshape(len(lengths), meta.d_model))
    check_finite(activations, where=f"activations in {path}")
    rest = {
        name: table.column(name).to_pylist()
        for name in table.column_names
        if name != ACTIVATION_COLUMN
    }
    return ActivationTable(activations, rest, meta)
