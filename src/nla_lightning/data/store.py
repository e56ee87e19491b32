"""Parquet files of raw activations plus their `{file}.nla_meta.yaml` sidecar.

`activation_vector` is written as FixedSizeList<float32>[d_model], as in the release: a fixed
width needs no 32-bit offsets, which overflow past 2^31 floats (about 600k rows of a 7B model).
Files of older versions and other tools (`list<float>` / `large_list<float>`) are still read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from nla_lightning.core.activations import check_finite
from nla_lightning.core.meta import NLAMeta
from nla_lightning.errors import NLAConfigError

ACTIVATION_COLUMN = "activation_vector"
# The stages a dataset sidecar names; a file called after one of them (or a shard in a
# directory called so) records it, any other file is "base".
STAGES = ("base", "av_sft", "ar_sft", "rl")
# Row groups of about this size: each is read whole when the `.f32` cache is built.
ROW_GROUP_BYTES = 64 << 20
READ_BATCH_ROWS = 4096


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".nla_meta.yaml")


def vector_type(d_model: int) -> pa.DataType:
    """The column type of `activation_vector`: FixedSizeList<float32>[d_model]."""
    return pa.list_(pa.float32(), d_model)


def vector_array(activations: np.ndarray) -> pa.FixedSizeListArray:
    """[N, d] float32 rows as a FixedSizeListArray over the same buffer (no offsets, no copy)."""
    flat = pa.array(np.ascontiguousarray(activations, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, activations.shape[1])


def stage_of(path: str | Path) -> str:
    """The sidecar's stage for a file: its name (`av_sft.parquet`) or its directory's (shards)."""
    path = Path(path)
    for name in (path.name.removesuffix(".parquet"), path.parent.name):
        if name in STAGES:
            return name
    return "base"


def _as_rows(activations: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(activations, torch.Tensor):
        activations = activations.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(activations, dtype=np.float32)


class ActivationWriter:
    """Writes a dataset file chunk by chunk, so a split larger than RAM can be written.

    Each `write` appends row groups to `{path}.tmp`; a clean exit from the `with` block (or
    `close()`) writes the sidecar and renames both into place, so readers see the whole file or
    none of it. An exception (or `abort()`) removes what was written and leaves an existing file
    at `path` as it was. `columns` are the per-row columns every chunk must bring; their types
    come from the first chunk unless `types` names them."""

    def __init__(
        self,
        path: str | Path,
        meta: NLAMeta,
        columns: Sequence[str] = (),
        types: Mapping[str, pa.DataType] | None = None,
        stage: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.meta = meta
        self.columns = list(columns)
        if ACTIVATION_COLUMN in self.columns:
            raise ValueError(f"{ACTIVATION_COLUMN!r} is written from the activations, not columns")
        self.types = dict(types or {})
        self.stage = stage or stage_of(self.path)
        self.rows = 0
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._sidecar_tmp = self.path.with_name(sidecar_path(self.path).name + ".tmp")
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._state = "open"  # then "closed" or "aborted"

    def __enter__(self) -> ActivationWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(
        self, activations: np.ndarray | torch.Tensor, columns: Mapping[str, Any] | None = None
    ) -> None:
        """Append rows: activations [n, d_model] and, for each column, n values."""
        if self._state != "open":
            raise ValueError(f"the writer of {self.path} is already {self._state}")
        rows = _as_rows(activations)
        self._check_chunk(rows, columns or {})
        if len(rows) == 0:
            return
        table = self._table(rows, columns or {})
        if self._writer is None:
            self._open(table.schema)
        self._writer.write_table(table, row_group_size=self._row_group_rows())
        self.rows += len(rows)

    def close(self) -> Path:
        """Finish the file: write the sidecar and move both into place."""
        if self._state == "closed":
            return self.path
        if self._state == "aborted":
            raise ValueError(f"the writer of {self.path} was aborted: nothing to close")
        try:
            if self._writer is None:
                self._open(self._empty_schema())
            self._writer.close()
            self.meta.save(
                self._sidecar_tmp, kind="nla_dataset", stage=self.stage, row_count=self.rows
            )
            self._tmp.replace(self.path)
            # The sidecar last: its presence marks a finished file (extract/writer.py relies
            # on it); a crash between the two renames leaves a file no reader accepts.
            self._sidecar_tmp.replace(sidecar_path(self.path))
        except BaseException:
            self.abort()
            raise
        self._state = "closed"
        # The cache of a file this one replaces may be as new as this file (mtimes are coarse).
        self.path.with_name(self.path.name + ".f32").unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; an earlier file at `path` stays."""
        self._state = "aborted"
        if self._writer is not None:
            try:
                self._writer.close()
            except (OSError, pa.ArrowException):
                pass  # the file is deleted just below: its footer does not matter
        self._tmp.unlink(missing_ok=True)
        self._sidecar_tmp.unlink(missing_ok=True)

    # ---- helpers ---------------------------------------------------------------------------
    def _check_chunk(self, rows: np.ndarray, columns: Mapping[str, Any]) -> None:
        d_model = self.meta.d_model
        if rows.ndim != 2 or rows.shape[1] != d_model:
            raise NLAConfigError(
                f"activations for {self.path} have shape {tuple(rows.shape)}, i.e. width "
                f"{rows.shape[-1] if rows.ndim else None}, but the model's d_model is {d_model}: "
                "pass [rows, d_model] vectors extracted from the model the metadata describes"
            )
        if sorted(columns) != sorted(self.columns):
            raise ValueError(
                f"a chunk for {self.path} has columns {sorted(columns)}, the writer was opened "
                f"with {sorted(self.columns)}"
            )
        for name, values in columns.items():
            if len(values) != len(rows):
                raise ValueError(f"column {name!r} has {len(values)} rows, expected {len(rows)}")

    def _table(self, rows: np.ndarray, columns: Mapping[str, Any]) -> pa.Table:
        arrays = [vector_array(rows)]
        for name in self.columns:
            kind = self._type_of(name)
            arrays.append(pa.array(columns[name], type=kind))
        names = [ACTIVATION_COLUMN, *self.columns]
        if self._schema is not None:
            return pa.Table.from_arrays(arrays, schema=self._schema)
        return pa.Table.from_arrays(arrays, names=names)

    def _type_of(self, name: str) -> pa.DataType | None:
        if self._schema is not None:
            return self._schema.field(name).type
        return self.types.get(name)

    def _empty_schema(self) -> pa.Schema:
        fields = [pa.field(ACTIVATION_COLUMN, vector_type(self.meta.d_model))]
        fields += [pa.field(n, self.types.get(n, pa.null())) for n in self.columns]
        return pa.schema(fields)

    def _open(self, schema: pa.Schema) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        others = [p for p in _leaf_paths(schema) if not p.startswith(ACTIVATION_COLUMN + ".")]
        # Dictionaries and min/max statistics are useless on raw floats and cost most of the
        # write time (and the read time, through the dictionary fallback pages).
        self._writer = pq.ParquetWriter(
            self._tmp, schema, use_dictionary=others, write_statistics=others
        )
        self._schema = schema

    def _row_group_rows(self) -> int:
        return max(1, ROW_GROUP_BYTES // (4 * self.meta.d_model))


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """Parquet leaf column paths of an Arrow schema (`prompt.list.element.content`), which is
    how ParquetWriter's per-column options name nested columns."""
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink)
    parquet_schema = pq.ParquetFile(pa.BufferReader(sink.getvalue())).schema
    return [parquet_schema.column(i).path for i in range(len(parquet_schema))]


