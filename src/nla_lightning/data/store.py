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
    against `expect` and its vectors for width and NaN/inf.

    The activations come back as a tensor over a memory-mapped float32 copy of the column
    (`{file}.f32`, made once by streaming record batches), so a dataset larger than RAM costs
    only the rows a batch touches, and never a Python object per number."""
    path = Path(path)
    if not path.exists():
        raise NLAConfigError(f"no activation file at {path}")
    meta = NLAMeta.load(sidecar_path(path))
    if expect is not None:
        expect.check_compatible(meta, what=f"the dataset {path.name}")
    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        if ACTIVATION_COLUMN not in names:
            raise NLAConfigError(f"{path} has no {ACTIVATION_COLUMN!r} column")
        wanted = [n for n in names if n != ACTIVATION_COLUMN and (columns is None or n in columns)]
        rest = pq.read_table(path, columns=wanted).to_pydict() if wanted else {}
        activations = _mapped_activations(path, parquet, meta.d_model)
    except (pa.ArrowInvalid, OSError) as err:
        raise NLAConfigError(
            f"{path} is not a readable Parquet file ({err}); delete it and extract it again"
        ) from err
    check_finite(activations, where=f"activations in {path}")
    return ActivationTable(activations, rest, meta)


def _mapped_activations(path: Path, parquet: pq.ParquetFile, d_model: int) -> torch.Tensor:
    """[N, d] float32 tensor backed by `{path}.f32`, rebuilt when the Parquet file is newer."""
    n = parquet.metadata.num_rows
    cache = path.with_name(path.name + ".f32")
    stale = not cache.exists() or cache.stat().st_mtime < path.stat().st_mtime
    if stale or cache.stat().st_size != n * d_model * 4:
        tmp = cache.with_name(cache.name + ".tmp")
        with tmp.open("wb") as out:
            for batch in parquet.iter_batches(columns=[ACTIVATION_COLUMN], batch_size=4096):
                vectors = batch.column(0)
                lengths = np.diff(vectors.offsets.to_numpy())
                if len(lengths) and not (lengths == d_model).all():
                    raise NLAConfigError(
                        f"{path}: activation vectors have lengths "
                        f"{sorted(set(lengths.tolist()))[:5]} but the sidecar says "
                        f"d_model={d_model}"
                    )
                flat = vectors.flatten().to_numpy(zero_copy_only=False)
                out.write(np.ascontiguousarray(flat, dtype=np.float32).tobytes())
        tmp.replace(cache)
    if n == 0:
        return torch.empty((0, d_model), dtype=torch.float32)
    # Copy-on-write: writable for torch, the file itself is never changed.
    mapped = np.memmap(cache, dtype=np.float32, mode="c", shape=(n, d_model))
    return torch.from_numpy(mapped)
