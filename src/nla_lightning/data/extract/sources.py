"""Documents from .txt / .jsonl / .parquet files or a streaming Hugging Face dataset."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nla_lightning.errors import NLAConfigError

SUFFIXES = (".txt", ".jsonl", ".parquet")


def expand_files(files: Sequence[str | Path]) -> list[Path]:
    """Files in the given order; a directory becomes its supported files, sorted by path."""
    out: list[Path] = []
    for item in files:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
            if not found:
                raise NLAConfigError(
                    f"the directory {path} holds no {'/'.join(SUFFIXES)} files: point --files "
                    "at a directory of documents"
                )
            out.extend(found)
        elif not path.exists():
            raise NLAConfigError(f"no such document file: {path}")
        elif path.suffix not in SUFFIXES:
            raise NLAConfigError(
                f"{path}: unsupported file type {path.suffix!r}; expected one of {SUFFIXES}"
            )
        else:
            out.append(path)
    return out


def describe_files(files: Sequence[str | Path]) -> dict[str, list[int]]:
    """{path: [size in bytes, mtime in ns]} of the document files, in `expand_files` order."""
    out: dict[str, list[int]] = {}
    for path in expand_files(files):
        stat = path.stat()
        out[str(path)] = [stat.st_size, stat.st_mtime_ns]
    return out


def _decode(data: bytes, where: str, base_offset: int = 0) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise NLAConfigError(
            f"{where} is not valid UTF-8 (byte offset {base_offset + err.start}: "
            f"{data[err.start : err.start + 4]!r}); re-encode it as UTF-8, e.g. "
            "`iconv -f latin1 -t utf-8`"
        ) from err


def _read_txt(path: Path) -> Iterator[tuple[str, str]]:
    yield path.stem, _decode(path.read_bytes(), str(path))


def _read_jsonl(path: Path, text_field: str, id_field: str | None) -> Iterator[tuple[str, str]]:
    offset = 0
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            where = f"{path}:{line_no}"
            line = _decode(raw, where, base_offset=offset)
            offset += len(raw)
            if not line.strip():
                continue  # blank lines (often a trailing newline) are not documents
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise NLAConfigError(
                    f"{where} is not valid JSON ({err.msg} at column {err.colno}); every line "
                    "of a .jsonl file must be one JSON object"
                ) from err
            if not isinstance(record, dict):
                raise NLAConfigError(f"{where} holds a {type(record).__name__}, not a JSON object")
            yield (
                _record_id(record, id_field, where, f"{path}:{line_no}"),
                _record_text(record, text_field, where),
            )


def _record_text(record: dict[str, Any], text_field: str, where: str) -> str:
    if text_field not in record:
        raise NLAConfigError(
            f"{where} has no {text_field!r} field (fields: {sorted(record)[:10]}); pass "
            "--text-field / text_field= with the name of the text field"
        )
    text = record[text_field]
    if text is None:
        return ""
    if not isinstance(text, str):
        raise NLAConfigError(f"{where}: field {text_field!r} is a {type(text).__name__}, not text")
    return text


def _record_id(record: dict[str, Any], id_field: str | None, where: str, default: str) -> str:
    if id_field is None:
        return default
    if record.get(id_field) is None:
        raise NLAConfigError(f"{where} has no {id_field!r} id field; fix the data or drop id_field")
    return str(record[id_field])


def _read_parquet(path: Path, text_field: str, id_field: str | None) -> Iterator[tuple[str, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
    except (pa.ArrowInvalid, OSError) as err:
        raise NLAConfigError(
            f"{path} is not a readable Parquet file ({err}); re-export it or remove it"
        ) from err
    for needed in (text_field, id_field):
        if needed is not None and needed not in names:
            raise NLAConfigError(
                f"{path} has no column {needed!r} (columns: {names[:10]}); pass the right "
                "text_field / id_field"
            )
    columns = [text_field] if id_field is None else [text_field, id_field]
    row = 0
    try:
        for batch in parquet.iter_batches(columns=columns, batch_size=1024):
            texts = batch.column(0).to_pylist()
            ids = batch.column(1).to_pylist() if id_field is not None else None
            for i, text in enumerate(texts):
                doc_id = f"{path}:{row}" if ids is None else str(ids[i])
                yield doc_id, "" if text is None else str(text)
                row += 1
    except (pa.ArrowInvalid, OSError) as err:
        raise NLAConfigError(
            f"{path} is corrupt after row {row} ({err}); re-export it or remove it"
        ) from err


def _read_hf(
    name: str, split: str, text_field: str, id_field: str | None
) -> Iterator[tuple[str, str]]:
    try:
        import datasets
    except ImportError as err:
        raise NLAConfigError(
            f"reading the Hugging Face dataset {name!r} needs the `datasets` library: "
            "pip install datasets (or export the corpus to .jsonl/.parquet and use --files)"
        ) from err
    stream = datasets.load_dataset(name, split=split, streaming=True)
    for index, record in enumerate(stream):
        where = f"{name}[{split}] record {index}"
        yield (
            _record_id(record, id_field, where, f"{name}:{index}"),
            _record_text(record, text_field, where),
        )


def iter_documents(
    files: Sequence[str | Path] | None = None,
    hf_dataset: str | None = None,
    hf_split: str = "train",
    text_field: str = "text",
    id_field: str | None = None,
) -> Iterator[tuple[str, str]]:
    """(doc_id, text) pairs in a fixed order: the files as given, then the dataset stream."""
    if not files and hf_dataset is None:
        raise NLAConfigError("no documents: give files (.txt/.jsonl/.parquet) or hf_dataset")
    # Expand (and validate) every path up front so a typo fails before any extraction work.
    paths = expand_files(files or [])
    for path in paths:
        if path.suffix == ".txt":
            yield from _read_txt(path)
        elif path.suffix == ".jsonl":
            yield from _read_jsonl(path, text_field, id_field)
        else:
            yield from _read_parquet(path, text_field, id_field)
    if hf_dataset is not None:
        yield from _read_hf(hf_dataset, hf_split, text_field, id_field)