def write_activations(
    path: str | Path,
    activations: np.ndarray | torch.Tensor,
    columns: Mapping[str, Sequence[Any]],
    meta: NLAMeta,
    stage: str | None = None,
) -> Path:
    """Write raw activations [N, d] and per-row columns; the file appears whole or not at all."""
    with ActivationWriter(path, meta, columns=list(columns), stage=stage) as writer:
        writer.write(activations, columns)
    return writer.path


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
        # pre_buffer would read every row group of the column ahead into memory: the whole
        # dataset, for a file larger than RAM.
        parquet = pq.ParquetFile(path, pre_buffer=False)
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
        _build_cache(path, parquet, d_model, cache)
    if n == 0:
        return torch.empty((0, d_model), dtype=torch.float32)
    # Copy-on-write: writable for torch, the file itself is never changed.
    mapped = np.memmap(cache, dtype=np.float32, mode="c", shape=(n, d_model))
    return torch.from_numpy(mapped)


def _build_cache(path: Path, parquet: pq.ParquetFile, d_model: int, cache: Path) -> None:
    """Stream the vector column into `cache` as raw float32 rows, one record batch at a time."""
    _check_vector_type(path, parquet.schema_arrow.field(ACTIVATION_COLUMN).type, d_model)
    tmp = cache.with_name(cache.name + ".tmp")
    try:
        with tmp.open("wb") as out:
            first_row = 0
            batches = parquet.iter_batches(columns=[ACTIVATION_COLUMN], batch_size=READ_BATCH_ROWS)
            for batch in batches:
                out.write(_batch_floats(path, batch.column(0), d_model, first_row).data)
                first_row += batch.num_rows
        tmp.replace(cache)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_vector_type(path: Path, kind: pa.DataType, d_model: int) -> None:
    is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind)
    if not (is_list or pa.types.is_fixed_size_list(kind)) or not pa.types.is_floating(
        kind.value_type
    ):
        raise NLAConfigError(
            f"column {ACTIVATION_COLUMN!r} of {path} has type {kind}, but it must hold one float "
            f"vector per row: fixed_size_list<float>[{d_model}] (or list<float>). Write the raw "
            "activations there, as the release's files do"
        )
    if pa.types.is_fixed_size_list(kind) and kind.list_size != d_model:
        raise _width_error(path, [kind.list_size], d_model)


def _batch_floats(path: Path, vectors: pa.Array, d_model: int, first_row: int) -> np.ndarray:
    """The rows of one record batch as a flat float32 array, checked to be d_model wide."""
    if vectors.null_count:
        row = first_row + int(np.flatnonzero(vectors.is_null().to_numpy(zero_copy_only=False))[0])
        raise NLAConfigError(
            f"row {row} of column {ACTIVATION_COLUMN!r} in {path} is null, not a vector: drop "
            "the rows without an activation, or re-extract the file"
        )
    if not pa.types.is_fixed_size_list(vectors.type):
        # Variable-length lists: each row has its own length, check every one.
        widths = pc.list_value_length(vectors).to_numpy()
        bad = np.flatnonzero(widths != d_model)
        if bad.size:
            found = sorted({int(w) for w in widths[bad[:1000]]})
            raise _width_error(path, found, d_model, row=first_row + int(bad[0]))
    # flatten() honours the batch's slice offset; `.values` would not.
    flat = vectors.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat, dtype=np.float32)


def _width_error(
    path: Path, found: list[int], d_model: int, row: int | None = None
) -> NLAConfigError:
    where = "" if row is None else f" (the first at row {row})"
    widths = found[0] if len(found) == 1 else found[:5]
    return NLAConfigError(
        f"column {ACTIVATION_COLUMN!r} of {path} holds vectors of width {widths}{where}, but "
        f"its sidecar {sidecar_path(path).name} says d_model={d_model}: every row must be one "
        "activation of width d_model. Re-extract the file with the model its sidecar names, or "
        "fix extraction.d_model in the sidecar if it was written for another model"
    )
