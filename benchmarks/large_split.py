"""Writing and reading back one large dataset split, as a Qwen2.5-7B extraction makes it.

N rows x d float32 activations (default 1,000,000 x 3584: 14.3 GB, past the 2^31 floats where
32-bit list offsets overflow, at row 599,187) go through `ActivationWriter` in chunks, then come
back through `read_activations` twice: first building the `{file}.f32` memory-mapped cache, then
from that cache. A few rows are compared bit for bit with what was written: the first, those on
both sides of the 2^31-float boundary and the last ones. Each phase reports its seconds, GB/s, the
process's peak resident memory (`VmHWM`, which counts the mapped file pages the NaN check touches)
and its peak anonymous memory (sampled; what the process really holds).

Usage: python benchmarks/large_split.py [--rows 1000000] [--d-model 3584] [--chunk-rows 8192]
       [--dir DIR] [--keep] [--threads N] [--json PATH] [--quick]
The files go to a fresh temporary directory (or --dir) and are deleted afterwards unless --keep;
they need about 2 x rows x d x 4 bytes of disk (the Parquet file and the .f32 cache).
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from _common import add_common_args, markdown_table, setup, write_json

from nla_lightning.core.meta import NLAMeta
from nla_lightning.data.store import ActivationWriter, read_activations

GB = 1e9
LAYER = 20
OFFSET_LIMIT = 2**31  # floats a list<float32> column can address with int32 offsets


def split_meta(d_model: int) -> NLAMeta:
    """Qwen2.5-7B-Instruct's metadata (release token ids), at width d_model."""
    return NLAMeta(
        base_model="Qwen/Qwen2.5-7B-Instruct",
        d_model=d_model,
        layer=LAYER,
        injection_scale=None,
        mse_scale=math.sqrt(d_model),
        injection_char="㈎",
        injection_token_id=149705,
        left_neighbour_id=29,
        right_neighbour_id=522,
        critic_suffix_ids=(1318, 29, 366, 1708, 29),
    )


def chunk_rows(index: int, rows: int, d_model: int) -> np.ndarray:
    """Chunk `index`'s activations, the same on every call: rows are checked by regenerating."""
    rng = np.random.default_rng(index)
    return rng.standard_normal((rows, d_model), dtype=np.float32) * np.float32(40)


def chunk_columns(start: int, rows: int) -> dict[str, Any]:
    ids = np.arange(start, start + rows)
    return {
        "doc_id": [f"doc-{i // 10}" for i in ids],
        "n_raw_tokens": (ids % 4000 + 50).tolist(),
        "activation_layer": [LAYER] * rows,
    }


class MemoryWatch:
    """Peak resident memory of one phase: VmHWM (reset through clear_refs) and a sampled peak
    of RssAnon, the memory the process holds itself rather than mapped file pages."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> MemoryWatch:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass  # VmHWM then covers the whole process so far
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss = _status_bytes("VmHWM")
        self.peak_anon = max(self.peak_anon, _status_bytes("RssAnon"))

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_anon = max(self.peak_anon, _status_bytes("RssAnon"))


def _status_bytes(key: str) -> int:
    """A memory figure of /proc/self/status in bytes; 0 where there is none (not Linux)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def measured(fn: Callable[[], Any]) -> tuple[dict[str, float], Any]:
    with MemoryWatch() as watch:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    phase = {"seconds": seconds, "peak_rss_gb": watch.peak_rss / GB}
    phase["peak_anon_gb"] = watch.peak_anon / GB
    return phase, result


def write_split(path: Path, rows: int, d_model: int, chunk: int) -> float:
    """Seconds spent in the writer (generating the rows is not counted)."""
    in_writer = 0.0
    columns = list(chunk_columns(0, 0))
    with ActivationWriter(path, split_meta(d_model), columns=columns) as writer:
        for index, start in enumerate(range(0, rows, chunk)):
            n = min(chunk, rows - start)
            vectors, extra = chunk_rows(index, n, d_model), chunk_columns(start, n)
            begin = time.perf_counter()
            writer.write(vectors, extra)
            in_writer += time.perf_counter() - begin
        begin = time.perf_counter()
    return in_writer + time.perf_counter() - begin  # the close: footer, sidecar, renames


def rows_to_check(rows: int, d_model: int) -> list[int]:
    boundary = -(-OFFSET_LIMIT // d_model)  # the first row past 2^31 floats
    picks = {0, boundary - 1, boundary, rows - 2, rows - 1}
    return sorted(r for r in picks if 0 <= r < rows)


def check_rows(table: Any, rows: list[int], d_model: int, chunk: int) -> None:
    for row in rows:
        index = row // chunk
        n = min(chunk, len(table) - index * chunk)
        expected = chunk_rows(index, n, d_model)[row - index * chunk]
        got = table.activations[row].numpy()
        if not np.array_equal(got.view(np.uint32), expected.view(np.uint32)):
            raise SystemExit(f"row {row} did not come back bit for bit")
        if table.columns["doc_id"][row] != f"doc-{row // 10}":
            raise SystemExit(f"row {row}'s doc_id did not come back")


def run(directory: Path, rows: int, d_model: int, chunk: int) -> dict[str, Any]:
    path = directory / "rl.parquet"
    phases: dict[str, dict[str, float]] = {}
    phases["write"], in_writer = measured(lambda: write_split(path, rows, d_model, chunk))
    phases["write"]["seconds"] = in_writer
    file_bytes = path.stat().st_size
    phases["read (builds .f32)"], table = measured(lambda: read_activations(path))
    del table
    phases["read (cached)"], table = measured(lambda: read_activations(path))
    checked = rows_to_check(rows, d_model)
    check_rows(table, checked, d_model, chunk)
    kind = pq.read_schema(path).field("activation_vector").type
    for phase in phases.values():
        phase["gb_per_s"] = rows * d_model * 4 / GB / phase["seconds"]
    return {
        "file_gb": file_bytes / GB,
        "cache_gb": path.with_name(path.name + ".f32").stat().st_size / GB,
        "row_groups": pq.ParquetFile(path).metadata.num_row_groups,
        "column_type": str(kind),
        "rows_read": len(table),
        "checked_rows": checked,
        "bit_exact": True,
        "phases": phases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--d-model", type=int, default=3584)
    parser.add_argument("--chunk-rows", type=int, default=8192)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the files afterwards")
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.d_model, args.chunk_rows = 3000, 256, 700
    info = setup(args)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="nla-bench-split-", dir=args.dir))
    print(
        f"{args.rows} rows x {args.d_model} float32 ({args.rows * args.d_model * 4 / GB:.2f} GB) "
        f"in chunks of {args.chunk_rows} rows, under {directory}\n"
    )
    try:
        result = run(directory, args.rows, args.d_model, args.chunk_rows)
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    headers = ["phase", "seconds", "GB/s", "peak RSS GB", "peak anon GB"]
    table = [
        [name, p["seconds"], p["gb_per_s"], p["peak_rss_gb"], p["peak_anon_gb"]]
        for name, p in result["phases"].items()
    ]
    print(markdown_table(headers, table))
    print(
        f"\nParquet file {result['file_gb']:.2f} GB ({result['row_groups']} row groups, "
        f"{result['column_type']}), .f32 cache {result['cache_gb']:.2f} GB; rows "
        f"{result['checked_rows']} came back bit for bit"
    )
    write_json(
        args.json,
        {
            "benchmark": "large_split",
            "machine": info,
            "quick": args.quick,
            "rows": args.rows,
            "d_model": args.d_model,
            "chunk_rows": args.chunk_rows,
            **result,
        },
    )


if __name__ == "__main__":
    main()
